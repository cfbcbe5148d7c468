//! Ids and small newtypes that are parsed once at the edge and then trusted.
//!
//! Every public id is a short type prefix plus a random base64url body
//! (`prj_…`, `ses_…`, `dev_…`, `usr_…`). Parsing checks the prefix, the
//! length and the alphabet, so a value of these types can go into a store key,
//! a log line or a URL without further escaping.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest body accepted after the prefix. Generated bodies are 22 chars
/// (128 random bits); the cap leaves room for ids minted elsewhere while
/// keeping keys small.
const MAX_BODY: usize = 64;
/// Shortest body accepted: 16 base64url chars = 96 bits, below which an id
/// could be guessed.
const MIN_BODY: usize = 16;

/// Why a string is not a valid id or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The value does not start with the expected prefix.
    #[error("must start with `{0}`")]
    Prefix(&'static str),
    /// The value is too short or too long.
    #[error("has the wrong length")]
    Length,
    /// The value holds a character outside its alphabet.
    #[error("holds a character that is not allowed")]
    Charset,
    /// The value is not an email address.
    #[error("is not an email address")]
    Email,
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Random base64url body of `n` bytes from the system CSPRNG.
fn random_body(n: usize) -> String {
    use base64::Engine as _;
    use ring::rand::SecureRandom as _;
    let mut buf = [0u8; 32];
    let buf = &mut buf[..n.min(32)];
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the system random source failed; no safe id can be made");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// The prefix every value of this id carries.
            pub const PREFIX: &'static str = $prefix;

            /// Parses and checks an id coming from outside.
            pub fn parse(s: &str) -> Result<Self, ParseError> {
                Self::check(s).map(|s| Self(s.into()))
            }

            /// Checks `s` as [`Self::parse`] does, without allocating: for
            /// hot paths that only need to know the text is such an id.
            pub fn check(s: &str) -> Result<&str, ParseError> {
                let body = s.strip_prefix($prefix).ok_or(ParseError::Prefix($prefix))?;
                if body.len() < MIN_BODY || body.len() > MAX_BODY {
                    return Err(ParseError::Length);
                }
                if !body.bytes().all(is_b64url) {
                    return Err(ParseError::Charset);
                }
                Ok(s)
            }

            /// A fresh id with 128 random bits.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_body(16)).into())
            }

            /// The id as text, prefix included.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A customer project (`prj_…`): the unit that owns a secret and settings.
    ProjectId,
    "prj_"
);
prefixed_id!(
    /// A verify session opened by `/connect` (`ses_…`).
    SessionId,
    "ses_"
);
prefixed_id!(
    /// A device (`dev_…`). Derived, not random, in production: see
    /// [`DeviceId::from_digest`].
    DeviceId,
    "dev_"
);
prefixed_id!(
    /// A dashboard user (`usr_…`).
    UserId,
    "usr_"
);

impl DeviceId {
    /// Builds the device id from a digest of the stable entropy subset, so the
    /// same browser gets the same id across sessions without any lookup.
    pub fn from_digest(digest: &[u8]) -> Self {
        use base64::Engine as _;
        let n = digest.len().clamp(12, 24);
        let body =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..n.min(digest.len())]);
        Self(format!("dev_{body}").into())
    }
}

/// A normalised email address: trimmed, lower-cased, one `@`, a dotted domain,
/// at most 254 bytes (RFC 5321's path limit).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(Box<str>);

impl Email {
    /// Parses and normalises an address. Deliberately simple: deliverability
    /// is proven by the verification mail, not by a regex.
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let s = s.trim();
        if s.is_empty() || s.len() > 254 {
            return Err(ParseError::Email);
        }
        let (local, domain) = s.split_once('@').ok_or(ParseError::Email)?;
        let ok_local = !local.is_empty()
            && local.len() <= 64
            && local.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
        let ok_domain = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !ok_local || !ok_domain {
            return Err(ParseError::Email);
        }
        Ok(Self(s.to_ascii_lowercase().into()))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_parse_back() {
        let p = ProjectId::generate();
        assert!(p.as_str().starts_with("prj_"));
        assert_eq!(ProjectId::parse(p.as_str()), Ok(p.clone()));
        assert_ne!(p, ProjectId::generate(), "two fresh ids must differ");
        let s = SessionId::generate();
        assert_eq!(SessionId::parse(s.as_str()), Ok(s));
    }

    #[test]
    fn wrong_prefix_length_or_charset_is_refused() {
        assert_eq!(
            ProjectId::parse("ses_AAAAAAAAAAAAAAAAAAAA"),
            Err(ParseError::Prefix("prj_"))
        );
        assert_eq!(ProjectId::parse("prj_short"), Err(ParseError::Length));
        assert_eq!(
            ProjectId::parse(&format!("prj_{}", "a".repeat(65))),
            Err(ParseError::Length)
        );
        assert_eq!(
            ProjectId::parse("prj_AAAAAAAAAAAAAAAA/AAA"),
            Err(ParseError::Charset)
        );
        assert_eq!(
            ProjectId::parse("prj_AAAAAAAAAAAAAAAA AAA"),
            Err(ParseError::Charset)
        );
        assert_eq!(ProjectId::parse(""), Err(ParseError::Prefix("prj_")));
    }

    #[test]
    fn ids_deserialize_through_parse() {
        let ok: Result<SessionId, _> = serde_json::from_str("\"ses_0123456789abcdef_-XY\"");
        assert!(ok.is_ok());
        let bad: Result<SessionId, _> = serde_json::from_str("\"ses_../../etc\"");
        assert!(bad.is_err());
    }

    #[test]
    fn device_id_from_digest_is_stable() {
        let d = [7u8; 32];
        assert_eq!(DeviceId::from_digest(&d), DeviceId::from_digest(&d));
        let id = DeviceId::from_digest(&d);
        assert_eq!(DeviceId::parse(id.as_str()), Ok(id));
        assert_ne!(DeviceId::from_digest(&[8u8; 32]), DeviceId::from_digest(&d));
    }

    #[test]
    fn email_normalises_and_refuses_garbage() {
        assert_eq!(
            Email::parse("  Ann@Example.COM ").unwrap().as_str(),
            "ann@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@example.com",
            "ann@example",
            "ann@.com",
            "ann@ex..com",
            "a b@example.com",
            "ann@exa mple.com",
        ] {
            assert_eq!(Email::parse(bad), Err(ParseError::Email), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }
}
