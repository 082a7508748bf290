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

struct inf_pool;

/* Start the dispatcher and workers. conninfo is used for LISTEN. */
struct inf_pool *inf_pool_new(const struct core_config *cfg, struct core_db *db,
                              const char *conninfo);
/* Wake the dispatcher: new work was committed. Any thread; cheap. */
void inf_pool_wake(void *arg);
/* Stop claiming, let in-flight jobs finish within deadline_ms, release
 * the leases of what did not finish, join the threads. */
void inf_pool_shutdown(struct inf_pool *p, int deadline_ms);
void inf_pool_free(struct inf_pool *p);

#endif
