//! `POST /projects/client/token`: mint a short-lived client JWT for a browser.
//!
//! parse (projectId, optional session, ttl, metadata) → authorise (project
//! secret) → decide (a bound token never outlives its session; HS256 with
//! the project's derived key unless the project chose EdDSA) → answer
//! `{clientToken, expiresAt, sessionId?}`. `Idempotency-Key` is honoured by
//! the router.

use std::cell::RefCell;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{Response, StatusCode};
use qyzar_shared::crypto::{random_token, sign_eddsa, sign_hs256, ClaimsView};
use qyzar_shared::settings::TokenAlgorithm;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;

use super::common::{self, SessionCheck};
use crate::request::Headers;
use crate::request::{self, Text};
use crate::response::{self, Body};
use crate::state::Engine;
use crate::traffic::Dims;
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute};

/// Largest metadata document a token may carry: tokens travel in headers.
pub const MAX_METADATA_BYTES: usize = 4096;
/// Shortest and longest lifetime a caller may ask for.
pub const TTL_RANGE: std::ops::RangeInclusive<u32> = 30..=86_400;
/// The `iss` of every client token.
pub const ISSUER: &str = "qyzar";

/// The body; ids and the session token are borrowed from the request, the
/// metadata is owned because the token carries it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input<'a> {
    #[serde(borrow)]
    project_id: Option<Text<'a>>,
    #[serde(borrow)]
    session_id: Option<Text<'a>>,
    #[serde(borrow)]
    session_token: Option<Text<'a>>,
    ttl_seconds: Option<u32>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Counts the bytes of a serialisation without keeping them: the metadata
/// cap is on its compact JSON size, which needs no buffer to measure.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Random bytes drawn from the OS this many at a time for token ids.
const JTI_POOL: usize = 4096;
/// Random bytes in a token id (128 bits, as `random_token("tok_", 16)`).
const JTI_BYTES: usize = 16;

thread_local! {
    /// Unused CSPRNG bytes for token ids, and how many are used. One
    /// `getrandom` per 256 ids instead of one per id: the system call was
    /// about a tenth of a mint.
    static JTI_RANDOM: RefCell<([u8; JTI_POOL], usize)> = const {
        RefCell::new(([0; JTI_POOL], JTI_POOL))
    };
}

/// A fresh token id, `tok_` and 16 CSPRNG bytes in base64url: the same
/// shape and randomness as `random_token("tok_", 16)`, with the bytes taken
/// from a per-thread pool of OS randomness. Each byte is used once.
fn jti() -> String {
    JTI_RANDOM.with(|pool| {
        let mut pool = pool.borrow_mut();
        let (bytes, used) = &mut *pool;
        if *used + JTI_BYTES > JTI_POOL {
            // The source `random_token` uses: ring's `SystemRandom`.
            if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes[..])
                .is_err()
            {
                return random_token("tok_", JTI_BYTES);
            }
            *used = 0;
        }
        let mut s = String::with_capacity(4 + 22);
        s.push_str("tok_");
        URL_SAFE_NO_PAD.encode_string(&bytes[*used..*used + JTI_BYTES], &mut s);
        *used += JTI_BYTES;
        s
    })
}

/// `{"clientToken","expiresAt","sessionId"?}`, byte for byte what the
/// derived serialisation gave (a test compares them), in one buffer.
fn answer(client_token: &str, exp_ms: i64, session_id: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(client_token.len() + 96);
    out.extend_from_slice(b"{\"clientToken\":");
    response::push_json_str(&mut out, client_token);
    out.extend_from_slice(b",\"expiresAt\":");
    response::push_rfc3339(&mut out, exp_ms);
    if let Some(sid) = session_id {
        out.extend_from_slice(b",\"sessionId\":");
        response::push_json_str(&mut out, sid);
    }
    out.push(b'}');
    out
}

/// Handles one call; the body has been read by the router.
pub async fn handle(engine: &Engine, headers: &Headers<'_>, body: &[u8]) -> Response<Body> {
    match run(engine, headers, body).await {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

async fn run(
    engine: &Engine,
    headers: &Headers<'_>,
    body: &[u8],
) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let input: Input<'_> = request::json_body(headers, body)?;
    let project = common::project_id(input.project_id.as_deref())?;
    if let Some(t) = input.ttl_seconds {
        if !TTL_RANGE.contains(&t) {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "ttlSeconds must be between 30 and 86400",
            )
            .field("ttlSeconds"));
        }
    }
    let md_len = input.metadata.as_ref().map_or(0, |m| {
        let mut n = ByteCount(0);
        serde_json::to_writer(&mut n, m).map_or(usize::MAX, |()| n.0)
    });
    if md_len > MAX_METADATA_BYTES {
        return Err(ApiError::with_message(
            ErrorCode::InvalidField,
            "metadata is larger than 4096 bytes",
        )
        .field("metadata"));
    }
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, keys) = common::authorise(&live, &project, headers, now)?;
    // decide
    let ttl = input
        .ttl_seconds
        .unwrap_or(cfg.settings.client_token_ttl_seconds);
    let mut exp_ms = now.saturating_add(i64::from(ttl).saturating_mul(1000));
    let (sid, token) = common::session_credentials(
        cfg,
        headers,
        input.session_id.as_deref(),
        input.session_token.as_deref(),
    );
    let mut bound = None;
    if let Some(sid) = sid {
        match common::check_session(engine, cfg, &project, sid, token, now)
            .await?
            .0
        {
            SessionCheck::Valid(s) => {
                exp_ms = exp_ms.min(s.expires_at);
                bound = Some(s);
            }
            SessionCheck::Invalid(reason) => {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    format!("the session is not valid: {reason}"),
                )
                .field("sessionId"));
            }
        }
    }
    let md = input.metadata.map(serde_json::Value::Object);
    let sub = md
        .as_ref()
        .and_then(|m| {
            ["identifier", "email", "phone"]
                .iter()
                .find_map(|k| m.get(*k).and_then(|v| v.as_str()))
        })
        .or_else(|| bound.as_ref().map(|s| s.device_id()))
        .unwrap_or("anonymous");
    let jti = jti();
    // Borrowed: every field is already held here (the view signs the bytes
    // owned `Claims` would).
    let claims = ClaimsView {
        iss: ISSUER,
        aud: project.as_str(),
        sub,
        iat: now / 1000,
        exp: exp_ms / 1000,
        jti: &jti,
        sid: bound.as_ref().map(|s| s.session_id()),
        md: md.as_ref(),
    };
    let client_token = match cfg.settings.token_algorithm {
        TokenAlgorithm::Hs256 => keys.hs256.as_ref().map(|k| sign_hs256(&claims, k)),
        TokenAlgorithm::EdDsa => keys.ed25519.as_ref().map(|k| sign_eddsa(&claims, k)),
    };
    let client_token = client_token.ok_or_else(|| {
        tracing::error!(project = %project, "no signing key in the snapshot for the project's algorithm");
        ApiError::new(ErrorCode::NotConfigured)
    })?;
    engine.traffic.record(
        project.as_str(),
        TrafficRoute::Token,
        TrafficOutcome::Ok,
        bound.as_ref().map_or(Dims::SERVER, |s| Dims {
            region: s.region(),
            platform: s.platform(),
            browser: s.browser(),
        }),
        now,
    );
    // answer
    Ok(response::json(
        StatusCode::OK,
        answer(&client_token, claims.exp.saturating_mul(1000), claims.sid),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    /// The answer before it was written by hand.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct RefOutput<'a> {
        client_token: String,
        expires_at: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        session_id: Option<&'a str>,
    }

    #[test]
    fn the_answer_matches_the_derived_serialisation() {
        for (token, exp_ms, sid) in [
            ("eyJ.eyJ.sig", 1_764_000_000_000, None),
            ("a\"b", 0, Some("ses_1")),
            ("t", 253_402_300_799_000, Some("x\\y")),
        ] {
            let want = serde_json::to_vec(&RefOutput {
                client_token: token.to_owned(),
                expires_at: qyzar_shared::time::rfc3339(exp_ms),
                session_id: sid,
            })
            .unwrap();
            assert_eq!(answer(token, exp_ms, sid), want);
        }
    }

    #[test]
    fn metadata_size_is_its_compact_json_length() {
        let md: serde_json::Map<String, serde_json::Value> = serde_json::from_str(
            r#"{ "identifier" : "a\u00e9@x", "n": 1e3, "l": [1, {"a": null}] }"#,
        )
        .unwrap();
        let mut n = ByteCount(0);
        serde_json::to_writer(&mut n, &md).unwrap();
        assert_eq!(n.0, serde_json::to_vec(&md).unwrap().len());
    }

    #[test]
    fn token_ids_are_shaped_like_random_tokens_and_never_repeat() {
        let reference = random_token("tok_", 16);
        let mut seen = std::collections::HashSet::new();
        // Past two refills of the pool, on two threads.
        let ids: Vec<String> = std::thread::scope(|s| {
            let a = s.spawn(|| (0..600).map(|_| jti()).collect::<Vec<_>>());
            let b = s.spawn(|| (0..600).map(|_| jti()).collect::<Vec<_>>());
            let mut ids = a.join().unwrap();
            ids.extend(b.join().unwrap());
            ids
        });
        for id in ids {
            assert_eq!(id.len(), reference.len());
            assert!(id.starts_with("tok_"));
            assert_eq!(URL_SAFE_NO_PAD.decode(&id[4..]).unwrap().len(), 16);
            assert!(seen.insert(id), "a repeated id");
        }
    }
}
