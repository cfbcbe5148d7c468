//! What a user-agent string says: browser, version, OS and form factor.
//!
//! Parsed with `woothee`, whose patterns are compiled into the crate (no
//! rule file is read at run time). Nothing is cached here: parsing is a few
//! microseconds and the caller may cache by UA string if profiling says so.
//!
//! Browser and OS names are interned to woothee's closed set of names, so
//! they are `&'static str`: no allocation per request, and the analytics
//! keys built from them (browser, OS) have bounded cardinality whatever a
//! client puts in its UA.

use std::collections::HashSet;
use std::sync::LazyLock;

use serde::Serialize;
use woothee::parser::Parser;

/// Form factor of the client, as the session-verify answer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// A desktop or laptop browser.
    Desktop,
    /// A phone.
    Mobile,
    /// A tablet (iPad UA, or Android without the `Mobile` token).
    Tablet,
    /// A crawler, an HTTP library or a browser naming its automation.
    Bot,
    /// Nothing recognisable (consoles, TVs, empty or garbage UAs).
    Unknown,
}

impl Platform {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Desktop => "desktop",
            Platform::Mobile => "mobile",
            Platform::Tablet => "tablet",
            Platform::Bot => "bot",
            Platform::Unknown => "unknown",
        }
    }
}

/// Operating-system family, coarse enough that `navigator.platform` and the
/// UA must agree on it for any real browser. Apple is one family because
/// iPadOS in desktop mode sends a Mac UA; Android, ChromeOS and the BSDs
/// share Unix because their `navigator.platform` reads `Linux …` or alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OsFamily {
    /// Desktop Windows.
    Windows,
    /// macOS, iOS, iPadOS.
    Apple,
    /// Linux, Android, ChromeOS, BSD.
    Unix,
    /// Unknown, or too rare to judge (Windows Phone, consoles…).
    Unknown,
}

impl OsFamily {
    /// The family a `navigator.platform` value names (`Win32`, `MacIntel`,
    /// `iPhone`, `Linux armv8l`, `X11`, `FreeBSD amd64`…).
    pub fn of_navigator_platform(platform: &str) -> Self {
        let p = platform.trim();
        if p.starts_with("Win") {
            OsFamily::Windows
        } else if p.starts_with("Mac")
            || p.starts_with("iPhone")
            || p.starts_with("iPad")
            || p.starts_with("iPod")
        {
            OsFamily::Apple
        } else if [
            "Linux", "X11", "Android", "FreeBSD", "OpenBSD", "NetBSD", "CrOS",
        ]
        .iter()
        .any(|prefix| p.starts_with(prefix))
        {
            OsFamily::Unix
        } else {
            OsFamily::Unknown
        }
    }

    /// The family of a woothee OS name (`Windows 10`, `Mac OSX`, `iPhone`…).
    fn of_ua_os(os: &str) -> Self {
        match os {
            "Windows Phone OS" | "Windows CE" => OsFamily::Unknown,
            _ if os.starts_with("Windows") => OsFamily::Windows,
            "Mac OSX" | "Mac OS Classic" | "iPhone" | "iPad" | "iPod" | "iOS" => OsFamily::Apple,
            "Linux" | "Android" | "ChromeOS" | "BSD" | "Firefox OS" => OsFamily::Unix,
            _ => OsFamily::Unknown,
        }
    }
}

/// What one user-agent string says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UaInfo {
    /// Browser name (`Chrome`, `Safari`, `Firefox`, `Edge`…), `other` for a
    /// name outside woothee's set, `unknown` when none was found.
    pub browser: &'static str,
    /// Browser version, digits and dots only (`124.0.0.0`), empty when
    /// unknown; sanitised because it comes straight from the client.
    pub browser_version: String,
    /// OS name (`Windows 10`, `Mac OSX`, `iPhone`, `Android`, `Linux`…).
    pub os: &'static str,
    /// Form factor.
    pub platform: Platform,
    /// The UA names an automation tool or HTTP library, is a crawler, or is
    /// empty (every real browser sends one). Read by the bot score.
    pub automation: bool,
}

/// UA fragments of automation tools and HTTP libraries, lowercase. Each is
/// a tool announcing itself: no real browser sends them, so matching one is
/// a strong signal, never a guess.
const AUTOMATION_TOKENS: &[&str] = &[
    "headless", // HeadlessChrome, Firefox/… headless builds
    "phantomjs",
    "slimerjs",
    "puppeteer",
    "playwright",
    "selenium",
    "webdriver",
    "cypress",
    "jsdom",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "python-httpx",
    "aiohttp",
    "go-http-client",
    "okhttp",
    "node-fetch",
    "undici",
    "axios/",
    "apache-httpclient",
    "java/",
    "libwww-perl",
    "scrapy",
    "postmanruntime",
];

/// Every name woothee can answer, so a parsed name is interned to a
/// `&'static str` (woothee's own result borrows from the UA string).
static KNOWN_NAMES: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    woothee::dataset::DATASET
        .values()
        .flat_map(|r| [r.name, r.os])
        .filter(|s| !s.is_empty())
        .collect()
});

const UNKNOWN: &str = "UNKNOWN";

fn intern(name: &str) -> &'static str {
    if name.is_empty() || name == UNKNOWN {
        return "unknown";
    }
    KNOWN_NAMES.get(name).copied().unwrap_or("other")
}

/// ASCII case-insensitive substring search without allocating.
fn contains_ignore_case(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.len() <= h.len() && h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Keeps the leading run of digits and dots, at most 32 bytes: enough for
/// `124.0.6367.82`, nothing a client could smuggle into a log or a key.
fn sanitise_version(v: &str) -> String {
    let end = v
        .bytes()
        .take(32)
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    v[..end].to_owned()
}

impl UaInfo {
    /// Parses a user-agent string. Never fails: an unparseable UA is an
    /// `unknown` platform, which is itself information for the bot score.
    pub fn parse(ua: &str) -> Self {
        let automation_token = AUTOMATION_TOKENS
            .iter()
            .any(|t| contains_ignore_case(ua, t));
        let parsed = Parser::new().parse(ua).unwrap_or_default();
        let os = intern(parsed.os);
        let is_crawler = parsed.category == "crawler" || parsed.name == "HTTP Library";
        let automation = ua.trim().is_empty() || automation_token || is_crawler;
        let platform = if automation {
            Platform::Bot
        } else {
            match parsed.category {
                "pc" => Platform::Desktop,
                "smartphone" if os == "iPad" => Platform::Tablet,
                // Android tablets drop the `Mobile` token (Google's guidance).
                "smartphone" if os == "Android" && !ua.contains("Mobile") => Platform::Tablet,
                "smartphone" | "mobilephone" => Platform::Mobile,
                _ => Platform::Unknown,
            }
        };
        let version = if parsed.version == UNKNOWN {
            ""
        } else {
            parsed.version
        };
        UaInfo {
            browser: intern(parsed.name),
            browser_version: sanitise_version(version),
            os,
            platform,
            automation,
        }
    }

    /// The device facts a session stores and session-verify answers with;
    /// `region` comes from the IP, not the UA.
    pub fn device_info(&self, region: Option<String>) -> qyzar_store::DeviceInfo {
        qyzar_store::DeviceInfo {
            browser: self.browser.to_owned(),
            os: self.os.to_owned(),
            platform: self.platform.as_str().to_owned(),
            region,
        }
    }

    /// The OS family the UA claims, to check against `navigator.platform`.
    pub fn os_family(&self) -> OsFamily {
        OsFamily::of_ua_os(self.os)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::fixtures::*;

    fn check(ua: &str, browser: &str, version: &str, os: &str, platform: Platform) {
        let info = UaInfo::parse(ua);
        assert_eq!(
            (
                info.browser,
                info.browser_version.as_str(),
                info.os,
                info.platform
            ),
            (browser, version, os, platform),
            "{ua}"
        );
    }

    #[test]
    fn real_browsers_parse() {
        check(
            UA_CHROME_WINDOWS,
            "Chrome",
            "124.0.0.0",
            "Windows 10",
            Platform::Desktop,
        );
        check(UA_SAFARI_IOS, "Safari", "17.4", "iPhone", Platform::Mobile);
        check(
            UA_FIREFOX_LINUX,
            "Firefox",
            "125.0",
            "Linux",
            Platform::Desktop,
        );
        check(
            UA_SAFARI_MAC,
            "Safari",
            "17.4",
            "Mac OSX",
            Platform::Desktop,
        );
        check(UA_SAFARI_IPAD, "Safari", "17.4", "iPad", Platform::Tablet);
        check(
            UA_CHROME_ANDROID,
            "Chrome",
            "124.0.6367.82",
            "Android",
            Platform::Mobile,
        );
        check(
            UA_CHROME_ANDROID_TABLET,
            "Chrome",
            "124.0.0.0",
            "Android",
            Platform::Tablet,
        );
        for ua in [
            UA_CHROME_WINDOWS,
            UA_SAFARI_IOS,
            UA_FIREFOX_LINUX,
            UA_SAFARI_IPAD,
        ] {
            assert!(!UaInfo::parse(ua).automation, "{ua}");
        }
    }

    #[test]
    fn automation_and_libraries_are_bots() {
        for ua in [
            UA_HEADLESS_CHROME,
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Go-http-client/1.1",
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (Unknown; Linux x86_64) AppleWebKit/538.1 (KHTML, like Gecko) PhantomJS/2.1.1 Safari/538.1",
            "",
            "   ",
        ] {
            let info = UaInfo::parse(ua);
            assert!(info.automation, "{ua:?}");
            assert_eq!(info.platform, Platform::Bot, "{ua:?}");
        }
        // HeadlessChrome still reads as Chrome on Linux: the name is
        // woothee's, the bot verdict is ours.
        let h = UaInfo::parse(UA_HEADLESS_CHROME);
        assert_eq!((h.browser, h.os), ("Chrome", "Linux"));
    }

    #[test]
    fn garbage_is_unknown_and_versions_are_sanitised() {
        let info = UaInfo::parse("Mozilla/5.0 (Nonsense)");
        assert_eq!(
            (info.browser, info.os, info.platform),
            ("unknown", "unknown", Platform::Unknown)
        );
        assert_eq!(sanitise_version("1.2.3<script>"), "1.2.3");
        assert_eq!(sanitise_version(&"9".repeat(100)).len(), 32);
        assert_eq!(sanitise_version("curl"), "");
        assert_eq!(UaInfo::parse("curl/8.5.0").browser_version, "");
    }

    #[test]
    fn os_families_agree_for_real_pairs() {
        let fam = |ua| UaInfo::parse(ua).os_family();
        assert_eq!(
            fam(UA_CHROME_WINDOWS),
            OsFamily::of_navigator_platform("Win32")
        );
        assert_eq!(
            fam(UA_SAFARI_IOS),
            OsFamily::of_navigator_platform("iPhone")
        );
        assert_eq!(
            fam(UA_SAFARI_IPAD),
            OsFamily::of_navigator_platform("MacIntel"),
            "iPad desktop mode"
        );
        assert_eq!(
            fam(UA_CHROME_ANDROID),
            OsFamily::of_navigator_platform("Linux armv81")
        );
        assert_eq!(
            fam(UA_FIREFOX_LINUX),
            OsFamily::of_navigator_platform("Linux x86_64")
        );
        assert_eq!(OsFamily::of_navigator_platform(""), OsFamily::Unknown);
        assert_eq!(
            OsFamily::of_navigator_platform("PlayStation 5"),
            OsFamily::Unknown
        );
        assert_eq!(
            platform_str_round_trip(),
            ["desktop", "mobile", "tablet", "bot", "unknown"]
        );
    }

    #[test]
    fn device_info_carries_the_parsed_names() {
        let d = UaInfo::parse(UA_SAFARI_IOS).device_info(Some("FR".into()));
        assert_eq!(
            (d.browser.as_str(), d.os.as_str(), d.platform.as_str()),
            ("Safari", "iPhone", "mobile")
        );
        assert_eq!(d.region.as_deref(), Some("FR"));
    }

    fn platform_str_round_trip() -> [&'static str; 5] {
        let all = [
            Platform::Desktop,
            Platform::Mobile,
            Platform::Tablet,
            Platform::Bot,
            Platform::Unknown,
        ];
        for p in all {
            assert_eq!(serde_json::to_value(p).unwrap(), p.as_str());
        }
        all.map(Platform::as_str)
    }
}
