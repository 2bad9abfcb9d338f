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

struct attr_ctx {
    fuse_req_t req;
    struct fs *fs;
    struct fs_inode *inode;
    struct nc_cred cred;
    struct nc_setattr set;
    struct nc_open *open; /* setattr through an open file (ftruncate) */
};

static struct attr_ctx *attr_ctx_new(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_from_req(req);
    struct attr_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->req = req;
    ctx->fs = fs;
    ctx->inode = fs_inode_get(fs, ino);
    fs_inode_ref(ctx->inode);
    fs_req_cred(fs, req, &ctx->cred);
    return ctx;
}

static void attr_ctx_free(struct attr_ctx *ctx)
{
    fs_inode_unref(ctx->fs, ctx->inode);
    free(ctx);
}

static void attr_done(void *arg, const struct nc_reply *r)
{
    struct attr_ctx *ctx = arg;
    if (r->err) {
        fuse_reply_err(ctx->req, -r->err);
    } else if (!r->has_attr) {
        fuse_reply_err(ctx->req, EIO);
    } else {
        fs_inode_set_attr(ctx->inode, &r->attr);
        struct stat st;
        fs_attr_to_stat(ctx->inode, &r->attr, &st);
        fuse_reply_attr(ctx->req, &st, ctx->fs->config.attr_timeout);
    }
    attr_ctx_free(ctx);
}

void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct attr_ctx *ctx = attr_ctx_new(req, ino);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nc_getattr(ctx->fs->nc, &ctx->cred, &ctx->inode->fh, attr_done, ctx);
}

static void setattr_send(struct fs *fs, void *arg)
{
    struct attr_ctx *ctx = arg;
    if (ctx->set.valid & NC_SET_SIZE)
        ctx->inode->write_end = 0; /* every earlier write has landed */
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
        nc_getattr(fs->nc, &ctx->cred, &ctx->inode->fh, attr_done, ctx);
        return;
    }
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
        fuse_reply_err(ctx->req, -r->err);
    else
        fuse_reply_err(ctx->req, (r->access & ctx->want) == ctx->want ? 0 : EACCES);
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
    ctx->req = req;
    ctx->want = want;
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    nc_access(fs->nc, &cred, &inode->fh, want, access_done, ctx);
}

/* --- statfs, readlink --- */

static void statfs_done(void *arg, const struct nc_reply *r)
{
    fuse_req_t req = arg;
    if (r->err) {
        fuse_reply_err(req, -r->err);
        return;
    }
    struct statvfs sv = {0};
    const unsigned long bsize = 4096;
    sv.f_bsize = 1 << 20; /* the preferred I/O size */
    sv.f_frsize = bsize;
    sv.f_blocks = r->statfs.bytes_total / bsize;
    sv.f_bfree = r->statfs.bytes_free / bsize;
    sv.f_bavail = r->statfs.bytes_avail / bsize;
    sv.f_files = r->statfs.files_total;
    sv.f_ffree = r->statfs.files_free;
    sv.f_favail = r->statfs.files_avail;
    sv.f_namemax = r->statfs.name_max > 255 ? 255 : r->statfs.name_max;
    fuse_reply_statfs(req, &sv);
}

void fs_op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_from_req(req);
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    nc_statfs(fs->nc, &cred, &fs_inode_get(fs, ino)->fh, statfs_done, req);
}

static void readlink_done(void *arg, const struct nc_reply *r)
{
    fuse_req_t req = arg;
    if (r->err)
        fuse_reply_err(req, -r->err);
    else
        fuse_reply_readlink(req, r->target);
}

void fs_op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    struct fs *fs = fs_from_req(req);
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    nc_readlink(fs->nc, &cred, &fs_inode_get(fs, ino)->fh, readlink_done, req);
}

/* --- extended attributes: EFS has none, and NFSv4.0 has no xattr operations --- */

void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                    size_t size, int flags)
{
    fuse_reply_err(req, ENOTSUP);
}

void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    fuse_reply_err(req, ENOTSUP);
}

void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    fuse_reply_err(req, ENOTSUP);
}

void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    fuse_reply_err(req, ENOTSUP);
}
