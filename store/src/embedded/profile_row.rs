//! Anti-ATO profile rows in redb: `postcard` (no field names) behind a
//! version byte.
//!
//! Every checkpoint writes each profile its generation changed, and every
//! attempt on an identifier that left the journal's overlay reads one back
//! (`ato_writer.rs`), so over many identifiers the encoding is paid on both
//! sides of every attempt: the journal's frames moving from JSON to
//! postcard served 15 % more attempts over 50 000 identifiers
//! (BENCHMARKS.md, "The durable hello-world"). Rows written by earlier
//! builds are JSON objects, which begin with `{`, and still read.

use crate::{AtoProfile, StoreError};

/// First byte of a postcard row.
const POSTCARD: u8 = 1;

/// The row for `p`.
pub(super) fn encode(p: &AtoProfile) -> Vec<u8> {
    let mut out = vec![POSTCARD];
    // Strings, integers, options and vectors into a `Vec`: encoding cannot
    // fail.
    let _ = postcard::to_io(p, &mut out);
    out
}

/// The profile in a row, postcard or JSON. The error names where it
/// broke, never the content.
pub(super) fn decode(row: &[u8]) -> Result<AtoProfile, StoreError> {
    match row.split_first() {
        Some((&POSTCARD, rest)) => postcard::from_bytes(rest)
            .map_err(|e| StoreError::Corrupt(format!("undecodable profile row ({e})"))),
        Some((b'{', _)) => super::rows::decode(row),
        _ => Err(StoreError::Corrupt(
            "profile row of an unknown format".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{
        FailureCell, GeoPoint, KnownDevice, KnownRegion, LoginRecord, TrustedDevice,
    };
    use qyzar_shared::ids::DeviceId;

    fn full() -> AtoProfile {
        let d = DeviceId::parse("dev_znIaVdPb6J1bQ0gj-I4evw").unwrap();
        AtoProfile {
            last_success: Some(LoginRecord {
                at: 1_733_355_000_000,
                attempt_id: "a1".into(),
                device_id: Some(d.clone()),
                ip: Some("2001:db8::1".into()),
                region: Some("DE".into()),
                location: Some(GeoPoint {
                    lat_e4: -335_000,
                    lon_e4: 1_510_000,
                    radius_km: 20,
                }),
                platform: Some("Linux".into()),
                browser: Some("Firefox \"q\" ü".into()),
            }),
            devices: vec![KnownDevice {
                device_id: d.clone(),
                first_seen: 1,
                last_seen: 2,
                successes: 3,
            }],
            regions: vec![KnownRegion {
                region: "DE".into(),
                first_seen: 1,
                last_seen: 2,
            }],
            trusted: vec![TrustedDevice {
                device_id: d,
                since: 5,
            }],
            failures: vec![FailureCell {
                writer: u64::MAX,
                window_ms: 900_000,
                start: 1_733_354_400_000,
                current: 7,
                previous: 2,
            }],
        }
    }

    /// What is written reads back, empty or full, and a JSON row of an
    /// earlier build reads as it did.
    #[test]
    fn rows_read_back_in_both_encodings() {
        for p in [AtoProfile::default(), full()] {
            let row = encode(&p);
            assert_eq!(decode(&row).unwrap(), p);
            let json = serde_json::to_vec(&p).unwrap();
            assert_eq!(decode(&json).unwrap(), p);
            assert!(row.len() < json.len());
        }
    }

    /// A cut or unknown row is an error, not a panic.
    #[test]
    fn a_broken_row_is_an_error() {
        let row = encode(&full());
        for cut in 0..row.len() {
            assert!(
                matches!(decode(&row[..cut]), Err(StoreError::Corrupt(_))),
                "cut at {cut}"
            );
        }
        assert!(decode(&[2, 0]).is_err());
        assert!(decode(b"[]").is_err());
    }
}
