//! Building answers: the shared error shape, JSON bodies, and the fixed
//! answers that are the same every time and so are built once.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, SERVER};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use qyzar_shared::{ApiError, ErrorCode};

/// The body type of every engine answer: one contiguous buffer.
pub type Body = Full<Bytes>;

static JSON: HeaderValue = HeaderValue::from_static("application/json");
static SERVER_NAME: HeaderValue = HeaderValue::from_static("qyzar-engine");

/// A JSON answer with the given status and pre-serialised body.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    *res.headers_mut() = JSON_HEADERS.with(HeaderMap::clone);
    res
}

thread_local! {
    /// The headers every JSON answer starts with, built once per thread
    /// and cloned per answer: two inserts into a new map (its first
    /// growth, two hashes and probes) counted several times a clone's
    /// cost (BENCHMARKS.md, "Requests read in place").
    static JSON_HEADERS: HeaderMap = {
        let mut h = HeaderMap::with_capacity(4);
        h.insert(CONTENT_TYPE, JSON.clone());
        h.insert(SERVER, SERVER_NAME.clone());
        h
    };
}

/// An answer in the shared error shape; the status comes from the code table.
pub fn error(err: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, err.to_json())
}

/// An error answer with the code's default message.
pub fn error_code(code: ErrorCode) -> Response<Body> {
    error(&ApiError::new(code))
}

/// `405` with the `Allow` header listing the methods the route takes.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut res = error_code(ErrorCode::MethodNotAllowed);
    res.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    res
}

/// `{"ok":true}`: the answer of `GET /ping`, fixed.
pub fn pong() -> Response<Body> {
    json(
        StatusCode::OK,
        Bytes::from_static(br#"{"ok":true,"service":"engine"}"#),
    )
}

/// Serialises `value` as the JSON body of a `status` answer, through this
/// thread's scratch buffer ([`scratch_body`]): `serde_json::to_vec` starts
/// at 128 bytes and copies the answer again at every doubling.
pub fn json_of<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let mut failed = None;
    let body = scratch_body(|out| {
        if let Err(e) = serde_json::to_writer(&mut *out, value) {
            failed = Some(e);
        }
    });
    match failed {
        None => json(status, body),
        Some(e) => {
            tracing::error!(error = %e, "answer did not serialise");
            error_code(ErrorCode::Internal)
        }
    }
}

thread_local! {
    /// Where answers are written before their one copy into the body.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(4096));
}

/// A body written by `write` into this thread's scratch buffer, then copied
/// out at its exact size: one allocation per answer and no buffer grown per
/// answer. A buffer grown past 64 KiB by a large answer is given back.
pub fn scratch_body(write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut out) => {
            out.clear();
            write(&mut out);
            let body = Bytes::copy_from_slice(&out);
            if out.capacity() > 64 * 1024 {
                *out = Vec::with_capacity(4096);
            }
            body
        }
        // Only if `write` itself made a body this way.
        Err(_) => {
            let mut out = Vec::new();
            write(&mut out);
            Bytes::from(out)
        }
    })
}

pub(crate) static SERVER_TIMING: http::header::HeaderName =
    http::header::HeaderName::from_static("server-timing");

/// When an answer was made and, for a routed one, how long the router
/// took: its `total;dur=` entry, not yet in the answer's `Server-Timing`.
/// The HTTP/1.1 fast path writes that entry as it encodes the answer
/// (`server/h1.rs`), so the header map is not rebuilt for it; hyper's path
/// adds it with [`Timing::apply`]. The instant is the router's last clock
/// read, which the fast path also dates the answer by and starts the
/// next header deadline from.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// When the answer was made.
    pub at: std::time::Instant,
    /// The router's total, in microseconds; `None` for an answer the
    /// router did not make (a deadline's `503`).
    pub total_micros: Option<u64>,
}

impl Timing {
    /// The answer with its `total;dur=` entry (see [`total_timing`]).
    pub fn apply(self, res: Response<Body>) -> Response<Body> {
        match self.total_micros {
            Some(micros) => total_timing(res, micros),
            None => res,
        }
    }
}

/// Appends `total;dur=<ms>`, the entry [`total_timing`] adds.
pub fn push_total(out: &mut Vec<u8>, micros: u64) {
    let (mut whole, frac) = millis(micros);
    out.extend_from_slice(b"total;dur=");
    out.extend_from_slice(whole.format(micros / 1000).as_bytes());
    out.extend_from_slice(&frac);
}

/// Adds a `Server-Timing` entry (e.g. `cache;desc=hit`) to an answer.
pub fn timing(mut res: Response<Body>, entry: &str) -> Response<Body> {
    let value = match res
        .headers()
        .get(&SERVER_TIMING)
        .and_then(|v| v.to_str().ok())
    {
        Some(old) => format!("{old}, {entry}"),
        None => entry.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        res.headers_mut().insert(&SERVER_TIMING, v);
    }
    res
}

/// Adds the router's `total;dur=<ms>` to an answer's `Server-Timing`. The
/// value is written on the stack with integer arithmetic (`{:.3}` of a float
/// went through the float formatter on every answer), so the header value's
/// own buffer is the only allocation.
pub fn total_timing(mut res: Response<Body>, micros: u64) -> Response<Body> {
    use std::io::Write as _;
    let mut buf = [0u8; 256];
    let mut w = std::io::Cursor::new(&mut buf[..]);
    let (mut whole, frac) = millis(micros);
    let written = match res.headers().get(&SERVER_TIMING) {
        Some(old) => w
            .write_all(old.as_bytes())
            .and_then(|()| w.write_all(b", ")),
        None => Ok(()),
    }
    .and_then(|()| w.write_all(b"total;dur="))
    .and_then(|()| w.write_all(whole.format(micros / 1000).as_bytes()))
    .and_then(|()| w.write_all(&frac));
    let n = w.position() as usize;
    if written.is_ok() {
        if let Ok(v) = HeaderValue::from_bytes(&buf[..n]) {
            res.headers_mut().insert(&SERVER_TIMING, v);
        }
        return res;
    }
    // An entry list longer than the stack buffer: rare, take the slow way.
    timing(res, &format!("total;dur={:.3}", micros as f64 / 1000.0))
}

/// Appends `micros` as milliseconds with three decimals (see [`millis`]),
/// for `Server-Timing` durations.
pub fn push_millis(out: &mut String, micros: u64) {
    let (mut whole, frac) = millis(micros);
    out.push_str(whole.format(micros / 1000));
    out.push_str(std::str::from_utf8(&frac).expect("ASCII digits"));
}

/// `micros` as milliseconds with three decimals, as `{:.3}` writes `micros
/// as f64 / 1000.0` (tested against it): a buffer for the whole
/// milliseconds (`micros / 1000`) and the `.ddd` that follows them.
fn millis(micros: u64) -> (itoa::Buffer, [u8; 4]) {
    let frac = (micros % 1000) as u32;
    let digit = |v: u32| b'0' + (v % 10) as u8;
    (
        itoa::Buffer::new(),
        [b'.', digit(frac / 100), digit(frac / 10), digit(frac)],
    )
}

static CACHE_HIT: HeaderValue = HeaderValue::from_static("cache;desc=hit");
static CACHE_NEGATIVE_HIT: HeaderValue = HeaderValue::from_static("cache;desc=negative-hit");
static CACHE_MISS: HeaderValue = HeaderValue::from_static("cache;desc=miss");
static TOKEN_CACHED: HeaderValue = HeaderValue::from_static("token;desc=cached");
static TOKEN_VERIFIED: HeaderValue = HeaderValue::from_static("token;desc=verified");

/// A fixed first `Server-Timing` entry of a hot route's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// `cache;desc=hit`: a session from memory.
    CacheHit,
    /// `cache;desc=negative-hit`: a session known not to exist.
    CacheNegativeHit,
    /// `cache;desc=miss`: a session read from the store.
    CacheMiss,
    /// `token;desc=cached`: a client token verified before.
    TokenCached,
    /// `token;desc=verified`: a client token verified now.
    TokenVerified,
}

impl Entry {
    const ALL: [Entry; 5] = [
        Entry::CacheHit,
        Entry::CacheNegativeHit,
        Entry::CacheMiss,
        Entry::TokenCached,
        Entry::TokenVerified,
    ];

    /// The entry's text.
    pub fn value(self) -> &'static HeaderValue {
        match self {
            Entry::CacheHit => &CACHE_HIT,
            Entry::CacheNegativeHit => &CACHE_NEGATIVE_HIT,
            Entry::CacheMiss => &CACHE_MISS,
            Entry::TokenCached => &TOKEN_CACHED,
            Entry::TokenVerified => &TOKEN_VERIFIED,
        }
    }
}

impl From<crate::sessions::CacheStatus> for Entry {
    fn from(status: crate::sessions::CacheStatus) -> Self {
        use crate::sessions::CacheStatus;
        match status {
            CacheStatus::Hit => Entry::CacheHit,
            CacheStatus::NegativeHit => Entry::CacheNegativeHit,
            CacheStatus::Miss => Entry::CacheMiss,
        }
    }
}

thread_local! {
    /// [`JSON_HEADERS`] with each [`Entry`] as `Server-Timing`, in
    /// [`Entry::ALL`]'s order.
    static TIMED_HEADERS: [HeaderMap; 5] = Entry::ALL.map(|entry| {
        let mut h = JSON_HEADERS.with(HeaderMap::clone);
        h.insert(&SERVER_TIMING, entry.value().clone());
        h
    });
}

/// A JSON answer as [`json`] makes it, with `entry` as its `Server-Timing`:
/// the three headers cloned whole from this thread's template, with no
/// insert (an insert into the cloned map grew it: its entries are cloned
/// at their length).
pub fn json_timed(status: StatusCode, body: impl Into<Bytes>, entry: Entry) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    *res.headers_mut() = TIMED_HEADERS.with(|t| t[entry as usize].clone());
    res
}

/// A JSON answer as [`json`] makes it, with `entry` (built at run time, such
/// as anti-ATO's `profile;desc=hit, store;dur=0.212`) as its
/// `Server-Timing`: the same as [`timing`] over [`json`], for less. The map
/// is cloned from this thread's template that already holds the header
/// (so the insert replaces a value in place instead of growing a map
/// cloned at its length), and the value takes `entry`'s buffer instead of
/// copying it. A test holds the two equal.
pub fn json_with_timing(
    status: StatusCode,
    body: impl Into<Bytes>,
    entry: String,
) -> Response<Body> {
    let mut res = json_timed(status, body, Entry::CacheHit);
    match HeaderValue::from_maybe_shared(Bytes::from(entry)) {
        Ok(v) => {
            res.headers_mut().insert(&SERVER_TIMING, v);
        }
        // Only text this crate wrote reaches here; an entry that is not a
        // header value is left out, as `timing` leaves it out.
        Err(_) => {
            res.headers_mut().remove(&SERVER_TIMING);
        }
    }
    res
}

/// Adds a store read's duration to `Server-Timing` (`store;dur=<ms>`), when
/// there was one.
pub fn store_timing(res: Response<Body>, store_ms: Option<f64>) -> Response<Body> {
    match store_ms {
        Some(ms) => timing(res, &format!("store;dur={ms:.2}")),
        None => res,
    }
}

/// `Server-Timing` for an answer that came from the session cache or store.
/// Answers from memory get a fixed header value (no allocation); a store
/// read adds its duration.
pub fn cache_timing(
    mut res: Response<Body>,
    status: crate::sessions::CacheStatus,
    store_ms: Option<f64>,
) -> Response<Body> {
    if res.headers().contains_key(&SERVER_TIMING) {
        res = timing(res, &format!("cache;desc={}", status.as_str()));
    } else {
        res.headers_mut()
            .insert(&SERVER_TIMING, Entry::from(status).value().clone());
    }
    store_timing(res, store_ms)
}

/// Appends `v` as a JSON string, as `serde_json::to_writer` writes it
/// (tested against it), for long strings that need no escape, such as a
/// client token: checked in one pass that the compiler vectorises and
/// copied whole, where serde_json looks each byte up in its escape table.
/// Counted (`deploy/instructions.sh mint`): −2 000 instructions per mint
/// (−4.2 %); on session-verify's five short strings about −115
/// instructions per request (−0.5 %).
pub fn push_json_str(out: &mut Vec<u8>, v: &str) {
    // serde_json escapes exactly these: `"`, `\` and the controls below
    // 0x20. Folded without an early exit, so it runs as vector code.
    let needs_escape = v.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if needs_escape {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    } else {
        out.reserve(v.len() + 2);
        out.push(b'"');
        out.extend_from_slice(v.as_bytes());
        out.push(b'"');
    }
}

/// Appends `ms` (Unix milliseconds) as a JSON string in RFC 3339 UTC
/// ([`qyzar_shared::time::push_rfc3339`], which is tested against `chrono`).
pub fn push_rfc3339(out: &mut Vec<u8>, ms: i64) {
    out.push(b'"');
    qyzar_shared::time::push_rfc3339(out, ms);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_with_timing_is_timing_over_json() {
        for entry in [
            "profile;desc=hit, store;dur=0.212",
            "profile;desc=miss, store;dur=12.000",
            "",
            "bad\nvalue",
        ] {
            let fast = json_with_timing(StatusCode::OK, &b"{}"[..], entry.to_owned());
            let slow = timing(json(StatusCode::OK, &b"{}"[..]), entry);
            assert_eq!(fast.status(), slow.status());
            assert_eq!(fast.headers(), slow.headers(), "{entry:?}");
            let names: Vec<_> = fast.headers().keys().collect();
            let want: Vec<_> = slow.headers().keys().collect();
            assert_eq!(names, want, "same headers in the same order");
        }
    }

    #[test]
    fn millis_writes_what_the_float_formatter_writes() {
        let check = |us: u64| {
            let mut got = String::new();
            push_millis(&mut got, us);
            assert_eq!(got, format!("{:.3}", us as f64 / 1000.0), "{us}");
        };
        (0..2_000_000).for_each(check);
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(x % 1_000_000_000_000);
        }
    }

    #[test]
    fn push_json_str_writes_what_serde_json_writes() {
        let check = |v: &str| {
            let mut got = b"x".to_vec();
            push_json_str(&mut got, v);
            let mut want = b"x".to_vec();
            serde_json::to_writer(&mut want, v).unwrap();
            assert_eq!(got, want, "{v:?}");
        };
        // Every single character of the first planes, alone and in a token.
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            check(&c.to_string());
            check(&format!("eyJhbGciOi.{c}.sig"));
        }
        for v in [
            "",
            "ses_syRZNl6MvSwKIRY-97vLbg",
            "a\"b",
            "x\\y",
            "tab\there",
            "\u{7f}\u{80}é😀",
            &"A".repeat(4096),
            &format!("{}\n", "B".repeat(333)),
        ] {
            check(v);
        }
    }

    #[test]
    fn push_rfc3339_quotes_the_shared_formatter() {
        let mut out = b"[".to_vec();
        push_rfc3339(&mut out, 1_700_000_000_123);
        assert_eq!(out, b"[\"2023-11-14T22:13:20.123Z\"");
    }

    /// An answer made from a template has the headers, in the order, that
    /// [`json`] and an insert give it.
    #[test]
    fn timed_answers_are_json_answers_with_their_entry() {
        for entry in Entry::ALL {
            let mut want = json(StatusCode::OK, Bytes::from_static(b"{}"));
            want.headers_mut()
                .insert(&SERVER_TIMING, entry.value().clone());
            let got = json_timed(StatusCode::OK, Bytes::from_static(b"{}"), entry);
            let pairs = |r: &Response<Body>| {
                r.headers()
                    .iter()
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(pairs(&got), pairs(&want), "{entry:?}");
            assert_eq!(got.status(), want.status());
        }
        let res = cache_timing(pong(), crate::sessions::CacheStatus::NegativeHit, Some(1.5));
        assert_eq!(
            res.headers()["server-timing"],
            "cache;desc=negative-hit, store;dur=1.50"
        );
    }

    #[test]
    fn total_timing_joins_entries_like_timing() {
        let res = cache_timing(pong(), crate::sessions::CacheStatus::Hit, None);
        let res = total_timing(res, 1_234);
        assert_eq!(
            res.headers()["server-timing"],
            "cache;desc=hit, total;dur=1.234"
        );
        let res = total_timing(pong(), 7);
        assert_eq!(res.headers()["server-timing"], "total;dur=0.007");
        let res = timing(pong(), &"x".repeat(300));
        let res = total_timing(res, 7);
        assert!(res.headers()["server-timing"]
            .to_str()
            .unwrap()
            .ends_with(", total;dur=0.007"));
    }
}
