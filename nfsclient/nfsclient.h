/*
 * nfsclient: an asynchronous NFSv4.0 client.
 *
 * libnfs is used only as the XDR codec of the protocol; the TCP transport
 * (record marking, XID matching, many calls in flight) and the NFSv4.0 client
 * state (client id, lease renewal, open-owners and their seqids, lock-owners)
 * are ours, because libnfs 4.0.0's own NFSv4 client cannot do large writes,
 * concurrent opens or lease renewal (see README, "Architecture").
 *
 * Threading: none. Everything runs on the caller's thread, driven by
 * nc_client_pollfds()/nc_client_dispatch() from the caller's event loop.
 * Every operation takes a callback that is invoked exactly once, from
 * nc_client_dispatch() (never from inside the call that started it), with a
 * reply that is valid only for the duration of the callback.
 *
 * Errors are negative errno values (see nc_status_to_errno()).
 */
#ifndef EFSFUSE_NFSCLIENT_H
#define EFSFUSE_NFSCLIENT_H

#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#define NC_FH_MAX 128
/* AUTH_SYS carries at most 16 supplementary groups. */
#define NC_MAX_GROUPS 16

struct nc_client;
/* One NFSv4 open state (stateid + open-owner), shared and reference counted
 * by every nc_open() that the server merged into it. It survives a server
 * restart: its state and locks are reclaimed (or it is reopened) in place,
 * and calls in flight are sent again. One that cannot be recovered fails
 * each later use (ESTALE when the file is gone, else EIO); one whose locks
 * were lost fails its I/O and new locks with EIO until it is closed. */
struct nc_open;

struct nc_fh {
    uint32_t len;
    unsigned char data[NC_FH_MAX];
};

/* The credentials a request is sent with (AUTH_SYS). */
struct nc_cred {
    uint32_t uid;
    uint32_t gid;
    uint32_t ngroups;
    uint32_t groups[NC_MAX_GROUPS];
};

struct nc_attr {
    uint32_t mode; /* S_IFMT type bits | permission bits */
    uint32_t nlink;
    uint32_t uid;
    uint32_t gid;
    uint64_t size;
    uint64_t space_used;
    uint64_t fileid;
    uint64_t change; /* change attribute: differs whenever data or metadata changed */
    uint32_t rdev_major;
    uint32_t rdev_minor;
    struct timespec atime;
    struct timespec mtime;
    struct timespec ctime;
};

/* Which fields of struct nc_setattr to apply. */
enum {
    NC_SET_MODE = 1u << 0,
    NC_SET_UID = 1u << 1,
    NC_SET_GID = 1u << 2,
    NC_SET_SIZE = 1u << 3,
    NC_SET_ATIME = 1u << 4,     /* to .atime */
    NC_SET_ATIME_NOW = 1u << 5, /* to the server's time */
    NC_SET_MTIME = 1u << 6,
    NC_SET_MTIME_NOW = 1u << 7,
};

struct nc_setattr {
    uint32_t valid; /* NC_SET_* */
    uint32_t mode;  /* permission bits only */
    uint32_t uid;
    uint32_t gid;
    uint64_t size;
    struct timespec atime;
    struct timespec mtime;
};

struct nc_statfs {
    uint64_t bytes_total;
    uint64_t bytes_free;
    uint64_t bytes_avail;
    uint64_t files_total;
    uint64_t files_free;
    uint64_t files_avail;
    uint32_t name_max;
};

struct nc_dirent {
    const char *name; /* NUL-terminated */
    uint64_t cookie;
    bool has_attr; /* false when the server could not give attributes for it */
    struct nc_fh fh;
    struct nc_attr attr;
};

/* A byte range lock, as POSIX sees it: len 0 means "to end of file". */
enum nc_lock_type { NC_LOCK_READ = 1, NC_LOCK_WRITE = 2 };
struct nc_lock {
    enum nc_lock_type type;
    uint64_t start;
    uint64_t len;
};

/* Open flags for nc_open(); access is NC_OPEN_READ and/or NC_OPEN_WRITE. */
enum {
    NC_OPEN_READ = 1u << 0,
    NC_OPEN_WRITE = 1u << 1,
    NC_OPEN_CREATE = 1u << 2, /* create if missing (UNCHECKED4) */
    NC_OPEN_EXCL = 1u << 3,   /* with CREATE: fail with -EEXIST if it exists (EXCLUSIVE4) */
    NC_OPEN_TRUNC = 1u << 4,  /* truncate to 0 (only with WRITE) */
    /* Read-only opens: also READ the first NC_OPEN_PREFETCH_MAX bytes in the
     * OPEN's compound, so a small file costs one round trip, not two. The
     * reply's data/count/eof carry them when the server gave them (a failed
     * READ does not fail the open); count 0 without eof means "not read". */
    NC_OPEN_PREFETCH = 1u << 5,
};
#define NC_OPEN_PREFETCH_MAX (64u * 1024)

/*
 * The result of one operation. Which fields are meaningful depends on the
 * operation (see each function). All pointers, and the struct itself, are
 * valid only while the callback runs.
 */
/*
 * How a change of ours moved a directory's change attribute, as the server
 * reported it (change_info4): when `before` is the value we last knew, the
 * directory changed by nothing but this. `atomic` false means the server
 * read the two values around the change, not with it.
 */
struct nc_dir_change {
    bool valid;
    bool atomic;
    uint64_t before;
    uint64_t after;
};

struct nc_reply {
    int err; /* 0 or a negative errno; when non-zero only .lock_conflict may be set */
    struct nc_fh fh;
    bool has_attr;
    struct nc_attr attr; /* of the object operated on, after the operation */
    bool has_dir_attr;
    struct nc_attr dir_attr; /* of the parent directory, after the operation */
    /* create (OPEN, CREATE), remove, link, rename: the (new) parent
     * directory's change; rename also the old parent's. Not set when a
     * request resent after a reconnect was found to have been done. */
    struct nc_dir_change dir_change;
    struct nc_dir_change from_dir_change;
    /* read */
    const void *data;
    uint32_t count;
    bool eof;
    /* write / commit */
    uint32_t written;
    uint64_t verifier; /* write verifier; compare WRITE's with COMMIT's */
    bool stable;       /* WRITE was answered FILE_SYNC: no COMMIT needed */
    /* readlink */
    const char *target;
    /* readdir: entries and the names they point to are one block, freed
     * when the callback returns unless it takes them (nc_reply_take_entries) */
    const struct nc_dirent *entries;
    uint32_t nentries;
    uint64_t cookieverf;
    void **entries_block; /* nfsclient's own: use nc_reply_take_entries() */
    /* statfs */
    struct nc_statfs statfs;
    /* access: the granted subset of the requested NC_ACCESS_* bits */
    uint32_t access;
    /* open: the open state (reference owned by the caller; release with nc_close) */
    struct nc_open *open;
    /* lock / locktest: err == -EAGAIN and this describes the conflicting lock */
    bool has_lock_conflict;
    struct nc_lock lock_conflict;
};

typedef void (*nc_callback)(void *arg, const struct nc_reply *reply);

/* Keeps a READDIR reply's entries past its callback, without copying a
 * batch of thousands: returns the block reply->entries (and their names)
 * live in, to free() when done; NULL when the reply has none. */
void *nc_reply_take_entries(const struct nc_reply *reply);

enum nc_log_level { NC_LOG_DEBUG, NC_LOG_INFO, NC_LOG_WARN, NC_LOG_ERROR };

struct nc_client_config {
    const char *host;            /* name or address; IPv6 without brackets */
    uint16_t port;               /* 0 = 2049 */
    const char *path;            /* export path to resolve as the root ("/" allowed) */
    uint32_t max_io;             /* largest READ/WRITE payload to use; 0 = 1 MiB */
    uint32_t connect_timeout_ms; /* 0 = 10 s: how long nc_client_connect() may take */
    uint32_t request_timeout_ms; /* 0 = 60 s: retransmit/declare the connection dead */
    uint32_t max_inflight;       /* requests on the wire at once; more wait in order. 0 = 64 */
    bool soft;        /* fail a request unanswered for request_timeout_ms x retrans (-ETIMEDOUT) */
    uint32_t retrans; /* 0 = 3 */
    const char *client_name; /* identity for SETCLIENTID; NULL = hostname + pid */
};

/* Allocates a client; does not connect. Returns 0 or -errno. */
int nc_client_new(struct nc_client **out, const struct nc_client_config *config);
void nc_client_free(struct nc_client *client);

/*
 * Connects, establishes the NFSv4 client id and resolves config->path, all
 * synchronously (it runs its own poll loop), within connect_timeout_ms.
 * On failure returns -errno and, when errbuf is not NULL, a one-line
 * explanation (e.g. "server 127.0.0.1:2049: connection refused").
 */
int nc_client_connect(struct nc_client *client, char *errbuf, size_t errlen);

/* The resolved root (config->path) and its attributes at connect time. */
void nc_client_root(const struct nc_client *client, struct nc_fh *fh, struct nc_attr *attr);
/* Negotiated maximum READ and WRITE payloads (bytes). */
uint32_t nc_client_max_read(const struct nc_client *client);
uint32_t nc_client_max_write(const struct nc_client *client);

/*
 * Event loop integration. nc_client_pollfds() sends the calls made since
 * the last wait (together, which saves system calls under load: call it
 * right before waiting), fills up to max entries of fds (fd + events) and
 * returns how many it used; nc_client_timeout_ms()
 * says how long the caller may sleep at most (-1: no timer pending). After
 * poll(), pass the same entries (with revents) to nc_client_dispatch(),
 * which also runs due timers. Callbacks run inside nc_client_dispatch().
 */
int nc_client_pollfds(struct nc_client *client, struct pollfd *fds, int max);
int nc_client_timeout_ms(struct nc_client *client);
void nc_client_dispatch(struct nc_client *client, const struct pollfd *fds, int nfds);
/* Convenience for tools without their own loop: poll once (at most timeout_ms) and dispatch. */
int nc_client_run_once(struct nc_client *client, int timeout_ms);
/* Number of calls waiting for a reply or for their turn. */
unsigned nc_client_pending(const struct nc_client *client);

/*
 * Gracefully ends the session: closes the open states still held and stops
 * renewing the lease. Synchronous (bounded by request_timeout_ms).
 */
void nc_client_shutdown(struct nc_client *client);

/* --- Operations. cred may not be NULL. --- */

/* fh + attr */
void nc_getattr(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                nc_callback cb, void *arg);
/* fh + attr of dir/name; -ENOENT when missing */
void nc_lookup(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
               const char *name, nc_callback cb, void *arg);
/* Parent of dir (fh + attr). */
void nc_lookup_parent(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
                      nc_callback cb, void *arg);
/*
 * attr after the change. Pass the writer's open state for a size change
 * when there is one (servers check it against share reservations); with
 * open NULL the anonymous stateid is used, as the Linux client does for
 * truncate(2). Works on directories too.
 */
void nc_setattr(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                struct nc_open *open, const struct nc_setattr *set, nc_callback cb, void *arg);
/* target */
void nc_readlink(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                 nc_callback cb, void *arg);
/* Creates a directory (fh + attr + dir_attr). */
void nc_mkdir(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
              const char *name, uint32_t mode, nc_callback cb, void *arg);
/* Creates a symbolic link (fh + attr + dir_attr). */
void nc_symlink(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
                const char *name, const char *target, nc_callback cb, void *arg);
/* Creates a FIFO, socket or device node: mode carries S_IFMT (fh + attr + dir_attr).
 * Regular files are made with nc_open(NC_OPEN_CREATE). */
void nc_mknod(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
              const char *name, uint32_t mode, uint32_t rdev_major, uint32_t rdev_minor,
              nc_callback cb, void *arg);
/* Removes a file or an empty directory (dir_attr). */
void nc_remove(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
               const char *name, nc_callback cb, void *arg);
/* (no result fields) */
void nc_rename(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *from_dir,
               const char *from_name, const struct nc_fh *to_dir, const char *to_name,
               nc_callback cb, void *arg);
/* Hard link fh as dir/name (attr of fh + dir_attr). */
void nc_link(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
             const struct nc_fh *dir, const char *name, nc_callback cb, void *arg);
/*
 * One READDIR with attributes: entries (without "." and ".."), eof,
 * cookieverf. Start with cookie 0 and cookieverf 0, continue with the last
 * entry's cookie and the returned cookieverf. maxcount bounds the reply size.
 */
void nc_readdir(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
                uint64_t cookie, uint64_t cookieverf, uint32_t maxcount, nc_callback cb, void *arg);
/* statfs */
void nc_statfs(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
               nc_callback cb, void *arg);

enum {
    NC_ACCESS_READ = 0x01,
    NC_ACCESS_LOOKUP = 0x02,
    NC_ACCESS_MODIFY = 0x04,
    NC_ACCESS_EXTEND = 0x08,
    NC_ACCESS_DELETE = 0x10,
    NC_ACCESS_EXECUTE = 0x20,
};
/* access (granted subset of want) */
void nc_access(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
               uint32_t want, nc_callback cb, void *arg);

/*
 * Opens (and with NC_OPEN_CREATE creates, with mode) dir/name. NFSv4.0 opens
 * by name, so the caller passes the parent and the name; when expect is not
 * NULL and the name now refers to another file, the open is undone and the
 * result is -ESTALE. Result: open (a reference), fh, attr (after the open,
 * so the caller can revalidate its caches), dir_attr when created.
 */
void nc_open(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *dir,
             const char *name, const struct nc_fh *expect, uint32_t flags, uint32_t mode,
             nc_callback cb, void *arg);
/* Drops a reference; the last one sends CLOSE (callback may be NULL). */
void nc_close(struct nc_client *c, struct nc_open *open, nc_callback cb, void *arg);
/* Extra reference to an open state. */
struct nc_open *nc_open_ref(struct nc_open *open);
/* The filehandle an open state is for. */
const struct nc_fh *nc_open_fh(const struct nc_open *open);

/* data, count, eof. count may be less than asked for only at eof. */
void nc_read(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open, uint64_t offset,
             uint32_t count, nc_callback cb, void *arg);
/* nc_read without open state (the anonymous stateid), for files read
 * through nc_snapshot(). */
void nc_read_stateless(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                       uint64_t offset, uint32_t count, nc_callback cb, void *arg);
/*
 * Reads the first count bytes (at most the server's maximum) of a file
 * without opening it, after checking that cred may read it: has_attr/attr
 * (taken before the READ), data, count, eof. -EACCES when cred may not
 * read it; -EOPNOTSUPP when the server refuses reads without open state
 * (then from now on, without a round trip): open it instead.
 */
void nc_snapshot(struct nc_client *c, const struct nc_cred *cred, const struct nc_fh *fh,
                 uint32_t count, nc_callback cb, void *arg);
/*
 * written, verifier, stable, attr (when the server gave it). The data must
 * stay valid and unchanged until the callback runs: after a server restart
 * the WRITE is sent again from it with the recovered open state's stateid.
 * stable=false sends UNSTABLE4 (then nc_commit() before relying on it),
 * true sends FILE_SYNC4.
 */
void nc_write(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
              uint64_t offset, const void *data, uint32_t count, bool stable, nc_callback cb,
              void *arg);
/* verifier, attr. Commits everything written unstable to fh. */
void nc_commit(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
               nc_callback cb, void *arg);

/*
 * Byte-range locks. owner identifies the lock holder (a process or an open
 * file description); owners are scoped to this client. nc_lock with wait
 * retries a conflicting lock until granted or nc_lock_cancel(); without it a
 * conflict is -EAGAIN with lock_conflict filled in. nc_lock_test answers 0
 * (no conflict) or -EAGAIN with lock_conflict.
 */
struct nc_lock_wait; /* a waiting nc_lock, for nc_lock_cancel */
struct nc_lock_wait *nc_lock(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
                             uint64_t owner, const struct nc_lock *lock, bool wait, nc_callback cb,
                             void *arg);
/* The waiting lock's callback gets -EINTR. */
void nc_lock_cancel(struct nc_client *c, struct nc_lock_wait *wait);
void nc_unlock(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
               uint64_t owner, const struct nc_lock *lock, nc_callback cb, void *arg);
void nc_lock_test(struct nc_client *c, const struct nc_cred *cred, struct nc_open *open,
                  uint64_t owner, const struct nc_lock *lock, nc_callback cb, void *arg);

/* --- Utilities --- */

/* NFS4ERR_* (or NFS4_OK) to 0 / -errno. Unknown statuses are -EIO (logged once). */
int nc_status_to_errno(int nfs_status);
/* The NFS4ERR_* name of a status ("NFS4ERR_STALE"), or NULL when unknown. */
const char *nc_status_name(int nfs_status);

bool nc_fh_equal(const struct nc_fh *a, const struct nc_fh *b);
uint64_t nc_fh_hash(const struct nc_fh *fh);

#endif
