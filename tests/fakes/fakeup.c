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
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "core/buf.h"
#include "core/log.h"

#define FK_MAX_DELAY_MS 600000L
#define FK_BODY_MAX_DEFAULT (8u * 1024u * 1024u)
#define FK_OUT_MAX (1024u * 1024u * 1024u)
#define FK_RECORD_MAX_DEFAULT 20000u
#define FK_STREAM_PIECES 6

enum fk_kind {
    FK_LLM = 0,
    FK_GRAPH,
    FK_TELEGRAM,
    FK_SLACK,
    FK_WEBHOOK,
    FK_OTHER,
    FK_NKINDS
};

static const char *const fk_kind_name[FK_NKINDS] = {
    "llm", "graph", "telegram", "slack", "webhook", "other"
};

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

static long long
fk_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    c->llm_headers = src->llm_headers ? cJSON_Duplicate(src->llm_headers, 1)
                                      : NULL;
    c->graph_token = fk_strdup(src->graph_token);
    c->graph_instagram_ids = src->graph_instagram_ids
        ? cJSON_Duplicate(src->graph_instagram_ids, 1) : NULL;
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

/* Resume every suspended connection and stop; no new delays after this. */
static void
fk_timer_stop(struct fk_timer *t)
{
    pthread_mutex_lock(&t->mu);
    t->stopping = true;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    pthread_join(t->thread, NULL);
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

    cJSON_ArrayForEach(h, obj) {
        if (cJSON_IsString(h)) {
            fk_out_header(o, h->string, h->valuestring);
        } else if (cJSON_IsNumber(h)) {
            snprintf(num, sizeof(num), "%ld", (long)h->valuedouble);
            fk_out_header(o, h->string, num);
        }
    }
}

/* Common fault parts: delay and extra headers; the fault is kept for the record. */
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

/* Append one whole event (already framed) and remember where it ends. */
static void
fk_stream_event(struct fk_stream *s, const char *text)
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
    if (core_buf_adds(&s->text, text) != CORE_OK)
        return;
    s->ends[s->nends++] = s->text.len;
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
    size_t n;

    (void)pos;
    if (s->abort_after >= 0 && s->ev >= (size_t)s->abort_after)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (s->ev >= s->nends)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (s->chunk_delay_ms > 0 && s->ev > 0 && !s->no_delay
        && s->pos == s->ends[s->ev - 1] && fk_mono_ms() < s->next_due_ms) {
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
    n = s->ends[s->ev] - s->pos;
    if (n > max)
        n = max;
    memcpy(buf, s->text.data + s->pos, n);
    s->pos += n;
    if (s->pos == s->ends[s->ev]) {
        s->ev++;
        s->next_due_ms = fk_mono_ms() + s->chunk_delay_ms;
    }
    return (ssize_t)n;
}

static void
fk_stream_free_cb(void *cls)
{
    fk_stream_free(cls);
}

/* ------------------------------------------------------------------ */
/* the fake LLM (OpenAI-compatible chat completions) */

static void
llm_error(struct fk_out *o, unsigned int status, const char *message,
          const char *type, const char *param, const char *code)
{
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");

    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    fk_out_json(o, status, root);
}

/* A fault with "status": an error answer shaped like Groq/OpenAI/vLLM's. */
static void
llm_fault_error(struct fk_out *o, const cJSON *fault, unsigned int status,
                const char *model)
{
    char ra[32] = "1", msg[512];
    const char *type = "api_error", *code = NULL;
    const cJSON *rav = cJSON_GetObjectItemCaseSensitive(fault, "retry_after");
    bool has_ra = status == 429 ? !cJSON_IsNull(rav) : rav != NULL;

    if (rav && !cJSON_IsNull(rav))
        fk_jtext(fault, "retry_after", ra, sizeof(ra));
    if (has_ra)
        fk_out_header(o, "retry-after", ra);
    if (fk_out_fault_body(o, fault, status))
        return;
    snprintf(msg, sizeof(msg), "fake error %u", status);
    if (status == 429) {
        snprintf(msg, sizeof(msg), "Rate limit reached for model `%s` in "
                 "organization `org_fake` on tokens per minute (TPM): Limit "
                 "6000, Used 6000, Requested 100. Please try again in %ss.",
                 model, ra);
        type = "tokens";
        code = "rate_limit_exceeded";
    } else if (status == 401) {
        snprintf(msg, sizeof(msg), "Invalid API Key");
        type = "invalid_request_error";
        code = "invalid_api_key";
    } else if (status == 404) {
        snprintf(msg, sizeof(msg), "The model `%s` does not exist or you do "
                 "not have access to it.", model);
        type = "invalid_request_error";
        code = "model_not_found";
    } else if (status == 400 || status == 413 || status == 422) {
        type = "invalid_request_error";
    } else if (status == 503) {
        snprintf(msg, sizeof(msg), "The server is overloaded or not ready yet.");
        type = "unavailable_error";
    } else if (status >= 500) {
        snprintf(msg, sizeof(msg), "The server had an error while processing "
                 "your request. Sorry about that!");
        type = "server_error";
    }
    llm_error(o, status, fk_jstr(fault, "message") ? fk_jstr(fault, "message")
              : msg, fk_jstr(fault, "type") ? fk_jstr(fault, "type") : type,
              NULL, fk_jstr(fault, "code") ? fk_jstr(fault, "code") : code);
}

/* Validate a chat completion request; NULL when fine, else the message. */
static const char *
llm_validate(const cJSON *req, char *msg, size_t size, const char **param)
{
    const cJSON *msgs, *m, *v;
    const char *role;
    int i = 0;

    *param = NULL;
    if (!cJSON_IsObject(req))
        return "We could not parse the JSON body of your request. (HINT: This "
               "likely means you aren't using your HTTP library correctly.)";
    v = cJSON_GetObjectItemCaseSensitive(req, "model");
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        *param = "model";
        return "you must provide a model parameter";
    }
    msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    *param = "messages";
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return "'messages' must be a non-empty array";
    cJSON_ArrayForEach(m, msgs) {
        role = fk_jstr(m, "role");
        v = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsObject(m) || !role
            || (strcmp(role, "system") && strcmp(role, "user")
                && strcmp(role, "assistant") && strcmp(role, "tool")
                && strcmp(role, "developer"))) {
            snprintf(msg, size, "'messages.%d' : missing or invalid 'role' "
                     "(system, user, assistant, tool, developer)", i);
            return msg;
        }
        if (!(cJSON_IsString(v) || cJSON_IsArray(v)
              || (cJSON_IsNull(v) && strcmp(role, "assistant") == 0))) {
            snprintf(msg, size, "'messages.%d' : 'content' must be a string "
                     "or an array of content parts", i);
            return msg;
        }
        i++;
    }
    *param = NULL;
    v = cJSON_GetObjectItemCaseSensitive(req, "stream");
    if (v && !cJSON_IsBool(v) && !cJSON_IsNull(v))
        return "'stream' : value must be a boolean";
    v = cJSON_GetObjectItemCaseSensitive(req, "temperature");
    if (v && !cJSON_IsNull(v)
        && (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2))
        return "'temperature' : number must be between 0 and 2";
    v = cJSON_GetObjectItemCaseSensitive(req, "n");
    if (v && !cJSON_IsNull(v) && (!cJSON_IsNumber(v) || v->valuedouble != 1))
        return "'n' : number must be at most 1";
    if (fk_jlong(req, "max_tokens", 1) < 1
        || fk_jlong(req, "max_completion_tokens", 1) < 1)
        return "max tokens must be at least 1";
    return NULL;
}

/* Append the text of a message content (string or parts) to b. */
static void
llm_content_text(const cJSON *content, struct core_buf *b)
{
    const cJSON *part;
    const char *t;

    if (cJSON_IsString(content)) {
        core_buf_adds(b, content->valuestring);
        return;
    }
    cJSON_ArrayForEach(part, content) {
        t = fk_jstr(part, "text");
        if (t)
            core_buf_adds(b, t);
    }
}

static size_t
llm_prompt_chars(const cJSON *req)
{
    const cJSON *m;
    struct core_buf b;
    size_t n = 0;

    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(req, "messages")) {
        core_buf_init(&b, FK_OUT_MAX);
        llm_content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &b);
        n += b.len;
        core_buf_done(&b);
    }
    return n;
}

/* The reply text: fault reply, fixed llm_reply, or "Echo: <last user>". */
static char *
llm_reply_text(const cJSON *req, const cJSON *fault, const struct fk_conf *cf)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    const cJSON *m;
    const char *role;
    struct core_buf b;
    int i;

    if (fk_jstr(fault, "reply"))
        return strdup(fk_jstr(fault, "reply"));
    if (cf->llm_reply)
        return strdup(cf->llm_reply);
    core_buf_init(&b, FK_OUT_MAX);
    core_buf_adds(&b, "Echo: ");
    for (i = cJSON_GetArraySize(msgs) - 1; i >= 0; i--) {
        m = cJSON_GetArrayItem(msgs, i);
        role = fk_jstr(m, "role");
        if (role && strcmp(role, "user") == 0) {
            llm_content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &b);
            break;
        }
    }
    return core_buf_take(&b);
}

static cJSON *
llm_usage(long prompt, long completion)
{
    cJSON *u = cJSON_CreateObject();

    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
    return u;
}

static cJSON *
llm_chunk(const char *id, long long created, const char *model, bool usage_null)
{
    cJSON *c = cJSON_CreateObject();

    cJSON_AddStringToObject(c, "id", id);
    cJSON_AddStringToObject(c, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(c, "created", (double)created);
    cJSON_AddStringToObject(c, "model", model);
    cJSON_AddStringToObject(c, "system_fingerprint", "fp_fake");
    if (usage_null)
        cJSON_AddNullToObject(c, "usage");
    return c;
}

/* A chunk with one choice: delta {role?, content?} and finish_reason. */
static cJSON *
llm_delta_chunk(const char *id, long long created, const char *model,
                bool usage_null, const char *role, const char *content,
                size_t content_len, const char *finish)
{
    cJSON *c = llm_chunk(id, created, model, usage_null);
    cJSON *ch = cJSON_AddArrayToObject(c, "choices");
    cJSON *choice = cJSON_CreateObject(), *delta;
    char *piece;

    cJSON_AddItemToArray(ch, choice);
    cJSON_AddNumberToObject(choice, "index", 0);
    delta = cJSON_AddObjectToObject(choice, "delta");
    if (role)
        cJSON_AddStringToObject(delta, "role", role);
    if (content) {
        piece = strndup(content, content_len);
        cJSON_AddStringToObject(delta, "content", piece ? piece : "");
        free(piece);
    }
    cJSON_AddNullToObject(choice, "logprobs");
    if (finish)
        cJSON_AddStringToObject(choice, "finish_reason", finish);
    else
        cJSON_AddNullToObject(choice, "finish_reason");
    return c;
}

struct llm_answer {
    const char *id;
    long long created;
    const char *model;
    const char *content;
    const char *finish;
    long prompt_tokens;
    long completion_tokens;
};

/* Build the SSE answer; faults may cut it short (error event or abort). */
static void
llm_stream(const cJSON *req, const cJSON *fault, const struct fk_conf *cf,
           const struct llm_answer *a, struct fk_out *o)
{
    struct fk_stream *s = fk_stream_new();
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(req, "stream_options");
    bool usage = fk_jbool(so, "include_usage"), crlf = cf->llm_sse_crlf;
    bool cut = fk_jbool(fault, "stream_error") || fk_jbool(fault, "stream_abort");
    const char *eol = crlf ? "\r\n\r\n" : "\n\n";
    char line[64];
    size_t len = strlen(a->content), step, at = 0, n;
    int pieces = 0;
    cJSON *e, *err;

    if (!s)
        return;
    s->chunk_delay_ms = cf->llm_chunk_delay_ms;
    if (cf->llm_sse_comments) {
        snprintf(line, sizeof(line), ": keep-alive%s", eol);
        fk_stream_event(s, line);
    }
    fk_stream_data(s, llm_delta_chunk(a->id, a->created, a->model, usage,
                                      "assistant", "", 0, NULL), crlf);
    if (fk_jbool(fault, "malformed")) {
        snprintf(line, sizeof(line), "data: {\"id\":\"%.20s\",\"choices\":[{\"de%s",
                 a->id, eol);
        fk_stream_event(s, line);
        goto done;
    }
    step = (len + FK_STREAM_PIECES - 1) / FK_STREAM_PIECES;
    if (step < 4)
        step = 4;
    while (at < len && !(cut && pieces == 2)) {
        n = fk_utf8_cut(a->content + at, len - at, step);
        if (n == 0)
            n = len - at;
        fk_stream_data(s, llm_delta_chunk(a->id, a->created, a->model, usage,
                                          NULL, a->content + at, n, NULL), crlf);
        at += n;
        pieces++;
        if (pieces == 1 && cf->llm_sse_comments) {
            snprintf(line, sizeof(line), ": processing%s", eol);
            fk_stream_event(s, line);
        }
    }
    if (fk_jbool(fault, "stream_abort")) {
        s->abort_after = (long)s->nends;
        goto done;
    }
    if (fk_jbool(fault, "stream_error")) {
        e = cJSON_CreateObject();
        err = cJSON_AddObjectToObject(e, "error");
        cJSON_AddStringToObject(err, "message", fk_jstr(fault, "message")
                                ? fk_jstr(fault, "message")
                                : "fake mid-stream failure");
        cJSON_AddStringToObject(err, "type", "server_error");
        cJSON_AddNumberToObject(err, "code", 500);
        fk_stream_data(s, e, crlf);
        goto done;
    }
    fk_stream_data(s, llm_delta_chunk(a->id, a->created, a->model, usage, NULL,
                                      NULL, 0, a->finish), crlf);
    if (usage) {
        e = llm_chunk(a->id, a->created, a->model, false);
        cJSON_AddArrayToObject(e, "choices");
        cJSON_AddItemToObject(e, "usage", llm_usage(a->prompt_tokens,
                                                    a->completion_tokens));
        fk_stream_data(s, e, crlf);
    }
    snprintf(line, sizeof(line), "data: [DONE]%s", eol);
    fk_stream_event(s, line);
done:
    o->status = 200;
    o->ctype = "text/event-stream";
    o->stream = s;
    fk_out_header(o, "Cache-Control", "no-cache");
}

static void
llm_complete(const struct llm_answer *a, struct fk_out *o)
{
    cJSON *r = cJSON_CreateObject(), *choices, *ch, *msg;

    cJSON_AddStringToObject(r, "id", a->id);
    cJSON_AddStringToObject(r, "object", "chat.completion");
    cJSON_AddNumberToObject(r, "created", (double)a->created);
    cJSON_AddStringToObject(r, "model", a->model);
    choices = cJSON_AddArrayToObject(r, "choices");
    ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddNumberToObject(ch, "index", 0);
    msg = cJSON_AddObjectToObject(ch, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    cJSON_AddStringToObject(msg, "content", a->content);
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddStringToObject(ch, "finish_reason", a->finish);
    cJSON_AddItemToObject(r, "usage", llm_usage(a->prompt_tokens,
                                                a->completion_tokens));
    cJSON_AddStringToObject(r, "system_fingerprint", "fp_fake");
    fk_out_json(o, 200, r);
}

static void
llm_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    const char *auth, *err, *param, *model;
    char msg[256], id[64], want[512];
    char *content = NULL;
    long status, limit;
    struct llm_answer a;
    size_t len;

    if (cf->llm_headers)
        fk_out_headers_from(o, cf->llm_headers);
    if (strcmp(c->method, "POST") != 0) {
        llm_error(o, 405, "Method not allowed", "invalid_request_error", NULL, NULL);
        return;
    }
    if (cf->llm_down) {
        llm_error(o, 503, "The server is unavailable (fake llm_down)",
                  "unavailable_error", NULL, NULL);
        return;
    }
    auth = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization");
    snprintf(want, sizeof(want), "Bearer %s", cf->llm_api_key ? cf->llm_api_key : "");
    if (cf->llm_api_key && (!auth || strcmp(auth, want) != 0)) {
        llm_error(o, 401, "Invalid API Key", "invalid_request_error", NULL,
                  "invalid_api_key");
        return;
    }
    fk_out_take_fault(o, fk_fault_pop(FK_LLM));
    model = fk_jstr(c->json, "model") ? fk_jstr(c->json, "model") : "unknown";
    status = fk_jlong(o->fault, "status", 0);
    if (status >= 100 && status <= 599) {
        llm_fault_error(o, o->fault, (unsigned int)status, model);
        return;
    }
    err = llm_validate(c->json, msg, sizeof(msg), &param);
    if (err) {
        llm_error(o, 400, err, "invalid_request_error", param, NULL);
        return;
    }
    if (fk_jbool(o->fault, "malformed") && !fk_jbool(c->json, "stream")) {
        fk_out_malformed(o, "{\"id\":\"chatcmpl-fake\",\"object\":\"chat."
                            "completion\",\"choices\":[{\"index\":0,\"mess");
        return;
    }
    content = llm_reply_text(c->json, o->fault, cf);
    if (!content) {
        llm_error(o, 500, "out of memory", "server_error", NULL, NULL);
        return;
    }
    snprintf(id, sizeof(id), "chatcmpl-fake%llu", fk_next_id());
    len = strlen(content);
    a.id = id;
    a.created = fk_wall_ms() / 1000;
    a.model = model;
    a.finish = fk_jstr(o->fault, "finish_reason") ? fk_jstr(o->fault, "finish_reason")
                                                  : "stop";
    a.prompt_tokens = (long)((llm_prompt_chars(c->json) + 3) / 4);
    if (a.prompt_tokens < 1)
        a.prompt_tokens = 1;
    limit = fk_jlong(c->json, "max_completion_tokens",
                     fk_jlong(c->json, "max_tokens", 0));
    if (cf->llm_enforce_max_tokens && limit > 0 && (long)((len + 3) / 4) > limit) {
        len = fk_utf8_cut(content, len, (size_t)limit * 4);
        content[len] = '\0';
        a.finish = "length";
    }
    a.completion_tokens = (long)((len + 3) / 4);
    a.content = content;
    if (fk_jbool(c->json, "stream"))
        llm_stream(c->json, o->fault, cf, &a, o);
    else
        llm_complete(&a, o);
    free(content);
}

/* ------------------------------------------------------------------ */
/* the fake Meta Graph API (WhatsApp Cloud, Messenger, Instagram send) */

static const char *
graph_default_message(long code)
{
    switch (code) {
    case 1: return "An unknown error occurred";
    case 2: return "Service temporarily unavailable";
    case 4: return "(#4) Application request limit reached";
    case 10: return "(#10) This message is sent outside of allowed window.";
    case 100: return "(#100) Invalid parameter";
    case 190: return "Invalid OAuth access token - Cannot parse access token";
    case 551: return "(#551) This person isn't available right now.";
    case 613: return "(#613) Calls to this api have exceeded the rate limit.";
    case 130429: return "(#130429) Rate limit hit";
    case 131026: return "(#131026) Message undeliverable";
    case 131047: return "(#131047) Re-engagement message";
    case 131048: return "(#131048) Spam rate limit hit";
    case 131056: return "(#131056) (Business Account, Consumer Account) pair "
                        "rate limit hit";
    default: return "(#fake) Fake Graph API error";
    }
}

/* The Graph error body of platforms.md §1.5. */
static void
graph_error(struct fk_out *o, unsigned int http, long code, long subcode,
            const char *message, const char *details, const char *type)
{
    cJSON *root = cJSON_CreateObject(), *e = cJSON_AddObjectToObject(root, "error");
    cJSON *data;
    char trace[48];

    cJSON_AddStringToObject(e, "message", message ? message
                                                  : graph_default_message(code));
    cJSON_AddStringToObject(e, "type", type ? type : "OAuthException");
    cJSON_AddNumberToObject(e, "code", (double)code);
    if (subcode)
        cJSON_AddNumberToObject(e, "error_subcode", (double)subcode);
    if (code >= 130000 || details) {
        data = cJSON_AddObjectToObject(e, "error_data");
        cJSON_AddStringToObject(data, "messaging_product", "whatsapp");
        cJSON_AddStringToObject(data, "details", details ? details
                                : graph_default_message(code));
    }
    snprintf(trace, sizeof(trace), "AfakeTrace%llu", fk_next_id());
    cJSON_AddStringToObject(e, "fbtrace_id", trace);
    fk_out_json(o, http, root);
}

/* WhatsApp Cloud API: /{phone-number-id}/messages with messaging_product. */
static void
graph_whatsapp(const cJSON *req, struct fk_out *o)
{
    const char *to = fk_jstr(req, "to"), *type = fk_jstr(req, "type");
    const char *status = fk_jstr(req, "status"), *body;
    cJSON *r, *arr, *it;
    char id[64];

    if (!fk_jstr(req, "messaging_product")
        || strcmp(fk_jstr(req, "messaging_product"), "whatsapp") != 0) {
        graph_error(o, 400, 100, 0, "(#100) The parameter messaging_product is "
                    "required.", NULL, NULL);
        return;
    }
    if (status && strcmp(status, "read") == 0) {
        if (!fk_jstr(req, "message_id")) {
            graph_error(o, 400, 100, 0, "(#100) The parameter message_id is "
                        "required.", NULL, NULL);
            return;
        }
        r = cJSON_CreateObject();
        cJSON_AddTrueToObject(r, "success");
        fk_out_json(o, 200, r);
        return;
    }
    if (!to)
        to = fk_jstr(req, "recipient");
    if (!to || !to[0]) {
        graph_error(o, 400, 100, 0, "(#100) The parameter to is required.",
                    NULL, NULL);
        return;
    }
    if (!type || strcmp(type, "text") == 0) {
        body = fk_jstr(cJSON_GetObjectItemCaseSensitive(req, "text"), "body");
        if (!body || !body[0]) {
            graph_error(o, 400, 100, 0, "(#100) The parameter text['body'] is "
                        "required.", NULL, NULL);
            return;
        }
        if (fk_utf8_chars(body) > 4096) {
            graph_error(o, 400, 100, 0, "(#100) Param text['body'] must be at "
                        "most 4096 characters long.", NULL, NULL);
            return;
        }
    }
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "messaging_product", "whatsapp");
    arr = cJSON_AddArrayToObject(r, "contacts");
    it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "input", to);
    cJSON_AddStringToObject(it, "wa_id", to);
    cJSON_AddItemToArray(arr, it);
    arr = cJSON_AddArrayToObject(r, "messages");
    it = cJSON_CreateObject();
    snprintf(id, sizeof(id), "wamid.FAKE%llu", fk_next_id());
    cJSON_AddStringToObject(it, "id", id);
    cJSON_AddItemToArray(arr, it);
    fk_out_json(o, 200, r);
}

static bool
graph_is_instagram(const struct fk_conf *cf, const char *id)
{
    const cJSON *v;

    cJSON_ArrayForEach(v, cf->graph_instagram_ids)
        if (cJSON_IsString(v) && strcmp(v->valuestring, id) == 0)
            return true;
    return false;
}

/* Messenger / Instagram Send API: {"recipient":{"id":...}, ...}. */
static void
graph_messenger(const cJSON *req, bool instagram, struct fk_out *o)
{
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(req, "message");
    const char *rid = fk_jstr(cJSON_GetObjectItemCaseSensitive(req, "recipient"), "id");
    const char *text;
    cJSON *r;
    char id[64];

    if (!rid || !rid[0]) {
        graph_error(o, 400, 100, 0, "(#100) param recipient must be non-empty.",
                    NULL, NULL);
        return;
    }
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "recipient_id", rid);
    if (fk_jstr(req, "sender_action")) {
        fk_out_json(o, 200, r);
        return;
    }
    if (!cJSON_IsObject(msg)) {
        cJSON_Delete(r);
        graph_error(o, 400, 100, 0, "(#100) Must send either message or state",
                    NULL, NULL);
        return;
    }
    text = fk_jstr(msg, "text");
    if (text && (instagram ? strlen(text) > 1000 : fk_utf8_chars(text) > 2000)) {
        cJSON_Delete(r);
        graph_error(o, 400, 100, 0, instagram
                    ? "(#100) Length of param message[text] must be less than "
                      "or equal to 1000 bytes"
                    : "(#100) Length of param message[text] must be less than "
                      "or equal to 2000", NULL, NULL);
        return;
    }
    snprintf(id, sizeof(id), instagram ? "aWdfFAKE%llu" : "m_FAKE%llu",
             fk_next_id());
    cJSON_AddStringToObject(r, "message_id", id);
    fk_out_json(o, 200, r);
}

static void
graph_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    const char *auth, *token = NULL, *slash, *idp;
    char id[128];
    long http, code;

    fk_out_take_fault(o, fk_fault_pop(FK_GRAPH));
    auth = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
        token = auth + 7;
    if (!token)
        token = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND,
                                            "access_token");
    if (!token || !token[0]) {
        graph_error(o, 401, 190, 0, "An active access token must be used to "
                    "query information about the current user.", NULL, NULL);
        return;
    }
    if (cf->graph_token && strcmp(token, cf->graph_token) != 0) {
        graph_error(o, 401, 190, 0, NULL, NULL, NULL);
        return;
    }
    http = fk_jlong(o->fault, "http", 0);
    code = fk_jlong(o->fault, "code", 0);
    if (http || code) {
        if (!http)
            http = 400;
        if (!code)
            code = http >= 500 ? 1 : 100;
        if (!fk_out_fault_body(o, o->fault, (unsigned int)http))
            graph_error(o, (unsigned int)http, code, fk_jlong(o->fault, "subcode", 0),
                        fk_jstr(o->fault, "message"), fk_jstr(o->fault, "details"),
                        fk_jstr(o->fault, "type"));
        return;
    }
    if (fk_jbool(o->fault, "malformed")) {
        fk_out_malformed(o, "{\"messaging_product\":\"whatsapp\",\"messa");
        return;
    }
    if (!cJSON_IsObject(c->json)) {
        graph_error(o, 400, 100, 0, "(#100) The request body must be a JSON "
                    "object", NULL, NULL);
        return;
    }
    /* path: /vNN.N/{id}/messages */
    idp = strchr(c->path + 1, '/');
    idp = idp ? idp + 1 : "";
    slash = strchr(idp, '/');
    snprintf(id, sizeof(id), "%.*s", slash ? (int)(slash - idp) : 0, idp);
    if (cJSON_GetObjectItemCaseSensitive(c->json, "messaging_product"))
        graph_whatsapp(c->json, o);
    else
        graph_messenger(c->json, graph_is_instagram(cf, id), o);
}

/* ------------------------------------------------------------------ */
/* the fake Telegram Bot API */

static void
tg_error(struct fk_out *o, long code, const char *description, const cJSON *fault)
{
    cJSON *r = cJSON_CreateObject(), *p = NULL;
    char desc[160];
    long ra = fk_jlong(fault, "retry_after", -1);
    long mig = fk_jlong(fault, "migrate_to_chat_id", 0);

    if (!description) {
        switch (code) {
        case 429:
            snprintf(desc, sizeof(desc), "Too Many Requests: retry after %ld",
                     ra < 0 ? 1 : ra);
            if (ra < 0)
                ra = 1;
            break;
        case 403:
            snprintf(desc, sizeof(desc), "Forbidden: bot was blocked by the user");
            break;
        case 401:
            snprintf(desc, sizeof(desc), "Unauthorized");
            break;
        case 400:
            snprintf(desc, sizeof(desc), mig ? "Bad Request: group chat was "
                     "upgraded to a supergroup chat" : "Bad Request: chat not found");
            break;
        default:
            snprintf(desc, sizeof(desc), "Internal Server Error");
        }
        description = desc;
    }
    cJSON_AddFalseToObject(r, "ok");
    cJSON_AddNumberToObject(r, "error_code", (double)code);
    cJSON_AddStringToObject(r, "description", description);
    if (ra >= 0 || mig) {
        p = cJSON_AddObjectToObject(r, "parameters");
        if (ra >= 0)
            cJSON_AddNumberToObject(p, "retry_after", (double)ra);
        if (mig)
            cJSON_AddNumberToObject(p, "migrate_to_chat_id", (double)mig);
    }
    fk_out_json(o, (unsigned int)code, r);
}

static cJSON *
tg_message(const cJSON *req)
{
    cJSON *m = cJSON_CreateObject(), *from, *chat;
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(req, "chat_id");

    cJSON_AddNumberToObject(m, "message_id", (double)fk_next_id());
    from = cJSON_AddObjectToObject(m, "from");
    cJSON_AddNumberToObject(from, "id", 1000001);
    cJSON_AddTrueToObject(from, "is_bot");
    cJSON_AddStringToObject(from, "first_name", "FakeBot");
    cJSON_AddStringToObject(from, "username", "fake_bot");
    chat = cJSON_AddObjectToObject(m, "chat");
    cJSON_AddItemToObject(chat, "id", cid ? cJSON_Duplicate(cid, 1)
                                          : cJSON_CreateNumber(0));
    cJSON_AddStringToObject(chat, "type", "private");
    cJSON_AddNumberToObject(m, "date", (double)(fk_wall_ms() / 1000));
    if (fk_jstr(req, "text"))
        cJSON_AddStringToObject(m, "text", fk_jstr(req, "text"));
    return m;
}

static void
tg_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    const char *tok = c->path + 4, *slash = strchr(tok, '/');
    const char *method = slash ? slash + 1 : "", *text;
    cJSON *r;
    long code;

    fk_out_take_fault(o, fk_fault_pop(FK_TELEGRAM));
    if (!slash || slash == tok || (cf->telegram_token
        && (strlen(cf->telegram_token) != (size_t)(slash - tok)
            || memcmp(cf->telegram_token, tok, (size_t)(slash - tok)) != 0))) {
        tg_error(o, 401, NULL, NULL);
        return;
    }
    code = fk_jlong(o->fault, "error_code", 0);
    if (code) {
        if (!fk_out_fault_body(o, o->fault, (unsigned int)code))
            tg_error(o, code, fk_jstr(o->fault, "description"), o->fault);
        return;
    }
    if (fk_jbool(o->fault, "malformed")) {
        fk_out_malformed(o, "{\"ok\":true,\"result\":{\"message_id\":");
        return;
    }
    if (c->body_len && !cJSON_IsObject(c->json)) {
        tg_error(o, 400, "Bad Request: can't parse JSON body", NULL);
        return;
    }
    r = cJSON_CreateObject();
    cJSON_AddTrueToObject(r, "ok");
    if (strcmp(method, "sendMessage") == 0 || strcmp(method, "editMessageText") == 0) {
        text = fk_jstr(c->json, "text");
        if (!cJSON_GetObjectItemCaseSensitive(c->json, "chat_id")) {
            cJSON_Delete(r);
            tg_error(o, 400, "Bad Request: chat_id is empty", NULL);
            return;
        }
        if (!text || !text[0] || fk_utf8_chars(text) > 4096) {
            cJSON_Delete(r);
            tg_error(o, 400, text && text[0] ? "Bad Request: message is too long"
                     : "Bad Request: message text is empty", NULL);
            return;
        }
        cJSON_AddItemToObject(r, "result", tg_message(c->json));
    } else if (strcmp(method, "getMe") == 0) {
        cJSON_AddItemToObject(r, "result", cJSON_Parse(
            "{\"id\":1000001,\"is_bot\":true,\"first_name\":\"FakeBot\","
            "\"username\":\"fake_bot\"}"));
    } else {
        cJSON_AddTrueToObject(r, "result");
    }
    fk_out_json(o, 200, r);
}

/* ------------------------------------------------------------------ */
/* the fake Slack Web API */

static void
slack_error(struct fk_out *o, unsigned int http, const char *error)
{
    cJSON *r = cJSON_CreateObject();

    cJSON_AddFalseToObject(r, "ok");
    cJSON_AddStringToObject(r, "error", error);
    fk_out_json(o, http, r);
}

static void
slack_post(const cJSON *req, struct fk_out *o)
{
    const char *ch = fk_jstr(req, "channel"), *text = fk_jstr(req, "text");
    cJSON *r, *m;
    char ts[48];

    if (!ch || !ch[0]) {
        slack_error(o, 200, "channel_not_found");
        return;
    }
    if ((!text || !text[0]) && !cJSON_GetObjectItemCaseSensitive(req, "blocks")) {
        slack_error(o, 200, "no_text");
        return;
    }
    if (text && fk_utf8_chars(text) > 40000) {
        slack_error(o, 200, "msg_too_long");
        return;
    }
    snprintf(ts, sizeof(ts), "%lld.%06llu", fk_wall_ms() / 1000,
             fk_next_id() % 1000000);
    r = cJSON_CreateObject();
    cJSON_AddTrueToObject(r, "ok");
    cJSON_AddStringToObject(r, "channel", ch);
    cJSON_AddStringToObject(r, "ts", ts);
    m = cJSON_AddObjectToObject(r, "message");
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "text", text ? text : "");
    cJSON_AddStringToObject(m, "user", "UFAKEBOT");
    cJSON_AddStringToObject(m, "bot_id", "BFAKE");
    cJSON_AddStringToObject(m, "ts", ts);
    if (fk_jstr(req, "thread_ts"))
        cJSON_AddStringToObject(m, "thread_ts", fk_jstr(req, "thread_ts"));
    fk_out_json(o, 200, r);
}

static void
slack_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    const char *method = c->path + 5, *auth, *err;
    char ra[32] = "1";
    long http;
    cJSON *r;

    fk_out_take_fault(o, fk_fault_pop(FK_SLACK));
    auth = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || !auth[7]) {
        slack_error(o, 200, "not_authed");
        return;
    }
    if (cf->slack_token && strcmp(auth + 7, cf->slack_token) != 0) {
        slack_error(o, 200, "invalid_auth");
        return;
    }
    http = fk_jlong(o->fault, "http", 0);
    err = fk_jstr(o->fault, "error");
    if (http == 429 || (http == 0 && err && strcmp(err, "ratelimited") == 0)) {
        fk_jtext(o->fault, "retry_after", ra, sizeof(ra));
        fk_out_header(o, "Retry-After", ra);
        if (!fk_out_fault_body(o, o->fault, 429))
            slack_error(o, 429, "ratelimited");
        return;
    }
    if (http || err) {
        if (!fk_out_fault_body(o, o->fault, http ? (unsigned int)http : 200))
            slack_error(o, http ? (unsigned int)http : 200, err ? err : "fatal_error");
        return;
    }
    if (fk_jbool(o->fault, "malformed")) {
        fk_out_malformed(o, "{\"ok\":true,\"channel\":\"");
        return;
    }
    if (c->body_len && !cJSON_IsObject(c->json)) {
        slack_error(o, 200, "invalid_json");
        return;
    }
    if (strcmp(method, "chat.postMessage") == 0 || strcmp(method, "chat.update") == 0) {
        slack_post(c->json, o);
        return;
    }
    r = cJSON_CreateObject();
    cJSON_AddTrueToObject(r, "ok");
    if (strcmp(method, "auth.test") == 0) {
        cJSON_AddStringToObject(r, "user_id", "UFAKEBOT");
        cJSON_AddStringToObject(r, "bot_id", "BFAKE");
        cJSON_AddStringToObject(r, "team_id", "TFAKE");
    }
    fk_out_json(o, 200, r);
}

/* ------------------------------------------------------------------ */
/* webhook sink (load generator target) */

static bool
hook_signature_ok(const struct fk_call *c, const char *secret)
{
    const char *sig = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
                                                  "X-Hub-Signature-256");
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0, i;
    char hex[2 * EVP_MAX_MD_SIZE + 1], got[2 * EVP_MAX_MD_SIZE + 1];
    size_t glen;

    if (!sig || strncmp(sig, "sha256=", 7) != 0)
        return false;
    sig += 7;
    glen = strlen(sig);
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret),
              (const unsigned char *)c->body, c->body_len, mac, &mlen))
        return false;
    for (i = 0; i < mlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    if (glen != 2 * (size_t)mlen)
        return false;
    for (i = 0; i < glen; i++)
        got[i] = (char)((sig[i] >= 'A' && sig[i] <= 'F') ? sig[i] + 32 : sig[i]);
    return CRYPTO_memcmp(hex, got, glen) == 0;
}

static void
hook_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    long status;

    fk_out_take_fault(o, fk_fault_pop(FK_WEBHOOK));
    if (strcmp(c->method, "POST") != 0) {
        fk_out_text(o, 405, "text/plain", "method not allowed");
        return;
    }
    if (cf->webhook_secret && !hook_signature_ok(c, cf->webhook_secret)) {
        fk_out_text(o, 401, "text/plain", "bad signature");
        return;
    }
    status = fk_jlong(o->fault, "status", 200);
    if (status < 100 || status > 599)
        status = 200;
    if (!fk_out_fault_body(o, o->fault, (unsigned int)status))
        fk_out_text(o, (unsigned int)status, "text/plain", "");
}

/* ------------------------------------------------------------------ */
/* recording */

static enum MHD_Result
fk_values_cb(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    cJSON *obj = cls;
    char name[256];
    size_t i;

    if (kind == MHD_HEADER_KIND) {
        for (i = 0; key[i] && i < sizeof(name) - 1; i++)
            name[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
        name[i] = '\0';
    } else {
        snprintf(name, sizeof(name), "%s", key);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(obj, name);
    cJSON_AddStringToObject(obj, name, value ? value : "");
    return MHD_YES;
}

/* JSON of one request without the leading '{' (seq is put in front later). */
static char *
fk_record_tail(const struct fk_call *c, const struct fk_out *o)
{
    cJSON *r = cJSON_CreateObject(), *h;
    char *raw, *s, *tail = NULL;

    cJSON_AddNumberToObject(r, "ts_ms", (double)fk_wall_ms());
    cJSON_AddStringToObject(r, "kind", fk_kind_name[c->kind]);
    cJSON_AddStringToObject(r, "method", c->method);
    cJSON_AddStringToObject(r, "path", c->path);
    cJSON_AddStringToObject(r, "query", c->query);
    h = cJSON_AddObjectToObject(r, "args");
    MHD_get_connection_values(c->conn, MHD_GET_ARGUMENT_KIND, fk_values_cb, h);
    h = cJSON_AddObjectToObject(r, "headers");
    MHD_get_connection_values(c->conn, MHD_HEADER_KIND, fk_values_cb, h);
    if (c->json) {
        cJSON_AddItemToObject(r, "body", cJSON_Duplicate(c->json, 1));
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
    if (s && s[0] == '{' && s[1] != '}') {
        tail = strdup(s + 1);
    }
    free(s);
    cJSON_Delete(r);
    return tail;
}

static void
fk_record(const struct fk_call *c, const struct fk_out *o)
{
    char *tail = c->conf->record && fk.ring_cap ? fk_record_tail(c, o) : NULL;
    struct core_buf b;
    struct fk_record *slot;

    core_buf_init(&b, FK_OUT_MAX);
    pthread_mutex_lock(&fk.mu);
    fk.total++;
    fk.by_kind[c->kind]++;
    if (o->status < 600)
        fk.by_status[o->status]++;
    if (!tail)
        goto out;
    if (core_buf_printf(&b, "{\"seq\":%llu,%s", fk.next_seq + 1, tail) != CORE_OK)
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
    free(tail);
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

static bool
ctl_str(char **dst, const cJSON *v, char *err, size_t esz)
{
    if (cJSON_IsNull(v)) {
        free(*dst);
        *dst = NULL;
        return true;
    }
    if (!cJSON_IsString(v)) {
        snprintf(err, esz, "%s must be a string or null", v->string);
        return false;
    }
    free(*dst);
    *dst = strdup(v->valuestring);
    return true;
}

static bool
ctl_bool(bool *dst, const cJSON *v, char *err, size_t esz)
{
    if (!cJSON_IsBool(v)) {
        snprintf(err, esz, "%s must be a boolean", v->string);
        return false;
    }
    *dst = cJSON_IsTrue(v);
    return true;
}

static bool
ctl_ms(long *dst, const cJSON *v, char *err, size_t esz)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0
        || v->valuedouble > (double)FK_MAX_DELAY_MS) {
        snprintf(err, esz, "%s must be a number of ms in 0..%ld", v->string,
                 FK_MAX_DELAY_MS);
        return false;
    }
    *dst = (long)v->valuedouble;
    return true;
}

static bool
ctl_json(cJSON **dst, const cJSON *v, bool array, char *err, size_t esz)
{
    if (!cJSON_IsNull(v) && !(array ? cJSON_IsArray(v) : cJSON_IsObject(v))) {
        snprintf(err, esz, "%s must be %s or null", v->string,
                 array ? "an array" : "an object");
        return false;
    }
    cJSON_Delete(*dst);
    *dst = cJSON_IsNull(v) ? NULL : cJSON_Duplicate(v, 1);
    return true;
}

static bool
ctl_faults(cJSON **dst, enum fk_kind k, const cJSON *v, char *err, size_t esz)
{
    const cJSON *f, *key;

    if (!cJSON_IsArray(v)) {
        snprintf(err, esz, "%s must be an array of objects", v->string);
        return false;
    }
    cJSON_ArrayForEach(f, v) {
        if (!cJSON_IsObject(f)) {
            snprintf(err, esz, "%s: every fault must be an object", v->string);
            return false;
        }
        cJSON_ArrayForEach(key, f) {
            if (!fk_word_in(fk_fault_keys[k], key->string)) {
                snprintf(err, esz, "%s: unknown fault key \"%s\" (allowed:%s)",
                         v->string, key->string, fk_fault_keys[k]);
                return false;
            }
        }
    }
    *dst = cJSON_Duplicate(v, 1);
    return true;
}

/* Apply one control key to the new settings c / fault lists add[]. */
static bool
ctl_key(struct fk_conf *c, cJSON **add, bool *clear, const cJSON *v,
        char *err, size_t esz)
{
    const char *k = v->string;
    char name[64];
    int i;

    for (i = 0; i < FK_OTHER; i++) {
        snprintf(name, sizeof(name), "%s_faults", fk_kind_name[i]);
        if (strcmp(k, name) == 0)
            return !add[i] ? ctl_faults(&add[i], (enum fk_kind)i, v, err, esz)
                           : false;
        snprintf(name, sizeof(name), "%s_latency_ms", fk_kind_name[i]);
        if (strcmp(k, name) == 0)
            return ctl_ms(&c->latency_ms[i], v, err, esz);
    }
    if (strcmp(k, "clear_faults") == 0)
        return ctl_bool(clear, v, err, esz);
    if (strcmp(k, "llm_reply") == 0)
        return ctl_str(&c->llm_reply, v, err, esz);
    if (strcmp(k, "llm_api_key") == 0)
        return ctl_str(&c->llm_api_key, v, err, esz);
    if (strcmp(k, "llm_down") == 0)
        return ctl_bool(&c->llm_down, v, err, esz);
    if (strcmp(k, "llm_chunk_delay_ms") == 0)
        return ctl_ms(&c->llm_chunk_delay_ms, v, err, esz);
    if (strcmp(k, "llm_sse_comments") == 0)
        return ctl_bool(&c->llm_sse_comments, v, err, esz);
    if (strcmp(k, "llm_sse_crlf") == 0)
        return ctl_bool(&c->llm_sse_crlf, v, err, esz);
    if (strcmp(k, "llm_enforce_max_tokens") == 0)
        return ctl_bool(&c->llm_enforce_max_tokens, v, err, esz);
    if (strcmp(k, "llm_headers") == 0)
        return ctl_json(&c->llm_headers, v, false, err, esz);
    if (strcmp(k, "graph_token") == 0)
        return ctl_str(&c->graph_token, v, err, esz);
    if (strcmp(k, "graph_instagram_ids") == 0)
        return ctl_json(&c->graph_instagram_ids, v, true, err, esz);
    if (strcmp(k, "telegram_token") == 0)
        return ctl_str(&c->telegram_token, v, err, esz);
    if (strcmp(k, "slack_token") == 0)
        return ctl_str(&c->slack_token, v, err, esz);
    if (strcmp(k, "webhook_secret") == 0)
        return ctl_str(&c->webhook_secret, v, err, esz);
    if (strcmp(k, "record") == 0)
        return ctl_bool(&c->record, v, err, esz);
    snprintf(err, esz, "unknown control key \"%s\"", k);
    return false;
}

static void
ctl_add_str(cJSON *o, const char *key, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

/* The current settings and pending faults (GET /_control). */
static cJSON *
ctl_state(void)
{
    cJSON *o = cJSON_CreateObject(), *p;
    struct fk_conf *c;
    char name[64];
    int i;

    pthread_mutex_lock(&fk.mu);
    c = fk.conf;
    p = cJSON_AddObjectToObject(o, "faults_pending");
    for (i = 0; i < FK_OTHER; i++) {
        snprintf(name, sizeof(name), "%s_latency_ms", fk_kind_name[i]);
        cJSON_AddNumberToObject(o, name, (double)c->latency_ms[i]);
        cJSON_AddItemToObject(p, fk_kind_name[i], cJSON_Duplicate(fk.faults[i], 1));
    }
    ctl_add_str(o, "llm_reply", c->llm_reply);
    cJSON_AddBoolToObject(o, "llm_api_key_set", c->llm_api_key != NULL);
    cJSON_AddBoolToObject(o, "llm_down", c->llm_down);
    cJSON_AddNumberToObject(o, "llm_chunk_delay_ms", (double)c->llm_chunk_delay_ms);
    cJSON_AddBoolToObject(o, "llm_sse_comments", c->llm_sse_comments);
    cJSON_AddBoolToObject(o, "llm_sse_crlf", c->llm_sse_crlf);
    cJSON_AddBoolToObject(o, "llm_enforce_max_tokens", c->llm_enforce_max_tokens);
    cJSON_AddItemToObject(o, "llm_headers", c->llm_headers
                          ? cJSON_Duplicate(c->llm_headers, 1) : cJSON_CreateNull());
    cJSON_AddBoolToObject(o, "graph_token_set", c->graph_token != NULL);
    cJSON_AddItemToObject(o, "graph_instagram_ids", c->graph_instagram_ids
                          ? cJSON_Duplicate(c->graph_instagram_ids, 1)
                          : cJSON_CreateNull());
    cJSON_AddBoolToObject(o, "telegram_token_set", c->telegram_token != NULL);
    cJSON_AddBoolToObject(o, "slack_token_set", c->slack_token != NULL);
    cJSON_AddBoolToObject(o, "webhook_secret_set", c->webhook_secret != NULL);
    cJSON_AddBoolToObject(o, "record", c->record);
    pthread_mutex_unlock(&fk.mu);
    return o;
}

static void
ctl_control(const cJSON *req, struct fk_out *o)
{
    struct fk_conf *cur = fk_conf_acquire(), *nc = fk_conf_dup(cur);
    cJSON *add[FK_NKINDS] = { 0 }, *e;
    const cJSON *v, *items;
    char err[512] = "";
    bool clear = false, ok = nc != NULL;
    int i;

    fk_conf_release(cur);
    if (!cJSON_IsObject(req)) {
        snprintf(err, sizeof(err), "body must be a JSON object");
        ok = false;
    }
    items = ok ? req : NULL;
    cJSON_ArrayForEach(v, items) {
        if (!ctl_key(nc, add, &clear, v, err, sizeof(err))) {
            if (!err[0])
                snprintf(err, sizeof(err), "duplicate key \"%s\"", v->string);
            ok = false;
            break;
        }
    }
    if (!ok) {
        e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "error", err[0] ? err : "out of memory");
        fk_out_json(o, 400, e);
        fk_conf_free(nc);
        goto out;
    }
    pthread_mutex_lock(&fk.mu);
    for (i = 0; i < FK_NKINDS; i++) {
        if (clear) {
            cJSON_Delete(fk.faults[i]);
            fk.faults[i] = cJSON_CreateArray();
        }
        while (add[i] && cJSON_GetArraySize(add[i]) > 0)
            cJSON_AddItemToArray(fk.faults[i], cJSON_DetachItemFromArray(add[i], 0));
    }
    fk_conf_swap_locked(nc);
    pthread_mutex_unlock(&fk.mu);
    fk_out_json(o, 200, ctl_state());
out:
    for (i = 0; i < FK_NKINDS; i++)
        cJSON_Delete(add[i]);
}

static void
ctl_reset(struct fk_out *o)
{
    struct fk_conf *nc = fk_conf_dup(fk.defaults);
    int i;

    if (!nc) {
        fk_out_text(o, 500, "application/json", "{\"error\":\"out of memory\"}");
        return;
    }
    pthread_mutex_lock(&fk.mu);
    for (i = 0; i < FK_NKINDS; i++) {
        cJSON_Delete(fk.faults[i]);
        fk.faults[i] = cJSON_CreateArray();
        fk.by_kind[i] = 0;
        fk.faults_used[i] = 0;
    }
    memset(fk.by_status, 0, sizeof(fk.by_status));
    fk.total = 0;
    fk.dropped = 0;
    fk_records_clear_locked();
    fk_conf_swap_locked(nc);
    pthread_mutex_unlock(&fk.mu);
    fk_out_text(o, 200, "application/json", "{\"ok\":true}");
}

static unsigned long long
ctl_arg_ull(struct MHD_Connection *conn, const char *name, unsigned long long dflt)
{
    const char *s = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    char *end;
    unsigned long long v;

    if (!s || !*s)
        return dflt;
    errno = 0;
    v = strtoull(s, &end, 10);
    return (errno || *end) ? dflt : v;
}

/* GET /_requests[?kind=K][&since=SEQ][&limit=N]: oldest first. */
static void
ctl_requests(struct MHD_Connection *conn, struct fk_out *o)
{
    const char *kind = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "kind");
    unsigned long long since = ctl_arg_ull(conn, "since", 0);
    unsigned long long limit = ctl_arg_ull(conn, "limit", ULLONG_MAX);
    unsigned long long n = 0;
    struct fk_record *r;
    size_t i;
    int k = -1;

    if (kind && *kind) {
        for (i = 0; i < FK_NKINDS; i++)
            if (strcmp(kind, fk_kind_name[i]) == 0)
                k = (int)i;
        if (k < 0) {
            fk_out_text(o, 400, "application/json",
                        "{\"error\":\"kind must be llm, graph, telegram, slack, "
                        "webhook or other\"}");
            return;
        }
    }
    core_buf_reset(&o->body);
    core_buf_adds(&o->body, "[");
    pthread_mutex_lock(&fk.mu);
    for (i = 0; i < fk.ring_len && n < limit; i++) {
        r = &fk.ring[(fk.ring_head + i) % fk.ring_cap];
        if (r->seq <= since || (k >= 0 && (int)r->kind != k))
            continue;
        if (n++)
            core_buf_adds(&o->body, ",");
        core_buf_adds(&o->body, r->json);
    }
    pthread_mutex_unlock(&fk.mu);
    core_buf_adds(&o->body, "]");
    o->status = 200;
}

static void
ctl_stats(struct fk_out *o)
{
    cJSON *r = cJSON_CreateObject(), *a, *b, *c, *d;
    char num[16];
    size_t i;

    pthread_mutex_lock(&fk.mu);
    cJSON_AddNumberToObject(r, "total", (double)fk.total);
    a = cJSON_AddObjectToObject(r, "by_kind");
    b = cJSON_AddObjectToObject(r, "faults_injected");
    c = cJSON_AddObjectToObject(r, "faults_pending");
    for (i = 0; i < FK_NKINDS; i++) {
        cJSON_AddNumberToObject(a, fk_kind_name[i], (double)fk.by_kind[i]);
        cJSON_AddNumberToObject(b, fk_kind_name[i], (double)fk.faults_used[i]);
        cJSON_AddNumberToObject(c, fk_kind_name[i],
                                cJSON_GetArraySize(fk.faults[i]));
    }
    d = cJSON_AddObjectToObject(r, "by_status");
    for (i = 0; i < 600; i++) {
        if (fk.by_status[i]) {
            snprintf(num, sizeof(num), "%zu", i);
            cJSON_AddNumberToObject(d, num, (double)fk.by_status[i]);
        }
    }
    cJSON_AddNumberToObject(r, "recorded", (double)fk.ring_len);
    cJSON_AddNumberToObject(r, "record_max", (double)fk.ring_cap);
    cJSON_AddNumberToObject(r, "dropped", (double)fk.dropped);
    cJSON_AddNumberToObject(r, "last_seq", (double)fk.next_seq);
    pthread_mutex_unlock(&fk.mu);
    pthread_mutex_lock(&fk.timer.mu);
    cJSON_AddNumberToObject(r, "suspended", (double)fk.timer.len);
    pthread_mutex_unlock(&fk.timer.mu);
    fk_out_json(o, 200, r);
}

static void
ctl_handle(struct MHD_Connection *conn, const char *method, const char *path,
           const char *body, size_t len, struct fk_out *o)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    cJSON *req;

    if (get && (strcmp(path, "/_ping") == 0 || strcmp(path, "/healthz") == 0)) {
        fk_out_text(o, 200, "text/plain", "ok\n");
    } else if (strcmp(path, "/_control") == 0 && (get || post)) {
        if (get) {
            fk_out_json(o, 200, ctl_state());
        } else {
            req = cJSON_ParseWithLength(body ? body : "", len);
            ctl_control(req, o);
            cJSON_Delete(req);
        }
    } else if (strcmp(path, "/_requests") == 0 && get) {
        ctl_requests(conn, o);
    } else if (strcmp(path, "/_reset") == 0 && post) {
        ctl_reset(o);
    } else if (strcmp(path, "/_stats") == 0 && get) {
        ctl_stats(o);
    } else {
        fk_out_text(o, 404, "application/json", "{\"error\":\"no such control "
                    "endpoint: GET /_ping /_requests /_stats /_control, POST "
                    "/_control /_reset\"}");
    }
}

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
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 * 1024,
                                              fk_stream_reader, o->stream,
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
fk_queue(struct MHD_Connection *conn, unsigned int status, struct MHD_Response *r)
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
    case FK_LLM: llm_handle(&c, &o); break;
    case FK_GRAPH: graph_handle(&c, &o); break;
    case FK_TELEGRAM: tg_handle(&c, &o); break;
    case FK_SLACK: slack_handle(&c, &o); break;
    case FK_WEBHOOK: hook_handle(&c, &o); break;
    default:
        fk_out_text(&o, 404, "application/json", "{\"error\":{\"message\":"
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
    if (rq->resp) {            /* resumed after a delay */
        r = rq->resp;
        rq->resp = NULL;
        return fk_queue(conn, rq->status, r);
    }
    if (!rq->started) {
        rq->started = true;
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            errno = 0;
            n = strtoull(cl, &end, 10);
            if (!errno && !*end && n > fk.body_max) {
                r = MHD_create_response_from_buffer(
                    25, (void *)"{\"error\":\"body too large\"}", MHD_RESPMEM_PERSISTENT);
                return fk_queue(conn, 413, r);
            }
        }
        return MHD_YES;
    }
    if (*upload_size) {
        if (!rq->too_large
            && core_buf_add(&rq->body, upload, *upload_size) != CORE_OK) {
            rq->too_large = true;
            core_buf_done(&rq->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->too_large) {
        r = MHD_create_response_from_buffer(
            25, (void *)"{\"error\":\"body too large\"}", MHD_RESPMEM_PERSISTENT);
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
    fprintf(f,
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
        ok = true;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fk_usage(stdout);
            exit(0);
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
    c->llm_headers = cJSON_Parse(
        "{\"x-ratelimit-limit-requests\":\"14400\","
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
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4096) != 0
        || getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        fprintf(stderr, "fakeup: could not listen on %s:%ld: %s\n", host, port,
                strerror(errno));
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
    struct fk_opts op = { "127.0.0.1", 0, 2, FK_RECORD_MAX_DEFAULT,
                          FK_BODY_MAX_DEFAULT, false };
    struct MHD_Daemon *d = NULL;
    struct fk_conf *dc = fk_conf_defaults();
    sigset_t set;
    pthread_t tid;
    long bound = 0;
    int fd = -1, sig = 0, rc = 1, i;
    unsigned int flags;

    if (!dc || fk_parse_args(argc, argv, &op, dc) != 0) {
        fk_conf_free(dc);
        return 2;
    }
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
    flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL
          | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_TURBO | MHD_USE_ERROR_LOG;
    d = MHD_start_daemon(flags, 0, NULL, NULL, fk_access, NULL,
                         MHD_OPTION_LISTEN_SOCKET, fd,
                         MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)op.threads,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned int)20000,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)120,
                         MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(256 * 1024),
                         MHD_OPTION_URI_LOG_CALLBACK, fk_uri_cb, NULL,
                         MHD_OPTION_NOTIFY_COMPLETED, fk_completed_cb, NULL,
                         MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "fakeup: could not start the HTTP server\n");
        close(fd);
        goto stop_timer;
    }
    fd = -1; /* MHD owns and closes the listening socket now */
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
