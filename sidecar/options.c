/*
 * Options: the command line, the EFSFUSE_* environment (how a Kubernetes
 * sidecar is configured) and the -o lists that mount(8), mount.fuse3 and
 * fstab hand over, turned into one struct options.
 *
 * fuse_opt splits the command line (-o groups, "\," escapes, "--"), but
 * every -o item is then looked up here by name rather than through fuse_opt
 * templates, because fuse_opt's own messages ("fuse: invalid parameter in
 * option") say neither what was wrong nor what is allowed.
 *
 * Each -o item is one of:
 *   - ours (the table below): validated and stored;
 *   - one that libfuse 3.14's fuse_session_new() knows (lib/mount.c
 *     fuse_mount_opts, lib/fuse_lowlevel.c fuse_ll_opts): passed on in
 *     fuse_args, untouched;
 *   - one only mount(8)/fstab cares about (_netdev, nofail, ...): dropped,
 *     because fuse_session_new() would refuse it;
 *   - anything else: "unknown option 'xyz'", a usage error. Catching it here
 *     and not at fuse_session_new() time means the user gets our one-line
 *     message, before we have connected to the server.
 */
#define FUSE_USE_VERSION 314

#include "sidecar/sidecar.h"

#include <ctype.h>
#include <errno.h>
#include <fuse_lowlevel.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define USAGE_LINE "efsfuse SOURCE MOUNTPOINT [-o opt[,opt...]] [-f] [-d] [-h] [-V]"
#define ENV_PREFIX "EFSFUSE_"

enum key {
    K_PORT,
    K_ATTR_TIMEOUT,
    K_ENTRY_TIMEOUT,
    K_NEGATIVE_TIMEOUT,
    K_MAX_READ,
    K_MAX_WRITE,
    K_MAX_INFLIGHT,
    K_MAX_UNCOMMITTED_MB,
    K_READAHEAD_KB,
    K_UID,
    K_GID,
    K_TIMEO,
    K_CONNECT_TIMEOUT,
    K_LOG_LEVEL,
    K_LOG_FORMAT,
    K_CLIENT_NAME,
    K_DEBUG,
    K_RO,
    K_RW,
    K_SOFT,
    K_HARD,
    K_RETRANS,
    K_DIRCACHE,
};

enum kind {
    KIND_FLAG,    /* no value; from the environment a boolean */
    KIND_INT,     /* decimal integer in [min, max], a multiple of .multiple */
    KIND_SECONDS, /* decimal fraction in [dmin, dmax] */
    KIND_WORD,    /* one of a fixed set, checked when stored */
    KIND_STRING,
};

struct optdef {
    const char *name;
    enum key key;
    enum kind kind;
    bool env;         /* mirrored by EFSFUSE_<NAME> */
    const char *arg;  /* --help: what the value is */
    const char *dflt; /* applied before anything else, and shown by --help */
    long long min, max;
    unsigned multiple;
    double dmin, dmax;
    const char *help;
};

/* The defaults are strings run through the same parser as user values, so
 * --help, the man page and the program cannot disagree. */
static const struct optdef optdefs[] = {
    {.name = "port",
     .key = K_PORT,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .min = 1,
     .max = 65535,
     .help = "NFS server port (default: SOURCE's, else 2049)"},
    {.name = "attr_timeout",
     .key = K_ATTR_TIMEOUT,
     .kind = KIND_SECONDS,
     .env = true,
     .arg = "S",
     .dflt = "1.0",
     .dmin = 0,
     .dmax = 86400,
     .help = "seconds the kernel may cache attributes"},
    {.name = "entry_timeout",
     .key = K_ENTRY_TIMEOUT,
     .kind = KIND_SECONDS,
     .env = true,
     .arg = "S",
     .dflt = "1.0",
     .dmin = 0,
     .dmax = 86400,
     .help = "seconds the kernel may cache a name lookup"},
    {.name = "negative_timeout",
     .key = K_NEGATIVE_TIMEOUT,
     .kind = KIND_SECONDS,
     .env = true,
     .arg = "S",
     .dflt = "1.0",
     .dmin = 0,
     .dmax = 86400,
     .help = "seconds the kernel may cache \"no such file\""},
    {.name = "max_read",
     .key = K_MAX_READ,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .dflt = "1048576",
     .min = 4096,
     .max = 1048576,
     .multiple = 4096,
     .help = "largest read, bytes (a multiple of 4096)"},
    {.name = "max_write",
     .key = K_MAX_WRITE,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .dflt = "1048576",
     .min = 4096,
     .max = 1048576,
     .multiple = 4096,
     .help = "largest write, bytes (a multiple of 4096)"},
    {.name = "max_inflight",
     .key = K_MAX_INFLIGHT,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .dflt = "64",
     .min = 1,
     .max = 1024,
     .help = "NFS requests in flight at most"},
    {.name = "max_uncommitted_mb",
     .key = K_MAX_UNCOMMITTED_MB,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .dflt = "32",
     .min = 1,
     .max = 65536,
     .help = "MiB of written data kept until committed"},
    {.name = "readahead_kb",
     .key = K_READAHEAD_KB,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .dflt = "8192",
     .min = 0,
     .max = 65536,
     .help = "kernel readahead, KiB (0: kernel default)"},
    {.name = "uid",
     .key = K_UID,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .dflt = "-1",
     .min = -1,
     .max = 4294967294LL,
     .help = "send requests as this uid (-1: caller's)"},
    {.name = "gid",
     .key = K_GID,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .dflt = "-1",
     .min = -1,
     .max = 4294967294LL,
     .help = "send requests as this gid (-1: caller's)"},
    {.name = "timeo",
     .key = K_TIMEO,
     .kind = KIND_SECONDS,
     .env = true,
     .arg = "S",
     .dflt = "10",
     .dmin = 0.1,
     .dmax = 3600,
     .help = "request timeout in seconds, not tenths"},
    {.name = "connect_timeout",
     .key = K_CONNECT_TIMEOUT,
     .kind = KIND_SECONDS,
     .env = true,
     .arg = "S",
     .dflt = "10",
     .dmin = 0.1,
     .dmax = 3600,
     .help = "seconds start-up may take to reach the server"},
    {.name = "log_level",
     .key = K_LOG_LEVEL,
     .kind = KIND_WORD,
     .env = true,
     .arg = "L",
     .dflt = "info",
     .help = "debug, info, warn or error"},
    {.name = "log_format",
     .key = K_LOG_FORMAT,
     .kind = KIND_WORD,
     .env = true,
     .arg = "F",
     .dflt = "text",
     .help = "text or json"},
    {.name = "client_name",
     .key = K_CLIENT_NAME,
     .kind = KIND_STRING,
     .env = true,
     .arg = "NAME",
     .help = "NFSv4 client identity (default: hostname + pid)"},
    {.name = "debug",
     .key = K_DEBUG,
     .kind = KIND_FLAG,
     .env = true,
     .help = "log_level=debug, libfuse's debug output, implies -f"},
    {.name = "soft",
     .key = K_SOFT,
     .kind = KIND_FLAG,
     .env = true,
     .help = "fail requests after timeo x retrans without an answer"},
    {.name = "hard",
     .key = K_HARD,
     .kind = KIND_FLAG,
     .help = "wait for the server as long as it takes (default)"},
    {.name = "retrans",
     .key = K_RETRANS,
     .kind = KIND_INT,
     .env = true,
     .arg = "N",
     .dflt = "3",
     .min = 1,
     .max = 1000,
     .help = "with soft: timeouts before a request fails"},
    {.name = "dircache",
     .key = K_DIRCACHE,
     .kind = KIND_FLAG,
     .env = true,
     .help = "no LOOKUP of absent names in dirs made here (README)"},
    {.name = "ro", .key = K_RO, .kind = KIND_FLAG, .env = true, .help = "mount read-only"},
    {.name = "rw", .key = K_RW, .kind = KIND_FLAG, .help = "mount read-write (default)"},
};

/*
 * What libfuse 3.14's fuse_session_new() accepts, minus what is ours (ro,
 * rw, debug, max_read) and what cannot work for a network filesystem
 * (blkdev, blksize=). A trailing '=' means the option needs a value.
 */
static const char *const fuse_passthrough[] = {
    "allow_other", "allow_root",  "auto_unmount", "default_permissions",
    "fsname=",     "subtype=",    "user=",        "context=",
    "fscontext=",  "defcontext=", "rootcontext=", "suid",
    "nosuid",      "dev",         "nodev",        "exec",
    "noexec",      "async",       "sync",         "dirsync",
    "atime",       "noatime",
};

/*
 * Accepted and dropped: fstab/mount(8)'s own options (helpers get them too),
 * VFS atime flags libfuse 3.14 cannot hand to the kernel (harmless to lose:
 * the NFS server keeps atime), and FUSE 2 options that FUSE 3 made the
 * behaviour (old fstab lines carry them).
 */
static const char *const ignored_opts[] = {
    "_netdev",     "nofail",        "noauto",   "auto",       "user",     "users",
    "nouser",      "owner",         "group",    "defaults",   "relatime", "norelatime",
    "strictatime", "nostrictatime", "diratime", "nodiratime", "lazytime", "nolazytime",
    "silent",      "loud",          "nonempty", "big_writes",
};
/* x-systemd.automount, x-gvfs-show, comment=...: notes for other programs. */
static const char *const ignored_prefixes[] = {"x-", "comment="};

/* Options of other NFS clients that users bring along, and what to use. */
static const struct {
    const char *name;
    const char *hint;
} unknown_hints[] = {
    {"rsize", "use max_read=N"},
    {"wsize", "use max_write=N"},
    {"vers", "efsfuse always speaks NFSv4.0"},
    {"nfsvers", "efsfuse always speaks NFSv4.0"},
    {"max_readahead", "use readahead_kb=N"},
};

/* Command-line flags. Everything else reaches opt_proc as FUSE_OPT_KEY_OPT
 * (an -o item or an unknown -x) or FUSE_OPT_KEY_NONOPT (SOURCE, MOUNTPOINT). */
enum { CL_FOREGROUND, CL_DEBUG, CL_HELP, CL_VERSION };
static const struct fuse_opt cmdline_spec[] = {
    FUSE_OPT_KEY("-f", CL_FOREGROUND),
    FUSE_OPT_KEY("-d", CL_DEBUG),
    FUSE_OPT_KEY("-h", CL_HELP),
    FUSE_OPT_KEY("--help", CL_HELP),
    FUSE_OPT_KEY("-V", CL_VERSION),
    FUSE_OPT_KEY("--version", CL_VERSION),
    FUSE_OPT_END,
};

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

struct strlist {
    char **v;
    size_t n;
};

struct parse_ctx {
    struct options *o;
    char *const *envp;
    const char *origin; /* NULL: command line; else the variable being read */
    const char *positional[2];
    int npositional;
    bool help, version;
    uint16_t port; /* port= option; 0 when not given */
    struct strlist pass;
    struct strlist ignored;
    int err; /* the first error (-errno), reported after the whole parse */
    char errbuf[512];
};

__attribute__((format(printf, 2, 3))) static void fail(struct parse_ctx *ctx, const char *fmt, ...)
{
    if (ctx->err)
        return;
    ctx->err = -EINVAL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errbuf, sizeof(ctx->errbuf), fmt, ap);
    va_end(ap);
}

static void fail_nomem(struct parse_ctx *ctx)
{
    if (ctx->err != -ENOMEM) {
        ctx->err = -ENOMEM;
        snprintf(ctx->errbuf, sizeof(ctx->errbuf), "out of memory");
    }
}

static void strlist_clear(struct strlist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* Length of the part of s that names the option ("fsname" of "fsname=x"). */
static size_t key_len(const char *s)
{
    return strcspn(s, "=");
}

/* Appends s; with unique_key, an earlier item with the same name is dropped
 * first, so the last one given wins and libfuse never sees two. */
static int strlist_put(struct strlist *l, const char *s, bool unique_key)
{
    size_t klen = key_len(s);
    for (size_t i = 0; i < l->n; i++) {
        bool same = unique_key ? (key_len(l->v[i]) == klen && strncmp(l->v[i], s, klen) == 0)
                               : strcmp(l->v[i], s) == 0;
        if (!same)
            continue;
        if (!unique_key)
            return 0;
        free(l->v[i]);
        memmove(&l->v[i], &l->v[i + 1], (l->n - i - 1) * sizeof(l->v[0]));
        l->n--;
        break;
    }
    char *copy = strdup(s);
    char **v = copy ? realloc(l->v, (l->n + 1) * sizeof(l->v[0])) : NULL;
    if (!v) {
        free(copy);
        return -ENOMEM;
    }
    l->v = v;
    l->v[l->n++] = copy;
    return 0;
}

static bool strlist_has_key(const struct strlist *l, const char *name)
{
    size_t klen = strlen(name);
    for (size_t i = 0; i < l->n; i++)
        if (key_len(l->v[i]) == klen && strncmp(l->v[i], name, klen) == 0)
            return true;
    return false;
}

static const char *env_get(char *const *envp, const char *name)
{
    size_t len = strlen(name);
    for (; envp && *envp; envp++)
        if (strncmp(*envp, name, len) == 0 && (*envp)[len] == '=')
            return *envp + len + 1;
    return NULL;
}

static void env_name(const char *option, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "%s", ENV_PREFIX);
    for (; *option && o + 1 < len; option++)
        buf[o++] = (char)toupper((unsigned char)*option);
    buf[o] = '\0';
}

/* "option 'x'", "option 'x' in EFSFUSE_OPTIONS": says where to look. */
static void option_label(const struct parse_ctx *ctx, const char *name, size_t namelen, char *buf,
                         size_t len)
{
    snprintf(buf, len, "option '%.*s'%s%s", (int)namelen, name, ctx->origin ? " in " : "",
             ctx->origin ? ctx->origin : "");
}

/* 0, -EINVAL (not a decimal integer) or -ERANGE. */
static int parse_integer(const char *s, long long *out)
{
    const char *digits = s[0] == '-' ? s + 1 : s;
    if (!isdigit((unsigned char)digits[0]))
        return -EINVAL;
    for (const char *p = digits; *p; p++)
        if (!isdigit((unsigned char)*p))
            return -EINVAL;
    errno = 0;
    long long v = strtoll(s, NULL, 10);
    if (errno == ERANGE)
        return -ERANGE;
    *out = v;
    return 0;
}

/* Plain decimal only: strtod would also take "nan", "inf" and hex. */
static int parse_decimal(const char *s, double *out)
{
    if (!*s || strspn(s, "0123456789.eE+-") != strlen(s) || !strpbrk(s, "0123456789"))
        return -EINVAL;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end || end == s)
        return -EINVAL;
    if (errno == ERANGE || !isfinite(v))
        return -ERANGE;
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < NELEM(yes); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* s is in range (at most an hour), so this cannot overflow; rounded by
 * hand because llround() would pull in libm for one call. */
static uint32_t seconds_to_ms(double s)
{
    return (uint32_t)(s * 1000.0 + 0.5);
}

static void set_flag(struct parse_ctx *ctx, enum key key, bool on)
{
    struct options *o = ctx->o;
    switch (key) {
    case K_DEBUG:
        o->debug = on;
        if (on) {
            o->log_level = ELOG_DEBUG;
            /* libfuse's convention: its debug output goes to stderr, which
             * daemonizing would send to /dev/null. */
            o->foreground = true;
        }
        break;
    case K_RO:
        o->fs.readonly = on;
        break;
    case K_RW:
        o->fs.readonly = !on;
        break;
    case K_SOFT:
        o->nc.soft = on;
        break;
    case K_HARD:
        o->nc.soft = !on;
        break;
    case K_DIRCACHE:
        o->fs.dircache = on;
        break;
    default:
        break;
    }
}

static void store_int(struct parse_ctx *ctx, enum key key, long long v)
{
    struct options *o = ctx->o;
    switch (key) {
    case K_PORT:
        ctx->port = (uint16_t)v;
        break;
    case K_MAX_READ:
        o->fs.max_read = (uint32_t)v;
        break;
    case K_MAX_WRITE:
        o->fs.max_write = (uint32_t)v;
        break;
    case K_RETRANS:
        o->nc.retrans = (uint32_t)v;
        break;
    case K_MAX_INFLIGHT:
        o->fs.max_inflight = (uint32_t)v;
        o->nc.max_inflight = (uint32_t)v;
        break;
    case K_MAX_UNCOMMITTED_MB:
        o->fs.max_uncommitted = (uint64_t)v << 20;
        break;
    case K_READAHEAD_KB:
        o->fs.readahead_kb = (uint32_t)v;
        break;
    case K_UID:
        o->fs.uid_override = v;
        break;
    case K_GID:
        o->fs.gid_override = v;
        break;
    default:
        break;
    }
}

static void store_seconds(struct parse_ctx *ctx, enum key key, double v)
{
    struct options *o = ctx->o;
    switch (key) {
    case K_ATTR_TIMEOUT:
        o->fs.attr_timeout = v;
        break;
    case K_ENTRY_TIMEOUT:
        o->fs.entry_timeout = v;
        break;
    case K_NEGATIVE_TIMEOUT:
        o->fs.negative_timeout = v;
        break;
    case K_TIMEO:
        o->nc.request_timeout_ms = seconds_to_ms(v);
        break;
    case K_CONNECT_TIMEOUT:
        o->nc.connect_timeout_ms = seconds_to_ms(v);
        break;
    default:
        break;
    }
}

static void store_text(struct parse_ctx *ctx, const struct optdef *d, const char *value,
                       const char *label)
{
    struct options *o = ctx->o;
    switch (d->key) {
    case K_LOG_LEVEL: {
        int level = elog_level_parse(value);
        if (level < 0)
            fail(ctx, "%s: '%s' is not one of debug, info, warn, error", label, value);
        else
            o->log_level = (enum elog_level)level;
        break;
    }
    case K_LOG_FORMAT:
        if (strcmp(value, "text") == 0)
            o->log_format = ELOG_TEXT;
        else if (strcmp(value, "json") == 0)
            o->log_format = ELOG_JSON;
        else
            fail(ctx, "%s: '%s' is not one of text, json", label, value);
        break;
    case K_CLIENT_NAME: {
        size_t len = strlen(value);
        for (const char *p = value; *p; p++) {
            if (iscntrl((unsigned char)*p)) {
                fail(ctx, "%s: contains a control character", label);
                return;
            }
        }
        /* NFSv4's client id string is opaque<1024>; the rest is for the
         * server's owner string. */
        if (len == 0 || len > 255) {
            fail(ctx, "%s: must be 1 to 255 characters", label);
            return;
        }
        char *copy = strdup(value);
        if (!copy) {
            fail_nomem(ctx);
            return;
        }
        free(o->client_name);
        o->client_name = copy;
        break;
    }
    default:
        break;
    }
}

/* Validates value for d and stores it; label names the option in messages. */
static void apply(struct parse_ctx *ctx, const struct optdef *d, const char *value,
                  const char *label)
{
    switch (d->kind) {
    case KIND_INT: {
        long long v = 0;
        int rc = parse_integer(value, &v);
        if (rc == -EINVAL) {
            fail(ctx, "%s: '%s' is not a number", label, value);
        } else if (rc == -ERANGE || v < d->min || v > d->max) {
            fail(ctx, "%s: '%s' is out of range (%lld..%lld)", label, value, d->min, d->max);
        } else if (d->multiple && v % d->multiple != 0) {
            fail(ctx, "%s: '%s' is not a multiple of %u", label, value, d->multiple);
        } else {
            store_int(ctx, d->key, v);
        }
        break;
    }
    case KIND_SECONDS: {
        double v = 0;
        int rc = parse_decimal(value, &v);
        if (rc == -EINVAL)
            fail(ctx, "%s: '%s' is not a number", label, value);
        else if (rc == -ERANGE || v < d->dmin || v > d->dmax)
            fail(ctx, "%s: '%s' is out of range (%g..%g seconds)", label, value, d->dmin, d->dmax);
        else
            store_seconds(ctx, d->key, v);
        break;
    }
    case KIND_WORD:
    case KIND_STRING:
        store_text(ctx, d, value, label);
        break;
    case KIND_FLAG: {
        bool on = true;
        if (value && parse_bool(value, &on) < 0)
            fail(ctx, "%s: '%s' is not a boolean (use 1 or 0)", label, value);
        else
            set_flag(ctx, d->key, on);
        break;
    }
    }
}

static const struct optdef *find_optdef(const char *name, size_t len)
{
    for (size_t i = 0; i < NELEM(optdefs); i++)
        if (strlen(optdefs[i].name) == len && strncmp(optdefs[i].name, name, len) == 0)
            return &optdefs[i];
    return NULL;
}

/* Returns the table entry that arg is an instance of ("fsname=" for
 * "fsname=x"), or NULL. */
static const char *find_listed(const char *const *table, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (key_len(table[i]) == len && strncmp(table[i], name, len) == 0)
            return table[i];
    return NULL;
}

/* One item of an -o list (or of EFSFUSE_OPTIONS). */
static void mount_option(struct parse_ctx *ctx, const char *arg)
{
    char label[128];
    size_t nlen = key_len(arg);
    const char *value = arg[nlen] == '=' ? arg + nlen + 1 : NULL;

    /* "a,,b" and a trailing comma: mount.fuse3 skips these too. */
    if (!*arg)
        return;
    option_label(ctx, arg, nlen, label, sizeof(label));

    const struct optdef *d = find_optdef(arg, nlen);
    if (d) {
        if (d->kind == KIND_FLAG && value)
            fail(ctx, "%s takes no value", label);
        else if (d->kind != KIND_FLAG && !value)
            fail(ctx, "%s needs a value (%s=%s)", label, d->name, d->arg);
        else
            apply(ctx, d, value, label);
        return;
    }

    /* Matched by name and by whether a value is given, because "user" is
     * fstab's (ignored) and "user=NAME" is libfuse's. */
    const char *listed = find_listed(fuse_passthrough, NELEM(fuse_passthrough), arg, nlen);
    bool wants_value = listed && listed[strlen(listed) - 1] == '=';
    if (listed && wants_value == (value != NULL)) {
        if (strlist_put(&ctx->pass, arg, true) < 0)
            fail_nomem(ctx);
        return;
    }

    bool ignore = !value && find_listed(ignored_opts, NELEM(ignored_opts), arg, nlen) != NULL;
    for (size_t i = 0; i < NELEM(ignored_prefixes); i++)
        if (strncmp(arg, ignored_prefixes[i], strlen(ignored_prefixes[i])) == 0)
            ignore = true;
    if (ignore) {
        if (strlist_put(&ctx->ignored, arg, false) < 0)
            fail_nomem(ctx);
        return;
    }

    if (listed) {
        if (wants_value)
            fail(ctx, "%s needs a value (%sVALUE)", label, listed);
        else
            fail(ctx, "%s takes no value", label);
        return;
    }

    for (size_t i = 0; i < NELEM(unknown_hints); i++) {
        if (strlen(unknown_hints[i].name) == nlen &&
            strncmp(unknown_hints[i].name, arg, nlen) == 0) {
            fail(ctx, "unknown option '%s'%s%s (%s)", arg, ctx->origin ? " in " : "",
                 ctx->origin ? ctx->origin : "", unknown_hints[i].hint);
            return;
        }
    }
    fail(ctx, "unknown option '%s'%s%s", arg, ctx->origin ? " in " : "",
         ctx->origin ? ctx->origin : "");
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
    struct parse_ctx *ctx = data;

    switch (key) {
    case CL_FOREGROUND:
        ctx->o->foreground = true;
        break;
    case CL_DEBUG:
        set_flag(ctx, K_DEBUG, true);
        break;
    case CL_HELP:
        ctx->help = true;
        break;
    case CL_VERSION:
        ctx->version = true;
        break;
    case FUSE_OPT_KEY_NONOPT:
        if (ctx->npositional < 2)
            ctx->positional[ctx->npositional++] = arg;
        else
            fail(ctx, "unexpected argument '%s' (usage: %s)", arg, USAGE_LINE);
        break;
    case FUSE_OPT_KEY_OPT:
        if (arg[0] == '-')
            fail(ctx, "unknown option '%s'", arg);
        else
            mount_option(ctx, arg);
        break;
    default:
        break;
    }
    /* Errors are recorded, not returned, so that a --help later on the line
     * still wins; nothing is kept in fuse_opt's output. */
    return 0;
}

/* fuse_opt_parse only fails on allocation or a dangling "-o"; the latter is
 * checked first so that it gets our message rather than libfuse's. */
static void parse_args(struct parse_ctx *ctx, int argc, char *const argv[])
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            break;
        if (strcmp(argv[i], "-o") == 0 && i + 1 == argc) {
            fail(ctx, "option '-o' needs a list of options");
            return;
        }
    }
    struct fuse_args args = FUSE_ARGS_INIT(argc, (char **)argv);
    if (fuse_opt_parse(&args, ctx, cmdline_spec, opt_proc) < 0)
        fail_nomem(ctx);
    fuse_opt_free_args(&args);
}

static void parse_env(struct parse_ctx *ctx)
{
    const char *list = env_get(ctx->envp, ENV_PREFIX "OPTIONS");
    if (list && *list) {
        char *argv[] = {"efsfuse", "-o", (char *)list, NULL};
        ctx->origin = ENV_PREFIX "OPTIONS";
        parse_args(ctx, 3, argv);
    }

    for (size_t i = 0; i < NELEM(optdefs); i++) {
        const struct optdef *d = &optdefs[i];
        char name[64];
        if (!d->env)
            continue;
        env_name(d->name, name, sizeof(name));
        const char *value = env_get(ctx->envp, name);
        /* Empty counts as unset: templated manifests write value: "". */
        if (value && *value)
            apply(ctx, d, value, name);
    }

    const char *fg = env_get(ctx->envp, ENV_PREFIX "FOREGROUND");
    bool on;
    if (fg && *fg) {
        if (parse_bool(fg, &on) < 0)
            fail(ctx, ENV_PREFIX "FOREGROUND: '%s' is not a boolean (use 1 or 0)", fg);
        else
            ctx->o->foreground = on;
    }
    ctx->origin = NULL;
}

static void apply_defaults(struct parse_ctx *ctx)
{
    struct options *o = ctx->o;

    /* First fs's own defaults, so that fields added to fs_config later get
     * sane values; then ours, which are documented and win. */
    fs_config_defaults(&o->fs);
    o->fs.readonly = false;
    o->log_level = ELOG_INFO;
    o->log_format = ELOG_TEXT;
    for (size_t i = 0; i < NELEM(optdefs); i++)
        if (optdefs[i].dflt)
            apply(ctx, &optdefs[i], optdefs[i].dflt, optdefs[i].name);
}

/* /dev/fd/N is how mount.fuse3 -o drop_privileges hands over an
 * already-opened /dev/fuse; libfuse mounts nothing then. */
static bool is_fd_mountpoint(const char *path)
{
    return strncmp(path, "/dev/fd/", 8) == 0 && path[8] &&
           strspn(path + 8, "0123456789") == strlen(path + 8);
}

static void check_mountpoint(struct parse_ctx *ctx, const char *path)
{
    struct options *o = ctx->o;
    struct stat st;

    if (is_fd_mountpoint(path)) {
        o->mountpoint = strdup(path);
        if (!o->mountpoint)
            fail_nomem(ctx);
        return;
    }
    if (stat(path, &st) < 0) {
        if (errno == ENOTCONN)
            fail(ctx,
                 "mountpoint '%s': %s (a FUSE mount whose daemon died? unmount it with "
                 "'fusermount3 -u %s')",
                 path, strerror(errno), path);
        else
            fail(ctx, "mountpoint '%s': %s", path, strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        fail(ctx, "mountpoint '%s' is not a directory", path);
        return;
    }
    /* Absolute, because daemonizing changes to "/" and unmounting later
     * must still name the same directory. */
    o->mountpoint = realpath(path, NULL);
    if (!o->mountpoint)
        fail(ctx, "mountpoint '%s': %s", path, strerror(errno));
}

static void resolve_source(struct parse_ctx *ctx, const char *text, const char *label)
{
    struct options *o = ctx->o;
    char reason[256];

    o->source_text = strdup(text);
    if (!o->source_text) {
        fail_nomem(ctx);
        return;
    }
    if (source_parse(text, &o->source, reason, sizeof(reason)) < 0) {
        fail(ctx, "%s '%s': %s", label, text, reason);
        return;
    }
    if (ctx->port && o->source.port && ctx->port != o->source.port) {
        fail(ctx, "port %u in %s conflicts with option port=%u", (unsigned)o->source.port, label,
             (unsigned)ctx->port);
        return;
    }
    o->nc.host = o->source.host;
    o->nc.path = o->source.path;
    o->nc.port = ctx->port ? ctx->port : o->source.port;
}

/* argv[0], then one -o with everything libfuse is to see, then -d. */
static int build_fuse_args(struct parse_ctx *ctx, const char *argv0)
{
    struct options *o = ctx->o;
    char *list = NULL;
    int rc = -ENOMEM;

    /* fsname is what mount(8) and /proc/mounts show as the source, and what
     * "mount -a" compares with fstab's first field to skip mounted entries:
     * so it must be SOURCE as written. subtype makes the type fuse.efsfuse. */
    if (!strlist_has_key(&ctx->pass, "fsname")) {
        char *fsname = NULL;
        if (asprintf(&fsname, "fsname=%s", o->source_text) < 0)
            goto out;
        int added = fuse_opt_add_opt_escaped(&list, fsname);
        free(fsname);
        if (added < 0)
            goto out;
    }
    if (!strlist_has_key(&ctx->pass, "subtype") && fuse_opt_add_opt(&list, "subtype=efsfuse") < 0)
        goto out;
    /* Read-only in the kernel as well, so writes fail before reaching us
     * and mount(8) shows "ro". */
    if (o->fs.readonly && fuse_opt_add_opt(&list, "ro") < 0)
        goto out;
    for (size_t i = 0; i < ctx->pass.n; i++)
        if (fuse_opt_add_opt_escaped(&list, ctx->pass.v[i]) < 0)
            goto out;

    if (fuse_opt_add_arg(&o->fuse_args, argv0) < 0 || fuse_opt_add_arg(&o->fuse_args, "-o") < 0 ||
        fuse_opt_add_arg(&o->fuse_args, list) < 0)
        goto out;
    if (o->debug && fuse_opt_add_arg(&o->fuse_args, "-d") < 0)
        goto out;
    rc = 0;
out:
    free(list);
    return rc;
}

static int join_ignored(struct parse_ctx *ctx)
{
    char *joined = NULL;
    for (size_t i = 0; i < ctx->ignored.n; i++) {
        if (fuse_opt_add_opt(&joined, ctx->ignored.v[i]) < 0) {
            free(joined);
            return -ENOMEM;
        }
    }
    ctx->o->ignored = joined;
    return 0;
}

static void finish(struct parse_ctx *ctx, const char *argv0)
{
    struct options *o = ctx->o;

    const char *source = ctx->positional[0];
    const char *source_label = "SOURCE";
    if (!source) {
        source = env_get(ctx->envp, ENV_PREFIX "SOURCE");
        source_label = ENV_PREFIX "SOURCE";
    }
    const char *mountpoint = ctx->npositional > 1 ? ctx->positional[1] : NULL;
    if (!mountpoint)
        mountpoint = env_get(ctx->envp, ENV_PREFIX "MOUNTPOINT");
    if (!source || !*source) {
        fail(ctx, "missing SOURCE (usage: %s)", USAGE_LINE);
        return;
    }
    if (!mountpoint || !*mountpoint) {
        fail(ctx, "missing MOUNTPOINT (usage: %s)", USAGE_LINE);
        return;
    }

    resolve_source(ctx, source, source_label);
    if (ctx->err)
        return;
    check_mountpoint(ctx, mountpoint);
    if (ctx->err)
        return;

    o->nc.client_name = o->client_name;
    o->nc.max_io = o->fs.max_read > o->fs.max_write ? o->fs.max_read : o->fs.max_write;
    if (build_fuse_args(ctx, argv0) < 0 || join_ignored(ctx) < 0)
        fail_nomem(ctx);
}

int options_parse(struct options **out, int argc, char *const argv[], char *const envp[],
                  char *errbuf, size_t errlen)
{
    struct parse_ctx ctx = {.envp = envp};
    int rc;

    *out = NULL;
    if (errbuf && errlen)
        errbuf[0] = '\0';
    ctx.o = calloc(1, sizeof(*ctx.o));
    if (!ctx.o) {
        rc = -ENOMEM;
        snprintf(errbuf, errlen, "out of memory");
        goto out;
    }

    apply_defaults(&ctx);
    parse_env(&ctx);
    parse_args(&ctx, argc, argv);

    if (ctx.help || ctx.version) {
        ctx.o->action = ctx.help ? OPTIONS_HELP : OPTIONS_VERSION;
        rc = 0;
        goto out;
    }
    if (!ctx.err)
        finish(&ctx, argc > 0 ? argv[0] : "efsfuse");
    rc = ctx.err;
    if (rc < 0 && errbuf && errlen)
        snprintf(errbuf, errlen, "%s", ctx.errbuf);
out:
    strlist_clear(&ctx.pass);
    strlist_clear(&ctx.ignored);
    if (rc < 0) {
        options_free(ctx.o);
        ctx.o = NULL;
    }
    *out = ctx.o;
    return rc;
}

void options_free(struct options *opts)
{
    if (!opts)
        return;
    fuse_opt_free_args(&opts->fuse_args);
    free(opts->source_text);
    free(opts->mountpoint);
    free(opts->ignored);
    free(opts->client_name);
    free(opts);
}

static void print_list(FILE *out, const char *const *list, size_t n)
{
    size_t col = 4;
    fputs("    ", out);
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(list[i]);
        if (i > 0 && col + 1 + len > 78) {
            fputs("\n    ", out);
            col = 4;
        } else if (i > 0) {
            fputs(" ", out);
            col++;
        }
        fputs(list[i], out);
        col += len;
    }
    fputs("\n", out);
}

void options_print_help(FILE *out)
{
    fprintf(out, "usage: " USAGE_LINE "\n"
                 "\n"
                 "Mounts a directory of an NFSv4 server (such as AWS EFS) at MOUNTPOINT.\n"
                 "\n"
                 "SOURCE: host:/path, [ipv6]:/path, nfs://host[:port]/path or\n"
                 "        nfs://[ipv6][:port]/path (\"host:\" alone is the root).\n"
                 "\n"
                 "    -f                     stay in the foreground (" ENV_PREFIX "FOREGROUND=1)\n"
                 "    -d                     same as -o debug\n"
                 "    -h, --help             print this help and exit\n"
                 "    -V, --version          print versions and exit\n"
                 "\n"
                 "efsfuse options (-o NAME[=VALUE], or " ENV_PREFIX "NAME=VALUE in the "
                 "environment):\n");
    for (size_t i = 0; i < NELEM(optdefs); i++) {
        const struct optdef *d = &optdefs[i];
        char left[40];
        snprintf(left, sizeof(left), "%s%s%s", d->name, d->arg ? "=" : "", d->arg ? d->arg : "");
        fprintf(out, "    %-22s %s", left, d->help);
        if (d->dflt)
            fprintf(out, " [%s]", d->dflt);
        fputs("\n", out);
    }
    fprintf(out, "\nPassed on to libfuse and the kernel:\n");
    print_list(out, fuse_passthrough, NELEM(fuse_passthrough));
    fprintf(out, "\nAccepted and ignored (fstab and mount(8) options):\n");
    print_list(out, ignored_opts, NELEM(ignored_opts));
    fprintf(out, "    x-* comment=*\n"
                 "\n"
                 "Environment: " ENV_PREFIX "SOURCE and " ENV_PREFIX "MOUNTPOINT stand in for "
                 "missing\narguments; " ENV_PREFIX "OPTIONS is a list read like -o. The "
                 "command line wins over\nthe environment. Flags take 1 or 0 (" ENV_PREFIX
                 "RO=1). See efsfuse(1).\n");
}

void options_print_version(FILE *out)
{
    fprintf(out, "efsfuse %s\n", EFSFUSE_VERSION);
    fprintf(out, "libfuse %s (built with %d.%d)\n", fuse_pkgversion(), FUSE_MAJOR_VERSION,
            FUSE_MINOR_VERSION);
    fprintf(out, "libnfs %s\n", EFSFUSE_LIBNFS_VERSION);
}
