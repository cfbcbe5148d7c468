//! The group-commit writer: the one thread that owns redb write transactions.
//!
//! redb allows one write transaction at a time and a durable commit costs an
//! fsync. Instead of N callers queueing on the write lock for N fsyncs, each
//! caller sends its write here and waits on a oneshot ack. The thread takes
//! everything queued (up to [`MAX_BATCH`]), applies it in one transaction,
//! commits once and acks every caller with its own outcome: N concurrent
//! writes cost about one fsync, and a caller is never acked before the commit
//! that holds its write is durable.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use redb::{Database, ReadTransaction, ReadableTable, Table, TableDefinition, WriteTransaction};
use tokio::sync::oneshot;

use super::checkpoint::{Checkpoint, Job, Progress};
use super::journal::{LogRows, SharedOverlay};
use super::keys::{self, expiry_key, split_expiry_key, Key, Tag};
use super::rows::{db_err, decode, encode, trusted_set};
use crate::{
    expire_profile, now_ms, profile_is_empty, AtoProfile, DenyEvent, DeviceDay, EntropySnapshot,
    LoginAttempt, ProfileUpdate, Session, SessionTouch, StoreError, DAY_MS,
    DENY_EVENT_RETENTION_MS, DEVICE_DAY_RETENTION_MS, ENTROPY_SNAPSHOT_RETENTION_MS,
    LOGIN_ATTEMPT_RETENTION_MS, PROFILE_RETENTION_MS,
};

/// Most writes folded into one transaction: bounds the latency the first
/// caller of a large burst pays for everyone queued behind it.
pub(super) const MAX_BATCH: usize = 1024;
/// How often the writer purges expired rows on its own.
pub(super) const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Most expiry-index entries one purge handles; the rest waits for the next
/// pass, so a store that was off for months does not stall writers at start.
const MAX_PURGE: usize = 100_000;

/// Most projects whose attempt-log tail one purge visits; the next purge
/// goes on from there ([`Tables::purge_log`]).
const LOG_PROJECTS_PER_PURGE: usize = 1_000;

/// One write a caller asks for.
#[derive(Debug)]
pub(super) enum Op {
    PutSession(Session),
    TouchSession {
        project: ProjectId,
        session: SessionId,
        last_seen_at: i64,
        expires_at: i64,
    },
    RevokeSession {
        project: ProjectId,
        session: SessionId,
    },
    AddTrusted {
        project: ProjectId,
        device: DeviceId,
        identifier: String,
    },
    PutSnapshot(EntropySnapshot),
    RecordAttempt(LoginAttempt),
    RevokeToken {
        project: ProjectId,
        jti: String,
        expires_at: i64,
    },
    RecordDenies(Vec<DenyEvent>),
    /// The engine's last-seen batch (a chunk of it): each as
    /// [`Op::TouchSession`], all in this one transaction.
    TouchSessions(Vec<SessionTouch>),
    /// One `record_ato`: the profile join and the attempt row (if any) in
    /// the same journal frame, so both are written or neither. Sent to the
    /// anti-ATO writer (`ato_writer.rs`), never to a redb transaction.
    /// Boxed: a profile update is several times the other writes' size.
    RecordAto {
        project: ProjectId,
        identifier: String,
        attempt: Option<Box<LoginAttempt>>,
        update: Box<ProfileUpdate>,
    },
    /// Device-day rows, each merged into the stored one.
    RecordDeviceDays(Vec<DeviceDay>),
    Purge {
        now: i64,
    },
}

impl Op {
    /// The project the write is for, which holds its write slot
    /// ([`super::slots`]); `None` for the engine's own batches (deny
    /// events and device days of several projects, written off the answer
    /// path) and the purge.
    pub(super) fn project(&self) -> Option<&ProjectId> {
        match self {
            Op::PutSession(s) => Some(&s.project_id),
            Op::PutSnapshot(s) => Some(&s.project_id),
            Op::RecordAttempt(a) => Some(&a.project_id),
            Op::TouchSession { project, .. }
            | Op::RevokeSession { project, .. }
            | Op::AddTrusted { project, .. }
            | Op::RevokeToken { project, .. }
            | Op::RecordAto { project, .. } => Some(project),
            Op::RecordDenies(_)
            | Op::RecordDeviceDays(_)
            | Op::TouchSessions(_)
            | Op::Purge { .. } => None,
        }
    }
}

/// What a write answers.
#[derive(Debug)]
pub(super) enum Outcome {
    Done,
    /// Done, and the write handed back to the task that made it, to be
    /// freed there. The anti-ATO writer only reads a write; freeing a
    /// group's attempts on its thread (memory the worker allocated, by
    /// mimalloc's cross-thread path) sat between one sync's return and
    /// the next sync, and on this disk a sync begun within about 10 µs of
    /// the last one's return takes about 40 µs, one begun later about
    /// 240 µs (BENCHMARKS.md, "The gap between two syncs").
    Returned(Box<Op>),
    Found(bool),
    Identifiers(Vec<String>),
    Purged(u64),
    /// One answer per touch of [`Op::TouchSessions`], in order.
    Touched(Vec<Result<bool, StoreError>>),
}

pub(super) type Ack = oneshot::Sender<Result<Outcome, StoreError>>;

/// A message to the writer thread.
pub(super) enum Msg {
    /// Boxed: a session is a few hundred bytes, `Close` is one pointer.
    Write(Box<Op>, Ack),
    /// Journalled rows to write (from the anti-ATO writer).
    Job(Job),
    /// Commit what is queued before this, then stop and release the file.
    Close(oneshot::Sender<()>),
}

/// The writer thread's state.
pub(super) struct Writer {
    pub(super) db: Arc<Database>,
    pub(super) commits: Arc<AtomicU64>,
    /// Tie-breaker for deny events of one project in one millisecond;
    /// seeded randomly at open so a restart does not reuse values.
    pub(super) next_seq: u64,
    /// Where the next purge of the attempt log goes on (the first key it
    /// reads); empty to start from the first project.
    pub(super) log_cursor: Vec<u8>,
    /// The anti-ATO journal's overlay and what is checkpointed: this
    /// thread writes journalled rows to redb ([`Job`], `checkpoint.rs`).
    pub(super) overlay: SharedOverlay,
    pub(super) progress: Arc<Progress>,
    /// Log flushes queued, done before the next checkpoint slice.
    pub(super) flushes: VecDeque<LogRows>,
    /// Checkpoints queued; the first is under way, one slice per turn.
    pub(super) checkpoints: VecDeque<Checkpoint>,
}

impl Writer {
    /// The redb writer of `db`, sharing the journal's `overlay` and
    /// `progress` with the anti-ATO writer (`ato_writer.rs`).
    pub(super) fn new(
        db: Arc<Database>,
        commits: Arc<AtomicU64>,
        overlay: SharedOverlay,
        progress: Arc<Progress>,
        next_seq: u64,
    ) -> Self {
        Writer {
            db,
            commits,
            next_seq,
            log_cursor: Vec::new(),
            overlay,
            progress,
            flushes: VecDeque::new(),
            checkpoints: VecDeque::new(),
        }
    }

    /// Runs until every sender is gone or a [`Msg::Close`] arrives.
    pub(super) fn run(mut self, rx: Receiver<Msg>) {
        let mut next_purge = Instant::now() + PURGE_INTERVAL;
        loop {
            let mut wait = next_purge.saturating_duration_since(Instant::now());
            if !self.checkpoints.is_empty() || !self.flushes.is_empty() {
                wait = Duration::ZERO;
            }
            let first = match rx.recv_timeout(wait) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= next_purge {
                        self.periodic_purge();
                        next_purge = Instant::now() + PURGE_INTERVAL;
                    }
                    self.step_journal();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Every sender is gone (the store and the anti-ATO
                    // writer): what is queued here still goes to redb.
                    self.finish_journal();
                    self.progress.stop.store(true, Ordering::Relaxed);
                    return;
                }
            };
            let mut batch = Vec::new();
            let mut close = None;
            let mut next = Some(first);
            while let Some(m) = next.take() {
                match m {
                    Msg::Write(op, ack) => batch.push((op, ack)),
                    Msg::Job(Job::FlushLog(rows)) => self.flushes.push_back(rows),
                    Msg::Job(Job::Checkpoint(pending)) => {
                        self.checkpoints.push_back(Checkpoint::new(pending))
                    }
                    Msg::Close(ack) => close = Some(ack),
                }
                if close.is_none() && batch.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            self.step_journal();
            if let Some(ack) = close {
                tracing::debug!("embedded store writer closing");
                self.finish_journal();
                self.progress.stop.store(true, Ordering::Relaxed);
                // Release the file and refuse later writes before acking, so
                // a caller that saw `close` return can reopen the path.
                drop(self);
                drop(rx);
                let _ = ack.send(());
                return;
            }
            if Instant::now() >= next_purge {
                self.periodic_purge();
                next_purge = Instant::now() + PURGE_INTERVAL;
            }
        }
    }

    /// The queued log flushes, then one slice of the first checkpoint.
    fn step_journal(&mut self) {
        while let Some(rows) = self.flushes.front() {
            if !super::checkpoint::flush_log(&self.db, &self.overlay, rows) {
                return;
            }
            self.flushes.pop_front();
        }
        if let Some(c) = self.checkpoints.front_mut() {
            if c.slice(&self.db, &self.overlay, &self.progress) {
                self.checkpoints.pop_front();
            }
        }
    }

    /// Everything queued for the journal, to the end (close, purge).
    fn finish_journal(&mut self) {
        let mut tries = 0;
        while !self.flushes.is_empty() || !self.checkpoints.is_empty() {
            self.step_journal();
            tries += 1;
            if tries > 10_000 {
                // redb keeps failing: the journal replays at the next open.
                return;
            }
        }
    }

    fn periodic_purge(&mut self) {
        let (tx, _rx) = oneshot::channel();
        self.commit_batch(vec![(Box::new(Op::Purge { now: now_ms() }), tx)]);
    }

    /// Applies the writes in one redb transaction, commits once, acks
    /// everyone. A purge first writes what the journal handed over, so it
    /// sees every profile the journal had frozen.
    fn commit_batch(&mut self, batch: Vec<(Box<Op>, Ack)>) {
        if batch.iter().any(|(op, _)| matches!(**op, Op::Purge { .. })) {
            self.finish_journal();
        }
        self.commit_redb(batch, now_ms());
    }

    /// Applies the writes in one redb transaction, commits once, acks
    /// everyone.
    fn commit_redb(&mut self, batch: Vec<(Box<Op>, Ack)>, now: i64) {
        let (ops, acks): (Vec<Op>, Vec<Ack>) =
            batch.into_iter().map(|(op, ack)| (*op, ack)).unzip();
        match self.apply_all(ops, now) {
            Ok(outcomes) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                for (ack, out) in acks.into_iter().zip(outcomes) {
                    let _ = ack.send(out);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, writes = acks.len(), "embedded store commit failed");
                for ack in acks {
                    let _ = ack.send(Err(e.clone()));
                }
            }
        }
    }

    /// The outer error aborts the whole transaction (nothing was written);
    /// an inner error belongs to one write and leaves the others intact.
    fn apply_all(
        &mut self,
        ops: Vec<Op>,
        now: i64,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let mut out = Vec::with_capacity(ops.len());
        {
            let mut t = Tables::new(&txn, std::mem::take(&mut self.log_cursor));
            for op in ops {
                out.push(t.apply(op, now, &mut self.next_seq).map_err(|Fatal(e)| e)?);
            }
            self.log_cursor = t.log_cursor;
        }
        txn.commit().map_err(db_err)?;
        Ok(out)
    }
}

/// The open tables of one write transaction.
struct Tables<'txn> {
    sessions: Lazy<'txn, &'static [u8]>,
    trusted: Lazy<'txn, &'static [u8]>,
    snapshots: Lazy<'txn, &'static [u8]>,
    attempts: Lazy<'txn, &'static [u8]>,
    attempt_log: Lazy<'txn, &'static [u8]>,
    revoked: Lazy<'txn, &'static [u8]>,
    denies: Lazy<'txn, &'static [u8]>,
    profiles: Lazy<'txn, &'static [u8]>,
    device_days: Lazy<'txn, &'static [u8]>,
    expiry: Lazy<'txn, ()>,
    /// [`Writer::log_cursor`], for the transaction's purge.
    log_cursor: Vec<u8>,
}

impl<'txn> Tables<'txn> {
    fn new(txn: &'txn WriteTransaction, log_cursor: Vec<u8>) -> Self {
        Tables {
            sessions: Lazy::new(txn, keys::SESSIONS),
            trusted: Lazy::new(txn, keys::TRUSTED),
            snapshots: Lazy::new(txn, keys::SNAPSHOTS),
            attempts: Lazy::new(txn, keys::ATTEMPTS),
            attempt_log: Lazy::new(txn, keys::ATTEMPT_LOG),
            revoked: Lazy::new(txn, keys::REVOKED),
            denies: Lazy::new(txn, keys::DENIES),
            profiles: Lazy::new(txn, keys::PROFILES),
            device_days: Lazy::new(txn, keys::DEVICE_DAYS),
            expiry: Lazy::new(txn, keys::EXPIRY),
            log_cursor,
        }
    }
}

/// A table of the write transaction, opened on first use. Opening looks
/// the table up in redb's table tree by name, and at commit redb looks
/// every opened table up there again to compare its root: a batch of
/// anti-ATO writes opens the three it touches, not all ten (counted in
/// BENCHMARKS.md, "Tables opened on first use").
struct Lazy<'txn, V: redb::Value + 'static> {
    txn: &'txn WriteTransaction,
    def: TableDefinition<'static, &'static [u8], V>,
    table: Option<Table<'txn, &'static [u8], V>>,
}

impl<'txn, V: redb::Value + 'static> Lazy<'txn, V> {
    fn new(txn: &'txn WriteTransaction, def: TableDefinition<'static, &'static [u8], V>) -> Self {
        Self {
            txn,
            def,
            table: None,
        }
    }

    /// The table, opened now if this transaction has not yet.
    fn open(&mut self) -> Result<&mut Table<'txn, &'static [u8], V>, Fatal> {
        let table = match self.table.take() {
            Some(t) => t,
            None => self
                .txn
                .open_table(self.def)
                .map_err(|e| Fatal(db_err(e)))?,
        };
        Ok(self.table.insert(table))
    }
}

/// One batch's attempt-log row as it is built, attempt by attempt, in
/// the compact encoding ([`log_row`](super::log_row)).
#[derive(Default)]
pub(super) struct LogBatch {
    row: Vec<u8>,
    newest_at: i64,
}

impl LogBatch {
    pub(super) fn push(&mut self, a: &LoginAttempt) {
        super::log_row::push(&mut self.row, a);
        self.newest_at = self.newest_at.max(a.at);
    }

    /// The finished row: its key (`project, !newest at, seq`) and value;
    /// `None` when nothing was logged.
    pub(super) fn row(self, project: &ProjectId, seq: &mut u64) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.row.is_empty() {
            return None;
        }
        *seq = seq.wrapping_add(1);
        let key = Key::new()
            .str(project.as_str())
            .newest_first(self.newest_at)
            .u64(*seq)
            .into_bytes();
        Some((key, self.row))
    }
}

/// The profile at `key` as stored in redb, read in `txn` (begun on first
/// use); an undecodable row is this write's error.
pub(super) fn stored_profile(
    db: &Database,
    txn: &mut Option<ReadTransaction>,
    key: &[u8],
) -> Result<Option<AtoProfile>, StoreError> {
    let txn = match txn {
        Some(t) => t,
        None => txn.insert(db.begin_read().map_err(db_err)?),
    };
    let t = txn.open_table(keys::PROFILES).map_err(db_err)?;
    let v = t.get(key).map_err(db_err)?;
    v.map(|v| super::profile_row::decode(v.value())).transpose()
}

/// Writes journalled profiles and log rows to redb in one durable
/// transaction; with `checkpointed`, it also records that generation as
/// written. Durable every time, not only at a generation's end: a
/// commit's sync flushes the disk's cache, so the next journal frame's
/// sync waits for whatever redb left unsynced, and one sync of a whole
/// generation's pages held group commits for 30-100 ms (BENCHMARKS.md,
/// "The anti-ATO journal"). Replaying a generation whose rows are
/// partly in redb writes the same values again.
///
/// The thread yields the core after every [`YIELD_BYTES`] of rows: it
/// shares it with the engine's serving thread, and a 256 KiB log flush
/// otherwise ran 1–4 ms at a stretch while answers waited behind it
/// (BENCHMARKS.md, "Anti-ATO's tail at half load").
pub(super) fn write_rows(
    db: &Database,
    profiles: &[(Vec<u8>, AtoProfile)],
    log: &[(Vec<u8>, Vec<u8>)],
    checkpointed: Option<u64>,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut t = Tables::new(&txn, Vec::new());
        let mut pace = Pace::default();
        let mut write = || -> Result<(), Fatal> {
            for (key, p) in profiles {
                // An undecodable stored row is replaced, and indexed.
                let indexed = matches!(t.read_profile(key)?,
                    Ok(Some(s)) if profile_deadline(&s).is_some());
                t.put_profile(key, indexed, p)?;
                pace.wrote(key.len() + p.weight());
            }
            let table = t.attempt_log.open()?;
            for (key, row) in log {
                table.insert(key.as_slice(), row.as_slice())?;
                pace.wrote(key.len() + row.len());
            }
            Ok(())
        };
        write().map_err(|Fatal(e)| e)?;
        if let Some(generation) = checkpointed {
            let mut meta = txn.open_table(keys::META).map_err(db_err)?;
            meta.insert(
                keys::JOURNAL_CHECKPOINTED,
                generation.to_be_bytes().as_slice(),
            )
            .map_err(db_err)?;
        }
    }
    txn.commit().map_err(db_err)
}

/// About what a touch rewrites besides its key: the session row (a few
/// hundred bytes) and its expiry index entry.
const TOUCH_ROW_BYTES: usize = 384;

/// Bytes of rows [`write_rows`] inserts between two yields of the core.
/// At 24 000 anti-ATO attempts/s (one hot identifier, open loop, 15 s) the
/// p99 read 1.93–2.27 ms with it against 2.82–3.08 ms without, alternated;
/// an experiment that yielded every 64 rows instead of 16 gained nothing,
/// and closed-loop throughput did not move.
const YIELD_BYTES: usize = 16 << 10;

/// Counts the bytes a transaction has written and yields the core each
/// [`YIELD_BYTES`]. `sched_yield` lets a runnable serving thread in before
/// this one's slice ends; with nobody waiting it returns at once.
#[derive(Default)]
struct Pace {
    since_yield: usize,
    /// Yields so far (what the unit test can see of them).
    yields: usize,
}

impl Pace {
    fn wrote(&mut self, bytes: usize) {
        self.since_yield += bytes;
        if self.since_yield >= YIELD_BYTES {
            self.since_yield = 0;
            self.yields += 1;
            std::thread::yield_now();
        }
    }
}

/// The newest journal generation already in redb (0 for none).
pub(super) fn checkpointed(db: &Database) -> Result<u64, StoreError> {
    let txn = db.begin_read().map_err(db_err)?;
    let t = txn.open_table(keys::META).map_err(db_err)?;
    let v = t.get(keys::JOURNAL_CHECKPOINTED).map_err(db_err)?;
    Ok(v.and_then(|v| v.value().try_into().ok())
        .map_or(0, u64::from_be_bytes))
}

/// The outer error is fatal to the transaction (a redb failure); the inner
/// one answers a single write.
type Applied = Result<Result<Outcome, StoreError>, Fatal>;

/// A redb failure inside a write transaction, already mapped.
struct Fatal(StoreError);

impl From<redb::StorageError> for Fatal {
    fn from(e: redb::StorageError) -> Self {
        Fatal(db_err(e))
    }
}

fn session_key(project: &ProjectId, session: &SessionId) -> Vec<u8> {
    Key::new()
        .str(project.as_str())
        .str(session.as_str())
        .into_bytes()
}

impl<'txn> Tables<'txn> {
    fn apply(&mut self, op: Op, now: i64, seq: &mut u64) -> Applied {
        match op {
            Op::PutSession(s) => self.put_session(&s),
            Op::TouchSession {
                project,
                session,
                last_seen_at,
                expires_at,
            } => self.touch_session(
                &session_key(&project, &session),
                last_seen_at,
                expires_at,
                now,
            ),
            Op::TouchSessions(touches) => {
                // Yields the core between slices, as for the attempt log.
                let mut pace = Pace::default();
                let mut out = Vec::with_capacity(touches.len());
                for t in touches {
                    let key = session_key(&t.project, &t.session);
                    let found = match self.touch_session(&key, t.last_seen_at, t.expires_at, now)? {
                        Ok(Outcome::Found(b)) => Ok(b),
                        Ok(other) => {
                            Err(StoreError::Corrupt(format!("a touch answered {other:?}")))
                        }
                        Err(e) => Err(e),
                    };
                    out.push(found);
                    pace.wrote(key.len() + TOUCH_ROW_BYTES);
                }
                Ok(Ok(Outcome::Touched(out)))
            }
            Op::RevokeSession { project, session } => {
                self.revoke_session(&session_key(&project, &session), now)
            }
            Op::AddTrusted {
                project,
                device,
                identifier,
            } => {
                let prefix = Key::new()
                    .str(project.as_str())
                    .str(device.as_str())
                    .into_bytes();
                let mut key = prefix.clone();
                key.extend_from_slice(identifier.as_bytes());
                if self.trusted.open()?.get(key.as_slice())?.is_none() {
                    self.trusted.open()?.insert(key.as_slice(), [].as_slice())?;
                }
                Ok(Ok(Outcome::Identifiers(trusted_set(
                    self.trusted.open()?,
                    &prefix,
                )?)))
            }
            Op::PutSnapshot(s) => {
                let key = Key::new()
                    .str(s.project_id.as_str())
                    .str(s.device_id.as_str())
                    .newest_first(s.at)
                    .str(s.session_id.as_str())
                    .into_bytes();
                self.put_row(
                    Tag::Snapshot,
                    &key,
                    &encode(&s),
                    s.at.saturating_add(ENTROPY_SNAPSHOT_RETENTION_MS),
                )?;
                Ok(Ok(Outcome::Done))
            }
            Op::RecordAttempt(a) => {
                self.put_attempt(&a)?;
                Ok(Ok(Outcome::Done))
            }
            // `commit_batch` sends these to the journal, never here.
            Op::RecordAto { .. } => Ok(Err(StoreError::Corrupt(
                "an anti-ATO write reached a redb transaction".into(),
            ))),
            Op::RevokeToken {
                project,
                jti,
                expires_at,
            } => {
                if expires_at <= now {
                    return Ok(Ok(Outcome::Done));
                }
                // Last write wins, as in CQL; a token's `exp` never changes.
                let key = Key::new().str(project.as_str()).str(&jti).into_bytes();
                self.put_row(
                    Tag::Revocation,
                    &key,
                    &keys::time_value(expires_at),
                    expires_at,
                )?;
                Ok(Ok(Outcome::Done))
            }
            Op::RecordDenies(events) => {
                // Many projects' samples in one op: the core is yielded
                // between slices of it, as for the attempt log's rows.
                let mut pace = Pace::default();
                for e in events {
                    *seq = seq.wrapping_add(1);
                    let key = Key::new()
                        .str(e.project_id.as_str())
                        .newest_first(e.at)
                        .u64(*seq)
                        .into_bytes();
                    let row = encode(&e);
                    self.put_row(
                        Tag::Deny,
                        &key,
                        &row,
                        e.at.saturating_add(DENY_EVENT_RETENTION_MS),
                    )?;
                    pace.wrote(key.len() + row.len());
                }
                Ok(Ok(Outcome::Done))
            }
            Op::RecordDeviceDays(rows) => {
                let mut pace = Pace::default();
                for row in rows {
                    self.merge_device_day(&row)?;
                    // About its stored size: the strings and some 64
                    // bytes of numbers and framing.
                    pace.wrote(
                        row.device_id.as_str().len()
                            + row.browser.len()
                            + row.os.len()
                            + row.platform.len()
                            + 64,
                    );
                }
                Ok(Ok(Outcome::Done))
            }
            Op::Purge { now } => self.purge(now),
        }
    }

    /// Merges `row` into the stored device-day; a new row is scheduled for
    /// deletion [`DEVICE_DAY_RETENTION_MS`] after its day ends (a fixed
    /// deadline, so an update never moves it). An undecodable stored row
    /// is replaced: the index is rebuilt by the next sessions anyway.
    fn merge_device_day(&mut self, row: &DeviceDay) -> Result<(), Fatal> {
        let key = Key::new()
            .str(row.project_id.as_str())
            .u64(keys::time_bits(row.day))
            .u64(u64::from(DeviceDay::shard(&row.device_id)))
            .str(row.device_id.as_str())
            .into_bytes();
        let stored = self
            .device_days
            .open()?
            .get(key.as_slice())?
            .map(|v| decode::<DeviceDay>(v.value()));
        let merged = match stored {
            Some(Ok(mut old)) => {
                old.merge(row);
                old
            }
            Some(Err(_)) => row.clone(),
            None => {
                let deadline = row
                    .day
                    .saturating_add(1)
                    .saturating_mul(DAY_MS)
                    .saturating_add(DEVICE_DAY_RETENTION_MS);
                self.expiry
                    .open()?
                    .insert(expiry_key(deadline, Tag::DeviceDay, &key).as_slice(), ())?;
                row.clone()
            }
        };
        self.device_days
            .open()?
            .insert(key.as_slice(), encode(&merged).as_slice())?;
        Ok(())
    }

    fn put_attempt(&mut self, a: &LoginAttempt) -> Result<(), Fatal> {
        let key = Key::new()
            .str(a.project_id.as_str())
            .str(&a.identifier)
            .newest_first(a.at)
            .str(&a.attempt_id)
            .into_bytes();
        self.put_row(
            Tag::Attempt,
            &key,
            &encode(a),
            a.at.saturating_add(LOGIN_ATTEMPT_RETENTION_MS),
        )
    }

    /// The stored profile at `key`; an undecodable one answers this write
    /// (nothing of it is written), not the whole batch.
    fn read_profile(
        &mut self,
        key: &[u8],
    ) -> Result<Result<Option<AtoProfile>, StoreError>, Fatal> {
        Ok(match self.profiles.open()?.get(key)? {
            None => Ok(None),
            Some(v) => super::profile_row::decode(v.value()).map(Some),
        })
    }

    /// Writes `p` at `key` (or deletes the row when `p` holds nothing);
    /// `indexed` says whether the row already has an [`keys::EXPIRY`]
    /// entry. Returns whether a row was deleted.
    ///
    /// An entry is added only when the row has none: it is not moved on
    /// every write (that was two more B-tree operations per login attempt,
    /// BENCHMARKS.md "What bounds it"). An entry that comes due before the
    /// row's real deadline only makes the purge visit early and re-index it
    /// ([`Self::purge_profile`]); one that comes after it leaves spent cells
    /// stored a little longer, which every reader already ignores (and the
    /// dated cells a later write adds, successes, devices and regions, only
    /// ever move the deadline later). Entries of a deleted row are dropped
    /// when they come due.
    fn put_profile(&mut self, key: &[u8], indexed: bool, p: &AtoProfile) -> Result<bool, Fatal> {
        if profile_is_empty(p) {
            return Ok(self.profiles.open()?.remove(key)?.is_some());
        }
        self.profiles
            .open()?
            .insert(key, super::profile_row::encode(p).as_slice())?;
        if !indexed {
            if let Some(d) = profile_deadline(p) {
                self.expiry
                    .open()?
                    .insert(expiry_key(d, Tag::Profile, key).as_slice(), ())?;
            }
        }
        Ok(false)
    }

    /// Visits one profile whose earliest cell is due: drops what expired
    /// and deletes the row when nothing (not even a trusted device) is
    /// left. Returns whether the row went. An undecodable row is left for
    /// a reader to report, not deleted.
    fn purge_profile(&mut self, key: &[u8], now: i64) -> Result<bool, Fatal> {
        let Ok(Some(old)) = self.read_profile(key)? else {
            return Ok(false);
        };
        let mut p = old.clone();
        expire_profile(&mut p, now);
        p.bound(now);
        if p == old {
            // An early index entry (the row moved on): re-index at its own
            // deadline.
            if let Some(d) = profile_deadline(&p).filter(|d| *d > now) {
                self.expiry
                    .open()?
                    .insert(expiry_key(d, Tag::Profile, key).as_slice(), ())?;
            }
            return Ok(false);
        }
        // The entry that brought us here is gone: index the row anew.
        self.put_profile(key, false, &p)
    }

    /// Writes `value` at `key` in `tag`'s table and schedules its deletion.
    fn put_row(&mut self, tag: Tag, key: &[u8], value: &[u8], deadline: i64) -> Result<(), Fatal> {
        self.data(tag)?.insert(key, value)?;
        self.expiry
            .open()?
            .insert(expiry_key(deadline, tag, key).as_slice(), ())?;
        Ok(())
    }

    fn data(&mut self, tag: Tag) -> Result<&mut Table<'txn, &'static [u8], &'static [u8]>, Fatal> {
        match tag {
            Tag::Session => self.sessions.open(),
            Tag::Snapshot => self.snapshots.open(),
            Tag::Attempt => self.attempts.open(),
            Tag::Revocation => self.revoked.open(),
            Tag::Deny => self.denies.open(),
            Tag::Profile => self.profiles.open(),
            Tag::DeviceDay => self.device_days.open(),
            Tag::AttemptLog => self.attempt_log.open(),
        }
    }

    fn read_session(&mut self, key: &[u8]) -> Result<Option<Result<Session, StoreError>>, Fatal> {
        Ok(self
            .sessions
            .open()?
            .get(key)?
            .map(|v| decode::<Session>(v.value())))
    }

    fn put_session(&mut self, s: &Session) -> Applied {
        let key = session_key(&s.project_id, &s.session_id);
        // A re-put moves the deadline: drop the old index entry so it does
        // not linger until its own time.
        if let Some(Ok(old)) = self.read_session(&key)? {
            self.expiry
                .open()?
                .remove(expiry_key(old.expires_at, Tag::Session, &key).as_slice())?;
        }
        self.put_row(Tag::Session, &key, &encode(s), s.expires_at)?;
        Ok(Ok(Outcome::Done))
    }

    fn touch_session(
        &mut self,
        key: &[u8],
        last_seen_at: i64,
        expires_at: i64,
        now: i64,
    ) -> Applied {
        let mut s = match self.read_session(key)? {
            None => return Ok(Ok(Outcome::Found(false))),
            Some(Err(e)) => return Ok(Err(e)),
            Some(Ok(s)) => s,
        };
        if s.expires_at <= now || s.revoked {
            return Ok(Ok(Outcome::Found(false)));
        }
        let old_expiry = s.expires_at;
        s.last_seen_at = s.last_seen_at.max(last_seen_at);
        s.expires_at = s.expires_at.max(expires_at);
        if s.expires_at != old_expiry {
            self.expiry
                .open()?
                .remove(expiry_key(old_expiry, Tag::Session, key).as_slice())?;
        }
        self.put_row(Tag::Session, key, &encode(&s), s.expires_at)?;
        Ok(Ok(Outcome::Found(true)))
    }

    fn revoke_session(&mut self, key: &[u8], now: i64) -> Applied {
        let mut s = match self.read_session(key)? {
            None => return Ok(Ok(Outcome::Found(false))),
            Some(Err(e)) => return Ok(Err(e)),
            Some(Ok(s)) => s,
        };
        if s.expires_at <= now {
            return Ok(Ok(Outcome::Found(false)));
        }
        if !s.revoked {
            s.revoked = true;
            self.sessions.open()?.insert(key, encode(&s).as_slice())?;
        }
        Ok(Ok(Outcome::Found(true)))
    }

    /// Deletes every row whose deadline is at or before `now`. Rows that
    /// can be extended (sessions, revocations) are checked against their
    /// stored expiry first, so a stale index entry never deletes live data.
    fn purge(&mut self, now: i64) -> Applied {
        let end = keys::time_bits(now).saturating_add(1).to_be_bytes();
        let due: Vec<Vec<u8>> = self
            .expiry
            .open()?
            .range(..end.as_slice())?
            .take(MAX_PURGE)
            .map(|r| r.map(|(k, _)| k.value().to_vec()))
            .collect::<Result<_, _>>()?;
        let mut removed = 0u64;
        for ek in due {
            self.expiry.open()?.remove(ek.as_slice())?;
            let Some((_, tag, key)) = split_expiry_key(&ek) else {
                continue;
            };
            if tag == Tag::Profile {
                if self.purge_profile(key, now)? {
                    removed += 1;
                }
                continue;
            }
            let still_live = match tag {
                Tag::Session => {
                    matches!(self.read_session(key)?, Some(Ok(s)) if s.expires_at > now)
                }
                Tag::Revocation => self
                    .revoked
                    .open()?
                    .get(key)?
                    .and_then(|v| keys::read_time_value(v.value()))
                    .is_some_and(|t| t > now),
                Tag::Snapshot
                | Tag::Attempt
                | Tag::AttemptLog
                | Tag::Deny
                | Tag::Profile
                | Tag::DeviceDay => false,
            };
            if !still_live && self.data(tag)?.remove(key)?.is_some() {
                removed += 1;
            }
        }
        removed += self.purge_log(now, MAX_PURGE.saturating_sub(removed as usize))?;
        Ok(Ok(Outcome::Purged(removed)))
    }

    /// Deletes attempt-log rows whose newest attempt is past retention, at
    /// most `budget` of them. Rows are keyed `project, !newest at, seq`, so
    /// each project's oldest rows are the last of its range: the purge
    /// visits a project, deletes from the end of its range while rows are
    /// due, and moves to the next project. It visits at most
    /// [`LOG_PROJECTS_PER_PURGE`] projects and the next purge goes on from
    /// there, so its time is bounded however many projects log. (Rows that
    /// an older version indexed in [`keys::EXPIRY`] are also deleted by
    /// their entry.)
    fn purge_log(&mut self, now: i64, budget: usize) -> Result<u64, Fatal> {
        let mut removed = 0u64;
        // Past the last project the walk wraps to the first, once, and
        // stops where it began.
        let start = self.log_cursor.clone();
        let mut wrapped = start.is_empty();
        let mut visited = 0;
        while visited < LOG_PROJECTS_PER_PURGE {
            visited += 1;
            let first = self
                .attempt_log
                .open()?
                .range(self.log_cursor.as_slice()..)?
                .next()
                .transpose()?
                .map(|(k, _)| k.value().to_vec());
            let first = match first {
                Some(k) if wrapped && !start.is_empty() && k >= start => break,
                Some(k) => k,
                None if wrapped => {
                    self.log_cursor.clear();
                    break;
                }
                None => {
                    self.log_cursor.clear();
                    wrapped = true;
                    visited -= 1;
                    continue;
                }
            };
            let Some(prefix) = keys::partition_prefix(&first) else {
                // Not a log key (never written so): step over it.
                self.log_cursor = first;
                self.log_cursor.push(0);
                continue;
            };
            // Every key of the project sorts at or before `last`.
            let mut last = prefix.to_vec();
            last.extend_from_slice(&[0xFF; 16]);
            loop {
                if removed as usize >= budget {
                    // Out of budget: the next purge resumes at this project.
                    return Ok(removed);
                }
                let oldest = self
                    .attempt_log
                    .open()?
                    .range(prefix..=last.as_slice())?
                    .next_back()
                    .transpose()?
                    .map(|(k, _)| k.value().to_vec());
                let Some(oldest) = oldest else { break };
                let newest_at = keys::read_newest_first(&oldest[prefix.len()..]).unwrap_or(0);
                if newest_at.saturating_add(LOGIN_ATTEMPT_RETENTION_MS) > now {
                    break;
                }
                self.attempt_log.open()?.remove(oldest.as_slice())?;
                removed += 1;
            }
            self.log_cursor = last;
            self.log_cursor.push(0);
        }
        Ok(removed)
    }
}

/// The earliest moment a cell of `p` expires (see
/// [`expire_profile`]), when any can: the profile's [`keys::EXPIRY`]
/// deadline. `None` for a profile of trusted devices only, which stays
/// until they are removed.
fn profile_deadline(p: &AtoProfile) -> Option<i64> {
    let kept = |t: i64| t.saturating_add(PROFILE_RETENTION_MS);
    p.last_success
        .iter()
        .map(|r| kept(r.at))
        .chain(p.devices.iter().map(|d| kept(d.last_seen)))
        .chain(p.regions.iter().map(|r| kept(r.last_seen)))
        .chain(
            p.failures
                .iter()
                .map(|c| c.start.saturating_add(c.window_ms.max(1).saturating_mul(2))),
        )
        .min()
}

#[cfg(test)]
mod tests {
    //! The batch's profile coalescing against one transaction per write.
    use super::*;
    use crate::embedded::ato_writer::AtoWriter;
    use crate::embedded::journal::{self, Journal};
    use crate::embedded::log_row;
    use crate::profile::{new_writer_id, AttemptFacts};
    use qyzar_shared::ids::DeviceId;

    #[test]
    fn pace_yields_each_time_its_bytes_reach_the_bound() {
        let mut p = Pace::default();
        p.wrote(YIELD_BYTES - 1);
        assert_eq!((p.since_yield, p.yields), (YIELD_BYTES - 1, 0));
        p.wrote(1); // reaches the bound: yields and starts over
        assert_eq!((p.since_yield, p.yields), (0, 1));
        p.wrote(3 * YIELD_BYTES); // one large row: one yield, nothing carried
        assert_eq!((p.since_yield, p.yields), (0, 2));
        for _ in 0..64 {
            p.wrote(YIELD_BYTES / 16); // 64 rows of a sixteenth: four yields
        }
        assert_eq!((p.since_yield, p.yields), (0, 6));
    }

    /// Each write a caller makes names its project, which holds its write
    /// slot ([`super::super::slots`]); only the engine's own batches and
    /// the purge hold none.
    #[test]
    fn a_callers_write_names_its_project() {
        use qyzar_shared::ids::SessionId;
        let p = ProjectId::generate();
        let session = SessionId::generate();
        let device = DeviceId::generate();
        let ops = [
            Op::PutSession(crate::Session {
                project_id: p.clone(),
                session_id: session.clone(),
                token_hash: [7; 32],
                device_id: device.clone(),
                created_at: 1,
                expires_at: 2,
                last_seen_at: 1,
                revoked: false,
                ip: None,
                risk: crate::Risk::default(),
                device: crate::DeviceInfo::default(),
            }),
            Op::PutSnapshot(crate::EntropySnapshot {
                project_id: p.clone(),
                device_id: device,
                session_id: session.clone(),
                at: 1,
                entropy_json: "{}".into(),
            }),
            match log_only(&p, 1) {
                Op::RecordAto {
                    attempt: Some(a), ..
                } => Op::RecordAttempt(*a),
                _ => unreachable!("log_only records an attempt"),
            },
            Op::TouchSession {
                project: p.clone(),
                session: session.clone(),
                last_seen_at: 1,
                expires_at: 2,
            },
            Op::RevokeSession {
                project: p.clone(),
                session,
            },
            Op::AddTrusted {
                project: p.clone(),
                device: DeviceId::generate(),
                identifier: "a@example.com".into(),
            },
            Op::RevokeToken {
                project: p.clone(),
                jti: "j".into(),
                expires_at: 1,
            },
            Op::RecordAto {
                project: p.clone(),
                identifier: "a@example.com".into(),
                attempt: None,
                update: Box::default(),
            },
        ];
        for op in &ops {
            assert_eq!(op.project(), Some(&p));
        }
        for op in [
            Op::RecordDenies(Vec::new()),
            Op::RecordDeviceDays(Vec::new()),
            Op::Purge { now: 1 },
        ] {
            assert_eq!(op.project(), None);
        }
    }

    fn writer(dir: &tempfile::TempDir, name: &str) -> Writers {
        let db = Database::create(dir.path().join(name)).expect("redb");
        // Tables exist before the first read, as `EmbeddedStore::open` ensures.
        let txn = db.begin_write().expect("txn");
        for t in [
            keys::SESSIONS,
            keys::TRUSTED,
            keys::SNAPSHOTS,
            keys::ATTEMPTS,
            keys::ATTEMPT_LOG,
            keys::REVOKED,
            keys::DENIES,
            keys::PROFILES,
            keys::DEVICE_DAYS,
        ] {
            txn.open_table(t).expect("table");
        }
        txn.open_table(keys::EXPIRY).expect("expiry");
        txn.open_table(keys::META).expect("meta");
        txn.commit().expect("commit");
        let (journal, replay) = Journal::open(&dir.path().join(name), 0).expect("journal");
        assert!(replay.is_empty());
        let db = Arc::new(db);
        let overlay = SharedOverlay::default();
        journal::write(&overlay).active.generation = journal.generation();
        let progress = Arc::new(Progress::new(0));
        let commits = Arc::new(AtomicU64::new(0));
        let (tx, jobs) = std::sync::mpsc::channel();
        Writers {
            ato: AtoWriter {
                db: Arc::clone(&db),
                commits: Arc::clone(&commits),
                next_seq: 0,
                journal,
                overlay: Arc::clone(&overlay),
                progress: Arc::clone(&progress),
                redb: tx,
                signal: Default::default(),
                group_wait: crate::embedded::ato_writer::GROUP_WAIT,
                spacing: Duration::ZERO,
            },
            redb: Writer::new(db, commits, overlay, progress, 0),
            jobs,
        }
    }

    /// Both writers, driven by hand on the test's thread: what the
    /// anti-ATO writer hands over waits in `jobs` until [`Writers::pump`].
    struct Writers {
        redb: Writer,
        ato: AtoWriter,
        jobs: std::sync::mpsc::Receiver<Msg>,
    }

    impl std::ops::Deref for Writers {
        type Target = Writer;
        fn deref(&self) -> &Writer {
            &self.redb
        }
    }

    impl std::ops::DerefMut for Writers {
        fn deref_mut(&mut self) -> &mut Writer {
            &mut self.redb
        }
    }

    impl Writers {
        /// Moves handed-over work to the redb writer's queues.
        fn pump(&mut self) {
            while let Ok(m) = self.jobs.try_recv() {
                match m {
                    Msg::Job(Job::FlushLog(rows)) => self.redb.flushes.push_back(rows),
                    Msg::Job(Job::Checkpoint(pending)) => {
                        self.redb.checkpoints.push_back(Checkpoint::new(pending))
                    }
                    _ => unreachable!("only jobs"),
                }
            }
        }

        /// Everything journalled, written to redb (what `checkpoint_all`
        /// and the redb writer do on their two threads).
        fn checkpoint_all(&mut self) {
            if self.ato.journal.len() > 0 {
                self.ato.rotate();
            }
            self.pump();
            self.redb.finish_journal();
        }
    }

    /// Commits `ops` as their two writers would, each as one group: the
    /// `record_ato`s as one journal frame, the others as one redb
    /// transaction (the writers run side by side; here the redb one goes
    /// first). Returns each write's outcome, in order.
    fn commit(w: &mut Writers, ops: Vec<Op>) -> Vec<Result<Outcome, StoreError>> {
        let mut answers = Vec::new();
        let (mut ato, mut rest) = (Vec::new(), Vec::new());
        for op in ops {
            let (ack, answer) = oneshot::channel();
            answers.push(answer);
            if matches!(op, Op::RecordAto { .. }) {
                ato.push((Box::new(op), ack));
            } else {
                rest.push((Box::new(op), ack));
            }
        }
        if !rest.is_empty() {
            w.redb.commit_batch(rest);
        }
        if !ato.is_empty() {
            w.ato.journal_ato(ato, now_ms());
        }
        answers
            .into_iter()
            .map(|mut a| a.try_recv().expect("acked at commit"))
            .collect()
    }

    /// [`commit`], every write answered with success.
    fn commit_ok(w: &mut Writers, ops: Vec<Op>) {
        let out = commit(w, ops);
        assert!(out.iter().all(Result::is_ok), "{out:?}");
    }

    /// [`commit_ok`], then everything journalled written to redb.
    fn commit_all(w: &mut Writers, ops: Vec<Op>) {
        commit_ok(w, ops);
        w.checkpoint_all();
        let o = journal::read(&w.overlay);
        assert!(o.active.profiles.is_empty() && o.active.log.is_empty());
        assert!(o.frozen.is_none() && o.flushing.is_empty());
    }

    fn stored(w: &Writer, project: &ProjectId, identifier: &str) -> Option<AtoProfile> {
        let key = Key::new()
            .str(project.as_str())
            .str(identifier)
            .into_bytes();
        let txn = w.db.begin_read().expect("read");
        let t = txn.open_table(keys::PROFILES).expect("profiles");
        let v = t.get(key.as_slice()).expect("get")?;
        Some(crate::embedded::profile_row::decode(v.value()).expect("decodes"))
    }

    /// A `record_ato` that logs a bare attempt of `a@example.com` at `at`
    /// and changes no profile cell: what the attempt-log tests write.
    fn log_only(project: &ProjectId, at: i64) -> Op {
        Op::RecordAto {
            project: project.clone(),
            identifier: "a@example.com".into(),
            attempt: Some(Box::new(LoginAttempt {
                project_id: project.clone(),
                identifier: "a@example.com".into(),
                at,
                attempt_id: LoginAttempt::new_id(),
                success: false,
                ip: None,
                device_id: None,
                session_id: None,
                region: None,
                platform: None,
                browser: None,
            })),
            update: Box::default(),
        }
    }

    /// (log rows, distinct attempts logged).
    fn attempts(w: &Writer) -> (usize, usize) {
        let txn = w.db.begin_read().expect("read");
        let t = txn.open_table(keys::ATTEMPT_LOG).expect("attempt log");
        let mut ids = std::collections::HashSet::new();
        let mut rows = 0;
        for row in t.iter().expect("iter") {
            let (k, v) = row.expect("row");
            rows += 1;
            let batch = log_row::decode_keyed(k.value(), v.value()).expect("a log row");
            ids.extend(batch.into_iter().map(|a| a.attempt_id));
        }
        (rows, ids.len())
    }

    /// The same writes, with a purge among them and two identifiers
    /// interleaved, leave the same profiles and attempt rows whether they
    /// share one batch (one profile write per identifier) or each have
    /// their own transaction.
    #[test]
    fn one_batch_stores_what_one_transaction_per_write_stores() {
        let dir = tempfile::tempdir().expect("dir");
        let project = ProjectId::generate();
        let now = now_ms();
        let (d1, d2) = (DeviceId::generate(), DeviceId::generate());
        let wid = new_writer_id();
        let mut engine_view = [AtoProfile::default(), AtoProfile::default()];
        let mut ops = Vec::new();
        for k in 0..12i64 {
            let which = (k % 3 == 0) as usize;
            let identifier = ["a@example.com", "b@example.com"][which];
            let attempt = LoginAttempt {
                project_id: project.clone(),
                identifier: identifier.into(),
                at: now - 1000 + k,
                attempt_id: LoginAttempt::new_id(),
                success: k % 4 != 1,
                ip: Some("203.0.113.9".into()),
                device_id: Some(if k % 2 == 0 { d1.clone() } else { d2.clone() }),
                session_id: None,
                region: Some(["FR", "DE"][(k % 5 == 0) as usize].into()),
                platform: None,
                browser: None,
            };
            let update = engine_view[which].record(
                &AttemptFacts {
                    attempt: &attempt,
                    location: None,
                },
                wid,
                60_000,
            );
            ops.push(Op::RecordAto {
                project: project.clone(),
                identifier: identifier.into(),
                attempt: Some(Box::new(attempt)),
                update: Box::new(update),
            });
            if k == 6 {
                ops.push(Op::Purge { now });
            }
        }
        let clone_op = |op: &Op| match op {
            Op::RecordAto {
                project,
                identifier,
                attempt,
                update,
            } => Op::RecordAto {
                project: project.clone(),
                identifier: identifier.clone(),
                attempt: attempt.clone(),
                update: update.clone(),
            },
            Op::Purge { now } => Op::Purge { now: *now },
            _ => unreachable!(),
        };
        let mut batched = writer(&dir, "batched.redb");
        commit_all(&mut batched, ops.iter().map(clone_op).collect());
        let mut single = writer(&dir, "single.redb");
        for op in &ops {
            commit_all(&mut single, vec![clone_op(op)]);
        }
        for identifier in ["a@example.com", "b@example.com"] {
            let b = stored(&batched, &project, identifier).expect("a profile");
            assert_eq!(Some(&b), stored(&single, &project, identifier).as_ref());
            assert_eq!(b.devices.len(), 2, "both devices of {identifier}");
        }
        // Every attempt logged once: in one row for the batch, in a row
        // per transaction otherwise.
        assert_eq!(attempts(&batched), (1, 12));
        assert_eq!(attempts(&single), (12, 12));
    }

    /// One batch with two projects' attempts writes one log row per
    /// project, each under its own project's key prefix, so listing one
    /// project's log never reads the other's attempts.
    #[test]
    fn the_attempt_log_has_a_row_per_project_and_commit() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir, "log.redb");
        let now = now_ms();
        let projects = [ProjectId::generate(), ProjectId::generate()];
        let ops = (0..6i64)
            .map(|k| log_only(&projects[(k % 2) as usize], now + k))
            .collect();
        commit_all(&mut w, ops);
        let txn = w.db.begin_read().expect("read");
        let t = txn.open_table(keys::ATTEMPT_LOG).expect("attempt log");
        let mut rows = 0;
        for row in t.iter().expect("iter") {
            let (k, v) = row.expect("row");
            rows += 1;
            let batch = log_row::decode_keyed(k.value(), v.value()).expect("a log row");
            assert_eq!(batch.len(), 3);
            let prefix = Key::new().str(batch[0].project_id.as_str()).into_bytes();
            assert!(k.value().starts_with(&prefix));
            assert!(batch.iter().all(|a| a.project_id == batch[0].project_id));
        }
        assert_eq!(rows, 2);
    }

    /// A log flush and a checkpoint slice each write a project's rows as
    /// one row (`log_row::join`): twelve group commits' rows of two
    /// projects become two rows, and then two more, holding every attempt.
    #[test]
    fn flushes_and_checkpoints_join_each_projects_log_rows() {
        use crate::embedded::checkpoint::{flush_log, Checkpoint, Progress};
        use crate::embedded::journal::{Frame, Pending, SharedOverlay};
        let dir = tempfile::tempdir().expect("dir");
        let w = writer(&dir, "join.redb");
        let now = now_ms();
        let projects = [ProjectId::generate(), ProjectId::generate()];
        let mut seq = 0;
        // One row per group commit, the two projects' alternating.
        let mut rows = |from: i64| -> Vec<(Vec<u8>, Vec<u8>)> {
            (0..12)
                .filter_map(|k| {
                    let project = &projects[(k % 2) as usize];
                    let Op::RecordAto {
                        attempt: Some(a), ..
                    } = log_only(project, now + from + k)
                    else {
                        unreachable!("log_only logs an attempt")
                    };
                    let mut batch = LogBatch::default();
                    batch.push(&a);
                    batch.row(project, &mut seq)
                })
                .collect()
        };
        let overlay = SharedOverlay::default();
        let flushed = Arc::new(rows(0));
        journal::write(&overlay).flushing.push(Arc::clone(&flushed));
        assert!(flush_log(&w.db, &overlay, &flushed));
        assert_eq!(attempts(&w), (2, 12), "a row per project for the flush");
        assert!(journal::read(&overlay).flushing.is_empty());

        let mut frozen = Pending::default();
        frozen.add(Frame {
            profiles: Vec::new(),
            log: rows(100),
        });
        frozen.generation = 1;
        let frozen = Arc::new(frozen);
        journal::write(&overlay).frozen = Some(Arc::clone(&frozen));
        let progress = Progress::new(0);
        let mut checkpoint = Checkpoint::new(frozen);
        while !checkpoint.slice(&w.db, &overlay, &progress) {}
        assert_eq!(attempts(&w), (4, 24), "and a row per project for the slice");
        assert!(journal::read(&overlay).frozen.is_none());
    }

    /// Log rows carry no expiry entry; the purge finds the due ones at the
    /// end of each project's range and keeps the rest, and over more
    /// projects than one purge visits it finishes on the next purges.
    #[test]
    fn the_log_purge_walks_projects_without_expiry_entries() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir, "log-purge.redb");
        let t0 = 1_700_000_000_000_i64;
        let newer = t0 + 10 * 86_400_000;
        let n = LOG_PROJECTS_PER_PURGE + 5;
        let projects: Vec<ProjectId> = (0..n).map(|_| ProjectId::generate()).collect();
        for at in [t0, newer] {
            let ops = projects.iter().map(|p| log_only(p, at)).collect();
            commit_all(&mut w, ops);
        }
        assert_eq!(attempts(&w), (2 * n, 2 * n), "a row per project and commit");
        {
            let txn = w.db.begin_read().expect("read");
            let t = txn.open_table(keys::EXPIRY).expect("expiry");
            let log_entries = t
                .iter()
                .expect("iter")
                .filter(|r| {
                    let (k, _) = r.as_ref().expect("row");
                    split_expiry_key(k.value()).is_some_and(|(_, tag, _)| tag == Tag::AttemptLog)
                })
                .count();
            assert_eq!(log_entries, 0, "no expiry entry per log row");
        }
        let purge = |w: &mut Writer, now: i64| {
            w.apply_all(vec![Op::Purge { now }], now).expect("purge");
            attempts(w).0
        };
        // The old rows are due, the newer ones not yet.
        let due = t0 + LOGIN_ATTEMPT_RETENTION_MS;
        assert_eq!(
            purge(&mut w, due - 1),
            2 * n,
            "nothing is due a millisecond early"
        );
        // That purge visited the first `LOG_PROJECTS_PER_PURGE` projects;
        // this one goes on from there, wraps, and visits as many.
        assert_eq!(
            purge(&mut w, due),
            2 * n - LOG_PROJECTS_PER_PURGE,
            "one purge's share"
        );
        assert_eq!(
            purge(&mut w, due),
            n,
            "the next purge goes on where it stopped"
        );
        assert_eq!(purge(&mut w, due), n, "live rows stay");
        let txn = w.db.begin_read().expect("read");
        let t = txn.open_table(keys::ATTEMPT_LOG).expect("attempt log");
        for row in t.iter().expect("iter") {
            let (k, v) = row.expect("row");
            let batch = log_row::decode_keyed(k.value(), v.value()).expect("a log row");
            assert!(
                batch.iter().all(|a| a.at == newer),
                "only the newer rows are left"
            );
        }
        drop(t);
        drop(txn);
        let gone = newer + LOGIN_ATTEMPT_RETENTION_MS;
        purge(&mut w, gone);
        assert_eq!(purge(&mut w, gone), 0, "everything expires");
    }

    /// A `record_ato` of `identifier` whose attempt adds `device`.
    /// Sends the anti-ATO writer a new device's login for
    /// `u{i}@example.com`; the answer comes on the receiver.
    fn send_device_write(
        tx: &std::sync::mpsc::Sender<crate::embedded::ato_writer::AtoMsg>,
        project: &ProjectId,
        i: usize,
        now: i64,
    ) -> oneshot::Receiver<Result<Outcome, StoreError>> {
        let (ack, answer) = oneshot::channel();
        let op = device_op(
            project,
            &format!("u{i}@example.com"),
            &DeviceId::generate(),
            now,
        );
        tx.send(crate::embedded::ato_writer::AtoMsg::Write(
            Box::new(op),
            ack,
        ))
        .expect("send");
        answer
    }

    /// [`send_device_write`], then counted as `EmbeddedStore::write`
    /// counts it (`Signal::sent`), which is what wakes a waiting writer.
    fn send_counted(
        tx: &std::sync::mpsc::Sender<crate::embedded::ato_writer::AtoMsg>,
        signal: &crate::embedded::ato_writer::Signal,
        project: &ProjectId,
        i: usize,
        now: i64,
    ) -> oneshot::Receiver<Result<Outcome, StoreError>> {
        let answer = send_device_write(tx, project, i, now);
        signal.sent();
        answer
    }

    fn device_op(project: &ProjectId, identifier: &str, device: &DeviceId, at: i64) -> Op {
        let attempt = LoginAttempt {
            project_id: project.clone(),
            identifier: identifier.into(),
            at,
            attempt_id: LoginAttempt::new_id(),
            success: true,
            ip: Some("203.0.113.9".into()),
            device_id: Some(device.clone()),
            session_id: None,
            region: Some("FR".into()),
            platform: None,
            browser: None,
        };
        let update = AtoProfile::default().record(
            &AttemptFacts {
                attempt: &attempt,
                location: None,
            },
            7,
            60_000,
        );
        Op::RecordAto {
            project: project.clone(),
            identifier: identifier.into(),
            attempt: Some(Box::new(attempt)),
            update: Box::new(update),
        }
    }

    fn profile_key(project: &ProjectId, identifier: &str) -> Vec<u8> {
        Key::new()
            .str(project.as_str())
            .str(identifier)
            .into_bytes()
    }

    /// A group commit is durable in the journal alone: stopped before any
    /// checkpoint (as a crash leaves it), the store replays it when opened,
    /// profile and log row, and after a clean close holds nothing more to
    /// replay.
    #[tokio::test]
    async fn journalled_writes_survive_a_stop_without_checkpoint() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("replay.redb");
        let project = ProjectId::generate();
        let now = now_ms();
        let device = DeviceId::generate();
        let mut w = writer(&dir, "replay.redb");
        commit_ok(
            &mut w,
            vec![device_op(&project, "a@example.com", &device, now)],
        );
        let journalled = journal::read(&w.overlay)
            .profile(&profile_key(&project, "a@example.com"))
            .cloned()
            .expect("in the overlay");
        assert_eq!(
            stored(&w, &project, "a@example.com"),
            None,
            "not in redb yet"
        );
        assert_eq!(attempts(&w), (0, 0));
        // A stop without a checkpoint, as a crash leaves it.
        drop(w);

        let (store, read, listed) = reopened(&path, &project, "a@example.com").await;
        assert_eq!(read, journalled);
        assert!(read.device(&device).is_some());
        assert_eq!(listed, 1, "the log row is replayed once");
        store.close().await.expect("close");
        drop(store);

        let db = Database::open(&path).expect("redb");
        let done = checkpointed(&db).expect("meta");
        assert!(done >= 1);
        let (_, replay) = Journal::open(&path, done).expect("journal");
        assert!(replay.is_empty(), "a closed store replays nothing");
    }

    /// The store at `path` opened again (replaying its journal), with
    /// `identifier`'s profile as read back and how many of its attempts
    /// the log lists.
    async fn reopened(
        path: &std::path::Path,
        project: &ProjectId,
        identifier: &str,
    ) -> (crate::EmbeddedStore, AtoProfile, usize) {
        let store = crate::EmbeddedStore::open(path).expect("reopen replays");
        let read = crate::DataStore::ato_profile(&store, project, identifier)
            .await
            .expect("read")
            .expect("replayed");
        let listed = crate::DataStore::recent_login_attempts(&store, project, identifier, 0, 10)
            .await
            .expect("list");
        (store, read, listed.len())
    }

    /// A crash with two generations in the journal (one frozen and not yet
    /// checkpointed, one active): the store replays both, oldest first, one
    /// file at a time, so the identifier's newest profile wins and every
    /// attempt's log row is there once.
    #[tokio::test]
    async fn a_crash_with_two_generations_replays_them_oldest_first() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("two.redb");
        let project = ProjectId::generate();
        let now = now_ms();
        let (first, second) = (DeviceId::generate(), DeviceId::generate());
        let mut w = writer(&dir, "two.redb");
        commit_ok(
            &mut w,
            vec![device_op(&project, "a@example.com", &first, now)],
        );
        // Frozen and handed to the redb writer, which never runs here.
        w.ato.rotate();
        commit_ok(
            &mut w,
            vec![device_op(&project, "a@example.com", &second, now + 1)],
        );
        let newest = journal::read(&w.overlay)
            .profile(&profile_key(&project, "a@example.com"))
            .cloned()
            .expect("in the overlay");
        assert!(newest.device(&first).is_some() && newest.device(&second).is_some());
        let (_, listed) = Journal::open(&path, 0).expect("journal");
        assert_eq!(listed.len(), 2, "two generations wait: {listed:?}");
        drop(w);

        let (store, read, listed) = reopened(&path, &project, "a@example.com").await;
        assert_eq!(read, newest, "the newer generation's profile wins");
        assert_eq!(listed, 2, "each attempt's log row, once");
        store.close().await.expect("close");
    }

    /// While the redb writer writes a frozen generation to redb (in
    /// several slices) and new writes go to the active one, the overlay
    /// always answers the newest version; at the end redb holds it and the
    /// overlay nothing.
    #[test]
    fn a_checkpoint_keeps_reads_on_the_newest_version() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir, "slices.redb");
        let project = ProjectId::generate();
        let now = now_ms();
        // Enough profiles for several slices.
        let n = 3 * super::super::checkpoint::CHECKPOINT_SLICE / 400;
        let ops = (0..n)
            .map(|i| {
                device_op(
                    &project,
                    &format!("u{i}@example.com"),
                    &DeviceId::generate(),
                    now,
                )
            })
            .collect();
        assert!(commit(&mut w, ops).iter().all(Result::is_ok));
        let frozen = w.ato.journal.generation();
        w.ato.rotate();
        w.pump();
        // A newer device for u0 lands in the active generation while the
        // frozen one is written.
        let newer = DeviceId::generate();
        commit_ok(
            &mut w,
            vec![device_op(&project, "u0@example.com", &newer, now + 1)],
        );
        let key = profile_key(&project, "u0@example.com");
        let mut slices = 0;
        loop {
            let o = journal::read(&w.overlay);
            assert!(o.profile(&key).expect("u0").device(&newer).is_some());
            if o.frozen.is_none() {
                break;
            }
            drop(o);
            w.redb.step_journal();
            slices += 1;
        }
        assert!(slices >= 2, "{slices} slices");
        w.progress.wait_for(frozen);
        // The frozen generation is in redb; u0's newest is still journalled.
        assert!(stored(&w, &project, "u1@example.com").is_some());
        let in_redb = stored(&w, &project, "u0@example.com").expect("u0");
        assert!(in_redb.device(&newer).is_none());
        assert_eq!(checkpointed(&w.db).expect("meta"), frozen);
        w.checkpoint_all();
        assert!(stored(&w, &project, "u0@example.com")
            .expect("u0")
            .device(&newer)
            .is_some());
        assert_eq!(attempts(&w).1, n + 1, "every attempt logged once");
        assert!(journal::read(&w.overlay).profile(&key).is_none());
    }

    /// The anti-ATO writer's loop: the writes queued before a close are
    /// committed in groups of about half (40 waiting: 20, then 20), each
    /// acked, and the close is answered after them.
    #[test]
    fn queued_writes_commit_in_halves_before_a_close() {
        use crate::embedded::ato_writer::AtoMsg;
        let dir = tempfile::tempdir().expect("dir");
        let w = writer(&dir, "loop.redb");
        let project = ProjectId::generate();
        let now = now_ms();
        let (tx, rx) = std::sync::mpsc::channel();
        let answers: Vec<_> = (0..40)
            .map(|i| send_device_write(&tx, &project, i, now))
            .collect();
        let (close, mut closed) = oneshot::channel();
        tx.send(AtoMsg::Close(close)).expect("send");
        // No redb writer runs here: the close's wait for its checkpoint
        // returns at once, the generation frozen in the overlay.
        w.ato.progress.stop.store(true, Ordering::Relaxed);
        let commits = Arc::clone(&w.ato.commits);
        let overlay = Arc::clone(&w.overlay);
        let Writers { ato, .. } = w;
        ato.run(rx);
        assert_eq!(commits.load(Ordering::Relaxed), 2, "two groups of 20");
        // Each caller gets its own write back, to free on its thread.
        for (i, mut a) in answers.into_iter().enumerate() {
            let sent = format!("u{i}@example.com");
            assert!(
                matches!(a.try_recv(), Ok(Ok(Outcome::Returned(op)))
                    if matches!(&*op, Op::RecordAto { identifier, .. } if *identifier == sent)),
                "u{i} answered with its write"
            );
        }
        assert!(closed.try_recv().is_ok(), "the close is answered");
        let o = journal::read(&overlay);
        for i in 0..40 {
            let key = profile_key(&project, &format!("u{i}@example.com"));
            assert!(o.profile(&key).is_some(), "u{i} journalled");
        }
    }

    /// The writer's commit count once it reaches `n`, or after 30 s.
    /// Liveness only: a commit that does not wait takes microseconds.
    fn committed(commits: &AtomicU64, n: u64) -> u64 {
        let until = Instant::now() + Duration::from_secs(30);
        while commits.load(Ordering::SeqCst) < n && Instant::now() < until {
            std::thread::yield_now();
        }
        commits.load(Ordering::SeqCst)
    }

    /// The writer's loop, end to end: after a group of four a write waits
    /// for the busy worker to park (its bound here is an hour, so only the
    /// park ends the wait); after a group of one it commits at once with
    /// the worker busy; a close is answered.
    #[test]
    fn the_loop_waits_only_after_a_group_of_four() {
        use crate::embedded::ato_writer::AtoMsg;
        use crate::workers::{BusyWorker, TEST_LOCK};
        let _serial = TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir, "loop-wait.redb");
        w.ato.group_wait = Duration::from_secs(3600);
        w.ato.progress.stop.store(true, Ordering::Relaxed);
        let project = ProjectId::generate();
        let now = now_ms();
        let (tx, rx) = std::sync::mpsc::channel();
        let signal = Arc::clone(&w.ato.signal);
        let commits = Arc::clone(&w.ato.commits);
        let send = |i: usize| send_counted(&tx, &signal, &project, i, now);
        let committed = |n: u64| committed(&commits, n);
        let worker = BusyWorker::start();
        // Four writes waiting when the loop starts: after no group at all,
        // they commit at once, as one group (under `MIN_GROUP`, whole).
        let four: Vec<_> = (0..4).map(send).collect();
        let Writers { ato, .. } = w;
        let looping = std::thread::spawn(move || ato.run(rx));
        for a in four {
            assert!(a.blocking_recv().expect("acked").is_ok());
        }
        assert_eq!(commits.load(Ordering::SeqCst), 1, "one group of four");
        // After a group of four, a write waits for the busy worker: its
        // bound is an hour, so nothing commits until the worker parks.
        let waiting = send(4);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            commits.load(Ordering::SeqCst),
            1,
            "after a group of four the write waits for the busy worker"
        );
        worker.park();
        assert!(waiting.blocking_recv().expect("acked").is_ok());
        assert_eq!(committed(2), 2);
        // After a group of one, a write does not wait, worker busy or not.
        let worker = BusyWorker::start();
        let single = send(5);
        assert_eq!(
            committed(3),
            3,
            "a write after a group of one does not wait"
        );
        assert!(single.blocking_recv().expect("acked").is_ok());
        worker.park();
        let (close, closed) = oneshot::channel();
        tx.send(AtoMsg::Close(close)).expect("send");
        assert!(closed.blocking_recv().is_ok(), "the close is answered");
        looping.join().expect("loop");
    }

    /// After a group of four, the loop holds the next commit for its
    /// spacing even with no worker busy (steady writes leave the workers
    /// idle between them); after a group of one it does not.
    #[test]
    fn the_loop_spaces_commits_only_after_a_group_of_four() {
        use crate::embedded::ato_writer::AtoMsg;
        let _serial = crate::workers::TEST_LOCK
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("dir");
        let project = ProjectId::generate();
        let now = now_ms();
        for first_group in [1, 4] {
            let mut w = writer(&dir, &format!("spacing-{first_group}.redb"));
            w.ato.spacing = Duration::from_secs(3600);
            w.ato.group_wait = Duration::ZERO;
            w.ato.progress.stop.store(true, Ordering::Relaxed);
            let (tx, rx) = std::sync::mpsc::channel();
            let signal = Arc::clone(&w.ato.signal);
            let commits = Arc::clone(&w.ato.commits);
            let send = |i: usize| send_counted(&tx, &signal, &project, i, now);
            // Waiting when the loop starts: one group, committed at once.
            let first: Vec<_> = (0..first_group).map(send).collect();
            let Writers { ato, .. } = w;
            let looping = std::thread::spawn(move || ato.run(rx));
            for a in first {
                assert!(a.blocking_recv().expect("acked").is_ok());
            }
            assert_eq!(commits.load(Ordering::SeqCst), 1);
            let next = send(first_group);
            if first_group == 1 {
                assert_eq!(committed(&commits, 2), 2, "no spacing after a group of one");
            } else {
                // An hour's spacing: nothing commits until the close.
                std::thread::sleep(Duration::from_millis(50));
                assert_eq!(
                    commits.load(Ordering::SeqCst),
                    1,
                    "after a group of four the write waits for its spacing"
                );
            }
            // A close ends the spacing (its sender wakes the writer, as
            // `EmbeddedStore::close` does); the write before it is
            // committed first.
            let (close, closed) = oneshot::channel();
            tx.send(AtoMsg::Close(close)).expect("send");
            signal.message();
            assert!(next.blocking_recv().expect("acked").is_ok());
            assert_eq!(commits.load(Ordering::SeqCst), 2);
            assert!(closed.blocking_recv().is_ok(), "the close is answered");
            looping.join().expect("loop");
        }
    }

    /// A spaced commit waits until its time, unless a batch fills (the
    /// sender that fills it wakes the writer) or a close waits; idle
    /// workers do not end it.
    #[test]
    fn a_spaced_commit_waits_for_its_time_a_full_batch_or_a_close() {
        use crate::embedded::ato_writer::{AtoMsg, GroupReady};
        use std::collections::VecDeque;
        let _serial = crate::workers::TEST_LOCK
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("dir");
        let w = writer(&dir, "spacing.redb");
        let project = ProjectId::generate();
        let now = now_ms();
        let (tx, rx) = std::sync::mpsc::channel();
        let signal = Arc::clone(&w.ato.signal);
        let send = |i: usize| send_counted(&tx, &signal, &project, i, now);
        let mut queue = VecDeque::new();
        let mut after = None;
        let hour = Instant::now() + Duration::from_secs(3600);

        // Its time already passed: at once, with what waits.
        let _a = send(0);
        let ready = w
            .ato
            .wait_for_spacing(&rx, &mut queue, &mut after, Instant::now(), 1024);
        assert_eq!((ready, queue.len()), (GroupReady::Deadline, 1));
        queue.clear();

        // No worker busy, an hour to go: the sender of the fifth write
        // ends it.
        let ready = std::thread::scope(|s| {
            let sender = s.spawn(|| (1..=5).map(send).collect::<Vec<_>>());
            let ready = w.ato.wait_for_spacing(&rx, &mut queue, &mut after, hour, 5);
            drop(sender.join().expect("sender"));
            ready
        });
        assert_eq!((ready, queue.len()), (GroupReady::Full, 5));
        queue.clear();

        // Fewer than wanted: its time ends it.
        let _a = send(6);
        let soon = Instant::now() + Duration::from_millis(1);
        let ready = w
            .ato
            .wait_for_spacing(&rx, &mut queue, &mut after, soon, 1024);
        assert_eq!((ready, queue.len()), (GroupReady::Deadline, 1));
        assert!(Instant::now() >= soon, "not before its time");
        queue.clear();

        // A close waiting is not held up.
        let _a = send(7);
        let (close, _closed) = oneshot::channel();
        tx.send(AtoMsg::Close(close)).expect("send");
        let ready = w
            .ato
            .wait_for_spacing(&rx, &mut queue, &mut after, hour, 1024);
        assert_eq!((ready, queue.len()), (GroupReady::Message, 1));
        assert!(matches!(after, Some(AtoMsg::Close(_))));
        (queue, after) = (VecDeque::new(), None);

        // Nor is one sent while it waits: its sender wakes the writer.
        let _a = send(8);
        let ready = std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(10));
                let (close, _closed) = oneshot::channel();
                tx.send(AtoMsg::Close(close)).expect("send");
                signal.message();
            });
            w.ato
                .wait_for_spacing(&rx, &mut queue, &mut after, hour, 1024)
        });
        assert_eq!((ready, queue.len()), (GroupReady::Message, 1));
    }

    /// Before a group commit the anti-ATO writer waits while a worker is
    /// busy: until the writes it wants have come (the sender wakes it),
    /// until the worker parks, or until its longest wait; with no worker
    /// busy, or a close waiting, it does not wait at all.
    #[test]
    fn a_group_waits_for_busy_workers_and_no_longer() {
        use crate::embedded::ato_writer::{AtoMsg, GroupReady};
        use crate::workers::{BusyWorker, TEST_LOCK};
        use std::collections::VecDeque;
        let _serial = TEST_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir, "wait.redb");
        let project = ProjectId::generate();
        let now = now_ms();
        let (tx, rx) = std::sync::mpsc::channel();
        let signal = Arc::clone(&w.ato.signal);
        // As `EmbeddedStore::write` sends: the write, then the count.
        let send = |i: usize| send_counted(&tx, &signal, &project, i, now);
        let mut queue = VecDeque::new();
        let mut after = None;

        // No worker busy: at once, with what waits.
        let _a = send(0);
        let ready = w.ato.wait_for_group(&rx, &mut queue, &mut after, 1024);
        assert_eq!((ready, queue.len()), (GroupReady::Idle, 1));
        queue.clear();

        // A worker busy: the wait ends when the fifth write is sent, by
        // whichever thread sends it (an hour's bound is never reached).
        w.ato.group_wait = Duration::from_secs(3600);
        let worker = BusyWorker::start();
        let ready = std::thread::scope(|s| {
            let sender = s.spawn(|| (1..=5).map(send).collect::<Vec<_>>());
            let ready = w.ato.wait_for_group(&rx, &mut queue, &mut after, 5);
            drop(sender.join().expect("sender"));
            ready
        });
        assert_eq!((ready, queue.len()), (GroupReady::Full, 5));
        queue.clear();

        // Fewer than wanted: the worker's park ends the wait.
        let _a = send(6);
        let ready = std::thread::scope(|s| {
            s.spawn(|| worker.park());
            w.ato.wait_for_group(&rx, &mut queue, &mut after, 1024)
        });
        assert_eq!((ready, queue.len()), (GroupReady::Idle, 1));
        queue.clear();

        // A worker busy throughout: the longest wait ends it.
        w.ato.group_wait = Duration::from_millis(1);
        let worker = BusyWorker::start();
        let _a = send(7);
        let ready = w.ato.wait_for_group(&rx, &mut queue, &mut after, 1024);
        assert_eq!((ready, queue.len()), (GroupReady::Deadline, 1));
        queue.clear();

        // A close waiting is not held up.
        w.ato.group_wait = Duration::from_secs(3600);
        let _a = send(8);
        let (close, _closed) = oneshot::channel();
        tx.send(AtoMsg::Close(close)).expect("send");
        let ready = w.ato.wait_for_group(&rx, &mut queue, &mut after, 1024);
        assert_eq!((ready, queue.len()), (GroupReady::Message, 1));
        assert!(matches!(after, Some(AtoMsg::Close(_))));
        worker.park();
    }

    /// Writes to one profile add no expiry entries after the first, and
    /// the purge still removes the profile once everything in it expired.
    #[test]
    fn profile_writes_keep_one_expiry_entry_and_still_expire() {
        let dir = tempfile::tempdir().expect("dir");
        let mut w = writer(&dir, "expiry.redb");
        let project = ProjectId::generate();
        let now = now_ms();
        let device = DeviceId::generate();
        let mut view = AtoProfile::default();
        for k in 0..20i64 {
            let attempt = LoginAttempt {
                project_id: project.clone(),
                identifier: "a@example.com".into(),
                at: now - 10_000 + k * 100,
                attempt_id: LoginAttempt::new_id(),
                success: k % 3 != 0,
                ip: None,
                device_id: Some(device.clone()),
                session_id: None,
                region: Some("FR".into()),
                platform: None,
                browser: None,
            };
            let update = view.record(
                &AttemptFacts {
                    attempt: &attempt,
                    location: None,
                },
                7,
                60_000,
            );
            let op = Op::RecordAto {
                project: project.clone(),
                identifier: "a@example.com".into(),
                attempt: None,
                update: Box::new(update),
            };
            commit_all(&mut w, vec![op]);
        }
        let profile_entries = |w: &Writer| {
            let txn = w.db.begin_read().expect("read");
            let t = txn.open_table(keys::EXPIRY).expect("expiry");
            t.iter()
                .expect("iter")
                .filter(|e| {
                    let (k, _) = e.as_ref().expect("entry");
                    split_expiry_key(k.value()).is_some_and(|(_, tag, _)| tag == Tag::Profile)
                })
                .count()
        };
        assert_eq!(profile_entries(&w), 1);
        assert!(stored(&w, &project, "a@example.com").is_some());
        // Far past every retention: the purge visits, re-indexes as needed
        // and finally deletes the row.
        let mut at = now;
        for _ in 0..5 {
            at += PROFILE_RETENTION_MS;
            w.apply_all(vec![Op::Purge { now: at }], at).expect("purge");
        }
        assert_eq!(stored(&w, &project, "a@example.com"), None);
        assert_eq!(profile_entries(&w), 0);
    }
}
