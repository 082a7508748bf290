/*
 * fakeup_llm.h: the fake OpenAI-compatible LLM (chat completions, plain and
 * SSE streaming, faults). Private part of fakeup.c, included once by it (the
 * Makefile builds one .c file per test program), after the shared types and
 * helpers it uses; not a public header.
 */
#ifndef FAKEUP_LLM_H
#define FAKEUP_LLM_H

/* ------------------------------------------------------------------ */
/* the fake LLM (OpenAI-compatible chat completions) */

static void
llm_error(struct fk_out *o, unsigned int status, const char *message,
          const char *type, const char *param, const char *code)
{
    cJSON *root = cJSON_CreateObject(),
          *e = cJSON_AddObjectToObject(root, "error");

    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "type", type);
    if (param)
        cJSON_AddStringToObject(e, "param", param);
    else
        cJSON_AddNullToObject(e, "param");
    if (code)
        cJSON_AddStringToObject(e, "code", code);
    else
        cJSON_AddNullToObject(e, "code");
    fk_out_json(o, status, root);
}

/* A fault with "status": an error answer shaped like Groq/OpenAI/vLLM's. */
static void
llm_fault_error(struct fk_out *o, const cJSON *fault, unsigned int status,
                const char *model)
{
    char ra[32] = "1", msg[512];
    const char *type = "api_error", *code = NULL;
    const cJSON *rav = cJSON_GetObjectItemCaseSensitive(fault, "retry_after");
    bool has_ra = status == 429 ? !cJSON_IsNull(rav) : rav != NULL;

    if (rav && !cJSON_IsNull(rav))
        fk_jtext(fault, "retry_after", ra, sizeof(ra));
    if (has_ra)
        fk_out_header(o, "retry-after", ra);
    if (fk_out_fault_body(o, fault, status))
        return;
    snprintf(msg, sizeof(msg), "fake error %u", status);
    if (status == 429) {
        snprintf(msg, sizeof(msg),
                 "Rate limit reached for model `%s` in "
                 "organization `org_fake` on tokens per minute (TPM): Limit "
                 "6000, Used 6000, Requested 100. Please try again in %ss.",
                 model, ra);
        type = "tokens";
        code = "rate_limit_exceeded";
    } else if (status == 401) {
        snprintf(msg, sizeof(msg), "Invalid API Key");
        type = "invalid_request_error";
        code = "invalid_api_key";
    } else if (status == 404) {
        snprintf(msg, sizeof(msg),
                 "The model `%s` does not exist or you do "
                 "not have access to it.",
                 model);
        type = "invalid_request_error";
        code = "model_not_found";
    } else if (status == 400 || status == 413 || status == 422) {
        type = "invalid_request_error";
    } else if (status == 503) {
        snprintf(msg, sizeof(msg),
                 "The server is overloaded or not ready yet.");
        type = "unavailable_error";
    } else if (status >= 500) {
        snprintf(msg, sizeof(msg),
                 "The server had an error while processing "
                 "your request. Sorry about that!");
        type = "server_error";
    }
    llm_error(o, status,
              fk_jstr(fault, "message") ? fk_jstr(fault, "message") : msg,
              fk_jstr(fault, "type") ? fk_jstr(fault, "type") : type, NULL,
              fk_jstr(fault, "code") ? fk_jstr(fault, "code") : code);
}

/* Validate a chat completion request; NULL when fine, else the message. */
static const char *
llm_validate(const cJSON *req, char *msg, size_t size, const char **param)
{
    const cJSON *msgs, *m, *v;
    const char *role;
    int i = 0;

    *param = NULL;
    if (!cJSON_IsObject(req))
        return "We could not parse the JSON body of your request. (HINT: This "
               "likely means you aren't using your HTTP library correctly.)";
    v = cJSON_GetObjectItemCaseSensitive(req, "model");
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        *param = "model";
        return "you must provide a model parameter";
    }
    msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    *param = "messages";
    if (!cJSON_IsArray(msgs) || cJSON_GetArraySize(msgs) == 0)
        return "'messages' must be a non-empty array";
    cJSON_ArrayForEach(m, msgs)
    {
        role = fk_jstr(m, "role");
        v = cJSON_GetObjectItemCaseSensitive(m, "content");
        if (!cJSON_IsObject(m) || !role ||
            (strcmp(role, "system") != 0 && strcmp(role, "user") != 0 &&
             strcmp(role, "assistant") != 0 && strcmp(role, "tool") != 0 &&
             strcmp(role, "developer") != 0)) {
            snprintf(msg, size,
                     "'messages.%d' : missing or invalid 'role' "
                     "(system, user, assistant, tool, developer)",
                     i);
            return msg;
        }
        if (!(cJSON_IsString(v) || cJSON_IsArray(v) ||
              (cJSON_IsNull(v) && strcmp(role, "assistant") == 0))) {
            snprintf(msg, size,
                     "'messages.%d' : 'content' must be a string "
                     "or an array of content parts",
                     i);
            return msg;
        }
        i++;
    }
    *param = NULL;
    v = cJSON_GetObjectItemCaseSensitive(req, "stream");
    if (v && !cJSON_IsBool(v) && !cJSON_IsNull(v))
        return "'stream' : value must be a boolean";
    v = cJSON_GetObjectItemCaseSensitive(req, "temperature");
    if (v && !cJSON_IsNull(v) &&
        (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 2))
        return "'temperature' : number must be between 0 and 2";
    v = cJSON_GetObjectItemCaseSensitive(req, "n");
    if (v && !cJSON_IsNull(v) && (!cJSON_IsNumber(v) || v->valuedouble != 1))
        return "'n' : number must be at most 1";
    if (fk_jlong(req, "max_tokens", 1) < 1 ||
        fk_jlong(req, "max_completion_tokens", 1) < 1)
        return "max tokens must be at least 1";
    return NULL;
}

/* Append the text of a message content (string or parts) to b. */
static void
llm_content_text(const cJSON *content, struct core_buf *b)
{
    const cJSON *part;
    const char *t;

    if (cJSON_IsString(content)) {
        core_buf_adds(b, content->valuestring);
        return;
    }
    cJSON_ArrayForEach(part, content)
    {
        t = fk_jstr(part, "text");
        if (t)
            core_buf_adds(b, t);
    }
}

static size_t
llm_prompt_chars(const cJSON *req)
{
    const cJSON *m;
    struct core_buf b;
    size_t n = 0;

    cJSON_ArrayForEach(m, cJSON_GetObjectItemCaseSensitive(req, "messages"))
    {
        core_buf_init(&b, FK_OUT_MAX);
        llm_content_text(cJSON_GetObjectItemCaseSensitive(m, "content"), &b);
        n += b.len;
        core_buf_done(&b);
    }
    return n;
}

/* The reply text: fault reply, fixed llm_reply, or "Echo: <last user>". */
static char *
llm_reply_text(const cJSON *req, const cJSON *fault, const struct fk_conf *cf)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(req, "messages");
    const cJSON *m;
    const char *role;
    struct core_buf b;
    int i;

    if (fk_jstr(fault, "reply"))
        return strdup(fk_jstr(fault, "reply"));
    if (cf->llm_reply)
        return strdup(cf->llm_reply);
    core_buf_init(&b, FK_OUT_MAX);
    core_buf_adds(&b, "Echo: ");
    for (i = cJSON_GetArraySize(msgs) - 1; i >= 0; i--) {
        m = cJSON_GetArrayItem(msgs, i);
        role = fk_jstr(m, "role");
        if (role && strcmp(role, "user") == 0) {
            llm_content_text(cJSON_GetObjectItemCaseSensitive(m, "content"),
                             &b);
            break;
        }
    }
    return core_buf_take(&b);
}

static cJSON *
llm_usage(long prompt, long completion)
{
    cJSON *u = cJSON_CreateObject();

    cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt);
    cJSON_AddNumberToObject(u, "completion_tokens", (double)completion);
    cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt + completion));
    return u;
}

static cJSON *
llm_chunk(const char *id, long long created, const char *model, bool usage_null)
{
    cJSON *c = cJSON_CreateObject();

    cJSON_AddStringToObject(c, "id", id);
    cJSON_AddStringToObject(c, "object", "chat.completion.chunk");
    cJSON_AddNumberToObject(c, "created", (double)created);
    cJSON_AddStringToObject(c, "model", model);
    cJSON_AddStringToObject(c, "system_fingerprint", "fp_fake");
    if (usage_null)
        cJSON_AddNullToObject(c, "usage");
    return c;
}

struct llm_answer {
    const char *id;
    long long created;
    const char *model;
    const char *content;
    const char *finish;
    long prompt_tokens;
    long completion_tokens;
};

/*
 * "data: " + a chunk with one choice: delta {role?, content?} and
 * finish_reason. prefix is the chunk's common fields ending in ','; written
 * directly (not through cJSON) since a stream has many chunks.
 */
static void
llm_delta_event(struct fk_stream *s, const char *prefix, const char *role,
                const char *content, size_t len, const char *finish,
                const char *eol)
{
    struct core_buf *b = &s->text;

    core_buf_adds(b, "data: ");
    core_buf_adds(b, prefix);
    core_buf_adds(b, "\"choices\":[{\"index\":0,\"delta\":{");
    if (role) {
        core_buf_adds(b, "\"role\":");
        fk_json_escape(b, role, strlen(role));
    }
    if (content) {
        core_buf_adds(b, role ? ",\"content\":" : "\"content\":");
        fk_json_escape(b, content, len);
    }
    core_buf_adds(b, "},\"logprobs\":null,\"finish_reason\":");
    if (finish)
        fk_json_escape(b, finish, strlen(finish));
    else
        core_buf_adds(b, "null");
    core_buf_adds(b, "}]}");
    core_buf_adds(b, eol);
    fk_stream_mark(s);
}

/* The fields every chunk of this answer shares, as JSON ending in ','. */
static char *
llm_chunk_prefix(const struct llm_answer *a, bool usage_null)
{
    cJSON *c = llm_chunk(a->id, a->created, a->model, usage_null);
    char *p = cJSON_PrintUnformatted(c);
    size_t n = p ? strlen(p) : 0;

    cJSON_Delete(c);
    if (n < 2 || p[n - 1] != '}') {
        free(p);
        return NULL;
    }
    p[n - 1] = ',';
    return p;
}

/* Build the SSE answer; faults may cut it short (error event or abort). */
static void
llm_stream(const cJSON *req, const cJSON *fault, const struct fk_conf *cf,
           const struct llm_answer *a, struct fk_out *o)
{
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(req, "stream_options");
    bool usage = fk_jbool(so, "include_usage"), crlf = cf->llm_sse_crlf;
    bool cut =
        fk_jbool(fault, "stream_error") || fk_jbool(fault, "stream_abort");
    const char *eol = crlf ? "\r\n\r\n" : "\n\n";
    struct fk_stream *s = fk_stream_new();
    char *prefix = llm_chunk_prefix(a, usage);
    char line[64];
    size_t len = strlen(a->content), step, at = 0, n;
    int pieces = 0;
    cJSON *e, *err;

    if (!s || !prefix)
        goto out;
    s->chunk_delay_ms = cf->llm_chunk_delay_ms;
    if (cf->llm_sse_comments) {
        snprintf(line, sizeof(line), ": keep-alive%s", eol);
        fk_stream_event(s, line);
    }
    llm_delta_event(s, prefix, "assistant", "", 0, NULL, eol);
    if (fk_jbool(fault, "malformed")) {
        snprintf(line, sizeof(line),
                 "data: {\"id\":\"%.20s\",\"choices\":[{\"de%s", a->id, eol);
        fk_stream_event(s, line);
        goto done;
    }
    step = (len + FK_STREAM_PIECES - 1) / FK_STREAM_PIECES;
    if (step < 4)
        step = 4;
    while (at < len && !(cut && pieces == 2)) {
        n = fk_utf8_cut(a->content + at, len - at, step);
        if (n == 0)
            n = len - at;
        llm_delta_event(s, prefix, NULL, a->content + at, n, NULL, eol);
        at += n;
        pieces++;
        if (pieces == 1 && cf->llm_sse_comments) {
            snprintf(line, sizeof(line), ": processing%s", eol);
            fk_stream_event(s, line);
        }
    }
    if (fk_jbool(fault, "stream_abort")) {
        s->abort_after = (long)s->nends;
        goto done;
    }
    if (fk_jbool(fault, "stream_error")) {
        e = cJSON_CreateObject();
        err = cJSON_AddObjectToObject(e, "error");
        cJSON_AddStringToObject(err, "message",
                                fk_jstr(fault, "message")
                                    ? fk_jstr(fault, "message")
                                    : "fake mid-stream failure");
        cJSON_AddStringToObject(err, "type", "server_error");
        cJSON_AddNumberToObject(err, "code", 500);
        fk_stream_data(s, e, crlf);
        goto done;
    }
    llm_delta_event(s, prefix, NULL, NULL, 0, a->finish, eol);
    if (usage) {
        e = llm_chunk(a->id, a->created, a->model, false);
        cJSON_AddArrayToObject(e, "choices");
        cJSON_AddItemToObject(
            e, "usage", llm_usage(a->prompt_tokens, a->completion_tokens));
        fk_stream_data(s, e, crlf);
    }
    snprintf(line, sizeof(line), "data: [DONE]%s", eol);
    fk_stream_event(s, line);
done:
    o->status = 200;
    o->ctype = "text/event-stream";
    o->stream = s;
    s = NULL;
    fk_out_header(o, "Cache-Control", "no-cache");
out:
    if (s || !o->stream)
        llm_error(o, 500, "out of memory", "server_error", NULL, NULL);
    fk_stream_free(s);
    free(prefix);
}

static void
llm_complete(const struct llm_answer *a, struct fk_out *o)
{
    cJSON *r = cJSON_CreateObject(), *choices, *ch, *msg;

    cJSON_AddStringToObject(r, "id", a->id);
    cJSON_AddStringToObject(r, "object", "chat.completion");
    cJSON_AddNumberToObject(r, "created", (double)a->created);
    cJSON_AddStringToObject(r, "model", a->model);
    choices = cJSON_AddArrayToObject(r, "choices");
    ch = cJSON_CreateObject();
    cJSON_AddItemToArray(choices, ch);
    cJSON_AddNumberToObject(ch, "index", 0);
    msg = cJSON_AddObjectToObject(ch, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    cJSON_AddStringToObject(msg, "content", a->content);
    cJSON_AddNullToObject(ch, "logprobs");
    cJSON_AddStringToObject(ch, "finish_reason", a->finish);
    cJSON_AddItemToObject(r, "usage",
                          llm_usage(a->prompt_tokens, a->completion_tokens));
    cJSON_AddStringToObject(r, "system_fingerprint", "fp_fake");
    fk_out_json(o, 200, r);
}

static void
llm_handle(const struct fk_call *c, struct fk_out *o)
{
    const struct fk_conf *cf = c->conf;
    const char *auth, *err, *param, *model;
    char msg[256], id[64], want[512];
    char *content = NULL;
    long status, limit;
    struct llm_answer a;
    size_t len;

    if (cf->llm_headers)
        fk_out_headers_from(o, cf->llm_headers);
    if (strcmp(c->method, "POST") != 0) {
        llm_error(o, 405, "Method not allowed", "invalid_request_error", NULL,
                  NULL);
        return;
    }
    if (cf->llm_down) {
        llm_error(o, 503, "The server is unavailable (fake llm_down)",
                  "unavailable_error", NULL, NULL);
        return;
    }
    auth =
        MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, "Authorization");
    snprintf(want, sizeof(want), "Bearer %s",
             cf->llm_api_key ? cf->llm_api_key : "");
    if (cf->llm_api_key && (!auth || strcmp(auth, want) != 0)) {
        llm_error(o, 401, "Invalid API Key", "invalid_request_error", NULL,
                  "invalid_api_key");
        return;
    }
    fk_out_take_fault(o, fk_fault_pop(FK_LLM));
    model = fk_jstr(c->json, "model") ? fk_jstr(c->json, "model") : "unknown";
    status = fk_jlong(o->fault, "status", 0);
    if (status >= 100 && status <= 599) {
        llm_fault_error(o, o->fault, (unsigned int)status, model);
        return;
    }
    err = llm_validate(c->json, msg, sizeof(msg), &param);
    if (err) {
        llm_error(o, 400, err, "invalid_request_error", param, NULL);
        return;
    }
    if (fk_jbool(o->fault, "malformed") && !fk_jbool(c->json, "stream")) {
        fk_out_malformed(o, "{\"id\":\"chatcmpl-fake\",\"object\":\"chat."
                            "completion\",\"choices\":[{\"index\":0,\"mess");
        return;
    }
    content = llm_reply_text(c->json, o->fault, cf);
    if (!content) {
        llm_error(o, 500, "out of memory", "server_error", NULL, NULL);
        return;
    }
    snprintf(id, sizeof(id), "chatcmpl-fake%llu", fk_next_id());
    len = strlen(content);
    a.id = id;
    a.created = fk_wall_ms() / 1000;
    a.model = model;
    a.finish = fk_jstr(o->fault, "finish_reason")
                   ? fk_jstr(o->fault, "finish_reason")
                   : "stop";
    a.prompt_tokens = (long)((llm_prompt_chars(c->json) + 3) / 4);
    if (a.prompt_tokens < 1)
        a.prompt_tokens = 1;
    limit = fk_jlong(c->json, "max_completion_tokens",
                     fk_jlong(c->json, "max_tokens", 0));
    if (cf->llm_enforce_max_tokens && limit > 0 &&
        (long)((len + 3) / 4) > limit) {
        len = fk_utf8_cut(content, len, (size_t)limit * 4);
        content[len] = '\0';
        a.finish = "length";
    }
    a.completion_tokens = (long)((len + 3) / 4);
    a.content = content;
    if (fk_jbool(c->json, "stream"))
        llm_stream(c->json, o->fault, cf, &a, o);
    else
        llm_complete(&a, o);
    free(content);
}

#endif
