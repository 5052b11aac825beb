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

/// The evidence behind a behavioral leaf's result: its windows as instants, the matching events
/// counted in them (with the first and last counted), the pair that satisfied a sequence and the
/// periods of a `regularly` leaf. Same window arithmetic as [`eval`].
pub(crate) fn evidence(
    test: &BehaviorTest,
    ev: &Events<'_>,
    times: &[Micros],
    now: Micros,
    buf: &mut String,
) -> serde_json::Value {
    use crate::time::format_micros as t;
    use serde_json::json;
    let ts = ev.ts;
    let mut m = Matcher {
        test,
        ev,
        times,
        buf,
    };
    let slot = |s: u32| times[s as usize];
    // Matching events in [lo, hi): count, first, last.
    fn counted(m: &mut Matcher<'_, '_>, ts: &[Micros], lo: usize, hi: usize) -> serde_json::Value {
        let hits: Vec<usize> = (lo..hi.max(lo)).filter(|&i| m.is_match(i)).collect();
        serde_json::json!({
            "matching_events": hits.len(),
            "first": hits.first().map(|&i| crate::time::format_micros(ts[i])),
            "last": hits.last().map(|&i| crate::time::format_micros(ts[i])),
        })
    }
    let window = |from: Micros, from_incl: bool, to: Micros, to_incl: bool| json!({"from": t(from), "from_inclusive": from_incl, "to": t(to), "to_inclusive": to_incl});
    let merge = |mut a: serde_json::Value, b: serde_json::Value| {
        if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
            a.extend(b);
        }
        a
    };
    match test.kind {
        BehaviorKind::Performed { since } | BehaviorKind::Multiple { since, .. } => {
            let c = counted(&mut m, ts, after(ts, slot(since)), at_or_after(ts, now));
            merge(json!({"window": window(slot(since), false, now, false)}), c)
        }
        BehaviorKind::FirstTime { start } => {
            let first_ever = (0..ts.len()).find(|&i| m.is_match(i)).map(|i| t(ts[i]));
            json!({"window": window(slot(start), true, now, false), "first_ever": first_ever})
        }
        BehaviorKind::Stopped { start, seq } | BehaviorKind::Restarted { start, seq } => {
            let (a, b, c) = (after(ts, slot(start)), after(ts, slot(seq)), after(ts, now));
            let before = matches!(test.kind, BehaviorKind::Restarted { .. })
                .then(|| counted(&mut m, ts, 0, a));
            let mut e = json!({
                "window": window(slot(start), false, slot(seq), true),
                "in_window": counted(&mut m, ts, a, b.max(a)),
                "recent_window": window(slot(seq), false, now, true),
                "in_recent_window": counted(&mut m, ts, b.max(a), c),
            });
            if let (Some(before), Some(obj)) = (before, e.as_object_mut()) {
                obj.insert("before_window".into(), before);
            }
            e
        }
        BehaviorKind::Sequence {
            start,
            seq_event,
            within,
        } => {
            let (lo, hi) = (after(ts, slot(start)), after(ts, now));
            let mut pair = None;
            let mut j = lo;
            for i in lo..hi {
                if !m.is_match(i) {
                    continue;
                }
                while j < hi && (ts[j] <= ts[i] || ev.name[j] != seq_event) {
                    j += 1;
                }
                if j >= hi {
                    break;
                }
                if ts[j] <= forward(ts[i], within.n, within.unit) {
                    pair = Some(json!([t(ts[i]), t(ts[j])]));
                    break;
                }
            }
            let c = counted(&mut m, ts, lo, hi);
            merge(
                json!({"window": window(slot(start), false, now, true), "pair": pair}),
                c,
            )
        }
        BehaviorKind::Regularly {
            bounds,
            op,
            value,
            total,
            ..
        } => {
            let bound = |k: u64| {
                if k == 0 {
                    now
                } else {
                    times[(bounds as u64 + k - 1) as usize]
                }
            };
            let periods: Vec<serde_json::Value> = (0..total)
                .map(|k| {
                    let (from, to) = (bound(k + 1), bound(k));
                    let n = (after(ts, from)..after(ts, to)).filter(|&i| m.is_match(i)).count() as u64;
                    json!({"from": t(from), "to": t(to), "matching_events": n, "satisfied": op.test(n, value)})
                })
                .collect();
            let satisfied = periods.iter().filter(|p| p["satisfied"] == true).count();
            let c = counted(&mut m, ts, after(ts, bound(total)), after(ts, now));
            merge(
                json!({"window": window(bound(total), false, now, true), "periods": periods, "satisfied_periods": satisfied}),
                c,
            )
        }
    }
}
