//! Bucket keys: a keyed 128-bit hash of (project id, bucket name, key).
//!
//! Why a hash and not the key bytes: entries stay 16 bytes, fixed-size and
//! `Copy`, so the map never allocates per key and a lookup compares two words
//! whatever the length of the email or IP. Why *keyed* (SipHash-1-3, the
//! function std uses against HashDoS, with a random key drawn per process):
//! keys are user input, and two keys that hash alike share a counter. Without
//! the secret an attacker can neither compute nor observe the hash, so aiming
//! a collision at a given key (to drain a victim's bucket, or to share a
//! fresh one) takes about 2¹²⁸ blind tries; an accidental collision among 10⁹
//! live keys has a probability near 10⁻²¹. The per-process key is also why state cannot be
//! shared between engines by hash: each engine limits on its own (see
//! ARCHITECTURE.md, "Caches and stores").

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};

use siphasher::sip128::{Hasher128, SipHasher13};

/// Longest key (email, IP, user id…) accepted, in bytes.
///
/// Keys come from request bodies; the route answers 422 for a longer one
/// (naming the field) instead of hashing arbitrary amounts of attacker data
/// on the hot path. 256 bytes holds any email address (RFC 5321 caps a path
/// at 256 octets) and any textual IP address.
pub const MAX_KEY_LEN: usize = 256;

/// Identifies one bucket of one subject: the keyed hash of
/// (project id, bucket name, key). Made by [`KeyHasher::bucket_key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketKey {
    /// Low half: feeds the map's own hashing (see [`KeyIdentityHasher`]).
    lo: u64,
    /// High half: picks the shard, so shard choice and in-shard position use
    /// independent bits.
    hi: u64,
}

impl BucketKey {
    /// The bits that choose this key's shard.
    pub(super) fn shard_bits(self) -> u64 {
        self.hi
    }

    /// Its 16 bytes, as engines share it (cross-engine limits).
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.lo.to_le_bytes());
        b[8..].copy_from_slice(&self.hi.to_le_bytes());
        b
    }

    /// The key [`BucketKey::to_bytes`] gave.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let (lo, hi) = b.split_at(8);
        Self {
            lo: u64::from_le_bytes(lo.try_into().expect("8 bytes")),
            hi: u64::from_le_bytes(hi.try_into().expect("8 bytes")),
        }
    }
}

impl Hash for BucketKey {
    /// The key is already a uniform keyed hash: feed one half through as is
    /// instead of hashing it a second time.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo);
    }
}

/// The key was longer than [`MAX_KEY_LEN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyTooLong;

impl fmt::Display for KeyTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("rate-limit key is longer than 256 bytes")
    }
}

impl std::error::Error for KeyTooLong {}

/// Makes [`BucketKey`]s under a secret SipHash key drawn once per instance.
#[derive(Clone)]
pub struct KeyHasher {
    k0: u64,
    k1: u64,
}

impl fmt::Debug for KeyHasher {
    /// Never prints the key: it is what keeps collisions out of reach.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyHasher { .. }")
    }
}

impl KeyHasher {
    /// A hasher with a fresh random key.
    ///
    /// The key comes from std's `RandomState`, which is seeded from the OS
    /// random source: its SipHash of two constants is as unpredictable as its
    /// own key, and it avoids a dependency on a random-number crate.
    pub fn random() -> Self {
        let seed = RandomState::new();
        Self {
            k0: seed.hash_one(0x7179_7a61_725f_6b30_u64),
            k1: seed.hash_one(0x7179_7a61_725f_6b31_u64),
        }
    }

    /// A hasher every engine of a deployment derives alike for
    /// `project_id` from `seed` (a secret they share), so one key has one
    /// [`BucketKey`] on every engine and their counts can be added up
    /// (cross-engine limits). Still unpredictable to a tenant, who knows
    /// neither the seed nor the derived key.
    pub fn shared(seed: &[u8; 32], project_id: &str) -> Self {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"qyzar limiter key ids v1\0");
        ctx.update(seed);
        ctx.update(project_id.as_bytes());
        let d = ctx.finish();
        let d = d.as_ref();
        Self {
            k0: u64::from_le_bytes(d[..8].try_into().expect("8 bytes")),
            k1: u64::from_le_bytes(d[8..16].try_into().expect("8 bytes")),
        }
    }

    /// The bucket key of `key` in `bucket` (e.g. `"ip"`, `"metadata:email"`)
    /// of `project_id`.
    ///
    /// Project id and bucket name are length-prefixed, so `("ab", "c")` and
    /// `("a", "bc")` never meet; the key goes last and needs no prefix because
    /// SipHash mixes in the total length. Normalising the key (lower-casing
    /// emails, canonical IPv6) is the caller's business: bytes are hashed as given.
    pub fn bucket_key(
        &self,
        project_id: &str,
        bucket: &str,
        key: &[u8],
    ) -> Result<BucketKey, KeyTooLong> {
        self.bucket_key_parts(project_id, [bucket, ""], key)
    }

    /// [`KeyHasher::bucket_key`] of the bucket named `bucket[0]` followed by
    /// `bucket[1]` (`"metadata:"`, `"email"`), without joining them: SipHash
    /// is a stream, so writing the parts one after the other hashes the same
    /// bytes as writing the joined name (a test pins it).
    pub fn bucket_key_parts(
        &self,
        project_id: &str,
        bucket: [&str; 2],
        key: &[u8],
    ) -> Result<BucketKey, KeyTooLong> {
        if key.len() > MAX_KEY_LEN {
            return Err(KeyTooLong);
        }
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_usize(project_id.len());
        h.write(project_id.as_bytes());
        h.write_usize(bucket[0].len() + bucket[1].len());
        h.write(bucket[0].as_bytes());
        h.write(bucket[1].as_bytes());
        h.write(key);
        let (lo, hi) = h.finish128().as_u64();
        Ok(BucketKey { lo, hi })
    }
}

/// Passes a [`BucketKey`]'s low half through as the map hash: the key is
/// already a keyed hash, so hashing it again would only cost time.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KeyIdentityHasher(u64);

impl Hasher for KeyIdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }

    /// Only reached if something other than a `BucketKey` is hashed; folds
    /// the bytes in so the result stays a function of the input.
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_input_same_key_different_input_different_key() {
        let h = KeyHasher::random();
        let a = h.bucket_key("prj_1", "ip", b"203.0.113.7").unwrap();
        assert_eq!(a, h.bucket_key("prj_1", "ip", b"203.0.113.7").unwrap());
        assert_ne!(a, h.bucket_key("prj_2", "ip", b"203.0.113.7").unwrap());
        assert_ne!(
            a,
            h.bucket_key("prj_1", "metadata:ip", b"203.0.113.7")
                .unwrap()
        );
        assert_ne!(a, h.bucket_key("prj_1", "ip", b"203.0.113.8").unwrap());
    }

    #[test]
    fn fields_cannot_bleed_into_each_other() {
        let h = KeyHasher::random();
        assert_ne!(
            h.bucket_key("ab", "c", b"").unwrap(),
            h.bucket_key("a", "bc", b"").unwrap()
        );
        assert_ne!(
            h.bucket_key("a", "b", b"c").unwrap(),
            h.bucket_key("a", "bc", b"").unwrap()
        );
    }

    #[test]
    fn each_hasher_has_its_own_secret() {
        let (h1, h2) = (KeyHasher::random(), KeyHasher::random());
        assert_ne!(
            h1.bucket_key("p", "ip", b"k").unwrap(),
            h2.bucket_key("p", "ip", b"k").unwrap()
        );
        assert_eq!(format!("{h1:?}"), "KeyHasher { .. }");
    }

    #[test]
    fn a_name_in_parts_hashes_like_the_joined_name() {
        let h = KeyHasher::random();
        let joined = |a: &str, b: &str, k: &[u8]| {
            let mut sip = SipHasher13::new_with_keys(h.k0, h.k1);
            let name = format!("{a}{b}");
            sip.write_usize(3);
            sip.write(b"prj");
            sip.write_usize(name.len());
            sip.write(name.as_bytes());
            sip.write(k);
            let (lo, hi) = sip.finish128().as_u64();
            BucketKey { lo, hi }
        };
        let long = "x".repeat(40);
        for (a, b) in [
            ("ip", ""),
            ("metadata:", "email"),
            ("", "metadata:email"),
            ("metadata:", ""),
            ("metadata:", long.as_str()),
            ("m", "etadata:userIdentifier"),
        ] {
            for k in [&b""[..], b"a@x", &[7u8; 33][..]] {
                assert_eq!(h.bucket_key_parts("prj", [a, b], k), Ok(joined(a, b, k)));
            }
        }
        assert_eq!(
            h.bucket_key_parts("prj", ["metadata:", "email"], b"a@x"),
            h.bucket_key("prj", "metadata:email", b"a@x")
        );
    }

    #[test]
    fn key_length_is_bounded() {
        let h = KeyHasher::random();
        assert!(h.bucket_key("p", "ip", &[b'a'; MAX_KEY_LEN]).is_ok());
        assert_eq!(
            h.bucket_key("p", "ip", &[b'a'; MAX_KEY_LEN + 1]),
            Err(KeyTooLong)
        );
        assert!(KeyTooLong.to_string().contains(&MAX_KEY_LEN.to_string()));
    }
}
