//! Row values and partition scans of the embedded store.

use redb::{ReadTransaction, ReadableTable};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys;
use crate::{clamp_limit, StoreError, MAX_LIST_LIMIT};

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
