/*
 * Schema migrations: migrations/NNNN_name.sql, embedded in the binary at
 * build time, each applied once, in order, in its own transaction, recorded
 * in schema_migrations with its SHA-256. Concurrent runs serialise on an
 * advisory lock; an applied migration whose text changed is an error.
 */
#ifndef GATEWAY_MIGRATE_H
#define GATEWAY_MIGRATE_H

#include <stdbool.h>
#include <stdio.h>

#include "core/db.h"
#include "core/status.h"

struct gw_migration {
    const char *name; /* "0001_core" */
    const char *sql;
};

extern const struct gw_migration gw_migrations[];
extern const int gw_nmigrations;

/* Apply pending migrations; progress lines go to out (may be NULL). */
enum core_status gw_migrate_apply(struct core_dbconn *c, FILE *out, char *err,
                                  size_t errlen);
/* Print each migration with applied/pending; *pending gets the count. */
enum core_status gw_migrate_status(struct core_dbconn *c, FILE *out,
                                   int *pending, char *err, size_t errlen);
/* True when every embedded migration is applied with a matching checksum. */
enum core_status gw_migrate_current(struct core_dbconn *c, bool *current);

#endif
