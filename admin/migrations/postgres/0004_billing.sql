-- Billing (Stripe). Times are Unix milliseconds (BIGINT), like 0001.
-- Stripe is the source of truth for money; these tables are what admin
-- needs to answer without asking Stripe on every request and to know which
-- Stripe objects belong to which account (Stripe ids are not secrets, so an
-- id a caller sends proves nothing until it is found here for that caller).

-- One Stripe customer per account, created at the first checkout.
CREATE TABLE billing_customers (
    user_id            TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    stripe_customer_id TEXT NOT NULL UNIQUE,
    created_at         BIGINT NOT NULL
);

-- The account's subscriptions as the verified webhooks last described them.
-- cancel_at_period_end is 0/1 (sqlx's Any driver cannot read SQLite's
-- BOOLEAN). event_created is the Stripe `created` time (Unix seconds) of the
-- event that wrote the row: an older event arriving late does not overwrite.
CREATE TABLE billing_subscriptions (
    id                   TEXT PRIMARY KEY,
    user_id              TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    stripe_customer_id   TEXT,
    price_id             TEXT,
    status               TEXT NOT NULL,
    cancel_at_period_end INTEGER NOT NULL DEFAULT 0,
    current_period_end   BIGINT,
    event_created        BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);
CREATE INDEX billing_subscriptions_user ON billing_subscriptions (user_id);

-- Every verified webhook event, exactly once (the primary key is the
-- idempotency guard), with its raw payload. outcome says what was done:
-- 'applied', 'ignored' (a type admin does not act on) or 'unmatched' (no
-- account found for it).
CREATE TABLE billing_event_logs (
    event_id    TEXT PRIMARY KEY,
    event_type  TEXT NOT NULL,
    user_id     TEXT,
    payload     TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX billing_event_logs_received ON billing_event_logs (received_at);
