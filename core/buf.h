/*
 * Bounded growable byte buffer (after curl's dynbuf): every buffer has a
 * maximum, and growing past it fails with CORE_ERR_TOO_LARGE instead of
 * eating memory. The content is always NUL-terminated.
 */
#ifndef CORE_BUF_H
#define CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

#include "core/status.h"

struct core_buf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
};

void core_buf_init(struct core_buf *b, size_t max_bytes);
void core_buf_done(struct core_buf *b);
void core_buf_reset(struct core_buf *b);
enum core_status core_buf_add(struct core_buf *b, const void *p, size_t n);
enum core_status core_buf_adds(struct core_buf *b, const char *s);
enum core_status core_buf_printf(struct core_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
enum core_status core_buf_vprintf(struct core_buf *b, const char *fmt,
                                  va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Detach the data; caller frees it with free(). */
char *core_buf_take(struct core_buf *b);

#endif
