//! The victim tenant's traffic: a fixed list of requests on a fixed
//! schedule, and what the engine decided for each.
//!
//! Deterministic by construction, so the control and attack phases can be
//! compared count for count: every request is known before the run; session
//! and token answers depend only on the request; each rate-limit IP is sent
//! exactly 25 times (the last one perhaps fewer) against a limit of 20 a
//! day, so 20 are allowed and 5 denied whatever the order or the timing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::time::{sleep_until, Instant};

use qyzar_shared::crypto::{random_token, sign_hs256, Claims, Hs256Key};
use qyzar_shared::ids::SessionId;

use super::World;
use crate::report::{histogram, Latency, MAX_LATENCY_US};

/// Calls per rate-limit IP: 20 allowed, then 5 denied.
pub(crate) const CALLS_PER_IP: usize = 25;
/// Distinct valid client tokens the token-verify calls cycle through.
const TOKENS: usize = 500;

/// What a victim request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// `POST /projects/client/session-verify`.
    SessionVerify,
    /// `POST /projects/client/token-verify`.
    TokenVerify,
    /// `POST /projects/client/rate-limit-check`.
    RateLimit,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::SessionVerify => "session_verify",
            Kind::TokenVerify => "token_verify",
            Kind::RateLimit => "rate_limit",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Kind::SessionVerify => "/projects/client/session-verify",
            Kind::TokenVerify => "/projects/client/token-verify",
            Kind::RateLimit => "/projects/client/rate-limit-check",
        }
    }
}

/// The victim's requests, in schedule order.
pub(crate) struct Plan {
    requests: Vec<(Kind, Bytes)>,
    secret: HeaderValue,
}

fn token(key: &Hs256Key, aud: &str, exp: i64, k: usize) -> String {
    let now = exp - 7200;
    let claims = Claims {
        iss: "qyzar".into(),
        aud: aud.into(),
        sub: format!("user{k}@victim.example"),
        iat: now,
        exp,
        jti: random_token("tok_", 16),
        sid: None,
        md: Some(json!({"plan": "pro"})),
    };
    sign_hs256(&claims, key)
}

/// `total` requests: session-verify, token-verify and rate-limit in turn.
/// Tokens stay valid for the run and two hours more.
pub(crate) fn plan(world: &World, total: usize, duration: Duration) -> Plan {
    let v = &world.victim;
    let exp = qyzar_shared::time::now_ms() / 1000 + duration.as_secs() as i64 * 3 + 7200;
    let tokens: Vec<String> = (0..TOKENS).map(|k| token(&v.key, &v.id, exp, k)).collect();
    let stranger = Hs256Key::from_raw([0x5a; 32]);
    let requests = (0..total)
        .map(|k| {
            let (kind, r) = match k % 3 {
                0 => (Kind::SessionVerify, k / 3),
                1 => (Kind::TokenVerify, k / 3),
                _ => (Kind::RateLimit, k / 3),
            };
            let body = match kind {
                Kind::SessionVerify => {
                    let (id, token) = if r % 8 == 7 || world.sessions.is_empty() {
                        (
                            SessionId::generate().to_string(),
                            random_token("qz_st_", 32),
                        )
                    } else {
                        world.sessions[r % world.sessions.len()].clone()
                    };
                    json!({"projectId": v.id, "sessionId": id, "sessionToken": token})
                }
                Kind::TokenVerify => {
                    let t = if r % 8 == 7 {
                        token(&stranger, &v.id, exp, r)
                    } else {
                        tokens[r % TOKENS].clone()
                    };
                    json!({"projectId": v.id, "clientToken": t})
                }
                Kind::RateLimit => {
                    let ip = r / CALLS_PER_IP;
                    json!({
                        "projectId": v.id,
                        "ip": format!("198.18.{}.{}", ip / 250 % 250, ip % 250),
                        "metadata": {"email": format!("user{}@victim.example", r % 50)},
                    })
                }
            };
            (kind, Bytes::from(body.to_string()))
        })
        .collect();
    Plan {
        requests,
        secret: v.secret.clone(),
    }
}

impl Plan {
    fn request(&self, k: usize) -> (Kind, Request<Full<Bytes>>) {
        let (kind, body) = &self.requests[k];
        let mut req = Request::new(Full::new(body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = http::Uri::from_static(kind.path());
        let h = req.headers_mut();
        h.insert(HOST, HeaderValue::from_static("engine"));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(
            HeaderName::from_static("x-qyzar-project-secret"),
            self.secret.clone(),
        );
        (*kind, req)
    }
}

/// The decision an answer carries, as a counter name.
fn decision(kind: Kind, status: u16, body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let name = kind.name();
    if status != 200 {
        let code = v["error"]["code"].as_str().unwrap_or("?");
        return format!("{name}:status:{status}:{code}");
    }
    match kind {
        Kind::SessionVerify | Kind::TokenVerify => match v["valid"].as_bool() {
            Some(true) => format!("{name}:valid"),
            _ => format!("{name}:invalid:{}", v["reason"].as_str().unwrap_or("?")),
        },
        Kind::RateLimit => match v["allowed"].as_bool() {
            Some(true) => format!("{name}:allowed"),
            _ => format!("{name}:denied:{}", v["deniedBy"].as_str().unwrap_or("?")),
        },
    }
}

/// What the victim saw.
pub(crate) struct Outcome {
    decisions: BTreeMap<String, u64>,
    latency: BTreeMap<Kind, Histogram<u64>>,
    elapsed: Duration,
}

impl Outcome {
    /// `{decisions, latency_us, latency_us_by_kind, elapsed_s}`.
    pub(crate) fn json(&self) -> Value {
        let mut all = histogram();
        for h in self.latency.values() {
            let _ = all.add(h);
        }
        let lat = |h: &Histogram<u64>| {
            let l = Latency::of(h);
            json!({"p50": l.p50, "p90": l.p90, "p99": l.p99, "p99_9": l.p99_9, "max": l.max, "count": h.len()})
        };
        json!({
            "decisions": self.decisions,
            "latency_us": lat(&all),
            "latency_us_by_kind": self.latency.iter().map(|(k, h)| (k.name(), lat(h))).collect::<BTreeMap<_, _>>(),
            "elapsed_s": crate::report::round2(self.elapsed.as_secs_f64()),
        })
    }
}

/// Sends the whole plan at `rate`/s on `connections` connections. Latency
/// counts from the intended send time when a request goes out late (every
/// connection was busy), from the send otherwise (see `crate::load`).
/// Requests not sent by twice the planned time plus 30 s count as
/// `<kind>:not_sent`, so a stalled engine cannot hang the benchmark.
pub(crate) async fn run(
    plan: Arc<Plan>,
    addr: std::net::SocketAddr,
    connections: usize,
    rate: f64,
    progress: bool,
) -> Outcome {
    let start = Instant::now();
    let planned = Duration::from_secs_f64(plan.requests.len() as f64 / rate);
    let deadline = start + planned * 2 + Duration::from_secs(30);
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..connections.max(1))
        .map(|_| {
            let (plan, next) = (Arc::clone(&plan), Arc::clone(&next));
            tokio::spawn(async move {
                let mut decisions: BTreeMap<String, u64> = BTreeMap::new();
                let mut latency: BTreeMap<Kind, Histogram<u64>> = BTreeMap::new();
                let mut sender = None;
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                    if k >= plan.requests.len() {
                        break;
                    }
                    let (kind, req) = plan.request(k);
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    let claimed = Instant::now();
                    if Instant::now() >= deadline {
                        *decisions
                            .entry(format!("{}:not_sent", kind.name()))
                            .or_default() += 1;
                        continue;
                    }
                    if due > claimed + Duration::from_millis(1) {
                        sleep_until(due - Duration::from_millis(1)).await;
                    }
                    let s = match sender.take() {
                        Some(s) => Some(s),
                        None => super::connect(addr).await,
                    };
                    let Some(mut s) = s else {
                        *decisions
                            .entry(format!("{}:connect", kind.name()))
                            .or_default() += 1;
                        continue;
                    };
                    let sent = Instant::now();
                    let answer = super::exchange(&mut s, req).await;
                    let from = if claimed >= due { due } else { sent };
                    let us = (Instant::now() - from)
                        .as_micros()
                        .clamp(1, u128::from(MAX_LATENCY_US)) as u64;
                    let key = match &answer {
                        Ok((status, body)) => decision(kind, *status, body),
                        Err(_) => format!("{}:io", kind.name()),
                    };
                    *decisions.entry(key).or_default() += 1;
                    if answer.is_ok() {
                        let _ = latency.entry(kind).or_insert_with(histogram).record(us);
                        sender = Some(s);
                    }
                }
                (decisions, latency)
            })
        })
        .collect();
    let ticker = progress.then(|| {
        let next = Arc::clone(&next);
        let total = plan.requests.len() as u64;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.tick().await;
            loop {
                tick.tick().await;
                let n = next.load(Ordering::Relaxed).min(total);
                eprintln!("  victim: {n}/{total} requests claimed");
            }
        })
    });
    let mut out = Outcome {
        decisions: BTreeMap::new(),
        latency: BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        let Ok((d, l)) = t.await else { continue };
        for (k, v) in d {
            *out.decisions.entry(k).or_default() += v;
        }
        for (k, h) in l {
            let _ = out.latency.entry(k).or_insert_with(histogram).add(&h);
        }
    }
    if let Some(t) = ticker {
        t.abort();
    }
    out.elapsed = start.elapsed();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_named_by_kind_and_answer() {
        let d = |k, s, b: &str| decision(k, s, b.as_bytes());
        assert_eq!(
            d(Kind::SessionVerify, 200, r#"{"valid":true}"#),
            "session_verify:valid"
        );
        assert_eq!(
            d(
                Kind::TokenVerify,
                200,
                r#"{"valid":false,"reason":"bad_signature"}"#
            ),
            "token_verify:invalid:bad_signature"
        );
        assert_eq!(
            d(Kind::RateLimit, 200, r#"{"allowed":false,"deniedBy":"ip"}"#),
            "rate_limit:denied:ip"
        );
        assert_eq!(
            d(
                Kind::RateLimit,
                503,
                r#"{"error":{"code":"store_unavailable"}}"#
            ),
            "rate_limit:status:503:store_unavailable"
        );
    }
}
