//! `/ui/projects/{id}/rate-limits` and `/ui/projects/{id}/anti-ato`: what
//! the rate limiter and the anti-account-takeover decided over time.
//!
//! Both chart the `outcomes` section of `GET /projects/analytics` (the
//! engines' per-minute counts) with the totals of `GET
//! /projects/overview-stats` against the period before. The rate-limit page
//! adds the most denied buckets and keys from the `denies` section (the
//! newest deny events the engines recorded, when the project has
//! `rateLimit.analyticsOnDeny`); the anti-ATO page the identifiers under
//! attack (whose logins were challenged or blocked) from the same section.

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::Response;

use super::charts::{self, Range, RangeQuery, Stat, TopRow};
use super::layout::Shell;
use super::{render, Ctx};

#[derive(Template)]
#[template(path = "protection.html")]
struct ProtectionPage {
    shell: Shell,
    base: String,
    title: &'static str,
    intro: &'static str,
    range: Range,
    presets: Vec<(&'static str, &'static str)>,
    stats: Vec<Stat>,
    chart: Option<String>,
    top_buckets: Vec<TopRow>,
    top_keys: Vec<TopRow>,
    top_identifiers: Vec<TopRow>,
    show_denies: bool,
    error: Option<String>,
}

/// Which of the two pages.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    RateLimits,
    AntiAto,
}

async fn show(ctx: Ctx, id: String, q: RangeQuery, kind: Kind) -> Response {
    let slug = match kind {
        Kind::RateLimits => "rate-limits",
        Kind::AntiAto => "anti-ato",
    };
    let (shell, _) = match ctx.project(&id, slug).await {
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
    let outcomes = ctx
        .api
        .get(&format!(
            "/projects/analytics?projectId={pid}&section=outcomes&{window}"
        ))
        .await;
    let (stat_list, lines): (Vec<Stat>, &[&str]) = match kind {
        Kind::RateLimits => (
            vec![
                charts::stat(&stats, "rateLimitAllowed", "Checks allowed"),
                charts::stat(&stats, "rateLimitDenied", "Checks denied"),
            ],
            &["rateLimitAllowed", "rateLimitDenied"],
        ),
        Kind::AntiAto => (
            vec![
                charts::stat(&stats, "atoAllowed", "Logins allowed"),
                charts::stat(&stats, "atoChallenged", "Logins challenged"),
                charts::stat(&stats, "atoBlocked", "Logins blocked"),
            ],
            &["atoAllowed", "atoChallenged", "atoBlocked"],
        ),
    };
    let (mut top_buckets, mut top_keys, mut error) = (Vec::new(), Vec::new(), None);
    let mut top_identifiers = Vec::new();
    {
        let denies = ctx
            .api
            .get(&format!(
                "/projects/analytics?projectId={pid}&section=denies&{window}"
            ))
            .await;
        if denies.ok() {
            top_buckets = charts::top_in(&denies.body["denies"], "topBuckets");
            top_keys = charts::top_in(&denies.body["denies"], "topKeys");
            top_identifiers = charts::top_in(&denies.body["denies"], "topIdentifiers");
        } else {
            error = Some(denies.failure().message);
        }
    }
    error = error.or_else(|| {
        [&stats, &outcomes]
            .iter()
            .find(|a| !a.ok())
            .map(|a| a.failure().message)
    });
    let (title, intro) = match kind {
        Kind::RateLimits => (
            "Rate limits",
            "Every rate-limit check your backend made, allowed or denied, and who was denied most.",
        ),
        Kind::AntiAto => (
            "Anti-ATO",
            "Every login your backend reported: allowed, challenged (ask for a second factor) or blocked.",
        ),
    };
    render(&ProtectionPage {
        shell,
        base: format!("/ui/projects/{id}/{slug}"),
        title,
        intro,
        presets: charts::PRESETS.iter().map(|(k, l, _)| (*k, *l)).collect(),
        stats: stat_list,
        chart: charts::chart(&outcomes, Some(lines)),
        top_buckets,
        top_keys,
        top_identifiers,
        show_denies: kind == Kind::RateLimits,
        error,
        range,
    })
}

/// `GET /ui/projects/{id}/rate-limits?range=…`.
pub(crate) async fn rate_limits(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    show(ctx, id, q, Kind::RateLimits).await
}

/// `GET /ui/projects/{id}/anti-ato?range=…`.
pub(crate) async fn anti_ato(
    ctx: Ctx,
    Path(id): Path<String>,
    Query(q): Query<RangeQuery>,
) -> Response {
    show(ctx, id, q, Kind::AntiAto).await
}
