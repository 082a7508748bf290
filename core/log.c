/* logfmt logging to stderr; see log.h. */
#include "core/log.h"

#include <sys/prctl.h>

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static volatile int log_level = CORE_LOG_INFO;
static _Thread_local char log_rid[64];

void
core_thread_name(const char *name)
{
    char buf[16];

    snprintf(buf, sizeof(buf), "%s", name);
    (void)prctl(PR_SET_NAME, buf, 0, 0, 0);
}

void
core_log_set_level(enum core_log_level lvl)
{
    log_level = (int)lvl;
}

int
core_log_parse_level(const char *s)
{
    static const char *names[] = { "debug", "info", "warn", "error" };
    int i;

    for (i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    return -1;
}

void
core_log_set_request_id(const char *rid)
{
    if (!rid) {
        log_rid[0] = '\0';
        return;
    }
    snprintf(log_rid, sizeof(log_rid), "%s", rid);
}

const char *
core_log_request_id(void)
{
    return log_rid;
}

void
core_log(enum core_log_level lvl, const char *msg, const char *fmt, ...)
{
    static const char *names[] = { "debug", "info", "warn", "error" };
    char line[2048];
    struct timespec ts;
    struct tm tm;
    size_t n;
    int r;
    va_list ap;

    if ((int)lvl < log_level)
        return;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    r = snprintf(line, sizeof(line),
                 "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=\"%s\"",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                 tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L, names[lvl], msg);
    n = r < 0 ? 0 : (size_t)r;
    if (n < sizeof(line) && log_rid[0]) {
        r = snprintf(line + n, sizeof(line) - n, " request_id=%s", log_rid);
        n += r < 0 ? 0 : (size_t)r;
    }
    if (n < sizeof(line) - 1 && fmt && fmt[0]) {
        line[n++] = ' ';
        va_start(ap, fmt);
        r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
        va_end(ap);
        n += r < 0 ? 0 : (size_t)r;
    }
    if (n > sizeof(line) - 2)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    (void)!write(STDERR_FILENO, line, n);
}
