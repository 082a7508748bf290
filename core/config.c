/*
 * Configuration loading and validation (DESIGN §5). Values come from an
 * optional KEY=value file, then the environment, which wins. Every value is
 * validated once at start-up; errors name the key.
 */
#include "core/config.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

#define CFG_FILE_MAX_LINES 512

struct cfg_kv {
    char *key;
    char *val;
};

struct cfg_file {
    struct cfg_kv kv[CFG_FILE_MAX_LINES];
    int n;
};

static char *
trim(char *s)
{
    char *e;

    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s &&
           (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\n' || e[-1] == '\r'))
        *--e = '\0';
    return s;
}

static enum core_status
file_load(struct cfg_file *f, const char *path, char *err, size_t errlen)
{
    FILE *fp = fopen(path, "r");
    char *line = NULL;
    size_t linecap = 0;
    int lineno = 0;

    if (!fp) {
        snprintf(err, errlen, "could not open config file %s: %s", path,
                 strerror(errno)); /* NOLINT(concurrency-mt-unsafe) */
        return CORE_ERR_CONFIG;
    }
    while (getline(&line, &linecap, fp) >= 0) {
        char *p = trim(line), *eq, *v;
        size_t vl;

        lineno++;
        if (*p == '\0' || *p == '#')
            continue;
        eq = strchr(p, '=');
        if (!eq || f->n >= CFG_FILE_MAX_LINES) {
            snprintf(err, errlen, "%s:%d: expected KEY=value", path, lineno);
            free(line);
            fclose(fp);
            return CORE_ERR_CONFIG;
        }
        *eq = '\0';
        v = trim(eq + 1);
        vl = strlen(v);
        if (vl >= 2 && (v[0] == '"' || v[0] == '\'') && v[vl - 1] == v[0]) {
            v[vl - 1] = '\0';
            v++;
        }
        f->kv[f->n].key = strdup(trim(p));
        f->kv[f->n].val = strdup(v);
        f->n++;
    }
    free(line);
    fclose(fp);
    return CORE_OK;
}

static void
file_free(struct cfg_file *f)
{
    int i;

    for (i = 0; i < f->n; i++) {
        free(f->kv[i].key);
        free(f->kv[i].val);
    }
    f->n = 0;
}

/* Environment first, then the file; empty values count as unset. */
static const char *
get(const struct cfg_file *f, const char *key)
{
    const char *v = getenv(key); /* NOLINT(concurrency-mt-unsafe): start-up */
    int i;

    if (v && *v)
        return v;
    for (i = f->n - 1; i >= 0; i--)
        if (strcmp(f->kv[i].key, key) == 0)
            return f->kv[i].val[0] ? f->kv[i].val : NULL;
    return NULL;
}

static char *
dup_or(const struct cfg_file *f, const char *key, const char *def)
{
    const char *v = get(f, key);

    if (!v)
        v = def;
    return v ? strdup(v) : NULL;
}

static enum core_status
get_long(const struct cfg_file *f, const char *key, long def, long min,
         long max, long *out, char *err, size_t errlen)
{
    const char *v = get(f, key);
    char *end;
    long n;

    if (!v) {
        *out = def;
        return CORE_OK;
    }
    errno = 0;
    n = strtol(v, &end, 10);
    if (errno || end == v || *end != '\0') {
        snprintf(err, errlen, "%s: not an integer: \"%.40s\"", key, v);
        return CORE_ERR_CONFIG;
    }
    if (n < min || n > max) {
        snprintf(err, errlen, "%s: %ld out of range [%ld, %ld]", key, n, min,
                 max);
        return CORE_ERR_CONFIG;
    }
    *out = n;
    return CORE_OK;
}

static enum core_status
get_double(const struct cfg_file *f, const char *key, double def, double min,
           double max, double *out, char *err, size_t errlen)
{
    const char *v = get(f, key);
    char *end;
    double d;

    if (!v) {
        *out = def;
        return CORE_OK;
    }
    errno = 0;
    d = strtod(v, &end);
    if (errno || end == v || *end != '\0' || d < min || d > max) {
        snprintf(err, errlen, "%s: expected a number in [%g, %g]: \"%.40s\"",
                 key, min, max, v);
        return CORE_ERR_CONFIG;
    }
    *out = d;
    return CORE_OK;
}

static enum core_status
parse_listen(struct core_config *cfg, const char *v, char *err, size_t errlen)
{
    const char *colon = strrchr(v, ':');
    char *end;
    long port;
    size_t hl;

    if (!colon || colon == v)
        goto bad;
    errno = 0;
    port = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || end == colon + 1 || port < 0 || port > 65535)
        goto bad;
    hl = (size_t)(colon - v);
    if (v[0] == '[' && hl >= 2 && v[hl - 1] == ']') {
        v++;
        hl -= 2;
    }
    cfg->listen_host = strndup(v, hl);
    cfg->listen_port = (unsigned short)port;
    return CORE_OK;
bad:
    snprintf(err, errlen, "PARLEY_LISTEN: expected address:port, got \"%.60s\"",
             v);
    return CORE_ERR_CONFIG;
}

#define DEFAULT_SYSTEM_PROMPT                                                \
    "You are a helpful, concise assistant chatting inside a messaging app. " \
    "Answer in the language the user wrote in. Keep answers short unless "   \
    "asked for detail."
#define DEFAULT_APOLOGY \
    "Sorry, I can't answer right now. Please try again in a few minutes."

static enum core_status
load_numbers(struct core_config *cfg, const struct cfg_file *f, char *err,
             size_t errlen)
{
    long v;

#define NUM(key, def, lo, hi, field, type)                             \
    do {                                                               \
        if (get_long(f, key, def, lo, hi, &v, err, errlen) != CORE_OK) \
            return CORE_ERR_CONFIG;                                    \
        cfg->field = (type)v;                                          \
    } while (0)
    NUM("PARLEY_WORKERS", 16, 1, 1024, workers, int);
    NUM("PARLEY_HTTP_THREADS", 2, 1, 256, http_threads, int);
    NUM("PARLEY_INGEST_COMMITTERS", 2, 1, 64, ingest_committers, int);
    NUM("PARLEY_DB_POOL_SIZE", 0, 0, 512, db_pool_size, int);
    NUM("PARLEY_BODY_MAX_BYTES", 4L << 20, 1024, 64L << 20, body_max_bytes,
        size_t);
    NUM("PARLEY_LLM_TIMEOUT_MS", 30000, 100, 600000, llm_timeout_ms, long);
    NUM("PARLEY_LLM_MAX_TOKENS", 512, 1, 1000000, llm_max_tokens, int);
    NUM("PARLEY_LLM_MAX_ATTEMPTS", 4, 1, 20, llm_max_attempts, int);
    NUM("PARLEY_LLM_STREAM", 1, 0, 1, llm_stream, bool);
    NUM("PARLEY_CONTEXT_TOKENS", 3000, 100, 1000000, context_tokens, int);
    NUM("PARLEY_LEASE_MS", 120000, 1000, 3600000, lease_ms, int);
    NUM("PARLEY_RETENTION_DAYS", 395, 1, 36500, retention_days, int);
#undef NUM
    /* Workers hold a connection only for short transactions; the ingest
     * committers have their own. */
    if (cfg->db_pool_size == 0)
        cfg->db_pool_size = cfg->http_threads + cfg->workers / 2 + 4;
    if (get_double(f, "PARLEY_LLM_TEMPERATURE", 0.7, 0.0, 2.0,
                   &cfg->llm_temperature, err, errlen) != CORE_OK)
        return CORE_ERR_CONFIG;
    if (get_double(f, "PARLEY_FEEDBACK_SAMPLE", 0.1, 0.0, 1.0,
                   &cfg->feedback_sample, err, errlen) != CORE_OK)
        return CORE_ERR_CONFIG;
    return CORE_OK;
}

static enum core_status
load_enums(struct core_config *cfg, const struct cfg_file *f, char *err,
           size_t errlen)
{
    const char *v;
    int lvl;

    v = get(f, "PARLEY_LOG_LEVEL");
    lvl = v ? core_log_parse_level(v) : CORE_LOG_INFO;
    if (lvl < 0) {
        snprintf(err, errlen,
                 "PARLEY_LOG_LEVEL: expected debug, info, warn or error");
        return CORE_ERR_CONFIG;
    }
    cfg->log_level = lvl;

    v = get(f, "PARLEY_FEEDBACK");
    if (!v || strcmp(v, "off") == 0)
        cfg->feedback_mode = CORE_FEEDBACK_OFF;
    else if (strcmp(v, "all") == 0)
        cfg->feedback_mode = CORE_FEEDBACK_ALL;
    else if (strcmp(v, "sampled") == 0)
        cfg->feedback_mode = CORE_FEEDBACK_SAMPLED;
    else {
        snprintf(err, errlen, "PARLEY_FEEDBACK: expected off, all or sampled");
        return CORE_ERR_CONFIG;
    }
    return CORE_OK;
}

static enum core_status
load_urls(struct core_config *cfg, const struct cfg_file *f, char *err,
          size_t errlen)
{
    struct {
        const char *key;
        char **field;
        const char *def;
    } urls[] = {
        { "PARLEY_LLM_BASE_URL", &cfg->llm_base_url, NULL },
        { "PARLEY_GRAPH_API_BASE", &cfg->graph_api_base,
          "https://graph.facebook.com/v21.0" },
        { "PARLEY_TELEGRAM_API_BASE", &cfg->telegram_api_base,
          "https://api.telegram.org" },
        { "PARLEY_SLACK_API_BASE", &cfg->slack_api_base,
          "https://slack.com/api" },
    };
    size_t i, n;

    for (i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        *urls[i].field = dup_or(f, urls[i].key, urls[i].def);
        if (!*urls[i].field)
            continue;
        if (strncmp(*urls[i].field, "http://", 7) != 0 &&
            strncmp(*urls[i].field, "https://", 8) != 0) {
            snprintf(err, errlen, "%s: expected an http:// or https:// URL",
                     urls[i].key);
            return CORE_ERR_CONFIG;
        }
        n = strlen(*urls[i].field);
        while (n > 0 && (*urls[i].field)[n - 1] == '/')
            (*urls[i].field)[--n] = '\0';
    }
    return CORE_OK;
}

static int
policy_parse(const char *v, size_t n)
{
    if (n == 3 && strncmp(v, "off", 3) == 0)
        return CORE_AD_OFF;
    if (n == 9 && strncmp(v, "aggregate", 9) == 0)
        return CORE_AD_AGGREGATE;
    if (n == 4 && strncmp(v, "user", 4) == 0)
        return CORE_AD_USER;
    return -1;
}

/* "platform=policy,..." with policy off, aggregate or user. */
static enum core_status
check_ad_signals(const char *spec, char *err, size_t errlen)
{
    const char *p = spec;

    while (*p) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');

        if (!end)
            end = p + strlen(p);
        if (!eq || eq > end || eq == p || strchr(" \t", *p) ||
            (eq[-1] == ' ' || eq[-1] == '\t') ||
            policy_parse(eq + 1, (size_t)(end - eq - 1)) < 0) {
            snprintf(err, errlen,
                     "PARLEY_AD_SIGNALS: expected platform=off|aggregate|user"
                     "[,...]");
            return CORE_ERR_CONFIG;
        }
        p = *end ? end + 1 : end;
    }
    return CORE_OK;
}

enum core_ad_policy
core_config_ad_policy(const struct core_config *cfg, const char *platform)
{
    size_t pl = strlen(platform);
    const char *p = cfg->ad_signals;

    while (p && *p) {
        const char *eq = strchr(p, '='), *end = strchr(p, ',');

        if (!end)
            end = p + strlen(p);
        if (eq && (size_t)(eq - p) == pl && strncmp(p, platform, pl) == 0)
            return (enum core_ad_policy)policy_parse(eq + 1,
                                                     (size_t)(end - eq - 1));
        p = *end ? end + 1 : end;
    }
    if (strcmp(platform, "whatsapp") == 0)
        return CORE_AD_AGGREGATE;
    if (strcmp(platform, "slack") == 0)
        return CORE_AD_OFF;
    return CORE_AD_USER;
}

enum core_status
core_config_load(struct core_config *cfg, const char *path, char *err,
                 size_t errlen)
{
    struct cfg_file *f = calloc(1, sizeof(*f));
    const char *v;
    enum core_status st = CORE_ERR_CONFIG;

    memset(cfg, 0, sizeof(*cfg));
    if (!f) {
        snprintf(err, errlen, "out of memory");
        return CORE_ERR_NOMEM;
    }
    if (!path)
        path = getenv("PARLEY_CONFIG_FILE"); /* NOLINT(concurrency-mt-unsafe) */
    if (path && *path && file_load(f, path, err, errlen) != CORE_OK)
        goto out;

    cfg->database_url = dup_or(f, "PARLEY_DATABASE_URL", NULL);
    v = get(f, "PARLEY_LISTEN");
    if (parse_listen(cfg, v ? v : "127.0.0.1:8080", err, errlen) != CORE_OK)
        goto out;
    if (load_numbers(cfg, f, err, errlen) != CORE_OK ||
        load_enums(cfg, f, err, errlen) != CORE_OK ||
        load_urls(cfg, f, err, errlen) != CORE_OK)
        goto out;

    cfg->llm_api_key = dup_or(f, "PARLEY_LLM_API_KEY", NULL);
    cfg->llm_model = dup_or(f, "PARLEY_LLM_MODEL", "llama-3.1-8b-instant");
    cfg->system_prompt =
        dup_or(f, "PARLEY_SYSTEM_PROMPT", DEFAULT_SYSTEM_PROMPT);
    cfg->apology_text = dup_or(f, "PARLEY_APOLOGY_TEXT", DEFAULT_APOLOGY);
    cfg->meta_app_secret = dup_or(f, "PARLEY_META_APP_SECRET", NULL);
    cfg->meta_verify_token = dup_or(f, "PARLEY_META_VERIFY_TOKEN", NULL);
    cfg->whatsapp_token = dup_or(f, "PARLEY_WHATSAPP_TOKEN", NULL);
    cfg->messenger_page_token = dup_or(f, "PARLEY_MESSENGER_PAGE_TOKEN", NULL);
    cfg->instagram_token = dup_or(f, "PARLEY_INSTAGRAM_TOKEN", NULL);
    cfg->telegram_bot_token = dup_or(f, "PARLEY_TELEGRAM_BOT_TOKEN", NULL);
    cfg->telegram_secret_token =
        dup_or(f, "PARLEY_TELEGRAM_SECRET_TOKEN", NULL);
    cfg->slack_signing_secret = dup_or(f, "PARLEY_SLACK_SIGNING_SECRET", NULL);
    cfg->slack_bot_token = dup_or(f, "PARLEY_SLACK_BOT_TOKEN", NULL);
    cfg->operator_token = dup_or(f, "PARLEY_OPERATOR_TOKEN", NULL);
    cfg->pseudonym_key = dup_or(f, "PARLEY_PSEUDONYM_KEY", NULL);
    cfg->feedback_emoji = dup_or(f, "PARLEY_FEEDBACK_EMOJI", NULL);
    cfg->ad_signals = dup_or(f, "PARLEY_AD_SIGNALS", NULL);
    if (cfg->ad_signals &&
        check_ad_signals(cfg->ad_signals, err, errlen) != CORE_OK)
        goto out;
    if (!cfg->llm_model || !cfg->system_prompt || !cfg->apology_text) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    st = CORE_OK;
out:
    file_free(f);
    free(f);
    if (st != CORE_OK)
        core_config_free(cfg);
    return st;
}

void
core_config_free(struct core_config *cfg)
{
    char **fields[] = {
        &cfg->database_url,
        &cfg->listen_host,
        &cfg->llm_base_url,
        &cfg->llm_api_key,
        &cfg->llm_model,
        &cfg->system_prompt,
        &cfg->apology_text,
        &cfg->meta_app_secret,
        &cfg->meta_verify_token,
        &cfg->whatsapp_token,
        &cfg->messenger_page_token,
        &cfg->instagram_token,
        &cfg->graph_api_base,
        &cfg->telegram_bot_token,
        &cfg->telegram_secret_token,
        &cfg->telegram_api_base,
        &cfg->slack_signing_secret,
        &cfg->slack_bot_token,
        &cfg->slack_api_base,
        &cfg->operator_token,
        &cfg->pseudonym_key,
        &cfg->feedback_emoji,
        &cfg->ad_signals,
    };
    size_t i;

    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        free(*fields[i]);
        *fields[i] = NULL;
    }
}

const char *
core_config_mask(const char *secret)
{
    return secret && *secret ? "set" : "unset";
}

void
core_config_log(const struct core_config *cfg)
{
    log_info("configuration",
             "listen=%s:%u workers=%d http_threads=%d db_pool=%d "
             "database=%s llm=%s model=%s llm_key=%s meta_secret=%s "
             "whatsapp_token=%s messenger_token=%s instagram_token=%s "
             "graph_api_base=%s operator_token=%s pseudonym_key=%s",
             cfg->listen_host, cfg->listen_port, cfg->workers,
             cfg->http_threads, cfg->db_pool_size,
             cfg->database_url ? "configured" : "local",
             cfg->llm_base_url ? cfg->llm_base_url : "echo", cfg->llm_model,
             core_config_mask(cfg->llm_api_key),
             core_config_mask(cfg->meta_app_secret),
             core_config_mask(cfg->whatsapp_token),
             core_config_mask(cfg->messenger_page_token),
             core_config_mask(cfg->instagram_token), cfg->graph_api_base,
             core_config_mask(cfg->operator_token),
             core_config_mask(cfg->pseudonym_key));
}
