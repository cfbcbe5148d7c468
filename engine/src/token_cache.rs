//! The verified-token cache's entries: what a repeated `token-verify`
//! answers from without checking the signature again.
//!
//! Under a stream of tokens seen once (every verify a miss), each verify
//! inserts an entry and, the cache being full, evicts a cold one. An entry
//! was four allocations (the key's text, an `Arc` of the facts, the
//! metadata and the session id), each freed cold when it left, and its key,
//! about 300 bytes, was hashed whole three times an insert (the lookup,
//! quick_cache's insert, the eviction hook's replacement check). Now the
//! token, its session id and its metadata share one `Arc<str>` that the key
//! and the value both hold, and a key is hashed by its length and its last
//! [`HASHED_TAIL`] bytes (BENCHMARKS.md, "Uncached token-verify's cache").

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use quick_cache::{Equivalent, Weighter};
use qyzar_shared::crypto::FactsRef;

/// Bytes of a token's end that its hash reads. A JWT ends with its
/// signature (43 characters for HS256, 86 for EdDSA): a MAC or a signature
/// over what the signer chose, so even a tenant signing its own tokens
/// with its own key can only make two tails equal by brute force (about
/// 2^48 signatures for one pair of 96-bit tails), and the hasher's
/// per-process seed leaves nothing else to aim at. Sixteen characters and
/// the length spread entries as the whole text did. A hit still compares
/// whole texts, so the tail only picks the slot; and only verified tokens
/// are inserted, each project's in its own map, so collisions, were they
/// ever forced, would slow only the lookups of the project whose key
/// signed them.
const HASHED_TAIL: usize = 16;

fn hash_token<H: Hasher>(token: &str, h: &mut H) {
    let b = token.as_bytes();
    h.write_usize(b.len());
    h.write(&b[b.len().saturating_sub(HASHED_TAIL)..]);
}

/// A verified client token, remembered until it expires so a repeated
/// verify skips the signature check. It holds what the answer carries, not
/// the whole claims ([`verify_facts_with`](qyzar_shared::crypto::verify_facts_with)),
/// and not the project: the cache keeps each project's tokens apart (a
/// token is only ever looked up in the shard of the project that verified
/// it, whose id its `aud` had to name). Cloning it clones an `Arc`.
#[derive(Clone)]
pub struct VerifiedToken {
    /// The token, then its session id, then its metadata's JSON text.
    text: Arc<str>,
    token_len: u32,
    sid_len: Option<u32>,
    md_len: Option<u32>,
    /// Expiry, Unix seconds (the signer's choice: check it before use).
    pub exp: i64,
}

thread_local! {
    /// Where an entry's text is put together before its one allocation.
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A length the cache records in 32 bits: a token is at most
/// [`MAX_TOKEN_LEN`](qyzar_shared::crypto::MAX_TOKEN_LEN) bytes, and its
/// session id and metadata are parts of it.
fn len32(s: &str) -> u32 {
    u32::try_from(s.len()).unwrap_or(u32::MAX)
}

impl VerifiedToken {
    /// The entry for `token`, verified with these facts: one allocation.
    pub fn new(token: &str, facts: FactsRef<'_>) -> Self {
        let sid = facts.sid.as_deref();
        let md = facts.md.map(|m| m.get());
        let text = SCRATCH.with_borrow_mut(|s| {
            s.clear();
            s.push_str(token);
            s.push_str(sid.unwrap_or(""));
            s.push_str(md.unwrap_or(""));
            let text = Arc::<str>::from(s.as_str());
            // A rare huge token does not stay on the thread.
            if s.capacity() > 16 << 10 {
                *s = String::new();
            }
            text
        });
        Self {
            text,
            token_len: len32(token),
            sid_len: sid.map(len32),
            md_len: md.map(len32),
            exp: facts.exp,
        }
    }

    /// The token itself.
    pub fn token(&self) -> &str {
        &self.text[..self.token_len as usize]
    }

    /// The verify session the token is bound to, if any.
    pub fn sid(&self) -> Option<&str> {
        let from = self.token_len as usize;
        self.sid_len.map(|n| &self.text[from..from + n as usize])
    }

    /// The customer's metadata as the signer wrote it (JSON, never `null`).
    pub fn md(&self) -> Option<&str> {
        let from = self.token_len as usize + self.sid_len.unwrap_or(0) as usize;
        self.md_len.map(|n| &self.text[from..from + n as usize])
    }

    /// The key the cache files this entry under: the same allocation.
    pub fn key(&self) -> TokenKey {
        TokenKey {
            text: Arc::clone(&self.text),
            len: self.token_len,
        }
    }
}

/// A cached token's key: its text, in the entry's allocation.
#[derive(Clone)]
pub struct TokenKey {
    text: Arc<str>,
    len: u32,
}

impl TokenKey {
    fn token(&self) -> &str {
        &self.text[..self.len as usize]
    }
}

impl PartialEq for TokenKey {
    fn eq(&self, other: &Self) -> bool {
        self.token() == other.token()
    }
}

impl Eq for TokenKey {}

impl Hash for TokenKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_token(self.token(), h);
    }
}

/// A token looked up in the cache, borrowed from the request.
pub struct TokenRef<'a>(pub &'a str);

impl Hash for TokenRef<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_token(self.0, h);
    }
}

impl Equivalent<TokenKey> for TokenRef<'_> {
    fn equivalent(&self, key: &TokenKey) -> bool {
        self.0 == key.token()
    }
}

/// Weighs a verified token: its text (token, session id, metadata) with the
/// `Arc`'s counts, the key and the value as the map stores them, and the
/// map's slot overhead.
#[derive(Clone, Copy)]
pub struct TokenWeight;

impl Weighter<TokenKey, VerifiedToken> for TokenWeight {
    fn weight(&self, key: &TokenKey, _: &VerifiedToken) -> u64 {
        (key.text.len()
            + 2 * std::mem::size_of::<usize>()
            + std::mem::size_of::<TokenKey>()
            + std::mem::size_of::<VerifiedToken>()
            + 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyzar_shared::crypto::{sign_hs256, verify_facts_with, Claims, Hs256Key, VerifyKeys};
    use std::hash::BuildHasher;

    fn claims(jti: &str, sid: Option<&str>, md: Option<serde_json::Value>) -> Claims {
        Claims {
            iss: "qyzar".into(),
            aud: "prj_a".into(),
            sub: "s".into(),
            iat: 0,
            exp: 1_900_000_000,
            jti: jti.into(),
            sid: sid.map(str::to_owned),
            md,
        }
    }

    fn facts_of(token: &str, keys: &VerifyKeys) -> VerifiedToken {
        verify_facts_with(token, keys, -1, "prj_a", |f| VerifiedToken::new(token, f)).unwrap()
    }

    #[test]
    fn an_entry_answers_what_the_token_carries() {
        let key = Hs256Key::from_raw([3u8; 32]);
        let keys = VerifyKeys::new().with_hs256(key.clone());
        for (sid, md) in [
            (None, None),
            (Some("ses_1"), None),
            (None, Some(serde_json::json!({"a": [1, "é"], "b": null}))),
            (Some("ses_\"q\u{e9}"), Some(serde_json::json!("x"))),
        ] {
            let token = sign_hs256(&claims("tok_1", sid, md), &key);
            let v = facts_of(&token, &keys);
            let owned = qyzar_shared::crypto::verify_facts(&token, &keys, -1, "prj_a").unwrap();
            assert_eq!(v.token(), token);
            assert_eq!(v.sid(), owned.sid.as_deref());
            assert_eq!(v.md(), owned.md.as_ref().map(|m| m.get()));
            assert_eq!(v.exp, owned.exp);
            assert_eq!(v.key().token(), token);
            assert!(TokenRef(&token).equivalent(&v.key()));
            assert!(!TokenRef(&token[..token.len() - 1]).equivalent(&v.key()));
        }
    }

    #[test]
    fn a_lookup_hashes_as_its_key() {
        let hasher = quick_cache::DefaultHashBuilder::default();
        let long = "x".repeat(300);
        for t in ["", "a", "abc.def.ghi", "0123456789abcdef", long.as_str()] {
            let key = TokenKey {
                text: Arc::from(format!("{t}ses_1{{\"m\":1}}")),
                len: t.len() as u32,
            };
            assert_eq!(hasher.hash_one(TokenRef(t)), hasher.hash_one(&key), "{t:?}");
        }
        // Texts that differ only before the tail share a hash, and the
        // comparison still tells them apart.
        let a = format!("A{}", "z".repeat(40));
        let b = format!("B{}", "z".repeat(40));
        let key = TokenKey {
            text: Arc::from(a.as_str()),
            len: a.len() as u32,
        };
        assert_eq!(hasher.hash_one(TokenRef(&b)), hasher.hash_one(&key));
        assert!(!TokenRef(&b).equivalent(&key));
    }

    #[test]
    fn the_cache_finds_and_drops_entries_by_the_borrowed_token() {
        use crate::budget::{Budget, ProjectCache};
        let key = Hs256Key::from_raw([5u8; 32]);
        let keys = VerifyKeys::new().with_hs256(key.clone());
        let cache: ProjectCache<TokenKey, VerifiedToken, TokenWeight> =
            ProjectCache::new(Budget::mib(1, 1), TokenWeight, 1024);
        let tokens: Vec<String> = (0..200)
            .map(|i| {
                sign_hs256(
                    &claims(&format!("tok_{i}"), None, Some(serde_json::json!({"i": i}))),
                    &key,
                )
            })
            .collect();
        for t in &tokens {
            let v = facts_of(t, &keys);
            cache.insert("prj_a", v.key(), v);
        }
        for (i, t) in tokens.iter().enumerate() {
            let v = cache.get("prj_a", &TokenRef(t)).expect("cached");
            assert_eq!(v.md(), Some(format!("{{\"i\":{i}}}").as_str()));
            assert!(cache.get("prj_b", &TokenRef(t)).is_none());
        }
        let weight: u64 = tokens
            .iter()
            .map(|t| {
                let v = facts_of(t, &keys);
                TokenWeight.weight(&v.key(), &v)
            })
            .sum();
        assert_eq!(cache.bytes(), weight);
        for t in &tokens {
            assert!(cache.remove("prj_a", &TokenRef(t)).is_some());
        }
        assert_eq!(cache.bytes(), 0);
    }
}
