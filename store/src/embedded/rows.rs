//! Row values and partition scans of the embedded store.

use redb::{ReadTransaction, ReadableTable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys;
use qyzar_shared::ids::ProjectId;

use crate::{clamp_limit, LoginAttempt, StoreError, MAX_LIST_LIMIT};

/// Rows of the partition `prefix` in a table keyed `prefix, !at, …`,
/// newest first, stopping at the first row older than `since`.
pub(super) fn scan_newest<T: DeserializeOwned>(
    txn: &ReadTransaction,
    def: redb::TableDefinition<&[u8], &[u8]>,
    prefix: &[u8],
    since: i64,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    let limit = clamp_limit(limit);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let t = txn.open_table(def).map_err(db_err)?;
    for row in t.range(prefix..).map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        let Some(rest) = k.value().strip_prefix(prefix) else {
            break;
        };
        let at = keys::read_newest_first(rest)
            .ok_or_else(|| StoreError::Corrupt("short row key".into()))?;
        if at < since {
            break;
        }
        out.push(decode(v.value())?);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// `identifier`'s attempts at or after `since` in `project`'s attempt log
/// ([`keys::ATTEMPT_LOG`]), at least the newest `limit` of them (more when
/// a row holds several; [`newest_attempts`] cuts). Its cost grows with
/// everything the project logged since `since` (never another project's
/// rows): for support and tests, never the hot path.
pub(super) fn scan_log(
    txn: &ReadTransaction,
    project: &ProjectId,
    identifier: &str,
    since: i64,
    limit: usize,
) -> Result<Vec<LoginAttempt>, StoreError> {
    let limit = clamp_limit(limit);
    let mut out: Vec<LoginAttempt> = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let prefix = keys::Key::new().str(project.as_str()).into_bytes();
    let t = txn.open_table(keys::ATTEMPT_LOG).map_err(db_err)?;
    for row in t.range(prefix.as_slice()..).map_err(db_err)? {
        let (k, v) = row.map_err(db_err)?;
        let Some(rest) = k.value().strip_prefix(prefix.as_slice()) else {
            break;
        };
        let newest = keys::read_newest_first(rest)
            .ok_or_else(|| StoreError::Corrupt("short attempt log key".into()))?;
        if newest < since {
            break;
        }
        // Rows are ordered by their newest attempt; once `limit` attempts
        // are newer than everything this row holds, no later row can add
        // one of the newest `limit`.
        if out.len() >= limit {
            out = newest_attempts(out, limit);
            if out.last().is_some_and(|a| a.at > newest) {
                break;
            }
        }
        let batch = super::log_row::decode(v.value(), project)?;
        out.extend(
            batch.into_iter().filter(|a| {
                a.at >= since && a.identifier == identifier && a.project_id == *project
            }),
        );
    }
    Ok(out)
}

/// Newest first (ties by attempt id, so the order is stable), one row per
/// (time, attempt id) (a retried write logs twice), at most `limit`.
pub(super) fn newest_attempts(mut rows: Vec<LoginAttempt>, limit: usize) -> Vec<LoginAttempt> {
    rows.sort_by(|a, b| {
        b.at.cmp(&a.at)
            .then_with(|| a.attempt_id.cmp(&b.attempt_id))
    });
    rows.dedup_by(|a, b| a.at == b.at && a.attempt_id == b.attempt_id);
    rows.truncate(clamp_limit(limit));
    rows
}

/// The identifiers under `prefix` (project, device), in byte order, which is
/// also `String` order and CQL's clustering order for `text`.
pub(super) fn trusted_set<T>(t: &T, prefix: &[u8]) -> Result<Vec<String>, redb::StorageError>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let mut out = Vec::new();
    for row in t.range(prefix..)? {
        let (k, _) = row?;
        let Some(ident) = k.value().strip_prefix(prefix) else {
            break;
        };
        out.push(String::from_utf8_lossy(ident).into_owned());
        if out.len() >= MAX_LIST_LIMIT {
            break;
        }
    }
    Ok(out)
}

pub(super) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and numbers: serialisation cannot fail.
    serde_json::to_vec(v).expect("store rows always serialise")
}

/// Decodes a stored row. The message names where it broke, never the
/// content, which may hold a token hash.
pub(super) fn decode<T: DeserializeOwned>(v: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(v).map_err(|e| {
        StoreError::Corrupt(format!(
            "undecodable stored row ({:?} error at column {})",
            e.classify(),
            e.column()
        ))
    })
}

/// Maps redb's errors: I/O and a file held elsewhere are transient (503 and
/// retry), everything else means the file or our schema is wrong.
pub(super) fn db_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(e) => StoreError::Unavailable(format!("embedded store i/o: {e}")),
        redb::Error::PreviousIo => {
            StoreError::Unavailable("an earlier i/o error stopped the embedded store".into())
        }
        redb::Error::DatabaseAlreadyOpen => {
            StoreError::Unavailable("the store file is open in another process".into())
        }
        redb::Error::Corrupted(m) => StoreError::Corrupt(m),
        other => StoreError::Corrupt(other.to_string()),
    }
}
