/*
 * PII redaction with hand-written scanners (no regex): each detector walks
 * the text once and claims byte ranges in a per-call map, in a fixed order,
 * so that later and looser detectors (phone) never re-match what earlier
 * and stricter ones (card, IBAN, IP, dates, prices) took. The output is then
 * assembled in one pass. All spans start and end on ASCII bytes.
 */
#include "analytics/redact.h"

#include <arpa/inet.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum span_kind {
    SPAN_KEEP = 0, /* protected (date, price, reference): copied as is */
    SPAN_EMAIL,
    SPAN_PHONE,
    SPAN_CARD,
    SPAN_IBAN,
    SPAN_IP,
    SPAN_CRED
};

struct span {
    size_t start;
    size_t end;
    enum span_kind kind;
};

struct scan {
    const unsigned char *s; /* NUL-terminated: s[n] == 0 */
    size_t n;
    unsigned char *claimed;
    struct span *spans;
    size_t nspans;
    size_t cap;
    int oom;
};

#define PHONE_MAX_GROUPS 24

static int
is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int
is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int
is_alnum(int c)
{
    return is_digit(c) || is_alpha(c);
}

static int
is_hex(int c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int
to_upper(int c)
{
    return (c >= 'a' && c <= 'z') ? c - 'a' + 'A' : c;
}

static int
range_free(const struct scan *sc, size_t start, size_t end)
{
    for (size_t k = start; k < end; k++)
        if (sc->claimed[k])
            return 0;
    return 1;
}

/* Claim [start, end) for one entity; fails when any byte is taken. */
static int
claim(struct scan *sc, size_t start, size_t end, enum span_kind kind)
{
    struct span *grown;

    if (end <= start || end > sc->n || !range_free(sc, start, end))
        return 0;
    if (sc->nspans == sc->cap) {
        size_t cap = sc->cap ? sc->cap * 2 : 16;
        grown = realloc(sc->spans, cap * sizeof(*grown));
        if (grown == NULL) {
            sc->oom = 1;
            return 0;
        }
        sc->spans = grown;
        sc->cap = cap;
    }
    sc->spans[sc->nspans].start = start;
    sc->spans[sc->nspans].end = end;
    sc->spans[sc->nspans].kind = kind;
    sc->nspans++;
    memset(sc->claimed + start, 1, end - start);
    return 1;
}

/* ---- checksums ---------------------------------------------------------- */

int
ana_luhn_valid(const char *s, size_t n)
{
    unsigned sum = 0, ndig = 0;

    if (s == NULL)
        return 0;
    for (size_t k = n; k > 0; k--) {
        int c = (unsigned char)s[k - 1];
        unsigned d;
        if (!is_digit(c))
            continue;
        d = (unsigned)(c - '0');
        if (ndig % 2 == 1) {
            d *= 2;
            if (d > 9)
                d -= 9;
        }
        sum += d;
        ndig++;
    }
    return ndig >= 2 && sum % 10 == 0;
}

/* ISO 13616 registry lengths (SWIFT IBAN registry). */
static const struct {
    char cc[3];
    unsigned char len;
} iban_lengths[] = {
    { "AD", 24 }, { "AE", 23 }, { "AL", 28 }, { "AT", 20 }, { "AZ", 28 },
    { "BA", 20 }, { "BE", 16 }, { "BG", 22 }, { "BH", 22 }, { "BI", 27 },
    { "BR", 29 }, { "BY", 28 }, { "CH", 21 }, { "CR", 22 }, { "CY", 28 },
    { "CZ", 24 }, { "DE", 22 }, { "DJ", 27 }, { "DK", 18 }, { "DO", 28 },
    { "EE", 20 }, { "EG", 29 }, { "ES", 24 }, { "FI", 18 }, { "FK", 18 },
    { "FO", 18 }, { "FR", 27 }, { "GB", 22 }, { "GE", 22 }, { "GI", 23 },
    { "GL", 18 }, { "GR", 27 }, { "GT", 28 }, { "HR", 21 }, { "HU", 28 },
    { "IE", 22 }, { "IL", 23 }, { "IQ", 23 }, { "IS", 26 }, { "IT", 27 },
    { "JO", 30 }, { "KW", 30 }, { "KZ", 20 }, { "LB", 28 }, { "LC", 32 },
    { "LI", 21 }, { "LT", 20 }, { "LU", 20 }, { "LV", 21 }, { "LY", 25 },
    { "MC", 27 }, { "MD", 24 }, { "ME", 22 }, { "MK", 19 }, { "MN", 20 },
    { "MR", 27 }, { "MT", 31 }, { "MU", 30 }, { "NI", 28 }, { "NL", 18 },
    { "NO", 15 }, { "OM", 23 }, { "PK", 24 }, { "PL", 28 }, { "PS", 29 },
    { "PT", 25 }, { "QA", 29 }, { "RO", 24 }, { "RS", 22 }, { "RU", 33 },
    { "SA", 24 }, { "SC", 31 }, { "SD", 18 }, { "SE", 24 }, { "SI", 19 },
    { "SK", 24 }, { "SM", 27 }, { "SO", 23 }, { "ST", 25 }, { "SV", 28 },
    { "TL", 23 }, { "TN", 24 }, { "TR", 26 }, { "UA", 29 }, { "VA", 22 },
    { "VG", 24 }, { "XK", 20 }, { "YE", 30 },
};

#define IBAN_MAX_LEN 34

static size_t
iban_country_len(int a, int b)
{
    a = to_upper(a);
    b = to_upper(b);
    for (size_t k = 0; k < sizeof(iban_lengths) / sizeof(iban_lengths[0]); k++)
        if (iban_lengths[k].cc[0] == a && iban_lengths[k].cc[1] == b)
            return iban_lengths[k].len;
    return 0;
}

/* buf: len upper-case alphanumerics. Rotate 4 and reduce mod 97. */
static int
iban_mod97(const char *buf, size_t len)
{
    unsigned rem = 0;

    for (size_t k = 0; k < len; k++) {
        int c = (unsigned char)buf[(k + 4) % len];
        if (is_digit(c))
            rem = (rem * 10 + (unsigned)(c - '0')) % 97;
        else if (c >= 'A' && c <= 'Z')
            rem = (rem * 100 + (unsigned)(c - 'A' + 10)) % 97;
        else
            return 0;
    }
    return rem == 1;
}

int
ana_iban_valid(const char *s, size_t n)
{
    char buf[IBAN_MAX_LEN];
    size_t len = 0, want;

    if (s == NULL)
        return 0;
    for (size_t k = 0; k < n; k++) {
        int c = (unsigned char)s[k];
        if (c == ' ')
            continue;
        if (!is_alnum(c) || len == IBAN_MAX_LEN)
            return 0;
        buf[len++] = (char)to_upper(c);
    }
    if (len < 5 || !is_alpha(buf[0]) || !is_alpha(buf[1]) ||
        !is_digit(buf[2]) || !is_digit(buf[3]))
        return 0;
    want = iban_country_len(buf[0], buf[1]);
    return want == len && iban_mod97(buf, len);
}

/* ---- URL credentials ---------------------------------------------------- */

static void
pass_credentials(struct scan *sc)
{
    const unsigned char *s = sc->s;

    for (size_t i = 1; i + 3 <= sc->n; i++) {
        size_t b = i, a = i + 3, at = 0;
        if (s[i] != ':' || s[i + 1] != '/' || s[i + 2] != '/')
            continue;
        while (b > 0 && (is_alnum(s[b - 1]) || s[b - 1] == '+' ||
                         s[b - 1] == '-' || s[b - 1] == '.'))
            b--;
        while (b < i && !is_alpha(s[b]))
            b++;
        if (b == i)
            continue;
        for (size_t j = a; j < sc->n; j++) {
            int c = s[j];
            if (c == '/' || c == '?' || c == '#' || c <= ' ' || c == '<' ||
                c == '>' || c == '"' || c == '\'' || c == '\\')
                break;
            if (c == '@')
                at = j;
        }
        if (at > a)
            claim(sc, a, at, SPAN_CRED);
    }
}

/* ---- e-mail ------------------------------------------------------------- */

static int
is_local_char(int c)
{
    return is_alnum(c) || c == '.' || c == '_' || c == '%' || c == '+' ||
           c == '-' || c == '\'' || c >= 0x80;
}

/* End of the domain after '@' at s[a], or 0: labels of [A-Za-z0-9-], at
 * least two, the last matched one alphabetic and >= 2 long (the TLD). */
static size_t
email_domain_end(const unsigned char *s, size_t a)
{
    size_t j = a + 1, best = 0;
    unsigned labels = 0;

    for (;;) {
        size_t k = j;
        int alpha = 1;
        while (is_alnum(s[j]) || s[j] == '-') {
            if (!is_alpha(s[j]))
                alpha = 0;
            j++;
        }
        if (j == k || s[k] == '-')
            break;
        labels++;
        if (labels >= 2 && alpha && j - k >= 2)
            best = j;
        if (s[j] == '.' && is_alnum(s[j + 1]))
            j++;
        else
            break;
    }
    return best;
}

static void
pass_email(struct scan *sc)
{
    const unsigned char *s = sc->s;

    for (size_t a = 1; a < sc->n; a++) {
        size_t l = a, end;
        if (s[a] != '@' || sc->claimed[a])
            continue;
        while (l > 0 && is_local_char(s[l - 1]) && !sc->claimed[l - 1])
            l--;
        while (l < a && s[l] == '.')
            l++;
        if (l == a)
            continue;
        end = email_domain_end(s, a);
        if (end && claim(sc, l, end, SPAN_EMAIL))
            a = end - 1;
    }
}

/* ---- IBAN --------------------------------------------------------------- */

static void
pass_iban(struct scan *sc)
{
    const unsigned char *s = sc->s;

    for (size_t i = 0; i + 4 < sc->n; i++) {
        char buf[IBAN_MAX_LEN];
        size_t want, cnt = 0, j = i;
        if (!is_alpha(s[i]) || !is_alpha(s[i + 1]) || !is_digit(s[i + 2]) ||
            !is_digit(s[i + 3]) || (i > 0 && is_alnum(s[i - 1])))
            continue;
        want = iban_country_len(s[i], s[i + 1]);
        if (want == 0)
            continue;
        while (cnt < want) {
            if (is_alnum(s[j])) {
                buf[cnt++] = (char)to_upper(s[j]);
                j++;
            } else if (s[j] == ' ' && is_alnum(s[j + 1])) {
                j++;
            } else {
                break;
            }
        }
        if (cnt != want || is_alnum(s[j]))
            continue;
        /* A well-formed IBAN with a bad checksum is kept as written (and
         * protected, so its digits are not taken for a card or phone). */
        if (claim(sc, i, j, iban_mod97(buf, cnt) ? SPAN_IBAN : SPAN_KEEP))
            i = j - 1;
    }
}

/* ---- payment cards ------------------------------------------------------ */

#define CARD_MAX_GROUPS 16

/* Try every run of consecutive digit groups in the chain (longest first);
 * claims the Luhn-valid ones with 13..19 digits and an issuer-plausible
 * first digit (2..6: Mir, Visa, Mastercard, Amex, JCB, Diners, Discover,
 * Maestro, UnionPay). */
static unsigned
card_try_chain(struct scan *sc, const size_t *gs, const size_t *ge,
               const unsigned *gd, size_t m)
{
    const unsigned char *s = sc->s;
    size_t a = 0;
    unsigned cards = 0;

    while (a < m) {
        size_t found = m;
        for (size_t b = m; b-- > a;) {
            unsigned digits = 0;
            for (size_t k = a; k <= b; k++)
                digits += gd[k];
            if (digits < 13 || digits > 19)
                continue;
            if (s[gs[a]] < '2' || s[gs[a]] > '6' || is_alpha(s[ge[b]]))
                continue;
            if (ana_luhn_valid((const char *)s + gs[a], ge[b] - gs[a]) &&
                claim(sc, gs[a], ge[b], SPAN_CARD)) {
                found = b;
                cards++;
                break;
            }
        }
        a = (found < m) ? found + 1 : a + 1;
    }
    return cards;
}

/* 13..19 digits written as one run, as 4-4-4-4(-3) or Amex 4-6-5. */
static int
card_shaped(const unsigned *gd, size_t m)
{
    unsigned digits = 0, fours = 0;

    for (size_t k = 0; k < m; k++) {
        digits += gd[k];
        fours += gd[k] == 4 && k + 1 < m;
    }
    if (digits < 13 || digits > 19)
        return 0;
    if (m == 1 || (m == 3 && gd[0] == 4 && gd[1] == 6 && gd[2] == 5))
        return 1;
    return fours == m - 1 && gd[m - 1] >= 1 && gd[m - 1] <= 4;
}

static void
pass_card(struct scan *sc)
{
    const unsigned char *s = sc->s;

    for (size_t i = 0; i < sc->n; i++) {
        size_t gs[CARD_MAX_GROUPS], ge[CARD_MAX_GROUPS], m = 0, j = i;
        unsigned gd[CARD_MAX_GROUPS];
        if (!is_digit(s[i]) || sc->claimed[i])
            continue;
        if (i > 0) {
            int p = s[i - 1];
            if (is_alnum(p) || p == '_' || p == '+')
                continue;
            if ((p == '.' || p == ',' || p == '-') && i > 1 &&
                is_digit(s[i - 2]))
                continue;
        }
        while (m < CARD_MAX_GROUPS) {
            size_t st = j;
            while (is_digit(s[j]) && !sc->claimed[j])
                j++;
            gs[m] = st;
            ge[m] = j;
            gd[m] = (unsigned)(j - st);
            m++;
            if ((s[j] == ' ' || s[j] == '-') && is_digit(s[j + 1]) &&
                !sc->claimed[j + 1])
                j++;
            else
                break;
        }
        /* A card-shaped number failing Luhn is kept as written and
         * protected from the phone scanner. */
        if (card_try_chain(sc, gs, ge, gd, m) == 0 && card_shaped(gd, m) &&
            !is_alpha(s[ge[m - 1]]))
            claim(sc, gs[0], ge[m - 1], SPAN_KEEP);
        i = ge[m - 1] > i ? ge[m - 1] - 1 : i;
    }
}

/* ---- IP addresses ------------------------------------------------------- */

static size_t
ip_prefix_end(const unsigned char *s, size_t j, unsigned max)
{
    unsigned v = 0;
    size_t k = j + 1;

    if (s[j] != '/' || !is_digit(s[k]))
        return j;
    while (is_digit(s[k]) && k - j <= 3) {
        v = v * 10 + (unsigned)(s[k] - '0');
        k++;
    }
    if (is_alnum(s[k]) || v > max)
        return j;
    return k;
}

/* Candidate [i, e): valid IPv6 per inet_pton, containing a hex digit. */
static int
ipv6_ok(const unsigned char *s, size_t i, size_t e)
{
    char buf[64];
    struct in6_addr a6;
    int hex = 0;

    if (e - i >= sizeof(buf) || e - i < 2)
        return 0;
    for (size_t k = i; k < e; k++)
        if (is_hex(s[k]))
            hex = 1;
    if (!hex)
        return 0;
    memcpy(buf, s + i, e - i);
    buf[e - i] = '\0';
    return inet_pton(AF_INET6, buf, &a6) == 1;
}

/* The IPv6 address in the hex/colon/dot run s[i..j), with an optional
 * trailing ':' or '.' trimmed, zone and prefix; returns its end or 0. */
static size_t
ipv6_end(const unsigned char *s, size_t i, size_t j)
{
    size_t e = j;
    int ok;

    while (e > i && s[e - 1] == '.')
        e--;
    ok = ipv6_ok(s, i, e);
    if (!ok && e - i > 2 && s[e - 1] == ':' && s[e - 2] != ':') {
        e--;
        ok = ipv6_ok(s, i, e);
    }
    if (!ok)
        return 0;
    if (e == j && s[e] == '%' && is_alnum(s[e + 1])) {
        e++;
        while (is_alnum(s[e]))
            e++;
    }
    return ip_prefix_end(s, e, 128);
}

static void
pass_ipv6(struct scan *sc)
{
    const unsigned char *s = sc->s;

    for (size_t i = 0; i < sc->n; i++) {
        size_t j = i, e = 0;
        unsigned colons = 0;
        if (sc->claimed[i] || !(is_hex(s[i]) || s[i] == ':'))
            continue;
        if (i > 0 && (is_alnum(s[i - 1]) || s[i - 1] == ':' ||
                      s[i - 1] == '.' || s[i - 1] == '_'))
            continue;
        while ((is_hex(s[j]) || s[j] == ':' || s[j] == '.') &&
               !sc->claimed[j]) {
            colons += s[j] == ':';
            j++;
        }
        if (colons >= 2 && !is_alnum(s[j]) && s[j] != '_')
            e = ipv6_end(s, i, j);
        if (e > 0 && claim(sc, i, e, SPAN_IP))
            i = e - 1;
        else
            i = j > i ? j - 1 : i;
    }
}

/* End of a dotted-quad IPv4 (+ optional /prefix) at i, or 0. */
static size_t
ipv4_end(const unsigned char *s, size_t i)
{
    size_t j = i;

    for (int oct = 0; oct < 4; oct++) {
        size_t st = j;
        unsigned v = 0;
        while (is_digit(s[j]) && j - st < 4) {
            v = v * 10 + (unsigned)(s[j] - '0');
            j++;
        }
        if (j == st || j - st > 3 || v > 255 || (j - st > 1 && s[st] == '0'))
            return 0;
        if (oct < 3) {
            if (s[j] != '.')
                return 0;
            j++;
        }
    }
    if ((s[j] == '.' && is_digit(s[j + 1])) || is_alnum(s[j]) || s[j] == '_')
        return 0;
    return ip_prefix_end(s, j, 32);
}

static void
pass_ipv4(struct scan *sc)
{
    const unsigned char *s = sc->s;

    for (size_t i = 0; i < sc->n; i++) {
        size_t e;
        if (sc->claimed[i] || !is_digit(s[i]))
            continue;
        if (i > 0 && (is_alnum(s[i - 1]) || s[i - 1] == '.' || s[i - 1] == '_'))
            continue;
        e = ipv4_end(s, i);
        if (e && claim(sc, i, e, SPAN_IP))
            i = e - 1;
    }
}

/* ---- protected numbers: dates, year ranges, prices, #references --------- */

static size_t
digit_run(const unsigned char *s, size_t j, unsigned *val)
{
    size_t k = j;
    unsigned v = 0;

    while (is_digit(s[k]) && k - j < 9) {
        v = v * 10 + (unsigned)(s[k] - '0');
        k++;
    }
    *val = v;
    return k - j;
}

/* 2026-11-26, 26/11/2026, 26.11.26, 11/26/2026: end or 0. */
static size_t
date_end(const unsigned char *s, size_t i)
{
    unsigned a, b, c;
    size_t la, lb, lc, j = i;
    int sep;

    la = digit_run(s, j, &a);
    j += la;
    sep = s[j];
    if (sep != '-' && sep != '/' && sep != '.')
        return 0;
    lb = digit_run(s, ++j, &b);
    j += lb;
    if (s[j] != sep)
        return 0;
    lc = digit_run(s, ++j, &c);
    j += lc;
    if (is_digit(s[j]) || lb < 1 || lb > 2)
        return 0;
    if (la == 4 && a >= 1900 && a <= 2099 && lc >= 1 && lc <= 2 && b >= 1 &&
        b <= 12 && c >= 1 && c <= 31)
        return j;
    if (la >= 1 && la <= 2 && (lc == 2 || lc == 4) && a >= 1 && b >= 1 &&
        ((a <= 31 && b <= 12) || (a <= 12 && b <= 31)))
        return j;
    return 0;
}

/* 1999-2005, 2019 / 2020, 2019–2021 (en dash): end or 0. */
static size_t
year_range_end(const unsigned char *s, size_t i)
{
    unsigned a, b;
    size_t j = i;

    if (digit_run(s, j, &a) != 4 || a < 1900 || a > 2099)
        return 0;
    j += 4;
    if (s[j] == ' ')
        j++;
    if (s[j] == '-' || s[j] == '/')
        j++;
    else if (s[j] == 0xE2 && s[j + 1] == 0x80 && s[j + 2] == 0x93)
        j += 3;
    else
        return 0;
    if (s[j] == ' ')
        j++;
    if (digit_run(s, j, &b) != 4 || b < 1900 || b > 2099)
        return 0;
    return j + 4;
}

static int
word_is(const unsigned char *w, size_t len, const char *const *list)
{
    for (size_t k = 0; list[k] != NULL; k++) {
        size_t l = strlen(list[k]), m;
        if (l != len)
            continue;
        for (m = 0; m < len; m++)
            if (to_upper(w[m]) != to_upper((unsigned char)list[k][m]))
                break;
        if (m == len)
            return 1;
    }
    return 0;
}

static int
is_word_byte(int c)
{
    return is_alpha(c) || c >= 0x80;
}

/* Currency sign ending at s[j-1] or starting at s[j]. */
static int
currency_sign_before(const unsigned char *s, size_t j)
{
    if (j >= 1 && (s[j - 1] == '$'))
        return 1;
    if (j >= 2 && s[j - 2] == 0xC2 && (s[j - 1] == 0xA3 || s[j - 1] == 0xA5))
        return 1; /* £ ¥ */
    if (j >= 3 && s[j - 3] == 0xE2 && s[j - 2] == 0x82 &&
        (s[j - 1] == 0xAC || s[j - 1] == 0xB9))
        return 1; /* € ₹ */
    return 0;
}

static int
currency_sign_at(const unsigned char *s, size_t j)
{
    if (s[j] == '$')
        return 1;
    if (s[j] == 0xC2 && (s[j + 1] == 0xA3 || s[j + 1] == 0xA5))
        return 1;
    if (s[j] == 0xE2 && s[j + 1] == 0x82 &&
        (s[j + 2] == 0xAC || s[j + 2] == 0xB9))
        return 1;
    return 0;
}

static const char *const currency_words[] = {
    "eur",           "euro",
    "euros",         "usd",
    "dollar",        "dollars",
    "dolar",         "dolares",
    "d\xc3\xb3lar",  "d\xc3\xb3lares",
    "reais",         "real",
    "brl",           "gbp",
    "pesos",         "mxn",
    "ars",           "clp",
    "cop",           "libras",
    "chf",           "francs",
    "cent",          "cents",
    "centavos",      "c\xc3\xa9ntimos",
    "k\xe2\x82\xac", NULL
};

static int
currency_near(const unsigned char *s, size_t start, size_t end)
{
    size_t b = start, e = end, w;

    if (b > 0 && s[b - 1] == ' ')
        b--;
    if (currency_sign_before(s, b))
        return 1;
    if (b >= 3 && word_is(s + b - 3, 3, currency_words) &&
        (b == 3 || !is_word_byte(s[b - 4])))
        return 1;
    if (s[e] == ' ')
        e++;
    if (currency_sign_at(s, e) || s[e] == '%')
        return 1;
    for (w = e; is_word_byte(s[w]) && w - e < 16; w++)
        ;
    return w > e && word_is(s + e, w - e, currency_words);
}

/* A number with grouping/decimal separators next to a currency or '%'. */
static size_t
price_end(const unsigned char *s, size_t i)
{
    size_t j = i;

    while (is_digit(s[j])) {
        while (is_digit(s[j]))
            j++;
        if ((s[j] == '.' || s[j] == ',' || s[j] == ' ') && is_digit(s[j + 1]))
            j++;
    }
    return currency_near(s, i, j) ? j : 0;
}

static void
pass_protect(struct scan *sc)
{
    const unsigned char *s = sc->s;

    for (size_t i = 0; i < sc->n; i++) {
        size_t e = 0;
        if (sc->claimed[i])
            continue;
        if (s[i] == '#' && is_digit(s[i + 1])) {
            e = i + 1;
            while (is_digit(s[e]) ||
                   ((s[e] == '-' || s[e] == '.' || s[e] == '/') &&
                    is_digit(s[e + 1])))
                e++;
        } else if (is_digit(s[i]) && (i == 0 || !is_alnum(s[i - 1]))) {
            e = date_end(s, i);
            if (e == 0)
                e = year_range_end(s, i);
            if (e == 0)
                e = price_end(s, i);
        }
        if (e > i && claim(sc, i, e, SPAN_KEEP))
            i = e - 1;
    }
}

/* ---- phone numbers ------------------------------------------------------ */

static const char *const order_words[] = { "order",
                                           "orden",
                                           "pedido",
                                           "encomenda",
                                           "bestellung",
                                           "auftrag",
                                           "bestellnummer",
                                           "auftragsnummer",
                                           "kundennummer",
                                           "rechnungsnummer",
                                           "sendungsnummer",
                                           "vorgangsnummer",
                                           "bestellnr",
                                           "rechnungsnr",
                                           "commande",
                                           "invoice",
                                           "factura",
                                           "fatura",
                                           "facture",
                                           "rechnung",
                                           "ref",
                                           "reference",
                                           "referencia",
                                           "refer\xc3\xaancia",
                                           "r\303\251f\303\251rence",
                                           "tracking",
                                           "seguimiento",
                                           "rastreio",
                                           "ticket",
                                           "booking",
                                           "reserva",
                                           "reservation",
                                           "localizador",
                                           "sku",
                                           "iccid",
                                           "imei",
                                           "serial",
                                           NULL };

static const char *const number_words[] = { "number",
                                            "no",
                                            "nr",
                                            "num",
                                            "numero",
                                            "n\xc3\xbamero",
                                            "n\xc3\xbam",
                                            "nummer",
                                            "num\xc3\xa9ro",
                                            "n",
                                            "id",
                                            "code",
                                            "c\303\263digo",
                                            "codigo",
                                            NULL };

/* Read the word ending before s[j] (skipping separators); returns its start
 * and sets *len, or returns j with *len == 0. */
static size_t
prev_word(const unsigned char *s, size_t j, size_t *len)
{
    size_t e, b;

    while (j > 0 && (s[j - 1] == ' ' || s[j - 1] == ':' || s[j - 1] == '.' ||
                     s[j - 1] == '#' || s[j - 1] == '-'))
        j--;
    /* degree / ordinal signs: º ° ª */
    while (j >= 2 && s[j - 2] == 0xC2 &&
           (s[j - 1] == 0xBA || s[j - 1] == 0xB0 || s[j - 1] == 0xAA))
        j -= 2;
    e = j;
    b = e;
    while (b > 0 && e - b < 24 && is_word_byte(s[b - 1]))
        b--;
    *len = e - b;
    return b;
}

static int
order_context(const unsigned char *s, size_t i)
{
    size_t len, b = prev_word(s, i, &len);

    if (len > 0 && word_is(s + b, len, number_words))
        b = prev_word(s, b, &len);
    return len > 0 && word_is(s + b, len, order_words);
}

static const char *const unit_words[] = {
    "km",  "kg",     "cm",     "mm",     "mg",     "ml",  "kb",
    "mb",  "gb",     "tb",     "mah",    "kw",     "kwh", "bytes",
    "pts", "points", "puntos", "pontos", "visits", NULL
};

static int
phone_start_ok(const unsigned char *s, size_t i)
{
    int p, pp;

    if (!(is_digit(s[i]) || (s[i] == '+' && is_digit(s[i + 1])) ||
          (s[i] == '(' && is_digit(s[i + 1]))))
        return 0;
    if (i == 0)
        return 1;
    p = s[i - 1];
    pp = i >= 2 ? s[i - 2] : 0;
    if (p == '(')
        return s[i] != '(';
    if (is_alnum(p) || p == '_' || p == '#' || p == '/' || p == '@' ||
        p == '&' || p == '=' || p == '\\' || p == '+')
        return 0;
    if ((p == '.' || p == ',' || p == ':') && is_digit(pp))
        return 0;
    if (p == '-' && is_alnum(pp))
        return 0;
    return 1;
}

/* A run of digit groups joined by single separators ( . - / or " - ")
 * and parenthesised area codes: "+44 (0)20 7946 0958". */
struct phone_chain {
    int intl;                          /* started with '+' */
    unsigned m;                        /* groups */
    size_t gs[PHONE_MAX_GROUPS];       /* first digit (or '(') of each group */
    size_t ge[PHONE_MAX_GROUPS];       /* after the last digit (or ')') */
    unsigned glen[PHONE_MAX_GROUPS];   /* digits in the group */
    int space_after[PHONE_MAX_GROUPS]; /* the separator after is ' ' */
    size_t stop; /* where scanning stopped: resume here on rejection */
};

static void
phone_scan(const struct scan *sc, size_t i, struct phone_chain *ch)
{
    const unsigned char *s = sc->s;
    size_t j = i;

    memset(ch, 0, sizeof(*ch));
    if (s[j] == '+') {
        ch->intl = 1;
        j++;
    }
    while (!sc->claimed[j] && ch->m < PHONE_MAX_GROUPS) {
        size_t st = j, k;
        unsigned g = ch->m;
        if (s[j] == '(') {
            k = j + 1;
            while (is_digit(s[k]) && !sc->claimed[k])
                k++;
            if (k == j + 1 || k - j - 1 > 5 || s[k] != ')')
                break;
            ch->glen[g] = (unsigned)(k - j - 1);
            j = k + 1;
        } else if (is_digit(s[j])) {
            while (is_digit(s[j]) && !sc->claimed[j])
                j++;
            ch->glen[g] = (unsigned)(j - st);
        } else {
            break;
        }
        ch->gs[g] = st;
        ch->ge[g] = j;
        ch->m++;
        k = j;
        if (s[k] == ' ' &&
            (s[k + 1] == '-' || s[k + 1] == '/' || s[k + 1] == '.') &&
            s[k + 2] == ' ')
            k += 3;
        else if (s[k] == ' ' || s[k] == '-' || s[k] == '.' || s[k] == '/')
            k++;
        ch->space_after[g] = k == j + 1 && s[j] == ' ';
        if (k < sc->n && !sc->claimed[k] &&
            (is_digit(s[k]) || (s[k] == '(' && is_digit(s[k + 1]))))
            j = k;
        else
            break;
    }
    ch->stop = ch->m ? ch->ge[ch->m - 1] : j;
    while (is_digit(s[ch->stop]))
        ch->stop++;
}

static int
is_year_at(const unsigned char *s, size_t at)
{
    unsigned v;
    return digit_run(s, at, &v) == 4 && v >= 1900 && v <= 2099;
}

/* Groups a..b of the chain as a phone number: digit counts per format,
 * no thousands grouping, no postal codes, not only years. */
static int
phone_range_ok(const unsigned char *s, const struct phone_chain *ch, unsigned a,
               unsigned b)
{
    unsigned digits = 0, ones = 0, years = 0, threes = 0;
    size_t f = ch->gs[a];

    for (unsigned g = a; g <= b; g++) {
        size_t at = ch->gs[g] + (s[ch->gs[g]] == '(');
        digits += ch->glen[g];
        ones += ch->glen[g] == 1;
        threes += g > a && ch->glen[g] == 3;
        years += ch->glen[g] == 4 && is_year_at(s, at);
    }
    if (s[f] == '(')
        f++;
    if (ch->intl && a == 0)
        return s[f] != '0' && digits >= 7 && digits <= 15;
    if (s[f] == '0' && s[f + 1] == '0' && ch->glen[a] >= 2)
        return digits >= 9 && digits <= 17;
    if (a == b)
        return digits >= 9 && digits <= 12;
    if (digits < 7 || digits > 13 || ones > 1 || years == b - a + 1)
        return 0;
    /* 1 299 999 / 12.345.678: thousands grouping, not a phone */
    if (ch->glen[a] <= 2 && threes == b - a && s[ch->gs[a]] != '(')
        return 0;
    /* postal codes 1000-001 (PT), 94103-1234 (US ZIP+4) */
    if (b == a + 1 && s[ch->ge[a]] == '-' &&
        ((ch->glen[a] == 4 && ch->glen[b] == 3) ||
         (ch->glen[a] == 5 && ch->glen[b] == 4)))
        return 0;
    return 1;
}

/* ASCII letter or a Latin-1/Latin Extended-A letter encoded at s[e]. */
static int
is_letter_at(const unsigned char *s, size_t e)
{
    if (is_alpha(s[e]))
        return 1;
    if (s[e] == 0xC3)
        return s[e + 1] >= 0x80 && s[e + 1] <= 0xBF && s[e + 1] != 0x97 &&
               s[e + 1] != 0xB7;
    return (s[e] == 0xC4 || s[e] == 0xC5) && s[e + 1] >= 0x80 &&
           s[e + 1] <= 0xBF;
}

static int
phone_after_ok(const unsigned char *s, size_t e)
{
    size_t w;

    if (is_letter_at(s, e))
        return 0;
    if (s[e] == '%' || (s[e] == ',' && is_digit(s[e + 1])))
        return 0;
    if (s[e] == ' ')
        e++;
    for (w = e; is_alpha(s[w]) && w - e < 8; w++)
        ;
    if (w > e && !is_word_byte(s[w]) && word_is(s + e, w - e, unit_words))
        return 0;
    return !currency_sign_at(s, e);
}

static int
phone_take(struct scan *sc, const struct phone_chain *ch, size_t start,
           unsigned a, unsigned b)
{
    const unsigned char *s = sc->s;

    if (!phone_range_ok(s, ch, a, b) || !phone_after_ok(s, ch->ge[b]))
        return 0;
    if (order_context(s, start))
        return 0;
    return claim(sc, start, ch->ge[b], SPAN_PHONE);
}

/* Without a leading year ("in 2024 612 345 678"); else the whole chain;
 * else, for two numbers in a row ("+1-555-010-0199 1-800-555-0199"), the
 * longest prefix with >= 9 digits ending at a space, when the prefix does
 * not itself use spaces between its groups (past its first group): a long
 * space-grouped number is one number, not two phones. Returns the end of
 * the claimed phone or 0. */
static size_t
phone_best(struct scan *sc, const struct phone_chain *ch, size_t i)
{
    unsigned last = ch->m - 1, digits = 0;

    if (!ch->intl && last > 0 && ch->glen[0] == 4 && ch->space_after[0] &&
        is_year_at(sc->s, ch->gs[0]) && phone_take(sc, ch, ch->gs[1], 1, last))
        return ch->ge[last];
    if (phone_take(sc, ch, i, 0, last))
        return ch->ge[last];
    for (unsigned b = 0; b < last; b++)
        digits += ch->glen[b];
    for (unsigned b = last; b-- > 0;) {
        unsigned spaces = 0;
        for (unsigned g = 1; g < b; g++)
            spaces += ch->space_after[g] != 0;
        if (ch->space_after[b] && spaces == 0 && digits >= 9 &&
            phone_take(sc, ch, i, 0, b))
            return ch->ge[b];
        digits -= ch->glen[b];
    }
    return 0;
}

static void
pass_phone(struct scan *sc)
{
    const unsigned char *s = sc->s;

    for (size_t i = 0; i < sc->n; i++) {
        struct phone_chain ch;
        size_t e;
        if (sc->claimed[i] || !phone_start_ok(s, i))
            continue;
        phone_scan(sc, i, &ch);
        if (ch.m == 0)
            continue;
        e = phone_best(sc, &ch, i);
        if (e > 0)
            i = e - 1;
        else
            i = ch.stop > i ? ch.stop - 1 : i;
    }
}

/* ---- assembly ----------------------------------------------------------- */

static int
span_cmp(const void *a, const void *b)
{
    const struct span *x = a, *y = b;
    return (x->start > y->start) - (x->start < y->start);
}

static const char *
placeholder(enum span_kind k, unsigned flags, struct ana_redact_stats *st)
{
    switch (k) {
    case SPAN_EMAIL:
        if (!(flags & ANA_REDACT_EMAIL))
            return NULL;
        st->email++;
        return "[EMAIL]";
    case SPAN_PHONE:
        if (!(flags & ANA_REDACT_PHONE))
            return NULL;
        st->phone++;
        return "[PHONE]";
    case SPAN_CARD:
        if (!(flags & ANA_REDACT_CARD))
            return NULL;
        st->card++;
        return "[CARD]";
    case SPAN_IBAN:
        if (!(flags & ANA_REDACT_IBAN))
            return NULL;
        st->iban++;
        return "[IBAN]";
    case SPAN_IP:
        if (!(flags & ANA_REDACT_IP))
            return NULL;
        st->ip++;
        return "[IP]";
    case SPAN_CRED:
        if (!(flags & ANA_REDACT_URL_CREDENTIALS))
            return NULL;
        st->credentials++;
        return "[CREDENTIALS]";
    case SPAN_KEEP:
        break;
    }
    return NULL;
}

/* Longest placeholder: "[CREDENTIALS]". */
#define PLACEHOLDER_MAX 13

static char *
assemble(const struct scan *sc, unsigned flags, struct ana_redact_stats *st)
{
    size_t pos = 0, o = 0, cap;
    char *out;

    /* every span covers at least one byte, so nspans <= n */
    if (sc->n > (SIZE_MAX - 1) / (PLACEHOLDER_MAX + 1))
        return NULL;
    cap = sc->n + sc->nspans * PLACEHOLDER_MAX + 1;
    out = malloc(cap);
    if (out == NULL)
        return NULL;
    for (size_t k = 0; k < sc->nspans; k++) {
        const struct span *sp = &sc->spans[k];
        const char *ph = placeholder(sp->kind, flags, st);
        memcpy(out + o, sc->s + pos, sp->start - pos);
        o += sp->start - pos;
        if (ph != NULL) {
            size_t l = strlen(ph);
            memcpy(out + o, ph, l);
            o += l;
        } else {
            memcpy(out + o, sc->s + sp->start, sp->end - sp->start);
            o += sp->end - sp->start;
        }
        pos = sp->end;
    }
    memcpy(out + o, sc->s + pos, sc->n - pos);
    o += sc->n - pos;
    out[o] = '\0';
    st->total =
        st->email + st->phone + st->card + st->iban + st->ip + st->credentials;
    return out;
}

char *
ana_redact(const char *text, unsigned flags, struct ana_redact_stats *stats)
{
    struct ana_redact_stats local;
    struct scan sc;
    char *out = NULL;

    if (stats == NULL)
        stats = &local;
    memset(stats, 0, sizeof(*stats));
    if (text == NULL)
        return NULL;
    if (flags == 0)
        flags = ANA_REDACT_ALL;
    memset(&sc, 0, sizeof(sc));
    sc.s = (const unsigned char *)text;
    sc.n = strlen(text);
    /* one spare byte so scanners may look at claimed[n] (the NUL) */
    sc.claimed = calloc(sc.n + 4, 1);
    if (sc.claimed == NULL)
        goto out;
    pass_credentials(&sc);
    pass_email(&sc);
    pass_iban(&sc);
    pass_card(&sc);
    pass_ipv6(&sc);
    pass_ipv4(&sc);
    pass_protect(&sc);
    pass_phone(&sc);
    if (sc.oom)
        goto out;
    if (sc.nspans > 1)
        qsort(sc.spans, sc.nspans, sizeof(*sc.spans), span_cmp);
    out = assemble(&sc, flags, stats);
out:
    free(sc.claimed);
    free(sc.spans);
    return out;
}
