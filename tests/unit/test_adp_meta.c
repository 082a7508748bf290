/*
 * Unit tests of the shared Meta pieces: X-Hub-Signature-256 verification
 * (incl. the escaped-unicode fallback), the GET handshake, Graph error
 * classification, Retry-After parsing and small helpers.
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <string.h>

#include "adapters/adapter.h"
#include "adapters/meta.h"

#define SECRET "app-secret-123"

static void
sig_of(const char *secret, const char *body, char out[72])
{
    char hex[65];

    adp_hmac_sha256_hex(secret, body, strlen(body), hex);
    snprintf(out, 72, "sha256=%s", hex);
}

static enum core_status
verify(const char *header, const char *body, bool *escaped)
{
    return adp_meta_verify_signature(SECRET, header, body, strlen(body),
                                     escaped);
}

static void
test_hmac_vector(void **state)
{
    char hex[65];

    (void)state;
    /* RFC 4231 test case 2 */
    adp_hmac_sha256_hex("Jefe", "what do ya want for nothing?", 28, hex);
    assert_string_equal(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

static void
test_signature(void **state)
{
    const char *body = "{\"object\":\"page\",\"entry\":[]}";
    char sig[72], bad[80];
    bool esc = true;
    size_t i;

    (void)state;
    sig_of(SECRET, body, sig);
    assert_int_equal(verify(sig, body, &esc), CORE_OK);
    assert_false(esc);
    /* uppercase hex */
    for (i = 7; sig[i]; i++)
        if (sig[i] >= 'a' && sig[i] <= 'f')
            sig[i] = (char)(sig[i] - 'a' + 'A');
    assert_int_equal(verify(sig, body, NULL), CORE_OK);
    sig_of(SECRET, body, sig);
    /* wrong secret, changed body, one flipped digit */
    sig_of("other", body, bad);
    assert_int_equal(verify(bad, body, NULL), CORE_ERR_AUTH);
    assert_int_equal(verify(sig, "{\"object\":\"page\",\"entry\":[ ]}", NULL),
                     CORE_ERR_AUTH);
    memcpy(bad, sig, sizeof(sig));
    bad[20] = bad[20] == '0' ? '1' : '0';
    assert_int_equal(verify(bad, body, NULL), CORE_ERR_AUTH);
    /* missing, wrong prefix, truncated, too long, not hex, empty */
    assert_int_equal(verify(NULL, body, NULL), CORE_ERR_AUTH);
    assert_int_equal(verify(sig + 7, body, NULL), CORE_ERR_AUTH);
    memcpy(bad, sig, sizeof(sig));
    memcpy(bad, "sha1=", 5);
    assert_int_equal(verify(bad, body, NULL), CORE_ERR_AUTH);
    memcpy(bad, sig, sizeof(sig));
    bad[70] = '\0';
    assert_int_equal(verify(bad, body, NULL), CORE_ERR_AUTH);
    snprintf(bad, sizeof(bad), "%s0", sig);
    assert_int_equal(verify(bad, body, NULL), CORE_ERR_AUTH);
    memcpy(bad, sig, sizeof(sig));
    bad[30] = 'g';
    assert_int_equal(verify(bad, body, NULL), CORE_ERR_AUTH);
    assert_int_equal(verify("", body, NULL), CORE_ERR_AUTH);
    assert_int_equal(verify("sha256=", body, NULL), CORE_ERR_AUTH);
    /* "SHA256=" prefix is accepted (header values are case-insensitive) */
    memcpy(bad, sig, sizeof(sig));
    memcpy(bad, "SHA256", 6);
    assert_int_equal(verify(bad, body, NULL), CORE_OK);
    /* no secret configured */
    assert_int_equal(
        adp_meta_verify_signature(NULL, sig, body, strlen(body), NULL),
        CORE_ERR_AUTH);
    assert_int_equal(
        adp_meta_verify_signature("", sig, body, strlen(body), NULL),
        CORE_ERR_AUTH);
    /* empty body */
    sig_of(SECRET, "", sig);
    assert_int_equal(adp_meta_verify_signature(SECRET, sig, NULL, 0, NULL),
                     CORE_OK);
}

static void
test_signature_unicode_fallback(void **state)
{
    /* raw UTF-8: é (2 bytes), 世 (3 bytes), 😀 (4 bytes: surrogate pair) */
    const char *raw = "{\"t\":\"caf\xc3\xa9 \xe4\xb8\x96 \xf0\x9f\x98\x80/\"}";
    const char *esc = "{\"t\":\"caf\\u00e9 \\u4e16 \\ud83d\\ude00/\"}";
    const char *upper = "{\"t\":\"caf\\u00E9 \\u4E16 \\uD83D\\uDE00/\"}";
    char sig[72];
    bool escaped = false;

    (void)state;
    sig_of(SECRET, esc, sig);
    assert_int_equal(verify(sig, raw, &escaped), CORE_OK);
    assert_true(escaped);
    assert_int_equal(verify(sig, esc, &escaped), CORE_OK);
    assert_false(escaped);
    sig_of(SECRET, raw, sig);
    assert_int_equal(verify(sig, raw, &escaped), CORE_OK);
    assert_false(escaped);
    /* only the lowercase escaped form is tried */
    sig_of(SECRET, upper, sig);
    assert_int_equal(verify(sig, raw, NULL), CORE_ERR_AUTH);
    /* invalid UTF-8 has no escaped form */
    sig_of(SECRET, "{\"t\":\"\\u00ff\"}", sig);
    assert_int_equal(verify(sig, "{\"t\":\"\xff\"}", NULL), CORE_ERR_AUTH);
    /* a long body crosses the internal chunk size */
    {
        static char big[3000 * 7 + 1], bigesc[3000 * 19 + 1];
        size_t i, n = 0, m = 0;

        for (i = 0; i < 3000; i++) {
            memcpy(big + n, "a\xc3\xa9\xf0\x9f\x98\x80", 7);
            n += 7;
            memcpy(bigesc + m, "a\\u00e9\\ud83d\\ude00", 19);
            m += 19;
        }
        big[n] = bigesc[m] = '\0';
        sig_of(SECRET, bigesc, sig);
        assert_int_equal(verify(sig, big, &escaped), CORE_OK);
        assert_true(escaped);
    }
}

struct fake_req {
    const char *names[4];
    const char *values[4];
};

static const char *
fake_get(void *ctx, const char *name)
{
    struct fake_req *r = ctx;
    int i;

    for (i = 0; i < 4 && r->names[i]; i++)
        if (strcmp(r->names[i], name) == 0)
            return r->values[i];
    return NULL;
}

static void
test_authenticate(void **state)
{
    const char *body = "{\"object\":\"instagram\",\"entry\":[]}";
    struct core_config cfg;
    struct fake_req hdr = { { "X-Hub-Signature-256" }, { NULL } };
    struct adp_request req;
    char sig[72], secret[] = SECRET;

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    cfg.meta_app_secret = secret;
    sig_of(SECRET, body, sig);
    hdr.values[0] = sig;
    memset(&req, 0, sizeof(req));
    req.method = "POST";
    req.body = body;
    req.body_len = strlen(body);
    req.header = fake_get;
    req.ctx = &hdr;
    assert_int_equal(adp_find("instagram")->authenticate(&cfg, &req), CORE_OK);
    assert_int_equal(adp_find("whatsapp")->authenticate(&cfg, &req), CORE_OK);
    req.body_len--;
    assert_int_equal(adp_find("messenger")->authenticate(&cfg, &req),
                     CORE_ERR_AUTH);
    req.body_len++;
    hdr.names[0] = "X-Hub-Signature";
    assert_int_equal(adp_find("messenger")->authenticate(&cfg, &req),
                     CORE_ERR_AUTH);
    cfg.meta_app_secret = NULL;
    hdr.names[0] = "X-Hub-Signature-256";
    assert_int_equal(adp_find("messenger")->authenticate(&cfg, &req),
                     CORE_ERR_AUTH);
}

static void
test_handshake(void **state)
{
    struct core_config cfg;
    struct fake_req q = { { "hub.mode", "hub.verify_token", "hub.challenge" },
                          { "subscribe", "my-verify-token", "1158201444" } };
    struct adp_request req;
    char out[64], tok[] = "my-verify-token";
    const struct adp_adapter *ad = adp_find("whatsapp");

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    memset(&req, 0, sizeof(req));
    req.method = "GET";
    req.query = fake_get;
    req.ctx = &q;
    /* no verify token configured */
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 403);
    cfg.meta_verify_token = tok;
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 200);
    assert_string_equal(out, "1158201444");
    assert_int_equal(
        adp_find("instagram")->handshake(&cfg, &req, out, sizeof(out)), 200);
    /* challenge does not fit */
    assert_int_equal(ad->handshake(&cfg, &req, out, 5), 403);
    q.values[1] = "my-verify-tokeN";
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 403);
    assert_string_equal(out, "");
    q.values[1] = "my-verify-token-longer";
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 403);
    q.values[1] = "my-verify-token";
    q.values[0] = "unsubscribe";
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 403);
    q.values[0] = "subscribe";
    q.values[2] = "";
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 403);
    q.values[2] = "a b";
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 403);
    q.values[2] = "abc-DEF_123";
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 200);
    assert_string_equal(out, "abc-DEF_123");
    q.names[1] = "hub.verify";
    assert_int_equal(ad->handshake(&cfg, &req, out, sizeof(out)), 403);
}

static void
test_classify(void **state)
{
    static const struct {
        long http;
        int code, sub;
        enum adp_send_class want;
    } cases[] = {
        { 400, 130429, 0, ADP_SEND_RATE_LIMIT },
        { 400, 131056, 0, ADP_SEND_RATE_LIMIT },
        { 400, 80007, 0, ADP_SEND_RATE_LIMIT },
        { 400, 4, 0, ADP_SEND_RATE_LIMIT },
        { 403, 613, 0, ADP_SEND_RATE_LIMIT },
        { 400, 32, 0, ADP_SEND_RATE_LIMIT },
        { 400, 131047, 0, ADP_SEND_WINDOW_CLOSED },
        { 400, 10, 2018278, ADP_SEND_WINDOW_CLOSED },
        { 400, 10, 0, ADP_SEND_PERMANENT },
        { 400, 131026, 0, ADP_SEND_UNREACHABLE },
        { 400, 551, 1545041, ADP_SEND_UNREACHABLE },
        { 500, 1, 0, ADP_SEND_TRANSIENT },
        { 400, 2, 0, ADP_SEND_TRANSIENT },
        { 400, 1200, 0, ADP_SEND_TRANSIENT },
        { 500, 131000, 0, ADP_SEND_TRANSIENT },
        { 503, 131016, 0, ADP_SEND_TRANSIENT },
        { 401, 190, 463, ADP_SEND_PERMANENT },
        { 500, 190, 0, ADP_SEND_PERMANENT },
        { 400, 100, 0, ADP_SEND_PERMANENT },
        { 502, 0, 0, ADP_SEND_TRANSIENT },
        { 500, 0, 0, ADP_SEND_TRANSIENT },
        { 502, 999999, 0, ADP_SEND_TRANSIENT },
        { 429, 0, 0, ADP_SEND_RATE_LIMIT },
        { 0, 0, 0, ADP_SEND_TRANSIENT },
        { 404, 0, 0, ADP_SEND_PERMANENT },
        { 401, 0, 0, ADP_SEND_PERMANENT },
        { 200, 0, 0, ADP_SEND_OK },
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (adp_meta_classify(cases[i].http, cases[i].code, cases[i].sub,
                              false) != cases[i].want)
            fail_msg("http %ld code %d sub %d: got %s", cases[i].http,
                     cases[i].code, cases[i].sub,
                     adp_send_class_str(adp_meta_classify(
                         cases[i].http, cases[i].code, cases[i].sub, false)));
    assert_int_equal(adp_meta_classify(400, 12345, 0, true),
                     ADP_SEND_TRANSIENT);
    assert_int_equal(adp_meta_class_status(ADP_SEND_RATE_LIMIT),
                     CORE_ERR_RATE_LIMIT);
    assert_int_equal(adp_meta_class_status(ADP_SEND_WINDOW_CLOSED),
                     CORE_ERR_PERMANENT);
    assert_int_equal(adp_meta_class_status(ADP_SEND_OK), CORE_OK);
}

static void
test_parse_error(void **state)
{
    struct adp_send_result res;
    cJSON *j;

    (void)state;
    j = cJSON_Parse(
        "{\"error\":{\"message\":\"(#130429) Rate limit hit\",\"type\":"
        "\"OAuthException\",\"code\":130429,\"error_subcode\":2494055,"
        "\"error_data\":{\"messaging_product\":\"whatsapp\"},"
        "\"fbtrace_id\":\"Azq9fakeTrace\"}}");
    adp_send_result_init(&res);
    assert_true(adp_meta_parse_error(j, &res));
    assert_int_equal(res.error_code, 130429);
    assert_int_equal(res.error_subcode, 2494055);
    assert_string_equal(res.error_title, "(#130429) Rate limit hit");
    assert_string_equal(res.trace_id, "Azq9fakeTrace");
    cJSON_Delete(j);
    adp_send_result_init(&res);
    j = cJSON_Parse("{\"error\":{\"code\":\"x\",\"message\":5}}");
    assert_true(adp_meta_parse_error(j, &res));
    assert_int_equal(res.error_code, 0);
    assert_string_equal(res.error_title, "");
    cJSON_Delete(j);
    j = cJSON_Parse("{\"messages\":[{\"id\":\"x\"}]}");
    assert_false(adp_meta_parse_error(j, &res));
    cJSON_Delete(j);
    assert_false(adp_meta_parse_error(NULL, &res));
    assert_int_equal(res.retry_after_ms, -1);
}

static void
test_retry_after(void **state)
{
    time_t now = 784111777; /* Sun, 06 Nov 1994 08:49:37 GMT */

    (void)state;
    assert_int_equal(adp_meta_retry_after_ms("120", now), 120000);
    assert_int_equal(adp_meta_retry_after_ms(" 0", now), 0);
    assert_int_equal(adp_meta_retry_after_ms("5\r\n", now), 5000);
    assert_int_equal(adp_meta_retry_after_ms("99999999999", now),
                     ADP_META_RETRY_AFTER_MAX_MS);
    assert_int_equal(
        adp_meta_retry_after_ms("Sun, 06 Nov 1994 08:50:37 GMT", now), 60000);
    assert_int_equal(
        adp_meta_retry_after_ms("Sun, 06 Nov 1994 08:49:00 GMT", now), 0);
    assert_int_equal(adp_meta_retry_after_ms("soon", now), -1);
    assert_int_equal(adp_meta_retry_after_ms("12abc", now), -1);
    assert_int_equal(adp_meta_retry_after_ms("", now), -1);
    assert_int_equal(adp_meta_retry_after_ms(NULL, now), -1);
    assert_int_equal(
        adp_meta_retry_after_ms("Sun, 06 Foo 1994 08:50:37 GMT", now), -1);
}

static void
test_helpers(void **state)
{
    char url[64];
    cJSON *j;

    (void)state;
    assert_true(adp_meta_path_safe("106540352242922"));
    assert_true(adp_meta_path_safe("me"));
    assert_false(adp_meta_path_safe(""));
    assert_false(adp_meta_path_safe(NULL));
    assert_false(adp_meta_path_safe(".."));
    assert_false(adp_meta_path_safe("1/2"));
    assert_false(adp_meta_path_safe("1?access_token=x"));
    assert_int_equal(adp_meta_url(url, sizeof(url), "http://h/v21.0/", "12"),
                     CORE_OK);
    assert_string_equal(url, "http://h/v21.0/12/messages");
    assert_int_equal(adp_meta_url(url, 10, "http://h/v21.0", "12"),
                     CORE_ERR_INVALID);
    assert_int_equal(adp_meta_url(url, sizeof(url), NULL, "12"),
                     CORE_ERR_INVALID);

    j = cJSON_Parse("{\"s\":\"1767225600\",\"n\":1767225600000,\"x\":\"12a\","
                    "\"neg\":-1,\"big\":1e300,\"f\":1.5}");
    assert_int_equal(adp_meta_ts_ms(cJSON_GetObjectItem(j, "s")),
                     INT64_C(1767225600000));
    assert_int_equal(adp_meta_ts_ms(cJSON_GetObjectItem(j, "n")),
                     INT64_C(1767225600000));
    assert_int_equal(adp_meta_ts_ms(cJSON_GetObjectItem(j, "x")), 0);
    assert_int_equal(adp_meta_ts_ms(cJSON_GetObjectItem(j, "neg")), 0);
    assert_int_equal(adp_meta_ts_ms(cJSON_GetObjectItem(j, "big")), 0);
    assert_int_equal(adp_meta_ts_ms(cJSON_GetObjectItem(j, "missing")), 0);
    assert_int_equal(adp_meta_ts_ms(cJSON_GetObjectItem(j, "f")), 1000);
    cJSON_Delete(j);

    assert_true(adp_utf8_valid("a\xc3\xa9\xf0\x9f\x98\x80", 7));
    assert_false(adp_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(adp_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(adp_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(adp_utf8_valid("\xc3", 1));             /* truncated */
    assert_int_equal(adp_utf8_count("a\xc3\xa9\xf0\x9f\x98\x80"), 3);
    assert_int_equal(adp_utf8_prefix("a\xc3\xa9\xf0\x9f\x98\x80", 2), 3);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hmac_vector),
        cmocka_unit_test(test_signature),
        cmocka_unit_test(test_signature_unicode_fallback),
        cmocka_unit_test(test_authenticate),
        cmocka_unit_test(test_handshake),
        cmocka_unit_test(test_classify),
        cmocka_unit_test(test_parse_error),
        cmocka_unit_test(test_retry_after),
        cmocka_unit_test(test_helpers),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
