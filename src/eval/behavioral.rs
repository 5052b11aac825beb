//! Behavioral leaves (SEMANTICS §C.3) over one person's time-ordered events: each window is a
//! binary search on the timestamps, then a scan of the slice in it.

use crate::compile::{BehaviorKind, BehaviorTest};
use crate::data::Events;
use crate::intern::Sym;
use crate::time::{forward, Micros};

use super::eval_prop;

/// Index of the first event with timestamp > `t`.
#[inline]
fn after(ts: &[Micros], t: Micros) -> usize {
    ts.partition_point(|&x| x <= t)
}

/// Index of the first event with timestamp ≥ `t`.
#[inline]
fn at_or_after(ts: &[Micros], t: Micros) -> usize {
    ts.partition_point(|&x| x < t)
}

struct Matcher<'a, 'b> {
    test: &'a BehaviorTest,
    ev: &'a Events<'a>,
    times: &'a [Micros],
    buf: &'b mut String,
}

impl Matcher<'_, '_> {
    /// Does event `i` match the leaf's event name and every event filter?
    #[inline]
    fn is_match(&mut self, i: usize) -> bool {
        self.ev.name[i] == self.test.event
            && (self.test.filters.is_empty()
                || self
                    .test
                    .filters
                    .iter()
                    .all(|f| eval_prop(f, self.ev.props(i), self.times, self.buf)))
    }

    fn any(&mut self, lo: usize, hi: usize) -> bool {
        (lo..hi).any(|i| self.is_match(i))
    }

    /// Counts up to `cap` matches (enough to decide a comparison against `cap - 1`).
    fn count_capped(&mut self, lo: usize, hi: usize, cap: u64) -> u64 {
        let mut c = 0;
        for i in lo..hi {
            if self.is_match(i) {
                c += 1;
                if c >= cap {
                    break;
                }
            }
        }
        c
    }
}

/// Evaluates a behavioral leaf (before its `negation`).
pub(crate) fn eval(
    test: &BehaviorTest,
    ev: &Events<'_>,
    times: &[Micros],
    now: Micros,
    buf: &mut String,
) -> bool {
    if test.event == Sym::ABSENT || ev.ts.is_empty() {
        return false;
    }
    let ts = ev.ts;
    let mut m = Matcher {
        test,
        ev,
        times,
        buf,
    };
    let slot = |s: u32| times[s as usize];
    match test.kind {
        BehaviorKind::Performed { since } => {
            // since < ts < now, both strict.
            m.any(after(ts, slot(since)), at_or_after(ts, now))
        }
        BehaviorKind::Multiple { since, op, value } => {
            let (lo, hi) = (after(ts, slot(since)), at_or_after(ts, now));
            // Counting past value + 1 cannot change any comparison.
            let c = m.count_capped(lo, hi, value.saturating_add(1));
            c >= 1 && op.test(c, value)
        }
        BehaviorKind::FirstTime { start } => {
            // The first matching event ever must lie in [start, now).
            let first = (0..ts.len()).find(|&i| m.is_match(i));
            first.is_some_and(|i| slot(start) <= ts[i] && ts[i] < now)
        }
        BehaviorKind::Stopped { start, seq } => {
            // Some in (T, S], none in (S, now].
            let (t, s) = (slot(start), slot(seq));
            let (a, b, c) = (after(ts, t), after(ts, s), after(ts, now));
            m.any(a, b.max(a)) && !m.any(b, c)
        }
        BehaviorKind::Restarted { start, seq } => {
            // Some at or before T, none in (T, S], some in (S, now].
            let (t, s) = (slot(start), slot(seq));
            let (a, b, c) = (after(ts, t), after(ts, s), after(ts, now));
            m.any(0, a) && !m.any(a, b.max(a)) && m.any(b.max(a), c)
        }
        BehaviorKind::Sequence {
            start,
            seq_event,
            within,
        } => {
            if seq_event == Sym::ABSENT {
                return false;
            }
            let (lo, hi) = (after(ts, slot(start)), after(ts, now));
            // Two pointers: for each first step e0 (in time order), the earliest second-step
            // event strictly after it is the only candidate that matters.
            let mut j = lo;
            for i in lo..hi {
                if !m.is_match(i) {
                    continue;
                }
                let t0 = ts[i];
                while j < hi && (ts[j] <= t0 || ev.name[j] != seq_event) {
                    j += 1;
                }
                if j >= hi {
                    return false;
                }
                if ts[j] <= forward(t0, within.n, within.unit) {
                    return true;
                }
            }
            false
        }
        BehaviorKind::Regularly {
            bounds,
            op,
            value,
            min_periods,
            total,
        } => {
            // Period k covers (back(time·(k+1)), back(time·k)], k = 0 ending at now.
            let bound = |k: u64| {
                if k == 0 {
                    now
                } else {
                    times[(bounds as u64 + k - 1) as usize]
                }
            };
            let (lo, hi) = (after(ts, bound(total)), after(ts, now));
            let mut any = false;
            let mut satisfied = 0u64;
            let mut k = total - 1; // current period, oldest first
            let mut count = 0u64;
            for (i, &t) in ts.iter().enumerate().take(hi).skip(lo) {
                if !m.is_match(i) {
                    continue;
                }
                any = true;
                while k > 0 && t > bound(k) {
                    satisfied += op.test(count, value) as u64;
                    count = 0;
                    k -= 1;
                }
                count += 1;
            }
            if !any {
                return false;
            }
            // Close the current period and every later one (empty).
            satisfied += op.test(count, value) as u64;
            satisfied += k * op.test(0, value) as u64;
            satisfied >= min_periods
        }
    }
}
