//! Behaviour of [`Limiter`] as the route sees it, its concurrency, and its
//! equivalence with governor's GCRA.

use std::num::NonZeroU32;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use super::*;

const SEC: u64 = 1_000_000_000;

fn key(l: &Limiter, bucket: &str, k: &str) -> BucketKey {
    l.bucket_key("prj_test", bucket, k.as_bytes()).unwrap()
}

/// One real (not dry-run) single-bucket call.
fn hit(l: &Limiter, k: BucketKey, rule: Rule, now: u64, cost: u32) -> Decision {
    l.check(now, &[BucketCheck { key: k, rule }], cost, false)
        .unwrap()
}

fn remaining(l: &Limiter, k: BucketKey, rule: Rule, now: u64) -> u32 {
    hit(l, k, rule, now, 0).buckets()[0].remaining
}

#[test]
fn burst_then_deny() {
    let l = Limiter::default();
    let (k, rule) = (key(&l, "ip", "203.0.113.7"), Rule::new(5, 10));
    for left in (0..5).rev() {
        let d = hit(&l, k, rule, 0, 1);
        assert!(d.allowed);
        assert_eq!(d.buckets()[0].remaining, left);
    }
    let d = hit(&l, k, rule, 0, 1);
    assert!(!d.allowed);
    assert_eq!(d.denied_by, Some(0));
    let b = d.buckets()[0];
    // One cell refills every 2 s; the bucket is full again after 10 s.
    assert_eq!(
        (b.remaining, b.retry_after_ms, b.reset_after_ms),
        (0, Some(2_000), 10_000)
    );
    assert_eq!(d.retry_after_ms(), Some(2_000));
}

#[test]
fn refill_after_time() {
    let l = Limiter::default();
    let (k, rule) = (key(&l, "ip", "a"), Rule::new(5, 10));
    assert!(hit(&l, k, rule, 0, 5).allowed);
    assert!(
        !hit(&l, k, rule, 2 * SEC - 1, 1).allowed,
        "one nanosecond early"
    );
    assert!(
        hit(&l, k, rule, 2 * SEC, 1).allowed,
        "one cell back after 2 s"
    );
    assert!(!hit(&l, k, rule, 2 * SEC, 1).allowed);
    assert_eq!(remaining(&l, k, rule, 7 * SEC), 2, "floor of 2.5 cells");
    assert_eq!(remaining(&l, k, rule, 12 * SEC), 5, "full again");
    assert_eq!(hit(&l, k, rule, 12 * SEC, 0).buckets()[0].reset_after_ms, 0);
}

#[test]
fn cost_above_one_consumes_that_many_cells() {
    let l = Limiter::default();
    let (k, rule) = (
        key(&l, "metadata:email", "a@example.com"),
        Rule::new(10, 60),
    );
    assert_eq!(hit(&l, k, rule, 0, 4).buckets()[0].remaining, 6);
    assert_eq!(hit(&l, k, rule, 0, 4).buckets()[0].remaining, 2);
    let d = hit(&l, k, rule, 0, 4);
    assert!(!d.allowed);
    // 2 cells short at 6 s per cell.
    assert_eq!(
        (d.buckets()[0].remaining, d.retry_after_ms()),
        (2, Some(12_000))
    );
    assert!(hit(&l, k, rule, 0, 2).allowed, "a smaller call still fits");
}

#[test]
fn cost_above_limit_is_never_allowed_and_consumes_nothing() {
    let l = Limiter::default();
    let (k, rule) = (key(&l, "ip", "a"), Rule::new(10, 60));
    let d = hit(&l, k, rule, 0, 11);
    assert!(!d.allowed);
    assert_eq!(
        (d.buckets()[0].retry_after_ms, d.retry_after_ms()),
        (None, None)
    );
    assert_eq!(d.buckets()[0].remaining, 10);
    assert_eq!(remaining(&l, k, rule, 0), 10);
}

#[test]
fn cost_zero_is_a_pure_query() {
    let l = Limiter::default();
    let (k, rule) = (key(&l, "ip", "a"), Rule::new(3, 60));
    assert!(hit(&l, k, rule, 0, 3).allowed);
    let d = hit(&l, k, rule, 0, 0);
    assert!(d.allowed);
    assert_eq!(
        (d.buckets()[0].remaining, d.buckets()[0].reset_after_ms),
        (0, 60_000)
    );
    assert_eq!(l.stats().entries, 1);
    let fresh = key(&l, "ip", "b");
    assert!(hit(&l, fresh, rule, 0, 0).allowed);
    assert_eq!(l.stats().entries, 1, "a query creates no entry");
}

#[test]
fn dry_run_answers_like_a_real_call_and_consumes_nothing() {
    let l = Limiter::default();
    let (k, rule) = (key(&l, "ip", "a"), Rule::new(2, 60));
    let checks = [BucketCheck { key: k, rule }];
    for _ in 0..5 {
        let d = l.check(0, &checks, 1, true).unwrap();
        assert!(d.allowed);
        assert_eq!(d.buckets()[0].remaining, 1, "as if consumed");
    }
    assert_eq!(l.stats().entries, 0);
    assert!(hit(&l, k, rule, 0, 2).allowed);
    let d = l.check(0, &checks, 1, true).unwrap();
    assert_eq!((d.allowed, d.retry_after_ms()), (false, Some(30_000)));
}

#[test]
fn denied_call_consumes_from_no_bucket() {
    let l = Limiter::default();
    let ip = BucketCheck {
        key: key(&l, "ip", "203.0.113.7"),
        rule: Rule::new(100, 60),
    };
    let email = BucketCheck {
        key: key(&l, "metadata:email", "a@example.com"),
        rule: Rule::new(1, 300),
    };
    let checks = [ip, email];
    let d = l.check(0, &checks, 1, false).unwrap();
    assert!(d.allowed);
    assert_eq!(
        d.primary(),
        Some(1),
        "the email bucket has the fewest cells left"
    );
    for _ in 0..10 {
        let d = l.check(0, &checks, 1, false).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.denied_by, Some(1));
        assert_eq!(d.primary(), Some(1));
        let [ip_out, email_out] = [d.buckets()[0], d.buckets()[1]];
        assert!(ip_out.allowed, "the ip bucket alone would allow");
        assert_eq!(ip_out.remaining, 99, "but nothing was taken from it");
        assert_eq!(
            (email_out.remaining, email_out.retry_after_ms),
            (0, Some(300_000))
        );
    }
    assert_eq!(remaining(&l, ip.key, ip.rule, 0), 99);
}

#[test]
fn changed_limit_keeps_the_counter() {
    let l = Limiter::default();
    let k = key(&l, "metadata:email", "a@example.com");
    assert!(hit(&l, k, Rule::new(10, 60), 0, 5).allowed);
    assert_eq!(remaining(&l, k, Rule::new(10, 60), 0), 5);
    // The 5 spent cells carry over to any new rule.
    assert_eq!(remaining(&l, k, Rule::new(20, 60), 0), 15);
    assert_eq!(
        remaining(&l, k, Rule::new(10, 120), 0),
        5,
        "a longer window too"
    );
    let d = hit(&l, k, Rule::new(3, 60), 0, 1);
    assert!(!d.allowed, "5 spent of a limit of 3");
    // Under {3, 60 s} the 5 cells are 100 s of debt; a call fits at 40 s of debt.
    assert_eq!(d.retry_after_ms(), Some(60_000));
    // Charging under the new rule re-expresses the debt at its rate: 6 of 20.
    assert!(hit(&l, k, Rule::new(20, 60), 0, 1).allowed);
    assert_eq!(remaining(&l, k, Rule::new(20, 60), 0), 14);
    assert_eq!(
        remaining(&l, k, Rule::new(20, 60), 3 * SEC),
        15,
        "drains at 20 per minute now"
    );
}

#[test]
fn same_key_twice_in_one_call_is_charged_twice() {
    let l = Limiter::default();
    let check = BucketCheck {
        key: key(&l, "ip", "a"),
        rule: Rule::new(3, 60),
    };
    let d = l.check(0, &[check, check], 1, false).unwrap();
    assert!(d.allowed);
    assert_eq!((d.buckets()[0].remaining, d.buckets()[1].remaining), (2, 1));
    let d = l.check(0, &[check, check], 1, false).unwrap();
    assert_eq!((d.allowed, d.denied_by), (false, Some(1)));
    assert_eq!(
        (d.buckets()[0].remaining, d.buckets()[1].remaining),
        (1, 1),
        "nothing consumed"
    );
}

#[test]
fn bucket_count_is_bounded_and_an_empty_call_is_allowed() {
    let l = Limiter::default();
    let check = BucketCheck {
        key: key(&l, "ip", "a"),
        rule: Rule::new(100, 60),
    };
    assert!(l.check(0, &[check; MAX_BUCKETS], 1, false).unwrap().allowed);
    assert_eq!(
        l.check(0, &[check; MAX_BUCKETS + 1], 1, false).unwrap_err(),
        TooManyBuckets
    );
    let d = l.check(0, &[], 1, false).unwrap();
    assert!(d.allowed && d.buckets().is_empty() && d.primary().is_none());
}

#[test]
fn concurrent_calls_never_overspend() {
    let l = Limiter::default();
    let check = BucketCheck {
        key: key(&l, "ip", "hot"),
        rule: Rule::new(100, 3600),
    };
    let allowed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| {
                for _ in 0..1000 {
                    if l.check(SEC, &[check], 1, false).unwrap().allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(allowed.load(Ordering::Relaxed), 100);
}

#[test]
fn concurrent_multi_bucket_calls_are_all_or_nothing() {
    // Small shard count so buckets share shards with other threads' keys.
    let l = Limiter::new(LimiterConfig {
        max_entries: 1 << 10,
        shards: 4,
    });
    let tight = BucketCheck {
        key: key(&l, "ip", "hot"),
        rule: Rule::new(100, 3600),
    };
    let loose = BucketCheck {
        key: key(&l, "metadata:email", "hot"),
        rule: Rule::new(150, 3600),
    };
    let allowed = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..8u32 {
            let (l, allowed) = (&l, &allowed);
            s.spawn(move || {
                let own = BucketCheck {
                    key: key(l, "metadata:user", &t.to_string()),
                    rule: Rule::new(10_000, 3600),
                };
                // Opposite orders in alternate threads: lock ordering, not
                // argument order, must prevent deadlock.
                let checks = if t % 2 == 0 {
                    [tight, own, loose]
                } else {
                    [loose, tight, own]
                };
                for _ in 0..1000 {
                    if l.check(SEC, &checks, 1, false).unwrap().allowed {
                        allowed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(allowed.load(Ordering::Relaxed), 100);
    assert_eq!(
        remaining(&l, loose.key, loose.rule, SEC),
        50,
        "denied calls took nothing"
    );
}

#[test]
fn sweep_removes_only_expired_entries() {
    let l = Limiter::default();
    let (short, long) = (key(&l, "ip", "short"), key(&l, "ip", "long"));
    assert!(hit(&l, short, Rule::new(1, 1), 0, 1).allowed);
    assert!(hit(&l, long, Rule::new(1, 100), 0, 1).allowed);
    assert_eq!(l.sweep(SEC - 1), 0);
    assert_eq!(l.sweep(SEC), 1, "a TAT at or before now is a full bucket");
    assert_eq!(l.stats().entries, 1);
    assert!(
        !hit(&l, long, Rule::new(1, 100), SEC, 1).allowed,
        "the live entry kept its state"
    );
    assert_eq!(l.sweep(100 * SEC), 1);
    assert_eq!(l.stats(), LimiterStats::default());
}

#[test]
fn a_full_shard_forgets_idle_keys_first_then_the_most_refilled_never_fails_open() {
    let l = Limiter::new(LimiterConfig {
        max_entries: 2,
        shards: 1,
    });
    let rule = Rule::new(1, 100);
    let (a, b, c, d) = (
        key(&l, "ip", "a"),
        key(&l, "ip", "b"),
        key(&l, "ip", "c"),
        key(&l, "ip", "d"),
    );
    assert!(hit(&l, a, rule, 0, 1).allowed);
    assert!(hit(&l, b, rule, SEC, 1).allowed);
    // Full of live keys: the new key evicts the most-refilled one (`a`,
    // spent earliest) and is itself tracked: its second call is denied.
    assert!(hit(&l, c, rule, 2 * SEC, 1).allowed);
    assert!(
        !hit(&l, c, rule, 2 * SEC, 1).allowed,
        "the new key is limited"
    );
    assert!(!hit(&l, b, rule, 2 * SEC, 1).allowed, "`b` kept its state");
    assert_eq!(
        l.stats(),
        LimiterStats {
            entries: 2,
            untracked: 0,
            evicted: 1,
            projects: 0,
        }
    );
    // Once the keys are idle (full buckets) they go first, losing nothing.
    assert!(hit(&l, d, rule, 200 * SEC, 1).allowed);
    assert!(!hit(&l, d, rule, 200 * SEC, 1).allowed);
    assert_eq!((l.stats().entries, l.stats().evicted), (1, 1));
}

#[test]
fn a_shard_full_of_live_keys_evicts_its_most_refilled_eighth_at_once() {
    let l = Limiter::new(LimiterConfig {
        max_entries: 16,
        shards: 1,
    });
    let rule = Rule::new(1, 100);
    let keys: Vec<_> = (0..16).map(|i| key(&l, "ip", &format!("k{i}"))).collect();
    // Spent one after another: k0 is the most refilled, k15 the least.
    for (i, &k) in keys.iter().enumerate() {
        assert!(hit(&l, k, rule, i as u64 * SEC, 1).allowed);
    }
    let t = 16 * SEC;
    let new = key(&l, "ip", "new");
    assert!(hit(&l, new, rule, t, 1).allowed);
    assert_eq!(
        (l.stats().entries, l.stats().evicted),
        (15, 2),
        "16 / 8 evicted at once"
    );
    // The next new key finds room without evicting.
    assert!(hit(&l, key(&l, "ip", "next"), rule, t, 1).allowed);
    assert_eq!((l.stats().entries, l.stats().evicted), (16, 2));
    // Every more-spent key kept its state, and so did the new one; the two
    // most-refilled were forgotten (full buckets again).
    for &k in &keys[2..] {
        assert!(!hit(&l, k, rule, t, 1).allowed, "a more-spent key is kept");
    }
    assert!(!hit(&l, new, rule, t, 1).allowed);
    assert!(hit(&l, keys[0], rule, t, 1).allowed);
    assert!(hit(&l, keys[1], rule, t, 1).allowed);
}

#[test]
fn clones_share_state_and_debug_shows_no_entries() {
    let l = Limiter::new(LimiterConfig {
        max_entries: 10,
        shards: 3,
    });
    let k = key(&l, "ip", "a");
    let handle = l.clone();
    assert!(hit(&l, k, Rule::new(1, 60), 0, 1).allowed);
    assert!(!hit(&handle, k, Rule::new(1, 60), 0, 1).allowed);
    assert_eq!(
        handle.bucket_key("prj_test", "ip", b"a"),
        Ok(k),
        "same secret"
    );
    assert_eq!(format!("{l:?}"), "Limiter { shards: 4, shard_cap: 3, .. }");
    assert!(l.now_nanos() <= l.now_nanos());
}

/// Same allow/deny decisions and waits as governor's GCRA, for the same quota
/// over a deterministic, pseudo-random sequence of request times and costs.
#[test]
fn matches_governor_decisions() {
    use governor::clock::{Clock, FakeRelativeClock};
    use governor::{Quota, RateLimiter};

    for rule in [
        Rule::new(10, 60),
        Rule::new(7, 60),
        Rule::new(1, 1),
        Rule::new(3, 1),
        Rule::new(100, 3600),
    ] {
        let t = rule.emission_interval_nanos();
        let quota = Quota::with_period(Duration::from_nanos(t))
            .unwrap()
            .allow_burst(NonZeroU32::new(rule.limit).unwrap());
        let clock = FakeRelativeClock::default();
        let governor = RateLimiter::direct_with_clock(quota, clock.clone());
        let ours = Limiter::default();
        let check = BucketCheck {
            key: key(&ours, "ip", "a"),
            rule,
        };

        let mut rng = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(rule.limit);
        let (mut now, mut allowed, mut denied) = (0u64, 0, 0);
        for _ in 0..5_000 {
            rng = xorshift(rng);
            // Bursts at one instant, steps within a cell, and longer pauses.
            let step = match rng % 4 {
                0 => 0,
                1 => (rng >> 8) % (t / 4 + 1),
                2 => (rng >> 8) % t,
                _ => (rng >> 8) % (2 * t),
            };
            // Mostly single cells, sometimes any size up to one past the limit.
            let cost = if rng & 0x30 == 0 {
                1 + ((rng >> 40) % u64::from(rule.limit + 1)) as u32
            } else {
                1
            };
            now += step;
            clock.advance(Duration::from_nanos(step));

            let d = ours.check(now, &[check], cost, false).unwrap();
            match governor.check_n(NonZeroU32::new(cost).unwrap()) {
                Err(_insufficient_capacity) => {
                    assert_eq!((d.allowed, d.retry_after_ms()), (false, None))
                }
                Ok(Ok(())) => {
                    assert!(d.allowed, "{rule:?} at {now} ns, cost {cost}");
                    allowed += 1;
                }
                Ok(Err(not_until)) => {
                    assert!(!d.allowed, "{rule:?} at {now} ns, cost {cost}");
                    let wait =
                        u64::try_from(not_until.wait_time_from(clock.now()).as_nanos()).unwrap();
                    assert_eq!(
                        d.retry_after_ms(),
                        Some(wait.div_ceil(1_000_000)),
                        "{rule:?} at {now} ns"
                    );
                    denied += 1;
                }
            }
        }
        assert!(
            allowed > 100 && denied > 100,
            "{rule:?}: the sequence must exercise both answers"
        );
    }
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The one-bucket fast path answers exactly like the general path, over a
/// pseudo-random sequence of times, rules (changed mid-way), costs and dry
/// runs on a few keys, and leaves the same state behind.
#[test]
fn one_bucket_path_matches_the_general_path() {
    let (fast, general) = (Limiter::default(), Limiter::default());
    let keys: Vec<BucketKey> = (0..3).map(|i| key(&fast, "ip", &i.to_string())).collect();
    let rules = [Rule::new(5, 10), Rule::new(3, 1), Rule::new(20, 60)];
    let (mut rng, mut now) = (0x2545_f491_4f6c_dd1d_u64, 0u64);
    for _ in 0..5_000 {
        rng = xorshift(rng);
        now += (rng >> 8) % SEC;
        let check = BucketCheck {
            key: keys[(rng % 3) as usize],
            rule: rules[((rng >> 4) % 3) as usize],
        };
        let cost = ((rng >> 16) % 7) as u32;
        let dry_run = (rng >> 24) % 5 == 0;
        let a = fast.check(now, &[check], cost, dry_run).unwrap();
        let b = general.check_many::<SMALL_CALL, false>(now, &[check], cost, dry_run);
        assert_eq!(
            (a.allowed, a.denied_by, a.buckets()),
            (b.allowed, b.denied_by, b.buckets()),
            "{check:?} cost {cost} dry {dry_run} at {now}"
        );
    }
    for k in keys {
        for rule in rules {
            let probe = [BucketCheck { key: k, rule }];
            assert_eq!(
                fast.check(now, &probe, 0, true).unwrap().buckets(),
                general.check(now, &probe, 0, true).unwrap().buckets()
            );
        }
    }
}

/// The single-lookup path (every bucket in a shard of its own) answers like
/// the general one, and so do the small (4) and full (17) scratch arrays,
/// over pseudo-random calls of 2–4 buckets with repeated keys, denials and
/// dry runs. With 256 shards distinct keys almost never share one.
#[test]
fn in_place_and_general_paths_agree() {
    let (in_place, small, full) = (Limiter::default(), Limiter::default(), Limiter::default());
    let keys: Vec<BucketKey> = (0..5)
        .map(|i| key(&in_place, "ip", &i.to_string()))
        .collect();
    let (mut rng, mut now) = (0x9e37_79b9_7f4a_7c15_u64, 0u64);
    let mut took_in_place = 0;
    for _ in 0..5_000 {
        rng = xorshift(rng);
        now += (rng >> 8) % (SEC / 4);
        let n = 2 + (rng % 3) as usize;
        let checks: Vec<BucketCheck> = (0..n)
            .map(|i| BucketCheck {
                key: keys[((rng >> (8 + 3 * i)) % 5) as usize],
                rule: Rule::new(4 + i as u32, 2),
            })
            .collect();
        let cost = ((rng >> 32) % 3) as u32;
        let dry_run = (rng >> 40) % 4 == 0;
        let mut shards: Vec<usize> = checks
            .iter()
            .map(|c| in_place.inner.shard_index(c.key))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        took_in_place += usize::from(shards.len() == n);
        let a = in_place.check(now, &checks, cost, dry_run).unwrap();
        let b = small.check_many::<SMALL_CALL, false>(now, &checks, cost, dry_run);
        let c = full.check_many::<MAX_BUCKETS, false>(now, &checks, cost, dry_run);
        for other in [&b, &c] {
            assert_eq!(
                (a.allowed, a.denied_by, a.buckets()),
                (other.allowed, other.denied_by, other.buckets()),
                "{checks:?} cost {cost} dry {dry_run} at {now}"
            );
        }
    }
    assert!(took_in_place > 1_000, "the in-place path must be exercised");
    assert_eq!(in_place.stats(), small.stats());
}

/// The time of an instant already read (rate-limit-check passes the
/// router's arrival instant) is on the same scale as `now_nanos`: between
/// the readings taken around it, later for a later instant, and zero for an
/// instant before the limiter was made (never a wrap to a far future).
#[test]
fn nanos_at_an_instant_is_on_now_nanos_scale() {
    let before_limiter = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(2));
    let l = Limiter::default();
    assert_eq!(l.nanos_at(before_limiter), 0);
    std::thread::sleep(Duration::from_millis(2));
    let lo = l.now_nanos();
    let at = std::time::Instant::now();
    let hi = l.now_nanos();
    let n = l.nanos_at(at);
    assert!(lo <= n && n <= hi, "{lo} <= {n} <= {hi}");
    assert!(n >= 2_000_000, "counted from the limiter's making: {n}");
    let later = at + Duration::from_secs(3);
    assert_eq!(l.nanos_at(later) - n, 3_000_000_000);
}
