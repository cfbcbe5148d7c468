//! Identifier normalisation on the anti-ATO routes: spellings of one
//! identifier share one history and one trust list
//! (`qyzar_shared::identifier`), unless the project asked for
//! case-sensitive identifiers; refusals keep their order around
//! authorisation. Run on the embedded store and on the CQL server.

use serde_json::{json, Value};

use crate::helpers::*;

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Store::Embedded).await })*
        }
        mod cql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(crate::helpers::Store::Cql).await })*
        }
    };
}

on_both_stores!(
    spellings_share_one_history,
    spellings_share_one_trust_list,
    case_sensitive_projects_keep_case,
    refusals_before_and_after_authorisation,
);

struct Fixture {
    engine: TestEngine,
    p: TestProject,
}

async fn fixture(kind: Store, settings: &str) -> Option<Fixture> {
    let (store, dir) = store(kind).await?;
    let engine = TestEngine::spawn_with(store, dir).await;
    let (p, cfg) = project(settings, false);
    install(&engine.engine, 1, vec![cfg]);
    Some(Fixture { engine, p })
}

impl Fixture {
    async fn post(&self, path: &str, body: Value) -> TestResponse {
        request(
            "POST",
            &self.engine.url(path),
            &[("authorization", &format!("Bearer {}", self.p.secret))],
            Some(&body.to_string()),
        )
        .await
    }

    async fn attempt(&self, identifier: &str, success: bool) -> TestResponse {
        let r = self
            .post(
                "/projects/client/ato-login-attempt",
                json!({"projectId": self.p.id, "identifier": identifier, "success": success}),
            )
            .await;
        assert_eq!(r.status, 200, "{identifier:?}: {:?}", r.body);
        r
    }

    async fn stored(&self, identifier: &str) -> usize {
        let pid = qyzar_shared::ids::ProjectId::parse(&self.p.id).unwrap();
        self.engine
            .engine
            .store
            .recent_login_attempts(&pid, identifier, 0, 100)
            .await
            .unwrap()
            .len()
    }
}

/// The default test settings with `ato.caseSensitiveIdentifiers` on.
fn case_sensitive_settings() -> String {
    let on = SETTINGS.replace(
        r#""failedAttemptsWindowSeconds":900}"#,
        r#""failedAttemptsWindowSeconds":900,"caseSensitiveIdentifiers":true}"#,
    );
    assert_ne!(on, SETTINGS, "helpers::SETTINGS changed shape");
    on
}

async fn spellings_share_one_history(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS).await else {
        return;
    };
    let first = f.attempt("Victim@Example.com", true).await;
    assert!(first.body["lastLoginAt"].is_null(), "{:?}", first.body);
    // Another capitalisation, padded with a no-break space: the same account.
    let second = f.attempt("\u{a0}victim@EXAMPLE.com ", false).await;
    assert!(second.body["lastLoginAt"].is_string(), "{:?}", second.body);
    assert_eq!(
        second.body["lastLoginAt"],
        second.body["priorSnapshot"]["at"]
    );
    // Full-width forms too.
    let third = f.attempt("Ｖｉｃｔｉｍ＠ＥＸＡＭＰＬＥ.com", false).await;
    assert_eq!(third.body["lastLoginAt"], second.body["lastLoginAt"]);
    // All three are stored under the one normalised form.
    assert_eq!(f.stored("victim@example.com").await, 3);
    assert_eq!(f.stored("Victim@Example.com").await, 0);
    // Phones written with an international prefix meet in E.164.
    f.attempt("+1 (415) 555-0100", true).await;
    let r = f.attempt("0014155550100", false).await;
    assert!(r.body["lastLoginAt"].is_string(), "{:?}", r.body);
    assert_eq!(f.stored("+14155550100").await, 2);
    f.engine.stop().await;
}

async fn spellings_share_one_trust_list(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS).await else {
        return;
    };
    let c = request(
        "POST",
        &f.engine.url("/connect"),
        &[("origin", ORIGIN)],
        Some(
            &json!({"projectId": f.p.id, "originToken": f.p.origin_token, "entropy": entropy()})
                .to_string(),
        ),
    )
    .await;
    assert_eq!(c.status, 201, "{:?}", c.body);
    let (sid, tok, device) = (
        c.body["sessionId"].clone(),
        c.body["sessionToken"].clone(),
        c.body["deviceId"].clone(),
    );
    for spelling in [
        "Victim@Example.com",
        "victim@example.com",
        " VICTIM@example.COM",
    ] {
        let r = f
            .post(
                "/projects/client/ato-add-identifier",
                json!({"projectId": f.p.id, "identifier": spelling, "deviceId": device}),
            )
            .await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        assert_eq!(
            r.body["trustedIdentifiers"],
            json!(["victim@example.com"]),
            "{spelling:?}"
        );
    }
    // A login under yet another spelling, from that device, is trusted.
    let r = f
        .post(
            "/projects/client/ato-login-attempt",
            json!({"projectId": f.p.id, "identifier": "Ｖｉｃｔｉｍ＠example.com", "success": true,
                   "sessionId": sid, "sessionToken": tok}),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["trustedDevice"], true, "{:?}", r.body);
    f.engine.stop().await;
}

async fn case_sensitive_projects_keep_case(kind: Store) {
    let Some(f) = fixture(kind, &case_sensitive_settings()).await else {
        return;
    };
    f.attempt("Victim", true).await;
    // Another case is another identifier here...
    let r = f.attempt("victim", false).await;
    assert!(r.body["lastLoginAt"].is_null(), "{:?}", r.body);
    // ...but trimming and NFKC still apply.
    let r = f.attempt("\u{a0}Ｖｉｃｔｉｍ ", false).await;
    assert!(r.body["lastLoginAt"].is_string(), "{:?}", r.body);
    assert_eq!(f.stored("Victim").await, 2);
    assert_eq!(f.stored("victim").await, 1);
    f.engine.stop().await;
}

async fn refusals_before_and_after_authorisation(kind: Store) {
    let Some(f) = fixture(kind, SETTINGS).await else {
        return;
    };
    let url = f.engine.url("/projects/client/ato-login-attempt");
    let body = |identifier: &str| {
        json!({"projectId": f.p.id, "identifier": identifier, "success": true}).to_string()
    };
    let invalid = |r: &TestResponse| {
        (
            r.status,
            r.body["error"]["code"].clone(),
            r.body["error"]["field"].clone(),
        )
    };
    let refused = (422, json!("invalid_field"), json!("identifier"));
    // Control characters are refused while parsing, before the secret is
    // looked at (as before normalisation existed).
    let r = request("POST", &url, &[], Some(&body("vic\u{1}tim"))).await;
    assert_eq!(invalid(&r), refused);
    // What needs normalising to judge waits for authorisation.
    let r = request("POST", &url, &[], Some(&body("\u{200b}"))).await;
    assert_eq!(r.status, 401, "{:?}", r.body);
    // Authorised: only invisible characters, or over 256 bytes once
    // normalised, is the same refusal.
    for bad in ["\u{200b}\u{feff}".to_owned(), "\u{fdfa}".repeat(10)] {
        let r = f
            .post(
                "/projects/client/ato-login-attempt",
                json!({"projectId": f.p.id, "identifier": bad, "success": true}),
            )
            .await;
        assert_eq!(invalid(&r), refused, "{bad:?}");
        let r = f
            .post(
                "/projects/client/ato-add-identifier",
                json!({"projectId": f.p.id, "identifier": bad, "deviceId": "dev_ZZZZZZZZZZZZZZZZZZZZZZ"}),
            )
            .await;
        assert_eq!(invalid(&r), refused, "{bad:?}");
    }
    f.engine.stop().await;
}
