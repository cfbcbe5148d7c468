//! Mail through a real SMTP server.

use std::path::Path;

use serde_json::json;

use super::*;
use crate::helpers::{Backend, TestApp};

/// Registration mail through a real SMTP server (`deploy/smtp-sink.sh`,
/// aiosmtpd writing a maildir), then the link's token verifies the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_mail_goes_through_real_smtp() {
    let Some(addr) =
        qyzar_shared::testing::backend("QYZAR_TEST_SMTP", "admin mail through a real SMTP server")
    else {
        return;
    };
    let dir = std::env::var("QYZAR_TEST_SMTP_DIR")
        .expect("QYZAR_TEST_SMTP_DIR is set with QYZAR_TEST_SMTP");
    let smtp = format!("smtp://{addr}");
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.smtp_url = Some(smtp))
        .await
        .expect("sqlite is always available");
    let email = unique_email("smtp");
    assert_eq!(register(&app, &email, PASSWORD).await.status, 201);
    let mail = wait_for_mails(Path::new(&dir), &email, "/verify-email?token=", 1)
        .await
        .remove(0);
    assert!(
        mail.contains("Subject: Verify your Qyzar email address"),
        "{mail}"
    );
    assert!(
        mails_in(outbox(&app)).is_empty(),
        "with SMTP set, nothing goes to the outbox"
    );
    let r = post(
        &app,
        "/auth/verify-email",
        json!({"token": link_token(&mail, "/verify-email")}),
        None,
    )
    .await;
    assert_eq!((r.status, &r.body), (200, &json!({"emailVerified": true})));
    assert_eq!(signin(&app, &email, PASSWORD).await.status, 200);
    app.stop().await;
}
