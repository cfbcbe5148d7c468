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
//!
//! Each commit costs the one core about the same whatever its size, so
//! after a group of several writes the next commit waits: until at least
//! [`COMMIT_SPACING`] after the previous one started, then, at most
//! [`GROUP_WAIT`], while the runtime's workers still have work
//! ([`crate::workers`]): the writes they are about to send join this group
//! instead of paying for the next.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Writes sent and not yet received, and when to wake this thread.
    pub(super) signal: Arc<Signal>,
    /// Longest wait for a larger group ([`GROUP_WAIT`]).
    pub(super) group_wait: Duration,
    /// Least time from a commit's start to the next one's after a group of
    /// several ([`COMMIT_SPACING`]).
    pub(super) spacing: Duration,
}

/// Why [`AtoWriter::wait_for_group`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GroupReady {
    /// The workers had nothing left to run (or no park hooks are set).
    Idle,
    /// As many writes as wanted were waiting.
    Full,
    /// The longest wait passed.
    Deadline,
    /// A checkpoint or close came.
    Message,
}

/// How senders wake the anti-ATO writer while it waits for a larger group
/// ([`AtoWriter::wait_for_group`]).
#[derive(Default)]
pub(super) struct Signal {
    /// Writes sent and not yet taken from the channel. Counted after the
    /// send, so it can be briefly -1: counted before, a sender preempted
    /// between the count and the send would leave the writer a count with
    /// nothing to read.
    sent: AtomicIsize,
    /// While the writer waits: how many sent writes wake it (0: not waiting).
    want: AtomicUsize,
    /// Checkpoints and closes sent and not yet taken from the channel: the
    /// writer does not wait for a group while one is there. Counted after
    /// the send, as `sent`, so briefly -1.
    messages: AtomicIsize,
    /// The writer's thread.
    thread: std::sync::OnceLock<std::thread::Thread>,
}

impl Signal {
    /// After a write is sent: counts it, and wakes the writer when it
    /// waits for this many.
    pub(super) fn sent(&self) {
        let n = self.sent.fetch_add(1, Ordering::SeqCst) + 1;
        let want = self.want.load(Ordering::SeqCst);
        if want != 0 && n >= want as isize && self.want.swap(0, Ordering::SeqCst) != 0 {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    fn received(&self) {
        self.sent.fetch_sub(1, Ordering::SeqCst);
    }

    /// After a checkpoint or close is sent: ends the writer's wait for a
    /// group at once (a spurious wake-up only makes it look again).
    pub(super) fn message(&self) {
        self.messages.fetch_add(1, Ordering::SeqCst);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

impl AtoWriter {
    /// Runs until every sender is gone or an [`AtoMsg::Close`] arrives. A
    /// stop without close leaves the active generation to the replay.
    ///
    /// Writes are taken in groups of [`group_size`]: what waits is read
    /// from the channel into `queue`, and a group is at most about half of
    /// it and the group before, the rest left for the next commit. After a
    /// group of several ([`waits_after`]) the next one waits, briefly, for
    /// its spacing ([`Self::wait_for_spacing`]) and for the runtime's
    /// workers to run out of work ([`Self::wait_for_group`]).
    pub(super) fn run(mut self, rx: Receiver<AtoMsg>) {
        let mut queue: VecDeque<(Box<Op>, Ack)> = VecDeque::new();
        let mut after: Option<AtoMsg> = None;
        let mut previous = 0;
        let mut started = Instant::now();
        loop {
            if queue.is_empty() && after.is_none() {
                let wait = if self.journal.len() > 0 {
                    IDLE_STEP
                } else {
                    Duration::from_secs(3600)
                };
                match rx.recv_timeout(wait) {
                    Ok(AtoMsg::Write(op, ack)) => {
                        self.signal.received();
                        queue.push_back((op, ack))
                    }
                    Ok(m) => {
                        self.signal.messages.fetch_sub(1, Ordering::SeqCst);
                        after = Some(m)
                    }
                    Err(RecvTimeoutError::Timeout) => {
                        self.step_checkpoint(true);
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            self.drain(&rx, &mut queue, &mut after);
            if !queue.is_empty() && after.is_none() && waits_after(previous, self.spacing) {
                let until = started + self.spacing;
                self.wait_for_spacing(&rx, &mut queue, &mut after, until, MAX_BATCH);
            }
            if !queue.is_empty() && after.is_none() && waits_after(previous, self.group_wait) {
                self.wait_for_group(&rx, &mut queue, &mut after, MAX_BATCH);
            }
            if !queue.is_empty() {
                let take = group_size(queue.len(), previous);
                let batch: Vec<_> = queue.drain(..take).collect();
                previous = batch.len();
                started = Instant::now();
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

    /// Reads what waits in the channel into `queue`, up to a batch.
    fn drain(
        &self,
        rx: &Receiver<AtoMsg>,
        queue: &mut VecDeque<(Box<Op>, Ack)>,
        after: &mut Option<AtoMsg>,
    ) {
        // Writes before a checkpoint or a close are committed before
        // it; those after it stay in the channel until it is done.
        while after.is_none() && queue.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(AtoMsg::Write(op, ack)) => {
                    self.signal.received();
                    queue.push_back((op, ack))
                }
                Ok(m) => {
                    self.signal.messages.fetch_sub(1, Ordering::SeqCst);
                    *after = Some(m)
                }
                Err(_) => break,
            }
        }
    }

    /// Before a group commit: while the runtime's workers have work (more
    /// writes are likely on their way), waits until they have none, or
    /// `wanted` writes wait, or [`Self::group_wait`](AtoWriter) has passed
    /// (see [`GROUP_WAIT`]), and says which. Returns at once without the
    /// park hooks ([`crate::workers`]) or with a checkpoint or close
    /// waiting.
    pub(super) fn wait_for_group(
        &self,
        rx: &Receiver<AtoMsg>,
        queue: &mut VecDeque<(Box<Op>, Ack)>,
        after: &mut Option<AtoMsg>,
        wanted: usize,
    ) -> GroupReady {
        let mut deadline = None;
        let mut waiting = None;
        loop {
            if let Some(ready) = self.take_waiting(rx, queue, after, wanted) {
                return ready;
            }
            if crate::workers::idle() {
                return GroupReady::Idle;
            }
            let now = Instant::now();
            let until = *deadline.get_or_insert(now + self.group_wait);
            if now >= until {
                return GroupReady::Deadline;
            }
            // Woken by the last worker to park from here on, or by the
            // sender that brings the queue to `wanted`.
            waiting.get_or_insert_with(crate::workers::Waiting::register);
            self.park_for(wanted - queue.len(), until - now, crate::workers::idle);
        }
    }

    /// After a group of several, holds the next commit until `until` (the
    /// previous commit's start and [`Self::spacing`](AtoWriter)), and says
    /// why it stopped. Ends early with `wanted` writes waiting (the sender
    /// that brings them wakes it) or a checkpoint or close waiting. Idle
    /// workers do not end it, unlike [`Self::wait_for_group`]: writes that
    /// come steadily leave the workers idle between them, and each commit
    /// would start as soon as the one before returned (see
    /// [`COMMIT_SPACING`]). Senders do not wake it otherwise, so a write
    /// costs no wake-up of this thread while it waits.
    pub(super) fn wait_for_spacing(
        &self,
        rx: &Receiver<AtoMsg>,
        queue: &mut VecDeque<(Box<Op>, Ack)>,
        after: &mut Option<AtoMsg>,
        until: Instant,
        wanted: usize,
    ) -> GroupReady {
        loop {
            if let Some(ready) = self.take_waiting(rx, queue, after, wanted) {
                return ready;
            }
            let now = Instant::now();
            if now >= until {
                return GroupReady::Deadline;
            }
            self.park_for(wanted - queue.len(), until - now, || false);
        }
    }

    /// Reads what waits ([`Self::drain`]); says whether a wait for a group
    /// is over: a checkpoint or close came, or `wanted` writes wait.
    fn take_waiting(
        &self,
        rx: &Receiver<AtoMsg>,
        queue: &mut VecDeque<(Box<Op>, Ack)>,
        after: &mut Option<AtoMsg>,
        wanted: usize,
    ) -> Option<GroupReady> {
        self.drain(rx, queue, after);
        if after.is_some() {
            Some(GroupReady::Message)
        } else if queue.len() >= wanted {
            Some(GroupReady::Full)
        } else {
            None
        }
    }

    /// Parks this thread for at most `timeout`, to be woken by the sender
    /// that brings `more` writes to the channel or by a checkpoint's or
    /// close's ([`Signal::message`]); not at all when they are already sent
    /// or `skip` says so. What was sent meanwhile is read by the caller.
    fn park_for(&self, more: usize, timeout: Duration, skip: impl Fn() -> bool) {
        self.signal.thread.get_or_init(std::thread::current);
        self.signal.want.store(more, Ordering::SeqCst);
        if self.signal.sent.load(Ordering::SeqCst) < more as isize
            && self.signal.messages.load(Ordering::SeqCst) <= 0
            && !skip()
        {
            std::thread::park_timeout(timeout);
        }
        self.signal.want.store(0, Ordering::SeqCst);
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

/// Longest a group commit waits for the runtime's workers to run out of
/// work ([`AtoWriter::wait_for_group`]).
///
/// A commit costs the core the same whatever its size: on the VM of
/// 2026-12-06 (seventeenth session) about 66 µs of CPU per `fdatasync`
/// (the journal's `pwrite` and sync, two device notifications, the block
/// layer's worker), against about 18 µs per answer. Committing as soon as
/// the journal's thread got the core made groups of about 15 under one hot
/// identifier, with the core 95 % busy; waiting while the workers still
/// parse and decide made them about 30, and the same core answered 17–27 %
/// more in alternated `wrk` runs (BENCHMARKS.md, "Group commits that wait
/// for the workers"). The
/// bound keeps what the wait can add to an answer small when another
/// tenant's flood keeps the workers busy: anti-ATO writes then commit at
/// least every half millisecond, and they wait at all only when they come
/// faster than commits complete ([`WAIT_AFTER_GROUP`]).
pub(super) const GROUP_WAIT: Duration = Duration::from_micros(500);

/// A commit waits (for its spacing, [`COMMIT_SPACING`], and for a larger
/// group, [`GROUP_WAIT`]) only after a group of at least this many: writes
/// that arrive more slowly than commits complete would only be held up.
/// Under one tenant's session-verify flood (`wrk -c64`) another tenant's
/// anti-ATO logins one at a time waited about 0.45 ms more at the median
/// with every commit waiting (0.71 → 1.09–1.25 ms), while busy workers
/// held the commit to its bound.
const WAIT_AFTER_GROUP: usize = 4;

/// Least time from one group commit's start to the next one's, after a
/// group of [`WAIT_AFTER_GROUP`] or more; the sender that fills a batch
/// ends it early ([`AtoWriter::wait_for_spacing`]).
///
/// The wait for busy workers ([`GROUP_WAIT`]) made large groups when
/// writes come in bursts, as under `wrk`'s closed loop. Writes that come
/// steadily leave the workers idle between requests, and then each commit
/// started as soon as the previous one's sync returned: on the VM of
/// 2026-12-06 (eighteenth session), one hot identifier at 20 000 and
/// 30 000 answers/s, released evenly by `qyzar-loadtest`'s open loop, took
/// 4 000–5 200 syncs/s at about 66 µs of CPU each, and the core was
/// 83–92 % busy at half the route's maximum. With commits at least 400 µs
/// apart: about 1 900–2 000 syncs/s and 57–78 % busy, the median answer
/// about 100 µs later (BENCHMARKS.md, "Steady arrivals"). Under saturation
/// commits are further apart than this anyway. It costs callers that wait
/// for each answer with only a few requests in flight: four connections
/// in a closed loop answered 12 300 → 9 200/s, p50 300 → 435 µs.
pub(super) const COMMIT_SPACING: Duration = Duration::from_micros(400);

/// [`GROUP_WAIT`], or `QYZAR_ENGINE_ATO_GROUP_WAIT_US` microseconds when
/// set (0: commit without waiting, as before the wait existed; for hosts
/// where a commit costs little CPU and the disk is slow to wake).
pub(super) fn group_wait_from_env() -> Duration {
    micros_from_env("QYZAR_ENGINE_ATO_GROUP_WAIT_US", GROUP_WAIT)
}

/// [`COMMIT_SPACING`], or `QYZAR_ENGINE_ATO_COMMIT_SPACING_US`
/// microseconds when set (0: each commit starts as soon as the previous
/// one is done; for hosts where a commit costs little CPU).
pub(super) fn commit_spacing_from_env() -> Duration {
    micros_from_env("QYZAR_ENGINE_ATO_COMMIT_SPACING_US", COMMIT_SPACING)
}

/// `var` in microseconds, at most 100 ms; `default` when unset or not a
/// number (logged).
fn micros_from_env(var: &str, default: Duration) -> Duration {
    match std::env::var(var) {
        Err(_) => default,
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(us) => Duration::from_micros(us.min(100_000)),
            Err(_) => {
                tracing::warn!(value = %v, "{var} is not a number of microseconds; using the default");
                default
            }
        },
    }
}

/// Whether a commit after a group of `previous` waits for a larger one
/// (for its spacing or for busy workers, bounded by `bound`): only after a
/// group of [`WAIT_AFTER_GROUP`] or more, and never with a zero bound.
fn waits_after(previous: usize, bound: Duration) -> bool {
    previous >= WAIT_AFTER_GROUP && !bound.is_zero()
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
    use super::{group_size, waits_after, GROUP_WAIT, MIN_GROUP, WAIT_AFTER_GROUP};
    use std::time::Duration;

    /// Single writes, and writes that come more slowly than commits
    /// complete, never wait; nor does anything with the wait turned off.
    #[test]
    fn only_groups_of_four_or_more_wait_and_zero_turns_it_off() {
        assert_eq!(WAIT_AFTER_GROUP, 4);
        for previous in 0..WAIT_AFTER_GROUP {
            assert!(!waits_after(previous, GROUP_WAIT), "{previous}");
        }
        assert!(waits_after(WAIT_AFTER_GROUP, GROUP_WAIT));
        assert!(waits_after(30, GROUP_WAIT));
        assert!(!waits_after(30, Duration::ZERO));
    }

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

#[cfg(test)]
mod signal_tests {
    use std::sync::atomic::Ordering;

    /// `EmbeddedStore` counts each message it sends the journal's writer
    /// (`Signal::message`), which the writer uncounts as it reads it. The
    /// count is what ends the writer's group and spacing waits early, so a
    /// message sent uncounted would leave a checkpoint or close waiting
    /// out those bounds, and would leave the count below zero: after each
    /// answered message it is zero again.
    #[tokio::test]
    async fn the_store_counts_every_message_it_sends_the_journal_writer() {
        let dir = tempfile::tempdir().expect("dir");
        let store = crate::EmbeddedStore::open(dir.path().join("s.redb")).expect("open");
        let count = || store.inner.ato_signal.messages.load(Ordering::SeqCst);
        // A purge sends a checkpoint first.
        store.purge_expired(0).await.expect("purge");
        assert_eq!(count(), 0, "after a checkpoint");
        store.close().await.expect("close");
        assert_eq!(count(), 0, "after a close");
    }
}
