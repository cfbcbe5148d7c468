//! The browser side of a dashboard session: cookies and CSRF tokens.
//!
//! The dashboard token (`qz_dt_…`) the API hands out at sign-in lives in the
//! `qz_session` cookie, `HttpOnly` (no script can read it), `SameSite=Strict`
//! (no other site's page sends it) and `Secure` when the admin's public URL is
//! https. Before sign-in, the `qz_pre` cookie holds a random value that only
//! anchors the CSRF token of the public forms (sign-in, register, reset), so
//! a login-CSRF needs it too.
//!
//! The CSRF token is HMAC-SHA256 keyed with that session secret over a fixed
//! label: per session, unguessable without the cookie, and nothing to store.
//! It is checked in constant time by `ring::hmac::verify`.

use axum::http::{header, HeaderMap, HeaderValue};
use base64::Engine as _;
use ring::hmac;
use ring::rand::SecureRandom as _;

/// Holds the dashboard token after sign-in.
pub(crate) const SESSION_COOKIE: &str = "qz_session";
/// Anchors the CSRF token of the forms shown before sign-in.
pub(crate) const PRE_COOKIE: &str = "qz_pre";
/// Holds the sign-in challenge between the password and the second factor.
pub(crate) const CHALLENGE_COOKIE: &str = "qz_challenge";
/// Form field that carries the CSRF token (htmx sends `X-CSRF-Token` too).
pub(crate) const CSRF_FIELD: &str = "_csrf";
/// Header htmx requests carry the CSRF token in (`hx-headers` on `<body>`).
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// What the CSRF MAC covers besides the key: a label, so the value is good
/// for nothing else.
const CSRF_LABEL: &[u8] = b"qyzar dashboard csrf v1";

/// The value of cookie `name` in the request, if sent (the first one wins,
/// as browsers send the most specific path first).
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value with the dashboard's attributes. `max_age` `None`
/// is a browser-session cookie: closing the browser forgets it.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    secure: bool,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut text = format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    // Values are base64url or API tokens (`qz_…`): visible ASCII only.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("qz_invalid=; Path=/"))
}

/// A `Set-Cookie` value that deletes cookie `name`.
pub(crate) fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", secure, Some(0))
}

/// A fresh random value for `qz_pre`: 32 bytes, base64url.
pub(crate) fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The system RNG failing is not something a page can recover from;
    // an all-zero secret would be guessable, so fall back to a time-based
    // value mixed through SHA-256 only to keep the page up, and log it.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        tracing::error!("system randomness unavailable for a dashboard csrf secret");
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes
            .copy_from_slice(ring::digest::digest(&ring::digest::SHA256, seed.as_bytes()).as_ref());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The CSRF token of the session whose secret (dashboard token or `qz_pre`)
/// is `secret`.
pub(crate) fn csrf_token(secret: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hmac::sign(&key, CSRF_LABEL))
}

/// Whether `given` is the CSRF token of `secret` (constant-time compare).
pub(crate) fn csrf_ok(secret: &str, given: &str) -> bool {
    let Ok(tag) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(given.trim()) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    hmac::verify(&key, CSRF_LABEL, &tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_token_is_bound_to_its_secret() {
        let t = csrf_token("secret-a");
        assert!(csrf_ok("secret-a", &t));
        assert!(!csrf_ok("secret-b", &t));
        assert!(!csrf_ok("secret-a", ""));
        assert!(!csrf_ok("secret-a", "not base64 !"));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("qz_sessionx=1; qz_session=abc; other=2"),
        );
        assert_eq!(cookie(&h, "qz_session").as_deref(), Some("abc"));
        assert_eq!(cookie(&h, "qz_pre"), None);
    }

    #[test]
    fn cookie_attributes() {
        let v = set_cookie("qz_session", "t", true, None);
        assert_eq!(
            v.to_str().unwrap(),
            "qz_session=t; HttpOnly; SameSite=Strict; Path=/; Secure"
        );
        let v = clear_cookie("qz_pre", false);
        assert_eq!(
            v.to_str().unwrap(),
            "qz_pre=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"
        );
    }
}
