//! Per-project budgets and the engine-wide pool: one project flooding its
//! share changes no decision of another, and nobody fails open.

use super::*;

const SEC: u64 = 1_000_000_000;

fn hit(l: &Limiter, project: &str, k: &str, rule: Rule, now: u64) -> bool {
    let key = l.bucket_key(project, "ip", k.as_bytes()).unwrap();
    l.check(now, &[BucketCheck { key, rule }], 1, false)
        .unwrap()
        .allowed
}

/// B's answers to a fixed script of calls (some keys spent to the limit,
/// some fresh), interleaved with whatever `between` does.
fn b_script(ls: &Limiters, mut between: impl FnMut(u64)) -> Vec<bool> {
    let b = ls.project("prj_b", 1_000);
    let rule = Rule::new(3, 3_600);
    let mut answers = Vec::new();
    for round in 0..6u64 {
        let now = round * SEC;
        between(now);
        for k in ["b1", "b2", &format!("fresh{round}")] {
            answers.push(hit(&b, "prj_b", k, rule, now));
        }
    }
    answers
}

#[test]
fn a_project_at_its_budget_changes_no_decision_of_another() {
    // Reference: B alone.
    let alone = b_script(
        &Limiters::new(LimitersConfig {
            max_entries: 10_000,
        }),
        |_| {},
    );
    // A floods unique keys with a long window far past its budget of 500,
    // between every one of B's rounds.
    let ls = Limiters::new(LimitersConfig {
        max_entries: 10_000,
    });
    let a = ls.project("prj_a", 500);
    let long = Rule::new(1, 86_400);
    let mut n = 0u32;
    let with_flood = b_script(&ls, |now| {
        for _ in 0..2_000 {
            n += 1;
            assert!(hit(
                &a,
                "prj_a",
                &format!("10.0.{}.{}", n / 256, n % 256),
                long,
                now
            ));
        }
    });
    assert_eq!(with_flood, alone, "B's decisions are the same");
    assert!(
        a.entries() <= 500,
        "A holds at most its budget: {}",
        a.entries()
    );
    assert_eq!(ls.project_entries("prj_a"), a.entries());
    let stats = ls.stats();
    assert_eq!(stats.untracked, 0, "nobody failed open");
    assert!(stats.evicted > 0, "A forgot its own keys");
    assert_eq!(stats.projects, 2);
}

#[test]
fn a_project_at_budget_keeps_limiting_its_recent_keys() {
    let ls = Limiters::default();
    let a = ls.project("prj_a", 64);
    let rule = Rule::new(1, 3_600);
    for i in 0..1_000 {
        assert!(hit(&a, "prj_a", &format!("k{i}"), rule, SEC));
        // The key just spent stays tracked: fail-open would allow it again.
        assert!(!hit(&a, "prj_a", &format!("k{i}"), rule, SEC), "k{i}");
    }
    assert!(a.entries() <= 64);
}

#[test]
fn a_full_pool_takes_room_from_the_largest_project_not_the_small_one() {
    let ls = Limiters::new(LimitersConfig { max_entries: 300 });
    // Big fills the pool over its 4 shards (about 75 keys each), so an
    // eighth of one of them would be 9 keys.
    let big = ls.project("prj_big", 1_000);
    let small = ls.project("prj_small", 1_000);
    let rule = Rule::new(1, 3_600);
    assert!(hit(&small, "prj_small", "s0", rule, 0));
    for i in 0..1_000 {
        hit(&big, "prj_big", &format!("b{i}"), rule, 0);
    }
    assert!(
        ls.stats().entries <= 300 + 8,
        "the pool bounds all projects"
    );
    // The small project's new keys are tracked (limited on their second
    // call) and its old key kept its state; each took at most one key of
    // the big project's (the pool's reclaim evicts one, never a batch).
    let (big_before, evicted_before) = (big.entries(), ls.stats().evicted);
    for i in 1..20 {
        let k = format!("s{i}");
        let big_had = big.entries();
        assert!(hit(&small, "prj_small", &k, rule, SEC));
        assert!(big_had - big.entries() <= 1, "{k} cost big one key at most");
        assert!(!hit(&small, "prj_small", &k, rule, SEC), "{k} is tracked");
    }
    assert!(!hit(&small, "prj_small", "s0", rule, SEC));
    assert_eq!(small.entries(), 20);
    assert!(
        big_before - big.entries() > 0,
        "the pool was full: big gave keys"
    );
    assert_eq!(
        ls.stats().evicted - evicted_before,
        (big_before - big.entries()) as u64
    );
    assert_eq!(ls.stats().untracked, 0);
}

#[test]
fn empty_unused_partitions_are_dropped_and_give_their_keys_back() {
    let ls = Limiters::default();
    {
        let a = ls.project("prj_a", 100);
        assert!(hit(&a, "prj_a", "k", Rule::new(1, 1), 0));
        assert!(hit(&a, "prj_a", "k2", Rule::new(1, 100), 0));
    }
    assert_eq!(ls.sweep(2 * SEC), 1);
    assert_eq!(ls.stats().projects, 1, "still holds a live key");
    assert_eq!(ls.sweep(200 * SEC), 1);
    assert_eq!(
        ls.stats(),
        LimiterStats {
            entries: 0,
            untracked: 0,
            evicted: 0,
            projects: 0,
        }
    );
    // A handle held by a call keeps its partition.
    let held = ls.project("prj_c", 100);
    ls.sweep(300 * SEC);
    assert_eq!(ls.stats().projects, 1);
    drop(held);
}

#[test]
fn a_changed_budget_applies_to_the_same_partition() {
    let ls = Limiters::default();
    let a = ls.project("prj_a", 10_000);
    let shards = a.inner.shards.len();
    assert_eq!(a.inner.shard_cap(), 10_000 / shards);
    let again = ls.project("prj_a", 100_000);
    assert!(Arc::ptr_eq(&a.inner, &again.inner));
    assert_eq!(a.inner.shard_cap(), 100_000 / shards);
    assert!(
        a.inner.shard_cap() * shards <= 100_000,
        "never above the budget"
    );
}
