/*
 * NFSv4.0 client state: lease renewal, open-owners and the index of open
 * states.
 *
 * Every OPEN, OPEN_CONFIRM, CLOSE and LOCK carries the owner's sequence id,
 * and the server insists on seeing them in order. Pipelining two of them for
 * one owner lets a multi-threaded server process them out of order
 * (NFS4ERR_BAD_SEQID; libnfs 4.0.0 breaks exactly this way), so each owner
 * runs one such operation at a time from a queue. Parallelism comes from
 * having several owners per user.
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OWNERS_PER_UID 16

#define GRACE_RETRY_MS 1000

struct nc_state {
    struct nc_owner *owners;
    struct nc_seqop *delayed; /* waiting out the grace period */
    uint32_t next_owner_id;
    uint64_t renew_at;
    uint32_t renew_interval_ms;
    bool renew_in_flight;
    bool lease_lost_logged;
};

int nc_state_new(struct nc_state **out)
{
    struct nc_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    *out = st;
    return 0;
}

static void free_open(struct nc_open *open)
{
    while (open->lockowners) {
        struct nc_lockowner *lo = open->lockowners;
        open->lockowners = lo->next;
        free(lo->ranges);
        free(lo);
    }
    free(open->name);
    free(open);
}

void nc_state_free(struct nc_state *st)
{
    if (!st)
        return;
    while (st->owners) {
        struct nc_owner *o = st->owners;
        st->owners = o->next;
        while (o->opens) {
            struct nc_open *open = o->opens;
            o->opens = open->next;
            free_open(open);
        }
        free(o);
    }
    free(st);
}

clientid4 nc_state_clientid(const struct nc_client *c)
{
    return c->clientid;
}

/*
 * RFC 7530 section 9.1.7: the seqid advances after every operation the
 * server executed, except when it failed with one of these (the server could
 * not tell which owner or sequence the request belonged to).
 */
bool nc_seqid_advances(int nfs_status)
{
    switch (nfs_status) {
    case -1: /* not executed */
    case NFS4ERR_STALE_CLIENTID:
    case NFS4ERR_STALE_STATEID:
    case NFS4ERR_BAD_STATEID:
    case NFS4ERR_BAD_SEQID:
    case NFS4ERR_BADZDR:
    case NFS4ERR_RESOURCE:
    case NFS4ERR_NOFILEHANDLE:
    case NFS4ERR_MOVED:
        return false;
    default:
        return true;
    }
}

/* --- owners --- */

struct nc_owner *nc_owner_pick(struct nc_client *c, uint32_t uid)
{
    struct nc_state *st = c->state;
    struct nc_owner *best = NULL;
    unsigned count = 0;
    for (struct nc_owner *o = st->owners; o; o = o->next) {
        if (o->uid != uid || o->broken)
            continue;
        count++;
        if (!o->busy && !o->queue_head && o->confirmed)
            return o;
        if (!best || o->queued + o->busy < best->queued + best->busy)
            best = o;
    }
    if (count < OWNERS_PER_UID || !best) {
        struct nc_owner *o = calloc(1, sizeof(*o));
        if (!o)
            return best;
        o->id = ++st->next_owner_id;
        o->uid = uid;
        o->next = st->owners;
        st->owners = o;
        if (!best || best->busy || best->queue_head)
            return o;
    }
    return best;
}

void nc_owner_fill(const struct nc_client *c, const struct nc_owner *owner, open_owner4 *out,
                   char *buf, size_t buflen)
{
    int n = snprintf(buf, buflen, "efsfuse-open-%u", owner->id);
    out->clientid = c->clientid;
    out->owner.owner_len = (u_int)n;
    out->owner.owner_val = buf;
}

static void owner_run_next(struct nc_client *c, struct nc_owner *owner)
{
    /* While the client id is being re-established nothing may use it. */
    if (owner->busy || !owner->queue_head || c->recovering)
        return;
    struct nc_seqop *op = owner->queue_head;
    owner->queue_head = op->next;
    if (!owner->queue_head)
        owner->queue_tail = NULL;
    owner->queued--;
    owner->busy = true;
    op->start(c, op);
}

void nc_owner_submit(struct nc_client *c, struct nc_owner *owner, struct nc_seqop *op)
{
    op->next = NULL;
    if (owner->queue_tail)
        owner->queue_tail->next = op;
    else
        owner->queue_head = op;
    owner->queue_tail = op;
    owner->queued++;
    owner_run_next(c, owner);
}

void nc_owner_done(struct nc_client *c, struct nc_owner *owner, int nfs_status)
{
    if (nc_seqid_advances(nfs_status))
        owner->seqid++;
    if (nfs_status == NFS4ERR_BAD_SEQID && !owner->broken) {
        /* Our idea of the sequence is wrong; a fresh owner starts over. */
        elog_warn(NC_COMPONENT, "open-owner %u lost sequence sync; retiring it", owner->id);
        owner->broken = true;
    }
    owner->busy = false;
    owner_run_next(c, owner);
}

bool nc_status_lost_state(int nfs_status)
{
    return nfs_status == NFS4ERR_STALE_CLIENTID || nfs_status == NFS4ERR_EXPIRED ||
           nfs_status == NFS4ERR_STALE_STATEID;
}

bool nc_status_lost_stateid(int nfs_status)
{
    return nc_status_lost_state(nfs_status) || nfs_status == NFS4ERR_BAD_STATEID;
}

void nc_owner_retry_delayed(struct nc_client *c, struct nc_owner *owner, struct nc_seqop *op,
                            int nfs_status)
{
    struct nc_state *st = c->state;
    uint32_t wait_ms = GRACE_RETRY_MS;
    if (nfs_status == NFS4ERR_DELAY) {
        wait_ms = op->delay_ms ? op->delay_ms : NC_DELAY_MIN_MS;
        op->delay_ms = nc_delay_next(wait_ms);
        elog_debug(NC_COMPONENT, "server answered DELAY to a seqid request; again in %u ms",
                   wait_ms);
    }
    op->delay_owner = owner;
    op->delay_at = nc_now_ms() + wait_ms;
    op->delay_next = st->delayed;
    st->delayed = op;
}

static void run_delayed(struct nc_client *c)
{
    struct nc_state *st = c->state;
    uint64_t now = nc_now_ms();
    struct nc_seqop **pp = &st->delayed;
    while (*pp) {
        struct nc_seqop *op = *pp;
        if (op->delay_at > now && !c->recovering) {
            pp = &op->delay_next;
            continue;
        }
        *pp = op->delay_next;
        /* Recovery needs every owner idle: the op waits in its queue instead. */
        if (c->recovering)
            nc_owner_retry_after_recovery(c, op->delay_owner, op);
        else
            op->start(c, op);
        pp = &st->delayed; /* start() may have changed the list */
    }
}

void nc_owner_retry_after_recovery(struct nc_client *c, struct nc_owner *owner, struct nc_seqop *op)
{
    op->next = owner->queue_head;
    owner->queue_head = op;
    if (!owner->queue_tail)
        owner->queue_tail = op;
    owner->queued++;
    owner->busy = false;
    owner_run_next(c, owner);
}

void nc_state_reset_owners(struct nc_client *c)
{
    struct nc_state *st = c->state;
    for (struct nc_owner *o = st->owners; o; o = o->next) {
        /* New names: a server that kept our client id (an expired lease)
         * may still know the old owners and their sequence. */
        o->id = ++st->next_owner_id;
        o->seqid = 0;
        o->confirmed = false;
        o->broken = false;
        for (struct nc_open *open = o->opens; open; open = open->next) {
            for (struct nc_lockowner *lo = open->lockowners; lo; lo = lo->next) {
                lo->has_stateid = false;
                lo->seqid = 0;
                lo->name = nc_lockowner_new_name();
            }
        }
    }
}

struct nc_owner *nc_state_owners(struct nc_client *c)
{
    return c->state->owners;
}

void nc_state_resume_owners(struct nc_client *c)
{
    for (struct nc_owner *o = c->state->owners; o; o = o->next)
        owner_run_next(c, o);
}

/* --- open states --- */

struct nc_open *nc_owner_find_open(struct nc_owner *owner, const stateid4 *sid)
{
    for (struct nc_open *o = owner->opens; o; o = o->next)
        if (!o->closing && !o->dead_err &&
            memcmp(o->stateid.other, sid->other, sizeof(sid->other)) == 0)
            return o;
    return NULL;
}

void nc_owner_add_open(struct nc_owner *owner, struct nc_open *open)
{
    open->owner = owner;
    open->next = owner->opens;
    owner->opens = open;
}

void nc_owner_remove_open(struct nc_owner *owner, struct nc_open *open)
{
    for (struct nc_open **pp = &owner->opens; *pp; pp = &(*pp)->next) {
        if (*pp == open) {
            *pp = open->next;
            open->next = NULL;
            return;
        }
    }
}

struct nc_open *nc_state_find_open(struct nc_client *c, const struct nc_fh *fh, uint32_t uid,
                                   uint32_t share_access)
{
    for (struct nc_owner *o = c->state->owners; o; o = o->next) {
        if (o->uid != uid || o->broken)
            continue;
        for (struct nc_open *open = o->opens; open; open = open->next)
            if (!open->closing && !open->dead_err &&
                (open->share_access & share_access) == share_access && nc_fh_equal(&open->fh, fh))
                return open;
    }
    return NULL;
}

bool nc_owner_has_fh(const struct nc_owner *owner, const struct nc_fh *fh)
{
    for (const struct nc_open *open = owner->opens; open; open = open->next)
        if (nc_fh_equal(&open->fh, fh))
            return true;
    return false;
}

void nc_open_free(struct nc_open *open)
{
    if (open)
        free_open(open);
}

/* --- lease --- */

void nc_state_set_lease(struct nc_client *c, uint32_t lease_seconds)
{
    struct nc_state *st = c->state;
    if (lease_seconds == 0)
        lease_seconds = 90;
    /* A third of the lease leaves two more chances if a RENEW is slow. */
    st->renew_interval_ms = lease_seconds * 1000 / 3;
    st->renew_at = nc_now_ms() + st->renew_interval_ms;
}

int nc_state_timeout_ms(struct nc_client *c)
{
    struct nc_state *st = c->state;
    uint64_t now = nc_now_ms();
    uint64_t due = st->renew_at;
    for (struct nc_seqop *op = st->delayed; op; op = op->delay_next)
        if (!due || op->delay_at < due)
            due = op->delay_at;
    if (!due)
        return -1;
    return due > now ? (int)(due - now) : 0;
}

static void renew_done(struct nc_client *c, void *ctx, int err, COMPOUND4res *res)
{
    struct nc_state *st = c->state;
    st->renew_in_flight = false;
    if (err)
        return; /* connection trouble is reported by the transport */
    /* (An answer for an older client id than ours changes nothing.) */
    if (nc_status_lost_state(res->status) && (uintptr_t)ctx == c->epoch) {
        nc_client_recover(c);
    } else if (res->status != NFS4_OK) {
        if (!st->lease_lost_logged)
            elog_error(NC_COMPONENT, "lease renewal failed: %s",
                       nc_status_name(res->status) ? nc_status_name(res->status) : "unknown");
        st->lease_lost_logged = true;
    } else {
        st->lease_lost_logged = false;
    }
}

void nc_state_tick(struct nc_client *c)
{
    struct nc_state *st = c->state;
    if (st->delayed)
        run_delayed(c);
    if (!st->renew_at || nc_now_ms() < st->renew_at)
        return;
    st->renew_at = nc_now_ms() + st->renew_interval_ms;
    /* (Recovery's own calls renew the new client id's lease meanwhile.) */
    if (st->renew_in_flight || c->shutting_down || c->recovering)
        return;
    struct nc_compound cp;
    nc_compound_init(&cp, "renew");
    nfs_argop4 *a = nc_compound_add(&cp, OP_RENEW);
    a->nfs_argop4_u.oprenew.clientid = c->clientid;
    struct nc_cred root = {0};
    st->renew_in_flight = true;
    nc_send(c, &root, &cp, renew_done, (void *)(uintptr_t)c->epoch);
    nc_compound_free(&cp);
}

/* --- shutdown --- */

struct close_all_ctx {
    unsigned pending;
};

static void close_all_done(void *arg, const struct nc_reply *reply)
{
    struct close_all_ctx *ctx = arg;
    ctx->pending--;
}

void nc_state_close_all(struct nc_client *c)
{
    struct close_all_ctx ctx = {0};
    for (struct nc_owner *o = c->state->owners; o; o = o->next) {
        struct nc_open *open = o->opens;
        while (open) {
            struct nc_open *next = open->next;
            if (!open->closing) {
                open->refs = 1;
                ctx.pending++;
                nc_close(c, open, close_all_done, &ctx);
            }
            open = next;
        }
    }
    uint64_t deadline = nc_now_ms() + 5000;
    while (ctx.pending > 0 && nc_now_ms() < deadline && nc_rpc_connected(c->rpc))
        nc_client_run_once(c, 100);
}
