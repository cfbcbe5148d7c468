//! `/ui/account`: two-factor authentication on and off, the password,
//! signing out (this session or all of them).
//!
//! Turning TOTP on is the API's two steps: `POST /auth/2fa/create
//! {password}` answers the seed (shown as the `otpauth://` URL and the
//! secret text to type into an app) and the recovery codes, once; `POST
//! /auth/2fa/verify {code}` proves the app holds the seed and turns it on.

use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;
use serde_json::json;

use super::layout::{Errors, Shell};
use super::{render_status, see_other, Answer, Ctx, Form, SESSION_COOKIE};

/// The enrolment the API answered, shown once.
struct Enrolment {
    secret: String,
    otpauth_uri: String,
    recovery_codes: Vec<String>,
}

/// Which form an error belongs to.
#[derive(PartialEq, Eq, Clone, Copy)]
enum Section {
    None,
    TwoFactor,
    Password,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    shell: Shell,
    notice: Option<&'static str>,
    enrolment: Option<Enrolment>,
    two_factor_errors: Errors,
    password_errors: Errors,
}

/// `?notice=` after a change.
#[derive(Deserialize)]
pub(crate) struct NoticeQuery {
    notice: Option<String>,
}

fn notice_text(key: Option<&str>) -> Option<&'static str> {
    Some(match key? {
        "2fa_on" => "Two-factor authentication is on. Your other sessions were signed out.",
        "2fa_off" => "Two-factor authentication is off.",
        "password" => "Password changed. Your other sessions were signed out.",
        _ => return None,
    })
}

async fn show(
    ctx: &Ctx,
    status: StatusCode,
    notice: Option<&'static str>,
    enrolment: Option<Enrolment>,
    section: Section,
    errors: Errors,
) -> Response {
    let shell = match ctx.shell("account", None).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let (two_factor_errors, password_errors) = match section {
        Section::TwoFactor => (errors, Errors::none()),
        Section::Password => (Errors::none(), errors),
        Section::None => (Errors::none(), Errors::none()),
    };
    render_status(
        status,
        &AccountPage {
            shell,
            notice,
            enrolment,
            two_factor_errors,
            password_errors,
        },
    )
}

/// `GET /ui/account`.
pub(crate) async fn page(ctx: Ctx, Query(q): Query<NoticeQuery>) -> Response {
    show(
        &ctx,
        StatusCode::OK,
        notice_text(q.notice.as_deref()),
        None,
        Section::None,
        Errors::none(),
    )
    .await
}

fn failed(answer: &Answer) -> Option<Response> {
    (answer.status == StatusCode::UNAUTHORIZED && answer.failure().field.is_none())
        .then(|| see_other("/ui/signin"))
}

/// `POST /ui/account/2fa/create {password}`: shows the seed and codes.
pub(crate) async fn two_factor_create(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let mut body = json!({"password": form.text("password")});
    let code = form.text("code");
    if !code.trim().is_empty() {
        body["code"] = code.into();
    }
    let answer = ctx.api.post("/auth/2fa/create", body).await;
    if let Some(res) = failed(&answer) {
        return res;
    }
    if !answer.ok() {
        let errors = Errors::from_answer(&answer, &["password", "code"]);
        return show(&ctx, answer.status, None, None, Section::TwoFactor, errors).await;
    }
    let enrolment = Enrolment {
        secret: answer.str("secret"),
        otpauth_uri: answer.str("otpauthUri"),
        recovery_codes: answer.body["recoveryCodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    show(
        &ctx,
        StatusCode::OK,
        None,
        Some(enrolment),
        Section::None,
        Errors::none(),
    )
    .await
}

/// `POST /ui/account/2fa/verify {code}`: confirms the enrolment.
pub(crate) async fn two_factor_verify(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let answer = ctx
        .api
        .post("/auth/2fa/verify", json!({"code": form.text("code")}))
        .await;
    if let Some(res) = failed(&answer) {
        return res;
    }
    if answer.ok() {
        return see_other("/ui/account?notice=2fa_on");
    }
    let failure = answer.failure();
    if failure.field.as_deref() == Some("code") {
        // A mistyped code: the enrolment is still pending, so show its
        // seed and codes again (the user's own, echoed from the form) with
        // the API's message at the code.
        let enrolment = Enrolment {
            secret: form.text("secret"),
            otpauth_uri: form.text("otpauthUri"),
            recovery_codes: form
                .text("recoveryCodes")
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        };
        let errors = Errors::at_field("confirmCode", failure.message);
        return show(
            &ctx,
            answer.status,
            None,
            Some(enrolment),
            Section::TwoFactor,
            errors,
        )
        .await;
    }
    let errors = Errors::from_failure(&failure, &[]);
    show(&ctx, answer.status, None, None, Section::TwoFactor, errors).await
}

/// `POST /ui/account/2fa/disable {password, code | recoveryCode}`.
pub(crate) async fn two_factor_disable(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let mut body = json!({"password": form.text("password")});
    let recovery = form.text("recoveryCode");
    if recovery.trim().is_empty() {
        body["code"] = form.text("code").into();
    } else {
        body["recoveryCode"] = recovery.into();
    }
    let answer = ctx.api.post("/auth/2fa/disable", body).await;
    if let Some(res) = failed(&answer) {
        return res;
    }
    if answer.ok() {
        return see_other("/ui/account?notice=2fa_off");
    }
    let errors = Errors::from_answer(&answer, &["password", "code", "recoveryCode"]);
    show(&ctx, answer.status, None, None, Section::TwoFactor, errors).await
}

/// `POST /ui/account/password {currentPassword, newPassword}`.
pub(crate) async fn password(ctx: Ctx, Extension(form): Extension<Form>) -> Response {
    let answer = ctx
        .api
        .patch(
            "/auth/password",
            json!({
                "currentPassword": form.text("currentPassword"),
                "newPassword": form.text("newPassword"),
            }),
        )
        .await;
    if let Some(res) = failed(&answer) {
        return res;
    }
    if answer.ok() {
        return see_other("/ui/account?notice=password");
    }
    let errors = Errors::from_answer(&answer, &["currentPassword", "newPassword"]);
    show(&ctx, answer.status, None, None, Section::Password, errors).await
}

/// Signs out through `path` (`/auth/signout` or `/auth/signout-all`) and
/// drops the cookie whatever the API answered: a token it no longer
/// accepts is as good as gone.
async fn sign_out(ctx: &Ctx, path: &str, notice: &str) -> Response {
    if ctx.token.is_some() {
        let answer = ctx.api.post(path, json!({})).await;
        if !answer.ok() && answer.status != StatusCode::UNAUTHORIZED {
            tracing::warn!(status = %answer.status, "dashboard: sign-out not confirmed by the api");
        }
    }
    let mut res = see_other(&format!("/ui/signin?notice={notice}"));
    ctx.clear_cookie(&mut res, SESSION_COOKIE);
    res
}

/// `POST /ui/signout`.
pub(crate) async fn signout(ctx: Ctx, Extension(_form): Extension<Form>) -> Response {
    sign_out(&ctx, "/auth/signout", "signed_out").await
}

/// `POST /ui/signout-all`.
pub(crate) async fn signout_all(ctx: Ctx, Extension(_form): Extension<Form>) -> Response {
    sign_out(&ctx, "/auth/signout-all", "signed_out_all").await
}
