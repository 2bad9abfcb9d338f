/*
 * Byte-range locks: LOCK, LOCKU, LOCKT.
 *
 * A lock-owner here belongs to one open state (the first LOCK of a new
 * lock-owner is tied to an open stateid and consumes the open-owner's
 * seqid), so LOCK and LOCKU run through the open-owner's queue, which also
 * serialises the lock-owner's own seqid. NFSv4.0 has no callback for a lock
 * becoming free, so a waiting lock polls with backoff, as the Linux client
 * does.
 *
 * What each lock-owner holds is tracked as POSIX sees it (a lock sets a
 * range to its type, an unlock clears it), so that recovery can reclaim it
 * after a server restart (recover.c).
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MIN_MS 50
#define RETRY_MAX_MS 1000

struct nc_lock_wait {
    struct nc_seqop seqop;
    struct nc_lock_wait *next; /* in the client's list while waiting for a retry */
    struct nc_client *c;
    struct nc_cred cred;
    struct nc_open *open;
    struct nc_lockowner *lo;
    struct nc_lock lock;
    bool wait;
    bool unlock;
    bool cancelled;
    bool waiting_retry;
    bool used_new_owner;
    bool local; /* answered without the server: local_err */
    int local_err;
    unsigned epoch; /* of the client id the call went out under */
    uint64_t retry_at;
    unsigned backoff_ms;
    nc_callback cb;
    void *arg;
    char owner_buf[48];
};

static uint32_t next_lockowner_name;

uint32_t nc_lockowner_new_name(void)
{
    return ++next_lockowner_name;
}

static int range_cmp(const void *a, const void *b)
{
    const struct nc_lockrange *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

void nc_lockowner_update(struct nc_lockowner *lo, uint64_t start, uint64_t len, int type)
{
    uint64_t end = (len == 0 || start + len < start) ? UINT64_MAX : start + len;
    /* Cutting [start, end) out of a range splits it in two at most. */
    struct nc_lockrange *out = calloc(lo->nranges + 2, sizeof(*out));
    if (!out) {
        elog_warn(NC_COMPONENT, "out of memory tracking a lock: it cannot be reclaimed");
        return;
    }
    unsigned n = 0;
    for (unsigned i = 0; i < lo->nranges; i++) {
        struct nc_lockrange r = lo->ranges[i];
        if (r.end <= start || r.start >= end) {
            out[n++] = r;
            continue;
        }
        if (r.start < start)
            out[n++] = (struct nc_lockrange){r.start, start, r.type};
        if (r.end > end)
            out[n++] = (struct nc_lockrange){end, r.end, r.type};
    }
    if (type)
        out[n++] = (struct nc_lockrange){start, end, (enum nc_lock_type)type};
    qsort(out, n, sizeof(*out), range_cmp);
    unsigned m = 0;
    for (unsigned i = 0; i < n; i++) {
        if (m && out[m - 1].type == out[i].type && out[m - 1].end == out[i].start)
            out[m - 1].end = out[i].end;
        else
            out[m++] = out[i];
    }
    free(lo->ranges);
    lo->ranges = out;
    lo->nranges = m;
}

static length4 nfs_length(const struct nc_lock *lock)
{
    if (lock->len == 0)
        return UINT64_MAX; /* to the end of the file, whatever it becomes */
    return lock->len;
}

static struct nc_lockowner *find_lockowner(struct nc_open *open, uint64_t id, bool create)
{
    for (struct nc_lockowner *lo = open->lockowners; lo; lo = lo->next)
        if (lo->id == id)
            return lo;
    if (!create)
        return NULL;
    struct nc_lockowner *lo = calloc(1, sizeof(*lo));
    if (!lo)
        return NULL;
    lo->id = id;
    lo->name = ++next_lockowner_name;
    lo->next = open->lockowners;
    open->lockowners = lo;
    return lo;
}

void nc_fill_lock_owner(struct nc_client *c, const struct nc_lockowner *lo, lock_owner4 *out,
                        char *buf, size_t buflen)
{
    int n = snprintf(buf, buflen, "efsfuse-lock-%u", lo->name);
    out->clientid = c->clientid;
    out->owner.owner_len = (u_int)n;
    out->owner.owner_val = buf;
}

static void conflict_from(struct nc_reply *reply, const LOCK4denied *d)
{
    reply->has_lock_conflict = true;
    reply->lock_conflict.type =
        (d->locktype == WRITE_LT || d->locktype == WRITEW_LT) ? NC_LOCK_WRITE : NC_LOCK_READ;
    reply->lock_conflict.start = d->offset;
    reply->lock_conflict.len = d->length == UINT64_MAX ? 0 : d->length;
}

static void wait_finish(struct nc_lock_wait *w, struct nc_reply *reply)
{
    w->cb(w->arg, reply);
    nc_close(w->c, w->open, NULL, NULL);
    free(w);
}

static void lock_start(struct nc_client *c, struct nc_seqop *op);

static void lock_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_lock_wait *w = arg;
    struct nc_lockowner *lo = w->lo;
    struct nc_reply reply = {0};
    int st = -1;
    if (w->local) {
        nc_owner_done(c, w->open->owner, -1);
        reply.err = w->local_err;
        wait_finish(w, &reply);
        return;
    }
    if (err) {
        reply.err = err;
    } else {
        nfs_resop4 *r = nc_res_op(res, 1, w->unlock ? OP_LOCKU : OP_LOCK);
        if (r)
            st = w->unlock ? (int)r->nfs_resop4_u.oplocku.status
                           : (int)r->nfs_resop4_u.oplock.status;
        int status = r ? st : (int)res->status;
        if (nc_status_lost_stateid(status) && !c->shutting_down) {
            /* Sent with state the server forgot: again once it is recovered
             * (the seqids do not advance on these errors). */
            if (w->used_new_owner)
                lo->name = nc_lockowner_new_name();
            if (w->epoch == c->epoch)
                nc_client_recover(c);
            nc_owner_retry_after_recovery(c, w->open->owner, &w->seqop);
            return;
        }
        if (st == NFS4ERR_GRACE || st == NFS4ERR_DELAY) {
            /* A restarted server takes only reclaims for now, or a busy one
             * asks us to wait; the seqid was used up (and a new lock-owner
             * perhaps registered). */
            if (w->used_new_owner) {
                w->open->owner->seqid++;
                lo->name = nc_lockowner_new_name();
            } else {
                lo->seqid++;
            }
            nc_owner_retry_delayed(c, w->open->owner, &w->seqop, st);
            return;
        }
        reply.err = nc_status_to_errno(status);
        if (r && st == NFS4_OK) {
            lo->stateid = w->unlock ? r->nfs_resop4_u.oplocku.LOCKU4res_u.lock_stateid
                                    : r->nfs_resop4_u.oplock.LOCK4res_u.resok4.lock_stateid;
            nc_lockowner_update(lo, w->lock.start, w->lock.len, w->unlock ? 0 : (int)w->lock.type);
        } else if (r && st == NFS4ERR_DENIED && !w->unlock) {
            conflict_from(&reply, &r->nfs_resop4_u.oplock.LOCK4res_u.denied);
        }
    }
    if (w->used_new_owner) {
        /* open_to_lock_owner consumed the open-owner's seqid. */
        nc_owner_done(c, w->open->owner, st);
        if (st == NFS4_OK) {
            lo->has_stateid = true;
            lo->seqid = 1;
        } else {
            /* The server may or may not have registered the lock-owner;
             * a new name avoids guessing its seqid. */
            lo->name = ++next_lockowner_name;
        }
    } else {
        if (nc_seqid_advances(st))
            lo->seqid++;
        nc_owner_done(c, w->open->owner, -1);
    }
    if (st == NFS4ERR_DENIED && w->wait && !w->cancelled) {
        w->waiting_retry = true;
        w->retry_at = nc_now_ms() + w->backoff_ms;
        w->backoff_ms = w->backoff_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : w->backoff_ms * 2;
        w->next = c->lock_waits;
        c->lock_waits = w;
        return;
    }
    if (w->cancelled && reply.err)
        reply.err = -EINTR;
    wait_finish(w, &reply);
}

static void lock_start(struct nc_client *c, struct nc_seqop *op)
{
    struct nc_lock_wait *w = (struct nc_lock_wait *)op;
    struct nc_open *open = w->open;
    struct nc_lockowner *lo = w->lo;
    if (w->cancelled) {
        nc_owner_done(c, open->owner, -1);
        struct nc_reply reply = nc_reply_err(-EINTR);
        wait_finish(w, &reply);
        return;
    }
    /* What recovery found while this waited in the queue. */
    w->local = true;
    if (open->dead_err) {
        w->local_err = open->dead_err;
    } else if (w->unlock && !lo->has_stateid) {
        /* Lost with a restart, or never granted: nothing held to release,
         * so unlocking succeeds (the range is free as far as we know). */
        nc_lockowner_update(lo, w->lock.start, w->lock.len, 0);
        w->local_err = 0;
    } else if (open->locks_lost && !w->unlock) {
        w->local_err = -EIO;
    } else if (open->epoch != c->epoch) {
        w->local_err = -EIO; /* closing while recovery ran */
    } else {
        w->local = false;
    }
    if (w->local) {
        /* From the loop: this may run inside nc_lock(). */
        nc_defer_done(c, lock_done, w, 0);
        return;
    }
    w->epoch = c->epoch;
    struct nc_compound cp;
    nc_compound_init(&cp, w->unlock ? "locku" : "lock");
    nc_op_putfh(&cp, &open->fh);
    if (w->unlock) {
        nfs_argop4 *a = nc_compound_add(&cp, OP_LOCKU);
        LOCKU4args *u = &a->nfs_argop4_u.oplocku;
        u->locktype = w->lock.type == NC_LOCK_WRITE ? WRITE_LT : READ_LT;
        u->seqid = lo->seqid;
        u->lock_stateid = lo->stateid;
        u->offset = w->lock.start;
        u->length = nfs_length(&w->lock);
        w->used_new_owner = false;
    } else {
        nfs_argop4 *a = nc_compound_add(&cp, OP_LOCK);
        LOCK4args *l = &a->nfs_argop4_u.oplock;
        bool write = w->lock.type == NC_LOCK_WRITE;
        l->locktype = w->wait ? (write ? WRITEW_LT : READW_LT) : (write ? WRITE_LT : READ_LT);
        l->reclaim = 0;
        l->offset = w->lock.start;
        l->length = nfs_length(&w->lock);
        w->used_new_owner = !lo->has_stateid;
        if (w->used_new_owner) {
            l->locker.new_lock_owner = 1;
            open_to_lock_owner4 *o = &l->locker.locker4_u.open_owner;
            o->open_seqid = open->owner->seqid;
            o->open_stateid = open->stateid;
            o->lock_seqid = 0;
            nc_fill_lock_owner(c, lo, &o->lock_owner, w->owner_buf, sizeof(w->owner_buf));
        } else {
            l->locker.new_lock_owner = 0;
            l->locker.locker4_u.lock_owner.lock_stateid = lo->stateid;
            l->locker.locker4_u.lock_owner.lock_seqid = lo->seqid;
        }
    }
    nc_send_seqid(c, &w->cred, &cp, lock_done, w);
    nc_compound_free(&cp);
}

static struct nc_lock_wait *lock_request(struct nc_client *c, const struct nc_cred *cred,
                                         struct nc_open *open, uint64_t owner,
                                         const struct nc_lock *lock, bool wait, bool unlock,
                                         nc_callback cb, void *arg)
{
    if (open->dead_err) {
        nc_defer_error(c, cb, arg, open->dead_err);
        return NULL;
    }
    if (open->locks_lost && !unlock) {
        /* Until the file is closed, as the Linux client does. */
        nc_defer_error(c, cb, arg, -EIO);
        return NULL;
    }
    struct nc_lockowner *lo = find_lockowner(open, owner, !unlock);
    if (unlock && !lo) {
        /* This owner never got a lock on this open: nothing to release. */
        nc_defer_error(c, cb, arg, 0);
        return NULL;
    }
    struct nc_lock_wait *w = lo ? calloc(1, sizeof(*w)) : NULL;
    if (!w) {
        nc_defer_error(c, cb, arg, -ENOMEM);
        return NULL;
    }
    w->c = c;
    w->cred = *cred;
    w->open = nc_open_ref(open);
    w->lo = lo;
    w->lock = *lock;
    w->wait = wait;
    w->unlock = unlock;
    w->backoff_ms = RETRY_MIN_MS;
    w->cb = cb;
    w->arg = arg;
    w->seqop.start = lock_start;
    nc_owner_submit(c, open->owner, &w->seqop);
    return w;
}

struct nc_lock_wait *nc_lock(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
                             uint64_t owner, const struct nc_lock *lock, bool wait, nc_callback cb,
                             void *arg)
{
    return lock_request(c, cred, open, owner, lock, wait, false, cb, arg);
}

void nc_unlock(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
               uint64_t owner, const struct nc_lock *lock, nc_callback cb, void *arg)
{
    lock_request(c, cred, open, owner, lock, false, true, cb, arg);
}

void nc_lock_cancel(struct nc_client *c, struct nc_lock_wait *w)
{
    if (!w)
        return;
    if (!w->waiting_retry) {
        /* In flight or queued: finishes with -EINTR unless it was granted. */
        w->cancelled = true;
        return;
    }
    for (struct nc_lock_wait **pp = &c->lock_waits; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    }
    struct nc_reply reply = nc_reply_err(-EINTR);
    wait_finish(w, &reply);
}

void nc_lock_waits_tick(struct nc_client *c)
{
    uint64_t now = nc_now_ms();
    struct nc_lock_wait **pp = &c->lock_waits;
    while (*pp) {
        struct nc_lock_wait *w = *pp;
        if (w->retry_at > now) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        w->waiting_retry = false;
        nc_owner_submit(c, w->open->owner, &w->seqop);
    }
}

int nc_lock_waits_timeout_ms(struct nc_client *c)
{
    int best = -1;
    uint64_t now = nc_now_ms();
    for (struct nc_lock_wait *w = c->lock_waits; w; w = w->next) {
        int t = w->retry_at > now ? (int)(w->retry_at - now) : 0;
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}

void nc_lock_waits_free(struct nc_client *c)
{
    while (c->lock_waits) {
        struct nc_lock_wait *w = c->lock_waits;
        c->lock_waits = w->next;
        struct nc_reply reply = nc_reply_err(-ECANCELED);
        w->cb(w->arg, &reply);
        free(w); /* the open states are freed with the client state */
    }
}

/* --- LOCKT --- */

struct test_ctx {
    struct nc_parked park; /* first: resume() gets the ctx back */
    nc_callback cb;
    void *arg;
    struct nc_cred cred;
    struct nc_open *open; /* a reference */
    struct nc_lockowner *lo;
    struct nc_lock lock;
    unsigned epoch;
    bool retried;
};

static void test_send(struct nc_client *c, struct test_ctx *ctx);

static void test_finish(struct nc_client *c, struct test_ctx *ctx, const struct nc_reply *reply)
{
    ctx->cb(ctx->arg, reply);
    nc_close(c, ctx->open, NULL, NULL);
    free(ctx);
}

static void test_resume(struct nc_client *c, struct nc_parked *p)
{
    struct test_ctx *ctx = (struct test_ctx *)p;
    if (c->shutting_down) {
        struct nc_reply reply = nc_reply_err(-ECANCELED);
        test_finish(c, ctx, &reply);
        return;
    }
    test_send(c, ctx);
}

static void test_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct test_ctx *ctx = arg;
    struct nc_reply reply = {0};
    if (err) {
        reply.err = err;
    } else {
        nfs_resop4 *r = nc_res_op(res, 1, OP_LOCKT);
        int st = r ? (int)r->nfs_resop4_u.oplockt.status : (int)res->status;
        if (nc_status_lost_state(st) && !ctx->retried && !c->shutting_down) {
            /* The lock-owner names our old client id: ask again under the new one. */
            ctx->retried = true;
            if (ctx->epoch == c->epoch)
                nc_client_recover(c);
            test_send(c, ctx);
            return;
        }
        reply.err = nc_status_to_errno(st);
        if (r && st == NFS4ERR_DENIED)
            conflict_from(&reply, &r->nfs_resop4_u.oplockt.LOCKT4res_u.denied);
    }
    test_finish(c, ctx, &reply);
}

static void test_send(struct nc_client *c, struct test_ctx *ctx)
{
    if (c->recovering) {
        nc_park(c, &ctx->park);
        return;
    }
    ctx->epoch = c->epoch;
    char owner_buf[48];
    struct nc_compound cp;
    nc_compound_init(&cp, "lockt");
    nc_op_putfh(&cp, &ctx->open->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_LOCKT);
    LOCKT4args *t = &a->nfs_argop4_u.oplockt;
    t->locktype = ctx->lock.type == NC_LOCK_WRITE ? WRITE_LT : READ_LT;
    t->offset = ctx->lock.start;
    t->length = nfs_length(&ctx->lock);
    nc_fill_lock_owner(c, ctx->lo, &t->owner, owner_buf, sizeof(owner_buf));
    nc_send(c, &ctx->cred, &cp, test_done, ctx);
    nc_compound_free(&cp);
}

void nc_lock_test(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
                  uint64_t owner, const struct nc_lock *lock, nc_callback cb, void *arg)
{
    struct test_ctx *ctx = calloc(1, sizeof(*ctx));
    struct nc_lockowner *lo = ctx ? find_lockowner(open, owner, true) : NULL;
    if (!lo) {
        free(ctx);
        nc_defer_error(c, cb, arg, -ENOMEM);
        return;
    }
    ctx->park.resume = test_resume;
    ctx->cb = cb;
    ctx->arg = arg;
    ctx->cred = *cred;
    ctx->open = nc_open_ref(open);
    ctx->lo = lo;
    ctx->lock = *lock;
    test_send(c, ctx);
}
