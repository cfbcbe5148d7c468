//! `POST /internal/traffic`: an engine reports the verifications it answered.
//!
//! authorise (`Authorization: Bearer <report key>`, as for the snapshot pull,
//! checked before a byte of the body is read: a caller without the key cannot
//! make us buffer 2 MiB, nor hold a connection by announcing a body it never
//! sends) → read (at most [`MAX_TRAFFIC_BODY`] bytes) → parse (a [`TrafficBatch`], checked whole: one bad row refuses the batch
//! with the row's field named, and nothing is written) → decide (the batch
//! id is counted once; rows go into the traffic rollups and the owners'
//! monthly usage in one transaction; an account crossing its plan's
//! `monthlyVerifications` triggers a snapshot rebuild and push, so engines
//! start refusing its new verifications) → answer `{rows, ignoredRows,
//! duplicate}`. The usage is durable before the answer: an engine drops a
//! batch only once it is acknowledged.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use qyzar_shared::control::{TrafficAnswer, TrafficBatch};
use qyzar_shared::{ApiError, ErrorCode};

use crate::error::{AdminError, AdminResult};
use crate::extract::parse_object;
use crate::AppState;

/// Largest batch body: 5 000 rows of about 150 bytes, with room to spare.
pub const MAX_TRAFFIC_BODY: usize = 2 * 1024 * 1024;

/// The body, or `413 payload_too_large` past [`MAX_TRAFFIC_BODY`] (refused
/// as soon as the limit is crossed, or at once for a larger
/// `Content-Length`), or `400 malformed_json` when the body breaks off.
async fn read_limited(body: Body) -> Result<axum::body::Bytes, AdminError> {
    let announced = axum::body::HttpBody::size_hint(&body).lower();
    if usize::try_from(announced).map_or(true, |n| n > MAX_TRAFFIC_BODY) {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge).into());
    }
    match Limited::new(body, MAX_TRAFFIC_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::new(ErrorCode::PayloadTooLarge).into())
        }
        Err(_) => Err(ApiError::new(ErrorCode::MalformedJson).into()),
    }
}

/// Records one batch.
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> AdminResult<Json<TrafficAnswer>> {
    // authorise (before reading: a caller without the key costs nothing)
    super::internal_snapshot::authorise(state.config.engine_report_key(), &headers)?;
    // read
    let body = read_limited(body).await?;
    // parse
    let batch: TrafficBatch = parse_object(&body)?;
    let now = qyzar_shared::time::now_ms();
    batch.validate(now)?;
    // decide
    let done = crate::usage::ingest(&state.db, &batch, now).await?;
    if done.crossed_quota {
        crate::push::after_change(&state).await;
    }
    // answer
    Ok(Json(TrafficAnswer {
        rows: done.rows,
        ignored_rows: done.ignored_rows,
        duplicate: done.duplicate,
    }))
}
