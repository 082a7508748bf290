/*
 * User pseudonyms: HMAC-SHA256(key, platform ":" platform_user_id), hex.
 * The key comes from PARLEY_PSEUDONYM_KEY or is generated once and kept in
 * the settings table; its version is stored next to every pseudonym so keys
 * can be rotated.
 */
#ifndef ANALYTICS_PSEUDONYM_H
#define ANALYTICS_PSEUDONYM_H

#include <stddef.h>

#include "core/db.h"
#include "core/status.h"

#define ANA_PSEUDONYM_LEN 64

struct ana_pseudonym_key {
    unsigned char key[64];
    size_t len;
    int version;
};

/* Load the key: from cfg_key when set, else from settings (creating a random
 * one on first use, race-free across processes). */
enum core_status ana_pseudonym_key_load(struct core_dbconn *c,
                                        const char *cfg_key,
                                        struct ana_pseudonym_key *out);
void ana_pseudonym(const struct ana_pseudonym_key *k, const char *platform,
                   const char *user_id, char out[ANA_PSEUDONYM_LEN + 1]);

#endif
