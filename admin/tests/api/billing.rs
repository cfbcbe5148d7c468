//! Billing on a running admin against `stripe-mock` (Stripe's own API mock,
//! started by `deploy/stripe-mock.sh`), on both databases: every
//! `/billing/*` route, the not-configured answers, subscription ownership,
//! and `POST /stripe/webhook` with payloads signed by the real scheme
//! (`t=…,v1=hex(HMAC-SHA256(secret, "t.body"))`).
//!
//! stripe-mock answers fixture objects and keeps no state, so what a
//! subscription belongs to comes from signed webhooks here, as in
//! production.

use serde_json::{json, Value};
use sqlx::Row as _;

use crate::helpers::{request, Backend, TestApp, TestResponse};
use crate::projects::{sign_up, User};

const WHSEC: &str = "whsec_test_qyzar_billing";
const PRICE_PRO: &str = "price_qyzar_pro";
const PRICE_ENT: &str = "price_qyzar_enterprise";

/// An admin with billing configured against stripe-mock, or `None` (skip
/// line printed) when stripe-mock or the database is not available.
async fn billing_app(backend: Backend) -> Option<TestApp> {
    let mock =
        qyzar_shared::testing::backend("QYZAR_TEST_STRIPE_MOCK", "billing against stripe-mock")?;
    TestApp::spawn_with(backend, |c| {
        c.stripe_secret_key = Some("sk_test_qyzar".into());
        c.stripe_webhook_secret = Some(WHSEC.into());
        c.stripe_price_pro = Some(PRICE_PRO.into());
        c.stripe_price_enterprise = Some(PRICE_ENT.into());
        c.stripe_api_base = Some(mock);
    })
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> i64 {
    qyzar_shared::time::now_ms() / 1000
}

/// `Stripe-Signature` for `body` at `t` under `secret`.
fn sign(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", v1(secret, t, body))
}

fn v1(secret: &str, t: i64, body: &str) -> String {
    hex(&qyzar_shared::crypto::hmac_sha256(
        secret.as_bytes(),
        format!("{t}.{body}").as_bytes(),
    ))
}

async fn post_webhook(app: &TestApp, signature: Option<&str>, body: &str) -> TestResponse {
    let mut headers = vec![];
    if let Some(s) = signature {
        headers.push(("stripe-signature", s));
    }
    request("POST", &app.url("/stripe/webhook"), &headers, Some(body)).await
}

/// Sends `event` signed with the right secret now; asserts `200`.
async fn deliver(app: &TestApp, event: &Value) -> TestResponse {
    let body = event.to_string();
    let r = post_webhook(app, Some(&sign(WHSEC, now_secs(), &body)), &body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["received"], true);
    r
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false, "data": {"object": object}})
}

fn subscription(id: &str, customer: &str, price: &str, status: &str, metadata: Value) -> Value {
    json!({
        "id": id, "object": "subscription", "customer": customer, "status": status,
        "cancel_at_period_end": false, "metadata": metadata,
        "items": {"object": "list", "has_more": false, "data": [
            {"id": format!("si_{id}"), "price": {"id": price}, "current_period_end": 1_900_000_000}
        ]}
    })
}

async fn user_id(app: &TestApp, email: &str) -> String {
    sqlx::query("SELECT id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn customer_id(app: &TestApp, user: &str) -> Option<String> {
    sqlx::query("SELECT stripe_customer_id FROM billing_customers WHERE user_id = $1")
        .bind(user)
        .fetch_optional(app.state.db.pool())
        .await
        .unwrap()
        .map(|r| r.try_get(0).unwrap())
}

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

async fn plan_of(app: &TestApp, user: &User) -> String {
    let r = user.get(app, "/billing/status").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["plan"].as_str().unwrap().to_owned()
}

async fn config_version(app: &TestApp) -> i64 {
    sqlx::query("SELECT version FROM config_versions WHERE id = 1")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

#[track_caller]
fn error(r: &TestResponse, status: u16, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], code, "{:?}", r.body);
}

async fn not_configured(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ann = sign_up(&app, "ann.billing@example.com").await;
    let r = ann.get(&app, "/billing/status").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        (
            &r.body["configured"],
            &r.body["hasCustomer"],
            &r.body["plan"]
        ),
        (&json!(false), &json!(false), &json!("free"))
    );
    // Usage needs no Stripe: this month, nothing used yet, free's allowance.
    assert_eq!(r.body["usage"]["verifications"], 0);
    assert_eq!(r.body["usage"]["monthlyVerifications"], 10_000);
    assert_eq!(r.body["usage"]["blocked"], false);
    let r = ann.get(&app, "/billing/plans").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["configured"], false);
    for p in r.body["plans"].as_array().unwrap() {
        assert_eq!(p["checkoutAvailable"], false, "{p:?}");
        assert_eq!(p["stripePriceId"], Value::Null, "{p:?}");
    }
    let r = ann
        .send(&app, "POST", "/billing/checkout", json!({"planKey": "pro"}))
        .await;
    error(&r, 409, "billing_not_configured");
    let r = ann.send(&app, "POST", "/billing/portal", json!({})).await;
    error(&r, 409, "billing_not_configured");
    let r = ann.get(&app, "/billing/subscriptions").await;
    error(&r, 409, "billing_not_configured");
    let sub = json!({"subscriptionId": "sub_123", "newPriceId": "price_x"});
    error(
        &ann.send(&app, "PATCH", "/billing/subscription", sub.clone())
            .await,
        409,
        "billing_not_configured",
    );
    error(
        &ann.send(&app, "POST", "/billing/subscription/cancel", sub.clone())
            .await,
        409,
        "billing_not_configured",
    );
    error(
        &ann.send(&app, "POST", "/billing/subscription/resume", sub)
            .await,
        409,
        "billing_not_configured",
    );
    let body = event("evt_nc", "ping", now_secs(), json!({})).to_string();
    let r = post_webhook(&app, Some(&sign(WHSEC, now_secs(), &body)), &body).await;
    error(&r, 409, "billing_not_configured");
    // Dashboard routes still want a user.
    let r = request("GET", &app.url("/billing/status"), &[], None).await;
    error(&r, 401, "missing_credentials");
    app.stop().await;
}

#[tokio::test]
async fn not_configured_on_sqlite() {
    not_configured(Backend::Sqlite).await;
}

#[tokio::test]
async fn not_configured_on_postgres() {
    not_configured(Backend::Postgres).await;
}

async fn routes_against_stripe_mock(backend: Backend) {
    let Some(app) = billing_app(backend).await else {
        return;
    };
    let ann = sign_up(&app, "ann.pay@example.com").await;
    let bob = sign_up(&app, "bob.pay@example.com").await;
    let ann_id = user_id(&app, &ann.email).await;

    // Plans: the catalog with the configured prices.
    let r = ann.get(&app, "/billing/plans").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["configured"], true);
    assert_eq!(r.body["currentPlan"], "free");
    let plans = r.body["plans"].as_array().unwrap();
    let keys: Vec<_> = plans.iter().map(|p| p["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["free", "pro", "enterprise"]);
    assert_eq!(plans[0]["checkoutAvailable"], false);
    assert_eq!(plans[0]["monthlyPriceCents"], 0);
    assert_eq!(plans[1]["stripePriceId"], PRICE_PRO);
    assert_eq!(plans[1]["checkoutAvailable"], true);
    assert_eq!(plans[2]["stripePriceId"], PRICE_ENT);
    assert!(
        plans[2]["monthlyPriceCents"].as_i64().unwrap()
            > plans[1]["monthlyPriceCents"].as_i64().unwrap()
    );

    // Status, portal and subscriptions before any checkout.
    let r = ann.get(&app, "/billing/status").await;
    assert_eq!(
        (
            &r.body["configured"],
            &r.body["hasCustomer"],
            &r.body["plan"]
        ),
        (&json!(true), &json!(false), &json!("free"))
    );
    error(
        &ann.send(&app, "POST", "/billing/portal", json!({})).await,
        409,
        "conflict",
    );
    let r = ann.get(&app, "/billing/subscriptions").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["subscriptions"], json!([]));

    // Checkout: validation, then a session; the customer is created once.
    let r = ann
        .send(
            &app,
            "POST",
            "/billing/checkout",
            json!({"planKey": "free"}),
        )
        .await;
    error(&r, 422, "invalid_field");
    assert_eq!(r.body["error"]["field"], "planKey");
    let r = ann
        .send(
            &app,
            "POST",
            "/billing/checkout",
            json!({"planKey": "pro", "successUrl": "javascript:x"}),
        )
        .await;
    error(&r, 422, "invalid_field");
    assert_eq!(r.body["error"]["field"], "successUrl");
    let r = ann.send(&app, "POST", "/billing/checkout", json!({})).await;
    error(&r, 400, "missing_field");
    assert_eq!(
        customer_id(&app, &ann_id).await,
        None,
        "no customer for refused requests"
    );
    let r = ann
        .send(
            &app,
            "POST",
            "/billing/checkout",
            json!({"planKey": "pro", "successUrl": "https://shop.example/ok", "cancelUrl": "https://shop.example/no"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        r.body["url"].as_str().unwrap().starts_with("https://"),
        "{:?}",
        r.body
    );
    assert!(
        r.body["sessionId"].as_str().unwrap().starts_with("cs_"),
        "{:?}",
        r.body
    );
    let customer = customer_id(&app, &ann_id)
        .await
        .expect("a customer after checkout");
    assert!(customer.starts_with("cus_"));
    let r = ann
        .send(
            &app,
            "POST",
            "/billing/checkout",
            json!({"planKey": "enterprise"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        customer_id(&app, &ann_id).await.as_deref(),
        Some(customer.as_str()),
        "same customer"
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM billing_customers WHERE user_id = $1",
            &ann_id
        )
        .await,
        1
    );
    let r = ann.get(&app, "/billing/status").await;
    assert_eq!(r.body["hasCustomer"], true);
    let r = bob.get(&app, "/billing/status").await;
    assert_eq!(r.body["hasCustomer"], false, "bob has none");

    // Portal and the Stripe-side list.
    let r = ann
        .send(
            &app,
            "POST",
            "/billing/portal",
            json!({"returnUrl": "https://shop.example/back"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["url"].as_str().unwrap().starts_with("https://"));
    let r = ann
        .send(
            &app,
            "POST",
            "/billing/portal",
            json!({"returnUrl": "nope"}),
        )
        .await;
    error(&r, 422, "invalid_field");
    let r = ann.get(&app, "/billing/subscriptions").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let subs = r.body["subscriptions"].as_array().unwrap();
    assert!(!subs.is_empty(), "stripe-mock lists its fixture");
    assert!(subs[0]["id"].as_str().unwrap().starts_with("sub_"));
    assert!(subs[0]["status"].is_string());

    // Ann's subscription becomes known through a signed webhook.
    let sub = "sub_annpro1";
    deliver(
        &app,
        &event(
            "evt_ann_sub",
            "customer.subscription.created",
            now_secs(),
            subscription(sub, &customer, PRICE_PRO, "active", json!({})),
        ),
    )
    .await;
    assert_eq!(plan_of(&app, &ann).await, "pro");

    // PATCH: only the configured prices, only the owner.
    let patch = |price: &str, proration: Option<&str>| {
        let mut b = json!({"subscriptionId": sub, "newPriceId": price});
        if let Some(p) = proration {
            b["prorationBehavior"] = json!(p);
        }
        b
    };
    let r = ann
        .send(
            &app,
            "PATCH",
            "/billing/subscription",
            patch("price_someone_else", None),
        )
        .await;
    error(&r, 422, "invalid_field");
    assert_eq!(r.body["error"]["field"], "newPriceId");
    let r = ann
        .send(
            &app,
            "PATCH",
            "/billing/subscription",
            patch(PRICE_ENT, Some("sometimes")),
        )
        .await;
    error(&r, 422, "invalid_field");
    assert_eq!(r.body["error"]["field"], "prorationBehavior");
    let r = bob
        .send(
            &app,
            "PATCH",
            "/billing/subscription",
            patch(PRICE_ENT, None),
        )
        .await;
    error(&r, 404, "not_found");
    let r = ann
        .send(
            &app,
            "PATCH",
            "/billing/subscription",
            patch(PRICE_ENT, Some("none")),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["subscription"]["id"], sub);
    let r = ann
        .send(
            &app,
            "PATCH",
            "/billing/subscription",
            json!({"subscriptionId": "sub_not_hers", "newPriceId": PRICE_ENT}),
        )
        .await;
    error(&r, 404, "not_found");
    let r = ann
        .send(
            &app,
            "PATCH",
            "/billing/subscription",
            json!({"subscriptionId": "cus_123/../x", "newPriceId": PRICE_ENT}),
        )
        .await;
    error(&r, 422, "invalid_field");
    assert_eq!(r.body["error"]["field"], "subscriptionId");

    // Cancel (at period end by default, or now) and resume: owner only.
    let body = json!({"subscriptionId": sub});
    error(
        &bob.send(&app, "POST", "/billing/subscription/cancel", body.clone())
            .await,
        404,
        "not_found",
    );
    let r = ann
        .send(&app, "POST", "/billing/subscription/cancel", body.clone())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["subscription"]["id"], sub);
    error(
        &bob.send(&app, "POST", "/billing/subscription/resume", body.clone())
            .await,
        404,
        "not_found",
    );
    let r = ann
        .send(&app, "POST", "/billing/subscription/resume", body.clone())
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = ann
        .send(
            &app,
            "POST",
            "/billing/subscription/cancel",
            json!({"subscriptionId": sub, "immediately": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["subscription"]["id"], sub);
    // Nothing moved the plan but webhooks.
    assert_eq!(plan_of(&app, &ann).await, "pro");
    app.stop().await;
}

#[tokio::test]
async fn routes_against_stripe_mock_on_sqlite() {
    routes_against_stripe_mock(Backend::Sqlite).await;
}

#[tokio::test]
async fn routes_against_stripe_mock_on_postgres() {
    routes_against_stripe_mock(Backend::Postgres).await;
}

async fn webhook_signatures(backend: Backend) {
    let Some(app) = billing_app(backend).await else {
        return;
    };
    let body = event(
        "evt_sig_1",
        "customer.created",
        now_secs(),
        json!({"id": "cus_x", "object": "customer"}),
    )
    .to_string();
    let t = now_secs();

    // Refused: no header, wrong secret, stale, future, malformed header.
    error(
        &post_webhook(&app, None, &body).await,
        401,
        "missing_credentials",
    );
    error(
        &post_webhook(&app, Some(&sign("whsec_wrong", t, &body)), &body).await,
        401,
        "invalid_credentials",
    );
    error(
        &post_webhook(&app, Some(&sign(WHSEC, t - 301, &body)), &body).await,
        401,
        "invalid_credentials",
    );
    // Well past the 300 s tolerance: `t` was read before the calls above,
    // and on a loaded machine seconds pass before this one is checked.
    error(
        &post_webhook(&app, Some(&sign(WHSEC, t + 330, &body)), &body).await,
        401,
        "invalid_credentials",
    );
    error(
        &post_webhook(&app, Some(&format!("v1={}", v1(WHSEC, t, &body))), &body).await,
        401,
        "invalid_credentials",
    );
    // A signature over another body (the body was tampered with).
    let tampered = body.replace("cus_x", "cus_y");
    error(
        &post_webhook(&app, Some(&sign(WHSEC, t, &body)), &tampered).await,
        401,
        "invalid_credentials",
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM billing_event_logs WHERE event_id <> $1",
            ""
        )
        .await,
        0,
        "nothing stored"
    );

    // Accepted: within tolerance, with several v1 (one of them good).
    let several = format!(
        "t={t},v1={},v0=abc,v1={}",
        v1("whsec_old", t, &body),
        v1(WHSEC, t, &body)
    );
    let r = post_webhook(&app, Some(&several), &body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"received": true, "duplicate": false}));
    // Replay: acknowledged, stored once.
    let r = post_webhook(&app, Some(&sign(WHSEC, now_secs() - 200, &body)), &body).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["duplicate"], true);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM billing_event_logs WHERE event_id = $1",
            "evt_sig_1"
        )
        .await,
        1
    );
    // Unknown type: logged (raw payload kept) and acknowledged.
    let row = sqlx::query(
        "SELECT event_type, outcome, payload FROM billing_event_logs WHERE event_id = $1",
    )
    .bind("evt_sig_1")
    .fetch_one(app.state.db.pool())
    .await
    .unwrap();
    assert_eq!(row.try_get::<String, _>(0).unwrap(), "customer.created");
    assert_eq!(row.try_get::<String, _>(1).unwrap(), "ignored");
    assert_eq!(
        row.try_get::<String, _>(2).unwrap(),
        body,
        "raw payload kept byte for byte"
    );

    // Malformed bodies, correctly signed: 400, nothing stored.
    for bad in ["{not json", r#"{"id":"evt_x"}"#, "[]", ""] {
        let r = post_webhook(&app, Some(&sign(WHSEC, now_secs(), bad)), bad).await;
        error(&r, 400, "malformed_json");
    }
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM billing_event_logs WHERE event_id <> $1",
            "evt_sig_1"
        )
        .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn webhook_signatures_on_sqlite() {
    webhook_signatures(Backend::Sqlite).await;
}

#[tokio::test]
async fn webhook_signatures_on_postgres() {
    webhook_signatures(Backend::Postgres).await;
}

async fn webhook_moves_plan_and_quota(backend: Backend) {
    let Some(app) = billing_app(backend).await else {
        return;
    };
    let ann = sign_up(&app, "ann.plan@example.com").await;
    let ann_id = user_id(&app, &ann.email).await;
    let t0 = now_secs() - 100;
    for name in ["A", "B", "C"] {
        crate::projects::create_project(&app, &ann.token, name).await;
    }
    error(
        &ann.send(&app, "POST", "/projects", json!({"name": "D"}))
            .await,
        422,
        "quota_exceeded",
    );

    // Checkout completed: customer and subscription linked, plan pro, pushed.
    let before = config_version(&app).await;
    let session = json!({
        "id": "cs_test_1", "object": "checkout.session", "mode": "subscription",
        "customer": "cus_annplan", "subscription": "sub_annplan",
        "client_reference_id": ann_id, "metadata": {"qyzar_user_id": ann_id, "qyzar_plan": "pro"}
    });
    deliver(
        &app,
        &event("evt_p1", "checkout.session.completed", t0, session),
    )
    .await;
    assert_eq!(plan_of(&app, &ann).await, "pro");
    assert!(
        config_version(&app).await > before,
        "a plan change rebuilds and pushes the snapshot"
    );
    assert_eq!(
        customer_id(&app, &ann_id).await.as_deref(),
        Some("cus_annplan")
    );
    let r = ann.get(&app, "/billing/plans").await;
    assert_eq!(r.body["currentPlan"], "pro");
    // The pro quota applies at once.
    crate::projects::create_project(&app, &ann.token, "D").await;

    // Updated to the enterprise price (matched by customer, no metadata).
    let ent = subscription("sub_annplan", "cus_annplan", PRICE_ENT, "active", json!({}));
    deliver(
        &app,
        &event("evt_p2", "customer.subscription.updated", t0 + 10, ent),
    )
    .await;
    assert_eq!(plan_of(&app, &ann).await, "enterprise");
    // A late, older event does not undo it.
    let old = subscription("sub_annplan", "cus_annplan", PRICE_PRO, "active", json!({}));
    deliver(
        &app,
        &event("evt_p0", "customer.subscription.updated", t0 + 5, old),
    )
    .await;
    assert_eq!(plan_of(&app, &ann).await, "enterprise");

    // A failed payment: past_due grants no plan.
    let invoice = json!({"id": "in_1", "object": "invoice", "customer": "cus_annplan",
        "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_annplan"}}});
    deliver(
        &app,
        &event("evt_p3", "invoice.payment_failed", t0 + 20, invoice),
    )
    .await;
    assert_eq!(plan_of(&app, &ann).await, "free");
    error(
        &ann.send(&app, "POST", "/projects", json!({"name": "E"}))
            .await,
        422,
        "quota_exceeded",
    );
    // Paid again, then deleted.
    let active = subscription("sub_annplan", "cus_annplan", PRICE_ENT, "active", json!({}));
    deliver(
        &app,
        &event(
            "evt_p4",
            "customer.subscription.updated",
            t0 + 30,
            active.clone(),
        ),
    )
    .await;
    assert_eq!(plan_of(&app, &ann).await, "enterprise");
    deliver(
        &app,
        &event("evt_p5", "customer.subscription.deleted", t0 + 40, active),
    )
    .await;
    assert_eq!(plan_of(&app, &ann).await, "free");

    // An unconfigured price grants nothing; an unknown customer is logged
    // as unmatched and acknowledged.
    let foreign = subscription(
        "sub_annplan2",
        "cus_annplan",
        "price_unknown",
        "active",
        json!({}),
    );
    deliver(
        &app,
        &event("evt_p6", "customer.subscription.created", t0 + 50, foreign),
    )
    .await;
    assert_eq!(plan_of(&app, &ann).await, "free");
    let stranger = subscription("sub_nobody", "cus_nobody", PRICE_ENT, "active", json!({}));
    deliver(
        &app,
        &event("evt_p7", "customer.subscription.created", t0 + 60, stranger),
    )
    .await;
    let outcome: String = sqlx::query("SELECT outcome FROM billing_event_logs WHERE event_id = $1")
        .bind("evt_p7")
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
        .try_get(0)
        .unwrap();
    assert_eq!(outcome, "unmatched");
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM billing_event_logs WHERE event_id LIKE $1",
            "evt_p%"
        )
        .await,
        8
    );
    app.stop().await;
}

#[tokio::test]
async fn webhook_moves_plan_and_quota_on_sqlite() {
    webhook_moves_plan_and_quota(Backend::Sqlite).await;
}

#[tokio::test]
async fn webhook_moves_plan_and_quota_on_postgres() {
    webhook_moves_plan_and_quota(Backend::Postgres).await;
}

/// Housekeeping drops billing events past the retention and old traffic
/// batch ids, and keeps everything younger.
async fn housekeeping_prunes_old_rows(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let now = now_secs() * 1000;
    let day = 86_400_000i64;
    for (id, age_days) in [("evt_old", 401), ("evt_recent", 399), ("evt_new", 0)] {
        sqlx::query(
            "INSERT INTO billing_event_logs (event_id, event_type, user_id, payload, outcome, received_at) \
             VALUES ($1, 'invoice.paid', NULL, '{}', 'ignored', $2)",
        )
        .bind(id)
        .bind(now - age_days * day)
        .execute(app.state.db.pool())
        .await
        .unwrap();
    }
    for (id, age_days) in [("eng_a-1", 8), ("eng_a-2", 6)] {
        sqlx::query("INSERT INTO traffic_batches (batch_id, received_at) VALUES ($1, $2)")
            .bind(id)
            .bind(now - age_days * day)
            .execute(app.state.db.pool())
            .await
            .unwrap();
    }
    let pruned = qyzar_admin::maintenance::run_once(
        &app.state.db,
        now,
        qyzar_admin::config::DEFAULT_BILLING_LOG_RETENTION_DAYS,
    )
    .await
    .unwrap();
    assert_eq!((pruned.billing_events, pruned.traffic_batches), (1, 1));
    let left: Vec<String> =
        sqlx::query("SELECT event_id FROM billing_event_logs ORDER BY event_id")
            .fetch_all(app.state.db.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get(0).unwrap())
            .collect();
    assert_eq!(left, ["evt_new", "evt_recent"]);
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM traffic_batches WHERE batch_id = $1",
            "eng_a-2"
        )
        .await,
        1
    );
    // A second run finds nothing more.
    let again = qyzar_admin::maintenance::run_once(&app.state.db, now, 400)
        .await
        .unwrap();
    assert_eq!((again.billing_events, again.traffic_batches), (0, 0));
    app.stop().await;
}

#[tokio::test]
async fn housekeeping_prunes_old_rows_on_sqlite() {
    housekeeping_prunes_old_rows(Backend::Sqlite).await;
}

#[tokio::test]
async fn housekeeping_prunes_old_rows_on_postgres() {
    housekeeping_prunes_old_rows(Backend::Postgres).await;
}
