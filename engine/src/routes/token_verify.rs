//! `GET|POST /projects/client/token-verify`: is this client JWT ours, for
//! this project, unexpired, and is its session still live?
//!
//! parse (token from query, body, `X-Qyzar-Client-Token`, or Bearer when the
//! secret travels in `X-Qyzar-Project-Secret`) → authorise (project secret)
//! → decide (verified-token cache, else signature + claims; bound tokens
//! follow their session) → answer `{valid, reason?, sessionId?, metadata,
//! expiresAt}`.

use base64::Engine as _;
use http::header::HeaderName;
use http::{Method, Response, StatusCode};
use qyzar_shared::crypto::{signed_by_known_key, verify_facts_with, JwtError};
use qyzar_shared::ApiError;
use serde::{Deserialize, Serialize};

use super::common::{self, SessionCheck};
use crate::request::Headers;
use crate::request::{self, Text};
use crate::response::{self, Body};
use crate::sessions::CacheStatus;
use crate::state::{Engine, TokenRef, VerifiedToken};
use crate::traffic::Dims;
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute};

/// The body, borrowed from the request: the token is a few hundred bytes
/// and is only looked up and checked, never kept from here.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Input<'a> {
    #[serde(borrow)]
    project_id: Option<Text<'a>>,
    #[serde(borrow)]
    client_token: Option<Text<'a>>,
}

/// The answer to an invalid token. (A valid one is written by
/// [`valid_answer`].)
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Invalid {
    valid: bool,
    reason: &'static str,
    metadata: (),
    /// Always present (PRODUCT.md lists it); `null` on an invalid token,
    /// whose claims are not trusted.
    expires_at: (),
}

/// Header names parsed once, not on every request (a `&str` name is
/// validated at each lookup).
static CLIENT_TOKEN: HeaderName = HeaderName::from_static("x-qyzar-client-token");
static PROJECT_SECRET: HeaderName = HeaderName::from_static("x-qyzar-project-secret");

/// Handles one call.
pub async fn handle(
    engine: &Engine,
    method: &Method,
    query: Option<&str>,
    headers: &Headers<'_>,
    body: &[u8],
) -> Response<Body> {
    match run(engine, method, query, headers, body).await {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

fn invalid(reason: &'static str) -> Response<Body> {
    response::json_of(
        StatusCode::OK,
        &Invalid {
            valid: false,
            reason,
            metadata: (),
            expires_at: (),
        },
    )
}

/// `{"valid":true,"sessionId"?,"metadata","expiresAt"}`, byte for byte what
/// the derived serialisation gave (a test compares them), in one buffer and
/// without formatting the date through `fmt`.
///
/// The metadata is written as the token carries it: JSON that parses
/// (`verify_facts` read it as a `Value` would be read), in the signer's key
/// order and spacing. Tokens this engine mints carry it compact with
/// sorted keys and no repeated key, which is what the parsed and
/// re-serialised value gave before; a token a customer signed itself (it
/// holds the key's secret) keeps its own spelling.
fn valid_answer(token: &VerifiedToken, exp_ms: i64) -> Vec<u8> {
    let md = token.md();
    let mut out = Vec::with_capacity(96 + md.map_or(0, str::len));
    out.extend_from_slice(b"{\"valid\":true");
    if let Some(sid) = token.sid() {
        out.extend_from_slice(b",\"sessionId\":");
        let _ = serde_json::to_writer(&mut out, sid);
    }
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(md.unwrap_or("null").as_bytes());
    out.extend_from_slice(b",\"expiresAt\":");
    response::push_rfc3339(&mut out, exp_ms);
    out.push(b'}');
    out
}

/// [`invalid`], counted for the dashboard (the project is authenticated).
fn counted_invalid(
    engine: &Engine,
    project: &qyzar_shared::ids::ProjectId,
    now: i64,
    reason: &'static str,
) -> Response<Body> {
    engine.traffic.record(
        project.as_str(),
        TrafficRoute::TokenVerify,
        TrafficOutcome::Invalid,
        Dims::SERVER,
        now,
    );
    invalid(reason)
}

async fn run(
    engine: &Engine,
    method: &Method,
    query: Option<&str>,
    headers: &Headers<'_>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let q_project = request::query_param(query, "projectId");
    let q_token = request::query_param(query, "clientToken");
    let b: Input<'_> = if *method == Method::POST {
        request::json_body(headers, body)?
    } else {
        Input::default()
    };
    let project = common::project_id(b.project_id.as_deref().or(q_project.as_deref()))?;
    let header_token = headers.get(&CLIENT_TOKEN).and_then(|v| v.to_str().ok());
    let bearer_token = if headers.contains_key(&PROJECT_SECRET) {
        request::bearer(headers)
    } else {
        None
    };
    let token = b
        .client_token
        .as_deref()
        .or(q_token.as_deref())
        .or(header_token)
        .or(bearer_token);
    let token = token
        .ok_or_else(|| ApiError::new(qyzar_shared::ErrorCode::MissingField).field("clientToken"))?;
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, keys) = common::authorise(&live, &project, headers, now)?;
    // decide: the cache skips the signature for a token verified before,
    // as long as its key is still live (a rotation without grace drops it).
    // A project's tokens are cached in its own byte share, so a tenant
    // signing large tokens with its own key evicts only its own.
    let cached = engine
        .tokens
        .get_counted(project.as_str(), &TokenRef(token), |_| {
            signed_by_known_key(token, &keys.verify)
        });
    let (verified, cache) = match cached {
        Some(v) => {
            engine.tokens.counters().hit();
            (v, CacheStatus::Hit)
        }
        None => match verify_facts_with(token, &keys.verify, now / 1000, project.as_str(), |f| {
            VerifiedToken::new(token, f)
        }) {
            Ok(v) => {
                engine.tokens.counters().miss();
                // The signer chose `exp`: one past what an answer can write
                // (or overflowing in milliseconds) is refused, not cached.
                if expiry_ms(v.exp).is_none() {
                    return Ok(counted_invalid(engine, &project, now, "malformed"));
                }
                // Cached unless that would evict and this project's tokens
                // are seldom verified twice (`budget/admission.rs`).
                engine.tokens.offer(project.as_str(), v.key(), v.clone());
                (v, CacheStatus::Miss)
            }
            Err(JwtError::BadSignature) if other_audience(token, project.as_str()) => {
                return Ok(counted_invalid(engine, &project, now, "wrong_project"))
            }
            Err(e) => return Ok(counted_invalid(engine, &project, now, e.reason())),
        },
    };
    let Some(exp_ms) = expiry_ms(verified.exp) else {
        return Ok(counted_invalid(engine, &project, now, "malformed"));
    };
    if exp_ms <= now {
        return Ok(counted_invalid(engine, &project, now, "expired"));
    }
    if let Some(sid) = verified.sid() {
        match common::session_state(engine, cfg, &project, sid, now).await {
            Ok((SessionCheck::Invalid("revoked" | "opted_out"), _)) => {
                return Ok(counted_invalid(engine, &project, now, "session_revoked"))
            }
            Ok((SessionCheck::Invalid("not_found" | "expired" | "project_mismatch"), _)) => {
                return Ok(counted_invalid(engine, &project, now, "session_expired"))
            }
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
    // answer: a fresh answer has no `Server-Timing` yet, so the entry is
    // set as a fixed value rather than formatted.
    engine.traffic.record(
        project.as_str(),
        TrafficRoute::TokenVerify,
        TrafficOutcome::Ok,
        Dims::SERVER,
        now,
    );
    let entry = if cache == CacheStatus::Hit {
        response::Entry::TokenCached
    } else {
        response::Entry::TokenVerified
    };
    Ok(response::json_timed(
        StatusCode::OK,
        valid_answer(&verified, exp_ms),
        entry,
    ))
}

/// The last second an answer's `expiresAt` can write (9999-12-31T23:59:59Z).
const MAX_EXP: i64 = 253_402_300_799;

/// `exp` in Unix milliseconds, or `None` when it is past year 9999 (so no
/// multiplication can overflow): `exp` comes from whoever signed the token.
fn expiry_ms(exp: i64) -> Option<i64> {
    exp.checked_mul(1000).filter(|_| exp <= MAX_EXP)
}

/// Whether an unverifiable token names another audience. Reading `aud`
/// without trusting it only picks the reason code (`wrong_project` rather
/// than `bad_signature`); the token is refused either way.
fn other_audience(token: &str, project: &str) -> bool {
    let Some(payload) = token.split('.').nth(1) else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else {
        return false;
    };
    #[derive(Deserialize)]
    struct Aud {
        aud: Option<String>,
    }
    serde_json::from_slice::<Aud>(&bytes)
        .ok()
        .and_then(|a| a.aud)
        .is_some_and(|a| a != project)
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyzar_shared::crypto::verify_facts_with;
    use qyzar_shared::crypto::{sign_hs256, Claims, Hs256Key, VerifyKeys};

    /// The answers before they were written by hand (with the metadata
    /// parsed and serialised again, as the claims held it then).
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RefOutput<'a> {
        valid: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
        metadata: &'a serde_json::Value,
        expires_at: Option<String>,
    }

    #[test]
    fn answers_match_the_derived_serialisation() {
        let null = serde_json::Value::Null;
        for (sid, md, exp) in [
            (None, None, 1_764_000_000),
            (
                Some("ses_x\"y"),
                Some(serde_json::json!({"identifier": "a@x", "n": [1, 2.5], "\u{e9}": null})),
                0,
            ),
            (
                Some("ses_1"),
                Some(serde_json::json!("plain")),
                253_402_300_799,
            ),
        ] {
            let claims = Claims {
                iss: "qyzar".into(),
                aud: "prj_a".into(),
                sub: "s".into(),
                iat: 0,
                exp,
                jti: "tok_1".into(),
                sid: sid.map(str::to_owned),
                md,
            };
            // What the route keeps: the facts of the token as minted.
            let key = Hs256Key::from_raw([7u8; 32]);
            let keys = VerifyKeys::new().with_hs256(key.clone());
            let token = sign_hs256(&claims, &key);
            let facts = verify_facts_with(&token, &keys, -1, "prj_a", |f| {
                VerifiedToken::new(&token, f)
            })
            .unwrap();
            let want = serde_json::to_vec(&RefOutput {
                valid: true,
                reason: None,
                session_id: claims.sid.as_deref(),
                metadata: claims.md.as_ref().unwrap_or(&null),
                expires_at: Some(qyzar_shared::time::rfc3339(claims.exp * 1000)),
            })
            .unwrap();
            assert_eq!(
                String::from_utf8(valid_answer(&facts, expiry_ms(facts.exp).unwrap())).unwrap(),
                String::from_utf8(want).unwrap()
            );
        }
        let want = serde_json::to_vec(&RefOutput {
            valid: false,
            reason: Some("expired"),
            session_id: None,
            metadata: &null,
            expires_at: None,
        })
        .unwrap();
        let got = serde_json::to_vec(&Invalid {
            valid: false,
            reason: "expired",
            metadata: (),
            expires_at: (),
        })
        .unwrap();
        assert_eq!(got, want);
    }
}
