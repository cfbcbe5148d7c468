//! `PATCH /billing/subscription {subscriptionId, newPriceId,
//! prorationBehavior?}`: moves a subscription to the other plan's price.
//!
//! parse (`newPriceId` must be `STRIPE_PRICE_PRO` or
//! `STRIPE_PRICE_ENTERPRISE`: a caller cannot buy an arbitrary price of the
//! Stripe account; `prorationBehavior` one of Stripe's three) → authorise
//! (the subscription is the caller's) → decide (Stripe swaps the item's
//! price) → answer `200 {subscription}`. The plan itself moves with the
//! `customer.subscription.updated` webhook that follows.

use axum::extract::State;
use axum::Json;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::SubscriptionView;
use crate::auth::CurrentUser;
use crate::billing::{self, Plan};
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiJson;
use crate::AppState;

/// Stripe's `proration_behavior` values.
const PRORATION: [&str; 3] = ["create_prorations", "none", "always_invoice"];

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    subscription_id: String,
    new_price_id: String,
    #[serde(default)]
    proration_behavior: Option<String>,
}

/// The answer.
#[derive(Serialize)]
pub struct Output {
    subscription: SubscriptionView,
}

/// Changes a subscription's price.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Output>> {
    let stripe = state.billing.client()?;
    // parse
    let price = input.new_price_id.trim();
    if Plan::for_price(&state.config, price).is_none() {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "newPriceId must be the pro or the enterprise price",
        )
        .field("newPriceId")
        .into());
    }
    if let Some(p) = input.proration_behavior.as_deref() {
        if !PRORATION.contains(&p) {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "prorationBehavior must be create_prorations, none or always_invoice",
            )
            .field("prorationBehavior")
            .into());
        }
    }
    // authorise
    let id = billing::owned_subscription(&state.db, &user.user_id, &input.subscription_id).await?;
    // decide
    let current = stripe
        .get_subscription(&id)
        .await
        .map_err(billing::stripe_failed)?;
    let item = current
        .items
        .data
        .first()
        .ok_or_else(|| AdminError::internal("stripe subscription without items"))?;
    let updated = stripe
        .change_price(&id, &item.id, price, input.proration_behavior.as_deref())
        .await
        .map_err(billing::stripe_failed)?;
    tracing::info!(user = %user.user_id, subscription = %id, "subscription price changed");
    Ok(Json(Output {
        subscription: SubscriptionView::new(&state.config, &updated),
    }))
}
