-- Engines that announce themselves (POST /internal/engines), so admin knows
-- the live set without a static list. One row per engine id; times are Unix
-- milliseconds like 0001. A row whose last heartbeat is older than three of
-- its intervals is gone (no pushes, shown as gone); rows a day old are
-- deleted by the maintenance pass. The table is bounded in code
-- (engines::MAX_ENGINES).
CREATE TABLE engines (
    engine_id     TEXT PRIMARY KEY,
    push_url      TEXT,
    version       BIGINT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_ms  BIGINT NOT NULL,
    first_seen    BIGINT NOT NULL,
    last_seen     BIGINT NOT NULL
);

CREATE INDEX engines_last_seen ON engines (last_seen);
