//! Tests of the anti-ATO weights, reasons and action boundaries.

use super::*;

const NOW: i64 = 1_717_000_000_000;
const DEFAULTS: Thresholds = Thresholds {
    challenge: 60,
    block: 85,
};

fn dev(n: u8) -> DeviceId {
    DeviceId::from_digest(&[n; 32])
}

fn prior(device: &DeviceId, region: &str, ago_ms: i64) -> PriorSnapshot {
    PriorSnapshot {
        device_id: Some(device.clone()),
        ip: Some("203.0.113.7".parse().unwrap()),
        region: Some(region.into()),
        platform: Some("desktop".into()),
        browser: Some("Chrome".into()),
        location: None,
        at: NOW - ago_ms,
    }
}

fn attempt<'a>(device: Option<&'a DeviceId>, region: Option<&'a str>) -> Attempt<'a> {
    Attempt {
        ip: Some("203.0.113.7".parse().unwrap()),
        region,
        device_id: device,
        platform: Some("desktop"),
        browser: Some("Chrome"),
        bot: false,
        location: None,
        now: NOW,
    }
}

fn judge(a: &Attempt<'_>, h: &History<'_>) -> AtoDecision {
    score_login(a, h, DEFAULTS)
}

const DAY: i64 = 24 * 3_600_000;

#[test]
fn first_sight_is_allowed_with_no_reasons() {
    let d = dev(1);
    let r = judge(&attempt(Some(&d), Some("FR")), &History::default());
    assert_eq!(
        r,
        AtoDecision {
            action: Action::Allow,
            score: 0,
            reasons: vec![],
            changes: vec![],
            trusted_device: false,
            details: Details::default(),
        }
    );
    let r = judge(&attempt(None, None), &History::default());
    assert_eq!(
        (r.action, r.score),
        (Action::Allow, 0),
        "no device on first sight is still first sight"
    );
}

#[test]
fn first_sight_still_sees_bots_and_velocity() {
    let d = dev(1);
    let mut a = attempt(Some(&d), Some("FR"));
    a.bot = true;
    let r = judge(&a, &History::default());
    assert_eq!(
        (r.action, r.score, r.reasons),
        (Action::Challenge, 60, vec!["bot"])
    );
    let h = History {
        recent_failures: 8,
        ..History::default()
    };
    let r = judge(&attempt(Some(&d), Some("FR")), &h);
    assert_eq!(
        (r.action, r.score, r.reasons),
        (Action::Challenge, 60, vec!["failed_attempt_velocity"])
    );
}

#[test]
fn same_device_same_place_is_only_untrusted() {
    let d = dev(1);
    let p = prior(&d, "FR", DAY);
    let h = History {
        prior: Some(&p),
        ..History::default()
    };
    let r = judge(&attempt(Some(&d), Some("FR")), &h);
    assert_eq!(
        (r.action, r.score, r.reasons),
        (Action::Allow, 15, vec!["untrusted_identifier"])
    );
    assert!(r.changes.is_empty());
    let h = History { trusted: true, ..h };
    let r = judge(&attempt(Some(&d), Some("FR")), &h);
    assert_eq!((r.score, r.reasons.len(), r.trusted_device), (0, 0, true));
}

#[test]
fn new_device_fires_for_an_unknown_or_missing_device() {
    let (old, new) = (dev(1), dev(2));
    let p = prior(&old, "FR", DAY);
    let h = History {
        prior: Some(&p),
        ..History::default()
    };
    let r = judge(&attempt(Some(&new), Some("FR")), &h);
    assert_eq!(r.reasons, ["new_device", "untrusted_identifier"]);
    assert_eq!((r.score, r.action), (45, Action::Allow));
    assert_eq!(r.changes, ["device"]);
    // Omitting the device must not lower the risk.
    let r = judge(&attempt(None, Some("FR")), &h);
    assert_eq!(r.reasons, ["new_device", "untrusted_identifier"]);
    assert!(r.changes.is_empty(), "an unknown side is not a change");
    // A second device the user already logs in from is known.
    let h = History {
        known_device: true,
        ..h
    };
    let r = judge(&attempt(Some(&new), Some("FR")), &h);
    assert_eq!(r.reasons, ["untrusted_identifier"]);
    assert_eq!(r.changes, ["device"]);
}

#[test]
fn new_region_and_impossible_travel() {
    let d = dev(1);
    let far = prior(&d, "FR", 2 * 3_600_000);
    let h = History {
        prior: Some(&far),
        ..History::default()
    };
    let r = judge(&attempt(Some(&d), Some("DE")), &h);
    assert_eq!(r.reasons, ["new_region", "untrusted_identifier"]);
    assert_eq!(r.changes, ["region"]);
    assert_eq!(r.score, 40);

    let near = prior(&d, "FR", 30 * 60_000);
    let h = History {
        prior: Some(&near),
        ..History::default()
    };
    let r = judge(&attempt(Some(&d), Some("DE")), &h);
    assert_eq!(
        r.reasons,
        ["new_region", "untrusted_identifier", "impossible_travel"]
    );
    assert_eq!((r.score, r.action), (80, Action::Challenge));

    // Unknown region on either side proves nothing.
    let r = judge(&attempt(Some(&d), None), &h);
    assert_eq!(r.reasons, ["untrusted_identifier"]);
}

#[test]
fn travel_window_edge_is_exclusive() {
    let d = dev(1);
    let at_edge = prior(&d, "FR", TRAVEL_WINDOW_MS);
    let h = History {
        prior: Some(&at_edge),
        trusted: true,
        ..History::default()
    };
    assert_eq!(
        judge(&attempt(Some(&d), Some("DE")), &h).reasons,
        ["new_region"]
    );
    let inside = prior(&d, "FR", TRAVEL_WINDOW_MS - 1);
    let h = History {
        prior: Some(&inside),
        ..h
    };
    assert_eq!(
        judge(&attempt(Some(&d), Some("DE")), &h).reasons,
        ["new_region", "impossible_travel"]
    );
    // A prior "in the future" (clock skew) counts as recent.
    let skewed = prior(&d, "FR", -5_000);
    let h = History {
        prior: Some(&skewed),
        ..h
    };
    assert!(judge(&attempt(Some(&d), Some("DE")), &h)
        .reasons
        .contains(&"impossible_travel"));
}

#[test]
fn velocity_scales_with_failures_and_is_capped() {
    let expect = [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 10),
        (4, 20),
        (7, 50),
        (8, 60),
        (9, 60),
        (u32::MAX, 60),
    ];
    for (failures, weight) in expect {
        assert_eq!(velocity_weight(failures), weight, "{failures}");
        let h = History {
            recent_failures: failures,
            ..History::default()
        };
        let r = judge(&attempt(None, None), &h);
        assert_eq!(r.score, u8::try_from(weight).unwrap());
        assert_eq!(r.reasons.contains(&"failed_attempt_velocity"), weight > 0);
    }
}

#[test]
fn trust_forgives_travel_but_not_bots_or_guessing() {
    let d = dev(1);
    let near = prior(&d, "FR", 60_000);
    let h = History {
        prior: Some(&near),
        trusted: true,
        ..History::default()
    };
    let r = judge(&attempt(Some(&d), Some("DE")), &h);
    assert_eq!(
        (r.score, r.action, r.trusted_device),
        (45, Action::Allow, true)
    ); // 65 - 20
    let mut a = attempt(Some(&d), Some("FR"));
    a.bot = true;
    assert_eq!(judge(&a, &h).score, 60, "bot keeps its full weight");
    let h = History {
        recent_failures: 5,
        ..h
    };
    assert_eq!(judge(&a, &h).score, 90, "bot + velocity keep theirs");
}

#[test]
fn everything_at_once_is_capped_and_blocked() {
    let (old, new) = (dev(1), dev(2));
    let near = prior(&old, "FR", 60_000);
    let h = History {
        prior: Some(&near),
        recent_failures: 20,
        ..History::default()
    };
    let mut a = attempt(Some(&new), Some("DE"));
    a.bot = true;
    a.browser = Some("Firefox");
    a.ip = Some("198.51.100.9".parse().unwrap());
    let r = judge(&a, &h);
    assert_eq!((r.score, r.action), (100, Action::Block));
    assert_eq!(
        r.reasons,
        [
            "new_device",
            "new_region",
            "untrusted_identifier",
            "failed_attempt_velocity",
            "impossible_travel",
            "bot"
        ]
    );
    assert_eq!(r.changes, ["device", "ip", "region", "browser"]);
}

#[test]
fn action_boundaries_are_inclusive() {
    // A fixed scenario scoring exactly 45 (new_device + untrusted).
    let (old, new) = (dev(1), dev(2));
    let p = prior(&old, "FR", DAY);
    let h = History {
        prior: Some(&p),
        ..History::default()
    };
    let a = attempt(Some(&new), Some("FR"));
    let act = |challenge, block| score_login(&a, &h, Thresholds { challenge, block }).action;
    assert_eq!(score_login(&a, &h, DEFAULTS).score, 45);
    assert_eq!(act(45, 85), Action::Challenge, "score == challengeScore");
    assert_eq!(act(46, 85), Action::Allow, "one below challengeScore");
    assert_eq!(act(30, 45), Action::Block, "score == blockScore");
    assert_eq!(act(30, 46), Action::Challenge, "one below blockScore");
    assert_eq!(act(50, 40), Action::Block, "a misordered pair blocks");
    assert_eq!(act(0, 100), Action::Challenge);
}

#[test]
fn ip_changes_compare_canonical_addresses() {
    let d = dev(1);
    let p = prior(&d, "FR", DAY);
    let h = History {
        prior: Some(&p),
        trusted: true,
        ..History::default()
    };
    let mut a = attempt(Some(&d), Some("FR"));
    a.ip = Some("::ffff:203.0.113.7".parse().unwrap());
    assert!(judge(&a, &h).changes.is_empty());
    a.ip = Some("2001:db8::1".parse().unwrap());
    assert_eq!(judge(&a, &h).changes, ["ip"]);
    a.ip = None;
    assert!(judge(&a, &h).changes.is_empty());
}

#[test]
fn decision_serialises_as_the_answer_expects() {
    let d = dev(1);
    let p = prior(&d, "FR", DAY);
    let h = History {
        prior: Some(&p),
        ..History::default()
    };
    let v = serde_json::to_value(judge(&attempt(Some(&dev(2)), Some("FR")), &h)).unwrap();
    let device = dev(2).to_string();
    assert_eq!(
        v,
        serde_json::json!({"action": "allow", "score": 45,
            "reasons": ["new_device", "untrusted_identifier"], "changes": ["device"], "trustedDevice": false,
            "details": {"new_device": {"deviceId": device, "knownDevices": 0},
                "untrusted_identifier": {"deviceId": device, "trustedDevices": 0}}})
    );
    for a in [Action::Allow, Action::Challenge, Action::Block] {
        assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
    }
}

#[test]
fn prior_snapshot_from_the_profiles_last_success() {
    let stored = LoginRecord {
        at: NOW,
        attempt_id: "a1".into(),
        ip: Some("not an ip".into()),
        device_id: Some(dev(3)),
        region: Some("FR".into()),
        location: None,
        platform: Some("mobile".into()),
        browser: Some("Safari".into()),
    };
    let p = PriorSnapshot::from_record(&stored);
    assert_eq!((p.ip, p.at, p.device_id), (None, NOW, Some(dev(3))));
    assert_eq!(p.region.as_deref(), Some("FR"));
    let p = PriorSnapshot::from_record(&LoginRecord {
        ip: Some("203.0.113.7".into()),
        ..stored
    });
    assert_eq!(p.ip, Some("203.0.113.7".parse().unwrap()));
}

fn region(r: &str) -> KnownRegion {
    KnownRegion {
        region: r.into(),
        first_seen: NOW - 30 * DAY,
        last_seen: NOW - DAY,
    }
}

#[test]
fn a_known_region_is_not_new_and_details_name_them() {
    let d = dev(1);
    let p = prior(&d, "FR", 2 * DAY);
    let known = [region("FR"), region("DE")];
    let h = History {
        prior: Some(&p),
        known_device: true,
        known_devices: 1,
        known_regions: &known,
        ..History::default()
    };
    let r = judge(&attempt(Some(&d), Some("DE")), &h);
    assert!(!r.reasons.contains(&"new_region"), "{r:?}");
    let r = judge(&attempt(Some(&d), Some("BR")), &h);
    assert!(r.reasons.contains(&"new_region"));
    let v = serde_json::to_value(&r.details).unwrap();
    assert_eq!(
        v["new_region"],
        serde_json::json!({"region": "BR", "lastRegion": "FR", "knownRegions": ["FR", "DE"]})
    );
}

fn point(lat: f64, lon: f64) -> GeoPoint {
    GeoPoint {
        lat_e4: (lat * 10_000.0) as i32,
        lon_e4: (lon * 10_000.0) as i32,
        radius_km: 20,
    }
}

#[test]
fn impossible_travel_is_a_speed_when_coordinates_are_known() {
    let d = dev(1);
    let paris = point(48.8566, 2.3522);
    let new_york = point(40.7128, -74.0060);
    let lyon = point(45.7640, 4.8357);
    let mut p = prior(&d, "FR", 30 * 60_000);
    p.location = Some(paris);
    let h = History {
        prior: Some(&p),
        known_device: true,
        ..History::default()
    };
    // Paris to New York in 30 minutes: about 11 700 km/h.
    let mut a = attempt(Some(&d), Some("US"));
    a.location = Some(new_york);
    let r = judge(&a, &h);
    assert!(r.reasons.contains(&"impossible_travel"), "{r:?}");
    let t = r.details.impossible_travel.expect("details");
    assert!((5_700..6_000).contains(&t.distance_km.unwrap()), "{t:?}");
    assert!(t.speed_kmh.unwrap() > 10_000);
    assert_eq!(t.minutes_since_last_login, 30);
    // Paris to Lyon in 30 minutes (390 km): fast, but a region-free
    // speed rule does not fire in the same country either way.
    let mut a = attempt(Some(&d), Some("FR"));
    a.location = Some(lyon);
    assert!(!judge(&a, &h).reasons.contains(&"impossible_travel"));
    // Paris to Lyon in 10 minutes: 2 300 km/h, impossible even in one region.
    let mut p10 = p.clone();
    p10.at = NOW - 10 * 60_000;
    let h10 = History {
        prior: Some(&p10),
        ..h
    };
    assert!(judge(&a, &h10).reasons.contains(&"impossible_travel"));
}

#[test]
fn every_fired_reason_has_details() {
    let d = dev(1);
    let other = dev(2);
    let p = prior(&d, "FR", 10 * 60_000);
    let known = [region("FR")];
    let h = History {
        prior: Some(&p),
        recent_failures: 7,
        window_seconds: 900,
        known_devices: 1,
        known_regions: &known,
        ..History::default()
    };
    let mut a = attempt(Some(&other), Some("KP"));
    a.bot = true;
    let r = judge(&a, &h);
    let v = serde_json::to_value(&r.details).unwrap();
    for reason in &r.reasons {
        assert!(v.get(reason).is_some(), "{reason} has no details: {v}");
    }
    assert_eq!(v.as_object().unwrap().len(), r.reasons.len());
    assert_eq!(
        v["failed_attempt_velocity"],
        serde_json::json!({"failures": 7, "freeFailures": 2, "windowSeconds": 900})
    );
}
