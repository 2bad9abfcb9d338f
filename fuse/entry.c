/*
 * Name operations: lookup and forget, making and removing names, rename
 * and link.
 *
 * Each request gets a small context that carries the FUSE request to the
 * NFS callback, which answers it and frees the context. Every change keeps
 * the name index (inode.c) true to what the server now has, and marks the
 * attributes it changed stale unless the reply brought fresh ones.
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
    /* link: the inode linked; rename: the destination directory */
    struct fs_inode *other;
    char *newname;
    struct nc_cred cred;
    uint64_t stamp; /* fs_attr_stamp() as the request leaves */
};

static struct entry_ctx *entry_ctx_new(fuse_req_t req, fuse_ino_t dir_ino, const char *name)
{
    struct fs *fs = fs_from_req(req);
    struct entry_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ctx->name = strdup(name);
    if (!ctx->name) {
        free(ctx);
        return NULL;
    }
    fs_req_hold(&ctx->req, req);
    ctx->fs = fs;
    ctx->dir = fs_inode_get(fs, dir_ino);
    fs_inode_ref(ctx->dir);
    fs_req_cred(fs, req, &ctx->cred);
    ctx->stamp = fs_attr_stamp(fs);
    return ctx;
}

static void entry_ctx_free(struct entry_ctx *ctx)
{
    fs_req_assert_answered(ctx->req);
    fs_inode_unref(ctx->fs, ctx->dir);
    if (ctx->other)
        fs_inode_unref(ctx->fs, ctx->other);
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

static void note_dir_attr(struct entry_ctx *ctx, const struct nc_reply *r)
{
    if (r->has_dir_attr)
        fs_inode_set_attr(ctx->fs, ctx->dir, &r->dir_attr, ctx->stamp);
    else
        fs_inode_attr_stale(ctx->fs, ctx->dir);
}

/* Answers with the entry of reply's object (fh + attr), remembering its
 * name. made_dir: the reply is to our mkdir, so the directory is empty. */
static void reply_entry(struct entry_ctx *ctx, const struct nc_reply *r, bool made_dir)
{
    struct fs *fs = ctx->fs;
    struct fs_inode *inode = fs_inode_find_or_add(fs, &r->fh);
    if (!inode) {
        fs_reply_err(&ctx->req, -ENOMEM);
        return;
    }
    if (r->has_attr)
        fs_inode_set_attr(fs, inode, &r->attr, ctx->stamp);
    if (!inode->has_attr) {
        /* A server that gave no attributes: nothing honest to answer. */
        fs_inode_put_if_unused(fs, inode);
        fs_reply_err(&ctx->req, -EIO);
        return;
    }
    fs_inode_add_name(fs, inode, ctx->dir, ctx->name);
    if (made_dir && S_ISDIR(inode->attr.mode))
        fs_dircache_made(fs, inode, &inode->attr);
    fs_reply_entry(&ctx->req, inode);
}

/* --- lookup, forget --- */

static void lookup_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (r->err == -ENOENT)
        fs_name_remove(ctx->fs, ctx->dir, ctx->name);
    if (r->err == -ENOENT && ctx->fs->config.negative_timeout > 0)
        fs_reply_negative_entry(&ctx->req); /* the kernel caches the absence */
    else if (r->err)
        fs_reply_err(&ctx->req, r->err);
    else
        reply_entry(ctx, r, false);
    entry_ctx_free(ctx);
}

void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (!name_ok(req, name))
        return;
    struct fs *fs = fs_from_req(req);
    double remaining;
    if (fs_dircache_absent(fs, fs_inode_get(fs, parent), name, &remaining)) {
        /* Cached by the kernel no longer than we may vouch for it. */
        struct fuse_entry_param e = {0};
        e.entry_timeout = remaining;
        fuse_reply_entry(req, &e);
        return;
    }
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    nc_lookup(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, name, lookup_done, ctx);
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

/* --- mkdir, symlink, mknod --- */

/* Creation replies: an error (no negative entry) or the new entry. */
static void create_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    note_dir_attr(ctx, r);
    fs_dircache_change_done(ctx->fs, ctx->dir, ctx->name, NULL, &r->dir_change);
    if (r->err)
        fs_reply_err(&ctx->req, r->err);
    else /* (a resent mkdir found done carries no change_info: not known empty) */
        reply_entry(ctx, r, r->dir_change.valid);
    entry_ctx_free(ctx);
}

static struct entry_ctx *create_ctx(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    if (refuse_if_readonly(req) || !name_ok(req, name))
        return NULL;
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx)
        fuse_reply_err(req, ENOMEM);
    else
        fs_dircache_change_start(ctx->dir);
    return ctx;
}

void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct entry_ctx *ctx = create_ctx(req, parent, name);
    if (ctx)
        nc_mkdir(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, name, mode & 07777, create_done, ctx);
}

void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    struct entry_ctx *ctx = create_ctx(req, parent, name);
    if (ctx)
        nc_symlink(ctx->fs->nc, &ctx->cred, &ctx->dir->fh, name, link, create_done, ctx);
}

/* mknod of a regular file: NFSv4 makes those only by OPEN; close at once. */
static void mknod_reg_opened(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    if (!r->err)
        nc_close(ctx->fs->nc, r->open, NULL, NULL);
    create_done(ctx, r);
}

void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    struct entry_ctx *ctx = create_ctx(req, parent, name);
    if (!ctx)
        return;
    struct fs *fs = ctx->fs;
    if (S_ISREG(mode)) {
        nc_open(fs->nc, &ctx->cred, &ctx->dir->fh, name, NULL,
                NC_OPEN_WRITE | NC_OPEN_CREATE | NC_OPEN_EXCL, mode & 07777, mknod_reg_opened, ctx);
        return;
    }
    nc_mknod(fs->nc, &ctx->cred, &ctx->dir->fh, name, mode, major(rdev), minor(rdev), create_done,
             ctx);
}

/* --- unlink, rmdir --- */

static void remove_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    note_dir_attr(ctx, r);
    fs_dircache_change_done(fs, ctx->dir, NULL, ctx->name, &r->dir_change);
    if (!r->err || r->err == -ENOENT) {
        /* Its link count (and ctime) changed; its other names still work. */
        struct fs_inode *gone = fs_name_lookup(fs, ctx->dir, ctx->name);
        if (gone)
            fs_inode_attr_stale(fs, gone);
        fs_name_remove(fs, ctx->dir, ctx->name);
    }
    fs_reply_err(&ctx->req, r->err);
    entry_ctx_free(ctx);
}

/*
 * A file closed just before it is unlinked or renamed over may still have
 * its release's CLOSE to go (the kernel does not wait for release). Sent
 * after the REMOVE, that CLOSE is what frees the file on the server, so
 * space would come back some time after unlink() returned; sent first, it
 * comes back with the REMOVE, as with a local disk or the kernel's client.
 */
static void when_target_closed(struct fs *fs, struct fs_inode *dir, const char *name,
                               void (*send)(struct fs *, void *), struct entry_ctx *ctx)
{
    struct fs_inode *target = fs_name_lookup(fs, dir, name);
    if (target)
        fs_inode_when_closed(fs, target, send, ctx);
    else
        send(fs, ctx);
}

static void remove_send(struct fs *fs, void *arg)
{
    struct entry_ctx *ctx = arg;
    fs_dircache_change_start(ctx->dir);
    nc_remove(fs->nc, &ctx->cred, &ctx->dir->fh, ctx->name, remove_done, ctx);
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
    when_target_closed(ctx->fs, ctx->dir, name, remove_send, ctx);
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

/* --- rename --- */

static void rename_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    struct fs_inode *newdir = ctx->other;
    if (newdir == ctx->dir) {
        fs_dircache_change_done(fs, newdir, ctx->newname, ctx->name, &r->dir_change);
    } else {
        fs_dircache_change_done(fs, ctx->dir, NULL, ctx->name, &r->from_dir_change);
        fs_dircache_change_done(fs, newdir, ctx->newname, NULL, &r->dir_change);
    }
    if (!r->err) {
        /* RENAME answers no attributes; the moved inode's ctime, the
         * replaced one's link count and both directories changed. */
        struct fs_inode *moved = fs_name_lookup(fs, ctx->dir, ctx->name);
        struct fs_inode *replaced = fs_name_lookup(fs, newdir, ctx->newname);
        if (moved)
            fs_inode_attr_stale(fs, moved);
        if (replaced)
            fs_inode_attr_stale(fs, replaced);
        fs_inode_attr_stale(fs, ctx->dir);
        fs_inode_attr_stale(fs, newdir);
        fs_name_rename(fs, ctx->dir, ctx->name, newdir, ctx->newname);
    }
    fs_reply_err(&ctx->req, r->err);
    entry_ctx_free(ctx);
}

static void rename_send(struct fs *fs, void *arg)
{
    struct entry_ctx *ctx = arg;
    fs_dircache_change_start(ctx->dir);
    if (ctx->other != ctx->dir)
        fs_dircache_change_start(ctx->other);
    nc_rename(fs->nc, &ctx->cred, &ctx->dir->fh, ctx->name, &ctx->other->fh, ctx->newname,
              rename_done, ctx);
}

void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags)
{
    if (refuse_if_readonly(req) || !name_ok(req, name) || !name_ok(req, newname))
        return;
    if (flags) {
        /* NFSv4.0 RENAME can neither refuse to replace nor exchange atomically;
         * EINVAL makes tools such as mv fall back to a plain rename. */
        fuse_reply_err(req, EINVAL);
        return;
    }
    struct entry_ctx *ctx = entry_ctx_new(req, parent, name);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->newname = strdup(newname);
    if (!ctx->newname) {
        fs_reply_err(&ctx->req, -ENOMEM);
        entry_ctx_free(ctx);
        return;
    }
    ctx->other = fs_inode_get(ctx->fs, newparent);
    fs_inode_ref(ctx->other);
    when_target_closed(ctx->fs, ctx->other, newname, rename_send, ctx);
}

/* --- link --- */

static void link_done(void *arg, const struct nc_reply *r)
{
    struct entry_ctx *ctx = arg;
    struct fs *fs = ctx->fs;
    struct fs_inode *inode = ctx->other;
    note_dir_attr(ctx, r);
    fs_dircache_change_done(fs, ctx->dir, ctx->name, NULL, &r->dir_change);
    if (r->err) {
        fs_reply_err(&ctx->req, r->err);
        entry_ctx_free(ctx);
        return;
    }
    if (r->has_attr)
        fs_inode_set_attr(fs, inode, &r->attr, ctx->stamp);
    else
        fs_inode_attr_stale(fs, inode);
    /* The newest name first: the one most likely to still exist. */
    fs_inode_add_name(fs, inode, ctx->dir, ctx->name);
    fs_reply_entry(&ctx->req, inode);
    entry_ctx_free(ctx);
}

void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
    if (refuse_if_readonly(req) || !name_ok(req, newname))
        return;
    struct entry_ctx *ctx = entry_ctx_new(req, newparent, newname);
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    ctx->other = fs_inode_get(ctx->fs, ino);
    fs_inode_ref(ctx->other);
    fs_dircache_change_start(ctx->dir);
    nc_link(ctx->fs->nc, &ctx->cred, &ctx->other->fh, &ctx->dir->fh, newname, link_done, ctx);
}
