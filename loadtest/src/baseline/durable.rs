//! The durable hello-world: the strict one, except that each request's body
//! is made durable before the answer, by the group commit the engine's
//! anti-ATO journal uses (`store/src/embedded/journal.rs`).
//!
//! A route whose answer waits for a durable write can never be as fast as
//! a route that writes nothing, and on a VM the difference is mostly the
//! machine's: a commit's `pwrite` and `fdatasync` cost CPU in the kernel
//! and in the hypervisor's exits, and the answers wait for the disk. This
//! baseline is the least any such route can do on the machine it runs on,
//! with the same design: one thread takes every body queued, appends them
//! as one checksummed frame to a file, syncs it, and wakes the waiting
//! answers. Divided into a durable route's figure it says how much of the
//! route's cost is the route; divided by the strict baseline it says what
//! durability alone costs here (BENCHMARKS.md, "The durable hello-world").

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use bytes::Bytes;
use tokio::sync::oneshot;

/// Largest body taken (413 above it); the instrument's are a few hundred
/// bytes.
pub const MAX_BODY: usize = 1 << 20;
/// Most bodies in one frame (the engine's `MAX_BATCH`).
const MAX_BATCH: usize = 1024;
/// The file grows by this much at a time, written with zeros, so that
/// most syncs write data only (as the engine's journal does).
const GROW: u64 = 256 << 10;
/// Frames start again at the file's beginning past this size: the file
/// stays bounded however long the baseline runs.
const WRAP: u64 = 64 << 20;
/// Bytes before a frame's bodies: `len u32, crc32c u32, seq u64`.
const HEADER: usize = 16;
/// The engine's journal checksum: CRC-32C, sixteen bytes at a time.
const CRC: crc::Crc<u32, crc::Table<16>> = crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// A body to make durable and whom to tell once it is.
type Write = (Bytes, oneshot::Sender<()>);

/// The sending side: cloned into every connection.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Write>,
}

/// Removes the journal's directory when the baseline stops.
pub struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Journal {
    /// Creates `dir` (which must not exist: it is removed again with the
    /// returned [`Dir`]) and starts the committing thread on a file in it.
    /// `dir` must be on the disk being measured: on a tmpfs the syncs cost
    /// nothing and this is the strict baseline again.
    pub fn start(dir: &Path) -> io::Result<(Self, Dir)> {
        std::fs::create_dir(dir)?;
        let guard = Dir(dir.to_path_buf());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("journal"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("durable-baseline".into())
            .spawn(move || commit_loop(file, rx))?;
        Ok((Self { tx }, guard))
    }

    /// Makes `body` durable; `Err` when the committing thread failed.
    pub async fn append(&self, body: Bytes) -> Result<(), ()> {
        let (done, wait) = oneshot::channel();
        self.tx.send((body, done)).map_err(|_| ())?;
        wait.await.map_err(|_| ())
    }
}

/// Commits until every sender is gone or a write fails (the waiting
/// answers then see their sender dropped).
fn commit_loop(file: File, rx: mpsc::Receiver<Write>) {
    let mut frames = Frames {
        file,
        size: 0,
        pos: 0,
        seq: 0,
        buf: Vec::new(),
    };
    let mut acks = Vec::new();
    while let Ok(first) = rx.recv() {
        frames.begin();
        let mut next = Some(first);
        while let Some((body, ack)) = next.take() {
            frames.push(&body);
            acks.push(ack);
            if acks.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if let Err(e) = frames.commit() {
            eprintln!("durable baseline: {e}");
            return;
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
}

/// The file and where the next frame goes.
struct Frames {
    file: File,
    /// The file's length (zeros past the newest frame).
    size: u64,
    pos: u64,
    seq: u64,
    buf: Vec<u8>,
}

impl Frames {
    fn begin(&mut self) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0; HEADER]);
    }

    fn push(&mut self, body: &[u8]) {
        // At most `MAX_BODY` (the caller's bound): far below 4 GiB, and a
        // frame's 1 024 of them too.
        self.buf
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(body);
    }

    /// Seals the frame, writes it and syncs it.
    fn commit(&mut self) -> io::Result<()> {
        let len = (self.buf.len() - HEADER) as u32;
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[8..16].copy_from_slice(&self.seq.to_le_bytes());
        let crc = CRC.checksum(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        if self.pos + self.buf.len() as u64 > WRAP {
            self.pos = 0;
        }
        let end = self.pos + self.buf.len() as u64;
        if end > self.size {
            let to = end.div_ceil(GROW) * GROW;
            let zeros = vec![0u8; (to - self.size) as usize];
            self.file.write_all_at(&zeros, self.size)?;
            self.size = to;
        }
        self.file.write_all_at(&self.buf, self.pos)?;
        self.file.sync_data()?;
        self.pos = end;
        self.seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every acknowledged body is in the file, in a frame whose checksum
    /// holds, in the order the frames were committed.
    #[tokio::test]
    async fn acknowledged_bodies_are_in_the_file() {
        let dir = std::env::temp_dir().join(format!("qyzar-durable-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (j, guard) = Journal::start(&dir).expect("journal");
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let j = j.clone();
            tasks.push(tokio::spawn(async move {
                j.append(Bytes::from(format!("body {i}"))).await
            }));
        }
        for t in tasks {
            assert_eq!(t.await.expect("task"), Ok(()));
        }
        let bytes = std::fs::read(dir.join("journal")).expect("read");
        let mut seen = Vec::new();
        let mut pos = 0;
        let mut seq = 0u64;
        loop {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
            assert_eq!(CRC.checksum(&bytes[pos + 8..pos + HEADER + len]), crc);
            assert_eq!(
                u64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap()),
                seq
            );
            let mut b = &bytes[pos + HEADER..pos + HEADER + len];
            while !b.is_empty() {
                let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
                seen.push(String::from_utf8(b[4..4 + n].to_vec()).unwrap());
                b = &b[4 + n..];
            }
            pos += HEADER + len;
            seq += 1;
        }
        seen.sort();
        let mut want: Vec<String> = (0..200).map(|i| format!("body {i}")).collect();
        want.sort();
        assert_eq!(seen, want);
        drop(guard);
        assert!(!dir.exists(), "the directory goes with the baseline");
    }
}
