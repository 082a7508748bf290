-- The jobs' writes for a whole batch of jobs (core/batch.c groups
-- concurrent workers' calls) in set-based statements: the statement count
-- per batch no longer grows with the jobs in it. They replace the per-job
-- parley_finish_job() / parley_intent_job() of 0005 (same documents, same
-- effects), which are dropped at the end.

-- parley_finish_jobs(batch): batch is a JSON array of job documents
--   {conv, owner, lease, response_id?, rstatus, istate, inbound: [ids],
--    parts: [{id, pid, status, rank, ecode}],
--    events: [{type, message_id, response_id?, ref, data}], signals?}
-- Returns (n, ok) per element, n 1-based, ok false (nothing of that job
-- changed) when its lease is gone. Conversations are locked first, by id;
-- every later statement takes its snapshot after the locks, so it sees
-- each message whose ingest touched the conversation before, and an ingest
-- that comes later waits.

CREATE FUNCTION parley_finish_jobs(batch jsonb)
RETURNS TABLE (n int, ok boolean) LANGUAGE plpgsql AS $$
DECLARE
    convs    bigint[] := ARRAY(SELECT (t.j->>'conv')::bigint
                               FROM jsonb_array_elements(batch) t(j));
    held     bigint[];  -- conversations whose lease the caller still holds
    plats    text[];
    j_conv   bigint[]; j_resp bigint[]; j_rstatus text[]; j_sent boolean[];
    p_id     bigint[]; p_pid text[]; p_status text[]; p_rank int[];
    p_ecode  int[];    p_resp bigint[];
    i_id     bigint[]; i_conv bigint[]; i_state text[]; i_resp bigint[];
    s        record;
BEGIN
    -- Every join below reaches a table through "= ANY (array)" on an
    -- index, or a LATERAL lookup: a generic plan made while the tables were
    -- small must not hash-join them in full once they are large.
    IF cardinality(convs) <> (SELECT count(DISTINCT x) FROM unnest(convs) x) THEN
        RAISE EXCEPTION 'parley_finish_jobs: a conversation twice in one batch';
    END IF;

    SELECT coalesce(array_agg(l.id), '{}'),
           coalesce(array_agg(DISTINCT l.platform), '{}')
    INTO held, plats
    FROM (SELECT c.id, c.platform, c.lease_owner, c.lease_count
          FROM conversations c WHERE c.id = ANY (convs)
          ORDER BY c.id FOR UPDATE) l
    JOIN jsonb_array_elements(batch) t(j)
      ON l.id = (t.j->>'conv')::bigint AND l.lease_owner = t.j->>'owner'
     AND l.lease_count = (t.j->>'lease')::int;

    IF cardinality(held) > 0 THEN
        SELECT array_agg((t.j->>'conv')::bigint),
               array_agg((t.j->>'response_id')::bigint),
               array_agg(t.j->>'rstatus'),
               array_agg(EXISTS (SELECT 1 FROM jsonb_array_elements(
                                     coalesce(t.j->'parts', '[]')) q
                                 WHERE q->>'pid' IS NOT NULL))
        INTO j_conv, j_resp, j_rstatus, j_sent
        FROM jsonb_array_elements(batch) t(j)
        WHERE (t.j->>'conv')::bigint = ANY (held);

        SELECT array_agg(p.id), array_agg(p.pid), array_agg(p.status),
               array_agg(p.rank), array_agg(p.ecode),
               array_agg((t.j->>'response_id')::bigint)
        INTO p_id, p_pid, p_status, p_rank, p_ecode, p_resp
        FROM jsonb_array_elements(batch) t(j),
             jsonb_to_recordset(coalesce(t.j->'parts', '[]'))
                 AS p(id bigint, pid text, status text, rank int, ecode int)
        WHERE (t.j->>'conv')::bigint = ANY (held);

        IF p_id IS NOT NULL THEN
            -- A Messenger/Instagram echo of the very message may have been
            -- stored first: ours replaces it.
            DELETE FROM messages m
            WHERE m.platform = ANY (plats) AND m.platform_message_id = ANY (p_pid)
              AND m.direction = 'out' AND m.response_id IS NULL;

            UPDATE messages m SET platform_message_id = p.pid,
                   status = p.status, status_rank = p.rank,
                   error_code = p.ecode,
                   sent_at = CASE WHEN p.pid IS NULL THEN NULL ELSE now() END
            FROM unnest(p_id, p_pid, p_status, p_rank, p_ecode)
                 AS p(id, pid, status, rank, ecode)
            WHERE m.id = ANY (p_id) AND m.id = p.id;

            -- Statuses (and reactions) that arrived before the send
            -- answer: link them, and apply the highest status rank.
            WITH l AS (
                UPDATE events e SET response_id = x.resp, message_id = x.id
                FROM unnest(p_id, p_pid, p_resp) AS x(id, pid, resp)
                WHERE e.ref_platform_message_id = ANY (p_pid)
                  AND e.ref_platform_message_id = x.pid
                  AND e.response_id IS NULL
                  AND e.received_at > now() - interval '1 day'
                RETURNING x.id AS mid, e.type),
            r AS (
                SELECT l.mid, max(CASE l.type WHEN 'sent' THEN 1
                                              WHEN 'delivered' THEN 2
                                              WHEN 'read' THEN 3
                                              WHEN 'failed' THEN 4
                                              ELSE 0 END) AS rk
                FROM l GROUP BY l.mid)
            UPDATE messages m SET status_rank = r.rk,
                   status = CASE r.rk WHEN 1 THEN 'sent' WHEN 2 THEN 'delivered'
                                      WHEN 3 THEN 'read' ELSE 'failed' END
            FROM r WHERE m.id = ANY (p_id) AND m.id = r.mid
              AND r.rk > m.status_rank;
        END IF;

        UPDATE responses r SET status = x.st, completed_at = now()
        FROM unnest(j_resp, j_rstatus) AS x(id, st)
        WHERE r.id = ANY (j_resp) AND r.id = x.id;

        SELECT array_agg(i.id::bigint), array_agg((t.j->>'conv')::bigint),
               array_agg(t.j->>'istate'),
               array_agg((t.j->>'response_id')::bigint)
        INTO i_id, i_conv, i_state, i_resp
        FROM jsonb_array_elements(batch) t(j),
             jsonb_array_elements_text(coalesce(t.j->'inbound', '[]')) i(id)
        WHERE (t.j->>'conv')::bigint = ANY (held);
        IF i_id IS NOT NULL THEN
            UPDATE messages m SET reply_state = x.st, response_id = x.resp
            FROM unnest(i_id, i_conv, i_state, i_resp) AS x(id, conv, st, resp)
            WHERE m.id = ANY (i_id) AND m.id = x.id
              AND m.conversation_id = x.conv AND m.reply_state = 'pending';
        END IF;

        -- Events: [{type, message_id, ref, data, response_id?}];
        -- response_id defaults to the job's response.
        INSERT INTO events (type, platform, channel, user_id, user_pseudonym,
                            conversation_id, message_id, response_id,
                            ref_platform_message_id, data)
        SELECT e.type, c.platform, c.channel, u.id, u.pseudonym, c.id,
               e.message_id,
               coalesce(e.response_id, (t.j->>'response_id')::bigint),
               e.ref, e.data
        FROM jsonb_array_elements(batch) WITH ORDINALITY t(j, n)
        CROSS JOIN LATERAL (
            SELECT c.id, c.platform, c.channel, c.user_id FROM conversations c
            WHERE c.id = (t.j->>'conv')::bigint OFFSET 0) c
        CROSS JOIN LATERAL (
            SELECT u.id, u.pseudonym FROM users u
            WHERE u.id = c.user_id OFFSET 0) u
        CROSS JOIN LATERAL
             ROWS FROM (jsonb_to_recordset(coalesce(t.j->'events', '[]'))
                        AS (type text, message_id bigint, response_id bigint,
                            ref text, data jsonb))
                 WITH ORDINALITY AS e(type, message_id, response_id, ref,
                                      data, k)
        WHERE (t.j->>'conv')::bigint = ANY (held)
        ORDER BY t.n, e.k;

        -- Ad signals: few jobs carry them; one statement each.
        FOR s IN SELECT (t.j->>'conv')::bigint AS conv, t.j->'signals' AS sig
                 FROM jsonb_array_elements(batch) t(j)
                 WHERE (t.j->>'conv')::bigint = ANY (held)
                   AND jsonb_array_length(coalesce(t.j->'signals', '[]')) > 0
        LOOP
            PERFORM parley_store_signals(s.conv, s.sig);
        END LOOP;

        UPDATE conversations c SET lease_owner = NULL, lease_until = NULL,
               pending_since = (SELECT min(m.received_at) FROM messages m
                                WHERE m.conversation_id = c.id
                                  AND m.reply_state = 'pending'),
               last_reply_at = CASE WHEN x.sent THEN now()
                                    ELSE c.last_reply_at END,
               last_response_id = CASE WHEN x.sent THEN x.resp
                                       ELSE c.last_response_id END
        FROM unnest(j_conv, j_resp, j_sent) AS x(conv, resp, sent)
        WHERE c.id = ANY (held) AND c.id = x.conv;
    END IF;

    RETURN QUERY
    SELECT t.n::int, (t.j->>'conv')::bigint = ANY (held)
    FROM jsonb_array_elements(batch) WITH ORDINALITY t(j, n);
END $$;

-- The ad-signal part of a finished job: per-user
-- rows and the decayed profile (half-life 30 days) only where the policy
-- allows and never for a sensitive category; the user-less daily
-- aggregate for everything.
CREATE FUNCTION parley_store_signals(conv bigint, signals jsonb)
RETURNS void LANGUAGE sql AS $$
    WITH s AS (
        SELECT * FROM jsonb_to_recordset(signals) AS x(
            message_id bigint, category text, name text, tier int,
            score real, intents text[], sensitive boolean,
            per_user boolean)),
    c AS (SELECT id, user_id, platform FROM conversations WHERE id = conv),
    ins AS (
        INSERT INTO interest_signals (user_id, conversation_id, message_id,
                                      platform, category, category_name,
                                      tier, score, intents)
        SELECT c.user_id, c.id, s.message_id, c.platform, s.category,
               s.name, s.tier, s.score, s.intents
        FROM s, c WHERE s.per_user AND NOT s.sensitive),
    prof AS (
        INSERT INTO interest_profiles (user_id, category, score,
                                       last_seen_at)
        SELECT c.user_id, s.category, sum(s.score), now()
        FROM s, c WHERE s.per_user AND NOT s.sensitive
        GROUP BY c.user_id, s.category
        ON CONFLICT (user_id, category) DO UPDATE
        SET score = interest_profiles.score
                    * power(0.5, extract(epoch FROM now()
                            - interest_profiles.last_seen_at) / 2592000.0)
                    + excluded.score,
            last_seen_at = now())
    INSERT INTO interest_aggregates (day, platform, category, sensitive,
                                     count)
    SELECT current_date, c.platform, s.category, s.sensitive, count(*)
    FROM s, c GROUP BY 1, 2, 3, 4
    ON CONFLICT (day, platform, category) DO UPDATE
    SET count = interest_aggregates.count + excluded.count;
$$;

-- parley_intent_jobs(batch): record, before anything is sent, the response
-- each job is about to send. batch is a JSON array of job documents
--   {conv, owner, lease, lease_ms, platform, kind, model, request,
--    completion, finish_reason, prompt_tokens, completion_tokens, ttft_ms,
--    llm_ms, attempts, error, worker, inputs: [message ids],
--    parts: [texts], events: [{type, message_id, data}]}
-- Returns (n, result) per element, n 1-based, result {"response_id": id,
-- "parts": [outbound message ids in order]} or NULL (nothing of that job
-- changed) when its lease is gone.
CREATE FUNCTION parley_intent_jobs(batch jsonb)
RETURNS TABLE (n int, result jsonb) LANGUAGE plpgsql AS $$
DECLARE
    convs   bigint[] := ARRAY(SELECT (t.j->>'conv')::bigint
                              FROM jsonb_array_elements(batch) t(j));
    held    bigint[];
    r_conv  bigint[]; r_id bigint[];     -- the new responses
    pr_resp bigint[]; pr_parts jsonb[];  -- their outbound rows
BEGIN
    IF cardinality(convs) <> (SELECT count(DISTINCT x) FROM unnest(convs) x) THEN
        RAISE EXCEPTION 'parley_intent_jobs: a conversation twice in one batch';
    END IF;

    -- Extend the lease of every job that still holds it (core/batch.c
    -- sorts the batch by conversation id: rows are locked in that order).
    WITH u AS (
        UPDATE conversations c
        SET lease_until = now() + x.ms * interval '1 millisecond'
        FROM (SELECT (t.j->>'conv')::bigint AS conv, t.j->>'owner' AS owner,
                     (t.j->>'lease')::int AS lease,
                     (t.j->>'lease_ms')::int AS ms
              FROM jsonb_array_elements(batch) t(j)) x
        WHERE c.id = ANY (convs) AND c.id = x.conv
          AND c.lease_owner = x.owner AND c.lease_count = x.lease
        RETURNING c.id)
    SELECT coalesce(array_agg(u.id), '{}') INTO held FROM u;

    IF cardinality(held) > 0 THEN
        WITH ins AS (
            INSERT INTO responses (conversation_id, kind, model,
                                   request_messages, completion,
                                   finish_reason, prompt_tokens,
                                   completion_tokens, ttft_ms, llm_ms,
                                   attempts, error, worker)
            SELECT (t.j->>'conv')::bigint, t.j->>'kind', t.j->>'model',
                   t.j->'request', t.j->>'completion', t.j->>'finish_reason',
                   (t.j->>'prompt_tokens')::int,
                   (t.j->>'completion_tokens')::int, (t.j->>'ttft_ms')::int,
                   (t.j->>'llm_ms')::int, (t.j->>'attempts')::int,
                   t.j->>'error', t.j->>'worker'
            FROM jsonb_array_elements(batch) WITH ORDINALITY t(j, n)
            WHERE (t.j->>'conv')::bigint = ANY (held)
            ORDER BY t.n
            RETURNING id, conversation_id)
        SELECT array_agg(ins.conversation_id), array_agg(ins.id)
        INTO r_conv, r_id FROM ins;

        INSERT INTO response_inputs (response_id, message_id)
        SELECT r.id, x::bigint
        FROM unnest(r_conv, r_id) r(conv, id)
        JOIN jsonb_array_elements(batch) t(j)
          ON (t.j->>'conv')::bigint = r.conv,
             jsonb_array_elements_text(coalesce(t.j->'inputs', '[]')) x;

        WITH ins AS (
            INSERT INTO messages (conversation_id, direction, platform, kind,
                                  text, part, response_id, status)
            SELECT r.conv, 'out', t.j->>'platform', 'text', x.t, x.ord::int,
                   r.id, 'sending'
            FROM unnest(r_conv, r_id) r(conv, id)
            JOIN jsonb_array_elements(batch) t(j)
              ON (t.j->>'conv')::bigint = r.conv,
                 jsonb_array_elements_text(coalesce(t.j->'parts', '[]'))
                     WITH ORDINALITY AS x(t, ord)
            ORDER BY r.conv, x.ord
            RETURNING id, response_id, part)
        SELECT array_agg(p.resp), array_agg(p.parts) INTO pr_resp, pr_parts
        FROM (SELECT ins.response_id AS resp,
                     jsonb_agg(ins.id ORDER BY ins.part) AS parts
              FROM ins GROUP BY ins.response_id) p;

        INSERT INTO events (type, platform, channel, user_id, user_pseudonym,
                            conversation_id, message_id, response_id, data)
        SELECT e.type, c.platform, c.channel, u.id, u.pseudonym, c.id,
               e.message_id, r.id, e.data
        FROM unnest(r_conv, r_id) r(conv, id)
        JOIN jsonb_array_elements(batch) t(j)
          ON (t.j->>'conv')::bigint = r.conv
        CROSS JOIN LATERAL (
            SELECT c.id, c.platform, c.channel, c.user_id FROM conversations c
            WHERE c.id = r.conv OFFSET 0) c
        CROSS JOIN LATERAL (
            SELECT u.id, u.pseudonym FROM users u
            WHERE u.id = c.user_id OFFSET 0) u
        CROSS JOIN LATERAL
             ROWS FROM (jsonb_to_recordset(coalesce(t.j->'events', '[]'))
                        AS (type text, message_id bigint, data jsonb))
                 WITH ORDINALITY AS e(type, message_id, data, k)
        ORDER BY r.conv, e.k;
    END IF;

    RETURN QUERY
    SELECT t.n::int,
           CASE WHEN r.id IS NOT NULL THEN
               jsonb_build_object('response_id', r.id,
                                  'parts', coalesce(p.parts, '[]'::jsonb))
           END
    FROM jsonb_array_elements(batch) WITH ORDINALITY t(j, n)
    LEFT JOIN unnest(r_conv, r_id) r(conv, id)
      ON r.conv = (t.j->>'conv')::bigint
    LEFT JOIN unnest(pr_resp, pr_parts) p(resp, parts) ON p.resp = r.id;
END $$;

-- Replaced by the functions above; nothing calls them.
DROP FUNCTION parley_finish_job(jsonb);
DROP FUNCTION parley_intent_job(jsonb);
