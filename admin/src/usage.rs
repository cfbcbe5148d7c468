//! Verification usage: engines' traffic batches in, monthly usage and the
//! quota block out.
//!
//! [`ingest`] writes one batch in one transaction: the batch id first (a
//! batch already seen changes nothing), then each row into the minute, hour
//! and day analytics rollups (migration 0006), and the verification rows
//! also into the hourly `traffic_rollups` and their count into the owner's
//! usage for the row's month. It
//! reports whether an owner crossed the plan's `monthlyVerifications` for
//! the current month with this batch; the caller then rebuilds and pushes
//! the snapshot, whose builder marks every project of an account over its
//! quota with [`blocked_until`] (see `push::build`). Engines refuse new
//! verifications for those projects until the next UTC month; an upgrade
//! lifts the block with the snapshot the plan change triggers.
//!
//! Usage is counted per account, not per project, and is not given back
//! when a project is deleted.

use std::collections::{HashMap, HashSet};

use qyzar_shared::usage::{month_key, next_month_start_ms, TrafficBatch, HOUR_MS};

use crate::analytics::Grain;
use sqlx::Row as _;

use crate::billing::Plan;
use crate::db::Db;
use crate::error::{AdminError, AdminResult};

/// How long counted batch ids are remembered: far longer than an engine
/// keeps retrying one.
pub const BATCH_ID_KEEP_MS: i64 = 7 * 24 * HOUR_MS;

/// What [`ingest`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The batch id was counted before: nothing was written.
    pub duplicate: bool,
    /// Rows added.
    pub rows: usize,
    /// Rows of projects admin does not know (deleted meanwhile): skipped.
    pub ignored_rows: usize,
    /// An account went over its monthly quota with this batch: the
    /// snapshot must be rebuilt so engines start refusing.
    pub crossed_quota: bool,
}

/// Writes a validated batch once; see the module docs.
pub async fn ingest(db: &Db, batch: &TrafficBatch, now: i64) -> AdminResult<Ingested> {
    let mut tx = db.pool().begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO traffic_batches (batch_id, received_at) VALUES ($1, $2) \
         ON CONFLICT (batch_id) DO NOTHING",
    )
    .bind(&batch.batch_id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.commit().await?;
        return Ok(Ingested {
            duplicate: true,
            rows: 0,
            ignored_rows: 0,
            crossed_quota: false,
        });
    }
    // Owners of the projects named, read once.
    let mut owners: HashMap<&str, Option<(String, String)>> = HashMap::new();
    for r in &batch.rows {
        if owners.contains_key(r.project_id.as_str()) {
            continue;
        }
        let row = sqlx::query(
            "SELECT u.id, u.plan FROM projects p JOIN users u ON u.id = p.owner_id WHERE p.id = $1",
        )
        .bind(&r.project_id)
        .fetch_optional(&mut *tx)
        .await?;
        let owner = match row {
            Some(row) => Some((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)),
            None => None,
        };
        owners.insert(&r.project_id, owner);
    }
    let mut added: HashMap<(String, String), i64> = HashMap::new();
    let mut plans: HashMap<String, String> = HashMap::new();
    // Rows summed per table key first: a batch's minutes fall in a few
    // hours and one day, so each coarser table gets one upsert per key
    // rather than one per row.
    type RollupKey<'a> = (
        &'a str,
        i64,
        &'static str,
        &'static str,
        &'a str,
        &'a str,
        &'a str,
    );
    let mut rollups: [HashMap<RollupKey<'_>, i64>; 3] = Default::default();
    let mut verifications: HashMap<(&str, i64, &'static str, &str, &str), i64> = HashMap::new();
    let (mut rows, mut ignored_rows) = (0, 0);
    for r in &batch.rows {
        let Some(Some((user_id, plan))) = owners.get(r.project_id.as_str()) else {
            ignored_rows += 1;
            continue;
        };
        let count = i64::try_from(r.count).map_err(AdminError::internal)?;
        for (grain, table) in Grain::ALL.iter().zip(rollups.iter_mut()) {
            *table
                .entry((
                    r.project_id.as_str(),
                    grain.floor(r.minute_start_ms),
                    r.route.as_str(),
                    r.outcome.as_str(),
                    r.region.as_str(),
                    r.platform.as_str(),
                    r.browser.as_str(),
                ))
                .or_default() += count;
        }
        if r.is_verification() {
            *verifications
                .entry((
                    r.project_id.as_str(),
                    r.minute_start_ms - r.minute_start_ms.rem_euclid(HOUR_MS),
                    r.route.as_str(),
                    r.region.as_str(),
                    r.platform.as_str(),
                ))
                .or_default() += count;
            *added
                .entry((user_id.clone(), month_key(r.minute_start_ms)))
                .or_default() += count;
            plans.insert(user_id.clone(), plan.clone());
        }
        rows += 1;
    }
    for (grain, table) in Grain::ALL.iter().zip(&rollups) {
        let sql = format!(
            "INSERT INTO {t} (project_id, bucket_start, route, outcome, region, platform, browser, requests) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (project_id, bucket_start, route, outcome, region, platform, browser) \
             DO UPDATE SET requests = {t}.requests + excluded.requests",
            t = grain.table()
        );
        for ((project, start, route, outcome, region, platform, browser), count) in table {
            sqlx::query(&sql)
                .bind(*project)
                .bind(*start)
                .bind(*route)
                .bind(*outcome)
                .bind(*region)
                .bind(*platform)
                .bind(*browser)
                .bind(*count)
                .execute(&mut *tx)
                .await?;
        }
    }
    for ((project, hour, kind, region, platform), count) in &verifications {
        sqlx::query(
            "INSERT INTO traffic_rollups (project_id, hour_start, kind, region, platform, requests) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (project_id, hour_start, kind, region, platform) \
             DO UPDATE SET requests = traffic_rollups.requests + excluded.requests",
        )
        .bind(*project)
        .bind(*hour)
        .bind(*kind)
        .bind(*region)
        .bind(*platform)
        .bind(*count)
        .execute(&mut *tx)
        .await?;
    }
    let current = month_key(now);
    let mut crossed_quota = false;
    for ((user_id, month), count) in &added {
        let total: i64 = sqlx::query(
            "INSERT INTO usage_monthly (user_id, month, verifications) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id, month) \
             DO UPDATE SET verifications = usage_monthly.verifications + excluded.verifications \
             RETURNING verifications",
        )
        .bind(user_id)
        .bind(month)
        .bind(count)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let quota = quota_of(plans.get(user_id).map(String::as_str));
        if *month == current && total - count < quota && total >= quota {
            tracing::info!(user = %user_id, total, quota, "monthly verification quota used up");
            crossed_quota = true;
        }
    }
    sqlx::query("DELETE FROM traffic_batches WHERE received_at < $1")
        .bind(now - BATCH_ID_KEEP_MS)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ingested {
        duplicate: false,
        rows,
        ignored_rows,
        crossed_quota,
    })
}

/// The verifications a plan key includes per month (unknown keys: free's).
pub fn quota_of(plan: Option<&str>) -> i64 {
    plan.and_then(Plan::parse)
        .unwrap_or(Plan::Free)
        .monthly_verifications()
}

/// One account's usage this month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthUsage {
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// Verifications counted so far.
    pub verifications: i64,
    /// What the plan includes.
    pub quota: i64,
    /// When the month ends and the count starts again (Unix ms).
    pub resets_at: i64,
}

impl MonthUsage {
    /// Whether new verifications are refused.
    pub fn blocked(&self) -> bool {
        self.verifications >= self.quota
    }
}

/// `user_id`'s usage in the month of `now`, against `plan`.
pub async fn month_usage(db: &Db, user_id: &str, plan: &str, now: i64) -> AdminResult<MonthUsage> {
    let month = month_key(now);
    let verifications: i64 =
        sqlx::query("SELECT verifications FROM usage_monthly WHERE user_id = $1 AND month = $2")
            .bind(user_id)
            .bind(&month)
            .fetch_optional(db.pool())
            .await?
            .map(|r| r.try_get(0))
            .transpose()?
            .unwrap_or(0);
    Ok(MonthUsage {
        month,
        verifications,
        quota: quota_of(Some(plan)),
        resets_at: next_month_start_ms(now),
    })
}

/// Accounts whose plan's verifications for the month of `now` are used up,
/// read inside the snapshot builder's transaction.
pub async fn blocked_accounts(
    conn: &mut sqlx::AnyConnection,
    now: i64,
) -> AdminResult<HashSet<String>> {
    let rows = sqlx::query(
        "SELECT u.id, u.plan, m.verifications FROM usage_monthly m \
         JOIN users u ON u.id = m.user_id WHERE m.month = $1",
    )
    .bind(month_key(now))
    .fetch_all(conn)
    .await?;
    let mut out = HashSet::new();
    for r in rows {
        let (id, plan, used): (String, String, i64) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if used >= quota_of(Some(&plan)) {
            out.insert(id);
        }
    }
    Ok(out)
}

/// Until when a blocked project's verifications are refused: the start of
/// the next UTC month, after which the engine lets them through by itself.
pub fn blocked_until(now: i64) -> i64 {
    next_month_start_ms(now)
}
