//! `POST /internal/traffic`: an engine reports the verifications it answered.
//!
//! authorise (`Authorization: Bearer <report key>`, as for the snapshot pull,
//! checked before the body is read) → parse (a [`TrafficBatch`], checked whole: one bad row refuses the batch
//! with the row's field named, and nothing is written) → decide (the batch
//! id is counted once; rows go into the traffic rollups and the owners'
//! monthly usage in one transaction; an account crossing its plan's
//! `monthlyVerifications` triggers a snapshot rebuild and push, so engines
//! start refusing its new verifications) → answer `{rows, ignoredRows,
//! duplicate}`. The usage is durable before the answer: an engine drops a
//! batch only once it is acknowledged.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use qyzar_shared::usage::TrafficBatch;
use serde::Serialize;

use crate::error::AdminResult;
use crate::extract::parse_object;
use crate::AppState;

/// Largest batch body: 5 000 rows of about 150 bytes, with room to spare.
pub const MAX_TRAFFIC_BODY: usize = 2 * 1024 * 1024;

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    /// Rows added (0 for a duplicate).
    rows: usize,
    /// Rows naming projects admin does not know (deleted): skipped.
    ignored_rows: usize,
    /// The batch id was counted before; nothing changed.
    duplicate: bool,
}

/// Records one batch.
pub async fn handle(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> AdminResult<Json<Output>> {
    // authorise (before parsing: a caller without the key learns nothing)
    super::internal_snapshot::authorise(state.config.engine_report_key(), &headers)?;
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
    Ok(Json(Output {
        rows: done.rows,
        ignored_rows: done.ignored_rows,
        duplicate: done.duplicate,
    }))
}
