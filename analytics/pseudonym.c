/* HMAC pseudonyms of platform user ids; see pseudonym.h. */
#include "analytics/pseudonym.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

static const char SQL_PUT_KEY[] =
    "INSERT INTO settings (key, value) VALUES ('pseudonym_key', $1) "
    "ON CONFLICT (key) DO NOTHING";
static const char SQL_GET_KEY[] =
    "SELECT value FROM settings WHERE key = 'pseudonym_key'";

static void
hex(const unsigned char *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

enum core_status
ana_pseudonym_key_load(struct core_dbconn *c, const char *cfg_key,
                       struct ana_pseudonym_key *out)
{
    unsigned char rnd[32];
    char rhex[65];
    const char *p[1] = { rhex };
    PGresult *r = NULL;
    enum core_status st;
    const char *v;

    memset(out, 0, sizeof(*out));
    out->version = 1;
    if (cfg_key && *cfg_key) {
        out->len = strlen(cfg_key) < sizeof(out->key) ? strlen(cfg_key)
                                                      : sizeof(out->key);
        memcpy(out->key, cfg_key, out->len);
        return CORE_OK;
    }
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return CORE_ERR_INTERNAL;
    hex(rnd, sizeof(rnd), rhex);
    st = core_db_query(c, SQL_PUT_KEY, 1, p, NULL);
    if (st == CORE_OK)
        st = core_db_query(c, SQL_GET_KEY, 0, NULL, &r);
    if (st != CORE_OK)
        return st;
    if (PQntuples(r) != 1) {
        PQclear(r);
        return CORE_ERR_INTERNAL;
    }
    v = PQgetvalue(r, 0, 0);
    out->len = strlen(v) < sizeof(out->key) ? strlen(v) : sizeof(out->key);
    memcpy(out->key, v, out->len);
    PQclear(r);
    return CORE_OK;
}

void
ana_pseudonym(const struct ana_pseudonym_key *k, const char *platform,
              const char *user_id, char out[ANA_PSEUDONYM_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char msg[512];
    int n = snprintf(msg, sizeof(msg), "%s:%s", platform, user_id);

    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(msg))
        n = (int)sizeof(msg) - 1;
    HMAC(EVP_sha256(), k->key, (int)k->len, (const unsigned char *)msg,
         (size_t)n, md, &mdlen);
    hex(md, mdlen > 32 ? 32 : mdlen, out);
}
