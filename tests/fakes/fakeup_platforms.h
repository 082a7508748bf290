/*
 * fakeup_platforms.h: the fake chat-platform APIs: Meta Graph send
 * (WhatsApp Cloud, Messenger, Instagram), Telegram Bot API, Slack Web API,
 * and the signed-webhook sink used to measure loadgen. Private part of
 * fakeup.c, included once by it, like fakeup_llm.h.
 */
#ifndef FAKEUP_PLATFORMS_H
#define FAKEUP_PLATFORMS_H

/* ------------------------------------------------------------------ */
/* the fake Meta Graph API (WhatsApp Cloud, Messenger, Instagram send) */

static const char *
graph_default_message(long code)
{
    switch (code) {
    case 1:
        return "An unknown error occurred";
    case 2:
        return "Service temporarily unavailable";
    case 4:
        return "(#4) Application request limit reached";
    case 10:
        return "(#10) This message is sent outside of allowed window.";
    case 100:
        return "(#100) Invalid parameter";
    case 190:
        return "Invalid OAuth access token - Cannot parse access token";
    case 551:
        return "(#551) This person isn't available right now.";
    case 613:
        return "(#613) Calls to this api have exceeded the rate limit.";
    case 130429:
        return "(#130429) Rate limit hit";
    case 131026:
        return "(#131026) Message undeliverable";
    case 131047:
        return "(#131047) Re-engagement message";
    case 131048:
        return "(#131048) Spam rate limit hit";
    case 131056:
        return "(#131056) (Business Account, Consumer Account) pair "
               "rate limit hit";
    default:
        return "(#fake) Fake Graph API error";
    }
}

/* The Graph error body of platforms.md §1.5. */
static void
graph_error(struct fk_out *o, unsigned int http, long code, long subcode,
            const char *message, const char *details, const char *type)
{
    cJSON *root = cJSON_CreateObject(),
          *e = cJSON_AddObjectToObject(root, "error");
    cJSON *data;
    char trace[48];

    cJSON_AddStringToObject(e, "message",
                            message ? message : graph_default_message(code));
    cJSON_AddStringToObject(e, "type", type ? type : "OAuthException");
    cJSON_AddNumberToObject(e, "code", (double)code);
    if (subcode)
        cJSON_AddNumberToObject(e, "error_subcode", (double)subcode);
    if (code >= 130000 || details) {
        data = cJSON_AddObjectToObject(e, "error_data");
        cJSON_AddStringToObject(data, "messaging_product", "whatsapp");
        cJSON_AddStringToObject(
            data, "details", details ? details : graph_default_message(code));
    }
    snprintf(trace, sizeof(trace), "AfakeTrace%llu", fk_next_id());
    cJSON_AddStringToObject(e, "fbtrace_id", trace);
    fk_out_json(o, http, root);
}

/* WhatsApp Cloud API: /{phone-number-id}/messages with messaging_product. */
static void
graph_whatsapp(const cJSON *req, struct fk_out *o)
{
    const char *to = fk_jstr(req, "to"), *type = fk_jstr(req, "type");
    const char *status = fk_jstr(req, "status"), *body;
    cJSON *r, *arr, *it;
    char id[64];

    if (!fk_jstr(req, "messaging_product") ||
        strcmp(fk_jstr(req, "messaging_product"), "whatsapp") != 0) {
        graph_error(o, 400, 100, 0,
                    "(#100) The parameter messaging_product is "
                    "required.",
                    NULL, NULL);
        return;
    }
    if (status && strcmp(status, "read") == 0) {
        if (!fk_jstr(req, "message_id")) {
            graph_error(o, 400, 100, 0,
                        "(#100) The parameter message_id is "
                        "required.",
                        NULL, NULL);
            return;
        }
        r = cJSON_CreateObject();
        cJSON_AddTrueToObject(r, "success");
        fk_out_json(o, 200, r);
        return;
    }
    if (!to)
        to = fk_jstr(req, "recipient");
    if (!to || !to[0]) {
        graph_error(o, 400, 100, 0, "(#100) The parameter to is required.",
                    NULL, NULL);
        return;
    }
    if (!type || strcmp(type, "text") == 0) {
        body = fk_jstr(cJSON_GetObjectItemCaseSensitive(req, "text"), "body");
        if (!body || !body[0]) {
            graph_error(o, 400, 100, 0,
                        "(#100) The parameter text['body'] is "
                        "required.",
                        NULL, NULL);
            return;
        }
        if (fk_utf8_chars(body) > 4096) {
            graph_error(o, 400, 100, 0,
                        "(#100) Param text['body'] must be at "
                        "most 4096 characters long.",
                        NULL, NULL);
            return;
        }
    }
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "messaging_product", "whatsapp");
    arr = cJSON_AddArrayToObject(r, "contacts");
    it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "input", to);
    cJSON_AddStringToObject(it, "wa_id", to);
    cJSON_AddItemToArray(arr, it);
    arr = cJSON_AddArrayToObject(r, "messages");
    it = cJSON_CreateObject();
    snprintf(id, sizeof(id), "wamid.FAKE%llu", fk_next_id());
    cJSON_AddStringToObject(it, "id", id);
    cJSON_AddItemToArray(arr, it);
    fk_out_json(o, 200, r);
}

static bool
graph_is_instagram(const struct fk_conf *cf, const char *id)
{
    const cJSON *v;

    cJSON_ArrayForEach(
        v, cf->graph_instagram_ids) if (cJSON_IsString(v) &&
                                        strcmp(v->valuestring, id) ==
                                            0) return true;
    return false;
}

/* Messenger / Instagram Send API: {"recipient":{"id":...}, ...}. */
static void
graph_messenger(const cJSON *req, bool instagram, struct fk_out *o)
{
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(req, "message");
    const char *rid =
        fk_jstr(cJSON_GetObjectItemCaseSensitive(req, "recipient"), "id");
    const char *text;
    cJSON *r;
    char id[64];

    if (!rid || !rid[0]) {
        graph_error(o, 400, 100, 0, "(#100) param recipient must be non-empty.",
                    NULL, NULL);
        return;
    }
    r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "recipient_id", rid);
    if (fk_jstr(req, "sender_action")) {
        fk_out_json(o, 200, r);
        return;
    }
    if (!cJSON_IsObject(msg)) {
        cJSON_Delete(r);
        graph_error(o, 400, 100, 0, "(#100) Must send either message or state",
                    NULL, NULL);
        return;
    }
    text = fk_jstr(msg, "text");
    if (text &&
        (instagram ? strlen(text) > 1000 : fk_utf8_chars(text) > 2000)) {
        cJSON_Delete(r);
        graph_error(
            o, 400, 100, 0,
            instagram
                ? "(#100) Length of param message[text] must be less than "
                  "or equal to 1000 bytes"
                : "(#100) Length of param message[text] must be less than "
                  "or equal to 2000",
            NULL, NULL);
        return;
    }
    snprintf(id, sizeof(id), instagram ? "aWdfFAKE%llu" : "m_FAKE%llu",
             fk_next_id());
    cJSON_AddStringToObject(r, "message_id", id);
    fk_out_json(o, 200, r);
}

static void
graph_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    const char *auth, *token = NULL, *slash, *idp;
    char id[128];
    long http, code;

    if (strcmp(c->method, "POST") != 0) {
        graph_error(o, 400, 100, 0,
                    "Unsupported get request. Only POST is "
                    "faked on /messages",
                    NULL, "GraphMethodException");
        return;
    }
    fk_out_take_fault(o, fk_fault_pop(FK_GRAPH));
    auth =
        MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
        token = auth + 7;
    if (!token)
        token = MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND,
                                            "access_token");
    if (!token || !token[0]) {
        graph_error(o, 401, 190, 0,
                    "An active access token must be used to "
                    "query information about the current user.",
                    NULL, NULL);
        return;
    }
    if (cf->graph_token && strcmp(token, cf->graph_token) != 0) {
        graph_error(o, 401, 190, 0, NULL, NULL, NULL);
        return;
    }
    http = fk_jlong(o->fault, "http", 0);
    code = fk_jlong(o->fault, "code", 0);
    if (http || code) {
        if (!http)
            http = 400;
        if (!code)
            code = http >= 500 ? 1 : 100;
        if (!fk_out_fault_body(o, o->fault, (unsigned int)http))
            graph_error(
                o, (unsigned int)http, code, fk_jlong(o->fault, "subcode", 0),
                fk_jstr(o->fault, "message"), fk_jstr(o->fault, "details"),
                fk_jstr(o->fault, "type"));
        return;
    }
    if (fk_jbool(o->fault, "malformed")) {
        fk_out_malformed(o, "{\"messaging_product\":\"whatsapp\",\"messa");
        return;
    }
    if (!cJSON_IsObject(c->json)) {
        graph_error(o, 400, 100, 0,
                    "(#100) The request body must be a JSON "
                    "object",
                    NULL, NULL);
        return;
    }
    /* path: /vNN.N/{id}/messages */
    idp = strchr(c->path + 1, '/');
    idp = idp ? idp + 1 : "";
    slash = strchr(idp, '/');
    snprintf(id, sizeof(id), "%.*s", slash ? (int)(slash - idp) : 0, idp);
    if (cJSON_GetObjectItemCaseSensitive(c->json, "messaging_product"))
        graph_whatsapp(c->json, o);
    else
        graph_messenger(c->json, graph_is_instagram(cf, id), o);
}

/* ------------------------------------------------------------------ */
/* the fake Telegram Bot API */

static void
tg_error(struct fk_out *o, long code, const char *description,
         const cJSON *fault)
{
    cJSON *r = cJSON_CreateObject(), *p = NULL;
    char desc[160];
    long ra = fk_jlong(fault, "retry_after", -1);
    long mig = fk_jlong(fault, "migrate_to_chat_id", 0);

    if (!description) {
        switch (code) {
        case 429:
            snprintf(desc, sizeof(desc), "Too Many Requests: retry after %ld",
                     ra < 0 ? 1 : ra);
            if (ra < 0)
                ra = 1;
            break;
        case 403:
            snprintf(desc, sizeof(desc),
                     "Forbidden: bot was blocked by the user");
            break;
        case 401:
            snprintf(desc, sizeof(desc), "Unauthorized");
            break;
        case 400:
            snprintf(desc, sizeof(desc),
                     mig ? "Bad Request: group chat was "
                           "upgraded to a supergroup chat"
                         : "Bad Request: chat not found");
            break;
        default:
            snprintf(desc, sizeof(desc), "Internal Server Error");
        }
        description = desc;
    }
    cJSON_AddFalseToObject(r, "ok");
    cJSON_AddNumberToObject(r, "error_code", (double)code);
    cJSON_AddStringToObject(r, "description", description);
    if (ra >= 0 || mig) {
        p = cJSON_AddObjectToObject(r, "parameters");
        if (ra >= 0)
            cJSON_AddNumberToObject(p, "retry_after", (double)ra);
        if (mig)
            cJSON_AddNumberToObject(p, "migrate_to_chat_id", (double)mig);
    }
    fk_out_json(o, (unsigned int)code, r);
}

static cJSON *
tg_message(const cJSON *req)
{
    cJSON *m = cJSON_CreateObject(), *from, *chat;
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(req, "chat_id");
    long long now_s;

    cJSON_AddNumberToObject(m, "message_id", (double)fk_next_id());
    from = cJSON_AddObjectToObject(m, "from");
    cJSON_AddNumberToObject(from, "id", 1000001);
    cJSON_AddTrueToObject(from, "is_bot");
    cJSON_AddStringToObject(from, "first_name", "FakeBot");
    cJSON_AddStringToObject(from, "username", "fake_bot");
    chat = cJSON_AddObjectToObject(m, "chat");
    cJSON_AddItemToObject(
        chat, "id", cid ? cJSON_Duplicate(cid, 1) : cJSON_CreateNumber(0));
    cJSON_AddStringToObject(chat, "type", "private");
    now_s = fk_wall_ms() / 1000;
    cJSON_AddNumberToObject(m, "date", (double)now_s);
    if (fk_jstr(req, "text"))
        cJSON_AddStringToObject(m, "text", fk_jstr(req, "text"));
    return m;
}

static void
tg_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    const char *tok = c->path + 4, *slash = strchr(tok, '/');
    const char *method = slash ? slash + 1 : "", *text;
    cJSON *r;
    long code;

    fk_out_take_fault(o, fk_fault_pop(FK_TELEGRAM));
    if (!slash || slash == tok ||
        (cf->telegram_token &&
         (strlen(cf->telegram_token) != (size_t)(slash - tok) ||
          memcmp(cf->telegram_token, tok, (size_t)(slash - tok)) != 0))) {
        tg_error(o, 401, NULL, NULL);
        return;
    }
    code = fk_jlong(o->fault, "error_code", 0);
    if (code) {
        if (!fk_out_fault_body(o, o->fault, (unsigned int)code))
            tg_error(o, code, fk_jstr(o->fault, "description"), o->fault);
        return;
    }
    if (fk_jbool(o->fault, "malformed")) {
        fk_out_malformed(o, "{\"ok\":true,\"result\":{\"message_id\":");
        return;
    }
    if (c->body_len && !cJSON_IsObject(c->json)) {
        tg_error(o, 400, "Bad Request: can't parse JSON body", NULL);
        return;
    }
    r = cJSON_CreateObject();
    cJSON_AddTrueToObject(r, "ok");
    if (strcmp(method, "sendMessage") == 0 ||
        strcmp(method, "editMessageText") == 0) {
        text = fk_jstr(c->json, "text");
        if (!cJSON_GetObjectItemCaseSensitive(c->json, "chat_id")) {
            cJSON_Delete(r);
            tg_error(o, 400, "Bad Request: chat_id is empty", NULL);
            return;
        }
        if (!text || !text[0] || fk_utf8_chars(text) > 4096) {
            cJSON_Delete(r);
            tg_error(o, 400,
                     text && text[0] ? "Bad Request: message is too long"
                                     : "Bad Request: message text is empty",
                     NULL);
            return;
        }
        cJSON_AddItemToObject(r, "result", tg_message(c->json));
    } else if (strcmp(method, "getMe") == 0) {
        cJSON_AddItemToObject(
            r, "result",
            cJSON_Parse(
                "{\"id\":1000001,\"is_bot\":true,\"first_name\":\"FakeBot\","
                "\"username\":\"fake_bot\"}"));
    } else {
        cJSON_AddTrueToObject(r, "result");
    }
    fk_out_json(o, 200, r);
}

/* ------------------------------------------------------------------ */
/* the fake Slack Web API */

static void
slack_error(struct fk_out *o, unsigned int http, const char *error)
{
    cJSON *r = cJSON_CreateObject();

    cJSON_AddFalseToObject(r, "ok");
    cJSON_AddStringToObject(r, "error", error);
    fk_out_json(o, http, r);
}

static void
slack_post(const cJSON *req, struct fk_out *o)
{
    const char *ch = fk_jstr(req, "channel"), *text = fk_jstr(req, "text");
    cJSON *r, *m;
    char ts[48];

    if (!ch || !ch[0]) {
        slack_error(o, 200, "channel_not_found");
        return;
    }
    if ((!text || !text[0]) &&
        !cJSON_GetObjectItemCaseSensitive(req, "blocks")) {
        slack_error(o, 200, "no_text");
        return;
    }
    if (text && fk_utf8_chars(text) > 40000) {
        slack_error(o, 200, "msg_too_long");
        return;
    }
    snprintf(ts, sizeof(ts), "%lld.%06llu", fk_wall_ms() / 1000,
             fk_next_id() % 1000000);
    r = cJSON_CreateObject();
    cJSON_AddTrueToObject(r, "ok");
    cJSON_AddStringToObject(r, "channel", ch);
    cJSON_AddStringToObject(r, "ts", ts);
    m = cJSON_AddObjectToObject(r, "message");
    cJSON_AddStringToObject(m, "type", "message");
    cJSON_AddStringToObject(m, "text", text ? text : "");
    cJSON_AddStringToObject(m, "user", "UFAKEBOT");
    cJSON_AddStringToObject(m, "bot_id", "BFAKE");
    cJSON_AddStringToObject(m, "ts", ts);
    if (fk_jstr(req, "thread_ts"))
        cJSON_AddStringToObject(m, "thread_ts", fk_jstr(req, "thread_ts"));
    fk_out_json(o, 200, r);
}

static void
slack_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    const char *method = c->path + 5, *auth, *err;
    char ra[32] = "1";
    long http;
    cJSON *r;

    fk_out_take_fault(o, fk_fault_pop(FK_SLACK));
    auth =
        MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || !auth[7]) {
        slack_error(o, 200, "not_authed");
        return;
    }
    if (cf->slack_token && strcmp(auth + 7, cf->slack_token) != 0) {
        slack_error(o, 200, "invalid_auth");
        return;
    }
    http = fk_jlong(o->fault, "http", 0);
    err = fk_jstr(o->fault, "error");
    if (http == 429 || (http == 0 && err && strcmp(err, "ratelimited") == 0)) {
        fk_jtext(o->fault, "retry_after", ra, sizeof(ra));
        fk_out_header(o, "Retry-After", ra);
        if (!fk_out_fault_body(o, o->fault, 429))
            slack_error(o, 429, "ratelimited");
        return;
    }
    if (http || err) {
        if (!fk_out_fault_body(o, o->fault, http ? (unsigned int)http : 200))
            slack_error(o, http ? (unsigned int)http : 200,
                        err ? err : "fatal_error");
        return;
    }
    if (fk_jbool(o->fault, "malformed")) {
        fk_out_malformed(o, "{\"ok\":true,\"channel\":\"");
        return;
    }
    if (c->body_len && !cJSON_IsObject(c->json)) {
        slack_error(o, 200, "invalid_json");
        return;
    }
    if (strcmp(method, "chat.postMessage") == 0 ||
        strcmp(method, "chat.update") == 0) {
        slack_post(c->json, o);
        return;
    }
    r = cJSON_CreateObject();
    cJSON_AddTrueToObject(r, "ok");
    if (strcmp(method, "auth.test") == 0) {
        cJSON_AddStringToObject(r, "user_id", "UFAKEBOT");
        cJSON_AddStringToObject(r, "bot_id", "BFAKE");
        cJSON_AddStringToObject(r, "team_id", "TFAKE");
    }
    fk_out_json(o, 200, r);
}

/* ------------------------------------------------------------------ */
/* webhook sink (load generator target) */

static bool
hook_signature_ok(const struct fk_call *c, const char *secret)
{
    const char *sig = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND,
                                                  "X-Hub-Signature-256");
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mlen = 0, i;
    char hex[2 * EVP_MAX_MD_SIZE + 1], got[2 * EVP_MAX_MD_SIZE + 1];
    size_t glen;

    if (!sig || strncmp(sig, "sha256=", 7) != 0)
        return false;
    sig += 7;
    glen = strlen(sig);
    if (!HMAC(EVP_sha256(), secret, (int)strlen(secret),
              (const unsigned char *)c->body, c->body_len, mac, &mlen))
        return false;
    for (i = 0; i < mlen; i++)
        snprintf(hex + (size_t)i * 2, 3, "%02x", mac[i]);
    if (glen != 2 * (size_t)mlen)
        return false;
    for (i = 0; i < glen; i++)
        got[i] =
            (char)((sig[i] >= 'A' && sig[i] <= 'F') ? sig[i] + 32 : sig[i]);
    return CRYPTO_memcmp(hex, got, glen) == 0;
}

static void
hook_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    long status;

    fk_out_take_fault(o, fk_fault_pop(FK_WEBHOOK));
    if (strcmp(c->method, "POST") != 0) {
        fk_out_text(o, 405, "text/plain", "method not allowed");
        return;
    }
    if (cf->webhook_secret && !hook_signature_ok(c, cf->webhook_secret)) {
        fk_out_text(o, 401, "text/plain", "bad signature");
        return;
    }
    status = fk_jlong(o->fault, "status", 200);
    if (status < 100 || status > 599)
        status = 200;
    if (!fk_out_fault_body(o, o->fault, (unsigned int)status))
        fk_out_text(o, (unsigned int)status, "text/plain", "");
}

#endif
