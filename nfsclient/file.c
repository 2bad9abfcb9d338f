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
#include <sys/stat.h>

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
    /* O_EXCL creates: EXCLUSIVE4 with a verifier of this create (see
     * open_set_createhow); the mode is set by a SETATTR after the open. */
    bool exclusive4;
    bool has_createverf;
    bool exclusive_attrs_set;
    verifier4 createverf;
    /* A transmission went out on a connection that broke before its answer:
     * the server may have made the file already (see exclusive_exists). */
    bool maybe_executed;
    unsigned epoch; /* of the client id the OPEN went out under */
    /* NC_OPEN_PREFETCH: the READ's index in the compound (0: none sent) and
     * its data, copied out of the reply that is freed before we finish. */
    unsigned prefetch_index;
    void *prefetch;
    uint32_t prefetch_len;
    bool prefetch_eof;
    struct nc_dir_change dir_change; /* creates: of the OPEN that made the file */
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
        reply.data = ctx->prefetch;
        reply.count = ctx->prefetch_len;
        reply.eof = ctx->prefetch_eof;
        reply.dir_change = ctx->dir_change;
    }
    ctx->cb(ctx->arg, &reply);
    free(ctx->prefetch);
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

/* --- exclusive creates ---
 *
 * An O_EXCL create goes out as EXCLUSIVE4 with a verifier unique to that
 * create, not as GUARDED4: when its reply is lost with the connection, the
 * resent OPEN then finds the file made with the same verifier and succeeds,
 * where GUARDED4 would answer EXIST for our own file (servers need not keep a
 * replay for the first OPEN of a new open-owner; ganesha does not). */

/* splitmix64's finaliser: distinct counters give distinct verifiers within a
 * client, and the boot verifier keeps clients and incarnations apart. */
static uint64_t createverf_mix(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static void open_set_createhow(struct open_ctx *ctx, struct nc_compound *cp, createhow4 *how)
{
    struct nc_client *c = ctx->c;
    bool excl = (ctx->flags & NC_OPEN_EXCL) != 0;
    ctx->exclusive4 = excl && !c->exclusive4_unsupported;
    if (!ctx->exclusive4) {
        how->mode = excl ? GUARDED4 : UNCHECKED4;
        struct nc_setattr set = {.valid = NC_SET_MODE, .mode = ctx->mode & 07777};
        nc_fattr_encode(cp, &how->createhow4_u.createattrs, &set);
        return;
    }
    /* Chosen once: an OPEN run again after state recovery must still match
     * the file an earlier attempt may have made. */
    if (!ctx->has_createverf) {
        uint64_t boot;
        memcpy(&boot, c->boot_verifier, sizeof(boot));
        uint64_t v = createverf_mix(boot + ++c->createverf_count * 0x9e3779b97f4a7c15ULL);
        memcpy(ctx->createverf, &v, sizeof(ctx->createverf));
        ctx->has_createverf = true;
    }
    how->mode = EXCLUSIVE4;
    memcpy(how->createhow4_u.createverf, ctx->createverf, sizeof(verifier4));
}

/* A server without EXCLUSIVE4 answers NOTSUPP or INVAL: from then on this
 * client sends GUARDED4. True when the OPEN was sent again that way (the
 * owner is still held). */
static bool open_exclusive_refused(struct open_ctx *ctx, int st)
{
    struct nc_client *c = ctx->c;
    if (!ctx->exclusive4 || (st != NFS4ERR_NOTSUPP && st != NFS4ERR_INVAL))
        return false;
    if (!c->exclusive4_unsupported)
        elog_info(NC_COMPONENT, "server refuses EXCLUSIVE4 creates (%s); using GUARDED4",
                  nc_status_name(st));
    c->exclusive4_unsupported = true;
    if (nc_seqid_advances(st))
        ctx->owner->seqid++;
    ctx->seqop.start(c, &ctx->seqop);
    return true;
}

static void open_established(struct open_ctx *ctx);

/*
 * An O_EXCL create whose earlier transmission may have been executed is
 * answered EXIST. The verifier normally recognises our own file, but a
 * server killed between making the file and storing the verifier in its
 * times (two steps in ganesha) leaves a file it no longer recognises. As for
 * a resent CREATE (meta.c), the name is looked up: an empty regular file
 * owned by the caller is taken as ours and opened without creating; its
 * mode and times are then set as after any EXCLUSIVE4 create.
 */
static void exclusive_exists_checked(void *arg, const struct nc_reply *r)
{
    struct open_ctx *ctx = arg;
    struct nc_client *c = ctx->c;
    bool ours = !r->err && r->has_attr && S_ISREG(r->attr.mode) && r->attr.size == 0 &&
                r->attr.uid == ctx->cred.uid;
    if (!ours || c->shutting_down) {
        ctx->err = -EEXIST;
        nc_owner_done(c, ctx->owner, -1); /* the EXIST already advanced the seqid */
        open_finish(ctx);
        return;
    }
    elog_info(NC_COMPONENT,
              "O_EXCL create of '%s' sent again after a reconnect found an empty file of "
              "ours that the server no longer recognises; opening it",
              ctx->name);
    ctx->flags &= ~(uint32_t)(NC_OPEN_CREATE | NC_OPEN_EXCL);
    ctx->seqop.start(c, &ctx->seqop); /* still holding the owner */
}

static bool exclusive_exists(struct open_ctx *ctx, int st)
{
    if (st != NFS4ERR_EXIST || !ctx->exclusive4 || !ctx->maybe_executed ||
        !(ctx->flags & NC_OPEN_CREATE))
        return false;
    ctx->owner->seqid++; /* EXIST was executed: the owner's next seqid */
    nc_lookup(ctx->c, &ctx->cred, &ctx->dir, ctx->name, exclusive_exists_checked, ctx);
    return true;
}

/* The SETATTR or GETATTR that follows an open state's establishment: its
 * attributes replace the OPEN's (after EXCLUSIVE4 those show the verifier
 * as times and no mode). */
static void open_attrs_done(void *arg, const struct nc_reply *reply)
{
    struct open_ctx *ctx = arg;
    if (reply->err) {
        ctx->err = reply->err;
        /* The open succeeded; give it back before reporting the failure. */
        nc_close(ctx->c, ctx->open, NULL, NULL);
        ctx->open = NULL;
    } else {
        ctx->has_attr = reply->has_attr;
        if (reply->has_attr)
            ctx->attr = reply->attr;
    }
    open_established(ctx);
}

/* EXCLUSIVE4 carries no attributes in NFSv4.0 and the server keeps the
 * verifier in the file's times: set the mode and real times now, under the
 * open's stateid, before the caller sees the file. True when sent. */
static bool exclusive_setattr(struct open_ctx *ctx)
{
    if (!ctx->exclusive4 || ctx->exclusive_attrs_set)
        return false;
    ctx->exclusive_attrs_set = true;
    struct nc_setattr set = {
        .valid = NC_SET_MODE | NC_SET_ATIME_NOW | NC_SET_MTIME_NOW,
        .mode = ctx->mode & 07777,
    };
    nc_setattr(ctx->c, &ctx->cred, &ctx->fh, ctx->open, &set, open_attrs_done, ctx);
    return true;
}

/* The owner is released; attach the state and finish (truncating first if asked). */
static void open_established(struct open_ctx *ctx)
{
    struct nc_client *c = ctx->c;
    if (ctx->err) {
        open_finish(ctx);
        return;
    }
    if (exclusive_setattr(ctx))
        return;
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
    open->dir = ctx->dir;
    open->name = strdup(ctx->name);
    /* (Without its name only a reclaim can re-establish it after a restart.) */
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
            ctx->stateid = r->nfs_resop4_u.opopen_confirm.OPEN_CONFIRM4res_u.resok4.open_stateid;
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

/* Keeps the data of the READ that followed the OPEN, when it succeeded. */
static void take_prefetch(struct open_ctx *ctx, COMPOUND4res *res)
{
    if (!ctx->prefetch_index)
        return;
    nfs_resop4 *r = nc_res_op(res, ctx->prefetch_index, OP_READ);
    if (!r)
        return; /* an earlier op failed, or the compound was cut short */
    nfsstat4 st = r->nfs_resop4_u.opread.status;
    if (st != NFS4_OK) {
        nc_anonymous_read_refused(ctx->c, st);
        return;
    }
    READ4resok *ok = &r->nfs_resop4_u.opread.READ4res_u.resok4;
    uint32_t len = ok->data.data_len;
    if (len > NC_OPEN_PREFETCH_MAX)
        return;
    if (len) {
        if (!(ctx->prefetch = malloc(len)))
            return;
        memcpy(ctx->prefetch, ok->data.data_val, len);
    }
    ctx->prefetch_len = len;
    ctx->prefetch_eof = ok->eof;
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
    if (nc_rpc_answer_resent(c->rpc))
        ctx->maybe_executed = true;
    if (nc_status_lost_state(st)) {
        /* Sent under a client id the server no longer knows: again, after. */
        if (ctx->epoch == c->epoch)
            nc_client_recover(c);
        nc_owner_retry_after_recovery(c, owner, &ctx->seqop);
        return;
    }
    if (st == NFS4ERR_GRACE || st == NFS4ERR_DELAY) {
        /* The server restarted and waits for reclaims, or is busy: the open
         * waits. Both answers used up the seqid. */
        owner->seqid++;
        nc_owner_retry_delayed(c, owner, &ctx->seqop, st);
        return;
    }
    if (open_exclusive_refused(ctx, st) || exclusive_exists(ctx, st))
        return;
    if (!r || st != NFS4_OK) {
        ctx->err = nc_status_to_errno(r ? st : (int)res->status);
        nc_owner_done(c, owner, st);
        open_finish(ctx);
        return;
    }
    OPEN4resok *ok = &r->nfs_resop4_u.opopen.OPEN4res_u.resok4;
    ctx->stateid = ok->stateid;
    if (ctx->flags & NC_OPEN_CREATE)
        nc_dir_change_from(&ctx->dir_change, &ok->cinfo);
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
    take_prefetch(ctx, res);
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
    ctx->epoch = c->epoch;
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
        open_set_createhow(ctx, &cp, &o->openhow.openflag4_u.how);
    } else {
        o->openhow.opentype = OPEN4_NOCREATE;
    }
    o->claim.claim = CLAIM_NULL;
    o->claim.open_claim4_u.file.utf8string_val = ctx->name;
    o->claim.open_claim4_u.file.utf8string_len = (u_int)strlen(ctx->name);
    nc_op_getfh(&cp);
    nc_op_getattr(&cp);
    ctx->prefetch_index = 0;
    if ((ctx->flags & NC_OPEN_PREFETCH) && !(ctx->flags & (NC_OPEN_WRITE | NC_OPEN_CREATE)) &&
        !c->prefetch_unsupported) {
        /* NFSv4.0 has no "current stateid": the anonymous one (all zeros),
         * which servers accept for reads that no share reservation denies. */
        ctx->prefetch_index = cp.args.argarray.argarray_len;
        nfs_argop4 *rd = nc_compound_add(&cp, OP_READ);
        memset(&rd->nfs_argop4_u.opread.stateid, 0, sizeof(rd->nfs_argop4_u.opread.stateid));
        rd->nfs_argop4_u.opread.offset = 0;
        rd->nfs_argop4_u.opread.count = NC_OPEN_PREFETCH_MAX;
    }
    nc_send_seqid(c, &ctx->cred, &cp, open_done, ctx);
    nc_compound_free(&cp);
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
        struct nc_open *held =
            exclusive ? NULL : nc_state_find_open(c, expect, cred->uid, share_access_of(flags));
        if (held) {
            ctx->open = nc_open_ref(held);
            ctx->fh = *expect;
            nc_getattr(c, cred, expect, open_attrs_done, ctx);
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
    bool local; /* the server has no state for it: nothing to send */
};

static void close_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct close_ctx *ctx = arg;
    struct nc_open *open = ctx->open;
    int st = -1;
    struct nc_reply reply = {0};
    if (ctx->local) {
        /* nothing was sent */
    } else if (err) {
        reply.err = err;
    } else {
        nfs_resop4 *r = nc_res_op(res, 1, OP_CLOSE);
        if (r)
            st = r->nfs_resop4_u.opclose.status;
        reply.err = nc_status_to_errno(res->status);
        if (st == NFS4ERR_DELAY) {
            /* The server keeps the open until a CLOSE succeeds: again, later
             * (the DELAY used up the seqid). */
            open->owner->seqid++;
            nc_owner_retry_delayed(c, open->owner, &ctx->seqop, st);
            return;
        }
        if (nc_status_lost_stateid(st)) {
            /* The server forgot the state: closed as far as it is concerned.
             * The other opens still need recovering. */
            reply.err = 0;
            if (open->epoch == c->epoch)
                nc_client_recover(c);
        }
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
    if (nc_open_dead(c, open)) {
        /* Recovery gave up on it (or it was closing during recovery): the
         * server holds nothing of it. From the loop, never inside nc_close. */
        ctx->local = true;
        nc_defer_done(c, close_done, ctx, 0);
        return;
    }
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

/* A server that keeps refusing fresh stateids is not going to accept them
 * after yet another recovery. */
#define IO_MAX_RECOVERIES 3

struct io_ctx {
    struct nc_parked park; /* first: resume() gets the ctx back */
    nc_callback cb;
    void *arg;
    nfs_opnum4 op;
    unsigned epoch; /* of the stateid sent */
    unsigned recoveries;
    struct nc_cred cred;
    struct nc_open *open; /* a reference; NULL: a stateless read of fh */
    struct nc_fh fh;
    uint64_t offset;
    uint32_t count;
    const void *data; /* the caller's: valid until the callback */
    bool stable;
};

static void io_send(struct nc_client *c, struct io_ctx *ctx);

static void io_free(struct nc_client *c, struct io_ctx *ctx)
{
    nc_close(c, ctx->open, NULL, NULL);
    free(ctx);
}

/* Fails from the loop: this may run inside nc_read/nc_write. */
static void io_fail(struct nc_client *c, struct io_ctx *ctx, int err)
{
    nc_defer_error(c, ctx->cb, ctx->arg, err);
    io_free(c, ctx);
}

static void io_resume(struct nc_client *c, struct nc_parked *p)
{
    io_send(c, (struct io_ctx *)p);
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
        if (ctx->open && nc_status_lost_stateid(res->status) && !c->shutting_down &&
            ctx->recoveries < IO_MAX_RECOVERIES) {
            /* The server forgot the state the call was sent with: recover it
             * (unless that is under way or done since) and send it again. */
            ctx->recoveries++;
            if (ctx->epoch == c->epoch)
                nc_client_recover(c);
            io_send(c, ctx);
            return;
        }
        reply.err = nc_status_to_errno(res->status);
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
    io_free(c, ctx);
}

/* Fails the call when its open cannot be used, or parks it while recovery
 * runs; true when it may go out with the open's current stateid. */
static bool io_open_usable(struct nc_client *c, struct io_ctx *ctx)
{
    struct nc_open *open = ctx->open;
    if (open->dead_err) {
        io_fail(c, ctx, open->dead_err);
        return false;
    }
    if (open->locks_lost) {
        io_fail(c, ctx, -EIO);
        return false;
    }
    if (c->recovering) {
        nc_park(c, &ctx->park);
        return false;
    }
    if (open->epoch != c->epoch) {
        /* Closing when recovery ran, so never re-established. */
        io_fail(c, ctx, -EIO);
        return false;
    }
    return true;
}

/* Sends (or re-sends) the call: with the open's current stateid, or for a
 * stateless read (no open) with the anonymous one, which no recovery
 * concerns. */
static void io_send(struct nc_client *c, struct io_ctx *ctx)
{
    struct nc_open *open = ctx->open;
    if (c->shutting_down) {
        io_fail(c, ctx, -ECANCELED);
        return;
    }
    if (open && !io_open_usable(c, ctx))
        return;
    ctx->epoch = c->epoch;
    static const stateid4 anonymous; /* all zeros */
    const stateid4 *stateid = open ? &open->stateid : &anonymous;
    struct nc_compound cp;
    nc_compound_init(&cp, ctx->op == OP_READ ? "read" : ctx->op == OP_WRITE ? "write" : "commit");
    nc_op_putfh(&cp, open ? &open->fh : &ctx->fh);
    nfs_argop4 *a = nc_compound_add(&cp, ctx->op);
    switch (ctx->op) {
    case OP_READ:
        a->nfs_argop4_u.opread.stateid = *stateid;
        a->nfs_argop4_u.opread.offset = ctx->offset;
        a->nfs_argop4_u.opread.count = ctx->count;
        break;
    case OP_WRITE:
        a->nfs_argop4_u.opwrite.stateid = *stateid;
        a->nfs_argop4_u.opwrite.offset = ctx->offset;
        a->nfs_argop4_u.opwrite.stable = ctx->stable ? FILE_SYNC4 : UNSTABLE4;
        /* The data follows the encoded WRITE on the wire, straight from the
         * caller's buffer (valid until the callback). */
        a->nfs_argop4_u.opwrite.data.data_len = 0;
        a->nfs_argop4_u.opwrite.data.data_val = NULL;
        nc_send_payload(c, &ctx->cred, &cp, ctx->data, ctx->count, io_done, ctx);
        nc_compound_free(&cp);
        return;
    default:
        a->nfs_argop4_u.opcommit.offset = 0;
        a->nfs_argop4_u.opcommit.count = 0;
        nc_op_getattr(&cp);
        break;
    }
    nc_send(c, &ctx->cred, &cp, io_done, ctx);
    nc_compound_free(&cp);
}

/* open NULL: a stateless read of *fh. A read asks for at most the
 * server's maximum (the reply says how much came). */
static void io_start(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
                     const struct nc_fh *fh, nfs_opnum4 op, uint64_t offset, const void *data,
                     uint32_t count, bool stable, nc_callback cb, void *arg)
{
    if (op == OP_READ && count > c->max_read)
        count = c->max_read;
    struct io_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        nc_defer_error(c, cb, arg, -ENOMEM);
        return;
    }
    ctx->park.resume = io_resume;
    ctx->cb = cb;
    ctx->arg = arg;
    ctx->op = op;
    ctx->cred = *cred;
    if (open)
        ctx->open = nc_open_ref(open);
    else
        ctx->fh = *fh;
    ctx->offset = offset;
    ctx->data = data;
    ctx->count = count;
    ctx->stable = stable;
    io_send(c, ctx);
}

void nc_read(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open, uint64_t offset,
             uint32_t count, nc_callback cb, void *arg)
{
    io_start(c, cred, open, NULL, OP_READ, offset, NULL, count, false, cb, arg);
}

void nc_read_stateless(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                       uint64_t offset, uint32_t count, nc_callback cb, void *arg)
{
    io_start(c, cred, NULL, fh, OP_READ, offset, NULL, count, false, cb, arg);
}

void nc_write(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
              uint64_t offset, const void *data, uint32_t count, bool stable, nc_callback cb,
              void *arg)
{
    if (count > c->max_write) {
        /* Callers split writes by nc_client_max_write(); anything else is a bug. */
        nc_defer_error(c, cb, arg, -EINVAL);
        return;
    }
    io_start(c, cred, open, NULL, OP_WRITE, offset, data, count, stable, cb, arg);
}

void nc_commit(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
               nc_callback cb, void *arg)
{
    io_start(c, cred, open, NULL, OP_COMMIT, 0, NULL, 0, false, cb, arg);
}
