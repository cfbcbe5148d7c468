//! `POST /billing/subscription/cancel {subscriptionId, immediately?}`:
//! cancels at the period's end (the default: the customer keeps what they
//! paid for) or, with `immediately: true`, now. The plan moves with the
//! webhook that follows.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::SubscriptionView;
use crate::auth::CurrentUser;
use crate::billing;
use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::AppState;

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    subscription_id: String,
    #[serde(default)]
    immediately: bool,
}

/// The answer.
#[derive(Serialize)]
pub struct Output {
    subscription: SubscriptionView,
}

/// Cancels a subscription.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Output>> {
    let stripe = state.billing.client()?;
    let id = billing::owned_subscription(&state.db, &user.user_id, &input.subscription_id).await?;
    let sub = if input.immediately {
        stripe.cancel_now(&id).await
    } else {
        stripe.set_cancel_at_period_end(&id, true).await
    }
    .map_err(billing::stripe_failed)?;
    tracing::info!(user = %user.user_id, subscription = %id, immediately = input.immediately, "subscription canceled");
    Ok(Json(Output {
        subscription: SubscriptionView::new(&state.config, &sub),
    }))
}
