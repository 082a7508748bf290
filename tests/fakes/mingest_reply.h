/*
 * mingest's reply paths (rows a''' and a'''' of docs/PERFORMANCE.md):
 * private part of mingest.c, included once by it (the Makefile builds one
 * .c file per program), after the ingest's types and insert_rows().
 */
/* ---- Reply mode: the least durable reply path ---------------------------
 *
 * With --llm and --graph, every message the committer stored as new is
 * also answered: a job (the message's key and body) goes to one reply
 * thread that drives every call on one curl multi handle, up to
 * --inflight at once: the read receipt (with --receipt) beside the LLM
 * call, the LLM call (OpenAI-compatible, not streamed), then the send
 * (WhatsApp Cloud API), and hands (key, the platform's id, the text) to a
 * finisher thread that stores them with one multi-row INSERT into
 *   outbox (key text PRIMARY KEY, wamid text, reply text NOT NULL,
 *           llm_us bigint)
 * per batch, committed synchronously; llm_us is the LLM call's time (as
 * Parley's responses.llm_ms), so that the bench can take it out of the
 * reply's latency. Jobs pass in memory: no claim, no
 * lease, no context, no events. A crash loses the jobs in flight (inbox
 * rows without an outbox row would be their recovery); everything Parley
 * does on top of this is left out.
 *
 * With --queue db the jobs pass through PostgreSQL as DESIGN.md's data
 * flow asks, still at the least: the committer only wakes a claimer
 * thread, which claims pending rows of
 *   inbox (key, body, received_at, state smallint, lease_until)
 * in batches (UPDATE ... FOR UPDATE SKIP LOCKED with a lease, committed
 * without waiting for its flush, as Parley's claim); an intent thread
 * records each reply before its send (INSERT INTO outbox (key, reply), not
 * waiting for its flush, as Parley's intent); the finisher sets the sent
 * reply's platform id and the message's state in one synchronous commit.
 * Still no context, no events, no normalised rows. */

struct job {
    char key[KEY_MAX + 1];
    char *body; /* the webhook, then the reply text */
    char phone_id[64], to[64];
    char wamid[128];
    char llm_us[24]; /* the LLM call's time in microseconds, as text */
    CURL *llm, *receipt, *send; /* transfers in flight */
    bool failed;
    struct core_buf llm_out, send_out, req, rreq;
    char url[512]; /* the send's */
    struct job *next;
};

/* A FIFO of jobs; the ones in R are used under R.mu. */
struct jobq {
    struct job *head, **tail;
};

static void
jobq_init(struct jobq *q)
{
    q->head = NULL;
    q->tail = &q->head;
}

static void
jobq_push(struct jobq *q, struct job *j)
{
    j->next = NULL;
    *q->tail = j;
    q->tail = &j->next;
}

static struct job *
jobq_pop(struct jobq *q)
{
    struct job *j = q->head;

    if (j) {
        q->head = j->next;
        if (!q->head)
            q->tail = &q->head;
    }
    return j;
}

/* Move every job of from to the end of q; from is left empty. */
static void
jobq_splice(struct jobq *q, struct jobq *from)
{
    if (!from->head)
        return;
    *q->tail = from->head;
    q->tail = from->tail;
    jobq_init(from);
}

static struct {
    const char *llm_url, *llm_key, *graph_url, *graph_token, *db;
    bool receipt;
    long inflight;
    CURLM *multi;
    struct curl_slist *llm_hdrs, *graph_hdrs; /* shared, read-only */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct jobq todo; /* committer (or claimer) -> reply thread */
    struct jobq done; /* reply thread -> finisher */
    bool stopping, replies_over;
    unsigned long sent, failed, stored;
    /* --queue db */
    bool dbq, claim_wake, claimer_over;
    pthread_cond_t claim_cv, intent_cv;
    long outstanding;    /* claimed, not yet finished */
    long at_intent;      /* jobs with the intent thread */
    struct jobq intents; /* reply thread -> intent */
    struct jobq ready;   /* intent -> reply thread */
} R = { .mu = PTHREAD_MUTEX_INITIALIZER,
        .cv = PTHREAD_COND_INITIALIZER,
        .claim_cv = PTHREAD_COND_INITIALIZER,
        .intent_cv = PTHREAD_COND_INITIALIZER };

static size_t
collect(char *p, size_t size, size_t n, void *arg)
{
    return core_buf_add(arg, p, size * n) == CORE_OK ? size * n : 0;
}

static void
job_free(struct job *j)
{
    free(j->body);
    core_buf_done(&j->llm_out);
    core_buf_done(&j->send_out);
    core_buf_done(&j->req);
    core_buf_done(&j->rreq);
    free(j);
}

static CURL *
post(struct job *j, const char *url, struct curl_slist *hdrs,
     const struct core_buf *body, struct core_buf *out)
{
    CURL *h = curl_easy_init();

    if (!h)
        return NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->data);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)body->len);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(h, CURLOPT_PRIVATE, j);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (curl_multi_add_handle(R.multi, h) != CURLM_OK) {
        curl_easy_cleanup(h);
        return NULL;
    }
    return h;
}

static const char *
jstr(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Parse the webhook's first message and start its calls. */
static bool
job_start(struct job *j)
{
    cJSON *w = cJSON_Parse(j->body);
    const cJSON *v, *m;
    const char *from, *text, *phone;
    char url[512];
    bool ok = false;

    v = wa_value(w);
    m = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(v, "messages"), 0);
    phone = jstr(cJSON_GetObjectItemCaseSensitive(v, "metadata"),
                 "phone_number_id");
    from = jstr(m, "from");
    text = jstr(cJSON_GetObjectItemCaseSensitive(m, "text"), "body");
    if (phone && from && text && strlen(phone) < sizeof(j->phone_id) &&
        strlen(from) < sizeof(j->to)) {
        cJSON *req = cJSON_CreateObject(), *msgs, *um;
        char *s;

        strcpy(j->phone_id, phone);
        strcpy(j->to, from);
        cJSON_AddStringToObject(req, "model", "bench");
        msgs = cJSON_AddArrayToObject(req, "messages");
        um = cJSON_CreateObject();
        cJSON_AddStringToObject(um, "role", "user");
        cJSON_AddStringToObject(um, "content", text);
        cJSON_AddItemToArray(msgs, um);
        s = cJSON_PrintUnformatted(req);
        cJSON_Delete(req);
        ok = s && core_buf_adds(&j->req, s) == CORE_OK;
        free(s);
    }
    cJSON_Delete(w);
    if (!ok)
        return false;
    snprintf(url, sizeof(url), "%s/chat/completions", R.llm_url);
    j->llm = post(j, url, R.llm_hdrs, &j->req, &j->llm_out);
    if (R.receipt && j->llm) {
        snprintf(url, sizeof(url), "%s/%s/messages", R.graph_url, j->phone_id);
        core_buf_printf(&j->rreq,
                        "{\"messaging_product\":\"whatsapp\",\"status\":"
                        "\"read\",\"message_id\":\"%s\"}",
                        j->key);
        j->receipt = post(j, url, R.graph_hdrs, &j->rreq, &j->send_out);
    }
    return j->llm != NULL;
}

/* The LLM's answer (and the receipt, if any) is in: build the send. */
static bool
job_prepare_send(struct job *j)
{
    cJSON *a = cJSON_Parse(j->llm_out.data), *req;
    const char *text =
        jstr(cJSON_GetObjectItemCaseSensitive(
                 cJSON_GetArrayItem(
                     cJSON_GetObjectItemCaseSensitive(a, "choices"), 0),
                 "message"),
             "content");
    char *s = NULL;

    if (text) {
        free(j->body);
        j->body = strdup(text);
        req = cJSON_CreateObject();
        cJSON_AddStringToObject(req, "messaging_product", "whatsapp");
        cJSON_AddStringToObject(req, "to", j->to);
        cJSON_AddStringToObject(req, "type", "text");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(req, "text"), "body",
                                text);
        s = cJSON_PrintUnformatted(req);
        cJSON_Delete(req);
    }
    cJSON_Delete(a);
    core_buf_reset(&j->req);
    core_buf_reset(&j->send_out);
    if (!s || !j->body || core_buf_adds(&j->req, s) != CORE_OK) {
        free(s);
        return false;
    }
    free(s);
    snprintf(j->url, sizeof(j->url), "%s/%s/messages", R.graph_url,
             j->phone_id);
    return true;
}

static bool
job_post_send(struct job *j)
{
    j->send = post(j, j->url, R.graph_hdrs, &j->req, &j->send_out);
    return j->send != NULL;
}

/* The send's answer: keep the platform's id of the reply. */
static bool
job_sent(struct job *j)
{
    cJSON *a = cJSON_Parse(j->send_out.data);
    const char *id = jstr(
        cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(a, "messages"), 0),
        "id");
    bool ok = id && strlen(id) < sizeof(j->wamid);

    if (ok)
        strcpy(j->wamid, id);
    cJSON_Delete(a);
    return ok;
}

static void
job_finish(struct job *j, bool ok)
{
    pthread_mutex_lock(&R.mu);
    if (ok) {
        R.sent++;
        jobq_push(&R.done, j);
        pthread_cond_broadcast(&R.cv);
    } else {
        R.failed++;
        if (R.dbq) { /* its lease runs out; it is claimed again then */
            R.outstanding--;
            pthread_cond_signal(&R.claim_cv);
        }
    }
    pthread_mutex_unlock(&R.mu);
    if (!ok)
        job_free(j);
}

/* One transfer ended: move its job on. */
static void
transfer_done(CURL *h, CURLcode rc, long *running)
{
    struct job *j = NULL;
    long http = 0;
    bool ok, is_send, is_llm;

    curl_easy_getinfo(h, CURLINFO_PRIVATE, (char **)&j);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
    ok = rc == CURLE_OK && http == 200;
    is_send = h == j->send;
    is_llm = h == j->llm;
    if (is_llm) {
        curl_off_t us = 0;

        curl_easy_getinfo(h, CURLINFO_TOTAL_TIME_T, &us);
        snprintf(j->llm_us, sizeof(j->llm_us), "%ld", (long)us);
    }
    curl_multi_remove_handle(R.multi, h);
    curl_easy_cleanup(h);
    if (is_send) {
        j->send = NULL;
        if (ok)
            ok = job_sent(j);
        (*running)--;
        job_finish(j, ok);
        return;
    }
    if (is_llm) {
        j->llm = NULL;
        j->failed = !ok;
    } else {
        j->receipt = NULL; /* best effort, as Parley's */
    }
    if (j->llm || j->receipt)
        return; /* the other one still runs */
    (*running)--;
    if (j->failed || !job_prepare_send(j)) {
        job_finish(j, false);
    } else if (R.dbq) { /* the intent first */
        pthread_mutex_lock(&R.mu);
        R.at_intent++;
        jobq_push(&R.intents, j);
        pthread_cond_signal(&R.intent_cv);
        pthread_mutex_unlock(&R.mu);
    } else if (job_post_send(j)) {
        (*running)++;
    } else {
        job_finish(j, false);
    }
}

static void *
replier(void *arg)
{
    long running = 0;

    (void)arg;
    for (;;) {
        struct job *j;
        CURLMsg *msg;
        int still, left;

        pthread_mutex_lock(&R.mu);
        while ((j = jobq_pop(&R.ready)) != NULL) { /* intent stored: send */
            pthread_mutex_unlock(&R.mu);
            running++;
            if (!job_post_send(j)) {
                running--;
                job_finish(j, false);
            }
            pthread_mutex_lock(&R.mu);
        }
        while (running < R.inflight && (j = jobq_pop(&R.todo)) != NULL) {
            pthread_mutex_unlock(&R.mu);
            running++;
            if (!job_start(j)) {
                running--;
                job_finish(j, false);
            }
            pthread_mutex_lock(&R.mu);
        }
        if (R.stopping && R.claimer_over && !R.todo.head && !R.ready.head &&
            R.at_intent == 0 && running == 0) {
            R.replies_over = true;
            pthread_cond_broadcast(&R.cv);
            pthread_cond_broadcast(&R.intent_cv);
            pthread_mutex_unlock(&R.mu);
            break;
        }
        pthread_mutex_unlock(&R.mu);
        curl_multi_perform(R.multi, &still);
        while ((msg = curl_multi_info_read(R.multi, &left)) != NULL)
            if (msg->msg == CURLMSG_DONE)
                transfer_done(msg->easy_handle, msg->data.result, &running);
        curl_multi_poll(R.multi, NULL, 0, 1000, NULL);
    }
    return NULL;
}

/* A text[] literal of batch[i]->key (or ->wamid): {"a","b"}. */
static bool
array_lit(struct core_buf *b, struct job **batch, int n, bool wamid)
{
    int i;

    core_buf_reset(b);
    if (core_buf_adds(b, "{") != CORE_OK)
        return false;
    for (i = 0; i < n; i++) {
        const char *p = wamid ? batch[i]->wamid : batch[i]->key;

        if (core_buf_adds(b, i ? ",\"" : "\"") != CORE_OK)
            return false;
        for (; *p; p++)
            if ((*p == '"' || *p == '\\') && core_buf_adds(b, "\\") != CORE_OK)
                return false;
            else if (core_buf_add(b, p, 1) != CORE_OK)
                return false;
        if (core_buf_adds(b, "\"") != CORE_OK)
            return false;
    }
    return core_buf_adds(b, "}") == CORE_OK;
}

/* --queue db: the sent replies' platform ids and their messages' state,
 * one statement, one synchronous commit. */
static bool
finish_db(PGconn *pg, struct job **batch, int n)
{
    struct core_buf keys, ids;
    const char *v[2];
    PGresult *res;
    bool ok = false;

    core_buf_init(&keys, 16 * 1024 * 1024);
    core_buf_init(&ids, 16 * 1024 * 1024);
    if (array_lit(&keys, batch, n, false) && array_lit(&ids, batch, n, true)) {
        v[0] = keys.data;
        v[1] = ids.data;
        res = PQexecParams(pg,
                           "WITH o AS (UPDATE outbox SET wamid = x.w"
                           " FROM unnest($1::text[], $2::text[]) AS x(k, w)"
                           " WHERE outbox.key = x.k RETURNING 1)"
                           " UPDATE inbox SET state = 2, lease_until = NULL"
                           " WHERE key = ANY ($1::text[])",
                           2, NULL, v, NULL, NULL, 0);
        ok = PQresultStatus(res) == PGRES_COMMAND_OK;
        if (!ok)
            fprintf(stderr, "mingest: finish: %s", PQerrorMessage(pg));
        PQclear(res);
    }
    core_buf_done(&keys);
    core_buf_done(&ids);
    return ok;
}

static PGconn *
connect_async_commit(void)
{
    PGconn *pg = PQconnectdb(R.db);
    PGresult *res;

    if (PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "mingest: connect: %s", PQerrorMessage(pg));
        exit(1);
    }
    res = PQexec(pg, "SET synchronous_commit = off");
    PQclear(res);
    return pg;
}

static struct job *
job_new(const char *key, const char *body)
{
    struct job *j = calloc(1, sizeof(*j));

    if (!j || !(j->body = strdup(body))) {
        free(j);
        return NULL;
    }
    snprintf(j->key, sizeof(j->key), "%s", key);
    core_buf_init(&j->llm_out, 1024 * 1024);
    core_buf_init(&j->send_out, 64 * 1024);
    core_buf_init(&j->req, 1024 * 1024);
    core_buf_init(&j->rreq, 1024);
    return j;
}

/* --queue db: claim pending (or lease-expired) messages while fewer than
 * 2 x --inflight are claimed; woken by the committer and the finisher. */
static void *
claimer(void *arg)
{
    PGconn *pg = connect_async_commit();
    char lim[24];
    const char *v[1] = { lim };

    (void)arg;
    for (;;) {
        struct jobq got;
        long want;
        PGresult *res;
        int rows, r, jobs;

        pthread_mutex_lock(&R.mu);
        while (!R.stopping &&
               (!R.claim_wake || R.outstanding >= 2 * R.inflight))
            pthread_cond_wait(&R.claim_cv, &R.mu);
        if (R.stopping) {
            R.claimer_over = true;
            pthread_mutex_unlock(&R.mu);
            curl_multi_wakeup(R.multi);
            break;
        }
        R.claim_wake = false;
        want = 2 * R.inflight - R.outstanding;
        pthread_mutex_unlock(&R.mu);

        snprintf(lim, sizeof(lim), "%ld", want);
        res = PQexecParams(
            pg,
            "UPDATE inbox SET state = 1,"
            " lease_until = now() + interval '2 minutes'"
            " WHERE key IN (SELECT key FROM inbox"
            "  WHERE state < 2 AND (state = 0 OR lease_until < now())"
            "  ORDER BY received_at LIMIT $1::int FOR UPDATE SKIP LOCKED)"
            " RETURNING key, body",
            1, NULL, v, NULL, NULL, 0);
        if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "mingest: claim: %s", PQerrorMessage(pg));
            PQclear(res);
            pthread_mutex_lock(&R.mu);
            R.claim_wake = true; /* try again */
            pthread_mutex_unlock(&R.mu);
            usleep(100000);
            continue;
        }
        rows = PQntuples(res);
        jobq_init(&got);
        for (r = 0, jobs = 0; r < rows; r++) {
            struct job *j =
                job_new(PQgetvalue(res, r, 0), PQgetvalue(res, r, 1));

            if (j) { /* (else its lease runs out) */
                jobq_push(&got, j);
                jobs++;
            }
        }
        PQclear(res);
        pthread_mutex_lock(&R.mu);
        R.outstanding += jobs;
        if (rows == want)
            R.claim_wake = true; /* there may be more */
        jobq_splice(&R.todo, &got);
        pthread_mutex_unlock(&R.mu);
        if (jobs)
            curl_multi_wakeup(R.multi);
    }
    PQfinish(pg);
    return NULL;
}

/* Wait for jobs on a list (or the end of the replies), take up to
 * MAX_BATCH of them; 0 once the replies are over and the list is empty. */
static int
take_jobs(struct jobq *q, pthread_cond_t *cv, struct job **batch)
{
    int n;

    pthread_mutex_lock(&R.mu);
    while (!q->head && !R.replies_over)
        pthread_cond_wait(cv, &R.mu);
    for (n = 0; n < MAX_BATCH && (batch[n] = jobq_pop(q)) != NULL; n++)
        ;
    pthread_mutex_unlock(&R.mu);
    return n;
}

/* --queue db: record each reply before it is sent, in batches. */
static void *
intender(void *arg)
{
    struct job *batch[MAX_BATCH];
    const char **v = calloc(3 * MAX_BATCH, sizeof(*v));
    bool *have = calloc(MAX_BATCH + 1, sizeof(bool));
    PGconn *pg = connect_async_commit();
    int n, i;

    (void)arg;
    if (!v || !have)
        exit(1);
    for (;;) {
        PGresult *res;
        bool ok = false;

        n = take_jobs(&R.intents, &R.intent_cv, batch);
        if (n == 0)
            break;

        for (i = 0; i < n; i++) {
            v[3 * i] = batch[i]->key;
            v[3 * i + 1] = batch[i]->body;
            v[3 * i + 2] = batch[i]->llm_us;
        }
        res = insert_rows(pg, "outbox (key, reply, llm_us)", 3, n, "", have, v);
        if (res) {
            ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            if (!ok)
                fprintf(stderr, "mingest: intent: %s", PQerrorMessage(pg));
            PQclear(res);
        }
        pthread_mutex_lock(&R.mu);
        R.at_intent -= n;
        for (i = 0; ok && i < n; i++) {
            jobq_push(&R.ready, batch[i]);
        }
        pthread_mutex_unlock(&R.mu);
        if (ok)
            curl_multi_wakeup(R.multi);
        else
            for (i = 0; i < n; i++)
                job_finish(batch[i], false);
    }
    PQfinish(pg);
    free(v);
    free(have);
    return NULL;
}

/* Store the sent replies: one multi-row INSERT per batch. */
static void *
finisher(void *arg)
{
    struct job *batch[MAX_BATCH];
    const char **v = calloc(4 * MAX_BATCH, sizeof(*v));
    bool *have = calloc(MAX_BATCH + 1, sizeof(bool));
    PGconn *pg = PQconnectdb(R.db);
    int n, i;

    (void)arg;
    if (!v || !have || PQstatus(pg) != CONNECTION_OK) {
        fprintf(stderr, "mingest: connect: %s", PQerrorMessage(pg));
        exit(1);
    }
    for (;;) {
        PGresult *res;
        bool ok = false;

        n = take_jobs(&R.done, &R.cv, batch);
        if (n == 0)
            break;

        if (R.dbq) {
            ok = finish_db(pg, batch, n);
            goto stored;
        }
        for (i = 0; i < n; i++) {
            v[4 * i] = batch[i]->key;
            v[4 * i + 1] = batch[i]->wamid;
            v[4 * i + 2] = batch[i]->body;
            v[4 * i + 3] = batch[i]->llm_us;
        }
        res = insert_rows(pg, "outbox (key, wamid, reply, llm_us)", 4, n, "",
                          have, v);
        if (res) {
            ok = PQresultStatus(res) == PGRES_COMMAND_OK;
            if (!ok)
                fprintf(stderr, "mingest: outbox: %s", PQerrorMessage(pg));
            PQclear(res);
        }
    stored:
        pthread_mutex_lock(&R.mu);
        if (ok)
            R.stored += (unsigned long)n;
        if (R.dbq) {
            R.outstanding -= n;
            pthread_cond_signal(&R.claim_cv);
        }
        pthread_mutex_unlock(&R.mu);
        for (i = 0; i < n; i++)
            job_free(batch[i]);
    }
    PQfinish(pg);
    free(v);
    free(have);
    return NULL;
}

/* Queue a reply job for each request the committer stored as new. */
static void
queue_replies(struct req **batch, int n, PGresult *res)
{
    struct jobq got;
    int rows = PQntuples(res), r, at = 0, i;

    jobq_init(&got);
    for (r = 0; r < rows; r++) {
        const char *key = PQgetvalue(res, r, 0);
        struct job *j;

        /* RETURNING comes in VALUES order here; search on from there. */
        for (i = 0; i < n && strcmp(batch[(at + i) % n]->key, key) != 0; i++)
            ;
        if (i == n)
            continue;
        at = (at + i) % n;
        j = job_new(key, batch[at]->body);
        if (j)
            jobq_push(&got, j);
    }
    if (!got.head)
        return;
    pthread_mutex_lock(&R.mu);
    jobq_splice(&R.todo, &got);
    pthread_mutex_unlock(&R.mu);
    curl_multi_wakeup(R.multi);
}
