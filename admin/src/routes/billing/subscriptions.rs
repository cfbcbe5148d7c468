//! `GET /billing/subscriptions`: the caller's subscriptions, as Stripe has
//! them now (canceled ones too). An account without a customer has none,
//! and Stripe is not asked.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::SubscriptionView;
use crate::auth::CurrentUser;
use crate::billing;
use crate::error::AdminResult;
use crate::AppState;

/// The answer.
#[derive(Serialize)]
pub struct Output {
    subscriptions: Vec<SubscriptionView>,
}

/// Lists the caller's subscriptions.
pub async fn handle(State(state): State<AppState>, user: CurrentUser) -> AdminResult<Json<Output>> {
    let stripe = state.billing.client()?;
    let Some(customer) = billing::customer_of(state.db.pool(), &user.user_id).await? else {
        return Ok(Json(Output {
            subscriptions: Vec::new(),
        }));
    };
    let list = stripe
        .list_subscriptions(&customer)
        .await
        .map_err(billing::stripe_failed)?;
    let subscriptions = list
        .data
        .iter()
        .map(|s| SubscriptionView::new(&state.config, s))
        .collect();
    Ok(Json(Output { subscriptions }))
}
