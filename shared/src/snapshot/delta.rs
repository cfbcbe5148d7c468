//! Deltas: what changed between two snapshot versions, so a push after one
//! settings edit carries one project instead of all of them.

use std::collections::HashSet;

use super::{ProjectConfig, Snapshot, SnapshotError};

/// The change from snapshot `base_version` to `version`: projects added or
/// changed (whole), and ids removed.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SnapshotDelta {
    /// The version this delta must be applied to, exactly.
    pub base_version: u64,
    /// The version the result carries; higher than `base_version`.
    pub version: u64,
    /// When admin built the target version (Unix ms).
    pub issued_at_ms: i64,
    /// Projects added or changed, each complete.
    pub upserts: Vec<ProjectConfig>,
    /// Ids of projects deleted. Removing an id the base lacks is harmless and
    /// accepted, so a delete is idempotent.
    pub removed: Vec<String>,
}

impl SnapshotDelta {
    /// The delta that turns `old` into `new`; admin computes it on every
    /// change and pushes it to engines known to hold `old`.
    pub fn between(old: &Snapshot, new: &Snapshot) -> Result<SnapshotDelta, SnapshotError> {
        if new.version <= old.version {
            return Err(SnapshotError::StaleVersion {
                current: old.version,
                offered: new.version,
            });
        }
        let upserts = new
            .projects
            .iter()
            .filter(|p| old.project(&p.project_id) != Some(p))
            .cloned()
            .collect();
        let removed = old
            .projects
            .iter()
            .filter(|p| new.project(&p.project_id).is_none())
            .map(|p| p.project_id.clone())
            .collect();
        Ok(SnapshotDelta {
            base_version: old.version,
            version: new.version,
            issued_at_ms: new.issued_at_ms,
            upserts,
            removed,
        })
    }
}

impl Snapshot {
    /// Applies a delta, answering the next snapshot and leaving `self`
    /// untouched (requests in flight keep reading it).
    ///
    /// Refused: a delta built on another version ([`SnapshotError::BaseMismatch`];
    /// the receiver should pull a full snapshot), one that does not move the
    /// version forward ([`SnapshotError::StaleVersion`]), and one naming a
    /// project twice ([`SnapshotError::DuplicateProject`]).
    pub fn apply_delta(&self, delta: &SnapshotDelta) -> Result<Snapshot, SnapshotError> {
        if delta.base_version != self.version {
            return Err(SnapshotError::BaseMismatch {
                current: self.version,
                base: delta.base_version,
            });
        }
        if delta.version <= delta.base_version {
            return Err(SnapshotError::StaleVersion {
                current: delta.base_version,
                offered: delta.version,
            });
        }
        let mut touched: HashSet<&str> =
            HashSet::with_capacity(delta.upserts.len() + delta.removed.len());
        let ids = delta
            .upserts
            .iter()
            .map(|p| p.project_id.as_str())
            .chain(delta.removed.iter().map(String::as_str));
        for id in ids {
            if !touched.insert(id) {
                return Err(SnapshotError::DuplicateProject(id.to_owned()));
            }
        }
        let mut projects: Vec<ProjectConfig> = self
            .projects
            .iter()
            .filter(|p| !touched.contains(p.project_id.as_str()))
            .cloned()
            .collect();
        projects.extend(delta.upserts.iter().cloned());
        Snapshot::new(delta.version, delta.issued_at_ms, projects)
    }
}
