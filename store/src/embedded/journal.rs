//! The anti-ATO journal: where a group commit of login attempts is made
//! durable, instead of a redb transaction per group.
//!
//! A redb commit of one group of attempts wrote about eight scattered pages
//! (copy-on-write B-tree leaves and branches, the header) and synced them:
//! on this VM each page is its own block request, and with the B-tree work
//! the commit took about a third of the one core the engine had
//! (BENCHMARKS.md, "The anti-ATO journal"). Here a group is one frame,
//! appended to a file and synced: one contiguous write. The profiles the
//! group changed and its attempt-log rows are then kept in memory (the
//! [`Overlay`], which every read of a profile or of the log consults before
//! redb) and written to redb later, once per profile however many attempts
//! changed it, by the writer's checkpoint, in slices between group commits.
//!
//! Two files alternate. Frames of the active file carry its generation; at
//! a checkpoint the active generation is frozen, the other file takes the
//! next one, and once the frozen generation is in redb (a durable commit
//! that also records it as checkpointed) its file is free to be reused.
//! Opening the store replays, oldest first, every generation newer than the
//! checkpointed one: a frame holds whole profiles and whole log rows under
//! their final keys, so replaying one already in redb writes the same
//! values again.
//!
//! A frame is `len u32, crc32c u32, generation u64, seq u64, payload`, the
//! checksum covering everything after itself. Replay of a file stops at the
//! first frame that is torn, fails its checksum, belongs to another
//! generation or breaks the sequence: files are reused without being
//! truncated, so what follows the newest frame is an older generation's.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::{AtoProfile, StoreError};

/// Bytes before a frame's payload.
const HEADER: usize = 24;
/// A file grows by this much at a time, written with zeros: only the
/// sync of a frame that grows the file also writes the inode's new size
/// (one in about 30 group commits of one hot identifier), and the file is
/// reused without growing once it has held a whole generation.
const GROW: u64 = 256 << 10;
/// CRC-32C (Castagnoli), as ext4, iSCSI and most logs use, computed
/// sixteen bytes at a time: the crate's default one-byte table made the
/// checksum most of the journal thread's own CPU (3.7 % of the core under
/// one hot identifier; BENCHMARKS.md, "What anti-ATO's CPU goes to").
/// The same function: a journal written before reads back (`tests`).
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// Marks a frame whose profiles are in `postcard`'s encoding (no field
/// names): where a frame of an earlier build has its profile count, which
/// is never this large. JSON profiles cost the journal's thread about 2 400
/// instructions an attempt over 50 000 identifiers, where each attempt
/// journals its own profile (`deploy/instructions.sh ato`, the
/// `LoginRecord` serialiser alone).
const POSTCARD_PROFILES: u32 = u32::MAX;

/// What one group commit journals: each profile it changed, whole, and its
/// attempt-log rows, under the keys they get in redb.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct Frame {
    pub(super) profiles: Vec<(Vec<u8>, AtoProfile)>,
    pub(super) log: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Frame {
    pub(super) fn is_empty(&self) -> bool {
        self.profiles.is_empty() && self.log.is_empty()
    }

    fn encode(&self, out: &mut Vec<u8>) {
        fn put(out: &mut Vec<u8>, b: &[u8]) {
            // Keys and rows are far below 4 GiB (a batch is at most 1 024
            // writes of bounded rows).
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        out.extend_from_slice(&POSTCARD_PROFILES.to_le_bytes());
        out.extend_from_slice(&(self.profiles.len() as u32).to_le_bytes());
        for (k, p) in &self.profiles {
            put(out, k);
            let at = out.len();
            out.extend_from_slice(&[0; 4]);
            // Strings, integers, options and vectors into a `Vec`:
            // encoding cannot fail.
            let _ = postcard::to_io(p, &mut *out);
            let n = (out.len() - at - 4) as u32;
            out[at..at + 4].copy_from_slice(&n.to_le_bytes());
        }
        out.extend_from_slice(&(self.log.len() as u32).to_le_bytes());
        for (k, v) in &self.log {
            put(out, k);
            put(out, v);
        }
    }

    fn decode(mut b: &[u8]) -> Option<Frame> {
        fn u32_(b: &mut &[u8]) -> Option<usize> {
            let (n, rest) = b.split_first_chunk::<4>()?;
            *b = rest;
            Some(u32::from_le_bytes(*n) as usize)
        }
        fn bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
            let n = u32_(b)?;
            let (v, rest) = b.split_at_checked(n)?;
            *b = rest;
            Some(v)
        }
        let mut f = Frame::default();
        // Frames of earlier builds begin with the profile count, their
        // profiles in JSON.
        let (postcard, count) = match u32_(&mut b)? {
            n if n == POSTCARD_PROFILES as usize => (true, u32_(&mut b)?),
            n => (false, n),
        };
        for _ in 0..count {
            let k = bytes(&mut b)?.to_vec();
            let v = bytes(&mut b)?;
            let p = if postcard {
                postcard::from_bytes(v).ok()?
            } else {
                serde_json::from_slice(v).ok()?
            };
            f.profiles.push((k, p));
        }
        for _ in 0..u32_(&mut b)? {
            let k = bytes(&mut b)?.to_vec();
            f.log.push((k, bytes(&mut b)?.to_vec()));
        }
        b.is_empty().then_some(f)
    }
}

/// The two journal files and where the next frame goes.
pub(super) struct Journal {
    files: [File; 2],
    /// Each file's length (zeros past the newest frame).
    sizes: [u64; 2],
    active: usize,
    generation: u64,
    seq: u64,
    pos: u64,
    buf: Vec<u8>,
}

/// The generations to replay, oldest first: each one's number and the
/// file that holds it, read by [`Journal::replay`].
pub(super) type Replay = Vec<(u64, usize)>;

impl Journal {
    /// The files beside the store file `db`: `<db>.ato-journal-0` and `-1`.
    fn paths(db: &Path) -> [PathBuf; 2] {
        [0, 1].map(|i| {
            let mut p = db.as_os_str().to_owned();
            p.push(format!(".ato-journal-{i}"));
            PathBuf::from(p)
        })
    }

    /// Opens (or creates) the files beside `db` and lists every generation
    /// newer than `checkpointed`, to be read with [`Self::replay`]. The
    /// journal starts a new generation in the first file, so the caller
    /// must have replayed, and written the replay to redb durably, before
    /// the first [`Self::append`].
    ///
    /// Only each file's first frame is read here: a file's replayable
    /// frames are the chain from offset 0, all of that frame's generation
    /// ([`scan`]). A clean start thus reads no file whole, however large
    /// the files have grown.
    pub(super) fn open(db: &Path, checkpointed: u64) -> Result<(Self, Replay), StoreError> {
        let mut files = Vec::with_capacity(2);
        let mut sizes = [0; 2];
        let mut found = Vec::new();
        let mut newest = checkpointed;
        for (i, path) in Self::paths(db).iter().enumerate() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_err)?;
            sizes[i] = file.metadata().map_err(io_err)?.len();
            if let Some(generation) = first_generation(&file, sizes[i]).map_err(io_err)? {
                newest = newest.max(generation);
                if generation > checkpointed {
                    found.push((generation, i));
                }
            }
            files.push(file);
        }
        found.sort_by_key(|(g, _)| *g);
        let [a, b]: [File; 2] = files.try_into().expect("two files");
        Ok((
            Self {
                files: [a, b],
                sizes,
                active: 0,
                generation: newest + 1,
                seq: 0,
                pos: 0,
                buf: Vec::new(),
            },
            found,
        ))
    }

    /// Hands the frames of the generation in `file` (from [`Self::open`]'s
    /// replay) to `each`, oldest first. One file's bytes are held at a
    /// time and each frame is decoded as it is handed over, so recovering
    /// two full files of a few hundred MiB does not also hold every frame
    /// decoded. Call before the first [`Self::append`].
    pub(super) fn replay(
        &self,
        file: usize,
        mut each: impl FnMut(Frame),
    ) -> Result<(), StoreError> {
        let mut bytes = vec![0u8; self.sizes[file] as usize];
        self.files[file]
            .read_exact_at(&mut bytes, 0)
            .map_err(io_err)?;
        if let Some((_, payloads)) = scan(&bytes) {
            for p in payloads {
                each(Frame::decode(p).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "ato journal file {file} (`.ato-journal-{file}` beside the store): \
                         a frame passes its checksum but does not decode"
                    ))
                })?);
            }
        }
        Ok(())
    }

    /// The generation frames are appended to.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of the active generation.
    pub(super) fn len(&self) -> u64 {
        self.pos
    }

    /// Appends `frame` and syncs it: once this returns, the frame survives
    /// a crash. On an error nothing is counted as written; the next frame
    /// takes the same place and sequence number.
    pub(super) fn append(&mut self, frame: &Frame) -> io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.extend_from_slice(&[0; HEADER]);
        buf[8..16].copy_from_slice(&self.generation.to_le_bytes());
        buf[16..24].copy_from_slice(&self.seq.to_le_bytes());
        frame.encode(&mut buf);
        let len = (buf.len() - HEADER) as u32;
        buf[0..4].copy_from_slice(&len.to_le_bytes());
        let crc = CRC.checksum(&buf[8..]);
        buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let r = self.write(&buf);
        self.buf = buf;
        r
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        let file = &self.files[self.active];
        let end = self.pos + buf.len() as u64;
        if end > self.sizes[self.active] {
            // Zeros past the frame, synced with it (`sync_data` writes a
            // changed size): the next frames overwrite them, and their
            // syncs write data only.
            let to = end.div_ceil(GROW) * GROW;
            let zeros = vec![0u8; (to - self.sizes[self.active]) as usize];
            file.write_all_at(&zeros, self.sizes[self.active])?;
            self.sizes[self.active] = to;
        }
        file.write_all_at(buf, self.pos)?;
        file.sync_data()?;
        self.pos = end;
        self.seq += 1;
        Ok(())
    }

    /// Closes the active generation and starts the next one in the other
    /// file. Returns the closed generation. The caller must have
    /// checkpointed the generation the other file held.
    pub(super) fn rotate(&mut self) -> u64 {
        let closed = self.generation;
        self.active = 1 - self.active;
        self.generation += 1;
        self.seq = 0;
        self.pos = 0;
        closed
    }
}

fn io_err(e: io::Error) -> StoreError {
    StoreError::Unavailable(format!("ato journal: {e}"))
}

/// The generation of the frame at the start of `file` (of `size` bytes),
/// if that frame is whole and passes its checksum. A torn or garbage
/// header names nothing: its generation is never trusted, not even to
/// number the next one.
fn first_generation(file: &File, size: u64) -> io::Result<Option<u64>> {
    let mut head = [0u8; HEADER];
    if size < HEADER as u64 {
        return Ok(None);
    }
    file.read_exact_at(&mut head, 0)?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as u64;
    if HEADER as u64 + len > size {
        return Ok(None);
    }
    let mut frame = vec![0u8; HEADER + len as usize];
    file.read_exact_at(&mut frame, 0)?;
    Ok(scan(&frame).map(|(generation, _)| generation))
}

/// The frames of one file's newest generation, in order: the chain that
/// starts at offset 0 with sequence 0 and goes on while each frame is
/// whole, passes its checksum and continues the generation and sequence.
fn scan(bytes: &[u8]) -> Option<(u64, Vec<&[u8]>)> {
    let mut out = Vec::new();
    let mut generation = None;
    let mut pos = 0usize;
    while let Some(h) = bytes.get(pos..pos + HEADER) {
        let len = u32::from_le_bytes(h[0..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(h[4..8].try_into().ok()?);
        let g = u64::from_le_bytes(h[8..16].try_into().ok()?);
        let seq = u64::from_le_bytes(h[16..24].try_into().ok()?);
        let Some(body) = bytes.get(pos + 8..pos + HEADER + len) else {
            break;
        };
        if CRC.checksum(body) != crc
            || generation.is_some_and(|want| want != g)
            || seq != out.len() as u64
        {
            break;
        }
        generation = Some(g);
        out.push(&body[HEADER - 8..]);
        pos += HEADER + len;
    }
    generation.map(|g| (g, out))
}

/// The journal's maps, keyed by (project, identifier) or project: foldhash
/// (seeded per process, as hashbrown's default) instead of SipHash, which
/// was about 1 % of the core in the journal's thread over 50 000
/// identifiers, where every attempt looks its profile up, joins it and
/// files it under its key again (foldhash: 0.45 %). The keys are tenants'
/// identifiers, so a tenant able to make them collide could slow the one
/// writer every tenant shares; the per-process seed keeps the collisions
/// unpredictable from outside, and no bound on memory depends on the hash.
pub(super) type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Journalled changes not yet in redb, of one generation.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// The journal generation whose frames hold these changes.
    pub(super) generation: u64,
    /// Each changed profile as it now is, with the bytes it is charged.
    pub(super) profiles: Map<Vec<u8>, (AtoProfile, usize)>,
    /// Attempt-log rows not yet in redb, in commit order.
    pub(super) log: Vec<(Vec<u8>, Vec<u8>)>,
    /// Bytes of the profiles: keys plus [`AtoProfile::weight`].
    pub(super) bytes: usize,
    /// Bytes of the log rows.
    pub(super) log_bytes: usize,
    /// When the first change arrived.
    pub(super) since: Option<Instant>,
    /// When the newest change arrived.
    pub(super) last: Option<Instant>,
}

impl Pending {
    /// Takes in a frame's changes (newer than what is held).
    pub(super) fn add(&mut self, frame: Frame) {
        let now = Instant::now();
        self.since.get_or_insert(now);
        self.last = Some(now);
        for (k, p) in frame.profiles {
            let w = k.len() + p.weight();
            self.bytes += w;
            if let Some((_, old)) = self.profiles.insert(k, (p, w)) {
                self.bytes -= old;
            }
        }
        for (k, v) in frame.log {
            self.log_bytes += k.len() + v.len();
            self.log.push((k, v));
        }
    }

    /// Takes the log rows out (for the redb writer to write).
    pub(super) fn take_log(&mut self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.log_bytes = 0;
        std::mem::take(&mut self.log)
    }
}

/// What is journalled and not yet in redb: the active generation's changes
/// and, while a checkpoint writes it to redb, the frozen one's. Newer
/// first: a read looks in `active`, then `frozen`, then redb.
///
/// What the redb writer reads is immutable and shared (`Arc`): it never
/// holds the lock while it copies or writes, so a reader or the journal's
/// writer never waits behind redb's work.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    pub(super) active: Pending,
    /// Log rows taken out of `active` and being written to redb, oldest
    /// first.
    pub(super) flushing: Vec<LogRows>,
    pub(super) frozen: Option<Arc<Pending>>,
}

/// Attempt-log rows under their redb keys.
pub(super) type LogRows = Arc<Vec<(Vec<u8>, Vec<u8>)>>;

/// Shared by the writer (the one that changes it) and the readers.
pub(super) type SharedOverlay = Arc<RwLock<Overlay>>;

impl Overlay {
    /// The newest journalled version of the profile at `key`, if any.
    pub(super) fn profile(&self, key: &[u8]) -> Option<&AtoProfile> {
        self.active
            .profiles
            .get(key)
            .or_else(|| self.frozen.as_ref()?.profiles.get(key))
            .map(|(p, _)| p)
    }

    /// Log rows under `prefix` not known to be in redb (some may be both).
    pub(super) fn log_rows<'a>(&'a self, prefix: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        self.frozen
            .iter()
            .flat_map(|p| p.log.iter())
            .chain(self.flushing.iter().flat_map(|rows| rows.iter()))
            .chain(self.active.log.iter())
            .filter(move |(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_slice())
    }
}

/// Reads the overlay; a writer that panicked while holding the lock left
/// whole entries (each change is one insert), so the data is still usable.
pub(super) fn read(o: &SharedOverlay) -> std::sync::RwLockReadGuard<'_, Overlay> {
    o.read().unwrap_or_else(|e| e.into_inner())
}

/// Writes the overlay (see [`read`]).
pub(super) fn write(o: &SharedOverlay) -> std::sync::RwLockWriteGuard<'_, Overlay> {
    o.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
