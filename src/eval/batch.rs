//! Batch evaluation over a whole [`Dataset`], column by column.
//!
//! Each cohort's membership is a [`Bitset`] over person indices, computed once, in dependency
//! order, and read by every reference to it. A node is evaluated for a *mask* of candidate persons
//! only: an AND narrows the mask child by child (cheap children first, as compiled), an OR removes
//! the persons already known to match. Person-property leaves are one pass over the property's
//! column; behavioral leaves scan the events of the persons still in the mask. On several
//! threads the persons are split into contiguous ranges of about equal work, each evaluated
//! whole (every cohort, in dependency order) by its own thread, which then helps with the
//! cohorts of ranges not yet started ([`crate::eval::schedule`]); the cohorts' bitsets are the
//! unions of the ranges'. The result never depends on the thread count.

use std::collections::BTreeMap;

use crate::compile::{
    BehaviorKind, CohortCode, DateCmp, NodeId, NodeKind, Program, PropTest, Test, TimeExpr,
};
use crate::data::{Dataset, IdOrder, NameRun, PersonProps, Run, CACHE_MIN_VALUES};
use crate::error::{Error, ErrorKind};
use crate::eval::behavioral::CodeFilter;
use crate::eval::bitset::{Bitset, Ones};
use crate::eval::schedule::Schedule;
use crate::eval::{behavioral, person, Scratch, Subject, Who};
use crate::intern::Sym;
use crate::set::CohortSet;
use crate::time::{back, Micros};
use crate::{CohortId, Timestamp};

/// What to evaluate and how: [`BatchOptions::default`] (every cohort, every core, every person),
/// then the builder methods or field assignments for what differs.
///
/// ```
/// use cohort_engine::BatchOptions;
/// let opts = BatchOptions::default().cohorts([1, 7]).threads(2).partition(0, 4);
/// assert_eq!(opts.threads, 2);
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct BatchOptions {
    /// Cohorts to report (default: every non-deleted cohort). Referenced cohorts are evaluated as
    /// needed either way.
    pub cohorts: Option<Vec<CohortId>>,
    /// Worker threads (0 = all cores). The result never depends on it.
    pub threads: usize,
    /// Only persons whose partition (FNV-1a 64 of the id's UTF-8 bytes, mod n) is i: `(i, n)`.
    pub partition: Option<(u64, u64)>,
}

impl BatchOptions {
    /// Report only these cohorts.
    pub fn cohorts(mut self, ids: impl IntoIterator<Item = CohortId>) -> BatchOptions {
        self.cohorts = Some(ids.into_iter().collect());
        self
    }

    /// Use `n` worker threads (0 = all cores).
    pub fn threads(mut self, n: usize) -> BatchOptions {
        self.threads = n;
        self
    }

    /// Evaluate only the persons of partition `i` of `n` (FNV-1a 64 of the person id, mod `n`).
    pub fn partition(mut self, i: u64, n: u64) -> BatchOptions {
        self.partition = Some((i, n));
        self
    }
}

/// Member person ids per cohort id: ids sorted by their UTF-8 bytes.
pub type Members = BTreeMap<CohortId, Vec<String>>;

/// FNV-1a, 64-bit: the stable hash that assigns persons to partitions.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    use std::hash::Hasher;
    let mut h = crate::intern::Fnv::default();
    h.write(bytes);
    h.finish()
}

/// Datasets with fewer persons than this are evaluated on one thread.
const PARALLEL_MIN_PERSONS: usize = 8192;

/// Regex leaves over dictionaries at least this large, whose mask an AND has narrowed, run their
/// automata only on the values of the persons in the mask.
const REGEX_WITHIN_MIN: usize = 4096;

/// Dictionaries at least this large get their kernels run, in each share of a batch, only over
/// the codes that share's persons use ([`crate::data::Column::codes_used_in`]).
const SPAN_MIN_VALUES: usize = 4096;

/// One thread's share of a batch evaluation: every needed cohort over the persons of `range`.
struct Batch<'a> {
    data: &'a Dataset,
    program: &'a Program,
    now: Micros,
    times: &'a [Micros],
    /// The persons this share covers (bitsets span every person; bits outside stay 0).
    range: std::ops::Range<u32>,
    /// Membership per cohort position, each set once, after the cohorts it references.
    cohorts: Vec<std::sync::OnceLock<Bitset>>,
    /// The persons evaluated: those of `range` (all, or one partition's).
    selected: Bitset,
    /// How many persons `selected` holds.
    population: usize,
    /// How many shares the persons are split into.
    shares: usize,
    /// Per behavioral leaf: the leaves of the evaluated cohorts reading the same event (itself
    /// included) when there are two or more, which then share one pass over that event's runs.
    groups: &'a [Vec<u32>],
    /// Leaves computed by another leaf's shared pass, over every selected person, waiting for
    /// their turn (taken when used, by whichever thread evaluates the leaf's cohort).
    shared: std::sync::Mutex<Vec<Option<Bitset>>>,
}

impl Dataset {
    /// See [`Dataset::evaluate`].
    pub(crate) fn evaluate_in(
        &self,
        set: &CohortSet,
        now: impl Into<Timestamp>,
        opts: &BatchOptions,
    ) -> Result<Members, Error> {
        let now = now.into().as_micros();
        let program = Program::compile(set, &self.symbols)?;
        self.evaluate_program(&program, now, opts)
    }

    /// A program compiled against other name tables (another dataset's, or an engine's) would
    /// read the wrong keys: refuse it.
    fn check_program(&self, program: &Program) -> Result<(), Error> {
        if program.names == self.symbols.id() {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::InvalidInput,
                "the program was compiled for another dataset's names; compile it with this \
                 dataset's Dataset::compile",
            ))
        }
    }

    /// See [`Dataset::compile`].
    pub(crate) fn compile_in(&self, set: &CohortSet) -> Result<Program, Error> {
        Program::compile(set, &self.symbols)
    }

    /// See [`Dataset::evaluate_program`].
    pub(crate) fn evaluate_program_in(
        &self,
        program: &Program,
        now: impl Into<Timestamp>,
        opts: &BatchOptions,
    ) -> Result<Members, Error> {
        let now = now.into().as_micros();
        let bits = self.evaluate_bitsets(program, now, opts)?;
        Ok(bits
            .into_iter()
            .map(|(id, b)| {
                let ids = self.member_ids_in(&b).map(str::to_string);
                (id, ids.collect())
            })
            .collect())
    }

    /// See [`Dataset::member_ids`].
    pub(crate) fn member_ids_in(&self, members: &Bitset) -> MemberIds<'_> {
        // In id byte order from the order computed once per dataset, never a string sort: the
        // members are laid out as a bitset over ranks (one step per member, into a bitset small
        // enough to stay in cache), which is then read in rank order.
        let ids = self.id_order();
        let mut ranks = Bitset::zeros(self.len());
        for p in members.iter() {
            ranks.set(ids.rank[p] as usize, true);
        }
        MemberIds {
            ids,
            left: members.count(),
            ranks: ranks.into_ones(),
        }
    }

    /// See [`Dataset::evaluate_bitsets`].
    pub(crate) fn evaluate_bitsets_in(
        &self,
        program: &Program,
        now: impl Into<Timestamp>,
        opts: &BatchOptions,
    ) -> Result<BTreeMap<CohortId, Bitset>, Error> {
        self.evaluate_each_in(program, now, opts, |_, bits| bits)
    }

    /// See [`Dataset::evaluate_each`].
    pub(crate) fn evaluate_each_in<R: Send>(
        &self,
        program: &Program,
        now: impl Into<Timestamp>,
        opts: &BatchOptions,
        each: impl Fn(CohortId, Bitset) -> R + Sync,
    ) -> Result<BTreeMap<CohortId, R>, Error> {
        let now = now.into().as_micros();
        self.check_program(program)?;
        let set = program.cohort_set();
        let requested: Vec<usize> = match &opts.cohorts {
            None => (0..set.len())
                .filter(|&i| !set.cohorts()[i].is_deleted())
                .collect(),
            Some(ids) => {
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    match set.position(*id) {
                        Some(p) if !set.cohorts()[p].is_deleted() => out.push(p),
                        _ => {
                            return Err(Error::missing(
                                *id,
                                format!("cohort {id} is not in the set (or is deleted)"),
                            ))
                        }
                    }
                }
                // Each cohort once, however often it was asked for.
                out.sort_unstable();
                out.dedup();
                out
            }
        };
        // Everything requested plus its dependencies, in evaluation order.
        let mut needed = vec![false; set.len()];
        let mut stack: Vec<usize> = requested.clone();
        while let Some(c) = stack.pop() {
            if std::mem::replace(&mut needed[c], true) {
                continue;
            }
            for &t in program.reads[c].refs.iter() {
                if !needed[t as usize] {
                    stack.push(t as usize)
                }
            }
        }
        let n = self.len();
        let selected = match opts.partition {
            None => Bitset::ones(n),
            Some((i, parts)) => {
                let mut b = Bitset::zeros(n);
                for p in 0..n {
                    if self
                        .person_id(p)
                        .is_some_and(|id| fnv1a64(id.as_bytes()) % parts == i)
                    {
                        b.set(p, true);
                    }
                }
                b
            }
        };
        let threads = match opts.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t,
        };
        // The behavioral leaves of the cohorts to evaluate, grouped by the event they read.
        let mut groups: Vec<Vec<u32>> = vec![Vec::new(); program.behaviors.len()];
        {
            let mut leaves: Vec<u32> = Vec::new();
            for c in (0..set.len()).filter(|&c| needed[c]) {
                if let CohortCode::Dynamic(root) = program.cohorts[c] {
                    program.for_each_leaf(root, &mut |leaf| {
                        if let NodeKind::Behavior(i) = leaf {
                            leaves.push(i)
                        }
                    });
                }
            }
            leaves.sort_unstable_by_key(|&i| (program.behaviors[i as usize].event, i));
            leaves.dedup();
            for same in leaves.chunk_by(|&a, &b| {
                program.behaviors[a as usize].event == program.behaviors[b as usize].event
            }) {
                if same.len() >= 2 {
                    for &i in same {
                        groups[i as usize] = same.to_vec();
                    }
                }
            }
        }
        let times: Vec<Micros> = program
            .times
            .iter()
            .map(|t| match t {
                TimeExpr::Back(span) => back(now, span.n, span.unit),
                TimeExpr::Date(d) => d.resolve(now),
            })
            .collect();
        // Column caches are per distinct value, not per person: built once, on every thread,
        // before the persons are split.
        self.warm_columns(program, &needed, threads);
        let order: Vec<usize> = set
            .evaluation_order()
            .iter()
            .copied()
            .filter(|&c| needed[c])
            .collect();
        let share = |range: std::ops::Range<u32>, shares: usize| {
            let mut selected = selected.clone();
            selected.retain_range(range.start as usize..range.end as usize);
            let population = selected.count();
            Batch {
                data: self,
                program,
                now,
                times: &times,
                range,
                cohorts: (0..set.len()).map(|_| std::sync::OnceLock::new()).collect(),
                selected,
                population,
                shares,
                groups: &groups,
                shared: std::sync::Mutex::new(vec![None; program.behaviors.len()]),
            }
        };
        // Persons split into contiguous ranges of about equal work, one per thread, each
        // evaluated on its own from the first cohort to the last: every step (column passes,
        // behavioral runs, references, AND/OR) is parallel, with no join between them. A thread
        // done with its share helps with the cohorts another has not started: on a virtual
        // machine a woken thread can start milliseconds after the spawn, and its share would
        // otherwise hold up the batch.
        let offsets = self.event_offsets();
        let parts: Vec<std::ops::Range<u32>> =
            if threads > 1 && n >= PARALLEL_MIN_PERSONS && offsets.len() == n + 1 {
                crate::data::split_persons(offsets, threads)
                    .into_iter()
                    .map(|r| r.start as u32..r.end as u32)
                    .collect()
            } else {
                std::iter::once(0..n as u32).collect()
            };
        let shares: Vec<Batch<'_>> = parts
            .iter()
            .map(|r| share(r.clone(), parts.len()))
            .collect();
        // Each requested cohort, the union of its shares (which cover disjoint persons), handed
        // to `each`.
        let id = |k: usize| set.cohorts()[requested[k]].id;
        let union = |k: usize| {
            let c = requested[k];
            let mut parts = shares.iter().filter_map(|b| b.cohorts[c].get());
            let mut bits = parts.next().cloned().unwrap_or_else(|| Bitset::zeros(n));
            parts.for_each(|b| bits.or_assign(b));
            bits
        };
        let results: Vec<std::sync::Mutex<Option<R>>> = (0..requested.len())
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        let put = |k: usize, r: R| {
            *results[k]
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(r)
        };
        if shares.len() == 1 {
            for &c in &order {
                shares[0].settle(c);
            }
            for k in 0..requested.len() {
                put(k, each(id(k), union(k)));
            }
        } else {
            // Costs come from the dataset's statistics, the same for every share.
            let costs: Vec<u64> = (0..set.len()).map(|c| shares[0].cohort_cost(c)).collect();
            let schedules: Vec<Schedule<'_>> = shares
                .iter()
                .map(|_| Schedule::new(&order, |c| &program.reads[c].refs, &costs))
                .collect();
            // `each` on the same threads once every share is done, largest cohort first (the
            // threads are running already: new ones could start late).
            let next = std::sync::atomic::AtomicUsize::new(0);
            let largest = std::sync::OnceLock::new();
            // Thread k runs share k to the end, takes what is ready in the others, then waits
            // for every share and takes cohorts for `each`.
            let work = |k: usize| {
                #[cfg(test)]
                if k > 0 {
                    let ms = tests::SPAWN_DELAY_MS.load(std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(std::time::Duration::from_millis(ms));
                }
                schedules[k].run(true, |c| shares[k].settle(c));
                for j in (1..shares.len()).map(|d| (k + d) % shares.len()) {
                    schedules[j].run(false, |c| {
                        #[cfg(test)]
                        tests::HELPED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        shares[j].settle(c)
                    });
                }
                if !schedules.iter().all(Schedule::finish) {
                    return;
                }
                let largest: &Vec<usize> = largest.get_or_init(|| {
                    let mut ks: Vec<usize> = (0..requested.len()).collect();
                    ks.sort_by_cached_key(|&k| {
                        let c = requested[k];
                        let count = |b: &Batch<'_>| b.cohorts[c].get().map_or(0, Bitset::count);
                        std::cmp::Reverse(shares.iter().map(count).sum::<usize>())
                    });
                    ks
                });
                loop {
                    let at = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&k) = largest.get(at) else { break };
                    put(k, each(id(k), union(k)));
                }
            };
            std::thread::scope(|s| {
                for k in 1..shares.len() {
                    s.spawn(move || work(k));
                }
                work(0);
            });
        }
        Ok(results
            .into_iter()
            .enumerate()
            .filter_map(|(k, r)| {
                let r = r
                    .into_inner()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                Some((id(k), r?))
            })
            .collect())
    }
}

impl Dataset {
    /// Builds the column caches the property leaves of the `needed` cohorts read (case-folded
    /// dictionaries for `icontains`, raw ones for regexes, dates and numbers for comparisons,
    /// person-indexed codes) on `threads` threads, so no share of a batch builds one alone while
    /// the others wait for it.
    fn warm_columns(&self, program: &Program, needed: &[bool], threads: usize) {
        for (c, code) in program.cohorts.iter().enumerate() {
            let CohortCode::Dynamic(root) = code else {
                continue;
            };
            if !needed[c] {
                continue;
            }
            program.for_each_leaf(*root, &mut |leaf| {
                let NodeKind::Prop(i) = leaf else {
                    return;
                };
                let t = &program.props[i as usize];
                let Some(col) = self.columns.get(t.key.0 as usize) else {
                    return;
                };
                col.densify(self.len());
                match t.test {
                    Test::Contains(_) if col.dict.len() > CACHE_MIN_VALUES => {
                        col.folded(threads);
                    }
                    Test::Regex(_) if col.dict.len() >= REGEX_WITHIN_MIN => {
                        col.raw(threads);
                    }
                    Test::Date(..) if col.dict.len() > CACHE_MIN_VALUES => {
                        col.dates(threads);
                    }
                    Test::Cmp(..) | Test::Between(..) | Test::NotBetween(..)
                        if col.dict.len() > CACHE_MIN_VALUES =>
                    {
                        col.nums();
                    }
                    _ => {}
                }
            });
        }
    }
}

impl Dataset {
    /// See [`Dataset::matches`].
    pub(crate) fn matches_in(
        &self,
        program: &Program,
        cohort: CohortId,
        index: usize,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
    ) -> Result<bool, Error> {
        let now = now.into().as_micros();
        self.check_program(program)?;
        let c = program.position_of(cohort)?;
        if index >= self.len() {
            return Ok(false);
        }
        let props = self.person_props(index);
        let subject = Subject {
            props: PersonProps::Slice(&props),
            events: self.person_events(index),
            who: Who::Indexed { index, data: self },
        };
        program.prepare(scratch, now);
        Ok(program.member(c, &subject, scratch, now))
    }
}

impl Dataset {
    /// See [`Dataset::explain`].
    pub(crate) fn explain_in(
        &self,
        program: &Program,
        cohort: CohortId,
        index: usize,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
    ) -> Result<crate::eval::explain::Explanation, Error> {
        let now = now.into().as_micros();
        self.check_program(program)?;
        let c = program.position_of(cohort)?;
        if index >= self.len() {
            return Err(Error::input(
                format!("person {index}"),
                "no person at this index",
            ));
        }
        let props = self.person_props(index);
        let subject = Subject {
            props: PersonProps::Slice(&props),
            events: self.person_events(index),
            who: Who::Indexed { index, data: self },
        };
        let person = self.person_id(index).unwrap_or_default();
        Ok(program.explanation(c, person, &subject, scratch, now))
    }
}

impl Batch<'_> {
    /// The node's truth for every person in `mask` (the result is a subset of `mask`).
    fn node(&self, id: NodeId, mask: &Bitset) -> Bitset {
        let program = self.program;
        let node = &program.nodes[id as usize];
        let result = match node.kind {
            NodeKind::And { start, len } => {
                let mut acc = mask.clone();
                for c in self.by_cost(start, len) {
                    if acc.none() {
                        break;
                    }
                    let r = self.node(c, &acc);
                    acc.and_assign(&r);
                }
                acc
            }
            NodeKind::Or { start, len } => {
                let mut acc = Bitset::zeros(mask.len());
                let mut rest = mask.clone();
                for c in self.by_cost(start, len) {
                    if rest.none() {
                        break;
                    }
                    let r = self.node(c, &rest);
                    acc.or_assign(&r);
                    rest.and_not_assign(&r);
                }
                acc
            }
            NodeKind::Prop(i) => self.column(&program.props[i as usize], mask),
            NodeKind::Behavior(i) => self.behavior(i as usize, mask),
            NodeKind::Cohort { target, invert } => {
                let mut r = mask.clone();
                if let Some(bits) = self.cohorts[target as usize].get() {
                    if invert {
                        r.and_not_assign(bits);
                    } else {
                        r.and_assign(bits);
                    }
                } else if !invert {
                    r = Bitset::zeros(mask.len());
                }
                r
            }
        };
        if node.negate {
            let mut r = mask.clone();
            r.and_not_assign(&result);
            r
        } else {
            result
        }
    }

    /// Evaluates cohort `c` (at its position in the set) over the selected persons into
    /// `cohorts[c]`; the cohorts it references must be done.
    fn settle(&self, c: usize) {
        let n = self.data.len();
        let bits = match &self.program.cohorts[c] {
            CohortCode::Deleted => Bitset::zeros(n),
            CohortCode::Static(members) => {
                let mut b = Bitset::zeros(n);
                for m in members {
                    if let Some(p) = self.data.resolve(m) {
                        b.set(p, true);
                    }
                }
                b.and_assign(&self.selected);
                b
            }
            CohortCode::Dynamic(root) => self.node(*root, &self.selected),
        };
        // Set once: each cohort of a share is taken by one thread only.
        drop(self.cohorts[c].set(bits));
    }

    /// The estimated work of cohort `c` alone (its references' cohorts not included).
    fn cohort_cost(&self, c: usize) -> u64 {
        match &self.program.cohorts[c] {
            CohortCode::Dynamic(root) => self.cost(*root),
            CohortCode::Deleted | CohortCode::Static(_) => 1,
        }
    }

    /// A group's children, cheapest first by this dataset's statistics: a behavioral leaf costs
    /// the number of persons having its event (times its filters), a property leaf a fraction of
    /// its column, a reference almost nothing. Leaves are pure, so order never changes results.
    fn by_cost(&self, start: u32, len: u32) -> smallvec::SmallVec<[NodeId; 8]> {
        let mut ids: smallvec::SmallVec<[NodeId; 8]> = self.program.children
            [start as usize..(start + len) as usize]
            .iter()
            .copied()
            .collect();
        ids.sort_by_cached_key(|&c| self.cost(c));
        ids
    }

    fn cost(&self, id: NodeId) -> u64 {
        let program = self.program;
        match program.nodes[id as usize].kind {
            NodeKind::And { start, len } | NodeKind::Or { start, len } => program.children
                [start as usize..(start + len) as usize]
                .iter()
                .map(|&c| self.cost(c))
                .sum(),
            NodeKind::Prop(i) => {
                let t = &program.props[i as usize];
                self.data.columns.get(t.key.0 as usize).map_or(0, |c| {
                    let pass = c.persons.len() as u64 / 8;
                    match t.test {
                        // An automaton run per distinct value: about 16 times a table lookup
                        // per person each.
                        Test::Regex(_) => pass + 2 * c.dict.len() as u64,
                        _ => pass,
                    }
                })
            }
            NodeKind::Behavior(i) => {
                let t = &program.behaviors[i as usize];
                let runs = self
                    .data
                    .name_runs
                    .get(t.event.0 as usize)
                    .map_or(0, |r| r.len().saturating_sub(1)) as u64;
                runs * (2 + t.filters.len() as u64)
            }
            NodeKind::Cohort { .. } => 1,
        }
    }

    /// A property condition, one pass over its column. When the mask holds many persons for
    /// the column's distinct values, every value is tested up front — string, date and number
    /// kernels over the whole dictionary, in every share (a table shared between shares made one
    /// wait for another, and a woken thread on a virtual machine starts late) — and the pass over
    /// persons is a branch-free table lookup. When the mask is sparse (an AND narrowed it), values
    /// are tested lazily, only those some person in the mask has.
    fn column(&self, t: &PropTest, mask: &Bitset) -> Bitset {
        let missing = t.missing ^ t.negate;
        let mut r = if missing {
            mask.clone()
        } else {
            Bitset::zeros(mask.len())
        };
        let Some(col) = self.data.columns.get(t.key.0 as usize) else {
            return r;
        };
        // `is_set` / `is_not_set`: every present value gives the same answer, so with the
        // column's presence bitset the leaf is a word operation per 64 persons.
        if let (Test::Set, Some(present)) = (&t.test, col.present()) {
            // All ones where persons with the key are in, and where persons without it are.
            let with = if t.invert ^ t.negate { 0 } else { u64::MAX };
            let without = if missing { u64::MAX } else { 0 };
            let (m, p) = (mask.words(), present.words());
            let words = r.words_mut();
            let lo = self.range.start as usize / 64;
            let hi = (self.range.end as usize).div_ceil(64).min(words.len());
            // Outside the range the mask is 0, and so is the result.
            for w in lo..hi {
                words[w] = m[w] & (p[w] & with | !p[w] & without);
            }
            return r;
        }
        // The mask's persons scaled to all shares, so the choice does not depend on the split.
        let count = mask.count().saturating_mul(self.shares);
        let range = self.range.clone();
        let regex = match &t.test {
            Test::Regex(res) if count < col.dict.len() && col.dict.len() >= REGEX_WITHIN_MIN => {
                self.regex_table_within(t, res, col, mask)
            }
            _ => None,
        };
        if regex.is_some() || col.dict.len() <= 64 || count >= col.dict.len() / 4 {
            let mut table = regex.unwrap_or_else(|| {
                // With several shares, a large dictionary's values no person of this share has
                // are never read here: the kernels run over the span of codes the share brought
                // in, and the few older codes it uses are tested one by one.
                if self.shares > 1 && col.dict.len() >= SPAN_MIN_VALUES {
                    let (span, older) = col.codes_used_in(range.clone());
                    self.table(t, col, span, &older)
                } else {
                    self.table(t, col, 0..col.dict.len(), &[])
                }
            });
            // The entry of persons without the key in dense codes: never a hit, never a failure.
            table.push(missing as u8);
            let words = r.words_mut();
            let m = mask.words();
            if missing {
                // r starts as the mask: clear the persons whose value fails.
                col.fold_words_in(
                    range,
                    |code| table[code as usize] == 0,
                    |w, fails| words[w] &= !fails,
                );
            } else {
                col.fold_words_in(
                    range,
                    |code| table[code as usize] != 0,
                    |w, hits| words[w] |= hits & m[w],
                );
            }
            return r;
        }
        const UNKNOWN: u8 = 2;
        let mut results = vec![UNKNOWN; col.dict.len()];
        let mut buf = String::new();
        col.for_each_code_of(range, mask.words(), |p, code| {
            let p = p as usize;
            let slot = &mut results[code as usize];
            if *slot == UNKNOWN {
                let v = &col.dict[code as usize];
                *slot =
                    (person::test(&t.test, v, self.times, &mut buf) ^ t.invert ^ t.negate) as u8;
            }
            let hit = *slot == 1;
            if hit != missing {
                r.set(p, hit);
            }
        });
        r
    }

    /// The leaf's result (after `invert` and `negate`, as 0 or 1) for the distinct values of
    /// `col` in `span` and in `older`, indexed by code (0 for the others).
    fn table(
        &self,
        t: &PropTest,
        col: &crate::data::Column,
        span: std::ops::Range<usize>,
        older: &[u32],
    ) -> Vec<u8> {
        let n = col.dict.len();
        let mut table = vec![0u8; n];
        let span = span.start.min(n)..span.end.min(n);
        /// `f(code)` into the entry of every code of `span` and of `older`.
        fn fill(
            table: &mut [u8],
            span: std::ops::Range<usize>,
            older: &[u32],
            mut f: impl FnMut(usize) -> bool,
        ) {
            for (c, o) in table[span.clone()].iter_mut().enumerate() {
                *o = f(span.start + c) as u8;
            }
            for &c in older {
                table[c as usize] = f(c as usize) as u8;
            }
        }
        match &t.test {
            Test::Contains(needles) if n > CACHE_MIN_VALUES => {
                let folded = col.folded(1);
                // The span as one search per needle over its bytes, marked by code; the older
                // codes one value at a time.
                for needle in needles.all() {
                    folded.mark_contains_in(needle, span.clone(), &mut table);
                    if !older.is_empty() {
                        let finder = memchr::memmem::Finder::new(needle.as_bytes());
                        for &c in older {
                            table[c as usize] |=
                                finder.find(folded.value(c as usize)).is_some() as u8;
                        }
                    }
                }
            }
            Test::Date(cmp, slot) if n > CACHE_MIN_VALUES => {
                let (f, dates) = (self.times[*slot as usize], col.dates(1));
                fill(&mut table, span.clone(), older, |c| {
                    dates[c].is_some_and(|d| match cmp {
                        DateCmp::Before => d < f,
                        DateCmp::After => d > f,
                        DateCmp::Exact => d == f,
                    })
                });
            }
            // Numbers converted once per column: a comparison per value, no parse, no dispatch.
            // A value that is not numeric is NaN, for which every comparison below is false.
            Test::Cmp(op, x) if n > CACHE_MIN_VALUES => {
                let (x, nums) = (*x, col.nums());
                fill(&mut table, span.clone(), older, |c| {
                    op.test(nums[c], x) & !nums[c].is_nan()
                });
            }
            Test::Between(lo, hi) if n > CACHE_MIN_VALUES => {
                let (lo, hi, nums) = (*lo, *hi, col.nums());
                fill(&mut table, span.clone(), older, |c| {
                    lo <= nums[c] && nums[c] <= hi
                });
            }
            Test::NotBetween(lo, hi) if n > CACHE_MIN_VALUES => {
                let (lo, hi, nums) = (*lo, *hi, col.nums());
                fill(&mut table, span.clone(), older, |c| {
                    nums[c] < lo || nums[c] > hi
                });
            }
            // The lazy DFAs when they can be built (once per table), the regexes otherwise.
            Test::Regex(res) if n >= REGEX_WITHIN_MIN => match res.automata() {
                Some(dfas) => {
                    let raw = col.raw(1);
                    dfas.fill(raw, span.clone(), &mut table);
                    let mut hits = vec![0u8; older.len()];
                    dfas.fill_codes(raw, older, &mut hits);
                    for (&c, h) in older.iter().zip(hits) {
                        table[c as usize] = h;
                    }
                }
                None => {
                    let mut buf = String::new();
                    fill(&mut table, span.clone(), older, |c| {
                        person::test(&t.test, &col.dict[c], self.times, &mut buf)
                    });
                }
            },
            test => {
                let mut buf = String::new();
                fill(&mut table, span.clone(), older, |c| {
                    person::test(test, &col.dict[c], self.times, &mut buf)
                });
            }
        }
        // `invert` and `negate`, once for every kernel.
        if t.invert ^ t.negate {
            table[span].iter_mut().for_each(|h| *h ^= 1);
            for &c in older {
                table[c as usize] ^= 1;
            }
        }
        table
    }

    /// [`Self::table`] for a regex leaf, only for the values some person in `mask` has (the
    /// others' entries are 0 and never read for a person in the mask): an AND that narrowed
    /// the mask to a third of a column of unique e-mails leaves a third of the automaton runs.
    /// `None` when the automata cannot be built.
    fn regex_table_within(
        &self,
        t: &PropTest,
        res: &crate::compile::Regexes,
        col: &crate::data::Column,
        mask: &Bitset,
    ) -> Option<Vec<u8>> {
        let dfas = res.automata()?;
        let mut table = vec![0u8; col.dict.len()];
        let mut codes = Vec::new();
        col.for_each_code_of(self.range.clone(), mask.words(), |_, code| {
            if table[code as usize] == 0 {
                table[code as usize] = 1;
                codes.push(code);
            }
        });
        let mut hits = vec![0u8; codes.len()];
        dfas.fill_codes(col.raw(1), &codes, &mut hits);
        let flip = (t.invert ^ t.negate) as u8;
        for (&c, h) in codes.iter().zip(hits) {
            table[c as usize] = h ^ flip;
        }
        Some(table)
    }

    /// A behavioral condition for the persons in `mask`. Only persons with events of the leaf's
    /// name can match, so this walks that name's runs (one per person having it), split across
    /// threads; everyone else is false without being looked at.
    fn behavior(&self, i: usize, mask: &Bitset) -> Bitset {
        let taken = self.shared.lock().ok().and_then(|mut s| s[i].take());
        if let Some(mut bits) = taken {
            bits.and_assign(mask);
            return bits;
        }
        let group = &self.groups[i];
        // A dense mask: this leaf scans (nearly) every run of its event anyway, so the other
        // leaves reading that event are computed in the same pass, each event range read once.
        if group.len() >= 2 && mask.count() * 2 >= self.population {
            let mut results = self.behaviors_shared(group, &self.selected);
            let mut mine = Bitset::zeros(mask.len());
            if let Ok(mut shared) = self.shared.lock() {
                for (&j, bits) in group.iter().zip(results.iter_mut()) {
                    let bits = std::mem::replace(bits, Bitset::zeros(0));
                    if j as usize == i {
                        mine = bits;
                    } else {
                        shared[j as usize] = Some(bits);
                    }
                }
            }
            mine.and_assign(mask);
            return mine;
        }
        let mut results = self.behaviors_shared(&[i as u32], mask);
        results.pop().unwrap_or_else(|| Bitset::zeros(mask.len()))
    }

    /// Behavioral leaves `leaves` (all reading the same event) over the persons of `mask`, in
    /// one pass over that event's runs: a result per leaf.
    fn behaviors_shared(&self, leaves: &[u32], mask: &Bitset) -> Vec<Bitset> {
        let program = self.program;
        let tests: Vec<&crate::compile::BehaviorTest> = leaves
            .iter()
            .map(|&i| &program.behaviors[i as usize])
            .collect();
        let mut results = vec![Bitset::zeros(mask.len()); leaves.len()];
        let Some(all) = self.data.name_runs.get(tests[0].event.0 as usize) else {
            return results;
        };
        // The runs of this share's persons (runs are in person order; the sentinel last, so
        // entry i + 1 always exists).
        let (lo, hi) = (
            all.partition_point(|r| r.person < self.range.start),
            all.partition_point(|r| r.person < self.range.end),
        );
        let mut buf = String::new();
        // Event filters on dictionary codes: each distinct value tested once per share.
        let mut codes: Vec<Vec<CodeFilter<'_>>> = tests
            .iter()
            .map(|t| CodeFilter::for_leaf(t, &self.data.ev_columns, self.times, &mut buf))
            .collect();
        // A sequence also reads the person's run of its second step: a cursor walks that name's
        // runs alongside (both in person order), so no per-person index is read.
        let mut seconds: Vec<Option<(Sym, &[NameRun])>> = tests
            .iter()
            .map(|t| match t.kind {
                BehaviorKind::Sequence { seq_event, .. } => {
                    let runs = self.data.name_runs.get(seq_event.0 as usize);
                    let runs = runs.map_or(&[][..], |r| {
                        &r[r.partition_point(|x| x.person < self.range.start)..]
                    });
                    Some((seq_event, runs))
                }
                _ => None,
            })
            .collect();
        // Leaves whose counts are differences of window positions are decided on the run's
        // timestamps alone, inline, their bounds resolved once for the pass.
        let plain: Vec<Option<behavioral::Plain>> = tests
            .iter()
            .map(|t| behavioral::Plain::of(t, self.times, self.now))
            .collect();
        let ts = self.data.events_view(&[]).ts;
        for i in lo..hi {
            let (r, next) = (all[i], all[i + 1]);
            let p = r.person as usize;
            if !mask.get(p) {
                continue;
            }
            let range = r.start as usize..next.start as usize;
            for ((((test, codes), result), second), plain) in tests
                .iter()
                .zip(&mut codes)
                .zip(&mut results)
                .zip(&mut seconds)
                .zip(&plain)
            {
                if let Some(plain) = plain {
                    result.insert_if(p, plain.hit(&ts[range.clone()]));
                    continue;
                }
                let mut found = [Run {
                    name: Sym::ABSENT,
                    start: 0,
                    end: 0,
                }];
                let mut names: &[Run] = &[];
                if let Some((seq, runs)) = second {
                    while runs.first().is_some_and(|x| x.person < r.person) {
                        *runs = &runs[1..];
                    }
                    if let [s, next, ..] = runs {
                        if s.person == r.person {
                            found[0] = Run {
                                name: *seq,
                                start: s.start,
                                end: next.start,
                            };
                            names = &found;
                        }
                    }
                }
                let hit = behavioral::eval_range(
                    test,
                    &self.data.events_view(names),
                    range.clone(),
                    self.times,
                    self.now,
                    &mut buf,
                    Some(codes),
                );
                result.insert_if(p, hit);
            }
        }
        results
    }
}

/// The ids of a bitset's members in byte order, borrowed from the dataset (see
/// [`Dataset::member_id_iter`]). Exact-size: `len()` is the number of members left.
#[derive(Debug, Clone)]
pub struct MemberIds<'a> {
    ids: &'a IdOrder,
    /// The members' ranks.
    ranks: Ones<Vec<u64>>,
    left: usize,
}

impl<'a> Iterator for MemberIds<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let k = self.ranks.next()?;
        self.left -= 1;
        Some(self.ids.id(k))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for MemberIds<'_> {}

impl MemberIds<'_> {
    /// The members' ranks in id byte order, ascending.
    pub(crate) fn ranks(self) -> Ones<Vec<u64>> {
        self.ranks
    }
}

#[cfg(test)]
mod tests {
    use crate::generate::{generate, GenerateOptions, Shape};
    use crate::BatchOptions;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    /// How long the spawned threads of a batch sleep before starting on their share.
    pub(super) static SPAWN_DELAY_MS: AtomicU64 = AtomicU64::new(0);
    /// Cohorts evaluated by a thread for a share not its own.
    pub(super) static HELPED: AtomicUsize = AtomicUsize::new(0);

    #[test]
    fn a_late_thread_leaves_its_share_to_the_others() {
        // Past the size at which persons are split; the wide shape's cohorts have references
        // (10 → 1, ¬3; 12 → 9) and behavioral leaves sharing an event.
        let dir = std::env::temp_dir().join(format!("cohort-engine-late-{}", std::process::id()));
        let opts = GenerateOptions {
            persons: 9_001,
            events_per_person: 10,
            shape: Shape::Wide,
            ..Default::default()
        };
        generate(&opts, &dir).unwrap();
        let (set, data) = crate::generate::tests::load(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let program = data.compile(&set).unwrap();
        let one = data
            .evaluate_bitsets(&program, opts.now, &BatchOptions::default().threads(1))
            .unwrap();
        assert!(one.values().any(|b| b.count() > 0));
        // The second thread starts long after the first has done everything: the first takes
        // every cohort of the second share, then every member list.
        SPAWN_DELAY_MS.store(200, Ordering::Relaxed);
        let helped = HELPED.load(Ordering::Relaxed);
        let counts = data
            .evaluate_each(
                &program,
                opts.now,
                &BatchOptions::default().threads(2),
                |id, b| (id, b),
            )
            .unwrap();
        SPAWN_DELAY_MS.store(0, Ordering::Relaxed);
        assert!(HELPED.load(Ordering::Relaxed) - helped >= set.len());
        assert_eq!(counts.len(), one.len());
        for (id, (same, bits)) in &counts {
            assert_eq!(id, same);
            assert_eq!(bits, &one[id], "cohort {id}");
        }
        // On time, the same.
        let two = data
            .evaluate_bitsets(&program, opts.now, &BatchOptions::default().threads(2))
            .unwrap();
        assert_eq!(two, one);
    }
}
