//! The embedded [`DataStore`]: one redb file, for `qyzar dev` and single-box
//! installs with no database server.
//!
//! - **Writes** go through two writer threads, each grouping everything
//!   queued so concurrent requests share an fsync instead of queueing for
//!   one each: `record_ato` through the anti-ATO journal ([`ato_writer`],
//!   one appended frame per group, [`journal`]), everything else through
//!   the redb writer ([`writer`], one durable transaction per group), which
//!   also writes what the journal holds to redb in slices ([`checkpoint`]).
//!   Profile and attempt-log reads look in the journal's overlay first.
//! - **Reads** open their own read transaction on the caller's thread
//!   (see [`EmbeddedStore::read`] for why not the blocking pool); redb
//!   readers never wait for the writer and see the last commit.
//! - **Expiry**: reads filter on `expires_at`, and an expiry index lets the
//!   writer delete due rows every [`PURGE_INTERVAL`](writer::PURGE_INTERVAL)
//!   without scanning live data ([`EmbeddedStore::purge_expired`] runs the
//!   same pass on demand). An ATO profile is indexed at the earliest time
//!   one of its cells expires; the purge then drops what expired and
//!   deletes the row once nothing, not even a trusted device, is left.
//!   Retained lists (attempts, snapshots, denies) may
//!   show a row up to one purge interval past its retention.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use async_trait::async_trait;
use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use redb::{Database, ReadTransaction};
use tokio::sync::oneshot;

use self::keys::Key;
use self::rows::{db_err, decode, newest_attempts, scan_log, scan_newest, trusted_set};
use self::writer::{Msg, Op, Outcome, Writer};
use super::model::check_identifier;
use super::{
    check_ato_write, check_expiry, check_touch, expire_profile, now_ms, profile_is_empty,
    AtoProfile, DataStore, DenyEvent, DeviceDay, EntropySnapshot, LoginAttempt, ProfileUpdate,
    Session, SessionTouch, StoreError, DEVICE_DAY_SHARDS,
};

mod ato_writer;
mod checkpoint;
mod journal;
mod keys;
mod log_row;
mod profile_row;
mod rows;
mod slots;
mod writer;

/// Most writes waiting for the writers at once. Callers beyond it wait
/// (asynchronously) for a slot, so a burst cannot grow the queue without
/// bound; 8192 is several full batches. A project holds at most a quarter
/// of them ([`slots`]).
const MAX_QUEUED_WRITES: usize = 8192;

/// Touches per transaction of [`EmbeddedStore::touch_sessions`]: each is
/// a session row's read and rewrite (a few µs), so a chunk is a
/// millisecond or two of the writer's time, yielded in slices.
const TOUCH_CHUNK: usize = 512;

/// The embedded store. Cheap to clone; all clones share one writer.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// The anti-ATO writer (`ato_writer.rs`); `None` only while dropping.
    ato_tx: Option<mpsc::Sender<ato_writer::AtoMsg>>,
    ato_writer: Option<std::thread::JoinHandle<()>>,
    ato_signal: Arc<ato_writer::Signal>,
    commits: Arc<AtomicU64>,
    /// Anti-ATO changes journalled and not yet in redb, read before it.
    overlay: journal::SharedOverlay,
    queue: slots::Slots,
    /// Set by [`EmbeddedStore::close`], so `health` stops answering ok.
    closed: AtomicBool,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("commits", &self.commit_count())
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path`, creating its folder.
    /// Fails with `Unavailable` when another process holds the file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create the store folder: {e}"))
            })?;
        }
        let db = Arc::new(Database::create(path).map_err(db_err)?);
        // Create every table once, so readers never meet a missing one.
        let txn = db.begin_write().map_err(db_err)?;
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
            txn.open_table(t).map_err(db_err)?;
        }
        txn.open_table(keys::EXPIRY).map_err(db_err)?;
        txn.open_table(keys::META).map_err(db_err)?;
        txn.commit().map_err(db_err)?;

        // What the anti-ATO journal holds past the last checkpoint goes to
        // redb before anything else is written (`journal.rs`).
        let mut checkpointed = writer::checkpointed(&db)?;
        let (journal, replay) = journal::Journal::open(path, checkpointed)?;
        if let Some(&(newest, _)) = replay.last() {
            let mut pending = journal::Pending::default();
            for &(_, file) in &replay {
                journal.replay(file, |frame| pending.add(frame))?;
            }
            let profiles: Vec<(Vec<u8>, AtoProfile)> = pending
                .profiles
                .into_iter()
                .map(|(k, (p, _))| (k, p))
                .collect();
            tracing::info!(
                profiles = profiles.len(),
                log_rows = pending.log.len(),
                "replaying the ato journal"
            );
            writer::write_rows(&db, &profiles, &pending.log, Some(newest))?;
            checkpointed = newest;
        }
        let overlay = journal::SharedOverlay::default();
        journal::write(&overlay).active.generation = journal.generation();
        let progress = Arc::new(checkpoint::Progress::new(checkpointed));
        let commits = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(
            Arc::clone(&db),
            Arc::clone(&commits),
            Arc::clone(&overlay),
            Arc::clone(&progress),
            random_u64(),
        );
        let ato_signal = Arc::new(ato_writer::Signal::default());
        let ato = ato_writer::AtoWriter {
            signal: Arc::clone(&ato_signal),
            group_wait: ato_writer::group_wait_from_env(),
            spacing: ato_writer::commit_spacing_from_env(),
            db: Arc::clone(&db),
            commits: Arc::clone(&commits),
            next_seq: random_u64(),
            journal,
            overlay: Arc::clone(&overlay),
            progress,
            redb: tx.clone(),
        };
        let (ato_tx, ato_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("qyzar-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        let ato_handle = std::thread::Builder::new()
            .name("qyzar-ato-journal".into())
            .spawn(move || ato.run(ato_rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the ato journal: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                tx: Some(tx),
                writer: Some(handle),
                ato_tx: Some(ato_tx),
                ato_signal,
                ato_writer: Some(ato_handle),
                commits,
                overlay,
                queue: slots::Slots::new(MAX_QUEUED_WRITES),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// Number of write transactions committed since open. Each is one
    /// fsync; tests compare it with the number of writes to prove grouping.
    pub fn commit_count(&self) -> u64 {
        self.inner.commits.load(Ordering::Relaxed)
    }

    /// Deletes every row due at or before `now` (expired sessions and
    /// revocations, attempts/snapshots/denies past retention) and returns
    /// how many rows went. The writer runs this by itself every minute.
    pub async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        // What the journal holds goes to redb first, so the purge sees it.
        self.ato(ato_writer::AtoMsg::Checkpoint).await?;
        match self.write(Op::Purge { now }).await? {
            Outcome::Purged(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }

    /// Commits every write queued so far, then stops the writer; later
    /// writes fail with `Unavailable`. The file is released when the last
    /// clone is dropped. Dropping without `close` also flushes the queue.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.inner.closed.store(true, Ordering::Relaxed);
        // The journal's writer hands everything to the redb writer, then
        // stops; the redb writer writes it and stops.
        let _ = self.ato(ato_writer::AtoMsg::Close).await;
        let (ack, done) = oneshot::channel();
        let Some(tx) = &self.inner.tx else {
            return Ok(());
        };
        if tx.send(Msg::Close(ack)).is_err() {
            return Ok(());
        }
        let _ = done.await;
        Ok(())
    }

    /// Queues one write and waits until the commit that holds it is
    /// durable: a `record_ato` to the journal's writer, the others to the
    /// redb writer.
    async fn write(&self, op: Op) -> Result<Outcome, StoreError> {
        let _slot = self
            .inner
            .queue
            .acquire(op.project())
            .await
            .map_err(|_| closed())?;
        let (ack, answer) = oneshot::channel();
        let sent = if matches!(op, Op::RecordAto { .. }) {
            let tx = self.inner.ato_tx.as_ref().ok_or_else(closed)?;
            let sent = tx
                .send(ato_writer::AtoMsg::Write(Box::new(op), ack))
                .is_ok();
            if sent {
                self.inner.ato_signal.sent();
            }
            sent
        } else {
            let tx = self.inner.tx.as_ref().ok_or_else(closed)?;
            tx.send(Msg::Write(Box::new(op), ack)).is_ok()
        };
        if !sent {
            return Err(closed());
        }
        answer.await.map_err(|_| closed())?
    }

    /// Sends the journal's writer a message answered once done.
    async fn ato(
        &self,
        msg: impl FnOnce(oneshot::Sender<()>) -> ato_writer::AtoMsg,
    ) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        let tx = self.inner.ato_tx.as_ref().ok_or_else(closed)?;
        tx.send(msg(ack)).map_err(|_| closed())?;
        self.inner.ato_signal.message();
        done.await.map_err(|_| closed())
    }

    /// Runs `f` in a fresh read transaction, on the calling task's thread.
    ///
    /// Inline rather than on the blocking pool: a read here is a few B-tree
    /// pages from redb's cache or the OS page cache and takes microseconds,
    /// while a `spawn_blocking` hop costs thread wake-ups that cost more
    /// than the read. On the ATO route (two reads per call) moving them
    /// inline cut the engine's CPU per call from about 134 to 84 µs and its
    /// futex calls from 11 to under 1 per call (BENCHMARKS.md). redb readers
    /// never wait for the writer, so this only blocks on a cold page read
    /// from disk, which an embedded single-box store accepts. Reads are
    /// bounded (`MAX_LIST_LIMIT` rows at most).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&ReadTransaction) -> Result<T, StoreError>,
    {
        f(&self.inner.db.begin_read().map_err(db_err)?)
    }

    async fn found(&self, op: Op) -> Result<bool, StoreError> {
        match self.write(op).await? {
            Outcome::Found(b) => Ok(b),
            other => Err(unexpected(&other)),
        }
    }

    async fn done(&self, op: Op) -> Result<(), StoreError> {
        match self.write(op).await? {
            Outcome::Done => Ok(()),
            // Freed here, on the thread that allocated it.
            Outcome::Returned(op) => {
                drop(op);
                Ok(())
            }
            other => Err(unexpected(&other)),
        }
    }
}

impl Drop for Inner {
    /// Lets the writer commit what is queued and release the file before
    /// the handle is gone, so the same path can be opened again at once.
    /// Waits at most for one commit.
    fn drop(&mut self) {
        // The anti-ATO writer first: it hands work to the redb writer,
        // which stops once both senders are gone.
        drop(self.ato_tx.take());
        if let Some(h) = self.ato_writer.take() {
            let _ = h.join();
        }
        drop(self.tx.take());
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

#[async_trait]
impl DataStore for EmbeddedStore {
    async fn put_session(&self, session: &Session) -> Result<(), StoreError> {
        session.validate()?;
        check_expiry(session.expires_at, now_ms())?;
        self.done(Op::PutSession(session.clone())).await
    }

    async fn get_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<Option<Session>, StoreError> {
        let key = Key::new()
            .str(project.as_str())
            .str(session.as_str())
            .into_bytes();
        self.read(move |txn| {
            let t = txn.open_table(keys::SESSIONS).map_err(db_err)?;
            let Some(v) = t.get(key.as_slice()).map_err(db_err)? else {
                return Ok(None);
            };
            let s: Session = decode(v.value())?;
            Ok((s.expires_at > now_ms()).then_some(s))
        })
        .await
    }

    async fn touch_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
        last_seen_at: i64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        check_touch(last_seen_at, expires_at, now_ms())?;
        let op = Op::TouchSession {
            project: project.clone(),
            session: session.clone(),
            last_seen_at,
            expires_at,
        };
        self.found(op).await
    }

    /// Chunks of [`TOUCH_CHUNK`] touches, each one write: one transaction
    /// and one wake of the writer, and no write slot per touch (the
    /// engine's own batch, as deny events). Invalid touches are answered
    /// without being sent.
    async fn touch_sessions(&self, touches: &[SessionTouch]) -> Vec<Result<bool, StoreError>> {
        let now = now_ms();
        let mut out: Vec<Result<bool, StoreError>> = touches
            .iter()
            .map(|t| check_touch(t.last_seen_at, t.expires_at, now).map(|()| false))
            .collect();
        let valid: Vec<usize> = (0..touches.len()).filter(|&i| out[i].is_ok()).collect();
        for chunk in valid.chunks(TOUCH_CHUNK) {
            let op = Op::TouchSessions(chunk.iter().map(|&i| touches[i].clone()).collect());
            match self.write(op).await {
                Ok(Outcome::Touched(answers)) if answers.len() == chunk.len() => {
                    for (&i, a) in chunk.iter().zip(answers) {
                        out[i] = a;
                    }
                }
                Ok(other) => {
                    let e = unexpected(&other);
                    chunk.iter().for_each(|&i| out[i] = Err(e.clone()));
                }
                Err(e) => chunk.iter().for_each(|&i| out[i] = Err(e.clone())),
            }
        }
        out
    }

    async fn revoke_session(
        &self,
        project: &ProjectId,
        session: &SessionId,
    ) -> Result<bool, StoreError> {
        self.found(Op::RevokeSession {
            project: project.clone(),
            session: session.clone(),
        })
        .await
    }

    async fn add_trusted_identifier(
        &self,
        project: &ProjectId,
        device: &DeviceId,
        identifier: &str,
    ) -> Result<Vec<String>, StoreError> {
        check_identifier("identifier", identifier)?;
        let op = Op::AddTrusted {
            project: project.clone(),
            device: device.clone(),
            identifier: identifier.into(),
        };
        match self.write(op).await? {
            Outcome::Identifiers(v) => Ok(v),
            other => Err(unexpected(&other)),
        }
    }

    async fn trusted_identifiers(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = Key::new()
            .str(project.as_str())
            .str(device.as_str())
            .into_bytes();
        self.read(move |txn| {
            let t = txn.open_table(keys::TRUSTED).map_err(db_err)?;
            trusted_set(&t, &prefix).map_err(db_err)
        })
        .await
    }

    async fn put_entropy_snapshot(&self, snapshot: &EntropySnapshot) -> Result<(), StoreError> {
        snapshot.validate()?;
        let newest = self
            .list_entropy_snapshots(
                &snapshot.project_id,
                &snapshot.device_id,
                super::MAX_ENTROPY_SNAPSHOTS_PER_DAY,
            )
            .await?;
        let times: Vec<i64> = newest.iter().map(|s| s.at).collect();
        if super::entropy_day_is_full(&times, snapshot.at) {
            return Ok(());
        }
        self.done(Op::PutSnapshot(snapshot.clone())).await
    }

    async fn latest_entropy_snapshot(
        &self,
        project: &ProjectId,
        device: &DeviceId,
    ) -> Result<Option<EntropySnapshot>, StoreError> {
        Ok(self.list_entropy_snapshots(project, device, 1).await?.pop())
    }

    async fn list_entropy_snapshots(
        &self,
        project: &ProjectId,
        device: &DeviceId,
        limit: usize,
    ) -> Result<Vec<EntropySnapshot>, StoreError> {
        let prefix = Key::new()
            .str(project.as_str())
            .str(device.as_str())
            .into_bytes();
        self.read(move |txn| scan_newest(txn, keys::SNAPSHOTS, &prefix, 0, limit))
            .await
    }

    async fn record_login_attempt(&self, attempt: &LoginAttempt) -> Result<(), StoreError> {
        attempt.validate()?;
        self.done(Op::RecordAttempt(attempt.clone())).await
    }

    /// The per-identifier rows and the project's attempt log together (two
    /// read transactions: the sets are disjoint, so a commit between them
    /// can only add newer log rows).
    async fn recent_login_attempts(
        &self,
        project: &ProjectId,
        identifier: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError> {
        let mut rows = self
            .unprofiled_login_attempts(project, identifier, since_ms, limit)
            .await?;
        rows.extend(
            self.read(|txn| scan_log(txn, project, identifier, since_ms, limit))
                .await?,
        );
        // Rows still only in the journal (read after redb: a checkpoint in
        // between leaves a row in both, and `newest_attempts` keeps one).
        let prefix = Key::new().str(project.as_str()).into_bytes();
        for row in journal::read(&self.inner.overlay).log_rows(&prefix) {
            let batch = log_row::decode(row, project)?;
            rows.extend(batch.into_iter().filter(|a| {
                a.at >= since_ms && a.identifier == identifier && a.project_id == *project
            }));
        }
        Ok(newest_attempts(rows, limit))
    }

    /// Only the per-identifier rows: attempts logged by `record_ato` are in
    /// the profile already and live in the time-ordered log
    /// ([`keys::ATTEMPT_LOG`]), which the hot path never scans.
    async fn unprofiled_login_attempts(
        &self,
        project: &ProjectId,
        identifier: &str,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<LoginAttempt>, StoreError> {
        check_identifier("identifier", identifier)?;
        let prefix = Key::new()
            .str(project.as_str())
            .str(identifier)
            .into_bytes();
        self.read(move |txn| scan_newest(txn, keys::ATTEMPTS, &prefix, since_ms, limit))
            .await
    }

    async fn ato_profile(
        &self,
        project: &ProjectId,
        identifier: &str,
    ) -> Result<Option<AtoProfile>, StoreError> {
        check_identifier("identifier", identifier)?;
        let key = Key::new()
            .str(project.as_str())
            .str(identifier)
            .into_bytes();
        // The journal's version is newer than redb's, when there is one.
        let journalled = journal::read(&self.inner.overlay).profile(&key).cloned();
        let stored = match journalled {
            Some(p) => Some(p),
            None => {
                self.read(move |txn| {
                    let t = txn.open_table(keys::PROFILES).map_err(db_err)?;
                    let Some(v) = t.get(key.as_slice()).map_err(db_err)? else {
                        return Ok(None);
                    };
                    profile_row::decode(v.value()).map(Some)
                })
                .await?
            }
        };
        Ok(stored.and_then(|mut p| {
            // The purge runs once a minute: drop what expired since.
            let now = now_ms();
            expire_profile(&mut p, now);
            p.bound(now);
            (!profile_is_empty(&p)).then_some(p)
        }))
    }

    /// One writer op: the join happens inside the write transaction, so
    /// concurrent callers (all funnelled through the single writer) are
    /// joined one after the other and none can overwrite another's cells.
    async fn record_ato(
        &self,
        project: &ProjectId,
        identifier: &str,
        attempt: Option<LoginAttempt>,
        update: ProfileUpdate,
    ) -> Result<(), StoreError> {
        check_ato_write(project, identifier, attempt.as_ref(), &update)?;
        self.done(Op::RecordAto {
            project: project.clone(),
            identifier: identifier.into(),
            attempt: attempt.map(Box::new),
            update: Box::new(update),
        })
        .await
    }

    async fn revoke_token(
        &self,
        project: &ProjectId,
        jti: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        check_identifier("jti", jti)?;
        self.done(Op::RevokeToken {
            project: project.clone(),
            jti: jti.into(),
            expires_at,
        })
        .await
    }

    async fn is_token_revoked(&self, project: &ProjectId, jti: &str) -> Result<bool, StoreError> {
        check_identifier("jti", jti)?;
        let key = Key::new().str(project.as_str()).str(jti).into_bytes();
        self.read(move |txn| {
            let t = txn.open_table(keys::REVOKED).map_err(db_err)?;
            let until = t
                .get(key.as_slice())
                .map_err(db_err)?
                .and_then(|v| keys::read_time_value(v.value()));
            Ok(until.is_some_and(|u| u > now_ms()))
        })
        .await
    }

    async fn record_deny_events(&self, events: &[DenyEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        events.iter().try_for_each(DenyEvent::validate)?;
        self.done(Op::RecordDenies(events.to_vec())).await
    }

    async fn list_deny_events(
        &self,
        project: &ProjectId,
        since_ms: i64,
        limit: usize,
    ) -> Result<Vec<DenyEvent>, StoreError> {
        let prefix = Key::new().str(project.as_str()).into_bytes();
        self.read(move |txn| scan_newest(txn, keys::DENIES, &prefix, since_ms, limit))
            .await
    }

    async fn record_device_days(&self, rows: &[DeviceDay]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        rows.iter().try_for_each(DeviceDay::validate)?;
        self.done(Op::RecordDeviceDays(rows.to_vec())).await
    }

    async fn list_device_days(
        &self,
        project: &ProjectId,
        day: i64,
        after: Option<(u8, &DeviceId)>,
        limit: usize,
    ) -> Result<Vec<DeviceDay>, StoreError> {
        let limit = limit.min(super::MAX_LIST_LIMIT);
        let prefix = Key::new()
            .str(project.as_str())
            .u64(keys::time_bits(day))
            .into_bytes();
        // The first key after the cursor: (shard, device) then one more byte.
        let start = match after {
            None => prefix.clone(),
            Some((shard, device)) => {
                let mut k = Key::new()
                    .str(project.as_str())
                    .u64(keys::time_bits(day))
                    .u64(u64::from(shard.min(DEVICE_DAY_SHARDS)))
                    .str(device.as_str())
                    .into_bytes();
                k.push(0);
                k
            }
        };
        self.read(move |txn| {
            let t = txn.open_table(keys::DEVICE_DAYS).map_err(db_err)?;
            let mut out = Vec::new();
            if limit == 0 {
                return Ok(out);
            }
            for row in t.range(start.as_slice()..).map_err(db_err)? {
                let (k, v) = row.map_err(db_err)?;
                if !k.value().starts_with(&prefix) {
                    break;
                }
                out.push(decode::<DeviceDay>(v.value())?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn health(&self) -> Result<(), StoreError> {
        if self.inner.closed.load(Ordering::Relaxed) {
            return Err(closed());
        }
        self.read(|txn| txn.open_table(keys::SESSIONS).map(drop).map_err(db_err))
            .await
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the embedded store is closed".into())
}

fn unexpected(o: &Outcome) -> StoreError {
    StoreError::Corrupt(format!(
        "the store writer answered {o:?} to another request"
    ))
}

fn random_u64() -> u64 {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 8];
    // A fixed seed only risks merging two deny events of one project in
    // one millisecond across a restart; not worth failing open for.
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_be_bytes(b)
}
