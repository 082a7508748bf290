-- PostgreSQL's own cost of parley_ingest() per webhook item, without HTTP,
-- without concurrency and without the commit: one session calls it on
-- batches of unique WhatsApp text messages, each call in a transaction of
-- its own (committed, untimed) and on users unrelated to the last call's,
-- and prints the time per item.
-- It WRITES test rows: run it on a scratch database migrated by Parley,
--   createdb scratch && PARLEY_DATABASE_URL=.../scratch parley migrate
--   psql .../scratch -f bench/ingest_cost.sql
-- Settings as Parley's connections use them (core/db.c).
SET plan_cache_mode = force_generic_plan;
SET enable_seqscan = off;
SET synchronous_commit = off;  -- each call commits, untimed

CREATE TEMP TABLE ingest_cost (batch int, items int, ms float8);

DO $$
DECLARE
    users   constant int := 10000;  -- as in make bench (b)
    size    constant int := 100;    -- items per call
    b       jsonb;
    t0      timestamptz;
    base    bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint;
BEGIN
    FOR k IN 1..33 LOOP
        SELECT jsonb_agg(jsonb_build_object(
                   'i', g - 1, 'etype', 'message_received',
                   'platform', 'whatsapp', 'channel', 'PHONE1',
                   'uid', 'u' || (base + (k * size + g) * 7919) % users,
                   'phone', '1555' || (base + (k * size + g) * 7919) % users,
                   'pseudo', md5('u' || (base + (k * size + g) * 7919) % users),
                   'kv', 1,
                   'eid', 'wamid.cost.' || base || '.' || k || '.' || g,
                   'key', 'wamid.cost.' || base || '.' || k || '.' || g,
                   'ts', base, 'msg', 'text',
                   'body', 'hello, how much is the blue shirt?',
                   'store', 'in', 'queue', true, 'rank', 0,
                   'raw', jsonb_build_object('type', 'text', 'text',
                          jsonb_build_object('body',
                              'hello, how much is the blue shirt?')),
                   'rid', 'cost' || g))
        INTO b FROM generate_series(1, size) g;
        t0 := clock_timestamp();
        PERFORM count(*) FROM parley_ingest(b);
        INSERT INTO ingest_cost VALUES (k, size,
            extract(epoch FROM clock_timestamp() - t0) * 1000);
        COMMIT;
    END LOOP;
END $$;

-- The first 3 calls plan the statements; the rest is the steady state.
SELECT count(*) AS calls, max(items) AS items_per_call,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2)
           AS median_ms_per_call,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) * 1000
              / max(items))::numeric, 1) AS median_us_per_item
FROM ingest_cost WHERE batch > 3;
