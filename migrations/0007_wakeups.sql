-- Wake-ups that match the work, and no index entries for rows without a
-- response.
--
-- 1. parley_ingest() returns which items made their conversation ready
--    (ready): the gateway wakes its own worker pool only for those (a
--    conversation pending already is claimed when a worker has room, or
--    when the job answering it finishes, see 2.). Its NOTIFY parley_work
--    (sent only then, as before) names the sending process in the payload
--    (the connection's parley.instance setting, core/db.c), so that the
--    process ignores its own: its pool was woken in-process, and the echo
--    cost one empty claim per batch.
-- 2. parley_finish_jobs() says which finished conversations have messages
--    pending (more): ones that arrived while the job was thinking could not
--    be claimed then, and without a wake-up they waited for the
--    dispatcher's poll (2 s).
-- 3. The response_id indexes of messages and events hold only the rows that
--    have one. Every inbound message and most events are written with
--    response_id NULL, and a btree indexes NULLs too: one index insert per
--    row for entries no query reads (every lookup is response_id = $1 or a
--    join on it, which implies NOT NULL, so the partial indexes serve them,
--    the foreign key's ON DELETE SET NULL included).
-- 4. A conversation that parley_ingest() creates for a message to answer is
--    created ready (pending_since set in the INSERT) instead of being
--    locked and updated afterwards: an update of pending_since is never HOT
--    (conversations_ready_idx holds it), so that was a second row version
--    with three index entries, a row lock and a foreign key re-check per
--    new conversation (bench/ingest_cost.sql with every user new, batches
--    of 14, four alternating runs: 148-174 -> 90-150 us per item).
-- 5. Two statements of parley_finish_jobs() had generic plans, made on
--    the nearly empty tables of a fresh install, that read more rows the
--    bigger the tables: the echoes its sends replace were searched by
--    platform alone (every message of the platform, 0.45 ms per call at
--    20,000 messages in a paced run), and the inbound messages it marks
--    answered were found by walking the whole pending index (every
--    conversation's pending messages: 12.8 ms for one call with a backlog
--    of 1,500), then matched against the batch pairwise (180 messages:
--    32,220 comparisons, 16.5 ms). Found with auto_explain on e2e runs
--    (log_nested_statements); now one index lookup per row.
-- 6. parley_finish_jobs() locks its conversations FOR NO KEY UPDATE, not
--    FOR UPDATE: it changes no key, and FOR UPDATE also blocked the foreign
--    key check (FOR KEY SHARE) of every message being ingested for those
--    conversations until the finish had committed (auto_explain, 500 users
--    answered at LLM 0 ms: 12,598 such checks over 0.25 ms, 4.1 s in all).
--    An ingest still waits where it must: its own lock before marking the
--    conversation ready conflicts with this one.
-- The function bodies are 0004's and 0006's otherwise (a migration that
-- has run is never edited; its checksum is recorded).

DROP INDEX messages_response_idx;
CREATE INDEX messages_response_idx ON messages (response_id)
    WHERE response_id IS NOT NULL;

DROP INDEX events_response_idx;
CREATE INDEX events_response_idx ON events (response_id)
    WHERE response_id IS NOT NULL;

-- Deleting a message (erasure, an echo replaced by our own row) checks the
-- rows that refer to it; without an index that is a scan of the table per
-- deleted message.
CREATE INDEX referrals_message_idx ON referrals (message_id);
CREATE INDEX interest_signals_message_idx ON interest_signals (message_id);

DROP FUNCTION parley_ingest(jsonb);
CREATE FUNCTION parley_ingest(batch jsonb)
RETURNS TABLE (idx int, queued boolean, conversation_id bigint, ready boolean)
LANGUAGE plpgsql AS $$
DECLARE
    items parley_ingest_item[];
    woke  bigint[];  -- conversations this batch made ready
    fresh bigint[];  -- ... of them, created ready
    todo  bigint[];  -- conversations of new messages to answer, not fresh
    has_opt boolean; has_store boolean; has_fb boolean;
    has_react boolean; has_status boolean; has_wm boolean;
    has_ref boolean; has_msg boolean;
BEGIN
    -- 1. Dedupe on the platform's own ids: only items whose key is new go
    --    on. Within a batch the first occurrence wins.
    WITH src AS (
        SELECT DISTINCT ON (s.platform, s.key) s.*
        FROM jsonb_populate_recordset(NULL::parley_ingest_item, batch) s
        ORDER BY s.platform, s.key, s.i
    ), ins AS (
        INSERT INTO inbound_keys (platform, key)
        SELECT s.platform, s.key FROM src s
        ORDER BY s.platform, s.key   -- one lock order for concurrent batches
        ON CONFLICT DO NOTHING
        RETURNING inbound_keys.platform, inbound_keys.key
    )
    SELECT array_agg(s ORDER BY s.i) INTO items
    FROM src s JOIN ins ON ins.platform = s.platform AND ins.key = s.key;

    IF items IS NULL THEN
        RETURN;
    END IF;

    -- Which kinds this batch holds: statements for absent kinds are
    -- skipped (a batch of plain messages runs about half of them).
    SELECT bool_or(x.etype IN ('opt_out', 'opt_in')),
           bool_or(x.store IS NOT NULL),
           bool_or(x.etype = 'feedback'),
           bool_or(x.etype IN ('reaction_added', 'reaction_removed')),
           bool_or(x.rank > 0 AND x.ctx IS NOT NULL AND coalesce(x.wm, 0) = 0),
           bool_or(x.wm > 0),
           bool_or(x.ref IS NOT NULL),
           bool_or(x.etype = 'message_received')
    INTO has_opt, has_store, has_fb, has_react, has_status, has_wm,
         has_ref, has_msg
    FROM unnest(items) x;

    -- 2. Users and conversations.
    INSERT INTO users (platform, platform_user_id, phone, pseudonym, key_version)
    SELECT DISTINCT ON (x.platform, x.uid) x.platform, x.uid, x.phone, x.pseudo, x.kv
    FROM unnest(items) x WHERE x.uid IS NOT NULL
    ORDER BY x.platform, x.uid
    ON CONFLICT (platform, platform_user_id) DO NOTHING;

    -- A conversation created for a message to answer is created ready:
    -- no second row version (every update of pending_since is non-HOT,
    -- the ready index holds it), no lock, no foreign key re-check.
    WITH n AS (
        INSERT INTO conversations (user_id, platform, channel, pending_since)
        SELECT u.id, x.platform, x.channel,
               CASE WHEN bool_or(coalesce(x.queue, false)) THEN now() END
        FROM unnest(items) x
        JOIN users u ON u.platform = x.platform AND u.platform_user_id = x.uid
        WHERE x.channel IS NOT NULL
        GROUP BY u.id, x.platform, x.channel
        ORDER BY u.id, x.platform, x.channel
        ON CONFLICT (platform, channel, user_id) DO NOTHING
        RETURNING id, pending_since)
    SELECT coalesce(array_agg(n.id) FILTER (WHERE n.pending_since IS NOT NULL),
                    '{}')
    INTO fresh FROM n;

    -- Resolve user and conversation once; later statements join by key.
    -- (LATERAL lookups keep the plans on the unique indexes.)
    SELECT array_agg(jsonb_populate_record(x, jsonb_build_object(
               'user_id', l.user_id, 'upseudo', l.pseudonym,
               'conv_id', l.conv_id)) ORDER BY x.i)
    INTO items
    FROM unnest(items) x
    LEFT JOIN LATERAL (
        SELECT u.id AS user_id, u.pseudonym,
               (SELECT c.id FROM conversations c
                WHERE c.user_id = u.id AND c.platform = x.platform
                  AND c.channel = x.channel) AS conv_id
        FROM users u
        WHERE u.platform = x.platform AND u.platform_user_id = x.uid) l
      ON true;

    -- 3. Opt-out / opt-in (before messages: a STOP is not answered by the LLM).
    IF has_opt THEN
        UPDATE users u SET opted_out_at = CASE WHEN o.etype = 'opt_out'
                                               THEN coalesce(u.opted_out_at, now())
                                               ELSE NULL END
        FROM (SELECT DISTINCT ON (x.platform, x.uid) x.platform, x.uid, x.etype
              FROM unnest(items) x WHERE x.etype IN ('opt_out', 'opt_in')
              ORDER BY x.platform, x.uid, x.ts DESC, x.i DESC) o
        WHERE u.platform = o.platform AND u.platform_user_id = o.uid;
    END IF;

    -- 4. Messages in (user) and out (echoes of what the page sent).
    IF has_store THEN
        INSERT INTO messages (conversation_id, direction, platform,
                              platform_message_id, kind, text, media_id,
                              context_id, reply_state, platform_ts, raw)
        SELECT x.conv_id, x.store, x.platform, x.eid, coalesce(x.msg, 'unknown'),
               x.body, x.media, x.ctx,
               CASE WHEN x.queue THEN 'pending' END,
               CASE WHEN x.ts > 0 THEN to_timestamp(x.ts / 1000.0) END, x.raw
        FROM unnest(items) x
        WHERE x.store IS NOT NULL AND x.conv_id IS NOT NULL
        ORDER BY x.i
        ON CONFLICT (platform, platform_message_id) DO NOTHING;
    END IF;

    -- Resolve the item's own message and the message it refers to.
    SELECT array_agg(jsonb_populate_record(x, jsonb_build_object(
               'own_id', (SELECT m.id FROM messages m
                          WHERE x.store IS NOT NULL AND x.eid IS NOT NULL
                            AND m.platform = x.platform
                            AND m.platform_message_id = x.eid),
               'tgt_id', t.id, 'tgt_resp', t.response_id,
               'tgt_out', t.direction = 'out')) ORDER BY x.i)
    INTO items
    FROM unnest(items) x
    LEFT JOIN LATERAL (
        SELECT m.id, m.response_id, m.direction FROM messages m
        WHERE x.ctx IS NOT NULL AND m.platform = x.platform
          AND m.platform_message_id = x.ctx) t ON true;

    -- 5. The event log: one row per new item, linked to its user,
    --    conversation, own message, and the message/response it refers to.
    INSERT INTO events (occurred_at, type, platform, channel, user_id,
                        user_pseudonym, conversation_id, message_id,
                        response_id, platform_event_id,
                        ref_platform_message_id, request_id, data)
    SELECT CASE WHEN x.ts > 0 THEN to_timestamp(x.ts / 1000.0) END,
           x.etype, x.platform, x.channel, x.user_id, x.upseudo, x.conv_id,
           coalesce(x.own_id, x.tgt_id), x.tgt_resp, x.eid, x.ctx, x.rid,
           x.data
    FROM unnest(items) x
    ORDER BY x.i;

    -- 5b. Feedback. Our own thumbs buttons carry the response id in the
    --     payload (parley_fb:up:<id>); it must belong to the clicking
    --     user's conversation.
    IF has_fb THEN
        INSERT INTO feedback (response_id, message_id, conversation_id, user_id,
                              source, polarity, occurred_at)
        SELECT r.id, x.tgt_id, x.conv_id, x.user_id, 'button',
               CASE split_part(x.data->>'payload', ':', 2)
                    WHEN 'up' THEN 1 WHEN 'down' THEN -1 ELSE 0 END,
               CASE WHEN x.ts > 0 THEN to_timestamp(x.ts / 1000.0) END
        FROM unnest(items) x
        JOIN responses r ON r.conversation_id = x.conv_id
         AND r.id = CASE WHEN split_part(x.data->>'payload', ':', 3) ~ '^[0-9]{1,18}$'
                         THEN split_part(x.data->>'payload', ':', 3)::bigint END
        WHERE x.etype = 'feedback';
    END IF;

    -- A reaction on a bot message is feedback on its response; a new
    -- reaction replaces the user's previous one, a removal retracts it.
    IF has_react THEN
        UPDATE feedback f SET retracted_at = now()
        FROM unnest(items) x
        WHERE x.etype IN ('reaction_added', 'reaction_removed')
          AND x.tgt_id IS NOT NULL
          AND f.message_id = x.tgt_id AND f.user_id = x.user_id
          AND f.source = 'reaction' AND f.retracted_at IS NULL;

        INSERT INTO feedback (response_id, message_id, conversation_id, user_id,
                              source, polarity, emoji, occurred_at)
        SELECT x.tgt_resp, x.tgt_id, x.conv_id, x.user_id, 'reaction',
               coalesce((x.data->>'polarity')::smallint, 0), x.data->>'emoji',
               CASE WHEN x.ts > 0 THEN to_timestamp(x.ts / 1000.0) END
        FROM unnest(items) x
        WHERE x.etype = 'reaction_added' AND x.tgt_out AND x.tgt_resp IS NOT NULL
          AND x.conv_id IS NOT NULL;
    END IF;

    -- Implicit signal (never a training label by default): the user wrote
    -- again within 10 minutes of our last reply.
    IF has_msg THEN
        INSERT INTO events (type, platform, channel, user_id, user_pseudonym,
                            conversation_id, message_id, response_id, data)
        SELECT 'user_replied', x.platform, x.channel, x.user_id, x.upseudo,
               x.conv_id, x.own_id, c.last_response_id,
               jsonb_build_object('seconds',
                   round(extract(epoch FROM now() - c.last_reply_at)))
        FROM unnest(items) x
        JOIN conversations c ON c.id = x.conv_id
        WHERE x.etype = 'message_received' AND x.own_id IS NOT NULL
          AND c.last_reply_at > now() - interval '10 minutes';
    END IF;

    -- 6. Delivery status of our messages: a later, lower rank never
    --    overwrites a higher one (late "delivered" after "read").
    IF has_status THEN
        UPDATE messages m SET status = s.etype, status_rank = s.rank,
                              error_code = coalesce(s.ecode, m.error_code)
        FROM (SELECT DISTINCT ON (x.platform, x.ctx) x.platform, x.ctx, x.etype,
                     x.rank, x.ecode
              FROM unnest(items) x
              WHERE x.rank > 0 AND x.ctx IS NOT NULL AND coalesce(x.wm, 0) = 0
              ORDER BY x.platform, x.ctx, x.rank DESC) s
        WHERE m.platform = s.platform AND m.platform_message_id = s.ctx
          AND m.status_rank < s.rank;
    END IF;

    -- Watermarks (Messenger/Instagram): everything we sent up to then.
    IF has_wm THEN
        UPDATE messages m SET status = s.etype, status_rank = s.rank
        FROM (SELECT x.conv_id AS cid, max(x.wm) AS wm, x.etype, x.rank
              FROM unnest(items) x
              WHERE x.wm > 0 AND x.conv_id IS NOT NULL
              GROUP BY x.conv_id, x.etype, x.rank) s
        WHERE m.conversation_id = s.cid AND m.direction = 'out'
          AND m.sent_at <= to_timestamp(s.wm / 1000.0)
          AND m.status_rank < s.rank;
    END IF;

    -- 7. Ad attribution.
    IF has_ref THEN
        INSERT INTO referrals (conversation_id, message_id, platform, source_type,
                               source_id, source_url, headline, body, media_type,
                               ctwa_clid, ad_id, ref, occurred_at)
        SELECT x.conv_id, x.tgt_id, x.platform, x.ref->>'source_type',
               x.ref->>'source_id', x.ref->>'source_url', x.ref->>'headline',
               x.ref->>'body', x.ref->>'media_type', x.ref->>'ctwa_clid',
               x.ref->>'ad_id', x.ref->>'ref',
               CASE WHEN x.ts > 0 THEN to_timestamp(x.ts / 1000.0) END
        FROM unnest(items) x
        WHERE x.ref IS NOT NULL AND jsonb_typeof(x.ref) = 'object'
          AND x.conv_id IS NOT NULL;
    END IF;

    -- 8. Queue: conversations with new inbound work become ready (those
    --    created ready above are done). Rows are locked in id order so
    --    concurrent batches cannot deadlock. Only a conversation that was
    --    idle changes: one already pending (or being answered: its worker
    --    recomputes pending_since under the same row lock) is left alone,
    --    so a chatty user does not rewrite the row on every message.
    --    ready = true: the caller wakes its pool for those.
    woke := fresh;
    SELECT array_agg(DISTINCT x.conv_id ORDER BY x.conv_id) INTO todo
    FROM unnest(items) x
    WHERE x.queue AND x.own_id IS NOT NULL AND x.conv_id <> ALL (fresh);
    IF todo IS NOT NULL THEN
        PERFORM 1 FROM conversations WHERE id = ANY (todo)
        ORDER BY id FOR NO KEY UPDATE;
        WITH u AS (
            UPDATE conversations c SET pending_since = now()
            WHERE c.id = ANY (todo) AND c.pending_since IS NULL
            RETURNING c.id)
        SELECT woke || coalesce(array_agg(u.id), '{}') INTO woke FROM u;
    END IF;
    IF cardinality(woke) > 0 THEN
        -- Wakes `parley serve` processes blocked in LISTEN parley_work;
        -- delivered at COMMIT, collapsed within the transaction.
        PERFORM pg_notify('parley_work',
                          coalesce(current_setting('parley.instance', true), ''));
    END IF;

    RETURN QUERY
    SELECT x.i, coalesce(x.queue, false) AND x.own_id IS NOT NULL, x.conv_id,
           coalesce(x.queue, false) AND x.own_id IS NOT NULL
               AND x.conv_id = ANY (woke)
    FROM unnest(items) x;
END $$;

-- parley_finish_jobs(batch): as in 0006, and more = true for a job whose
-- conversation still has messages pending after it.
DROP FUNCTION parley_finish_jobs(jsonb);
CREATE FUNCTION parley_finish_jobs(batch jsonb)
RETURNS TABLE (n int, ok boolean, more boolean) LANGUAGE plpgsql AS $$
DECLARE
    still    bigint[] := '{}';  -- held conversations with messages pending
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
                FROM unnest(p_pid) AS q(pid), unnest(plats) AS pl(platform)));

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

