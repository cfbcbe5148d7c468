//! The production [`DataStore`] on ScyllaDB through the `scylla` driver
//! (also runs on Apache Cassandra 5.0, which the tests use).
//!
//! - At connect: create the keyspace and tables if missing (idempotent, see
//!   [`schema`]), wait for schema agreement, prepare every statement once.
//! - Routing: the driver's default policy is token-aware (and shard-aware on
//!   ScyllaDB), so each prepared read or write goes straight to a replica.
//! - Consistency: `LOCAL_QUORUM` for writes and reads by default. With
//!   RF=3 that survives one replica down per DC and, since W + R > RF, a
//!   read sees every acknowledged write (a session written by one engine is
//!   found by the next). With RF=1 (a single test node) it is simply ONE.
//!   Both levels are configurable in [`ScyllaConfig`] (the engine reads
//!   `QYZAR_ENGINE_CQL_WRITE_CONSISTENCY` and `_READ_CONSISTENCY`).
//! - Expiry: `USING TTL` on every table but trusted identifiers (and the
//!   trusted devices of ATO profiles); reads also filter on `expires_at`,
//!   since TTLs have one-second granularity.
//! - ATO profiles: no read-before-write; each cell is written `USING
//!   TIMESTAMP` so that last-write-wins is the profile's join (see [`ato`]).
//!
//! Schema creation at start is safe for one engine at a time; when many
//! engines start at once against a fresh cluster, create the schema first
//! (one engine, or a deploy job) to avoid concurrent `CREATE TABLE`s.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::scylla::client::execution_profile::ExecutionProfile;
use ::scylla::client::session::Session as CqlSession;
use ::scylla::client::session_builder::SessionBuilder;
use ::scylla::response::query_result::QueryResult;
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::value::{CqlTimestamp, MaybeUnset};
use async_trait::async_trait;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};

use self::errors::{corrupt, exec_err};
use self::rows::{AttemptRow, AttemptValues, DenyRow, SessionRow, SessionValues, SnapshotRow};
use self::schema::Statements;
use super::model::check_identifier;
use super::{
    check_ato_write, check_expiry, check_touch, clamp_limit, expire_profile, now_ms,
    profile_is_empty, AtoProfile, DataStore, DenyEvent, DeviceDay, EntropySnapshot, LimitUsage,
    LoginAttempt, ProfileUpdate, Session, StoreError, DAY_MS, DENY_EVENT_RETENTION_MS,
    DEVICE_DAY_RETENTION_MS, DEVICE_DAY_SHARDS, ENTROPY_SNAPSHOT_RETENTION_MS,
    LOGIN_ATTEMPT_RETENTION_MS, MAX_ENTROPY_SNAPSHOTS_PER_DAY, MAX_LIMIT_USAGE_ROWS,
    MAX_LIST_LIMIT, MAX_SESSION_LIFETIME_MS,
};

mod ato;
mod errors;
mod group;
mod rows;
mod schema;

/// CQL consistency levels, re-exported so callers need not name the driver.
pub use ::scylla::statement::Consistency;

/// How long a session's revocation mark lives: longer than any session can
/// (the lifetime cap plus a day of clock skew), so no touch racing the
/// revoke can outlive the mark and bring the session back.
const REVOKE_MARK_TTL_S: i32 = ((MAX_SESSION_LIFETIME_MS + DAY_MS) / 1000) as i32;
/// CQL's largest TTL (20 years).
const MAX_TTL_S: i64 = 630_720_000;
/// Concurrent inserts per `record_deny_events` call: enough to hide the
/// round trip, few enough not to flood one coordinator with a big batch.
const DENY_WRITE_CONCURRENCY: usize = 32;

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`; the driver discovers the other nodes.
    pub nodes: Vec<String>,
    /// Keyspace for the data-plane tables: `[a-z][a-z0-9_]*`, at most 48
    /// characters (it is spliced into DDL, so it is checked, not escaped).
    pub keyspace: String,
    /// Replication factor used if the keyspace has to be created (3 in
    /// production, 1 for a single test node).
    pub replication_factor: u8,
    /// Per-request client-side timeout; a timeout is `Unavailable`.
    pub request_timeout: Duration,
    /// How long to try the contact points at connect.
    pub connect_timeout: Duration,
    /// Consistency for writes (default `LOCAL_QUORUM`).
    pub write_consistency: Consistency,
    /// Consistency for reads (default `LOCAL_QUORUM`).
    pub read_consistency: Consistency,
}

impl ScyllaConfig {
    /// The checks [`ScyllaStore::connect`] makes before any network call:
    /// a valid keyspace name and a replication factor of at least 1. A
    /// caller connecting in the background (see
    /// [`BackgroundStore`](super::BackgroundStore)) runs them first, so a
    /// typo fails the start instead of being retried forever.
    pub fn check(&self) -> Result<(), StoreError> {
        check_keyspace(&self.keyspace)?;
        if self.replication_factor == 0 {
            return Err(StoreError::Invalid(
                "replication_factor must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Production defaults: RF 3, `LOCAL_QUORUM` both ways, 2 s requests.
    pub fn new(nodes: Vec<String>, keyspace: impl Into<String>) -> Self {
        ScyllaConfig {
            nodes,
            keyspace: keyspace.into(),
            replication_factor: 3,
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(5),
            write_consistency: Consistency::LocalQuorum,
            read_consistency: Consistency::LocalQuorum,
        }
    }
}

/// The ScyllaDB store. One driver session (connection pools to every
/// node) and the prepared statements; share it behind an `Arc`.
pub struct ScyllaStore {
    session: Arc<CqlSession>,
    st: Statements,
    /// The anti-ATO writes, joined into batches ([`group`]), which carry
    /// their own consistency (the prepared statements in them do not count).
    ato_writes: group::Group,
    /// Deny-event tie-breaker, seeded randomly so engines do not collide.
    next_event_id: AtomicI64,
}

impl std::fmt::Debug for ScyllaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScyllaStore").finish_non_exhaustive()
    }
}

impl ScyllaStore {
    /// Connects, creates the schema if missing and prepares the statements.
    /// An unreachable cluster is `Unavailable`; a bad keyspace name `Invalid`.
    pub async fn connect(config: ScyllaConfig) -> Result<Self, StoreError> {
        config.check()?;
        let profile = ExecutionProfile::builder()
            .request_timeout(Some(config.request_timeout))
            .consistency(config.read_consistency)
            .build();
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.connect_timeout)
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(|e| StoreError::Unavailable(format!("cql connect: {e}")))?;
        schema::migrate(&session, &config.keyspace, config.replication_factor).await?;
        let st = Statements::prepare(
            &session,
            &config.keyspace,
            config.write_consistency,
            config.read_consistency,
        )
        .await?;
        let session = Arc::new(session);
        Ok(ScyllaStore {
            ato_writes: group::Group::new(Arc::clone(&session), config.write_consistency),
            session,
            st,
            next_event_id: AtomicI64::new(random_i64()),
        })
    }

    /// Anti-ATO writes asked for and the batches they were written in
    /// (concurrent writes share a batch; tests compare the two to prove it).
    pub fn ato_write_counts(&self) -> (u64, u64) {
        self.ato_writes.counts()
    }

    async fn exec(
        &self,
        what: &'static str,
        st: &PreparedStatement,
        values: impl ::scylla::serialize::row::SerializeRow,
    ) -> Result<QueryResult, StoreError> {
        self.session
            .execute_unpaged(st, values)
            .await
            .map_err(|e| exec_err(what, e))
    }

    /// Runs a select and decodes every row as `R`.
    async fn rows<R>(
        &self,
        what: &'static str,
        st: &PreparedStatement,
        values: impl ::scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f, 'm> ::scylla::deserialize::row::DeserializeRow<'f, 'm>,
    {
        let res = self.exec(what, st, values).await?;
        let rows = res.into_rows_result().map_err(|e| corrupt(what, e))?;
        rows.rows::<R>()
            .map_err(|e| corrupt(what, e))?
            .map(|r| r.map_err(|e| corrupt(what, e)))
            .collect()
    }

    async fn read_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<Option<Session>, StoreError> {
        let rows: Vec<SessionRow> = self
            .rows(
                "read session",
                &self.st.select_session,
                (project.as_str(), session.as_str()),
            )
            .await?;
        let now = now_ms();
        match rows.into_iter().next() {
            None => Ok(None),
            Some(r) => Ok(r.into_session()?.filter(|s| s.expires_at > now)),
        }
    }

    /// Writes every session column; `revoked: None` leaves that cell alone.
    async fn write_session(
        &self,
        s: &Session,
        revoked: Option<bool>,
        now: i64,
    ) -> Result<(), StoreError> {
        let Some(ttl) = ttl_until(s.expires_at, now) else {
            return Ok(());
        };
        let values = SessionValues {
            project_id: s.project_id.as_str(),
            session_id: s.session_id.as_str(),
            token_hash: &s.token_hash,
            device_id: s.device_id.as_str(),
            created_at: CqlTimestamp(s.created_at),
            expires_at: CqlTimestamp(s.expires_at),
            last_seen_at: CqlTimestamp(s.last_seen_at),
            revoked: revoked.map_or(MaybeUnset::Unset, MaybeUnset::Set),
            ip: unset_if_none(s.ip.as_deref()),
            risk_score: i32::from(s.risk.score),
            risk_bot: s.risk.bot,
            risk_signals: &s.risk.signals,
            browser: &s.device.browser,
            os: &s.device.os,
            platform: &s.device.platform,
            region: unset_if_none(s.device.region.as_deref()),
            ttl,
        };
        self.exec("write session", &self.st.insert_session, values)
            .await
            .map(drop)
    }

    async fn trusted(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .rows(
                "read trusted identifiers",
                &self.st.select_trusted,
                (project.as_str(), device.as_str(), cql_limit(MAX_LIST_LIMIT)),
            )
            .await?;
        Ok(rows.into_iter().map(|(i,)| i).collect())
    }
}

#[async_trait]
impl DataStore for ScyllaStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        session.validate()?;
        let now = now_ms();
        check_expiry(session.expires_at, now)?;
        self.write_session(session, Some(session.revoked), now)
            .await
    }

    async fn get_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<Option<Session>, StoreError> {
        self.read_session(project, session).await
    }

    /// CQL TTLs are per cell, so extending a session rewrites the whole row
    /// with the new TTL (an `UPDATE` of two columns would leave the others
    /// to expire at the old time). The `revoked` cell is never rewritten.
    async fn touch_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let now = now_ms();
        check_touch(last_seen_at, expires_at, now)?;
        let Some(mut s) = self.read_session(project, session).await? else {
            return Ok(false);
        };
        if s.revoked {
            return Ok(false);
        }
        let unchanged = s.last_seen_at >= last_seen_at && s.expires_at >= expires_at;
        s.last_seen_at = s.last_seen_at.max(last_seen_at);
        s.expires_at = s.expires_at.max(expires_at);
        if !unchanged {
            self.write_session(&s, None, now).await?;
        }
        Ok(true)
    }

    /// Writes only the `revoked` cell, with a TTL longer than any session
    /// can live: a read-modify-write would race touches and could clear it.
    async fn revoke_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<bool, StoreError> {
        if self.read_session(project, session).await?.is_none() {
            return Ok(false);
        }
        self.exec(
            "revoke session",
            &self.st.revoke_session,
            (REVOKE_MARK_TTL_S, project.as_str(), session.as_str()),
        )
        .await?;
        Ok(true)
    }

    async fn add_trusted_identifier(
        &self,
        project: &ProjectId,
        device: &DeviceId,
        identifier: &str,
    ) -> Result<Vec<String>, StoreError> {
        check_identifier("identifier", identifier)?;
        self.exec(
            "add trusted identifier",
            &self.st.insert_trusted,
            (project.as_str(), device.as_str(), identifier),
        )
        .await?;
        self.trusted(project, device).await
    }

    async fn trusted_identifiers(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Vec<String>, StoreError> {
        self.trusted(project, device).await
    }

    async fn put_entropy_snapshot(&self, s: &EntropySnapshot) -> Result<(), StoreError> {
        s.validate()?;
        let Some(ttl) = ttl_until(s.at.saturating_add(ENTROPY_SNAPSHOT_RETENTION_MS), now_ms())
        else {
            return Ok(());
        };
        let newest: Vec<(CqlTimestamp,)> = self
            .rows(
                "read entropy snapshot times",
                &self.st.select_snapshot_times,
                (
                    s.project_id.as_str(),
                    s.device_id.as_str(),
                    cql_limit(MAX_ENTROPY_SNAPSHOTS_PER_DAY),
                ),
            )
            .await?;
        let times: Vec<i64> = newest.into_iter().map(|(t,)| t.0).collect();
        if super::entropy_day_is_full(&times, s.at) {
            return Ok(());
        }
        let values = (
            s.project_id.as_str(),
            s.device_id.as_str(),
            CqlTimestamp(s.at),
            s.session_id.as_str(),
            s.entropy_json.as_str(),
            ttl,
        );
        self.exec("write entropy snapshot", &self.st.insert_snapshot, values)
            .await
            .map(drop)
    }

    async fn latest_entropy_snapshot(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Option<EntropySnapshot>, StoreError> {
        Ok(self
            .list_entropy_snapshots(project, device, 1)
            .await?
            .into_iter()
            .next())
    }

    async fn list_entropy_snapshots(
        &self,
        project: &ProjectId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<EntropySnapshot>, StoreError> {
        let limit = clamp_limit(limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<SnapshotRow> = self
            .rows(
                "read entropy snapshots",
                &self.st.select_snapshots,
                (project.as_str(), device.as_str(), cql_limit(limit)),
            )
            .await?;
        rows.into_iter().map(SnapshotRow::into_snapshot).collect()
    }

    async fn record_login_attempt(&self, a: &LoginAttempt) -> Result<(), StoreError> {
        a.validate()?;
        let Some(values) = attempt_values(a, now_ms()) else {
            return Ok(());
        };
        self.exec("write login attempt", &self.st.insert_attempt, values)
            .await
            .map(drop)
    }

    async fn recent_login_attempts(
        &self,
        project: &ProjectId,
        identifier: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError> {
        check_identifier("identifier", identifier)?;
        let limit = clamp_limit(limit);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let values = (
            project.as_str(),
            identifier,
            CqlTimestamp(since_ms),
            cql_limit(limit),
        );
        let rows: Vec<AttemptRow> = self
            .rows("read login attempts", &self.st.select_attempts, values)
            .await?;
        rows.into_iter().map(AttemptRow::into_attempt).collect()
    }

    /// Reads the row, decodes every cell, then drops what expired and
    /// bounds it: cells beyond the caps (a concurrent writer's device the
    /// bound cut elsewhere) may linger until their TTL, but are never
    /// returned.
    async fn ato_profile(
        &self,
        project: &ProjectId,
        identifier: &str,
    ) -> Result<Option<AtoProfile>, StoreError> {
        check_identifier("identifier", identifier)?;
        let rows: Vec<ato::ProfileRow> = self
            .rows(
                "read ato profile",
                &self.st.select_profile,
                (project.as_str(), identifier),
            )
            .await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        let mut p = row.into_profile()?;
        let now = now_ms();
        expire_profile(&mut p, now);
        p.bound(now);
        Ok((!profile_is_empty(&p)).then_some(p))
    }

    /// One batch: a write per changed cell and a delete per forgotten one,
    /// each `USING TIMESTAMP` per the rules of the `ato` module, plus the attempt
    /// row. Per-statement timestamps are allowed in a batch that sets none
    /// of its own, and each statement keeps its own, so batching changes no
    /// merge; the batch is `LOGGED` when it holds the attempt (two tables,
    /// two partitions: the batch log makes it both or neither) and
    /// `UNLOGGED` otherwise (one partition is applied atomically anyway).
    /// Concurrent calls for one identifier share a batch ([`group`]: one
    /// logged batch per group instead of one per attempt). Every statement has explicit values, so a
    /// retried batch writes the same cells again and changes nothing (the
    /// attempt row is the same row).
    async fn record_ato(
        &self,
        project: &ProjectId,
        identifier: &str,
        attempt: Option<LoginAttempt>,
        update: ProfileUpdate,
    ) -> Result<(), StoreError> {
        check_ato_write(project, identifier, attempt.as_ref(), &update)?;
        let now = now_ms();
        let st = &self.st;
        let mut writes = ato::profile_writes(st, project.as_str(), identifier, &update, now);
        let logged = match attempt.as_ref().and_then(|a| attempt_values(a, now)) {
            Some(v) => {
                writes.push((&st.insert_attempt, Box::new(v)));
                true
            }
            None => false,
        };
        if writes.is_empty() {
            return Ok(());
        }
        let statements = writes
            .into_iter()
            .map(|(st, v)| Ok((st.clone(), group::Bound::new(st, &*v)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.ato_writes
            .write(
                project.as_str(),
                identifier,
                group::Write { statements, logged },
            )
            .await
    }

    async fn revoke_token(
        &self,
        project: &ProjectId,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        check_identifier("jti", jti)?;
        let Some(ttl) = ttl_until(expires_at, now_ms()) else {
            return Ok(());
        };
        let values = (project.as_str(), jti, CqlTimestamp(expires_at), ttl);
        self.exec("revoke token", &self.st.insert_revocation, values)
            .await
            .map(drop)
    }

    async fn is_token_revoked(&self, project: &ProjectId, jti: &str) -> Result<bool, StoreError> {
        check_identifier("jti", jti)?;
        let rows: Vec<(Option<CqlTimestamp>,)> = self
            .rows(
                "read token revocation",
                &self.st.select_revocation,
                (project.as_str(), jti),
            )
            .await?;
        let now = now_ms();
        Ok(rows
            .into_iter()
            .any(|(exp,)| exp.is_some_and(|CqlTimestamp(t)| t > now)))
    }

    async fn record_deny_events(&self, events: &[DenyEvent]) -> Result<(), StoreError> {
        events.iter().try_for_each(DenyEvent::validate)?;
        let now = now_ms();
        for chunk in events.chunks(DENY_WRITE_CONCURRENCY) {
            let writes = chunk.iter().filter_map(|e| {
                let ttl = ttl_until(e.at.saturating_add(DENY_EVENT_RETENTION_MS), now)?;
                let id = self.next_event_id.fetch_add(1, Ordering::Relaxed);
                let values = (
                    e.project_id.as_str(),
                    utc_day(e.at),
                    CqlTimestamp(e.at),
                    id,
                    e.bucket.as_str(),
                    e.key.as_str(),
                    unset_if_none(e.ip.as_deref()),
                    ttl,
                );
                Some(self.exec("write deny event", &self.st.insert_deny, values))
            });
            futures::future::try_join_all(writes).await?;
        }
        Ok(())
    }

    /// Walks the day partitions from today back to `since_ms` (at most the
    /// 30-day retention), newest first, until `limit` rows are found.
    async fn list_deny_events(
        &self,
        project: &ProjectId,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<DenyEvent>, StoreError> {
        let limit = clamp_limit(limit);
        let now = now_ms();
        let since = since_ms.max(now - DENY_EVENT_RETENTION_MS);
        let mut out = Vec::new();
        // Tomorrow too: an engine's clock may run a little ahead of ours.
        let mut day = utc_day(now) + 1;
        while out.len() < limit && day >= utc_day(since) {
            let values = (
                project.as_str(),
                day,
                CqlTimestamp(since),
                cql_limit(limit - out.len()),
            );
            let rows: Vec<DenyRow> = self
                .rows("read deny events", &self.st.select_denies, values)
                .await?;
            for r in rows {
                out.push(r.into_event()?);
            }
            day -= 1;
        }
        Ok(out)
    }

    async fn record_device_days(&self, rows: &[DeviceDay]) -> Result<(), StoreError> {
        rows.iter().try_for_each(DeviceDay::validate)?;
        let now = now_ms();
        for chunk in rows.chunks(DENY_WRITE_CONCURRENCY) {
            let writes = chunk.iter().filter_map(|r| {
                let end = r.day.saturating_add(1).saturating_mul(DAY_MS);
                let ttl = ttl_until(end.saturating_add(DEVICE_DAY_RETENTION_MS), now)?;
                let day = i32::try_from(r.day).ok()?;
                let key = (
                    r.project_id.as_str(),
                    day,
                    i32::from(DeviceDay::shard(&r.device_id)),
                    r.device_id.as_str(),
                );
                let summary = serde_json::to_vec(r).ok()?;
                Some(async move {
                    let first = (
                        0i64.saturating_sub(r.first_seen.saturating_mul(1000)),
                        ttl,
                        CqlTimestamp(r.first_seen),
                        key.0,
                        key.1,
                        key.2,
                        key.3,
                    );
                    let last = (
                        r.last_seen.saturating_mul(1000),
                        ttl,
                        summary,
                        key.0,
                        key.1,
                        key.2,
                        key.3,
                    );
                    futures::future::try_join(
                        self.exec(
                            "write device first seen",
                            &self.st.set_device_first_seen,
                            first,
                        ),
                        self.exec("write device summary", &self.st.set_device_summary, last),
                    )
                    .await
                    .map(drop)
                })
            });
            futures::future::try_join_all(writes).await?;
        }
        Ok(())
    }

    /// Walks the day's shards from the cursor's on, one partition slice each.
    async fn list_device_days(
        &self,
        project: &ProjectId,
        day: i64,
        after: Option<(u8, &DeviceId)>,
        limit: usize,
    ) -> Result<Vec<DeviceDay>, StoreError> {
        let limit = clamp_limit(limit);
        let mut out = Vec::new();
        let Ok(cql_day) = i32::try_from(day) else {
            return Ok(out);
        };
        let (first_shard, mut after_id) = match after {
            Some((shard, id)) => (shard, id.as_str()),
            None => (0, ""),
        };
        for shard in first_shard..DEVICE_DAY_SHARDS {
            if out.len() >= limit {
                break;
            }
            let values = (
                project.as_str(),
                cql_day,
                i32::from(shard),
                after_id,
                cql_limit(limit - out.len()),
            );
            let rows: Vec<(Option<CqlTimestamp>, Option<Vec<u8>>)> = self
                .rows("read device days", &self.st.select_device_days, values)
                .await?;
            for (first, summary) in rows {
                // A row whose summary write has not landed yet (or expired
                // first) is skipped: it has nothing to show.
                let Some(summary) = summary else { continue };
                let mut d: DeviceDay =
                    serde_json::from_slice(&summary).map_err(|e| corrupt("read device days", e))?;
                if let Some(CqlTimestamp(f)) = first {
                    d.first_seen = d.first_seen.min(f);
                }
                out.push(d);
            }
            after_id = "";
        }
        Ok(out)
    }

    async fn publish_limit_usage(&self, rows: &[LimitUsage]) -> Result<(), StoreError> {
        // The write time orders one engine's rows of a key: cumulative
        // counts only grow within a slot, so the newest write is the truth.
        let at = now_ms().saturating_mul(1000);
        for chunk in rows.chunks(DENY_WRITE_CONCURRENCY) {
            let writes = chunk.iter().map(|r| {
                let values = (
                    at,
                    r.cells,
                    r.interval_ns,
                    r.project_id.as_str(),
                    r.slot,
                    r.key.to_vec(),
                    r.engine_id.as_str(),
                );
                self.exec("write limit usage", &self.st.set_limit_usage, values)
            });
            futures::future::try_join_all(writes).await?;
        }
        Ok(())
    }

    async fn read_limit_usage(
        &self,
        project: &ProjectId,
        slot: i64,
    ) -> Result<Vec<LimitUsage>, StoreError> {
        let values = (project.as_str(), slot, cql_limit(MAX_LIMIT_USAGE_ROWS));
        let rows: Vec<(Vec<u8>, String, Option<i64>, Option<i64>)> = self
            .rows("read limit usage", &self.st.select_limit_usage, values)
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(key, engine_id, cells, interval_ns)| {
                Some(LimitUsage {
                    project_id: project.clone(),
                    slot,
                    key: key.try_into().ok()?,
                    engine_id,
                    cells: cells?,
                    interval_ns: interval_ns?,
                })
            })
            .collect())
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.exec("health", &self.st.health, ()).await.map(drop)
    }
}

/// The attempt row's values; `None` when it is already past its retention
/// (nothing worth writing).
fn attempt_values(a: &LoginAttempt, now: i64) -> Option<AttemptValues<'_>> {
    let ttl = ttl_until(a.at.saturating_add(LOGIN_ATTEMPT_RETENTION_MS), now)?;
    Some(AttemptValues {
        project_id: a.project_id.as_str(),
        identifier: &a.identifier,
        at: CqlTimestamp(a.at),
        attempt_id: &a.attempt_id,
        success: a.success,
        ip: unset_if_none(a.ip.as_deref()),
        device_id: unset_if_none(a.device_id.as_ref().map(DeviceId::as_str)),
        session_id: unset_if_none(a.session_id.as_ref().map(SessionId::as_str)),
        region: unset_if_none(a.region.as_deref()),
        platform: unset_if_none(a.platform.as_deref()),
        browser: unset_if_none(a.browser.as_deref()),
        ttl,
    })
}

/// Seconds from `now` until `deadline_ms`, rounded up so a row never dies
/// before its time; `None` when already past (nothing worth writing).
fn ttl_until(deadline_ms: i64, now: i64) -> Option<i32> {
    let ms = deadline_ms.checked_sub(now).filter(|ms| *ms > 0)?;
    i32::try_from(((ms + 999) / 1000).min(MAX_TTL_S)).ok()
}

fn utc_day(at: i64) -> i32 {
    i32::try_from(at.div_euclid(DAY_MS)).unwrap_or(i32::MAX)
}

fn cql_limit(limit: usize) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

/// `None` as "unset" rather than null: an explicit null is a tombstone.
fn unset_if_none(v: Option<&str>) -> MaybeUnset<&str> {
    v.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

fn check_keyspace(ks: &str) -> Result<(), StoreError> {
    let ok = ks.len() <= 48
        && ks.starts_with(|c: char| c.is_ascii_lowercase())
        && ks
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "keyspace must be [a-z][a-z0-9_]*, at most 48 characters".into(),
        ))
    }
}

fn random_i64() -> i64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    // A fixed start only risks two engines sharing an event id for the same
    // project and millisecond; not worth refusing to start for.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    i64::from_be_bytes(b)
}
