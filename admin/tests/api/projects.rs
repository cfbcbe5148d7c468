//! Projects and everything hanging off them, on a running admin: CRUD with
//! quota and paging and settings merge patches here; secret reveal and
//! rotation, origin tokens, opt-out links, test captcha tokens, extra
//! metadata and the dry-run rate-limit check in the submodules. Every
//! dashboard route is also called by a second account, which must get
//! `404` for the first account's project. The helpers here (signing up
//! through the auth routes, creating projects) serve all of them.

mod devices;
mod extra_metadata;
mod opt_out;
mod origin_tokens;
mod rate_limit;
mod secret;
pub mod test_captcha;

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{request, Backend, TestApp, TestResponse};
use crate::push::snapshot_project;

/// A signed-in dashboard user.
pub struct User {
    pub email: String,
    pub token: String,
}

impl User {
    pub fn auth(&self) -> String {
        format!("Bearer {}", self.token)
    }

    pub async fn get(&self, app: &TestApp, path: &str) -> TestResponse {
        request(
            "GET",
            &app.url(path),
            &[("authorization", &self.auth())],
            None,
        )
        .await
    }

    pub async fn send(&self, app: &TestApp, method: &str, path: &str, body: Value) -> TestResponse {
        request(
            method,
            &app.url(path),
            &[("authorization", &self.auth())],
            Some(&body.to_string()),
        )
        .await
    }
}

pub const PASSWORD: &str = "correct horse battery staple";

/// Registers `email`, verifies it with the mailed link (read from the
/// outbox) and signs in, through the auth routes.
pub async fn sign_up(app: &TestApp, email: &str) -> User {
    let body = json!({"email": email, "password": PASSWORD}).to_string();
    let r = request("POST", &app.url("/auth/register"), &[], Some(&body)).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let token = verification_token(app, email).await;
    let r = request(
        "POST",
        &app.url("/auth/verify-email"),
        &[],
        Some(&json!({"token": token}).to_string()),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = request("POST", &app.url("/auth/signin"), &[], Some(&body)).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    User {
        email: email.to_owned(),
        token: r.body["token"]
            .as_str()
            .expect("a dashboard token")
            .to_owned(),
    }
}

/// Undoes quoted-printable (soft line breaks, `=XX` escapes) on a raw
/// message; a 7-bit message passes through unchanged apart from literal
/// `=XX` sequences, which base64url tokens never contain.
fn quoted_printable_decode(raw: &str) -> String {
    let unfolded = raw.replace("=\r\n", "").replace("=\n", "");
    let bytes = unfolded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The verify-email token mailed to `email`: the outbox is written in the
/// background, so poll it for a while.
async fn verification_token(app: &TestApp, email: &str) -> String {
    let outbox = app.dir.path().join("outbox");
    for _ in 0..250 {
        if let Ok(entries) = std::fs::read_dir(&outbox) {
            for entry in entries.flatten() {
                let raw = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let text = quoted_printable_decode(&raw);
                if !text.contains(email) {
                    continue;
                }
                if let Some(rest) = text.split("verify-email?token=").nth(1) {
                    return rest
                        .split(|c: char| c.is_whitespace())
                        .next()
                        .unwrap()
                        .to_owned();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no verification mail for {email} in {}", outbox.display());
}

/// Creates a project; answers the `201` body.
pub async fn create_project(app: &TestApp, token: &str, name: &str) -> Value {
    let r = request(
        "POST",
        &app.url("/projects"),
        &[("authorization", &format!("Bearer {token}"))],
        Some(&json!({"name": name}).to_string()),
    )
    .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body
}

pub fn id_of(project: &Value) -> String {
    project["projectId"].as_str().unwrap().to_owned()
}

/// Asserts a `404 project_not_found`.
#[track_caller]
pub fn not_found(r: &TestResponse) {
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.body["error"]["code"], "project_not_found", "{:?}", r.body);
}

async fn crud_quota_and_isolation(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;

    // Create: the secret is shown once, the settings are the defaults.
    let shop = create_project(&app, &ann.token, "  Shop  ").await;
    assert_eq!(shop["name"], "Shop");
    assert!(shop["projectId"].as_str().unwrap().starts_with("prj_"));
    assert!(shop["secret"].as_str().unwrap().starts_with("qz_sk_"));
    assert_eq!(shop["settings"]["sessionTtlSeconds"], 604_800);
    assert!(shop["createdAt"].as_str().unwrap().ends_with('Z'));
    let id = id_of(&shop);
    for (body, field) in [
        (json!({"name": " "}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({}), "name"),
    ] {
        let r = ann.send(&app, "POST", "/projects", body).await;
        assert!(r.status == 422 || r.status == 400, "{:?}", r.body);
        assert_eq!(r.body["error"]["field"], field);
    }
    let r = request("POST", &app.url("/projects"), &[], Some(r#"{"name":"x"}"#)).await;
    assert_eq!(r.status, 401);

    // Quota: the free plan allows three.
    create_project(&app, &ann.token, "Blog").await;
    create_project(&app, &ann.token, "Docs").await;
    let r = ann
        .send(&app, "POST", "/projects", json!({"name": "Fourth"}))
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["code"], "quota_exceeded");

    // List: newest first, cursor-paged.
    let r = ann.get(&app, "/projects?limit=2").await;
    assert_eq!(r.status, 200);
    let names: Vec<_> = r.body["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(names, [json!("Docs"), json!("Blog")]);
    let cursor = r.body["nextCursor"].as_str().unwrap().to_owned();
    let r = ann
        .get(&app, &format!("/projects?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(r.body["projects"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["projects"][0]["projectId"], id.as_str());
    assert_eq!(r.body["nextCursor"], Value::Null);
    for bad in ["limit=0", "limit=101", "cursor=bm9wZQ"] {
        let r = ann.get(&app, &format!("/projects?{bad}")).await;
        assert_eq!(r.status, 422, "{bad}: {:?}", r.body);
    }
    assert_eq!(
        ann.get(&app, "/projects").await.body["projects"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Rename and detail.
    let r = ann
        .send(
            &app,
            "PATCH",
            "/projects",
            json!({"projectId": id, "name": "Shop EU"}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["name"], "Shop EU");
    let r = ann
        .get(&app, &format!("/projects/detail?projectId={id}"))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["name"], "Shop EU");
    assert_eq!(r.body["settings"]["testMode"], false);
    assert!(r.body["configVersion"].as_u64().unwrap() >= 1);
    assert!(r.body.get("secretRotatedAt").is_none());
    assert!(r.body.get("secret").is_none(), "the secret is never listed");
    let r = ann.get(&app, "/projects/detail?projectId=not-an-id").await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], "projectId");

    // Bob sees none of it: every route answers 404 for Ann's project.
    assert_eq!(bob.get(&app, "/projects").await.body["projects"], json!([]));
    not_found(
        &bob.get(&app, &format!("/projects/detail?projectId={id}"))
            .await,
    );
    not_found(
        &bob.send(
            &app,
            "PATCH",
            "/projects",
            json!({"projectId": id, "name": "Mine"}),
        )
        .await,
    );
    not_found(
        &bob.send(
            &app,
            "DELETE",
            &format!("/projects?projectId={id}"),
            json!({}),
        )
        .await,
    );
    not_found(
        &bob.send(&app, "DELETE", "/projects", json!({"projectId": id}))
            .await,
    );
    assert_eq!(
        ann.get(&app, &format!("/projects/detail?projectId={id}"))
            .await
            .body["name"],
        "Shop EU"
    );

    // Delete, by query and by body; the slot is free again.
    let r = request(
        "DELETE",
        &app.url(&format!("/projects?projectId={id}")),
        &[("authorization", &ann.auth())],
        None,
    )
    .await;
    assert_eq!(r.status, 204);
    not_found(
        &ann.get(&app, &format!("/projects/detail?projectId={id}"))
            .await,
    );
    let blog = ann.get(&app, "/projects").await.body["projects"][1]["projectId"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = ann
        .send(&app, "DELETE", "/projects", json!({"projectId": blog}))
        .await;
    assert_eq!(r.status, 204);
    assert!(snapshot_project(&app, &id).is_none() && snapshot_project(&app, &blog).is_none());
    let r = request(
        "DELETE",
        &app.url("/projects"),
        &[("authorization", &ann.auth())],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["error"]["field"], "projectId");
    create_project(&app, &ann.token, "Again").await;
    app.stop().await;
}

#[tokio::test]
async fn crud_quota_and_isolation_on_sqlite() {
    crud_quota_and_isolation(Backend::Sqlite).await;
}

#[tokio::test]
async fn crud_quota_and_isolation_on_postgres() {
    crud_quota_and_isolation(Backend::Postgres).await;
}

async fn settings_merge_patch(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let ann = sign_up(&app, "ann@example.com").await;
    let bob = sign_up(&app, "bob@example.com").await;
    let id = id_of(&create_project(&app, &ann.token, "Shop").await);
    let path = format!("/projects/settings?projectId={id}");
    let before = ann.get(&app, &path).await;
    assert_eq!(before.status, 200);
    assert_eq!(before.body["rateLimit"]["metadata"]["email"]["limit"], 5);

    // A merge patch changes what it names and keeps the rest.
    let r = ann
        .send(&app, "PATCH", "/projects/settings", json!({"projectId": id, "settings": {"rateLimit": {"ip": {"limit": 10}}, "allowedOrigins": ["https://shop.example"]}}))
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["rateLimit"]["ip"],
        json!({"limit": 10, "windowSeconds": 60})
    );
    assert_eq!(r.body["rateLimit"]["metadata"]["email"]["limit"], 5);
    assert_eq!(r.body["allowedOrigins"], json!(["https://shop.example"]));
    // null removes a member (here: a metadata bucket).
    let r = ann.send(&app, "PATCH", "/projects/settings", json!({"projectId": id, "settings": {"rateLimit": {"metadata": {"email": null, "userId": {"limit": 9, "windowSeconds": 60}}}}})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["rateLimit"]["metadata"],
        json!({"userId": {"limit": 9, "windowSeconds": 60}})
    );
    let saved = ann.get(&app, &path).await.body;
    assert_eq!(saved, r.body);
    // The snapshot carries the new settings.
    let snap = snapshot_project(&app, &id).unwrap();
    assert_eq!(snap.settings.rate_limit.ip.limit, 10);
    assert!(
        snap.ed25519.is_empty(),
        "HS256 projects carry no Ed25519 key"
    );
    // Choosing EdDSA puts the project's signing key in the snapshot.
    let r = ann
        .send(
            &app,
            "PATCH",
            "/projects/settings",
            json!({"projectId": id, "settings": {"tokenAlgorithm": "EdDSA"}}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(snapshot_project(&app, &id)
        .unwrap()
        .ed25519_signing()
        .is_some());
    let r = ann
        .send(
            &app,
            "PATCH",
            "/projects/settings",
            json!({"projectId": id, "settings": {"tokenAlgorithm": "HS256"}}),
        )
        .await;
    assert_eq!(r.status, 200);

    // Invalid documents are refused whole, naming the field, and change nothing.
    for (patch, field) in [
        (
            json!({"sessionTtlSeconds": 5}),
            "settings.sessionTtlSeconds",
        ),
        (json!({"bogus": 1}), "settings.bogus"),
        (
            json!({"testMode": true, "ato": {"challengeScore": 99}}),
            "settings.ato.challengeScore",
        ),
        (
            json!({"allowedOrigins": ["https://shop.example/"]}),
            "settings.allowedOrigins[0]",
        ),
        (
            json!({"rateLimit": {"ip": {"limit": 0}}}),
            "settings.rateLimit.ip.limit",
        ),
        (
            json!({"rateLimit": {"ip": {"limit": "ten"}}}),
            "settings.rateLimit.ip.limit",
        ),
    ] {
        let r = ann
            .send(
                &app,
                "PATCH",
                "/projects/settings",
                json!({"projectId": id, "settings": patch}),
            )
            .await;
        assert_eq!(r.status, 422, "{patch}: {:?}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_field");
        assert_eq!(r.body["error"]["field"], field, "{patch}");
        assert_eq!(
            ann.get(&app, &path).await.body,
            saved,
            "a refused patch changes nothing"
        );
    }
    let r = ann
        .send(
            &app,
            "PATCH",
            "/projects/settings",
            json!({"projectId": id, "settings": [1]}),
        )
        .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], "settings");

    // Bob can neither read nor patch.
    not_found(&bob.get(&app, &path).await);
    not_found(
        &bob.send(
            &app,
            "PATCH",
            "/projects/settings",
            json!({"projectId": id, "settings": {"testMode": true}}),
        )
        .await,
    );
    assert_eq!(ann.get(&app, &path).await.body["testMode"], false);
    app.stop().await;
}

#[tokio::test]
async fn settings_merge_patch_on_sqlite() {
    settings_merge_patch(Backend::Sqlite).await;
}

#[tokio::test]
async fn settings_merge_patch_on_postgres() {
    settings_merge_patch(Backend::Postgres).await;
}
