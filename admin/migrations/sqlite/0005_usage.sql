-- Verification usage reported by engines (POST /internal/traffic).
-- Times are Unix milliseconds (BIGINT), like 0001.

-- Verifications per project, UTC hour, kind (connect | reverify), region
-- ('' when unknown) and platform: the dashboard's traffic analytics.
-- Deleting a project deletes its traffic.
CREATE TABLE traffic_rollups (
    project_id TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    hour_start BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    region     TEXT NOT NULL,
    platform   TEXT NOT NULL,
    requests   BIGINT NOT NULL,
    PRIMARY KEY (project_id, hour_start, kind, region, platform)
);

-- Verifications per account and UTC calendar month ('2026-11'): what the
-- plan's monthlyVerifications is checked against. Kept per account, not per
-- project, so deleting a project does not give its usage back.
CREATE TABLE usage_monthly (
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    month         TEXT NOT NULL,
    verifications BIGINT NOT NULL,
    PRIMARY KEY (user_id, month)
);

-- Batch ids already counted: an engine resends a batch whose answer it did
-- not get, and it must count once. Ids older than a week are pruned.
CREATE TABLE traffic_batches (
    batch_id    TEXT PRIMARY KEY,
    received_at BIGINT NOT NULL
);
CREATE INDEX traffic_batches_received ON traffic_batches (received_at);
