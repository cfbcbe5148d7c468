//! Attempt-log rows: one row per project per group commit, holding that
//! commit's attempts, in a compact encoding; rows written to redb together
//! are joined per project ([`join`]).
//!
//! Every attempt is written twice, to the anti-ATO journal and then to
//! redb (`journal.rs`, `checkpoint.rs`), and a row used to be a JSON array
//! of [`LoginAttempt`]s: about 330 bytes an attempt, a third of them field
//! names and the project id every attempt of the row shares. Without its
//! log rows the route served 5–8 % more attempts per second with the same
//! core (BENCHMARKS.md, "The durable hello-world"): bytes checksummed,
//! copied, written and synced twice, and redb's pages for them. Now a row
//! is a version byte and the attempts one after another in `postcard`'s
//! encoding (no field names, variable-length integers), without the
//! project id, which the row's key holds: about two fifths of the size
//! (`tests`).
//!
//! Rows written by earlier builds (JSON arrays, which begin with `[`) are
//! still read: [`decode`] tells the two apart by their first byte.

use std::borrow::Cow;

use qyzar_shared::ids::{DeviceId, ProjectId, SessionId};
use serde::{Deserialize, Serialize};

use crate::{LoginAttempt, StoreError};

/// First byte of a compact row; a JSON row begins with `[`.
const COMPACT: u8 = 1;

/// One attempt of a compact row: [`LoginAttempt`] without its project, in
/// field order (postcard writes no names, so the order is the format; a
/// change to it is a new version byte).
#[derive(Serialize, Deserialize)]
struct Attempt<'a> {
    #[serde(borrow)]
    identifier: Cow<'a, str>,
    at: i64,
    #[serde(borrow)]
    attempt_id: Cow<'a, str>,
    success: bool,
    #[serde(borrow)]
    ip: Option<Cow<'a, str>>,
    #[serde(borrow)]
    device_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    region: Option<Cow<'a, str>>,
    #[serde(borrow)]
    platform: Option<Cow<'a, str>>,
    #[serde(borrow)]
    browser: Option<Cow<'a, str>>,
}

impl<'a> Attempt<'a> {
    fn of(a: &'a LoginAttempt) -> Self {
        let s = |v: &'a Option<String>| v.as_deref().map(Cow::Borrowed);
        Self {
            identifier: Cow::Borrowed(&a.identifier),
            at: a.at,
            attempt_id: Cow::Borrowed(&a.attempt_id),
            success: a.success,
            ip: s(&a.ip),
            device_id: a.device_id.as_ref().map(|d| Cow::Borrowed(d.as_str())),
            session_id: a.session_id.as_ref().map(|d| Cow::Borrowed(d.as_str())),
            region: s(&a.region),
            platform: s(&a.platform),
            browser: s(&a.browser),
        }
    }

    fn into_attempt(self, project: &ProjectId) -> Result<LoginAttempt, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("attempt log row: bad {what}"));
        let o = |v: Option<Cow<'_, str>>| v.map(Cow::into_owned);
        Ok(LoginAttempt {
            project_id: project.clone(),
            identifier: self.identifier.into_owned(),
            at: self.at,
            attempt_id: self.attempt_id.into_owned(),
            success: self.success,
            ip: o(self.ip),
            device_id: self
                .device_id
                .map(|d| DeviceId::parse(&d).map_err(|_| corrupt("device id")))
                .transpose()?,
            session_id: self
                .session_id
                .map(|s| SessionId::parse(&s).map_err(|_| corrupt("session id")))
                .transpose()?,
            region: o(self.region),
            platform: o(self.platform),
            browser: o(self.browser),
        })
    }
}

/// Appends `a` to the row being built in `row` (empty: a new row).
pub(super) fn push(row: &mut Vec<u8>, a: &LoginAttempt) {
    if row.is_empty() {
        row.push(COMPACT);
    }
    // Strings, integers and options into a `Vec`: encoding cannot fail.
    let _ = postcard::to_io(&Attempt::of(a), &mut *row);
}

/// Most bytes [`join`] puts in one row.
const MAX_JOINED: usize = 256 << 10;

/// The rows of one write to redb, joined per project: each project's
/// compact rows become one row (its attempts one after another, up to
/// [`MAX_JOINED`] bytes a row) under the key of its newest, which is the
/// smallest (times are inverted). redb's cost is per row: a B-tree entry
/// per group commit left its leaves half full and made the log's pages
/// more bytes than its rows, and every byte redb writes is made durable by
/// the journal's next sync too (BENCHMARKS.md, "The tail over 50 000
/// identifiers is the disk's"). A row that is not compact (an earlier
/// build's JSON) is kept as it is. Readers are unchanged: a row already
/// held a group's attempts, is ordered by its newest, and a reader
/// removes an attempt read twice ([`super::rows::newest_attempts`]).
pub(super) fn join(rows: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    // A project's prefix → where its row being joined is in `out`.
    let mut open: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for (key, row) in rows {
        let prefix = super::keys::partition_prefix(key);
        let (Some(prefix), Some((&COMPACT, attempts))) = (prefix, row.split_first()) else {
            out.push((key.clone(), row.clone()));
            continue;
        };
        match open.get(prefix) {
            Some(&i) if out[i].1.len() + attempts.len() <= MAX_JOINED => {
                let (joined_key, joined) = &mut out[i];
                joined.extend_from_slice(attempts);
                if key < joined_key {
                    joined_key.clone_from(key);
                }
            }
            _ => {
                open.insert(prefix, out.len());
                out.push((key.clone(), row.clone()));
            }
        }
    }
    out
}

/// The attempts of a row of `project`'s log, compact or JSON. The error
/// names where it broke, never the content.
pub(super) fn decode(row: &[u8], project: &ProjectId) -> Result<Vec<LoginAttempt>, StoreError> {
    match row.split_first() {
        // A row holds at least one attempt ([`push`] makes it with one).
        Some((&COMPACT, mut rest)) if !rest.is_empty() => {
            let mut out = Vec::new();
            while !rest.is_empty() {
                let (a, tail) = postcard::take_from_bytes::<Attempt<'_>>(rest).map_err(|e| {
                    StoreError::Corrupt(format!("undecodable attempt log row ({e})"))
                })?;
                out.push(a.into_attempt(project)?);
                rest = tail;
            }
            Ok(out)
        }
        Some((b'[', _)) => super::rows::decode(row),
        _ => Err(StoreError::Corrupt(
            "attempt log row of an unknown format".into(),
        )),
    }
}

/// [`decode`] for a row read with its key, whose prefix names the project
/// (for tests that walk the whole log).
#[cfg(test)]
pub(super) fn decode_keyed(key: &[u8], row: &[u8]) -> Result<Vec<LoginAttempt>, StoreError> {
    let corrupt = || StoreError::Corrupt("attempt log key without a project".into());
    let prefix = super::keys::partition_prefix(key).ok_or_else(corrupt)?;
    let project = std::str::from_utf8(&prefix[2..]).map_err(|_| corrupt())?;
    decode(row, &ProjectId::parse(project).map_err(|_| corrupt())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(i: u32, full: bool) -> LoginAttempt {
        LoginAttempt {
            project_id: ProjectId::parse("prj_AzAAMTIuCZ93-PKD30KXNw").unwrap(),
            identifier: format!("user{i}@example.com"),
            at: 1_733_355_000_000 + i64::from(i),
            attempt_id: LoginAttempt::new_id(),
            success: i % 2 == 0,
            ip: full.then(|| "2001:db8::1".to_owned()),
            device_id: full.then(|| DeviceId::parse("dev_znIaVdPb6J1bQ0gj-I4evw").unwrap()),
            session_id: full.then(|| SessionId::parse("ses_znIaVdPb6J1bQ0gj-I4evw").unwrap()),
            region: full.then(|| "DE-BE".to_owned()),
            platform: full.then(|| "Linux".to_owned()),
            browser: full.then(|| "Chrome \"131\" ünïcode".to_owned()),
        }
    }

    /// What goes in comes out, fields absent or present, and the row is
    /// much smaller than the JSON it replaces.
    #[test]
    fn a_compact_row_reads_back_what_was_pushed() {
        let want: Vec<LoginAttempt> = (0..20).map(|i| attempt(i, i % 3 != 0)).collect();
        let mut row = Vec::new();
        for a in &want {
            push(&mut row, a);
        }
        assert_eq!(decode(&row, &want[0].project_id).unwrap(), want);
        let json = serde_json::to_vec(&want).unwrap();
        assert!(
            row.len() * 2 < json.len(),
            "{} against {}",
            row.len(),
            json.len()
        );
    }

    /// A JSON row of an earlier build reads as it always did.
    #[test]
    fn a_json_row_of_an_earlier_build_still_reads() {
        let want: Vec<LoginAttempt> = (0..3).map(|i| attempt(i, true)).collect();
        let json = serde_json::to_vec(&want).unwrap();
        assert_eq!(decode(&json, &want[0].project_id).unwrap(), want);
    }

    /// Rows as a group commit makes them: `project, !newest at, seq`.
    fn row_of(project: &ProjectId, attempts: &[LoginAttempt], seq: u64) -> (Vec<u8>, Vec<u8>) {
        let mut row = Vec::new();
        for a in attempts {
            push(&mut row, a);
        }
        let newest = attempts.iter().map(|a| a.at).max().unwrap();
        let key = super::super::keys::Key::new()
            .str(project.as_str())
            .newest_first(newest)
            .u64(seq)
            .into_bytes();
        (key, row)
    }

    /// Each project's compact rows become one row under the key of its
    /// newest, holding every attempt; another project's rows and a JSON
    /// row stay apart; a row never grows past `MAX_JOINED`.
    #[test]
    fn rows_are_joined_per_project_under_the_newest_key() {
        let a = ProjectId::parse("prj_AzAAMTIuCZ93-PKD30KXNw").unwrap();
        let b = ProjectId::parse("prj_sVNt2J0PJURVTsoq7KxHMQ").unwrap();
        let of = |p: &ProjectId, from: u32| -> Vec<LoginAttempt> {
            (from..from + 3)
                .map(|i| LoginAttempt {
                    project_id: p.clone(),
                    ..attempt(i, i % 2 == 0)
                })
                .collect()
        };
        let (a1, b1, a2, a3) = (of(&a, 0), of(&b, 10), of(&a, 20), of(&a, 30));
        let json = serde_json::to_vec(&of(&a, 40)).unwrap();
        let json_key = row_of(&a, &of(&a, 40), 9).0;
        let rows = vec![
            row_of(&a, &a1, 1),
            row_of(&b, &b1, 2),
            row_of(&a, &a3, 4),
            (json_key.clone(), json.clone()),
            row_of(&a, &a2, 3),
        ];
        let joined = join(&rows);
        assert_eq!(joined.len(), 3, "a's rows, b's row, the JSON row");
        let (key, row) = &joined[0];
        assert_eq!(key, &rows[2].0, "under a's newest row's key");
        let mut want: Vec<LoginAttempt> = [a1, a3, a2].concat();
        assert_eq!(decode(row, &a).unwrap(), want);
        assert_eq!(joined[1], rows[1]);
        assert_eq!(joined[2], (json_key, json));
        // Past `MAX_JOINED` a project's next rows start a new row.
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..2_000)
            .map(|i| row_of(&a, &of(&a, i * 3), u64::from(i)))
            .collect();
        let joined = join(&many);
        assert!(joined.len() > 1);
        assert!(joined.iter().all(|(_, r)| r.len() <= MAX_JOINED));
        want = many
            .iter()
            .flat_map(|(_, r)| decode(r, &a).unwrap())
            .collect();
        let got: Vec<LoginAttempt> = joined
            .iter()
            .flat_map(|(_, r)| decode(r, &a).unwrap())
            .collect();
        assert_eq!(got, want, "every attempt once, in order");
    }

    /// A cut or unknown row is an error, not a panic or a short list.
    #[test]
    fn a_broken_row_is_an_error() {
        let a = attempt(1, true);
        let mut row = Vec::new();
        push(&mut row, &a);
        for cut in 1..row.len() {
            assert!(
                matches!(
                    decode(&row[..cut], &a.project_id),
                    Err(StoreError::Corrupt(_))
                ),
                "cut at {cut}"
            );
        }
        assert!(decode(&[], &a.project_id).is_err());
        assert!(decode(b"{}", &a.project_id).is_err());
        assert!(decode(&[2, 0], &a.project_id).is_err());
    }
}
