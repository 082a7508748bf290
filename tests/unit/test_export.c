/*
 * Unit tests for analytics/export's renderer: the exact line of every
 * format, redaction of every text, weights of the history's assistant
 * turns for OpenAI, exact big ids, JSON escaping, and the stored prompts
 * that are refused. (The query and the CLI: tests/integration/test_export.py.)
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/export.h"

static const char PROMPT[] =
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},"
    "{\"role\":\"user\",\"content\":\"hi, I am bob@example.org\"},"
    "{\"role\":\"assistant\",\"content\":\"Hello!\"},"
    "{\"role\":\"user\",\"content\":\"ship to Porto?\"}]";
#define P_OUT                                               \
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},"     \
    "{\"role\":\"user\",\"content\":\"hi, I am [EMAIL]\"}," \
    "{\"role\":\"assistant\",\"content\":\"Hello!\"},"      \
    "{\"role\":\"user\",\"content\":\"ship to Porto?\"}]"
#define P_OUT_OPENAI                                                \
    "[{\"role\":\"system\",\"content\":\"Be brief.\"},"             \
    "{\"role\":\"user\",\"content\":\"hi, I am [EMAIL]\"},"         \
    "{\"role\":\"assistant\",\"content\":\"Hello!\",\"weight\":0}," \
    "{\"role\":\"user\",\"content\":\"ship to Porto?\"}"

static struct ana_export_row
row(void)
{
    return (struct ana_export_row){
        .response_id = "9007199254740993", /* 2^53 + 1: not a double */
        .created_at = "2026-11-27T10:00:00.000000Z",
        .platform = "whatsapp",
        .user = "ab12",
        .model = "m1",
        .status = "sent",
        .prompt = PROMPT,
        .completion = "Yes. Call +1 415 555 2671.",
        .finish_reason = "stop",
        .prompt_tokens = "12",
        .completion_tokens = NULL,
        .llm_ms = "200",
        .label = "good",
        .feedback = "[{\"source\": \"button\", \"polarity\": 1}]",
        .rejected_id = "7",
        .rejected = "No.\n\"Never\"\t\x01",
    };
}

static void
check(enum ana_export_format f, const struct ana_export_row *r,
      const char *want)
{
    char err[128] = "";
    char *got = ana_export_render(f, r, err, sizeof(err));

    assert_non_null(got);
    if (strcmp(got, want) != 0)
        print_error("format %s\n  want: %s\n  got:  %s\n",
                    ana_export_format_name(f), want, got);
    assert_string_equal(got, want);
    free(got);
}

static void
test_formats(void **state)
{
    struct ana_export_row r = row();
    (void)state;

    check(ANA_EXPORT_SFT, &r,
          "{\"prompt\":" P_OUT ",\"completion\":[{\"role\":\"assistant\","
          "\"content\":\"Yes. Call [PHONE].\"}],"
          "\"response_id\":9007199254740993,\"user\":\"ab12\"}");
    check(ANA_EXPORT_KTO, &r,
          "{\"prompt\":" P_OUT ",\"completion\":[{\"role\":\"assistant\","
          "\"content\":\"Yes. Call [PHONE].\"}],\"label\":true,"
          "\"response_id\":9007199254740993,\"user\":\"ab12\"}");
    r.label = "bad";
    check(ANA_EXPORT_KTO, &r,
          "{\"prompt\":" P_OUT ",\"completion\":[{\"role\":\"assistant\","
          "\"content\":\"Yes. Call [PHONE].\"}],\"label\":false,"
          "\"response_id\":9007199254740993,\"user\":\"ab12\"}");
    check(ANA_EXPORT_DPO, &r,
          "{\"prompt\":" P_OUT ",\"chosen\":[{\"role\":\"assistant\","
          "\"content\":\"Yes. Call [PHONE].\"}],\"rejected\":[{\"role\":"
          "\"assistant\",\"content\":\"No.\\n\\\"Never\\\"\\t\\u0001\"}],"
          "\"chosen_response_id\":9007199254740993,"
          "\"rejected_response_id\":7}");
    check(ANA_EXPORT_OPENAI_SFT, &r,
          "{\"messages\":" P_OUT_OPENAI ",{\"role\":\"assistant\","
          "\"content\":\"Yes. Call [PHONE].\",\"weight\":1}]}");
    check(ANA_EXPORT_OPENAI_DPO, &r,
          "{\"input\":{\"messages\":" P_OUT_OPENAI "]},"
          "\"preferred_output\":[{\"role\":\"assistant\",\"content\":"
          "\"Yes. Call [PHONE].\"}],\"non_preferred_output\":[{\"role\":"
          "\"assistant\",\"content\":\"No.\\n\\\"Never\\\"\\t\\u0001\"}]}");
    r.label = "good";
    check(ANA_EXPORT_RAW, &r,
          "{\"response_id\":9007199254740993,\"created_at\":"
          "\"2026-11-27T10:00:00.000000Z\",\"platform\":\"whatsapp\","
          "\"user\":\"ab12\",\"model\":\"m1\",\"status\":\"sent\","
          "\"prompt\":" P_OUT ",\"completion\":\"Yes. Call [PHONE].\","
          "\"finish_reason\":\"stop\",\"prompt_tokens\":12,"
          "\"completion_tokens\":null,\"llm_ms\":200,\"label\":\"good\","
          "\"feedback\":[{\"source\":\"button\",\"polarity\":1}]}");
    /* No feedback: an empty list, no label: null (fixed keys). */
    r.label = NULL;
    r.feedback = NULL;
    r.model = NULL;
    check(ANA_EXPORT_RAW, &r,
          "{\"response_id\":9007199254740993,\"created_at\":"
          "\"2026-11-27T10:00:00.000000Z\",\"platform\":\"whatsapp\","
          "\"user\":\"ab12\",\"model\":null,\"status\":\"sent\","
          "\"prompt\":" P_OUT ",\"completion\":\"Yes. Call [PHONE].\","
          "\"finish_reason\":\"stop\",\"prompt_tokens\":12,"
          "\"completion_tokens\":null,\"llm_ms\":200,\"label\":null,"
          "\"feedback\":[]}");
}

static void
test_refused_prompts(void **state)
{
    static const char *const bad[] = {
        NULL,
        "",
        "not json",
        "{\"role\":\"user\",\"content\":\"x\"}",
        "[]",
        "[{\"role\":\"user\"}]",
        "[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]",
        "[{\"role\":\"tool\",\"content\":\"x\"}]",
        "[{\"content\":\"x\"}]",
        "[\"x\"]",
    };
    struct ana_export_row r = row();
    char err[128];
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r.prompt = bad[i];
        err[0] = '\0';
        errno = 0;
        assert_null(ana_export_render(ANA_EXPORT_KTO, &r, err, sizeof(err)));
        assert_true(strlen(err) > 0);
        assert_int_equal(errno, EINVAL); /* refused, not out of memory */
        errno = 0;
        assert_null(ana_export_render(ANA_EXPORT_RAW, &r, err, sizeof(err)));
        assert_int_equal(errno, EINVAL);
    }
    /* Extra keys of a stored message are not carried over. */
    r.prompt = "[{\"role\":\"user\",\"content\":\"a\",\"name\":\"bob\"}]";
    check(ANA_EXPORT_OPENAI_SFT, &r,
          "{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},"
          "{\"role\":\"assistant\",\"content\":\"Yes. Call [PHONE].\","
          "\"weight\":1}]}");
}

static void
test_manifest_lines(void **state)
{
    struct ana_export_row r = row();
    char *got;
    (void)state;

    r.rejected_id = NULL;
    got = ana_export_manifest_line(3, &r);
    assert_non_null(got);
    assert_string_equal(got, "{\"line\":3,\"response_ids\":[9007199254740993],"
                             "\"users\":[\"ab12\"]}");
    free(got);
    r.rejected_id = "7";
    r.rejected_user = "cd34";
    got = ana_export_manifest_line(12345678, &r);
    assert_non_null(got);
    assert_string_equal(got, "{\"line\":12345678,\"response_ids\":"
                             "[9007199254740993,7],\"users\":[\"ab12\","
                             "\"cd34\"]}");
    free(got);
}

static void
test_format_names(void **state)
{
    static const char *const names[] = { "sft",        "dpo",        "kto",
                                         "openai-sft", "openai-dpo", "raw" };
    enum ana_export_format f;
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        assert_int_equal(ana_export_format_parse(names[i], &f), CORE_OK);
        assert_string_equal(ana_export_format_name(f), names[i]);
    }
    assert_int_equal(ana_export_format_parse("SFT", &f), CORE_ERR_INVALID);
    assert_int_equal(ana_export_format_parse("", &f), CORE_ERR_INVALID);
    assert_int_equal(ana_export_format_parse(NULL, &f), CORE_ERR_INVALID);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_refused_prompts),
        cmocka_unit_test(test_manifest_lines),
        cmocka_unit_test(test_format_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
