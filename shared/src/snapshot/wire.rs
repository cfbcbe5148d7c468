//! The bytes of a snapshot or delta on the internal push/pull channel.
//!
//! ```text
//! offset  size  field
//!      0     4  magic  b"QZSN"
//!      4     2  format version, little-endian (FORMAT_VERSION)
//!      6     1  kind: 1 = full snapshot, 2 = delta
//!      7     8  payload length in bytes, little-endian
//!     15    32  SHA-256 of the payload
//!     47     …  payload: the rkyv 0.8 archive (little-endian, aligned,
//!               32-bit relative pointers: rkyv's defaults)
//! ```
//!
//! The header is checked field by field before the payload is touched, so a
//! wrong file, an old engine or a cut transfer each get their own error. The
//! digest catches corruption; the archive is then still validated by
//! bytecheck, because a digest proves integrity, not that the producer was
//! sound. Authenticity is the transport's job (the shared push key).

use ring::digest;
use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::{Snapshot, SnapshotDelta, SnapshotError};

/// First bytes of every encoded snapshot or delta.
pub const MAGIC: [u8; 4] = *b"QZSN";
/// Encoding version. Bump it whenever an archived type changes (settings
/// included): an engine then refuses the new bytes cleanly instead of
/// misreading them, and keeps serving its last snapshot.
pub const FORMAT_VERSION: u16 = 3;
/// Bytes before the payload.
pub const HEADER_LEN: usize = 4 + 2 + 1 + 8 + 32;

/// What a payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SnapshotKind {
    /// A whole [`Snapshot`].
    Full,
    /// A [`SnapshotDelta`] against a base version.
    Delta,
}

impl SnapshotKind {
    const fn byte(self) -> u8 {
        match self {
            SnapshotKind::Full => 1,
            SnapshotKind::Delta => 2,
        }
    }

    /// Reads the kind of an encoded payload from its header without decoding
    /// it, so a receiver can route full snapshots and deltas.
    pub fn of(bytes: &[u8]) -> Result<SnapshotKind, SnapshotError> {
        let (kind, _) = read_header(bytes)?;
        Ok(kind)
    }
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SnapshotKind::Full => "full snapshot",
            SnapshotKind::Delta => "delta",
        })
    }
}

/// Encodes a full snapshot with its header.
pub fn encode_snapshot(snapshot: &Snapshot) -> Result<Vec<u8>, SnapshotError> {
    let payload = rkyv::to_bytes::<rancor::Error>(snapshot)
        .map_err(|e| SnapshotError::Encode(e.to_string()))?;
    Ok(frame(SnapshotKind::Full, &payload))
}

/// Encodes a delta with its header.
pub fn encode_delta(delta: &SnapshotDelta) -> Result<Vec<u8>, SnapshotError> {
    let payload =
        rkyv::to_bytes::<rancor::Error>(delta).map_err(|e| SnapshotError::Encode(e.to_string()))?;
    Ok(frame(SnapshotKind::Delta, &payload))
}

/// Decodes a full snapshot: header, length, digest, then a checked rkyv
/// decode into owned values, then the snapshot invariants (ids sorted and
/// unique; lookup lists normalised).
pub fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    let payload = unframe(SnapshotKind::Full, bytes)?;
    let snapshot = rkyv::from_bytes::<Snapshot, rancor::Error>(&payload)
        .map_err(|e| SnapshotError::Invalid(e.to_string()))?;
    snapshot.check_decoded()
}

/// Decodes a delta the same way; its semantics are checked when applied.
pub fn decode_delta(bytes: &[u8]) -> Result<SnapshotDelta, SnapshotError> {
    let payload = unframe(SnapshotKind::Delta, bytes)?;
    rkyv::from_bytes::<SnapshotDelta, rancor::Error>(&payload)
        .map_err(|e| SnapshotError::Invalid(e.to_string()))
}

fn frame(kind: SnapshotKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.push(kind.byte());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(digest::digest(&digest::SHA256, payload).as_ref());
    out.extend_from_slice(payload);
    out
}

/// Checks magic, version and kind; answers the kind and the announced length.
fn read_header(bytes: &[u8]) -> Result<(SnapshotKind, u64), SnapshotError> {
    let magic_seen = &bytes[..bytes.len().min(MAGIC.len())];
    if magic_seen != &MAGIC[..magic_seen.len()] {
        return Err(SnapshotError::BadMagic);
    }
    if bytes.len() < HEADER_LEN {
        return Err(SnapshotError::Truncated);
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion(version));
    }
    let kind = match bytes[6] {
        1 => SnapshotKind::Full,
        2 => SnapshotKind::Delta,
        other => return Err(SnapshotError::UnknownKind(other)),
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[7..15]);
    Ok((kind, u64::from_le_bytes(len)))
}

/// Checks the whole frame and copies the payload into an aligned buffer:
/// the input may sit at any address, and rkyv's checked access refuses
/// misaligned archives rather than reading them.
fn unframe(expected: SnapshotKind, bytes: &[u8]) -> Result<AlignedVec, SnapshotError> {
    let (found, len) = read_header(bytes)?;
    if found != expected {
        return Err(SnapshotError::WrongKind { expected, found });
    }
    let payload = &bytes[HEADER_LEN..];
    match (payload.len() as u64).cmp(&len) {
        std::cmp::Ordering::Less => return Err(SnapshotError::Truncated),
        std::cmp::Ordering::Greater => return Err(SnapshotError::TrailingBytes),
        std::cmp::Ordering::Equal => {}
    }
    if digest::digest(&digest::SHA256, payload).as_ref() != &bytes[15..HEADER_LEN] {
        return Err(SnapshotError::DigestMismatch);
    }
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    Ok(aligned)
}
