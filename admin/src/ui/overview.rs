//! `/ui/projects/{id}/overview`: "are we under attack, by whom, and what
//! did Qyzar do about it", at a glance.
//!
//! parse the range (presets from an hour to 30 days, or custom) → call the
//! API: `GET /projects/overview-stats` (counts for the range and the period
//! before it), `GET /projects/dashboard-summary` (the last 24 hours: top
//! regions, browsers, platforms, the under-attack signals) and `GET
//! /projects/analytics` (`sessions` and `outcomes` over time) → render.
//! The live part (`#live`) refreshes itself every 30 seconds with htmx,
//! which fetches this same page and swaps that element.

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::Response;

use super::charts::{self, Range, RangeQuery, Stat, TopRow};
use super::layout::Shell;
use super::{render, Ctx};

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    shell: Shell,
    project_id: String,
    /// This page's path (the range links and the live refresh use it).
    base: String,
    range: Range,
    presets: Vec<(&'static str, &'static str)>,
    stats: Vec<Stat>,
    error: Option<String>,
    under_attack: bool,
    signals: Vec<String>,
    verifications_chart: Option<String>,
    outcomes_chart: Option<String>,
    top_regions: Vec<TopRow>,
    top_browsers: Vec<TopRow>,
    top_platforms: Vec<TopRow>,
}

/// `GET /ui/projects/{id}/overview?range=…`.
pub(crate) async fn page(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    let (shell, _) = match ctx.project(&id, "overview").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let range = Range::from_query(&q);
    let pid = form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>();
    let window = range.api_query();
    let stats = ctx
        .api
        .get(&format!(
            "/projects/overview-stats?projectId={pid}&{window}"
        ))
        .await;
    let summary = ctx
        .api
        .get(&format!("/projects/dashboard-summary?projectId={pid}"))
        .await;
    let sessions = ctx
        .api
        .get(&format!(
            "/projects/analytics?projectId={pid}&section=sessions&{window}"
        ))
        .await;
    let outcomes = ctx
        .api
        .get(&format!(
            "/projects/analytics?projectId={pid}&section=outcomes&{window}"
        ))
        .await;
    let error = [&stats, &summary, &sessions, &outcomes]
        .iter()
        .find(|a| !a.ok())
        .map(|a| a.failure().message);
    let signals = summary.body["attackSignals"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| {
                    let name = match s["signal"].as_str().unwrap_or("") {
                        "rate_limit_denies" => "rate-limit denies",
                        "ato_blocks" => "blocked logins",
                        "refused_verifications" => "refused verifications",
                        other => other,
                    };
                    format!(
                        "{name}: {} in the last 24 hours (the 24 before: {})",
                        s["current"], s["previous"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    render(&OverviewPage {
        shell,
        base: format!("/ui/projects/{id}/overview"),
        project_id: id,
        presets: charts::PRESETS.iter().map(|(k, l, _)| (*k, *l)).collect(),
        stats: vec![
            charts::stat(&stats, "verifications", "Verifications"),
            charts::stat(&stats, "atoAllowed", "Logins allowed"),
            charts::stat(&stats, "atoChallenged", "Logins challenged"),
            charts::stat(&stats, "atoBlocked", "Logins blocked"),
            charts::stat(&stats, "rateLimitDenied", "Rate-limit denies"),
            charts::stat(&stats, "refused", "Refused verifications"),
        ],
        error,
        under_attack: summary.body["underAttack"].as_bool().unwrap_or(false),
        signals,
        verifications_chart: charts::chart(
            &sessions,
            Some(&["verifications", "sessionVerifies", "refused"]),
        ),
        outcomes_chart: charts::chart(&outcomes, None),
        top_regions: charts::top(&summary, "topRegions"),
        top_browsers: charts::top(&summary, "topBrowsers"),
        top_platforms: charts::top(&summary, "topPlatforms"),
        range,
    })
}
