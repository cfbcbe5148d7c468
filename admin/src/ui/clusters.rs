//! `/ui/projects/{id}/clusters`: groups of devices that share most of
//! their stable entropy but differ in a few components (bot farms), each
//! explained: what they share, what varies, how many, since when, how
//! risky, and example devices to open. From the `clusters` section of `GET
//! /projects/analytics` (computed in the background, see
//! `crate::clusters`).

use askama::Template;
use axum::extract::Path;
use axum::response::Response;

use super::layout::Shell;
use super::{render, Ctx};

/// One cluster as shown.
pub(crate) struct View {
    pub id: String,
    pub devices: u64,
    pub device_days: u64,
    pub shared: Vec<(String, String)>,
    pub varying: Vec<(String, u64, String)>,
    pub first_seen: String,
    pub last_seen: String,
    pub max_risk: u64,
    pub mean_risk: u64,
    pub bots: u64,
    pub examples: Vec<String>,
}

#[derive(Template)]
#[template(path = "clusters.html")]
struct ClustersPage {
    shell: Shell,
    project_id: String,
    clusters: Vec<View>,
    computed_at: String,
    error: Option<String>,
}

/// `GET /ui/projects/{id}/clusters`.
pub(crate) async fn page(ctx: Ctx, Path(id): Path<String>) -> Response {
    let (shell, _) = match ctx.project(&id, "clusters").await {
        Ok(x) => x,
        Err(res) => return res,
    };
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("projectId", &id)
        .append_pair("section", "clusters")
        .finish();
    let a = ctx.api.get(&format!("/projects/analytics?{q}")).await;
    let c = &a.body["clusters"];
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let clusters = c["clusters"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|k| View {
                    id: text(&k["clusterId"]),
                    devices: k["devices"].as_u64().unwrap_or(0),
                    device_days: k["deviceDays"].as_u64().unwrap_or(0),
                    shared: k["shared"]
                        .as_object()
                        .map(|o| o.iter().map(|(n, v)| (n.clone(), text(v))).collect())
                        .unwrap_or_default(),
                    varying: k["varying"]
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(n, v)| {
                                    let ex: Vec<String> = v["examples"]
                                        .as_array()
                                        .map(|e| e.iter().map(text).collect())
                                        .unwrap_or_default();
                                    (
                                        n.clone(),
                                        v["distinct"].as_u64().unwrap_or(0),
                                        ex.join(" · "),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    first_seen: text(&k["firstSeen"]),
                    last_seen: text(&k["lastSeen"]),
                    max_risk: k["maxRisk"].as_u64().unwrap_or(0),
                    mean_risk: k["meanRisk"].as_u64().unwrap_or(0),
                    bots: k["bots"].as_u64().unwrap_or(0),
                    examples: k["examples"]
                        .as_array()
                        .map(|e| e.iter().map(text).collect())
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    render(&ClustersPage {
        shell,
        project_id: id,
        clusters,
        computed_at: text(&c["computedAt"]),
        error: (!a.ok()).then(|| a.failure().message),
    })
}
