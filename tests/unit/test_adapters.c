/*
 * Unit tests of the WhatsApp, Messenger and Instagram parsers against the
 * hand-written fixtures in tests/fixtures (and their expected.json counts),
 * malformed and hostile bodies, batches and the registry.
 */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
/* clang-format on */

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "adapters/adapter.h"
#include "adapters/meta.h"

static char fixture_dir[PATH_MAX + 64];

/* $PARLEY_FIXTURES_DIR, ./tests/fixtures, or tests/fixtures found walking
 * up from the test binary (build/<variant>/tests/test_adapters). */
static void
find_fixture_dir(const char *argv0)
{
    const char *env = getenv("PARLEY_FIXTURES_DIR");
    char dir[PATH_MAX], cand[PATH_MAX + 64], *slash;
    int up;

    snprintf(fixture_dir, sizeof(fixture_dir), "tests/fixtures");
    if (env) {
        snprintf(fixture_dir, sizeof(fixture_dir), "%s", env);
        return;
    }
    if (access("tests/fixtures/expected.json", R_OK) == 0 ||
        !realpath(argv0, dir))
        return;
    for (up = 0; up < 8; up++) {
        slash = strrchr(dir, '/');
        if (!slash)
            return;
        *slash = '\0';
        snprintf(cand, sizeof(cand), "%s/tests/fixtures/expected.json", dir);
        if (access(cand, R_OK) == 0) {
            snprintf(fixture_dir, sizeof(fixture_dir), "%s/tests/fixtures",
                     dir);
            return;
        }
    }
}

static char *
load_file(const char *rel, size_t *len)
{
    char path[PATH_MAX + 256];
    FILE *f;
    char *buf;
    long n;

    snprintf(path, sizeof(path), "%s/%s", fixture_dir, rel);
    f = fopen(path, "rb");
    if (!f)
        fail_msg("cannot open fixture %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Parse fixture "<platform>/<name>" with that platform's adapter. */
static void
parse_fixture(const char *rel, struct adp_batch *b)
{
    char platform[32];
    const struct adp_adapter *ad;
    const char *slash = strchr(rel, '/');
    size_t len;
    char *body;

    assert_non_null(slash);
    snprintf(platform, sizeof(platform), "%.*s", (int)(slash - rel), rel);
    ad = adp_find(platform);
    assert_non_null(ad);
    body = load_file(rel, &len);
    adp_batch_init(b);
    if (ad->parse(body, len, b) != CORE_OK) {
        free(body);
        fail_msg("parse failed: %s", rel);
    }
    free(body); /* events must not point into the body */
}

static const struct adp_event *
ev_at(const struct adp_batch *b, size_t i)
{
    assert_true(i < b->n);
    return &b->events[i];
}

static void
assert_str(const char *got, const char *want)
{
    if (!want) {
        assert_null(got);
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
}

/* Invariants every parsed batch must satisfy. */
static void
check_invariants(const struct adp_batch *b, const char *platform)
{
    size_t i, j, unknown = 0;
    const struct adp_event *e;

    for (i = 0; i < b->n; i++) {
        e = &b->events[i];
        assert_str(e->platform, platform);
        assert_non_null(e->dedupe_key);
        assert_true(strlen(e->dedupe_key) <= ADP_META_KEY_MAX);
        assert_true(adp_utf8_valid(e->dedupe_key, strlen(e->dedupe_key)));
        assert_non_null(e->raw);
        if (e->kind == ADP_EV_UNKNOWN) {
            unknown++;
            continue;
        }
        assert_non_null(e->channel);
        if (e->kind != ADP_EV_STATUS) /* a WA status may lack a recipient */
            assert_non_null(e->user_id);
        if (e->kind == ADP_EV_MESSAGE && e->msg_type == ADP_MSG_TEXT)
            assert_non_null(e->text);
        if (e->kind == ADP_EV_STATUS)
            assert_true(e->status != ADP_STATUS_NONE);
        for (j = 0; j < i; j++)
            assert_string_not_equal(b->events[j].dedupe_key, e->dedupe_key);
    }
    assert_int_equal(b->unknown, unknown);
}

static void
test_expected_counts(void **state)
{
    static const char *const kinds[] = { "message", "interactive", "reaction",
                                         "status",  "referral",    "opt_out",
                                         "opt_in",  "echo",        "unknown" };
    const cJSON *item, *want;
    struct adp_batch b, b2;
    char platform[32];
    cJSON *exp;
    size_t len, i, k;
    int counts[9], nfix = 0;
    char *txt;

    (void)state;
    txt = load_file("expected.json", &len);
    exp = cJSON_ParseWithLength(txt, len);
    free(txt);
    assert_non_null(exp);
    cJSON_ArrayForEach(item, exp)
    {
        parse_fixture(item->string, &b);
        snprintf(platform, sizeof(platform), "%.*s",
                 (int)(strchr(item->string, '/') - item->string), item->string);
        check_invariants(&b, platform);
        memset(counts, 0, sizeof(counts));
        for (i = 0; i < b.n; i++)
            counts[b.events[i].kind]++;
        for (k = 0; k < 9; k++) {
            want = cJSON_GetObjectItemCaseSensitive(item, kinds[k]);
            if (counts[k] != (want ? want->valueint : 0))
                fail_msg("%s: %s: got %d want %d", item->string, kinds[k],
                         counts[k], want ? want->valueint : 0);
            assert_string_equal(adp_event_kind_str((enum adp_event_kind)k),
                                kinds[k]);
        }
        /* deterministic: a retry of the same body gives the same keys */
        parse_fixture(item->string, &b2);
        assert_int_equal(b.n, b2.n);
        for (i = 0; i < b.n; i++)
            assert_string_equal(b.events[i].dedupe_key,
                                b2.events[i].dedupe_key);
        adp_batch_free(&b);
        adp_batch_free(&b2);
        nfix++;
    }
    assert_true(nfix >= 60);
    cJSON_Delete(exp);
}

/* ---- WhatsApp ---- */

#define WA_CH   "106540352242922"
#define WA_BSU  "US.1234567890123456"
#define WA_FROM "15551234567"

static const struct adp_event *
wa_one(const char *name, struct adp_batch *b, enum adp_event_kind kind)
{
    char rel[128];
    const struct adp_event *e;

    snprintf(rel, sizeof(rel), "whatsapp/%s.json", name);
    parse_fixture(rel, b);
    assert_int_equal(b->n, 1);
    e = ev_at(b, 0);
    assert_int_equal(e->kind, kind);
    assert_str(e->channel, WA_CH);
    return e;
}

static void
test_wa_text(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = wa_one("text", &b, ADP_EV_MESSAGE);
    assert_str(e->user_id, WA_BSU);
    assert_str(e->user_phone, WA_FROM);
    assert_str(e->event_id, "wamid.HBgLFAKE001");
    assert_str(e->dedupe_key, "wamid.HBgLFAKE001");
    assert_int_equal(e->platform_ts_ms, INT64_C(1767225600000));
    assert_int_equal(e->msg_type, ADP_MSG_TEXT);
    assert_str(e->text, "Do you ship to Lisbon?");
    assert_null(e->context_id);
    assert_false(e->has_referral);
    assert_int_equal(b.unknown, 0);
    adp_batch_free(&b);

    e = wa_one("text_phone_only", &b, ADP_EV_MESSAGE);
    assert_str(e->user_id, "15557654321");
    assert_str(e->user_phone, "15557654321");
    adp_batch_free(&b);

    e = wa_one("text_bsuid_only", &b, ADP_EV_MESSAGE);
    assert_str(e->user_id, "US.9876543210987654");
    assert_null(e->user_phone);
    assert_str(e->text, "hi from a username");
    adp_batch_free(&b);

    e = wa_one("text_reply", &b, ADP_EV_MESSAGE);
    assert_str(e->context_id, "wamid.HBgLBOTMSG01");
    adp_batch_free(&b);
}

static void
test_wa_media(void **state)
{
    static const struct {
        const char *name, *id, *mime, *caption;
        enum adp_msg_type t;
    } cases[] = {
        { "image", "1234567890", "image/jpeg", "this one", ADP_MSG_IMAGE },
        { "audio", "1234567891", "audio/ogg; codecs=opus", NULL,
          ADP_MSG_AUDIO },
        { "video", "1234567892", "video/mp4", "unboxing", ADP_MSG_VIDEO },
        { "document", "1234567893", "application/pdf", "my invoice",
          ADP_MSG_DOCUMENT },
        { "sticker", "1234567894", "image/webp", NULL, ADP_MSG_STICKER },
    };
    struct adp_batch b;
    const struct adp_event *e;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        e = wa_one(cases[i].name, &b, ADP_EV_MESSAGE);
        assert_int_equal(e->msg_type, cases[i].t);
        assert_str(e->media_id, cases[i].id);
        assert_str(e->mime_type, cases[i].mime);
        assert_str(e->text, cases[i].caption);
        assert_str(e->user_id, WA_BSU);
        adp_batch_free(&b);
    }
    e = wa_one("location", &b, ADP_EV_MESSAGE);
    assert_int_equal(e->msg_type, ADP_MSG_LOCATION);
    assert_str(e->text, "Shop Rua Augusta 1, Lisboa (38.722300, -9.139300)");
    adp_batch_free(&b);
    e = wa_one("contacts", &b, ADP_EV_MESSAGE);
    assert_int_equal(e->msg_type, ADP_MSG_CONTACTS);
    assert_str(e->text, "Dora Lima");
    adp_batch_free(&b);
    e = wa_one("unsupported", &b, ADP_EV_MESSAGE);
    assert_int_equal(e->msg_type, ADP_MSG_UNSUPPORTED);
    assert_int_equal(e->error_code, 131051);
    assert_str(e->error_title, "Message type unknown");
    adp_batch_free(&b);
}

static void
test_wa_interactive(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = wa_one("interactive_button_reply", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "ship_yes");
    assert_str(e->text, "Yes");
    assert_str(e->context_id, "wamid.HBgLBOTMSG01");
    assert_str(e->dedupe_key, "wamid.HBgLFAKE003");
    adp_batch_free(&b);
    e = wa_one("interactive_list_reply", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "size_m");
    assert_str(e->text, "Medium");
    assert_str(e->context_id, "wamid.HBgLBOTMSG02");
    adp_batch_free(&b);
    e = wa_one("interactive_nfm_reply", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "{\"flow_token\": \"abc\", \"rating\": \"5\"}");
    assert_str(e->text, "Sent");
    adp_batch_free(&b);
    e = wa_one("template_button", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "TRACK_ORDER");
    assert_str(e->text, "Track my order");
    assert_str(e->context_id, "wamid.HBgLBOTTPL01");
    adp_batch_free(&b);
}

static void
test_wa_reaction(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = wa_one("reaction", &b, ADP_EV_REACTION);
    assert_str(e->emoji, "\xf0\x9f\x91\x8d");
    assert_false(e->removed);
    assert_str(e->context_id, "wamid.HBgLBOTMSG01");
    assert_str(e->event_id, "wamid.HBgLFAKE004");
    assert_str(e->dedupe_key, "wamid.HBgLFAKE004");
    adp_batch_free(&b);
    e = wa_one("reaction_removed", &b, ADP_EV_REACTION);
    assert_null(e->emoji);
    assert_true(e->removed);
    assert_str(e->context_id, "wamid.HBgLBOTMSG01");
    adp_batch_free(&b);
}

static void
test_wa_statuses(void **state)
{
    static const struct {
        const char *name, *id, *key;
        enum adp_status st;
        int64_t ts;
    } cases[] = {
        { "status_sent", "wamid.HBgLBOTMSG01", "status:wamid.HBgLBOTMSG01:sent",
          ADP_STATUS_SENT, INT64_C(1767225605000) },
        { "status_delivered", "wamid.HBgLBOTMSG01",
          "status:wamid.HBgLBOTMSG01:delivered", ADP_STATUS_DELIVERED,
          INT64_C(1767225606000) },
        { "status_read", "wamid.HBgLBOTMSG01", "status:wamid.HBgLBOTMSG01:read",
          ADP_STATUS_READ, INT64_C(1767225650000) },
        { "status_failed", "wamid.HBgLBOTMSG02",
          "status:wamid.HBgLBOTMSG02:failed", ADP_STATUS_FAILED,
          INT64_C(1767315700000) },
    };
    struct adp_batch b;
    const struct adp_event *e;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        e = wa_one(cases[i].name, &b, ADP_EV_STATUS);
        assert_int_equal(e->status, cases[i].st);
        assert_str(e->event_id, cases[i].id);
        assert_str(e->context_id, cases[i].id);
        assert_str(e->dedupe_key, cases[i].key);
        assert_int_equal(e->platform_ts_ms, cases[i].ts);
        assert_str(e->user_id, WA_BSU);
        assert_str(e->user_phone, WA_FROM);
        if (cases[i].st == ADP_STATUS_FAILED) {
            assert_int_equal(e->error_code, 131047);
            assert_str(e->error_title, "Re-engagement message");
        } else {
            assert_int_equal(e->error_code, 0);
        }
        adp_batch_free(&b);
    }
    assert_string_equal(adp_status_str(ADP_STATUS_DELIVERED), "delivered");
}

static void
test_wa_referral(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;
    const struct adp_referral *r;

    (void)state;
    e = wa_one("referral_ctwa", &b, ADP_EV_MESSAGE);
    assert_true(e->has_referral);
    r = &e->referral;
    assert_str(r->source_type, "ad");
    assert_str(r->source_id, "120200000000000001");
    assert_str(r->ad_id, "120200000000000001");
    assert_str(r->source_url, "https://fb.me/fakeAd");
    assert_str(r->headline, "Spring sale");
    assert_str(r->body, "20% off");
    assert_str(r->media_type, "image");
    assert_str(r->media_url, "https://scontent.example/fake.jpg");
    assert_str(r->ctwa_clid, "ARAkFAKECLID");
    assert_null(r->ref);
    assert_str(e->text, "Hi, I saw your ad");
    adp_batch_free(&b);
}

static void
test_wa_optout(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = wa_one("user_preferences_stop", &b, ADP_EV_OPT_OUT);
    assert_str(e->user_id, WA_BSU);
    assert_str(e->user_phone, WA_FROM);
    assert_str(e->payload, "marketing_messages");
    assert_int_equal(e->platform_ts_ms, INT64_C(1767225800000));
    assert_str(e->dedupe_key,
               "pref:" WA_BSU ":marketing_messages:stop:1767225800000");
    adp_batch_free(&b);
    e = wa_one("user_preferences_resume", &b, ADP_EV_OPT_IN);
    assert_str(e->user_id, WA_BSU);
    adp_batch_free(&b);

    parse_fixture("whatsapp/stop_keyword.json", &b);
    assert_int_equal(b.n, 2);
    e = ev_at(&b, 0);
    assert_int_equal(e->kind, ADP_EV_MESSAGE);
    assert_str(e->text, "  Stop\n");
    e = ev_at(&b, 1);
    assert_int_equal(e->kind, ADP_EV_OPT_OUT);
    assert_str(e->context_id, "wamid.HBgLFAKE030");
    assert_str(e->dedupe_key, "optout:wamid.HBgLFAKE030");
    assert_str(e->user_id, WA_BSU);
    assert_str(e->channel, WA_CH);
    assert_str(e->payload, "keyword");
    assert_int_equal(e->platform_ts_ms, INT64_C(1767226000000));
    adp_batch_free(&b);

    parse_fixture("whatsapp/start_keyword.json", &b);
    assert_int_equal(b.n, 2);
    assert_int_equal(ev_at(&b, 1)->kind, ADP_EV_OPT_IN);
    assert_str(ev_at(&b, 1)->dedupe_key, "optin:wamid.HBgLFAKE031");
    adp_batch_free(&b);

    e = wa_one("not_a_keyword", &b, ADP_EV_MESSAGE);
    adp_batch_free(&b);
}

static void
test_wa_unknown(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = wa_one("unknown_type", &b, ADP_EV_UNKNOWN);
    assert_str(e->dedupe_key, "wamid.HBgLFAKE020");
    assert_str(e->user_id, WA_BSU);
    assert_int_equal(b.unknown, 1);
    adp_batch_free(&b);

    parse_fixture("whatsapp/unknown_field.json", &b);
    assert_int_equal(b.n, 1);
    e = ev_at(&b, 0);
    assert_int_equal(e->kind, ADP_EV_UNKNOWN);
    assert_null(e->channel);
    assert_true(strncmp(e->dedupe_key, "unknown:", 8) == 0);
    assert_int_equal(strlen(e->dedupe_key), 8 + 64);
    assert_str(cJSON_GetStringValue(cJSON_GetObjectItem(e->raw, "field")),
               "message_template_status_update");
    adp_batch_free(&b);

    e = wa_one("errors_only", &b, ADP_EV_UNKNOWN);
    adp_batch_free(&b);
}

static void
test_wa_batched(void **state)
{
    static const struct {
        enum adp_event_kind kind;
        const char *key, *channel, *user;
    } want[] = {
        { ADP_EV_MESSAGE, "wamid.HBgLBATCH01", WA_CH, WA_BSU },
        { ADP_EV_REACTION, "wamid.HBgLBATCH02", WA_CH, "US.5555555555555555" },
        { ADP_EV_STATUS, "status:wamid.HBgLBOTMSG09:sent", WA_CH,
          "15557654321" },
        { ADP_EV_STATUS, "status:wamid.HBgLBOTMSG09:delivered", WA_CH,
          "15557654321" },
        { ADP_EV_INTERACTIVE, "wamid.HBgLBATCH03", "106540352242999",
          "15550003333" },
        { ADP_EV_MESSAGE, "wamid.HBgLBATCH04", "106540352242999",
          "15550003333" },
        { ADP_EV_OPT_OUT, "optout:wamid.HBgLBATCH04", "106540352242999",
          "15550003333" },
        { ADP_EV_OPT_OUT,
          "pref:15550003333:marketing_messages:stop:1767227004000",
          "106540352242999", "15550003333" },
        { ADP_EV_UNKNOWN, NULL, NULL, NULL },
    };
    struct adp_batch b;
    const struct adp_event *e;
    size_t i;

    (void)state;
    parse_fixture("whatsapp/batched.json", &b);
    assert_int_equal(b.n, sizeof(want) / sizeof(want[0]));
    for (i = 0; i < b.n; i++) {
        e = ev_at(&b, i);
        assert_int_equal(e->kind, want[i].kind);
        if (!want[i].key)
            continue;
        assert_str(e->dedupe_key, want[i].key);
        assert_str(e->channel, want[i].channel);
        assert_str(e->user_id, want[i].user);
    }
    assert_str(ev_at(&b, 1)->emoji, "\xe2\x9d\xa4\xef\xb8\x8f");
    assert_int_equal(b.unknown, 1);
    adp_batch_free(&b);
}

#define NON_ASCII_TEXT                                                      \
    "Ol\xc3\xa1! A\xc3\xa7\xc3\xa3o, caf\xc3\xa9 \xc3\xa9 \xc3\xb3timo "    \
    "\xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd \xe4\xbd\xa0\xe5\xa5\xbd\xef\xbc\x8c" \
    "\xe4\xb8\x96\xe7\x95\x8c"

static void
test_wa_non_ascii(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = wa_one("non_ascii", &b, ADP_EV_MESSAGE);
    assert_str(e->text, NON_ASCII_TEXT);
    adp_batch_free(&b);
    e = wa_one("non_ascii_escaped", &b, ADP_EV_MESSAGE);
    assert_str(e->text, NON_ASCII_TEXT);
    adp_batch_free(&b);
}

/* ---- Messenger ---- */

#define MS_PAGE "104200000000001"
#define MS_USER "2468013579024680"

static const struct adp_event *
ms_one(const char *dir, const char *name, struct adp_batch *b,
       enum adp_event_kind kind)
{
    char rel[128];
    const struct adp_event *e;

    snprintf(rel, sizeof(rel), "%s/%s.json", dir, name);
    parse_fixture(rel, b);
    assert_int_equal(b->n, 1);
    e = ev_at(b, 0);
    assert_int_equal(e->kind, kind);
    return e;
}

static void
test_ms_message(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = ms_one("messenger", "text", &b, ADP_EV_MESSAGE);
    assert_str(e->channel, MS_PAGE);
    assert_str(e->user_id, MS_USER);
    assert_null(e->user_phone);
    assert_str(e->event_id, "m_FAKE001");
    assert_str(e->dedupe_key, "m_FAKE001");
    assert_int_equal(e->platform_ts_ms, INT64_C(1767225600000));
    assert_int_equal(e->msg_type, ADP_MSG_TEXT);
    assert_str(e->text, "hello");
    adp_batch_free(&b);

    e = ms_one("messenger", "reply_to", &b, ADP_EV_MESSAGE);
    assert_str(e->context_id, "m_BOT001");
    adp_batch_free(&b);

    e = ms_one("messenger", "string_timestamp", &b, ADP_EV_MESSAGE);
    assert_int_equal(e->platform_ts_ms, INT64_C(1767225611000));
    adp_batch_free(&b);

    e = ms_one("messenger", "non_ascii", &b, ADP_EV_MESSAGE);
    assert_str(e->text, "Ol\xc3\xa1! A\xc3\xa7\xc3\xa3o, caf\xc3\xa9 "
                        "\xf0\x9f\x91\x8b\xf0\x9f\x8f\xbd \xe4\xbd\xa0\xe5"
                        "\xa5\xbd\xef\xbc\x8c\xe4\xb8\x96\xe7\x95\x8c");
    adp_batch_free(&b);

    parse_fixture("messenger/stop_keyword.json", &b);
    assert_int_equal(b.n, 2);
    assert_int_equal(ev_at(&b, 1)->kind, ADP_EV_OPT_OUT);
    assert_str(ev_at(&b, 1)->dedupe_key, "optout:m_FAKE006");
    assert_str(ev_at(&b, 1)->context_id, "m_FAKE006");
    assert_str(ev_at(&b, 1)->user_id, MS_USER);
    adp_batch_free(&b);
}

static void
test_ms_attachments(void **state)
{
    static const enum adp_msg_type want[] = {
        ADP_MSG_IMAGE,    ADP_MSG_VIDEO,   ADP_MSG_AUDIO,
        ADP_MSG_DOCUMENT, ADP_MSG_STICKER, ADP_MSG_UNSUPPORTED
    };
    struct adp_batch b;
    size_t i;

    (void)state;
    parse_fixture("messenger/attachments.json", &b);
    assert_int_equal(b.n, 6);
    for (i = 0; i < 6; i++) {
        assert_int_equal(ev_at(&b, i)->kind, ADP_EV_MESSAGE);
        assert_int_equal(ev_at(&b, i)->msg_type, want[i]);
        assert_non_null(ev_at(&b, i)->media_id);
    }
    assert_str(ev_at(&b, 0)->media_id, "https://cdn.example/i.jpg");
    assert_null(ev_at(&b, 0)->text);
    assert_str(ev_at(&b, 5)->text, "look https://example.com/p");
    assert_str(adp_msg_type_str(ev_at(&b, 3)->msg_type), "document");
    adp_batch_free(&b);
}

static void
test_ms_interactive(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = ms_one("messenger", "quick_reply", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "TRACK");
    assert_str(e->text, "Track it");
    assert_str(e->dedupe_key, "m_FAKE003");
    adp_batch_free(&b);

    e = ms_one("messenger", "postback", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "TRACK_ORDER");
    assert_str(e->text, "Track order");
    assert_str(e->event_id, "m_FAKE002");
    assert_str(e->dedupe_key, "m_FAKE002");
    assert_false(e->has_referral);
    adp_batch_free(&b);

    e = ms_one("messenger", "postback_referral", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "GET_STARTED");
    assert_true(e->has_referral);
    assert_str(e->referral.ref, "spring_qr");
    assert_str(e->referral.source_type, "SHORTLINK");
    assert_str(e->referral.type, "OPEN_THREAD");
    adp_batch_free(&b);
}

static void
test_ms_referral(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;
    const struct adp_referral *r;

    (void)state;
    e = ms_one("messenger", "referral", &b, ADP_EV_REFERRAL);
    assert_true(e->has_referral);
    r = &e->referral;
    assert_str(r->ref, "spring_campaign");
    assert_str(r->ad_id, "120200000000000002");
    assert_str(r->source_type, "ADS");
    assert_str(r->type, "OPEN_THREAD");
    assert_str(r->headline, "Spring sale");
    assert_str(r->media_url, "https://scontent.example/a.jpg");
    assert_str(r->media_type, "image");
    assert_str(r->source_id, "1234_5678");
    assert_null(e->event_id);
    assert_str(e->dedupe_key, "referral:" MS_PAGE ":" MS_USER
                              ":1767225600000:spring_campaign");
    adp_batch_free(&b);
}

static void
test_ms_receipts(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = ms_one("messenger", "delivery", &b, ADP_EV_STATUS);
    assert_int_equal(e->status, ADP_STATUS_DELIVERED);
    assert_int_equal(e->watermark_ms, INT64_C(1767225601500));
    assert_str(e->context_id, "m_BOT001");
    assert_str(e->user_id, MS_USER);
    assert_str(e->dedupe_key, "delivery:" MS_PAGE ":" MS_USER ":1767225601500");
    adp_batch_free(&b);

    e = ms_one("messenger", "read", &b, ADP_EV_STATUS);
    assert_int_equal(e->status, ADP_STATUS_READ);
    assert_int_equal(e->watermark_ms, INT64_C(1767225601500));
    assert_null(e->context_id);
    assert_str(e->dedupe_key, "read:" MS_PAGE ":" MS_USER ":1767225601500");
    adp_batch_free(&b);
}

static void
test_ms_reaction_echo(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = ms_one("messenger", "reaction", &b, ADP_EV_REACTION);
    assert_str(e->context_id, "m_BOT001");
    assert_str(e->emoji, "\xe2\x9d\xa4");
    assert_str(e->text, "love");
    assert_false(e->removed);
    assert_str(e->dedupe_key, "reaction:m_BOT001:" MS_USER
                              ":react:\xe2\x9d\xa4:1767225604000");
    adp_batch_free(&b);

    e = ms_one("messenger", "unreaction", &b, ADP_EV_REACTION);
    assert_true(e->removed);
    assert_null(e->emoji);
    assert_str(e->context_id, "m_BOT001");
    adp_batch_free(&b);

    e = ms_one("messenger", "echo", &b, ADP_EV_ECHO);
    assert_str(e->channel, MS_PAGE);
    assert_str(e->user_id, MS_USER);
    assert_str(e->event_id, "m_BOT002");
    assert_str(e->text, "Your order ships tomorrow.");
    adp_batch_free(&b);

    e = ms_one("messenger", "optin_stop", &b, ADP_EV_OPT_OUT);
    assert_str(e->payload, "notification_messages");
    adp_batch_free(&b);

    e = ms_one("messenger", "standby", &b, ADP_EV_UNKNOWN);
    assert_str(e->channel, MS_PAGE);
    adp_batch_free(&b);
    e = ms_one("messenger", "message_edit", &b, ADP_EV_UNKNOWN);
    adp_batch_free(&b);
}

static void
test_ms_batched(void **state)
{
    struct adp_batch b;

    (void)state;
    parse_fixture("messenger/batched.json", &b);
    assert_int_equal(b.n, 5);
    assert_int_equal(ev_at(&b, 0)->kind, ADP_EV_MESSAGE);
    assert_int_equal(ev_at(&b, 1)->kind, ADP_EV_STATUS);
    assert_str(ev_at(&b, 1)->context_id, "m_BOT010");
    assert_int_equal(ev_at(&b, 2)->kind, ADP_EV_INTERACTIVE);
    assert_str(ev_at(&b, 2)->channel, "104200000000002");
    assert_str(ev_at(&b, 2)->user_id, "1357924680135792");
    assert_int_equal(ev_at(&b, 3)->kind, ADP_EV_STATUS);
    assert_int_equal(ev_at(&b, 3)->status, ADP_STATUS_READ);
    assert_int_equal(ev_at(&b, 4)->kind, ADP_EV_REACTION);
    assert_str(ev_at(&b, 4)->emoji, "\xf0\x9f\x91\x8d"); /* "like" */
    adp_batch_free(&b);
}

/* ---- Instagram ---- */

#define IG_ACC  "17841400000000001"
#define IG_USER "5432109876543210"

static void
test_ig_events(void **state)
{
    struct adp_batch b;
    const struct adp_event *e;

    (void)state;
    e = ms_one("instagram", "text", &b, ADP_EV_MESSAGE);
    assert_str(e->platform, "instagram");
    assert_str(e->channel, IG_ACC);
    assert_str(e->user_id, IG_USER);
    assert_str(e->dedupe_key, "aWdfZAG1fakeMID001");
    assert_str(e->text, "Is this in stock?");
    assert_int_equal(e->platform_ts_ms, INT64_C(1767225600000));
    adp_batch_free(&b);

    e = ms_one("instagram", "reaction", &b, ADP_EV_REACTION);
    assert_str(e->context_id, "aWdfZAG1BOTMID001");
    assert_str(e->emoji, "\xe2\x9d\xa4\xef\xb8\x8f");
    adp_batch_free(&b);
    e = ms_one("instagram", "unreact", &b, ADP_EV_REACTION);
    assert_true(e->removed);
    adp_batch_free(&b);

    e = ms_one("instagram", "read", &b, ADP_EV_STATUS);
    assert_int_equal(e->status, ADP_STATUS_READ);
    assert_str(e->context_id, "aWdfZAG1BOTMID001");
    assert_int_equal(e->watermark_ms, 0);
    assert_str(e->dedupe_key, "read:aWdfZAG1BOTMID001:" IG_USER);
    adp_batch_free(&b);

    e = ms_one("instagram", "echo", &b, ADP_EV_ECHO);
    assert_str(e->channel, IG_ACC);
    assert_str(e->user_id, IG_USER);
    adp_batch_free(&b);

    e = ms_one("instagram", "image", &b, ADP_EV_MESSAGE);
    assert_int_equal(e->msg_type, ADP_MSG_IMAGE);
    assert_str(e->media_id, "https://lookaside.example/ig_img");
    adp_batch_free(&b);
    e = ms_one("instagram", "story_mention", &b, ADP_EV_MESSAGE);
    assert_int_equal(e->msg_type, ADP_MSG_UNSUPPORTED);
    adp_batch_free(&b);
    e = ms_one("instagram", "story_reply", &b, ADP_EV_MESSAGE);
    assert_null(e->context_id);
    assert_str(e->text, "love this look");
    adp_batch_free(&b);
    e = ms_one("instagram", "reply_to", &b, ADP_EV_MESSAGE);
    assert_str(e->context_id, "aWdfZAG1BOTMID002");
    adp_batch_free(&b);

    e = ms_one("instagram", "ad_referral", &b, ADP_EV_MESSAGE);
    assert_true(e->has_referral);
    assert_str(e->referral.ad_id, "120200000000000003");
    assert_str(e->referral.ref, "jacket_ad");
    assert_str(e->referral.headline, "New jackets");
    adp_batch_free(&b);

    e = ms_one("instagram", "deleted", &b, ADP_EV_UNKNOWN);
    assert_str(e->dedupe_key, "deleted:aWdfZAG1fakeMID001");
    adp_batch_free(&b);
    e = ms_one("instagram", "quick_reply", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "SIZE_M");
    adp_batch_free(&b);
    e = ms_one("instagram", "postback", &b, ADP_EV_INTERACTIVE);
    assert_str(e->payload, "ICEBREAKER_SHIPPING");
    adp_batch_free(&b);
    e = ms_one("instagram", "ig_me_referral", &b, ADP_EV_REFERRAL);
    assert_str(e->referral.ref, "bio_link");
    adp_batch_free(&b);
    e = ms_one("instagram", "comments_change", &b, ADP_EV_UNKNOWN);
    assert_str(e->channel, IG_ACC);
    adp_batch_free(&b);

    parse_fixture("instagram/batched.json", &b);
    assert_int_equal(b.n, 6);
    assert_int_equal(ev_at(&b, 3)->kind, ADP_EV_ECHO);
    assert_str(ev_at(&b, 3)->user_id, "6543210987654321");
    assert_str(ev_at(&b, 3)->channel, "17841400000000002");
    assert_int_equal(ev_at(&b, 5)->kind, ADP_EV_OPT_OUT);
    adp_batch_free(&b);
}

/* ---- malformed and hostile input ---- */

static enum core_status
parse_str(const char *platform, const char *body, size_t len,
          struct adp_batch *b)
{
    adp_batch_init(b);
    return adp_find(platform)->parse(body, len, b);
}

static void
test_malformed(void **state)
{
    static const char *const bad[] = {
        "",
        "{",
        "[]",
        "null",
        "{\"object\":\"whatsapp_business_account\"}",
        "{\"object\":\"whatsapp_business_account\",\"entry\":{}}",
        "{\"object\":\"page\",\"entry\":[]}",
        "{\"object\":5,\"entry\":[]}",
        "{\"object\":\"whatsapp_business_account\",\"entry\":[]} x",
        "{\"object\":\"whatsapp_business_account\",\"entry\":[]}{}",
        "{\"object\":\"whatsapp_business_account\",\"entry\":[\"\\ud800\"]}",
        "{\"object\":\"whatsapp_business_account\",\"entry\":[],}",
    };
    struct adp_batch b;
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(parse_str("whatsapp", bad[i], strlen(bad[i]), &b),
                         CORE_ERR_INVALID);
        assert_int_equal(b.n, 0);
        assert_null(b.root);
        adp_batch_free(&b);
    }
    /* a NUL inside the body, invalid UTF-8, overlong encoding */
    assert_int_equal(
        parse_str("messenger", "{\"object\":\"page\",\"entry\":[]}\0", 30, &b),
        CORE_ERR_INVALID);
    adp_batch_free(&b);
    assert_int_equal(parse_str("messenger",
                               "{\"object\":\"page\",\"entry\":[\"\xff\"]}", 31,
                               &b),
                     CORE_ERR_INVALID);
    adp_batch_free(&b);
    assert_int_equal(parse_str("messenger",
                               "{\"object\":\"page\",\"entry\":[\"\xc0\xaf\"]}",
                               32, &b),
                     CORE_ERR_INVALID);
    adp_batch_free(&b);
    /* the right envelope for another platform */
    assert_int_equal(
        parse_str("instagram", "{\"object\":\"page\",\"entry\":[]}", 28, &b),
        CORE_ERR_INVALID);
    adp_batch_free(&b);
    /* empty entry list: valid, no events */
    assert_int_equal(parse_str("instagram",
                               "{\"object\":\"instagram\",\"entry\":[]}", 33,
                               &b),
                     CORE_OK);
    assert_int_equal(b.n, 0);
    /* one parse per batch */
    assert_int_equal(
        adp_find("instagram")
            ->parse("{\"object\":\"instagram\",\"entry\":[]}", 33, &b),
        CORE_ERR_INVALID);
    adp_batch_free(&b);
}

static void
test_depth_limit(void **state)
{
    char body[512];
    struct adp_batch b;
    int n, i, depth;

    (void)state;
    for (depth = 63; depth <= 65; depth++) {
        /* {"object":"page","entry":[[[...]]]}: depth = 2 + extra */
        n = snprintf(body, sizeof(body), "{\"object\":\"page\",\"entry\":");
        for (i = 0; i < depth - 1; i++)
            body[n++] = '[';
        for (i = 0; i < depth - 1; i++)
            body[n++] = ']';
        body[n++] = '}';
        body[n] = '\0';
        assert_int_equal(parse_str("messenger", body, (size_t)n, &b),
                         depth <= ADP_META_JSON_MAX_DEPTH ? CORE_OK
                                                          : CORE_ERR_INVALID);
        adp_batch_free(&b);
    }
    /* brackets inside strings do not count */
    assert_true(adp_json_prescan("[\"[[[[[[\\\"[[[\"]", 16, 1));
    assert_false(adp_json_prescan("[[", 2, 1));
}

static void
test_hostile_types(void **state)
{
    static const char wa[] =
        "{\"object\":\"whatsapp_business_account\",\"entry\":[1,\"x\",null,"
        "{\"changes\":5},{\"changes\":[7,{\"field\":5},{\"field\":\"messages\"}"
        ","
        "{\"field\":\"messages\",\"value\":{\"metadata\":{\"phone_number_id\":"
        "1}}},"
        "{\"field\":\"messages\",\"value\":{\"metadata\":{\"phone_number_id\":"
        "\"1\"},\"messages\":[1,{\"id\":2,\"type\":\"text\"},{\"id\":\"w\","
        "\"from\":\"1\",\"type\":\"text\",\"text\":{\"body\":5}},{\"id\":"
        "\"w2\","
        "\"from\":\"1\",\"type\":\"image\",\"image\":[]},{\"id\":\"w3\","
        "\"from\":"
        "\"1\",\"type\":\"reaction\",\"reaction\":{\"message_id\":7}},{\"id\":"
        "\"w4\",\"from\":\"1\",\"type\":\"interactive\",\"interactive\":{"
        "\"type\":"
        "\"button_reply\",\"button_reply\":{\"id\":[]}}},{\"id\":\"w5\","
        "\"from\":"
        "\"1\",\"timestamp\":\"99999999999999999999\",\"type\":\"location\","
        "\"location\":{\"latitude\":\"x\"}}],\"statuses\":[{\"id\":\"s\","
        "\"status\":\"played\"},{\"id\":\"s\"},{\"status\":\"read\"}],"
        "\"contacts\":\"x\"}}]}]}";
    static const char ms[] =
        "{\"object\":\"page\",\"entry\":[{\"messaging\":[1,{},{\"sender\":{"
        "\"id\":"
        "1},\"recipient\":{\"id\":\"p\"}},{\"sender\":{\"id\":\"u\"},"
        "\"recipient\":"
        "{\"id\":\"p\"},\"timestamp\":-5,\"message\":{\"mid\":5}},{\"sender\":{"
        "\"id\":\"u\"},\"recipient\":{\"id\":\"p\"},\"message\":{\"mid\":\"m\","
        "\"attachments\":[5]}},{\"sender\":{\"id\":\"u\"},\"recipient\":{"
        "\"id\":"
        "\"p\"},\"delivery\":{\"mids\":[5]}},{\"sender\":{\"id\":\"u\"},"
        "\"recipient\":{\"id\":\"p\"},\"reaction\":{\"mid\":\"m\",\"action\":"
        "\"poke\"}},{\"sender\":{\"id\":\"u\"},\"recipient\":{\"id\":\"p\"},"
        "\"postback\":{}},{\"sender\":{\"id\":\"u\"},\"recipient\":{\"id\":"
        "\"p\"},"
        "\"timestamp\":1e300,\"read\":{\"watermark\":\"abc\"}}],\"standby\":7}]"
        "}";
    struct adp_batch b;
    size_t i;

    (void)state;
    assert_int_equal(parse_str("whatsapp", wa, strlen(wa), &b), CORE_OK);
    check_invariants(&b, "whatsapp");
    assert_true(b.n >= 10);
    for (i = 0; i < b.n; i++)
        if (b.events[i].event_id && strcmp(b.events[i].event_id, "w") == 0)
            assert_int_equal(b.events[i].msg_type, ADP_MSG_UNSUPPORTED);
    adp_batch_free(&b);
    assert_int_equal(parse_str("messenger", ms, strlen(ms), &b), CORE_OK);
    check_invariants(&b, "messenger");
    for (i = 0; i < b.n; i++)
        assert_true(b.events[i].platform_ts_ms >= 0);
    adp_batch_free(&b);
}

static void
test_long_ids_hashed(void **state)
{
    char body[4096], mid[300];
    struct adp_batch b;
    int n;

    (void)state;
    memset(mid, 'a', 250);
    mid[250] = '\0';
    n = snprintf(body, sizeof(body),
                 "{\"object\":\"page\",\"entry\":[{\"messaging\":[{\"sender\":"
                 "{\"id\":\"u\"},\"recipient\":{\"id\":\"p\"},\"timestamp\":1,"
                 "\"reaction\":{\"mid\":\"%s\",\"action\":\"react\","
                 "\"emoji\":\"x\"}},{\"sender\":{\"id\":\"u\"},\"recipient\":"
                 "{\"id\":\"p\"},\"message\":{\"mid\":\"%s%s\",\"text\":\"t\"}}"
                 "]}]}",
                 mid, mid, mid);
    assert_int_equal(parse_str("messenger", body, (size_t)n, &b), CORE_OK);
    assert_int_equal(b.n, 2);
    assert_int_equal(b.events[0].kind, ADP_EV_REACTION);
    assert_true(strncmp(b.events[0].dedupe_key, "reaction:h:", 11) == 0);
    assert_int_equal(strlen(b.events[0].dedupe_key), 11 + 64);
    /* a 500-byte mid is not an id */
    assert_int_equal(b.events[1].kind, ADP_EV_UNKNOWN);
    adp_batch_free(&b);
}

/* ---- batch, names, registry ---- */

static void
test_batch(void **state)
{
    struct adp_batch b;
    struct adp_event *e;
    const char *s;
    int i;

    (void)state;
    adp_batch_init(&b);
    for (i = 0; i < 1000; i++) {
        e = adp_batch_add(&b);
        assert_non_null(e);
        assert_int_equal(e->kind, ADP_EV_MESSAGE);
        assert_null(e->text);
        e->platform_ts_ms = i;
        s = adp_batch_strf(&b, "k%d-%s", i, "x");
        assert_non_null(s);
        e->dedupe_key = s;
    }
    assert_int_equal(b.n, 1000);
    assert_string_equal(b.events[999].dedupe_key, "k999-x");
    assert_int_equal(b.events[500].platform_ts_ms, 500);
    adp_batch_free(&b);
    assert_int_equal(b.n, 0);
    assert_null(b.events);
    adp_batch_free(&b); /* twice is fine */
    adp_batch_free(NULL);
    assert_string_equal(adp_msg_type_str(ADP_MSG_CONTACTS), "contacts");
    assert_string_equal(adp_send_class_str(ADP_SEND_WINDOW_CLOSED),
                        "window_closed");
}

static void
test_registry(void **state)
{
    const struct adp_adapter *const *all;
    const struct adp_adapter *wa, *ms, *ig;
    size_t n;

    (void)state;
    all = adp_all(&n);
    assert_int_equal(n, 3);
    assert_non_null(all);
    wa = adp_find("whatsapp");
    ms = adp_find("messenger");
    ig = adp_find("instagram");
    assert_non_null(wa);
    assert_non_null(ms);
    assert_non_null(ig);
    assert_null(adp_find("telegramx"));
    assert_null(adp_find(NULL));
    assert_int_equal(wa->limits.max_text, 4096);
    assert_int_equal(wa->limits.unit, ADP_UNIT_CHARS);
    assert_int_equal(wa->limits.max_buttons, 3);
    assert_int_equal(wa->limits.max_button_title, 20);
    assert_int_equal(wa->limits.max_text_buttons, 1024);
    assert_int_equal(ms->limits.max_text, 2000);
    assert_int_equal(ms->limits.max_buttons, 13);
    assert_int_equal(ig->limits.max_text, 1000);
    assert_int_equal(ig->limits.unit, ADP_UNIT_BYTES);
    assert_int_equal(ig->limits.max_buttons, 13);
    assert_non_null(wa->read_posts);
    assert_non_null(ms->send_text);
    assert_non_null(ig->handshake);
}

static void
test_enabled(void **state)
{
    struct core_config cfg;
    char secret[] = "s", tok[] = "t", empty[] = "";

    (void)state;
    memset(&cfg, 0, sizeof(cfg));
    assert_false(adp_find("whatsapp")->enabled(&cfg));
    cfg.meta_app_secret = secret;
    assert_false(adp_find("whatsapp")->enabled(&cfg));
    cfg.whatsapp_token = tok;
    assert_true(adp_find("whatsapp")->enabled(&cfg));
    assert_false(adp_find("messenger")->enabled(&cfg));
    cfg.messenger_page_token = empty;
    assert_false(adp_find("messenger")->enabled(&cfg));
    cfg.messenger_page_token = tok;
    cfg.instagram_token = tok;
    assert_true(adp_find("messenger")->enabled(&cfg));
    assert_true(adp_find("instagram")->enabled(&cfg));
    cfg.meta_app_secret = NULL;
    assert_false(adp_find("instagram")->enabled(&cfg));
}

static void
test_keywords(void **state)
{
    (void)state;
    assert_int_equal(adp_meta_keyword("STOP"), ADP_EV_OPT_OUT);
    assert_int_equal(adp_meta_keyword(" stop. "), ADP_EV_OPT_OUT);
    assert_int_equal(adp_meta_keyword("Stop!"), ADP_EV_OPT_OUT);
    assert_int_equal(adp_meta_keyword("stopall"), ADP_EV_OPT_OUT);
    assert_int_equal(adp_meta_keyword("Unsubscribe"), ADP_EV_OPT_OUT);
    assert_int_equal(adp_meta_keyword("\tstart\n"), ADP_EV_OPT_IN);
    assert_int_equal(adp_meta_keyword("UNSTOP"), ADP_EV_OPT_IN);
    assert_int_equal(adp_meta_keyword("stop it"), ADP_EV_MESSAGE);
    assert_int_equal(adp_meta_keyword("don't stop"), ADP_EV_MESSAGE);
    assert_int_equal(adp_meta_keyword("cancel"), ADP_EV_MESSAGE);
    assert_int_equal(adp_meta_keyword(""), ADP_EV_MESSAGE);
    assert_int_equal(adp_meta_keyword("   "), ADP_EV_MESSAGE);
    assert_int_equal(adp_meta_keyword(NULL), ADP_EV_MESSAGE);
    assert_int_equal(adp_meta_keyword("s\xc3\xa9top"), ADP_EV_MESSAGE);
}

int
main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expected_counts),
        cmocka_unit_test(test_wa_text),
        cmocka_unit_test(test_wa_media),
        cmocka_unit_test(test_wa_interactive),
        cmocka_unit_test(test_wa_reaction),
        cmocka_unit_test(test_wa_statuses),
        cmocka_unit_test(test_wa_referral),
        cmocka_unit_test(test_wa_optout),
        cmocka_unit_test(test_wa_unknown),
        cmocka_unit_test(test_wa_batched),
        cmocka_unit_test(test_wa_non_ascii),
        cmocka_unit_test(test_ms_message),
        cmocka_unit_test(test_ms_attachments),
        cmocka_unit_test(test_ms_interactive),
        cmocka_unit_test(test_ms_referral),
        cmocka_unit_test(test_ms_receipts),
        cmocka_unit_test(test_ms_reaction_echo),
        cmocka_unit_test(test_ms_batched),
        cmocka_unit_test(test_ig_events),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_hostile_types),
        cmocka_unit_test(test_long_ids_hashed),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_enabled),
        cmocka_unit_test(test_keywords),
    };

    (void)argc;
    find_fixture_dir(argv[0]);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
