-- Dashboard analytics (issue 12). Engines count every answer of the
-- hot-path routes per (project, UTC minute, route, outcome, region,
-- platform, browser) and report them in traffic batches (see
-- qyzar_shared::usage). Admin adds each batch, in the same transaction as
-- its batch-id dedup, to three rollups of the same shape: minutes, hours
-- and days. Charts read the coarsest table whose buckets fit the range
-- asked; pruning (admin/src/maintenance.rs) keeps about 7 days of minutes,
-- 90 days of hours and 3 years of days.
--
-- route:   connect | reverify | session_verify | token | token_verify |
--          rate_limit_check | ato_login_attempt
-- outcome: ok | invalid | allowed | challenged | blocked | denied |
--          refused | error
-- region:  '' when unknown, 'OTHER' when the engine folded a project's
--          counts past its share of distinct keys; platform and browser
--          'other' likewise ('' browser when unknown).
-- Times are Unix milliseconds (BIGINT), like 0001. Deleting a project
-- deletes its analytics.
--
-- traffic_rollups (0005) is kept as it is: verifications per hour, kind,
-- region and platform, still written by ingest for the rows that count
-- toward the plan (connect/reverify answered ok), so nothing reading it
-- changes. It holds a subset of analytics_hour and may be dropped once no
-- reader is left.
--
-- The primary key leads with (project_id, bucket_start), which is what
-- every dashboard query filters on (one project, a time range); the
-- bucket_start index serves retention pruning, which crosses projects.

CREATE TABLE analytics_minute (
    project_id   TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    bucket_start BIGINT NOT NULL,
    route        TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    region       TEXT NOT NULL,
    platform     TEXT NOT NULL,
    browser      TEXT NOT NULL,
    requests     BIGINT NOT NULL,
    PRIMARY KEY (project_id, bucket_start, route, outcome, region, platform, browser)
);
CREATE INDEX analytics_minute_bucket ON analytics_minute (bucket_start);

CREATE TABLE analytics_hour (
    project_id   TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    bucket_start BIGINT NOT NULL,
    route        TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    region       TEXT NOT NULL,
    platform     TEXT NOT NULL,
    browser      TEXT NOT NULL,
    requests     BIGINT NOT NULL,
    PRIMARY KEY (project_id, bucket_start, route, outcome, region, platform, browser)
);
CREATE INDEX analytics_hour_bucket ON analytics_hour (bucket_start);

CREATE TABLE analytics_day (
    project_id   TEXT NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    bucket_start BIGINT NOT NULL,
    route        TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    region       TEXT NOT NULL,
    platform     TEXT NOT NULL,
    browser      TEXT NOT NULL,
    requests     BIGINT NOT NULL,
    PRIMARY KEY (project_id, bucket_start, route, outcome, region, platform, browser)
);
CREATE INDEX analytics_day_bucket ON analytics_day (bucket_start);
