/*
 * The life of a FUSE request that waits for NFS.
 *
 * The kernel must get exactly one answer per request: none leaves a process
 * hanging in the kernel, two answer the wrong request once the unique id is
 * reused. So the request sits in one fuse_req_t field of its context, filled
 * once by fs_req_hold() and emptied by the fs_reply_*() that answers it; a
 * second answer finds the field empty, and freeing a context whose field is
 * still set means a missing answer. Both are assertions, because either is a
 * bug in the code that reached it, not a condition to handle.
 */
#include "fs_internal.h"

#include <assert.h>
#include <errno.h>

void fs_req_hold(fuse_req_t *slot, fuse_req_t req)
{
    assert(*slot == NULL);
    *slot = req;
    fs_from_req(req)->requests_waiting++;
}

void fs_req_assert_answered(fuse_req_t slot)
{
    assert(slot == NULL);
    (void)slot;
}

/* Takes the request out of its slot: from here on nothing can answer it again. */
static fuse_req_t take(fuse_req_t *slot)
{
    fuse_req_t req = *slot;
    assert(req != NULL);
    *slot = NULL;
    struct fs *fs = fs_from_req(req);
    assert(fs->requests_waiting > 0);
    fs->requests_waiting--;
    return req;
}

void fs_reply_err(fuse_req_t *slot, int err)
{
    assert(err <= 0);
    fuse_reply_err(take(slot), -err);
}

void fs_reply_entry(fuse_req_t *slot, struct fs_inode *inode)
{
    fuse_req_t req = take(slot);
    struct fs *fs = fs_from_req(req);
    struct fuse_entry_param e;
    fs_entry_param(fs, inode, &e);
    /* An interrupted caller never sees the entry, and no forget will come. */
    if (fuse_reply_entry(req, &e) == 0)
        inode->nlookup++;
    else
        fs_inode_put_if_unused(fs, inode);
}

void fs_reply_negative_entry(fuse_req_t *slot)
{
    fuse_req_t req = take(slot);
    struct fuse_entry_param e = {0};
    e.entry_timeout = fs_from_req(req)->config.negative_timeout;
    fuse_reply_entry(req, &e);
}

int fs_reply_create(fuse_req_t *slot, struct fs_inode *inode, const struct fuse_file_info *fi)
{
    fuse_req_t req = take(slot);
    struct fs *fs = fs_from_req(req);
    struct fuse_entry_param e;
    fs_entry_param(fs, inode, &e);
    int rc = fuse_reply_create(req, &e, fi);
    if (rc == 0)
        inode->nlookup++;
    return rc;
}

int fs_reply_open(fuse_req_t *slot, const struct fuse_file_info *fi)
{
    return fuse_reply_open(take(slot), fi);
}

void fs_reply_attr(fuse_req_t *slot, struct fs_inode *inode, const struct nc_attr *attr,
                   double timeout)
{
    struct stat st;
    fs_attr_to_stat(inode, attr, &st);
    fuse_reply_attr(take(slot), &st, timeout);
}

int fs_reply_buf(fuse_req_t *slot, const void *data, size_t size)
{
    return fuse_reply_buf(take(slot), data, size);
}

void fs_reply_write(fuse_req_t *slot, size_t count)
{
    fuse_reply_write(take(slot), count);
}

void fs_reply_readlink(fuse_req_t *slot, const char *target)
{
    fuse_reply_readlink(take(slot), target);
}

void fs_reply_statfs(fuse_req_t *slot, const struct statvfs *sv)
{
    fuse_reply_statfs(take(slot), sv);
}

void fs_reply_lock(fuse_req_t *slot, const struct flock *lock)
{
    fuse_reply_lock(take(slot), lock);
}
