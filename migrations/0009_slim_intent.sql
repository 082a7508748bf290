-- A slim intent: before a reply is sent, record only what must precede the
-- send; record the rest with the finish, after it (issue 6;
-- docs/PERFORMANCE.md, "The slim intent").
--
-- What must precede the send is the response row in state 'sending', with
-- the exact request and completion: if Parley dies during the send, the
-- next claim finds it, marks it 'abandoned' and records a
-- possible_duplicate_send event (inference/job.c, SQL_LOAD_FROM_V). Its
-- inputs (response_inputs), its outbound message rows and its llm events
-- (llm_request, response_generated, error) used to be written then too, as
-- outbound rows in state 'sending' that the finish updated. They are now
-- written once, by the finish, in their final state: one statement and
-- one table before the send instead of six and five (pgbench, one job:
-- 0.85 against 0.16-0.31 ms), and no UPDATE of each outbound row (a new
-- version with a new entry in each of its indexes) after it.
--
-- What a crash during the send leaves is less: the abandoned response
-- (request, completion, model, tokens, timings) and the event, but no
-- outbound rows (the parts are the completion, split) and no inputs or
-- llm events for it. Its messages are answered again.
--
-- The finish's other steps are 0007's (a migration that has run is never
-- edited).
--
-- The documents change shape, so the functions get new names and the old
-- ones stay: during a rolling upgrade, processes of the previous release
-- keep calling parley_intent_jobs() / parley_finish_jobs() (0006, 0007)
-- with their documents, and rows either writes are read alike (a response
-- left 'sending' by an old process has outbound rows 'sending', which the
-- repair marks 'unknown'). A later migration drops the old pair once no
-- process of a release before this one can run.

-- parley_reply_intents(batch): batch is a JSON array of job documents
--   {conv, owner, lease, lease_ms, kind, model, request, completion,
--    finish_reason, prompt_tokens, completion_tokens, ttft_ms, llm_ms,
--    attempts, error, worker}
-- Extends the lease of each job that still holds it and inserts its
-- response ('sending'). Returns (n, result) per element, n 1-based, result
-- {"response_id": id}, or NULL (nothing of that job changed) when its lease
-- is gone. One statement. A batch may hold a stale job of a conversation
-- beside the job that holds its lease now (core/batch.c keys calls by
-- conversation but does not merge them): only the holder matches in u,
-- and each element finds its response through its own match (u.n), not
-- through its conversation.
CREATE FUNCTION parley_reply_intents(batch jsonb)
RETURNS TABLE (n int, result jsonb) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH b AS (
        SELECT t.n, t.j, (t.j->>'conv')::bigint AS conv
        FROM jsonb_array_elements(batch) WITH ORDINALITY t(j, n)),
    u AS (
        -- (core/batch.c sorts the batch by conversation id; "= ANY" keeps
        -- the generic plan on the primary key.)
        UPDATE conversations c
        SET lease_until = now() + (b.j->>'lease_ms')::int
                                  * interval '1 millisecond'
        FROM b
        WHERE c.id = ANY (ARRAY(SELECT b.conv FROM b)) AND c.id = b.conv
          AND c.lease_owner = b.j->>'owner'
          AND c.lease_count = (b.j->>'lease')::int
        RETURNING c.id, b.n, b.j),
    r AS (
        INSERT INTO responses (conversation_id, kind, model,
                               request_messages, completion, finish_reason,
                               prompt_tokens, completion_tokens, ttft_ms,
                               llm_ms, attempts, error, worker)
        SELECT u.id, u.j->>'kind', u.j->>'model', u.j->'request',
               u.j->>'completion', u.j->>'finish_reason',
               (u.j->>'prompt_tokens')::int,
               (u.j->>'completion_tokens')::int, (u.j->>'ttft_ms')::int,
               (u.j->>'llm_ms')::int, (u.j->>'attempts')::int,
               u.j->>'error', u.j->>'worker'
        FROM u ORDER BY u.n
        RETURNING id, conversation_id)
    SELECT b.n::int,
           CASE WHEN r.id IS NOT NULL
                THEN jsonb_build_object('response_id', r.id) END
    FROM b LEFT JOIN u ON u.n = b.n
    LEFT JOIN r ON r.conversation_id = u.id
    ORDER BY b.n;
END $$;

-- parley_reply_finishes(batch): batch is a JSON array of job documents
--   {conv, owner, lease, platform, response_id?, rstatus, istate,
--    inbound: [ids], parts: [{ord, text, pid, status, rank, ecode}],
--    events: [{type, message_id?, part?, response_id?, ref, data}],
--    signals?}
-- With a response_id: its inputs are the job's inbound messages, and its
-- parts are inserted as outbound messages (ord 1-based, pid when the
-- platform accepted it). An event names its message by id, or by part
-- (the outbound message of that ordinal). Returns (n, ok, more) as 0007's
-- parley_finish_jobs().
CREATE FUNCTION parley_reply_finishes(batch jsonb)
RETURNS TABLE (n int, ok boolean, more boolean) LANGUAGE plpgsql AS $$
DECLARE
    still    bigint[] := '{}';  -- held conversations with messages pending
    convs    bigint[] := ARRAY(SELECT (t.j->>'conv')::bigint
                               FROM jsonb_array_elements(batch) t(j));
    held     bigint[];  -- conversations whose lease the caller still holds
    plats    text[];
    j_conv   bigint[]; j_resp bigint[]; j_rstatus text[]; j_sent boolean[];
    p_id     bigint[]; p_pid text[]; p_resp bigint[]; p_part int[];
    i_id     bigint[]; i_conv bigint[]; i_state text[]; i_resp bigint[];
    sent     text[];
    s        record;
BEGIN
    -- Every join below reaches a table through "= ANY (array)" on an
    -- index, or a LATERAL lookup: a generic plan made while the tables were
    -- small must not hash-join them in full once they are large.
    IF cardinality(convs) <> (SELECT count(DISTINCT x) FROM unnest(convs) x) THEN
        RAISE EXCEPTION 'parley_reply_finishes: a conversation twice in one batch';
    END IF;

    SELECT coalesce(array_agg(l.id), '{}'),
           coalesce(array_agg(DISTINCT l.platform), '{}')
    INTO held, plats
    FROM (SELECT c.id, c.platform, c.lease_owner, c.lease_count
          FROM conversations c WHERE c.id = ANY (convs)
          ORDER BY c.id FOR NO KEY UPDATE) l
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

        -- The response's inputs: the messages its job answered.
        INSERT INTO response_inputs (response_id, message_id)
        SELECT (t.j->>'response_id')::bigint, i.id::bigint
        FROM jsonb_array_elements(batch) t(j),
             jsonb_array_elements_text(coalesce(t.j->'inbound', '[]')) i(id)
        WHERE (t.j->>'conv')::bigint = ANY (held)
          AND t.j->>'response_id' IS NOT NULL;

        SELECT array_agg(p.pid) INTO sent
        FROM jsonb_array_elements(batch) t(j),
             jsonb_to_recordset(coalesce(t.j->'parts', '[]')) AS p(pid text)
        WHERE (t.j->>'conv')::bigint = ANY (held) AND p.pid IS NOT NULL;
        IF sent IS NOT NULL THEN
            -- A Messenger/Instagram echo of the very message may have been
            -- stored first: ours replaces it.
            -- (One lookup per id on both columns of the unique index: with
            -- "platform = ANY AND platform_message_id = ANY" the generic
            -- plan made on a small table searched by platform alone, that
            -- is every message of the platform, on each call.)
            DELETE FROM messages m
            WHERE m.id = ANY (ARRAY(
                SELECT (SELECT x.id FROM messages x
                        WHERE x.platform = pl.platform
                          AND x.platform_message_id = q.pid
                          AND x.direction = 'out' AND x.response_id IS NULL)
                FROM unnest(sent) AS q(pid), unnest(plats) AS pl(platform)));
        END IF;

        -- The outbound messages, in their final state.
        WITH ins AS (
            INSERT INTO messages (conversation_id, direction, platform,
                                  platform_message_id, kind, text, part,
                                  response_id, status, status_rank,
                                  error_code, sent_at)
            SELECT (t.j->>'conv')::bigint, 'out', t.j->>'platform', p.pid,
                   'text', p.text, p.ord, (t.j->>'response_id')::bigint,
                   p.status, coalesce(p.rank, 0), p.ecode,
                   CASE WHEN p.pid IS NULL THEN NULL ELSE now() END
            FROM jsonb_array_elements(batch) t(j),
                 jsonb_to_recordset(coalesce(t.j->'parts', '[]'))
                     AS p(ord int, text text, pid text, status text,
                          rank int, ecode int)
            WHERE (t.j->>'conv')::bigint = ANY (held)
              AND t.j->>'response_id' IS NOT NULL
            ORDER BY (t.j->>'conv')::bigint, p.ord
            RETURNING id, platform_message_id, response_id, part)
        SELECT array_agg(ins.id), array_agg(ins.platform_message_id),
               array_agg(ins.response_id), array_agg(ins.part)
        INTO p_id, p_pid, p_resp, p_part FROM ins;

        IF sent IS NOT NULL THEN
            -- Statuses (and reactions) that arrived before the send
            -- answer: link them, and apply the highest status rank.
            WITH l AS (
                UPDATE events e SET response_id = x.resp, message_id = x.id
                FROM unnest(p_id, p_pid, p_resp) AS x(id, pid, resp)
                WHERE e.ref_platform_message_id = ANY (sent)
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
            -- (One index lookup per message. With a plain reply_state =
            -- 'pending' the generic plan made on a small table walked the
            -- whole pending index, every conversation's; with
            -- "m.id = ANY (i_id)" it fetched the batch's rows and then
            -- matched every row against every element, n^2.)
            UPDATE messages m SET reply_state = x.st, response_id = x.resp
            FROM unnest(i_id, i_conv, i_state, i_resp) AS x(id, conv, st, resp)
            WHERE m.conversation_id = x.conv AND m.id = x.id
              AND coalesce(m.reply_state, '') = 'pending';
        END IF;

        -- Events: [{type, message_id | part, ref, data, response_id?}];
        -- response_id defaults to the job's response, part names the
        -- outbound message of that ordinal.
        INSERT INTO events (type, platform, channel, user_id, user_pseudonym,
                            conversation_id, message_id, response_id,
                            ref_platform_message_id, data)
        SELECT e.type, c.platform, c.channel, u.id, u.pseudonym, c.id,
               coalesce(e.message_id,
                        (SELECT o.id FROM unnest(p_id, p_resp, p_part)
                                          AS o(id, resp, part)
                         WHERE e.part IS NOT NULL
                           AND o.resp = (t.j->>'response_id')::bigint
                           AND o.part = e.part)),
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
                        AS (type text, message_id bigint, part int,
                            response_id bigint, ref text, data jsonb))
                 WITH ORDINALITY AS e(type, message_id, part, response_id,
                                      ref, data, k)
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

        WITH u AS (
            UPDATE conversations c SET lease_owner = NULL, lease_until = NULL,
                   pending_since = (SELECT min(m.received_at) FROM messages m
                                    WHERE m.conversation_id = c.id
                                      AND m.reply_state = 'pending'),
                   last_reply_at = CASE WHEN x.sent THEN now()
                                        ELSE c.last_reply_at END,
                   last_response_id = CASE WHEN x.sent THEN x.resp
                                           ELSE c.last_response_id END
            FROM unnest(j_conv, j_resp, j_sent) AS x(conv, resp, sent)
            WHERE c.id = ANY (held) AND c.id = x.conv
            RETURNING c.id, c.pending_since)
        SELECT coalesce(array_agg(u.id) FILTER (WHERE u.pending_since IS NOT NULL),
                        '{}')
        INTO still FROM u;
    END IF;

    RETURN QUERY
    SELECT t.n::int, (t.j->>'conv')::bigint = ANY (held),
           (t.j->>'conv')::bigint = ANY (still)
    FROM jsonb_array_elements(batch) WITH ORDINALITY t(j, n);
END $$;
