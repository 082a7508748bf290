/*
 * Private to the LLM client: the client object shared by the retry loop
 * (llm.c) and the HTTP transport (llm_http.c). Nothing outside
 * inference/llm*.c includes this.
 */
#ifndef INF_LLM_INTERNAL_H
#define INF_LLM_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "core/config.h"
#include "core/metrics.h"
#include "inference/llm.h"

/* Cap of a buffered response body and of the completion text. */
#define LLM_BODY_MAX_BYTES ((size_t)4 << 20)

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
    uint64_t rng;         /* backoff jitter; owner thread only */
    atomic_int cancelled; /* set by inf_llm_cancel() from any thread */
    int sync_ready;       /* mu and cv initialised */
    pthread_mutex_t mu;   /* with cv: wakes a backoff sleep on cancel */
    pthread_cond_t cv;
    struct llm_metrics m;
    char errbuf[CURL_ERROR_SIZE];
};

/* Monotonic clock in milliseconds, and in microseconds. */
long inf_llm_now_ms(void);
long long inf_llm_now_us(void);
/* Whole milliseconds since start_us (inf_llm_now_us), rounded. The
 * difference of two readings in whole ms is off by up to 1 ms either way
 * (responses.llm_ms and ttft_ms come from here). */
long inf_llm_ms_since(long long start_us);

/* Set res->err and a sanitised one-line res->error without the API key. */
void inf_llm_set_error(const struct inf_llm *llm, struct inf_llm_result *res,
                       enum inf_llm_error e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* llm_http.c: configure llm->curl for cfg->llm_base_url; 1 ok, 0 failed
 * (what was allocated is released by inf_llm_http_done). */
int inf_llm_http_setup(struct inf_llm *llm);
void inf_llm_http_done(struct inf_llm *llm);

/*
 * One POST with a per-attempt timeout. Fills res on success (content,
 * finish_reason, model, tokens, ttft_ms) and always res->err,
 * res->http_status, and res->error on failure. *hint_ms is the wait the
 * server asked for before a retry, or -1.
 */
enum inf_llm_error inf_llm_http_attempt(struct inf_llm *llm, const char *body,
                                        int stream, long timeout_ms,
                                        struct inf_llm_result *res,
                                        long *hint_ms);

#endif
