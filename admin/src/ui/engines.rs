//! `/ui/engines`: the engines serving this deployment, as their heartbeats
//! report them ([`crate::engines`]): each one's id, whether admin pushes to
//! it or it only pulls, the configuration version it serves against the
//! newest one built, and how long ago it last beat. A change the dashboard
//! makes is live once every engine shows the newest version. Internal URLs
//! are not shown: this is the customers' dashboard, and the topology is the
//! operator's.

use askama::Template;
use axum::response::Response;

use axum::http::StatusCode;

use super::layout::{Failure, Shell};
use super::{render, render_status, Ctx};

/// One engine's line.
struct Line {
    id: String,
    mode: &'static str,
    version: u64,
    current: bool,
    live: bool,
    last_beat: String,
    up_for: String,
}

#[derive(Template)]
#[template(path = "engines.html")]
struct EnginesPage {
    shell: Shell,
    newest: u64,
    live: usize,
    behind: usize,
    lines: Vec<Line>,
}

/// "3 s", "4 min", "2 h", "5 d".
fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=119 => format!("{s} s"),
        120..=7_199 => format!("{} min", s / 60),
        7_200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// The page.
pub(crate) async fn page(ctx: Ctx) -> Response {
    let shell = match ctx.shell("engines", None).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let rows = match crate::engines::list(&ctx.ui.app.db).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "engines not listed");
            let tpl = Failure {
                title: "Engines unavailable",
                message: "The engine list could not be read; retry in a moment.".to_owned(),
            };
            return render_status(StatusCode::SERVICE_UNAVAILABLE, &tpl);
        }
    };
    let now = qyzar_shared::time::now_ms();
    let newest = ctx.ui.app.pusher.version();
    let lines: Vec<Line> = rows
        .iter()
        .map(|r| Line {
            id: r.engine_id.clone(),
            mode: if r.push_url.is_some() {
                "push to its advertised URL"
            } else {
                "pull (or admin's static list)"
            },
            version: r.version,
            current: r.version >= newest,
            live: r.is_live(now),
            last_beat: span(now - r.last_seen),
            up_for: span(r.last_seen - r.started_at),
        })
        .collect();
    let live = lines.iter().filter(|l| l.live).count();
    let behind = lines.iter().filter(|l| l.live && !l.current).count();
    render(&EnginesPage {
        shell,
        newest,
        live,
        behind,
        lines,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn spans_read_naturally() {
        assert_eq!(super::span(-5), "0 s");
        assert_eq!(super::span(3_400), "3 s");
        assert_eq!(super::span(240_000), "4 min");
        assert_eq!(super::span(7_200_000), "2 h");
        assert_eq!(super::span(5 * 86_400_000), "5 d");
    }
}
