/*
 * HTTP transport of the LLM client: the libcurl easy handle's set-up and
 * one attempt (POST, then a buffered JSON body or an incremental SSE
 * stream), with the classification of failures and the server's wait hints
 * (Retry-After, x-ratelimit-reset-*).
 *
 * Design: per-attempt state lives on the caller's stack (struct llm_xfer)
 * and is reached from the libcurl callbacks; WRITEDATA and POSTFIELDS are
 * cleared before returning so the handle never points into a dead frame.
 * Only the cancel flag is read from here across threads (atomic).
 */
#include <curl/curl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/buf.h"
#include "inference/llm.h"
#include "inference/llm_internal.h"
#include "inference/llm_parse.h"

#define LLM_STREAM_MAX_BYTES       ((size_t)16 << 20) /* all bytes of one stream */
#define LLM_URL_MAX_BYTES          4096
#define LLM_CONNECT_TIMEOUT_MAX_MS 5000L

enum llm_mode { XFER_UNKNOWN = 0, XFER_BUFFER, XFER_SSE };

/* One attempt's transfer state, reached from the libcurl callbacks. */
struct llm_xfer {
    struct inf_llm *llm;
    int want_stream;
    enum llm_mode mode;
    struct core_buf body; /* XFER_BUFFER: the whole body */
    struct inf_sse sse;   /* XFER_SSE */
    struct inf_llm_acc acc;
    size_t received;
    long long start_us;
    long ttft_ms;                 /* -1 until the first content delta */
    enum inf_llm_error abort_err; /* why a callback stopped the transfer */
};

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

int
inf_llm_http_setup(struct inf_llm *llm)
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

void
inf_llm_http_done(struct inf_llm *llm)
{
    struct curl_slist *h;

    if (llm->curl)
        curl_easy_cleanup(llm->curl);
    for (h = llm->headers; h; h = h->next)
        explicit_bzero(h->data, strlen(h->data));
    curl_slist_free_all(llm->headers);
    free(llm->url);
    llm->curl = NULL;
    llm->headers = NULL;
    llm->url = NULL;
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
        x->ttft_ms = inf_llm_ms_since(x->start_us);
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
                       : inf_llm_ms_since(x->start_us);
    return INF_LLM_OK;
}

enum inf_llm_error
inf_llm_http_attempt(struct inf_llm *llm, const char *body, int stream,
                     long timeout_ms, struct inf_llm_result *res, long *hint_ms)
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
    x.start_us = inf_llm_now_us();
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
        inf_llm_set_error(llm, res, e, "%s",
                          e == INF_LLM_CANCELLED ? "cancelled" : x.acc.error);
    } else if (cc != CURLE_OK) {
        e = llm_classify_curl(cc);
        inf_llm_set_error(llm, res, e, "%s",
                          e == INF_LLM_CANCELLED ? "cancelled during transfer"
                          : llm->errbuf[0]       ? llm->errbuf
                                                 : curl_easy_strerror(cc));
    } else if (status < 200 || status > 299) {
        char msg[200];

        e = llm_classify_status(status);
        inf_llm_error_message(x.body.data, x.body.len, msg, sizeof(msg));
        inf_llm_set_error(llm, res, e, "HTTP %ld: %s", status, msg);
        *hint_ms = llm_retry_hint(llm, status);
    } else {
        e = llm_finish_body(&x);
        if (e == INF_LLM_OK)
            e = llm_take_result(&x, res);
        if (e != INF_LLM_OK)
            inf_llm_set_error(llm, res, e, "%s",
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
