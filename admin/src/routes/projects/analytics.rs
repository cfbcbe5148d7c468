//! `GET /projects/analytics?projectId&section&from&to&bucket`: the
//! dashboard's charts, as time series read from the minute/hour/day
//! rollups.
//!
//! parse (section; range and bucket bounded, see [`Window::parse`]) →
//! authorise (owner, else `404`) → decide (one grouped range scan) →
//! answer `{projectId, section, from, to, bucket, buckets: [RFC 3339
//! bucket starts], series: [{label, region?, platform?, browser?, total,
//! points: [count per bucket]}]}`.
//!
//! Sections:
//! - `traffic`: browser-facing calls (connect, reverify) by region and
//!   platform, the largest 20 lines and an `other` line;
//! - `browsers`: the same calls by browser;
//! - `sessions`: `connects`, `reverifies`, `verifications` (both, what the
//!   plan counts), `sessionVerifies` and `refused` over time.
//!
//! `clusters` and `devices` come from the data-plane store and are not
//! served here yet: like any other unknown section they answer `422
//! invalid_field` naming `section`.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::{now_ms, rfc3339};
use qyzar_shared::usage::{TrafficOutcome as O, TrafficRoute as R};
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::analytics::{self as rollups, Dimension, Series, Window};
use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::{projects, AppState};

/// The query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    project_id: String,
    section: String,
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
}

/// The sections answered from the rollups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Traffic,
    Browsers,
    Sessions,
}

impl Section {
    fn parse(s: &str) -> Result<Section, ApiError> {
        match s {
            "traffic" => Ok(Section::Traffic),
            "browsers" => Ok(Section::Browsers),
            "sessions" => Ok(Section::Sessions),
            _ => Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "section must be traffic, browsers or sessions",
            )
            .field("section")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Section::Traffic => "traffic",
            Section::Browsers => "browsers",
            Section::Sessions => "sessions",
        }
    }
}

/// The lines of the `sessions` section and the (route, outcome) pairs
/// each sums.
const SESSION_LINES: &[(&str, &[(R, O)])] = &[
    ("connects", &[(R::Connect, O::Ok)]),
    ("reverifies", &[(R::Reverify, O::Ok)]),
    (
        "verifications",
        &[(R::Connect, O::Ok), (R::Reverify, O::Ok)],
    ),
    ("sessionVerifies", &[(R::SessionVerify, O::Ok)]),
    (
        "refused",
        &[(R::Connect, O::Refused), (R::Reverify, O::Refused)],
    ),
];

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    project_id: String,
    section: &'static str,
    from: String,
    to: String,
    bucket: &'static str,
    /// Start of each bucket; every series has one point per bucket.
    buckets: Vec<String>,
    series: Vec<Series>,
}

/// Answers one chart.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Output>> {
    // parse
    let section = Section::parse(&q.section)?;
    let window = Window::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        q.bucket.as_deref(),
        true,
        now_ms(),
    )?;
    // authorise
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    let id = project.id.as_str();
    // decide
    let series = match section {
        Section::Traffic => {
            rollups::series_by(
                &state.db,
                id,
                &window,
                &[Dimension::Region, Dimension::Platform],
            )
            .await?
        }
        Section::Browsers => {
            rollups::series_by(&state.db, id, &window, &[Dimension::Browser]).await?
        }
        Section::Sessions => rollups::series_of(&state.db, id, &window, SESSION_LINES).await?,
    };
    // answer
    Ok(Json(Output {
        project_id: project.id.to_string(),
        section: section.as_str(),
        from: rfc3339(window.from),
        to: rfc3339(window.to),
        bucket: window.grain.as_str(),
        buckets: rollups::bucket_labels(&window),
        series,
    }))
}
