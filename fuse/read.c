/*
 * read: one NFS READ per request when it fits the server's maximum, answered
 * straight from the reply buffer (no copy); larger requests are split into
 * READs sent together and assembled.
 *
 * Reads use the opener's credentials, like writes: access to an open file
 * was decided at open (a descriptor passed to another process, or a process
 * that dropped privileges, keeps reading), which is also what NFS servers
 * expect of I/O under an open stateid.
 *
 * A read waits for write-behind on the same file: the server would answer
 * with the data from before writes it has not received yet.
 */
#include "fs_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct read_ctx {
    fuse_req_t req;
    struct fs *fs;
    struct fs_file *file;
    uint64_t offset;
    size_t size;
    char *buf;      /* the assembled answer, unless one READ answers it all */
    unsigned parts; /* READs outstanding */
    uint64_t end;   /* where the file ended, as far as the replies tell */
    int err;
};

struct read_part {
    struct read_ctx *ctx;
    uint64_t offset;
    uint32_t count;
};

static void part_done(void *arg, const struct nc_reply *r);

static void part_send(struct read_part *part)
{
    struct read_ctx *ctx = part->ctx;
    ctx->parts++;
    struct fs_file *file = ctx->file;
    if (file->open)
        nc_read(ctx->fs->nc, &file->cred, file->open, part->offset, part->count, part_done, part);
    else
        nc_read_stateless(ctx->fs->nc, &file->cred, &file->inode->fh, part->offset, part->count,
                          part_done, part);
}

static void read_finish(struct read_ctx *ctx)
{
    if (ctx->err) {
        fs_reply_err(&ctx->req, ctx->err);
    } else {
        uint64_t end = ctx->end < ctx->offset + ctx->size ? ctx->end : ctx->offset + ctx->size;
        fs_reply_buf(&ctx->req, ctx->buf, end > ctx->offset ? end - ctx->offset : 0);
    }
    fs_req_assert_answered(ctx->req);
    free(ctx->buf);
    free(ctx);
}

static void part_done(void *arg, const struct nc_reply *r)
{
    struct read_part *part = arg;
    struct read_ctx *ctx = part->ctx;
    ctx->parts--;
    uint32_t got = r->err ? 0 : (r->count < part->count ? r->count : part->count);
    bool at_end = !r->err && (r->eof || r->count == 0);
    if (r->err) {
        if (!ctx->err)
            ctx->err = r->err;
    } else if (!ctx->buf && (got == part->count || at_end)) {
        /* The common case: one READ answered the whole request. */
        fs_reply_buf(&ctx->req, r->data, got);
        fs_req_assert_answered(ctx->req);
        free(part);
        free(ctx);
        return;
    } else if (!ctx->buf && !(ctx->buf = malloc(ctx->size))) {
        if (!ctx->err)
            ctx->err = -ENOMEM;
    } else {
        memcpy(ctx->buf + (part->offset - ctx->offset), r->data, got);
        if (at_end) {
            if (part->offset + got < ctx->end)
                ctx->end = part->offset + got;
        } else if (got < part->count && !ctx->err) {
            /* Short but not at the end: the kernel would take a short
             * answer for the end of the file, so read on. */
            part->offset += got;
            part->count -= got;
            part_send(part);
            return;
        }
    }
    free(part);
    if (ctx->parts == 0)
        read_finish(ctx);
}

static void read_start(struct fs *fs, void *arg)
{
    struct read_ctx *ctx = arg;
    uint32_t max = nc_client_max_read(fs->nc);
    if (ctx->size > max && !(ctx->buf = malloc(ctx->size))) {
        ctx->err = -ENOMEM;
        read_finish(ctx);
        return;
    }
    /* Replies come only from the loop, never inside nc_read(), so the count
     * of parts cannot drop to zero while we are still sending. */
    for (size_t done = 0; done < ctx->size;) {
        struct read_part *part = calloc(1, sizeof(*part));
        if (!part) {
            ctx->err = -ENOMEM;
            break;
        }
        size_t left = ctx->size - done;
        part->ctx = ctx;
        part->offset = ctx->offset + done;
        part->count = left > max ? max : (uint32_t)left;
        done += part->count;
        part_send(part);
    }
    if (ctx->parts == 0)
        read_finish(ctx);
}

/*
 * Answers from the data read along with the OPEN (file.c) when it covers
 * the request and nothing we wrote since could be missing from it. It
 * serves one read, the kernel's first (through the page cache that one
 * covers a small file whole): later reads go to the server, so that a
 * process polling with O_DIRECT sees other clients' changes.
 */
static bool read_prefetched(struct fs *fs, fuse_req_t req, struct fs_file *file, size_t size,
                            uint64_t offset)
{
    if (!file->has_prefetch)
        return false;
    uint64_t len = file->prefetch_len;
    /* A snapshot also goes old when the file's attributes, revalidated
     * since, show another client's change: a reader polling a file that
     * grows (tail -f) must see what was added. */
    bool current = file->prefetch_version == file->inode->data_version &&
                   (!file->snapshot || file->inode->attr.change == file->prefetch_change);
    bool usable = current && offset <= len && (offset + size <= len || file->prefetch_eof);
    if (usable) {
        size_t n = offset + size <= len ? size : (size_t)(len - offset);
        fuse_reply_buf(req, n ? file->prefetch + offset : NULL, n);
    }
    /* A snapshot stands in for open state: it goes only when it is old. */
    if (!file->snapshot || !current)
        fs_file_drop_prefetch(fs, file);
    return usable;
}

void fs_op_read(fuse_req_t req, fuse_ino_t ino FS_UNUSED, size_t size, off_t off,
                struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    if (size == 0) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (read_prefetched(fs, req, file, size, (uint64_t)off))
        return;
    struct read_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fs_req_hold(&ctx->req, req);
    ctx->fs = fs;
    ctx->file = file;
    ctx->offset = (uint64_t)off;
    ctx->size = size;
    ctx->end = UINT64_MAX;
    fs_inode_when_idle(fs, file->inode, read_start, ctx);
}
