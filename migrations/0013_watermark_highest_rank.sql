-- A delivery and a read watermark of one conversation in one call leave
-- each message they reach at the higher rank (issue 6 review).
--
-- parley_ingest() (0008) and parley_ingest_plain() (0011) raised the
-- messages a watermark reaches with one UPDATE ... FROM a source row per
-- (conversation, status); with a delivery and a read of the same
-- conversation in one call, a message joined two source rows, and
-- PostgreSQL updates a row once, from whichever row it meets first. The
-- message could end "delivered" after its read receipt, for good: the
-- receipt is deduplicated, and the read event itself was stored. The
-- source is now one row per message, its highest rank
-- (tests/integration/test_ingest.py,
-- test_delivery_and_read_watermarks_in_one_batch_leave_the_highest).
--
-- Both functions are otherwise 0008's and 0011's (a migration that has
-- run is never edited).

CREATE OR REPLACE FUNCTION parley_ingest(batch jsonb)
RETURNS TABLE (idx int, queued boolean, conversation_id bigint, ready boolean)
LANGUAGE plpgsql AS $$
DECLARE
    items parley_ingest_item[];
    woke  bigint[];           -- conversations this batch made ready
    fresh bigint[] := '{}';   -- ... of them, created ready
    todo  bigint[];  -- conversations of new messages to answer, not fresh
    has_keyed boolean; has_unknown boolean;
    has_opt boolean; has_store boolean; has_fb boolean;
    has_react boolean; has_status boolean; has_wm boolean;
    has_ref boolean; has_msg boolean;
BEGIN
    -- 1. Within a batch the first occurrence of a key wins. An inbound
    --    message (its key is its platform id) is deduplicated by its
    --    messages row in 4.; every other item here, by inbound_keys.
    --    Which kinds the batch holds is decided here too: statements for
    --    absent kinds are skipped (a batch of plain messages runs about
    --    half of them), and a flag set by an item that turns out to be a
    --    duplicate costs one statement that finds nothing.
    SELECT array_agg(s ORDER BY s.i),
           bool_or((s.store = 'in' AND s.key = s.eid AND s.uid IS NOT NULL
                    AND s.channel IS NOT NULL) IS NOT TRUE),
           bool_or(s.etype IN ('opt_out', 'opt_in')),
           bool_or(s.store IS NOT NULL),
           bool_or(s.etype = 'feedback'),
           bool_or(s.etype IN ('reaction_added', 'reaction_removed')),
           bool_or(s.rank > 0 AND s.ctx IS NOT NULL AND coalesce(s.wm, 0) = 0),
           bool_or(s.wm > 0),
           bool_or(s.ref IS NOT NULL),
           bool_or(s.etype = 'message_received')
    INTO items, has_keyed, has_opt, has_store, has_fb, has_react, has_status,
         has_wm, has_ref, has_msg
    FROM (SELECT DISTINCT ON (s.platform, s.key) s.*
          FROM jsonb_populate_recordset(NULL::parley_ingest_item, batch) s
          ORDER BY s.platform, s.key, s.i) s;

    IF items IS NULL THEN
        RETURN;
    END IF;

    IF has_keyed THEN
        WITH ins AS (
            INSERT INTO inbound_keys (platform, key)
            SELECT x.platform, x.key FROM unnest(items) x
            WHERE (x.store = 'in' AND x.key = x.eid AND x.uid IS NOT NULL
                   AND x.channel IS NOT NULL) IS NOT TRUE
            ORDER BY x.platform, x.key   -- one lock order for concurrent batches
            ON CONFLICT DO NOTHING
            RETURNING inbound_keys.platform, inbound_keys.key
        )
        SELECT array_agg(x ORDER BY x.i) INTO items
        FROM unnest(items) x
        WHERE (x.store = 'in' AND x.key = x.eid AND x.uid IS NOT NULL
               AND x.channel IS NOT NULL) IS TRUE
           OR EXISTS (SELECT 1 FROM ins
                      WHERE ins.platform = x.platform AND ins.key = x.key);
        IF items IS NULL THEN
            RETURN;
        END IF;
    END IF;

    -- 2. Users and conversations: look up the known ones (LATERAL lookups
    --    keep the plans on the unique indexes; the item is rebuilt with a
    --    row constructor, cheaper than jsonb_populate_record(x, ...)). If
    --    any is new, insert it and look up once more.
    FOR pass IN 1 .. 2 LOOP
        SELECT array_agg(ROW(x.i, x.etype, x.platform, x.channel, x.uid,
                x.phone, x.pseudo, x.kv, x.eid, x.key, x.ts, x.ctx, x.msg, x.body,
                x.media, x.store, x.queue, x.rank, x.wm, x.ecode, x.ref,
                x.data, x.raw, x.rid, l.user_id, l.pseudonym, l.conv_id,
                x.own_id, x.tgt_id, x.tgt_resp, x.tgt_out)::parley_ingest_item
                             ORDER BY x.i),
               bool_or((x.uid IS NOT NULL AND l.user_id IS NULL)
                       OR (x.uid IS NOT NULL AND x.channel IS NOT NULL
                           AND l.conv_id IS NULL))
        INTO items, has_unknown
        FROM unnest(items) x
        LEFT JOIN LATERAL (
            SELECT u.id AS user_id, u.pseudonym,
                   (SELECT c.id FROM conversations c
                    WHERE c.user_id = u.id AND c.platform = x.platform
                      AND c.channel = x.channel) AS conv_id
            FROM users u
            WHERE u.platform = x.platform AND u.platform_user_id = x.uid) l
          ON true
        -- A message stored already (a platform's retry) stops here; the
        -- INSERT in 4. still decides for one being stored concurrently.
        -- (Over unnest(items) this is a nested loop on the unique index;
        -- over jsonb_populate_recordset in 1. it was planned as a join
        -- that reads all of messages: docs/PERFORMANCE.md.)
        LEFT JOIN LATERAL (
            SELECT m.id FROM messages m
            WHERE x.store = 'in' AND x.key = x.eid AND x.uid IS NOT NULL
              AND x.channel IS NOT NULL
              AND m.platform = x.platform AND m.platform_message_id = x.eid) d
          ON true
        WHERE d.id IS NULL;
        IF items IS NULL THEN
            RETURN;
        END IF;
        EXIT WHEN pass = 2 OR NOT has_unknown;

        INSERT INTO users (platform, platform_user_id, phone, pseudonym,
                           key_version)
        SELECT DISTINCT ON (x.platform, x.uid) x.platform, x.uid, x.phone,
               x.pseudo, x.kv
        FROM unnest(items) x WHERE x.uid IS NOT NULL AND x.user_id IS NULL
        ORDER BY x.platform, x.uid
        ON CONFLICT (platform, platform_user_id) DO NOTHING;

        -- A conversation created for a message to answer is created
        -- ready: no second row version (every update of pending_since is
        -- non-HOT, the ready index holds it), no lock, no foreign key
        -- re-check.
        WITH n AS (
            INSERT INTO conversations (user_id, platform, channel,
                                       pending_since)
            SELECT u.id, x.platform, x.channel,
                   CASE WHEN bool_or(coalesce(x.queue, false)) THEN now() END
            FROM unnest(items) x
            JOIN users u ON u.platform = x.platform
                        AND u.platform_user_id = x.uid
            WHERE x.channel IS NOT NULL AND x.conv_id IS NULL
            GROUP BY u.id, x.platform, x.channel
            ORDER BY u.id, x.platform, x.channel
            ON CONFLICT (platform, channel, user_id) DO NOTHING
            RETURNING id, pending_since)
        SELECT coalesce(array_agg(n.id)
                        FILTER (WHERE n.pending_since IS NOT NULL), '{}')
        INTO fresh FROM n;
    END LOOP;

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

    -- 4. Messages in (user) and out (echoes of what the page sent). An
    --    inbound message that is not new ends here. Each item gets its own
    --    message (own_id) and the message it refers to (tgt_*), from the
    --    RETURNING when that one is new in this batch.
    IF has_store THEN
        WITH ins AS (
            INSERT INTO messages (conversation_id, direction, platform,
                                  platform_message_id, kind, text, media_id,
                                  context_id, reply_state, platform_ts, raw)
            SELECT x.conv_id, x.store, x.platform, x.eid,
                   coalesce(x.msg, 'unknown'), x.body, x.media, x.ctx,
                   CASE WHEN x.queue THEN 'pending' END,
                   CASE WHEN x.ts > 0 THEN to_timestamp(x.ts / 1000.0) END,
                   x.raw
            FROM unnest(items) x
            WHERE x.store IS NOT NULL AND x.conv_id IS NOT NULL
            ORDER BY x.i
            ON CONFLICT (platform, platform_message_id) DO NOTHING
            RETURNING messages.id, messages.platform,
                      messages.platform_message_id, messages.direction)
        SELECT array_agg(ROW(x.i, x.etype, x.platform, x.channel, x.uid, x.phone,
            x.pseudo, x.kv, x.eid, x.key, x.ts, x.ctx, x.msg, x.body,
            x.media, x.store, x.queue, x.rank, x.wm, x.ecode, x.ref,
            x.data, x.raw, x.rid, x.user_id, x.upseudo, x.conv_id,
            CASE WHEN x.store = 'in' AND x.key = x.eid
                      AND x.uid IS NOT NULL AND x.channel IS NOT NULL
                 THEN o.id
                 WHEN x.store IS NOT NULL AND x.eid IS NOT NULL
                 THEN coalesce(o.id, (SELECT m.id FROM messages m
                                      WHERE m.platform = x.platform
                                        AND m.platform_message_id = x.eid))
            END,
            coalesce(t.id, tn.id), t.response_id,
            coalesce(t.direction, tn.direction) = 'out')::parley_ingest_item
                         ORDER BY x.i)
        INTO items
        FROM unnest(items) x
        LEFT JOIN ins o ON x.store IS NOT NULL
                       AND o.platform = x.platform
                       AND o.platform_message_id = x.eid
        LEFT JOIN ins tn ON x.ctx IS NOT NULL
                        AND tn.platform = x.platform
                        AND tn.platform_message_id = x.ctx
        LEFT JOIN LATERAL (
            SELECT m.id, m.response_id, m.direction FROM messages m
            WHERE x.ctx IS NOT NULL AND m.platform = x.platform
              AND m.platform_message_id = x.ctx) t ON true
        WHERE (x.store = 'in' AND x.key = x.eid AND x.uid IS NOT NULL
               AND x.channel IS NOT NULL AND o.id IS NULL) IS NOT TRUE;
        IF items IS NULL THEN
            RETURN;
        END IF;
    ELSE
        SELECT array_agg(ROW(x.i, x.etype, x.platform, x.channel, x.uid, x.phone,
            x.pseudo, x.kv, x.eid, x.key, x.ts, x.ctx, x.msg, x.body,
            x.media, x.store, x.queue, x.rank, x.wm, x.ecode, x.ref,
            x.data, x.raw, x.rid, x.user_id, x.upseudo, x.conv_id,
            x.own_id, t.id, t.response_id, t.direction = 'out')::parley_ingest_item
                         ORDER BY x.i)
        INTO items
        FROM unnest(items) x
        LEFT JOIN LATERAL (
            SELECT m.id, m.response_id, m.direction FROM messages m
            WHERE x.ctx IS NOT NULL AND m.platform = x.platform
              AND m.platform_message_id = x.ctx) t ON true;
    END IF;

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
        -- One source row per message: the highest rank that reaches it.
        UPDATE messages m SET status = s.etype, status_rank = s.rank
        FROM (SELECT DISTINCT ON (o.id) o.id, w.etype, w.rank
              FROM (SELECT x.conv_id AS cid, max(x.wm) AS wm, x.etype, x.rank
                    FROM unnest(items) x
                    WHERE x.wm > 0 AND x.conv_id IS NOT NULL
                    GROUP BY x.conv_id, x.etype, x.rank) w
              JOIN messages o ON o.conversation_id = w.cid
                             AND o.direction = 'out'
                             AND o.sent_at <= to_timestamp(w.wm / 1000.0)
              ORDER BY o.id, w.rank DESC) s
        WHERE m.id = s.id AND m.status_rank < s.rank;
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

CREATE OR REPLACE FUNCTION parley_ingest_plain(
    p_platform text[], p_channel text[], p_uid text[], p_phone text[],
    p_pseudo text[], p_kv int, p_etype text[], p_key text[], p_eid text[],
    p_ctx text[], p_ts bigint[], p_kind text[], p_body text[],
    p_media text[], p_rank int[], p_ecode int[], p_wm bigint[],
    p_raw jsonb[], p_data jsonb[], p_rid text[])
RETURNS TABLE (idx int, queued boolean, ready boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    todo   int[];             -- items whose user or conversation was unknown
    fresh  bigint[] := '{}';  -- conversations this call created, ready
    woke   bigint[];          -- conversations this call made ready
    idle   bigint[];          -- conversations of new messages, not fresh
    ids    int[] := '{}';     -- stored items ...
    convs  bigint[] := '{}';  -- ... and the conversations of the messages
    stats  int[] := '{}';     -- stored statuses
    s_ids  int[];
    s_conv bigint[];
    s_stat int[];
    s_miss int[];
BEGIN
    FOR pass IN 1 .. 2 LOOP
        WITH x AS (
            SELECT x.n::int - 1 AS i, x.*
            FROM unnest(p_platform, p_channel, p_uid, p_etype, p_key, p_eid,
                        p_ctx, p_ts, p_kind, p_body, p_media, p_rank,
                        p_ecode, p_wm, p_raw, p_data, p_rid)
                 WITH ORDINALITY AS x(platform, channel, uid, etype, key,
                                      eid, ctx, ts, kind, body, media, rank,
                                      ecode, wm, raw, data, rid, n)
            WHERE todo IS NULL OR x.n::int - 1 = ANY (todo)),
        -- The conversation as a scalar subquery (0010: a join got a
        -- generic plan that scanned the whole unique index per item).
        l AS (
            SELECT DISTINCT ON (x.platform, x.key) x.*, u.id AS user_id,
                   u.pseudonym,
                   (SELECT c.id FROM conversations c
                    WHERE c.platform = x.platform AND c.channel = x.channel
                      AND c.user_id = u.id) AS conv_id
            FROM x
            LEFT JOIN users u ON u.platform = x.platform
                             AND u.platform_user_id = x.uid
            ORDER BY x.platform, x.key, x.i),
        -- Statuses are deduplicated by their key, in one lock order for
        -- concurrent batches; messages by their row (ON CONFLICT).
        k AS (
            INSERT INTO inbound_keys (platform, key)
            SELECT l.platform, l.key FROM l
            WHERE l.rank > 0 AND l.conv_id IS NOT NULL
            ORDER BY l.platform, l.key
            ON CONFLICT DO NOTHING
            RETURNING inbound_keys.platform, inbound_keys.key),
        ins AS (
            INSERT INTO messages (conversation_id, direction, platform,
                                  platform_message_id, kind, text, media_id,
                                  reply_state, platform_ts, raw)
            SELECT l.conv_id, 'in', l.platform, l.eid, l.kind, l.body,
                   l.media, 'pending',
                   CASE WHEN l.ts > 0 THEN to_timestamp(l.ts / 1000.0) END,
                   l.raw
            FROM l WHERE l.rank = 0 AND l.conv_id IS NOT NULL
            ORDER BY l.i
            ON CONFLICT (platform, platform_message_id) DO NOTHING
            RETURNING messages.id, messages.platform,
                      messages.platform_message_id),
        new AS (
            SELECT l.*, ins.id AS own_id
            FROM l JOIN ins ON ins.platform = l.platform
                           AND ins.platform_message_id = l.eid),
        -- New statuses and the message each reports on.
        st AS (
            SELECT l.*, t.id AS tgt_id, t.response_id AS tgt_resp
            FROM l JOIN k ON k.platform = l.platform AND k.key = l.key
            LEFT JOIN LATERAL (
                SELECT m.id, m.response_id FROM messages m
                WHERE m.platform = l.platform
                  AND m.platform_message_id = l.ctx) t ON true),
        up AS (
            UPDATE messages m SET status = s.etype, status_rank = s.rank,
                                  error_code = coalesce(s.ecode, m.error_code)
            FROM (SELECT DISTINCT ON (st.platform, st.ctx) st.platform,
                         st.ctx, st.etype, st.rank, st.ecode
                  FROM st WHERE st.wm IS NULL
                  ORDER BY st.platform, st.ctx, st.rank DESC) s
            WHERE m.platform = s.platform AND m.platform_message_id = s.ctx
              AND m.status_rank < s.rank),
        -- A watermark (Messenger, Instagram): every message we sent in
        -- the conversation up to then. The gateway keeps a platform's
        -- watermarks and its statuses by message id out of one call, so
        -- the two UPDATEs never meet on a row.
        upw AS (
            UPDATE messages m SET status = s.etype, status_rank = s.rank
            FROM (SELECT DISTINCT ON (o.id) o.id, w.etype, w.rank
                  FROM (SELECT st.conv_id AS cid, max(st.wm) AS wm,
                               st.etype, st.rank
                        FROM st WHERE st.wm IS NOT NULL
                        GROUP BY st.conv_id, st.etype, st.rank) w
                  JOIN messages o ON o.conversation_id = w.cid
                                 AND o.direction = 'out'
                                 AND o.sent_at <= to_timestamp(w.wm / 1000.0)
                  ORDER BY o.id, w.rank DESC) s
            WHERE m.id = s.id AND m.status_rank < s.rank),
        -- The items' events in item order, then the implicit signal (the
        -- user wrote again within 10 minutes of our last reply): one
        -- INSERT, so their ids come in parley_ingest()'s order.
        ev AS (
            INSERT INTO events (occurred_at, type, platform, channel,
                                user_id, user_pseudonym, conversation_id,
                                message_id, response_id, platform_event_id,
                                ref_platform_message_id, request_id, data)
            SELECT e.occurred_at, e.type, e.platform, e.channel, e.user_id,
                   e.pseudonym, e.conv_id, e.message_id, e.response_id,
                   e.eid, e.ctx, e.rid, e.data
            FROM (SELECT 0 AS o, new.i,
                         CASE WHEN new.ts > 0
                              THEN to_timestamp(new.ts / 1000.0) END
                             AS occurred_at,
                         new.etype AS type, new.platform, new.channel,
                         new.user_id, new.pseudonym, new.conv_id,
                         new.own_id AS message_id,
                         NULL::bigint AS response_id, new.eid,
                         NULL::text AS ctx, new.rid,
                         jsonb_build_object('msg_type', new.kind) AS data
                  FROM new
                  UNION ALL
                  SELECT 0, st.i,
                         CASE WHEN st.ts > 0
                              THEN to_timestamp(st.ts / 1000.0) END,
                         st.etype, st.platform, st.channel, st.user_id,
                         st.pseudonym, st.conv_id, st.tgt_id, st.tgt_resp,
                         st.eid, st.ctx, st.rid, st.data
                  FROM st
                  UNION ALL
                  SELECT 1, new.i, NULL, 'user_replied', new.platform,
                         new.channel, new.user_id, new.pseudonym, new.conv_id,
                         new.own_id, c.last_response_id, NULL, NULL, NULL,
                         jsonb_build_object('seconds',
                             round(extract(epoch FROM now() - c.last_reply_at)))
                  FROM new JOIN conversations c ON c.id = new.conv_id
                  WHERE c.last_reply_at > now() - interval '10 minutes') e
            ORDER BY e.o, e.i)
        SELECT (SELECT array_agg(new.i) FROM new),
               (SELECT array_agg(new.conv_id) FROM new),
               (SELECT array_agg(st.i) FROM st),
               (SELECT array_agg(l.i) FROM l WHERE l.conv_id IS NULL)
        INTO s_ids, s_conv, s_stat, s_miss;

        ids := ids || coalesce(s_ids, '{}');
        convs := convs || coalesce(s_conv, '{}');
        stats := stats || coalesce(s_stat, '{}');
        EXIT WHEN s_miss IS NULL OR pass = 2;

        -- Users and conversations not seen before. A conversation created
        -- for a message to answer is created ready (no second row
        -- version); one created for statuses alone, idle. One created
        -- concurrently by another batch is found by the second pass's
        -- lookup (a new snapshot).
        todo := s_miss;
        INSERT INTO users (platform, platform_user_id, phone, pseudonym,
                           key_version)
        SELECT DISTINCT ON (x.platform, x.uid) x.platform, x.uid, x.phone,
               x.pseudo, p_kv
        FROM unnest(p_platform, p_uid, p_phone, p_pseudo)
             WITH ORDINALITY AS x(platform, uid, phone, pseudo, n)
        WHERE x.n::int - 1 = ANY (todo)
        ORDER BY x.platform, x.uid
        ON CONFLICT (platform, platform_user_id) DO NOTHING;

        WITH n AS (
            INSERT INTO conversations (user_id, platform, channel,
                                       pending_since)
            SELECT u.id, x.platform, x.channel,
                   CASE WHEN bool_or(x.rank = 0) THEN now() END
            FROM unnest(p_platform, p_channel, p_uid, p_rank)
                 WITH ORDINALITY AS x(platform, channel, uid, rank, n)
            JOIN users u ON u.platform = x.platform
                        AND u.platform_user_id = x.uid
            WHERE x.n::int - 1 = ANY (todo)
            GROUP BY u.id, x.platform, x.channel
            ORDER BY u.id, x.platform, x.channel
            ON CONFLICT (platform, channel, user_id) DO NOTHING
            RETURNING id, pending_since)
        SELECT coalesce(array_agg(n.id)
                        FILTER (WHERE n.pending_since IS NOT NULL), '{}')
        INTO fresh FROM n;
    END LOOP;

    -- Queue: conversations with new messages become ready (those created
    -- ready above are done), as in parley_ingest(): locked in id order so
    -- concurrent batches cannot deadlock; only an idle one changes.
    woke := fresh;
    SELECT array_agg(DISTINCT c ORDER BY c) INTO idle
    FROM unnest(convs) c WHERE c <> ALL (fresh);
    IF idle IS NOT NULL THEN
        PERFORM 1 FROM conversations WHERE id = ANY (idle)
        ORDER BY id FOR NO KEY UPDATE;
        WITH u AS (
            UPDATE conversations c SET pending_since = now()
            WHERE c.id = ANY (idle) AND c.pending_since IS NULL
            RETURNING c.id)
        SELECT woke || coalesce(array_agg(u.id), '{}') INTO woke FROM u;
    END IF;
    IF cardinality(woke) > 0 THEN
        PERFORM pg_notify('parley_work',
                          coalesce(current_setting('parley.instance', true), ''));
    END IF;

    RETURN QUERY
    SELECT s.i, true, s.c = ANY (woke)
    FROM unnest(ids, convs) AS s(i, c)
    UNION ALL
    SELECT s.i, false, false FROM unnest(stats) AS s(i);
END $$;
