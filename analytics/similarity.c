/* Word-set (Jaccard) similarity; see similarity.h. */
#include "analytics/similarity.h"

#include <string.h>

#define SIM_MAX_WORDS 64
#define SIM_MAX_WORD  32

struct wordset {
    char w[SIM_MAX_WORDS][SIM_MAX_WORD];
    int n;
};

static int
is_word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c >= 0x80;
}

static void
add_word(struct wordset *s, const char *w, size_t len)
{
    char buf[SIM_MAX_WORD];
    size_t i;
    int k;

    if (len >= SIM_MAX_WORD)
        len = SIM_MAX_WORD - 1;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)w[i];

        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c | 0x20); /* ASCII lower case */
        buf[i] = (char)c;
    }
    buf[len] = '\0';
    for (k = 0; k < s->n; k++)
        if (strcmp(s->w[k], buf) == 0)
            return;
    if (s->n < SIM_MAX_WORDS)
        memcpy(s->w[s->n++], buf, len + 1);
}

/* Length of a non-ASCII punctuation sequence at p (¿ ¡ « » and the other
 * Latin-1 symbols U+00A0..U+00BF; curly quotes, dashes and … in
 * U+2010..U+2027), else 0. */
static int
punct_len(const unsigned char *p)
{
    if (p[0] == 0xC2 && p[1] >= 0xA0 && p[1] <= 0xBF)
        return 2;
    if (p[0] == 0xE2 && p[1] == 0x80 && p[2] >= 0x90 && p[2] <= 0xA7)
        return 3;
    return 0;
}

static int
word_at(const char *p)
{
    return *p && is_word_byte((unsigned char)*p) &&
           punct_len((const unsigned char *)p) == 0;
}

static void
split_words(const char *t, struct wordset *s)
{
    const char *p = t, *start;

    s->n = 0;
    while (p && *p) {
        while (*p && !word_at(p)) {
            int n = punct_len((const unsigned char *)p);

            p += n ? n : 1;
        }
        start = p;
        while (word_at(p))
            p++;
        if (p > start)
            add_word(s, start, (size_t)(p - start));
    }
}

double
ana_text_similarity(const char *a, const char *b)
{
    struct wordset sa, sb;
    int i, k, common = 0;

    split_words(a, &sa);
    split_words(b, &sb);
    if (sa.n == 0 || sb.n == 0)
        return 0.0;
    for (i = 0; i < sa.n; i++)
        for (k = 0; k < sb.n; k++)
            if (strcmp(sa.w[i], sb.w[k]) == 0) {
                common++;
                break;
            }
    return (double)common / (double)(sa.n + sb.n - common);
}

int
ana_is_rephrase(const char *previous, const char *current)
{
    struct wordset s;

    split_words(current, &s);
    /* "hi" twice is not a rephrase; a question of three words or more is. */
    if (s.n < 3)
        return 0;
    return ana_text_similarity(previous, current) >= 0.5;
}
