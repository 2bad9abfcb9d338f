/*
 * The client: lifetime, the start-up handshake (SETCLIENTID, CONFIRM,
 * resolving the export path) and the entry points for the caller's event
 * loop.
 */
#include "nc_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_PORT 2049
#define DEFAULT_MAX_IO (1u << 20)
#define DEFAULT_CONNECT_TIMEOUT_MS 10000
#define DEFAULT_REQUEST_TIMEOUT_MS 60000
#define DEFAULT_MAX_INFLIGHT 64
/* Callback program number for SETCLIENTID; we never listen, so the server
 * finds the callback path down and hands out no delegations. */
#define CALLBACK_PROGRAM 0x40000000

int nc_client_new(struct nc_client **out, const struct nc_client_config *config)
{
    int err = -ENOMEM;
    struct nc_client *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->config = *config;
    if (!c->config.port)
        c->config.port = DEFAULT_PORT;
    if (!c->config.max_io)
        c->config.max_io = DEFAULT_MAX_IO;
    if (!c->config.connect_timeout_ms)
        c->config.connect_timeout_ms = DEFAULT_CONNECT_TIMEOUT_MS;
    if (!c->config.request_timeout_ms)
        c->config.request_timeout_ms = DEFAULT_REQUEST_TIMEOUT_MS;
    if (!c->config.max_inflight)
        c->config.max_inflight = DEFAULT_MAX_INFLIGHT;
    c->host = strdup(config->host ? config->host : "");
    c->path = strdup(config->path ? config->path : "/");
    if (config->client_name) {
        c->client_name = strdup(config->client_name);
    } else {
        char host[64] = "efsfuse";
        gethostname(host, sizeof(host) - 1);
        char name[160];
        snprintf(name, sizeof(name), "efsfuse/%s/%d/%llu", host, (int)getpid(),
                 (unsigned long long)nc_now_ms());
        c->client_name = strdup(name);
    }
    if (!c->host || !c->path || !c->client_name)
        goto out;
    c->config.host = c->host;
    c->config.path = c->path;
    c->config.client_name = c->client_name;
    /* Distinguishes this incarnation from a previous one with the same name. */
    uint64_t boot = nc_now_ms() ^ ((uint64_t)getpid() << 32);
    memcpy(c->boot_verifier, &boot, sizeof(c->boot_verifier));
    if (!c->config.retrans)
        c->config.retrans = 3;
    struct nc_rpc_config rc = {
        .request_timeout_ms = c->config.request_timeout_ms,
        .max_inflight = c->config.max_inflight,
        .soft_deadline_ms =
            c->config.soft ? (uint64_t)c->config.request_timeout_ms * c->config.retrans : 0,
    };
    err = nc_rpc_new(&c->rpc, c, &rc);
    if (err)
        goto out;
    err = nc_state_new(&c->state);
    if (err)
        goto out;
    err = nc_recover_new(&c->recovery);
    if (err)
        goto out;
    *out = c;
    return 0;
out:
    nc_client_free(c);
    return err;
}

void nc_client_free(struct nc_client *c)
{
    if (!c)
        return;
    c->shutting_down = true;
    nc_rpc_free(c->rpc); /* fails whatever is still pending */
    nc_unpark_all(c);    /* (fails them: shutting down) */
    nc_run_deferred(c);
    nc_lock_waits_free(c);
    nc_state_free(c->state);
    nc_recover_free(c->recovery);
    free(c->host);
    free(c->path);
    free(c->client_name);
    free(c);
}

/* --- deferred completions --- */

static void defer(struct nc_client *c, struct nc_deferred *d)
{
    d->next = NULL;
    if (c->deferred_tail)
        c->deferred_tail->next = d;
    else
        c->deferred_head = d;
    c->deferred_tail = d;
}

void nc_defer_error(struct nc_client *c, nc_callback cb, void *arg, int err)
{
    struct nc_deferred *d = calloc(1, sizeof(*d));
    if (!d)
        abort(); /* cannot even report the failure: nothing better to do */
    d->cb = cb;
    d->arg = arg;
    d->err = err;
    defer(c, d);
}

void nc_defer_done(struct nc_client *c, nc_rpc_done done, void *ctx, int err)
{
    struct nc_deferred *d = calloc(1, sizeof(*d));
    if (!d)
        abort();
    d->done = done;
    d->arg = ctx;
    d->err = err;
    defer(c, d);
}

void nc_park(struct nc_client *c, struct nc_parked *p)
{
    p->next = NULL;
    if (c->parked_tail)
        c->parked_tail->next = p;
    else
        c->parked_head = p;
    c->parked_tail = p;
}

void nc_unpark_all(struct nc_client *c)
{
    /* Detach first: a resumed call may park again (another recovery). */
    struct nc_parked *p = c->parked_head;
    c->parked_head = c->parked_tail = NULL;
    while (p) {
        struct nc_parked *next = p->next;
        p->resume(c, p);
        p = next;
    }
}

void nc_run_deferred(struct nc_client *c)
{
    while (c->deferred_head) {
        struct nc_deferred *d = c->deferred_head;
        c->deferred_head = d->next;
        if (!c->deferred_head)
            c->deferred_tail = NULL;
        if (d->cb) {
            struct nc_reply r = nc_reply_err(d->err);
            d->cb(d->arg, &r);
        } else {
            d->done(c, d->arg, d->err, NULL);
        }
        free(d);
    }
}

void nc_send(struct nc_client *c, const struct nc_cred *cred, struct nc_compound *cp,
             nc_rpc_done done, void *ctx)
{
    int err = nc_rpc_call(c->rpc, cred, &cp->args, NULL, 0, true, done, ctx);
    if (err)
        nc_defer_done(c, done, ctx, err);
}

void nc_send_payload(struct nc_client *c, const struct nc_cred *cred, struct nc_compound *cp,
                     const void *payload, uint32_t payload_len, nc_rpc_done done, void *ctx)
{
    int err = nc_rpc_call(c->rpc, cred, &cp->args, payload, payload_len, true, done, ctx);
    if (err)
        nc_defer_done(c, done, ctx, err);
}

void nc_send_seqid(struct nc_client *c, const struct nc_cred *cred, struct nc_compound *cp,
                   nc_rpc_done done, void *ctx)
{
    int err = nc_rpc_call(c->rpc, cred, &cp->args, NULL, 0, false, done, ctx);
    if (err)
        nc_defer_done(c, done, ctx, err);
}

/* --- event loop --- */

int nc_client_pollfds(struct nc_client *c, struct pollfd *fds, int max)
{
    if (max < 1)
        return 0;
    return nc_rpc_pollfd(c->rpc, &fds[0]);
}

static int min_timeout(int a, int b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

int nc_client_timeout_ms(struct nc_client *c)
{
    if (c->deferred_head)
        return 0;
    int t = nc_rpc_timeout_ms(c->rpc);
    t = min_timeout(t, nc_state_timeout_ms(c));
    t = min_timeout(t, nc_lock_waits_timeout_ms(c));
    t = min_timeout(t, nc_recover_timeout_ms(c));
    return t;
}

void nc_client_dispatch(struct nc_client *c, const struct pollfd *fds, int nfds)
{
    for (int i = 0; i < nfds; i++)
        nc_rpc_handle(c->rpc, fds[i].revents);
    nc_rpc_tick(c->rpc);
    nc_recover_tick(c);
    nc_state_tick(c);
    nc_lock_waits_tick(c);
    nc_run_deferred(c);
}

int nc_client_run_once(struct nc_client *c, int timeout_ms)
{
    struct pollfd pfd[4];
    int n = nc_client_pollfds(c, pfd, 4);
    int t = min_timeout(nc_client_timeout_ms(c), timeout_ms);
    int rc = poll(pfd, (nfds_t)n, t);
    if (rc < 0 && errno != EINTR)
        return -errno;
    if (rc <= 0)
        for (int i = 0; i < n; i++)
            pfd[i].revents = 0;
    nc_client_dispatch(c, pfd, n);
    return 0;
}

unsigned nc_client_pending(const struct nc_client *c)
{
    return nc_rpc_pending(c->rpc);
}

void nc_client_root(const struct nc_client *c, struct nc_fh *fh, struct nc_attr *attr)
{
    if (fh)
        *fh = c->root_fh;
    if (attr)
        *attr = c->root_attr;
}

uint32_t nc_client_max_read(const struct nc_client *c)
{
    return c->max_read;
}

uint32_t nc_client_max_write(const struct nc_client *c)
{
    return c->max_write;
}

static const char *status_text(int status)
{
    const char *n = nc_status_name(status);
    return n ? n : "unknown status";
}

/* --- the start-up handshake --- */

enum connect_step { STEP_SETCLIENTID, STEP_CONFIRM, STEP_ROOT, STEP_DONE };

struct connect_ctx {
    enum connect_step step;
    bool waiting;
    int err;
    char *errbuf;
    size_t errlen;
};

static void connect_fail(struct nc_client *c, struct connect_ctx *ctx, int err, const char *what)
{
    ctx->waiting = false;
    if (ctx->err)
        return; /* the first failure is the one to report */
    ctx->err = err;
    snprintf(ctx->errbuf, ctx->errlen, "%s", what ? what : nc_rpc_last_error(c->rpc));
}

static void setclientid_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct connect_ctx *ctx = arg;
    if (err) {
        connect_fail(c, ctx, err, NULL);
        return;
    }
    nfs_resop4 *r = nc_res_op(res, 0, OP_SETCLIENTID);
    if (!r || res->status != NFS4_OK) {
        char msg[200];
        snprintf(msg, sizeof(msg), "server refused SETCLIENTID: %s", status_text(res->status));
        connect_fail(c, ctx, nc_status_to_errno(res->status), msg);
        return;
    }
    SETCLIENTID4resok *ok = &r->nfs_resop4_u.opsetclientid.SETCLIENTID4res_u.resok4;
    c->clientid = ok->clientid;
    memcpy(c->confirm_verifier, ok->setclientid_confirm, sizeof(c->confirm_verifier));
    ctx->step = STEP_CONFIRM;
    ctx->waiting = false;
}

static void confirm_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct connect_ctx *ctx = arg;
    if (err) {
        connect_fail(c, ctx, err, NULL);
        return;
    }
    if (res->status != NFS4_OK) {
        char msg[200];
        snprintf(msg, sizeof(msg), "server refused SETCLIENTID_CONFIRM: %s",
                 status_text(res->status));
        connect_fail(c, ctx, nc_status_to_errno(res->status), msg);
        return;
    }
    ctx->step = STEP_ROOT;
    ctx->waiting = false;
}

static void root_done(struct nc_client *c, void *arg, int err, COMPOUND4res *res)
{
    struct connect_ctx *ctx = arg;
    if (err) {
        connect_fail(c, ctx, err, NULL);
        return;
    }
    if (res->status != NFS4_OK) {
        char msg[300];
        /* Which LOOKUP failed tells which component is missing. */
        unsigned n = res->resarray.resarray_len;
        nfs_opnum4 failed_op = n ? res->resarray.resarray_val[n - 1].resop : OP_PUTROOTFH;
        if (failed_op == OP_LOOKUP && res->status == NFS4ERR_NOENT)
            snprintf(msg, sizeof(msg), "export path '%s' does not exist on the server", c->path);
        else if (failed_op == OP_LOOKUP && res->status == NFS4ERR_NOTDIR)
            snprintf(msg, sizeof(msg), "export path '%s' is not a directory on the server",
                     c->path);
        else if (res->status == NFS4ERR_ACCESS || res->status == NFS4ERR_PERM ||
                 res->status == NFS4ERR_WRONGSEC)
            snprintf(msg, sizeof(msg), "server denied access to export path '%s' (%s)", c->path,
                     status_text(res->status));
        else
            snprintf(msg, sizeof(msg), "cannot resolve export path '%s': %s", c->path,
                     status_text(res->status));
        connect_fail(c, ctx, nc_status_to_errno(res->status), msg);
        return;
    }
    if (nc_res_find_fh(res, &c->root_fh) != 0) {
        connect_fail(c, ctx, -EPROTO, "server did not return the export's filehandle");
        return;
    }
    nfs_resop4 *ga = &res->resarray.resarray_val[res->resarray.resarray_len - 1];
    struct nc_fattr_extra extra;
    if (ga->resop != OP_GETATTR ||
        nc_fattr_decode_extra(&ga->nfs_resop4_u.opgetattr.GETATTR4res_u.resok4.obj_attributes,
                              &c->root_attr, &extra) != 0) {
        connect_fail(c, ctx, -EPROTO, "server returned unreadable attributes for the export");
        return;
    }
    if ((c->root_attr.mode & S_IFMT) != S_IFDIR) {
        char msg[300];
        snprintf(msg, sizeof(msg), "export path '%s' is not a directory on the server", c->path);
        connect_fail(c, ctx, -ENOTDIR, msg);
        return;
    }
    c->lease_seconds = extra.lease_time;
    c->max_read = c->config.max_io;
    c->max_write = c->config.max_io;
    if (extra.maxread && extra.maxread < c->max_read)
        c->max_read = (uint32_t)extra.maxread;
    if (extra.maxwrite && extra.maxwrite < c->max_write)
        c->max_write = (uint32_t)extra.maxwrite;
    ctx->step = STEP_DONE;
    ctx->waiting = false;
}

void nc_fill_setclientid(struct nc_client *c, struct nc_compound *cp, char *netid, char *raddr)
{
    nfs_argop4 *a = nc_compound_add(cp, OP_SETCLIENTID);
    SETCLIENTID4args *s = &a->nfs_argop4_u.opsetclientid;
    memcpy(s->client.verifier, c->boot_verifier, sizeof(s->client.verifier));
    s->client.id.id_len = (u_int)strlen(c->client_name);
    s->client.id.id_val = c->client_name;
    s->callback.cb_program = CALLBACK_PROGRAM;
    s->callback.cb_location.r_netid = netid;
    s->callback.cb_location.r_addr = raddr;
    s->callback_ident = 1;
}

static int send_step(struct nc_client *c, struct connect_ctx *ctx)
{
    struct nc_compound cp;
    struct nc_cred root = {0};
    nc_compound_init(&cp, "mount");
    char netid[] = "tcp";
    char raddr[] = "0.0.0.0.0.0";
    char *path_copy = NULL;
    int err = 0;
    switch (ctx->step) {
    case STEP_SETCLIENTID:
        nc_fill_setclientid(c, &cp, netid, raddr);
        nc_send(c, &root, &cp, setclientid_done, ctx);
        break;
    case STEP_CONFIRM: {
        nfs_argop4 *a = nc_compound_add(&cp, OP_SETCLIENTID_CONFIRM);
        a->nfs_argop4_u.opsetclientid_confirm.clientid = c->clientid;
        memcpy(a->nfs_argop4_u.opsetclientid_confirm.setclientid_confirm, c->confirm_verifier,
               sizeof(verifier4));
        nc_send(c, &root, &cp, confirm_done, ctx);
        break;
    }
    case STEP_ROOT: {
        nc_compound_add(&cp, OP_PUTROOTFH);
        path_copy = strdup(c->path);
        if (!path_copy) {
            err = -ENOMEM;
            break;
        }
        char *save = NULL;
        unsigned components = 0;
        for (char *tok = strtok_r(path_copy, "/", &save); tok; tok = strtok_r(NULL, "/", &save)) {
            if (++components > NC_MAX_OPS - 4) {
                snprintf(ctx->errbuf, ctx->errlen, "export path '%s' is too deep", c->path);
                err = -ENAMETOOLONG;
                break;
            }
            nc_op_lookup(&cp, tok);
        }
        if (err)
            break;
        nc_op_getfh(&cp);
        uint32_t mask[2] = {nc_attr_mask_std[0] | (1u << FATTR4_LEASE_TIME) |
                                (1u << FATTR4_MAXREAD) | (1u << FATTR4_MAXWRITE),
                            nc_attr_mask_std[1]};
        nc_op_getattr_mask(&cp, mask);
        nc_send(c, &root, &cp, root_done, ctx);
        break;
    }
    case STEP_DONE:
        break;
    }
    free(path_copy);
    nc_compound_free(&cp);
    return err;
}

/* One attempt at the handshake, until deadline. */
static int connect_once(struct nc_client *c, uint64_t deadline, char *errbuf, size_t errlen)
{
    errbuf[0] = '\0';
    int err = nc_rpc_start_connect(c->rpc, c->host, c->config.port, errbuf, errlen);
    if (err)
        return err;
    struct connect_ctx ctx = {.step = STEP_SETCLIENTID, .errbuf = errbuf, .errlen = errlen};
    while (ctx.step != STEP_DONE && !ctx.err) {
        if (!ctx.waiting) {
            ctx.waiting = true;
            err = send_step(c, &ctx);
            if (err) {
                ctx.err = err;
                break;
            }
        }
        uint64_t now = nc_now_ms();
        if (now >= deadline) {
            char msg[300];
            snprintf(msg, sizeof(msg), "server %s:%u: no answer within %u ms", c->host,
                     c->config.port, c->config.connect_timeout_ms);
            connect_fail(c, &ctx, -ETIMEDOUT, msg);
            break;
        }
        err = nc_client_run_once(c, (int)(deadline - now));
        if (err) {
            ctx.err = err;
            break;
        }
    }
    if (ctx.err) {
        /* Fail (and forget) whatever the handshake still had in flight. */
        nc_rpc_abort(c->rpc, -ECANCELED);
        nc_run_deferred(c);
        if (!errbuf[0])
            snprintf(errbuf, errlen, "server %s:%u: %s", c->host, c->config.port,
                     strerror(-ctx.err));
    }
    return ctx.err;
}

/* Failures that may go away by themselves: the server (or the network, or
 * its DNS name) is not there yet, as when a pod starts before its mount
 * target is ready. A server that answers wrongly is not retried. */
static bool worth_retrying(int err)
{
    return err == -ECONNREFUSED || err == -EHOSTUNREACH || err == -ENETUNREACH ||
           err == -ECONNRESET || err == -ECONNABORTED || err == -EPIPE;
}

int nc_client_connect(struct nc_client *c, char *errbuf, size_t errlen)
{
    char dummy[8];
    if (!errbuf) {
        errbuf = dummy;
        errlen = sizeof(dummy);
    }
    uint64_t start = nc_now_ms();
    uint64_t deadline = start + c->config.connect_timeout_ms;
    unsigned backoff_ms = 100;
    unsigned attempts = 0;
    int err;
    for (;;) {
        attempts++;
        err = connect_once(c, deadline, errbuf, errlen);
        if (!err || !worth_retrying(err) || nc_now_ms() + backoff_ms >= deadline)
            break;
        if (attempts == 1)
            elog_info(NC_COMPONENT, "%s; retrying for up to %u s", errbuf,
                      c->config.connect_timeout_ms / 1000);
        struct timespec pause = {.tv_sec = backoff_ms / 1000,
                                 .tv_nsec = (long)(backoff_ms % 1000) * 1000000L};
        nanosleep(&pause, NULL);
        backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
    }
    if (err) {
        if (attempts > 1) {
            size_t n = strlen(errbuf);
            snprintf(errbuf + n, errlen - n, " (%u attempts in %.1f s)", attempts,
                     (double)(nc_now_ms() - start) / 1000.0);
        }
        return err;
    }
    nc_state_set_lease(c, c->lease_seconds);
    nc_rpc_set_auto_reconnect(c->rpc, true);
    elog_info(NC_COMPONENT, "connected to %s:%u, export '%s', lease %u s, rsize %u, wsize %u",
              c->host, c->config.port, c->path, c->lease_seconds, c->max_read, c->max_write);
    return 0;
}

void nc_client_shutdown(struct nc_client *c)
{
    if (!c || c->shutting_down)
        return;
    nc_state_close_all(c);
    c->shutting_down = true;
}
