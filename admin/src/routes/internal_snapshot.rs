//! `GET /internal/snapshot`: the newest config snapshot, for engines that
//! pull (at start and on an interval, so a missed push heals itself).
//!
//! authorise (`Authorization: Bearer <report key>`, the engine → admin key
//! `QYZAR_ADMIN_ENGINE_REPORT_KEY` (the push key while none is set),
//! compared in constant time on SHA-256 digests so the key's length does
//! not leak) → decide (the
//! newest build, building one when this process has none yet) → answer
//! `200` with the encoded snapshot and `ETag: "<version>"`, or `304` when
//! `If-None-Match` names this version or a newer one (the engine already has
//! it, or got a newer one from another admin). Without a configured key
//! every pull is refused: the snapshot holds every project's keys.

use axum::body::Body;
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use qyzar_shared::control::{self, ChannelKey, Direction, SNAPSHOT_CONTENT_TYPE};
use qyzar_shared::ApiError;

use crate::error::AdminResult;
use crate::AppState;

/// Serves the newest snapshot to a pulling engine.
pub async fn handle(State(state): State<AppState>, headers: HeaderMap) -> AdminResult<Response> {
    // authorise
    authorise(state.config.engine_report_key(), &headers)?;
    // decide
    let built = state
        .pusher
        .latest_or_build(&state.db, &state.secrets)
        .await?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", built.version))
        .map_err(crate::error::AdminError::internal)?;
    let held = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(held_version);
    // answer
    let mut res = if held.is_some_and(|v| v >= built.version) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut res = Response::new(Body::from(built.encoded.clone()));
        res.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(SNAPSHOT_CONTENT_TYPE),
        );
        res
    };
    res.headers_mut().insert(ETAG, etag);
    res.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The highest version named in an `If-None-Match` list (`"7"`, `W/"7"`,
/// `"6", "7"`); `*` matches anything; 0 when nothing parses.
fn held_version(value: &str) -> u64 {
    value
        .split(',')
        .map(|tag| tag.trim())
        .map(|tag| {
            if tag == "*" {
                u64::MAX
            } else {
                tag.trim_start_matches("W/")
                    .trim_matches('"')
                    .parse()
                    .unwrap_or(0)
            }
        })
        .max()
        .unwrap_or(0)
}

/// Checks `Authorization: Bearer <report key>` for the internal routes
/// engines call, with the control plane's one key check; refuses
/// everything when no key is configured. The push key (admin → engine) is
/// not accepted here once a report key is set.
pub(crate) fn authorise(key: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = key.map(|k| ChannelKey::new(k, Direction::Report));
    control::authorise(key.as_ref(), Direction::Report, headers)
}

#[cfg(test)]
mod tests {
    use super::held_version;

    #[test]
    fn if_none_match_lists_are_read() {
        assert_eq!(held_version("\"7\""), 7);
        assert_eq!(held_version("W/\"7\""), 7);
        assert_eq!(held_version("\"3\", \"9\""), 9);
        assert_eq!(held_version("*"), u64::MAX);
        assert_eq!(held_version("\"abc\""), 0);
    }
}
