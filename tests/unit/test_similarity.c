/* Unit tests of the word-set similarity behind the rephrase signal. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include "analytics/similarity.h"

static void
test_identical_and_disjoint(void **state)
{
    (void)state;
    assert_true(ana_text_similarity("where is my order", "Where is my ORDER?") >
                0.99);
    assert_true(ana_text_similarity("where is my order", "tell me a joke") <
                0.01);
    assert_true(ana_text_similarity("", "anything") == 0.0);
    assert_true(ana_text_similarity(NULL, "anything") == 0.0);
}

static void
test_partial_overlap(void **state)
{
    (void)state;
    /* {what,time,do,you,open} vs {what,time,do,you,close}: 4 of 6 */
    double s =
        ana_text_similarity("what time do you open", "what time do you close");

    assert_true(s > 0.66 && s < 0.67);
}

static void
test_rephrase(void **state)
{
    (void)state;
    assert_true(ana_is_rephrase("how do I reset my password",
                                "how can I reset the password?"));
    assert_false(
        ana_is_rephrase("how do I reset my password", "thanks, that worked"));
    assert_false(ana_is_rephrase("hi", "hi"));
    /* Non-ASCII words count as words. */
    assert_true(ana_is_rephrase("¿dónde está mi pedido número 5?",
                                "dónde está mi pedido"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identical_and_disjoint),
        cmocka_unit_test(test_partial_overlap),
        cmocka_unit_test(test_rephrase),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
