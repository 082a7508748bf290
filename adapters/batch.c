/*
 * Event batches (the per-request result of an adapter's parse) and the
 * stable names of the adapter enums. A batch owns its cJSON document, its
 * event array and a pool of strings made while parsing; adp_batch_free()
 * releases all three.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"

void
adp_batch_init(struct adp_batch *b)
{
    memset(b, 0, sizeof(*b));
}

void
adp_batch_free(struct adp_batch *b)
{
    size_t i;

    if (!b)
        return;
    cJSON_Delete(b->root);
    for (i = 0; i < b->nstrings; i++)
        free(b->strings[i]);
    free(b->strings);
    free(b->events);
    adp_batch_init(b);
}

/*
 * The returned pointer is valid until the next adp_batch_add() on the same
 * batch (the array may move): parsers must not keep it across adds.
 */
struct adp_event *
adp_batch_add(struct adp_batch *b)
{
    struct adp_event *ev;
    size_t ncap;

    if (b->n == b->cap) {
        ncap = b->cap ? b->cap * 2 : 8;
        if (ncap > SIZE_MAX / sizeof(*ev))
            return NULL;
        ev = realloc(b->events, ncap * sizeof(*ev));
        if (!ev)
            return NULL;
        b->events = ev;
        b->cap = ncap;
    }
    ev = &b->events[b->n++];
    memset(ev, 0, sizeof(*ev));
    return ev;
}

static const char *
batch_keep(struct adp_batch *b, char *s)
{
    char **ns;
    size_t ncap;

    if (b->nstrings == b->capstrings) {
        ncap = b->capstrings ? b->capstrings * 2 : 8;
        if (ncap > SIZE_MAX / sizeof(*ns)) {
            free(s);
            return NULL;
        }
        ns = realloc(b->strings, ncap * sizeof(*ns));
        if (!ns) {
            free(s);
            return NULL;
        }
        b->strings = ns;
        b->capstrings = ncap;
    }
    b->strings[b->nstrings++] = s;
    return s;
}

const char *
adp_batch_strf(struct adp_batch *b, const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return NULL;
    s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    if (vsnprintf(s, (size_t)n + 1, fmt, ap) != n) {
        va_end(ap);
        free(s);
        return NULL;
    }
    va_end(ap);
    return batch_keep(b, s);
}

const char *
adp_event_kind_str(enum adp_event_kind k)
{
    switch (k) {
    case ADP_EV_MESSAGE:
        return "message";
    case ADP_EV_INTERACTIVE:
        return "interactive";
    case ADP_EV_REACTION:
        return "reaction";
    case ADP_EV_STATUS:
        return "status";
    case ADP_EV_REFERRAL:
        return "referral";
    case ADP_EV_OPT_OUT:
        return "opt_out";
    case ADP_EV_OPT_IN:
        return "opt_in";
    case ADP_EV_ECHO:
        return "echo";
    case ADP_EV_UNKNOWN:
        return "unknown";
    }
    return "unknown";
}

const char *
adp_msg_type_str(enum adp_msg_type t)
{
    switch (t) {
    case ADP_MSG_NONE:
        return "none";
    case ADP_MSG_TEXT:
        return "text";
    case ADP_MSG_IMAGE:
        return "image";
    case ADP_MSG_AUDIO:
        return "audio";
    case ADP_MSG_VIDEO:
        return "video";
    case ADP_MSG_DOCUMENT:
        return "document";
    case ADP_MSG_STICKER:
        return "sticker";
    case ADP_MSG_LOCATION:
        return "location";
    case ADP_MSG_CONTACTS:
        return "contacts";
    case ADP_MSG_UNSUPPORTED:
        return "unsupported";
    }
    return "none";
}

const char *
adp_status_str(enum adp_status s)
{
    switch (s) {
    case ADP_STATUS_NONE:
        return "none";
    case ADP_STATUS_SENT:
        return "sent";
    case ADP_STATUS_DELIVERED:
        return "delivered";
    case ADP_STATUS_READ:
        return "read";
    case ADP_STATUS_FAILED:
        return "failed";
    }
    return "none";
}

const char *
adp_send_class_str(enum adp_send_class c)
{
    switch (c) {
    case ADP_SEND_OK:
        return "ok";
    case ADP_SEND_RATE_LIMIT:
        return "rate_limit";
    case ADP_SEND_TRANSIENT:
        return "transient";
    case ADP_SEND_WINDOW_CLOSED:
        return "window_closed";
    case ADP_SEND_UNREACHABLE:
        return "unreachable";
    case ADP_SEND_PERMANENT:
        return "permanent";
    }
    return "permanent";
}
