/* Option parsing: defaults, every option and its environment mirror,
 * precedence, what is passed to libfuse, and every usage error's message. */
#define FUSE_USE_VERSION 314

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <fuse_lowlevel.h>

#include "sidecar/sidecar.h"

#define MIB 1048576u

static char tmpdir[PATH_MAX];       /* the mountpoint the tests use */
static char tmpfile_[PATH_MAX + 8]; /* a regular file beside it */
static char *no_env[] = {NULL};

static int setup(void **state)
{
    char templ[] = "/tmp/efsfuse-test-options-XXXXXX";
    char *dir = mkdtemp(templ);
    if (!dir)
        return -1;
    /* realpath: /tmp may itself be a symlink; options report the resolved path. */
    if (!realpath(dir, tmpdir))
        return -1;
    snprintf(tmpfile_, sizeof(tmpfile_), "%s/file", tmpdir);
    FILE *f = fopen(tmpfile_, "w");
    if (!f)
        return -1;
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    unlink(tmpfile_);
    rmdir(tmpdir);
    return 0;
}

/* Parses efsfuse ARGS... (NULL-terminated) with env; "@" stands for the
 * test's mountpoint. */
static int parse_env(struct options **o, char *err, char **env, ...)
{
    char *argv[32] = {"efsfuse"};
    int argc = 1;
    va_list ap;
    va_start(ap, env);
    for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 31;)
        argv[argc++] = strcmp(a, "@") == 0 ? tmpdir : a;
    va_end(ap);
    argv[argc] = NULL;
    err[0] = '\0';
    return options_parse(o, argc, argv, env, err, 512);
}

#define parse(o, err, ...) parse_env(o, err, no_env, __VA_ARGS__, NULL)
#define parse_with_env(o, err, env, ...) parse_env(o, err, env, __VA_ARGS__, NULL)

/* Expects a usage error with exactly this message. */
#define expect_error(message, ...)                                                                 \
    do {                                                                                           \
        struct options *o_ = (struct options *)1;                                                  \
        char e_[512];                                                                              \
        int rc_ = parse(&o_, e_, __VA_ARGS__);                                                     \
        assert_int_equal(rc_, -EINVAL);                                                            \
        assert_null(o_);                                                                           \
        assert_string_equal(e_, message);                                                          \
    } while (0)

#define expect_env_error(message, env, ...)                                                        \
    do {                                                                                           \
        struct options *o_ = (struct options *)1;                                                  \
        char e_[512];                                                                              \
        int rc_ = parse_with_env(&o_, e_, env, __VA_ARGS__);                                       \
        assert_int_equal(rc_, -EINVAL);                                                            \
        assert_null(o_);                                                                           \
        assert_string_equal(e_, message);                                                          \
    } while (0)

static struct options *parse_ok_env(char **env, const char *source, const char *opts)
{
    struct options *o = NULL;
    char err[512];
    int rc = opts ? parse_with_env(&o, err, env, (char *)source, "@", "-o", (char *)opts)
                  : parse_with_env(&o, err, env, (char *)source, "@");
    if (rc != 0)
        fail_msg("'%s' -o '%s': rc %d, error '%s'", source, opts ? opts : "", rc, err);
    assert_non_null(o);
    assert_int_equal(o->action, OPTIONS_RUN);
    return o;
}

static struct options *parse_ok(const char *source, const char *opts)
{
    return parse_ok_env(no_env, source, opts);
}

/* The -o list handed to libfuse (fuse_args is always argv0 -o LIST [-d]). */
static const char *fuse_list(const struct options *o)
{
    assert_true(o->fuse_args.argc >= 3);
    assert_string_equal(o->fuse_args.argv[1], "-o");
    return o->fuse_args.argv[2];
}

static void test_defaults(void **state)
{
    struct options *o = parse_ok("fs-0123.efs.us-east-1.amazonaws.com:/", NULL);

    assert_string_equal(o->source_text, "fs-0123.efs.us-east-1.amazonaws.com:/");
    assert_string_equal(o->mountpoint, tmpdir);
    assert_false(o->foreground);
    assert_false(o->debug);
    assert_int_equal(o->log_level, ELOG_INFO);
    assert_int_equal(o->log_format, ELOG_TEXT);
    /* "New files by another client appear in ls within about a second." */
    assert_true(o->fs.attr_timeout == 1.0);
    assert_true(o->fs.entry_timeout == 1.0);
    assert_true(o->fs.negative_timeout == 1.0);
    assert_int_equal(o->fs.max_read, MIB);
    assert_int_equal(o->fs.max_write, MIB);
    assert_int_equal(o->fs.max_inflight, 64);
    assert_int_equal(o->fs.max_uncommitted, 32 * MIB);
    assert_int_equal(o->fs.readahead_kb, 8192);
    assert_false(o->fs.readonly);
    assert_false(o->fs.dircache); /* it gives up close-to-open for others' names */
    assert_int_equal(o->fs.uid_override, -1);
    assert_int_equal(o->fs.gid_override, -1);

    assert_string_equal(o->nc.host, "fs-0123.efs.us-east-1.amazonaws.com");
    assert_string_equal(o->nc.path, "/");
    assert_int_equal(o->nc.port, 0);
    assert_int_equal(o->nc.max_io, MIB);
    assert_int_equal(o->nc.connect_timeout_ms, 10000);
    assert_int_equal(o->nc.request_timeout_ms, 10000);
    assert_null(o->nc.client_name);

    assert_int_equal(o->fuse_args.argc, 3);
    assert_string_equal(o->fuse_args.argv[0], "efsfuse");
    assert_string_equal(fuse_list(o),
                        "fsname=fs-0123.efs.us-east-1.amazonaws.com:/,subtype=efsfuse");
    assert_null(o->fuse_args.argv[3]);
    assert_null(o->ignored);
    options_free(o);
}

static void test_every_option(void **state)
{
    struct options *o = parse_ok(
        "server:/a/b", "port=2050,attr_timeout=0.5,entry_timeout=2,negative_timeout=0,"
                       "max_read=65536,max_write=131072,max_inflight=8,readahead_kb=0,uid=1000,"
                       "max_uncommitted_mb=8,gid=100,timeo=30,connect_timeout=2.5,log_level=warn,log_format=json,"
                       "client_name=pod-a,ro,dircache");

    assert_int_equal(o->nc.port, 2050);
    assert_true(o->fs.attr_timeout == 0.5);
    assert_true(o->fs.entry_timeout == 2.0);
    assert_true(o->fs.negative_timeout == 0.0);
    assert_int_equal(o->fs.max_read, 65536);
    assert_int_equal(o->fs.max_write, 131072);
    assert_int_equal(o->nc.max_io, 131072);
    assert_int_equal(o->fs.max_inflight, 8);
    assert_int_equal(o->fs.max_uncommitted, 8 * MIB);
    assert_int_equal(o->fs.readahead_kb, 0);
    assert_int_equal(o->fs.uid_override, 1000);
    assert_int_equal(o->fs.gid_override, 100);
    assert_int_equal(o->nc.request_timeout_ms, 30000);
    assert_int_equal(o->nc.connect_timeout_ms, 2500);
    assert_int_equal(o->log_level, ELOG_WARN);
    assert_int_equal(o->log_format, ELOG_JSON);
    assert_string_equal(o->nc.client_name, "pod-a");
    assert_true(o->fs.readonly);
    assert_true(o->fs.dircache);
    assert_string_equal(o->nc.path, "/a/b");
    /* Read-only in the kernel too. */
    assert_string_equal(fuse_list(o), "fsname=server:/a/b,subtype=efsfuse,ro");
    options_free(o);
}

static void test_limits_accepted(void **state)
{
    struct options *o = parse_ok("h:/", "max_read=4096,max_write=1048576,max_inflight=1,"
                                        "readahead_kb=65536,uid=0,gid=4294967294,timeo=0.1,"
                                        "connect_timeout=3600,attr_timeout=86400,port=1");
    assert_int_equal(o->fs.max_read, 4096);
    assert_int_equal(o->fs.max_write, MIB);
    assert_int_equal(o->nc.max_io, MIB);
    assert_int_equal(o->fs.max_inflight, 1);
    assert_int_equal(o->fs.readahead_kb, 65536);
    assert_int_equal(o->fs.uid_override, 0);
    assert_int_equal(o->fs.gid_override, 4294967294LL);
    assert_int_equal(o->nc.request_timeout_ms, 100);
    assert_int_equal(o->nc.connect_timeout_ms, 3600000);
    assert_true(o->fs.attr_timeout == 86400.0);
    assert_int_equal(o->nc.port, 1);
    options_free(o);

    o = parse_ok("h:/", "uid=1000,uid=-1,log_level=warning,attr_timeout=1e1,entry_timeout=.25");
    assert_int_equal(o->fs.uid_override, -1);
    assert_int_equal(o->log_level, ELOG_WARN);
    assert_true(o->fs.attr_timeout == 10.0);
    assert_true(o->fs.entry_timeout == 0.25);
    options_free(o);
}

static void test_command_line_forms(void **state)
{
    struct options *o;
    char err[512];

    /* Several -o, the attached -oLIST form, options before the arguments,
     * the last value winning. */
    assert_int_equal(parse(&o, err, "-omax_write=8192", "h:/x", "-o", "max_write=16384,ro", "@",
                           "-o", "rw", "-f"),
                     0);
    assert_int_equal(o->fs.max_write, 16384);
    assert_false(o->fs.readonly);
    assert_true(o->foreground);
    assert_false(o->debug);
    assert_string_equal(o->source_text, "h:/x");
    assert_string_equal(fuse_list(o), "fsname=h:/x,subtype=efsfuse");
    options_free(o);

    /* "--" ends the options: a mountpoint may then start with '-'. */
    assert_int_equal(parse(&o, err, "-f", "--", "h:/", "@"), 0);
    assert_string_equal(o->mountpoint, tmpdir);
    options_free(o);

    /* Empty items (",,", a trailing comma) are skipped, as mount.fuse3 does. */
    o = parse_ok("h:/", ",allow_other,,");
    assert_string_equal(fuse_list(o), "fsname=h:/,subtype=efsfuse,allow_other");
    options_free(o);
}

static void test_debug(void **state)
{
    struct options *o;
    char err[512];

    assert_int_equal(parse(&o, err, "h:/", "@", "-d"), 0);
    assert_true(o->debug);
    assert_true(o->foreground);
    assert_int_equal(o->log_level, ELOG_DEBUG);
    assert_int_equal(o->fuse_args.argc, 4);
    assert_string_equal(o->fuse_args.argv[3], "-d");
    options_free(o);

    o = parse_ok("h:/", "debug");
    assert_true(o->debug);
    assert_true(o->foreground);
    assert_int_equal(o->log_level, ELOG_DEBUG);
    assert_string_equal(o->fuse_args.argv[3], "-d");
    options_free(o);

    /* log_level=debug alone is only our logging. */
    o = parse_ok("h:/", "log_level=debug");
    assert_false(o->debug);
    assert_false(o->foreground);
    assert_int_equal(o->log_level, ELOG_DEBUG);
    assert_int_equal(o->fuse_args.argc, 3);
    options_free(o);
}

static void test_passthrough_and_ignored(void **state)
{
    struct options *o = parse_ok(
        "h:/", "allow_other,default_permissions,fsname=myfs,subtype=x,nosuid,_netdev,nofail,"
               "x-systemd.automount,noatime,auto_unmount,allow_root,user=bob,context=ctx,"
               "fscontext=a,defcontext=b,rootcontext=c,noexec,nodev,sync,dirsync,comment=hi");
    assert_string_equal(fuse_list(o),
                        "allow_other,default_permissions,fsname=myfs,subtype=x,nosuid,noatime,"
                        "auto_unmount,allow_root,user=bob,context=ctx,fscontext=a,defcontext=b,"
                        "rootcontext=c,noexec,nodev,sync,dirsync");
    assert_string_equal(o->ignored, "_netdev,nofail,x-systemd.automount,comment=hi");
    options_free(o);

    /* fstab's and mount(8)'s generic options; atime variants libfuse 3.14
     * cannot pass; FUSE 2 leftovers. */
    o = parse_ok("h:/", "defaults,auto,noauto,user,users,nouser,owner,group,relatime,"
                        "norelatime,strictatime,nostrictatime,diratime,nodiratime,lazytime,"
                        "nolazytime,silent,loud,nonempty,big_writes,_netdev,_netdev");
    assert_string_equal(fuse_list(o), "fsname=h:/,subtype=efsfuse");
    assert_string_equal(o->ignored, "defaults,auto,noauto,user,users,nouser,owner,group,"
                                    "relatime,norelatime,strictatime,nostrictatime,diratime,"
                                    "nodiratime,lazytime,nolazytime,silent,loud,nonempty,"
                                    "big_writes,_netdev");
    options_free(o);
}

/* What mount.fuse3 runs: "efsfuse SOURCE MOUNTPOINT -o rw,...,dev,suid". */
static void test_mount_helper_options(void **state)
{
    struct options *o =
        parse_ok("fs-1.efs.eu-west-1.amazonaws.com:/", "rw,exec,atime,async,dev,suid");
    assert_false(o->fs.readonly);
    assert_string_equal(fuse_list(o), "fsname=fs-1.efs.eu-west-1.amazonaws.com:/,subtype=efsfuse,"
                                      "exec,atime,async,dev,suid");
    options_free(o);

    o = parse_ok("h:/", "ro,nosuid,nodev,noexec,relatime,_netdev,allow_other");
    assert_true(o->fs.readonly);
    assert_string_equal(fuse_list(o),
                        "fsname=h:/,subtype=efsfuse,ro,nosuid,nodev,noexec,allow_other");
    assert_string_equal(o->ignored, "relatime,_netdev");
    options_free(o);
}

static void test_fuse_args_dedup_and_escaping(void **state)
{
    struct options *o;
    char err[512];

    /* The last value of an option wins and libfuse sees it once. */
    assert_int_equal(parse(&o, err, "h:/", "@", "-o", "allow_other,fsname=a", "-o",
                           "allow_other,fsname=b,nosuid,suid"),
                     0);
    assert_string_equal(fuse_list(o), "subtype=efsfuse,allow_other,fsname=b,nosuid,suid");
    options_free(o);

    /* Commas inside values stay escaped for libfuse's own parse. */
    assert_int_equal(parse(&o, err, "h:/a,b", "@", "-o", "subtype=my\\,type"), 0);
    assert_string_equal(fuse_list(o), "fsname=h:/a\\,b,subtype=my\\,type");
    options_free(o);
}

static void test_unknown_options(void **state)
{
    expect_error("unknown option 'xyz'", "h:/", "@", "-o", "xyz");
    expect_error("unknown option 'xyz=1'", "h:/", "@", "-o", "allow_other,xyz=1");
    expect_error("unknown option '-x'", "h:/", "@", "-x");
    expect_error("unknown option '--verbose'", "h:/", "@", "--verbose");
    expect_error("unknown option '-fd'", "h:/", "@", "-fd");
    expect_error("unknown option 'rsize=1048576' (use max_read=N)", "h:/", "@", "-o",
                 "rsize=1048576");
    expect_error("unknown option 'wsize=1048576' (use max_write=N)", "h:/", "@", "-o",
                 "wsize=1048576");
    expect_error("unknown option 'vers=4.1' (efsfuse always speaks NFSv4.0)", "h:/", "@", "-o",
                 "vers=4.1");
    expect_error("unknown option 'max_readahead=1' (use readahead_kb=N)", "h:/", "@", "-o",
                 "max_readahead=1");
    /* libfuse knows these, but fuse_session_new() does not, or they cannot
     * work for a network filesystem. */
    expect_error("unknown option 'blkdev'", "h:/", "@", "-o", "blkdev");
    expect_error("unknown option 'max_background=10'", "h:/", "@", "-o", "max_background=10");
    expect_error("unknown option 'clone_fd'", "h:/", "@", "-o", "clone_fd");
    expect_error("unknown option 'writeback_cache'", "h:/", "@", "-o", "writeback_cache");
    /* Our names are exact. */
    expect_error("unknown option 'Port=1'", "h:/", "@", "-o", "Port=1");
    expect_error("unknown option 'max_writes=4096'", "h:/", "@", "-o", "max_writes=4096");
    /* The first problem is the one reported. */
    expect_error("unknown option 'one'", "h:/", "@", "-o", "one,two");
}

static void test_bad_values(void **state)
{
    expect_error("option 'max_write': '12x' is not a number", "h:/", "@", "-o", "max_write=12x");
    expect_error("option 'max_write': '' is not a number", "h:/", "@", "-o", "max_write=");
    expect_error("option 'max_write': ' 4096' is not a number", "h:/", "@", "-o",
                 "max_write= 4096");
    expect_error("option 'max_write': '+4096' is not a number", "h:/", "@", "-o",
                 "max_write=+4096");
    expect_error("option 'max_write': '0x1000' is not a number", "h:/", "@", "-o",
                 "max_write=0x1000");
    expect_error("option 'max_write': '2048' is out of range (4096..1048576)", "h:/", "@", "-o",
                 "max_write=2048");
    expect_error("option 'max_write': '2097152' is out of range (4096..1048576)", "h:/", "@", "-o",
                 "max_write=2097152");
    expect_error("option 'max_read': '5000' is not a multiple of 4096", "h:/", "@", "-o",
                 "max_read=5000");
    expect_error("option 'max_read': '99999999999999999999999' is out of range (4096..1048576)",
                 "h:/", "@", "-o", "max_read=99999999999999999999999");
    expect_error("option 'port': '0' is out of range (1..65535)", "h:/", "@", "-o", "port=0");
    expect_error("option 'port': '65536' is out of range (1..65535)", "h:/", "@", "-o",
                 "port=65536");
    expect_error("option 'port': '-5' is out of range (1..65535)", "h:/", "@", "-o", "port=-5");
    expect_error("option 'max_inflight': '0' is out of range (1..1024)", "h:/", "@", "-o",
                 "max_inflight=0");
    expect_error("option 'readahead_kb': '65537' is out of range (0..65536)", "h:/", "@", "-o",
                 "readahead_kb=65537");
    expect_error("option 'uid': '-2' is out of range (-1..4294967294)", "h:/", "@", "-o", "uid=-2");
    expect_error("option 'gid': '4294967295' is out of range (-1..4294967294)", "h:/", "@", "-o",
                 "gid=4294967295");
    expect_error("option 'uid': 'root' is not a number", "h:/", "@", "-o", "uid=root");
    expect_error("option 'attr_timeout': 'abc' is not a number", "h:/", "@", "-o",
                 "attr_timeout=abc");
    expect_error("option 'attr_timeout': 'nan' is not a number", "h:/", "@", "-o",
                 "attr_timeout=nan");
    expect_error("option 'attr_timeout': 'inf' is not a number", "h:/", "@", "-o",
                 "attr_timeout=inf");
    expect_error("option 'attr_timeout': '0x10' is not a number", "h:/", "@", "-o",
                 "attr_timeout=0x10");
    expect_error("option 'attr_timeout': '1.5s' is not a number", "h:/", "@", "-o",
                 "attr_timeout=1.5s");
    expect_error("option 'attr_timeout': '.' is not a number", "h:/", "@", "-o", "attr_timeout=.");
    expect_error("option 'attr_timeout': '-1' is out of range (0..86400 seconds)", "h:/", "@", "-o",
                 "attr_timeout=-1");
    expect_error("option 'negative_timeout': '1e999' is out of range (0..86400 seconds)", "h:/",
                 "@", "-o", "negative_timeout=1e999");
    expect_error("option 'timeo': '0' is out of range (0.1..3600 seconds)", "h:/", "@", "-o",
                 "timeo=0");
    expect_error("option 'connect_timeout': '3601' is out of range (0.1..3600 seconds)", "h:/", "@",
                 "-o", "connect_timeout=3601");
    expect_error("option 'log_level': 'verbose' is not one of debug, info, warn, error", "h:/", "@",
                 "-o", "log_level=verbose");
    expect_error("option 'log_format': 'xml' is not one of text, json", "h:/", "@", "-o",
                 "log_format=xml");
    expect_error("option 'client_name': must be 1 to 255 characters", "h:/", "@", "-o",
                 "client_name=");
    expect_error("option 'port' needs a value (port=N)", "h:/", "@", "-o", "port");
    expect_error("option 'log_level' needs a value (log_level=L)", "h:/", "@", "-o", "log_level");
    expect_error("option 'ro' takes no value", "h:/", "@", "-o", "ro=1");
    expect_error("option 'allow_other' takes no value", "h:/", "@", "-o", "allow_other=yes");
    expect_error("option 'fsname' needs a value (fsname=VALUE)", "h:/", "@", "-o", "fsname");
    expect_error("option '-o' needs a list of options", "h:/", "@", "-o");
}

static void test_client_name_limits(void **state)
{
    char opt[300];
    snprintf(opt, sizeof(opt), "client_name=%0255d", 0);
    struct options *o = parse_ok("h:/", opt);
    assert_int_equal(strlen(o->nc.client_name), 255);
    options_free(o);
    snprintf(opt, sizeof(opt), "client_name=%0256d", 0);
    expect_error("option 'client_name': must be 1 to 255 characters", "h:/", "@", "-o", opt);
}

static void test_arguments(void **state)
{
    expect_error("missing SOURCE (usage: efsfuse SOURCE MOUNTPOINT [-o opt[,opt...]] [-f] [-d] "
                 "[-h] [-V])",
                 "-f");
    expect_error("missing MOUNTPOINT (usage: efsfuse SOURCE MOUNTPOINT [-o opt[,opt...]] [-f] "
                 "[-d] [-h] [-V])",
                 "h:/");
    expect_error("unexpected argument 'extra' (usage: efsfuse SOURCE MOUNTPOINT [-o "
                 "opt[,opt...]] [-f] [-d] [-h] [-V])",
                 "h:/", "@", "extra");
    expect_error("SOURCE 'server': missing ':' (expected host:/path or nfs://host/path)", "server",
                 "@");
    expect_error("SOURCE 'h:/a/../b': '..' is not allowed in path '/a/../b'", "h:/a/../b", "@");
    expect_error("mountpoint '/nonexistent-efsfuse/x': No such file or directory", "h:/",
                 "/nonexistent-efsfuse/x");

    char want[PATH_MAX + 64];
    snprintf(want, sizeof(want), "mountpoint '%s' is not a directory", tmpfile_);
    expect_error(want, "h:/", tmpfile_);

    /* With no positional arguments at all, argc 0 too, nothing crashes. */
    struct options *o = (struct options *)1;
    char err[512];
    assert_int_equal(options_parse(&o, 0, (char *[]){NULL}, NULL, err, sizeof(err)), -EINVAL);
    assert_null(o);
}

static void test_mountpoint_forms(void **state)
{
    struct options *o;
    char err[512];
    char cwd[PATH_MAX];

    /* Relative: resolved, since daemonizing moves to "/". */
    assert_non_null(getcwd(cwd, sizeof(cwd)));
    assert_int_equal(chdir(tmpdir), 0);
    int rc = parse(&o, err, "h:/", ".");
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(rc, 0);
    assert_string_equal(o->mountpoint, tmpdir);
    options_free(o);

    /* mount.fuse3 -o drop_privileges passes an open /dev/fuse this way. */
    assert_int_equal(parse(&o, err, "h:/", "/dev/fd/5"), 0);
    assert_string_equal(o->mountpoint, "/dev/fd/5");
    options_free(o);
}

static void test_ports(void **state)
{
    struct options *o = parse_ok("h:/", "port=2050");
    assert_int_equal(o->nc.port, 2050);
    options_free(o);

    o = parse_ok("nfs://h:2050/", NULL);
    assert_int_equal(o->nc.port, 2050);
    options_free(o);

    o = parse_ok("nfs://h:2050/", "port=2050");
    assert_int_equal(o->nc.port, 2050);
    options_free(o);

    expect_error("port 2050 in SOURCE conflicts with option port=2049", "nfs://h:2050/", "@", "-o",
                 "port=2049");
}

static void test_help_and_version(void **state)
{
    struct options *o;
    char err[512];

    assert_int_equal(parse(&o, err, "--help"), 0);
    assert_int_equal(o->action, OPTIONS_HELP);
    options_free(o);
    assert_int_equal(parse(&o, err, "-h"), 0);
    assert_int_equal(o->action, OPTIONS_HELP);
    options_free(o);
    assert_int_equal(parse(&o, err, "-V"), 0);
    assert_int_equal(o->action, OPTIONS_VERSION);
    options_free(o);
    assert_int_equal(parse(&o, err, "--version"), 0);
    assert_int_equal(o->action, OPTIONS_VERSION);
    options_free(o);

    /* Asking for help is never an error, whatever else is on the line. */
    assert_int_equal(parse(&o, err, "-o", "bogus,max_write=1", "a", "b", "c", "--help"), 0);
    assert_int_equal(o->action, OPTIONS_HELP);
    options_free(o);
    char *bad_env[] = {"EFSFUSE_PORT=abc", NULL};
    assert_int_equal(parse_with_env(&o, err, bad_env, "-V"), 0);
    assert_int_equal(o->action, OPTIONS_VERSION);
    options_free(o);
    assert_int_equal(parse(&o, err, "-V", "-h"), 0);
    assert_int_equal(o->action, OPTIONS_HELP);
    options_free(o);
}

static void test_help_text(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    options_print_help(f);
    fclose(f);

    static const char *const expected[] = {
        "usage: efsfuse SOURCE MOUNTPOINT",
        "port=N",
        "attr_timeout=S ",
        "[1.0]",
        "entry_timeout=S",
        "negative_timeout=S",
        "max_read=N",
        "max_write=N",
        "[1048576]",
        "max_inflight=N",
        "[64]",
        "max_uncommitted_mb=N",
        "[32]",
        "readahead_kb=N",
        "[8192]",
        "uid=N",
        "gid=N",
        "timeo=S",
        "connect_timeout=S",
        "[10]",
        "log_level=L",
        "log_format=F",
        "client_name=NAME",
        "debug ",
        "ro ",
        "rw ",
        "dircache ",
        "allow_other",
        "_netdev",
        "EFSFUSE_OPTIONS",
        "EFSFUSE_SOURCE",
        "EFSFUSE_MOUNTPOINT",
        "EFSFUSE_FOREGROUND",
    };
    for (size_t i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
        if (!strstr(text, expected[i]))
            fail_msg("help lacks '%s':\n%s", expected[i], text);
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        assert_non_null(nl);
        if (nl - line > 80)
            fail_msg("help line longer than 80 columns: %.*s", (int)(nl - line), line);
        line = nl + 1;
    }
    free(text);
}

static void test_version_text(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    options_print_version(f);
    fclose(f);
    assert_true(strncmp(text, "efsfuse 0.1.0\nlibfuse 3.", 24) == 0);
    assert_non_null(strstr(text, "\nlibnfs "));
    free(text);
}

static void test_environment(void **state)
{
    char mp[PATH_MAX + 32];
    snprintf(mp, sizeof(mp), "EFSFUSE_MOUNTPOINT=%s", tmpdir);
    char *env[] = {
        "EFSFUSE_SOURCE=nfs://srv:2051/data",
        mp,
        "EFSFUSE_ATTR_TIMEOUT=3",
        "EFSFUSE_ENTRY_TIMEOUT=4",
        "EFSFUSE_NEGATIVE_TIMEOUT=5",
        "EFSFUSE_MAX_READ=8192",
        "EFSFUSE_MAX_WRITE=16384",
        "EFSFUSE_MAX_INFLIGHT=7",
        "EFSFUSE_READAHEAD_KB=128",
        "EFSFUSE_UID=10",
        "EFSFUSE_GID=20",
        "EFSFUSE_TIMEO=6",
        "EFSFUSE_CONNECT_TIMEOUT=7",
        "EFSFUSE_LOG_LEVEL=error",
        "EFSFUSE_LOG_FORMAT=json",
        "EFSFUSE_CLIENT_NAME=pod-b",
        "EFSFUSE_RO=1",
        "EFSFUSE_DIRCACHE=1",
        "EFSFUSE_FOREGROUND=yes",
        "EFSFUSE_OPTIONS=allow_other,_netdev",
        "EFSFUSE_BIN=/somewhere/else", /* not ours: ignored */
        "OTHER=1",
        NULL,
    };
    struct options *o;
    char err[512];
    int rc = options_parse(&o, 1, (char *[]){"efsfuse", NULL}, env, err, sizeof(err));
    if (rc != 0)
        fail_msg("rc %d: %s", rc, err);
    assert_string_equal(o->source_text, "nfs://srv:2051/data");
    assert_string_equal(o->nc.host, "srv");
    assert_int_equal(o->nc.port, 2051);
    assert_string_equal(o->nc.path, "/data");
    assert_string_equal(o->mountpoint, tmpdir);
    assert_true(o->fs.attr_timeout == 3.0);
    assert_true(o->fs.entry_timeout == 4.0);
    assert_true(o->fs.negative_timeout == 5.0);
    assert_int_equal(o->fs.max_read, 8192);
    assert_int_equal(o->fs.max_write, 16384);
    assert_int_equal(o->fs.max_inflight, 7);
    assert_int_equal(o->fs.readahead_kb, 128);
    assert_int_equal(o->fs.uid_override, 10);
    assert_int_equal(o->fs.gid_override, 20);
    assert_int_equal(o->nc.request_timeout_ms, 6000);
    assert_int_equal(o->nc.connect_timeout_ms, 7000);
    assert_int_equal(o->log_level, ELOG_ERROR);
    assert_int_equal(o->log_format, ELOG_JSON);
    assert_string_equal(o->nc.client_name, "pod-b");
    assert_true(o->fs.readonly);
    assert_true(o->fs.dircache);
    assert_true(o->foreground);
    assert_false(o->debug);
    assert_string_equal(fuse_list(o), "fsname=nfs://srv:2051/data,subtype=efsfuse,ro,allow_other");
    assert_string_equal(o->ignored, "_netdev");
    options_free(o);

    char *env_port[] = {"EFSFUSE_PORT=2052", "EFSFUSE_DEBUG=true", NULL};
    o = parse_ok_env(env_port, "h:/", NULL);
    assert_int_equal(o->nc.port, 2052);
    assert_true(o->debug);
    assert_true(o->foreground);
    assert_int_equal(o->log_level, ELOG_DEBUG);
    options_free(o);
}

static void test_environment_precedence(void **state)
{
    struct options *o;
    char err[512];

    /* EFSFUSE_OPTIONS < EFSFUSE_<NAME> < the command line. */
    char *env[] = {"EFSFUSE_OPTIONS=attr_timeout=3,entry_timeout=3,negative_timeout=3,fsname=e",
                   "EFSFUSE_ENTRY_TIMEOUT=4", "EFSFUSE_NEGATIVE_TIMEOUT=4", "EFSFUSE_SOURCE=env:/",
                   NULL};
    o = parse_ok_env(env, "cli:/", "negative_timeout=5,fsname=c");
    assert_true(o->fs.attr_timeout == 3.0);
    assert_true(o->fs.entry_timeout == 4.0);
    assert_true(o->fs.negative_timeout == 5.0);
    assert_string_equal(o->source_text, "cli:/");
    assert_string_equal(fuse_list(o), "subtype=efsfuse,fsname=c");
    options_free(o);

    /* One argument is SOURCE; MOUNTPOINT then comes from the environment. */
    char mp[PATH_MAX + 32];
    snprintf(mp, sizeof(mp), "EFSFUSE_MOUNTPOINT=%s", tmpdir);
    char *env_mp[] = {mp, "EFSFUSE_SOURCE=env:/", NULL};
    assert_int_equal(parse_with_env(&o, err, env_mp, "cli:/"), 0);
    assert_string_equal(o->source_text, "cli:/");
    assert_string_equal(o->mountpoint, tmpdir);
    options_free(o);

    /* The command line's rw beats EFSFUSE_RO; -o ro beats EFSFUSE_RO=0. */
    char *env_ro[] = {"EFSFUSE_RO=1", NULL};
    o = parse_ok_env(env_ro, "h:/", "rw");
    assert_false(o->fs.readonly);
    options_free(o);
    char *env_rw[] = {"EFSFUSE_RO=0", NULL};
    o = parse_ok_env(env_rw, "h:/", "ro");
    assert_true(o->fs.readonly);
    options_free(o);

    /* Empty variables count as unset (templated manifests). */
    char *env_empty[] = {
        "EFSFUSE_PORT=", "EFSFUSE_OPTIONS=", "EFSFUSE_RO=", "EFSFUSE_SOURCE=", NULL};
    o = parse_ok_env(env_empty, "h:/", NULL);
    assert_int_equal(o->nc.port, 0);
    assert_false(o->fs.readonly);
    options_free(o);
}

static void test_environment_errors(void **state)
{
    char *e1[] = {"EFSFUSE_MAX_WRITE=12x", NULL};
    expect_env_error("EFSFUSE_MAX_WRITE: '12x' is not a number", e1, "h:/", "@");
    char *e2[] = {"EFSFUSE_PORT=70000", NULL};
    expect_env_error("EFSFUSE_PORT: '70000' is out of range (1..65535)", e2, "h:/", "@");
    char *e3[] = {"EFSFUSE_RO=maybe", NULL};
    expect_env_error("EFSFUSE_RO: 'maybe' is not a boolean (use 1 or 0)", e3, "h:/", "@");
    char *e4[] = {"EFSFUSE_FOREGROUND=2", NULL};
    expect_env_error("EFSFUSE_FOREGROUND: '2' is not a boolean (use 1 or 0)", e4, "h:/", "@");
    char *e5[] = {"EFSFUSE_OPTIONS=allow_other,bogus", NULL};
    expect_env_error("unknown option 'bogus' in EFSFUSE_OPTIONS", e5, "h:/", "@");
    char *e6[] = {"EFSFUSE_OPTIONS=max_write=1x", NULL};
    expect_env_error("option 'max_write' in EFSFUSE_OPTIONS: '1x' is not a number", e6, "h:/", "@");
    char *e7[] = {"EFSFUSE_OPTIONS=rsize=4096", NULL};
    expect_env_error("unknown option 'rsize=4096' in EFSFUSE_OPTIONS (use max_read=N)", e7, "h:/",
                     "@");
    char *e8[] = {"EFSFUSE_SOURCE=nohost", "EFSFUSE_MOUNTPOINT=/tmp", NULL};
    expect_env_error(
        "EFSFUSE_SOURCE 'nohost': missing ':' (expected host:/path or nfs://host/path)", e8, "-f");
    char *e9[] = {"EFSFUSE_LOG_FORMAT=yaml", NULL};
    expect_env_error("EFSFUSE_LOG_FORMAT: 'yaml' is not one of text, json", e9, "h:/", "@");
    /* The same problem on the command line is reported as an option. */
    char *e10[] = {"EFSFUSE_MAX_READ=8192", NULL};
    expect_env_error("option 'max_read': '1' is out of range (4096..1048576)", e10, "h:/", "@",
                     "-o", "max_read=1");
}

/* libfuse's fuse_session_new() is the judge of what it accepts (it parses
 * without mounting): every option we pass on must get through it, or the
 * whitelist has drifted from the libfuse in use. */
static void expect_libfuse_accepts(const struct options *o)
{
    struct fuse_args copy = FUSE_ARGS_INIT(0, NULL);
    for (int i = 0; i < o->fuse_args.argc; i++)
        assert_int_equal(fuse_opt_add_arg(&copy, o->fuse_args.argv[i]), 0);
    struct fuse_lowlevel_ops ops;
    memset(&ops, 0, sizeof(ops));
    struct fuse_session *se = fuse_session_new(&copy, &ops, sizeof(ops), NULL);
    if (!se)
        fail_msg("fuse_session_new refused -o %s", o->fuse_args.argv[2]);
    fuse_session_destroy(se);
    fuse_opt_free_args(&copy);
}

static void test_libfuse_accepts_passthrough(void **state)
{
    struct options *o = parse_ok(
        "h:/a,b", "allow_other,allow_root,auto_unmount,default_permissions,fsname=x\\,y,"
                  "subtype=t,user=bob,context=a,fscontext=b,defcontext=c,rootcontext=d,suid,"
                  "nosuid,dev,nodev,exec,noexec,async,sync,dirsync,atime,noatime,ro,_netdev,"
                  "relatime,x-systemd.automount,defaults,nofail,user,nonempty");
    expect_libfuse_accepts(o);
    options_free(o);

    /* Defaults only, and what mount.fuse3 sends. */
    o = parse_ok("fs-1.efs.us-east-1.amazonaws.com:/", NULL);
    expect_libfuse_accepts(o);
    options_free(o);
    o = parse_ok("fs-1.efs.us-east-1.amazonaws.com:/", "rw,dev,suid");
    expect_libfuse_accepts(o);
    options_free(o);
}

static void test_free_null(void **state)
{
    options_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_every_option),
        cmocka_unit_test(test_limits_accepted),
        cmocka_unit_test(test_command_line_forms),
        cmocka_unit_test(test_debug),
        cmocka_unit_test(test_passthrough_and_ignored),
        cmocka_unit_test(test_mount_helper_options),
        cmocka_unit_test(test_fuse_args_dedup_and_escaping),
        cmocka_unit_test(test_unknown_options),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_client_name_limits),
        cmocka_unit_test(test_arguments),
        cmocka_unit_test(test_mountpoint_forms),
        cmocka_unit_test(test_ports),
        cmocka_unit_test(test_help_and_version),
        cmocka_unit_test(test_help_text),
        cmocka_unit_test(test_version_text),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_environment_precedence),
        cmocka_unit_test(test_environment_errors),
        cmocka_unit_test(test_libfuse_accepts_passthrough),
        cmocka_unit_test(test_free_null),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
