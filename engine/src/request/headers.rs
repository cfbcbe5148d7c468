//! A request's header fields as the routes read them: looked up by name in
//! the bytes the request came in, not copied into a `HeaderMap` first.
//!
//! Why: on the HTTP/1.1 fast path (`server/h1.rs`) building the `HeaderMap`
//! and `Uri` of every request (a hash and an insert per field, a name
//! parsed per field, a shared `Bytes` per value, and dropping them all
//! again) was about a fifth of session-verify's instructions
//! (BENCHMARKS.md, "Requests read in place"). A route reads three to five
//! fields by name; a request has a handful. So the fast path hands the
//! router the offsets `httparse` found, and a lookup is a walk over them
//! comparing names case-insensitively (at most 64 fields: `MAX_HEADERS`).
//! hyper's path (everything the fast path hands over) wraps the
//! `HeaderMap` hyper built.
//!
//! Both answer as a `HeaderMap` would: the first field of a name for
//! [`Headers::get`], every field of it in order for [`Headers::get_all`],
//! and [`Value::to_str`] as `HeaderValue::to_str`. `tests` holds the two
//! forms equal on the same fields, and `server/h1/tests.rs` holds what
//! `httparse` accepts to what `HeaderName` and `HeaderValue` accept.

use http::{HeaderMap, HeaderName};

/// Where one field is in the buffered request: name start and length,
/// value start and length.
pub(crate) type Field = (u32, u32, u32, u32);

/// The header fields of one request, read in place.
pub struct Headers<'a> {
    repr: Repr<'a>,
}

enum Repr<'a> {
    /// The fast path's: the fields of a head parsed in `buf`. A field whose
    /// bit is set in `hidden` has been taken out ([`Headers::hide`]); there
    /// are at most 64 fields, one bit each.
    Raw {
        buf: &'a [u8],
        fields: &'a [Field],
        hidden: u64,
    },
    /// hyper's: its map, and the names [`Headers::hide`] took out (hyper's
    /// path is the rare one; the map is not copied to remove them).
    Map {
        map: &'a HeaderMap,
        hidden: Vec<HeaderName>,
    },
}

/// One field value, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value<'a>(&'a [u8]);

/// A value that is not visible ASCII, as `http::header::ToStrError`.
#[derive(Debug)]
pub struct ToStrError;

impl<'a> Value<'a> {
    /// The value as text when every byte is visible ASCII or a tab, exactly
    /// as `HeaderValue::to_str` decides (tested against it over every byte).
    pub fn to_str(&self) -> Result<&'a str, ToStrError> {
        // Folded without an early exit, so it runs as vector code.
        let visible = self
            .0
            .iter()
            .fold(true, |ok, &b| ok & ((b == b'\t') | (32..127).contains(&b)));
        if visible {
            std::str::from_utf8(self.0).map_err(|_| ToStrError)
        } else {
            Err(ToStrError)
        }
    }

    /// The value's bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.0
    }
}

impl<'a> Headers<'a> {
    /// Fields parsed from `buf` at the offsets in `fields` (at most 64).
    /// The caller vouches that names and values are ones `HeaderName` and
    /// `HeaderValue` accept (`httparse` checks what they check).
    pub(crate) fn raw(buf: &'a [u8], fields: &'a [Field]) -> Self {
        debug_assert!(fields.len() <= 64);
        Self {
            repr: Repr::Raw {
                buf,
                fields: &fields[..fields.len().min(64)],
                hidden: 0,
            },
        }
    }

    /// hyper's map of a request.
    pub fn map(map: &'a HeaderMap) -> Self {
        Self {
            repr: Repr::Map {
                map,
                hidden: Vec::new(),
            },
        }
    }

    /// The first value of field `name`, as `HeaderMap::get`.
    pub fn get(&self, name: &HeaderName) -> Option<Value<'_>> {
        match &self.repr {
            Repr::Raw {
                buf,
                fields,
                hidden,
            } => {
                let want = name.as_str().as_bytes();
                for (i, f) in fields.iter().enumerate() {
                    if hidden & (1u64 << i) == 0 && is(buf, f, want) {
                        return value(buf, f);
                    }
                }
                None
            }
            Repr::Map { map, hidden } => {
                if hidden.contains(name) {
                    return None;
                }
                map.get(name).map(|v| Value(v.as_bytes()))
            }
        }
    }

    /// Whether a field `name` came, as `HeaderMap::contains_key`.
    pub fn contains_key(&self, name: &HeaderName) -> bool {
        self.get(name).is_some()
    }

    /// Every value of field `name` in the order they came, as
    /// `HeaderMap::get_all`.
    pub fn get_all<'s>(&'s self, name: &'s HeaderName) -> impl Iterator<Item = Value<'s>> + 's {
        let (raw, map) = match &self.repr {
            Repr::Raw { .. } => (Some(self.raw_values(name)), None),
            Repr::Map { map, hidden } if !hidden.contains(name) => {
                (None, Some(map.get_all(name).iter()))
            }
            Repr::Map { .. } => (None, None),
        };
        raw.into_iter()
            .flatten()
            .chain(map.into_iter().flatten().map(|v| Value(v.as_bytes())))
    }

    /// Takes every field `name` out: later lookups do not see it. How
    /// forwarding headers from untrusted peers are dropped
    /// (`client_addr::normalise`).
    pub fn hide(&mut self, name: &HeaderName) {
        match &mut self.repr {
            Repr::Raw {
                buf,
                fields,
                hidden,
            } => {
                *hidden |= named(buf, fields, name.as_str().as_bytes())
                    .fold(0, |bits, (i, _)| bits | 1u64 << i);
            }
            Repr::Map { hidden, .. } => {
                if !hidden.contains(name) {
                    hidden.push(name.clone());
                }
            }
        }
    }

    /// Every field not hidden, as (name in lower case, value), in the order
    /// they came on the fast path and in the map's order on hyper's (a
    /// name's values together, at its first place): for tests and logs, not
    /// for lookups.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> Vec<(String, Value<'_>)> {
        match &self.repr {
            Repr::Raw {
                buf,
                fields,
                hidden,
            } => fields
                .iter()
                .enumerate()
                .filter(|(i, _)| hidden & (1u64 << i) == 0)
                .map(|(_, &(n, nl, v, vl))| {
                    let name = &buf[n as usize..(n + nl) as usize];
                    let value = &buf[v as usize..(v + vl) as usize];
                    (
                        String::from_utf8_lossy(name).to_ascii_lowercase(),
                        Value(value),
                    )
                })
                .collect(),
            Repr::Map { map, hidden } => map
                .iter()
                .filter(|(n, _)| !hidden.contains(n))
                .map(|(n, v)| (n.as_str().to_owned(), Value(v.as_bytes())))
                .collect(),
        }
    }

    fn raw_values<'s>(&'s self, name: &'s HeaderName) -> impl Iterator<Item = Value<'s>> + 's {
        let (buf, fields, hidden) = match &self.repr {
            Repr::Raw {
                buf,
                fields,
                hidden,
            } => (*buf, *fields, *hidden),
            Repr::Map { .. } => (&[][..], &[][..], 0),
        };
        named(buf, fields, name.as_str().as_bytes())
            .filter(move |&(i, _)| hidden & (1u64 << i) == 0)
            .filter_map(move |(_, f)| value(buf, f))
    }
}

/// The fields of `fields` called `want`, with their places.
fn named<'b>(
    buf: &'b [u8],
    fields: &'b [Field],
    want: &'b [u8],
) -> impl Iterator<Item = (usize, &'b Field)> + 'b {
    fields
        .iter()
        .enumerate()
        .filter(move |(_, f)| is(buf, f, want))
}

/// Whether field `f` of `buf` is called `want`, the lower-case name of a
/// `HeaderName` (a field's name may come in any case): the length first,
/// which tells most names apart.
#[inline]
fn is(buf: &[u8], f: &Field, want: &[u8]) -> bool {
    if f.1 as usize != want.len() {
        return false;
    }
    let at = f.0 as usize;
    buf.get(at..at + want.len())
        .is_some_and(|have| have.eq_ignore_ascii_case(want))
}

/// The value of field `f` of `buf`.
#[inline]
fn value<'a>(buf: &'a [u8], f: &Field) -> Option<Value<'a>> {
    let at = f.2 as usize;
    buf.get(at..at + f.3 as usize).map(Value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// A head's fields as the fast path finds them, from `(name, value)`.
    fn raw_fields(fields: &[(&str, &[u8])]) -> (Vec<u8>, Vec<Field>) {
        let mut buf = Vec::new();
        let mut at = Vec::new();
        for (n, v) in fields {
            let ns = buf.len() as u32;
            buf.extend_from_slice(n.as_bytes());
            buf.extend_from_slice(b": ");
            let vs = buf.len() as u32;
            buf.extend_from_slice(v);
            buf.extend_from_slice(b"\r\n");
            at.push((ns, n.len() as u32, vs, v.len() as u32));
        }
        (buf, at)
    }

    fn map_of(fields: &[(&str, &[u8])]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (n, v) in fields {
            map.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        map
    }

    /// The two forms answer every lookup the same, before and after a
    /// name is hidden: names in any case, repeated, absent, and values
    /// that are and are not text.
    #[test]
    fn raw_fields_answer_as_the_map() {
        let fields: &[(&str, &[u8])] = &[
            ("Host", b"example.com"),
            ("X-Forwarded-For", b"10.0.0.1, 10.0.0.2"),
            ("cookie", b"a=1"),
            ("Content-Type", b"application/json"),
            ("COOKIE", b"b=2; c=3"),
            ("x-forwarded-for", b"10.0.0.3"),
            ("X-Obs", b"caf\xc3\xa9"),
            ("X-Tab", b"a\tb"),
            ("X-Empty", b""),
        ];
        let (buf, at) = raw_fields(fields);
        let mut map = map_of(fields);
        let mut raw = Headers::raw(&buf, &at);
        let names = [
            "host",
            "x-forwarded-for",
            "cookie",
            "content-type",
            "x-obs",
            "x-tab",
            "x-empty",
            "authorization",
            "hos",
        ];
        let check = |raw: &Headers<'_>, map: &HeaderMap| {
            for n in names {
                let name = HeaderName::from_static(n);
                let want = map.get(&name);
                let got = raw.get(&name);
                assert_eq!(got.map(|v| v.as_bytes()), want.map(|v| v.as_bytes()), "{n}");
                assert_eq!(
                    got.map(|v| v.to_str().ok()),
                    want.map(|v| v.to_str().ok()),
                    "{n}"
                );
                let all: Vec<_> = raw.get_all(&name).map(|v| v.as_bytes()).collect();
                let want: Vec<_> = map.get_all(&name).iter().map(|v| v.as_bytes()).collect();
                assert_eq!(all, want, "{n}");
            }
        };
        check(&raw, &map);
        check(&Headers::map(&map), &map_of(fields));
        let xff = HeaderName::from_static("x-forwarded-for");
        raw.hide(&xff);
        let unhidden = map.clone();
        let mut wrapped = Headers::map(&unhidden);
        wrapped.hide(&xff);
        map.remove(&xff);
        check(&raw, &map);
        check(&wrapped, &map);
        assert_eq!(raw.get(&xff), None);
        assert_eq!(wrapped.get_all(&xff).count(), 0);
        assert_eq!(raw.iter().len(), fields.len() - 2);
        assert_eq!(wrapped.iter().len(), fields.len() - 2);
    }

    /// `Value::to_str` decides as `HeaderValue::to_str` over every byte, at
    /// the start, the middle and the end of a value.
    #[test]
    fn to_str_decides_as_header_value() {
        for b in 0..=255u8 {
            for v in [vec![b], vec![b'a', b, b'c'], vec![b'a', b]] {
                let Ok(hv) = HeaderValue::from_bytes(&v) else {
                    continue;
                };
                assert_eq!(
                    Value(&v).to_str().ok(),
                    hv.to_str().ok(),
                    "byte {b:#04x} in {v:?}"
                );
            }
        }
    }
}
