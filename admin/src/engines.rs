//! The live set of engines: who announced themselves, what they serve, and
//! keeping a push task for each one that can be pushed to.
//!
//! Engines heartbeat `POST /internal/engines`
//! ([`qyzar_shared::control::EngineHeartbeat`]); each beat upserts the
//! engine's row in the control-plane database, so every admin instance sees
//! every engine whichever instance the beat reached. An engine is live while
//! its last beat is younger than [`ENGINE_EXPIRY_HEARTBEATS`] of its own
//! intervals. Every admin instance runs [`reconcile_forever`]: once a second
//! it reads the live set and keeps exactly one push task per live push URL
//! (a restarted engine, a new id at the same URL, shares the task), stopping
//! the task of an engine that went quiet. Engines from the static list
//! (`QYZAR_ENGINE_INTERNAL_URLS`) keep their own tasks and are not doubled.
//!
//! Bounded: at most [`MAX_ENGINES`] rows; a new id past it is refused (`409`)
//! while the known ones keep beating, and rows a day past their last beat
//! are deleted.

use std::collections::HashMap;
use std::time::Duration;

use qyzar_shared::control::{EngineHeartbeat, ENGINE_EXPIRY_HEARTBEATS};
use qyzar_shared::{ApiError, ErrorCode};
use sqlx::Row;

use crate::db::Db;
use crate::error::AdminResult;
use crate::AppState;

/// Most engines remembered: far above any deployment, and what bounds the
/// table and the push tasks a leaked report key could make admin run.
pub const MAX_ENGINES: i64 = 1024;

/// How often each admin instance reconciles its push tasks with the live set.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// Rows whose last beat is older than this are deleted.
const FORGET_AFTER_MS: i64 = 86_400_000;

/// One engine as the dashboard and the reconciler see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineRow {
    /// Its id.
    pub engine_id: String,
    /// Where it takes pushes, if anywhere.
    pub push_url: Option<String>,
    /// The snapshot version it served at its last beat.
    pub version: u64,
    /// When its process started, unix ms.
    pub started_at: i64,
    /// Its beat interval, ms.
    pub heartbeat_ms: i64,
    /// Its first and last beat, unix ms.
    pub first_seen: i64,
    /// Its last beat, unix ms.
    pub last_seen: i64,
}

impl EngineRow {
    /// Whether its last beat is recent enough at `now`.
    pub fn is_live(&self, now: i64) -> bool {
        now.saturating_sub(self.last_seen)
            <= self
                .heartbeat_ms
                .saturating_mul(ENGINE_EXPIRY_HEARTBEATS as i64)
    }
}

/// Records one beat at `now`. A new id past [`MAX_ENGINES`] is refused.
pub async fn record(db: &Db, beat: &EngineHeartbeat, now: i64) -> AdminResult<()> {
    let version = i64::try_from(beat.version).unwrap_or(i64::MAX);
    let heartbeat_ms = i64::try_from(beat.heartbeat_ms).unwrap_or(i64::MAX);
    let updated = sqlx::query(
        "UPDATE engines SET push_url = $2, version = $3, started_at = $4, heartbeat_ms = $5, \
         last_seen = $6 WHERE engine_id = $1",
    )
    .bind(&beat.engine_id)
    .bind(beat.push_url.as_deref())
    .bind(version)
    .bind(beat.started_at_ms)
    .bind(heartbeat_ms)
    .bind(now)
    .execute(db.pool())
    .await?
    .rows_affected();
    if updated > 0 {
        return Ok(());
    }
    let known: i64 = sqlx::query("SELECT COUNT(*) AS n FROM engines")
        .fetch_one(db.pool())
        .await?
        .try_get("n")?;
    if known >= MAX_ENGINES {
        return Err(ApiError::with_message(
            ErrorCode::Conflict,
            "admin already tracks the most engines it will; a new engine id is refused until old ones expire",
        )
        .field("engineId")
        .into());
    }
    sqlx::query(
        "INSERT INTO engines (engine_id, push_url, version, started_at, heartbeat_ms, first_seen, last_seen) \
         VALUES ($1, $2, $3, $4, $5, $6, $6) \
         ON CONFLICT (engine_id) DO UPDATE SET push_url = excluded.push_url, version = excluded.version, \
         started_at = excluded.started_at, heartbeat_ms = excluded.heartbeat_ms, last_seen = excluded.last_seen",
    )
    .bind(&beat.engine_id)
    .bind(beat.push_url.as_deref())
    .bind(version)
    .bind(beat.started_at_ms)
    .bind(heartbeat_ms)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Every remembered engine, newest beat first.
pub async fn list(db: &Db) -> AdminResult<Vec<EngineRow>> {
    let rows = sqlx::query(
        "SELECT engine_id, push_url, version, started_at, heartbeat_ms, first_seen, last_seen \
         FROM engines ORDER BY last_seen DESC, engine_id LIMIT $1",
    )
    .bind(MAX_ENGINES)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EngineRow {
                engine_id: r.try_get("engine_id")?,
                push_url: r.try_get("push_url")?,
                version: u64::try_from(r.try_get::<i64, _>("version")?).unwrap_or(0),
                started_at: r.try_get("started_at")?,
                heartbeat_ms: r.try_get("heartbeat_ms")?,
                first_seen: r.try_get("first_seen")?,
                last_seen: r.try_get("last_seen")?,
            })
        })
        .collect()
}

/// Deletes rows a day past their last beat; returns how many went.
pub async fn forget_old(db: &Db, now: i64) -> AdminResult<u64> {
    Ok(sqlx::query("DELETE FROM engines WHERE last_seen < $1")
        .bind(now.saturating_sub(FORGET_AFTER_MS))
        .execute(db.pool())
        .await?
        .rows_affected())
}

/// The push URLs of the live engines at `now`, normalised (no trailing
/// slash), without those the static list already covers.
pub fn push_targets(rows: &[EngineRow], static_urls: &[String], now: i64) -> Vec<String> {
    let fixed: Vec<&str> = static_urls
        .iter()
        .map(|u| u.trim_end_matches('/'))
        .collect();
    let mut out: Vec<String> = rows
        .iter()
        .filter(|r| r.is_live(now))
        .filter_map(|r| r.push_url.as_deref())
        .map(|u| u.trim_end_matches('/').to_owned())
        .filter(|u| !fixed.contains(&u.as_str()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Keeps one push task per live push URL, for as long as the task lives
/// (the server aborts it when it stops).
pub async fn reconcile_forever(state: AppState) {
    let mut tasks: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut ticks = tokio::time::interval(RECONCILE_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut passes: u64 = 0;
    loop {
        ticks.tick().await;
        passes += 1;
        let now = qyzar_shared::time::now_ms();
        let rows = match list(&state.db).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "engines not listed; push tasks kept as they are");
                continue;
            }
        };
        let wanted = push_targets(&rows, &state.config.engine_urls, now);
        tasks.retain(|url, task| {
            let keep = wanted.contains(url) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(engine = %url, "engine gone quiet; no longer pushing to it");
            }
            keep
        });
        for url in wanted {
            if tasks.contains_key(&url) {
                continue;
            }
            match state.pusher.spawn_target(&url) {
                Ok(task) => {
                    tracing::info!(engine = %url, "engine registered; pushing to it");
                    tasks.insert(url, task);
                }
                Err(e) => {
                    tracing::warn!(engine = %url, error = %e, "registered engine url not usable")
                }
            }
        }
        if passes % 3600 == 1 {
            if let Err(e) = forget_old(&state.db, now).await {
                tracing::warn!(error = %e, "old engine rows not deleted");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, url: Option<&str>, last_seen: i64) -> EngineRow {
        EngineRow {
            engine_id: id.into(),
            push_url: url.map(Into::into),
            version: 1,
            started_at: 0,
            heartbeat_ms: 1000,
            first_seen: 0,
            last_seen,
        }
    }

    #[test]
    fn targets_are_the_live_push_urls_once_each_and_not_the_static_ones() {
        let rows = [
            row("a", Some("http://10.0.0.1:8090/"), 10_000),
            // A restart: a new id at the same URL shares its task.
            row("a2", Some("http://10.0.0.1:8090"), 10_000),
            row("b", Some("http://10.0.0.2:8090"), 10_000),
            // Quiet for more than three beats.
            row("c", Some("http://10.0.0.3:8090"), 6_999),
            // Pull-only.
            row("d", None, 10_000),
        ];
        let fixed = ["http://10.0.0.2:8090/".to_owned()];
        assert_eq!(
            push_targets(&rows, &fixed, 10_000),
            vec!["http://10.0.0.1:8090".to_owned()]
        );
        assert!(row("c", None, 7_000).is_live(10_000));
        assert!(!row("c", None, 6_999).is_live(10_000));
    }
}
