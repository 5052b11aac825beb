//! Validity horizons: the earliest instant after `now` at which a person's membership can change
//! with no new event and no property change.
//!
//! Every time-dependent comparison is `x OP b(t)` for a fixed instant `x` (an event timestamp or
//! a person's date) and a bound `b(t)` that is non-decreasing in the evaluation instant `t`: `t`
//! itself, `t − span` (calendar-aware), or a relative filter date. Such a comparison can only flip
//! at the first `t` where `b(t) ≥ x` or `b(t) ≥ x + 1µs`. Those instants, over every leaf the
//! cohort reads (through references too), are the only candidates; the horizon is the first
//! candidate at which the membership actually differs, found by evaluating there.

use crate::compile::{BehaviorKind, CohortCode, NodeKind, Program, Test, TimeExpr};
use crate::data::lookup;
use crate::eval::person::value_date;
use crate::eval::{Scratch, Subject};
use crate::time::{back, forward, DateSpec, Micros, RelUnit, Unit, POS_INF};

/// How many candidate instants are checked before settling for a conservative (early) answer.
const MAX_CANDIDATES: usize = 4096;

/// A bound as a function of the evaluation instant.
#[derive(Clone, Copy)]
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

/// The first instant `t` with `b(t) ≥ x`, if any.
fn first_reaching(b: Bound, x: Micros) -> Option<Micros> {
    match b {
        Bound::Fixed => None,
        Bound::Now => Some(x),
        Bound::Back(n, unit) => {
            // back(t) ≤ t, and back(forward(x) + slack) ≥ x; binary search in between.
            let approx = forward(x, n, unit);
            if approx == POS_INF {
                return None;
            }
            let mut lo = x; // back(lo) < x unless n == 0
            let mut hi = approx.saturating_add(5 * 86_400_000_000);
            if back(hi, n, unit) < x {
                return None;
            }
            if back(lo, n, unit) >= x {
                return Some(lo);
            }
            while hi - lo > 1 {
                let mid = lo + (hi - lo) / 2;
                if back(mid, n, unit) >= x {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            Some(hi)
        }
    }
}

impl Program {
    /// Collects candidate change instants (> now) of cohort `c` for the subject.
    fn candidates(&self, c: usize, s: &Subject<'_>, now: Micros, out: &mut Vec<Micros>) {
        let mut push = |b: Bound, x: Micros| {
            for x in [x, x.saturating_add(1)] {
                if let Some(t) = first_reaching(b, x) {
                    if t > now {
                        out.push(t);
                    }
                }
            }
        };
        let mut seen = vec![false; self.cohorts.len()];
        let mut stack = vec![c];
        while let Some(c) = stack.pop() {
            if std::mem::replace(&mut seen[c], true) {
                continue;
            }
            let CohortCode::Dynamic(root) = self.cohorts[c] else {
                continue;
            };
            let mut nodes = vec![root];
            while let Some(n) = nodes.pop() {
                match self.nodes[n as usize].kind {
                    NodeKind::And { start, len } | NodeKind::Or { start, len } => nodes
                        .extend_from_slice(&self.children[start as usize..(start + len) as usize]),
                    NodeKind::Cohort { target, .. } => stack.push(target as usize),
                    NodeKind::Prop(i) => {
                        let t = &self.props[i as usize];
                        if let Test::Date(_, slot) = t.test {
                            let b = bound_of(&self.times[slot as usize]);
                            if let Some(d) = lookup(s.props, t.key).and_then(value_date) {
                                push(b, d);
                            }
                        }
                    }
                    NodeKind::Behavior(i) => {
                        let test = &self.behaviors[i as usize];
                        let mut bounds: Vec<Bound> = vec![Bound::Now];
                        let mut names = vec![test.event];
                        match test.kind {
                            BehaviorKind::Performed { since }
                            | BehaviorKind::Multiple { since, .. } => {
                                bounds.push(bound_of(&self.times[since as usize]))
                            }
                            BehaviorKind::FirstTime { start } => {
                                bounds.push(bound_of(&self.times[start as usize]))
                            }
                            BehaviorKind::Stopped { start, seq }
                            | BehaviorKind::Restarted { start, seq } => {
                                bounds.push(bound_of(&self.times[start as usize]));
                                bounds.push(bound_of(&self.times[seq as usize]));
                            }
                            BehaviorKind::Sequence {
                                start, seq_event, ..
                            } => {
                                bounds.push(bound_of(&self.times[start as usize]));
                                names.push(seq_event);
                            }
                            BehaviorKind::Regularly {
                                bounds: first,
                                total,
                                ..
                            } => {
                                for k in 0..total {
                                    bounds.push(bound_of(&self.times[(first as u64 + k) as usize]));
                                }
                            }
                        }
                        // Event filters comparing event-property dates with relative dates.
                        let date_filters: Vec<(crate::intern::Sym, Bound)> = test
                            .filters
                            .iter()
                            .filter_map(|f| match f.test {
                                Test::Date(_, slot) => {
                                    Some((f.key, bound_of(&self.times[slot as usize])))
                                }
                                _ => None,
                            })
                            .collect();
                        // Only the events of the leaf's names matter; each name is one run.
                        for &name in &names {
                            for k in s.events.name_range(name) {
                                for &b in &bounds {
                                    push(b, s.events.ts[k]);
                                }
                                for &(key, b) in &date_filters {
                                    if let Some(d) =
                                        lookup(s.events.props(k), key).and_then(value_date)
                                    {
                                        push(b, d);
                                    }
                                }
                            }
                        }
                    }
                }
            }
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
        self.candidates(c, s, now, &mut cands);
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
            self.prepare(scratch, t);
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
    fn first_reaching_inverts_back() {
        let x = parse_absolute("2024-02-29T12:00:00Z").unwrap();
        let t = first_reaching(Bound::Back(1, Unit::Month), x).unwrap();
        assert!(back(t, 1, Unit::Month) >= x && back(t - 1, 1, Unit::Month) < x);
        assert_eq!(
            first_reaching(Bound::Back(7, Unit::Day), x),
            Some(x + 7 * 86_400_000_000)
        );
        assert_eq!(first_reaching(Bound::Now, x), Some(x));
        assert_eq!(first_reaching(Bound::Fixed, x), None);
    }
}
