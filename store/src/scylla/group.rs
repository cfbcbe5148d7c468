//! Group commit for the anti-ATO write on CQL, as the embedded store's
//! writer does for redb (`embedded/writer.rs`).
//!
//! Every `ato-login-attempt` writes one `LOGGED` batch: the attempt row and
//! the profile's changed cells. A logged batch is the coordinator's most
//! expensive write (the batch is first written to its batch log, then
//! applied, then the log entry removed), and each one is a request of its
//! own for the driver and the node. Here concurrent writes are joined: a
//! caller queues its statements with values already serialized, one task
//! takes whatever is queued (bounded by [`MAX_GROUP_BYTES`] and
//! [`MAX_GROUP_STATEMENTS`]) into one batch, with at most [`IN_FLIGHT`]
//! batches outstanding, and acks every caller once the batch is written
//! at the configured consistency. Joining changes no merge: every
//! statement keeps its own `USING TIMESTAMP` (see [`ato`](super::ato)), so N
//! batches and one batch of the same statements leave the same cells. A
//! batch the node rejects is retried one caller at a time, so one caller's
//! bad write never fails another's; a batch that times out fails its
//! callers, as their own batches would have.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ::scylla::client::session::Session as CqlSession;
use ::scylla::serialize::row::{RowSerializationContext, SerializeRow};
use ::scylla::serialize::writers::RowWriter;
use ::scylla::serialize::SerializationError;
use ::scylla::statement::batch::{Batch, BatchType};
use ::scylla::statement::prepared::PreparedStatement;
use ::scylla::statement::Consistency;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::errors::exec_err;
use crate::StoreError;

/// Most bytes of bound values in one batch. Cassandra refuses a batch whose
/// mutations exceed `batch_size_fail_threshold` (50 KiB by default; ScyllaDB
/// 1 MiB), and mutations are larger than their bound values; 16 KiB keeps a
/// full group well under that (about 60 login attempts with their profile
/// cells). A single write larger than this goes alone, as before.
const MAX_GROUP_BYTES: usize = 16 * 1024;
/// Most statements in one batch.
const MAX_GROUP_STATEMENTS: usize = 256;
/// Batches outstanding at once: while they are out, new writes queue and
/// join the next batch (that wait is what makes the groups).
const IN_FLIGHT: usize = 4;
/// Writes waiting for a batch. Callers are requests holding a connection,
/// which the server bounds; past this they wait to queue.
const QUEUE: usize = 4096;

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
    /// Spans two partitions (the attempt row and the profile), so its batch
    /// must be `LOGGED` to be atomic.
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

/// The queue's sending side; the task ends when the store is dropped.
pub(super) struct Group {
    tx: mpsc::Sender<Queued>,
    counts: Arc<Counts>,
}

/// Writes queued and batches sent, for tests and metrics to see grouping.
#[derive(Default)]
struct Counts {
    writes: AtomicU64,
    batches: AtomicU64,
}

impl Group {
    /// Starts the grouping task on the current runtime (the one the
    /// driver's connections run on).
    pub(super) fn start(session: Arc<CqlSession>, consistency: Consistency) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        tokio::spawn(run(session, consistency, rx, Arc::clone(&counts)));
        Group { tx, counts }
    }

    /// Writes asked for and batches sent (retries of a rejected batch one
    /// write at a time count as batches too).
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.counts.writes.load(Ordering::Relaxed),
            self.counts.batches.load(Ordering::Relaxed),
        )
    }

    /// Writes `write` in the next batch; returns once that batch is written
    /// (or has failed).
    pub(super) async fn write(&self, write: Write) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        let size = write.size();
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Queued { write, size, ack })
            .await
            .map_err(|_| stopped())?;
        done.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("cql ato write: the write group has stopped".into())
}

async fn run(
    session: Arc<CqlSession>,
    consistency: Consistency,
    mut rx: mpsc::Receiver<Queued>,
    counts: Arc<Counts>,
) {
    let permits = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(q) => q,
            None => match rx.recv().await {
                Some(q) => q,
                None => return,
            },
        };
        // Wait for a slot before taking more: what queues meanwhile joins.
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let (mut size, mut statements) = (first.size, first.write.statements.len());
        let mut group = vec![first];
        while let Ok(q) = rx.try_recv() {
            if size + q.size > MAX_GROUP_BYTES
                || statements + q.write.statements.len() > MAX_GROUP_STATEMENTS
            {
                carried = Some(q);
                break;
            }
            size += q.size;
            statements += q.write.statements.len();
            group.push(q);
        }
        let (session, counts) = (Arc::clone(&session), Arc::clone(&counts));
        tokio::spawn(async move {
            commit(&session, consistency, group, &counts).await;
            drop(permit);
        });
    }
}

/// Writes the group as one batch and acks each caller; a batch the node
/// rejected is retried one write at a time so each caller gets its own
/// outcome.
async fn commit(
    session: &CqlSession,
    consistency: Consistency,
    group: Vec<Queued>,
    counts: &Counts,
) {
    let all: Vec<&Write> = group.iter().map(|q| &q.write).collect();
    counts.batches.fetch_add(1, Ordering::Relaxed);
    let result = send(session, consistency, &all).await;
    drop(all);
    match result {
        Err(StoreError::Corrupt(_)) if group.len() > 1 => {
            let alone = group.into_iter().map(|q| async move {
                counts.batches.fetch_add(1, Ordering::Relaxed);
                let r = send(session, consistency, &[&q.write]).await;
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
    // Several writes span several partitions: only a logged batch keeps
    // each of them whole.
    let logged = writes.len() > 1 || writes.iter().any(|w| w.logged);
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
