/* Bounded growable buffer; see buf.h. */
#include "core/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
core_buf_init(struct core_buf *b, size_t max_bytes)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max_bytes;
}

void
core_buf_done(struct core_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void
core_buf_reset(struct core_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static enum core_status
buf_reserve(struct core_buf *b, size_t extra)
{
    size_t need, ncap;
    char *p;

    if (extra > b->max || b->len > b->max - extra)
        return CORE_ERR_TOO_LARGE;
    need = b->len + extra + 1;
    if (need <= b->cap)
        return CORE_OK;
    ncap = b->cap ? b->cap : 256;
    while (ncap < need)
        ncap *= 2;
    if (ncap > b->max + 1)
        ncap = b->max + 1;
    p = realloc(b->data, ncap);
    if (!p)
        return CORE_ERR_NOMEM;
    b->data = p;
    b->cap = ncap;
    return CORE_OK;
}

enum core_status
core_buf_add(struct core_buf *b, const void *p, size_t n)
{
    enum core_status st = buf_reserve(b, n);

    if (st != CORE_OK)
        return st;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return CORE_OK;
}

enum core_status
core_buf_adds(struct core_buf *b, const char *s)
{
    return core_buf_add(b, s, strlen(s));
}

enum core_status
core_buf_vprintf(struct core_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    int n;
    enum core_status st;

    va_copy(ap2, ap);
    n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return CORE_ERR_INVALID;
    st = buf_reserve(b, (size_t)n);
    if (st != CORE_OK)
        return st;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return CORE_OK;
}

enum core_status
core_buf_printf(struct core_buf *b, const char *fmt, ...)
{
    va_list ap;
    enum core_status st;

    va_start(ap, fmt);
    st = core_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return st;
}

char *
core_buf_take(struct core_buf *b)
{
    char *p = b->data;

    if (!p)
        p = calloc(1, 1);
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}
