/*
 * Attributes: getattr, setattr (files and directories), access, statfs,
 * readlink; extended attributes, which EFS does not have.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* GETATTRs a getattr sends when each answer is overtaken by a write. */
#define GETATTR_TRIES 3

struct attr_ctx {
    fuse_req_t req;
    struct fs *fs;
    struct fs_inode *inode;
    struct nc_cred cred;
    struct nc_setattr set;
    struct nc_open *open; /* setattr through an open file (ftruncate) */
    uint64_t stamp;
    bool size_sent;      /* a size change is on the wire */
    uint64_t write_mark; /* writes accepted before it (fs_inode_write_seq) */
    unsigned tries;
};

static struct attr_ctx *attr_ctx_new(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_from_req(req);
    struct attr_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    fs_req_hold(&ctx->req, req);
    ctx->fs = fs;
    ctx->inode = fs_inode_get(fs, ino);
    fs_inode_ref(ctx->inode);
    fs_req_cred(fs, req, &ctx->cred);
    return ctx;
}

static void attr_ctx_free(struct attr_ctx *ctx)
{
    fs_req_assert_answered(ctx->req);
    fs_inode_unref(ctx->fs, ctx->inode);
    free(ctx);
}

static void getattr_send(struct attr_ctx *ctx);

static void attr_done(void *arg, const struct nc_reply *r)
{
    struct attr_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    if (ctx->size_sent) {
        ctx->size_sent = false;
        fs_writes_size_change_done(fs, ctx->inode, r->err == 0, ctx->set.size, ctx->write_mark);
    }
    if (r->err) {
        fs_reply_err(&ctx->req, r->err);
    } else if (!r->has_attr) {
        fs_reply_err(&ctx->req, -EIO);
    } else if (fs_inode_set_attr(fs, ctx->inode, &r->attr, ctx->stamp)) {
        fs_reply_attr(&ctx->req, ctx->inode, &r->attr, fs->config.attr_timeout);
    } else if (!ctx->set.valid && ctx->tries < GETATTR_TRIES) {
        /* A write was answered while this was on the wire: ask again. */
        getattr_send(ctx);
        return;
    } else {
        /* Outdated: the size still includes our writes; not to be cached. */
        fs_reply_attr(&ctx->req, ctx->inode, &r->attr, 0);
    }
    attr_ctx_free(ctx);
}

static void getattr_send(struct attr_ctx *ctx)
{
    ctx->tries++;
    ctx->stamp = fs_attr_stamp(ctx->fs);
    nc_getattr(ctx->fs->nc, &ctx->cred, &ctx->inode->fh, attr_done, ctx);
}

void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi FS_UNUSED)
{
    struct fs *fs = fs_from_req(req);
    struct fs_inode *inode = fs_inode_get(fs, ino);
    double remaining;
    if (fs_inode_attr_fresh(inode, &remaining)) {
        struct stat st;
        fs_attr_to_stat(inode, &inode->attr, &st);
        fuse_reply_attr(req, &st, remaining);
        return;
    }
    struct attr_ctx *ctx = attr_ctx_new(req, ino);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    getattr_send(ctx);
}

static void setattr_send(struct fs *fs, void *arg)
{
    struct attr_ctx *ctx = arg;
    if (ctx->set.valid & NC_SET_SIZE) {
        ctx->inode->write_end = 0; /* every earlier write has been answered */
        ctx->size_sent = true;
        ctx->write_mark = fs_inode_write_seq(ctx->inode);
        fs_writes_size_change_start(ctx->inode);
    }
    ctx->stamp = fs_attr_stamp(fs);
    nc_setattr(fs->nc, &ctx->cred, &ctx->inode->fh, ctx->open, &ctx->set, attr_done, ctx);
}

void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                   struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    if (fs->config.readonly) {
        fuse_reply_err(req, EROFS);
        return;
    }
    struct attr_ctx *ctx = attr_ctx_new(req, ino);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct nc_setattr *set = &ctx->set;
    if (to_set & FUSE_SET_ATTR_MODE) {
        set->valid |= NC_SET_MODE;
        set->mode = attr->st_mode & 07777;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        set->valid |= NC_SET_UID;
        set->uid = attr->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        set->valid |= NC_SET_GID;
        set->gid = attr->st_gid;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        set->valid |= NC_SET_SIZE;
        set->size = (uint64_t)attr->st_size;
    }
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
        set->valid |= NC_SET_ATIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
        set->valid |= NC_SET_ATIME;
        set->atime = attr->st_atim;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
        set->valid |= NC_SET_MTIME_NOW;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
        set->valid |= NC_SET_MTIME;
        set->mtime = attr->st_mtim;
    }
    if (!set->valid) {
        /* Only ctime (or nothing we can set): answer with fresh attributes. */
        getattr_send(ctx);
        return;
    }
    /* ftruncate goes under the writer's open state (servers check share
     * reservations); truncate(2) has none and uses the anonymous stateid. */
    if (fi && (set->valid & NC_SET_SIZE))
        ctx->open = ((struct fs_file *)(uintptr_t)fi->fh)->open;
    /* A truncate must not overtake write-behind to the same file. */
    if (set->valid & NC_SET_SIZE)
        fs_inode_when_idle(fs, ctx->inode, setattr_send, ctx);
    else
        setattr_send(fs, ctx);
}

/* --- access --- */

struct access_ctx {
    fuse_req_t req;
    uint32_t want;
};

static void access_done(void *arg, const struct nc_reply *r)
{
    struct access_ctx *ctx = arg;
    if (r->err)
        fs_reply_err(&ctx->req, r->err);
    else
        fs_reply_err(&ctx->req, (r->access & ctx->want) == ctx->want ? 0 : -EACCES);
    fs_req_assert_answered(ctx->req);
    free(ctx);
}

void fs_op_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
    struct fs *fs = fs_from_req(req);
    struct fs_inode *inode = fs_inode_get(fs, ino);
    if (mask == F_OK) {
        fuse_reply_err(req, 0);
        return;
    }
    if ((mask & W_OK) && fs->config.readonly) {
        fuse_reply_err(req, EROFS);
        return;
    }
    bool dir = S_ISDIR(inode->attr.mode);
    uint32_t want = 0;
    if (mask & R_OK)
        want |= NC_ACCESS_READ;
    if (mask & W_OK)
        want |= dir ? (NC_ACCESS_MODIFY | NC_ACCESS_EXTEND | NC_ACCESS_DELETE)
                    : (NC_ACCESS_MODIFY | NC_ACCESS_EXTEND);
    if (mask & X_OK)
        want |= dir ? NC_ACCESS_LOOKUP : NC_ACCESS_EXECUTE;
    struct access_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fs_req_hold(&ctx->req, req);
    ctx->want = want;
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    nc_access(fs->nc, &cred, &inode->fh, want, access_done, ctx);
}

/* --- statfs, readlink: nothing to keep but the request --- */

struct req_ctx {
    fuse_req_t req;
};

static struct req_ctx *req_ctx_new(fuse_req_t req)
{
    struct req_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return NULL;
    }
    fs_req_hold(&ctx->req, req);
    return ctx;
}

static void req_ctx_free(struct req_ctx *ctx)
{
    fs_req_assert_answered(ctx->req);
    free(ctx);
}

static void statfs_done(void *arg, const struct nc_reply *r)
{
    struct req_ctx *ctx = arg;
    if (r->err) {
        fs_reply_err(&ctx->req, r->err);
        req_ctx_free(ctx);
        return;
    }
    struct statvfs sv = {0};
    const unsigned long block = 4096;
    sv.f_bsize = block;
    sv.f_frsize = block;
    sv.f_blocks = r->statfs.bytes_total / block;
    sv.f_bfree = r->statfs.bytes_free / block;
    sv.f_bavail = r->statfs.bytes_avail / block;
    sv.f_files = r->statfs.files_total;
    sv.f_ffree = r->statfs.files_free;
    sv.f_favail = r->statfs.files_avail;
    sv.f_namemax = r->statfs.name_max && r->statfs.name_max < 255 ? r->statfs.name_max : 255;
    fs_reply_statfs(&ctx->req, &sv);
    req_ctx_free(ctx);
}

void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_from_req(req);
    struct req_ctx *ctx = req_ctx_new(req);
    if (!ctx)
        return;
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    nc_statfs(fs->nc, &cred, &fs_inode_get(fs, ino)->fh, statfs_done, ctx);
}

static void readlink_done(void *arg, const struct nc_reply *r)
{
    struct req_ctx *ctx = arg;
    if (r->err)
        fs_reply_err(&ctx->req, r->err);
    else
        fs_reply_readlink(&ctx->req, r->target);
    req_ctx_free(ctx);
}

void fs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_from_req(req);
    struct req_ctx *ctx = req_ctx_new(req);
    if (!ctx)
        return;
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    nc_readlink(fs->nc, &cred, &fs_inode_get(fs, ino)->fh, readlink_done, ctx);
}

/*
 * --- extended attributes ---
 * EFS has none and NFSv4.0 has no operations for them. The answer is
 * ENOSYS, which the kernel remembers and turns into EOPNOTSUPP (== ENOTSUP)
 * for the caller, now and for every later call, without asking us again;
 * that also spares the security.capability lookup the kernel makes before
 * every write.
 */

void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino FS_UNUSED, const char *name FS_UNUSED,
                    const char *value FS_UNUSED, size_t size FS_UNUSED, int flags FS_UNUSED)
{
    fuse_reply_err(req, ENOSYS);
}

void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino FS_UNUSED, const char *name FS_UNUSED,
                    size_t size FS_UNUSED)
{
    fuse_reply_err(req, ENOSYS);
}

void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino FS_UNUSED, size_t size FS_UNUSED)
{
    fuse_reply_err(req, ENOSYS);
}

void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino FS_UNUSED, const char *name FS_UNUSED)
{
    fuse_reply_err(req, ENOSYS);
}
