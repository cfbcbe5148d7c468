//! Unit tests of [`super`].
use super::*;

#[derive(Clone)]
struct Len;
impl Weighter<u64, Arc<[u8]>> for Len {
    fn weight(&self, _: &u64, v: &Arc<[u8]>) -> u64 {
        v.len() as u64 + 8
    }
}

fn cache(total: u64, project: u64) -> ProjectCache<u64, Arc<[u8]>, Len> {
    ProjectCache::new(
        Budget {
            total_bytes: total,
            project_bytes: project,
        },
        Len,
        1024,
    )
}

fn value(n: usize) -> Arc<[u8]> {
    vec![7u8; n].into()
}

/// The real weight held, summed entry by entry, against the counters.
fn held(c: &ProjectCache<u64, Arc<[u8]>, Len>) -> u64 {
    c.shards
        .load()
        .values()
        .map(|s| s.cache.iter().map(|(_, v)| v.len() as u64 + 8).sum::<u64>())
        .sum()
}

#[test]
fn bytes_never_exceed_the_total_and_counters_match() {
    let c = cache(256 * 1024, 64 * 1024);
    for i in 0..20_000u64 {
        let project = format!("p{}", i % 13);
        c.insert(&project, i % 3000, value(100 + (i as usize * 37) % 2000));
        assert!(c.bytes() <= 256 * 1024, "{} held at insert {i}", c.bytes());
        for p in 0..13 {
            assert!(c.project_bytes(&format!("p{p}")) <= 64 * 1024 + 8);
        }
    }
    assert_eq!(c.bytes(), held(&c), "the counters are exact");
    let sum: u64 = (0..13).map(|p| c.project_bytes(&format!("p{p}"))).sum();
    assert_eq!(sum, c.bytes());
    // Removing and replacing keep them exact too.
    for i in 0..3000u64 {
        c.remove(&format!("p{}", i % 13), &i);
        c.insert("p0", i, value(10));
    }
    assert_eq!(c.bytes(), held(&c));
}

#[test]
fn a_flood_in_one_share_never_evicts_another_project() {
    // Shares add up to less than the total: the flood stops at its share.
    let c = cache(1024 * 1024, 128 * 1024);
    for i in 0..50u64 {
        c.insert("b", i, value(1000));
    }
    let b_before = c.project_bytes("b");
    for i in 0..100_000u64 {
        c.insert("a", i, value(1500));
    }
    assert!(c.project_bytes("a") <= 128 * 1024 + 8);
    assert_eq!(c.project_bytes("b"), b_before);
    for i in 0..50u64 {
        assert!(c.get("b", &i).is_some(), "b's entry {i} survived");
    }
}

#[test]
fn at_the_total_the_largest_project_gives_way() {
    // Three shares of 128 KiB over a 256 KiB total: over-committed.
    let c = cache(256 * 1024, 128 * 1024);
    for i in 0..40u64 {
        c.insert("small", i, value(1000));
    }
    for p in ["big1", "big2"] {
        for i in 0..10_000u64 {
            c.insert(p, i, value(1000));
            assert!(c.bytes() <= 256 * 1024);
        }
    }
    for i in 0..40u64 {
        assert!(c.get("small", &i).is_some(), "the small project kept {i}");
    }
    assert!(c.counters().budget_evictions.load(Relaxed) > 0);
}

#[test]
fn too_heavy_values_are_not_kept_and_leave_no_bytes() {
    let c = cache(64 * 1024, 16 * 1024);
    c.insert("a", 1, value(100));
    c.insert("a", 1, value(64 * 1024));
    assert!(c.get("a", &1).is_none());
    assert_eq!(c.bytes(), 0);
    assert_eq!(c.bytes(), held(&c));
}

#[test]
fn lookups_are_per_project() {
    let c = cache(64 * 1024, 16 * 1024);
    c.insert("a", 1, value(1));
    assert!(c.get("a", &1).is_some());
    assert!(c.get("b", &1).is_none());
    assert_eq!(c.project_len("b"), 0);
}

#[tokio::test]
async fn an_unfilled_guard_leaves_nothing_and_a_filled_one_is_shared() {
    let c = cache(64 * 1024, 16 * 1024);
    let shard = c.shard("a");
    match c.get_or_guard(&shard, &5).await {
        Err(g) => drop(g),
        Ok(_) => panic!("empty"),
    }
    assert_eq!((c.len(), c.bytes()), (0, 0));
    match c.get_or_guard(&shard, &5).await {
        Err(g) => g.insert(value(10)),
        Ok(_) => panic!("empty"),
    }
    assert_eq!(
        c.get_or_guard(&shard, &5).await.ok().map(|v| v.len()),
        Some(10)
    );
    assert_eq!(c.bytes(), 18);
}

#[test]
fn budgets_parse_from_mib() {
    assert_eq!(Budget::parse("512/64").unwrap(), Budget::mib(512, 64));
    assert_eq!(Budget::parse(" 256 ").unwrap(), Budget::mib(256, 64));
    assert!(Budget::parse("64/128").is_err());
    assert!(Budget::parse("0").is_err());
    assert!(Budget::parse("x/1").is_err());
    assert!(Budget::parse(&format!("{}", u64::MAX)).is_err());
    assert_eq!(
        Budget::parse(&Budget::mib(9, 3).to_text()).unwrap(),
        Budget::mib(9, 3)
    );
}

#[test]
fn concurrent_inserts_keep_the_counters_exact() {
    let c = cache(256 * 1024, 128 * 1024);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let c = &c;
            s.spawn(move || {
                for i in 0..5_000u64 {
                    let project = format!("p{}", (i + t) % 3);
                    c.insert(&project, (i * 7 + t) % 900, value(200 + (i as usize % 900)));
                    if i % 5 == 0 {
                        c.remove(&project, &((i * 3) % 900));
                    }
                }
            });
        }
    });
    assert_eq!(c.bytes(), held(&c), "no drift under concurrency");
    // Racing inserts may each see the total before the other evicts: a
    // few entries of slack, never a drift.
    assert!(c.bytes() <= 256 * 1024 + 4096, "{} held", c.bytes());
}

#[test]
fn updates_in_place_keep_the_counters_exact() {
    let c = cache(256 * 1024, 64 * 1024);
    c.insert("p0", 1, value(100));
    c.insert("p1", 1, value(100));
    // Grown, shrunk, and the other project's entry untouched.
    assert_eq!(c.update("p0", &1, |v| *v = value(900)), Some(()));
    assert_eq!(c.project_bytes("p0"), 908);
    assert_eq!(c.update("p0", &1, |v| *v = value(20)), Some(()));
    assert_eq!(c.project_bytes("p0"), 28);
    assert_eq!(c.get("p1", &1).map(|v| v.len()), Some(100));
    assert_eq!(c.bytes(), held(&c));
    // Absent (no such key, no such project): `f` is not called, nothing is
    // inserted, and the key can be loaded as before.
    let mut called = false;
    assert_eq!(c.update("p0", &2, |_| called = true), None);
    assert_eq!(c.update("p9", &1, |_| called = true), None);
    assert!(!called);
    assert_eq!(c.get("p0", &2), None);
    assert_eq!(c.project_len("p9"), 0);
    c.insert("p0", 2, value(5));
    assert_eq!(c.get("p0", &2).map(|v| v.len()), Some(5));
    // Many in-place changes across the share's evictions stay exact.
    for i in 0..20_000u64 {
        let k = i % 300;
        if c.update("p0", &k, |v| *v = value((i as usize * 37) % 700))
            .is_none()
        {
            c.insert("p0", k, value(50));
        }
        assert!(c.project_bytes("p0") <= 64 * 1024 + 8);
    }
    assert_eq!(c.bytes(), held(&c));
}

/// `evictions` counts what the budget cost, `replacements` what a newer
/// value took over: a value written back under its key (as an anti-ATO
/// profile after every login) is not an eviction.
#[test]
fn replaced_values_are_not_counted_as_evictions() {
    let c = cache(256 * 1024, 64 * 1024);
    let evictions = || c.counters().evictions.load(Relaxed);
    let replacements = || c.counters().replacements.load(Relaxed);
    for k in 0..10u64 {
        c.insert("a", k, value(100));
    }
    for round in 0..50 {
        for k in 0..10u64 {
            c.insert("a", k, value(100 + round));
        }
    }
    assert_eq!((evictions(), replacements()), (0, 500));
    // An update that grows the value inserts it again: a replacement.
    assert_eq!(c.update("a", &3, |v| *v = value(900)), Some(()));
    assert_eq!((evictions(), replacements()), (0, 501));
    assert_eq!(c.bytes(), held(&c));

    // A flood past the share evicts: each entry that left is counted once,
    // as an eviction.
    let before = c.project_len("b");
    assert_eq!(before, 0);
    let inserted = 2_000u64;
    for k in 0..inserted {
        c.insert("b", k, value(200));
    }
    let kept = c.project_len("b") as u64;
    assert!(kept < inserted);
    assert_eq!(evictions(), inserted - kept);
    assert_eq!(replacements(), 501);

    // A value too heavy for a share is refused: an eviction, and the value
    // it would have replaced leaves too (also an eviction: nothing took
    // its place).
    c.insert("c", 1, value(100));
    let (e, r) = (evictions(), replacements());
    c.insert("c", 1, value(64 * 1024));
    assert!(c.get("c", &1).is_none());
    assert_eq!((evictions() - e, replacements() - r), (2, 0));
    c.insert("c", 2, value(64 * 1024));
    assert_eq!((evictions() - e, replacements() - r), (3, 0));
    assert_eq!(c.bytes(), held(&c));
}

#[test]
fn the_largest_are_picked_heaviest_first() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for n in [0usize, 1, 3, 8, 9, 100] {
        let items: Vec<(u64, usize)> = (0..n)
            .map(|i| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % 20, i)
            })
            .collect();
        let mut want = items.clone();
        // Heaviest first; among equals, the one walked first.
        want.sort_by_key(|&(w, i)| (std::cmp::Reverse(w), i));
        let want: Vec<usize> = want.into_iter().take(GIVE_WAY).map(|(_, i)| i).collect();
        let got: Vec<usize> = largest(items.into_iter()).collect();
        assert_eq!(got, want, "{n} items");
    }
}

#[test]
fn many_small_projects_free_the_total_in_few_walks() {
    // 500 projects share a 256 KiB total, each holding a few entries: the
    // largest alone holds less than the 4 KiB a walk frees.
    let c = cache(256 * 1024, 256 * 1024);
    let inserts = 20_000u64;
    for i in 0..inserts {
        c.insert(&format!("p{}", i % 500), i, value(500));
        assert!(c.bytes() <= 256 * 1024);
    }
    assert_eq!(c.bytes(), held(&c));
    // 508 bytes an insert past the total, 4 KiB a walk: about 2 400 walks
    // (6 887 when only the largest gave way, 1 949 now).
    let walks = c.counters().budget_evictions.load(Relaxed);
    assert!(walks < inserts / 6, "{walks} walks for {inserts} inserts");
}

#[test]
fn the_smallest_holder_keeps_its_entries_while_larger_ones_give_way() {
    // Each walk empties several of the 200 busy projects (each holds less
    // than the 4 KiB a walk frees); the one holding least is never among
    // the eight heaviest, so it keeps its entry throughout.
    let c = cache(256 * 1024, 256 * 1024);
    c.insert("keeper", 0, value(100));
    for i in 0..20_000u64 {
        c.insert(&format!("p{}", i % 200), i, value(500));
        assert!(c.get("keeper", &0).is_some(), "evicted at insert {i}");
    }
    assert!(c.counters().budget_evictions.load(Relaxed) > 0);
    assert_eq!(c.bytes(), held(&c));
}

/// Offered values: while there is room, every one goes in. Once inserts
/// evict, a project whose entries are never found again gets about one in
/// `EXPLORE` in and counts the rest as declined, while another project
/// whose entries are found again keeps getting every one in: admission is
/// judged per project.
#[test]
fn offers_are_declined_only_for_the_project_whose_entries_are_not_read_again() {
    use super::admission::{EXPLORE, WINDOW};
    // 64 entries of 1 032 bytes fit a share; the total holds two shares.
    // Below 15/16 of the share every offer goes in.
    let c = cache(2 * 66_048, 66_048);
    for k in 0..56u64 {
        assert!(c.offer("once", k, value(1024)), "room: admitted");
    }
    let declined = || c.counters().declined.load(Relaxed);
    assert_eq!(declined(), 0);
    // "once": fresh keys, never looked up again.
    let admitted = (56..56 + 16_000u64)
        .filter(|k| c.offer("once", *k, value(1024)))
        .count();
    assert!(
        admitted <= 16_000 / EXPLORE as usize + WINDOW as usize,
        "{admitted} of 16 000 single-use values admitted"
    );
    assert_eq!(declined(), 16_000 - admitted as u64);
    // "again": each value looked up once after it goes in, its share
    // full (so every insert evicts), the other project's flood beside it.
    for k in 0..20_000u64 {
        assert!(c.offer("again", k, value(1024)), "value {k} declined");
        assert!(c.get_counted("again", &k, |_| true).is_some());
        c.offer("once", 1_000_000 + k, value(1024));
    }
    assert!(c.project_bytes("again") > 0);
    assert_eq!(held(&c), c.bytes(), "the counters match what is held");
}

/// An entry found but refused by the caller (a token whose signing key
/// was retired since) is not a hit: it is not returned, and a project
/// whose entries are only ever found that way is declined like one whose
/// entries are never found at all.
#[test]
fn entries_the_caller_cannot_use_do_not_count_as_hits() {
    use super::admission::{EXPLORE, WINDOW};
    let c = cache(2 * 66_048, 66_048);
    for k in 0..56u64 {
        assert!(c.offer("stale", k, value(1024)), "room: admitted");
    }
    assert!(
        c.get_counted("stale", &0, |_| false).is_none(),
        "refused: not returned"
    );
    assert!(c.get_counted("stale", &0, |_| true).is_some(), "still held");
    let admitted = (56..56 + 16_000u64)
        .filter(|k| {
            let admitted = c.offer("stale", *k, value(1024));
            c.get_counted("stale", k, |_| false);
            admitted
        })
        .count();
    assert!(
        admitted <= 16_000 / EXPLORE as usize + WINDOW as usize + 1,
        "{admitted} of 16 000 values admitted though none was usable"
    );
}
