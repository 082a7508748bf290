/*
 * Word-set similarity of two short texts, for the implicit "user rephrased
 * their question" signal: Jaccard index of the sets of lowercased words
 * (ASCII letters and digits, and any non-ASCII UTF-8 sequence, form words).
 */
#ifndef ANALYTICS_SIMILARITY_H
#define ANALYTICS_SIMILARITY_H

/* 0.0 (nothing shared) .. 1.0 (same words); 0.0 when either has no word.
 * Only the first 64 distinct words of each text count. Thread-safe. */
double ana_text_similarity(const char *a, const char *b);

/* A rephrase: similar enough, and not simply the same short greeting. */
int ana_is_rephrase(const char *previous, const char *current);

#endif
