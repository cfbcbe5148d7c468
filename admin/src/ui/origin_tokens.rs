//! `/ui/projects/{id}/origin-tokens`: create origin tokens (`POST
//! /origin-tokens`), see whether one is live (`GET /origin-tokens/status`)
//! and invalidate one (`POST /origin-tokens/invalidate`, from an htmx
//! button that replaces its row, or a plain form without script).
//!
//! The API keeps only each token's hash and has no list route, so the page
//! lists the tokens created from this browser (kept, newest first, in an
//! HttpOnly cookie per project: origin tokens are public values that sit in
//! the customer's pages anyway) and checks any other token pasted in.

use askama::Template;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::{json, Value};

use super::layout::{Errors, Shell};
use super::{render, render_status, see_other, Api, Ctx, Form};

/// Tokens remembered per project and browser.
const REMEMBERED: usize = 10;

/// One token's row.
pub(crate) struct TokenRow {
    /// The token (public).
    pub token: String,
    /// Whether it is live.
    pub live: bool,
    /// Why not (`invalidated`, `expired`, `not_found`).
    pub reason: String,
    /// Its origin, when live.
    pub origin: String,
    /// Its expiry, when live.
    pub expires_at: String,
}

#[derive(Template)]
#[template(path = "origin_tokens.html")]
struct TokensPage {
    shell: Shell,
    project_id: String,
    rows: Vec<TokenRow>,
    created: Option<Created>,
    origin: String,
    ttl: String,
    errors: Errors,
    checked: Option<TokenRow>,
}

/// What `POST /origin-tokens` answered.
struct Created {
    token: String,
    origin_allowed: bool,
}

#[derive(Template)]
#[template(path = "origin_token_row.html")]
struct RowFragment {
    t: TokenRow,
    project_id: String,
    csrf: String,
}

/// `?check=` a token's status.
#[derive(Deserialize)]
pub(crate) struct CheckQuery {
    check: Option<String>,
}

fn cookie_name(project_id: &str) -> String {
    let safe: String = project_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    format!("qz_ot_{safe}")
}

fn remembered(headers: &HeaderMap, project_id: &str) -> Vec<String> {
    super::session::cookie(headers, &cookie_name(project_id))
        .map(|v| {
            v.split('.')
                .filter(|t| t.starts_with("qz_ot_") && t.len() < 100)
                .map(str::to_owned)
                .take(REMEMBERED)
                .collect()
        })
        .unwrap_or_default()
}

async fn status(api: &Api, token: &str) -> TokenRow {
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("token", token)
        .finish();
    let a = api.get(&format!("/origin-tokens/status?{q}")).await;
    TokenRow {
        token: token.to_owned(),
        live: a.body["live"].as_bool().unwrap_or(false),
        reason: if a.ok() {
            a.str("reason")
        } else {
            a.failure().message
        },
        origin: a.str("origin"),
        expires_at: a.str("expiresAt"),
    }
}

async fn rows(api: &Api, tokens: &[String]) -> Vec<TokenRow> {
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        out.push(status(api, t).await);
    }
    out
}

/// `GET /ui/projects/{id}/origin-tokens[?check=token]`.
pub(crate) async fn page(
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<CheckQuery>,
) -> Response {
    let (shell, _) = match ctx.project(&id, "origin-tokens").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let checked = match q.check.filter(|t| !t.trim().is_empty()) {
        Some(t) => Some(status(&ctx.api, t.trim()).await),
        None => None,
    };
    render(&TokensPage {
        shell,
        rows: rows(&ctx.api, &remembered(&headers, &id)).await,
        project_id: id,
        created: None,
        origin: String::new(),
        ttl: String::new(),
        errors: Errors::none(),
        checked,
    })
}

/// `POST /ui/projects/{id}/origin-tokens {origin, ttlSeconds?}`.
pub(crate) async fn create(
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Extension(form): Extension<Form>,
) -> Response {
    let (shell, _) = match ctx.project(&id, "origin-tokens").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let origin = form.text("origin");
    let ttl = form.text("ttlSeconds");
    let mut body = json!({"projectId": id, "origin": origin});
    if !ttl.trim().is_empty() {
        body["ttlSeconds"] = ttl
            .trim()
            .parse::<i64>()
            .map_or_else(|_| Value::String(ttl.clone()), Value::from);
    }
    let answer = ctx.api.post("/origin-tokens", body).await;
    let mut tokens = remembered(&headers, &id);
    let (status, created, errors) = if answer.ok() {
        let token = answer.str("token");
        tokens.insert(0, token.clone());
        tokens.truncate(REMEMBERED);
        (
            StatusCode::OK,
            Some(Created {
                token,
                origin_allowed: answer.body["originAllowed"].as_bool().unwrap_or(true),
            }),
            Errors::none(),
        )
    } else {
        (
            answer.status,
            None,
            Errors::from_answer(&answer, &["origin", "ttlSeconds"]),
        )
    };
    let mut res = render_status(
        status,
        &TokensPage {
            shell,
            rows: rows(&ctx.api, &tokens).await,
            project_id: id.clone(),
            origin: if created.is_some() {
                String::new()
            } else {
                origin
            },
            ttl: if created.is_some() {
                String::new()
            } else {
                ttl
            },
            created,
            errors,
            checked: None,
        },
    );
    if answer.ok() {
        ctx.set_cookie(
            &mut res,
            &cookie_name(&id),
            &tokens.join("."),
            Some(90 * 86_400),
        );
    }
    res
}

/// `POST /ui/projects/{id}/origin-tokens/invalidate {token}`: from htmx
/// (`HX-Request`), the token's updated row; from a plain form, back to the
/// page.
pub(crate) async fn invalidate(
    ctx: Ctx,
    Path(id): Path<String>,
    headers: HeaderMap,
    Extension(form): Extension<Form>,
) -> Response {
    if ctx.token.is_none() {
        return see_other("/ui/signin");
    }
    let token = form.text("token");
    let answer = ctx
        .api
        .post("/origin-tokens/invalidate", json!({"token": token}))
        .await;
    if answer.status == StatusCode::UNAUTHORIZED {
        return see_other("/ui/signin");
    }
    if !answer.ok() {
        return ctx.error_page(&answer);
    }
    if headers.contains_key("hx-request") {
        let row = status(&ctx.api, &token).await;
        return render(&RowFragment {
            t: row,
            project_id: id,
            csrf: ctx.csrf.clone(),
        });
    }
    see_other(&format!("/ui/projects/{id}/origin-tokens"))
}
