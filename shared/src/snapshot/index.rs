//! The hot-path view of a snapshot: built once per swap, read by every request.

use std::collections::HashMap;

use super::{ProjectConfig, Snapshot};

/// An owned snapshot plus a hash index by project id. The engine keeps one in
/// an `ArcSwap`; building it is the only per-swap cost, and a lookup is one
/// hash of the id from the request.
#[derive(Debug, Clone)]
pub struct ConfigIndex {
    snapshot: Snapshot,
    by_id: HashMap<Box<str>, usize>,
}

impl ConfigIndex {
    /// Indexes a snapshot. Ids are unique (a [`Snapshot`] guarantees it), so
    /// every id maps to exactly one project.
    pub fn new(snapshot: Snapshot) -> Self {
        let by_id = snapshot
            .projects
            .iter()
            .enumerate()
            .map(|(i, p)| (p.project_id.as_str().into(), i))
            .collect();
        Self { snapshot, by_id }
    }

    /// The project with this id.
    pub fn project(&self, id: &str) -> Option<&ProjectConfig> {
        self.by_id.get(id).map(|&i| &self.snapshot.projects[i])
    }

    /// The snapshot's version, to refuse older pushes and report staleness.
    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    /// When admin issued this snapshot (Unix ms).
    pub fn issued_at_ms(&self) -> i64 {
        self.snapshot.issued_at_ms
    }

    /// The indexed snapshot, e.g. to apply the next delta to it.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Number of projects.
    pub fn len(&self) -> usize {
        self.snapshot.projects.len()
    }

    /// Whether the snapshot holds no project.
    pub fn is_empty(&self) -> bool {
        self.snapshot.projects.is_empty()
    }
}
