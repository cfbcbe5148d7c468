//! The bot score of one connect: which automation signals the entropy shows.
//!
//! Only strong signals are scored, because a false positive challenges a
//! real customer: each is something a real, unmodified browser does not do.
//! Weak or explainable oddities (a touch screen on a laptop, a Mac UA with
//! touch on an iPad in desktop mode, an unusual screen size, a missing
//! optional field) are not signals.
//!
//! | signal | weight | fires when |
//! |---|---|---|
//! | `webdriver` | 90 | `navigator.webdriver` is true: the browser says it is automated |
//! | `headless_ua` | 90 | the UA names an automation tool or HTTP library, is a crawler, or is empty |
//! | `platform_mismatch` | 45 | `navigator.platform` and the UA name different OS families (`Win32` with a Mac UA) |
//! | `impossible_screen` | 45 | a zero or over-16384 dimension, a colour depth no display has, or a zero pixel ratio |
//! | `touch_mismatch` | 30 | a phone or tablet UA with `maxTouchPoints` 0 (desktop automation posing as mobile) |
//! | `no_languages` | 20 | `navigator.languages` absent or empty (old headless Chrome; hand-built requests) |
//!
//! The score is the capped sum. [`BOT_SCORE`] is 80: a self-declared
//! automation signal alone reaches it, and so do two independent
//! inconsistencies (platform and screen), but no single inconsistency does,
//! since a UA-switching extension or an odd driver explains one.

use serde::Serialize;

use super::entropy::Entropy;
use super::ua::{OsFamily, Platform, UaInfo};

/// Score at or above which a connect is flagged `bot`.
pub const BOT_SCORE: u8 = 80;

/// The weights of the module table; see there for why.
const WEBDRIVER: u8 = 90;
const HEADLESS_UA: u8 = 90;
const PLATFORM_MISMATCH: u8 = 45;
const IMPOSSIBLE_SCREEN: u8 = 45;
const TOUCH_MISMATCH: u8 = 30;
const NO_LANGUAGES: u8 = 20;

/// Largest plausible screen side in CSS pixels (16K is 15360 wide).
const MAX_SCREEN_SIDE: u32 = 16_384;
/// Colour depths real displays and browsers report (`screen.colorDepth`).
const COLOR_DEPTHS: [u32; 9] = [1, 4, 8, 15, 16, 24, 30, 32, 48];

/// The bot verdict on one connect, as the session answers carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Risk {
    /// 0–100, the capped sum of the weights of the signals that fired.
    pub score: u8,
    /// `score >= BOT_SCORE`.
    pub bot: bool,
    /// Names of the signals that fired, in the module table's order.
    pub signals: Vec<&'static str>,
}

impl From<&Risk> for qyzar_store::Risk {
    /// The stored form keeps owned names so old rows stay readable after a
    /// signal is renamed here.
    fn from(r: &Risk) -> Self {
        Self {
            score: r.score,
            bot: r.bot,
            signals: r.signals.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// Scores the entropy of one connect. `ua` should be parsed from
/// `entropy.userAgent` (what the page's JavaScript saw), falling back to
/// the request's `User-Agent` header when the entropy has none.
/// Deterministic: the same input always gives the same answer.
pub fn score_bot(entropy: &Entropy, ua: &UaInfo) -> Risk {
    let checks = [
        ("webdriver", WEBDRIVER, entropy.webdriver == Some(true)),
        ("headless_ua", HEADLESS_UA, ua.automation),
        (
            "platform_mismatch",
            PLATFORM_MISMATCH,
            platform_mismatch(entropy, ua),
        ),
        (
            "impossible_screen",
            IMPOSSIBLE_SCREEN,
            impossible_screen(entropy),
        ),
        (
            "touch_mismatch",
            TOUCH_MISMATCH,
            touch_mismatch(entropy, ua),
        ),
        ("no_languages", NO_LANGUAGES, no_languages(entropy)),
    ];
    let mut sum: u16 = 0;
    let mut signals = Vec::new();
    for (name, weight, on) in checks {
        if on {
            sum += u16::from(weight);
            signals.push(name);
        }
    }
    let score = u8::try_from(sum.min(100)).unwrap_or(100);
    Risk {
        score,
        bot: score >= BOT_SCORE,
        signals,
    }
}

/// Both sides must name a known family: an unknown or empty platform, or a
/// UA OS woothee could not read, proves nothing.
fn platform_mismatch(entropy: &Entropy, ua: &UaInfo) -> bool {
    let Some(platform) = entropy.platform.as_deref() else {
        return false;
    };
    let claimed = OsFamily::of_navigator_platform(platform);
    let from_ua = ua.os_family();
    claimed != OsFamily::Unknown && from_ua != OsFamily::Unknown && claimed != from_ua
}

fn impossible_screen(entropy: &Entropy) -> bool {
    let Some(s) = &entropy.screen else {
        return false;
    };
    let bad_side = |v: Option<u32>| v.is_some_and(|n| n == 0 || n > MAX_SCREEN_SIDE);
    bad_side(s.width)
        || bad_side(s.height)
        || s.color_depth.is_some_and(|d| !COLOR_DEPTHS.contains(&d))
        || s.pixel_ratio.is_some_and(|r| r <= 0.0)
}

/// Every phone and tablet reports at least one touch point; a desktop with
/// touch is common (convertibles, iPad desktop mode) and never flagged.
fn touch_mismatch(entropy: &Entropy, ua: &UaInfo) -> bool {
    matches!(ua.platform, Platform::Mobile | Platform::Tablet) && entropy.touch_points == Some(0)
}

/// Every browser exposes at least one language; the script always sends
/// the list, so absence means the body was not built by a browser.
fn no_languages(entropy: &Entropy) -> bool {
    entropy
        .languages
        .as_ref()
        .is_none_or(|l| l.iter().all(|s| s.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::entropy::Screen;
    use crate::decide::fixtures::{self, *};

    fn risk(e: &Entropy) -> Risk {
        let ua = UaInfo::parse(e.user_agent.as_deref().unwrap_or(""));
        score_bot(e, &ua)
    }

    #[test]
    fn real_browsers_score_zero() {
        for e in [
            fixtures::chrome_windows(),
            fixtures::safari_ios(),
            fixtures::firefox_linux(),
        ] {
            assert_eq!(
                risk(&e),
                Risk {
                    score: 0,
                    bot: false,
                    signals: vec![]
                },
                "{:?}",
                e.user_agent
            );
        }
    }

    #[test]
    fn headless_chrome_is_a_bot_with_every_declared_signal() {
        let r = risk(&fixtures::headless_chrome());
        assert_eq!(r.signals, ["webdriver", "headless_ua", "no_languages"]);
        assert_eq!(r.score, 100);
        assert!(r.bot);
    }

    #[test]
    fn webdriver_on_and_off() {
        let mut e = fixtures::chrome_windows();
        e.webdriver = Some(true);
        assert_eq!(
            risk(&e),
            Risk {
                score: 90,
                bot: true,
                signals: vec!["webdriver"]
            }
        );
        e.webdriver = None;
        assert_eq!(risk(&e).score, 0);
    }

    #[test]
    fn headless_ua_on_and_off() {
        let mut e = fixtures::firefox_linux();
        for ua in [
            UA_HEADLESS_CHROME,
            "curl/8.5.0",
            "python-requests/2.31.0",
            "",
        ] {
            e.user_agent = Some(ua.into());
            let r = risk(&e);
            assert_eq!(r.signals, ["headless_ua"], "{ua:?}");
            assert!(r.bot, "{ua:?}");
        }
        e.user_agent = Some(UA_FIREFOX_LINUX.into());
        assert!(risk(&e).signals.is_empty());
    }

    #[test]
    fn platform_mismatch_on_and_off() {
        let mut e = fixtures::chrome_windows();
        e.user_agent = Some(UA_SAFARI_MAC.into());
        assert_eq!(
            risk(&e),
            Risk {
                score: 45,
                bot: false,
                signals: vec!["platform_mismatch"]
            }
        );
        e.platform = Some("MacIntel".into());
        assert!(risk(&e).signals.is_empty());
        // iPad in desktop mode: Mac UA, MacIntel, touch: all consistent.
        e.touch_points = Some(5);
        assert!(risk(&e).signals.is_empty());
        // Android reports `Linux armv81`; a blank platform proves nothing.
        let mut a = fixtures::safari_ios();
        a.user_agent = Some(UA_CHROME_ANDROID.into());
        a.platform = Some("Linux armv81".into());
        assert!(risk(&a).signals.is_empty());
        a.platform = Some(String::new());
        assert!(risk(&a).signals.is_empty());
        a.platform = Some("Win32".into());
        assert_eq!(risk(&a).signals, ["platform_mismatch"]);
    }

    #[test]
    fn impossible_screen_on_and_off() {
        let with = |s: Screen| Entropy {
            screen: Some(s),
            ..fixtures::firefox_linux()
        };
        let dims = |w, h, d| Screen {
            width: Some(w),
            height: Some(h),
            color_depth: Some(d),
            ..Screen::default()
        };
        for bad in [
            dims(0, 1080, 24),
            dims(1920, 0, 24),
            dims(16_385, 1080, 24),
            dims(1920, 1080, 23),
        ] {
            assert_eq!(
                risk(&with(bad.clone())).signals,
                ["impossible_screen"],
                "{bad:?}"
            );
        }
        let zero_ratio = Screen {
            pixel_ratio: Some(0.0),
            ..dims(1920, 1080, 24)
        };
        assert_eq!(risk(&with(zero_ratio)).signals, ["impossible_screen"]);
        for good in [
            dims(16_384, 4_320, 30),
            dims(800, 600, 24),
            dims(1, 1, 1),
            dims(3840, 2160, 48),
        ] {
            assert!(risk(&with(good.clone())).signals.is_empty(), "{good:?}");
        }
        assert!(risk(&Entropy {
            screen: None,
            ..fixtures::firefox_linux()
        })
        .signals
        .is_empty());
    }

    #[test]
    fn touch_mismatch_on_and_off() {
        let mut e = fixtures::safari_ios();
        e.touch_points = Some(0);
        assert_eq!(
            risk(&e),
            Risk {
                score: 30,
                bot: false,
                signals: vec!["touch_mismatch"]
            }
        );
        e.touch_points = None;
        assert!(risk(&e).signals.is_empty(), "unknown is not zero");
        e.touch_points = Some(5);
        assert!(risk(&e).signals.is_empty());
        let mut tablet = e;
        tablet.user_agent = Some(UA_SAFARI_IPAD.into());
        tablet.platform = Some("iPad".into());
        tablet.touch_points = Some(0);
        assert_eq!(risk(&tablet).signals, ["touch_mismatch"]);
        // A touch-screen laptop, and a desktop without touch, are fine.
        let mut d = fixtures::chrome_windows();
        d.touch_points = Some(10);
        assert!(risk(&d).signals.is_empty());
        d.touch_points = Some(0);
        assert!(risk(&d).signals.is_empty());
    }

    #[test]
    fn no_languages_on_and_off() {
        let mut e = fixtures::chrome_windows();
        for langs in [None, Some(vec![]), Some(vec![String::new()])] {
            e.languages = langs;
            assert_eq!(
                risk(&e),
                Risk {
                    score: 20,
                    bot: false,
                    signals: vec!["no_languages"]
                }
            );
        }
        e.languages = Some(vec!["en".into()]);
        assert!(risk(&e).signals.is_empty());
    }

    #[test]
    fn two_inconsistencies_make_a_bot_one_does_not() {
        let mut e = fixtures::chrome_windows();
        e.user_agent = Some(UA_SAFARI_IOS.into()); // Win32 + iPhone UA
        e.touch_points = Some(0);
        let r = risk(&e);
        assert_eq!(r.signals, ["platform_mismatch", "touch_mismatch"]);
        assert_eq!((r.score, r.bot), (75, false));
        e.languages = None;
        let r = risk(&e);
        assert_eq!((r.score, r.bot), (95, true));
        let mut s = fixtures::chrome_windows();
        s.platform = Some("MacIntel".into());
        s.screen.as_mut().unwrap().width = Some(0);
        let r = risk(&s);
        assert_eq!((r.score, r.bot), (90, true));
        assert_eq!(risk(&s), r, "deterministic");
    }

    #[test]
    fn risk_serialises_and_stores_as_the_answers_expect() {
        let r = risk(&fixtures::headless_chrome());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"score": 100, "bot": true,
            "signals": ["webdriver", "headless_ua", "no_languages"]})
        );
        let stored = qyzar_store::Risk::from(&r);
        assert_eq!(
            (stored.score, stored.bot, stored.signals.len()),
            (100, true, 3)
        );
    }
}
