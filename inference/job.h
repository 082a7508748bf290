/*
 * One unit of inference work: a claimed conversation. Private to
 * inference/; pool.c claims and hands out jobs, job.c runs them.
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

struct inf_job {
    unsigned magic;
    char conversation_id[24];
    char lease_count[16]; /* fencing token of our lease */
    struct inf_job *next;
};

/* What a worker thread owns: never shared. */
struct inf_worker_ctx {
    const struct core_config *cfg;
    struct core_db *db;
    const char *owner; /* lease owner id of this process */
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
    struct core_metric *jobs;
    struct core_metric *sends;
    struct core_metric *e2e;
    struct core_metric *dup_sends;
};

/* Run one job to completion (or until the lease is lost). */
/* The job's two writes, grouped across workers (core/batch.h): the intent
 * before sending, everything else after. */
extern const char INF_SQL_INTENTS[];
extern const char INF_SQL_FINISHES[];

void inf_job_run(struct inf_worker_ctx *w, struct inf_job *job);
/* Release a lease we hold without doing the work (shutdown). */
void inf_job_release(struct inf_worker_ctx *w, struct core_dbconn *c,
                     const struct inf_job *job);

#endif
