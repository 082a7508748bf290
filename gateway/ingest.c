/*
 * Group-commit ingest; see ingest.h for the design.
 */
#include "gateway/ingest.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "analytics/feedback.h"
#include "analytics/pseudonym.h"
#include "core/log.h"
#include "core/metrics.h"
#include "inference/pool.h"

#define INGEST_MAX_JOBS   512         /* requests per transaction */
#define INGEST_MAX_JSON   (64u << 20) /* bytes per transaction */
#define INGEST_ACQUIRE_MS 2000
#define INGEST_SLOW_S     1.0 /* a batch slower than this is logged */
/* At most this many conversations claimed in a batch's round trip (the
 * rest by the dispatcher): the claim loads each one's context before the
 * flush, which the batch's acks wait for. */
#define INGEST_CLAIM_MAX 16

static const char SQL_INGEST[] =
    "SELECT idx, queued, ready FROM parley_ingest($1::jsonb)";
/* A batch of plain items (plain_item()): the same rows, from typed arrays,
 * at a fraction of the fixed cost. Messages alone take the function of
 * migration 0010 (cheaper still: no dedupe key, status or event data);
 * with statuses, that of migration 0011. */
static const char SQL_INGEST_MESSAGES[] =
    "SELECT idx, queued, ready FROM parley_ingest_messages($1::text[],"
    " $2::text[], $3::text[], $4::text[], $5::text[], $6::int, $7::text[],"
    " $8::bigint[], $9::text[], $10::text[], $11::text[], $12::jsonb[],"
    " $13::text[])";
static const char SQL_INGEST_PLAIN[] =
    "SELECT idx, queued, ready FROM parley_ingest_plain($1::text[],"
    " $2::text[], $3::text[], $4::text[], $5::text[], $6::int, $7::text[],"
    " $8::text[], $9::text[], $10::text[], $11::bigint[], $12::text[],"
    " $13::text[], $14::text[], $15::int[], $16::int[], $17::bigint[],"
    " $18::jsonb[], $19::jsonb[], $20::text[])";

/* parley_ingest_plain()'s parameters, in order; P_KV is a scalar. */
enum plain_col {
    P_PLATFORM,
    P_CHANNEL,
    P_UID,
    P_PHONE,
    P_PSEUDO,
    P_KV,
    P_ETYPE,
    P_KEY,
    P_EID,
    P_CTX,
    P_TS,
    P_KIND,
    P_BODY,
    P_MEDIA,
    P_RANK,
    P_ECODE,
    P_WM,
    P_RAW,
    P_DATA,
    P_RID,
    P_NCOLS
};

/* parley_ingest_messages()'s parameters: a subset of the columns. */
static const enum plain_col message_cols[] = {
    P_PLATFORM, P_CHANNEL, P_UID,  P_PHONE, P_PSEUDO, P_KV, P_EID,
    P_TS,       P_KIND,    P_BODY, P_MEDIA, P_RAW,    P_RID
};

enum batch_kind {
    BATCH_MIXED,    /* parley_ingest() */
    BATCH_MESSAGES, /* plain messages: parley_ingest_messages() */
    BATCH_PLAIN     /* plain messages and statuses: parley_ingest_plain() */
};

/* Beyond this many messages x statuses, batch_kind() does not look for a
 * status on a message of the same batch, and the batch takes the general
 * path. */
#define INGEST_PLAIN_PAIRS 65536

struct gw_ingest {
    const struct core_config *cfg;
    struct core_db *db;
    struct inf_pool *pool;  /* NULL: no workers in this process */
    atomic_int flush_apart; /* commit async, then flush: store_batch */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct gw_ingest_job *head, *tail;
    int stopping;

    pthread_t *threads;
    int nthreads;

    pthread_mutex_t key_mu;
    int key_loaded;
    struct ana_pseudonym_key key;

    struct ana_feedback_map fbmap; /* reaction emoji -> polarity */
    struct core_metric *m_batch;
    struct core_metric *m_commit;
    struct core_metric *m_calls; /* by function: how often the fast path */
};

static const char *
etype_of(const struct adp_event *ev, const char **store, int *queue)
{
    *store = NULL;
    *queue = 0;
    switch (ev->kind) {
    case ADP_EV_MESSAGE:
        *store = "in";
        *queue = 1;
        return "message_received";
    case ADP_EV_INTERACTIVE:
        if (ev->payload && strncmp(ev->payload, "parley_fb:", 10) == 0)
            return "feedback";
        *store = "in";
        *queue = 1;
        return "button_clicked";
    case ADP_EV_REACTION:
        return ev->removed ? "reaction_removed" : "reaction_added";
    case ADP_EV_STATUS:
        return adp_status_str(ev->status);
    case ADP_EV_REFERRAL:
        return "referral";
    case ADP_EV_OPT_OUT:
        return "opt_out";
    case ADP_EV_OPT_IN:
        return "opt_in";
    case ADP_EV_ECHO:
        *store = "out";
        return "message_echo";
    case ADP_EV_UNKNOWN:
        return "unknown";
    }
    return "unknown";
}

static void
add_str(cJSON *o, const char *k, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, k, v);
}

static cJSON *
referral_json(const struct adp_referral *r)
{
    cJSON *o = cJSON_CreateObject();

    if (!o)
        return NULL;
    add_str(o, "source_type", r->source_type);
    add_str(o, "type", r->type);
    add_str(o, "source_id", r->source_id);
    add_str(o, "source_url", r->source_url);
    add_str(o, "headline", r->headline);
    add_str(o, "body", r->body);
    add_str(o, "media_type", r->media_type);
    add_str(o, "media_url", r->media_url);
    add_str(o, "ctwa_clid", r->ctwa_clid);
    add_str(o, "ad_id", r->ad_id);
    add_str(o, "ref", r->ref);
    return o;
}

/* Event details that have no column of their own. */
static cJSON *
data_json(const struct adp_event *ev, const struct ana_feedback_map *fb)
{
    cJSON *d = cJSON_CreateObject();

    if (!d)
        return NULL;
    if (ev->kind == ADP_EV_REACTION && ev->emoji && !ev->removed && fb)
        cJSON_AddNumberToObject(d, "polarity",
                                ana_feedback_polarity(fb, ev->emoji));
    add_str(d, "payload", ev->payload);
    add_str(d, "emoji", ev->emoji);
    add_str(d, "title", ev->kind == ADP_EV_INTERACTIVE ? ev->text : NULL);
    add_str(d, "error_title", ev->error_title);
    if (ev->error_code)
        cJSON_AddNumberToObject(d, "error_code", ev->error_code);
    if (ev->watermark_ms)
        cJSON_AddNumberToObject(d, "watermark_ms", (double)ev->watermark_ms);
    if (ev->kind == ADP_EV_MESSAGE)
        add_str(d, "msg_type", adp_msg_type_str(ev->msg_type));
    if (ev->has_referral)
        cJSON_AddItemToObject(d, "referral", referral_json(&ev->referral));
    /* Messages keep their raw item in messages.raw; other kinds here. */
    if (ev->raw && ev->kind != ADP_EV_MESSAGE && ev->kind != ADP_EV_ECHO &&
        (ev->kind != ADP_EV_INTERACTIVE ||
         (ev->payload && strncmp(ev->payload, "parley_fb:", 10) == 0)))
        cJSON_AddItemReferenceToObject(d, "raw", (cJSON *)(uintptr_t)ev->raw);
    return d;
}

enum core_status
gw_ingest_item_json(struct core_buf *out, int idx, const struct adp_event *ev,
                    const char *pseudonym, int key_version,
                    const char *request_id, const struct ana_feedback_map *fb)
{
    cJSON *o = cJSON_CreateObject();
    const char *store;
    int queue;
    const char *etype = etype_of(ev, &store, &queue);
    char *s;
    enum core_status st;

    if (!o)
        return CORE_ERR_NOMEM;
    cJSON_AddNumberToObject(o, "i", idx);
    cJSON_AddStringToObject(o, "etype", etype);
    add_str(o, "platform", ev->platform);
    add_str(o, "channel", ev->channel);
    add_str(o, "uid", ev->user_id);
    add_str(o, "phone", ev->user_phone);
    if (ev->user_id)
        add_str(o, "pseudo", pseudonym);
    cJSON_AddNumberToObject(o, "kv", key_version);
    add_str(o, "eid", ev->event_id);
    add_str(o, "key", ev->dedupe_key);
    if (ev->platform_ts_ms > 0)
        cJSON_AddNumberToObject(o, "ts", (double)ev->platform_ts_ms);
    add_str(o, "ctx", ev->context_id);
    if (store) {
        cJSON_AddStringToObject(o, "store", store);
        cJSON_AddStringToObject(o, "msg",
                                ev->kind == ADP_EV_INTERACTIVE
                                    ? "interactive"
                                    : adp_msg_type_str(ev->msg_type));
        add_str(o, "body", ev->text);
        add_str(o, "media", ev->media_id);
        if (ev->raw)
            cJSON_AddItemReferenceToObject(o, "raw",
                                           (cJSON *)(uintptr_t)ev->raw);
    }
    cJSON_AddBoolToObject(o, "queue", queue);
    if (ev->kind == ADP_EV_STATUS) {
        cJSON_AddNumberToObject(o, "rank", (int)ev->status);
        if (ev->watermark_ms)
            cJSON_AddNumberToObject(o, "wm", (double)ev->watermark_ms);
        if (ev->error_code)
            cJSON_AddNumberToObject(o, "ecode", ev->error_code);
    }
    if (ev->kind == ADP_EV_REFERRAL && ev->has_referral)
        cJSON_AddItemToObject(o, "ref", referral_json(&ev->referral));
    cJSON_AddItemToObject(o, "data", data_json(ev, fb));
    add_str(o, "rid", request_id);
    s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return CORE_ERR_NOMEM;
    st = core_buf_adds(out, s);
    free(s);
    return st;
}

/*
 * A message that arrived with ad attribution also yields a "referral" item
 * pointing at that message, so the referral is one event and one
 * attribution row.
 */
static enum core_status
referral_item_json(struct core_buf *out, int idx, const struct adp_event *ev,
                   const char *pseudonym, int key_version, const char *rid,
                   const struct ana_feedback_map *fb)
{
    struct adp_event r = *ev;
    char key[512];

    r.kind = ADP_EV_REFERRAL;
    snprintf(key, sizeof(key), "%s#referral", ev->dedupe_key);
    r.dedupe_key = key;
    r.context_id = ev->event_id;
    return gw_ingest_item_json(out, idx, &r, pseudonym, key_version, rid, fb);
}

/*
 * An item parley_ingest_plain() stores exactly as parley_ingest() does:
 * - a plain message: an inbound message with a user and a channel, keyed
 *   by its own platform id, with no reply context, referral, or detail
 *   beyond its type (its event's data is then {"msg_type": ...}, which
 *   the function builds);
 * - a plain status: with a user, a channel, a dedupe key, and the
 *   platform id of the message it reports on or a watermark (Messenger's
 *   and Instagram's "all up to then").
 */
static bool
plain_item(const struct adp_event *ev)
{
    if (!ev->platform || !ev->channel || !ev->user_id || !ev->dedupe_key ||
        ev->has_referral || ev->payload || ev->emoji)
        return false;
    if (ev->kind == ADP_EV_STATUS)
        return (ev->context_id || ev->watermark_ms > 0) &&
               ev->status != ADP_STATUS_NONE;
    return ev->kind == ADP_EV_MESSAGE && !ev->watermark_ms && ev->event_id &&
           strcmp(ev->event_id, ev->dedupe_key) == 0 && !ev->context_id &&
           !ev->error_title && !ev->error_code;
}

/* Whether a platform has both watermarks and statuses by message id among
 * the batch's statuses: parley_ingest_plain() would update a row twice in
 * one statement (only one UPDATE takes effect). */
static bool
watermarks_meet_ids(struct gw_ingest_job **jobs, int njobs)
{
    const char *wm[8] = { NULL }, *id[8] = { NULL };
    size_t nwm = 0, nid = 0, a, b, e;
    int j;

    for (j = 0; j < njobs; j++)
        for (e = 0; e < jobs[j]->batch->n; e++) {
            const struct adp_event *ev = &jobs[j]->batch->events[e];
            const char **set = ev->watermark_ms > 0 ? wm : id;
            size_t *n = ev->watermark_ms > 0 ? &nwm : &nid;

            if (ev->kind != ADP_EV_STATUS)
                continue;
            for (a = 0; a < *n && strcmp(set[a], ev->platform) != 0; a++)
                ;
            if (a == *n && *n == 8)
                return true; /* more platforms than kept: assume they meet */
            if (a == *n)
                set[(*n)++] = ev->platform;
        }
    for (a = 0; a < nwm; a++)
        for (b = 0; b < nid; b++)
            if (strcmp(wm[a], id[b]) == 0)
                return true;
    return false;
}

/* Which function stores the batch: every item plain, no status about a
 * message of the same batch (parley_ingest_plain() could not see that row
 * to raise its status), and no platform with both kinds of status
 * (watermarks_meet_ids()). */
static enum batch_kind
batch_kind(struct gw_ingest_job **jobs, int njobs)
{
    int j, j2;
    size_t e, e2, nmsg = 0, nstatus = 0;

    for (j = 0; j < njobs; j++)
        for (e = 0; e < jobs[j]->batch->n; e++) {
            const struct adp_event *ev = &jobs[j]->batch->events[e];

            if (!plain_item(ev))
                return BATCH_MIXED;
            if (ev->kind == ADP_EV_STATUS)
                nstatus++;
            else
                nmsg++;
        }
    if (nstatus && watermarks_meet_ids(jobs, njobs))
        return BATCH_MIXED;
    if (!nstatus)
        return BATCH_MESSAGES;
    if (!nmsg)
        return BATCH_PLAIN;
    if (nmsg * nstatus > INGEST_PLAIN_PAIRS)
        return BATCH_MIXED;
    for (j = 0; j < njobs; j++)
        for (e = 0; e < jobs[j]->batch->n; e++) {
            const struct adp_event *st = &jobs[j]->batch->events[e];

            if (st->kind != ADP_EV_STATUS || !st->context_id)
                continue;
            for (j2 = 0; j2 < njobs; j2++)
                for (e2 = 0; e2 < jobs[j2]->batch->n; e2++) {
                    const struct adp_event *m = &jobs[j2]->batch->events[e2];

                    if (m->kind == ADP_EV_MESSAGE &&
                        strcmp(m->platform, st->platform) == 0 &&
                        strcmp(m->event_id, st->context_id) == 0)
                        return BATCH_MIXED;
                }
        }
    return BATCH_PLAIN;
}

/* Append one element to a PostgreSQL array literal being built in b
 * ("{" first, "}" by the caller): NULL, or the string quoted. */
static enum core_status
array_add(struct core_buf *b, const char *v)
{
    enum core_status st = b->len > 1 ? core_buf_adds(b, ",") : CORE_OK;
    const char *p, *q;

    if (st == CORE_OK)
        st = core_buf_adds(b, v ? "\"" : "NULL");
    if (st != CORE_OK || !v)
        return st;
    for (p = v; st == CORE_OK && *p; p = q) {
        q = p + strcspn(p, "\"\\");
        st = core_buf_add(b, p, (size_t)(q - p));
        if (st == CORE_OK && *q) {
            char esc[2] = { '\\', *q++ };

            st = core_buf_add(b, esc, 2);
        }
    }
    return st == CORE_OK ? core_buf_adds(b, "\"") : st;
}

/* One item's values, appended to the arrays in col that the call uses. */
static enum core_status
plain_row(struct core_buf *col, const bool *used, const struct adp_event *ev,
          const char *pseudo, const char *rid,
          const struct ana_feedback_map *fb)
{
    char ts[24], rank[8], ecode[16], wm[24];
    char *raw = NULL, *data = NULL;
    const char *v[P_NCOLS] = { NULL };
    const char *store;
    int queue, k;
    enum core_status st = CORE_OK;

    snprintf(ts, sizeof(ts), "%lld", (long long)ev->platform_ts_ms);
    snprintf(rank, sizeof(rank), "%d",
             ev->kind == ADP_EV_STATUS ? (int)ev->status : 0);
    snprintf(ecode, sizeof(ecode), "%d", ev->error_code);
    v[P_ETYPE] = etype_of(ev, &store, &queue);
    if (ev->kind == ADP_EV_STATUS) {
        cJSON *d = data_json(ev, fb);

        data = d ? cJSON_PrintUnformatted(d) : NULL;
        cJSON_Delete(d);
        if (!data)
            return CORE_ERR_NOMEM;
        v[P_CTX] = ev->context_id;
        v[P_ECODE] = ev->error_code ? ecode : NULL;
        snprintf(wm, sizeof(wm), "%lld", (long long)ev->watermark_ms);
        v[P_WM] = ev->watermark_ms > 0 ? wm : NULL;
    } else {
        if (ev->raw && !(raw = cJSON_PrintUnformatted(ev->raw)))
            return CORE_ERR_NOMEM;
        v[P_KIND] = adp_msg_type_str(ev->msg_type);
        v[P_BODY] = ev->text;
        v[P_MEDIA] = ev->media_id;
    }
    v[P_PLATFORM] = ev->platform;
    v[P_CHANNEL] = ev->channel;
    v[P_UID] = ev->user_id;
    v[P_PHONE] = ev->user_phone;
    v[P_PSEUDO] = pseudo;
    v[P_KEY] = ev->dedupe_key;
    v[P_EID] = ev->event_id;
    v[P_TS] = ts;
    v[P_RANK] = rank;
    v[P_RAW] = raw;
    v[P_DATA] = data;
    v[P_RID] = rid;
    for (k = 0; k < P_NCOLS && st == CORE_OK; k++)
        if (k != P_KV && used[k]) /* P_KV: a scalar, set once per batch */
            st = array_add(&col[k], v[k]);
    free(raw);
    free(data);
    return st;
}

/* Once, before the first batch: the pseudonym key, and whether batches
 * may commit apart from their flush. */
static enum core_status
ensure_ready(struct gw_ingest *in)
{
    struct core_dbconn *c;
    enum core_status st = CORE_OK;
    bool apart = false;

    pthread_mutex_lock(&in->key_mu);
    if (!in->key_loaded) {
        c = core_db_acquire(in->db, INGEST_ACQUIRE_MS, &st);
        if (c) {
            st = ana_pseudonym_key_load(c, in->cfg->pseudonym_key, &in->key);
            if (st == CORE_OK)
                st = core_db_flush_apart_allowed(c, &apart);
            core_db_release(in->db, c);
        }
        in->key_loaded = st == CORE_OK;
        if (in->key_loaded) {
            atomic_store(&in->flush_apart, apart);
            if (!apart)
                log_warn("ingest: the pool claims after the flush, not the "
                         "commit",
                         "reason=\"no EXECUTE on pg_logical_emit_message\"");
        }
    }
    pthread_mutex_unlock(&in->key_mu);
    return st;
}

/* Build the batch's JSON array; owners[i] maps item index to its job. */
static enum core_status
build_batch(struct gw_ingest *in, struct gw_ingest_job **jobs, int njobs,
            struct core_buf *json, int **owners, int *nitems)
{
    char pseudo[ANA_PSEUDONYM_LEN + 1];
    int j, cap = 0, n = 0, *own = NULL;
    size_t e;
    enum core_status st = core_buf_adds(json, "[");

    for (j = 0; j < njobs; j++)
        cap += 2 * (int)jobs[j]->batch->n;
    own = calloc((size_t)cap + 1, sizeof(*own));
    if (!own)
        return CORE_ERR_NOMEM;
    for (j = 0; j < njobs && st == CORE_OK; j++) {
        const struct adp_batch *b = jobs[j]->batch;

        for (e = 0; e < b->n && st == CORE_OK; e++) {
            const struct adp_event *ev = &b->events[e];

            pseudo[0] = '\0';
            if (ev->user_id)
                ana_pseudonym(&in->key, ev->platform, ev->user_id, pseudo);
            if (n > 0)
                st = core_buf_adds(json, ",");
            if (st == CORE_OK)
                st = gw_ingest_item_json(json, n, ev, pseudo, in->key.version,
                                         jobs[j]->request_id, &in->fbmap);
            own[n++] = j;
            if (st == CORE_OK && ev->has_referral &&
                (ev->kind == ADP_EV_MESSAGE ||
                 ev->kind == ADP_EV_INTERACTIVE)) {
                st = core_buf_adds(json, ",");
                if (st == CORE_OK)
                    st =
                        referral_item_json(json, n, ev, pseudo, in->key.version,
                                           jobs[j]->request_id, &in->fbmap);
                own[n++] = j;
            }
        }
    }
    if (st == CORE_OK)
        st = core_buf_adds(json, "]");
    *owners = own;
    *nitems = n;
    if (st != CORE_OK) {
        free(own);
        *owners = NULL;
    }
    return st;
}

/* The batch as parley_ingest_plain()'s parameters (batch_kind()), only
 * the columns used: parley_ingest_messages() takes a subset
 * (message_cols); owners[i] maps item index to its job. */
static enum core_status
build_plain(struct gw_ingest *in, struct gw_ingest_job **jobs, int njobs,
            const bool *used, struct core_buf *col, int **owners, int *nitems)
{
    char pseudo[ANA_PSEUDONYM_LEN + 1];
    int j, k, cap = 0, n = 0, *own;
    size_t e;
    enum core_status st = CORE_OK;

    for (j = 0; j < njobs; j++)
        cap += (int)jobs[j]->batch->n;
    own = calloc((size_t)cap + 1, sizeof(*own));
    if (!own)
        return CORE_ERR_NOMEM;
    for (k = 0; k < P_NCOLS && st == CORE_OK; k++)
        if (used[k])
            st = k == P_KV ? core_buf_printf(&col[k], "%d", in->key.version)
                           : core_buf_adds(&col[k], "{");
    for (j = 0; j < njobs && st == CORE_OK; j++) {
        const struct adp_batch *b = jobs[j]->batch;

        for (e = 0; e < b->n && st == CORE_OK; e++) {
            const struct adp_event *ev = &b->events[e];

            ana_pseudonym(&in->key, ev->platform, ev->user_id, pseudo);
            st = plain_row(col, used, ev, pseudo, jobs[j]->request_id,
                           &in->fbmap);
            own[n++] = j;
        }
    }
    for (k = 0; k < P_NCOLS && st == CORE_OK; k++)
        if (k != P_KV && used[k])
            st = core_buf_adds(&col[k], "}");
    if (st != CORE_OK) {
        free(own);
        return st;
    }
    *owners = own;
    *nitems = n;
    return CORE_OK;
}

/* The SQL call that stores a batch, its parameters pointing into col. */
struct call {
    const char *sql;
    const char *label; /* for parley_ingest_batches_total */
    const char *p[P_NCOLS];
    int np;
};

/* Pick the function for the batch (batch_kind()) and build its
 * parameters in col; owners[i] maps item index to its job. */
static enum core_status
build_call(struct gw_ingest *in, struct gw_ingest_job **jobs, int njobs,
           struct core_buf *col, struct call *call, int **owners, int *nitems)
{
    enum batch_kind kind = batch_kind(jobs, njobs);
    const enum plain_col *cols = NULL; /* NULL: all, in order */
    bool used[P_NCOLS];
    enum core_status st;
    int i;

    if (kind == BATCH_MIXED) {
        st = build_batch(in, jobs, njobs, &col[0], owners, nitems);
        call->sql = SQL_INGEST;
        call->label = "function=\"parley_ingest\"";
        call->np = 1;
        call->p[0] = col[0].data;
        return st;
    }
    if (kind == BATCH_MESSAGES) {
        cols = message_cols;
        call->sql = SQL_INGEST_MESSAGES;
        call->label = "function=\"parley_ingest_messages\"";
        call->np = (int)(sizeof(message_cols) / sizeof(message_cols[0]));
    } else {
        call->sql = SQL_INGEST_PLAIN;
        call->label = "function=\"parley_ingest_plain\"";
        call->np = P_NCOLS;
    }
    for (i = 0; i < P_NCOLS; i++)
        used[i] = !cols;
    for (i = 0; cols && i < call->np; i++)
        used[cols[i]] = true;
    st = build_plain(in, jobs, njobs, used, col, owners, nitems);
    for (i = 0; i < call->np; i++)
        call->p[i] = col[cols ? (int)cols[i] : i].data;
    return st;
}

/* Count each job's stored, queued and ready items from the function's
 * rows (idx, queued, ready); returns how many items made a conversation
 * ready. */
static int
tally(const PGresult *r, struct gw_ingest_job **jobs, const int *owners,
      int nitems)
{
    int i, ready = 0;

    for (i = 0; i < PQntuples(r); i++) {
        long idx = strtol(PQgetvalue(r, i, 0), NULL, 10);

        if (idx < 0 || idx >= nitems)
            continue;
        jobs[owners[idx]]->stored++;
        if (PQgetvalue(r, i, 1)[0] == 't')
            jobs[owners[idx]]->queued++;
        if (PQgetvalue(r, i, 2)[0] == 't') {
            jobs[owners[idx]]->ready++;
            ready++;
        }
    }
    return ready;
}

/* Inbound messages in the batch: an upper bound of the conversations it
 * makes ready. */
static int
batch_messages(struct gw_ingest_job **jobs, int njobs)
{
    const char *store;
    int i, queue, n = 0;
    size_t k;

    for (i = 0; i < njobs; i++)
        for (k = 0; k < jobs[i]->batch->n; k++) {
            (void)etype_of(&jobs[i]->batch->events[k], &store, &queue);
            n += queue;
        }
    return n;
}

/* Store the call; with room in the pool, claim in the same round trip
 * (inf_pool_claim_begin: a transaction of its own, after the batch's
 * commit). *claimed: rows claimed, -1 if it failed or did not run;
 * *asked: slots it had. */
static enum core_status
store_call(struct gw_ingest *in, struct core_dbconn *c, int apart, int nmsg,
           const struct call *call, PGresult **r, int *asked, int *claimed)
{
    struct inf_claim cl;
    enum core_status st;

    *claimed = -1;
    /* One more than the batch can make ready: a claim that fills its
     * room may have left work behind, and wakes the dispatcher. */
    *asked =
        nmsg > 0
            ? inf_pool_claim_begin(
                  in->pool,
                  nmsg < INGEST_CLAIM_MAX ? nmsg + 1 : INGEST_CLAIM_MAX, &cl)
            : 0;
    if (*asked == 0)
        return apart ? core_db_query_flush_apart(c, call->sql, call->np,
                                                 call->p, r)
                     : core_db_query(c, call->sql, call->np, call->p, r);
    st = core_db_query_then(c, apart, call->sql, call->np, call->p, r, &cl.stmt,
                            NULL);
    *claimed = inf_pool_claim_end(in->pool, &cl);
    return st;
}

static enum core_status
store_batch(struct gw_ingest *in, struct gw_ingest_job **jobs, int njobs)
{
    struct core_buf col[P_NCOLS]; /* the JSON in col[0] for parley_ingest */
    struct core_dbconn *c = NULL;
    PGresult *r = NULL;
    int *owners = NULL, nitems = 0, i, attempt, ready = 0, apart = 0;
    int nmsg = in->pool ? batch_messages(jobs, njobs) : 0, asked = 0;
    int claimed = -1;
    struct call call;
    enum core_status st;
    struct timespec t0, t1;
    double secs;

    for (i = 0; i < njobs; i++)
        jobs[i]->stored = jobs[i]->queued = jobs[i]->ready = 0;
    for (i = 0; i < P_NCOLS; i++)
        core_buf_init(&col[i], INGEST_MAX_JSON);
    st = ensure_ready(in);
    if (st == CORE_OK)
        st = build_call(in, jobs, njobs, col, &call, &owners, &nitems);
    if (st != CORE_OK)
        goto out;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (attempt = 0; attempt < 2; attempt++) {
        c = core_db_acquire(in->db, INGEST_ACQUIRE_MS, &st);
        if (!c)
            goto out;
        apart = atomic_load(&in->flush_apart);
        st = store_call(in, c, apart, nmsg, &call, &r, &asked, &claimed);
        if (st == CORE_OK)
            break;
        log_warn("ingest batch failed",
                 "attempt=%d jobs=%d sqlstate=%s "
                 "error=\"%s\"",
                 attempt + 1, njobs, c->sqlstate, c->error);
        PQclear(r);
        r = NULL;
        /* Retry once for serialisation failures, deadlocks, and a pooled
         * connection that died unnoticed (server restarted while idle):
         * the next acquire opens a fresh one, or fails fast if the server
         * is really down. */
        if (st != CORE_ERR_UNAVAILABLE && strcmp(c->sqlstate, "40001") != 0 &&
            strcmp(c->sqlstate, "40P01") != 0)
            break;
        core_db_release(in->db, c);
        c = NULL;
    }
    if (st != CORE_OK)
        goto out;
    ready = tally(r, jobs, owners, nitems);
    /* Committed and visible: this process's pool may claim now (the other
     * processes were notified at the commit), unless the claim in the
     * round trip took all there was (fewer rows than it had room for). */
    if (ready && in->pool && !(claimed >= 0 && claimed < asked))
        inf_pool_wake(in->pool);
    if (apart) {
        st = core_db_flush_wait(c);
        if (st == CORE_ERR_DB) {
            /* Committed, not known to be durable: the platform is to retry
             * (a duplicate by then), and later batches commit synchronously.
             * (ensure_ready() checked the privilege; this is a fallback.) */
            log_warn("ingest: cannot flush apart, committing synchronously "
                     "from now on",
                     "sqlstate=%s error=\"%s\"", c->sqlstate, c->error);
            atomic_store(&in->flush_apart, 0);
            st = CORE_ERR_UNAVAILABLE;
        }
        if (st != CORE_OK)
            goto out;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    secs = (double)(t1.tv_sec - t0.tv_sec) +
           (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    core_metric_observe(in->m_commit, NULL, secs);
    core_metric_observe(in->m_batch, NULL, njobs);
    core_metric_add(in->m_calls, call.label, 1);
    if (secs > INGEST_SLOW_S)
        log_warn("slow ingest batch", "jobs=%d items=%d seconds=%.3f", njobs,
                 nitems, secs);
out:
    PQclear(r);
    if (c)
        core_db_release(in->db, c);
    free(owners);
    for (i = 0; i < P_NCOLS; i++)
        core_buf_done(&col[i]);
    return st;
}

static void
finish(struct gw_ingest_job *job, enum core_status st)
{
    job->status = st;
    job->done(job);
}

/* Answer stored (or failed) requests. */
static void
answer(struct gw_ingest_job **jobs, int njobs, enum core_status st)
{
    int i;

    for (i = 0; i < njobs; i++)
        finish(jobs[i], st);
}

static void
process(struct gw_ingest *in, struct gw_ingest_job **jobs, int njobs)
{
    enum core_status st;
    int i;

    st = store_batch(in, jobs, njobs);
    if (st == CORE_ERR_DB && njobs > 1) {
        /* One request's data broke the batch: store each alone so only
         * that one fails. */
        for (i = 0; i < njobs; i++)
            answer(&jobs[i], 1, store_batch(in, &jobs[i], 1));
        return;
    }
    answer(jobs, njobs, st);
}

static void *
committer_main(void *arg)
{
    struct gw_ingest *in = arg;
    struct gw_ingest_job *jobs[INGEST_MAX_JOBS];
    int n;

    core_thread_name("committer");
    for (;;) {
        pthread_mutex_lock(&in->mu);
        while (!in->head && !in->stopping)
            pthread_cond_wait(&in->cv, &in->mu);
        if (!in->head && in->stopping) {
            pthread_mutex_unlock(&in->mu);
            break;
        }
        for (n = 0; n < INGEST_MAX_JOBS && in->head; n++) {
            jobs[n] = in->head;
            in->head = in->head->next;
        }
        if (!in->head)
            in->tail = NULL;
        pthread_mutex_unlock(&in->mu);
        process(in, jobs, n);
    }
    return NULL;
}

struct gw_ingest *
gw_ingest_new(const struct core_config *cfg, struct core_db *db, int committers,
              struct inf_pool *pool)
{
    static const double batch_buckets[] = { 1,  2,  4,   8,   16,
                                            32, 64, 128, 256, 512 };
    struct gw_ingest *in = calloc(1, sizeof(*in));
    int i;

    if (!in)
        return NULL;
    in->cfg = cfg;
    in->db = db;
    in->pool = pool;
    atomic_init(&in->flush_apart, 0);
    ana_feedback_map_default(&in->fbmap);
    if (cfg->feedback_emoji &&
        ana_feedback_map_parse(&in->fbmap, cfg->feedback_emoji) != CORE_OK) {
        log_error("invalid PARLEY_FEEDBACK_EMOJI", "%s", "");
        free(in);
        return NULL;
    }
    pthread_mutex_init(&in->mu, NULL);
    pthread_cond_init(&in->cv, NULL);
    pthread_mutex_init(&in->key_mu, NULL);
    in->m_batch = core_metric_register(
        CORE_METRIC_HISTOGRAM, "parley_ingest_batch_requests",
        "Webhook requests stored per group-commit transaction", batch_buckets,
        sizeof(batch_buckets) / sizeof(batch_buckets[0]));
    in->m_calls = core_metric_register(
        CORE_METRIC_COUNTER, "parley_ingest_batches_total",
        "Ingest batches stored, by the SQL function that stored them", NULL, 0);
    in->m_commit = core_metric_register(
        CORE_METRIC_HISTOGRAM, "parley_ingest_commit_seconds",
        "Time to store and commit one ingest batch", NULL, 0);
    in->threads = calloc((size_t)committers, sizeof(pthread_t));
    if (!in->threads) {
        free(in);
        return NULL;
    }
    for (i = 0; i < committers; i++) {
        if (pthread_create(&in->threads[i], NULL, committer_main, in) != 0)
            break;
        in->nthreads++;
    }
    return in;
}

void
gw_ingest_free(struct gw_ingest *in)
{
    int i;

    if (!in)
        return;
    pthread_mutex_lock(&in->mu);
    in->stopping = 1;
    pthread_cond_broadcast(&in->cv);
    pthread_mutex_unlock(&in->mu);
    for (i = 0; i < in->nthreads; i++)
        pthread_join(in->threads[i], NULL);
    free(in->threads);
    pthread_mutex_destroy(&in->mu);
    pthread_cond_destroy(&in->cv);
    pthread_mutex_destroy(&in->key_mu);
    free(in);
}

void
gw_ingest_submit(struct gw_ingest *in, struct gw_ingest_job *job)
{
    job->next = NULL;
    pthread_mutex_lock(&in->mu);
    if (in->tail)
        in->tail->next = job;
    else
        in->head = job;
    in->tail = job;
    pthread_mutex_unlock(&in->mu);
    pthread_cond_signal(&in->cv); /* after the unlock: no hand-off stall */
}
