//! Stage five: running a [`Program`] for one person (`model` → `ast` → `graph` → `compile` →
//! **`eval`**).
//!
//! Evaluation never allocates in steady state and never fails: everything that could fail was
//! rejected while parsing. Per-evaluation state — time bounds bound to `now`, memoised cohort
//! memberships, a case-folding buffer — lives in a caller-owned [`Scratch`], so one compiled
//! program serves many threads at once.

mod behavioral;
pub mod bitset;
pub mod explain;
mod horizon;

pub(crate) use horizon::{EventChecks, HorizonBufs};
mod person;
mod schedule;
pub(crate) mod strings;

use crate::compile::{CohortCode, NodeId, NodeKind, Program, TimeExpr, MAX_RECURSIVE_HEIGHT};
use crate::data::{Events, PersonProps};
use crate::time::{back, Micros};

use person::run_hits;
pub(crate) use person::{eval_prop, eval_value};

/// Reusable per-thread evaluation state: create one per thread and pass it to every call.
/// It adapts itself to whichever program and `now` it is used with.
#[derive(Debug, Default)]
pub struct Scratch {
    serial: u64,
    now: Micros,
    pub(crate) times: Vec<Micros>,
    stamp: u32,
    memo_stamp: Vec<u32>,
    memo_val: Vec<bool>,
    visit_stamp: Vec<u32>,
    work: Vec<u32>,
    closure: Vec<u32>,
    evaluated: u32,
    pub(crate) buf: String,
}

impl Scratch {
    /// An empty scratch space.
    pub fn new() -> Scratch {
        Scratch::default()
    }

    /// How many dynamic cohort definitions the last evaluation computed (each referenced cohort
    /// is computed at most once per person, however many times it is referenced).
    pub fn cohorts_evaluated(&self) -> u32 {
        self.evaluated
    }
}

/// Who is being evaluated, for static cohort membership.
#[derive(Clone, Copy)]
pub(crate) enum Who<'a> {
    /// A single person: static lists are matched against its id and distinct ids.
    Person {
        id: &'a str,
        distinct_ids: &'a [Box<str>],
    },
    /// Person `index` of a dataset: static lists are resolved through the dataset (a person id
    /// wins over a distinct id).
    Indexed {
        index: usize,
        data: &'a crate::data::Dataset,
    },
}

/// One person's data as the evaluator reads it.
#[derive(Clone, Copy)]
pub(crate) struct Subject<'a> {
    pub props: PersonProps<'a>,
    pub events: Events<'a>,
    pub who: Who<'a>,
}

impl Program {
    /// Binds time slots to `now` (when it or the program changed) and starts a new memo
    /// generation. Call once per person evaluation.
    #[inline]
    pub(crate) fn prepare(&self, scratch: &mut Scratch, now: Micros) {
        if scratch.serial != self.serial
            || scratch.now != now
            || scratch.times.len() != self.times.len()
        {
            self.rebind(scratch, now);
        }
        scratch.evaluated = 0;
        scratch.stamp = scratch.stamp.wrapping_add(1);
        if scratch.stamp == 0 {
            restart_stamps(scratch);
        }
    }

    /// [`Program::prepare`]'s slow path: binds every time slot to `now` and sizes the memo for
    /// this program (out of line, as the single-person path rarely needs it).
    #[inline(never)]
    fn rebind(&self, scratch: &mut Scratch, now: Micros) {
        scratch.serial = self.serial;
        scratch.now = now;
        scratch.times.clear();
        scratch.times.extend(self.times.iter().map(|t| match t {
            TimeExpr::Back(span) => back(now, span.n, span.unit),
            TimeExpr::Date(d) => d.resolve(now),
        }));
        let n = self.cohorts.len();
        scratch.memo_stamp.clear();
        scratch.memo_stamp.resize(n, 0);
        scratch.memo_val.clear();
        scratch.memo_val.resize(n, false);
        scratch.visit_stamp.clear();
        scratch.visit_stamp.resize(n, 0);
        scratch.stamp = 0;
    }

    /// The position of `cohort` in the program's set, or the `unknown_cohort` error every
    /// per-person entry point reports.
    #[inline]
    pub(crate) fn position_of(&self, cohort: crate::CohortId) -> Result<usize, crate::Error> {
        // The program's own copy of the ids: no pointer chase through the set.
        self.entries
            .binary_search_by_key(&cohort, |e| e.id)
            .map_err(|_| unknown(cohort))
    }

    /// Like [`Program::prepare`] at instant `t`, but binds only `slots` (the ones the cohorts
    /// about to be evaluated read). The scratch is marked stale, so the next `prepare` binds all.
    pub(crate) fn prepare_slots(&self, scratch: &mut Scratch, t: Micros, slots: &[u32]) {
        self.prepare(scratch, scratch.now);
        for &s in slots {
            scratch.times[s as usize] = match &self.times[s as usize] {
                TimeExpr::Back(span) => back(t, span.n, span.unit),
                TimeExpr::Date(d) => d.resolve(t),
            };
        }
        // No real instant is i64::MIN + 1: the next `prepare` recomputes every slot.
        scratch.now = i64::MIN + 1;
    }

    /// Is the subject a member of the cohort at position `c`? Memoised per generation.
    pub(crate) fn member(
        &self,
        c: usize,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
    ) -> bool {
        self.member_skipping(c, s, scratch, now, &[])
    }

    /// [`Program::member`] for a cohort whose gate is known to be open (every conjunct in
    /// `gates[c]` true, as the tracker keeps it between property changes): those conjuncts are
    /// not evaluated again, only the rest of the top-level AND.
    pub(crate) fn member_past_gate(
        &self,
        c: usize,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
    ) -> bool {
        self.member_skipping(c, s, scratch, now, &self.gates[c])
    }

    /// [`Program::member`], taking the conjuncts `skip` of cohort `c`'s root as true.
    fn member_skipping(
        &self,
        c: usize,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
        skip: &[NodeId],
    ) -> bool {
        if scratch.memo_stamp[c] == scratch.stamp {
            return scratch.memo_val[c];
        }
        if self.height[c] > MAX_RECURSIVE_HEIGHT {
            self.evaluate_dependencies(c, s, scratch, now);
        }
        self.member_direct(c, s, scratch, now, skip)
    }

    /// [`Program::member`] right after [`Program::prepare`]: nothing is memoised yet, and the
    /// top cohort's own result is never read back (a cohort cannot reference itself), so a
    /// dynamic cohort goes straight to its root. The single-person path's entry point.
    #[inline]
    pub(crate) fn member_fresh(
        &self,
        c: usize,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
    ) -> bool {
        match self.entries[c].root {
            // The root group in place: a cohort of person leaves only (a feature flag's usual
            // shape) goes straight to its run.
            Some(g) => {
                scratch.evaluated += 1;
                self.group(g.run, g.start, g.len, g.any, s, scratch, now) ^ g.negate
            }
            None => self.member(c, s, scratch, now),
        }
    }

    /// True when a conjunct of cohort `c`'s gate is false for the subject, so the cohort is
    /// false now and stays false, whatever events arrive, until the person's properties change.
    /// Call after [`Program::prepare`]. False when the cohort has no gate.
    pub(crate) fn gate_closed(
        &self,
        c: usize,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
    ) -> bool {
        self.gates[c]
            .iter()
            .any(|&n| !self.node(n, s, scratch, now))
    }

    /// Evaluates without pre-evaluating dependencies (they are memoised already, or shallow),
    /// taking the root's conjuncts `skip` as true.
    fn member_direct(
        &self,
        c: usize,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
        skip: &[NodeId],
    ) -> bool {
        if scratch.memo_stamp[c] == scratch.stamp {
            return scratch.memo_val[c];
        }
        let r = match &self.cohorts[c] {
            CohortCode::Deleted => false,
            CohortCode::Static(members) => match s.who {
                Who::Person { id, distinct_ids } => {
                    members.contains(id) || distinct_ids.iter().any(|d| members.contains(d))
                }
                Who::Indexed { index, data } => {
                    members.iter().any(|m| data.resolve(m) == Some(index))
                }
            },
            CohortCode::Dynamic(root) => {
                scratch.evaluated += 1;
                match self.nodes[*root as usize].kind {
                    NodeKind::And { start, len } if !skip.is_empty() => {
                        // `skip` (a gate) is the root's children it names, in their order: a
                        // merge passes over them.
                        let mut rest = skip.iter().peekable();
                        self.children[start as usize..(start + len) as usize]
                            .iter()
                            .all(|&n| {
                                if rest.peek() == Some(&&n) {
                                    rest.next();
                                    return true;
                                }
                                self.child(n, s, scratch, now)
                            })
                    }
                    _ => self.node(*root, s, scratch, now),
                }
            }
        };
        scratch.memo_stamp[c] = scratch.stamp;
        scratch.memo_val[c] = r;
        r
    }

    /// For deep reference chains: evaluates every cohort `c` depends on, in evaluation order,
    /// iteratively, so the recursion in [`Program::member`] stays shallow.
    fn evaluate_dependencies(&self, c: usize, s: &Subject<'_>, scratch: &mut Scratch, now: Micros) {
        let stamp = scratch.stamp;
        let mut work = std::mem::take(&mut scratch.work);
        let mut closure = std::mem::take(&mut scratch.closure);
        work.clear();
        closure.clear();
        work.push(c as u32);
        while let Some(x) = work.pop() {
            for &t in self.reads[x as usize].refs.iter() {
                if scratch.visit_stamp[t as usize] != stamp {
                    scratch.visit_stamp[t as usize] = stamp;
                    closure.push(t);
                    work.push(t);
                }
            }
        }
        closure.sort_unstable_by_key(|&x| self.rank[x as usize]);
        for &d in &closure {
            self.member_direct(d as usize, s, scratch, now, &[]);
        }
        scratch.work = work;
        scratch.closure = closure;
    }

    /// Calls `f` with every leaf under `root`.
    pub(crate) fn for_each_leaf(&self, root: NodeId, f: &mut dyn FnMut(NodeKind)) {
        crate::compile::for_each_leaf_in(root, &self.nodes, &self.children, f);
    }

    /// Evaluates a node (recursion depth is bounded by the nesting limit).
    pub(crate) fn node(
        &self,
        id: NodeId,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
    ) -> bool {
        let n = &self.nodes[id as usize];
        let r = match n.kind {
            NodeKind::And { start, len } => {
                self.group(self.runs[id as usize], start, len, false, s, scratch, now)
            }
            NodeKind::Or { start, len } => {
                self.group(self.runs[id as usize], start, len, true, s, scratch, now)
            }
            NodeKind::Prop(i) => eval_prop(
                &self.props[i as usize],
                s.props,
                &scratch.times,
                &mut scratch.buf,
            ),
            NodeKind::Behavior(i) => behavioral::eval(
                &self.behaviors[i as usize],
                &s.events,
                &scratch.times,
                now,
                &mut scratch.buf,
            ),
            NodeKind::Cohort { target, invert } => {
                self.member(target as usize, s, scratch, now) ^ invert
            }
        };
        r ^ n.negate
    }

    /// An AND (`any` false) or OR (`any` true) of `children[start..start + len]` whose first
    /// `run.1` children are the person leaves `run_props[run.0..run.0 + run.1]` (the group's
    /// entry in `runs`): the run first, then the other children.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn group(
        &self,
        (first, run): (u32, u32),
        start: u32,
        len: u32,
        any: bool,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
    ) -> bool {
        if run > 0 && self.run_hits(first, run, s.props, scratch, any) {
            return any;
        }
        let rest = &self.children[(start + run) as usize..(start + len) as usize];
        if any {
            rest.iter().any(|&c| self.child(c, s, scratch, now))
        } else {
            rest.iter().all(|&c| self.child(c, s, scratch, now))
        }
    }

    /// True when a leaf of the run `run_props[first..first + len]` gives `hit` for the subject
    /// (out of line, so `node`, which recurses, keeps a small frame).
    #[inline(never)]
    fn run_hits(
        &self,
        first: u32,
        len: u32,
        props: PersonProps<'_>,
        scratch: &mut Scratch,
        hit: bool,
    ) -> bool {
        let run = &self.run_props[first as usize..(first + len) as usize];
        let (times, buf) = (&scratch.times[..], &mut scratch.buf);
        match props {
            PersonProps::Slice(props) => run_hits(run, props, |v| v, times, buf, hit),
            PersonProps::Pooled { pairs, values } => {
                run_hits(run, pairs, |&v| &values[v as usize], times, buf, hit)
            }
        }
    }

    /// A child of an AND / OR: a property leaf (most children are) is evaluated in place, as a
    /// call per leaf was a third of a small cohort's instructions; anything else recurses.
    #[inline(always)]
    fn child(&self, id: NodeId, s: &Subject<'_>, scratch: &mut Scratch, now: Micros) -> bool {
        let n = &self.nodes[id as usize];
        match n.kind {
            NodeKind::Prop(i) => {
                eval_prop(
                    &self.props[i as usize],
                    s.props,
                    &scratch.times,
                    &mut scratch.buf,
                ) ^ n.negate
            }
            _ => self.node(id, s, scratch, now),
        }
    }
}

pub mod batch;

/// The memo stamps wrapped around: clears them so no stale entry matches the new generation.
#[cold]
#[inline(never)]
fn restart_stamps(scratch: &mut Scratch) {
    scratch.memo_stamp.iter_mut().for_each(|s| *s = 0);
    scratch.visit_stamp.iter_mut().for_each(|s| *s = 0);
    scratch.stamp = 1;
}

/// The error for a cohort id the program does not hold (out of line: the lookup is on the
/// single-person path).
#[cold]
#[inline(never)]
fn unknown(cohort: crate::CohortId) -> crate::Error {
    crate::Error::missing(cohort, format!("cohort {cohort} is not in the set"))
}
