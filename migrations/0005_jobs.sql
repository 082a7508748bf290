-- parley_finish_job(j): the end of one inference job in one call (one round
-- trip, one transaction): outbound ids and statuses, statuses that arrived
-- before the send answer, the response's status, the inbound messages
-- answered, events, ad signals, and the lease released. Returns false,
-- changing nothing, when the caller no longer holds the lease.
-- The row lock is taken first: every later statement takes its snapshot
-- after it, so pending_since below sees each message whose ingest already
-- touched this conversation, and an ingest that comes later waits for us.

CREATE FUNCTION parley_finish_job(j jsonb)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    conv  bigint := (j->>'conv')::bigint;
    resp  bigint := (j->>'response_id')::bigint;
    plat  text;
    p     record;
    sent  boolean := false;
BEGIN
    SELECT c.platform INTO plat FROM conversations c
    WHERE c.id = conv AND c.lease_owner = j->>'owner'
      AND c.lease_count = (j->>'lease')::int
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;

    FOR p IN SELECT * FROM jsonb_to_recordset(coalesce(j->'parts', '[]'))
             AS x(id bigint, pid text, status text, rank int, ecode int)
    LOOP
        IF p.pid IS NOT NULL THEN
            -- A Messenger/Instagram echo of this very message may have
            -- been stored first: ours replaces it.
            DELETE FROM messages WHERE platform = plat
              AND platform_message_id = p.pid AND direction = 'out'
              AND response_id IS NULL;
        END IF;
        sent := sent OR p.pid IS NOT NULL;
        UPDATE messages SET platform_message_id = p.pid, status = p.status,
               status_rank = p.rank, error_code = p.ecode,
               sent_at = CASE WHEN p.pid IS NULL THEN NULL ELSE now() END
        WHERE id = p.id;
        IF p.pid IS NOT NULL THEN
            -- Statuses (and reactions) that arrived before the send
            -- answer: link them, and apply the highest status rank.
            WITH l AS (
                UPDATE events SET response_id = resp, message_id = p.id
                WHERE ref_platform_message_id = p.pid AND response_id IS NULL
                  AND received_at > now() - interval '1 day'
                RETURNING type),
            r AS (SELECT max(CASE type WHEN 'sent' THEN 1 WHEN 'delivered' THEN 2
                                       WHEN 'read' THEN 3 WHEN 'failed' THEN 4
                                       ELSE 0 END) AS rk FROM l)
            UPDATE messages m SET status_rank = r.rk,
                   status = CASE r.rk WHEN 1 THEN 'sent' WHEN 2 THEN 'delivered'
                                      WHEN 3 THEN 'read' ELSE 'failed' END
            FROM r WHERE m.id = p.id AND r.rk > m.status_rank;
        END IF;
    END LOOP;

    IF resp IS NOT NULL THEN
        UPDATE responses SET status = j->>'rstatus', completed_at = now()
        WHERE id = resp;
    END IF;

    UPDATE messages SET reply_state = j->>'istate', response_id = resp
    WHERE conversation_id = conv
      AND id = ANY (ARRAY(SELECT jsonb_array_elements_text(
                              coalesce(j->'inbound', '[]'))::bigint))
      AND reply_state = 'pending';

    -- Events: [{type, message_id, ref, data, response_id?}]; response_id
    -- defaults to this job's response.
    INSERT INTO events (type, platform, channel, user_id, user_pseudonym,
                        conversation_id, message_id, response_id,
                        ref_platform_message_id, data)
    SELECT e.type, c.platform, c.channel, u.id, u.pseudonym, c.id,
           e.message_id, coalesce(e.response_id, resp), e.ref, e.data
    FROM conversations c JOIN users u ON u.id = c.user_id,
         jsonb_to_recordset(coalesce(j->'events', '[]')) AS e(
             type text, message_id bigint, response_id bigint, ref text,
             data jsonb)
    WHERE c.id = conv;

    -- Ad signals: per-user rows and the decayed profile (half-life 30
    -- days) only where the policy allows and never for a sensitive
    -- category; the user-less daily aggregate for everything.
    IF jsonb_array_length(coalesce(j->'signals', '[]')) > 0 THEN
        WITH s AS (
            SELECT * FROM jsonb_to_recordset(j->'signals') AS x(
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
    END IF;

    UPDATE conversations SET lease_owner = NULL, lease_until = NULL,
           pending_since = (SELECT min(received_at) FROM messages
                            WHERE conversation_id = conv
                              AND reply_state = 'pending'),
           last_reply_at = CASE WHEN sent THEN now() ELSE last_reply_at END,
           last_response_id = CASE WHEN sent THEN resp
                                   ELSE last_response_id END
    WHERE id = conv;
    RETURN true;
END $$;

-- parley_intent_job(j): record, before anything is sent, the response the
-- job is about to send: the response row (exact request, completion,
-- tokens, timings), which inbound messages fed it, the outbound parts in
-- state 'sending', the llm events; and extend the lease. One round trip.
-- Returns {"response_id": id, "parts": [outbound message ids in order]}, or
-- NULL, changing nothing, when the caller no longer holds the lease.
CREATE FUNCTION parley_intent_job(j jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    conv  bigint := (j->>'conv')::bigint;
    resp  bigint;
    parts jsonb;
BEGIN
    UPDATE conversations
    SET lease_until = now() + (j->>'lease_ms')::int * interval '1 millisecond'
    WHERE id = conv AND lease_owner = j->>'owner'
      AND lease_count = (j->>'lease')::int;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    INSERT INTO responses (conversation_id, kind, model, request_messages,
                           completion, finish_reason, prompt_tokens,
                           completion_tokens, ttft_ms, llm_ms, attempts,
                           error, worker)
    VALUES (conv, j->>'kind', j->>'model', j->'request', j->>'completion',
            j->>'finish_reason', (j->>'prompt_tokens')::int,
            (j->>'completion_tokens')::int, (j->>'ttft_ms')::int,
            (j->>'llm_ms')::int, (j->>'attempts')::int, j->>'error',
            j->>'worker')
    RETURNING id INTO resp;

    INSERT INTO response_inputs (response_id, message_id)
    SELECT resp, x::bigint
    FROM jsonb_array_elements_text(coalesce(j->'inputs', '[]')) x;

    WITH ins AS (
        INSERT INTO messages (conversation_id, direction, platform, kind,
                              text, part, response_id, status)
        SELECT conv, 'out', j->>'platform', 'text', t, ord::int, resp,
               'sending'
        FROM jsonb_array_elements_text(coalesce(j->'parts', '[]'))
             WITH ORDINALITY AS x(t, ord)
        RETURNING id, part)
    SELECT coalesce(jsonb_agg(id ORDER BY part), '[]') INTO parts FROM ins;

    INSERT INTO events (type, platform, channel, user_id, user_pseudonym,
                        conversation_id, message_id, response_id, data)
    SELECT e.type, c.platform, c.channel, u.id, u.pseudonym, c.id,
           e.message_id, resp, e.data
    FROM conversations c JOIN users u ON u.id = c.user_id,
         jsonb_to_recordset(coalesce(j->'events', '[]')) AS e(
             type text, message_id bigint, data jsonb)
    WHERE c.id = conv;

    RETURN jsonb_build_object('response_id', resp, 'parts', parts);
END $$;
