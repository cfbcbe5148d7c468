//! One project's slice of the snapshot and the lookups the hot path makes on it.

use crate::ids::ProjectId;
use crate::settings::{PlanTier, ProjectSettings};

/// Everything an engine knows about one project. Raw key bytes only: the
/// crypto module turns them into keys, so this type stays plain data.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ProjectConfig {
    /// The `prj_…` id, as text so lookups take a `&str` from the request.
    pub project_id: String,
    /// SHA-256 of each accepted project secret: the current one (no end) and
    /// rotated-out ones until their grace period ends.
    pub secret_hashes: Vec<SecretHashEntry>,
    /// HS256 client-token keys, the current (signing) key first; older ones
    /// still verify tokens minted before a rotation.
    pub hs256_keys: Vec<Hs256KeyEntry>,
    /// Ed25519 keys for projects on EdDSA, current first; published in JWKS.
    pub ed25519: Vec<Ed25519KeyEntry>,
    /// HMAC key that signs opt-out links, derived from the secret by admin.
    pub opt_out_key: [u8; 32],
    /// The validated settings document.
    pub settings: ProjectSettings,
    /// Live origin tokens for `/connect`; sorted by hash once normalised.
    pub origin_tokens: Vec<OriginTokenEntry>,
    /// Devices whose entropy must not be stored; sorted once normalised.
    pub opted_out_devices: Vec<String>,
    /// SHA-256 of opted-out identifiers (never the identifiers themselves);
    /// sorted once normalised.
    pub opted_out_identifier_hashes: Vec<[u8; 32]>,
    /// Set when the owner's plan has used up its monthly verifications: new
    /// browser verifications (`/connect`, `/connect/reverify`) are refused
    /// until this time (Unix ms, the start of the next UTC month). A time,
    /// not a flag, so the block lifts by itself at the month's turn even if
    /// no new snapshot arrives; an upgrade lifts it with the next snapshot.
    pub verifications_blocked_until_ms: Option<i64>,
    /// The owner's plan: sizes the project's share of the engine's rate
    /// limiter and bounds a rate-limit check's `settingsOverride`.
    pub plan: PlanTier,
}

/// One accepted project-secret hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SecretHashEntry {
    /// SHA-256 of the secret; the secret itself never reaches an engine.
    pub hash: [u8; 32],
    /// `None` for the current secret; the grace end (Unix ms) for an old one.
    pub valid_until_ms: Option<i64>,
}

/// One HS256 client-token key.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Hs256KeyEntry {
    /// Key id written into the JWT `kid`, so verification picks the right key.
    pub kid: String,
    /// The HKDF-derived key bytes.
    pub key: [u8; 32],
    /// `None` for the current key; the grace end (Unix ms) for an old one.
    pub valid_until_ms: Option<i64>,
}

/// One Ed25519 client-token key.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Ed25519KeyEntry {
    /// Key id written into the JWT `kid` and the JWKS.
    pub kid: String,
    /// Raw public key, for verification and the JWKS.
    pub public_key: [u8; 32],
    /// PKCS#8 document of the private key; only the current signing key has
    /// it, so an old key can verify but never sign.
    pub pkcs8: Option<Vec<u8>>,
    /// `None` for the current key; the end of publication (Unix ms) for an old one.
    pub valid_until_ms: Option<i64>,
}

/// One live origin token.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OriginTokenEntry {
    /// SHA-256 of the token, so a leaked snapshot leaks no usable token.
    pub token_hash: [u8; 32],
    /// The origin it is bound to, compared with the `Origin` header.
    pub origin: String,
    /// Expiry (Unix ms).
    pub expires_at_ms: i64,
}

impl SecretHashEntry {
    /// Whether this hash is accepted at `now_ms`.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        self.valid_until_ms.is_none_or(|end| now_ms < end)
    }
}

impl Hs256KeyEntry {
    /// Whether tokens under this key still verify at `now_ms`.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        self.valid_until_ms.is_none_or(|end| now_ms < end)
    }
}

impl Ed25519KeyEntry {
    /// Whether this key still verifies (and is published) at `now_ms`.
    pub fn is_valid_at(&self, now_ms: i64) -> bool {
        self.valid_until_ms.is_none_or(|end| now_ms < end)
    }
}

impl ProjectConfig {
    /// A project with one current secret hash, one current HS256 key and its
    /// settings; add the rest through the public fields.
    pub fn new(
        project_id: &ProjectId,
        secret_hash: [u8; 32],
        hs256: Hs256KeyEntry,
        opt_out_key: [u8; 32],
        settings: ProjectSettings,
    ) -> Self {
        Self {
            project_id: project_id.as_str().to_owned(),
            secret_hashes: vec![SecretHashEntry {
                hash: secret_hash,
                valid_until_ms: None,
            }],
            hs256_keys: vec![hs256],
            ed25519: Vec::new(),
            opt_out_key,
            settings,
            origin_tokens: Vec::new(),
            opted_out_devices: Vec::new(),
            opted_out_identifier_hashes: Vec::new(),
            verifications_blocked_until_ms: None,
            plan: PlanTier::Free,
        }
    }

    /// Sorts and deduplicates the lookup lists so the lookups below can
    /// binary-search. Idempotent; every project inside a
    /// [`Snapshot`](super::Snapshot) has been through it.
    pub fn normalise(&mut self) {
        self.origin_tokens.sort_by_key(|t| t.token_hash);
        self.origin_tokens
            .dedup_by(|a, b| a.token_hash == b.token_hash);
        self.opted_out_devices.sort_unstable();
        self.opted_out_devices.dedup();
        self.opted_out_identifier_hashes.sort_unstable();
        self.opted_out_identifier_hashes.dedup();
    }

    /// Whether `hash` (SHA-256 of a presented secret) is an accepted secret at
    /// `now_ms`. Every entry is compared in constant time, so the answer's
    /// timing says nothing about how close a guess was.
    pub fn secret_matches(&self, hash: &[u8; 32], now_ms: i64) -> bool {
        self.secret_hashes.iter().fold(false, |found, e| {
            found | (ct_eq(&e.hash, hash) & e.is_valid_at(now_ms))
        })
    }

    /// The HS256 key that signs new tokens.
    pub fn hs256_signing(&self) -> Option<&Hs256KeyEntry> {
        self.hs256_keys.first()
    }

    /// The HS256 key named by a token's `kid`, if it still verifies.
    pub fn hs256_key(&self, kid: &str, now_ms: i64) -> Option<&Hs256KeyEntry> {
        self.hs256_keys
            .iter()
            .find(|k| k.kid == kid && k.is_valid_at(now_ms))
    }

    /// The Ed25519 key that signs new tokens: the one carrying its private half.
    pub fn ed25519_signing(&self) -> Option<&Ed25519KeyEntry> {
        self.ed25519.iter().find(|k| k.pkcs8.is_some())
    }

    /// The Ed25519 key named by a token's `kid`, if it still verifies.
    pub fn ed25519_key(&self, kid: &str, now_ms: i64) -> Option<&Ed25519KeyEntry> {
        self.ed25519
            .iter()
            .find(|k| k.kid == kid && k.is_valid_at(now_ms))
    }

    /// The Ed25519 keys to publish in the JWKS at `now_ms` (current and previous).
    pub fn ed25519_published(&self, now_ms: i64) -> impl Iterator<Item = &Ed25519KeyEntry> {
        self.ed25519.iter().filter(move |k| k.is_valid_at(now_ms))
    }

    /// The live origin token with this hash, if not expired at `now_ms`; the
    /// caller compares its `origin` with the request's `Origin` header.
    pub fn origin_token(&self, token_hash: &[u8; 32], now_ms: i64) -> Option<&OriginTokenEntry> {
        let i = self
            .origin_tokens
            .binary_search_by(|t| t.token_hash.cmp(token_hash))
            .ok()?;
        let entry = &self.origin_tokens[i];
        (now_ms < entry.expires_at_ms).then_some(entry)
    }

    /// Whether new browser verifications are refused at `now_ms` because
    /// the owner's monthly quota is used up.
    pub fn verifications_blocked(&self, now_ms: i64) -> bool {
        self.verifications_blocked_until_ms
            .is_some_and(|until| now_ms < until)
    }

    /// Whether this device opted out of entropy storage.
    pub fn is_device_opted_out(&self, device_id: &str) -> bool {
        self.opted_out_devices
            .binary_search_by(|d| d.as_str().cmp(device_id))
            .is_ok()
    }

    /// Whether the identifier with this SHA-256 opted out.
    pub fn is_identifier_opted_out(&self, identifier_hash: &[u8; 32]) -> bool {
        self.opted_out_identifier_hashes
            .binary_search(identifier_hash)
            .is_ok()
    }
}

/// Constant-time equality of two digests. Kept here rather than borrowed
/// from the crypto module so the snapshot stays free of that dependency.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(id: &ProjectId) -> ProjectConfig {
        let hs = Hs256KeyEntry {
            kid: "k1".into(),
            key: [1; 32],
            valid_until_ms: None,
        };
        ProjectConfig::new(id, [9; 32], hs, [3; 32], ProjectSettings::default())
    }

    #[test]
    fn secrets_match_only_while_valid() {
        let mut p = project(&ProjectId::generate());
        p.secret_hashes.push(SecretHashEntry {
            hash: [8; 32],
            valid_until_ms: Some(1_000),
        });
        assert!(p.secret_matches(&[9; 32], i64::MAX));
        assert!(p.secret_matches(&[8; 32], 999));
        assert!(
            !p.secret_matches(&[8; 32], 1_000),
            "the grace end is exclusive"
        );
        assert!(!p.secret_matches(&[7; 32], 0));
    }

    #[test]
    fn keys_are_found_by_kid_while_valid() {
        let mut p = project(&ProjectId::generate());
        p.hs256_keys.push(Hs256KeyEntry {
            kid: "k0".into(),
            key: [2; 32],
            valid_until_ms: Some(50),
        });
        assert_eq!(p.hs256_signing().unwrap().kid, "k1");
        assert_eq!(p.hs256_key("k0", 49).unwrap().key, [2; 32]);
        assert!(p.hs256_key("k0", 50).is_none());
        assert!(p.hs256_key("nope", 0).is_none());
        p.ed25519.push(Ed25519KeyEntry {
            kid: "e0".into(),
            public_key: [4; 32],
            pkcs8: None,
            valid_until_ms: Some(10),
        });
        p.ed25519.push(Ed25519KeyEntry {
            kid: "e1".into(),
            public_key: [5; 32],
            pkcs8: Some(vec![1, 2]),
            valid_until_ms: None,
        });
        assert_eq!(p.ed25519_signing().unwrap().kid, "e1");
        assert_eq!(p.ed25519_published(5).count(), 2);
        assert_eq!(p.ed25519_published(10).count(), 1);
        assert!(p.ed25519_key("e0", 11).is_none());
    }

    #[test]
    fn lookups_work_after_normalising() {
        let mut p = project(&ProjectId::generate());
        for i in [5u8, 1, 3, 1] {
            p.origin_tokens.push(OriginTokenEntry {
                token_hash: [i; 32],
                origin: format!("https://s{i}.example"),
                expires_at_ms: 100,
            });
            p.opted_out_devices.push(format!("dev_{i}"));
            p.opted_out_identifier_hashes.push([i; 32]);
        }
        p.normalise();
        assert_eq!(p.origin_tokens.len(), 3);
        assert_eq!(
            p.origin_token(&[3; 32], 99).unwrap().origin,
            "https://s3.example"
        );
        assert!(p.origin_token(&[3; 32], 100).is_none(), "expired");
        assert!(p.origin_token(&[2; 32], 0).is_none());
        assert!(p.is_device_opted_out("dev_5") && !p.is_device_opted_out("dev_2"));
        assert!(p.is_identifier_opted_out(&[1; 32]) && !p.is_identifier_opted_out(&[4; 32]));
    }
}
