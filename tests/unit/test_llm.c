/*
 * Tests of the LLM client (inference/llm.c, inference/llm_parse.c): pure
 * tests of the SSE parser, the completion accumulator and the header
 * parsers, then end-to-end calls against an in-test HTTP server
 * (libmicrohttpd, thread per connection) that plays scripted answers.
 */
/* cmocka.h needs these first. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/metrics.h"
#include "inference/llm.h"
#include "inference/llm_parse.h"

/* Current value of one rendered series ("name{labels}"), 0 if absent. */
static double
metric(const char *series)
{
    struct core_buf out;
    size_t n = strlen(series);
    const char *p;
    double v = 0;

    core_buf_init(&out, 1 << 20);
    assert_int_equal(core_metrics_render(&out), CORE_OK);
    for (p = out.data; p && *p;
         p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            v = strtod(p + n + 1, NULL);
            break;
        }
    }
    core_buf_done(&out);
    return v;
}

/* ==== pure: SSE framing ================================================ */

struct ev_log {
    char text[4096];
    size_t len;
    int n;
};

static enum core_status
ev_cb(void *ctx, const char *data, size_t len)
{
    struct ev_log *l = ctx;
    int r;

    if (strcmp(data, "stop") == 0)
        return CORE_ERR_UPSTREAM;
    assert_int_equal(strlen(data), len);
    r = snprintf(l->text + l->len, sizeof(l->text) - l->len, "[%s]", data);
    assert_true(r > 0 && (size_t)r < sizeof(l->text) - l->len);
    l->len += (size_t)r;
    l->n++;
    return CORE_OK;
}

/* Feed s in pieces of `step` bytes (0: all at once), then end. */
static enum core_status
sse_run(const char *s, size_t step, size_t max, struct ev_log *l)
{
    struct inf_sse p;
    enum core_status st = CORE_OK;
    size_t n = strlen(s), i, k;

    memset(l, 0, sizeof(*l));
    inf_sse_init(&p, max, ev_cb, l);
    if (step == 0)
        step = n ? n : 1;
    for (i = 0; i < n && st == CORE_OK; i += k) {
        k = n - i < step ? n - i : step;
        st = inf_sse_feed(&p, s + i, k);
    }
    if (st == CORE_OK)
        st = inf_sse_end(&p);
    inf_sse_done(&p);
    return st;
}

static void
test_sse_framing(void **state)
{
    static const char in[] = "data: a\n\n"
                             "data: b\r\n\r\n"
                             ": keep-alive comment\n\n"
                             "data: c1\ndata: c2\n\n"
                             "event: x\nid: 3\nretry: 10\ndata:d\r\r"
                             "data:  e\n\n"
                             "data\n\n"
                             "data: tail";
    static const char want[] = "[a][b][c1\nc2][d][ e][][tail]";
    struct ev_log l;
    size_t step;

    (void)state;
    for (step = 0; step <= 7; step++) {
        assert_int_equal(sse_run(in, step, 1024, &l), CORE_OK);
        assert_string_equal(l.text, want);
        assert_int_equal(l.n, 7);
    }
}

static void
test_sse_bom_crlf_split(void **state)
{
    struct ev_log l;

    (void)state;
    /* BOM, CRLF split between feeds (step 1), a blank line of "\r\n". */
    assert_int_equal(sse_run("\xEF\xBB\xBF"
                             "data: x\r\n\r\ndata: y\r\n\r\n",
                             1, 64, &l),
                     CORE_OK);
    assert_string_equal(l.text, "[x][y]");
    /* No events from comments and unknown fields alone. */
    assert_int_equal(sse_run(":a\n:b\n\nevent: e\n\n", 3, 64, &l), CORE_OK);
    assert_int_equal(l.n, 0);
}

static void
test_sse_limits_and_stop(void **state)
{
    struct ev_log l;

    (void)state;
    assert_int_equal(sse_run("data: 0123456789abcdef0123456789\n\n", 0, 16, &l),
                     CORE_ERR_TOO_LARGE);
    /* A long line split across feeds hits the line limit. */
    assert_int_equal(sse_run("data: 0123456789abcdef0123456789\n\n", 4, 16, &l),
                     CORE_ERR_TOO_LARGE);
    /* Many data lines make a too-large event. */
    assert_int_equal(
        sse_run("data: 0123\ndata: 4567\ndata: 89ab\ndata: c\n\n", 0, 16, &l),
        CORE_ERR_TOO_LARGE);
    /* A callback error stops the parser and is returned. */
    assert_int_equal(sse_run("data: a\n\ndata: stop\n\ndata: b\n\n", 2, 64, &l),
                     CORE_ERR_UPSTREAM);
    assert_string_equal(l.text, "[a]");
}

/* ==== pure: accumulator ================================================ */

static const char k_stream[] =
    ": ping\n\n"
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":"
    "\"served-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
    "\"assistant\"},\"finish_reason\":null}],\"usage\":null}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Ol\xC3\xA1\"},"
    "\"finish_reason\":null}]}\r\n\r\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\", "
    "w\xC3\xB6rld \xF0\x9F\x98\x80\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
    "\"stop\"}]}\n\n"
    "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
    "\"completion_tokens\":5,\"total_tokens\":17}}\n\n"
    "data: [DONE]\n\n";
static const char k_stream_text[] = "Ol\xC3\xA1, w\xC3\xB6rld \xF0\x9F\x98\x80";

struct acc_ctx {
    struct inf_llm_acc acc;
    struct inf_sse sse;
};

static enum core_status
acc_event(void *ctx, const char *data, size_t len)
{
    struct acc_ctx *c = ctx;

    return inf_llm_acc_chunk(&c->acc, data, len) == INF_LLM_OK
               ? CORE_OK
               : CORE_ERR_UPSTREAM;
}

static void
acc_feed_split(struct acc_ctx *c, const char *s, size_t split)
{
    size_t n = strlen(s);

    inf_llm_acc_init(&c->acc, 1 << 20);
    inf_sse_init(&c->sse, 1 << 20, acc_event, c);
    assert_int_equal(inf_sse_feed(&c->sse, s, split), CORE_OK);
    assert_int_equal(inf_sse_feed(&c->sse, s + split, n - split), CORE_OK);
    assert_int_equal(inf_sse_end(&c->sse), CORE_OK);
}

static void
test_acc_stream_every_split(void **state)
{
    struct acc_ctx c;
    size_t split, n = strlen(k_stream);

    (void)state;
    /* Every split position, including inside CRLF, JSON and UTF-8. */
    for (split = 0; split <= n; split++) {
        acc_feed_split(&c, k_stream, split);
        assert_int_equal(c.acc.err, INF_LLM_OK);
        assert_string_equal(c.acc.content.data, k_stream_text);
        assert_string_equal(c.acc.finish_reason, "stop");
        assert_string_equal(c.acc.model, "served-model");
        assert_int_equal(c.acc.prompt_tokens, 12);
        assert_int_equal(c.acc.completion_tokens, 5);
        assert_true(c.acc.done);
        assert_true(c.acc.got_content);
        inf_sse_done(&c.sse);
        inf_llm_acc_done(&c.acc);
    }
}

static enum inf_llm_error
chunk(struct inf_llm_acc *a, const char *s)
{
    return inf_llm_acc_chunk(a, s, strlen(s));
}

static void
test_acc_chunk_cases(void **state)
{
    struct inf_llm_acc a;
    static const char two[] =
        "{\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n"
        "{\"choices\":[{\"delta\":{\"content\":\"b\"},\"finish_reason\":"
        "\"length\"}],\"x_groq\":{\"usage\":{\"prompt_tokens\":3,"
        "\"completion_tokens\":2}}}\n[DONE]";

    (void)state;
    /* Several JSON values in one event (several data lines), Groq usage. */
    inf_llm_acc_init(&a, 1024);
    assert_int_equal(chunk(&a, two), INF_LLM_OK);
    assert_string_equal(a.content.data, "ab");
    assert_string_equal(a.finish_reason, "length");
    assert_int_equal(a.prompt_tokens, 3);
    assert_int_equal(a.completion_tokens, 2);
    assert_true(a.done);
    inf_llm_acc_done(&a);

    /* An error object inside the stream (vLLM / llama.cpp). */
    inf_llm_acc_init(&a, 1024);
    assert_int_equal(chunk(&a, "{\"error\":{\"message\":\"out of "
                               "\\\"memory\\\"\",\"code\":500}}"),
                     INF_LLM_STREAM_ERROR);
    assert_non_null(strstr(a.error, "out of 'memory'"));
    assert_non_null(strstr(a.error, "(code 500)"));
    /* Sticky: later chunks do not clear it. */
    assert_int_equal(chunk(&a, "[DONE]"), INF_LLM_STREAM_ERROR);
    inf_llm_acc_done(&a);

    /* Older vLLM flat error. */
    inf_llm_acc_init(&a, 1024);
    assert_int_equal(chunk(&a, "{\"object\":\"error\",\"message\":\"m\"}"),
                     INF_LLM_STREAM_ERROR);
    inf_llm_acc_done(&a);

    /* Garbage and non-objects. */
    inf_llm_acc_init(&a, 1024);
    assert_int_equal(chunk(&a, "{\"choices\":["), INF_LLM_BAD_RESPONSE);
    inf_llm_acc_done(&a);
    inf_llm_acc_init(&a, 1024);
    assert_int_equal(chunk(&a, "42"), INF_LLM_BAD_RESPONSE);
    inf_llm_acc_done(&a);

    /* Content cap. */
    inf_llm_acc_init(&a, 4);
    assert_int_equal(
        chunk(&a, "{\"choices\":[{\"delta\":{\"content\":\"abcdef\"}}]}"),
        INF_LLM_BAD_RESPONSE);
    inf_llm_acc_done(&a);
}

static enum inf_llm_error
body_case(const char *body, struct inf_llm_acc *a)
{
    inf_llm_acc_init(a, 1024);
    return inf_llm_acc_body(a, body, strlen(body));
}

static void
test_acc_body_cases(void **state)
{
    struct inf_llm_acc a;

    (void)state;
    assert_int_equal(
        body_case(
            "{\"model\":\"m1\",\"choices\":[{\"index\":0,\"message\":"
            "{\"role\":\"assistant\",\"content\":\"Yes.\"},"
            "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":42,"
            "\"completion_tokens\":9}}",
            &a),
        INF_LLM_OK);
    assert_string_equal(a.content.data, "Yes.");
    assert_string_equal(a.finish_reason, "stop");
    assert_string_equal(a.model, "m1");
    assert_int_equal(a.prompt_tokens, 42);
    assert_int_equal(a.completion_tokens, 9);
    inf_llm_acc_done(&a);

    /* content null (tool calls): empty completion, usage unknown. */
    assert_int_equal(body_case("{\"choices\":[{\"message\":{\"content\":null},"
                               "\"finish_reason\":\"tool_calls\"}]}",
                               &a),
                     INF_LLM_OK);
    assert_int_equal(a.content.len, 0);
    assert_int_equal(a.prompt_tokens, -1);
    assert_false(a.got_content);
    inf_llm_acc_done(&a);

    assert_int_equal(body_case("{\"choices\":[]}", &a), INF_LLM_BAD_RESPONSE);
    inf_llm_acc_done(&a);
    assert_int_equal(
        body_case("{\"choices\":[{\"message\":{\"content\":5}}]}", &a),
        INF_LLM_BAD_RESPONSE);
    inf_llm_acc_done(&a);
    assert_int_equal(body_case("{\"error\":{\"message\":\"nope\"}}", &a),
                     INF_LLM_BAD_RESPONSE);
    assert_non_null(strstr(a.error, "nope"));
    inf_llm_acc_done(&a);
    assert_int_equal(body_case("<html>", &a), INF_LLM_BAD_RESPONSE);
    inf_llm_acc_done(&a);
    assert_int_equal(body_case("", &a), INF_LLM_BAD_RESPONSE);
    inf_llm_acc_done(&a);
}

static void
test_error_message(void **state)
{
    char out[64];
    const char *b;

    (void)state;
    b = "{\"error\":{\"message\":\"Rate limit reached\",\"type\":\"tokens\","
        "\"code\":\"rate_limit_exceeded\"}}";
    inf_llm_error_message(b, strlen(b), out, sizeof(out));
    assert_string_equal(out, "Rate limit reached (code rate_limit_exceeded)");
    b = "{\"object\":\"error\",\"message\":\"no such model\",\"type\":"
        "\"NotFoundError\",\"param\":null,\"code\":404}";
    inf_llm_error_message(b, strlen(b), out, sizeof(out));
    assert_string_equal(out, "no such model (code 404)");
    b = "{\"error\":{\"code\":503,\"type\":\"unavailable_error\"}}";
    inf_llm_error_message(b, strlen(b), out, sizeof(out));
    assert_string_equal(out, "unavailable_error (code 503)");
    b = "{\"error\":\"boom\"}";
    inf_llm_error_message(b, strlen(b), out, sizeof(out));
    assert_string_equal(out, "boom");
    b = "<html>\"Bad\" Gateway</html>\r\n";
    inf_llm_error_message(b, strlen(b), out, sizeof(out));
    assert_string_equal(out, "<html>'Bad' Gateway</html>  ");
    inf_llm_error_message(NULL, 0, out, sizeof(out));
    assert_string_equal(out, "empty body");
    /* Truncation does not cut a UTF-8 sequence. */
    inf_llm_error_message("abc\xC3\xA9z", 6, out, 5);
    assert_string_equal(out, "abc");
}

/* ==== pure: header values ============================================= */

static long
ra(const char *v, time_t now)
{
    long ms = -12345;

    return inf_llm_parse_retry_after(v, now, &ms) == 0 ? ms : -1;
}

static long
gd(const char *v)
{
    long ms = -12345;

    return inf_llm_parse_go_duration(v, &ms) == 0 ? ms : -1;
}

static void
test_parse_retry_after(void **state)
{
    const time_t t0 = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */

    (void)state;
    assert_int_equal(ra("1", 0), 1000);
    assert_int_equal(ra(" 120 ", 0), 120000);
    assert_int_equal(ra("0", 0), 0);
    assert_int_equal(ra("1.5", 0), 1500);
    assert_int_equal(ra("99999999999", 0), 24L * 3600 * 1000); /* capped */
    assert_int_equal(ra("Wed, 21 Oct 2015 07:28:00 GMT", t0 - 30), 30000);
    assert_int_equal(ra("Wednesday, 21-Oct-15 07:28:00 GMT", t0 - 2), 2000);
    assert_int_equal(ra("Wed Oct 21 07:28:00 2015", t0 - 5), 5000);
    assert_int_equal(ra("Wed, 21 Oct 2015 07:28:00 GMT", t0 + 60), 0);
    assert_int_equal(ra("12abc", 0), -1);
    assert_int_equal(ra("abc", 0), -1);
    assert_int_equal(ra("", 0), -1);
    assert_int_equal(ra(NULL, 0), -1);
}

static void
test_parse_go_duration(void **state)
{
    (void)state;
    assert_int_equal(gd("1m2.5s"), 62500);
    assert_int_equal(gd("120ms"), 120);
    assert_int_equal(gd("7.66s"), 7660);
    assert_int_equal(gd("2m59.56s"), 179560);
    assert_int_equal(gd("940ms"), 940);
    assert_int_equal(gd("1h"), 3600000);
    assert_int_equal(gd("1h0m0.001s"), 3600001);
    assert_int_equal(gd("0"), 0);
    assert_int_equal(gd("0s"), 0);
    assert_int_equal(gd(" 5s "), 5000);
    assert_int_equal(gd("1.5\xC2\xB5s"), 1); /* rounded up */
    assert_int_equal(gd("250us"), 1);
    assert_int_equal(gd("10ns"), 1);
    assert_int_equal(gd("0.4ms"), 1);
    assert_int_equal(gd(""), -1);
    assert_int_equal(gd("5"), -1);
    assert_int_equal(gd("s"), -1);
    assert_int_equal(gd("1x"), -1);
    assert_int_equal(gd("1m 2s"), -1);
    assert_int_equal(gd("1.2.3s"), -1);
    assert_int_equal(gd("-1s"), -1);
    assert_int_equal(gd(NULL), -1);
}

/* ==== scripted HTTP server ============================================= */

#define SRV_MAX_REQS 16
#define SRV_MAX_HDRS 4

struct step {
    unsigned int status;
    const char *content_type;
    const char *hdr_name[SRV_MAX_HDRS];
    const char *hdr_value[SRV_MAX_HDRS];
    const char *body;          /* whole body ... */
    const char *const *chunks; /* ... or NULL-terminated chunks */
    int chunk_delay_ms;
    int delay_ms; /* before answering */
};

struct srv {
    struct MHD_Daemon *d;
    char base[64];
    pthread_mutex_t mu;
    const struct step *steps;
    size_t nsteps;
    int nreq;
    int nconn;
    char *req_body[SRV_MAX_REQS];
    char auth[SRV_MAX_REQS][128];
    char ctype[SRV_MAX_REQS][64];
    char url[SRV_MAX_REQS][64];
    atomic_int stopping;
};

static struct srv S = { .mu = PTHREAD_MUTEX_INITIALIZER };

struct upload {
    struct core_buf buf;
};

struct reader {
    const struct step *st;
    size_t i;
};

static void
srv_sleep(int ms)
{
    struct timespec ts = { 0, 10 * 1000000L };

    for (; ms > 0 && !atomic_load(&S.stopping); ms -= 10)
        nanosleep(&ts, NULL);
}

static void
copy_hdr(struct MHD_Connection *conn, const char *name, char *out, size_t n)
{
    const char *v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);

    snprintf(out, n, "%s", v ? v : "");
}

static ssize_t
srv_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct reader *r = cls;
    const char *c = r->st->chunks[r->i];
    size_t n;

    (void)pos;
    if (!c)
        return MHD_CONTENT_READER_END_OF_STREAM;
    srv_sleep(r->st->chunk_delay_ms);
    n = strlen(c);
    if (n > max)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    memcpy(buf, c, n);
    r->i++;
    return (ssize_t)n;
}

static struct MHD_Response *
srv_response(const struct step *st)
{
    struct MHD_Response *resp;
    struct reader *r;
    size_t i;

    if (st->chunks) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return NULL;
        r->st = st;
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096,
                                                 srv_reader, r, free);
    } else {
        resp = MHD_create_response_from_buffer(
            strlen(st->body ? st->body : ""),
            (void *)(uintptr_t)(st->body ? st->body : ""),
            MHD_RESPMEM_PERSISTENT);
    }
    if (!resp)
        return NULL;
    if (st->content_type)
        MHD_add_response_header(resp, "Content-Type", st->content_type);
    for (i = 0; i < SRV_MAX_HDRS && st->hdr_name[i]; i++)
        MHD_add_response_header(resp, st->hdr_name[i], st->hdr_value[i]);
    return resp;
}

static enum MHD_Result
srv_handler(void *cls, struct MHD_Connection *conn, const char *url,
            const char *method, const char *version, const char *upload_data,
            size_t *upload_size, void **con_cls)
{
    struct upload *up = *con_cls;
    struct MHD_Response *resp;
    const struct step *st;
    enum MHD_Result ret;
    int idx;

    (void)cls;
    (void)method;
    (void)version;
    if (!up) {
        up = calloc(1, sizeof(*up));
        if (!up)
            return MHD_NO;
        core_buf_init(&up->buf, 1 << 20);
        *con_cls = up;
        return MHD_YES;
    }
    if (*upload_size) {
        if (core_buf_add(&up->buf, upload_data, *upload_size) != CORE_OK)
            return MHD_NO;
        *upload_size = 0;
        return MHD_YES;
    }
    pthread_mutex_lock(&S.mu);
    idx = S.nreq++;
    if (idx < SRV_MAX_REQS) {
        S.req_body[idx] = strdup(up->buf.data ? up->buf.data : "");
        copy_hdr(conn, "Authorization", S.auth[idx], sizeof(S.auth[idx]));
        copy_hdr(conn, "Content-Type", S.ctype[idx], sizeof(S.ctype[idx]));
        snprintf(S.url[idx], sizeof(S.url[idx]), "%s", url);
    }
    st = &S.steps[(size_t)idx < S.nsteps ? (size_t)idx : S.nsteps - 1];
    pthread_mutex_unlock(&S.mu);
    srv_sleep(st->delay_ms);
    resp = srv_response(st);
    if (!resp)
        return MHD_NO;
    ret = MHD_queue_response(conn, st->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static void
srv_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
              enum MHD_RequestTerminationCode toe)
{
    struct upload *up = *con_cls;

    (void)cls;
    (void)conn;
    (void)toe;
    if (up) {
        core_buf_done(&up->buf);
        free(up);
        *con_cls = NULL;
    }
}

static void
srv_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
               enum MHD_ConnectionNotificationCode toe)
{
    (void)cls;
    (void)conn;
    (void)socket_context;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        pthread_mutex_lock(&S.mu);
        S.nconn++;
        pthread_mutex_unlock(&S.mu);
    }
}

static void
srv_clear(void)
{
    int i;

    for (i = 0; i < SRV_MAX_REQS; i++) {
        free(S.req_body[i]);
        S.req_body[i] = NULL;
    }
    S.nreq = 0;
    S.nconn = 0;
}

/* Install the answers for the next requests (the last one repeats). */
static void
srv_script(const struct step *steps, size_t n)
{
    pthread_mutex_lock(&S.mu);
    srv_clear();
    S.steps = steps;
    S.nsteps = n;
    pthread_mutex_unlock(&S.mu);
}

static int
srv_nreq(void)
{
    int n;

    pthread_mutex_lock(&S.mu);
    n = S.nreq;
    pthread_mutex_unlock(&S.mu);
    return n;
}

static int
srv_start(void **state)
{
    struct sockaddr_in sin;
    const union MHD_DaemonInfo *info;

    (void)state;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = 0;
    S.d = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0,
        NULL, NULL, srv_handler, NULL, MHD_OPTION_SOCK_ADDR, &sin,
        MHD_OPTION_NOTIFY_COMPLETED, srv_completed, NULL,
        MHD_OPTION_NOTIFY_CONNECTION, srv_connection, NULL,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)10, MHD_OPTION_END);
    if (!S.d)
        return -1;
    info = MHD_get_daemon_info(S.d, MHD_DAEMON_INFO_BIND_PORT);
    if (!info || info->port == 0)
        return -1;
    /* Trailing slash on purpose: the client must strip it. */
    snprintf(S.base, sizeof(S.base), "http://127.0.0.1:%u/v1/",
             (unsigned)info->port);
    return 0;
}

static int
srv_stop(void **state)
{
    (void)state;
    atomic_store(&S.stopping, 1);
    if (S.d)
        MHD_stop_daemon(S.d);
    S.d = NULL;
    pthread_mutex_lock(&S.mu);
    srv_clear();
    pthread_mutex_unlock(&S.mu);
    return 0;
}

/* ==== client fixture =================================================== */

static char k_model[] = "test-model";
static char k_key[] = "sk-test-secret-123";
static char k_empty[] = "";

struct fix {
    struct core_config cfg;
    struct inf_llm *llm;
    struct inf_llm_result res;
};

static int
fix_setup(void **state)
{
    struct fix *f = calloc(1, sizeof(*f));

    if (!f)
        return -1;
    f->cfg.llm_base_url = S.base;
    f->cfg.llm_api_key = k_key;
    f->cfg.llm_model = k_model;
    f->cfg.llm_timeout_ms = 3000;
    f->cfg.llm_max_tokens = 64;
    f->cfg.llm_temperature = 0.25;
    f->cfg.llm_max_attempts = 3;
    f->cfg.llm_stream = false;
    *state = f;
    return 0;
}

static int
fix_teardown(void **state)
{
    struct fix *f = *state;

    inf_llm_result_done(&f->res);
    inf_llm_free(f->llm);
    free(f);
    return 0;
}

static struct inf_llm *
fix_llm(struct fix *f)
{
    f->llm = inf_llm_new(&f->cfg);
    assert_non_null(f->llm);
    return f->llm;
}

static const struct inf_llm_message k_msgs[] = {
    { "system", "You are the support assistant." },
    { "user", "Do you ship to Lisbon?" },
    { "assistant", "Which address?" },
    { "user", "Rua Augusta 1" },
};

static const struct inf_llm_request k_req = {
    .messages = k_msgs,
    .nmessages = 4,
    .temperature = -1,
    .stream = -1,
};

static enum core_status
fix_call(struct fix *f, int stream)
{
    struct inf_llm_request req = k_req;

    req.stream = stream;
    inf_llm_result_done(&f->res);
    return inf_llm_complete(f->llm, &req, &f->res);
}

#define OK_BODY                                                         \
    "{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"model\":"  \
    "\"served-model\",\"choices\":[{\"index\":0,\"message\":{\"role\":" \
    "\"assistant\",\"content\":\"Yes, we ship to Lisbon.\"},"           \
    "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":42,"     \
    "\"completion_tokens\":9,\"total_tokens\":51}}"

#define OK_STEP                                                            \
    {                                                                      \
        .status = 200, .content_type = "application/json", .body = OK_BODY \
    }

static const struct step k_ok = OK_STEP;

static void
assert_ok_result(const struct fix *f)
{
    assert_int_equal(f->res.err, INF_LLM_OK);
    assert_string_equal(f->res.content, "Yes, we ship to Lisbon.");
    assert_string_equal(f->res.finish_reason, "stop");
    assert_string_equal(f->res.model, "served-model");
    assert_int_equal(f->res.prompt_tokens, 42);
    assert_int_equal(f->res.completion_tokens, 9);
    assert_int_equal(f->res.http_status, 200);
}

/* ==== HTTP tests ======================================================= */

static void
test_http_nonstream_ok(void **state)
{
    struct fix *f = *state;
    cJSON *j, *msgs, *m;
    int i;

    srv_script(&k_ok, 1);
    fix_llm(f);
    assert_false(inf_llm_is_echo(f->llm));
    assert_int_equal(fix_call(f, -1), CORE_OK);
    assert_ok_result(f);
    assert_int_equal(f->res.attempts, 1);
    assert_true(f->res.ttft_ms >= 0 && f->res.ttft_ms <= f->res.total_ms);

    assert_int_equal(srv_nreq(), 1);
    assert_string_equal(S.url[0], "/v1/chat/completions");
    assert_string_equal(S.auth[0], "Bearer sk-test-secret-123");
    assert_string_equal(S.ctype[0], "application/json");
    j = cJSON_Parse(S.req_body[0]);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring,
                        "test-model");
    assert_int_equal(cJSON_GetObjectItem(j, "max_tokens")->valueint, 64);
    assert_true(cJSON_GetObjectItem(j, "temperature")->valuedouble == 0.25);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "stream")));
    assert_null(cJSON_GetObjectItem(j, "stream_options"));
    msgs = cJSON_GetObjectItem(j, "messages");
    assert_int_equal(cJSON_GetArraySize(msgs), 4);
    for (i = 0; i < 4; i++) {
        m = cJSON_GetArrayItem(msgs, i);
        assert_string_equal(cJSON_GetObjectItem(m, "role")->valuestring,
                            k_msgs[i].role);
        assert_string_equal(cJSON_GetObjectItem(m, "content")->valuestring,
                            k_msgs[i].content);
    }
    cJSON_Delete(j);
}

static void
test_http_overrides_and_keepalive(void **state)
{
    struct fix *f = *state;
    struct inf_llm_request req = k_req;
    cJSON *j;

    srv_script(&k_ok, 1);
    f->cfg.llm_api_key = NULL;
    fix_llm(f);
    req.model = "other-model";
    req.max_tokens = 7;
    req.temperature = 0;
    req.stream = 0;
    assert_int_equal(inf_llm_complete(f->llm, &req, &f->res), CORE_OK);
    inf_llm_result_done(&f->res);
    assert_int_equal(fix_call(f, 0), CORE_OK);
    assert_ok_result(f);

    pthread_mutex_lock(&S.mu);
    assert_int_equal(S.nreq, 2);
    assert_int_equal(S.nconn, 1); /* the second call reused the connection */
    assert_string_equal(S.auth[0], "");
    j = cJSON_Parse(S.req_body[0]);
    pthread_mutex_unlock(&S.mu);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "model")->valuestring,
                        "other-model");
    assert_int_equal(cJSON_GetObjectItem(j, "max_tokens")->valueint, 7);
    assert_true(cJSON_GetObjectItem(j, "temperature")->valuedouble == 0.0);
    cJSON_Delete(j);
}

static const char *const k_chunks_ok[] = {
    ": keep-alive\n\n",
    "data: {\"id\":\"c1\",\"model\":\"served-model\",\"choices\":[{\"index\":0,"
    "\"delta\":{\"role\":\"assistant\"},\"finish_reason\":null}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel",
    "lo\"},\"finish_reason\":null}]}\r\n\r",
    "\ndata: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\" w\xC3",
    "\xB6rld\"},\"finish_reason\":null}]}\n\ndata: {\"choices\":[{\"index\":0,"
    "\"delta\":{},\"finish_reason\":\"stop\"}]}\n",
    "\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,"
    "\"completion_tokens\":3,\"total_tokens\":15}}\n\nda",
    "ta: [DONE]\n\n",
    NULL,
};

static void
test_http_stream_ok(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 200,
                                    .content_type = "text/event-stream",
                                    .chunks = k_chunks_ok,
                                    .chunk_delay_ms = 40 };
    cJSON *j, *opts;

    srv_script(&st, 1);
    fix_llm(f);
    assert_int_equal(fix_call(f, 1), CORE_OK);
    assert_int_equal(f->res.err, INF_LLM_OK);
    assert_string_equal(f->res.content, "Hello w\xC3\xB6rld");
    assert_string_equal(f->res.finish_reason, "stop");
    assert_string_equal(f->res.model, "served-model");
    assert_int_equal(f->res.prompt_tokens, 12);
    assert_int_equal(f->res.completion_tokens, 3);
    assert_int_equal(f->res.attempts, 1);
    /* The first content completes with the 3rd chunk (>= 3 delays) and
     * the stream needs 3 more after it. */
    assert_true(f->res.ttft_ms >= 100);
    assert_true(f->res.ttft_ms < f->res.total_ms);

    pthread_mutex_lock(&S.mu);
    j = cJSON_Parse(S.req_body[0]);
    pthread_mutex_unlock(&S.mu);
    assert_non_null(j);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "stream")));
    opts = cJSON_GetObjectItem(j, "stream_options");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(opts, "include_usage")));
    cJSON_Delete(j);
}

static void
test_http_stream_cfg_default(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 200,
                                    .content_type = "text/event-stream",
                                    .chunks = k_chunks_ok };

    /* stream = -1 takes cfg->llm_stream. */
    srv_script(&st, 1);
    f->cfg.llm_stream = true;
    fix_llm(f);
    assert_int_equal(fix_call(f, -1), CORE_OK);
    assert_string_equal(f->res.content, "Hello w\xC3\xB6rld");
}

static void
test_http_429_retry_after(void **state)
{
    struct fix *f = *state;
    static const struct step steps[] = {
        { .status = 429,
          .content_type = "application/json",
          .hdr_name = { "Retry-After" },
          .hdr_value = { "1" },
          .body = "{\"error\":{\"message\":\"Rate limit reached for model\","
                  "\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}" },
        OK_STEP,
    };

    double retries, rl, ok, tin, tout;

    srv_script(steps, 2);
    fix_llm(f); /* registers the metrics */
    retries = metric("parley_llm_retries_total");
    rl = metric("parley_llm_errors_total{class=\"rate_limit\"}");
    ok = metric("parley_llm_request_duration_seconds_count{result=\"ok\"}");
    tin = metric("parley_llm_tokens_total{direction=\"in\"}");
    tout = metric("parley_llm_tokens_total{direction=\"out\"}");
    assert_int_equal(fix_call(f, 0), CORE_OK);
    assert_ok_result(f);
    assert_int_equal(f->res.attempts, 2);
    assert_int_equal(srv_nreq(), 2);
    assert_true(f->res.total_ms >= 950); /* Retry-After: 1 was honoured */

    assert_true(metric("parley_llm_retries_total") == retries + 1);
    assert_true(metric("parley_llm_errors_total{class=\"rate_limit\"}") ==
                rl + 1);
    assert_true(metric("parley_llm_request_duration_seconds_count{result="
                       "\"ok\"}") == ok + 1);
    assert_true(metric("parley_llm_tokens_total{direction=\"in\"}") ==
                tin + 42);
    assert_true(metric("parley_llm_tokens_total{direction=\"out\"}") ==
                tout + 9);
}

static void
test_http_429_groq_reset_headers(void **state)
{
    struct fix *f = *state;
    static const struct step steps[] = {
        { .status = 429,
          .content_type = "application/json",
          .hdr_name = { "x-ratelimit-remaining-requests",
                        "x-ratelimit-reset-requests",
                        "x-ratelimit-remaining-tokens",
                        "x-ratelimit-reset-tokens" },
          .hdr_value = { "14000", "2m59.56s", "0", "300ms" },
          .body = "{\"error\":{\"message\":\"Rate limit reached\"}}" },
        OK_STEP,
    };

    /* The exhausted limit is tokens: wait 300 ms, not 3 minutes. */
    srv_script(steps, 2);
    fix_llm(f);
    assert_int_equal(fix_call(f, 0), CORE_OK);
    assert_int_equal(f->res.attempts, 2);
    assert_int_equal(srv_nreq(), 2);
    assert_true(f->res.total_ms >= 280);
}

static void
test_http_retry_after_past_deadline(void **state)
{
    struct fix *f = *state;
    static const struct step st = {
        .status = 503,
        .content_type = "application/json",
        .hdr_name = { "Retry-After" },
        .hdr_value = { "3600" },
        .body = "{\"error\":{\"message\":\"loading\"}}"
    };

    /* Waiting an hour would pass the deadline: give up at once. */
    srv_script(&st, 1);
    fix_llm(f);
    assert_int_equal(fix_call(f, 0), CORE_ERR_UPSTREAM);
    assert_int_equal(f->res.err, INF_LLM_SERVER);
    assert_int_equal(f->res.attempts, 1);
    assert_int_equal(srv_nreq(), 1);
    assert_true(f->res.total_ms < 2000);
    assert_non_null(strstr(f->res.error, "HTTP 503: loading"));
}

static void
test_http_500_twice_then_ok(void **state)
{
    struct fix *f = *state;
#define E500                                         \
    {                                                \
        .status = 500, .content_type = "text/plain", \
        .body = "Internal Server Error"              \
    }
    static const struct step steps[] = { E500, E500, OK_STEP };

    srv_script(steps, 3);
    fix_llm(f);
    assert_int_equal(fix_call(f, 0), CORE_OK);
    assert_ok_result(f);
    assert_int_equal(f->res.attempts, 3);
    assert_int_equal(srv_nreq(), 3);
}

static void
test_http_400_not_retried(void **state)
{
    struct fix *f = *state;
    static const struct step st = {
        .status = 400,
        .content_type = "application/json",
        .body = "{\"error\":{\"message\":\"This model's maximum context length "
                "is 8192 tokens\",\"type\":\"BadRequestError\",\"param\":null,"
                "\"code\":400}}"
    };

    srv_script(&st, 1);
    fix_llm(f);
    assert_int_equal(fix_call(f, 0), CORE_ERR_PERMANENT);
    assert_int_equal(f->res.err, INF_LLM_CLIENT);
    assert_int_equal(f->res.attempts, 1);
    assert_int_equal(f->res.http_status, 400);
    assert_int_equal(srv_nreq(), 1);
    assert_null(f->res.content);
    assert_non_null(strstr(f->res.error, "maximum context length"));
}

static void
test_http_malformed_body(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 200,
                                    .content_type = "application/json",
                                    .body = "{\"choices\": [{\"message\": " };

    srv_script(&st, 1);
    f->cfg.llm_max_attempts = 2;
    fix_llm(f);
    assert_int_equal(fix_call(f, 0), CORE_ERR_UPSTREAM);
    assert_int_equal(f->res.err, INF_LLM_BAD_RESPONSE);
    assert_int_equal(f->res.attempts, 2);
    assert_int_equal(srv_nreq(), 2);
    assert_null(f->res.content);
}

static const char *const k_chunks_err[] = {
    "data: {\"choices\":[{\"delta\":{\"content\":\"partial \"}}]}\n\n",
    "data: {\"error\":{\"message\":\"model crashed\",\"type\":\"server_error\","
    "\"code\":500}}\n\n",
    NULL,
};

static const char *const k_chunks_short[] = {
    "data: {\"choices\":[{\"delta\":{\"content\":\"cut \"}}]}\n\n",
    "data: {\"choices\":[{\"delta\":{\"content\":\"off\"}}]}\n\n",
    NULL,
};

static void
test_http_stream_error_then_ok(void **state)
{
    struct fix *f = *state;
    static const struct step steps[] = {
        { .status = 200,
          .content_type = "text/event-stream",
          .chunks = k_chunks_err },
        { .status = 200,
          .content_type = "text/event-stream",
          .chunks = k_chunks_ok },
    };

    srv_script(steps, 2);
    fix_llm(f);
    assert_int_equal(fix_call(f, 1), CORE_OK);
    assert_int_equal(f->res.attempts, 2);
    /* Nothing of the failed attempt leaks into the result. */
    assert_string_equal(f->res.content, "Hello w\xC3\xB6rld");
}

static void
test_http_stream_error(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 200,
                                    .content_type = "text/event-stream",
                                    .chunks = k_chunks_err };

    srv_script(&st, 1);
    f->cfg.llm_max_attempts = 1;
    fix_llm(f);
    assert_int_equal(fix_call(f, 1), CORE_ERR_UPSTREAM);
    assert_int_equal(f->res.err, INF_LLM_STREAM_ERROR);
    assert_int_equal(f->res.http_status, 200);
    assert_non_null(strstr(f->res.error, "model crashed"));
    assert_null(f->res.content);
}

static void
test_http_stream_truncated(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 200,
                                    .content_type = "text/event-stream",
                                    .chunks = k_chunks_short };

    srv_script(&st, 1);
    f->cfg.llm_max_attempts = 2;
    fix_llm(f);
    assert_int_equal(fix_call(f, 1), CORE_ERR_UPSTREAM);
    assert_int_equal(f->res.err, INF_LLM_STREAM_ERROR);
    assert_int_equal(f->res.attempts, 2);
    assert_non_null(strstr(f->res.error, "[DONE]"));
}

static void
test_http_timeout(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 200,
                                    .content_type = "application/json",
                                    .body = OK_BODY,
                                    .delay_ms = 800 };

    srv_script(&st, 1);
    f->cfg.llm_timeout_ms = 200;
    f->cfg.llm_max_attempts = 1;
    fix_llm(f);
    assert_int_equal(fix_call(f, 0), CORE_ERR_TIMEOUT);
    assert_int_equal(f->res.err, INF_LLM_TIMEOUT);
    assert_int_equal(f->res.attempts, 1);
    assert_true(f->res.total_ms >= 150);
    assert_null(f->res.content);
}

static void
test_http_budget_exhausted(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 503,
                                    .content_type = "application/json",
                                    .body =
                                        "{\"error\":{\"code\":503,\"message\":"
                                        "\"Loading model\",\"type\":"
                                        "\"unavailable_error\"}}" };

    double server, retries, err;

    srv_script(&st, 1);
    fix_llm(f);
    server = metric("parley_llm_errors_total{class=\"server\"}");
    retries = metric("parley_llm_retries_total");
    err = metric("parley_llm_request_duration_seconds_count{result="
                 "\"error\"}");
    assert_int_equal(fix_call(f, 0), CORE_ERR_UPSTREAM);
    assert_int_equal(f->res.err, INF_LLM_SERVER);
    assert_int_equal(f->res.attempts, 3);
    assert_int_equal(f->res.http_status, 503);
    assert_int_equal(srv_nreq(), 3);
    assert_non_null(strstr(f->res.error, "Loading model"));

    /* Errors count attempts; the duration counts the call once. */
    assert_true(metric("parley_llm_errors_total{class=\"server\"}") ==
                server + 3);
    assert_true(metric("parley_llm_retries_total") == retries + 2);
    assert_true(metric("parley_llm_request_duration_seconds_count{result="
                       "\"error\"}") == err + 1);
}

static void
test_http_connect_error(void **state)
{
    struct fix *f = *state;
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    char base[64];
    int fd;

    /* A port that was free a moment ago: nothing listens there. */
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    snprintf(base, sizeof(base), "http://127.0.0.1:%u/v1",
             (unsigned)ntohs(sin.sin_port));
    f->cfg.llm_base_url = base;
    f->cfg.llm_max_attempts = 2;
    fix_llm(f);
    assert_int_equal(fix_call(f, 0), CORE_ERR_UNAVAILABLE);
    assert_int_equal(f->res.err, INF_LLM_CONNECT);
    assert_int_equal(f->res.attempts, 2);
    assert_int_equal(f->res.http_status, 0);
    /* The secret never shows up in the error text. */
    assert_null(strstr(f->res.error, k_key));
}

struct bg_call {
    struct fix *f;
    enum core_status st;
};

static void *
bg_call_main(void *arg)
{
    struct bg_call *c = arg;

    c->st = fix_call(c->f, 0);
    return NULL;
}

static void
run_cancel(struct fix *f, struct bg_call *c)
{
    struct timespec ts = { 0, 250 * 1000000L };
    pthread_t th;

    c->f = f;
    assert_int_equal(pthread_create(&th, NULL, bg_call_main, c), 0);
    nanosleep(&ts, NULL);
    inf_llm_cancel(f->llm);
    assert_int_equal(pthread_join(th, NULL), 0);
}

static void
test_http_cancel_backoff(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 503,
                                    .content_type = "application/json",
                                    .hdr_name = { "Retry-After" },
                                    .hdr_value = { "5" },
                                    .body = "{}" };
    struct bg_call c;

    srv_script(&st, 1);
    f->cfg.llm_timeout_ms = 10000;
    fix_llm(f);
    run_cancel(f, &c);
    assert_int_equal(c.st, CORE_ERR_UNAVAILABLE);
    assert_int_equal(f->res.err, INF_LLM_CANCELLED);
    assert_int_equal(f->res.attempts, 1);
    assert_true(f->res.total_ms < 3000); /* not the 5 s Retry-After */
    /* Sticky: the next call gives up without a request. */
    assert_int_equal(fix_call(f, 0), CORE_ERR_UNAVAILABLE);
    assert_int_equal(f->res.err, INF_LLM_CANCELLED);
    assert_int_equal(f->res.attempts, 0);
    assert_int_equal(srv_nreq(), 1);
}

static void
test_http_cancel_transfer(void **state)
{
    struct fix *f = *state;
    static const struct step st = { .status = 200,
                                    .content_type = "application/json",
                                    .body = OK_BODY,
                                    .delay_ms = 4000 };
    struct bg_call c;

    srv_script(&st, 1);
    f->cfg.llm_timeout_ms = 10000;
    fix_llm(f);
    run_cancel(f, &c);
    assert_int_equal(c.st, CORE_ERR_UNAVAILABLE);
    assert_int_equal(f->res.err, INF_LLM_CANCELLED);
    assert_true(f->res.total_ms < 3500); /* before the server answered */
}

/* ==== echo and misuse ================================================== */

static void
test_echo(void **state)
{
    struct fix *f = *state;

    f->cfg.llm_base_url = NULL;
    fix_llm(f);
    assert_true(inf_llm_is_echo(f->llm));
    assert_int_equal(fix_call(f, -1), CORE_OK);
    assert_string_equal(f->res.content, "[echo] Rua Augusta 1");
    assert_string_equal(f->res.finish_reason, "stop");
    assert_string_equal(f->res.model, "echo");
    assert_int_equal(f->res.attempts, 1);
    assert_int_equal(f->res.err, INF_LLM_OK);
    assert_true(f->res.prompt_tokens > 0);
    assert_true(f->res.completion_tokens > 0);

    /* Empty base URL is echo too; deterministic answers. */
    inf_llm_free(f->llm);
    f->cfg.llm_base_url = k_empty;
    fix_llm(f);
    assert_true(inf_llm_is_echo(f->llm));
    assert_int_equal(fix_call(f, 1), CORE_OK);
    assert_string_equal(f->res.content, "[echo] Rua Augusta 1");
}

static void
test_invalid_request(void **state)
{
    struct fix *f = *state;
    struct inf_llm_request req = k_req;
    const struct inf_llm_message bad[] = { { "user", NULL } };

    srv_script(&k_ok, 1);
    fix_llm(f);
    req.nmessages = 0;
    assert_int_equal(inf_llm_complete(f->llm, &req, &f->res), CORE_ERR_INVALID);
    req.messages = bad;
    req.nmessages = 1;
    assert_int_equal(inf_llm_complete(f->llm, &req, &f->res), CORE_ERR_INVALID);
    assert_int_equal(f->res.err, INF_LLM_CLIENT);
    assert_int_equal(srv_nreq(), 0);
    inf_llm_result_done(NULL);
}

#define HTTP_TEST(fn) \
    cmocka_unit_test_setup_teardown(fn, fix_setup, fix_teardown)

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sse_framing),
        cmocka_unit_test(test_sse_bom_crlf_split),
        cmocka_unit_test(test_sse_limits_and_stop),
        cmocka_unit_test(test_acc_stream_every_split),
        cmocka_unit_test(test_acc_chunk_cases),
        cmocka_unit_test(test_acc_body_cases),
        cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_parse_retry_after),
        cmocka_unit_test(test_parse_go_duration),
        HTTP_TEST(test_http_nonstream_ok),
        HTTP_TEST(test_http_overrides_and_keepalive),
        HTTP_TEST(test_http_stream_ok),
        HTTP_TEST(test_http_stream_cfg_default),
        HTTP_TEST(test_http_429_retry_after),
        HTTP_TEST(test_http_429_groq_reset_headers),
        HTTP_TEST(test_http_retry_after_past_deadline),
        HTTP_TEST(test_http_500_twice_then_ok),
        HTTP_TEST(test_http_400_not_retried),
        HTTP_TEST(test_http_malformed_body),
        HTTP_TEST(test_http_stream_error_then_ok),
        HTTP_TEST(test_http_stream_error),
        HTTP_TEST(test_http_stream_truncated),
        HTTP_TEST(test_http_timeout),
        HTTP_TEST(test_http_budget_exhausted),
        HTTP_TEST(test_http_connect_error),
        HTTP_TEST(test_http_cancel_backoff),
        HTTP_TEST(test_http_cancel_transfer),
        HTTP_TEST(test_echo),
        HTTP_TEST(test_invalid_request),
    };
    int rc;

    curl_global_init(CURL_GLOBAL_DEFAULT);
    rc = cmocka_run_group_tests(tests, srv_start, srv_stop);
    core_metrics_reset();
    curl_global_cleanup();
    return rc;
}
