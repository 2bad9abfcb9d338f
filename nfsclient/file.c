/*
 * Open files: OPEN (+OPEN_CONFIRM), CLOSE, READ, WRITE, COMMIT.
 *
 * The server merges opens of one file by one open-owner into one state
 * (same stateid "other"), so we do too: an nc_open is reference counted and
 * CLOSE goes out with the last reference. Opening a file this user already
 * has open with enough access reuses that state and only revalidates the
 * attributes, which keeps the stateid's seqid stable under in-flight I/O.
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct nc_open *nc_open_ref(struct nc_open *open)
{
    open->refs++;
    return open;
}

const struct nc_fh *nc_open_fh(const struct nc_open *open)
{
    return &open->fh;
}

/* --- OPEN --- */

struct open_ctx {
    struct nc_seqop seqop;
    struct nc_client *c;
    struct nc_cred cred;
    struct nc_fh dir;
    char *name;
    bool has_expect;
    struct nc_fh expect;
    uint32_t flags;
    uint32_t mode;
    nc_callback cb;
    void *arg;
    struct nc_owner *owner;
    char owner_buf[32];
    /* filled in as the steps complete */
    struct nc_fh fh;
    bool has_attr;
    struct nc_attr attr;
    stateid4 stateid;
    struct nc_open *open;
    int err;
};

static void open_finish(struct open_ctx *ctx)
{
    struct nc_reply reply = {0};
    reply.err = ctx->err;
    if (!ctx->err) {
        reply.open = ctx->open;
        reply.fh = ctx->fh;
        reply.has_attr = ctx->has_attr;
        reply.attr = ctx->attr;
    }
    ctx->cb(ctx->arg, &reply);
    free(ctx->name);
    free(ctx);
}

static uint32_t share_access_of(uint32_t flags)
{
    uint32_t access = 0;
    if (flags & NC_OPEN_READ)
        access |= OPEN4_SHARE_ACCESS_READ;
    if (flags & NC_OPEN_WRITE)
        access |= OPEN4_SHARE_ACCESS_WRITE;
    return access ? access : OPEN4_SHARE_ACCESS_READ;
}

static void truncate_done(void *arg, const struct nc_reply *reply)
{
    struct open_ctx *ctx = arg;
    if (reply->err) {
        ctx->err = reply->err;
        /* The open succeeded; give it back before reporting the failure. */
        nc_close(ctx->c, ctx->open, NULL, NULL);
        ctx->open = NULL;
    } else if (reply->has_attr) {
        ctx->attr = reply->attr;
        ctx->has_attr = true;
    }
    open_finish(ctx);
}

/* The owner is released; attach the state and finish (truncating first if asked). */
static void open_established(struct open_ctx *ctx)
{
    struct nc_client *c = ctx->c;
    if (ctx->err) {
        open_finish(ctx);
        return;
    }
    if ((ctx->flags & NC_OPEN_TRUNC) && (ctx->flags & NC_OPEN_WRITE)) {
        struct nc_setattr set = {.valid = NC_SET_SIZE, .size = 0};
        nc_setattr(c, &ctx->cred, &ctx->fh, ctx->open, &set, truncate_done, ctx);
        return;
    }
    open_finish(ctx);
}

static void attach_state(struct open_ctx *ctx)
{
    struct nc_owner *owner = ctx->owner;
    struct nc_open *existing = nc_owner_find_open(owner, &ctx->stateid);
    if (existing) {
        existing->stateid = ctx->stateid;
        existing->share_access |= share_access_of(ctx->flags);
        existing->refs++;
        ctx->open = existing;
        return;
    }
    struct nc_open *open = calloc(1, sizeof(*open));
    if (!open) {
        ctx->err = -ENOMEM;
        return;
    }
    open->refs = 1;
    open->epoch = ctx->c->epoch;
    open->cred = ctx->cred;
    open->fh = ctx->fh;
    open->stateid = ctx->stateid;
    open->share_access = share_access_of(ctx->flags);
    nc_owner_add_open(owner, open);
    ctx->open = open;
}

static void open_close_mismatch_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct open_ctx *ctx = arg;
    int st = err ? -1 : (int)res->status;
    if (!err && !nc_res_op(res, 1, OP_CLOSE))
        st = -1;
    nc_owner_done(c, ctx->owner, st);
    ctx->err = -ESTALE;
    open_finish(ctx);
}

/* The name now leads to another file than the caller expected: undo. */
static void open_undo(struct open_ctx *ctx)
{
    struct nc_compound cp;
    nc_compound_init(&cp, "close");
    nc_op_putfh(&cp, &ctx->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_CLOSE);
    a->nfs_argop4_u.opclose.seqid = ctx->owner->seqid;
    a->nfs_argop4_u.opclose.open_stateid = ctx->stateid;
    nc_send_seqid(ctx->c, &ctx->cred, &cp, open_close_mismatch_done, ctx);
    nc_compound_free(&cp);
}

static void open_confirm_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct open_ctx *ctx = arg;
    int st = -1;
    if (err) {
        ctx->err = err;
    } else {
        nfs_resop4 *r = nc_res_op(res, 1, OP_OPEN_CONFIRM);
        if (r)
            st = r->nfs_resop4_u.opopen_confirm.status;
        if (res->status != NFS4_OK) {
            ctx->err = nc_status_to_errno(res->status);
        } else {
            ctx->stateid =
                r->nfs_resop4_u.opopen_confirm.OPEN_CONFIRM4res_u.resok4.open_stateid;
            ctx->owner->confirmed = true;
        }
    }
    if (!ctx->err && ctx->has_expect && !nc_fh_equal(&ctx->expect, &ctx->fh)) {
        /* Still holding the owner: the undo's CLOSE takes the next seqid. */
        if (nc_seqid_advances(st))
            ctx->owner->seqid++;
        open_undo(ctx);
        return;
    }
    if (!ctx->err)
        attach_state(ctx);
    nc_owner_done(c, ctx->owner, st);
    open_established(ctx);
}

static void send_open_confirm(struct open_ctx *ctx)
{
    struct nc_compound cp;
    nc_compound_init(&cp, "open_confirm");
    nc_op_putfh(&cp, &ctx->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_OPEN_CONFIRM);
    a->nfs_argop4_u.opopen_confirm.open_stateid = ctx->stateid;
    a->nfs_argop4_u.opopen_confirm.seqid = ctx->owner->seqid;
    nc_send_seqid(ctx->c, &ctx->cred, &cp, open_confirm_done, ctx);
    nc_compound_free(&cp);
}

static void open_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct open_ctx *ctx = arg;
    struct nc_owner *owner = ctx->owner;
    if (err) {
        ctx->err = err;
        nc_owner_done(c, owner, -1);
        open_finish(ctx);
        return;
    }
    nfs_resop4 *r = nc_res_op(res, 1, OP_OPEN);
    int st = r ? (int)r->nfs_resop4_u.opopen.status : -1;
    if (nc_status_lost_state(st)) {
        /* Sent under a client id the server no longer knows: again, after. */
        nc_client_recover(c);
        nc_owner_retry_after_recovery(c, owner, &ctx->seqop);
        return;
    }
    if (!r || st != NFS4_OK) {
        ctx->err = nc_status_to_errno(r ? st : (int)res->status);
        nc_owner_done(c, owner, st);
        open_finish(ctx);
        return;
    }
    OPEN4resok *ok = &r->nfs_resop4_u.opopen.OPEN4res_u.resok4;
    ctx->stateid = ok->stateid;
    bool need_confirm = (ok->rflags & OPEN4_RESULT_CONFIRM) != 0;
    if (nc_res_find_fh(res, &ctx->fh) != 0) {
        /* Opened, but without a handle we cannot use it; the lease reclaims it. */
        elog_warn(NC_COMPONENT, "OPEN reply without a filehandle");
        ctx->err = -EIO;
        nc_owner_done(c, owner, st);
        open_finish(ctx);
        return;
    }
    ctx->has_attr = nc_res_find_attr(res, 2, &ctx->attr) >= 0;
    if (need_confirm) {
        /* The OPEN's seqid is consumed; the confirm uses the next one while
         * we still hold the owner. */
        owner->seqid++;
        send_open_confirm(ctx);
        return;
    }
    if (ctx->has_expect && !nc_fh_equal(&ctx->expect, &ctx->fh)) {
        owner->seqid++;
        open_undo(ctx);
        return;
    }
    attach_state(ctx);
    nc_owner_done(c, owner, st);
    open_established(ctx);
}

static void open_start(struct nc_client *c, struct nc_seqop *op)
{
    struct open_ctx *ctx = (struct open_ctx *)op;
    struct nc_compound cp;
    nc_compound_init(&cp, "open");
    nc_op_putfh(&cp, &ctx->dir);
    nfs_argop4 *a = nc_compound_add(&cp, OP_OPEN);
    OPEN4args *o = &a->nfs_argop4_u.opopen;
    o->seqid = ctx->owner->seqid;
    o->share_access = share_access_of(ctx->flags);
    o->share_deny = OPEN4_SHARE_DENY_NONE;
    nc_owner_fill(c, ctx->owner, &o->owner, ctx->owner_buf, sizeof(ctx->owner_buf));
    if (ctx->flags & NC_OPEN_CREATE) {
        o->openhow.opentype = OPEN4_CREATE;
        /* UNCHECKED4/GUARDED4 carry the mode; EXCLUSIVE4 would not (and
         * leaves the verifier in the file's times). */
        o->openhow.openflag4_u.how.mode = (ctx->flags & NC_OPEN_EXCL) ? GUARDED4 : UNCHECKED4;
        struct nc_setattr set = {.valid = NC_SET_MODE, .mode = ctx->mode & 07777};
        nc_fattr_encode(&cp, &o->openhow.openflag4_u.how.createhow4_u.createattrs, &set);
    } else {
        o->openhow.opentype = OPEN4_NOCREATE;
    }
    o->claim.claim = CLAIM_NULL;
    o->claim.open_claim4_u.file.utf8string_val = ctx->name;
    o->claim.open_claim4_u.file.utf8string_len = (u_int)strlen(ctx->name);
    nc_op_getfh(&cp);
    nc_op_getattr(&cp);
    nc_send_seqid(c, &ctx->cred, &cp, open_done, ctx);
    nc_compound_free(&cp);
}

static void reuse_getattr_done(void *arg, const struct nc_reply *reply)
{
    struct open_ctx *ctx = arg;
    if (reply->err) {
        ctx->err = reply->err;
        nc_close(ctx->c, ctx->open, NULL, NULL);
        ctx->open = NULL;
    } else {
        ctx->has_attr = reply->has_attr;
        ctx->attr = reply->attr;
    }
    open_established(ctx);
}

void nc_open(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
             const char *name, const struct nc_fh *expect, uint32_t flags, uint32_t mode,
             nc_callback cb, void *arg)
{
    struct open_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx || !(ctx->name = strdup(name))) {
        free(ctx);
        nc_defer_error(c, cb, arg, -ENOMEM);
        return;
    }
    ctx->c = c;
    ctx->cred = *cred;
    ctx->dir = *dir;
    ctx->flags = flags;
    ctx->mode = mode;
    ctx->cb = cb;
    ctx->arg = arg;
    if (expect) {
        ctx->has_expect = true;
        ctx->expect = *expect;
        bool exclusive = (flags & NC_OPEN_CREATE) && (flags & NC_OPEN_EXCL);
        struct nc_open *held = exclusive ? NULL
                                         : nc_state_find_open(c, expect, cred->uid,
                                                              share_access_of(flags));
        if (held) {
            ctx->open = nc_open_ref(held);
            ctx->fh = *expect;
            nc_getattr(c, cred, expect, reuse_getattr_done, ctx);
            return;
        }
    }
    ctx->owner = nc_owner_pick(c, cred->uid);
    if (!ctx->owner) {
        free(ctx->name);
        free(ctx);
        nc_defer_error(c, cb, arg, -ENOMEM);
        return;
    }
    ctx->seqop.start = open_start;
    nc_owner_submit(c, ctx->owner, &ctx->seqop);
}

/* --- CLOSE --- */

struct close_ctx {
    struct nc_seqop seqop;
    struct nc_open *open;
    nc_callback cb;
    void *arg;
};

static void close_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct close_ctx *ctx = arg;
    struct nc_open *open = ctx->open;
    int st = -1;
    struct nc_reply reply = {0};
    if (err) {
        reply.err = err;
    } else {
        nfs_resop4 *r = nc_res_op(res, 1, OP_CLOSE);
        if (r)
            st = r->nfs_resop4_u.opclose.status;
        reply.err = nc_status_to_errno(res->status);
        if (nc_status_lost_state(st))
            nc_client_recover(c);
    }
    if (reply.err && reply.err != -ECANCELED)
        elog_debug(NC_COMPONENT, "CLOSE failed: %d", reply.err);
    nc_owner_done(c, open->owner, st);
    nc_open_free(open);
    if (ctx->cb)
        ctx->cb(ctx->arg, &reply);
    free(ctx);
}

static void close_start(struct nc_client *c, struct nc_seqop *op)
{
    struct close_ctx *ctx = (struct close_ctx *)op;
    struct nc_open *open = ctx->open;
    struct nc_compound cp;
    nc_compound_init(&cp, "close");
    nc_op_putfh(&cp, &open->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_CLOSE);
    a->nfs_argop4_u.opclose.seqid = open->owner->seqid;
    a->nfs_argop4_u.opclose.open_stateid = open->stateid;
    nc_send_seqid(c, &open->cred, &cp, close_done, ctx);
    nc_compound_free(&cp);
}

void nc_close(struct nc_client *c, struct nc_open *open, nc_callback cb, void *arg)
{
    if (!open) {
        if (cb)
            nc_defer_error(c, cb, arg, 0);
        return;
    }
    if (--open->refs > 0) {
        if (cb)
            nc_defer_error(c, cb, arg, 0);
        return;
    }
    if (nc_open_dead(c, open)) {
        /* The server forgot it when it restarted: nothing to close there. */
        nc_state_forget_dead_open(c, open);
        if (cb)
            nc_defer_error(c, cb, arg, 0);
        return;
    }
    struct close_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        /* Forget the state; the server drops it when the lease ends. */
        nc_owner_remove_open(open->owner, open);
        nc_open_free(open);
        if (cb)
            nc_defer_error(c, cb, arg, -ENOMEM);
        return;
    }
    /* From now on no new open may merge into this state. */
    open->closing = true;
    nc_owner_remove_open(open->owner, open);
    ctx->open = open;
    ctx->cb = cb;
    ctx->arg = arg;
    ctx->seqop.start = close_start;
    nc_owner_submit(c, open->owner, &ctx->seqop);
}

/* --- READ / WRITE / COMMIT --- */

struct io_ctx {
    nc_callback cb;
    void *arg;
    nfs_opnum4 op;
    unsigned epoch; /* of the open state used */
};

/* NULL (and the callback deferred with EIO) when the open state died with a
 * server restart: its stateid means nothing to the new server. */
static struct io_ctx *io_ctx_new(struct nc_client *c, struct nc_open *open, nc_callback cb,
                                 void *arg, nfs_opnum4 op)
{
    if (nc_open_dead(c, open)) {
        nc_defer_error(c, cb, arg, -EIO);
        return NULL;
    }
    struct io_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        nc_defer_error(c, cb, arg, -ENOMEM);
        return NULL;
    }
    ctx->cb = cb;
    ctx->arg = arg;
    ctx->op = op;
    ctx->epoch = open->epoch;
    return ctx;
}

static void io_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct io_ctx *ctx = arg;
    struct nc_reply reply = {0};
    if (err) {
        reply.err = err;
        goto out;
    }
    if (res->status != NFS4_OK) {
        reply.err = nc_status_to_errno(res->status);
        if (nc_status_lost_state(res->status) && ctx->epoch == c->epoch)
            nc_client_recover(c);
        goto out;
    }
    nfs_resop4 *r = nc_res_op(res, 1, ctx->op);
    if (!r) {
        reply.err = -EIO;
        goto out;
    }
    switch (ctx->op) {
    case OP_READ: {
        READ4resok *ok = &r->nfs_resop4_u.opread.READ4res_u.resok4;
        reply.data = ok->data.data_val;
        reply.count = ok->data.data_len;
        reply.eof = ok->eof;
        break;
    }
    case OP_WRITE: {
        WRITE4resok *ok = &r->nfs_resop4_u.opwrite.WRITE4res_u.resok4;
        reply.written = ok->count;
        reply.stable = ok->committed != UNSTABLE4;
        memcpy(&reply.verifier, ok->writeverf, sizeof(reply.verifier));
        break;
    }
    case OP_COMMIT: {
        COMMIT4resok *ok = &r->nfs_resop4_u.opcommit.COMMIT4res_u.resok4;
        memcpy(&reply.verifier, ok->writeverf, sizeof(reply.verifier));
        reply.has_attr = nc_res_find_attr(res, 2, &reply.attr) >= 0;
        break;
    }
    default:
        break;
    }
out:
    ctx->cb(ctx->arg, &reply);
    free(ctx);
}

void nc_read(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
             uint64_t offset, uint32_t count, nc_callback cb, void *arg)
{
    struct io_ctx *ctx = io_ctx_new(c, open, cb, arg, OP_READ);
    if (!ctx)
        return;
    if (count > c->max_read)
        count = c->max_read;
    struct nc_compound cp;
    nc_compound_init(&cp, "read");
    nc_op_putfh(&cp, &open->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_READ);
    a->nfs_argop4_u.opread.stateid = open->stateid;
    a->nfs_argop4_u.opread.offset = offset;
    a->nfs_argop4_u.opread.count = count;
    nc_send(c, cred, &cp, 0, io_done, ctx);
    nc_compound_free(&cp);
}

void nc_write(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
              uint64_t offset, const void *data, uint32_t count, bool stable, nc_callback cb,
              void *arg)
{
    struct io_ctx *ctx = io_ctx_new(c, open, cb, arg, OP_WRITE);
    if (!ctx)
        return;
    if (count > c->max_write) {
        /* Callers split writes by nc_client_max_write(); anything else is a bug. */
        free(ctx);
        nc_defer_error(c, cb, arg, -EINVAL);
        return;
    }
    struct nc_compound cp;
    nc_compound_init(&cp, "write");
    nc_op_putfh(&cp, &open->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_WRITE);
    a->nfs_argop4_u.opwrite.stateid = open->stateid;
    a->nfs_argop4_u.opwrite.offset = offset;
    a->nfs_argop4_u.opwrite.stable = stable ? FILE_SYNC4 : UNSTABLE4;
    /* The data follows the encoded WRITE on the wire, from the caller's buffer. */
    a->nfs_argop4_u.opwrite.data.data_len = 0;
    a->nfs_argop4_u.opwrite.data.data_val = NULL;
    nc_send_payload(c, cred, &cp, data, count, io_done, ctx);
    nc_compound_free(&cp);
}

void nc_commit(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
               nc_callback cb, void *arg)
{
    struct io_ctx *ctx = io_ctx_new(c, open, cb, arg, OP_COMMIT);
    if (!ctx)
        return;
    struct nc_compound cp;
    nc_compound_init(&cp, "commit");
    nc_op_putfh(&cp, &open->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_COMMIT);
    a->nfs_argop4_u.opcommit.offset = 0;
    a->nfs_argop4_u.opcommit.count = 0;
    nc_op_getattr(&cp);
    nc_send(c, cred, &cp, 0, io_done, ctx);
    nc_compound_free(&cp);
}
