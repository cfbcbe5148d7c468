//! Group commit for the anti-ATO write on CQL, per identifier, as the
//! embedded store's writer joins one identifier's updates
//! (`embedded/writer.rs`).
//!
//! Every `ato-login-attempt` writes one `LOGGED` batch: the attempt row and
//! the profile's changed cells, two partitions of one (project,
//! identifier). A logged batch is the coordinator's most expensive write
//! (written to its batch log, applied, the log entry removed), and each is
//! a request of its own for the driver and the node. When an identifier is
//! under attack, many such batches for the same two partitions are in
//! flight at once. Here each identifier has at most one batch in flight:
//! a write for an identifier with none goes out at once (so a quiet
//! identifier pays nothing), and writes arriving meanwhile queue and go
//! out together as the next batch (bounded by [`MAX_GROUP_BYTES`] and
//! [`MAX_GROUP_STATEMENTS`]), every caller acked once the batch holding
//! its write is written at the configured consistency. Different
//! identifiers are never joined: a batch stays on its two partitions (a
//! multi-partition group measured slower on Cassandra, BENCHMARKS.md).
//! Joining changes no merge: every statement keeps its own `USING
//! TIMESTAMP` (see [`ato`](super::ato)), so N batches and one batch of the
//! same statements leave the same cells. A batch the node rejects is
//! retried one caller at a time, so one caller's bad write never fails
//! another's; a batch that times out fails its callers, as their own
//! batches would have.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ::scylla::client::session::Session as CqlSession;
use ::scylla::serialize::row::{RowSerializationContext, SerializeRow};
use ::scylla::serialize::writers::RowWriter;
use ::scylla::serialize::SerializationError;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::Consistency;
use tokio::sync::oneshot;

use super::errors::exec_err;
use crate::StoreError;

/// Most bytes of bound values in one batch. Cassandra refuses a batch whose
/// mutations exceed `batch_size_fail_threshold` (50 KiB by default; ScyllaDB
/// 1 MiB), and mutations are larger than their bound values; 16 KiB keeps a
/// full group well under that. A single write larger than this goes alone,
/// as before.
const MAX_GROUP_BYTES: usize = 16 * 1024;
/// Most statements in one batch.
const MAX_GROUP_STATEMENTS: usize = 256;

/// One statement's values, serialized when the write is queued so the
/// queue holds no borrow of the caller (the form of `SerializedValues`,
/// which the driver does not export): the cells as the CQL protocol writes
/// them, each an `[int]` length (−1 null, −2 unset) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bound {
    bytes: Vec<u8>,
    count: usize,
}

impl Bound {
    /// Serializes `values` for `st`, type-checked against the statement's
    /// bind markers as the driver would check them.
    pub(super) fn new(
        st: &PreparedStatement,
        values: &(dyn SerializeRow + Send + Sync + '_),
    ) -> Result<Self, StoreError> {
        let specs = st.get_variable_col_specs();
        Self::with_context(
            &RowSerializationContext::from_specs(specs.as_slice()),
            values,
        )
    }

    fn with_context(
        ctx: &RowSerializationContext<'_>,
        values: &(dyn SerializeRow + Send + Sync + '_),
    ) -> Result<Self, StoreError> {
        let mut bytes = Vec::new();
        let mut w = RowWriter::new(&mut bytes);
        values
            .serialize(ctx, &mut w)
            .map_err(|e| StoreError::Corrupt(format!("cql ato write: {e}")))?;
        let count = w.value_count();
        Ok(Bound { bytes, count })
    }

    fn size(&self) -> usize {
        self.bytes.len()
    }
}

/// The cells of a [`Bound`] could not be read back: never happens for
/// cells [`Bound::new`] wrote, but reported, not panicked on.
#[derive(Debug, thiserror::Error)]
#[error("a serialized CQL row is malformed")]
struct Malformed;

impl SerializeRow for Bound {
    fn serialize(
        &self,
        _ctx: &RowSerializationContext<'_>,
        writer: &mut RowWriter,
    ) -> Result<(), SerializationError> {
        let mut rest = self.bytes.as_slice();
        for _ in 0..self.count {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| SerializationError::new(Malformed))?;
            rest = tail;
            let cell = writer.make_cell_writer();
            match i32::from_be_bytes(*len) {
                -1 => {
                    cell.set_null();
                }
                -2 => {
                    cell.set_unset();
                }
                n => {
                    let n = usize::try_from(n).map_err(|_| SerializationError::new(Malformed))?;
                    let (value, tail) = rest
                        .split_at_checked(n)
                        .ok_or_else(|| SerializationError::new(Malformed))?;
                    cell.set_value(value).map_err(SerializationError::new)?;
                    rest = tail;
                }
            }
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// One caller's write: statements applied together or not at all.
pub(super) struct Write {
    pub(super) statements: Vec<(PreparedStatement, Bound)>,
    /// Holds the attempt row as well as profile cells (two partitions), so
    /// its batch must be `LOGGED` to be atomic.
    pub(super) logged: bool,
}

impl Write {
    fn size(&self) -> usize {
        self.statements.iter().map(|(_, b)| b.size()).sum()
    }
}

struct Queued {
    write: Write,
    size: usize,
    ack: oneshot::Sender<Result<(), StoreError>>,
}

/// (project, identifier): the two partitions one write touches.
type Key = (String, String);

/// The identifiers with a batch in flight, each with the writes waiting
/// for the next one. An entry lives while its identifier has a write in
/// flight, so the map is bounded by the requests being served.
pub(super) struct Group {
    inner: Arc<Inner>,
}

struct Inner {
    session: Arc<CqlSession>,
    consistency: Consistency,
    waiting: Mutex<HashMap<Key, VecDeque<Queued>>>,
    writes: AtomicU64,
    batches: AtomicU64,
}

impl Group {
    pub(super) fn new(session: Arc<CqlSession>, consistency: Consistency) -> Self {
        Group {
            inner: Arc::new(Inner {
                session,
                consistency,
                waiting: Mutex::new(HashMap::new()),
                writes: AtomicU64::new(0),
                batches: AtomicU64::new(0),
            }),
        }
    }

    /// Writes asked for and batches sent (retries of a rejected batch one
    /// write at a time count as batches too).
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.inner.writes.load(Ordering::Relaxed),
            self.inner.batches.load(Ordering::Relaxed),
        )
    }

    /// Writes `write` for `(project, identifier)`; returns once the batch
    /// holding it is written (or has failed). The batches of one identifier
    /// are sent by a task of their own, so a caller whose request is
    /// dropped (its client gone) stops no one else's write.
    pub(super) async fn write(
        &self,
        project: &str,
        identifier: &str,
        write: Write,
    ) -> Result<(), StoreError> {
        self.inner.writes.fetch_add(1, Ordering::Relaxed);
        let (ack, done) = oneshot::channel();
        let queued = Queued {
            size: write.size(),
            write,
            ack,
        };
        let key = (project.to_owned(), identifier.to_owned());
        let lead = {
            let mut waiting = lock(&self.inner.waiting);
            match waiting.get_mut(&key) {
                Some(queue) => {
                    queue.push_back(queued);
                    None
                }
                None => {
                    waiting.insert(key.clone(), VecDeque::new());
                    Some(queued)
                }
            }
        };
        if let Some(first) = lead {
            tokio::spawn(drive(Arc::clone(&self.inner), key, first));
        }
        done.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere cannot leave the map half-changed: every change is
    // one insert, push or remove.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn stopped() -> StoreError {
    StoreError::Unavailable("cql ato write: the write was dropped before it was sent".into())
}

/// Sends `first`, then whatever queued for `key` meanwhile, batch after
/// batch, until nothing waits; then forgets `key`.
async fn drive(inner: Arc<Inner>, key: Key, first: Queued) {
    let mut group = vec![first];
    loop {
        commit(&inner, group).await;
        let mut waiting = lock(&inner.waiting);
        let Some(queue) = waiting.get_mut(&key) else {
            return;
        };
        if queue.is_empty() {
            waiting.remove(&key);
            return;
        }
        group = take_group(queue);
    }
}

/// The next batch from `queue`: at least one write, then more while the
/// batch stays under both bounds.
fn take_group(queue: &mut VecDeque<Queued>) -> Vec<Queued> {
    let (mut size, mut statements) = (0, 0);
    let mut group = Vec::new();
    while let Some(q) = queue.front() {
        let n = q.write.statements.len();
        if !group.is_empty()
            && (size + q.size > MAX_GROUP_BYTES || statements + n > MAX_GROUP_STATEMENTS)
        {
            break;
        }
        size += q.size;
        statements += n;
        group.extend(queue.pop_front());
    }
    group
}

/// Writes the group as one batch and acks each caller; a batch the node
/// rejected is retried one write at a time so each caller gets its own
/// outcome.
async fn commit(inner: &Inner, group: Vec<Queued>) {
    let all: Vec<&Write> = group.iter().map(|q| &q.write).collect();
    inner.batches.fetch_add(1, Ordering::Relaxed);
    let result = send(&inner.session, inner.consistency, &all).await;
    drop(all);
    match result {
        Err(StoreError::Corrupt(_)) if group.len() > 1 => {
            let alone = group.into_iter().map(|q| async move {
                inner.batches.fetch_add(1, Ordering::Relaxed);
                let r = send(&inner.session, inner.consistency, &[&q.write]).await;
                let _ = q.ack.send(r);
            });
            futures::future::join_all(alone).await;
        }
        result => {
            for q in group {
                let _ = q.ack.send(result.clone());
            }
        }
    }
}

async fn send(
    session: &CqlSession,
    consistency: Consistency,
    writes: &[&Write],
) -> Result<(), StoreError> {
    // All on one identifier's two partitions: logged when an attempt row
    // is in it, so the row and the profile cells are both or neither.
    let logged = writes.iter().any(|w| w.logged);
    let mut batch = Batch::new(if logged {
        BatchType::Logged
    } else {
        BatchType::Unlogged
    });
    batch.set_consistency(consistency);
    batch.set_is_idempotent(true);
    let mut values = Vec::new();
    for w in writes {
        for (st, bound) in &w.statements {
            batch.append_statement(st.clone());
            values.push(bound);
        }
    }
    session
        .batch(&batch, values)
        .await
        .map(drop)
        .map_err(|e| exec_err("write ato profile", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ::scylla::frame::response::result::{ColumnSpec, ColumnType, NativeType, TableSpec};
    use ::scylla::value::{CqlTimestamp, MaybeUnset};

    fn spec(name: &'static str, typ: NativeType) -> ColumnSpec<'static> {
        ColumnSpec::borrowed(
            name,
            ColumnType::Native(typ),
            TableSpec::borrowed("ks", "t"),
        )
    }

    /// The replayed cells are byte for byte what the driver's own
    /// serialization of the values writes (nulls, unsets, empty and long
    /// values included), and type errors are still caught when queueing.
    #[test]
    fn a_bound_row_replays_the_drivers_serialization() {
        use NativeType::{BigInt, Boolean, Int, Text, Timestamp};
        let long = "x".repeat(70_000);
        let cases: Vec<(
            Vec<ColumnSpec<'static>>,
            Box<dyn SerializeRow + Send + Sync + '_>,
        )> = vec![
            (
                vec![
                    spec("a", BigInt),
                    spec("b", Int),
                    spec("c", Text),
                    spec("d", Text),
                ],
                Box::new((1_i64, 2_i32, "a", "")),
            ),
            (
                vec![spec("a", Text), spec("b", Text), spec("c", BigInt)],
                Box::new((MaybeUnset::<&str>::Unset, Option::<&str>::None, 7_i64)),
            ),
            (
                vec![spec("a", Timestamp), spec("b", Text), spec("c", Boolean)],
                Box::new((CqlTimestamp(1_764_000_000_000), long.as_str(), true)),
            ),
            (vec![], Box::new(())),
        ];
        for (specs, row) in cases {
            let ctx = RowSerializationContext::from_specs(&specs);
            let mut direct = Vec::new();
            let mut w = RowWriter::new(&mut direct);
            row.serialize(&ctx, &mut w).unwrap();
            let count = w.value_count();
            let bound = Bound::with_context(&ctx, &*row).unwrap();
            assert_eq!(bound.count, count);
            let mut replayed = Vec::new();
            let mut w = RowWriter::new(&mut replayed);
            bound.serialize(&ctx, &mut w).unwrap();
            assert_eq!(w.value_count(), count);
            assert_eq!(replayed, direct);
        }
        // A value of the wrong type is refused when queued, as the driver
        // would refuse it when sending.
        let specs = [spec("a", Int)];
        let ctx = RowSerializationContext::from_specs(&specs);
        assert!(matches!(
            Bound::with_context(&ctx, &("text",)),
            Err(StoreError::Corrupt(_))
        ));
    }

    /// Three writes for one identifier: the first goes out alone, the two
    /// that queued behind it share a batch, which the node rejects (a
    /// negative TTL); each is then retried alone, so the good one is
    /// written and only the bad one fails. Against the CQL test node.
    #[tokio::test]
    async fn a_rejected_batch_is_retried_one_write_at_a_time() {
        let Some(node) = qyzar_shared::testing::backend("QYZAR_TEST_CQL_NODE", "CQL write groups")
        else {
            return;
        };
        let keyspace = qyzar_shared::testing::unique_name("qz_test_");
        let mut config = super::super::ScyllaConfig::new(vec![node], keyspace.clone());
        config.replication_factor = 1;
        config.request_timeout = std::time::Duration::from_secs(15);
        let store = super::super::ScyllaStore::connect(config)
            .await
            .expect("the CQL test node is reachable");
        let st = &store.st.set_last_success;
        let write = |ttl: i32| Write {
            statements: vec![(
                st.clone(),
                Bound::new(st, &(1_000_i64, ttl, b"{}".to_vec(), "prj_x", "id")).unwrap(),
            )],
            logged: false,
        };
        let g = &store.ato_writes;
        let before = g.counts();
        // One poll of `join!` queues all three before the first batch is
        // sent (this test's runtime has one thread).
        let (first, bad, good) = futures::join!(
            g.write("prj_x", "id", write(60)),
            g.write("prj_x", "id", write(-1)),
            g.write("prj_x", "id", write(60)),
        );
        let after = g.counts();
        let drop = ::scylla::statement::unprepared::Statement::new(format!(
            "DROP KEYSPACE IF EXISTS {keyspace}"
        ));
        let _ = store.session.query_unpaged(drop, &[]).await;
        assert!(first.is_ok(), "{first:?}");
        assert!(matches!(bad, Err(StoreError::Corrupt(_))), "{bad:?}");
        assert!(
            good.is_ok(),
            "the good write is not failed by its neighbour: {good:?}"
        );
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (3, 4),
            "one batch alone, one shared and rejected, two retried alone"
        );
    }

    /// A truncated buffer is an error, not a panic.
    #[test]
    fn a_malformed_bound_row_is_an_error() {
        for (bytes, count) in [
            (vec![0, 0, 0], 1),
            (vec![0, 0, 0, 5, 1, 2], 1),
            (vec![0xff, 0xff, 0xff, 0xf0], 1),
        ] {
            let mut out = Vec::new();
            let mut w = RowWriter::new(&mut out);
            let r = Bound { bytes, count }.serialize(&RowSerializationContext::empty(), &mut w);
            assert!(r.is_err());
        }
    }
}
