/*
 * Private to the LLM client (inference/llm.c and its unit tests): the
 * incremental Server-Sent Events parser, the accumulator that turns
 * OpenAI chat completion bodies or stream chunks into a completion, and the
 * Retry-After / Go-duration header parsers. No network, no globals.
 */
#ifndef INF_LLM_PARSE_H
#define INF_LLM_PARSE_H

#include <stddef.h>
#include <time.h>

#include "core/buf.h"
#include "core/status.h"
#include "inference/llm.h"

/*
 * SSE framing (WHATWG EventSource rules, as far as chat completions need):
 * lines end in \n, \r\n or \r and may be split anywhere across feeds;
 * ":" lines are comments; "data:" lines of one event are joined with \n;
 * a blank line dispatches the event; other fields (event, id, retry) are
 * ignored. on_event gets the event's data (NUL-terminated); a non-OK return
 * stops the parser and is returned by inf_sse_feed().
 */
struct inf_sse {
    struct core_buf line; /* current, unterminated line */
    struct core_buf data; /* data of the current event */
    int have_data;        /* a data field was seen in this event */
    int last_cr;          /* the previous byte was \r: skip a following \n */
    int first_line;       /* strip a UTF-8 BOM from the very first line */
    enum core_status (*on_event)(void *ctx, const char *data, size_t len);
    void *ctx;
};

void inf_sse_init(struct inf_sse *p, size_t max_event_bytes,
                  enum core_status (*on_event)(void *ctx, const char *data,
                                               size_t len),
                  void *ctx);
void inf_sse_done(struct inf_sse *p);
/* CORE_ERR_TOO_LARGE when a line or event exceeds max_event_bytes. */
enum core_status inf_sse_feed(struct inf_sse *p, const char *buf, size_t n);
/* End of stream: dispatch a last event that had no trailing blank line. */
enum core_status inf_sse_end(struct inf_sse *p);

/* What one attempt produced, from a whole body or from stream chunks. */
struct inf_llm_acc {
    struct core_buf content;
    char *finish_reason;   /* malloc'd, last one seen */
    char *model;           /* malloc'd, first one seen */
    int prompt_tokens;     /* -1 if unknown */
    int completion_tokens; /* -1 if unknown */
    int done;              /* "data: [DONE]" seen */
    int got_content;       /* a non-empty content delta was seen */
    enum inf_llm_error err;
    char error[256];
};

void inf_llm_acc_init(struct inf_llm_acc *a, size_t max_content_bytes);
void inf_llm_acc_done(struct inf_llm_acc *a);
/*
 * One SSE event's data: "[DONE]", a chunk object, or several JSON values.
 * Returns INF_LLM_OK or the class of the problem (also kept in a->err):
 * INF_LLM_STREAM_ERROR for an error object, INF_LLM_BAD_RESPONSE for
 * something that is not a chunk.
 */
enum inf_llm_error inf_llm_acc_chunk(struct inf_llm_acc *a, const char *data,
                                     size_t len);
/* A whole non-stream 2xx body. */
enum inf_llm_error inf_llm_acc_body(struct inf_llm_acc *a, const char *body,
                                    size_t len);

/*
 * The server's reason from an error body: error.message (OpenAI, Groq,
 * llama.cpp, Ollama, recent vLLM), message (older vLLM), a string error,
 * or else the start of the body. One line, quotes replaced, truncated.
 */
void inf_llm_error_message(const char *body, size_t len, char *out,
                           size_t outlen);
/* Make s one printable line: control bytes -> ' ', '"' and '\\' -> '\''. */
void inf_llm_sanitize(char *s);

/*
 * Retry-After: delay-seconds (fractions tolerated) or an HTTP-date,
 * relative to now. A date in the past gives 0. Returns 0 and *ms, or -1.
 */
int inf_llm_parse_retry_after(const char *value, time_t now, long *ms);
/*
 * Go duration as sent in Groq's x-ratelimit-reset-*: "1m2.5s", "7.66s",
 * "120ms", "2h", "0"; units h m s ms us/µs ns. Rounded up to whole
 * milliseconds. Returns 0 and *ms, or -1.
 */
int inf_llm_parse_go_duration(const char *value, long *ms);

#endif
