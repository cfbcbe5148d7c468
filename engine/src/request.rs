//! Reading requests: the body cap, JSON and query parsing, and where the
//! project secret, client token and session cookies come from.
//!
//! Every failure here is a small [`ApiError`] with a static message: a bad
//! request is normal traffic on a verify API and must cost no formatting.

use bytes::{Buf as _, Bytes};
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE};
mod headers;
pub(crate) use headers::Field;
pub use headers::{Headers, ToStrError, Value};
use http_body_util::BodyExt;
use qyzar_shared::{ApiError, ErrorCode};
use serde::Deserialize;

/// Largest request body any engine route accepts (64 KiB): entropy documents
/// are a few KiB, so anything bigger is a mistake or an attack.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes with `413`
/// before buffering them (a declared `Content-Length` is checked first).
/// A body the server's deadline cut off (see
/// [`qyzar_shared::deadline`]) is `408 request_timeout`.
pub async fn read_body<B>(headers: &Headers<'_>, body: B) -> Result<Bytes, ApiError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    if let Some(len) = headers
        .get(&CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > MAX_BODY as u64 {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge));
        }
    }
    // Frames are read one by one (not `Limited::collect`, which queues
    // every frame in a list): a body of one frame, which is nearly every
    // body, is handed on as it came, without a copy.
    let mut body = std::pin::pin!(body);
    let mut first = Bytes::new();
    let mut joined: Option<Vec<u8>> = None;
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| {
            if qyzar_shared::deadline::DeadlineError::is_timeout(&e) {
                ApiError::new(ErrorCode::RequestTimeout)
            } else {
                ApiError::with_message(
                    ErrorCode::MalformedJson,
                    "the request body could not be read",
                )
            }
        })?;
        let Ok(mut data) = frame.into_data() else {
            continue; // trailers
        };
        // `Bytes` (every body here) hands itself over without a copy.
        let data = data.copy_to_bytes(data.remaining());
        let len = first.len() + joined.as_ref().map_or(0, Vec::len) + data.len();
        if len > MAX_BODY {
            return Err(ApiError::new(ErrorCode::PayloadTooLarge));
        }
        match &mut joined {
            Some(all) => all.extend_from_slice(&data),
            None if first.is_empty() => first = data,
            None => {
                let mut all = Vec::with_capacity(len);
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                joined = Some(all);
            }
        }
    }
    Ok(joined.map_or(first, Bytes::from))
}

/// Parses a JSON body after checking it is declared as JSON. An empty body
/// is treated as `{}` so routes whose fields can all come from elsewhere
/// (query, cookies) accept a bodiless POST. `T` may borrow from `body`
/// (see [`Text`]).
pub fn json_body<'a, T: Deserialize<'a>>(
    headers: &Headers<'_>,
    body: &'a [u8],
) -> Result<T, ApiError> {
    if body.is_empty() {
        return serde_json::from_slice(b"{}").map_err(|e| json_error(&e));
    }
    let is_json = headers
        .get(&CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            // Up to the first `;` (parameters), found by byte: a `char`
            // pattern's searcher cost more than the whole check.
            let mime = v
                .as_bytes()
                .iter()
                .position(|&b| b == b';')
                .map_or(v, |i| &v[..i])
                .trim();
            mime.eq_ignore_ascii_case("application/json")
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType));
    }
    parse_json(body).map_err(|e| json_error(&e))
}

/// `serde_json::from_slice`, with the UTF-8 check done once for the whole
/// body instead of once per string (`from_slice` validates every string
/// it reads; six calls on a session-verify body cost about 700
/// instructions, one call over the body about 100). Bodies that are not
/// UTF-8 go to `from_slice`, so the error is the one it gives, with its
/// position; `tests` checks both agree.
fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// A JSON string field borrowed from the body when it has no escapes (the
/// usual case: ids and tokens), owned otherwise. serde's own `Cow<str>`
/// always copies, and `&str` refuses escaped strings, which are valid JSON.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub std::borrow::Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(std::borrow::Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Maps a serde error to our shape: syntax errors are `400 malformed_json`,
/// well-formed JSON with a wrong field is `422 invalid_field` / `400
/// missing_field`. The message names what serde saw but never echoes input
/// values (they may be secrets).
fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(ErrorCode::MalformedJson),
        Category::Data => {
            let msg = e.to_string();
            if let Some(field) = missing_field(&msg) {
                ApiError::with_message(ErrorCode::MissingField, "a required field is missing")
                    .field(field)
            } else {
                ApiError::with_message(
                    ErrorCode::InvalidField,
                    "a field has the wrong type or value",
                )
            }
        }
    }
}

fn missing_field(msg: &str) -> Option<String> {
    let rest = msg.strip_prefix("missing field `")?;
    let end = rest.find('`')?;
    Some(rest[..end].to_owned())
}

/// The percent-decoded value of query parameter `name` (the last one wins),
/// without building a map: the hot routes read one or two parameters.
/// Borrowed when the value needs no decoding.
pub fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    let mut found = None;
    for pair in query?.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let matches = if k.bytes().any(|b| b == b'%' || b == b'+') {
            percent_decode(k) == name
        } else {
            k == name
        };
        if matches {
            found = Some(v);
        }
    }
    let v = found?;
    Some(if v.bytes().any(|b| b == b'%' || b == b'+') {
        std::borrow::Cow::Owned(percent_decode(v))
    } else {
        std::borrow::Cow::Borrowed(v)
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The project secret: `X-Qyzar-Project-Secret`, else `Authorization: Bearer`
/// when the bearer value looks like a secret (`qz_sk_…`).
pub fn project_secret<'h>(headers: &'h Headers<'_>) -> Option<&'h str> {
    // A static name: a `&str` name is parsed and checked on every lookup.
    static NAME: http::HeaderName = http::HeaderName::from_static("x-qyzar-project-secret");
    if let Some(v) = headers.get(&NAME).and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    bearer(headers).filter(|b| b.starts_with("qz_sk_"))
}

/// The `Authorization: Bearer …` value, if any.
///
/// Every authenticated hot-path call reads it: the usual spelling
/// (`Bearer ` then the secret) is recognised by its first seven bytes,
/// without searching for the space; any other takes the general split.
/// `tests` hold the two equal.
pub fn bearer<'h>(headers: &'h Headers<'_>) -> Option<&'h str> {
    let v = headers.get(&AUTHORIZATION)?.to_str().ok()?;
    match v.as_bytes().get(..7) {
        // "bearer" has no space, so the seventh byte is the first one.
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => v.get(7..).map(str::trim),
        _ => bearer_general(v),
    }
}

/// [`bearer`] for any spelling: split at the first space.
fn bearer_general(v: &str) -> Option<&str> {
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// The value of cookie `name` from the `Cookie` header(s).
pub fn cookie<'a>(headers: &'a Headers<'_>, name: &str) -> Option<&'a str> {
    headers
        .get_all(&COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    /// The usual spelling's shortcut answers as the general split does:
    /// over schemes in any case, every byte after them (tab, DEL, high
    /// bytes, spaces to trim), and values too short to hold a secret.
    #[test]
    fn bearer_answers_as_the_general_path() {
        let mut values: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"Bearer".to_vec(),
            b"Bearer ".to_vec(),
            b"Bearer  ".to_vec(),
            b"bearer x".to_vec(),
            b"BEARER sk_live_abc".to_vec(),
            b"Basic abc".to_vec(),
            b"Bearerx abc".to_vec(),
            b"Bearer\tabc".to_vec(),
            b" Bearer abc".to_vec(),
            b"Bearer  sk_abc \t ".to_vec(),
            b"Bearer a b".to_vec(),
        ];
        for b in 0..=255u8 {
            for at in [0, 5, 40] {
                let mut secret = b"sk_test_0123456789abcdef0123456789abcdef0123".to_vec();
                secret[at] = b;
                values.push([b"Bearer ".as_slice(), &secret].concat());
                values.push([b"bEaReR ".as_slice(), &secret].concat());
                values.push([b"Token ".as_slice(), &secret].concat());
            }
        }
        for v in values {
            let Ok(value) = http::HeaderValue::from_bytes(&v) else {
                continue;
            };
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value.clone());
            assert_eq!(
                bearer(&Headers::map(&headers)),
                value.to_str().ok().and_then(bearer_general),
                "{:?}",
                String::from_utf8_lossy(&v)
            );
        }
        assert_eq!(bearer(&Headers::map(&HeaderMap::new())), None);
    }

    use qyzar_shared::deadline::DeadlineError;

    type Frames = http_body_util::StreamBody<
        futures::stream::Iter<std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, DeadlineError>>>,
    >;

    /// A body of the given frames (and trailers), failing at the end with
    /// `fail`.
    fn frames(parts: &[&[u8]], fail: Option<DeadlineError>) -> Frames {
        let mut items: Vec<Result<hyper::body::Frame<Bytes>, _>> = parts
            .iter()
            .map(|p| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(p))))
            .collect();
        items.push(Ok(hyper::body::Frame::trailers(HeaderMap::new())));
        if let Some(e) = fail {
            items.push(Err(e));
        }
        http_body_util::StreamBody::new(futures::stream::iter(items))
    }

    /// What `Limited::collect`, the library this reader replaced, makes of
    /// a body: the same bytes, or the same error code.
    async fn by_library(parts: &[&[u8]]) -> Result<Bytes, ErrorCode> {
        match http_body_util::Limited::new(frames(parts, None), MAX_BODY)
            .collect()
            .await
        {
            Ok(c) => Ok(c.to_bytes()),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(ErrorCode::PayloadTooLarge)
            }
            Err(_) => Err(ErrorCode::MalformedJson),
        }
    }

    #[tokio::test]
    async fn read_body_agrees_with_limited_collect() {
        let big = vec![b'x'; MAX_BODY];
        let cases: Vec<Vec<&[u8]>> = vec![
            vec![],
            vec![b""],
            vec![b"{}"],
            vec![b"{\"a\":", b"1", b"}"],
            vec![b"", b"ab", b"", b"cd"],
            vec![&big],
            vec![&big[..MAX_BODY / 2], &big[MAX_BODY / 2..]],
            vec![&big, b"!"],
            vec![b"!", &big],
            vec![&big[..MAX_BODY - 1], b"!", b"?"],
        ];
        for parts in cases {
            let ours = read_body(&Headers::map(&HeaderMap::new()), frames(&parts, None))
                .await
                .map_err(|e| e.code);
            assert_eq!(
                ours,
                by_library(&parts).await,
                "frames of {:?}",
                parts.iter().map(|p| p.len()).collect::<Vec<_>>()
            );
        }
    }

    #[tokio::test]
    async fn read_body_hands_one_frame_on_without_a_copy_and_maps_errors() {
        let body = Bytes::from_static(b"{\"sessionId\":\"s\"}");
        let read = read_body(
            &Headers::map(&HeaderMap::new()),
            http_body_util::Full::new(body.clone()),
        )
        .await
        .unwrap();
        assert_eq!(read.as_ptr(), body.as_ptr(), "the same buffer");
        let mut declared = HeaderMap::new();
        declared.insert(CONTENT_LENGTH, (MAX_BODY + 1).to_string().parse().unwrap());
        let e = read_body(&Headers::map(&declared), frames(&[b"{}"], None))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PayloadTooLarge, "refused before reading");
        let e = read_body(
            &Headers::map(&HeaderMap::new()),
            frames(&[b"{"], Some(DeadlineError::Body("reset".into()))),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        let e = read_body(
            &Headers::map(&HeaderMap::new()),
            frames(&[b"{"], Some(DeadlineError::TimedOut)),
        )
        .await
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::RequestTimeout);
    }

    #[test]
    fn percent_decoding_handles_plus_escapes_and_broken_escapes() {
        assert_eq!(percent_decode("a+b%20c%2Bd"), "a b c+d");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn query_param_reads_one_value_and_decodes_only_when_needed() {
        let q = Some("projectId=prj_a&clientToken=a%2Eb&x=1&projectId=prj_b");
        assert_eq!(
            query_param(q, "projectId").as_deref(),
            Some("prj_b"),
            "the last one wins"
        );
        assert!(matches!(
            query_param(q, "x"),
            Some(std::borrow::Cow::Borrowed("1"))
        ));
        assert_eq!(query_param(q, "clientToken").as_deref(), Some("a.b"));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(None, "x"), None);
        assert_eq!(query_param(Some("flag"), "flag").as_deref(), Some(""));
    }

    #[test]
    fn secret_comes_from_header_or_bearer() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Bearer qz_sk_abc".parse().unwrap());
        assert_eq!(project_secret(&Headers::map(&h)), Some("qz_sk_abc"));
        h.insert(AUTHORIZATION, "Bearer eyJhbGciOi".parse().unwrap());
        assert_eq!(
            project_secret(&Headers::map(&h)),
            None,
            "a bearer JWT is not a secret"
        );
        h.insert("x-qyzar-project-secret", "qz_sk_xyz".parse().unwrap());
        assert_eq!(project_secret(&Headers::map(&h)), Some("qz_sk_xyz"));
    }

    #[test]
    fn text_borrows_unless_escaped() {
        let t: Text<'_> = serde_json::from_slice(br#""ses_abc""#).unwrap();
        assert!(matches!(t.0, std::borrow::Cow::Borrowed("ses_abc")));
        let t: Text<'_> = serde_json::from_slice(br#""ses_\u0061bc""#).unwrap();
        assert_eq!(&*t, "ses_abc");
        assert!(serde_json::from_slice::<Text<'_>>(b"12").is_err());
    }

    #[test]
    fn cookies_are_found_across_headers() {
        let mut h = HeaderMap::new();
        h.append(COOKIE, "a=1; qyzar_session_id=ses_1".parse().unwrap());
        h.append(COOKIE, "qyzar_session_token=tok".parse().unwrap());
        assert_eq!(cookie(&Headers::map(&h), "qyzar_session_id"), Some("ses_1"));
        assert_eq!(
            cookie(&Headers::map(&h), "qyzar_session_token"),
            Some("tok")
        );
        assert_eq!(cookie(&Headers::map(&h), "missing"), None);
    }

    #[test]
    fn parse_json_agrees_with_from_slice() {
        let bodies: &[&[u8]] = &[
            br#"{"projectId":"prj_a","sessionId":"ses_\u0061b","n":[1,2.5,-3e2],"o":{"k":null}}"#,
            "{\"name\":\"Zoë 𝄞\"}".as_bytes(),
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"\xc3\"}",
            b"{\"a\":1,}",
            b"{\"a\":\"\\ud800\"}",
            b"[1,2",
            b"",
            b"\xef\xbb\xbf{}",
            b"{\"a\":\"x\"} trailing",
            br#""ses_plain""#,
            br#""ses_\u0061\n""#,
        ];
        for body in bodies {
            let ours = parse_json::<serde_json::Value>(body);
            let theirs = serde_json::from_slice::<serde_json::Value>(body);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
                (a, b) => panic!("{body:?}: {a:?} against {b:?}"),
            }
            let ours = parse_json::<Text<'_>>(body).map(|t| t.0.into_owned());
            let theirs = serde_json::from_slice::<Text<'_>>(body).map(|t| t.0.into_owned());
            assert_eq!(ours.is_ok(), theirs.is_ok(), "{body:?}");
        }
    }

    #[test]
    fn json_errors_are_classified() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct B {
            a: u32,
        }
        assert_eq!(
            json_body::<B>(&Headers::map(&h), b"{").unwrap_err().code,
            ErrorCode::MalformedJson
        );
        let e = json_body::<B>(&Headers::map(&h), b"{}").unwrap_err();
        assert_eq!(
            (e.code, e.field.as_deref()),
            (ErrorCode::MissingField, Some("a"))
        );
        assert_eq!(
            json_body::<B>(&Headers::map(&h), br#"{"a":"x"}"#)
                .unwrap_err()
                .code,
            ErrorCode::InvalidField
        );
        let mut t = HeaderMap::new();
        t.insert(CONTENT_TYPE, "text/plain".parse().unwrap());
        assert_eq!(
            json_body::<B>(&Headers::map(&t), br#"{"a":1}"#)
                .unwrap_err()
                .code,
            ErrorCode::UnsupportedMediaType
        );
        assert_eq!(
            json_body::<B>(&Headers::map(&h), br#"{"a":1}"#).unwrap().a,
            1
        );
    }
}
