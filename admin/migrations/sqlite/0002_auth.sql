-- Dashboard sign-in state. Times are Unix milliseconds (BIGINT), like 0001.
-- Every token is stored only as the lowercase hex SHA-256 of its text, so a
-- copy of this database signs nobody in.

-- Bearer tokens of the dashboard (`qz_dt_…`), 7 days, revocable.
CREATE TABLE dashboard_tokens (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX dashboard_tokens_user ON dashboard_tokens (user_id);

-- Single-use tokens: 'verify_email' (mailed, 24 h), 'password_reset'
-- (mailed, 1 h), 'signin_2fa' (sign-in challenge awaiting a second factor,
-- 5 min). Spent by setting used_at in one conditional UPDATE.
CREATE TABLE auth_tokens (
    token_hash TEXT PRIMARY KEY,
    purpose    TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX auth_tokens_user ON auth_tokens (user_id, purpose);

-- TOTP (RFC 6238), one per user. The seed is sealed with the master key
-- (AES-256-GCM, associated data = user id, base64 text). confirmed_at is NULL
-- while the enrolment is pending; last_used_step (Unix seconds / 30) is the
-- replay guard: a code is accepted only for a later step.
CREATE TABLE user_totp (
    user_id        TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    seed_sealed    TEXT NOT NULL,
    confirmed_at   BIGINT,
    last_used_step BIGINT,
    created_at     BIGINT NOT NULL
);

-- Recovery codes (80 random bits each, SHA-256 of the normalised code),
-- spent once each.
CREATE TABLE recovery_codes (
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at    BIGINT,
    PRIMARY KEY (user_id, code_hash)
);
