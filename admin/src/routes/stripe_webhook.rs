//! `POST /stripe/webhook`: Stripe's events, signed.
//!
//! parse nothing before authorising: the `Stripe-Signature` header is
//! checked over the raw body (HMAC-SHA256 of `t.body` under
//! `STRIPE_WEBHOOK_SECRET`, any `v1`, 300 s tolerance, constant time; see
//! `crate::billing::signature`) → only then is the body parsed (`400
//! malformed_json` when it is not an event) → decide (log it once in
//! `billing_event_logs` and apply it, one transaction; see
//! `crate::billing::events`) → answer `200 {received: true, duplicate}`.
//! A replayed event id is acknowledged and not applied again. When the
//! account's plan moved, the snapshot is rebuilt and pushed to the engines.
//!
//! Failures: no webhook secret configured `409 billing_not_configured`; no
//! header `401 missing_credentials`; a bad, stale or future signature `401
//! invalid_credentials`. A database failure answers 5xx, so Stripe retries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Serialize;

use crate::billing::events::{self, Event, Recorded};
use crate::billing::signature;
use crate::error::AdminResult;
use crate::{push, AppState};

/// Largest webhook body accepted: Stripe events are a few KiB, a checkout
/// session with many line items some tens; this leaves room.
pub const MAX_WEBHOOK_BODY: usize = 512 * 1024;

/// The answer.
#[derive(Serialize)]
pub struct Output {
    received: bool,
    /// True when this event id was already logged.
    duplicate: bool,
}

/// Receives one event.
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult<Json<Output>> {
    // authorise, on the raw bytes
    let secret = state
        .config
        .stripe_webhook_secret
        .as_deref()
        .ok_or(ErrorCode::BillingNotConfigured)?;
    let header = headers
        .get("stripe-signature")
        .ok_or(ErrorCode::MissingCredentials)?;
    let header = header.to_str().map_err(|_| ErrorCode::InvalidCredentials)?;
    let now_secs = qyzar_shared::time::now_ms().div_euclid(1000);
    if let Err(e) = signature::verify(header, &body, secret, now_secs) {
        tracing::warn!(reason = %e, "stripe webhook refused");
        return Err(ApiError::with_message(
            ErrorCode::InvalidCredentials,
            "the stripe-signature does not verify",
        )
        .into());
    }
    // parse
    let malformed =
        || ApiError::with_message(ErrorCode::MalformedJson, "the body is not a Stripe event");
    let text = std::str::from_utf8(&body).map_err(|_| malformed())?;
    let event: Event = serde_json::from_str(text).map_err(|_| malformed())?;
    if event.id.is_empty() || event.id.len() > 255 {
        return Err(malformed().into());
    }
    // decide
    let mut tx = state.db.pool().begin().await?;
    let recorded = events::record(
        &mut tx,
        &state.config,
        &event,
        text,
        qyzar_shared::time::now_ms(),
    )
    .await?;
    tx.commit().await?;
    let duplicate = match recorded {
        Recorded::Duplicate => {
            tracing::info!(event = %event.id, kind = %event.kind, "stripe event replayed; already logged");
            true
        }
        Recorded::New {
            outcome,
            plan_changed,
        } => {
            tracing::info!(event = %event.id, kind = %event.kind, outcome, "stripe event logged");
            if let Some((user, plan)) = plan_changed {
                tracing::info!(user = %user, plan = plan.key(), "plan changed");
                push::after_change(&state).await;
            }
            false
        }
    };
    Ok(Json(Output {
        received: true,
        duplicate,
    }))
}
