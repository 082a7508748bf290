/*
 * fakeup: one HTTP server that plays every upstream Parley talks to in tests
 * and benchmarks: an OpenAI-compatible LLM, the Meta Graph send API, the
 * Telegram Bot API, the Slack Web API, plus a webhook sink, with a control API
 * for fault injection and a record of every request. See README.md here.
 *
 * Design: libmicrohttpd, epoll, a pool of --threads polling threads. No MHD
 * thread ever sleeps: a response delay (latency, fault delay_ms) or a pause
 * between SSE events suspends the connection and the timer thread resumes it
 * when due, so thousands of slow answers cost no threads. Shared state (the
 * settings, fault queues, recorded requests, counters) is one struct behind
 * one mutex held only for short copies; settings are an immutable,
 * reference-counted snapshot swapped by /_control.
 *
 * Layout: this file holds the shared types, helpers, the timer, response and
 * SSE plumbing, recording, MHD glue and main; the handlers live in private
 * headers included once below (fakeup_llm.h, fakeup_platforms.h,
 * fakeup_control.h) because the Makefile builds one .c file per program.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/log.h"

#define FK_MAX_DELAY_MS       600000L
#define FK_BODY_MAX_DEFAULT   ((size_t)8 * 1024 * 1024)
#define FK_OUT_MAX            ((size_t)1024 * 1024 * 1024)
#define FK_RECORD_MAX_DEFAULT 20000u
#define FK_STREAM_PIECES      6

enum fk_kind {
    FK_LLM = 0,
    FK_GRAPH,
    FK_TELEGRAM,
    FK_SLACK,
    FK_WEBHOOK,
    FK_OTHER,
    FK_NKINDS
};

static const char *const fk_kind_name[FK_NKINDS] = { "llm",      "graph",
                                                     "telegram", "slack",
                                                     "webhook",  "other" };

/* Keys a fault object may carry, per kind (typos are refused by /_control). */
static const char *const fk_fault_keys[FK_NKINDS] = {
    " status retry_after body headers delay_ms malformed stream_error"
    " stream_abort reply finish_reason message type code ",
    " http code subcode message details type delay_ms malformed body"
    " headers ",
    " error_code description retry_after migrate_to_chat_id delay_ms"
    " malformed body headers ",
    " http error retry_after delay_ms malformed body headers ",
    " status delay_ms body headers ",
    " ",
};

/* Settings: immutable once published; /_control publishes a new copy. */
struct fk_conf {
    int refs;
    long latency_ms[FK_NKINDS];
    char *llm_reply;
    char *llm_api_key;
    bool llm_down;
    long llm_chunk_delay_ms;
    bool llm_sse_comments;
    bool llm_sse_crlf;
    bool llm_enforce_max_tokens;
    cJSON *llm_headers;
    char *graph_token;
    cJSON *graph_instagram_ids;
    char *telegram_token;
    char *slack_token;
    char *webhook_secret;
    bool record;
};

struct fk_timer_item {
    long long due_ms;
    struct MHD_Connection *conn;
};

/* Min-heap of suspended connections and the thread that resumes them. */
struct fk_timer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct fk_timer_item *heap;
    size_t len;
    size_t cap;
    bool stopping;
    pthread_t thread;
};

struct fk_record {
    unsigned long long seq;
    enum fk_kind kind;
    char *json;
};

struct fk_app {
    pthread_mutex_t mu;
    struct fk_conf *conf;
    struct fk_conf *defaults;
    cJSON *faults[FK_NKINDS];
    unsigned long long by_kind[FK_NKINDS];
    unsigned long long faults_used[FK_NKINDS];
    unsigned long long by_status[600];
    unsigned long long total;
    struct fk_record *ring;
    size_t ring_cap;
    size_t ring_head;
    size_t ring_len;
    unsigned long long next_seq;
    unsigned long long dropped;
    unsigned long long next_id;
    size_t body_max;
    struct fk_timer timer;
};

static struct fk_app fk;

/* One server-sent-event stream, produced event by event. */
struct fk_stream {
    struct core_buf text;
    size_t *ends;
    size_t nends;
    size_t ends_cap;
    size_t pos;
    size_t ev;
    long chunk_delay_ms;
    long long next_due_ms;
    long abort_after;
    bool no_delay;
    struct MHD_Connection *conn;
};

/* What a handler decided to answer. */
struct fk_out {
    unsigned int status;
    const char *ctype;
    struct core_buf body;
    cJSON *headers;
    long delay_ms;
    struct fk_stream *stream;
    cJSON *fault;
};

/* One request as the handlers see it. */
struct fk_call {
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    const char *query;
    const char *body;
    size_t body_len;
    cJSON *json;
    const struct fk_conf *conf;
    enum fk_kind kind;
};

/* Per-connection request state, created by the URI log callback. */
struct fk_req {
    char *uri;
    struct core_buf body;
    bool started;
    bool too_large;
    struct MHD_Response *resp;
    unsigned int status;
};

/* ------------------------------------------------------------------ */
/* small helpers */

static long long
fk_mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wall clock in milliseconds to the microsecond, for records: the bench
 * subtracts PostgreSQL's received_at (microseconds) from it, and whole
 * milliseconds were up to 1 ms of error in a latency of a few. */
static double
fk_wall_ms_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000) / 1000.0;
}

/* ... in whole milliseconds. */
static long long
fk_wall_ms(void)
{
    return (long long)fk_wall_ms_us();
}

static char *
fk_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

static bool
fk_word_in(const char *list, const char *word)
{
    size_t n = strlen(word);
    const char *p = list;

    while ((p = strstr(p, word)) != NULL) {
        if (p > list && p[-1] == ' ' && p[n] == ' ')
            return true;
        p += n;
    }
    return false;
}

static bool
fk_ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);

    return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

static size_t
fk_utf8_chars(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80)
            n++;
    return n;
}

/* Largest prefix length <= max that does not split a UTF-8 sequence. */
static size_t
fk_utf8_cut(const char *s, size_t len, size_t max)
{
    if (max >= len)
        return len;
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80)
        max--;
    return max;
}

static const char *
fk_jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static long
fk_jlong(const cJSON *o, const char *key, long dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    if (!cJSON_IsNumber(v))
        return dflt;
    if (v->valuedouble > (double)LONG_MAX || v->valuedouble < (double)LONG_MIN)
        return dflt;
    return (long)v->valuedouble;
}

static bool
fk_jbool(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

/* Text of a string or number item into buf; false when absent/other. */
static bool
fk_jtext(const cJSON *o, const char *key, char *buf, size_t size)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    if (cJSON_IsString(v)) {
        snprintf(buf, size, "%s", v->valuestring);
        return true;
    }
    if (cJSON_IsNumber(v)) {
        snprintf(buf, size, "%ld", (long)v->valuedouble);
        return true;
    }
    return false;
}

static unsigned long long
fk_next_id(void)
{
    unsigned long long id;

    pthread_mutex_lock(&fk.mu);
    id = ++fk.next_id;
    pthread_mutex_unlock(&fk.mu);
    return id;
}

/* Replace bytes that are not valid UTF-8 by '?', so recorded JSON parses. */
static void
fk_utf8_sanitize(char *s, size_t len)
{
    size_t i = 0, k, need;
    unsigned char c;

    while (i < len) {
        c = (unsigned char)s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            need = 1;
        else if ((c & 0xF0) == 0xE0)
            need = 2;
        else if (c >= 0xF0 && c <= 0xF4)
            need = 3;
        else
            need = 0;
        for (k = 1; need && k <= need; k++)
            if (i + k >= len || ((unsigned char)s[i + k] & 0xC0) != 0x80)
                break;
        if (!need || k <= need) {
            s[i++] = '?';
            continue;
        }
        i += need + 1;
    }
}

/* ------------------------------------------------------------------ */
/* settings */

static void
fk_conf_free(struct fk_conf *c)
{
    if (!c)
        return;
    free(c->llm_reply);
    free(c->llm_api_key);
    cJSON_Delete(c->llm_headers);
    free(c->graph_token);
    cJSON_Delete(c->graph_instagram_ids);
    free(c->telegram_token);
    free(c->slack_token);
    free(c->webhook_secret);
    free(c);
}

static struct fk_conf *
fk_conf_dup(const struct fk_conf *src)
{
    struct fk_conf *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    *c = *src;
    c->refs = 1;
    c->llm_reply = fk_strdup(src->llm_reply);
    c->llm_api_key = fk_strdup(src->llm_api_key);
    c->llm_headers =
        src->llm_headers ? cJSON_Duplicate(src->llm_headers, 1) : NULL;
    c->graph_token = fk_strdup(src->graph_token);
    c->graph_instagram_ids = src->graph_instagram_ids
                                 ? cJSON_Duplicate(src->graph_instagram_ids, 1)
                                 : NULL;
    c->telegram_token = fk_strdup(src->telegram_token);
    c->slack_token = fk_strdup(src->slack_token);
    c->webhook_secret = fk_strdup(src->webhook_secret);
    return c;
}

static struct fk_conf *
fk_conf_acquire(void)
{
    struct fk_conf *c;

    pthread_mutex_lock(&fk.mu);
    c = fk.conf;
    c->refs++;
    pthread_mutex_unlock(&fk.mu);
    return c;
}

static void
fk_conf_release(struct fk_conf *c)
{
    bool last;

    if (!c)
        return;
    pthread_mutex_lock(&fk.mu);
    last = --c->refs == 0;
    pthread_mutex_unlock(&fk.mu);
    if (last)
        fk_conf_free(c);
}

/* Publish c as the current settings; caller holds fk.mu. */
static void
fk_conf_swap_locked(struct fk_conf *c)
{
    struct fk_conf *old = fk.conf;

    fk.conf = c;
    if (old && --old->refs == 0)
        fk_conf_free(old);
}

static cJSON *
fk_fault_pop(enum fk_kind k)
{
    cJSON *f = NULL;

    pthread_mutex_lock(&fk.mu);
    if (cJSON_GetArraySize(fk.faults[k]) > 0) {
        f = cJSON_DetachItemFromArray(fk.faults[k], 0);
        fk.faults_used[k]++;
    }
    pthread_mutex_unlock(&fk.mu);
    return f;
}

/* ------------------------------------------------------------------ */
/* timer thread: resumes suspended connections when due */

static void
fk_timer_swap(struct fk_timer *t, size_t a, size_t b)
{
    struct fk_timer_item x = t->heap[a];

    t->heap[a] = t->heap[b];
    t->heap[b] = x;
}

static void
fk_timer_pop_locked(struct fk_timer *t)
{
    size_t i = 0, l, r, m;

    t->heap[0] = t->heap[--t->len];
    for (;;) {
        l = 2 * i + 1;
        r = l + 1;
        m = i;
        if (l < t->len && t->heap[l].due_ms < t->heap[m].due_ms)
            m = l;
        if (r < t->len && t->heap[r].due_ms < t->heap[m].due_ms)
            m = r;
        if (m == i)
            break;
        fk_timer_swap(t, i, m);
        i = m;
    }
}

/*
 * Schedule conn (already suspended by the caller) to be resumed at due_ms.
 * Returns false when the timer is stopping or out of memory: the caller
 * then resumes the connection itself.
 */
static bool
fk_timer_add(struct fk_timer *t, struct MHD_Connection *conn, long long due_ms)
{
    struct fk_timer_item *h;
    size_t i, ncap;
    bool ok = false;

    pthread_mutex_lock(&t->mu);
    if (t->stopping)
        goto out;
    if (t->len == t->cap) {
        ncap = t->cap ? t->cap * 2 : 256;
        h = realloc(t->heap, ncap * sizeof(*h));
        if (!h)
            goto out;
        t->heap = h;
        t->cap = ncap;
    }
    i = t->len++;
    t->heap[i].due_ms = due_ms;
    t->heap[i].conn = conn;
    while (i > 0 && t->heap[(i - 1) / 2].due_ms > t->heap[i].due_ms) {
        fk_timer_swap(t, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    pthread_cond_signal(&t->cv);
    ok = true;
out:
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static bool
fk_timer_stopping(struct fk_timer *t)
{
    bool s;

    pthread_mutex_lock(&t->mu);
    s = t->stopping;
    pthread_mutex_unlock(&t->mu);
    return s;
}

static void *
fk_timer_main(void *arg)
{
    struct fk_timer *t = arg;
    struct MHD_Connection *conn;
    struct timespec ts;
    long long now, due;

    pthread_mutex_lock(&t->mu);
    for (;;) {
        if (t->len == 0) {
            if (t->stopping)
                break;
            pthread_cond_wait(&t->cv, &t->mu);
            continue;
        }
        now = fk_mono_ms();
        due = t->heap[0].due_ms;
        if (due <= now || t->stopping) {
            conn = t->heap[0].conn;
            fk_timer_pop_locked(t);
            pthread_mutex_unlock(&t->mu);
            MHD_resume_connection(conn);
            pthread_mutex_lock(&t->mu);
            continue;
        }
        ts.tv_sec = (time_t)(due / 1000);
        ts.tv_nsec = (long)(due % 1000) * 1000000L;
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static int
fk_timer_start(struct fk_timer *t)
{
    pthread_condattr_t ca;

    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cv, &ca);
    pthread_condattr_destroy(&ca);
    return pthread_create(&t->thread, NULL, fk_timer_main, t);
}

/* Resume every suspended connection and stop; no new delays after this.
 * The HTTP threads still ask fk_timer_stopping() until the daemon is
 * stopped, so the lock outlives this: fk_timer_free(), after that. */
static void
fk_timer_stop(struct fk_timer *t)
{
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
}

static void
fk_timer_free(struct fk_timer *t)
{
    free(t->heap);
    t->heap = NULL;
    pthread_cond_destroy(&t->cv);
    pthread_mutex_destroy(&t->mu);
}

/* ------------------------------------------------------------------ */
/* responses */

static void
fk_out_init(struct fk_out *o)
{
    memset(o, 0, sizeof(*o));
    o->status = 200;
    o->ctype = "application/json";
    core_buf_init(&o->body, FK_OUT_MAX);
}

static void fk_stream_free(struct fk_stream *s);

static void
fk_out_done(struct fk_out *o)
{
    core_buf_done(&o->body);
    cJSON_Delete(o->headers);
    cJSON_Delete(o->fault);
    fk_stream_free(o->stream);
    o->headers = NULL;
    o->fault = NULL;
    o->stream = NULL;
}

/* Answer the JSON obj (consumed). */
static void
fk_out_json(struct fk_out *o, unsigned int status, cJSON *obj)
{
    char *s = obj ? cJSON_PrintUnformatted(obj) : NULL;

    o->status = status;
    o->ctype = "application/json";
    core_buf_reset(&o->body);
    if (s)
        core_buf_adds(&o->body, s);
    else
        core_buf_adds(&o->body, "{}");
    free(s);
    cJSON_Delete(obj);
}

static void
fk_out_text(struct fk_out *o, unsigned int status, const char *ctype,
            const char *text)
{
    o->status = status;
    o->ctype = ctype;
    core_buf_reset(&o->body);
    core_buf_adds(&o->body, text);
}

static void
fk_out_header(struct fk_out *o, const char *name, const char *value)
{
    if (!o->headers)
        o->headers = cJSON_CreateObject();
    cJSON_DeleteItemFromObjectCaseSensitive(o->headers, name);
    cJSON_AddStringToObject(o->headers, name, value);
}

/* Add every string member of obj as a response header. */
static void
fk_out_headers_from(struct fk_out *o, const cJSON *obj)
{
    const cJSON *h;
    char num[32];

    cJSON_ArrayForEach(h, obj)
    {
        if (cJSON_IsString(h)) {
            fk_out_header(o, h->string, h->valuestring);
        } else if (cJSON_IsNumber(h)) {
            snprintf(num, sizeof(num), "%ld", (long)h->valuedouble);
            fk_out_header(o, h->string, num);
        }
    }
}

/* Common fault parts: delay and extra headers; the fault is kept for the
 * record. */
static void
fk_out_take_fault(struct fk_out *o, cJSON *fault)
{
    long d;

    o->fault = fault;
    if (!fault)
        return;
    d = fk_jlong(fault, "delay_ms", 0);
    if (d > 0)
        o->delay_ms += d > FK_MAX_DELAY_MS ? FK_MAX_DELAY_MS : d;
    fk_out_headers_from(o, cJSON_GetObjectItemCaseSensitive(fault, "headers"));
}

/* If the fault carries "body" (string or JSON), answer it with status. */
static bool
fk_out_fault_body(struct fk_out *o, const cJSON *fault, unsigned int status)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(fault, "body");

    if (!b)
        return false;
    if (cJSON_IsString(b))
        fk_out_text(o, status, "application/json", b->valuestring);
    else
        fk_out_json(o, status, cJSON_Duplicate(b, 1));
    return true;
}

/* 200 with a JSON document cut in the middle. */
static void
fk_out_malformed(struct fk_out *o, const char *prefix)
{
    fk_out_text(o, 200, "application/json", prefix);
}

/* ------------------------------------------------------------------ */
/* SSE streams */

static void
fk_stream_free(struct fk_stream *s)
{
    if (!s)
        return;
    core_buf_done(&s->text);
    free(s->ends);
    free(s);
}

static struct fk_stream *
fk_stream_new(void)
{
    struct fk_stream *s = calloc(1, sizeof(*s));

    if (!s)
        return NULL;
    core_buf_init(&s->text, FK_OUT_MAX);
    s->abort_after = -1;
    return s;
}

/* The text appended so far completes an event: remember where it ends. */
static void
fk_stream_mark(struct fk_stream *s)
{
    size_t *e, ncap;

    if (s->nends == s->ends_cap) {
        ncap = s->ends_cap ? s->ends_cap * 2 : 16;
        e = realloc(s->ends, ncap * sizeof(*e));
        if (!e)
            return;
        s->ends = e;
        s->ends_cap = ncap;
    }
    s->ends[s->nends++] = s->text.len;
}

/* Append one whole event (already framed). */
static void
fk_stream_event(struct fk_stream *s, const char *text)
{
    if (core_buf_adds(&s->text, text) == CORE_OK)
        fk_stream_mark(s);
}

/* Append s[0..n) as a JSON string literal (quotes included). */
static void
fk_json_escape(struct core_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t i, start = 0;
    unsigned char ch;
    char esc[8];

    core_buf_add(b, "\"", 1);
    for (i = 0; i < n; i++) {
        ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        core_buf_add(b, s + start, i - start);
        start = i + 1;
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            esc[2] = '\0';
        } else if (ch == '\n') {
            memcpy(esc, "\\n", 3);
        } else {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            esc[6] = '\0';
        }
        core_buf_adds(b, esc);
    }
    core_buf_add(b, s + start, n - start);
    core_buf_add(b, "\"", 1);
}

/* "data: <json>" + blank line, obj consumed. */
static void
fk_stream_data(struct fk_stream *s, cJSON *obj, bool crlf)
{
    char *j = cJSON_PrintUnformatted(obj);
    struct core_buf b;

    core_buf_init(&b, FK_OUT_MAX);
    core_buf_printf(&b, "data: %s%s", j ? j : "{}", crlf ? "\r\n\r\n" : "\n\n");
    if (b.data)
        fk_stream_event(s, b.data);
    core_buf_done(&b);
    free(j);
    cJSON_Delete(obj);
}

static ssize_t
fk_stream_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct fk_stream *s = cls;
    const union MHD_ConnectionInfo *ci;
    size_t n, take;

    (void)pos;
    if (s->abort_after >= 0 && s->ev >= (size_t)s->abort_after) {
        /* MHD 0.9.75 (epoll) leaves the socket open until the connection
         * timeout after END_WITH_ERROR; shut it down so the client sees the
         * abort at once. MHD still owns and closes the descriptor. */
        ci =
            MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (ci)
            shutdown(ci->connect_fd, SHUT_RDWR);
        return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    if (s->ev >= s->nends)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (s->chunk_delay_ms > 0 && s->ev > 0 && !s->no_delay &&
        s->pos == s->ends[s->ev - 1] && fk_mono_ms() < s->next_due_ms) {
        if (fk_timer_stopping(&fk.timer)) {
            s->no_delay = true;
        } else {
            MHD_suspend_connection(s->conn);
            if (!fk_timer_add(&fk.timer, s->conn, s->next_due_ms)) {
                s->no_delay = true;
                MHD_resume_connection(s->conn);
            }
            return 0;
        }
    }
    /* Without pauses, hand over as many events as fit (fewer, larger
     * chunks, as a fast server flushes); with pauses, one event per call. */
    for (n = 0; n < max && s->ev < s->nends;) {
        take = s->ends[s->ev] - s->pos;
        if (take > max - n)
            take = max - n;
        memcpy(buf + n, s->text.data + s->pos, take);
        n += take;
        s->pos += take;
        if (s->pos < s->ends[s->ev])
            break;
        s->ev++;
        s->next_due_ms = fk_mono_ms() + s->chunk_delay_ms;
        if ((s->chunk_delay_ms > 0 && !s->no_delay) ||
            (s->abort_after >= 0 && s->ev >= (size_t)s->abort_after))
            break;
    }
    return (ssize_t)n;
}

static void
fk_stream_free_cb(void *cls)
{
    fk_stream_free(cls);
}

/* ------------------------------------------------------------------ */
/* handlers: one file per family, parts of this translation unit */

#include "tests/fakes/fakeup_llm.h"
#include "tests/fakes/fakeup_platforms.h"

/* ------------------------------------------------------------------ */
/* recording */

static enum MHD_Result
fk_values_cb(void *cls, enum MHD_ValueKind kind, const char *key,
             const char *value)
{
    cJSON *obj = cls;
    char name[256];
    size_t i;

    if (kind == MHD_HEADER_KIND) {
        for (i = 0; key[i] && i < sizeof(name) - 1; i++)
            name[i] =
                (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
        name[i] = '\0';
    } else {
        snprintf(name, sizeof(name), "%s", key);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, name);
    cJSON_AddStringToObject(obj, name, value ? value : "");
    return MHD_YES;
}

/*
 * JSON of one request; fk_record puts "seq" in front under the lock. Takes
 * over c->json (the handler is done with it).
 */
static char *
fk_record_json(struct fk_call *c, const struct fk_out *o)
{
    cJSON *r = cJSON_CreateObject(), *h;
    char *raw, *s;

    cJSON_AddNumberToObject(r, "ts_ms", fk_wall_ms_us());
    cJSON_AddStringToObject(r, "kind", fk_kind_name[c->kind]);
    cJSON_AddStringToObject(r, "method", c->method);
    cJSON_AddStringToObject(r, "path", c->path);
    cJSON_AddStringToObject(r, "query", c->query);
    h = cJSON_AddObjectToObject(r, "args");
    MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, fk_values_cb, h);
    h = cJSON_AddObjectToObject(r, "headers");
    MHD_get_connection_values(c->conn, MHD_HEADER_KIND, fk_values_cb, h);
    if (c->json) {
        cJSON_AddItemToObject(r, "body", c->json);
        c->json = NULL;
    } else if (c->body_len) {
        raw = strndup(c->body, c->body_len);
        if (raw) {
            fk_utf8_sanitize(raw, strlen(raw));
            cJSON_AddStringToObject(r, "body", raw);
        }
        free(raw);
    } else {
        cJSON_AddNullToObject(r, "body");
    }
    cJSON_AddNumberToObject(r, "status", o->status);
    cJSON_AddNumberToObject(r, "delay_ms", (double)o->delay_ms);
    if (o->fault)
        cJSON_AddItemToObject(r, "fault", cJSON_Duplicate(o->fault, 1));
    else
        cJSON_AddNullToObject(r, "fault");
    s = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    if (s && (s[0] != '{' || s[1] == '}')) {
        free(s);
        s = NULL;
    }
    return s;
}

static void
fk_record(struct fk_call *c, const struct fk_out *o)
{
    char *json = c->conf->record && fk.ring_cap ? fk_record_json(c, o) : NULL;
    struct core_buf b;
    struct fk_record *slot;

    core_buf_init(&b, FK_OUT_MAX);
    pthread_mutex_lock(&fk.mu);
    fk.total++;
    fk.by_kind[c->kind]++;
    if (o->status < 600)
        fk.by_status[o->status]++;
    if (!json)
        goto out;
    if (core_buf_printf(&b, "{\"seq\":%llu,%s", fk.next_seq + 1, json + 1) !=
        CORE_OK)
        goto out;
    if (fk.ring_len == fk.ring_cap) {
        slot = &fk.ring[fk.ring_head];
        free(slot->json);
        fk.ring_head = (fk.ring_head + 1) % fk.ring_cap;
        fk.ring_len--;
        fk.dropped++;
    }
    slot = &fk.ring[(fk.ring_head + fk.ring_len) % fk.ring_cap];
    slot->seq = ++fk.next_seq;
    slot->kind = c->kind;
    slot->json = core_buf_take(&b);
    fk.ring_len++;
out:
    pthread_mutex_unlock(&fk.mu);
    core_buf_done(&b);
    free(json);
}

static void
fk_records_clear_locked(void)
{
    size_t i;

    for (i = 0; i < fk.ring_len; i++) {
        free(fk.ring[(fk.ring_head + i) % fk.ring_cap].json);
    }
    fk.ring_head = fk.ring_len = 0;
}

/* ------------------------------------------------------------------ */
/* control API */

#include "tests/fakes/fakeup_control.h"

/* ------------------------------------------------------------------ */
/* MHD glue */

static bool
fk_is_graph_path(const char *p)
{
    const char *s;

    if (p[0] != '/' || p[1] != 'v' || p[2] < '0' || p[2] > '9')
        return false;
    for (s = p + 2; (*s >= '0' && *s <= '9') || *s == '.'; s++)
        ;
    if (*s != '/' || !s[1])
        return false;
    s = strchr(s + 1, '/');
    return s && strcmp(s, "/messages") == 0;
}

static enum fk_kind
fk_route(const char *path)
{
    if (fk_ends_with(path, "/chat/completions"))
        return FK_LLM;
    if (strncmp(path, "/bot", 4) == 0 && strchr(path + 4, '/'))
        return FK_TELEGRAM;
    if (strncmp(path, "/api/", 5) == 0)
        return FK_SLACK;
    if (strncmp(path, "/webhooks/", 10) == 0)
        return FK_WEBHOOK;
    if (fk_is_graph_path(path))
        return FK_GRAPH;
    return FK_OTHER;
}

static struct MHD_Response *
fk_out_response(struct fk_out *o, struct MHD_Connection *conn)
{
    struct MHD_Response *r;
    const cJSON *h;
    size_t len = o->body.len;
    char *data;

    if (o->stream) {
        o->stream->conn = conn;
        r = MHD_create_response_from_callback(
            MHD_SIZE_UNKNOWN, (size_t)16 * 1024, fk_stream_reader, o->stream,
            fk_stream_free_cb);
        if (r)
            o->stream = NULL;
    } else {
        data = core_buf_take(&o->body);
        if (!data)
            return NULL;
        r = MHD_create_response_from_buffer_with_free_callback(len, data, free);
        if (!r)
            free(data);
    }
    if (!r)
        return NULL;
    MHD_add_response_header(r, "Content-Type", o->ctype);
    cJSON_ArrayForEach(h, o->headers)
        MHD_add_response_header(r, h->string, h->valuestring);
    return r;
}

static void *
fk_uri_cb(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct fk_req *rq = calloc(1, sizeof(*rq));

    (void)cls;
    (void)conn;
    if (!rq)
        return NULL;
    rq->uri = strdup(uri ? uri : "");
    if (!rq->uri) {
        free(rq);
        return NULL;
    }
    core_buf_init(&rq->body, fk.body_max);
    return rq;
}

static void
fk_completed_cb(void *cls, struct MHD_Connection *conn, void **req_cls,
                enum MHD_RequestTerminationCode toe)
{
    struct fk_req *rq = *req_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (!rq)
        return;
    if (rq->resp)
        MHD_destroy_response(rq->resp);
    core_buf_done(&rq->body);
    free(rq->uri);
    free(rq);
    *req_cls = NULL;
}

static enum MHD_Result
fk_queue(struct MHD_Connection *conn, unsigned int status,
         struct MHD_Response *r)
{
    enum MHD_Result ret;

    if (!r)
        return MHD_NO;
    ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

/* The request is complete: answer it now or after out.delay_ms. */
static enum MHD_Result
fk_dispatch(struct MHD_Connection *conn, struct fk_req *rq, const char *url,
            const char *method)
{
    struct fk_call c;
    struct fk_out o;
    struct MHD_Response *r;
    const char *q = strchr(rq->uri, '?');
    struct fk_conf *cf = NULL;
    enum MHD_Result ret;
    long long due;

    fk_out_init(&o);
    if (strncmp(url, "/_", 2) == 0 || strcmp(url, "/healthz") == 0) {
        ctl_handle(conn, method, url, rq->body.data, rq->body.len, &o);
        ret = fk_queue(conn, o.status, fk_out_response(&o, conn));
        goto out;
    }
    memset(&c, 0, sizeof(c));
    cf = fk_conf_acquire();
    c.conn = conn;
    c.method = method;
    c.path = url;
    c.query = q ? q + 1 : "";
    c.body = rq->body.data ? rq->body.data : "";
    c.body_len = rq->body.len;
    c.json = c.body_len ? cJSON_ParseWithLength(c.body, c.body_len) : NULL;
    c.conf = cf;
    c.kind = fk_route(url);
    o.delay_ms = cf->latency_ms[c.kind];
    switch (c.kind) {
    case FK_LLM:
        llm_handle(&c, &o);
        break;
    case FK_GRAPH:
        graph_handle(&c, &o);
        break;
    case FK_TELEGRAM:
        tg_handle(&c, &o);
        break;
    case FK_SLACK:
        slack_handle(&c, &o);
        break;
    case FK_WEBHOOK:
        hook_handle(&c, &o);
        break;
    default:
        fk_out_text(&o, 404, "application/json",
                    "{\"error\":{\"message\":"
                    "\"fakeup: no such endpoint\",\"type\":\"not_found\"}}");
    }
    fk_record(&c, &o);
    cJSON_Delete(c.json);
    r = fk_out_response(&o, conn);
    if (r && o.delay_ms > 0 && !fk_timer_stopping(&fk.timer)) {
        rq->resp = r;
        rq->status = o.status;
        due = fk_mono_ms() + o.delay_ms;
        MHD_suspend_connection(conn);
        if (!fk_timer_add(&fk.timer, conn, due))
            MHD_resume_connection(conn);
        ret = MHD_YES;
        goto out;
    }
    ret = fk_queue(conn, o.status, r);
out:
    fk_conf_release(cf);
    fk_out_done(&o);
    return ret;
}

static enum MHD_Result
fk_access(void *cls, struct MHD_Connection *conn, const char *url,
          const char *method, const char *version, const char *upload,
          size_t *upload_size, void **req_cls)
{
    struct fk_req *rq = *req_cls;
    struct MHD_Response *r;
    const char *cl;
    char *end;
    unsigned long long n;

    (void)cls;
    (void)version;
    if (!rq)
        return MHD_NO;
    if (rq->resp) { /* resumed after a delay */
        r = rq->resp;
        rq->resp = NULL;
        return fk_queue(conn, rq->status, r);
    }
    if (!rq->started) {
        rq->started = true;
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         "Content-Length");
        if (cl) {
            errno = 0;
            n = strtoull(cl, &end, 10);
            if (!errno && !*end && n > fk.body_max) {
                r = MHD_create_response_from_buffer(
                    25, (void *)"{\"error\":\"body too large\"}",
                    MHD_RESPMEM_PERSISTENT);
                return fk_queue(conn, 413, r);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!rq->too_large &&
            core_buf_add(&rq->body, upload, *upload_size) != CORE_OK) {
            rq->too_large = true;
            core_buf_done(&rq->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->too_large) {
        r = MHD_create_response_from_buffer(
            25, (void *)"{\"error\":\"body too large\"}",
            MHD_RESPMEM_PERSISTENT);
        return fk_queue(conn, 413, r);
    }
    return fk_dispatch(conn, rq, url, method);
}

/* ------------------------------------------------------------------ */
/* main */

struct fk_opts {
    const char *host;
    long port;
    long threads;
    long record_max;
    long body_max;
    bool stdin_watch;
};

static void
fk_usage(FILE *f)
{
    fprintf(
        f,
        "usage: fakeup [--port N] [--host 127.0.0.1] [--threads N]\n"
        "              [--record-max N] [--no-record] [--body-max BYTES]\n"
        "              [--llm-latency-ms N] [--graph-latency-ms N]\n"
        "              [--llm-reply TEXT] [--llm-api-key KEY]\n"
        "              [--webhook-secret S] [--stdin-watch]\n"
        "Fake LLM / Graph / Telegram / Slack upstream for Parley tests.\n"
        "Prints port=N on stdout once listening. See tests/fakes/README.md.\n");
}

static bool
fk_num(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v;

    if (!s)
        return false;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int
fk_parse_args(int argc, char **argv, struct fk_opts *op, struct fk_conf *dc)
{
    const char *a, *v;
    int i;
    bool ok;

    for (i = 1; i < argc; i++) {
        a = argv[i];
        v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fk_usage(stdout);
            return 1;
        } else if (strcmp(a, "--no-record") == 0) {
            dc->record = false;
            continue;
        } else if (strcmp(a, "--stdin-watch") == 0) {
            op->stdin_watch = true;
            continue;
        } else if (strcmp(a, "--port") == 0) {
            ok = fk_num(v, 0, 65535, &op->port);
        } else if (strcmp(a, "--host") == 0) {
            op->host = v;
            ok = v != NULL;
        } else if (strcmp(a, "--threads") == 0) {
            ok = fk_num(v, 1, 64, &op->threads);
        } else if (strcmp(a, "--record-max") == 0) {
            ok = fk_num(v, 0, 10000000, &op->record_max);
        } else if (strcmp(a, "--body-max") == 0) {
            ok = fk_num(v, 1024, 1L << 30, &op->body_max);
        } else if (strcmp(a, "--llm-latency-ms") == 0) {
            ok = fk_num(v, 0, FK_MAX_DELAY_MS, &dc->latency_ms[FK_LLM]);
        } else if (strcmp(a, "--graph-latency-ms") == 0) {
            ok = fk_num(v, 0, FK_MAX_DELAY_MS, &dc->latency_ms[FK_GRAPH]);
        } else if (strcmp(a, "--llm-reply") == 0) {
            ok = v && (dc->llm_reply = strdup(v)) != NULL;
        } else if (strcmp(a, "--llm-api-key") == 0) {
            ok = v && (dc->llm_api_key = strdup(v)) != NULL;
        } else if (strcmp(a, "--webhook-secret") == 0) {
            ok = v && (dc->webhook_secret = strdup(v)) != NULL;
        } else {
            fprintf(stderr, "fakeup: unknown option %s\n", a);
            fk_usage(stderr);
            return -1;
        }
        if (!ok) {
            fprintf(stderr, "fakeup: bad or missing value for %s\n", a);
            return -1;
        }
        i++;
    }
    return 0;
}

/* Default settings: Groq-style rate-limit headers on every LLM answer. */
static struct fk_conf *
fk_conf_defaults(void)
{
    struct fk_conf *c = calloc(1, sizeof(*c));

    if (!c)
        return NULL;
    c->refs = 1;
    c->record = true;
    c->llm_headers = cJSON_Parse("{\"x-ratelimit-limit-requests\":\"14400\","
                                 "\"x-ratelimit-limit-tokens\":\"6000\","
                                 "\"x-ratelimit-remaining-requests\":\"14399\","
                                 "\"x-ratelimit-remaining-tokens\":\"5900\","
                                 "\"x-ratelimit-reset-requests\":\"6s\","
                                 "\"x-ratelimit-reset-tokens\":\"1s\"}");
    return c;
}

static int
fk_listen(const char *host, long port, long *bound)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int fd, one = 1;
    char err[128];

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "fakeup: --host must be an IPv4 address\n");
        return -1;
    }
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        listen(fd, 4096) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        if (strerror_r(errno, err, sizeof(err)) != 0)
            snprintf(err, sizeof(err), "errno %d", errno);
        fprintf(stderr, "fakeup: could not listen on %s:%ld: %s\n", host, port,
                err);
        close(fd);
        return -1;
    }
    *bound = ntohs(sa.sin_port);
    return fd;
}

/* With --stdin-watch the fake exits when its parent closes our stdin. */
static void *
fk_stdin_main(void *arg)
{
    char buf[256];

    (void)arg;
    while (read(STDIN_FILENO, buf, sizeof(buf)) > 0)
        ;
    kill(getpid(), SIGTERM);
    return NULL;
}

int
main(int argc, char **argv)
{
    struct fk_opts op = {
        .host = "127.0.0.1",
        .threads = 2,
        .record_max = (long)FK_RECORD_MAX_DEFAULT,
        .body_max = (long)FK_BODY_MAX_DEFAULT,
    };
    struct MHD_Daemon *d = NULL;
    struct fk_conf *dc = fk_conf_defaults();
    sigset_t set;
    pthread_t tid;
    long bound = 0;
    int fd = -1, sig = 0, rc = 1, i;
    unsigned int flags;

    rc = dc ? fk_parse_args(argc, argv, &op, dc) : -1;
    if (rc != 0) {
        fk_conf_free(dc);
        return rc < 0 ? 2 : 0; /* 1: --help */
    }
    rc = 1;
    pthread_mutex_init(&fk.mu, NULL);
    fk.defaults = dc;
    fk.conf = fk_conf_dup(dc);
    fk.body_max = (size_t)op.body_max;
    fk.ring_cap = (size_t)op.record_max;
    fk.ring = fk.ring_cap ? calloc(fk.ring_cap, sizeof(*fk.ring)) : NULL;
    for (i = 0; i < FK_NKINDS; i++)
        fk.faults[i] = cJSON_CreateArray();
    if (!fk.conf || (fk.ring_cap && !fk.ring))
        goto out;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (fk_timer_start(&fk.timer) != 0)
        goto out;
    fd = fk_listen(op.host, op.port, &bound);
    if (fd < 0)
        goto stop_timer;
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
            MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO | MHD_USE_ERROR_LOG;
    d = MHD_start_daemon(
        flags, 0, NULL, NULL, fk_access, NULL, MHD_OPTION_LISTEN_SOCKET, fd,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)op.threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)20000,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
        MHD_OPTION_URI_LOG_CALLBACK, fk_uri_cb, NULL,
        MHD_OPTION_NOTIFY_COMPLETED, fk_completed_cb, NULL, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "fakeup: could not start the HTTP server\n");
        close(fd);
        goto stop_timer;
    }
    /* MHD owns and closes the listening socket from here on. */
    printf("port=%ld\n", bound);
    fflush(stdout);
    log_info("fakeup listening", "addr=%s:%ld threads=%ld record_max=%ld",
             op.host, bound, op.threads, op.record_max);
    if (op.stdin_watch && pthread_create(&tid, NULL, fk_stdin_main, NULL) == 0)
        pthread_detach(tid);
    sigdelset(&set, SIGPIPE);
    sigwait(&set, &sig);
    log_info("fakeup stopping", "signal=%d", sig);
    rc = 0;
stop_timer:
    fk_timer_stop(&fk.timer);
    if (d)
        MHD_stop_daemon(d);
    fk_timer_free(&fk.timer);
out:
    pthread_mutex_lock(&fk.mu);
    if (fk.ring)
        fk_records_clear_locked();
    pthread_mutex_unlock(&fk.mu);
    free(fk.ring);
    for (i = 0; i < FK_NKINDS; i++)
        cJSON_Delete(fk.faults[i]);
    fk_conf_free(fk.conf);
    fk_conf_free(fk.defaults);
    return rc;
}
