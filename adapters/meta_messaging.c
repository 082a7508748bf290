/*
 * The Messenger Platform envelope shared by Messenger (object "page") and
 * Instagram messaging (object "instagram"): entry[].messaging[] items ->
 * normalized events, and the Send API body (recipient / message /
 * quick_replies, sender_action). Facts: platforms.md §3, §4, §8.2.
 */
#include <stdio.h>
#include <string.h>

#include "adapters/meta.h"

struct mm_ctx {
    struct adp_batch *b;
    const char *platform;
};

/* The common fields of one messaging[] item. */
struct mm_item {
    const cJSON *it;
    const char *sender;    /* PSID / IGSID (or sender.user_ref) */
    const char *recipient; /* page id / IG account id */
    int64_t ts;
};

static struct adp_event *
mm_event(struct mm_ctx *c, const struct mm_item *m, enum adp_event_kind kind,
         const char *key)
{
    struct adp_event *ev = adp_batch_add(c->b);

    if (!ev)
        return NULL;
    ev->kind = kind;
    ev->platform = c->platform;
    ev->channel = m->recipient;
    ev->user_id = m->sender;
    ev->dedupe_key = key;
    ev->platform_ts_ms = m->ts;
    ev->raw = m->it;
    return ev;
}

static enum core_status
mm_unknown(struct mm_ctx *c, const struct mm_item *m, const char *key)
{
    return adp_meta_unknown(c->b, c->platform, m->recipient, m->sender, m->it,
                            key);
}

static void
mm_referral_fill(struct adp_event *ev, const cJSON *r)
{
    struct adp_referral *ref = &ev->referral;
    const cJSON *acd = adp_json_obj(r, "ads_context_data");

    ev->has_referral = true;
    ref->ref = adp_json_text(r, "ref");
    ref->ad_id = adp_json_text(r, "ad_id");
    ref->source_type = adp_json_text(r, "source");
    ref->type = adp_json_text(r, "type");
    ref->source_url = adp_json_text(r, "source_url");
    ref->headline = adp_json_text(acd, "ad_title");
    ref->source_id = adp_json_text(acd, "post_id");
    ref->media_url = adp_json_text(acd, "photo_url");
    if (ref->media_url) {
        ref->media_type = "image";
    } else {
        ref->media_url = adp_json_text(acd, "video_url");
        if (ref->media_url)
            ref->media_type = "video";
    }
}

static enum adp_msg_type
mm_attachment_type(const char *type, const cJSON *payload)
{
    if (!type)
        return ADP_MSG_UNSUPPORTED;
    if (strcmp(type, "image") == 0)
        return cJSON_GetObjectItemCaseSensitive(payload, "sticker_id")
                   ? ADP_MSG_STICKER
                   : ADP_MSG_IMAGE;
    if (strcmp(type, "video") == 0)
        return ADP_MSG_VIDEO;
    if (strcmp(type, "audio") == 0)
        return ADP_MSG_AUDIO;
    if (strcmp(type, "file") == 0)
        return ADP_MSG_DOCUMENT;
    if (strcmp(type, "sticker") == 0)
        return ADP_MSG_STICKER;
    if (strcmp(type, "location") == 0)
        return ADP_MSG_LOCATION;
    return ADP_MSG_UNSUPPORTED; /* fallback, share, reel, story_mention... */
}

/* msg_type, media and text of a message (first attachment wins). */
static enum core_status
mm_content(struct adp_batch *b, struct adp_event *ev, const cJSON *msg)
{
    const cJSON *atts = adp_json_arr(msg, "attachments");
    const cJSON *a = atts ? atts->child : NULL, *p, *co, *lat, *lon;

    ev->text = adp_json_text(msg, "text");
    if (adp_json_true(msg, "is_unsupported")) {
        ev->msg_type = ADP_MSG_UNSUPPORTED;
        return CORE_OK;
    }
    if (!cJSON_IsObject(a)) {
        ev->msg_type = ev->text ? ADP_MSG_TEXT : ADP_MSG_UNSUPPORTED;
        return CORE_OK;
    }
    p = adp_json_obj(a, "payload");
    ev->msg_type = mm_attachment_type(adp_json_str(a, "type"), p);
    ev->media_id = adp_json_text(p, "url");
    if (!ev->text)
        ev->text = adp_json_text(a, "title");
    if (ev->msg_type != ADP_MSG_LOCATION)
        return CORE_OK;
    co = adp_json_obj(p, "coordinates");
    lat = cJSON_GetObjectItemCaseSensitive(co, "lat");
    lon = cJSON_GetObjectItemCaseSensitive(co, "long");
    if (!ev->text && cJSON_IsNumber(lat) && cJSON_IsNumber(lon)) {
        ev->text = adp_batch_strf(b, "(%.6f, %.6f)", lat->valuedouble,
                                  lon->valuedouble);
        if (!ev->text)
            return CORE_ERR_NOMEM;
    }
    return CORE_OK;
}

static enum core_status
mm_message(struct mm_ctx *c, const struct mm_item *m, const cJSON *msg)
{
    const char *mid = adp_json_id(msg, "mid");
    const char *payload, *key;
    const cJSON *r;
    struct adp_event *ev;
    enum adp_event_kind kind = ADP_EV_MESSAGE;
    bool echo = adp_json_true(msg, "is_echo");
    enum core_status st;
    size_t idx;

    if (!mid)
        return mm_unknown(c, m, NULL);
    if (adp_json_true(msg, "is_deleted")) {
        key = adp_meta_key(c->b, "deleted:%s", mid);
        return key ? mm_unknown(c, m, key) : CORE_ERR_NOMEM;
    }
    payload = adp_json_str(adp_json_obj(msg, "quick_reply"), "payload");
    if (echo)
        kind = ADP_EV_ECHO;
    else if (payload)
        kind = ADP_EV_INTERACTIVE;
    key = adp_meta_key(c->b, "%s", mid);
    if (!key)
        return CORE_ERR_NOMEM;
    ev = mm_event(c, m, kind, key);
    if (!ev)
        return CORE_ERR_NOMEM;
    idx = c->b->n - 1;
    if (echo) { /* sent by the page: the user is the recipient */
        ev->channel = m->sender;
        ev->user_id = m->recipient;
    }
    ev->event_id = mid;
    ev->context_id = adp_json_id(adp_json_obj(msg, "reply_to"), "mid");
    r = adp_json_obj(msg, "referral");
    if (!r)
        r = adp_json_obj(m->it, "referral");
    if (r)
        mm_referral_fill(ev, r);
    if (kind == ADP_EV_INTERACTIVE) {
        ev->payload = payload;
        ev->text = adp_json_text(msg, "text");
        return CORE_OK;
    }
    st = mm_content(c->b, ev, msg);
    if (st != CORE_OK || echo)
        return st;
    return adp_meta_keyword_event(c->b, idx);
}

static enum core_status
mm_postback(struct mm_ctx *c, const struct mm_item *m, const cJSON *pb)
{
    const char *mid = adp_json_id(pb, "mid");
    const char *payload = adp_json_str(pb, "payload");
    const char *title = adp_json_str(pb, "title");
    const cJSON *r = adp_json_obj(pb, "referral");
    const char *key;
    struct adp_event *ev;

    if (!payload && !title)
        return mm_unknown(c, m, NULL);
    if (mid)
        key = adp_meta_key(c->b, "%s", mid);
    else
        key = adp_meta_key(c->b, "postback:%s:%s:%lld:%s", m->recipient,
                           m->sender, (long long)m->ts, payload ? payload : "");
    if (!key)
        return CORE_ERR_NOMEM;
    ev = mm_event(c, m, ADP_EV_INTERACTIVE, key);
    if (!ev)
        return CORE_ERR_NOMEM;
    ev->event_id = mid;
    ev->payload = payload;
    ev->text = title;
    if (r)
        mm_referral_fill(ev, r);
    return CORE_OK;
}

static enum core_status
mm_referral(struct mm_ctx *c, const struct mm_item *m, const cJSON *r)
{
    const char *ref = adp_json_text(r, "ref");
    const char *ad = adp_json_text(r, "ad_id");
    const char *key;
    struct adp_event *ev;

    key = adp_meta_key(c->b, "referral:%s:%s:%lld:%s", m->recipient, m->sender,
                       (long long)m->ts,
                       ref  ? ref
                       : ad ? ad
                            : "");
    if (!key)
        return CORE_ERR_NOMEM;
    ev = mm_event(c, m, ADP_EV_REFERRAL, key);
    if (!ev)
        return CORE_ERR_NOMEM;
    mm_referral_fill(ev, r);
    return CORE_OK;
}

/* Messenger's reaction names as emoji, when the item carries no emoji. */
static const char *
mm_reaction_emoji(const char *name)
{
    static const struct {
        const char *name, *emoji;
    } map[] = {
        { "like", "\xf0\x9f\x91\x8d" },  { "dislike", "\xf0\x9f\x91\x8e" },
        { "love", "\xe2\x9d\xa4" },      { "smile", "\xf0\x9f\x98\x86" },
        { "wow", "\xf0\x9f\x98\xae" },   { "sad", "\xf0\x9f\x98\xa2" },
        { "angry", "\xf0\x9f\x98\xa0" },
    };
    size_t i;

    for (i = 0; name && i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(name, map[i].name) == 0)
            return map[i].emoji;
    return NULL;
}

static enum core_status
mm_reaction(struct mm_ctx *c, const struct mm_item *m, const cJSON *r)
{
    const char *mid = adp_json_id(r, "mid");
    const char *action = adp_json_str(r, "action");
    const char *name = adp_json_text(r, "reaction");
    const char *emoji = adp_json_text(r, "emoji");
    const char *key;
    struct adp_event *ev;
    bool removed;

    if (!mid || !action ||
        (strcmp(action, "react") != 0 && strcmp(action, "unreact") != 0))
        return mm_unknown(c, m, NULL);
    removed = strcmp(action, "unreact") == 0;
    if (!emoji)
        emoji = mm_reaction_emoji(name);
    key =
        adp_meta_key(c->b, "reaction:%s:%s:%s:%s:%lld", mid, m->sender, action,
                     emoji  ? emoji
                     : name ? name
                            : "",
                     (long long)m->ts);
    if (!key)
        return CORE_ERR_NOMEM;
    ev = mm_event(c, m, ADP_EV_REACTION, key);
    if (!ev)
        return CORE_ERR_NOMEM;
    ev->context_id = mid;
    ev->emoji = emoji;
    ev->text = name;
    ev->removed = removed;
    return CORE_OK;
}

static enum core_status
mm_receipt(struct mm_ctx *c, const struct mm_item *m, const cJSON *o,
           enum adp_status status)
{
    const char *kind = status == ADP_STATUS_READ ? "read" : "delivery";
    const cJSON *mids = adp_json_arr(o, "mids");
    const char *mid = adp_json_id(o, "mid"), *key;
    int64_t wm =
        adp_meta_ts_ms(cJSON_GetObjectItemCaseSensitive(o, "watermark"));
    struct adp_event *ev;
    size_t i;

    if (!mid && mids && cJSON_IsString(mids->child)) {
        mid = mids->child->valuestring;
        for (i = 0; mid && mid[i]; i++)
            if (i >= ADP_META_ID_MAX || (unsigned char)mid[i] < 0x20)
                mid = NULL;
        if (mid && !mid[0])
            mid = NULL;
    }
    if (!wm && !mid)
        return mm_unknown(c, m, NULL);
    if (wm)
        key = adp_meta_key(c->b, "%s:%s:%s:%lld", kind, m->recipient, m->sender,
                           (long long)wm);
    else
        key = adp_meta_key(c->b, "%s:%s:%s", kind, mid, m->sender);
    if (!key)
        return CORE_ERR_NOMEM;
    ev = mm_event(c, m, ADP_EV_STATUS, key);
    if (!ev)
        return CORE_ERR_NOMEM;
    ev->status = status;
    ev->watermark_ms = wm;
    ev->context_id = mid;
    return CORE_OK;
}

static enum core_status
mm_optin(struct mm_ctx *c, const struct mm_item *m, const cJSON *o)
{
    const char *status = adp_json_text(o, "notification_messages_status");
    const char *type = adp_json_text(o, "type");
    const char *key;
    struct adp_event *ev;
    enum adp_event_kind kind = ADP_EV_OPT_IN;

    if (status && strcmp(status, "STOP_NOTIFICATIONS") == 0)
        kind = ADP_EV_OPT_OUT;
    key = adp_meta_key(c->b, "optin:%s:%s:%lld:%s", m->recipient, m->sender,
                       (long long)m->ts,
                       status ? status
                       : type ? type
                              : "");
    if (!key)
        return CORE_ERR_NOMEM;
    ev = mm_event(c, m, kind, key);
    if (!ev)
        return CORE_ERR_NOMEM;
    ev->payload = type ? type : adp_json_text(o, "ref");
    return CORE_OK;
}

static enum core_status
mm_item(struct mm_ctx *c, const cJSON *it)
{
    const cJSON *sender = adp_json_obj(it, "sender"), *o;
    struct mm_item m;

    m.it = it;
    m.sender = adp_json_id(sender, "id");
    if (!m.sender)
        m.sender = adp_json_id(sender, "user_ref");
    m.recipient = adp_json_id(adp_json_obj(it, "recipient"), "id");
    m.ts = adp_meta_ts_ms(cJSON_GetObjectItemCaseSensitive(it, "timestamp"));
    if (!m.sender || !m.recipient)
        return mm_unknown(c, &m, NULL);
    if ((o = adp_json_obj(it, "message")))
        return mm_message(c, &m, o);
    if ((o = adp_json_obj(it, "postback")))
        return mm_postback(c, &m, o);
    if ((o = adp_json_obj(it, "reaction")))
        return mm_reaction(c, &m, o);
    if ((o = adp_json_obj(it, "delivery")))
        return mm_receipt(c, &m, o, ADP_STATUS_DELIVERED);
    if ((o = adp_json_obj(it, "read")))
        return mm_receipt(c, &m, o, ADP_STATUS_READ);
    if ((o = adp_json_obj(it, "referral")))
        return mm_referral(c, &m, o);
    if ((o = adp_json_obj(it, "optin")))
        return mm_optin(c, &m, o);
    return mm_unknown(c, &m, NULL); /* message_edit, handover, ... */
}

/* messaging[] items are ours; standby[] (another app owns the thread) and
 * changes[] (comments, mentions) are kept as UNKNOWN. */
static enum core_status
mm_entry(struct mm_ctx *c, const cJSON *e)
{
    const cJSON *lists[3], *it;
    const char *channel = adp_json_id(e, "id");
    enum core_status st;
    int i;

    lists[0] = adp_json_arr(e, "messaging");
    lists[1] = adp_json_arr(e, "standby");
    lists[2] = adp_json_arr(e, "changes");
    if (!lists[0] && !lists[1] && !lists[2])
        return adp_meta_unknown(c->b, c->platform, channel, NULL, e, NULL);
    for (i = 0; i < 3; i++) {
        cJSON_ArrayForEach(it, lists[i])
        {
            if (i == 0 && cJSON_IsObject(it))
                st = mm_item(c, it);
            else
                st = adp_meta_unknown(c->b, c->platform, channel, NULL, it,
                                      NULL);
            if (st != CORE_OK)
                return st;
        }
    }
    return CORE_OK;
}

enum core_status
adp_meta_messaging_parse(const char *body, size_t len, struct adp_batch *out,
                         const char *object, const char *platform)
{
    const cJSON *entries, *e;
    struct mm_ctx c;
    enum core_status st;
    size_t first;

    if (!out)
        return CORE_ERR_INVALID;
    first = out->n;
    st = adp_meta_parse_root(body, len, object, out, &entries);
    if (st != CORE_OK)
        return st;
    c.b = out;
    c.platform = platform;
    cJSON_ArrayForEach(e, entries)
    {
        st = cJSON_IsObject(e)
                 ? mm_entry(&c, e)
                 : adp_meta_unknown(out, platform, NULL, NULL, e, NULL);
        if (st != CORE_OK)
            goto fail;
    }
    adp_meta_count_unknown(out, first);
    return CORE_OK;
fail:
    out->n = first;
    cJSON_Delete(out->root);
    out->root = NULL;
    return st;
}

/* ---- send ---- */

static size_t
mm_text_units(const char *text, enum adp_text_unit unit)
{
    return unit == ADP_UNIT_BYTES ? strlen(text) : adp_utf8_count(text);
}

static bool
mm_add_quick_replies(cJSON *msg, const struct adp_limits *lim,
                     const struct adp_button *buttons, int nbuttons)
{
    cJSON *arr, *q;
    char title[4 * 20 + 1];
    size_t n, max = (size_t)lim->max_button_title;
    int i;

    if (max > 20)
        max = 20;
    arr = cJSON_AddArrayToObject(msg, "quick_replies");
    if (!arr)
        return false;
    for (i = 0; i < nbuttons; i++) {
        n = adp_utf8_prefix(buttons[i].title, max);
        memcpy(title, buttons[i].title, n);
        title[n] = '\0';
        q = cJSON_CreateObject();
        if (!q)
            return false;
        if (!cJSON_AddItemToArray(arr, q)) {
            cJSON_Delete(q);
            return false;
        }
        if (!cJSON_AddStringToObject(q, "content_type", "text") ||
            !cJSON_AddStringToObject(q, "title", title) ||
            !cJSON_AddStringToObject(q, "payload", buttons[i].id))
            return false;
    }
    return true;
}

/* {"recipient": {"id": user_id}}: the start of every Send API body. */
static cJSON *
mm_body_to(const char *user_id)
{
    cJSON *body = cJSON_CreateObject(), *rcpt;

    rcpt = body ? cJSON_AddObjectToObject(body, "recipient") : NULL;
    if (!rcpt || !cJSON_AddStringToObject(rcpt, "id", user_id)) {
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

static cJSON *
mm_action_body(const char *user_id, const char *action)
{
    cJSON *body = mm_body_to(user_id);

    if (body && !cJSON_AddStringToObject(body, "sender_action", action)) {
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

static cJSON *
mm_text_body(const char *user_id, const char *text,
             const struct adp_limits *lim, const struct adp_button *buttons,
             int nbuttons)
{
    cJSON *body = mm_body_to(user_id), *msg = NULL;
    bool ok;

    ok = body && cJSON_AddStringToObject(body, "messaging_type", "RESPONSE") &&
         (msg = cJSON_AddObjectToObject(body, "message")) &&
         cJSON_AddStringToObject(msg, "text", text) &&
         (nbuttons == 0 || mm_add_quick_replies(msg, lim, buttons, nbuttons));
    if (!ok) {
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

static bool
mm_args_valid(const struct adp_limits *lim, const char *user_id,
              const char *text, const struct adp_button *buttons, int nbuttons)
{
    int i;

    if (!user_id || !user_id[0] || strlen(user_id) > ADP_META_ID_MAX || !text ||
        !text[0] || nbuttons < 0 || nbuttons > lim->max_buttons ||
        (nbuttons > 0 && !buttons))
        return false;
    for (i = 0; i < nbuttons; i++)
        if (!buttons[i].id || !buttons[i].id[0] ||
            strlen(buttons[i].id) > 1000 || !buttons[i].title ||
            !buttons[i].title[0])
            return false;
    return true;
}

enum core_status
adp_meta_messaging_send(const struct adp_meta_dest *dest, CURL *curl,
                        const char *user_id, const char *text,
                        const struct adp_button *buttons, int nbuttons,
                        struct adp_send_result *res)
{
    cJSON *body = NULL, *resp = NULL;
    const char *mid;
    enum core_status st;

    adp_send_result_init(res);
    if (!mm_args_valid(dest->limits, user_id, text, buttons, nbuttons))
        return CORE_ERR_INVALID;
    if (mm_text_units(text, dest->limits->unit) > dest->limits->max_text)
        return CORE_ERR_TOO_LARGE;
    body = mm_text_body(user_id, text, dest->limits, buttons, nbuttons);
    if (!body) {
        res->cls = ADP_SEND_TRANSIENT;
        return CORE_ERR_NOMEM;
    }
    st = adp_meta_post(curl, dest->url, dest->token, body, res, &resp);
    if (st == CORE_OK) {
        mid = adp_json_id(resp, "message_id");
        snprintf(res->message_id, sizeof(res->message_id), "%s",
                 mid ? mid : "");
    }
    cJSON_Delete(body);
    cJSON_Delete(resp);
    return st;
}

enum core_status
adp_meta_messaging_read_posts(const char *token, const char *url,
                              const char *user_id, struct adp_post *out,
                              int max, int *n)
{
    static const char *const actions[] = { "mark_seen", "typing_on" };
    enum core_status st = CORE_OK;
    cJSON *body;
    int i;

    *n = 0;
    if (!user_id || !user_id[0] || strlen(user_id) > ADP_META_ID_MAX || max < 2)
        return CORE_ERR_INVALID;
    memset(out, 0, 2 * sizeof(*out));
    for (i = 0; i < 2 && st == CORE_OK; i++) {
        body = mm_action_body(user_id, actions[i]);
        st = body ? adp_post_make(&out[i], url, token, body) : CORE_ERR_NOMEM;
        cJSON_Delete(body);
    }
    if (st != CORE_OK) {
        adp_post_done(&out[0]);
        adp_post_done(&out[1]);
        return st;
    }
    *n = 2;
    return CORE_OK;
}
