/*
 * sidecar: the efsfuse program. It turns a command line (or, in a container,
 * the environment) into the configurations of nfsclient and fs, connects,
 * mounts and serves until unmounted.
 *
 * Parsing never exits or prints: every function returns 0 or -errno with a
 * one-line reason in errbuf (without the "efsfuse: " prefix), so that main()
 * alone decides what is printed and with which exit code, and the unit tests
 * can drive every error path.
 */
#ifndef EFSFUSE_SIDECAR_H
#define EFSFUSE_SIDECAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <fuse_opt.h>

#include "common/log.h"
#include "fuse/fs.h"
#include "nfsclient/nfsclient.h"

#ifndef EFSFUSE_VERSION
#error "EFSFUSE_VERSION must come from the build (see Makefile)"
#endif

/* libnfs 4.0.0 has no version call or macro: the build may pass the one
 * pkg-config reports (-DEFSFUSE_LIBNFS_VERSION='"4.0.0"'). */
#ifndef EFSFUSE_LIBNFS_VERSION
#define EFSFUSE_LIBNFS_VERSION "(version not recorded at build time)"
#endif

/* Exit codes of the program (also in doc/efsfuse.1). */
enum {
    SC_EXIT_OK = 0,
    SC_EXIT_FAILURE = 1, /* could not connect, mount or serve */
    SC_EXIT_USAGE = 2,   /* bad command line, environment or mountpoint */
};

/* --- SOURCE (source.c) --- */

/* DNS names are at most 253 characters; an IPv6 address at most 45. */
#define SOURCE_HOST_MAX 253
#define SOURCE_PATH_MAX 4095
/* NFS servers (EFS included) refuse longer names. */
#define SOURCE_NAME_MAX 255

/* A parse result, not an object: fixed buffers so it needs no freeing. */
struct source {
    char host[SOURCE_HOST_MAX + 1]; /* name or address, IPv6 without brackets */
    uint16_t port;                  /* 0 when SOURCE names none */
    char path[SOURCE_PATH_MAX + 1]; /* absolute, normalised: "/" or "/a/b" */
};

/*
 * Parses host:/path, [v6]:/path, host: (the root), nfs://host[:port][/path]
 * or nfs://[v6][:port][/path]. The path is normalised: empty and "."
 * components dropped, no trailing '/', ".." refused. Returns 0, or -EINVAL
 * with the reason in errbuf.
 */
int source_parse(const char *text, struct source *out, char *errbuf, size_t errlen);

/* --- Options (options.c) --- */

enum options_action {
    OPTIONS_RUN,     /* mount */
    OPTIONS_HELP,    /* print options_print_help() to stdout, exit 0 */
    OPTIONS_VERSION, /* print options_print_version() to stdout, exit 0 */
};

/*
 * Everything the program was asked to do. Built by options_parse() only;
 * the pointers inside nc (host, path, client_name) point into this struct,
 * so it must outlive the nc_client made from it.
 */
struct options {
    enum options_action action;
    char *source_text; /* SOURCE as given (also the fsname shown by mount(8)) */
    struct source source;
    char *mountpoint; /* absolute (realpath), or /dev/fd/N from mount.fuse3 */
    bool foreground;  /* -f, -d */
    bool debug;       /* -d / -o debug: libfuse's debug too */
    enum elog_level log_level;
    enum elog_format log_format;
    struct fs_config fs;
    struct nc_client_config nc;
    /* For fs_mount(): argv[0], -o with libfuse's own options, -d when debug. */
    struct fuse_args fuse_args;
    /* Options accepted for mount(8)/fstab's sake but not used, comma
     * separated (NULL when none), so main() can say it ignored them. */
    char *ignored;
    char *client_name; /* storage behind nc.client_name */
};

/*
 * Parses argv (efsfuse SOURCE MOUNTPOINT [-o opts] [-f] [-d] [-h] [-V]) over
 * the EFSFUSE_* variables of envp (NULL-terminated "NAME=value" strings, as
 * environ; may be NULL). Precedence, lowest first: defaults, EFSFUSE_OPTIONS,
 * the individual EFSFUSE_<OPTION> variables, the command line.
 *
 * Returns 0 with *out set (check (*out)->action), -EINVAL for a usage error
 * or -ENOMEM, with the reason in errbuf. When help or version is asked for,
 * other mistakes on the line are not reported.
 */
int options_parse(struct options **out, int argc, char *const argv[], char *const envp[],
                  char *errbuf, size_t errlen);
void options_free(struct options *opts);

void options_print_help(FILE *out);
void options_print_version(FILE *out);

#endif
