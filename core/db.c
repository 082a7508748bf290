/* PostgreSQL pool and helpers; see db.h for the design. */
#include "core/db.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"

struct core_db {
    char *conninfo;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct core_dbconn **free_list; /* idle, possibly unopened (pg NULL) */
    int nfree;
    int size;
    int in_use;
    long waits;
};

const char *
core_db_default_url(void)
{
    return "postgresql://postgres@127.0.0.1:54329/parley";
}

static void
set_error(struct core_dbconn *c, const char *msg, const char *state)
{
    size_t n;

    snprintf(c->error, sizeof(c->error), "%s", msg ? msg : "unknown error");
    n = strlen(c->error);
    while (n > 0 && (c->error[n - 1] == '\n' || c->error[n - 1] == ' '))
        c->error[--n] = '\0';
    for (n = 0; c->error[n]; n++)
        if (c->error[n] == '\n' || c->error[n] == '\t' || c->error[n] == '"')
            c->error[n] = ' ';
    snprintf(c->sqlstate, sizeof(c->sqlstate), "%s", state ? state : "");
}

/* Server notices (e.g. "terminating connection due to administrator
 * command") go to our log, not raw to stderr. */
static void
on_notice(void *arg, const char *message)
{
    char line[256];
    size_t n;

    (void)arg;
    snprintf(line, sizeof(line), "%s", message);
    for (n = 0; line[n]; n++)
        if (line[n] == '\n' || line[n] == '"')
            line[n] = ' ';
    log_info("database notice", "detail=\"%s\"", line);
}

static char instance[96];
static pthread_once_t instance_once = PTHREAD_ONCE_INIT;

static void
instance_init(void)
{
    char host[64] = "localhost";
    struct timespec ts;

    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(instance, sizeof(instance), "%s:%ld:%lx", host, (long)getpid(),
             (unsigned long)ts.tv_nsec);
}

const char *
core_db_instance(void)
{
    pthread_once(&instance_once, instance_init);
    return instance;
}

static enum core_status
conn_open(struct core_dbconn *c, const char *conninfo)
{
    const char *keys[] = { "dbname", "connect_timeout", "application_name",
                           "keepalives_idle", NULL };
    const char *vals[] = { conninfo, "3", "parley", "30", NULL };
    const char *inst[1];
    PGresult *r;

    c->pg = PQconnectdbParams(keys, vals, 1);
    c->nsql = 0;
    c->broken = false;
    if (!c->pg) {
        set_error(c, "out of memory", NULL);
        return CORE_ERR_NOMEM;
    }
    if (PQstatus(c->pg) != CONNECTION_OK) {
        set_error(c, PQerrorMessage(c->pg), "08006");
        PQfinish(c->pg);
        c->pg = NULL;
        return CORE_ERR_UNAVAILABLE;
    }
    PQsetNoticeProcessor(c->pg, on_notice, NULL);
    /* Generic plans: every statement is prepared once per connection and
     * finds its rows by key, so re-planning per call (custom plans, which
     * PostgreSQL keeps choosing for some statements) is pure cost: measured
     * 1.5-3 ms of planning per UPDATE of the partitioned events table.
     * A generic plan is kept for the connection's life, so one made while
     * a table was nearly empty (a fresh install, a new partition) would
     * scan that table on every call as it grows, until an ANALYZE happens
     * to invalidate it: with sequential scans priced out, plans reach
     * rows through the indexes they were written for (measured: ingest at
     * 64 connections on a fresh database 3,100 -> 5,100-6,400/s). Tables
     * without a usable index are still scanned. */
    r = PQexec(c->pg, "SET plan_cache_mode = force_generic_plan;"
                      " SET enable_seqscan = off");
    PQclear(r);
    /* Names the process to SQL (the NOTIFY payload of parley_ingest). */
    inst[0] = core_db_instance();
    r = PQexecParams(c->pg, "SELECT set_config('parley.instance', $1, false)",
                     1, NULL, inst, NULL, NULL, 0);
    PQclear(r);
    return CORE_OK;
}

struct core_dbconn *
core_dbconn_open(const char *conninfo, enum core_status *st, char *err,
                 size_t errlen)
{
    struct core_dbconn *c = calloc(1, sizeof(*c));

    if (!c) {
        *st = CORE_ERR_NOMEM;
        return NULL;
    }
    *st = conn_open(c, conninfo);
    if (*st != CORE_OK) {
        if (err)
            snprintf(err, errlen, "%s", c->error);
        else
            log_warn("could not connect to database", "error=\"%s\"", c->error);
        free(c);
        return NULL;
    }
    return c;
}

void
core_dbconn_close(struct core_dbconn *c)
{
    if (!c)
        return;
    if (c->pg)
        PQfinish(c->pg);
    free(c);
}

struct core_db *
core_db_new(const char *conninfo, int size)
{
    struct core_db *db = calloc(1, sizeof(*db));
    int i;

    if (!db)
        return NULL;
    db->conninfo = strdup(conninfo);
    /* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers */
    db->free_list = calloc((size_t)size, sizeof(*db->free_list));
    if (!db->conninfo || !db->free_list)
        goto fail;
    for (i = 0; i < size; i++) {
        db->free_list[i] = calloc(1, sizeof(struct core_dbconn));
        if (!db->free_list[i])
            goto fail;
        db->nfree++;
    }
    db->size = size;
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    return db;
fail:
    for (i = 0; i < db->nfree; i++)
        free(db->free_list[i]);
    free(db->free_list);
    free(db->conninfo);
    free(db);
    return NULL;
}

void
core_db_free(struct core_db *db)
{
    int i;

    if (!db)
        return;
    for (i = 0; i < db->nfree; i++) {
        if (db->free_list[i]->pg)
            PQfinish(db->free_list[i]->pg);
        free(db->free_list[i]);
    }
    free(db->free_list);
    free(db->conninfo);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->cv);
    free(db);
}

struct core_dbconn *
core_db_acquire(struct core_db *db, int timeout_ms, enum core_status *st)
{
    struct core_dbconn *c = NULL;
    struct timespec deadline;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&db->mu);
    if (db->nfree == 0)
        db->waits++;
    while (db->nfree == 0) {
        if (pthread_cond_timedwait(&db->cv, &db->mu, &deadline) == ETIMEDOUT &&
            db->nfree == 0) {
            pthread_mutex_unlock(&db->mu);
            *st = CORE_ERR_UNAVAILABLE;
            return NULL;
        }
    }
    c = db->free_list[--db->nfree];
    db->in_use++;
    pthread_mutex_unlock(&db->mu);

    if (c->pg && PQstatus(c->pg) != CONNECTION_OK) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    if (!c->pg) {
        *st = conn_open(c, db->conninfo);
        if (*st != CORE_OK) {
            core_db_release(db, c);
            return NULL;
        }
    }
    *st = CORE_OK;
    return c;
}

void
core_db_release(struct core_db *db, struct core_dbconn *c)
{
    if (!c)
        return;
    if (c->pg && (c->broken || PQstatus(c->pg) != CONNECTION_OK ||
                  PQtransactionStatus(c->pg) != PQTRANS_IDLE)) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->broken = false;
    pthread_mutex_lock(&db->mu);
    db->free_list[db->nfree++] = c;
    db->in_use--;
    pthread_mutex_unlock(&db->mu);
    pthread_cond_signal(&db->cv); /* after the unlock: no hand-off stall */
}

/* Translate a failed result; marks the connection broken when it is gone. */
static enum core_status
result_error(struct core_dbconn *c, PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;

    set_error(c, r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg), state);
    if (PQstatus(c->pg) != CONNECTION_OK || !state ||
        strncmp(state, "08", 2) == 0 || strncmp(state, "57P", 3) == 0) {
        c->broken = true;
        return CORE_ERR_UNAVAILABLE;
    }
    return CORE_ERR_DB;
}

static bool
result_ok(PGresult *r)
{
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;

    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

/* The index of sql's prepared statement on c, preparing it the first
 * time; -1 when the connection's table is full (run it unprepared). */
static enum core_status
prepared(struct core_dbconn *c, const char *sql, int *idx)
{
    char name[16];
    PGresult *r;
    enum core_status st;
    int i;

    for (i = 0; i < c->nsql; i++)
        if (c->sql[i] == sql)
            break;
    if (i == c->nsql && c->nsql < (int)(sizeof(c->sql) / sizeof(c->sql[0]))) {
        snprintf(name, sizeof(name), "p%d", i);
        r = PQprepare(c->pg, name, sql, 0, NULL);
        if (!result_ok(r)) {
            st = result_error(c, r);
            PQclear(r);
            return st;
        }
        PQclear(r);
        c->sql[c->nsql++] = sql;
    }
    *idx = i < c->nsql ? i : -1;
    return CORE_OK;
}

enum core_status
core_db_query(struct core_dbconn *c, const char *sql, int nparams,
              const char *const *params, PGresult **res)
{
    char name[16];
    PGresult *r;
    int i;
    enum core_status st;

    if (res)
        *res = NULL;
    if (!c->pg || c->broken) {
        set_error(c, "no connection", "08003");
        return CORE_ERR_UNAVAILABLE;
    }
    st = prepared(c, sql, &i);
    if (st != CORE_OK)
        return st;
    if (i >= 0) {
        snprintf(name, sizeof(name), "p%d", i);
        r = PQexecPrepared(c->pg, name, nparams, params, NULL, NULL, 0);
    } else {
        r = PQexecParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0);
    }
    if (!result_ok(r)) {
        st = result_error(c, r);
        PQclear(r);
        return st;
    }
    if (res)
        *res = r;
    else
        PQclear(r);
    return CORE_OK;
}

/* Ask the server to stop the running query (its rows are then read and
 * dropped; the query ends in a cancellation error, which is expected). */
static void
stream_cancel(struct core_dbconn *c)
{
    PGcancel *cancel = PQgetCancel(c->pg);
    char buf[256];

    if (cancel) {
        PQcancel(cancel, buf, (int)sizeof(buf));
        PQfreeCancel(cancel);
    }
}

enum core_status
core_db_stream(struct core_dbconn *c, const char *sql, int nparams,
               const char *const *params,
               int (*row)(void *arg, const PGresult *res), void *arg,
               int *stopped)
{
    enum core_status st = CORE_OK;
    PGresult *r;

    *stopped = 0;
    if (!c->pg || c->broken) {
        set_error(c, "no connection", "08003");
        return CORE_ERR_UNAVAILABLE;
    }
    if (!PQsendQueryParams(c->pg, sql, nparams, NULL, params, NULL, NULL, 0) ||
        !PQsetSingleRowMode(c->pg))
        return result_error(c, NULL);
    /* Every result is read, also after a failure or a stop, so that the
     * connection is left idle. */
    while ((r = PQgetResult(c->pg)) != NULL) {
        ExecStatusType s = PQresultStatus(r);
        bool live = st == CORE_OK && *stopped == 0;

        if (live && s == PGRES_SINGLE_TUPLE) {
            *stopped = row(arg, r);
            if (*stopped != 0)
                stream_cancel(c);
        } else if (live && s != PGRES_TUPLES_OK) {
            st = result_error(c, r);
        }
        PQclear(r);
    }
    return st;
}

/* Read the pipeline's results: one per statement, each followed by NULL,
 * then the sync. Every result is consumed, also after a failure. */
static enum core_status
pipeline_read(struct core_dbconn *c, struct core_db_stmt *q, int n)
{
    enum core_status st = CORE_OK;
    PGresult *r;
    int i;

    for (i = 0; i < n; i++) {
        r = PQgetResult(c->pg);
        if (!r) {
            set_error(c, PQerrorMessage(c->pg), NULL);
            c->broken = true;
            return CORE_ERR_UNAVAILABLE;
        }
        if (st == CORE_OK && !result_ok(r)) {
            st = PQresultStatus(r) == PGRES_PIPELINE_ABORTED
                     ? CORE_ERR_DB
                     : result_error(c, r);
            PQclear(r);
        } else if (st == CORE_OK) {
            q[i].res = r;
        } else {
            PQclear(r);
        }
        while ((r = PQgetResult(c->pg)) != NULL) /* end of this statement */
            PQclear(r);
    }
    r = PQgetResult(c->pg); /* the sync */
    if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC) {
        c->broken = true;
        if (st == CORE_OK) {
            set_error(c, "pipeline out of step", "08P01");
            st = CORE_ERR_UNAVAILABLE;
        }
    }
    PQclear(r);
    return st;
}

/* Send q[0..n) and a sync, entering pipeline mode if need be. */
static enum core_status
pipeline_send(struct core_dbconn *c, struct core_db_stmt *q, int n)
{
    char name[16];
    enum core_status st = CORE_OK;
    int i, idx, ok = 1;

    for (i = 0; i < n; i++)
        q[i].res = NULL;
    if (!c->pg || c->broken) {
        set_error(c, "no connection", "08003");
        return CORE_ERR_UNAVAILABLE;
    }
    if (PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF) {
        /* Prepared before, not in it (the caller prepares what it adds to
         * a pipeline already open). */
        for (i = 0; i < n && st == CORE_OK; i++)
            st = prepared(c, q[i].sql, &idx);
        if (st != CORE_OK)
            return st;
        if (!PQenterPipelineMode(c->pg)) {
            set_error(c, PQerrorMessage(c->pg), NULL);
            return CORE_ERR_DB;
        }
    }
    for (i = 0; i < n && ok; i++) {
        (void)prepared(c, q[i].sql, &idx); /* found: no round trip */
        if (idx >= 0) {
            snprintf(name, sizeof(name), "p%d", idx);
            ok = PQsendQueryPrepared(c->pg, name, q[i].nparams, q[i].params,
                                     NULL, NULL, 0);
        } else {
            ok = PQsendQueryParams(c->pg, q[i].sql, q[i].nparams, NULL,
                                   q[i].params, NULL, NULL, 0);
        }
    }
    if (!ok || !PQpipelineSync(c->pg)) {
        set_error(c, PQerrorMessage(c->pg), NULL);
        c->broken = true; /* half a pipeline sent: start afresh */
        return CORE_ERR_UNAVAILABLE;
    }
    return CORE_OK;
}

/* After the last sync was read: back to normal mode; on failure drop the
 * results. */
static enum core_status
pipeline_end(struct core_dbconn *c, struct core_db_stmt *q, int n,
             enum core_status st)
{
    int i;

    if (!PQexitPipelineMode(c->pg))
        c->broken = true;
    if (st != CORE_OK)
        for (i = 0; i < n; i++) {
            PQclear(q[i].res);
            q[i].res = NULL;
        }
    return st;
}

enum core_status
core_db_pipeline(struct core_dbconn *c, struct core_db_stmt *q, int n)
{
    enum core_status st = pipeline_send(c, q, n);

    if (st != CORE_OK)
        return st;
    return pipeline_end(c, q, n, pipeline_read(c, q, n));
}

static const char SQL_ASYNC[] =
    "SELECT set_config('synchronous_commit', 'off', true)";

/* q = { SQL_ASYNC, the caller's statement }: hand over the statement's
 * result, drop set_config's. */
static void
take_statement(struct core_db_stmt *q, PGresult **res)
{
    PQclear(q[0].res);
    if (res)
        *res = q[1].res;
    else
        PQclear(q[1].res);
}

enum core_status
core_db_query_async(struct core_dbconn *c, const char *sql, int nparams,
                    const char *const *params, PGresult **res)
{
    struct core_db_stmt q[2] = { { SQL_ASYNC, 0, NULL, NULL },
                                 { sql, nparams, params, NULL } };
    enum core_status st = core_db_pipeline(c, q, 2);

    if (st != CORE_OK)
        return st;
    take_statement(q, res);
    return CORE_OK;
}

/* A transaction that writes no WAL commits without a flush whatever
 * synchronous_commit says, and an assigned transaction id alone writes
 * none: the transactional message gives it both (any role may call it). */
static const char SQL_FLUSH[] =
    "SELECT pg_logical_emit_message(true, 'parley_flush', '')";

enum core_status
core_db_query_then(struct core_dbconn *c, bool apart, const char *sql,
                   int nparams, const char *const *params, PGresult **res,
                   struct core_db_stmt *then, enum core_status *then_st)
{
    struct core_db_stmt q[2] = { { SQL_ASYNC, 0, NULL, NULL },
                                 { sql, nparams, params, NULL } };
    struct core_db_stmt t[2] = { { SQL_ASYNC, 0, NULL, NULL },
                                 { NULL, 0, NULL, NULL } };
    struct core_db_stmt f = { SQL_FLUSH, 0, NULL, NULL };
    struct core_db_stmt *first = apart ? q : q + 1;
    int nfirst = apart ? 2 : 1;
    enum core_status st = CORE_OK, tst = CORE_ERR_UNAVAILABLE;
    char sqlstate[sizeof(c->sqlstate)], error[sizeof(c->error)];

    if (res)
        *res = NULL;
    if (then) {
        then->res = NULL;
        t[1].sql = then->sql;
        t[1].nparams = then->nparams;
        t[1].params = then->params;
    }
    /* Prepared before the pipeline opens (pipeline_send prepares only
     * the first group's). If `then` cannot be prepared, the first runs
     * without it: it does not depend on `then`. */
    if (then && !c->broken && c->pg &&
        PQpipelineStatus(c->pg) == PQ_PIPELINE_OFF &&
        (prepared(c, SQL_ASYNC, &(int){ 0 }) != CORE_OK ||
         prepared(c, then->sql, &(int){ 0 }) != CORE_OK)) {
        if (then_st)
            *then_st = CORE_ERR_DB;
        then = NULL;
    }
    if (st == CORE_OK && apart)
        st = prepared(c, SQL_FLUSH, &(int){ 0 });
    if (st == CORE_OK)
        st = pipeline_send(c, first, nfirst);
    if (st == CORE_OK && then)
        st = pipeline_send(c, t, 2);
    if (st == CORE_OK && apart)
        st = pipeline_send(c, &f, 1);
    if (st != CORE_OK) {
        if (c->pg && PQpipelineStatus(c->pg) != PQ_PIPELINE_OFF)
            c->broken = true;
        if (then_st)
            *then_st = st;
        return st;
    }
    st = pipeline_read(c, first, nfirst);
    if (then) {
        /* Runs whatever the first's outcome; the first's error is the
         * one the caller reads. */
        memcpy(sqlstate, c->sqlstate, sizeof(sqlstate));
        memcpy(error, c->error, sizeof(error));
        if (!c->broken)
            tst = pipeline_read(c, t, 2);
        if (tst == CORE_OK)
            take_statement(t, &then->res);
        if (st != CORE_OK) {
            memcpy(c->sqlstate, sqlstate, sizeof(sqlstate));
            memcpy(c->error, error, sizeof(error));
        }
        if (then_st)
            *then_st = tst;
    }
    if (st != CORE_OK || !apart) {
        /* Done, or failed: end the pipeline (a failed first's flush
         * transaction runs all the same: read it first). */
        if (apart && !c->broken && pipeline_read(c, &f, 1) == CORE_OK)
            PQclear(f.res);
        st = pipeline_end(c, first, nfirst, st);
        if (st != CORE_OK)
            return st;
        if (res)
            *res = first[nfirst - 1].res;
        else
            PQclear(first[nfirst - 1].res);
        return CORE_OK;
    }
    take_statement(q, res);
    return CORE_OK;
}

enum core_status
core_db_query_flush_apart(struct core_dbconn *c, const char *sql, int nparams,
                          const char *const *params, PGresult **res)
{
    return core_db_query_then(c, true, sql, nparams, params, res, NULL, NULL);
}

enum core_status
core_db_flush_apart_allowed(struct core_dbconn *c, bool *ok)
{
    PGresult *r;
    enum core_status st = core_db_query(
        c,
        "SELECT has_function_privilege("
        "'pg_logical_emit_message(boolean, text, text)', 'EXECUTE')",
        0, NULL, &r);

    if (st == CORE_OK) {
        *ok = PQntuples(r) == 1 && PQgetvalue(r, 0, 0)[0] == 't';
        PQclear(r);
    }
    return st;
}

enum core_status
core_db_flush_wait(struct core_dbconn *c)
{
    struct core_db_stmt f = { SQL_FLUSH, 0, NULL, NULL };
    enum core_status st;

    if (!c->pg || c->broken)
        return CORE_ERR_UNAVAILABLE;
    st = pipeline_end(c, &f, 1, pipeline_read(c, &f, 1));
    PQclear(f.res);
    return st;
}

enum core_status
core_db_exec(struct core_dbconn *c, const char *sql)
{
    PGresult *r;
    enum core_status st = CORE_OK;

    if (!c->pg || c->broken) {
        set_error(c, "no connection", "08003");
        return CORE_ERR_UNAVAILABLE;
    }
    r = PQexec(c->pg, sql);
    if (!result_ok(r))
        st = result_error(c, r);
    PQclear(r);
    return st;
}

enum core_status
core_db_begin(struct core_dbconn *c)
{
    return core_db_exec(c, "BEGIN");
}

enum core_status
core_db_commit(struct core_dbconn *c)
{
    PGresult *r;
    enum core_status st = CORE_OK;

    if (!c->pg || c->broken) {
        set_error(c, "no connection", "08003");
        return CORE_ERR_UNAVAILABLE;
    }
    r = PQexec(c->pg, "COMMIT");
    if (!result_ok(r)) {
        st = result_error(c, r);
    } else if (strcmp(PQcmdStatus(r), "ROLLBACK") == 0) {
        /* COMMIT of an aborted transaction "succeeds" as ROLLBACK. */
        set_error(c, "transaction was rolled back", "25P02");
        st = CORE_ERR_DB;
    }
    PQclear(r);
    return st;
}

void
core_db_rollback(struct core_dbconn *c)
{
    if (c->pg && !c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        (void)core_db_exec(c, "ROLLBACK");
}

void
core_db_stats(struct core_db *db, int *in_use, int *idle, long *waits)
{
    pthread_mutex_lock(&db->mu);
    *in_use = db->in_use;
    *idle = db->nfree;
    *waits = db->waits;
    pthread_mutex_unlock(&db->mu);
}
