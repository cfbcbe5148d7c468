//! Write slots: how many writes may wait for the store's writers at once,
//! in all and per project.
//!
//! Every caller of a write holds a slot until its commit is durable. The
//! total bounds what the two writers' queues hold, whatever the load. The
//! share per project keeps one tenant's flood (a burst of `/connect`
//! writing sessions, a credential-stuffing run through anti-ATO) from
//! holding every slot, so that another tenant's write would wait behind it
//! for a slot as well as for its commit: past its share, a project's
//! writes wait on its own semaphore before they take one of the total.
//! Another project's write then always finds a free slot, unless
//! [`SHARES`] projects flood at once.
//!
//! A project gets its semaphore on its first write; writes come only
//! after the engine has authenticated the caller for the project, so the
//! map holds at most the projects of the served configuration (a few dozen
//! bytes each).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use qyzar_shared::ids::ProjectId;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// How many projects may hold their whole share at once: a share is the
/// total divided by this.
pub(super) const SHARES: usize = 4;

/// The total and the per-project shares of write slots.
pub(super) struct Slots {
    all: Semaphore,
    share: usize,
    /// Read on every write, written once per project: a read lock, so
    /// the engine's worker threads do not queue on it. foldhash, as the
    /// journal's maps (`journal::Map`): the keys are authenticated projects.
    projects: RwLock<HashMap<ProjectId, Arc<Semaphore>, foldhash::fast::RandomState>>,
}

/// One write's right to wait for its commit; given back when dropped.
pub(super) struct Slot<'a> {
    _own: Option<OwnedSemaphorePermit>,
    _all: SemaphorePermit<'a>,
}

impl Slots {
    /// `total` slots, a project holding at most `total / SHARES` (at
    /// least one).
    pub(super) fn new(total: usize) -> Self {
        Self {
            all: Semaphore::new(total),
            share: (total / SHARES).max(1),
            projects: RwLock::default(),
        }
    }

    /// Waits for a slot of `project`'s share (none for the engine's own
    /// batches, which carry several projects' rows), then for one of the
    /// total.
    pub(super) async fn acquire(
        &self,
        project: Option<&ProjectId>,
    ) -> Result<Slot<'_>, AcquireError> {
        let own = match project {
            Some(p) => Some(self.of(p).acquire_owned().await?),
            None => None,
        };
        let all = self.all.acquire().await?;
        Ok(Slot {
            _own: own,
            _all: all,
        })
    }

    fn of(&self, project: &ProjectId) -> Arc<Semaphore> {
        // A panic elsewhere while holding the lock left whole entries.
        if let Some(s) = self
            .projects
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(project)
        {
            return Arc::clone(s);
        }
        let mut map = self.projects.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            map.entry(project.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.share))),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn projects(n: usize) -> Vec<ProjectId> {
        (0..n).map(|_| ProjectId::generate()).collect()
    }

    async fn waits<T>(f: impl std::future::Future<Output = T>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), f)
            .await
            .is_err()
    }

    /// A project at its share waits; another project's write does not,
    /// and the flood's next write goes in once one of its own is answered.
    #[tokio::test]
    async fn a_flooding_project_waits_at_its_share_and_others_do_not() {
        let slots = Slots::new(8);
        let p = projects(2);
        let (a, b) = (&p[0], &p[1]);
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(slots.acquire(Some(a)).await.expect("slot"));
        }
        assert!(waits(slots.acquire(Some(a))).await, "a third for a");
        let other = slots.acquire(Some(b)).await.expect("b is not held up");
        let system = slots.acquire(None).await.expect("nor the engine's batches");
        held.pop();
        assert!(!waits(slots.acquire(Some(a))).await, "a's slot came back");
        drop((other, system));
    }

    /// The total still bounds everything: four projects at their shares
    /// (or the engine's batches) fill it, and then everyone waits.
    #[tokio::test]
    async fn the_total_bounds_all_projects_together() {
        let slots = Slots::new(8);
        let p = projects(5);
        let mut held = Vec::new();
        for project in &p[..4] {
            for _ in 0..2 {
                held.push(slots.acquire(Some(project)).await.expect("slot"));
            }
        }
        assert!(waits(slots.acquire(Some(&p[4]))).await);
        assert!(waits(slots.acquire(None)).await);
        held.clear();
        assert!(!waits(slots.acquire(Some(&p[4]))).await);
    }
}
