/*
 * Keyword classifier for IAB Content Taxonomy 3.1 categories, sensitive
 * categories and commercial-intent flags (English, Spanish, Portuguese).
 *
 * Design: the lexicon (lexicon.inc) is normalised once, under pthread_once,
 * with the same folding as the messages (lower case, Latin diacritics
 * stripped, final plural "s" dropped) into two read-only open-addressing
 * hash tables: full phrases, and "first token -> longest phrase starting
 * with it". A message is tokenised once into a stack buffer where tokens
 * are separated by single spaces, so a phrase of n tokens is a contiguous
 * substring that can be hashed in place; matching is longest-phrase-first
 * and consumes the tokens it matched. No global state changes after init.
 */
#include "analytics/interest.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- categories --------------------------------------------------------- */

enum cat {
    C_NONE = 0,
    C_AUTO,
    C_BOOKS,
    C_BUSINESS,
    C_CAREERS,
    C_EDUCATION,
    C_EVENTS,
    C_ATTRACTIONS,
    C_ENTERTAINMENT,
    C_MOVIES,
    C_MUSIC,
    C_TV,
    C_FAMILY,
    C_PARENTING,
    C_FINE_ART,
    C_FOOD,
    C_ALCOHOL,
    C_DINING,
    C_COOKING,
    C_HEALTHY,
    C_FITNESS,
    C_HOBBIES,
    C_HOLIDAYS,
    C_HOME,
    C_GARDENING,
    C_PERSFIN,
    C_BANKING,
    C_INSURANCE,
    C_INVESTING,
    C_TAXES,
    C_PETS,
    C_CATS,
    C_DOGS,
    C_POPCULTURE,
    C_REALESTATE,
    C_SCIENCE,
    C_SHOPPING,
    C_COUPONS,
    C_GROCERY,
    C_GAMBLING,
    C_SPORTS,
    C_SOCCER,
    C_BASKETBALL,
    C_TENNIS,
    C_STYLE,
    C_BEAUTY,
    C_TECH,
    C_COMPUTING,
    C_ELECTRONICS,
    C_AI,
    C_TRAVEL,
    C_TRAVEL_LOC,
    C_GAMING,
    /* sensitive */
    S_HEALTH,
    S_RELIGION,
    S_POLITICS,
    S_ORIENTATION,
    S_DATING,
    S_ADULT,
    S_ETHNICITY,
    S_UNION,
    S_CRIME,
    S_LAW,
    S_GENETIC,
    S_DISABILITY,
    S_DEBT,
    S_ASSIST,
    S_DIVORCE,
    S_BEREAVEMENT,
    S_DRUGS,
    S_WEAPONS,
    S_WAR,
    S_DISASTERS,
    C__COUNT
};

#define NO_PARENT_CREDIT 0x80u /* internal: do not add weight to parent */

struct cat_def {
    const char *key;
    const char *iab_id;
    const char *name;
    enum cat parent;
    unsigned char tier;
    unsigned char sensitive;
    unsigned char flags;
};

#define T1(k, id, name)                     \
    {                                       \
        "iab:" k, id, name, C_NONE, 1, 0, 0 \
    }
#define T1F(k, id, name, f)                 \
    {                                       \
        "iab:" k, id, name, C_NONE, 1, 0, f \
    }
#define T2(k, id, name, p)             \
    {                                  \
        "iab:" k, id, name, p, 2, 0, 0 \
    }
#define T2F(k, id, name, p, f)         \
    {                                  \
        "iab:" k, id, name, p, 2, 0, f \
    }
#define SN(k, id, name, tier)                        \
    {                                                \
        "sensitive:" k, id, name, C_NONE, tier, 1, 0 \
    }

/* Unique IDs and names from IAB Tech Lab "Content Taxonomy 3.1.tsv". */
static const struct cat_def cats[C__COUNT] = {
    [C_NONE] = { NULL, NULL, NULL, C_NONE, 0, 0, 0 },
    [C_AUTO] = T1("1", "1", "Automotive"),
    [C_BOOKS] = T1("42", "42", "Books and Literature"),
    [C_BUSINESS] = T1("52", "52", "Business and Finance"),
    [C_CAREERS] = T1F("123", "123", "Careers", ANA_CAT_CONTEXTUAL_ONLY),
    [C_EDUCATION] = T1("132", "132", "Education"),
    [C_EVENTS] = T1("8VZQHL", "8VZQHL", "Events"),
    [C_ATTRACTIONS] = T1("150", "150", "Attractions"),
    [C_ENTERTAINMENT] = T1("JLBCU7", "JLBCU7", "Entertainment"),
    [C_MOVIES] = T2("324", "324", "Movies", C_ENTERTAINMENT),
    [C_MUSIC] = T2("338", "338", "Music", C_ENTERTAINMENT),
    [C_TV] = T2("640", "640", "Television", C_ENTERTAINMENT),
    [C_FAMILY] = T1("186", "186", "Family and Relationships"),
    [C_PARENTING] = T2("192", "192", "Parenting", C_FAMILY),
    [C_FINE_ART] = T1("201", "201", "Fine Art"),
    [C_FOOD] = T1("210", "210", "Food & Drink"),
    [C_ALCOHOL] =
        T2F("211", "211", "Alcoholic Beverages", C_FOOD, ANA_CAT_AGE_GATED),
    [C_DINING] = T2("218", "218", "Dining Out", C_FOOD),
    [C_COOKING] = T2("216", "216", "Cooking", C_FOOD),
    [C_HEALTHY] = T1("223", "223", "Healthy Living"),
    [C_FITNESS] = T2("225", "225", "Fitness and Exercise", C_HEALTHY),
    [C_HOBBIES] = T1("239", "239", "Hobbies & Interests"),
    [C_HOLIDAYS] = T1("1KXCLD", "1KXCLD", "Holidays"),
    [C_HOME] = T1("274", "274", "Home & Garden"),
    [C_GARDENING] = T2("275", "275", "Gardening", C_HOME),
    [C_PERSFIN] = T1("391", "391", "Personal Finance"),
    [C_BANKING] = T2F("392", "392", "Consumer Banking", C_PERSFIN,
                      ANA_CAT_CONTEXTUAL_ONLY),
    [C_INSURANCE] =
        T2F("398", "398", "Insurance", C_PERSFIN, ANA_CAT_CONTEXTUAL_ONLY),
    [C_INVESTING] = T2F("410", "410", "Personal Investing", C_PERSFIN,
                        ANA_CAT_CONTEXTUAL_ONLY),
    [C_TAXES] = T2("415", "415", "Personal Taxes", C_PERSFIN),
    [C_PETS] = T1("422", "422", "Pets"),
    [C_CATS] = T2("424", "424", "Cats", C_PETS),
    [C_DOGS] = T2("425", "425", "Dogs", C_PETS),
    [C_POPCULTURE] = T1("432", "432", "Pop Culture"),
    [C_REALESTATE] = T1F("441", "441", "Real Estate", ANA_CAT_CONTEXTUAL_ONLY),
    [C_SCIENCE] = T1("464", "464", "Science"),
    [C_SHOPPING] = T1("473", "473", "Shopping"),
    [C_COUPONS] = T2("474", "474", "Coupons and Discounts", C_SHOPPING),
    [C_GROCERY] = T2("477", "477", "Grocery Shopping", C_SHOPPING),
    [C_GAMBLING] = T2F("181", "181", "Casinos & Gambling", C_ATTRACTIONS,
                       ANA_CAT_AGE_GATED | NO_PARENT_CREDIT),
    [C_SPORTS] = T1("483", "483", "Sports"),
    [C_SOCCER] = T2("533", "533", "Soccer", C_SPORTS),
    [C_BASKETBALL] = T2("547", "547", "Basketball", C_SPORTS),
    [C_TENNIS] = T2("539", "539", "Tennis", C_SPORTS),
    [C_STYLE] = T1("552", "552", "Style & Fashion"),
    [C_BEAUTY] = T2("553", "553", "Beauty", C_STYLE),
    [C_TECH] = T1("596", "596", "Technology & Computing"),
    [C_COMPUTING] = T2("599", "599", "Computing", C_TECH),
    [C_ELECTRONICS] = T2("632", "632", "Consumer Electronics", C_TECH),
    [C_AI] = T2("597", "597", "Artificial Intelligence", C_TECH),
    [C_TRAVEL] = T1("653", "653", "Travel"),
    [C_TRAVEL_LOC] = T2("655", "655", "Travel Locations", C_TRAVEL),
    [C_GAMING] = T1("680", "680", "Video Gaming"),
    [S_HEALTH] = SN("health", "286", "Medical Health", 1),
    [S_RELIGION] = SN("religion", "453", "Religion & Spirituality", 1),
    [S_POLITICS] = SN("politics", "386", "Politics", 1),
    [S_ORIENTATION] = SN("sexual_orientation", NULL,
                         "Sexual orientation and gender identity", 0),
    [S_DATING] = SN("sex_life", "188", "Dating", 2),
    [S_ADULT] = SN("adult", "Rm3SiT", "Adult & Explicit Sexual Content", 2),
    [S_ETHNICITY] = SN("ethnicity", NULL, "Racial or ethnic origin", 0),
    [S_UNION] = SN("trade_union", NULL, "Trade union membership", 0),
    [S_CRIME] = SN("criminal", "380", "Crime", 1),
    [S_LAW] = SN("legal", "383", "Law", 1),
    [S_GENETIC] = SN("genetic", "468", "Genetics", 2),
    [S_DISABILITY] = SN("disability", NULL, "Disability", 0),
    [S_DEBT] = SN("debt", "405", "Personal Debt", 2),
    [S_ASSIST] = SN("financial_assistance", "393", "Financial Assistance", 2),
    [S_DIVORCE] = SN("relationship_hardship", "189", "Divorce", 2),
    [S_BEREAVEMENT] = SN("bereavement", "187", "Bereavement", 2),
    [S_DRUGS] = SN("drugs", "pg0WhF",
                   "Illegal Drugs, Tobacco, eCigarettes, Vaping, Alcohol", 2),
    [S_WEAPONS] = SN("weapons", "avbNf2", "Arms & Ammunition", 2),
    [S_WAR] = SN("war", "389", "War and Conflicts", 1),
    [S_DISASTERS] = SN("disasters", "381", "Disasters", 1),
};

/* Tier-2 sensitive nodes: their 3.1 parents, for parent_id only (a
 * sensitive node never adds weight to a storable parent). */
static const char *
sensitive_parent_id(enum cat c)
{
    switch (c) {
    case S_DATING:
    case S_DIVORCE:
    case S_BEREAVEMENT:
        return "186";
    case S_ADULT:
    case S_DRUGS:
    case S_WEAPONS:
        return "v9i3On";
    case S_GENETIC:
        return "464";
    case S_DEBT:
    case S_ASSIST:
        return "391";
    default:
        return NULL;
    }
}

/* ---- lexicon ------------------------------------------------------------ */

struct lex_entry {
    const char *text;
    unsigned char cat;
    unsigned char cat2;
    unsigned char weight; /* tenths: 10 strong, 6 enough alone, 4 weak */
    unsigned char intent;
};

#define SH ANA_INTENT_SHOPPING
#define PR ANA_INTENT_PRICE
#define LO ANA_INTENT_LOCAL
#define BK ANA_INTENT_BOOKING

#define W(t, c)             \
    {                       \
        t, c, C_NONE, 10, 0 \
    }
#define M(t, c)            \
    {                      \
        t, c, C_NONE, 6, 0 \
    }
#define L(t, c)            \
    {                      \
        t, c, C_NONE, 4, 0 \
    }
#define W2(t, c, d)    \
    {                  \
        t, c, d, 10, 0 \
    }
#define M2(t, c, d)   \
    {                 \
        t, c, d, 6, 0 \
    }
#define L2(t, c, d)   \
    {                 \
        t, c, d, 4, 0 \
    }
#define I(t, f)                 \
    {                           \
        t, C_NONE, C_NONE, 0, f \
    }
#define WI(t, c, f)         \
    {                       \
        t, c, C_NONE, 10, f \
    }
#define MI(t, c, f)        \
    {                      \
        t, c, C_NONE, 6, f \
    }
#define LI(t, c, f)        \
    {                      \
        t, c, C_NONE, 4, f \
    }
#define N(t)                    \
    {                           \
        t, C_NONE, C_NONE, 0, 0 \
    }

#include "analytics/lexicon.inc"

static const struct {
    const struct lex_entry *rows;
    size_t n;
} lex_langs[4] = {
    { lex_en, sizeof(lex_en) / sizeof(lex_en[0]) },
    { lex_es, sizeof(lex_es) / sizeof(lex_es[0]) },
    { lex_pt, sizeof(lex_pt) / sizeof(lex_pt[0]) },
    { lex_any, sizeof(lex_any) / sizeof(lex_any[0]) },
};

/* ---- normalisation ------------------------------------------------------ */

#define PHRASE_MAX_TOKENS 5
#define NORM_MAX          (ANA_INTEREST_TEXT_MAX + 8)
#define TOK_MAX           1024

struct tok {
    uint16_t off;
    uint16_t len;
};

/* Base letters for U+00C0..U+00FF ('\0' = not a letter; '1' = "ae",
 * '2' = "th", '3' = "ss"). */
static const char latin1_fold[64] = "aaaaaa1ceeeeiiii"
                                    "dnooooo\0ouuuuy23"
                                    "aaaaaa1ceeeeiiii"
                                    "dnooooo\0ouuuuy2y";

/* Base letters for U+0100..U+017F ('4' = "ij", '5' = "oe"). */
static const char latin_ext_a_fold[128] = "aaaaaaccccccccdd"
                                          "ddeeeeeeeeeegggg"
                                          "gggghhhhiiiiiiii"
                                          "ii44jjkkklllllll"
                                          "lllnnnnnnnnnoooo"
                                          "oo55rrrrrrssssss"
                                          "ssttttttuuuuuuuu"
                                          "uuuuwwyyyzzzzzzs";

static const char *
fold_expand(char c)
{
    switch (c) {
    case '1':
        return "ae";
    case '2':
        return "th";
    case '3':
        return "ss";
    case '4':
        return "ij";
    case '5':
        return "oe";
    default:
        return NULL;
    }
}

/* Decode one UTF-8 code point at s (bounded by end); returns its length
 * (1 for an invalid byte, decoded as U+FFFD). */
static size_t
utf8_next(const unsigned char *s, const unsigned char *end, uint32_t *cp)
{
    size_t n, k;
    uint32_t v;

    if (s[0] < 0x80) {
        *cp = s[0];
        return 1;
    }
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        n = 2;
        v = s[0] & 0x1Fu;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        n = 3;
        v = s[0] & 0x0Fu;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        n = 4;
        v = s[0] & 0x07u;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    if ((size_t)(end - s) < n) {
        *cp = 0xFFFD;
        return 1;
    }
    for (k = 1; k < n; k++) {
        if ((s[k] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (s[k] & 0x3Fu);
    }
    *cp = v;
    return n;
}

static int
is_currency(uint32_t cp)
{
    return cp == '$' || cp == 0x20AC || cp == 0xA3 || cp == 0xA5 ||
           cp == 0x20B9 || cp == 0x20BD;
}

struct norm {
    char *out;
    size_t len;
    size_t cap;
    struct tok *toks;
    size_t ntok;
    size_t maxtok;
    size_t tok_start;
    int in_tok;
    /* price detection: a currency sign next to a digit */
    int last_digit;       /* last non-space code point was a digit */
    int pending_currency; /* currency seen; a digit next means price */
    int price;
};

/* Close the current token: light plural rule, then record it. */
static void
norm_end_token(struct norm *nm)
{
    size_t l;

    if (!nm->in_tok)
        return;
    nm->in_tok = 0;
    l = nm->len - nm->tok_start;
    if (l >= 4 && nm->out[nm->len - 1] == 's' &&
        strchr("suiw", nm->out[nm->len - 2]) == NULL) {
        nm->len--;
        l--;
    }
    if (nm->ntok < nm->maxtok && l <= UINT16_MAX) {
        nm->toks[nm->ntok].off = (uint16_t)nm->tok_start;
        nm->toks[nm->ntok].len = (uint16_t)l;
        nm->ntok++;
        nm->out[nm->len++] = ' ';
    } else {
        nm->len = nm->tok_start; /* drop: out of token slots */
    }
}

static void
norm_add(struct norm *nm, const char *chars)
{
    size_t l = strlen(chars);

    if (nm->len + l + 1 >= nm->cap || nm->ntok >= nm->maxtok)
        return;
    if (!nm->in_tok) {
        nm->in_tok = 1;
        nm->tok_start = nm->len;
    }
    memcpy(nm->out + nm->len, chars, l);
    nm->len += l;
}

/* Map one code point: letters and digits extend the token, combining
 * marks and apostrophes are skipped, everything else separates. */
static void
norm_cp(struct norm *nm, uint32_t cp)
{
    char one[2] = { 0, 0 };
    const char *ex;

    if (cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r') {
        norm_end_token(nm);
        return;
    }
    if (is_currency(cp)) {
        if (nm->last_digit)
            nm->price = 1;
        nm->pending_currency = 1;
        nm->last_digit = 0;
        norm_end_token(nm);
        return;
    }
    if (cp >= '0' && cp <= '9') {
        if (nm->pending_currency)
            nm->price = 1;
        nm->last_digit = 1;
    } else {
        nm->last_digit = 0;
        nm->pending_currency = 0;
    }
    if (cp == '\'' || cp == 0x2019 || (cp >= 0x300 && cp <= 0x36F))
        return;
    if ((cp >= 'a' && cp <= 'z') || (cp >= '0' && cp <= '9')) {
        one[0] = (char)cp;
    } else if (cp >= 'A' && cp <= 'Z') {
        one[0] = (char)(cp - 'A' + 'a');
    } else if (cp >= 0xC0 && cp <= 0xFF) {
        one[0] = latin1_fold[cp - 0xC0];
    } else if (cp >= 0x100 && cp <= 0x17F) {
        one[0] = latin_ext_a_fold[cp - 0x100];
    }
    if (one[0] == '\0') {
        norm_end_token(nm);
        return;
    }
    ex = fold_expand(one[0]);
    norm_add(nm, ex != NULL ? ex : one);
}

/* Tokenise text[0..n) into nm->out ("tok tok tok ") and nm->toks. */
static void
normalize(const char *text, size_t n, struct norm *nm)
{
    const unsigned char *s = (const unsigned char *)text, *end = s + n;

    while (s < end) {
        uint32_t cp;
        s += utf8_next(s, end, &cp);
        norm_cp(nm, cp);
    }
    norm_end_token(nm);
}

/* ---- hash tables (built once) ------------------------------------------- */

#define HASH_SLOTS 8192 /* power of two, > 2 * entries */
#define POOL_MAX   65536u

struct slot {
    uint32_t hash;
    uint16_t idx; /* entry index + 1; 0 = empty */
};

struct lex_key {
    uint32_t off; /* into pool */
    uint16_t len;
    uint8_t ntok;
    const struct lex_entry *e;
};

struct lexicon {
    char pool[POOL_MAX];
    size_t pool_len;
    struct lex_key keys[HASH_SLOTS / 2];
    unsigned nkeys;
    struct slot phrase[HASH_SLOTS];
    /* first token -> longest phrase (in tokens) that starts with it */
    struct {
        uint32_t hash;
        uint32_t off;
        uint16_t len;
        uint8_t maxtok;
    } first[HASH_SLOTS];
    struct ana_interest_lexinfo info;
    int ok;
};

static struct lexicon lx;
static pthread_once_t lx_once = PTHREAD_ONCE_INIT;

static uint32_t
fnv1a(const char *p, size_t n)
{
    uint32_t h = 2166136261u;

    for (size_t k = 0; k < n; k++) {
        h ^= (unsigned char)p[k];
        h *= 16777619u;
    }
    return h;
}

static const struct lex_key *
phrase_find(const char *p, size_t n)
{
    uint32_t h = fnv1a(p, n);

    for (uint32_t k = h & (HASH_SLOTS - 1);; k = (k + 1) & (HASH_SLOTS - 1)) {
        const struct slot *sl = &lx.phrase[k];
        const struct lex_key *key;
        if (sl->idx == 0)
            return NULL;
        key = &lx.keys[sl->idx - 1];
        if (sl->hash == h && key->len == n &&
            memcmp(lx.pool + key->off, p, n) == 0)
            return key;
    }
}

static unsigned
first_maxtok(const char *p, size_t n)
{
    uint32_t h = fnv1a(p, n);

    for (uint32_t k = h & (HASH_SLOTS - 1);; k = (k + 1) & (HASH_SLOTS - 1)) {
        if (lx.first[k].maxtok == 0)
            return 1;
        if (lx.first[k].hash == h && lx.first[k].len == n &&
            memcmp(lx.pool + lx.first[k].off, p, n) == 0)
            return lx.first[k].maxtok;
    }
}

static void
first_note(uint32_t off, size_t n, unsigned ntok)
{
    uint32_t h = fnv1a(lx.pool + off, n);

    for (uint32_t k = h & (HASH_SLOTS - 1);; k = (k + 1) & (HASH_SLOTS - 1)) {
        if (lx.first[k].maxtok == 0) {
            lx.first[k].hash = h;
            lx.first[k].off = off;
            lx.first[k].len = (uint16_t)n;
            lx.first[k].maxtok = (uint8_t)ntok;
            return;
        }
        if (lx.first[k].hash == h && lx.first[k].len == n &&
            memcmp(lx.pool + lx.first[k].off, lx.pool + off, n) == 0) {
            if (ntok > lx.first[k].maxtok)
                lx.first[k].maxtok = (uint8_t)ntok;
            return;
        }
    }
}

static int
same_meaning(const struct lex_entry *a, const struct lex_entry *b)
{
    return a->cat == b->cat && a->cat2 == b->cat2 && a->weight == b->weight &&
           a->intent == b->intent;
}

/* Normalise one lexicon row and insert it. Returns -1 when full. */
static int
lex_insert(const struct lex_entry *e)
{
    char buf[256];
    struct tok toks[PHRASE_MAX_TOKENS + 1];
    struct norm nm = { buf, 0, sizeof(buf), toks, 0, PHRASE_MAX_TOKENS + 1,
                       0,   0, 0,           0,    0 };
    const struct lex_key *old;
    struct lex_key *key;
    size_t n;

    normalize(e->text, strlen(e->text), &nm);
    if (nm.ntok == 0 || nm.ntok > PHRASE_MAX_TOKENS) {
        lx.info.rejected++;
        return 0;
    }
    n = nm.len - 1; /* drop the trailing space */
    old = phrase_find(buf, n);
    if (old != NULL) {
        if (same_meaning(old->e, e)) {
            lx.info.duplicates++;
        } else {
            if (lx.info.conflicts++ == 0)
                lx.info.first_conflict = e->text;
        }
        return 0;
    }
    if (lx.nkeys + 1 >= HASH_SLOTS / 2 || lx.pool_len + n > POOL_MAX)
        return -1;
    key = &lx.keys[lx.nkeys];
    key->off = (uint32_t)lx.pool_len;
    key->len = (uint16_t)n;
    key->ntok = (uint8_t)nm.ntok;
    key->e = e;
    memcpy(lx.pool + lx.pool_len, buf, n);
    lx.pool_len += n;
    lx.nkeys++;
    for (uint32_t h = fnv1a(buf, n), k = h & (HASH_SLOTS - 1);;
         k = (k + 1) & (HASH_SLOTS - 1)) {
        if (lx.phrase[k].idx == 0) {
            lx.phrase[k].hash = h;
            lx.phrase[k].idx = (uint16_t)lx.nkeys;
            break;
        }
    }
    first_note(key->off, toks[0].len, (unsigned)nm.ntok);
    if (nm.ntok > lx.info.max_phrase_tokens)
        lx.info.max_phrase_tokens = (unsigned)nm.ntok;
    return 0;
}

static void
lex_build(void)
{
    for (size_t l = 0; l < 4; l++) {
        for (size_t r = 0; r < lex_langs[l].n; r++) {
            if (lex_insert(&lex_langs[l].rows[r]) != 0)
                return; /* lx.ok stays 0 */
            lx.info.per_lang[l]++;
        }
    }
    lx.info.entries = lx.nkeys;
    lx.ok = 1;
}

/* ---- classification ----------------------------------------------------- */

/* A category needs one medium word, or two weak ones. */
#define MIN_WEIGHT 0.6

static void
fill_out(struct ana_interest *o, enum cat c, double score)
{
    const struct cat_def *d = &cats[c];

    o->key = d->key;
    o->iab_id = d->iab_id;
    o->name = d->name;
    o->tier = d->tier;
    o->parent_id = d->sensitive   ? sensitive_parent_id(c)
                   : d->tier == 2 ? cats[d->parent].iab_id
                                  : NULL;
    o->score = score;
    o->sensitive = d->sensitive;
    o->flags = d->flags & (ANA_CAT_CONTEXTUAL_ONLY | ANA_CAT_AGE_GATED);
}

static void
add_weight(double *w, unsigned c, double v)
{
    if (c == C_NONE || c >= C__COUNT)
        return;
    w[c] += v;
    if (cats[c].tier == 2 && !cats[c].sensitive &&
        !(cats[c].flags & NO_PARENT_CREDIT))
        w[cats[c].parent] += v;
}

/* Longest phrase first; matched tokens are consumed. */
static unsigned
match_tokens(const struct norm *nm, double *w)
{
    unsigned intents = 0;

    for (size_t i = 0; i < nm->ntok;) {
        const char *p = nm->out + nm->toks[i].off;
        unsigned maxn = first_maxtok(p, nm->toks[i].len);
        size_t n = maxn < nm->ntok - i ? maxn : nm->ntok - i;
        const struct lex_key *key = NULL;
        for (; n >= 1; n--) {
            const struct tok *last = &nm->toks[i + n - 1];
            key = phrase_find(p, (size_t)(last->off + last->len) -
                                     nm->toks[i].off);
            if (key != NULL)
                break;
        }
        if (key == NULL) {
            i++;
            continue;
        }
        add_weight(w, key->e->cat, key->e->weight / 10.0);
        add_weight(w, key->e->cat2, key->e->weight / 10.0);
        intents |= key->e->intent;
        i += n;
    }
    return intents;
}

struct ranked {
    enum cat c;
    double score;
};

static int
ranked_cmp(const void *a, const void *b)
{
    const struct ranked *x = a, *y = b;

    if (x->score != y->score)
        return x->score < y->score ? 1 : -1;
    return (int)x->c - (int)y->c;
}

int
ana_interest_classify(const char *text, struct ana_interest *out, int maxout,
                      unsigned *intent_flags)
{
    char buf[NORM_MAX];
    struct tok toks[TOK_MAX];
    struct norm nm = { buf, 0, sizeof(buf), toks, 0, TOK_MAX, 0, 0, 0, 0, 0 };
    double w[C__COUNT] = { 0 };
    struct ranked r[C__COUNT];
    size_t n, nr = 0;
    unsigned intents;

    if (intent_flags != NULL)
        *intent_flags = 0;
    if (text == NULL || maxout < 0 || (maxout > 0 && out == NULL))
        return -1;
    pthread_once(&lx_once, lex_build);
    if (!lx.ok)
        return -1;
    n = strnlen(text, ANA_INTEREST_TEXT_MAX);
    normalize(text, n, &nm);
    intents = match_tokens(&nm, w);
    if (nm.price)
        intents |= ANA_INTENT_PRICE;
    for (unsigned c = 1; c < C__COUNT; c++) {
        if (w[c] + 1e-9 < MIN_WEIGHT)
            continue;
        r[nr].c = (enum cat)c;
        r[nr].score = 1.0 - exp(-w[c]);
        nr++;
        if (cats[c].sensitive)
            intents |= ANA_INTENT_SENSITIVE;
    }
    qsort(r, nr, sizeof(r[0]), ranked_cmp);
    if (nr > (size_t)maxout)
        nr = (size_t)maxout;
    for (size_t k = 0; k < nr; k++)
        fill_out(&out[k], r[k].c, r[k].score);
    if (intent_flags != NULL)
        *intent_flags = intents;
    return (int)nr;
}

int
ana_interest_is_sensitive(const struct ana_interest *it)
{
    return it != NULL && it->sensitive;
}

double
ana_interest_decay(double score, double age_seconds, double half_life_seconds)
{
    if (isnan(score) || isnan(age_seconds) || isnan(half_life_seconds) ||
        half_life_seconds <= 0.0)
        return 0.0;
    if (age_seconds <= 0.0)
        return score;
    return score * exp2(-age_seconds / half_life_seconds);
}

int
ana_interest_categories(struct ana_interest *out, int maxout)
{
    int n = 0;

    for (unsigned c = 1; c < C__COUNT; c++, n++)
        if (out != NULL && n < maxout)
            fill_out(&out[n], (enum cat)c, 0.0);
    return n;
}

int
ana_interest_lexicon_info(struct ana_interest_lexinfo *info)
{
    pthread_once(&lx_once, lex_build);
    if (info != NULL)
        *info = lx.info;
    return lx.ok ? 0 : -1;
}
