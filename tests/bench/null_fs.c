/*
 * null_fs: the FUSE ceiling. A filesystem that answers every request from
 * memory, mounted with efsfuse's FUSE settings (1 MiB max_read/max_write,
 * the same init capabilities and open flags, readahead raised through the
 * bdi, one thread), so that what it reaches is the most any FUSE filesystem
 * can reach on this machine and what efsfuse loses is NFS's share.
 *
 *   null_fs MOUNTPOINT [--files N] [--file-size BYTES]
 *
 * The root holds N files f000000, f000001, ... of BYTES each (default
 * 20000 files of 1 GiB). Reads return one fixed pattern; writes are thrown
 * away but grow the file. Directories, symlinks, chmod/chown/utimes and
 * truncation work on the metadata only. Runs in the foreground until
 * unmounted (fusermount3 -u) or sent SIGTERM/SIGINT, then unmounts.
 */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define IO_MAX (1u << 20)
/* efsfuse's defaults: the kernel must cache as long as it does there. */
#define ATTR_TIMEOUT 1.0
#define ENTRY_TIMEOUT 1.0
#define READAHEAD_KB 1024
#define MAX_BACKGROUND 64

/* Every read is answered from here: fuse_reply_buf() hands it to writev()
 * as is, so no byte is copied in userspace. */
static char pattern[IO_MAX];

struct node {
    char *name; /* NULL: the slot is free */
    uint32_t parent;
    uint32_t hnext; /* next in the hash chain, or next free slot */
    uint32_t slot;  /* index in the parent's kids */
    uint64_t nlookup;
    uint64_t generation;
    bool linked;  /* still has a name; freed once unlinked and forgotten */
    bool changed; /* written or truncated since the last open */
    struct stat st;
    char *target; /* symlinks */
    /* Directories: children in creation order, 0 where one was removed,
     * so readdir offsets stay valid while rm -r unlinks behind them. */
    uint32_t *kids;
    uint32_t nkids, cap, live;
};

static struct node *nodes;
static uint32_t nnodes, nodes_cap, free_head;
static uint32_t *buckets;
static uint32_t nbuckets, nhashed;
static uid_t owner_uid;
static gid_t owner_gid;

static void out_of_memory(void)
{
    fprintf(stderr, "null_fs: out of memory\n");
    exit(1);
}

static uint32_t hash_name(uint32_t parent, const char *name)
{
    uint32_t h = 2166136261u ^ (parent * 2654435761u);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static void hash_insert(uint32_t ino)
{
    uint32_t b = hash_name(nodes[ino].parent, nodes[ino].name) & (nbuckets - 1);
    nodes[ino].hnext = buckets[b];
    buckets[b] = ino;
    nhashed++;
}

/* Chains stay short: the table doubles once there are as many names as buckets. */
static void hash_grow(void)
{
    if (nhashed < nbuckets)
        return;
    uint32_t *old = buckets;
    uint32_t old_n = nbuckets;
    nbuckets = old_n ? old_n * 2 : 1u << 16;
    buckets = calloc(nbuckets, sizeof(*buckets));
    if (!buckets)
        out_of_memory();
    nhashed = 0;
    for (uint32_t b = 0; b < old_n; b++)
        for (uint32_t ino = old[b], next; ino; ino = next) {
            next = nodes[ino].hnext;
            hash_insert(ino);
        }
    free(old);
}

static void hash_remove(uint32_t ino)
{
    uint32_t *link = &buckets[hash_name(nodes[ino].parent, nodes[ino].name) & (nbuckets - 1)];
    while (*link != ino)
        link = &nodes[*link].hnext;
    *link = nodes[ino].hnext;
    nhashed--;
}

static uint32_t find(uint32_t parent, const char *name)
{
    for (uint32_t ino = buckets[hash_name(parent, name) & (nbuckets - 1)]; ino;
         ino = nodes[ino].hnext)
        if (nodes[ino].parent == parent && strcmp(nodes[ino].name, name) == 0)
            return ino;
    return 0;
}

static struct timespec now_ts(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return ts;
}

static void kid_add(uint32_t dir, uint32_t ino)
{
    struct node *d = &nodes[dir];
    if (d->nkids == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->kids = realloc(d->kids, d->cap * sizeof(*d->kids));
        if (!d->kids)
            out_of_memory();
    }
    nodes[ino].slot = d->nkids;
    d->kids[d->nkids++] = ino;
    d->live++;
}

static void kid_remove(uint32_t dir, uint32_t ino)
{
    struct node *d = &nodes[dir];
    d->kids[nodes[ino].slot] = 0;
    /* Only an empty directory is compacted: any offset into it is past the end anyway. */
    if (--d->live == 0)
        d->nkids = 0;
}

static void touch_dir(uint32_t dir)
{
    nodes[dir].st.st_mtim = nodes[dir].st.st_ctim = now_ts();
}

/* A new name in dir; 0 when the table is full. */
static uint32_t node_new(uint32_t dir, const char *name, mode_t mode, uid_t uid, gid_t gid)
{
    uint32_t ino = free_head;
    if (ino) {
        free_head = nodes[ino].hnext;
    } else {
        if (nnodes == UINT32_MAX)
            return 0;
        if (nnodes == nodes_cap) {
            nodes_cap *= 2;
            nodes = realloc(nodes, (size_t)nodes_cap * sizeof(*nodes));
            if (!nodes)
                out_of_memory();
        }
        ino = nnodes++;
        memset(&nodes[ino], 0, sizeof(nodes[ino]));
    }
    struct node *n = &nodes[ino];
    uint64_t generation = n->generation + 1; /* the kernel must not confuse a reused number */
    memset(n, 0, sizeof(*n));
    n->generation = generation;
    n->name = strdup(name);
    if (!n->name)
        out_of_memory();
    n->parent = dir;
    n->linked = true;
    n->st.st_ino = ino;
    n->st.st_mode = mode;
    n->st.st_nlink = S_ISDIR(mode) ? 2 : 1;
    n->st.st_uid = uid;
    n->st.st_gid = gid;
    n->st.st_blksize = IO_MAX;
    n->st.st_atim = n->st.st_mtim = n->st.st_ctim = now_ts();
    if (dir) {
        hash_grow();
        hash_insert(ino);
        kid_add(dir, ino);
        if (S_ISDIR(mode))
            nodes[dir].st.st_nlink++;
        touch_dir(dir);
    }
    return ino;
}

static void node_release(uint32_t ino)
{
    struct node *n = &nodes[ino];
    if (n->linked || n->nlookup || ino == FUSE_ROOT_ID)
        return;
    free(n->name);
    free(n->target);
    free(n->kids);
    n->name = NULL;
    n->target = NULL;
    n->kids = NULL;
    n->hnext = free_head;
    free_head = ino;
}

static void node_unlink(uint32_t ino)
{
    struct node *n = &nodes[ino];
    hash_remove(ino);
    kid_remove(n->parent, ino);
    if (S_ISDIR(n->st.st_mode))
        nodes[n->parent].st.st_nlink--;
    touch_dir(n->parent);
    n->linked = false;
    n->st.st_nlink = 0;
    node_release(ino);
}

static bool valid_ino(fuse_ino_t ino)
{
    return ino > 0 && ino < nnodes && nodes[ino].name;
}

static void fill_entry(uint32_t ino, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = ino;
    e->generation = nodes[ino].generation;
    e->attr = nodes[ino].st;
    e->attr.st_blocks = (nodes[ino].st.st_size + 511) / 512;
    e->attr_timeout = ATTR_TIMEOUT;
    e->entry_timeout = ENTRY_TIMEOUT;
}

static void reply_entry(fuse_req_t req, uint32_t ino)
{
    struct fuse_entry_param e;
    fill_entry(ino, &e);
    nodes[ino].nlookup++;
    if (fuse_reply_entry(req, &e) != 0)
        nodes[ino].nlookup--;
}

static void reply_attr(fuse_req_t req, uint32_t ino)
{
    struct fuse_entry_param e;
    fill_entry(ino, &e);
    fuse_reply_attr(req, &e.attr, ATTR_TIMEOUT);
}

/* Checks that parent is a directory and name is free; 0 or an errno. */
static int can_create(fuse_ino_t parent, const char *name)
{
    if (!valid_ino(parent))
        return ENOENT;
    if (!S_ISDIR(nodes[parent].st.st_mode))
        return ENOTDIR;
    if (strlen(name) > NAME_MAX)
        return ENAMETOOLONG;
    return find((uint32_t)parent, name) ? EEXIST : 0;
}

static void make_node(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      const char *target)
{
    int err = can_create(parent, name);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    uint32_t ino =
        node_new((uint32_t)parent, name, mode & ~(target ? 0 : ctx->umask), ctx->uid, ctx->gid);
    if (!ino) {
        fuse_reply_err(req, ENOSPC);
        return;
    }
    if (target) {
        nodes[ino].target = strdup(target);
        if (!nodes[ino].target)
            out_of_memory();
        nodes[ino].st.st_size = (off_t)strlen(target);
    }
    reply_entry(req, ino);
}

/* --- operations --- */

/* The same wishes as efsfuse's init, so the kernel behaves as it does there. */
static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    conn->max_write = IO_MAX;
    conn->max_read = IO_MAX;
    conn->max_readahead = IO_MAX;
    conn->max_background = MAX_BACKGROUND;
    conn->congestion_threshold = MAX_BACKGROUND * 3 / 4;
    conn->time_gran = 1;
    unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_POSIX_LOCKS |
                    FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_PARALLEL_DIROPS |
                    FUSE_CAP_AUTO_INVAL_DATA;
    conn->want |= want & conn->capable;
    conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_SPLICE_READ |
                    FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    uint32_t ino = valid_ino(parent) ? find((uint32_t)parent, name) : 0;
    if (!ino) {
        /* A negative entry, cached as long as efsfuse's negative_timeout. */
        struct fuse_entry_param e = {.entry_timeout = ENTRY_TIMEOUT};
        fuse_reply_entry(req, &e);
        return;
    }
    reply_entry(req, ino);
}

static void forget_one(fuse_ino_t ino, uint64_t nlookup)
{
    if (!valid_ino(ino))
        return;
    struct node *n = &nodes[ino];
    n->nlookup = n->nlookup > nlookup ? n->nlookup - nlookup : 0;
    node_release((uint32_t)ino);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    forget_one(ino, nlookup);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++)
        forget_one(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (!valid_ino(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    reply_attr(req, (uint32_t)ino);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    if (!valid_ino(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct node *n = &nodes[ino];
    struct timespec now = now_ts();
    if (to_set & FUSE_SET_ATTR_SIZE) {
        if (S_ISDIR(n->st.st_mode)) {
            fuse_reply_err(req, EISDIR);
            return;
        }
        if (attr->st_size < 0) {
            fuse_reply_err(req, EINVAL);
            return;
        }
        n->st.st_size = attr->st_size;
        n->st.st_mtim = now;
        n->changed = true;
    }
    if (to_set & FUSE_SET_ATTR_MODE)
        n->st.st_mode = (n->st.st_mode & S_IFMT) | (attr->st_mode & 07777);
    if (to_set & FUSE_SET_ATTR_UID)
        n->st.st_uid = attr->st_uid;
    if (to_set & FUSE_SET_ATTR_GID)
        n->st.st_gid = attr->st_gid;
    if (to_set & FUSE_SET_ATTR_ATIME)
        n->st.st_atim = attr->st_atim;
    if (to_set & FUSE_SET_ATTR_ATIME_NOW)
        n->st.st_atim = now;
    if (to_set & FUSE_SET_ATTR_MTIME)
        n->st.st_mtim = attr->st_mtim;
    if (to_set & FUSE_SET_ATTR_MTIME_NOW)
        n->st.st_mtim = now;
    n->st.st_ctim = (to_set & FUSE_SET_ATTR_CTIME) ? attr->st_ctim : now;
    reply_attr(req, (uint32_t)ino);
}

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
    if (!valid_ino(ino) || !nodes[ino].target) {
        fuse_reply_err(req, valid_ino(ino) ? EINVAL : ENOENT);
        return;
    }
    fuse_reply_readlink(req, nodes[ino].target);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    if (!S_ISREG(mode) && !S_ISFIFO(mode) && !S_ISSOCK(mode)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    make_node(req, parent, name, mode, NULL);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    make_node(req, parent, name, S_IFDIR | (mode & 07777), NULL);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
    make_node(req, parent, name, S_IFLNK | 0777, link);
}

static void remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, bool dir)
{
    uint32_t ino = valid_ino(parent) ? find((uint32_t)parent, name) : 0;
    int err = 0;
    if (!ino)
        err = ENOENT;
    else if (dir && !S_ISDIR(nodes[ino].st.st_mode))
        err = ENOTDIR;
    else if (!dir && S_ISDIR(nodes[ino].st.st_mode))
        err = EISDIR;
    else if (dir && nodes[ino].live)
        err = ENOTEMPTY;
    if (!err)
        node_unlink(ino);
    fuse_reply_err(req, err);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name, false);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    remove_name(req, parent, name, true);
}

static bool is_ancestor(uint32_t maybe_ancestor, uint32_t ino)
{
    for (; ino && ino != FUSE_ROOT_ID; ino = nodes[ino].parent)
        if (ino == maybe_ancestor)
            return true;
    return maybe_ancestor == FUSE_ROOT_ID;
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    if (flags & ~RENAME_NOREPLACE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    uint32_t ino = valid_ino(parent) ? find((uint32_t)parent, name) : 0;
    if (!ino || !valid_ino(newparent)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (strlen(newname) > NAME_MAX) {
        fuse_reply_err(req, ENAMETOOLONG);
        return;
    }
    bool is_dir = S_ISDIR(nodes[ino].st.st_mode);
    if (is_dir && is_ancestor(ino, (uint32_t)newparent)) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    uint32_t old = find((uint32_t)newparent, newname);
    if (old == ino) {
        fuse_reply_err(req, 0);
        return;
    }
    if (old) {
        int err = 0;
        if (flags & RENAME_NOREPLACE)
            err = EEXIST;
        else if (is_dir && !S_ISDIR(nodes[old].st.st_mode))
            err = ENOTDIR;
        else if (!is_dir && S_ISDIR(nodes[old].st.st_mode))
            err = EISDIR;
        else if (nodes[old].live)
            err = ENOTEMPTY;
        if (err) {
            fuse_reply_err(req, err);
            return;
        }
        node_unlink(old);
    }
    char *copy = strdup(newname);
    if (!copy)
        out_of_memory();
    hash_remove(ino);
    kid_remove(nodes[ino].parent, ino);
    touch_dir(nodes[ino].parent);
    if (is_dir) {
        nodes[nodes[ino].parent].st.st_nlink--;
        nodes[newparent].st.st_nlink++;
    }
    free(nodes[ino].name);
    nodes[ino].name = copy;
    nodes[ino].parent = (uint32_t)newparent;
    hash_insert(ino);
    kid_add((uint32_t)newparent, ino);
    touch_dir((uint32_t)newparent);
    nodes[ino].st.st_ctim = now_ts();
    fuse_reply_err(req, 0);
}

/* Mirrors efsfuse's open flags: write-only descriptors bypass the page
 * cache, and cached pages survive an open if the file has not changed. */
static void set_open_flags(uint32_t ino, struct fuse_file_info *fi, bool created)
{
    fi->fh = 0;
    fi->direct_io = (fi->flags & O_ACCMODE) == O_WRONLY;
    fi->keep_cache = !created && !nodes[ino].changed && !(fi->flags & O_TRUNC);
    nodes[ino].changed = false;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (!valid_ino(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct node *n = &nodes[ino];
    if (S_ISDIR(n->st.st_mode)) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY && n->st.st_size) {
        n->st.st_size = 0;
        n->st.st_mtim = n->st.st_ctim = now_ts();
        n->changed = true;
    }
    set_open_flags((uint32_t)ino, fi, false);
    fuse_reply_open(req, fi);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    uint32_t ino = valid_ino(parent) ? find((uint32_t)parent, name) : 0;
    if (ino) {
        /* Lost a race with another creator: the kernel asked without O_EXCL. */
        if (fi->flags & O_EXCL) {
            fuse_reply_err(req, EEXIST);
            return;
        }
        if (S_ISDIR(nodes[ino].st.st_mode)) {
            fuse_reply_err(req, EISDIR);
            return;
        }
        if (fi->flags & O_TRUNC)
            nodes[ino].st.st_size = 0;
    } else {
        int err = can_create(parent, name);
        if (err) {
            fuse_reply_err(req, err);
            return;
        }
        const struct fuse_ctx *ctx = fuse_req_ctx(req);
        ino = node_new((uint32_t)parent, name, S_IFREG | (mode & 07777 & ~ctx->umask), ctx->uid,
                       ctx->gid);
        if (!ino) {
            fuse_reply_err(req, ENOSPC);
            return;
        }
    }
    set_open_flags(ino, fi, true);
    struct fuse_entry_param e;
    fill_entry(ino, &e);
    nodes[ino].nlookup++;
    if (fuse_reply_create(req, &e, fi) != 0)
        nodes[ino].nlookup--;
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    if (!valid_ino(ino)) {
        fuse_reply_err(req, EBADF);
        return;
    }
    off_t fsize = nodes[ino].st.st_size;
    if (off >= fsize) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > IO_MAX)
        size = IO_MAX;
    if ((off_t)size > fsize - off)
        size = (size_t)(fsize - off);
    fuse_reply_buf(req, pattern, size);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    if (!valid_ino(ino)) {
        fuse_reply_err(req, EBADF);
        return;
    }
    struct node *n = &nodes[ino];
    if (off + (off_t)size > n->st.st_size)
        n->st.st_size = off + (off_t)size;
    n->changed = true;
    fuse_reply_write(req, size);
}

/* Nothing is held back, so there is nothing to flush or sync. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    if (!valid_ino(ino) || !S_ISDIR(nodes[ino].st.st_mode)) {
        fuse_reply_err(req, valid_ino(ino) ? ENOTDIR : ENOENT);
        return;
    }
    fi->fh = 0;
    fuse_reply_open(req, fi);
}

/* Offsets: 1 is ".", 2 is "..", 3 + i is kids[i]. */
static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           struct fuse_file_info *fi)
{
    if (!valid_ino(ino)) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    struct node *d = &nodes[ino];
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    for (off_t pos = off; pos < 2; pos++) {
        /* The kernel takes no reference for "." and "..": no lookup count. */
        struct fuse_entry_param e;
        fill_entry(pos == 0 ? (uint32_t)ino : (d->parent ? d->parent : (uint32_t)ino), &e);
        size_t need = fuse_add_direntry_plus(req, buf + used, size - used, pos == 0 ? "." : "..",
                                             &e, pos + 1);
        if (need > size - used)
            goto done;
        used += need;
    }
    for (uint64_t i = off > 2 ? (uint64_t)off - 2 : 0; i < d->nkids; i++) {
        uint32_t kid = d->kids[i];
        if (!kid)
            continue;
        struct fuse_entry_param e;
        fill_entry(kid, &e);
        size_t need =
            fuse_add_direntry_plus(req, buf + used, size - used, nodes[kid].name, &e, (off_t)i + 3);
        if (need > size - used)
            break;
        used += need;
        nodes[kid].nlookup++; /* the kernel now holds this inode, as after a lookup */
    }
done:
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
    struct statvfs s = {
        .f_bsize = IO_MAX,
        .f_frsize = 4096,
        .f_blocks = 1ull << 40,
        .f_bfree = 1ull << 40,
        .f_bavail = 1ull << 40,
        .f_files = UINT32_MAX,
        .f_ffree = UINT32_MAX - nnodes,
        .f_favail = UINT32_MAX - nnodes,
        .f_namemax = NAME_MAX,
    };
    fuse_reply_statfs(req, &s);
}

/* efsfuse answers ENOSYS to every xattr call; so must the ceiling, since
 * the kernel's reaction differs between ENOSYS and ENOTSUP: after ENOSYS it
 * asks no more (no security.capability lookup before each write), but it
 * then answers ENODATA, not EOPNOTSUPP, for POSIX ACLs, so `ls -l` keeps
 * asking for each file where it would give up after the first EOPNOTSUPP. */
static void op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                        size_t size, int flags)
{
    fuse_reply_err(req, ENOSYS);
}

static void op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
    fuse_reply_err(req, ENOSYS);
}

static void op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
    fuse_reply_err(req, ENOSYS);
}

static void op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
    fuse_reply_err(req, ENOSYS);
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .readlink = op_readlink,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_rmdir,
    .symlink = op_symlink,
    .rename = op_rename,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .fsync = op_fsync,
    .opendir = op_opendir,
    .readdirplus = op_readdirplus,
    .releasedir = op_releasedir,
    .fsyncdir = op_fsyncdir,
    .statfs = op_statfs,
    .setxattr = op_setxattr,
    .getxattr = op_getxattr,
    .listxattr = op_listxattr,
    .removexattr = op_removexattr,
    .create = op_create,
};

/* --- set-up --- */

/* The kernel ignores a max_readahead above 128 KiB from init; only the
 * mount's bdi raises it. The device number comes from mountinfo because
 * stat() on the mountpoint would be a request to ourselves, which this one
 * thread cannot answer yet. */
static void raise_readahead(const char *mountpoint)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return;
    char line[4096];
    unsigned maj = 0, min = 0;
    bool found = false;
    while (fgets(line, sizeof(line), f)) {
        unsigned id, parent, a, b;
        char root[1024], point[1024];
        if (sscanf(line, "%u %u %u:%u %1023s %1023s", &id, &parent, &a, &b, root, point) == 6 &&
            strcmp(point, mountpoint) == 0) {
            maj = a;
            min = b;
            found = true; /* the last mount on a path is the visible one */
        }
    }
    fclose(f);
    if (!found) {
        fprintf(stderr, "null_fs: %s not in mountinfo; readahead left at the default\n",
                mountpoint);
        return;
    }
    char path[96];
    snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
    FILE *ra = fopen(path, "w");
    if (!ra || fprintf(ra, "%u", READAHEAD_KB) < 0 || fclose(ra) != 0)
        fprintf(stderr, "null_fs: cannot set %s; readahead left at the default\n", path);
}

static void usage(void)
{
    fprintf(stderr, "usage: null_fs MOUNTPOINT [--files N] [--file-size BYTES]\n");
    exit(2);
}

static unsigned long long parse_number(const char *what, const char *text, unsigned long long max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v > max) {
        fprintf(stderr, "null_fs: %s must be a number from 0 to %llu, not \"%s\"\n", what, max,
                text);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argv[1][0] == '-')
        usage();
    unsigned long long files = 20000, file_size = 1ull << 30;
    for (int i = 2; i < argc; i += 2) {
        bool is_files = strcmp(argv[i], "--files") == 0;
        if (!is_files && strcmp(argv[i], "--file-size") != 0) {
            fprintf(stderr, "null_fs: unknown option \"%s\"\n", argv[i]);
            exit(2);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "null_fs: %s needs a value\n", argv[i]);
            exit(2);
        }
        if (is_files)
            files = parse_number("--files", argv[i + 1], 100000000);
        else
            file_size = parse_number("--file-size", argv[i + 1], (unsigned long long)INT64_MAX);
    }
    char *mountpoint = realpath(argv[1], NULL);
    if (!mountpoint) {
        fprintf(stderr, "null_fs: mountpoint %s: %s\n", argv[1], strerror(errno));
        return 2;
    }

    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (char)(i * 131 + (i >> 12));
    owner_uid = getuid();
    owner_gid = getgid();
    nodes_cap = (uint32_t)files + 1024;
    nodes = calloc(nodes_cap, sizeof(*nodes));
    if (!nodes)
        out_of_memory();
    nnodes = 1; /* 0 means "none" everywhere */
    hash_grow();
    if (node_new(0, "", S_IFDIR | 0755, owner_uid, owner_gid) != FUSE_ROOT_ID)
        out_of_memory();
    for (unsigned long long i = 0; i < files; i++) {
        char name[32];
        snprintf(name, sizeof(name), "f%06llu", i);
        uint32_t ino = node_new(FUSE_ROOT_ID, name, S_IFREG | 0644, owner_uid, owner_gid);
        nodes[ino].st.st_size = (off_t)file_size;
    }

    char *fuse_argv[] = {argv[0], "-o", "max_read=1048576,fsname=null_fs,subtype=null_fs", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fuse_argv);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
    if (!se) {
        fprintf(stderr, "null_fs: libfuse refused the session options\n");
        return 1;
    }
    if (fuse_set_signal_handlers(se) != 0) {
        fprintf(stderr, "null_fs: cannot install signal handlers\n");
        return 1;
    }
    if (fuse_session_mount(se, mountpoint) != 0) {
        fprintf(stderr, "null_fs: cannot mount on %s (is /dev/fuse there, are we root?)\n",
                mountpoint);
        return 1;
    }
    raise_readahead(mountpoint);
    /* One thread, like efsfuse: two were measured to gain nothing here. */
    int rc = fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    free(mountpoint);
    return rc < 0 ? 1 : 0;
}
