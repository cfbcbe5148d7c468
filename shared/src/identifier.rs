//! One spelling per account identifier, so anti-ATO history cannot be
//! dodged by writing the same identifier another way.
//!
//! The anti-ATO routes key every history (past attempts, failure counts,
//! trusted devices) by the identifier the customer sends. Compared as raw
//! bytes, `Victim@Example.com`, `victim@example.com` and
//! `ｖｉｃｔｉｍ＠ｅｘａｍｐｌｅ.com` would be three accounts with three clean
//! histories, and an attacker would simply pick a spelling never seen before.
//! [`normalise`] maps all of them to one form before anything is read or
//! written.
//!
//! # The rule
//!
//! 1. **Refuse** control characters (after trimming, as before) and raw
//!    input over [`MAX_RAW_BYTES`] ([`precheck`], cheap enough to run before
//!    authorisation).
//! 2. **Unicode NFKC**, after removing `Default_Ignorable_Code_Point`
//!    characters (zero-width spaces and joiners, soft hyphens, variation
//!    selectors): invisible, so two identifiers differing only by them look
//!    the same to a person. Compatibility forms fold together: full-width
//!    `Ｖｉｃｔｉｍ` is `Victim`, the ligature `ﬁ` is `fi`, a combining
//!    `e` + U+0301 is the precomposed `é`, a no-break space is a space.
//! 3. **Full Unicode case folding** (`CaseFolding.txt` statuses C + F, the
//!    default, not Turkic), then NFKC again, repeated until stable (at most
//!    [`FOLD_ROUNDS`] rounds): Unicode's NFKC_Casefold in effect. `ß`, `ẞ`
//!    and `SS` all become `ss`; `ς` becomes `σ`. Turkish: `I` folds to `i`,
//!    `İ` (U+0130) to `i` + U+0307 (a different string from `i`), and
//!    dotless `ı` stays `ı`: locale-free folding cannot know the account is
//!    Turkish, so `İstanbul`, `Istanbul` and `ıstanbul` stay three
//!    identifiers. Skipped when the project set
//!    `ato.caseSensitiveIdentifiers` (its user ids are case-significant);
//!    every other step still applies.
//! 4. **Trim** Unicode white space at both ends (NFKC can turn a leading
//!    `´` into a space and a combining accent, so the trim comes last).
//! 5. **Phone numbers to E.164.** A result that is `+` or `00`, then ASCII
//!    digits and the usual separators (space, `-`, `.`, `(`, `)`), with 8 to
//!    15 digits in all, the first not `0`, becomes `+<digits>`:
//!    `+1 (415) 555-0100` is `+14155550100`, `0044 20 7946 0000` is
//!    `+442079460000`. A parenthesised trunk zero `(0)`, as in
//!    `+44 (0)20 7946 0000`, is dropped, as it is never dialled after a
//!    country code. A number without an international prefix
//!    (`415-555-0100`) is left to the rules above: which country it belongs
//!    to, and so its E.164 form, cannot be known without a region.
//! 6. **Refuse** an empty result or one over [`MAX_BYTES`] bytes.
//!
//! Every refusal is `422 invalid_field` on `identifier`. The rule is
//! idempotent (a normalised identifier normalises to itself), so a stored
//! identifier can be normalised again safely.
//!
//! Identifiers stored before this rule existed were stored trimmed only;
//! those written with capitals or compatibility forms start a fresh history
//! under their normalised form.

use std::borrow::Cow;

use icu_casemap::CaseMapper;
use icu_normalizer::ComposingNormalizerBorrowed;
use icu_properties::props::DefaultIgnorableCodePoint;
use icu_properties::CodePointSetData;

use crate::{ApiError, ErrorCode};

/// Longest normalised identifier, in bytes (an email, a username, a user id).
pub const MAX_BYTES: usize = 256;
/// Longest identifier accepted before normalisation, in bytes. NFKC can
/// expand a character (U+FDFA is 18 characters) and default ignorables
/// vanish, so the raw limit is looser than [`MAX_BYTES`]; it still bounds
/// the work done before the caller is authorised.
pub const MAX_RAW_BYTES: usize = 1024;
/// How many fold + NFKC rounds [`normalise`] runs at most. One is enough for
/// nearly every string; a second catches the few whose NFKC recomposition
/// yields something that folds again (Unicode's own caseless-match
/// definition folds twice for the same reason). A round that changes
/// nothing ends the loop, and so does one that comes back to its input
/// (U+0390 folds to three characters NFKC composes back into U+0390).
pub const FOLD_ROUNDS: usize = 3;

/// The one refusal every rule answers with, as the route did before.
fn invalid() -> ApiError {
    ApiError::with_message(
        ErrorCode::InvalidField,
        "identifier must be 1 to 256 printable characters",
    )
    .field("identifier")
}

/// The checks that need no Unicode data: not empty once trimmed, no control
/// characters, at most [`MAX_RAW_BYTES`]. The routes run it while parsing,
/// before authorisation; [`normalise`] runs it again.
pub fn precheck(raw: &str) -> Result<(), ApiError> {
    let trimmed = raw.trim();
    if raw.len() > MAX_RAW_BYTES || trimmed.is_empty() || trimmed.chars().any(char::is_control) {
        return Err(invalid());
    }
    Ok(())
}

/// Normalises an identifier by the rule in the module documentation.
///
/// `case_sensitive` is the project's `ato.caseSensitiveIdentifiers`: when
/// set, case is kept and everything else still applies.
///
/// Pure ASCII is common (emails, user ids) and needs no Unicode tables:
/// it is already NFKC, holds no default ignorables, and folds by ASCII
/// lower-casing, so it allocates only the result.
pub fn normalise(raw: &str, case_sensitive: bool) -> Result<String, ApiError> {
    precheck(raw)?;
    let trimmed = raw.trim();
    let out = if trimmed.is_ascii() {
        match e164(trimmed) {
            Some(phone) => phone,
            None if case_sensitive => trimmed.to_owned(),
            None => trimmed.to_ascii_lowercase(),
        }
    } else {
        let canonical = canonical(trimmed, case_sensitive);
        match e164(&canonical) {
            Some(phone) => phone,
            None => canonical,
        }
    };
    if out.is_empty() || out.len() > MAX_BYTES || out.chars().any(char::is_control) {
        return Err(invalid());
    }
    Ok(out)
}

/// Steps 2 to 4 of the rule on non-ASCII text.
fn canonical(s: &str, case_sensitive: bool) -> String {
    let mut s = nfkc_visible(s);
    if !case_sensitive {
        let fold = CaseMapper::new();
        for _ in 0..FOLD_ROUNDS {
            match fold.fold_string(&s) {
                Cow::Borrowed(_) => break,
                Cow::Owned(folded) => {
                    let next = nfkc_visible(&folded);
                    // NFKC recomposes some folded sequences into the
                    // character that was folded (U+0390): a fixed point.
                    if next == s {
                        break;
                    }
                    s = next;
                }
            }
        }
    }
    match s.trim() {
        t if t.len() == s.len() => s,
        t => t.to_owned(),
    }
}

/// NFKC of `s` without its default-ignorable characters. They are removed
/// first, because one between a letter and its combining mark would block
/// the composition; and again after, in case NFKC produced one.
fn nfkc_visible(s: &str) -> String {
    let nfkc = ComposingNormalizerBorrowed::new_nfkc();
    let visible = without_ignorables(s);
    let normal = nfkc.normalize(&visible);
    match without_ignorables(&normal) {
        Cow::Borrowed(_) => normal.into_owned(),
        // Removing a character can let its neighbours compose.
        Cow::Owned(again) => nfkc.normalize(&again).into_owned(),
    }
}

fn without_ignorables(s: &str) -> Cow<'_, str> {
    let ignorable = CodePointSetData::new::<DefaultIgnorableCodePoint>();
    if s.chars().any(|c| ignorable.contains(c)) {
        Cow::Owned(s.chars().filter(|&c| !ignorable.contains(c)).collect())
    } else {
        Cow::Borrowed(s)
    }
}

/// Separators people write inside phone numbers.
fn is_phone_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')')
}

/// `s` as E.164 (`+` and 8 to 15 digits) when it is written as an
/// international number (step 5 of the rule), else `None`.
fn e164(s: &str) -> Option<String> {
    let rest = s.strip_prefix('+').or_else(|| s.strip_prefix("00"))?;
    // A trunk zero in parentheses is never dialled after a country code.
    let digits = || {
        let mut chars = rest.char_indices();
        std::iter::from_fn(move || loop {
            let (i, c) = chars.next()?;
            if rest[i..].starts_with("(0)") {
                chars.nth(1);
                continue;
            }
            return Some(c);
        })
    };
    let mut count = 0usize;
    for c in digits() {
        if c.is_ascii_digit() {
            if count == 0 && c == '0' {
                return None;
            }
            count += 1;
        } else if !is_phone_separator(c) {
            return None;
        }
    }
    if !(8..=15).contains(&count) {
        return None;
    }
    let mut out = String::with_capacity(count + 1);
    out.push('+');
    out.extend(digits().filter(char::is_ascii_digit));
    Some(out)
}

#[cfg(test)]
mod tests;
