//! `POST /billing/subscription/resume {subscriptionId}`: undoes a cancel at
//! the period's end (clears `cancel_at_period_end`). A subscription already
//! canceled cannot be resumed; Stripe refuses and the caller gets `409`.

use axum::extract::State;
use axum::Json;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::SubscriptionView;
use crate::auth::CurrentUser;
use crate::billing::{self, client::StripeError};
use crate::error::AdminResult;
use crate::extract::ApiJson;
use crate::AppState;

/// The request body.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    subscription_id: String,
}

/// The answer.
#[derive(Serialize)]
pub struct Output {
    subscription: SubscriptionView,
}

/// Resumes a subscription.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Output>> {
    let stripe = state.billing.client()?;
    let id = billing::owned_subscription(&state.db, &user.user_id, &input.subscription_id).await?;
    let sub = match stripe.set_cancel_at_period_end(&id, false).await {
        Ok(s) => s,
        Err(StripeError::Api {
            status: 400, kind, ..
        }) if kind == "invalid_request_error" => {
            return Err(ApiError::with_message(
                ErrorCode::Conflict,
                "this subscription can no longer be resumed",
            )
            .into())
        }
        Err(e) => return Err(billing::stripe_failed(e)),
    };
    tracing::info!(user = %user.user_id, subscription = %id, "subscription resumed");
    Ok(Json(Output {
        subscription: SubscriptionView::new(&state.config, &sub),
    }))
}
