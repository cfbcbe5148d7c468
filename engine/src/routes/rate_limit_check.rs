//! `POST /projects/client/rate-limit-check`: may this client do this now?
//!
//! parse (projectId, ip, metadata buckets, cost, settingsOverride, analytics,
//! dryRun) → authorise (project secret) → decide (GCRA over every bucket,
//! all-or-nothing: a denied call consumes from no bucket; `dryRun` consumes
//! nothing) → answer `{allowed, deniedBy, limit, remaining, retryAfterMs,
//! resetAt, buckets}`. A deny is an answer (`200`), not an error: `429` is
//! only for the caller itself being throttled. Denies are recorded off the
//! hot path when analytics is on.

use std::net::IpAddr;

use http::{HeaderMap, Response, StatusCode};
use qyzar_shared::settings::RateLimitSettings;
use qyzar_shared::store::DenyEvent;
use qyzar_shared::time::rfc3339;
use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use super::common;
use crate::limiter::{BucketCheck, Rule, MAX_BUCKETS, MAX_KEY_LEN};
use crate::request;
use crate::response::{self, Body};
use crate::state::Engine;

/// Most cells one call may consume.
pub const MAX_COST: u32 = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Input {
    project_id: Option<String>,
    ip: Option<String>,
    #[serde(default)]
    metadata: serde_json::Map<String, serde_json::Value>,
    cost: Option<u32>,
    settings_override: Option<RateLimitSettings>,
    analytics: Option<bool>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Bucket {
    bucket: String,
    allowed: bool,
    limit: u32,
    remaining: u32,
    retry_after_ms: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Output {
    allowed: bool,
    denied_by: Option<String>,
    limit: u32,
    remaining: u32,
    retry_after_ms: Option<u64>,
    reset_at: String,
    buckets: Vec<Bucket>,
}

/// Handles one call; the body has been read by the router.
pub async fn handle(engine: &Engine, headers: &HeaderMap, body: &[u8]) -> Response<Body> {
    match run(engine, headers, body) {
        Ok(r) => r,
        Err(e) => response::error(&e),
    }
}

fn run(engine: &Engine, headers: &HeaderMap, body: &[u8]) -> Result<Response<Body>, ApiError> {
    let now = qyzar_shared::time::now_ms();
    // parse
    let input: Input = request::json_body(headers, body)?;
    let project = common::project_id(input.project_id.as_deref())?;
    let ip_raw = input
        .ip
        .ok_or_else(|| ApiError::new(ErrorCode::MissingField).field("ip"))?;
    let ip: IpAddr = ip_raw.trim().parse().map_err(|_| {
        ApiError::with_message(ErrorCode::InvalidField, "ip is not an IP address").field("ip")
    })?;
    let cost = input.cost.unwrap_or(1);
    if cost > MAX_COST {
        return Err(
            ApiError::with_message(ErrorCode::InvalidField, "cost must be at most 1000")
                .field("cost"),
        );
    }
    if let Some(o) = &input.settings_override {
        o.validate("settingsOverride")?;
    }
    // authorise
    let live = common::live(engine, now)?;
    let (cfg, _) = common::authorise(&live, &project, headers, now)?;
    let rules = input
        .settings_override
        .as_ref()
        .unwrap_or(&cfg.settings.rate_limit);
    // decide: the ip bucket, then one bucket per metadata value with a rule.
    let ip_text = ip.to_string();
    let mut names: Vec<String> = Vec::with_capacity(4);
    let mut keys: Vec<String> = Vec::with_capacity(4);
    let mut checks: Vec<BucketCheck> = Vec::with_capacity(4);
    let mut add = |name: String, key: String, rule: Rule| -> Result<(), ApiError> {
        let k = engine
            .limiter
            .bucket_key(project.as_str(), &name, key.as_bytes())
            .map_err(|_| {
                ApiError::with_message(
                    ErrorCode::InvalidField,
                    "a bucket key is longer than 256 bytes",
                )
                .field("metadata")
            })?;
        checks.push(BucketCheck { key: k, rule });
        names.push(name);
        keys.push(key);
        Ok(())
    };
    add(
        "ip".to_owned(),
        ip_text.clone(),
        Rule {
            limit: rules.ip.limit,
            window_seconds: rules.ip.window_seconds,
        },
    )?;
    for (field, value) in &input.metadata {
        let Some(rule) = rules.metadata.get(field) else {
            continue;
        };
        let key = match value {
            serde_json::Value::String(s) => s.trim().to_lowercase(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Null => continue,
            _ => {
                return Err(ApiError::with_message(
                    ErrorCode::InvalidField,
                    "metadata values must be strings or numbers",
                )
                .field(format!("metadata.{field}")))
            }
        };
        if key.len() > MAX_KEY_LEN {
            return Err(ApiError::with_message(
                ErrorCode::InvalidField,
                "a metadata value is longer than 256 bytes",
            )
            .field(format!("metadata.{field}")));
        }
        add(
            format!("metadata:{field}"),
            key,
            Rule {
                limit: rule.limit,
                window_seconds: rule.window_seconds,
            },
        )?;
    }
    if checks.len() > MAX_BUCKETS {
        return Err(
            ApiError::with_message(ErrorCode::InvalidField, "too many buckets").field("metadata"),
        );
    }
    let decision = engine
        .limiter
        .check(engine.limiter.now_nanos(), &checks, cost, input.dry_run)
        .map_err(|_| {
            ApiError::with_message(ErrorCode::InvalidField, "too many buckets").field("metadata")
        })?;
    let denied_by = decision.denied_by.map(|i| names[i].clone());
    if !decision.allowed && !input.dry_run && input.analytics.unwrap_or(rules.analytics_on_deny) {
        if let Some(i) = decision.denied_by {
            engine.background.deny(DenyEvent {
                project_id: project.clone(),
                at: now,
                bucket: names[i].clone(),
                key: keys[i].clone(),
                ip: Some(ip_text),
            });
        }
    }
    // answer: the headline numbers are those of the denying bucket, or of
    // the bucket closest to denying.
    let outcomes = decision.buckets();
    let primary = decision.primary().map_or(outcomes[0], |i| outcomes[i]);
    let reset_after = outcomes.iter().map(|o| o.reset_after_ms).max().unwrap_or(0);
    let out = Output {
        allowed: decision.allowed,
        denied_by,
        limit: primary.limit,
        remaining: primary.remaining,
        retry_after_ms: if decision.allowed {
            Some(0)
        } else {
            primary.retry_after_ms
        },
        reset_at: rfc3339(now + reset_after as i64),
        buckets: outcomes
            .iter()
            .zip(names)
            .map(|(o, bucket)| Bucket {
                bucket,
                allowed: o.allowed,
                limit: o.limit,
                remaining: o.remaining,
                retry_after_ms: o.retry_after_ms,
            })
            .collect(),
    };
    Ok(response::json_of(StatusCode::OK, &out))
}
