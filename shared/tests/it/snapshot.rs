//! The config snapshot on the wire: round trips, deltas, and refusal of
//! every kind of damaged input.

use qyzar_shared::ids::ProjectId;
use qyzar_shared::settings::{ProjectSettings, TokenAlgorithm};
use qyzar_shared::snapshot::wire::{FORMAT_VERSION, HEADER_LEN};
use qyzar_shared::snapshot::{
    decode_delta, decode_snapshot, encode_delta, encode_snapshot, ConfigIndex, Ed25519KeyEntry,
    Hs256KeyEntry, OriginTokenEntry, ProjectConfig, SecretHashEntry, Snapshot, SnapshotBuilder,
    SnapshotDelta, SnapshotError, SnapshotKind,
};

const NOW: i64 = 1_700_000_000_000;

/// A project with every field populated, so a round trip exercises them all.
fn full_project(seed: u8) -> ProjectConfig {
    let id = ProjectId::generate();
    let hs = Hs256KeyEntry {
        kid: format!("hs-{seed}-2"),
        key: [seed; 32],
        valid_until_ms: None,
    };
    let settings = ProjectSettings {
        allowed_origins: vec![format!("https://s{seed}.example")],
        token_algorithm: TokenAlgorithm::EdDsa,
        ..ProjectSettings::default()
    };
    let mut p = ProjectConfig::new(&id, [seed ^ 0x55; 32], hs, [seed ^ 0xaa; 32], settings);
    p.plan = qyzar_shared::settings::PlanTier::Enterprise;
    p.secret_hashes.push(SecretHashEntry {
        hash: [seed ^ 0x11; 32],
        valid_until_ms: Some(NOW + 60_000),
    });
    p.hs256_keys.push(Hs256KeyEntry {
        kid: format!("hs-{seed}-1"),
        key: [seed ^ 1; 32],
        valid_until_ms: Some(NOW + 60_000),
    });
    p.ed25519.push(Ed25519KeyEntry {
        kid: format!("ed-{seed}-2"),
        public_key: [seed ^ 2; 32],
        pkcs8: Some(vec![seed; 83]),
        valid_until_ms: None,
    });
    p.ed25519.push(Ed25519KeyEntry {
        kid: format!("ed-{seed}-1"),
        public_key: [seed ^ 3; 32],
        pkcs8: None,
        valid_until_ms: Some(NOW),
    });
    p.origin_tokens.push(OriginTokenEntry {
        token_hash: [seed ^ 4; 32],
        origin: format!("https://s{seed}.example"),
        expires_at_ms: NOW + 3_600_000,
    });
    p.opted_out_devices
        .push(format!("dev_{seed:02}AAAAAAAAAAAAAAAAAAAA"));
    p.opted_out_identifier_hashes.push([seed ^ 5; 32]);
    p
}

fn snapshot(version: u64, projects: Vec<ProjectConfig>) -> Snapshot {
    Snapshot::new(version, NOW, projects).expect("valid snapshot")
}

fn sample() -> Snapshot {
    snapshot(7, (1..=5).map(full_project).collect())
}

/// Rewrites the header digest so damage inside the payload reaches rkyv.
fn redigest(bytes: &mut [u8]) {
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes[HEADER_LEN..]);
    bytes[15..HEADER_LEN].copy_from_slice(digest.as_ref());
}

#[test]
fn full_snapshot_round_trips() {
    let s = sample();
    let bytes = encode_snapshot(&s).unwrap();
    assert_eq!(&bytes[..4], b"QZSN");
    assert_eq!(SnapshotKind::of(&bytes), Ok(SnapshotKind::Full));
    assert_eq!(decode_snapshot(&bytes).unwrap(), s);
    let empty = snapshot(1, Vec::new());
    assert_eq!(
        decode_snapshot(&encode_snapshot(&empty).unwrap()).unwrap(),
        empty
    );
}

#[test]
fn delta_round_trips() {
    let d = SnapshotDelta {
        base_version: 7,
        version: 8,
        issued_at_ms: NOW + 1,
        upserts: vec![full_project(9)],
        removed: vec!["prj_gone".into()],
    };
    let bytes = encode_delta(&d).unwrap();
    assert_eq!(SnapshotKind::of(&bytes), Ok(SnapshotKind::Delta));
    assert_eq!(decode_delta(&bytes).unwrap(), d);
}

#[test]
fn unaligned_input_decodes() {
    let s = sample();
    let bytes = encode_snapshot(&s).unwrap();
    for shift in 1..8 {
        let mut buf = vec![0u8; shift];
        buf.extend_from_slice(&bytes);
        assert_eq!(decode_snapshot(&buf[shift..]).unwrap(), s, "shift {shift}");
    }
}

#[test]
fn settings_json_survives_the_snapshot() {
    let json = br#"{"sessionTtlSeconds": 3600, "allowedOrigins": ["https://a.example", "http://localhost:3000"],
        "tokenAlgorithm": "EdDSA", "cookieNames": {"sessionId": "sid", "sessionToken": "stok"},
        "rateLimit": {"ip": {"limit": 10, "windowSeconds": 1}, "metadata": {"userId": {"limit": 3, "windowSeconds": 60}},
        "analyticsOnDeny": false}, "ato": {"challengeScore": 10, "blockScore": 20}}"#;
    let settings = ProjectSettings::parse_and_validate(json).unwrap();
    let mut p = full_project(1);
    p.settings = settings.clone();
    let id = p.project_id.clone();
    let back = decode_snapshot(&encode_snapshot(&snapshot(1, vec![p])).unwrap()).unwrap();
    assert_eq!(back.project(&id).unwrap().settings, settings);
    assert_eq!(
        ProjectSettings::parse_and_validate(&back.project(&id).unwrap().settings.to_json())
            .unwrap(),
        settings
    );
}

#[test]
fn apply_delta_upserts_adds_and_removes() {
    let base = sample();
    let ids: Vec<String> = base
        .projects()
        .iter()
        .map(|p| p.project_id.clone())
        .collect();
    let mut changed = base.project(&ids[0]).unwrap().clone();
    changed.settings.test_mode = true;
    let added = full_project(42);
    let delta = SnapshotDelta {
        base_version: 7,
        version: 9,
        issued_at_ms: NOW + 5,
        upserts: vec![added.clone(), changed.clone()],
        removed: vec![ids[1].clone(), "prj_never_existed".into()],
    };
    let before = base.clone();
    let next = base.apply_delta(&delta).unwrap();
    assert_eq!(base, before, "the held snapshot is untouched");
    assert_eq!((next.version(), next.issued_at_ms()), (9, NOW + 5));
    assert_eq!(next.projects().len(), 5);
    assert_eq!(next.project(&ids[0]), Some(&changed));
    assert!(next.project(&ids[1]).is_none());
    assert_eq!(next.project(&added.project_id), Some(&added));
    assert_eq!(next.project(&ids[2]), base.project(&ids[2]));
    assert!(next
        .projects()
        .windows(2)
        .all(|w| w[0].project_id < w[1].project_id));
}

#[test]
fn apply_delta_refuses_wrong_base_stale_version_and_duplicates() {
    let base = sample();
    let delta = |base_version, version| SnapshotDelta {
        base_version,
        version,
        issued_at_ms: NOW,
        upserts: vec![],
        removed: vec![],
    };
    assert_eq!(
        base.apply_delta(&delta(6, 8)),
        Err(SnapshotError::BaseMismatch {
            current: 7,
            base: 6
        })
    );
    assert_eq!(
        base.apply_delta(&delta(8, 9)),
        Err(SnapshotError::BaseMismatch {
            current: 7,
            base: 8
        })
    );
    assert_eq!(
        base.apply_delta(&delta(7, 7)),
        Err(SnapshotError::StaleVersion {
            current: 7,
            offered: 7
        })
    );
    assert_eq!(
        base.apply_delta(&delta(7, 3)),
        Err(SnapshotError::StaleVersion {
            current: 7,
            offered: 3
        })
    );
    assert!(base.apply_delta(&delta(7, 8)).is_ok());

    let p = full_project(1);
    let mut twice = delta(7, 8);
    twice.upserts = vec![p.clone(), p.clone()];
    assert_eq!(
        base.apply_delta(&twice),
        Err(SnapshotError::DuplicateProject(p.project_id.clone()))
    );
    let mut both = delta(7, 8);
    both.upserts = vec![p.clone()];
    both.removed = vec![p.project_id.clone()];
    assert_eq!(
        base.apply_delta(&both),
        Err(SnapshotError::DuplicateProject(p.project_id))
    );
}

#[test]
fn delta_between_two_snapshots_reproduces_the_newer() {
    let old = sample();
    let mut projects = old.clone().into_projects();
    let removed = projects.remove(2).project_id;
    projects[0].settings.session_ttl_seconds = 120;
    projects.push(full_project(77));
    let new = snapshot(8, projects);
    let delta = SnapshotDelta::between(&old, &new).unwrap();
    assert_eq!(
        delta.upserts.len(),
        2,
        "only the changed and the added project travel"
    );
    assert_eq!(delta.removed, vec![removed]);
    let wire = decode_delta(&encode_delta(&delta).unwrap()).unwrap();
    assert_eq!(old.apply_delta(&wire).unwrap(), new);
    assert_eq!(
        SnapshotDelta::between(&new, &old),
        Err(SnapshotError::StaleVersion {
            current: 8,
            offered: 7
        })
    );
}

#[test]
fn a_flipped_payload_byte_anywhere_is_a_digest_mismatch() {
    let bytes = encode_snapshot(&sample()).unwrap();
    let payload_len = bytes.len() - HEADER_LEN;
    let positions = (0..payload_len)
        .step_by(payload_len / 97 + 1)
        .chain([payload_len - 1]);
    for at in positions {
        let mut bad = bytes.clone();
        bad[HEADER_LEN + at] ^= 0x01;
        assert_eq!(
            decode_snapshot(&bad),
            Err(SnapshotError::DigestMismatch),
            "payload byte {at}"
        );
    }
    for at in 15..HEADER_LEN {
        let mut bad = bytes.clone();
        bad[at] ^= 0x80;
        assert_eq!(
            decode_snapshot(&bad),
            Err(SnapshotError::DigestMismatch),
            "digest byte {at}"
        );
    }
}

#[test]
fn truncated_or_padded_input_is_refused() {
    let bytes = encode_snapshot(&sample()).unwrap();
    let cuts = [
        0,
        1,
        3,
        4,
        6,
        7,
        14,
        15,
        HEADER_LEN - 1,
        HEADER_LEN,
        HEADER_LEN + 1,
        bytes.len() / 2,
        bytes.len() - 1,
    ];
    for len in cuts {
        assert_eq!(
            decode_snapshot(&bytes[..len]),
            Err(SnapshotError::Truncated),
            "cut at {len}"
        );
    }
    let mut padded = bytes;
    padded.push(0);
    assert_eq!(decode_snapshot(&padded), Err(SnapshotError::TrailingBytes));
    let delta = encode_delta(&SnapshotDelta {
        base_version: 1,
        version: 2,
        issued_at_ms: 0,
        upserts: vec![],
        removed: vec![],
    })
    .unwrap();
    assert_eq!(
        decode_delta(&delta[..delta.len() - 1]),
        Err(SnapshotError::Truncated)
    );
}

#[test]
fn wrong_magic_version_or_kind_is_refused() {
    let bytes = encode_snapshot(&sample()).unwrap();
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(decode_snapshot(&bad), Err(SnapshotError::BadMagic));
    assert_eq!(
        decode_snapshot(b"{\"version\": 1}"),
        Err(SnapshotError::BadMagic)
    );
    assert_eq!(decode_snapshot(b"QZ"), Err(SnapshotError::Truncated));

    let mut future = bytes.clone();
    future[4..6].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert_eq!(
        decode_snapshot(&future),
        Err(SnapshotError::UnsupportedVersion(FORMAT_VERSION + 1))
    );

    let mut kind = bytes.clone();
    kind[6] = 9;
    assert_eq!(decode_snapshot(&kind), Err(SnapshotError::UnknownKind(9)));
    assert_eq!(
        decode_delta(&bytes),
        Err(SnapshotError::WrongKind {
            expected: SnapshotKind::Delta,
            found: SnapshotKind::Full
        })
    );
    let delta = encode_delta(&SnapshotDelta {
        base_version: 1,
        version: 2,
        issued_at_ms: 0,
        upserts: vec![],
        removed: vec![],
    })
    .unwrap();
    assert_eq!(
        decode_snapshot(&delta),
        Err(SnapshotError::WrongKind {
            expected: SnapshotKind::Full,
            found: SnapshotKind::Delta
        })
    );
}

#[test]
fn a_valid_digest_over_an_invalid_archive_is_refused_by_bytecheck() {
    let bytes = encode_snapshot(&sample()).unwrap();
    // Garbage of the right shape: valid header, digest recomputed.
    for garbage in [
        vec![0xffu8; 64],
        vec![0u8; 3],
        (0..=255u8).cycle().take(4096).collect(),
    ] {
        let mut framed = bytes[..HEADER_LEN].to_vec();
        framed[7..15].copy_from_slice(&(garbage.len() as u64).to_le_bytes());
        framed.extend_from_slice(&garbage);
        redigest(&mut framed);
        assert!(
            matches!(decode_snapshot(&framed), Err(SnapshotError::Invalid(_))),
            "{} garbage bytes",
            garbage.len()
        );
    }
    // A real archive with one string turned into invalid UTF-8.
    let needle = b"https://s3.example";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("origin is stored out of line");
    let mut bad = bytes.clone();
    bad[at + 9] = 0xff;
    redigest(&mut bad);
    assert!(matches!(
        decode_snapshot(&bad),
        Err(SnapshotError::Invalid(_))
    ));
    // A real archive whose root pointer leads outside the buffer.
    let mut bad = bytes;
    let end = bad.len();
    bad[end - 4..].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    redigest(&mut bad);
    assert!(matches!(
        decode_snapshot(&bad),
        Err(SnapshotError::Invalid(_))
    ));
}

#[test]
fn ten_thousand_projects_round_trip_and_index() {
    let projects: Vec<ProjectConfig> = (0..10_000u32)
        .map(|i| full_project((i % 251) as u8))
        .collect();
    let ids: Vec<String> = projects.iter().map(|p| p.project_id.clone()).collect();
    let s = snapshot(1_000, projects);
    let bytes = encode_snapshot(&s).unwrap();
    let back = decode_snapshot(&bytes).unwrap();
    assert_eq!(back, s);
    let index = ConfigIndex::new(back);
    assert_eq!(
        (index.len(), index.version(), index.issued_at_ms()),
        (10_000, 1_000, NOW)
    );
    for id in &ids {
        assert_eq!(
            index.project(id).map(|p| p.project_id.as_str()),
            Some(id.as_str())
        );
    }
    assert!(index.project("prj_unknown_unknown_unknown").is_none());
}

#[test]
fn index_answers_lookups_from_a_decoded_snapshot() {
    let s = sample();
    let p = s.projects()[0].clone();
    let index = ConfigIndex::new(decode_snapshot(&encode_snapshot(&s).unwrap()).unwrap());
    let found = index.project(&p.project_id).unwrap();
    assert!(found.secret_matches(&p.secret_hashes[0].hash, NOW + 10_000_000));
    assert!(found.secret_matches(&p.secret_hashes[1].hash, NOW));
    assert!(!found.secret_matches(&p.secret_hashes[1].hash, NOW + 60_000));
    assert_eq!(found.hs256_signing().unwrap().kid, p.hs256_keys[0].kid);
    assert_eq!(found.ed25519_signing().unwrap().kid, p.ed25519[0].kid);
    assert_eq!(
        found.ed25519_published(NOW).count(),
        1,
        "the old key's publication ended"
    );
    let token = &p.origin_tokens[0];
    assert_eq!(
        found
            .origin_token(&token.token_hash, NOW)
            .map(|t| t.origin.as_str()),
        Some(token.origin.as_str())
    );
    assert!(found.is_device_opted_out(&p.opted_out_devices[0]));
    assert!(found.is_identifier_opted_out(&p.opted_out_identifier_hashes[0]));
    assert_eq!(index.snapshot(), &s);
    assert!(!index.is_empty());
}

#[test]
fn builder_refuses_duplicate_ids() {
    let p = full_project(3);
    let built = SnapshotBuilder::new(2, NOW)
        .project(full_project(4))
        .project(p.clone())
        .build()
        .unwrap();
    assert_eq!(built.projects().len(), 2);
    let dup = SnapshotBuilder::new(2, NOW)
        .project(p.clone())
        .project(p.clone())
        .build();
    assert_eq!(dup, Err(SnapshotError::DuplicateProject(p.project_id)));
}
