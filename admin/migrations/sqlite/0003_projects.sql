-- Projects and everything the config snapshot is built from.
-- Times are Unix milliseconds (BIGINT), like 0001. Secrets are sealed with
-- the master key (AES-256-GCM, base64 text) and never stored in clear;
-- tokens are stored only as their SHA-256 (lowercase hex).

-- The plan decides quotas (free: 3 projects). Billing moves it.
ALTER TABLE users ADD COLUMN plan TEXT NOT NULL DEFAULT 'free';

CREATE TABLE projects (
    id                TEXT PRIMARY KEY,
    owner_id          TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name              TEXT NOT NULL,
    -- The validated settings document (compact JSON, every field present).
    settings_json     TEXT NOT NULL,
    -- The customer's free-form JSON document (/projects/extra-metadata).
    extra_metadata    TEXT NOT NULL DEFAULT '{}',
    secret_rotated_at BIGINT,
    created_at        BIGINT NOT NULL
);
-- Cursor-paged listing: newest first per owner.
CREATE INDEX projects_owner_created ON projects (owner_id, created_at, id);

-- One row per secret generation: the current one (valid_until NULL) and
-- rotated-out ones until their grace period ends. Each generation carries
-- its Ed25519 signing key, so a rotation rotates every key at once.
CREATE TABLE project_secrets (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    secret_sealed  TEXT NOT NULL,
    secret_hash    TEXT NOT NULL,
    ed25519_sealed TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    valid_until    BIGINT
);
CREATE INDEX project_secrets_project ON project_secrets (project_id);
-- At most one current secret per project.
CREATE UNIQUE INDEX project_secrets_current ON project_secrets (project_id) WHERE valid_until IS NULL;

-- Single-use reveal grants from POST /projects/secret/2fa.
CREATE TABLE secret_reveal_grants (
    grant_hash TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE TABLE origin_tokens (
    token_hash     TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    origin         TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    invalidated_at BIGINT
);
CREATE INDEX origin_tokens_project ON origin_tokens (project_id, expires_at);

-- Opted-out subjects: kind 'device' (subject = dev_… id) or 'identifier'
-- (subject = SHA-256 hex of the identifier; the identifier is not kept).
CREATE TABLE opt_outs (
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (project_id, kind, subject)
);

-- The config snapshot version counter: one row, only ever incremented, so a
-- restarted admin (or a second one) continues upward and engines, which
-- accept only higher versions, take its snapshots.
CREATE TABLE config_versions (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    version    BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
INSERT INTO config_versions (id, version, updated_at) VALUES (1, 0, 0);
