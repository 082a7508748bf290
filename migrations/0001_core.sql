-- Core schema: users, conversations (the work queue), messages, responses,
-- dedupe keys. Events live in 0002. See docs/DATA.md for every column.

CREATE TABLE settings (
    key        text PRIMARY KEY,
    value      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per (platform, platform user id). platform_user_id is the raw id
-- the send API needs; analytics and exports use pseudonym only.
CREATE TABLE users (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    platform         text NOT NULL,
    platform_user_id text NOT NULL,
    phone            text,
    pseudonym        text NOT NULL,
    key_version      int  NOT NULL DEFAULT 1,
    opted_out_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_seen_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (platform, platform_user_id)
);
CREATE INDEX users_pseudonym_idx ON users (pseudonym);

-- A conversation is (platform, channel, user). It is also the unit of work:
-- pending_since is set while it has unanswered inbound messages; a worker
-- owns it while lease_until is in the future.
CREATE TABLE conversations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    platform        text NOT NULL,
    channel         text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    pending_since   timestamptz,
    not_before      timestamptz,
    lease_owner     text,
    lease_until     timestamptz,
    lease_count     int NOT NULL DEFAULT 0,
    last_reply_at   timestamptz,  -- when our last reply was accepted
    last_response_id bigint,      -- ... and which response it carried
    UNIQUE (platform, channel, user_id)
);
CREATE INDEX conversations_ready_idx ON conversations (pending_since)
    WHERE pending_since IS NOT NULL;

-- One LLM call and what it produced: the unit feedback attaches to.
CREATE TABLE responses (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id   bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    status            text NOT NULL DEFAULT 'sending'
        CHECK (status IN ('sending', 'sent', 'partial', 'failed', 'abandoned')),
    kind              text NOT NULL DEFAULT 'llm'
        CHECK (kind IN ('llm', 'apology', 'opt_out', 'opt_in', 'window_closed')),
    model             text,
    request_messages  jsonb,
    completion        text,
    finish_reason     text,
    prompt_tokens     int,
    completion_tokens int,
    ttft_ms           int,
    llm_ms            int,
    attempts          int,
    error             text,
    worker            text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    completed_at      timestamptz
);
CREATE INDEX responses_conversation_idx ON responses (conversation_id, id);
CREATE INDEX responses_sending_idx ON responses (conversation_id) WHERE status = 'sending';

-- Every message in or out. Inbound messages from users carry reply_state
-- (the queue); outbound ones the delivery status and the response they
-- carried. (platform, platform_message_id) is the dedupe of messages.
CREATE TABLE messages (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    conversation_id     bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    direction           text NOT NULL CHECK (direction IN ('in', 'out')),
    platform            text NOT NULL,
    platform_message_id text,
    kind                text NOT NULL,
    text                text,
    media_id            text,
    context_id          text,
    reply_state         text CHECK (reply_state IN
        ('pending', 'answered', 'failed', 'skipped')),
    response_id         bigint REFERENCES responses (id) ON DELETE SET NULL,
    part                int,
    status              text,
    status_rank         smallint NOT NULL DEFAULT 0,
    error_code          int,
    platform_ts         timestamptz,
    received_at         timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    raw                 jsonb
);
CREATE UNIQUE INDEX messages_platform_id_key
    ON messages (platform, platform_message_id);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, id);
CREATE INDEX messages_pending_idx ON messages (conversation_id, id)
    WHERE reply_state = 'pending';
CREATE INDEX messages_response_idx ON messages (response_id);

-- Which inbound messages fed which LLM call (coalescing is many to one).
CREATE TABLE response_inputs (
    response_id bigint NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    message_id  bigint NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    PRIMARY KEY (response_id, message_id)
);
CREATE INDEX response_inputs_message_idx ON response_inputs (message_id);

-- Platform-level dedupe of every webhook item, kept for the retry horizon
-- (Meta retries for up to 7 days; pruned after PARLEY_DEDUPE_DAYS).
CREATE TABLE inbound_keys (
    platform    text NOT NULL,
    key         text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (platform, key)
);
CREATE INDEX inbound_keys_received_idx ON inbound_keys (received_at);
