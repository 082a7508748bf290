/*
 * Logging: one logfmt line per event on stderr, e.g.
 *   ts=2026-11-26T14:00:00.123Z level=info msg="listening" addr=127.0.0.1:8080
 * Thread-safe (one write(2) per line). A thread may set a request id that is
 * added to every line it logs until cleared. Never pass secrets.
 */
#ifndef CORE_LOG_H
#define CORE_LOG_H

enum core_log_level {
    CORE_LOG_DEBUG = 0,
    CORE_LOG_INFO,
    CORE_LOG_WARN,
    CORE_LOG_ERROR
};

void core_log_set_level(enum core_log_level lvl);
/* Parse "debug", "info", "warn", "error"; returns -1 when unknown. */
int core_log_parse_level(const char *s);
/* Set (or clear with NULL) the request id of the calling thread. */
void core_log_set_request_id(const char *rid);
const char *core_log_request_id(void);
/* Name the calling thread (15 bytes kept), as top -H and perf show it. */
void core_thread_name(const char *name);

/* fmt is the rest of the line after msg: logfmt key=value pairs. */
void core_log(enum core_log_level lvl, const char *msg, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(msg, ...) core_log(CORE_LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...)  core_log(CORE_LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...)  core_log(CORE_LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) core_log(CORE_LOG_ERROR, msg, __VA_ARGS__)

#endif
