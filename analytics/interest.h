/*
 * Interest and ad-signal classification of one message: IAB Content
 * Taxonomy 3.1 categories (tier 1, some tier 2) and commercial-intent flags
 * from a keyword lexicon for English, Spanish and Portuguese compiled into
 * the binary, plus the sensitive categories that must never be stored per
 * user (GDPR Art. 9/10, DSA Art. 26(3)).
 */
#ifndef ANALYTICS_INTEREST_H
#define ANALYTICS_INTEREST_H

/* Intent flags (research §3.4). */
#define ANA_INTENT_SHOPPING 0x01u /* buy, comprar, add to cart, in stock */
#define ANA_INTENT_PRICE    0x02u /* price, precio, preço, cheap, "€20" */
#define ANA_INTENT_LOCAL    0x04u /* near me, cerca de mí, perto de mim */
#define ANA_INTENT_BOOKING  0x08u /* book a, reservar, appointment */
/* Not an intent: the message matched a sensitive category. Callers that
 * want to be strict skip per-user storage of the whole message then. */
#define ANA_INTENT_SENSITIVE 0x100u

/* Category flags (research §3.2 denylist tiers other than "never"). */
#define ANA_CAT_CONTEXTUAL_ONLY                                         \
    0x01u                       /* careers, housing, credit, insurance: \
                                   no demographic targeting */
#define ANA_CAT_AGE_GATED 0x02u /* alcohol, gambling */

/* Bytes of a message that are classified; the rest is ignored. */
#define ANA_INTEREST_TEXT_MAX 4096
/* A comfortable size for the `out` array. */
#define ANA_INTEREST_OUT_MAX 16

struct ana_interest {
    const char *key;       /* stable: "iab:473", "sensitive:health" */
    const char *iab_id;    /* Content Taxonomy 3.1 "Unique ID" ("473",
                              "JLBCU7"); NULL when no node fits */
    const char *name;      /* "Shopping", "Medical Health" */
    const char *parent_id; /* tier-1 id of a tier-2 node, else NULL */
    int tier;              /* 1 or 2; 0 when iab_id is NULL */
    double score;          /* 0..1: 1 - exp(-sum of keyword weights) */
    int sensitive;         /* 1: never store per user, aggregates only */
    unsigned flags;        /* ANA_CAT_* */
};

/*
 * Classify the UTF-8 `text` (first ANA_INTEREST_TEXT_MAX bytes): writes up to
 * `maxout` categories to `out`, highest score first, and the intent flags to
 * `*intent_flags` (may be NULL). Returns the number written, or -1 when an
 * argument is invalid or the lexicon failed to load. Matching is on
 * lower-cased tokens with Latin diacritics stripped and a light plural rule,
 * longest phrase first. All strings in `out` are static. Thread-safe; the
 * lexicon is built once (pthread_once) on first use.
 */
int ana_interest_classify(const char *text, struct ana_interest *out,
                          int maxout, unsigned *intent_flags);

/* 1 when `it` is a sensitive category (never stored per user). */
int ana_interest_is_sensitive(const struct ana_interest *it);

/*
 * Exponential decay for per-user profiles: score * 2^(-age/half_life).
 * A negative age counts as 0; half_life <= 0 or NaN inputs give 0.
 */
double ana_interest_decay(double score, double age_seconds,
                          double half_life_seconds);

/* All categories the classifier can return (score 0), for labels and
 * dashboards. Returns the total count; writes min(count, maxout). */
int ana_interest_categories(struct ana_interest *out, int maxout);

/* Lexicon statistics, for tests and the README. */
struct ana_interest_lexinfo {
    unsigned entries;           /* distinct normalised keys */
    unsigned per_lang[4];       /* rows written for en, es, pt, shared */
    unsigned duplicates;        /* same key, same meaning (harmless) */
    unsigned conflicts;         /* same key, different meaning: a lexicon bug */
    unsigned rejected;          /* rows that normalise to nothing or too long */
    const char *first_conflict; /* text of the first conflicting row */
    unsigned max_phrase_tokens;
};

/* Fill `info`; returns 0, or -1 when the lexicon failed to load. */
int ana_interest_lexicon_info(struct ana_interest_lexinfo *info);

#endif
