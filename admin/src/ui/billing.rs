//! `/ui/billing`: the plan, this month's usage, the plans on offer
//! (`GET /billing/status`, `GET /billing/plans`), and the buttons that send
//! the browser to Stripe Checkout or the Customer Portal (`POST
//! /billing/checkout`, `POST /billing/portal` answer the URL). On a
//! deployment without Stripe the page says so, and a button that is pressed
//! anyway shows the API's `billing_not_configured` message.

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::layout::{Errors, Shell};
use super::{render, render_status, see_other, Answer, Ctx, Form};

/// One plan on offer.
struct Plan {
    key: String,
    name: String,
    price: String,
    project_quota: String,
    monthly_verifications: String,
    checkout_available: bool,
    current: bool,
}

#[derive(Template)]
#[template(path = "billing.html")]
struct BillingPage {
    shell: Shell,
    configured: bool,
    has_customer: bool,
    plan: String,
    month: String,
    verifications: String,
    monthly_verifications: String,
    resets_at: String,
    blocked: bool,
    plans: Vec<Plan>,
    errors: Errors,
    notice: Option<&'static str>,
}

/// `?checkout=success|cancel` when Stripe sends the browser back.
#[derive(Deserialize)]
pub(crate) struct BackQuery {
    checkout: Option<String>,
}

fn money(cents: i64) -> String {
    if cents == 0 {
        "free".to_owned()
    } else {
        format!("${}.{:02} / month", cents / 100, cents % 100)
    }
}

fn number(v: &serde_json::Value) -> String {
    v.as_i64().map_or_else(|| "—".to_owned(), |n| n.to_string())
}

async fn build(
    ctx: &Ctx,
    errors: Errors,
    notice: Option<&'static str>,
) -> Result<BillingPage, Response> {
    let shell = ctx.shell("billing", None).await?;
    let status: Answer = ctx.api.get("/billing/status").await;
    if !status.ok() {
        return Err(ctx.error_page(&status));
    }
    let plans = ctx.api.get("/billing/plans").await;
    if !plans.ok() {
        return Err(ctx.error_page(&plans));
    }
    let current = status.str("plan");
    let usage = &status.body["usage"];
    Ok(BillingPage {
        shell,
        configured: status.body["configured"].as_bool().unwrap_or(false),
        has_customer: status.body["hasCustomer"].as_bool().unwrap_or(false),
        month: usage["month"].as_str().unwrap_or_default().to_owned(),
        verifications: number(&usage["verifications"]),
        monthly_verifications: number(&usage["monthlyVerifications"]),
        resets_at: usage["resetsAt"].as_str().unwrap_or_default().to_owned(),
        blocked: usage["blocked"].as_bool().unwrap_or(false),
        plans: plans.body["plans"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| Plan {
                        key: p["key"].as_str().unwrap_or_default().to_owned(),
                        name: p["name"].as_str().unwrap_or_default().to_owned(),
                        price: money(p["monthlyPriceCents"].as_i64().unwrap_or(0)),
                        project_quota: number(&p["projectQuota"]),
                        monthly_verifications: number(&p["monthlyVerifications"]),
                        checkout_available: p["checkoutAvailable"].as_bool().unwrap_or(false),
                        current: p["key"].as_str() == Some(current.as_str()),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        plan: current,
        errors,
        notice,
    })
}

/// `GET /ui/billing[?checkout=success|cancel]`.
pub(crate) async fn page(ctx: Ctx, Query(q): Query<BackQuery>) -> Response {
    let notice = match q.checkout.as_deref() {
        Some("success") => {
            Some("Thank you: the subscription starts as soon as Stripe confirms the payment.")
        }
        Some("cancel") => Some("Checkout was cancelled; nothing changed."),
        _ => None,
    };
    match build(&ctx, Errors::none(), notice).await {
        Ok(p) => render(&p),
        Err(res) => res,
    }
}

/// Redirects to the URL the API answered, or shows its error on the page.
async fn go_to_stripe(ctx: &Ctx, answer: Answer) -> Response {
    let url = answer.str("url");
    if answer.ok() && (url.starts_with("https://") || url.starts_with("http://")) {
        return see_other(&url);
    }
    let status = if answer.ok() {
        axum::http::StatusCode::BAD_GATEWAY
    } else {
        answer.status
    };
    let errors = if answer.ok() {
        Errors::general("Stripe answered without a URL to go to; try again.")
    } else {
        Errors::from_answer(&answer, &[])
    };
    match build(ctx, errors, None).await {
        Ok(p) => render_status(status, &p),
        Err(res) => res,
    }
}

/// `POST /ui/billing/checkout {planKey}`.
pub(crate) async fn checkout(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let base = ctx
        .ui
        .app
        .config
        .public_url
        .trim_end_matches('/')
        .to_owned();
    let answer = ctx
        .api
        .post(
            "/billing/checkout",
            json!({
                "planKey": form.text("planKey"),
                "successUrl": format!("{base}/ui/billing?checkout=success"),
                "cancelUrl": format!("{base}/ui/billing?checkout=cancel"),
            }),
        )
        .await;
    go_to_stripe(&ctx, answer).await
}

/// `POST /ui/billing/portal`.
pub(crate) async fn portal(ctx: Ctx, Extension(_form): Extension<Form>) -> Response {
    let base = ctx
        .ui
        .app
        .config
        .public_url
        .trim_end_matches('/')
        .to_owned();
    let answer = ctx
        .api
        .post(
            "/billing/portal",
            json!({"returnUrl": format!("{base}/ui/billing")}),
        )
        .await;
    go_to_stripe(&ctx, answer).await
}
