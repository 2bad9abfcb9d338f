/*
 * Name operations: lookup and forget, making and removing names.
 *
 * Each request gets a small context that carries the FUSE request to the
 * NFS callback, which answers it; the context is freed there, so a request
 * is answered exactly once.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct entry_ctx {
    fuse_req_t req;
    struct fs *fs;
    struct fs_inode *dir;
    char *name;
    /* rename: the new place, to update the moved inode's name */
    struct fs_inode *newdir;
    char *newname;
    struct nc_cred cred;
};

static struct entry_ctx *entry_ctx_new(fuse_req_t req, fuse_ino_t dir_ino, const char *name)
{
    struct fs *fs = fs_from_req(req);
    struct entry_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->req = req;
    ctx->fs = fs;
    ctx->dir = fs_inode_get(fs, dir_ino);
    ctx->name = name ? strdup(name) : NULL;
    if (name && !ctx->name) {
        free(ctx);
        return NULL;
    }
    fs_inode_ref(ctx->dir);
    fs_req_cred(fs, req, &ctx->cred);
    return ctx;
}

static void entry_ctx_free(struct entry_ctx *ctx)
{
    fs_inode_unref(ctx->fs, ctx->dir);
    if (ctx->newdir)
        fs_inode_unref(ctx->fs, ctx->newdir);
    free(ctx->name);
    free(ctx->newname);
    free(ctx);
}

static bool name_ok(fuse_req_t req, const char *name)
{
    if (strlen(name) > 255) {
        fuse_reply_err(req, ENAMETOOLONG);
        return false;
    }
    return true;
}

static bool refuse_if_readonly(fuse_req_t req)
{
    if (fs_from_req(req)->config.readonly) {
        fuse_reply_err(req, EROFS);
        return true;
    }
    return false;
}

/* Answers with the entry of reply's object (fh + attr), remembering its name. */
static void reply_entry(struct entry_ctx *ctx, const struct nc_reply *r)
{
    struct fs *fs = ctx->fs;
    if (r->has_dir_attr)
        fs_inode_set_attr(ctx->dir, &r->dir_attr);
    struct fs_inode *inode = fs_inode_find_or_add(fs, &r->fh, r->has_attr ? &r->attr : NULL);
    if (!inode) {
        fuse_reply_err(ctx->req, ENOMEM);
        return;
    }
    if (!inode->has_attr) {
        /* A server that gave no attributes: nothing honest to answer. */
        fuse_reply_err(ctx->req, EIO);
        fs_inode_drop_if_unused(fs, inode);
        return;
    }
    fs_inode_set_name(fs, inode, ctx->dir, ctx->name);
    struct fuse_entry_param e;
    fs_entry_param(fs, inode, &e);
    if (fuse_reply_entry(ctx->req, &e) != 0) {
        /* The kernel did not take it (the caller was interrupted). */
        inode->nlookup--;
        fs_inode_drop_if_unused(fs, inode);
    }
}

static void entry_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (r->err == -ENOENT && ctx->fs->config.negative_timeout > 0 && !ctx->newname) {
        /* Cache the absence for negative_timeout. */
        struct fuse_entry_param e = {0};
        e.entry_timeout = ctx->fs->config.negative_timeout;
        fuse_reply_entry(ctx->req, &e);
    } else if (r->err) {
        fuse_reply_err(ctx->req, -r->err);
    } else {
        reply_entry(ctx, r);
    }
    entry_ctx_free(ctx);
}

void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (!name_ok(req, name))
        return;
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nc_lookup(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, name, entry_done, ctx);
}

void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    struct fs *fs = fs_from_req(req);
    fs_inode_forget(fs, fs_inode_get(fs, ino), nlookup);
    fuse_reply_none(req);
}

void fs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    struct fs *fs = fs_from_req(req);
    for (size_t i = 0; i < count; i++)
        fs_inode_forget(fs, fs_inode_get(fs, forgets[i].ino), forgets[i].nlookup);
    fuse_reply_none(req);
}

/* Creation replies: an error (no negative entry) or the new entry. */
static void create_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (r->err)
        fuse_reply_err(ctx->req, -r->err);
    else
        reply_entry(ctx, r);
    entry_ctx_free(ctx);
}

void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    if (refuse_if_readonly(req) || !name_ok(req, name))
        return;
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nc_mkdir(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, name, mode & 07777, create_done, ctx);
}

void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    if (refuse_if_readonly(req) || !name_ok(req, name))
        return;
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nc_symlink(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, name, link, create_done, ctx);
}

/* mknod of a regular file: an exclusive create, closed at once. */
static void mknod_reg_opened(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (!r->err)
        nc_close(ctx->fs->nc, r->open, NULL, NULL);
    create_done(ctx, r);
}

void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    if (refuse_if_readonly(req) || !name_ok(req, name))
        return;
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    struct fs *fs = ctx->fs;
    if (S_ISREG(mode)) {
        nc_open(fs->nc, &ctx->cred, &ctx->dir->fh, name, NULL,
                NC_OPEN_WRITE | NC_OPEN_CREATE | NC_OPEN_EXCL, mode & 07777, mknod_reg_opened,
                ctx);
        return;
    }
    nc_mknod(fs->nc, &ctx->cred, &ctx->dir->fh, name, mode, major(rdev), minor(rdev),
             create_done, ctx);
}

static void remove_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (r->has_dir_attr)
        fs_inode_set_attr(ctx->dir, &r->dir_attr);
    fuse_reply_err(ctx->req, -r->err);
    entry_ctx_free(ctx);
}

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (refuse_if_readonly(req) || !name_ok(req, name))
        return;
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nc_remove(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, name, remove_done, ctx);
}

/* The kernel has already checked the type: unlink never gets a directory
 * and rmdir never a file, so both are one NFS REMOVE. */
void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name);
}

void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name);
}

/* After a rename, find the moved inode so later opens use its new name. */
static void rename_relookup_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (!r->err) {
        struct fs_inode *moved = fs_inode_find(ctx->fs, &r->fh);
        if (moved) {
            fs_inode_set_name(ctx->fs, moved, ctx->newdir, ctx->newname);
            if (r->has_attr)
                fs_inode_set_attr(moved, &r->attr);
        }
    }
    fuse_reply_err(ctx->req, 0);
    entry_ctx_free(ctx);
}

static void rename_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (r->err) {
        fuse_reply_err(ctx->req, -r->err);
        entry_ctx_free(ctx);
        return;
    }
    nc_lookup(ctx->fs->nc, &ctx->cred, &ctx->newdir->fh, ctx->newname, rename_relookup_done, ctx);
}

void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags)
{
    if (refuse_if_readonly(req) || !name_ok(req, name) || !name_ok(req, newname))
        return;
    if (flags) {
        /* NFSv4.0 RENAME can neither refuse to replace nor exchange atomically. */
        fuse_reply_err(req, EINVAL);
        return;
    }
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx || !(ctx->newname = strdup(newname))) {
        if (ctx)
            entry_ctx_free(ctx);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->newdir = fs_inode_get(ctx->fs, newparent);
    fs_inode_ref(ctx->newdir);
    nc_rename(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, name, &ctx->newdir->fh, newname,
              rename_done, ctx);
}

static void link_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (r->err) {
        fuse_reply_err(ctx->req, -r->err);
    } else {
        struct fs *fs = ctx->fs;
        /* ctx->dir is the linked inode here; newdir the directory. */
        struct fs_inode *inode = ctx->dir;
        if (r->has_attr)
            fs_inode_set_attr(inode, &r->attr);
        if (r->has_dir_attr)
            fs_inode_set_attr(ctx->newdir, &r->dir_attr);
        struct fuse_entry_param e;
        fs_entry_param(fs, inode, &e);
        fuse_reply_entry(ctx->req, &e);
    }
    entry_ctx_free(ctx);
}

void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    if (refuse_if_readonly(req) || !name_ok(req, newname))
        return;
    struct entry_ctx *ctx = entry_ctx_new(req, ino, NULL);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->newdir = fs_inode_get(ctx->fs, newparent);
    fs_inode_ref(ctx->newdir);
    nc_link(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, &ctx->newdir->fh, newname, link_done, ctx);
}
