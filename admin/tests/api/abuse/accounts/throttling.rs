//! Sign-in back-off and client addresses under attack, and the traffic
//! intake's key check before its body.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::auth::{unique_email, verified_user, PASSWORD};
use crate::helpers::{request, Backend, TestApp, TestResponse};

on_both_stores!(
    a_stranger_cannot_lock_the_owner_out,
    a_flood_of_random_emails_does_not_reset_the_victims_counter,
    forwarded_for_is_ignored_from_unconfigured_peers,
);

/// An admin behind a "proxy" on loopback that it is told to trust, so each
/// test request can pose as a client through `X-Forwarded-For`.
async fn behind_proxy(backend: Backend) -> Option<TestApp> {
    TestApp::spawn_with(backend, |c| {
        c.trusted_proxies =
            qyzar_admin::throttle::client_ip::parse_list("127.0.0.0/8, ::1").unwrap();
    })
    .await
}

async fn signin_from(app: &TestApp, client: &str, email: &str, password: &str) -> TestResponse {
    let body = json!({"email": email, "password": password}).to_string();
    request(
        "POST",
        &app.url("/auth/signin"),
        &[("x-forwarded-for", client)],
        Some(&body),
    )
    .await
}

fn retry_after(r: &TestResponse) -> u64 {
    r.headers["retry-after"].to_str().unwrap().parse().unwrap()
}

async fn a_stranger_cannot_lock_the_owner_out(backend: Backend) {
    let Some(app) = behind_proxy(backend).await else {
        return;
    };
    let email = unique_email("victim");
    verified_user(&app, &email).await;
    for i in 0..10 {
        let r = signin_from(&app, "198.51.100.66", &email, &format!("guess {i:02}xxxx")).await;
        assert_eq!(r.status, 401, "{:?}", r.body);
    }
    let r = signin_from(&app, "198.51.100.66", &email, "guess 10xxxx").await;
    assert_eq!(r.status, 429, "the guessing client waits");
    assert!(retry_after(&r) > 60, "and long: {}", retry_after(&r));
    // The owner, from their own network, gets in at the first try.
    let r = signin_from(&app, "203.0.113.5", &email, PASSWORD).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(r.body["token"].is_string());
    // A typo there costs a short wait, not a lock.
    let r = signin_from(&app, "203.0.113.9", &email, "a typo in it").await;
    assert_eq!(r.status, 401);
    let r = signin_from(&app, "203.0.113.9", &email, PASSWORD).await;
    if r.status == 429 {
        assert!(retry_after(&r) <= 5, "{}", retry_after(&r));
    } else {
        assert_eq!(r.status, 200, "{:?}", r.body);
    }
    // The attacker is still waiting.
    assert_eq!(
        signin_from(&app, "198.51.100.66", &email, PASSWORD)
            .await
            .status,
        429
    );
    app.stop().await;
}

async fn a_flood_of_random_emails_does_not_reset_the_victims_counter(backend: Backend) {
    let Some(app) = behind_proxy(backend).await else {
        return;
    };
    let email = unique_email("flooded");
    verified_user(&app, &email).await;
    for i in 0..10 {
        let r = signin_from(&app, "198.51.100.77", &email, &format!("guess {i:02}xxxx")).await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(
        signin_from(&app, "198.51.100.77", &email, "guess xxxxxx")
            .await
            .status,
        429
    );
    // Far more random addresses than the limiter tracks, each failing once
    // (straight into the limiter: the same state sign-in uses, without the
    // argon2 work of as many real requests).
    let throttle = &app.state.throttle;
    let spray = 3 * qyzar_admin::throttle::signin::MAX_PAIRS
        .max(qyzar_admin::throttle::MAX_KEYS_PER_POLICY);
    for i in 0..spray {
        let rnd = format!("rnd{i}@flood.example");
        let _ = throttle.signin_attempt(&rnd, Some("198.51.100.77"));
        let _ = throttle.hit(&[(&qyzar_admin::throttle::SIGNIN_PER_IP, rnd.as_str())]);
    }
    let r = signin_from(&app, "198.51.100.77", &email, "guess after flood").await;
    assert_eq!(r.status, 429, "the victim's counter survived: {:?}", r.body);
    assert!(retry_after(&r) > 60, "{}", retry_after(&r));
    // The email is still under attack too: a new client gets one try, then waits.
    assert_eq!(
        signin_from(&app, "198.51.100.78", &email, "one more guess")
            .await
            .status,
        401
    );
    assert_eq!(
        signin_from(&app, "198.51.100.78", &email, "and another one")
            .await
            .status,
        429
    );
    app.stop().await;
}

async fn forwarded_for_is_ignored_from_unconfigured_peers(backend: Backend) {
    // Default configuration: no trusted proxy, although the peer is loopback.
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    for i in 0..20 {
        let xff = format!("203.0.113.{i}");
        let r = request(
            "POST",
            &app.url("/auth/verify-email"),
            &[("x-forwarded-for", &xff)],
            Some(r#"{"token":"qz_ev_guess"}"#),
        )
        .await;
        assert_eq!(r.status, 401);
    }
    let r = request(
        "POST",
        &app.url("/auth/verify-email"),
        &[("x-forwarded-for", "198.51.100.200")],
        Some(r#"{"token":"qz_ev_guess"}"#),
    )
    .await;
    assert_eq!(r.status, 429, "a new X-Forwarded-For is not a new client");
    // Sign-in guesses cannot rotate past the back-off either.
    let email = unique_email("rotate");
    for i in 0..10 {
        let r = signin_from(&app, &format!("192.0.2.{i}"), &email, "wrong password").await;
        assert_eq!(r.status, 401);
    }
    assert_eq!(
        signin_from(&app, "192.0.2.99", &email, "wrong password")
            .await
            .status,
        429
    );
    app.stop().await;
}

/// Sends `head` on a raw connection (no body follows) and answers the status
/// code of the first response line. A handler that waited for the announced
/// body would never answer; the timeout only turns that hang into a failure.
async fn status_without_body(app: &TestApp, head: &str) -> u16 {
    let mut conn = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") {
            let n = conn.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("an answer without the body being sent");
    let line = String::from_utf8_lossy(&buf);
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_traffic_checks_the_key_before_reading_the_body() {
    let Some(app) = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.push_key = Some("the-right-push-key-0123456789abcdef".into());
    })
    .await
    else {
        return;
    };
    let head = |auth: &str, len: &str| {
        format!(
            "POST /internal/traffic HTTP/1.1\r\nHost: admin\r\nContent-Type: application/json\r\n{auth}Content-Length: {len}\r\n\r\n"
        )
    };
    // A body within the limit that never comes, and one far over it.
    for len in ["1048576", "1099511627776"] {
        assert_eq!(
            status_without_body(&app, &head("", len)).await,
            401,
            "no key, {len}"
        );
        let wrong = "Authorization: Bearer not-the-key\r\n";
        assert_eq!(
            status_without_body(&app, &head(wrong, len)).await,
            401,
            "wrong key, {len}"
        );
    }
    // With the key, an announced body over 2 MiB is refused at once too.
    let right = "Authorization: Bearer the-right-push-key-0123456789abcdef\r\n";
    assert_eq!(
        status_without_body(&app, &head(right, "1099511627776")).await,
        413
    );
    app.stop().await;
}
