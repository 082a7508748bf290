/*
 * OpenAI-compatible chat completion client over libcurl: request building,
 * one transfer per attempt (buffered JSON or incremental SSE), retries with
 * backoff and server hints, the echo provider, metrics and logs.
 *
 * Design: a struct inf_llm is confined to its worker thread, except for the
 * cancel flag (atomic) and the mutex/condvar pair used to wake a backoff
 * sleep. The libcurl easy handle is configured once in inf_llm_new() and
 * reused, so libcurl keeps the connection alive between calls. Per-attempt
 * state lives on the stack (struct llm_xfer) and is reached from the libcurl
 * callbacks. Parsing is in llm_parse.c.
 */
#include "inference/llm.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"
#include "inference/llm_parse.h"

#define LLM_BODY_MAX_BYTES         ((size_t)4 << 20) /* buffered body, content */
#define LLM_STREAM_MAX_BYTES       ((size_t)16 << 20) /* all bytes of one stream */
#define LLM_URL_MAX_BYTES          4096
#define LLM_BACKOFF_BASE_MS        250L
#define LLM_BACKOFF_CAP_MS         8000L
#define LLM_CONNECT_TIMEOUT_MAX_MS 5000L
#define LLM_DEFAULT_TIMEOUT_MS     30000L
#define LLM_DEADLINE_CAP_MS        (10L * 60 * 1000)
#define LLM_MIN_ATTEMPT_MS         50L /* do not start an attempt with less left */
#define LLM_MAX_ATTEMPTS_CAP       10

enum llm_mode { XFER_UNKNOWN = 0, XFER_BUFFER, XFER_SSE };

struct llm_metrics {
    struct core_metric *duration;
    struct core_metric *ttft;
    struct core_metric *errors;
    struct core_metric *retries;
    struct core_metric *tokens;
};

struct inf_llm {
    const struct core_config *cfg;
    CURL *curl;                 /* NULL: echo provider */
    struct curl_slist *headers; /* holds the Authorization header */
    char *url;
    uint64_t rng;
    atomic_int cancelled;
    int sync_ready; /* mu and cv initialised */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct llm_metrics m;
    char errbuf[CURL_ERROR_SIZE];
};

/* One attempt's transfer state, reached from the libcurl callbacks. */
struct llm_xfer {
    struct inf_llm *llm;
    int want_stream;
    enum llm_mode mode;
    struct core_buf body; /* XFER_BUFFER: the whole body */
    struct inf_sse sse;   /* XFER_SSE */
    struct inf_llm_acc acc;
    size_t received;
    long start_ms;
    long ttft_ms;                 /* -1 until the first content delta */
    enum inf_llm_error abort_err; /* why a callback stopped the transfer */
};

static const double llm_duration_buckets[] = { 0.05, 0.1, 0.25, 0.5, 1,  2,
                                               4,    8,   15,   30,  60, 120 };
static const double llm_ttft_buckets[] = { 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                           1,    2,     4,    8,   15,   30 };
static atomic_flag llm_echo_warned = ATOMIC_FLAG_INIT;

const char *
inf_llm_error_str(enum inf_llm_error e)
{
    switch (e) {
    case INF_LLM_OK:
        return "ok";
    case INF_LLM_TIMEOUT:
        return "timeout";
    case INF_LLM_CONNECT:
        return "connect";
    case INF_LLM_RATE_LIMIT:
        return "rate_limit";
    case INF_LLM_SERVER:
        return "server";
    case INF_LLM_CLIENT:
        return "client";
    case INF_LLM_BAD_RESPONSE:
        return "bad_response";
    case INF_LLM_STREAM_ERROR:
        return "stream_error";
    case INF_LLM_CANCELLED:
        return "cancelled";
    case INF_LLM_INTERNAL:
        return "internal";
    }
    return "unknown";
}

static long
llm_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* xorshift64*: jitter only, per handle, so no locking. */
static uint64_t
llm_rand(struct inf_llm *llm)
{
    uint64_t x = llm->rng;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    llm->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* ---- metrics ---------------------------------------------------------- */

static void
llm_metrics_register(struct llm_metrics *m)
{
    m->duration = core_metric_register(
        CORE_METRIC_HISTOGRAM, "parley_llm_request_duration_seconds",
        "LLM completion calls, all attempts and backoff included",
        llm_duration_buckets,
        sizeof(llm_duration_buckets) / sizeof(llm_duration_buckets[0]));
    m->ttft = core_metric_register(
        CORE_METRIC_HISTOGRAM, "parley_llm_ttft_seconds",
        "Time to the first token of successful LLM calls", llm_ttft_buckets,
        sizeof(llm_ttft_buckets) / sizeof(llm_ttft_buckets[0]));
    m->errors =
        core_metric_register(CORE_METRIC_COUNTER, "parley_llm_errors_total",
                             "Failed LLM attempts by class", NULL, 0);
    m->retries =
        core_metric_register(CORE_METRIC_COUNTER, "parley_llm_retries_total",
                             "LLM attempts after the first", NULL, 0);
    m->tokens =
        core_metric_register(CORE_METRIC_COUNTER, "parley_llm_tokens_total",
                             "LLM tokens as reported by the server", NULL, 0);
}

static void
llm_count_error(struct inf_llm *llm, enum inf_llm_error e)
{
    char labels[64];

    if (!llm->m.errors || e == INF_LLM_OK)
        return;
    snprintf(labels, sizeof(labels), "class=\"%s\"", inf_llm_error_str(e));
    core_metric_add(llm->m.errors, labels, 1);
}

static void
llm_observe(struct inf_llm *llm, const struct inf_llm_result *res)
{
    int ok = res->err == INF_LLM_OK;

    if (llm->m.duration)
        core_metric_observe(llm->m.duration,
                            ok ? "result=\"ok\"" : "result=\"error\"",
                            (double)res->total_ms / 1000.0);
    if (!ok)
        return;
    if (llm->m.ttft)
        core_metric_observe(llm->m.ttft, NULL, (double)res->ttft_ms / 1000.0);
    if (llm->m.tokens && res->prompt_tokens > 0)
        core_metric_add(llm->m.tokens, "direction=\"in\"",
                        (double)res->prompt_tokens);
    if (llm->m.tokens && res->completion_tokens > 0)
        core_metric_add(llm->m.tokens, "direction=\"out\"",
                        (double)res->completion_tokens);
}

/* ---- results ---------------------------------------------------------- */

void
inf_llm_result_done(struct inf_llm_result *res)
{
    if (!res)
        return;
    free(res->content);
    free(res->finish_reason);
    free(res->model);
    res->content = NULL;
    res->finish_reason = NULL;
    res->model = NULL;
}

static void
llm_result_init(struct inf_llm_result *res)
{
    memset(res, 0, sizeof(*res));
    res->prompt_tokens = -1;
    res->completion_tokens = -1;
}

/* Replace every occurrence of secret in s with "***". */
static void
llm_mask_secret(char *s, const char *secret)
{
    size_t n = secret ? strlen(secret) : 0;
    char *p;

    if (n < 4)
        return;
    while ((p = strstr(s, secret)) != NULL) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + n, strlen(p + n) + 1);
    }
}

static void llm_set_error(const struct inf_llm *llm, struct inf_llm_result *res,
                          enum inf_llm_error e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void
llm_set_error(const struct inf_llm *llm, struct inf_llm_result *res,
              enum inf_llm_error e, const char *fmt, ...)
{
    va_list ap;

    res->err = e;
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof(res->error), fmt, ap);
    va_end(ap);
    inf_llm_sanitize(res->error);
    llm_mask_secret(res->error, llm->cfg->llm_api_key);
}

static enum core_status
llm_status(enum inf_llm_error e)
{
    switch (e) {
    case INF_LLM_OK:
        return CORE_OK;
    case INF_LLM_TIMEOUT:
        return CORE_ERR_TIMEOUT;
    case INF_LLM_CONNECT:
        return CORE_ERR_UNAVAILABLE;
    case INF_LLM_CANCELLED:
        return CORE_ERR_UNAVAILABLE;
    case INF_LLM_RATE_LIMIT:
        return CORE_ERR_RATE_LIMIT;
    case INF_LLM_SERVER:
        return CORE_ERR_UPSTREAM;
    case INF_LLM_BAD_RESPONSE:
        return CORE_ERR_UPSTREAM;
    case INF_LLM_STREAM_ERROR:
        return CORE_ERR_UPSTREAM;
    case INF_LLM_CLIENT:
        return CORE_ERR_PERMANENT;
    case INF_LLM_INTERNAL:
        return CORE_ERR_INTERNAL;
    }
    return CORE_ERR_INTERNAL;
}

static int
llm_retryable(enum inf_llm_error e)
{
    return e == INF_LLM_TIMEOUT || e == INF_LLM_CONNECT ||
           e == INF_LLM_RATE_LIMIT || e == INF_LLM_SERVER ||
           e == INF_LLM_BAD_RESPONSE || e == INF_LLM_STREAM_ERROR;
}

/* ---- lifecycle -------------------------------------------------------- */

static int
llm_sync_init(struct inf_llm *llm)
{
    pthread_condattr_t attr;
    int ok;

    if (pthread_condattr_init(&attr) != 0)
        return 0;
    ok = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 &&
         pthread_cond_init(&llm->cv, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (!ok)
        return 0;
    if (pthread_mutex_init(&llm->mu, NULL) != 0) {
        pthread_cond_destroy(&llm->cv);
        return 0;
    }
    llm->sync_ready = 1;
    return 1;
}

static char *
llm_build_url(const char *base)
{
    struct core_buf b;
    size_t n = strlen(base);

    while (n > 0 && base[n - 1] == '/')
        n--;
    core_buf_init(&b, LLM_URL_MAX_BYTES);
    if (core_buf_add(&b, base, n) != CORE_OK ||
        core_buf_adds(&b, "/chat/completions") != CORE_OK) {
        core_buf_done(&b);
        return NULL;
    }
    return core_buf_take(&b);
}

static struct curl_slist *
llm_build_headers(const char *api_key)
{
    struct curl_slist *h = NULL, *t;
    struct core_buf auth;
    const char *fixed[] = { "Content-Type: application/json",
                            "Accept: application/json, text/event-stream",
                            "Expect:" };
    size_t i;

    for (i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        t = curl_slist_append(h, fixed[i]);
        if (!t)
            goto fail;
        h = t;
    }
    if (!api_key || !api_key[0])
        return h;
    core_buf_init(&auth, 8192);
    t = NULL;
    if (core_buf_printf(&auth, "Authorization: Bearer %s", api_key) == CORE_OK)
        t = curl_slist_append(h, auth.data);
    if (auth.data)
        explicit_bzero(auth.data, auth.len);
    core_buf_done(&auth);
    if (!t)
        goto fail;
    return t;
fail:
    curl_slist_free_all(h);
    return NULL;
}

static size_t llm_write_cb(char *ptr, size_t size, size_t nmemb, void *ud);

static int
llm_xferinfo_cb(void *ud, curl_off_t dltotal, curl_off_t dlnow,
                curl_off_t ultotal, curl_off_t ulnow)
{
    struct inf_llm *llm = ud;

    (void)dltotal;
    (void)dlnow;
    (void)ultotal;
    (void)ulnow;
    return atomic_load(&llm->cancelled) ? 1 : 0;
}

static int
llm_setup_curl(struct inf_llm *llm)
{
    const struct core_config *cfg = llm->cfg;
    CURL *c;

    llm->url = llm_build_url(cfg->llm_base_url);
    llm->headers = llm_build_headers(cfg->llm_api_key);
    llm->curl = c = curl_easy_init();
    if (!llm->url || !llm->headers || !c)
        return 0;
    return curl_easy_setopt(c, CURLOPT_URL, llm->url) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_HTTPHEADER, llm->headers) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_POST, 1L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 30L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 15L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") ==
               CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_USERAGENT, "parley") == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, llm_write_cb) ==
               CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, llm_xferinfo_cb) ==
               CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_XFERINFODATA, llm) == CURLE_OK &&
           curl_easy_setopt(c, CURLOPT_ERRORBUFFER, llm->errbuf) == CURLE_OK;
}

struct inf_llm *
inf_llm_new(const struct core_config *cfg)
{
    struct inf_llm *llm = calloc(1, sizeof(*llm));
    struct timespec ts;

    if (!llm)
        return NULL;
    llm->cfg = cfg;
    atomic_init(&llm->cancelled, 0);
    if (!llm_sync_init(llm))
        goto fail;
    clock_gettime(CLOCK_REALTIME, &ts);
    llm->rng = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
               (uint64_t)(uintptr_t)llm;
    if (llm->rng == 0)
        llm->rng = 0x9E3779B97F4A7C15ULL;
    llm_metrics_register(&llm->m);
    if (cfg->llm_base_url && cfg->llm_base_url[0]) {
        if (!llm_setup_curl(llm))
            goto fail;
    } else if (!atomic_flag_test_and_set(&llm_echo_warned)) {
        log_warn("llm echo provider", "%s",
                 "reason=\"PARLEY_LLM_BASE_URL unset: replies echo the user\"");
    }
    return llm;
fail:
    inf_llm_free(llm);
    return NULL;
}

void
inf_llm_free(struct inf_llm *llm)
{
    struct curl_slist *h;

    if (!llm)
        return;
    if (llm->curl)
        curl_easy_cleanup(llm->curl);
    for (h = llm->headers; h; h = h->next)
        explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(llm->headers);
    free(llm->url);
    if (llm->sync_ready) {
        pthread_cond_destroy(&llm->cv);
        pthread_mutex_destroy(&llm->mu);
    }
    free(llm);
}

void
inf_llm_cancel(struct inf_llm *llm)
{
    if (!llm)
        return;
    pthread_mutex_lock(&llm->mu);
    atomic_store(&llm->cancelled, 1);
    pthread_cond_broadcast(&llm->cv);
    pthread_mutex_unlock(&llm->mu);
}

int
inf_llm_is_echo(const struct inf_llm *llm)
{
    return llm && llm->curl == NULL;
}

/* Sleep ms or until cancelled; returns 1 when cancelled. */
static int
llm_sleep_ms(struct inf_llm *llm, long ms)
{
    struct timespec until;
    int cancelled;

    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&llm->mu);
    while (!atomic_load(&llm->cancelled)) {
        if (pthread_cond_timedwait(&llm->cv, &llm->mu, &until) == ETIMEDOUT)
            break;
    }
    cancelled = atomic_load(&llm->cancelled);
    pthread_mutex_unlock(&llm->mu);
    return cancelled;
}

/* ---- request ---------------------------------------------------------- */

static const char *
llm_model(const struct inf_llm *llm, const struct inf_llm_request *req)
{
    return req->model && req->model[0] ? req->model : llm->cfg->llm_model;
}

static char *
llm_build_body(const struct inf_llm *llm, const struct inf_llm_request *req,
               int stream)
{
    const struct core_config *cfg = llm->cfg;
    int max_tokens =
        req->max_tokens > 0 ? req->max_tokens : cfg->llm_max_tokens;
    double temp =
        req->temperature >= 0 ? req->temperature : cfg->llm_temperature;
    cJSON *root = cJSON_CreateObject(), *msgs, *m, *opts;
    char *out = NULL;
    size_t i;

    if (!root || !cJSON_AddStringToObject(root, "model", llm_model(llm, req)))
        goto out;
    msgs = cJSON_AddArrayToObject(root, "messages");
    for (i = 0; msgs && i < req->nmessages; i++) {
        m = cJSON_CreateObject();
        if (!m || !cJSON_AddItemToArray(msgs, m)) {
            cJSON_Delete(m);
            goto out;
        }
        if (!cJSON_AddStringToObject(m, "role", req->messages[i].role) ||
            !cJSON_AddStringToObject(m, "content", req->messages[i].content))
            goto out;
    }
    if (!msgs ||
        (max_tokens > 0 &&
         !cJSON_AddNumberToObject(root, "max_tokens", max_tokens)) ||
        (temp >= 0 && !cJSON_AddNumberToObject(root, "temperature", temp)) ||
        !cJSON_AddBoolToObject(root, "stream", stream))
        goto out;
    if (stream) {
        opts = cJSON_AddObjectToObject(root, "stream_options");
        if (!opts || !cJSON_AddTrueToObject(opts, "include_usage"))
            goto out;
    }
    out = cJSON_PrintUnformatted(root);
out:
    cJSON_Delete(root);
    return out;
}

static enum core_status
llm_validate(const struct inf_llm *llm, const struct inf_llm_request *req,
             struct inf_llm_result *res)
{
    const char *model;
    size_t i;

    if (!llm || !req || !req->messages || req->nmessages == 0) {
        snprintf(res->error, sizeof(res->error), "request without messages");
        res->err = INF_LLM_CLIENT;
        return CORE_ERR_INVALID;
    }
    for (i = 0; i < req->nmessages; i++) {
        if (!req->messages[i].role || !req->messages[i].content) {
            snprintf(res->error, sizeof(res->error),
                     "message %zu without role or content", i);
            res->err = INF_LLM_CLIENT;
            return CORE_ERR_INVALID;
        }
    }
    model = llm_model(llm, req);
    if (llm->curl && (!model || !model[0])) {
        snprintf(res->error, sizeof(res->error), "no model configured");
        res->err = INF_LLM_CLIENT;
        return CORE_ERR_INVALID;
    }
    return CORE_OK;
}

/* ---- echo provider ---------------------------------------------------- */

static int
llm_estimate_tokens(const char *s)
{
    size_t n = strlen(s) / 4 + 1;

    return n > (size_t)1 << 30 ? 1 << 30 : (int)n;
}

static enum core_status
llm_echo(struct inf_llm *llm, const struct inf_llm_request *req,
         struct inf_llm_result *res)
{
    const char *last = "";
    long start = llm_now_ms();
    struct core_buf b;
    size_t i, n;
    int in = 0;

    for (i = 0; i < req->nmessages; i++) {
        if (strcmp(req->messages[i].role, "user") == 0)
            last = req->messages[i].content;
        if (in < (1 << 30))
            in += llm_estimate_tokens(req->messages[i].content) + 4;
    }
    n = strlen(last);
    if (n > LLM_BODY_MAX_BYTES)
        n = LLM_BODY_MAX_BYTES;
    core_buf_init(&b, LLM_BODY_MAX_BYTES + 16);
    if (core_buf_adds(&b, "[echo] ") != CORE_OK ||
        core_buf_add(&b, last, n) != CORE_OK) {
        core_buf_done(&b);
        llm_set_error(llm, res, INF_LLM_INTERNAL, "out of memory");
        return CORE_ERR_NOMEM;
    }
    res->content = core_buf_take(&b);
    res->finish_reason = strdup("stop");
    res->model = strdup("echo");
    res->attempts = 1;
    if (!res->content || !res->finish_reason || !res->model) {
        inf_llm_result_done(res);
        llm_set_error(llm, res, INF_LLM_INTERNAL, "out of memory");
        return CORE_ERR_NOMEM;
    }
    res->prompt_tokens = in;
    res->completion_tokens = llm_estimate_tokens(res->content);
    res->ttft_ms = res->total_ms = llm_now_ms() - start;
    llm_observe(llm, res);
    return CORE_OK;
}

/* ---- one attempt ------------------------------------------------------ */

static enum core_status
llm_on_event(void *ctx, const char *data, size_t len)
{
    struct llm_xfer *x = ctx;

    return inf_llm_acc_chunk(&x->acc, data, len) == INF_LLM_OK
               ? CORE_OK
               : CORE_ERR_UPSTREAM;
}

static enum llm_mode
llm_pick_mode(struct llm_xfer *x)
{
    long status = 0;
    char *ct = NULL;

    curl_easy_getinfo(x->llm->curl, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(x->llm->curl, CURLINFO_CONTENT_TYPE, &ct);
    if (status < 200 || status > 299)
        return XFER_BUFFER;
    if (ct)
        return strncasecmp(ct, "text/event-stream", 17) == 0 ? XFER_SSE
                                                             : XFER_BUFFER;
    return x->want_stream ? XFER_SSE : XFER_BUFFER;
}

static size_t
llm_write_cb(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct llm_xfer *x = ud;
    size_t n = size * nmemb;
    int had_content;
    enum core_status st;

    if (atomic_load(&x->llm->cancelled)) {
        x->abort_err = INF_LLM_CANCELLED;
        return 0;
    }
    if (x->mode == XFER_UNKNOWN)
        x->mode = llm_pick_mode(x);
    if (x->mode == XFER_BUFFER) {
        if (core_buf_add(&x->body, ptr, n) == CORE_OK)
            return n;
        x->abort_err = INF_LLM_BAD_RESPONSE;
        snprintf(x->acc.error, sizeof(x->acc.error),
                 "response body over %zu bytes", x->body.max);
        return 0;
    }
    x->received += n;
    had_content = x->acc.got_content;
    st = x->received > LLM_STREAM_MAX_BYTES ? CORE_ERR_TOO_LARGE
                                            : inf_sse_feed(&x->sse, ptr, n);
    if (!had_content && x->acc.got_content)
        x->ttft_ms = llm_now_ms() - x->start_ms;
    if (st == CORE_OK)
        return n;
    if (x->acc.err != INF_LLM_OK) {
        x->abort_err = x->acc.err;
    } else {
        x->abort_err = INF_LLM_BAD_RESPONSE;
        snprintf(x->acc.error, sizeof(x->acc.error),
                 "stream line or size over the limit");
    }
    return 0;
}

static enum inf_llm_error
llm_classify_curl(CURLcode cc)
{
    switch (cc) {
    case CURLE_OPERATION_TIMEDOUT:
        return INF_LLM_TIMEOUT;
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_NOT_BUILT_IN:
        return INF_LLM_CLIENT;
    case CURLE_OUT_OF_MEMORY:
        return INF_LLM_INTERNAL;
    case CURLE_ABORTED_BY_CALLBACK:
        return INF_LLM_CANCELLED;
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_WEIRD_SERVER_REPLY:
        return INF_LLM_BAD_RESPONSE;
    default:
        return INF_LLM_CONNECT;
    }
}

static enum inf_llm_error
llm_classify_status(long status)
{
    if (status == 429 || status == 498) /* 498: Groq flex capacity */
        return INF_LLM_RATE_LIMIT;
    if (status == 408)
        return INF_LLM_TIMEOUT;
    if (status >= 500)
        return INF_LLM_SERVER;
    return INF_LLM_CLIENT;
}

/* A header of the last response parsed as a Go duration, or -1. */
static long
llm_header_duration(struct inf_llm *llm, const char *name)
{
    struct curl_header *h;
    long ms;

    if (curl_easy_header(llm->curl, name, 0, CURLH_HEADER, -1, &h) !=
            CURLHE_OK ||
        inf_llm_parse_go_duration(h->value, &ms) != 0)
        return -1;
    return ms;
}

static int
llm_header_is_zero(struct inf_llm *llm, const char *name)
{
    struct curl_header *h;

    return curl_easy_header(llm->curl, name, 0, CURLH_HEADER, -1, &h) ==
               CURLHE_OK &&
           strcmp(h->value, "0") == 0;
}

/*
 * How long the server asked us to wait, in ms, or -1: Retry-After on any
 * status, else on 429 Groq's x-ratelimit-reset-* of the exhausted limit
 * (tokens when neither says 0 remaining).
 */
static long
llm_retry_hint(struct inf_llm *llm, long status)
{
    struct curl_header *h;
    long ms, req_ms, tok_ms;
    int req0, tok0;

    if (curl_easy_header(llm->curl, "Retry-After", 0, CURLH_HEADER, -1, &h) ==
            CURLHE_OK &&
        inf_llm_parse_retry_after(h->value, time(NULL), &ms) == 0)
        return ms;
    if (status != 429)
        return -1;
    req_ms = llm_header_duration(llm, "x-ratelimit-reset-requests");
    tok_ms = llm_header_duration(llm, "x-ratelimit-reset-tokens");
    req0 = llm_header_is_zero(llm, "x-ratelimit-remaining-requests");
    tok0 = llm_header_is_zero(llm, "x-ratelimit-remaining-tokens");
    ms = -1;
    if (req0 && req_ms > ms)
        ms = req_ms;
    if (tok0 && tok_ms > ms)
        ms = tok_ms;
    if (ms < 0)
        ms = tok_ms >= 0 ? tok_ms : req_ms;
    return ms;
}

/* After a complete 2xx transfer: the completion, or why it is unusable. */
static enum inf_llm_error
llm_finish_body(struct llm_xfer *x)
{
    if (x->mode != XFER_SSE)
        return inf_llm_acc_body(&x->acc, x->body.data, x->body.len);
    if (inf_sse_end(&x->sse) != CORE_OK && x->acc.err == INF_LLM_OK)
        x->acc.err = INF_LLM_BAD_RESPONSE;
    if (x->acc.err != INF_LLM_OK)
        return x->acc.err;
    if (!x->acc.done && !x->acc.finish_reason) {
        snprintf(x->acc.error, sizeof(x->acc.error),
                 "stream ended before [DONE]");
        return x->acc.err = INF_LLM_STREAM_ERROR;
    }
    return INF_LLM_OK;
}

/* Move the completion of a successful attempt into res. */
static enum inf_llm_error
llm_take_result(struct llm_xfer *x, struct inf_llm_result *res)
{
    res->content = core_buf_take(&x->acc.content);
    if (!res->content)
        return INF_LLM_INTERNAL;
    res->finish_reason = x->acc.finish_reason;
    res->model = x->acc.model;
    x->acc.finish_reason = x->acc.model = NULL;
    res->prompt_tokens = x->acc.prompt_tokens;
    res->completion_tokens = x->acc.completion_tokens;
    res->ttft_ms = x->mode == XFER_SSE && x->ttft_ms >= 0
                       ? x->ttft_ms
                       : llm_now_ms() - x->start_ms;
    return INF_LLM_OK;
}

static enum inf_llm_error
llm_attempt(struct inf_llm *llm, const char *body, int stream, long timeout_ms,
            struct inf_llm_result *res, long *hint_ms)
{
    struct llm_xfer x;
    enum inf_llm_error e;
    long status = 0;
    CURLcode cc;
    CURL *c = llm->curl;

    memset(&x, 0, sizeof(x));
    x.llm = llm;
    x.want_stream = stream;
    x.ttft_ms = -1;
    x.start_ms = llm_now_ms();
    core_buf_init(&x.body, LLM_BODY_MAX_BYTES);
    inf_sse_init(&x.sse, LLM_BODY_MAX_BYTES, llm_on_event, &x);
    inf_llm_acc_init(&x.acc, LLM_BODY_MAX_BYTES);
    *hint_ms = -1;
    llm->errbuf[0] = '\0';

    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS,
                     timeout_ms < LLM_CONNECT_TIMEOUT_MAX_MS
                         ? timeout_ms
                         : LLM_CONNECT_TIMEOUT_MAX_MS);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
    cc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    res->http_status = status;

    if (cc != CURLE_OK && x.abort_err != INF_LLM_OK) {
        e = x.abort_err;
        if (e == INF_LLM_BAD_RESPONSE && (status < 200 || status > 299))
            e = llm_classify_status(status); /* oversized error body */
        llm_set_error(llm, res, e, "%s",
                      e == INF_LLM_CANCELLED ? "cancelled" : x.acc.error);
    } else if (cc != CURLE_OK) {
        e = llm_classify_curl(cc);
        llm_set_error(llm, res, e, "%s",
                      e == INF_LLM_CANCELLED ? "cancelled during transfer"
                      : llm->errbuf[0]       ? llm->errbuf
                                             : curl_easy_strerror(cc));
    } else if (status < 200 || status > 299) {
        char msg[200];

        e = llm_classify_status(status);
        inf_llm_error_message(x.body.data, x.body.len, msg, sizeof(msg));
        llm_set_error(llm, res, e, "HTTP %ld: %s", status, msg);
        *hint_ms = llm_retry_hint(llm, status);
    } else {
        e = llm_finish_body(&x);
        if (e == INF_LLM_OK)
            e = llm_take_result(&x, res);
        if (e != INF_LLM_OK)
            llm_set_error(llm, res, e, "%s",
                          x.acc.error[0] ? x.acc.error : "out of memory");
    }
    res->err = e;
    /* No dangling pointers into this stack frame between calls. */
    curl_easy_setopt(c, CURLOPT_WRITEDATA, NULL);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, NULL);
    core_buf_done(&x.body);
    inf_sse_done(&x.sse);
    inf_llm_acc_done(&x.acc);
    return e;
}

/* ---- the call --------------------------------------------------------- */

static long
llm_timeout_ms(const struct core_config *cfg)
{
    return cfg->llm_timeout_ms > 0 ? cfg->llm_timeout_ms
                                   : LLM_DEFAULT_TIMEOUT_MS;
}

static int
llm_max_attempts(const struct core_config *cfg)
{
    if (cfg->llm_max_attempts < 1)
        return 1;
    return cfg->llm_max_attempts > LLM_MAX_ATTEMPTS_CAP ? LLM_MAX_ATTEMPTS_CAP
                                                        : cfg->llm_max_attempts;
}

/* Full jitter: uniform in [0, min(cap, base * 2^(attempt-1))]. */
static long
llm_backoff_ms(struct inf_llm *llm, int attempt)
{
    long ceiling = LLM_BACKOFF_BASE_MS << (attempt > 6 ? 6 : attempt - 1);

    if (ceiling > LLM_BACKOFF_CAP_MS)
        ceiling = LLM_BACKOFF_CAP_MS;
    return (long)(llm_rand(llm) % (uint64_t)(ceiling + 1));
}

/*
 * Decide whether to retry after a failed attempt and sleep if so.
 * Returns 1 to try again, 0 to stop (res->err/error say why).
 */
static int
llm_before_retry(struct inf_llm *llm, struct inf_llm_result *res, int attempt,
                 int max_attempts, long hint_ms, long deadline)
{
    long wait, left;

    if (!llm_retryable(res->err) || attempt >= max_attempts)
        return 0;
    wait = hint_ms >= 0 ? hint_ms : llm_backoff_ms(llm, attempt);
    left = deadline - llm_now_ms();
    if (wait + LLM_MIN_ATTEMPT_MS > left) {
        log_warn("llm retry budget exhausted",
                 "attempt=%d http_status=%ld class=%s wait_ms=%ld left_ms=%ld",
                 attempt, res->http_status, inf_llm_error_str(res->err), wait,
                 left);
        return 0;
    }
    log_warn("llm attempt failed, retrying",
             "attempt=%d max_attempts=%d http_status=%ld class=%s wait_ms=%ld "
             "reason=\"%s\"",
             attempt, max_attempts, res->http_status,
             inf_llm_error_str(res->err), wait, res->error);
    if (llm->m.retries)
        core_metric_add(llm->m.retries, NULL, 1);
    if (llm_sleep_ms(llm, wait)) {
        llm_set_error(llm, res, INF_LLM_CANCELLED, "cancelled during backoff");
        return 0;
    }
    return 1;
}

enum core_status
inf_llm_complete(struct inf_llm *llm, const struct inf_llm_request *req,
                 struct inf_llm_result *res)
{
    const struct core_config *cfg;
    long start, deadline, timeout, hint, left;
    int attempt, max_attempts, stream;
    enum core_status st;
    char *body = NULL;

    llm_result_init(res);
    st = llm_validate(llm, req, res);
    if (st != CORE_OK)
        return st;
    if (!llm->curl)
        return llm_echo(llm, req, res);
    cfg = llm->cfg;
    stream = req->stream < 0 ? cfg->llm_stream : req->stream != 0;
    start = llm_now_ms();
    body = llm_build_body(llm, req, stream);
    if (!body) {
        llm_set_error(llm, res, INF_LLM_INTERNAL, "out of memory");
        st = CORE_ERR_NOMEM;
        goto out;
    }
    timeout = llm_timeout_ms(cfg);
    max_attempts = llm_max_attempts(cfg);
    deadline = start + (timeout > LLM_DEADLINE_CAP_MS / max_attempts
                            ? LLM_DEADLINE_CAP_MS
                            : timeout * max_attempts);
    for (attempt = 1;; attempt++) {
        if (atomic_load(&llm->cancelled)) {
            llm_set_error(llm, res, INF_LLM_CANCELLED, "cancelled");
            break;
        }
        res->attempts = attempt;
        left = deadline - llm_now_ms();
        if (left < 1)
            left = 1; /* CURLOPT_TIMEOUT_MS 0 would mean no timeout */
        llm_attempt(llm, body, stream, left < timeout ? left : timeout, res,
                    &hint);
        if (res->err == INF_LLM_OK)
            break;
        llm_count_error(llm, res->err);
        if (!llm_before_retry(llm, res, attempt, max_attempts, hint, deadline))
            break;
    }
    res->total_ms = llm_now_ms() - start;
    llm_observe(llm, res);
    st = llm_status(res->err);
    if (res->err == INF_LLM_CANCELLED)
        log_info("llm request cancelled", "attempts=%d total_ms=%ld",
                 res->attempts, res->total_ms);
    else if (st != CORE_OK)
        log_error("llm request failed",
                  "attempts=%d http_status=%ld class=%s total_ms=%ld "
                  "reason=\"%s\"",
                  res->attempts, res->http_status, inf_llm_error_str(res->err),
                  res->total_ms, res->error);
out:
    cJSON_free(body);
    return st;
}
