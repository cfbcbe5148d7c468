//! What a verified Stripe event does: logged exactly once, then applied to
//! the account it names, all in one transaction (so a failure leaves
//! neither the log row nor a half-applied change, and Stripe's retry finds
//! a clean slate).
//!
//! Applied types: `checkout.session.completed` (links the customer and the
//! new subscription to the account named in `client_reference_id`),
//! `customer.subscription.created|updated|deleted` (the subscription's
//! status, price and cancel flag) and `invoice.payment_failed` (the
//! subscription becomes `past_due`). Every other type is logged as
//! `ignored` and acknowledged. Stripe does not order deliveries, so a
//! subscription row remembers the `created` time of the event that wrote it
//! and an older event does not overwrite a newer one.

use std::collections::BTreeMap;

use serde::Deserialize;
use sqlx::{Any, Row as _, Transaction};

use super::client::Subscription;
use super::plans::{status_grants_plan, Plan};
use crate::config::AdminConfig;
use crate::error::AdminResult;

/// The envelope of every Stripe event.
#[derive(Debug, Deserialize)]
pub struct Event {
    /// `evt_…`: the idempotency key of the log.
    pub id: String,
    /// E.g. `customer.subscription.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// When Stripe created the event (Unix seconds): orders deliveries.
    pub created: i64,
    /// `{"object": …}`.
    pub data: EventData,
}

/// The event's object, parsed later according to the type.
#[derive(Debug, Deserialize)]
pub struct EventData {
    /// The object the event is about.
    pub object: serde_json::Value,
}

/// What storing an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// This event id was logged before: nothing was done again.
    Duplicate,
    /// Logged (and applied when its type is one admin acts on).
    New {
        /// `applied`, `ignored` or `unmatched`.
        outcome: &'static str,
        /// The account whose plan changed, if it did: the caller pushes.
        plan_changed: Option<(String, Plan)>,
    },
}

/// A completed Checkout Session, the fields read.
#[derive(Debug, Deserialize)]
struct CheckoutSession {
    #[serde(default)]
    customer: Option<String>,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    client_reference_id: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// A subscription as in events: the client's type, plus the period end
/// that API versions before 2025-03-31 put on the subscription itself.
#[derive(Debug, Deserialize)]
struct EventSubscription {
    #[serde(flatten)]
    sub: Subscription,
    #[serde(default)]
    current_period_end: Option<i64>,
}

/// An invoice, the fields read: the subscription id sits at the top in
/// older API versions and under `parent.subscription_details` in newer ones.
#[derive(Debug, Deserialize)]
struct Invoice {
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    parent: Option<serde_json::Value>,
}

/// Logs `event` (its raw text `payload`) once and applies it.
pub async fn record(
    tx: &mut Transaction<'static, Any>,
    config: &AdminConfig,
    event: &Event,
    payload: &str,
    now_ms: i64,
) -> AdminResult<Recorded> {
    let inserted = sqlx::query(
        "INSERT INTO billing_event_logs (event_id, event_type, user_id, payload, outcome, received_at) \
         VALUES ($1, $2, NULL, $3, 'pending', $4) ON CONFLICT DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(payload)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok(Recorded::Duplicate);
    }
    let object = &event.data.object;
    let user = match event.kind.as_str() {
        "checkout.session.completed" => {
            match serde_json::from_value::<CheckoutSession>(object.clone()) {
                Ok(s) => checkout_completed(tx, config, &s, event.created, now_ms).await?,
                Err(e) => {
                    return Err(crate::error::AdminError::internal(format!(
                        "checkout session in {}: {e}",
                        event.id
                    )))
                }
            }
        }
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            match serde_json::from_value::<EventSubscription>(object.clone()) {
                Ok(s) => {
                    let deleted = event.kind.ends_with(".deleted");
                    subscription_changed(tx, &s, deleted, event.created, now_ms).await?
                }
                Err(e) => {
                    return Err(crate::error::AdminError::internal(format!(
                        "subscription in {}: {e}",
                        event.id
                    )))
                }
            }
        }
        "invoice.payment_failed" => match serde_json::from_value::<Invoice>(object.clone()) {
            Ok(i) => payment_failed(tx, &i, event.created, now_ms).await?,
            Err(e) => {
                return Err(crate::error::AdminError::internal(format!(
                    "invoice in {}: {e}",
                    event.id
                )))
            }
        },
        _ => {
            set_outcome(tx, &event.id, "ignored", None).await?;
            return Ok(Recorded::New {
                outcome: "ignored",
                plan_changed: None,
            });
        }
    };
    let Some(user_id) = user else {
        set_outcome(tx, &event.id, "unmatched", None).await?;
        return Ok(Recorded::New {
            outcome: "unmatched",
            plan_changed: None,
        });
    };
    set_outcome(tx, &event.id, "applied", Some(&user_id)).await?;
    let plan_changed = recompute_plan(tx, config, &user_id)
        .await?
        .map(|p| (user_id, p));
    Ok(Recorded::New {
        outcome: "applied",
        plan_changed,
    })
}

async fn set_outcome(
    tx: &mut Transaction<'static, Any>,
    event_id: &str,
    outcome: &str,
    user_id: Option<&str>,
) -> AdminResult<()> {
    sqlx::query("UPDATE billing_event_logs SET outcome = $1, user_id = $2 WHERE event_id = $3")
        .bind(outcome)
        .bind(user_id)
        .bind(event_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// `user_id` if it names an existing account.
async fn existing_user(
    tx: &mut Transaction<'static, Any>,
    user_id: Option<&str>,
) -> AdminResult<Option<String>> {
    let Some(id) = user_id else {
        return Ok(None);
    };
    let row = sqlx::query("SELECT id FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

async fn user_by_customer(
    tx: &mut Transaction<'static, Any>,
    customer: Option<&str>,
) -> AdminResult<Option<String>> {
    let Some(c) = customer else {
        return Ok(None);
    };
    let row = sqlx::query("SELECT user_id FROM billing_customers WHERE stripe_customer_id = $1")
        .bind(c)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match row {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

async fn checkout_completed(
    tx: &mut Transaction<'static, Any>,
    config: &AdminConfig,
    s: &CheckoutSession,
    created: i64,
    now_ms: i64,
) -> AdminResult<Option<String>> {
    let named = s
        .client_reference_id
        .as_deref()
        .or(s.metadata.get("qyzar_user_id").map(String::as_str));
    let user = match existing_user(tx, named).await? {
        Some(u) => u,
        None => match user_by_customer(tx, s.customer.as_deref()).await? {
            Some(u) => u,
            None => return Ok(None),
        },
    };
    if let Some(customer) = &s.customer {
        // The first customer of an account stays its customer.
        sqlx::query("INSERT INTO billing_customers (user_id, stripe_customer_id, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(&user)
            .bind(customer)
            .bind(now_ms)
            .execute(&mut **tx)
            .await?;
    }
    if let Some(sub) = &s.subscription {
        // The subscription events carry the details; until one arrives, the
        // plan bought at checkout (its configured price) is what it grants.
        let price = s
            .metadata
            .get("qyzar_plan")
            .and_then(|k| Plan::parse(k))
            .and_then(|p| p.price_id(config));
        sqlx::query(
            "INSERT INTO billing_subscriptions (id, user_id, stripe_customer_id, price_id, status, cancel_at_period_end, current_period_end, event_created, updated_at) \
             VALUES ($1, $2, $3, $4, 'active', 0, NULL, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(sub)
        .bind(&user)
        .bind(s.customer.as_deref())
        .bind(price)
        .bind(created)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    }
    Ok(Some(user))
}

async fn subscription_changed(
    tx: &mut Transaction<'static, Any>,
    s: &EventSubscription,
    deleted: bool,
    created: i64,
    now_ms: i64,
) -> AdminResult<Option<String>> {
    let sub = &s.sub;
    // A row already here keeps its owner: a subscription never moves
    // between accounts.
    let known = sqlx::query("SELECT user_id FROM billing_subscriptions WHERE id = $1")
        .bind(&sub.id)
        .fetch_optional(&mut **tx)
        .await?;
    let user = match known {
        Some(r) => r.try_get::<String, _>(0)?,
        None => {
            match existing_user(tx, sub.metadata.get("qyzar_user_id").map(String::as_str)).await? {
                Some(u) => u,
                None => match user_by_customer(tx, sub.customer.as_deref()).await? {
                    Some(u) => u,
                    None => return Ok(None),
                },
            }
        }
    };
    let status = if deleted {
        "canceled"
    } else {
        sub.status.as_str()
    };
    let period_end = sub.current_period_end().or(s.current_period_end);
    sqlx::query(
        "INSERT INTO billing_subscriptions (id, user_id, stripe_customer_id, price_id, status, cancel_at_period_end, current_period_end, event_created, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (id) DO UPDATE SET stripe_customer_id = excluded.stripe_customer_id, price_id = excluded.price_id, \
         status = excluded.status, cancel_at_period_end = excluded.cancel_at_period_end, \
         current_period_end = excluded.current_period_end, event_created = excluded.event_created, updated_at = excluded.updated_at \
         WHERE billing_subscriptions.event_created <= excluded.event_created",
    )
    .bind(&sub.id)
    .bind(&user)
    .bind(sub.customer.as_deref())
    .bind(sub.price_id())
    .bind(status)
    .bind(i64::from(sub.cancel_at_period_end))
    .bind(period_end)
    .bind(created)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    Ok(Some(user))
}

async fn payment_failed(
    tx: &mut Transaction<'static, Any>,
    i: &Invoice,
    created: i64,
    now_ms: i64,
) -> AdminResult<Option<String>> {
    let sub = i.subscription.clone().or_else(|| {
        i.parent
            .as_ref()
            .and_then(|p| p.pointer("/subscription_details/subscription"))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    });
    let Some(sub) = sub else {
        return Ok(None);
    };
    let row = sqlx::query(
        "UPDATE billing_subscriptions SET status = 'past_due', event_created = $1, updated_at = $2 \
         WHERE id = $3 AND event_created <= $4 RETURNING user_id",
    )
    .bind(created)
    .bind(now_ms)
    .bind(&sub)
    .bind(created)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(r) = row {
        return Ok(Some(r.try_get(0)?));
    }
    // Known but a newer event already moved it: still this account's event.
    let owner = sqlx::query("SELECT user_id FROM billing_subscriptions WHERE id = $1")
        .bind(&sub)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(match owner {
        Some(r) => Some(r.try_get(0)?),
        None => None,
    })
}

/// Derives the account's plan from its subscriptions and stores it when it
/// changed; answers the new plan then.
pub async fn recompute_plan(
    tx: &mut Transaction<'static, Any>,
    config: &AdminConfig,
    user_id: &str,
) -> AdminResult<Option<Plan>> {
    let rows = sqlx::query("SELECT price_id, status FROM billing_subscriptions WHERE user_id = $1")
        .bind(user_id)
        .fetch_all(&mut **tx)
        .await?;
    let mut plan = Plan::Free;
    for r in rows {
        let price: Option<String> = r.try_get(0)?;
        let status: String = r.try_get(1)?;
        if !status_grants_plan(&status) {
            continue;
        }
        if let Some(p) = price.as_deref().and_then(|p| Plan::for_price(config, p)) {
            plan = plan.max(p);
        }
    }
    let changed = sqlx::query("UPDATE users SET plan = $1 WHERE id = $2 AND plan <> $3")
        .bind(plan.key())
        .bind(user_id)
        .bind(plan.key())
        .execute(&mut **tx)
        .await?
        .rows_affected();
    Ok((changed > 0).then_some(plan))
}
