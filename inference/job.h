/*
 * One unit of inference work: a claimed conversation. Private to
 * inference/; pool.c claims and hands out jobs, job.c runs them in three
 * stages, each on its own thread:
 *   1. the dispatcher claims and loads in one statement (INF_SQL_CLAIM,
 *      inf_job_from_claim) and hands each read receipt to delivery
 *      (inf_job_mark);
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
#include <pthread.h>
#include <stdatomic.h>

#include "core/batch.h"
#include "core/config.h"
#include "core/db.h"
#include "core/metrics.h"
#include "inference/llm.h"

#define INF_JOB_MAGIC 0x4a4f4221u
#define INF_OWNER_MAX 128

struct inf_job {
    unsigned magic;
    char conversation_id[24];
    char owner[INF_OWNER_MAX]; /* lease owner token of its claim */
    char lease_count[16];      /* with owner: the fencing token */
    struct job_state *state;   /* job.c's; NULL until loaded */
    double claimed_s;          /* monotonic s, when claimed */
    long long claimed_ms;      /* wall clock, ms, when claimed */
    struct inf_job *next;
};

/* A read receipt for a loaded job (with WhatsApp, a typing indicator):
 * made by the dispatcher, sent by a delivery thread, so the worker goes
 * straight to the LLM; the job's own delivery waits until it was answered
 * (job.c, mark_wait). Shared by the two: freed by the last to let go. */
struct adp_adapter;
struct inf_mark {
    struct inf_mark *next;
    const struct adp_adapter *adapter;
    char channel[256];
    char user_id[256];
    char *message_id;
    atomic_int refs;
    int done;          /* answered (or failed); under job.c's mark_mu */
    pthread_cond_t cv; /* signalled when done */
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
    struct core_metric *stages;  /* a job's time per stage */
};

/* The job's two writes, grouped across workers (core/batch.h): the intent
 * before sending, everything else after. */
extern const char INF_SQL_INTENTS[];
extern const char INF_SQL_FINISHES[];

/* Dispatcher: claim and load up to $1 conversations in one statement
 * ($2 the claim's owner token, $3 the lease in ms). Rows: id,
 * lease_count, lease expired (reclaimed), then what inf_job_from_claim()
 * reads. */
extern const char INF_SQL_CLAIM[];
/* Dispatcher: stamp the claim time and make the job's state from row
 * `row` of INF_SQL_CLAIM's result; -1 (out of memory, or the row changed
 * after the statement's snapshot) leaves the job to be loaded by its
 * worker. */
int inf_job_from_claim(struct inf_worker_ctx *w, struct inf_job *job,
                       PGresult *r, int row);
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
