/*
 * mingest: the least a signed, deduplicated, durable webhook receiver can
 * do, built from Parley's own parts (libmicrohttpd, OpenSSL, libpq). A
 * bench instrument, not part of Parley: `make bench` runs it under the
 * same load as Parley's ingest to measure what this machine allows any
 * design (row "a''" in docs/PERFORMANCE.md).
 *
 * Per POST: read the body (<= 64 kB, else 413), check X-Hub-Signature-256
 * (HMAC-SHA256, constant-time; 401), take the WhatsApp message's id as
 * the platform's key (400 without one), suspend the connection. Committer
 * threads take every request waiting (up to --batch) and store them with
 * one multi-row INSERT ... ON CONFLICT DO NOTHING (the dedupe) into
 *   inbox (key text PRIMARY KEY, body text NOT NULL)
 * in one synchronous commit, then answer 200 (503 if it failed). No
 * parsing beyond the key, no normalised rows, no queue, no wake-ups:
 * everything Parley does on top of this is left out.
 *
 *   mingest --db URL --secret S [--port 0] [--threads 2] [--committers 1]
 *           [--batch 256]
 * prints "mingest port=N" once listening; SIGTERM/SIGINT stop it.
 */
#include <libpq-fe.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BODY  (64 * 1024)
#define MAX_BATCH 1024
#define KEY_MAX   255

struct req {
    char *body;
    size_t len;
    char key[KEY_MAX + 1];
    char sig[80];
    bool oversize, queued;
    unsigned status; /* set by the committer before resume */
    struct MHD_Connection *conn;
    struct req *next;
};

static struct {
    const char *db, *secret;
    int batch;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct req *head, **tail;
    bool stopping;
} g = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static struct MHD_Response *empty_resp;

static bool
signature_ok(const struct req *r)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned int i;

    if (strncmp(r->sig, "sha256=", 7) != 0 || strlen(r->sig) != 7 + 64)
        return false;
    if (!HMAC(EVP_sha256(), g.secret, (int)strlen(g.secret),
              (const unsigned char *)r->body, r->len, mac, &n))
        return false;
    for (i = 0; i < n; i++)
        snprintf(hex + 2 * i, 3, "%02x", mac[i]);
    return CRYPTO_memcmp(hex, r->sig + 7, 64) == 0;
}

/* The first "id": "..." after "messages": a WhatsApp message's wamid (the
 * entry's "id" before it is the business account's). */
static bool
find_key(struct req *r)
{
    const char *p = r->body ? strstr(r->body, "\"messages\"") : NULL;
    size_t n = 0;

    while (p && (p = strstr(p, "\"id\"")) != NULL) {
        p += 4;
        p += strspn(p, " \t\r\n");
        if (*p != ':')
            continue;
        p += 1 + strspn(p + 1, " \t\r\n");
        if (*p == '"')
            break;
    }
    if (!p)
        return false;
    p++;
    while (p[n] && p[n] != '"' && n < KEY_MAX)
        n++;
    if (n == 0 || p[n] != '"')
        return false;
    memcpy(r->key, p, n);
    r->key[n] = '\0';
    return true;
}

static enum MHD_Result
answer(struct MHD_Connection *c, unsigned status)
{
    return MHD_queue_response(c, status, empty_resp);
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url,
           const char *method, const char *version, const char *data,
           size_t *size, void **ctx)
{
    struct req *r = *ctx;
    const char *h;

    (void)cls;
    (void)url;
    (void)version;
    if (strcmp(method, "POST") != 0)
        return answer(c, 200); /* GET: the ceiling handler */
    if (!r) {
        r = calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        h = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                        "X-Hub-Signature-256");
        snprintf(r->sig, sizeof(r->sig), "%s", h ? h : "");
        r->conn = c;
        *ctx = r;
        return MHD_YES;
    }
    if (*size) {
        if (r->len + *size > MAX_BODY) {
            r->oversize = true;
        } else if (!r->oversize) {
            char *b = realloc(r->body, r->len + *size + 1);

            if (!b)
                return MHD_NO;
            memcpy(b + r->len, data, *size);
            r->len += *size;
            b[r->len] = '\0';
            r->body = b;
        }
        *size = 0;
        return MHD_YES;
    }
    if (r->queued) /* resumed: the committer has decided */
        return answer(c, r->status);
    if (r->oversize)
        return answer(c, 413);
    if (!signature_ok(r))
        return answer(c, 401);
    if (!find_key(r))
        return answer(c, 400);
    r->queued = true;
    MHD_suspend_connection(c);
    pthread_mutex_lock(&g.mu);
    *g.tail = r;
    g.tail = &r->next;
    pthread_cond_signal(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return MHD_YES;
}

static void
on_completed(void *cls, struct MHD_Connection *c, void **ctx,
             enum MHD_RequestTerminationCode code)
{
    struct req *r = *ctx;

    (void)cls;
    (void)c;
    (void)code;
    if (r) {
        free(r->body);
        free(r);
        *ctx = NULL;
    }
}

/* "INSERT ... VALUES ($1,$2),...($2n-1,$2n) ON CONFLICT DO NOTHING",
 * prepared once per size on each connection. */
static bool
prepare(PGconn *pg, int n, bool *have)
{
    char name[16];
    char *sql;
    size_t cap = 96 + (size_t)n * 24, len;
    PGresult *res;
    bool ok;
    int i;

    if (have[n])
        return true;
    sql = malloc(cap);
    if (!sql)
        return false;
    len = (size_t)snprintf(sql, cap, "INSERT INTO inbox (key, body) VALUES ");
    for (i = 0; i < n; i++)
        len += (size_t)snprintf(sql + len, cap - len, "%s($%d,$%d)",
                                i ? "," : "", 2 * i + 1, 2 * i + 2);
    snprintf(sql + len, cap - len, " ON CONFLICT (key) DO NOTHING");
    snprintf(name, sizeof(name), "i%d", n);
    res = PQprepare(pg, name, sql, 0, NULL);
    ok = PQresultStatus(res) == PGRES_COMMAND_OK;
    if (!ok)
        fprintf(stderr, "mingest: prepare: %s", PQerrorMessage(pg));
    PQclear(res);
    free(sql);
    have[n] = ok;
    return ok;
}

static void *
committer(void *arg)
{
    struct req *batch[MAX_BATCH];
    bool *have = calloc(MAX_BATCH + 1, sizeof(bool));
    const char **v = calloc(2 * MAX_BATCH, sizeof(*v));
    PGconn *pg = PQconnectdb(g.db);
    char name[16];
    int n, i;

    (void)arg;
    if (!have || !v || PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "mingest: connect: %s", PQerrorMessage(pg));
        exit(1);
    }
    for (;;) {
        PGresult *res;
        unsigned status;

        pthread_mutex_lock(&g.mu);
        while (!g.head && !g.stopping)
            pthread_cond_wait(&g.cv, &g.mu);
        if (!g.head) {
            pthread_mutex_unlock(&g.mu);
            break;
        }
        for (n = 0; g.head && n < g.batch; n++) {
            batch[n] = g.head;
            g.head = g.head->next;
        }
        if (!g.head)
            g.tail = &g.head;
        pthread_mutex_unlock(&g.mu);

        for (i = 0; i < n; i++) {
            v[2 * i] = batch[i]->key;
            v[2 * i + 1] = batch[i]->body;
        }
        status = 503;
        if (prepare(pg, n, have)) {
            snprintf(name, sizeof(name), "i%d", n);
            res = PQexecPrepared(pg, name, 2 * n, v, NULL, NULL, 0);
            if (PQresultStatus(res) == PGRES_COMMAND_OK)
                status = 200;
            else
                fprintf(stderr, "mingest: insert: %s", PQerrorMessage(pg));
            PQclear(res);
        }
        for (i = 0; i < n; i++) {
            batch[i]->status = status;
            MHD_resume_connection(batch[i]->conn);
        }
    }
    PQfinish(pg);
    free(have);
    free(v);
    return NULL;
}

/* A whole decimal number in [lo, hi], else -1. */
static long
number(const char *s, long lo, long hi)
{
    char *end;
    long v = strtol(s, &end, 10);

    return *s && !*end && v >= lo && v <= hi ? v : -1;
}

int
main(int argc, char **argv)
{
    long port = 0, threads = 2, committers = 1, batch = 256;
    int i, sig;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    pthread_t th[16];
    sigset_t set;

    g.tail = &g.head;
    for (i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--db") == 0)
            g.db = argv[i + 1];
        else if (strcmp(argv[i], "--secret") == 0)
            g.secret = argv[i + 1];
        else if (strcmp(argv[i], "--port") == 0)
            port = number(argv[i + 1], 0, 65535);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = number(argv[i + 1], 1, 64);
        else if (strcmp(argv[i], "--committers") == 0)
            committers = number(argv[i + 1], 1, 16);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = number(argv[i + 1], 1, MAX_BATCH);
        else
            break;
    }
    if (i != argc || !g.db || !g.secret || port < 0 || threads < 0 ||
        committers < 0 || batch < 0) {
        fprintf(stderr,
                "usage: mingest --db URL --secret S [--port N]"
                " [--threads 1-64] [--committers 1-16]"
                " [--batch 1-%d]\n",
                MAX_BATCH);
        return 2;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    g.batch = (int)batch;
    empty_resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    for (i = 0; i < committers; i++)
        pthread_create(&th[i], NULL, committer, NULL);
    d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL |
                             MHD_USE_ITC | MHD_ALLOW_SUSPEND_RESUME,
                         (uint16_t)port, NULL, NULL, on_request, NULL,
                         MHD_OPTION_THREAD_POOL_SIZE, (unsigned)threads,
                         MHD_OPTION_CONNECTION_LIMIT, 4096U,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL,
                         MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "mingest: cannot listen on port %ld\n", port);
        return 1;
    }
    info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("mingest port=%u\n", info ? (unsigned)info->port : (unsigned)port);
    fflush(stdout);
    sigwait(&set, &sig);
    /* No new connections; the committers answer what is queued (a
     * suspended connection must be resumed before the daemon stops). */
    MHD_quiesce_daemon(d);
    pthread_mutex_lock(&g.mu);
    g.stopping = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (i = 0; i < committers; i++)
        pthread_join(th[i], NULL);
    MHD_stop_daemon(d);
    MHD_destroy_response(empty_resp);
    return 0;
}
