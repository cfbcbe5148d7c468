//! Static files of the dashboard, embedded in the binary and served under
//! `/ui/assets/…`, so `cargo run` needs neither npm nor a folder beside the
//! binary.
//!
//! Vendored files (`admin/assets/vendor/`, refreshed by
//! `deploy/vendor-assets.sh`) carry their version in their name, so they are
//! cached for a year as `immutable`: a new version is a new URL. Our own
//! stylesheet keeps its name and is revalidated with an `ETag` instead.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// One embedded file.
pub(crate) struct Asset {
    /// Path under `/ui/assets/`.
    pub path: &'static str,
    /// The bytes.
    pub bytes: &'static [u8],
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Whether the name carries the version (then it is `immutable`).
    pub versioned: bool,
}

/// The htmx script every page loads.
pub(crate) const HTMX: &str = "vendor/htmx-2.0.11.min.js";
/// The dashboard stylesheet.
pub(crate) const CSS: &str = "qyzar.css";

/// The analytics pages' chart script (draws `.chart[data-chart]` with uPlot).
pub(crate) const CHARTS: &str = "qyzar-charts.js";

/// Every file served. uPlot is here for the analytics pages' charts.
pub(crate) const ASSETS: &[Asset] = &[
    Asset {
        path: HTMX,
        bytes: include_bytes!("../../assets/vendor/htmx-2.0.11.min.js"),
        content_type: "text/javascript; charset=utf-8",
        versioned: true,
    },
    Asset {
        path: "vendor/uPlot-1.6.32.iife.min.js",
        bytes: include_bytes!("../../assets/vendor/uPlot-1.6.32.iife.min.js"),
        content_type: "text/javascript; charset=utf-8",
        versioned: true,
    },
    Asset {
        path: "vendor/uPlot-1.6.32.min.css",
        bytes: include_bytes!("../../assets/vendor/uPlot-1.6.32.min.css"),
        content_type: "text/css; charset=utf-8",
        versioned: true,
    },
    Asset {
        path: CHARTS,
        bytes: include_bytes!("../../assets/qyzar-charts.js"),
        content_type: "text/javascript; charset=utf-8",
        versioned: false,
    },
    Asset {
        path: CSS,
        bytes: include_bytes!("../../assets/qyzar.css"),
        content_type: "text/css; charset=utf-8",
        versioned: false,
    },
];

/// The manifest `deploy/vendor-assets.sh` writes; the test below holds the
/// embedded files to it.
#[cfg(test)]
const MANIFEST: &str = include_str!("../../assets/vendor/manifest.json");

fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `GET /ui/assets/{*path}`: the file, or a plain 404.
pub(crate) async fn serve(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let mut res = if asset.versioned {
        let mut r = asset.bytes.into_response();
        r.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
        r
    } else {
        let etag = format!("\"{}\"", &sha256_hex(asset.bytes)[..32]);
        let fresh = headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
        let mut r = if fresh {
            StatusCode::NOT_MODIFIED.into_response()
        } else {
            asset.bytes.into_response()
        };
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            r.headers_mut().insert(header::ETAG, v);
        }
        r
    };
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every vendored file embedded is byte for byte the one the manifest
    /// names (package, version, sha256), and every manifest file is embedded.
    #[test]
    fn embedded_vendor_files_match_the_manifest() {
        let manifest: serde_json::Value = serde_json::from_str(MANIFEST).unwrap();
        let files = manifest["files"].as_array().unwrap();
        assert!(!files.is_empty());
        for f in files {
            let name = f["file"].as_str().unwrap();
            let version = f["version"].as_str().unwrap();
            assert!(name.contains(version), "{name}: the version is in the name");
            let asset = ASSETS
                .iter()
                .find(|a| a.path == format!("vendor/{name}"))
                .unwrap_or_else(|| panic!("{name} is in the manifest but not embedded"));
            assert!(asset.versioned);
            assert_eq!(
                sha256_hex(asset.bytes),
                f["sha256"].as_str().unwrap(),
                "{name}: embedded bytes differ from the manifest"
            );
            assert!(f["tarball"].as_str().unwrap().starts_with("https://"));
        }
        let vendored = ASSETS
            .iter()
            .filter(|a| a.path.starts_with("vendor/"))
            .count();
        assert_eq!(
            vendored,
            files.len(),
            "every embedded vendor file is in the manifest"
        );
    }
}
