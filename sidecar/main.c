/*
 * efsfuse: parse options, connect to the NFS server, mount, serve, unmount.
 *
 * The order matters for the person at the terminal (or mount(8) waiting on
 * us): everything that can fail for a reason they can fix -- options, the
 * server, the mount itself -- happens before daemonizing, so the reason
 * reaches their stderr and the exit code is not 0.
 */
#define FUSE_USE_VERSION 314

#include "sidecar/sidecar.h"

#include <errno.h>
#include <fuse_lowlevel.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

/*
 * The one line a failure prints. With log_format=json it is a JSON line
 * like every other, so a log collector does not choke on it; otherwise the
 * "efsfuse: reason" form that mount(8) users expect.
 */
__attribute__((format(printf, 2, 3))) static void report(const struct options *opts,
                                                         const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (opts && opts->log_format == ELOG_JSON)
        elog_error("main", "%s", msg);
    else
        fprintf(stderr, "efsfuse: %s\n", msg);
}

/*
 * I/O moves through 1 MiB buffers (FUSE requests, WRITE data kept until
 * COMMIT, READ replies). glibc would map each one fresh and unmap it on
 * free, and faulting in and zeroing 256 pages per MiB cost about a fifth of
 * our CPU on the write path. Keep them in the heap instead; what is free at
 * its top beyond the trim threshold still goes back to the kernel.
 */
static void tune_malloc(void)
{
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
    mallopt(M_TRIM_THRESHOLD, 32 << 20);
}

int main(int argc, char *argv[])
{
    struct options *opts = NULL;
    struct nc_client *client = NULL;
    struct fs *fs = NULL;
    bool connected = false, mounted = false;
    char err[512] = "";
    int status = SC_EXIT_FAILURE;
    int rc;

    tune_malloc();
    rc = options_parse(&opts, argc, argv, environ, err, sizeof(err));
    if (rc < 0) {
        report(NULL, "%s", err);
        status = rc == -ENOMEM ? SC_EXIT_FAILURE : SC_EXIT_USAGE;
        goto out;
    }
    if (opts->action == OPTIONS_HELP) {
        options_print_help(stdout);
        status = fflush(stdout) == 0 ? SC_EXIT_OK : SC_EXIT_FAILURE;
        goto out;
    }
    if (opts->action == OPTIONS_VERSION) {
        options_print_version(stdout);
        status = fflush(stdout) == 0 ? SC_EXIT_OK : SC_EXIT_FAILURE;
        goto out;
    }

    elog_setup(opts->log_level, opts->log_format);
    if (opts->ignored)
        elog_info("main", "ignoring options that only mount(8) uses: %s", opts->ignored);
    /* A server that drops the connection must cost an error code on the
     * next send, not the whole process. */
    signal(SIGPIPE, SIG_IGN);

    rc = nc_client_new(&client, &opts->nc);
    if (rc < 0) {
        report(opts, "cannot create the NFS client: %s", strerror(-rc));
        goto out;
    }
    elog_debug("main", "connecting to %s (export path %s)", opts->source_text, opts->nc.path);
    rc = nc_client_connect(client, err, sizeof(err));
    if (rc < 0) {
        report(opts, "%s", err[0] ? err : strerror(-rc));
        goto out;
    }
    connected = true;

    rc = fs_new(&fs, &opts->fs, client);
    if (rc < 0) {
        report(opts, "cannot create the filesystem: %s", strerror(-rc));
        goto out;
    }
    err[0] = '\0';
    rc = fs_mount(fs, &opts->fuse_args, opts->mountpoint, err, sizeof(err));
    if (rc < 0) {
        report(opts, "cannot mount at %s: %s", opts->mountpoint, err[0] ? err : strerror(-rc));
        goto out;
    }
    mounted = true;
    elog_info("main", "mounted %s at %s%s", opts->source_text, opts->mountpoint,
              opts->fs.readonly ? " (read-only)" : "");

    /* Only now: the parent exits 0 once the mount is live, which is what
     * mount(8) and scripts waiting on us take as success. */
    if (fuse_daemonize(opts->foreground) < 0) {
        report(opts, "cannot daemonize: %s", strerror(errno));
        goto out;
    }

    rc = fs_run(fs);
    if (rc < 0)
        elog_error("main", "serving stopped: %s", strerror(-rc));
    else
        elog_info("main", "unmounting %s", opts->mountpoint);
    status = rc < 0 ? SC_EXIT_FAILURE : SC_EXIT_OK;

out:
    if (mounted)
        fs_unmount(fs);
    /* Gives the server back our open states and client id rather than
     * leaving them to expire with the lease. */
    if (connected)
        nc_client_shutdown(client);
    fs_free(fs);
    nc_client_free(client);
    options_free(opts);
    return status;
}
