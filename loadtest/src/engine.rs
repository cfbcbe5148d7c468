//! `engine-compare`: every hot engine route against the hello-world
//! baseline, self-contained (no `qyzar dev`, no admin).
//!
//! 1. The generator makes a realistic world: `--projects` projects (one in
//!    ten signs client tokens with EdDSA, the others HS256; each with three
//!    rate-limit rules and ATO settings) and `--sessions` sessions spread over
//!    them. The snapshot is encoded with the admin's
//!    `qyzar_shared::snapshot::encode_snapshot` into a temporary file, the
//!    sessions into a text file.
//! 2. It starts this binary's `engine-serve` as a child: a real
//!    `qyzar_engine::Engine` over a fresh embedded store in the temporary
//!    directory, the snapshot installed, the sessions seeded into the
//!    session cache with `SessionCache::cache` (memory only, as a batched
//!    touch does: the hit scenarios never ask the store). Its own process,
//!    runtime and threads, like the baseline's, and `--pin-server` pins both.
//! 3. Each scenario runs `compare`'s interleaved measurement (closed loop
//!    `rounds` × (baseline, route), then open loop at half the baseline's
//!    median maximum) and the summary goes to a table and, with `--json`,
//!    a file. With `--rate N` only open rounds at N/s run
//!    ([`crate::compare::at_rate`]): the open rounds at half the baseline's
//!    maximum overload a route slower than it, and the rounds that follow
//!    read worse for it (BENCHMARKS.md, "The tail target against the
//!    durable ceiling at the same rate").
//!
//! The `instrument-*` scenarios ([`INSTRUMENT_SCENARIOS`]) send what the
//! shared instrument (`../shared/perf/engine_ratios.py`) sends, request for
//! request, to a project with `qyzar dev`'s settings: only on the same work
//! can the two tools be held to agree.
//!
//! Every scenario's requests cycle through many variants (see
//! [`crate::plan::Variant`]) by the run's global send number, so 32
//! connections do not hammer one key. One answer of each is checked first
//! (status and body) so a scenario never measures an error path.
//!
//! Token caching: the child's verified-token cache holds about
//! [`TOKEN_CACHE_CAPACITY`] tokens (`--token-cache N` gives it N KiB, a
//! token with its claims weighing about 1 KiB; the engine's default is
//! 256 MiB). The cached
//! scenarios cycle through [`CACHED_TOKENS`] tokens, which stay cached; the
//! uncached scenario cycles through [`UNCACHED_TOKENS`] distinct tokens
//! minted by the generator, so a token comes back only after that many
//! requests, long after the small cache has evicted it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method};
use serde_json::{json, Value};

use qyzar_shared::crypto::{
    client_token_key, random_token, sha256, sign_eddsa, sign_hs256, Claims, Ed25519Signer,
    Hs256Key, ProjectSecret,
};
use qyzar_shared::ids::ProjectId;
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::snapshot::{encode_snapshot, provision, Snapshot};

use crate::args::{EngineCompareArgs, EngineServeArgs};
use crate::compare::{at_rate, interleave, spawn_baseline, spawn_child, Outcome, Servers};
use crate::load;
use crate::plan::{Entry, Plan, Target, Variant};

/// The child engine's verified-token cache capacity.
pub const TOKEN_CACHE_CAPACITY: u64 = 4096;
/// Tokens the cached token-verify scenarios cycle through.
pub const CACHED_TOKENS: usize = 1000;
/// Distinct tokens the uncached token-verify scenario cycles through.
pub const UNCACHED_TOKENS: usize = 100_000;
/// Requests sampled (Zipf) for the session-verify scenario.
pub const ZIPF_SAMPLES: usize = 200_000;
/// The Zipf exponent of session popularity.
pub const ZIPF_S: f64 = 1.0;

/// The scenarios, in the order they run. The uncached token scenario comes
/// after both cached ones: its 100 000 tokens fill the small token cache
/// across the HS256 projects, and an EdDSA project then holds the most
/// bytes of the cache, so under the engine's largest-holder-gives-way total
/// (`engine/src/budget.rs`) its tokens were the ones evicted and the
/// "cached" EdDSA scenario verified every token (0.19 of the baseline run
/// after it, 0.84 alone; BENCHMARKS.md).
pub const SCENARIOS: &[&str] = &[
    "session-verify-hit",
    "rate-limit-3-buckets",
    "token-mint-hs256",
    "token-verify-hs256-cached",
    "token-verify-eddsa-cached",
    "token-verify-hs256-uncached",
    "ato-login-attempt",
    "ato-login-attempt-hot",
];

/// The shared instrument's workloads (`../shared/perf/engine_ratios.py`),
/// request for request: its bodies byte for byte (Python's `json.dumps`
/// spacing, the Lua scripts' formats and counters), `Authorization:
/// Bearer`, one session and one token, and a project with `qyzar dev`'s
/// default settings (rate limits `ip` 60/min and `metadata.email` 5 per
/// 5 min, so most of its rate-limit checks are denials). The scenarios
/// above are heavier than the instrument's (Zipf over 100 000 sessions, 3
/// buckets all allowed, metadata in minted tokens, 1 000 tokens), so the
/// two tools can only agree on these. `--scenarios instrument` runs them.
pub const INSTRUMENT_SCENARIOS: &[&str] = &[
    "instrument-session-verify",
    "instrument-rate-limit-check",
    "instrument-token-mint-hs256",
    "instrument-token-verify-hs256-cached",
    "instrument-ato-login-attempt",
    "instrument-ato-login-attempt-spread",
];

/// Requests of an instrument scenario whose Lua script makes a new key per
/// request: wrk counts from 1 again in every run and sends up to about
/// 700 000 in a 5 s round, so within a round no variant repeats.
const INSTRUMENT_VARIANTS: usize = 1_000_000;

/// The settings every project gets; EdDSA projects add `tokenAlgorithm`.
/// Limits are high so the checks are allowed (the common case) and the
/// ATO thresholds are the defaults' shape.
fn settings_json(eddsa: bool) -> String {
    format!(
        r#"{{"allowedOrigins":["https://shop.example"],
  "rateLimit":{{"ip":{{"limit":1000000,"windowSeconds":60}},
    "metadata":{{"email":{{"limit":1000000,"windowSeconds":300}},"userId":{{"limit":1000000,"windowSeconds":60}}}}}},
  "ato":{{"challengeScore":40,"blockScore":85,"failedAttemptsWindowSeconds":900}}{}}}"#,
        if eddsa {
            r#","tokenAlgorithm":"EdDSA""#
        } else {
            ""
        }
    )
}

/// A project as the generator knows it.
struct Project {
    id: String,
    secret: HeaderValue,
    /// `Bearer <secret>`, as the shared instrument authenticates.
    bearer: HeaderValue,
    hs256: Hs256Key,
    ed25519: Option<Ed25519Signer>,
}

/// A seeded session.
struct SeededSession {
    /// Index into [`World::projects`] (`usize::MAX` for the dev project's).
    project: usize,
    id: String,
    token: String,
}

/// The generated world.
struct World {
    projects: Vec<Project>,
    sessions: Vec<SeededSession>,
    /// A project with `qyzar dev`'s default settings, for the instrument's
    /// scenarios only (no other scenario picks it).
    dev: Project,
    /// The one session of `dev`, as the instrument creates one.
    dev_session: SeededSession,
}

/// A small deterministic generator (SplitMix64) for sampling.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `samples` draws of a rank in `0..n` with probability ∝ 1 / (rank+1)^s.
pub fn zipf(n: usize, s: f64, samples: usize, seed: u64) -> Vec<usize> {
    let mut cdf = Vec::with_capacity(n);
    let mut total = 0.0;
    for k in 0..n {
        total += 1.0 / ((k + 1) as f64).powf(s);
        cdf.push(total);
    }
    let mut rng = Rng(seed);
    (0..samples)
        .map(|_| {
            let u = rng.unit() * total;
            cdf.partition_point(|&c| c < u).min(n.saturating_sub(1))
        })
        .collect()
}

/// One project: its configuration for the snapshot and what the generator
/// keeps of it to sign and send requests.
fn make_project(
    settings: &str,
    eddsa: bool,
    now: i64,
) -> Result<(qyzar_shared::snapshot::ProjectConfig, Project), String> {
    let id = ProjectId::generate();
    let secret = ProjectSecret::generate();
    let settings = ProjectSettings::parse_and_validate(settings.as_bytes())
        .map_err(|e| format!("the bench settings do not validate: {e:?}"))?;
    let pk = eddsa.then(Ed25519Signer::generate_pkcs8);
    let mut cfg = provision::project_config(&id, &secret, settings, pk.as_deref())
        .map_err(|e| format!("project config: {e}"))?;
    cfg.origin_tokens.push(provision::origin_token(
        &random_token("qz_ot_", 24),
        "https://shop.example",
        now + 86_400_000,
    ));
    let project = Project {
        id: id.to_string(),
        secret: HeaderValue::from_str(secret.expose()).map_err(|e| e.to_string())?,
        bearer: HeaderValue::from_maybe_shared(Bytes::from(format!("Bearer {}", secret.expose())))
            .map_err(|e| e.to_string())?,
        hs256: client_token_key(&secret, &id),
        ed25519: match pk {
            Some(pk) => Some(Ed25519Signer::from_pkcs8(&pk).map_err(|e| e.to_string())?),
            None => None,
        },
    };
    Ok((cfg, project))
}

/// `qyzar dev`'s project: default settings but for its allowed origin.
const DEV_SETTINGS: &str = r#"{"allowedOrigins":["https://shop.example"]}"#;

/// Builds the world and writes the snapshot and sessions files into `dir`.
fn generate(projects: usize, sessions: usize, dir: &Path) -> Result<World, String> {
    let now = qyzar_shared::time::now_ms();
    let mut configs = Vec::with_capacity(projects + 1);
    let mut out = Vec::with_capacity(projects);
    for i in 0..projects {
        let eddsa = i % 10 == 9;
        let (cfg, project) = make_project(&settings_json(eddsa), eddsa, now)?;
        configs.push(cfg);
        out.push(project);
    }
    let (cfg, dev) = make_project(DEV_SETTINGS, false, now)?;
    configs.push(cfg);
    let snap = Snapshot::new(1, now, configs).map_err(|e| format!("snapshot: {e}"))?;
    let bytes = encode_snapshot(&snap).map_err(|e| format!("encoding the snapshot: {e}"))?;
    std::fs::write(dir.join("snapshot.bin"), &bytes).map_err(|e| e.to_string())?;
    let mut rng = Rng(7);
    let mut text = String::with_capacity(sessions * 100);
    let mut seeded = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let project = rng.below(projects);
        let id = qyzar_shared::ids::SessionId::generate().to_string();
        let token = random_token("qz_st_", 32);
        let _ = writeln!(text, "{}\t{id}\t{token}", out[project].id);
        seeded.push(SeededSession { project, id, token });
    }
    let dev_session = SeededSession {
        project: usize::MAX,
        id: qyzar_shared::ids::SessionId::generate().to_string(),
        token: random_token("qz_st_", 32),
    };
    let _ = writeln!(
        text,
        "{}\t{}\t{}",
        dev.id, dev_session.id, dev_session.token
    );
    std::fs::write(dir.join("sessions.tsv"), text).map_err(|e| e.to_string())?;
    println!(
        "world: {projects} projects (snapshot {} bytes), {sessions} sessions, in {}",
        bytes.len(),
        dir.display()
    );
    Ok(World {
        projects: out,
        sessions: seeded,
        dev,
        dev_session,
    })
}

fn secret_header() -> HeaderName {
    HeaderName::from_static("x-qyzar-project-secret")
}

fn variant(p: &Project, body: Value) -> Variant {
    Variant {
        body: Bytes::from(body.to_string()),
        headers: vec![(secret_header(), p.secret.clone())],
    }
}

/// A request as the instrument sends it: `body` with the project's secret
/// as `Authorization: Bearer` (one shared header value: a million variants
/// do not each carry a copy).
fn bearer(p: &Project, body: String) -> Variant {
    Variant {
        body: Bytes::from(body),
        headers: vec![(http::header::AUTHORIZATION, p.bearer.clone())],
    }
}

/// An object as Python's `json.dumps` writes it (`", "` and `": "`
/// between items), as the instrument's `QZ_BODY` is.
fn py_dumps(fields: &[(&str, Value)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{}: {v}", Value::from(*k));
    }
    s.push('}');
    s
}

fn claims(p: &Project, k: usize, now_s: i64) -> Claims {
    Claims {
        iss: "qyzar".into(),
        aud: p.id.clone(),
        sub: format!("user{k}@example.com"),
        iat: now_s,
        exp: now_s + 3600,
        jti: random_token("tok_", 16),
        sid: None,
        md: Some(json!({ "identifier": format!("user{k}@example.com"), "plan": "pro" })),
    }
}

/// The requests of scenario `name`.
fn scenario(name: &str, w: &World) -> Result<Entry, String> {
    let mut rng = Rng(name.len() as u64 * 1_000_003);
    let now_s = qyzar_shared::time::now_ms() / 1000;
    let hs: Vec<&Project> = w.projects.iter().filter(|p| p.ed25519.is_none()).collect();
    let ed: Vec<&Project> = w.projects.iter().filter(|p| p.ed25519.is_some()).collect();
    let post = |path: &str, variants| Entry::with_variants(name, Method::POST, path, variants);
    match name {
        "session-verify-hit" => {
            // Session popularity is Zipf; which session has which rank is
            // random, so the hot sessions are spread over projects.
            let mut rank_to_session: Vec<usize> = (0..w.sessions.len()).collect();
            for i in (1..rank_to_session.len()).rev() {
                rank_to_session.swap(i, rng.below(i + 1));
            }
            let v = zipf(w.sessions.len(), ZIPF_S, ZIPF_SAMPLES, 11)
                .into_iter()
                .map(|r| {
                    let s = &w.sessions[rank_to_session[r]];
                    let p = &w.projects[s.project];
                    variant(
                        p,
                        json!({"projectId": p.id, "sessionId": s.id, "sessionToken": s.token}),
                    )
                })
                .collect();
            post("/projects/client/session-verify", v)
        }
        "rate-limit-3-buckets" => {
            let v = (0..50_000)
                .map(|_| {
                    let p = &w.projects[rng.below(w.projects.len())];
                    let u = rng.below(20_000);
                    variant(
                        p,
                        json!({
                            "projectId": p.id,
                            "ip": format!("198.51.{}.{}", u / 250, u % 250),
                            "metadata": {"email": format!("user{u}@example.com"), "userId": format!("u{u}")},
                        }),
                    )
                })
                .collect();
            post("/projects/client/rate-limit-check", v)
        }
        "token-mint-hs256" => {
            let v = (0..20_000)
                .map(|_| {
                    let p = hs[rng.below(hs.len())];
                    let u = rng.below(20_000);
                    variant(p, json!({"projectId": p.id, "metadata": {"identifier": format!("user{u}@example.com"), "plan": "pro"}}))
                })
                .collect();
            post("/projects/client/token", v)
        }
        "token-verify-hs256-cached"
        | "token-verify-hs256-uncached"
        | "token-verify-eddsa-cached" => {
            let (pool, n) = match name {
                "token-verify-hs256-cached" => (&hs, CACHED_TOKENS),
                "token-verify-hs256-uncached" => (&hs, UNCACHED_TOKENS),
                _ => (&ed, CACHED_TOKENS),
            };
            if pool.is_empty() {
                return Err(format!(
                    "{name}: no project signs with that algorithm (use more projects)"
                ));
            }
            let v = (0..n)
                .map(|k| {
                    let p = pool[rng.below(pool.len())];
                    let c = claims(p, k, now_s);
                    let token = match &p.ed25519 {
                        Some(signer) => sign_eddsa(&c, signer),
                        None => sign_hs256(&c, &p.hs256),
                    };
                    variant(p, json!({"projectId": p.id, "clientToken": token}))
                })
                .collect();
            post("/projects/client/token-verify", v)
        }
        "ato-login-attempt" => {
            let v = (0..20_000)
                .map(|k| {
                    let s = &w.sessions[rng.below(w.sessions.len())];
                    let p = &w.projects[s.project];
                    let u = rng.below(50_000);
                    variant(
                        p,
                        json!({
                            "projectId": p.id,
                            "identifier": format!("user{u}@example.com"),
                            "success": k % 4 != 0,
                            "ip": format!("203.0.{}.{}", u / 250 % 250, u % 250),
                            "sessionId": s.id,
                            "sessionToken": s.token,
                        }),
                    )
                })
                .collect();
            post("/projects/client/ato-login-attempt", v)
        }
        "ato-login-attempt-hot" => {
            // One identifier under attack: every request is a login for
            // the same user, from one session, as `engine_ratios.py` sends.
            let s = &w.sessions[0];
            let p = &w.projects[s.project];
            let v = vec![variant(
                p,
                json!({
                    "projectId": p.id,
                    "identifier": "perf@example.com",
                    "success": true,
                    "ip": "203.0.113.9",
                    "sessionId": s.id,
                    "sessionToken": s.token,
                }),
            )];
            post("/projects/client/ato-login-attempt", v)
        }
        "instrument-session-verify" => {
            let (p, s) = (&w.dev, &w.dev_session);
            let body = py_dumps(&[
                ("projectId", json!(p.id)),
                ("sessionId", json!(s.id)),
                ("sessionToken", json!(s.token)),
            ]);
            post("/projects/client/session-verify", vec![bearer(p, body)])
        }
        "instrument-rate-limit-check" => {
            // rate_limit_many_ips.lua, its counter n from 1.
            let p = &w.dev;
            let v = (1..=INSTRUMENT_VARIANTS)
                .map(|n| {
                    bearer(
                        p,
                        format!(
                            r#"{{"projectId":"{}","ip":"10.{}.{}.{}","metadata":{{"email":"u{}@example.com"}}}}"#,
                            p.id,
                            n / 65536 % 256,
                            n / 256 % 256,
                            n % 256,
                            n % 50_000
                        ),
                    )
                })
                .collect();
            post("/projects/client/rate-limit-check", v)
        }
        "instrument-token-mint-hs256" => {
            let body = py_dumps(&[("projectId", json!(w.dev.id))]);
            post("/projects/client/token", vec![bearer(&w.dev, body)])
        }
        "instrument-token-verify-hs256-cached" => {
            // As the instrument's token: minted with no metadata, unbound.
            let p = &w.dev;
            let mut c = claims(p, 0, now_s);
            c.md = None;
            let token = sign_hs256(&c, &p.hs256);
            let body = py_dumps(&[("projectId", json!(p.id)), ("clientToken", json!(token))]);
            post("/projects/client/token-verify", vec![bearer(p, body)])
        }
        "instrument-ato-login-attempt" => {
            let (p, s) = (&w.dev, &w.dev_session);
            let body = py_dumps(&[
                ("projectId", json!(p.id)),
                ("identifier", json!("perf@example.com")),
                ("success", json!(true)),
                ("ip", json!("203.0.113.9")),
                ("sessionId", json!(s.id)),
                ("sessionToken", json!(s.token)),
            ]);
            post("/projects/client/ato-login-attempt", vec![bearer(p, body)])
        }
        "instrument-ato-login-attempt-spread" => {
            // ato_many_users.lua, its counter n from 1.
            let p = &w.dev;
            let v = (1..=INSTRUMENT_VARIANTS)
                .map(|n| {
                    bearer(
                        p,
                        format!(
                            r#"{{"projectId":"{}","identifier":"user{}@example.com","success":{},"ip":"198.{}.{}.{}"}}"#,
                            p.id,
                            n % 50_000,
                            n % 4 != 0,
                            n / 65536 % 256,
                            n / 256 % 256,
                            n % 256
                        ),
                    )
                })
                .collect();
            post("/projects/client/ato-login-attempt", v)
        }
        other => Err(format!(
            "unknown engine scenario `{other}` (known: {}, {})",
            SCENARIOS.join(", "),
            INSTRUMENT_SCENARIOS.join(", ")
        )),
    }
}

/// Whether a checked answer is the one the scenario means to measure.
fn answer_ok(name: &str, status: u16, body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    status == 200
        && match name {
            "session-verify-hit"
            | "token-verify-hs256-cached"
            | "token-verify-hs256-uncached"
            | "token-verify-eddsa-cached" => v["valid"] == true,
            "rate-limit-3-buckets" => v["allowed"] == true,
            "token-mint-hs256" | "instrument-token-mint-hs256" => v["clientToken"].is_string(),
            "instrument-session-verify" | "instrument-token-verify-hs256-cached" => {
                v["valid"] == true
            }
            _ => true,
        }
}

/// Runs `engine-compare`.
pub async fn engine_compare(a: EngineCompareArgs) -> Result<(), String> {
    let names: Vec<String> = match &a.scenarios {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .flat_map(|s| match s {
                "instrument" => INSTRUMENT_SCENARIOS.to_vec(),
                s => vec![s],
            })
            .map(str::to_owned)
            .collect(),
        None => SCENARIOS.iter().map(|s| (*s).to_owned()).collect(),
    };
    for n in &names {
        if !SCENARIOS.contains(&n.as_str()) && !INSTRUMENT_SCENARIOS.contains(&n.as_str()) {
            return Err(format!(
                "unknown engine scenario `{n}` (known: {}, {}, or `instrument` for the last six)",
                SCENARIOS.join(", "),
                INSTRUMENT_SCENARIOS.join(", ")
            ));
        }
    }
    let dir = std::env::temp_dir().join(format!("qyzar-engine-compare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let world = generate(a.projects, a.sessions, &dir)?;
    let d = dir.to_string_lossy().into_owned();
    let cap = TOKEN_CACHE_CAPACITY.to_string();
    let (engine_url, engine) = spawn_child(
        a.pin_server.as_deref(),
        &["engine-serve", "--dir", &d, "--token-cache", &cap],
    )?;
    let (base_url, baseline) = spawn_baseline(a.pin_server.as_deref(), a.baseline)?;
    let servers = Servers {
        baseline: Some(baseline.0.id()),
        route: Some(engine.0.id()),
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    println!(
        "engine {engine_url}, baseline {base_url}: {} rounds, {} connections, {:.1}s + {:.1}s warm-up each",
        a.rounds,
        a.load.connections,
        a.load.duration.as_secs_f64(),
        a.load.warmup.as_secs_f64()
    );
    let mut rows: Vec<Row> = Vec::new();
    let mut failed: Vec<(String, String)> = Vec::new();
    // With --rate: (name, rate, baseline p99, route p99, rounds' JSON).
    let mut at_rate_rows: Vec<(String, f64, f64, f64, Value)> = Vec::new();
    for name in &names {
        let entry = scenario(name, &world)?;
        let route = Arc::new(Plan::new(
            Target::parse(&engine_url)?,
            vec![entry],
            headers.clone(),
        )?);
        let base = Arc::new(route.retarget(Target::parse(&base_url)?)?);
        let (status, body) = load::fetch(&route, 1).await?;
        if !answer_ok(name, status, &body) {
            let msg = format!("{status} {}", String::from_utf8_lossy(&body));
            eprintln!("{name}: unexpected answer, skipped: {msg}");
            failed.push((name.clone(), msg));
            continue;
        }
        println!(
            "\n== {name}   (sample answer: {status} {:.120})",
            String::from_utf8_lossy(&body)
        );
        if let Some(rate) = a.load.rate {
            let (b, r, json) = at_rate(
                a.rounds,
                &a.load,
                a.common.quiet,
                servers,
                &base,
                &route,
                rate,
            )
            .await?;
            println!("  p99 at {rate:.0}/s, medians: baseline {b:.0} µs, route {r:.0} µs");
            at_rate_rows.push((name.clone(), rate, b, r, json));
            continue;
        }
        let o = interleave(a.rounds, &a.load, a.common.quiet, servers, &base, &route).await?;
        print!("{}", o.table());
        // A route that cannot reach half the baseline's maximum has no
        // meaningful p99 at that rate (the open loop only queues): measure it
        // also at half its own maximum.
        let own = if o.max_route < o.rate * 1.05 {
            let rate = (o.max_route / 2.0).max(1.0);
            let mut p99s = Vec::new();
            for round in 1..=a.rounds {
                let spec = load::LoadSpec {
                    label: "route".into(),
                    connections: a.load.connections,
                    duration: a.load.duration,
                    warmup: a.load.warmup,
                    pacing: crate::report::Pacing::Open { rate },
                    progress: !a.common.quiet,
                    server_pid: servers.route,
                };
                let r = load::run(Arc::clone(&route), &spec).await?;
                let l = r.latency();
                let p99 = l.p99 as f64;
                println!(
                    "  {round} route at half its own maximum ({rate:.0}/s): {:.0}/s, p50 {} p90 {} p99 {p99:.0} p99.9 {} max {} µs",
                    r.throughput(),
                    l.p50,
                    l.p90,
                    l.p99_9,
                    l.max
                );
                p99s.push(p99);
            }
            Some((rate, crate::report::median(&p99s)))
        } else {
            None
        };
        rows.push((name.clone(), o, own));
    }
    if a.load.rate.is_some() {
        println!(
            "\n{:<36} {:>9} {:>12} {:>12}",
            "scenario", "rate r/s", "base p99 µs", "route p99 µs"
        );
        for (n, rate, b, r, _) in &at_rate_rows {
            println!("{n:<36} {rate:>9.0} {b:>12.0} {r:>12.0}");
        }
    } else {
        println!("\n{}", summary_table(&rows));
    }
    for (n, msg) in &failed {
        println!("{n}: not measured ({msg})");
    }
    if let Some(path) = &a.json {
        let v = json!({
            "engine": engine_url,
            "baseline": base_url,
            "baseline_kind": a.baseline.name(),
            "projects": a.projects,
            "sessions": a.sessions,
            "rounds": a.rounds,
            "connections": a.load.connections,
            "duration_s": a.load.duration.as_secs_f64(),
            "warmup_s": a.load.warmup.as_secs_f64(),
            "token_cache_capacity": TOKEN_CACHE_CAPACITY,
            "scenarios": rows.iter().map(|(n, o, own)| json!({
                "name": n,
                "ratio": (o.ratio() * 1000.0).round() / 1000.0,
                "ratio_of_medians": (o.ratio_of_medians() * 1000.0).round() / 1000.0,
                "p99_ratio": (o.tput_route >= 0.95 * o.rate)
                    .then(|| (o.p99_ratio_paired * 100.0).round() / 100.0),
                "route_rps": o.max_route.round(),
                "baseline_rps": o.max_base.round(),
                "fixed_rate": o.rate.round(),
                "p99_us_route": o.p99_route,
                "p99_us_baseline": o.p99_base,
                "achieved_rps_route": o.tput_route.round(),
                "route_errors_median": o.route_errors,
                "own_half_rate": own.map(|(r, _)| r.round()),
                "p99_us_at_own_half_rate": own.map(|(_, p)| p),
                "max_throughput": o.max_json,
                "server_cpu_us_per_answer": o.cpu_json(),
                "fixed": o.fixed_json,
            })).collect::<Vec<_>>(),
            "at_rate": at_rate_rows.iter().map(|(n, rate, b, r, json)| json!({
                "name": n,
                "rate": rate,
                "p99_us_baseline": b,
                "p99_us_route": r,
                "p99_us": json,
            })).collect::<Vec<_>>(),
            "not_measured": failed.iter().map(|(n, m)| json!({"name": n, "answer": m})).collect::<Vec<_>>(),
        });
        crate::write_json(path, &v)?;
    }
    Ok(())
}

/// A measured scenario: name, comparison, and (rate, median p99 µs) at half
/// the route's own maximum when it could not reach half the baseline's.
pub type Row = (String, Outcome, Option<(f64, f64)>);

/// The one-line-per-scenario summary.
pub fn summary_table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<28} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>6} {:>7} {:>6}  {}\n",
        "scenario",
        "base r/s",
        "route r/s",
        "ratio",
        "rate r/s",
        "base p99",
        "route p99",
        "p99 ×",
        "errors",
        "cpu ×",
        "p99 at half own max"
    );
    for (n, o, own) in rows {
        let own = own.map_or(String::new(), |(r, p)| format!("{p:.0}µs at {r:.0}/s"));
        // A route that cannot keep up with the rate has a queue, not a
        // tail: its ratio would only say how long the run was.
        let p99_x = if o.tput_route >= 0.95 * o.rate {
            format!("{:.2}", o.p99_ratio_paired)
        } else {
            "-".to_owned()
        };
        // The route's server CPU per answer over the baseline's.
        let cpu_x = o
            .cpu_ratio_paired
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
        let _ = writeln!(
            s,
            "{n:<28} {:>9.0} {:>9.0} {:>7.3} {:>9.0} {:>7.0}µs {:>7.0}µs {p99_x:>6} {:>7.0} {cpu_x:>6}  {own}",
            o.max_base,
            o.max_route,
            o.ratio(),
            o.rate,
            o.p99_base,
            o.p99_route,
            o.route_errors,
        );
    }
    s
}

/// Removes a temporary directory when dropped, on error paths too.
pub(crate) struct RemoveOnDrop(pub(crate) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `engine-serve`: the engine over `dir`'s snapshot and sessions.
pub async fn engine_serve(a: EngineServeArgs) -> Result<(), String> {
    use qyzar_store::{DeviceInfo, EmbeddedStore, Risk, Session};
    let dir = PathBuf::from(&a.dir);
    let store = Arc::new(
        EmbeddedStore::open(dir.join("engine.redb")).map_err(|e| format!("embedded store: {e}"))?,
    );
    // The cache is bounded in bytes; a token with its claims weighs about
    // 1 KiB, so `--token-cache N` keeps about N tokens (for one project:
    // the share is the whole). Without it, the engine's own budgets.
    let mut options = qyzar_engine::StateOptions::default();
    if let Some(kib) = a.token_cache {
        let bytes = kib.saturating_mul(1024);
        options.token_cache = qyzar_engine::budget::Budget {
            total_bytes: bytes,
            project_bytes: bytes,
        };
    }
    let engine = qyzar_engine::Engine::new(store, options);
    let bytes = std::fs::read(dir.join("snapshot.bin")).map_err(|e| e.to_string())?;
    let snap =
        qyzar_shared::snapshot::decode_snapshot(&bytes).map_err(|e| format!("snapshot: {e}"))?;
    let now = qyzar_shared::time::now_ms();
    engine
        .config
        .swap_full(snap, now)
        .map_err(|e| format!("installing the snapshot: {e:?}"))?;
    let text = std::fs::read_to_string(dir.join("sessions.tsv")).map_err(|e| e.to_string())?;
    let mut n = 0u64;
    for line in text.lines() {
        let mut f = line.split('\t');
        let (Some(p), Some(id), Some(token)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let session = Session {
            project_id: ProjectId::parse(p).map_err(|e| format!("{p}: {e}"))?,
            session_id: qyzar_shared::ids::SessionId::parse(id)
                .map_err(|e| format!("{id}: {e}"))?,
            token_hash: sha256(token.as_bytes()),
            device_id: qyzar_shared::ids::DeviceId::from_digest(&sha256(id.as_bytes())),
            created_at: now,
            expires_at: now + 7 * 86_400_000,
            last_seen_at: now,
            revoked: false,
            ip: Some("203.0.113.7".into()),
            risk: Risk {
                score: 3,
                bot: false,
                signals: Vec::new(),
            },
            device: DeviceInfo {
                browser: "Chrome".into(),
                os: "Windows".into(),
                platform: "desktop".into(),
                region: Some("DE".into()),
            },
        };
        engine.sessions.cache(session);
        n += 1;
    }
    let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
        .await
        .map_err(|e| format!("cannot bind {}:{}: {e}", a.host, a.port))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("engine-serve: {n} sessions seeded");
    // `spawn_child` reads this exact line from stdout.
    println!("listening on http://{addr}");
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    qyzar_engine::run(listener, engine, Default::default(), async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_favours_low_ranks() {
        let s = zipf(1000, 1.0, 20_000, 3);
        assert!(s.iter().all(|&r| r < 1000));
        let top = s.iter().filter(|&&r| r == 0).count();
        let mid = s.iter().filter(|&&r| r == 500).count();
        // P(rank 0) ≈ 1 / H(1000) ≈ 13 %.
        assert!(top > 2000 && top < 3400, "{top}");
        assert!(mid < 20, "{mid}");
    }

    #[test]
    fn settings_validate() {
        for eddsa in [false, true] {
            ProjectSettings::parse_and_validate(settings_json(eddsa).as_bytes()).unwrap();
        }
    }

    /// A route that could not keep the fixed rate gets no p99 ratio in the
    /// summary (it measured a queue); one that kept it does.
    #[test]
    fn the_summary_blanks_the_tail_of_a_route_that_fell_behind() {
        use crate::compare::tests::outcome_of;
        let max = [((100_000, 900), (40_000, 900))];
        let behind = outcome_of(&max, 50_000.0, &[((50_000, 1_000), (30_000, 900_000))]);
        let kept = outcome_of(&max, 50_000.0, &[((50_000, 1_000), (49_990, 2_000))]);
        let table = summary_table(&[
            ("behind".into(), behind, Some((20_000.0, 3_000.0))),
            ("kept".into(), kept, None),
        ]);
        let row = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap()
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        // name, base, route, ratio, rate, base p99, route p99, p99 ×, errors, cpu ×…
        assert_eq!(row("behind")[7], "-", "{table}");
        assert_eq!(row("kept")[7], "2.00", "{table}");
        // No server processes known: no CPU ratio.
        assert_eq!(row("kept")[9], "-", "{table}");
        assert!(table.contains("3000µs at 20000/s"), "{table}");
    }

    /// The instrument's bodies, as its Python and Lua write them.
    #[test]
    fn instrument_bodies_are_the_instruments() {
        assert_eq!(
            py_dumps(&[("projectId", json!("prj_a")), ("success", json!(true))]),
            r#"{"projectId": "prj_a", "success": true}"#
        );
        let dir = std::env::temp_dir().join(format!("qyzar-engine-instr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _c = RemoveOnDrop(dir.clone());
        let w = generate(2, 3, &dir).unwrap();
        let body = |name: &str, k: usize| {
            let v = scenario(name, &w).unwrap().variants.unwrap();
            let b = &v[k];
            assert_eq!(b.headers[0].0, http::header::AUTHORIZATION);
            assert_eq!(
                b.headers[0].1.as_bytes(),
                [b"Bearer ".as_slice(), w.dev.secret.as_bytes()].concat()
            );
            String::from_utf8(b.body.to_vec()).unwrap()
        };
        // Lua's n = 70 000 is the variant at index 69 999.
        assert_eq!(
            body("instrument-rate-limit-check", 69_999),
            format!(
                r#"{{"projectId":"{}","ip":"10.1.17.112","metadata":{{"email":"u20000@example.com"}}}}"#,
                w.dev.id
            )
        );
        assert_eq!(
            body("instrument-ato-login-attempt-spread", 3),
            format!(
                r#"{{"projectId":"{}","identifier":"user4@example.com","success":false,"ip":"198.0.0.4"}}"#,
                w.dev.id
            )
        );
        assert_eq!(
            body("instrument-token-mint-hs256", 0),
            format!(r#"{{"projectId": "{}"}}"#, w.dev.id)
        );
    }

    #[test]
    fn every_scenario_builds() {
        let dir =
            std::env::temp_dir().join(format!("qyzar-engine-scenarios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _c = RemoveOnDrop(dir.clone());
        let w = generate(20, 50, &dir).unwrap();
        for name in SCENARIOS.iter().chain(INSTRUMENT_SCENARIOS) {
            let e = scenario(name, &w).unwrap();
            assert_eq!(e.name, *name);
            assert!(!e.variants.unwrap().is_empty());
        }
    }
}
