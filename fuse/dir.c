/*
 * Directory listings: READDIR with attributes (readdirplus), so `ls -l`
 * needs no per-entry GETATTR.
 *
 * The kernel asks for a buffer of entries at a time, resuming at the offset
 * of the last entry it took. Offsets are the server's cookies; NFSv4 never
 * hands out 0, 1 or 2, so "." and ".." take 1 and 2 and 0 is the start. One
 * NFS READDIR fetches more than a kernel buffer holds, so each open
 * directory keeps its last batch and serves the kernel's next calls from
 * it. A listing from offset 0 (opendir, rewinddir) always asks the server,
 * so that other clients' new files show at once.
 *
 * Every entry handed to the kernel except "." and ".." counts a lookup, but
 * only once the kernel has taken the buffer.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DOT_OFFSET 1
#define DOTDOT_OFFSET 2
/* READDIR reply sizes: about twice the kernel's buffer (NFS entries with
 * attributes are larger than FUSE's), within these bounds. */
#define READDIR_BYTES_MIN (128u << 10)
#define READDIR_BYTES_MAX (1u << 20)
/* The smallest entry fuse_add_direntry_plus() writes. */
#define DIRENTPLUS_MIN_BYTES 152

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
    /* The batch in hand: the entries that follow cookie `batch_after`. */
    bool has_batch;
    uint64_t batch_after;
    struct dir_entry *entries;
    unsigned nentries;
    bool batch_eof;
    uint64_t batch_stamp; /* fs_attr_stamp() when its READDIR was sent */
    bool busy;            /* a READDIR is in flight (the kernel sends one at a time) */
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

void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino FS_UNUSED, struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
    batch_free(dh);
    fs_inode_unref(fs, dh->inode);
    free(dh);
    fuse_reply_err(req, 0);
}

void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino FS_UNUSED, int datasync FS_UNUSED,
                    struct fuse_file_info *fi FS_UNUSED)
{
    /* NFS directory operations are synchronous on the server already. */
    fuse_reply_err(req, 0);
}

/* A reply under construction. */
struct page {
    fuse_req_t req; /* only for fuse_add_direntry*(), which use no state of it */
    bool plus;      /* readdirplus: entries carry inodes and attributes */
    char *buf;
    size_t size;
    size_t pos;
    struct fs_inode **placed; /* inodes handed out, to count once delivered */
    size_t nplaced;
};

/* Adds one entry; false when it does not fit. */
static bool page_add(struct page *p, const char *name, const struct fuse_entry_param *e,
                     uint64_t next_off)
{
    size_t room = p->size - p->pos;
    size_t need =
        p->plus ? fuse_add_direntry_plus(p->req, p->buf + p->pos, room, name, e, (off_t)next_off)
                : fuse_add_direntry(p->req, p->buf + p->pos, room, name, &e->attr, (off_t)next_off);
    if (need > p->size - p->pos)
        return false;
    p->pos += need;
    return true;
}

/* "." and "..": no inode handed out, so no lookup counted (ino 0). */
static bool page_add_dot(struct page *p, const char *name, const struct nc_attr *attr,
                         uint64_t next_off)
{
    struct fuse_entry_param e = {0};
    e.attr.st_ino = attr->fileid;
    e.attr.st_mode = attr->mode;
    return page_add(p, name, &e, next_off);
}

/*
 * An entry without an inode (ino 0 tells the kernel so under readdirplus):
 * it shows the name and type, and the kernel looks it up when used. Without
 * attributes the type is unknown and the cookie stands in for the inode
 * number, which must not be 0.
 */
static bool page_add_plain(struct page *p, const struct dir_entry *de)
{
    struct fuse_entry_param e = {0};
    e.attr.st_mode = de->has_attr ? de->attr.mode & S_IFMT : 0;
    e.attr.st_ino = de->has_attr ? de->attr.fileid : de->cookie;
    return page_add(p, de->name, &e, de->cookie);
}

static bool page_add_entry(struct page *p, struct fs *fs, struct dir_handle *dh,
                           const struct dir_entry *de)
{
    if (!p->plus || !de->has_attr)
        return page_add_plain(p, de);
    struct fs_inode *inode = fs_inode_find_or_add(fs, &de->fh);
    if (!inode)
        return page_add_plain(p, de);
    if (!fs_inode_set_attr(fs, inode, &de->attr, dh->batch_stamp) && !inode->attr_valid) {
        /* We changed it after the server listed it and know no better: the
         * kernel keeps its own attributes. */
        fs_inode_put_if_unused(fs, inode);
        return page_add_plain(p, de);
    }
    struct fuse_entry_param e;
    fs_entry_param(fs, inode, &e);
    if (!page_add(p, de->name, &e, de->cookie)) {
        fs_inode_put_if_unused(fs, inode);
        return false;
    }
    fs_inode_add_name(fs, inode, dh->inode, de->name);
    p->placed[p->nplaced++] = inode;
    return true;
}

/* Answers from the batch, starting after cookie `after`. */
static void reply_from_batch(fuse_req_t *slot, struct fs *fs, struct dir_handle *dh, size_t size,
                             uint64_t after, bool with_dot, bool with_dotdot, bool plus)
{
    struct page p = {.req = *slot, .size = size, .plus = plus};
    p.buf = malloc(size);
    p.placed = calloc(size / DIRENTPLUS_MIN_BYTES + 1, sizeof(*p.placed));
    if (!p.buf || !p.placed) {
        free(p.buf);
        free(p.placed);
        fs_reply_err(slot, -ENOMEM);
        return;
    }
    bool full = false;
    if (with_dot)
        full = !page_add_dot(&p, ".", &dh->inode->attr, DOT_OFFSET);
    if (!full && with_dotdot) {
        struct fs_inode *parent = fs_inode_parent(dh->inode);
        const struct nc_attr *a = parent && parent->has_attr ? &parent->attr : &dh->inode->attr;
        full = !page_add_dot(&p, "..", a, DOTDOT_OFFSET);
    }
    unsigned i = 0;
    if (after != dh->batch_after) {
        while (i < dh->nentries && dh->entries[i].cookie != after)
            i++;
        i++; /* start after the entry whose cookie the kernel gave back */
    }
    for (; !full && i < dh->nentries; i++)
        full = !page_add_entry(&p, fs, dh, &dh->entries[i]);
    int rc = fs_reply_buf(slot, p.buf, p.pos);
    for (size_t k = 0; k < p.nplaced; k++) {
        if (rc == 0)
            p.placed[k]->nlookup++;
        else
            fs_inode_put_if_unused(fs, p.placed[k]); /* the kernel never saw them */
    }
    free(p.buf);
    free(p.placed);
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
    bool with_dot;
    bool with_dotdot;
    bool plus;
    uint64_t stamp;
};

static void readdir_ctx_free(struct readdir_ctx *ctx)
{
    fs_req_assert_answered(ctx->req);
    ctx->dh->busy = false;
    free(ctx);
}

static void readdir_done(void *arg, const struct nc_reply *r)
{
    struct readdir_ctx *ctx = arg;
    struct dir_handle *dh = ctx->dh;
    if (r->err) {
        fs_reply_err(&ctx->req, r->err);
        readdir_ctx_free(ctx);
        return;
    }
    batch_free(dh);
    dh->entries = calloc(r->nentries ? r->nentries : 1, sizeof(*dh->entries));
    if (!dh->entries) {
        fs_reply_err(&ctx->req, -ENOMEM);
        readdir_ctx_free(ctx);
        return;
    }
    for (uint32_t i = 0; i < r->nentries; i++) {
        struct dir_entry *de = &dh->entries[i];
        const struct nc_dirent *src = &r->entries[i];
        de->name = strdup(src->name);
        if (!de->name) {
            batch_free(dh);
            fs_reply_err(&ctx->req, -ENOMEM);
            readdir_ctx_free(ctx);
            return;
        }
        de->cookie = src->cookie;
        de->has_attr = src->has_attr;
        de->fh = src->fh;
        de->attr = src->attr;
        dh->nentries++;
    }
    dh->has_batch = true;
    dh->batch_after = ctx->after;
    dh->batch_eof = r->eof;
    dh->batch_stamp = ctx->stamp;
    dh->cookieverf = r->cookieverf;
    reply_from_batch(&ctx->req, ctx->fs, dh, ctx->size, ctx->after, ctx->with_dot, ctx->with_dotdot,
                     ctx->plus);
    readdir_ctx_free(ctx);
}

static void read_dir(fuse_req_t req, size_t size, off_t off, struct fuse_file_info *fi, bool plus)
{
    struct fs *fs = fs_from_req(req);
    struct dir_handle *dh = (struct dir_handle *)(uintptr_t)fi->fh;
    /* Cookies are unsigned 64-bit; the kernel carries them as loff_t. */
    uint64_t pos = (uint64_t)off;
    bool with_dot = pos == 0;
    bool with_dotdot = pos <= DOT_OFFSET;
    uint64_t after = pos <= DOTDOT_OFFSET ? 0 : pos;
    if (pos != 0 && batch_covers(dh, after)) {
        fuse_req_t slot = NULL;
        fs_req_hold(&slot, req);
        reply_from_batch(&slot, fs, dh, size, after, with_dot, with_dotdot, plus);
        return;
    }
    if (dh->busy) {
        fuse_reply_err(req, EBUSY);
        return;
    }
    struct readdir_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fs_req_hold(&ctx->req, req);
    ctx->fs = fs;
    ctx->dh = dh;
    ctx->size = size;
    ctx->after = after;
    ctx->with_dot = with_dot;
    ctx->with_dotdot = with_dotdot;
    ctx->plus = plus;
    dh->busy = true;
    size_t want = size * 2;
    uint32_t maxcount = want < READDIR_BYTES_MIN   ? READDIR_BYTES_MIN
                        : want > READDIR_BYTES_MAX ? READDIR_BYTES_MAX
                                                   : (uint32_t)want;
    struct nc_cred cred;
    fs_req_cred(fs, req, &cred);
    ctx->stamp = fs_attr_stamp(fs);
    nc_readdir(fs->nc, &cred, &dh->inode->fh, after, after ? dh->cookieverf : 0, maxcount,
               readdir_done, ctx);
}

void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino FS_UNUSED, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    read_dir(req, size, off, fi, true);
}

/* For kernels that do not offer readdirplus. */
void fs_op_readdir(fuse_req_t req, fuse_ino_t ino FS_UNUSED, size_t size, off_t off,
                   struct fuse_file_info *fi)
{
    read_dir(req, size, off, fi, false);
}
