/*
 * Write-behind.
 *
 * nc_write() needs the data until its callback (it may send it again after a
 * server restart), so each write keeps a copy while in flight, and a write
 * is answered to the kernel as soon as its WRITE (UNSTABLE) is queued, as long as the bytes
 * and WRITEs in flight for the whole mount stay under their bounds; past
 * them, answers wait for replies, which throttles the writers. An error that
 * comes back after write() returned is kept on the open file and returned by
 * its next write, flush (close) or fsync, then cleared (as sshfs does).
 *
 * Order: the server may run the WRITEs it has in any order, so a write that
 * overlaps one still in flight on the same file is held back (with a copy of
 * its data) until that one is answered; held writes go out in arrival order.
 *
 * O_APPEND: the kernel sends the offset of its own idea of the end of the
 * file (i_size, which getattr keeps up to date and write-behind extends).
 * We trust it: appends from several clients to one file are not atomic over
 * NFS anyway, and within this client the kernel orders them.
 *
 * Verifiers: every UNSTABLE reply carries the server's write verifier. One
 * that changes between writes, or a COMMIT whose verifier differs (file.c),
 * means the server restarted and may have lost unstable data that we no
 * longer hold: that is reported as EIO, never dropped silently.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct fs_write {
    struct fs_write *next; /* in the inode's sent list or held queue */
    struct fs_write *prev; /* sent list only */
    struct fs *fs;
    struct fs_file *file;
    uint64_t offset;
    uint32_t size;
    char *data; /* our copy, until answered */
};

static bool overlaps_sent(const struct fs_inode *inode, const struct fs_write *w)
{
    for (const struct fs_write *s = inode->writes_sent; s; s = s->next)
        if (w->offset < s->offset + s->size && s->offset < w->offset + w->size)
            return true;
    return false;
}

static void write_done(void *arg, const struct nc_reply *r);

static void send_write(struct fs_write *w)
{
    struct fs_inode *inode = w->file->inode;
    w->prev = NULL;
    w->next = inode->writes_sent;
    if (w->next)
        w->next->prev = w;
    inode->writes_sent = w;
    nc_write(w->fs->nc, &w->file->cred, w->file->open, w->offset, w->data, w->size, false,
             write_done, w);
}

static void unlink_sent(struct fs_inode *inode, struct fs_write *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        inode->writes_sent = w->next;
    if (w->next)
        w->next->prev = w->prev;
}

/* Sends held writes that no longer overlap anything in flight, in order. */
static void send_held(struct fs_inode *inode)
{
    while (inode->writes_held_head && !overlaps_sent(inode, inode->writes_held_head)) {
        struct fs_write *w = inode->writes_held_head;
        inode->writes_held_head = w->next;
        if (!inode->writes_held_head)
            inode->writes_held_tail = NULL;
        send_write(w);
    }
}

static bool under_bounds(const struct fs *fs)
{
    return fs->write_bytes < fs->write_bytes_limit && fs->write_count < fs->write_count_limit;
}

void fs_writes_release_held(struct fs *fs, bool all)
{
    while (fs->held_head && (all || under_bounds(fs))) {
        struct fs_held_reply *h = fs->held_head;
        fs->held_head = h->next;
        if (!fs->held_head)
            fs->held_tail = NULL;
        /* An error that came back meanwhile is this write's too (it stays
         * pending for flush/fsync: see fs_op_write). */
        int err = h->file->error;
        if (err)
            fs_reply_err(&h->req, err);
        else
            fs_reply_write(&h->req, h->size);
        free(h);
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
        /* A short UNSTABLE write means the server is out of something; the
         * kernel was told it all went, so the rest cannot be retried from here. */
        elog_warn(FS_COMPONENT, "server wrote %u of %u bytes", r->written, w->size);
        err = -EIO;
    }
    if (!err && !r->stable) {
        if (file->has_verifier && file->verifier != r->verifier) {
            elog_error(FS_COMPONENT, "write verifier changed: the server restarted and may "
                                     "have lost unstable writes");
            err = -EIO;
        }
        file->verifier = r->verifier;
        file->has_verifier = true;
        file->unstable_gen++;
    }
    if (err && !file->error)
        file->error = err;
    unlink_sent(inode, w);
    fs->write_bytes -= w->size;
    fs->write_count--;
    inode->writes_in_flight--;
    /* The server's mtime and size moved: attributes from requests sent
     * before now are outdated, and the next getattr asks the server. */
    fs_inode_attr_stale(fs, inode);
    free(w->data);
    free(w);
    send_held(inode);
    fs_writes_release_held(fs, fs->draining);
    fs_inode_writes_done(fs, inode);
}

/* Accounts a write to the mount's bound and the inode's size and idleness. */
static struct fs_write *write_new(struct fs *fs, struct fs_file *file, uint64_t offset,
                                  uint32_t size)
{
    struct fs_write *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->fs = fs;
    w->file = file;
    w->offset = offset;
    w->size = size;
    struct fs_inode *inode = file->inode;
    fs->write_bytes += size;
    fs->write_count++;
    inode->writes_in_flight++;
    if (offset + size > inode->write_end)
        inode->write_end = offset + size;
    return w;
}

/* Queues or sends one piece; false when memory ran out (nothing was done). */
static bool start_write(struct fs *fs, struct fs_file *file, uint64_t offset, const char *data,
                        uint32_t size)
{
    struct fs_inode *inode = file->inode;
    struct fs_write *w = write_new(fs, file, offset, size);
    if (!w)
        return false;
    w->data = malloc(size);
    if (!w->data) {
        fs->write_bytes -= size;
        fs->write_count--;
        inode->writes_in_flight--;
        free(w);
        return false;
    }
    memcpy(w->data, data, size);
    if (!inode->writes_held_head && !overlaps_sent(inode, w)) {
        send_write(w);
        return true;
    }
    if (inode->writes_held_tail)
        inode->writes_held_tail->next = w;
    else
        inode->writes_held_head = w;
    inode->writes_held_tail = w;
    return true;
}

void fs_op_write(fuse_req_t req, fuse_ino_t ino FS_UNUSED, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi)
{
    struct fs *fs = fs_from_req(req);
    struct fs_file *file = (struct fs_file *)(uintptr_t)fi->fh;
    if (file->error) {
        /* Fail fast, but keep the error for flush/fsync: the kernel splits a
         * write() into several requests (an unaligned 1 MiB buffer spans 257
         * pages) and turns an error on a later piece into a short count, so
         * only close or fsync is sure to report it. */
        fuse_reply_err(req, -file->error);
        return;
    }
    uint32_t max = nc_client_max_write(fs->nc);
    size_t done = 0;
    while (done < size) {
        uint32_t n = size - done > max ? max : (uint32_t)(size - done);
        if (!start_write(fs, file, (uint64_t)off + done, buf + done, n))
            break;
        done += n;
    }
    if (done == 0) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    /* On a short count write() returns what went, as with any short write. */
    if (under_bounds(fs) && !fs->held_head) {
        fuse_reply_write(req, done);
        return;
    }
    struct fs_held_reply *h = calloc(1, sizeof(*h));
    if (!h) {
        fuse_reply_write(req, done); /* over the bound rather than failing a sent write */
        return;
    }
    fs_req_hold(&h->req, req);
    h->file = file;
    h->size = done;
    if (fs->held_tail)
        fs->held_tail->next = h;
    else
        fs->held_head = h;
    fs->held_tail = h;
}
