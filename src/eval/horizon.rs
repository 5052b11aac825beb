//! Validity horizons: the earliest instant after `now` at which a person's membership can change
//! with no new event and no property change.
//!
//! Every time-dependent comparison is `x OP b(t)` for a fixed instant `x` (an event timestamp or
//! a person's date) and a bound `b(t)` that is non-decreasing in the evaluation instant `t`: `t`
//! itself, `t − span` (calendar-aware), or a relative filter date. Such a comparison can only flip
//! at the first `t` where `b(t) ≥ x` or `b(t) ≥ x + 1µs`. Those instants, over every leaf the
//! cohort reads (through references too), are the only candidates; the horizon is the first
//! candidate at which the membership actually differs, found by evaluating there.

use std::ops::ControlFlow;

use smallvec::SmallVec;

use crate::compile::{BehaviorKind, NodeKind, Program, Test, TimeExpr};
use crate::eval::person::value_date;
use crate::eval::{Scratch, Subject};
use crate::intern::Sym;
use crate::time::{back, forward, DateSpec, Micros, RelUnit, Unit, NEG_INF, POS_INF};

/// Scratch space for [`Program::next_check`].
#[derive(Debug, Default)]
pub(crate) struct HorizonBufs {
    calendar: CalMemo,
}

const DAY: i64 = 86_400_000_000;

/// The bounds each event name of a cohort is compared with ([`Program::event_checks`]).
#[derive(Default)]
pub(crate) struct EventChecks {
    /// By name: the distinct bounds, or `None` where an event filter compares a date property.
    by_name: Box<[NameBounds]>,
}

/// An event name and the bounds its events are compared with (see [`EventChecks`]).
type NameBounds = (Sym, Option<Box<[Bound]>>);

/// Memoised calendar shifts by day. A calendar shift keeps the time of day, so `back(t)` and
/// `forward(t)` are the shift of `t`'s midnight plus its time of day; a tracker asks for the same
/// few days (around now, around its persons' recent events) over and over, so a small
/// direct-mapped table of day shifts replaces most civil-date conversions.
#[derive(Debug)]
pub(crate) struct CalMemo {
    /// (day, n, unit and direction, shifted midnight); day = i64::MIN when empty.
    slots: Box<[(i64, u64, u8, Micros)]>,
}

impl Default for CalMemo {
    fn default() -> CalMemo {
        CalMemo {
            slots: vec![(i64::MIN, 0, 0, 0); 1024].into_boxed_slice(),
        }
    }
}

impl CalMemo {
    /// `forward(t, n, unit)` when `ahead`, else `back(t, n, unit)`; for calendar units.
    fn shift(&mut self, t: Micros, n: u64, unit: Unit, ahead: bool) -> Micros {
        let direct = |t| {
            if ahead {
                forward(t, n, unit)
            } else {
                back(t, n, unit)
            }
        };
        if t == NEG_INF || t == POS_INF {
            return direct(t);
        }
        let (day, tod) = (t.div_euclid(DAY), t.rem_euclid(DAY));
        let tag = (unit == Unit::Year) as u8 * 2 + ahead as u8;
        let h = (day as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(n.wrapping_mul(0x2545_f491_4f6c_dd1d))
            .wrapping_add(tag as u64);
        let slot = &mut self.slots[(h >> 54) as usize];
        let midnight = if slot.0 == day && slot.1 == n && slot.2 == tag {
            slot.3
        } else {
            let m = direct(day.saturating_mul(DAY));
            *slot = (day, n, tag, m);
            m
        };
        if midnight == NEG_INF || midnight == POS_INF {
            midnight
        } else {
            midnight + tod
        }
    }
}

/// Calendar shifts, memoised when a memo is at hand.
fn cal(memo: &mut Option<&mut CalMemo>, t: Micros, n: u64, unit: Unit, ahead: bool) -> Micros {
    match memo {
        Some(m) => m.shift(t, n, unit, ahead),
        None if ahead => forward(t, n, unit),
        None => back(t, n, unit),
    }
}

/// `n` units in µs for a unit of fixed length (`Ok(None)` when that overflows), or `Err(())`
/// for a calendar unit (months, years), whose shifts depend on the date.
fn fixed_micros(n: u64, unit: Unit) -> Result<Option<i64>, ()> {
    let secs = unit.exact_seconds().ok_or(())?;
    Ok(i64::try_from(n)
        .ok()
        .and_then(|n| n.checked_mul(secs)?.checked_mul(1_000_000)))
}

/// How many candidate instants are checked before settling for a conservative (early) answer.
const MAX_CANDIDATES: usize = 4096;

/// A bound as a function of the evaluation instant.
#[derive(Clone, Copy, PartialEq)]
enum Bound {
    Now,
    Back(u64, Unit),
    Fixed,
}

fn bound_of(t: &TimeExpr) -> Bound {
    match *t {
        TimeExpr::Back(span) => Bound::Back(span.n, span.unit),
        TimeExpr::Date(DateSpec::Absolute(_)) => Bound::Fixed,
        TimeExpr::Date(DateSpec::Relative { amount, unit }) => match unit {
            RelUnit::Hour => Bound::Back(amount as u64, Unit::Hour),
            RelUnit::Day => Bound::Back(amount as u64, Unit::Day),
            RelUnit::Week => Bound::Back(amount as u64, Unit::Week),
            RelUnit::Month => Bound::Back(amount as u64, Unit::Month),
            RelUnit::Year => Bound::Back(amount as u64, Unit::Year),
        },
    }
}

/// What a time comparison compares with its bound: one instant (a person's date, an event
/// property's date), or every event of a time-ordered run.
#[derive(Clone, Copy)]
enum Comparand<'a> {
    Instant(Micros),
    Run(&'a [Micros]),
}

/// The earliest instant after `now` at which a comparison of any event of `run` (time-ordered)
/// with `b(t)` can flip: the minimum over the run of [`crossings`], by binary search.
fn next_crossing(b: Bound, run: &[Micros], now: Micros, memo: &mut CalMemo) -> Option<Micros> {
    // The first event e whose crossings e + Δ and e + Δ + 1µs can lie after now.
    let linear = |delta: i64| {
        let lim = now.checked_sub(delta)?;
        let i = run.partition_point(|&e| e < lim);
        let t = run.get(i)?.checked_add(delta)?;
        Some(if t > now { t } else { now.saturating_add(1) })
    };
    match b {
        Bound::Fixed => None,
        Bound::Now => linear(0),
        Bound::Back(n, unit) => match fixed_micros(n, unit) {
            Ok(delta) => linear(delta?),
            Err(()) => {
                // Crossings of e lie within six days of forward(e), which grows with e.
                let start = run.partition_point(|&e| {
                    memo.shift(e, n, unit, true).saturating_add(6 * DAY) <= now
                });
                let mut best: Option<Micros> = None;
                for &e in &run[start..] {
                    if best
                        .is_some_and(|b| memo.shift(e, n, unit, true).saturating_sub(6 * DAY) > b)
                    {
                        break;
                    }
                    if let Some(t) = first_crossing_after(b, e, now, memo) {
                        if best.is_none_or(|x| t < x) {
                            best = Some(t);
                        }
                    }
                }
                best
            }
        },
    }
}

/// The earliest of [`crossings`] after `now`, without listing them: the walk stops at the first
/// one after `now` — for a recent event, at once.
fn first_crossing_after(b: Bound, x: Micros, now: Micros, memo: &mut CalMemo) -> Option<Micros> {
    let shift = |t, n, unit, ahead| memo.shift(t, n, unit, ahead);
    each_crossing(b, x, shift, |t| {
        if t > now {
            ControlFlow::Break(t)
        } else {
            ControlFlow::Continue(())
        }
    })
    .break_value()
}

/// Instants at which a comparison of `x` (or `x + 1µs`) with `b(t)` can flip, pushed to `out`
/// in increasing order (see [`each_crossing`]).
///
/// `t` and `t − n·(exact unit)` move in lockstep, so there the flip is one instant. Calendar
/// months are not monotone: with end-of-month clamping, `t − 1 month` for Mar 29, 30 and 31 is
/// Feb 29 each time (at the same time of day), and jumps back at each midnight where clamping
/// starts. So around the approximate preimage of `x`, every midnight is a candidate, and within
/// each day (where `b(t)` is `t` minus a constant) the instant `b(t)` reaches `x` or `x + 1µs`.
fn crossings(b: Bound, x: Micros, out: &mut Vec<Micros>, memo: &mut Option<&mut CalMemo>) {
    let shift = |t, n, unit, ahead| cal(memo, t, n, unit, ahead);
    let _: ControlFlow<()> = each_crossing(b, x, shift, |t| {
        out.push(t);
        ControlFlow::Continue(())
    });
}

/// Calls `f` with each instant of [`crossings`], in increasing order (day by day, and within a
/// day from its midnight on), until `f` breaks. `shift(t, n, unit, ahead)` is the calendar shift
/// (`forward` when `ahead`, else `back`), memoised or not.
fn each_crossing<R>(
    b: Bound,
    x: Micros,
    mut shift: impl FnMut(Micros, u64, Unit, bool) -> Micros,
    mut f: impl FnMut(Micros) -> ControlFlow<R>,
) -> ControlFlow<R> {
    match b {
        Bound::Fixed => {}
        Bound::Now => {
            f(x)?;
            f(x.saturating_add(1))?;
        }
        Bound::Back(n, unit) => match fixed_micros(n, unit) {
            Ok(delta) => {
                for target in [x, x.saturating_add(1)] {
                    if let Some(t) = delta.and_then(|delta| target.checked_add(delta)) {
                        f(t)?;
                    }
                }
            }
            Err(()) => {
                let approx = shift(x, n, unit, true);
                if approx == POS_INF || approx == NEG_INF {
                    return ControlFlow::Continue(());
                }
                let first_day = approx.div_euclid(DAY) - 5;
                for d in first_day..=first_day + 10 {
                    let Some(midnight) = d.checked_mul(DAY) else {
                        continue;
                    };
                    f(midnight)?;
                    let b0 = shift(midnight, n, unit, false);
                    if b0 == NEG_INF {
                        continue;
                    }
                    for target in [x, x.saturating_add(1)] {
                        let offset = target.saturating_sub(b0);
                        if (0..DAY).contains(&offset) {
                            f(midnight + offset)?;
                        }
                    }
                }
            }
        },
    }
    ControlFlow::Continue(())
}

impl Program {
    /// Calls `f` with every time-dependent leaf of cohort `c` and of the cohorts it references,
    /// each cohort once (from the leaves found at compile time). Iterative.
    fn for_each_timed_leaf(&self, c: usize, f: &mut dyn FnMut(&NodeKind)) {
        let own = &self.reads[c];
        if own.refs.is_empty() {
            own.timed.iter().for_each(f);
            return;
        }
        let mut visited: SmallVec<[u32; 8]> = SmallVec::new();
        let mut stack: SmallVec<[u32; 8]> = smallvec::smallvec![c as u32];
        while let Some(c) = stack.pop() {
            if visited.contains(&c) {
                continue;
            }
            visited.push(c);
            let t = &self.reads[c as usize];
            t.timed.iter().for_each(&mut *f);
            stack.extend_from_slice(&t.refs);
        }
    }

    /// Calls `f` with every time-dependent comparison of cohort `c` for the subject: its bound and
    /// what it compares with. Also collects the time slots those comparisons read, when asked.
    /// With `only` = (name, k), just the comparisons of event `k` of the subject's events (of
    /// that name): what that one event adds.
    fn for_each_comparison(
        &self,
        c: usize,
        s: &Subject<'_>,
        only: Option<(Sym, usize)>,
        mut slots: Option<&mut Vec<u32>>,
        f: &mut dyn FnMut(Bound, Comparand<'_>),
    ) {
        self.for_each_timed_leaf(c, &mut |kind| match *kind {
            NodeKind::Prop(_) if only.is_some() => {}
            NodeKind::Prop(i) => {
                let t = &self.props[i as usize];
                if let Test::Date(_, slot) = t.test {
                    slots.iter_mut().for_each(|v| v.push(slot));
                    if let Some(d) = s.props.get(t.key).and_then(value_date) {
                        f(bound_of(&self.times[slot as usize]), Comparand::Instant(d));
                    }
                }
            }
            NodeKind::Behavior(i) => {
                let test = &self.behaviors[i as usize];
                let kind_slots = test.kind.slots();
                if let Some(v) = slots.as_mut() {
                    v.extend(kind_slots.clone());
                }
                let mut names: SmallVec<[Sym; 2]> = smallvec::smallvec![test.event];
                if let BehaviorKind::Sequence { seq_event, .. } = test.kind {
                    names.push(seq_event);
                }
                for &name in &names {
                    let range = match only {
                        None => s.events.name_range(name),
                        Some((n, k)) if n == name => k..k + 1,
                        Some(_) => continue,
                    };
                    let run = &s.events.ts[range.clone()];
                    f(Bound::Now, Comparand::Run(run));
                    for slot in kind_slots.clone() {
                        f(bound_of(&self.times[slot as usize]), Comparand::Run(run));
                    }
                    // Event filters comparing event-property dates with relative dates.
                    for filter in &test.filters {
                        if let Test::Date(_, slot) = filter.test {
                            slots.iter_mut().for_each(|v| v.push(slot));
                            let b = bound_of(&self.times[slot as usize]);
                            for k in range.clone() {
                                if let Some(d) = s.events.get(k, filter.key).and_then(value_date) {
                                    f(b, Comparand::Instant(d));
                                }
                            }
                        }
                    }
                }
            }
            _ => {}
        });
    }

    /// Collects candidate change instants (> now) of cohort `c` for the subject, and the time
    /// slots the cohort reads.
    fn candidates(
        &self,
        c: usize,
        s: &Subject<'_>,
        now: Micros,
        out: &mut Vec<Micros>,
        slots: &mut Vec<u32>,
    ) {
        self.for_each_comparison(c, s, None, Some(slots), &mut |b, x| {
            let from = out.len();
            match x {
                Comparand::Instant(d) => crossings(b, d, out, &mut None),
                Comparand::Run(run) => run.iter().for_each(|&e| crossings(b, e, out, &mut None)),
            }
            // Only instants after now matter.
            let mut k = from;
            while k < out.len() {
                if out[k] > now {
                    k += 1;
                } else {
                    out.swap_remove(k);
                }
            }
        });
    }

    /// A conservative horizon, for trackers: the first instant after `now` at which any of the
    /// cohort's comparisons can flip, without evaluating whether the membership actually changes
    /// there. Never later than [`Program::horizon`]: it is the minimum of the same candidates,
    /// found for an event run by binary search instead of by listing every candidate.
    ///
    /// `bufs` is scratch space the caller keeps, so that a tracker's steady state allocates
    /// nothing here.
    pub(crate) fn next_check(
        &self,
        c: usize,
        s: &Subject<'_>,
        now: Micros,
        bufs: &mut HorizonBufs,
    ) -> Option<Micros> {
        self.next_check_of(c, s, None, now, bufs)
    }

    /// What one event adds to [`Program::next_check`]: the first instant after `now` at which a
    /// comparison of cohort `c` with event `k` (of the subject's events, named `name`) can flip.
    /// [`Program::next_check`] is the minimum over per-event candidates, so after an event is
    /// added the cohort's check is the earlier of its check before and this one.
    pub(crate) fn next_check_event(
        &self,
        c: usize,
        s: &Subject<'_>,
        name: Sym,
        k: usize,
        now: Micros,
        bufs: &mut HorizonBufs,
    ) -> Option<Micros> {
        self.next_check_of(c, s, Some((name, k)), now, bufs)
    }

    fn next_check_of(
        &self,
        c: usize,
        s: &Subject<'_>,
        only: Option<(Sym, usize)>,
        now: Micros,
        bufs: &mut HorizonBufs,
    ) -> Option<Micros> {
        let mut best: Option<Micros> = None;
        let calendar = &mut bufs.calendar;
        self.for_each_comparison(c, s, only, None, &mut |b, x| {
            let found = match x {
                Comparand::Run(run) => next_crossing(b, run, now, calendar),
                Comparand::Instant(d) => first_crossing_after(b, d, now, calendar),
            };
            if let Some(t) = found {
                if best.is_none_or(|x| t < x) {
                    best = Some(t);
                }
            }
        });
        best
    }

    /// What [`Program::next_check_event`] reads for cohort `c`, resolved once: by event name,
    /// the distinct bounds its events are compared with (over the cohort and the cohorts it
    /// references), so that a tracker's event costs a crossing per bound, not a walk of the
    /// cohort's leaves.
    pub(crate) fn event_checks(&self, c: usize) -> EventChecks {
        let mut by_name: Vec<(Sym, Option<Vec<Bound>>)> = Vec::new();
        self.for_each_timed_leaf(c, &mut |kind| {
            let NodeKind::Behavior(i) = *kind else { return };
            let test = &self.behaviors[i as usize];
            let mut names: SmallVec<[Sym; 2]> = smallvec::smallvec![test.event];
            if let BehaviorKind::Sequence { seq_event, .. } = test.kind {
                names.push(seq_event);
            }
            // An event filter comparing an event-property date reads the event itself: such
            // a name takes the general path.
            let reads_dates = test
                .filters
                .iter()
                .any(|f| matches!(f.test, Test::Date(..)));
            let bounds = std::iter::once(Bound::Now).chain(
                test.kind
                    .slots()
                    .map(|slot| bound_of(&self.times[slot as usize])),
            );
            for name in names {
                let at = match by_name.iter().position(|(n, _)| *n == name) {
                    Some(at) => at,
                    None => {
                        by_name.push((name, Some(Vec::new())));
                        by_name.len() - 1
                    }
                };
                let entry = &mut by_name[at].1;
                if reads_dates {
                    *entry = None;
                }
                if let Some(list) = entry {
                    for b in bounds.clone() {
                        if !list.contains(&b) {
                            list.push(b);
                        }
                    }
                }
            }
        });
        EventChecks {
            by_name: by_name
                .into_iter()
                .map(|(n, b)| (n, b.map(Vec::into_boxed_slice)))
                .collect(),
        }
    }

    /// [`Program::next_check_event`] for event `k` (named `name`) through the checks
    /// [`Program::event_checks`] resolved for cohort `c`.
    pub(crate) fn next_check_added(
        &self,
        checks: &EventChecks,
        c: usize,
        s: &Subject<'_>,
        (name, k): (Sym, usize),
        now: Micros,
        bufs: &mut HorizonBufs,
    ) -> Option<Micros> {
        match checks.by_name.iter().find(|(n, _)| *n == name) {
            None => None,
            Some((_, Some(bounds))) => {
                let run = std::slice::from_ref(&s.events.ts[k]);
                bounds
                    .iter()
                    .filter_map(|&b| next_crossing(b, run, now, &mut bufs.calendar))
                    .min()
            }
            Some((_, None)) => self.next_check_event(c, s, name, k, now, bufs),
        }
    }

    /// The validity horizon of cohort `c` for the subject at `now`: `None` = never changes.
    pub(crate) fn horizon(
        &self,
        c: usize,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
    ) -> Option<Micros> {
        let mut cands = Vec::new();
        let mut slots = Vec::new();
        self.candidates(c, s, now, &mut cands, &mut slots);
        slots.sort_unstable();
        slots.dedup();
        cands.sort_unstable();
        cands.dedup();
        self.prepare(scratch, now);
        let current = self.member(c, s, scratch, now);
        for (k, &t) in cands.iter().enumerate() {
            if k == MAX_CANDIDATES {
                // Unchecked beyond this point: answer early rather than late.
                self.prepare(scratch, now);
                return Some(t);
            }
            self.prepare_slots(scratch, t, &slots);
            if self.member(c, s, scratch, t) != current {
                self.prepare(scratch, now);
                return Some(t);
            }
        }
        self.prepare(scratch, now);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_absolute;

    #[test]
    fn crossings_cover_calendar_plateaus() {
        // From Mar 29 to Mar 31 (12:00), one month back is Feb 29 12:00 each day.
        let x = parse_absolute("2024-02-29T12:00:00Z").unwrap();
        let mut out = Vec::new();
        crossings(Bound::Back(1, Unit::Month), x, &mut out, &mut None);
        for t in [
            "2024-03-29T12:00:00Z",
            "2024-03-30T12:00:00Z",
            "2024-03-31T12:00:00Z",
            "2024-03-30T00:00:00Z",
        ] {
            assert!(out.contains(&parse_absolute(t).unwrap()), "{t}");
        }
        out.clear();
        crossings(Bound::Back(7, Unit::Day), x, &mut out, &mut None);
        assert_eq!(out, [x + 7 * 86_400_000_000, x + 7 * 86_400_000_000 + 1]);
        out.clear();
        crossings(Bound::Now, x, &mut out, &mut None);
        assert_eq!(out, [x, x + 1]);
    }

    #[test]
    fn first_crossing_after_is_the_earliest_crossing_after_now() {
        let bounds = [
            Bound::Now,
            Bound::Fixed,
            Bound::Back(3, Unit::Hour),
            Bound::Back(7, Unit::Day),
            Bound::Back(1, Unit::Month),
            Bound::Back(2, Unit::Month),
            Bound::Back(1, Unit::Year),
        ];
        let hour = 3_600_000_000;
        let start = parse_absolute("2024-01-27T05:00:00Z").unwrap();
        let mut memo = CalMemo::default();
        let mut out = Vec::new();
        let mut checked = 0;
        for b in bounds {
            // Instants around the month ends where calendar shifts clamp, with `now` before,
            // on and after each crossing.
            for step in 0..90 {
                let x = start + step * 7 * hour + (step % 3);
                for offset in [
                    -40 * 24,
                    -1,
                    0,
                    1,
                    24 * 28,
                    24 * 29,
                    24 * 31,
                    24 * 59,
                    24 * 366,
                ] {
                    for now in [x + offset * hour, x + offset * hour + 1] {
                        out.clear();
                        crossings(b, x, &mut out, &mut None);
                        let expected = out.iter().copied().filter(|&t| t > now).min();
                        assert_eq!(first_crossing_after(b, x, now, &mut memo), expected);
                        checked += expected.is_some() as usize;
                    }
                }
            }
        }
        assert!(checked > 1000, "{checked}");
    }
}
