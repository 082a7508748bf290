-- Feedback, ad signals and privacy bookkeeping. See docs/DATA.md.

-- Explicit feedback on one response: our own thumbs buttons, or a reaction
-- on the bot message that carried it. A removed reaction retracts it.
CREATE TABLE feedback (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    response_id     bigint NOT NULL REFERENCES responses (id) ON DELETE CASCADE,
    message_id      bigint REFERENCES messages (id) ON DELETE CASCADE,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source          text NOT NULL CHECK (source IN ('button', 'reaction')),
    polarity        smallint NOT NULL CHECK (polarity BETWEEN -1 AND 1),
    emoji           text,
    occurred_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retracted_at    timestamptz
);
CREATE INDEX feedback_response_idx ON feedback (response_id);
CREATE INDEX feedback_message_user_idx ON feedback (message_id, user_id)
    WHERE retracted_at IS NULL;

-- Interest categories (IAB Content Taxonomy 3.1) inferred from one user
-- message. Never holds a sensitive category (those only count in
-- interest_aggregates, without a user key).
CREATE TABLE interest_signals (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    conversation_id bigint NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    message_id      bigint REFERENCES messages (id) ON DELETE CASCADE,
    platform        text NOT NULL,
    category        text NOT NULL,
    category_name   text,
    tier            smallint,
    score           real NOT NULL,
    intents         text[] NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX interest_signals_user_idx ON interest_signals (user_id);

-- Per-user decayed interest profile (score halves every 30 days).
CREATE TABLE interest_profiles (
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    category     text NOT NULL,
    score        double precision NOT NULL,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, category)
);

-- User-less daily counts: the only place sensitive categories may appear.
CREATE TABLE interest_aggregates (
    day       date NOT NULL,
    platform  text NOT NULL,
    category  text NOT NULL,
    sensitive boolean NOT NULL,
    count     bigint NOT NULL,
    PRIMARY KEY (day, platform, category)
);

-- Erased users: their pseudonym stays here so that exports and analytics of
-- anything that reappears (a platform retry, a backup) stay empty.
CREATE TABLE suppressions (
    pseudonym  text PRIMARY KEY,
    platform   text NOT NULL,
    reason     text NOT NULL DEFAULT 'erasure',
    created_at timestamptz NOT NULL DEFAULT now()
);
