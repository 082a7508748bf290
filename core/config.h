/*
 * Configuration: DESIGN §5 environment variables, optionally from a config
 * file with the same keys (KEY=value lines; the environment wins).
 * Loaded and validated once at start-up; immutable afterwards, so any thread
 * may read it without locking.
 */
#ifndef CORE_CONFIG_H
#define CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/status.h"

enum core_feedback_mode {
    CORE_FEEDBACK_OFF = 0,
    CORE_FEEDBACK_ALL,
    CORE_FEEDBACK_SAMPLED
};

enum core_ad_policy {
    CORE_AD_OFF = 0,   /* no ad signals at all */
    CORE_AD_AGGREGATE, /* user-less daily counts only */
    CORE_AD_USER       /* per-user signals and profile (never sensitive) */
};

struct core_config {
    char *database_url; /* PARLEY_DATABASE_URL; NULL: local cluster */
    char *listen_host;  /* from PARLEY_LISTEN */
    unsigned short listen_port;
    int workers;           /* PARLEY_WORKERS */
    int http_threads;      /* PARLEY_HTTP_THREADS */
    int ingest_committers; /* PARLEY_INGEST_COMMITTERS */
    int db_pool_size;      /* PARLEY_DB_POOL_SIZE */
    size_t body_max_bytes; /* PARLEY_BODY_MAX_BYTES, default 4 MiB */
    int log_level;         /* PARLEY_LOG_LEVEL */

    char *llm_base_url; /* NULL: echo provider */
    char *llm_api_key;  /* secret */
    char *llm_model;
    long llm_timeout_ms;
    int llm_max_tokens;
    double llm_temperature; /* PARLEY_LLM_TEMPERATURE */
    int llm_max_attempts;   /* PARLEY_LLM_MAX_ATTEMPTS */
    bool llm_stream;        /* PARLEY_LLM_STREAM */
    char *system_prompt;
    int context_tokens; /* PARLEY_CONTEXT_TOKENS */
    char *apology_text; /* PARLEY_APOLOGY_TEXT */
    int lease_ms;       /* PARLEY_LEASE_MS */

    char *meta_app_secret;      /* secret */
    char *meta_verify_token;    /* secret */
    char *whatsapp_token;       /* secret */
    char *messenger_page_token; /* secret */
    char *instagram_token;      /* secret */
    char *graph_api_base;

    char *telegram_bot_token;    /* secret */
    char *telegram_secret_token; /* secret */
    char *telegram_api_base;
    char *slack_signing_secret; /* secret */
    char *slack_bot_token;      /* secret */
    char *slack_api_base;

    char *operator_token; /* secret */
    char *pseudonym_key;  /* secret; NULL: generated, kept in the db */

    enum core_feedback_mode feedback_mode; /* PARLEY_FEEDBACK */
    double feedback_sample;                /* PARLEY_FEEDBACK_SAMPLE */
    int retention_days;                    /* PARLEY_RETENTION_DAYS */
    char *feedback_emoji; /* PARLEY_FEEDBACK_EMOJI: "👍=+1,👎=-1,..." */
    char *ad_signals;     /* PARLEY_AD_SIGNALS: "whatsapp=aggregate,..." */
};

/* Ad-signal policy of a platform (PARLEY_AD_SIGNALS, else the default:
 * WhatsApp aggregate (its terms forbid per-user profiles), Slack off, the
 * others user). */
enum core_ad_policy core_config_ad_policy(const struct core_config *cfg,
                                          const char *platform);

/*
 * Load from the environment (and the file named by PARLEY_CONFIG_FILE or
 * `path` when not NULL). On error, writes a one-line message naming the key
 * into err and returns CORE_ERR_CONFIG.
 */
enum core_status core_config_load(struct core_config *cfg, const char *path,
                                  char *err, size_t errlen);
void core_config_free(struct core_config *cfg);
/* Log the effective configuration with secrets masked. */
void core_config_log(const struct core_config *cfg);
/* "set" for a present secret, "unset" otherwise: never the value. */
const char *core_config_mask(const char *secret);

#endif
