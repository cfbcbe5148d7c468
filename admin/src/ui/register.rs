//! `/ui/register`: a new account (`POST /auth/register`), then "check your
//! inbox". The API answers the same for an address that already has an
//! account (it mails that owner instead), and so does this page.

use askama::Template;
use axum::response::Response;
use axum::Extension;
use serde_json::json;

use super::layout::{Errors, Message};
use super::{render, render_status, Ctx, Form};

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    csrf: String,
    email: String,
    errors: Errors,
}

/// `GET /ui/register`.
pub(crate) async fn page(ctx: Ctx) -> Response {
    let page = RegisterPage {
        csrf: ctx.csrf.clone(),
        email: String::new(),
        errors: Errors::none(),
    };
    ctx.finish(render(&page))
}

/// `POST /ui/register {email, password}`.
pub(crate) async fn submit(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let email = form.text("email");
    let answer = ctx
        .api
        .with_token(None)
        .post(
            "/auth/register",
            json!({"email": email, "password": form.text("password")}),
        )
        .await;
    if answer.ok() {
        return ctx.finish(render(&Message {
            title: "Check your inbox",
            message:
                "We mailed a link to confirm your address. Open it within 24 hours, then sign in.",
            link: "/ui/verify-email/resend",
            link_text: "No mail? Send a new link",
        }));
    }
    let page = RegisterPage {
        csrf: ctx.csrf.clone(),
        email,
        errors: Errors::from_answer(&answer, &["email", "password"]),
    };
    ctx.finish(render_status(answer.status, &page))
}
