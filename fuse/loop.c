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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define FUSE_REQUESTS_PER_TURN 64
/* How long unmounting may wait for write-behind to reach the server. */
#define DRAIN_TIMEOUT_MS 60000

void fs_config_defaults(struct fs_config *config)
{
    memset(config, 0, sizeof(*config));
    config->attr_timeout = 1.0;
    config->entry_timeout = 1.0;
    config->negative_timeout = 1.0;
    config->max_read = 1u << 20;
    config->max_write = 1u << 20;
    config->max_inflight = 64;
    config->readahead_kb = 1024;
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

void fs_req_cred(struct fs *fs, fuse_req_t req, struct nc_cred *cred)
{
    const struct fuse_ctx *ctx = fuse_req_ctx(req);
    memset(cred, 0, sizeof(*cred));
    cred->uid = ctx->uid;
    cred->gid = ctx->gid;
    gid_t groups[NC_MAX_GROUPS];
    int n = fuse_req_getgroups(req, NC_MAX_GROUPS, groups);
    if (n > NC_MAX_GROUPS)
        n = NC_MAX_GROUPS; /* AUTH_SYS carries 16; the rest cannot be sent */
    for (int i = 0; i < n; i++)
        cred->groups[i] = groups[i];
    cred->ngroups = n > 0 ? (uint32_t)n : 0;
    if (fs->config.uid_override >= 0)
        cred->uid = (uint32_t)fs->config.uid_override;
    if (fs->config.gid_override >= 0)
        cred->gid = (uint32_t)fs->config.gid_override;
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    struct fs *fs = userdata;
    conn->max_write = fs->config.max_write;
    conn->max_read = fs->config.max_read;
    conn->max_readahead = fs->config.max_read;
    conn->max_background = (unsigned)fs->config.max_inflight;
    conn->congestion_threshold = (unsigned)fs->config.max_inflight * 3 / 4;
    conn->time_gran = 1;
    unsigned want = FUSE_CAP_ASYNC_READ | FUSE_CAP_READDIRPLUS | FUSE_CAP_POSIX_LOCKS |
                    FUSE_CAP_FLOCK_LOCKS | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_PARALLEL_DIROPS |
                    FUSE_CAP_AUTO_INVAL_DATA;
    conn->want |= want & conn->capable;
    /* Several clients share the files: the page cache must not hold writes
     * back (writeback_cache), and readdir always asks the server. Splice
     * gains nothing here (see README). */
    conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_READDIRPLUS_AUTO | FUSE_CAP_SPLICE_READ |
                    FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
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
    fs->nc = client;
    /* Enough write-behind to keep the wire busy, little enough that close()
     * does not wait long: in-flight requests' worth of full writes, at
     * least 16 MiB. */
    fs->write_limit = (uint64_t)fs->config.max_inflight * fs->config.max_write / 2;
    if (fs->write_limit < (16u << 20))
        fs->write_limit = 16u << 20;
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

void fs_free(struct fs *fs)
{
    if (!fs)
        return;
    fs_unmount(fs);
    if (fs->se)
        fuse_session_destroy(fs->se);
    fs_files_free(fs);
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

/* The kernel ignores the max_readahead that init asks for beyond 128 KiB;
 * the mount's bdi setting is what raises it. */
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
        elog_debug(FS_COMPONENT, "cannot open %s: %s; readahead unchanged", path,
                   strerror(errno));
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
    if (fuse_opt_add_arg(args, opt) != 0) {
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
    fs->mounted = true;
    raise_readahead(fs);
    return 0;
}

void fs_unmount(struct fs *fs)
{
    if (!fs || !fs->mounted)
        return;
    fuse_session_unmount(fs->se);
    fs->mounted = false;
}

static int serve(struct fs *fs)
{
    struct fuse_session *se = fs->se;
    int fuse_fd = fuse_session_fd(se);
    int flags = fcntl(fuse_fd, F_GETFL);
    if (flags >= 0)
        fcntl(fuse_fd, F_SETFL, flags | O_NONBLOCK);
    struct fuse_buf buf = {0};
    int result = 0;
    while (!fuse_session_exited(se)) {
        struct pollfd pfd[8];
        pfd[0].fd = fuse_fd;
        pfd[0].events = POLLIN;
        pfd[0].revents = 0;
        int n = 1 + nc_client_pollfds(fs->nc, pfd + 1, 7);
        int rc = poll(pfd, (nfds_t)n, nc_client_timeout_ms(fs->nc));
        if (rc < 0) {
            if (errno == EINTR)
                continue; /* a signal: fuse_session_exited() tells if it was ours */
            result = -errno;
            break;
        }
        if (rc == 0)
            for (int i = 0; i < n; i++)
                pfd[i].revents = 0;
        if (pfd[0].revents & POLLIN) {
            for (int i = 0; i < FUSE_REQUESTS_PER_TURN && !fuse_session_exited(se); i++) {
                int res = fuse_session_receive_buf(se, &buf);
                if (res == -EAGAIN || res == -EINTR)
                    break;
                if (res <= 0) {
                    if (res < 0 && res != -ENODEV)
                        result = res;
                    fuse_session_exit(se);
                    break;
                }
                fuse_session_process_buf(se, &buf);
            }
        } else if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
            fuse_session_exit(se); /* unmounted, or the connection was aborted */
        }
        nc_client_dispatch(fs->nc, pfd + 1, n - 1);
    }
    free(buf.mem);
    return result;
}

int fs_run(struct fs *fs)
{
    if (fuse_set_signal_handlers(fs->se) != 0)
        return -EIO;
    int result = serve(fs);
    fuse_remove_signal_handlers(fs->se);
    /* Whatever the kernel gave us must reach the server before we go. */
    fs_files_drain(fs, DRAIN_TIMEOUT_MS);
    return result;
}
