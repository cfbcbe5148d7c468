//! Tests of the entropy shape, round trip and caps.

use super::*;
use crate::decide::fixtures;

fn parse(json: &str) -> Entropy {
    serde_json::from_str(json).expect("entropy parses")
}

fn refused(e: &Entropy) -> &'static str {
    e.validate(1024).expect_err("must be refused").field
}

#[test]
fn realistic_entropy_parses_and_passes() {
    for (name, e) in fixtures::all() {
        let raw = serde_json::to_vec(&e).unwrap();
        assert_eq!(e.validate(raw.len()), Ok(()), "{name}");
    }
    let e = fixtures::chrome_windows();
    assert_eq!(e.screen.as_ref().unwrap().color_depth, Some(24));
    assert_eq!(e.device_memory, Some(8.0));
}

#[test]
fn unknown_keys_survive_a_round_trip() {
    let json = r#"{"userAgent":"UA","screen":{"width":1920,"availWidth":1880},
        "batteryLevel":0.5,"newSignal":{"a":[1,"x"]}}"#;
    let e = parse(json);
    assert_eq!(e.extra.get("batteryLevel"), Some(&serde_json::json!(0.5)));
    assert_eq!(
        e.screen.as_ref().unwrap().extra.get("availWidth"),
        Some(&serde_json::json!(1880))
    );
    let back: serde_json::Value = serde_json::to_value(&e).unwrap();
    let orig: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(back, orig, "nothing added, nothing lost");
    assert_eq!(e.validate(json.len()), Ok(()));
}

#[test]
fn absent_fields_stay_absent_and_empty_entropy_is_valid() {
    let e = parse("{}");
    assert_eq!(e, Entropy::default());
    assert_eq!(serde_json::to_string(&e).unwrap(), "{}");
    assert_eq!(e.validate(2), Ok(()));
    assert_eq!(parse(r#"{"userAgent":null}"#).user_agent, None);
}

#[test]
fn wrong_types_are_refused_by_serde() {
    // The route maps these to 422 through serde_path_to_error, which
    // names the same dotted path.
    assert!(serde_json::from_str::<Entropy>(r#"{"screen":{"width":-1}}"#).is_err());
    assert!(serde_json::from_str::<Entropy>(r#"{"fonts":"Arial"}"#).is_err());
    assert!(serde_json::from_str::<Entropy>(r#"{"webdriver":"yes"}"#).is_err());
}

#[test]
fn total_size_is_capped_on_the_callers_length() {
    let e = Entropy::default();
    assert_eq!(e.validate(MAX_ENTROPY_BYTES), Ok(()));
    assert_eq!(
        e.validate(MAX_ENTROPY_BYTES + 1).unwrap_err().field,
        "entropy"
    );
}

#[test]
fn each_string_field_is_capped_and_named() {
    let long = "x".repeat(MAX_STRING_BYTES + 1);
    let ok = "x".repeat(MAX_STRING_BYTES);
    type Set = fn(&mut Entropy, String);
    let cases: [(&str, Set); 7] = [
        ("entropy.userAgent", |e, s| e.user_agent = Some(s)),
        ("entropy.timezone", |e, s| e.timezone = Some(s)),
        ("entropy.platform", |e, s| e.platform = Some(s)),
        ("entropy.canvasHash", |e, s| e.canvas_hash = Some(s)),
        ("entropy.webglVendor", |e, s| e.webgl_vendor = Some(s)),
        ("entropy.webglRenderer", |e, s| e.webgl_renderer = Some(s)),
        ("entropy.audioHash", |e, s| e.audio_hash = Some(s)),
    ];
    for (field, set) in cases {
        let mut e = Entropy::default();
        set(&mut e, ok.clone());
        assert_eq!(e.validate(1024), Ok(()), "{field} at the cap is fine");
        set(&mut e, long.clone());
        assert_eq!(refused(&e), field);
    }
}

#[test]
fn lists_are_capped_in_length_and_entry_size() {
    let mut e = Entropy {
        fonts: Some(vec!["Arial".into(); MAX_FONTS]),
        ..Entropy::default()
    };
    assert_eq!(e.validate(1024), Ok(()));
    e.fonts.as_mut().unwrap().push("Extra".into());
    assert_eq!(refused(&e), "entropy.fonts");
    let e = Entropy {
        fonts: Some(vec!["f".repeat(513)]),
        ..Entropy::default()
    };
    assert_eq!(refused(&e), "entropy.fonts");

    let mut e = Entropy {
        languages: Some(vec!["en".into(); MAX_LANGUAGES]),
        ..Entropy::default()
    };
    assert_eq!(e.validate(1024), Ok(()));
    e.languages.as_mut().unwrap().push("fr".into());
    assert_eq!(refused(&e), "entropy.languages");
}

#[test]
fn numbers_outside_sane_ranges_name_their_field() {
    let screen = |s: Screen| Entropy {
        screen: Some(s),
        ..Entropy::default()
    };
    assert_eq!(
        refused(&screen(Screen {
            width: Some(70_000),
            ..Screen::default()
        })),
        "entropy.screen.width"
    );
    assert_eq!(
        refused(&screen(Screen {
            height: Some(70_000),
            ..Screen::default()
        })),
        "entropy.screen.height"
    );
    assert_eq!(
        refused(&screen(Screen {
            color_depth: Some(512),
            ..Screen::default()
        })),
        "entropy.screen.colorDepth"
    );
    assert_eq!(
        refused(&screen(Screen {
            pixel_ratio: Some(-1.0),
            ..Screen::default()
        })),
        "entropy.screen.pixelRatio"
    );
    // Odd but representable values pass: the bot scorer judges them.
    assert_eq!(
        screen(Screen {
            width: Some(0),
            height: Some(20_000),
            ..Screen::default()
        })
        .validate(10),
        Ok(())
    );

    let e = Entropy {
        hardware_concurrency: Some(5000),
        ..Entropy::default()
    };
    assert_eq!(refused(&e), "entropy.hardwareConcurrency");
    let e = Entropy {
        device_memory: Some(-0.5),
        ..Entropy::default()
    };
    assert_eq!(refused(&e), "entropy.deviceMemory");
    let e = Entropy {
        touch_points: Some(2000),
        ..Entropy::default()
    };
    assert_eq!(refused(&e), "entropy.touchPoints");
}

#[test]
fn unknown_keys_are_capped_too() {
    let e = parse(&format!(r#"{{"note":"{}"}}"#, "x".repeat(600)));
    assert_eq!(refused(&e), "entropy");
    let e = parse(&format!(r#"{{"screen":{{"note":"{}"}}}}"#, "x".repeat(600)));
    assert_eq!(refused(&e), "entropy.screen");
    let e = parse(&format!(r#"{{"{}":1}}"#, "k".repeat(65)));
    assert_eq!(refused(&e), "entropy");
    let e = parse(r#"{"deep":[[[[["too deep"]]]]]}"#);
    assert_eq!(refused(&e), "entropy");
    let e = parse(r#"{"ok":[[["three levels"]]]}"#);
    assert_eq!(e.validate(64), Ok(()));
    let many: Map<String, Value> = (0..65).map(|i| (format!("k{i}"), Value::Null)).collect();
    let e = Entropy {
        extra: many,
        ..Entropy::default()
    };
    assert_eq!(refused(&e), "entropy");
}

#[test]
fn errors_become_422_naming_the_field() {
    let api: ApiError = err("entropy.screen.width", "must be at most 65535").into();
    assert_eq!(api.status(), 422);
    assert_eq!(api.field.as_deref(), Some("entropy.screen.width"));
}
