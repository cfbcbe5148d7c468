//! `Stripe-Signature` verification, Stripe's documented scheme: the header
//! is `t=<unix seconds>,v1=<hex HMAC-SHA256>[,v1=…][,v0=…]`, the signed
//! message is `"{t}.{raw body}"` under the endpoint's `whsec_…` secret, and
//! any one `v1` matching is enough (Stripe sends several while a secret is
//! being rolled). Checked over the raw bytes *before* the body is parsed, so
//! nothing unauthenticated reaches the JSON parser.

use qyzar_shared::crypto::hmac_verify;

/// How far the signed timestamp may be from now, either way: Stripe's
/// default tolerance. Bounds the replay window of a captured request (the
/// event-id log makes a replay inside it harmless anyway).
pub const TOLERANCE_SECS: i64 = 300;

/// Why a signature was refused. The webhook answers every one the same way
/// (`401 invalid_credentials`); the variant is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `t=` or no `v1=` in the header, or `t` is not a number.
    #[error("malformed stripe-signature header")]
    Malformed,
    /// The timestamp is more than [`TOLERANCE_SECS`] from now.
    #[error("stripe-signature timestamp outside the tolerance")]
    OutsideTolerance,
    /// No `v1` is the HMAC of the payload under the secret.
    #[error("no stripe-signature v1 matches")]
    NoMatch,
}

/// Checks `header` over `body` with `secret` at time `now_secs`.
pub fn verify(
    header: &str,
    body: &[u8],
    secret: &str,
    now_secs: i64,
) -> Result<(), SignatureError> {
    let mut timestamp: Option<&str> = None;
    let mut tags: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = Some(value),
            // A v1 that is not hex cannot match; skip it rather than fail,
            // another v1 may still be good.
            "v1" => tags.extend(hex_decode(value)),
            _ => {}
        }
    }
    let t_text = timestamp.ok_or(SignatureError::Malformed)?;
    let t: i64 = t_text.parse().map_err(|_| SignatureError::Malformed)?;
    if tags.is_empty() {
        return Err(SignatureError::Malformed);
    }
    // `t` is the caller's number: `now - t` overflows for `t` near
    // `i64::MIN`, so compare the distance without subtracting signed values.
    if now_secs.abs_diff(t) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::OutsideTolerance);
    }
    let mut signed = Vec::with_capacity(t_text.len() + 1 + body.len());
    signed.extend_from_slice(t_text.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    // Every tag is checked (no early exit on the first match), each in
    // constant time by `hmac_verify`.
    let matched = tags.iter().fold(false, |acc, tag| {
        hmac_verify(secret.as_bytes(), &signed, tag) | acc
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

/// Lowercase or uppercase hex to bytes; `None` for anything else.
fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &str) -> String {
        let tag =
            qyzar_shared::crypto::hmac_sha256(secret.as_bytes(), format!("{t}.{body}").as_bytes());
        tag.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn accepts_any_v1_and_refuses_the_rest() {
        let body = r#"{"id":"evt_1"}"#;
        let good = sign("whsec_a", 1_000, body);
        let bad = sign("whsec_b", 1_000, body);
        assert_eq!(
            verify(
                &format!("t=1000,v1={good}"),
                body.as_bytes(),
                "whsec_a",
                1_000
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &format!("t=1000,v1={bad},v0=zz,v1={good}"),
                body.as_bytes(),
                "whsec_a",
                1_100
            ),
            Ok(())
        );
        assert_eq!(
            verify(
                &format!("t=1000,v1={bad}"),
                body.as_bytes(),
                "whsec_a",
                1_000
            ),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&format!("t=1000,v1={good}"), b"{}", "whsec_a", 1_000),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(
                &format!("t=1000,v1={good}"),
                body.as_bytes(),
                "whsec_a",
                1_301
            ),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(
                &format!("t=1000,v1={good}"),
                body.as_bytes(),
                "whsec_a",
                699
            ),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(&format!("v1={good}"), body.as_bytes(), "whsec_a", 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("t=1000", body.as_bytes(), "whsec_a", 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("t=x,v1=00", body.as_bytes(), "whsec_a", 1_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify("", body.as_bytes(), "whsec_a", 1_000),
            Err(SignatureError::Malformed)
        );
        // A timestamp at the ends of i64 is refused, not an overflow.
        for t in [i64::MIN, i64::MAX] {
            let tag = sign("whsec_a", t, body);
            assert_eq!(
                verify(
                    &format!("t={t},v1={tag}"),
                    body.as_bytes(),
                    "whsec_a",
                    1_000
                ),
                Err(SignatureError::OutsideTolerance)
            );
        }
    }

    #[test]
    fn hex() {
        assert_eq!(hex_decode("00ff"), Some(vec![0, 255]));
        assert_eq!(hex_decode("0"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(hex_decode("é0"), None);
    }
}
