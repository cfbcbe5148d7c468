//! `GET /billing/plans`: the plan catalog.
//!
//! Answers even when Stripe is not configured (the catalog is Qyzar's, not
//! Stripe's): then `configured` is false and no tier is `checkoutAvailable`,
//! which is what a dashboard needs to grey out the upgrade buttons.
//! `currentPlan` is the caller's plan, so one call draws the page.

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use sqlx::Row as _;

use crate::auth::CurrentUser;
use crate::billing::Plan;
use crate::error::AdminResult;
use crate::AppState;

/// One tier.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    key: &'static str,
    name: &'static str,
    monthly_price_cents: i64,
    /// Projects the plan may own.
    project_quota: i64,
    /// Verifications per calendar month included.
    monthly_verifications: i64,
    /// The configured Stripe price (`STRIPE_PRICE_*`); `null` for free and
    /// for a paid tier without one.
    stripe_price_id: Option<String>,
    /// Whether `POST /billing/checkout` can sell this tier now.
    checkout_available: bool,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    configured: bool,
    current_plan: String,
    plans: Vec<PlanView>,
}

/// Lists the plans.
pub async fn handle(State(state): State<AppState>, user: CurrentUser) -> AdminResult<Json<Output>> {
    let current_plan: String = sqlx::query("SELECT plan FROM users WHERE id = $1")
        .bind(&user.user_id)
        .fetch_one(state.db.pool())
        .await?
        .try_get(0)?;
    let configured = state.billing.configured();
    let plans = Plan::ALL
        .into_iter()
        .map(|p| {
            let price = p.price_id(&state.config).map(str::to_owned);
            PlanView {
                key: p.key(),
                name: p.name(),
                monthly_price_cents: p.monthly_price_cents(),
                project_quota: p.project_quota(),
                monthly_verifications: p.monthly_verifications(),
                checkout_available: configured && price.is_some(),
                stripe_price_id: price,
            }
        })
        .collect();
    Ok(Json(Output {
        configured,
        current_plan,
        plans,
    }))
}
