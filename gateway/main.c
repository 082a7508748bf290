/*
 * parley: the command line (DESIGN §4). `serve` runs the gateway and the
 * worker pool in one process; `migrate` applies the schema.
 */
#include <curl/curl.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapters/adapter.h"
#include "analytics/erase.h"
#include "analytics/export.h"
#include "core/config.h"
#include "core/db.h"
#include "core/log.h"
#include "core/metrics.h"
#include "gateway/http.h"
#include "gateway/ingest.h"
#include "gateway/migrate.h"
#include "gateway/version.h"
#include "inference/pool.h"

#define SHUTDOWN_DEADLINE_MS 10000

static const char USAGE[] =
    "usage: parley <command> [options]\n"
    "\n"
    "commands:\n"
    "  serve [--no-workers | --workers-only]\n"
    "                      run the HTTP gateway and the inference workers\n"
    "  migrate             apply pending database migrations\n"
    "  migrate status      list migrations and whether they are applied\n"
    "  export --format FMT [--since T] [--until T] [--platform P]\n"
    "         [--max-per-user N] [--out FILE [--manifest FILE]]\n"
    "                      training data as JSONL (stdout unless --out):\n"
    "                      FMT sft, dpo, kto, openai-sft, openai-dpo or\n"
    "                      raw; T a timestamp or date (responses made at\n"
    "                      or after --since, before --until); texts\n"
    "                      PII-redacted, users pseudonymous, opted-out and\n"
    "                      erased users left out; --max-per-user: each\n"
    "                      user's N most recent at most; --manifest: per\n"
    "                      line its response ids and users (docs/DATA.md)\n"
    "  erase --platform P --platform-user ID | --user PSEUDONYM\n"
    "                      delete everything about one user (right to\n"
    "                      erasure) and print what was removed\n"
    "  version             print the version\n"
    "  --help              this text\n"
    "\n"
    "options for every command:\n"
    "  --config FILE       read KEY=value settings from FILE (the\n"
    "                      environment wins)\n"
    "\n"
    "configuration (environment; see README.md for all keys):\n"
    "  PARLEY_DATABASE_URL   libpq URL (default: the local cluster of\n"
    "                        `make run`, "
    "postgresql://postgres@127.0.0.1:54329/parley)\n"
    "  PARLEY_LISTEN         address:port (127.0.0.1:8080)\n"
    "  PARLEY_WORKERS        inference worker threads (16)\n"
    "  PARLEY_LLM_BASE_URL   OpenAI-compatible base URL (none: echo provider)\n"
    "  PARLEY_LLM_API_KEY, PARLEY_LLM_MODEL, PARLEY_LLM_TIMEOUT_MS,\n"
    "  PARLEY_LLM_MAX_TOKENS, PARLEY_SYSTEM_PROMPT\n"
    "  PARLEY_META_APP_SECRET, PARLEY_META_VERIFY_TOKEN,\n"
    "  PARLEY_WHATSAPP_TOKEN, PARLEY_MESSENGER_PAGE_TOKEN,\n"
    "  PARLEY_INSTAGRAM_TOKEN, PARLEY_GRAPH_API_BASE\n"
    "  PARLEY_OPERATOR_TOKEN, PARLEY_PSEUDONYM_KEY\n";

static void
die(int code, const char *what, const char *arg)
{
    fprintf(stderr, "parley: %s%s\n", what, arg);
    exit(code); /* NOLINT(concurrency-mt-unsafe): before any thread */
}

static const char *
db_url(const struct core_config *cfg)
{
    return cfg->database_url ? cfg->database_url : core_db_default_url();
}

/* The CLI's connection; on failure one line on stderr says why. */
static struct core_dbconn *
cli_connect(const struct core_config *cfg)
{
    struct core_dbconn *c;
    enum core_status st;
    char err[256] = "";

    c = core_dbconn_open(db_url(cfg), &st, err, sizeof(err));
    if (!c)
        fprintf(stderr, "parley: could not connect to the database: %s\n", err);
    return c;
}

static int
cmd_migrate(const struct core_config *cfg, int status_only)
{
    struct core_dbconn *c;
    enum core_status st;
    char err[512] = "";
    int pending = 0;

    c = cli_connect(cfg);
    if (!c)
        return 1;
    if (status_only)
        st = gw_migrate_status(c, stdout, &pending, err, sizeof(err));
    else
        st = gw_migrate_apply(c, stdout, err, sizeof(err));
    core_dbconn_close(c);
    if (st != CORE_OK) {
        fprintf(stderr, "parley: %s\n", err);
        return 1;
    }
    return 0;
}

static int
cmd_erase(const struct core_config *cfg, const char *platform,
          const char *platform_user, const char *pseudonym)
{
    struct core_dbconn *c;
    enum core_status st;
    char err[512] = "";

    if (!((platform && platform_user && !pseudonym) ||
          (!platform && !platform_user && pseudonym))) {
        fprintf(stderr, "parley: erase needs --platform and --platform-user,"
                        " or --user\n");
        return 2;
    }
    c = cli_connect(cfg);
    if (!c)
        return 1;
    st = ana_erase_user(c, platform, platform_user, pseudonym, stdout, err,
                        sizeof(err));
    core_dbconn_close(c);
    if (st != CORE_OK) {
        fprintf(stderr, "parley: %s\n", err);
        return 1;
    }
    return 0;
}

struct export_args {
    const char *format, *since, *until, *platform, *out, *manifest;
    const char *max_per_user;
};

/* An export output: stdout, or a file written as FILE.partial-XXXXXX
 * beside FILE and renamed over it only once complete and on disk, so FILE
 * is never half written. Mode 0600 (mkstemp's): the rows are personal
 * data, pseudonymised. */
struct out_file {
    const char *path; /* NULL: stdout */
    char *tmp;
    FILE *f;
};

static bool
out_open(struct out_file *o, const char *path)
{
    size_t n;
    int fd;

    o->path = path;
    o->tmp = NULL;
    o->f = stdout;
    if (!path)
        return true;
    n = strlen(path) + sizeof(".partial-XXXXXX");
    o->f = NULL;
    o->tmp = malloc(n);
    if (!o->tmp)
        return false;
    snprintf(o->tmp, n, "%s.partial-XXXXXX", path);
    fd = mkstemp(o->tmp);
    if (fd >= 0 && (o->f = fdopen(fd, "w")) != NULL)
        return true;
    if (fd >= 0) {
        close(fd);
        unlink(o->tmp);
    }
    free(o->tmp);
    o->tmp = NULL;
    return false;
}

/* Flush; for a file, put it on disk and close it (not yet in place). */
static enum core_status
out_finish(struct out_file *o, char *err, size_t errlen)
{
    FILE *f = o->f;
    int e = 0;

    o->f = NULL;
    if (fflush(f) != 0)
        e = errno;
    if (o->tmp) {
        if (!e && fsync(fileno(f)) != 0)
            e = errno;
        if (fclose(f) != 0 && !e)
            e = errno;
    }
    if (!e)
        return CORE_OK;
    snprintf(err, errlen, "writing %s: %s", o->path ? o->path : "the export",
             strerror(e)); /* NOLINT(concurrency-mt-unsafe) */
    return CORE_ERR_IO;
}

/* Put a finished file in place, or (st != CORE_OK) remove what was
 * written. */
static enum core_status
out_close(struct out_file *o, enum core_status st, char *err, size_t errlen)
{
    if (!o->tmp)
        return st;
    if (o->f)
        fclose(o->f);
    if (st == CORE_OK && rename(o->tmp, o->path) != 0) {
        snprintf(err, errlen, "renaming into %s: %s", o->path,
                 strerror(errno)); /* NOLINT(concurrency-mt-unsafe) */
        st = CORE_ERR_IO;
    }
    if (st != CORE_OK)
        unlink(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
    return st;
}

static int
cmd_export(const struct core_config *cfg, const struct export_args *a)
{
    struct ana_export_opts o = { .since = a->since,
                                 .until = a->until,
                                 .platform = a->platform };
    struct out_file rows_out = { 0 }, man_out = { 0 };
    struct core_dbconn *c;
    enum core_status st;
    char err[512] = "";
    long rows = 0, skipped = 0;

    if (!a->format) {
        fprintf(stderr, "parley: export needs --format (sft, dpo, kto,"
                        " openai-sft, openai-dpo or raw)\n");
        return 2;
    }
    if (ana_export_format_parse(a->format, &o.format) != CORE_OK) {
        fprintf(stderr,
                "parley: unknown export format: %s (sft, dpo, kto,"
                " openai-sft, openai-dpo or raw)\n",
                a->format);
        return 2;
    }
    if (a->platform && !adp_find(a->platform)) {
        fprintf(stderr, "parley: unknown platform: %s\n", a->platform);
        return 2;
    }
    if (a->max_per_user) {
        char *end;

        errno = 0;
        o.max_per_user = strtol(a->max_per_user, &end, 10);
        if (errno || end == a->max_per_user || *end || o.max_per_user < 1 ||
            o.max_per_user > 1000000000L) {
            fprintf(stderr, "parley: --max-per-user wants a number from 1"
                            " to 1000000000\n");
            return 2;
        }
    }
    if (a->manifest && a->out && strcmp(a->manifest, a->out) == 0) {
        fprintf(stderr, "parley: --manifest and --out name the same file\n");
        return 2;
    }
    if (a->manifest && !a->out) {
        fprintf(stderr, "parley: --manifest needs --out\n");
        return 2;
    }
    c = cli_connect(cfg);
    if (!c)
        return 1;
    if (!out_open(&rows_out, a->out) ||
        (a->manifest && !out_open(&man_out, a->manifest))) {
        fprintf(stderr, "parley: cannot write %s: %s\n",
                rows_out.f ? a->manifest : a->out,
                strerror(errno)); /* NOLINT(concurrency-mt-unsafe) */
        out_close(&rows_out, CORE_ERR_IO, err, sizeof(err));
        core_dbconn_close(c);
        return 1;
    }
    st = ana_export(c, &o, rows_out.f, a->manifest ? man_out.f : NULL, &rows,
                    &skipped, err, sizeof(err));
    core_dbconn_close(c);
    if (st == CORE_OK)
        st = out_finish(&rows_out, err, sizeof(err));
    if (st == CORE_OK && a->manifest)
        st = out_finish(&man_out, err, sizeof(err));
    st = out_close(&rows_out, st, err, sizeof(err));
    st = out_close(&man_out, st, err, sizeof(err));
    if (st != CORE_OK) {
        fprintf(stderr, "parley: export: %s\n", err);
        return 1;
    }
    fprintf(stderr, "parley: exported %ld %s rows%s", rows,
            ana_export_format_name(o.format), a->out ? " to " : "");
    if (a->out)
        fputs(a->out, stderr);
    if (skipped)
        fprintf(stderr,
                "; skipped %ld responses whose stored prompt is not"
                " a list of text messages",
                skipped);
    fputc('\n', stderr);
    return 0;
}

static int
cmd_serve(const struct core_config *cfg, int workers, int gateway)
{
    struct core_db *db = NULL, *ingest_db = NULL;
    struct gw_ingest *ingest = NULL;
    struct gw_server *srv = NULL;
    struct inf_pool *pool = NULL;
    sigset_t set;
    char err[256];
    int sig = 0, rc = 1;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    core_config_log(cfg);
    if (!cfg->database_url)
        log_info("using the local database", "url=%s", core_db_default_url());
    db = core_db_new(db_url(cfg), cfg->db_pool_size);
    if (!db) {
        fprintf(stderr, "parley: out of memory\n");
        goto out;
    }
    if (workers) {
        pool = inf_pool_new(cfg, db, db_url(cfg));
        if (!pool) {
            fprintf(stderr, "parley: could not start the worker pool\n");
            goto out;
        }
    }
    if (gateway) {
        /* The committers get connections of their own: behind 64 busy
         * workers in one pool, webhook acks waited for a connection. */
        ingest_db = core_db_new(db_url(cfg), cfg->ingest_committers + 1);
        ingest = ingest_db ? gw_ingest_new(cfg, ingest_db,
                                           cfg->ingest_committers, pool)
                           : NULL;
        if (!ingest) {
            fprintf(stderr, "parley: could not start ingest\n");
            goto out;
        }
    }
    /* --workers-only still serves /healthz, /readyz and /metrics. */
    srv = gw_server_new(cfg, db, ingest, err, sizeof(err));
    if (!srv) {
        fprintf(stderr, "parley: %s\n", err);
        goto out;
    }
    log_info("listening", "addr=%s:%u version=%s webhooks=%s", cfg->listen_host,
             gw_server_port(srv), PARLEY_VERSION, ingest ? "on" : "off");
    sigwait(&set, &sig);
    log_info("shutting down", "signal=%d", sig);
    rc = 0;
out:
    gw_server_shutdown(srv, SHUTDOWN_DEADLINE_MS);
    gw_ingest_free(ingest);
    inf_pool_shutdown(pool, SHUTDOWN_DEADLINE_MS);
    gw_server_free(srv);
    inf_pool_free(pool);
    core_db_free(ingest_db);
    core_db_free(db);
    if (rc == 0)
        log_info("stopped", "%s", "");
    return rc;
}

int
main(int argc, char **argv)
{
    struct core_config cfg;
    const char *cmd = NULL, *sub = NULL, *config_path = NULL;
    const char *e_platform = NULL, *e_puser = NULL, *e_user = NULL;
    struct export_args ex = { 0 };
    /* Options that take a value, and where it goes. */
    const struct {
        const char *name;
        const char **dst;
    } valued[] = {
        { "--config", &config_path },    { "--platform", &e_platform },
        { "--platform-user", &e_puser }, { "--user", &e_user },
        { "--format", &ex.format },      { "--since", &ex.since },
        { "--until", &ex.until },        { "--out", &ex.out },
        { "--manifest", &ex.manifest },  { "--max-per-user", &ex.max_per_user },
    };
    int i, workers = 1, gateway = 1, rc;
    size_t k;
    char err[512];

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **dst = NULL;

        for (k = 0; k < sizeof(valued) / sizeof(valued[0]); k++)
            if (strcmp(a, valued[k].name) == 0)
                dst = valued[k].dst;
        if (dst) {
            if (i + 1 >= argc)
                die(2, "option needs a value: ", a);
            *dst = argv[++i];
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0 ||
                   strcmp(a, "help") == 0) {
            fputs(USAGE, stdout);
            return 0;
        } else if (strcmp(a, "--no-workers") == 0) {
            workers = 0;
        } else if (strcmp(a, "--workers-only") == 0) {
            gateway = 0;
        } else if (a[0] == '-') {
            die(2, "unknown option (see parley --help): ", a);
        } else if (!cmd) {
            cmd = a;
        } else if (!sub) {
            sub = a;
        } else {
            die(2, "unexpected argument (see parley --help): ", a);
        }
    }
    if (!cmd) {
        fputs(USAGE, stderr);
        return 2;
    }
    if (strcmp(cmd, "version") == 0 && !sub) {
        printf("parley %s\n", PARLEY_VERSION);
        return 0;
    }
    if (strcmp(cmd, "serve") != 0 && strcmp(cmd, "migrate") != 0 &&
        strcmp(cmd, "erase") != 0 && strcmp(cmd, "export") != 0)
        die(2, "unknown command (see parley --help): ", cmd);
    if ((e_puser || e_user) && strcmp(cmd, "erase") != 0)
        die(2, "--platform-user and --user apply to erase only", "");
    if (e_platform && strcmp(cmd, "erase") != 0 && strcmp(cmd, "export") != 0)
        die(2, "--platform applies to erase and export only", "");
    if ((ex.format || ex.since || ex.until || ex.out) &&
        strcmp(cmd, "export") != 0)
        die(2, "--format, --since, --until and --out apply to export only", "");
    if (sub && !(strcmp(cmd, "migrate") == 0 && strcmp(sub, "status") == 0))
        die(2, "unexpected argument (see parley --help): ", sub);
    if ((!workers || !gateway) && strcmp(cmd, "serve") != 0)
        die(2, "--no-workers and --workers-only apply to serve only", "");
    if (!workers && !gateway)
        die(2, "--no-workers and --workers-only exclude each other", "");

    if (core_config_load(&cfg, config_path, err, sizeof(err)) != CORE_OK)
        die(1, "configuration: ", err);
    core_log_set_level((enum core_log_level)cfg.log_level);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (strcmp(cmd, "migrate") == 0)
        rc = cmd_migrate(&cfg, sub != NULL);
    else if (strcmp(cmd, "erase") == 0)
        rc = cmd_erase(&cfg, e_platform, e_puser, e_user);
    else if (strcmp(cmd, "export") == 0) {
        ex.platform = e_platform;
        rc = cmd_export(&cfg, &ex);
    } else
        rc = cmd_serve(&cfg, workers, gateway);
    core_config_free(&cfg);
    core_metrics_reset();
    curl_global_cleanup();
    return rc;
}
