//! `/ui/reset-password`: ask for a reset link (`POST
//! /auth/password-reset-request`); the mailed link
//! `/ui/reset-password?token=…` shows the new-password form (`POST
//! /auth/password-reset-confirm`).

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use axum::Extension;
use serde_json::json;

use super::email::TokenQuery;
use super::layout::{Errors, Message};
use super::{render, render_status, see_other, Ctx, Form, SESSION_COOKIE};

#[derive(Template)]
#[template(path = "reset_request.html")]
struct RequestPage {
    csrf: String,
    email: String,
    errors: Errors,
}

#[derive(Template)]
#[template(path = "reset_confirm.html")]
struct ConfirmPage {
    csrf: String,
    token: String,
    errors: Errors,
}

/// `GET /ui/reset-password[?token=]`.
pub(crate) async fn page(ctx: Ctx, Query(q): Query<TokenQuery>) -> Response {
    let res = match q.token.filter(|t| !t.is_empty()) {
        Some(token) => render(&ConfirmPage {
            csrf: ctx.csrf.clone(),
            token,
            errors: Errors::none(),
        }),
        None => render(&RequestPage {
            csrf: ctx.csrf.clone(),
            email: String::new(),
            errors: Errors::none(),
        }),
    };
    ctx.finish(res)
}

/// `POST /ui/reset-password {email}`.
pub(crate) async fn request(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let email = form.text("email");
    let answer = ctx
        .api
        .with_token(None)
        .post("/auth/password-reset-request", json!({"email": email}))
        .await;
    if answer.ok() {
        return ctx.finish(render(&Message {
            title: "Check your inbox",
            message: "If this address has an account, a link to choose a new password is on its way. It works once, for one hour.",
            link: "/ui/signin",
            link_text: "Sign in",
        }));
    }
    let page = RequestPage {
        csrf: ctx.csrf.clone(),
        email,
        errors: Errors::from_answer(&answer, &["email"]),
    };
    ctx.finish(render_status(answer.status, &page))
}

/// `POST /ui/reset-password/confirm {token, password}`: on success every
/// session of the account is revoked by the API, this one's cookie too.
pub(crate) async fn confirm(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let token = form.text("token");
    let answer = ctx
        .api
        .with_token(None)
        .post(
            "/auth/password-reset-confirm",
            json!({"token": token, "password": form.text("password")}),
        )
        .await;
    if answer.ok() {
        let mut res = see_other("/ui/signin?notice=password_reset");
        ctx.clear_cookie(&mut res, SESSION_COOKIE);
        return res;
    }
    let page = ConfirmPage {
        csrf: ctx.csrf.clone(),
        token,
        errors: Errors::from_answer(&answer, &["password"]),
    };
    ctx.finish(render_status(answer.status, &page))
}
