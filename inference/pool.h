/*
 * The inference worker pool: a dispatcher thread claims ready conversations
 * from PostgreSQL and hands them to N worker threads through a bounded
 * in-memory queue; each worker builds the context, calls the LLM, sends the
 * reply through the platform adapter and records everything.
 * See inference/README.md for the design and invariants.
 */
#ifndef INFERENCE_POOL_H
#define INFERENCE_POOL_H

#include "core/config.h"
#include "core/db.h"
#include "core/status.h"
#include "inference/job.h"

struct inf_pool;

/* Start the dispatcher and workers. conninfo is used for LISTEN. */
struct inf_pool *inf_pool_new(const struct core_config *cfg, struct core_db *db,
                              const char *conninfo);
/* Wake the dispatcher: new work was committed. Any thread; cheap. */
void inf_pool_wake(void *arg);
/* A claim run in another thread's round trip: the ingest's, right after a
 * batch of messages commits (gateway/ingest.c), so that a message's job
 * starts without a wake-up of the dispatcher and a round trip of its own.
 * Its own transaction; it claims the oldest ready conversations, as the
 * dispatcher's claim does, the batch's among them. */
struct inf_claim {
    struct core_db_stmt stmt; /* INF_SQL_CLAIM and its parameters */
    int slots;                /* reserved for it: at most this many rows */
    char n[16], owner[INF_OWNER_MAX], lease[16];
    const char *params[3];
};
/* Reserve up to `want` of the pool's free slots for a claim and fill c;
 * returns how many (0: none free, or a backlog the dispatcher is waiting
 * to claim: no claim to run). Any thread. */
int inf_pool_claim_begin(struct inf_pool *p, int want, struct inf_claim *c);
/* After the claim ran (c->stmt.res, NULL if it failed; taken): its jobs
 * are queued and the slots it left empty let go. Returns how many it
 * claimed, -1 if it failed. */
int inf_pool_claim_end(struct inf_pool *p, struct inf_claim *c);
/* Stop claiming, let in-flight jobs finish within deadline_ms, release
 * the leases of what did not finish, join the threads. */
void inf_pool_shutdown(struct inf_pool *p, int deadline_ms);
void inf_pool_free(struct inf_pool *p);

#endif
