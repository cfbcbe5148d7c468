//! The anti-ATO writer: the thread that makes `record_ato` durable by
//! appending one journal frame per group commit (`journal.rs`).
//!
//! It joins each attempt into its identifier's profile (as journalled,
//! else as stored in redb), appends the changed profiles and the group's
//! attempt-log rows as one frame, syncs it and acks the callers; readers
//! see the changes from then on, in the [`Overlay`](journal::Overlay). It
//! never takes redb's write lock: log rows and frozen generations go to
//! the redb writer (`writer.rs`, `checkpoint.rs`), so redb's page work and
//! syncs never hold up a group commit.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use qyzar_shared::ids::ProjectId;
use redb::{Database, ReadTransaction};
use tokio::sync::oneshot;

use super::checkpoint::{Job, Progress};
use super::journal::{self, Frame, Journal, SharedOverlay};
use super::keys::Key;
use super::writer::{stored_profile, Ack, LogBatch, Msg, Op, Outcome, MAX_BATCH};
use crate::{expire_profile, AtoProfile, StoreError};

/// The active journal generation is frozen and checkpointed once its
/// profiles and log rows hold this many bytes in memory
/// ([`Pending::bytes`](journal::Pending) and `log_bytes`)…
const ROTATE_OVERLAY_BYTES: usize = 32 << 20;
/// …or its file this many bytes (after two rotations, both files have
/// their size and a frame's sync writes data only)…
///
/// Each checkpoint rewrites every profile its generation changed, so the
/// generation's length sets how often a busy identifier's profile is
/// written to redb. Over 50 000 identifiers a frame journals about 370
/// bytes an attempt (the profile and the log row): at 75 000 attempts/s
/// a 64 MiB bound rotated every 2 s, each checkpoint rewriting nearly all
/// 50 000 profiles. At 256 MiB the 10 s age rotates first up to about
/// 25 MiB/s, and the redb writer's share of the core fell from 7.85 to
/// 3.0 % in a profile of that flood (alternated with 64 MiB, 15 s runs of
/// `wrk -c64`: 4–10 % more answers/s in one series, within the machine's
/// drift in another; BENCHMARKS.md, "Fewer checkpoints"). Both files are at most this large; a clean start reads
/// only their first frames, and recovery one file at a time
/// (`Journal::open`, `Journal::replay`).
const ROTATE_JOURNAL_BYTES: u64 = 256 << 20;
/// …or its first change is this old…
const ROTATE_AGE: Duration = Duration::from_secs(10);
/// …or once no anti-ATO write came for this long.
const ROTATE_QUIET: Duration = Duration::from_secs(1);
/// The active generation's attempt-log rows go to redb (by the redb
/// writer) once they hold this many bytes, so memory holds profiles,
/// which coalesce, and not the log, which only grows. Log rows are keyed
/// by time within a project: a flush appends to a few leaves.
const LOG_FLUSH_BYTES: usize = 256 << 10;
/// Most log flushes handed over and not yet written: past it rows stay in
/// the active generation (and count towards its bound), so a redb writer
/// that falls behind or fails cannot make memory grow without end.
const MAX_FLUSHING: usize = 64;
/// With frames in the active generation, how often the writer looks, when
/// nothing arrives, whether it has gone quiet ([`ROTATE_QUIET`]).
const IDLE_STEP: Duration = Duration::from_millis(10);

/// A message to the anti-ATO writer.
pub(super) enum AtoMsg {
    /// A `record_ato` ([`Op::RecordAto`]).
    Write(Box<Op>, Ack),
    /// Freeze what is journalled, hand it to the redb writer and answer
    /// once it is in redb (before a purge).
    Checkpoint(oneshot::Sender<()>),
    /// As `Checkpoint`, then stop.
    Close(oneshot::Sender<()>),
}

/// The anti-ATO writer's state.
pub(super) struct AtoWriter {
    /// For reading a stored profile (never written here).
    pub(super) db: Arc<Database>,
    pub(super) commits: Arc<AtomicU64>,
    /// Tie-breaker of attempt-log rows of one project in one millisecond;
    /// seeded randomly at open so a restart does not reuse values.
    pub(super) next_seq: u64,
    pub(super) journal: Journal,
    /// What the journal holds that redb does not yet; readers share it.
    pub(super) overlay: SharedOverlay,
    /// What the redb writer has checkpointed.
    pub(super) progress: Arc<Progress>,
    /// Where log flushes and checkpoints go: the redb writer.
    pub(super) redb: Sender<Msg>,
}

impl AtoWriter {
    /// Runs until every sender is gone or an [`AtoMsg::Close`] arrives. A
    /// stop without close leaves the active generation to the replay.
    ///
    /// Writes are taken in groups of [`group_size`]: what waits is read
    /// from the channel into `queue`, and a group is at most about half of
    /// it and the group before, the rest left for the next commit.
    pub(super) fn run(mut self, rx: Receiver<AtoMsg>) {
        let mut queue: VecDeque<(Box<Op>, Ack)> = VecDeque::new();
        let mut after: Option<AtoMsg> = None;
        let mut previous = 0;
        loop {
            if queue.is_empty() && after.is_none() {
                let wait = if self.journal.len() > 0 {
                    IDLE_STEP
                } else {
                    Duration::from_secs(3600)
                };
                match rx.recv_timeout(wait) {
                    Ok(AtoMsg::Write(op, ack)) => queue.push_back((op, ack)),
                    Ok(m) => after = Some(m),
                    Err(RecvTimeoutError::Timeout) => {
                        self.step_checkpoint(true);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            // Writes before a checkpoint or a close are committed before
            // it; those after it stay in the channel until it is done.
            while after.is_none() && queue.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(AtoMsg::Write(op, ack)) => queue.push_back((op, ack)),
                    Ok(m) => after = Some(m),
                    Err(_) => break,
                }
            }
            if !queue.is_empty() {
                let take = group_size(queue.len(), previous);
                let batch: Vec<_> = queue.drain(..take).collect();
                previous = batch.len();
                self.journal_ato(batch, crate::now_ms());
                self.step_checkpoint(false);
                continue;
            }
            match after.take() {
                Some(AtoMsg::Checkpoint(ack)) => {
                    self.checkpoint_all();
                    let _ = ack.send(());
                }
                Some(AtoMsg::Close(ack)) => {
                    self.checkpoint_all();
                    let _ = ack.send(());
                    return;
                }
                Some(AtoMsg::Write(..)) | None => {}
            }
        }
    }

    /// Joins each `record_ato` into its identifier's profile (as journalled,
    /// else as stored in redb), exactly as joining it in a redb
    /// transaction of its own would, and appends the changed profiles and the batch's log rows as one
    /// journal frame. Readers see the changes once the frame is durable,
    /// when the callers are acked.
    pub(super) fn journal_ato(&mut self, batch: Vec<(Box<Op>, Ack)>, now: i64) {
        // One entry per identifier the group changed; keys are distinct, so
        // the frame lists them in any order (replay and the overlay go by
        // key).
        let mut changed: journal::Map<Vec<u8>, AtoProfile> = journal::Map::default();
        let mut log: journal::Map<ProjectId, LogBatch> = journal::Map::default();
        // Each write goes back to its caller with the answer
        // ([`Outcome::Returned`]), so this thread reads it and frees none
        // of it.
        let mut acks = Vec::with_capacity(batch.len());
        let mut key = Vec::new();
        let mut txn: Option<ReadTransaction> = None;
        {
            let overlay = journal::read(&self.overlay);
            for (op, ack) in batch {
                let Op::RecordAto {
                    project,
                    identifier,
                    attempt,
                    update,
                } = &*op
                else {
                    continue;
                };
                key = Key::reuse(std::mem::take(&mut key))
                    .str(project.as_str())
                    .str(identifier)
                    .into_bytes();
                let p = match changed.get_mut(key.as_slice()) {
                    Some(p) => p,
                    None => {
                        let base = match overlay.profile(&key) {
                            Some(p) => Ok(Some(p.clone())),
                            None => stored_profile(&self.db, &mut txn, &key),
                        };
                        match base {
                            Ok(p) => changed.entry(key.clone()).or_insert(p.unwrap_or_default()),
                            // This write alone fails (an undecodable row,
                            // a read error); nothing of it is joined.
                            Err(err) => {
                                let _ = ack.send(Err(err));
                                continue;
                            }
                        }
                    }
                };
                p.join(&update.cells);
                p.forget(&update.forget);
                expire_profile(p, now);
                p.bound(now);
                if let Some(a) = attempt {
                    match log.get_mut(project) {
                        Some(b) => b.push(a),
                        None => log.entry(project.clone()).or_default().push(a),
                    }
                }
                acks.push((ack, op));
            }
        }
        drop(txn);
        let mut frame = Frame {
            profiles: changed.into_iter().collect(),
            log: Vec::with_capacity(log.len()),
        };
        for (project, batch) in log {
            if let Some(row) = batch.row(&project, &mut self.next_seq) {
                frame.log.push(row);
            }
        }
        if frame.is_empty() {
            for (ack, op) in acks {
                let _ = ack.send(Ok(Outcome::Returned(op)));
            }
            return;
        }
        match self.journal.append(&frame) {
            Ok(()) => {
                journal::write(&self.overlay).active.add(frame);
                self.commits.fetch_add(1, Ordering::Relaxed);
                for (ack, op) in acks {
                    let _ = ack.send(Ok(Outcome::Returned(op)));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = acks.len(), "ato journal append failed");
                let err = StoreError::Unavailable(format!("ato journal: {e}"));
                for (ack, _) in acks {
                    let _ = ack.send(Err(err.clone()));
                }
            }
        }
    }

    /// Hands redb work to the redb writer: a log flush once the active
    /// generation's rows reach [`LOG_FLUSH_BYTES`], and the active
    /// generation itself once it is due ([`ROTATE_OVERLAY_BYTES`] and the
    /// rest) and the previous one is written. Past twice the bounds with
    /// the previous one still being written, waits for it: the memory and
    /// the files stay bounded whatever the write rate.
    fn step_checkpoint(&mut self, idle: bool) {
        let (flush, frozen, due, over) = {
            let o = journal::read(&self.overlay);
            let a = &o.active;
            let age = a.since.map_or(Duration::ZERO, |t| t.elapsed());
            let quiet = a.last.map_or(Duration::ZERO, |t| t.elapsed());
            let len = self.journal.len();
            let held = a.bytes + a.log_bytes;
            (
                a.log_bytes >= LOG_FLUSH_BYTES && o.flushing.len() < MAX_FLUSHING,
                o.frozen.as_ref().map(|f| f.generation),
                // Frames whose log rows are already in redb still need the
                // checkpoint's durable commit before their file is reused.
                len > 0
                    && (held >= ROTATE_OVERLAY_BYTES
                        || len >= ROTATE_JOURNAL_BYTES
                        || age >= ROTATE_AGE
                        || (idle && quiet >= ROTATE_QUIET)),
                held >= 2 * ROTATE_OVERLAY_BYTES || len >= 2 * ROTATE_JOURNAL_BYTES,
            )
        };
        if flush {
            let rows = {
                let mut o = journal::write(&self.overlay);
                let rows = Arc::new(o.active.take_log());
                o.flushing.push(Arc::clone(&rows));
                rows
            };
            self.send(Job::FlushLog(rows));
        }
        match frozen {
            None if due => self.rotate(),
            Some(generation) if over => {
                self.progress.wait_for(generation);
                self.rotate_if_free();
            }
            _ => {}
        }
    }

    /// Rotates unless a frozen generation is still held (the redb writer
    /// stopped before writing it): its file must not be reused.
    fn rotate_if_free(&mut self) -> bool {
        let free = journal::read(&self.overlay).frozen.is_none();
        if free {
            self.rotate();
        }
        free
    }

    fn send(&mut self, job: Job) {
        // The redb writer stops only after this thread: a failed send means
        // it died (a panic); the journal still has everything.
        let _ = self.redb.send(Msg::Job(job));
    }

    /// Freezes the active generation and hands it to the redb writer;
    /// later frames go to the other file. Only once the previous frozen
    /// generation is written (its file is the one reused).
    pub(super) fn rotate(&mut self) {
        let held = journal::read(&self.overlay).active.profiles.len();
        let generation = self.journal.rotate();
        let mut next = journal::Pending {
            generation: self.journal.generation(),
            ..Default::default()
        };
        // About as many profiles as the last generation: no rehash of a
        // large map while the write lock is held in `journal_ato`.
        next.profiles.reserve(held);
        let pending = {
            let mut o = journal::write(&self.overlay);
            debug_assert!(o.frozen.is_none());
            let frozen = Arc::new(std::mem::replace(&mut o.active, next));
            o.frozen = Some(Arc::clone(&frozen));
            frozen
        };
        debug_assert_eq!(pending.generation, generation);
        // The keys are collected and sorted by the redb writer
        // ([`Checkpoint::new`](super::checkpoint::Checkpoint::new)): with
        // tens of thousands of identifiers that took milliseconds, and
        // here every group commit waited for it.
        self.send(Job::Checkpoint(pending));
    }

    /// Writes everything journalled to redb and waits for it (at close
    /// and before a purge).
    fn checkpoint_all(&mut self) {
        if let Some(g) = journal::read(&self.overlay)
            .frozen
            .as_ref()
            .map(|f| f.generation)
        {
            self.progress.wait_for(g);
        }
        if self.journal.len() > 0 {
            let g = self.journal.generation();
            if self.rotate_if_free() {
                self.progress.wait_for(g);
            }
        }
    }
}

/// Groups of at most this many writes are never split.
const MIN_GROUP: usize = 16;

/// How many of the `queued` writes the next group commit takes, after a
/// group of `previous`.
///
/// All of them, up to [`MIN_GROUP`]. Past it, about half of what waits now
/// and what the last commit answered. A commit that takes everything
/// leaves the worker nothing to do while it syncs: under a closed loop
/// (64 connections, each waiting for its answer) the groups fell into a
/// convoy, one group of 60 and more and one of a few, each
/// answered all at once, the core idle during the large group's sync.
/// Two groups of about half overlap one's sync with the worker parsing
/// and deciding the other's. Over 50 000 identifiers wrk counted 5–12 %
/// more answers per second and about a fifth fewer syncs; with one
/// identifier about the same rate (BENCHMARKS.md, "Group commits in
/// halves"). Under overload the groups still grow with the queue.
fn group_size(queued: usize, previous: usize) -> usize {
    if queued <= MIN_GROUP {
        return queued;
    }
    (queued + previous).div_ceil(2).clamp(MIN_GROUP, queued)
}

#[cfg(test)]
mod group_tests {
    use super::{group_size, MIN_GROUP};

    #[test]
    fn small_queues_go_whole_and_large_ones_in_about_halves() {
        assert_eq!(group_size(1, 0), 1);
        assert_eq!(group_size(MIN_GROUP, 0), MIN_GROUP);
        assert_eq!(group_size(MIN_GROUP + 1, 0), MIN_GROUP);
        assert_eq!(group_size(60, 4), 32);
        assert_eq!(group_size(1000, 32), 516);
        // Never more than what waits, never fewer than the minimum.
        for q in 0..300 {
            for p in 0..300 {
                let g = group_size(q, p);
                assert!(g <= q);
                assert!(g >= q.min(MIN_GROUP));
            }
        }
    }

    /// A closed loop of 64 requests that starts as a convoy (60 queued
    /// behind a group of 4) settles into two groups of about 32: each
    /// group's answers come back and queue while the other one syncs.
    #[test]
    fn a_convoy_settles_into_two_halves() {
        let (mut previous, mut queued) = (4, 60);
        let mut sizes = Vec::new();
        for _ in 0..12 {
            let take = group_size(queued, previous);
            // While it syncs, the previous group's requests come back.
            queued = queued - take + previous;
            previous = take;
            sizes.push(take);
        }
        let last = &sizes[6..];
        assert!(last.iter().all(|s| (28..=36).contains(s)), "{sizes:?}");
    }
}
