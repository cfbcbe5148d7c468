//! connect.js in a real browser: Debian's headless Chromium loads a shop
//! page that includes `/connect.js`, the script opens a session and writes
//! the two session cookies on the shop's origin, and the shop's backend then
//! verifies that session through `/projects/client/session-verify`.
//!
//! The browser is driven with `--headless --dump-dom` and a virtual-time
//! budget: virtual time does not advance while a fetch is pending, so the
//! DOM is dumped only after `Qyzar.ready` has settled and the page's inline
//! script has written the outcome into `<pre id=out>`. No CDP, no new crate.
//!
//! Runs when `QYZAR_TEST_CHROMIUM` names the browser (deploy/test.sh sets it
//! via deploy/chromium.sh); skips with a printed line otherwise.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;

/// Every wait on the browser is bounded by this.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_js_in_headless_chromium_opens_a_verifiable_session() {
    let Some(chromium) =
        qyzar_shared::testing::backend("QYZAR_TEST_CHROMIUM", "connect.js in headless Chromium")
    else {
        return;
    };
    let started = Instant::now();
    let mut shop = Shop::open().await;
    let token = shop.origin_token.clone();
    let out = shop.load(chromium, &token).await;
    assert!(
        out["error"].is_null(),
        "connect.js failed in the browser: {out}"
    );

    // The page got a session and the event fired with the same one.
    let sid = out["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no sessionId in {out}"));
    let tok = out["sessionToken"]
        .as_str()
        .unwrap_or_else(|| panic!("no sessionToken in {out}"));
    assert!(sid.starts_with("ses_"), "{out}");
    assert!(tok.starts_with("qz_st_"), "{out}");
    assert_eq!(out["event"], sid, "qyzar:session event detail: {out}");
    assert!(out["deviceId"].is_string(), "{out}");

    // connect.js wrote both cookies on the shop's origin (no `Secure` on an
    // http page, or the browser would drop them), with the engine's values.
    let jar = out["cookie"]
        .as_str()
        .unwrap_or_else(|| panic!("no cookie in {out}"));
    assert_eq!(
        cookie(jar, "qyzar_session_id").as_deref(),
        Some(sid),
        "document.cookie = {jar:?}"
    );
    assert_eq!(
        cookie(jar, "qyzar_session_token").as_deref(),
        Some(tok),
        "document.cookie = {jar:?}"
    );

    // The shop's backend forwards the browser's cookies as they are.
    let p = &shop.p;
    let v = request(
        "GET",
        &shop.engine.url(&format!(
            "/projects/client/session-verify?projectId={}",
            p.id
        )),
        &[
            ("authorization", &format!("Bearer {}", p.secret)),
            ("cookie", jar),
        ],
        None,
    )
    .await;
    assert_eq!(v.status, 200, "{:?}", v.body);
    assert_eq!(v.body["valid"], true, "{:?}", v.body);
    assert_eq!(v.body["sessionId"], sid);
    assert_eq!(v.body["deviceId"], out["deviceId"]);
    assert_eq!(v.body["device"]["browser"], "Chrome", "{:?}", v.body);

    println!(
        "browser test: {:.1}s; page outcome: {out}",
        started.elapsed().as_secs_f64()
    );
    shop.engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_js_in_headless_chromium_rejects_ready_on_a_refused_connect() {
    let Some(chromium) =
        qyzar_shared::testing::backend("QYZAR_TEST_CHROMIUM", "connect.js in headless Chromium")
    else {
        return;
    };
    let mut shop = Shop::open().await;
    // A live token of this project, but bound to another origin.
    let foreign = shop.p.origin_token.clone();
    let out = shop.load(chromium, &foreign).await;
    let error = out["error"]
        .as_str()
        .unwrap_or_else(|| panic!("Qyzar.ready resolved for a refused connect: {out}"));
    assert!(
        !error.is_empty() && error != "connect.js did not load",
        "{out}"
    );
    assert!(out["sessionId"].is_null(), "{out}");
    println!("refused connect, as the page saw it: {out}");
    shop.engine.stop().await;
}

/// A value from a `document.cookie` string.
fn cookie(jar: &str, name: &str) -> Option<String> {
    jar.split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// An engine with one project that allows the shop's origin, and the
/// shop's page server (not yet serving).
struct Shop {
    engine: TestEngine,
    p: TestProject,
    /// `http://127.0.0.1:<port>`.
    origin: String,
    /// An origin token bound to `origin`.
    origin_token: String,
    pages: Option<tokio::net::TcpListener>,
}

impl Shop {
    async fn open() -> Self {
        // The shop's page server, on its own port: its origin is what the
        // project allows and what the origin token is bound to.
        let pages = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = format!("http://{}", pages.local_addr().unwrap());
        let engine = TestEngine::spawn().await;
        let settings = SETTINGS.replace(
            r#""allowedOrigins":["https://shop.example"]"#,
            &format!(r#""allowedOrigins":["{origin}"]"#),
        );
        assert_ne!(
            settings, SETTINGS,
            "SETTINGS changed shape; update the origin replacement"
        );
        let (p, mut cfg) = project(&settings, false);
        let origin_token = qyzar_shared::crypto::random_token("qz_ot_", 24);
        cfg.origin_tokens
            .push(qyzar_shared::snapshot::provision::origin_token(
                &origin_token,
                &origin,
                qyzar_shared::time::now_ms() + 3_600_000,
            ));
        cfg.normalise();
        install(&engine.engine, 1, vec![cfg]);
        Self {
            engine,
            p,
            origin,
            origin_token,
            pages: Some(pages),
        }
    }

    /// Serves the checkout page (with `origin_token` on the script tag),
    /// loads it in Chromium and returns what the page wrote into `#out`.
    async fn load(&mut self, chromium: String, origin_token: &str) -> Value {
        // The engine is addressed as `localhost`, the shop as `127.0.0.1`:
        // two hosts, as in production (engine and shop on different
        // domains). Cookies are per host, not per port: on one host the
        // engine's own HttpOnly cookies would be stored for the shop too,
        // and connect.js could not (and need not) overwrite them.
        let engine_base = format!("http://localhost:{}", self.engine.addr.port());
        let page = page_html(&engine_base, &self.p.id, origin_token);
        let server = tokio::spawn(serve_pages(
            self.pages.take().expect("one page load per shop"),
            page,
        ));
        let url = format!("{}/checkout", self.origin);
        let dom = tokio::task::spawn_blocking(move || dump_dom(&chromium, &url)).await;
        server.abort();
        outcome(&dom.unwrap())
    }
}

/// The shop's checkout page: loads connect.js from the engine, then writes
/// the outcome of `Qyzar.ready` (or its error) as JSON into `<pre id=out>`.
fn page_html(engine_base: &str, project_id: &str, origin_token: &str) -> String {
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>checkout</title></head>
<body>
<pre id="out">pending</pre>
<script>
  var seen = null;
  document.addEventListener("qyzar:session", function (e) {{ seen = e.detail && e.detail.sessionId; }});
  function show(v) {{ document.getElementById("out").textContent = JSON.stringify(v); }}
  window.addEventListener("error", function (e) {{ show({{ error: "page error: " + e.message }}); }});
</script>
<script src="{engine_base}/connect.js" data-project-id="{project_id}" data-origin-token="{origin_token}"
        data-reverify-seconds="0" onerror="show({{ error: 'connect.js did not load' }})"></script>
<script>
  if (window.Qyzar) {{
    window.Qyzar.ready.then(function (a) {{
      show({{ sessionId: a.sessionId, sessionToken: a.sessionToken, deviceId: a.deviceId,
              expiresAt: a.expiresAt, risk: a.risk, event: seen, cookie: document.cookie }});
    }}, function (e) {{
      show({{ error: String((e && e.message) || e), body: (e && e.body) || null }});
    }});
  }}
</script>
</body></html>
"#
    )
}

/// A minimal HTTP/1.1 responder: `page` for every GET except the favicon.
async fn serve_pages(listener: tokio::net::TcpListener, page: String) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let page = page.clone();
        tokio::spawn(async move {
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 64 * 1024 {
                match tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => req.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&req)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned();
            let (status, ctype, body) =
                if line.starts_with("GET ") && !line.contains("/favicon.ico") {
                    ("200 OK", "text/html; charset=utf-8", page)
                } else {
                    ("404 Not Found", "text/plain", String::from("not found"))
                };
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Kills the browser's whole process group (it was started as its leader,
/// so renderer and helper processes go with it) while it has not been
/// reaped, i.e. on timeout or on a panic mid-wait.
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let pgid = child.id();
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Loads `url` in a fresh headless Chromium profile and returns the DOM it
/// dumps; panics (after killing the browser) past [`BROWSER_TIMEOUT`].
fn dump_dom(chromium: &str, url: &str) -> String {
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("dom.html");
    let err_path = dir.path().join("stderr.log");
    let profile = dir.path().join("profile");
    let child = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            // Virtual time stands still while fetches are pending, so this
            // waits for /connect however long it takes in real time.
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdin(Stdio::null())
        // Files, not pipes: helper processes inherit the descriptors, so a
        // pipe could stay open after the browser itself has exited.
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {chromium}: {e}"));
    let mut guard = KillOnDrop(Some(child));
    let deadline = Instant::now() + BROWSER_TIMEOUT;
    let status = loop {
        let child = guard.0.as_mut().unwrap();
        if let Some(s) = child.try_wait().unwrap() {
            // Reaped, so its id may be reused: disarm. The helpers exit on
            // their own once the browser process is gone.
            guard.0 = None;
            break s;
        }
        if Instant::now() >= deadline {
            drop(guard); // kills the browser
            panic!(
                "Chromium did not finish within {BROWSER_TIMEOUT:?}; its stderr:\n{}\nstdout so far:\n{}",
                tail(&err_path),
                tail(&out_path)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let dom = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(
        status.success() && dom.contains("id=\"out\""),
        "Chromium exited {status}; stderr:\n{}\nstdout:\n{dom}",
        tail(&err_path)
    );
    dom
}

/// The last 4 KiB of a log file, for failure messages, without the D-Bus
/// complaints a headless Chromium logs on a machine with no session bus.
fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let s: String = s
        .lines()
        .filter(|l| !l.contains(":ERROR:dbus/"))
        .map(|l| format!("{l}\n"))
        .collect();
    let start = s.len().saturating_sub(4096);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].to_owned()
}

/// The JSON the page wrote into `<pre id=out>`.
fn outcome(dom: &str) -> Value {
    let start = dom
        .find("<pre id=\"out\">")
        .map(|i| i + "<pre id=\"out\">".len());
    let text = start
        .and_then(|s| dom[s..].find("</pre>").map(|e| &dom[s..s + e]))
        .unwrap_or_else(|| panic!("no <pre id=out> in the dumped DOM:\n{dom}"));
    let text = text
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&");
    if text == "pending" {
        return json!({"error": "Qyzar.ready did not settle within the virtual-time budget"});
    }
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the page's outcome is not JSON ({e}): {text}"))
}
