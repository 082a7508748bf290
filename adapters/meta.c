/*
 * Shared machinery of the Meta adapters (WhatsApp, Messenger, Instagram):
 * verification handshake, X-Hub-Signature-256, strict bounded JSON helpers,
 * dedupe keys, and Graph API POSTs with error classification.
 * Stateless and thread-safe; see adapters/meta.h and adapters/README.md.
 */
#include "adapters/meta.h"

#include <ctype.h>
#include <math.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/buf.h"
#include "core/log.h"

static const char hexdig[] = "0123456789abcdef";

static void
hex_encode(const unsigned char *p, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hexdig[p[i] >> 4];
        out[2 * i + 1] = hexdig[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static int
hex_val(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

void
adp_hmac_sha256_hex(const char *secret, const char *body, size_t len,
                    char out[65])
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t klen = secret ? strlen(secret) : 0;

    if (klen > 0x7fffffff ||
        !HMAC(EVP_sha256(), secret ? secret : "", (int)klen,
              (const unsigned char *)(body ? body : ""), len, mac, &maclen) ||
        maclen != 32) {
        memset(out, '0', 64);
        out[64] = '\0';
        return;
    }
    hex_encode(mac, 32, out);
    OPENSSL_cleanse(mac, sizeof(mac));
}

/* ---- UTF-8 ---- */

int
adp_utf8_decode(const char *s, size_t len, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)s;
    unsigned char lo = 0x80, hi = 0xbf;
    int n, i;
    uint32_t c;

    if (len == 0)
        return 0;
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        n = 2;
        c = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        n = 3;
        c = p[0] & 0x0f;
        if (p[0] == 0xe0)
            lo = 0xa0;
        else if (p[0] == 0xed)
            hi = 0x9f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        n = 4;
        c = p[0] & 0x07;
        if (p[0] == 0xf0)
            lo = 0x90;
        else if (p[0] == 0xf4)
            hi = 0x8f;
    } else {
        return 0;
    }
    if (len < (size_t)n)
        return 0;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (i = 1; i < n; i++) {
        if (i > 1 && (p[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (p[i] & 0x3f);
    }
    *cp = c;
    return n;
}

bool
adp_utf8_valid(const char *s, size_t len)
{
    size_t i = 0;
    uint32_t cp;
    int n;

    while (i < len) {
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        n = adp_utf8_decode(s + i, len - i, &cp);
        if (n == 0)
            return false;
        i += (size_t)n;
    }
    return true;
}

size_t
adp_utf8_prefix(const char *s, size_t max)
{
    size_t i = 0, count = 0, len = strlen(s);
    uint32_t cp;
    int n;

    while (i < len && count < max) {
        n = adp_utf8_decode(s + i, len - i, &cp);
        i += n > 0 ? (size_t)n : 1;
        count++;
    }
    return i;
}

size_t
adp_utf8_count(const char *s)
{
    size_t i = 0, count = 0, len = strlen(s);
    uint32_t cp;
    int n;

    while (i < len) {
        n = adp_utf8_decode(s + i, len - i, &cp);
        i += n > 0 ? (size_t)n : 1;
        count++;
    }
    return count;
}

/* ---- handshake and signature ---- */

/* Constant-time equality of two secrets of any length. */
static bool
secret_equal(const char *a, const char *b)
{
    unsigned char da[SHA256_DIGEST_LENGTH], db[SHA256_DIGEST_LENGTH];

    SHA256((const unsigned char *)a, strlen(a), da);
    SHA256((const unsigned char *)b, strlen(b), db);
    return CRYPTO_memcmp(da, db, sizeof(da)) == 0;
}

int
adp_meta_handshake(const struct core_config *cfg, const struct adp_request *req,
                   char *out, size_t outlen)
{
    const char *mode, *token, *challenge;
    size_t i, n;

    if (out && outlen)
        out[0] = '\0';
    if (!cfg || !cfg->meta_verify_token || !cfg->meta_verify_token[0] || !req ||
        !req->query || !out)
        return 403;
    mode = req->query(req->ctx, "hub.mode");
    token = req->query(req->ctx, "hub.verify_token");
    challenge = req->query(req->ctx, "hub.challenge");
    if (!mode || strcmp(mode, "subscribe") != 0 || !token || !challenge)
        return 403;
    if (!secret_equal(token, cfg->meta_verify_token))
        return 403;
    n = strlen(challenge);
    if (n == 0 || n > ADP_META_CHALLENGE_MAX || n >= outlen)
        return 403;
    /* Echoed as text/plain: printable ASCII only. */
    for (i = 0; i < n; i++)
        if ((unsigned char)challenge[i] < 0x21 ||
            (unsigned char)challenge[i] > 0x7e)
            return 403;
    memcpy(out, challenge, n + 1);
    return 200;
}

/* HMAC of the body with every non-ASCII code point written as \uXXXX. */
static bool
hmac_escaped(const char *secret, const char *body, size_t len,
             unsigned char mac[32])
{
    static char digest[] = "SHA256";
    EVP_MAC *m = NULL;
    EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    char chunk[4096];
    size_t i = 0, n = 0, outl = 0;
    uint32_t cp, hs, ls;
    bool ok = false;
    int k;

    m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!m)
        goto out;
    ctx = EVP_MAC_CTX_new(m);
    if (!ctx)
        goto out;
    params[0] =
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[1] = OSSL_PARAM_construct_end();
    if (!EVP_MAC_init(ctx, (const unsigned char *)secret, strlen(secret),
                      params))
        goto out;
    while (i < len) {
        if (n > sizeof(chunk) - 16) {
            if (!EVP_MAC_update(ctx, (const unsigned char *)chunk, n))
                goto out;
            n = 0;
        }
        if ((unsigned char)body[i] < 0x80) {
            chunk[n++] = body[i++];
            continue;
        }
        k = adp_utf8_decode(body + i, len - i, &cp);
        if (k == 0)
            goto out; /* not UTF-8: no escaped form exists */
        i += (size_t)k;
        if (cp >= 0x10000) {
            hs = 0xd800 + ((cp - 0x10000) >> 10);
            ls = 0xdc00 + ((cp - 0x10000) & 0x3ff);
            n += (size_t)snprintf(chunk + n, sizeof(chunk) - n,
                                  "\\u%04x\\u%04x", (unsigned)hs, (unsigned)ls);
        } else {
            n += (size_t)snprintf(chunk + n, sizeof(chunk) - n, "\\u%04x",
                                  (unsigned)cp);
        }
    }
    if (n && !EVP_MAC_update(ctx, (const unsigned char *)chunk, n))
        goto out;
    if (!EVP_MAC_final(ctx, mac, &outl, 32) || outl != 32)
        goto out;
    ok = true;
out:
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(m);
    return ok;
}

enum core_status
adp_meta_verify_signature(const char *secret, const char *header,
                          const char *body, size_t len, bool *escaped_match)
{
    unsigned char want[32], mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t i, klen;
    int hi, lo;
    bool nonascii = false;

    if (escaped_match)
        *escaped_match = false;
    if (!secret || !secret[0] || !header || (!body && len))
        return CORE_ERR_AUTH;
    klen = strlen(secret);
    if (klen > 0x7fffffff || strncasecmp(header, "sha256=", 7) != 0)
        return CORE_ERR_AUTH;
    header += 7;
    if (strlen(header) != 64)
        return CORE_ERR_AUTH;
    for (i = 0; i < 32; i++) {
        hi = hex_val((unsigned char)header[2 * i]);
        lo = hex_val((unsigned char)header[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return CORE_ERR_AUTH;
        want[i] = (unsigned char)(hi << 4 | lo);
    }
    if (!body)
        body = "";
    if (!HMAC(EVP_sha256(), secret, (int)klen, (const unsigned char *)body, len,
              mac, &maclen) ||
        maclen != 32)
        return CORE_ERR_AUTH;
    if (CRYPTO_memcmp(mac, want, 32) == 0)
        return CORE_OK;
    for (i = 0; i < len && !nonascii; i++)
        nonascii = (unsigned char)body[i] >= 0x80;
    if (!nonascii || !hmac_escaped(secret, body, len, mac))
        return CORE_ERR_AUTH;
    if (CRYPTO_memcmp(mac, want, 32) != 0)
        return CORE_ERR_AUTH;
    if (escaped_match)
        *escaped_match = true;
    return CORE_OK;
}

enum core_status
adp_meta_authenticate(const struct core_config *cfg,
                      const struct adp_request *req)
{
    const char *sig;
    bool escaped = false;
    enum core_status st;

    if (!cfg || !req || !req->header)
        return CORE_ERR_AUTH;
    sig = req->header(req->ctx, "X-Hub-Signature-256");
    st = adp_meta_verify_signature(cfg->meta_app_secret, sig, req->body,
                                   req->body_len, &escaped);
    if (st == CORE_OK && escaped)
        log_info("meta signature matched escaped-unicode body", "bytes=%zu",
                 req->body_len);
    return st;
}

bool
adp_meta_enabled(const struct core_config *cfg, const char *token)
{
    return cfg && cfg->meta_app_secret && cfg->meta_app_secret[0] && token &&
           token[0];
}

/* ---- JSON ---- */

bool
adp_json_prescan(const char *body, size_t len, int max_depth)
{
    size_t i = 0;
    int depth = 0, n;
    bool instr = false;
    uint32_t cp;
    unsigned char c;

    while (i < len) {
        c = (unsigned char)body[i];
        if (c >= 0x80) {
            n = adp_utf8_decode(body + i, len - i, &cp);
            if (n == 0)
                return false;
            i += (size_t)n;
            continue;
        }
        if (instr) {
            if (c == '\\')
                i++; /* the escaped char is ASCII in valid JSON */
            else if (c == '"')
                instr = false;
        } else if (c == '"') {
            instr = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth)
                return false;
        } else if (c == '}' || c == ']') {
            depth--;
        }
        i++;
    }
    return true;
}

enum core_status
adp_meta_parse_root(const char *body, size_t len, const char *object,
                    struct adp_batch *out, const cJSON **entries)
{
    const char *end = NULL, *obj;
    const cJSON *entry;
    cJSON *root;

    if (!out || out->root || !body || len == 0 ||
        !adp_json_prescan(body, len, ADP_META_JSON_MAX_DEPTH))
        return CORE_ERR_INVALID;
    root = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    if (!root)
        return CORE_ERR_INVALID;
    while (end && end < body + len &&
           (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
        end++;
    obj = adp_json_str(root, "object");
    entry = adp_json_arr(root, "entry");
    if (end != body + len || !cJSON_IsObject(root) || !obj ||
        strcmp(obj, object) != 0 || !entry) {
        cJSON_Delete(root);
        return CORE_ERR_INVALID;
    }
    out->root = root;
    *entries = entry;
    return CORE_OK;
}

const cJSON *
adp_json_obj(const cJSON *o, const char *key)
{
    const cJSON *v =
        cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;

    return cJSON_IsObject(v) ? v : NULL;
}

const cJSON *
adp_json_arr(const cJSON *o, const char *key)
{
    const cJSON *v =
        cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;

    return cJSON_IsArray(v) ? v : NULL;
}

const char *
adp_json_str(const cJSON *o, const char *key)
{
    const cJSON *v =
        cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;

    return v && cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

const char *
adp_json_text(const cJSON *o, const char *key)
{
    const char *s = adp_json_str(o, key);

    return s && s[0] ? s : NULL;
}

const char *
adp_json_id(const cJSON *o, const char *key)
{
    const char *s = adp_json_str(o, key);
    size_t i;

    if (!s || !s[0])
        return NULL;
    for (i = 0; s[i]; i++) {
        if (i >= ADP_META_ID_MAX || (unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return NULL;
    }
    return s;
}

bool
adp_json_true(const cJSON *o, const char *key)
{
    const cJSON *v =
        cJSON_IsObject(o) ? cJSON_GetObjectItemCaseSensitive(o, key) : NULL;

    return cJSON_IsTrue(v);
}

bool
adp_json_i64(const cJSON *v, int64_t *out)
{
    const char *s;
    int64_t x = 0;
    size_t i;
    double d;

    if (cJSON_IsNumber(v)) {
        d = v->valuedouble;
        if (!isfinite(d) || d < -9.0e15 || d > 9.0e15)
            return false;
        *out = (int64_t)d;
        return true;
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return false;
    s = v->valuestring;
    for (i = 0; s[i]; i++) {
        if (i >= 18 || s[i] < '0' || s[i] > '9')
            return false;
        x = x * 10 + (s[i] - '0');
    }
    if (i == 0)
        return false;
    *out = x;
    return true;
}

int64_t
adp_meta_ts_ms(const cJSON *v)
{
    int64_t x;

    if (!adp_json_i64(v, &x) || x <= 0)
        return 0;
    if (x < INT64_C(100000000000))
        return x * 1000; /* seconds */
    if (x <= INT64_C(100000000000000))
        return x;
    return 0;
}

/* ---- events ---- */

const char *
adp_meta_key(struct adp_batch *b, const char *fmt, ...)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    const char *colon;
    va_list ap;
    char *s = NULL;
    const char *res = NULL;
    int n, plen = 0;

    va_start(ap, fmt);
    /* The analyzer loses va_start when it inlines this variadic function
     * into a caller in this file. */
    n = vsnprintf(NULL, 0, fmt, ap); /* NOLINT(clang-analyzer-valist.*) */
    va_end(ap);
    if (n < 0)
        return NULL;
    s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    va_start(ap, fmt);
    n = vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        goto out;
    if ((size_t)n <= ADP_META_KEY_MAX) {
        res = adp_batch_strf(b, "%s", s);
        goto out;
    }
    /* Keep the ASCII kind prefix ("reaction:") readable, hash the rest. */
    colon = memchr(s, ':', 24);
    if (colon)
        plen = (int)(colon - s + 1);
    SHA256((const unsigned char *)s, (size_t)n, md);
    hex_encode(md, sizeof(md), hex);
    res = adp_batch_strf(b, "%.*sh:%s", plen, s, hex);
out:
    free(s);
    return res;
}

enum core_status
adp_meta_unknown(struct adp_batch *b, const char *platform, const char *channel,
                 const char *user, const cJSON *item, const char *key)
{
    unsigned char md[SHA256_DIGEST_LENGTH];
    char hex[2 * SHA256_DIGEST_LENGTH + 1];
    struct adp_event *ev;
    char *p;

    if (!key) {
        p = cJSON_PrintUnformatted(item);
        if (!p)
            return CORE_ERR_NOMEM;
        SHA256((const unsigned char *)p, strlen(p), md);
        cJSON_free(p);
        hex_encode(md, sizeof(md), hex);
        key = adp_batch_strf(b, "unknown:%s", hex);
        if (!key)
            return CORE_ERR_NOMEM;
    }
    ev = adp_batch_add(b);
    if (!ev)
        return CORE_ERR_NOMEM;
    ev->kind = ADP_EV_UNKNOWN;
    ev->platform = platform;
    ev->channel = channel;
    ev->user_id = user;
    ev->dedupe_key = key;
    ev->raw = item;
    return CORE_OK;
}

enum adp_event_kind
adp_meta_keyword(const char *text)
{
    static const char *const stop[] = { "stop", "stopall", "stop all",
                                        "unsubscribe" };
    static const char *const start[] = { "start", "unstop" };
    char w[16];
    size_t a, z, i;

    if (!text)
        return ADP_EV_MESSAGE;
    a = 0;
    z = strlen(text);
    while (a < z && isspace((unsigned char)text[a]))
        a++;
    while (z > a && (isspace((unsigned char)text[z - 1]) ||
                     text[z - 1] == '.' || text[z - 1] == '!'))
        z--;
    if (z - a == 0 || z - a >= sizeof(w))
        return ADP_EV_MESSAGE;
    for (i = 0; i < z - a; i++)
        w[i] = (char)tolower((unsigned char)text[a + i]);
    w[z - a] = '\0';
    for (i = 0; i < sizeof(stop) / sizeof(stop[0]); i++)
        if (strcmp(w, stop[i]) == 0)
            return ADP_EV_OPT_OUT;
    for (i = 0; i < sizeof(start) / sizeof(start[0]); i++)
        if (strcmp(w, start[i]) == 0)
            return ADP_EV_OPT_IN;
    return ADP_EV_MESSAGE;
}

enum core_status
adp_meta_keyword_event(struct adp_batch *b, size_t idx)
{
    struct adp_event src, *ev;
    enum adp_event_kind kind;
    const char *key;

    src = b->events[idx];
    if (src.kind != ADP_EV_MESSAGE || src.msg_type != ADP_MSG_TEXT ||
        !src.event_id)
        return CORE_OK;
    kind = adp_meta_keyword(src.text);
    if (kind == ADP_EV_MESSAGE)
        return CORE_OK;
    key = adp_meta_key(b, "%s:%s", kind == ADP_EV_OPT_OUT ? "optout" : "optin",
                       src.event_id);
    if (!key)
        return CORE_ERR_NOMEM;
    ev = adp_batch_add(b);
    if (!ev)
        return CORE_ERR_NOMEM;
    ev->kind = kind;
    ev->platform = src.platform;
    ev->channel = src.channel;
    ev->user_id = src.user_id;
    ev->user_phone = src.user_phone;
    ev->event_id = src.event_id;
    ev->dedupe_key = key;
    ev->platform_ts_ms = src.platform_ts_ms;
    ev->context_id = src.event_id;
    ev->text = src.text;
    ev->payload = "keyword";
    ev->raw = src.raw;
    return CORE_OK;
}

void
adp_meta_count_unknown(struct adp_batch *b, size_t from)
{
    size_t i;

    for (i = from; i < b->n; i++)
        if (b->events[i].kind == ADP_EV_UNKNOWN)
            b->unknown++;
}

/* ---- send ---- */

void
adp_send_result_init(struct adp_send_result *res)
{
    memset(res, 0, sizeof(*res));
    res->cls = ADP_SEND_PERMANENT;
    res->retry_after_ms = -1;
}

bool
adp_meta_path_safe(const char *s)
{
    size_t i;

    if (!s || !s[0])
        return false;
    for (i = 0; s[i]; i++) {
        if (i >= 128)
            return false;
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' &&
            s[i] != '-')
            return false;
    }
    return strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

enum adp_send_class
adp_meta_classify(long http_status, int code, int subcode, bool is_transient)
{
    switch (code) {
    case 4:      /* app call limit */
    case 17:     /* user call limit */
    case 32:     /* page call limit */
    case 613:    /* calls within one hour exceeded */
    case 80007:  /* WABA rate limit */
    case 130429: /* throughput */
    case 131048: /* spam rate limit */
    case 131056: /* pair rate limit */
        return ADP_SEND_RATE_LIMIT;
    case 131047:
        return ADP_SEND_WINDOW_CLOSED;
    case 10:
        return subcode == 2018278 ? ADP_SEND_WINDOW_CLOSED : ADP_SEND_PERMANENT;
    case 551:
    case 131026:
    case 131050:
        return ADP_SEND_UNREACHABLE;
    case 1:
    case 2:
    case 1200:
    case 131000:
    case 131016:
        return ADP_SEND_TRANSIENT;
    case 100: /* invalid parameter */
    case 190: /* access token invalid or expired */
    case 200: /* permission */
        return ADP_SEND_PERMANENT;
    case 0:
        break;
    default:
        if (is_transient || http_status >= 500)
            return ADP_SEND_TRANSIENT;
        return ADP_SEND_PERMANENT;
    }
    if (http_status >= 200 && http_status < 300)
        return ADP_SEND_OK;
    if (http_status == 429)
        return ADP_SEND_RATE_LIMIT;
    if (http_status == 0 || http_status == 408 || http_status >= 500 ||
        is_transient)
        return ADP_SEND_TRANSIENT;
    return ADP_SEND_PERMANENT;
}

/* Bounded copy that never cuts a UTF-8 sequence. */
static void
copy_str(char *dst, size_t cap, const char *src)
{
    size_t n;

    if (!src) {
        dst[0] = '\0';
        return;
    }
    n = strlen(src);
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
            n--;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

bool
adp_meta_parse_error(const cJSON *root, struct adp_send_result *res)
{
    const cJSON *err = adp_json_obj(root, "error");
    int64_t v;

    if (!err)
        return false;
    if (adp_json_i64(cJSON_GetObjectItemCaseSensitive(err, "code"), &v) &&
        v >= 0 && v <= 0x7fffffff)
        res->error_code = (int)v;
    if (adp_json_i64(cJSON_GetObjectItemCaseSensitive(err, "error_subcode"),
                     &v) &&
        v >= 0 && v <= 0x7fffffff)
        res->error_subcode = (int)v;
    copy_str(res->error_title, sizeof(res->error_title),
             adp_json_str(err, "message"));
    copy_str(res->trace_id, sizeof(res->trace_id),
             adp_json_id(err, "fbtrace_id"));
    return true;
}

static bool
parse_num(const char **p, int ndig, int *out)
{
    int i, v = 0;

    for (i = 0; i < ndig; i++) {
        if (!isdigit((unsigned char)(*p)[i]))
            return false;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += ndig;
    *out = v;
    return true;
}

long
adp_meta_retry_after_ms(const char *v, time_t now)
{
    static const char *const mons[] = { "Jan", "Feb", "Mar", "Apr",
                                        "May", "Jun", "Jul", "Aug",
                                        "Sep", "Oct", "Nov", "Dec" };
    struct tm tm;
    long secs = 0;
    int i, n = 0;
    time_t t;

    if (!v)
        return -1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (isdigit((unsigned char)*v)) {
        while (isdigit((unsigned char)*v)) {
            if (++n > 9)
                return ADP_META_RETRY_AFTER_MAX_MS;
            secs = secs * 10 + (*v++ - '0');
        }
        while (*v == ' ' || *v == '\t' || *v == '\r' || *v == '\n')
            v++;
        if (*v)
            return -1;
        if (secs > ADP_META_RETRY_AFTER_MAX_MS / 1000)
            return ADP_META_RETRY_AFTER_MAX_MS;
        return secs * 1000;
    }
    /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
    memset(&tm, 0, sizeof(tm));
    if (strlen(v) < 29 || v[3] != ',' || v[4] != ' ')
        return -1;
    v += 5;
    if (!parse_num(&v, 2, &tm.tm_mday) || *v++ != ' ')
        return -1;
    for (i = 0; i < 12; i++)
        if (strncmp(v, mons[i], 3) == 0)
            break;
    if (i == 12)
        return -1;
    tm.tm_mon = i;
    v += 3;
    if (*v++ != ' ' || !parse_num(&v, 4, &tm.tm_year) || *v++ != ' ' ||
        !parse_num(&v, 2, &tm.tm_hour) || *v++ != ':' ||
        !parse_num(&v, 2, &tm.tm_min) || *v++ != ':' ||
        !parse_num(&v, 2, &tm.tm_sec) || strncmp(v, " GMT", 4) != 0)
        return -1;
    tm.tm_year -= 1900;
    t = timegm(&tm);
    if (t == (time_t)-1)
        return -1;
    if (t <= now)
        return 0;
    if (t - now > ADP_META_RETRY_AFTER_MAX_MS / 1000)
        return ADP_META_RETRY_AFTER_MAX_MS;
    return (long)(t - now) * 1000;
}

enum core_status
adp_meta_class_status(enum adp_send_class cls)
{
    switch (cls) {
    case ADP_SEND_OK:
        return CORE_OK;
    case ADP_SEND_RATE_LIMIT:
        return CORE_ERR_RATE_LIMIT;
    case ADP_SEND_TRANSIENT:
        return CORE_ERR_UPSTREAM;
    case ADP_SEND_WINDOW_CLOSED:
    case ADP_SEND_UNREACHABLE:
    case ADP_SEND_PERMANENT:
        return CORE_ERR_PERMANENT;
    }
    return CORE_ERR_PERMANENT;
}

enum core_status
adp_meta_url(char *out, size_t outlen, const char *base, const char *segment)
{
    size_t blen;
    int n;

    if (!base || !base[0] || !segment)
        return CORE_ERR_INVALID;
    blen = strlen(base);
    while (blen > 0 && base[blen - 1] == '/')
        blen--;
    if (blen > 2048)
        return CORE_ERR_INVALID;
    n = snprintf(out, outlen, "%.*s/%s/messages", (int)blen, base, segment);
    if (n < 0 || (size_t)n >= outlen)
        return CORE_ERR_INVALID;
    return CORE_OK;
}

static enum core_status
meta_curl_failed(CURLcode rc, struct adp_send_result *res)
{
    copy_str(res->error_title, sizeof(res->error_title),
             curl_easy_strerror(rc));
    switch (rc) {
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        res->cls = ADP_SEND_PERMANENT;
        return CORE_ERR_CONFIG;
    case CURLE_OPERATION_TIMEDOUT:
        res->cls = ADP_SEND_TRANSIENT;
        return CORE_ERR_TIMEOUT;
    case CURLE_OUT_OF_MEMORY:
        res->cls = ADP_SEND_TRANSIENT;
        return CORE_ERR_NOMEM;
    default:
        res->cls = ADP_SEND_TRANSIENT;
        return CORE_ERR_UNAVAILABLE;
    }
}

enum core_status
adp_meta_post(CURL *curl, const char *url, const char *token, const cJSON *body,
              struct adp_send_result *res, cJSON **out)
{
    struct adp_post post;
    struct adp_post_answer a;
    enum core_status st;
    cJSON *json = NULL;
    bool has_error;
    CURLcode rc;

    adp_send_result_init(res);
    memset(&a, 0, sizeof(a));
    if (out)
        *out = NULL;
    st = curl ? adp_post_make(&post, url, token, body) : CORE_ERR_CONFIG;
    if (st != CORE_OK) {
        if (st == CORE_ERR_NOMEM)
            res->cls = ADP_SEND_TRANSIENT;
        return st;
    }
    rc = adp_post_perform(curl, &post, &a);
    adp_post_done(&post);
    if (rc != CURLE_OK) {
        st = meta_curl_failed(rc, res);
        goto out;
    }
    res->http_status = a.http;
    res->retry_after_ms = a.retry_after_ms;
    if (!a.truncated && a.body.len)
        json = cJSON_ParseWithLength(a.body.data, a.body.len);
    has_error = adp_meta_parse_error(json, res);
    if (!has_error && a.http >= 200 && a.http < 300) {
        res->cls = ADP_SEND_OK;
        if (out) {
            *out = json;
            json = NULL;
        }
        st = CORE_OK;
        goto out;
    }
    res->cls = adp_meta_classify(
        a.http, res->error_code, res->error_subcode,
        adp_json_true(adp_json_obj(json, "error"), "is_transient"));
    if (res->cls == ADP_SEND_OK)
        res->cls = ADP_SEND_PERMANENT; /* an error object with 2xx */
    st = adp_meta_class_status(res->cls);
    log_debug("graph send failed",
              "http=%ld code=%d subcode=%d class=%s fbtrace_id=%s", a.http,
              res->error_code, res->error_subcode, adp_send_class_str(res->cls),
              res->trace_id);
out:
    cJSON_Delete(json);
    adp_post_answer_done(&a);
    return st;
}
