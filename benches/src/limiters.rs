//! Rate-limit decisions behind one trait: the engine's multi-bucket GCRA
//! [`Limiter`] against `governor`'s keyed limiter (DashMap state store).
//!
//! Both get the same precomputed [`BucketKey`]s and the same quota, and each
//! reads its own clock as it does in production (the engine's monotonic
//! `Instant`, governor's `quanta`), so the bench compares the stores and
//! their locking. For several buckets governor is only a *reference*: it
//! checks them one after another and consumes from the first buckets even
//! when a later one denies, which the engine's all-or-nothing decision does
//! not (see `engine/src/limiter.rs`, "Why not governor").

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use qyzar_engine::limiter::{BucketCheck, BucketKey, Limiter, LimiterConfig, Rule};

/// Decides one call over the buckets named by `keys`.
pub trait KeyedLimiter: Send + Sync {
    /// The label in bench output.
    fn name(&self) -> &'static str;
    /// Whether a call costing one cell in every bucket of `keys` is allowed
    /// (and consumes it when so).
    fn allow(&self, keys: &[BucketKey]) -> bool;
}

/// The engine's limiter under one rule for every bucket.
pub struct Engine {
    limiter: Limiter,
    rule: Rule,
}

impl Engine {
    /// Wraps `limiter`, allowing `per_second` calls per second per bucket
    /// with a burst of as many.
    pub fn new(limiter: Limiter, per_second: u32) -> Self {
        Self {
            limiter,
            rule: Rule::new(per_second, 1),
        }
    }
}

impl KeyedLimiter for Engine {
    fn name(&self) -> &'static str {
        "qyzar_gcra"
    }
    fn allow(&self, keys: &[BucketKey]) -> bool {
        // A small fixed array, as a route with a few buckets would build it:
        // the decision allocates nothing.
        let check = |key| BucketCheck {
            key,
            rule: self.rule,
        };
        let now = self.limiter.now_nanos();
        let decision = match keys {
            [a] => self.limiter.check(now, &[check(*a)], 1, false),
            [a, b, c] => self
                .limiter
                .check(now, &[check(*a), check(*b), check(*c)], 1, false),
            _ => {
                let checks: Vec<BucketCheck> = keys.iter().map(|k| check(*k)).collect();
                self.limiter.check(now, &checks, 1, false)
            }
        };
        decision.is_ok_and(|d| d.allowed)
    }
}

/// `governor`'s keyed limiter with the same quota.
pub struct Governor(DefaultKeyedRateLimiter<BucketKey>);

impl Governor {
    /// `per_second` cells per second, burst of as many.
    pub fn new(per_second: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).expect("a positive rate");
        Self(RateLimiter::keyed(Quota::per_second(per_second)))
    }
}

impl KeyedLimiter for Governor {
    fn name(&self) -> &'static str {
        "governor"
    }
    fn allow(&self, keys: &[BucketKey]) -> bool {
        keys.iter().all(|k| self.0.check_key(k).is_ok())
    }
}

/// An engine limiter sized as in production (1 Mi keys, 256 shards).
pub fn engine_limiter() -> Limiter {
    Limiter::new(LimiterConfig::default())
}

/// `n` subjects' keys in `buckets` (`ip`, `metadata:email`, …) of one
/// project, as `[subject][bucket]`.
pub fn bucket_keys(limiter: &Limiter, n: usize, buckets: &[&str]) -> Vec<Vec<BucketKey>> {
    (0..n)
        .map(|i| {
            buckets
                .iter()
                .map(|b| {
                    let subject =
                        format!("198.51.{}.{}|user{i}@example.com", i / 256 % 256, i % 256);
                    limiter
                        .bucket_key(crate::fixtures::AUDIENCE, b, subject.as_bytes())
                        .expect("the subject is shorter than the key cap")
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the same quota both allow a full burst and then deny, so the
    /// bench's "always allowed" traffic is the same path on both sides.
    #[test]
    fn both_allow_the_burst_then_deny() {
        let limiter = engine_limiter();
        let keys = bucket_keys(&limiter, 2, &["ip"]);
        let impls: [Box<dyn KeyedLimiter>; 2] = [
            Box::new(Engine::new(limiter, 5)),
            Box::new(Governor::new(5)),
        ];
        for l in impls {
            for _ in 0..5 {
                assert!(l.allow(&keys[0]), "{}", l.name());
            }
            assert!(!l.allow(&keys[0]), "{}", l.name());
            assert!(l.allow(&keys[1]), "{}", l.name());
        }
    }

    #[test]
    fn the_engine_decides_three_buckets_all_or_nothing() {
        let limiter = engine_limiter();
        let keys = bucket_keys(&limiter, 2, &["ip", "metadata:email", "metadata:device"]);
        let l = Engine::new(limiter, 2);
        assert!(l.allow(&keys[0]));
        assert!(l.allow(&keys[0][..1]));
        // The `ip` bucket is now empty: the three-bucket call is denied and
        // consumes nothing from the other two.
        assert!(!l.allow(&keys[0]));
        assert!(l.allow(&keys[0][1..]));
    }
}
