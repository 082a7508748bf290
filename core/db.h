/*
 * PostgreSQL connection pool and query helpers over libpq.
 *
 * Design: a fixed-size pool of lazily opened connections guarded by one
 * mutex and condition variable. A thread acquires a connection for one short
 * unit of work (never across an LLM or platform call) and releases it.
 * Connections that fail are closed on release and reopened on the next
 * acquire, so the pool recovers by itself after a server restart.
 * Statements passed to core_db_query() are prepared once per connection,
 * keyed by the address of the SQL string (use string literals / static
 * strings). libpq errors are translated here: CORE_ERR_UNAVAILABLE when the
 * connection is gone (retry later, answer 503), CORE_ERR_DB otherwise.
 */
#ifndef CORE_DB_H
#define CORE_DB_H

#include <libpq-fe.h>
#include <stdbool.h>

#include "core/status.h"

struct core_db;

struct core_dbconn {
    PGconn *pg;
    bool broken;         /* set by helpers when the connection failed */
    const char *sql[64]; /* prepared statements of this connection */
    int nsql;
    char sqlstate[6]; /* of the last error */
    char error[256];  /* last error message, one line */
};

struct core_db *core_db_new(const char *conninfo, int size);
void core_db_free(struct core_db *db);

/* Wait up to timeout_ms for a connection (connecting if needed). NULL with
 * *st set on failure (CORE_ERR_UNAVAILABLE). */
struct core_dbconn *core_db_acquire(struct core_db *db, int timeout_ms,
                                    enum core_status *st);
void core_db_release(struct core_db *db, struct core_dbconn *c);

/* Open a dedicated connection outside the pool (LISTEN, migrations, the
 * CLI). On failure NULL with *st set; the reason (one line) goes to err
 * when it is not NULL, else to the log. */
struct core_dbconn *core_dbconn_open(const char *conninfo, enum core_status *st,
                                     char *err, size_t errlen);
void core_dbconn_close(struct core_dbconn *c);

/* This process's name in the database, "host:pid:start": the prefix of its
 * lease owner tokens and the payload of its parley_work notifications (so
 * the process can tell its own from others'). Computed once; never NULL. */
const char *core_db_instance(void);

/*
 * Run sql with text parameters (NULL entries are SQL NULL), prepared once
 * per connection. On success *res (if res is not NULL) holds the result for
 * the caller to PQclear; on failure nothing is returned and c->error says
 * why.
 */
enum core_status core_db_query(struct core_dbconn *c, const char *sql,
                               int nparams, const char *const *params,
                               PGresult **res);
/*
 * Run sql (unprepared: a custom plan for a one-off, long query) with text
 * parameters and hand each result row to row(arg, res, 0) as it arrives
 * (libpq single-row mode: memory stays constant however many rows). A
 * non-zero return from row stops the stream: the query is cancelled and
 * that value is returned in *stopped (0 when it ran to its end); the
 * status is then CORE_OK. res belongs to the helper.
 */
enum core_status core_db_stream(struct core_dbconn *c, const char *sql,
                                int nparams, const char *const *params,
                                int (*row)(void *arg, const PGresult *res),
                                void *arg, int *stopped);
/* Unprepared statement without parameters (BEGIN, COMMIT, DDL). */
/* One statement of a pipeline: res is set on CORE_OK (caller PQclears). */
struct core_db_stmt {
    const char *sql; /* static storage, as for core_db_query */
    int nparams;
    const char *const *params;
    PGresult *res;
};

/* Run n statements in one round trip (libpq pipeline mode) and one
 * implicit transaction: if one fails, none of their effects remain and
 * the first failure is returned (no res set). */
enum core_status core_db_pipeline(struct core_dbconn *c, struct core_db_stmt *q,
                                  int n);

/* As core_db_query, in a transaction of its own that commits without
 * waiting for its WAL flush (synchronous_commit = off, local to it; one
 * round trip). A crash of PostgreSQL can lose such a commit, never a crash
 * of Parley; the next commit that waits flushes it with its own. */
enum core_status core_db_query_async(struct core_dbconn *c, const char *sql,
                                     int nparams, const char *const *params,
                                     PGresult **res);

/* As core_db_query_async, and in the same round trip a second transaction
 * that waits until both are on disk: it writes one small WAL record
 * (pg_logical_emit_message) and commits synchronously, which flushes the
 * WAL up to its commit and so the first commit with it. Returns once the
 * statement's result is in: committed and visible to other sessions, not
 * yet known to be durable. On CORE_OK the caller must call
 * core_db_flush_wait(c) next, and only then count the commit as durable
 * (its CORE_OK). A crash of PostgreSQL in between can lose the commit. */
enum core_status core_db_query_flush_apart(struct core_dbconn *c,
                                           const char *sql, int nparams,
                                           const char *const *params,
                                           PGresult **res);
enum core_status core_db_flush_wait(struct core_dbconn *c);
/* As core_db_query_flush_apart (apart) or core_db_query (not apart), and
 * in the same round trip, once that transaction has ended (committed or
 * not), `then` (sql, nparams, params) in a transaction of its own that
 * commits without waiting for its flush, as core_db_query_async; with
 * apart it runs before the flush, so it does not wait for it. then->res
 * gets its result, NULL when it failed (*then_st says why). Returns the
 * first statement's status (c->error and c->sqlstate are the first's);
 * with apart and CORE_OK, core_db_flush_wait(c) next. */
enum core_status core_db_query_then(struct core_dbconn *c, bool apart,
                                    const char *sql, int nparams,
                                    const char *const *params, PGresult **res,
                                    struct core_db_stmt *then,
                                    enum core_status *then_st);
/* Whether c's role may use core_db_query_flush_apart (an administrator can
 * revoke the function it calls): *ok set on CORE_OK. */
enum core_status core_db_flush_apart_allowed(struct core_dbconn *c, bool *ok);

enum core_status core_db_exec(struct core_dbconn *c, const char *sql);
enum core_status core_db_begin(struct core_dbconn *c);
enum core_status core_db_commit(struct core_dbconn *c);
void core_db_rollback(struct core_dbconn *c);

/* Pool statistics for metrics. */
void core_db_stats(struct core_db *db, int *in_use, int *idle, long *waits);
/* Resolve PARLEY_DATABASE_URL or the local cluster default. */
const char *core_db_default_url(void);

#endif
