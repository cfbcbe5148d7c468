//! Whether a miss is worth caching, judged per project: for caches whose
//! entries may never be read again (verified client tokens).
//!
//! A project whose backend verifies each token once (one verify per
//! login) gains nothing from caching them, and once its share or the total
//! is full every insert also evicts a cold entry. On `engine-compare`'s
//! uncached scenario (100 000 tokens over 1 000 projects, a cache of 4 096
//! tokens) that insert was 8 % of the route's CPU per answer: 5.80 and
//! 5.99 µs with it, 5.33 and 5.43 µs without, in alternated runs
//! (BENCHMARKS.md, "Caching only what is read again").
//!
//! So while an insert would evict, a project's misses are cached only if
//! its recent entries were read again often enough: at least one hit per
//! [`MIN_YIELD`] entries admitted, counted over about the last [`WINDOW`]
//! admissions. A hit skips a signature check and a parse (about 1.5 µs
//! here, uncached against cached), an insert that evicts costs about
//! 0.5 µs, so caching pays from about one hit in three entries; one in
//! four leans towards caching. While a project is below that, one miss in
//! [`EXPLORE`] is cached anyway, so that when its tokens start coming back
//! their hits raise the yield and admission opens again. Until an insert
//! would evict, everything is admitted, as before.
//!
//! What this changes is speed only: a token not cached is verified in
//! full the next time, with the same answer. The counters are the
//! project's own, so one tenant's stream of single-use tokens changes
//! neither another's admission nor its entries; the global total still
//! makes the largest holders give way ([`super::ProjectCache::keep_total`]).
//! The counts are relaxed atomics and may lose an increment under a race:
//! an estimate, not an account.

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Admissions after which both counts are halved: the yield is that of
/// roughly the last this many admitted entries (and their hits).
pub(crate) const WINDOW: u32 = 64;
/// Hits after which both counts are halved, so a project answered from a
/// few hot entries for hours keeps a ratio, not a growing number.
const HIT_CAP: u32 = 1 << 16;
/// Entries admitted per hit, at most, for a project to keep caching
/// every miss while inserts evict.
pub(crate) const MIN_YIELD: u32 = 4;
/// While a project's yield is low, one miss in this many is still cached.
pub(crate) const EXPLORE: u32 = 16;

/// One project's admission counts, on a cache line of their own: hits are
/// counted on every lookup that finds an entry.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct Admission {
    hits: AtomicU32,
    admitted: AtomicU32,
    declined: AtomicU32,
}

impl Admission {
    /// Counts a lookup answered from this project's entries.
    pub(crate) fn hit(&self) {
        if self.hits.fetch_add(1, Relaxed) + 1 >= HIT_CAP {
            self.halve();
        }
    }

    /// Whether a missed entry goes in; `evicts` tells whether putting it in
    /// takes the project's share or the total over (an insert would then
    /// push out another entry).
    pub(crate) fn admit(&self, evicts: bool) -> bool {
        let admit = !evicts || self.pays() || {
            // Counts wrap after 2^32 declines; the modulus only spaces
            // out the admissions.
            self.declined.fetch_add(1, Relaxed) % EXPLORE == EXPLORE - 1
        };
        if admit && self.admitted.fetch_add(1, Relaxed) + 1 >= WINDOW {
            self.halve();
        }
        admit
    }

    /// Whether recent entries were read again often enough.
    fn pays(&self) -> bool {
        let admitted = self.admitted.load(Relaxed);
        self.hits.load(Relaxed).saturating_mul(MIN_YIELD) >= admitted
    }

    /// Both counts halved together, keeping their ratio.
    fn halve(&self) {
        self.hits.store(self.hits.load(Relaxed) / 2, Relaxed);
        self.admitted
            .store(self.admitted.load(Relaxed) / 2, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Until an insert would evict, every miss goes in, whatever the
    /// yield.
    #[test]
    fn with_room_every_miss_is_admitted() {
        let a = Admission::default();
        assert!((0..10_000).all(|_| a.admit(false)));
    }

    /// Entries never read again: once a window's admissions found no hit,
    /// exactly one miss in `EXPLORE` goes in.
    #[test]
    fn single_use_entries_are_admitted_one_in_explore() {
        let a = Admission::default();
        let first: usize = (0..1_000).filter(|_| a.admit(true)).count();
        // The first ones go in (nothing is known yet), then sampling.
        assert!(
            first < 1_000 / EXPLORE as usize + WINDOW as usize,
            "{first}"
        );
        let later: usize = (0..16_000).filter(|_| a.admit(true)).count();
        assert_eq!(later, 16_000 / EXPLORE as usize);
    }

    /// Entries read again about once each keep admission open.
    #[test]
    fn entries_read_again_keep_every_miss_admitted() {
        let a = Admission::default();
        for _ in 0..10_000 {
            assert!(a.admit(true));
            a.hit();
        }
        // One hit per `MIN_YIELD` entries is still enough.
        for i in 0..10_000 {
            assert!(a.admit(true));
            if i % MIN_YIELD == 0 {
                a.hit();
            }
        }
    }

    /// A project whose tokens start coming back: the sampled admissions
    /// are hit, the yield rises, and admission opens within a few
    /// windows.
    #[test]
    fn admission_reopens_when_entries_start_being_read_again() {
        let a = Admission::default();
        for _ in 0..2_000 {
            a.admit(true);
        }
        assert!(!a.pays());
        let mut misses = 0;
        while !a.pays() {
            misses += 1;
            assert!(misses < 4 * EXPLORE * WINDOW, "admission never reopened");
            if a.admit(true) {
                // The admitted entry is read again twice.
                a.hit();
                a.hit();
            }
        }
        // And stays open while they are.
        assert!((0..1_000).all(|_| {
            let admitted = a.admit(true);
            a.hit();
            a.hit();
            admitted
        }));
    }

    /// Hits alone (a few hot entries, nothing admitted for long) do not
    /// grow the counts without bound, and the ratio survives the halving.
    #[test]
    fn hits_alone_keep_the_counts_bounded() {
        let a = Admission::default();
        for _ in 0..WINDOW - 1 {
            a.admit(true);
        }
        for _ in 0..3 * HIT_CAP {
            a.hit();
        }
        assert!(a.hits.load(Relaxed) < HIT_CAP);
        assert!(a.pays());
    }
}
