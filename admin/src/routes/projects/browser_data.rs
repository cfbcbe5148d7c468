//! `GET /projects/browser-data?projectId&from&to`: which browsers the
//! project's visitors use, and each one's share, over a range.
//!
//! parse (range bounded, see [`Window::parse`]) → authorise (owner, else
//! `404`) → decide (browser-facing calls — connect and reverify — summed by
//! browser from the rollup table the range picks) → answer `{projectId,
//! from, to, bucket, total, browsers: [{name, count, percent}]}`, largest
//! first. Browsers the engine could not name are `unknown`; counts it
//! folded past the project's share of distinct keys are `other`.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::{now_ms, rfc3339};
use serde::{Deserialize, Serialize};

use crate::analytics::{self, Dimension, Share, Window};
use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::{projects, AppState};

/// Most browsers listed: woothee names a few dozen at most.
const MAX_BROWSERS: usize = 50;

/// The query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    project_id: String,
    from: Option<String>,
    to: Option<String>,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    project_id: String,
    from: String,
    to: String,
    bucket: &'static str,
    /// Browser-facing calls in the range; `percent` is of this.
    total: i64,
    browsers: Vec<Share>,
}

/// Answers the browser shares.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Output>> {
    // parse
    let window = Window::parse(q.from.as_deref(), q.to.as_deref(), None, false, now_ms())?;
    // authorise
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    // decide
    let (total, browsers) = analytics::breakdown(
        &state.db,
        project.id.as_str(),
        &window,
        Dimension::Browser,
        MAX_BROWSERS,
    )
    .await?;
    // answer
    Ok(Json(Output {
        project_id: project.id.to_string(),
        from: rfc3339(window.from),
        to: rfc3339(window.to),
        bucket: window.grain.as_str(),
        total,
        browsers,
    }))
}
