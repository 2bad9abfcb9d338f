/*
 * Small files read whole without open state.
 *
 * An OPEN makes the server create state that a CLOSE must take back: two
 * of the three requests a small read-only file costs, and the heaviest for
 * the server. A file that fits in one READ needs neither: ACCESS tells
 * whether the reader may read it (what the OPEN would have checked), and
 * the READ goes with the anonymous stateid, which servers accept for reads
 * that no share reservation denies. The caller holds the whole content
 * from then on, so nothing depends on the server keeping the file for us.
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

bool nc_anonymous_read_refused(struct nc_client *c, nfsstat4 st)
{
    if (st != NFS4ERR_BAD_STATEID && st != NFS4ERR_NOTSUPP && st != NFS4ERR_INVAL)
        return false;
    /* Reads already in flight when the first refusal came are refused too. */
    if (!c->prefetch_unsupported)
        elog_info(NC_COMPONENT,
                  "server refuses reads with the anonymous stateid (status %d): "
                  "small files are read with open state",
                  (int)st);
    c->prefetch_unsupported = true;
    return true;
}

enum { SNAP_ACCESS = 1, SNAP_GETATTR = 2, SNAP_READ = 3 };

static void snapshot_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_reply_ctx *ctx = arg;
    struct nc_reply reply = {0};
    if (err) {
        reply.err = err;
        goto out;
    }
    nfs_resop4 *rd = nc_res_op(res, SNAP_READ, OP_READ);
    if (rd && nc_anonymous_read_refused(c, rd->nfs_resop4_u.opread.status)) {
        reply.err = -EOPNOTSUPP;
        goto out;
    }
    if (res->status != NFS4_OK) {
        reply.err = nc_status_to_errno(res->status);
        goto out;
    }
    nfs_resop4 *ac = nc_res_op(res, SNAP_ACCESS, OP_ACCESS);
    if (!ac || !rd) {
        reply.err = -EIO;
        goto out;
    }
    if (!(ac->nfs_resop4_u.opaccess.ACCESS4res_u.resok4.access & ACCESS4_READ)) {
        reply.err = -EACCES;
        goto out;
    }
    reply.has_attr = nc_res_find_attr(res, SNAP_GETATTR, &reply.attr) >= 0;
    READ4resok *ok = &rd->nfs_resop4_u.opread.READ4res_u.resok4;
    reply.data = ok->data.data_val;
    reply.count = ok->data.data_len;
    reply.eof = ok->eof;
out:
    ctx->cb(ctx->arg, &reply);
    free(ctx);
}

void nc_snapshot(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                 uint32_t count, nc_callback cb, void *arg)
{
    if (c->prefetch_unsupported) {
        nc_defer_error(c, cb, arg, -EOPNOTSUPP);
        return;
    }
    struct nc_reply_ctx *ctx = nc_reply_ctx_new(c, cb, arg);
    if (!ctx)
        return;
    if (count > c->max_read)
        count = c->max_read;
    struct nc_compound cp;
    nc_compound_init(&cp, "snapshot");
    nc_op_putfh(&cp, fh);
    nc_compound_add(&cp, OP_ACCESS)->nfs_argop4_u.opaccess.access = ACCESS4_READ;
    nc_op_getattr(&cp);
    nfs_argop4 *rd = nc_compound_add(&cp, OP_READ);
    memset(&rd->nfs_argop4_u.opread.stateid, 0, sizeof(rd->nfs_argop4_u.opread.stateid));
    rd->nfs_argop4_u.opread.offset = 0;
    rd->nfs_argop4_u.opread.count = count;
    nc_send(c, cred, &cp, snapshot_done, ctx);
    nc_compound_free(&cp);
}
