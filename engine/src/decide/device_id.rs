//! The stable device id, and which stable fields drifted between two
//! entropies.
//!
//! The id is a hash of the signals that describe the *machine and browser
//! build*, not the *browsing moment*, so the same browser gets the same
//! `dev_…` id across sessions without any lookup:
//!
//! | field | in the id | why |
//! |---|---|---|
//! | `platform` | yes | fixed per OS build |
//! | `hardwareConcurrency`, `deviceMemory` | yes | hardware |
//! | `screen.width`/`height` | yes, as (long side, short side) | the monitor; rotating a phone swaps them and must not change the id |
//! | `screen.colorDepth` | yes | the display pipeline |
//! | `canvasHash`, `webglVendor`, `webglRenderer`, `audioHash` | yes | GPU, driver, audio stack: the most identifying signals |
//! | `fonts` | yes, sorted and deduplicated | installed fonts; the probe order is an artefact |
//! | `timezone` | yes | rarely changes; when it does, a new id is a fair answer |
//! | `userAgent` | **no** | its version moves with every browser update |
//! | `languages` | **no** | users reorder them; browsers append on their own |
//! | `screen.pixelRatio` | **no** | moves with page zoom |
//! | `touchPoints`, `webdriver`, `cookiesEnabled` | **no** | settings and modes, not the device; judged by the bot score |
//!
//! Both [`device_id`] and [`diff_keys`] read one canonical `Stable` view,
//! so "same id" and "no stable key differs" can never disagree.

use std::collections::BTreeMap;

use qyzar_shared::ids::DeviceId;
use qyzar_store::MAX_COMPONENT_BYTES;
use ring::digest;

use super::entropy::Entropy;

/// Domain separation for the hash: a later change of the stable subset
/// bumps this, so old and new ids can never collide by construction.
const ID_DOMAIN: &[u8] = b"qyzar.device-id.v1\0";

/// The stable subset of one entropy, canonicalised. Borrowed, so building
/// it costs one small vector for the sorted fonts.
#[derive(Debug, PartialEq)]
struct Stable<'a> {
    platform: Option<&'a str>,
    hardware_concurrency: Option<u32>,
    /// Thousandths of a GiB: a float's bits would make `8` and `8.0000001`
    /// distinct ids, and browsers only ever report a few rounded values.
    device_memory_milli: Option<u64>,
    /// (long side, short side) when both are known, else (width, height).
    screen_long: Option<u32>,
    screen_short: Option<u32>,
    color_depth: Option<u32>,
    canvas_hash: Option<&'a str>,
    webgl_vendor: Option<&'a str>,
    webgl_renderer: Option<&'a str>,
    audio_hash: Option<&'a str>,
    fonts: Option<Vec<&'a str>>,
    timezone: Option<&'a str>,
}

impl<'a> Stable<'a> {
    fn of(e: &'a Entropy) -> Self {
        let screen = e.screen.as_ref();
        let width = screen.and_then(|s| s.width);
        let height = screen.and_then(|s| s.height);
        let (screen_long, screen_short) = match (width, height) {
            (Some(w), Some(h)) => (Some(w.max(h)), Some(w.min(h))),
            other => other,
        };
        let fonts = e.fonts.as_ref().map(|fonts| {
            let mut sorted: Vec<&str> = fonts.iter().map(String::as_str).collect();
            sorted.sort_unstable();
            sorted.dedup();
            sorted
        });
        Self {
            platform: e.platform.as_deref(),
            hardware_concurrency: e.hardware_concurrency,
            // Saturating cast; validation keeps the value in 0..=4096 anyway.
            device_memory_milli: e.device_memory.map(|m| (m * 1000.0).round() as u64),
            screen_long,
            screen_short,
            color_depth: screen.and_then(|s| s.color_depth),
            canvas_hash: e.canvas_hash.as_deref(),
            webgl_vendor: e.webgl_vendor.as_deref(),
            webgl_renderer: e.webgl_renderer.as_deref(),
            audio_hash: e.audio_hash.as_deref(),
            fonts,
            timezone: e.timezone.as_deref(),
        }
    }

    /// Feeds the canonical encoding into `ctx`: fields in a fixed order,
    /// each as a one-byte tag and a presence byte, then its payload: numbers
    /// as 8 big-endian bytes, strings length-prefixed, lists count-prefixed.
    /// Injective, so two different views never encode alike (an absent
    /// field, an empty string and a moved boundary all differ).
    fn encode(&self, ctx: &mut digest::Context) {
        ctx.update(ID_DOMAIN);
        put_str(ctx, 1, self.platform);
        put_num(ctx, 2, self.hardware_concurrency.map(u64::from));
        put_num(ctx, 3, self.device_memory_milli);
        put_num(ctx, 4, self.screen_long.map(u64::from));
        put_num(ctx, 5, self.screen_short.map(u64::from));
        put_num(ctx, 6, self.color_depth.map(u64::from));
        put_str(ctx, 7, self.canvas_hash);
        put_str(ctx, 8, self.webgl_vendor);
        put_str(ctx, 9, self.webgl_renderer);
        put_str(ctx, 10, self.audio_hash);
        match &self.fonts {
            None => ctx.update(&[11, 0]),
            Some(fonts) => {
                ctx.update(&[11, 1]);
                ctx.update(&len32(fonts.len()));
                for font in fonts {
                    ctx.update(&len32(font.len()));
                    ctx.update(font.as_bytes());
                }
            }
        }
        put_str(ctx, 12, self.timezone);
    }
}

fn put_str(ctx: &mut digest::Context, tag: u8, value: Option<&str>) {
    match value {
        None => ctx.update(&[tag, 0]),
        Some(s) => {
            ctx.update(&[tag, 1]);
            ctx.update(&len32(s.len()));
            ctx.update(s.as_bytes());
        }
    }
}

fn put_num(ctx: &mut digest::Context, tag: u8, value: Option<u64>) {
    match value {
        None => ctx.update(&[tag, 0]),
        Some(n) => {
            ctx.update(&[tag, 1]);
            ctx.update(&n.to_be_bytes());
        }
    }
}

fn len32(n: usize) -> [u8; 4] {
    // Validated entropy keeps every length far below u32::MAX; saturate so
    // an unvalidated call still hashes deterministically.
    u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()
}

/// The device id of a browser: SHA-256 over the canonical stable subset
/// (see the module docs for which fields and why), turned into a `dev_…`
/// id by [`DeviceId::from_digest`]. Pure and deterministic: the same
/// browser gets the same id on every engine without a lookup.
pub fn device_id(entropy: &Entropy) -> DeviceId {
    let mut ctx = digest::Context::new(&digest::SHA256);
    Stable::of(entropy).encode(&mut ctx);
    DeviceId::from_digest(ctx.finish().as_ref())
}

/// Which stable fields differ between two entropies, named as the client
/// writes them (`canvasHash`, `screen.width`…), in the module's table
/// order. Empty exactly when [`device_id`] is equal: reverify reports the
/// list as drift, and clustering groups devices differing in few keys.
pub fn diff_keys(a: &Entropy, b: &Entropy) -> Vec<&'static str> {
    let (x, y) = (Stable::of(a), Stable::of(b));
    let mut out = Vec::new();
    let mut check = |differs: bool, key: &'static str| {
        if differs {
            out.push(key);
        }
    };
    check(x.platform != y.platform, "platform");
    check(
        x.hardware_concurrency != y.hardware_concurrency,
        "hardwareConcurrency",
    );
    check(
        x.device_memory_milli != y.device_memory_milli,
        "deviceMemory",
    );
    // A rotation swaps width and height without changing the canonical
    // (long, short) pair; only a real size change is drift.
    let size_changed = (x.screen_long, x.screen_short) != (y.screen_long, y.screen_short);
    let (sa, sb) = (a.screen.as_ref(), b.screen.as_ref());
    check(
        size_changed && sa.and_then(|s| s.width) != sb.and_then(|s| s.width),
        "screen.width",
    );
    check(
        size_changed && sa.and_then(|s| s.height) != sb.and_then(|s| s.height),
        "screen.height",
    );
    check(x.color_depth != y.color_depth, "screen.colorDepth");
    check(x.canvas_hash != y.canvas_hash, "canvasHash");
    check(x.webgl_vendor != y.webgl_vendor, "webglVendor");
    check(x.webgl_renderer != y.webgl_renderer, "webglRenderer");
    check(x.audio_hash != y.audio_hash, "audioHash");
    check(x.fonts != y.fonts, "fonts");
    check(x.timezone != y.timezone, "timezone");
    out
}

/// The components the dashboard's clusters compare, by client name: the
/// stable subset behind the id plus the user agent (a bot farm's devices
/// share the stable ones and differ in a few, often the UA's patch
/// version). Values are cut at [`MAX_COMPONENT_BYTES`] (on a character
/// boundary) and fonts are joined sorted, so a row stays small.
pub fn components(e: &Entropy) -> BTreeMap<String, String> {
    let s = Stable::of(e);
    let mut out = BTreeMap::new();
    let mut put = |k: &str, v: Option<String>| {
        if let Some(mut v) = v {
            if v.len() > MAX_COMPONENT_BYTES {
                let mut end = MAX_COMPONENT_BYTES;
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                v.truncate(end);
            }
            out.insert(k.to_owned(), v);
        }
    };
    put("userAgent", e.user_agent.clone());
    put("platform", s.platform.map(str::to_owned));
    put(
        "hardwareConcurrency",
        s.hardware_concurrency.map(|n| n.to_string()),
    );
    put("deviceMemory", e.device_memory.map(|m| m.to_string()));
    put(
        "screen",
        match (s.screen_long, s.screen_short) {
            (Some(l), Some(h)) => Some(format!("{l}x{h}")),
            _ => None,
        },
    );
    put("screen.colorDepth", s.color_depth.map(|n| n.to_string()));
    put("canvasHash", s.canvas_hash.map(str::to_owned));
    put("webglVendor", s.webgl_vendor.map(str::to_owned));
    put("webglRenderer", s.webgl_renderer.map(str::to_owned));
    put("audioHash", s.audio_hash.map(str::to_owned));
    put("fonts", s.fonts.map(|f| f.join(",")));
    put("timezone", s.timezone.map(str::to_owned));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::entropy::Screen;
    use crate::decide::fixtures;

    fn same(a: &Entropy, b: &Entropy) {
        assert_eq!(device_id(a), device_id(b));
        assert_eq!(diff_keys(a, b), Vec::<&str>::new());
    }

    fn differ(a: &Entropy, b: &Entropy, keys: &[&str]) {
        assert_ne!(device_id(a), device_id(b));
        assert_eq!(diff_keys(a, b), keys);
    }

    #[test]
    fn id_is_a_valid_deterministic_dev_id() {
        let id = device_id(&fixtures::chrome_windows());
        assert!(id.as_str().starts_with("dev_"));
        assert_eq!(DeviceId::parse(id.as_str()), Ok(id.clone()));
        assert_eq!(id, device_id(&fixtures::chrome_windows()));
        // Pinned (and recomputed independently from the documented
        // encoding): the id of a real device must not move between
        // releases, or every customer's devices look new at once.
        assert_eq!(id.as_str(), "dev_XMDRunVtDT6eEADMMW1673g3JRLiUuNJ");
        let ids: std::collections::HashSet<_> =
            fixtures::all().iter().map(|(_, e)| device_id(e)).collect();
        assert_eq!(ids.len(), 4, "the fixtures are four different devices");
    }

    #[test]
    fn stable_across_browser_update_language_order_and_zoom() {
        let a = fixtures::chrome_windows();
        let mut b = a.clone();
        b.user_agent = Some(fixtures::UA_CHROME_WINDOWS.replace("124.0.0.0", "125.0.0.0"));
        same(&a, &b);
        b.languages = Some(vec!["de".into(), "en".into(), "en-US".into()]);
        same(&a, &b);
        b.screen.as_mut().unwrap().pixel_ratio = Some(1.5);
        same(&a, &b);
        b.cookies_enabled = Some(false);
        b.touch_points = Some(10);
        b.webdriver = None;
        b.extra
            .insert("batteryLevel".into(), serde_json::json!(0.3));
        same(&a, &b);
    }

    #[test]
    fn stable_across_font_order_duplicates_and_rotation() {
        let a = fixtures::safari_ios();
        let mut b = a.clone();
        b.fonts = Some(vec![
            "Menlo".into(),
            "Helvetica".into(),
            "Helvetica Neue".into(),
            "Menlo".into(),
        ]);
        same(&a, &b);
        let s = b.screen.as_mut().unwrap();
        (s.width, s.height) = (s.height, s.width);
        same(&a, &b);
    }

    #[test]
    fn each_stable_field_changes_the_id_and_is_named() {
        let a = fixtures::chrome_windows();
        type Edit = fn(&mut Entropy);
        let cases: [(&str, Edit); 12] = [
            ("platform", |e| e.platform = Some("MacIntel".into())),
            ("hardwareConcurrency", |e| e.hardware_concurrency = Some(8)),
            ("deviceMemory", |e| e.device_memory = Some(4.0)),
            ("screen.width", |e| {
                e.screen.as_mut().unwrap().width = Some(2560)
            }),
            ("screen.height", |e| {
                e.screen.as_mut().unwrap().height = Some(1200)
            }),
            ("screen.colorDepth", |e| {
                e.screen.as_mut().unwrap().color_depth = Some(30)
            }),
            ("canvasHash", |e| {
                e.canvas_hash = Some("ffffffffffff".into())
            }),
            ("webglVendor", |e| {
                e.webgl_vendor = Some("Google Inc. (AMD)".into())
            }),
            ("webglRenderer", |e| {
                e.webgl_renderer = Some("ANGLE (AMD Radeon RX 6600)".into())
            }),
            ("audioHash", |e| e.audio_hash = Some("124.0".into())),
            ("fonts", |e| {
                e.fonts.as_mut().unwrap().push("Comic Sans MS".into())
            }),
            ("timezone", |e| e.timezone = Some("America/New_York".into())),
        ];
        for (key, change) in cases {
            let mut b = a.clone();
            change(&mut b);
            differ(&a, &b, &[key]);
        }
    }

    #[test]
    fn absent_empty_and_moved_boundaries_are_all_distinct() {
        let base = Entropy::default();
        let empty = Entropy {
            canvas_hash: Some(String::new()),
            ..Entropy::default()
        };
        differ(&base, &empty, &["canvasHash"]);
        // "ab"+"c" and "a"+"bc" across two fields must not collide.
        let x = Entropy {
            webgl_vendor: Some("ab".into()),
            webgl_renderer: Some("c".into()),
            ..Entropy::default()
        };
        let y = Entropy {
            webgl_vendor: Some("a".into()),
            webgl_renderer: Some("bc".into()),
            ..Entropy::default()
        };
        differ(&x, &y, &["webglVendor", "webglRenderer"]);
        let f1 = Entropy {
            fonts: Some(vec!["ab".into(), "c".into()]),
            ..Entropy::default()
        };
        let f2 = Entropy {
            fonts: Some(vec!["a".into(), "bc".into()]),
            ..Entropy::default()
        };
        differ(&f1, &f2, &["fonts"]);
        let no_screen = Entropy {
            screen: Some(Screen::default()),
            ..Entropy::default()
        };
        same(&base, &no_screen);
    }

    #[test]
    fn several_changes_are_listed_in_table_order() {
        let a = fixtures::firefox_linux();
        let mut b = a.clone();
        b.timezone = Some("Asia/Tokyo".into());
        b.canvas_hash = None;
        b.platform = None;
        differ(&a, &b, &["platform", "canvasHash", "timezone"]);
    }
}
