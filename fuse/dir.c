/*
 * Directory listings: READDIR with attributes (readdirplus), so `ls -l`
 * needs no per-entry GETATTR.
 *
 * The kernel asks for a page of entries at a time, resuming at the offset of
 * the last entry it took. Offsets are NFS cookies (the server never uses 0,
 * 1 or 2, so "." and ".." take 1 and 2). One NFS READDIR fetches far more
 * than a kernel page, so each open directory keeps the last batch and serves
 * the kernel's next calls from it.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DOT_OFFSET 1
#define DOTDOT_OFFSET 2
#define READDIR_BYTES (128u << 10)

struct dir_entry {
    char *name;
    uint64_t cookie;
    bool has_attr;
    struct nc_fh fh;
    struct nc_attr attr;
};

struct dir_handle {
    struct fs_inode *inode;
    uint64_t cookieverf;
    /* The batch in hand: entries that follow the cookie `batch_after`. */
    bool has_batch;
    uint64_t batch_after;
    struct dir_entry *entries;
    unsigned nentries;
    bool batch_eof;
    bool busy; /* a READDIR is in flight (the kernel sends one request at a time) */
};

static void batch_free(struct dir_handle *dh)
{
    for (unsigned i = 0; i < dh->nentries; i++)
        free(dh->entries[i].name);
    free(dh->entries);
    dh->entries = NULL;
    dh->nentries = 0;
    dh->has_batch = false;
}

void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct dir_handle *dh = calloc(1, sizeof(*dh));
    if (!dh) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    dh->inode = fs_inode_get(fs, ino);
    fs_inode_ref(dh->inode);
    fi->fh = (uint64_t)(uintptr_t)dh;
    if (fuse_reply_open(req, fi) != 0) {
        /* The opener is gone; no releasedir will come. */
        fs_inode_unref(fs, dh->inode);
        free(dh);
    }
}

void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
    batch_free(dh);
    fs_inode_unref(fs, dh->inode);
    free(dh);
    fuse_reply_err(req, 0);
}

void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    /* Directory operations are synchronous on the server already. */
    fuse_reply_err(req, 0);
}

/* Adds one entry; returns false when the kernel's buffer is full. */
static bool add_entry(fuse_req_t req, struct fs *fs, char *buf, size_t size, size_t *pos,
                      const char *name, struct fs_inode *inode, const struct nc_attr *attr,
                      uint64_t next_off)
{
    struct fuse_entry_param e = {0};
    if (inode) {
        fs_attr_to_stat(inode, attr, &e.attr);
        e.ino = fs_inode_ino(fs, inode);
        e.generation = inode->generation;
        e.attr_timeout = fs->config.attr_timeout;
        e.entry_timeout = fs->config.entry_timeout;
    } else if (attr) {
        /* No inode handed out ("." / "..", or no attributes): a plain entry. */
        e.attr.st_ino = attr->fileid;
        e.attr.st_mode = attr->mode;
    }
    size_t need = fuse_add_direntry_plus(req, buf + *pos, size - *pos, name, &e, (off_t)next_off);
    if (need > size - *pos)
        return false;
    *pos += need;
    if (inode)
        inode->nlookup++; /* the kernel now holds this entry */
    return true;
}

/* Fills the reply from the batch, starting after cookie `after`. */
static void reply_from_batch(fuse_req_t req, struct fs *fs, struct dir_handle *dh, size_t size,
                             uint64_t after, bool with_dots, bool with_dotdot)
{
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t pos = 0;
    bool full = false;
    if (with_dots) {
        struct nc_attr a = dh->inode->attr;
        full = !add_entry(req, fs, buf, size, &pos, ".", NULL, &a, DOT_OFFSET);
    }
    if (!full && with_dotdot) {
        struct nc_attr a = dh->inode->parent ? dh->inode->parent->attr : dh->inode->attr;
        full = !add_entry(req, fs, buf, size, &pos, "..", NULL, &a, DOTDOT_OFFSET);
    }
    unsigned i = 0;
    if (after != dh->batch_after) {
        while (i < dh->nentries && dh->entries[i].cookie != after)
            i++;
        i++; /* start after the entry whose cookie the kernel gave back */
    }
    for (; !full && i < dh->nentries; i++) {
        struct dir_entry *de = &dh->entries[i];
        struct fs_inode *inode = NULL;
        if (de->has_attr) {
            inode = fs_inode_find_or_add(fs, &de->fh, &de->attr);
            if (inode)
                fs_inode_set_name(fs, inode, dh->inode, de->name);
        }
        full = !add_entry(req, fs, buf, size, &pos, de->name, inode,
                          de->has_attr ? &de->attr : NULL, de->cookie);
        if (full && inode)
            fs_inode_drop_if_unused(fs, inode); /* it goes out in the next reply */
    }
    fuse_reply_buf(req, buf, pos);
    free(buf);
}

/* Does the batch hold what comes after `after`? */
static bool batch_covers(const struct dir_handle *dh, uint64_t after)
{
    if (!dh->has_batch)
        return false;
    if (after == dh->batch_after)
        return true;
    for (unsigned i = 0; i < dh->nentries; i++) {
        if (dh->entries[i].cookie == after)
            /* The batch continues past it, or the directory ends there. */
            return i + 1 < dh->nentries || dh->batch_eof;
    }
    return false;
}

struct readdir_ctx {
    fuse_req_t req;
    struct fs *fs;
    struct dir_handle *dh;
    size_t size;
    uint64_t after;
    bool with_dots;
    bool with_dotdot;
};

static void readdir_done(void *arg, const struct nc_reply *r)
{
    struct readdir_ctx *ctx = arg;
    struct dir_handle *dh = ctx->dh;
    dh->busy = false;
    if (r->err) {
        fuse_reply_err(ctx->req, -r->err);
        free(ctx);
        return;
    }
    batch_free(dh);
    dh->entries = calloc(r->nentries ? r->nentries : 1, sizeof(*dh->entries));
    if (!dh->entries) {
        fuse_reply_err(ctx->req, ENOMEM);
        free(ctx);
        return;
    }
    for (uint32_t i = 0; i < r->nentries; i++) {
        struct dir_entry *de = &dh->entries[dh->nentries];
        const struct nc_dirent *src = &r->entries[i];
        de->name = strdup(src->name);
        if (!de->name)
            break;
        de->cookie = src->cookie;
        de->has_attr = src->has_attr;
        de->fh = src->fh;
        de->attr = src->attr;
        dh->nentries++;
    }
    dh->has_batch = true;
    dh->batch_after = ctx->after;
    dh->batch_eof = r->eof;
    dh->cookieverf = r->cookieverf;
    reply_from_batch(ctx->req, ctx->fs, dh, ctx->size, ctx->after, ctx->with_dots,
                     ctx->with_dotdot);
    free(ctx);
}

void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
    bool with_dots = off == 0;
    bool with_dotdot = off <= DOT_OFFSET;
    uint64_t after = off <= DOTDOT_OFFSET ? 0 : (uint64_t)off;
    /* Offset 0 is a new listing (opendir or rewinddir): always ask the
     * server, so that other clients' changes show. */
    if (off != 0 && batch_covers(dh, after)) {
        reply_from_batch(req, fs, dh, size, after, with_dots, with_dotdot);
        return;
    }
    struct readdir_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx || dh->busy) {
        free(ctx);
        fuse_reply_err(req, ctx ? EBUSY : ENOMEM);
        return;
    }
    ctx->req = req;
    ctx->fs = fs;
    ctx->dh = dh;
    ctx->size = size;
    ctx->after = after;
    ctx->with_dots = with_dots;
    ctx->with_dotdot = with_dotdot;
    dh->busy = true;
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    nc_readdir(fs->nc, &cred, &dh->inode->fh, after, after ? dh->cookieverf : 0, READDIR_BYTES,
               readdir_done, ctx);
}
