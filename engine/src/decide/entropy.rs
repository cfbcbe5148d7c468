//! The browser entropy `/connect` and `/connect/reverify` receive: its shape
//! and its caps.
//!
//! Every field is optional because browsers, privacy settings and script
//! versions each leave some out; a missing field is information, not an
//! error. Keys this version does not know are kept in `extra`, so a newer
//! browser script can add a signal before the engine learns to read it and
//! nothing it sent is lost from the stored snapshot.
//!
//! The caps bound what one anonymous browser can make the engine store and
//! hash: everything here arrives before any authentication but the origin
//! token.

use qyzar_shared::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest serialised entropy object. Real entropy is 2–6 KiB (the font list
/// dominates); 16 KiB leaves room for new signals while keeping a snapshot
/// row small. Enforced by [`Entropy::validate`] on the length the caller
/// measured, because only the caller saw the raw bytes.
pub const MAX_ENTROPY_BYTES: usize = 16 * 1024;
/// Longest string anywhere in the entropy. WebGL renderer strings, the
/// longest real values, stay under 200 bytes.
pub const MAX_STRING_BYTES: usize = 512;
/// Most font names. The browser script probes a fixed list far shorter.
pub const MAX_FONTS: usize = 256;
/// Most preferred languages; browsers cap the list UI well below this.
pub const MAX_LANGUAGES: usize = 32;
/// Most unknown keys kept at one level: enough for new signals, too few
/// to turn the snapshot into free storage.
const MAX_EXTRA_KEYS: usize = 64;
/// Longest unknown key name.
const MAX_EXTRA_KEY_BYTES: usize = 64;
/// Deepest nesting below an unknown key; real signals are flat or one level.
const MAX_EXTRA_DEPTH: usize = 4;

/// What the browser script collected. Field names are the camelCase keys
/// of the connect body's `entropy` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entropy {
    /// `navigator.userAgent`; parsed into [`super::UaInfo`], not part of the
    /// device id because it changes with every browser update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// `navigator.languages`, in the user's order of preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub languages: Option<Vec<String>>,
    /// IANA zone from `Intl.DateTimeFormat().resolvedOptions().timeZone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// `window.screen` and `devicePixelRatio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen: Option<Screen>,
    /// `navigator.hardwareConcurrency`: logical CPU count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_concurrency: Option<u32>,
    /// `navigator.deviceMemory` in GiB; browsers round it to a power of two.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_memory: Option<f64>,
    /// `navigator.platform` (`Win32`, `MacIntel`, `Linux x86_64`, `iPhone`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Hash of a fixed canvas drawing; differs by GPU, driver and fonts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canvas_hash: Option<String>,
    /// Unmasked WebGL vendor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webgl_vendor: Option<String>,
    /// Unmasked WebGL renderer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webgl_renderer: Option<String>,
    /// Hash of an offline audio rendering; differs by audio stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audio_hash: Option<String>,
    /// Installed fonts found by the script's probe list, in any order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fonts: Option<Vec<String>>,
    /// `navigator.maxTouchPoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub touch_points: Option<u32>,
    /// `navigator.webdriver`: true when the browser is under automation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webdriver: Option<bool>,
    /// `navigator.cookieEnabled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookies_enabled: Option<bool>,
    /// Keys this version does not know, kept verbatim for the snapshot.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `window.screen` plus the pixel ratio.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Screen {
    /// `screen.width` in CSS pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// `screen.height` in CSS pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// `screen.colorDepth` in bits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color_depth: Option<u32>,
    /// `window.devicePixelRatio`; moves with page zoom, so never part of the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_ratio: Option<f64>,
    /// Keys this version does not know (`availWidth`, …), kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Why an entropy object is refused: the field at fault, as the client
/// wrote it, and a fixed reason. Answered as `422 invalid_field`.
///
/// Static strings on purpose: refusing bad entropy is normal traffic on
/// `/connect` and must cost no allocation or formatting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct EntropyError {
    /// Dotted path of the field, e.g. `entropy.screen.width`.
    pub field: &'static str,
    /// What is wrong with it, lowercase, for the error message.
    pub reason: &'static str,
}

impl From<EntropyError> for ApiError {
    fn from(e: EntropyError) -> Self {
        ApiError::with_message(ErrorCode::InvalidField, e.reason).field(e.field)
    }
}

const fn err(field: &'static str, reason: &'static str) -> EntropyError {
    EntropyError { field, reason }
}

impl Entropy {
    /// Checks every cap. `raw_len` is the byte length of the `entropy` JSON
    /// as received: the caller measures it (from a `RawValue`, or the whole
    /// body length, which bounds it from above), because re-serialising here
    /// would cost an allocation and could differ from what was sent.
    ///
    /// Value ranges are deliberately wider than any real device: a value
    /// that is odd but representable (a zero-width screen) is kept and scored
    /// by [`super::score_bot`] rather than refused, so a bot learns nothing
    /// from a 422 and the snapshot records what it claimed.
    pub fn validate(&self, raw_len: usize) -> Result<(), EntropyError> {
        if raw_len > MAX_ENTROPY_BYTES {
            return Err(err("entropy", "is larger than 16 KiB"));
        }
        check_str(&self.user_agent, "entropy.userAgent")?;
        check_str(&self.timezone, "entropy.timezone")?;
        check_str(&self.platform, "entropy.platform")?;
        check_str(&self.canvas_hash, "entropy.canvasHash")?;
        check_str(&self.webgl_vendor, "entropy.webglVendor")?;
        check_str(&self.webgl_renderer, "entropy.webglRenderer")?;
        check_str(&self.audio_hash, "entropy.audioHash")?;
        check_list(
            &self.languages,
            MAX_LANGUAGES,
            "entropy.languages",
            "has more than 32 entries",
        )?;
        check_list(
            &self.fonts,
            MAX_FONTS,
            "entropy.fonts",
            "has more than 256 entries",
        )?;
        if let Some(screen) = &self.screen {
            screen.validate()?;
        }
        if self.hardware_concurrency.is_some_and(|n| n > 4096) {
            return Err(err("entropy.hardwareConcurrency", "must be at most 4096"));
        }
        if self
            .device_memory
            .is_some_and(|m| !(0.0..=4096.0).contains(&m))
        {
            return Err(err("entropy.deviceMemory", "must be between 0 and 4096"));
        }
        if self.touch_points.is_some_and(|n| n > 1024) {
            return Err(err("entropy.touchPoints", "must be at most 1024"));
        }
        check_extra(&self.extra, "entropy")
    }
}

impl Screen {
    fn validate(&self) -> Result<(), EntropyError> {
        // 65535 is far above any real screen (16K is 15360) yet lets the bot
        // scorer see the impossible values in between.
        if self.width.is_some_and(|w| w > 65_535) {
            return Err(err("entropy.screen.width", "must be at most 65535"));
        }
        if self.height.is_some_and(|h| h > 65_535) {
            return Err(err("entropy.screen.height", "must be at most 65535"));
        }
        if self.color_depth.is_some_and(|d| d > 256) {
            return Err(err("entropy.screen.colorDepth", "must be at most 256"));
        }
        if self.pixel_ratio.is_some_and(|r| !(0.0..=64.0).contains(&r)) {
            return Err(err("entropy.screen.pixelRatio", "must be between 0 and 64"));
        }
        check_extra(&self.extra, "entropy.screen")
    }
}

fn check_str(value: &Option<String>, field: &'static str) -> Result<(), EntropyError> {
    match value {
        Some(s) if s.len() > MAX_STRING_BYTES => Err(err(field, "is longer than 512 bytes")),
        _ => Ok(()),
    }
}

fn check_list(
    value: &Option<Vec<String>>,
    max: usize,
    field: &'static str,
    too_many: &'static str,
) -> Result<(), EntropyError> {
    let Some(list) = value else { return Ok(()) };
    if list.len() > max {
        return Err(err(field, too_many));
    }
    if list.iter().any(|s| s.len() > MAX_STRING_BYTES) {
        return Err(err(field, "holds an entry longer than 512 bytes"));
    }
    Ok(())
}

/// Unknown keys get the same string cap plus bounds on key count, key
/// length and depth. The field named is the object that holds them: an
/// unknown key's own name is not a `&'static str`.
fn check_extra(extra: &Map<String, Value>, field: &'static str) -> Result<(), EntropyError> {
    if extra.len() > MAX_EXTRA_KEYS {
        return Err(err(field, "has more than 64 unknown keys"));
    }
    for (key, value) in extra {
        if key.len() > MAX_EXTRA_KEY_BYTES {
            return Err(err(field, "has an unknown key longer than 64 bytes"));
        }
        check_value(value, 1, field)?;
    }
    Ok(())
}

fn check_value(value: &Value, depth: usize, field: &'static str) -> Result<(), EntropyError> {
    match value {
        Value::String(s) if s.len() > MAX_STRING_BYTES => Err(err(
            field,
            "has an unknown key holding a string longer than 512 bytes",
        )),
        Value::Array(_) | Value::Object(_) if depth > MAX_EXTRA_DEPTH => Err(err(
            field,
            "has an unknown key nested more than 4 levels deep",
        )),
        Value::Array(items) => items
            .iter()
            .try_for_each(|v| check_value(v, depth + 1, field)),
        Value::Object(map) => {
            if map.keys().any(|k| k.len() > MAX_EXTRA_KEY_BYTES) {
                return Err(err(field, "has an unknown key longer than 64 bytes"));
            }
            map.values()
                .try_for_each(|v| check_value(v, depth + 1, field))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
