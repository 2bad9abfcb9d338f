/* SOURCE parsing: every accepted spelling, normalisation, and the message
 * for each way of getting it wrong. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar/sidecar.h"

struct ok_case {
    const char *text;
    const char *host;
    uint16_t port;
    const char *path;
};

struct err_case {
    const char *text;
    const char *message;
};

static void check_ok(const struct ok_case *c)
{
    struct source src;
    char err[256] = "";
    int rc = source_parse(c->text, &src, err, sizeof(err));
    if (rc != 0)
        fail_msg("'%s': rc %d, error '%s'", c->text, rc, err);
    if (strcmp(src.host, c->host) != 0)
        fail_msg("'%s': host '%s', want '%s'", c->text, src.host, c->host);
    if (src.port != c->port)
        fail_msg("'%s': port %u, want %u", c->text, src.port, c->port);
    if (strcmp(src.path, c->path) != 0)
        fail_msg("'%s': path '%s', want '%s'", c->text, src.path, c->path);
}

static void check_err(const struct err_case *c)
{
    struct source src;
    char err[256] = "";
    int rc = source_parse(c->text, &src, err, sizeof(err));
    if (rc != -EINVAL)
        fail_msg("'%s': rc %d, want -EINVAL (host '%s' path '%s')", c->text, rc, src.host,
                 src.path);
    if (strcmp(err, c->message) != 0)
        fail_msg("'%s': error\n  '%s', want\n  '%s'", c->text, err, c->message);
}

static void test_host_path_forms(void **state)
{
    static const struct ok_case cases[] = {
        {"fs-0123.efs.us-east-1.amazonaws.com:/", "fs-0123.efs.us-east-1.amazonaws.com", 0, "/"},
        {"server:/export/data", "server", 0, "/export/data"},
        {"server:", "server", 0, "/"},
        {"127.0.0.1:/x", "127.0.0.1", 0, "/x"},
        {"my_host.local:/a:b", "my_host.local", 0, "/a:b"},
        {"[::1]:/x", "::1", 0, "/x"},
        {"[2001:db8::5]:/", "2001:db8::5", 0, "/"},
        {"[::ffff:10.0.0.1]:", "::ffff:10.0.0.1", 0, "/"},
        {"server:/with space/x", "server", 0, "/with space/x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_ok(&cases[i]);
}

static void test_url_forms(void **state)
{
    static const struct ok_case cases[] = {
        {"nfs://server/x", "server", 0, "/x"},
        {"nfs://server", "server", 0, "/"},
        {"nfs://server/", "server", 0, "/"},
        {"nfs://server:2050/x/y", "server", 2050, "/x/y"},
        {"nfs://server:2049", "server", 2049, "/"},
        {"nfs://server:65535/", "server", 65535, "/"},
        {"NFS://Server/x", "Server", 0, "/x"},
        {"nfs://10.1.2.3:1/", "10.1.2.3", 1, "/"},
        {"nfs://[::1]", "::1", 0, "/"},
        {"nfs://[::1]/a", "::1", 0, "/a"},
        {"nfs://[fe80::1]:2049/a%20b", "fe80::1", 2049, "/a b"},
        {"nfs://host/%41%2fb", "host", 0, "/A/b"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_ok(&cases[i]);
}

static void test_normalisation(void **state)
{
    static const struct ok_case cases[] = {
        {"server:/a//b/", "server", 0, "/a/b"},
        {"fs-1.efs.us-east-1.amazonaws.com://x", "fs-1.efs.us-east-1.amazonaws.com", 0, "/x"},
        {"server:/a/./b/.", "server", 0, "/a/b"},
        {"server:/./", "server", 0, "/"},
        {"server.local:///", "server.local", 0, "/"},
        {"10.0.0.1://a", "10.0.0.1", 0, "/a"},
        {"server:/a/", "server", 0, "/a"},
        {"server:/a...b/..c/c..", "server", 0, "/a...b/..c/c.."},
        {"nfs://server//a///b//", "server", 0, "/a/b"},
        {"nfs://server/./a/%2e/b", "server", 0, "/a/b"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_ok(&cases[i]);
}

static void test_malformed_host_path(void **state)
{
    static const struct err_case cases[] = {
        {"", "SOURCE is empty"},
        {":/x", "empty host"},
        {"server", "missing ':' (expected host:/path or nfs://host/path)"},
        {"server:relative", "path 'relative' is not absolute (expected host:/path)"},
        {"server:2049", "path '2049' is not absolute (for a port use nfs://host:port/path)"},
        {"server:2049:/x", "host:port:/path is not a form; use nfs://host:port/path or -o port=N"},
        {"fe80::1:/x", "IPv6 addresses must be in brackets: [address]:/path"},
        {"::1:/x", "IPv6 addresses must be in brackets: [address]:/path"},
        {"server:/a/../b", "'..' is not allowed in path '/a/../b'"},
        {"server:/..", "'..' is not allowed in path '/..'"},
        {"[::1]x:/p", "unexpected text after ']' (expected '[address]:/path')"},
        {"[::1]", "missing ':/path' after ']' (expected '[address]:/path')"},
        {"[::1:/x", "missing ']' after IPv6 address"},
        {"[]:/x", "empty IPv6 address in '[]'"},
        {"[zz::1]:/x", "'zz::1' is not a valid IPv6 address"},
        {"[1.2.3.4]:/", "'1.2.3.4' is not a valid IPv6 address"},
        {"bad host:/x", "host 'bad host' contains ' '"},
        {"a/b:/x", "host 'a/b' contains '/'"},
        {"-host:/x", "'-host' is not a valid host name"},
        {".host:/x", "'.host' is not a valid host name"},
        {"a..b:/x", "'a..b' is not a valid host name"},
        {"999.1.1.1:/x", "'999.1.1.1' is not a valid IPv4 address"},
        {"1.2.3:/x", "'1.2.3' is not a valid IPv4 address"},
        {"server:/x\n", "contains a control character (0x0a)"},
        {"http://host/x", "unsupported URL scheme 'http' (only nfs://)"},
        {"nfs4://host/x", "unsupported URL scheme 'nfs4' (only nfs://)"},
        {"server://x", "unsupported URL scheme 'server' (only nfs://)"},
        {"caf\xc3\xa9:/x", "host 'caf\xc3\xa9' contains byte 0xc3"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_err(&cases[i]);
}

static void test_malformed_url(void **state)
{
    static const struct err_case cases[] = {
        {"nfs://", "empty host"},
        {"nfs:///x", "empty host"},
        {"nfs://:2049/x", "empty host"},
        {"nfs://host:/x", "empty port after ':'"},
        {"nfs://host:abc/x", "port 'abc' is not a number"},
        {"nfs://host:-1/x", "port '-1' is not a number"},
        {"nfs://host:0/x", "port '0' is out of range (1..65535)"},
        {"nfs://host:65536/x", "port '65536' is out of range (1..65535)"},
        {"nfs://host:99999999999999999999999/", "port '99999999999999999999999' is out of range "
                                                "(1..65535)"},
        {"nfs://host:20:49/x", "port '20:49' is not a number"},
        {"nfs://[::1]x/p", "unexpected 'x' after ']' (expected ':port' or '/')"},
        {"nfs://[::1]:/p", "empty port after ':'"},
        {"nfs://[::1:2049/p", "missing ']' after IPv6 address"},
        {"nfs://[nope]/p", "'nope' is not a valid IPv6 address"},
        {"nfs://user@host/x", "user information ('...@') is not supported in the URL"},
        {"nfs://host/x?version=4", "URL query ('?version=4') is not supported"},
        {"nfs://host/x#frag", "URL fragment ('#frag') is not supported"},
        {"nfs://host/%2e%2e/x", "'..' is not allowed in path '/../x'"},
        {"nfs://host/a%zz", "invalid percent-encoding '%zz' in path"},
        {"nfs://host/a%4", "invalid percent-encoding '%4' in path"},
        {"nfs://host/a%00", "path contains an encoded NUL byte ('%00')"},
        {"nfs://bad_host!/x", "host 'bad_host!' contains '!'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_err(&cases[i]);
}

static void test_limits(void **state)
{
    char text[6000];
    char want[300];
    struct source src;
    char err[256];

    /* 253 characters is the longest DNS name; one more is refused. */
    memset(text, 'a', 253);
    strcpy(text + 253, ":/");
    assert_int_equal(source_parse(text, &src, err, sizeof(err)), 0);
    assert_int_equal(strlen(src.host), 253);
    memset(text, 'a', 254);
    strcpy(text + 254, ":/");
    assert_int_equal(source_parse(text, &src, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "host name is longer than 253 characters");

    /* Path components: 255 bytes is fine, 256 is not. */
    strcpy(text, "h:/");
    memset(text + 3, 'n', 255);
    text[258] = '\0';
    assert_int_equal(source_parse(text, &src, err, sizeof(err)), 0);
    assert_int_equal(strlen(src.path), 256);
    strcpy(text + 258, "n");
    assert_int_equal(source_parse(text, &src, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want), "path component '%.20s...' is longer than 255 bytes", text + 3);
    assert_string_equal(err, want);

    /* The whole path, after normalising. */
    strcpy(text, "h:");
    size_t o = 2;
    while (o < 5000) {
        strcpy(text + o, "/abcdefghi");
        o += 10;
    }
    assert_int_equal(source_parse(text, &src, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "path is longer than 4095 bytes");
    /* Collapsed separators do not count against the limit. */
    strcpy(text, "h.x:");
    memset(text + 4, '/', 5000);
    strcpy(text + 5004, "x");
    assert_int_equal(source_parse(text, &src, err, sizeof(err)), 0);
    assert_string_equal(src.path, "/x");
}

static void test_null_and_small_errbuf(void **state)
{
    struct source src;
    char tiny[8];

    assert_int_equal(source_parse(NULL, &src, NULL, 0), -EINVAL);
    assert_int_equal(source_parse("server", &src, tiny, sizeof(tiny)), -EINVAL);
    assert_int_equal(strlen(tiny), sizeof(tiny) - 1);
    /* A failed parse leaves no half-filled result behind. */
    assert_int_equal(source_parse("server:/a/../b", &src, NULL, 0), -EINVAL);
    assert_string_equal(src.path, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_path_forms),       cmocka_unit_test(test_url_forms),
        cmocka_unit_test(test_normalisation),         cmocka_unit_test(test_malformed_host_path),
        cmocka_unit_test(test_malformed_url),         cmocka_unit_test(test_limits),
        cmocka_unit_test(test_null_and_small_errbuf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
