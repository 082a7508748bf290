/*
 * One unit of inference work: a claimed conversation. Private to
 * inference/; pool.c claims and hands out jobs, job.c runs them in three
 * stages, each on its own thread:
 *   1. the dispatcher loads what it claimed (inf_job_load_many), several
 *      conversations per round trip, and hands each read receipt to
 *      delivery (inf_job_mark);
 *   2. a worker thread thinks (inf_job_think): the context and the LLM
 *      call (and the load and read receipt, if the dispatcher's load
 *      failed);
 *   3. a delivery thread records and sends (inf_job_deliver): intent,
 *      sends, finish.
 * So a worker spends its time on the LLM, not waiting on PostgreSQL or the
 * platform. A job belongs to exactly one thread at a time; the queues
 * between the stages hand it over under the pool's mutex.
 */
#ifndef INFERENCE_JOB_H
#define INFERENCE_JOB_H

#include <curl/curl.h>
#include <stdatomic.h>

#include "core/batch.h"
#include "core/config.h"
#include "core/db.h"
#include "core/metrics.h"
#include "inference/llm.h"

#define INF_JOB_MAGIC 0x4a4f4221u
#define INF_OWNER_MAX 128
#define INF_LOAD_MAX  16 /* jobs per inf_job_load_many() round trip */

struct inf_job {
    unsigned magic;
    char conversation_id[24];
    char owner[INF_OWNER_MAX]; /* lease owner token of its claim */
    char lease_count[16];      /* with owner: the fencing token */
    struct job_state *state;   /* job.c's; NULL until loaded */
    int lost;                  /* the load found the lease gone */
    struct inf_job *next;
};

/* A read receipt for a loaded job (with WhatsApp, a typing indicator):
 * made by the dispatcher, sent by a delivery thread, so the worker goes
 * straight to the LLM. */
struct adp_adapter;
struct inf_mark {
    struct inf_mark *next;
    const struct adp_adapter *adapter;
    char channel[256];
    char user_id[256];
    char *message_id;
};

/* What a worker (or delivery, or the dispatcher) thread owns: never
 * shared. Delivery threads have no llm; the dispatcher's has no CURL. */
struct inf_worker_ctx {
    const struct core_config *cfg;
    struct core_db *db;
    struct inf_llm *llm;
    CURL *send_curl;
    struct inf_metrics *m;
    atomic_int *abandon;         /* 2: shutdown deadline passed, give up */
    struct core_batch *intents;  /* INF_SQL_INTENTS, shared by the pool */
    struct core_batch *finishes; /* INF_SQL_FINISHES */
    char name[32];
};

struct inf_metrics {
    struct core_metric *claims;
    struct core_metric *lease_expiries;
    struct core_metric *queue_depth;
    struct core_metric *oldest_pending;
    struct core_metric *workers_busy;
    struct core_metric *delivery_jobs;
    struct core_metric *jobs;
    struct core_metric *sends;
    struct core_metric *e2e;
    struct core_metric *dup_sends;
    struct core_metric *wakeups; /* the dispatcher's, by cause */
};

/* The job's two writes, grouped across workers (core/batch.h): the intent
 * before sending, everything else after. */
extern const char INF_SQL_INTENTS[];
extern const char INF_SQL_FINISHES[];

/* Dispatcher: load up to INF_LOAD_MAX claimed jobs on c in one pipelined
 * round trip. A job not loaded (failure, or past the limit) is loaded by
 * its worker; one whose lease is gone is marked lost. */
void inf_job_load_many(struct inf_worker_ctx *w, struct core_dbconn *c,
                       struct inf_job **jobs, int n);
/* Dispatcher, after loading: the job's read receipt, or NULL if it needs
 * none (then or if the job was not loaded, its worker marks it read). */
struct inf_mark *inf_job_mark(struct inf_job *job);
/* Delivery thread: send the receipt (best effort) and free it. */
void inf_mark_send(struct inf_worker_ctx *d, struct inf_mark *m);
/* Worker: load if needed, mark read, think. Returns 1 when the job goes on
 * to inf_job_deliver(), 0 when it is over (counted, state freed). */
int inf_job_think(struct inf_worker_ctx *w, struct inf_job *job);
/* Delivery thread: intent, sends, finish; frees the job's state. Returns 1
 * when the conversation has messages pending after the job (ones that
 * arrived while it was thinking): it is ready to be claimed again. */
int inf_job_deliver(struct inf_worker_ctx *d, struct inf_job *job);
/* Free the state of a job that will not run (shutdown). */
void inf_job_discard(struct inf_job *job);
/* Release a lease we hold without doing the work (shutdown). */
void inf_job_release(struct inf_worker_ctx *w, struct core_dbconn *c,
                     const struct inf_job *job);

#endif
