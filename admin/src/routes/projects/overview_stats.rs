//! `GET /projects/overview-stats?projectId&from&to`: the project's totals
//! over a range and over the period of the same length just before it,
//! with the change in percent.
//!
//! parse (range bounded, see [`Window::parse`]) → authorise (owner, else
//! `404`) → decide (one grouped range scan of the rollup table the range
//! picks, both periods at once) → answer `{projectId, from, to,
//! previousFrom, previousTo, bucket, current, previous, changePercent,
//! routes: [{route, current, previous, changePercent, outcomes}]}`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::{now_ms, rfc3339};
use qyzar_shared::usage::{TrafficOutcome, TrafficRoute};
use serde::{Deserialize, Serialize};

use crate::analytics::{self, change_percent, Totals, TotalsChange, Window};
use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::{projects, AppState};

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
    /// The range read, widened to whole buckets of `bucket`.
    from: String,
    to: String,
    previous_from: String,
    previous_to: String,
    /// The rollup table read (`minute`, `hour`, `day`).
    bucket: &'static str,
    current: Totals,
    previous: Totals,
    change_percent: TotalsChange,
    routes: Vec<RouteStats>,
}

/// One route's answers in both periods.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteStats {
    route: &'static str,
    current: i64,
    previous: i64,
    change_percent: Option<f64>,
    /// This period's answers by outcome (only outcomes that occurred).
    outcomes: BTreeMap<&'static str, i64>,
}

/// Answers the stats.
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
    let (cur, prev) =
        analytics::counts_with_previous(&state.db, project.id.as_str(), &window).await?;
    let (current, previous) = (cur.totals(), prev.totals());
    let routes = TrafficRoute::ALL
        .into_iter()
        .map(|route| {
            let (c, p) = (cur.route(route), prev.route(route));
            RouteStats {
                route: route.as_str(),
                current: c,
                previous: p,
                change_percent: change_percent(c, p),
                outcomes: TrafficOutcome::ALL
                    .into_iter()
                    .map(|o| (o.as_str(), cur.get(route, o)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            }
        })
        .collect();
    // answer
    let before = window.previous();
    Ok(Json(Output {
        project_id: project.id.to_string(),
        from: rfc3339(window.from),
        to: rfc3339(window.to),
        previous_from: rfc3339(before.from),
        previous_to: rfc3339(before.to),
        bucket: window.grain.as_str(),
        change_percent: TotalsChange::between(&current, &previous),
        current,
        previous,
        routes,
    }))
}
