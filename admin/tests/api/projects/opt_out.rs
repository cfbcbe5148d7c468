//! Opt-out links signed as a customer backend signs them: the device or
//! the identifier's hash lands in the snapshot; forged, tampered, expired
//! and cross-project links are refused.

use base64::Engine as _;
use serde_json::json;

use super::{create_project, id_of, sign_up};
use crate::helpers::{request, Backend, TestApp};
use crate::push::snapshot_project;

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// An opt-out link signed the way a customer backend signs it.
fn opt_out_link(id: &str, secret: &str, subject: (&str, &str), exp: i64) -> String {
    use qyzar_shared::crypto::{hmac_sha256, opt_out_key, ProjectSecret};
    let key = opt_out_key(
        &ProjectSecret::parse(secret).unwrap(),
        &qyzar_shared::ids::ProjectId::parse(id).unwrap(),
    );
    let (kind, value) = subject;
    let msg = format!("opt-out/v1|{id}|{kind}:{value}|{exp}");
    let sig =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hmac_sha256(&key, msg.as_bytes()));
    let param = if kind == "device" {
        "deviceId"
    } else {
        "identifier"
    };
    format!(
        "/opt-out/confirm?projectId={id}&{param}={}&exp={exp}&sig={sig}",
        encode(value)
    )
}

#[tokio::test]
async fn opt_out_links_mark_the_subject_and_reach_the_snapshot() {
    let app = TestApp::spawn(Backend::Sqlite).await.unwrap();
    let ann = sign_up(&app, "ann@example.com").await;
    let p = create_project(&app, &ann.token, "Shop").await;
    let (id, secret) = (id_of(&p), p["secret"].as_str().unwrap().to_owned());
    let exp = qyzar_shared::time::now_ms() / 1000 + 3600;
    let device = "dev_AAAAAAAAAAAAAAAAAAAAAA";

    let r = request(
        "GET",
        &app.url(&opt_out_link(&id, &secret, ("device", device), exp)),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body,
        json!({"optedOut": true, "projectId": id, "subject": "device"})
    );
    let snap = snapshot_project(&app, &id).unwrap();
    assert!(snap.is_device_opted_out(device));

    // Identifiers travel only as their SHA-256.
    let identifier = "ann+tag@example.com";
    let link = opt_out_link(&id, &secret, ("identifier", identifier), exp);
    let r = request(
        "GET",
        &app.url(&link),
        &[("accept", "text/html,application/xhtml+xml")],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let digest = qyzar_admin::projects::sha256(identifier.as_bytes());
    assert!(snapshot_project(&app, &id)
        .unwrap()
        .is_identifier_opted_out(&digest));
    // Following a link twice is harmless.
    assert_eq!(request("GET", &app.url(&link), &[], None).await.status, 200);

    // Forged, expired, other-project and malformed links are refused.
    let forged = opt_out_link(
        &id,
        qyzar_shared::crypto::ProjectSecret::generate().expose(),
        ("device", device),
        exp,
    );
    let r = request("GET", &app.url(&forged), &[], None).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["error"]["field"], "sig");
    let tampered = opt_out_link(&id, &secret, ("device", device), exp)
        .replace(&format!("exp={exp}"), &format!("exp={}", exp + 1));
    assert_eq!(
        request("GET", &app.url(&tampered), &[], None).await.status,
        401
    );
    let expired = opt_out_link(&id, &secret, ("device", device), exp - 7200);
    let r = request("GET", &app.url(&expired), &[], None).await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], "exp");
    let other = create_project(&app, &ann.token, "Other").await;
    let cross = opt_out_link(&id, &secret, ("device", device), exp)
        .replace(&id, other["projectId"].as_str().unwrap());
    assert_eq!(
        request("GET", &app.url(&cross), &[], None).await.status,
        401
    );
    let r = request(
        "GET",
        &app.url(&format!("/opt-out/confirm?projectId={id}&exp={exp}&sig=x")),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 400);
    let r = request(
        "GET",
        &app.url(&format!(
            "/opt-out/confirm?projectId={id}&deviceId=nope&exp={exp}&sig=x"
        )),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["error"]["field"], "deviceId");
    app.stop().await;
}
