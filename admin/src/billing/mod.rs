//! Billing with Stripe: the client, the plan catalog, webhook signatures and
//! what a verified event does to an account.
//!
//! Ownership: Stripe ids are not secrets, so an id a caller sends proves
//! nothing. The account's customer lives in `billing_customers` (created
//! once, at the first checkout) and its subscriptions in
//! `billing_subscriptions`, filled only from verified webhooks; a route that
//! acts on a subscription first finds it there for the caller, and answers
//! `404 not_found` otherwise (the same answer whether the id exists for
//! someone else or not at all).
//!
//! The account's plan (`users.plan`) is derived, never set directly: the
//! highest plan among its subscriptions whose status grants one (see
//! [`plans::status_grants_plan`]), `free` when none does. A change of plan
//! changes the project quota at once (it is read at every create) and is
//! followed by a snapshot push, like every configuration change.

pub mod client;
pub mod events;
pub mod plans;
pub mod signature;

use std::sync::Arc;

use qyzar_shared::{ApiError, ErrorCode};
use sqlx::Row as _;

use crate::config::AdminConfig;
use crate::error::{AdminError, AdminResult};
pub use client::StripeClient;
pub use plans::Plan;

/// Billing's share of the app state. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Billing {
    /// `None` when `STRIPE_SECRET_KEY` is unset: billing is off.
    client: Option<Arc<StripeClient>>,
}

impl Billing {
    /// Builds the client when a secret key is configured.
    pub fn from_config(config: &AdminConfig) -> Result<Self, String> {
        let client = match config.stripe_secret_key.as_deref() {
            Some(key) => Some(Arc::new(StripeClient::new(
                key,
                config.stripe_api_base.as_deref(),
            )?)),
            None => None,
        };
        Ok(Self { client })
    }

    /// Whether `STRIPE_SECRET_KEY` is set.
    pub fn configured(&self) -> bool {
        self.client.is_some()
    }

    /// The client, or `409 billing_not_configured`.
    pub fn client(&self) -> AdminResult<&StripeClient> {
        self.client
            .as_deref()
            .ok_or_else(|| ErrorCode::BillingNotConfigured.into())
    }
}

/// A Stripe failure as the caller sees it: logged with its cause, answered
/// as an opaque `500 internal` (Stripe's own message may name ids or
/// settings the caller should not see).
pub fn stripe_failed(e: client::StripeError) -> AdminError {
    AdminError::internal(e)
}

/// The account's Stripe customer id, if it has one.
pub async fn customer_of<'c, E>(conn: E, user_id: &str) -> AdminResult<Option<String>>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let row = sqlx::query("SELECT stripe_customer_id FROM billing_customers WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(conn)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

/// The subscription id a caller sent, checked: a well-formed `sub_…` id
/// that this account owns (is in `billing_subscriptions` for it). Malformed
/// is `422` naming `subscriptionId`; unknown or someone else's is `404`.
pub async fn owned_subscription(
    db: &crate::db::Db,
    user_id: &str,
    raw: &str,
) -> AdminResult<String> {
    let id = raw.trim();
    let well_formed = id.len() <= 255
        && id.starts_with("sub_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !well_formed || id.len() == 4 {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "subscriptionId is not a Stripe subscription id",
        )
        .field("subscriptionId")
        .into());
    }
    let found = sqlx::query("SELECT id FROM billing_subscriptions WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(user_id)
        .fetch_optional(db.pool())
        .await?;
    match found {
        Some(_) => Ok(id.to_owned()),
        None => Err(ApiError::with_message(
            ErrorCode::NotFound,
            "no subscription with that id on this account",
        )
        .into()),
    }
}

/// Validates an optional redirect URL from the caller (`successUrl`,
/// `cancelUrl`, `returnUrl`): absolute http(s), at most 2048 bytes, no
/// whitespace or control characters. Stripe would refuse worse ones with an
/// error the caller could not read; this names the field instead.
pub fn redirect_url(
    raw: Option<String>,
    field: &'static str,
    default: String,
) -> AdminResult<String> {
    let Some(url) = raw else {
        return Ok(default);
    };
    let ok = url.len() <= 2048
        && (url.starts_with("https://") || url.starts_with("http://"))
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
        && url
            .parse::<http::Uri>()
            .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if ok {
        Ok(url)
    } else {
        Err(ApiError::with_message(
            ErrorCode::InvalidField,
            format!("{field} must be an absolute http(s) URL"),
        )
        .field(field)
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_urls() {
        let d = || "https://d.example/".to_owned();
        assert_eq!(
            redirect_url(None, "successUrl", d()).unwrap(),
            "https://d.example/"
        );
        assert!(redirect_url(Some("https://a.example/x?y=1".into()), "successUrl", d()).is_ok());
        for bad in [
            "javascript:alert(1)",
            "/relative",
            "https://",
            "https://a .example",
            "ftp://a.example",
        ] {
            assert!(
                redirect_url(Some(bad.into()), "successUrl", d()).is_err(),
                "{bad}"
            );
        }
    }
}
