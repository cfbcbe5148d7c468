use proptest::prelude::*;

use super::*;

fn folded(raw: &str) -> String {
    normalise(raw, false).unwrap_or_else(|e| panic!("{raw:?} refused: {e:?}"))
}

fn kept_case(raw: &str) -> String {
    normalise(raw, true).unwrap_or_else(|e| panic!("{raw:?} refused: {e:?}"))
}

fn refusal(raw: &str) {
    for case_sensitive in [false, true] {
        let e = normalise(raw, case_sensitive).expect_err(raw);
        assert_eq!(e.code, ErrorCode::InvalidField, "{raw:?}");
        assert_eq!(e.status(), 422);
        assert_eq!(e.field.as_deref(), Some("identifier"), "{raw:?}");
    }
}

#[test]
fn the_normalisation_table() {
    let table: &[(&str, &str)] = &[
        // ASCII case.
        ("victim@example.com", "victim@example.com"),
        ("Victim@Example.COM", "victim@example.com"),
        ("user_42", "user_42"),
        // Full-width forms (NFKC) and their case.
        ("Ｖｉｃｔｉｍ＠ＥＸＡＭＰＬＥ.com", "victim@example.com"),
        // Ligatures and other compatibility characters.
        ("ﬁnance@example.com", "finance@example.com"),
        ("ＦＩＮＡＮＣＥ", "finance"),
        ("\u{212A}elvin", "kelvin"), // KELVIN SIGN
        ("ſam", "sam"),              // long s folds to s
        ("①②", "12"),
        // German sharp s: full folding, not simple folding.
        ("STRASSE", "strasse"),
        ("straße", "strasse"),
        ("STRAẞE", "strasse"),
        // Greek final sigma folds to sigma.
        ("ΟΔΥΣΣΕΥΣ", "οδυσσευσ"),
        ("οδυσσευς", "οδυσσευσ"),
        // Folding U+0390 gives three characters NFKC composes back: stable.
        ("\u{390}", "\u{390}"),
        ("\u{3aa}\u{301}", "\u{390}"),
        ("\u{1fd3}", "\u{390}"),
        // Turkish: default (not Turkic) folding. `I` is `i`; dotted `İ` is
        // `i` + COMBINING DOT ABOVE; dotless `ı` has no folding.
        ("ISTANBUL", "istanbul"),
        ("İstanbul", "i\u{307}stanbul"),
        ("ıstanbul", "ıstanbul"),
        // Combining and precomposed accents are one spelling.
        ("Rene\u{301}@example.com", "rené@example.com"),
        ("René@example.com", "rené@example.com"),
        ("RENÉ@EXAMPLE.COM", "rené@example.com"),
        // Surrounding white space, Unicode's included.
        ("  victim@example.com\t", "victim@example.com"),
        ("\u{a0}victim@example.com\u{a0}", "victim@example.com"),
        ("\u{3000}victim\u{2003}", "victim"),
        // Inner NBSP is a space (NFKC), inner spaces stay.
        ("jane\u{a0}doe", "jane doe"),
        // Invisible characters are removed.
        ("vic\u{200b}tim@exam\u{ad}ple.com", "victim@example.com"),
        ("e\u{200b}\u{301}", "é"),
        // Phones with an international prefix become E.164.
        ("+1 (415) 555-0100", "+14155550100"),
        ("+1.415.555.0100", "+14155550100"),
        ("0044 20 7946 0000", "+442079460000"),
        ("+44 (0)20 7946 0000", "+442079460000"),
        ("  +33 1 23 45 67 89 ", "+33123456789"),
        ("＋４４ ２０ ７９４６ ００００", "+442079460000"),
        ("+14155550100", "+14155550100"),
        // Not phones: national numbers (no region to complete them), too
        // few or too many digits, a leading zero country code, letters.
        ("415-555-0100", "415-555-0100"),
        ("+1234567", "+1234567"),
        ("+1234567890123456", "+1234567890123456"),
        ("+0 415 555 0100", "+0 415 555 0100"),
        ("000 415 555 0100", "000 415 555 0100"),
        ("+1 415 555 0100 ext 7", "+1 415 555 0100 ext 7"),
        ("+14155550100@example.com", "+14155550100@example.com"),
    ];
    for &(raw, want) in table {
        assert_eq!(folded(raw), want, "{raw:?}");
        assert_eq!(folded(want), want, "{want:?} is not a fixed point");
    }
}

#[test]
fn case_sensitive_projects_keep_case_but_still_normalise() {
    assert_eq!(kept_case("Victim@Example.com"), "Victim@Example.com");
    assert_eq!(kept_case(" UserID-42 "), "UserID-42");
    assert_eq!(kept_case("Ｖｉｃｔｉｍ"), "Victim");
    assert_eq!(kept_case("ﬁ"), "fi");
    assert_eq!(kept_case("Rene\u{301}"), "René");
    assert_eq!(kept_case("\u{a0}STRAẞE\u{200b}"), "STRAẞE");
    assert_eq!(kept_case("+1 (415) 555-0100"), "+14155550100");
    assert_ne!(kept_case("Victim"), kept_case("victim"));
}

#[test]
fn refusals_are_the_identifier_field_shape() {
    refusal("");
    refusal("   ");
    refusal("\u{a0}\u{3000}");
    // Only invisible characters: nothing left.
    refusal("\u{200b}\u{feff}");
    refusal("vic\u{0}tim");
    refusal("vic\ttim");
    refusal("victim\u{85}x");
    refusal("vic\u{7f}tim");
    refusal(&"a".repeat(MAX_BYTES + 1));
    refusal(&"A".repeat(MAX_BYTES + 1));
    // Under the raw limit but over 256 bytes once NFKC expands it.
    refusal(&"\u{fdfa}".repeat(10));
    refusal(&"x".repeat(MAX_RAW_BYTES + 1));
    assert_eq!(folded(&"a".repeat(MAX_BYTES)).len(), MAX_BYTES);
    // Padding is trimmed before the length counts.
    assert_eq!(
        folded(&format!(" {} ", "a".repeat(MAX_BYTES))).len(),
        MAX_BYTES
    );
}

#[test]
fn the_precheck_refuses_only_what_needs_no_unicode_data() {
    precheck("Victim@Example.com").unwrap();
    precheck(" \u{200b} ").unwrap();
    precheck("\tvictim\n").unwrap();
    for bad in ["", " \n", "vic\u{1}tim", &"x".repeat(MAX_RAW_BYTES + 1)] {
        let e = precheck(bad).expect_err(bad);
        assert_eq!(e.field.as_deref(), Some("identifier"));
    }
}

/// Text with the characters that make normalisation interesting.
fn tricky() -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        Just("A"),
        Just("a"),
        Just("ß"),
        Just("ẞ"),
        Just("İ"),
        Just("ı"),
        Just("ﬁ"),
        Just("Ｖ"),
        Just("\u{301}"),
        Just("\u{345}"),
        Just("\u{307}"),
        Just("ᾼ"),
        Just("ΐ"),
        Just("\u{1e9e}"),
        Just("\u{fdfa}"),
        Just("´"),
        Just("¨"),
        Just("\u{200b}"),
        Just("\u{ad}"),
        Just("\u{a0}"),
        Just(" "),
        Just("+"),
        Just("00"),
        Just("(0)"),
        Just("4"),
        Just("0"),
        Just("-"),
        Just("@"),
        Just("ǅ"),
        Just("ﬀ"),
        Just("㍱"),
        Just("Ω"),
        Just("\u{2126}"),
    ];
    prop::collection::vec(pieces, 0..24).prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn normalising_is_idempotent(raw in prop_oneof![any::<String>(), tricky()], cs in any::<bool>()) {
        if let Ok(once) = normalise(&raw, cs) {
            let twice = normalise(&once, cs);
            prop_assert_eq!(twice.as_ref().ok(), Some(&once), "raw {:?}", raw);
        }
    }

    #[test]
    fn case_variants_meet(raw in "[A-Za-z0-9@._+-]{1,40}") {
        prop_assert_eq!(
            normalise(&raw.to_uppercase(), false).ok(),
            normalise(&raw.to_lowercase(), false).ok()
        );
    }
}
