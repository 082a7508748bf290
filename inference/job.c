/*
 * Running one claimed conversation: load, think, send, record.
 *
 * Design: three short transactions, none held across a network call.
 *   A. load: check the lease, flag replies of a crashed predecessor as
 *      possible duplicates, read the pending messages and the history;
 *   B. intent (after the LLM answered): the response row in state
 *      'sending' (request, completion, model, tokens, timings) and nothing
 *      else, so a crash during the send is visible afterwards (its inputs,
 *      outbound messages and llm events come with C: migrations/0009).
 *      It commits without waiting for its WAL flush (the reply's second
 *      flush on its way out: ~0.9 ms of its mean and ~3 ms of its p99 at
 *      100 messages/s). A crash of Parley cannot lose it, PostgreSQL has
 *      it; a crash of PostgreSQL before the flush (the next commit that
 *      waits, C or any ingest, or the WAL writer within 0.6 s) can, and
 *      then the messages are answered again: if this process is still
 *      running, its failed finish records that (flag_unrecorded), else
 *      only PostgreSQL's crash says so;
 *   C. finish (after sending): the response's inputs, its outbound
 *      messages with their ids and statuses, early delivery statuses
 *      joined, the llm and send events, ad signals, inbound messages
 *      answered, lease released.
 * B and C are JSON documents, grouped with other workers' into one call of
 * parley_reply_intents() / parley_reply_finishes() (migrations/0009).
 * Every transaction re-checks the lease (owner + lease_count as fencing
 * token); a job that lost its lease rolls back and stops.
 * A is part of the dispatcher's claim statement (INF_SQL_CLAIM), or its
 * own transaction on the worker when the claim could not load the job
 * (load()); the LLM call is run by a worker, B, the sends and C by a
 * delivery thread (inference/job.h).
 */
#include "inference/job.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adapters/adapter.h"
#include "analytics/interest.h"
#include "analytics/similarity.h"
#include "core/log.h"
#include "inference/context.h"

#define JOB_MAX_PENDING   20
#define JOB_MAX_PARTS     32
#define JOB_SEND_ATTEMPTS 5
#define JOB_DB_WAIT_MS    5000
#define WINDOW_MS         (24L * 3600L * 1000L)

/* A job's load, from a CTE v(id, lease_count, expired, user_id, platform,
 * channel, locked) of conversations whose lease the job holds: the repair
 * of responses a crashed predecessor left 'sending' (each marked
 * 'abandoned' and flagged possible_duplicate_send; the outbound rows of
 * such a response exist only if it was written before migration 0009,
 * and become 'unknown'), and per conversation the user, the pending
 * messages and the history as JSON arrays, read in the statement's
 * snapshot; the last column says whether the row is still the version
 * `locked` (xmin) in that snapshot. Read by load_row(). */
#define SQL_LOAD_FROM_V                                                        \
    " s AS (UPDATE responses r SET status = 'abandoned', completed_at = now()" \
    "  WHERE r.conversation_id IN (SELECT id FROM v) AND r.status = 'sending'" \
    "  RETURNING r.id, r.conversation_id),"                                    \
    " o AS (UPDATE messages SET status = 'unknown' WHERE response_id IN"       \
    "  (SELECT id FROM s) AND status = 'sending'),"                            \
    " e AS (INSERT INTO events (type, platform, channel, user_id,"             \
    "  user_pseudonym, conversation_id, response_id, data)"                    \
    "  SELECT 'possible_duplicate_send', v.platform, v.channel, u.id,"         \
    "  u.pseudonym, v.id, s.id, jsonb_build_object('reason',"                  \
    "  'a worker died between sending and recording this reply; it is"         \
    " answered again and may reach the user twice')"                           \
    "  FROM s JOIN v ON v.id = s.conversation_id JOIN users u ON u.id = "      \
    "v.user_id)"                                                               \
    " SELECT v.id, v.lease_count, v.expired, u.platform_user_id,"              \
    " u.opted_out_at IS NOT NULL,"                                             \
    " u.opted_out_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM responses r"    \
    "  WHERE r.conversation_id = v.id AND r.kind = 'opt_out'"                  \
    "  AND r.created_at >= u.opted_out_at),"                                   \
    " v.platform, v.channel,"                                                  \
    " (SELECT json_agg(s.id ORDER BY s.id) FROM s WHERE s.conversation_id = "  \
    "v.id),"                                                                   \
    " (SELECT json_agg(json_build_array(p.id::text, p.platform_message_id,"    \
    "   p.kind, p.text, p.ms) ORDER BY p.k, p.id) FROM ("                      \
    "  SELECT id, platform_message_id, kind, text,"                            \
    "  (extract(epoch FROM received_at) * 1000)::bigint AS ms,"                \
    "  coalesce(platform_ts, received_at) AS k"                                \
    "  FROM messages WHERE conversation_id = v.id"                             \
    "  AND reply_state = 'pending'"                                            \
    "  ORDER BY coalesce(platform_ts, received_at), id LIMIT 20) p),"          \
    " (SELECT json_agg(json_build_array(h.role, h.content, h.id::text)"        \
    "   ORDER BY h.t DESC, h.id DESC) FROM ("                                  \
    "  SELECT 'user' AS role, coalesce(text, '[' || kind || ']') AS content,"  \
    "   received_at AS t, id FROM messages WHERE conversation_id = v.id"       \
    "   AND direction = 'in' AND reply_state = 'answered'"                     \
    "  UNION ALL"                                                              \
    "  SELECT 'assistant', completion, created_at, id FROM responses"          \
    "   WHERE conversation_id = v.id AND status IN ('sent', 'partial')"        \
    "   AND kind = 'llm' AND completion IS NOT NULL"                           \
    "  ORDER BY 3 DESC, 4 DESC LIMIT 60) h),"                                  \
    " (SELECT x.xmin = v.locked FROM conversations x WHERE x.id = v.id)"       \
    " FROM v JOIN users u ON u.id = v.user_id"

/* Claim and load in one statement (one round trip, one transaction; the
 * pool commits it without waiting for the flush, see pool.c): the ready
 * conversations, oldest first, skipping those another transaction holds,
 * and their lease; then SQL_LOAD_FROM_V. The snapshot is taken before the
 * rows are locked: if a conversation's row changed in between (another
 * process claimed it, or a slow owner whose lease had run out finished
 * it, answering messages the snapshot still shows pending), the last
 * column is false and the job is loaded again by its worker (SQL_LOAD). A
 * message added to a conversation that was already pending does not
 * change its row; one the snapshot missed is left pending, and the finish
 * says so ("more"). $1 how many, $2 owner token, $3 lease ms. */
const char INF_SQL_CLAIM[] =
    "WITH c AS ("
    " SELECT id, lease_owner AS prev_owner, xmin AS locked FROM conversations"
    " WHERE pending_since IS NOT NULL"
    "   AND (lease_until IS NULL OR lease_until < now())"
    "   AND (not_before IS NULL OR not_before <= now())"
    " ORDER BY pending_since LIMIT $1::int"
    " FOR UPDATE SKIP LOCKED),"
    " v AS (UPDATE conversations v SET lease_owner = $2,"
    "  lease_until = now() + $3::int * interval '1 millisecond',"
    "  lease_count = v.lease_count + 1"
    "  FROM c WHERE v.id = c.id"
    "  RETURNING v.id, v.lease_count, c.prev_owner IS NOT NULL AS expired,"
    "  v.user_id, v.platform, v.channel, c.locked)," SQL_LOAD_FROM_V;
/* The worker's own load of one job (when the claim could not load it):
 * $1 conversation, $2 owner, $3 lease_count; no row when the lease is
 * gone. */
static const char SQL_LOAD[] =
    "WITH v AS (SELECT id, lease_count, false AS expired, user_id, platform,"
    " channel, xmin AS locked FROM conversations WHERE id = $1::bigint"
    " AND lease_owner = $2 AND lease_count = $3::int)," SQL_LOAD_FROM_V;
/* A reply went out but its finish failed and its intent is not in the
 * database: the intent commits without waiting for its flush, and a crash
 * of PostgreSQL before that flush loses it. The messages stay pending and
 * are answered again, so say so ($1 conversation, $2 response id, $3 the
 * platform ids sent, JSON). Nothing when the intent is there: then the
 * next claim's repair flags it (SQL_LOAD_FROM_V). */
static const char SQL_UNRECORDED[] =
    "INSERT INTO events (type, platform, channel, user_id, user_pseudonym,"
    " conversation_id, data)"
    " SELECT 'possible_duplicate_send', c.platform, c.channel, u.id,"
    " u.pseudonym, c.id, jsonb_build_object('reason', 'a reply was sent but"
    " not recorded, and its intent is not in the database (lost in a"
    " PostgreSQL crash); it is answered again and may reach the user twice',"
    " 'response_id', $2::bigint, 'platform_message_ids', $3::jsonb)"
    " FROM conversations c JOIN users u ON u.id = c.user_id"
    " WHERE c.id = $1::bigint"
    " AND NOT EXISTS (SELECT 1 FROM responses r WHERE r.id = $2::bigint)";
static const char SQL_RELEASE[] =
    "UPDATE conversations SET lease_owner = NULL, lease_until = NULL"
    " WHERE id = $1::bigint AND lease_owner = $2 AND lease_count = $3::int";

struct pending_msg {
    char id[24];
    char *platform_id;
    char *kind;
    char *text;
    long long received_ms;
};

struct job_state {
    struct inf_worker_ctx *w; /* the thread running the current stage */
    char worker[32];          /* the worker that thought */
    struct inf_mark *mark;    /* its read receipt, sent by delivery */
    struct inf_job *job;
    const struct adp_adapter *adapter;
    char user_id[256];
    char platform[32];
    char channel[256];
    int opted_out;
    int confirm_opt_out;
    struct pending_msg pending[JOB_MAX_PENDING];
    int npending;
    struct inf_ctx_turn *history;
    int nhistory;
    /* outcome */
    const char *kind; /* responses.kind */
    char *reply;      /* text to send */
    struct inf_llm_result llm;
    char *request_json; /* messages sent to the LLM */
    char response_id[24];
    char *parts[JOB_MAX_PARTS];
    int nparts;
    struct adp_send_result sent[JOB_MAX_PARTS];
    int nsent;              /* parts the platform accepted */
    int more;               /* the finish left messages pending */
    double thought_s;       /* job_clock() when the worker was done */
    char *signals_json;     /* ad signals to store, or NULL */
    char prev_response[24]; /* the last exchange: our response ... */
    char *prev_user_text;   /* ... and the user message it answered */
};

static void mark_unref(struct inf_mark *m);

static void
state_free(struct job_state *s)
{
    int i;

    for (i = 0; i < s->npending; i++) {
        free(s->pending[i].platform_id);
        free(s->pending[i].kind);
        free(s->pending[i].text);
    }
    inf_ctx_turns_free(s->history, s->nhistory);
    for (i = 0; i < s->nparts; i++)
        free(s->parts[i]);
    free(s->reply);
    free(s->request_json);
    free(s->signals_json);
    free(s->prev_user_text);
    inf_llm_result_done(&s->llm);
    mark_unref(s->mark);
    s->mark = NULL;
}

static cJSON *
event_obj(cJSON *arr, const char *type, const char *message_id, const char *ref)
{
    cJSON *e = cJSON_CreateObject();
    cJSON *d = cJSON_CreateObject();

    cJSON_AddStringToObject(e, "type", type);
    if (message_id)
        cJSON_AddStringToObject(e, "message_id", message_id);
    if (ref)
        cJSON_AddStringToObject(e, "ref", ref);
    cJSON_AddItemToObject(e, "data", d);
    cJSON_AddItemToArray(arr, e);
    return d;
}

/* An event about outbound part `ord` (1-based) of the job's response,
 * whose row the same finish inserts. */
static cJSON *
part_event(cJSON *arr, const char *type, int ord, const char *ref)
{
    cJSON *d = event_obj(arr, type, NULL, ref);

    cJSON_AddNumberToObject(
        cJSON_GetArrayItem(arr, cJSON_GetArraySize(arr) - 1), "part", ord);
    return d;
}

/* Monotonic seconds, for the stage timings. */
static double
job_clock(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wall clock in ms, to compare with received_at (PostgreSQL's clock). */
static long long
wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000LL + ts.tv_nsec / 1000000L;
}

/* ---- A. load ----------------------------------------------------------- */

/* A JSON string element, copied; NULL for null (or anything else). */
static char *
json_dup(const cJSON *a, int i)
{
    const char *v = cJSON_GetStringValue(cJSON_GetArrayItem(a, i));

    return v ? strdup(v) : NULL;
}

/* Fill s from row `row` of a SQL_LOAD_FROM_V result (INF_SQL_CLAIM's or
 * SQL_LOAD's). CORE_ERR_CONFLICT: the row changed after the snapshot. */
static enum core_status
load_row(struct job_state *s, PGresult *r, int row)
{
    cJSON *a = NULL, *e;
    enum core_status st = CORE_ERR_NOMEM;
    int i, n;

    if (PQgetvalue(r, row, 11)[0] != 't')
        return CORE_ERR_CONFLICT; /* changed since the snapshot */
    snprintf(s->user_id, sizeof(s->user_id), "%s", PQgetvalue(r, row, 3));
    s->opted_out = PQgetvalue(r, row, 4)[0] == 't';
    s->confirm_opt_out = PQgetvalue(r, row, 5)[0] == 't';
    snprintf(s->platform, sizeof(s->platform), "%s", PQgetvalue(r, row, 6));
    snprintf(s->channel, sizeof(s->channel), "%s", PQgetvalue(r, row, 7));

    if (!PQgetisnull(r, row, 8) &&
        (a = cJSON_Parse(PQgetvalue(r, row, 8))) != NULL) {
        cJSON_ArrayForEach(e, a)
        {
            core_metric_add(s->w->m->dup_sends, NULL, 1);
            log_warn("possible duplicate send", "conversation=%s response=%.0f",
                     s->job->conversation_id, cJSON_GetNumberValue(e));
        }
        cJSON_Delete(a);
    }

    if (!PQgetisnull(r, row, 9)) {
        if (!(a = cJSON_Parse(PQgetvalue(r, row, 9))))
            return CORE_ERR_NOMEM;
        cJSON_ArrayForEach(e, a)
        {
            struct pending_msg *m;
            const char *id;

            if (s->npending == JOB_MAX_PENDING)
                break;
            id = cJSON_GetStringValue(cJSON_GetArrayItem(e, 0));
            if (!id)
                continue;
            m = &s->pending[s->npending++];
            snprintf(m->id, sizeof(m->id), "%s", id);
            m->platform_id = json_dup(e, 1);
            m->kind = json_dup(e, 2);
            m->text = json_dup(e, 3);
            m->received_ms =
                (long long)cJSON_GetNumberValue(cJSON_GetArrayItem(e, 4));
        }
        cJSON_Delete(a);
    }

    if (PQgetisnull(r, row, 10))
        return CORE_OK;
    if (!(a = cJSON_Parse(PQgetvalue(r, row, 10))))
        return CORE_ERR_NOMEM;
    n = cJSON_GetArraySize(a);
    s->history = calloc((size_t)n, sizeof(*s->history));
    if (!s->history)
        goto out;
    for (i = 0; i < n; i++) {
        e = cJSON_GetArrayItem(a, i);
        s->history[i].role = json_dup(e, 0);
        s->history[i].content = json_dup(e, 1);
        s->nhistory = i + 1;
        if (!s->history[i].role || !s->history[i].content)
            goto out;
    }
    /* Newest first: [assistant, user, ...] is the last exchange. */
    if (n >= 2 && strcmp(s->history[0].role, "assistant") == 0 &&
        strcmp(s->history[1].role, "user") == 0) {
        snprintf(s->prev_response, sizeof(s->prev_response), "%s",
                 cJSON_GetStringValue(
                     cJSON_GetArrayItem(cJSON_GetArrayItem(a, 0), 2)));
        s->prev_user_text = strdup(s->history[1].content);
    }
    st = CORE_OK;
out:
    cJSON_Delete(a);
    return st;
}

/* The worker's own load, when the claim could not load the job. */
static enum core_status
load(struct job_state *s)
{
    const char *p[3] = { s->job->conversation_id, s->job->owner,
                         s->job->lease_count };
    PGresult *r = NULL;
    enum core_status st;
    struct core_dbconn *c = core_db_acquire(s->w->db, JOB_DB_WAIT_MS, &st);

    if (!c)
        return CORE_ERR_UNAVAILABLE;
    st = core_db_query(c, SQL_LOAD, 3, p, &r);
    if (st == CORE_OK)
        st = PQntuples(r) == 1 ? load_row(s, r, 0) : CORE_ERR_CONFLICT;
    if (st != CORE_OK && st != CORE_ERR_CONFLICT)
        log_warn("job load failed", "conversation=%s sqlstate=%s error=\"%s\"",
                 s->job->conversation_id, c->sqlstate, c->error);
    PQclear(r);
    core_db_release(s->w->db, c);
    return st;
}

int
inf_job_from_claim(struct inf_worker_ctx *w, struct inf_job *job, PGresult *r,
                   int row)
{
    struct job_state *s;

    job->claimed_s = job_clock();
    job->claimed_ms = wall_ms();
    s = calloc(1, sizeof(*s));
    if (!s)
        return -1;
    s->w = w;
    s->job = job;
    if (load_row(s, r, row) != CORE_OK) {
        state_free(s);
        free(s);
        return -1; /* its worker loads it, afresh */
    }
    job->state = s;
    return 0;
}

/* ---- ad signals -------------------------------------------------------- */

static void
add_intents(cJSON *a, unsigned flags)
{
    if (flags & ANA_INTENT_SHOPPING)
        cJSON_AddItemToArray(a, cJSON_CreateString("shopping"));
    if (flags & ANA_INTENT_PRICE)
        cJSON_AddItemToArray(a, cJSON_CreateString("price"));
    if (flags & ANA_INTENT_LOCAL)
        cJSON_AddItemToArray(a, cJSON_CreateString("local"));
    if (flags & ANA_INTENT_BOOKING)
        cJSON_AddItemToArray(a, cJSON_CreateString("booking"));
}

/* Classify the pending messages (no extra LLM call) under the platform's
 * data-use policy. Opted-out users get no signals at all. */
static void
classify(struct job_state *s)
{
    enum core_ad_policy pol = core_config_ad_policy(s->w->cfg, s->platform);
    struct ana_interest it[ANA_INTEREST_OUT_MAX];
    cJSON *arr;
    unsigned intents;
    int i, k, n;

    if (pol == CORE_AD_OFF || s->opted_out)
        return;
    arr = cJSON_CreateArray();
    for (i = 0; i < s->npending && arr; i++) {
        if (!s->pending[i].text)
            continue;
        intents = 0;
        n = ana_interest_classify(s->pending[i].text, it, ANA_INTEREST_OUT_MAX,
                                  &intents);
        for (k = 0; k < n; k++) {
            cJSON *o = cJSON_CreateObject(), *in = cJSON_CreateArray();

            cJSON_AddStringToObject(o, "message_id", s->pending[i].id);
            cJSON_AddStringToObject(o, "category", it[k].key);
            if (it[k].name)
                cJSON_AddStringToObject(o, "name", it[k].name);
            cJSON_AddNumberToObject(o, "tier", it[k].tier);
            cJSON_AddNumberToObject(o, "score", it[k].score);
            add_intents(in, intents);
            cJSON_AddItemToObject(o, "intents", in);
            cJSON_AddBoolToObject(o, "sensitive",
                                  ana_interest_is_sensitive(&it[k]));
            /* A message touching a sensitive topic gives no per-user
             * signal at all, not even its harmless categories. */
            cJSON_AddBoolToObject(o, "per_user",
                                  pol == CORE_AD_USER &&
                                      !(intents & ANA_INTENT_SENSITIVE));
            cJSON_AddItemToArray(arr, o);
        }
    }
    if (arr && cJSON_GetArraySize(arr) > 0)
        s->signals_json = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
}

/* ---- think ------------------------------------------------------------- */

static void
think(struct job_state *s)
{
    struct inf_ctx_input in;
    struct inf_llm_message *msgs = NULL;
    struct inf_llm_request req;
    size_t n = 0;
    long long newest = s->pending[s->npending - 1].received_ms;
    struct timespec now;
    int i;

    clock_gettime(CLOCK_REALTIME, &now);
    if (s->confirm_opt_out) {
        s->kind = "opt_out";
        s->reply = strdup("You are unsubscribed: this assistant will not "
                          "message you again. Send START to resume.");
        return;
    }
    if (s->opted_out) {
        s->kind = NULL; /* answered by silence */
        return;
    }
    if ((long long)now.tv_sec * 1000LL - newest > WINDOW_MS) {
        s->kind = "window_closed";
        return;
    }
    memset(&in, 0, sizeof(in));
    in.system_prompt = s->w->cfg->system_prompt;
    in.budget_tokens = s->w->cfg->context_tokens;
    in.history = s->history;
    in.nhistory = s->nhistory;
    for (i = 0; i < s->npending; i++) {
        in.pending_kind[i] = s->pending[i].kind;
        in.pending_text[i] = s->pending[i].text;
    }
    in.npending = s->npending;
    if (inf_ctx_build(&in, &msgs, &n, &s->request_json) != CORE_OK) {
        s->kind = "apology";
        s->reply = strdup(s->w->cfg->apology_text);
        return;
    }
    memset(&req, 0, sizeof(req));
    req.messages = msgs;
    req.nmessages = n;
    req.temperature = -1;
    req.stream = -1;
    if (inf_llm_complete(s->w->llm, &req, &s->llm) == CORE_OK &&
        s->llm.content && s->llm.content[0]) {
        s->kind = "llm";
        s->reply = strdup(s->llm.content);
        /* Cut off at max_tokens: say so rather than end mid-sentence. */
        if (s->reply && s->llm.finish_reason &&
            strcmp(s->llm.finish_reason, "length") == 0) {
            size_t len = strlen(s->reply);
            char *r = realloc(s->reply, len + 5);

            if (r) {
                memcpy(r + len, " \xE2\x80\xA6", 5); /* " …" + NUL */
                s->reply = r;
            }
        }
    } else {
        s->kind = "apology";
        s->reply = strdup(s->w->cfg->apology_text);
        log_warn("llm failed: sending apology",
                 "conversation=%s "
                 "attempts=%d error=\"%s\"",
                 s->job->conversation_id, s->llm.attempts, s->llm.error);
    }
    inf_ctx_messages_free(msgs, n);
}

/* ---- B. intent --------------------------------------------------------- */

static void
add_num(cJSON *o, const char *k, long v, int valid)
{
    if (valid)
        cJSON_AddNumberToObject(o, k, (double)v);
}

static void
add_text(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
}

const char INF_SQL_INTENTS[] =
    "SELECT n, result FROM parley_reply_intents($1::jsonb)";

/* Record the response about to be sent: one document, grouped with other
 * workers' into one call of parley_reply_intents() (migrations/0009). */
static enum core_status
intent(struct job_state *s)
{
    cJSON *j = cJSON_CreateObject(), *res;
    int llm = strcmp(s->kind, "llm") == 0, tried = s->llm.attempts > 0;
    char *json, *out = NULL;
    enum core_status st;

    cJSON_AddStringToObject(j, "conv", s->job->conversation_id);
    cJSON_AddStringToObject(j, "owner", s->job->owner);
    cJSON_AddStringToObject(j, "lease", s->job->lease_count);
    cJSON_AddNumberToObject(j, "lease_ms", s->w->cfg->lease_ms);
    cJSON_AddStringToObject(j, "kind", s->kind);
    add_text(j, "model",
             s->llm.model ? s->llm.model
                          : (tried ? s->w->cfg->llm_model : NULL));
    if (s->request_json)
        cJSON_AddItemToObject(j, "request", cJSON_Parse(s->request_json));
    add_text(j, "completion",
             llm && s->llm.content ? s->llm.content : s->reply);
    add_text(j, "finish_reason", s->llm.finish_reason);
    add_num(j, "prompt_tokens", s->llm.prompt_tokens,
            llm && s->llm.prompt_tokens >= 0);
    add_num(j, "completion_tokens", s->llm.completion_tokens,
            llm && s->llm.completion_tokens >= 0);
    add_num(j, "ttft_ms", s->llm.ttft_ms, tried);
    add_num(j, "llm_ms", s->llm.total_ms, tried);
    add_num(j, "attempts", s->llm.attempts, tried);
    add_text(j, "error", strcmp(s->kind, "apology") == 0 ? s->llm.error : NULL);
    cJSON_AddStringToObject(j, "worker", s->worker);
    json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!json)
        return CORE_ERR_NOMEM;
    st = core_batch_call(
        s->w->intents, strtoll(s->job->conversation_id, NULL, 10), json, &out);
    free(json);
    if (st != CORE_OK)
        return st;
    if (!out)
        return CORE_ERR_CONFLICT; /* the lease is gone */
    res = cJSON_Parse(out);
    free(out);
    if (!res)
        return CORE_ERR_INTERNAL;
    snprintf(s->response_id, sizeof(s->response_id), "%.0f",
             cJSON_GetNumberValue(cJSON_GetObjectItem(res, "response_id")));
    cJSON_Delete(res);
    return CORE_OK;
}

/* ---- send -------------------------------------------------------------- */

/* Per-thread xorshift for backoff jitter and feedback sampling (rand() is
 * not thread-safe). */
static unsigned
job_rand(void)
{
    static _Thread_local unsigned x;

    if (x == 0)
        x = (unsigned)(uintptr_t)&x ^ (unsigned)time(NULL) ^ 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}

static int
aborting(const struct job_state *s)
{
    return atomic_load(s->w->abandon) >= 2;
}

static void
nap_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    nanosleep(&ts, NULL);
}

static void
count_send(struct job_state *s, const struct adp_send_result *res)
{
    char labels[160];

    snprintf(labels, sizeof(labels),
             "platform=\"%s\",result=\"%s\",code=\"%d\"", s->platform,
             adp_send_class_str(res->cls), res->error_code);
    core_metric_add(s->w->m->sends, labels, 1);
}

/* Send one part with retries; CORE_OK when the platform accepted it. */
static enum core_status
send_part(struct job_state *s, int i, const struct adp_button *buttons,
          int nbuttons)
{
    struct adp_send_result *res = &s->sent[i];
    const char *reply_to =
        i == 0 ? s->pending[s->npending - 1].platform_id : NULL;
    long wait_ms = 500;
    int attempt;
    enum core_status st = CORE_ERR_UPSTREAM;

    for (attempt = 1; attempt <= JOB_SEND_ATTEMPTS; attempt++) {
        memset(res, 0, sizeof(*res));
        res->retry_after_ms = -1;
        st = s->adapter->send_text(s->w->cfg, s->w->send_curl, s->channel,
                                   s->user_id, s->parts[i], reply_to, buttons,
                                   nbuttons, res);
        count_send(s, res);
        if (st == CORE_OK)
            return CORE_OK;
        if (res->cls != ADP_SEND_RATE_LIMIT && res->cls != ADP_SEND_TRANSIENT)
            break;
        if (attempt == JOB_SEND_ATTEMPTS || aborting(s))
            break;
        if (res->retry_after_ms >= 0)
            wait_ms = res->retry_after_ms < 30000 ? res->retry_after_ms : 30000;
        log_warn("send failed, retrying",
                 "platform=%s class=%s code=%d "
                 "http=%ld attempt=%d wait_ms=%ld",
                 s->platform, adp_send_class_str(res->cls), res->error_code,
                 res->http_status, attempt, wait_ms);
        nap_ms(wait_ms + (long)(job_rand() % (unsigned long)(wait_ms / 4 + 1)));
        wait_ms = wait_ms * 2 < 8000 ? wait_ms * 2 : 8000;
    }
    log_warn("send failed", "platform=%s class=%s code=%d title=\"%s\"",
             s->platform, adp_send_class_str(res->cls), res->error_code,
             res->error_title);
    return st;
}

static int
want_feedback(const struct job_state *s)
{
    const struct core_config *cfg = s->w->cfg;

    if (strcmp(s->kind, "llm") != 0 || s->adapter->limits.max_buttons < 2)
        return 0;
    if (cfg->feedback_mode == CORE_FEEDBACK_ALL)
        return 1;
    if (cfg->feedback_mode == CORE_FEEDBACK_SAMPLED)
        return (double)(job_rand() % 10000u) / 10000.0 < cfg->feedback_sample;
    return 0;
}

static void
send_all(struct job_state *s)
{
    char up[64], down[64];
    struct adp_button buttons[2] = { { up, "\xF0\x9F\x91\x8D" },
                                     { down, "\xF0\x9F\x91\x8E" } };
    int fb = want_feedback(s), i;

    snprintf(up, sizeof(up), "parley_fb:up:%s", s->response_id);
    snprintf(down, sizeof(down), "parley_fb:down:%s", s->response_id);
    for (i = 0; i < s->nparts; i++) {
        int last = i == s->nparts - 1;

        if (send_part(s, i, last && fb ? buttons : NULL, last && fb ? 2 : 0) !=
            CORE_OK)
            break;
        s->nsent++;
    }
}

/* ---- C. finish --------------------------------------------------------- */

static cJSON *
pending_ids(const struct job_state *s)
{
    cJSON *a = cJSON_CreateArray();
    int i;

    for (i = 0; i < s->npending; i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(s->pending[i].id));
    return a;
}

/* The llm_request / response_generated / error events of this job: since
 * migrations/0009 its finish records them, after the send. */
static cJSON *
llm_events(const struct job_state *s)
{
    cJSON *ev = cJSON_CreateArray(), *d;
    const char *last;

    if (!s->kind || s->npending == 0)
        return ev; /* nothing was asked of the LLM */
    last = s->pending[s->npending - 1].id;
    if (strcmp(s->kind, "llm") == 0 || strcmp(s->kind, "apology") == 0) {
        d = event_obj(ev, "llm_request", last, NULL);
        cJSON_AddNumberToObject(d, "inputs", s->npending);
        cJSON_AddNumberToObject(d, "attempts", s->llm.attempts);
        cJSON_AddNumberToObject(d, "llm_ms", (double)s->llm.total_ms);
    }
    if (strcmp(s->kind, "llm") == 0) {
        d = event_obj(ev, "response_generated", last, NULL);
        cJSON_AddNumberToObject(d, "completion_tokens",
                                s->llm.completion_tokens);
        cJSON_AddNumberToObject(d, "ttft_ms", (double)s->llm.ttft_ms);
        if (s->llm.finish_reason)
            cJSON_AddStringToObject(d, "finish_reason", s->llm.finish_reason);
    } else if (strcmp(s->kind, "apology") == 0) {
        d = event_obj(ev, "error", last, NULL);
        cJSON_AddStringToObject(d, "stage", "llm");
        cJSON_AddStringToObject(d, "error", s->llm.error);
        cJSON_AddStringToObject(d, "class", inf_llm_error_str(s->llm.err));
    }
    return ev;
}

const char INF_SQL_FINISHES[] =
    "SELECT n, CASE WHEN NOT ok THEN 'lost' WHEN more THEN 'more' ELSE 'done'"
    " END FROM parley_reply_finishes($1::jsonb)";

/* Outbound parts: texts, ids and statuses, plus their message_sent /
 * send_failed events (which name the part by its ordinal: its row is
 * inserted by the same call). */
static void
finish_parts(const struct job_state *s, cJSON *parts, cJSON *ev)
{
    cJSON *d;
    int i;

    for (i = 0; i < s->nparts; i++) {
        const struct adp_send_result *res = &s->sent[i];
        int ok = i < s->nsent;
        int tried = i <= s->nsent;
        cJSON *o = cJSON_CreateObject();

        cJSON_AddNumberToObject(o, "ord", i + 1);
        cJSON_AddStringToObject(o, "text", s->parts[i]);
        if (ok)
            cJSON_AddStringToObject(o, "pid", res->message_id);
        cJSON_AddStringToObject(o, "status",
                                ok ? "sent" : (tried ? "failed" : "not_sent"));
        cJSON_AddNumberToObject(o, "rank", ok ? 1 : 0);
        if (!ok && res->error_code)
            cJSON_AddNumberToObject(o, "ecode", res->error_code);
        cJSON_AddItemToArray(parts, o);
        if (ok) {
            d = part_event(ev, "message_sent", i + 1, res->message_id);
            cJSON_AddNumberToObject(d, "part", i + 1);
            cJSON_AddNumberToObject(d, "parts", s->nparts);
        } else if (tried) {
            d = part_event(ev, "send_failed", i + 1, NULL);
            cJSON_AddStringToObject(d, "class", adp_send_class_str(res->cls));
            cJSON_AddNumberToObject(d, "error_code", res->error_code);
            cJSON_AddNumberToObject(d, "http_status", (double)res->http_status);
            cJSON_AddStringToObject(d, "error_title", res->error_title);
        }
    }
}

/* Implicit signal (never a training label by default): the first new
 * message repeats the previous question in other words, a hint that the
 * previous response did not help. Linked to that previous response. */
static void
rephrase_event(const struct job_state *s, cJSON *ev)
{
    cJSON *d;

    if (!s->prev_user_text || !s->prev_response[0] || s->npending == 0 ||
        !s->pending[0].text ||
        !ana_is_rephrase(s->prev_user_text, s->pending[0].text))
        return;
    d = event_obj(ev, "user_rephrased", s->pending[0].id, NULL);
    cJSON_AddNumberToObject(
        d, "similarity",
        ana_text_similarity(s->prev_user_text, s->pending[0].text));
    cJSON_AddStringToObject(cJSON_GetArrayItem(ev, cJSON_GetArraySize(ev) - 1),
                            "response_id", s->prev_response);
}

/* Everything the job did, as one document, grouped with other workers'
 * into one call of parley_reply_finishes() (migrations/0009). */
static enum core_status
finish(struct job_state *s)
{
    cJSON *j = cJSON_CreateObject(), *parts = cJSON_CreateArray();
    /* A job that recorded a response records its llm events now. */
    cJSON *ev = s->response_id[0] ? llm_events(s) : cJSON_CreateArray();
    char *json = NULL, *out = NULL;
    enum core_status st;
    const char *istate;

    istate = !s->kind ? "skipped" : (s->nsent > 0 ? "answered" : "failed");
    if (s->kind && strcmp(s->kind, "window_closed") == 0)
        istate = "skipped";
    cJSON_AddStringToObject(j, "conv", s->job->conversation_id);
    cJSON_AddStringToObject(j, "owner", s->job->owner);
    cJSON_AddStringToObject(j, "lease", s->job->lease_count);
    cJSON_AddStringToObject(j, "platform", s->platform);
    if (s->response_id[0]) {
        cJSON_AddStringToObject(j, "response_id", s->response_id);
        cJSON_AddStringToObject(j, "rstatus",
                                s->nparts == 0 || s->nsent == s->nparts
                                    ? "sent"
                                    : (s->nsent > 0 ? "partial" : "failed"));
        finish_parts(s, parts, ev);
    }
    cJSON_AddStringToObject(j, "istate", istate);
    cJSON_AddItemToObject(j, "inbound", pending_ids(s));
    rephrase_event(s, ev);
    cJSON_AddItemToObject(j, "parts", parts);
    cJSON_AddItemToObject(j, "events", ev);
    if (s->signals_json)
        cJSON_AddItemToObject(j, "signals", cJSON_Parse(s->signals_json));
    json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!json)
        return CORE_ERR_NOMEM;
    st = core_batch_call(
        s->w->finishes, strtoll(s->job->conversation_id, NULL, 10), json, &out);
    if (st == CORE_OK && (!out || strcmp(out, "lost") == 0))
        st = CORE_ERR_CONFLICT; /* the lease is gone */
    if (st == CORE_OK)
        s->more = strcmp(out, "more") == 0;
    free(out);
    free(json);
    return st;
}

/* ---- the job ----------------------------------------------------------- */

/* The finish failed after parts went out: make a possible duplicate
 * visible if the intent was lost (SQL_UNRECORDED), else leave it to the
 * repair of the next claim. */
static void
flag_unrecorded(struct job_state *s)
{
    cJSON *ids = cJSON_CreateArray();
    char *json = NULL;
    const char *p[3];
    struct core_dbconn *c = NULL;
    PGresult *r = NULL;
    enum core_status st = CORE_ERR_NOMEM;
    int i;

    for (i = 0; ids && i < s->nparts; i++)
        if (s->sent[i].message_id[0])
            cJSON_AddItemToArray(ids,
                                 cJSON_CreateString(s->sent[i].message_id));
    if (ids)
        json = cJSON_PrintUnformatted(ids);
    cJSON_Delete(ids);
    if (json) {
        p[0] = s->job->conversation_id;
        p[1] = s->response_id[0] ? s->response_id : "0";
        p[2] = json;
        c = core_db_acquire(s->w->db, JOB_DB_WAIT_MS, &st);
    }
    if (c) {
        st = core_db_query(c, SQL_UNRECORDED, 3, p, &r);
        if (st == CORE_OK && PQcmdTuples(r)[0] == '1') {
            core_metric_add(s->w->m->dup_sends, NULL, 1);
            log_warn("possible duplicate send: the reply was sent, its intent "
                     "is lost",
                     "conversation=%s response=%s", s->job->conversation_id,
                     p[1]);
        }
        PQclear(r);
        core_db_release(s->w->db, c);
    }
    if (st != CORE_OK)
        log_error("reply sent but not recorded, and not flagged",
                  "conversation=%s response=%s sent=%s status=%s",
                  s->job->conversation_id, s->response_id, json ? json : "?",
                  core_status_str(st));
    free(json);
}

static void
observe_latency(struct job_state *s)
{
    if (s->nsent == 0)
        return;
    core_metric_observe(s->w->m->e2e, NULL,
                        (double)(wall_ms() - s->pending[0].received_ms) /
                            1000.0);
}

static void
count_job(struct job_state *s, const char *result)
{
    char labels[64];

    snprintf(labels, sizeof(labels), "result=\"%s\"", result);
    core_metric_add(s->w->m->jobs, labels, 1);
}

/* Run a step (load, or a grouped write), retrying while the database is
 * unavailable; the step logs its own errors. */
static enum core_status
with_retries(struct job_state *s, enum core_status (*fn)(struct job_state *),
             int tries)
{
    enum core_status st = CORE_ERR_UNAVAILABLE;
    int i;

    for (i = 0; i < tries; i++) {
        st = fn(s);
        if (st != CORE_ERR_UNAVAILABLE)
            return st;
        if (aborting(s))
            break;
        nap_ms(500L << (i < 4 ? i : 4));
    }
    return st;
}

static enum core_status
split_reply(struct job_state *s)
{
    int n;

    if (!s->reply)
        return CORE_OK;
    n = adp_split_text(s->reply, s->adapter->limits.max_text,
                       s->adapter->limits.unit, s->parts, JOB_MAX_PARTS);
    if (n < 0)
        return CORE_ERR_TOO_LARGE;
    s->nparts = n;
    return CORE_OK;
}

void
inf_job_discard(struct inf_job *job)
{
    if (job->state) {
        state_free(job->state);
        free(job->state);
        job->state = NULL;
    }
}

struct inf_mark *
inf_job_mark(struct inf_job *job)
{
    struct job_state *s = job->state;
    const struct adp_adapter *a = s ? adp_find(s->platform) : NULL;
    struct inf_mark *m;

    if (!a || !a->read_posts || s->opted_out || s->npending == 0 ||
        !s->pending[s->npending - 1].platform_id)
        return NULL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->message_id = strdup(s->pending[s->npending - 1].platform_id);
    if (!m->message_id) {
        free(m);
        return NULL;
    }
    m->adapter = a;
    snprintf(m->channel, sizeof(m->channel), "%s", s->channel);
    snprintf(m->user_id, sizeof(m->user_id), "%s", s->user_id);
    if (pthread_cond_init(&m->cv, NULL) != 0) {
        free(m->message_id);
        free(m);
        return NULL;
    }
    atomic_init(&m->refs, 2); /* the delivery queue's and the job's */
    s->mark = m;
    return m;
}

/* Make the receipt's posts in order on curl. Best effort: a failure is
 * logged at debug level and not retried. */
static void
mark_read(const struct core_config *cfg, CURL *curl,
          const struct adp_adapter *a, const char *channel, const char *user_id,
          const char *message_id)
{
    struct adp_post posts[2];
    struct adp_post_answer ans;
    int i, n = 0;

    if (a->read_posts(cfg, channel, user_id, message_id, posts,
                      (int)(sizeof(posts) / sizeof(posts[0])), &n) != CORE_OK)
        return;
    for (i = 0; i < n; i++) {
        (void)adp_post_perform(curl, &posts[i], &ans);
        if (ans.http < 200 || ans.http > 299)
            log_debug("read receipt failed", "platform=%s http=%ld", a->name,
                      ans.http);
        adp_post_answer_done(&ans);
        adp_post_done(&posts[i]);
    }
}

/* The receipts' hand-over: a delivery thread sets done and signals the
 * receipt's own condvar (no other waiter wakes), the job's delivery waits
 * for it. */
static pthread_mutex_t mark_mu = PTHREAD_MUTEX_INITIALIZER;

static void
mark_unref(struct inf_mark *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) {
        pthread_cond_destroy(&m->cv);
        free(m->message_id);
        free(m);
    }
}

void
inf_mark_send(struct inf_worker_ctx *d, struct inf_mark *m)
{
    mark_read(d->cfg, d->send_curl, m->adapter, m->channel, m->user_id,
              m->message_id);
    pthread_mutex_lock(&mark_mu);
    m->done = 1;
    pthread_mutex_unlock(&mark_mu);
    pthread_cond_signal(&m->cv); /* (m lives: our reference) */
    mark_unref(m);
}

/*
 * Before the job's reply: wait until its receipt was answered, so the
 * receipt reaches the platform first (a typing indicator that arrived
 * after the reply would stay up). It is already on its way: delivery
 * threads take receipts before jobs, and the dispatcher queued it before
 * the job, so no receipt can be waiting behind this thread.
 */
static void
mark_wait(struct job_state *s)
{
    if (!s->mark)
        return;
    pthread_mutex_lock(&mark_mu);
    while (!s->mark->done)
        pthread_cond_wait(&s->mark->cv, &mark_mu);
    pthread_mutex_unlock(&mark_mu);
    mark_unref(s->mark);
    s->mark = NULL;
}

/* Observe stage `name`, begun at `since` (job_clock()); returns now. */
static double
stage_done(const struct job_state *s, const char *name, double since)
{
    char labels[48];
    double now = job_clock();

    snprintf(labels, sizeof(labels), "stage=\"%s\"", name);
    core_metric_observe(s->w->m->stages, labels, now - since);
    return now;
}

int
inf_job_think(struct inf_worker_ctx *w, struct inf_job *job)
{
    struct job_state *s = job->state;
    enum core_status st;
    int go = 0;

    core_log_set_request_id(job->conversation_id);
    if (!s) {
        s = job->state = calloc(1, sizeof(*s));
        if (!s)
            goto out;
        s->job = job;
        s->w = w;
        st = with_retries(s, load, 3);
        if (st != CORE_OK) {
            count_job(s, st == CORE_ERR_CONFLICT ? "lease_lost" : "db_error");
            goto out;
        }
    }
    s->w = w;
    snprintf(s->worker, sizeof(s->worker), "%s", w->name);
    (void)stage_done(s, "queue", job->claimed_s);
    if (s->npending > 0 && job->claimed_ms >= s->pending[0].received_ms)
        core_metric_observe(
            w->m->stages, "stage=\"wait\"",
            (double)(job->claimed_ms - s->pending[0].received_ms) / 1000.0);
    s->adapter = adp_find(s->platform);
    if (!s->adapter || s->npending == 0) {
        s->kind = NULL; /* nothing to answer: delivery only finishes */
        go = 1;
        goto out;
    }
    if (!s->mark && s->adapter->read_posts && !s->opted_out &&
        s->pending[s->npending - 1].platform_id)
        mark_read(w->cfg, w->send_curl, s->adapter, s->channel, s->user_id,
                  s->pending[s->npending - 1].platform_id);
    think(s);
    classify(s);
    if (aborting(s) && s->kind && strcmp(s->kind, "apology") == 0) {
        /* Cancelled by shutdown, not a real failure: hand it back. */
        inf_job_release(w, NULL, job);
        count_job(s, "released");
        goto out;
    }
    if (s->kind && s->reply && split_reply(s) != CORE_OK) {
        free(s->reply);
        s->reply = strdup(w->cfg->apology_text);
        s->kind = "apology";
        (void)split_reply(s);
    }
    go = 1;
out:
    if (s)
        s->thought_s = job_clock();
    if (!go)
        inf_job_discard(job);
    core_log_set_request_id(NULL);
    return go;
}

int
inf_job_deliver(struct inf_worker_ctx *d, struct inf_job *job)
{
    struct job_state *s = job->state;
    enum core_status st;
    int more = 0;
    double t;

    if (!s)
        return 0;
    s->w = d;
    t = stage_done(s, "handoff", s->thought_s);
    core_log_set_request_id(job->conversation_id);
    if (!s->adapter || s->npending == 0) {
        (void)with_retries(s, finish, 3);
        count_job(s, "empty");
        goto out;
    }
    if (s->kind) {
        st = with_retries(s, intent, 3);
        t = stage_done(s, "intent", t);
        if (st != CORE_OK) {
            count_job(s, st == CORE_ERR_CONFLICT ? "lease_lost" : "db_error");
            goto out;
        }
        mark_wait(s); /* (the intent's round trip ran meanwhile) */
        send_all(s);
        t = stage_done(s, "send", t);
    }
    st = with_retries(s, finish, 10);
    (void)stage_done(s, "finish", t);
    if (st != CORE_OK) {
        log_error("could not record finished job",
                  "conversation=%s "
                  "status=%s",
                  job->conversation_id, core_status_str(st));
        count_job(s, "db_error");
        if (s->nsent > 0)
            flag_unrecorded(s);
        goto out;
    }
    observe_latency(s);
    count_job(s, !s->kind ? "skipped"
                          : (s->nsent == s->nparts ? s->kind : "send_failed"));
out:
    more = s->more;
    core_log_set_request_id(NULL);
    inf_job_discard(job);
    return more;
}

void
inf_job_release(struct inf_worker_ctx *w, struct core_dbconn *c,
                const struct inf_job *job)
{
    const char *p[3] = { job->conversation_id, job->owner, job->lease_count };
    enum core_status st;
    struct core_dbconn *own = NULL;

    if (!c) {
        own = core_db_acquire(w->db, 2000, &st);
        c = own;
    }
    if (c && core_db_query(c, SQL_RELEASE, 3, p, NULL) != CORE_OK)
        log_warn("could not release lease", "conversation=%s error=\"%s\"",
                 job->conversation_id, c->error);
    if (own)
        core_db_release(w->db, own);
}
