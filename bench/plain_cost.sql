-- PostgreSQL's own cost per call of parley_ingest() against
-- parley_ingest_plain() (migration 0011) on the same kind of batch: plain
-- WhatsApp text messages and delivery statuses of messages we sent,
-- without HTTP, concurrency or the commit. One session alternates the two
-- functions on fresh items (every message and status key new, the users
-- of one call unrelated to the last call's), each call in a transaction
-- of its own, and prints the median and 10th percentile per call; with
-- statuses=0 it also times parley_ingest_messages() (migration 0010),
-- which the gateway uses for messages alone. docs/PERFORMANCE.md, "The
-- plain ingest" and "Where a message's PostgreSQL time goes", has its
-- results.
-- It WRITES test rows (10,000 users, their conversations and one sent
-- message each, then the batches): run it on a scratch database migrated
-- by Parley,
--   createdb scratch && PARLEY_DATABASE_URL=.../scratch parley migrate
--   psql .../scratch -v messages=4 -v statuses=12 -f bench/plain_cost.sql
-- (-v watermarks=1: the statuses as Messenger read receipts, a watermark
-- and no message id, instead of WhatsApp delivery statuses)
-- Settings as Parley's connections use them (core/db.c).
SET plan_cache_mode = force_generic_plan;
SET enable_seqscan = off;
SET jit = off;    -- the seqscan penalty would make every statement "costly"
SET synchronous_commit = off;  -- each call commits, untimed
\if :{?watermarks}
\else
\set watermarks 0
\endif
SELECT set_config('plain_cost.messages', :'messages', false),
       set_config('plain_cost.statuses', :'statuses', false),
       set_config('plain_cost.watermarks', :'watermarks', false) \gset
CREATE TEMP TABLE cost (fn text, k int, ms float8);
DO $$
DECLARE
    users constant int := 10000;
    nmsg  constant int := current_setting('plain_cost.messages')::int;
    nst   constant int := current_setting('plain_cost.statuses')::int;
    -- statuses as Messenger's read receipts: a watermark, no message id
    wmode constant boolean := current_setting('plain_cost.watermarks') = '1';
    base  bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
    j jsonb; t0 timestamptz;
    a_pl text[]; a_ch text[]; a_uid text[]; a_ph text[]; a_ps text[];
    a_et text[]; a_key text[]; a_eid text[]; a_ctx text[]; a_ts bigint[];
    a_kind text[]; a_body text[]; a_media text[]; a_rank int[]; a_ec int[]; a_wm bigint[];
    a_raw jsonb[]; a_data jsonb[]; a_rid text[];
BEGIN
    IF NOT EXISTS (SELECT 1 FROM users) THEN
        INSERT INTO users (platform, platform_user_id, phone, pseudonym, key_version)
        SELECT 'whatsapp', 'u' || g, '1555' || g, md5('u' || g), 1 FROM generate_series(0, users - 1) g;
        INSERT INTO conversations (user_id, platform, channel)
        SELECT id, 'whatsapp', 'PHONE1' FROM users;
        INSERT INTO messages (conversation_id, direction, platform, platform_message_id, kind, text, status, status_rank, sent_at)
        SELECT c.id, 'out', 'whatsapp', 'wamid.out.' || u.platform_user_id, 'text', 'hello', 'sent', 1, now()
        FROM conversations c JOIN users u ON u.id = c.user_id;
    END IF;
    FOR k IN 1..400 LOOP
        -- nmsg messages, then nst statuses, of random users
        WITH it AS (
            SELECT g - 1 AS i, g <= nmsg AS msg,
                   'u' || ((base + (k * (nmsg + nst) + g) * 7919) % users) AS uid
            FROM generate_series(1, nmsg + nst) g),
        y AS (SELECT it.*, NOT msg AND wmode AS wmk FROM it),
        x AS (
            SELECT y.*, CASE WHEN msg THEN 'message_received' WHEN wmk THEN 'read' ELSE 'delivered' END AS etype,
                   CASE WHEN msg THEN 'wamid.in.' || base || '.' || k || '.' || i
                        WHEN NOT wmk THEN 'wamid.out.' || uid END AS eid,
                   CASE WHEN msg THEN 'wamid.in.' || base || '.' || k || '.' || i
                        WHEN wmk THEN 'read:PHONE1:' || uid || ':' || base || '.' || k || '.' || i
                        ELSE 'status:wamid.out.' || uid || ':delivered:' || base || '.' || k || '.' || i END AS key,
                   CASE WHEN msg THEN 0 WHEN wmk THEN 3 ELSE 2 END AS rank,
                   CASE WHEN wmk THEN base END AS wm
            FROM y)
        SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                   'i', i, 'etype', etype, 'platform', 'whatsapp', 'channel', 'PHONE1',
                   'uid', uid, 'phone', '1555' || substr(uid, 2), 'pseudo', md5(uid), 'kv', 1,
                   'eid', eid, 'key', key, 'ts', base,
                   'ctx', CASE WHEN NOT msg THEN eid END, 'wm', wm,
                   'msg', CASE WHEN msg THEN 'text' END,
                   'body', CASE WHEN msg THEN 'hello, how much is the blue shirt?' END,
                   'store', CASE WHEN msg THEN 'in' END, 'queue', msg,
                   'rank', CASE WHEN msg THEN NULL ELSE rank END,
                   'raw', CASE WHEN msg THEN jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', 'hello, how much is the blue shirt?')) END,
                   'data', CASE WHEN msg THEN jsonb_build_object('msg_type', 'text')
                           ELSE jsonb_build_object('raw', jsonb_build_object('id', eid, 'status', etype, 'timestamp', '1795841732', 'recipient_id', '1555' || substr(uid, 2))) END,
                   'rid', 'cost' || i)) ORDER BY i),
               array_agg('whatsapp'::text ORDER BY i), array_agg('PHONE1'::text ORDER BY i),
               array_agg(uid ORDER BY i), array_agg('1555' || substr(uid, 2) ORDER BY i),
               array_agg(md5(uid) ORDER BY i), array_agg(etype ORDER BY i),
               array_agg(key ORDER BY i), array_agg(eid ORDER BY i),
               array_agg(CASE WHEN NOT msg THEN eid END ORDER BY i), array_agg(base ORDER BY i),
               array_agg(CASE WHEN msg THEN 'text' END ORDER BY i),
               array_agg(CASE WHEN msg THEN 'hello, how much is the blue shirt?' END ORDER BY i),
               array_agg(NULL::text ORDER BY i), array_agg(rank ORDER BY i),
               array_agg(NULL::int ORDER BY i), array_agg(wm ORDER BY i),
               array_agg(CASE WHEN msg THEN jsonb_build_object('type', 'text', 'text', jsonb_build_object('body', 'hello, how much is the blue shirt?')) END ORDER BY i),
               array_agg(CASE WHEN NOT msg THEN jsonb_build_object('raw', jsonb_build_object('id', eid, 'status', etype, 'timestamp', '1795841732', 'recipient_id', '1555' || substr(uid, 2))) END ORDER BY i),
               array_agg('cost' || i ORDER BY i)
        INTO j, a_pl, a_ch, a_uid, a_ph, a_ps, a_et, a_key, a_eid, a_ctx, a_ts, a_kind, a_body, a_media, a_rank, a_ec, a_wm, a_raw, a_data, a_rid
        FROM x;
        IF nst = 0 AND k % 3 = 2 THEN
            -- messages alone: also the function the gateway uses for them
            t0 := clock_timestamp();
            PERFORM count(*) FROM parley_ingest_messages(a_pl, a_ch, a_uid, a_ph, a_ps, 1, a_eid, a_ts, a_kind, a_body, a_media, a_raw, a_rid);
            INSERT INTO cost VALUES ('parley_ingest_messages', k, extract(epoch FROM clock_timestamp() - t0) * 1000);
        ELSIF k % 2 = 0 THEN
            t0 := clock_timestamp();
            PERFORM count(*) FROM parley_ingest(j);
            INSERT INTO cost VALUES ('parley_ingest', k, extract(epoch FROM clock_timestamp() - t0) * 1000);
        ELSE
            t0 := clock_timestamp();
            PERFORM count(*) FROM parley_ingest_plain(a_pl, a_ch, a_uid, a_ph, a_ps, 1, a_et, a_key, a_eid, a_ctx, a_ts, a_kind, a_body, a_media, a_rank, a_ec, a_wm, a_raw, a_data, a_rid);
            INSERT INTO cost VALUES ('parley_ingest_plain', k, extract(epoch FROM clock_timestamp() - t0) * 1000);
        END IF;
        -- Each call its own transaction, as a batch's is: a row lock or a
        -- page a call dirtied is not held or cached for the next one.
        COMMIT;
    END LOOP;
END $$;
-- The first 10 calls plan the statements; the rest is the steady state.
SELECT fn, count(*) AS calls, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS median_ms,
       round(percentile_cont(0.1) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p10_ms
FROM cost WHERE k > 10 GROUP BY fn;
