/*
 * WhatsApp Cloud API adapter: parses whatsapp_business_account webhooks
 * (messages of every type, statuses, user_preferences) into normalized
 * events, and sends text / reply-button messages and read receipts through
 * POST {graph}/{phone_number_id}/messages. Facts: platforms.md §2.
 */
#include <stdio.h>
#include <string.h>

#include "adapters/meta.h"

#define WA_PLATFORM       "whatsapp"
#define WA_OBJECT         "whatsapp_business_account"
#define WA_CONTACTS_SCAN  8 /* contacts[] entries searched for a BSUID */
#define WA_BUTTON_ID_MAX  256
#define WA_BODY_MAX_CHARS 1024 /* interactive body.text */

#define WA_LIMITS                                                     \
    {                                                                 \
        .max_text = 4096, .unit = ADP_UNIT_CHARS, .max_buttons = 3,   \
        .max_button_title = 20, .max_text_buttons = WA_BODY_MAX_CHARS \
    }

static const struct adp_limits wa_limits = WA_LIMITS;

/* One change's context: the channel and the contacts[] of its value. */
struct wa_ctx {
    struct adp_batch *b;
    const char *channel;
    const cJSON *contacts;
};

/* BSUID for wa_id from contacts[] (the only contact when wa_id is NULL). */
static const char *
wa_contact_bsuid(const cJSON *contacts, const char *wa_id)
{
    const cJSON *c;
    const char *cid;
    int i = 0;

    if (!contacts)
        return NULL;
    if (!wa_id) /* O(1): only when there is exactly one contact */
        return contacts->child && !contacts->child->next
                   ? adp_json_id(contacts->child, "user_id")
                   : NULL;
    cJSON_ArrayForEach(c, contacts)
    {
        if (++i > WA_CONTACTS_SCAN)
            break;
        cid = adp_json_id(c, "wa_id");
        if (cid && strcmp(cid, wa_id) == 0)
            return adp_json_id(c, "user_id");
    }
    return NULL;
}

static void
wa_referral(struct adp_event *ev, const cJSON *m)
{
    const cJSON *r = adp_json_obj(m, "referral");
    struct adp_referral *ref = &ev->referral;

    if (!r)
        return;
    ev->has_referral = true;
    ref->source_type = adp_json_text(r, "source_type");
    ref->source_id = adp_json_text(r, "source_id");
    ref->source_url = adp_json_text(r, "source_url");
    ref->headline = adp_json_text(r, "headline");
    ref->body = adp_json_text(r, "body");
    ref->media_type = adp_json_text(r, "media_type");
    ref->media_url = adp_json_text(r, "image_url");
    if (!ref->media_url)
        ref->media_url = adp_json_text(r, "video_url");
    ref->ctwa_clid = adp_json_text(r, "ctwa_clid");
    if (ref->source_type && strcmp(ref->source_type, "ad") == 0)
        ref->ad_id = ref->source_id;
}

/* errors[0].code / title (failed statuses, unsupported messages). */
static void
wa_errors(struct adp_event *ev, const cJSON *o)
{
    const cJSON *errs = adp_json_arr(o, "errors");
    const cJSON *e = errs ? errs->child : NULL;
    int64_t code;

    if (!cJSON_IsObject(e))
        return;
    if (adp_json_i64(cJSON_GetObjectItemCaseSensitive(e, "code"), &code) &&
        code >= 0 && code <= 0x7fffffff)
        ev->error_code = (int)code;
    ev->error_title = adp_json_text(e, "title");
    if (!ev->error_title)
        ev->error_title = adp_json_text(e, "message");
}

static enum core_status
wa_location(struct adp_batch *b, struct adp_event *ev, const cJSON *loc)
{
    const cJSON *lat = cJSON_GetObjectItemCaseSensitive(loc, "latitude");
    const cJSON *lon = cJSON_GetObjectItemCaseSensitive(loc, "longitude");
    const char *name = adp_json_text(loc, "name");
    const char *addr = adp_json_text(loc, "address");

    ev->msg_type = ADP_MSG_LOCATION;
    if (cJSON_IsNumber(lat) && cJSON_IsNumber(lon))
        ev->text =
            adp_batch_strf(b, "%s%s%s%s(%.6f, %.6f)", name ? name : "",
                           name ? " " : "", addr ? addr : "", addr ? " " : "",
                           lat->valuedouble, lon->valuedouble);
    else if (name || addr)
        ev->text = adp_batch_strf(b, "%s%s%s", name ? name : "",
                                  name && addr ? " " : "", addr ? addr : "");
    else
        return CORE_OK;
    return ev->text ? CORE_OK : CORE_ERR_NOMEM;
}

static void
wa_interactive(struct adp_event *ev, const cJSON *m)
{
    const cJSON *in = adp_json_obj(m, "interactive"), *r;
    const char *itype = adp_json_str(in, "type");

    ev->kind = ADP_EV_UNKNOWN;
    if (!itype)
        return;
    if (strcmp(itype, "button_reply") == 0 ||
        strcmp(itype, "list_reply") == 0) {
        r = adp_json_obj(in, itype);
        ev->payload = adp_json_id(r, "id");
        ev->text = adp_json_str(r, "title");
    } else if (strcmp(itype, "nfm_reply") == 0) {
        r = adp_json_obj(in, itype);
        ev->payload = adp_json_str(r, "response_json");
        ev->text = adp_json_str(r, "body");
    }
    if (ev->payload)
        ev->kind = ADP_EV_INTERACTIVE;
}

/* Kind, msg_type and content of one message by its type. */
static enum core_status
wa_content(struct adp_batch *b, struct adp_event *ev, const cJSON *m,
           const char *type)
{
    static const struct {
        const char *name;
        enum adp_msg_type t;
    } media[] = { { "image", ADP_MSG_IMAGE },
                  { "audio", ADP_MSG_AUDIO },
                  { "video", ADP_MSG_VIDEO },
                  { "document", ADP_MSG_DOCUMENT },
                  { "sticker", ADP_MSG_STICKER } };
    const cJSON *o, *c;
    size_t i;

    for (i = 0; i < sizeof(media) / sizeof(media[0]); i++) {
        if (strcmp(type, media[i].name) != 0)
            continue;
        o = adp_json_obj(m, type);
        ev->msg_type = media[i].t;
        ev->media_id = adp_json_id(o, "id");
        ev->mime_type = adp_json_text(o, "mime_type");
        ev->text = adp_json_text(o, "caption");
        if (!ev->media_id)
            ev->msg_type = ADP_MSG_UNSUPPORTED;
        return CORE_OK;
    }
    if (strcmp(type, "text") == 0) {
        ev->text = adp_json_text(adp_json_obj(m, "text"), "body");
        ev->msg_type = ev->text ? ADP_MSG_TEXT : ADP_MSG_UNSUPPORTED;
    } else if (strcmp(type, "location") == 0) {
        o = adp_json_obj(m, "location");
        if (!o) {
            ev->msg_type = ADP_MSG_UNSUPPORTED;
            return CORE_OK;
        }
        return wa_location(b, ev, o);
    } else if (strcmp(type, "contacts") == 0) {
        o = adp_json_arr(m, "contacts");
        c = o ? o->child : NULL;
        ev->msg_type = ADP_MSG_CONTACTS;
        ev->text = adp_json_text(adp_json_obj(c, "name"), "formatted_name");
    } else if (strcmp(type, "interactive") == 0) {
        wa_interactive(ev, m);
    } else if (strcmp(type, "button") == 0) {
        o = adp_json_obj(m, "button");
        ev->payload = adp_json_str(o, "payload");
        ev->text = adp_json_str(o, "text");
        ev->kind =
            ev->payload || ev->text ? ADP_EV_INTERACTIVE : ADP_EV_UNKNOWN;
    } else if (strcmp(type, "reaction") == 0) {
        o = adp_json_obj(m, "reaction");
        ev->context_id = adp_json_id(o, "message_id");
        ev->emoji = adp_json_text(o, "emoji");
        ev->removed = ev->emoji == NULL;
        ev->kind = ev->context_id ? ADP_EV_REACTION : ADP_EV_UNKNOWN;
    } else if (strcmp(type, "unsupported") == 0 || strcmp(type, "order") == 0) {
        ev->msg_type = ADP_MSG_UNSUPPORTED;
    } else {
        /* system, request_welcome, edit, revoke, future types */
        ev->kind = ADP_EV_UNKNOWN;
    }
    return CORE_OK;
}

static enum core_status
wa_message(struct wa_ctx *c, const cJSON *m)
{
    const char *id = adp_json_id(m, "id");
    const char *type = adp_json_str(m, "type");
    const char *phone = adp_json_id(m, "from");
    const char *user = adp_json_id(m, "from_user_id");
    const char *key;
    struct adp_event *ev;
    enum core_status st;
    size_t idx;

    if (!user)
        user = wa_contact_bsuid(c->contacts, phone);
    if (!user)
        user = phone;
    if (!id || !type || !user)
        return adp_meta_unknown(c->b, WA_PLATFORM, c->channel, user, m, NULL);
    key = adp_meta_key(c->b, "%s", id);
    if (!key)
        return CORE_ERR_NOMEM;
    ev = adp_batch_add(c->b);
    if (!ev)
        return CORE_ERR_NOMEM;
    idx = c->b->n - 1;
    ev->kind = ADP_EV_MESSAGE;
    ev->platform = WA_PLATFORM;
    ev->channel = c->channel;
    ev->user_id = user;
    ev->user_phone = phone;
    ev->event_id = id;
    ev->dedupe_key = key;
    ev->platform_ts_ms =
        adp_meta_ts_ms(cJSON_GetObjectItemCaseSensitive(m, "timestamp"));
    ev->context_id = adp_json_id(adp_json_obj(m, "context"), "id");
    ev->raw = m;
    wa_referral(ev, m);
    wa_errors(ev, m);
    st = wa_content(c->b, ev, m, type);
    if (st != CORE_OK)
        return st;
    return adp_meta_keyword_event(c->b, idx);
}

static enum adp_status
wa_status_of(const char *s)
{
    if (strcmp(s, "sent") == 0)
        return ADP_STATUS_SENT;
    if (strcmp(s, "delivered") == 0)
        return ADP_STATUS_DELIVERED;
    if (strcmp(s, "read") == 0)
        return ADP_STATUS_READ;
    if (strcmp(s, "failed") == 0)
        return ADP_STATUS_FAILED;
    return ADP_STATUS_NONE;
}

static enum core_status
wa_status(struct wa_ctx *c, const cJSON *s)
{
    const char *id = adp_json_id(s, "id");
    const char *status = adp_json_id(s, "status");
    const char *phone = adp_json_id(s, "recipient_id");
    const char *user = adp_json_id(s, "recipient_user_id");
    const char *key;
    struct adp_event *ev;

    if (!user)
        user = phone;
    if (!id || !status)
        return adp_meta_unknown(c->b, WA_PLATFORM, c->channel, user, s, NULL);
    key = adp_meta_key(c->b, "status:%s:%s", id, status);
    if (!key)
        return CORE_ERR_NOMEM;
    if (wa_status_of(status) == ADP_STATUS_NONE) /* played, deleted, ... */
        return adp_meta_unknown(c->b, WA_PLATFORM, c->channel, user, s, key);
    ev = adp_batch_add(c->b);
    if (!ev)
        return CORE_ERR_NOMEM;
    ev->kind = ADP_EV_STATUS;
    ev->platform = WA_PLATFORM;
    ev->channel = c->channel;
    ev->user_id = user;
    ev->user_phone = phone;
    ev->event_id = id;
    ev->context_id = id;
    ev->dedupe_key = key;
    ev->platform_ts_ms =
        adp_meta_ts_ms(cJSON_GetObjectItemCaseSensitive(s, "timestamp"));
    ev->status = wa_status_of(status);
    ev->raw = s;
    wa_errors(ev, s);
    return CORE_OK;
}

static enum core_status
wa_pref(struct wa_ctx *c, const cJSON *p)
{
    const char *phone = adp_json_id(p, "wa_id");
    const char *user = adp_json_id(p, "user_id");
    const char *value = adp_json_str(p, "value");
    const char *cat = adp_json_text(p, "category");
    const char *key;
    struct adp_event *ev;
    enum adp_event_kind kind = ADP_EV_UNKNOWN;
    int64_t ts =
        adp_meta_ts_ms(cJSON_GetObjectItemCaseSensitive(p, "timestamp"));

    if (!user)
        user = wa_contact_bsuid(c->contacts, phone);
    if (!user)
        user = phone;
    if (value && strcmp(value, "stop") == 0)
        kind = ADP_EV_OPT_OUT;
    else if (value && strcmp(value, "resume") == 0)
        kind = ADP_EV_OPT_IN;
    if (!user || kind == ADP_EV_UNKNOWN)
        return adp_meta_unknown(c->b, WA_PLATFORM, c->channel, user, p, NULL);
    key = adp_meta_key(c->b, "pref:%s:%s:%s:%lld", user, cat ? cat : "", value,
                       (long long)ts);
    if (!key)
        return CORE_ERR_NOMEM;
    ev = adp_batch_add(c->b);
    if (!ev)
        return CORE_ERR_NOMEM;
    ev->kind = kind;
    ev->platform = WA_PLATFORM;
    ev->channel = c->channel;
    ev->user_id = user;
    ev->user_phone = phone;
    ev->dedupe_key = key;
    ev->platform_ts_ms = ts;
    ev->payload = cat;
    ev->text = adp_json_text(p, "detail");
    ev->raw = p;
    return CORE_OK;
}

/* Run fn over every element of arr (non-objects become UNKNOWN). */
static enum core_status
wa_each(struct wa_ctx *c, const cJSON *arr,
        enum core_status (*fn)(struct wa_ctx *, const cJSON *))
{
    const cJSON *it;
    enum core_status st;

    cJSON_ArrayForEach(it, arr)
    {
        st = cJSON_IsObject(it) ? fn(c, it)
                                : adp_meta_unknown(c->b, WA_PLATFORM,
                                                   c->channel, NULL, it, NULL);
        if (st != CORE_OK)
            return st;
    }
    return CORE_OK;
}

static enum core_status
wa_change(struct adp_batch *b, const cJSON *ch)
{
    const char *field = adp_json_str(ch, "field");
    const cJSON *value = adp_json_obj(ch, "value");
    const cJSON *msgs, *sts, *prefs;
    struct wa_ctx c;
    enum core_status st;

    c.b = b;
    c.channel = adp_json_id(adp_json_obj(value, "metadata"), "phone_number_id");
    c.contacts = adp_json_arr(value, "contacts");
    if (!field || !c.channel)
        return adp_meta_unknown(b, WA_PLATFORM, c.channel, NULL, ch, NULL);
    if (strcmp(field, "messages") == 0) {
        msgs = adp_json_arr(value, "messages");
        sts = adp_json_arr(value, "statuses");
        if (!msgs && !sts) /* errors[] only, or something new */
            return adp_meta_unknown(b, WA_PLATFORM, c.channel, NULL, ch, NULL);
        st = wa_each(&c, msgs, wa_message);
        if (st != CORE_OK)
            return st;
        return wa_each(&c, sts, wa_status);
    }
    if (strcmp(field, "user_preferences") == 0) {
        prefs = adp_json_arr(value, "user_preferences");
        if (prefs)
            return wa_each(&c, prefs, wa_pref);
    }
    return adp_meta_unknown(b, WA_PLATFORM, c.channel, NULL, ch, NULL);
}

static enum core_status
wa_parse(const char *body, size_t len, struct adp_batch *out)
{
    const cJSON *entries, *e, *changes, *ch;
    enum core_status st;
    size_t first;

    if (!out)
        return CORE_ERR_INVALID;
    first = out->n;
    st = adp_meta_parse_root(body, len, WA_OBJECT, out, &entries);
    if (st != CORE_OK)
        return st;
    cJSON_ArrayForEach(e, entries)
    {
        changes = adp_json_arr(e, "changes");
        if (!changes) {
            st = adp_meta_unknown(out, WA_PLATFORM, NULL, NULL, e, NULL);
            if (st != CORE_OK)
                goto fail;
            continue;
        }
        cJSON_ArrayForEach(ch, changes)
        {
            st = cJSON_IsObject(ch)
                     ? wa_change(out, ch)
                     : adp_meta_unknown(out, WA_PLATFORM, NULL, NULL, ch, NULL);
            if (st != CORE_OK)
                goto fail;
        }
    }
    adp_meta_count_unknown(out, first);
    return CORE_OK;
fail:
    out->n = first;
    cJSON_Delete(out->root);
    out->root = NULL;
    return st;
}

static bool
wa_enabled(const struct core_config *cfg)
{
    return cfg && adp_meta_enabled(cfg, cfg->whatsapp_token);
}

/* to (a phone number: digits) or recipient (a BSUID such as "US.123"). */
static bool
wa_add_recipient(cJSON *body, const char *user_id)
{
    size_t i = user_id[0] == '+' ? 1 : 0;
    bool digits = user_id[i] != '\0';

    for (; user_id[i] && digits; i++)
        digits = user_id[i] >= '0' && user_id[i] <= '9';
    return cJSON_AddStringToObject(body, digits ? "to" : "recipient",
                                   user_id) != NULL;
}

static bool
wa_add_buttons(cJSON *body, const char *text, const struct adp_button *buttons,
               int nbuttons)
{
    cJSON *in, *action, *arr, *btn, *reply, *b;
    char title[4 * 20 + 1];
    size_t n;
    int i;

    in = cJSON_AddObjectToObject(body, "interactive");
    if (!in || !cJSON_AddStringToObject(in, "type", "button"))
        return false;
    b = cJSON_AddObjectToObject(in, "body");
    if (!b || !cJSON_AddStringToObject(b, "text", text))
        return false;
    action = cJSON_AddObjectToObject(in, "action");
    arr = action ? cJSON_AddArrayToObject(action, "buttons") : NULL;
    if (!arr)
        return false;
    for (i = 0; i < nbuttons; i++) {
        n = adp_utf8_prefix(buttons[i].title,
                            (size_t)wa_limits.max_button_title);
        memcpy(title, buttons[i].title, n);
        title[n] = '\0';
        btn = cJSON_CreateObject();
        if (!btn)
            return false;
        if (!cJSON_AddItemToArray(arr, btn)) {
            cJSON_Delete(btn);
            return false;
        }
        if (!cJSON_AddStringToObject(btn, "type", "reply"))
            return false;
        reply = cJSON_AddObjectToObject(btn, "reply");
        if (!reply || !cJSON_AddStringToObject(reply, "id", buttons[i].id) ||
            !cJSON_AddStringToObject(reply, "title", title))
            return false;
    }
    return true;
}

static cJSON *
wa_build_text(const char *user_id, const char *text, const char *reply_to,
              const struct adp_button *buttons, int nbuttons)
{
    cJSON *body = cJSON_CreateObject(), *t, *ctx;
    bool ok;

    ok = body &&
         cJSON_AddStringToObject(body, "messaging_product", "whatsapp") &&
         cJSON_AddStringToObject(body, "recipient_type", "individual") &&
         wa_add_recipient(body, user_id);
    if (ok && nbuttons > 0) {
        ok = cJSON_AddStringToObject(body, "type", "interactive") &&
             wa_add_buttons(body, text, buttons, nbuttons);
    } else if (ok) {
        t = NULL;
        ok = cJSON_AddStringToObject(body, "type", "text") &&
             (t = cJSON_AddObjectToObject(body, "text")) &&
             cJSON_AddStringToObject(t, "body", text) &&
             cJSON_AddFalseToObject(t, "preview_url");
    }
    if (ok && reply_to) {
        ok = (ctx = cJSON_AddObjectToObject(body, "context")) &&
             cJSON_AddStringToObject(ctx, "message_id", reply_to);
    }
    if (!ok) {
        cJSON_Delete(body);
        return NULL;
    }
    return body;
}

static bool
wa_buttons_valid(const struct adp_button *buttons, int nbuttons)
{
    int i;

    if (nbuttons < 0 || nbuttons > wa_limits.max_buttons ||
        (nbuttons > 0 && !buttons))
        return false;
    for (i = 0; i < nbuttons; i++)
        if (!buttons[i].id || !buttons[i].id[0] ||
            strlen(buttons[i].id) > WA_BUTTON_ID_MAX || !buttons[i].title ||
            !buttons[i].title[0])
            return false;
    return true;
}

static enum core_status
/* NOLINTNEXTLINE(readability-function-size): 9 parameters, from adapter.h */
wa_send_text(const struct core_config *cfg, CURL *curl, const char *channel,
             const char *user_id, const char *text, const char *reply_to,
             const struct adp_button *buttons, int nbuttons,
             struct adp_send_result *res)
{
    char url[2400];
    cJSON *body = NULL, *resp = NULL;
    const cJSON *msgs;
    const char *mid;
    enum core_status st;
    size_t chars;

    adp_send_result_init(res);
    if (!wa_enabled(cfg))
        return CORE_ERR_CONFIG;
    if (!adp_meta_path_safe(channel) || !user_id || !user_id[0] ||
        strlen(user_id) > ADP_META_ID_MAX || !text || !text[0] ||
        !wa_buttons_valid(buttons, nbuttons))
        return CORE_ERR_INVALID;
    chars = adp_utf8_count(text);
    if (chars > wa_limits.max_text)
        return CORE_ERR_TOO_LARGE;
    if (nbuttons > 0 && chars > WA_BODY_MAX_CHARS)
        nbuttons = 0; /* interactive body is shorter: send plain text */
    st = adp_meta_url(url, sizeof(url), cfg->graph_api_base, channel);
    if (st != CORE_OK)
        return CORE_ERR_CONFIG;
    body = wa_build_text(user_id, text, reply_to, buttons, nbuttons);
    if (!body) {
        res->cls = ADP_SEND_TRANSIENT;
        return CORE_ERR_NOMEM;
    }
    st = adp_meta_post(curl, url, cfg->whatsapp_token, body, res, &resp);
    if (st == CORE_OK) {
        msgs = adp_json_arr(resp, "messages");
        mid = msgs ? adp_json_id(msgs->child, "id") : NULL;
        snprintf(res->message_id, sizeof(res->message_id), "%s",
                 mid ? mid : "");
    }
    cJSON_Delete(body);
    cJSON_Delete(resp);
    return st;
}

static enum core_status
wa_read_posts(const struct core_config *cfg, const char *channel,
              const char *user_id, const char *message_id, struct adp_post *out,
              int max, int *n)
{
    char url[2400];
    cJSON *body = NULL, *ti;
    enum core_status st;

    (void)user_id;
    *n = 0;
    if (!wa_enabled(cfg))
        return CORE_ERR_CONFIG;
    if (max < 1 || !adp_meta_path_safe(channel) || !message_id ||
        !message_id[0] || strlen(message_id) > ADP_META_ID_MAX)
        return CORE_ERR_INVALID;
    if (adp_meta_url(url, sizeof(url), cfg->graph_api_base, channel) != CORE_OK)
        return CORE_ERR_CONFIG;
    body = cJSON_CreateObject();
    ti = NULL;
    if (!body ||
        !cJSON_AddStringToObject(body, "messaging_product", "whatsapp") ||
        !cJSON_AddStringToObject(body, "status", "read") ||
        !cJSON_AddStringToObject(body, "message_id", message_id) ||
        !(ti = cJSON_AddObjectToObject(body, "typing_indicator")) ||
        !cJSON_AddStringToObject(ti, "type", "text")) {
        st = CORE_ERR_NOMEM;
        goto out;
    }
    st = adp_post_make(&out[0], url, cfg->whatsapp_token, body);
    if (st == CORE_OK)
        *n = 1;
out:
    cJSON_Delete(body);
    return st;
}

const struct adp_adapter adp_whatsapp_adapter = {
    .name = WA_PLATFORM,
    .limits = WA_LIMITS,
    .enabled = wa_enabled,
    .handshake = adp_meta_handshake,
    .authenticate = adp_meta_authenticate,
    .parse = wa_parse,
    .send_text = wa_send_text,
    .read_posts = wa_read_posts,
};
