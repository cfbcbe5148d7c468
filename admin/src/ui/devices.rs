//! `/ui/projects/{id}/devices`: the devices the project has seen, with
//! filters, and one device's drill-down (its entropy snapshot and its
//! sessions).
//!
//! The list is `GET /projects/devices-data` page by page (the API's cursor
//! is carried in the "next page" link with the filters); above it the
//! `devices` section of `GET /projects/analytics` counts the range. The
//! drill-down is `GET /projects/entropy-snapshot` by device, or by one of
//! its sessions.

use askama::Template;
use axum::extract::{Path, Query};
use axum::response::Response;
use serde::Deserialize;

use super::layout::Shell;
use super::{render, render_status, Ctx};

/// The filters, as the form sends them (empty means "any").
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Filters {
    #[serde(default)]
    risk: String,
    #[serde(default)]
    bot: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    browser: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    cursor: String,
}

/// One table row.
pub(crate) struct Row {
    pub device_id: String,
    pub seen_on: String,
    pub last_seen: String,
    pub browser: String,
    pub os: String,
    pub platform: String,
    pub region: String,
    pub risk: String,
    pub risk_score: u64,
    pub bot: bool,
}

#[derive(Template)]
#[template(path = "devices.html")]
struct DevicesPage {
    shell: Shell,
    project_id: String,
    f: Filters,
    rows: Vec<Row>,
    next: Option<String>,
    error: Option<String>,
    summary: Option<Summary>,
}

/// The `devices` section's counts.
struct Summary {
    devices: i64,
    bots: i64,
    high: i64,
    truncated: bool,
}

fn days_of(f: &Filters) -> i64 {
    f.days
        .parse()
        .ok()
        .filter(|d| (1..=90).contains(d))
        .unwrap_or(7)
}

/// The devices-data query for these filters (and `cursor`).
fn api_query(id: &str, f: &Filters, cursor: &str) -> String {
    let now = qyzar_shared::time::now_ms();
    let since = qyzar_shared::time::rfc3339(now - days_of(f) * 86_400_000 + 60_000);
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("projectId", id)
        .append_pair("seenSince", &since);
    for (k, v) in [
        ("risk", &f.risk),
        ("bot", &f.bot),
        ("region", &f.region),
        ("browser", &f.browser),
    ] {
        if !v.trim().is_empty() {
            q.append_pair(k, v.trim());
        }
    }
    if !cursor.is_empty() {
        q.append_pair("cursor", cursor);
    }
    q.finish()
}

/// `GET /ui/projects/{id}/devices?risk&bot&region&browser&days&cursor`.
pub(crate) async fn page(ctx: Ctx, Path(id): Path<String>, Query(f): Query<Filters>) -> Response {
    let (shell, _) = match ctx.project(&id, "devices").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let list = ctx
        .api
        .get(&format!(
            "/projects/devices-data?{}",
            api_query(&id, &f, &f.cursor)
        ))
        .await;
    let now = qyzar_shared::time::now_ms();
    let range = form_urlencoded::Serializer::new(String::new())
        .append_pair("projectId", &id)
        .append_pair("section", "devices")
        .append_pair(
            "from",
            &qyzar_shared::time::rfc3339(now - days_of(&f) * 86_400_000),
        )
        .append_pair("to", &qyzar_shared::time::rfc3339(now))
        .finish();
    let counts = ctx.api.get(&format!("/projects/analytics?{range}")).await;
    let summary = counts.ok().then(|| Summary {
        devices: counts.body["devices"]["devices"].as_i64().unwrap_or(0),
        bots: counts.body["devices"]["bots"].as_i64().unwrap_or(0),
        high: counts.body["devices"]["byRisk"]["high"]
            .as_i64()
            .unwrap_or(0),
        truncated: counts.body["devices"]["truncated"]
            .as_bool()
            .unwrap_or(false),
    });
    let rows = list.body["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| Row {
                    device_id: d["deviceId"].as_str().unwrap_or("").to_owned(),
                    seen_on: d["seenOn"].as_str().unwrap_or("").to_owned(),
                    last_seen: d["lastSeen"]
                        .as_str()
                        .unwrap_or("")
                        .get(11..19)
                        .unwrap_or("")
                        .to_owned(),
                    browser: d["browser"].as_str().unwrap_or("").to_owned(),
                    os: d["os"].as_str().unwrap_or("").to_owned(),
                    platform: d["platform"].as_str().unwrap_or("").to_owned(),
                    region: d["region"].as_str().unwrap_or("—").to_owned(),
                    risk: d["risk"].as_str().unwrap_or("").to_owned(),
                    risk_score: d["riskScore"].as_u64().unwrap_or(0),
                    bot: d["bot"].as_bool().unwrap_or(false),
                })
                .collect()
        })
        .unwrap_or_default();
    let next = list.body["nextCursor"].as_str().map(|c| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("risk", &f.risk),
            ("bot", &f.bot),
            ("region", &f.region),
            ("browser", &f.browser),
            ("days", &f.days),
        ] {
            if !v.is_empty() {
                q.append_pair(k, v);
            }
        }
        q.append_pair("cursor", c);
        format!("/ui/projects/{id}/devices?{}", q.finish())
    });
    let error = (!list.ok()).then(|| list.failure().message);
    let page = DevicesPage {
        shell,
        project_id: id,
        f,
        rows,
        next,
        error,
        summary,
    };
    if list.ok() {
        render(&page)
    } else {
        render_status(list.status, &page)
    }
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    shell: Shell,
    project_id: String,
    device_id: String,
    session_id: String,
    at: String,
    entropy: String,
    sessions: Vec<(String, String)>,
    error: Option<String>,
}

/// `?session=` on the drill-down.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Which {
    session: Option<String>,
}

/// `GET /ui/projects/{id}/devices/{device}[?session=]`.
pub(crate) async fn device(
    ctx: Ctx,
    Path((id, device)): Path<(String, String)>,
    Query(w): Query<Which>,
) -> Response {
    let (shell, _) = match ctx.project(&id, "devices").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    // Built before the call: the serializer is not `Send`.
    let query = {
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("projectId", &id);
        match &w.session {
            Some(s) => q.append_pair("sessionId", s),
            None => q.append_pair("deviceId", &device),
        };
        q.finish()
    };
    let a = ctx
        .api
        .get(&format!("/projects/entropy-snapshot?{query}"))
        .await;
    let page = DevicePage {
        shell,
        project_id: id,
        device_id: device,
        session_id: a.str("sessionId"),
        at: a.str("at"),
        entropy: serde_json::to_string_pretty(&a.body["entropy"]).unwrap_or_default(),
        sessions: a.body["sessions"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|x| {
                        (
                            x["sessionId"].as_str().unwrap_or("").to_owned(),
                            x["at"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        error: (!a.ok()).then(|| a.failure().message),
    };
    if a.ok() {
        render(&page)
    } else {
        render_status(a.status, &page)
    }
}
