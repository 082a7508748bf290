/*
 * HTTP server and routing; see http.h for the design.
 */
#include "gateway/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <microhttpd.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/adapter.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"
#include "gateway/migrate.h"
#include "gateway/version.h"

#define GW_REQ_MAGIC       0x67775251u
#define GW_MAX_CONNECTIONS 4096
#define GW_IDLE_TIMEOUT_S  30
/* Per-connection memory for headers and buffers (431 past it; MHD's
 * default size). MHD zeroes the rest of it after every request on a
 * kept-alive connection: at 64 KiB, memset was 5 % of Parley's perf
 * samples under ingest load. */
#define GW_HEADER_MEMORY    (32 * 1024)
#define GW_READY_ACQUIRE_MS 1000
#define GW_LATE_ANSWER_S    5.0 /* webhook answers later than this are logged */

enum gw_req_state { REQ_NEW = 0, REQ_BODY, REQ_WAITING, REQ_DONE };

struct gw_server;

struct gw_req {
    unsigned magic;
    struct gw_server *srv;
    struct MHD_Connection *conn;
    enum gw_req_state state;
    struct core_buf body;
    int too_large;
    char route[32];
    char rid[24];
    struct timespec start;
    /* webhook ingest */
    const struct adp_adapter *adapter;
    struct adp_batch batch;
    int have_batch;
    struct gw_ingest_job job;
    int status; /* answer code decided so far, 0 none */
};

struct gw_server {
    const struct core_config *cfg;
    struct core_db *db;
    struct gw_ingest *ingest;
    struct MHD_Daemon *daemon;
    atomic_int inflight;
    atomic_ulong next_rid;
    unsigned long rid_base;
    struct core_metric *m_requests;
    struct core_metric *m_duration;
    struct core_metric *m_webhooks;
    struct core_metric *m_events;
    struct core_metric *m_ack;
    struct core_metric *m_refused;
    struct core_metric *m_conns;
    struct core_metric *m_pool;
    struct core_metric *m_pool_waits;
    struct core_metric *m_build;
};

static double
elapsed_s(const struct timespec *t0)
{
    struct timespec t1;

    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) +
           (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

static enum MHD_Result
respond(struct gw_req *r, unsigned status, const char *ctype, const char *body,
        size_t len)
{
    struct MHD_Response *resp;
    enum MHD_Result ret;

    resp = MHD_create_response_from_buffer(len, (void *)(uintptr_t)body,
                                           MHD_RESPMEM_MUST_COPY);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
    MHD_add_response_header(resp, "X-Request-Id", r->rid);
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, "5");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, POST");
    ret = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->status = (int)status;
    r->state = REQ_DONE;
    return ret;
}

static enum MHD_Result
respond_json_error(struct gw_req *r, unsigned status, const char *code,
                   const char *message)
{
    char body[512];
    int n = snprintf(body, sizeof(body),
                     "{\"error\":{\"code\":\"%s\",\"message\":\"%s\","
                     "\"request_id\":\"%s\"}}\n",
                     code, message, r->rid);

    return respond(r, status, "application/json", body, n < 0 ? 0 : (size_t)n);
}

/* ---- health, readiness, metrics ---------------------------------------- */

static enum MHD_Result
handle_healthz(struct gw_req *r, const char *method)
{
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond_json_error(r, 405, "method_not_allowed", "use GET");
    return respond(r, 200, "text/plain; charset=utf-8", "ok\n", 3);
}

static enum MHD_Result
handle_readyz(struct gw_req *r, const char *method)
{
    struct core_dbconn *c;
    enum core_status st;
    bool current = false;

    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0)
        return respond_json_error(r, 405, "method_not_allowed", "use GET");
    c = core_db_acquire(r->srv->db, GW_READY_ACQUIRE_MS, &st);
    if (!c)
        return respond(r, 503, "text/plain; charset=utf-8",
                       "database unavailable\n", 21);
    st = gw_migrate_current(c, &current);
    core_db_release(r->srv->db, c);
    if (st != CORE_OK)
        return respond(r, 503, "text/plain; charset=utf-8",
                       "database unavailable\n", 21);
    if (!current)
        return respond(r, 503, "text/plain; charset=utf-8",
                       "migrations pending\n", 19);
    return respond(r, 200, "text/plain; charset=utf-8", "ready\n", 6);
}

static enum MHD_Result
handle_metrics(struct gw_req *r, const char *method)
{
    struct core_buf out;
    int in_use, idle;
    long waits;
    enum MHD_Result ret;

    if (strcmp(method, "GET") != 0)
        return respond_json_error(r, 405, "method_not_allowed", "use GET");
    core_db_stats(r->srv->db, &in_use, &idle, &waits);
    core_metric_set(r->srv->m_pool, "state=\"in_use\"", in_use);
    core_metric_set(r->srv->m_pool, "state=\"idle\"", idle);
    core_metric_set(r->srv->m_pool_waits, NULL, (double)waits);
    core_buf_init(&out, 16u << 20);
    if (core_metrics_render(&out) != CORE_OK) {
        core_buf_done(&out);
        return respond_json_error(r, 500, "internal", "metrics too large");
    }
    ret = respond(r, 200, "text/plain; version=0.0.4; charset=utf-8",
                  out.data ? out.data : "", out.len);
    core_buf_done(&out);
    return ret;
}

/* ---- webhooks ---------------------------------------------------------- */

static const char *
req_header(void *ctx, const char *name)
{
    return MHD_lookup_connection_value(ctx, MHD_HEADER_KIND, name);
}

static const char *
req_query(void *ctx, const char *name)
{
    return MHD_lookup_connection_value(ctx, MHD_GET_ARGUMENT_KIND, name);
}

static void
count_webhook(struct gw_req *r, const char *result)
{
    char labels[128];

    snprintf(labels, sizeof(labels), "platform=\"%s\",result=\"%s\"",
             r->adapter ? r->adapter->name : "unknown", result);
    core_metric_add(r->srv->m_webhooks, labels, 1);
}

/* Runs on a committer thread once the batch holding this job committed. */
static void
ingest_done(struct gw_ingest_job *job)
{
    struct gw_req *r = job->arg;

    MHD_resume_connection(r->conn);
}

static void
count_events(struct gw_req *r)
{
    char labels[128];
    size_t i;

    for (i = 0; i < r->batch.n; i++) {
        snprintf(labels, sizeof(labels), "platform=\"%s\",kind=\"%s\"",
                 r->adapter->name, adp_event_kind_str(r->batch.events[i].kind));
        core_metric_add(r->srv->m_events, labels, 1);
    }
}

static enum MHD_Result
webhook_post(struct gw_req *r)
{
    struct adp_request areq = { "POST",      r->body.data ? r->body.data : "",
                                r->body.len, req_header,
                                req_query,   r->conn };
    enum core_status st;

    if (r->adapter->authenticate(r->srv->cfg, &areq) != CORE_OK) {
        count_webhook(r, "bad_signature");
        log_warn("webhook signature rejected", "platform=%s bytes=%zu",
                 r->adapter->name, r->body.len);
        return respond_json_error(r, 401, "bad_signature",
                                  "signature missing or invalid");
    }
    adp_batch_init(&r->batch);
    r->have_batch = 1;
    st = r->adapter->parse(areq.body, areq.body_len, &r->batch);
    if (st == CORE_ERR_NOMEM)
        return respond_json_error(r, 500, "internal", "out of memory");
    if (st != CORE_OK) {
        count_webhook(r, "malformed");
        log_warn("webhook malformed", "platform=%s bytes=%zu", r->adapter->name,
                 r->body.len);
        return respond_json_error(r, 400, "malformed",
                                  "body is not a valid webhook payload");
    }
    count_events(r);
    if (r->batch.n == 0) {
        count_webhook(r, "ok");
        return respond(r, 200, "text/plain; charset=utf-8", "", 0);
    }
    r->job.batch = &r->batch;
    r->job.platform = r->adapter->name;
    r->job.request_id = r->rid;
    r->job.done = ingest_done;
    r->job.arg = r;
    r->state = REQ_WAITING;
    MHD_suspend_connection(r->conn);
    gw_ingest_submit(r->srv->ingest, &r->job);
    return MHD_YES;
}

/* Second visit after the committer resumed the connection. */
static enum MHD_Result
webhook_finish(struct gw_req *r)
{
    double secs = elapsed_s(&r->start);

    /* Platforms retry after a few seconds without an answer: a late one
     * is worth a line (with "slow ingest batch" from the committer, or
     * without it when the wait was elsewhere). */
    if (secs > GW_LATE_ANSWER_S)
        log_warn("webhook answered late", "platform=%s seconds=%.3f status=%s",
                 r->adapter->name, secs, core_status_str(r->job.status));
    if (r->job.status == CORE_OK) {
        count_webhook(r, r->job.stored == 0 ? "duplicate" : "ok");
        core_metric_observe(r->srv->m_ack, NULL, secs);
        log_debug("webhook stored", "platform=%s events=%zu new=%d queued=%d",
                  r->adapter->name, r->batch.n, r->job.stored, r->job.queued);
        return respond(r, 200, "text/plain; charset=utf-8", "", 0);
    }
    if (r->job.status == CORE_ERR_UNAVAILABLE) {
        count_webhook(r, "unavailable");
        return respond_json_error(r, 503, "unavailable",
                                  "database unavailable, retry later");
    }
    count_webhook(r, "error");
    return respond_json_error(r, 500, "internal", "could not store webhook");
}

static enum MHD_Result
handle_webhook(struct gw_req *r, const char *method, const char *name)
{
    const struct adp_adapter *a = adp_find(name);
    struct adp_request areq = {
        method, NULL, 0, req_header, req_query, r->conn
    };
    char challenge[256];
    int code;

    if (!a || !a->enabled(r->srv->cfg))
        return respond_json_error(r, 404, "not_found",
                                  "platform not configured");
    if (!r->srv->ingest)
        return respond_json_error(r, 404, "not_found",
                                  "this process runs --workers-only");
    r->adapter = a;
    if (strcmp(method, "GET") == 0) {
        if (!a->handshake)
            return respond_json_error(r, 405, "method_not_allowed", "use POST");
        code = a->handshake(r->srv->cfg, &areq, challenge, sizeof(challenge));
        if (code == 200)
            return respond(r, 200, "text/plain; charset=utf-8", challenge,
                           strlen(challenge));
        return respond_json_error(r, (unsigned)code, "forbidden",
                                  "verification failed");
    }
    if (strcmp(method, "POST") != 0)
        return respond_json_error(r, 405, "method_not_allowed",
                                  "use GET or POST");
    if (r->too_large) {
        count_webhook(r, "too_large");
        return respond_json_error(r, 413, "too_large", "body too large");
    }
    return webhook_post(r);
}

/* ---- routing ----------------------------------------------------------- */

static enum MHD_Result
route(struct gw_req *r, const char *url, const char *method)
{
    if (strcmp(url, "/healthz") == 0)
        return handle_healthz(r, method);
    if (strcmp(url, "/readyz") == 0)
        return handle_readyz(r, method);
    if (strcmp(url, "/metrics") == 0)
        return handle_metrics(r, method);
    if (strncmp(url, "/webhooks/", 10) == 0 && strchr(url + 10, '/') == NULL)
        return handle_webhook(r, method, url + 10);
    if (r->too_large)
        return respond_json_error(r, 413, "too_large", "body too large");
    return respond_json_error(r, 404, "not_found", "no such endpoint");
}

static void
route_label(const char *url, char *out, size_t n)
{
    if (strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
        strcmp(url, "/metrics") == 0 || strcmp(url, "/dashboard") == 0)
        snprintf(out, n, "%s", url);
    else if (strncmp(url, "/webhooks/", 10) == 0)
        snprintf(out, n, "/webhooks");
    else if (strncmp(url, "/api/", 5) == 0)
        snprintf(out, n, "/api");
    else
        snprintf(out, n, "other");
}

static struct gw_req *
req_new(struct gw_server *s, struct MHD_Connection *conn, const char *url)
{
    struct gw_req *r = calloc(1, sizeof(*r));
    unsigned long n;

    if (!r)
        return NULL;
    r->magic = GW_REQ_MAGIC;
    r->srv = s;
    r->conn = conn;
    core_buf_init(&r->body, s->cfg->body_max_bytes);
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    n = atomic_fetch_add(&s->next_rid, 1);
    snprintf(r->rid, sizeof(r->rid), "%06lx-%lx", s->rid_base & 0xffffff, n);
    route_label(url, r->route, sizeof(r->route));
    atomic_fetch_add(&s->inflight, 1);
    return r;
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *conn, const char *url,
           const char *method, const char *version, const char *upload_data,
           size_t *upload_data_size, void **con_cls)
{
    struct gw_server *s = cls;
    struct gw_req *r = *con_cls;
    const char *cl;
    enum MHD_Result ret;

    (void)version;
    if (!r) {
        r = req_new(s, conn, url);
        if (!r)
            return MHD_NO;
        *con_cls = r;
        cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                         MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->cfg->body_max_bytes) {
            r->too_large = 1;
            if (strncmp(url, "/webhooks/", 10) == 0) {
                const struct adp_adapter *a = adp_find(url + 10);

                r->adapter = a;
                count_webhook(r, "too_large");
            }
            core_metric_add(s->m_refused, "reason=\"body_too_large\"", 1);
            return respond_json_error(r, 413, "too_large", "body too large");
        }
        return MHD_YES;
    }
    if (r->magic != GW_REQ_MAGIC)
        return MHD_NO;
    if (*upload_data_size > 0) {
        if (!r->too_large &&
            core_buf_add(&r->body, upload_data, *upload_data_size) != CORE_OK) {
            r->too_large = 1;
            core_metric_add(s->m_refused, "reason=\"body_too_large\"", 1);
            core_buf_done(&r->body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->state == REQ_WAITING) {
        core_log_set_request_id(r->rid);
        ret = webhook_finish(r);
        core_log_set_request_id(NULL);
        return ret;
    }
    if (r->state == REQ_DONE)
        return MHD_YES;
    core_log_set_request_id(r->rid);
    ret = route(r, url, method);
    core_log_set_request_id(NULL);
    return ret;
}

static void
on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
             enum MHD_RequestTerminationCode toe)
{
    struct gw_server *s = cls;
    struct gw_req *r = *con_cls;
    char labels[96];

    (void)conn;
    if (!r || r->magic != GW_REQ_MAGIC)
        return;
    if (toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED)
        core_metric_add(s->m_refused, "reason=\"idle_timeout\"", 1);
    if (toe != MHD_REQUEST_TERMINATED_COMPLETED_OK && r->status == 0)
        r->status = 499;
    snprintf(labels, sizeof(labels), "route=\"%s\",code=\"%d\"", r->route,
             r->status);
    core_metric_add(s->m_requests, labels, 1);
    snprintf(labels, sizeof(labels), "route=\"%s\"", r->route);
    core_metric_observe(s->m_duration, labels, elapsed_s(&r->start));
    if (r->have_batch)
        adp_batch_free(&r->batch);
    core_buf_done(&r->body);
    r->magic = 0;
    free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&s->inflight, 1);
}

/* Open connections, for the connection limit's headroom. */
static void
on_connection(void *cls, struct MHD_Connection *conn, void **socket_ctx,
              enum MHD_ConnectionNotificationCode code)
{
    struct gw_server *s = cls;

    (void)conn;
    (void)socket_ctx;
    core_metric_add(s->m_conns, NULL,
                    code == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
}

/*
 * libmicrohttpd answers some limits itself (431 for headers past the
 * per-connection memory, refusing connections past the limit) and only
 * says so in its log: count those, and log them our way.
 */
static void
on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct gw_server *s = cls;
    char line[512];
    size_t n;

    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    for (n = 0; line[n]; n++)
        if (line[n] == '"')
            line[n] = '\'';
    if (strstr(line, "431"))
        core_metric_add(s->m_refused, "reason=\"header_too_large\"", 1);
    else if (strstr(line, "onnection limit"))
        core_metric_add(s->m_refused, "reason=\"connection_limit\"", 1);
    log_warn("http", "detail=\"%s\"", line);
}

static void
register_metrics(struct gw_server *s)
{
    char labels[128];

    s->m_requests =
        core_metric_register(CORE_METRIC_COUNTER, "parley_http_requests_total",
                             "HTTP requests by route and status", NULL, 0);
    s->m_duration = core_metric_register(
        CORE_METRIC_HISTOGRAM, "parley_http_request_duration_seconds",
        "HTTP request duration by route", NULL, 0);
    s->m_webhooks = core_metric_register(
        CORE_METRIC_COUNTER, "parley_webhooks_total",
        "Webhook requests by platform and result", NULL, 0);
    s->m_events = core_metric_register(
        CORE_METRIC_COUNTER, "parley_webhook_events_total",
        "Normalized events parsed from webhooks by platform and kind", NULL, 0);
    s->m_ack = core_metric_register(
        CORE_METRIC_HISTOGRAM, "parley_webhook_ack_seconds",
        "Webhook receive to durable acknowledgement", NULL, 0);
    s->m_refused =
        core_metric_register(CORE_METRIC_COUNTER, "parley_http_refused_total",
                             "Requests refused by a limit, by reason", NULL, 0);
    s->m_pool =
        core_metric_register(CORE_METRIC_GAUGE, "parley_db_pool_connections",
                             "Database pool connections by state", NULL, 0);
    s->m_pool_waits = core_metric_register(
        CORE_METRIC_COUNTER, "parley_db_pool_waits_total",
        "Times a thread had to wait for a pooled connection", NULL, 0);
    s->m_build = core_metric_register(CORE_METRIC_GAUGE, "parley_build_info",
                                      "Build information", NULL, 0);
    snprintf(labels, sizeof(labels), "version=\"%s\"", PARLEY_VERSION);
    core_metric_set(s->m_build, labels, 1);
    core_metric_add(s->m_refused, "reason=\"body_too_large\"", 0);
    core_metric_add(s->m_refused, "reason=\"header_too_large\"", 0);
    core_metric_add(s->m_refused, "reason=\"connection_limit\"", 0);
    core_metric_add(s->m_refused, "reason=\"idle_timeout\"", 0);
    s->m_conns =
        core_metric_register(CORE_METRIC_GAUGE, "parley_http_connections",
                             "Open HTTP connections", NULL, 0);
    core_metric_add(s->m_conns, NULL, 0);
    core_metric_add(s->m_pool_waits, NULL, 0);
}

struct gw_server *
gw_server_new(const struct core_config *cfg, struct core_db *db,
              struct gw_ingest *ingest, char *err, size_t errlen)
{
    struct gw_server *s = calloc(1, sizeof(*s));
    struct sockaddr_in addr;
    struct timespec ts;

    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->cfg = cfg;
    s->db = db;
    s->ingest = ingest;
    clock_gettime(CLOCK_REALTIME, &ts);
    s->rid_base = (unsigned long)ts.tv_nsec ^ (unsigned long)ts.tv_sec;
    register_metrics(s);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons(cfg->listen_port);
    if (inet_pton(AF_INET,
                  strcmp(cfg->listen_host, "localhost") == 0 ? "127.0.0.1"
                                                             : cfg->listen_host,
                  &addr.sin_addr) != 1) {
        snprintf(err, errlen, "PARLEY_LISTEN: not an IPv4 address: %s",
                 cfg->listen_host);
        free(s);
        return NULL;
    }
    /* poll(), not epoll: with epoll and a thread pool, libmicrohttpd 0.9.75
     * (Debian 12's) now and then left one worker thread's resumed
     * connections unanswered until some other event woke it (soak at 256
     * connections, 40 s runs: 2 of 19 had ~130-290 webhooks answered after
     * 10 s, no commit slower than 1 s; with poll 0 of 7, and 9,458 against
     * ~8,000 webhooks/s). poll costs ~1-3 us more per request at 64 kept-
     * alive connections (/healthz). Revisit with libmicrohttpd 1.x. */
    /* clang-format off */
    s->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | MHD_USE_ITC |
            MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        cfg->listen_port, NULL, NULL, on_request, s,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, s,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)cfg->http_threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int)GW_MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)GW_IDLE_TIMEOUT_S,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)GW_HEADER_MEMORY,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, 1U,
        MHD_OPTION_END);
    /* clang-format on */
    if (!s->daemon) {
        snprintf(err, errlen, "could not listen on %s:%u", cfg->listen_host,
                 cfg->listen_port);
        free(s);
        return NULL;
    }
    return s;
}

unsigned short
gw_server_port(const struct gw_server *s)
{
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);

    return info ? info->port : 0;
}

void
gw_server_shutdown(struct gw_server *s, int deadline_ms)
{
    struct timespec t0, nap = { 0, 10 * 1000000L };
    int left;

    if (!s || !s->daemon)
        return;
    MHD_quiesce_daemon(s->daemon);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while ((left = atomic_load(&s->inflight)) > 0 &&
           elapsed_s(&t0) * 1000.0 < deadline_ms)
        nanosleep(&nap, NULL);
    if (left > 0)
        log_warn("shutdown deadline passed", "inflight=%d", left);
    MHD_stop_daemon(s->daemon);
    s->daemon = NULL;
}

void
gw_server_free(struct gw_server *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    free(s);
}
