//! Housekeeping admin runs on a timer, off every request path: what would
//! otherwise grow without end.
//!
//! - `billing_event_logs` older than [`AdminConfig::billing_log_retention_days`]
//!   (the raw Stripe payloads: needed for audits and as the webhook's
//!   idempotency guard while Stripe may still resend, not forever);
//! - traffic batch ids older than a week (also pruned at each ingest; this
//!   covers an admin no engine reports to);
//! - dashboard analytics past their table's retention
//!   ([`crate::analytics::Grain::retention_ms`]: about 7 days of minutes,
//!   90 days of hours, 3 years of days), so charts stay fast and the
//!   database small while a long range still reads the coarser table.
//!
//! Each run is a few indexed `DELETE`s; failures are logged and retried at
//! the next run.
//!
//! [`AdminConfig::billing_log_retention_days`]: crate::config::AdminConfig::billing_log_retention_days

use std::time::Duration;

use crate::db::Db;
use crate::error::AdminResult;

/// How often housekeeping runs.
pub const EVERY: Duration = Duration::from_secs(3600);

const DAY_MS: i64 = 86_400_000;

/// What one run removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Billing events older than the retention.
    pub billing_events: u64,
    /// Traffic batch ids older than [`crate::usage::BATCH_ID_KEEP_MS`].
    pub traffic_batches: u64,
    /// Analytics rollup rows past their table's retention, all tables.
    pub analytics_rows: u64,
}

/// One housekeeping run at `now`.
pub async fn run_once(db: &Db, now: i64, billing_retention_days: u32) -> AdminResult<Pruned> {
    let billing_events = sqlx::query("DELETE FROM billing_event_logs WHERE received_at < $1")
        .bind(now - i64::from(billing_retention_days) * DAY_MS)
        .execute(db.pool())
        .await?
        .rows_affected();
    let traffic_batches = sqlx::query("DELETE FROM traffic_batches WHERE received_at < $1")
        .bind(now - crate::usage::BATCH_ID_KEEP_MS)
        .execute(db.pool())
        .await?
        .rows_affected();
    let mut analytics_rows = 0;
    for grain in crate::analytics::Grain::ALL {
        analytics_rows += sqlx::query(&format!(
            "DELETE FROM {} WHERE bucket_start < $1",
            grain.table()
        ))
        .bind(now.saturating_sub(grain.retention_ms()))
        .execute(db.pool())
        .await?
        .rows_affected();
    }
    Ok(Pruned {
        billing_events,
        traffic_batches,
        analytics_rows,
    })
}

/// Runs [`run_once`] a minute after start (not at once: a restarting admin
/// has better things to do in its first seconds) and then every [`EVERY`],
/// for as long as the task lives (the server aborts it when it stops).
pub async fn run_forever(db: Db, billing_retention_days: u32) {
    let first = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut ticks = tokio::time::interval_at(first, EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match run_once(&db, qyzar_shared::time::now_ms(), billing_retention_days).await {
            Ok(p) if p.billing_events + p.traffic_batches + p.analytics_rows > 0 => {
                tracing::info!(
                    billing_events = p.billing_events,
                    traffic_batches = p.traffic_batches,
                    analytics_rows = p.analytics_rows,
                    "housekeeping pruned old rows"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; retried at the next run"),
        }
    }
}
