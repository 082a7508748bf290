/*
 * vmprobe: what the machine itself does to a thread that nothing else may
 * preempt. A bench diagnostic, not part of Parley.
 *
 * It runs at SCHED_FIFO (when allowed), so no ordinary process can delay
 * it: every period it sleeps to an absolute deadline and records how late
 * it woke, and every few periods it times two units of work of fixed
 * size (so that runs compare): one in registers (--alu-iters xorshift
 * steps, ~0.2 ms here) and one a chain of dependent loads (--mem-loads,
 * ~0.4-0.7 ms here) across --mem-mb of memory (cache and TLB misses: what
 * the host's memory and its page tables give this vCPU). On
 * bare metal all stay flat. On a virtual machine, a late wake-up with
 * nothing runnable above it is the host not running this vCPU, and a
 * slower work unit is the host giving this vCPU less.
 *
 * Every --window-s seconds it prints one line:
 *   unix_s work_p50_us work_p99_us late_p50_us late_p99_us late_max_us
 *   n_late_over_1ms mem_p50_us mem_p99_us
 * (unix_s: the wall clock at the window's end, to line it up with a log;
 * one line each)
 * and runs until SIGINT/SIGTERM. It costs about one wake-up per period
 * and the two units every --work-every periods.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile sig_atomic_t stop;

static void
on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A fixed amount of dependent integer work; the result is returned so the
 * compiler keeps it. */
static uint64_t
work(uint64_t iters)
{
    uint64_t x = 88172645463325252ULL, i;

    for (i = 0; i < iters; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    return x;
}

/* Follow the chain through `next` for `steps` loads. */
static size_t
chase(const size_t *next, size_t at, uint64_t steps)
{
    uint64_t i;

    for (i = 0; i < steps; i++)
        at = next[at];
    return at;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

static int64_t
pct(int64_t *v, size_t n, double p)
{
    size_t i;

    if (n == 0)
        return 0;
    qsort(v, n, sizeof(*v), cmp_i64);
    i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i];
}

static void
usage(void)
{
    fprintf(stderr, "usage: vmprobe [--period-us 1000] [--alu-iters 128000] "
                    "[--mem-loads 1000] "
                    "[--work-every 200] [--window-s 5] [--mem-mb 64] "
                    "[--no-fifo]\n");
}

int
main(int argc, char **argv)
{
    long period_us = 1000, work_every = 200, window_s = 5;
    long alu_iters = 128000, mem_loads = 1000;
    long mem_mb = 64;
    size_t *chain, nslots, at = 0;
    int64_t *mems;
    size_t nmems = 0;
    int fifo = 1, i;
    uint64_t iters, steps, sink = 0;
    int64_t *late, *works, t0, next, win_end;
    size_t nlate = 0, nworks = 0, cap;
    long tick = 0, over1 = 0;
    struct sigaction sa;

    for (i = 1; i < argc; i++) {
        long *dst = NULL;

        if (strcmp(argv[i], "--period-us") == 0)
            dst = &period_us;
        else if (strcmp(argv[i], "--alu-iters") == 0)
            dst = &alu_iters;
        else if (strcmp(argv[i], "--mem-loads") == 0)
            dst = &mem_loads;
        else if (strcmp(argv[i], "--work-every") == 0)
            dst = &work_every;
        else if (strcmp(argv[i], "--window-s") == 0)
            dst = &window_s;
        else if (strcmp(argv[i], "--mem-mb") == 0)
            dst = &mem_mb;
        else if (strcmp(argv[i], "--no-fifo") == 0) {
            fifo = 0;
            continue;
        } else {
            usage();
            return 2;
        }
        if (++i >= argc || (*dst = strtol(argv[i], NULL, 10)) <= 0) {
            usage();
            return 2;
        }
    }
    iters = (uint64_t)alu_iters;
    steps = (uint64_t)mem_loads;
    cap = (size_t)(window_s * 1000000 / period_us) + 16;
    late = calloc(cap, sizeof(*late));
    works = calloc(cap, sizeof(*works));
    mems = calloc(cap, sizeof(*mems));
    nslots = (size_t)mem_mb * 1024 * 1024 / sizeof(size_t);
    chain = malloc(nslots * sizeof(*chain));
    if (!late || !works || !mems || !chain) {
        fprintf(stderr, "vmprobe: out of memory\n");
        return 1;
    }

    /* One random cycle through every slot (Sattolo's shuffle): each load
     * lands at a random place in the buffer and waits for the one before,
     * so with a buffer larger than the caches nearly every load misses. */
    {
        size_t k;
        uint64_t r = 0x9e3779b97f4a7c15ULL;

        for (k = 0; k < nslots; k++)
            chain[k] = k;
        for (k = nslots - 1; k > 0; k--) {
            size_t j, t;

            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            j = (size_t)(r % k);
            t = chain[k];
            chain[k] = chain[j];
            chain[j] = t;
        }
    }

    if (fifo) {
        struct sched_param sp = { .sched_priority = 50 };

        if (sched_setscheduler(0, SCHED_FIFO, &sp) != 0)
            fprintf(stderr,
                    "vmprobe: SCHED_FIFO refused (%s); as a normal "
                    "process its lateness includes other processes\n",
                    strerror(errno));
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    printf("# vmprobe: period %ld us, work units every %ld periods: %llu ALU "
           "iterations, %llu loads across %ld MB; %s\n",
           period_us, work_every, (unsigned long long)iters,
           (unsigned long long)steps, mem_mb,
           fifo ? "SCHED_FIFO" : "normal priority");
    printf("# unix_s work_p50_us work_p99_us late_p50_us late_p99_us "
           "late_max_us n_late_over_1ms mem_p50_us mem_p99_us\n");
    fflush(stdout);

    t0 = now_ns();
    next = t0 + period_us * 1000;
    win_end = t0 + window_s * 1000000000LL;
    while (!stop) {
        struct timespec ts = { .tv_sec = (time_t)(next / 1000000000),
                               .tv_nsec = (long)(next % 1000000000) };
        int64_t woke;

        if (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
            continue; /* a signal: the loop condition decides */
        woke = now_ns();
        if (nlate < cap)
            late[nlate++] = woke - next;
        if (woke - next > 1000000)
            over1++;
        if (++tick % work_every == 0 && nworks < cap) {
            int64_t a = now_ns();

            sink += work(iters);
            works[nworks++] = now_ns() - a;
            a = now_ns();
            at = chase(chain, at, steps);
            mems[nmems++] = now_ns() - a;
        }
        next += period_us * 1000;
        if (next < woke) /* a stall longer than a period: skip, not burst */
            next = woke + period_us * 1000;
        if (woke >= win_end) {
            int64_t lmax = 0;
            struct timespec wall;
            size_t k;

            for (k = 0; k < nlate; k++)
                if (late[k] > lmax)
                    lmax = late[k];
            clock_gettime(CLOCK_REALTIME, &wall);
            printf("%.1f %.1f %.1f %.1f %.1f %.1f %ld %.1f %.1f\n",
                   (double)wall.tv_sec + (double)wall.tv_nsec / 1e9,
                   (double)pct(works, nworks, 0.5) / 1e3,
                   (double)pct(works, nworks, 0.99) / 1e3,
                   (double)pct(late, nlate, 0.5) / 1e3,
                   (double)pct(late, nlate, 0.99) / 1e3, (double)lmax / 1e3,
                   over1, (double)pct(mems, nmems, 0.5) / 1e3,
                   (double)pct(mems, nmems, 0.99) / 1e3);
            fflush(stdout);
            nlate = nworks = nmems = 0;
            over1 = 0;
            win_end += window_s * 1000000000LL;
        }
    }
    free(chain);
    free(mems);
    free(works);
    free(late);
    return sink + at == 42 ? 3 : 0; /* keeps `sink` and `at` live */
}
