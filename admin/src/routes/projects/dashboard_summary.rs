//! `GET /projects/dashboard-summary?projectId`: the at-a-glance card of a
//! project — the last 24 hours against the 24 hours before.
//!
//! parse → authorise (owner, else `404`) → decide (totals of both days in
//! one scan of the minute rollups, the top regions, browsers and platforms
//! of the browser-facing calls, and the attack signals) → answer
//! `{projectId, from, to, previousFrom, previousTo, current, previous,
//! changePercent, topRegions, topBrowsers, topPlatforms, underAttack,
//! attackSignals: [{signal, current, previous}]}`.
//!
//! **Under attack** is a hint, not a verdict: a signal fires when its count
//! in the last 24 hours is at least [`ATTACK_MIN`] and more than
//! [`ATTACK_FACTOR`] times the day before (rate-limit denies; ATO blocks and
//! challenges; refused verifications). A quiet project does not trip it on
//! a handful of denies, and a project that always denies a lot does not
//! live under a permanent banner.

use axum::extract::State;
use axum::Json;
use qyzar_shared::time::{now_ms, rfc3339};
use qyzar_shared::usage::DAY_MS;
use serde::{Deserialize, Serialize};

use crate::analytics::{self, Grain, Share, Totals, TotalsChange, Window};
use crate::auth::CurrentUser;
use crate::error::AdminResult;
use crate::extract::ApiQuery;
use crate::{projects, AppState};

/// Values listed per breakdown on the card.
const TOP: usize = 5;
/// Smallest daily count that may raise an attack signal.
pub const ATTACK_MIN: i64 = 100;
/// How many times the previous day's count a signal needs to fire.
pub const ATTACK_FACTOR: i64 = 3;

/// An attack signal's name and the count it watches.
type Signal = (&'static str, fn(&Totals) -> i64);

/// The query.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Query {
    project_id: String,
}

/// The answer.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Output {
    project_id: String,
    from: String,
    to: String,
    previous_from: String,
    previous_to: String,
    current: Totals,
    previous: Totals,
    change_percent: TotalsChange,
    top_regions: Vec<Share>,
    top_browsers: Vec<Share>,
    top_platforms: Vec<Share>,
    under_attack: bool,
    attack_signals: Vec<AttackSignal>,
}

/// One signal that fired.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttackSignal {
    /// `rate_limit_denies`, `ato_blocks` or `refused_verifications`.
    signal: &'static str,
    current: i64,
    previous: i64,
}

/// Answers the card.
pub async fn handle(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> AdminResult<Json<Output>> {
    // parse: the last 24 hours, to the end of the current minute.
    let grain = Grain::Minute;
    let to = grain.ceil(now_ms() + 1);
    let window = Window {
        from: to - DAY_MS,
        to,
        grain,
    };
    // authorise
    let project = projects::owned(state.db.pool(), &user.user_id, &q.project_id).await?;
    let id = project.id.as_str();
    // decide
    let (cur, prev) = analytics::counts_with_previous(&state.db, id, &window).await?;
    let (current, previous) = (cur.totals(), prev.totals());
    let [top_regions, top_platforms, top_browsers] =
        analytics::breakdowns(&state.db, id, &window, TOP).await?;
    let signals: [Signal; 3] = [
        ("rate_limit_denies", |t| t.rate_limit_denied),
        ("ato_blocks", |t| t.ato_blocked + t.ato_challenged),
        ("refused_verifications", |t| t.refused),
    ];
    let attack_signals: Vec<AttackSignal> = signals
        .into_iter()
        .map(|(signal, f)| AttackSignal {
            signal,
            current: f(&current),
            previous: f(&previous),
        })
        .filter(|s| s.current >= ATTACK_MIN && s.current > ATTACK_FACTOR * s.previous)
        .collect();
    // answer
    let before = window.previous();
    Ok(Json(Output {
        project_id: project.id.to_string(),
        from: rfc3339(window.from),
        to: rfc3339(window.to),
        previous_from: rfc3339(before.from),
        previous_to: rfc3339(before.to),
        change_percent: TotalsChange::between(&current, &previous),
        current,
        previous,
        top_regions,
        top_browsers,
        top_platforms,
        under_attack: !attack_signals.is_empty(),
        attack_signals,
    }))
}
