/*
 * OpenAI-compatible chat completion client: lifecycle, request building,
 * the retry loop (backoff with full jitter or the server's hint, overall
 * deadline, cancellation), the echo provider, metrics and logs. One HTTP
 * attempt is in llm_http.c, parsing in llm_parse.c.
 *
 * Design: a struct inf_llm is confined to its worker thread, except for the
 * cancel flag (atomic) and the mutex/condvar pair used to wake a backoff
 * sleep. The libcurl easy handle is configured once in inf_llm_new() and
 * reused, so libcurl keeps the connection alive between calls.
 */
#include "inference/llm.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"
#include "inference/llm_internal.h"
#include "inference/llm_parse.h"

#define LLM_BACKOFF_BASE_MS    250L
#define LLM_BACKOFF_CAP_MS     8000L
#define LLM_DEFAULT_TIMEOUT_MS 30000L
#define LLM_DEADLINE_CAP_MS    (10L * 60 * 1000)
#define LLM_MIN_ATTEMPT_MS     50L /* do not start an attempt with less left */
#define LLM_MAX_ATTEMPTS_CAP   10

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

long
inf_llm_now_ms(void)
{
    return inf_llm_now_us() / 1000;
}

long long
inf_llm_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

long
inf_llm_ms_since(long long start_us)
{
    return (long)((inf_llm_now_us() - start_us + 500) / 1000);
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
        memcpy(p, "***", 3); /* NOLINT(bugprone-not-null-terminated-result) */
        memmove(p + 3, p + n, strlen(p + n) + 1);
    }
}

void
inf_llm_set_error(const struct inf_llm *llm, struct inf_llm_result *res,
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
        if (!inf_llm_http_setup(llm))
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
    if (!llm)
        return;
    inf_llm_http_done(llm);
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
    long long start_us = inf_llm_now_us();
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
        inf_llm_set_error(llm, res, INF_LLM_INTERNAL, "out of memory");
        return CORE_ERR_NOMEM;
    }
    res->content = core_buf_take(&b);
    res->finish_reason = strdup("stop");
    res->model = strdup("echo");
    res->attempts = 1;
    if (!res->content || !res->finish_reason || !res->model) {
        inf_llm_result_done(res);
        inf_llm_set_error(llm, res, INF_LLM_INTERNAL, "out of memory");
        return CORE_ERR_NOMEM;
    }
    res->prompt_tokens = in;
    res->completion_tokens = llm_estimate_tokens(res->content);
    res->ttft_ms = res->total_ms = inf_llm_ms_since(start_us);
    llm_observe(llm, res);
    return CORE_OK;
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
    left = deadline - inf_llm_now_ms();
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
        inf_llm_set_error(llm, res, INF_LLM_CANCELLED,
                          "cancelled during backoff");
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
    long long start_us;
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
    start_us = inf_llm_now_us();
    start = (long)(start_us / 1000);
    body = llm_build_body(llm, req, stream);
    if (!body) {
        inf_llm_set_error(llm, res, INF_LLM_INTERNAL, "out of memory");
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
            inf_llm_set_error(llm, res, INF_LLM_CANCELLED, "cancelled");
            break;
        }
        res->attempts = attempt;
        left = deadline - inf_llm_now_ms();
        if (left < 1)
            left = 1; /* CURLOPT_TIMEOUT_MS 0 would mean no timeout */
        inf_llm_http_attempt(llm, body, stream, left < timeout ? left : timeout,
                             res, &hint);
        if (res->err == INF_LLM_OK)
            break;
        llm_count_error(llm, res->err);
        if (!llm_before_retry(llm, res, attempt, max_attempts, hint, deadline))
            break;
    }
    res->total_ms = inf_llm_ms_since(start_us);
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
