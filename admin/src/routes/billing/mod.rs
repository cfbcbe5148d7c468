//! `/billing/*`: plans, checkout, the customer portal, status and the
//! account's subscriptions, over Stripe (see `crate::billing`). One file
//! per route.

pub mod checkout;
pub mod plans;
pub mod portal;
pub mod status;
pub mod subscription_cancel;
pub mod subscription_resume;
pub mod subscription_update;
pub mod subscriptions;

use serde::Serialize;

use crate::billing::client::Subscription;
use crate::billing::Plan;
use crate::config::AdminConfig;

/// A subscription as the billing routes answer it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionView {
    /// `sub_…`.
    id: String,
    /// Stripe's status (`active`, `past_due`, `canceled`, …).
    status: String,
    /// The price billed.
    price_id: Option<String>,
    /// The plan that price stands for (`null` for a price not configured).
    plan_key: Option<&'static str>,
    /// Whether it ends at the period's end.
    cancel_at_period_end: bool,
    /// End of the current period, RFC 3339.
    current_period_end: Option<String>,
}

impl SubscriptionView {
    /// The view of a Stripe subscription.
    pub fn new(config: &AdminConfig, s: &Subscription) -> Self {
        let price_id = s.price_id().map(str::to_owned);
        Self {
            id: s.id.clone(),
            status: s.status.clone(),
            plan_key: price_id
                .as_deref()
                .and_then(|p| Plan::for_price(config, p))
                .map(Plan::key),
            price_id,
            cancel_at_period_end: s.cancel_at_period_end,
            current_period_end: s
                .current_period_end()
                .map(|secs| qyzar_shared::time::rfc3339(secs.saturating_mul(1000))),
        }
    }
}
