/*
 * Splitting long replies into pieces that fit a platform's text limit:
 * cut at the last paragraph break, else sentence end, else word boundary in
 * the second half of the window; else at any word boundary; else hard at a
 * code point boundary (not before a combining mark or inside a ZWJ emoji
 * sequence when avoidable). Whitespace at the cuts is dropped.
 */
#include <stdlib.h>
#include <string.h>

#include "adapters/meta.h"

#define SPLIT_BACKOFF_MAX 16 /* code points a hard cut may move back */

static bool
split_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' ||
           c == '\f';
}

/* Length of the code point at s (1 for an invalid byte). */
static size_t
split_step(const char *s, size_t left, uint32_t *cp)
{
    int n = adp_utf8_decode(s, left, cp);

    if (n > 0)
        return (size_t)n;
    *cp = (unsigned char)*s;
    return 1;
}

/* End offset of the longest run from start that fits in max units; at
 * least one code point. */
static size_t
split_window(const char *t, size_t start, size_t len, size_t max,
             enum adp_text_unit unit)
{
    size_t pos = start, count = 0, step;
    uint32_t cp;

    while (pos < len) {
        step = split_step(t + pos, len - pos, &cp);
        if (unit == ADP_UNIT_BYTES ? pos + step - start > max : count >= max)
            break;
        pos += step;
        count++;
    }
    if (pos == start)
        pos += split_step(t + pos, len - pos, &cp);
    return pos;
}

/* Offset of a paragraph break (blank line) cut in (lo, hi], or 0. */
static size_t
split_paragraph(const char *t, size_t start, size_t lo, size_t hi)
{
    size_t p, q;

    for (p = hi; p > lo; p--) {
        if (t[p - 1] != '\n' || p < start + 2)
            continue;
        q = p - 2;
        while (q > start && (t[q] == ' ' || t[q] == '\t' || t[q] == '\r'))
            q--;
        if (t[q] == '\n' && q > start)
            return p;
    }
    return 0;
}

static bool
split_fullwidth_end(const char *t, size_t start, size_t p)
{
    static const char *const ends[] = { "\xe3\x80\x82", /* 。 */
                                        "\xef\xbc\x81", /* ！ */
                                        "\xef\xbc\x9f" /* ？ */ };
    size_t i;

    if (p < start + 3)
        return false;
    for (i = 0; i < sizeof(ends) / sizeof(ends[0]); i++)
        if (memcmp(t + p - 3, ends[i], 3) == 0)
            return true;
    return false;
}

/* Offset just after a sentence end in (lo, hi], or 0; t[hi] exists. */
static size_t
split_sentence(const char *t, size_t start, size_t lo, size_t hi)
{
    size_t p;

    for (p = hi; p > lo; p--) {
        if ((t[p - 1] == '.' || t[p - 1] == '!' || t[p - 1] == '?') &&
            split_ws(t[p]))
            return p;
        if (split_fullwidth_end(t, start, p))
            return p;
    }
    return 0;
}

/* Offset of a whitespace char (a word boundary) in (lo, hi], or 0. */
static size_t
split_word(const char *t, size_t lo, size_t hi)
{
    size_t p;

    for (p = hi; p > lo; p--)
        if (split_ws(t[p]))
            return p;
    return 0;
}

/* Code points that must not start a piece: combining marks, variation
 * selectors, emoji modifiers, tags, ZWJ. */
static bool
split_extends(uint32_t cp)
{
    return (cp >= 0x300 && cp <= 0x36f) || (cp >= 0x1ab0 && cp <= 0x1aff) ||
           (cp >= 0x20d0 && cp <= 0x20ff) || (cp >= 0xfe00 && cp <= 0xfe0f) ||
           (cp >= 0xfe20 && cp <= 0xfe2f) || cp == 0x200d ||
           (cp >= 0x1f3fb && cp <= 0x1f3ff) || (cp >= 0xe0020 && cp <= 0xe007f);
}

static size_t
split_prev(const char *t, size_t start, size_t p)
{
    size_t q = p - 1;

    while (q > start && p - q < 4 && ((unsigned char)t[q] & 0xc0) == 0x80)
        q--;
    return q;
}

static size_t
split_hard(const char *t, size_t start, size_t len, size_t lim)
{
    size_t cut = lim, prev;
    uint32_t cp, pcp;
    int i;

    for (i = 0; i < SPLIT_BACKOFF_MAX; i++) {
        prev = split_prev(t, start, cut);
        if (prev <= start)
            return lim;
        split_step(t + cut, len - cut, &cp);
        split_step(t + prev, len - prev, &pcp);
        if (!split_extends(cp) && pcp != 0x200d)
            return cut;
        cut = prev;
    }
    return lim;
}

static size_t
split_cut(const char *t, size_t start, size_t len, size_t lim)
{
    size_t half = start + (lim - start) / 2, p;

    if ((p = split_paragraph(t, start, half, lim)) ||
        (p = split_sentence(t, start, half, lim)) ||
        (p = split_word(t, half, lim)) || (p = split_word(t, start, half)))
        return p;
    return split_hard(t, start, len, lim);
}

int
adp_split_text(const char *text, size_t max, enum adp_text_unit unit,
               char **out, int maxout)
{
    size_t len, start, lim, cut, end;
    int n = 0;

    if (!text || !out || max == 0 || maxout < 0)
        return -1;
    len = strlen(text);
    start = 0;
    while (start < len && split_ws(text[start]))
        start++;
    while (start < len) {
        lim = split_window(text, start, len, max, unit);
        cut = lim == len ? len : split_cut(text, start, len, lim);
        end = cut;
        while (end > start && split_ws(text[end - 1]))
            end--;
        if (end > start) {
            if (n >= maxout)
                goto fail;
            out[n] = malloc(end - start + 1);
            if (!out[n])
                goto fail;
            memcpy(out[n], text + start, end - start);
            out[n][end - start] = '\0';
            n++;
        }
        start = cut;
        while (start < len && split_ws(text[start]))
            start++;
    }
    return n;
fail:
    while (n > 0)
        free(out[--n]);
    return -1;
}
