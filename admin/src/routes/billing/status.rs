//! `GET /billing/status`: whether billing is configured on this deployment
//! and whether the caller already has a Stripe customer. The one billing
//! route that answers `200` without `STRIPE_SECRET_KEY` (`configured:
//! false`), so the dashboard can tell "off" from "broken".

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use sqlx::Row as _;

use crate::auth::CurrentUser;
use crate::billing;
use crate::error::AdminResult;
use crate::AppState;

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    configured: bool,
    has_customer: bool,
    /// The caller's plan key.
    plan: String,
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
    Ok(Json(Output {
        configured,
        has_customer,
        plan,
    }))
}
