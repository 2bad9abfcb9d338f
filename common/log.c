#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static enum elog_level min_level = ELOG_INFO;
static enum elog_format format = ELOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void elog_setup(enum elog_level level, enum elog_format fmt)
{
    min_level = level;
    format = fmt;
}

bool elog_enabled(enum elog_level level)
{
    return level >= min_level;
}

int elog_level_parse(const char *name)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    if (strcmp(name, "warning") == 0)
        return ELOG_WARN;
    return -1;
}

/* JSON string escaping for the message; control characters become \u00XX. */
static size_t json_escape(char *out, size_t outlen, const char *in)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 7 < outlen; p++) {
        if (*p == '"' || *p == '\\') {
            out[o++] = '\\';
            out[o++] = (char)*p;
        } else if (*p < 0x20) {
            o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", *p);
        } else {
            out[o++] = (char)*p;
        }
    }
    out[o] = '\0';
    return o;
}

void elog(enum elog_level level, const char *component, const char *fmt, ...)
{
    if (level < min_level)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    char stamp[40];
    size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof(stamp) - n, ".%03ldZ", now.tv_nsec / 1000000);

    /* One write() per line so that lines from concurrent processes do not interleave. */
    char line[2300];
    int len;
    if (format == ELOG_JSON) {
        char escaped[2048];
        json_escape(escaped, sizeof(escaped), msg);
        len = snprintf(line, sizeof(line),
                       "{\"time\":\"%s\",\"level\":\"%s\",\"component\":\"%s\",\"msg\":\"%s\"}\n",
                       stamp, level_names[level], component, escaped);
    } else {
        len = snprintf(line, sizeof(line), "%s efsfuse[%d] %s %s: %s\n", stamp, (int)getpid(),
                       level_names[level], component, msg);
    }
    if (len < 0)
        return;
    if ((size_t)len >= sizeof(line))
        len = sizeof(line) - 1;
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)len);
    (void)ignored;
}
