/* User erasure; see erase.h. */
#include "analytics/erase.h"

#include <stdlib.h>
#include <string.h>

static const char SQL_FIND[] =
    "SELECT id, platform, platform_user_id, pseudonym FROM users"
    " WHERE ($1::text IS NOT NULL AND platform = $1"
    "        AND (platform_user_id = $2 OR phone = $2))"
    "    OR ($3::text IS NOT NULL AND pseudonym = $3)"
    " FOR UPDATE";
static const char SQL_SUPPRESS[] =
    "INSERT INTO suppressions (pseudonym, platform) VALUES ($1, $2)"
    " ON CONFLICT (pseudonym) DO NOTHING";

/* Deletions in dependency order. Parameters are taken from
 * { platform, platform user id, user id, pseudonym } starting at `first`. */
static const struct {
    const char *table;
    const char *sql;
    int first, n;
} STEPS[] = {
    /* Dedupe keys embed platform message ids (and a WhatsApp wamid encodes
     * the phone number): remove every key made from this user's messages
     * or naming their id. Must run before the messages go. */
    { "inbound_keys",
      "DELETE FROM inbound_keys k WHERE k.platform = $1"
      " AND (strpos(k.key, $2) > 0 OR k.key IN ("
      "  SELECT v.x FROM messages m"
      "  JOIN conversations c ON c.id = m.conversation_id,"
      "  LATERAL (VALUES (m.platform_message_id),"
      "   ('optout:' || m.platform_message_id),"
      "   ('optin:' || m.platform_message_id),"
      "   (m.platform_message_id || '#referral'),"
      "   ('status:' || m.platform_message_id || ':sent'),"
      "   ('status:' || m.platform_message_id || ':delivered'),"
      "   ('status:' || m.platform_message_id || ':read'),"
      "   ('status:' || m.platform_message_id || ':failed')) v(x)"
      "  WHERE c.user_id = $3::bigint"
      "   AND m.platform_message_id IS NOT NULL))",
      0, 3 },
    { "events",
      "DELETE FROM events WHERE user_id = $1::bigint OR user_pseudonym = $2"
      " OR conversation_id IN (SELECT id FROM conversations"
      "  WHERE user_id = $1::bigint)",
      2, 2 },
    { "feedback", "DELETE FROM feedback WHERE user_id = $1::bigint", 2, 1 },
    { "interest_signals",
      "DELETE FROM interest_signals WHERE user_id = $1::bigint", 2, 1 },
    { "interest_profiles",
      "DELETE FROM interest_profiles WHERE user_id = $1::bigint", 2, 1 },
    { "referrals",
      "DELETE FROM referrals WHERE conversation_id IN (SELECT id FROM"
      " conversations WHERE user_id = $1::bigint)",
      2, 1 },
    { "response_inputs",
      "DELETE FROM response_inputs WHERE response_id IN (SELECT r.id FROM"
      " responses r JOIN conversations c ON c.id = r.conversation_id"
      " WHERE c.user_id = $1::bigint)",
      2, 1 },
    { "messages",
      "DELETE FROM messages WHERE conversation_id IN (SELECT id FROM"
      " conversations WHERE user_id = $1::bigint)",
      2, 1 },
    { "responses",
      "DELETE FROM responses WHERE conversation_id IN (SELECT id FROM"
      " conversations WHERE user_id = $1::bigint)",
      2, 1 },
    { "conversations", "DELETE FROM conversations WHERE user_id = $1::bigint",
      2, 1 },
    { "users", "DELETE FROM users WHERE id = $1::bigint", 2, 1 },
};

static enum core_status
erase_one(struct core_dbconn *c, PGresult *u, int row, FILE *out, long *totals)
{
    const char *p[4] = { PQgetvalue(u, row, 1), PQgetvalue(u, row, 2),
                         PQgetvalue(u, row, 0), PQgetvalue(u, row, 3) };
    const char *sp[2] = { p[3], p[0] };
    enum core_status st = core_db_query(c, SQL_SUPPRESS, 2, sp, NULL);
    size_t i;

    (void)out;
    for (i = 0; st == CORE_OK && i < sizeof(STEPS) / sizeof(STEPS[0]); i++) {
        PGresult *r = NULL;

        st = core_db_query(c, STEPS[i].sql, STEPS[i].n, p + STEPS[i].first, &r);
        if (st == CORE_OK)
            totals[i] += strtol(PQcmdTuples(r), NULL, 10);
        PQclear(r);
    }
    return st;
}

enum core_status
ana_erase_user(struct core_dbconn *c, const char *platform,
               const char *platform_user, const char *pseudonym, FILE *out,
               char *err, size_t errlen)
{
    const char *p[3] = { platform, platform_user, pseudonym };
    long totals[sizeof(STEPS) / sizeof(STEPS[0])] = { 0 };
    PGresult *u = NULL;
    enum core_status st;
    size_t i;
    int row;

    st = core_db_begin(c);
    if (st == CORE_OK)
        st = core_db_query(c, SQL_FIND, 3, p, &u);
    if (st != CORE_OK)
        goto out;
    if (PQntuples(u) == 0) {
        snprintf(err, errlen, "no such user");
        st = CORE_ERR_NOT_FOUND;
        goto out;
    }
    for (row = 0; row < PQntuples(u) && st == CORE_OK; row++)
        st = erase_one(c, u, row, out, totals);
    if (st == CORE_OK)
        st = core_db_commit(c);
    if (st != CORE_OK) {
        snprintf(err, errlen, "could not erase: %s", c->error);
        goto out;
    }
    fprintf(out, "erased %d user(s); pseudonym suppressed for exports\n",
            PQntuples(u));
    for (i = 0; i < sizeof(STEPS) / sizeof(STEPS[0]); i++)
        fprintf(out, "%-18s %ld\n", STEPS[i].table, totals[i]);
out:
    if (st != CORE_OK)
        core_db_rollback(c);
    PQclear(u);
    return st;
}
