/*
 * Open files: open and create, read, write-behind, flush, fsync, release.
 *
 * Writes are acknowledged to the kernel as soon as their data is copied into
 * an NFS WRITE (UNSTABLE) on the wire, while the bytes in flight for the
 * mount stay under a bound; past it, acknowledgements wait for replies. An
 * error that comes back later is kept on the file and returned by its next
 * write, flush (close) or fsync. flush and fsync wait for the file's writes,
 * then COMMIT, and compare write verifiers: a changed verifier means the
 * server restarted and may have lost unstable data, which is an error, not a
 * silent loss.
 *
 * Close-to-open: open sends an NFS OPEN (or, for a file this user already
 * has open, a GETATTR) and keeps the kernel's page cache only if the file's
 * change attribute, size and mtime are what we last saw.
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
    char *name;
    struct fuse_file_info fi;
    struct nc_cred cred;
    bool create;
    bool had_attr;
    struct nc_attr before;
};

static struct fs_file *file_new(struct fs *fs, struct fs_inode *inode, struct nc_open *open,
                                const struct nc_cred *cred)
{
    struct fs_file *file = calloc(1, sizeof(*file));
    if (!file)
        return NULL;
    file->inode = inode;
    fs_inode_ref(inode);
    file->open = open;
    file->cred = *cred;
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
    fs_inode_unref(fs, file->inode);
    free(file);
}

static uint32_t open_flags(int flags)
{
    uint32_t f = 0;
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
    fs_inode_unref(ctx->fs, ctx->inode);
    free(ctx->name);
    free(ctx);
}

static void open_done(void *arg, const struct nc_reply *r)
{
    struct open_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    if (r->err) {
        fuse_reply_err(ctx->req, -r->err);
        open_ctx_free(ctx);
        return;
    }
    struct fs_inode *inode = ctx->create ? fs_inode_find_or_add(fs, &r->fh, NULL) : ctx->inode;
    struct fs_file *file = inode ? file_new(fs, inode, r->open, &ctx->cred) : NULL;
    if (file)
        file->writable = (ctx->fi.flags & O_ACCMODE) != O_RDONLY;
    if (!file) {
        nc_close(fs->nc, r->open, NULL, NULL);
        fuse_reply_err(ctx->req, ENOMEM);
        open_ctx_free(ctx);
        return;
    }
    struct fuse_file_info *fi = &ctx->fi;
    fi->fh = (uint64_t)(uintptr_t)file;
    /* Keep cached pages only if nobody changed the file since we last looked. */
    fi->keep_cache = !ctx->create && ctx->had_attr && r->has_attr &&
                     same_version(&ctx->before, &r->attr) && !(fi->flags & O_TRUNC);
    /* A write-only file is never read through this descriptor (nor mapped):
     * writing past the page cache saves the kernel a copy of every byte. */
    fi->direct_io = (fi->flags & O_ACCMODE) == O_WRONLY;
    if (r->has_attr)
        fs_inode_set_attr(inode, &r->attr);
    int rc;
    if (ctx->create) {
        fs_inode_set_name(fs, inode, ctx->inode, ctx->name);
        if (!inode->has_attr) {
            rc = -1;
        } else {
            struct fuse_entry_param e;
            fs_entry_param(fs, inode, &e);
            rc = fuse_reply_create(ctx->req, &e, fi);
            if (rc != 0)
                inode->nlookup--; /* the kernel did not get it */
        }
    } else {
        rc = fuse_reply_open(ctx->req, fi);
    }
    if (rc != 0) {
        /* The caller went away (interrupted): no release will come. */
        if (ctx->create && !inode->has_attr)
            fuse_reply_err(ctx->req, EIO);
        nc_close(fs->nc, file->open, NULL, NULL);
        file_free(fs, file); /* frees the inode too if nothing else holds it */
    }
    open_ctx_free(ctx);
}

static struct open_ctx *open_ctx_new(fuse_req_t req, struct fs_inode *inode,
                                     struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct open_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->req = req;
    ctx->fs = fs;
    ctx->inode = inode;
    fs_inode_ref(inode);
    ctx->fi = *fi;
    fs_req_cred(fs, req, &ctx->cred);
    return ctx;
}

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_inode *inode = fs_inode_get(fs, ino);
    uint32_t flags = open_flags(fi->flags);
    if (fs->config.readonly && (flags & NC_OPEN_WRITE)) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (!inode->parent || !inode->name) {
        /* NFSv4.0 can only open by name; the root is a directory anyway. */
        fuse_reply_err(req, S_ISDIR(inode->attr.mode) ? EISDIR : ESTALE);
        return;
    }
    struct open_ctx *ctx = open_ctx_new(req, inode, fi);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->had_attr = inode->has_attr;
    ctx->before = inode->attr;
    nc_open(fs->nc, &ctx->cred, &inode->parent->fh, inode->name, &inode->fh, flags, 0, open_done,
            ctx);
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
    struct open_ctx *ctx = open_ctx_new(req, fs_inode_get(fs, parent), fi);
    if (!ctx || !(ctx->name = strdup(name))) {
        if (ctx)
            open_ctx_free(ctx);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->create = true;
    uint32_t flags = open_flags(fi->flags) | NC_OPEN_CREATE;
    if (fi->flags & O_EXCL)
        flags |= NC_OPEN_EXCL;
    nc_open(fs->nc, &ctx->cred, &ctx->inode->fh, name, NULL, flags, mode & 07777, open_done, ctx);
}

/* --- read --- */

struct read_ctx {
    fuse_req_t req;
    struct fs *fs;
    struct fs_file *file;
    uint64_t offset;
    size_t size;
    size_t got;      /* bytes assembled in buf */
    unsigned parts;  /* NFS READs outstanding */
    bool eof;
    int err;
    char *buf; /* only when the answer takes more than one READ */
};

static void read_part_done(void *arg, const struct nc_reply *r);

static void read_issue(struct read_ctx *ctx)
{
    struct fs *fs = ctx->fs;
    uint32_t max = nc_client_max_read(fs->nc);
    uint64_t off = ctx->offset + ctx->got;
    size_t left = ctx->size - ctx->got;
    uint32_t count = left > max ? max : (uint32_t)left;
    ctx->parts++;
    nc_read(fs->nc, &ctx->file->cred, ctx->file->open, off, count, read_part_done, ctx);
}

static void read_part_done(void *arg, const struct nc_reply *r)
{
    struct read_ctx *ctx = arg;
    ctx->parts--;
    if (r->err) {
        ctx->err = r->err;
    } else if (!ctx->buf && ctx->got == 0 && (r->count == ctx->size || r->eof)) {
        /* The common case: one READ answered it all; no copy. */
        fuse_reply_buf(ctx->req, r->data, r->count);
        free(ctx);
        return;
    } else {
        if (!ctx->buf && !(ctx->buf = malloc(ctx->size))) {
            ctx->err = -ENOMEM;
        } else {
            size_t n = r->count > ctx->size - ctx->got ? ctx->size - ctx->got : r->count;
            memcpy(ctx->buf + ctx->got, r->data, n);
            ctx->got += n;
            ctx->eof = r->eof || r->count == 0;
        }
    }
    if (!ctx->err && !ctx->eof && ctx->got < ctx->size) {
        /* A short read that is not the end of the file: read on, since the
         * kernel takes a short answer for end of file. */
        read_issue(ctx);
        return;
    }
    if (ctx->err)
        fuse_reply_err(ctx->req, -ctx->err);
    else
        fuse_reply_buf(ctx->req, ctx->buf, ctx->got);
    free(ctx->buf);
    free(ctx);
}

static void read_when_idle(struct fs *fs, void *arg)
{
    read_issue(arg);
}

void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    struct read_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->req = req;
    ctx->fs = fs;
    ctx->file = file;
    ctx->offset = (uint64_t)off;
    ctx->size = size;
    /* Reading what write-behind has not yet delivered would return old data. */
    fs_inode_when_idle(fs, file->inode, read_when_idle, ctx);
}

/* --- write-behind --- */

/*
 * One WRITE. While it is on the wire it sits in its inode's `sent` list;
 * a later write that overlaps it is copied and held (in order) until it is
 * answered, because the server may apply concurrent WRITEs in any order.
 */
struct fs_write {
    struct fs_write *next;
    struct fs_write *prev;
    struct fs *fs;
    struct fs_file *file;
    uint64_t offset;
    uint32_t size;
    char *held_data; /* a copy, only while held */
};

static void release_blocked_writes(struct fs *fs)
{
    while (fs->blocked_head && fs->write_bytes_in_flight < fs->write_limit) {
        struct fs_blocked_write *b = fs->blocked_head;
        fs->blocked_head = b->next;
        if (!fs->blocked_head)
            fs->blocked_tail = NULL;
        fuse_reply_write(b->req, b->size);
        free(b);
    }
}

static bool overlaps_sent(const struct fs_inode *inode, uint64_t offset, uint32_t size)
{
    for (const struct fs_write *w = inode->sent; w; w = w->next)
        if (offset < w->offset + w->size && w->offset < offset + size)
            return true;
    return false;
}

static void write_done(void *arg, const struct nc_reply *r);

static void write_send(struct fs_write *w, const void *data)
{
    struct fs_inode *inode = w->file->inode;
    w->prev = NULL;
    w->next = inode->sent;
    if (inode->sent)
        inode->sent->prev = w;
    inode->sent = w;
    nc_write(w->fs->nc, &w->file->cred, w->file->open, w->offset, data, w->size, false,
             write_done, w);
    /* nc_write copied the data into the request. */
    free(w->held_data);
    w->held_data = NULL;
}

/* Sends held writes, in order, as long as the first no longer overlaps. */
static void send_held_writes(struct fs_inode *inode)
{
    while (inode->held_head &&
           !overlaps_sent(inode, inode->held_head->offset, inode->held_head->size)) {
        struct fs_write *w = inode->held_head;
        inode->held_head = w->next;
        if (!inode->held_head)
            inode->held_tail = NULL;
        write_send(w, w->held_data);
    }
}

static void write_done(void *arg, const struct nc_reply *r)
{
    struct fs_write *w = arg;
    struct fs *fs = w->fs;
    struct fs_file *file = w->file;
    struct fs_inode *inode = file->inode;
    int err = r->err;
    if (!err && r->written < w->size) {
        /* Our data left with the request; we cannot send the rest again. */
        elog_warn(FS_COMPONENT, "server wrote %u of %u bytes", r->written, w->size);
        err = -EIO;
    }
    if (!err && !r->stable) {
        if (file->has_verifier && file->verifier != r->verifier) {
            elog_warn(FS_COMPONENT, "write verifier changed: the server restarted and may have "
                                    "lost unstable writes");
            err = -EIO;
        }
        file->verifier = r->verifier;
        file->has_verifier = true;
        file->unstable = true;
    }
    if (err && !file->error)
        file->error = err;
    if (w->prev)
        w->prev->next = w->next;
    else
        inode->sent = w->next;
    if (w->next)
        w->next->prev = w->prev;
    fs->write_bytes_in_flight -= w->size;
    inode->writes_in_flight--;
    free(w);
    send_held_writes(inode);
    release_blocked_writes(fs);
    fs_inode_writes_done(fs, inode);
}

/* Sends (or holds) one chunk; false when out of memory. */
static bool write_chunk(struct fs *fs, struct fs_file *file, uint64_t offset, const char *data,
                        uint32_t size)
{
    struct fs_inode *inode = file->inode;
    struct fs_write *w = calloc(1, sizeof(*w));
    if (!w)
        return false;
    w->fs = fs;
    w->file = file;
    w->offset = offset;
    w->size = size;
    bool hold = inode->held_head || overlaps_sent(inode, offset, size);
    if (hold && !(w->held_data = malloc(size))) {
        free(w);
        return false;
    }
    fs->write_bytes_in_flight += size;
    inode->writes_in_flight++;
    if (offset + size > inode->write_end)
        inode->write_end = offset + size;
    if (!hold) {
        write_send(w, data);
        return true;
    }
    memcpy(w->held_data, data, size);
    if (inode->held_tail)
        inode->held_tail->next = w;
    else
        inode->held_head = w;
    inode->held_tail = w;
    return true;
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    if (file->error) {
        int err = file->error;
        file->error = 0;
        fuse_reply_err(req, -err);
        return;
    }
    uint32_t max = nc_client_max_write(fs->nc);
    for (size_t done = 0; done < size;) {
        uint32_t n = size - done > max ? max : (uint32_t)(size - done);
        if (!write_chunk(fs, file, (uint64_t)off + done, buf + done, n)) {
            /* What was sent is in flight; report the rest as not written. */
            if (done)
                fuse_reply_write(req, done);
            else
                fuse_reply_err(req, ENOMEM);
            return;
        }
        done += n;
    }
    if (fs->write_bytes_in_flight < fs->write_limit) {
        fuse_reply_write(req, size);
        return;
    }
    struct fs_blocked_write *b = calloc(1, sizeof(*b));
    if (!b) {
        fuse_reply_write(req, size);
        return;
    }
    b->req = req;
    b->size = size;
    if (fs->blocked_tail)
        fs->blocked_tail->next = b;
    else
        fs->blocked_head = b;
    fs->blocked_tail = b;
}

/* --- flush / fsync / release: wait, COMMIT, report --- */

struct sync_ctx {
    fuse_req_t req; /* NULL for release, which nobody waits for */
    struct fs *fs;
    struct fs_file *file;
    bool release; /* then close the file when done */
    int err;
};

static void close_done(void *arg, const struct nc_reply *r)
{
    struct fs *fs = arg;
    fs->background--;
}

static void sync_finish(struct sync_ctx *ctx)
{
    struct fs *fs = ctx->fs;
    struct fs_file *file = ctx->file;
    int err = ctx->err ? ctx->err : file->error;
    if (ctx->req) {
        file->error = 0;
        fuse_reply_err(ctx->req, -err);
    } else if (err) {
        elog_error(FS_COMPONENT, "writing back a released file failed: %s", strerror(-err));
    }
    if (ctx->release) {
        fs->background++;
        nc_close(fs->nc, file->open, close_done, fs);
        file_free(fs, file);
        fs->background--; /* this release's own share, taken in sync_start */
    }
    free(ctx);
}

static void commit_done(void *arg, const struct nc_reply *r)
{
    struct sync_ctx *ctx = arg;
    struct fs_file *file = ctx->file;
    if (r->err) {
        ctx->err = r->err;
    } else {
        if (file->has_verifier && r->verifier != file->verifier) {
            elog_warn(FS_COMPONENT, "commit verifier differs from the writes': the server "
                                    "restarted and may have lost unstable writes");
            ctx->err = -EIO;
        }
        file->unstable = false;
        file->has_verifier = false;
        if (r->has_attr)
            fs_inode_set_attr(file->inode, &r->attr);
    }
    sync_finish(ctx);
}

static void sync_commit(struct fs *fs, void *arg)
{
    struct sync_ctx *ctx = arg;
    struct fs_file *file = ctx->file;
    if (!file->unstable) {
        sync_finish(ctx);
        return;
    }
    nc_commit(fs->nc, &file->cred, file->open, commit_done, ctx);
}

static void sync_after_unlock(struct fs *fs, void *arg)
{
    struct sync_ctx *ctx = arg;
    fs_inode_when_idle(fs, ctx->file->inode, sync_commit, ctx);
}

enum sync_kind { SYNC_FSYNC, SYNC_FLUSH, SYNC_RELEASE };

static void sync_start(struct fs *fs, fuse_req_t req, struct fs_file *file, enum sync_kind kind,
                       uint64_t lock_owner)
{
    struct sync_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        if (req)
            fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->req = req;
    ctx->fs = fs;
    ctx->file = file;
    switch (kind) {
    case SYNC_RELEASE:
        ctx->release = true;
        fs->background++;
        /* Locks go before the open state they hang on. */
        fs_locks_release_all(fs, file, sync_after_unlock, ctx);
        break;
    case SYNC_FLUSH:
        /* POSIX: closing any descriptor drops the process's locks on the file. */
        fs_locks_release_owner(fs, file, lock_owner, sync_after_unlock, ctx);
        break;
    case SYNC_FSYNC:
        sync_after_unlock(fs, ctx);
        break;
    }
}

void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    sync_start(fs_from_req(req), req, file, SYNC_FLUSH, fi->lock_owner);
}

void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    sync_start(fs_from_req(req), req, file, SYNC_FSYNC, 0);
}

void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    /* Nobody waits for release's answer; the work goes on in the background
     * and fs_run waits for it before exiting. */
    fuse_reply_err(req, 0);
    sync_start(fs, NULL, file, SYNC_RELEASE, 0);
}

void fs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                     struct fuse_file_info *fi)
{
    /* NFSv4.0 has no ALLOCATE; failing fast lets callers fall back. */
    fuse_reply_err(req, EOPNOTSUPP);
}

/* --- exit --- */

void fs_files_free(struct fs *fs)
{
    while (fs->files)
        file_free(fs, fs->files);
    while (fs->blocked_head) {
        struct fs_blocked_write *b = fs->blocked_head;
        fs->blocked_head = b->next;
        free(b);
    }
    fs->blocked_tail = NULL;
}


static void drain_commit_done(void *arg, const struct nc_reply *r)
{
    struct fs_file *file = arg;
    if (r->err)
        elog_error(FS_COMPONENT, "final COMMIT failed: %s", strerror(-r->err));
    file->unstable = false;
}

void fs_files_drain(struct fs *fs, int timeout_ms)
{
    /* Writes held back by the bound still owe the kernel an answer. */
    fs->write_limit = UINT64_MAX;
    release_blocked_writes(fs);
    double deadline = fs_now() + timeout_ms / 1000.0;
    while ((fs->write_bytes_in_flight > 0 || fs->background > 0) && fs_now() < deadline) {
        nc_client_run_once(fs->nc, 100);
        if (nc_client_pending(fs->nc) == 0 && (fs->write_bytes_in_flight || fs->background)) {
            /* Nothing on the wire can finish what is left: do not wait for it. */
            elog_error(FS_COMPONENT, "at exit, %llu bytes of writes and %u closes are not "
                       "accounted for by any request; not waiting for them",
                       (unsigned long long)fs->write_bytes_in_flight, fs->background);
            break;
        }
    }
    /* Files still open (we stop before the kernel releases them): commit,
     * so what write() accepted is on stable storage. */
    for (struct fs_file *file = fs->files; file; file = file->next)
        if (file->unstable)
            nc_commit(fs->nc, &file->cred, file->open, drain_commit_done, file);
    unsigned pending;
    do {
        pending = 0;
        for (struct fs_file *file = fs->files; file; file = file->next)
            pending += file->unstable;
        if (pending)
            nc_client_run_once(fs->nc, 100);
    } while (pending && fs_now() < deadline);
    if (fs->write_bytes_in_flight > 0 || pending)
        elog_error(FS_COMPONENT,
                   "exiting with %llu bytes of writes unanswered and %u files uncommitted",
                   (unsigned long long)fs->write_bytes_in_flight, pending);
}
