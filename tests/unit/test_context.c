/*
 * Unit tests for inference/context: the token estimate, which history turns
 * fit a budget (newest kept, oldest dropped, no gaps), message order, the
 * description of media without text, and the JSON stored with a response.
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "inference/context.h"

#define NTURNS   6
#define TURN_LEN 40 /* bytes: (40 + 3) / 4 + 4 = 14 tokens each */
#define TURN_TOK 14
#define SYS      "sys" /* 5 tokens */
#define SYS_TOK  5
#define PEND     "hello" /* 6 tokens */
#define PEND_TOK 6

/* History, newest first as the query returns it: A3 U3 A2 U2 A1 U1. */
static char turn_text[NTURNS][TURN_LEN + 1];
static struct inf_ctx_turn turns[NTURNS];
static const char *const turn_tag[NTURNS] = {
    "A3", "U3", "A2", "U2", "A1", "U1"
};
/* inf_ctx_turn holds mutable strings (it owns them when built from a
 * PGresult), so the tests use writable arrays. */
static char role_user[] = "user";
static char role_assistant[] = "assistant";

static int
turns_setup(void **state)
{
    int i;
    (void)state;

    for (i = 0; i < NTURNS; i++) {
        memset(turn_text[i], turn_tag[i][0] == 'A' ? 'a' : 'u', TURN_LEN);
        memcpy(turn_text[i], turn_tag[i], 2);
        turn_text[i][TURN_LEN] = '\0';
        turns[i].role = turn_tag[i][0] == 'A' ? role_assistant : role_user;
        turns[i].content = turn_text[i];
    }
    return 0;
}

static void
input_init(struct inf_ctx_input *in, int budget)
{
    memset(in, 0, sizeof(*in));
    in->system_prompt = SYS;
    in->budget_tokens = budget;
    in->history = turns;
    in->nhistory = NTURNS;
    in->pending_kind[0] = "text";
    in->pending_text[0] = PEND;
    in->npending = 1;
}

/* The JSON must be an array of {role, content} equal to msgs. */
static void
check_json(const char *json, const struct inf_llm_message *msgs, size_t n)
{
    cJSON *a = cJSON_Parse(json);
    size_t i;

    assert_non_null(a);
    assert_true(cJSON_IsArray(a));
    assert_int_equal(cJSON_GetArraySize(a), (int)n);
    for (i = 0; i < n; i++) {
        const cJSON *o = cJSON_GetArrayItem(a, (int)i);
        const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "role");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "content");

        assert_true(cJSON_IsObject(o));
        assert_int_equal(cJSON_GetArraySize(o), 2);
        assert_true(cJSON_IsString(r));
        assert_true(cJSON_IsString(c));
        assert_string_equal(r->valuestring, msgs[i].role);
        assert_string_equal(c->valuestring, msgs[i].content);
    }
    cJSON_Delete(a);
}

/*
 * Build with `budget` and expect the system prompt, then exactly the
 * `keep` newest turns oldest first, then the pending message.
 */
static void
expect_kept(int budget, int keep)
{
    struct inf_ctx_input in;
    struct inf_llm_message *m = NULL;
    size_t n = 0, k = 0;
    char *json = NULL;
    int i;

    input_init(&in, budget);
    assert_int_equal(inf_ctx_build(&in, &m, &n, &json), CORE_OK);
    assert_non_null(m);
    assert_non_null(json);
    if (n != (size_t)keep + 2)
        fail_msg("budget %d: %zu messages, expected %d", budget, n, keep + 2);
    assert_string_equal(m[k].role, "system");
    assert_string_equal(m[k++].content, SYS);
    for (i = keep - 1; i >= 0; i--, k++) {
        assert_string_equal(m[k].role, turns[i].role);
        assert_string_equal(m[k].content, turns[i].content);
    }
    assert_string_equal(m[k].role, "user");
    assert_string_equal(m[k].content, PEND);
    check_json(json, m, n);
    inf_ctx_messages_free(m, n);
    free(json);
}

static void
test_estimate(void **state)
{
    char big[401];
    (void)state;

    assert_int_equal(inf_ctx_estimate_tokens(NULL), 4);
    assert_int_equal(inf_ctx_estimate_tokens(""), 4);
    assert_int_equal(inf_ctx_estimate_tokens("a"), 5);
    assert_int_equal(inf_ctx_estimate_tokens("abcd"), 5);
    assert_int_equal(inf_ctx_estimate_tokens("abcde"), 6);
    assert_int_equal(inf_ctx_estimate_tokens(SYS), SYS_TOK);
    assert_int_equal(inf_ctx_estimate_tokens(PEND), PEND_TOK);
    assert_int_equal(inf_ctx_estimate_tokens(turn_text[0]), TURN_TOK);
    /* bytes, not characters: 6 bytes of CJK */
    assert_int_equal(inf_ctx_estimate_tokens("\xE6\x97\xA5\xE6\x9C\xAC"), 6);
    memset(big, 'x', 400);
    big[400] = '\0';
    assert_int_equal(inf_ctx_estimate_tokens(big), 104);
}

static void
test_budget_fits_all(void **state)
{
    (void)state;
    /* exactly enough for everything, and plenty */
    expect_kept(SYS_TOK + PEND_TOK + NTURNS * TURN_TOK, NTURNS);
    expect_kept(100000, NTURNS);
}

static void
test_budget_drops_oldest(void **state)
{
    int keep;
    (void)state;

    /* one token short of everything: only the oldest turn (U1) goes */
    expect_kept(SYS_TOK + PEND_TOK + NTURNS * TURN_TOK - 1, NTURNS - 1);
    for (keep = 0; keep < NTURNS; keep++) {
        expect_kept(SYS_TOK + PEND_TOK + keep * TURN_TOK, keep);
        expect_kept(SYS_TOK + PEND_TOK + (keep + 1) * TURN_TOK - 1, keep);
    }
    /* no room at all, even below zero: system prompt and pending remain */
    expect_kept(SYS_TOK + PEND_TOK, 0);
    expect_kept(1, 0);
    expect_kept(0, 0);
}

static void
test_budget_exact_order(void **state)
{
    struct inf_ctx_input in;
    struct inf_llm_message *m;
    size_t n;
    char *json;
    static const char *const want[] = { "system", "assistant", "user",
                                        "assistant", "user" };
    int i;
    (void)state;

    /* room for three turns: A2, U3, A3 in that order (oldest first) */
    input_init(&in, SYS_TOK + PEND_TOK + 3 * TURN_TOK + 5);
    assert_int_equal(inf_ctx_build(&in, &m, &n, &json), CORE_OK);
    assert_int_equal(n, 5);
    for (i = 0; i < 5; i++)
        assert_string_equal(m[i].role, want[i]);
    assert_memory_equal(m[1].content, "A2", 2);
    assert_memory_equal(m[2].content, "U3", 2);
    assert_memory_equal(m[3].content, "A3", 2);
    assert_string_equal(m[4].content, PEND);
    check_json(json, m, n);
    inf_ctx_messages_free(m, n);
    free(json);
}

static void
test_budget_no_gaps(void **state)
{
    /* newest first: small, huge, small. The huge turn does not fit, and the
     * older small one must not be taken past it (no holes in a dialogue). */
    static char huge[2001], newest[] = "newest reply", old[] = "old reply";
    struct inf_ctx_turn h[3] = {
        { role_assistant, newest },
        { role_user, huge },
        { role_assistant, old },
    };
    struct inf_ctx_input in;
    struct inf_llm_message *m;
    size_t n;
    char *json;
    (void)state;

    memset(huge, 'h', sizeof(huge) - 1);
    input_init(&in, 200);
    in.history = h;
    in.nhistory = 3;
    assert_int_equal(inf_ctx_build(&in, &m, &n, &json), CORE_OK);
    assert_int_equal(n, 3);
    assert_string_equal(m[0].role, "system");
    assert_string_equal(m[1].content, "newest reply");
    assert_string_equal(m[2].content, PEND);
    check_json(json, m, n);
    inf_ctx_messages_free(m, n);
    free(json);
}

static void
test_pending_and_media(void **state)
{
    struct inf_ctx_input in;
    struct inf_llm_message *m;
    size_t n, i;
    char *json, *img, *img_cap, *audio, *sticker;
    (void)state;

    img = inf_ctx_describe("image", NULL);
    img_cap = inf_ctx_describe("image", "look at this");
    audio = inf_ctx_describe("audio", "");
    sticker = inf_ctx_describe("sticker", NULL);

    memset(&in, 0, sizeof(in));
    in.system_prompt = "You are Parley.";
    in.budget_tokens = 3000;
    in.history = NULL;
    in.nhistory = 0;
    in.pending_kind[0] = "text";
    in.pending_text[0] = "first";
    in.pending_kind[1] = "image";
    in.pending_text[1] = NULL;
    in.pending_kind[2] = "image";
    in.pending_text[2] = "look at this";
    in.pending_kind[3] = "audio";
    in.pending_text[3] = "";
    in.pending_kind[4] = "sticker";
    in.pending_text[4] = NULL;
    in.pending_kind[5] = "interactive";
    in.pending_text[5] = "Yes please";
    in.pending_kind[6] = "text";
    in.pending_text[6] = "last";
    in.npending = 7;
    assert_int_equal(inf_ctx_build(&in, &m, &n, &json), CORE_OK);
    assert_int_equal(n, 8);
    assert_string_equal(m[0].role, "system");
    assert_string_equal(m[0].content, "You are Parley.");
    for (i = 1; i < n; i++)
        assert_string_equal(m[i].role, "user");
    assert_string_equal(m[1].content, "first");
    assert_string_equal(m[2].content, img);
    assert_string_equal(m[3].content, img_cap);
    assert_string_equal(m[4].content, audio);
    assert_string_equal(m[5].content, sticker);
    assert_string_equal(m[6].content, "Yes please");
    assert_string_equal(m[7].content, "last");
    check_json(json, m, n);
    inf_ctx_messages_free(m, n);
    free(json);
    free(img);
    free(img_cap);
    free(audio);
    free(sticker);
}

static void
test_describe(void **state)
{
    char *s;
    (void)state;

    s = inf_ctx_describe("image", NULL);
    assert_non_null(strstr(s, "an image"));
    assert_non_null(strstr(s, "without text"));
    assert_null(strstr(s, "caption"));
    free(s);
    s = inf_ctx_describe("image", "");
    assert_non_null(strstr(s, "an image"));
    assert_non_null(strstr(s, "without text"));
    free(s);
    s = inf_ctx_describe("image", "my cat");
    assert_string_equal(s, "[The user sent an image with the caption: my cat]");
    free(s);
    s = inf_ctx_describe("video", NULL);
    assert_non_null(strstr(s, "a video "));
    free(s);
    s = inf_ctx_describe("audio", NULL);
    assert_non_null(strstr(s, "an audio "));
    free(s);
    /* text and button titles pass through unchanged */
    s = inf_ctx_describe("text", "plain words");
    assert_string_equal(s, "plain words");
    free(s);
    s = inf_ctx_describe("interactive", "Option B");
    assert_string_equal(s, "Option B");
    free(s);
    s = inf_ctx_describe(NULL, "no kind");
    assert_string_equal(s, "no kind");
    free(s);
    s = inf_ctx_describe(NULL, NULL);
    assert_non_null(strstr(s, "a message without text"));
    free(s);
}

/* Strict UTF-8 check (no overlongs, surrogates or truncated sequences). */
static int
utf8_valid(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;

    while (*p) {
        unsigned c = *p;
        int len, i;
        unsigned cp;

        if (c < 0x80) {
            p++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        for (i = 1; i < len; i++) {
            if ((p[i] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
            return 0;
        p += len;
    }
    return 1;
}

/*
 * A long caption is shortened, but never inside a UTF-8 sequence: the
 * result goes to the LLM as JSON and into responses.request_messages
 * (jsonb), and PostgreSQL rejects invalid UTF-8.
 */
static void
test_describe_long_caption_utf8(void **state)
{
    char cap[1200];
    size_t off;
    char *s;
    int ok;
    (void)state;

    /* try every alignment of 2-, 3- and 4-byte characters */
    for (off = 0; off < 4; off++) {
        static const char *const chars[] = { "\xC3\xA9", "\xE6\x97\xA5",
                                             "\xF0\x9F\x98\x80" };
        size_t c;

        for (c = 0; c < 3; c++) {
            size_t len = off, cl = strlen(chars[c]);

            memset(cap, 'a', off);
            while (len + cl < sizeof(cap)) {
                memcpy(cap + len, chars[c], cl);
                len += cl;
            }
            cap[len] = '\0';
            s = inf_ctx_describe("image", cap);
            assert_non_null(s);
            ok = utf8_valid(s) && strstr(s, "caption") && strlen(s) < 1200;
            free(s);
            if (!ok)
                fail_msg("invalid UTF-8 after shortening a caption of %zu-byte "
                         "characters at offset %zu",
                         cl, off);
        }
    }
}

static void
test_json_escaping(void **state)
{
    static char t0[] = "Line 1\nLine 2\t\"quoted\" back\\slash";
    static char t1[] =
        "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 <b>&";
    struct inf_ctx_turn h[2] = {
        { role_assistant, t0 },
        { role_user, t1 },
    };
    struct inf_ctx_input in;
    struct inf_llm_message *m;
    size_t n;
    char *json;
    (void)state;

    memset(&in, 0, sizeof(in));
    in.system_prompt = NULL; /* empty system message, not a crash */
    in.budget_tokens = 1000;
    in.history = h;
    in.nhistory = 2;
    in.pending_kind[0] = "text";
    in.pending_text[0] = "\x01 control";
    in.npending = 1;
    assert_int_equal(inf_ctx_build(&in, &m, &n, &json), CORE_OK);
    assert_int_equal(n, 4);
    assert_string_equal(m[0].content, "");
    assert_string_equal(m[1].role, "user");
    assert_string_equal(m[1].content, h[1].content);
    assert_string_equal(m[2].role, "assistant");
    assert_string_equal(m[2].content, h[0].content);
    /* one line of JSON; the parser gives back the exact strings */
    assert_null(strchr(json, '\n'));
    check_json(json, m, n);
    inf_ctx_messages_free(m, n);
    free(json);
}

static void
test_no_history_no_pending(void **state)
{
    struct inf_ctx_input in;
    struct inf_llm_message *m;
    size_t n;
    char *json;
    (void)state;

    memset(&in, 0, sizeof(in));
    in.system_prompt = "only me";
    in.budget_tokens = 50;
    assert_int_equal(inf_ctx_build(&in, &m, &n, &json), CORE_OK);
    assert_int_equal(n, 1);
    assert_string_equal(json,
                        "[{\"role\":\"system\",\"content\":\"only me\"}]");
    inf_ctx_messages_free(m, n);
    free(json);
    inf_ctx_messages_free(NULL, 0); /* free accepts NULL */
    inf_ctx_turns_free(NULL, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_estimate),
        cmocka_unit_test(test_budget_fits_all),
        cmocka_unit_test(test_budget_drops_oldest),
        cmocka_unit_test(test_budget_exact_order),
        cmocka_unit_test(test_budget_no_gaps),
        cmocka_unit_test(test_pending_and_media),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_describe_long_caption_utf8),
        cmocka_unit_test(test_json_escaping),
        cmocka_unit_test(test_no_history_no_pending),
    };
    return cmocka_run_group_tests(tests, turns_setup, NULL);
}
