/*
 * The inode table: one fs_inode per NFS filehandle seen, found by handle.
 *
 * An inode lives while the kernel references it (nlookup, counted on every
 * entry we hand out and decremented by forget) or we do (refs: open files,
 * children that remember it as their parent, waiting requests). The FUSE
 * inode number is the struct's address; the generation tells a reused
 * address apart.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_BUCKETS 4096

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
static void maybe_grow(struct fs *fs)
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

static struct fs_inode *inode_new(struct fs *fs, const struct nc_fh *fh)
{
    struct fs_inode *inode = calloc(1, sizeof(*inode));
    if (!inode)
        return NULL;
    inode->fh = *fh;
    inode->generation = ++fs->next_generation;
    maybe_grow(fs);
    table_insert(fs, inode);
    return inode;
}

int fs_inodes_init(struct fs *fs, const struct nc_fh *root_fh, const struct nc_attr *root_attr)
{
    fs->nbuckets = INITIAL_BUCKETS;
    fs->buckets = calloc(fs->nbuckets, sizeof(*fs->buckets));
    if (!fs->buckets)
        return -ENOMEM;
    fs->root = inode_new(fs, root_fh);
    if (!fs->root)
        return -ENOMEM;
    fs->root->refs = 1; /* never freed while mounted */
    fs_inode_set_attr(fs->root, root_attr);
    return 0;
}

static void inode_free(struct fs_inode *inode)
{
    free(inode->name);
    free(inode);
}

void fs_inodes_free(struct fs *fs)
{
    if (!fs->buckets)
        return;
    for (size_t i = 0; i < fs->nbuckets; i++) {
        struct fs_inode *inode = fs->buckets[i];
        while (inode) {
            struct fs_inode *next = inode->hash_next;
            inode_free(inode);
            inode = next;
        }
    }
    free(fs->buckets);
    fs->buckets = NULL;
    fs->root = NULL;
    fs->ninodes = 0;
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
    for (struct fs_inode *inode = fs->buckets[bucket_of(fs, fh)]; inode;
         inode = inode->hash_next)
        if (nc_fh_equal(&inode->fh, fh))
            return inode;
    return NULL;
}

struct fs_inode *fs_inode_find_or_add(struct fs *fs, const struct nc_fh *fh,
                                      const struct nc_attr *attr)
{
    struct fs_inode *inode = fs_inode_find(fs, fh);
    if (!inode)
        inode = inode_new(fs, fh);
    if (inode && attr)
        fs_inode_set_attr(inode, attr);
    return inode;
}

static void maybe_free(struct fs *fs, struct fs_inode *inode)
{
    while (inode && inode != fs->root && inode->nlookup == 0 && inode->refs == 0) {
        struct fs_inode *parent = inode->parent;
        table_remove(fs, inode);
        inode_free(inode);
        /* The child held its parent; the parent may now go too. */
        if (!parent)
            break;
        parent->refs--;
        inode = parent;
    }
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

void fs_inode_drop_if_unused(struct fs *fs, struct fs_inode *inode)
{
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

void fs_inode_set_name(struct fs *fs, struct fs_inode *inode, struct fs_inode *dir,
                       const char *name)
{
    if (inode == fs->root || inode == dir)
        return;
    if (inode->parent == dir && inode->name && strcmp(inode->name, name) == 0)
        return;
    char *copy = strdup(name);
    if (!copy)
        return; /* keeps the old name: an open may then fail with ESTALE */
    fs_inode_ref(dir);
    struct fs_inode *old_parent = inode->parent;
    free(inode->name);
    inode->name = copy;
    inode->parent = dir;
    if (old_parent)
        fs_inode_unref(fs, old_parent);
}

void fs_inode_set_attr(struct fs_inode *inode, const struct nc_attr *attr)
{
    inode->attr = *attr;
    inode->has_attr = true;
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
    if (inode && inode->writes_in_flight && inode->write_end > attr->size)
        st->st_size = (off_t)inode->write_end;
    st->st_blksize = 1 << 20;
    st->st_blocks = (blkcnt_t)((attr->space_used + 511) / 512);
    st->st_rdev = makedev(attr->rdev_major, attr->rdev_minor);
    st->st_atim = attr->atime;
    st->st_mtim = attr->mtime;
    st->st_ctim = attr->ctime;
}

void fs_inode_when_idle(struct fs *fs, struct fs_inode *inode, void (*fn)(struct fs *, void *),
                        void *arg)
{
    if (inode->writes_in_flight == 0) {
        fn(fs, arg);
        return;
    }
    struct fs_waiter *w = calloc(1, sizeof(*w));
    if (!w) {
        /* Rather than fail the caller, let it go on; the server orders the
         * writes it already has before later requests. */
        fn(fs, arg);
        return;
    }
    w->fn = fn;
    w->arg = arg;
    fs_inode_ref(inode);
    w->next = inode->waiters;
    inode->waiters = w;
}

void fs_inode_writes_done(struct fs *fs, struct fs_inode *inode)
{
    if (inode->writes_in_flight > 0)
        return;
    /* Run in arrival order; new waiters added meanwhile wait for the next drain. */
    struct fs_waiter *list = NULL;
    while (inode->waiters) {
        struct fs_waiter *w = inode->waiters;
        inode->waiters = w->next;
        w->next = list;
        list = w;
    }
    fs_inode_ref(inode);
    while (list) {
        struct fs_waiter *w = list;
        list = w->next;
        w->fn(fs, w->arg);
        free(w);
        fs_inode_unref(fs, inode);
    }
    fs_inode_unref(fs, inode);
}

void fs_entry_param(struct fs *fs, struct fs_inode *inode, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof(*e));
    e->ino = fs_inode_ino(fs, inode);
    e->generation = inode->generation;
    fs_attr_to_stat(inode, &inode->attr, &e->attr);
    e->attr_timeout = fs->config.attr_timeout;
    e->entry_timeout = fs->config.entry_timeout;
    inode->nlookup++;
}
