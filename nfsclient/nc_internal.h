/*
 * nfsclient internals, shared by the files of this directory only.
 *
 * The pieces:
 *   rpc.c       the TCP connection: record marking, XIDs, send queue,
 *               retransmission on reconnect, timeouts
 *   compound.c  building COMPOUND4args and reading fattr4 / writing attributes
 *   state.c     lease renewal, open-owners and their seqid queues
 *   recover.c   state recovery: a new client id, then every open and lock
 *               reclaimed (grace) or reopened, then the parked calls resent
 *   client.c    nc_client lifetime, connect, the event-loop entry points
 *   meta.c      stateless operations (getattr, lookup, create, remove, ...)
 *   file.c      open, close, read, write, commit
 *   lock.c      byte-range locks
 *   status.c    NFS4ERR_* -> errno
 */
#ifndef EFSFUSE_NC_INTERNAL_H
#define EFSFUSE_NC_INTERNAL_H

#include <sys/time.h> /* libnfs headers need it first */

#include <nfsc/libnfs.h>
#include <nfsc/libnfs-raw.h>
#include <nfsc/libnfs-raw-nfs4.h>

#include "nfsclient.h"

#include <stddef.h>

#define NC_COMPONENT "nfs"

/* --- time --- */
uint64_t nc_now_ms(void);

/* --- a growable byte buffer for XDR encoding by hand --- */
struct nc_buf {
    unsigned char *data;
    size_t len;
    size_t cap;
};
void nc_buf_put_u32(struct nc_buf *b, uint32_t v);
void nc_buf_put_u64(struct nc_buf *b, uint64_t v);
void nc_buf_put_opaque(struct nc_buf *b, const void *p, uint32_t len); /* length + padded bytes */
void nc_buf_free(struct nc_buf *b);

/* --- rpc.c: one TCP connection carrying NFSv4 COMPOUNDs --- */

struct nc_rpc;
struct nc_call;

/*
 * Called once per call: res is the decoded reply (NULL when err != 0: the
 * call failed before the server answered, e.g. -ETIMEDOUT or -EPROTO), valid
 * only during the callback.
 */
typedef void (*nc_rpc_done)(struct nc_client *c, void *ctx, int err, COMPOUND4res *res);

struct nc_rpc_config {
    uint32_t request_timeout_ms;
    uint64_t soft_deadline_ms; /* 0 = hard: wait forever; else fail calls older than this */
    uint32_t max_inflight;     /* calls written and not yet answered, at most */
};

int nc_rpc_new(struct nc_rpc **out, struct nc_client *owner, const struct nc_rpc_config *cfg);
void nc_rpc_free(struct nc_rpc *rpc);
/* Resolves host and connects (non-blocking connect; completion via the loop). */
int nc_rpc_start_connect(struct nc_rpc *rpc, const char *host, uint16_t port, char *errbuf,
                         size_t errlen);
bool nc_rpc_connected(const struct nc_rpc *rpc);
/* Off while the first connection is made (failures are final), on after. */
void nc_rpc_set_auto_reconnect(struct nc_rpc *rpc, bool on);
/* Sends a COMPOUND; args is encoded (copied) before return. Returns 0 or -errno
 * (then done is not called). With payload, args must end with an empty
 * opaque<> (a WRITE's data as the last operation's last field): the payload
 * fills it on the wire straight from the caller's memory, which must stay
 * valid and unchanged until done runs (retransmissions send it again).
 * retry_delay resends the request unchanged while the server answers
 * NFS4ERR_DELAY or NFS4ERR_GRACE; it must be false for requests carrying an
 * owner seqid, which advances even on those errors. */
int nc_rpc_call(struct nc_rpc *rpc, const struct nc_cred *cred, COMPOUND4args *args,
                const void *payload, uint32_t payload_len, bool retry_delay, nc_rpc_done done,
                void *ctx);
/* Sends a NULL procedure call (liveness / protocol probe). */
int nc_rpc_null(struct nc_rpc *rpc, nc_rpc_done done, void *ctx);
int nc_rpc_pollfd(struct nc_rpc *rpc, struct pollfd *pfd);
void nc_rpc_handle(struct nc_rpc *rpc, short revents);
int nc_rpc_timeout_ms(struct nc_rpc *rpc);
void nc_rpc_tick(struct nc_rpc *rpc);
unsigned nc_rpc_pending(const struct nc_rpc *rpc);
/* Fails every call with err and closes the socket (no reconnect). */
void nc_rpc_abort(struct nc_rpc *rpc, int err);
/* Only inside a done callback with a reply: whether the call had been written
 * on an earlier connection that broke before its answer. The server may then
 * have executed it already (its duplicate request cache need not outlive the
 * connection), so a non-idempotent call can fail only because it succeeded
 * the first time: REMOVE with NOENT, CREATE or LINK with EXIST. */
bool nc_rpc_answer_resent(const struct nc_rpc *rpc);
/* The reason the connection last failed, for error messages. */
const char *nc_rpc_last_error(const struct nc_rpc *rpc);

/* --- compound.c --- */

#define NC_MAX_OPS 16

/* A COMPOUND under construction; strings and handles point into caller memory. */
struct nc_compound {
    COMPOUND4args args;
    nfs_argop4 ops[NC_MAX_OPS];
    /* storage for attribute bitmaps and encoded fattr4 values */
    uint32_t bitmaps[NC_MAX_OPS][3];
    struct nc_buf attrbufs[4];
    uint32_t attrmasks[4][2];
    unsigned nattrbufs;
};
void nc_compound_init(struct nc_compound *cp, const char *tag);
void nc_compound_free(struct nc_compound *cp);
nfs_argop4 *nc_compound_add(struct nc_compound *cp, nfs_opnum4 op);
void nc_op_putfh(struct nc_compound *cp, const struct nc_fh *fh);
void nc_op_getfh(struct nc_compound *cp);
/* GETATTR of the attributes struct nc_attr needs. */
void nc_op_getattr(struct nc_compound *cp);
void nc_op_getattr_mask(struct nc_compound *cp, const uint32_t mask[2]);
void nc_op_lookup(struct nc_compound *cp, const char *name);
/* Fills a fattr4 with the set attributes (mode/owner/size/times) of set. */
void nc_fattr_encode(struct nc_compound *cp, fattr4 *out, const struct nc_setattr *set);

/* Reads the standard attributes out of a fattr4. Returns 0 or -EIO. */
int nc_fattr_decode(const fattr4 *fa, struct nc_attr *out);
/* Generic fattr4 reader for the less common attributes (statfs, lease, ...). */
struct nc_fattr_extra {
    uint32_t lease_time;
    uint64_t maxread;
    uint64_t maxwrite;
    struct nc_statfs statfs;
    uint32_t rdattr_error;
    bool has_fh;
    struct nc_fh fh;
};
int nc_fattr_decode_extra(const fattr4 *fa, struct nc_attr *attr, struct nc_fattr_extra *extra);

/* Result of op i, or NULL if the server did not execute it. */
nfs_resop4 *nc_res_op(COMPOUND4res *res, unsigned i, nfs_opnum4 expect);
/* The first failing status of a reply mapped to -errno, 0 if all succeeded. */
int nc_res_errno(const COMPOUND4res *res);
void nc_fh_from_nfs(struct nc_fh *out, const nfs_fh4 *in);
int nc_res_find_fh(COMPOUND4res *res, struct nc_fh *fh);
/* Decodes the first (from index start) GETATTR result into attr; returns its index or -1. */
int nc_res_find_attr(COMPOUND4res *res, unsigned start, struct nc_attr *attr);
/* A successful operation's change_info4, as replies carry it. */
void nc_dir_change_from(struct nc_dir_change *out, const change_info4 *ci);

/* The attribute masks in use. */
extern const uint32_t nc_attr_mask_std[2];

/* --- state.c --- */

struct nc_owner;

/* A stateful operation, run when its owner's seqid is free. */
struct nc_seqop {
    struct nc_seqop *next;
    void (*start)(struct nc_client *c, struct nc_seqop *op);
    /* while waiting out the server's grace period or DELAY (owner held) */
    struct nc_seqop *delay_next;
    struct nc_owner *delay_owner;
    uint64_t delay_at;
    uint32_t delay_ms; /* the next DELAY's wait; 0: none yet */
};

/* A call held back while state is being recovered; resume() sends it again
 * (with the open's new stateid) or fails it, once recovery is over. */
struct nc_parked {
    struct nc_parked *next;
    void (*resume)(struct nc_client *c, struct nc_parked *p);
};

struct nc_open {
    struct nc_open *next; /* in owner's list */
    struct nc_owner *owner;
    unsigned refs;
    /* The client id its stateid belongs to (see nc_client.epoch): an older
     * one means recovery has not re-established it yet. */
    unsigned epoch;
    struct nc_cred cred; /* of the first opener: CLOSE and lock bookkeeping use it */
    struct nc_fh fh;
    /* Where it was opened, to open it again by name when the server cannot
     * let us reclaim it. */
    struct nc_fh dir;
    char *name;
    stateid4 stateid;
    uint32_t share_access;
    struct nc_lockowner *lockowners;
    bool closing;
    /* Recovery could not re-establish it: every use fails with this. */
    int dead_err;
    /* Locks held through it were lost in a server restart: its I/O and new
     * locks fail with EIO until it is closed, as with the Linux client. */
    bool locks_lost;
};

/* A byte range a lock-owner holds: [start, end), end UINT64_MAX = to EOF. */
struct nc_lockrange {
    uint64_t start;
    uint64_t end;
    enum nc_lock_type type;
};

struct nc_lockowner {
    struct nc_lockowner *next;
    uint64_t id;   /* the caller's owner id */
    uint32_t name; /* number in the lock_owner4 string sent to the server */
    bool has_stateid;
    stateid4 stateid;
    uint32_t seqid;
    /* What the server granted, POSIX-merged: reclaimed after a restart. */
    struct nc_lockrange *ranges;
    unsigned nranges;
};

struct nc_owner {
    struct nc_owner *next;
    uint32_t id;
    uint32_t uid;
    uint32_t seqid;
    bool confirmed;
    bool busy;
    bool broken; /* seqid lost sync; no new work */
    struct nc_seqop *queue_head;
    struct nc_seqop *queue_tail;
    struct nc_open *opens;
    unsigned queued;
};

struct nc_state;
int nc_state_new(struct nc_state **out);
void nc_state_free(struct nc_state *st);
clientid4 nc_state_clientid(const struct nc_client *c);
/* Picks an open-owner for uid (prefers an idle one). */
struct nc_owner *nc_owner_pick(struct nc_client *c, uint32_t uid);
/* Queues op on owner; it starts now if the owner is idle. */
void nc_owner_submit(struct nc_client *c, struct nc_owner *owner, struct nc_seqop *op);
/* Ends the running op; status is the seqid op's own status (or -1 when the
 * server never executed it) and decides whether the seqid advances. */
void nc_owner_done(struct nc_client *c, struct nc_owner *owner, int nfs_status);
void nc_owner_fill(const struct nc_client *c, const struct nc_owner *owner, open_owner4 *out,
                   char *buf, size_t buflen);
/* While the server is in its grace period it refuses new opens and locks
 * (NFS4ERR_GRACE); a busy server answers NFS4ERR_DELAY. Both consume the
 * seqid (the caller advances it); op runs again after a pause (a second
 * for GRACE, a doubling backoff for DELAY), still holding its owner. */
void nc_owner_retry_delayed(struct nc_client *c, struct nc_owner *owner, struct nc_seqop *op,
                            int nfs_status);
/* NFS4ERR_DELAY backoff: the first wait, the longest, and the wait after ms. */
#define NC_DELAY_MIN_MS 50
#define NC_DELAY_MAX_MS 2000
static inline uint32_t nc_delay_next(uint32_t ms)
{
    return ms * 2 > NC_DELAY_MAX_MS ? NC_DELAY_MAX_MS : ms * 2;
}
/* Finds an open state of owner with the same stateid "other" (server merged opens). */
struct nc_open *nc_owner_find_open(struct nc_owner *owner, const stateid4 *sid);
void nc_owner_add_open(struct nc_owner *owner, struct nc_open *open);
void nc_owner_remove_open(struct nc_owner *owner, struct nc_open *open);
/* An open state of uid for fh whose access covers share_access, if any. */
struct nc_open *nc_state_find_open(struct nc_client *c, const struct nc_fh *fh, uint32_t uid,
                                   uint32_t share_access);
bool nc_owner_has_fh(const struct nc_owner *owner, const struct nc_fh *fh);
void nc_open_free(struct nc_open *open);
/* Lease: start renewing every lease/3. */
void nc_state_set_lease(struct nc_client *c, uint32_t lease_seconds);
int nc_state_timeout_ms(struct nc_client *c);
void nc_state_tick(struct nc_client *c);
/* All open-owners (for recovery). */
struct nc_owner *nc_state_owners(struct nc_client *c);
/* Lock-owner names are numbers from one sequence; a fresh one after a failure. */
uint32_t nc_lockowner_new_name(void);
void nc_fill_lock_owner(struct nc_client *c, const struct nc_lockowner *lo, lock_owner4 *out,
                        char *buf, size_t buflen);
/* A lock changed what lo holds on [start, start+len) (len 0: to EOF); type 0 = unlocked. */
void nc_lockowner_update(struct nc_lockowner *lo, uint64_t start, uint64_t len, int type);
/* Close every open state still held (best effort, synchronous via run_once). */
void nc_state_close_all(struct nc_client *c);
bool nc_seqid_advances(int nfs_status);

/* --- client.c --- */

struct nc_client {
    struct nc_client_config config;
    char *host;
    char *path;
    char *client_name;
    struct nc_rpc *rpc;
    struct nc_state *state;
    clientid4 clientid;
    verifier4 confirm_verifier;
    verifier4 boot_verifier;
    struct nc_fh root_fh;
    struct nc_attr root_attr;
    uint32_t max_read;
    uint32_t max_write;
    uint32_t lease_seconds;
    /* callbacks are deferred to the loop so they never run inside the call */
    struct nc_deferred *deferred_head;
    struct nc_deferred *deferred_tail;
    struct nc_lock_wait *lock_waits;
    bool shutting_down;
    /* Each client id the server confirmed is a new epoch; while recovering,
     * owner queues are held and stateid-bearing calls are parked. */
    unsigned epoch;
    bool recovering;
    struct nc_recovery *recovery;
    struct nc_parked *parked_head;
    struct nc_parked *parked_tail;
    /* O_EXCL creates (file.c): verifiers handed out, and whether the server
     * refused EXCLUSIVE4 (then GUARDED4 is used). */
    uint64_t createverf_count;
    bool exclusive4_unsupported;
    /* The server refused a READ with the anonymous stateid: stop asking
     * for NC_OPEN_PREFETCH reads in OPEN compounds, and for snapshots. */
    bool prefetch_unsupported;
};

/* The server no longer knows our client id or this state (it restarted, or
 * our lease expired): nc_client_recover() re-establishes both (recover.c). */
bool nc_status_lost_state(int nfs_status);
/* The same, for a call carrying a stateid (BAD_STATEID included: a server
 * that lost its state may not recognise ours at all). */
bool nc_status_lost_stateid(int nfs_status);
void nc_client_recover(struct nc_client *c);
int nc_recover_new(struct nc_recovery **out);
void nc_recover_free(struct nc_recovery *rec);
void nc_recover_tick(struct nc_client *c);
int nc_recover_timeout_ms(struct nc_client *c);
/* No usable stateid right now (dead, or not yet recovered). */
static inline bool nc_open_dead(const struct nc_client *c, const struct nc_open *open)
{
    return open->dead_err || open->epoch != c->epoch;
}
/* A new client id: owners start a new sequence under new names. */
void nc_state_reset_owners(struct nc_client *c);
void nc_state_resume_owners(struct nc_client *c);
/* Puts a seqid operation that the server refused for a lost client id back
 * at the front of its owner's queue, to run again after recovery. */
void nc_owner_retry_after_recovery(struct nc_client *c, struct nc_owner *owner,
                                   struct nc_seqop *op);
/* Holds p until recovery is over (then p->resume runs from the loop). */
void nc_park(struct nc_client *c, struct nc_parked *p);
void nc_unpark_all(struct nc_client *c);
/* SETCLIENTID arguments with our name and boot verifier. */
void nc_fill_setclientid(struct nc_client *c, struct nc_compound *cp, char *netid, char *raddr);

/* A completion run later from the loop, so that callbacks never run inside
 * the call that started the operation. Exactly one of cb / done is set. */
struct nc_deferred {
    struct nc_deferred *next;
    nc_callback cb;
    nc_rpc_done done;
    void *arg;
    int err;
};
void nc_defer_error(struct nc_client *c, nc_callback cb, void *arg, int err);
void nc_defer_done(struct nc_client *c, nc_rpc_done done, void *ctx, int err);
void nc_run_deferred(struct nc_client *c);

/* Where a reply goes: the caller's callback (meta.c, snapshot.c). */
struct nc_reply_ctx {
    nc_callback cb;
    void *arg;
};
/* NULL (the callback then gets -ENOMEM from the loop) when out of memory. */
struct nc_reply_ctx *nc_reply_ctx_new(struct nc_client *c, nc_callback cb, void *arg);
/* Whether a READ with the anonymous stateid was refused as such (not for
 * another reason); then logged once and not asked again (snapshot.c). */
bool nc_anonymous_read_refused(struct nc_client *c, nfsstat4 st);

/* Reply helper: a zeroed reply with err. */
static inline struct nc_reply nc_reply_err(int err)
{
    struct nc_reply r = {0};
    r.err = err;
    return r;
}

/* Sends a compound and arranges for done(c, ctx, err, res). On a synchronous
 * failure, done is called from the loop with the error. */
void nc_send(struct nc_client *c, const struct nc_cred *cred, struct nc_compound *cp,
             nc_rpc_done done, void *ctx);
/* nc_send for a WRITE whose data goes out from the caller's memory (see
 * nc_rpc_call): the compound's last operation is the WRITE, with no data. */
void nc_send_payload(struct nc_client *c, const struct nc_cred *cred, struct nc_compound *cp,
                     const void *payload, uint32_t payload_len, nc_rpc_done done, void *ctx);
/* The same for compounds that carry an open- or lock-owner seqid. */
void nc_send_seqid(struct nc_client *c, const struct nc_cred *cred, struct nc_compound *cp,
                   nc_rpc_done done, void *ctx);

/* --- lock.c --- */
void nc_lock_waits_tick(struct nc_client *c);
int nc_lock_waits_timeout_ms(struct nc_client *c);
void nc_lock_waits_free(struct nc_client *c);

#endif
