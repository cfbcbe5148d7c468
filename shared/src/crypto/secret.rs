//! The project secret, its stored hash, constant-time comparison and random
//! single-use tokens.
//!
//! A project secret is `qz_sk_` followed by the unpadded base64url encoding of
//! 32 bytes from the system CSPRNG (43 characters, 49 in all). The engine
//! never holds the secret itself, only its [`SecretHash`]; admin keeps it
//! encrypted with [`super::SecretBox`] so the dashboard can reveal it.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::digest;
use ring::rand::{SecureRandom as _, SystemRandom};

/// Random bytes in a project secret: 256 bits, so guessing is hopeless and a
/// fast hash is enough to store it (see [`SecretHash`]).
const SECRET_BYTES: usize = 32;
/// Length of the base64url body of a secret: `ceil(32 * 4 / 3)` without padding.
const SECRET_BODY_LEN: usize = 43;

/// Why a string is not a well-formed project secret.
///
/// Copy and message-only so that a malformed credential costs no allocation
/// and never echoes the presented value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// The value does not start with `qz_sk_`.
    #[error("a project secret must start with `qz_sk_`")]
    Prefix,
    /// The body after the prefix is not 43 characters long.
    #[error("a project secret has the wrong length")]
    Length,
    /// The body is not canonical unpadded base64url of 32 bytes.
    #[error("a project secret holds a character that is not allowed")]
    Alphabet,
}

/// A project secret (`qz_sk_…`): the credential a customer backend presents
/// on every hot-path call, and the root from which its token keys are derived.
///
/// There is no `Display` and `Debug` prints `qz_sk_***`, so the secret cannot
/// reach a log line or an error message by accident; [`ProjectSecret::expose`]
/// is the one, greppable, way to read it. There is no `PartialEq` either: the
/// only comparison is [`SecretHash::matches`], which runs in constant time.
#[derive(Clone)]
pub struct ProjectSecret(Box<str>);

impl ProjectSecret {
    /// The prefix every project secret carries, so leaked secrets are easy to
    /// recognise (secret scanners, log scrubbers).
    pub const PREFIX: &'static str = "qz_sk_";

    /// A fresh secret with 256 random bits from the system CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        fill_random(&mut bytes);
        let mut s = String::with_capacity(Self::PREFIX.len() + SECRET_BODY_LEN);
        s.push_str(Self::PREFIX);
        URL_SAFE_NO_PAD.encode_string(bytes, &mut s);
        Self(s.into())
    }

    /// Checks a presented or stored secret: prefix, length and alphabet.
    ///
    /// The body must decode as canonical base64url to exactly 32 bytes, so a
    /// secret has one spelling only and its hash is stable.
    pub fn parse(s: &str) -> Result<Self, SecretFormatError> {
        let body = s
            .strip_prefix(Self::PREFIX)
            .ok_or(SecretFormatError::Prefix)?;
        if body.len() != SECRET_BODY_LEN {
            return Err(SecretFormatError::Length);
        }
        let mut out = [0u8; SECRET_BYTES];
        match URL_SAFE_NO_PAD.decode_slice(body, &mut out) {
            Ok(SECRET_BYTES) => Ok(Self(s.into())),
            _ => Err(SecretFormatError::Alphabet),
        }
    }

    /// The secret as text, prefix included: to show it once in the dashboard,
    /// seal it at rest, or feed it to a key derivation.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of the secret string, which is all the engine stores.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

impl fmt::Debug for ProjectSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("qz_sk_***")
    }
}

/// SHA-256 of a project secret string (prefix included).
///
/// A plain hash, not a slow password KDF (argon2, scrypt): the secret carries
/// 256 random bits, so there is no dictionary to grind and a preimage search
/// is out of reach with any hash speed. A fast hash keeps secret checks on
/// the hot path in the sub-microsecond range.
#[derive(Clone, Copy)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Hashes any presented string; it need not be a well-formed secret.
    fn of(s: &str) -> Self {
        let d = digest::digest(&digest::SHA256, s.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        Self(out)
    }

    /// Rebuilds a hash read back from storage or a config snapshot.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw digest, for storage or a config snapshot.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `presented` is the secret this hash was made from.
    ///
    /// The presented string is hashed and the digests compared in constant
    /// time, so neither the comparison nor an early exit leaks how much of a
    /// guess was right. Malformed input simply does not match.
    pub fn matches(&self, presented: &str) -> bool {
        ct_eq(&Self::of(presented).0, &self.0)
    }
}

impl PartialEq for SecretHash {
    /// Constant time, like [`SecretHash::matches`], so no caller can pick the
    /// leaky comparison by accident.
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for SecretHash {}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
///
/// `ring::constant_time::verify_slices_are_equal` is deprecated in ring 0.17,
/// so this is the same fixed-time OR-fold of XORs, eight bytes at a time.
/// `black_box` on the accumulator after each word keeps the optimiser from
/// turning the fold into an early exit; one per word rather than one per
/// byte is what makes a 32-byte digest compare a handful of instructions
/// (a per-byte barrier cost about 50 ns). Lengths are not secret (digests,
/// tags), so a length mismatch returns at once.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_tail, b_tail) = (a_words.remainder(), b_words.remainder());
    let mut diff = a_words.zip(b_words).fold(0u64, |acc, (x, y)| {
        let x = u64::from_ne_bytes(x.try_into().unwrap_or([0; 8]));
        let y = u64::from_ne_bytes(y.try_into().unwrap_or([0; 8]));
        std::hint::black_box(acc | (x ^ y))
    });
    for (x, y) in a_tail.iter().zip(b_tail) {
        diff = std::hint::black_box(diff | u64::from(x ^ y));
    }
    diff == 0
}

/// A random single-use token: `prefix` followed by `n_bytes` CSPRNG bytes in
/// unpadded base64url (password-reset, email-verify, idempotency and similar
/// tokens).
///
/// Use at least 16 bytes (128 bits) for anything that proves possession;
/// store such tokens hashed, as with [`SecretHash`].
pub fn random_token(prefix: &str, n_bytes: usize) -> String {
    let mut bytes = vec![0u8; n_bytes];
    fill_random(&mut bytes);
    let mut s = String::with_capacity(prefix.len() + n_bytes.div_ceil(3) * 4);
    s.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(&bytes, &mut s);
    s
}

/// Fills `buf` from the system CSPRNG.
///
/// `SystemRandom` only fails if the OS has no entropy source at all; no
/// secret can be made safely then, so this panics rather than continue.
pub(super) fn fill_random(buf: &mut [u8]) {
    SystemRandom::new()
        .fill(buf)
        .expect("the system random source failed; no safe secret can be made");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secret_parses_and_has_the_documented_shape() {
        let s = ProjectSecret::generate();
        assert!(s.expose().starts_with("qz_sk_"));
        assert_eq!(s.expose().len(), 49);
        let back = ProjectSecret::parse(s.expose()).unwrap();
        assert_eq!(back.expose(), s.expose());
        assert_ne!(
            ProjectSecret::generate().expose(),
            s.expose(),
            "two secrets must differ"
        );
    }

    #[test]
    fn parse_refuses_bad_prefix_length_and_alphabet() {
        let good = ProjectSecret::generate();
        let body = &good.expose()[6..];
        assert_eq!(
            ProjectSecret::parse(&format!("qz_pk_{body}")).unwrap_err(),
            SecretFormatError::Prefix
        );
        assert_eq!(
            ProjectSecret::parse("").unwrap_err(),
            SecretFormatError::Prefix
        );
        assert_eq!(
            ProjectSecret::parse(&good.expose()[..48]).unwrap_err(),
            SecretFormatError::Length
        );
        assert_eq!(
            ProjectSecret::parse(&format!("{}A", good.expose())).unwrap_err(),
            SecretFormatError::Length
        );
        let mut bad = good.expose().to_owned();
        bad.replace_range(10..11, "+");
        assert_eq!(
            ProjectSecret::parse(&bad).unwrap_err(),
            SecretFormatError::Alphabet
        );
        // 43 chars carry 258 bits; the last char must leave the spare 2 bits zero.
        let non_canonical = format!("qz_sk_{}B", "A".repeat(42));
        assert_eq!(
            ProjectSecret::parse(&non_canonical).unwrap_err(),
            SecretFormatError::Alphabet
        );
        assert!(ProjectSecret::parse(&format!("qz_sk_{}A", "A".repeat(42))).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = ProjectSecret::generate();
        let shown = format!("{s:?} {:?}", s.hash());
        assert_eq!(format!("{s:?}"), "qz_sk_***");
        assert!(!shown.contains(&s.expose()[6..]));
    }

    #[test]
    fn hash_matches_only_the_same_secret() {
        let s = ProjectSecret::generate();
        let h = s.hash();
        assert!(h.matches(s.expose()));
        assert!(!h.matches(ProjectSecret::generate().expose()));
        assert!(!h.matches(""));
        assert!(!h.matches(&s.expose()[..48]));
        assert_eq!(SecretHash::from_bytes(*h.as_bytes()), h);
    }

    #[test]
    fn hash_is_sha256_of_the_string() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let h = SecretHash::of("abc");
        assert_eq!(
            h.as_bytes()[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "must be plain SHA-256 of the UTF-8 string"
        );
    }

    #[test]
    #[allow(deprecated)]
    fn ct_eq_agrees_with_ring() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"", b""),
            (b"a", b"a"),
            (b"a", b"b"),
            (b"abc", b"abd"),
            (b"abc", b"ab"),
            (&[0xff; 32], &[0xff; 32]),
            (&[0x00; 32], &[0x80; 32]),
        ];
        for (a, b) in cases {
            let ring_says = ring::constant_time::verify_slices_are_equal(a, b).is_ok();
            assert_eq!(ct_eq(a, b), ring_says, "{a:?} vs {b:?}");
        }
        // Every single-bit difference in every position is seen, at every
        // length around the 8-byte words (tails included).
        for len in 0..=41 {
            let base: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            assert!(ct_eq(&base, &base.clone()));
            for i in 0..len {
                for bit in 0..8 {
                    let mut other = base.clone();
                    other[i] ^= 1 << bit;
                    assert!(!ct_eq(&base, &other), "len {len}, byte {i}, bit {bit}");
                    assert_eq!(ct_eq(&base, &other), base == other);
                }
            }
        }
        let base = [0x5au8; 32];
        for i in 0..32 {
            for bit in 0..8 {
                let mut other = base;
                other[i] ^= 1 << bit;
                assert!(!ct_eq(&base, &other));
                assert!(ring::constant_time::verify_slices_are_equal(&base, &other).is_err());
            }
        }
    }

    #[test]
    fn random_token_has_prefix_and_length() {
        let t = random_token("rst_", 24);
        assert!(t.starts_with("rst_"));
        assert_eq!(t.len(), 4 + 32);
        assert_ne!(random_token("rst_", 24), t);
        assert_eq!(random_token("x_", 16).len(), 2 + 22);
        assert!(t[4..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }
}
