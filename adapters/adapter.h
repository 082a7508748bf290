/*
 * The adapter interface: one table of functions per chat platform, and the
 * normalized event model every platform's webhook is parsed into.
 *
 * Design: parse() turns one raw webhook body into a batch of normalized
 * events. The batch owns the parsed cJSON document; event string fields point
 * into it or into the batch's own string pool, so one adp_batch_free() frees
 * everything a request parsed. send_text() runs on delivery threads with
 * the thread's own CURL handle; read_posts() only describes its requests
 * (struct adp_post), which the caller makes (adp_post_perform). Neither
 * touches the database.
 * Adding a platform: a new file in adapters/ defining a struct adp_adapter,
 * and one line in adapters/registry.c.
 */
#ifndef ADAPTERS_ADAPTER_H
#define ADAPTERS_ADAPTER_H

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/status.h"

enum adp_event_kind {
    ADP_EV_MESSAGE = 0, /* inbound user message (text, media, ...) */
    ADP_EV_INTERACTIVE, /* button / list / quick reply / postback click */
    ADP_EV_REACTION,    /* reaction added (removed: .removed = true) */
    ADP_EV_STATUS,      /* sent / delivered / read / failed of our message */
    ADP_EV_REFERRAL,    /* ad/referral without a message (Messenger) */
    ADP_EV_OPT_OUT,     /* user_preferences stop, or STOP keyword */
    ADP_EV_OPT_IN,      /* user_preferences resume, or START keyword */
    ADP_EV_ECHO,        /* a message the business/page itself sent */
    ADP_EV_UNKNOWN      /* anything else: kept raw, never an error */
};

enum adp_msg_type {
    ADP_MSG_NONE = 0,
    ADP_MSG_TEXT,
    ADP_MSG_IMAGE,
    ADP_MSG_AUDIO,
    ADP_MSG_VIDEO,
    ADP_MSG_DOCUMENT,
    ADP_MSG_STICKER,
    ADP_MSG_LOCATION,
    ADP_MSG_CONTACTS,
    ADP_MSG_UNSUPPORTED
};

enum adp_status {
    ADP_STATUS_NONE = 0,
    ADP_STATUS_SENT = 1,      /* ranks: a later, lower rank never */
    ADP_STATUS_DELIVERED = 2, /* overwrites a higher one */
    ADP_STATUS_READ = 3,
    ADP_STATUS_FAILED = 4
};

/* Referral / ad attribution (WhatsApp messages[].referral, Messenger
 * referral objects). All fields optional (NULL). */
struct adp_referral {
    const char *source_type; /* "ad", "post", OPEN_THREAD source, ... */
    const char *source_id;
    const char *source_url;
    const char *headline;
    const char *body;
    const char *media_type;
    const char *media_url;
    const char *ctwa_clid;
    const char *ad_id;
    const char *ref;  /* Messenger m.me ?ref= */
    const char *type; /* added: Messenger/IG referral type ("OPEN_THREAD") */
};

struct adp_event {
    enum adp_event_kind kind;
    const char *platform;   /* "whatsapp", "messenger", "instagram" */
    const char *channel;    /* phone_number_id / page id / IG account id */
    const char *user_id;    /* stable platform user id (BSUID or wa_id,
                               PSID, IGSID) */
    const char *user_phone; /* WhatsApp wa_id when present, else NULL */
    const char *event_id;   /* platform id of this item (wamid, mid) */
    const char *dedupe_key; /* unique per platform: see adapters/README */
    int64_t platform_ts_ms; /* platform timestamp, ms since epoch; 0 unknown */
    const char *context_id; /* message this one replies to / reacts to /
                               reports status of; NULL if none */

    enum adp_msg_type msg_type; /* MESSAGE, ECHO */
    const char *text;           /* text body, caption, button title */
    const char *media_id;       /* media id or attachment url */
    const char *mime_type;

    const char *payload; /* INTERACTIVE: button id / postback payload */

    const char *emoji; /* REACTION */
    bool removed;      /* REACTION removed (unreact) */

    enum adp_status status; /* STATUS */
    int64_t watermark_ms;   /* Messenger/IG read/delivery watermark, else 0 */
    int error_code;         /* STATUS failed: platform error code */
    const char *error_title;

    bool has_referral; /* MESSAGE or REFERRAL carrying ad attribution */
    struct adp_referral referral;

    const cJSON *raw; /* this item's JSON, owned by the batch */
};

struct adp_batch {
    cJSON *root;              /* parsed document, owned */
    struct adp_event *events; /* owned */
    size_t n, cap;
    char **strings; /* owned strings made while parsing */
    size_t nstrings, capstrings;
    size_t unknown; /* how many events are ADP_EV_UNKNOWN */
};

/* Limits and capabilities of a platform's send API. */
enum adp_text_unit { ADP_UNIT_CHARS = 0, ADP_UNIT_BYTES };

struct adp_limits {
    size_t max_text;         /* per message */
    enum adp_text_unit unit; /* what max_text counts (chars: code points) */
    int max_buttons;         /* quick replies / reply buttons, 0 none */
    int max_button_title;    /* characters */
    size_t max_text_buttons; /* added: max text of a message that carries
                                buttons (WhatsApp interactive body: 1024
                                chars); same unit as max_text */
};

/* An incoming HTTP request as the adapter sees it. */
struct adp_request {
    const char *method;
    const char *body;
    size_t body_len;
    const char *(*header)(void *ctx, const char *name); /* NULL if absent */
    const char *(*query)(void *ctx, const char *name);  /* NULL if absent */
    void *ctx;
};

enum adp_send_class {
    ADP_SEND_OK = 0,
    ADP_SEND_RATE_LIMIT,    /* retry after retry_after_ms or backoff */
    ADP_SEND_TRANSIENT,     /* retry a few times */
    ADP_SEND_WINDOW_CLOSED, /* outside the 24-hour window: do not retry */
    ADP_SEND_UNREACHABLE,   /* user blocked / undeliverable */
    ADP_SEND_PERMANENT      /* config/auth/invalid: no retry */
};

struct adp_send_result {
    enum adp_send_class cls;
    long http_status; /* 0: no HTTP answer (connect error) */
    int error_code;   /* Graph error.code, 0 if none */
    int error_subcode;
    char error_title[256];
    char message_id[256]; /* platform id of what we sent (wamid, mid) */
    long retry_after_ms;  /* from Retry-After, else -1 */
    char trace_id[64];    /* added: Graph error.fbtrace_id, for logs */
};

/*
 * One HTTP POST an adapter wants made, described without being made, so
 * that the caller decides on which thread and handle (adp_post_perform).
 * auth is a secret: adp_post_done() wipes it.
 */
struct adp_post {
    char url[2400];
    char *auth; /* "Authorization: Bearer ...", malloc'd; NULL: none */
    char *body; /* JSON, malloc'd */
};

/* What came back from an adp_post. */
struct adp_post_answer {
    long http;            /* the HTTP status, 0 without an answer */
    struct core_buf body; /* at most 64 KiB */
    bool truncated;       /* the body went past that */
    long retry_after_ms;  /* from Retry-After, else -1 */
};

struct adp_button {
    const char *id; /* payload returned when clicked */
    const char *title;
};

struct adp_adapter {
    const char *name; /* "whatsapp": also the URL segment */
    struct adp_limits limits;

    /* Is this platform configured (its secrets set)? */
    bool (*enabled)(const struct core_config *cfg);

    /*
     * GET verification handshake. Returns the HTTP status; on 200 the
     * challenge text to echo goes into out (NUL-terminated).
     */
    int (*handshake)(const struct core_config *cfg,
                     const struct adp_request *req, char *out, size_t outlen);

    /* Verify the request's signature over the raw body: CORE_OK or
     * CORE_ERR_AUTH. Constant-time. */
    enum core_status (*authenticate)(const struct core_config *cfg,
                                     const struct adp_request *req);

    /*
     * Parse a raw body into normalized events appended to out (initialised
     * with adp_batch_init). CORE_ERR_INVALID for malformed JSON or a body
     * that is not this platform's envelope; unknown kinds are events, not
     * errors.
     */
    enum core_status (*parse)(const char *body, size_t len,
                              struct adp_batch *out);

    /*
     * Send one text message (already split to limits) to user_id on channel.
     * reply_to: platform id of the user message to quote, or NULL. buttons:
     * up to limits.max_buttons quick-reply buttons, or NULL. Blocking; uses
     * the caller's CURL handle. Fills res; returns CORE_OK only when the
     * platform accepted the message.
     */
    enum core_status (*send_text)(const struct core_config *cfg, CURL *curl,
                                  const char *channel, const char *user_id,
                                  const char *text, const char *reply_to,
                                  const struct adp_button *buttons,
                                  int nbuttons, struct adp_send_result *res);

    /*
     * The calls that mark the user's message read and show that a reply is
     * being typed, in the order they must be made (WhatsApp: one;
     * Messenger and Instagram: mark_seen, then typing_on), described
     * without being made: up to max of them into out, their number into
     * *n. On error *n is 0 and nothing is left to free; else the caller
     * frees each with adp_post_done(). NULL when the platform has no such
     * call. Best effort: a receipt that fails is not retried.
     */
    enum core_status (*read_posts)(const struct core_config *cfg,
                                   const char *channel, const char *user_id,
                                   const char *message_id, struct adp_post *out,
                                   int max, int *n);
};

/* POSTs (adapters/post.c). */
/* Make p's JSON body (which stays the caller's) and bearer header. */
enum core_status adp_post_make(struct adp_post *p, const char *url,
                               const char *token, const cJSON *body);
/* Wipe the secret and free what p holds; p may be zeroed or done twice. */
void adp_post_done(struct adp_post *p);
/*
 * Make p on curl, blocking (curl is reset before and after, so no option
 * leaks; its connections stay cached). Returns CURLE_OK or why the
 * transfer failed (CURLE_OUT_OF_MEMORY also for our own allocations); a
 * gets what came back either way, and its body is the caller's to free
 * with adp_post_answer_done().
 */
CURLcode adp_post_perform(CURL *curl, const struct adp_post *p,
                          struct adp_post_answer *a);
void adp_post_answer_done(struct adp_post_answer *a);

/* Registry: adapters/registry.c. */
const struct adp_adapter *adp_find(const char *name);
const struct adp_adapter *const *adp_all(size_t *n);

/* Batch helpers (adapters/batch.c). */
void adp_batch_init(struct adp_batch *b);
void adp_batch_free(struct adp_batch *b);
/* Append a zeroed event and return it, or NULL on allocation failure. */
struct adp_event *adp_batch_add(struct adp_batch *b);
/* Copy s into the batch's string pool (printf style). NULL on failure. */
const char *adp_batch_strf(struct adp_batch *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

const char *adp_event_kind_str(enum adp_event_kind k);
const char *adp_msg_type_str(enum adp_msg_type t);
const char *adp_status_str(enum adp_status s);
/* added: "ok", "rate_limit", "transient", "window_closed", ... */
const char *adp_send_class_str(enum adp_send_class c);

/*
 * Split text into pieces of at most max units (chars = code points, or
 * bytes), preferring paragraph, then sentence, then word boundaries, never
 * inside a UTF-8 sequence. Returns the number of pieces written to
 * out (each malloc'd; caller frees), or -1 on allocation failure or when
 * more than maxout pieces would be needed.
 */
int adp_split_text(const char *text, size_t max, enum adp_text_unit unit,
                   char **out, int maxout);

/* HMAC-SHA256 of body with secret, lowercase hex into out[65]. */
void adp_hmac_sha256_hex(const char *secret, const char *body, size_t len,
                         char out[65]);

#endif
