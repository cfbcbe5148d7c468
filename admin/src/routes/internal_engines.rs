//! `POST /internal/engines`: an engine's heartbeat.
//!
//! authorise (`Authorization: Bearer <report key>`, as for the snapshot
//! pull, before a byte of the body is read) → parse (an
//! [`EngineHeartbeat`], at most 4 KiB, every field checked: the id's
//! characters, the push URL's scheme and host, the interval's range) →
//! decide (upsert the engine's row: the live set every admin instance
//! pushes to, see [`crate::engines`]; a new id past
//! [`crate::engines::MAX_ENGINES`] is refused) → answer the newest version
//! this admin has built ([`HeartbeatAnswer`]), so an engine that missed a
//! push pulls at once.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use qyzar_shared::control::{EngineHeartbeat, HeartbeatAnswer};
use qyzar_shared::{ApiError, ErrorCode};

use crate::error::AdminResult;
use crate::extract::parse_object;
use crate::AppState;

/// Largest heartbeat body: a few hundred bytes with a long URL.
pub const MAX_HEARTBEAT_BODY: usize = 4 * 1024;

/// Records one heartbeat.
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> AdminResult<Json<HeartbeatAnswer>> {
    // authorise
    super::internal_snapshot::authorise(state.config.engine_report_key(), &headers)?;
    // parse
    let body = axum::body::to_bytes(body, MAX_HEARTBEAT_BODY)
        .await
        .map_err(|_| ApiError::new(ErrorCode::PayloadTooLarge))?;
    let beat: EngineHeartbeat = parse_object(&body)?;
    beat.validate()?;
    // decide
    crate::engines::record(&state.db, &beat, qyzar_shared::time::now_ms()).await?;
    // answer
    Ok(Json(HeartbeatAnswer {
        newest_version: state.pusher.version(),
    }))
}
