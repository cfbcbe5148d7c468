//! The hostile mix: outsiders and the attacker tenant, over HTTP only.
//!
//! `--attack-connections` connections take the request kinds in turn
//! ([`KINDS`]), paced together at `--attack-rate` requests/s (0: as fast as
//! each connection is answered). `--slow-connections` more connections
//! trickle: half send their headers a byte a second, half send complete
//! headers announcing a 60 KiB body and then trickle the body; each
//! reconnects when the engine closes it. What the engine answered each kind
//! is counted, and how long the engine let trickling connections live.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use qyzar_shared::crypto::{sign_hs256, Claims, MAX_TOKEN_LEN};

use super::World;
use crate::args::AbuseArgs;

/// The hostile request kinds, taken in turn by the attack connections.
pub const KINDS: &[&str] = &["junk", "idempotency", "big_token", "limiter_flood"];

/// Body size of the idempotency kind: just under the engine's 64 KiB cap.
const BIG_BODY: usize = 60 * 1024;

/// The running attack.
pub(crate) struct Attack {
    tasks: Vec<JoinHandle<BTreeMap<String, BTreeMap<String, u64>>>>,
    slow: Vec<JoinHandle<SlowTally>>,
}

/// What the trickling connections saw.
#[derive(Debug, Default, Clone, Copy)]
struct SlowTally {
    opened: u64,
    closed_by_engine: u64,
    bytes: u64,
    longest_held_ms: u64,
}

/// Starts the attack; it runs until `stop` is set.
pub(crate) fn start(
    a: &AbuseArgs,
    world: Arc<World>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Attack {
    let seq = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let big = Bytes::from(big_body(&world.victim.id));
    let tasks = (0..a.attack_connections)
        .map(|i| {
            let kind: &'static str = KINDS
                .iter()
                .copied()
                .filter(|k| a.attack_kinds.iter().any(|c| c == k))
                .nth(i % a.attack_kinds.len().max(1))
                .unwrap_or(KINDS[0]);
            let ctx = Ctx {
                world: Arc::clone(&world),
                seq: Arc::clone(&seq),
                big: big.clone(),
            };
            let (stop, slots, rate) = (Arc::clone(&stop), Arc::clone(&slots), a.attack_rate);
            tokio::spawn(async move {
                let mut tally: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
                let mut sender = None;
                let mut rng = i as u64 * 0x9E37_79B9 + 1;
                while !stop.load(Ordering::Relaxed) {
                    if rate > 0.0 {
                        let k = slots.fetch_add(1, Ordering::Relaxed);
                        sleep_until(start + Duration::from_secs_f64(k as f64 / rate)).await;
                    }
                    let s = match sender.take() {
                        Some(s) => Some(s),
                        None => super::connect(addr).await,
                    };
                    let Some(mut s) = s else {
                        *tally
                            .entry(kind.into())
                            .or_default()
                            .entry("connect".into())
                            .or_default() += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let req = ctx.request(kind, &mut rng);
                    let key = match super::exchange(&mut s, req).await {
                        Ok((status, _)) => {
                            sender = Some(s);
                            status.to_string()
                        }
                        Err(_) => "io".into(),
                    };
                    *tally
                        .entry(kind.into())
                        .or_default()
                        .entry(key)
                        .or_default() += 1;
                }
                tally
            })
        })
        .collect();
    let slow = (0..a.slow_connections)
        .map(|i| tokio::spawn(trickle(addr, i % 2 == 0, Arc::clone(&stop))))
        .collect();
    Attack { tasks, slow }
}

impl Attack {
    /// Waits for every task (they end once `stop` is set) and reports.
    pub(crate) async fn finish(self) -> Value {
        let mut kinds: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for t in self.tasks {
            for (kind, statuses) in t.await.unwrap_or_default() {
                for (status, n) in statuses {
                    *kinds
                        .entry(kind.clone())
                        .or_default()
                        .entry(status)
                        .or_default() += n;
                }
            }
        }
        let mut slow = SlowTally::default();
        for t in self.slow {
            let s = t.await.unwrap_or_default();
            slow.opened += s.opened;
            slow.closed_by_engine += s.closed_by_engine;
            slow.bytes += s.bytes;
            slow.longest_held_ms = slow.longest_held_ms.max(s.longest_held_ms);
        }
        json!({
            "requests_by_kind": kinds,
            "slow": {
                "opened": slow.opened,
                "closed_by_engine": slow.closed_by_engine,
                "bytes_trickled": slow.bytes,
                "longest_held_s": crate::report::round2(slow.longest_held_ms as f64 / 1000.0),
            },
        })
    }
}

/// What a request builder needs.
struct Ctx {
    world: Arc<World>,
    seq: Arc<AtomicU64>,
    big: Bytes,
}

/// A 60 KiB token-mint body for the victim's project (sent without its
/// secret, the reproduction of an idempotency slot made before
/// authentication) or, re-targeted, the attacker's.
fn big_body(project: &str) -> String {
    let head = format!(r#"{{"projectId":"{project}","metadata":{{"pad":""#);
    let pad = BIG_BODY.saturating_sub(head.len() + 4);
    format!("{head}{}\"}}}}", "x".repeat(pad))
}

fn step(rng: &mut u64) -> u64 {
    *rng = rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const JUNK_PATHS: &[&str] = &[
    "/connect",
    "/connect/reverify",
    "/projects/client/session-verify",
    "/projects/client/token",
    "/projects/client/token-verify",
    "/projects/client/rate-limit-check",
    "/projects/client/ato-login-attempt",
    "/projects/client/jwks?projectId=%ff%fe",
    "/%2e%2e/admin",
];

impl Ctx {
    fn request(&self, kind: &str, rng: &mut u64) -> Request<Full<Bytes>> {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        let w = &self.world;
        let (path, body, mut headers): (&str, Bytes, Vec<(HeaderName, HeaderValue)>) = match kind {
            "junk" => {
                let r = step(rng);
                let path = JUNK_PATHS[(r % JUNK_PATHS.len() as u64) as usize];
                let len = (r >> 8) as usize % 4096;
                let bytes: Vec<u8> = (0..len).map(|i| (step(rng) >> (i % 8)) as u8).collect();
                let mut h = Vec::new();
                if r & 1 == 0 {
                    h.push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
                }
                if r & 2 == 0 {
                    h.push((
                        secret_name(),
                        HeaderValue::from_static("qz_sk_not_a_secret"),
                    ));
                }
                (path, Bytes::from(bytes), h)
            }
            "idempotency" => {
                let key = HeaderValue::from_str(&format!("abuse-{n}-{}", step(rng)))
                    .unwrap_or(HeaderValue::from_static("k"));
                let mut h = vec![
                    (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                    (HeaderName::from_static("idempotency-key"), key),
                ];
                // Outsiders: 60 KiB bodies without credentials, refused
                // before anything is kept. The attacker: valid token mints
                // with the largest metadata a token may carry, each under a
                // fresh key, so every answer (a 5 KiB token) is remembered
                // and its project's idempotency share is what must hold.
                let (path, body) = if n % 2 == 0 {
                    let path = if n % 4 == 0 {
                        "/projects/client/token"
                    } else {
                        "/projects/client/ato-login-attempt"
                    };
                    (path, self.big.clone())
                } else {
                    h.push((secret_name(), w.attacker.secret.clone()));
                    let pad = "x".repeat(4000);
                    let body = json!({"projectId": w.attacker.id, "metadata": {"pad": pad}});
                    ("/projects/client/token", Bytes::from(body.to_string()))
                };
                (path, body, h)
            }
            "big_token" => {
                let token = big_token(w, n);
                let body = json!({"projectId": w.attacker.id, "clientToken": token});
                (
                    "/projects/client/token-verify",
                    Bytes::from(body.to_string()),
                    vec![
                        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                        (secret_name(), w.attacker.secret.clone()),
                    ],
                )
            }
            _ => {
                // The longest hold a free plan may ask (an hour, a generous
                // limit, four buckets): every key stays busy for the whole
                // run, so the project's key budget is what must hold.
                let long = json!({"limit": 10_000, "windowSeconds": 3_600});
                let metadata: serde_json::Map<String, Value> = (0..4)
                    .map(|b| (format!("b{b}"), json!(format!("{n:x}-{b}-{:x}", step(rng)))))
                    .collect();
                let rules: serde_json::Map<String, Value> =
                    (0..4).map(|b| (format!("b{b}"), long.clone())).collect();
                let body = json!({
                    "projectId": w.attacker.id,
                    "ip": format!("2001:db8:{:x}:{:x}::{:x}", n >> 32, (n >> 16) & 0xffff, n & 0xffff),
                    "metadata": metadata,
                    "settingsOverride": {"ip": long, "metadata": rules},
                });
                (
                    "/projects/client/rate-limit-check",
                    Bytes::from(body.to_string()),
                    vec![
                        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                        (secret_name(), w.attacker.secret.clone()),
                    ],
                )
            }
        };
        headers.push((HOST, HeaderValue::from_static("engine")));
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = http::Uri::from_static(path);
        for (k, v) in headers {
            req.headers_mut().insert(k, v);
        }
        req
    }
}

fn secret_name() -> HeaderName {
    HeaderName::from_static("x-qyzar-project-secret")
}

/// A client token of nearly [`MAX_TOKEN_LEN`] bytes, new each time (its
/// `jti`), signed with the attacker's own project key: valid, and as large
/// as the engine accepts.
pub(crate) fn big_token(w: &World, n: u64) -> String {
    let now = qyzar_shared::time::now_ms() / 1000;
    let mut pad = MAX_TOKEN_LEN * 3 / 4 - 200;
    loop {
        let claims = Claims {
            iss: "qyzar".into(),
            aud: w.attacker.id.clone(),
            sub: format!("abuser-{n}"),
            iat: now,
            exp: now + 3600,
            jti: format!("tok_abuse_{n}"),
            sid: None,
            md: Some(json!({"pad": "p".repeat(pad)})),
        };
        let t = sign_hs256(&claims, &w.attacker.key);
        if t.len() <= MAX_TOKEN_LEN || pad == 0 {
            return t;
        }
        pad = pad.saturating_sub((t.len() - MAX_TOKEN_LEN) * 3 / 4 + 4);
    }
}

/// One trickling connection, reopened whenever the engine closes it.
async fn trickle(addr: SocketAddr, body: bool, stop: Arc<AtomicBool>) -> SlowTally {
    let mut t = SlowTally::default();
    let head_full = format!(
        "POST /projects/client/token-verify HTTP/1.1\r\nhost: engine\r\ncontent-type: application/json\r\ncontent-length: {BIG_BODY}\r\n\r\n"
    );
    let head_part = "POST /projects/client/token-verify HTTP/1.1\r\nhost: engine\r\n";
    let drip: &[u8] = if body { b"{" } else { b"x" };
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        t.opened += 1;
        let opened = Instant::now();
        let head = if body {
            head_full.as_bytes()
        } else {
            head_part.as_bytes()
        };
        let mut closed = s.write_all(head).await.is_err();
        let mut buf = [0u8; 512];
        while !closed && !stop.load(Ordering::Relaxed) {
            tokio::select! {
                r = s.read(&mut buf) => {
                    // An answer (408, 400, 413…) or EOF: the engine is done with it.
                    let _ = r;
                    closed = true;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if s.write_all(drip).await.is_err() {
                        closed = true;
                    } else {
                        t.bytes += 1;
                    }
                }
            }
        }
        let held = opened.elapsed().as_millis() as u64;
        t.longest_held_ms = t.longest_held_ms.max(held);
        if closed {
            t.closed_by_engine += 1;
        }
    }
    t
}
