//! The control plane between admin and engines, in one place both sides
//! compile against: the paths, the messages, the error codes that steer a
//! push, the key check and the one HTTP client every internal call goes
//! through.
//!
//! | call | direction | key ([`Direction`]) | request | answer |
//! |---|---|---|---|---|
//! | [`paths::SNAPSHOT`] `PUT` | admin → engine | push | an encoded full snapshot or delta ([`crate::snapshot::wire`]) | [`VersionAnswer`]; `409` [`ErrorCode::SnapshotNotNewer`] or [`ErrorCode::SnapshotNeedsFull`] |
//! | [`paths::SNAPSHOT_VERSION`] `GET` | anyone → engine | none | — | [`VersionAnswer`] |
//! | [`paths::SNAPSHOT`] `GET` | engine → admin | report | `If-None-Match: "<held version>"` | `200` the encoded snapshot with `ETag`, or `304` |
//! | [`paths::TRAFFIC`] `POST` | engine → admin | report | [`TrafficBatch`] JSON | [`TrafficAnswer`] |
//! | [`paths::ENGINES`] `POST` | engine → admin | report | [`EngineHeartbeat`] JSON | [`HeartbeatAnswer`] |
//!
//! Engines announce themselves with a heartbeat, so admin knows the live
//! set without a static list: an engine that names a `pushUrl` gets pushes
//! from every admin until it misses [`ENGINE_EXPIRY_HEARTBEATS`] beats, and
//! every engine learns the newest version from the answer and pulls at once
//! when it is behind (a missed push heals within one beat).
//!
//! Keys: one per direction ([`channel`]), compared in constant time on
//! SHA-256 digests ([`ChannelKey`]). TLS: [`channel::Trust`] on the client,
//! [`channel::server_config`] on the server.
//!
//! A push's answer tells admin what to do next ([`PushAnswer::of`]): apply
//! went through, the engine already serves something newer, the delta has
//! no base there (send the full snapshot), the bytes are refused for good,
//! or try again later. Those are distinct error codes, not strings to
//! compare; engines of earlier releases said the same with `409 conflict`
//! and a `field`, which [`PushAnswer::of`] still reads so a rolling upgrade
//! in either order keeps pushing.

pub mod channel;
mod client;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::crypto::{ct_eq, sha256};
use crate::{ApiError, ErrorCode};

pub use crate::usage::TrafficBatch;
pub use client::{ControlClient, ControlError, Link, Pulled};

/// The internal routes.
pub mod paths {
    /// Engine: `PUT` a snapshot (push). Admin: `GET` the newest (pull).
    pub const SNAPSHOT: &str = "/internal/snapshot";
    /// Engine: `GET` the served version.
    pub const SNAPSHOT_VERSION: &str = "/internal/snapshot/version";
    /// Admin: `POST` a traffic batch.
    pub const TRAFFIC: &str = "/internal/traffic";
    /// Admin: `POST` an engine's heartbeat.
    pub const ENGINES: &str = "/internal/engines";
    /// Engine: Prometheus metrics, on the internal listener only.
    pub const METRICS: &str = "/metrics";
    /// Both: liveness.
    pub const PING: &str = "/ping";
}

/// The content type of an encoded snapshot, pushed or pulled.
pub const SNAPSHOT_CONTENT_TYPE: &str = "application/octet-stream";

/// `{"version": n}`: what an engine serves (0 before its first snapshot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionAnswer {
    /// The snapshot version.
    pub version: u64,
}

/// Admin's answer to a traffic batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficAnswer {
    /// Rows added (0 for a duplicate).
    pub rows: usize,
    /// Rows naming projects admin does not know (deleted): skipped.
    pub ignored_rows: usize,
    /// The batch id was counted before; nothing changed.
    pub duplicate: bool,
}

/// Longest engine id: ids are the engine's own (`QYZAR_ENGINE_ID`) or
/// random per process.
pub const MAX_ENGINE_ID_LEN: usize = 64;

/// Default time between an engine's heartbeats.
pub const DEFAULT_HEARTBEAT_MS: u64 = 2_000;

/// Heartbeats an engine may miss before admin stops pushing to it and the
/// dashboard shows it gone.
pub const ENGINE_EXPIRY_HEARTBEATS: u64 = 3;

/// An engine's heartbeat to admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EngineHeartbeat {
    /// The engine's id: 1 to [`MAX_ENGINE_ID_LEN`] of `A-Za-z0-9._-`.
    pub engine_id: String,
    /// The internal base URL admin should push to; `None` for an engine
    /// that only pulls (its internal port is not reachable from admin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_url: Option<String>,
    /// The snapshot version it serves (0 before its first).
    pub version: u64,
    /// When its process started, unix ms (a restart shows as a new start).
    pub started_at_ms: i64,
    /// Its heartbeat interval, so admin knows when it is overdue.
    pub heartbeat_ms: u64,
}

impl EngineHeartbeat {
    /// Checks every field, naming the first one at fault.
    pub fn validate(&self) -> Result<(), ApiError> {
        let id_ok = !self.engine_id.is_empty()
            && self.engine_id.len() <= MAX_ENGINE_ID_LEN
            && self
                .engine_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !id_ok {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "engineId must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            )
            .field("engineId"));
        }
        if let Some(url) = &self.push_url {
            if url.len() > 512 {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    "pushUrl is longer than 512 bytes",
                )
                .field("pushUrl"));
            }
            channel::check_url(
                &format!("{}{}", url.trim_end_matches('/'), paths::SNAPSHOT),
                "pushUrl",
            )
            .map_err(|e| ApiError::with_message(ErrorCode::InvalidField, e).field("pushUrl"))?;
        }
        if !(100..=600_000).contains(&self.heartbeat_ms) {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "heartbeatMs must be between 100 and 600000",
            )
            .field("heartbeatMs"));
        }
        if self.started_at_ms < 0 || self.version > i64::MAX as u64 {
            return Err(
                ApiError::new(ErrorCode::InvalidField).field(if self.started_at_ms < 0 {
                    "startedAtMs"
                } else {
                    "version"
                }),
            );
        }
        Ok(())
    }
}

/// Admin's answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatAnswer {
    /// The newest snapshot version admin has built (0: none yet); an engine
    /// serving less pulls at once.
    pub newest_version: u64,
}

/// What a push came to, as admin acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAnswer {
    /// The engine now serves this version.
    Applied(u64),
    /// The engine has no base for the delta: send the full snapshot.
    NeedsFull,
    /// The engine already serves this version or a newer one.
    AlreadyNewer,
    /// The engine refused the bytes for good (too large, a format it does
    /// not read): retrying the same bytes cannot help.
    Refused(String),
    /// Transient (unreachable, 5xx, a wrong key being fixed): retry later.
    Retry(String),
}

impl PushAnswer {
    /// Reads an engine's answer to `PUT` [`paths::SNAPSHOT`].
    pub fn of(status: StatusCode, body: &[u8]) -> PushAnswer {
        #[derive(Deserialize, Default)]
        struct Envelope {
            #[serde(default)]
            version: Option<u64>,
            #[serde(default)]
            error: Option<WireError>,
        }
        #[derive(Deserialize, Default)]
        struct WireError {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
            #[serde(default)]
            field: Option<String>,
        }
        let env: Envelope = serde_json::from_slice(body).unwrap_or_default();
        let err = env.error.unwrap_or_default();
        let code = err.code.as_str();
        // Engines before the distinct codes: `conflict` with a field.
        let legacy = |field: &str| code == "conflict" && err.field.as_deref() == Some(field);
        match status {
            StatusCode::OK => PushAnswer::Applied(env.version.unwrap_or(0)),
            StatusCode::CONFLICT
                if code == ErrorCode::SnapshotNeedsFull.as_str() || legacy("baseVersion") =>
            {
                PushAnswer::NeedsFull
            }
            StatusCode::CONFLICT
                if code == ErrorCode::SnapshotNotNewer.as_str() || legacy("version") =>
            {
                PushAnswer::AlreadyNewer
            }
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
                PushAnswer::Refused(if err.message.is_empty() {
                    "refused".to_owned()
                } else {
                    err.message
                })
            }
            other => PushAnswer::Retry(format!("engine answered {other}: {}", err.message)),
        }
    }
}

/// Which way a call goes, which says which key it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Admin → engine (`QYZAR_ENGINE_PUSH_KEY`).
    Push,
    /// Engine → admin (`QYZAR_ADMIN_ENGINE_REPORT_KEY`).
    Report,
}

impl Direction {
    /// The variable that holds this direction's key.
    pub const fn var(self) -> &'static str {
        match self {
            Direction::Push => "QYZAR_ENGINE_PUSH_KEY",
            Direction::Report => "QYZAR_ADMIN_ENGINE_REPORT_KEY",
        }
    }

    const fn noun(self) -> &'static str {
        match self {
            Direction::Push => "push key",
            Direction::Report => "report key",
        }
    }
}

/// A channel key as the receiving side holds it: only its SHA-256, so the
/// comparison is constant-time over equal lengths and reveals nothing of
/// the key's length ([`ct_eq`] on raw strings of different lengths would).
#[derive(Clone)]
pub struct ChannelKey {
    digest: [u8; 32],
    /// A second key accepted too: the push key bound to this engine's
    /// advertised URL ([`bound_push_key`]).
    also: Option<[u8; 32]>,
    direction: Direction,
}

impl std::fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelKey")
            .field("direction", &self.direction)
            .finish_non_exhaustive()
    }
}

impl ChannelKey {
    /// Holds `key` for checking calls that go `direction`.
    pub fn new(key: &str, direction: Direction) -> Self {
        Self {
            digest: sha256(key.as_bytes()),
            also: None,
            direction,
        }
    }

    /// Also accepts `key` (an engine: the push key bound to its own
    /// advertised URL, which is what admin sends engines it learned of by
    /// heartbeat).
    pub fn also_accepting(mut self, key: &str) -> Self {
        self.also = Some(sha256(key.as_bytes()));
        self
    }
}

/// The push key admin presents to an engine it learned of by heartbeat
/// rather than from its own configuration: `qz_pb_` and the base64url
/// HMAC-SHA256 of the engine's push URL (without a trailing `/`) under the
/// push key.
///
/// Why: registering a push URL takes only the report key (every engine
/// holds it). Were the plain push key sent to every registered URL, whoever
/// held the report key could register a URL of theirs, receive the push
/// key and then push forged configurations to every real engine. Bound to
/// the URL, what such a URL receives opens no other engine: each engine
/// accepts the key bound to its own advertised URL (and the plain key, for
/// admins that list it in `QYZAR_ADMIN_ENGINE_URLS`).
pub fn bound_push_key(push_key: &str, url: &str) -> String {
    use base64::Engine as _;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, push_key.as_bytes());
    let tag = ring::hmac::sign(&key, url.trim_end_matches('/').as_bytes());
    format!(
        "qz_pb_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    )
}

/// Checks `Authorization: Bearer <key>` on an internal call that goes
/// `direction`. With no key configured every call is refused: the channel
/// carries every project's secrets, so an unconfigured side must not be an
/// open one. The message names the variable, never a key.
pub fn authorise(
    key: Option<&ChannelKey>,
    direction: Direction,
    headers: &http::HeaderMap,
) -> Result<(), ApiError> {
    let Some(key) = key else {
        return Err(ApiError::with_message(
            ErrorCode::InvalidCredentials,
            match direction {
                Direction::Push => {
                    "this engine has no push key configured (QYZAR_ENGINE_PUSH_KEY), so it accepts no pushes"
                }
                Direction::Report => {
                    "this admin has no engine key configured (QYZAR_ADMIN_ENGINE_REPORT_KEY), so it refuses engines' calls"
                }
            },
        ));
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .ok_or(ApiError::new(ErrorCode::MissingCredentials))?
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::InvalidCredentials,
                format!(
                    "the Authorization header must be `Bearer <{}>`",
                    key.direction.noun()
                ),
            )
        })?;
    let digest = sha256(presented.as_bytes());
    // Both compared, whichever matches: no early exit to time.
    let plain = ct_eq(&digest, &key.digest);
    let bound = key.also.as_ref().is_some_and(|a| ct_eq(&digest, a));
    if !(plain | bound) {
        return Err(ApiError::with_message(
            ErrorCode::InvalidCredentials,
            format!("the {} is not valid", key.direction.noun()),
        ));
    }
    Ok(())
}

/// `Bearer <key>`, marked sensitive so hyper and our logs never print it.
pub fn bearer(key: &str, direction: Direction) -> Result<http::HeaderValue, String> {
    let mut v = http::HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| format!("{} is not a valid header value", direction.var()))?;
    v.set_sensitive(true);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An engine takes the plain push key and the one bound to its own URL,
    /// not one bound to another URL; the binding ignores a trailing `/`.
    #[test]
    fn a_bound_push_key_opens_only_its_own_engine() {
        let push = "qz_pk_0123456789abcdef0123456789abcdef";
        let mine = bound_push_key(push, "http://10.0.0.7:8082");
        assert_eq!(mine, bound_push_key(push, "http://10.0.0.7:8082/"));
        assert!(mine.starts_with("qz_pb_") && !mine.contains(push));
        let key = ChannelKey::new(push, Direction::Push).also_accepting(&mine);
        for ok in [push.to_owned(), mine.clone()] {
            assert!(authorise(
                Some(&key),
                Direction::Push,
                &headers(&format!("Bearer {ok}"))
            )
            .is_ok());
        }
        let theirs = bound_push_key(push, "http://attacker.example:8082");
        let other_key = bound_push_key(
            "qz_pk_another_key_another_key_another",
            "http://10.0.0.7:8082",
        );
        for bad in [theirs, other_key] {
            let e = authorise(
                Some(&key),
                Direction::Push,
                &headers(&format!("Bearer {bad}")),
            )
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidCredentials);
        }
        // Without the binding only the plain key opens.
        let plain_only = ChannelKey::new(push, Direction::Push);
        assert!(authorise(
            Some(&plain_only),
            Direction::Push,
            &headers(&format!("Bearer {mine}"))
        )
        .is_err());
    }

    fn headers(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn push_answers_are_told_apart_by_code_and_by_the_legacy_field() {
        let a = |s: u16, b: &str| PushAnswer::of(StatusCode::from_u16(s).unwrap(), b.as_bytes());
        assert_eq!(a(200, r#"{"version":7}"#), PushAnswer::Applied(7));
        assert_eq!(
            a(
                409,
                r#"{"error":{"code":"snapshot_needs_full","message":"m"}}"#
            ),
            PushAnswer::NeedsFull
        );
        assert_eq!(
            a(
                409,
                r#"{"error":{"code":"snapshot_not_newer","message":"m"}}"#
            ),
            PushAnswer::AlreadyNewer
        );
        assert_eq!(
            a(
                409,
                r#"{"error":{"code":"conflict","message":"m","field":"baseVersion"}}"#
            ),
            PushAnswer::NeedsFull
        );
        assert_eq!(
            a(
                409,
                r#"{"error":{"code":"conflict","message":"m","field":"version"}}"#
            ),
            PushAnswer::AlreadyNewer
        );
        assert!(matches!(
            a(409, r#"{"error":{"code":"conflict","message":"m"}}"#),
            PushAnswer::Retry(_)
        ));
        assert_eq!(
            a(
                413,
                r#"{"error":{"code":"payload_too_large","message":"big"}}"#
            ),
            PushAnswer::Refused("big".into())
        );
        assert!(matches!(a(503, "not json"), PushAnswer::Retry(_)));
        assert!(matches!(a(401, "{}"), PushAnswer::Retry(_)));
    }

    #[test]
    fn the_key_check_refuses_everything_but_the_key() {
        let key = ChannelKey::new("k".repeat(40).as_str(), Direction::Push);
        let ok = format!("Bearer {}", "k".repeat(40));
        assert!(authorise(Some(&key), Direction::Push, &headers(&ok)).is_ok());
        assert!(authorise(
            Some(&key),
            Direction::Push,
            &headers(&ok.replace("Bearer", "bearer"))
        )
        .is_ok());
        for bad in ["Bearer nope", "Basic abc", "Bearer", &ok[..ok.len() - 1]] {
            let e = authorise(Some(&key), Direction::Push, &headers(bad)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidCredentials, "{bad}");
            assert!(
                !e.message.contains("kkkk"),
                "the key never appears: {}",
                e.message
            );
        }
        let e = authorise(Some(&key), Direction::Push, &http::HeaderMap::new()).unwrap_err();
        assert_eq!(e.code, ErrorCode::MissingCredentials);
        let e = authorise(None, Direction::Report, &headers(&ok)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidCredentials);
        assert!(e.message.contains("QYZAR_ADMIN_ENGINE_REPORT_KEY"));
    }

    #[test]
    fn bearer_values_are_sensitive() {
        let v = bearer("abc", Direction::Report).unwrap();
        assert!(v.is_sensitive());
        assert_eq!(v.to_str().unwrap(), "Bearer abc");
        assert!(bearer("a\nb", Direction::Report).is_err());
    }
}
