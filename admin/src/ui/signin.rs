//! `/ui/signin`: email and password, then (when the account has TOTP on)
//! `/ui/signin/2fa`: an authenticator code or a recovery code.
//!
//! The sign-in challenge the API answers with is kept in the `qz_challenge`
//! cookie (HttpOnly, five minutes, like the challenge), not in the page.

use askama::Template;
use axum::extract::Query;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::layout::Errors;
use super::{render, render_status, see_other, Ctx, Form, CHALLENGE_COOKIE, SESSION_COOKIE};

/// A notice named in the query (never text from the query itself).
#[derive(Deserialize)]
pub(crate) struct NoticeQuery {
    notice: Option<String>,
}

/// The fixed texts a redirect to sign-in may ask for.
fn notice_text(key: Option<&str>) -> Option<&'static str> {
    Some(match key? {
        "verified" => "Your address is verified. Sign in.",
        "password_reset" => {
            "Your password is changed and every session signed out. Sign in with the new one."
        }
        "signed_out" => "You are signed out.",
        "signed_out_all" => "Every session of your account is signed out.",
        "challenge_expired" => {
            "The sign-in took too long or the challenge was used; sign in again."
        }
        _ => return None,
    })
}

#[derive(Template)]
#[template(path = "signin.html")]
struct SigninPage {
    csrf: String,
    email: String,
    notice: Option<&'static str>,
    errors: Errors,
    unverified: bool,
}

#[derive(Template)]
#[template(path = "signin_2fa.html")]
struct ChallengePage {
    csrf: String,
    errors: Errors,
}

/// `GET /ui/signin`; a signed-in browser goes on to its projects.
pub(crate) async fn page(ctx: Ctx, Query(q): Query<NoticeQuery>) -> Response {
    if ctx.token.is_some() {
        if ctx.api.get("/auth/me").await.ok() {
            return see_other("/ui/projects");
        }
        // A cookie the API no longer accepts (expired, revoked): drop it
        // and load again, so the form's CSRF token is anchored on `qz_pre`.
        let mut res = see_other("/ui/signin");
        ctx.clear_cookie(&mut res, SESSION_COOKIE);
        return res;
    }
    let res = render(&SigninPage {
        csrf: ctx.csrf.clone(),
        email: String::new(),
        notice: notice_text(q.notice.as_deref()),
        errors: Errors::none(),
        unverified: false,
    });
    ctx.finish(res)
}

/// `POST /ui/signin {email, password}` → `POST /auth/signin`.
pub(crate) async fn submit(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let email = form.text("email");
    let answer = ctx
        .api
        .with_token(None)
        .post(
            "/auth/signin",
            json!({"email": email, "password": form.text("password")}),
        )
        .await;
    if !answer.ok() {
        let failure = answer.failure();
        let page = SigninPage {
            csrf: ctx.csrf.clone(),
            unverified: failure.code == "email_not_verified",
            errors: Errors::from_failure(&failure, &["email", "password"]),
            email,
            notice: None,
        };
        return ctx.finish(render_status(answer.status, &page));
    }
    if answer.body["twoFactorRequired"].as_bool() == Some(true) {
        let mut res = see_other("/ui/signin/2fa");
        ctx.set_cookie(
            &mut res,
            CHALLENGE_COOKIE,
            &answer.str("challengeToken"),
            Some(300),
        );
        return res;
    }
    signed_in(&ctx, &answer.str("token"))
}

/// The answer to a completed sign-in: the session cookie, then projects.
fn signed_in(ctx: &Ctx, token: &str) -> Response {
    let mut res = see_other("/ui/projects");
    ctx.set_cookie(&mut res, SESSION_COOKIE, token, None);
    ctx.clear_cookie(&mut res, CHALLENGE_COOKIE);
    res
}

/// `GET /ui/signin/2fa`: the second step, while a challenge is pending.
pub(crate) async fn challenge_page(ctx: Ctx) -> Response {
    if ctx.challenge.is_none() {
        return see_other("/ui/signin");
    }
    let page = ChallengePage {
        csrf: ctx.csrf.clone(),
        errors: Errors::none(),
    };
    ctx.finish(render(&page))
}

/// `POST /ui/signin/2fa {code | recoveryCode}` → `POST /auth/2fa/verify`
/// or `POST /auth/2fa/recovery` with the pending challenge.
pub(crate) async fn challenge_submit(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let Some(challenge) = ctx.challenge.clone() else {
        return see_other("/ui/signin?notice=challenge_expired");
    };
    let api = ctx.api.with_token(None);
    let recovery = form.text("recoveryCode");
    let answer = if recovery.trim().is_empty() {
        api.post(
            "/auth/2fa/verify",
            json!({"challengeToken": challenge, "code": form.text("code")}),
        )
        .await
    } else {
        api.post(
            "/auth/2fa/recovery",
            json!({"challengeToken": challenge, "recoveryCode": recovery}),
        )
        .await
    };
    if answer.ok() {
        return signed_in(&ctx, &answer.str("token"));
    }
    let failure = answer.failure();
    if failure.field.as_deref() == Some("challengeToken") {
        let mut res = see_other("/ui/signin?notice=challenge_expired");
        ctx.clear_cookie(&mut res, CHALLENGE_COOKIE);
        return res;
    }
    let page = ChallengePage {
        csrf: ctx.csrf.clone(),
        errors: Errors::from_failure(&failure, &["code", "recoveryCode"]),
    };
    ctx.finish(render_status(answer.status, &page))
}
