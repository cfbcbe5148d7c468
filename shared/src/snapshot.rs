//! The versioned config snapshot admin pushes to every engine.
//!
//! A [`Snapshot`] holds everything an engine needs to answer without the
//! control-plane database: per project the secret hashes, signing keys,
//! settings, origin tokens and opt-outs. Admin pushes it whole or as a
//! [`SnapshotDelta`]; both travel in the framed, digest-checked rkyv encoding
//! of [`wire`]. The engine decodes into owned values (checked by bytecheck,
//! no `unsafe`), builds a [`ConfigIndex`] once per swap and stores it in an
//! `ArcSwap`, so the hot path does one hash lookup and no parsing.
//!
//! Invariants every `Snapshot` value holds, whichever way it was made
//! ([`Snapshot::new`], [`SnapshotBuilder`], decoding, [`Snapshot::apply_delta`]):
//! projects sorted by id with no id twice, and each project
//! [normalised](ProjectConfig::normalise) so its lookups can binary-search.
//!
//! Settings are carried as the typed
//! [`ProjectSettings`](crate::settings::ProjectSettings) (which derives
//! rkyv) rather than as their JSON text: the engine gets them with the one
//! checked decode, with no second parse and no per-project error path at
//! swap time. The cost is that a change to the settings types changes the
//! encoding, which is what [`wire::FORMAT_VERSION`] is for.

mod delta;
mod index;
mod project;
pub mod provision;
pub mod wire;

pub use delta::SnapshotDelta;
pub use index::ConfigIndex;
pub use project::{
    Ed25519KeyEntry, Hs256KeyEntry, OriginTokenEntry, ProjectConfig, SecretHashEntry,
};
pub use wire::{decode_delta, decode_snapshot, encode_delta, encode_snapshot, SnapshotKind};

/// Largest encoded snapshot or delta an engine accepts, pushed or pulled
/// (64 MiB): it bounds what one caller can make an engine buffer.
pub const MAX_ENCODED_BYTES: usize = 64 * 1024 * 1024;

/// What admin lets the encoded snapshot grow to by default: the engines'
/// limit less 8 MiB of headroom for changes admitted concurrently against
/// the same last build. A change that would pass it is refused alone
/// (`409 config_budget_exceeded`), so the snapshot never reaches the limit
/// after which every push would be refused.
pub const DEFAULT_BUDGET_BYTES: usize = 56 * 1024 * 1024;

/// Why a snapshot or delta was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with `QZSN`.
    #[error("not a qyzar snapshot: bad magic")]
    BadMagic,
    /// Encoded by a format this build does not know (newer admin, older engine).
    #[error("unsupported snapshot format version {0}")]
    UnsupportedVersion(u16),
    /// The kind byte is neither full nor delta.
    #[error("unknown snapshot kind {0}")]
    UnknownKind(u8),
    /// A full snapshot was given where a delta was expected, or the reverse.
    #[error("expected a {expected} payload, found a {found}")]
    WrongKind {
        /// What the caller asked to decode.
        expected: SnapshotKind,
        /// What the header says.
        found: SnapshotKind,
    },
    /// Fewer bytes than the header or its payload length announce.
    #[error("snapshot is truncated")]
    Truncated,
    /// More bytes than the header's payload length announces.
    #[error("snapshot has bytes after its payload")]
    TrailingBytes,
    /// The payload's SHA-256 differs from the header's: corrupted in transit.
    #[error("snapshot digest does not match its payload")]
    DigestMismatch,
    /// The payload passed the digest but is not a valid archive, or breaks a
    /// snapshot invariant.
    #[error("snapshot payload is invalid: {0}")]
    Invalid(String),
    /// A delta built on another version than the one held.
    #[error("delta applies to version {base}, but version {current} is held")]
    BaseMismatch {
        /// Version held by the receiver.
        current: u64,
        /// Version the delta was computed from.
        base: u64,
    },
    /// Versions only move forward.
    #[error("version {offered} does not move past version {current}")]
    StaleVersion {
        /// Version held (or the delta's base).
        current: u64,
        /// Version offered.
        offered: u64,
    },
    /// One project id appears twice (or is both upserted and removed).
    #[error("project {0} appears twice")]
    DuplicateProject(String),
    /// The archive could not be written (it would exceed rkyv's 2 GiB
    /// relative-pointer range).
    #[error("snapshot could not be encoded: {0}")]
    Encode(String),
}

/// A whole configuration at one version. Immutable once built; see the
/// module docs for its invariants.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Snapshot {
    version: u64,
    issued_at_ms: i64,
    projects: Vec<ProjectConfig>,
}

impl Snapshot {
    /// Builds a snapshot: normalises each project, sorts them by id and
    /// refuses an id given twice.
    pub fn new(
        version: u64,
        issued_at_ms: i64,
        mut projects: Vec<ProjectConfig>,
    ) -> Result<Self, SnapshotError> {
        projects.iter_mut().for_each(ProjectConfig::normalise);
        projects.sort_unstable_by(|a, b| a.project_id.cmp(&b.project_id));
        if let Some(pair) = projects
            .windows(2)
            .find(|w| w[0].project_id == w[1].project_id)
        {
            return Err(SnapshotError::DuplicateProject(pair[0].project_id.clone()));
        }
        Ok(Self {
            version,
            issued_at_ms,
            projects,
        })
    }

    /// Monotonic version: engines accept only a higher one.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// When admin built it (Unix ms), to report config staleness.
    pub fn issued_at_ms(&self) -> i64 {
        self.issued_at_ms
    }

    /// The projects, sorted by id.
    pub fn projects(&self) -> &[ProjectConfig] {
        &self.projects
    }

    /// The project with this id, by binary search.
    pub fn project(&self, id: &str) -> Option<&ProjectConfig> {
        let i = self
            .projects
            .binary_search_by(|p| p.project_id.as_str().cmp(id))
            .ok()?;
        Some(&self.projects[i])
    }

    /// Gives the projects back, e.g. to edit them into the next version.
    pub fn into_projects(self) -> Vec<ProjectConfig> {
        self.projects
    }

    /// Re-establishes the invariants on a value that did not come through
    /// [`Snapshot::new`] (a decoded archive): the order is checked, not
    /// repaired, because a foreign order means a foreign encoder.
    fn check_decoded(mut self) -> Result<Self, SnapshotError> {
        if let Some(pair) = self
            .projects
            .windows(2)
            .find(|w| w[0].project_id >= w[1].project_id)
        {
            return Err(SnapshotError::Invalid(format!(
                "projects are not in strictly ascending id order at {}",
                pair[1].project_id
            )));
        }
        self.projects.iter_mut().for_each(ProjectConfig::normalise);
        Ok(self)
    }
}

/// Collects projects for a snapshot; for admin and tests alike.
#[derive(Debug, Clone, Default)]
pub struct SnapshotBuilder {
    version: u64,
    issued_at_ms: i64,
    projects: Vec<ProjectConfig>,
}

impl SnapshotBuilder {
    /// Starts a snapshot at this version and issue time.
    pub fn new(version: u64, issued_at_ms: i64) -> Self {
        Self {
            version,
            issued_at_ms,
            projects: Vec::new(),
        }
    }

    /// Adds a project.
    pub fn project(mut self, project: ProjectConfig) -> Self {
        self.projects.push(project);
        self
    }

    /// Sorts, checks and seals; see [`Snapshot::new`].
    pub fn build(self) -> Result<Snapshot, SnapshotError> {
        Snapshot::new(self.version, self.issued_at_ms, self.projects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ProjectId;
    use crate::settings::ProjectSettings;

    fn project(id: &ProjectId) -> ProjectConfig {
        let hs = Hs256KeyEntry {
            kid: "k1".into(),
            key: [1; 32],
            valid_until_ms: None,
        };
        ProjectConfig::new(id, [9; 32], hs, [3; 32], ProjectSettings::default())
    }

    #[test]
    fn snapshots_sort_and_refuse_duplicates() {
        let (a, b) = (ProjectId::generate(), ProjectId::generate());
        let s = SnapshotBuilder::new(1, 0)
            .project(project(&a))
            .project(project(&b))
            .build()
            .unwrap();
        assert!(s
            .projects()
            .windows(2)
            .all(|w| w[0].project_id < w[1].project_id));
        assert!(s.project(a.as_str()).is_some() && s.project("prj_missing").is_none());
        let dup = SnapshotBuilder::new(1, 0)
            .project(project(&a))
            .project(project(&a))
            .build();
        assert_eq!(
            dup,
            Err(SnapshotError::DuplicateProject(a.as_str().to_owned()))
        );
    }
}
