/*
 * Right to erasure: delete everything about one user (messages, responses,
 * events, feedback, signals, profile, referrals, dedupe keys naming them)
 * in one transaction, and keep a suppression record of the pseudonym so the
 * user's future exports stay empty. Aggregates without a user key stay.
 */
#ifndef ANALYTICS_ERASE_H
#define ANALYTICS_ERASE_H

#include <stdio.h>

#include "core/db.h"
#include "core/status.h"

/* Exactly one of (platform + platform_user) or pseudonym. Writes one line
 * per table ("table N") to out. CORE_ERR_NOT_FOUND when no user matches. */
enum core_status ana_erase_user(struct core_dbconn *c, const char *platform,
                                const char *platform_user,
                                const char *pseudonym, FILE *out, char *err,
                                size_t errlen);

#endif
