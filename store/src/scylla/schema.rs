//! The CQL schema and every statement the data path runs.
//!
//! Portable CQL only: the same text runs on ScyllaDB and on Apache Cassandra
//! 5.0 (what the tests use). No secondary indexes (SAI/SASI), materialized
//! views, UDFs or Scylla-only clauses (`USING TIMEOUT`, `BYPASS CACHE`).
//! Every table is read only by its full partition key, so no query needs
//! `ALLOW FILTERING` and every read is one partition slice on one replica set.
//!
//! Expiry is `USING TTL` per write (bound as `?`), not `default_time_to_live`,
//! because each row's lifetime is computed from its own time.

use std::time::Duration;

use ::scylla::client::session::Session as CqlSession;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::unprepared::Statement;
use ::scylla::statement::Consistency;

use super::errors::{exec_err, prepare_err};
use crate::StoreError;

/// DDL can take seconds on a loaded cluster; the data-path timeout would
/// fail a healthy start.
const DDL_TIMEOUT: Duration = Duration::from_secs(60);

/// The `CREATE TABLE` statements, `{ks}` replaced by the keyspace. Applied in
/// order at every start; `IF NOT EXISTS` makes a second run a no-op.
/// A later schema change is a new `ALTER TABLE … ADD` appended here (CQL has
/// no `ADD IF NOT EXISTS` portable to both servers, so it will need a guard
/// against the schema tables).
const TABLES: &[&str] = &[
    // One partition per session: the hot-path read is one key lookup.
    // `risk_signals` is frozen so a rewrite does not leave a collection
    // tombstone behind.
    "CREATE TABLE IF NOT EXISTS {ks}.sessions (
        project_id text, session_id text,
        token_hash blob, device_id text,
        created_at timestamp, expires_at timestamp, last_seen_at timestamp,
        revoked boolean, ip text,
        risk_score int, risk_bot boolean, risk_signals frozen<list<text>>,
        browser text, os text, platform text, region text,
        PRIMARY KEY ((project_id, session_id)))",
    // The trusted set of a device is one partition; clustering on the
    // identifier keeps it sorted and makes a re-add the same row.
    "CREATE TABLE IF NOT EXISTS {ks}.trusted_identifiers (
        project_id text, device_id text, identifier text,
        PRIMARY KEY ((project_id, device_id), identifier))",
    // Newest first within a device; `session_id` separates two captures in
    // one millisecond. Bounded by the 90-day TTL.
    "CREATE TABLE IF NOT EXISTS {ks}.entropy_snapshots (
        project_id text, device_id text, at timestamp, session_id text,
        entropy text,
        PRIMARY KEY ((project_id, device_id), at, session_id))
        WITH CLUSTERING ORDER BY (at DESC, session_id ASC)",
    // Newest first within an identifier, so "recent attempts" is the head of
    // one partition; `attempt_id` keeps concurrent attempts distinct.
    // Bounded by the 90-day TTL (a credential-stuffing run against one
    // identifier is the worst case: still one partition per identifier).
    "CREATE TABLE IF NOT EXISTS {ks}.login_attempts (
        project_id text, identifier text, at timestamp, attempt_id text,
        success boolean, ip text, device_id text, session_id text,
        region text, platform text, browser text,
        PRIMARY KEY ((project_id, identifier), at, attempt_id))
        WITH CLUSTERING ORDER BY (at DESC, attempt_id ASC)",
    // Point lookups by token id; the TTL ends at the token's own expiry.
    "CREATE TABLE IF NOT EXISTS {ks}.token_revocations (
        project_id text, jti text, expires_at timestamp,
        PRIMARY KEY ((project_id, jti)))",
    // One partition per project per UTC day: a project under attack writes
    // many denies, and a per-project partition would grow without bound.
    "CREATE TABLE IF NOT EXISTS {ks}.deny_events (
        project_id text, utc_day int, at timestamp, event_id bigint,
        bucket text, deny_key text, ip text,
        PRIMARY KEY ((project_id, utc_day), at, event_id))
        WITH CLUSTERING ORDER BY (at DESC, event_id ASC)",
    // One row per identifier, one cell per profile cell (see `ato.rs` for
    // the write timestamps that make last-write-wins the profile's join).
    // Maps, not clustering rows: the whole profile is one small partition
    // read in one go, and each map entry carries its own timestamp and TTL.
    // Device and region maps are bounded by the writers' caps (cells cut
    // by a bound are deleted; stragglers expire with their TTL).
    "CREATE TABLE IF NOT EXISTS {ks}.ato_profiles (
        project_id text, identifier text,
        last_success blob,
        devices map<text, blob>,
        regions map<text, blob>,
        trusted map<text, bigint>,
        failures map<bigint, blob>,
        PRIMARY KEY ((project_id, identifier)))",
    // The dashboard's device index: one row per device and UTC day, the
    // day split into `DEVICE_DAY_SHARDS` partitions so a project with
    // millions of devices a day never makes one huge partition. `first_seen`
    // is written with the timestamp `0 − first_seen·1000` (the earliest
    // wins), the summary with `last_seen·1000` (the latest wins), so rows
    // from many engines merge without a read.
    "CREATE TABLE IF NOT EXISTS {ks}.device_days (
        project_id text, utc_day int, shard int, device_id text,
        first_seen timestamp, summary blob,
        PRIMARY KEY ((project_id, utc_day, shard), device_id))",
    // Cross-engine rate limits: each engine's cumulative consumption of a
    // key per one-minute slot. Small partitions (one project's hot keys in
    // one slot), idempotent upserts whose write time is the publish time
    // (a delayed older count never replaces a newer one), kept two slots.
    "CREATE TABLE IF NOT EXISTS {ks}.limiter_usage (
        project_id text, slot bigint, key blob, engine_id text,
        cells bigint, interval_ns bigint,
        PRIMARY KEY ((project_id, slot), key, engine_id))
        WITH default_time_to_live = 180",
];

/// Session columns in bind order; shared by the insert and the select.
const SESSION_COLUMNS: &str =
    "project_id, session_id, token_hash, device_id, created_at, expires_at, \
     last_seen_at, revoked, ip, risk_score, risk_bot, risk_signals, browser, os, platform, region";

/// Every data-path statement, prepared once at connect. Prepared statements
/// carry their partition key, which is what makes routing token-aware.
#[derive(Debug)]
pub(super) struct Statements {
    /// Bound by `SessionValues`; `revoked` unset on touch, so a touch racing
    /// a revoke cannot clear the mark.
    pub(super) insert_session: PreparedStatement,
    pub(super) select_session: PreparedStatement,
    pub(super) revoke_session: PreparedStatement,
    pub(super) insert_trusted: PreparedStatement,
    pub(super) select_trusted: PreparedStatement,
    pub(super) insert_snapshot: PreparedStatement,
    pub(super) select_snapshots: PreparedStatement,
    pub(super) select_snapshot_times: PreparedStatement,
    pub(super) insert_attempt: PreparedStatement,
    pub(super) select_attempts: PreparedStatement,
    pub(super) insert_revocation: PreparedStatement,
    pub(super) select_revocation: PreparedStatement,
    pub(super) insert_deny: PreparedStatement,
    pub(super) select_denies: PreparedStatement,
    pub(super) health: PreparedStatement,
    /// Profile cell writes: bound `(timestamp, ttl, [key,] value, project,
    /// identifier)`; trusted cells have no TTL marker.
    pub(super) set_last_success: PreparedStatement,
    pub(super) set_device: PreparedStatement,
    pub(super) set_region: PreparedStatement,
    pub(super) set_trusted: PreparedStatement,
    pub(super) set_failure: PreparedStatement,
    /// Profile cell deletes: bound `(key, timestamp, project, identifier)`.
    pub(super) del_device: PreparedStatement,
    pub(super) del_region: PreparedStatement,
    pub(super) del_trusted: PreparedStatement,
    pub(super) select_profile: PreparedStatement,
    /// Device index: bound `(timestamp, ttl, first_seen | summary, project,
    /// day, shard, device)`; the select `(project, day, shard, after, limit)`.
    pub(super) set_device_first_seen: PreparedStatement,
    pub(super) set_device_summary: PreparedStatement,
    pub(super) select_device_days: PreparedStatement,
    pub(super) set_limit_usage: PreparedStatement,
    pub(super) select_limit_usage: PreparedStatement,
}

/// Creates the keyspace and tables if missing and waits until every node
/// agrees on the schema, so the statements prepared next see the tables.
pub(super) async fn migrate(
    session: &CqlSession,
    ks: &str,
    replication_factor: u8,
) -> Result<(), StoreError> {
    // SimpleStrategy places replicas ignoring datacenters and racks: right
    // for one DC and for tests. A production cluster should create the
    // keyspace itself beforehand with
    //   {'class': 'NetworkTopologyStrategy', '<dc>': 3}
    // and this statement then does nothing.
    let keyspace = format!(
        "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = \
         {{'class': 'SimpleStrategy', 'replication_factor': {replication_factor}}}"
    );
    let ddl = std::iter::once(keyspace).chain(TABLES.iter().map(|t| t.replace("{ks}", ks)));
    for text in ddl {
        let mut st = Statement::new(text);
        st.set_request_timeout(Some(DDL_TIMEOUT));
        session
            .query_unpaged(st, &[])
            .await
            .map_err(|e| exec_err("schema", e))?;
    }
    session
        .await_schema_agreement()
        .await
        .map_err(|e| StoreError::Unavailable(format!("cql schema agreement: {e}")))?;
    Ok(())
}

impl Statements {
    /// Prepares every statement; writes at `write`, reads at `read`. Every
    /// statement is idempotent (explicit values, no counters, no `now()`),
    /// so the driver may retry it after a timeout.
    pub(super) async fn prepare(
        session: &CqlSession,
        ks: &str,
        write: Consistency,
        read: Consistency,
    ) -> Result<Self, StoreError> {
        let p = |text: String, cl: Consistency| async move {
            let mut st = session.prepare(text).await.map_err(prepare_err)?;
            st.set_consistency(cl);
            st.set_is_idempotent(true);
            Ok::<_, StoreError>(st)
        };
        Ok(Statements {
            insert_session: p(
                format!("INSERT INTO {ks}.sessions ({SESSION_COLUMNS}) VALUES ({}) USING TTL ?", marks(16)),
                write,
            )
            .await?,
            select_session: p(
                format!("SELECT {SESSION_COLUMNS} FROM {ks}.sessions WHERE project_id = ? AND session_id = ?"),
                read,
            )
            .await?,
            revoke_session: p(
                format!(
                    "UPDATE {ks}.sessions USING TTL ? SET revoked = true WHERE project_id = ? AND session_id = ?"
                ),
                write,
            )
            .await?,
            insert_trusted: p(
                format!("INSERT INTO {ks}.trusted_identifiers (project_id, device_id, identifier) VALUES (?, ?, ?)"),
                write,
            )
            .await?,
            select_trusted: p(
                format!(
                    "SELECT identifier FROM {ks}.trusted_identifiers WHERE project_id = ? AND device_id = ? LIMIT ?"
                ),
                read,
            )
            .await?,
            insert_snapshot: p(
                format!(
                    "INSERT INTO {ks}.entropy_snapshots (project_id, device_id, at, session_id, entropy) \
                     VALUES (?, ?, ?, ?, ?) USING TTL ?"
                ),
                write,
            )
            .await?,
            select_snapshots: p(
                format!(
                    "SELECT project_id, device_id, at, session_id, entropy FROM {ks}.entropy_snapshots \
                     WHERE project_id = ? AND device_id = ? LIMIT ?"
                ),
                read,
            )
            .await?,
            // The per-day cap reads only the newest capture times, not
            // their (kilobytes of) entropy.
            select_snapshot_times: p(
                format!(
                    "SELECT at FROM {ks}.entropy_snapshots \
                     WHERE project_id = ? AND device_id = ? LIMIT ?"
                ),
                read,
            )
            .await?,
            insert_attempt: p(
                format!(
                    "INSERT INTO {ks}.login_attempts (project_id, identifier, at, attempt_id, success, ip, \
                     device_id, session_id, region, platform, browser) VALUES ({}) USING TTL ?",
                    marks(11)
                ),
                write,
            )
            .await?,
            select_attempts: p(
                format!(
                    "SELECT project_id, identifier, at, attempt_id, success, ip, device_id, session_id, region, \
                     platform, browser FROM {ks}.login_attempts \
                     WHERE project_id = ? AND identifier = ? AND at >= ? LIMIT ?"
                ),
                read,
            )
            .await?,
            insert_revocation: p(
                format!("INSERT INTO {ks}.token_revocations (project_id, jti, expires_at) VALUES (?, ?, ?) USING TTL ?"),
                write,
            )
            .await?,
            select_revocation: p(
                format!("SELECT expires_at FROM {ks}.token_revocations WHERE project_id = ? AND jti = ?"),
                read,
            )
            .await?,
            insert_deny: p(
                format!(
                    "INSERT INTO {ks}.deny_events (project_id, utc_day, at, event_id, bucket, deny_key, ip) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL ?"
                ),
                write,
            )
            .await?,
            select_denies: p(
                format!(
                    "SELECT project_id, at, bucket, deny_key, ip FROM {ks}.deny_events \
                     WHERE project_id = ? AND utc_day = ? AND at >= ? LIMIT ?"
                ),
                read,
            )
            .await?,
            // Answered by whichever node the driver picks; ONE is enough to
            // prove the cluster answers.
            health: p("SELECT release_version FROM system.local".into(), Consistency::One).await?,
            set_device_first_seen: p(
                format!(
                    "UPDATE {ks}.device_days USING TIMESTAMP ? AND TTL ? SET first_seen = ? \
                     WHERE project_id = ? AND utc_day = ? AND shard = ? AND device_id = ?"
                ),
                write,
            )
            .await?,
            set_device_summary: p(
                format!(
                    "UPDATE {ks}.device_days USING TIMESTAMP ? AND TTL ? SET summary = ? \
                     WHERE project_id = ? AND utc_day = ? AND shard = ? AND device_id = ?"
                ),
                write,
            )
            .await?,
            select_device_days: p(
                format!(
                    "SELECT first_seen, summary FROM {ks}.device_days \
                     WHERE project_id = ? AND utc_day = ? AND shard = ? AND device_id > ? LIMIT ?"
                ),
                read,
            )
            .await?,
            set_limit_usage: p(
                format!(
                    "UPDATE {ks}.limiter_usage USING TIMESTAMP ? SET cells = ?, interval_ns = ? \
                     WHERE project_id = ? AND slot = ? AND key = ? AND engine_id = ?"
                ),
                write,
            )
            .await?,
            select_limit_usage: p(
                format!(
                    "SELECT key, engine_id, cells, interval_ns FROM {ks}.limiter_usage \
                     WHERE project_id = ? AND slot = ? LIMIT ?"
                ),
                read,
            )
            .await?,
            set_last_success: p(
                format!(
                    "UPDATE {ks}.ato_profiles USING TIMESTAMP ? AND TTL ? SET last_success = ? \
                     WHERE project_id = ? AND identifier = ?"
                ),
                write,
            )
            .await?,
            set_device: p(set_map_cell(ks, "devices", true), write).await?,
            set_region: p(set_map_cell(ks, "regions", true), write).await?,
            set_trusted: p(set_map_cell(ks, "trusted", false), write).await?,
            set_failure: p(set_map_cell(ks, "failures", true), write).await?,
            del_device: p(del_map_cell(ks, "devices"), write).await?,
            del_region: p(del_map_cell(ks, "regions"), write).await?,
            del_trusted: p(del_map_cell(ks, "trusted"), write).await?,
            select_profile: p(
                format!(
                    "SELECT last_success, devices, regions, trusted, failures FROM {ks}.ato_profiles \
                     WHERE project_id = ? AND identifier = ?"
                ),
                read,
            )
            .await?,
        })
    }
}

/// `?, ?, …` with `n` markers.
fn marks(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// `UPDATE … USING TIMESTAMP ? [AND TTL ?] SET <map>[?] = ? WHERE <key>`.
fn set_map_cell(ks: &str, map: &str, ttl: bool) -> String {
    let ttl = if ttl { " AND TTL ?" } else { "" };
    format!(
        "UPDATE {ks}.ato_profiles USING TIMESTAMP ?{ttl} SET {map}[?] = ? \
         WHERE project_id = ? AND identifier = ?"
    )
}

/// `DELETE <map>[?] FROM … USING TIMESTAMP ? WHERE <key>`.
fn del_map_cell(ks: &str, map: &str) -> String {
    format!(
        "DELETE {map}[?] FROM {ks}.ato_profiles USING TIMESTAMP ? \
         WHERE project_id = ? AND identifier = ?"
    )
}
