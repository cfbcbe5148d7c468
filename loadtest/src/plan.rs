//! What to send: the target, and the weighted set of requests a run cycles
//! through.
//!
//! A plan comes from one of three places:
//! - the URL itself (`--url`, `--method`, `--body`): one request;
//! - a built-in scenario (`--scenario ping`): the hook where engine route
//!   scenarios go as the routes land (see [`builtin`]);
//! - a mix file (`--mix FILE`), one request per line:
//!   `weight method path [body-file]`, `#` starts a comment, body files are
//!   relative to the mix file. Weights are integers; a request of weight 3 is
//!   sent three times as often as one of weight 1, in a fixed interleaved
//!   order (smooth weighted round-robin), so short runs hold the proportions.
//!
//! `--header` lines apply to every request of the plan; `Host` is set from
//! the target unless given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{HeaderMap, Method, Request, Uri};
use http_body_util::Full;

use crate::args::RequestArgs;

/// A request template; [`Plan::request`] stamps out copies.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Label in reports: `METHOD path`.
    pub name: String,
    /// Relative frequency, at least 1.
    pub weight: u32,
    /// The method.
    pub method: Method,
    /// Path and query (origin-form, as HTTP/1.1 sends it).
    pub path: Uri,
    /// The body, shared by every copy.
    pub body: Bytes,
    /// Concrete requests this entry cycles through (body and extra headers
    /// each), by the run's global send number: how a scenario spreads over
    /// many sessions, projects or tokens yet reports as one row. `None`:
    /// always `body`.
    pub variants: Option<Arc<Vec<Variant>>>,
}

/// One concrete request of an [`Entry`] with variants.
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The body.
    pub body: Bytes,
    /// Headers added to the plan's (e.g. the project's secret).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl Entry {
    pub(crate) fn new(
        weight: u32,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err(format!("`{path}`: a path must start with `/`"));
        }
        let uri: Uri = path.parse().map_err(|e| format!("`{path}`: {e}"))?;
        Ok(Self {
            name: format!("{method} {path}"),
            weight,
            method,
            path: uri,
            body,
            variants: None,
        })
    }

    /// An entry named `name` whose requests cycle through `variants`
    /// (at least one).
    pub fn with_variants(
        name: &str,
        method: Method,
        path: &str,
        variants: Vec<Variant>,
    ) -> Result<Self, String> {
        if variants.is_empty() {
            return Err(format!("`{name}` has no requests"));
        }
        let mut e = Self::new(1, method, path, Bytes::new())?;
        e.name = name.to_owned();
        e.variants = Some(Arc::new(variants));
        Ok(e)
    }
}

/// Where the load goes: an `http://` host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` to connect to (resolved when the run starts).
    pub authority: String,
    /// The URL's path and query, `/` when it has none.
    pub path: String,
}

impl Target {
    /// Parses `http://host[:port][/path]`. TLS is not supported: the engine
    /// is measured behind its own listener, and a TLS client would measure
    /// the generator's handshakes as much as the server.
    pub fn parse(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(format!("`{url}`: only http:// is supported, not {other}")),
            None => return Err(format!("`{url}`: give the scheme, e.g. http://{url}")),
        }
        let auth = uri
            .authority()
            .ok_or_else(|| format!("`{url}` has no host"))?;
        let port = auth.port_u16().unwrap_or(80);
        Ok(Self {
            authority: format!("{}:{port}", auth.host()),
            path: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }

    /// The base URL, for reports.
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }
}

/// Target, requests and shared headers.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where to send.
    pub target: Target,
    /// What to send; never empty.
    pub entries: Vec<Entry>,
    /// Headers on every request, `Host` included.
    pub headers: HeaderMap,
    /// Entry indices in sending order, one cycle of the weights.
    schedule: Vec<usize>,
}

impl Plan {
    /// The plan the arguments describe.
    pub fn from_args(a: &RequestArgs) -> Result<Self, String> {
        let target = Target::parse(&a.url)?;
        let entries = if let Some(name) = &a.scenario {
            builtin(name)?
        } else if let Some(file) = &a.mix {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read the mix {}: {e}", file.display()))?;
            parse_mix(&text, file.parent().unwrap_or(Path::new(".")))?
        } else {
            let method = parse_method(a.method.as_deref().unwrap_or("GET"))?;
            let body = match &a.body {
                Some(f) => read_body(f)?,
                None => Bytes::new(),
            };
            vec![Entry::new(1, method, &target.path, body)?]
        };
        if (a.scenario.is_some() || a.mix.is_some()) && (a.method.is_some() || a.body.is_some()) {
            return Err(
                "--method and --body describe the URL's request; a scenario or mix brings its own"
                    .into(),
            );
        }
        let mut headers = HeaderMap::new();
        for (k, v) in &a.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| format!("`{k}` is not a header name"))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| format!("header `{k}` has an invalid value"))?;
            headers.append(name, value);
        }
        Self::new(target, entries, headers)
    }

    /// A plan over `entries`; `Host` is added from the target unless present.
    pub fn new(
        target: Target,
        entries: Vec<Entry>,
        mut headers: HeaderMap,
    ) -> Result<Self, String> {
        if entries.is_empty() {
            return Err("the plan has no requests".into());
        }
        if !headers.contains_key(HOST) {
            let host = HeaderValue::from_str(&target.authority)
                .map_err(|_| "the host is not a valid header value")?;
            headers.insert(HOST, host);
        }
        let schedule = smooth_round_robin(&entries.iter().map(|e| e.weight).collect::<Vec<_>>());
        Ok(Self {
            target,
            entries,
            headers,
            schedule,
        })
    }

    /// The same requests against another target (the baseline): `Host`
    /// follows the target.
    pub fn retarget(&self, target: Target) -> Result<Self, String> {
        let mut headers = self.headers.clone();
        headers.remove(HOST);
        Self::new(target, self.entries.clone(), headers)
    }

    /// Which entry the `n`th request of a connection sends.
    pub fn pick(&self, n: u64) -> usize {
        self.schedule[(n % self.schedule.len() as u64) as usize]
    }

    /// A fresh request for entry `i` (its first variant, if it has any).
    pub fn request(&self, i: usize) -> Request<Full<Bytes>> {
        self.request_n(i, 0)
    }

    /// Entry `i` and, if it has variants, the one the run's `n`th request
    /// sends (`n mod len`): shared by both ways of writing a request.
    fn variant(&self, i: usize, n: u64) -> (&Entry, Option<&Variant>) {
        let e = &self.entries[i];
        let variant = e
            .variants
            .as_ref()
            .map(|v| &v[(n % v.len() as u64) as usize]);
        (e, variant)
    }

    /// A fresh request for entry `i` as the `n`th request of the run: an
    /// entry with variants sends variant `n mod len`.
    pub fn request_n(&self, i: usize, n: u64) -> Request<Full<Bytes>> {
        let (e, variant) = self.variant(i, n);
        let body = variant.map_or_else(|| e.body.clone(), |v| v.body.clone());
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = e.method.clone();
        *req.uri_mut() = e.path.clone();
        let mut headers = self.headers.clone();
        if let Some(v) = variant {
            for (k, val) in &v.headers {
                headers.insert(k.clone(), val.clone());
            }
        }
        *req.headers_mut() = headers;
        req
    }

    /// [`Plan::request_n`]'s request as the HTTP/1.1 bytes hyper's client
    /// writes for it, into `out` (cleared first): request line, the shared
    /// headers (a variant's replacing those of the same name), then the
    /// variant's, `content-length` where hyper sends one (a non-empty body,
    /// whatever the method) unless a header already frames the body, and
    /// the body. For [`crate::raw::RawConn`]; the tests there
    /// check a hyper server reads the same request from both.
    pub fn write_request(&self, i: usize, n: u64, out: &mut Vec<u8>) {
        use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
        let (e, variant) = self.variant(i, n);
        let body = variant.map_or(&e.body, |v| &v.body);
        out.clear();
        out.extend_from_slice(e.method.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(
            e.path
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        );
        out.extend_from_slice(b" HTTP/1.1\r\n");
        let replaced =
            |k: &HeaderName| variant.is_some_and(|v| v.headers.iter().any(|(n, _)| n == k));
        let mut push = |k: &HeaderName, v: &HeaderValue| {
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        };
        let mut framed = false;
        for (k, v) in &self.headers {
            if !replaced(k) {
                framed |= k == CONTENT_LENGTH || k == TRANSFER_ENCODING;
                push(k, v);
            }
        }
        for (k, v) in variant.map_or(&[][..], |v| &v.headers[..]) {
            framed |= k == CONTENT_LENGTH || k == TRANSFER_ENCODING;
            push(k, v);
        }
        if !framed && !body.is_empty() {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(body.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
    }
}

/// Built-in scenarios by name. Each engine route gets one here when it
/// lands (with the headers and bodies it needs); until then a mix file
/// describes any route.
pub fn builtin(name: &str) -> Result<Vec<Entry>, String> {
    match name {
        "ping" => Ok(vec![Entry::new(1, Method::GET, "/ping", Bytes::new())?]),
        other => Err(format!(
            "unknown scenario `{other}` (known: ping; or use --mix FILE)"
        )),
    }
}

/// Parses a mix file (see the module docs); `dir` resolves body files.
pub fn parse_mix(text: &str, dir: &Path) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let at = |e: String| format!("mix line {}: {e}", n + 1);
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (weight, method, path, body) = match fields.as_slice() {
            [w, m, p] => (w, m, p, None),
            [w, m, p, b] => (w, m, p, Some(b)),
            _ => return Err(at("expected `weight method path [body-file]`".into())),
        };
        let weight: u32 = weight
            .parse()
            .ok()
            .filter(|w| *w > 0)
            .ok_or_else(|| at(format!("`{weight}` is not a positive integer weight")))?;
        let body = match body {
            Some(b) => read_body(&dir.join(b)).map_err(at)?,
            None => Bytes::new(),
        };
        entries
            .push(Entry::new(weight, parse_method(method).map_err(at)?, path, body).map_err(at)?);
    }
    if entries.is_empty() {
        return Err("the mix has no requests".into());
    }
    Ok(entries)
}

fn parse_method(m: &str) -> Result<Method, String> {
    Method::from_bytes(m.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("`{m}` is not a method"))
}

fn read_body(path: &PathBuf) -> Result<Bytes, String> {
    std::fs::read(path)
        .map(Bytes::from)
        .map_err(|e| format!("cannot read the body {}: {e}", path.display()))
}

/// One cycle of smooth weighted round-robin (nginx's): each entry appears
/// `weight` times and heavy entries are spread out rather than bunched.
fn smooth_round_robin(weights: &[u32]) -> Vec<usize> {
    // All weights 1 (e.g. one entry): the order is the entries' order.
    if weights.iter().all(|&w| w == 1) {
        return (0..weights.len()).collect();
    }
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, &w) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            let best = (0..weights.len())
                .max_by_key(|&i| (current[i], -(i as i64)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/ping?x=1").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path, "/ping?x=1");
        let t = Target::parse("http://localhost").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("localhost:80", "/")
        );
        assert!(Target::parse("https://x")
            .unwrap_err()
            .contains("only http://"));
        assert!(Target::parse("127.0.0.1:8080").is_err());
    }

    #[test]
    fn mix_files() {
        let dir = std::env::temp_dir().join(format!("qyzar-loadtest-mix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("login.json"), br#"{"a":1}"#).unwrap();
        let mix = "# hot routes\n3 GET /ping\n\n1 post /projects/client/token login.json  # mint\n";
        let e = parse_mix(mix, &dir).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].weight, &e[0].method, e[0].name.as_str()),
            (3, &Method::GET, "GET /ping")
        );
        assert_eq!(e[1].method, Method::POST);
        assert_eq!(&e[1].body[..], br#"{"a":1}"#);
        for (bad, needle) in [
            ("0 GET /", "weight"),
            ("1 GET", "expected"),
            ("1 GET ping", "start with"),
            ("1 GET / missing.json", "cannot read"),
            ("# nothing", "no requests"),
        ] {
            let err = parse_mix(bad, &dir).unwrap_err();
            assert!(err.contains(needle), "`{bad}` gave `{err}`");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn weights_are_honoured_and_spread() {
        assert_eq!(smooth_round_robin(&[1]), vec![0]);
        let s = smooth_round_robin(&[5, 1, 1]);
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        let s = smooth_round_robin(&[2, 2]);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 2);
    }

    #[test]
    fn requests_carry_host_and_headers() {
        let args = RequestArgs {
            url: "http://127.0.0.1:9/x".into(),
            method: Some("post".into()),
            headers: vec![("X-Api-Key".into(), "k".into())],
            ..RequestArgs::default()
        };
        let plan = Plan::from_args(&args).unwrap();
        let req = plan.request(plan.pick(0));
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.uri(), "/x");
        assert_eq!(req.headers()[HOST], "127.0.0.1:9");
        assert_eq!(req.headers()["x-api-key"], "k");
        let moved = plan
            .retarget(Target::parse("http://127.0.0.1:10").unwrap())
            .unwrap();
        assert_eq!(moved.request(0).headers()[HOST], "127.0.0.1:10");
        assert_eq!(moved.request(0).uri(), "/x");

        let ping = Plan::from_args(&RequestArgs {
            url: "http://127.0.0.1:9".into(),
            scenario: Some("ping".into()),
            ..RequestArgs::default()
        })
        .unwrap();
        assert_eq!(ping.request(0).uri(), "/ping");
    }
}
