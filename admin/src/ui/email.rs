//! `/ui/verify-email?token=…`: the page the verification mail links to, and
//! `/ui/verify-email/resend` for a new link.
//!
//! Opening the link does not verify by itself: the page asks for one click
//! (a POST), so a mail scanner that prefetches links spends nothing.

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::layout::{Errors, Message};
use super::{render, render_status, see_other, Ctx, Form};

/// The link's query.
#[derive(Deserialize)]
pub(crate) struct TokenQuery {
    pub(crate) token: Option<String>,
}

#[derive(Template)]
#[template(path = "verify_email.html")]
struct LandingPage {
    csrf: String,
    token: String,
    errors: Errors,
}

#[derive(Template)]
#[template(path = "verify_email_resend.html")]
struct ResendPage {
    csrf: String,
    email: String,
    errors: Errors,
}

/// `GET /ui/verify-email?token=`.
pub(crate) async fn landing(ctx: Ctx, Query(q): Query<TokenQuery>) -> Response {
    let token = q.token.unwrap_or_default();
    let errors = if token.is_empty() {
        Errors::general(
            "This link has no token. Open the link from the mail as it is, or ask for a new one.",
        )
    } else {
        Errors::none()
    };
    let page = LandingPage {
        csrf: ctx.csrf.clone(),
        token,
        errors,
    };
    ctx.finish(render(&page))
}

/// `POST /ui/verify-email {token}` → `POST /auth/verify-email`.
pub(crate) async fn confirm(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let token = form.text("token");
    let answer = ctx
        .api
        .with_token(None)
        .post("/auth/verify-email", json!({"token": token}))
        .await;
    if answer.ok() {
        return see_other("/ui/signin?notice=verified");
    }
    let page = LandingPage {
        csrf: ctx.csrf.clone(),
        token,
        errors: Errors::from_answer(&answer, &[]),
    };
    ctx.finish(render_status(answer.status, &page))
}

/// `GET /ui/verify-email/resend`.
pub(crate) async fn resend_page(ctx: Ctx) -> Response {
    let page = ResendPage {
        csrf: ctx.csrf.clone(),
        email: String::new(),
        errors: Errors::none(),
    };
    ctx.finish(render(&page))
}

/// `POST /ui/verify-email/resend {email}` → `POST /auth/verify-email/resend`.
pub(crate) async fn resend(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let email = form.text("email");
    let answer = ctx
        .api
        .with_token(None)
        .post("/auth/verify-email/resend", json!({"email": email}))
        .await;
    if answer.ok() {
        return ctx.finish(render(&Message {
            title: "Link sent",
            message: "If this address has an account that is not verified yet, a new link is on its way.",
            link: "/ui/signin",
            link_text: "Sign in",
        }));
    }
    let page = ResendPage {
        csrf: ctx.csrf.clone(),
        email,
        errors: Errors::from_answer(&answer, &["email"]),
    };
    ctx.finish(render_status(answer.status, &page))
}
