/*
 * Write-behind, and keeping written data until the server has it on disk.
 *
 * A write keeps the buffer its FUSE request was read into when it fills
 * most of it, or is copied once out of it otherwise, and is answered
 * to the kernel as soon as its WRITE (UNSTABLE) is queued, as long as the
 * bytes and WRITEs in flight and the data not yet committed for the whole
 * mount stay under their bounds; past them, answers wait (held replies),
 * which throttles the writers. nc_write() sends from that memory, which stays
 * valid until its callback (nfsclient may re-issue the WRITE from it).
 *
 * Retention: an UNSTABLE WRITE's data may be lost if the server restarts
 * before a COMMIT; the server tells by changing its write verifier. So every
 * write stays on its inode's retained list, in arrival order, until a COMMIT
 * answered with the verifier its WRITE got (as the Linux client keeps its
 * commit list of pages). A verifier that differs -- a WRITE answered with
 * another one than earlier writes, or a COMMIT with another one than the
 * WRITEs -- marks the inode stale: once nothing of it is on the wire, every
 * retained write from the first one with an old verifier on is sent again
 * in arrival order (later ones too, since a re-sent write would otherwise
 * overwrite a later overlapping one), then COMMITted, until the verifiers
 * agree. fs_inode_commit() (flush, fsync, release, exit) waits for exactly
 * that, for the writes accepted before it was called.
 *
 * Memory: the mount retains at most retained_limit bytes (max_uncommitted).
 * Past half of it the inode holding most is COMMITted in the background
 * while writes go on; at the limit write answers are held until a COMMIT
 * frees memory.
 *
 * Errors: one that comes back after write() returned is kept on the open
 * file and returned by its next write, flush (close) or fsync, then cleared
 * (as sshfs does). A re-send or COMMIT that fails (soft timeout, an open
 * state the server forgot, ...) drops the writes it concerned and becomes
 * the error of every file open for writing on the inode: lost, but never
 * silently.
 *
 * Order: the server may run the WRITEs it has in any order, so a write that
 * overlaps one still in flight on the same file is held back until that one
 * is answered; held writes go out in arrival order.
 *
 * O_APPEND: the kernel sends the offset of its own idea of the end of the
 * file (i_size, which getattr keeps up to date and write-behind extends).
 * We trust it: appends from several clients to one file are not atomic over
 * NFS anyway, and within this client the kernel orders them.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

enum write_state {
    W_HELD,     /* waiting for an overlapping write to be answered */
    W_SENT,     /* on the wire */
    W_UNSTABLE, /* answered UNSTABLE: waits for a COMMIT with its verifier */
};

struct fs_write {
    struct fs_write *next; /* the inode's retained list, in arrival order */
    struct fs_write *prev;
    struct fs_write *qnext; /* the inode's sent list or held queue */
    struct fs_write *qprev; /* sent list only */
    struct fs *fs;
    struct fs_inode *inode;
    /* Written through; it stays open while the write is retained, because
     * its flush and release wait for every write accepted before them. */
    struct fs_file *file;
    struct fs_file *sender; /* the open it is (to be) sent through */
    uint64_t seq;
    uint64_t offset;
    uint32_t size;
    enum write_state state;
    bool resend; /* an error is then every writer's, not file's alone */
    uint64_t verifier;
    uint64_t gen; /* inode->unstable_gen when answered */
    char *data;
    /* What data lies in and is freed with: a copy, or the buffer the FUSE
     * request was read into (fs_request_buf_take). */
    char *block;
};

struct fs_commit_waiter {
    struct fs_commit_waiter *next;
    uint64_t watermark; /* satisfied when no retained write has a lower seq */
    void (*fn)(struct fs *fs, void *arg);
    void *arg;
};

struct commit_ctx {
    struct fs *fs;
    struct fs_inode *inode;
    struct fs_file *sender;
    uint64_t gen;   /* writes answered up to this are covered */
    uint64_t stamp; /* fs_attr_stamp() when sent */
};

static void commit_run(struct fs *fs, struct fs_inode *inode);
static void maybe_pressure(struct fs *fs);

/* --- the files a write goes through --- */

static void file_use(struct fs_file *file)
{
    file->users++;
}

static void file_unuse(struct fs *fs, struct fs_file *file)
{
    if (--file->users > 0 || !file->on_unused)
        return;
    void (*fn)(struct fs *, void *) = file->on_unused;
    file->on_unused = NULL;
    fn(fs, file->on_unused_arg);
}

void fs_file_when_unused(struct fs *fs, struct fs_file *file, void (*fn)(struct fs *, void *),
                         void *arg)
{
    if (file->users == 0) {
        fn(fs, arg);
        return;
    }
    file->on_unused = fn;
    file->on_unused_arg = arg;
}

/*
 * The open that re-sends and COMMITs go through: the newest open for
 * writing of the inode that is not being released. Any of them lets this
 * client write the file; after a server restart whose open states were not
 * recovered, only opens made since are valid, and the newest is the
 * likeliest to be.
 */
static struct fs_file *pick_sender(struct fs *fs, struct fs_inode *inode, struct fs_file *fallback)
{
    struct fs_file *releasing = NULL;
    for (struct fs_file *f = fs->files; f; f = f->next) {
        if (f->inode != inode || !f->writable)
            continue;
        if (!f->releasing)
            return f;
        if (!releasing)
            releasing = f;
    }
    return releasing ? releasing : fallback;
}

/* A write accepted long ago is lost: every writer of the file hears of it.
 * Logged once per error reported, not once per write. */
static void files_error(struct fs *fs, struct fs_inode *inode, int err, const char *what)
{
    bool told = false;
    for (struct fs_file *f = fs->files; f; f = f->next) {
        if (f->inode == inode && f->writable && !f->error) {
            f->error = err;
            told = true;
        }
    }
    if (told)
        elog_error(FS_COMPONENT, "%s failed: %s; written data may be lost", what, strerror(-err));
}

/* --- the retained list --- */

static void pressure_clear(struct fs *fs, struct fs_inode *inode)
{
    inode->pressure = false;
    if (fs->pressure_inode == inode)
        fs->pressure_inode = NULL;
}

static void retain(struct fs *fs, struct fs_write *w)
{
    struct fs_inode *inode = w->inode;
    if (!inode->retained_head) {
        inode->dirty_prev = NULL;
        inode->dirty_next = fs->dirty_inodes;
        if (fs->dirty_inodes)
            fs->dirty_inodes->dirty_prev = inode;
        fs->dirty_inodes = inode;
    }
    w->seq = inode->next_seq++;
    inode->data_version++;
    w->next = NULL;
    w->prev = inode->retained_tail;
    if (inode->retained_tail)
        inode->retained_tail->next = w;
    else
        inode->retained_head = w;
    inode->retained_tail = w;
    inode->retained_bytes += w->size;
    fs->retained_bytes += w->size;
}

/* Drops a write that is neither held nor in flight. */
static void write_free(struct fs *fs, struct fs_write *w)
{
    struct fs_inode *inode = w->inode;
    if (w->state == W_UNSTABLE)
        inode->unstable_bytes -= w->size;
    if (w->prev)
        w->prev->next = w->next;
    else
        inode->retained_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        inode->retained_tail = w->prev;
    inode->retained_bytes -= w->size;
    fs->retained_bytes -= w->size;
    if (!inode->retained_head) {
        if (inode->dirty_prev)
            inode->dirty_prev->dirty_next = inode->dirty_next;
        else
            fs->dirty_inodes = inode->dirty_next;
        if (inode->dirty_next)
            inode->dirty_next->dirty_prev = inode->dirty_prev;
        inode->dirty_next = inode->dirty_prev = NULL;
        pressure_clear(fs, inode);
    }
    free(w->block);
    free(w);
}

/* Shrinks an answered write to its first size bytes. */
static void write_clip(struct fs *fs, struct fs_write *w, uint32_t size)
{
    uint32_t cut = w->size - size;
    w->size = size;
    w->inode->unstable_bytes -= cut;
    w->inode->retained_bytes -= cut;
    fs->retained_bytes -= cut;
}

/* --- sending --- */

static bool overlaps_sent(const struct fs_inode *inode, const struct fs_write *w)
{
    for (const struct fs_write *s = inode->writes_sent; s; s = s->qnext)
        if (w->offset < s->offset + s->size && s->offset < w->offset + w->size)
            return true;
    return false;
}

static uint64_t sent_bytes(const struct fs_inode *inode)
{
    uint64_t n = 0;
    for (const struct fs_write *s = inode->writes_sent; s; s = s->qnext)
        n += s->size;
    return n;
}

static void write_done(void *arg, const struct nc_reply *r);

static void send_write(struct fs_write *w)
{
    struct fs_inode *inode = w->inode;
    w->state = W_SENT;
    w->qprev = NULL;
    w->qnext = inode->writes_sent;
    if (w->qnext)
        w->qnext->qprev = w;
    inode->writes_sent = w;
    nc_write(w->fs->nc, &w->sender->cred, w->sender->open, w->offset, w->data, w->size, false,
             write_done, w);
}

static void unlink_sent(struct fs_inode *inode, struct fs_write *w)
{
    if (w->qprev)
        w->qprev->qnext = w->qnext;
    else
        inode->writes_sent = w->qnext;
    if (w->qnext)
        w->qnext->qprev = w->qprev;
    w->qnext = w->qprev = NULL;
}

/*
 * Sends held writes that no longer overlap anything in flight, in order.
 * Re-sends go out at most write_bytes_limit at a time per file: they are
 * already in memory, but nfsclient encodes a copy of each one it queues.
 */
static void send_held(struct fs *fs, struct fs_inode *inode)
{
    uint64_t on_wire =
        inode->writes_held_head && inode->writes_held_head->resend ? sent_bytes(inode) : 0;
    while (inode->writes_held_head && !overlaps_sent(inode, inode->writes_held_head)) {
        struct fs_write *w = inode->writes_held_head;
        if (w->resend && on_wire >= fs->write_bytes_limit)
            break;
        on_wire += w->size;
        inode->writes_held_head = w->qnext;
        if (!inode->writes_held_head)
            inode->writes_held_tail = NULL;
        send_write(w);
    }
}

static bool under_bounds(const struct fs *fs)
{
    return fs->write_bytes < fs->write_bytes_limit && fs->write_count < fs->write_count_limit &&
           fs->retained_bytes < fs->retained_limit;
}

void fs_writes_release_held(struct fs *fs, bool all)
{
    while (fs->held_head && (all || under_bounds(fs))) {
        struct fs_held_reply *h = fs->held_head;
        fs->held_head = h->next;
        if (!fs->held_head)
            fs->held_tail = NULL;
        /* An error that came back meanwhile is this write's too (it stays
         * pending for flush/fsync: see fs_op_write). */
        int err = h->file->error;
        if (err)
            fs_reply_err(&h->req, err);
        else
            fs_reply_write(&h->req, h->size);
        free(h);
    }
}

static void write_done(void *arg, const struct nc_reply *r)
{
    struct fs_write *w = arg;
    struct fs *fs = w->fs;
    struct fs_inode *inode = w->inode;
    struct fs_file *sender = w->sender;
    fs_inode_ref(inode);
    int err = r->err;
    if (!err && r->written < w->size) {
        /* A short UNSTABLE write means the server is out of something; the
         * kernel was told it all went, so the rest cannot be retried from here. */
        elog_warn(FS_COMPONENT, "server wrote %u of %u bytes", r->written, w->size);
        err = -EIO;
    }
    unlink_sent(inode, w);
    w->sender = NULL;
    fs->write_bytes -= w->size;
    fs->write_count--;
    inode->writes_in_flight--;
    if (err) {
        if (w->resend)
            files_error(fs, inode, err, "sending a write again");
        else if (!w->file->error) {
            w->file->error = err;
        }
        w->state = W_HELD; /* neither answered nor on the wire */
        write_free(fs, w);
    } else if (r->stable) {
        w->state = W_HELD;
        write_free(fs, w);
    } else {
        if (inode->has_verifier && inode->verifier != r->verifier) {
            elog_warn(FS_COMPONENT, "the server's write verifier changed (it restarted): "
                                    "writes it may have lost will be sent again");
            inode->stale = true;
        }
        inode->verifier = r->verifier;
        inode->has_verifier = true;
        w->state = W_UNSTABLE;
        w->verifier = r->verifier;
        w->gen = ++inode->unstable_gen;
        inode->unstable_bytes += w->size;
    }
    /* The server's mtime and size moved: attributes from requests sent
     * before now are outdated, and the next getattr asks the server. */
    fs_inode_attr_stale(fs, inode);
    send_held(fs, inode);
    commit_run(fs, inode);
    maybe_pressure(fs);
    fs_writes_release_held(fs, fs->draining);
    fs_inode_writes_done(fs, inode);
    file_unuse(fs, sender);
    fs_inode_unref(fs, inode);
}

/* --- COMMIT and re-send --- */

/* Every retained write from the first one with an old verifier on goes
 * out again, in order; nothing of the inode is on the wire. False when none
 * had an old verifier (e.g. the server restarted after the last COMMIT, and
 * only the writes since, with the new verifier, are retained). */
static bool resend_round(struct fs *fs, struct fs_inode *inode)
{
    inode->stale = false;
    struct fs_write *first = inode->retained_head;
    while (first && (first->state != W_UNSTABLE || first->verifier == inode->verifier))
        first = first->next;
    if (!first)
        return false;
    struct fs_file *sender = pick_sender(fs, inode, first->file);
    struct fs_write *head = NULL;
    struct fs_write *tail = NULL;
    uint64_t bytes = 0;
    for (struct fs_write *w = first; w; w = w->next) {
        if (w->state != W_UNSTABLE)
            continue;
        inode->unstable_bytes -= w->size;
        w->state = W_HELD;
        w->resend = true;
        w->sender = sender;
        file_use(sender);
        fs->write_bytes += w->size;
        fs->write_count++;
        inode->writes_in_flight++;
        bytes += w->size;
        w->qnext = NULL;
        if (tail)
            tail->qnext = w;
        else
            head = w;
        tail = w;
    }
    elog_warn(FS_COMPONENT, "sending %" PRIu64 " bytes again that the server may have lost", bytes);
    /* Ahead of anything held: they were accepted first. */
    tail->qnext = inode->writes_held_head;
    if (!inode->writes_held_tail)
        inode->writes_held_tail = tail;
    inode->writes_held_head = head;
    send_held(fs, inode);
    return true;
}

static void commit_done(void *arg, const struct nc_reply *r)
{
    struct commit_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    struct fs_inode *inode = ctx->inode;
    inode->committing = false;
    if (r->err) {
        files_error(fs, inode, r->err, "COMMIT");
        /* Nothing tells whether they reached the disk: they are reported lost. */
        for (struct fs_write *w = inode->retained_head, *next; w; w = next) {
            next = w->next;
            if (w->state == W_UNSTABLE && w->gen <= ctx->gen)
                write_free(fs, w);
        }
    } else {
        if (r->has_attr)
            fs_inode_set_attr(fs, inode, &r->attr, ctx->stamp);
        if (inode->has_verifier && inode->verifier != r->verifier)
            elog_warn(FS_COMPONENT, "COMMIT verifier differs from the WRITEs' (the server "
                                    "restarted): writes it may have lost will be sent again");
        inode->verifier = r->verifier;
        inode->has_verifier = true;
        for (struct fs_write *w = inode->retained_head, *next; w; w = next) {
            next = w->next;
            if (w->state != W_UNSTABLE)
                continue;
            if (w->verifier != r->verifier)
                inode->stale = true;
            else if (w->gen <= ctx->gen)
                write_free(fs, w);
        }
    }
    pressure_clear(fs, inode);
    commit_run(fs, inode);
    maybe_pressure(fs);
    fs_writes_release_held(fs, fs->draining);
    file_unuse(fs, ctx->sender);
    fs_inode_unref(fs, inode);
    fs->background--;
    free(ctx);
}

static void commit_send(struct fs *fs, struct fs_inode *inode)
{
    struct commit_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        /* Waiting could last forever; the data may be lost: say so. */
        files_error(fs, inode, -ENOMEM, "allocating a COMMIT");
        for (struct fs_write *w = inode->retained_head, *next; w; w = next) {
            next = w->next;
            if (w->state == W_UNSTABLE)
                write_free(fs, w);
        }
        return;
    }
    ctx->fs = fs;
    ctx->inode = inode;
    fs_inode_ref(inode);
    ctx->sender = pick_sender(fs, inode, inode->retained_head->file);
    file_use(ctx->sender);
    ctx->gen = inode->unstable_gen;
    ctx->stamp = fs_attr_stamp(fs);
    inode->committing = true;
    fs->background++; /* exit waits for it: the callback needs fs */
    nc_commit(fs->nc, &ctx->sender->cred, ctx->sender->open, commit_done, ctx);
}

/* Whether a COMMIT now would let a waiter (or the mount's bound) go on. */
static bool commit_useful(const struct fs_inode *inode)
{
    if (!inode->unstable_bytes)
        return false;
    if (inode->pressure)
        return true;
    uint64_t mark = 0;
    for (const struct fs_commit_waiter *c = inode->commit_waiters; c; c = c->next)
        if (c->watermark > mark)
            mark = c->watermark;
    /* Wait until every write a waiter needs is answered: one COMMIT then
     * covers them all. */
    bool any = false;
    for (const struct fs_write *w = inode->retained_head; w && w->seq < mark; w = w->next) {
        if (w->state != W_UNSTABLE)
            return false;
        any = true;
    }
    return any;
}

/* The engine: answers satisfied waiters, re-sends, COMMITs. */
static void commit_run(struct fs *fs, struct fs_inode *inode)
{
    if (inode->committing)
        return;
    fs_inode_ref(inode);
    uint64_t oldest = inode->retained_head ? inode->retained_head->seq : inode->next_seq;
    struct fs_commit_waiter *done = NULL;
    struct fs_commit_waiter **done_tail = &done;
    for (struct fs_commit_waiter **pp = &inode->commit_waiters; *pp;) {
        struct fs_commit_waiter *c = *pp;
        if (c->watermark <= oldest) {
            *pp = c->next;
            c->next = NULL;
            *done_tail = c;
            done_tail = &c->next;
        } else {
            pp = &c->next;
        }
    }
    if (inode->pressure && !inode->unstable_bytes && !inode->writes_in_flight)
        pressure_clear(fs, inode);
    if (inode->commit_waiters || inode->pressure) {
        bool resent = false;
        /* Ordering: re-sent writes must not race ones on the wire, nor a
         * truncate that would cut what they wrote; their replies come back
         * here. */
        if (inode->stale && !inode->writes_sent && !inode->size_changes)
            resent = resend_round(fs, inode);
        if (!inode->stale && !resent && commit_useful(inode))
            commit_send(fs, inode);
    }
    while (done) {
        struct fs_commit_waiter *c = done;
        done = c->next;
        c->fn(fs, c->arg);
        free(c);
    }
    fs_inode_unref(fs, inode);
}

/* Past half the bound, COMMIT the inode that holds most, in the background. */
static void maybe_pressure(struct fs *fs)
{
    if (fs->pressure_inode || fs->retained_bytes < fs->retained_limit / 2)
        return;
    struct fs_inode *best = NULL;
    for (struct fs_inode *i = fs->dirty_inodes; i; i = i->dirty_next)
        if (!best || i->retained_bytes > best->retained_bytes)
            best = i;
    if (!best)
        return;
    fs->pressure_inode = best;
    best->pressure = true;
    commit_run(fs, best);
}

void fs_inode_commit(struct fs *fs, struct fs_inode *inode, void (*fn)(struct fs *, void *),
                     void *arg)
{
    if (!inode->retained_head) {
        fn(fs, arg);
        return;
    }
    struct fs_commit_waiter *c = calloc(1, sizeof(*c));
    if (!c) {
        files_error(fs, inode, -ENOMEM, "waiting for a COMMIT");
        fn(fs, arg);
        return;
    }
    c->watermark = inode->next_seq;
    c->fn = fn;
    c->arg = arg;
    c->next = inode->commit_waiters;
    inode->commit_waiters = c;
    commit_run(fs, inode);
}

uint64_t fs_inode_write_seq(const struct fs_inode *inode)
{
    return inode->next_seq;
}

void fs_writes_size_change_start(struct fs_inode *inode)
{
    inode->size_changes++;
    inode->data_version++;
}

void fs_writes_size_change_done(struct fs *fs, struct fs_inode *inode, bool ok, uint64_t size,
                                uint64_t watermark)
{
    inode->size_changes--;
    if (ok) {
        /* Sent again after the truncate, bytes past it would come back. */
        for (struct fs_write *w = inode->retained_head, *next; w && w->seq < watermark; w = next) {
            next = w->next;
            if (w->state != W_UNSTABLE || w->offset + w->size <= size)
                continue;
            if (w->offset >= size)
                write_free(fs, w);
            else
                write_clip(fs, w, (uint32_t)(size - w->offset));
        }
    }
    commit_run(fs, inode);
    fs_writes_release_held(fs, fs->draining);
}

void fs_writes_free(struct fs *fs)
{
    while (fs->dirty_inodes) {
        struct fs_inode *inode = fs->dirty_inodes;
        /* Nothing is on the wire any more: all are answered or abandoned. */
        for (struct fs_write *w = inode->retained_head; w; w = w->next)
            if (w->state != W_UNSTABLE)
                w->state = W_HELD;
        inode->writes_sent = NULL;
        inode->writes_held_head = inode->writes_held_tail = NULL;
        while (inode->retained_head)
            write_free(fs, inode->retained_head);
    }
}

/* --- write --- */

/* Accounts a write to the mount's bounds and the inode's size and idleness.
 * One that is a whole FUSE request (whole) may keep the request's buffer
 * instead of a copy: that memcpy was 14 % of efsfuse's perf samples in a
 * 1 GiB sequential write. */
static struct fs_write *write_new(struct fs *fs, struct fs_file *file, uint64_t offset,
                                  const char *data, uint32_t size, bool whole)
{
    struct fs_write *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->block = whole ? fs_request_buf_take(fs, data, size) : NULL;
    if (w->block) {
        w->data = w->block + (data - w->block);
    } else {
        w->block = malloc(size);
        if (!w->block) {
            free(w);
            return NULL;
        }
        memcpy(w->block, data, size);
        w->data = w->block;
    }
    w->fs = fs;
    w->inode = file->inode;
    w->file = file;
    w->sender = file;
    file_use(file);
    w->offset = offset;
    w->size = size;
    w->state = W_HELD;
    struct fs_inode *inode = file->inode;
    fs->write_bytes += size;
    fs->write_count++;
    inode->writes_in_flight++;
    if (offset + size > inode->write_end)
        inode->write_end = offset + size;
    retain(fs, w);
    return w;
}

/* Queues or sends one piece; false when memory ran out (nothing was done). */
static bool start_write(struct fs *fs, struct fs_file *file, uint64_t offset, const char *data,
                        uint32_t size, bool whole)
{
    struct fs_inode *inode = file->inode;
    struct fs_write *w = write_new(fs, file, offset, data, size, whole);
    if (!w)
        return false;
    if (!inode->writes_held_head && !overlaps_sent(inode, w)) {
        send_write(w);
        return true;
    }
    w->qnext = NULL;
    if (inode->writes_held_tail)
        inode->writes_held_tail->qnext = w;
    else
        inode->writes_held_head = w;
    inode->writes_held_tail = w;
    return true;
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino FS_UNUSED, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    if (file->error) {
        /* Fail fast, but keep the error for flush/fsync: the kernel splits a
         * write() into several requests (an unaligned 1 MiB buffer spans 257
         * pages) and turns an error on a later piece into a short count, so
         * only close or fsync is sure to report it. */
        fuse_reply_err(req, -file->error);
        return;
    }
    uint32_t max = nc_client_max_write(fs->nc);
    size_t done = 0;
    while (done < size) {
        uint32_t n = size - done > max ? max : (uint32_t)(size - done);
        if (!start_write(fs, file, (uint64_t)off + done, buf + done, n, n == size))
            break;
        done += n;
    }
    if (done == 0) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    maybe_pressure(fs);
    /* On a short count write() returns what went, as with any short write. */
    if (under_bounds(fs) && !fs->held_head) {
        fuse_reply_write(req, done);
        return;
    }
    struct fs_held_reply *h = calloc(1, sizeof(*h));
    if (!h) {
        fuse_reply_write(req, done); /* over the bound rather than failing a sent write */
        return;
    }
    fs_req_hold(&h->req, req);
    h->file = file;
    h->size = done;
    if (fs->held_tail)
        fs->held_tail->next = h;
    else
        fs->held_head = h;
    fs->held_tail = h;
}
