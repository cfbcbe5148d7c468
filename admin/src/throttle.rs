//! Brute-force limits for the credential routes (`/auth/*`).
//!
//! A small in-memory, keyed **sliding-log** limiter: for each key (an email,
//! a client IP, a user id, a challenge token's hash) it remembers the instants
//! of the last `limit` attempts inside the policy's window. It is exact (no
//! burst at window edges) and, unlike a GCRA limiter such as `governor`, it can
//! *forgive* an attempt: sign-in counts every try up front (so a burst of
//! parallel guesses cannot all slip past a check made before any of them is
//! recorded) and takes the try back when the password was right, so only
//! failures use up a user's budget.
//!
//! The state is per process: several admin instances each enforce the limits
//! on their own, and a restart forgets them. That is enough against online
//! guessing (argon2id and 128-bit+ tokens do the rest); a shared store is the
//! step up for a large fleet.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

/// One limit: at most `limit` attempts per key within `window`.
#[derive(Debug)]
pub struct Policy {
    /// Names the policy inside the key, so two policies never share counts.
    pub name: &'static str,
    /// Attempts allowed within the window.
    pub limit: usize,
    /// How far back attempts are counted.
    pub window: Duration,
}

const HOUR: Duration = Duration::from_secs(3600);

/// Failed sign-ins per email address: 10 per 15 minutes (OWASP's order of
/// magnitude), counted for unknown addresses exactly as for known ones.
pub const SIGNIN_PER_EMAIL: Policy = Policy {
    name: "signin-email",
    limit: 10,
    window: Duration::from_secs(15 * 60),
};
/// Failed sign-ins per client IP, across addresses (credential stuffing).
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
/// Wrong current passwords on `PATCH /auth/password` per user (a stolen
/// dashboard token must not become a password oracle).
pub const PASSWORD_CHANGE_PER_USER: Policy = Policy {
    name: "password-user",
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

/// Keys tracked at most; past this, expired keys are swept and then
/// arbitrary ones dropped, so an attacker spraying keys bounds our memory
/// (at the price of some leniency while that attack lasts).
const MAX_KEYS: usize = 100_000;
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
pub struct Hits(Vec<String>);

#[derive(Debug)]
struct Log {
    window: Duration,
    attempts: VecDeque<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    logs: HashMap<String, Log>,
    hits: u64,
}

/// The limiter shared by the auth routes (one per [`crate::AppState`]).
#[derive(Debug, Default)]
pub struct Throttle {
    inner: Mutex<Inner>,
}

fn key(policy: &Policy, key: &str) -> String {
    format!("{}\u{0}{key}", policy.name)
}

impl Throttle {
    /// An empty limiter.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one attempt under every `(policy, key)` pair, or none of them
    /// when any pair is already at its limit: all-or-nothing, so one refused
    /// pair does not use up the budget of the others.
    pub fn hit(&self, pairs: &[(&Policy, &str)]) -> Result<Hits, Throttled> {
        self.hit_at(pairs, Instant::now())
    }

    fn hit_at(&self, pairs: &[(&Policy, &str)], now: Instant) -> Result<Hits, Throttled> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.hits += 1;
        if inner.hits % SWEEP_EVERY == 0 || inner.logs.len() >= MAX_KEYS {
            sweep(&mut inner.logs, now);
        }
        let mut worst: Option<Duration> = None;
        for (policy, k) in pairs {
            if let Some(log) = inner.logs.get_mut(&key(policy, k)) {
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
            let k = key(policy, k);
            let log = inner.logs.entry(k.clone()).or_insert_with(|| Log {
                window: policy.window,
                attempts: VecDeque::new(),
            });
            log.attempts.push_back(now);
            recorded.push(k);
        }
        Ok(Hits(recorded))
    }

    /// Takes back the attempts of a [`Hits`] (the credential was right).
    pub fn forgive(&self, hits: Hits) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for k in hits.0 {
            if let Some(log) = inner.logs.get_mut(&k) {
                log.attempts.pop_back();
                if log.attempts.is_empty() {
                    inner.logs.remove(&k);
                }
            }
        }
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
    if logs.len() >= MAX_KEYS {
        let excess: Vec<String> = logs
            .keys()
            .take(logs.len() - MAX_KEYS / 2)
            .cloned()
            .collect();
        for k in excess {
            logs.remove(&k);
        }
    }
}

/// The client's address, for per-IP limits: the TCP peer, or, when the peer
/// is a loopback or private address (a reverse proxy in front of us), the
/// right-most `X-Forwarded-For` entry, which that proxy appended and the
/// client cannot forge. IPv6 clients are keyed by their /64, since one host
/// usually holds a whole /64 and could otherwise rotate through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub Option<IpAddr>);

impl ClientIp {
    /// The per-IP limiter key, when the address is known.
    pub fn key(&self) -> Option<String> {
        self.0.map(|ip| match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        })
    }
}

fn is_proxy(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_private(),
        IpAddr::V6(v6) => v6.is_loopback() || (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

fn forwarded_for(parts: &Parts) -> Option<IpAddr> {
    let last = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()?;
    last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientIp(match peer {
            Some(p) if is_proxy(p) => forwarded_for(parts).or(Some(p)),
            Some(p) => Some(p),
            None => forwarded_for(parts),
        }))
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
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = ClientIp(Some("2001:db8:1:2:aaaa::1".parse().unwrap()));
        let b = ClientIp(Some("2001:db8:1:2:bbbb::9".parse().unwrap()));
        assert_eq!(a.key(), b.key());
        assert_eq!(
            ClientIp(Some("10.1.2.3".parse().unwrap())).key().as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(ClientIp(None).key(), None);
    }
}
