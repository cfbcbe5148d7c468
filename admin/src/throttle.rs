//! Brute-force limits for the credential routes (`/auth/*`).
//!
//! Two mechanisms:
//!
//! - [`signin`]: sign-in's exponential back-off per (email, client) pair,
//!   with a per-email ceiling that slows but never hard-locks (so a stranger
//!   cannot lock an owner out by failing on purpose).
//! - A small in-memory, keyed **sliding-log** limiter for everything else:
//!   for each key (a client IP, a user id, an email asking for mail, a
//!   challenge token's hash) it remembers the instants of the last `limit`
//!   attempts inside the policy's window. It is exact (no burst at window
//!   edges) and, unlike a GCRA limiter such as `governor`, it can *forgive*
//!   an attempt: a route counts every try up front (so a burst of parallel
//!   guesses cannot all slip past a check made before any of them is
//!   recorded) and takes the try back when the credential was right, so only
//!   failures use up a budget.
//!
//! **Bounded, flood-proof state.** Each policy has its own map of at most
//! [`MAX_KEYS_PER_POLICY`] keys (keys longer than 128 bytes are stored as
//! their SHA-256; an entry holds at most `limit` instants), so spraying keys
//! under one policy (random emails) never evicts another policy's counters
//! (per-IP ones). Within a map, expired logs go first, then the logs with the
//! fewest attempts; a key at its limit (actively refused) is never evicted.
//! Worst case about 16 MB for the 50-attempt per-IP sign-in policy and 6 MB
//! for each of the others.
//!
//! The state is per process: several admin instances each enforce the limits
//! on their own, and a restart forgets them. That is enough against online
//! guessing (argon2id and 128-bit+ tokens do the rest); a shared store is the
//! step up for a large fleet.

pub mod client_ip;
pub mod signin;

pub use client_ip::ClientIp;
pub use signin::SigninHit;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One limit: at most `limit` attempts per key within `window`.
#[derive(Debug)]
pub struct Policy {
    /// Names the policy's own map, so two policies never share counts.
    pub name: &'static str,
    /// Attempts allowed within the window.
    pub limit: usize,
    /// How far back attempts are counted.
    pub window: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);

/// Failed sign-ins per client IP, across addresses (credential stuffing).
/// Per email, sign-in uses [`signin`]'s back-off instead of a hard limit.
pub const SIGNIN_PER_IP: Policy = Policy {
    name: "signin-ip",
    limit: 50,
    window: Duration::from_secs(15 * 60),
};
/// Wrong second factors per sign-in challenge: 5 over its 5-minute life.
pub const CHALLENGE: Policy = Policy {
    name: "challenge",
    limit: 5,
    window: Duration::from_secs(5 * 60),
};
/// Wrong second factors per user across challenges: without it, a caller who
/// knows the password could fetch fresh challenges and keep guessing codes.
pub const SECOND_FACTOR_PER_USER: Policy = Policy {
    name: "2fa-user",
    limit: 10,
    window: Duration::from_secs(15 * 60),
};
/// Wrong current passwords per user on the routes that ask for it again
/// (`PATCH /auth/password`, `2fa/create`, `2fa/disable`): a stolen
/// dashboard token must not become a password oracle.
pub const REAUTH_PER_USER: Policy = Policy {
    name: "reauth-user",
    limit: 5,
    window: Duration::from_secs(15 * 60),
};
/// Mails asked for one address (register, resend, reset): every request
/// counts, so nobody can flood an inbox through us.
pub const MAIL_PER_EMAIL: Policy = Policy {
    name: "mail-email",
    limit: 5,
    window: HOUR,
};
/// Mail-sending requests per client IP.
pub const MAIL_PER_IP: Policy = Policy {
    name: "mail-ip",
    limit: 30,
    window: HOUR,
};
/// Registrations per client IP.
pub const REGISTER_PER_IP: Policy = Policy {
    name: "register-ip",
    limit: 20,
    window: HOUR,
};
/// Wrong single-use tokens (verify-email, reset-confirm) per client IP.
pub const TOKEN_PER_IP: Policy = Policy {
    name: "token-ip",
    limit: 20,
    window: Duration::from_secs(15 * 60),
};

/// Keys tracked at most per policy; past this, expired keys are swept and
/// then the least-used ones dropped (see the module docs), so an attacker
/// spraying keys bounds our memory without freeing anyone under a limit.
pub const MAX_KEYS_PER_POLICY: usize = 10_000;
/// Longest key stored as is (longer ones are stored as their SHA-256).
const MAX_KEY_LEN: usize = 128;
/// A sweep of expired keys every this many hits keeps the map small.
const SWEEP_EVERY: u64 = 1024;

/// The caller is over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// When the oldest counted attempt leaves the window, in whole seconds
    /// (at least 1): the `Retry-After` value.
    pub retry_after_secs: u64,
}

impl From<Throttled> for crate::error::AdminError {
    fn from(t: Throttled) -> Self {
        crate::error::AdminError::RateLimited(t.retry_after_secs)
    }
}

/// Attempts recorded by one [`Throttle::hit`], for [`Throttle::forgive`].
#[must_use = "forgive the hits on success, or drop them to keep them counted"]
#[derive(Debug, Default)]
pub struct Hits(Vec<(&'static str, String)>);

#[derive(Debug)]
struct Log {
    window: Duration,
    attempts: VecDeque<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Policy name → key → log.
    logs: HashMap<&'static str, HashMap<String, Log>>,
    signin: signin::Backoff,
    hits: u64,
}

/// The limiter shared by the auth routes (one per [`crate::AppState`]).
#[derive(Debug, Default)]
pub struct Throttle {
    inner: Mutex<Inner>,
}

fn key(key: &str) -> String {
    if key.len() <= MAX_KEY_LEN {
        return key.to_owned();
    }
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Throttle {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one attempt under every `(policy, key)` pair, or none of them
    /// when any pair is already at its limit: all-or-nothing, so one refused
    /// pair does not use up the budget of the others.
    pub fn hit(&self, pairs: &[(&Policy, &str)]) -> Result<Hits, Throttled> {
        self.hit_at(pairs, Instant::now())
    }

    fn hit_at(&self, pairs: &[(&Policy, &str)], now: Instant) -> Result<Hits, Throttled> {
        let mut inner = self.lock();
        inner.hits += 1;
        if inner.hits % SWEEP_EVERY == 0 {
            for logs in inner.logs.values_mut() {
                sweep(logs, now);
            }
        }
        let mut worst: Option<Duration> = None;
        for (policy, k) in pairs {
            let log = inner
                .logs
                .get_mut(policy.name)
                .and_then(|logs| logs.get_mut(&key(k)));
            if let Some(log) = log {
                prune(log, now);
                if log.attempts.len() >= policy.limit {
                    let oldest = log.attempts.front().copied().unwrap_or(now);
                    let wait = (oldest + policy.window).saturating_duration_since(now);
                    worst = Some(worst.map_or(wait, |w| w.max(wait)));
                }
            }
        }
        if let Some(wait) = worst {
            return Err(Throttled {
                retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            });
        }
        let mut recorded = Vec::with_capacity(pairs.len());
        for (policy, k) in pairs {
            let k = key(k);
            let logs = inner.logs.entry(policy.name).or_default();
            if !logs.contains_key(&k) && logs.len() >= MAX_KEYS_PER_POLICY {
                make_room(logs, policy.limit, now);
                if logs.len() >= MAX_KEYS_PER_POLICY {
                    tracing::warn!(
                        policy = policy.name,
                        "limiter full of keys at their limit; one goes untracked"
                    );
                    continue;
                }
            }
            let log = logs.entry(k.clone()).or_insert_with(|| Log {
                window: policy.window,
                attempts: VecDeque::new(),
            });
            log.attempts.push_back(now);
            recorded.push((policy.name, k));
        }
        Ok(Hits(recorded))
    }

    /// Takes back the attempts of a [`Hits`] (the credential was right).
    pub fn forgive(&self, hits: Hits) {
        let mut inner = self.lock();
        for (policy, k) in hits.0 {
            if let Some(logs) = inner.logs.get_mut(policy) {
                if let Some(log) = logs.get_mut(&k) {
                    log.attempts.pop_back();
                    if log.attempts.is_empty() {
                        logs.remove(&k);
                    }
                }
            }
        }
    }

    /// A sign-in attempt on `email` from `client` (its [`ClientIp::key`], or
    /// `None` when unknown): refused while that pair owes a wait (see
    /// [`signin`]), else recorded as a failure until
    /// [`Throttle::forgive_signin`] takes it back.
    pub fn signin_attempt(
        &self,
        email: &str,
        client: Option<&str>,
    ) -> Result<SigninHit, Throttled> {
        self.signin_attempt_at(email, client, Instant::now())
    }

    fn signin_attempt_at(
        &self,
        email: &str,
        client: Option<&str>,
        now: Instant,
    ) -> Result<SigninHit, Throttled> {
        self.lock()
            .signin
            .attempt(email, client.unwrap_or("unknown"), now)
    }

    /// Takes a sign-in attempt back (the password was right).
    pub fn forgive_signin(&self, hit: SigninHit) {
        self.lock().signin.forgive(hit);
    }
}

fn prune(log: &mut Log, now: Instant) {
    while log
        .attempts
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= log.window)
    {
        log.attempts.pop_front();
    }
}

fn sweep(logs: &mut HashMap<String, Log>, now: Instant) {
    logs.retain(|_, log| {
        prune(log, now);
        !log.attempts.is_empty()
    });
}

/// Sweeps expired logs; if the map is still full, drops the logs with the
/// fewest attempts (never one at its `limit`) down to three quarters full.
fn make_room(logs: &mut HashMap<String, Log>, limit: usize, now: Instant) {
    sweep(logs, now);
    if logs.len() < MAX_KEYS_PER_POLICY {
        return;
    }
    let mut candidates: Vec<(usize, String)> = logs
        .iter()
        .filter(|(_, log)| log.attempts.len() < limit)
        .map(|(k, log)| (log.attempts.len(), k.clone()))
        .collect();
    candidates.sort_unstable();
    let excess = logs.len().saturating_sub(MAX_KEYS_PER_POLICY * 3 / 4);
    for (_, k) in candidates.into_iter().take(excess) {
        logs.remove(&k);
    }
}

/// The limiter keys of a request: its client IP (if known) under `ip_policy`
/// plus the given pairs.
pub fn with_ip<'a>(
    ip: &'a Option<String>,
    ip_policy: &'a Policy,
    mut pairs: Vec<(&'a Policy, &'a str)>,
) -> Vec<(&'a Policy, &'a str)> {
    if let Some(ip) = ip {
        pairs.push((ip_policy, ip.as_str()));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Policy = Policy {
        name: "p",
        limit: 3,
        window: Duration::from_secs(10),
    };
    const Q: Policy = Policy {
        name: "q",
        limit: 1,
        window: Duration::from_secs(100),
    };

    #[test]
    fn allows_the_limit_then_refuses_until_the_oldest_attempt_leaves() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(t.hit_at(&[(&P, "a")], t0 + Duration::from_secs(i)).is_ok());
        }
        let refused = t
            .hit_at(&[(&P, "a")], t0 + Duration::from_secs(3))
            .unwrap_err();
        assert_eq!(refused.retry_after_secs, 7);
        assert!(
            t.hit_at(&[(&P, "b")], t0 + Duration::from_secs(3)).is_ok(),
            "keys are independent"
        );
        assert!(
            t.hit_at(&[(&P, "a")], t0 + Duration::from_secs(10)).is_ok(),
            "the first attempt has left the window"
        );
    }

    #[test]
    fn forgiven_attempts_do_not_count() {
        let t = Throttle::new();
        for _ in 0..10 {
            let hits = t.hit(&[(&P, "a")]).unwrap();
            t.forgive(hits);
        }
        assert!(t.hit(&[(&P, "a")]).is_ok());
    }

    #[test]
    fn a_refused_pair_records_nothing_for_the_others() {
        let t = Throttle::new();
        let _ = t.hit(&[(&Q, "x")]).unwrap();
        assert!(t.hit(&[(&P, "a"), (&Q, "x")]).is_err());
        for _ in 0..3 {
            assert!(
                t.hit(&[(&P, "a")]).is_ok(),
                "the refused call must not have counted under P"
            );
        }
    }

    #[test]
    fn a_flood_under_one_policy_evicts_nothing_at_its_limit_nor_other_policies() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for _ in 0..3 {
            let _ = t.hit_at(&[(&P, "victim")], t0).unwrap();
        }
        let _ = t.hit_at(&[(&Q, "ip")], t0).unwrap();
        for i in 0..(3 * MAX_KEYS_PER_POLICY) {
            let _ = t.hit_at(&[(&P, &format!("rnd{i}"))], t0).unwrap();
        }
        assert!(t.lock().logs["p"].len() <= MAX_KEYS_PER_POLICY);
        assert!(
            t.hit_at(&[(&P, "victim")], t0).is_err(),
            "still at its limit"
        );
        assert!(
            t.hit_at(&[(&Q, "ip")], t0).is_err(),
            "another policy untouched"
        );
    }

    #[test]
    fn sign_in_attempts_go_through_the_back_off() {
        let t = Throttle::new();
        let t0 = Instant::now();
        for _ in 0..signin::FREE_PER_PAIR {
            let _ = t.signin_attempt_at("a@x.com", Some("1.2.3.4"), t0).unwrap();
        }
        assert!(t.signin_attempt_at("a@x.com", Some("1.2.3.4"), t0).is_err());
        let ok = t.signin_attempt_at("a@x.com", None, t0).unwrap();
        t.forgive_signin(ok);
        assert_eq!(t.lock().signin.sizes().0, 1, "the forgiven pair is gone");
    }
}
