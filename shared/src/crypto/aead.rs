//! [`SecretBox`]: AES-256-GCM for secrets kept at rest (project secrets in
//! the admin database, Ed25519 private keys, TOTP seeds).

use std::fmt;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};

use super::secret::fill_random;
use super::CryptoError;

/// Format version of a sealed value. A new algorithm or layout gets a new
/// byte, so old rows stay readable during a migration.
const VERSION_1: u8 = 1;
/// Length of the AES-GCM authentication tag.
const TAG_LEN: usize = 16;
/// Shortest sealed value: version, nonce and tag around an empty plaintext.
const MIN_SEALED_LEN: usize = 1 + NONCE_LEN + TAG_LEN;

/// Seals and opens small secrets with AES-256-GCM under one 32-byte master key.
///
/// A sealed value is `version (1 byte) ‖ nonce (12 bytes) ‖ ciphertext ‖ tag
/// (16 bytes)`. Nonces are random: with 96 bits, a key can seal about 2³²
/// values before a nonce collision becomes a concern (NIST SP 800-38D), far
/// more than the secrets one deployment stores, and random nonces need no
/// counter shared between admin replicas.
///
/// The associated data (`aad`) is not stored but must be presented again to
/// open: pass the row's identity (e.g. the project id) so a sealed value
/// copied onto another row does not open there.
pub struct SecretBox {
    /// The AES-256-GCM key; `LessSafeKey` because nonces are random per seal
    /// rather than driven by a `NonceSequence`.
    key: LessSafeKey,
}

impl SecretBox {
    /// A box under `master_key`, which must come from a secret store or
    /// [`SecretBox::generate_key`], never from a password.
    pub fn new(master_key: &[u8; 32]) -> Self {
        let unbound = UnboundKey::new(&AES_256_GCM, master_key)
            .expect("a 32-byte key is always valid for AES-256-GCM");
        Self {
            key: LessSafeKey::new(unbound),
        }
    }

    /// A box under a key given as a byte slice, e.g. decoded from
    /// configuration; refuses anything that is not exactly 32 bytes.
    pub fn from_slice(master_key: &[u8]) -> Result<Self, CryptoError> {
        let key: &[u8; 32] = master_key.try_into().map_err(|_| CryptoError::InvalidKey)?;
        Ok(Self::new(key))
    }

    /// A fresh random master key, for `qyzar dev` and tests.
    pub fn generate_key() -> [u8; 32] {
        let mut key = [0u8; 32];
        fill_random(&mut key);
        key
    }

    /// Encrypts and authenticates `plaintext`, binding it to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce);
        let mut out = Vec::with_capacity(MIN_SEALED_LEN + plaintext.len());
        out.push(VERSION_1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[1 + NONCE_LEN..],
            )
            .expect("aes-gcm sealing only fails above 64 GiB of plaintext");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Decrypts a value made by [`SecretBox::seal`] under the same key and
    /// `aad`. Truncated input, an unknown version, a wrong key, a wrong `aad`
    /// and any altered byte are all the same [`CryptoError::Open`].
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < MIN_SEALED_LEN || sealed[0] != VERSION_1 {
            return Err(CryptoError::Open);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| CryptoError::Open)?;
        let mut buf = sealed[1 + NONCE_LEN..].to_vec();
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| CryptoError::Open)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBox(aes-256-gcm)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed() -> SecretBox {
        SecretBox::new(&SecretBox::generate_key())
    }

    #[test]
    fn round_trip() {
        let b = boxed();
        for msg in [&b""[..], b"x", b"qz_sk_some-secret-value", &[7u8; 1000]] {
            let sealed = b.seal(msg, b"prj_1");
            assert_eq!(sealed.len(), MIN_SEALED_LEN + msg.len());
            assert_eq!(sealed[0], VERSION_1);
            assert_eq!(b.open(&sealed, b"prj_1").unwrap(), msg);
        }
    }

    #[test]
    fn nonces_are_fresh() {
        let b = boxed();
        assert_ne!(b.seal(b"same", b""), b.seal(b"same", b""));
    }

    #[test]
    fn tampered_bytes_are_refused() {
        let b = boxed();
        let sealed = b.seal(b"secret value", b"aad");
        for i in 0..sealed.len() {
            let mut t = sealed.clone();
            t[i] ^= 0x01;
            assert_eq!(b.open(&t, b"aad"), Err(CryptoError::Open), "byte {i}");
        }
    }

    #[test]
    fn wrong_aad_is_refused() {
        let b = boxed();
        let sealed = b.seal(b"secret value", b"prj_a");
        assert_eq!(b.open(&sealed, b"prj_b"), Err(CryptoError::Open));
        assert_eq!(b.open(&sealed, b""), Err(CryptoError::Open));
    }

    #[test]
    fn wrong_key_is_refused() {
        let sealed = boxed().seal(b"secret value", b"aad");
        assert_eq!(boxed().open(&sealed, b"aad"), Err(CryptoError::Open));
    }

    #[test]
    fn truncated_input_is_refused() {
        let b = boxed();
        let sealed = b.seal(b"secret value", b"aad");
        for len in 0..sealed.len() {
            assert_eq!(
                b.open(&sealed[..len], b"aad"),
                Err(CryptoError::Open),
                "len {len}"
            );
        }
        let mut longer = sealed;
        longer.push(0);
        assert_eq!(b.open(&longer, b"aad"), Err(CryptoError::Open));
    }

    #[test]
    fn from_slice_checks_length() {
        assert_eq!(
            SecretBox::from_slice(&[0u8; 31]).unwrap_err(),
            CryptoError::InvalidKey
        );
        let key = SecretBox::generate_key();
        let a = SecretBox::from_slice(&key).unwrap();
        let sealed = a.seal(b"v", b"");
        assert_eq!(SecretBox::new(&key).open(&sealed, b"").unwrap(), b"v");
    }
}
