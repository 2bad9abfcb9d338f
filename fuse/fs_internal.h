/*
 * fuse/ internals, shared by the files of this directory only.
 *
 *   loop.c   fs lifetime, mount, the event loop, init, credentials
 *   inode.c  the inode table (by NFS filehandle, with FUSE lookup counts)
 *   entry.c  lookup, forget, create-type directory operations, rename, link
 *   dir.c    opendir, readdirplus, releasedir
 *   file.c   open, create, read, write-behind, flush, fsync, release
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

struct fs_inode;
struct fs_file;

/* Someone waiting for an inode's in-flight writes to drain. */
struct fs_waiter {
    struct fs_waiter *next;
    void (*fn)(struct fs *fs, void *arg);
    void *arg;
};

struct fs_inode {
    struct fs_inode *hash_next;
    uint64_t generation;
    struct nc_fh fh;
    uint64_t nlookup; /* the kernel's references (lookup count) */
    unsigned refs;    /* ours: open files, children's parent links, requests */
    /* Where it was last seen: NFSv4.0 opens files by directory + name. */
    struct fs_inode *parent;
    char *name;
    struct nc_attr attr;
    bool has_attr;
    /* Write-behind: writes sent but not answered, and the highest byte they
     * reach, which getattr must report while the server lags behind. */
    unsigned writes_in_flight; /* sent and queued */
    uint64_t write_end;
    struct fs_waiter *waiters;
    /* Writes on the wire, and writes held back because they overlap one of
     * those: the server may apply concurrent WRITEs in any order. */
    struct fs_write *sent;
    struct fs_write *held_head;
    struct fs_write *held_tail;
};

struct fs_file {
    struct fs_file *next; /* all open files, for writeback at exit */
    struct fs_file *prev;
    struct fs_inode *inode;
    struct nc_open *open;
    struct nc_cred cred; /* the opener's: write-behind and release have no caller */
    bool writable;       /* opened for writing: write locks need it */
    int error;           /* first asynchronous write error, reported once */
    bool unstable;       /* written UNSTABLE since the last COMMIT */
    bool has_verifier;
    uint64_t verifier;
    uint64_t lock_owners[8]; /* owners that took locks through this file */
    unsigned nlock_owners;
};

struct fs_write; /* file.c */

struct fs_blocked_write {
    struct fs_blocked_write *next;
    fuse_req_t req;
    size_t size;
};

struct fs {
    struct fs_config config;
    struct nc_client *nc;
    struct fuse_session *se;
    char *mountpoint;
    bool mounted;
    struct fs_inode *root;
    struct fs_inode **buckets;
    size_t nbuckets;
    size_t ninodes;
    uint64_t next_generation;
    /* write-behind accounting for the whole mount */
    uint64_t write_bytes_in_flight;
    uint64_t write_limit;
    struct fs_blocked_write *blocked_head;
    struct fs_blocked_write *blocked_tail;
    struct fs_file *files;
    unsigned background; /* NFS work not tied to a FUSE request (closes) */
};

/* --- loop.c --- */
/* The credentials of the process behind req (or the configured overrides). */
void fs_req_cred(struct fs *fs, fuse_req_t req, struct nc_cred *cred);
struct fs *fs_from_req(fuse_req_t req);
double fs_now(void);

/* --- inode.c --- */
int fs_inodes_init(struct fs *fs, const struct nc_fh *root_fh, const struct nc_attr *root_attr);
void fs_inodes_free(struct fs *fs);
struct fs_inode *fs_inode_get(struct fs *fs, fuse_ino_t ino);
fuse_ino_t fs_inode_ino(struct fs *fs, struct fs_inode *inode);
/* Finds or creates the inode for fh; stores attr; does not count a lookup. */
struct fs_inode *fs_inode_find_or_add(struct fs *fs, const struct nc_fh *fh,
                                      const struct nc_attr *attr);
struct fs_inode *fs_inode_find(struct fs *fs, const struct nc_fh *fh);
void fs_inode_forget(struct fs *fs, struct fs_inode *inode, uint64_t nlookup);
void fs_inode_ref(struct fs_inode *inode);
/* Frees an inode nobody references (one made for an answer that failed). */
void fs_inode_drop_if_unused(struct fs *fs, struct fs_inode *inode);
void fs_inode_unref(struct fs *fs, struct fs_inode *inode);
/* Remembers dir/name as where inode can be opened from. */
void fs_inode_set_name(struct fs *fs, struct fs_inode *inode, struct fs_inode *dir,
                       const char *name);
void fs_inode_set_attr(struct fs_inode *inode, const struct nc_attr *attr);
/* struct stat from NFS attributes, with the size in-flight writes reach. */
void fs_attr_to_stat(const struct fs_inode *inode, const struct nc_attr *attr, struct stat *st);
/* Calls fn when the inode has no writes in flight (now, if it has none). */
void fs_inode_when_idle(struct fs *fs, struct fs_inode *inode, void (*fn)(struct fs *, void *),
                        void *arg);
void fs_inode_writes_done(struct fs *fs, struct fs_inode *inode);

/* Fills an entry reply for inode and counts the kernel's new reference. */
void fs_entry_param(struct fs *fs, struct fs_inode *inode, struct fuse_entry_param *e);

/* --- file.c --- */
/* Waits for every write-behind and background close (at exit). */
void fs_files_drain(struct fs *fs, int timeout_ms);
/* Forgets files the kernel never released (their opens go with the client). */
void fs_files_free(struct fs *fs);

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
void fs_op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);

void fs_op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void fs_op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  struct fuse_file_info *fi);
void fs_op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                struct fuse_file_info *fi);
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

/* --- lock.c, for file.c --- */
/* Releases every lock taken through file (before its open state goes). */
void fs_locks_release_all(struct fs *fs, struct fs_file *file, void (*done)(struct fs *, void *),
                          void *arg);
void fs_locks_release_owner(struct fs *fs, struct fs_file *file, uint64_t owner,
                            void (*done)(struct fs *, void *), void *arg);

#endif
