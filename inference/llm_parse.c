/*
 * Parsers of the LLM client: SSE framing, OpenAI chat completion bodies and
 * stream chunks, error bodies, and the Retry-After / Go-duration headers.
 * Pure functions over caller-owned state, so they can be tested and fuzzed
 * without a network.
 */
#include "inference/llm_parse.h"

#include <cjson/cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest wait a header may ask for: one day. */
#define LLM_WAIT_MAX_MS (24L * 3600 * 1000)

/* ---- SSE framing ---------------------------------------------------- */

void
inf_sse_init(struct inf_sse *p, size_t max_event_bytes,
             enum core_status (*on_event)(void *ctx, const char *data,
                                          size_t len),
             void *ctx)
{
    core_buf_init(&p->line, max_event_bytes);
    core_buf_init(&p->data, max_event_bytes);
    p->have_data = 0;
    p->last_cr = 0;
    p->first_line = 1;
    p->on_event = on_event;
    p->ctx = ctx;
}

void
inf_sse_done(struct inf_sse *p)
{
    core_buf_done(&p->line);
    core_buf_done(&p->data);
}

static enum core_status
sse_dispatch(struct inf_sse *p)
{
    enum core_status st;
    size_t len = p->data.len;

    if (!p->have_data)
        return CORE_OK;
    /* Every data line added a '\n'; the last one is not part of the data. */
    if (len > 0 && p->data.data[len - 1] == '\n')
        len--;
    p->data.data[len] = '\0';
    st = p->on_event(p->ctx, p->data.data, len);
    core_buf_reset(&p->data);
    p->have_data = 0;
    return st;
}

static enum core_status
sse_line(struct inf_sse *p, const char *s, size_t n)
{
    const char *colon, *val;
    size_t flen, vlen;
    enum core_status st;

    if (p->first_line) {
        p->first_line = 0;
        if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
            s += 3;
            n -= 3;
        }
    }
    if (n == 0)
        return sse_dispatch(p);
    if (s[0] == ':')
        return CORE_OK; /* comment / keep-alive */
    colon = memchr(s, ':', n);
    flen = colon ? (size_t)(colon - s) : n;
    val = colon ? colon + 1 : s + n;
    vlen = n - (size_t)(val - s);
    if (vlen > 0 && val[0] == ' ') {
        val++;
        vlen--;
    }
    if (flen != 4 || memcmp(s, "data", 4) != 0)
        return CORE_OK; /* event, id, retry, unknown: not needed */
    st = core_buf_add(&p->data, val, vlen);
    if (st == CORE_OK)
        st = core_buf_add(&p->data, "\n", 1);
    p->have_data = 1;
    return st;
}

enum core_status
inf_sse_feed(struct inf_sse *p, const char *buf, size_t n)
{
    enum core_status st;
    size_t i = 0, j;

    while (i < n) {
        if (p->last_cr) {
            p->last_cr = 0;
            if (buf[i] == '\n') {
                i++;
                continue;
            }
        }
        for (j = i; j < n && buf[j] != '\r' && buf[j] != '\n'; j++)
            ;
        if (j == n)
            return core_buf_add(&p->line, buf + i, n - i);
        if (p->line.len > 0) {
            st = core_buf_add(&p->line, buf + i, j - i);
            if (st == CORE_OK)
                st = sse_line(p, p->line.data, p->line.len);
            core_buf_reset(&p->line);
        } else {
            st = sse_line(p, buf + i, j - i);
        }
        if (st != CORE_OK)
            return st;
        p->last_cr = buf[j] == '\r';
        i = j + 1;
    }
    return CORE_OK;
}

enum core_status
inf_sse_end(struct inf_sse *p)
{
    enum core_status st;

    if (p->line.len > 0) {
        st = sse_line(p, p->line.data, p->line.len);
        core_buf_reset(&p->line);
        if (st != CORE_OK)
            return st;
    }
    return sse_dispatch(p);
}

/* ---- error text ----------------------------------------------------- */

void
inf_llm_sanitize(char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c < 0x20 || c == 0x7f)
            *s = ' ';
        else if (c == '"' || c == '\\')
            *s = '\'';
    }
}

/* Copy at most outlen-1 bytes without cutting a UTF-8 sequence. */
static void
copy_trunc(char *out, size_t outlen, const char *s, size_t n)
{
    if (outlen == 0)
        return;
    if (n >= outlen) {
        n = outlen - 1;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(out, s, n);
    out[n] = '\0';
}

/*
 * Does root describe an error? OpenAI style {"error": {...}} or a string,
 * older vLLM {"object": "error", "message": ...}. Writes a one-line text.
 */
static int
json_error_text(const cJSON *root, char *out, size_t outlen)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "object");
    const cJSON *src = NULL, *msg, *code;
    const char *text = "unspecified error";
    char codebuf[64] = "";

    if (e && !cJSON_IsNull(e) && !cJSON_IsFalse(e)) {
        if (cJSON_IsString(e) && e->valuestring) {
            copy_trunc(out, outlen, e->valuestring, strlen(e->valuestring));
            return 1;
        }
        src = cJSON_IsObject(e) ? e : NULL;
    } else if (cJSON_IsString(obj) && obj->valuestring &&
               strcmp(obj->valuestring, "error") == 0) {
        src = root;
    } else {
        return 0;
    }
    msg = src ? cJSON_GetObjectItemCaseSensitive(src, "message") : NULL;
    code = src ? cJSON_GetObjectItemCaseSensitive(src, "code") : NULL;
    if (!msg || !cJSON_IsString(msg) || !msg->valuestring)
        msg = src ? cJSON_GetObjectItemCaseSensitive(src, "type") : NULL;
    /* cJSON_Is*() return false for NULL; the analyzer cannot see that. */
    if (msg && cJSON_IsString(msg) && msg->valuestring)
        text = msg->valuestring;
    if (code && cJSON_IsString(code) && code->valuestring)
        snprintf(codebuf, sizeof(codebuf), " (code %.40s)", code->valuestring);
    else if (code && cJSON_IsNumber(code))
        snprintf(codebuf, sizeof(codebuf), " (code %d)", code->valueint);
    snprintf(out, outlen, "%s%s", text, codebuf);
    return 1;
}

void
inf_llm_error_message(const char *body, size_t len, char *out, size_t outlen)
{
    cJSON *j = NULL;

    if (outlen == 0)
        return;
    out[0] = '\0';
    if (!body || len == 0) {
        snprintf(out, outlen, "empty body");
        return;
    }
    j = cJSON_ParseWithLength(body, len);
    if (!j || !json_error_text(j, out, outlen))
        copy_trunc(out, outlen, body, len);
    cJSON_Delete(j);
    inf_llm_sanitize(out);
}

/* ---- completion accumulator ------------------------------------------ */

void
inf_llm_acc_init(struct inf_llm_acc *a, size_t max_content_bytes)
{
    memset(a, 0, sizeof(*a));
    core_buf_init(&a->content, max_content_bytes);
    a->prompt_tokens = -1;
    a->completion_tokens = -1;
}

void
inf_llm_acc_done(struct inf_llm_acc *a)
{
    core_buf_done(&a->content);
    free(a->finish_reason);
    free(a->model);
    a->finish_reason = NULL;
    a->model = NULL;
}

static enum inf_llm_error acc_fail(struct inf_llm_acc *a, enum inf_llm_error e,
                                   const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static enum inf_llm_error
acc_fail(struct inf_llm_acc *a, enum inf_llm_error e, const char *fmt, ...)
{
    va_list ap;

    if (a->err != INF_LLM_OK)
        return a->err;
    a->err = e;
    va_start(ap, fmt);
    vsnprintf(a->error, sizeof(a->error), fmt, ap);
    va_end(ap);
    inf_llm_sanitize(a->error);
    return e;
}

/* Replace *dst with a copy of v when v is a string; 0 only when OOM. */
static int
acc_set_str(char **dst, const cJSON *v)
{
    char *s;

    if (!cJSON_IsString(v) || !v->valuestring)
        return 1;
    s = strdup(v->valuestring);
    if (!s)
        return 0;
    free(*dst);
    *dst = s;
    return 1;
}

static int
json_count(const cJSON *v)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
        v->valuedouble > (double)INT_MAX)
        return -1;
    return (int)v->valuedouble;
}

static void
acc_usage(struct inf_llm_acc *a, const cJSON *root)
{
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(root, "usage");
    const cJSON *xg;
    int n;

    if (!cJSON_IsObject(u)) {
        /* Groq also reports usage under x_groq on the last chunk. */
        xg = cJSON_GetObjectItemCaseSensitive(root, "x_groq");
        u = cJSON_GetObjectItemCaseSensitive(xg, "usage");
        if (!cJSON_IsObject(u))
            return;
    }
    n = json_count(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens"));
    if (n >= 0)
        a->prompt_tokens = n;
    n = json_count(cJSON_GetObjectItemCaseSensitive(u, "completion_tokens"));
    if (n >= 0)
        a->completion_tokens = n;
}

/* Append text; a failure means the completion is over the cap (or OOM). */
static enum inf_llm_error
acc_append(struct inf_llm_acc *a, const char *s)
{
    enum core_status st = core_buf_adds(&a->content, s);

    if (st == CORE_OK)
        return INF_LLM_OK;
    if (st == CORE_ERR_TOO_LARGE)
        return acc_fail(a, INF_LLM_BAD_RESPONSE, "completion over %zu bytes",
                        a->content.max);
    return acc_fail(a, INF_LLM_INTERNAL, "out of memory");
}

static enum inf_llm_error
acc_chunk_obj(struct inf_llm_acc *a, const cJSON *j)
{
    const cJSON *choices, *c0, *delta, *content;
    char msg[200];
    enum inf_llm_error e;

    if (!cJSON_IsObject(j))
        return acc_fail(a, INF_LLM_BAD_RESPONSE,
                        "stream chunk is not an object");
    if (json_error_text(j, msg, sizeof(msg)))
        return acc_fail(a, INF_LLM_STREAM_ERROR, "error in stream: %s", msg);
    if (!a->model &&
        !acc_set_str(&a->model, cJSON_GetObjectItemCaseSensitive(j, "model")))
        return acc_fail(a, INF_LLM_INTERNAL, "out of memory");
    choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    if (cJSON_IsObject(c0)) {
        delta = cJSON_GetObjectItemCaseSensitive(c0, "delta");
        if (!cJSON_IsObject(delta)) /* some servers repeat "message" */
            delta = cJSON_GetObjectItemCaseSensitive(c0, "message");
        content = cJSON_GetObjectItemCaseSensitive(delta, "content");
        if (cJSON_IsString(content) && content->valuestring &&
            content->valuestring[0]) {
            e = acc_append(a, content->valuestring);
            if (e != INF_LLM_OK)
                return e;
            a->got_content = 1;
        }
        if (!acc_set_str(&a->finish_reason,
                         cJSON_GetObjectItemCaseSensitive(c0, "finish_reason")))
            return acc_fail(a, INF_LLM_INTERNAL, "out of memory");
    }
    acc_usage(a, j);
    return INF_LLM_OK;
}

enum inf_llm_error
inf_llm_acc_chunk(struct inf_llm_acc *a, const char *data, size_t len)
{
    const char *p = data, *end = data + len, *pend;
    enum inf_llm_error e;
    cJSON *j;

    if (a->err != INF_LLM_OK)
        return a->err;
    /* Usually one JSON value; several (or "[DONE]") when a server put
     * several data lines into one event. */
    for (;;) {
        while (p < end && isspace((unsigned char)*p))
            p++;
        if (p == end || a->done)
            break;
        if (end - p >= 6 && memcmp(p, "[DONE]", 6) == 0) {
            a->done = 1;
            break;
        }
        pend = NULL;
        j = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &pend, 0);
        if (!j)
            return acc_fail(a, INF_LLM_BAD_RESPONSE, "malformed stream chunk");
        e = acc_chunk_obj(a, j);
        cJSON_Delete(j);
        if (e != INF_LLM_OK)
            return e;
        if (!pend || pend <= p)
            break;
        p = pend;
    }
    return INF_LLM_OK;
}

enum inf_llm_error
inf_llm_acc_body(struct inf_llm_acc *a, const char *body, size_t len)
{
    const cJSON *choices, *c0, *msg, *content;
    enum inf_llm_error e = INF_LLM_OK;
    char text[200];
    cJSON *j = NULL;

    if (!body || len == 0)
        return acc_fail(a, INF_LLM_BAD_RESPONSE, "empty response body");
    j = cJSON_ParseWithLength(body, len);
    if (!cJSON_IsObject(j)) {
        e = acc_fail(a, INF_LLM_BAD_RESPONSE, "malformed JSON body");
        goto out;
    }
    if (json_error_text(j, text, sizeof(text))) {
        e = acc_fail(a, INF_LLM_BAD_RESPONSE, "error in 2xx body: %s", text);
        goto out;
    }
    choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    c0 = cJSON_IsArray(choices) ? cJSON_GetArrayItem(choices, 0) : NULL;
    msg = cJSON_GetObjectItemCaseSensitive(c0, "message");
    if (!cJSON_IsObject(msg)) {
        e = acc_fail(a, INF_LLM_BAD_RESPONSE, "no choices[0].message in body");
        goto out;
    }
    content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    if (cJSON_IsString(content) && content->valuestring) {
        e = acc_append(a, content->valuestring);
        a->got_content = content->valuestring[0] != '\0';
    } else if (content && !cJSON_IsNull(content)) {
        e = acc_fail(a, INF_LLM_BAD_RESPONSE,
                     "message.content is not a string");
    } /* null or absent (tool calls): empty completion */
    if (e != INF_LLM_OK)
        goto out;
    if (!acc_set_str(&a->finish_reason,
                     cJSON_GetObjectItemCaseSensitive(c0, "finish_reason")) ||
        !acc_set_str(&a->model, cJSON_GetObjectItemCaseSensitive(j, "model"))) {
        e = acc_fail(a, INF_LLM_INTERNAL, "out of memory");
        goto out;
    }
    acc_usage(a, j);
out:
    cJSON_Delete(j);
    return e;
}

/* ---- header values --------------------------------------------------- */

/* Whole milliseconds, rounded up, of a non-negative amount of ms. */
static long
ceil_ms(double ms)
{
    long r;

    ms -= 1e-6; /* absorb binary representation error: 7.66s is 7660 ms */
    if (ms <= 0)
        return 0;
    if (ms >= (double)LLM_WAIT_MAX_MS)
        return LLM_WAIT_MAX_MS;
    r = (long)ms;
    if ((double)r < ms)
        r++;
    return r;
}

/* Parse digits with an optional fraction; returns characters used or 0. */
static size_t
parse_decimal(const char *s, double *out)
{
    const char *p = s;
    double v = 0, scale = 0.1;
    int digits = 0;

    while (isdigit((unsigned char)*p)) {
        if (v < 1e12)
            v = v * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p)) {
            v += (*p - '0') * scale;
            scale /= 10;
            p++;
            digits++;
        }
    }
    *out = v;
    return digits ? (size_t)(p - s) : 0;
}

int
inf_llm_parse_retry_after(const char *value, time_t now, long *ms)
{
    const char *p = value;
    double secs;
    size_t used;
    time_t t;

    if (!value)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (isdigit((unsigned char)*p)) {
        used = parse_decimal(p, &secs);
        p += used;
        while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
            p++;
        if (*p != '\0')
            return -1;
        *ms = ceil_ms(secs * 1000.0);
        return 0;
    }
    t = curl_getdate(p, NULL);
    if (t == (time_t)-1)
        return -1;
    *ms = t <= now ? 0 : ceil_ms((double)(t - now) * 1000.0);
    return 0;
}

/* Length of the unit at s and its size in nanoseconds, or 0. */
static size_t
go_unit(const char *s, double *ns)
{
    static const struct {
        const char *name;
        double ns;
    } units[] = {
        { "ns", 1 },          { "us", 1e3 },   { "\xC2\xB5s", 1e3 },
        { "\xCE\xBCs", 1e3 }, { "ms", 1e6 },   { "s", 1e9 },
        { "m", 60e9 },        { "h", 3600e9 },
    };
    size_t i, n;

    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        n = strlen(units[i].name);
        if (strncmp(s, units[i].name, n) == 0) {
            *ns = units[i].ns;
            return n;
        }
    }
    return 0;
}

int
inf_llm_parse_go_duration(const char *value, long *ms)
{
    const char *p = value;
    double total_ns = 0, num, unit;
    size_t used;

    if (!value)
        return -1;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '+')
        p++;
    if (p[0] == '0' && (p[1] == '\0' || isspace((unsigned char)p[1]))) {
        p++; /* Go allows a bare "0" */
    } else {
        if (*p == '\0' || isspace((unsigned char)*p))
            return -1;
        while (*p != '\0' && !isspace((unsigned char)*p)) {
            used = parse_decimal(p, &num);
            if (used == 0)
                return -1;
            p += used;
            used = go_unit(p, &unit);
            if (used == 0)
                return -1;
            p += used;
            total_ns += num * unit;
        }
    }
    while (isspace((unsigned char)*p))
        p++;
    if (*p != '\0')
        return -1;
    *ms = ceil_ms(total_ns / 1e6);
    return 0;
}
