//! Behavioral leaves (SEMANTICS §C.3) over one person's time-ordered events: each window is a
//! binary search on the timestamps, then a scan of the slice in it.

use crate::compile::{BehaviorKind, BehaviorTest};
use crate::data::{EventColumn, Events};
use crate::intern::Sym;
use crate::time::{forward, Micros};

use super::eval_value;

/// Index of the first event with timestamp > `t`. A bisection, whatever the run's length: the
/// standard one is branch-free, and on this store (one name's runs read front to back) it beat a
/// vectorised count even on runs of a few events (the count of 64-bit keys has no SIMD compare on
/// baseline x86-64).
#[inline]
fn after(ts: &[Micros], t: Micros) -> usize {
    ts.partition_point(|&x| x <= t)
}

/// Index of the first event with timestamp ≥ `t`.
#[inline]
fn at_or_after(ts: &[Micros], t: Micros) -> usize {
    ts.partition_point(|&x| x < t)
}

/// [`after`] for each of the bounds `t`, the K bisections in lockstep. One bisection is a chain
/// of dependent loads (each step's index waits on the previous step's compare); K of them one
/// after another wait K times as long, while K chains advanced step by step overlap in the CPU.
/// A leaf's windows (since, seq, now, a `regularly` leaf's periods) all bisect the same run.
#[inline]
fn after_each<const K: usize>(ts: &[Micros], t: [Micros; K]) -> [usize; K] {
    let mut base = [0usize; K];
    if ts.is_empty() {
        return base;
    }
    let mut size = ts.len();
    while size > 1 {
        let half = size / 2;
        for k in 0..K {
            let mid = base[k] + half;
            // A conditional move, not a branch (whose outcome is a coin toss): written as
            // arithmetic or as `if`, LLVM turns this into jumps.
            base[k] = std::hint::select_unpredictable(ts[mid] <= t[k], mid, base[k]);
        }
        size -= half;
    }
    for k in 0..K {
        base[k] += (ts[base[k]] <= t[k]) as usize;
    }
    base
}

/// The bound `b` with `after(ts, b) == at_or_after(ts, t)`: t − 1 on integer instants. For
/// `t = i64::MIN` (nothing lies before it) the caller takes 0 instead (see [`excl`]).
#[inline]
fn before(t: Micros) -> Micros {
    t.wrapping_sub(1)
}

/// `pos`, computed by [`after`] with [`before`]`(t)`, as [`at_or_after`]`(ts, t)`: 0 when `t` is
/// `i64::MIN` (where `before` wrapped).
#[inline]
fn excl(pos: usize, t: Micros) -> usize {
    if t == Micros::MIN {
        0
    } else {
        pos
    }
}

/// A leaf's event filter over a dataset's column of its key, decided once per distinct value:
/// per event, one code lookup instead of an operator call. The memo is filled lazily (only the
/// values the leaf's events carry are tested), so one batch pass tests each distinct value once.
pub(crate) struct CodeFilter<'a> {
    column: Option<&'a EventColumn>,
    /// The filter's result for an event without the key.
    missing: bool,
    /// Per dictionary code: 0 = not yet tested, 1 = false, 2 = true.
    memo: Vec<u8>,
}

impl<'a> CodeFilter<'a> {
    /// Filters of `test` over `columns` (a dataset's event columns, by key), evaluated at the
    /// instant `times` is bound to.
    pub(crate) fn for_leaf(
        test: &BehaviorTest,
        columns: &'a [Option<EventColumn>],
        times: &[Micros],
        buf: &mut String,
    ) -> Vec<CodeFilter<'a>> {
        test.filters
            .iter()
            .map(|f| {
                let column = columns.get(f.key.0 as usize).and_then(Option::as_ref);
                CodeFilter {
                    column,
                    missing: eval_value(f, None, times, buf),
                    memo: vec![0; column.map_or(0, |c| c.dict.len())],
                }
            })
            .collect()
    }
}

/// Tests the leaf's event filters on the events of its name, `base..` in the person's events.
struct Matcher<'a, 'b, 'c> {
    test: &'a BehaviorTest,
    ev: &'a Events<'a>,
    base: usize,
    times: &'a [Micros],
    buf: &'b mut String,
    /// The same filters on dictionary codes, when the events live in a dataset's columns.
    codes: Option<&'b mut [CodeFilter<'c>]>,
}

impl Matcher<'_, '_, '_> {
    /// Does event `base + i` (of the leaf's name) meet every event filter?
    #[inline]
    fn is_match(&mut self, i: usize) -> bool {
        if self.test.filters.is_empty() {
            return true;
        }
        if let (Some(codes), Some(pos)) = (
            self.codes.as_deref_mut(),
            self.ev.store_position(self.base + i),
        ) {
            return self
                .test
                .filters
                .iter()
                .zip(codes.iter_mut())
                .all(|(f, c)| {
                    let Some(code) = c.column.and_then(|col| col.code(pos)) else {
                        return c.missing;
                    };
                    match c.memo[code as usize] {
                        0 => {
                            let v = c.column.and_then(|col| col.dict.get(code as usize));
                            let r = eval_value(f, v, self.times, self.buf);
                            c.memo[code as usize] = 1 + r as u8;
                            r
                        }
                        m => m == 2,
                    }
                });
        }
        self.test.filters.iter().all(|f| {
            let v = self.ev.get(self.base + i, f.key);
            eval_value(f, v, self.times, self.buf)
        })
    }

    /// Is any of positions `lo..hi` a match? Without filters, a comparison of indices.
    fn any(&mut self, lo: usize, hi: usize) -> bool {
        if self.test.filters.is_empty() {
            return hi > lo;
        }
        (lo..hi).any(|i| self.is_match(i))
    }

    /// Counts matches in `lo..hi`, stopping at `cap` (enough to decide a comparison against
    /// `cap - 1`). Without filters, a subtraction.
    fn count_capped(&mut self, lo: usize, hi: usize, cap: u64) -> u64 {
        if self.test.filters.is_empty() {
            return hi.saturating_sub(lo) as u64;
        }
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

    fn count(&mut self, lo: usize, hi: usize) -> u64 {
        self.count_capped(lo, hi, u64::MAX)
    }
}

/// How many window bounds of a `regularly` leaf are bisected in lockstep.
const PERIODS: usize = 8;

/// The upper bound of period `k` of a `regularly` leaf: now for k = 0, else back(time·k), held in
/// the slots starting at `bounds`.
#[inline]
fn period_bound(times: &[Micros], bounds: u32, now: Micros, k: u64) -> Micros {
    if k == 0 {
        now
    } else {
        times[(bounds as u64 + k - 1) as usize]
    }
}

/// Evaluates a behavioral leaf (before its `negation`). Every type reads only the events of its
/// name (and, for sequences, of the second step's name), each a time-ordered run, so windows are
/// binary searches and, without event filters, counts are index differences.
pub(crate) fn eval(
    test: &BehaviorTest,
    ev: &Events<'_>,
    times: &[Micros],
    now: Micros,
    buf: &mut String,
) -> bool {
    if test.event == Sym::ABSENT {
        return false;
    }
    eval_range(test, ev, ev.name_range(test.event), times, now, buf, None)
}

/// [`eval`] with the positions of the leaf's event name already known.
pub(crate) fn eval_range(
    test: &BehaviorTest,
    ev: &Events<'_>,
    range: std::ops::Range<usize>,
    times: &[Micros],
    now: Micros,
    buf: &mut String,
    codes: Option<&mut [CodeFilter<'_>]>,
) -> bool {
    if range.is_empty() {
        return false;
    }
    let ts = &ev.ts[range.clone()];
    if let Some(plain) = Plain::of(test, times, now) {
        return plain.hit_call(ts);
    }
    let mut m = Matcher {
        test,
        ev,
        base: range.start,
        times,
        buf,
        codes,
    };
    let slot = |s: u32| times[s as usize];
    match test.kind {
        BehaviorKind::Performed { since } => {
            // since < ts < now, both strict.
            let [lo, hi] = after_each(ts, [slot(since), before(now)]);
            m.any(lo, excl(hi, now))
        }
        BehaviorKind::Multiple { since, op, value } => {
            let [lo, hi] = after_each(ts, [slot(since), before(now)]);
            let hi = excl(hi, now);
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
            // Some in (T, S], none in (S, now]. With calendar units S can lie before T (the
            // seq-vs-time validation uses fixed seconds): (T, S] is then empty, so never true.
            let [a, b, c] = after_each(ts, [slot(start), slot(seq), now]);
            m.any(a, b) && !m.any(b, c)
        }
        BehaviorKind::Restarted { start, seq } => {
            // Some at or before T, none in (T, S], some in (S, now] — literally, for every order
            // of S and T: when S < T the gap (T, S] is empty and an event in (S, T] counts both
            // as "at or before T" and as recent.
            let [a, b, c] = after_each(ts, [slot(start), slot(seq), now]);
            m.any(0, a) && !m.any(a, b) && m.any(b, c)
        }
        BehaviorKind::Sequence {
            start,
            seq_event,
            within,
        } => sequence_pair(&mut m, ts, ev, slot(start), now, seq_event, within).is_some(),
        BehaviorKind::Regularly { .. } => {
            Periods::of(test, times, now).is_some_and(|p| p.matched(&mut m, ts))
        }
    }
}

/// A `regularly` leaf's parameters, its period bounds read from the slots bound at `now`.
struct Periods<'a> {
    times: &'a [Micros],
    bounds: u32,
    now: Micros,
    op: crate::ast::CountOp,
    value: u64,
    min_periods: u64,
    total: u64,
}

impl<'a> Periods<'a> {
    /// The leaf's periods, if it is a `regularly` leaf.
    fn of(test: &BehaviorTest, times: &'a [Micros], now: Micros) -> Option<Periods<'a>> {
        match test.kind {
            BehaviorKind::Regularly {
                bounds,
                op,
                value,
                min_periods,
                total,
            } => Some(Periods {
                times,
                bounds,
                now,
                op,
                value,
                min_periods,
                total,
            }),
            _ => None,
        }
    }

    /// The upper bound of period `k` (now for k = 0); period k covers
    /// (bound(k + 1), bound(k)].
    #[inline]
    fn bound(&self, k: u64) -> Micros {
        period_bound(self.times, self.bounds, self.now, k)
    }

    /// The leaf over a run with event filters: period by period from now back, stopping as
    /// soon as the answer is known. Period k ends where period k - 1 starts; the periods'
    /// starts are bisected [`PERIODS`] at a time, in lockstep, as the loop reaches them.
    fn matched(&self, m: &mut Matcher<'_, '_, '_>, ts: &[Micros]) -> bool {
        let total = self.total;
        let [top, first] = after_each(ts, [self.now, self.bound(total)]);
        if !m.any(first, top) {
            return false;
        }
        let mut starts = [0usize; PERIODS];
        let (mut satisfied, mut hi) = (0u64, top);
        for k in 0..total {
            if satisfied + (total - k) < self.min_periods {
                return false;
            }
            let j = (k % PERIODS as u64) as usize;
            if j == 0 {
                let t = std::array::from_fn(|i| self.bound((k + 1 + i as u64).min(total)));
                starts = after_each(ts, t);
            }
            // Within the period's end, as a bisection of ts[..hi] would find it.
            let lo = starts[j].min(hi);
            let c = m.count(lo, hi);
            satisfied += self.op.test(c, self.value) as u64;
            if satisfied >= self.min_periods {
                return true;
            }
            hi = lo;
        }
        false
    }
}

/// A leaf without event filters whose counts are differences of window positions (not first
/// time or sequence, which walk events; not a `regularly` leaf of [`PERIODS`] periods or more),
/// its bounds resolved at `now` once: a batch decides it per run with [`Plain::hit`].
#[derive(Clone, Copy)]
pub(crate) enum Plain {
    /// Some in (since, now).
    Performed { since: Micros, now: Micros },
    /// `count op value`, count ≥ 1, over (since, now).
    Multiple {
        since: Micros,
        now: Micros,
        op: crate::ast::CountOp,
        value: u64,
    },
    /// Some in (start, seq], none in (seq, now].
    Stopped { bounds: [Micros; 3] },
    /// Some at or before start, none in (start, seq], some in (seq, now].
    Restarted { bounds: [Micros; 3] },
    /// `bounds[0]` = now and `bounds[k]` = period k's start for k = 1..=total (unused slots
    /// `i64::MIN`).
    Regularly {
        bounds: [Micros; PERIODS],
        total: u64,
        op: crate::ast::CountOp,
        value: u64,
        min_periods: u64,
    },
}

impl Plain {
    /// The leaf as a [`Plain`] one, if it is one.
    #[inline]
    pub(crate) fn of(test: &BehaviorTest, times: &[Micros], now: Micros) -> Option<Plain> {
        if !test.filters.is_empty() {
            return None;
        }
        let slot = |s: u32| times[s as usize];
        Some(match test.kind {
            BehaviorKind::Performed { since } => Plain::Performed {
                since: slot(since),
                now,
            },
            BehaviorKind::Multiple { since, op, value } => Plain::Multiple {
                since: slot(since),
                now,
                op,
                value,
            },
            BehaviorKind::Stopped { start, seq } => Plain::Stopped {
                bounds: [slot(start), slot(seq), now],
            },
            BehaviorKind::Restarted { start, seq } => Plain::Restarted {
                bounds: [slot(start), slot(seq), now],
            },
            BehaviorKind::Regularly { total, .. } if total < PERIODS as u64 => {
                let p = Periods::of(test, times, now)?;
                Plain::Regularly {
                    bounds: std::array::from_fn(|k| {
                        if k as u64 <= total {
                            p.bound(k as u64)
                        } else {
                            Micros::MIN
                        }
                    }),
                    total,
                    op: p.op,
                    value: p.value,
                    min_periods: p.min_periods,
                }
            }
            _ => return None,
        })
    }

    /// The leaf over a run's timestamps `ts` (an empty run is false for every kind): all of
    /// its windows bisected in lockstep, the result combined without a branch on the data (a
    /// batch walks thousands of runs, and each data-dependent exit would be a mispredicted
    /// jump).
    #[inline]
    pub(crate) fn hit(&self, ts: &[Micros]) -> bool {
        match *self {
            Plain::Performed { since, now } => {
                let [lo, hi] = after_each(ts, [since, before(now)]);
                excl(hi, now) > lo
            }
            Plain::Multiple {
                since,
                now,
                op,
                value,
            } => {
                let [lo, hi] = after_each(ts, [since, before(now)]);
                let c = excl(hi, now).saturating_sub(lo) as u64;
                (c >= 1) & op.test(c, value)
            }
            Plain::Stopped { bounds } => {
                let [a, b, c] = after_each(ts, bounds);
                (b > a) & (c <= b)
            }
            Plain::Restarted { bounds } => {
                let [a, b, c] = after_each(ts, bounds);
                (a > 0) & (b <= a) & (c > b)
            }
            Plain::Regularly {
                ref bounds,
                total,
                op,
                value,
                min_periods,
            } => {
                let periods = match total {
                    // As many chains as bounds: now and each period's start.
                    0 => periods::<1>,
                    1 => periods::<2>,
                    2 => periods::<3>,
                    3 => periods::<4>,
                    4 => periods::<5>,
                    5 => periods::<6>,
                    6 => periods::<7>,
                    _ => periods::<PERIODS>,
                };
                periods(ts, bounds, op, value, min_periods)
            }
        }
    }

    /// [`Plain::hit`] as a call, keeping [`eval_range`]'s own frame to the leaves that walk
    /// events.
    #[inline(never)]
    fn hit_call(self, ts: &[Micros]) -> bool {
        self.hit(ts)
    }
}

/// A `regularly` leaf of `K - 1` periods over a run: some event in its window and at least
/// `min_periods` periods satisfied. `bounds` as in [`Plain::Regularly`]: positions of now and of
/// each period's start bisected in lockstep, period k's count the events between its start and
/// its end (the previous period's start, clamped as in [`Periods::matched`]).
#[inline]
fn periods<const K: usize>(
    ts: &[Micros],
    bounds: &[Micros; PERIODS],
    op: crate::ast::CountOp,
    value: u64,
    min_periods: u64,
) -> bool {
    let p = after_each(ts, std::array::from_fn::<Micros, K, _>(|k| bounds[k]));
    let (mut satisfied, mut hi) = (0u64, p[0]);
    for &start in &p[1..] {
        let lo = start.min(hi);
        satisfied += op.test((hi - lo) as u64, value) as u64;
        hi = lo;
    }
    (p[K - 1] < p[0]) & (satisfied >= min_periods)
}

/// The first (first step, second step) timestamps of a sequence in `(start, now]`: for each first
/// step in time order, the earliest second-step event strictly after it is the only candidate.
fn sequence_pair(
    m: &mut Matcher<'_, '_, '_>,
    ts: &[Micros],
    ev: &Events<'_>,
    start: Micros,
    now: Micros,
    seq_event: Sym,
    within: crate::ast::Span,
) -> Option<(Micros, Micros)> {
    if seq_event == Sym::ABSENT {
        return None;
    }
    let second = &ev.ts[ev.name_range(seq_event)];
    let [lo, hi] = after_each(ts, [start, now]);
    let hi2 = after(second, now);
    let mut j = 0;
    for (i, &t0) in ts.iter().enumerate().take(hi).skip(lo) {
        if !m.is_match(i) {
            continue;
        }
        while j < hi2 && second[j] <= t0 {
            j += 1;
        }
        if j >= hi2 {
            return None;
        }
        if second[j] <= forward(t0, within.n, within.unit) {
            return Some((t0, second[j]));
        }
    }
    None
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
    let range = if test.event == Sym::ABSENT {
        0..0
    } else {
        ev.name_range(test.event)
    };
    let ts = &ev.ts[range.clone()];
    let mut m = Matcher {
        test,
        ev,
        base: range.start,
        times,
        buf,
        codes: None,
    };
    let slot = |s: u32| times[s as usize];
    // Matching events in [lo, hi): count, first, last.
    fn counted(
        m: &mut Matcher<'_, '_, '_>,
        ts: &[Micros],
        lo: usize,
        hi: usize,
    ) -> serde_json::Value {
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
            let mut e = json!({
                "window": window(slot(start), false, slot(seq), true),
                "in_window": counted(&mut m, ts, a, b),
                "recent_window": window(slot(seq), false, now, true),
                "in_recent_window": counted(&mut m, ts, b, c),
            });
            if matches!(test.kind, BehaviorKind::Restarted { .. }) {
                let before = counted(&mut m, ts, 0, a);
                if let Some(obj) = e.as_object_mut() {
                    obj.insert("before_window".into(), before);
                }
            }
            e
        }
        BehaviorKind::Sequence {
            start,
            seq_event,
            within,
        } => {
            let pair = sequence_pair(&mut m, ts, ev, slot(start), now, seq_event, within)
                .map(|(a, b)| json!([t(a), t(b)]));
            let c = counted(&mut m, ts, after(ts, slot(start)), after(ts, now));
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
            let bound = |k: u64| period_bound(times, bounds, now, k);
            let periods: Vec<serde_json::Value> = (0..total)
                .map(|k| {
                    let (from, to) = (bound(k + 1), bound(k));
                    let n = m.count(after(ts, from), after(ts, to));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_bound_at_the_smallest_instant() {
        let ts = [Micros::MIN, Micros::MIN, 0];
        assert_eq!(excl(after(&ts, before(Micros::MIN)), Micros::MIN), 0);
        assert_eq!(at_or_after(&ts, Micros::MIN), 0);
        assert_eq!(excl(after(&ts, before(1)), 1), at_or_after(&ts, 1));
    }

    #[test]
    fn window_searches_agree_with_bisection_at_every_length() {
        // Runs with repeated timestamps, short (counted) and long (bisected), probed at every
        // stored instant and between them.
        for len in 0..80usize {
            let ts: Vec<Micros> = (0..len as i64).map(|i| i / 3 * 10).collect();
            for t in -5..(len as i64 / 3 * 10 + 15) {
                assert_eq!(after(&ts, t), ts.partition_point(|&x| x <= t), "{len} {t}");
                assert_eq!(
                    at_or_after(&ts, t),
                    ts.partition_point(|&x| x < t),
                    "{len} {t}"
                );
                // Lockstep: each chain as its own bisection, whatever the other bounds.
                let bounds = [t, t - 10, t + 7, Micros::MIN, Micros::MAX];
                let each = after_each(&ts, bounds);
                for (b, got) in bounds.into_iter().zip(each) {
                    assert_eq!(got, after(&ts, b), "{len} {b}");
                }
                assert_eq!(excl(after(&ts, before(t)), t), at_or_after(&ts, t));
            }
        }
    }
}
