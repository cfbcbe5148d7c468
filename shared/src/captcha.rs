//! Test captcha tokens: issued by admin's `POST /test/captcha`, accepted by
//! the engine's `/connect` only for projects in `testMode`.
//!
//! Format: `qz_tc_<outcome>.<exp_unix>.<sig>` where `sig` is base64url
//! HMAC-SHA256 under the project's opt-out key over
//! `qyzar-test-captcha/v1|<projectId>|<outcome>|<exp_unix>`. The message
//! prefix separates this use of the key from opt-out links. Signed so a test
//! project cannot be fed a forged `pass` by a third party.

use base64::Engine as _;

use crate::crypto::{hmac_sha256, hmac_verify};

/// What a test captcha token asks `/connect` to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Behave as if the captcha was solved.
    Pass,
    /// Behave as if it failed.
    Fail,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
        }
    }
}

fn message(project: &str, outcome: Outcome, exp: i64) -> String {
    format!("qyzar-test-captcha/v1|{project}|{}|{exp}", outcome.as_str())
}

/// Issues a token valid until `exp_unix`.
pub fn issue(key: &[u8; 32], project: &str, outcome: Outcome, exp_unix: i64) -> String {
    let sig = hmac_sha256(key, message(project, outcome, exp_unix).as_bytes());
    format!(
        "qz_tc_{}.{exp_unix}.{}",
        outcome.as_str(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Checks a token: `Some(outcome)` when it is well-formed, signed for this
/// project and unexpired; `None` otherwise.
pub fn verify(key: &[u8; 32], project: &str, token: &str, now_unix: i64) -> Option<Outcome> {
    let rest = token.strip_prefix("qz_tc_")?;
    let mut parts = rest.splitn(3, '.');
    let outcome = match parts.next()? {
        "pass" => Outcome::Pass,
        "fail" => Outcome::Fail,
        _ => return None,
    };
    let exp: i64 = parts.next()?.parse().ok()?;
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts.next()?)
        .ok()?;
    if exp <= now_unix || !hmac_verify(key, message(project, outcome, exp).as_bytes(), &sig) {
        return None;
    }
    Some(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_only_for_their_project_key_and_time() {
        let key = [7u8; 32];
        let t = issue(&key, "prj_a", Outcome::Pass, 2_000);
        assert_eq!(verify(&key, "prj_a", &t, 1_000), Some(Outcome::Pass));
        assert_eq!(verify(&key, "prj_b", &t, 1_000), None, "another project");
        assert_eq!(verify(&[8u8; 32], "prj_a", &t, 1_000), None, "another key");
        assert_eq!(verify(&key, "prj_a", &t, 2_000), None, "expired");
        let f = issue(&key, "prj_a", Outcome::Fail, 2_000);
        assert_eq!(verify(&key, "prj_a", &f, 1_000), Some(Outcome::Fail));
        let forged = f.replace("qz_tc_fail", "qz_tc_pass");
        assert_eq!(
            verify(&key, "prj_a", &forged, 1_000),
            None,
            "outcome is signed"
        );
        for junk in [
            "",
            "qz_tc_",
            "qz_tc_pass",
            "qz_tc_pass.x.y",
            "qz_tc_maybe.1.AA",
        ] {
            assert_eq!(verify(&key, "prj_a", junk, 0), None, "{junk}");
        }
    }
}
