//! Sign-in back-off: per (email, client) pair, exponential, with a per-email
//! ceiling that slows every client but never locks the owner out.
//!
//! A plain "10 failures per email, then 15 minutes of 429" lets any stranger
//! lock any account at will. Instead:
//!
//! - Each **(email, client)** pair may fail [`FREE_PER_PAIR`] times freely;
//!   after that, each further attempt from that pair waits
//!   [`BASE_DELAY`] × 2^(failures − free), up to [`MAX_DELAY`]. A pair is
//!   forgotten [`PAIR_MEMORY`] after its last failure, and at once when it
//!   signs in. Only the client doing the guessing is slowed.
//! - Each **email** counts failures from all clients over [`EMAIL_WINDOW`].
//!   At [`EMAIL_CEILING`] it is *under attack*: every pair's free allowance
//!   drops to [`FREE_UNDER_ATTACK`] (one try), so a distributed guesser gets
//!   one guess per client and then the exponential wait; but a client that
//!   has not failed yet, such as the owner on a new network, always gets
//!   its first try, and a typo there costs a few seconds, not 15 minutes.
//!
//! Every attempt is recorded before the password is checked (so parallel
//! guesses cannot all pass one check) and taken back on success.
//!
//! **Floods.** Pairs and emails live in two maps, bounded apart from each
//! other and from the per-IP limits ([`MAX_PAIRS`], [`MAX_EMAILS`]). When a
//! map is full, expired entries go first, then the entries with the fewest
//! failures; an entry in back-off (a pair past its free failures, an email
//! under attack) is never evicted, so spraying random addresses cannot wipe
//! a victim's counters. Should a map ever be full of such entries, new keys
//! go untracked (lenient) rather than locking anyone out. Keys longer than
//! [`MAX_KEY_LEN`] are stored as their SHA-256, so an entry is at most about
//! 0.3 KB and each map at most about 3 MB.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Throttled;

/// Failures a pair may make before it waits.
pub const FREE_PER_PAIR: u32 = 10;
/// Free failures per pair while the email is under attack.
pub const FREE_UNDER_ATTACK: u32 = 1;
/// The first wait once a pair's free failures are used up.
pub const BASE_DELAY: Duration = Duration::from_secs(5);
/// The longest wait.
pub const MAX_DELAY: Duration = Duration::from_secs(15 * 60);
/// How long a pair's failures are remembered after its last one.
pub const PAIR_MEMORY: Duration = Duration::from_secs(3600);
/// Failures of one email, from all clients, that put it under attack.
pub const EMAIL_CEILING: usize = 10;
/// How far back an email's failures count.
pub const EMAIL_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Pairs tracked at most.
pub const MAX_PAIRS: usize = 10_000;
/// Emails tracked at most.
pub const MAX_EMAILS: usize = 10_000;
/// Longest key stored as is.
pub const MAX_KEY_LEN: usize = 128;

#[derive(Debug, Clone, Copy)]
struct Pair {
    failures: u32,
    last: Instant,
}

/// The state behind [`super::Throttle::signin_attempt`].
#[derive(Debug, Default)]
pub(super) struct Backoff {
    pairs: HashMap<String, Pair>,
    emails: HashMap<String, VecDeque<Instant>>,
}

/// One recorded sign-in attempt, to take back with
/// [`super::Throttle::forgive_signin`] when the password was right.
#[must_use = "forgive the attempt on success, or drop it to keep it counted"]
#[derive(Debug)]
pub struct SigninHit {
    pair: Option<String>,
    email: Option<String>,
}

fn bounded(key: String) -> String {
    if key.len() <= MAX_KEY_LEN {
        return key;
    }
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let hex: String = d.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The wait a pair with `failures` owes after its last failure.
pub fn delay(failures: u32, free: u32) -> Duration {
    let Some(over) = failures.checked_sub(free) else {
        return Duration::ZERO;
    };
    // 2^over overflows nothing: past 2^8 × 5 s the cap applies anyway.
    let factor = 1u32 << over.min(16);
    BASE_DELAY.saturating_mul(factor).min(MAX_DELAY)
}

fn prune(log: &mut VecDeque<Instant>, now: Instant) {
    while log
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= EMAIL_WINDOW)
    {
        log.pop_front();
    }
}

fn retry_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

impl Backoff {
    /// Checks the pair's back-off and, when it may try, records the attempt.
    pub(super) fn attempt(
        &mut self,
        email: &str,
        client: &str,
        now: Instant,
    ) -> Result<SigninHit, Throttled> {
        let email_key = bounded(email.to_owned());
        let pair_key = bounded(format!("{email}\u{0}{client}"));
        let under_attack = match self.emails.get_mut(&email_key) {
            Some(log) => {
                prune(log, now);
                log.len() >= EMAIL_CEILING
            }
            None => false,
        };
        let free = if under_attack {
            FREE_UNDER_ATTACK
        } else {
            FREE_PER_PAIR
        };
        if let Some(pair) = self.pairs.get(&pair_key) {
            let since = now.saturating_duration_since(pair.last);
            if since < PAIR_MEMORY {
                let wait = delay(pair.failures, free);
                if since < wait {
                    return Err(Throttled {
                        retry_after_secs: retry_secs(wait - since),
                    });
                }
            } else {
                self.pairs.remove(&pair_key);
            }
        }
        Ok(SigninHit {
            pair: self.record_pair(pair_key, now),
            email: self.record_email(email_key, now),
        })
    }

    fn record_pair(&mut self, key: String, now: Instant) -> Option<String> {
        if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_PAIRS {
            self.make_room_for_pair(now);
            if self.pairs.len() >= MAX_PAIRS {
                tracing::warn!(
                    "sign-in back-off: every tracked pair is in back-off; one goes untracked"
                );
                return None;
            }
        }
        let pair = self.pairs.entry(key.clone()).or_insert(Pair {
            failures: 0,
            last: now,
        });
        pair.failures = pair.failures.saturating_add(1);
        pair.last = now;
        Some(key)
    }

    fn record_email(&mut self, key: String, now: Instant) -> Option<String> {
        if !self.emails.contains_key(&key) && self.emails.len() >= MAX_EMAILS {
            self.make_room_for_email(now);
            if self.emails.len() >= MAX_EMAILS {
                tracing::warn!(
                    "sign-in back-off: every tracked email is under attack; one goes untracked"
                );
                return None;
            }
        }
        let log = self.emails.entry(key.clone()).or_default();
        log.push_back(now);
        // Only "are there EMAIL_CEILING in the window" matters: keep no more.
        while log.len() > EMAIL_CEILING {
            log.pop_front();
        }
        Some(key)
    }

    /// Forgets expired pairs, then the pairs with the fewest failures, down
    /// to three quarters full; pairs past their free failures stay.
    fn make_room_for_pair(&mut self, now: Instant) {
        self.pairs
            .retain(|_, p| now.saturating_duration_since(p.last) < PAIR_MEMORY);
        if self.pairs.len() < MAX_PAIRS {
            return;
        }
        let mut candidates: Vec<(u32, String)> = self
            .pairs
            .iter()
            .filter(|(_, p)| p.failures < FREE_PER_PAIR)
            .map(|(k, p)| (p.failures, k.clone()))
            .collect();
        candidates.sort_unstable();
        let excess = self.pairs.len().saturating_sub(MAX_PAIRS * 3 / 4);
        for (_, k) in candidates.into_iter().take(excess) {
            self.pairs.remove(&k);
        }
    }

    /// Forgets emails without failures in the window, then those with the
    /// fewest, down to three quarters full; emails under attack stay.
    fn make_room_for_email(&mut self, now: Instant) {
        self.emails.retain(|_, log| {
            prune(log, now);
            !log.is_empty()
        });
        if self.emails.len() < MAX_EMAILS {
            return;
        }
        let mut candidates: Vec<(usize, String)> = self
            .emails
            .iter()
            .filter(|(_, log)| log.len() < EMAIL_CEILING)
            .map(|(k, log)| (log.len(), k.clone()))
            .collect();
        candidates.sort_unstable();
        let excess = self.emails.len().saturating_sub(MAX_EMAILS * 3 / 4);
        for (_, k) in candidates.into_iter().take(excess) {
            self.emails.remove(&k);
        }
    }

    /// Takes an attempt back: the pair is forgotten (it knows the password),
    /// and the email's latest failure is dropped.
    pub(super) fn forgive(&mut self, hit: SigninHit) {
        if let Some(k) = hit.pair {
            self.pairs.remove(&k);
        }
        if let Some(k) = hit.email {
            if let Some(log) = self.emails.get_mut(&k) {
                log.pop_back();
                if log.is_empty() {
                    self.emails.remove(&k);
                }
            }
        }
    }

    #[cfg(test)]
    pub(super) fn sizes(&self) -> (usize, usize) {
        (self.pairs.len(), self.emails.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn delays_double_from_the_free_allowance_up_to_the_cap() {
        assert_eq!(delay(0, 10), Duration::ZERO);
        assert_eq!(delay(9, 10), Duration::ZERO);
        assert_eq!(delay(10, 10), secs(5));
        assert_eq!(delay(11, 10), secs(10));
        assert_eq!(delay(13, 10), secs(40));
        assert_eq!(delay(40, 10), MAX_DELAY);
        assert_eq!(delay(u32::MAX, 0), MAX_DELAY);
        assert_eq!(delay(1, 1), secs(5));
    }

    #[test]
    fn a_stranger_slows_only_themself_and_the_owner_gets_in_from_elsewhere() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        for i in 0..10 {
            let _ = b
                .attempt("ann@x.com", "198.51.100.1", t0 + secs(i))
                .unwrap();
        }
        let refused = b
            .attempt("ann@x.com", "198.51.100.1", t0 + secs(10))
            .unwrap_err();
        assert!(refused.retry_after_secs > 60, "{refused:?}");
        // The email is under attack now; the owner's first try from another
        // client still goes through, and succeeding forgives it.
        let hit = b
            .attempt("ann@x.com", "203.0.113.5", t0 + secs(11))
            .unwrap();
        b.forgive(hit);
        // A typo from the owner's client costs a short wait, not a lock.
        let _typo = b
            .attempt("ann@x.com", "203.0.113.5", t0 + secs(12))
            .unwrap();
        let wait = b
            .attempt("ann@x.com", "203.0.113.5", t0 + secs(13))
            .unwrap_err();
        assert!(wait.retry_after_secs <= 5, "{wait:?}");
        assert!(b.attempt("ann@x.com", "203.0.113.5", t0 + secs(17)).is_ok());
        // Other addresses are not affected by ann's attacker.
        assert!(b
            .attempt("bob@x.com", "198.51.100.1", t0 + secs(13))
            .is_ok());
    }

    #[test]
    fn waits_double_and_pairs_are_forgotten_after_their_memory() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            let _ = b.attempt("c@x.com", "a", t0).unwrap();
        }
        // Under attack now (10 failures): one free, so the wait is 5 s × 2^9, capped.
        let e = b.attempt("c@x.com", "a", t0 + secs(1)).unwrap_err();
        assert_eq!(e.retry_after_secs, MAX_DELAY.as_secs() - 1);
        let _ = b.attempt("c@x.com", "a", t0 + MAX_DELAY).unwrap();
        assert!(b.attempt("c@x.com", "a", t0 + MAX_DELAY + secs(1)).is_err());
        let later = t0 + MAX_DELAY + PAIR_MEMORY;
        assert!(
            b.attempt("c@x.com", "a", later).is_ok(),
            "forgotten after an hour"
        );
    }

    #[test]
    fn a_flood_of_random_emails_does_not_evict_a_victim_in_back_off() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        for _ in 0..10 {
            let _ = b.attempt("victim@x.com", "evil", t0).unwrap();
        }
        for i in 0..(3 * MAX_PAIRS) {
            let _ = b
                .attempt(&format!("rnd{i}@x.com"), "flood", t0 + secs(1))
                .unwrap();
        }
        let (pairs, emails) = b.sizes();
        assert!(
            pairs <= MAX_PAIRS && emails <= MAX_EMAILS,
            "{pairs} {emails}"
        );
        assert!(
            b.attempt("victim@x.com", "evil", t0 + secs(2)).is_err(),
            "the attacker's pair is still in back-off"
        );
        // And the email is still under attack: a new client gets one try only.
        let _ = b.attempt("victim@x.com", "evil2", t0 + secs(2)).unwrap();
        assert!(b.attempt("victim@x.com", "evil2", t0 + secs(3)).is_err());
    }

    #[test]
    fn long_keys_are_stored_hashed() {
        let long = "x".repeat(1000);
        assert!(bounded(long.clone()).len() <= MAX_KEY_LEN);
        assert_ne!(bounded(long.clone()), bounded(format!("{long}y")));
        assert_eq!(bounded("short".into()), "short");
    }
}
