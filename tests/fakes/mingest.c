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
 * (each mode creates its tables if absent: create_schema) in one
 * synchronous commit, then answer 200 (503 if it failed). No
 * parsing beyond the key, no normalised rows, no queue, no wake-ups:
 * everything Parley does on top of this is left out.
 *
 * With --normalise 1 it parses the webhook with cJSON, as Parley's
 * adapter does, and stores the message's fields in typed columns instead
 * of the body:
 *   inbox (key, platform, channel, user_id, kind, text, platform_ts, ...)
 * the least normalised ingest (row "a''n").
 *
 * With --normalise 2 the same statement also makes the message's
 * conversation ready, DESIGN.md's unit of the queue (claimed whole, so
 * that one conversation is never answered by two workers at once):
 *   conv (platform, channel, user_id PRIMARY KEY, pseudonym, pending_since)
 * inserted with the user's pseudonym (HMAC-SHA256, as Parley's) when new,
 * else locked and marked pending if it was idle; a pending index for the
 * claims. The least ingest of a per-conversation queue (row "a''q").
 *
 * With --normalise 3 it stores the same in the form DESIGN.md section 7
 * asks for: identity ids, and an event log partitioned by month written
 * in the same transaction as the state change the events describe (the
 * brief's one event model of every inbound message):
 *   conversations (id identity, platform, channel, user_id, pseudonym,
 *                  pending_since, lease_until; unique on the three)
 *   messages (id identity, key unique, conversation_id REFERENCES
 *             conversations, kind, text, platform_ts, received_at, state)
 *   events (id identity, received_at, ..., conversation_id, message_id,
 *           PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at)
 * One statement per batch: a message already stored stops at the lookup
 * of its key; each new one's conversation is created or made ready by
 * INSERT ... ON CONFLICT DO UPDATE ... RETURNING id, in key order, and
 * the id of one ready already is looked up; the messages and their
 * message_received events follow (one committer only: see DESIGN_TAIL).
 * The least ingest of DESIGN.md's storage (row "a''d").
 *
 * With --llm and --graph it also answers every new message: the least
 * durable reply path (row "a'''"; see "Reply mode" below).
 *
 *   mingest --db URL --secret S [--port 0] [--threads 2] [--committers 1]
 *           [--batch 256] [--normalise 0|1|2|3]
 *           [--llm URL --llm-key K --graph URL --graph-token T
 *            [--inflight 64] [--receipt 0|1] [--queue memory|db]]
 * prints "mingest port=N" once listening; SIGTERM/SIGINT stop it (after
 * answering what was queued) and it prints "mingest replies sent=N
 * failed=N stored=N" in reply mode.
 */
#include <cjson/cJSON.h>
#include <curl/curl.h>
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
#include <unistd.h>

#include "analytics/pseudonym.h"
#include "core/buf.h"

#define MAX_BODY  (64 * 1024)
#define MAX_BATCH 1024
#define KEY_MAX   255

/* --normalise: the columns stored for a message, after the key; the
 * user's pseudonym only with --normalise 2 and 3 (the conversation's
 * row). */
enum { F_PLATFORM, F_CHANNEL, F_USER, F_KIND, F_TEXT, F_TS, F_PSEUDO, NF };

struct req {
    char *body;
    size_t len;
    char key[KEY_MAX + 1];
    char *f[NF]; /* --normalise: the message's fields (f[F_TEXT] may be NULL) */
    char sig[80];
    bool oversize, queued;
    unsigned status; /* set by the committer before resume */
    struct MHD_Connection *conn;
    struct req *next;
};

static struct {
    const char *db, *secret;
    int batch;
    int normalise; /* 0 raw body, 1 typed columns, 2 and the conversation,
                      3 and the event */
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

static char *
jdup(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    if (cJSON_IsString(v))
        return strdup(v->valuestring);
    if (cJSON_IsNumber(v)) {
        char n[32];

        snprintf(n, sizeof(n), "%.0f", v->valuedouble);
        return strdup(n);
    }
    return NULL;
}

/* A WhatsApp webhook's entry[0].changes[0].value (NULL if absent). */
static const cJSON *
wa_value(const cJSON *w)
{
    return cJSON_GetObjectItemCaseSensitive(
        cJSON_GetArrayItem(
            cJSON_GetObjectItemCaseSensitive(
                cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(w, "entry"),
                                   0),
                "changes"),
            0),
        "value");
}

/* --normalise 2 and 3: the user's pseudonym, made by Parley's own
 * ana_pseudonym() (keyed here by the app secret, set in main(): a bench
 * instrument has no key of its own to keep). */
static struct ana_pseudonym_key pseudonym_key;

static char *
pseudonym(const char *platform, const char *user)
{
    char *out = malloc(ANA_PSEUDONYM_LEN + 1);

    if (out)
        ana_pseudonym(&pseudonym_key, platform, user, out);
    return out;
}

/* --normalise: parse the webhook as Parley's adapter does (cJSON) and
 * keep its first message's fields: the key (its id), the channel (the
 * business number's id), the sender, the kind, the text, the time. */
static bool
normalise(struct req *r)
{
    cJSON *w = cJSON_Parse(r->body);
    const cJSON *v = wa_value(w);
    const cJSON *m =
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "messages"), 0);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(m, "id");
    bool ok = cJSON_IsString(id) && id->valuestring[0] &&
              strlen(id->valuestring) <= KEY_MAX;

    if (ok) {
        strcpy(r->key, id->valuestring);
        r->f[F_PLATFORM] = strdup("whatsapp");
        r->f[F_CHANNEL] = jdup(cJSON_GetObjectItemCaseSensitive(v, "metadata"),
                               "phone_number_id");
        r->f[F_USER] = jdup(m, "from");
        r->f[F_KIND] = jdup(m, "type");
        r->f[F_TEXT] =
            jdup(cJSON_GetObjectItemCaseSensitive(m, "text"), "body");
        r->f[F_TS] = jdup(m, "timestamp");
        ok =
            r->f[F_PLATFORM] && r->f[F_CHANNEL] && r->f[F_USER] && r->f[F_KIND];
        if (ok && g.normalise >= 2)
            ok = (r->f[F_PSEUDO] = pseudonym(r->f[F_PLATFORM], r->f[F_USER])) !=
                 NULL;
    }
    cJSON_Delete(w);
    return ok;
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
    if (!(g.normalise ? normalise(r) : find_key(r)))
        return answer(c, 400);
    /* Checked and queued under one lock: once stopping is set no
     * connection is suspended, so the committers, which drain the queue
     * before they exit, resume every one that was. */
    pthread_mutex_lock(&g.mu);
    if (g.stopping) {
        pthread_mutex_unlock(&g.mu);
        return answer(c, 503);
    }
    r->queued = true;
    MHD_suspend_connection(c);
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
        int i;

        for (i = 0; i < NF; i++)
            free(r->f[i]);
        free(r->body);
        free(r);
        *ctx = NULL;
    }
}

/* "<head>($1,...),...<tail>" with n rows of cols values, prepared once per
 * size on each connection. */
static bool
prepare(PGconn *pg, const char *head, int cols, int n, const char *tail,
        bool *have)
{
    char name[16];
    char *sql;
    size_t cap = 128 + strlen(head) + strlen(tail) +
                 (size_t)n * ((size_t)cols * 8 + 4),
           len;
    PGresult *res;
    bool ok;
    int i, k;

    if (have[n])
        return true;
    sql = malloc(cap);
    if (!sql)
        return false;
    len = (size_t)snprintf(sql, cap, "%s", head);
    for (i = 0; i < n; i++) {
        len += (size_t)snprintf(sql + len, cap - len, "%s(", i ? "," : "");
        for (k = 0; k < cols; k++)
            len += (size_t)snprintf(sql + len, cap - len, "%s$%d", k ? "," : "",
                                    cols * i + k + 1);
        len += (size_t)snprintf(sql + len, cap - len, ")");
    }
    snprintf(sql + len, cap - len, "%s", tail);
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

/* Run prepare()'s statement for n rows of values v; NULL when it could not
 * be prepared, else the result for the caller to check and PQclear. */
static PGresult *
run_rows(PGconn *pg, const char *head, int cols, int n, const char *tail,
         bool *have, const char *const *v)
{
    char name[16];

    if (!prepare(pg, head, cols, n, tail, have))
        return NULL;
    snprintf(name, sizeof(name), "i%d", n);
    return PQexecPrepared(pg, name, cols * n, v, NULL, NULL, 0);
}

/* "INSERT INTO <into> VALUES ... ON CONFLICT (key) DO NOTHING<tail>". */
static PGresult *
insert_rows(PGconn *pg, const char *into, int cols, int n, const char *tail,
            bool *have, const char *const *v)
{
    char head[256], end[256];

    snprintf(head, sizeof(head), "INSERT INTO %s VALUES ", into);
    snprintf(end, sizeof(end), " ON CONFLICT (key) DO NOTHING%s", tail);
    return run_rows(pg, head, cols, n, end, have, v);
}

/* --normalise 2: the messages as --normalise 1 stores them, and in the
 * same statement their conversations: created when new, else locked and
 * made ready if idle (ON CONFLICT DO UPDATE locks the row either way), in
 * key order so that two committers cannot deadlock. */
#define QUEUE_HEAD                                                      \
    "WITH v (key, platform, channel, user_id, kind, text, platform_ts," \
    " pseudonym) AS (VALUES "
#define QUEUE_TAIL                                                             \
    "), m AS (INSERT INTO inbox (key, platform, channel, user_id, kind, text," \
    " platform_ts) SELECT key, platform, channel, user_id, kind, text,"        \
    " platform_ts::bigint FROM v ON CONFLICT (key) DO NOTHING RETURNING key)"  \
    " INSERT INTO conv AS c (platform, channel, user_id, pseudonym,"           \
    " pending_since) SELECT DISTINCT ON (v.platform, v.channel, v.user_id)"    \
    " v.platform, v.channel, v.user_id, v.pseudonym, now() FROM v JOIN m"      \
    " USING (key) ORDER BY v.platform, v.channel, v.user_id"                   \
    " ON CONFLICT (platform, channel, user_id) DO UPDATE SET pending_since ="  \
    " now() WHERE c.pending_since IS NULL"

/* --normalise 3, one statement:
 * - n: the new messages (a stored key stops at its index, the first of a
 *   key within the batch wins);
 * - c: their conversations, in key order: created ready, or locked and
 *   made ready if idle (RETURNING gives those two kinds their ids);
 * - k: and the ids of those that were ready already, looked up (a scalar
 *   subquery, so the generic plan probes the index: as a join it hashed
 *   the whole table);
 * - the messages with their conversation's id, then their events.
 * A conversation another committer created ready after this statement's
 * snapshot would be in neither c nor k: hence one committer (main()). */
#define DESIGN_TAIL                                                           \
    "), n AS (SELECT DISTINCT ON (key) * FROM v WHERE (SELECT 1 FROM"         \
    " messages s WHERE s.key = v.key) IS NULL ORDER BY key),"                 \
    " c AS (INSERT INTO conversations AS c (platform, channel, user_id,"      \
    " pseudonym, pending_since) SELECT DISTINCT ON (platform, channel,"       \
    " user_id) platform, channel, user_id, pseudonym, now() FROM n"           \
    " ORDER BY platform, channel, user_id ON CONFLICT (platform, channel,"    \
    " user_id) DO UPDATE SET pending_since = now()"                           \
    " WHERE c.pending_since IS NULL"                                          \
    " RETURNING c.id, c.platform, c.channel, c.user_id),"                     \
    " k AS (SELECT * FROM c UNION ALL SELECT * FROM (SELECT (SELECT x.id"     \
    " FROM conversations x WHERE x.platform = y.platform"                     \
    " AND x.channel = y.channel AND x.user_id = y.user_id) AS id,"            \
    " y.platform, y.channel, y.user_id FROM (SELECT DISTINCT platform,"       \
    " channel, user_id FROM n) y) z WHERE z.id IS NOT NULL),"                 \
    " m AS (INSERT INTO messages (key, conversation_id, kind, text,"          \
    " platform_ts) SELECT n.key, k.id, n.kind, n.text, n.platform_ts::bigint" \
    " FROM n JOIN (SELECT DISTINCT ON (platform, channel, user_id) * FROM k)" \
    " k USING (platform, channel, user_id)"                                   \
    " ON CONFLICT (key) DO NOTHING RETURNING id, key, conversation_id)"       \
    " INSERT INTO events (occurred_at, type, platform, channel,"              \
    " user_pseudonym, conversation_id, message_id, platform_event_id, data)"  \
    " SELECT to_timestamp(n.platform_ts::bigint), 'message_received',"        \
    " n.platform, n.channel, n.pseudonym, m.conversation_id, m.id, m.key,"    \
    " jsonb_build_object('msg_type', n.kind) FROM m JOIN n USING (key)"

#include "mingest_reply.h"

static void *
committer(void *arg)
{
    struct req *batch[MAX_BATCH];
    bool *have = calloc(MAX_BATCH + 1, sizeof(bool));
    const int cols = g.normalise >= 2 ? 1 + NF : g.normalise ? F_PSEUDO + 1 : 2;
    const char **v = calloc((size_t)cols * MAX_BATCH, sizeof(*v));
    PGconn *pg = PQconnectdb(g.db);
    bool mem = R.multi && !R.dbq; /* jobs pass in memory */
    int n, i, k;

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
            v[cols * i] = batch[i]->key;
            if (!g.normalise)
                v[cols * i + 1] = batch[i]->body;
            for (k = 0; k + 1 < cols && g.normalise; k++)
                v[cols * i + 1 + k] = batch[i]->f[k];
        }
        status = 503;
        if (g.normalise >= 2)
            res =
                run_rows(pg, QUEUE_HEAD, cols, n,
                         g.normalise == 3 ? DESIGN_TAIL : QUEUE_TAIL, have, v);
        else
            res = insert_rows(pg,
                              g.normalise ? "inbox (key, platform, channel, "
                                            "user_id, kind, text, platform_ts)"
                                          : "inbox (key, body)",
                              cols, n, mem ? " RETURNING key" : "", have, v);
        if (res) {
            if (PQresultStatus(res) ==
                (mem ? PGRES_TUPLES_OK : PGRES_COMMAND_OK)) {
                status = 200;
                if (mem) {
                    queue_replies(batch, n, res);
                } else if (R.dbq) { /* wake the claimer */
                    pthread_mutex_lock(&R.mu);
                    R.claim_wake = true;
                    pthread_cond_signal(&R.claim_cv);
                    pthread_mutex_unlock(&R.mu);
                }
            } else {
                fprintf(stderr, "mingest: insert: %s", PQerrorMessage(pg));
            }
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

static bool
reply_setup(bool receipt)
{
    char h[512];

    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return false;
    R.db = g.db;
    R.receipt = receipt;
    R.multi = curl_multi_init();
    snprintf(h, sizeof(h), "Authorization: Bearer %s", R.llm_key);
    R.llm_hdrs = curl_slist_append(
        curl_slist_append(NULL, "Content-Type: application/json"), h);
    snprintf(h, sizeof(h), "Authorization: Bearer %s", R.graph_token);
    R.graph_hdrs = curl_slist_append(
        curl_slist_append(NULL, "Content-Type: application/json"), h);
    return R.multi && R.llm_hdrs && R.graph_hdrs;
}

static void
reply_cleanup(void)
{
    curl_multi_cleanup(R.multi);
    curl_slist_free_all(R.llm_hdrs);
    curl_slist_free_all(R.graph_hdrs);
    curl_global_cleanup();
}

/* The tables this mode writes, created if absent: the tool owns its
 * schema, so `make bench` and the tests do not each repeat it. */
static bool
create_schema(void)
{
    static const char raw[] =
        "CREATE TABLE IF NOT EXISTS inbox (key text PRIMARY KEY,"
        " body text NOT NULL)";
    static const char normalised[] =
        "CREATE TABLE IF NOT EXISTS inbox (key text PRIMARY KEY,"
        " platform text NOT NULL, channel text NOT NULL,"
        " user_id text NOT NULL, kind text NOT NULL, text text,"
        " platform_ts bigint, received_at timestamptz NOT NULL DEFAULT now(),"
        " state smallint NOT NULL DEFAULT 0);"
        "CREATE INDEX IF NOT EXISTS inbox_todo ON inbox (received_at)"
        " WHERE state < 2;"
        "CREATE INDEX IF NOT EXISTS inbox_conversation ON inbox"
        " (platform, channel, user_id, received_at)";
    static const char conversations[] =
        "CREATE TABLE IF NOT EXISTS conv (platform text NOT NULL,"
        " channel text NOT NULL, user_id text NOT NULL,"
        " pseudonym text NOT NULL, pending_since timestamptz,"
        " lease_until timestamptz, PRIMARY KEY (platform, channel, user_id));"
        "CREATE INDEX IF NOT EXISTS conv_ready ON conv (pending_since)"
        " WHERE pending_since IS NOT NULL";
    static const char replies[] =
        "CREATE TABLE IF NOT EXISTS inbox (key text PRIMARY KEY,"
        " body text NOT NULL, received_at timestamptz NOT NULL DEFAULT now(),"
        " state smallint NOT NULL DEFAULT 0, lease_until timestamptz);"
        "CREATE TABLE IF NOT EXISTS outbox (key text PRIMARY KEY, wamid text,"
        " reply text NOT NULL, llm_us bigint)";
    static const char queue[] = "CREATE INDEX IF NOT EXISTS inbox_todo ON inbox"
                                " (received_at) WHERE state < 2";
    /* --normalise 3: Parley's tables (migrations/0001_core.sql,
     * 0002_events.sql) with the columns stored here; the event log's
     * default partition and this month's. */
    static const char design[] =
        "CREATE TABLE IF NOT EXISTS conversations (id bigint GENERATED ALWAYS"
        " AS IDENTITY PRIMARY KEY, platform text NOT NULL,"
        " channel text NOT NULL, user_id text NOT NULL,"
        " pseudonym text NOT NULL, pending_since timestamptz,"
        " lease_until timestamptz, UNIQUE (platform, channel, user_id));"
        "CREATE INDEX IF NOT EXISTS conversations_ready ON conversations"
        " (pending_since) WHERE pending_since IS NOT NULL;"
        "CREATE TABLE IF NOT EXISTS messages (id bigint GENERATED ALWAYS AS"
        " IDENTITY PRIMARY KEY, key text NOT NULL UNIQUE,"
        " conversation_id bigint NOT NULL REFERENCES conversations (id),"
        " kind text NOT NULL, text text, platform_ts bigint,"
        " received_at timestamptz NOT NULL DEFAULT now(),"
        " state smallint NOT NULL DEFAULT 0);"
        "CREATE INDEX IF NOT EXISTS messages_todo ON messages"
        " (conversation_id, id) WHERE state < 2;"
        "CREATE INDEX IF NOT EXISTS messages_conversation ON messages"
        " (conversation_id, id);"
        "CREATE TABLE IF NOT EXISTS events (id bigint GENERATED ALWAYS AS"
        " IDENTITY, received_at timestamptz NOT NULL DEFAULT now(),"
        " occurred_at timestamptz, type text NOT NULL, platform text NOT NULL,"
        " channel text, user_pseudonym text, conversation_id bigint,"
        " message_id bigint, platform_event_id text, data jsonb,"
        " PRIMARY KEY (id, received_at)) PARTITION BY RANGE (received_at);"
        "CREATE TABLE IF NOT EXISTS events_default PARTITION OF events DEFAULT;"
        "DO $$ DECLARE lo date := date_trunc('month', now())::date; BEGIN"
        " IF to_regclass('events_now') IS NULL THEN"
        " EXECUTE format('CREATE TABLE events_now PARTITION OF events"
        " FOR VALUES FROM (%L) TO (%L)', lo, lo + interval '1 month');"
        " END IF; END $$";
    PGconn *pg = PQconnectdb(g.db);
    const char *sql[3] = { g.normalise == 3 ? design
                           : g.normalise    ? normalised
                           : R.llm_url      ? replies
                                            : raw,
                           R.dbq ? queue : NULL,
                           g.normalise == 2 ? conversations : NULL };
    bool ok = PQstatus(pg) == CONNECTION_OK;
    int i;

    for (i = 0; ok && i < 3; i++) {
        PGresult *res;

        if (!sql[i])
            continue;
        res = PQexec(pg, sql[i]);

        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        PQclear(res);
    }
    if (!ok)
        fprintf(stderr, "mingest: schema: %s", PQerrorMessage(pg));
    PQfinish(pg);
    return ok;
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
    long port = 0, threads = 2, committers = 1, batch = 256, receipt = 0;
    long normal = 0;
    int i, sig;
    struct MHD_Daemon *d;
    const union MHD_DaemonInfo *info;
    pthread_t th[16], rth[4];
    sigset_t set;

    g.tail = &g.head;
    jobq_init(&R.todo);
    jobq_init(&R.done);
    jobq_init(&R.intents);
    jobq_init(&R.ready);
    R.inflight = 64;
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
        else if (strcmp(argv[i], "--llm") == 0)
            R.llm_url = argv[i + 1];
        else if (strcmp(argv[i], "--llm-key") == 0)
            R.llm_key = argv[i + 1];
        else if (strcmp(argv[i], "--graph") == 0)
            R.graph_url = argv[i + 1];
        else if (strcmp(argv[i], "--graph-token") == 0)
            R.graph_token = argv[i + 1];
        else if (strcmp(argv[i], "--inflight") == 0)
            R.inflight = number(argv[i + 1], 1, 4096);
        else if (strcmp(argv[i], "--receipt") == 0)
            receipt = number(argv[i + 1], 0, 1);
        else if (strcmp(argv[i], "--normalise") == 0)
            normal = number(argv[i + 1], 0, 3);
        else if (strcmp(argv[i], "--queue") == 0 &&
                 (strcmp(argv[i + 1], "db") == 0 ||
                  strcmp(argv[i + 1], "memory") == 0))
            R.dbq = strcmp(argv[i + 1], "db") == 0;
        else
            break;
    }
    if (i != argc || !g.db || !g.secret || port < 0 || threads < 0 ||
        committers < 0 || batch < 0 || R.inflight < 0 || receipt < 0 ||
        normal < 0 || (normal && R.llm_url) ||
        (normal == 3 && committers > 1) || !R.llm_url != !R.graph_url ||
        (R.llm_url && (!R.llm_key || !R.graph_token))) {
        fprintf(stderr,
                "usage: mingest --db URL --secret S [--port N]"
                " [--threads 1-64] [--committers 1-16]"
                " [--batch 1-%d] [--normalise 0|1|2|3]"
                " [--llm URL --llm-key K --graph URL"
                " --graph-token T [--inflight 1-4096] [--receipt 0|1]"
                " [--queue memory|db]]\n",
                MAX_BATCH);
        return 2;
    }
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    g.batch = (int)batch;
    g.normalise = (int)normal;
    pseudonym_key.len = strlen(g.secret);
    if (pseudonym_key.len > sizeof(pseudonym_key.key))
        pseudonym_key.len = sizeof(pseudonym_key.key);
    memcpy(pseudonym_key.key, g.secret, pseudonym_key.len);
    if (!create_schema())
        return 1;
    if (R.llm_url && !reply_setup(receipt == 1)) {
        fprintf(stderr, "mingest: cannot set up the reply path\n");
        return 1;
    }
    empty_resp =
        MHD_create_response_from_buffer(0, (void *)"", MHD_RESPMEM_PERSISTENT);
    for (i = 0; i < committers; i++)
        pthread_create(&th[i], NULL, committer, NULL);
    R.claimer_over = !R.dbq;
    if (R.multi) {
        pthread_create(&rth[0], NULL, replier, NULL);
        pthread_create(&rth[1], NULL, finisher, NULL);
    }
    if (R.multi && R.dbq) {
        pthread_create(&rth[2], NULL, claimer, NULL);
        pthread_create(&rth[3], NULL, intender, NULL);
    }
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
    /* The committers answer what is queued (a suspended connection must
     * be resumed before the daemon stops); later requests get 503. No
     * MHD_quiesce_daemon: with epoll and a thread pool, libmicrohttpd
     * 0.9.75 could abort in it ("Failed to remove listen FD from epoll
     * set"; the gateway's poll() avoids it in gateway/http.c). */
    pthread_mutex_lock(&g.mu);
    g.stopping = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    for (i = 0; i < committers; i++)
        pthread_join(th[i], NULL);
    MHD_stop_daemon(d);
    MHD_destroy_response(empty_resp);
    if (R.multi) {
        /* Answer and store what was queued, then stop. */
        pthread_mutex_lock(&R.mu);
        R.stopping = true;
        pthread_cond_broadcast(&R.claim_cv);
        pthread_mutex_unlock(&R.mu);
        curl_multi_wakeup(R.multi);
        if (R.dbq)
            pthread_join(rth[2], NULL);
        pthread_join(rth[0], NULL);
        if (R.dbq)
            pthread_join(rth[3], NULL);
        pthread_join(rth[1], NULL);
        printf("mingest replies sent=%lu failed=%lu stored=%lu\n", R.sent,
               R.failed, R.stored);
        reply_cleanup();
    }
    return 0;
}
