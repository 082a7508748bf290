/*
 * PII redaction for the analytics/export copy of message text: e-mail
 * addresses, phone numbers, payment cards (Luhn), IBANs (mod-97), IP
 * addresses and URL credentials are replaced by typed placeholders.
 */
#ifndef ANALYTICS_REDACT_H
#define ANALYTICS_REDACT_H

#include <stddef.h>

/* Which entity types to replace (bit mask). */
#define ANA_REDACT_EMAIL 0x01u /* -> "[EMAIL]" */
#define ANA_REDACT_PHONE 0x02u /* -> "[PHONE]" */
#define ANA_REDACT_CARD  0x04u /* -> "[CARD]" */
#define ANA_REDACT_IBAN  0x08u /* -> "[IBAN]" */
#define ANA_REDACT_IP    0x10u /* -> "[IP]" */
#define ANA_REDACT_URL_CREDENTIALS \
    0x20u /* user:pass@ in URLs -> "[CREDENTIALS]@" */
#define ANA_REDACT_ALL 0x3fu

/* Replacements made by one call, per type. */
struct ana_redact_stats {
    unsigned email;
    unsigned phone;
    unsigned card;
    unsigned iban;
    unsigned ip;
    unsigned credentials;
    unsigned total;
};

/*
 * Return a malloc'd copy of the NUL-terminated UTF-8 `text` with the PII
 * types selected by `flags` replaced by their placeholders; flags == 0 means
 * ANA_REDACT_ALL (redaction is on by default). Every detector runs whatever
 * the flags say, in a fixed order (credentials, e-mail, IBAN, card, IPv6,
 * IPv4, protected dates/prices, phone), so that a card number is never taken
 * for a phone number even when only ANA_REDACT_PHONE is asked for; the flags
 * only choose what is replaced. Placeholders are ASCII and replace whole
 * matches, so multibyte UTF-8 sequences are never split. `stats` (may be
 * NULL) is overwritten with the replacement counts. Returns NULL when `text`
 * is NULL or memory runs out; the caller frees the result. Thread-safe: no
 * shared state.
 */
char *ana_redact(const char *text, unsigned flags,
                 struct ana_redact_stats *stats);

/* Luhn check over the ASCII digits of s[0..n) (other bytes are skipped);
 * returns 1 when valid and there are at least 2 digits. Exposed for tests. */
int ana_luhn_valid(const char *s, size_t n);

/* IBAN check over s[0..n) ignoring spaces: known country, its registry
 * length, and mod-97 == 1. Returns 1 when valid. Exposed for tests. */
int ana_iban_valid(const char *s, size_t n);

#endif
