/*
 * loadgen: webhook load generator for Parley's benchmark. Each request is a
 * unique, correctly signed WhatsApp (or Messenger / Instagram) text-message
 * webhook; a --dup-ratio share re-sends an earlier request byte for byte.
 * Prints one JSON object: counts by status, errors, rate, latency percentiles.
 *
 * Design: one thread, epoll, non-blocking HTTP/1.1 keep-alive connections,
 * at most one request in flight per connection (no pipelining). Closed loop
 * by default; with --rate R requests are scheduled at fixed times and latency
 * is measured from the scheduled time, so a stalled server shows up in the
 * percentiles instead of silently slowing the generator. Bounded: it stops
 * after --duration or --requests, and only ever connects to 127.0.0.0/8.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"

#define LG_MAX_CONNS      20000
#define LG_RBUF_MAX       ((size_t)128 * 1024)
#define LG_REQ_MAX        ((size_t)4 * 1024 * 1024)
#define LG_DUP_RING       4096
#define LG_HIST_N         (256 + 56 * 128)
#define LG_BACKOFF_MAX_MS 1000
#define LG_MAX_HEADERS    8

enum lg_state { LG_DOWN, LG_CONNECTING, LG_IDLE, LG_BUSY };

enum lg_err {
    LG_E_CONNECT,
    LG_E_CLOSED,
    LG_E_IO,
    LG_E_TIMEOUT,
    LG_E_PARSE,
    LG_E_N
};

static const char *const lg_err_name[LG_E_N] = { "connect", "closed", "io",
                                                 "timeout", "parse" };

enum lg_platform { LG_WHATSAPP, LG_MESSENGER, LG_INSTAGRAM };

struct lg_conn {
    int fd;
    enum lg_state state;
    struct core_buf req;
    size_t req_off;
    char *rbuf;
    size_t rlen;
    long long start_us;
    long long retry_at_us;
    long backoff_ms;
    bool out_armed;
    bool in_idle; /* listed in lg.idle (the entry may be stale) */
};

struct lg_opts {
    const char *url;
    const char *secret;
    const char *method;
    const char *path;
    const char *phone_id;
    const char *waba_id;
    const char *run_id;
    enum lg_platform platform;
    long conns;
    double duration_s;
    long long requests;
    double dup_ratio;
    double status_ratio; /* share of status webhooks (receipts: Messenger) */
    long users;
    double rate;
    long timeout_ms;
    long text_bytes;
    unsigned long long seed;
    const char *body_file;
    const char *headers[LG_MAX_HEADERS];
    int nheaders;
};

struct lg_dup {
    char *data;
    size_t len;
};

struct lg {
    struct lg_opts o;
    struct sockaddr_in addr;
    char host_hdr[300];
    char target[1024];
    char run[32];
    long long start_ms; /* Messenger receipts: watermark = start_ms + seq */
    char extra_hdrs[4096];
    struct core_buf fixed_body;
    int ep;
    struct lg_conn *c;
    int *idle;
    int nidle;
    unsigned long long issued;
    unsigned long long completed;
    unsigned long long dups;
    unsigned long long inflight;
    unsigned long long reconnects;
    long ndown;
    bool fatal;
    unsigned long long status[600];
    unsigned long long err[LG_E_N];
    unsigned long long hist[LG_HIST_N];
    long long lat_max_us;
    double lat_sum_us;
    struct lg_dup ring[LG_DUP_RING];
    size_t ring_n;
    size_t ring_next;
    uint64_t rng;
    long long t0_us;
    long long last_done_us;
};

/* ------------------------------------------------------------------ */
/* helpers */

static long long
lg_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static uint64_t
lg_rand(struct lg *g)
{
    uint64_t x = g->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static double
lg_rand01(struct lg *g)
{
    return (double)(lg_rand(g) >> 11) / 9007199254740992.0;
}

static const char *
lg_memfind(const char *hay, size_t n, const char *needle)
{
    size_t k = strlen(needle), i;

    for (i = 0; i + k <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, k) == 0)
            return hay + i;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* latency histogram: log-linear buckets, < 0.8 % relative error */

static size_t
lg_hist_idx(unsigned long long v)
{
    int msb, shift;
    size_t idx;

    if (v < 256)
        return (size_t)v;
    msb = 63 - __builtin_clzll(v);
    shift = msb - 7;
    idx = 256 + (size_t)(msb - 8) * 128 + (size_t)((v >> shift) - 128);
    return idx < LG_HIST_N ? idx : LG_HIST_N - 1;
}

static unsigned long long
lg_hist_val(size_t idx)
{
    size_t k, sub;
    int msb, shift;

    if (idx < 256)
        return idx;
    k = idx - 256;
    msb = (int)(k / 128) + 8;
    sub = k % 128;
    shift = msb - 7;
    return ((128 + (unsigned long long)sub) << shift) + ((1ULL << shift) >> 1);
}

static double
lg_pct_ms(const struct lg *g, double p)
{
    unsigned long long total = 0, need, acc = 0;
    size_t i;

    for (i = 0; i < LG_HIST_N; i++)
        total += g->hist[i];
    if (!total)
        return 0.0;
    need = (unsigned long long)ceil(p * (double)total);
    if (need < 1)
        need = 1;
    for (i = 0; i < LG_HIST_N; i++) {
        acc += g->hist[i];
        if (acc >= need)
            return (double)lg_hist_val(i) / 1000.0;
    }
    return (double)g->lat_max_us / 1000.0;
}

/* ------------------------------------------------------------------ */
/* request bodies */

static void
lg_text(struct lg *g, unsigned long long seq, long user, char *buf, size_t size)
{
    static const char filler[] = " lorem ipsum dolor sit amet consectetur";
    size_t n;

    n = (size_t)snprintf(buf, size, "loadgen message %llu from user %ld", seq,
                         user);
    while (g->o.text_bytes > 0 && n < (size_t)g->o.text_bytes && n + 1 < size) {
        buf[n] = filler[n % (sizeof(filler) - 1)];
        n++;
    }
    if (n >= size)
        n = size - 1;
    buf[n] = '\0';
}

static enum core_status
lg_body(struct lg *g, unsigned long long seq, struct core_buf *b)
{
    long user = (long)(lg_rand(g) % (uint64_t)g->o.users);
    long long now_s = (long long)time(NULL);
    char text[8192];

    if (g->o.status_ratio > 0 && lg_rand01(g) < g->o.status_ratio) {
        if (g->o.platform == LG_WHATSAPP)
            /* A delivery status of a message Parley sent (one it never
             * sent, here: the status is stored as an event all the same). */
            return core_buf_printf(
                b,
                "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":"
                "\"%s\",\"changes\":[{\"value\":{\"messaging_product\":"
                "\"whatsapp\",\"metadata\":{\"display_phone_number\":"
                "\"15550001111\",\"phone_number_id\":\"%s\"},\"statuses\":[{"
                "\"id\":\"wamid.LGS%s.%llu\",\"status\":\"delivered\","
                "\"timestamp\":\"%lld\",\"recipient_id\":\"%ld\"}]},"
                "\"field\":\"messages\"}]}]}",
                g->o.waba_id, g->o.phone_id, g->run, seq, now_s,
                15550000000L + user);
        /* A read receipt: everything the page sent the user up to the
         * watermark; one per request (the run's start + seq), so that no
         * two are one dedupe key. */
        return core_buf_printf(
            b,
            "{\"object\":\"%s\",\"entry\":[{\"id\":\"%s\",\"time\":%lld,"
            "\"messaging\":[{\"sender\":{\"id\":\"%ld\"},\"recipient\":{\"id\":"
            "\"%s\"},\"timestamp\":%lld,\"read\":{\"watermark\":%lld}}]}]}",
            g->o.platform == LG_MESSENGER ? "page" : "instagram", g->o.phone_id,
            now_s * 1000, 7000000000000000L + user, g->o.phone_id, now_s * 1000,
            g->start_ms + (long long)seq);
    }
    lg_text(g, seq, user, text, sizeof(text));
    if (g->o.platform == LG_WHATSAPP)
        return core_buf_printf(
            b,
            "{\"object\":\"whatsapp_business_account\",\"entry\":[{\"id\":\"%"
            "s\","
            "\"changes\":[{\"value\":{\"messaging_product\":\"whatsapp\","
            "\"metadata\":{\"display_phone_number\":\"15550001111\","
            "\"phone_number_id\":\"%s\"},\"contacts\":[{\"profile\":{\"name\":"
            "\"Load User %ld\"},\"wa_id\":\"%ld\"}],\"messages\":[{\"from\":"
            "\"%ld\",\"id\":\"wamid.LG%s.%llu\",\"timestamp\":\"%lld\","
            "\"text\":"
            "{\"body\":\"%s\"},\"type\":\"text\"}]},\"field\":\"messages\"}]}]"
            "}",
            g->o.waba_id, g->o.phone_id, user, 15550000000L + user,
            15550000000L + user, g->run, seq, now_s, text);
    return core_buf_printf(
        b,
        "{\"object\":\"%s\",\"entry\":[{\"id\":\"%s\",\"time\":%lld,"
        "\"messaging\":[{\"sender\":{\"id\":\"%ld\"},\"recipient\":{\"id\":"
        "\"%s\"},\"timestamp\":%lld,\"message\":{\"mid\":\"%s%s.%llu\","
        "\"text\":\"%s\"}}]}]}",
        g->o.platform == LG_MESSENGER ? "page" : "instagram", g->o.phone_id,
        now_s * 1000, 7000000000000000L + user, g->o.phone_id, now_s * 1000,
        g->o.platform == LG_MESSENGER ? "m_LG" : "aWdfLG", g->run, seq, text);
}

/* Build the next request (new or duplicate) into c->req. */
static enum core_status
lg_build(struct lg *g, struct lg_conn *c)
{
    struct core_buf body;
    struct lg_dup *d;
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0, i;
    char hex[2 * EVP_MAX_MD_SIZE + 1] = "";
    enum core_status st;

    core_buf_reset(&c->req);
    c->req_off = 0;
    if (strcmp(g->o.method, "GET") == 0)
        return core_buf_printf(&c->req,
                               "GET %s HTTP/1.1\r\nHost: %s\r\n"
                               "User-Agent: parley-loadgen\r\n%s\r\n",
                               g->target, g->host_hdr, g->extra_hdrs);
    if (g->o.dup_ratio > 0 && g->ring_n > 0 && lg_rand01(g) < g->o.dup_ratio) {
        d = &g->ring[lg_rand(g) % g->ring_n];
        g->dups++;
        return core_buf_add(&c->req, d->data, d->len);
    }
    core_buf_init(&body, LG_REQ_MAX);
    if (g->o.body_file)
        st = core_buf_add(&body, g->fixed_body.data, g->fixed_body.len);
    else
        st = lg_body(g, g->issued + 1, &body);
    if (st != CORE_OK)
        goto out;
    if (g->o.secret) {
        if (!HMAC(EVP_sha256(), g->o.secret, (int)strlen(g->o.secret),
                  (const unsigned char *)body.data, body.len, mac, &mlen)) {
            st = CORE_ERR_INTERNAL;
            goto out;
        }
        for (i = 0; i < mlen; i++)
            snprintf(hex + (size_t)i * 2, 3, "%02x", mac[i]);
    }
    st = core_buf_printf(&c->req,
                         "POST %s HTTP/1.1\r\nHost: %s\r\n"
                         "User-Agent: parley-loadgen\r\n"
                         "Content-Type: application/json\r\n"
                         "%s%s%s%s"
                         "Content-Length: %zu\r\n\r\n",
                         g->target, g->host_hdr, g->extra_hdrs,
                         g->o.secret ? "X-Hub-Signature-256: sha256=" : "", hex,
                         g->o.secret ? "\r\n" : "", body.len);
    if (st == CORE_OK)
        st = core_buf_add(&c->req, body.data, body.len);
    if (st == CORE_OK && g->o.dup_ratio > 0) {
        d = &g->ring[g->ring_next];
        free(d->data);
        d->data = malloc(c->req.len);
        d->len = d->data ? c->req.len : 0;
        if (d->data)
            memcpy(d->data, c->req.data, c->req.len);
        g->ring_next = (g->ring_next + 1) % LG_DUP_RING;
        if (g->ring_n < LG_DUP_RING && d->data)
            g->ring_n++;
    }
out:
    core_buf_done(&body);
    return st;
}

/* ------------------------------------------------------------------ */
/* HTTP response parsing */

static bool
lg_hdr_is(const char *line, size_t n, const char *name, const char **val)
{
    size_t k = strlen(name);

    if (n <= k || strncasecmp(line, name, k) != 0 || line[k] != ':')
        return false;
    *val = line + k + 1;
    while (*val < line + n && (**val == ' ' || **val == '\t'))
        (*val)++;
    return true;
}

/* Find the end of a chunked body starting at p; 0 = need more, -1 = bad. */
static long
lg_chunked(const char *p, size_t n)
{
    size_t at = 0, size;
    const char *eol, *t;
    char *end;

    for (;;) {
        eol = lg_memfind(p + at, n - at, "\r\n");
        if (!eol)
            return 0;
        errno = 0;
        size = strtoul(p + at, &end, 16);
        if (errno || end == p + at || size > LG_RBUF_MAX)
            return -1;
        at = (size_t)(eol - p) + 2;
        if (size == 0) {
            if (n - at >= 2 && p[at] == '\r' && p[at + 1] == '\n')
                return (long)(at + 2);
            t = lg_memfind(p + at, n - at, "\r\n\r\n");
            return t ? (long)(t - p + 4) : 0;
        }
        if (n - at < size + 2)
            return 0;
        at += size + 2;
    }
}

/* >0: length of one complete response in b; 0: need more; -1: malformed. */
static long
lg_parse(const char *b, size_t n, int *status, bool *close_after)
{
    const char *hend = lg_memfind(b, n, "\r\n\r\n"), *line, *eol, *v;
    size_t hlen;
    long long cl = -1;
    bool chunked = false, http10;
    long body;

    if (!hend)
        return n > 65536 ? -1 : 0;
    hlen = (size_t)(hend - b) + 4;
    if (n < 12 || strncmp(b, "HTTP/1.", 7) != 0 || b[8] != ' ')
        return -1;
    http10 = b[7] == '0';
    *status = (int)strtol(b + 9, NULL, 10);
    *close_after = http10;
    if (*status < 100 || *status > 599)
        return -1;
    line = (const char *)memchr(b, '\n', hlen) + 1;
    while (line < hend) {
        eol = lg_memfind(line, (size_t)(hend + 2 - line), "\r\n");
        if (!eol)
            break;
        if (lg_hdr_is(line, (size_t)(eol - line), "content-length", &v))
            cl = strtoll(v, NULL, 10);
        else if (lg_hdr_is(line, (size_t)(eol - line), "transfer-encoding", &v))
            chunked = lg_memfind(v, (size_t)(eol - v), "chunked") != NULL;
        else if (lg_hdr_is(line, (size_t)(eol - line), "connection", &v))
            *close_after = strncasecmp(v, "close", 5) == 0 ||
                           (http10 && strncasecmp(v, "keep-alive", 10) != 0);
        line = eol + 2;
    }
    if (*status < 200 || *status == 204 || *status == 304)
        return (long)hlen;
    if (chunked) {
        body = lg_chunked(b + hlen, n - hlen);
        return body <= 0 ? body : (long)hlen + body;
    }
    if (cl < 0 || cl > (long long)LG_RBUF_MAX)
        return -1;
    return n - hlen >= (size_t)cl ? (long)(hlen + (size_t)cl) : 0;
}

/* ------------------------------------------------------------------ */
/* connections */

static void
lg_ep_set(struct lg *g, int i, bool out)
{
    struct epoll_event ev;

    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t)i;
    epoll_ctl(g->ep, EPOLL_CTL_MOD, g->c[i].fd, &ev);
    g->c[i].out_armed = out;
}

static void
lg_close(struct lg *g, int i, long long retry_at)
{
    struct lg_conn *c = &g->c[i];

    if (c->fd >= 0) {
        epoll_ctl(g->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->state == LG_BUSY)
        g->inflight--;
    if (c->state != LG_DOWN)
        g->ndown++;
    c->fd = -1;
    c->state = LG_DOWN;
    c->rlen = 0;
    c->retry_at_us = retry_at;
}

static void
lg_fail(struct lg *g, int i, enum lg_err e)
{
    struct lg_conn *c = &g->c[i];

    g->err[e]++;
    if (c->state == LG_CONNECTING || e == LG_E_CONNECT) {
        c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : 10;
        if (c->backoff_ms > LG_BACKOFF_MAX_MS)
            c->backoff_ms = LG_BACKOFF_MAX_MS;
    }
    lg_close(g, i, lg_now_us() + c->backoff_ms * 1000);
}

/* Mark connection i idle; each connection is listed at most once. */
static void
lg_set_idle(struct lg *g, int i)
{
    g->c[i].state = LG_IDLE;
    if (!g->c[i].in_idle) {
        g->c[i].in_idle = true;
        g->idle[g->nidle++] = i;
    }
}

static void
lg_connect(struct lg *g, int i)
{
    struct lg_conn *c = &g->c[i];
    struct epoll_event ev;
    int one = 1, r;

    if (c->state == LG_DOWN)
        g->ndown--;
    c->state = LG_CONNECTING;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        lg_fail(g, i, LG_E_CONNECT);
        return;
    }
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    r = connect(c->fd, (const struct sockaddr *)&g->addr, sizeof(g->addr));
    if (r != 0 && errno != EINPROGRESS) {
        lg_fail(g, i, LG_E_CONNECT);
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN | (r != 0 ? EPOLLOUT : 0);
    ev.data.u32 = (uint32_t)i;
    epoll_ctl(g->ep, EPOLL_CTL_ADD, c->fd, &ev);
    c->out_armed = r != 0;
    if (r == 0) {
        c->backoff_ms = 0;
        lg_set_idle(g, i);
    }
}

/* Write what is pending; arm EPOLLOUT only when the socket is full. */
static void
lg_write(struct lg *g, int i)
{
    struct lg_conn *c = &g->c[i];
    ssize_t n;

    while (c->req_off < c->req.len) {
        n = send(c->fd, c->req.data + c->req_off, c->req.len - c->req_off,
                 MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (!c->out_armed)
                lg_ep_set(g, i, true);
            return;
        }
        if (n <= 0) {
            lg_fail(g, i, LG_E_IO);
            return;
        }
        c->req_off += (size_t)n;
    }
    if (c->out_armed)
        lg_ep_set(g, i, false);
}

static void
lg_start(struct lg *g, int i, long long sched_us)
{
    struct lg_conn *c = &g->c[i];

    if (lg_build(g, c) != CORE_OK) {
        fprintf(stderr, "loadgen: could not build a request\n");
        g->fatal = true;
        lg_set_idle(g, i);
        return;
    }
    g->issued++;
    g->inflight++;
    c->state = LG_BUSY;
    c->rlen = 0;
    c->start_us = sched_us;
    lg_write(g, i);
}

static void
lg_done(struct lg *g, int i, int status)
{
    long long now = lg_now_us(), lat = now - g->c[i].start_us;

    if (lat < 0)
        lat = 0;
    g->completed++;
    g->status[status]++;
    g->hist[lg_hist_idx((unsigned long long)lat)]++;
    g->lat_sum_us += (double)lat;
    if (lat > g->lat_max_us)
        g->lat_max_us = lat;
    g->last_done_us = now;
    g->inflight--;
    g->c[i].backoff_ms = 0;
}

static void
lg_read(struct lg *g, int i)
{
    struct lg_conn *c = &g->c[i];
    ssize_t n;
    long len;
    int status = 0;
    bool close_after = false;

    if (c->rlen == LG_RBUF_MAX) {
        lg_fail(g, i, LG_E_PARSE);
        return;
    }
    n = recv(c->fd, c->rbuf + c->rlen, LG_RBUF_MAX - c->rlen, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        if (c->state == LG_BUSY) {
            lg_fail(g, i, n == 0 ? LG_E_CLOSED : LG_E_IO);
        } else {
            g->reconnects++;
            lg_close(g, i, 0);
        }
        return;
    }
    if (c->state != LG_BUSY) {
        lg_fail(g, i, LG_E_PARSE);
        return;
    }
    c->rlen += (size_t)n;
    len = lg_parse(c->rbuf, c->rlen, &status, &close_after);
    if (len == 0)
        return;
    if (len < 0 || (size_t)len != c->rlen) {
        lg_fail(g, i, LG_E_PARSE);
        return;
    }
    lg_done(g, i, status);
    c->state = LG_IDLE;
    c->rlen = 0;
    if (close_after) {
        g->reconnects++;
        lg_close(g, i, 0);
        return;
    }
    lg_set_idle(g, i);
}

static void
lg_event(struct lg *g, int i, uint32_t ev)
{
    struct lg_conn *c = &g->c[i];
    int err = 0;
    socklen_t el = sizeof(err);

    if (c->state == LG_CONNECTING) {
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
            err != 0 || (ev & (EPOLLERR | EPOLLHUP))) {
            lg_fail(g, i, LG_E_CONNECT);
            return;
        }
        c->backoff_ms = 0;
        lg_ep_set(g, i, false);
        lg_set_idle(g, i);
        return;
    }
    if ((ev & EPOLLOUT) && c->state == LG_BUSY)
        lg_write(g, i);
    if (c->state != LG_DOWN && (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        lg_read(g, i);
}

/* ------------------------------------------------------------------ */
/* run loop */

static void
lg_check_timeouts(struct lg *g, long long now)
{
    long i;

    for (i = 0; i < g->o.conns; i++) {
        if (g->c[i].state == LG_BUSY &&
            now - g->c[i].start_us > g->o.timeout_ms * 1000LL)
            lg_fail(g, (int)i, LG_E_TIMEOUT);
        else if (g->c[i].state == LG_CONNECTING &&
                 now - g->c[i].start_us > g->o.timeout_ms * 1000LL)
            lg_fail(g, (int)i, LG_E_CONNECT);
    }
}

/* Issue requests on idle connections as far as limits and --rate allow. */
static long long
lg_issue(struct lg *g, long long now)
{
    long long slot;
    int i;

    while (g->nidle > 0 && !g->fatal) {
        if (g->o.requests > 0 && (long long)g->issued >= g->o.requests)
            return -1;
        slot = now;
        if (g->o.rate > 0) {
            slot = g->t0_us + (long long)((double)g->issued * 1e6 / g->o.rate);
            if (slot > now)
                return slot;
        }
        i = g->idle[--g->nidle];
        g->c[i].in_idle = false;
        if (g->c[i].state != LG_IDLE)
            continue;
        lg_start(g, i, slot);
    }
    return -1;
}

static void
lg_run(struct lg *g)
{
    struct epoll_event evs[256];
    long long now, deadline, grace_end = 0, next_slot, next_check = 0, wait_us;
    long i;
    int n, k, timeout;
    bool stopping = false;

    g->t0_us = lg_now_us();
    deadline = g->t0_us + (long long)(g->o.duration_s * 1e6);
    for (i = 0; i < g->o.conns; i++) {
        g->c[i].start_us = g->t0_us;
        lg_connect(g, (int)i);
    }
    for (;;) {
        now = lg_now_us();
        if (!stopping &&
            (now >= deadline || g->fatal ||
             (g->o.requests > 0 && (long long)g->issued >= g->o.requests))) {
            stopping = true;
            grace_end = now + g->o.timeout_ms * 1000LL;
        }
        if (stopping && (g->inflight == 0 || now >= grace_end))
            break;
        next_slot = stopping ? -1 : lg_issue(g, now);
        for (i = 0; i < g->o.conns && !stopping && g->ndown > 0; i++) {
            if (g->c[i].state == LG_DOWN && g->c[i].retry_at_us <= now) {
                g->c[i].start_us = now;
                lg_connect(g, (int)i);
            }
        }
        if (now >= next_check) {
            lg_check_timeouts(g, now);
            next_check = now + 50000;
        }
        wait_us = (stopping ? grace_end : deadline) - now;
        if (wait_us > 50000)
            wait_us = 50000;
        if (next_slot > 0 && next_slot - now < wait_us)
            wait_us = next_slot - now;
        if (g->nidle > 0 && next_slot < 0 && !stopping)
            wait_us = 0;
        timeout = wait_us <= 0 ? 0 : (int)((wait_us + 999) / 1000);
        n = epoll_wait(g->ep, evs, 256, timeout);
        for (k = 0; k < n; k++)
            lg_event(g, (int)evs[k].data.u32, evs[k].events);
    }
    for (i = 0; i < g->o.conns; i++) {
        if (g->c[i].state == LG_BUSY)
            g->err[LG_E_TIMEOUT]++;
        lg_close(g, (int)i, 0);
    }
    if (!g->last_done_us)
        g->last_done_us = lg_now_us();
}

static void
lg_report(const struct lg *g)
{
    long long end = lg_now_us();
    double dur = (double)(end - g->t0_us) / 1e6;
    unsigned long long errors = 0;
    size_t i;
    int first = 1;

    for (i = 0; i < LG_E_N; i++)
        errors += g->err[i];
    printf("{\"url\":\"%s\",\"method\":\"%s\",\"platform\":\"%s\","
           "\"connections\":%ld,\"rate\":%g,\"requests\":%llu,"
           "\"completed\":%llu,\"duplicates\":%llu,\"responses\":{",
           g->o.url, g->o.method,
           g->o.platform == LG_WHATSAPP    ? "whatsapp"
           : g->o.platform == LG_MESSENGER ? "messenger"
                                           : "instagram",
           g->o.conns, g->o.rate, g->issued, g->completed, g->dups);
    for (i = 0; i < 600; i++) {
        if (g->status[i]) {
            printf("%s\"%zu\":%llu", first ? "" : ",", i, g->status[i]);
            first = 0;
        }
    }
    printf("},\"errors\":%llu,\"error_kinds\":{", errors);
    for (i = 0; i < LG_E_N; i++)
        printf("%s\"%s\":%llu", i ? "," : "", lg_err_name[i], g->err[i]);
    printf("},\"reconnects\":%llu,\"duration_s\":%.3f,\"rps\":%.1f,"
           "\"latency_ms\":{\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,"
           "\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f}}\n",
           g->reconnects, dur, dur > 0 ? (double)g->completed / dur : 0.0,
           g->completed ? g->lat_sum_us / (double)g->completed / 1000.0 : 0.0,
           lg_pct_ms(g, 0.50), lg_pct_ms(g, 0.90), lg_pct_ms(g, 0.99),
           lg_pct_ms(g, 0.999), (double)g->lat_max_us / 1000.0);
    fflush(stdout);
}

/* ------------------------------------------------------------------ */
/* options */

static void
lg_usage(FILE *f)
{
    fprintf(
        f,
        "usage: loadgen --url http://127.0.0.1:8080/webhooks/whatsapp "
        "[--secret S]\n"
        "       [--connections 64] [--duration 10] [--requests N] [--rate R]\n"
        "       [--dup-ratio 0.0] [--status-ratio 0.0 (status "
        "webhooks)]\n"
        "       [--users 1000] [--phone-id P] [--waba-id W]\n"
        "       [--platform whatsapp|messenger|instagram] [--text-bytes N]\n"
        "       [--path /healthz] [--method GET|POST] [--timeout-ms 10000]\n"
        "       [--seed N] [--run-id ID] [--header 'Name: value']...\n"
        "       [--body-file F  (POST F's bytes as they are, instead of "
        "webhooks)]\n"
        "Signed webhook load against a loopback server; prints one JSON "
        "line.\n");
}

static bool
lg_num(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v;

    if (!s)
        return false;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return false;
    *out = v;
    return true;
}

/* Parse http://host[:port]/path; the host must be loopback. */
static int
lg_parse_url(struct lg *g)
{
    const char *u = g->o.url, *h, *slash, *colon;
    char host[256];
    double port = 80;
    size_t hl;

    if (strncmp(u, "http://", 7) != 0) {
        fprintf(stderr, "loadgen: --url must start with http://\n");
        return -1;
    }
    h = u + 7;
    slash = strchr(h, '/');
    hl = slash ? (size_t)(slash - h) : strlen(h);
    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    colon = strchr(host, ':');
    if (colon) {
        if (!lg_num(colon + 1, 1, 65535, &port))
            return -1;
        host[colon - host] = '\0';
    }
    memset(&g->addr, 0, sizeof(g->addr));
    g->addr.sin_family = AF_INET;
    g->addr.sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        inet_pton(AF_INET, "127.0.0.1", &g->addr.sin_addr);
    else if (inet_pton(AF_INET, host, &g->addr.sin_addr) != 1 ||
             (ntohl(g->addr.sin_addr.s_addr) >> 24) != 127) {
        fprintf(stderr,
                "loadgen: refusing host %s: only 127.0.0.0/8 and "
                "localhost are allowed\n",
                host);
        return -1;
    }
    snprintf(g->host_hdr, sizeof(g->host_hdr), "%s:%d", host, (int)port);
    snprintf(g->target, sizeof(g->target), "%s",
             g->o.path ? g->o.path
             : slash   ? slash
                       : "/");
    return 0;
}

static int
lg_parse_args(int argc, char **argv, struct lg_opts *o)
{
    const char *a, *v;
    double d = 0;
    bool ok;
    int i;

    for (i = 1; i < argc; i += 2) { /* every option takes a value */
        a = argv[i];
        v = i + 1 < argc ? argv[i + 1] : NULL;
        ok = v != NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            lg_usage(stdout);
            return 1;
        } else if (strcmp(a, "--url") == 0) {
            o->url = v;
        } else if (strcmp(a, "--secret") == 0) {
            o->secret = v;
        } else if (strcmp(a, "--path") == 0) {
            o->path = v;
        } else if (strcmp(a, "--method") == 0) {
            o->method = v;
            ok = v && (strcmp(v, "GET") == 0 || strcmp(v, "POST") == 0);
        } else if (strcmp(a, "--body-file") == 0) {
            o->body_file = v;
        } else if (strcmp(a, "--header") == 0) {
            ok = v && o->nheaders < LG_MAX_HEADERS && strchr(v, ':') &&
                 !strpbrk(v, "\r\n");
            if (ok)
                o->headers[o->nheaders++] = v;
        } else if (strcmp(a, "--phone-id") == 0) {
            o->phone_id = v;
        } else if (strcmp(a, "--waba-id") == 0) {
            o->waba_id = v;
        } else if (strcmp(a, "--run-id") == 0) {
            o->run_id = v;
            ok = v && strlen(v) < 24 &&
                 strspn(v,
                        "abcdefghijklmnopqrstuvwxyz"
                        "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == strlen(v);
        } else if (strcmp(a, "--platform") == 0) {
            ok = v &&
                 (strcmp(v, "whatsapp") == 0 || strcmp(v, "messenger") == 0 ||
                  strcmp(v, "instagram") == 0);
            if (ok)
                o->platform = v[0] == 'w'   ? LG_WHATSAPP
                              : v[0] == 'm' ? LG_MESSENGER
                                            : LG_INSTAGRAM;
        } else if (strcmp(a, "--connections") == 0) {
            ok = lg_num(v, 1, LG_MAX_CONNS, &d);
            o->conns = (long)d;
        } else if (strcmp(a, "--duration") == 0) {
            ok = lg_num(v, 0.001, 3600, &o->duration_s);
        } else if (strcmp(a, "--requests") == 0) {
            ok = lg_num(v, 0, 1e12, &d);
            o->requests = (long long)d;
        } else if (strcmp(a, "--dup-ratio") == 0) {
            ok = lg_num(v, 0, 1, &o->dup_ratio);
        } else if (strcmp(a, "--status-ratio") == 0) {
            ok = lg_num(v, 0, 1, &o->status_ratio);
        } else if (strcmp(a, "--users") == 0) {
            ok = lg_num(v, 1, 1e9, &d);
            o->users = (long)d;
        } else if (strcmp(a, "--rate") == 0) {
            ok = lg_num(v, 0, 1e7, &o->rate);
        } else if (strcmp(a, "--timeout-ms") == 0) {
            ok = lg_num(v, 1, 600000, &d);
            o->timeout_ms = (long)d;
        } else if (strcmp(a, "--text-bytes") == 0) {
            ok = lg_num(v, 0, 8000, &d);
            o->text_bytes = (long)d;
        } else if (strcmp(a, "--seed") == 0) {
            ok = lg_num(v, 1, 1e18, &d);
            o->seed = (unsigned long long)d;
        } else {
            fprintf(stderr, "loadgen: unknown option %s\n", a);
            lg_usage(stderr);
            return -1;
        }
        if (!ok) {
            fprintf(stderr, "loadgen: bad or missing value for %s\n", a);
            return -1;
        }
    }
    if (!o->url) {
        fprintf(stderr, "loadgen: --url is required\n");
        return -1;
    }
    return 0;
}

/* Extra headers and the --body-file body, prepared once. */
static int
lg_prepare(struct lg *g)
{
    char buf[65536];
    size_t n, used = 0;
    FILE *f;
    int i;

    for (i = 0; i < g->o.nheaders; i++) {
        n = (size_t)snprintf(g->extra_hdrs + used, sizeof(g->extra_hdrs) - used,
                             "%s\r\n", g->o.headers[i]);
        if (n >= sizeof(g->extra_hdrs) - used) {
            fprintf(stderr, "loadgen: --header values too long\n");
            return -1;
        }
        used += n;
    }
    core_buf_init(&g->fixed_body, LG_REQ_MAX);
    if (!g->o.body_file)
        return 0;
    f = fopen(g->o.body_file, "rb");
    if (!f) {
        fprintf(stderr, "loadgen: could not open %s\n", g->o.body_file);
        return -1;
    }
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
        if (core_buf_add(&g->fixed_body, buf, n) != CORE_OK) {
            fprintf(stderr, "loadgen: %s is too large\n", g->o.body_file);
            fclose(f);
            return -1;
        }
    }
    fclose(f);
    return 0;
}

int
main(int argc, char **argv)
{
    static struct lg g;
    long i;
    int rc = 1;

    g.o.method = "POST";
    g.o.phone_id = "100000000000001";
    g.o.waba_id = "200000000000001";
    g.o.conns = 64;
    g.o.duration_s = 10;
    g.o.users = 1000;
    g.o.timeout_ms = 10000;
    g.o.seed = 0;
    g.ep = -1;
    rc = lg_parse_args(argc, argv, &g.o);
    if (rc != 0)
        return rc < 0 ? 2 : 0; /* 1: --help */
    rc = 1;
    if (lg_parse_url(&g) != 0)
        return 2;
    if (lg_prepare(&g) != 0)
        return 2;
    if (strcmp(g.o.method, "POST") == 0 && !g.o.secret && !g.o.body_file)
        fprintf(stderr, "loadgen: no --secret: sending unsigned webhooks\n");
    g.rng = g.o.seed ? g.o.seed
                     : (uint64_t)lg_now_us() ^ ((uint64_t)getpid() << 32);
    if (!g.rng)
        g.rng = 1;
    if (g.o.run_id)
        snprintf(g.run, sizeof(g.run), "%s", g.o.run_id);
    else
        snprintf(g.run, sizeof(g.run), "%08llx",
                 (unsigned long long)(lg_rand(&g) & 0xffffffffULL));
    g.start_ms = (long long)time(NULL) * 1000;
    g.c = calloc((size_t)g.o.conns, sizeof(*g.c));
    g.ndown = g.o.conns;
    g.idle = calloc((size_t)g.o.conns, sizeof(*g.idle));
    g.ep = epoll_create1(EPOLL_CLOEXEC);
    if (!g.c || !g.idle || g.ep < 0)
        goto out;
    for (i = 0; i < g.o.conns; i++) {
        g.c[i].fd = -1;
        core_buf_init(&g.c[i].req, LG_REQ_MAX);
        g.c[i].rbuf = malloc(LG_RBUF_MAX);
        if (!g.c[i].rbuf)
            goto out;
    }
    lg_run(&g);
    lg_report(&g);
    rc = g.fatal ? 1 : 0;
out:
    for (i = 0; g.c && i < g.o.conns; i++) {
        core_buf_done(&g.c[i].req);
        free(g.c[i].rbuf);
    }
    for (i = 0; i < LG_DUP_RING; i++)
        free(g.ring[i].data);
    core_buf_done(&g.fixed_body);
    free(g.c);
    free(g.idle);
    if (g.ep >= 0)
        close(g.ep);
    return rc;
}
