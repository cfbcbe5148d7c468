//! Request bodies that carry credentials never print them in `Debug`.

use serde_json::json;

/// Request bodies that carry credentials never print them in `Debug`.
#[test]
fn request_bodies_redact_credentials_in_debug() {
    use qyzar_admin::routes::auth as r;
    const S: &str = "s3cret-VALUE-0123456789";
    fn check<T: serde::de::DeserializeOwned + std::fmt::Debug>(body: serde_json::Value) {
        let parsed: T =
            serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{body}: {e}"));
        let text = format!("{parsed:?} {parsed:#?}");
        assert!(
            !text.contains(S),
            "{} leaks: {text}",
            std::any::type_name::<T>()
        );
    }
    check::<r::signin::Body>(json!({"email": "a@b.c", "password": S}));
    check::<r::register::Body>(json!({"email": "a@b.c", "password": S}));
    check::<r::password::Body>(json!({"currentPassword": S, "newPassword": S}));
    check::<r::password_reset_confirm::Body>(json!({"token": S, "password": S}));
    check::<r::verify_email::Body>(json!({"token": S}));
    check::<r::two_factor_verify::Body>(json!({"code": S, "challengeToken": S}));
    check::<r::two_factor_recovery::Body>(json!({"challengeToken": S, "recoveryCode": S}));
    check::<r::two_factor_create::Body>(json!({"password": S, "code": S, "recoveryCode": S}));
    check::<r::two_factor_disable::Body>(json!({"password": S, "code": S, "recoveryCode": S}));
}
