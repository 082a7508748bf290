/*
 * fakeup_control.h: fakeup's control API (/_control, /_requests, /_reset,
 * /_stats, /_ping): validates and publishes new settings, queues faults,
 * serves the request record. Private part of fakeup.c, included once by it.
 */
#ifndef FAKEUP_CONTROL_H
#define FAKEUP_CONTROL_H

/* ------------------------------------------------------------------ */
/* control API */

static bool
ctl_str(char **dst, const cJSON *v, char *err, size_t esz)
{
    if (cJSON_IsNull(v)) {
        free(*dst);
        *dst = NULL;
        return true;
    }
    if (!cJSON_IsString(v)) {
        snprintf(err, esz, "%s must be a string or null", v->string);
        return false;
    }
    free(*dst);
    *dst = strdup(v->valuestring);
    return true;
}

static bool
ctl_bool(bool *dst, const cJSON *v, char *err, size_t esz)
{
    if (!cJSON_IsBool(v)) {
        snprintf(err, esz, "%s must be a boolean", v->string);
        return false;
    }
    *dst = cJSON_IsTrue(v);
    return true;
}

static bool
ctl_ms(long *dst, const cJSON *v, char *err, size_t esz)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 ||
        v->valuedouble > (double)FK_MAX_DELAY_MS) {
        snprintf(err, esz, "%s must be a number of ms in 0..%ld", v->string,
                 FK_MAX_DELAY_MS);
        return false;
    }
    *dst = (long)v->valuedouble;
    return true;
}

static bool
ctl_json(cJSON **dst, const cJSON *v, bool array, char *err, size_t esz)
{
    if (!cJSON_IsNull(v) && !(array ? cJSON_IsArray(v) : cJSON_IsObject(v))) {
        snprintf(err, esz, "%s must be %s or null", v->string,
                 array ? "an array" : "an object");
        return false;
    }
    cJSON_Delete(*dst);
    *dst = cJSON_IsNull(v) ? NULL : cJSON_Duplicate(v, 1);
    return true;
}

static bool
ctl_faults(cJSON **dst, enum fk_kind k, const cJSON *v, char *err, size_t esz)
{
    const cJSON *f, *key;

    if (!cJSON_IsArray(v)) {
        snprintf(err, esz, "%s must be an array of objects", v->string);
        return false;
    }
    cJSON_ArrayForEach(f, v)
    {
        if (!cJSON_IsObject(f)) {
            snprintf(err, esz, "%s: every fault must be an object", v->string);
            return false;
        }
        cJSON_ArrayForEach(key, f)
        {
            if (!fk_word_in(fk_fault_keys[k], key->string)) {
                snprintf(err, esz, "%s: unknown fault key \"%s\" (allowed:%s)",
                         v->string, key->string, fk_fault_keys[k]);
                return false;
            }
        }
    }
    *dst = cJSON_Duplicate(v, 1);
    return true;
}

/* Apply one control key to the new settings c / fault lists add[]. */
static bool
ctl_key(struct fk_conf *c, cJSON **add, bool *clear, const cJSON *v, char *err,
        size_t esz)
{
    const char *k = v->string;
    char name[64];
    int i;

    for (i = 0; i < FK_OTHER; i++) {
        snprintf(name, sizeof(name), "%s_faults", fk_kind_name[i]);
        if (strcmp(k, name) == 0)
            return !add[i] ? ctl_faults(&add[i], (enum fk_kind)i, v, err, esz)
                           : false;
        snprintf(name, sizeof(name), "%s_latency_ms", fk_kind_name[i]);
        if (strcmp(k, name) == 0)
            return ctl_ms(&c->latency_ms[i], v, err, esz);
    }
    if (strcmp(k, "clear_faults") == 0)
        return ctl_bool(clear, v, err, esz);
    if (strcmp(k, "llm_reply") == 0)
        return ctl_str(&c->llm_reply, v, err, esz);
    if (strcmp(k, "llm_api_key") == 0)
        return ctl_str(&c->llm_api_key, v, err, esz);
    if (strcmp(k, "llm_down") == 0)
        return ctl_bool(&c->llm_down, v, err, esz);
    if (strcmp(k, "llm_chunk_delay_ms") == 0)
        return ctl_ms(&c->llm_chunk_delay_ms, v, err, esz);
    if (strcmp(k, "llm_sse_comments") == 0)
        return ctl_bool(&c->llm_sse_comments, v, err, esz);
    if (strcmp(k, "llm_sse_crlf") == 0)
        return ctl_bool(&c->llm_sse_crlf, v, err, esz);
    if (strcmp(k, "llm_enforce_max_tokens") == 0)
        return ctl_bool(&c->llm_enforce_max_tokens, v, err, esz);
    if (strcmp(k, "llm_headers") == 0)
        return ctl_json(&c->llm_headers, v, false, err, esz);
    if (strcmp(k, "graph_token") == 0)
        return ctl_str(&c->graph_token, v, err, esz);
    if (strcmp(k, "graph_instagram_ids") == 0)
        return ctl_json(&c->graph_instagram_ids, v, true, err, esz);
    if (strcmp(k, "telegram_token") == 0)
        return ctl_str(&c->telegram_token, v, err, esz);
    if (strcmp(k, "slack_token") == 0)
        return ctl_str(&c->slack_token, v, err, esz);
    if (strcmp(k, "webhook_secret") == 0)
        return ctl_str(&c->webhook_secret, v, err, esz);
    if (strcmp(k, "record") == 0)
        return ctl_bool(&c->record, v, err, esz);
    snprintf(err, esz, "unknown control key \"%s\"", k);
    return false;
}

static void
ctl_add_str(cJSON *o, const char *key, const char *v)
{
    if (v)
        cJSON_AddStringToObject(o, key, v);
    else
        cJSON_AddNullToObject(o, key);
}

/* The current settings and pending faults (GET /_control). */
static cJSON *
ctl_state(void)
{
    cJSON *o = cJSON_CreateObject(), *p;
    struct fk_conf *c;
    char name[64];
    int i;

    pthread_mutex_lock(&fk.mu);
    c = fk.conf;
    p = cJSON_AddObjectToObject(o, "faults_pending");
    for (i = 0; i < FK_OTHER; i++) {
        snprintf(name, sizeof(name), "%s_latency_ms", fk_kind_name[i]);
        cJSON_AddNumberToObject(o, name, (double)c->latency_ms[i]);
        cJSON_AddItemToObject(p, fk_kind_name[i],
                              cJSON_Duplicate(fk.faults[i], 1));
    }
    ctl_add_str(o, "llm_reply", c->llm_reply);
    cJSON_AddBoolToObject(o, "llm_api_key_set", c->llm_api_key != NULL);
    cJSON_AddBoolToObject(o, "llm_down", c->llm_down);
    cJSON_AddNumberToObject(o, "llm_chunk_delay_ms",
                            (double)c->llm_chunk_delay_ms);
    cJSON_AddBoolToObject(o, "llm_sse_comments", c->llm_sse_comments);
    cJSON_AddBoolToObject(o, "llm_sse_crlf", c->llm_sse_crlf);
    cJSON_AddBoolToObject(o, "llm_enforce_max_tokens",
                          c->llm_enforce_max_tokens);
    cJSON_AddItemToObject(o, "llm_headers",
                          c->llm_headers ? cJSON_Duplicate(c->llm_headers, 1)
                                         : cJSON_CreateNull());
    cJSON_AddBoolToObject(o, "graph_token_set", c->graph_token != NULL);
    cJSON_AddItemToObject(o, "graph_instagram_ids",
                          c->graph_instagram_ids
                              ? cJSON_Duplicate(c->graph_instagram_ids, 1)
                              : cJSON_CreateNull());
    cJSON_AddBoolToObject(o, "telegram_token_set", c->telegram_token != NULL);
    cJSON_AddBoolToObject(o, "slack_token_set", c->slack_token != NULL);
    cJSON_AddBoolToObject(o, "webhook_secret_set", c->webhook_secret != NULL);
    cJSON_AddBoolToObject(o, "record", c->record);
    pthread_mutex_unlock(&fk.mu);
    return o;
}

static void
ctl_control(const cJSON *req, struct fk_out *o)
{
    struct fk_conf *cur = fk_conf_acquire(), *nc = fk_conf_dup(cur);
    cJSON *add[FK_NKINDS] = { 0 }, *e;
    const cJSON *v, *items;
    char err[512] = "";
    bool clear = false, ok = nc != NULL;
    int i;

    fk_conf_release(cur);
    if (!cJSON_IsObject(req)) {
        snprintf(err, sizeof(err), "body must be a JSON object");
        ok = false;
    }
    items = ok ? req : NULL;
    cJSON_ArrayForEach(v, items)
    {
        if (!ctl_key(nc, add, &clear, v, err, sizeof(err))) {
            if (!err[0])
                snprintf(err, sizeof(err), "duplicate key \"%s\"", v->string);
            ok = false;
            break;
        }
    }
    if (!ok) {
        e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "error", err[0] ? err : "out of memory");
        fk_out_json(o, 400, e);
        fk_conf_free(nc);
        goto out;
    }
    pthread_mutex_lock(&fk.mu);
    for (i = 0; i < FK_NKINDS; i++) {
        if (clear) {
            cJSON_Delete(fk.faults[i]);
            fk.faults[i] = cJSON_CreateArray();
        }
        while (add[i] && cJSON_GetArraySize(add[i]) > 0)
            cJSON_AddItemToArray(fk.faults[i],
                                 cJSON_DetachItemFromArray(add[i], 0));
    }
    fk_conf_swap_locked(nc);
    pthread_mutex_unlock(&fk.mu);
    fk_out_json(o, 200, ctl_state());
out:
    for (i = 0; i < FK_NKINDS; i++)
        cJSON_Delete(add[i]);
}

static void
ctl_reset(struct fk_out *o)
{
    struct fk_conf *nc = fk_conf_dup(fk.defaults);
    int i;

    if (!nc) {
        fk_out_text(o, 500, "application/json",
                    "{\"error\":\"out of memory\"}");
        return;
    }
    pthread_mutex_lock(&fk.mu);
    for (i = 0; i < FK_NKINDS; i++) {
        cJSON_Delete(fk.faults[i]);
        fk.faults[i] = cJSON_CreateArray();
        fk.by_kind[i] = 0;
        fk.faults_used[i] = 0;
    }
    memset(fk.by_status, 0, sizeof(fk.by_status));
    fk.total = 0;
    fk.dropped = 0;
    fk_records_clear_locked();
    fk_conf_swap_locked(nc);
    pthread_mutex_unlock(&fk.mu);
    fk_out_text(o, 200, "application/json", "{\"ok\":true}");
}

static unsigned long long
ctl_arg_ull(struct MHD_Connection *conn, const char *name,
            unsigned long long dflt)
{
    const char *s =
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, name);
    char *end;
    unsigned long long v;

    if (!s || !*s)
        return dflt;
    errno = 0;
    v = strtoull(s, &end, 10);
    return (errno || *end) ? dflt : v;
}

/* GET /_requests[?kind=K][&since=SEQ][&limit=N]: oldest first. */
static void
ctl_requests(struct MHD_Connection *conn, struct fk_out *o)
{
    const char *kind =
        MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "kind");
    unsigned long long since = ctl_arg_ull(conn, "since", 0);
    unsigned long long limit = ctl_arg_ull(conn, "limit", ULLONG_MAX);
    unsigned long long n = 0;
    struct fk_record *r;
    size_t i;
    int k = -1;

    if (kind && *kind) {
        for (i = 0; i < FK_NKINDS; i++)
            if (strcmp(kind, fk_kind_name[i]) == 0)
                k = (int)i;
        if (k < 0) {
            fk_out_text(
                o, 400, "application/json",
                "{\"error\":\"kind must be llm, graph, telegram, slack, "
                "webhook or other\"}");
            return;
        }
    }
    core_buf_reset(&o->body);
    core_buf_adds(&o->body, "[");
    pthread_mutex_lock(&fk.mu);
    for (i = 0; i < fk.ring_len && n < limit; i++) {
        r = &fk.ring[(fk.ring_head + i) % fk.ring_cap];
        if (r->seq <= since || (k >= 0 && (int)r->kind != k))
            continue;
        if (n++)
            core_buf_adds(&o->body, ",");
        core_buf_adds(&o->body, r->json);
    }
    pthread_mutex_unlock(&fk.mu);
    core_buf_adds(&o->body, "]");
    o->status = 200;
}

static void
ctl_stats(struct fk_out *o)
{
    cJSON *r = cJSON_CreateObject(), *a, *b, *c, *d;
    char num[16];
    size_t i;

    pthread_mutex_lock(&fk.mu);
    cJSON_AddNumberToObject(r, "total", (double)fk.total);
    a = cJSON_AddObjectToObject(r, "by_kind");
    b = cJSON_AddObjectToObject(r, "faults_injected");
    c = cJSON_AddObjectToObject(r, "faults_pending");
    for (i = 0; i < FK_NKINDS; i++) {
        cJSON_AddNumberToObject(a, fk_kind_name[i], (double)fk.by_kind[i]);
        cJSON_AddNumberToObject(b, fk_kind_name[i], (double)fk.faults_used[i]);
        cJSON_AddNumberToObject(c, fk_kind_name[i],
                                cJSON_GetArraySize(fk.faults[i]));
    }
    d = cJSON_AddObjectToObject(r, "by_status");
    for (i = 0; i < 600; i++) {
        if (fk.by_status[i]) {
            snprintf(num, sizeof(num), "%zu", i);
            cJSON_AddNumberToObject(d, num, (double)fk.by_status[i]);
        }
    }
    cJSON_AddNumberToObject(r, "recorded", (double)fk.ring_len);
    cJSON_AddNumberToObject(r, "record_max", (double)fk.ring_cap);
    cJSON_AddNumberToObject(r, "dropped", (double)fk.dropped);
    cJSON_AddNumberToObject(r, "last_seq", (double)fk.next_seq);
    pthread_mutex_unlock(&fk.mu);
    pthread_mutex_lock(&fk.timer.mu);
    cJSON_AddNumberToObject(r, "suspended", (double)fk.timer.len);
    pthread_mutex_unlock(&fk.timer.mu);
    fk_out_json(o, 200, r);
}

static void
ctl_handle(struct MHD_Connection *conn, const char *method, const char *path,
           const char *body, size_t len, struct fk_out *o)
{
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    bool post = strcmp(method, "POST") == 0;
    cJSON *req;

    if (get && (strcmp(path, "/_ping") == 0 || strcmp(path, "/healthz") == 0)) {
        fk_out_text(o, 200, "text/plain", "ok\n");
    } else if (strcmp(path, "/_control") == 0 && (get || post)) {
        if (get) {
            fk_out_json(o, 200, ctl_state());
        } else {
            req = cJSON_ParseWithLength(body ? body : "", len);
            ctl_control(req, o);
            cJSON_Delete(req);
        }
    } else if (strcmp(path, "/_requests") == 0 && get) {
        ctl_requests(conn, o);
    } else if (strcmp(path, "/_reset") == 0 && post) {
        ctl_reset(o);
    } else if (strcmp(path, "/_stats") == 0 && get) {
        ctl_stats(o);
    } else {
        fk_out_text(o, 404, "application/json",
                    "{\"error\":\"no such control "
                    "endpoint: GET /_ping /_requests /_stats /_control, POST "
                    "/_control /_reset\"}");
    }
}

#endif
