/*
 * Private to adapters/: the pieces WhatsApp, Messenger and Instagram share
 * (all three are Meta Graph platforms): the GET verification handshake,
 * X-Hub-Signature-256 checking, strict JSON helpers, dedupe keys, and the
 * Graph send/error machinery. All functions are thread-safe (no shared
 * state); the send helpers use only the CURL handle they are given.
 */
#ifndef ADAPTERS_META_H
#define ADAPTERS_META_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "adapters/adapter.h"

#define ADP_META_JSON_MAX_DEPTH     64
#define ADP_META_ID_MAX             256 /* longer ids are not ids */
#define ADP_META_KEY_MAX            255 /* longer dedupe keys are hashed */
#define ADP_META_CHALLENGE_MAX      512
#define ADP_META_RETRY_AFTER_MAX_MS (24L * 3600 * 1000)

/* ---- verification and signatures (meta.c) ---- */

int adp_meta_handshake(const struct core_config *cfg,
                       const struct adp_request *req, char *out, size_t outlen);
enum core_status adp_meta_authenticate(const struct core_config *cfg,
                                       const struct adp_request *req);
/*
 * Check `header` ("sha256=<64 hex>") against HMAC-SHA256(secret, body).
 * CORE_OK or CORE_ERR_AUTH. If the raw body does not match and contains
 * non-ASCII bytes, the body re-escaped as \uXXXX is tried as well
 * (platforms.md §1.2); *escaped_match (may be NULL) says which form matched.
 */
enum core_status adp_meta_verify_signature(const char *secret,
                                           const char *header, const char *body,
                                           size_t len, bool *escaped_match);
/* Meta platforms are enabled when the app secret and `token` are set. */
bool adp_meta_enabled(const struct core_config *cfg, const char *token);

/* ---- JSON helpers (meta.c) ---- */

/*
 * Bounded strict parse of a Meta webhook: depth <= ADP_META_JSON_MAX_DEPTH,
 * valid UTF-8, one JSON value and only whitespace after it, a top-level
 * object whose "object" equals `object` and which has an "entry" array.
 * On success the document becomes out->root and *entries points at the
 * array. CORE_ERR_INVALID otherwise (out->root must be NULL on entry).
 */
enum core_status adp_meta_parse_root(const char *body, size_t len,
                                     const char *object, struct adp_batch *out,
                                     const cJSON **entries);
/* Nesting depth <= max and valid UTF-8 (no overlongs, no surrogates). */
bool adp_json_prescan(const char *body, size_t len, int max_depth);
bool adp_utf8_valid(const char *s, size_t len);
/* Decode one strict UTF-8 sequence: its length (1-4), or 0 if invalid. */
int adp_utf8_decode(const char *s, size_t len, uint32_t *cp);

const cJSON *adp_json_obj(const cJSON *o, const char *key);
const cJSON *adp_json_arr(const cJSON *o, const char *key);
/* A string member, or NULL when absent, not a string. Empty allowed. */
const char *adp_json_str(const cJSON *o, const char *key);
/* A non-empty string member, else NULL. */
const char *adp_json_text(const cJSON *o, const char *key);
/* An id: a string of 1..ADP_META_ID_MAX bytes without control characters,
 * else NULL. */
const char *adp_json_id(const cJSON *o, const char *key);
bool adp_json_true(const cJSON *o, const char *key);
/* An integer given as a JSON number or as a string of digits. */
bool adp_json_i64(const cJSON *v, int64_t *out);
/* A platform timestamp in ms: integers below 1e11 are taken as seconds.
 * 0 when absent or implausible. */
int64_t adp_meta_ts_ms(const cJSON *v);

/* ---- events (meta.c) ---- */

/* printf into the batch pool; results longer than ADP_META_KEY_MAX become
 * "<prefix up to the first ':'>h:<sha256 hex of the whole key>" (so a key
 * stays below PostgreSQL's btree row limit). NULL on allocation failure. */
const char *adp_meta_key(struct adp_batch *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Append an ADP_EV_UNKNOWN event for item (kept raw). key NULL: a hash of
 * the item's JSON. */
enum core_status adp_meta_unknown(struct adp_batch *b, const char *platform,
                                  const char *channel, const char *user,
                                  const cJSON *item, const char *key);
/* STOP-style keyword: ADP_EV_OPT_OUT, START-style: ADP_EV_OPT_IN, else
 * ADP_EV_MESSAGE (no keyword). Whole text, trimmed, ASCII case-insensitive. */
enum adp_event_kind adp_meta_keyword(const char *text);
/*
 * If events[idx] is an inbound text MESSAGE whose whole text is a STOP/START
 * keyword, append an OPT_OUT/OPT_IN event for the same user with
 * context_id = event_id = the message id and dedupe key
 * "optout:<id>" / "optin:<id>".
 */
enum core_status adp_meta_keyword_event(struct adp_batch *b, size_t idx);
/* After a successful parse: count unknown events from index `from`. */
void adp_meta_count_unknown(struct adp_batch *b, size_t from);

/* ---- send (meta.c) ---- */

void adp_send_result_init(struct adp_send_result *res);
/* Path segment safe to put in a URL: [A-Za-z0-9._-], 1..128 bytes. */
bool adp_meta_path_safe(const char *s);
/* Byte length of the longest prefix of s with at most max code points. */
size_t adp_utf8_prefix(const char *s, size_t max);
size_t adp_utf8_count(const char *s);

enum adp_send_class adp_meta_classify(long http_status, int code, int subcode,
                                      bool is_transient);
/* Fill res->error_* and trace_id from a Graph {"error": {...}} body;
 * returns false when there is no error object. */
bool adp_meta_parse_error(const cJSON *root, struct adp_send_result *res);
/* Retry-After: delta seconds or an IMF-fixdate; ms from now, or -1. */
long adp_meta_retry_after_ms(const char *value, time_t now);
enum core_status adp_meta_class_status(enum adp_send_class cls);
/*
 * POST body (JSON) to url with "Authorization: Bearer token". Fills res
 * (class, HTTP status, Graph error); on success *out (may be NULL) gets the
 * parsed response, which the caller deletes. Resets the handle before and
 * after use.
 */
enum core_status adp_meta_post(CURL *curl, const char *url, const char *token,
                               const cJSON *body, struct adp_send_result *res,
                               cJSON **out);
/* "{base}/{a}/messages" into out; CORE_ERR_INVALID when too long. */
enum core_status adp_meta_url(char *out, size_t outlen, const char *base,
                              const char *segment);

/* ---- Messenger / Instagram messaging (meta_messaging.c) ---- */

/* Where a Send API call goes and what it may carry. */
struct adp_meta_dest {
    const struct adp_limits *limits;
    const char *token; /* bearer token */
    const char *url;   /* {graph}/{me|id}/messages */
};

enum core_status adp_meta_messaging_parse(const char *body, size_t len,
                                          struct adp_batch *out,
                                          const char *object,
                                          const char *platform);
enum core_status adp_meta_messaging_send(const struct adp_meta_dest *dest,
                                         CURL *curl, const char *user_id,
                                         const char *text,
                                         const struct adp_button *buttons,
                                         int nbuttons,
                                         struct adp_send_result *res);
/* mark_seen, then typing_on (adp_adapter.read_posts). */
enum core_status adp_meta_messaging_read_posts(const char *token,
                                               const char *url,
                                               const char *user_id,
                                               struct adp_post *out, int max,
                                               int *n);

#endif
