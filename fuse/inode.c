/*
 * The inode table: one fs_inode per NFS filehandle seen, found by handle,
 * and the names inodes are known by, found by (directory, name).
 *
 * An inode lives while the kernel references it (nlookup, counted on every
 * entry it receives and decremented by forget) or we do (refs: open files,
 * names of children in it, requests in flight). The FUSE inode number is
 * the struct's address, which the kernel only ever hands back while it holds
 * a lookup; the generation tells a reused address apart.
 *
 * Names exist because NFSv4.0 opens by directory + name. An inode keeps a
 * few of the names it was seen under, the latest first: with hard links any
 * of them opens the same file, and when one turns out stale the next one
 * still works. Unlink and rename find the names they affect by the index.
 *
 * Nothing here talks to the server, so the table can be unit-tested alone.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_BUCKETS 4096

/* --- the table by filehandle --- */

static size_t bucket_of(const struct fs *fs, const struct nc_fh *fh)
{
    return (size_t)(nc_fh_hash(fh) & (fs->nbuckets - 1));
}

static void table_insert(struct fs *fs, struct fs_inode *inode)
{
    size_t b = bucket_of(fs, &inode->fh);
    inode->hash_next = fs->buckets[b];
    fs->buckets[b] = inode;
    fs->ninodes++;
}

static void table_remove(struct fs *fs, struct fs_inode *inode)
{
    for (struct fs_inode **pp = &fs->buckets[bucket_of(fs, &inode->fh)]; *pp;
         pp = &(*pp)->hash_next) {
        if (*pp == inode) {
            *pp = inode->hash_next;
            fs->ninodes--;
            return;
        }
    }
}

/* Doubles the table when it gets crowded, keeping chains short. */
static void maybe_grow_inodes(struct fs *fs)
{
    if (fs->ninodes < fs->nbuckets)
        return;
    size_t nb = fs->nbuckets * 2;
    struct fs_inode **buckets = calloc(nb, sizeof(*buckets));
    if (!buckets)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < fs->nbuckets; i++) {
        struct fs_inode *inode = fs->buckets[i];
        while (inode) {
            struct fs_inode *next = inode->hash_next;
            size_t b = (size_t)(nc_fh_hash(&inode->fh) & (nb - 1));
            inode->hash_next = buckets[b];
            buckets[b] = inode;
            inode = next;
        }
    }
    free(fs->buckets);
    fs->buckets = buckets;
    fs->nbuckets = nb;
}

/* --- the index by (directory, name) --- */

static uint64_t name_hash(const struct fs_inode *dir, const char *name)
{
    uint64_t h = 1469598103934665603ull ^ (uint64_t)(uintptr_t)dir;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static struct fs_name **name_slot(struct fs *fs, const struct fs_inode *dir, const char *name)
{
    return &fs->name_buckets[name_hash(dir, name) & (fs->nname_buckets - 1)];
}

static struct fs_name *name_find(struct fs *fs, const struct fs_inode *dir, const char *name)
{
    for (struct fs_name *n = *name_slot(fs, dir, name); n; n = n->hash_next)
        if (n->dir == dir && strcmp(n->name, name) == 0)
            return n;
    return NULL;
}

static void maybe_grow_names(struct fs *fs)
{
    if (fs->nnames < fs->nname_buckets)
        return;
    size_t nb = fs->nname_buckets * 2;
    struct fs_name **buckets = calloc(nb, sizeof(*buckets));
    if (!buckets)
        return;
    for (size_t i = 0; i < fs->nname_buckets; i++) {
        struct fs_name *n = fs->name_buckets[i];
        while (n) {
            struct fs_name *next = n->hash_next;
            size_t b = (size_t)(name_hash(n->dir, n->name) & (nb - 1));
            n->hash_next = buckets[b];
            buckets[b] = n;
            n = next;
        }
    }
    free(fs->name_buckets);
    fs->name_buckets = buckets;
    fs->nname_buckets = nb;
}

/* Takes n out of the index and its inode's list; returns its directory,
 * whose reference the caller now owns. */
static struct fs_inode *name_detach(struct fs *fs, struct fs_name *n)
{
    for (struct fs_name **pp = name_slot(fs, n->dir, n->name); *pp; pp = &(*pp)->hash_next) {
        if (*pp == n) {
            *pp = n->hash_next;
            break;
        }
    }
    for (struct fs_name **pp = &n->inode->names; *pp; pp = &(*pp)->next) {
        if (*pp == n) {
            *pp = n->next;
            break;
        }
    }
    n->inode->nnames--;
    fs->nnames--;
    struct fs_inode *dir = n->dir;
    free(n);
    return dir;
}

static void name_remove(struct fs *fs, struct fs_name *n)
{
    fs_inode_unref(fs, name_detach(fs, n));
}

/* --- lifetime --- */

static struct fs_inode *inode_new(struct fs *fs, const struct nc_fh *fh)
{
    struct fs_inode *inode = calloc(1, sizeof(*inode));
    if (!inode)
        return NULL;
    inode->fh = *fh;
    inode->generation = ++fs->next_generation;
    maybe_grow_inodes(fs);
    table_insert(fs, inode);
    return inode;
}

int fs_inodes_init(struct fs *fs, const struct nc_fh *root_fh, const struct nc_attr *root_attr)
{
    fs->nbuckets = INITIAL_BUCKETS;
    fs->buckets = calloc(fs->nbuckets, sizeof(*fs->buckets));
    fs->nname_buckets = INITIAL_BUCKETS;
    fs->name_buckets = calloc(fs->nname_buckets, sizeof(*fs->name_buckets));
    if (!fs->buckets || !fs->name_buckets)
        return -ENOMEM;
    fs->root = inode_new(fs, root_fh);
    if (!fs->root)
        return -ENOMEM;
    fs_inode_set_attr(fs, fs->root, root_attr, fs_attr_stamp(fs));
    return 0;
}

static void free_waiters(struct fs_waiter *w)
{
    while (w) {
        struct fs_waiter *next = w->next;
        free(w);
        w = next;
    }
}

void fs_inodes_free(struct fs *fs)
{
    if (fs->name_buckets) {
        for (size_t i = 0; i < fs->nname_buckets; i++) {
            struct fs_name *n = fs->name_buckets[i];
            while (n) {
                struct fs_name *next = n->hash_next;
                free(n);
                n = next;
            }
        }
        free(fs->name_buckets);
        fs->name_buckets = NULL;
        fs->nnames = 0;
    }
    if (fs->buckets) {
        for (size_t i = 0; i < fs->nbuckets; i++) {
            struct fs_inode *inode = fs->buckets[i];
            while (inode) {
                struct fs_inode *next = inode->hash_next;
                free_waiters(inode->waiters);
                free_waiters(inode->close_waiters);
                fs_dircache_forget(fs, inode);
                free(inode);
                inode = next;
            }
        }
        free(fs->buckets);
        fs->buckets = NULL;
    }
    fs->root = NULL;
    fs->ninodes = 0;
}

static bool unused(const struct fs *fs, const struct fs_inode *inode)
{
    return inode != fs->root && inode->nlookup == 0 && inode->refs == 0;
}

/*
 * Frees inode if nobody holds it, and then the directories its names kept
 * alive, iteratively: a deep tree must not become a deep recursion.
 */
static void maybe_free(struct fs *fs, struct fs_inode *inode)
{
    if (!unused(fs, inode))
        return;
    struct fs_inode *work = inode;
    inode->free_next = NULL;
    while (work) {
        struct fs_inode *in = work;
        work = in->free_next;
        while (in->names) {
            struct fs_inode *dir = name_detach(fs, in->names);
            dir->refs--;
            /* Its references reach zero once, so it is queued once. */
            if (unused(fs, dir)) {
                dir->free_next = work;
                work = dir;
            }
        }
        table_remove(fs, in);
        fs_dircache_forget(fs, in);
        free(in);
    }
}

void fs_inode_put_if_unused(struct fs *fs, struct fs_inode *inode)
{
    maybe_free(fs, inode);
}

struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino)
{
    if (ino == FUSE_ROOT_ID)
        return fs->root;
    return (struct fs_inode *)(uintptr_t)ino;
}

fuse_ino_t fs_inode_ino(struct fs *fs, struct fs_inode *inode)
{
    return inode == fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)inode;
}

struct fs_inode *fs_inode_find(struct fs *fs, const struct nc_fh *fh)
{
    for (struct fs_inode *inode = fs->buckets[bucket_of(fs, fh)]; inode; inode = inode->hash_next)
        if (nc_fh_equal(&inode->fh, fh))
            return inode;
    return NULL;
}

struct fs_inode *fs_inode_find_or_add(struct fs *fs, const struct nc_fh *fh)
{
    struct fs_inode *inode = fs_inode_find(fs, fh);
    return inode ? inode : inode_new(fs, fh);
}

void fs_inode_forget(struct fs *fs, struct fs_inode *inode, uint64_t nlookup)
{
    if (inode == fs->root)
        return;
    if (nlookup > inode->nlookup) {
        elog_warn(FS_COMPONENT, "kernel forgot %llu lookups of an inode with %llu",
                  (unsigned long long)nlookup, (unsigned long long)inode->nlookup);
        nlookup = inode->nlookup;
    }
    inode->nlookup -= nlookup;
    maybe_free(fs, inode);
}

void fs_inode_ref(struct fs_inode *inode)
{
    inode->refs++;
}

void fs_inode_unref(struct fs *fs, struct fs_inode *inode)
{
    inode->refs--;
    maybe_free(fs, inode);
}

/* --- names --- */

void fs_inode_add_name(struct fs *fs, struct fs_inode *inode, struct fs_inode *dir,
                       const char *name)
{
    if (inode == fs->root || inode == dir)
        return;
    /* Detaching names below may drop the last other reference to dir. */
    fs_inode_ref(dir);
    struct fs_name *old = name_find(fs, dir, name);
    if (old && old->inode == inode && inode->names == old)
        goto out; /* already the latest */
    if (old)
        name_remove(fs, old); /* stale, or ours but not first: re-added below */
    size_t len = strlen(name);
    struct fs_name *n = malloc(sizeof(*n) + len + 1);
    if (!n)
        goto out; /* the inode keeps its other names; an open may find them stale */
    memcpy(n->name, name, len + 1);
    n->inode = inode;
    n->dir = dir;
    fs_inode_ref(dir);
    maybe_grow_names(fs);
    struct fs_name **slot = name_slot(fs, dir, name);
    n->hash_next = *slot;
    *slot = n;
    n->next = inode->names;
    inode->names = n;
    inode->nnames++;
    fs->nnames++;
    /* A directory has exactly one name; a file keeps its latest few. */
    unsigned keep = S_ISDIR(inode->attr.mode) ? 1 : FS_NAMES_PER_INODE;
    while (inode->nnames > keep) {
        struct fs_name *last = inode->names;
        while (last->next)
            last = last->next;
        name_remove(fs, last);
    }
out:
    fs_inode_unref(fs, dir);
}

struct fs_inode *fs_name_lookup(struct fs *fs, struct fs_inode *dir, const char *name)
{
    struct fs_name *n = name_find(fs, dir, name);
    return n ? n->inode : NULL;
}

void fs_name_remove(struct fs *fs, struct fs_inode *dir, const char *name)
{
    struct fs_name *n = name_find(fs, dir, name);
    if (n)
        name_remove(fs, n);
}

void fs_name_rename(struct fs *fs, struct fs_inode *dir, const char *name, struct fs_inode *newdir,
                    const char *newname)
{
    fs_inode_ref(dir);
    fs_inode_ref(newdir);
    struct fs_name *src = name_find(fs, dir, name);
    struct fs_inode *moved = src ? src->inode : NULL;
    if (src && dir == newdir && strcmp(name, newname) == 0)
        goto out; /* rename to itself: nothing changes */
    /* What newname named before is gone (replaced), whatever it was. */
    fs_name_remove(fs, newdir, newname);
    if (moved) {
        fs_inode_ref(moved);
        name_remove(fs, src);
        fs_inode_add_name(fs, moved, newdir, newname);
        fs_inode_unref(fs, moved);
    }
out:
    fs_inode_unref(fs, newdir);
    fs_inode_unref(fs, dir);
}

struct fs_inode *fs_inode_parent(const struct fs_inode *inode)
{
    return inode->names ? inode->names->dir : NULL;
}

/* --- attributes --- */

uint64_t fs_attr_stamp(struct fs *fs)
{
    return ++fs->attr_clock;
}

bool fs_inode_set_attr(struct fs *fs, struct fs_inode *inode, const struct nc_attr *attr,
                       uint64_t stamp)
{
    /* A request sent before our last change may describe the file before
     * it: such attributes would move the kernel's size backwards. */
    if (inode->has_attr && stamp < inode->attr_stamp)
        return false;
    inode->attr = *attr;
    inode->has_attr = true;
    inode->attr_valid = true;
    inode->attr_stamp = stamp;
    inode->attr_expires = fs_now() + fs->config.attr_timeout;
    if (inode->writes_in_flight == 0)
        inode->write_end = 0; /* the server has seen every write */
    if (inode->dircache)
        fs_dircache_attr_seen(fs, inode, attr);
    return true;
}

void fs_inode_attr_stale(struct fs *fs, struct fs_inode *inode)
{
    inode->attr_valid = false;
    inode->attr_stamp = fs_attr_stamp(fs);
}

bool fs_inode_attr_fresh(const struct fs_inode *inode, double *remaining)
{
    /* While writes are in flight the server's mtime and size are behind. */
    if (!inode->has_attr || !inode->attr_valid || inode->writes_in_flight)
        return false;
    double left = inode->attr_expires - fs_now();
    if (left <= 0)
        return false;
    *remaining = left;
    return true;
}

void fs_attr_to_stat(const struct fs_inode *inode, const struct nc_attr *attr, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    st->st_ino = attr->fileid;
    st->st_mode = attr->mode;
    st->st_nlink = attr->nlink;
    st->st_uid = attr->uid;
    st->st_gid = attr->gid;
    st->st_size = (off_t)attr->size;
    /* The kernel has already grown the file by writes the server had not
     * seen when these attributes left it; reporting less would make the
     * kernel shrink the file and drop its pages. */
    if (inode && inode->write_end > attr->size)
        st->st_size = (off_t)inode->write_end;
    st->st_blksize = 1 << 20;
    st->st_blocks = (blkcnt_t)((attr->space_used + 511) / 512);
    st->st_rdev = makedev(attr->rdev_major, attr->rdev_minor);
    st->st_atim = attr->atime;
    st->st_mtim = attr->mtime;
    st->st_ctim = attr->ctime;
}

void fs_entry_param(struct fs *fs, struct fs_inode *inode, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = fs_inode_ino(fs, inode);
    e->generation = inode->generation;
    fs_attr_to_stat(inode, &inode->attr, &e->attr);
    /* Attributes known to be outdated are for this answer only. */
    e->attr_timeout = inode->attr_valid ? fs->config.attr_timeout : 0;
    e->entry_timeout = fs->config.entry_timeout;
}

/* --- waiting for write-behind and CLOSEs --- */

/* A waiter for fn on the inode's list, holding a reference to the inode; NULL
 * when out of memory, and then callers let fn run at once: what they wait for
 * is ordering, which is all that is lost. */
static struct fs_waiter *waiter_add(struct fs_inode *inode, struct fs_waiter **list,
                                    void (*fn)(struct fs *, void *), void *arg)
{
    struct fs_waiter *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->fn = fn;
    w->arg = arg;
    fs_inode_ref(inode);
    w->next = *list;
    *list = w;
    return w;
}

/* Runs and frees the waiters of ready (taken off the inode's list). */
static void waiters_run(struct fs *fs, struct fs_inode *inode, struct fs_waiter *ready)
{
    while (ready) {
        struct fs_waiter *w = ready;
        ready = w->next;
        w->fn(fs, w->arg);
        free(w);
        fs_inode_unref(fs, inode);
    }
}

void fs_inode_when_idle(struct fs *fs, struct fs_inode *inode, void (*fn)(struct fs *, void *),
                        void *arg)
{
    if (inode->writes_in_flight > 0 && waiter_add(inode, &inode->waiters, fn, arg))
        return;
    fn(fs, arg);
}

void fs_inode_writes_done(struct fs *fs, struct fs_inode *inode)
{
    if (inode->writes_in_flight > 0 || !inode->waiters)
        return;
    /* Run in arrival order; waiters added meanwhile wait for the next drain. */
    struct fs_waiter *list = NULL;
    while (inode->waiters) {
        struct fs_waiter *w = inode->waiters;
        inode->waiters = w->next;
        w->next = list;
        list = w;
    }
    fs_inode_ref(inode);
    waiters_run(fs, inode, list);
    fs_inode_unref(fs, inode);
}

void fs_inode_when_closed(struct fs *fs, struct fs_inode *inode, void (*fn)(struct fs *, void *),
                          void *arg)
{
    struct fs_waiter *w =
        inode->closes_pending > 0 ? waiter_add(inode, &inode->close_waiters, fn, arg) : NULL;
    if (!w) {
        fn(fs, arg);
        return;
    }
    /* A count, not "until none is pending": releases started later cannot
     * hold the caller back for ever. */
    w->closes_ahead = inode->closes_pending;
}

void fs_inode_close_started(struct fs_inode *inode)
{
    inode->closes_pending++;
}

void fs_inode_close_done(struct fs *fs, struct fs_inode *inode)
{
    inode->closes_pending--;
    struct fs_waiter *ready = NULL;
    struct fs_waiter **link = &inode->close_waiters;
    while (*link) {
        struct fs_waiter *w = *link;
        if (--w->closes_ahead > 0) {
            link = &w->next;
            continue;
        }
        *link = w->next;
        w->next = ready;
        ready = w;
    }
    waiters_run(fs, inode, ready);
}
