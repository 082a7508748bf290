/*
 * Unit tests for analytics/feedback: the default emoji map, emoji
 * normalisation (variation selectors, skin tones), map parsing and its
 * errors, and Parley's feedback button payloads.
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
#include <string.h>

#include "analytics/feedback.h"

#define THUMBS_UP    "\xF0\x9F\x91\x8D"
#define THUMBS_DOWN  "\xF0\x9F\x91\x8E"
#define HEART        "\xE2\x9D\xA4"
#define VS16         "\xEF\xB8\x8F"
#define VS15         "\xEF\xB8\x8E"
#define TONE_LIGHT   "\xF0\x9F\x8F\xBB"
#define TONE_MEDIUM  "\xF0\x9F\x8F\xBD"
#define TONE_DARK    "\xF0\x9F\x8F\xBF"
#define FOLDED_HANDS "\xF0\x9F\x99\x8F"
#define HEART_EYES   "\xF0\x9F\x98\x8D"
#define POUTING      "\xF0\x9F\x98\xA1"
#define JOY          "\xF0\x9F\x98\x82"
#define FIRE         "\xF0\x9F\x94\xA5"
#define CRY          "\xF0\x9F\x98\xA2"
#define ZWJ          "\xE2\x80\x8D"

static void
test_default_map(void **state)
{
    (void)state;
    /* NULL map = default */
    assert_int_equal(ana_feedback_polarity(NULL, THUMBS_UP), 1);
    assert_int_equal(ana_feedback_polarity(NULL, HEART VS16), 1);
    assert_int_equal(ana_feedback_polarity(NULL, HEART), 1);
    assert_int_equal(ana_feedback_polarity(NULL, FOLDED_HANDS), 1);
    assert_int_equal(ana_feedback_polarity(NULL, HEART_EYES), 1);
    assert_int_equal(ana_feedback_polarity(NULL, THUMBS_DOWN), -1);
    assert_int_equal(ana_feedback_polarity(NULL, POUTING), -1);
    /* ambiguous or unmapped: neutral */
    assert_int_equal(ana_feedback_polarity(NULL, JOY), 0);
    assert_int_equal(ana_feedback_polarity(NULL, CRY), 0);
    assert_int_equal(ana_feedback_polarity(NULL, FIRE), 0);
    assert_int_equal(ana_feedback_polarity(NULL, "like"), 0);
    /* removal (WhatsApp sends "") and garbage */
    assert_int_equal(ana_feedback_polarity(NULL, ""), 0);
    assert_int_equal(ana_feedback_polarity(NULL, NULL), 0);
    assert_int_equal(ana_feedback_polarity(NULL, "\xF0\x9F\x91"), 0);
    assert_int_equal(ana_feedback_polarity(NULL, "\xC0\xAF"), 0);
}

static void
test_default_string_matches_table(void **state)
{
    struct ana_feedback_map parsed, def;
    (void)state;
    assert_int_equal(ana_feedback_map_parse(&parsed, ANA_FEEDBACK_DEFAULT_MAP),
                     CORE_OK);
    ana_feedback_map_default(&def);
    assert_int_equal(parsed.n, 6);
    assert_int_equal(def.n, parsed.n);
    for (unsigned k = 0; k < def.n; k++) {
        assert_string_equal(def.e[k].emoji, parsed.e[k].emoji);
        assert_int_equal(def.e[k].polarity, parsed.e[k].polarity);
    }
    /* the literal from the brief, written as UTF-8 source text */
    assert_string_equal(ANA_FEEDBACK_DEFAULT_MAP,
                        "👍=+1,❤️=+1,🙏=+1,😍=+1,👎=-1,😡=-1");
}

static void
test_normalisation(void **state)
{
    char buf[ANA_FEEDBACK_EMOJI_MAX];
    (void)state;
    /* skin tones and variation selectors are removed */
    assert_int_equal(ana_feedback_polarity(NULL, THUMBS_UP TONE_LIGHT), 1);
    assert_int_equal(ana_feedback_polarity(NULL, THUMBS_UP TONE_DARK), 1);
    assert_int_equal(ana_feedback_polarity(NULL, THUMBS_DOWN TONE_MEDIUM), -1);
    assert_int_equal(ana_feedback_polarity(NULL, FOLDED_HANDS TONE_MEDIUM VS16),
                     1);
    assert_int_equal(ana_feedback_polarity(NULL, HEART VS15), 1);
    assert_int_equal(ana_feedback_polarity(NULL, " " THUMBS_UP "\n"), 1);
    /* two emoji are not one */
    assert_int_equal(ana_feedback_polarity(NULL, THUMBS_UP THUMBS_UP), 0);

    assert_int_equal(ana_feedback_emoji_normalize(THUMBS_UP TONE_DARK VS16, buf,
                                                  sizeof(buf)),
                     CORE_OK);
    assert_string_equal(buf, THUMBS_UP);
    /* ZWJ sequences keep their joiners: heart on fire ❤️‍🔥 */
    assert_int_equal(
        ana_feedback_emoji_normalize(HEART VS16 ZWJ FIRE, buf, sizeof(buf)),
        CORE_OK);
    assert_string_equal(buf, HEART ZWJ FIRE);
    assert_int_equal(ana_feedback_emoji_normalize(THUMBS_UP, buf, 4),
                     CORE_ERR_TOO_LARGE);
    assert_int_equal(
        ana_feedback_emoji_normalize("\xED\xA0\x80", buf, sizeof(buf)),
        CORE_ERR_INVALID); /* surrogate */
    assert_int_equal(ana_feedback_emoji_normalize(NULL, buf, sizeof(buf)),
                     CORE_ERR_INVALID);
}

static void
test_custom_map(void **state)
{
    struct ana_feedback_map m;
    (void)state;
    assert_int_equal(ana_feedback_map_parse(&m, " 🔥 = +2 , 😂=0,✅=1,❌=-1,"
                                                "👍🏿=-1, 👍=+1 ,"),
                     CORE_OK);
    assert_int_equal(m.n, 5); /* 👍🏿 and 👍 are one key; last wins */
    assert_int_equal(ana_feedback_polarity(&m, FIRE), 2);
    assert_int_equal(ana_feedback_polarity(&m, JOY), 0);
    assert_int_equal(ana_feedback_polarity(&m, "✅"), 1);
    assert_int_equal(ana_feedback_polarity(&m, "❌"), -1);
    assert_int_equal(ana_feedback_polarity(&m, THUMBS_UP TONE_LIGHT), 1);
    /* not in this map, even though it is in the default one */
    assert_int_equal(ana_feedback_polarity(&m, THUMBS_DOWN), 0);

    assert_int_equal(ana_feedback_map_parse(&m, ""), CORE_OK);
    assert_int_equal(m.n, 0);
    assert_int_equal(ana_feedback_polarity(&m, THUMBS_UP), 0);
    assert_int_equal(ana_feedback_map_parse(&m, NULL), CORE_OK);
    assert_int_equal(m.n, 0);
}

static void
test_map_errors(void **state)
{
    static const char *const bad[] = {
        "👍",          /* no value */
        "👍=",         /* empty value */
        "👍=yes",      /* not a number */
        "👍=+",        /* sign only */
        "👍=9",        /* out of range */
        "👍=1.5",      /* not an integer */
        "=1",         /* no emoji */
        "\xF0\x9F=1", /* truncated UTF-8 */
        "👍=1,😡",      /* second item broken */
        "🏽=1",     /* only a skin tone: empty after normalising */
        "a-very-long-label-that-does-not-fit-in-32-bytes=1",
    };
    struct ana_feedback_map m;
    char spec[2048];
    size_t o = 0;
    (void)state;

    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        m.n = 99;
        assert_int_not_equal(ana_feedback_map_parse(&m, bad[k]), CORE_OK);
        assert_int_equal(m.n, 0); /* left empty on error */
    }
    assert_int_equal(ana_feedback_map_parse(NULL, "👍=1"), CORE_ERR_INVALID);
    /* too many entries */
    for (int k = 0; k <= ANA_FEEDBACK_MAP_MAX; k++) {
        int w = snprintf(spec + o, sizeof(spec) - o, "e%d=1,", k);
        assert_true(w > 0 && (size_t)w < sizeof(spec) - o);
        o += (size_t)w;
    }
    assert_int_equal(ana_feedback_map_parse(&m, spec), CORE_ERR_TOO_LARGE);
    assert_int_equal(m.n, 0);
}

static void
test_buttons(void **state)
{
    int64_t id = -7;
    char buf[ANA_FEEDBACK_PAYLOAD_MAX];
    (void)state;

    assert_int_equal(ana_feedback_button_polarity("parley_fb:up:42", &id), 1);
    assert_int_equal(id, 42);
    assert_int_equal(ana_feedback_button_polarity("parley_fb:down:9001", &id),
                     -1);
    assert_int_equal(id, 9001);
    assert_int_equal(
        ana_feedback_button_polarity("parley_fb:up:9223372036854775807", &id),
        1);
    assert_int_equal(id, INT64_MAX);
    assert_int_equal(ana_feedback_button_polarity("parley_fb:up:1", NULL), 1);

    id = -7;
    static const char *const bad[] = {
        NULL,
        "",
        "parley_fb:",
        "parley_fb:up:",
        "parley_fb:up:0",
        "parley_fb:up:007",
        "parley_fb:up:-1",
        "parley_fb:up:+1",
        "parley_fb:up:12a",
        "parley_fb:up:12 ",
        "parley_fb:sideways:1",
        "parley_fb:UP:1",
        "Parley_fb:up:1",
        "other:up:1",
        "parley_fb:up:9223372036854775808",
        "parley_fb:down:99999999999999999999",
        "parley_fb:up:1:extra",
    };
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        assert_int_equal(ana_feedback_button_polarity(bad[k], &id), 0);
        assert_int_equal(id, -7);
    }

    /* round trip with the payload writer */
    assert_int_equal(ana_feedback_button_payload(buf, sizeof(buf), 1, 123),
                     CORE_OK);
    assert_string_equal(buf, "parley_fb:up:123");
    assert_int_equal(
        ana_feedback_button_payload(buf, sizeof(buf), -1, INT64_MAX), CORE_OK);
    assert_string_equal(buf, "parley_fb:down:9223372036854775807");
    assert_int_equal(ana_feedback_button_polarity(buf, &id), -1);
    assert_int_equal(id, INT64_MAX);
    assert_int_equal(ana_feedback_button_payload(buf, sizeof(buf), 0, 1),
                     CORE_ERR_INVALID);
    assert_int_equal(ana_feedback_button_payload(buf, sizeof(buf), 1, 0),
                     CORE_ERR_INVALID);
    assert_int_equal(ana_feedback_button_payload(buf, 10, 1, 12345),
                     CORE_ERR_TOO_LARGE);
}

/* One shared read-only map used from several threads (TSan build). */
static struct ana_feedback_map shared_map;

static void *
reader(void *arg)
{
    long bad = 0;
    (void)arg;
    for (int k = 0; k < 20000; k++) {
        bad += ana_feedback_polarity(&shared_map, THUMBS_UP TONE_DARK) != 1;
        bad += ana_feedback_polarity(NULL, THUMBS_DOWN) != -1;
    }
    return (void *)bad;
}

static void
test_threads(void **state)
{
    pthread_t th[4];
    (void)state;
    assert_int_equal(
        ana_feedback_map_parse(&shared_map, ANA_FEEDBACK_DEFAULT_MAP), CORE_OK);
    for (int k = 0; k < 4; k++)
        assert_int_equal(pthread_create(&th[k], NULL, reader, NULL), 0);
    for (int k = 0; k < 4; k++) {
        void *ret;
        assert_int_equal(pthread_join(th[k], &ret), 0);
        assert_null(ret);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_map),
        cmocka_unit_test(test_default_string_matches_table),
        cmocka_unit_test(test_normalisation),
        cmocka_unit_test(test_custom_map),
        cmocka_unit_test(test_map_errors),
        cmocka_unit_test(test_buttons),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
