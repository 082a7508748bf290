/*
 * core/batch.c - group execution of one SQL function (see batch.h).
 *
 * No thread of its own: the first caller to find no batch running becomes
 * the leader. It takes everything queued (up to max), runs it as one
 * statement, hands each caller its row and wakes exactly those callers;
 * if its own call has not run yet it goes again, else it hands the lead to
 * the oldest caller still queued. While a batch is in the database the
 * next one gathers, so the batch size grows with the load, and a lone call
 * runs on its caller's thread: no hand-off to another thread and back
 * (two wake-ups on the path of every reply at a low rate).
 * A waiting caller sleeps on a semaphore of its own, not on a condvar
 * under the batch's mutex: the leader posts the callers of a batch after
 * it has let go of the mutex, and a caller woken needs no mutex to take
 * its row, so it does not wake only to sleep again on the mutex (measured
 * with 64 workers at a 0 ms LLM: such re-sleeps were ~3 % of Parley's
 * CPU). sem_post() may be the last touch of a semaphore whose waiter
 * returns at once (glibc >= 2.21 makes that safe; POSIX semaphores are
 * meant to be usable so).
 * (Two batches in the database at once, measured on 2 cores with 64
 * workers and a 0 ms LLM: 523-548 replies/s against 545-576 with one; no
 * difference with a 200 ms LLM.)
 */
#include "core/batch.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/log.h"
#include "core/metrics.h"

#define BATCH_ACQUIRE_MS 2000
#define BATCH_MAX_BYTES  (256u << 20)

enum { REQ_QUEUED, REQ_DONE, REQ_LEAD };

struct batch_req {
    long long key;
    const char *arg;
    char *result;
    enum core_status st;
    int ran;         /* has its row: touched by the leader only */
    atomic_int turn; /* REQ_*: set before its caller is posted */
    sem_t wake;      /* its caller waits here until it is done or leads */
    struct batch_req *next;
};

struct core_batch {
    struct core_db *db;
    char name[32];
    const char *sql;
    int max;
    int async; /* commit without waiting for the flush */

    pthread_mutex_t mu;
    pthread_cond_t idle; /* core_batch_free waits here for no leader */
    struct batch_req *head, *tail;
    int stopping;
    int leading;             /* a caller is leading: under the mutex */
    struct batch_req **reqs; /* the leader's batch, up to max */

    struct core_batch_metrics {
        struct core_metric *batches;
        struct core_metric *calls;
        struct core_metric *fallbacks;
    } m;
    char labels[48];
};

static int
by_key(const void *a, const void *b)
{
    const struct batch_req *x = *(struct batch_req *const *)a;
    const struct batch_req *y = *(struct batch_req *const *)b;

    return (x->key > y->key) - (x->key < y->key);
}

/* Run reqs[0..n) as one statement. CORE_ERR_DB: an SQL error (nothing of
 * the batch was committed); the caller retries the calls one by one. */
static enum core_status
run(struct core_batch *b, struct core_dbconn *c, struct batch_req **reqs, int n)
{
    struct core_buf arg;
    const char *p[1];
    PGresult *r = NULL;
    enum core_status st;
    int i;

    core_buf_init(&arg, BATCH_MAX_BYTES);
    st = core_buf_adds(&arg, "[");
    for (i = 0; i < n && st == CORE_OK; i++) {
        if (i > 0)
            st = core_buf_adds(&arg, ",");
        if (st == CORE_OK)
            st = core_buf_adds(&arg, reqs[i]->arg);
    }
    if (st == CORE_OK)
        st = core_buf_adds(&arg, "]");
    if (st != CORE_OK) {
        core_buf_done(&arg);
        return st;
    }
    p[0] = arg.data;
    st = (b->async ? core_db_query_async : core_db_query)(c, b->sql, 1, p, &r);
    core_buf_done(&arg);
    if (st == CORE_ERR_DB && n == 1)
        log_warn("batched call failed",
                 "step=%s key=%lld sqlstate=%s "
                 "error=\"%s\"",
                 b->name, reqs[0]->key, c->sqlstate, c->error);
    if (st != CORE_OK)
        return st;
    if (PQntuples(r) != n || PQnfields(r) != 2) {
        PQclear(r);
        return CORE_ERR_INTERNAL;
    }
    for (i = 0; i < n; i++) {
        long k = strtol(PQgetvalue(r, i, 0), NULL, 10);

        if (k < 1 || k > n || reqs[k - 1]->ran) {
            st = CORE_ERR_INTERNAL;
            break;
        }
        reqs[k - 1]->result =
            PQgetisnull(r, i, 1) ? NULL : strdup(PQgetvalue(r, i, 1));
        reqs[k - 1]->st = CORE_OK;
        reqs[k - 1]->ran = 1;
    }
    PQclear(r);
    return st;
}

static void
execute(struct core_batch *b, struct batch_req **reqs, int n)
{
    enum core_status st;
    struct core_dbconn *c;
    int i;

    qsort(reqs, (size_t)n, sizeof(struct batch_req *), by_key);
    c = core_db_acquire(b->db, BATCH_ACQUIRE_MS, &st);
    if (c) {
        st = run(b, c, reqs, n);
        if (st == CORE_ERR_DB && n > 1) {
            log_warn("batch failed, retrying its calls one by one",
                     "step=%s calls=%d sqlstate=%s error=\"%s\"", b->name, n,
                     c->sqlstate, c->error);
            core_metric_add(b->m.fallbacks, b->labels, 1);
            for (i = 0; i < n && !c->broken; i++) {
                free(reqs[i]->result);
                reqs[i]->result = NULL;
                reqs[i]->ran = 0;
                reqs[i]->st = run(b, c, &reqs[i], 1);
            }
            st = CORE_OK; /* each call has its own status now */
        }
        core_db_release(b->db, c);
    }
    for (i = 0; i < n; i++) {
        if (!reqs[i]->ran && reqs[i]->st == CORE_OK)
            reqs[i]->st = st != CORE_OK ? st : CORE_ERR_UNAVAILABLE;
        if (!reqs[i]->ran) {
            free(reqs[i]->result);
            reqs[i]->result = NULL;
        }
    }
    core_metric_add(b->m.batches, b->labels, 1);
    core_metric_add(b->m.calls, b->labels, n);
}

/* Called with the mutex held, by the caller of self, the leader; returns
 * without it once self has run, the lead handed on. */
static void
lead(struct core_batch *b, struct batch_req *self)
{
    struct batch_req **reqs = b->reqs, *next;
    int self_done = 0;

    while (!self_done) {
        int n = 0, i;

        while (b->head && n < b->max) {
            reqs[n++] = b->head;
            b->head = b->head->next;
        }
        if (!b->head)
            b->tail = NULL;
        pthread_mutex_unlock(&b->mu);
        execute(b, reqs, n);
        /* Wake exactly the callers of this batch, without the mutex; each
         * may return (and its request go out of scope) once posted. */
        for (i = 0; i < n; i++) {
            if (reqs[i] == self) {
                self_done = 1;
                continue;
            }
            atomic_store_explicit(&reqs[i]->turn, REQ_DONE,
                                  memory_order_release);
            sem_post(&reqs[i]->wake);
        }
        pthread_mutex_lock(&b->mu);
    }
    next = b->head;
    if (!next) {
        b->leading = 0;
        pthread_cond_broadcast(&b->idle);
        pthread_mutex_unlock(&b->mu);
        return;
    }
    /* The oldest caller queued leads next; it stays queued (so it is in
     * its own first batch) and cannot return before it has led. */
    atomic_store_explicit(&next->turn, REQ_LEAD, memory_order_release);
    pthread_mutex_unlock(&b->mu);
    sem_post(&next->wake);
}

struct core_batch *
core_batch_new(struct core_db *db, const char *name, const char *sql, int max)
{
    struct core_batch *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    b->db = db;
    snprintf(b->name, sizeof(b->name), "%s", name);
    snprintf(b->labels, sizeof(b->labels), "step=\"%s\"", name);
    b->sql = sql;
    b->max = max > 0 ? max : 1;
    b->reqs = calloc((size_t)b->max, sizeof(struct batch_req *));
    if (!b->reqs) {
        free(b);
        return NULL;
    }
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->idle, NULL);
    b->m.batches =
        core_metric_register(CORE_METRIC_COUNTER, "parley_db_batches_total",
                             "Grouped transactions run, by step", NULL, 0);
    b->m.calls = core_metric_register(
        CORE_METRIC_COUNTER, "parley_db_batch_calls_total",
        "Calls run in grouped transactions, by step", NULL, 0);
    b->m.fallbacks = core_metric_register(
        CORE_METRIC_COUNTER, "parley_db_batch_fallbacks_total",
        "Grouped transactions that failed and were retried call by call", NULL,
        0);
    core_metric_add(b->m.batches, b->labels, 0);
    core_metric_add(b->m.calls, b->labels, 0);
    core_metric_add(b->m.fallbacks, b->labels, 0);
    return b;
}

void
core_batch_commit_async(struct core_batch *b)
{
    b->async = 1;
}

void
core_batch_free(struct core_batch *b)
{
    if (!b)
        return;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1; /* no new calls; those queued still run */
    while (b->leading)
        pthread_cond_wait(&b->idle, &b->mu);
    pthread_mutex_unlock(&b->mu);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->idle);
    free(b->reqs);
    free(b);
}

enum core_status
core_batch_call(struct core_batch *b, long long key, const char *arg,
                char **result)
{
    struct batch_req q = { .key = key, .arg = arg, .st = CORE_OK };
    int turn = REQ_LEAD;

    *result = NULL;
    if (sem_init(&q.wake, 0, 0) != 0)
        return CORE_ERR_INTERNAL;
    atomic_init(&q.turn, REQ_QUEUED);
    pthread_mutex_lock(&b->mu);
    if (b->stopping) {
        pthread_mutex_unlock(&b->mu);
        sem_destroy(&q.wake);
        return CORE_ERR_UNAVAILABLE;
    }
    /* q lives on this stack until the leader has run it and posted q.wake
     * (or handed this caller the lead), which is what it waits for. */
    if (b->tail)
        b->tail->next = &q;
    else
        b->head = &q; // cppcheck-suppress autoVariables
    b->tail = &q;     // cppcheck-suppress autoVariables
    if (b->leading) {
        pthread_mutex_unlock(&b->mu);
        while (sem_wait(&q.wake) != 0 && errno == EINTR)
            ;
        turn = atomic_load_explicit(&q.turn, memory_order_acquire);
        if (turn == REQ_LEAD)
            pthread_mutex_lock(&b->mu);
    } else {
        b->leading = 1;
    }
    if (turn == REQ_LEAD)
        lead(b, &q);
    sem_destroy(&q.wake);
    *result = q.result;
    return q.st;
}
