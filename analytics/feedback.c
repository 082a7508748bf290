/*
 * Feedback polarity: emoji reaction map (parse, normalise, look up) and the
 * payload format of Parley's own thumbs buttons. Pure functions over
 * caller-owned values; no global mutable state.
 */
#include "analytics/feedback.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define EMOJI_THUMBS_UP   "\xF0\x9F\x91\x8D"
#define EMOJI_HEART       "\xE2\x9D\xA4" /* U+2764, FE0F stripped */
#define EMOJI_FOLDED      "\xF0\x9F\x99\x8F"
#define EMOJI_HEART_EYES  "\xF0\x9F\x98\x8D"
#define EMOJI_THUMBS_DOWN "\xF0\x9F\x91\x8E"
#define EMOJI_POUTING     "\xF0\x9F\x98\xA1"

/* ANA_FEEDBACK_DEFAULT_MAP, already normalised (test_feedback checks that
 * parsing the string gives exactly this). */
static const struct ana_feedback_map default_map = {
    6,
    {
        { EMOJI_THUMBS_UP, 1 },
        { EMOJI_HEART, 1 },
        { EMOJI_FOLDED, 1 },
        { EMOJI_HEART_EYES, 1 },
        { EMOJI_THUMBS_DOWN, -1 },
        { EMOJI_POUTING, -1 },
    },
};

void
ana_feedback_map_default(struct ana_feedback_map *m)
{
    if (m != NULL)
        *m = default_map;
}

/* Strict UTF-8 decode of one code point (no overlongs, no surrogates);
 * returns its length or 0 when invalid. */
static size_t
utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len;
    uint32_t v, min;

    if (n == 0)
        return 0;
    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2;
        v = s[0] & 0x1Fu;
        min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3;
        v = s[0] & 0x0Fu;
        min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4;
        v = s[0] & 0x07u;
        min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t k = 1; k < len; k++) {
        if ((s[k] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[k] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

static int
is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Normalise s[0..n) into out[size]. */
static enum core_status
normalize_n(const char *s, size_t n, char *out, size_t size)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t o = 0;

    if (size == 0)
        return CORE_ERR_TOO_LARGE;
    while (n > 0 && is_space(p[0])) {
        p++;
        n--;
    }
    while (n > 0 && is_space(p[n - 1]))
        n--;
    while (n > 0) {
        uint32_t cp;
        size_t l = utf8_decode(p, n, &cp);
        if (l == 0)
            return CORE_ERR_INVALID;
        if (!(cp == 0xFE0E || cp == 0xFE0F ||
              (cp >= 0x1F3FB && cp <= 0x1F3FF))) {
            if (o + l >= size)
                return CORE_ERR_TOO_LARGE;
            memcpy(out + o, p, l);
            o += l;
        }
        p += l;
        n -= l;
    }
    out[o] = '\0';
    return CORE_OK;
}

enum core_status
ana_feedback_emoji_normalize(const char *emoji, char *out, size_t size)
{
    if (emoji == NULL || out == NULL)
        return CORE_ERR_INVALID;
    return normalize_n(emoji, strlen(emoji), out, size);
}

/* Parse "[+-]digits" in s[0..n) into *v, |v| <= ANA_FEEDBACK_VALUE_MAX. */
static int
parse_value(const char *s, size_t n, int *v)
{
    int sign = 1, val = 0;
    size_t k = 0;

    if (n > 0 && (s[0] == '+' || s[0] == '-')) {
        sign = s[0] == '-' ? -1 : 1;
        k = 1;
    }
    if (k == n || n - k > 3)
        return 0;
    for (; k < n; k++) {
        if (s[k] < '0' || s[k] > '9')
            return 0;
        val = val * 10 + (s[k] - '0');
    }
    if (val > ANA_FEEDBACK_VALUE_MAX)
        return 0;
    *v = sign * val;
    return 1;
}

/* One "EMOJI=VALUE" item s[0..n) (already split on ','). */
static enum core_status
parse_item(struct ana_feedback_map *m, const char *s, size_t n)
{
    char emoji[ANA_FEEDBACK_EMOJI_MAX];
    const char *eq = NULL, *v;
    size_t vn;
    int val;
    enum core_status st;

    for (size_t k = 0; k < n; k++)
        if (s[k] == '=')
            eq = s + k;
    if (eq == NULL)
        return CORE_ERR_INVALID;
    v = eq + 1;
    vn = (size_t)(s + n - v);
    while (vn > 0 && is_space((unsigned char)v[0])) {
        v++;
        vn--;
    }
    while (vn > 0 && is_space((unsigned char)v[vn - 1]))
        vn--;
    if (!parse_value(v, vn, &val))
        return CORE_ERR_INVALID;
    st = normalize_n(s, (size_t)(eq - s), emoji, sizeof(emoji));
    if (st != CORE_OK)
        return CORE_ERR_INVALID;
    if (emoji[0] == '\0')
        return CORE_ERR_INVALID;
    for (unsigned k = 0; k < m->n; k++) {
        if (strcmp(m->e[k].emoji, emoji) == 0) {
            m->e[k].polarity = val;
            return CORE_OK;
        }
    }
    if (m->n == ANA_FEEDBACK_MAP_MAX)
        return CORE_ERR_TOO_LARGE;
    memcpy(m->e[m->n].emoji, emoji, sizeof(emoji));
    m->e[m->n].polarity = val;
    m->n++;
    return CORE_OK;
}

enum core_status
ana_feedback_map_parse(struct ana_feedback_map *m, const char *spec)
{
    const char *p;
    enum core_status st = CORE_OK;

    if (m == NULL)
        return CORE_ERR_INVALID;
    memset(m, 0, sizeof(*m));
    if (spec == NULL)
        return CORE_OK;
    for (p = spec;; p++) {
        const char *end = strchr(p, ',');
        size_t n = end != NULL ? (size_t)(end - p) : strlen(p);
        size_t k = 0;
        while (k < n && is_space((unsigned char)p[k]))
            k++;
        if (k < n) { /* empty items (",,", trailing ",") are ignored */
            st = parse_item(m, p, n);
            if (st != CORE_OK)
                goto out;
        }
        if (end == NULL)
            break;
        p = end;
    }
out:
    if (st != CORE_OK)
        memset(m, 0, sizeof(*m));
    return st;
}

int
ana_feedback_polarity(const struct ana_feedback_map *m, const char *emoji)
{
    char norm[ANA_FEEDBACK_EMOJI_MAX];

    if (m == NULL)
        m = &default_map;
    if (emoji == NULL ||
        ana_feedback_emoji_normalize(emoji, norm, sizeof(norm)) != CORE_OK ||
        norm[0] == '\0')
        return 0;
    for (unsigned k = 0; k < m->n && k < ANA_FEEDBACK_MAP_MAX; k++)
        if (strcmp(m->e[k].emoji, norm) == 0)
            return m->e[k].polarity;
    return 0;
}

int
ana_feedback_button_polarity(const char *payload, int64_t *response_id)
{
    static const char prefix[] = ANA_FEEDBACK_BUTTON_PREFIX;
    const char *p;
    int pol;
    int64_t id = 0;

    if (payload == NULL || strncmp(payload, prefix, sizeof(prefix) - 1) != 0)
        return 0;
    p = payload + sizeof(prefix) - 1;
    if (strncmp(p, "up:", 3) == 0) {
        pol = 1;
        p += 3;
    } else if (strncmp(p, "down:", 5) == 0) {
        pol = -1;
        p += 5;
    } else {
        return 0;
    }
    if (*p < '1' || *p > '9')
        return 0; /* empty, sign, or leading zero */
    for (; *p != '\0'; p++) {
        int d = *p - '0';
        if (d < 0 || d > 9 || id > (INT64_MAX - d) / 10)
            return 0;
        id = id * 10 + d;
    }
    if (response_id != NULL)
        *response_id = id;
    return pol;
}

enum core_status
ana_feedback_button_payload(char *buf, size_t size, int polarity,
                            int64_t response_id)
{
    int n;

    if (buf == NULL || (polarity != 1 && polarity != -1) || response_id < 1)
        return CORE_ERR_INVALID;
    n = snprintf(buf, size, "%s%s:%" PRId64, ANA_FEEDBACK_BUTTON_PREFIX,
                 polarity > 0 ? "up" : "down", response_id);
    if (n < 0)
        return CORE_ERR_INVALID;
    if ((size_t)n >= size)
        return CORE_ERR_TOO_LARGE;
    return CORE_OK;
}
