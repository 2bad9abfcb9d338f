/*
 * POSIX byte-range locks and flock, as NFSv4 locks so that they conflict
 * across every client of the server.
 *
 * The kernel hands lock handling entirely to us (FUSE_CAP_POSIX_LOCKS and
 * FLOCK_LOCKS) and keeps no record of its own, so it never unlocks on
 * close: flush drops the closing process's POSIX locks and release drops
 * whatever is left, before the open state goes away.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>

static bool to_nc_lock(const struct flock *fl, struct nc_lock *out)
{
    if (fl->l_start < 0)
        return false;
    out->type = fl->l_type == F_WRLCK ? NC_LOCK_WRITE : NC_LOCK_READ;
    out->start = (uint64_t)fl->l_start;
    /* libfuse gives l_len = 0 for "to the end" and a positive length otherwise. */
    out->len = fl->l_len > 0 ? (uint64_t)fl->l_len : 0;
    return true;
}

static void remember_owner(struct fs_file *file, uint64_t owner)
{
    for (unsigned i = 0; i < file->nlock_owners; i++)
        if (file->lock_owners[i] == owner)
            return;
    if (file->nlock_owners < sizeof(file->lock_owners) / sizeof(file->lock_owners[0]))
        file->lock_owners[file->nlock_owners++] = owner;
    else
        elog_warn(FS_COMPONENT, "too many lock owners on one open file; some locks will only "
                                "be released when the file is closed by all");
}

/* --- getlk --- */

struct getlk_ctx {
    fuse_req_t req;
    struct flock fl;
    struct fs_file *file;
    uint64_t owner;
    struct nc_lock nl;
    struct nc_cred cred;
};

static void getlk_done(void *arg, const struct nc_reply *r)
{
    struct getlk_ctx *ctx = arg;
    if (r->err == 0) {
        ctx->fl.l_type = F_UNLCK;
        fs_reply_lock(&ctx->req, &ctx->fl);
    } else if (r->err == -EAGAIN && r->has_lock_conflict) {
        ctx->fl.l_type = r->lock_conflict.type == NC_LOCK_WRITE ? F_WRLCK : F_RDLCK;
        ctx->fl.l_whence = SEEK_SET;
        ctx->fl.l_start = (off_t)r->lock_conflict.start;
        ctx->fl.l_len =
            r->lock_conflict.len > (uint64_t)LLONG_MAX ? 0 : (off_t)r->lock_conflict.len;
        ctx->fl.l_pid = 0; /* held by a process on another client, or unknown */
        fs_reply_lock(&ctx->req, &ctx->fl);
    } else {
        fs_reply_err(&ctx->req, r->err);
    }
    fs_req_assert_answered(ctx->req);
    free(ctx);
}

static void getlk_send(struct fs *fs, void *arg, int err)
{
    struct getlk_ctx *ctx = arg;
    if (err) {
        struct nc_reply failed = {.err = err};
        getlk_done(ctx, &failed);
        return;
    }
    nc_lock_test(fs->nc, &ctx->cred, ctx->file->open, ctx->owner, &ctx->nl, getlk_done, ctx);
}

void fs_op_getlk(fuse_req_t req, fuse_ino_t ino FS_UNUSED, struct fuse_file_info *fi,
                 struct flock *lock)
{
    struct fs *fs = fs_from_req(req);
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    struct nc_lock nl;
    if (!to_nc_lock(lock, &nl)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    struct getlk_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fs_req_hold(&ctx->req, req);
    ctx->fl = *lock;
    ctx->file = file;
    ctx->owner = fi->lock_owner;
    ctx->nl = nl;
    fs_req_cred(fs, req, &ctx->cred);
    fs_file_need_state(fs, file, getlk_send, ctx);
}

/* --- setlk / setlkw / flock --- */

/* flock owners: the open file, tagged so they never equal a POSIX owner
 * (the kernel's scrambled lock_owner) by accident of value. */
#define FLOCK_OWNER_TAG (1ull << 63)

/* A lock request; waiting ones are listed so that exit can cancel them. */
struct fs_lock_wait {
    fuse_req_t req;
    struct fs *fs;
    struct fs_file *file;
    uint64_t owner;
    short type;
    struct nc_lock nl;
    bool sleep;
    struct nc_cred cred;
    struct nc_lock_wait *wait; /* while nc_lock waits for the lock */
    struct fs_lock_wait *next;
    struct fs_lock_wait *prev;
};

static void wait_unlist(struct fs *fs, struct fs_lock_wait *ctx)
{
    if (!ctx->wait)
        return;
    if (ctx->prev)
        ctx->prev->next = ctx->next;
    else
        fs->lock_waits = ctx->next;
    if (ctx->next)
        ctx->next->prev = ctx->prev;
    ctx->wait = NULL;
}

static void setlk_done(void *arg, const struct nc_reply *r)
{
    struct fs_lock_wait *ctx = arg;
    int err = r->err;
    /* The kernel restarts a lock call that gets EINTR, which is right for
     * a signal but leaks ERESTARTSYS (512) when none is pending: a wait
     * cancelled because we are exiting fails as "no locks available". */
    if (err == -EINTR && ctx->fs->draining)
        err = -ENOLCK;
    wait_unlist(ctx->fs, ctx);
    fs_reply_err(&ctx->req, err);
    fs_req_assert_answered(ctx->req);
    free(ctx);
}

static void setlk_interrupted(fuse_req_t req FS_UNUSED, void *arg)
{
    struct fs_lock_wait *ctx = arg;
    /* setlk_done answers the request, with EINTR unless the lock got granted. */
    if (ctx->wait)
        nc_lock_cancel(ctx->fs->nc, ctx->wait);
}

void fs_locks_cancel_waits(struct fs *fs)
{
    /* Cancelling may answer (and free) the entry at once: take the next first. */
    for (struct fs_lock_wait *ctx = fs->lock_waits, *next; ctx; ctx = next) {
        next = ctx->next;
        nc_lock_cancel(fs->nc, ctx->wait);
    }
}

static void set_lock_send(struct fs *fs, void *arg, int err);

static void set_lock(fuse_req_t req, struct fs_file *file, uint64_t owner, short type,
                     const struct nc_lock *nl, bool wait)
{
    struct fs *fs = fs_from_req(req);
    if (type == F_WRLCK && !file->writable) {
        /* NFSv4 write locks need an open for writing (the server answers
         * OPENMODE); like the Linux NFS client, say so before asking. Tools
         * such as flock(1) then reopen read-write. */
        fuse_reply_err(req, EBADF);
        return;
    }
    struct fs_lock_wait *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fs_req_hold(&ctx->req, req);
    ctx->fs = fs;
    ctx->file = file;
    ctx->owner = owner;
    ctx->type = type;
    ctx->nl = *nl;
    ctx->sleep = wait;
    fs_req_cred(fs, req, &ctx->cred);
    fs_file_need_state(fs, file, set_lock_send, ctx);
}

static void set_lock_send(struct fs *fs, void *arg, int err)
{
    struct fs_lock_wait *ctx = arg;
    struct fs_file *file = ctx->file;
    if (err) {
        struct nc_reply failed = {.err = err};
        setlk_done(ctx, &failed);
        return;
    }
    if (ctx->type == F_UNLCK) {
        nc_unlock(fs->nc, &ctx->cred, file->open, ctx->owner, &ctx->nl, setlk_done, ctx);
        return;
    }
    remember_owner(file, ctx->owner);
    struct nc_lock_wait *w =
        nc_lock(fs->nc, &ctx->cred, file->open, ctx->owner, &ctx->nl, ctx->sleep, setlk_done, ctx);
    if (!ctx->sleep || !w)
        return;
    ctx->wait = w;
    ctx->next = fs->lock_waits;
    if (ctx->next)
        ctx->next->prev = ctx;
    fs->lock_waits = ctx;
    /* May call setlk_interrupted at once if the caller was already interrupted. */
    fuse_req_interrupt_func(ctx->req, setlk_interrupted, ctx);
}

void fs_op_setlk(fuse_req_t req, fuse_ino_t ino FS_UNUSED, struct fuse_file_info *fi,
                 struct flock *lock, int sleep)
{
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    struct nc_lock nl;
    if (!to_nc_lock(lock, &nl)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    set_lock(req, file, fi->lock_owner, lock->l_type, &nl, sleep != 0);
}

void fs_op_flock(fuse_req_t req, fuse_ino_t ino FS_UNUSED, struct fuse_file_info *fi, int op)
{
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    struct nc_lock whole = {.type = NC_LOCK_WRITE, .start = 0, .len = 0};
    short type;
    switch (op & (LOCK_SH | LOCK_EX | LOCK_UN)) {
    case LOCK_SH:
        type = F_RDLCK;
        whole.type = NC_LOCK_READ;
        break;
    case LOCK_EX:
        type = F_WRLCK;
        break;
    case LOCK_UN:
        type = F_UNLCK;
        break;
    default:
        fuse_reply_err(req, EINVAL);
        return;
    }
    /* flock locks belong to the open file description, which is our file. */
    uint64_t owner = (uint64_t)(uintptr_t)file | FLOCK_OWNER_TAG;
    set_lock(req, file, owner, type, &whole, !(op & LOCK_NB));
}

/* --- releasing on close --- */

struct release_ctx {
    struct fs *fs;
    unsigned pending;
    void (*done)(struct fs *, void *);
    void *arg;
};

static void release_one_done(void *arg, const struct nc_reply *r)
{
    struct release_ctx *ctx = arg;
    if (r->err && r->err != -ECANCELED)
        elog_warn(FS_COMPONENT, "unlocking on close failed: %s", strerror(-r->err));
    if (--ctx->pending == 0) {
        ctx->done(ctx->fs, ctx->arg);
        free(ctx);
    }
}

static bool has_owner(const struct fs_file *file, uint64_t owner)
{
    for (unsigned i = 0; i < file->nlock_owners; i++)
        if (file->lock_owners[i] == owner)
            return true;
    return false;
}

static struct release_ctx *release_ctx_new(struct fs *fs, void (*done)(struct fs *, void *),
                                           void *arg)
{
    struct release_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->fs = fs;
    ctx->done = done;
    ctx->arg = arg;
    /* One share of our own, so that done runs once, after the last unlock. */
    ctx->pending = 1;
    return ctx;
}

static void release_unlock(struct release_ctx *ctx, struct fs_file *file, uint64_t owner)
{
    struct nc_lock whole = {.type = NC_LOCK_WRITE, .start = 0, .len = 0};
    ctx->pending++;
    nc_unlock(ctx->fs->nc, &file->cred, file->open, owner, &whole, release_one_done, ctx);
}

static void release_ctx_start(struct release_ctx *ctx)
{
    struct nc_reply none = {0};
    release_one_done(ctx, &none); /* drops our own share */
}

void fs_locks_release_owner(struct fs *fs, struct fs_file *file, uint64_t owner,
                            void (*done)(struct fs *, void *), void *arg)
{
    /* POSIX: the process loses its locks on the file whichever of its
     * descriptors it closes, also those taken through another open. The
     * owner stays listed: it may lock again through these files. */
    struct release_ctx *ctx = NULL;
    for (struct fs_file *f = fs->files; f; f = f->next) {
        if (f->inode != file->inode || !has_owner(f, owner))
            continue;
        if (!ctx && !(ctx = release_ctx_new(fs, done, arg)))
            break;
        release_unlock(ctx, f, owner);
    }
    if (ctx)
        release_ctx_start(ctx);
    else
        done(fs, arg); /* the common case: no locks */
}

void fs_locks_release_all(struct fs *fs, struct fs_file *file, void (*done)(struct fs *, void *),
                          void *arg)
{
    struct release_ctx *ctx = release_ctx_new(fs, done, arg);
    if (!ctx) {
        done(fs, arg);
        return;
    }
    for (unsigned i = 0; i < file->nlock_owners; i++)
        release_unlock(ctx, file, file->lock_owners[i]);
    release_ctx_start(ctx);
}
