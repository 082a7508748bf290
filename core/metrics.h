/*
 * A small Prometheus metrics registry: counters, gauges and histograms with
 * labels, rendered in the text exposition format (version 0.0.4).
 *
 * Design: metrics are registered once (idempotent by name, thread-safe) and
 * then updated from any thread. Each metric keeps its series in a small
 * array keyed by the preformatted label string, under its own mutex; label
 * sets are few (platform x result), so a linear search is cheap.
 * labels: NULL or a preformatted label list without braces, e.g.
 *   "platform=\"whatsapp\",result=\"ok\""
 */
#ifndef CORE_METRICS_H
#define CORE_METRICS_H

#include <stddef.h>

#include "core/buf.h"

enum core_metric_type {
    CORE_METRIC_COUNTER = 0,
    CORE_METRIC_GAUGE,
    CORE_METRIC_HISTOGRAM
};

struct core_metric;

/* Buckets (upper bounds, ascending) are copied; only for histograms. */
struct core_metric *core_metric_register(enum core_metric_type type,
                                         const char *name, const char *help,
                                         const double *buckets,
                                         size_t nbuckets);

void core_metric_add(struct core_metric *m, const char *labels, double v);
void core_metric_set(struct core_metric *m, const char *labels, double v);
void core_metric_observe(struct core_metric *m, const char *labels, double v);

/* Default latency buckets in seconds (0.0005 .. 30). */
extern const double core_metric_latency_buckets[];
extern const size_t core_metric_latency_nbuckets;

/* Render every metric into out. */
enum core_status core_metrics_render(struct core_buf *out);
/* Free the registry (tests, shutdown). */
void core_metrics_reset(void);

#endif
