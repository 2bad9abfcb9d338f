/*
 * fs: the FUSE filesystem. It serves the FUSE low-level protocol from one
 * event loop that multiplexes /dev/fuse and the NFS connection(s), turning
 * each FUSE request into asynchronous nfsclient calls, so that many requests
 * are in flight at once.
 */
#ifndef EFSFUSE_FS_H
#define EFSFUSE_FS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fuse_args;
struct nc_client;
struct fs;

struct fs_config {
    double attr_timeout;      /* seconds the kernel may cache attributes */
    double entry_timeout;     /* seconds the kernel may cache name -> inode */
    double negative_timeout;  /* seconds the kernel may cache "no such name" */
    uint32_t max_read;        /* largest FUSE read request, bytes */
    uint32_t max_write;       /* largest FUSE write request, bytes */
    uint32_t max_inflight;    /* NFS requests in flight at most (whole mount) */
    uint64_t max_uncommitted; /* written bytes kept until COMMIT, whole mount (0: default) */
    uint32_t readahead_kb;    /* kernel readahead of the mount (0: kernel default) */
    bool readonly;            /* refuse every change with EROFS */
    bool dircache;            /* answer absent names of directories we made (dircache.c) */
    int64_t uid_override;     /* -1, or the uid every request is sent with (debugging) */
    int64_t gid_override;     /* -1, or the gid every request is sent with */
};

/* Defaults for every field. */
void fs_config_defaults(struct fs_config *config);

/* The client must be connected (nc_client_connect) and outlive the fs. */
int fs_new(struct fs **out, const struct fs_config *config, struct nc_client *client);
void fs_free(struct fs *fs);

/*
 * Creates the FUSE session with args (libfuse's own -o options, e.g.
 * allow_other) and mounts it at mountpoint. Returns 0 or -errno; on error a
 * one-line reason is in errbuf.
 */
int fs_mount(struct fs *fs, struct fuse_args *args, const char *mountpoint, char *errbuf,
             size_t errlen);

/*
 * Serves requests until the filesystem is unmounted or a SIGTERM/SIGINT/
 * SIGHUP arrives, then writes back what it holds. Returns 0 or -errno.
 */
int fs_run(struct fs *fs);

/* Unmounts (if mounted). Safe to call more than once. */
void fs_unmount(struct fs *fs);

#endif
