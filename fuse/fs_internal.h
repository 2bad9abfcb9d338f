/*
 * fuse/ internals, shared by the files of this directory only.
 *
 *   loop.c   fs lifetime, mount, init, the event loop, exit drain
 *   heap.c   heap memory populated ahead of a burst of allocations
 *   cred.c   the credentials each request is sent with
 *   reply.c  the life of a FUSE request that waits for NFS: answered once
 *   inode.c  the inode table (by NFS filehandle, with FUSE lookup counts),
 *            the names inodes are known by, the attribute cache
 *   entry.c  lookup, forget, mkdir/mknod/symlink/link, unlink/rmdir, rename
 *   dircache.c  every name of directories we made, for local negative lookups
 *   dir.c    opendir, readdirplus (and readdir), releasedir, fsyncdir
 *   file.c   open, create, flush, fsync, release, fallocate
 *   read.c   read
 *   write.c  write-behind; writes kept until COMMIT, re-sent on a new verifier
 *   attr.c   getattr, setattr, access, statfs, readlink, xattrs
 *   lock.c   POSIX locks and flock
 */
#ifndef EFSFUSE_FS_INTERNAL_H
#define EFSFUSE_FS_INTERNAL_H

#define FUSE_USE_VERSION 314

#include "fs.h"
#include "nfsclient/nfsclient.h"

#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define FS_COMPONENT "fuse"
/* For parameters that libfuse's operation signatures impose. */
#define FS_UNUSED __attribute__((unused))
/* Hard links: how many of an inode's names we keep to open it by. */
#define FS_NAMES_PER_INODE 4

struct fs_inode;
struct fs_file;
struct fs_write;
struct fs_commit_waiter;
struct fs_lock_wait;
struct dir_handle;
struct fs_dircache;

/* Someone waiting for an inode's write-behind to drain. */
struct fs_waiter {
    struct fs_waiter *next;
    void (*fn)(struct fs *fs, void *arg);
    void *arg;
    unsigned closes_ahead; /* fs_inode_when_closed: CLOSEs still to come */
};

/*
 * One name an inode is known by: NFSv4.0 opens files by directory + name,
 * so every inode the kernel may open keeps where it was last seen. Indexed
 * by (dir, name) so that unlink and rename can find the inode they affect.
 */
struct fs_name {
    struct fs_name *hash_next; /* in fs->name_buckets */
    struct fs_name *next;      /* the inode's other names, most recent first */
    struct fs_inode *inode;
    struct fs_inode *dir; /* holds a reference on it */
    char name[];
};

struct fs_inode {
    struct fs_inode *hash_next;
    struct fs_inode *free_next; /* worklist while freeing */
    uint64_t generation;
    struct nc_fh fh;
    uint64_t nlookup; /* the kernel's references (lookup count) */
    unsigned refs;    /* ours: open files, children's names, requests */
    struct fs_name *names;
    unsigned nnames;
    struct nc_attr attr;
    bool has_attr;
    bool attr_valid;     /* no change since attr was current */
    uint64_t attr_stamp; /* of the request attr came from, or of our last change */
    double attr_expires; /* fs_now() until which attr may answer getattr */
    /* Write-behind (write.c): writes sent or held back for ordering, and the
     * highest byte written, which sizes report until attributes from a
     * request sent after the last write show what the server has. */
    unsigned writes_in_flight; /* held + sent */
    uint64_t write_end;
    struct fs_write *writes_sent; /* in flight, for the overlap check */
    struct fs_write *writes_held_head;
    struct fs_write *writes_held_tail;
    /* Every write not yet committed under its own verifier, in arrival
     * order: held, in flight or answered UNSTABLE (write.c). */
    struct fs_write *retained_head;
    struct fs_write *retained_tail;
    uint64_t retained_bytes;
    uint64_t unstable_bytes; /* answered UNSTABLE, waiting for a COMMIT */
    uint64_t next_seq;       /* of the next write accepted */
    uint64_t unstable_gen;   /* bumped by every UNSTABLE answer */
    uint64_t verifier;       /* the server's, from the latest WRITE or COMMIT answer */
    bool has_verifier;
    bool stale;            /* retained writes carry an old verifier: re-send them */
    bool committing;       /* a COMMIT is on the wire */
    bool pressure;         /* picked to free memory for the mount's bound */
    unsigned size_changes; /* SETATTR size on the wire: no re-send may overtake it */
    /* Bumped by every local change of the data (write accepted, size
     * set): data read before it no longer shows the file as we changed it. */
    uint64_t data_version;
    struct fs_commit_waiter *commit_waiters;
    struct fs_inode *dirty_next; /* the mount's inodes with retained writes */
    struct fs_inode *dirty_prev;
    struct fs_waiter *waiters;
    /* Releases whose CLOSE is not answered yet, and who waits for them. */
    unsigned closes_pending;
    struct fs_waiter *close_waiters;
    /* Directories: every name in it, while we know them (dircache.c). */
    struct fs_dircache *dircache;
};

struct fs_file {
    struct fs_file *next; /* all open files, for writeback at exit */
    struct fs_file *prev;
    struct fs_inode *inode;
    struct nc_open *open;
    struct nc_cred cred; /* the opener's: write-behind and release have no caller */
    bool writable;       /* opened for writing: write locks need it */
    int error;           /* first asynchronous write error (-errno), reported once */
    bool releasing;      /* release started: not picked to send others' writes */
    /* Writes and COMMITs on the wire through this file's open; release
     * closes it only when none are left (on_unused). */
    unsigned users;
    void (*on_unused)(struct fs *fs, void *arg);
    void *on_unused_arg;
    uint64_t lock_owners[8]; /* owners that took locks through this file, to unlock */
    unsigned nlock_owners;
    /* The start of the file, read along with the OPEN (NC_OPEN_PREFETCH),
     * until a read takes it; valid while inode->data_version is
     * prefetch_version (read.c). A file opened without open state (open
     * NULL, see file.c) keeps its whole content here for its lifetime. */
    bool has_prefetch;
    bool snapshot;  /* the prefetch counts in fs->snapshot_bytes */
    char *prefetch; /* NULL when empty */
    uint32_t prefetch_len;
    bool prefetch_eof;
    uint64_t prefetch_version;
    uint64_t prefetch_change; /* a snapshot's: the file's change attribute */
};

/* A write whose answer to the kernel waits for the mount's bound. */
struct fs_held_reply {
    struct fs_held_reply *next;
    fuse_req_t req;
    struct fs_file *file;
    size_t size;
};

/* A process's supplementary groups, as recently read from /proc. */
struct fs_groups {
    pid_t pid;
    uid_t uid;
    gid_t gid;
    double expires;
    uint32_t ngroups;
    uint32_t groups[NC_MAX_GROUPS];
};
#define FS_GROUPS_CACHED 64

struct fs {
    struct fs_config config;
    struct nc_client *nc;
    struct fuse_session *se;
    char *mountpoint;
    bool mounted;
    bool readahead_due; /* INIT answered: the bdi setting may be raised now */
    bool draining;      /* exiting: FUSE is no longer read, work is finished */
    struct fs_inode *root;
    struct fs_inode **buckets;
    size_t nbuckets;
    size_t ninodes;
    struct fs_name **name_buckets;
    size_t nname_buckets;
    size_t nnames;
    uint64_t next_generation;
    uint64_t attr_clock; /* fs_attr_stamp() */
    /* Write-behind for the whole mount: bytes and WRITEs in flight, and the
     * bounds past which the kernel's write() waits. */
    uint64_t write_bytes;
    unsigned write_count;
    uint64_t write_bytes_limit;
    unsigned write_count_limit;
    struct fs_held_reply *held_head;
    struct fs_held_reply *held_tail;
    /* Written data kept until committed (write.c): its total, the bound
     * past which write() waits, and the inodes that hold some. */
    uint64_t retained_bytes;
    uint64_t retained_limit;
    struct fs_inode *dirty_inodes;
    struct fs_inode *pressure_inode; /* being committed to get under the bound */
    struct fs_file *files;
    size_t snapshot_bytes; /* held by files opened without open state */
    size_t heap_wanted;    /* heap to populate before the loop waits (heap.c) */
    struct fs_lock_wait *lock_waits;
    /* Open directories: a releasedir still queued when the session ends
     * never comes, so exit frees what is left (dir.c). */
    struct dir_handle *dirs;
    size_t dircache_names; /* names held by all directories' dircache */
    /* Work that answers no FUSE request (release's write-back and CLOSE). */
    unsigned background;
    /* FUSE requests taken by fs_req_hold and not yet answered. */
    unsigned requests_waiting;
    /* The buffer the request being processed was read into (loop.c). */
    struct fuse_buf *request_buf;
    struct fs_groups groups_cache[FS_GROUPS_CACHED];
};

/* --- heap.c --- */
/* Populates `bytes` of heap for the allocations that follow. */
void fs_heap_prepare(size_t bytes);
/* Asks for it once the calls of this turn of the loop are sent. */
void fs_heap_want(struct fs *fs, size_t bytes);
void fs_heap_prepare_wanted(struct fs *fs);

/* --- loop.c --- */
struct fs *fs_from_req(fuse_req_t req);
double fs_now(void);
/*
 * Hands over the buffer the request being processed was read into, when
 * data (size bytes) lies in it and fills most of it: the caller keeps it
 * (and frees it) instead of copying the data out, and the loop reads the
 * next request into a new one. NULL when the data should be copied.
 */
char *fs_request_buf_take(struct fs *fs, const char *data, size_t size);

/* --- cred.c --- */
/* The credentials of the process behind req (or the configured overrides). */
void fs_req_cred(struct fs *fs, fuse_req_t req, struct nc_cred *cred);

/*
 * --- reply.c ---
 * A request that waits for NFS lives in a context, in a fuse_req_t field
 * that fs_req_hold() fills and that every fs_reply_*() empties: answering
 * twice, or freeing a context unanswered (fs_req_assert_answered), trips an
 * assertion, and fs->requests_waiting tells at exit whether any was lost.
 * Errors are negative errno values.
 */
void fs_req_hold(fuse_req_t *slot, fuse_req_t req);
void fs_req_assert_answered(fuse_req_t slot);
void fs_reply_err(fuse_req_t *slot, int err);
/* Counts the kernel's new reference only if the answer reached it. */
void fs_reply_entry(fuse_req_t *slot, struct fs_inode *inode);
void fs_reply_negative_entry(fuse_req_t *slot);
/* Returns 0, or -errno when the caller is gone (no release will come). */
int fs_reply_create(fuse_req_t *slot, struct fs_inode *inode, const struct fuse_file_info *fi);
int fs_reply_open(fuse_req_t *slot, const struct fuse_file_info *fi);
void fs_reply_attr(fuse_req_t *slot, struct fs_inode *inode, const struct nc_attr *attr,
                   double timeout);
int fs_reply_buf(fuse_req_t *slot, const void *data, size_t size);
void fs_reply_write(fuse_req_t *slot, size_t count);
void fs_reply_readlink(fuse_req_t *slot, const char *target);
void fs_reply_statfs(fuse_req_t *slot, const struct statvfs *sv);
void fs_reply_lock(fuse_req_t *slot, const struct flock *lock);

/* --- inode.c --- */
int fs_inodes_init(struct fs *fs, const struct nc_fh *root_fh, const struct nc_attr *root_attr);
void fs_inodes_free(struct fs *fs);
struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino);
fuse_ino_t fs_inode_ino(struct fs *fs, struct fs_inode *inode);
/* Finds or creates the inode for fh; counts no lookup. A new inode nobody
 * takes must be handed to fs_inode_put_if_unused. */
struct fs_inode *fs_inode_find_or_add(struct fs *fs, const struct nc_fh *fh);
struct fs_inode *fs_inode_find(struct fs *fs, const struct nc_fh *fh);
void fs_inode_forget(struct fs *fs, struct fs_inode *inode, uint64_t nlookup);
void fs_inode_ref(struct fs_inode *inode);
void fs_inode_unref(struct fs *fs, struct fs_inode *inode);
/* Frees inode if neither the kernel nor we hold it. */
void fs_inode_put_if_unused(struct fs *fs, struct fs_inode *inode);

/* Names. The most recently seen name of an inode comes first. */
void fs_inode_add_name(struct fs *fs, struct fs_inode *inode, struct fs_inode *dir,
                       const char *name);
/* The inode dir/name is known to refer to, or NULL. */
struct fs_inode *fs_name_lookup(struct fs *fs, struct fs_inode *dir, const char *name);
/* dir/name is gone (unlink, rmdir, or found stale). */
void fs_name_remove(struct fs *fs, struct fs_inode *dir, const char *name);
/* dir/name was renamed to newdir/newname (which it replaced, if it existed). */
void fs_name_rename(struct fs *fs, struct fs_inode *dir, const char *name, struct fs_inode *newdir,
                    const char *newname);
/* The directory inode was last seen in (NULL for the root or unnamed). */
struct fs_inode *fs_inode_parent(const struct fs_inode *inode);

/*
 * Attribute cache. Every request that brings attributes takes a stamp when
 * it is sent; a local change (a write answered, a rename) takes one too.
 * Attributes are taken only from a request sent after the last change we
 * know of, as the Linux NFS client does with its attribute generations.
 */
uint64_t fs_attr_stamp(struct fs *fs);
/* Stores attributes from a request stamped `stamp`; false if outdated. */
bool fs_inode_set_attr(struct fs *fs, struct fs_inode *inode, const struct nc_attr *attr,
                       uint64_t stamp);
/* Our attributes no longer describe the file (a change we made or saw). */
void fs_inode_attr_stale(struct fs *fs, struct fs_inode *inode);
/* Whether attr may answer getattr now (and for how much longer). */
bool fs_inode_attr_fresh(const struct fs_inode *inode, double *remaining);
/* struct stat from NFS attributes, with the size in-flight writes reach. */
void fs_attr_to_stat(const struct fs_inode *inode, const struct nc_attr *attr, struct stat *st);
/* Fills an entry for inode (the caller counts the lookup). */
void fs_entry_param(struct fs *fs, struct fs_inode *inode, struct fuse_entry_param *e);

/* Calls fn once the inode has no writes in flight (now, if it has none). */
void fs_inode_when_idle(struct fs *fs, struct fs_inode *inode, void (*fn)(struct fs *, void *),
                        void *arg);
/* Runs the idle waiters if the writes are done. */
void fs_inode_writes_done(struct fs *fs, struct fs_inode *inode);
/*
 * Calls fn once every release of the inode started before this call has
 * had its CLOSE answered (now, if none is pending). A server keeps an
 * unlinked file's data while an open state holds it: removing a file just
 * closed must not leave its space taken.
 */
void fs_inode_when_closed(struct fs *fs, struct fs_inode *inode, void (*fn)(struct fs *, void *),
                          void *arg);
void fs_inode_close_started(struct fs_inode *inode);
void fs_inode_close_done(struct fs *fs, struct fs_inode *inode);

/*
 * --- dircache.c ---
 * Directories whose every name we know (made by us, changed by nothing
 * else since, as change_info shows), so that absent names are answered
 * without a LOOKUP. A change of ours to a directory is bracketed by
 * change_start and change_done: the names it added and removed, and the
 * server's change_info, which a failed change lacks (that ends tracking).
 */
void fs_dircache_made(struct fs *fs, struct fs_inode *dir, const struct nc_attr *attr);
void fs_dircache_change_start(struct fs_inode *dir);
void fs_dircache_change_done(struct fs *fs, struct fs_inode *dir, const char *added,
                             const char *removed, const struct nc_dir_change *change);
/* The directory's attributes as the server now has them. */
void fs_dircache_attr_seen(struct fs *fs, struct fs_inode *dir, const struct nc_attr *attr);
/* True when name is known to be absent from dir; *remaining: for how long
 * the answer may be cached. */
bool fs_dircache_absent(struct fs *fs, struct fs_inode *dir, const char *name, double *remaining);
void fs_dircache_forget(struct fs *fs, struct fs_inode *dir);

/* --- file.c --- */
/* Commits files still open at exit and waits for the background. */
void fs_files_drain(struct fs *fs, double deadline);
/* Forgets files the kernel never released (their opens go with the client). */
void fs_files_free(struct fs *fs);
/* --- dir.c --- */
void fs_dirs_free(struct fs *fs);

/* --- write.c --- */
/* Answers writes held back by the bound (at exit, whatever it is). */
void fs_writes_release_held(struct fs *fs, bool all);
/*
 * Calls fn once every write the inode accepted before this call is on the
 * server's stable storage -- committed under the verifier its WRITE got,
 * re-sent as often as the server lost it -- or has failed; failures are
 * the open files' errors (struct fs_file.error). fn may run before this returns.
 */
void fs_inode_commit(struct fs *fs, struct fs_inode *inode, void (*fn)(struct fs *, void *),
                     void *arg);
/* The seq the inode's next accepted write gets (a watermark for the below). */
uint64_t fs_inode_write_seq(const struct fs_inode *inode);
/* A size change is on the wire / is done (ok: it took effect) to size;
 * retained writes accepted before watermark lose what lies past it. */
void fs_writes_size_change_start(struct fs_inode *inode);
void fs_writes_size_change_done(struct fs *fs, struct fs_inode *inode, bool ok, uint64_t size,
                                uint64_t watermark);
/* Gives a file opened without open state (a snapshot, file.c) an NFS open,
 * which locks need; done(fs, arg, 0 or -errno) runs once it has one (at
 * once if it had). */
void fs_file_need_state(struct fs *fs, struct fs_file *file, void (*done)(struct fs *, void *, int),
                        void *arg);
/* Frees what was read along with the open (file.c). */
void fs_file_drop_prefetch(struct fs *fs, struct fs_file *file);
/* The file's sends are over: calls fn now or when its last one is answered. */
void fs_file_when_unused(struct fs *fs, struct fs_file *file, void (*fn)(struct fs *, void *),
                         void *arg);
/* Frees what is retained (at exit, once nothing is in flight). */
void fs_writes_free(struct fs *fs);

/* --- lock.c --- */
/* Releases every lock taken through file (before its open state goes). */
void fs_locks_release_all(struct fs *fs, struct fs_file *file, void (*done)(struct fs *, void *),
                          void *arg);
void fs_locks_release_owner(struct fs *fs, struct fs_file *file, uint64_t owner,
                            void (*done)(struct fs *, void *), void *arg);
/* Cancels every waiting lock (at exit): their requests get EINTR. */
void fs_locks_cancel_waits(struct fs *fs);

/* The operations, by file. */
void fs_op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void fs_op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void fs_op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void fs_op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void fs_op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void fs_op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void fs_op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags);
void fs_op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);

void fs_op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi);
void fs_op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                   struct fuse_file_info *fi);
void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi);
void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi);
void fs_op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                 struct fuse_file_info *fi);
void fs_op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void fs_op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                     struct fuse_file_info *fi);

void fs_op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                   struct fuse_file_info *fi);
void fs_op_access(fuse_req_t req, fuse_ino_t ino, int mask);
void fs_op_statfs(fuse_req_t req, fuse_ino_t ino);
void fs_op_readlink(fuse_req_t req, fuse_ino_t ino);
void fs_op_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
                    size_t size, int flags);
void fs_op_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void fs_op_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void fs_op_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

void fs_op_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock);
void fs_op_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
                 int sleep);
void fs_op_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op);

#endif
