//! `POST /billing/checkout {planKey, successUrl?, cancelUrl?}`: a Stripe
//! Checkout Session for a paid plan.
//!
//! parse (`planKey` is `pro` or `enterprise`; the URLs absolute http(s),
//! defaulting to the dashboard's billing page) → authorise (billing
//! configured, the plan has a `STRIPE_PRICE_*`) → decide (the account's
//! Stripe customer, created once: an idempotency key derived from the
//! account makes a concurrent or retried first checkout get the same
//! customer from Stripe, and the row's primary key keeps one per account)
//! → answer `200 {url, sessionId}`. The plan moves only when the
//! `checkout.session.completed` webhook arrives, never here.

use axum::extract::State;
use axum::Json;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::auth::CurrentUser;
use crate::billing::client::CheckoutParams;
use crate::billing::{self, Plan};
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiJson;
use crate::AppState;

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    plan_key: String,
    #[serde(default)]
    success_url: Option<String>,
    #[serde(default)]
    cancel_url: Option<String>,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// Where to send the browser.
    url: String,
    session_id: String,
}

/// Starts a checkout.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Output>> {
    // parse
    let plan = match Plan::parse(input.plan_key.trim()) {
        Some(p @ (Plan::Pro | Plan::Enterprise)) => p,
        _ => {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "planKey must be pro or enterprise",
            )
            .field("planKey")
            .into())
        }
    };
    let page = format!(
        "{}/ui/billing",
        state.config.public_url.trim_end_matches('/')
    );
    let success_url = billing::redirect_url(
        input.success_url,
        "successUrl",
        format!("{page}?checkout=success"),
    )?;
    let cancel_url = billing::redirect_url(
        input.cancel_url,
        "cancelUrl",
        format!("{page}?checkout=cancel"),
    )?;
    // authorise
    let stripe = state.billing.client()?;
    let price_id = plan.price_id(&state.config).ok_or_else(|| {
        ApiError::with_message(
            ErrorCode::BillingNotConfigured,
            format!("no Stripe price is configured for the {} plan", plan.key()),
        )
    })?;
    // decide
    let customer = ensure_customer(&state, &user).await?;
    let session = stripe
        .create_checkout_session(&CheckoutParams {
            customer: &customer,
            price_id,
            success_url: &success_url,
            cancel_url: &cancel_url,
            user_id: &user.user_id,
            plan_key: plan.key(),
        })
        .await
        .map_err(billing::stripe_failed)?;
    let url = session
        .url
        .ok_or_else(|| AdminError::internal("stripe checkout session without a url"))?;
    tracing::info!(user = %user.user_id, plan = plan.key(), session = %session.id, "checkout session created");
    // answer
    Ok(Json(Output {
        url,
        session_id: session.id,
    }))
}

/// The account's Stripe customer, created at the first call.
async fn ensure_customer(state: &AppState, user: &CurrentUser) -> AdminResult<String> {
    if let Some(id) = billing::customer_of(state.db.pool(), &user.user_id).await? {
        return Ok(id);
    }
    let stripe = state.billing.client()?;
    let key = format!("qyzar-customer-{}", user.user_id);
    let created = stripe
        .create_customer(&user.email, &user.user_id, &key)
        .await
        .map_err(billing::stripe_failed)?;
    sqlx::query("INSERT INTO billing_customers (user_id, stripe_customer_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
        .bind(&user.user_id)
        .bind(&created.id)
        .bind(qyzar_shared::time::now_ms())
        .execute(state.db.pool())
        .await?;
    // A concurrent first checkout may have won the insert: its customer is
    // the account's.
    billing::customer_of(state.db.pool(), &user.user_id)
        .await?
        .ok_or_else(|| AdminError::internal("billing customer vanished after insert"))
}
