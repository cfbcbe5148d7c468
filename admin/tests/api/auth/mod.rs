//! `/auth/*` on a running admin: each flow on SQLite and on PostgreSQL, plus
//! one delivery through a real SMTP server. Helpers shared by the flows live
//! here; one file per area.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::Row as _;

use crate::helpers::{request, TestApp, TestResponse};

/// One `#[tokio::test]` per flow and database, named `<store>::<flow>`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Backend::Sqlite).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Backend::Postgres).await })*
        }
    };
}

mod limits;
mod passwords;
mod signup;
mod smtp;
mod two_factor;

pub const PASSWORD: &str = "correct horse battery";

pub fn unique_email(tag: &str) -> String {
    format!(
        "{tag}-{}@example.com",
        qyzar_shared::testing::unique_name("")
    )
}

pub async fn post(app: &TestApp, path: &str, body: Value, token: Option<&str>) -> TestResponse {
    send(app, "POST", path, body, token).await
}

pub async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    body: Value,
    token: Option<&str>,
) -> TestResponse {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    request(method, &app.url(path), &headers, Some(&body.to_string())).await
}

pub async fn me(app: &TestApp, token: &str) -> TestResponse {
    let auth = format!("Bearer {token}");
    request(
        "GET",
        &app.url("/auth/me"),
        &[("authorization", &auth)],
        None,
    )
    .await
}

/// Every `.eml` under `dir` (recursively: a maildir keeps them in `new/`).
pub fn mails_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            // A maildir's tmp/ holds messages still being written.
            if p.file_name().is_some_and(|n| n != "tmp") {
                out.extend(mails_in(&p));
            }
        } else if !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            if let Ok(text) = std::fs::read_to_string(&p) {
                out.push(text);
            }
        }
    }
    out
}

/// The mails to `to` whose text holds `needle`, waiting up to 10 s for at
/// least `count` of them (mail goes out from a background task).
pub async fn wait_for_mails(dir: &Path, to: &str, needle: &str, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let found: Vec<String> = mails_in(dir)
            .into_iter()
            .filter(|m| {
                m.lines().any(|l| l.starts_with("To:") && l.contains(to)) && m.contains(needle)
            })
            .collect();
        if found.len() >= count {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no mail to {to} with {needle:?} in {}", dir.display());
}

/// The token of the link `…{path}?token=…` in a mail.
pub fn link_token(mail: &str, path: &str) -> String {
    let start = mail
        .find(&format!("{path}?token="))
        .unwrap_or_else(|| panic!("no {path} link in:\n{mail}"))
        + path.len()
        + 7;
    mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect()
}

pub fn outbox(app: &TestApp) -> &Path {
    &app.state.config.outbox_dir
}

pub async fn register(app: &TestApp, email: &str, password: &str) -> TestResponse {
    post(
        app,
        "/auth/register",
        json!({"email": email, "password": password}),
        None,
    )
    .await
}

pub async fn signin(app: &TestApp, email: &str, password: &str) -> TestResponse {
    post(
        app,
        "/auth/signin",
        json!({"email": email, "password": password}),
        None,
    )
    .await
}

/// Registers `email`, opens the mailed link, and answers a dashboard token.
pub async fn verified_user(app: &TestApp, email: &str) -> String {
    assert_eq!(register(app, email, PASSWORD).await.status, 201);
    let mail = wait_for_mails(outbox(app), email, "/verify-email?token=", 1)
        .await
        .remove(0);
    let r = post(
        app,
        "/auth/verify-email",
        json!({"token": link_token(&mail, "/verify-email")}),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = signin(app, email, PASSWORD).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    r.body["token"].as_str().unwrap().to_owned()
}

pub fn totp_code(secret_b32: &str, at_secs: u64) -> String {
    let seed = totp_rs::Secret::Encoded(secret_b32.to_owned())
        .to_bytes()
        .unwrap();
    totp_rs::TOTP::new(totp_rs::Algorithm::SHA1, 6, 1, 30, seed)
        .unwrap()
        .generate(at_secs)
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Turns TOTP on for the holder of `token` (whose password is
/// [`PASSWORD`]); answers the base32 secret and the recovery codes. The
/// enrolment spends the code of the current step.
pub async fn enrol_two_factor(app: &TestApp, token: &str) -> (String, Vec<String>) {
    let r = post(
        app,
        "/auth/2fa/create",
        json!({"password": PASSWORD}),
        Some(token),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let secret = r.body["secret"].as_str().unwrap().to_owned();
    let codes: Vec<String> = r.body["recoveryCodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let r = post(
        app,
        "/auth/2fa/verify",
        json!({"code": totp_code(&secret, now_secs())}),
        Some(token),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({"twoFactorEnabled": true}));
    (secret, codes)
}

pub async fn challenge(app: &TestApp, email: &str) -> String {
    let r = signin(app, email, PASSWORD).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["twoFactorRequired"], true);
    assert!(
        r.body.get("token").is_none(),
        "no dashboard token before the second factor"
    );
    r.body["challengeToken"].as_str().unwrap().to_owned()
}

pub async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query(sql)
        .fetch_one(app.state.db.pool())
        .await
        .unwrap()
        .get::<i64, _>(0)
}
