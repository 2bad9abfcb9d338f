/*
 * Open files: open and create, flush, fsync, release.
 *
 * Close-to-open consistency: every open sends an NFS OPEN, whose compound
 * also returns fresh attributes; the kernel keeps its cached pages only if
 * the file's change attribute, size and mtime are what we last saw, and a
 * flush (close) does not return before the file's writes are on the server
 * and committed. flush and fsync wait until every write the file (any of
 * its descriptors) accepted before them is committed under the verifier its
 * WRITE got -- write.c re-sends what a restarted server lost, as often as
 * needed -- and return the first error since the last report. release does
 * the same in the background (nobody waits for its answer), then releases
 * the locks taken through the file and CLOSEs it once no re-send or COMMIT
 * of another descriptor goes through its open.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

/* --- open / create --- */

struct open_ctx {
    fuse_req_t req;
    struct fs *fs;
    struct fs_inode *inode; /* open: the file; create: the directory */
    struct fs_inode *dir;   /* the directory of the name the OPEN went to */
    char *name;
    struct fuse_file_info fi;
    struct nc_cred cred;
    uint32_t flags; /* NC_OPEN_* */
    uint32_t mode;
    bool create;
    bool snapshot; /* read whole without open state (nc_snapshot) */
    bool had_attr;
    struct nc_attr before;
    unsigned tries;
    uint64_t stamp;        /* fs_attr_stamp() when the OPEN left */
    uint64_t data_version; /* the inode's when the OPEN left */
};

static struct fs_file *file_new(struct fs *fs, struct fs_inode *inode, struct nc_open *open,
                                const struct nc_cred *cred, int flags)
{
    struct fs_file *file = calloc(1, sizeof(*file));
    if (!file)
        return NULL;
    file->inode = inode;
    fs_inode_ref(inode);
    file->open = open;
    file->cred = *cred;
    file->writable = (flags & O_ACCMODE) != O_RDONLY;
    file->next = fs->files;
    if (fs->files)
        fs->files->prev = file;
    fs->files = file;
    return file;
}

static void file_free(struct fs *fs, struct fs_file *file)
{
    if (file->prev)
        file->prev->next = file->next;
    else
        fs->files = file->next;
    if (file->next)
        file->next->prev = file->prev;
    fs_file_drop_prefetch(fs, file);
    fs_inode_unref(fs, file->inode);
    free(file);
}

void fs_file_drop_prefetch(struct fs *fs, struct fs_file *file)
{
    if (file->snapshot)
        fs->snapshot_bytes -= file->prefetch_len;
    free(file->prefetch);
    file->prefetch = NULL;
    file->has_prefetch = false;
    file->snapshot = false;
}

static uint32_t open_flags(int flags)
{
    uint32_t f;
    switch (flags & O_ACCMODE) {
    case O_RDONLY:
        f = NC_OPEN_READ;
        break;
    case O_WRONLY:
        f = NC_OPEN_WRITE;
        break;
    default:
        f = NC_OPEN_READ | NC_OPEN_WRITE;
        break;
    }
    if ((flags & O_TRUNC) && (f & NC_OPEN_WRITE))
        f |= NC_OPEN_TRUNC;
    return f;
}

static bool same_version(const struct nc_attr *a, const struct nc_attr *b)
{
    return a->change == b->change && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
           a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static void open_ctx_free(struct open_ctx *ctx)
{
    fs_req_assert_answered(ctx->req);
    if (ctx->dir)
        fs_inode_unref(ctx->fs, ctx->dir);
    fs_inode_unref(ctx->fs, ctx->inode);
    free(ctx->name);
    free(ctx);
}

/*
 * Small files opened for reading are read along with the OPEN: the kernel's
 * first read of them follows at once, and answering it from memory saves a
 * round trip per file (what parallel small-file reads are made of). Only
 * while no write of ours is on its way, which the server would not show.
 */
static bool want_prefetch(const struct fs_inode *inode, int flags)
{
    return (flags & O_ACCMODE) == O_RDONLY && inode->has_attr && S_ISREG(inode->attr.mode) &&
           inode->attr.size <= NC_OPEN_PREFETCH_MAX && !inode->writes_in_flight &&
           !inode->size_changes;
}

/*
 * A small file opened for reading needs no open state at all when it fits
 * in one READ: nc_snapshot reads it whole (checking access as the OPEN
 * would) and the file keeps the content for as long as it is open, so that
 * it stays readable whatever happens to it on the server, as open state
 * would have guaranteed. That saves the OPEN and the CLOSE, two of the
 * three requests such a file costs and the server's heaviest. Not for
 * O_DIRECT, whose readers expect each read to ask the server; and within a
 * memory budget, beyond which files are opened with open state.
 */
#define FS_SNAPSHOT_BUDGET (16u << 20)

static bool want_snapshot(const struct fs *fs, const struct fs_inode *inode, int flags)
{
    return want_prefetch(inode, flags) && !(flags & O_DIRECT) &&
           fs->snapshot_bytes + NC_OPEN_PREFETCH_MAX <= FS_SNAPSHOT_BUDGET;
}

static void open_done(void *arg, const struct nc_reply *r);

/* Opens the file by the latest name we know it under. */
static void open_send(struct open_ctx *ctx)
{
    struct fs *fs = ctx->fs;
    struct fs_name *n = ctx->inode->names;
    if (!n) {
        /* ESTALE makes the kernel look the path up again, which names it. */
        fs_reply_err(&ctx->req, -ESTALE);
        open_ctx_free(ctx);
        return;
    }
    char *name = strdup(n->name);
    if (!name) {
        fs_reply_err(&ctx->req, -ENOMEM);
        open_ctx_free(ctx);
        return;
    }
    if (ctx->dir)
        fs_inode_unref(fs, ctx->dir);
    free(ctx->name);
    ctx->dir = n->dir;
    fs_inode_ref(ctx->dir);
    ctx->name = name;
    ctx->tries++;
    ctx->stamp = fs_attr_stamp(fs);
    ctx->data_version = ctx->inode->data_version;
    if (want_prefetch(ctx->inode, ctx->fi.flags))
        ctx->flags |= NC_OPEN_PREFETCH;
    else
        ctx->flags &= ~(uint32_t)NC_OPEN_PREFETCH;
    nc_open(fs->nc, &ctx->cred, &ctx->dir->fh, ctx->name, &ctx->inode->fh, ctx->flags, 0, open_done,
            ctx);
}

/* The name did not lead to the file: forget it, and try another if any. */
static bool open_retry(struct open_ctx *ctx)
{
    struct fs *fs = ctx->fs;
    if (fs_name_lookup(fs, ctx->dir, ctx->name) == ctx->inode)
        fs_name_remove(fs, ctx->dir, ctx->name);
    if (!ctx->inode->names || ctx->tries > FS_NAMES_PER_INODE)
        return false;
    open_send(ctx);
    return true;
}

static void keep_prefetch(struct fs *fs, struct fs_file *file, const struct open_ctx *ctx,
                          const struct nc_reply *r)
{
    if (!(ctx->flags & NC_OPEN_PREFETCH) || (!r->count && !r->eof))
        return;
    if (r->count) {
        if (!(file->prefetch = malloc(r->count)))
            return; /* the read will go to the server */
        memcpy(file->prefetch, r->data, r->count);
    }
    file->prefetch_len = r->count;
    file->prefetch_eof = r->eof;
    file->prefetch_version = ctx->data_version;
    file->has_prefetch = true;
    if (ctx->snapshot) {
        file->snapshot = true;
        file->prefetch_change = r->attr.change;
        fs->snapshot_bytes += r->count;
    }
}

static void open_established(struct open_ctx *ctx, struct fs_inode *inode, struct nc_open *open,
                             const struct nc_reply *r);

/*
 * Puts a snapshot into the kernel's page cache before the open is
 * answered, so that the reader's first read finds it there instead of
 * asking us: one FUSE round trip less per small file. Only when the open
 * keeps the cache (else it would drop the pages again).
 */
static void store_snapshot(struct fs *fs, struct fs_inode *inode, const struct fs_file *file)
{
    struct fuse_bufvec buf = FUSE_BUFVEC_INIT(file->prefetch_len);
    buf.buf[0].mem = file->prefetch;
    int rc = fuse_lowlevel_notify_store(fs->se, fs_inode_ino(fs, inode), 0, &buf, 0);
    if (rc != 0 && rc != -ENOENT)
        elog_debug(FS_COMPONENT, "storing a small file in the page cache failed: %s",
                   strerror(-rc));
}

static void open_done(void *arg, const struct nc_reply *r)
{
    struct open_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    if (ctx->create)
        fs_dircache_change_done(fs, ctx->dir, ctx->name, NULL, &r->dir_change);
    if (r->err) {
        int err = r->err;
        if (!ctx->create && (err == -ENOENT || err == -ESTALE)) {
            if (open_retry(ctx))
                return;
            /* The kernel's name for it is stale too: it looks it up again. */
            err = -ESTALE;
        }
        fs_reply_err(&ctx->req, err);
        open_ctx_free(ctx);
        return;
    }
    struct fs_inode *inode = ctx->inode;
    if (ctx->create) {
        if (r->has_dir_attr)
            fs_inode_set_attr(fs, ctx->dir, &r->dir_attr, ctx->stamp);
        else
            fs_inode_attr_stale(fs, ctx->dir);
        inode = fs_inode_find_or_add(fs, &r->fh);
        if (!inode || (!r->has_attr && !inode->has_attr)) {
            /* No attributes, no entry to give the kernel. */
            nc_close(fs->nc, r->open, NULL, NULL);
            if (inode)
                fs_inode_put_if_unused(fs, inode);
            fs_reply_err(&ctx->req, inode ? -EIO : -ENOMEM);
            open_ctx_free(ctx);
            return;
        }
    }
    open_established(ctx, inode, r->open, r);
}

/* Answers the kernel with a file on open (NULL for a snapshot) and the
 * reply's attributes and data. */
static void open_established(struct open_ctx *ctx, struct fs_inode *inode, struct nc_open *open,
                             const struct nc_reply *r)
{
    struct fs *fs = ctx->fs;
    struct fuse_file_info *fi = &ctx->fi;
    /* Keep cached pages only if nobody changed the file since we last looked. */
    bool changed = ctx->had_attr && r->has_attr && !same_version(&ctx->before, &r->attr);
    fi->keep_cache =
        !ctx->create && ctx->had_attr && r->has_attr && !changed && !(fi->flags & O_TRUNC);
    /* A write-only file is never read through this descriptor (nor mapped):
     * writing past the page cache saves the kernel a copy of every byte
     * (1 GiB dd+fsync: ~270 MB/s through the cache, 1.0-1.2 GB/s without). */
    fi->direct_io = (fi->flags & O_ACCMODE) == O_WRONLY;
    if (!ctx->create && changed) {
        /* The kernel's cached size is another client's old one, and an open
         * answer carries no attributes: have it ask (attributes only; pages
         * go by keep_cache, and waiting on page locks here could deadlock). */
        fuse_lowlevel_notify_inval_inode(fs->se, fs_inode_ino(fs, inode), -1, 0);
    }
    if (r->has_attr)
        fs_inode_set_attr(fs, inode, &r->attr, ctx->stamp);
    if (ctx->create)
        fs_inode_add_name(fs, inode, ctx->dir, ctx->name);
    struct fs_file *file = file_new(fs, inode, open, &ctx->cred, fi->flags);
    if (!file) {
        nc_close(fs->nc, open, NULL, NULL);
        fs_inode_put_if_unused(fs, inode);
        fs_reply_err(&ctx->req, -ENOMEM);
        open_ctx_free(ctx);
        return;
    }
    keep_prefetch(fs, file, ctx, r);
    if (file->snapshot && fi->keep_cache && file->prefetch_len)
        store_snapshot(fs, inode, file);
    fi->fh = (uint64_t)(uintptr_t)file;
    int rc = ctx->create ? fs_reply_create(&ctx->req, inode, fi) : fs_reply_open(&ctx->req, fi);
    if (rc != 0) {
        /* The caller went away (interrupted): no release will come. */
        nc_close(fs->nc, file->open, NULL, NULL);
        file_free(fs, file);
    }
    open_ctx_free(ctx);
}

static void snapshot_done(void *arg, const struct nc_reply *r)
{
    struct open_ctx *ctx = arg;
    if (r->err == -EOPNOTSUPP || (!r->err && (!r->eof || !r->has_attr))) {
        /* No reads without state here, or the file has grown past one READ. */
        ctx->snapshot = false;
        open_send(ctx);
        return;
    }
    if (r->err) {
        /* A stale handle: the kernel looks the name up again. */
        fs_reply_err(&ctx->req, r->err == -ENOENT ? -ESTALE : r->err);
        open_ctx_free(ctx);
        return;
    }
    open_established(ctx, ctx->inode, NULL, r);
}

static struct open_ctx *open_ctx_new(fuse_req_t req, struct fs_inode *inode,
                                     struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct open_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    fs_req_hold(&ctx->req, req);
    ctx->fs = fs;
    ctx->inode = inode;
    fs_inode_ref(inode);
    ctx->fi = *fi;
    ctx->flags = open_flags(fi->flags);
    fs_req_cred(fs, req, &ctx->cred);
    return ctx;
}

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_inode *inode = fs_inode_get(fs, ino);
    if (fs->config.readonly && (open_flags(fi->flags) & NC_OPEN_WRITE)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (S_ISDIR(inode->attr.mode)) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    struct open_ctx *ctx = open_ctx_new(req, inode, fi);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->had_attr = inode->has_attr;
    ctx->before = inode->attr;
    if (want_snapshot(fs, inode, fi->flags)) {
        ctx->snapshot = true;
        ctx->flags |= NC_OPEN_PREFETCH;
        ctx->stamp = fs_attr_stamp(fs);
        ctx->data_version = inode->data_version;
        nc_snapshot(fs->nc, &ctx->cred, &inode->fh, NC_OPEN_PREFETCH_MAX, snapshot_done, ctx);
        return;
    }
    open_send(ctx);
}

void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    if (fs->config.readonly) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (strlen(name) > 255) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    struct fs_inode *dir = fs_inode_get(fs, parent);
    struct open_ctx *ctx = open_ctx_new(req, dir, fi);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->create = true;
    ctx->dir = dir;
    fs_inode_ref(dir);
    ctx->name = strdup(name);
    if (!ctx->name) {
        fs_reply_err(&ctx->req, -ENOMEM);
        open_ctx_free(ctx);
        return;
    }
    ctx->flags |= NC_OPEN_CREATE;
    if (fi->flags & O_EXCL)
        ctx->flags |= NC_OPEN_EXCL;
    ctx->mode = mode & 07777;
    ctx->stamp = fs_attr_stamp(fs);
    fs_dircache_change_start(dir);
    nc_open(fs->nc, &ctx->cred, &dir->fh, ctx->name, NULL, ctx->flags, ctx->mode, open_done, ctx);
}

/* --- open state for a file opened without it --- */

struct state_ctx {
    struct fs *fs;
    struct fs_file *file;
    struct fs_inode *dir;
    char *name;
    void (*done)(struct fs *, void *, int);
    void *arg;
};

static void state_done(void *arg, const struct nc_reply *r)
{
    struct state_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    struct fs_file *file = ctx->file;
    int err = r->err == -ENOENT ? -ESTALE : r->err;
    if (!err && file->open)
        nc_close(fs->nc, r->open, NULL, NULL); /* another lock request got one first */
    else if (!err)
        file->open = r->open;
    void (*done)(struct fs *, void *, int) = ctx->done;
    void *done_arg = ctx->arg;
    fs_inode_unref(fs, ctx->dir);
    free(ctx->name);
    free(ctx);
    done(fs, done_arg, err);
}

void fs_file_need_state(struct fs *fs, struct fs_file *file, void (*done)(struct fs *, void *, int),
                        void *arg)
{
    if (file->open) {
        done(fs, arg, 0);
        return;
    }
    struct fs_name *n = file->inode->names;
    if (!n) {
        done(fs, arg, -ESTALE);
        return;
    }
    struct state_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx || !(ctx->name = strdup(n->name))) {
        free(ctx);
        done(fs, arg, -ENOMEM);
        return;
    }
    ctx->fs = fs;
    ctx->file = file;
    ctx->dir = n->dir;
    fs_inode_ref(ctx->dir);
    ctx->done = done;
    ctx->arg = arg;
    /* The same user's open of the file, if there is one, is shared (and
     * with it the lock owners of the other descriptors). */
    nc_open(fs->nc, &file->cred, &ctx->dir->fh, ctx->name, &file->inode->fh, NC_OPEN_READ, 0,
            state_done, ctx);
}

/* --- flush / fsync / release: wait, COMMIT, report --- */

enum sync_kind { SYNC_FSYNC, SYNC_FLUSH, SYNC_RELEASE };

struct sync_ctx {
    fuse_req_t req; /* none for release, which nobody waits for */
    struct fs *fs;
    struct fs_file *file;
    struct fs_inode *inode; /* release: held until its CLOSE is answered */
    enum sync_kind kind;
};

static void close_done(void *arg, const struct nc_reply *r)
{
    struct sync_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    if (r->err)
        elog_debug(FS_COMPONENT, "CLOSE failed: %s", strerror(-r->err));
    fs_inode_close_done(fs, ctx->inode);
    fs_inode_unref(fs, ctx->inode);
    fs->background--; /* release's share, taken in sync_start */
    free(ctx);
}

static void release_close(struct fs *fs, void *arg)
{
    struct sync_ctx *ctx = arg;
    struct fs_file *file = ctx->file;
    ctx->file = NULL;
    nc_close(fs->nc, file->open, close_done, ctx);
    file_free(fs, file);
}

/* Another file's re-send or COMMIT may still be going through this open. */
static void release_unlocked(struct fs *fs, void *arg)
{
    struct sync_ctx *ctx = arg;
    fs_file_when_unused(fs, ctx->file, release_close, ctx);
}

static void sync_finish(struct fs *fs, void *arg)
{
    struct sync_ctx *ctx = arg;
    struct fs_file *file = ctx->file;
    int err = file->error;
    file->error = 0; /* reported now (or logged, at release) */
    if (ctx->kind != SYNC_RELEASE) {
        fs_reply_err(&ctx->req, err);
        fs_req_assert_answered(ctx->req);
        free(ctx);
        return;
    }
    if (err)
        elog_error(FS_COMPONENT, "writing back a closed file failed: %s", strerror(-err));
    /* Locks hang on the open state: they go first. */
    fs_locks_release_all(fs, file, release_unlocked, ctx);
}

static void sync_after_unlock(struct fs *fs, void *arg)
{
    struct sync_ctx *ctx = arg;
    /* Closing a descriptor that cannot write has nothing to wait for:
     * readers do not queue behind another descriptor's write-behind. */
    if (!ctx->file->writable && ctx->kind != SYNC_FSYNC) {
        sync_finish(fs, ctx);
        return;
    }
    /* Every write accepted before now, on any descriptor of the file:
     * close-to-open promises the next opener sees them. */
    fs_inode_commit(fs, ctx->file->inode, sync_finish, ctx);
}

static void sync_start(struct fs *fs, fuse_req_t req, struct fs_file *file, enum sync_kind kind,
                       uint64_t lock_owner)
{
    struct sync_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        if (req) {
            fuse_reply_err(req, ENOMEM);
        } else {
            /* Release must still give the open state back. */
            nc_close(fs->nc, file->open, NULL, NULL);
            file_free(fs, file);
        }
        return;
    }
    if (req)
        fs_req_hold(&ctx->req, req);
    ctx->fs = fs;
    ctx->file = file;
    ctx->kind = kind;
    switch (kind) {
    case SYNC_RELEASE:
        fs->background++;
        file->releasing = true;
        ctx->inode = file->inode;
        fs_inode_ref(ctx->inode);
        fs_inode_close_started(ctx->inode);
        sync_after_unlock(fs, ctx);
        break;
    case SYNC_FLUSH:
        /* POSIX: closing any descriptor drops the process's locks on the
         * file; the kernel leaves that to us since we handle the locks. */
        fs_locks_release_owner(fs, file, lock_owner, sync_after_unlock, ctx);
        break;
    case SYNC_FSYNC:
        sync_after_unlock(fs, ctx);
        break;
    }
}

void fs_op_flush(fuse_req_t req, fuse_ino_t ino FS_UNUSED, struct fuse_file_info *fi)
{
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    sync_start(fs_from_req(req), req, file, SYNC_FLUSH, fi->lock_owner);
}

void fs_op_fsync(fuse_req_t req, fuse_ino_t ino FS_UNUSED, int datasync FS_UNUSED,
                 struct fuse_file_info *fi)
{
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    sync_start(fs_from_req(req), req, file, SYNC_FSYNC, 0);
}

void fs_op_release(fuse_req_t req, fuse_ino_t ino FS_UNUSED, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    /* Nobody waits for release's answer; the work goes on in the background
     * and fs_run waits for it before exiting. */
    fuse_reply_err(req, 0);
    sync_start(fs, NULL, file, SYNC_RELEASE, 0);
}

void fs_op_fallocate(fuse_req_t req, fuse_ino_t ino FS_UNUSED, int mode FS_UNUSED,
                     off_t offset FS_UNUSED, off_t length FS_UNUSED,
                     struct fuse_file_info *fi FS_UNUSED)
{
    /* NFSv4.0 has no ALLOCATE. ENOSYS makes the kernel answer EOPNOTSUPP
     * itself from now on, so callers fall back without a round trip. */
    fuse_reply_err(req, ENOSYS);
}

/* --- exit --- */

struct drain_ctx {
    struct fs_file *file;
};

static void drain_done(struct fs *fs, void *arg)
{
    struct drain_ctx *ctx = arg;
    if (ctx->file->error)
        elog_error(FS_COMPONENT, "writing back a file still open at exit failed: %s",
                   strerror(-ctx->file->error));
    fs->background--;
    free(ctx);
}

void fs_files_drain(struct fs *fs, double deadline)
{
    /* Files the kernel has not released (we are exiting before it does):
     * COMMIT (re-sending what a restarted server lost), so that what
     * write() accepted is on stable storage. */
    for (struct fs_file *file = fs->files; file; file = file->next) {
        if (!file->writable)
            continue;
        struct drain_ctx *ctx = calloc(1, sizeof(*ctx));
        if (!ctx) {
            elog_error(FS_COMPONENT, "out of memory committing at exit");
            continue;
        }
        ctx->file = file;
        fs->background++;
        fs_inode_commit(fs, file->inode, drain_done, ctx);
    }
    while (fs->background && fs_now() < deadline)
        nc_client_run_once(fs->nc, 100);
}

void fs_files_free(struct fs *fs)
{
    while (fs->files)
        file_free(fs, fs->files);
}
