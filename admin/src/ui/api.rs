//! The dashboard's client of the JSON API, in process.
//!
//! Page handlers never touch the database: each action is an
//! `http::Request` with the session's bearer token, sent through the API
//! router with `tower::ServiceExt::oneshot`. Every validation rule, limit
//! and error message the pages show is therefore the API's own, and the
//! client address (connection info, `X-Forwarded-For`) is passed along so the
//! API's per-client throttles count the browser, not the admin itself.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt as _;

/// Largest API answer a page reads (the API's own answers are far smaller).
const MAX_ANSWER: usize = 1024 * 1024;

/// Sends requests to the API router on behalf of one browser request.
#[derive(Clone)]
pub(crate) struct Api {
    router: Router,
    token: Option<String>,
    peer: Option<ConnectInfo<SocketAddr>>,
    forwarded: Vec<HeaderValue>,
}

/// One API answer: its status and its JSON body (`Null` when there is none).
#[derive(Debug)]
pub(crate) struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body, parsed.
    pub body: Value,
}

/// The API's error body `{error: {code, message, field?}}`, as a page shows it.
#[derive(Debug, Clone)]
pub(crate) struct ApiFailure {
    /// The shared error code (`invalid_field`, `plan_limit`, …).
    pub code: String,
    /// The API's message, shown as is.
    pub message: String,
    /// The input field at fault, when the API names one.
    pub field: Option<String>,
}

impl Answer {
    /// Whether the status is 2xx.
    pub(crate) fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The error the API answered, or a generic one when the body has none.
    pub(crate) fn failure(&self) -> ApiFailure {
        let e = &self.body["error"];
        ApiFailure {
            code: e["code"].as_str().unwrap_or("internal").to_owned(),
            message: e["message"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| format!("the request failed ({})", self.status)),
            field: e["field"].as_str().map(str::to_owned),
        }
    }

    /// A string member of the body (`""` when absent).
    pub(crate) fn str(&self, key: &str) -> String {
        self.body[key].as_str().unwrap_or_default().to_owned()
    }
}

impl Api {
    /// A client for the browser request with these parts, carrying
    /// `token` as `Authorization: Bearer` when given.
    pub(crate) fn new(
        router: Router,
        parts: &axum::http::request::Parts,
        token: Option<String>,
    ) -> Self {
        Self {
            router,
            token,
            peer: parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned(),
            forwarded: parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .cloned()
                .collect(),
        }
    }

    /// The same client with another token (after sign-in, or none).
    pub(crate) fn with_token(&self, token: Option<String>) -> Self {
        Self {
            token,
            ..self.clone()
        }
    }

    /// `GET path_and_query`.
    pub(crate) async fn get(&self, path_and_query: &str) -> Answer {
        self.send(Method::GET, path_and_query, None).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    /// `PATCH path` with a JSON body.
    pub(crate) async fn patch(&self, path: &str, body: Value) -> Answer {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// Sends one request; a failure to even run it (which the router does
    /// not produce) is answered as a 500 the page shows as such.
    async fn send(&self, method: Method, uri: &str, body: Option<Value>) -> Answer {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = &self.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        for v in &self.forwarded {
            req = req.header("x-forwarded-for", v.clone());
        }
        let body = match body {
            Some(v) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut req = match req.body(body) {
            Ok(r) => r,
            Err(e) => return internal(&e),
        };
        if let Some(peer) = &self.peer {
            req.extensions_mut().insert(*peer);
        }
        let res = match self.router.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => return internal(&e),
        };
        let status = res.status();
        let bytes = match axum::body::to_bytes(res.into_body(), MAX_ANSWER).await {
            Ok(b) => b,
            Err(e) => return internal(&e),
        };
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        Answer { status, body }
    }
}

fn internal(e: &dyn std::fmt::Display) -> Answer {
    tracing::error!(error = %e, "dashboard: in-process api call failed");
    Answer {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        body: Value::Null,
    }
}
