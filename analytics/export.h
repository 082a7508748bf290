/*
 * Training-data export (`parley export`, DESIGN §4): the LLM responses
 * with their feedback, as JSONL for SFT, DPO and KTO trainers.
 *
 * One canonical record per answered LLM call (responses.request_messages,
 * the exact messages the model saw, and responses.completion), labelled by
 * its explicit feedback: per source (our thumbs buttons, a reaction) the
 * latest feedback that was not retracted counts; +1 is "good", -1 "bad";
 * a good and a bad from different sources is "conflict" and never a
 * training label; neutral reactions (0) give no label. Implicit signals
 * (a follow-up message, read receipts, ad conversions) are never labels.
 *
 * Privacy: every message text is PII-redacted (analytics/redact), users
 * appear only as their pseudonym, and users who opted out (STOP) or were
 * erased (suppressions) are left out.
 *
 * Memory is constant in the number of rows: the query runs in libpq's
 * single-row mode inside one read-only snapshot, and each row is written
 * before the next is read.
 */
#ifndef ANALYTICS_EXPORT_H
#define ANALYTICS_EXPORT_H

#include <stddef.h>
#include <stdio.h>

#include "core/db.h"
#include "core/status.h"

enum ana_export_format {
    ANA_EXPORT_SFT,        /* TRL prompt-completion, good answers */
    ANA_EXPORT_DPO,        /* TRL prompt/chosen/rejected, explicit prompt */
    ANA_EXPORT_KTO,        /* TRL prompt/completion/label */
    ANA_EXPORT_OPENAI_SFT, /* OpenAI chat fine-tuning, messages + weight */
    ANA_EXPORT_OPENAI_DPO, /* OpenAI input/preferred/non_preferred_output */
    ANA_EXPORT_RAW,        /* every answered LLM call, all fields */
};

/* "sft", "dpo", ... -> *f; CORE_ERR_INVALID for anything else. */
enum core_status ana_export_format_parse(const char *name,
                                         enum ana_export_format *f);
const char *ana_export_format_name(enum ana_export_format f);

/* One record as the export query returns it (text; NULL = SQL NULL). For
 * the pair formats, the response fields are the chosen answer's and
 * rejected_id / rejected its counterpart's. */
struct ana_export_row {
    const char *response_id;
    const char *created_at; /* ISO 8601, UTC */
    const char *platform;
    const char *user; /* pseudonym */
    const char *model;
    const char *status;
    const char *prompt; /* JSON array of {role, content} */
    const char *completion;
    const char *finish_reason;
    const char *prompt_tokens;
    const char *completion_tokens;
    const char *llm_ms;
    const char *label;    /* "good", "bad", "conflict" or NULL */
    const char *feedback; /* JSON array of the signals that count */
    const char *rejected_id;
    const char *rejected;
    const char *rejected_user; /* pseudonym */
};

/*
 * Render one row as one JSON line (malloc'd, no newline; the caller frees
 * it). Every text is redacted. NULL with err set, and errno EINVAL when
 * the stored prompt is not an array of {role, content: string} messages
 * (the row is refused), ENOMEM when memory runs out.
 */
char *ana_export_render(enum ana_export_format f,
                        const struct ana_export_row *r, char *err,
                        size_t errlen);

/*
 * The manifest line of output line `line` (1-based): which responses and
 * users it came from, so that rows can be audited, and dropped from files
 * already written when a user is erased (the OpenAI formats carry no ids):
 *   {"line":N,"response_ids":[...],"users":[...]}
 * malloc'd, no newline; NULL when memory runs out.
 */
char *ana_export_manifest_line(long line, const struct ana_export_row *r);

struct ana_export_opts {
    enum ana_export_format format;
    const char *since;    /* timestamptz text, inclusive; NULL = open */
    const char *until;    /* timestamptz text, exclusive; NULL = open */
    const char *platform; /* NULL = all */
    long max_per_user;    /* at most this many rows per user (the most
                           * recent; for pairs, answers considered);
                           * 0 = no cap */
};

/* Stream the export to out, and its manifest to manifest when that is not
 * NULL (one line per line of out). *rows = lines written, *skipped =
 * records whose stored prompt could not be rendered (not written). On
 * failure err holds a one-line reason; lines already written stay
 * written. */
enum core_status ana_export(struct core_dbconn *c,
                            const struct ana_export_opts *o, FILE *out,
                            FILE *manifest, long *rows, long *skipped,
                            char *err, size_t errlen);

#endif
