/*
 * State recovery, after the server forgot our client id (it restarted) or
 * our state (the lease expired while we could not reach it).
 *
 * 1. SETCLIENTID + CONFIRM with the same name and boot verifier as at
 *    mount, so that a restarted server finds us in its recovery records and
 *    lets us reclaim. That starts a new epoch.
 * 2. Every open state callers still hold is re-established in place (the
 *    struct nc_open keeps its address), one at a time: OPEN with
 *    CLAIM_PREVIOUS during the server's grace period; when the server has
 *    none (NFS4ERR_NO_GRACE), OPEN by name from the directory and name
 *    recorded at open time, accepted only if the name still leads to the
 *    same filehandle. An open that cannot be re-established fails its later
 *    uses (ESTALE when the file is gone, else EIO); nothing else does.
 * 3. Its locks: reclaimed (LOCK with reclaim) in the grace period. Without
 *    one they are not taken again: another client may have taken and
 *    released them meanwhile, so silently re-locking would hide a lost
 *    mutual exclusion. The open is marked locks_lost instead and its I/O
 *    and new locks fail with EIO until it is closed, as on Linux.
 * 4. Owner queues resume and parked calls are sent again.
 *
 * While this runs, owner queues are held and stateid-bearing calls parked
 * (c->recovering), so recovery has every owner's sequence to itself.
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MS 1000
#define IDLE_WAIT_MS 20

enum recover_phase { PHASE_IDLE, PHASE_CLIENTID, PHASE_OPENS };

struct nc_recovery {
    enum recover_phase phase;
    uint64_t retry_at; /* 0: not waiting */
    void (*retry)(struct nc_client *c);
    bool no_grace; /* the server has no grace period for us: reopen by name */
    struct nc_open *cur;
    bool cur_reclaimed; /* by CLAIM_PREVIOUS: its locks may be reclaimed too */
    bool cur_mismatch;  /* reopened by name, but the name leads to another file now */
    stateid4 stateid;
    struct nc_lockowner *lo; /* lock reclaim position */
    unsigned range;
    bool lock_new_owner;
    char owner_buf[48];
    unsigned opens_reclaimed;
    unsigned opens_reopened;
    unsigned opens_failed;
    unsigned locks_reclaimed;
    unsigned locks_lost;
};

int nc_recover_new(struct nc_recovery **out)
{
    struct nc_recovery *rec = calloc(1, sizeof(*rec));
    if (!rec)
        return -ENOMEM;
    *out = rec;
    return 0;
}

void nc_recover_free(struct nc_recovery *rec)
{
    free(rec);
}

static const char *status_text(int status)
{
    const char *n = nc_status_name(status);
    return n ? n : "unknown status";
}

static unsigned long long fh_id(const struct nc_fh *fh)
{
    return (unsigned long long)nc_fh_hash(fh);
}

static void retry_later(struct nc_client *c, void (*fn)(struct nc_client *c))
{
    c->recovery->retry = fn;
    c->recovery->retry_at = nc_now_ms() + RETRY_MS;
}

static void next_open(struct nc_client *c);
static void send_setclientid(struct nc_client *c);

/* The server lost us again (another restart) in the middle: start over.
 * Opens already done this round are from the old epoch again. */
static void restart(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    elog_warn(NC_COMPONENT, "the server forgot our client id again during recovery; restarting it");
    rec->phase = PHASE_CLIENTID;
    rec->cur = NULL;
    send_setclientid(c);
}

static bool gone(struct nc_client *c, int err)
{
    /* Failures of the transport are retried; only the end of the client stops us. */
    return c->shutting_down || err == -ECANCELED;
}

/* --- one open --- */

static void open_finished(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    rec->cur->epoch = c->epoch;
    rec->cur = NULL;
    next_open(c);
}

static void open_failed(struct nc_client *c, int err, const char *why)
{
    struct nc_recovery *rec = c->recovery;
    struct nc_open *open = rec->cur;
    elog_warn(NC_COMPONENT,
              "could not re-establish the open state of file %016llx (%s): it "
              "reports %s until closed",
              fh_id(&open->fh), why, strerror(-err));
    open->dead_err = err;
    rec->opens_failed++;
    open_finished(c);
}

static bool has_locks(const struct nc_open *open)
{
    for (const struct nc_lockowner *lo = open->lockowners; lo; lo = lo->next)
        if (lo->nranges)
            return true;
    return false;
}

static void mark_locks_lost(struct nc_client *c, const char *why)
{
    struct nc_recovery *rec = c->recovery;
    struct nc_open *open = rec->cur;
    unsigned n = 0;
    for (struct nc_lockowner *lo = open->lockowners; lo; lo = lo->next) {
        n += lo->nranges;
        if (lo->nranges)
            elog_warn(NC_COMPONENT,
                      "locks of owner %#llx on file %016llx lost (%s): its I/O "
                      "and locks report EIO until it is closed",
                      (unsigned long long)lo->id, fh_id(&open->fh), why);
    }
    open->locks_lost = true;
    rec->locks_lost += n;
}

/* The next range to reclaim (rec->lo/range), false when none is left. */
static bool next_range(struct nc_recovery *rec)
{
    while (rec->lo && rec->range >= rec->lo->nranges) {
        rec->lo = rec->lo->next;
        rec->range = 0;
    }
    return rec->lo != NULL;
}

static void send_lock_reclaim(struct nc_client *c);

static void lock_reclaim_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_recovery *rec = c->recovery;
    struct nc_open *open = rec->cur;
    struct nc_lockowner *lo = rec->lo;
    if (err) {
        if (!gone(c, err))
            retry_later(c, send_lock_reclaim);
        return;
    }
    nfs_resop4 *r = nc_res_op(res, 1, OP_LOCK);
    int st = r ? (int)r->nfs_resop4_u.oplock.status : -1;
    if (rec->lock_new_owner) {
        if (nc_seqid_advances(st))
            open->owner->seqid++;
    } else if (nc_seqid_advances(st)) {
        lo->seqid++;
    }
    if (st == NFS4ERR_STALE_CLIENTID || st == NFS4ERR_EXPIRED) {
        restart(c);
        return;
    }
    if (st != NFS4_OK) {
        if (rec->lock_new_owner)
            lo->name = nc_lockowner_new_name();
        mark_locks_lost(c, r ? status_text(st) : status_text(res->status));
        open_finished(c);
        return;
    }
    lo->stateid = r->nfs_resop4_u.oplock.LOCK4res_u.resok4.lock_stateid;
    if (rec->lock_new_owner) {
        lo->has_stateid = true;
        lo->seqid = 1;
    }
    rec->locks_reclaimed++;
    rec->range++;
    send_lock_reclaim(c);
}

static void send_lock_reclaim(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    struct nc_open *open = rec->cur;
    if (!next_range(rec)) {
        open_finished(c);
        return;
    }
    struct nc_lockowner *lo = rec->lo;
    const struct nc_lockrange *range = &lo->ranges[rec->range];
    struct nc_compound cp;
    nc_compound_init(&cp, "reclaim_lock");
    nc_op_putfh(&cp, &open->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_LOCK);
    LOCK4args *l = &a->nfs_argop4_u.oplock;
    l->locktype = range->type == NC_LOCK_WRITE ? WRITE_LT : READ_LT;
    l->reclaim = 1;
    l->offset = range->start;
    l->length = range->end == UINT64_MAX ? UINT64_MAX : range->end - range->start;
    rec->lock_new_owner = !lo->has_stateid;
    if (rec->lock_new_owner) {
        l->locker.new_lock_owner = 1;
        open_to_lock_owner4 *o = &l->locker.locker4_u.open_owner;
        o->open_seqid = open->owner->seqid;
        o->open_stateid = open->stateid;
        o->lock_seqid = 0;
        nc_fill_lock_owner(c, lo, &o->lock_owner, rec->owner_buf, sizeof(rec->owner_buf));
    } else {
        l->locker.new_lock_owner = 0;
        l->locker.locker4_u.lock_owner.lock_stateid = lo->stateid;
        l->locker.locker4_u.lock_owner.lock_seqid = lo->seqid;
    }
    nc_send_seqid(c, &open->cred, &cp, lock_reclaim_done, NULL);
    nc_compound_free(&cp);
}

static void close_mismatch_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    if (err && gone(c, err))
        return;
    nfs_resop4 *r = err ? NULL : nc_res_op(res, 1, OP_CLOSE);
    if (r && nc_seqid_advances((int)r->nfs_resop4_u.opclose.status))
        c->recovery->cur->owner->seqid++;
    open_failed(c, -EIO, "its name now leads to another file");
}

/* The state is the server's again (stateid in rec->stateid). */
static void open_established(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    struct nc_open *open = rec->cur;
    if (rec->cur_mismatch) {
        struct nc_compound cp;
        nc_compound_init(&cp, "close");
        nc_op_putfh(&cp, &open->fh);
        nfs_argop4 *a = nc_compound_add(&cp, OP_CLOSE);
        a->nfs_argop4_u.opclose.seqid = open->owner->seqid;
        a->nfs_argop4_u.opclose.open_stateid = rec->stateid;
        nc_send_seqid(c, &open->cred, &cp, close_mismatch_done, NULL);
        nc_compound_free(&cp);
        return;
    }
    open->stateid = rec->stateid;
    if (rec->cur_reclaimed)
        rec->opens_reclaimed++;
    else
        rec->opens_reopened++;
    if (!has_locks(open)) {
        open_finished(c);
        return;
    }
    if (!rec->cur_reclaimed) {
        mark_locks_lost(c, "the server offered no grace period to reclaim them");
        open_finished(c);
        return;
    }
    rec->lo = open->lockowners;
    rec->range = 0;
    send_lock_reclaim(c);
}

static void send_open_confirm(struct nc_client *c);

static void open_confirm_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_recovery *rec = c->recovery;
    if (err) {
        if (!gone(c, err))
            retry_later(c, send_open_confirm);
        return;
    }
    nfs_resop4 *r = nc_res_op(res, 1, OP_OPEN_CONFIRM);
    int st = r ? (int)r->nfs_resop4_u.opopen_confirm.status : -1;
    if (nc_seqid_advances(st))
        rec->cur->owner->seqid++;
    if (st == NFS4ERR_STALE_CLIENTID || st == NFS4ERR_EXPIRED) {
        restart(c);
        return;
    }
    if (st != NFS4_OK) {
        open_failed(c, -EIO, r ? status_text(st) : status_text(res->status));
        return;
    }
    rec->stateid = r->nfs_resop4_u.opopen_confirm.OPEN_CONFIRM4res_u.resok4.open_stateid;
    rec->cur->owner->confirmed = true;
    open_established(c);
}

static void send_open_confirm(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    struct nc_open *open = rec->cur;
    struct nc_compound cp;
    nc_compound_init(&cp, "open_confirm");
    nc_op_putfh(&cp, &open->fh);
    nfs_argop4 *a = nc_compound_add(&cp, OP_OPEN_CONFIRM);
    a->nfs_argop4_u.opopen_confirm.open_stateid = rec->stateid;
    a->nfs_argop4_u.opopen_confirm.seqid = open->owner->seqid;
    nc_send_seqid(c, &open->cred, &cp, open_confirm_done, NULL);
    nc_compound_free(&cp);
}

static void send_open(struct nc_client *c);

static void open_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_recovery *rec = c->recovery;
    struct nc_open *open = rec->cur;
    if (err) {
        if (!gone(c, err))
            retry_later(c, send_open);
        return;
    }
    nfs_resop4 *r = nc_res_op(res, 1, OP_OPEN);
    int st = r ? (int)r->nfs_resop4_u.opopen.status : -1;
    if (nc_seqid_advances(st))
        open->owner->seqid++;
    if (!r) {
        /* PUTFH failed: the file (reclaim) or its directory (reopen) is gone. */
        int e = nc_status_to_errno(res->status);
        open_failed(c, e == -ESTALE ? -ESTALE : -EIO, status_text(res->status));
        return;
    }
    switch (st) {
    case NFS4_OK:
        break;
    case NFS4ERR_STALE_CLIENTID:
    case NFS4ERR_EXPIRED:
        restart(c);
        return;
    case NFS4ERR_NO_GRACE:
        if (rec->cur_reclaimed) {
            if (!rec->no_grace)
                elog_info(NC_COMPONENT, "the server offers no grace period: reopening files "
                                        "by name; their locks cannot be reclaimed");
            rec->no_grace = true;
            rec->cur_reclaimed = false;
            send_open(c);
            return;
        }
        open_failed(c, -EIO, status_text(st));
        return;
    case NFS4ERR_GRACE:
    case NFS4ERR_DELAY:
        /* A reopen by name while the server waits for others' reclaims. */
        retry_later(c, send_open);
        return;
    case NFS4ERR_STALE:
    case NFS4ERR_BADHANDLE:
    case NFS4ERR_FHEXPIRED:
        open_failed(c, -ESTALE, status_text(st));
        return;
    default:
        open_failed(c, -EIO, status_text(st));
        return;
    }
    OPEN4resok *ok = &r->nfs_resop4_u.opopen.OPEN4res_u.resok4;
    rec->stateid = ok->stateid;
    if (!rec->cur_reclaimed) {
        struct nc_fh fh;
        rec->cur_mismatch = nc_res_find_fh(res, &fh) != 0 || !nc_fh_equal(&fh, &open->fh);
    }
    if (ok->rflags & OPEN4_RESULT_CONFIRM) {
        send_open_confirm(c);
        return;
    }
    open->owner->confirmed = true;
    open_established(c);
}

static void send_open(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    struct nc_open *open = rec->cur;
    if (!rec->cur_reclaimed && !open->name) {
        open_failed(c, -EIO, "its name is unknown");
        return;
    }
    rec->cur_mismatch = false;
    struct nc_compound cp;
    nc_compound_init(&cp, rec->cur_reclaimed ? "reclaim_open" : "reopen");
    nc_op_putfh(&cp, rec->cur_reclaimed ? &open->fh : &open->dir);
    nfs_argop4 *a = nc_compound_add(&cp, OP_OPEN);
    OPEN4args *o = &a->nfs_argop4_u.opopen;
    o->seqid = open->owner->seqid;
    o->share_access = open->share_access;
    o->share_deny = OPEN4_SHARE_DENY_NONE;
    nc_owner_fill(c, open->owner, &o->owner, rec->owner_buf, sizeof(rec->owner_buf));
    o->openhow.opentype = OPEN4_NOCREATE;
    if (rec->cur_reclaimed) {
        o->claim.claim = CLAIM_PREVIOUS;
        o->claim.open_claim4_u.delegate_type = OPEN_DELEGATE_NONE;
    } else {
        o->claim.claim = CLAIM_NULL;
        o->claim.open_claim4_u.file.utf8string_val = open->name;
        o->claim.open_claim4_u.file.utf8string_len = (u_int)strlen(open->name);
        nc_op_getfh(&cp);
    }
    nc_send_seqid(c, &open->cred, &cp, open_done, NULL);
    nc_compound_free(&cp);
}

/* --- the round over all opens --- */

static void finish(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    rec->phase = PHASE_IDLE;
    c->recovering = false;
    if (rec->opens_failed || rec->locks_lost)
        elog_warn(NC_COMPONENT,
                  "state recovered: %u opens reclaimed, %u reopened, %u failed; "
                  "%u locks reclaimed, %u lost",
                  rec->opens_reclaimed, rec->opens_reopened, rec->opens_failed,
                  rec->locks_reclaimed, rec->locks_lost);
    else
        elog_info(NC_COMPONENT,
                  "state recovered: %u opens reclaimed, %u reopened; %u locks "
                  "reclaimed",
                  rec->opens_reclaimed, rec->opens_reopened, rec->locks_reclaimed);
    nc_state_resume_owners(c);
    nc_unpark_all(c);
}

static void next_open(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    if (c->shutting_down)
        return;
    /* An owner busy with a call from before waits for its answer (which
     * puts the call back in the queue) before we use its sequence. */
    for (struct nc_owner *o = nc_state_owners(c); o; o = o->next) {
        if (o->busy) {
            rec->retry = next_open;
            rec->retry_at = nc_now_ms() + IDLE_WAIT_MS;
            return;
        }
    }
    for (struct nc_owner *o = nc_state_owners(c); o; o = o->next) {
        for (struct nc_open *open = o->opens; open; open = open->next) {
            if (open->epoch == c->epoch || open->dead_err || open->closing)
                continue;
            rec->cur = open;
            rec->cur_reclaimed = !rec->no_grace;
            send_open(c);
            return;
        }
    }
    finish(c);
}

static void confirm_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct nc_recovery *rec = c->recovery;
    if (err || res->status != NFS4_OK) {
        if (err && gone(c, err))
            return;
        elog_warn(NC_COMPONENT, "re-establishing the client id failed (%s); retrying",
                  err ? strerror(-err) : status_text(res->status));
        retry_later(c, send_setclientid);
        return;
    }
    c->epoch++;
    nc_state_reset_owners(c);
    nc_state_set_lease(c, c->lease_seconds);
    rec->phase = PHASE_OPENS;
    rec->no_grace = false;
    next_open(c);
}

static void setclientid_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    nfs_resop4 *r = err ? NULL : nc_res_op(res, 0, OP_SETCLIENTID);
    if (!r || res->status != NFS4_OK) {
        if (err && gone(c, err))
            return;
        elog_warn(NC_COMPONENT, "re-establishing the client id failed (%s); retrying",
                  err ? strerror(-err) : status_text(res->status));
        retry_later(c, send_setclientid);
        return;
    }
    SETCLIENTID4resok *ok = &r->nfs_resop4_u.opsetclientid.SETCLIENTID4res_u.resok4;
    c->clientid = ok->clientid;
    memcpy(c->confirm_verifier, ok->setclientid_confirm, sizeof(c->confirm_verifier));
    struct nc_compound cp;
    struct nc_cred root = {0};
    nc_compound_init(&cp, "recover");
    nfs_argop4 *a = nc_compound_add(&cp, OP_SETCLIENTID_CONFIRM);
    a->nfs_argop4_u.opsetclientid_confirm.clientid = c->clientid;
    memcpy(a->nfs_argop4_u.opsetclientid_confirm.setclientid_confirm, c->confirm_verifier,
           sizeof(verifier4));
    nc_send(c, &root, &cp, confirm_done, NULL);
    nc_compound_free(&cp);
}

static void send_setclientid(struct nc_client *c)
{
    struct nc_compound cp;
    struct nc_cred root = {0};
    char netid[] = "tcp";
    char raddr[] = "0.0.0.0.0.0";
    nc_compound_init(&cp, "recover");
    nc_fill_setclientid(c, &cp, netid, raddr);
    nc_send(c, &root, &cp, setclientid_done, NULL);
    nc_compound_free(&cp);
}

void nc_client_recover(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    if (c->recovering || c->shutting_down)
        return;
    c->recovering = true;
    memset(rec, 0, sizeof(*rec));
    rec->phase = PHASE_CLIENTID;
    elog_warn(NC_COMPONENT, "the server lost our state (it restarted, or our lease expired); "
                            "recovering open files and locks");
    send_setclientid(c);
}

void nc_recover_tick(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    if (!c->recovering || !rec->retry_at || nc_now_ms() < rec->retry_at || c->shutting_down)
        return;
    rec->retry_at = 0;
    rec->retry(c);
}

int nc_recover_timeout_ms(struct nc_client *c)
{
    struct nc_recovery *rec = c->recovery;
    if (!c->recovering || !rec->retry_at)
        return -1;
    uint64_t now = nc_now_ms();
    return rec->retry_at > now ? (int)(rec->retry_at - now) : 0;
}
