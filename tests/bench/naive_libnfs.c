/*
 * naive_libnfs: the baseline efsfuse is measured against — what a program
 * gets from libnfs 4.0.0's public, synchronous high-level NFSv4 API with no
 * tricks. Writes a file sequentially, fsyncs it, reads it back, removes it,
 * and prints one JSON object.
 *
 *   naive_libnfs HOST PORT [--size-mib N]
 *
 * The file is "naive_libnfs.<pid>" in the export root.
 */
#include <sys/time.h> /* libnfs.h needs struct timeval first */

#include <nfsc/libnfs.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* libnfs 4.0.0 encodes every NFSv4 COMPOUND into a fixed 4096-byte buffer,
 * so a WRITE carrying more than ~3.9 KB fails to encode; 3584 leaves room
 * for long file handles and credentials. */
#define WRITE_CHUNK 3584u
/* Replies are capped at 1 MiB + 4 KiB per record (larger kills the
 * context), so 1 MiB is the largest round READ. */
#define READ_CHUNK (1u << 20)
/* Data is offset % PATTERN_PERIOD, a prime, so a chunk landing at the wrong
 * offset reads back wrong. */
#define PATTERN_PERIOD 251u

static struct nfs_context *nfs;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "naive_libnfs: %s: %s\n", what, nfs ? nfs_get_error(nfs) : "failed");
    exit(1);
}

static void usage(void)
{
    fprintf(stderr, "usage: naive_libnfs HOST PORT [--size-mib N]\n");
    exit(2);
}

static unsigned long parse_number(const char *what, const char *text, unsigned long min,
                                  unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(text, &end, 10);
    if (errno || end == text || *end || text[0] == '-' || v < min || v > max) {
        fprintf(stderr, "naive_libnfs: %s must be a number from %lu to %lu, not \"%s\"\n", what,
                min, max, text);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        usage();
    const char *host = argv[1];
    unsigned port = (unsigned)parse_number("PORT", argv[2], 1, 65535);
    unsigned long size_mib = 256;
    for (int i = 3; i < argc; i += 2) {
        if (strcmp(argv[i], "--size-mib") != 0) {
            fprintf(stderr, "naive_libnfs: unknown option \"%s\"\n", argv[i]);
            exit(2);
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "naive_libnfs: %s needs a value\n", argv[i]);
            exit(2);
        }
        size_mib = parse_number("--size-mib", argv[i + 1], 1, 1u << 20);
    }
    uint64_t size = (uint64_t)size_mib << 20;

    nfs = nfs_init_context();
    if (!nfs) {
        fprintf(stderr, "naive_libnfs: cannot create an NFS context\n");
        return 1;
    }
    /* libnfs 4.0.0 has no nfs_set_nfsport(): the port only gets in through
     * a URL, which also sets the version on the context it is parsed for.
     * Brackets keep an IPv6 literal apart from the port. */
    char url_text[512];
    snprintf(url_text, sizeof(url_text),
             strchr(host, ':') ? "nfs://[%s]/?version=4&nfsport=%u"
                               : "nfs://%s/?version=4&nfsport=%u",
             host, port);
    struct nfs_url *url = nfs_parse_url_dir(nfs, url_text);
    if (!url)
        die("parsing the server URL");
    if (nfs_mount(nfs, url->server, url->path[0] ? url->path : "/") != 0) {
        fprintf(stderr, "naive_libnfs: cannot mount %s port %u over NFSv4: %s\n", host, port,
                nfs_get_error(nfs));
        return 1;
    }
    nfs_destroy_url(url);

    unsigned char *pattern = malloc(READ_CHUNK + PATTERN_PERIOD);
    unsigned char *readbuf = malloc(READ_CHUNK);
    if (!pattern || !readbuf) {
        fprintf(stderr, "naive_libnfs: out of memory\n");
        return 1;
    }
    for (unsigned i = 0; i < READ_CHUNK + PATTERN_PERIOD; i++)
        pattern[i] = (unsigned char)(i % PATTERN_PERIOD);

    char path[64];
    snprintf(path, sizeof(path), "/naive_libnfs.%d", (int)getpid());
    struct nfsfh *fh;
    /* Not nfs_creat(): it opens for reading only and later WRITEs fail
     * with NFS4ERR_OPENMODE. */
    if (nfs_create(nfs, path, O_RDWR | O_CREAT, 0644, &fh) != 0)
        die("create");

    double t0 = now_s();
    for (uint64_t off = 0; off < size;) {
        uint64_t n = size - off < WRITE_CHUNK ? size - off : WRITE_CHUNK;
        int rc = nfs_pwrite(nfs, fh, off, n, pattern + off % PATTERN_PERIOD);
        if (rc <= 0)
            die("write");
        off += (uint64_t)rc;
    }
    if (nfs_fsync(nfs, fh) != 0)
        die("fsync");
    double write_s = now_s() - t0;
    if (nfs_close(nfs, fh) != 0)
        die("close");

    /* A fresh open, as a reader would do. */
    if (nfs_open(nfs, path, O_RDONLY, &fh) != 0)
        die("open for reading");
    t0 = now_s();
    for (uint64_t off = 0; off < size;) {
        uint64_t n = size - off < READ_CHUNK ? size - off : READ_CHUNK;
        int rc = nfs_pread(nfs, fh, off, n, readbuf);
        if (rc < 0)
            die("read");
        if (rc == 0) {
            fprintf(stderr, "naive_libnfs: read: file ends at %llu, expected %llu bytes\n",
                    (unsigned long long)off, (unsigned long long)size);
            return 1;
        }
        off += (uint64_t)rc;
    }
    double read_s = now_s() - t0;

    /* Checked outside the timing: the first and the last chunk, which catch
     * a lost, short or misplaced write. */
    uint64_t last = size > READ_CHUNK ? size - READ_CHUNK : 0;
    uint64_t offsets[2] = {0, last};
    for (int k = 0; k < 2; k++) {
        uint64_t n = size - offsets[k] < READ_CHUNK ? size - offsets[k] : READ_CHUNK;
        int rc = nfs_pread(nfs, fh, offsets[k], n, readbuf);
        if (rc < 0)
            die("read");
        if ((uint64_t)rc != n || memcmp(readbuf, pattern + offsets[k] % PATTERN_PERIOD, n) != 0) {
            fprintf(stderr,
                    "naive_libnfs: data read back at offset %llu differs from what was "
                    "written\n",
                    (unsigned long long)offsets[k]);
            return 1;
        }
    }
    nfs_close(nfs, fh);
    if (nfs_unlink(nfs, path) != 0)
        die("unlink");
    nfs_destroy_context(nfs);
    free(pattern);
    free(readbuf);

    printf("{\"size_mib\": %lu, \"write_chunk\": %u, \"read_chunk\": %u, "
           "\"naive_write_mibps\": %.1f, \"naive_read_mibps\": %.1f}\n",
           size_mib, WRITE_CHUNK, READ_CHUNK, size_mib / write_s, size_mib / read_s);
    return 0;
}
