/*
 * The TCP connection to the NFS server: ONC RPC record marking, XID
 * matching, a send queue with many calls in flight, and reconnection with
 * retransmission of every call that has not been answered.
 *
 * We own the socket (instead of using libnfs's rpc_context) because libnfs
 * 4.0.0 encodes every NFSv4 call into a fixed 4 KiB buffer and drops the
 * connection on replies over 1 MiB; libnfs is used only for the XDR of the
 * COMPOUND arguments and results.
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define NFS_PROGRAM_NUMBER 100003
#define NFS_VERSION_4 4
#define PROC_NULL 0
#define PROC_COMPOUND 1
#define RPC_CALL 0
#define RPC_REPLY 1
#define AUTH_SYS_FLAVOR 1

#define XID_BUCKETS 1024 /* power of two */
/* Larger than any READ we ask for (we cap I/O at 1 MiB) plus headers, with room
 * for servers that answer READDIR generously. Beyond it the stream is corrupt. */
#define MAX_RECORD (64u << 20)
#define RECV_CHUNK (256u << 10)
#define RECONNECT_MIN_MS 100
/* Both bound how long a healed network waits for us: a connect attempt in
 * progress when the path heals succeeds with the kernel's next SYN (1 s, 3 s,
 * 7 s after the first) or is abandoned within CONNECT_ATTEMPT_MAX_MS, and the
 * next one starts at most RECONNECT_MAX_MS later: about 4 s in all. SYNs are
 * cheap, so nothing is saved by waiting longer. */
#define RECONNECT_MAX_MS 2000
#define CONNECT_ATTEMPT_MAX_MS 2000
#define SEND_IOV_MAX 64
/* A request resent after a reconnect that the server answers STALE is sent
 * again this many times (with the DELAY backoff, about 1.5 s in all) before
 * the error is believed: a server that has just restarted has been seen to
 * refuse a directory handle it took again a moment later (test_load: an
 * unlink that had been done came back to the application as ENOENT after
 * the kernel retried the ESTALE). */
#define STALE_RESENDS_MAX 5

enum conn_state { CONN_DOWN, CONN_CONNECTING, CONN_UP };

struct nc_call {
    struct nc_call *next; /* all calls in submission order */
    struct nc_call *prev;
    struct nc_call *hash_next;
    uint32_t xid;
    bool is_null;
    unsigned char *msg; /* record marker + RPC header + arguments, kept for retransmission */
    size_t len;
    /* A WRITE's data, sent from the caller's memory after msg (plus XDR
     * padding) instead of being copied into it. */
    const unsigned char *payload;
    size_t payload_len;
    uint64_t sent_at;   /* 0 until fully written on the current connection */
    bool on_wire;       /* counted in rpc->in_flight */
    uint64_t queued_at; /* soft mounts give up on it at queued_at + soft deadline */
    bool retry_delay;   /* resend as is on NFS4ERR_DELAY / NFS4ERR_GRACE */
    unsigned delay_ms;  /* backoff for the next such resend */
    uint64_t resend_at; /* while parked on the delayed list */
    unsigned stale_resends;
    /* Written (at least partly) on a connection that broke before the
     * answer: the server may have executed it already. */
    bool resent;
    nc_rpc_done done;
    void *ctx;
};

struct nc_rpc {
    struct nc_client *client;
    uint32_t timeout_ms;
    uint64_t soft_deadline_ms;
    uint32_t max_inflight;
    uint32_t in_flight; /* calls (partly) written on this connection and not answered */
    int fd;
    enum conn_state state;
    unsigned generation; /* bumped whenever the socket is replaced */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char peer[128];
    char machine_name[64];

    struct nc_call *head;
    struct nc_call *tail;
    struct nc_call *send_next; /* first call not yet completely written */
    size_t send_off;
    struct nc_call *buckets[XID_BUCKETS];
    unsigned ncalls;
    struct nc_call *delayed; /* answered DELAY/GRACE, waiting to be resent */
    uint32_t next_xid;

    unsigned char *rbuf;
    size_t rcap;
    size_t rstart; /* first unparsed byte */
    size_t rend;   /* end of received bytes */

    bool auto_reconnect;
    bool reported_down;
    uint64_t connect_started;
    uint64_t last_rx;       /* when the server last sent us anything */
    uint64_t probe_sent_at; /* an unanswered NULL liveness probe, or 0 */
    uint64_t reconnect_at;
    unsigned backoff_ms;
    bool answering_resent; /* during a done callback: that call's .resent */
    char last_error[320];
};

/* --- byte helpers --- */

static inline uint32_t get_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* --- call table --- */

static void call_link(struct nc_rpc *rpc, struct nc_call *call)
{
    call->prev = rpc->tail;
    call->next = NULL;
    if (rpc->tail)
        rpc->tail->next = call;
    else
        rpc->head = call;
    rpc->tail = call;
    unsigned b = call->xid & (XID_BUCKETS - 1);
    call->hash_next = rpc->buckets[b];
    rpc->buckets[b] = call;
    rpc->ncalls++;
    if (!rpc->send_next) {
        rpc->send_next = call;
        rpc->send_off = 0;
    }
}

static void call_unlink(struct nc_rpc *rpc, struct nc_call *call)
{
    if (rpc->send_next == call) {
        /* Only reachable when failing calls; the stream is being torn down. */
        rpc->send_next = call->next;
        rpc->send_off = 0;
    }
    if (call->prev)
        call->prev->next = call->next;
    else
        rpc->head = call->next;
    if (call->next)
        call->next->prev = call->prev;
    else
        rpc->tail = call->prev;
    struct nc_call **pp = &rpc->buckets[call->xid & (XID_BUCKETS - 1)];
    while (*pp != call)
        pp = &(*pp)->hash_next;
    *pp = call->hash_next;
    rpc->ncalls--;
    if (call->on_wire) {
        call->on_wire = false;
        rpc->in_flight--;
    }
}

static struct nc_call *call_find(struct nc_rpc *rpc, uint32_t xid)
{
    for (struct nc_call *c = rpc->buckets[xid & (XID_BUCKETS - 1)]; c; c = c->hash_next)
        if (c->xid == xid)
            return c;
    return NULL;
}

static void call_free(struct nc_call *call)
{
    if (!call)
        return;
    free(call->msg);
    free(call);
}

/* --- lifetime --- */

int nc_rpc_new(struct nc_rpc **out, struct nc_client *client, const struct nc_rpc_config *cfg)
{
    struct nc_rpc *rpc = calloc(1, sizeof(*rpc));
    if (!rpc)
        return -ENOMEM;
    rpc->client = client;
    rpc->timeout_ms = cfg->request_timeout_ms;
    rpc->soft_deadline_ms = cfg->soft_deadline_ms;
    rpc->max_inflight = cfg->max_inflight ? cfg->max_inflight : UINT32_MAX;
    rpc->fd = -1;
    rpc->state = CONN_DOWN;
    rpc->backoff_ms = RECONNECT_MIN_MS;
    if (gethostname(rpc->machine_name, sizeof(rpc->machine_name) - 1) != 0)
        strcpy(rpc->machine_name, "efsfuse");
    /* A random start keeps XIDs of a restarted client from matching the
     * server's duplicate request cache entries of the previous one. */
    uint32_t seed = (uint32_t)nc_now_ms() ^ ((uint32_t)getpid() << 16);
    rpc->next_xid = seed * 2654435761u;
    *out = rpc;
    return 0;
}

/*
 * discard: the connection failed. Closing with an RST (linger 0) drops what
 * the kernel has not yet delivered; otherwise it would keep retransmitting
 * those requests after we close, and once a partition heals the server
 * could run a stale copy after we resent it and moved on (a REMOVE of a name
 * made again since).
 */
static void close_socket(struct nc_rpc *rpc, bool discard)
{
    rpc->probe_sent_at = 0;
    if (rpc->fd >= 0 && discard) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(rpc->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    if (rpc->fd >= 0)
        close(rpc->fd);
    rpc->fd = -1;
    rpc->state = CONN_DOWN;
    rpc->generation++;
    rpc->rstart = rpc->rend = 0;
    /* Everything unanswered is written again on the next connection. */
    rpc->send_next = rpc->head;
    rpc->send_off = 0;
    for (struct nc_call *c = rpc->head; c; c = c->next) {
        if (c->on_wire)
            c->resent = true;
        c->sent_at = 0;
        c->on_wire = false;
    }
    rpc->in_flight = 0;
}

void nc_rpc_abort(struct nc_rpc *rpc, int err)
{
    close_socket(rpc, false);
    rpc->auto_reconnect = false;
    while (rpc->delayed) {
        struct nc_call *call = rpc->delayed;
        rpc->delayed = call->next;
        call->done(rpc->client, call->ctx, err, NULL);
        call_free(call);
    }
    /* Detach first: callbacks may queue new calls. */
    while (rpc->head) {
        struct nc_call *call = rpc->head;
        call_unlink(rpc, call);
        call->done(rpc->client, call->ctx, err, NULL);
        call_free(call);
    }
}

void nc_rpc_free(struct nc_rpc *rpc)
{
    if (!rpc)
        return;
    nc_rpc_abort(rpc, -ECANCELED);
    free(rpc->rbuf);
    free(rpc);
}

const char *nc_rpc_last_error(const struct nc_rpc *rpc)
{
    return rpc->last_error[0] ? rpc->last_error : "no error";
}

void nc_rpc_set_auto_reconnect(struct nc_rpc *rpc, bool on)
{
    rpc->auto_reconnect = on;
}

bool nc_rpc_answer_resent(const struct nc_rpc *rpc)
{
    return rpc->answering_resent;
}

bool nc_rpc_connected(const struct nc_rpc *rpc)
{
    return rpc->state == CONN_UP;
}

unsigned nc_rpc_pending(const struct nc_rpc *rpc)
{
    unsigned n = rpc->ncalls;
    for (const struct nc_call *c = rpc->delayed; c; c = c->next)
        n++;
    return n;
}

/* --- connecting --- */

static int open_socket(struct nc_rpc *rpc)
{
    int fd = socket(rpc->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&rpc->addr, rpc->addrlen) != 0 && errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    rpc->fd = fd;
    rpc->state = CONN_CONNECTING;
    rpc->connect_started = nc_now_ms();
    rpc->generation++;
    rpc->rstart = rpc->rend = 0;
    return 0;
}

int nc_rpc_start_connect(struct nc_rpc *rpc, const char *host, uint16_t port, char *errbuf,
                         size_t errlen)
{
    struct addrinfo hints = {0};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%u", port);
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(host, portstr, &hints, &ai);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot resolve server '%s': %s", host, gai_strerror(rc));
        return -EHOSTUNREACH;
    }
    memcpy(&rpc->addr, ai->ai_addr, ai->ai_addrlen);
    rpc->addrlen = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (strchr(host, ':'))
        snprintf(rpc->peer, sizeof(rpc->peer), "[%s]:%u", host, port);
    else
        snprintf(rpc->peer, sizeof(rpc->peer), "%s:%u", host, port);
    int err = open_socket(rpc);
    if (err) {
        snprintf(errbuf, errlen, "server %s: %s", rpc->peer, strerror(-err));
        return err;
    }
    return 0;
}

/* The connection failed: reconnect later (retransmitting), or, while the
 * first connection is being made, fail every call. */
static void connection_failed(struct nc_rpc *rpc, int err, const char *why)
{
    snprintf(rpc->last_error, sizeof(rpc->last_error), "server %s: %s", rpc->peer, why);
    if (!rpc->auto_reconnect) {
        nc_rpc_abort(rpc, err);
        return;
    }
    if (!rpc->reported_down) {
        elog_warn(NC_COMPONENT, "%s; reconnecting (%u requests waiting)", rpc->last_error,
                  rpc->ncalls);
        rpc->reported_down = true;
    }
    close_socket(rpc, true);
    rpc->reconnect_at = nc_now_ms() + rpc->backoff_ms;
    rpc->backoff_ms =
        rpc->backoff_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : rpc->backoff_ms * 2;
}

static void connection_up(struct nc_rpc *rpc)
{
    rpc->state = CONN_UP;
    rpc->last_rx = nc_now_ms();
    rpc->probe_sent_at = 0;
    rpc->backoff_ms = RECONNECT_MIN_MS;
    rpc->connect_started = 0;
    if (rpc->reported_down) {
        elog_info(NC_COMPONENT, "reconnected to %s; resending %u requests", rpc->peer, rpc->ncalls);
        rpc->reported_down = false;
    }
}

/* --- sending --- */

static void encode_cred(unsigned char **pp, const struct nc_cred *cred, const char *machine)
{
    unsigned char *p = *pp;
    uint32_t namelen = (uint32_t)strlen(machine);
    uint32_t padded = (namelen + 3) & ~3u;
    uint32_t ngroups = cred->ngroups > NC_MAX_GROUPS ? NC_MAX_GROUPS : cred->ngroups;
    uint32_t bodylen = 4 + 4 + padded + 4 + 4 + 4 + 4 * ngroups;
    put_be32(p, AUTH_SYS_FLAVOR);
    put_be32(p + 4, bodylen);
    p += 8;
    put_be32(p, 0); /* stamp */
    put_be32(p + 4, namelen);
    p += 8;
    memset(p, 0, padded);
    memcpy(p, machine, namelen);
    p += padded;
    put_be32(p, cred->uid);
    put_be32(p + 4, cred->gid);
    put_be32(p + 8, ngroups);
    p += 12;
    for (uint32_t i = 0; i < ngroups; i++, p += 4)
        put_be32(p, cred->groups[i]);
    /* verifier: AUTH_NONE */
    put_be32(p, 0);
    put_be32(p + 4, 0);
    *pp = p + 8;
}

static size_t xdr_pad(size_t n)
{
    return (4 - (n & 3)) & 3;
}

/* Bytes the call occupies on the wire. */
static size_t call_wire_len(const struct nc_call *c)
{
    return c->len + c->payload_len + xdr_pad(c->payload_len);
}

/* Fills iov with the call's bytes from offset off; returns how many entries. */
static int call_iov(const struct nc_call *c, size_t off, struct iovec *iov, int max)
{
    static const unsigned char zeros[4];
    const struct {
        const void *base;
        size_t len;
    } seg[3] = {{c->msg, c->len}, {c->payload, c->payload_len}, {zeros, xdr_pad(c->payload_len)}};
    int n = 0;
    for (int i = 0; i < 3 && n < max; i++) {
        if (off >= seg[i].len) {
            off -= seg[i].len;
            continue;
        }
        iov[n].iov_base = (void *)((const unsigned char *)seg[i].base + off);
        iov[n].iov_len = seg[i].len - off;
        off = 0;
        n++;
    }
    return n;
}

static void try_send(struct nc_rpc *rpc)
{
    if (rpc->state != CONN_UP)
        return;
    while (rpc->send_next) {
        struct iovec iov[SEND_IOV_MAX];
        int n = 0;
        size_t off = rpc->send_off;
        uint32_t room = rpc->max_inflight - rpc->in_flight;
        for (struct nc_call *c = rpc->send_next; c && n < SEND_IOV_MAX; c = c->next) {
            /* A call already started must be finished; new ones wait for room. */
            if (!c->on_wire) {
                if (room == 0)
                    break;
                room--;
            }
            n += call_iov(c, off, iov + n, SEND_IOV_MAX - n);
            off = 0;
        }
        if (n == 0)
            return; /* at the limit: replies will make room */
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(rpc->fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            connection_failed(rpc, -errno, strerror(errno));
            return;
        }
        uint64_t now = nc_now_ms();
        size_t left = (size_t)sent;
        while (left > 0 && rpc->send_next) {
            struct nc_call *c = rpc->send_next;
            if (!c->on_wire) {
                c->on_wire = true;
                rpc->in_flight++;
            }
            size_t rest = call_wire_len(c) - rpc->send_off;
            if (left < rest) {
                rpc->send_off += left;
                left = 0;
                break;
            }
            left -= rest;
            c->sent_at = now;
            rpc->send_next = c->next;
            rpc->send_off = 0;
        }
    }
}

static int queue_call(struct nc_rpc *rpc, struct nc_call *call)
{
    if (!call->queued_at)
        call->queued_at = nc_now_ms();
    call->xid = rpc->next_xid++;
    put_be32(call->msg + 4, call->xid);
    /* Sent when the loop is about to wait (nc_rpc_pollfd): the calls that
     * one turn of the loop makes go out in one sendmsg. */
    call_link(rpc, call);
    return 0;
}

/* RPC call header through the verifier; returns a pointer past it. */
static unsigned char *encode_call_header(struct nc_rpc *rpc, unsigned char *p, uint32_t proc,
                                         const struct nc_cred *cred)
{
    put_be32(p, 0); /* xid, filled in when queued */
    put_be32(p + 4, RPC_CALL);
    put_be32(p + 8, 2); /* RPC version */
    put_be32(p + 12, NFS_PROGRAM_NUMBER);
    put_be32(p + 16, NFS_VERSION_4);
    put_be32(p + 20, proc);
    p += 24;
    encode_cred(&p, cred, rpc->machine_name);
    return p;
}

int nc_rpc_call(struct nc_rpc *rpc, const struct nc_cred *cred, COMPOUND4args *args,
                const void *payload, uint32_t payload_len, bool retry_delay, nc_rpc_done done,
                void *ctx)
{
    struct nc_call *call = calloc(1, sizeof(*call));
    if (!call)
        return -ENOMEM;
    call->done = done;
    call->ctx = ctx;
    call->retry_delay = retry_delay;
    call->delay_ms = NC_DELAY_MIN_MS;
    size_t header_max = 4 + 24 + 8 + 8 + 256 + 12 + 4 * NC_MAX_GROUPS + 8;
    size_t cap = header_max + 4096;
    for (;;) {
        call->msg = malloc(cap);
        if (!call->msg) {
            free(call);
            return -ENOMEM;
        }
        unsigned char *body = encode_call_header(rpc, call->msg + 4, PROC_COMPOUND, cred);
        size_t hdr = (size_t)(body - call->msg);
        ZDR zdr;
        zdrmem_create(&zdr, (caddr_t)body, (uint32_t)(cap - hdr), ZDR_ENCODE);
        bool ok = zdr_COMPOUND4args(&zdr, args);
        size_t used = zdr_getpos(&zdr);
        zdr_destroy(&zdr);
        if (ok) {
            call->len = hdr + used;
            break;
        }
        free(call->msg);
        call->msg = NULL;
        if (cap > MAX_RECORD) {
            free(call);
            return -EMSGSIZE;
        }
        cap *= 2;
    }
    if (payload) {
        /* The arguments end with the empty opaque<> the payload fills: its
         * length word is the last one encoded. */
        if (call->len < 4 || get_be32(call->msg + call->len - 4) != 0) {
            free(call->msg);
            free(call);
            return -EINVAL;
        }
        put_be32(call->msg + call->len - 4, payload_len);
        call->payload = payload;
        call->payload_len = payload_len;
    }
    put_be32(call->msg, 0x80000000u | (uint32_t)(call_wire_len(call) - 4));
    return queue_call(rpc, call);
}

int nc_rpc_null(struct nc_rpc *rpc, nc_rpc_done done, void *ctx)
{
    struct nc_call *call = calloc(1, sizeof(*call));
    if (!call)
        return -ENOMEM;
    call->done = done;
    call->ctx = ctx;
    call->is_null = true;
    call->msg = malloc(4 + 24 + 16);
    if (!call->msg) {
        free(call);
        return -ENOMEM;
    }
    unsigned char *p = call->msg + 4;
    put_be32(p, 0);
    put_be32(p + 4, RPC_CALL);
    put_be32(p + 8, 2);
    put_be32(p + 12, NFS_PROGRAM_NUMBER);
    put_be32(p + 16, NFS_VERSION_4);
    put_be32(p + 20, PROC_NULL);
    memset(p + 24, 0, 16); /* AUTH_NONE credential and verifier */
    call->len = 4 + 24 + 16;
    put_be32(call->msg, 0x80000000u | (uint32_t)(call->len - 4));
    return queue_call(rpc, call);
}

/* --- receiving --- */

/* Maps an RPC-level rejection to an errno and a message. */
static int reply_header(struct nc_rpc *rpc, const unsigned char *p, size_t len, size_t *body_off)
{
    if (len < 12 || get_be32(p + 4) != RPC_REPLY)
        return -EPROTO;
    uint32_t reply_stat = get_be32(p + 8);
    if (reply_stat == 1) { /* MSG_DENIED */
        uint32_t reject = len >= 16 ? get_be32(p + 12) : 0;
        if (reject == 0) {
            snprintf(rpc->last_error, sizeof(rpc->last_error), "server %s rejected the RPC version",
                     rpc->peer);
            return -EPROTONOSUPPORT;
        }
        snprintf(rpc->last_error, sizeof(rpc->last_error),
                 "server %s rejected our AUTH_SYS credentials (auth_stat %u)", rpc->peer,
                 len >= 20 ? get_be32(p + 16) : 0);
        return -EACCES;
    }
    if (reply_stat != 0 || len < 24)
        return -EPROTO;
    uint32_t verf_len = get_be32(p + 16);
    size_t off = 20 + (((size_t)verf_len + 3) & ~(size_t)3);
    if (off + 4 > len)
        return -EPROTO;
    uint32_t accept = get_be32(p + off);
    off += 4;
    switch (accept) {
    case 0:
        *body_off = off;
        return 0;
    case 1:
        snprintf(rpc->last_error, sizeof(rpc->last_error), "server %s does not serve NFS",
                 rpc->peer);
        return -EPROTONOSUPPORT;
    case 2:
        snprintf(rpc->last_error, sizeof(rpc->last_error),
                 "server %s does not support NFS version 4 (supports %u to %u)", rpc->peer,
                 off + 8 <= len ? get_be32(p + off) : 0,
                 off + 8 <= len ? get_be32(p + off + 4) : 0);
        return -EPROTONOSUPPORT;
    case 3:
        return -ENOSYS;
    case 4:
        return -EINVAL; /* GARBAGE_ARGS: our encoding was refused */
    default:
        return -EIO;
    }
}

static void process_record(struct nc_rpc *rpc, unsigned char *rec, size_t len)
{
    if (len < 4) {
        connection_failed(rpc, -EPROTO, "malformed RPC reply");
        return;
    }
    uint32_t xid = get_be32(rec);
    struct nc_call *call = call_find(rpc, xid);
    if (!call) {
        elog_debug(NC_COMPONENT, "dropping reply with unknown xid %#x", xid);
        return;
    }
    size_t body = 0;
    int err = reply_header(rpc, rec, len, &body);
    if (err == -EPROTO) {
        connection_failed(rpc, -EPROTO, "sent a reply that is not ONC RPC (not an NFS server?)");
        return;
    }
    call_unlink(rpc, call);
    if (!err && call->retry_delay && len >= body + 4) {
        uint32_t status = get_be32(rec + body);
        bool stale =
            status == NFS4ERR_STALE || status == NFS4ERR_BADHANDLE || status == NFS4ERR_FHEXPIRED;
        bool retry = status == NFS4ERR_DELAY || status == NFS4ERR_GRACE;
        if (stale && call->resent && call->stale_resends < STALE_RESENDS_MAX) {
            /* A failing PUTFH has done nothing, so the same request is safe
             * to send again; it stays marked resent, as its first copy may
             * still have been executed before the reconnect. */
            call->stale_resends++;
            retry = true;
            elog_info(NC_COMPONENT,
                      "server answered %s to a request resent after a reconnect; "
                      "sending it again in %u ms",
                      nc_status_name(status), call->delay_ms);
        } else if (retry) {
            /* The server is busy or recovering: the same request, later. */
            elog_debug(NC_COMPONENT, "server answered %s; resending in %u ms",
                       status == NFS4ERR_DELAY ? "DELAY" : "GRACE", call->delay_ms);
        }
        if (retry) {
            call->resend_at = nc_now_ms() + call->delay_ms;
            call->delay_ms = nc_delay_next(call->delay_ms);
            call->next = rpc->delayed;
            rpc->delayed = call;
            return;
        }
    }
    if (err || call->is_null) {
        call->done(rpc->client, call->ctx, err, NULL);
        call_free(call);
        return;
    }
    COMPOUND4res res;
    memset(&res, 0, sizeof(res));
    ZDR zdr;
    zdrmem_create(&zdr, (caddr_t)(rec + body), (uint32_t)(len - body), ZDR_DECODE);
    if (!zdr_COMPOUND4res(&zdr, &res)) {
        elog_warn(NC_COMPONENT, "server %s sent a COMPOUND reply we cannot decode", rpc->peer);
        call->done(rpc->client, call->ctx, -EPROTO, NULL);
    } else {
        if (res.status != NFS4_OK && elog_enabled(ELOG_DEBUG)) {
            const char *name = nc_status_name(res.status);
            elog_debug(NC_COMPONENT, "%.*s: %s (op %u of %u)", (int)res.tag.utf8string_len,
                       res.tag.utf8string_val ? res.tag.utf8string_val : "", name ? name : "?",
                       res.resarray.resarray_len, res.resarray.resarray_len);
        }
        if (call->resent) {
            /* Failures of resent requests are rare and are what a later
             * wrong answer to the application would be traced back to;
             * those that only start state recovery are routine. */
            bool routine = res.status == NFS4_OK || nc_status_lost_stateid((int)res.status);
            enum elog_level level = routine ? ELOG_DEBUG : ELOG_INFO;
            const char *name = res.status == NFS4_OK ? "OK" : nc_status_name(res.status);
            elog(level, NC_COMPONENT, "%.*s resent after a reconnect: %s",
                 (int)res.tag.utf8string_len, res.tag.utf8string_val ? res.tag.utf8string_val : "",
                 name ? name : "unknown status");
        }
        rpc->answering_resent = call->resent;
        call->done(rpc->client, call->ctx, 0, &res);
        rpc->answering_resent = false;
    }
    zdr_destroy(&zdr);
    call_free(call);
}

static bool ensure_rbuf(struct nc_rpc *rpc, size_t need)
{
    if (need <= rpc->rcap)
        return true;
    size_t cap = rpc->rcap ? rpc->rcap : RECV_CHUNK;
    while (cap < need)
        cap *= 2;
    unsigned char *nb = realloc(rpc->rbuf, cap);
    if (!nb)
        return false;
    rpc->rbuf = nb;
    rpc->rcap = cap;
    return true;
}

/*
 * Parses every complete record in the buffer. A record may be split into
 * several fragments; their markers are squeezed out in place. Returns the
 * number of bytes the next (incomplete) record still needs, or 0.
 */
static size_t parse_records(struct nc_rpc *rpc)
{
    unsigned gen = rpc->generation;
    while (rpc->generation == gen) {
        size_t start = rpc->rstart;
        size_t off = start;
        size_t total = 0;
        bool complete = false;
        for (;;) {
            if (rpc->rend - off < 4)
                return off + 4 - rpc->rstart;
            uint32_t marker = get_be32(rpc->rbuf + off);
            size_t flen = marker & 0x7fffffffu;
            if (total + flen > MAX_RECORD) {
                connection_failed(rpc, -EPROTO,
                                  "sent an oversized or malformed record (not an NFS server?)");
                return 0;
            }
            if (rpc->rend - off - 4 < flen)
                return off + 4 + flen - rpc->rstart;
            if (off != start)
                /* Join this fragment to the previous ones. */
                memmove(rpc->rbuf + start + 4 + total, rpc->rbuf + off + 4, flen);
            total += flen;
            off += 4 + flen;
            if (marker & 0x80000000u) {
                complete = true;
                break;
            }
        }
        if (complete) {
            rpc->rstart = off;
            process_record(rpc, rpc->rbuf + start + 4, total);
        }
    }
    return 0;
}

static void do_receive(struct nc_rpc *rpc)
{
    unsigned gen = rpc->generation;
    /* A recv that returned less than it asked for emptied the socket: the
     * next one would only say EAGAIN, a system call per reply for nothing
     * (poll tells us when more comes). */
    bool drained = false;
    for (int rounds = 0; rounds < 64 && rpc->generation == gen; rounds++) {
        size_t need = parse_records(rpc);
        if (rpc->generation != gen || drained)
            return;
        if (rpc->rstart == rpc->rend)
            rpc->rstart = rpc->rend = 0;
        size_t have = rpc->rend - rpc->rstart;
        size_t room = need > RECV_CHUNK ? need : RECV_CHUNK;
        if (rpc->rstart > 0 && rpc->rstart + room > rpc->rcap) {
            /* Cheap: a large record is read exactly (below), so what is left
             * over here is a few small replies or a record's beginning. */
            memmove(rpc->rbuf, rpc->rbuf + rpc->rstart, have);
            rpc->rend = have;
            rpc->rstart = 0;
        }
        if (!ensure_rbuf(rpc, rpc->rstart + room)) {
            connection_failed(rpc, -ENOMEM, "out of memory for a reply");
            return;
        }
        size_t len = rpc->rcap - rpc->rend;
        /* Read a large record (READ data) exactly to its end so that its
         * successor starts at the front of the buffer instead of being
         * copied there. */
        if (need > RECV_CHUNK && need > have && need - have < len)
            len = need - have;
        ssize_t n = recv(rpc->fd, rpc->rbuf + rpc->rend, len, MSG_DONTWAIT);
        if (n > 0) {
            drained = (size_t)n < len;
            rpc->rend += (size_t)n;
            rpc->last_rx = nc_now_ms();
            continue;
        }
        if (n == 0) {
            connection_failed(rpc, -ECONNRESET, "connection closed by the server");
            return;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        connection_failed(rpc, -errno, strerror(errno));
        return;
    }
}

/* --- loop integration --- */

int nc_rpc_pollfd(struct nc_rpc *rpc, struct pollfd *pfd)
{
    if (rpc->fd < 0)
        return 0;
    if (rpc->state == CONN_UP && rpc->send_next)
        try_send(rpc);
    pfd->fd = rpc->fd;
    pfd->events = POLLIN;
    bool can_send =
        rpc->send_next && (rpc->send_next->on_wire || rpc->in_flight < rpc->max_inflight);
    if (rpc->state == CONN_CONNECTING || (rpc->state == CONN_UP && can_send))
        pfd->events |= POLLOUT;
    pfd->revents = 0;
    return 1;
}

void nc_rpc_handle(struct nc_rpc *rpc, short revents)
{
    if (rpc->fd < 0 || !revents)
        return;
    if (rpc->state == CONN_CONNECTING) {
        if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
            return;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(rpc->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            connection_failed(rpc, -soerr, strerror(soerr));
            return;
        }
        connection_up(rpc);
        try_send(rpc);
        return;
    }
    if (revents & (POLLIN | POLLERR | POLLHUP))
        do_receive(rpc);
    /* Replies make room under max_inflight; writable sockets take more. */
    if (rpc->state == CONN_UP && rpc->send_next)
        try_send(rpc);
}

static int rpc_io_timeout_ms(struct nc_rpc *rpc, uint64_t now);

static uint32_t connect_attempt_ms(const struct nc_rpc *rpc)
{
    return rpc->timeout_ms < CONNECT_ATTEMPT_MAX_MS ? rpc->timeout_ms : CONNECT_ATTEMPT_MAX_MS;
}

/*
 * A black-holed server (connection up, nothing coming back) must be noticed
 * in seconds, not after TCP's own minutes or a long timeo: after
 * PROBE_AFTER_MS of complete silence with a request outstanding a NULL goes
 * out, and if that is not answered within PROBE_WAIT_MS the connection is
 * replaced (5 s in all; less with a smaller timeo). A server that is merely
 * slow at one request (a COMMIT of a large file) still answers the NULL at
 * once, so it keeps its connection.
 */
#define PROBE_AFTER_MS 2000
#define PROBE_WAIT_MS 3000

static uint64_t probe_after_ms(const struct nc_rpc *rpc)
{
    return rpc->timeout_ms < PROBE_AFTER_MS ? rpc->timeout_ms : PROBE_AFTER_MS;
}

static uint64_t probe_wait_ms(const struct nc_rpc *rpc)
{
    return rpc->timeout_ms < PROBE_WAIT_MS ? rpc->timeout_ms : PROBE_WAIT_MS;
}

/* When the connection must be checked again (0: nothing outstanding). */
static uint64_t liveness_due(const struct nc_rpc *rpc)
{
    if (rpc->state != CONN_UP)
        return 0;
    if (rpc->probe_sent_at)
        return rpc->probe_sent_at + probe_wait_ms(rpc);
    for (const struct nc_call *c = rpc->head; c; c = c->next) {
        if (!c->sent_at)
            continue;
        uint64_t since = c->sent_at > rpc->last_rx ? c->sent_at : rpc->last_rx;
        return since + probe_after_ms(rpc);
    }
    return 0;
}

static void probe_done(struct nc_client *c, void *ctx, int err, COMPOUND4res *res)
{
    struct nc_rpc *rpc = ctx;
    if (!err)
        rpc->probe_sent_at = 0;
}

static int delayed_timeout_ms(struct nc_rpc *rpc, uint64_t now)
{
    int best = -1;
    for (struct nc_call *c = rpc->delayed; c; c = c->next) {
        int t = c->resend_at > now ? (int)(c->resend_at - now) : 0;
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}

static void resend_delayed(struct nc_rpc *rpc, uint64_t now)
{
    struct nc_call **pp = &rpc->delayed;
    while (*pp) {
        struct nc_call *call = *pp;
        if (call->resend_at > now) {
            pp = &call->next;
            continue;
        }
        *pp = call->next;
        call->sent_at = 0;
        queue_call(rpc, call); /* a new XID: the old one's reply is cached as DELAY */
    }
}

/* Soft mounts: the earliest moment a call runs out of time (0: none). */
static uint64_t soft_due(const struct nc_rpc *rpc)
{
    if (!rpc->soft_deadline_ms)
        return 0;
    uint64_t due = 0;
    for (const struct nc_call *c = rpc->head; c; c = c->next)
        if (!due || c->queued_at + rpc->soft_deadline_ms < due)
            due = c->queued_at + rpc->soft_deadline_ms;
    for (const struct nc_call *c = rpc->delayed; c; c = c->next)
        if (!due || c->queued_at + rpc->soft_deadline_ms < due)
            due = c->queued_at + rpc->soft_deadline_ms;
    return due;
}

/* Fails the calls of a soft mount that have waited too long. */
static void expire_soft(struct nc_rpc *rpc, uint64_t now)
{
    struct nc_call *c = rpc->head;
    while (c) {
        struct nc_call *next = c->next;
        bool half_written = c == rpc->send_next && rpc->send_off > 0;
        if (now >= c->queued_at + rpc->soft_deadline_ms && !half_written) {
            /* (A call half written is finished first, or the stream breaks.) */
            call_unlink(rpc, c);
            c->done(rpc->client, c->ctx, -ETIMEDOUT, NULL);
            call_free(c);
        }
        c = next;
    }
    struct nc_call **pp = &rpc->delayed;
    while (*pp) {
        struct nc_call *call = *pp;
        if (now >= call->queued_at + rpc->soft_deadline_ms) {
            *pp = call->next;
            call->done(rpc->client, call->ctx, -ETIMEDOUT, NULL);
            call_free(call);
        } else {
            pp = &call->next;
        }
    }
}

int nc_rpc_timeout_ms(struct nc_rpc *rpc)
{
    uint64_t now = nc_now_ms();
    int delayed = delayed_timeout_ms(rpc, now);
    int t = rpc_io_timeout_ms(rpc, now);
    if (delayed >= 0 && (t < 0 || delayed < t))
        t = delayed;
    uint64_t soft = soft_due(rpc);
    if (soft) {
        int s = soft > now ? (int)(soft - now) : 0;
        if (t < 0 || s < t)
            t = s;
    }
    return t;
}

static int rpc_io_timeout_ms(struct nc_rpc *rpc, uint64_t now)
{
    if (rpc->state == CONN_DOWN && rpc->auto_reconnect && rpc->reconnect_at)
        return rpc->reconnect_at > now ? (int)(rpc->reconnect_at - now) : 0;
    if (rpc->state == CONN_CONNECTING) {
        uint64_t due = rpc->connect_started + connect_attempt_ms(rpc);
        return due > now ? (int)(due - now) : 0;
    }
    uint64_t due = liveness_due(rpc);
    if (!due)
        return -1;
    return due > now ? (int)(due - now) : 0;
}

void nc_rpc_tick(struct nc_rpc *rpc)
{
    uint64_t now = nc_now_ms();
    if (rpc->soft_deadline_ms)
        expire_soft(rpc, now);
    if (rpc->delayed)
        resend_delayed(rpc, now);
    if (rpc->state == CONN_DOWN && rpc->auto_reconnect && rpc->reconnect_at &&
        now >= rpc->reconnect_at) {
        rpc->reconnect_at = 0;
        int err = open_socket(rpc);
        if (err)
            connection_failed(rpc, err, strerror(-err));
        return;
    }
    if (rpc->state == CONN_CONNECTING) {
        /* A SYN into a black hole: give up like a lost reply would. */
        if (now >= rpc->connect_started + connect_attempt_ms(rpc))
            connection_failed(rpc, -ETIMEDOUT, "connection attempt timed out");
        return;
    }
    uint64_t due = liveness_due(rpc);
    if (!due || now < due)
        return;
    if (rpc->probe_sent_at) {
        connection_failed(rpc, -ETIMEDOUT, "not responding");
        return;
    }
    /* A reply is overdue and the server has been silent: ask it whether
     * it is alive before giving up on a request that may just be slow (a
     * COMMIT of a large file). */
    rpc->probe_sent_at = now;
    if (nc_rpc_null(rpc, probe_done, rpc) != 0)
        rpc->probe_sent_at = 0;
}
