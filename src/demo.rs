//! `qyzar demo-traffic`: realistic traffic for the dev project, so a new
//! user's dashboard has something to show.
//!
//! It reads `.qyzar/dev.json` (written by `qyzar dev`) and drives the
//! engine's public API exactly as a customer's front end and backend would:
//!
//! - **people**: shoppers on their own browsers in several countries open a
//!   session (`/connect` with the dev origin token), verify it a few times,
//!   get and verify client tokens, pass the rate limiter and log in (now and
//!   then after a mistyped password);
//! - **a bot farm**: headless browsers that share their canvas, WebGL, audio
//!   and fonts and differ in the user agent's patch version, the time zone
//!   and the window size, from a handful of addresses in one network,
//!   hammering the rate limiter until it denies them;
//! - **a credential-stuffing run**: a few addresses trying many identifiers
//!   with wrong passwords, then a few "successes" from a new country, which
//!   the anti-ATO challenges or blocks.
//!
//! Regions come from the `CF-IPCountry` header, which `qyzar dev`'s engine
//! trusts from loopback (a local proxy); nothing here needs a GeoIP
//! database. The run is bounded (a few thousand requests, one pass) and
//! refuses an engine that is not on loopback: it is a dev tool, not a load
//! generator (that is `qyzar-loadtest`).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use crate::dev::DevProject;

const USAGE: &str = "usage: qyzar demo-traffic [--dir .qyzar] [--people N]\n\n  Sends realistic traffic (people, a bot farm, a credential-stuffing run)\n  to the engine of a running `qyzar dev`, using .qyzar/dev.json.\n";

/// Most people one run simulates.
const MAX_PEOPLE: usize = 2_000;

/// Countries with a time zone, a language and an address block each (the
/// blocks only shape the addresses; the region comes from the header).
const COUNTRIES: [(&str, &str, &str, [u8; 2]); 8] = [
    ("DE", "Europe/Berlin", "de-DE", [85, 214]),
    ("FR", "Europe/Paris", "fr-FR", [90, 84]),
    ("US", "America/New_York", "en-US", [73, 15]),
    ("GB", "Europe/London", "en-GB", [81, 2]),
    ("JP", "Asia/Tokyo", "ja-JP", [126, 72]),
    ("BR", "America/Sao_Paulo", "pt-BR", [177, 38]),
    ("IN", "Asia/Kolkata", "en-IN", [49, 36]),
    ("ES", "Europe/Madrid", "es-ES", [83, 44]),
];

/// Browser × platform mixes people use: user agent, `platform`, touch points, screen.
const BROWSERS: [(&str, &str, u32, (u32, u32)); 6] = [
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36", "Win32", 0, (1920, 1080)),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15", "MacIntel", 0, (1512, 982)),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0", "Linux x86_64", 0, (2560, 1440)),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1", "iPhone", 5, (393, 852)),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36", "Linux armv8l", 5, (412, 915)),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", "Win32", 0, (1366, 768)),
];

/// `qyzar demo-traffic [--dir D] [--people N]`.
pub async fn run(args: &[String]) -> Result<(), crate::Error> {
    let mut dir = PathBuf::from(".qyzar");
    let mut people = 80usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => dir = it.next().ok_or(USAGE)?.into(),
            "--people" => {
                people = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (1..=MAX_PEOPLE).contains(n))
                    .ok_or_else(|| format!("--people takes 1..={MAX_PEOPLE}\n{USAGE}"))?;
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    let file = dir.join("dev.json");
    let dev: DevProject = serde_json::from_slice(&std::fs::read(&file).map_err(|e| {
        format!(
            "cannot read {} ({e}): start `cargo run --release -- dev` first",
            file.display()
        )
    })?)?;
    check_loopback(&dev.engine_url)?;
    let demo = Demo::new(dev);
    eprintln!(
        "demo-traffic: {people} people, a bot farm of 40 devices and a credential-stuffing run against {}",
        demo.dev.engine_url
    );
    demo.people(people).await?;
    demo.bot_farm(40).await?;
    demo.credential_stuffing().await?;
    demo.print_summary();
    eprintln!(
        "demo-traffic: done. Open the dashboard at {}/ui/ and sign in as {} (password in {}).",
        demo.dev.admin_url,
        demo.dev.email,
        file.display()
    );
    Ok(())
}

/// The engine must be on this machine: the demo sends forwarding headers a
/// real engine would only trust from its own proxies.
fn check_loopback(url: &str) -> Result<(), crate::Error> {
    let uri: http::Uri = url.parse()?;
    let host = uri.host().unwrap_or("").trim_matches(['[', ']']);
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!("demo-traffic only talks to an engine on loopback, not {url}").into())
    }
}

/// A small deterministic generator (xorshift64*): the same run every time,
/// no dependency for what is only a spread of demo values.
struct Rng(std::cell::Cell<u64>);

impl Rng {
    fn below(&self, n: usize) -> usize {
        let mut x = self.0.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0.set(x);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

struct Demo {
    dev: DevProject,
    client: Client<HttpConnector, Full<Bytes>>,
    rng: Rng,
    /// Answers per (route, outcome), for the summary.
    tally: std::sync::Mutex<BTreeMap<(String, String), u64>>,
}

/// One simulated browser.
struct Browser {
    entropy: Value,
    ip: String,
    region: &'static str,
}

/// A session `/connect` opened.
struct Session {
    id: String,
    token: String,
}

impl Demo {
    fn new(dev: DevProject) -> Self {
        Self {
            dev,
            client: Client::builder(TokioExecutor::new()).build_http(),
            rng: Rng(std::cell::Cell::new(0x9E37_79B9_7F4A_7C15)),
            tally: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    /// POSTs `body` to the engine's `path`; `from` sets the client address
    /// and region a local proxy would forward. Counts the outcome.
    async fn post(
        &self,
        path: &str,
        body: Value,
        from: Option<(&str, &str)>,
        secret: bool,
    ) -> Result<Value, crate::Error> {
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("{}{path}", self.dev.engine_url))
            .header("content-type", "application/json");
        if secret {
            req = req.header(
                "authorization",
                format!("Bearer {}", self.dev.project_secret),
            );
        } else {
            req = req.header("origin", &self.dev.origin);
        }
        if let Some((ip, region)) = from {
            req = req
                .header("x-forwarded-for", ip)
                .header("cf-ipcountry", region);
        }
        let res = self
            .client
            .request(req.body(Full::new(Bytes::from(body.to_string())))?)
            .await?;
        let status = res.status();
        let bytes = res.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let outcome = if !status.is_success() {
            if status.is_server_error() {
                return Err(format!("demo-traffic: {path} answered {status}: {value}").into());
            }
            format!("{}", status.as_u16())
        } else if let Some(a) = value.get("action").and_then(Value::as_str) {
            a.to_owned()
        } else if let Some(allowed) = value.get("allowed").and_then(Value::as_bool) {
            (if allowed { "allowed" } else { "denied" }).to_owned()
        } else if let Some(valid) = value.get("valid").and_then(Value::as_bool) {
            (if valid { "valid" } else { "invalid" }).to_owned()
        } else {
            "ok".to_owned()
        };
        *self
            .tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((path.to_owned(), outcome))
            .or_default() += 1;
        Ok(value)
    }

    async fn connect(&self, b: &Browser) -> Result<Option<Session>, crate::Error> {
        let v = self
            .post(
                "/connect",
                json!({"projectId": self.dev.project_id, "originToken": self.dev.origin_token, "entropy": b.entropy}),
                Some((&b.ip, b.region)),
                false,
            )
            .await?;
        Ok(match (v.get("sessionId"), v.get("sessionToken")) {
            (Some(Value::String(id)), Some(Value::String(token))) => Some(Session {
                id: id.clone(),
                token: token.clone(),
            }),
            _ => None,
        })
    }

    /// A person's browser: one of the common browser × platform mixes in
    /// their country, with the canvas/audio hashes of their own machine.
    fn person_browser(&self, n: usize) -> Browser {
        let (region, tz, lang, block) = COUNTRIES[self.rng.below(COUNTRIES.len())];
        let (ua, platform, touch, (w, h)) = BROWSERS[self.rng.below(BROWSERS.len())];
        let cores = [4, 8, 12, 16][self.rng.below(4)];
        let memory = [4, 8, 16][self.rng.below(3)];
        let gpu = ["Intel", "NVIDIA", "AMD", "Apple"][self.rng.below(4)];
        Browser {
            entropy: json!({
                "userAgent": ua, "languages": [lang, "en"], "timezone": tz,
                "screen": {"width": w, "height": h, "colorDepth": 24, "pixelRatio": if touch > 0 { 3 } else { 1 }},
                "hardwareConcurrency": cores,
                "deviceMemory": memory,
                "platform": platform,
                "canvasHash": format!("c{:08x}", n * 2_654_435_761 % 0xffff_ffff),
                "webglVendor": "Google Inc.", "webglRenderer": format!("ANGLE ({gpu} GPU)"),
                "audioHash": format!("a{:06x}", n * 40_503 % 0xff_ffff),
                "fonts": ["Arial", "Helvetica", "Times New Roman"],
                "touchPoints": touch, "webdriver": false, "cookiesEnabled": true
            }),
            ip: format!(
                "{}.{}.{}.{}",
                block[0],
                block[1],
                self.rng.below(250) + 1,
                self.rng.below(250) + 1
            ),
            region,
        }
    }

    /// Shoppers: a session, a few verifications, a client token, the rate
    /// limiter and a login (sometimes after a wrong password).
    async fn people(&self, n: usize) -> Result<(), crate::Error> {
        let p = &self.dev.project_id;
        for k in 0..n {
            let b = self.person_browser(k);
            let Some(s) = self.connect(&b).await? else {
                continue;
            };
            let email = format!("shopper{k}@example.com");
            for _ in 0..(2 + self.rng.below(4)) {
                self.post(
                    "/projects/client/session-verify",
                    json!({"projectId": p, "sessionId": s.id, "sessionToken": s.token}),
                    None,
                    true,
                )
                .await?;
            }
            let token = self
                .post(
                    "/projects/client/token",
                    json!({"projectId": p, "sessionId": s.id, "sessionToken": s.token, "metadata": {"identifier": email}}),
                    None,
                    true,
                )
                .await?;
            let minted = token.get("clientToken").or_else(|| token.get("token"));
            if let Some(t) = minted.and_then(Value::as_str) {
                self.post(
                    "/projects/client/token-verify",
                    json!({"projectId": p, "clientToken": t}),
                    None,
                    true,
                )
                .await?;
            }
            self.post(
                "/projects/client/rate-limit-check",
                json!({"projectId": p, "ip": b.ip, "metadata": {"email": email}, "analytics": true}),
                None,
                true,
            )
            .await?;
            if self.rng.below(5) == 0 {
                self.login(&email, false, &b, Some(&s)).await?;
            }
            self.login(&email, true, &b, Some(&s)).await?;
        }
        Ok(())
    }

    async fn login(
        &self,
        identifier: &str,
        success: bool,
        b: &Browser,
        s: Option<&Session>,
    ) -> Result<Value, crate::Error> {
        let mut body = json!({"projectId": self.dev.project_id, "identifier": identifier, "success": success, "ip": b.ip});
        if let Some(s) = s {
            body["sessionId"] = json!(s.id);
            body["sessionToken"] = json!(s.token);
        }
        // The customer's backend forwards the shopper's region: it would
        // come from GeoIP on a real engine.
        self.post(
            "/projects/client/ato-login-attempt",
            body,
            Some(("127.0.0.1", b.region)),
            true,
        )
        .await
    }

    /// Headless browsers that share every stable component but the user
    /// agent's patch version and the time zone: a cluster to find.
    async fn bot_farm(&self, devices: usize) -> Result<(), crate::Error> {
        let p = &self.dev.project_id;
        for k in 0..devices {
            // One machine image, run many times: the farm varies what its
            // tooling randomises (time zone, window size, the user agent's
            // patch version) and keeps the GPU, canvas, audio and fonts.
            let tz = ["UTC", "Europe/Amsterdam", "Europe/London"][k % 3];
            let (w, h) = [(800, 600), (1024, 768), (1366, 768), (1280, 720)][k % 4];
            let b = Browser {
                entropy: json!({
                    "userAgent": format!("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.{}.{} Safari/537.36", 6700 + k % 7, k),
                    "languages": ["en-US"], "timezone": tz,
                    "screen": {"width": w, "height": h, "colorDepth": 24, "pixelRatio": 1},
                    "hardwareConcurrency": 2, "deviceMemory": 2, "platform": "Linux x86_64",
                    "canvasHash": "c0ffee01", "webglVendor": "Google Inc. (Google)",
                    "webglRenderer": "ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero)))",
                    "audioHash": "a0b0c0", "fonts": ["DejaVu Sans"], "touchPoints": 0,
                    "webdriver": k % 3 == 0, "cookiesEnabled": true
                }),
                ip: format!("45.155.205.{}", 10 + k % 4),
                region: "NL",
            };
            let s = self.connect(&b).await?;
            for j in 0..30 {
                self.post(
                    "/projects/client/rate-limit-check",
                    json!({"projectId": p, "ip": b.ip, "metadata": {"email": format!("victim{}@example.com", j % 5)}, "analytics": true}),
                    None,
                    true,
                )
                .await?;
            }
            if let Some(s) = s {
                self.post(
                    "/projects/client/session-verify",
                    json!({"projectId": p, "sessionId": s.id, "sessionToken": s.token}),
                    None,
                    true,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Wrong passwords for many identifiers from a few addresses, then a few
    /// logins that "work" from a country the accounts never used.
    async fn credential_stuffing(&self) -> Result<(), crate::Error> {
        let attackers: Vec<Browser> = (0..6)
            .map(|k| Browser {
                entropy: Value::Null,
                ip: format!("185.220.101.{}", 20 + k),
                region: ["RU", "VN", "RU", "NG", "VN", "RU"][k],
            })
            .collect();
        for k in 0..400 {
            let who = if k % 2 == 0 {
                format!("shopper{}@example.com", k / 2 % 80)
            } else {
                format!("user{}@example.org", self.rng.below(5_000))
            };
            let from = &attackers[k % attackers.len()];
            self.login(&who, false, from, None).await?;
        }
        for k in 0..10 {
            self.login(
                &format!("shopper{k}@example.com"),
                true,
                &attackers[k % attackers.len()],
                None,
            )
            .await?;
        }
        Ok(())
    }

    fn print_summary(&self) {
        let tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        let total: u64 = tally.values().sum();
        eprintln!("demo-traffic: {total} requests");
        for ((route, outcome), n) in tally.iter() {
            eprintln!("  {route:<40} {outcome:<12} {n}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_engines() {
        assert!(check_loopback("http://127.0.0.1:8080").is_ok());
        assert!(check_loopback("http://localhost:8080").is_ok());
        assert!(check_loopback("http://[::1]:8080").is_ok());
        assert!(check_loopback("http://10.0.0.5:8080").is_err());
        assert!(check_loopback("https://engine.example").is_err());
    }

    #[test]
    fn the_generator_spreads_and_stays_in_range() {
        let r = Rng(std::cell::Cell::new(1));
        let mut seen = [0u32; 8];
        for _ in 0..8_000 {
            seen[r.below(8)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
        assert_eq!(r.below(0), 0);
    }
}
