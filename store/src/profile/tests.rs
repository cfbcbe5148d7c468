//! The profile's merge laws and its counters.

use proptest::prelude::*;
use qyzar_shared::ids::{DeviceId, ProjectId};

use super::*;

const MIN: i64 = 60_000;

fn attempt(at: i64, success: bool, device: Option<&str>, region: Option<&str>) -> LoginAttempt {
    LoginAttempt {
        project_id: ProjectId::generate(),
        identifier: "victim@example.com".into(),
        at,
        attempt_id: format!("a{at:020}"),
        success,
        ip: Some("192.0.2.1".into()),
        device_id: device.map(dev),
        session_id: None,
        region: region.map(str::to_owned),
        platform: None,
        browser: None,
    }
}

/// A device id from a short name (ids need at least a few characters).
fn dev(name: &str) -> DeviceId {
    DeviceId::parse(
        &format!("dev_{}", name.trim_start_matches("dev_").replace(' ', "_"))
            .chars()
            .chain("padpadpadpadpadpad".chars())
            .take(24)
            .collect::<String>(),
    )
    .expect("device id")
}

fn record(p: &mut AtoProfile, a: &LoginAttempt, writer: u64) -> ProfileUpdate {
    p.record(
        &AttemptFacts {
            attempt: a,
            location: None,
        },
        writer,
        15 * MIN,
    )
}

#[test]
fn a_flood_of_failures_keeps_the_last_success() {
    let t0 = 1_700_000_000_000;
    let mut p = AtoProfile::default();
    record(&mut p, &attempt(t0, true, Some("home"), Some("FR")), 1);
    for i in 1..=210 {
        record(
            &mut p,
            &attempt(t0 + i * 100, false, Some(&format!("x{i}")), Some("KP")),
            1,
        );
    }
    let last = p.last_success.as_ref().expect("kept");
    assert_eq!(last.at, t0);
    assert_eq!(p.devices.len(), 1, "failures add no device");
    assert_eq!(p.regions.len(), 1, "failures add no region");
    assert_eq!(p.failures_at(t0 + 21_000), 210);
    // Two windows later the failures count nothing, the success stays.
    assert_eq!(p.failures_at(t0 + 31 * MIN), 0);
    assert!(p.last_success.is_some());
}

#[test]
fn the_sliding_window_decays_the_previous_window() {
    let w = 10 * MIN;
    let mut c = FailureCell::empty(7, w, 0);
    for _ in 0..10 {
        c = c.count(w / 2, w);
    }
    assert_eq!(c.estimate(w - 1).round() as u32, 10);
    // Half-way through the next window, half the previous one counts.
    assert_eq!(c.estimate(w + w / 2).round() as u32, 5);
    assert_eq!(c.estimate(2 * w).round() as u32, 0);
    assert!(c.is_spent(3 * w));
    // Counting in the next window carries the previous.
    let c2 = c.count(w + 1, w);
    assert_eq!((c2.previous, c2.current), (10, 1));
    // A changed window keeps the estimate of the old one.
    let c3 = c.count(w - 1, 2 * w);
    assert_eq!(c3.window_ms, 2 * w);
    assert!(c3.estimate(w - 1) >= 10.0);
}

#[test]
fn failures_from_several_writers_add_up() {
    let t0 = 1_700_000_000_000;
    let mut a = AtoProfile::default();
    let mut b = AtoProfile::default();
    let mut store = AtoProfile::default();
    for i in 0..30 {
        let u = record(&mut a, &attempt(t0 + i, false, None, None), 1);
        store.join(&u.cells);
        let u = record(&mut b, &attempt(t0 + i, false, None, None), 2);
        store.join(&u.cells);
    }
    assert_eq!(store.failures_at(t0 + 100), 60);
}

#[test]
fn bounds_keep_the_most_recent_devices_and_say_what_was_cut() {
    let t0 = 1_700_000_000_000;
    let mut p = AtoProfile::default();
    let mut cut = Vec::new();
    for i in 0..(MAX_PROFILE_DEVICES as i64 + 5) {
        let u = record(
            &mut p,
            &attempt(t0 + i, true, Some(&format!("{i:03}")), None),
            1,
        );
        cut.extend(u.forget.devices);
    }
    assert_eq!(p.devices.len(), MAX_PROFILE_DEVICES);
    assert_eq!(p.devices[0].device_id, dev("036"));
    assert_eq!(cut.len(), 5);
    assert_eq!(cut[0].0, dev("000"));
}

#[test]
fn trust_is_idempotent() {
    let mut p = AtoProfile::default();
    let d = dev("a");
    assert_eq!(p.trust(&d, 5).cells.trusted.len(), 1);
    assert!(p.trust(&d, 9).cells.trusted.is_empty());
    assert_eq!(p.trusted[0].since, 5);
}

fn arb_profile() -> impl Strategy<Value = AtoProfile> {
    let devs = (0u8..6, 0i64..100, 0i64..100, 0u32..5).prop_map(|(d, a, b, s)| KnownDevice {
        device_id: dev(&format!("{d}")),
        first_seen: a.min(b),
        last_seen: a.max(b),
        successes: s,
    });
    let reg = (0u8..4, 0i64..100, 0i64..100).prop_map(|(r, a, b)| KnownRegion {
        region: format!("R{r}"),
        first_seen: a.min(b),
        last_seen: a.max(b),
    });
    let tr = (0u8..6, 0i64..100).prop_map(|(d, s)| TrustedDevice {
        device_id: dev(&format!("{d}")),
        since: s,
    });
    let fail = (0u64..3, 0i64..4, 0u32..9, 0u32..9).prop_map(|(w, s, c, p)| FailureCell {
        writer: w,
        window_ms: 10,
        start: s * 10,
        current: c,
        previous: p,
    });
    let last = proptest::option::of((0i64..100, 0u8..3).prop_map(|(at, i)| LoginRecord {
        at,
        attempt_id: format!("id{i}"),
        device_id: None,
        ip: None,
        region: Some(format!("R{i}")),
        location: None,
        platform: None,
        browser: None,
    }));
    (
        last,
        proptest::collection::vec(devs, 0..5),
        proptest::collection::vec(reg, 0..4),
        proptest::collection::vec(tr, 0..4),
        proptest::collection::vec(fail, 0..4),
    )
        .prop_map(|(last_success, devices, regions, trusted, failures)| {
            // A profile as joins build it: one entry per key.
            let mut p = AtoProfile::default();
            for d in devices {
                p.join(&AtoProfile {
                    devices: vec![d],
                    ..Default::default()
                });
            }
            for r in regions {
                p.join(&AtoProfile {
                    regions: vec![r],
                    ..Default::default()
                });
            }
            for t in trusted {
                p.join(&AtoProfile {
                    trusted: vec![t],
                    ..Default::default()
                });
            }
            for f in failures {
                p.join(&AtoProfile {
                    failures: vec![f],
                    ..Default::default()
                });
            }
            p.join(&AtoProfile {
                last_success,
                ..Default::default()
            });
            p
        })
}

fn joined(a: &AtoProfile, b: &AtoProfile) -> AtoProfile {
    let mut x = a.clone();
    x.join(b);
    x
}

proptest! {
    #[test]
    fn join_is_commutative(a in arb_profile(), b in arb_profile()) {
        prop_assert_eq!(joined(&a, &b), joined(&b, &a));
    }

    #[test]
    fn join_is_associative(a in arb_profile(), b in arb_profile(), c in arb_profile()) {
        prop_assert_eq!(joined(&joined(&a, &b), &c), joined(&a, &joined(&b, &c)));
    }

    #[test]
    fn join_is_idempotent(a in arb_profile(), b in arb_profile()) {
        let ab = joined(&a, &b);
        prop_assert_eq!(joined(&ab, &b), ab);
        prop_assert_eq!(joined(&a, &a), a);
    }
}

/// A project lengthening its failure window must not freeze its writers'
/// counters: the new window's aligned start lies before the old cell's,
/// and a cell that starts earlier is never the newer one in a join.
#[test]
fn a_longer_window_keeps_counting() {
    let t0 = 1_700_000_000_000 + 30 * MIN; // mid-hour, mid-minute
    let mut p = AtoProfile::default();
    let mut store = AtoProfile::default();
    fn facts(a: &LoginAttempt) -> AttemptFacts<'_> {
        AttemptFacts {
            attempt: a,
            location: None,
        }
    }
    for i in 0..5 {
        let u = p.record(&facts(&attempt(t0 + i, false, None, None)), 1, MIN);
        store.join(&u.cells);
    }
    let u = p.record(&facts(&attempt(t0 + 10, false, None, None)), 1, 60 * MIN);
    store.join(&u.cells);
    assert_eq!(p.failures_at(t0 + 11), 6);
    assert_eq!(store.failures_at(t0 + 11), 6);
    let u = p.record(&facts(&attempt(t0 + 20, false, None, None)), 1, 60 * MIN);
    store.join(&u.cells);
    assert_eq!(store.failures_at(t0 + 21), 7);
}

#[test]
fn a_damaged_cell_counts_without_panicking() {
    for (window_ms, start) in [(0, 0), (-5, 10), (i64::MIN, i64::MIN), (10, i64::MAX)] {
        let c = FailureCell {
            writer: 1,
            window_ms,
            start,
            current: 3,
            previous: 2,
        };
        let e = c.estimate(1_700_000_000_000);
        assert!(e.is_finite() && e >= 0.0, "{c:?} gave {e}");
        let _ = c.count(1_700_000_000_000, 60_000);
    }
}

/// The newest success lives inside the struct: only its text is extra.
#[test]
fn weight_counts_the_newest_success_once() {
    let mut p = AtoProfile::default();
    let empty = p.weight();
    record(&mut p, &attempt(1_000, true, None, None), 1);
    let r = p.last_success.clone().expect("a success");
    let text = r.attempt_id.len() + r.ip.as_ref().map_or(0, String::len);
    // On top of the empty struct: the success's text and the failure
    // cells' buffer, not the record's struct (it is inline).
    let cells = p.failures.capacity() * std::mem::size_of::<FailureCell>();
    assert_eq!(p.weight() - empty, text + cells);
}

/// `LoginRecord`'s hand-written `clone_from` (which reuses the old
/// strings' buffers) leaves what `clone` makes, whatever the two records
/// hold: fields present or absent on either side, shorter or longer text.
#[test]
fn login_record_clone_from_is_clone() {
    let full = |at: i64, text: &str| LoginRecord {
        at,
        attempt_id: format!("a{at}{text}"),
        device_id: Some(dev(text)),
        ip: Some(format!("192.0.2.{}", at % 250)),
        region: Some(text.to_uppercase()),
        location: Some(GeoPoint {
            lat_e4: 488_500,
            lon_e4: 23_500,
            radius_km: 20,
        }),
        platform: Some(format!("{text}-platform")),
        browser: Some(format!("{text}-browser-with-a-longer-name")),
    };
    let empty = |at: i64| LoginRecord {
        at,
        attempt_id: String::new(),
        device_id: None,
        ip: None,
        region: None,
        location: None,
        platform: None,
        browser: None,
    };
    let records = [
        full(1, "home"),
        full(2, "a much longer device name"),
        full(3, "x"),
        empty(4),
        empty(5),
    ];
    for target in &records {
        for source in &records {
            let mut t = target.clone();
            t.clone_from(source);
            assert_eq!(&t, source);
            assert_eq!(t, source.clone());
        }
    }
}

/// `bound` drops the cells whose windows have passed and names their
/// writers in the order the cells were held; live cells stay, in writer
/// order.
#[test]
fn bounds_cut_spent_failure_cells_and_keep_live_ones() {
    let cell = |writer, start| FailureCell {
        writer,
        window_ms: MIN,
        start,
        current: 1,
        previous: 0,
    };
    let now = 100 * MIN;
    let mut p = AtoProfile {
        failures: vec![
            cell(1, now - 2 * MIN), // spent: its window and the next have passed
            cell(2, now - MIN),     // live: counts as the previous window
            cell(3, now - 5 * MIN), // spent
            cell(4, now),           // live
        ],
        ..AtoProfile::default()
    };
    let cut = p.bound(now);
    assert_eq!(cut.failures, vec![1, 3]);
    let kept: Vec<u64> = p.failures.iter().map(|c| c.writer).collect();
    assert_eq!(kept, vec![2, 4]);
    assert!(p.bound(now).failures.is_empty(), "nothing more to cut");
}
