/*
 * Unit tests for core/: the bounded buffer, configuration loading and
 * validation (environment and file), status names, logging and the
 * Prometheus metrics registry (including concurrent updates, run under TSan).
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/status.h"

extern char **environ;

/* ---- helpers ------------------------------------------------------------ */

/* Unset every PARLEY_* variable so each config test starts from nothing. */
static void
clear_parley_env(void)
{
    char *names[256];
    int n = 0, i;
    char **e;

    for (e = environ; *e && n < 256; e++) {
        const char *eq = strchr(*e, '=');

        if (strncmp(*e, "PARLEY_", 7) == 0 && eq)
            names[n++] = strndup(*e, (size_t)(eq - *e));
    }
    for (i = 0; i < n; i++) {
        assert_non_null(names[i]);
        assert_int_equal(unsetenv(names[i]), 0);
        free(names[i]);
    }
    for (e = environ; *e; e++)
        assert_false(strncmp(*e, "PARLEY_", 7) == 0);
}

static int
env_setup(void **state)
{
    (void)state;
    clear_parley_env();
    return 0;
}

static int
env_teardown(void **state)
{
    (void)state;
    clear_parley_env();
    return 0;
}

static int
metrics_teardown(void **state)
{
    (void)state;
    core_metrics_reset();
    return 0;
}

/* Write text to a new temporary file; returns its malloc'd path. */
static char *
write_temp(const char *text)
{
    char tmpl[] = "/tmp/parley-test-XXXXXX";
    int fd = mkstemp(tmpl);
    size_t len = strlen(text);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(close(fd), 0);
    return strdup(tmpl);
}

/* Read a whole file into a malloc'd NUL-terminated string. */
static char *
read_all(const char *path)
{
    FILE *fp = fopen(path, "r");
    struct core_buf b;
    char chunk[1024];
    size_t n;

    assert_non_null(fp);
    core_buf_init(&b, 1 << 20);
    while ((n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        assert_int_equal(core_buf_add(&b, chunk, n), CORE_OK);
    fclose(fp);
    return core_buf_take(&b);
}

/* Redirect stderr to a temporary file around fn(arg); returns the text. */
static char *
capture_stderr(void (*fn)(const void *), const void *arg)
{
    char tmpl[] = "/tmp/parley-stderr-XXXXXX";
    int fd = mkstemp(tmpl), saved;
    char *text;

    assert_true(fd >= 0);
    fflush(stderr);
    saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fd, STDERR_FILENO) >= 0);
    fn(arg);
    fflush(stderr);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(fd);
    text = read_all(tmpl);
    unlink(tmpl);
    return text;
}

/* Load with the current environment; expect failure naming `key`. */
static void
expect_config_error(const char *path, const char *key)
{
    struct core_config cfg;
    char err[256] = "";

    assert_int_equal(core_config_load(&cfg, path, err, sizeof(err)),
                     CORE_ERR_CONFIG);
    if (!strstr(err, key))
        fail_msg("error \"%s\" does not name %s", err, key);
    /* a failed load leaves nothing to free, and freeing again is safe */
    assert_null(cfg.listen_host);
    assert_null(cfg.llm_base_url);
    assert_null(cfg.graph_api_base);
    core_config_free(&cfg);
}

/* ---- core/buf ----------------------------------------------------------- */

static void
test_buf_growth(void **state)
{
    struct core_buf b;
    char expect[10000];
    size_t i;
    (void)state;

    core_buf_init(&b, 1 << 20);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    for (i = 0; i < sizeof(expect); i++) {
        char c = (char)('a' + (char)(i % 26));

        expect[i] = c;
        assert_int_equal(core_buf_add(&b, &c, 1), CORE_OK);
        assert_int_equal(b.len, i + 1);
        assert_true(b.cap >= b.len + 1);
        assert_int_equal(b.data[b.len], '\0');
    }
    assert_memory_equal(b.data, expect, sizeof(expect));
    assert_true(b.cap <= b.max + 1);
    /* embedded NUL bytes are content, counted in len */
    assert_int_equal(core_buf_add(&b, "x\0y", 3), CORE_OK);
    assert_int_equal(b.len, sizeof(expect) + 3);
    assert_memory_equal(b.data + sizeof(expect), "x\0y", 4);
    /* adding nothing is fine and changes nothing */
    assert_int_equal(core_buf_add(&b, "", 0), CORE_OK);
    assert_int_equal(b.len, sizeof(expect) + 3);
    core_buf_done(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    core_buf_done(&b); /* twice is harmless */
}

static void
test_buf_max(void **state)
{
    struct core_buf b;
    (void)state;

    core_buf_init(&b, 10);
    assert_int_equal(core_buf_adds(&b, "12345678"), CORE_OK);
    assert_int_equal(core_buf_adds(&b, "abc"), CORE_ERR_TOO_LARGE);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    assert_int_equal(core_buf_printf(&b, "%d", 123), CORE_ERR_TOO_LARGE);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    /* exactly the maximum fits */
    assert_int_equal(core_buf_adds(&b, "90"), CORE_OK);
    assert_string_equal(b.data, "1234567890");
    assert_int_equal(b.len, 10);
    assert_true(b.cap <= 11);
    assert_int_equal(core_buf_add(&b, "", 0), CORE_OK);
    assert_int_equal(core_buf_add(&b, "x", 1), CORE_ERR_TOO_LARGE);
    assert_int_equal(core_buf_printf(&b, "%s", ""), CORE_OK);
    assert_int_equal(core_buf_printf(&b, "%c", 'x'), CORE_ERR_TOO_LARGE);
    assert_string_equal(b.data, "1234567890");
    /* a huge length must not overflow the size arithmetic (p is not read) */
    assert_int_equal(core_buf_add(&b, "x", SIZE_MAX), CORE_ERR_TOO_LARGE);
    assert_int_equal(core_buf_add(&b, "x", SIZE_MAX - 5), CORE_ERR_TOO_LARGE);
    assert_string_equal(b.data, "1234567890");
    core_buf_done(&b);

    /* a first add bigger than the maximum allocates nothing */
    core_buf_init(&b, 4);
    assert_int_equal(core_buf_adds(&b, "hello"), CORE_ERR_TOO_LARGE);
    assert_int_equal(b.len, 0);
    assert_null(b.data);
    core_buf_done(&b);

    /* max 0: only the empty string */
    core_buf_init(&b, 0);
    assert_int_equal(core_buf_add(&b, "", 0), CORE_OK);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    assert_int_equal(core_buf_adds(&b, "a"), CORE_ERR_TOO_LARGE);
    core_buf_done(&b);
}

static void
test_buf_printf(void **state)
{
    struct core_buf b;
    char big[1000];
    (void)state;

    core_buf_init(&b, 4096);
    assert_int_equal(core_buf_printf(&b, "%s=%d", "workers", 16), CORE_OK);
    assert_string_equal(b.data, "workers=16");
    assert_int_equal(b.len, 10);
    assert_int_equal(
        core_buf_printf(&b, " %05.1f|%-3s|%llx", 2.5, "a", 0xabcULL), CORE_OK);
    assert_string_equal(b.data, "workers=16 002.5|a  |abc");
    assert_int_equal(b.len, strlen(b.data));
    /* a formatted piece larger than the initial allocation */
    memset(big, 'z', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    core_buf_reset(&b);
    assert_int_equal(core_buf_printf(&b, "<%s>", big), CORE_OK);
    assert_int_equal(b.len, sizeof(big) + 1);
    assert_int_equal(b.data[0], '<');
    assert_int_equal(b.data[b.len - 1], '>');
    assert_int_equal(b.data[b.len], '\0');
    assert_int_equal(strlen(b.data), b.len);
    /* mixing add and printf keeps one string */
    assert_int_equal(core_buf_adds(&b, "!"), CORE_OK);
    assert_int_equal(core_buf_printf(&b, "%s", ""), CORE_OK);
    assert_int_equal(strlen(b.data), b.len);
    assert_int_equal(b.data[b.len - 1], '!');
    core_buf_done(&b);
}

static void
test_buf_take_reset(void **state)
{
    struct core_buf b;
    char *s;
    size_t cap;
    (void)state;

    /* take from a buffer that never allocated: an empty string */
    core_buf_init(&b, 64);
    s = core_buf_take(&b);
    assert_non_null(s);
    assert_string_equal(s, "");
    free(s);

    assert_int_equal(core_buf_adds(&b, "hello"), CORE_OK);
    cap = b.cap;
    core_buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_non_null(b.data);
    assert_string_equal(b.data, "");
    assert_int_equal(b.cap, cap); /* memory kept for reuse */
    assert_int_equal(core_buf_adds(&b, "world"), CORE_OK);
    assert_string_equal(b.data, "world");

    s = core_buf_take(&b);
    assert_string_equal(s, "world");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    assert_int_equal(b.max, 64);
    /* the buffer is usable again and independent of the taken string */
    assert_int_equal(core_buf_adds(&b, "again"), CORE_OK);
    assert_string_equal(b.data, "again");
    assert_string_equal(s, "world");
    free(s);
    core_buf_done(&b);

    /* reset of a never-used buffer is harmless */
    core_buf_init(&b, 8);
    core_buf_reset(&b);
    assert_int_equal(b.len, 0);
    core_buf_done(&b);
}

/* ---- core/status, core/log ---------------------------------------------- */

static void
test_status_names(void **state)
{
    int i, j;
    (void)state;

    assert_string_equal(core_status_str(CORE_OK), "ok");
    assert_string_equal(core_status_str(CORE_ERR_TOO_LARGE), "too_large");
    assert_string_equal(core_status_str(CORE_ERR_CONFIG), "config");
    assert_string_equal(core_status_str(CORE_ERR_INTERNAL), "internal");
    for (i = CORE_OK; i <= CORE_ERR_INTERNAL; i++) {
        const char *a = core_status_str((enum core_status)i);

        assert_string_not_equal(a, "unknown");
        for (j = i + 1; j <= CORE_ERR_INTERNAL; j++)
            assert_string_not_equal(a, core_status_str((enum core_status)j));
    }
    assert_string_equal(core_status_str((enum core_status)999), "unknown");
}

static void
log_some(const void *arg)
{
    (void)arg;
    core_log_set_level(CORE_LOG_INFO);
    log_debug("hidden", "k=%d", 1);
    core_log_set_request_id("req-42");
    log_info("listening", "addr=%s port=%d", "127.0.0.1", 8080);
    core_log_set_request_id(NULL);
    log_error("failed", "code=%d", 7);
    core_log_set_level(CORE_LOG_ERROR);
    log_warn("hidden too", "k=%d", 2);
    core_log_set_level(CORE_LOG_INFO);
}

static void
test_log(void **state)
{
    char *out;
    const char *l2;
    (void)state;

    assert_int_equal(core_log_parse_level("debug"), CORE_LOG_DEBUG);
    assert_int_equal(core_log_parse_level("INFO"), CORE_LOG_INFO);
    assert_int_equal(core_log_parse_level("warn"), CORE_LOG_WARN);
    assert_int_equal(core_log_parse_level("error"), CORE_LOG_ERROR);
    assert_int_equal(core_log_parse_level("verbose"), -1);
    assert_int_equal(core_log_parse_level(""), -1);

    out = capture_stderr(log_some, NULL);
    assert_null(strstr(out, "hidden"));
    assert_true(strncmp(out, "ts=", 3) == 0);
    assert_non_null(strstr(out,
                           "Z level=info msg=\"listening\" "
                           "request_id=req-42 addr=127.0.0.1 port=8080\n"));
    l2 = strchr(out, '\n');
    assert_non_null(l2);
    /* the request id was cleared: not on the second line */
    assert_non_null(strstr(l2 + 1, "level=error msg=\"failed\" code=7\n"));
    assert_null(strstr(l2 + 1, "request_id"));
    assert_null(strchr(strchr(l2 + 1, '\n') + 1, '\n')); /* two lines only */
    assert_string_equal(core_log_request_id(), "");
    free(out);
}

/* ---- core/config -------------------------------------------------------- */

static void
test_config_defaults(void **state)
{
    struct core_config cfg;
    char err[256] = "";
    (void)state;

    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    assert_int_equal(cfg.workers, 16);
    assert_string_equal(cfg.llm_model, "llama-3.1-8b-instant");
    assert_int_equal(cfg.llm_timeout_ms, 30000);
    assert_int_equal(cfg.llm_max_tokens, 512);
    assert_string_equal(cfg.graph_api_base, "https://graph.facebook.com/v21.0");
    assert_string_equal(cfg.telegram_api_base, "https://api.telegram.org");
    assert_string_equal(cfg.slack_api_base, "https://slack.com/api");
    assert_null(cfg.database_url);
    assert_null(cfg.llm_base_url); /* echo provider */
    assert_null(cfg.llm_api_key);
    assert_null(cfg.meta_app_secret);
    assert_null(cfg.whatsapp_token);
    assert_null(cfg.operator_token);
    assert_null(cfg.pseudonym_key);
    assert_null(cfg.ad_signals);
    assert_non_null(cfg.system_prompt);
    assert_true(strlen(cfg.system_prompt) > 10);
    assert_non_null(cfg.apology_text);
    assert_int_equal(cfg.feedback_mode, CORE_FEEDBACK_OFF);
    assert_int_equal(cfg.log_level, CORE_LOG_INFO);
    assert_int_equal(cfg.body_max_bytes, 4u << 20);
    assert_true(cfg.db_pool_size >= cfg.ingest_committers + cfg.http_threads);
    core_config_free(&cfg);
    assert_null(cfg.listen_host);
    assert_null(cfg.llm_model);
    core_config_free(&cfg); /* idempotent */
}

static void
test_config_env_values(void **state)
{
    struct core_config cfg;
    char err[256] = "";
    (void)state;

    setenv("PARLEY_LISTEN", "0.0.0.0:9091", 1);
    setenv("PARLEY_WORKERS", "3", 1);
    setenv("PARLEY_LLM_MODEL", "m-1", 1);
    setenv("PARLEY_LLM_TIMEOUT_MS", "1500", 1);
    setenv("PARLEY_LLM_MAX_TOKENS", "64", 1);
    setenv("PARLEY_FEEDBACK", "sampled", 1);
    setenv("PARLEY_LOG_LEVEL", "debug", 1);
    setenv("PARLEY_DATABASE_URL", "postgres:///parley", 1);
    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 9091);
    assert_int_equal(cfg.workers, 3);
    assert_string_equal(cfg.llm_model, "m-1");
    assert_int_equal(cfg.llm_timeout_ms, 1500);
    assert_int_equal(cfg.llm_max_tokens, 64);
    assert_int_equal(cfg.feedback_mode, CORE_FEEDBACK_SAMPLED);
    assert_int_equal(cfg.log_level, CORE_LOG_DEBUG);
    assert_string_equal(cfg.database_url, "postgres:///parley");
    core_config_free(&cfg);

    /* IPv6 in brackets */
    setenv("PARLEY_LISTEN", "[::1]:8080", 1);
    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_string_equal(cfg.listen_host, "::1");
    assert_int_equal(cfg.listen_port, 8080);
    core_config_free(&cfg);

    /* an empty value counts as unset: the default applies */
    setenv("PARLEY_WORKERS", "", 1);
    setenv("PARLEY_LLM_MODEL", "", 1);
    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_int_equal(cfg.workers, 16);
    assert_string_equal(cfg.llm_model, "llama-3.1-8b-instant");
    core_config_free(&cfg);
}

static void
test_config_errors(void **state)
{
    static const struct {
        const char *key, *value;
    } bad[] = {
        { "PARLEY_WORKERS", "abc" },
        { "PARLEY_WORKERS", "12abc" },
        { "PARLEY_WORKERS", "0" },
        { "PARLEY_WORKERS", "99999999999999999999999" },
        { "PARLEY_LISTEN", "nonsense" },
        { "PARLEY_LISTEN", "127.0.0.1:" },
        { "PARLEY_LISTEN", "127.0.0.1:65536" },
        { "PARLEY_LISTEN", "127.0.0.1:80x" },
        { "PARLEY_LISTEN", "127.0.0.1:-1" },
        { "PARLEY_LLM_TIMEOUT_MS", "-5" },
        { "PARLEY_LLM_MAX_TOKENS", "0" },
        { "PARLEY_LLM_BASE_URL", "ftp://x" },
        { "PARLEY_LLM_BASE_URL", "api.groq.com/openai/v1" },
        { "PARLEY_GRAPH_API_BASE", "graph.facebook.com" },
        { "PARLEY_FEEDBACK", "maybe" },
        { "PARLEY_LOG_LEVEL", "loud" },
        { "PARLEY_LLM_TEMPERATURE", "3" },
        { "PARLEY_AD_SIGNALS", "whatsapp=bogus" },
        { "PARLEY_AD_SIGNALS", "whatsapp" },
        { "PARLEY_AD_SIGNALS", "=user" },
        { "PARLEY_AD_SIGNALS", "messenger=user,whatsapp=users" },
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        clear_parley_env();
        setenv(bad[i].key, bad[i].value, 1);
        expect_config_error(NULL, bad[i].key);
    }
}

static void
test_config_url_slashes(void **state)
{
    struct core_config cfg;
    char err[256] = "";
    (void)state;

    setenv("PARLEY_LLM_BASE_URL", "https://api.groq.com/openai/v1/", 1);
    setenv("PARLEY_GRAPH_API_BASE", "http://127.0.0.1:9000/graph///", 1);
    setenv("PARLEY_TELEGRAM_API_BASE", "http://tg.local/", 1);
    setenv("PARLEY_SLACK_API_BASE", "https://slack.local/api", 1);
    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_string_equal(cfg.llm_base_url, "https://api.groq.com/openai/v1");
    assert_string_equal(cfg.graph_api_base, "http://127.0.0.1:9000/graph");
    assert_string_equal(cfg.telegram_api_base, "http://tg.local");
    assert_string_equal(cfg.slack_api_base, "https://slack.local/api");
    core_config_free(&cfg);
}

static void
test_config_file(void **state)
{
    struct core_config cfg;
    char err[256] = "";
    char *path = write_temp("# Parley settings\n"
                            "\n"
                            "PARLEY_WORKERS=3\n"
                            "   # indented comment\n"
                            "  PARLEY_LLM_MODEL = \"file-model\"  \n"
                            "PARLEY_SYSTEM_PROMPT='Be brief. Use = signs.'\n"
                            "PARLEY_GRAPH_API_BASE=http://graph.local/v1/\n"
                            "PARLEY_LISTEN=0.0.0.0:9090\r\n"
                            "PARLEY_LLM_MAX_TOKENS=100\n"
                            "PARLEY_OPERATOR_TOKEN=from-file\n");
    (void)state;

    /* explicit path */
    assert_int_equal(core_config_load(&cfg, path, err, sizeof(err)), CORE_OK);
    assert_int_equal(cfg.workers, 3);
    assert_string_equal(cfg.llm_model, "file-model");
    assert_string_equal(cfg.system_prompt, "Be brief. Use = signs.");
    assert_string_equal(cfg.graph_api_base, "http://graph.local/v1");
    assert_string_equal(cfg.listen_host, "0.0.0.0");
    assert_int_equal(cfg.listen_port, 9090);
    assert_int_equal(cfg.llm_max_tokens, 100);
    assert_string_equal(cfg.operator_token, "from-file");
    core_config_free(&cfg);

    /* the environment wins over the file; the file still fills the rest;
     * the file can be named by PARLEY_CONFIG_FILE */
    setenv("PARLEY_CONFIG_FILE", path, 1);
    setenv("PARLEY_WORKERS", "7", 1);
    setenv("PARLEY_LLM_MODEL", "env-model", 1);
    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_int_equal(cfg.workers, 7);
    assert_string_equal(cfg.llm_model, "env-model");
    assert_int_equal(cfg.llm_max_tokens, 100);
    assert_int_equal(cfg.listen_port, 9090);
    core_config_free(&cfg);

    /* a bad value from the file is reported with its key too */
    unlink(path);
    free(path);
    clear_parley_env();
    path = write_temp("PARLEY_LLM_TIMEOUT_MS=-5\n");
    expect_config_error(path, "PARLEY_LLM_TIMEOUT_MS");
    unlink(path);
    free(path);

    /* a line that is not KEY=value: error naming the file and line */
    path = write_temp("# ok\nPARLEY_WORKERS=2\njust words\n");
    assert_int_equal(core_config_load(&cfg, path, err, sizeof(err)),
                     CORE_ERR_CONFIG);
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, ":3"));
    unlink(path);

    /* a missing file is an error naming it */
    assert_int_equal(core_config_load(&cfg, path, err, sizeof(err)),
                     CORE_ERR_CONFIG);
    assert_non_null(strstr(err, path));
    free(path);
}

/*
 * A value longer than the file reader's line buffer must be read whole or
 * refused, never cut: a long PARLEY_SYSTEM_PROMPT is a realistic file
 * entry, and its tail must not turn into a key of its own.
 */
static void
test_config_file_long_value(void **state)
{
    struct core_config cfg;
    char err[256] = "";
    struct core_buf text;
    enum core_status st;
    char *path, *prompt;
    size_t plen, got;
    int i, ok;
    (void)state;

    core_buf_init(&text, 1 << 16);
    assert_int_equal(core_buf_adds(&text, "PARLEY_SYSTEM_PROMPT="), CORE_OK);
    for (i = 0; i < 5000; i++)
        assert_int_equal(core_buf_adds(&text, "p"), CORE_OK);
    assert_int_equal(core_buf_adds(&text, " Answer as key=value pairs.\n"
                                          "PARLEY_WORKERS=4\n"),
                     CORE_OK);
    path = write_temp(text.data);
    core_buf_done(&text);
    plen = 5000 + strlen(" Answer as key=value pairs.");

    st = core_config_load(&cfg, path, err, sizeof(err));
    unlink(path);
    free(path);
    if (st != CORE_OK) {
        /* refusing is acceptable if the error names the problem */
        assert_int_equal(st, CORE_ERR_CONFIG);
        assert_true(err[0] != '\0');
        return;
    }
    prompt = cfg.system_prompt;
    got = prompt ? strlen(prompt) : 0;
    ok = got == plen &&
         strcmp(prompt + 5000, " Answer as key=value pairs.") == 0 &&
         cfg.workers == 4;
    core_config_free(&cfg);
    if (!ok)
        fail_msg("long value cut: system prompt has %zu of %zu bytes", got,
                 plen);
}

static void
test_config_ad_policy(void **state)
{
    struct core_config cfg;
    char err[256] = "";
    (void)state;

    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_int_equal(core_config_ad_policy(&cfg, "whatsapp"),
                     CORE_AD_AGGREGATE);
    assert_int_equal(core_config_ad_policy(&cfg, "slack"), CORE_AD_OFF);
    assert_int_equal(core_config_ad_policy(&cfg, "messenger"), CORE_AD_USER);
    assert_int_equal(core_config_ad_policy(&cfg, "instagram"), CORE_AD_USER);
    assert_int_equal(core_config_ad_policy(&cfg, "telegram"), CORE_AD_USER);
    core_config_free(&cfg);

    setenv("PARLEY_AD_SIGNALS",
           "whatsapp=user,slack=aggregate,messenger=off,whatsappx=off", 1);
    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_int_equal(core_config_ad_policy(&cfg, "whatsapp"), CORE_AD_USER);
    assert_int_equal(core_config_ad_policy(&cfg, "slack"), CORE_AD_AGGREGATE);
    assert_int_equal(core_config_ad_policy(&cfg, "messenger"), CORE_AD_OFF);
    /* not mentioned: the default; a prefix is not a match */
    assert_int_equal(core_config_ad_policy(&cfg, "instagram"), CORE_AD_USER);
    assert_int_equal(core_config_ad_policy(&cfg, "whats"), CORE_AD_USER);
    core_config_free(&cfg);

    setenv("PARLEY_AD_SIGNALS", "instagram=aggregate", 1);
    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_int_equal(core_config_ad_policy(&cfg, "instagram"),
                     CORE_AD_AGGREGATE);
    assert_int_equal(core_config_ad_policy(&cfg, "whatsapp"),
                     CORE_AD_AGGREGATE);
    assert_int_equal(core_config_ad_policy(&cfg, "slack"), CORE_AD_OFF);
    core_config_free(&cfg);
}

/* A list with spaces after the commas is either refused, or every entry
 * applies: WhatsApp switched off must really be off. */
static void
test_config_ad_signals_spaces(void **state)
{
    struct core_config cfg;
    char err[256] = "";
    (void)state;

    setenv("PARLEY_AD_SIGNALS", "slack=off, whatsapp=off", 1);
    if (core_config_load(&cfg, NULL, err, sizeof(err)) == CORE_OK) {
        enum core_ad_policy wa = core_config_ad_policy(&cfg, "whatsapp");

        core_config_free(&cfg);
        if (wa != CORE_AD_OFF)
            fail_msg("PARLEY_AD_SIGNALS \"slack=off, whatsapp=off\" accepted "
                     "but whatsapp is %d, not off",
                     (int)wa);
    } else {
        assert_non_null(strstr(err, "PARLEY_AD_SIGNALS"));
    }
}

#define SECRET_LLM   "sk-llm-SECRET-aaaa"
#define SECRET_META  "meta-SECRET-bbbb"
#define SECRET_WA    "wa-SECRET-cccc"
#define SECRET_OP    "op-SECRET-dddd"
#define SECRET_PSEUD "pk-SECRET-eeee"
#define SECRET_DBPW  "dbpw-SECRET-ffff"

static void
log_config(const void *arg)
{
    core_config_log(arg);
}

static void
test_config_mask(void **state)
{
    struct core_config cfg;
    char err[256] = "";
    char *out;
    (void)state;

    assert_string_equal(core_config_mask("hunter2"), "set");
    assert_string_equal(core_config_mask(NULL), "unset");
    assert_string_equal(core_config_mask(""), "unset");

    setenv("PARLEY_LLM_API_KEY", SECRET_LLM, 1);
    setenv("PARLEY_META_APP_SECRET", SECRET_META, 1);
    setenv("PARLEY_WHATSAPP_TOKEN", SECRET_WA, 1);
    setenv("PARLEY_OPERATOR_TOKEN", SECRET_OP, 1);
    setenv("PARLEY_PSEUDONYM_KEY", SECRET_PSEUD, 1);
    setenv("PARLEY_DATABASE_URL",
           "postgresql://parley:" SECRET_DBPW "@db.local/parley", 1);
    assert_int_equal(core_config_load(&cfg, NULL, err, sizeof(err)), CORE_OK);
    assert_string_equal(cfg.llm_api_key, SECRET_LLM);
    assert_string_equal(core_config_mask(cfg.llm_api_key), "set");
    assert_string_equal(core_config_mask(cfg.messenger_page_token), "unset");

    out = capture_stderr(log_config, &cfg);
    assert_non_null(strstr(out, "msg=\"configuration\""));
    assert_non_null(strstr(out, "llm_key=set"));
    assert_non_null(strstr(out, "meta_secret=set"));
    assert_non_null(strstr(out, "messenger_token=unset"));
    assert_null(strstr(out, "SECRET"));
    free(out);
    core_config_free(&cfg);
}

/* ---- core/metrics ------------------------------------------------------- */

/* Render the registry into a malloc'd string. */
static char *
render(void)
{
    struct core_buf b;

    core_buf_init(&b, 1 << 20);
    assert_int_equal(core_metrics_render(&b), CORE_OK);
    return core_buf_take(&b);
}

/*
 * Every sample line must come after "# HELP name" and "# TYPE name" of
 * its metric, HELP first, and each family's lines must be contiguous.
 */
static void
check_exposition(const char *text)
{
    char family[128] = "", line[1024];
    int have_help = 0, have_type = 0, nsamples = 0;
    const char *p = text;

    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len;

        assert_non_null(nl); /* every line ends with \n */
        len = (size_t)(nl - p);
        assert_true(len < sizeof(line));
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            size_t fl = strcspn(line + 7, " ");

            assert_true(fl < sizeof(family));
            memcpy(family, line + 7, fl);
            family[fl] = '\0';
            have_help = 1;
            have_type = 0;
        } else if (strncmp(line, "# TYPE ", 7) == 0) {
            assert_true(have_help);
            assert_true(strncmp(line + 7, family, strlen(family)) == 0);
            assert_int_equal(line[7 + strlen(family)], ' ');
            have_type = 1;
        } else {
            size_t fl = strlen(family);

            assert_true(have_help && have_type);
            if (strncmp(line, family, fl) != 0 || !strchr("{ _", line[fl]))
                fail_msg("sample \"%s\" outside its family %s", line, family);
            nsamples++;
        }
    }
    assert_true(nsamples > 0);
}

static void
test_metrics_register(void **state)
{
    struct core_metric *a, *b, *c;
    char *out;
    (void)state;

    a = core_metric_register(CORE_METRIC_COUNTER, "parley_t_total", "Things.",
                             NULL, 0);
    b = core_metric_register(CORE_METRIC_COUNTER, "parley_t_total", "Things.",
                             NULL, 0);
    c = core_metric_register(CORE_METRIC_GAUGE, "parley_t_gauge", "Level.",
                             NULL, 0);
    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_ptr_not_equal(a, c);
    core_metric_add(a, NULL, 1);
    core_metric_add(b, NULL, 2);
    out = render();
    /* one family, not two */
    assert_non_null(strstr(out, "# HELP parley_t_total Things.\n"
                                "# TYPE parley_t_total counter\n"
                                "parley_t_total 3\n"));
    assert_null(strstr(strstr(out, "# HELP parley_t_total") + 1,
                       "# HELP parley_t_total"));
    /* a metric without samples still has its HELP and TYPE */
    assert_non_null(strstr(out, "# HELP parley_t_gauge Level.\n"
                                "# TYPE parley_t_gauge gauge\n"));
    free(out);

    /* reset empties the registry */
    core_metrics_reset();
    out = render();
    assert_string_equal(out, "");
    free(out);
    /* NULL metric: updates are no-ops, not crashes */
    core_metric_add(NULL, NULL, 1);
    core_metric_set(NULL, NULL, 1);
    core_metric_observe(NULL, NULL, 1);
}

static void
test_metrics_counter_gauge(void **state)
{
    struct core_metric *c, *g;
    char *out;
    (void)state;

    c = core_metric_register(CORE_METRIC_COUNTER, "parley_webhooks_total",
                             "Webhooks received.", NULL, 0);
    g = core_metric_register(CORE_METRIC_GAUGE, "parley_queue_depth",
                             "Jobs waiting.", NULL, 0);
    core_metric_add(c, "platform=\"whatsapp\",result=\"ok\"", 2);
    core_metric_add(c, "platform=\"whatsapp\",result=\"ok\"", 3);
    core_metric_add(c, "platform=\"messenger\",result=\"auth\"", 1);
    core_metric_set(g, NULL, 7);
    core_metric_set(g, NULL, 4.5);
    core_metric_set(g, "shard=\"1\"", 0);
    out = render();
    check_exposition(out);
    assert_non_null(strstr(out, "# HELP parley_webhooks_total Webhooks "
                                "received.\n# TYPE parley_webhooks_total "
                                "counter\n"));
    assert_non_null(strstr(
        out,
        "\nparley_webhooks_total{platform=\"whatsapp\",result=\"ok\"} 5\n"));
    assert_non_null(strstr(
        out,
        "\nparley_webhooks_total{platform=\"messenger\",result=\"auth\"} 1\n"));
    assert_non_null(strstr(out, "# TYPE parley_queue_depth gauge\n"));
    assert_non_null(strstr(out, "\nparley_queue_depth 4.5\n"));
    assert_non_null(strstr(out, "\nparley_queue_depth{shard=\"1\"} 0\n"));
    assert_null(strstr(out, "parley_queue_depth 7"));
    /* registration order is rendering order */
    assert_true(strstr(out, "parley_webhooks_total") <
                strstr(out, "parley_queue_depth"));
    free(out);
}

static void
test_metrics_histogram(void **state)
{
    static const double bounds[] = { 0.1, 0.5, 1 };
    struct core_metric *h, *d;
    char *out;
    (void)state;

    h = core_metric_register(CORE_METRIC_HISTOGRAM, "parley_llm_seconds",
                             "LLM latency.", bounds, 3);
    core_metric_observe(h, "model=\"m\"", 0.05);
    core_metric_observe(h, "model=\"m\"", 0.3);
    core_metric_observe(h, "model=\"m\"", 0.5); /* le is inclusive */
    core_metric_observe(h, "model=\"m\"", 0.7);
    core_metric_observe(h, "model=\"m\"", 5);
    core_metric_observe(h, NULL, 0.2);
    out = render();
    check_exposition(out);
    assert_non_null(
        strstr(out, "# HELP parley_llm_seconds LLM latency.\n"
                    "# TYPE parley_llm_seconds histogram\n"
                    "parley_llm_seconds_bucket{model=\"m\",le=\"0.1\"} 1\n"
                    "parley_llm_seconds_bucket{model=\"m\",le=\"0.5\"} 3\n"
                    "parley_llm_seconds_bucket{model=\"m\",le=\"1\"} 4\n"
                    "parley_llm_seconds_bucket{model=\"m\",le=\"+Inf\"} 5\n"
                    "parley_llm_seconds_sum{model=\"m\"} 6.55\n"
                    "parley_llm_seconds_count{model=\"m\"} 5\n"));
    assert_non_null(strstr(out, "parley_llm_seconds_bucket{le=\"0.1\"} 0\n"
                                "parley_llm_seconds_bucket{le=\"0.5\"} 1\n"
                                "parley_llm_seconds_bucket{le=\"1\"} 1\n"
                                "parley_llm_seconds_bucket{le=\"+Inf\"} 1\n"
                                "parley_llm_seconds_sum 0.2\n"
                                "parley_llm_seconds_count 1\n"));
    free(out);

    /* NULL buckets: the default latency buckets, ascending, ending at 30 */
    d = core_metric_register(CORE_METRIC_HISTOGRAM, "parley_default_seconds",
                             "Default buckets.", NULL, 0);
    assert_true(core_metric_latency_nbuckets >= 10);
    for (size_t i = 1; i < core_metric_latency_nbuckets; i++)
        assert_true(core_metric_latency_buckets[i - 1] <
                    core_metric_latency_buckets[i]);
    core_metric_observe(d, NULL, 100);
    core_metric_observe(d, NULL, 0.0001);
    out = render();
    check_exposition(out);
    assert_non_null(
        strstr(out, "parley_default_seconds_bucket{le=\"0.0005\"} 1\n"));
    assert_non_null(strstr(out, "parley_default_seconds_bucket{le=\"30\"} 1\n"
                                "parley_default_seconds_bucket{le=\"+Inf\"} 2\n"
                                "parley_default_seconds_sum 100.0001\n"
                                "parley_default_seconds_count 2\n"));
    free(out);
}

#define THREADS      4
#define THREAD_ITERS 10000

static pthread_barrier_t start_line;
static struct core_metric *seen_counter[THREADS];

static void *
hammer(void *arg)
{
    long id = (long)(intptr_t)arg;
    struct core_metric *c, *h;
    char own[32];
    int i;

    snprintf(own, sizeof(own), "thread=\"%ld\"", id);
    pthread_barrier_wait(&start_line);
    /* registration races too: everyone must get the same metric */
    c = core_metric_register(CORE_METRIC_COUNTER, "parley_race_total", "Race.",
                             NULL, 0);
    h = core_metric_register(CORE_METRIC_HISTOGRAM, "parley_race_seconds",
                             "Race.", NULL, 0);
    seen_counter[id] = c;
    for (i = 0; i < THREAD_ITERS; i++) {
        core_metric_add(c, "shared=\"yes\"", 1);
        core_metric_add(c, own, 1);
        if (i % 10 == 0)
            core_metric_observe(h, NULL, 0.003);
        if (i % 2500 == 0) {
            char *out = render();

            free(out);
        }
    }
    return NULL;
}

static void
test_metrics_threads(void **state)
{
    pthread_t th[THREADS];
    char *out, want[128];
    long k;
    (void)state;

    assert_int_equal(pthread_barrier_init(&start_line, NULL, THREADS), 0);
    for (k = 0; k < THREADS; k++)
        assert_int_equal(
            pthread_create(&th[k], NULL, hammer, (void *)(intptr_t)k), 0);
    for (k = 0; k < THREADS; k++)
        assert_int_equal(pthread_join(th[k], NULL), 0);
    pthread_barrier_destroy(&start_line);
    for (k = 1; k < THREADS; k++)
        assert_ptr_equal(seen_counter[k], seen_counter[0]);
    out = render();
    check_exposition(out);
    snprintf(want, sizeof(want), "\nparley_race_total{shared=\"yes\"} %d\n",
             THREADS * THREAD_ITERS);
    assert_non_null(strstr(out, want));
    for (k = 0; k < THREADS; k++) {
        snprintf(want, sizeof(want), "\nparley_race_total{thread=\"%ld\"} %d\n",
                 k, THREAD_ITERS);
        assert_non_null(strstr(out, want));
    }
    snprintf(want, sizeof(want), "\nparley_race_seconds_count %d\n",
             THREADS * THREAD_ITERS / 10);
    assert_non_null(strstr(out, want));
    snprintf(want, sizeof(want),
             "\nparley_race_seconds_bucket{le=\"+Inf\"} %d\n",
             THREADS * THREAD_ITERS / 10);
    assert_non_null(strstr(out, want));
    /* exactly one family each */
    assert_null(strstr(strstr(out, "# TYPE parley_race_total") + 1,
                       "# TYPE parley_race_total"));
    free(out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_growth),
        cmocka_unit_test(test_buf_max),
        cmocka_unit_test(test_buf_printf),
        cmocka_unit_test(test_buf_take_reset),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_log),
        cmocka_unit_test_setup_teardown(test_config_defaults, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(test_config_env_values, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(test_config_errors, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(test_config_url_slashes, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(test_config_file, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(test_config_file_long_value, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(test_config_ad_policy, env_setup,
                                        env_teardown),
        cmocka_unit_test_setup_teardown(test_config_ad_signals_spaces,
                                        env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_config_mask, env_setup,
                                        env_teardown),
        cmocka_unit_test_teardown(test_metrics_register, metrics_teardown),
        cmocka_unit_test_teardown(test_metrics_counter_gauge, metrics_teardown),
        cmocka_unit_test_teardown(test_metrics_histogram, metrics_teardown),
        cmocka_unit_test_teardown(test_metrics_threads, metrics_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
