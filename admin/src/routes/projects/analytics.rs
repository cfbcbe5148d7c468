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
//! - `outcomes`: what the engines decided: `atoAllowed`, `atoChallenged`,
//!   `atoBlocked`, `rateLimitAllowed`, `rateLimitDenied` over time.
//!
//! Three sections come from the engines' data-plane store instead
//! ([`crate::device_analytics`]; `503 store_unavailable` without one) and
//! answer `{projectId, section, from, to}` with one object:
//! - `devices`: the devices seen in the range (distinct, bots, by risk band,
//!   top browsers and regions, per day; the range is cut to the index's 90
//!   days);
//! - `clusters`: the bot-farm clusters of the last 7 days as last computed
//!   in the background (`from`/`to` do not apply);
//! - `denies`: the newest rate-limit denies since `from`, by bucket and key.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::{now_ms, rfc3339};
use qyzar_shared::usage::{TrafficOutcome as O, TrafficRoute as R};
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::analytics::{self as rollups, Dimension, Series, Window};
use crate::auth::CurrentUser;
use crate::device_analytics::{self, ClustersSection, DeniesSummary, DevicesSummary};
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
    Outcomes,
    Devices,
    Clusters,
    Denies,
}

impl Section {
    fn parse(s: &str) -> Result<Section, ApiError> {
        match s {
            "traffic" => Ok(Section::Traffic),
            "browsers" => Ok(Section::Browsers),
            "sessions" => Ok(Section::Sessions),
            "outcomes" => Ok(Section::Outcomes),
            "devices" => Ok(Section::Devices),
            "clusters" => Ok(Section::Clusters),
            "denies" => Ok(Section::Denies),
            _ => Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "section must be traffic, browsers, sessions, outcomes, devices, clusters or denies",
            )
            .field("section")),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Section::Traffic => "traffic",
            Section::Browsers => "browsers",
            Section::Sessions => "sessions",
            Section::Outcomes => "outcomes",
            Section::Devices => "devices",
            Section::Clusters => "clusters",
            Section::Denies => "denies",
        }
    }

    /// Whether the section is read from the data-plane store.
    fn reads_store(self) -> bool {
        matches!(self, Section::Devices | Section::Clusters | Section::Denies)
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

/// The lines of the `outcomes` section.
const OUTCOME_LINES: &[(&str, &[(R, O)])] = &[
    ("atoAllowed", &[(R::AtoLoginAttempt, O::Allowed)]),
    ("atoChallenged", &[(R::AtoLoginAttempt, O::Challenged)]),
    ("atoBlocked", &[(R::AtoLoginAttempt, O::Blocked)]),
    ("rateLimitAllowed", &[(R::RateLimitCheck, O::Allowed)]),
    ("rateLimitDenied", &[(R::RateLimitCheck, O::Denied)]),
];

/// The answer: a chart, or one of the store sections.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Output {
    /// `traffic`, `browsers`, `sessions`, `outcomes`.
    Chart(ChartOutput),
    /// `devices`, `clusters`, `denies` (boxed: the summaries are larger
    /// than a chart's header).
    Store(Box<StoreOutput>),
}

/// A section read from the data-plane store.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoreOutput {
    project_id: String,
    section: &'static str,
    from: String,
    to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    devices: Option<DevicesSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clusters: Option<ClustersSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    denies: Option<DeniesSummary>,
}

/// A chart.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartOutput {
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
    let now = now_ms();
    let window = Window::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        q.bucket.as_deref(),
        !section.reads_store(),
        now,
    )?;
    // authorise
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    let id = project.id.as_str();
    // decide
    if section.reads_store() {
        let store = state.data.as_deref().ok_or_else(|| {
            ApiError::with_message(
                ErrorCode::StoreUnavailable,
                "no data store is configured for the dashboard",
            )
        })?;
        let unavailable = |e: qyzar_store::StoreError| {
            tracing::warn!(error = %e, "analytics store read failed");
            ApiError::new(e.code())
        };
        // The device index keeps 90 days: no day before that is read.
        let from = window.from.max(now - qyzar_store::DEVICE_DAY_RETENTION_MS);
        let mut out = StoreOutput {
            project_id: project.id.to_string(),
            section: section.as_str(),
            from: rfc3339(from),
            to: rfc3339(window.to),
            devices: None,
            clusters: None,
            denies: None,
        };
        match section {
            Section::Devices => {
                out.devices = Some(
                    device_analytics::devices_summary(
                        store,
                        &project.id,
                        from,
                        window.to.max(from + 1),
                    )
                    .await
                    .map_err(unavailable)?,
                );
            }
            Section::Clusters => {
                out.clusters = Some(device_analytics::clusters_section(
                    &state.clusters,
                    &project.id,
                ));
            }
            _ => {
                out.denies = Some(
                    device_analytics::denies_summary(store, &project.id, window.from)
                        .await
                        .map_err(unavailable)?,
                );
            }
        }
        return Ok(Json(Output::Store(Box::new(out))));
    }
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
        Section::Outcomes => rollups::series_of(&state.db, id, &window, OUTCOME_LINES).await?,
        // Answered from the store above.
        Section::Devices | Section::Clusters | Section::Denies => Vec::new(),
    };
    // answer
    Ok(Json(Output::Chart(ChartOutput {
        project_id: project.id.to_string(),
        section: section.as_str(),
        from: rfc3339(window.from),
        to: rfc3339(window.to),
        bucket: window.grain.as_str(),
        buckets: rollups::bucket_labels(&window),
        series,
    })))
}
