/*
 * nfs_ceiling: drives nfsclient directly, without FUSE, to measure what our
 * NFS layer can do against a server: the ceiling an efsfuse mount is
 * compared with. Prints one JSON object.
 *
 *   nfs_ceiling HOST PORT [--size-mib N] [--files N] [--dir-entries N]
 *                         [--server-pid PID]
 *   nfs_ceiling HOST PORT --read-file NAME [--depth N]
 *   nfs_ceiling HOST PORT --write-file NAME [--size-mib N] [--depth N]
 *                         [--commit-every MIB]
 *
 * Works in a fresh directory "nfs_ceiling.<pid>" under the export root and
 * removes it at the end. --read-file reads an existing file of the export
 * root; --write-file writes a new one there (COMMIT included) and removes
 * it: the halves of the benchmark's back-to-back pairs with efsfuse.
 */
#include "common/log.h"
#include "nfsclient/nfsclient.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct nc_client *client;
static struct nc_cred cred;
static struct nc_fh workdir;
static unsigned char *payload;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Busy CPU-seconds of the whole machine (every core; not idle, not iowait):
 * the cost of a figure includes the server's work, which shares the cores. */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return 0;
    unsigned long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                       steal = 0;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle,
                   &iowait, &irq, &softirq, &steal);
    fclose(f);
    if (n < 7)
        return 0;
    return (double)(user + nice + sys + irq + softirq + steal) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU-seconds one process (all its threads) has used so far; 0 when it is
 * gone. The name in /proc/PID/stat may hold spaces and parentheses: the
 * fields counted here follow its last ')'. */
static double process_busy_s(int pid)
{
    char path[64], line[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char *got = fgets(line, sizeof(line), f);
    fclose(f);
    const char *rest = got ? strrchr(line, ')') : NULL;
    unsigned long long utime = 0, stime = 0;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
    if (!rest || sscanf(rest + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                        &stime) != 2)
        return 0;
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

/* The NFS server's PID (--server-pid), whose share of the cost is reported
 * apart: 0 when not given. */
static int server_pid;

/* Busy cores (machine-wide, and the server's) over the last pipeline_run. */
static double last_busy_cores, last_server_cores;

static void die(const char *what, int err)
{
    fprintf(stderr, "nfs_ceiling: %s: %s\n", what, strerror(-err));
    exit(1);
}

/* --- synchronous helper for set-up steps --- */

struct sync_result {
    bool done;
    struct nc_reply reply;
    struct nc_fh fh;
    struct nc_open *open;
    uint64_t last_cookie;
    uint64_t cookieverf;
    unsigned nentries;
};

static void sync_cb(void *arg, const struct nc_reply *r)
{
    struct sync_result *s = arg;
    s->done = true;
    s->reply = *r;
    s->fh = r->fh;
    s->open = r->open;
    s->nentries = r->nentries;
    s->cookieverf = r->cookieverf;
    if (r->nentries)
        s->last_cookie = r->entries[r->nentries - 1].cookie;
}

static struct sync_result wait_for(struct sync_result *s)
{
    while (!s->done)
        nc_client_run_once(client, 1000);
    return *s;
}

/* --- a pipeline: keeps `depth` operations in flight until `total` are done --- */

struct pipeline;
typedef void (*issue_fn)(struct pipeline *p, unsigned index);

struct pipeline {
    unsigned total;
    unsigned issued;
    unsigned completed;
    unsigned depth;
    int first_error;
    issue_fn issue;
    void *state;
};

static void pipeline_complete(struct pipeline *p, int err)
{
    p->completed++;
    if (err && !p->first_error)
        p->first_error = err;
    while (p->issued < p->total && p->issued - p->completed < p->depth)
        p->issue(p, p->issued++);
}

static double pipeline_run(struct pipeline *p, const char *what)
{
    double t0 = now_s();
    double busy0 = machine_busy_s();
    double server0 = server_pid ? process_busy_s(server_pid) : 0;
    while (p->issued < p->total && p->issued < p->depth)
        p->issue(p, p->issued++);
    while (p->completed < p->total)
        nc_client_run_once(client, 1000);
    if (p->first_error)
        die(what, p->first_error);
    double elapsed = now_s() - t0;
    last_busy_cores = elapsed > 0 ? (machine_busy_s() - busy0) / elapsed : 0;
    last_server_cores =
        server_pid && elapsed > 0 ? (process_busy_s(server_pid) - server0) / elapsed : 0;
    return elapsed;
}

/* "key": value, "key_cpu": the busy cores while it was measured, and with
 * --server-pid "key_server_cpu": the server's part of them. */
static void print_figure(const char *key, const char *fmt, double value)
{
    printf("  \"%s\": ", key);
    printf(fmt, value);
    printf(",\n  \"%s_cpu\": %.3f,\n", key, last_busy_cores);
    if (server_pid)
        printf("  \"%s_server_cpu\": %.3f,\n", key, last_server_cores);
}

static void pipeline_cb(void *arg, const struct nc_reply *r)
{
    pipeline_complete(arg, r->err);
}

/* --- sequential and random I/O --- */

struct io_state {
    struct nc_open *open;
    uint32_t size;
    uint64_t file_blocks; /* for random reads */
};

static void issue_write(struct pipeline *p, unsigned i)
{
    struct io_state *s = p->state;
    nc_write(client, &cred, s->open, (uint64_t)i * s->size, payload, s->size, false, pipeline_cb,
             p);
}

/* --commit-every: a COMMIT in the background every `commit_every` MiB
 * written, one at a time, as efsfuse's write-behind sends them to bound the
 * data it must keep until the server has it on disk. */
static unsigned commit_every;
static unsigned commits_sent;
static bool commit_in_flight;
static int commit_error;

static void background_commit_cb(void *arg, const struct nc_reply *r)
{
    (void)arg;
    commit_in_flight = false;
    if (r->err && !commit_error)
        commit_error = r->err;
}

static void write_then_maybe_commit_cb(void *arg, const struct nc_reply *r)
{
    struct pipeline *p = arg;
    struct io_state *s = p->state;
    if (!r->err && !commit_in_flight && p->completed + 1 >= (commits_sent + 1) * commit_every) {
        commits_sent++;
        commit_in_flight = true;
        nc_commit(client, &cred, s->open, background_commit_cb, NULL);
    }
    pipeline_complete(p, r->err);
}

static void issue_write_committing(struct pipeline *p, unsigned i)
{
    struct io_state *s = p->state;
    nc_write(client, &cred, s->open, (uint64_t)i * s->size, payload, s->size, false,
             write_then_maybe_commit_cb, p);
}

static void issue_read(struct pipeline *p, unsigned i)
{
    struct io_state *s = p->state;
    nc_read(client, &cred, s->open, (uint64_t)i * s->size, s->size, pipeline_cb, p);
}

static void issue_random_read(struct pipeline *p, unsigned i)
{
    struct io_state *s = p->state;
    uint64_t block = ((uint64_t)rand() << 16 ^ (uint64_t)rand()) % s->file_blocks;
    nc_read(client, &cred, s->open, block * s->size, s->size, pipeline_cb, p);
}

static struct nc_open *open_file(const char *name, uint32_t flags)
{
    struct sync_result s = {0};
    nc_open(client, &cred, &workdir, name, NULL, flags, 0644, sync_cb, &s);
    wait_for(&s);
    if (s.reply.err)
        die("open", s.reply.err);
    return s.open;
}

static void close_file(struct nc_open *open)
{
    struct sync_result s = {0};
    nc_close(client, open, sync_cb, &s);
    wait_for(&s);
}

/* Writes `mib` MiB of a file (created, or truncated) in the directory dir,
 * with `depth` 1 MiB WRITEs in flight, then COMMITs and closes: MiB/s. */
static double write_and_commit(const struct nc_fh *dir, const char *name, unsigned mib,
                               unsigned depth)
{
    /* A fresh file every time, as `dd of=` through the mount writes: the
     * server allocates its blocks again instead of overwriting them. */
    struct sync_result o = {0};
    nc_open(client, &cred, dir, name, NULL,
            NC_OPEN_READ | NC_OPEN_WRITE | NC_OPEN_CREATE | NC_OPEN_TRUNC, 0644, sync_cb, &o);
    wait_for(&o);
    if (o.reply.err)
        die(name, o.reply.err);
    struct io_state st = {.open = o.open, .size = 1u << 20};
    struct pipeline p = {.total = mib,
                         .depth = depth,
                         .issue = commit_every ? issue_write_committing : issue_write,
                         .state = &st};
    double t0 = now_s();
    pipeline_run(&p, "write");
    while (commit_in_flight)
        nc_client_run_once(client, 1000);
    if (commit_error)
        die("commit", commit_error);
    struct sync_result s = {0};
    nc_commit(client, &cred, st.open, sync_cb, &s);
    wait_for(&s);
    if (s.reply.err)
        die("commit", s.reply.err);
    double elapsed = now_s() - t0;
    close_file(st.open);
    return mib / elapsed;
}

static double seq_write(unsigned mib, unsigned depth)
{
    return write_and_commit(&workdir, "seq", mib, depth);
}

/* Reads the first `mib` MiB of an open file with `depth` 1 MiB READs in
 * flight, then closes it: MiB/s. */
static double read_and_close(struct nc_open *open, unsigned mib, unsigned depth)
{
    struct io_state st = {.open = open, .size = 1u << 20};
    struct pipeline p = {.total = mib, .depth = depth, .issue = issue_read, .state = &st};
    double elapsed = pipeline_run(&p, "read");
    close_file(open);
    return mib / elapsed;
}

static double seq_read(unsigned mib, unsigned depth)
{
    return read_and_close(open_file("seq", NC_OPEN_READ), mib, depth);
}

/* --read-file: an existing file of the export (the one a FUSE client reads
 * just before or after), read whole with `depth` 1 MiB READs in flight. */
static double read_existing(const struct nc_fh *root, const char *name, unsigned depth,
                            unsigned *mib_read)
{
    struct sync_result s = {0};
    nc_open(client, &cred, root, name, NULL, NC_OPEN_READ, 0, sync_cb, &s);
    wait_for(&s);
    if (s.reply.err)
        die(name, s.reply.err);
    if (!s.reply.has_attr || s.reply.attr.size < (1u << 20))
        die(name, -EINVAL);
    *mib_read = (unsigned)(s.reply.attr.size >> 20);
    return read_and_close(s.open, *mib_read, depth);
}

static double random_read(unsigned mib, unsigned depth, unsigned count)
{
    struct io_state st = {
        .open = open_file("seq", NC_OPEN_READ), .size = 4096, .file_blocks = (uint64_t)mib * 256};
    struct pipeline p = {.total = count, .depth = depth, .issue = issue_random_read, .state = &st};
    double elapsed = pipeline_run(&p, "random read");
    close_file(st.open);
    return count / elapsed;
}

/* --- metadata --- */

/* One file's multi-step operation (open, then read, then close). */
struct meta_op {
    struct pipeline *p;
    unsigned index;
    int step;
    struct nc_open *open;
};

enum meta_kind {
    META_CREATE,
    META_STAT,
    META_FILL,          /* untimed: gives each file the 4 KiB the reads expect */
    META_OPEN_READ,     /* OPEN, READ 4 KiB, CLOSE: three round trips */
    META_OPEN_PREFETCH, /* OPEN+READ in one compound, CLOSE */
    META_SNAPSHOT,      /* ACCESS+GETATTR+READ without open state: what efsfuse sends */
    META_UNLINK,
};
#define SMALL_FILE_BYTES 4096u
static enum meta_kind meta_kind;
static struct nc_fh *file_fhs;

static void file_name(char *buf, size_t len, unsigned i)
{
    snprintf(buf, len, "f%06u", i);
}

static void meta_step(void *arg, const struct nc_reply *r);

static void meta_advance(struct meta_op *op)
{
    char name[16];
    file_name(name, sizeof(name), op->index);
    switch (meta_kind) {
    case META_CREATE:
        /* What open(O_CREAT | O_EXCL | O_WRONLY) through efsfuse sends, as
         * the benchmark's create does (EXCLUSIVE4, then SETATTR of the mode). */
        if (op->step == 0)
            nc_open(client, &cred, &workdir, name, NULL,
                    NC_OPEN_WRITE | NC_OPEN_CREATE | NC_OPEN_EXCL, 0644, meta_step, op);
        else
            nc_close(client, op->open, meta_step, op);
        break;
    case META_STAT:
        nc_getattr(client, &cred, &file_fhs[op->index], meta_step, op);
        break;
    case META_FILL:
        if (op->step == 0)
            nc_open(client, &cred, &workdir, name, &file_fhs[op->index], NC_OPEN_WRITE, 0,
                    meta_step, op);
        else if (op->step == 1)
            nc_write(client, &cred, op->open, 0, payload, SMALL_FILE_BYTES, false, meta_step, op);
        else
            nc_close(client, op->open, meta_step, op);
        break;
    case META_OPEN_READ:
        if (op->step == 0)
            nc_open(client, &cred, &workdir, name, &file_fhs[op->index], NC_OPEN_READ, 0, meta_step,
                    op);
        else if (op->step == 1)
            nc_read(client, &cred, op->open, 0, SMALL_FILE_BYTES, meta_step, op);
        else
            nc_close(client, op->open, meta_step, op);
        break;
    case META_OPEN_PREFETCH:
        if (op->step == 0)
            nc_open(client, &cred, &workdir, name, &file_fhs[op->index],
                    NC_OPEN_READ | NC_OPEN_PREFETCH, 0, meta_step, op);
        else
            nc_close(client, op->open, meta_step, op);
        break;
    case META_SNAPSHOT:
        nc_snapshot(client, &cred, &file_fhs[op->index], SMALL_FILE_BYTES, meta_step, op);
        break;
    case META_UNLINK:
        nc_remove(client, &cred, &workdir, name, meta_step, op);
        break;
    }
}

static int meta_steps(void)
{
    switch (meta_kind) {
    case META_CREATE:
    case META_OPEN_PREFETCH:
        return 2;
    case META_FILL:
    case META_OPEN_READ:
        return 3;
    default:
        return 1;
    }
}

static void meta_step(void *arg, const struct nc_reply *r)
{
    struct meta_op *op = arg;
    if (r->open)
        op->open = r->open;
    if (meta_kind == META_CREATE && op->step == 0 && !r->err)
        file_fhs[op->index] = r->fh;
    int err = r->err;
    /* The reads must have read the file, or the figure measures nothing. */
    bool read_step =
        (meta_kind == META_OPEN_READ && op->step == 1) ||
        ((meta_kind == META_OPEN_PREFETCH || meta_kind == META_SNAPSHOT) && op->step == 0);
    if (!err && read_step && r->count != SMALL_FILE_BYTES)
        err = -EIO;
    op->step++;
    if (err || op->step >= meta_steps()) {
        struct pipeline *p = op->p;
        if (err && op->open && op->step < meta_steps())
            nc_close(client, op->open, NULL, NULL);
        free(op);
        pipeline_complete(p, err);
        return;
    }
    meta_advance(op);
}

static void issue_meta(struct pipeline *p, unsigned i)
{
    struct meta_op *op = calloc(1, sizeof(*op));
    if (!op)
        die("calloc", -ENOMEM);
    op->p = p;
    op->index = i;
    meta_advance(op);
}

static double meta_rate(enum meta_kind kind, unsigned files, unsigned depth)
{
    meta_kind = kind;
    struct pipeline p = {.total = files, .depth = depth, .issue = issue_meta};
    return files / pipeline_run(&p, "metadata");
}

/* Lists a directory with attributes, in READDIR batches one after another. */
static double readdir_time(const struct nc_fh *dir, unsigned *count)
{
    double t0 = now_s();
    uint64_t cookie = 0, verf = 0;
    unsigned n = 0;
    for (;;) {
        struct sync_result s = {0};
        nc_readdir(client, &cred, dir, cookie, verf, 128 * 1024, sync_cb, &s);
        wait_for(&s);
        if (s.reply.err)
            die("readdir", s.reply.err);
        n += s.nentries;
        if (s.reply.eof || !s.nentries)
            break;
        cookie = s.last_cookie;
        verf = s.cookieverf;
    }
    *count = n;
    return now_s() - t0;
}

static void remove_name_in(const struct nc_fh *dir, const char *name)
{
    struct sync_result s = {0};
    nc_remove(client, &cred, dir, name, sync_cb, &s);
    wait_for(&s);
}

static void remove_name(const char *name)
{
    remove_name_in(&workdir, name);
}

/* Ends a run: the connection closed, the exit status for main. */
static int finish(int status)
{
    free(payload);
    nc_client_shutdown(client);
    nc_client_free(client);
    return status;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: nfs_ceiling HOST PORT [--size-mib N] [--files N] "
                        "[--dir-entries N] [--server-pid PID] [--read-file NAME [--depth N]]\n"
                        "       [--list-dir NAME]\n"
                        "       [--write-file NAME [--size-mib N] [--depth N] "
                        "[--commit-every MIB]]\n");
        return 2;
    }
    unsigned size_mib = 1024, files = 5000, dir_entries = 10000, depth = 16;
    const char *read_file = NULL, *write_file = NULL, *list_dir = NULL;
    for (int i = 3; i < argc; i += 2) {
        if (i + 1 == argc) {
            fprintf(stderr, "nfs_ceiling: %s needs a value\n", argv[i]);
            return 2;
        }
        if (strcmp(argv[i], "--size-mib") == 0)
            size_mib = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--files") == 0)
            files = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--dir-entries") == 0)
            dir_entries = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--server-pid") == 0)
            server_pid = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--read-file") == 0)
            read_file = argv[i + 1];
        else if (strcmp(argv[i], "--write-file") == 0)
            write_file = argv[i + 1];
        else if (strcmp(argv[i], "--list-dir") == 0)
            list_dir = argv[i + 1];
        else if (strcmp(argv[i], "--commit-every") == 0)
            commit_every = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--depth") == 0)
            depth = (unsigned)atoi(argv[i + 1]);
        else {
            fprintf(stderr, "nfs_ceiling: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (dir_entries < files)
        dir_entries = files;
    elog_setup(ELOG_WARN, ELOG_TEXT);
    struct nc_client_config cfg = {.host = argv[1], .port = (uint16_t)atoi(argv[2]), .path = "/"};
    char err[256];
    int rc = nc_client_new(&client, &cfg);
    if (rc)
        die("client", rc);
    if ((rc = nc_client_connect(client, err, sizeof(err)))) {
        fprintf(stderr, "nfs_ceiling: %s\n", err);
        return 1;
    }
    payload = malloc(1u << 20);
    for (unsigned i = 0; i < (1u << 20); i++)
        payload[i] = (unsigned char)(i * 131);

    struct nc_fh root;
    nc_client_root(client, &root, NULL);
    if (write_file) {
        char key[64];
        snprintf(key, sizeof(key), "write_file_mibps_qd%u", depth ? depth : 1);
        double v = write_and_commit(&root, write_file, size_mib, depth ? depth : 1);
        /* Removed through the server: a file deleted behind nfs-ganesha's
         * back stays in its cache, and the next OPEN of the name would
         * reach the deleted inode. */
        remove_name_in(&root, write_file);
        printf("{\n");
        print_figure(key, "%.1f", v);
        printf("  \"commits\": %u,\n  \"size_mib\": %u\n}\n", commits_sent + 1, size_mib);
        return finish(0);
    }
    if (list_dir) {
        /* A directory efsfuse lists too, so that both meet the server's
         * caches in the same state. */
        struct sync_result s = {0};
        nc_lookup(client, &cred, &root, list_dir, sync_cb, &s);
        wait_for(&s);
        if (s.reply.err)
            die(list_dir, s.reply.err);
        unsigned listed = 0;
        double t = readdir_time(&s.fh, &listed);
        printf("{\n  \"list_dir_entries\": %u,\n  \"list_dir_s\": %.4f\n}\n", listed, t);
        return finish(0);
    }
    if (read_file) {
        char key[64];
        snprintf(key, sizeof(key), "read_file_mibps_qd%u", depth ? depth : 1);
        unsigned mib = 0;
        double v = read_existing(&root, read_file, depth ? depth : 1, &mib);
        printf("{\n");
        print_figure(key, "%.1f", v);
        printf("  \"size_mib\": %u\n}\n", mib);
        return finish(0);
    }
    char dirname[64];
    snprintf(dirname, sizeof(dirname), "nfs_ceiling.%d", (int)getpid());
    struct sync_result s = {0};
    nc_mkdir(client, &cred, &root, dirname, 0755, sync_cb, &s);
    wait_for(&s);
    if (s.reply.err)
        die("mkdir", s.reply.err);
    workdir = s.fh;

    printf("{\n  \"size_mib\": %u,\n", size_mib);
    const unsigned depths[] = {1, 4, 16};
    char key[64];
    for (unsigned d = 0; d < 3; d++)
        printf("  \"seq_write_mibps_qd%u\": %.1f,\n", depths[d], seq_write(size_mib, depths[d]));
    for (unsigned d = 0; d < 3; d++) {
        double v = seq_read(size_mib, depths[d]);
        snprintf(key, sizeof(key), "seq_read_mibps_qd%u", depths[d]);
        print_figure(key, "%.1f", v);
    }
    print_figure("rand_read_4k_iops_qd1", "%.0f", random_read(size_mib, 1, 5000));
    print_figure("rand_read_4k_iops_qd4", "%.0f", random_read(size_mib, 4, 20000));
    remove_name("seq");

    file_fhs = calloc(dir_entries, sizeof(*file_fhs));
    const unsigned meta_depths[] = {1, 8};
    for (unsigned d = 0; d < 2; d++) {
        unsigned qd = meta_depths[d];
        double v = meta_rate(META_CREATE, files, qd);
        snprintf(key, sizeof(key), "create_per_s_qd%u", qd);
        print_figure(key, "%.0f", v);
        printf("  \"stat_per_s_qd%u\": %.0f,\n", qd, meta_rate(META_STAT, files, qd));
        meta_rate(META_FILL, files, 8);
        v = meta_rate(META_OPEN_READ, files, qd);
        snprintf(key, sizeof(key), "open_read_close_per_s_qd%u", qd);
        print_figure(key, "%.0f", v);
        v = meta_rate(META_OPEN_PREFETCH, files, qd);
        snprintf(key, sizeof(key), "open_read_close_compound_per_s_qd%u", qd);
        print_figure(key, "%.0f", v);
        v = meta_rate(META_SNAPSHOT, files, qd);
        snprintf(key, sizeof(key), "snapshot_per_s_qd%u", qd);
        print_figure(key, "%.0f", v);
        printf("  \"unlink_per_s_qd%u\": %.0f,\n", qd, meta_rate(META_UNLINK, files, qd));
    }
    /* A directory of dir_entries files for the listing figure. */
    meta_rate(META_CREATE, dir_entries, 8);
    unsigned listed = 0;
    double t = readdir_time(&workdir, &listed);
    printf("  \"readdir_entries\": %u,\n  \"readdir_s\": %.4f\n}\n", listed, t);
    meta_rate(META_UNLINK, dir_entries, 8);
    struct sync_result rm = {0};
    nc_remove(client, &cred, &root, dirname, sync_cb, &rm);
    wait_for(&rm);
    free(file_fhs);
    return finish(listed == dir_entries ? 0 : 1);
}
