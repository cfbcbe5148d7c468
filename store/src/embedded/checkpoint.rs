//! Checkpoints: how what the anti-ATO journal holds is written to redb,
//! by the redb writer thread (`writer.rs`), never by the thread that
//! appends journal frames (`ato_writer.rs`).
//!
//! The journal's thread only appends frames, syncs them and hands work
//! over; redb's write lock, its page work and its syncs stay on the other
//! thread. When one thread did both, a checkpoint's durable commit (tens of
//! megabytes of pages after a large generation) held every group commit
//! queued behind it for up to 70 ms, and a separate low-priority thread
//! holding redb's write lock stalled the writer behind it (BENCHMARKS.md,
//! "The anti-ATO journal"). The work:
//!
//! - **log flushes**: attempt-log rows the journal's thread took out of the
//!   active generation, written in one durable transaction, then dropped
//!   from memory (replaying them again writes the same keys);
//! - **checkpoints**: a frozen generation's profiles and remaining rows,
//!   in slices (each one short durable transaction between the redb
//!   writer's batches), the last recording the generation as
//!   checkpointed. Then the frozen changes leave memory and the journal's
//!   thread may reuse their file.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use redb::Database;

use super::journal::{self, LogRows, Pending, SharedOverlay};
use super::log_row;
use super::writer::write_rows;
use crate::AtoProfile;

/// Bytes of profiles and log rows one checkpoint slice writes.
pub(super) const CHECKPOINT_SLICE: usize = 64 << 10;
/// How long a waiting writer looks again at whether the redb writer
/// stopped.
const RETRY: Duration = Duration::from_millis(100);

/// Work for the redb writer, done in the order sent: a generation's log
/// flushes before its checkpoint, so a generation recorded as checkpointed
/// has every row in redb.
pub(super) enum Job {
    /// Write these rows (also in [`journal::Overlay::flushing`]).
    FlushLog(LogRows),
    /// Write this frozen generation.
    Checkpoint(Arc<Pending>),
}

/// What the two writers share besides the overlay.
#[derive(Default)]
pub(super) struct Progress {
    /// The newest generation written to redb; the writer waits on it when
    /// it must (a bound reached, a close, a purge).
    checkpointed: Mutex<u64>,
    changed: Condvar,
    /// Set when the redb writer stopped: nobody waits for it any more.
    pub(super) stop: AtomicBool,
}

impl Progress {
    pub(super) fn new(checkpointed: u64) -> Self {
        Self {
            checkpointed: Mutex::new(checkpointed),
            ..Self::default()
        }
    }

    /// Blocks until `generation` is checkpointed, or the redb writer
    /// stopped.
    pub(super) fn wait_for(&self, generation: u64) {
        let mut g = self.checkpointed.lock().unwrap_or_else(|e| e.into_inner());
        while *g < generation && !self.stop.load(Ordering::Relaxed) {
            g = self
                .changed
                .wait_timeout(g, RETRY)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub(super) fn done(&self, generation: u64) {
        let mut g = self.checkpointed.lock().unwrap_or_else(|e| e.into_inner());
        *g = (*g).max(generation);
        self.changed.notify_all();
    }
}

/// A checkpoint under way: the frozen generation, its profile keys in
/// order and how far the slices got.
pub(super) struct Checkpoint {
    pending: Arc<Pending>,
    keys: Vec<Vec<u8>>,
    next_key: usize,
    next_log: usize,
}

impl Checkpoint {
    /// The checkpoint of `pending`, its profiles written in key order
    /// (consecutive keys share B-tree leaves). Sorted here, on the redb
    /// writer: the frozen generation no longer changes, so no lock is
    /// needed and the journal's thread is not held up.
    pub(super) fn new(pending: Arc<Pending>) -> Self {
        let mut keys: Vec<Vec<u8>> = pending.profiles.keys().cloned().collect();
        keys.sort_unstable();
        Self {
            pending,
            keys,
            next_key: 0,
            next_log: 0,
        }
    }

    /// Writes the next slice (one durable transaction); the last also
    /// records the generation as checkpointed and drops it from the
    /// overlay. Returns whether the checkpoint is complete; a failed slice
    /// is logged and tried again at the next call.
    pub(super) fn slice(
        &mut self,
        db: &Database,
        overlay: &SharedOverlay,
        progress: &Progress,
    ) -> bool {
        let frozen = &*self.pending;
        let keys = &self.keys;
        let mut bytes = 0;
        let mut profiles: Vec<(Vec<u8>, AtoProfile)> = Vec::new();
        let mut k = self.next_key;
        while bytes < CHECKPOINT_SLICE && k < keys.len() {
            if let Some((p, w)) = frozen.profiles.get(&keys[k]) {
                profiles.push((keys[k].clone(), p.clone()));
                bytes += w;
            }
            k += 1;
        }
        let mut l = self.next_log;
        while bytes < CHECKPOINT_SLICE && l < frozen.log.len() {
            let (key, row) = &frozen.log[l];
            bytes += key.len() + row.len();
            l += 1;
        }
        let done = k >= keys.len() && l >= frozen.log.len();
        let rows = log_row::join(&frozen.log[self.next_log..l]);
        if let Err(e) = write_rows(db, &profiles, &rows, done.then_some(frozen.generation)) {
            tracing::error!(error = %e, "ato journal checkpoint failed; retrying");
            return false;
        }
        (self.next_key, self.next_log) = (k, l);
        if done {
            // Freed by the last `Arc` (this one), after the lock.
            let _written = journal::write(overlay).frozen.take();
            progress.done(frozen.generation);
        }
        done
    }
}

/// Writes taken-out log rows in one durable transaction, then drops them
/// from the overlay (readers find them in redb). Returns whether written;
/// on an error they stay queued and in memory.
pub(super) fn flush_log(db: &Database, overlay: &SharedOverlay, rows: &LogRows) -> bool {
    if let Err(e) = write_rows(db, &[], &log_row::join(rows), None) {
        tracing::error!(error = %e, "ato log flush failed; retrying");
        return false;
    }
    let mut o = journal::write(overlay);
    if let Some(i) = o.flushing.iter().position(|r| Arc::ptr_eq(r, rows)) {
        // Dropped after the lock: the caller's `Arc` still holds them.
        let _mine = o.flushing.remove(i);
    }
    true
}
