//! The dashboard (`/ui/…`): security headers on every page, the session
//! cookie's attributes, the CSRF guard in front of every POST, redirects for
//! signed-out browsers, other accounts' projects, the embedded assets, and
//! one API validation message shown at its field.

use serde_json::json;

use crate::auth::verified_user;
use crate::helpers::{request, Backend, TestApp};
use crate::projects::{create_project, id_of};

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// A dashboard answer, body as text.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: http::HeaderMap,
    text: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The value a `Set-Cookie` of this answer gives cookie `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find_map(|c| {
            c.strip_prefix(&format!("{name}="))
                .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
        })
    }

    /// The first form's CSRF token on the page.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find("name=\"_csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field in {}", self.text));
        let rest = &self.text[at + "name=\"_csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    fn assert_security_headers(&self, what: &str) {
        assert_eq!(self.header("content-security-policy"), CSP, "{what}");
        assert_eq!(self.header("x-frame-options"), "DENY", "{what}");
        assert_eq!(self.header("referrer-policy"), "same-origin", "{what}");
        assert_eq!(self.header("x-content-type-options"), "nosniff", "{what}");
    }
}

async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    cookie: &str,
    extra: &[(&str, &str)],
    form: Option<&[(&str, &str)]>,
) -> Page {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(app.url(path));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let body = match form {
        Some(pairs) => {
            req = req.header("content-type", "application/x-www-form-urlencoded");
            let mut s = form_urlencoded_encode(pairs);
            s.shrink_to_fit();
            s
        }
        None => String::new(),
    };
    let res = client
        .request(req.body(Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes();
    Page {
        status,
        headers,
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// `application/x-www-form-urlencoded` (percent-encodes all but unreserved).
fn form_urlencoded_encode(pairs: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn get(app: &TestApp, path: &str, cookie: &str) -> Page {
    send(app, "GET", path, cookie, &[], None).await
}

async fn post(app: &TestApp, path: &str, cookie: &str, form: &[(&str, &str)]) -> Page {
    send(app, "POST", path, cookie, &[], Some(form)).await
}

fn session(token: &str) -> String {
    format!("qz_session={token}")
}

async fn project_count(app: &TestApp, token: &str) -> usize {
    let r = request(
        "GET",
        &app.url("/projects"),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    r.body["projects"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_answers_with_the_security_headers() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    for path in [
        "/ui/signin",
        "/ui/register",
        "/ui/reset-password",
        "/ui/reset-password?token=qz_pr_x",
        "/ui/verify-email?token=qz_ev_x",
        "/ui/verify-email/resend",
    ] {
        let p = get(&app, path, "").await;
        assert_eq!(p.status, 200, "{path}: {}", p.text);
        assert!(p.header("content-type").starts_with("text/html"), "{path}");
        assert_eq!(p.header("cache-control"), "no-store", "{path}");
        p.assert_security_headers(path);
        assert!(
            p.text.contains("name=\"_csrf\""),
            "{path}: a form without csrf"
        );
        assert!(
            !p.text.contains("style=\""),
            "{path}: inline style attributes break the CSP"
        );
    }

    let token = verified_user(&app, &crate::auth::unique_email("ui-headers")).await;
    let project = create_project(&app, &token, "Shop").await;
    let id = id_of(&project);
    let cookie = session(&token);
    for path in [
        "/ui/projects".to_owned(),
        "/ui/account".to_owned(),
        "/ui/billing".to_owned(),
        format!("/ui/projects/{id}/settings"),
        format!("/ui/projects/{id}/secret"),
        format!("/ui/projects/{id}/origin-tokens"),
    ] {
        let p = get(&app, &path, &cookie).await;
        assert_eq!(p.status, 200, "{path}: {}", p.text);
        assert_eq!(p.header("cache-control"), "no-store", "{path}");
        p.assert_security_headers(&path);
        assert!(p.text.contains("Sign out"), "{path}: the frame's sign-out");
        assert!(
            !p.text.contains("style=\""),
            "{path}: inline style attributes break the CSP"
        );
        assert!(
            !p.text.contains("<script>"),
            "{path}: inline script breaks the CSP"
        );
    }
    // The analytics entries are in the nav, pointing at the project.
    let p = get(&app, &format!("/ui/projects/{id}/settings"), &cookie).await;
    assert!(p.text.contains(&format!("/ui/projects/{id}/overview")));
    assert!(p.text.contains("Anti-ATO"));
    // Billing without Stripe says so.
    let p = get(&app, "/ui/billing", &cookie).await;
    assert!(p.text.contains("Billing is not configured"), "{}", p.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_redirects_and_signed_out_browsers_go_to_sign_in() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let p = get(&app, "/", "").await;
    assert_eq!(p.status, 303);
    assert_eq!(p.header("location"), "/ui/");
    let p = get(&app, "/ui/", "").await;
    assert_eq!((p.status, p.header("location")), (303, "/ui/signin"));

    for path in [
        "/ui/projects",
        "/ui/account",
        "/ui/billing",
        "/ui/projects/prj_x/settings",
    ] {
        let p = get(&app, path, "").await;
        assert_eq!(
            (p.status, p.header("location")),
            (303, "/ui/signin"),
            "{path}"
        );
        p.assert_security_headers(path);
        // A token the API no longer accepts: to sign-in, and the cookie dropped.
        let p = get(&app, path, "qz_session=qz_dt_revoked-or-made-up").await;
        assert_eq!(
            (p.status, p.header("location")),
            (303, "/ui/signin"),
            "{path}"
        );
        assert_eq!(
            p.cookie("qz_session").as_deref(),
            Some(""),
            "{path}: {:?}",
            p.set_cookies()
        );
    }
    // Unknown dashboard paths: an HTML 404; unknown API paths keep the JSON one.
    let p = get(&app, "/ui/no-such-page", "").await;
    assert_eq!(p.status, 404);
    assert!(p.header("content-type").starts_with("text/html"));
    let r = request("GET", &app.url("/no-such-route"), &[], None).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (404, Some("route_not_found"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_sets_the_session_cookie_http_only_same_site_strict() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let email = crate::auth::unique_email("ui-cookie");
    verified_user(&app, &email).await;

    let page = get(&app, "/ui/signin", "").await;
    let pre = page.cookie("qz_pre").expect("the first visit gets qz_pre");
    assert!(page
        .set_cookies()
        .iter()
        .any(|c| c == &format!("qz_pre={pre}; HttpOnly; SameSite=Strict; Path=/")));
    let cookie = format!("qz_pre={pre}");
    let csrf = page.csrf();

    // A wrong password: the API's answer on the page, no session.
    let p = post(
        &app,
        "/ui/signin",
        &cookie,
        &[
            ("_csrf", &csrf),
            ("email", &email),
            ("password", "wrong password!"),
        ],
    )
    .await;
    assert_eq!(p.status, 401, "{}", p.text);
    assert!(p.cookie("qz_session").is_none());
    assert!(p.text.contains("class=\"alert error\""), "{}", p.text);

    let p = post(
        &app,
        "/ui/signin",
        &cookie,
        &[
            ("_csrf", &csrf),
            ("email", &email),
            ("password", crate::auth::PASSWORD),
        ],
    )
    .await;
    assert_eq!(
        (p.status, p.header("location")),
        (303, "/ui/projects"),
        "{}",
        p.text
    );
    let token = p.cookie("qz_session").expect("session cookie");
    assert!(token.starts_with("qz_dt_"));
    assert!(
        p.set_cookies()
            .iter()
            .any(|c| c == &format!("qz_session={token}; HttpOnly; SameSite=Strict; Path=/")),
        "{:?}",
        p.set_cookies()
    );

    // Sign-out revokes the token through the API and drops the cookie.
    let cookie = session(&token);
    let csrf = get(&app, "/ui/account", &cookie).await.csrf();
    let p = post(&app, "/ui/signout", &cookie, &[("_csrf", &csrf)]).await;
    assert_eq!(p.status, 303);
    assert_eq!(p.cookie("qz_session").as_deref(), Some(""));
    let me = request(
        "GET",
        &app.url("/auth/me"),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await;
    assert_eq!(me.status, 401, "the token is revoked");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookies_are_secure_when_the_admin_is_served_over_https() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.public_url = "https://admin.example".into();
    })
    .await
    .unwrap();
    let p = get(&app, "/ui/signin", "").await;
    let set = p.set_cookies();
    assert!(
        set.iter()
            .any(|c| c.starts_with("qz_pre=") && c.ends_with("; Secure")),
        "{set:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_right_csrf_token_is_403_and_changes_nothing() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = verified_user(&app, &crate::auth::unique_email("ui-csrf")).await;
    let other = verified_user(&app, &crate::auth::unique_email("ui-csrf-other")).await;
    let cookie = session(&token);
    let good = get(&app, "/ui/projects", &cookie).await.csrf();
    let others = get(&app, "/ui/projects", &session(&other)).await.csrf();
    assert_ne!(good, others, "tokens are per session");

    for (what, form) in [
        ("no token", vec![("name", "Sneaky")]),
        ("a wrong token", vec![("_csrf", "AAAA"), ("name", "Sneaky")]),
        (
            "another session's token",
            vec![("_csrf", others.as_str()), ("name", "Sneaky")],
        ),
    ] {
        let p = post(&app, "/ui/projects", &cookie, &form).await;
        assert_eq!(p.status, 403, "{what}: {}", p.text);
        p.assert_security_headers(what);
    }
    // A page rendered on `qz_pre` (a mail link opened from another site,
    // without the SameSite=Strict session cookie) posts with both cookies.
    let pre = get(&app, "/ui/verify-email/resend", "").await;
    let pre_cookie = format!("qz_pre={}", pre.cookie("qz_pre").unwrap());
    let p = post(
        &app,
        "/ui/verify-email/resend",
        &format!("{pre_cookie}; {cookie}"),
        &[("_csrf", &pre.csrf()), ("email", "someone@example.com")],
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.text);
    // A stale session cookie on the sign-in page: dropped, then a fresh load.
    let p = get(&app, "/ui/signin", "qz_session=qz_dt_stale").await;
    assert_eq!((p.status, p.header("location")), (303, "/ui/signin"));
    assert_eq!(p.cookie("qz_session").as_deref(), Some(""));
    // Without any cookie, the public forms refuse too (login CSRF).
    let p = post(
        &app,
        "/ui/signin",
        "",
        &[
            ("_csrf", &good),
            ("email", "a@example.com"),
            ("password", "x"),
        ],
    )
    .await;
    assert_eq!(p.status, 403);
    // The sign-out form is guarded: the session is still alive after a forged one.
    let p = post(&app, "/ui/signout", &cookie, &[]).await;
    assert_eq!(p.status, 403);
    assert_eq!(project_count(&app, &token).await, 0, "nothing was created");

    // The right token, as a form field and as htmx's header, is accepted.
    let p = post(
        &app,
        "/ui/projects",
        &cookie,
        &[("_csrf", &good), ("name", "Real")],
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert!(p.text.contains("qz_sk_"), "the new secret is shown once");
    let p = send(
        &app,
        "POST",
        "/ui/projects",
        &cookie,
        &[("x-csrf-token", &good)],
        Some(&[("name", "Via htmx")]),
    )
    .await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(project_count(&app, &token).await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_quota_refusal_is_the_apis_message_on_the_projects_page() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = verified_user(&app, &crate::auth::unique_email("ui-quota")).await;
    let cookie = session(&token);
    let csrf = get(&app, "/ui/projects", &cookie).await.csrf();
    let mut refused = None;
    for n in 0..10 {
        let name = format!("Project {n}");
        let p = post(
            &app,
            "/ui/projects",
            &cookie,
            &[("_csrf", &csrf), ("name", &name)],
        )
        .await;
        if p.status != 200 {
            refused = Some(p);
            break;
        }
    }
    let p = refused.expect("the free plan's quota refuses a project");
    let api = request(
        "POST",
        &app.url("/projects"),
        &[("authorization", &format!("Bearer {token}"))],
        Some(r#"{"name": "One more"}"#),
    )
    .await;
    assert_eq!(p.status, api.status, "the page answers the API's status");
    let message = api.body["error"]["message"].as_str().unwrap();
    assert!(
        p.text.contains(&askama_escape(message)),
        "the API's message {message:?} on the page: {}",
        p.text
    );
    assert!(p.text.contains("class=\"alert error\""));
    app.stop().await;
}

/// HTML-escapes like askama does (`&`, `<`, `>`, `"`, `'`).
fn askama_escape(s: &str) -> String {
    s.replace('&', "&#38;")
        .replace('<', "&#60;")
        .replace('>', "&#62;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_accounts_project_is_404() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let owner = verified_user(&app, &crate::auth::unique_email("ui-owner")).await;
    let id = id_of(&create_project(&app, &owner, "Owned").await);
    let stranger = verified_user(&app, &crate::auth::unique_email("ui-stranger")).await;
    let cookie = session(&stranger);
    for section in ["settings", "secret", "origin-tokens"] {
        let p = get(&app, &format!("/ui/projects/{id}/{section}"), &cookie).await;
        assert_eq!(p.status, 404, "{section}: {}", p.text);
        assert!(!p.text.contains("Owned"), "{section}: the name leaked");
    }
    let csrf = get(&app, "/ui/projects", &cookie).await.csrf();
    let p = post(
        &app,
        &format!("/ui/projects/{id}/settings/json"),
        &cookie,
        &[("_csrf", &csrf), ("document", r#"{"testMode": true}"#)],
    )
    .await;
    assert_eq!(p.status, 404, "{}", p.text);
    let settings = request(
        "GET",
        &app.url(&format!("/projects/settings?projectId={id}")),
        &[("authorization", &format!("Bearer {owner}"))],
        None,
    )
    .await;
    assert_eq!(
        settings.body["testMode"],
        json!(false),
        "unchanged: {settings:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_error_is_the_apis_message_at_its_field() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let token = verified_user(&app, &crate::auth::unique_email("ui-settings")).await;
    let id = id_of(&create_project(&app, &token, "Shop").await);
    let cookie = session(&token);
    let page = get(&app, &format!("/ui/projects/{id}/settings"), &cookie).await;
    let csrf = page.csrf();

    // The JSON editor: the API's message, naming the member.
    let p = post(
        &app,
        &format!("/ui/projects/{id}/settings/json"),
        &cookie,
        &[
            ("_csrf", &csrf),
            ("document", r#"{"sessionTtlSeconds": 5}"#),
        ],
    )
    .await;
    assert_eq!(p.status, 422, "{}", p.text);
    assert!(p.text.contains("id=\"document-error\""), "{}", p.text);
    assert!(
        p.text
            .contains("sessionTtlSeconds must be between 60 and 7776000"),
        "{}",
        p.text
    );
    let p = post(
        &app,
        &format!("/ui/projects/{id}/settings/json"),
        &cookie,
        &[("_csrf", &csrf), ("document", "{not json")],
    )
    .await;
    assert_eq!(p.status, 422);
    assert!(p.text.contains("not valid JSON"), "{}", p.text);

    // The form: only the changed input is sent here; every other member
    // keeps its value because the page fills in the current document.
    let p = post(
        &app,
        &format!("/ui/projects/{id}/settings"),
        &cookie,
        &[("_csrf", &csrf), ("sessionTtlSeconds", "5")],
    )
    .await;
    assert_eq!(p.status, 422, "{}", p.text);

    // A valid change is saved and the page says so.
    let p = post(
        &app,
        &format!("/ui/projects/{id}/settings/json"),
        &cookie,
        &[
            ("_csrf", &csrf),
            ("document", r#"{"sessionTtlSeconds": 3600}"#),
        ],
    )
    .await;
    assert_eq!(
        (p.status, p.header("location")),
        (303, format!("/ui/projects/{id}/settings?saved=1").as_str())
    );
    let p = get(
        &app,
        &format!("/ui/projects/{id}/settings?saved=1"),
        &cookie,
    )
    .await;
    assert!(p.text.contains("value=\"3600\""), "{}", p.text);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_embedded_with_types_and_cache_policy() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let p = get(&app, "/ui/assets/vendor/htmx-2.0.11.min.js", "").await;
    assert_eq!(p.status, 200);
    assert_eq!(p.header("content-type"), "text/javascript; charset=utf-8");
    assert_eq!(
        p.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(p.header("x-content-type-options"), "nosniff");
    let p = get(&app, "/ui/assets/vendor/uPlot-1.6.32.min.css", "").await;
    assert_eq!(
        (p.status, p.header("content-type")),
        (200, "text/css; charset=utf-8")
    );

    let p = get(&app, "/ui/assets/qyzar.css", "").await;
    assert_eq!(p.status, 200);
    assert_eq!(p.header("cache-control"), "no-cache");
    let etag = p.header("etag").to_owned();
    assert!(etag.starts_with('"'));
    let p = send(
        &app,
        "GET",
        "/ui/assets/qyzar.css",
        "",
        &[("if-none-match", &etag)],
        None,
    )
    .await;
    assert_eq!(p.status, 304);

    let p = get(&app, "/ui/assets/../Cargo.toml", "").await;
    assert_eq!(p.status, 404);
    let p = get(&app, "/ui/assets/vendor/missing.js", "").await;
    assert_eq!(p.status, 404);
    app.stop().await;
}
