/*
 * Durable webhook ingest with group commit.
 *
 * Design: HTTP threads parse a webhook into an adp_batch, wrap it in a
 * gw_ingest_job and submit it, then suspend the connection. Committer
 * threads take every job waiting (up to a batch limit), serialise all their
 * events into one JSON array and store it with one call of the SQL function
 * parley_ingest() inside one transaction; a batch that holds only plain
 * inbound messages goes as typed arrays to parley_ingest_messages()
 * instead, which stores the same rows at a smaller fixed cost per call
 * (migration 0010), and one of plain messages and plain delivery statuses
 * (the mix of real traffic) to parley_ingest_plain() (migration 0011). That
 * commit does not wait for its WAL flush. In the same round trip, a second
 * transaction claims ready conversations for this process's worker pool
 * when it has room (inf_pool_claim_begin; the pool's dispatcher is woken
 * for the rest), and a last one waits for the flush
 * (core_db_query_then). Only after that is each job's done()
 * callback run (from the committer thread), which resumes the HTTP
 * connection to answer 200; on a database outage every job of the batch
 * gets CORE_ERR_UNAVAILABLE (503), and nothing of it is stored, unless the
 * outage fell between the commit and the flush: then it may be stored, and
 * the platform's retry is acknowledged as a duplicate.
 * Ownership: the job and its batch belong to the submitter; the committer
 * only reads them until done() is called.
 */
#ifndef GATEWAY_INGEST_H
#define GATEWAY_INGEST_H

#include "adapters/adapter.h"
#include "analytics/feedback.h"
#include "core/buf.h"
#include "core/config.h"
#include "core/db.h"
#include "core/status.h"

struct gw_ingest;

struct gw_ingest_job {
    const struct adp_batch *batch;
    const char *platform;
    const char *request_id;
    /* filled before done() */
    enum core_status status;
    int stored; /* events that were new */
    int queued; /* new inbound messages queued for a reply */
    int ready;  /* ... of them, the first of an idle conversation */
    /* called once, from a committer thread */
    void (*done)(struct gw_ingest_job *job);
    void *arg;
    struct gw_ingest_job *next; /* queue link, private */
};

struct inf_pool;
/* pool: this process's worker pool (NULL: none); woken when a batch made
 * conversations ready, and it claims some in the batch's round trip. */
struct gw_ingest *gw_ingest_new(const struct core_config *cfg,
                                struct core_db *db, int committers,
                                struct inf_pool *pool);
/* Stop after the jobs already submitted are done. */
void gw_ingest_free(struct gw_ingest *in);
void gw_ingest_submit(struct gw_ingest *in, struct gw_ingest_job *job);

/* Serialise one event as a parley_ingest item (exposed for tests). */
enum core_status gw_ingest_item_json(struct core_buf *out, int idx,
                                     const struct adp_event *ev,
                                     const char *pseudonym, int key_version,
                                     const char *request_id,
                                     const struct ana_feedback_map *fb);

#endif
