//! The last applied snapshot on disk, so an engine restarted while admin is
//! down serves its last configuration instead of `503 not_configured`.
//!
//! Writes are atomic: the encoded snapshot goes to a temporary file in the
//! same folder, which is fsynced, renamed over the old file, and the folder
//! is fsynced, so a crash leaves the old file or the new one, never a mix.
//! The file is the wire encoding, whose header carries a SHA-256 of the
//! payload: a corrupt or truncated file fails [`decode_snapshot`] on load
//! and is logged and ignored, never served. It holds every project's
//! signing keys, so it is created owner-only (0600).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use qyzar_shared::snapshot::{decode_snapshot, Snapshot, SnapshotError};

/// Where the last applied snapshot is kept.
#[derive(Debug)]
pub struct SnapshotFile {
    path: PathBuf,
    /// The newest version written (or loaded): an older one racing in
    /// from a concurrent push and pull never overwrites it.
    saved: Mutex<u64>,
}

/// Why a persisted snapshot was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a whole, intact snapshot.
    #[error("{path} is not a valid snapshot: {source}")]
    Invalid {
        /// The file.
        path: String,
        /// What the decoder found (digest mismatch, truncation, …).
        source: SnapshotError,
    },
}

impl SnapshotFile {
    /// A snapshot file at `path` (its folder is created on first save).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            saved: Mutex::new(0),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted snapshot; `None` when there is no file yet.
    pub fn load(&self) -> Result<Option<Snapshot>, LoadError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LoadError::Io {
                    path: self.path.display().to_string(),
                    source,
                })
            }
        };
        let snapshot = decode_snapshot(&bytes).map_err(|source| LoadError::Invalid {
            path: self.path.display().to_string(),
            source,
        })?;
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        *saved = (*saved).max(snapshot.version());
        Ok(Some(snapshot))
    }

    /// Writes `encoded` (a full snapshot in the wire encoding, at
    /// `version`) atomically, unless a version at least as new is already
    /// written. Returns whether it wrote. Blocking: call it off the runtime.
    pub fn save(&self, version: u64, encoded: &[u8]) -> std::io::Result<bool> {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        if version <= *saved {
            return Ok(false);
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&dir)?;
        let mut tmp_name = self.path.file_name().unwrap_or_default().to_os_string();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let written = write_synced(&tmp, encoded).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // The rename is durable only once the folder entry is.
        #[cfg(unix)]
        std::fs::File::open(&dir)?.sync_all()?;
        *saved = version;
        Ok(true)
    }
}

/// Creates (or truncates) `path` owner-only, writes `data` and fsyncs it.
fn write_synced(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use qyzar_shared::snapshot::encode_snapshot;

    fn encoded(version: u64) -> Vec<u8> {
        encode_snapshot(&Snapshot::new(version, 1_700_000_000_000, Vec::new()).unwrap()).unwrap()
    }

    #[test]
    fn saves_atomically_loads_back_and_never_goes_back_in_version() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::new(dir.path().join("sub/snap.qzs"));
        assert!(file.load().unwrap().is_none(), "no file yet");
        assert!(file.save(3, &encoded(3)).unwrap());
        assert!(!file.save(2, &encoded(2)).unwrap(), "older is not written");
        let again = SnapshotFile::new(file.path());
        assert_eq!(again.load().unwrap().unwrap().version(), 3);
        assert!(!dir.path().join("sub/snap.qzs.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(file.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "the file holds signing keys");
        }
    }

    #[test]
    fn a_damaged_or_truncated_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snap.qzs");
        let mut bytes = encoded(5);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let file = SnapshotFile::new(&path);
        assert!(matches!(
            file.load(),
            Err(LoadError::Invalid {
                source: SnapshotError::DigestMismatch,
                ..
            })
        ));
        std::fs::write(&path, &encoded(5)[..20]).unwrap();
        assert!(matches!(file.load(), Err(LoadError::Invalid { .. })));
        // A refused file does not block saving a good snapshot over it.
        assert!(file.save(1, &encoded(1)).unwrap());
        assert_eq!(file.load().unwrap().unwrap().version(), 1);
    }
}
