/*
 * Directories whose every name we know, so that a lookup of a name that is
 * not there is answered without a round trip.
 *
 * FUSE asks LOOKUP before every create (atomic_open looks the new name up
 * first), so each file made costs a LOOKUP that can only answer "no such
 * name": a quarter of the round trips of an O_EXCL create, and more for tar,
 * which makes most names in directories it has just made. The kernel's NFS
 * client sends OPEN straight away; knowing the directory is how we avoid it.
 *
 * We know a directory's names from the moment we make it (empty, at the
 * change attribute its GETATTR reported) for as long as every change the
 * server reports is one of ours: each create, remove, link and rename
 * answers the directory's change attribute before and after it
 * (change_info4), and `before` must be the value we hold. Anything else --
 * a change we did not make, a reply without change_info, a failed change,
 * attributes showing another value -- ends what we know. Answers are given
 * only within negative_timeout of the last confirmation by the server, the
 * same staleness the kernel's negative dentries already have, and never
 * while a change of ours to the directory is on the wire.
 *
 * Servers that report change_info as not atomic (ganesha) read the two
 * values around the change; another client's change landing between the
 * read of `before` and ours would go unseen until the next one. The window
 * is the server's execution of one operation, and the answer it could
 * spoil is bounded by negative_timeout like any negative dentry.
 */
#include "fs_internal.h"

#include "common/log.h"

#include <stdlib.h>
#include <string.h>

/* Beyond these, directories are not tracked: memory stays bounded. */
#define DIRCACHE_NAMES_PER_DIR 65536
#define DIRCACHE_NAMES_PER_MOUNT (1u << 20)
/* Our changes answered out of order, kept until their turn comes. */
#define DIRCACHE_PENDING 8

struct fs_dircache {
    uint64_t change;  /* the directory's change attribute with exactly these names */
    double confirmed; /* fs_now() when the server last showed it */
    unsigned changes_in_flight;
    struct {
        uint64_t before, after;
    } pending[DIRCACHE_PENDING];
    unsigned npending;
    /* The names: open addressing, linear probing, power-of-two size. */
    char **slots;
    size_t nslots;
    size_t count;
};

static uint64_t name_hash(const char *name)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

static size_t find_slot(const struct fs_dircache *dc, const char *name)
{
    size_t mask = dc->nslots - 1;
    size_t i = (size_t)name_hash(name) & mask;
    while (dc->slots[i] && strcmp(dc->slots[i], name) != 0)
        i = (i + 1) & mask;
    return i;
}

static bool names_grow(struct fs_dircache *dc)
{
    size_t nslots = dc->nslots ? dc->nslots * 2 : 16;
    char **old = dc->slots;
    size_t old_n = dc->nslots;
    dc->slots = calloc(nslots, sizeof(*dc->slots));
    if (!dc->slots) {
        dc->slots = old;
        return false;
    }
    dc->nslots = nslots;
    for (size_t i = 0; i < old_n; i++)
        if (old[i])
            dc->slots[find_slot(dc, old[i])] = old[i];
    free(old);
    return true;
}

static void dircache_free(struct fs *fs, struct fs_dircache *dc)
{
    for (size_t i = 0; i < dc->nslots; i++)
        free(dc->slots[i]);
    fs->dircache_names -= dc->count;
    free(dc->slots);
    free(dc);
}

/* What we knew of dir no longer holds. */
static void drop(struct fs *fs, struct fs_inode *dir, const char *why)
{
    struct fs_dircache *dc = dir->dircache;
    if (!dc)
        return;
    elog_debug(FS_COMPONENT, "directory %llu: names no longer known (%s)",
               (unsigned long long)dir->attr.fileid, why);
    dir->dircache = NULL;
    dircache_free(fs, dc);
}

static bool names_add(struct fs *fs, struct fs_dircache *dc, const char *name)
{
    if ((dc->count + 1) * 4 > dc->nslots * 3 && !names_grow(dc))
        return false;
    size_t i = find_slot(dc, name);
    if (dc->slots[i])
        return true;
    if (dc->count >= DIRCACHE_NAMES_PER_DIR || fs->dircache_names >= DIRCACHE_NAMES_PER_MOUNT)
        return false;
    if (!(dc->slots[i] = strdup(name)))
        return false;
    dc->count++;
    fs->dircache_names++;
    return true;
}

static void names_remove(struct fs *fs, struct fs_dircache *dc, const char *name)
{
    if (!dc->nslots)
        return;
    size_t i = find_slot(dc, name);
    if (!dc->slots[i])
        return;
    free(dc->slots[i]);
    dc->slots[i] = NULL;
    dc->count--;
    fs->dircache_names--;
    /* Backward shift: later members of the probe run move up into the hole. */
    size_t mask = dc->nslots - 1;
    for (size_t j = (i + 1) & mask; dc->slots[j]; j = (j + 1) & mask) {
        size_t home = (size_t)name_hash(dc->slots[j]) & mask;
        /* j's entry may fill the hole at i unless its home lies in (i, j]. */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            dc->slots[i] = dc->slots[j];
            dc->slots[j] = NULL;
            i = j;
        }
    }
}

void fs_dircache_made(struct fs *fs, struct fs_inode *dir, const struct nc_attr *attr)
{
    if (!fs->config.dircache || fs->config.negative_timeout <= 0 || dir->dircache)
        return;
    if (fs->dircache_names >= DIRCACHE_NAMES_PER_MOUNT)
        return;
    struct fs_dircache *dc = calloc(1, sizeof(*dc));
    if (!dc)
        return;
    dc->change = attr->change;
    dc->confirmed = fs_now();
    dir->dircache = dc;
}

void fs_dircache_change_start(struct fs_inode *dir)
{
    if (dir->dircache)
        dir->dircache->changes_in_flight++;
}

/* Moves the known change attribute along the transitions that follow it. */
static void advance(struct fs_dircache *dc, uint64_t before, uint64_t after)
{
    if (before != dc->change) {
        if (dc->npending < DIRCACHE_PENDING) {
            dc->pending[dc->npending].before = before;
            dc->pending[dc->npending].after = after;
            dc->npending++;
        }
        return;
    }
    dc->change = after;
    dc->confirmed = fs_now();
    for (unsigned i = 0; i < dc->npending;) {
        if (dc->pending[i].before == dc->change) {
            dc->change = dc->pending[i].after;
            dc->pending[i] = dc->pending[--dc->npending];
            i = 0;
        } else {
            i++;
        }
    }
}

void fs_dircache_change_done(struct fs *fs, struct fs_inode *dir, const char *added,
                             const char *removed, const struct nc_dir_change *change)
{
    struct fs_dircache *dc = dir->dircache;
    if (!dc)
        return;
    if (dc->changes_in_flight)
        dc->changes_in_flight--;
    if (!change->valid) {
        /* Failed (perhaps half done, or EEXIST for a name we did not
         * know), or a resent request found done: either way unconfirmed. */
        drop(fs, dir, "a change failed or came without change_info");
        return;
    }
    if (removed)
        names_remove(fs, dc, removed);
    if (added && !names_add(fs, dc, added)) {
        drop(fs, dir, "too many names");
        return;
    }
    advance(dc, change->before, change->after);
    if (dc->changes_in_flight == 0 && dc->npending) {
        /* Nothing of ours left to fill the gap: someone else changed it. */
        drop(fs, dir, "changed by another client");
    }
}

void fs_dircache_attr_seen(struct fs *fs, struct fs_inode *dir, const struct nc_attr *attr)
{
    struct fs_dircache *dc = dir->dircache;
    if (!dc || dc->changes_in_flight)
        return;
    if (attr->change != dc->change)
        drop(fs, dir, "its change attribute moved");
    else
        dc->confirmed = fs_now();
}

bool fs_dircache_absent(struct fs *fs, struct fs_inode *dir, const char *name, double *remaining)
{
    struct fs_dircache *dc = dir->dircache;
    if (!dc || dc->changes_in_flight)
        return false;
    double left = dc->confirmed + fs->config.negative_timeout - fs_now();
    if (left <= 0)
        return false;
    if (dc->count && dc->slots[find_slot(dc, name)])
        return false;
    *remaining = left;
    return true;
}

void fs_dircache_forget(struct fs *fs, struct fs_inode *dir)
{
    if (dir->dircache) {
        dircache_free(fs, dir->dircache);
        dir->dircache = NULL;
    }
}
