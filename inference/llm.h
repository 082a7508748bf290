/*
 * OpenAI-compatible chat completion client (Groq, vLLM, llama.cpp server,
 * Ollama, OpenAI): one blocking call per inference, with timeouts, retries
 * with backoff, Retry-After / x-ratelimit-reset-* handling and SSE streaming.
 *
 * Design: one struct inf_llm per worker thread. It owns a libcurl easy
 * handle that is reused across calls, so the connection to the LLM server
 * stays open (keep-alive). Only inf_llm_cancel() may be called from another
 * thread. When cfg->llm_base_url is NULL or empty the client is a
 * deterministic "echo" provider that never touches the network.
 * curl_global_init() must have been called before the first inf_llm_new().
 */
#ifndef INF_LLM_H
#define INF_LLM_H

#include <stddef.h>

#include "core/config.h"
#include "core/status.h"

struct inf_llm_message {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
};

struct inf_llm_request {
    const struct inf_llm_message *messages;
    size_t nmessages;
    const char *model;  /* NULL: cfg->llm_model */
    int max_tokens;     /* 0: cfg->llm_max_tokens */
    double temperature; /* <0: cfg->llm_temperature */
    int stream;         /* -1: cfg->llm_stream, 0/1 explicit */
};

enum inf_llm_error {
    INF_LLM_OK = 0,
    INF_LLM_TIMEOUT,      /* transfer or connect timed out (also HTTP 408) */
    INF_LLM_CONNECT,      /* could not connect, connection dropped */
    INF_LLM_RATE_LIMIT,   /* HTTP 429 (and Groq's 498 capacity answer) */
    INF_LLM_SERVER,       /* HTTP 5xx */
    INF_LLM_CLIENT,       /* 4xx other than 429, bad URL: not retried */
    INF_LLM_BAD_RESPONSE, /* 2xx with a body we cannot use, or too large */
    INF_LLM_STREAM_ERROR, /* error inside an SSE stream, or cut short */
    INF_LLM_CANCELLED,    /* inf_llm_cancel() was called: not retried */
    INF_LLM_INTERNAL      /* out of memory, libcurl setup failed */
};

struct inf_llm_result {
    char *content;         /* malloc'd completion text */
    char *finish_reason;   /* malloc'd or NULL */
    char *model;           /* model reported by the server (malloc'd) */
    int prompt_tokens;     /* -1 if unknown */
    int completion_tokens; /* -1 if unknown */
    long ttft_ms;  /* last attempt: to first content delta (stream) or to
                      the full response (non-stream) */
    long total_ms; /* across all attempts, including backoff */
    int attempts;
    enum inf_llm_error err; /* of the last attempt */
    long http_status;       /* of the last attempt, 0 when none */
    char error[256];        /* one-line reason, no secrets */
};

struct inf_llm;

/*
 * One client per worker thread. cfg must outlive it. Returns NULL when out
 * of memory or libcurl cannot be set up. Registers the parley_llm_* metrics.
 */
struct inf_llm *inf_llm_new(const struct core_config *cfg);
/* Accepts NULL. Not while a call on the handle is running. */
void inf_llm_free(struct inf_llm *llm);

/*
 * Blocking completion with retries: up to cfg->llm_max_attempts attempts on
 * timeouts, connection errors, 429, 5xx, stream errors and malformed bodies,
 * with exponential backoff (full jitter) or the server's Retry-After, never
 * past an overall deadline of llm_timeout_ms * attempts (capped at 10 min).
 * res is always (re)initialised and must be released with
 * inf_llm_result_done(). Returns CORE_OK with res filled, or:
 *   CORE_ERR_INVALID     request without messages / model
 *   CORE_ERR_TIMEOUT     INF_LLM_TIMEOUT
 *   CORE_ERR_UNAVAILABLE INF_LLM_CONNECT, INF_LLM_CANCELLED
 *   CORE_ERR_RATE_LIMIT  INF_LLM_RATE_LIMIT
 *   CORE_ERR_UPSTREAM    INF_LLM_SERVER, INF_LLM_BAD_RESPONSE,
 *                        INF_LLM_STREAM_ERROR
 *   CORE_ERR_PERMANENT   INF_LLM_CLIENT
 *   CORE_ERR_NOMEM / CORE_ERR_INTERNAL  INF_LLM_INTERNAL
 * with res->err and res->error set. Only the owning thread may call it.
 */
enum core_status inf_llm_complete(struct inf_llm *llm,
                                  const struct inf_llm_request *req,
                                  struct inf_llm_result *res);

/* Free what a result owns; safe on a zeroed or already-done result. */
void inf_llm_result_done(struct inf_llm_result *res);

/*
 * Ask a call running on another thread to give up soon: a backoff sleep
 * wakes at once, a transfer is aborted within about a second. Sticky: every
 * later call on this handle fails with INF_LLM_CANCELLED (for shutdown).
 * Thread-safe.
 */
void inf_llm_cancel(struct inf_llm *llm);

/* 1 when this client is the built-in echo provider (no base URL). */
int inf_llm_is_echo(const struct inf_llm *llm);

/* Stable short name of an error class ("timeout", "rate_limit", ...). */
const char *inf_llm_error_str(enum inf_llm_error e);

#endif
