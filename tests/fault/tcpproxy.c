/*
 * tcpproxy: a userspace TCP proxy that adds latency and faults between a
 * client and a server, for benchmarks and fault tests on machines without
 * netem.
 *
 *   tcpproxy --listen HOST:PORT --connect HOST:PORT [--delay-ms F]
 *            [--reset-every-ms N] [--control FILE] [--pidfile FILE]
 *
 * Every accepted connection is paired with a new connection to --connect.
 * HOST is numeric or a name from /etc/hosts; IPv6 as [::1]:PORT. Listening
 * on port 0 picks a free port. The first line on stdout is always
 * "port=NNNN" (flushed), so a script can start the proxy and read its port;
 * the pidfile, when asked for, exists before that line is printed.
 *
 * --delay-ms F       holds every byte F ms (fractions allowed) in EACH
 *                    direction, counted from when the proxy reads it, so the
 *                    round trip grows by 2F: --delay-ms 0.5 emulates a 1 ms
 *                    RTT. Order is kept. As a direction holds at most 64 MiB,
 *                    a connection cannot exceed 64 MiB per F (670 MB/s at
 *                    100 ms); below that the delay costs no throughput.
 * --reset-every-ms N every N ms, closes every live pair with an RST on both
 *                    sides (SO_LINGER 0); new connections are served as usual.
 * --control FILE     runtime state, re-read on SIGHUP (not polled: a signal
 *                    makes a change take effect at a known moment, and the
 *                    "control:" line the proxy then logs on stderr tells a
 *                    script it has been applied). The file is a list of
 *                    lines, '#' starts a comment:
 *                      pass       forward normally (also when no mode word)
 *                      blackhole  forward nothing, read nothing, accept
 *                                 nothing: connections stay open and data
 *                                 sent meanwhile is held, then delivered on
 *                                 the return to pass. Holding is what the
 *                                 endpoints of a real black hole see too:
 *                                 TCP retransmits what was lost once the
 *                                 path heals. New connects still complete
 *                                 (the kernel finishes handshakes into the
 *                                 listen backlog) but get no answer until
 *                                 then. Unlike a real black hole, the
 *                                 proxy's kernel still ACKs what fits in
 *                                 its receive buffer and answers keepalive
 *                                 probes, so only timeouts the client
 *                                 application keeps itself will fire.
 *                      refuse     close the listening socket, so connects
 *                                 fail with ECONNREFUSED like a server that
 *                                 is down; live pairs keep flowing (add
 *                                 "reset" to drop them as well).
 *                      reset      an action, not a mode: RST every live pair
 *                                 once per reload that finds it.
 *                      delay F    the delay for data arriving from now on;
 *                                 without it, --delay-ms applies again.
 *                    So "reset" alone resets once and continues as pass, and
 *                    "reset" + "refuse" emulates a server crash. A missing
 *                    file means pass; a malformed one is refused at start
 *                    and ignored (with an error line) on reload.
 *
 * SIGTERM and SIGINT close everything, remove the pidfile and exit 0.
 * stderr gets one line per connection opened or closed and per control
 * reload. Exit status: 2 for bad usage, 1 for other start-up failures.
 *
 * Design: one thread, one epoll loop, edge-triggered sockets. Each
 * direction of a pair is a queue of chunks stamped with the time they may
 * leave (arrival + delay); a min-heap of directions keyed by the head
 * chunk's time drives one timerfd, which has nanosecond resolution unlike
 * epoll's timeout. A direction stops reading when it holds 64 MiB, which
 * lets TCP flow control push back on the sender, so memory stays bounded.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

enum {
    /* Large enough that one read or write moves a lot at once. */
    CHUNK_CAP = 256 * 1024,
    /* Reads this small are copied into a chunk of their size, so that many
     * small messages in flight do not each pin a whole CHUNK_CAP. */
    SMALL_MAX = 16 * 1024,
    /* Idle chunks kept for reuse: malloc may serve these sizes with mmap,
     * and faulting fresh pages in costs more than the copy itself. */
    POOL_MAX = 64,
    IOV_BATCH = 64,
    /* Bytes one direction may read before the loop serves the others. */
    READ_BUDGET = 2 * 1024 * 1024,
    CONTROL_MAX = 4096,
};
#define DIR_LIMIT ((size_t)64 << 20)
#define NO_SLOT SIZE_MAX
#define MAX_DELAY_MS 3600000.0

enum mode { MODE_PASS, MODE_BLACKHOLE, MODE_REFUSE };
static const char *const mode_names[] = {"pass", "blackhole", "refuse"};

enum ep_kind { EP_LISTEN, EP_SIGNAL, EP_TIMER, EP_RESET_TIMER, EP_SOCK };
enum side { CLIENT, SERVER };
static const char *const side_names[] = {"client", "server"};

struct chunk {
    struct chunk *next;
    uint64_t due_ns;
    size_t cap, len, off;
    unsigned char data[];
};

/* What epoll hands back: one per file descriptor. */
struct endpoint {
    enum ep_kind kind;
    int fd;
    struct conn *conn;
    enum side side;
    /* Edge-triggered readiness, kept until a call returns EAGAIN. */
    bool readable, writable;
    bool connecting;
};

/* One direction of a pair: bytes read from src, queued, written to dst. */
struct dir {
    struct conn *conn;
    struct endpoint *src, *dst;
    struct chunk *head, *tail;
    size_t held; /* memory pinned by the queue, against DIR_LIMIT */
    bool eof, fin_sent;
    uint64_t eof_due;
    uint64_t bytes;
    size_t slot; /* position in the timer heap, NO_SLOT when absent */
    uint64_t key;
};

struct conn {
    unsigned long id;
    struct endpoint ep[2]; /* CLIENT, SERVER */
    struct dir dirs[2];    /* client->server, server->client */
    bool dead, queued;
    struct conn *prev, *next; /* live list, or the graveyard once dead */
    struct conn *run_next;
};

struct heap {
    struct dir **v;
    size_t n, cap;
};

struct proxy {
    int epfd;
    struct endpoint listener, sig, timer, reset_timer;
    struct sockaddr_storage listen_addr, upstream;
    socklen_t listen_len, upstream_len;
    char upstream_name[64];
    uint64_t base_delay_ns, delay_ns;
    enum mode mode;
    const char *control_path;
    struct conn *live, *graveyard, *runq;
    size_t nconns;
    unsigned long next_id;
    struct heap heap;
    uint64_t armed_ns;
    struct chunk *pool;
    size_t npool;
    /* accept() ran out of descriptors; retried when a pair goes away. */
    bool accept_stalled;
    bool stop;
};

struct control {
    enum mode mode;
    uint64_t delay_ns;
    bool reset;
};

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
    char line[512];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "tcpproxy: %02d:%02d:%02d.%03ld ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    /* Formatted whole first, so that it leaves in one write() and never
     * interleaves with other writers of the same stderr. */
    fprintf(stderr, "%s\n", line);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void addr_name(const struct sockaddr_storage *ss, socklen_t len, char *out, size_t outlen)
{
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo((const struct sockaddr *)ss, len, host, sizeof host, serv, sizeof serv,
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(out, outlen, "?");
        return;
    }
    snprintf(out, outlen, ss->ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
}

/* --- timer heap: directions whose next byte (or FIN) is not yet due --- */

static void heap_place(struct heap *h, size_t i, struct dir *d)
{
    h->v[i] = d;
    d->slot = i;
}

static void heap_up(struct heap *h, size_t i)
{
    struct dir *d = h->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->v[parent]->key <= d->key)
            break;
        heap_place(h, i, h->v[parent]);
        i = parent;
    }
    heap_place(h, i, d);
}

static void heap_down(struct heap *h, size_t i)
{
    struct dir *d = h->v[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= h->n)
            break;
        if (child + 1 < h->n && h->v[child + 1]->key < h->v[child]->key)
            child++;
        if (d->key <= h->v[child]->key)
            break;
        heap_place(h, i, h->v[child]);
        i = child;
    }
    heap_place(h, i, d);
}

/* Room is reserved when a pair is created, so insertion cannot fail. */
static int heap_reserve(struct heap *h, size_t want)
{
    if (want <= h->cap)
        return 0;
    size_t cap = h->cap ? h->cap : 64;
    while (cap < want)
        cap *= 2;
    struct dir **v = realloc(h->v, cap * sizeof *v);
    if (!v)
        return -1;
    h->v = v;
    h->cap = cap;
    return 0;
}

static void heap_set(struct heap *h, struct dir *d, uint64_t key)
{
    if (d->slot == NO_SLOT) {
        d->key = key;
        heap_place(h, h->n++, d);
        heap_up(h, d->slot);
    } else if (d->key != key) {
        d->key = key;
        heap_up(h, d->slot);
        heap_down(h, d->slot);
    }
}

static void heap_del(struct heap *h, struct dir *d)
{
    if (d->slot == NO_SLOT)
        return;
    size_t i = d->slot;
    struct dir *last = h->v[--h->n];
    d->slot = NO_SLOT;
    if (last == d)
        return;
    heap_place(h, i, last);
    heap_up(h, i);
    heap_down(h, last->slot);
}

/* --- chunks --- */

static struct chunk *chunk_big(struct proxy *p)
{
    struct chunk *c = p->pool;
    if (c) {
        p->pool = c->next;
        p->npool--;
    } else {
        c = malloc(sizeof *c + CHUNK_CAP);
        if (!c)
            return NULL;
        c->cap = CHUNK_CAP;
    }
    c->next = NULL;
    c->len = c->off = 0;
    return c;
}

static void chunk_free(struct proxy *p, struct chunk *c)
{
    if (c->cap == CHUNK_CAP && p->npool < POOL_MAX) {
        c->next = p->pool;
        p->pool = c;
        p->npool++;
    } else {
        free(c);
    }
}

static void dir_drop(struct proxy *p, struct dir *d)
{
    while (d->head) {
        struct chunk *c = d->head;
        d->head = c->next;
        chunk_free(p, c);
    }
    d->tail = NULL;
    d->held = 0;
}

/* --- pairs --- */

static void close_rst(int fd)
{
    struct linger lin = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof lin);
    close(fd);
}

static void conn_unlink(struct proxy *p, struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        p->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = NULL;
    c->next = p->graveyard;
    p->graveyard = c;
    p->nconns--;
}

/* Ends a pair. With rst, both sides see a reset; otherwise a FIN (usually
 * already sent by shutdown()). Either way, what the proxy still holds for
 * the pair is dropped. The memory lives on until the end of the loop
 * iteration, since events for it may still be in the batch being served. */
static void conn_end(struct proxy *p, struct conn *c, bool rst, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void conn_end(struct proxy *p, struct conn *c, bool rst, const char *fmt, ...)
{
    if (c->dead)
        return;
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    logmsg("conn %lu closed: %s; %" PRIu64 " bytes up, %" PRIu64 " down", c->id, why,
           c->dirs[0].bytes, c->dirs[1].bytes);
    for (int s = 0; s < 2; s++) {
        if (rst)
            close_rst(c->ep[s].fd);
        else
            close(c->ep[s].fd);
        c->ep[s].fd = -1;
        heap_del(&p->heap, &c->dirs[s]);
        dir_drop(p, &c->dirs[s]);
    }
    c->dead = true;
    conn_unlink(p, c);
}

static size_t conn_reset_all(struct proxy *p, const char *why)
{
    size_t n = 0;
    while (p->live) {
        conn_end(p, p->live, true, "%s", why);
        n++;
    }
    return n;
}

static void dir_schedule(struct proxy *p, struct dir *d, uint64_t now)
{
    uint64_t due = 0;
    if (d->head)
        due = d->head->due_ns;
    else if (d->eof && !d->fin_sent)
        due = d->eof_due;
    if (due > now)
        heap_set(&p->heap, d, due);
    else
        heap_del(&p->heap, d);
}

/* Writes every chunk whose time has come; -1 (errno set) on a write error.
 * Only the head is looked at: after the delay was lowered, a chunk due
 * before the head waits for it, so the stream keeps its order. */
static int dir_flush(struct proxy *p, struct dir *d, uint64_t now)
{
    while (d->head && d->head->due_ns <= now && d->dst->writable && !d->dst->connecting) {
        struct iovec iov[IOV_BATCH];
        int n = 0;
        for (struct chunk *c = d->head; c && n < IOV_BATCH && c->due_ns <= now; c = c->next) {
            iov[n].iov_base = c->data + c->off;
            iov[n].iov_len = c->len - c->off;
            n++;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(d->dst->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                d->dst->writable = false;
                return 0;
            }
            return -1;
        }
        size_t left = (size_t)w;
        while (left > 0) {
            struct chunk *c = d->head;
            size_t avail = c->len - c->off;
            if (left < avail) {
                c->off += left;
                break;
            }
            left -= avail;
            d->head = c->next;
            if (!d->head)
                d->tail = NULL;
            d->held -= sizeof *c + c->cap;
            chunk_free(p, c);
        }
    }
    return 0;
}

static void dir_append(struct dir *d, struct chunk *c, uint64_t due)
{
    c->due_ns = due;
    c->next = NULL;
    if (d->tail)
        d->tail->next = c;
    else
        d->head = c;
    d->tail = c;
    d->held += sizeof *c + c->cap;
}

enum read_result { READ_DONE, READ_MORE, READ_FAILED, WRITE_FAILED };

/* Reads what src offers into the queue, within budget and buffer limit, and
 * forwards what is already due. READ_MORE: the budget ran out first. On
 * failure errno says why. */
static enum read_result dir_read(struct proxy *p, struct dir *d)
{
    size_t budget = READ_BUDGET;
    while (d->src->readable && !d->src->connecting && !d->eof &&
           d->held + sizeof(struct chunk) + CHUNK_CAP <= DIR_LIMIT) {
        if (budget == 0)
            return READ_MORE;
        struct chunk *c = chunk_big(p);
        if (!c) {
            errno = ENOMEM;
            return READ_FAILED;
        }
        ssize_t n = read(d->src->fd, c->data, CHUNK_CAP);
        uint64_t now = now_ns();
        if (n <= 0) {
            int err = errno;
            chunk_free(p, c);
            if (n == 0) {
                d->eof = true;
                d->eof_due = now + p->delay_ns;
                break;
            }
            if (err == EINTR)
                continue;
            if (err == EAGAIN || err == EWOULDBLOCK) {
                d->src->readable = false;
                break;
            }
            errno = err;
            return READ_FAILED;
        }
        if (n <= SMALL_MAX) {
            struct chunk *small = malloc(sizeof *small + (size_t)n);
            if (small) {
                memcpy(small->data, c->data, (size_t)n);
                small->cap = (size_t)n;
                chunk_free(p, c);
                c = small;
            }
        }
        c->len = (size_t)n;
        c->off = 0;
        dir_append(d, c, now + p->delay_ns);
        d->bytes += (uint64_t)n;
        budget -= (size_t)n < budget ? (size_t)n : budget;
        /* Forward right away when nothing delays it: keeps the data in
         * flight, and the memory held, small. */
        if (dir_flush(p, d, now) < 0)
            return WRITE_FAILED;
    }
    return READ_DONE;
}

static void runq_add(struct proxy *p, struct conn *c)
{
    if (c->queued)
        return;
    c->queued = true;
    c->run_next = p->runq;
    p->runq = c;
}

/* Moves whatever can move in one direction; false when the pair has ended. */
static bool dir_pump(struct proxy *p, struct dir *d)
{
    struct conn *c = d->conn;
    uint64_t now = now_ns();
    if (dir_flush(p, d, now) < 0)
        goto write_error;
    switch (dir_read(p, d)) {
    case READ_DONE:
        break;
    case READ_MORE:
        runq_add(p, c);
        break;
    case READ_FAILED:
        conn_end(p, c, true, "read from %s: %s", side_names[d->src->side], strerror(errno));
        return false;
    case WRITE_FAILED:
        goto write_error;
    }
    now = now_ns();
    if (dir_flush(p, d, now) < 0)
        goto write_error;
    if (d->eof && !d->fin_sent && !d->head && d->eof_due <= now && !d->dst->connecting) {
        /* ENOTCONN only means the peer is gone already; the write side
         * or the other direction reports that. */
        shutdown(d->dst->fd, SHUT_WR);
        d->fin_sent = true;
    }
    dir_schedule(p, d, now);
    return true;

write_error:
    conn_end(p, c, true, "write to %s: %s", side_names[d->dst->side], strerror(errno));
    return false;
}

static void conn_pump(struct proxy *p, struct conn *c)
{
    if (c->dead || p->mode == MODE_BLACKHOLE)
        return;
    for (int i = 0; i < 2; i++)
        if (!dir_pump(p, &c->dirs[i]))
            return;
    if (c->dirs[0].fin_sent && c->dirs[1].fin_sent)
        conn_end(p, c, false, "end of stream");
}

static void conn_pump_all(struct proxy *p)
{
    for (struct conn *c = p->live, *next; c; c = next) {
        next = c->next;
        conn_pump(p, c);
    }
}

static void conn_connected(struct proxy *p, struct conn *c)
{
    struct endpoint *s = &c->ep[SERVER];
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err) {
        conn_end(p, c, true, "connect to %s: %s", p->upstream_name, strerror(err));
        return;
    }
    s->connecting = false;
    s->readable = s->writable = true;
}

static int epoll_add(struct proxy *p, struct endpoint *e, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = e};
    return epoll_ctl(p->epfd, EPOLL_CTL_ADD, e->fd, &ev);
}

static void set_nodelay(int fd)
{
    /* The proxy must not add Nagle's wait to the delay it is asked for:
     * whatever the endpoints batch is forwarded as soon as it is due. */
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void conn_new(struct proxy *p, int cfd, const struct sockaddr_storage *peer,
                     socklen_t peerlen)
{
    struct conn *c = NULL;
    int sfd = -1;
    char name[64];
    addr_name(peer, peerlen, name, sizeof name);
    if (heap_reserve(&p->heap, 2 * (p->nconns + 1)) < 0)
        goto fail;
    c = calloc(1, sizeof *c);
    if (!c)
        goto fail;
    sfd = socket(p->upstream.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (sfd < 0)
        goto fail;
    set_nodelay(cfd);
    set_nodelay(sfd);
    int rc = connect(sfd, (struct sockaddr *)&p->upstream, p->upstream_len);
    int connect_err = rc < 0 && errno != EINPROGRESS ? errno : 0;

    c->id = ++p->next_id;
    for (int s = 0; s < 2; s++) {
        c->ep[s].kind = EP_SOCK;
        c->ep[s].conn = c;
        c->ep[s].side = (enum side)s;
        c->dirs[s].conn = c;
        c->dirs[s].slot = NO_SLOT;
    }
    c->ep[CLIENT].fd = cfd;
    c->ep[CLIENT].readable = c->ep[CLIENT].writable = true;
    c->ep[SERVER].fd = sfd;
    c->ep[SERVER].connecting = true;
    c->dirs[0].src = &c->ep[CLIENT];
    c->dirs[0].dst = &c->ep[SERVER];
    c->dirs[1].src = &c->ep[SERVER];
    c->dirs[1].dst = &c->ep[CLIENT];
    if (epoll_add(p, &c->ep[CLIENT], EPOLLIN | EPOLLOUT | EPOLLET) < 0 ||
        epoll_add(p, &c->ep[SERVER], EPOLLIN | EPOLLOUT | EPOLLET) < 0)
        goto fail;

    c->next = p->live;
    if (p->live)
        p->live->prev = c;
    p->live = c;
    p->nconns++;
    logmsg("conn %lu open: %s -> %s", c->id, name, p->upstream_name);
    if (connect_err)
        conn_end(p, c, true, "connect to %s: %s", p->upstream_name, strerror(connect_err));
    else if (rc == 0)
        conn_connected(p, c);
    return;

fail:
    logmsg("dropping connection from %s: %s", name, strerror(errno));
    close_rst(cfd);
    if (sfd >= 0)
        close(sfd);
    free(c);
}

/* Errors that lose one pending connection, after which the next may be
 * fine (accept(2) passes on network errors of the new socket). */
static bool accept_transient(int err)
{
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return true;
    default:
        return false;
    }
}

static void accept_all(struct proxy *p)
{
    while (p->listener.fd >= 0 && p->mode != MODE_BLACKHOLE) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd =
            accept4(p->listener.fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                if (!p->accept_stalled)
                    logmsg("accept: %s; waiting for a connection to close", strerror(errno));
                p->accept_stalled = true;
                return;
            }
            if (accept_transient(errno))
                continue;
            logmsg("accept: %s", strerror(errno));
            return;
        }
        conn_new(p, fd, &peer, len);
    }
}

static int listener_open(struct proxy *p)
{
    int fd = socket(p->listen_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        goto fail;
    /* Lets "refuse" then "pass" listen again on the same port at once. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail;
    if (bind(fd, (struct sockaddr *)&p->listen_addr, p->listen_len) < 0)
        goto fail;
    if (listen(fd, SOMAXCONN) < 0)
        goto fail;
    /* Keep the port chosen for port 0, for re-listening after "refuse". */
    p->listen_len = sizeof p->listen_addr;
    if (getsockname(fd, (struct sockaddr *)&p->listen_addr, &p->listen_len) < 0)
        goto fail;
    p->listener.fd = fd;
    if (epoll_add(p, &p->listener, EPOLLIN | EPOLLET) < 0) {
        p->listener.fd = -1;
        goto fail;
    }
    return 0;

fail:;
    int err = errno;
    if (fd >= 0)
        close(fd);
    errno = err;
    return -1;
}

static void listener_close(struct proxy *p)
{
    if (p->listener.fd < 0)
        return;
    close(p->listener.fd);
    p->listener.fd = -1;
}

/* --- control file --- */

static int parse_delay(const char *s, uint64_t *ns)
{
    char *end;
    errno = 0;
    double ms = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(ms) || ms < 0 || ms > MAX_DELAY_MS)
        return -1;
    *ns = (uint64_t)(ms * 1e6 + 0.5);
    return 0;
}

static int mode_parse(const char *word)
{
    for (int m = 0; m < (int)(sizeof mode_names / sizeof mode_names[0]); m++)
        if (strcmp(word, mode_names[m]) == 0)
            return m;
    return -1;
}

/* Fills ctl from the control file; -1 with a message in err when the file
 * cannot be read or says something we do not understand. */
static int control_read(const struct proxy *p, struct control *ctl, char *err, size_t errlen)
{
    char buf[CONTROL_MAX + 1];
    int rc = -1;
    bool have_mode = false;
    FILE *f = NULL;

    ctl->mode = MODE_PASS;
    ctl->delay_ns = p->base_delay_ns;
    ctl->reset = false;
    f = fopen(p->control_path, "r");
    if (!f) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "%s", strerror(errno));
        goto out;
    }
    size_t n = fread(buf, 1, sizeof buf, f);
    if (ferror(f)) {
        snprintf(err, errlen, "read error");
        goto out;
    }
    if (n > CONTROL_MAX) {
        snprintf(err, errlen, "larger than %d bytes", CONTROL_MAX);
        goto out;
    }
    buf[n] = '\0';

    int lineno = 0;
    for (char *line = buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save_word;
        char *word = strtok_r(line, " \t\r", &save_word);
        if (!word)
            continue;
        char *arg = strtok_r(NULL, " \t\r", &save_word);
        char *extra = arg ? strtok_r(NULL, " \t\r", &save_word) : NULL;
        int m = mode_parse(word);
        if (m >= 0 && !arg) {
            if (have_mode && ctl->mode != (enum mode)m) {
                snprintf(err, errlen, "line %d: a second mode '%s'", lineno, word);
                goto out;
            }
            ctl->mode = (enum mode)m;
            have_mode = true;
        } else if (strcmp(word, "reset") == 0 && !arg) {
            ctl->reset = true;
        } else if (strcmp(word, "delay") == 0 && arg && !extra) {
            if (parse_delay(arg, &ctl->delay_ns) < 0) {
                snprintf(err, errlen, "line %d: bad delay '%s' (ms, 0 to %.0f)", lineno, arg,
                         MAX_DELAY_MS);
                goto out;
            }
        } else {
            snprintf(err, errlen,
                     "line %d: expected pass, blackhole, refuse, reset or delay MS, got '%s%s%s'",
                     lineno, word, arg ? " " : "", arg ? arg : "");
            goto out;
        }
    }
    rc = 0;
out:
    if (f)
        fclose(f);
    return rc;
}

static void mode_set(struct proxy *p, enum mode mode)
{
    enum mode old = p->mode;
    if (mode == old)
        return;
    p->mode = mode;
    if (mode == MODE_REFUSE)
        listener_close(p);
    if (old == MODE_REFUSE && listener_open(p) < 0) {
        char name[64];
        addr_name(&p->listen_addr, p->listen_len, name, sizeof name);
        logmsg("cannot listen again on %s: %s; refusing until the next reload", name,
               strerror(errno));
    }
    if (old == MODE_BLACKHOLE) {
        conn_pump_all(p);
        accept_all(p);
    }
}

static void control_reload(struct proxy *p)
{
    if (!p->control_path) {
        logmsg("SIGHUP ignored: no --control file");
        return;
    }
    struct control ctl;
    char err[256];
    if (control_read(p, &ctl, err, sizeof err) < 0) {
        logmsg("control: %s: %s; keeping mode %s", p->control_path, err, mode_names[p->mode]);
        return;
    }
    size_t nreset = ctl.reset ? conn_reset_all(p, "reset by control file") : 0;
    p->delay_ns = ctl.delay_ns;
    mode_set(p, ctl.mode);
    char resets[64] = "";
    if (ctl.reset)
        snprintf(resets, sizeof resets, ", reset %zu connection%s", nreset, nreset == 1 ? "" : "s");
    logmsg("control: mode %s, delay %.3f ms%s", mode_names[p->mode], (double)p->delay_ns / 1e6,
           resets);
}

/* --- event loop --- */

static void on_timer(struct proxy *p)
{
    uint64_t ticks;
    if (read(p->timer.fd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
        logmsg("timerfd read: %s", strerror(errno));
    p->armed_ns = 0;
    uint64_t now = now_ns();
    while (p->heap.n > 0 && p->heap.v[0]->key <= now) {
        struct dir *d = p->heap.v[0];
        heap_del(&p->heap, d);
        conn_pump(p, d->conn);
    }
}

static void timer_arm(struct proxy *p)
{
    if (p->heap.n == 0 || p->heap.v[0]->key == p->armed_ns)
        return;
    uint64_t due = p->heap.v[0]->key;
    struct itimerspec its = {
        .it_value = {.tv_sec = (time_t)(due / 1000000000u), .tv_nsec = (long)(due % 1000000000u)},
    };
    if (timerfd_settime(p->timer.fd, TFD_TIMER_ABSTIME, &its, NULL) < 0) {
        logmsg("timerfd_settime: %s", strerror(errno));
        return;
    }
    p->armed_ns = due;
}

static void on_signal(struct proxy *p)
{
    struct signalfd_siginfo si;
    while (read(p->sig.fd, &si, sizeof si) == (ssize_t)sizeof si) {
        if (si.ssi_signo == SIGHUP) {
            control_reload(p);
        } else if (!p->stop) {
            logmsg("%s: closing %zu connection%s and exiting", strsignal((int)si.ssi_signo),
                   p->nconns, p->nconns == 1 ? "" : "s");
            p->stop = true;
        }
    }
}

static void on_reset_timer(struct proxy *p)
{
    uint64_t ticks;
    if (read(p->reset_timer.fd, &ticks, sizeof ticks) < 0)
        return;
    conn_reset_all(p, "reset-every");
}

static void on_socket(struct proxy *p, struct endpoint *e, uint32_t events)
{
    struct conn *c = e->conn;
    if (c->dead)
        return;
    bool failed = events & (EPOLLERR | EPOLLHUP);
    if (events & EPOLLIN || failed)
        e->readable = true;
    if (events & EPOLLOUT || failed)
        e->writable = true;
    if (e->connecting) {
        if (!(events & EPOLLOUT) && !failed)
            return;
        conn_connected(p, c);
    }
    conn_pump(p, c);
}

static void run_queue(struct proxy *p)
{
    struct conn *c = p->runq;
    p->runq = NULL;
    while (c) {
        struct conn *next = c->run_next;
        c->queued = false;
        conn_pump(p, c);
        c = next;
    }
}

/* Frees pairs that ended in this iteration; those still on the run queue
 * wait for the next one, which takes them off it. */
static void reap(struct proxy *p)
{
    bool freed = false;
    struct conn **pp = &p->graveyard;
    while (*pp) {
        struct conn *c = *pp;
        if (c->queued) {
            pp = &c->next;
            continue;
        }
        *pp = c->next;
        free(c);
        freed = true;
    }
    if (freed && p->accept_stalled) {
        p->accept_stalled = false;
        accept_all(p);
    }
}

static int loop(struct proxy *p)
{
    struct epoll_event evs[64];
    while (!p->stop) {
        int n = epoll_wait(p->epfd, evs, 64, p->runq ? 0 : -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            logmsg("epoll_wait: %s", strerror(errno));
            return -1;
        }
        for (int i = 0; i < n; i++) {
            struct endpoint *e = evs[i].data.ptr;
            switch (e->kind) {
            case EP_LISTEN:
                if (e->fd >= 0)
                    accept_all(p);
                break;
            case EP_SIGNAL:
                on_signal(p);
                break;
            case EP_TIMER:
                on_timer(p);
                break;
            case EP_RESET_TIMER:
                on_reset_timer(p);
                break;
            case EP_SOCK:
                on_socket(p, e, evs[i].events);
                break;
            }
        }
        run_queue(p);
        reap(p);
        timer_arm(p);
    }
    return 0;
}

/* --- start-up --- */

static void usage(FILE *out)
{
    fprintf(out, "usage: tcpproxy --listen HOST:PORT --connect HOST:PORT [--delay-ms F]\n"
                 "                [--reset-every-ms N] [--control FILE] [--pidfile FILE]\n"
                 "  --delay-ms F        delay added in each direction (RTT grows by 2F)\n"
                 "  --reset-every-ms N  RST every live connection pair every N ms\n"
                 "  --control FILE      runtime state re-read on SIGHUP: pass | blackhole |\n"
                 "                      refuse, plus 'reset' and 'delay MS' lines\n"
                 "  --pidfile FILE      write the process id to FILE\n"
                 "Prints port=NNNN on stdout once listening.\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    char msg[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "tcpproxy: %s (see --help)\n", msg);
    return 2;
}

/* HOST:PORT or [V6]:PORT into a socket address; -1 with a message in err. */
static int parse_addr(const char *arg, bool listening, struct sockaddr_storage *ss, socklen_t *len,
                      char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(arg, ':');
    if (!colon || colon == arg || colon[1] == '\0') {
        snprintf(err, errlen, "'%s' is not HOST:PORT", arg);
        return -1;
    }
    size_t hlen = (size_t)(colon - arg);
    const char *h = arg;
    if (h[0] == '[' && colon[-1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof host) {
        snprintf(err, errlen, "'%s' is not HOST:PORT", arg);
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || colon[1] == '-' || colon[1] == '+' || port > 65535 ||
        (!listening && port == 0)) {
        snprintf(err, errlen, "bad port in '%s'", arg);
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int gai = getaddrinfo(host, colon + 1, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "'%s': %s", host, gai_strerror(gai));
        return -1;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    *len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int parse_ms(const char *s, unsigned long *out)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v == 0 || v > (unsigned long)MAX_DELAY_MS)
        return -1;
    *out = v;
    return 0;
}

static int write_pidfile(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0)
        return -1;
    return 0;
}

static int timerfd_new(struct proxy *p, struct endpoint *e, enum ep_kind kind)
{
    e->kind = kind;
    e->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (e->fd < 0)
        return -1;
    return epoll_add(p, e, EPOLLIN);
}

static void proxy_free(struct proxy *p)
{
    while (p->live)
        conn_end(p, p->live, false, "proxy exiting");
    reap(p);
    while (p->pool) {
        struct chunk *c = p->pool;
        p->pool = c->next;
        free(c);
    }
    free(p->heap.v);
    int fds[] = {p->listener.fd, p->sig.fd, p->timer.fd, p->reset_timer.fd, p->epfd};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"connect", required_argument, NULL, 'c'},
        {"delay-ms", required_argument, NULL, 'd'},
        {"reset-every-ms", required_argument, NULL, 'r'},
        {"control", required_argument, NULL, 'C'},
        {"pidfile", required_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct proxy px = {
        .epfd = -1,
        .listener = {.kind = EP_LISTEN, .fd = -1},
        .sig = {.kind = EP_SIGNAL, .fd = -1},
        .timer = {.kind = EP_TIMER, .fd = -1},
        .reset_timer = {.kind = EP_RESET_TIMER, .fd = -1},
    };
    struct proxy *p = &px;
    const char *listen_arg = NULL, *connect_arg = NULL, *pidfile = NULL;
    unsigned long reset_ms = 0;
    char err[300];
    int status = 1;
    bool pidfile_written = false;

    opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        switch (opt) {
        case 'l':
            listen_arg = optarg;
            break;
        case 'c':
            connect_arg = optarg;
            break;
        case 'd':
            if (parse_delay(optarg, &p->base_delay_ns) < 0)
                return usage_error("--delay-ms: '%s' is not a number of ms from 0 to %.0f", optarg,
                                   MAX_DELAY_MS);
            break;
        case 'r':
            if (parse_ms(optarg, &reset_ms) < 0)
                return usage_error("--reset-every-ms: '%s' is not a whole number of ms > 0",
                                   optarg);
            break;
        case 'C':
            p->control_path = optarg;
            break;
        case 'p':
            pidfile = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case ':':
            return usage_error("%s needs a value", argv[optind - 1]);
        default:
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (!listen_arg || !connect_arg)
        return usage_error("--listen and --connect are required");
    if (parse_addr(listen_arg, true, &p->listen_addr, &p->listen_len, err, sizeof err) < 0)
        return usage_error("--listen: %s", err);
    if (parse_addr(connect_arg, false, &p->upstream, &p->upstream_len, err, sizeof err) < 0)
        return usage_error("--connect: %s", err);
    addr_name(&p->upstream, p->upstream_len, p->upstream_name, sizeof p->upstream_name);
    p->delay_ns = p->base_delay_ns;

    struct control ctl = {.mode = MODE_PASS, .delay_ns = p->base_delay_ns};
    if (p->control_path && control_read(p, &ctl, err, sizeof err) < 0)
        return usage_error("--control %s: %s", p->control_path, err);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    /* Signals arrive through the loop instead, so no handler ever runs in
     * the middle of a queue update. A reader of stderr going away must not
     * take the proxy (and the test relying on it) down. */
    signal(SIGPIPE, SIG_IGN);
    if (sigprocmask(SIG_BLOCK, &mask, NULL) < 0) {
        fprintf(stderr, "tcpproxy: sigprocmask: %s\n", strerror(errno));
        goto out;
    }
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0) {
        fprintf(stderr, "tcpproxy: epoll_create1: %s\n", strerror(errno));
        goto out;
    }
    p->sig.fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (p->sig.fd < 0 || epoll_add(p, &p->sig, EPOLLIN) < 0) {
        fprintf(stderr, "tcpproxy: signalfd: %s\n", strerror(errno));
        goto out;
    }
    if (timerfd_new(p, &p->timer, EP_TIMER) < 0 ||
        (reset_ms && timerfd_new(p, &p->reset_timer, EP_RESET_TIMER) < 0)) {
        fprintf(stderr, "tcpproxy: timerfd: %s\n", strerror(errno));
        goto out;
    }
    if (reset_ms) {
        struct timespec every = {.tv_sec = (time_t)(reset_ms / 1000),
                                 .tv_nsec = (long)(reset_ms % 1000) * 1000000};
        struct itimerspec its = {.it_interval = every, .it_value = every};
        if (timerfd_settime(p->reset_timer.fd, 0, &its, NULL) < 0) {
            fprintf(stderr, "tcpproxy: timerfd_settime: %s\n", strerror(errno));
            goto out;
        }
    }
    /* Listen even when the control file says refuse: that is how the port
     * gets chosen; mode_set then closes it. */
    if (listener_open(p) < 0) {
        fprintf(stderr, "tcpproxy: listen on %s: %s\n", listen_arg, strerror(errno));
        goto out;
    }
    if (pidfile) {
        if (write_pidfile(pidfile) < 0) {
            fprintf(stderr, "tcpproxy: --pidfile %s: %s\n", pidfile, strerror(errno));
            goto out;
        }
        pidfile_written = true;
    }
    char lname[64];
    addr_name(&p->listen_addr, p->listen_len, lname, sizeof lname);
    printf("port=%u\n", ntohs(p->listen_addr.ss_family == AF_INET6
                                  ? ((struct sockaddr_in6 *)&p->listen_addr)->sin6_port
                                  : ((struct sockaddr_in *)&p->listen_addr)->sin_port));
    fflush(stdout);
    p->delay_ns = ctl.delay_ns;
    mode_set(p, ctl.mode);
    char resets[48] = "";
    if (reset_ms)
        snprintf(resets, sizeof resets, ", reset every %lu ms", reset_ms);
    logmsg("listening on %s, forwarding to %s; mode %s, delay %.3f ms each way%s", lname,
           p->upstream_name, mode_names[p->mode], (double)p->delay_ns / 1e6, resets);

    if (loop(p) == 0)
        status = 0;
out:
    if (pidfile_written)
        unlink(pidfile);
    proxy_free(p);
    return status;
}
