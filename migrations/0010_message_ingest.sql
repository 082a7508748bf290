-- parley_ingest_messages(): the ingest of a batch that holds only plain
-- inbound messages, the common case (issue 6; docs/PERFORMANCE.md,
-- "The message ingest"). It stores exactly what parley_ingest() stores for
-- such a batch (the user and the conversation when new, the message, its
-- message_received event, the implicit user_replied event, the
-- conversation made ready, the NOTIFY) and returns the same rows, with a
-- fixed cost per call a fraction of parley_ingest()'s:
--
-- - the items come as typed arrays, one per field, not as a JSON document
--   parsed into 31-field records (jsonb_populate_recordset);
-- - a batch of known users is one statement before the ready marking: the
--   lookup, the message INSERT ... ON CONFLICT DO NOTHING (the dedupe on
--   the platform's id) and the event rows, as data-modifying CTEs;
-- - no statement for a kind the batch cannot hold (opt-outs, statuses,
--   reactions, feedback, referrals, the inbound_keys dedupe of non-message
--   items).
--
-- The gateway calls it only when every item of the batch is an inbound
-- message with a user, a channel, its own platform id as its key, and no
-- reply context, referral or other detail (gateway/ingest.c,
-- plain_message()); any other batch goes to parley_ingest(). Items are
-- numbered from 0 in array order; the first of two items with the same
-- platform id wins, as in parley_ingest().
CREATE FUNCTION parley_ingest_messages(
    p_platform text[], p_channel text[], p_uid text[], p_phone text[],
    p_pseudo text[], p_kv int, p_eid text[], p_ts bigint[], p_kind text[],
    p_body text[], p_media text[], p_raw jsonb[], p_rid text[])
RETURNS TABLE (idx int, queued boolean, ready boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    todo   int[];             -- items whose user or conversation was unknown
    fresh  bigint[] := '{}';  -- conversations this call created, ready
    woke   bigint[];          -- conversations this call made ready
    idle   bigint[];          -- conversations of new messages, not fresh
    ids    int[] := '{}';     -- stored items ...
    convs  bigint[] := '{}';  -- ... and their conversations
    s_ids  int[];
    s_conv bigint[];
    s_miss int[];
BEGIN
    FOR pass IN 1 .. 2 LOOP
        -- The items of this pass, their user and conversation when known;
        -- those known are stored, with their events. A retried message
        -- stops at the unique index (ON CONFLICT DO NOTHING).
        WITH x AS (
            SELECT x.n::int - 1 AS i, x.*
            FROM unnest(p_platform, p_channel, p_uid, p_eid, p_ts, p_kind,
                        p_body, p_media, p_raw, p_rid)
                 WITH ORDINALITY AS x(platform, channel, uid, eid, ts, kind,
                                      body, media, raw, rid, n)
            WHERE todo IS NULL OR x.n::int - 1 = ANY (todo)),
        -- The conversation as a scalar subquery: a join would be planned
        -- once, generic, on the empty tables of a new database, and one
        -- such plan scanned the whole unique index for every item.
        l AS (
            SELECT DISTINCT ON (x.platform, x.eid) x.*, u.id AS user_id,
                   u.pseudonym,
                   (SELECT c.id FROM conversations c
                    WHERE c.platform = x.platform AND c.channel = x.channel
                      AND c.user_id = u.id) AS conv_id
            FROM x
            LEFT JOIN users u ON u.platform = x.platform
                             AND u.platform_user_id = x.uid
            ORDER BY x.platform, x.eid, x.i),
        ins AS (
            INSERT INTO messages (conversation_id, direction, platform,
                                  platform_message_id, kind, text, media_id,
                                  reply_state, platform_ts, raw)
            SELECT l.conv_id, 'in', l.platform, l.eid, l.kind, l.body,
                   l.media, 'pending',
                   CASE WHEN l.ts > 0 THEN to_timestamp(l.ts / 1000.0) END,
                   l.raw
            FROM l WHERE l.conv_id IS NOT NULL
            ORDER BY l.i
            ON CONFLICT (platform, platform_message_id) DO NOTHING
            RETURNING messages.id, messages.platform,
                      messages.platform_message_id),
        new AS (
            SELECT l.*, ins.id AS own_id
            FROM l JOIN ins ON ins.platform = l.platform
                           AND ins.platform_message_id = l.eid),
        -- The message_received events, then the implicit signal: the user
        -- wrote again within 10 minutes of our last reply. One INSERT, so
        -- their ids come in parley_ingest()'s order.
        ev AS (
            INSERT INTO events (occurred_at, type, platform, channel,
                                user_id, user_pseudonym, conversation_id,
                                message_id, response_id, platform_event_id,
                                request_id, data)
            SELECT e.occurred_at, e.type, e.platform, e.channel, e.user_id,
                   e.pseudonym, e.conv_id, e.own_id, e.response_id, e.eid,
                   e.rid, e.data
            FROM (SELECT 0 AS o, new.i,
                         CASE WHEN new.ts > 0
                              THEN to_timestamp(new.ts / 1000.0) END
                             AS occurred_at,
                         'message_received' AS type, new.platform,
                         new.channel, new.user_id, new.pseudonym,
                         new.conv_id, new.own_id, NULL::bigint AS response_id,
                         new.eid, new.rid,
                         jsonb_build_object('msg_type', new.kind) AS data
                  FROM new
                  UNION ALL
                  SELECT 1, new.i, NULL, 'user_replied', new.platform,
                         new.channel, new.user_id, new.pseudonym, new.conv_id,
                         new.own_id, c.last_response_id, NULL, NULL,
                         jsonb_build_object('seconds',
                             round(extract(epoch FROM now() - c.last_reply_at)))
                  FROM new JOIN conversations c ON c.id = new.conv_id
                  WHERE c.last_reply_at > now() - interval '10 minutes') e
            ORDER BY e.o, e.i)
        SELECT (SELECT array_agg(new.i) FROM new),
               (SELECT array_agg(new.conv_id) FROM new),
               (SELECT array_agg(l.i) FROM l WHERE l.conv_id IS NULL)
        INTO s_ids, s_conv, s_miss;

        ids := ids || coalesce(s_ids, '{}');
        convs := convs || coalesce(s_conv, '{}');
        EXIT WHEN s_miss IS NULL OR pass = 2;

        -- Users and conversations not seen before. A conversation created
        -- for a message to answer is created ready (no second row version).
        -- One created concurrently by another batch is found by the second
        -- pass's lookup (a new snapshot).
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
            SELECT DISTINCT u.id, x.platform, x.channel, now()
            FROM unnest(p_platform, p_channel, p_uid)
                 WITH ORDINALITY AS x(platform, channel, uid, n)
            JOIN users u ON u.platform = x.platform
                        AND u.platform_user_id = x.uid
            WHERE x.n::int - 1 = ANY (todo)
            ORDER BY u.id, x.platform, x.channel
            ON CONFLICT (platform, channel, user_id) DO NOTHING
            RETURNING id)
        SELECT coalesce(array_agg(n.id), '{}') INTO fresh FROM n;
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
    FROM unnest(ids, convs) AS s(i, c);
END $$;
