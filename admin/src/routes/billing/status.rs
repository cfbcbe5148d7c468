//! `GET /billing/status`: whether billing is configured on this deployment
//! and whether the caller already has a Stripe customer. The one billing
//! route that answers `200` without `STRIPE_SECRET_KEY` (`configured:
//! false`), so the dashboard can tell "off" from "broken". Also answers the
//! caller's verification usage this month, which does not need Stripe.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use sqlx::Row as _;

use crate::auth::CurrentUser;
use crate::billing;
use crate::error::AdminResult;
use crate::usage;
use crate::AppState;
use qyzar_shared::time;

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    configured: bool,
    has_customer: bool,
    /// The caller's plan key.
    plan: String,
    /// Verifications this UTC month against the plan's allowance.
    usage: Usage,
}

/// This month's verifications (`/connect` and `/connect/reverify` answered
/// by the engines, reported every few seconds; see `qyzar_shared::usage`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// `YYYY-MM` (UTC).
    month: String,
    verifications: i64,
    monthly_verifications: i64,
    /// When the count starts again (RFC 3339).
    resets_at: String,
    /// New verifications are refused until `resetsAt` or an upgrade.
    blocked: bool,
}

/// Reports billing status.
pub async fn handle(State(state): State<AppState>, user: CurrentUser) -> AdminResult<Json<Output>> {
    let plan: String = sqlx::query("SELECT plan FROM users WHERE id = $1")
        .bind(&user.user_id)
        .fetch_one(state.db.pool())
        .await?
        .try_get(0)?;
    let configured = state.billing.configured();
    let has_customer = configured
        && billing::customer_of(state.db.pool(), &user.user_id)
            .await?
            .is_some();
    let used = usage::month_usage(&state.db, &user.user_id, &plan, time::now_ms()).await?;
    Ok(Json(Output {
        configured,
        has_customer,
        plan,
        usage: Usage {
            blocked: used.blocked(),
            month: used.month,
            verifications: used.verifications,
            monthly_verifications: used.quota,
            resets_at: time::rfc3339(used.resets_at),
        },
    }))
}
