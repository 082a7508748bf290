-- parley_ingest(batch): store one group-commit batch of normalized webhook
-- items in a handful of set-based statements (one round trip per batch).
-- The caller (gateway/ingest.c) commits; every request in the batch is
-- answered 200 only after that COMMIT. Returns the items that were new.

CREATE TYPE parley_ingest_item AS (
    i        int,     -- index in the batch
    etype    text,    -- event type (docs/DATA.md)
    platform text,
    channel  text,
    uid      text,    -- platform user id
    phone    text,
    pseudo   text,    -- HMAC pseudonym
    kv       int,     -- pseudonym key version
    eid      text,    -- platform id of the item (wamid, mid)
    key      text,    -- dedupe key
    ts       bigint,  -- platform timestamp, ms
    ctx      text,    -- platform id of the message referred to
    msg      text,    -- message kind for the messages row
    body     text,    -- text / caption / button title
    media    text,
    store    text,    -- 'in', 'out' or NULL: write a messages row
    queue    boolean, -- inbound message to answer
    rank     int,     -- status rank (1 sent .. 4 failed)
    wm       bigint,  -- Messenger/Instagram watermark, ms
    ecode    int,     -- platform error code of a failed status
    ref      jsonb,   -- referral fields
    data     jsonb,   -- event details
    raw      jsonb,   -- the item as received
    rid      text,    -- request id
    -- resolved inside parley_ingest:
    user_id  bigint,
    upseudo  text,
    conv_id  bigint,
    own_id   bigint,  -- the messages row of this item
    tgt_id   bigint,  -- the message ctx refers to
    tgt_resp bigint,  -- ... and the response that message carried
    tgt_out  boolean  -- ... and whether it is ours (outbound)
);

CREATE FUNCTION parley_ingest(batch jsonb)
RETURNS TABLE (idx int, queued boolean, conversation_id bigint)
LANGUAGE plpgsql AS $$
DECLARE
    items parley_ingest_item[];
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

    INSERT INTO conversations (user_id, platform, channel)
    SELECT DISTINCT ON (u.id, x.platform, x.channel) u.id, x.platform,
           x.channel
    FROM unnest(items) x
    JOIN users u ON u.platform = x.platform AND u.platform_user_id = x.uid
    WHERE x.channel IS NOT NULL
    ORDER BY u.id, x.platform, x.channel
    ON CONFLICT (platform, channel, user_id) DO NOTHING;

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

    -- 8. Queue: conversations with new inbound work become ready. Rows
    --    are locked in id order so concurrent batches cannot deadlock.
    PERFORM 1 FROM conversations
    WHERE id IN (SELECT x.conv_id FROM unnest(items) x
                 WHERE x.queue AND x.own_id IS NOT NULL)
    ORDER BY id FOR NO KEY UPDATE;
    --    Only a conversation that was idle changes: one already pending
    --    (or being answered: its worker recomputes pending_since under the
    --    same row lock) is left alone, so a chatty user does not rewrite
    --    the row on every message.
    UPDATE conversations c SET pending_since = now()
    FROM (SELECT DISTINCT x.conv_id AS id
          FROM unnest(items) x
          WHERE x.queue AND x.own_id IS NOT NULL) q
    WHERE c.id = q.id AND c.pending_since IS NULL;
    IF FOUND THEN
        -- Wakes `parley serve` processes blocked in LISTEN parley_work;
        -- delivered at COMMIT, collapsed within the transaction.
        PERFORM pg_notify('parley_work', '');
    END IF;

    RETURN QUERY
    SELECT x.i, coalesce(x.queue, false) AND x.own_id IS NOT NULL, x.conv_id
    FROM unnest(items) x;
END $$;
