/*
 * The HTTP server (libmicrohttpd): routing, limits, health, readiness,
 * metrics and the platform webhooks.
 *
 * Design: MHD runs its own epoll thread pool (PARLEY_HTTP_THREADS). Handlers
 * never wait on the database for long and never on an LLM: a webhook POST is
 * verified and parsed on the HTTP thread, handed to the group committer
 * (gateway/ingest.h), and its connection is suspended until the transaction
 * holding its rows has committed; the committer resumes it to answer.
 */
#ifndef GATEWAY_HTTP_H
#define GATEWAY_HTTP_H

#include "core/config.h"
#include "core/db.h"
#include "core/status.h"
#include "gateway/ingest.h"

struct gw_server;

struct gw_server *gw_server_new(const struct core_config *cfg,
                                struct core_db *db, struct gw_ingest *ingest,
                                char *err, size_t errlen);
/* Stop accepting, wait up to deadline_ms for in-flight requests, stop. */
void gw_server_shutdown(struct gw_server *s, int deadline_ms);
void gw_server_free(struct gw_server *s);
unsigned short gw_server_port(const struct gw_server *s);

#endif
