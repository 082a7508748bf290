/*
 * Prometheus metrics registry; see metrics.h.
 *
 * Design: a global, append-only list of metrics under one registry mutex
 * (taken only to register and to render). Each metric has its own mutex
 * guarding its series; updates take only that one.
 */
#include "core/metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define METRIC_MAX_SERIES  512
#define METRIC_MAX_BUCKETS 24

const double core_metric_latency_buckets[] = { 0.0005, 0.001, 0.0025, 0.005,
                                               0.01,   0.025, 0.05,   0.1,
                                               0.25,   0.5,   1,      2.5,
                                               5,      10,    30 };
const size_t core_metric_latency_nbuckets =
    sizeof(core_metric_latency_buckets) /
    sizeof(core_metric_latency_buckets[0]);

struct metric_series {
    char *labels;
    double value; /* counter / gauge */
    double sum;   /* histogram */
    unsigned long long count;
    unsigned long long *buckets;
};

struct core_metric {
    enum core_metric_type type;
    char *name;
    char *help;
    double bounds[METRIC_MAX_BUCKETS];
    size_t nbounds;
    pthread_mutex_t mu;
    struct metric_series *series;
    size_t nseries, capseries;
    size_t dropped; /* series refused past METRIC_MAX_SERIES */
    struct core_metric *next;
};

static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct core_metric *registry_head, *registry_tail;

struct core_metric *
core_metric_register(enum core_metric_type type, const char *name,
                     const char *help, const double *buckets, size_t nbuckets)
{
    struct core_metric *m;

    pthread_mutex_lock(&registry_mu);
    for (m = registry_head; m; m = m->next)
        if (strcmp(m->name, name) == 0)
            goto out;
    m = calloc(1, sizeof(*m));
    if (!m)
        goto out;
    m->type = type;
    m->name = strdup(name);
    m->help = strdup(help);
    if (type == CORE_METRIC_HISTOGRAM) {
        if (!buckets) {
            buckets = core_metric_latency_buckets;
            nbuckets = core_metric_latency_nbuckets;
        }
        if (nbuckets > METRIC_MAX_BUCKETS)
            nbuckets = METRIC_MAX_BUCKETS;
        memcpy(m->bounds, buckets, nbuckets * sizeof(double));
        m->nbounds = nbuckets;
    }
    pthread_mutex_init(&m->mu, NULL);
    if (registry_tail)
        registry_tail->next = m;
    else
        registry_head = m;
    registry_tail = m;
out:
    pthread_mutex_unlock(&registry_mu);
    return m;
}

/* Find or create the series for labels; call with m->mu held. */
static struct metric_series *
series_get(struct core_metric *m, const char *labels)
{
    struct metric_series *s;
    size_t i;

    if (!labels)
        labels = "";
    for (i = 0; i < m->nseries; i++)
        if (strcmp(m->series[i].labels, labels) == 0)
            return &m->series[i];
    if (m->nseries >= METRIC_MAX_SERIES) {
        m->dropped++;
        return NULL;
    }
    if (m->nseries == m->capseries) {
        size_t ncap = m->capseries ? m->capseries * 2 : 8;
        struct metric_series *p = realloc(m->series, ncap * sizeof(*p));

        if (!p)
            return NULL;
        m->series = p;
        m->capseries = ncap;
    }
    s = &m->series[m->nseries];
    memset(s, 0, sizeof(*s));
    s->labels = strdup(labels);
    if (!s->labels)
        return NULL;
    if (m->type == CORE_METRIC_HISTOGRAM) {
        s->buckets = calloc(m->nbounds + 1, sizeof(*s->buckets));
        if (!s->buckets) {
            free(s->labels);
            return NULL;
        }
    }
    m->nseries++;
    return s;
}

void
core_metric_add(struct core_metric *m, const char *labels, double v)
{
    struct metric_series *s;

    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    s = series_get(m, labels);
    if (s)
        s->value += v;
    pthread_mutex_unlock(&m->mu);
}

void
core_metric_set(struct core_metric *m, const char *labels, double v)
{
    struct metric_series *s;

    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    s = series_get(m, labels);
    if (s)
        s->value = v;
    pthread_mutex_unlock(&m->mu);
}

void
core_metric_observe(struct core_metric *m, const char *labels, double v)
{
    struct metric_series *s;
    size_t i;

    if (!m)
        return;
    pthread_mutex_lock(&m->mu);
    s = series_get(m, labels);
    if (s) {
        for (i = 0; i < m->nbounds; i++)
            if (v <= m->bounds[i])
                s->buckets[i]++;
        s->count++;
        s->sum += v;
    }
    pthread_mutex_unlock(&m->mu);
}

static const char *
type_name(enum core_metric_type t)
{
    switch (t) {
    case CORE_METRIC_COUNTER:
        return "counter";
    case CORE_METRIC_GAUGE:
        return "gauge";
    case CORE_METRIC_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

static enum core_status
render_histogram(struct core_buf *out, const struct core_metric *m,
                 const struct metric_series *s)
{
    const char *sep = s->labels[0] ? "," : "";
    enum core_status st = CORE_OK;
    size_t i;

    for (i = 0; i < m->nbounds && st == CORE_OK; i++)
        st = core_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", m->name,
                             s->labels, sep, m->bounds[i], s->buckets[i]);
    if (st == CORE_OK)
        st = core_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", m->name,
                             s->labels, sep, s->count);
    if (st == CORE_OK && s->labels[0])
        st = core_buf_printf(out, "%s_sum{%s} %.9g\n%s_count{%s} %llu\n",
                             m->name, s->labels, s->sum, m->name, s->labels,
                             s->count);
    else if (st == CORE_OK)
        st = core_buf_printf(out, "%s_sum %.9g\n%s_count %llu\n", m->name,
                             s->sum, m->name, s->count);
    return st;
}

enum core_status
core_metrics_render(struct core_buf *out)
{
    struct core_metric *m;
    enum core_status st = CORE_OK;
    size_t i;

    pthread_mutex_lock(&registry_mu);
    for (m = registry_head; m && st == CORE_OK; m = m->next) {
        pthread_mutex_lock(&m->mu);
        st = core_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", m->name,
                             m->help, m->name, type_name(m->type));
        for (i = 0; i < m->nseries && st == CORE_OK; i++) {
            const struct metric_series *s = &m->series[i];

            if (m->type == CORE_METRIC_HISTOGRAM)
                st = render_histogram(out, m, s);
            else if (s->labels[0])
                st = core_buf_printf(out, "%s{%s} %.17g\n", m->name, s->labels,
                                     s->value);
            else
                st = core_buf_printf(out, "%s %.17g\n", m->name, s->value);
        }
        pthread_mutex_unlock(&m->mu);
    }
    pthread_mutex_unlock(&registry_mu);
    return st;
}

void
core_metrics_reset(void)
{
    struct core_metric *m, *next;
    size_t i;

    pthread_mutex_lock(&registry_mu);
    for (m = registry_head; m; m = next) {
        next = m->next;
        for (i = 0; i < m->nseries; i++) {
            free(m->series[i].labels);
            free(m->series[i].buckets);
        }
        free(m->series);
        free(m->name);
        free(m->help);
        pthread_mutex_destroy(&m->mu);
        free(m);
    }
    registry_head = registry_tail = NULL;
    pthread_mutex_unlock(&registry_mu);
}
