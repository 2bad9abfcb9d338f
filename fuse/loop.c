/*
 * The filesystem's lifetime and its one event loop.
 *
 * A single thread polls /dev/fuse and the NFS connection. It reads FUSE
 * requests as long as there are any, each turning into asynchronous NFS
 * calls, and answers the kernel from the NFS callbacks; so many requests are
 * in flight at once without threads or locks (on 2 CPUs, libfuse's
 * multi-threaded loop was measured to gain nothing).
 */
#include "fs_internal.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* FUSE requests read before the NFS connection gets its turn. */
#define FUSE_REQUESTS_PER_TURN 64
/* How long exiting may wait for write-behind to reach the server. */
#define DRAIN_TIMEOUT_MS 60000
#define NC_POLLFDS_MAX 7
#define WRITE_BYTES_LIMIT_MAX (32ull << 20)
#define RETAINED_LIMIT_DEFAULT (32ull << 20)

void fs_config_defaults(struct fs_config *config)
{
    memset(config, 0, sizeof(*config));
    config->attr_timeout = 1.0;
    config->entry_timeout = 1.0;
    config->negative_timeout = 1.0;
    config->max_read = 1u << 20;
    config->max_write = 1u << 20;
    config->max_inflight = 64;
    config->readahead_kb = 8192;
    config->max_uncommitted = RETAINED_LIMIT_DEFAULT;
    config->uid_override = -1;
    config->gid_override = -1;
}

double fs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct fs *fs_from_req(fuse_req_t req)
{
    return fuse_req_userdata(req);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct fs *fs = userdata;
    conn->max_write = fs->config.max_write;
    conn->max_read = fs->config.max_read;
    conn->max_readahead = fs->config.max_read;
    conn->max_background = fs->config.max_inflight;
    conn->congestion_threshold = fs->config.max_inflight * 3 / 4;
    conn->time_gran = 1;
    /*
     * Not wanted: writeback_cache (several clients share the files, so the
     * kernel must not sit on writes), READDIRPLUS_AUTO (readdir always asks
     * the server, with attributes), splice (turns itself off here and never
     * paid; see README). EXPORT_SUPPORT neither: it promises lookups of "."
     * and ".." by inode alone, which NFSv4.0 answers only for directories,
     * and re-exporting an EFS mount over NFS is not a use we serve.
     */
    unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_POSIX_LOCKS |
                    FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_PARALLEL_DIROPS |
                    FUSE_CAP_AUTO_INVAL_DATA;
    conn->want |= want & conn->capable;
    conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_SPLICE_READ |
                    FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_EXPORT_SUPPORT);
    fs->readahead_due = true;
}

static const struct fuse_lowlevel_ops ops = {
    .init = op_init,
    .lookup = fs_op_lookup,
    .forget = fs_op_forget,
    .forget_multi = fs_op_forget_multi,
    .getattr = fs_op_getattr,
    .setattr = fs_op_setattr,
    .readlink = fs_op_readlink,
    .mknod = fs_op_mknod,
    .mkdir = fs_op_mkdir,
    .unlink = fs_op_unlink,
    .rmdir = fs_op_rmdir,
    .symlink = fs_op_symlink,
    .rename = fs_op_rename,
    .link = fs_op_link,
    .open = fs_op_open,
    .read = fs_op_read,
    .write = fs_op_write,
    .flush = fs_op_flush,
    .release = fs_op_release,
    .fsync = fs_op_fsync,
    .opendir = fs_op_opendir,
    .readdir = fs_op_readdir,
    .readdirplus = fs_op_readdirplus,
    .releasedir = fs_op_releasedir,
    .fsyncdir = fs_op_fsyncdir,
    .statfs = fs_op_statfs,
    .setxattr = fs_op_setxattr,
    .getxattr = fs_op_getxattr,
    .listxattr = fs_op_listxattr,
    .removexattr = fs_op_removexattr,
    .access = fs_op_access,
    .create = fs_op_create,
    .getlk = fs_op_getlk,
    .setlk = fs_op_setlk,
    .flock = fs_op_flock,
    .fallocate = fs_op_fallocate,
};

int fs_new(struct fs **out, const struct fs_config *config, struct nc_client *client)
{
    struct fs *fs = calloc(1, sizeof(*fs));
    if (!fs)
        return -ENOMEM;
    fs->config = *config;
    if (fs->config.max_inflight == 0)
        fs->config.max_inflight = 64;
    if (fs->config.max_write == 0)
        fs->config.max_write = 1u << 20;
    if (fs->config.max_read == 0)
        fs->config.max_read = 1u << 20;
    fs->nc = client;
    /*
     * Write-behind: enough to keep the wire busy, little enough that close()
     * does not wait long and memory stays bounded -- half the in-flight
     * requests' worth of full writes, at most 32 MiB (the defaults), and as many
     * WRITEs as requests may be in flight, so that small writes are bounded
     * too. max_inflight=1 makes writes synchronous.
     */
    fs->write_bytes_limit = (uint64_t)fs->config.max_inflight * fs->config.max_write / 2;
    if (fs->write_bytes_limit < fs->config.max_write)
        fs->write_bytes_limit = fs->config.max_write;
    if (fs->write_bytes_limit > WRITE_BYTES_LIMIT_MAX)
        fs->write_bytes_limit = WRITE_BYTES_LIMIT_MAX;
    fs->write_count_limit = fs->config.max_inflight;
    /*
     * Written data kept until committed, in flight included (nfsclient sends
     * WRITEs from these copies): 32 MiB by default, the write-behind bound.
     * More bought no measurable throughput: the COMMIT started at half the
     * bound runs while the other half streams.
     */
    fs->retained_limit = fs->config.max_uncommitted;
    if (fs->retained_limit == 0)
        fs->retained_limit = RETAINED_LIMIT_DEFAULT;
    struct nc_fh root_fh;
    struct nc_attr root_attr;
    nc_client_root(client, &root_fh, &root_attr);
    int err = fs_inodes_init(fs, &root_fh, &root_attr);
    if (err) {
        fs_free(fs);
        return err;
    }
    *out = fs;
    return 0;
}

static bool busy(const struct fs *fs)
{
    return fs->requests_waiting || fs->write_count || fs->background;
}

/* Runs NFS alone (FUSE is no longer read) until our work is done. */
static void drain_nfs(struct fs *fs, double deadline)
{
    while (busy(fs) && fs_now() < deadline) {
        nc_client_run_once(fs->nc, 100);
        if (busy(fs) && nc_client_pending(fs->nc) == 0) {
            /* No request on the wire can finish what is left: a count went
             * astray. Waiting would only hold up the exit. */
            elog_error(FS_COMPONENT,
                       "at exit, %u requests, %u writes and %u background tasks "
                       "are not tracked by any NFS request",
                       fs->requests_waiting, fs->write_count, fs->background);
            break;
        }
    }
}

void fs_free(struct fs *fs)
{
    if (!fs)
        return;
    fs_unmount(fs);
    if (busy(fs)) {
        /* fs_run did not finish the work (it was not called, or timed out). */
        fs->draining = true;
        fs_locks_cancel_waits(fs);
        fs_writes_release_held(fs, true);
        drain_nfs(fs, fs_now() + DRAIN_TIMEOUT_MS / 1000.0);
    }
    if (busy(fs)) {
        /* The client would call back into freed memory: keep it instead. */
        elog_error(FS_COMPONENT,
                   "%u requests, %u writes and %u background tasks still wait for the "
                   "server; not freeing the filesystem state",
                   fs->requests_waiting, fs->write_count, fs->background);
        return;
    }
    if (fs->se)
        fuse_session_destroy(fs->se);
    fs_writes_free(fs);
    fs_files_free(fs);
    fs_dirs_free(fs);
    fs_inodes_free(fs);
    free(fs->mountpoint);
    free(fs);
}

/* The mount's device number, from mountinfo: stat() on it would ask us. */
static bool mount_device(const char *mountpoint, unsigned *major_out, unsigned *minor_out)
{
    FILE *f = fopen("/proc/self/mountinfo", "r");
    if (!f)
        return false;
    char line[4096];
    bool found = false;
    while (fgets(line, sizeof(line), f)) {
        unsigned id, parent, maj, min;
        char root[1024], point[1024];
        if (sscanf(line, "%u %u %u:%u %1023s %1023s", &id, &parent, &maj, &min, root, point) != 6)
            continue;
        if (strcmp(point, mountpoint) == 0) {
            *major_out = maj;
            *minor_out = min;
            found = true; /* keep going: the last mount on a path is the visible one */
        }
    }
    fclose(f);
    return found;
}

/*
 * The kernel ignores the max_readahead that init asks for beyond its 128 KiB
 * default (it keeps the lower of the two); the mount's bdi setting is what
 * raises it -- written once the INIT answer is in, or that answer lowers it
 * again to max_readahead.
 */
static void raise_readahead(struct fs *fs)
{
    if (!fs->config.readahead_kb)
        return;
    unsigned maj, min;
    if (!mount_device(fs->mountpoint, &maj, &min)) {
        elog_debug(FS_COMPONENT, "mount not found in mountinfo; readahead unchanged");
        return;
    }
    char path[96];
    snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        elog_debug(FS_COMPONENT, "cannot open %s: %s; readahead unchanged", path, strerror(errno));
        return;
    }
    char value[16];
    int n = snprintf(value, sizeof(value), "%u", fs->config.readahead_kb);
    if (write(fd, value, (size_t)n) != n)
        elog_debug(FS_COMPONENT, "cannot set %s: %s", path, strerror(errno));
    close(fd);
}

int fs_mount(struct fs *fs, struct fuse_args *args, const char *mountpoint, char *errbuf,
             size_t errlen)
{
    char opt[64];
    /* libfuse refuses a max_read in init that differs from the mount's. */
    snprintf(opt, sizeof(opt), "-omax_read=%u", fs->config.max_read);
    if (fuse_opt_add_arg(args, opt) != 0 ||
        (fs->config.readonly && fuse_opt_add_arg(args, "-oro") != 0)) {
        snprintf(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    fs->se = fuse_session_new(args, &ops, sizeof(ops), fs);
    if (!fs->se) {
        snprintf(errbuf, errlen, "libfuse refused the mount options");
        return -EINVAL;
    }
    if (fuse_session_mount(fs->se, mountpoint) != 0) {
        snprintf(errbuf, errlen, "FUSE mount failed (is /dev/fuse available, and are we root?)");
        return -EIO;
    }
    fs->mountpoint = strdup(mountpoint);
    if (!fs->mountpoint) {
        fuse_session_unmount(fs->se);
        snprintf(errbuf, errlen, "out of memory");
        return -ENOMEM;
    }
    fs->mounted = true;
    return 0;
}

void fs_unmount(struct fs *fs)
{
    if (!fs || !fs->mounted)
        return;
    fuse_session_unmount(fs->se);
    fs->mounted = false;
}

/*
 * Reads FUSE requests while there are any, so that many are in flight
 * before we wait for the server. Returns false when the session is over.
 */
static bool read_requests(struct fs *fs, struct fuse_buf *buf, int *result)
{
    for (int i = 0; i < FUSE_REQUESTS_PER_TURN; i++) {
        int res = fuse_session_receive_buf(fs->se, buf);
        if (res == -EAGAIN || res == -EINTR)
            return true;
        /* ECONNABORTED: the connection was aborted (through
         * /sys/fs/fuse/connections, or by the kernel while it tore down an
         * unmounted connection, as seen once under valgrind). Like the
         * POLLERR that usually announces either, it ends the session. */
        if (res == 0 || res == -ENODEV || res == -ECONNABORTED)
            return false; /* unmounted */
        if (res < 0) {
            *result = res;
            return false;
        }
        fs->request_buf = buf;
        fuse_session_process_buf(fs->se, buf);
        fs->request_buf = NULL;
        if (fs->readahead_due) {
            /* The INIT answer was written (and applied) by process_buf. */
            fs->readahead_due = false;
            raise_readahead(fs);
        }
        if (fuse_session_exited(fs->se))
            return false;
    }
    return true;
}

char *fs_request_buf_take(struct fs *fs, const char *data, size_t size)
{
    struct fuse_buf *buf = fs->request_buf;
    if (!buf || (buf->flags & FUSE_BUF_IS_FD) || !buf->mem)
        return NULL;
    char *base = buf->mem;
    uintptr_t start = (uintptr_t)base, at = (uintptr_t)data;
    if (at < start || at - start > buf->size || size > buf->size - (at - start))
        return NULL;
    /* libfuse reads up to its own buffer size, which it does not tell;
     * what it allocated holds at least that much. A buffer kept for a
     * small write would pin far more memory than the data it holds. */
    size_t capacity = malloc_usable_size(base);
    if (size < capacity / 4 * 3)
        return NULL;
    char *fresh = malloc(capacity);
    if (!fresh)
        return NULL;
    buf->mem = fresh;
    return base;
}

/*
 * The heap keeps freed I/O buffers for the next burst (see tune_malloc in
 * sidecar/main.c); once the mount has been quiet for a while they go back
 * to the kernel, so an idle sidecar is small again.
 */
#define IDLE_TRIM_MS 2000

static int idle_trim_timeout(struct fs *fs, uint64_t last_active_ms, bool trimmed, int timeout_ms)
{
    if (trimmed || nc_client_pending(fs->nc) > 0)
        return timeout_ms;
    uint64_t now = (uint64_t)(fs_now() * 1000);
    uint64_t due = last_active_ms + IDLE_TRIM_MS;
    int left = now >= due ? 0 : (int)(due - now);
    return timeout_ms < 0 || left < timeout_ms ? left : timeout_ms;
}

static int serve(struct fs *fs)
{
    int fuse_fd = fuse_session_fd(fs->se);
    int flags = fcntl(fuse_fd, F_GETFL);
    if (flags < 0 || fcntl(fuse_fd, F_SETFL, flags | O_NONBLOCK) < 0)
        return -errno;
    /*
     * The exit signals stay blocked except inside ppoll: one that arrives
     * between the check of fuse_session_exited() and the wait would
     * otherwise go unnoticed until something else woke us.
     */
    sigset_t exit_signals, wait_mask;
    sigemptyset(&exit_signals);
    sigaddset(&exit_signals, SIGTERM);
    sigaddset(&exit_signals, SIGINT);
    sigaddset(&exit_signals, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &exit_signals, &wait_mask) < 0)
        return -errno;
    sigdelset(&wait_mask, SIGTERM);
    sigdelset(&wait_mask, SIGINT);
    sigdelset(&wait_mask, SIGHUP);

    struct fuse_buf buf = {0};
    int result = 0;
    uint64_t last_active_ms = (uint64_t)(fs_now() * 1000);
    bool trimmed = false;
    while (!fuse_session_exited(fs->se)) {
        struct pollfd pfd[1 + NC_POLLFDS_MAX];
        pfd[0].fd = fuse_fd;
        pfd[0].events = POLLIN;
        pfd[0].revents = 0;
        int n = 1 + nc_client_pollfds(fs->nc, pfd + 1, NC_POLLFDS_MAX);
        fs_heap_prepare_wanted(fs); /* after the sends: nc_client_pollfds made them */
        int timeout_ms =
            idle_trim_timeout(fs, last_active_ms, trimmed, nc_client_timeout_ms(fs->nc));
        struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000};
        int rc = ppoll(pfd, (nfds_t)n, timeout_ms < 0 ? NULL : &ts, &wait_mask);
        if (rc < 0) {
            if (errno == EINTR)
                continue; /* fuse_session_exited() tells whether it was ours */
            result = -errno;
            break;
        }
        if (rc == 0)
            for (int i = 0; i < n; i++)
                pfd[i].revents = 0;
        if (rc > 0 || nc_client_pending(fs->nc) > 0) {
            last_active_ms = (uint64_t)(fs_now() * 1000);
            trimmed = false;
        } else if (!trimmed && idle_trim_timeout(fs, last_active_ms, false, -1) == 0) {
            malloc_trim(0);
            trimmed = true;
        }
        if (pfd[0].revents & POLLIN) {
            if (!read_requests(fs, &buf, &result))
                fuse_session_exit(fs->se);
        } else if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            fuse_session_exit(fs->se); /* unmounted, or the connection was aborted */
        }
        nc_client_dispatch(fs->nc, pfd + 1, n - 1);
    }
    free(buf.mem);
    sigprocmask(SIG_UNBLOCK, &exit_signals, NULL);
    return result;
}

int fs_run(struct fs *fs)
{
    if (fuse_set_signal_handlers(fs->se) != 0)
        return -EIO;
    int result = serve(fs);
    fuse_remove_signal_handlers(fs->se);

    /* Whatever the kernel gave us must reach the server before we go. */
    double deadline = fs_now() + DRAIN_TIMEOUT_MS / 1000.0;
    fs->draining = true;
    fs_locks_cancel_waits(fs);
    fs_writes_release_held(fs, true);
    drain_nfs(fs, deadline);
    fs_files_drain(fs, deadline);
    drain_nfs(fs, deadline);
    if (busy(fs))
        elog_error(FS_COMPONENT,
                   "exiting with %u requests, %u writes and %u background tasks unanswered "
                   "by the server",
                   fs->requests_waiting, fs->write_count, fs->background);
    elog_debug(FS_COMPONENT, "exiting with %zu inodes and %zu names known", fs->ninodes,
               fs->nnames);
    return result;
}
