//! Realistic inputs, built deterministically so two runs measure the same work.

use qyzar_engine::decide::{Entropy, Screen};
use qyzar_shared::crypto::Claims;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use qyzar_shared::settings::ProjectSettings;
use qyzar_shared::snapshot::{
    Ed25519KeyEntry, Hs256KeyEntry, OriginTokenEntry, ProjectConfig, Snapshot, SnapshotBuilder,
};
use qyzar_store::{DeviceInfo, Risk, Session};

/// Unix seconds now. Token fixtures are minted from the real clock because
/// the `jsonwebtoken` baseline checks `exp` against the system clock and
/// cannot be handed a fixed time.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The audience (project id) every token fixture is minted for.
pub const AUDIENCE: &str = "prj_01hbenchbenchbenchbench";

/// Claims shaped like a real client token: a bound session and a little
/// customer metadata, so the payload is the few hundred bytes real tokens are.
pub fn claims(now: i64) -> Claims {
    Claims {
        iss: "https://engine.qyzar.example".into(),
        aud: AUDIENCE.into(),
        sub: "user-8f14e45fceea167a".into(),
        iat: now,
        exp: now + 3600,
        jti: "tok_4c1f3a9d0b2e7c6a5f8e9d0c".into(),
        sid: Some("ses_2b7e151628aed2a6abf71588".into()),
        md: Some(serde_json::json!({ "plan": "pro", "tenant": "acme" })),
    }
}

/// The entropy of a Chrome on Windows desktop as the browser script sends
/// it (about 1 KiB of JSON), for the `/connect` decisions.
pub fn entropy_json() -> String {
    serde_json::json!({
        "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
        "languages": ["en-US", "en", "de"],
        "timezone": "Europe/Berlin",
        "screen": { "width": 1920, "height": 1080, "colorDepth": 24, "pixelRatio": 1.0, "availWidth": 1920 },
        "hardwareConcurrency": 16,
        "deviceMemory": 8.0,
        "platform": "Win32",
        "canvasHash": "c7a1e0b3d9f2",
        "webglVendor": "Google Inc. (NVIDIA)",
        "webglRenderer": "ANGLE (NVIDIA, NVIDIA GeForce RTX 3060 (0x00002504) Direct3D11 vs_5_0 ps_5_0, D3D11)",
        "audioHash": "124.04347527516074",
        "fonts": ["Arial", "Calibri", "Cambria", "Consolas", "Courier New", "Georgia",
                  "Segoe UI", "Tahoma", "Times New Roman", "Trebuchet MS", "Verdana"],
        "touchPoints": 0,
        "webdriver": false,
        "cookiesEnabled": true,
        "pluginsHash": "e3b0c44298fc"
    })
    .to_string()
}

/// [`entropy_json`] decoded, for benches that start after parsing.
pub fn entropy() -> Entropy {
    let e: Entropy = serde_json::from_str(&entropy_json()).expect("the fixture is valid entropy");
    debug_assert!(e
        .screen
        .as_ref()
        .is_some_and(|s: &Screen| s.width == Some(1920)));
    e
}

/// A project as admin would push it: two secret hashes (one rotating out),
/// two HS256 keys, an Ed25519 key, a few origin tokens and opt-outs, so the
/// snapshot is the size a real one of `n` projects would be.
pub fn project(i: u32) -> ProjectConfig {
    let b = i.to_le_bytes()[0];
    let id = ProjectId::generate();
    let hs = Hs256KeyEntry {
        kid: format!("hs1-{i:08x}"),
        key: [b; 32],
        valid_until_ms: None,
    };
    let mut p = ProjectConfig::new(
        &id,
        [b ^ 1; 32],
        hs,
        [b ^ 2; 32],
        ProjectSettings::default(),
    );
    p.hs256_keys.push(Hs256KeyEntry {
        kid: format!("hs1-{:08x}", i ^ 0xffff),
        key: [b ^ 3; 32],
        valid_until_ms: Some(1_900_000_000_000),
    });
    p.ed25519.push(Ed25519KeyEntry {
        kid: format!("ed1-{i:08x}"),
        public_key: [b ^ 4; 32],
        pkcs8: None,
        valid_until_ms: None,
    });
    p.origin_tokens = (0..3u8)
        .map(|t| OriginTokenEntry {
            token_hash: [b ^ t; 32],
            origin: format!("https://app{t}.customer{i}.example"),
            expires_at_ms: 1_900_000_000_000,
        })
        .collect();
    p.opted_out_devices = (0..4).map(|d| format!("dev_{i:08x}{d:04x}")).collect();
    p
}

/// A snapshot of `n` projects at version 1.
pub fn snapshot(n: u32) -> Snapshot {
    (0..n)
        .fold(SnapshotBuilder::new(1, 1_700_000_000_000), |b, i| {
            b.project(project(i))
        })
        .build()
        .expect("generated project ids are unique")
}

/// A deterministic pseudo-random sequence (SplitMix64): the benches walk
/// their keys in this order so neither the CPU's prefetcher nor a cache's
/// recency policy sees a friendlier pattern than real traffic.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A sequence from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// An index below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A session as `/connect` stores it, for the session-cache benches: the
/// value's size matters because a lookup touches its reference count.
pub fn session(id: &str) -> Session {
    Session {
        project_id: ProjectId::parse(AUDIENCE).expect("the fixture project id parses"),
        session_id: SessionId::parse(id).expect("session_ids makes valid ids"),
        token_hash: [5; 32],
        device_id: DeviceId::from_digest(&[6; 32]),
        created_at: 1_700_000_000_000,
        expires_at: 1_900_000_000_000,
        last_seen_at: 1_700_000_000_000,
        revoked: false,
        ip: Some("203.0.113.7".into()),
        risk: Risk {
            score: 3,
            bot: false,
            signals: Vec::new(),
        },
        device: DeviceInfo {
            browser: "Chrome".into(),
            os: "Windows".into(),
            platform: "desktop".into(),
            region: Some("DE".into()),
        },
    }
}
