/*
 * batchcheck - drive core/batch.c from many threads against a real
 * PostgreSQL, for tests/integration/test_batch.py.
 *
 *   batchcheck URL THREADS CALLS FAIL_EVERY SLEEP_MS
 *
 * Each thread makes CALLS calls of bc_call(jsonb) (created by the test)
 * through one core_batch; every FAIL_EVERY-th call asks the function to
 * raise, and every call asks it to sleep SLEEP_MS first (so that calls
 * pile up while a batch is in the database, however slow the threads). Prints
 * one JSON line: how many calls returned what they should, how many failed as
 * asked, any mismatch, and the batches run.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch.h"
#include "core/buf.h"
#include "core/db.h"
#include "core/metrics.h"

static const char SQL[] = "SELECT t.n, bc_call(t.j)"
                          " FROM jsonb_array_elements($1::jsonb)"
                          " WITH ORDINALITY AS t(j, n)";

static struct core_batch *batch;
static int ncalls, fail_every, sleep_ms;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int n_ok, n_failed, n_mismatch;

static void *
thread_main(void *arg)
{
    int t = (int)(long)arg, i;

    for (i = 0; i < ncalls; i++) {
        int v = t * 100000 + i, fail = fail_every > 0 && v % fail_every == 0;
        char in[96], want[32], *out = NULL;
        enum core_status st;

        snprintf(in, sizeof(in), "{\"v\": %d, \"fail\": %s, \"sleep_ms\": %d}",
                 v, fail ? "true" : "false", sleep_ms);
        snprintf(want, sizeof(want), "r%d", v);
        st = core_batch_call(batch, v, in, &out);
        pthread_mutex_lock(&mu);
        if (fail && st == CORE_ERR_DB && !out)
            n_failed++;
        else if (!fail && st == CORE_OK && out && strcmp(out, want) == 0)
            n_ok++;
        else
            n_mismatch++;
        pthread_mutex_unlock(&mu);
        free(out);
    }
    return NULL;
}

/* The value of `name{step="check"}` in the metrics text, or -1. */
static double
metric(const char *text, const char *name)
{
    char key[128];
    const char *p;

    snprintf(key, sizeof(key), "\n%s{step=\"check\"} ", name);
    p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

int
main(int argc, char **argv)
{
    struct core_db *db;
    struct core_buf m;
    pthread_t th[256];
    int nthreads, i;

    if (argc != 6) {
        fprintf(stderr,
                "usage: batchcheck URL THREADS CALLS FAIL_EVERY SLEEP_MS\n");
        return 2;
    }
    nthreads = atoi(argv[2]);
    ncalls = atoi(argv[3]);
    fail_every = atoi(argv[4]);
    sleep_ms = atoi(argv[5]);
    if (nthreads < 1 || nthreads > 256 || ncalls < 1)
        return 2;
    db = core_db_new(argv[1], 2);
    batch = db ? core_batch_new(db, "check", SQL, 64) : NULL;
    if (!batch)
        return 1;
    for (i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, thread_main, (void *)(long)i) != 0)
            return 1;
    for (i = 0; i < nthreads; i++)
        pthread_join(th[i], NULL);
    core_batch_free(batch);
    core_db_free(db);
    core_buf_init(&m, 1u << 20);
    core_buf_adds(&m, "\n");
    if (core_metrics_render(&m) != CORE_OK)
        return 1;
    printf("{\"ok\": %d, \"failed\": %d, \"mismatch\": %d, \"batches\": %.0f,"
           " \"calls\": %.0f, \"fallbacks\": %.0f}\n",
           n_ok, n_failed, n_mismatch,
           metric(m.data, "parley_db_batches_total"),
           metric(m.data, "parley_db_batch_calls_total"),
           metric(m.data, "parley_db_batch_fallbacks_total"));
    core_buf_done(&m);
    return 0;
}
