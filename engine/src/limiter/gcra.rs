//! The GCRA arithmetic for one bucket: a pure function of (stored state,
//! rule, cost, now), so it can be tested without locks, maps or clocks.
//!
//! Everything is expressed as *debt*: how far the bucket's theoretical arrival
//! time (TAT) runs ahead of `now`, in nanoseconds. A bucket with debt 0 is
//! full; each cell costs one emission interval `T = window / limit`; a call
//! fits while the debt after it stays within the capacity `τ = limit × T`
//! (one window). This is the same test governor makes (`t0 ≥ TAT − τ'` with
//! its `τ' = (burst − 1) × T`, before adding the cell); a test in
//! `limiter/tests.rs` pins the equivalence.

/// Nanoseconds in a second.
const NANOS_PER_SEC: u64 = 1_000_000_000;
/// Nanoseconds in a millisecond: answers are in milliseconds, state in nanoseconds.
const NANOS_PER_MS: u64 = 1_000_000;

/// A rate-limit rule as written in project settings (`{limit, windowSeconds}`):
/// a burst of `limit` cells that refills at `limit / window_seconds` cells per second.
///
/// The rule is not part of the stored state: it is applied at decision time,
/// so a project can change it (or a call can override it) without losing what
/// the key has already spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Cells a full bucket holds (the burst), and cells refilled per window.
    /// `0` denies every call that costs anything.
    pub limit: u32,
    /// Seconds an empty bucket takes to refill completely. `0` refills
    /// instantly (settings validation should refuse it; here it just cannot
    /// divide by zero).
    pub window_seconds: u32,
}

impl Rule {
    /// A rule allowing `limit` cells per `window_seconds`.
    pub const fn new(limit: u32, window_seconds: u32) -> Self {
        Self {
            limit,
            window_seconds,
        }
    }

    /// GCRA's emission interval `T`: nanoseconds one cell takes to refill.
    ///
    /// Rounded up, so a rule never lets more than `limit` cells through per
    /// window, and at least 1 ns so nothing divides by zero. Cannot overflow:
    /// `u32::MAX` seconds is about 4.3 × 10¹⁸ ns, below `u64::MAX`.
    pub const fn emission_interval_nanos(self) -> u64 {
        let window = self.window_seconds as u64 * NANOS_PER_SEC;
        let limit = if self.limit == 0 {
            1
        } else {
            self.limit as u64
        };
        let t = window.div_ceil(limit);
        if t == 0 {
            1
        } else {
            t
        }
    }

    /// GCRA's tolerance `τ = limit × T`: the most debt a bucket may carry,
    /// i.e. the time a full burst takes to refill (one window, rounded up).
    const fn capacity_nanos(self) -> u64 {
        (self.limit as u64).saturating_mul(self.emission_interval_nanos())
    }
}

/// What is stored per key: the TAT, and the emission interval it was charged
/// at, so that a changed rule can convert the debt without losing cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct State {
    /// Theoretical arrival time (nanoseconds on the caller's monotonic clock):
    /// the instant at which the bucket is full again. `tat <= now` is a full
    /// bucket, exactly like an absent entry.
    pub(super) tat: u64,
    /// `T` of the rule the last consuming call was charged under: the debt
    /// drains at one cell per `interval` until the next consuming call.
    pub(super) interval: u64,
}

/// One bucket's part of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketOutcome {
    /// Whether this bucket alone lets the call through. In a call denied by
    /// another bucket this can be `true` while nothing was consumed here.
    pub allowed: bool,
    /// The rule's limit, echoed so the answer is self-describing.
    pub limit: u32,
    /// Whole cells left after this call as answered (floor): after
    /// consumption when the call is allowed (or would be, in a dry run),
    /// unchanged when the call is denied, since a denied call consumes nothing.
    pub remaining: u32,
    /// Milliseconds (rounded up) until this bucket would let the same call
    /// through: `Some(0)` when it does now, `None` when it never will because
    /// the cost exceeds the limit (waiting does not help; the caller must
    /// lower its cost or the project its limit).
    pub retry_after_ms: Option<u64>,
    /// Milliseconds (rounded up) until this bucket is full again, counted from
    /// the state this call leaves behind. `0` means full now.
    pub reset_after_ms: u64,
}

impl BucketOutcome {
    /// Placeholder for unused slots of the fixed-size outcome array: all
    /// fields zero (`None` included), so filling the array is a memset.
    pub(super) const EMPTY: Self = Self {
        allowed: false,
        limit: 0,
        remaining: 0,
        retry_after_ms: None,
        reset_after_ms: 0,
    };
}

/// Decides one bucket. Returns the outcome and, when the call is allowed and
/// costs something, the state to store if the whole call commits.
///
/// Inlined so its answer stays in registers instead of being written to and
/// read back from the stack at every bucket.
#[inline(always)]
pub(super) fn evaluate(
    stored: Option<State>,
    rule: Rule,
    cost: u32,
    now: u64,
) -> (BucketOutcome, Option<State>) {
    let t = rule.emission_interval_nanos();
    let capacity = rule.capacity_nanos();
    let debt = match stored {
        Some(s) if s.tat > now => rescale(s.tat - now, s.interval, t),
        _ => 0,
    };
    let outcome = |allowed, debt_left: u64, retry_after_ms| BucketOutcome {
        allowed,
        limit: rule.limit,
        remaining: whole_cells(capacity.saturating_sub(debt_left), t, rule.limit),
        retry_after_ms,
        reset_after_ms: ceil_ms(debt_left),
    };
    if cost == 0 {
        return (outcome(true, debt, Some(0)), None);
    }
    if cost > rule.limit {
        return (outcome(false, debt, None), None);
    }
    // cost ≤ limit, so cost × T ≤ τ: no overflow.
    let after = debt.saturating_add(u64::from(cost) * t);
    if after <= capacity {
        let next = State {
            tat: now.saturating_add(after),
            interval: t,
        };
        (outcome(true, after, Some(0)), Some(next))
    } else {
        // The call fits once enough debt has drained for `after` to reach τ.
        (outcome(false, debt, Some(ceil_ms(after - capacity))), None)
    }
}

/// Converts a debt charged at interval `from` into interval `to`, keeping the
/// number of cells: `debt × to / from`, rounded up so a rule change never
/// frees a fraction of a cell. This is what "a changed limit keeps its
/// counter" means here.
fn rescale(debt: u64, from: u64, to: u64) -> u64 {
    if from == to || from == 0 {
        return debt;
    }
    let cells_in_to = (u128::from(debt) * u128::from(to)).div_ceil(u128::from(from));
    u64::try_from(cells_in_to).unwrap_or(u64::MAX)
}

/// Whole cells in `nanos` at `t` nanoseconds per cell; never above `limit`
/// (which it cannot exceed anyway, since `nanos ≤ τ = limit × T`).
fn whole_cells(nanos: u64, t: u64, limit: u32) -> u32 {
    u32::try_from(nanos / t).unwrap_or(limit).min(limit)
}

/// Nanoseconds to milliseconds, rounded up: a client that waits the answered
/// time must not arrive a fraction of a millisecond too early.
fn ceil_ms(nanos: u64) -> u64 {
    nanos.div_ceil(NANOS_PER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = NANOS_PER_SEC;

    #[test]
    fn emission_interval_is_window_over_limit_rounded_up() {
        assert_eq!(Rule::new(10, 60).emission_interval_nanos(), 6 * SEC);
        assert_eq!(
            Rule::new(7, 60).emission_interval_nanos(),
            (60 * SEC).div_ceil(7)
        );
        assert_eq!(Rule::new(0, 60).emission_interval_nanos(), 60 * SEC);
        assert_eq!(Rule::new(10, 0).emission_interval_nanos(), 1);
        let huge = Rule::new(u32::MAX, u32::MAX);
        assert!(huge.capacity_nanos() >= u64::from(u32::MAX) * SEC);
    }

    #[test]
    fn fresh_bucket_allows_and_reports_what_is_left() {
        let (o, next) = evaluate(None, Rule::new(10, 60), 3, 1_000);
        assert!(o.allowed);
        assert_eq!(
            (o.remaining, o.retry_after_ms, o.reset_after_ms),
            (7, Some(0), 18_000)
        );
        assert_eq!(
            next,
            Some(State {
                tat: 1_000 + 18 * SEC,
                interval: 6 * SEC
            })
        );
    }

    #[test]
    fn expired_state_is_a_full_bucket() {
        let old = State {
            tat: 5 * SEC,
            interval: 6 * SEC,
        };
        assert_eq!(
            evaluate(Some(old), Rule::new(10, 60), 1, 5 * SEC),
            evaluate(None, Rule::new(10, 60), 1, 5 * SEC)
        );
    }

    #[test]
    fn denial_says_when_the_call_fits() {
        // 9 of 10 spent; a cost of 3 needs 2 more cells to drain: 12 s.
        let s = State {
            tat: 54 * SEC,
            interval: 6 * SEC,
        };
        let (o, next) = evaluate(Some(s), Rule::new(10, 60), 3, 0);
        assert!(!o.allowed && next.is_none());
        assert_eq!(
            (o.remaining, o.retry_after_ms, o.reset_after_ms),
            (1, Some(12_000), 54_000)
        );
    }

    #[test]
    fn cost_above_limit_never_fits() {
        let (o, next) = evaluate(None, Rule::new(10, 60), 11, 0);
        assert!(!o.allowed && next.is_none());
        assert_eq!((o.remaining, o.retry_after_ms), (10, None));
        let (o, _) = evaluate(None, Rule::new(0, 60), 1, 0);
        assert_eq!((o.allowed, o.remaining, o.retry_after_ms), (false, 0, None));
    }

    #[test]
    fn cost_zero_is_a_query_even_over_capacity() {
        // 5 cells charged at limit 10, looked at under limit 3: over capacity,
        // yet a cost-0 query is answered, not denied.
        let s = State {
            tat: 30 * SEC,
            interval: 6 * SEC,
        };
        let (o, next) = evaluate(Some(s), Rule::new(3, 60), 0, 0);
        assert_eq!(
            (o.allowed, o.remaining, o.retry_after_ms, o.reset_after_ms),
            (true, 0, Some(0), 100_000)
        );
        assert!(next.is_none());
    }

    #[test]
    fn rescale_keeps_cells_and_rounds_up() {
        assert_eq!(rescale(30 * SEC, 6 * SEC, 3 * SEC), 15 * SEC);
        assert_eq!(rescale(1, 3, 2), 1);
        assert_eq!(rescale(u64::MAX, 1, u64::MAX), u64::MAX);
    }

    #[test]
    fn arithmetic_saturates_at_the_end_of_time() {
        let rule = Rule::new(u32::MAX, u32::MAX);
        let (o, next) = evaluate(None, rule, u32::MAX, u64::MAX - 1);
        assert!(o.allowed);
        assert_eq!(next.map(|s| s.tat), Some(u64::MAX));
        let s = State {
            tat: u64::MAX,
            interval: 1,
        };
        let (o, _) = evaluate(Some(s), rule, 1, 0);
        assert!(!o.allowed);
    }
}
