/* Migration runner; see migrate.h. */
#include "gateway/migrate.h"

#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define MIGRATE_LOCK_KEY "7234001"

static const char SQL_CREATE[] =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version text PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";
static const char SQL_GET[] =
    "SELECT checksum FROM schema_migrations WHERE version = $1";
static const char SQL_PUT[] = "INSERT INTO schema_migrations (version, name, "
                              "checksum) VALUES ($1, $2, $3)";
static const char SQL_ALL[] =
    "SELECT version, checksum, applied_at FROM schema_migrations";

static void
sha256_hex(const char *s, char out[65])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    size_t i;
    static const char hex[] = "0123456789abcdef";

    EVP_Digest(s, strlen(s), md, &n, EVP_sha256(), NULL);
    for (i = 0; i < n && i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[2 * i] = '\0';
}

static void
version_of(const char *name, char out[16])
{
    size_t i;

    for (i = 0; i < 15 && name[i] >= '0' && name[i] <= '9'; i++)
        out[i] = name[i];
    out[i] = '\0';
}

/* Checksum recorded for version, or "" when not applied. */
static enum core_status
applied_checksum(struct core_dbconn *c, const char *version, char out[65])
{
    const char *p[1] = { version };
    PGresult *r;
    enum core_status st = core_db_query(c, SQL_GET, 1, p, &r);

    out[0] = '\0';
    if (st != CORE_OK)
        return st;
    if (PQntuples(r) == 1)
        snprintf(out, 65, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return CORE_OK;
}

static enum core_status
apply_one(struct core_dbconn *c, const struct gw_migration *m,
          const char *version, const char *sum, char *err, size_t errlen)
{
    const char *p[3] = { version, m->name, sum };
    enum core_status st;

    st = core_db_begin(c);
    if (st == CORE_OK)
        st = core_db_exec(c, m->sql);
    if (st == CORE_OK)
        st = core_db_query(c, SQL_PUT, 3, p, NULL);
    if (st == CORE_OK)
        st = core_db_commit(c);
    if (st != CORE_OK) {
        snprintf(err, errlen, "could not apply migration %s: %s", m->name,
                 c->error);
        core_db_rollback(c);
    }
    return st;
}

enum core_status
gw_migrate_apply(struct core_dbconn *c, FILE *out, char *err, size_t errlen)
{
    enum core_status st;
    char version[16], sum[65], have[65];
    int i, applied = 0;

    (void)core_db_exec(c, "SET client_min_messages = warning");
    st = core_db_exec(c, "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")");
    if (st != CORE_OK) {
        snprintf(err, errlen, "could not lock migrations: %s", c->error);
        return st;
    }
    st = core_db_exec(c, SQL_CREATE);
    if (st != CORE_OK) {
        snprintf(err, errlen, "could not create schema_migrations: %s",
                 c->error);
        goto out;
    }
    for (i = 0; i < gw_nmigrations; i++) {
        const struct gw_migration *m = &gw_migrations[i];

        version_of(m->name, version);
        sha256_hex(m->sql, sum);
        st = applied_checksum(c, version, have);
        if (st != CORE_OK) {
            snprintf(err, errlen, "could not read schema_migrations: %s",
                     c->error);
            goto out;
        }
        if (have[0]) {
            if (strcmp(have, sum) != 0) {
                snprintf(err, errlen,
                         "migration %s was changed after it was applied "
                         "(checksum %.12s, expected %.12s)",
                         m->name, sum, have);
                st = CORE_ERR_CONFLICT;
                goto out;
            }
            continue;
        }
        st = apply_one(c, m, version, sum, err, errlen);
        if (st != CORE_OK)
            goto out;
        applied++;
        if (out)
            fprintf(out, "applied %s\n", m->name);
    }
    if (out)
        fprintf(out, "%d applied, %d already current\n", applied,
                gw_nmigrations - applied);
out:
    (void)core_db_exec(c, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")");
    return st;
}

/* Fetch all applied rows; NULL result when the table does not exist yet. */
static enum core_status
load_applied(struct core_dbconn *c, PGresult **res)
{
    PGresult *r;
    enum core_status st;

    *res = NULL;
    st = core_db_query(c, "SELECT to_regclass('schema_migrations') IS NOT NULL",
                       0, NULL, &r);
    if (st != CORE_OK)
        return st;
    if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
        PQclear(r);
        return CORE_OK;
    }
    PQclear(r);
    return core_db_query(c, SQL_ALL, 0, NULL, res);
}

static int
find_row(PGresult *r, const char *version)
{
    int i;

    for (i = 0; r && i < PQntuples(r); i++)
        if (strcmp(PQgetvalue(r, i, 0), version) == 0)
            return i;
    return -1;
}

enum core_status
gw_migrate_status(struct core_dbconn *c, FILE *out, int *pending, char *err,
                  size_t errlen)
{
    PGresult *r = NULL;
    char version[16], sum[65];
    enum core_status st = load_applied(c, &r);
    int i, row;

    *pending = 0;
    if (st != CORE_OK) {
        snprintf(err, errlen, "could not read schema_migrations: %s", c->error);
        return st;
    }
    for (i = 0; i < gw_nmigrations; i++) {
        version_of(gw_migrations[i].name, version);
        sha256_hex(gw_migrations[i].sql, sum);
        row = find_row(r, version);
        if (row < 0) {
            (*pending)++;
            fprintf(out, "pending   %s\n", gw_migrations[i].name);
        } else if (strcmp(PQgetvalue(r, row, 1), sum) != 0) {
            fprintf(out, "CHANGED   %s (applied %s)\n", gw_migrations[i].name,
                    PQgetvalue(r, row, 2));
        } else {
            fprintf(out, "applied   %s (%s)\n", gw_migrations[i].name,
                    PQgetvalue(r, row, 2));
        }
    }
    fprintf(out, "%d migrations, %d pending\n", gw_nmigrations, *pending);
    PQclear(r);
    return CORE_OK;
}

enum core_status
gw_migrate_current(struct core_dbconn *c, bool *current)
{
    PGresult *r = NULL;
    char version[16], sum[65];
    enum core_status st = load_applied(c, &r);
    int i, row;

    *current = false;
    if (st != CORE_OK)
        return st;
    *current = r != NULL;
    for (i = 0; *current && i < gw_nmigrations; i++) {
        version_of(gw_migrations[i].name, version);
        sha256_hex(gw_migrations[i].sql, sum);
        row = find_row(r, version);
        if (row < 0 || strcmp(PQgetvalue(r, row, 1), sum) != 0)
            *current = false;
    }
    PQclear(r);
    return CORE_OK;
}
