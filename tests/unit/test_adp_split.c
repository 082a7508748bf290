/*
 * Unit tests of adp_split_text: boundary preferences, UTF-8 safety in both
 * units, limits on piece count, and a randomized property check (every
 * piece fits, is valid UTF-8, and the pieces rebuild the original text up to
 * the whitespace at the cuts).
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "adapters/meta.h"

#define MAXP 512

static bool
is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

static size_t
units(const char *s, enum adp_text_unit u)
{
    return u == ADP_UNIT_BYTES ? strlen(s) : adp_utf8_count(s);
}

/* The checks every split must pass; returns the number of pieces. */
static int
split_check(const char *text, size_t max, enum adp_text_unit u, char **p)
{
    int n = adp_split_text(text, max, u, p, MAXP), i;
    const char *t = text;
    size_t len;

    assert_true(n >= 0);
    for (i = 0; i < n; i++) {
        len = strlen(p[i]);
        assert_true(len > 0);
        assert_true(units(p[i], u) <= max);
        assert_true(adp_utf8_valid(p[i], len));
        assert_false(is_ws(p[i][0]));
        assert_false(is_ws(p[i][len - 1]));
        /* the original is piece, whitespace, piece, ... */
        while (is_ws(*t))
            t++;
        if (strncmp(t, p[i], len) != 0)
            fail_msg("piece %d does not continue the text: '%s'", i, p[i]);
        t += len;
        if (i + 1 < n && *t && !is_ws(*t)) {
            /* a cut without whitespace (hard cut, CJK full stop) */
        }
    }
    while (is_ws(*t))
        t++;
    assert_int_equal(*t, '\0');
    return n;
}

static void
free_pieces(char **p, int n)
{
    while (n > 0)
        free(p[--n]);
}

static void
test_basic(void **state)
{
    char *p[MAXP];
    int n;

    (void)state;
    n = split_check("  hello world \n", 100, ADP_UNIT_CHARS, p);
    assert_int_equal(n, 1);
    assert_string_equal(p[0], "hello world");
    free_pieces(p, n);
    assert_int_equal(adp_split_text("", 10, ADP_UNIT_CHARS, p, MAXP), 0);
    assert_int_equal(adp_split_text(" \n\t ", 10, ADP_UNIT_CHARS, p, MAXP), 0);
    assert_int_equal(adp_split_text("x", 0, ADP_UNIT_CHARS, p, MAXP), -1);
    assert_int_equal(adp_split_text(NULL, 10, ADP_UNIT_CHARS, p, MAXP), -1);
    n = split_check("exactly10!", 10, ADP_UNIT_CHARS, p);
    assert_int_equal(n, 1);
    free_pieces(p, n);
}

static void
test_preferences(void **state)
{
    char *p[MAXP];
    int n;

    (void)state;
    /* paragraph beats sentence and word */
    n = split_check("First paragraph. It has two sentences.\n\nSecond one "
                    "here. And more words.",
                    60, ADP_UNIT_CHARS, p);
    assert_int_equal(n, 2);
    assert_string_equal(p[0], "First paragraph. It has two sentences.");
    assert_string_equal(p[1], "Second one here. And more words.");
    free_pieces(p, n);
    /* blank line with spaces and CRLF is still a paragraph break */
    n = split_check("Alpha beta gamma delta.\r\n  \r\nEpsilon zeta eta theta.",
                    30, ADP_UNIT_CHARS, p);
    assert_int_equal(n, 2);
    assert_string_equal(p[0], "Alpha beta gamma delta.");
    free_pieces(p, n);
    /* sentence beats word */
    n = split_check("One two three four. Five six seven eight nine ten.", 30,
                    ADP_UNIT_CHARS, p);
    assert_int_equal(n, 2);
    assert_string_equal(p[0], "One two three four.");
    assert_string_equal(p[1], "Five six seven eight nine ten.");
    free_pieces(p, n);
    /* word boundary */
    n = split_check("aaaa bbbb cccc dddd eeee ffff", 12, ADP_UNIT_CHARS, p);
    assert_int_equal(n, 3);
    assert_string_equal(p[0], "aaaa bbbb");
    assert_string_equal(p[1], "cccc dddd");
    assert_string_equal(p[2], "eeee ffff");
    free_pieces(p, n);
    /* a too-early paragraph break loses to a later word boundary */
    n = split_check("Hi.\n\nthis is a long paragraph of many words", 30,
                    ADP_UNIT_CHARS, p);
    assert_true(strlen(p[0]) > 15);
    free_pieces(p, n);
    /* hard cut of one long word */
    n = split_check("abcdefghijklmnopqrstuvwxyz", 10, ADP_UNIT_CHARS, p);
    assert_int_equal(n, 3);
    assert_string_equal(p[0], "abcdefghij");
    assert_string_equal(p[2], "uvwxyz");
    free_pieces(p, n);
}

static void
test_multibyte(void **state)
{
    /* 20 CJK characters (3 bytes each), with a full stop after the 7th */
    const char *cjk = "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c\xe4"
                      "\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe3\x80\x82\xe7\x95"
                      "\x8c\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c"
                      "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c\xe4"
                      "\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96";
    /* 👩‍👩‍👧 (ZWJ sequence, 18 bytes) repeated, no spaces */
    const char *fam = "ab\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80"
                      "\x8d\xf0\x9f\x91\xa7"
                      "cd";
    char *p[MAXP];
    int n, i;

    (void)state;
    n = split_check(cjk, 10, ADP_UNIT_CHARS, p);
    assert_int_equal(n, 3);
    /* the full stop (8th char) is the cut: a sentence end */
    assert_int_equal(adp_utf8_count(p[0]), 8);
    free_pieces(p, n);
    for (i = 4; i <= 13; i++) {
        n = split_check(cjk, (size_t)i, ADP_UNIT_BYTES, p);
        free_pieces(p, n);
    }
    /* bytes: the ZWJ sequence is not cut in the middle when avoidable */
    n = split_check(fam, 12, ADP_UNIT_BYTES, p);
    assert_string_equal(p[0], "ab");
    free_pieces(p, n);
    /* combining accent (e + U+0301) stays with its letter */
    n = split_check("abcde\xcc\x81"
                    "fgh",
                    5, ADP_UNIT_CHARS, p);
    assert_string_equal(p[0], "abcd");
    assert_string_equal(p[1], "e\xcc\x81"
                              "fgh");
    free_pieces(p, n);
    /* a 4-byte char never split even when max < its length */
    n = adp_split_text("\xf0\x9f\x98\x80\xf0\x9f\x98\x80", 2, ADP_UNIT_BYTES, p,
                       MAXP);
    assert_int_equal(n, 2);
    assert_string_equal(p[0], "\xf0\x9f\x98\x80");
    free_pieces(p, n);
}

static void
test_maxout(void **state)
{
    char *p[4];

    (void)state;
    assert_int_equal(adp_split_text("a b c d e f g h", 2, ADP_UNIT_CHARS, p, 4),
                     -1);
    assert_int_equal(adp_split_text("a b c d", 2, ADP_UNIT_CHARS, p, 4), 4);
    free_pieces(p, 4);
    assert_int_equal(adp_split_text("a", 2, ADP_UNIT_CHARS, p, 0), -1);
}

static void
test_random(void **state)
{
    static const char *const tok[] = {
        "word",
        "longerword",
        "caf\xc3\xa9",
        "\xe4\xbd\xa0\xe5\xa5\xbd",
        "\xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd",
        ".",
        "!",
        "?",
        " ",
        " ",
        " ",
        "\n",
        "\n\n",
        "\xe3\x80\x82",
        "x",
        "\xd0\xbf\xd1\x80\xd0\xb8",
        "\t",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    };
    char text[4096], *p[MAXP];
    unsigned seed = 12345;
    size_t len, max, t;
    int iter, n;
    enum adp_text_unit u;

    (void)state;
    for (iter = 0; iter < 3000; iter++) {
        len = 0;
        seed = seed * 1103515245u + 12345u;
        while (len < (seed >> 16) % 3000) {
            seed = seed * 1103515245u + 12345u;
            t = (seed >> 16) % (sizeof(tok) / sizeof(tok[0]));
            if (len + strlen(tok[t]) >= sizeof(text))
                break;
            memcpy(text + len, tok[t], strlen(tok[t]));
            len += strlen(tok[t]);
        }
        text[len] = '\0';
        seed = seed * 1103515245u + 12345u;
        u = (seed >> 16) & 1 ? ADP_UNIT_BYTES : ADP_UNIT_CHARS;
        max = 4 + (seed >> 17) % 300;
        n = split_check(text, max, u, p);
        free_pieces(p, n);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),     cmocka_unit_test(test_preferences),
        cmocka_unit_test(test_multibyte), cmocka_unit_test(test_maxout),
        cmocka_unit_test(test_random),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
