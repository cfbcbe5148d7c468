//! A small typed Stripe client: exactly the calls billing makes, with serde
//! types for exactly the fields it reads.
//!
//! Written here rather than taken from `async-stripe`, for two measured
//! reasons (2026-11-26, this 2-core machine):
//!
//! - **It cannot be tested against `stripe-mock`.** `async-stripe`
//!   1.0.0-rc.10 (the only 1.x; types generated for API `2026-09-30.endive`)
//!   was wired in for all seven calls. Customer, Checkout Session and
//!   Portal calls worked against stripe-mock v0.203.0 (the newest; its spec
//!   is `2026-08-26.dahlia`), but every subscription answer failed with
//!   "error deserializing request data": async-stripe's `SubscriptionItem`
//!   requires `plan`, which stripe-mock's spec and fixtures no longer have.
//!   The billing tests (list, change, cancel, resume against stripe-mock on
//!   both databases) would have had to go, so the swap was reverted.
//! - **Build cost**: its features for these resources add about 2 min 10 s
//!   of CPU to a clean build (mostly `async-stripe-shared`'s generated
//!   types), and it needs Rust 1.89.
//!
//! The answers are parsed into the few fields billing reads, each lenient
//! where Stripe's API versions differ, so the same types read stripe-mock,
//! the live API and webhook payloads.
//! Requests are form-encoded with Stripe's bracket syntax
//! (`line_items[0][price]=…`), like Stripe's own libraries; answers are JSON.
//! The base URL is configurable (`STRIPE_API_BASE`), so tests run against
//! `stripe-mock` over plain HTTP; the real API is reached over rustls.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The real API, when `STRIPE_API_BASE` is unset.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// The API version every request pins, so a change of the account's default
/// version in Stripe's dashboard cannot change the shapes parsed here.
pub const API_VERSION: &str = "2025-08-27.basil";

/// Longest one Stripe call may take: a dashboard click waits for it.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Largest answer read from Stripe (a subscription list of 100 is far less).
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// Why a Stripe call failed. Never shown to the caller (the routes answer an
/// opaque error), only logged.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Connecting, sending or reading failed, or the call timed out.
    #[error("stripe transport: {0}")]
    Transport(String),
    /// Stripe answered with an error object.
    #[error("stripe answered {status}: {kind}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stripe's `error.type`.
        kind: String,
        /// Stripe's `error.message`.
        message: String,
    },
    /// A 2xx answer that is not the expected JSON.
    #[error("stripe answer not understood: {0}")]
    Decode(String),
}

/// A Stripe customer (only the id is needed).
#[derive(Debug, Clone, Deserialize)]
pub struct Customer {
    /// `cus_…`.
    pub id: String,
}

/// A Checkout Session or a Customer Portal session: where to send the
/// browser.
#[derive(Debug, Clone, Deserialize)]
pub struct HostedSession {
    /// `cs_…` or `bps_…`.
    pub id: String,
    /// The hosted page.
    pub url: Option<String>,
}

/// A price, inside a subscription item.
#[derive(Debug, Clone, Deserialize)]
pub struct Price {
    /// `price_…`.
    pub id: String,
}

/// One item of a subscription.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionItem {
    /// `si_…`, needed to swap the item's price.
    pub id: String,
    /// The price billed.
    pub price: Price,
    /// End of the current period (Unix seconds); on the item since the
    /// 2025-03-31 API version.
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

/// A Stripe list (`{"object": "list", "data": [...]}`).
#[derive(Debug, Clone, Deserialize)]
pub struct List<T> {
    /// The page.
    pub data: Vec<T>,
    /// Whether more pages exist.
    #[serde(default)]
    pub has_more: bool,
}

/// A subscription, the fields billing reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Subscription {
    /// `sub_…`.
    pub id: String,
    /// `active`, `trialing`, `past_due`, `canceled`, …
    pub status: String,
    /// The customer id (expanded objects are never requested).
    #[serde(default)]
    pub customer: Option<String>,
    /// Set when the subscription ends at the period's end.
    #[serde(default)]
    pub cancel_at_period_end: bool,
    /// The items (one per subscription here).
    pub items: List<SubscriptionItem>,
    /// Key-value pairs set at checkout (`qyzar_user_id`, `qyzar_plan`).
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl Subscription {
    /// The first item's price: a Qyzar subscription has one item.
    pub fn price_id(&self) -> Option<&str> {
        self.items.data.first().map(|i| i.price.id.as_str())
    }

    /// The first item's period end (Unix seconds).
    pub fn current_period_end(&self) -> Option<i64> {
        self.items.data.first().and_then(|i| i.current_period_end)
    }
}

/// What a Checkout Session is created with.
#[derive(Debug, Clone)]
pub struct CheckoutParams<'a> {
    /// The account's customer.
    pub customer: &'a str,
    /// The plan's price.
    pub price_id: &'a str,
    /// Where Stripe sends the browser after paying.
    pub success_url: &'a str,
    /// Where Stripe sends the browser when the buyer backs out.
    pub cancel_url: &'a str,
    /// The account (`usr_…`): set as `client_reference_id` and in the
    /// metadata of the session and of the subscription it creates, so the
    /// webhooks name the account without a lookup.
    pub user_id: &'a str,
    /// The plan key, in the same metadata.
    pub plan_key: &'a str,
}

/// The Stripe API, authenticated with the secret key. Cheap to clone.
#[derive(Clone)]
pub struct StripeClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    /// `Bearer sk_…`, marked sensitive so it is never logged.
    authorization: HeaderValue,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Form fields: `(key, value)` pairs in Stripe's bracket syntax.
type Form<'a> = Vec<(&'a str, &'a str)>;

impl StripeClient {
    /// A client for `base` (`None`: the real API) with `secret_key`.
    pub fn new(secret_key: &str, base: Option<&str>) -> Result<Self, String> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", secret_key.trim()))
            .map_err(|_| "STRIPE_SECRET_KEY is not a valid header value".to_owned())?;
        authorization.set_sensitive(true);
        let base = base
            .unwrap_or(DEFAULT_API_BASE)
            .trim_end_matches('/')
            .to_owned();
        let uri: http::Uri = base
            .parse()
            .map_err(|e: http::uri::InvalidUri| format!("STRIPE_API_BASE: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err("STRIPE_API_BASE must start with http:// or https://".into());
        }
        let mut tcp = HttpConnector::new();
        tcp.set_connect_timeout(Some(Duration::from_secs(5)));
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        })
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            http,
            base,
            authorization,
        })
    }

    /// `POST /v1/customers`. `idempotency_key` makes a retry (or a second
    /// concurrent first checkout of the same account) return the same
    /// customer instead of creating two.
    pub async fn create_customer(
        &self,
        email: &str,
        user_id: &str,
        idempotency_key: &str,
    ) -> Result<Customer, StripeError> {
        let form = vec![("email", email), ("metadata[qyzar_user_id]", user_id)];
        self.call(
            Method::POST,
            "/v1/customers",
            Some(form),
            Some(idempotency_key),
        )
        .await
    }

    /// `POST /v1/checkout/sessions` in subscription mode for one price.
    pub async fn create_checkout_session(
        &self,
        p: &CheckoutParams<'_>,
    ) -> Result<HostedSession, StripeError> {
        let form = vec![
            ("mode", "subscription"),
            ("customer", p.customer),
            ("line_items[0][price]", p.price_id),
            ("line_items[0][quantity]", "1"),
            ("success_url", p.success_url),
            ("cancel_url", p.cancel_url),
            ("client_reference_id", p.user_id),
            ("metadata[qyzar_user_id]", p.user_id),
            ("metadata[qyzar_plan]", p.plan_key),
            ("subscription_data[metadata][qyzar_user_id]", p.user_id),
            ("subscription_data[metadata][qyzar_plan]", p.plan_key),
        ];
        self.call(Method::POST, "/v1/checkout/sessions", Some(form), None)
            .await
    }

    /// `POST /v1/billing_portal/sessions`.
    pub async fn create_portal_session(
        &self,
        customer: &str,
        return_url: &str,
    ) -> Result<HostedSession, StripeError> {
        let form = vec![("customer", customer), ("return_url", return_url)];
        self.call(
            Method::POST,
            "/v1/billing_portal/sessions",
            Some(form),
            None,
        )
        .await
    }

    /// `GET /v1/subscriptions?customer=…&status=all&limit=100`: every
    /// subscription of a customer, canceled ones too (a customer has a
    /// handful; 100 is the page maximum).
    pub async fn list_subscriptions(
        &self,
        customer: &str,
    ) -> Result<List<Subscription>, StripeError> {
        let query = form_encode(&[("customer", customer), ("status", "all"), ("limit", "100")]);
        self.call(
            Method::GET,
            &format!("/v1/subscriptions?{query}"),
            None,
            None,
        )
        .await
    }

    /// `GET /v1/subscriptions/{id}`.
    pub async fn get_subscription(&self, id: &str) -> Result<Subscription, StripeError> {
        self.call(
            Method::GET,
            &format!("/v1/subscriptions/{}", path_segment(id)),
            None,
            None,
        )
        .await
    }

    /// `POST /v1/subscriptions/{id}` swapping item `item_id` to `price_id`.
    pub async fn change_price(
        &self,
        id: &str,
        item_id: &str,
        price_id: &str,
        proration_behavior: Option<&str>,
    ) -> Result<Subscription, StripeError> {
        let mut form = vec![("items[0][id]", item_id), ("items[0][price]", price_id)];
        if let Some(p) = proration_behavior {
            form.push(("proration_behavior", p));
        }
        self.call(
            Method::POST,
            &format!("/v1/subscriptions/{}", path_segment(id)),
            Some(form),
            None,
        )
        .await
    }

    /// `POST /v1/subscriptions/{id}` with `cancel_at_period_end`: `true`
    /// cancels at the period's end, `false` resumes.
    pub async fn set_cancel_at_period_end(
        &self,
        id: &str,
        value: bool,
    ) -> Result<Subscription, StripeError> {
        let form = vec![("cancel_at_period_end", if value { "true" } else { "false" })];
        self.call(
            Method::POST,
            &format!("/v1/subscriptions/{}", path_segment(id)),
            Some(form),
            None,
        )
        .await
    }

    /// `DELETE /v1/subscriptions/{id}`: cancels now.
    pub async fn cancel_now(&self, id: &str) -> Result<Subscription, StripeError> {
        self.call(
            Method::DELETE,
            &format!("/v1/subscriptions/{}", path_segment(id)),
            None,
            None,
        )
        .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        form: Option<Form<'_>>,
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.authorization.clone())
            .header("stripe-version", API_VERSION);
        if let Some(key) = idempotency_key {
            req = req.header("idempotency-key", key);
        }
        let body = match form {
            Some(fields) => {
                req = req.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                Bytes::from(form_encode(&fields))
            }
            None => Bytes::new(),
        };
        let req = req
            .body(Full::new(body))
            .map_err(|e| StripeError::Transport(e.to_string()))?;
        let exchange = async {
            let res = self
                .http
                .request(req)
                .await
                .map_err(|e| StripeError::Transport(e.to_string()))?;
            let status = res.status().as_u16();
            let bytes = http_body_util::Limited::new(res.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|e| StripeError::Transport(e.to_string()))?
                .to_bytes();
            Ok::<_, StripeError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| StripeError::Transport("timed out".into()))??;
        if !(200..300).contains(&status) {
            #[derive(Deserialize)]
            struct Envelope {
                error: ErrorBody,
            }
            #[derive(Deserialize)]
            struct ErrorBody {
                #[serde(rename = "type", default)]
                kind: String,
                #[serde(default)]
                message: String,
            }
            let (kind, message) = match serde_json::from_slice::<Envelope>(&bytes) {
                Ok(e) => (e.error.kind, e.error.message),
                Err(_) => (
                    "unknown".into(),
                    String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                ),
            };
            return Err(StripeError::Api {
                status,
                kind,
                message,
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| StripeError::Decode(e.to_string()))
    }
}

/// `application/x-www-form-urlencoded` of `pairs` (brackets in keys are
/// encoded too, which Stripe decodes like any form).
pub fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode(k, &mut out);
        out.push('=');
        percent_encode(v, &mut out);
    }
    out
}

/// An id placed in a URL path: encoded so an id with `/` or `?` in it (from
/// a caller) cannot address another endpoint.
fn path_segment(id: &str) -> String {
    let mut out = String::new();
    percent_encode(id, &mut out);
    out
}

fn percent_encode(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_encode_like_stripe_expects() {
        assert_eq!(
            form_encode(&[("line_items[0][price]", "price_1"), ("success_url", "https://a.example/x?y=1&z")]),
            "line_items%5B0%5D%5Bprice%5D=price_1&success_url=https%3A%2F%2Fa.example%2Fx%3Fy%3D1%26z"
        );
        assert_eq!(
            path_segment("sub_1/../../v1/customers"),
            "sub_1%2F..%2F..%2Fv1%2Fcustomers"
        );
    }

    #[test]
    fn base_must_be_http() {
        assert!(StripeClient::new("sk_test_x", Some("ftp://x")).is_err());
        assert!(StripeClient::new("sk_test_x", Some("http://127.0.0.1:12111/")).is_ok());
        assert!(StripeClient::new("sk_test_x\n", None).is_ok());
        assert!(StripeClient::new("sk\u{7}", None).is_err());
    }
}
