//! Realistic entropy of real browsers, shared by the decision tests.

use super::entropy::{Entropy, Screen};

pub(super) const UA_CHROME_WINDOWS: &str =
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";
pub(super) const UA_SAFARI_IOS: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) \
     AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
pub(super) const UA_FIREFOX_LINUX: &str =
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0";
pub(super) const UA_HEADLESS_CHROME: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 \
     (KHTML, like Gecko) HeadlessChrome/124.0.0.0 Safari/537.36";
pub(super) const UA_SAFARI_MAC: &str =
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 \
     (KHTML, like Gecko) Version/17.4 Safari/605.1.15";
pub(super) const UA_SAFARI_IPAD: &str =
    "Mozilla/5.0 (iPad; CPU OS 17_4 like Mac OS X) AppleWebKit/605.1.15 \
     (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1";
pub(super) const UA_CHROME_ANDROID: &str =
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36";
pub(super) const UA_CHROME_ANDROID_TABLET: &str =
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

fn strings(list: &[&str]) -> Option<Vec<String>> {
    Some(list.iter().map(|s| (*s).to_owned()).collect())
}

fn screen(width: u32, height: u32, color_depth: u32, pixel_ratio: f64) -> Option<Screen> {
    Some(Screen {
        width: Some(width),
        height: Some(height),
        color_depth: Some(color_depth),
        pixel_ratio: Some(pixel_ratio),
        ..Screen::default()
    })
}

/// Chrome 124 on a Windows 10 desktop with an NVIDIA card.
pub(super) fn chrome_windows() -> Entropy {
    Entropy {
        user_agent: Some(UA_CHROME_WINDOWS.into()),
        languages: strings(&["en-US", "en", "de"]),
        timezone: Some("Europe/Berlin".into()),
        screen: screen(1920, 1080, 24, 1.0),
        hardware_concurrency: Some(16),
        device_memory: Some(8.0),
        platform: Some("Win32".into()),
        canvas_hash: Some("c7a1e0b3d9f2".into()),
        webgl_vendor: Some("Google Inc. (NVIDIA)".into()),
        webgl_renderer: Some(
            "ANGLE (NVIDIA, NVIDIA GeForce RTX 3060 (0x00002504) Direct3D11 vs_5_0 ps_5_0, D3D11)"
                .into(),
        ),
        audio_hash: Some("124.04347527516074".into()),
        fonts: strings(&[
            "Arial", "Calibri", "Cambria", "Consolas", "Segoe UI", "Tahoma",
        ]),
        touch_points: Some(0),
        webdriver: Some(false),
        cookies_enabled: Some(true),
        ..Entropy::default()
    }
}

/// Safari 17 on an iPhone.
pub(super) fn safari_ios() -> Entropy {
    Entropy {
        user_agent: Some(UA_SAFARI_IOS.into()),
        languages: strings(&["fr-FR"]),
        timezone: Some("Europe/Paris".into()),
        screen: screen(390, 844, 24, 3.0),
        hardware_concurrency: Some(4),
        device_memory: None,
        platform: Some("iPhone".into()),
        canvas_hash: Some("9f00aa12bc34".into()),
        webgl_vendor: Some("Apple Inc.".into()),
        webgl_renderer: Some("Apple GPU".into()),
        audio_hash: Some("35.10893253237009".into()),
        fonts: strings(&["Helvetica", "Helvetica Neue", "Menlo"]),
        touch_points: Some(5),
        webdriver: Some(false),
        cookies_enabled: Some(true),
        ..Entropy::default()
    }
}

/// Firefox 125 on a Linux laptop with Intel graphics.
pub(super) fn firefox_linux() -> Entropy {
    Entropy {
        user_agent: Some(UA_FIREFOX_LINUX.into()),
        languages: strings(&["en-GB", "en"]),
        timezone: Some("Europe/London".into()),
        screen: screen(2560, 1440, 24, 1.25),
        hardware_concurrency: Some(8),
        device_memory: None,
        platform: Some("Linux x86_64".into()),
        canvas_hash: Some("0badc0ffee11".into()),
        webgl_vendor: Some("Intel".into()),
        webgl_renderer: Some("Mesa Intel(R) UHD Graphics 620 (KBL GT2)".into()),
        audio_hash: Some("35.749968223550916".into()),
        fonts: strings(&["DejaVu Sans", "Liberation Serif", "Noto Sans", "Ubuntu"]),
        touch_points: Some(0),
        webdriver: Some(false),
        cookies_enabled: Some(true),
        ..Entropy::default()
    }
}

/// Puppeteer's default headless Chrome: webdriver set, no languages, the
/// 800×600 default window, software rendering.
pub(super) fn headless_chrome() -> Entropy {
    Entropy {
        user_agent: Some(UA_HEADLESS_CHROME.into()),
        languages: Some(Vec::new()),
        timezone: Some("UTC".into()),
        screen: screen(800, 600, 24, 1.0),
        hardware_concurrency: Some(2),
        device_memory: Some(8.0),
        platform: Some("Linux x86_64".into()),
        canvas_hash: Some("5eed5eed5eed".into()),
        webgl_vendor: Some("Google Inc. (Google)".into()),
        webgl_renderer: Some(
            "ANGLE (Google, Vulkan 1.3.0 (SwiftShader Device (Subzero)), SwiftShader driver)"
                .into(),
        ),
        audio_hash: Some("124.0434806260746".into()),
        fonts: strings(&["DejaVu Sans"]),
        touch_points: Some(0),
        webdriver: Some(true),
        cookies_enabled: Some(true),
        ..Entropy::default()
    }
}

/// Every realistic fixture, named, for tests that sweep them all.
pub(super) fn all() -> [(&'static str, Entropy); 4] {
    [
        ("chrome_windows", chrome_windows()),
        ("safari_ios", safari_ios()),
        ("firefox_linux", firefox_linux()),
        ("headless_chrome", headless_chrome()),
    ]
}
