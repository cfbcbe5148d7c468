//! Building answers: the shared error shape, JSON bodies, and the fixed
//! answers that are the same every time and so are built once.

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONTENT_TYPE, SERVER};
use http::{Response, StatusCode};
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
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, JSON.clone());
    h.insert(SERVER, SERVER_NAME.clone());
    res
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

/// Serialises `value` as the JSON body of a `status` answer.
pub fn json_of<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(b) => json(status, b),
        Err(e) => {
            tracing::error!(error = %e, "answer did not serialise");
            error_code(ErrorCode::Internal)
        }
    }
}

static SERVER_TIMING: http::header::HeaderName =
    http::header::HeaderName::from_static("server-timing");

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
/// value is written on the stack, so the header value's own buffer is the
/// only allocation.
pub fn total_timing(mut res: Response<Body>, micros: u64) -> Response<Body> {
    use std::io::Write as _;
    let mut buf = [0u8; 256];
    let mut w = std::io::Cursor::new(&mut buf[..]);
    let ms = micros as f64 / 1000.0;
    let written = match res.headers().get(&SERVER_TIMING) {
        Some(old) => w
            .write_all(old.as_bytes())
            .and_then(|()| write!(w, ", total;dur={ms:.3}")),
        None => write!(w, "total;dur={ms:.3}"),
    };
    let n = w.position() as usize;
    if written.is_ok() {
        if let Ok(v) = HeaderValue::from_bytes(&buf[..n]) {
            res.headers_mut().insert(&SERVER_TIMING, v);
        }
        return res;
    }
    // An entry list longer than the stack buffer: rare, take the slow way.
    timing(res, &format!("total;dur={ms:.3}"))
}

static CACHE_HIT: HeaderValue = HeaderValue::from_static("cache;desc=hit");
static CACHE_NEGATIVE_HIT: HeaderValue = HeaderValue::from_static("cache;desc=negative-hit");
static CACHE_MISS: HeaderValue = HeaderValue::from_static("cache;desc=miss");

/// `Server-Timing` for an answer that came from the session cache or store.
/// Answers from memory get a fixed header value (no allocation); a store
/// read adds its duration.
pub fn cache_timing(
    mut res: Response<Body>,
    status: crate::sessions::CacheStatus,
    store_ms: Option<f64>,
) -> Response<Body> {
    use crate::sessions::CacheStatus;
    let value = match status {
        CacheStatus::Hit => &CACHE_HIT,
        CacheStatus::NegativeHit => &CACHE_NEGATIVE_HIT,
        CacheStatus::Miss => &CACHE_MISS,
    };
    if res.headers().contains_key(&SERVER_TIMING) {
        res = timing(res, &format!("cache;desc={}", status.as_str()));
    } else {
        res.headers_mut().insert(&SERVER_TIMING, value.clone());
    }
    match store_ms {
        Some(ms) => timing(res, &format!("store;dur={ms:.2}")),
        None => res,
    }
}

/// Appends `ms` (Unix milliseconds) as a JSON string in RFC 3339 UTC,
/// exactly as [`qyzar_shared::time::rfc3339`] writes it, without
/// formatting machinery or allocation (years 0 to 9999; others, which no
/// session has, take the allocating path).
pub fn push_rfc3339(out: &mut Vec<u8>, ms: i64) {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000) as u32;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u32;
    if !(0..=9999).contains(&y) {
        out.push(b'"');
        out.extend_from_slice(qyzar_shared::time::rfc3339(ms).as_bytes());
        out.push(b'"');
        return;
    }
    let y = y as u32;
    let dd = |v: u32| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let [y0, y1] = dd(y / 100);
    let [y2, y3] = dd(y);
    let [m0, m1] = dd(m);
    let [d0, d1] = dd(d);
    let [h0, h1] = dd(sod / 3600);
    let [n0, n1] = dd(sod / 60 % 60);
    let [s0, s1] = dd(sod % 60);
    let [f0, f1] = dd(millis / 10);
    let f2 = b'0' + (millis % 10) as u8;
    out.extend_from_slice(&[
        b'"', y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1, b'T', h0, h1, b':', n0, n1, b':', s0, s1,
        b'.', f0, f1, f2, b'Z', b'"',
    ]);
}

/// Howard Hinnant's `civil_from_days` (as in `qyzar_shared::time`, which
/// keeps its copy private): days since 1970-01-01 → (y, m, d).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_rfc3339_matches_the_shared_formatter() {
        // Every day from 1966 to 2034 at its first and last millisecond,
        // then pseudo-random instants up to past the year 9999.
        let mut out = Vec::new();
        let check = |out: &mut Vec<u8>, t: i64| {
            out.clear();
            push_rfc3339(out, t);
            let want = format!("\"{}\"", qyzar_shared::time::rfc3339(t));
            assert_eq!(std::str::from_utf8(out).unwrap(), want, "{t}");
        };
        for day in -1_500..23_000_i64 {
            check(&mut out, day * 86_400_000);
            check(&mut out, day * 86_400_000 - 1);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            check(
                &mut out,
                (x % 255_000_000_000_000) as i64 - 1_000_000_000_000,
            );
        }
        for t in [0, 951_782_400_000, 4_102_444_799_999, -62_167_219_200_001] {
            out.clear();
            push_rfc3339(&mut out, t);
            let want = format!("\"{}\"", qyzar_shared::time::rfc3339(t));
            assert_eq!(std::str::from_utf8(&out).unwrap(), want, "{t}");
        }
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
