/*
 * Dispatcher and worker threads of the inference pool.
 *
 * Design: PostgreSQL is the queue. The dispatcher claims ready conversations
 * (pending_since set, no live lease) with FOR UPDATE SKIP LOCKED and gives
 * each a lease that expires, so a conversation is never worked on by two
 * workers in any number of processes, and work of a crashed process is
 * claimed again once its lease runs out. It claims only as many as there
 * are idle workers: when the pool is saturated, work waits in PostgreSQL,
 * not in memory. It sleeps on a self-pipe (in-process wake after ingest
 * commits), the LISTEN parley_work socket (other processes), and a slow
 * poll timeout as the last resort.
 * The dispatcher claims and loads in one statement (one round trip; the
 * user, pending messages and history come back with each lease). The
 * ingest runs the same claim in a batch's own round trip, right after its
 * commit (inf_pool_claim_begin/end, gateway/ingest.c): a new message's job
 * then starts without a wake-up of the dispatcher, and the dispatcher
 * claims what that claim had no room for. Every claim reserves its slots
 * first (reserved), so the two never claim more than there is room for.
 * Workers only think (the LLM call), and delivery threads record and send
 * (inference/job.h), so a worker goes from one LLM call to the next
 * without waiting on PostgreSQL or the platform.
 * Threads: 1 dispatcher, N workers, N delivery threads. Shared state: the
 * two job queues (one mutex, a condvar each), counters; the config is
 * immutable. A queue's condvar is signalled after the mutex is let go, so
 * that the thread woken does not at once block on the mutex its waker
 * still holds (a second sleep and wake-up; on this project's 2-core VMs a
 * wake-up costs ~10 us of CPU: `perf bench sched pipe` 21.9 us per round
 * trip, docs/performance-history.md, "Wake-ups without a second sleep").
 * Claimed at most: N + N/2
 * for the workers (queued or thinking), and no more while N are queued for or
 * in delivery.
 */
#include "inference/pool.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/batch.h"
#include "core/log.h"
#include "core/metrics.h"
#include "inference/job.h"

#define POOL_POLL_MS        2000 /* last-resort poll */
#define POOL_STATS_EVERY_MS 1000
#define POOL_MAINT_EVERY_S  3600
/* Claimed ahead of need, one per 2 workers: a worker that finishes takes
 * its next conversation from memory instead of waiting for a claim and a
 * load (their leases run from the claim; at shutdown they are handed
 * back). Workers that finish together, as after a burst, would otherwise
 * wait in line for the dispatcher: with one per 8, 64 workers at 200 ms
 * waited 8.4 ms per job on average; with one per 2, 0.35 ms. */
#define POOL_PREFETCH_PER 2

/* The claim commits without waiting for its WAL flush: a lease is not
 * data. If PostgreSQL crashes before the flush the claim is gone, the
 * conversation is claimed again, and the lost claim's job is fenced off:
 * every claim has its own owner token (process id + claim number, from
 * memory, never reused), checked by the job's every write. (The intent
 * does not wait for its flush either, see inference/job.c; the finish
 * does, and flushes both with it.) */
static const char SQL_STATS[] =
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(pending_since)),"
    " 0) FROM conversations WHERE pending_since IS NOT NULL";
static const char SQL_MAINT[] =
    "SELECT parley_ensure_partitions(2),"
    " parley_drop_partitions($1::int * interval '1 day')";
static const char SQL_PRUNE_KEYS[] =
    "DELETE FROM inbound_keys WHERE received_at < now() - interval '14 days'";

struct inf_pool;

/* A queue of jobs, linked through inf_job.next; under the pool's mutex. */
struct job_fifo {
    struct inf_job *head, *tail;
};

static void
fifo_push(struct job_fifo *f, struct inf_job *j)
{
    j->next = NULL;
    if (f->tail)
        f->tail->next = j;
    else
        f->head = j;
    f->tail = j;
}

static struct inf_job *
fifo_pop(struct job_fifo *f)
{
    struct inf_job *j = f->head;

    if (j) {
        f->head = j->next;
        if (!f->head)
            f->tail = NULL;
    }
    return j;
}

struct worker_slot {
    struct inf_pool *pool;
    struct inf_worker_ctx ctx;
};

struct inf_pool {
    const struct core_config *cfg;
    struct core_db *db;
    char *conninfo;
    atomic_ulong nclaims; /* claims made: the owner token's suffix */

    pthread_mutex_t mu;
    pthread_cond_t cv;              /* workers: a job was queued */
    pthread_cond_t dcv;             /* delivery: a job was thought */
    struct job_fifo ready;          /* loaded, waiting for a worker */
    struct job_fifo thought;        /* thought, waiting for delivery */
    struct inf_mark *mhead, *mtail; /* read receipts, for delivery */
    int queued;
    int busy;           /* jobs in workers' hands */
    int delivering;     /* queued for or in delivery */
    int reserved;       /* slots held for claims running (claim_begin) */
    int room_wanted;    /* the dispatcher waits for a free slot */
    int stopping;       /* no more claims; workers drain the queue */
    int dstopping;      /* workers joined: delivery drains and ends */
    atomic_int abandon; /* stopping: release queued jobs, cancel late ones */

    int wake_fd[2];
    pthread_t dispatcher;
    int dispatcher_started;
    pthread_t *threads;
    struct worker_slot *workers;
    int nworkers;
    pthread_t *dthreads;
    struct worker_slot *delivery;
    int ndelivery;
    struct inf_worker_ctx dctx;            /* for loading claims; only read */
    struct core_batch *intents, *finishes; /* grouped job transactions */
    struct inf_metrics m;
};

static long
now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Why the dispatcher is woken: new work was committed (WAKE_WORK), or a
 * worker or delivery thread has room again (WAKE_ROOM). Room alone calls for
 * a claim only while work may be waiting: at 100 messages/s, claiming on
 * every wake-up made 3.5 claims per message, most of them empty. So room
 * wakes the dispatcher only when it asked for it (room_wanted: work may be
 * waiting and every slot was taken) and a slot is free: at a 0 ms LLM,
 * waking it whenever a job moved on woke it ~7 times per claim, for
 * nothing (delivery full, or no work waiting). */
#define WAKE_WORK 'w'
#define WAKE_ROOM 'r'

static void
wake(struct inf_pool *p, char why)
{
    (void)!write(p->wake_fd[1], &why, 1);
}

/* Slots the dispatcher may fill: workers (queued or thinking) up to N +
 * N/2, no more than delivery has room for. Under the mutex. */
static int
room_locked(const struct inf_pool *p)
{
    int idle = p->nworkers +
               (p->nworkers + POOL_PREFETCH_PER - 1) / POOL_PREFETCH_PER -
               p->busy - p->queued - p->reserved;

    if (idle > p->ndelivery - p->delivering)
        idle = p->ndelivery - p->delivering; /* delivery is behind */
    return idle;
}

/* Under the mutex, after a slot may have freed up: 1 if the dispatcher is
 * to be woken (WAKE_ROOM) once the mutex is let go. */
static int
room_freed(struct inf_pool *p)
{
    if (!p->room_wanted || room_locked(p) <= 0)
        return 0;
    p->room_wanted = 0;
    return 1;
}

void
inf_pool_wake(void *arg)
{
    if (arg)
        wake(arg, WAKE_WORK);
}

/* Empty the self-pipe; 1 if new work was among the wake-ups. */
static int
drain_fd(int fd)
{
    char buf[64];
    ssize_t i, n;
    int work = 0;

    while ((n = read(fd, buf, sizeof(buf))) > 0)
        for (i = 0; i < n; i++)
            work |= buf[i] != WAKE_ROOM;
    return work;
}

/* Read receipts go to delivery ahead of the jobs thought there. */
static void
push_mark(struct inf_pool *p, struct inf_mark *m)
{
    if (!m)
        return;
    pthread_mutex_lock(&p->mu);
    m->next = NULL;
    if (p->mtail)
        p->mtail->next = m;
    else
        p->mhead = m;
    p->mtail = m;
    pthread_mutex_unlock(&p->mu);
    pthread_cond_signal(&p->dcv);
}

/* Reserve up to want slots and fill c (inf_pool_claim_begin); by the
 * ingest (ingest != 0), none while the dispatcher waits for room with
 * work waiting: a backlog is the dispatcher's to claim, in the largest
 * claims there is room for, while a claim in an ingest's round trip is
 * for a new message to an idle pool (claimed in pieces of a few slots as
 * they free up, a backlog at LLM 0 ms cost more claims per reply, and the
 * ingest's acks waited for them). */
static int
claim_begin(struct inf_pool *p, int want, struct inf_claim *c, int ingest)
{
    int n;

    pthread_mutex_lock(&p->mu);
    n = p->stopping || (ingest && p->room_wanted) ? 0 : room_locked(p);
    if (n > want)
        n = want;
    if (n > 0)
        p->reserved += n;
    pthread_mutex_unlock(&p->mu);
    c->slots = n > 0 ? n : 0;
    if (c->slots == 0)
        return 0;
    snprintf(c->n, sizeof(c->n), "%d", c->slots);
    snprintf(c->lease, sizeof(c->lease), "%d", p->cfg->lease_ms);
    snprintf(c->owner, sizeof(c->owner), "%s/%lu", core_db_instance(),
             atomic_fetch_add(&p->nclaims, 1) + 1);
    c->params[0] = c->n;
    c->params[1] = c->owner;
    c->params[2] = c->lease;
    c->stmt.sql = INF_SQL_CLAIM;
    c->stmt.nparams = 3;
    c->stmt.params = c->params;
    c->stmt.res = NULL;
    return c->slots;
}

int
inf_pool_claim_begin(struct inf_pool *p, int want, struct inf_claim *c)
{
    return claim_begin(p, want, c, 1);
}

/* A job for row i of a claim's result; NULL when out of memory. */
static struct inf_job *
job_of_row(struct inf_pool *p, const char *owner, PGresult *r, int i)
{
    struct inf_job *j = calloc(1, sizeof(*j));

    if (!j)
        return NULL;
    j->magic = INF_JOB_MAGIC;
    snprintf(j->conversation_id, sizeof(j->conversation_id), "%s",
             PQgetvalue(r, i, 0));
    snprintf(j->lease_count, sizeof(j->lease_count), "%s", PQgetvalue(r, i, 1));
    snprintf(j->owner, sizeof(j->owner), "%s", owner);
    if (PQgetvalue(r, i, 2)[0] == 't') {
        core_metric_add(p->m.lease_expiries, NULL, 1);
        log_warn("reclaimed expired lease", "conversation=%s",
                 j->conversation_id);
    }
    /* dctx is only read (config, metrics): any thread may load with it. */
    (void)inf_job_from_claim(&p->dctx, j, r, i);
    return j;
}

static int
claim_end(struct inf_pool *p, struct inf_claim *c, const char *by)
{
    PGresult *r = c->stmt.res;
    struct job_fifo got = { NULL, NULL };
    struct inf_job *j;
    int i, rows = r ? PQntuples(r) : -1, n = 0, room;

    c->stmt.res = NULL;
    /* Out of memory: what was not made into a job waits for its lease. */
    for (i = 0; i < rows && (j = job_of_row(p, c->owner, r, i)) != NULL; i++) {
        fifo_push(&got, j);
        n++;
    }
    PQclear(r);
    if (rows > 0)
        core_metric_add(p->m.claims, by, rows);
    for (j = got.head; j; j = j->next)
        push_mark(p, inf_job_mark(j));
    pthread_mutex_lock(&p->mu);
    p->reserved -= c->slots;
    while ((j = fifo_pop(&got)) != NULL) {
        fifo_push(&p->ready, j);
        p->queued++;
    }
    /* Slots it left empty: the dispatcher may be waiting for them. */
    room = room_freed(p);
    pthread_mutex_unlock(&p->mu);
    for (i = 0; i < n; i++)
        pthread_cond_signal(&p->cv);
    if (room)
        wake(p, WAKE_ROOM);
    c->slots = 0;
    return rows;
}

int
inf_pool_claim_end(struct inf_pool *p, struct inf_claim *c)
{
    return claim_end(p, c, "by=\"ingest\"");
}

/* The dispatcher's claim of up to n conversations (*asked: as many as
 * were free, maybe fewer); returns how many were claimed, -1 on error. */
static int
claim(struct inf_pool *p, struct core_dbconn *c, int n, int *asked)
{
    struct inf_claim cl;

    *asked = claim_begin(p, n, &cl, 0);
    if (*asked == 0)
        return 0;
    if (core_db_query_async(c, cl.stmt.sql, cl.stmt.nparams, cl.stmt.params,
                            &cl.stmt.res) != CORE_OK)
        log_warn("could not claim work", "error=\"%s\"", c->error);
    return claim_end(p, &cl, "by=\"dispatcher\"");
}

static void
update_stats(struct inf_pool *p, struct core_dbconn *c)
{
    PGresult *r = NULL;

    if (core_db_query(c, SQL_STATS, 0, NULL, &r) != CORE_OK)
        return;
    core_metric_set(p->m.queue_depth, NULL, strtod(PQgetvalue(r, 0, 0), NULL));
    core_metric_set(p->m.oldest_pending, NULL,
                    strtod(PQgetvalue(r, 0, 1), NULL));
    PQclear(r);
}

static void
maintenance(struct inf_pool *p, struct core_dbconn *c)
{
    char days[16];
    const char *params[1] = { days };

    snprintf(days, sizeof(days), "%d", p->cfg->retention_days);
    if (core_db_query(c, SQL_MAINT, 1, params, NULL) != CORE_OK ||
        core_db_query(c, SQL_PRUNE_KEYS, 0, NULL, NULL) != CORE_OK)
        log_warn("maintenance failed", "error=\"%s\"", c->error);
}

/* (Re)open the LISTEN connection; NULL while the database is down. */
static struct core_dbconn *
listen_open(struct inf_pool *p)
{
    enum core_status st;
    struct core_dbconn *c = core_dbconn_open(p->conninfo, &st, NULL, 0);

    if (c && core_db_exec(c, "LISTEN parley_work") != CORE_OK) {
        core_dbconn_close(c);
        c = NULL;
    }
    return c;
}

/* Sleep until woken or timeout_ms; 1 when work may be waiting (new work
 * here or in another process, or the timeout: the last-resort poll, which
 * also finds leases that expired). Our own notifications (payload: our
 * instance) are ignored: the in-process wake-up came first. */
static int
dispatcher_wait(struct inf_pool *p, struct core_dbconn *lc, int timeout_ms)
{
    struct pollfd fds[2];
    int nfds = 1, work = 0;
    PGnotify *n;

    fds[0].fd = p->wake_fd[0];
    fds[0].events = POLLIN;
    if (lc && lc->pg) {
        fds[1].fd = PQsocket(lc->pg);
        fds[1].events = POLLIN;
        nfds = fds[1].fd >= 0 ? 2 : 1;
    }
    if (poll(fds, (nfds_t)nfds, timeout_ms) <= 0) {
        core_metric_add(p->m.wakeups, "cause=\"poll\"", 1);
        return 1;
    }
    if (fds[0].revents && drain_fd(p->wake_fd[0])) {
        core_metric_add(p->m.wakeups, "cause=\"local\"", 1);
        work = 1;
    }
    if (nfds == 2 && fds[1].revents) {
        if (!PQconsumeInput(lc->pg))
            lc->broken = true;
        while ((n = PQnotifies(lc->pg)) != NULL) {
            int own = strcmp(n->extra, core_db_instance()) == 0;

            core_metric_add(p->m.wakeups,
                            own ? "cause=\"own_notify\"" : "cause=\"notify\"",
                            1);
            work |= !own;
            PQfreemem(n);
        }
    }
    return work;
}

static void *
dispatcher_main(void *arg)
{
    struct inf_pool *p = arg;
    struct core_dbconn *lc = NULL;
    long last_stats = 0, last_maint = 0, last_listen = 0;
    int idle, got, asked, waited_ms, want, work = 1;
    enum core_status st;

    core_thread_name("dispatcher");
    while (1) {
        struct core_dbconn *c;

        pthread_mutex_lock(&p->mu);
        idle = room_locked(p);
        if (p->stopping) {
            pthread_mutex_unlock(&p->mu);
            break;
        }
        pthread_mutex_unlock(&p->mu);

        if ((!lc || lc->broken || PQstatus(lc->pg) != CONNECTION_OK) &&
            now_ms() - last_listen > 1000) {
            core_dbconn_close(lc);
            lc = listen_open(p);
            last_listen = now_ms();
        }
        got = asked = 0;
        want = idle > 0 && work;
        c = want || now_ms() - last_stats > POOL_STATS_EVERY_MS
                ? core_db_acquire(p->db, 1000, &st)
                : NULL;
        if (c) {
            if (want) {
                got = claim(p, c, idle, &asked);
                /* Fewer than asked: nothing else is ready until new work
                 * is signalled (or the poll). None asked: an ingest's
                 * claim took the room meanwhile. */
                work = got < 0 || got == asked;
            }
            if (now_ms() - last_stats > POOL_STATS_EVERY_MS) {
                update_stats(p, c);
                last_stats = now_ms();
            }
            if (now_ms() - last_maint > POOL_MAINT_EVERY_S * 1000L) {
                maintenance(p, c);
                last_maint = now_ms();
            }
            core_db_release(p->db, c);
        }
        /* Claimed a full load: there may be more; go again at once. */
        if (got > 0 && got == asked)
            continue;
        waited_ms = got < 0 || (want && !c) ? 500 : POOL_POLL_MS;
        /* Work may be waiting but every slot was taken: ask for a wake-up
         * when one frees up (room_freed()), unless one did already. */
        pthread_mutex_lock(&p->mu);
        p->room_wanted = work && waited_ms == POOL_POLL_MS;
        if (p->room_wanted && room_locked(p) > 0) {
            p->room_wanted = 0;
            pthread_mutex_unlock(&p->mu);
            continue;
        }
        pthread_mutex_unlock(&p->mu);
        if (dispatcher_wait(p, lc, waited_ms))
            work = 1;
    }
    core_dbconn_close(lc);
    return NULL;
}

static struct inf_job *
pop_job(struct inf_pool *p)
{
    struct inf_job *j;

    pthread_mutex_lock(&p->mu);
    while (!p->ready.head && !p->stopping)
        pthread_cond_wait(&p->cv, &p->mu);
    j = fifo_pop(&p->ready);
    if (j) {
        p->queued--;
        p->busy++;
    }
    pthread_mutex_unlock(&p->mu);
    return j;
}

static void
release_job(struct inf_worker_ctx *w, struct inf_job *j)
{
    enum core_status st;
    struct core_dbconn *c = core_db_acquire(w->db, 2000, &st);

    if (c) {
        inf_job_release(w, c, j);
        core_db_release(w->db, c);
    }
}

/* A worker hands a thought job to delivery. */
static void
push_delivery(struct inf_pool *p, struct inf_job *j)
{
    int room;

    pthread_mutex_lock(&p->mu);
    fifo_push(&p->thought, j);
    p->busy--;
    p->delivering++;
    room = room_freed(p);
    pthread_mutex_unlock(&p->mu);
    pthread_cond_signal(&p->dcv);
    if (room)
        wake(p, WAKE_ROOM);
    core_metric_add(p->m.delivery_jobs, NULL, 1);
}

/* Next work for a delivery thread: a read receipt (*m) or a job; both
 * NULL when the pool stops and the queues are empty. */
static void
pop_delivery(struct inf_pool *p, struct inf_job **j, struct inf_mark **m)
{
    pthread_mutex_lock(&p->mu);
    while (!p->thought.head && !p->mhead && !p->dstopping)
        pthread_cond_wait(&p->dcv, &p->mu);
    *m = p->mhead;
    *j = NULL;
    if (*m) {
        p->mhead = (*m)->next;
        if (!p->mhead)
            p->mtail = NULL;
    } else {
        *j = fifo_pop(&p->thought);
    }
    pthread_mutex_unlock(&p->mu);
}

/* "worker-3" for the context named "w3" (top -H, perf). */
static void
name_thread(const char *role, const struct inf_worker_ctx *c)
{
    char name[48];

    snprintf(name, sizeof(name), "%s%s", role, c->name + 1);
    core_thread_name(name);
}

static void *
worker_main(void *arg)
{
    struct worker_slot *slot = arg;
    struct inf_pool *p = slot->pool;
    struct inf_job *j;
    int deliver, room;

    name_thread("worker-", &slot->ctx);
    while ((j = pop_job(p)) != NULL) {
        deliver = 0;
        core_metric_add(p->m.workers_busy, NULL, 1);
        if (atomic_load(&p->abandon)) {
            release_job(&slot->ctx, j);
            inf_job_discard(j);
        } else {
            deliver = inf_job_think(&slot->ctx, j);
        }
        core_metric_add(p->m.workers_busy, NULL, -1);
        if (deliver) {
            push_delivery(p, j);
            continue;
        }
        j->magic = 0;
        free(j);
        pthread_mutex_lock(&p->mu);
        p->busy--;
        room = room_freed(p);
        pthread_mutex_unlock(&p->mu);
        if (room)
            wake(p, WAKE_ROOM); /* a worker is free: the dispatcher may claim */
    }
    return NULL;
}

static void *
delivery_main(void *arg)
{
    struct worker_slot *slot = arg;
    struct inf_pool *p = slot->pool;
    struct inf_job *j;
    struct inf_mark *m;
    int more, room;

    name_thread("deliver-", &slot->ctx);
    for (;;) {
        pop_delivery(p, &j, &m);
        if (m) {
            inf_mark_send(&slot->ctx, m);
            continue;
        }
        if (!j)
            break;
        more = inf_job_deliver(&slot->ctx, j);
        j->magic = 0;
        free(j);
        pthread_mutex_lock(&p->mu);
        p->delivering--;
        room = room_freed(p);
        pthread_mutex_unlock(&p->mu);
        core_metric_add(p->m.delivery_jobs, NULL, -1);
        if (more)
            wake(p, WAKE_WORK);
        else if (room)
            wake(p, WAKE_ROOM);
    }
    return NULL;
}

static void
register_metrics(struct inf_metrics *m)
{
    static const double e2e_buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1,
                                          0.25,  0.5,  1,     2.5,  5,
                                          10,    30,   60,    120 };

    m->claims = core_metric_register(
        CORE_METRIC_COUNTER, "parley_queue_claims_total",
        "Conversations claimed by this process, by who claimed them: the "
        "dispatcher, or the ingest in a batch's round "
        "trip",
        NULL, 0);
    m->lease_expiries = core_metric_register(
        CORE_METRIC_COUNTER, "parley_queue_lease_expiries_total",
        "Conversations reclaimed after another owner's lease expired", NULL, 0);
    m->queue_depth =
        core_metric_register(CORE_METRIC_GAUGE, "parley_queue_depth",
                             "Conversations with unanswered messages", NULL, 0);
    m->oldest_pending = core_metric_register(
        CORE_METRIC_GAUGE, "parley_queue_oldest_pending_seconds",
        "Age of the oldest unanswered conversation", NULL, 0);
    m->workers_busy =
        core_metric_register(CORE_METRIC_GAUGE, "parley_workers_busy",
                             "Workers thinking (context, LLM call)", NULL, 0);
    m->delivery_jobs = core_metric_register(
        CORE_METRIC_GAUGE, "parley_delivery_jobs",
        "Thought jobs queued for or in delivery (recording, sending)", NULL, 0);
    m->jobs = core_metric_register(CORE_METRIC_COUNTER, "parley_jobs_total",
                                   "Jobs finished by result", NULL, 0);
    m->sends = core_metric_register(
        CORE_METRIC_COUNTER, "parley_sends_total",
        "Platform send calls by platform, result and error code", NULL, 0);
    m->e2e = core_metric_register(
        CORE_METRIC_HISTOGRAM, "parley_reply_latency_seconds",
        "Webhook received to reply accepted by the platform", e2e_buckets,
        sizeof(e2e_buckets) / sizeof(e2e_buckets[0]));
    m->wakeups = core_metric_register(
        CORE_METRIC_COUNTER, "parley_dispatcher_wakeups_total",
        "Dispatcher wake-ups that may call for a claim, by cause: local "
        "(new work committed in this process that its ingest's claim had "
        "no room for, or left by a finish), notify (another process's "
        "NOTIFY parley_work), own_notify (this process's own, ignored), "
        "poll (the timeout)",
        NULL, 0);
    m->stages = core_metric_register(
        CORE_METRIC_HISTOGRAM, "parley_job_stage_seconds",
        "A job's time per stage: wait (first pending message stored to "
        "claimed; PostgreSQL's clock against this host's), queue (claimed "
        "to a worker), handoff (thought to a delivery thread), intent, "
        "send, finish",
        core_metric_latency_buckets, core_metric_latency_nbuckets);
    m->dup_sends = core_metric_register(
        CORE_METRIC_COUNTER, "parley_possible_duplicate_sends_total",
        "Jobs redone after a crash between send and commit", NULL, 0);
    core_metric_add(m->claims, "by=\"dispatcher\"", 0);
    core_metric_add(m->claims, "by=\"ingest\"", 0);
    core_metric_add(m->lease_expiries, NULL, 0);
    core_metric_add(m->workers_busy, NULL, 0);
    core_metric_add(m->delivery_jobs, NULL, 0);
    core_metric_add(m->dup_sends, NULL, 0);
    core_metric_add(m->wakeups, "cause=\"local\"", 0);
    core_metric_add(m->wakeups, "cause=\"notify\"", 0);
    core_metric_add(m->wakeups, "cause=\"own_notify\"", 0);
    core_metric_add(m->wakeups, "cause=\"poll\"", 0);
}

static void
ctx_init(struct inf_pool *p, struct inf_worker_ctx *c, const char *prefix,
         int i)
{
    c->cfg = p->cfg;
    c->db = p->db;
    c->m = &p->m;
    c->abandon = &p->abandon;
    c->intents = p->intents;
    c->finishes = p->finishes;
    if (i < 0)
        snprintf(c->name, sizeof(c->name), "%s", prefix);
    else
        snprintf(c->name, sizeof(c->name), "%s%d", prefix, i);
}

struct inf_pool *
inf_pool_new(const struct core_config *cfg, struct core_db *db,
             const char *conninfo)
{
    struct inf_pool *p = calloc(1, sizeof(*p));
    int i;

    if (!p)
        return NULL;
    p->cfg = cfg;
    p->db = db;
    p->conninfo = strdup(conninfo);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    pthread_cond_init(&p->dcv, NULL);
    register_metrics(&p->m);
    if (!p->conninfo || pipe(p->wake_fd) != 0)
        goto fail;
    fcntl(p->wake_fd[0], F_SETFL, O_NONBLOCK);
    fcntl(p->wake_fd[1], F_SETFL, O_NONBLOCK);
    p->intents = core_batch_new(db, "intent", INF_SQL_INTENTS, cfg->workers);
    p->finishes = core_batch_new(db, "finish", INF_SQL_FINISHES, cfg->workers);
    if (!p->intents || !p->finishes)
        goto fail;
    core_batch_commit_async(p->intents); /* why: inference/job.c, B */
    p->threads = calloc((size_t)cfg->workers, sizeof(*p->threads));
    p->workers = calloc((size_t)cfg->workers, sizeof(*p->workers));
    p->dthreads = calloc((size_t)cfg->workers, sizeof(*p->dthreads));
    p->delivery = calloc((size_t)cfg->workers, sizeof(*p->delivery));
    if (!p->threads || !p->workers || !p->dthreads || !p->delivery)
        goto fail;
    ctx_init(p, &p->dctx, "dispatcher", -1);
    for (i = 0; i < cfg->workers; i++) {
        struct worker_slot *s = &p->delivery[i];

        s->pool = p;
        ctx_init(p, &s->ctx, "d", i);
        s->ctx.send_curl = curl_easy_init();
        if (!s->ctx.send_curl)
            goto fail;
        if (pthread_create(&p->dthreads[i], NULL, delivery_main, s) != 0)
            goto fail;
        p->ndelivery++;
    }
    for (i = 0; i < cfg->workers; i++) {
        struct worker_slot *s = &p->workers[i];

        s->pool = p;
        ctx_init(p, &s->ctx, "w", i);
        s->ctx.llm = inf_llm_new(cfg);
        s->ctx.send_curl = curl_easy_init();
        if (!s->ctx.llm || !s->ctx.send_curl)
            goto fail;
        if (pthread_create(&p->threads[i], NULL, worker_main, s) != 0)
            goto fail;
        p->nworkers++;
    }
    if (pthread_create(&p->dispatcher, NULL, dispatcher_main, p) != 0)
        goto fail;
    p->dispatcher_started = 1;
    log_info("worker pool started", "workers=%d delivery=%d owner=%s",
             p->nworkers, p->ndelivery, core_db_instance());
    return p;
fail:
    log_error("could not start the worker pool", "workers=%d", cfg->workers);
    inf_pool_shutdown(p, 0);
    inf_pool_free(p);
    return NULL;
}

void
inf_pool_shutdown(struct inf_pool *p, int deadline_ms)
{
    long t0 = now_ms();
    int busy, i;

    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    inf_pool_wake(p);
    if (p->dispatcher_started) {
        pthread_join(p->dispatcher, NULL);
        p->dispatcher_started = 0;
    }
    /* Jobs still queued are not started: give their leases back now so
     * another process takes them at once. Thought jobs are delivered. */
    atomic_store(&p->abandon, 1);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        busy = p->busy + p->queued + p->delivering;
        pthread_mutex_unlock(&p->mu);
        if (busy == 0 || now_ms() - t0 >= deadline_ms)
            break;
        usleep(20000);
    }
    if (busy > 0) {
        atomic_store(&p->abandon, 2);
        log_warn("shutdown deadline passed: cancelling jobs", "busy=%d", busy);
        for (i = 0; i < p->nworkers; i++)
            inf_llm_cancel(p->workers[i].ctx.llm);
    }
    for (i = 0; i < p->nworkers; i++)
        pthread_join(p->threads[i], NULL);
    p->nworkers = 0;
    /* No worker is left to hand over a job: delivery drains its queue. */
    pthread_mutex_lock(&p->mu);
    p->dstopping = 1;
    pthread_cond_broadcast(&p->dcv);
    pthread_mutex_unlock(&p->mu);
    for (i = 0; i < p->ndelivery; i++)
        pthread_join(p->dthreads[i], NULL);
    p->ndelivery = 0;
}

void
inf_pool_free(struct inf_pool *p)
{
    int i;

    if (!p)
        return;
    if (p->workers) {
        for (i = 0; i < p->cfg->workers; i++) {
            inf_llm_free(p->workers[i].ctx.llm);
            if (p->workers[i].ctx.send_curl)
                curl_easy_cleanup(p->workers[i].ctx.send_curl);
        }
    }
    if (p->delivery)
        for (i = 0; i < p->cfg->workers; i++)
            if (p->delivery[i].ctx.send_curl)
                curl_easy_cleanup(p->delivery[i].ctx.send_curl);
    free(p->workers);
    free(p->threads);
    free(p->delivery);
    free(p->dthreads);
    core_batch_free(p->intents); /* after the workers: none is waiting */
    core_batch_free(p->finishes);
    if (p->wake_fd[0] > 0) {
        close(p->wake_fd[0]);
        close(p->wake_fd[1]);
    }
    free(p->conninfo);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->dcv);
    free(p);
}
