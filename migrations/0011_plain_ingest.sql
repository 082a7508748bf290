-- parley_ingest_plain(): parley_ingest_messages() (0010) widened to
-- delivery statuses, so that a batch of plain inbound messages and plain
-- statuses, the common mix of real traffic (a reply brings back a sent,
-- a delivered and a read), takes the typed path too (issue 6;
-- docs/PERFORMANCE.md, "The plain ingest").
--
-- It stores exactly what parley_ingest() stores for such a batch:
-- - a message: as 0010 (the user and the conversation when new, the
--   message deduplicated on its platform id, its message_received event,
--   the implicit user_replied event, the conversation made ready, the
--   NOTIFY);
-- - a status: its dedupe key in inbound_keys, the user and the
--   conversation when new (created idle), its event linked to the message
--   it reports on and that message's response, the message's status
--   raised (never lowered: a late "delivered" after "read" changes
--   nothing; within a call the highest rank wins); for a watermark
--   (Messenger, Instagram), the status of every message we sent in the
--   conversation up to then, raised the same way.
-- With every user known, it is one statement before the ready marking:
-- the lookup, the dedupe of both kinds, the message INSERT, the status
-- UPDATE and the event rows, as data-modifying CTEs.
--
-- The gateway calls it only when every item is a plain message or a plain
-- status (gateway/ingest.c, plain_item()): a status with a user, a
-- channel, a dedupe key, a rank, and the platform id of the message it
-- reports on or a watermark; none reports on a message stored in the
-- same call (a status is about a message the business sent, and the
-- UPDATE here could not see a row inserted by the same statement); and
-- no platform has both watermarks and statuses without one in the call
-- (two UPDATEs of one row in one statement: only one would take
-- effect). Any other batch goes to parley_ingest(). A batch of messages
-- alone still goes to 0010's parley_ingest_messages(): for it, this
-- function's extra columns and its (empty) dedupe, status and UPDATE
-- steps cost ~12 % of the webhooks/s at 64 connections
-- (docs/PERFORMANCE.md).
--
-- Items are numbered from 0 in array order. Within a call the first item
-- of a (platform, key) wins, as in parley_ingest(); a message's key is
-- its platform id. p_rank is 0 for a message, the status rank (1 sent,
-- 2 delivered, 3 read, 4 failed) for a status; p_wm a status's watermark
-- in ms, NULL for none; p_data is a status's event data (a message's is
-- built here: {"msg_type": kind}).
CREATE FUNCTION parley_ingest_plain(
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
            FROM (SELECT st.conv_id AS cid, max(st.wm) AS wm, st.etype,
                         st.rank
                  FROM st WHERE st.wm IS NOT NULL
                  GROUP BY st.conv_id, st.etype, st.rank) s
            WHERE m.conversation_id = s.cid AND m.direction = 'out'
              AND m.sent_at <= to_timestamp(s.wm / 1000.0)
              AND m.status_rank < s.rank),
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
