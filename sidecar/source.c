/*
 * SOURCE: which server and which directory of its export to mount.
 * Two spellings are accepted, the one fstab and mount.nfs use (host:/path,
 * as AWS documents for EFS) and the URL libnfs and other tools use
 * (nfs://host:port/path), because users copy from both.
 */
#include "sidecar/sidecar.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

__attribute__((format(printf, 3, 4))) static int fail(char *errbuf, size_t errlen, const char *fmt,
                                                      ...)
{
    if (errbuf && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errbuf, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static bool is_digits(const char *s, size_t len)
{
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!isdigit((unsigned char)s[i]))
            return false;
    return true;
}

static int parse_port(const char *s, size_t len, uint16_t *port, char *errbuf, size_t errlen)
{
    if (len == 0)
        return fail(errbuf, errlen, "empty port after ':'");
    if (!is_digits(s, len))
        return fail(errbuf, errlen, "port '%.*s' is not a number", (int)len, s);
    unsigned long value = 0;
    for (size_t i = 0; i < len && value <= 65535; i++)
        value = value * 10 + (unsigned long)(s[i] - '0');
    if (value < 1 || value > 65535)
        return fail(errbuf, errlen, "port '%.*s' is out of range (1..65535)", (int)len, s);
    *port = (uint16_t)value;
    return 0;
}

static int set_ipv6(struct source *out, const char *s, size_t len, char *errbuf, size_t errlen)
{
    char addr[INET6_ADDRSTRLEN + 1];
    unsigned char bin[sizeof(struct in6_addr)];

    if (len == 0)
        return fail(errbuf, errlen, "empty IPv6 address in '[]'");
    if (len >= sizeof(addr))
        goto bad;
    memcpy(addr, s, len);
    addr[len] = '\0';
    if (inet_pton(AF_INET6, addr, bin) != 1)
        goto bad;
    memcpy(out->host, addr, len + 1);
    return 0;
bad:
    return fail(errbuf, errlen, "'%.*s' is not a valid IPv6 address", (int)len, s);
}

/* A DNS name or a dotted IPv4 address; anything else would only fail later
 * in getaddrinfo() with a less helpful message. */
static int set_host(struct source *out, const char *s, size_t len, char *errbuf, size_t errlen)
{
    if (len == 0)
        return fail(errbuf, errlen, "empty host");
    if (len > SOURCE_HOST_MAX)
        return fail(errbuf, errlen, "host name is longer than %d characters", SOURCE_HOST_MAX);
    bool numeric = true;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!isalnum(c) && c != '.' && c != '-' && c != '_') {
            if (!isprint(c))
                return fail(errbuf, errlen, "host '%.*s' contains byte 0x%02x", (int)len, s,
                            (unsigned)c);
            return fail(errbuf, errlen, "host '%.*s' contains '%c'", (int)len, s, c);
        }
        if (!isdigit(c) && c != '.')
            numeric = false;
    }
    if (s[0] == '-' || s[0] == '.' || memmem(s, len, "..", 2))
        return fail(errbuf, errlen, "'%.*s' is not a valid host name", (int)len, s);
    memcpy(out->host, s, len);
    out->host[len] = '\0';
    unsigned char bin[sizeof(struct in_addr)];
    if (numeric && inet_pton(AF_INET, out->host, bin) != 1)
        return fail(errbuf, errlen, "'%s' is not a valid IPv4 address", out->host);
    return 0;
}

/*
 * Copies an absolute path into out->path, normalised. Normalising here
 * means the root is resolved by the same walk whatever the spelling, and a
 * ".." could only ever climb out of the subtree the operator meant to give.
 */
static int set_path(struct source *out, const char *path, char *errbuf, size_t errlen)
{
    if (path[0] != '/')
        return fail(errbuf, errlen, "path '%s' is not absolute", path);

    size_t o = 0;
    const char *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        size_t n = strcspn(p, "/");
        if (n == 0 || (n == 1 && p[0] == '.')) {
            p += n;
            continue;
        }
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return fail(errbuf, errlen, "'..' is not allowed in path '%s'", path);
        if (n > SOURCE_NAME_MAX)
            return fail(errbuf, errlen, "path component '%.20s...' is longer than %d bytes", p,
                        SOURCE_NAME_MAX);
        if (o + 1 + n > SOURCE_PATH_MAX)
            return fail(errbuf, errlen, "path is longer than %d bytes", SOURCE_PATH_MAX);
        out->path[o++] = '/';
        memcpy(out->path + o, p, n);
        o += n;
        p += n;
    }
    if (o == 0)
        out->path[o++] = '/';
    out->path[o] = '\0';
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* A URL's path is percent-encoded; decoding happens before normalising so
 * that "%2e%2e" is refused like "..". */
static int url_path(struct source *out, const char *s, char *errbuf, size_t errlen)
{
    char decoded[SOURCE_PATH_MAX + 1];
    size_t o = 0;

    if (*s == '\0')
        s = "/";
    for (; *s; s++) {
        if (o >= SOURCE_PATH_MAX)
            return fail(errbuf, errlen, "path is longer than %d bytes", SOURCE_PATH_MAX);
        if (*s != '%') {
            decoded[o++] = *s;
            continue;
        }
        int hi = hexval(s[1]), lo = hi < 0 ? -1 : hexval(s[2]);
        if (hi < 0 || lo < 0)
            return fail(errbuf, errlen, "invalid percent-encoding '%.3s' in path", s);
        if (hi == 0 && lo == 0)
            return fail(errbuf, errlen, "path contains an encoded NUL byte ('%%00')");
        decoded[o++] = (char)(hi * 16 + lo);
        s += 2;
    }
    decoded[o] = '\0';
    return set_path(out, decoded, errbuf, errlen);
}

/* nfs://authority[/path]; text points after "nfs://". */
static int parse_url(struct source *out, const char *text, char *errbuf, size_t errlen)
{
    int rc;
    size_t special = strcspn(text, "?#");
    if (text[special])
        return fail(errbuf, errlen, "URL %s ('%.20s') is not supported",
                    text[special] == '?' ? "query" : "fragment", text + special);

    size_t alen = strcspn(text, "/");
    const char *path = text + alen;
    if (memchr(text, '@', alen))
        return fail(errbuf, errlen, "user information ('...@') is not supported in the URL");

    const char *port = NULL;
    if (text[0] == '[') {
        const char *close = memchr(text, ']', alen);
        if (!close)
            return fail(errbuf, errlen, "missing ']' after IPv6 address");
        rc = set_ipv6(out, text + 1, (size_t)(close - text - 1), errbuf, errlen);
        if (rc < 0)
            return rc;
        const char *after = close + 1;
        if (after < path && *after != ':')
            return fail(errbuf, errlen, "unexpected '%.*s' after ']' (expected ':port' or '/')",
                        (int)(path - after), after);
        if (after < path)
            port = after + 1;
    } else {
        const char *colon = memchr(text, ':', alen);
        rc = set_host(out, text, colon ? (size_t)(colon - text) : alen, errbuf, errlen);
        if (rc < 0)
            return rc;
        if (colon)
            port = colon + 1;
    }
    if (port) {
        rc = parse_port(port, (size_t)(path - port), &out->port, errbuf, errlen);
        if (rc < 0)
            return rc;
    }
    return url_path(out, path, errbuf, errlen);
}

/* host:/path or [v6]:/path. */
static int parse_hostpath(struct source *out, const char *text, char *errbuf, size_t errlen)
{
    int rc;
    const char *path;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close)
            return fail(errbuf, errlen, "missing ']' after IPv6 address");
        rc = set_ipv6(out, text + 1, (size_t)(close - text - 1), errbuf, errlen);
        if (rc < 0)
            return rc;
        if (close[1] != ':')
            return fail(errbuf, errlen, "%s after ']' (expected '[address]:/path')",
                        close[1] ? "unexpected text" : "missing ':/path'");
        path = close + 2;
    } else {
        const char *colon = strchr(text, ':');
        if (!colon)
            return fail(errbuf, errlen, "missing ':' (expected host:/path or nfs://host/path)");
        size_t before_slash = strcspn(colon + 1, "/");
        if (memchr(colon + 1, ':', before_slash)) {
            size_t digits = strspn(colon + 1, "0123456789");
            if (digits && colon[1 + digits] == ':')
                return fail(errbuf, errlen,
                            "host:port:/path is not a form; use nfs://host:port/path "
                            "or -o port=N");
            return fail(errbuf, errlen, "IPv6 addresses must be in brackets: [address]:/path");
        }
        rc = set_host(out, text, (size_t)(colon - text), errbuf, errlen);
        if (rc < 0)
            return rc;
        path = colon + 1;
    }
    /* "host:" is taken as the root, as in EFS's "fs-id.efs.region.amazonaws.com:/". */
    if (*path == '\0')
        path = "/";
    if (path[0] != '/') {
        if (is_digits(path, strlen(path)))
            return fail(errbuf, errlen,
                        "path '%s' is not absolute (for a port use nfs://host:port/path)", path);
        return fail(errbuf, errlen, "path '%s' is not absolute (expected host:/path)", path);
    }
    return set_path(out, path, errbuf, errlen);
}

int source_parse(const char *text, struct source *out, char *errbuf, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (errbuf && errlen)
        errbuf[0] = '\0';
    if (!text || !*text)
        return fail(errbuf, errlen, "SOURCE is empty");
    for (const char *p = text; *p; p++)
        /* Mostly a stray newline from a YAML block scalar or a shell heredoc. */
        if (iscntrl((unsigned char)*p))
            return fail(errbuf, errlen, "contains a control character (0x%02x)",
                        (unsigned)(unsigned char)*p);

    int rc;
    if (strncasecmp(text, "nfs://", 6) == 0) {
        rc = parse_url(out, text + 6, errbuf, errlen);
        goto out;
    }
    /* A scheme has no dots, unlike the names of NFS servers, so
     * "fs-1.efs.us-east-1.amazonaws.com://x" is still host:/path. */
    size_t scheme =
        strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-");
    if (scheme && isalpha((unsigned char)text[0]) && strncmp(text + scheme, "://", 3) == 0) {
        rc = fail(errbuf, errlen, "unsupported URL scheme '%.*s' (only nfs://)", (int)scheme, text);
        goto out;
    }
    rc = parse_hostpath(out, text, errbuf, errlen);
out:
    /* No half-filled result for a caller that ignores the return code. */
    if (rc < 0)
        memset(out, 0, sizeof(*out));
    return rc;
}
