/*
 * core/batch.h - group execution of one SQL function for many threads.
 *
 * Many worker threads each want to run the same small transaction (record
 * a job's intent, record a finished job). Run one by one they cost one
 * round trip, one backend wake-up and one WAL flush each. A batch gathers
 * the calls that arrive while the previous batch is in the database and
 * runs them as ONE statement in ONE transaction: the flush is shared, as in
 * the ingest group commit.
 *
 * The statement takes $1, a JSON array of the callers' arguments, and
 * returns one row per element: (n, result), n being the element's 1-based
 * position. For a per-call function f(jsonb) that is
 *
 *   SELECT t.n, f(t.j) FROM jsonb_array_elements($1::jsonb)
 *   WITH ORDINALITY AS t(j, n)
 *
 * Calls are ordered by their key before the array is built, so that
 * concurrent transactions take row locks in one order. If the batch fails
 * with an SQL error, every call is retried on its own, so one bad call
 * cannot fail its neighbours.
 */
#ifndef CORE_BATCH_H
#define CORE_BATCH_H

#include "core/db.h"
#include "core/status.h"

struct core_batch;

/* name labels the metrics (parley_db_batch_*{step="name"}); max bounds the
 * calls per transaction. */
struct core_batch *core_batch_new(struct core_db *db, const char *name,
                                  const char *sql, int max);
void core_batch_free(struct core_batch *b);

/* From now on b's transactions commit without waiting for their WAL flush
 * (core_db_query_async). Call before the first core_batch_call. */
void core_batch_commit_async(struct core_batch *b);

/* Run arg (a JSON value) through the batch and wait for the result. On
 * CORE_OK *result is the function's value (malloc'd, NULL for SQL NULL).
 * CORE_ERR_UNAVAILABLE: the database could not be reached; nothing ran. */
enum core_status core_batch_call(struct core_batch *b, long long key,
                                 const char *arg, char **result);

#endif
