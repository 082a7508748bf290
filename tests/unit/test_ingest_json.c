/*
 * Unit tests for gw_ingest_item_json: hand-built normalized events are
 * serialised as parley_ingest items and checked field by field against what
 * the SQL function parley_ingest (migrations/0004_ingest.sql) reads. The
 * column names and types come from the embedded migration itself.
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters/adapter.h"
#include "analytics/feedback.h"
#include "core/buf.h"
#include "gateway/ingest.h"
#include "gateway/migrate.h"

#define THUMBS_UP   "\xF0\x9F\x91\x8D"
#define THUMBS_DOWN "\xF0\x9F\x91\x8E"
#define TONE_DARK   "\xF0\x9F\x8F\xBF"
#define JOY         "\xF0\x9F\x98\x82"

#define TS_MS  1732629600123LL /* 2024-11-26T14:00:00.123Z */
#define PSEUDO "ps_0123456789abcdef"
#define KV     3
#define RID    "req-7f3a"

/* ---- the parley_ingest_item type, read from the embedded migration ---- */

#define MAX_COLS 64

struct item_col {
    char name[32];
    char type[16];
    int resolved; /* filled inside parley_ingest: never sent by C */
};

static struct item_col cols[MAX_COLS];
static int ncols;
static struct ana_feedback_map fbmap;

static int
group_setup(void **state)
{
    const char *sql = NULL, *p;
    int m, resolved = 0;
    (void)state;

    ana_feedback_map_default(&fbmap);
    for (m = 0; m < gw_nmigrations && !sql; m++)
        sql =
            strstr(gw_migrations[m].sql, "CREATE TYPE parley_ingest_item AS (");
    if (!sql)
        return -1;
    p = strchr(sql, '\n') + 1;
    while (*p && strncmp(p, ");", 2) != 0 && ncols < MAX_COLS) {
        const char *nl = strchr(p, '\n');
        char line[256];
        size_t len;

        if (!nl)
            return -1;
        len = (size_t)(nl - p);
        if (len >= sizeof(line))
            return -1;
        memcpy(line, p, len);
        line[len] = '\0';
        p = nl + 1;
        if (strstr(line, "resolved inside parley_ingest"))
            resolved = 1;
        if (sscanf(line, " %31[a-z_] %15[a-z]", cols[ncols].name,
                   cols[ncols].type) == 2) {
            cols[ncols].resolved = resolved;
            ncols++;
        }
    }
    return ncols >= 20 ? 0 : -1;
}

static const struct item_col *
col_find(const char *name)
{
    int i;

    for (i = 0; i < ncols; i++)
        if (strcmp(cols[i].name, name) == 0)
            return &cols[i];
    return NULL;
}

/* Integral and printed without exponent or fraction (bigint/int input). */
static int
json_integral(const cJSON *v)
{
    char *s = cJSON_PrintUnformatted(v);
    size_t i;
    int ok = s != NULL && s[0] != '\0';

    for (i = 0; ok && s[i]; i++)
        ok = (s[i] >= '0' && s[i] <= '9') || (i == 0 && s[i] == '-');
    free(s);
    return ok;
}

/* Every key must be an input column of parley_ingest_item, with a JSON
 * value that column accepts (jsonb_populate_recordset drops unknown keys
 * silently, so a misspelt key would be lost without this). */
static void
check_columns(const cJSON *item)
{
    const cJSON *v;

    cJSON_ArrayForEach(v, item)
    {
        const struct item_col *c = col_find(v->string);

        if (!c)
            fail_msg("key \"%s\" is not a parley_ingest_item column",
                     v->string);
        if (c->resolved)
            fail_msg("key \"%s\" is resolved by SQL, not sent", v->string);
        if (strcmp(c->type, "int") == 0 || strcmp(c->type, "bigint") == 0) {
            if (!cJSON_IsNumber(v) || !json_integral(v))
                fail_msg("%s (%s) is not an integer", v->string, c->type);
            if (c->type[0] == 'i' &&
                (v->valuedouble > INT_MAX || v->valuedouble < INT_MIN))
                fail_msg("%s out of int range", v->string);
        } else if (strcmp(c->type, "text") == 0) {
            if (!cJSON_IsString(v))
                fail_msg("%s (text) is not a string", v->string);
        } else if (strcmp(c->type, "boolean") == 0) {
            if (!cJSON_IsBool(v))
                fail_msg("%s (boolean) is not true/false", v->string);
        } else if (strcmp(c->type, "jsonb") == 0) {
            if (cJSON_IsNull(v))
                fail_msg("%s (jsonb) is null", v->string);
        } else {
            fail_msg("column %s has unexpected type %s", c->name, c->type);
        }
    }
}

/* ---- helpers ------------------------------------------------------------ */

/* Serialise ev and parse it back; the caller frees with cJSON_Delete. */
static cJSON *
item_of(int idx, const struct adp_event *ev, const char *pseudo)
{
    struct core_buf b;
    cJSON *o;

    core_buf_init(&b, 1 << 20);
    assert_int_equal(gw_ingest_item_json(&b, idx, ev, pseudo, KV, RID, &fbmap),
                     CORE_OK);
    assert_non_null(b.data);
    assert_null(strchr(b.data, '\n')); /* one line */
    o = cJSON_Parse(b.data);
    core_buf_done(&b);
    assert_non_null(o);
    assert_true(cJSON_IsObject(o));
    check_columns(o);
    return o;
}

static const char *
str_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    if (!v)
        return NULL;
    if (!cJSON_IsString(v))
        fail_msg("%s is not a string", key);
    return v->valuestring;
}

static void
expect_str(const cJSON *o, const char *key, const char *want)
{
    const char *got = str_of(o, key);

    if (!want) {
        if (got)
            fail_msg("%s should be absent, is \"%s\"", key, got);
        return;
    }
    if (!got)
        fail_msg("%s missing, expected \"%s\"", key, want);
    assert_string_equal(got, want);
}

static double
num_of(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    if (!cJSON_IsNumber(v))
        fail_msg("%s missing or not a number", key);
    return v->valuedouble;
}

static void
expect_absent(const cJSON *o, const char *key)
{
    if (cJSON_GetObjectItemCaseSensitive(o, key))
        fail_msg("%s should be absent", key);
}

static void
expect_queue(const cJSON *o, int want)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "queue");

    assert_true(cJSON_IsBool(q));
    assert_int_equal(cJSON_IsTrue(q) ? 1 : 0, want);
}

static const cJSON *
data_of(const cJSON *o)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "data");

    assert_true(cJSON_IsObject(d));
    return d;
}

/* Fields every item carries. */
static void
expect_common(const cJSON *o, int idx, const char *etype,
              const struct adp_event *ev)
{
    assert_int_equal((int)num_of(o, "i"), idx);
    expect_str(o, "etype", etype);
    expect_str(o, "platform", ev->platform);
    expect_str(o, "channel", ev->channel);
    expect_str(o, "uid", ev->user_id);
    expect_str(o, "eid", ev->event_id);
    expect_str(o, "key", ev->dedupe_key);
    expect_str(o, "ctx", ev->context_id);
    expect_str(o, "rid", RID);
    assert_int_equal((int)num_of(o, "kv"), KV);
    if (ev->user_id)
        expect_str(o, "pseudo", PSEUDO);
    else
        expect_absent(o, "pseudo");
    if (ev->platform_ts_ms > 0)
        assert_true(num_of(o, "ts") == (double)ev->platform_ts_ms);
    else
        expect_absent(o, "ts");
}

static void
base_event(struct adp_event *ev, enum adp_event_kind kind, const char *eid)
{
    memset(ev, 0, sizeof(*ev));
    ev->kind = kind;
    ev->platform = "whatsapp";
    ev->channel = "106540352242922";
    ev->user_id = "16315551234";
    ev->user_phone = "16315551234";
    ev->event_id = eid;
    ev->dedupe_key = eid;
    ev->platform_ts_ms = TS_MS;
}

/* ---- tests -------------------------------------------------------------- */

static void
test_schema_read(void **state)
{
    static const char *const expected[] = {
        "i",     "etype", "platform", "channel", "uid", "pseudo", "kv",
        "eid",   "key",   "ts",       "ctx",     "msg", "body",   "store",
        "queue", "rank",  "wm",       "ecode",   "ref", "data",   "rid",
    };
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
        const struct item_col *c = col_find(expected[i]);

        if (!c || c->resolved)
            fail_msg("parley_ingest_item has no input column %s", expected[i]);
    }
    assert_string_equal(col_find("ts")->type, "bigint");
    assert_string_equal(col_find("queue")->type, "boolean");
    assert_string_equal(col_find("data")->type, "jsonb");
    assert_true(col_find("conv_id")->resolved);
}

static void
test_message(void **state)
{
    struct adp_event ev;
    cJSON *raw = cJSON_Parse("{\"id\":\"wamid.IN1\",\"type\":\"text\","
                             "\"text\":{\"body\":\"Hello \\\"there\\\"\"}}");
    cJSON *o;
    const cJSON *d;
    struct core_buf b;
    (void)state;

    base_event(&ev, ADP_EV_MESSAGE, "wamid.IN1");
    ev.msg_type = ADP_MSG_TEXT;
    ev.text = "Hello \"there\"\n\xC3\xA9";
    ev.raw = raw;
    o = item_of(4, &ev, PSEUDO);
    expect_common(o, 4, "message_received", &ev);
    expect_str(o, "phone", "16315551234");
    expect_str(o, "store", "in");
    expect_str(o, "msg", "text");
    expect_str(o, "body", ev.text);
    expect_queue(o, 1);
    assert_true(
        cJSON_Compare(cJSON_GetObjectItemCaseSensitive(o, "raw"), raw, 1));
    expect_absent(o, "rank");
    expect_absent(o, "wm");
    expect_absent(o, "ecode");
    expect_absent(o, "ref");
    expect_absent(o, "media");
    d = data_of(o);
    expect_str(d, "msg_type", "text");
    expect_absent(d, "raw"); /* messages keep it in messages.raw */
    expect_absent(d, "polarity");
    cJSON_Delete(o);

    /* the timestamp is written as a plain integer (bigint input) */
    core_buf_init(&b, 4096);
    assert_int_equal(gw_ingest_item_json(&b, 0, &ev, PSEUDO, KV, RID, &fbmap),
                     CORE_OK);
    assert_non_null(strstr(b.data, "\"ts\":1732629600123"));
    core_buf_done(&b);

    /* the raw item still belongs to the batch and is intact */
    assert_string_equal(
        cJSON_GetObjectItemCaseSensitive(raw, "id")->valuestring, "wamid.IN1");
    cJSON_Delete(raw);
}

static void
test_message_media(void **state)
{
    struct adp_event ev;
    cJSON *o;
    (void)state;

    base_event(&ev, ADP_EV_MESSAGE, "wamid.IMG");
    ev.msg_type = ADP_MSG_IMAGE;
    ev.text = "my cat";
    ev.media_id = "1234567890";
    ev.mime_type = "image/jpeg";
    ev.context_id = "wamid.OUT0"; /* a reply quoting our message */
    o = item_of(0, &ev, PSEUDO);
    expect_common(o, 0, "message_received", &ev);
    expect_str(o, "msg", "image");
    expect_str(o, "body", "my cat");
    expect_str(o, "media", "1234567890");
    expect_str(o, "store", "in");
    expect_queue(o, 1);
    expect_absent(o, "raw");
    expect_str(data_of(o), "msg_type", "image");
    cJSON_Delete(o);

    /* no user, no timestamp: no pseudonym, no ts */
    base_event(&ev, ADP_EV_MESSAGE, "wamid.ANON");
    ev.user_id = NULL;
    ev.user_phone = NULL;
    ev.platform_ts_ms = 0;
    ev.msg_type = ADP_MSG_LOCATION;
    o = item_of(1, &ev, PSEUDO);
    expect_common(o, 1, "message_received", &ev);
    expect_absent(o, "phone");
    expect_absent(o, "body");
    expect_str(o, "msg", "location");
    cJSON_Delete(o);
}

static void
test_message_with_referral(void **state)
{
    struct adp_event ev;
    cJSON *o;
    const cJSON *r;
    (void)state;

    /* Click-to-WhatsApp: the message carries the attribution in data;
     * the separate referral item (built by the committer) carries "ref",
     * so the message itself must not, or the referral is stored twice. */
    base_event(&ev, ADP_EV_MESSAGE, "wamid.CTWA");
    ev.msg_type = ADP_MSG_TEXT;
    ev.text = "Is this still available?";
    ev.has_referral = true;
    ev.referral.source_type = "ad";
    ev.referral.source_id = "120208";
    ev.referral.source_url = "https://fb.me/abc";
    ev.referral.headline = "Summer sale";
    ev.referral.ctwa_clid = "ARAkLk";
    o = item_of(2, &ev, PSEUDO);
    expect_common(o, 2, "message_received", &ev);
    expect_absent(o, "ref");
    r = cJSON_GetObjectItemCaseSensitive(data_of(o), "referral");
    assert_true(cJSON_IsObject(r));
    expect_str(r, "source_type", "ad");
    expect_str(r, "source_id", "120208");
    expect_str(r, "headline", "Summer sale");
    expect_str(r, "ctwa_clid", "ARAkLk");
    expect_absent(r, "ad_id");
    cJSON_Delete(o);
}

static void
test_status(void **state)
{
    static const struct {
        enum adp_status st;
        const char *etype;
    } ranks[] = {
        { ADP_STATUS_SENT, "sent" },
        { ADP_STATUS_DELIVERED, "delivered" },
        { ADP_STATUS_READ, "read" },
        { ADP_STATUS_FAILED, "failed" },
    };
    struct adp_event ev;
    cJSON *raw = cJSON_Parse("{\"id\":\"wamid.OUT1\",\"status\":\"read\"}");
    cJSON *o;
    const cJSON *d;
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(ranks) / sizeof(ranks[0]); i++) {
        base_event(&ev, ADP_EV_STATUS, "wamid.OUT1");
        ev.dedupe_key = ranks[i].etype;
        ev.context_id = "wamid.OUT1";
        ev.status = ranks[i].st;
        ev.raw = raw;
        o = item_of((int)i, &ev, PSEUDO);
        expect_common(o, (int)i, ranks[i].etype, &ev);
        assert_int_equal((int)num_of(o, "rank"), (int)ranks[i].st);
        assert_int_equal((int)num_of(o, "rank"), (int)i + 1);
        expect_absent(o, "store");
        expect_absent(o, "msg");
        expect_absent(o, "raw");
        expect_absent(o, "wm");
        expect_absent(o, "ecode");
        expect_queue(o, 0);
        d = data_of(o);
        /* not a message: the raw item is kept in the event's data */
        assert_true(
            cJSON_Compare(cJSON_GetObjectItemCaseSensitive(d, "raw"), raw, 1));
        cJSON_Delete(o);
    }

    /* failed with an error */
    base_event(&ev, ADP_EV_STATUS, "wamid.OUT2");
    ev.context_id = "wamid.OUT2";
    ev.status = ADP_STATUS_FAILED;
    ev.error_code = 131047;
    ev.error_title = "Re-engagement message";
    o = item_of(9, &ev, PSEUDO);
    expect_common(o, 9, "failed", &ev);
    assert_int_equal((int)num_of(o, "rank"), 4);
    assert_int_equal((int)num_of(o, "ecode"), 131047);
    d = data_of(o);
    assert_int_equal((int)num_of(d, "error_code"), 131047);
    expect_str(d, "error_title", "Re-engagement message");
    cJSON_Delete(o);

    /* Messenger read watermark: no ctx, wm in ms as an integer */
    base_event(&ev, ADP_EV_STATUS, NULL);
    ev.platform = "messenger";
    ev.channel = "PAGE1";
    ev.user_id = "PSID1";
    ev.user_phone = NULL;
    ev.dedupe_key = "read:PSID1:1732629600000";
    ev.status = ADP_STATUS_READ;
    ev.watermark_ms = 1732629600000LL;
    o = item_of(3, &ev, PSEUDO);
    expect_common(o, 3, "read", &ev);
    assert_int_equal((int)num_of(o, "rank"), 3);
    assert_true(num_of(o, "wm") == 1732629600000.0);
    assert_true(num_of(data_of(o), "watermark_ms") == 1732629600000.0);
    cJSON_Delete(o);
    cJSON_Delete(raw);
}

static void
test_reaction(void **state)
{
    static const struct {
        const char *emoji;
        int polarity;
    } cases[] = {
        { THUMBS_UP, 1 },
        { THUMBS_UP TONE_DARK, 1 },
        { THUMBS_DOWN, -1 },
        { JOY, 0 },
    };
    struct adp_event ev;
    cJSON *o;
    const cJSON *d;
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        base_event(&ev, ADP_EV_REACTION, "wamid.R1");
        ev.context_id = "wamid.OUT1";
        ev.emoji = cases[i].emoji;
        o = item_of(0, &ev, PSEUDO);
        expect_common(o, 0, "reaction_added", &ev);
        expect_absent(o, "store");
        expect_absent(o, "rank");
        expect_queue(o, 0);
        d = data_of(o);
        assert_int_equal((int)num_of(d, "polarity"), cases[i].polarity);
        assert_int_equal((int)num_of(d, "polarity"),
                         ana_feedback_polarity(&fbmap, cases[i].emoji));
        expect_str(d, "emoji", cases[i].emoji);
        cJSON_Delete(o);
    }

    /* removal: no polarity (the SQL retracts the previous reaction) */
    base_event(&ev, ADP_EV_REACTION, "wamid.R2");
    ev.context_id = "wamid.OUT1";
    ev.emoji = "";
    ev.removed = true;
    o = item_of(1, &ev, PSEUDO);
    expect_common(o, 1, "reaction_removed", &ev);
    expect_absent(data_of(o), "polarity");
    cJSON_Delete(o);
}

static void
test_feedback_click(void **state)
{
    struct adp_event ev;
    cJSON *o;
    const cJSON *d;
    const char *payload;
    int64_t rid = 0;
    char part[3][32];
    (void)state;

    base_event(&ev, ADP_EV_INTERACTIVE, "wamid.FB1");
    ev.context_id = "wamid.OUT1";
    ev.payload = "parley_fb:up:12";
    ev.text = THUMBS_UP;
    o = item_of(5, &ev, PSEUDO);
    expect_common(o, 5, "feedback", &ev);
    /* a click on our own buttons is not a message to answer */
    expect_absent(o, "store");
    expect_absent(o, "msg");
    expect_absent(o, "body");
    expect_queue(o, 0);
    d = data_of(o);
    payload = str_of(d, "payload");
    assert_non_null(payload);
    assert_string_equal(payload, "parley_fb:up:12");
    /* what the SQL takes apart with split_part(payload, ':', 2 and 3) */
    assert_int_equal(
        sscanf(payload, "%31[^:]:%31[^:]:%31s", part[0], part[1], part[2]), 3);
    assert_string_equal(part[1], "up");
    assert_string_equal(part[2], "12");
    assert_int_equal(ana_feedback_button_polarity(payload, &rid), 1);
    assert_int_equal(rid, 12);
    cJSON_Delete(o);

    ev.payload = "parley_fb:down:9000000000";
    o = item_of(6, &ev, PSEUDO);
    expect_common(o, 6, "feedback", &ev);
    expect_str(data_of(o), "payload", "parley_fb:down:9000000000");
    cJSON_Delete(o);
}

/*
 * docs/DATA.md: events.data holds "except for messages, the raw item". A
 * feedback click writes no messages row, so its raw item must be in data.
 */
static void
test_feedback_click_keeps_raw(void **state)
{
    struct adp_event ev;
    cJSON *raw = cJSON_Parse("{\"id\":\"wamid.FB2\",\"type\":\"interactive\"}");
    cJSON *o;
    const cJSON *top, *inner;
    int ok;
    (void)state;

    base_event(&ev, ADP_EV_INTERACTIVE, "wamid.FB2");
    ev.context_id = "wamid.OUT1";
    ev.payload = "parley_fb:down:12";
    ev.raw = raw;
    o = item_of(0, &ev, PSEUDO);
    top = cJSON_GetObjectItemCaseSensitive(o, "raw");
    inner = cJSON_GetObjectItemCaseSensitive(data_of(o), "raw");
    ok = cJSON_Compare(top, raw, 1) || cJSON_Compare(inner, raw, 1);
    cJSON_Delete(o);
    cJSON_Delete(raw);
    if (!ok)
        fail_msg("the raw item of a feedback click is stored nowhere");
}

static void
test_button_click(void **state)
{
    struct adp_event ev;
    cJSON *o;
    const cJSON *d;
    (void)state;

    base_event(&ev, ADP_EV_INTERACTIVE, "m_BTN1");
    ev.platform = "messenger";
    ev.payload = "BUY_NOW";
    ev.text = "Buy now";
    o = item_of(0, &ev, PSEUDO);
    expect_common(o, 0, "button_clicked", &ev);
    expect_str(o, "store", "in");
    expect_str(o, "msg", "interactive");
    expect_str(o, "body", "Buy now");
    expect_queue(o, 1);
    d = data_of(o);
    expect_str(d, "payload", "BUY_NOW");
    expect_str(d, "title", "Buy now");
    cJSON_Delete(o);

    /* "parley_fb" without the colon is somebody else's payload */
    ev.payload = "parley_fbx";
    o = item_of(0, &ev, PSEUDO);
    expect_str(o, "etype", "button_clicked");
    cJSON_Delete(o);
}

static void
test_echo(void **state)
{
    struct adp_event ev;
    cJSON *raw = cJSON_Parse("{\"mid\":\"m_ECHO1\",\"is_echo\":true}");
    cJSON *o;
    (void)state;

    base_event(&ev, ADP_EV_ECHO, "m_ECHO1");
    ev.platform = "messenger";
    ev.user_phone = NULL;
    ev.msg_type = ADP_MSG_TEXT;
    ev.text = "Our human agent wrote this";
    ev.raw = raw;
    o = item_of(2, &ev, PSEUDO);
    expect_common(o, 2, "message_echo", &ev);
    expect_str(o, "store", "out");
    expect_str(o, "msg", "text");
    expect_str(o, "body", "Our human agent wrote this");
    expect_queue(o, 0); /* never answer ourselves */
    assert_true(
        cJSON_Compare(cJSON_GetObjectItemCaseSensitive(o, "raw"), raw, 1));
    expect_absent(data_of(o), "raw");
    cJSON_Delete(o);
    cJSON_Delete(raw);
}

static void
test_referral(void **state)
{
    struct adp_event ev;
    cJSON *o;
    const cJSON *r;
    (void)state;

    base_event(&ev, ADP_EV_REFERRAL, NULL);
    ev.platform = "messenger";
    ev.user_phone = NULL;
    ev.dedupe_key = "referral:PSID1:1732629600123";
    ev.has_referral = true;
    ev.referral.source_type = "ADS";
    ev.referral.ad_id = "6045246247433";
    ev.referral.ref = "summer-promo";
    ev.referral.type = "OPEN_THREAD";
    o = item_of(8, &ev, PSEUDO);
    expect_common(o, 8, "referral", &ev);
    expect_absent(o, "store");
    expect_queue(o, 0);
    r = cJSON_GetObjectItemCaseSensitive(o, "ref");
    assert_true(cJSON_IsObject(r));
    expect_str(r, "source_type", "ADS");
    expect_str(r, "ad_id", "6045246247433");
    expect_str(r, "ref", "summer-promo");
    /* absent fields are omitted, not null (x.ref->>'k' is NULL either way) */
    expect_absent(r, "headline");
    expect_absent(r, "ctwa_clid");
    assert_true(cJSON_Compare(
        r, cJSON_GetObjectItemCaseSensitive(data_of(o), "referral"), 1));
    cJSON_Delete(o);
}

static void
test_opt_and_unknown(void **state)
{
    static const struct {
        enum adp_event_kind kind;
        const char *etype;
    } k[] = {
        { ADP_EV_OPT_OUT, "opt_out" },
        { ADP_EV_OPT_IN, "opt_in" },
        { ADP_EV_UNKNOWN, "unknown" },
    };
    struct adp_event ev;
    cJSON *o;
    size_t i;
    (void)state;

    for (i = 0; i < sizeof(k) / sizeof(k[0]); i++) {
        base_event(&ev, k[i].kind, "x1");
        o = item_of((int)i, &ev, PSEUDO);
        expect_common(o, (int)i, k[i].etype, &ev);
        expect_absent(o, "store");
        expect_absent(o, "rank");
        expect_absent(o, "ref");
        expect_queue(o, 0);
        cJSON_Delete(o);
    }
}

static void
test_batch_array_and_limit(void **state)
{
    struct adp_event ev[3];
    struct core_buf b;
    cJSON *a;
    int i;
    (void)state;

    base_event(&ev[0], ADP_EV_MESSAGE, "wamid.A");
    ev[0].msg_type = ADP_MSG_TEXT;
    ev[0].text = "one";
    base_event(&ev[1], ADP_EV_STATUS, "wamid.B");
    ev[1].status = ADP_STATUS_DELIVERED;
    ev[1].context_id = "wamid.OUT";
    base_event(&ev[2], ADP_EV_REACTION, "wamid.C");
    ev[2].emoji = THUMBS_DOWN;
    ev[2].context_id = "wamid.OUT";

    /* items are appended to the buffer: the committer wraps them in [] */
    core_buf_init(&b, 1 << 16);
    assert_int_equal(core_buf_adds(&b, "["), CORE_OK);
    for (i = 0; i < 3; i++) {
        if (i > 0)
            assert_int_equal(core_buf_adds(&b, ","), CORE_OK);
        assert_int_equal(
            gw_ingest_item_json(&b, i, &ev[i], PSEUDO, KV, RID, &fbmap),
            CORE_OK);
    }
    assert_int_equal(core_buf_adds(&b, "]"), CORE_OK);
    a = cJSON_Parse(b.data);
    assert_non_null(a);
    assert_int_equal(cJSON_GetArraySize(a), 3);
    for (i = 0; i < 3; i++) {
        const cJSON *o = cJSON_GetArrayItem(a, i);

        check_columns(o);
        assert_int_equal((int)num_of(o, "i"), i);
    }
    expect_str(cJSON_GetArrayItem(a, 1), "etype", "delivered");
    cJSON_Delete(a);
    core_buf_done(&b);

    /* a buffer at its limit refuses the item and keeps what it had */
    core_buf_init(&b, 40);
    assert_int_equal(core_buf_adds(&b, "["), CORE_OK);
    assert_int_equal(
        gw_ingest_item_json(&b, 0, &ev[0], PSEUDO, KV, RID, &fbmap),
        CORE_ERR_TOO_LARGE);
    assert_string_equal(b.data, "[");
    core_buf_done(&b);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_read),
        cmocka_unit_test(test_message),
        cmocka_unit_test(test_message_media),
        cmocka_unit_test(test_message_with_referral),
        cmocka_unit_test(test_status),
        cmocka_unit_test(test_reaction),
        cmocka_unit_test(test_feedback_click),
        cmocka_unit_test(test_feedback_click_keeps_raw),
        cmocka_unit_test(test_button_click),
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_referral),
        cmocka_unit_test(test_opt_and_unknown),
        cmocka_unit_test(test_batch_array_and_limit),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
