/*
 * Send-side tests of the WhatsApp, Messenger and Instagram adapters against
 * a tiny in-process Graph API (libmicrohttpd on a free loopback port) that
 * records each request and answers with canned success or error bodies.
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "adapters/meta.h"

#define MAXREQ 8

struct canned {
    unsigned status;
    const char *body;
    const char *retry_after;
};

struct recorded {
    char method[16];
    char url[256];
    char auth[256];
    char ctype[128];
    char *body;
};

static struct {
    struct MHD_Daemon *d;
    unsigned short port;
    pthread_mutex_t mu;
    struct recorded req[MAXREQ];
    int nreq;
    struct canned resp[MAXREQ];
    int nresp;
    char *big; /* a body larger than the adapters read */
} srv = { .mu = PTHREAD_MUTEX_INITIALIZER };

struct upload {
    char *data;
    size_t len;
};

static void
copy_hdr(char *dst, size_t cap, const char *v)
{
    snprintf(dst, cap, "%s", v ? v : "");
}

static enum MHD_Result
srv_handler(void *cls, struct MHD_Connection *c, const char *url,
            const char *method, const char *version, const char *data,
            size_t *size, void **con_cls)
{
    struct upload *up = *con_cls;
    struct MHD_Response *r;
    struct recorded *rec;
    struct canned cn;
    enum MHD_Result ret;
    char *nd;
    int i;

    (void)cls;
    (void)version;
    if (!up) {
        up = calloc(1, sizeof(*up));
        *con_cls = up;
        return up ? MHD_YES : MHD_NO;
    }
    if (*size) {
        nd = realloc(up->data, up->len + *size + 1);
        if (!nd)
            return MHD_NO;
        memcpy(nd + up->len, data, *size);
        up->len += *size;
        nd[up->len] = '\0';
        up->data = nd;
        *size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&srv.mu);
    i = srv.nreq < MAXREQ ? srv.nreq : MAXREQ - 1;
    rec = &srv.req[i];
    free(rec->body);
    copy_hdr(rec->method, sizeof(rec->method), method);
    copy_hdr(rec->url, sizeof(rec->url), url);
    copy_hdr(rec->auth, sizeof(rec->auth),
             MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"));
    copy_hdr(rec->ctype, sizeof(rec->ctype),
             MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type"));
    rec->body = up->data ? up->data : strdup("");
    up->data = NULL;
    cn = srv.resp[srv.nreq < srv.nresp ? srv.nreq : srv.nresp - 1];
    srv.nreq++;
    pthread_mutex_unlock(&srv.mu);
    if (cn.body && strcmp(cn.body, "BIG") == 0)
        r = MHD_create_response_from_buffer(strlen(srv.big), srv.big,
                                            MHD_RESPMEM_PERSISTENT);
    else
        r = MHD_create_response_from_buffer(strlen(cn.body ? cn.body : ""),
                                            (void *)(cn.body ? cn.body : ""),
                                            MHD_RESPMEM_MUST_COPY);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, "Content-Type", "application/json");
    if (cn.retry_after)
        MHD_add_response_header(r, "Retry-After", cn.retry_after);
    ret = MHD_queue_response(c, cn.status, r);
    MHD_destroy_response(r);
    return ret;
}

static void
srv_completed(void *cls, struct MHD_Connection *c, void **con_cls,
              enum MHD_RequestTerminationCode toe)
{
    struct upload *up = *con_cls;

    (void)cls;
    (void)c;
    (void)toe;
    if (up) {
        free(up->data);
        free(up);
        *con_cls = NULL;
    }
}

/* Expect the next requests to be answered with these responses. */
static void
srv_expect(int n, const struct canned *resp)
{
    int i;

    pthread_mutex_lock(&srv.mu);
    for (i = 0; i < srv.nreq && i < MAXREQ; i++) {
        free(srv.req[i].body);
        srv.req[i].body = NULL;
    }
    srv.nreq = 0;
    for (i = 0; i < n && i < MAXREQ; i++)
        srv.resp[i] = resp[i];
    srv.nresp = n;
    pthread_mutex_unlock(&srv.mu);
}

static int
srv_count(void)
{
    int n;

    pthread_mutex_lock(&srv.mu);
    n = srv.nreq;
    pthread_mutex_unlock(&srv.mu);
    return n;
}

static int
srv_setup(void **state)
{
    const union MHD_DaemonInfo *info;

    (void)state;
    srv.big = malloc(200 * 1024 + 1);
    if (!srv.big)
        return -1;
    memset(srv.big, ' ', 200 * 1024);
    memcpy(srv.big, "{\"message_id\":\"m_BIG\",\"pad\":\"", 30);
    srv.big[200 * 1024 - 2] = '"';
    srv.big[200 * 1024 - 1] = '}';
    srv.big[200 * 1024] = '\0';
    srv.d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        srv_handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, srv_completed, NULL,
        MHD_OPTION_END);
    if (!srv.d)
        return -1;
    info = MHD_get_daemon_info(srv.d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || !info->port)
        return -1;
    srv.port = info->port;
    return 0;
}

static int
srv_teardown(void **state)
{
    int i;

    (void)state;
    MHD_stop_daemon(srv.d);
    for (i = 0; i < MAXREQ; i++)
        free(srv.req[i].body);
    free(srv.big);
    return 0;
}

/* ---- fixtures for each test ---- */

struct ctx {
    struct core_config cfg;
    char base[128];
    CURL *curl;
};

static char k_secret[] = "secret", k_wa[] = "wa-token", k_ms[] = "ms-token",
            k_ig[] = "ig-token";

static int
ctx_setup(void **state)
{
    struct ctx *c = calloc(1, sizeof(*c));

    if (!c)
        return -1;
    snprintf(c->base, sizeof(c->base), "http://127.0.0.1:%u/v21.0",
             (unsigned)srv.port);
    c->cfg.meta_app_secret = k_secret;
    c->cfg.whatsapp_token = k_wa;
    c->cfg.messenger_page_token = k_ms;
    c->cfg.instagram_token = k_ig;
    c->cfg.graph_api_base = c->base;
    c->curl = curl_easy_init();
    *state = c;
    return c->curl ? 0 : -1;
}

static int
ctx_teardown(void **state)
{
    struct ctx *c = *state;

    curl_easy_cleanup(c->curl);
    free(c);
    return 0;
}

static cJSON *
req_json(int i)
{
    cJSON *j;

    assert_true(i < srv_count());
    j = cJSON_Parse(srv.req[i].body);
    assert_non_null(j);
    return j;
}

static const char *
jstr(const cJSON *j, const char *path)
{
    char key[64];
    const char *dot;
    const cJSON *cur = j;

    while ((dot = strchr(path, '.'))) {
        snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
        cur = cJSON_GetObjectItemCaseSensitive(cur, key);
        if (cJSON_IsArray(cur))
            cur = cur->child;
        path = dot + 1;
    }
    cur = cJSON_GetObjectItemCaseSensitive(cur, path);
    return cJSON_IsString(cur) ? cur->valuestring : NULL;
}

static void
assert_jstr(const cJSON *j, const char *path, const char *want)
{
    const char *got = jstr(j, path);

    if (!want) {
        assert_null(got);
        return;
    }
    if (!got || strcmp(got, want) != 0)
        fail_msg("%s: got '%s' want '%s'", path, got ? got : "(null)", want);
}

#define WA_OK                                                            \
    "{\"messaging_product\":\"whatsapp\",\"contacts\":[{\"input\":"      \
    "\"15551234567\",\"wa_id\":\"15551234567\"}],\"messages\":[{\"id\":" \
    "\"wamid.OUT1\"}]}"

static void
test_wa_send_text(void **state)
{
    struct ctx *c = *state;
    const struct adp_adapter *ad = adp_find("whatsapp");
    struct canned ok = { 200, WA_OK, NULL };
    struct adp_send_result res;
    cJSON *j;

    srv_expect(1, &ok);
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "106540352242922",
                                   "15551234567", "Yes, we ship to Lisbon.",
                                   "wamid.HBgLFAKE001", NULL, 0, &res),
                     CORE_OK);
    assert_int_equal(res.cls, ADP_SEND_OK);
    assert_int_equal(res.http_status, 200);
    assert_string_equal(res.message_id, "wamid.OUT1");
    assert_int_equal(res.error_code, 0);
    assert_int_equal(srv_count(), 1);
    assert_string_equal(srv.req[0].method, "POST");
    assert_string_equal(srv.req[0].url, "/v21.0/106540352242922/messages");
    assert_string_equal(srv.req[0].auth, "Bearer wa-token");
    assert_string_equal(srv.req[0].ctype, "application/json");
    j = req_json(0);
    assert_jstr(j, "messaging_product", "whatsapp");
    assert_jstr(j, "recipient_type", "individual");
    assert_jstr(j, "to", "15551234567");
    assert_jstr(j, "type", "text");
    assert_jstr(j, "text.body", "Yes, we ship to Lisbon.");
    assert_true(cJSON_IsFalse(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "text"), "preview_url")));
    assert_jstr(j, "context.message_id", "wamid.HBgLFAKE001");
    cJSON_Delete(j);

    /* a BSUID goes in "recipient"; no reply_to, no context */
    srv_expect(1, &ok);
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "106540352242922",
                                   "US.1234567890123456", "hi", NULL, NULL, 0,
                                   &res),
                     CORE_OK);
    j = req_json(0);
    assert_jstr(j, "recipient", "US.1234567890123456");
    assert_jstr(j, "to", NULL);
    assert_null(cJSON_GetObjectItem(j, "context"));
    cJSON_Delete(j);
}

static void
test_wa_send_buttons(void **state)
{
    struct ctx *c = *state;
    const struct adp_adapter *ad = adp_find("whatsapp");
    struct canned ok = { 200, WA_OK, NULL };
    struct adp_button btn[3] = {
        { "yes", "Yes" },
        { "no", "No" },
        { "later", "Remind me later about this, please" },
    };
    struct adp_send_result res;
    const cJSON *arr, *b;
    char long_text[1200];
    cJSON *j;

    srv_expect(1, &ok);
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "106540352242922",
                                   "15551234567", "Track your order?", NULL,
                                   btn, 3, &res),
                     CORE_OK);
    j = req_json(0);
    assert_jstr(j, "type", "interactive");
    assert_jstr(j, "interactive.type", "button");
    assert_jstr(j, "interactive.body.text", "Track your order?");
    arr = cJSON_GetObjectItem(
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "interactive"), "action"),
        "buttons");
    assert_int_equal(cJSON_GetArraySize(arr), 3);
    b = cJSON_GetArrayItem(arr, 2);
    assert_jstr(b, "type", "reply");
    assert_jstr(b, "reply.id", "later");
    assert_jstr(b, "reply.title", "Remind me later abou"); /* 20 chars */
    assert_null(cJSON_GetObjectItem(j, "text"));
    cJSON_Delete(j);

    /* longer than an interactive body allows: plain text, no buttons */
    memset(long_text, 'x', 1100);
    long_text[1100] = '\0';
    srv_expect(1, &ok);
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "106540352242922",
                                   "15551234567", long_text, NULL, btn, 2,
                                   &res),
                     CORE_OK);
    j = req_json(0);
    assert_jstr(j, "type", "text");
    cJSON_Delete(j);

    /* too many buttons, empty id: rejected without a request */
    srv_expect(1, &ok);
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "106540352242922",
                                   "15551234567", "x", NULL, btn, 4, &res),
                     CORE_ERR_INVALID);
    btn[0].id = "";
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "106540352242922",
                                   "15551234567", "x", NULL, btn, 1, &res),
                     CORE_ERR_INVALID);
    assert_int_equal(res.cls, ADP_SEND_PERMANENT);
    assert_int_equal(srv_count(), 0);
}

static void
test_wa_send_errors(void **state)
{
    static const struct {
        struct canned resp;
        enum adp_send_class cls;
        enum core_status st;
        int code;
        long retry_ms;
    } cases[] = {
        { { 400,
            "{\"error\":{\"message\":\"(#130429) Rate limit hit\",\"type\":"
            "\"OAuthException\",\"code\":130429,\"error_data\":{"
            "\"messaging_product\":\"whatsapp\",\"details\":\"Cloud API "
            "message throughput has been reached.\"},\"fbtrace_id\":"
            "\"Azq9fakeTrace\"}}",
            NULL },
          ADP_SEND_RATE_LIMIT,
          CORE_ERR_RATE_LIMIT,
          130429,
          -1 },
        { { 429, "{\"error\":{\"code\":131056,\"message\":\"pair\"}}", "7" },
          ADP_SEND_RATE_LIMIT,
          CORE_ERR_RATE_LIMIT,
          131056,
          7000 },
        { { 400,
            "{\"error\":{\"message\":\"Re-engagement message\",\"code\":"
            "131047,\"fbtrace_id\":\"T2\"}}",
            NULL },
          ADP_SEND_WINDOW_CLOSED,
          CORE_ERR_PERMANENT,
          131047,
          -1 },
        { { 401,
            "{\"error\":{\"message\":\"Error validating access token\","
            "\"type\":\"OAuthException\",\"code\":190,\"error_subcode\":463}}",
            NULL },
          ADP_SEND_PERMANENT,
          CORE_ERR_PERMANENT,
          190,
          -1 },
        { { 400, "{\"error\":{\"code\":131026,\"message\":\"undeliverable\"}}",
            NULL },
          ADP_SEND_UNREACHABLE,
          CORE_ERR_PERMANENT,
          131026,
          -1 },
        { { 500, "<html>Internal Server Error</html>", NULL },
          ADP_SEND_TRANSIENT,
          CORE_ERR_UPSTREAM,
          0,
          -1 },
        { { 503, "", "Sun, 06 Nov 1994 08:49:37 GMT" },
          ADP_SEND_TRANSIENT,
          CORE_ERR_UPSTREAM,
          0,
          0 },
        { { 400, "{\"error\":{\"code\":131000,\"message\":\"Something\"}}",
            NULL },
          ADP_SEND_TRANSIENT,
          CORE_ERR_UPSTREAM,
          131000,
          -1 },
    };
    struct ctx *c = *state;
    const struct adp_adapter *ad = adp_find("whatsapp");
    struct adp_send_result res;
    size_t i;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        srv_expect(1, &cases[i].resp);
        assert_int_equal(ad->send_text(&c->cfg, c->curl, "106540352242922",
                                       "15551234567", "hello", NULL, NULL, 0,
                                       &res),
                         cases[i].st);
        if (res.cls != cases[i].cls)
            fail_msg("case %zu: class %s", i, adp_send_class_str(res.cls));
        assert_int_equal(res.http_status, cases[i].resp.status);
        assert_int_equal(res.error_code, cases[i].code);
        assert_int_equal(res.retry_after_ms, cases[i].retry_ms);
        assert_string_equal(res.message_id, "");
    }
    srv_expect(1, &cases[0].resp);
    ad->send_text(&c->cfg, c->curl, "106540352242922", "15551234567", "x", NULL,
                  NULL, 0, &res);
    assert_string_equal(res.trace_id, "Azq9fakeTrace");
    assert_string_equal(res.error_title, "(#130429) Rate limit hit");
}

/* The adapter's read receipt, its posts made in order on one handle, as a
 * delivery thread makes them. */
static enum core_status
mark_read(const struct adp_adapter *ad, struct ctx *c, const char *channel,
          const char *user, const char *mid)
{
    struct adp_post posts[2];
    struct adp_post_answer ans;
    enum core_status st;
    int n, i;

    st = ad->read_posts(&c->cfg, channel, user, mid, posts, 2, &n);
    if (st != CORE_OK) {
        assert_int_equal(n, 0);
        return st;
    }
    for (i = 0; i < n; i++) {
        assert_int_equal(adp_post_perform(c->curl, &posts[i], &ans), CURLE_OK);
        if (ans.http < 200 || ans.http > 299)
            st = CORE_ERR_UPSTREAM;
        adp_post_answer_done(&ans);
        adp_post_done(&posts[i]);
    }
    return st;
}

static void
test_wa_mark_read(void **state)
{
    struct ctx *c = *state;
    const struct adp_adapter *ad = adp_find("whatsapp");
    struct canned ok = { 200, "{\"success\":true}", NULL };
    cJSON *j;

    srv_expect(1, &ok);
    assert_int_equal(
        mark_read(ad, c, "106540352242922", "15551234567", "wamid.HBgLFAKE001"),
        CORE_OK);
    assert_string_equal(srv.req[0].url, "/v21.0/106540352242922/messages");
    assert_string_equal(srv.req[0].auth, "Bearer wa-token");
    assert_string_equal(srv.req[0].ctype, "application/json");
    j = req_json(0);
    assert_jstr(j, "messaging_product", "whatsapp");
    assert_jstr(j, "status", "read");
    assert_jstr(j, "message_id", "wamid.HBgLFAKE001");
    assert_jstr(j, "typing_indicator.type", "text");
    cJSON_Delete(j);
    assert_int_equal(mark_read(ad, c, "106540352242922", "15551234567", NULL),
                     CORE_ERR_INVALID);
}

static void
test_ms_send(void **state)
{
    struct ctx *c = *state;
    const struct adp_adapter *ad = adp_find("messenger");
    struct canned ok = { 200,
                         "{\"recipient_id\":\"2468013579024680\","
                         "\"message_id\":\"m_BOT001\"}",
                         NULL };
    struct canned win = { 400,
                          "{\"error\":{\"message\":\"(#10) This message is "
                          "sent outside of allowed window.\",\"type\":"
                          "\"OAuthException\",\"code\":10,\"error_subcode\":"
                          "2018278,\"fbtrace_id\":\"T3\"}}",
                          NULL };
    struct canned gone = { 400,
                           "{\"error\":{\"message\":\"(#551) This person "
                           "isn't available right now.\",\"code\":551,"
                           "\"error_subcode\":1545041}}",
                           NULL };
    struct adp_button qr[2] = { { "TRACK", "Track it" },
                                { "HUMAN", "Talk to a human" } };
    struct adp_send_result res;
    const cJSON *arr;
    cJSON *j;

    srv_expect(1, &ok);
    assert_int_equal(
        ad->send_text(&c->cfg, c->curl, "104200000000001", "2468013579024680",
                      "Your order ships tomorrow.", "m_FAKE001", qr, 2, &res),
        CORE_OK);
    assert_string_equal(res.message_id, "m_BOT001");
    assert_string_equal(srv.req[0].url, "/v21.0/me/messages");
    assert_string_equal(srv.req[0].auth, "Bearer ms-token");
    j = req_json(0);
    assert_jstr(j, "recipient.id", "2468013579024680");
    assert_jstr(j, "messaging_type", "RESPONSE");
    assert_jstr(j, "message.text", "Your order ships tomorrow.");
    arr =
        cJSON_GetObjectItem(cJSON_GetObjectItem(j, "message"), "quick_replies");
    assert_int_equal(cJSON_GetArraySize(arr), 2);
    assert_jstr(cJSON_GetArrayItem(arr, 1), "content_type", "text");
    assert_jstr(cJSON_GetArrayItem(arr, 1), "title", "Talk to a human");
    assert_jstr(cJSON_GetArrayItem(arr, 1), "payload", "HUMAN");
    cJSON_Delete(j);

    srv_expect(1, &win);
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "104200000000001",
                                   "2468013579024680", "late", NULL, NULL, 0,
                                   &res),
                     CORE_ERR_PERMANENT);
    assert_int_equal(res.cls, ADP_SEND_WINDOW_CLOSED);
    assert_int_equal(res.error_subcode, 2018278);
    srv_expect(1, &gone);
    ad->send_text(&c->cfg, c->curl, "104200000000001", "2468013579024680", "x",
                  NULL, NULL, 0, &res);
    assert_int_equal(res.cls, ADP_SEND_UNREACHABLE);

    /* mark_read: mark_seen, then typing_on */
    srv_expect(1, &ok);
    assert_int_equal(
        mark_read(ad, c, "104200000000001", "2468013579024680", "m_FAKE001"),
        CORE_OK);
    assert_int_equal(srv_count(), 2);
    j = req_json(0);
    assert_jstr(j, "recipient.id", "2468013579024680");
    assert_jstr(j, "sender_action", "mark_seen");
    assert_null(cJSON_GetObjectItem(j, "message"));
    cJSON_Delete(j);
    j = req_json(1);
    assert_jstr(j, "sender_action", "typing_on");
    cJSON_Delete(j);
}

static void
test_ig_send(void **state)
{
    struct ctx *c = *state;
    const struct adp_adapter *ad = adp_find("instagram");
    struct canned ok = { 200,
                         "{\"recipient_id\":\"5432109876543210\","
                         "\"message_id\":\"aWdfZAG1BOTMID\"}",
                         NULL };
    struct adp_send_result res;
    char text[1100];
    size_t i;

    srv_expect(1, &ok);
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "17841400000000001",
                                   "5432109876543210", "In stock!", NULL, NULL,
                                   0, &res),
                     CORE_OK);
    assert_string_equal(res.message_id, "aWdfZAG1BOTMID");
    assert_string_equal(srv.req[0].url, "/v21.0/17841400000000001/messages");
    assert_string_equal(srv.req[0].auth, "Bearer ig-token");

    /* 1000 bytes: 333 three-byte chars = 999 bytes fit, 334 do not */
    for (i = 0; i < 334; i++)
        memcpy(text + 3 * i, "\xe4\xbd\xa0", 3);
    text[3 * 334] = '\0';
    srv_expect(1, &ok);
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "17841400000000001",
                                   "5432109876543210", text, NULL, NULL, 0,
                                   &res),
                     CORE_ERR_TOO_LARGE);
    assert_int_equal(srv_count(), 0);
    text[3 * 333] = '\0';
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "17841400000000001",
                                   "5432109876543210", text, NULL, NULL, 0,
                                   &res),
                     CORE_OK);
    /* the channel is a path segment: must be safe */
    assert_int_equal(ad->send_text(&c->cfg, c->curl, "../me",
                                   "5432109876543210", "x", NULL, NULL, 0,
                                   &res),
                     CORE_ERR_INVALID);
    assert_int_equal(srv_count(), 1);
    srv_expect(1, &ok);
    assert_int_equal(
        mark_read(ad, c, "17841400000000001", "5432109876543210", NULL),
        CORE_OK);
    assert_int_equal(srv_count(), 2);
}

static void
test_big_response(void **state)
{
    struct ctx *c = *state;
    struct canned big = { 200, "BIG", NULL };
    struct adp_send_result res;

    /* accepted (200) but the body is not read past the cap */
    srv_expect(1, &big);
    assert_int_equal(
        adp_find("messenger")
            ->send_text(&c->cfg, c->curl, "p", "u", "x", NULL, NULL, 0, &res),
        CORE_OK);
    assert_int_equal(res.cls, ADP_SEND_OK);
    assert_string_equal(res.message_id, "");
}

static void
test_config_and_connect_errors(void **state)
{
    struct ctx *c = *state;
    struct core_config cfg = c->cfg;
    struct adp_send_result res;
    char dead[64];

    cfg.whatsapp_token = NULL;
    srv_expect(1, &(struct canned){ 200, WA_OK, NULL });
    assert_int_equal(
        adp_find("whatsapp")
            ->send_text(&cfg, c->curl, "1", "2", "x", NULL, NULL, 0, &res),
        CORE_ERR_CONFIG);
    assert_int_equal(res.cls, ADP_SEND_PERMANENT);
    assert_int_equal(srv_count(), 0);

    /* nothing listens on port 1: no HTTP answer, transient */
    cfg = c->cfg;
    snprintf(dead, sizeof(dead), "http://127.0.0.1:1/v21.0");
    cfg.graph_api_base = dead;
    assert_int_equal(
        adp_find("whatsapp")
            ->send_text(&cfg, c->curl, "1", "2", "x", NULL, NULL, 0, &res),
        CORE_ERR_UNAVAILABLE);
    assert_int_equal(res.cls, ADP_SEND_TRANSIENT);
    assert_int_equal(res.http_status, 0);
    assert_true(res.error_title[0] != '\0');

    /* the handle is reusable afterwards */
    srv_expect(1, &(struct canned){ 200, WA_OK, NULL });
    assert_int_equal(
        adp_find("whatsapp")
            ->send_text(&c->cfg, c->curl, "1", "2", "x", NULL, NULL, 0, &res),
        CORE_OK);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wa_send_text, ctx_setup,
                                        ctx_teardown),
        cmocka_unit_test_setup_teardown(test_wa_send_buttons, ctx_setup,
                                        ctx_teardown),
        cmocka_unit_test_setup_teardown(test_wa_send_errors, ctx_setup,
                                        ctx_teardown),
        cmocka_unit_test_setup_teardown(test_wa_mark_read, ctx_setup,
                                        ctx_teardown),
        cmocka_unit_test_setup_teardown(test_ms_send, ctx_setup, ctx_teardown),
        cmocka_unit_test_setup_teardown(test_ig_send, ctx_setup, ctx_teardown),
        cmocka_unit_test_setup_teardown(test_big_response, ctx_setup,
                                        ctx_teardown),
        cmocka_unit_test_setup_teardown(test_config_and_connect_errors,
                                        ctx_setup, ctx_teardown),
    };
    int rc;

    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, srv_setup, srv_teardown);
    curl_global_cleanup();
    return rc;
}
