/* Training-data export; see export.h. */
#include "analytics/export.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "analytics/redact.h"

static const struct {
    const char *name;
    enum ana_export_format f;
} FORMATS[] = {
    { "sft", ANA_EXPORT_SFT },
    { "dpo", ANA_EXPORT_DPO },
    { "kto", ANA_EXPORT_KTO },
    { "openai-sft", ANA_EXPORT_OPENAI_SFT },
    { "openai-dpo", ANA_EXPORT_OPENAI_DPO },
    { "raw", ANA_EXPORT_RAW },
};

enum core_status
ana_export_format_parse(const char *name, enum ana_export_format *f)
{
    size_t i;

    for (i = 0; name && i < sizeof(FORMATS) / sizeof(FORMATS[0]); i++)
        if (strcmp(FORMATS[i].name, name) == 0) {
            *f = FORMATS[i].f;
            return CORE_OK;
        }
    return CORE_ERR_INVALID;
}

const char *
ana_export_format_name(enum ana_export_format f)
{
    size_t i;

    for (i = 0; i < sizeof(FORMATS) / sizeof(FORMATS[0]); i++)
        if (FORMATS[i].f == f)
            return FORMATS[i].name;
    return "?";
}

/*
 * One record per answered LLM call and its label. Per feedback source the
 * latest signal that was not retracted counts (a second click replaces the
 * first); sources that disagree make a conflict. Responses are taken in id
 * order, which is their creation order.
 * The feedback lookup names only response_id and drops retracted rows
 * after picking one per source: with "retracted_at IS NULL" in it, a plan
 * made before the table had statistics AND-ed in the partial index on
 * (message_id, user_id), a scan of all feedback per response (100,000
 * answers took over two minutes instead of three seconds).
 * $1 since, $2 until, $3 platform, $4 labels wanted (NULL: all),
 * $5 response statuses wanted.
 */
/* clang-format off */
#define TS_UTC(x) \
    "to_char((" x ") AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
#define SQL_RECORDS                                                          \
    "SELECT r.id, " TS_UTC("r.created_at") " AS created_at,"                 \
    " c.platform, u.pseudonym, r.model, r.status, r.request_messages,"       \
    " r.completion, r.finish_reason, r.prompt_tokens, r.completion_tokens,"  \
    " r.llm_ms, fb.label, fb.signals"                                        \
    " FROM responses r"                                                      \
    " JOIN conversations c ON c.id = r.conversation_id"                      \
    " JOIN users u ON u.id = c.user_id"                                      \
    " LEFT JOIN LATERAL ("                                                   \
    "  SELECT CASE WHEN bool_or(l.polarity > 0) AND bool_or(l.polarity < 0)" \
    "              THEN 'conflict'"                                          \
    "              WHEN bool_or(l.polarity > 0) THEN 'good'"                 \
    "              WHEN bool_or(l.polarity < 0) THEN 'bad' END AS label,"    \
    "         jsonb_agg(jsonb_build_object('source', l.source,"              \
    "             'polarity', l.polarity, 'emoji', l.emoji,"                 \
    "             'at', " TS_UTC("l.at") ") ORDER BY l.source) AS signals"   \
    "  FROM (SELECT DISTINCT ON (f.source) f.source, f.polarity, f.emoji,"   \
    "               coalesce(f.occurred_at, f.created_at) AS at,"            \
    "               f.retracted_at"                                          \
    "        FROM feedback f WHERE f.response_id = r.id"                     \
    "        ORDER BY f.source, f.retracted_at IS NULL DESC,"                \
    "                 coalesce(f.occurred_at, f.created_at) DESC,"           \
    "                 f.id DESC) l"                                          \
    "  WHERE l.retracted_at IS NULL) fb ON true"                             \
    " WHERE r.kind = 'llm' AND r.completion IS NOT NULL"                     \
    "   AND jsonb_typeof(r.request_messages) = 'array'"                      \
    "   AND r.status = ANY ($5::text[])"                                     \
    "   AND ($1::timestamptz IS NULL OR r.created_at >= $1::timestamptz)"    \
    "   AND ($2::timestamptz IS NULL OR r.created_at < $2::timestamptz)"     \
    "   AND ($3::text IS NULL OR c.platform = $3::text)"                     \
    "   AND u.opted_out_at IS NULL"                                          \
    "   AND NOT EXISTS (SELECT 1 FROM suppressions s"                        \
    "                   WHERE s.pseudonym = u.pseudonym)"
/* clang-format on */

/* The records wanted: of the labels $4 (NULL: all), and at most $6 of each
 * user's, the most recent (NULL: no cap), so that heavy users do not
 * dominate a training set. */
#define SQL_CAPPED                                               \
    "SELECT c.* FROM ("                                          \
    " SELECT x.*, row_number() OVER (PARTITION BY x.pseudonym"   \
    "                                ORDER BY x.id DESC) AS nth" \
    " FROM (" SQL_RECORDS ") x"                                  \
    " WHERE $4::text[] IS NULL OR x.label = ANY ($4::text[])) c" \
    " WHERE $6::int IS NULL OR c.nth <= $6::int"

static const char SQL_ROWS[] =
    "SELECT x.id, x.created_at, x.platform, x.pseudonym, x.model, x.status,"
    "       x.request_messages, x.completion, x.finish_reason,"
    "       x.prompt_tokens, x.completion_tokens, x.llm_ms, x.label,"
    "       x.signals, NULL::bigint, NULL::text, NULL::text"
    " FROM (" SQL_CAPPED ") x"
    " ORDER BY x.id";

/* Pairs: answers to the very same prompt (system prompt, history and
 * question), one rated good and one bad; the k-th good of a prompt is
 * paired with its k-th bad, so no answer is used twice. Two identical
 * completions teach nothing and are dropped. Grouping pairs them, not a
 * join of the goods with the bads: a plan made without statistics would
 * nest that join. Only the columns the pair formats print are filled. */
static const char SQL_PAIRS[] =
    "WITH y AS (SELECT x.id, x.label, x.request_messages, x.pseudonym,"
    "                  row_number() OVER (PARTITION BY x.request_messages,"
    "                                     x.label ORDER BY x.id) AS k"
    "           FROM (" SQL_CAPPED ") x)"
    " SELECT p.gid, NULL, NULL, p.guser, NULL, NULL, g.request_messages,"
    "        g.completion, NULL, NULL, NULL, NULL, 'good', NULL,"
    "        p.bid, b.completion, p.buser"
    " FROM (SELECT max(y.id) FILTER (WHERE y.label = 'good') AS gid,"
    "              max(y.id) FILTER (WHERE y.label = 'bad') AS bid,"
    "              max(y.pseudonym) FILTER (WHERE y.label = 'good') AS guser,"
    "              max(y.pseudonym) FILTER (WHERE y.label = 'bad') AS buser"
    "       FROM y GROUP BY y.request_messages, y.k) p"
    " JOIN responses g ON g.id = p.gid"
    " JOIN responses b ON b.id = p.bid"
    " WHERE g.completion <> b.completion"
    " ORDER BY p.gid";

#define NCOLS 17

static void
seterr(char *err, size_t errlen, const char *msg)
{
    if (err && errlen)
        snprintf(err, errlen, "%s", msg);
}

/* A redacted string node (NULL text gives JSON null). */
static cJSON *
redacted(const char *text)
{
    char *r;
    cJSON *s;

    if (!text)
        return cJSON_CreateNull();
    r = ana_redact(text, ANA_REDACT_ALL, NULL);
    if (!r)
        return NULL;
    s = cJSON_CreateString(r);
    free(r);
    return s;
}

/* {"role": role, "content": redacted text} (+ "weight" when >= 0). */
static cJSON *
message(const char *role, const char *text, int weight)
{
    cJSON *m = cJSON_CreateObject(), *content = redacted(text);

    if (!m || !content || !cJSON_AddStringToObject(m, "role", role)) {
        cJSON_Delete(m);
        cJSON_Delete(content);
        return NULL;
    }
    cJSON_AddItemToObject(m, "content", content);
    if (weight >= 0 && !cJSON_AddNumberToObject(m, "weight", weight)) {
        cJSON_Delete(m);
        return NULL;
    }
    return m;
}

static cJSON *
answer(const char *text, int weight)
{
    cJSON *a = cJSON_CreateArray(), *m = message("assistant", text, weight);

    if (!a || !m) {
        cJSON_Delete(a);
        cJSON_Delete(m);
        return NULL;
    }
    cJSON_AddItemToArray(a, m);
    return a;
}

/*
 * The stored prompt as a new array of {role, content}, every content
 * redacted; with openai, assistant turns of the history get weight 0 (only
 * the rated answer is taught). NULL with err set when the stored JSON is
 * not such an array.
 */
static cJSON *
prompt_messages(const char *json, bool openai, char *err, size_t errlen)
{
    cJSON *in = cJSON_Parse(json ? json : ""), *out, *it;

    if (!cJSON_IsArray(in) || cJSON_GetArraySize(in) == 0) {
        cJSON_Delete(in);
        seterr(err, errlen, "stored prompt is not a list of messages");
        errno = EINVAL;
        return NULL;
    }
    out = cJSON_CreateArray();
    cJSON_ArrayForEach(it, in)
    {
        cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        const char *r = cJSON_GetStringValue(role);
        cJSON *m;

        if (!r || !cJSON_IsString(content) ||
            (strcmp(r, "system") != 0 && strcmp(r, "user") != 0 &&
             strcmp(r, "assistant") != 0)) {
            seterr(err, errlen,
                   "stored prompt has a message without a known role and"
                   " text content");
            errno = EINVAL;
            cJSON_Delete(out);
            out = NULL;
            break;
        }
        m = message(r, content->valuestring,
                    openai && strcmp(r, "assistant") == 0 ? 0 : -1);
        if (!out || !m) {
            cJSON_Delete(m);
            cJSON_Delete(out);
            out = NULL;
            seterr(err, errlen, "out of memory");
            errno = ENOMEM;
            break;
        }
        cJSON_AddItemToArray(out, m);
    }
    cJSON_Delete(in);
    return out;
}

/* An integer column as a JSON number (kept exact: no trip through a
 * double), NULL as null. */
static cJSON *
integer(const char *v)
{
    size_t i;

    if (!v || !*v)
        return cJSON_CreateNull();
    for (i = (v[0] == '-'); v[i]; i++)
        if (v[i] < '0' || v[i] > '9')
            return cJSON_CreateNull();
    return cJSON_CreateRaw(v);
}

static cJSON *
text_or_null(const char *v)
{
    return v ? cJSON_CreateString(v) : cJSON_CreateNull();
}

/* Add items in order; any NULL (out of memory) fails the whole object. */
static bool
add_all(cJSON *o, const char *const *keys, cJSON **vals, size_t n)
{
    bool ok = o != NULL;
    size_t i;

    for (i = 0; i < n; i++) {
        if (ok && vals[i])
            cJSON_AddItemToObject(o, keys[i], vals[i]);
        else {
            ok = false;
            cJSON_Delete(vals[i]);
        }
    }
    return ok;
}

static cJSON *
render_raw(const struct ana_export_row *r, cJSON *prompt)
{
    static const char *const keys[] = {
        "response_id",
        "created_at",
        "platform",
        "user",
        "model",
        "status",
        "prompt",
        "completion",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "llm_ms",
        "label",
        "feedback",
    };
    cJSON *fb = r->feedback ? cJSON_Parse(r->feedback) : cJSON_CreateArray();
    cJSON *vals[] = {
        integer(r->response_id),
        text_or_null(r->created_at),
        text_or_null(r->platform),
        text_or_null(r->user),
        text_or_null(r->model),
        text_or_null(r->status),
        prompt,
        redacted(r->completion),
        text_or_null(r->finish_reason),
        integer(r->prompt_tokens),
        integer(r->completion_tokens),
        integer(r->llm_ms),
        text_or_null(r->label),
        cJSON_IsArray(fb) ? fb : NULL,
    };
    cJSON *o = cJSON_CreateObject();

    if (!cJSON_IsArray(fb))
        cJSON_Delete(fb);
    if (!add_all(o, keys, vals, sizeof(vals) / sizeof(vals[0]))) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

char *
ana_export_render(enum ana_export_format f, const struct ana_export_row *r,
                  char *err, size_t errlen)
{
    bool openai = f == ANA_EXPORT_OPENAI_SFT || f == ANA_EXPORT_OPENAI_DPO;
    cJSON *prompt = prompt_messages(r->prompt, openai, err, errlen);
    cJSON *o = NULL, *input;
    char *line = NULL;
    bool good = r->label && strcmp(r->label, "good") == 0;

    if (!prompt)
        return NULL;
    switch (f) {
    case ANA_EXPORT_SFT:
    case ANA_EXPORT_KTO: {
        const char *keys[5] = { "prompt", "completion" };
        cJSON *vals[5] = { prompt, answer(r->completion, -1) };
        size_t n = 2;

        if (f == ANA_EXPORT_KTO) {
            keys[n] = "label";
            vals[n++] = cJSON_CreateBool(good);
        }
        keys[n] = "response_id";
        vals[n++] = integer(r->response_id);
        keys[n] = "user";
        vals[n++] = text_or_null(r->user);
        o = cJSON_CreateObject();
        if (!add_all(o, keys, vals, n)) {
            cJSON_Delete(o);
            o = NULL;
        }
        break;
    }
    case ANA_EXPORT_DPO: {
        static const char *const keys[] = { "prompt", "chosen", "rejected",
                                            "chosen_response_id",
                                            "rejected_response_id" };
        cJSON *vals[] = { prompt, answer(r->completion, -1),
                          answer(r->rejected, -1), integer(r->response_id),
                          integer(r->rejected_id) };

        o = cJSON_CreateObject();
        if (!add_all(o, keys, vals, 5)) {
            cJSON_Delete(o);
            o = NULL;
        }
        break;
    }
    case ANA_EXPORT_OPENAI_SFT: {
        cJSON *a = message("assistant", r->completion, 1);

        o = cJSON_CreateObject();
        if (!o || !a) {
            cJSON_Delete(a);
            cJSON_Delete(prompt);
            cJSON_Delete(o);
            o = NULL;
            break;
        }
        cJSON_AddItemToArray(prompt, a);
        cJSON_AddItemToObject(o, "messages", prompt);
        break;
    }
    case ANA_EXPORT_OPENAI_DPO: {
        static const char *const keys[] = { "input", "preferred_output",
                                            "non_preferred_output" };
        cJSON *vals[3];

        input = cJSON_CreateObject();
        if (!input) {
            cJSON_Delete(prompt);
            break;
        }
        cJSON_AddItemToObject(input, "messages", prompt);
        vals[0] = input;
        vals[1] = answer(r->completion, -1);
        vals[2] = answer(r->rejected, -1);
        o = cJSON_CreateObject();
        if (!add_all(o, keys, vals, 3)) {
            cJSON_Delete(o);
            o = NULL;
        }
        break;
    }
    case ANA_EXPORT_RAW:
        o = render_raw(r, prompt);
        break;
    }
    if (o)
        line = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!line) {
        seterr(err, errlen, "out of memory");
        errno = ENOMEM;
    }
    return line;
}

char *
ana_export_manifest_line(long line, const struct ana_export_row *r)
{
    cJSON *o = cJSON_CreateObject(), *ids = cJSON_CreateArray();
    cJSON *users = cJSON_CreateArray();
    char *out = NULL;
    bool pair = r->rejected_id != NULL;
    /* Every allocation is checked: a line without its ids would be
     * wrong, not missing (cJSON's adds fail, and return false, on NULL). */
    bool ok = o && ids && users &&
              cJSON_AddItemToArray(ids, integer(r->response_id)) &&
              cJSON_AddItemToArray(users, text_or_null(r->user)) &&
              (!pair ||
               (cJSON_AddItemToArray(ids, integer(r->rejected_id)) &&
                cJSON_AddItemToArray(users, text_or_null(r->rejected_user)))) &&
              cJSON_AddNumberToObject(o, "line", (double)line) != NULL;

    if (ok && cJSON_AddItemToObject(o, "response_ids", ids)) {
        ids = NULL;
        if (cJSON_AddItemToObject(o, "users", users)) {
            users = NULL;
            out = cJSON_PrintUnformatted(o);
        }
    }
    cJSON_Delete(o);
    cJSON_Delete(ids);
    cJSON_Delete(users);
    return out;
}

struct stream {
    enum ana_export_format format;
    FILE *out, *manifest;
    long rows, skipped;
    int fail_errno;
};

/* Write line and a newline, then free line; false (errno set) when the
 * line is NULL (out of memory) or the write fails. */
static bool
put_line(FILE *f, char *line)
{
    bool ok;

    errno = 0;
    if (!line) {
        errno = ENOMEM;
        return false;
    }
    ok = fputs(line, f) != EOF && fputc('\n', f) != EOF;
    cJSON_free(line);
    return ok;
}

static const char *
col(const PGresult *res, int i)
{
    return PQgetisnull(res, 0, i) ? NULL : PQgetvalue(res, 0, i);
}

/* One record: render and write it. Non-zero stops the stream: the output
 * failed, or memory ran out (a row is never dropped for that). */
static int
on_row(void *arg, const PGresult *res)
{
    struct stream *s = arg;
    struct ana_export_row r;
    char why[160];
    char *line;

    if (PQnfields(res) != NCOLS)
        return EINVAL;
    r = (struct ana_export_row){
        .response_id = col(res, 0),
        .created_at = col(res, 1),
        .platform = col(res, 2),
        .user = col(res, 3),
        .model = col(res, 4),
        .status = col(res, 5),
        .prompt = col(res, 6),
        .completion = col(res, 7),
        .finish_reason = col(res, 8),
        .prompt_tokens = col(res, 9),
        .completion_tokens = col(res, 10),
        .llm_ms = col(res, 11),
        .label = col(res, 12),
        .feedback = col(res, 13),
        .rejected_id = col(res, 14),
        .rejected = col(res, 15),
        .rejected_user = col(res, 16),
    };
    line = ana_export_render(s->format, &r, why, sizeof(why));
    if (!line && errno == EINVAL) { /* a refused prompt: counted, not fatal */
        s->skipped++;
        return 0;
    }
    if (!put_line(s->out, line) ||
        (s->manifest &&
         !put_line(s->manifest, ana_export_manifest_line(s->rows + 1, &r)))) {
        s->fail_errno = errno ? errno : EIO;
        return s->fail_errno;
    }
    s->rows++;
    return 0;
}

enum core_status
ana_export(struct core_dbconn *c, const struct ana_export_opts *o, FILE *out,
           FILE *manifest, long *rows, long *skipped, char *err, size_t errlen)
{
    struct stream s = { .format = o->format, .out = out, .manifest = manifest };
    const char *labels = NULL, *statuses = "{sent}";
    const char *params[6];
    char cap[24];
    enum core_status st;
    int stopped = 0;

    switch (o->format) {
    case ANA_EXPORT_SFT:
    case ANA_EXPORT_OPENAI_SFT:
        labels = "{good}";
        break;
    case ANA_EXPORT_KTO:
    case ANA_EXPORT_DPO:
    case ANA_EXPORT_OPENAI_DPO:
        labels = "{good,bad}";
        break;
    case ANA_EXPORT_RAW:
        statuses = "{sending,sent,partial,failed,abandoned}";
        break;
    }
    params[0] = o->since;
    params[1] = o->until;
    params[2] = o->platform;
    params[3] = labels;
    params[4] = statuses;
    params[5] = NULL;
    if (o->max_per_user > 0) {
        snprintf(cap, sizeof(cap), "%ld", o->max_per_user);
        params[5] = cap;
    }
    /* A one-off scan: let the planner choose (the pool's connections
     * price sequential scans out for their keyed statements). */
    st = core_db_exec(c, "SET enable_seqscan = on");
    if (st == CORE_OK)
        st = core_db_stream(c,
                            o->format == ANA_EXPORT_DPO ||
                                    o->format == ANA_EXPORT_OPENAI_DPO
                                ? SQL_PAIRS
                                : SQL_ROWS,
                            6, params, on_row, &s, &stopped);
    *rows = s.rows;
    *skipped = s.skipped;
    if (st != CORE_OK) {
        seterr(err, errlen, c->error);
        return st;
    }
    if (stopped) {
        char why[128] = "error";

        if (s.fail_errno) {
            (void)strerror_r(s.fail_errno, why, sizeof(why));
            snprintf(err, errlen, "%s: %s",
                     s.fail_errno == ENOMEM ? "rendering the export"
                                            : "writing the export",
                     why);
        } else
            seterr(err, errlen, "the export query returned unexpected columns");
        return CORE_ERR_IO;
    }
    return CORE_OK;
}
