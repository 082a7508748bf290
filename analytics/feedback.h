/*
 * Feedback polarity: maps emoji reactions to +1/-1/0 with a configurable,
 * deliberately conservative table, and parses the payloads of Parley's own
 * thumbs buttons ("parley_fb:up:<response_id>").
 */
#ifndef ANALYTICS_FEEDBACK_H
#define ANALYTICS_FEEDBACK_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

/* The default map: only unambiguous reactions carry a label (research
 * §2.2/§2.3); every other emoji is neutral (0) but still logged raw. */
#define ANA_FEEDBACK_DEFAULT_MAP                                           \
    "\xF0\x9F\x91\x8D=+1,\xE2\x9D\xA4\xEF\xB8\x8F=+1,\xF0\x9F\x99\x8F=+1," \
    "\xF0\x9F\x98\x8D=+1,\xF0\x9F\x91\x8E=-1,\xF0\x9F\x98\xA1=-1"
/* thumbs up, red heart, folded hands, heart eyes = +1; thumbs down,
 * pouting face = -1 */

#define ANA_FEEDBACK_MAP_MAX   64 /* entries */
#define ANA_FEEDBACK_EMOJI_MAX 32 /* bytes of one normalised emoji + NUL */
#define ANA_FEEDBACK_VALUE_MAX 5  /* |polarity| accepted in a map spec */

struct ana_feedback_entry {
    char emoji[ANA_FEEDBACK_EMOJI_MAX]; /* normalised UTF-8 */
    int polarity;
};

/* Plain value type: copy freely; read-only after parsing, so one map can
 * be shared by all threads. */
struct ana_feedback_map {
    unsigned n;
    struct ana_feedback_entry e[ANA_FEEDBACK_MAP_MAX];
};

/* Fill `m` with ANA_FEEDBACK_DEFAULT_MAP. */
void ana_feedback_map_default(struct ana_feedback_map *m);

/*
 * Parse "EMOJI=VALUE,EMOJI=VALUE,..." (VALUE an integer with optional sign,
 * |VALUE| <= ANA_FEEDBACK_VALUE_MAX; spaces around items and empty items are
 * ignored; a repeated emoji takes the last value). Emoji are normalised as in
 * ana_feedback_polarity. On error `m` is left empty and CORE_ERR_INVALID is
 * returned (CORE_ERR_TOO_LARGE past ANA_FEEDBACK_MAP_MAX entries). NULL or
 * "" gives an empty map (every reaction neutral).
 */
enum core_status ana_feedback_map_parse(struct ana_feedback_map *m,
                                        const char *spec);

/*
 * Polarity of one reaction emoji under `m` (NULL = default map): the value
 * from the map, else 0. Variation selectors (U+FE0E, U+FE0F) and skin-tone
 * modifiers (U+1F3FB..U+1F3FF) are removed and surrounding whitespace is
 * ignored before lookup, so a thumbs-up with a skin tone counts as the plain
 * thumbs-up, and U+2764 as U+2764 U+FE0F. An empty or NULL emoji (a WhatsApp
 * reaction removal) and invalid UTF-8 give 0.
 */
int ana_feedback_polarity(const struct ana_feedback_map *m, const char *emoji);

/*
 * Normalise one emoji into out[size] (see ana_feedback_polarity). Returns
 * CORE_OK, CORE_ERR_INVALID for invalid UTF-8, CORE_ERR_TOO_LARGE when it
 * does not fit. Exposed for storing reactions under a canonical key.
 */
enum core_status ana_feedback_emoji_normalize(const char *emoji, char *out,
                                              size_t size);

/* Button payloads of Parley's own feedback buttons:
 *   "parley_fb:up:<response_id>" / "parley_fb:down:<response_id>"
 * <response_id> is the decimal id (1..INT64_MAX, no sign, no leading zeros)
 * of the bot response the buttons were attached to. */
#define ANA_FEEDBACK_BUTTON_PREFIX "parley_fb:"
#define ANA_FEEDBACK_PAYLOAD_MAX   40 /* "parley_fb:down:" + 19 digits + NUL */

/*
 * Parse a button payload: returns +1 (up) or -1 (down) and stores the id in
 * *response_id (may be NULL); returns 0 for anything else (not ours,
 * malformed, id out of range), leaving *response_id untouched.
 */
int ana_feedback_button_polarity(const char *payload, int64_t *response_id);

/*
 * Write the payload for polarity (+1 up, -1 down) and response_id into
 * buf[size]. Returns CORE_OK, CORE_ERR_INVALID (bad polarity or id),
 * CORE_ERR_TOO_LARGE (buffer too small).
 */
enum core_status ana_feedback_button_payload(char *buf, size_t size,
                                             int polarity, int64_t response_id);

#endif
