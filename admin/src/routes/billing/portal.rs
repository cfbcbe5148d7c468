//! `POST /billing/portal {returnUrl?}`: a Stripe Customer Portal session,
//! where the customer manages cards, invoices and the subscription.
//!
//! An account that never checked out has no customer and nothing to manage:
//! `409 conflict` rather than creating an empty customer.

use axum::extract::State;
use axum::Json;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::auth::CurrentUser;
use crate::billing;
use crate::error::{AdminError, AdminResult};
use crate::extract::ApiJson;
use crate::AppState;

/// The request body (may be `{}`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    #[serde(default)]
    return_url: Option<String>,
}

/// The answer.
#[derive(Serialize)]
pub struct Output {
    /// Where to send the browser.
    url: String,
}

/// Opens the customer portal.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(input): ApiJson<Input>,
) -> AdminResult<Json<Output>> {
    let default = format!(
        "{}/ui/billing",
        state.config.public_url.trim_end_matches('/')
    );
    let return_url = billing::redirect_url(input.return_url, "returnUrl", default)?;
    let stripe = state.billing.client()?;
    let customer = billing::customer_of(state.db.pool(), &user.user_id)
        .await?
        .ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::Conflict,
                "this account has no billing customer yet; start a checkout first",
            )
        })?;
    let session = stripe
        .create_portal_session(&customer, &return_url)
        .await
        .map_err(billing::stripe_failed)?;
    let url = session
        .url
        .ok_or_else(|| AdminError::internal("stripe portal session without a url"))?;
    Ok(Json(Output { url }))
}
