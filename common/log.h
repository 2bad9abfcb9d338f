/*
 * Leveled logger to stderr, shared by every layer: human-readable text by
 * default, one JSON object per line with ELOG_JSON (for log collectors).
 */
#ifndef EFSFUSE_LOG_H
#define EFSFUSE_LOG_H

#include <stdbool.h>

enum elog_level { ELOG_DEBUG, ELOG_INFO, ELOG_WARN, ELOG_ERROR };
enum elog_format { ELOG_TEXT, ELOG_JSON };

void elog_setup(enum elog_level min_level, enum elog_format format);
bool elog_enabled(enum elog_level level);
/* component names the part of the program ("rpc", "fuse", "main", ...). */
void elog(enum elog_level level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Parses "debug", "info", "warn", "error"; returns -1 when unknown. */
int elog_level_parse(const char *name);

#define elog_debug(component, ...)                                                                 \
    do {                                                                                           \
        if (elog_enabled(ELOG_DEBUG))                                                              \
            elog(ELOG_DEBUG, component, __VA_ARGS__);                                              \
    } while (0)
#define elog_info(component, ...) elog(ELOG_INFO, component, __VA_ARGS__)
#define elog_warn(component, ...) elog(ELOG_WARN, component, __VA_ARGS__)
#define elog_error(component, ...) elog(ELOG_ERROR, component, __VA_ARGS__)

#endif
