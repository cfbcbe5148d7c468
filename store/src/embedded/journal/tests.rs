//! The journal's framing and replay: what is synced comes back, in
//! generation order, and nothing else does.

use super::*;
use crate::profile::{KnownRegion, LoginRecord};

fn profile(n: i64) -> AtoProfile {
    AtoProfile {
        last_success: Some(LoginRecord {
            at: 1_700_000_000_000 + n,
            attempt_id: format!("a{n}"),
            device_id: None,
            ip: Some("203.0.113.9".into()),
            region: Some("FR".into()),
            location: None,
            platform: None,
            browser: Some("Firefox \"quoted\"".into()),
        }),
        regions: vec![KnownRegion {
            region: format!("R{n}"),
            first_seen: n,
            last_seen: n,
        }],
        ..AtoProfile::default()
    }
}

fn frame(n: i64) -> Frame {
    Frame {
        profiles: vec![
            (format!("key-{n}").into_bytes(), profile(n)),
            (b"hot".to_vec(), profile(n + 1000)),
        ],
        log: vec![(
            format!("log-{n}").into_bytes(),
            format!("[{n}]").into_bytes(),
        )],
    }
}

fn db_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("data.redb")
}

/// Reopens the journal at `db` as a restart would, reads every generation
/// it lists (leaving out one whose chain turned out empty), and drops it.
fn replay(db: &Path, checkpointed: u64) -> Vec<(u64, Vec<Frame>)> {
    let (j, list) = Journal::open(db, checkpointed).expect("reopen");
    let mut out = Vec::new();
    for (generation, file) in list {
        let mut frames = Vec::new();
        j.replay(file, |f| frames.push(f)).expect("replay");
        if !frames.is_empty() {
            out.push((generation, frames));
        }
    }
    out
}

#[test]
fn a_frame_decodes_to_itself_and_rejects_trailing_bytes() {
    let f = frame(7);
    let mut b = Vec::new();
    f.encode(&mut b);
    assert_eq!(Frame::decode(&b), Some(f));
    b.push(0);
    assert_eq!(Frame::decode(&b), None, "trailing bytes");
    assert_eq!(Frame::decode(&b[..b.len() / 2]), None, "cut short");
    assert_eq!(Frame::decode(&[]), None);
}

/// A frame as builds before the postcard profiles wrote it (the profile
/// count first, each profile as JSON) still replays.
#[test]
fn a_frame_of_json_profiles_still_decodes() {
    let f = frame(9);
    let mut b = Vec::new();
    b.extend_from_slice(&(f.profiles.len() as u32).to_le_bytes());
    for (k, p) in &f.profiles {
        let json = serde_json::to_vec(p).unwrap();
        for part in [k.as_slice(), json.as_slice()] {
            b.extend_from_slice(&(part.len() as u32).to_le_bytes());
            b.extend_from_slice(part);
        }
    }
    b.extend_from_slice(&(f.log.len() as u32).to_le_bytes());
    for (k, v) in &f.log {
        for part in [k, v] {
            b.extend_from_slice(&(part.len() as u32).to_le_bytes());
            b.extend_from_slice(part);
        }
    }
    assert_eq!(Frame::decode(&b), Some(f.clone()));
    let mut now = Vec::new();
    f.encode(&mut now);
    assert!(now.len() < b.len(), "{} against {}", now.len(), b.len());
}

#[test]
fn the_checksum_is_crc32c_as_journals_of_earlier_builds_hold_it() {
    // The check value of CRC-32C, and the byte-at-a-time table of earlier
    // builds over every length around the 16-byte steps.
    assert_eq!(CRC.checksum(b"123456789"), 0xE306_9283);
    let bytewise = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);
    let data: Vec<u8> = (0..4099u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for len in (0..64).chain([255, 256, 257, 4096, 4099]) {
        for start in [0, 1, 7] {
            let s = &data[start..start + len.min(data.len() - start)];
            assert_eq!(
                CRC.checksum(s),
                bytewise.checksum(s),
                "len {len} start {start}"
            );
        }
    }
}

#[test]
fn synced_frames_come_back_in_order() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut j, r) = Journal::open(&db_path(&dir), 0).expect("open");
    assert!(r.is_empty(), "a new journal replays nothing");
    assert_eq!(j.generation(), 1);
    for n in 0..3 {
        j.append(&frame(n)).expect("append");
    }
    drop(j);
    let r = replay(&db_path(&dir), 0);
    assert_eq!(r, vec![(1, (0..3).map(frame).collect())]);
    // Checkpointed: nothing to replay, and the next generation is newer.
    let (j, r) = Journal::open(&db_path(&dir), 1).expect("reopen");
    assert!(r.is_empty());
    assert_eq!(j.generation(), 2);
}

#[test]
fn a_torn_or_corrupt_frame_ends_the_replay() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut j, _) = Journal::open(&db_path(&dir), 0).expect("open");
    for n in 0..3 {
        j.append(&frame(n)).expect("append");
    }
    let len = j.len();
    drop(j);
    let path = Journal::paths(&db_path(&dir))[0].clone();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("file");
    // The last frame's final bytes never reached the disk.
    file.write_all_at(&[0; 8], len - 8).expect("tear");
    assert_eq!(
        replay(&db_path(&dir), 0),
        vec![(1, vec![frame(0), frame(1)])]
    );
    // A flipped bit in the second frame's payload: only the first is left.
    let mut head = [0u8; HEADER];
    file.read_exact_at(&mut head, 0).expect("read");
    let first = HEADER + u32::from_le_bytes(head[0..4].try_into().expect("4")) as usize;
    let mut byte = [0u8; 1];
    let at = (first + HEADER + 3) as u64;
    file.read_exact_at(&mut byte, at).expect("read");
    file.write_all_at(&[byte[0] ^ 1], at).expect("flip");
    assert_eq!(replay(&db_path(&dir), 0), vec![(1, vec![frame(0)])]);
    // A journal made of garbage replays nothing (and does not fail).
    file.write_all_at(&[0xa5; 64], 0).expect("garbage");
    assert!(replay(&db_path(&dir), 0).is_empty());
    // Nor does its header's generation (0xa5a5…) number the next one.
    let (j, list) = Journal::open(&db_path(&dir), 0).expect("reopen");
    assert!(list.is_empty());
    assert_eq!(j.generation(), 1);
}

#[test]
fn generations_replay_oldest_first_and_checkpointed_ones_not_at_all() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut j, _) = Journal::open(&db_path(&dir), 0).expect("open");
    j.append(&frame(1)).expect("append");
    j.append(&frame(2)).expect("append");
    assert_eq!(j.rotate(), 1);
    j.append(&frame(3)).expect("append");
    drop(j);
    assert_eq!(
        replay(&db_path(&dir), 0),
        vec![(1, vec![frame(1), frame(2)]), (2, vec![frame(3)])]
    );
    assert_eq!(replay(&db_path(&dir), 1), vec![(2, vec![frame(3)])]);
    assert!(replay(&db_path(&dir), 2).is_empty());
}

#[test]
fn a_reused_file_replays_only_its_new_generation() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut j, _) = Journal::open(&db_path(&dir), 0).expect("open");
    for n in 0..5 {
        j.append(&frame(n)).expect("append");
    }
    j.rotate(); // generation 2, second file
    j.append(&frame(10)).expect("append");
    j.rotate(); // generation 3, first file again, over generation 1's frames
    j.append(&frame(20)).expect("append");
    drop(j);
    // Generation 1's later frames are still in the file after the new
    // one: they are another generation's, and not replayed.
    assert_eq!(replay(&db_path(&dir), 2), vec![(3, vec![frame(20)])]);
    let (j, _) = Journal::open(&db_path(&dir), 3).expect("reopen");
    assert_eq!(j.generation(), 4);
}

#[test]
fn a_file_grows_in_steps_and_keeps_frames_across_them() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut j, _) = Journal::open(&db_path(&dir), 0).expect("open");
    let big = Frame {
        profiles: Vec::new(),
        log: vec![(b"k".to_vec(), vec![b'x'; 700 << 10])],
    };
    for _ in 0..3 {
        j.append(&big).expect("append");
    }
    let path = Journal::paths(&db_path(&dir))[0].clone();
    let size = std::fs::metadata(&path).expect("meta").len();
    assert_eq!(size % GROW, 0);
    assert!(size >= j.len());
    drop(j);
    assert_eq!(replay(&db_path(&dir), 0), vec![(1, vec![big; 3])]);
}

#[test]
fn the_overlay_reads_newest_first_and_counts_bytes() {
    let mut o = Overlay::default();
    o.active.add(frame(1));
    assert_eq!(o.profile(b"hot"), Some(&profile(1001)));
    let before = o.active.bytes;
    o.active.add(Frame {
        profiles: vec![(b"hot".to_vec(), profile(1002))],
        log: Vec::new(),
    });
    assert_eq!(o.active.bytes, before, "a replaced profile is charged once");
    o.frozen = Some(Arc::new(std::mem::take(&mut o.active)));
    o.active.add(Frame {
        profiles: vec![(b"hot".to_vec(), profile(1003))],
        log: vec![(b"log-x".to_vec(), b"[]".to_vec())],
    });
    assert_eq!(
        o.profile(b"hot"),
        Some(&profile(1003)),
        "active before frozen"
    );
    assert_eq!(o.profile(b"key-1"), Some(&profile(1)), "then frozen");
    assert_eq!(o.profile(b"nothing"), None);
    let rows: Vec<&[u8]> = o.log_rows(b"log-").collect();
    assert_eq!(
        rows,
        vec![b"[1]".as_slice(), b"[]".as_slice()],
        "oldest first"
    );
}

/// A file whose first frame names a checkpointed generation lists
/// nothing to replay whatever its body holds (`open` reads only that
/// frame; that it reads no more is not visible here). Its size is still
/// known, so the next frames overwrite without growing it, and a file
/// shorter than a header opens as empty.
#[test]
fn a_checkpointed_file_is_not_read_and_a_short_one_is_empty() {
    let dir = tempfile::tempdir().expect("dir");
    let (mut j, _) = Journal::open(&db_path(&dir), 0).expect("open");
    j.append(&frame(1)).expect("append");
    j.append(&frame(2)).expect("append");
    drop(j);
    let [first, second] = Journal::paths(&db_path(&dir));
    // Scribble over the second frame: were the file read and scanned, the
    // replay of generation 1 would stop there; not read, nothing is.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&first)
        .expect("open");
    let mut len = [0u8; 4];
    f.read_exact_at(&mut len, 0).expect("first length");
    let second_body = (2 * HEADER + u32::from_le_bytes(len) as usize) as u64;
    f.write_all_at(&[0xff; 16], second_body).expect("scribble");
    let size = std::fs::metadata(&first).expect("meta").len();
    assert_eq!(
        replay(&db_path(&dir), 0),
        vec![(1, vec![frame(1)])],
        "generation 1 is newer than checkpoint 0: scanned, up to the scribble"
    );
    let (j, replayed) = Journal::open(&db_path(&dir), 1).expect("reopen");
    assert!(replayed.is_empty());
    assert_eq!(j.generation(), 2);
    assert_eq!(j.sizes[0], size);
    drop(j);
    std::fs::write(&second, [7u8; HEADER - 1]).expect("short file");
    let (j, replayed) = Journal::open(&db_path(&dir), 1).expect("reopen short");
    assert!(replayed.is_empty());
    assert_eq!(j.sizes[1], (HEADER - 1) as u64);
}
