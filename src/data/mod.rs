//! The data side: persons with their properties and each person's events in time order.
//!
//! Two shapes serve the two ways the engine is used:
//! - [`Dataset`]: a whole population loaded from JSONL (`CLI.md` §2), for batch evaluation, in
//!   columns: person and distinct ids in byte arenas; person properties one dictionary-encoded
//!   column per key; events grouped by person and ordered by (name, time), as a timestamp column
//!   and a name column, with event properties one column per key (each key's distinct values
//!   once, a narrow code per event having it, presence as a ranked bitmap). A [`Projection`]
//!   keeps only what a cohort set reads.
//! - [`Person`] + [`History`]: one person that a service holds, built against an
//!   [`crate::Engine`]'s names, for the single-person fast path.

mod arena;
mod columns;
mod csv;
mod fast;
pub(crate) mod lines;
mod load;
#[cfg(feature = "parquet")]
mod parquet;
mod posthog;
mod projection;
mod scan;

pub use csv::CsvMembers;
pub use load::{LoadOptions, LoadStats, Progress};
pub(crate) use posthog::push_rfc3339;
pub use projection::Projection;

pub(crate) use columns::EventColumn;

use serde_json::{Map, Value};

use smallvec::SmallVec;

use std::collections::BTreeMap;

use crate::error::Error;
use crate::intern::{shared, Sym, Symbols, Table};
use crate::time::Micros;
use crate::value::Val;
use crate::{
    BatchOptions, Bitset, CohortId, CohortSet, MemberIds, Members, Program, Scratch, Timestamp,
};

/// One property: interned key and value. Slices of these are sorted by key.
pub(crate) type Prop = (Sym, Val);

/// Looks a key up in a key-sorted property slice.
#[inline]
pub(crate) fn lookup(props: &[Prop], key: Sym) -> Option<&Val> {
    if props.len() <= 8 {
        props.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    } else {
        props
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| &props[i].1)
    }
}

/// A person's properties as the evaluator reads them.
#[derive(Clone, Copy)]
pub(crate) enum PersonProps<'a> {
    /// Key-sorted (key, value) pairs.
    Slice(&'a [Prop]),
    /// Key-sorted (key, value id) pairs, the values in a shared table (the tracker's).
    Pooled {
        pairs: &'a [(Sym, u32)],
        values: &'a [Val],
    },
}

impl<'a> PersonProps<'a> {
    /// The value of property `key`, if the person has one.
    #[inline]
    pub(crate) fn get(self, key: Sym) -> Option<&'a Val> {
        match self {
            PersonProps::Slice(props) => lookup(props, key),
            PersonProps::Pooled { pairs, values } => pooled(pairs, values, key),
        }
    }
}

/// The value of `key` among (key, value id) pairs into `values`.
#[inline]
fn pooled<'a>(pairs: &[(Sym, u32)], values: &'a [Val], key: Sym) -> Option<&'a Val> {
    pairs
        .iter()
        .find(|(k, _)| *k == key)
        .map(|&(_, v)| &values[v as usize])
}

/// Converts a JSON properties object to a key-sorted slice with keys interned in the process-wide
/// tables ([`crate::intern::shared`]): every key is kept, so a person stays valid for cohorts
/// added later that read it. Null values are missing, so dropped.
pub(crate) fn props_shared(map: &Map<String, Value>) -> Box<[Prop]> {
    let mut out = Vec::new();
    props_shared_into(map, &mut out);
    out.into_boxed_slice()
}

/// [`props_shared`] into a reused buffer (cleared first).
pub(crate) fn props_shared_into(map: &Map<String, Value>, out: &mut Vec<Prop>) {
    out.clear();
    let entries: SmallVec<[(&str, Val); 16]> = map
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), Val::from_json(v)?)))
        .collect();
    let syms = shared().resolve(Table::Keys, entries.iter().map(|(k, _)| *k));
    out.extend(syms.into_iter().zip(entries).map(|(s, (_, v))| (s, v)));
    out.sort_by_key(|(k, _)| *k);
    out.dedup_by_key(|(k, _)| *k);
}

/// A read-only view of one person's events, found by name through [`Names`]: the events of one
/// name are contiguous and in time order (ties keep their input order).
#[derive(Clone, Copy)]
pub(crate) struct Events<'a> {
    pub ts: &'a [Micros],
    pub names: Names<'a>,
    pub props: EventProps<'a>,
}

/// How a view of events finds one name's run.
#[derive(Clone, Copy)]
pub(crate) enum Names<'a> {
    /// Each name's run, by ascending name: the owner keeps this index (a [`History`], the
    /// tracker's logs, a dataset's runs per person) and no name per event. Positions no run
    /// covers belong to no event of the view: an owner may keep spare room after a run, and a
    /// dataset's view spans every person's events.
    Runs(&'a [Run]),
}

/// One name's run in a [`Names::Runs`] index: its events are at positions `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub name: Sym,
    pub start: u32,
    pub end: u32,
}

impl Run {
    /// The run's positions.
    #[inline]
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Where the events' properties live.
#[derive(Clone, Copy)]
pub(crate) enum EventProps<'a> {
    /// A dataset's property columns; event `i` of the view is store position `base + i`.
    Columns {
        columns: &'a [Option<EventColumn>],
        base: usize,
    },
    /// One boxed slice per event.
    Boxed(&'a [Box<[Prop]>]),
    /// One id per event into a table of distinct property sets, each a key-sorted list of
    /// (key, value id) pairs into a table of distinct values (the tracker's).
    Sets {
        ids: &'a [u32],
        sets: &'a [Box<[(Sym, u32)]>],
        values: &'a [Val],
    },
}

impl<'a> Events<'a> {
    /// The positions of the events named `name` (in time order).
    #[inline]
    pub(crate) fn name_range(&self, name: Sym) -> std::ops::Range<usize> {
        match self.names {
            // A person has few distinct event names: a short scan beats two binary searches
            // over all of its events.
            Names::Runs(runs) => {
                for run in runs {
                    if run.name == name {
                        return run.range();
                    }
                    if run.name > name {
                        break;
                    }
                }
                0..0
            }
        }
    }

    /// Each name's run: the name and its events' positions, by ascending name.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (Sym, std::ops::Range<usize>)> + 'a {
        let names = self.names;
        let mut at = 0usize;
        std::iter::from_fn(move || match names {
            Names::Runs(runs) => {
                let run = runs.get(at)?;
                at += 1;
                Some((run.name, run.range()))
            }
        })
    }

    /// Where event `i` of this view lives in a dataset's column store (`None` for a history).
    #[inline]
    pub(crate) fn store_position(&self, i: usize) -> Option<usize> {
        match self.props {
            EventProps::Columns { base, .. } => Some(base + i),
            EventProps::Boxed(_) | EventProps::Sets { .. } => None,
        }
    }

    /// The value of property `key` of event `i`, if it has one.
    #[inline]
    pub(crate) fn get(&self, i: usize, key: Sym) -> Option<&'a Val> {
        match self.props {
            EventProps::Columns { columns, base } => {
                columns.get(key.0 as usize)?.as_ref()?.get(base + i)
            }
            EventProps::Boxed(b) => lookup(&b[i], key),
            EventProps::Sets { ids, sets, values } => pooled(&sets[ids[i] as usize], values, key),
        }
    }

    /// Calls `f` with every property of event `i`, by ascending key.
    pub(crate) fn for_each_prop(&self, i: usize, mut f: impl FnMut(Sym, &'a Val)) {
        match self.props {
            EventProps::Columns { columns, base } => {
                for (k, col) in columns.iter().enumerate() {
                    if let Some(v) = col.as_ref().and_then(|c| c.get(base + i)) {
                        f(Sym(k as u32), v);
                    }
                }
            }
            EventProps::Boxed(b) => b[i].iter().for_each(|(k, v)| f(*k, v)),
            EventProps::Sets { ids, sets, values } => sets[ids[i] as usize]
                .iter()
                .for_each(|&(k, v)| f(k, &values[v as usize])),
        }
    }
}

/// Where an event of `name` at `t` goes among events ordered by (name, time) whose runs are
/// `runs` (see [`Names::Runs`]) and timestamps `ts`: after the events of the same name and
/// timestamp. Returns the run's position in `runs`, the event's position, and whether the name
/// already has a run (when not, the position is where its run would start).
pub(crate) fn run_slot(runs: &[Run], ts: &[Micros], name: Sym, t: Micros) -> (usize, usize, bool) {
    let r = runs.partition_point(|run| run.name < name);
    match runs.get(r) {
        Some(run) if run.name == name => {
            let at = run.start as usize + ts[run.range()].partition_point(|&x| x <= t);
            (r, at, true)
        }
        Some(run) => (r, run.start as usize, false),
        None => (r, runs.last().map_or(0, |run| run.end as usize), false),
    }
}

/// Updates contiguous `runs` (no room between them) after an event of `name` was inserted at
/// position `at` (see [`run_slot`]).
pub(crate) fn runs_inserted(runs: &mut Vec<Run>, (r, at, exists): (usize, usize, bool), name: Sym) {
    // Runs after this name start one later; a new name gets its own run.
    if exists {
        runs[r].end += 1;
    } else {
        let at = at as u32;
        runs.insert(
            r,
            Run {
                name,
                start: at,
                end: at + 1,
            },
        );
    }
    for run in &mut runs[r + 1..] {
        run.start += 1;
        run.end += 1;
    }
}

/// Persons `0..n`, whose events `offsets` counts in person order (`n + 1` entries), in at most
/// `parts` contiguous non-empty ranges that cover them all, of about equal work: a person's
/// events plus one for the person (so persons without events are spread too). The loader sorts
/// each range's events on a thread; a batch evaluates each range on a thread.
pub(crate) fn split_persons(offsets: &[u32], parts: usize) -> Vec<std::ops::Range<usize>> {
    let Some(n) = offsets.len().checked_sub(1) else {
        return Vec::new();
    };
    let work = |p: usize| offsets[p] as u64 + p as u64;
    let parts = parts.max(1) as u64;
    let mut out = Vec::new();
    let mut start = 0usize;
    for k in 1..=parts {
        let target = work(n) * k / parts;
        // The first person whose cumulative work reaches the target (the last range ends at n).
        let end = if k == parts {
            n
        } else {
            let (mut lo, mut hi) = (start, n);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                if work(mid) < target {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo
        };
        if end > start {
            out.push(start..end);
        }
        start = end;
    }
    out
}

/// Dictionaries with more distinct values than this get the column caches (a case-folded arena
/// for `icontains`, parsed dates); smaller ones are tested value by value.
pub(crate) const CACHE_MIN_VALUES: usize = 64;

/// Columns with at least this many persons get person-indexed codes ([`Column::densify`]) for
/// their passes, built once per dataset (by the loader, for a projection's keys).
const DENSE_MIN_PERSONS: usize = 4096;

/// [`Column::codes_used_in`] tests the older codes a share uses one by one while they are at
/// most this fraction (1/N) of the codes before its span; past that, they join the span.
const OLDER_CODES_SHARE: usize = 16;

/// One person property in columnar form, dictionary-encoded: the persons that have it
/// (ascending), each one's value as a code into `dict` (the column's distinct values). Operators
/// run once per distinct value, and the per-person pass is a table lookup.
#[derive(Clone, Debug, Default)]
pub(crate) struct Column {
    pub persons: Vec<u32>,
    /// One code per entry of `persons`, as narrow as the dictionary allows.
    pub codes: columns::Codes,
    pub dict: Vec<Val>,
    /// While loading: each distinct value's exact encoding (member `i` is `dict[i]`).
    index: arena::StrSet,
    /// The dictionary case-folded into one arena, built by the first `icontains` on a large
    /// dictionary and kept for the next.
    folded: std::sync::OnceLock<crate::eval::strings::Strings>,
    /// The dictionary's string forms as they are, in one arena, which regex leaves' automata
    /// scan: built at load for a projection's regex keys, or by the first batch with a regex
    /// leaf on a large dictionary, and kept for the next.
    raw: std::sync::OnceLock<crate::eval::strings::Strings>,
    /// Each distinct value as a date, parsed by the first date leaf and kept for the next.
    dates: std::sync::OnceLock<Vec<Option<crate::time::Micros>>>,
    /// Each distinct value as a number (NaN for a value that is none), for numeric comparisons.
    nums: std::sync::OnceLock<Vec<f64>>,
    /// Every person's code, by person index, `dict.len()` for a person without the key: built
    /// once for a column that passes over persons read often, so a pass reads codes in place
    /// of (person, code) pairs and builds each 64-person word without a branch.
    dense: std::sync::OnceLock<columns::Codes>,
    /// The persons having the key, as a bitset, built with [`Column::dense`]: `is_set` and
    /// `is_not_set` are then word operations, not a pass over codes.
    present: std::sync::OnceLock<crate::Bitset>,
}

impl Column {
    /// The code of the value with encoding `enc` (see [`columns::encode`]), adding it when new.
    pub(crate) fn code_of(&mut self, enc: &[u8]) -> u32 {
        let code = self.index.intern(enc);
        if code as usize == self.dict.len() {
            self.dict.push(columns::decode(enc));
        }
        code
    }

    /// Appends person `p`'s value by its code (persons must come in ascending order).
    pub(crate) fn push_code(&mut self, p: u32, code: u32) {
        self.persons.push(p);
        self.codes.push(code);
    }

    /// Drops the loading index.
    pub(crate) fn finish(&mut self) {
        self.index = Default::default();
        self.persons.shrink_to_fit();
        self.codes.shrink();
        self.dict.shrink_to_fit();
    }

    /// The case-folded dictionary (built on first use, on up to `threads` threads).
    pub(crate) fn folded(&self, threads: usize) -> &crate::eval::strings::Strings {
        self.folded
            .get_or_init(|| crate::eval::strings::Strings::folded_on(&self.dict, threads))
    }

    /// The dictionary's string forms in one arena (built on first use, on up to `threads`
    /// threads).
    pub(crate) fn raw(&self, threads: usize) -> &crate::eval::strings::Strings {
        self.raw
            .get_or_init(|| crate::eval::strings::Strings::raw_on(&self.dict, threads))
    }

    /// The dictionary's values as dates (parsed on first use, on up to `threads` threads).
    pub(crate) fn dates(&self, threads: usize) -> &[Option<crate::time::Micros>] {
        self.dates
            .get_or_init(|| crate::eval::strings::dates(&self.dict, threads))
    }

    /// The dictionary's values as numbers (§B.1's coercion; NaN where a value is not numeric),
    /// converted on first use.
    pub(crate) fn nums(&self) -> &[f64] {
        self.nums.get_or_init(|| {
            self.dict
                .iter()
                .map(|v| v.num().unwrap_or(f64::NAN))
                .collect()
        })
    }

    /// Builds [`Column::dense`] and [`Column::present`] for a dataset of `n` persons, once, when
    /// the column has [`DENSE_MIN_PERSONS`] persons or more (a pass over fewer is cheap either
    /// way).
    pub(crate) fn densify(&self, n: usize) {
        if self.persons.len() < DENSE_MIN_PERSONS {
            return;
        }
        self.dense.get_or_init(|| {
            let mut dense = columns::Codes::filled(n, self.dict.len() as u32);
            self.for_each_code_in(0..n as u32, |p, code| dense.set(p as usize, code));
            dense
        });
        self.present.get_or_init(|| {
            let mut present = crate::Bitset::zeros(n);
            for &p in &self.persons {
                present.set(p as usize, true);
            }
            present
        });
    }

    /// The persons having the key, when [`Column::densify`] built them.
    pub(crate) fn present(&self) -> Option<&crate::Bitset> {
        self.present.get()
    }

    /// Person `p`'s value, if it has one.
    pub(crate) fn get(&self, p: u32) -> Option<&Val> {
        let i = self.persons.binary_search(&p).ok()?;
        self.dict.get(self.codes.get(i)? as usize)
    }

    /// (person, value) pairs in person order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u32, &Val)> {
        self.persons.iter().enumerate().filter_map(|(i, &p)| {
            let c = self.codes.get(i)?;
            Some((p, self.dict.get(c as usize)?))
        })
    }

    /// Calls `f` with every (person, code) pair of the persons in `range`, in person order (one
    /// loop per code width).
    #[inline]
    pub(crate) fn for_each_code_in(
        &self,
        range: std::ops::Range<u32>,
        mut f: impl FnMut(u32, u32),
    ) {
        use columns::Codes;
        let lo = self.persons.partition_point(|&p| p < range.start);
        let hi = lo + self.persons[lo..].partition_point(|&p| p < range.end);
        let persons = &self.persons[lo..hi];
        match &self.codes {
            Codes::U8(c) => persons
                .iter()
                .zip(&c[lo..hi])
                .for_each(|(&p, &c)| f(p, c as u32)),
            Codes::U16(c) => persons
                .iter()
                .zip(&c[lo..hi])
                .for_each(|(&p, &c)| f(p, c as u32)),
            Codes::U32(c) => persons.iter().zip(&c[lo..hi]).for_each(|(&p, &c)| f(p, c)),
        }
    }

    /// Calls `f` with the (person, code) pair of every person of `range` in `mask` (a bitset's
    /// words) having the key, in person order. With [`Column::dense`] codes this walks the
    /// mask's set bits and reads their codes, so its cost follows the mask; otherwise it walks
    /// the column's pairs and tests each person against the mask.
    #[inline]
    pub(crate) fn for_each_code_of(
        &self,
        range: std::ops::Range<u32>,
        mask: &[u64],
        mut f: impl FnMut(u32, u32),
    ) {
        #[inline]
        fn dense<T: Copy + Into<u32>>(
            codes: &[T],
            missing: u32,
            range: std::ops::Range<usize>,
            mask: &[u64],
            mut f: impl FnMut(u32, u32),
        ) {
            let end = range.end.min(codes.len());
            let first = range.start / 64;
            let words = mask
                .get(first..end.div_ceil(64).min(mask.len()))
                .unwrap_or_default();
            let persons = crate::eval::bitset::Ones::new(words)
                .map(|i| first * 64 + i)
                .skip_while(|&p| p < range.start)
                .take_while(|&p| p < end);
            for p in persons {
                let c = codes[p].into();
                if c != missing {
                    f(p as u32, c);
                }
            }
        }
        if let Some(codes) = self.dense.get() {
            let (range, missing) = (range.start as usize..range.end as usize, self.dict.len());
            match codes {
                columns::Codes::U8(c) => dense(c, missing as u32, range, mask, f),
                columns::Codes::U16(c) => dense(c, missing as u32, range, mask, f),
                columns::Codes::U32(c) => dense(c, missing as u32, range, mask, f),
            }
            return;
        }
        self.for_each_code_in(range, |p, code| {
            if mask
                .get(p as usize / 64)
                .is_some_and(|w| w >> (p % 64) & 1 == 1)
            {
                f(p, code);
            }
        });
    }

    /// The codes the persons of `range` use: a span holding the codes first used in `range` (and
    /// any later ones it uses), and the codes outside it, each once. The loader gives codes in
    /// order of first appearance, persons in ascending order, so for a column of mostly unique
    /// values (e-mails) a thread's share of the persons uses about its share of the dictionary
    /// and a few older values: its kernels need not run on the rest. When the older codes are
    /// many (values repeat across the dataset), they are folded into the span instead.
    pub(crate) fn codes_used_in(
        &self,
        range: std::ops::Range<u32>,
    ) -> (std::ops::Range<usize>, Vec<u32>) {
        // Codes below `first` were first used before the range.
        let mut first = 0u32;
        self.for_each_code_in(0..range.start, |_, c| first = first.max(c + 1));
        let mut seen = vec![false; first as usize];
        let (mut older, mut end) = (Vec::new(), first);
        self.for_each_code_in(range, |_, c| {
            end = end.max(c + 1);
            if c < first && !std::mem::replace(&mut seen[c as usize], true) {
                older.push(c);
            }
        });
        if older.len() * OLDER_CODES_SHARE > first as usize {
            (
                older.iter().min().map_or(first, |&m| m) as usize..end as usize,
                Vec::new(),
            )
        } else {
            (first as usize..end as usize, older)
        }
    }

    /// `f(code)` for each person of `range` having the key, the true results gathered as bits:
    /// `flush(w, bits)` once per 64-person word `w` holding any of them, in ascending order. The
    /// bits of a word build up in a register: setting them in memory one by one makes each
    /// person's read-modify-write wait for the previous one's store. When the column has its
    /// [`Column::dense`] codes, `f` is also called with `dict.len()` for the persons without
    /// the key, and must return false for it.
    #[inline]
    pub(crate) fn fold_words_in(
        &self,
        range: std::ops::Range<u32>,
        mut f: impl FnMut(u32) -> bool,
        mut flush: impl FnMut(usize, u64),
    ) {
        /// Word by word over person-indexed codes: no person ids to read, no branch per person.
        #[inline]
        fn dense<T: Copy + Into<u32>>(
            codes: &[T],
            range: std::ops::Range<usize>,
            mut f: impl FnMut(u32) -> bool,
            mut flush: impl FnMut(usize, u64),
        ) {
            let (mut p, end) = (range.start, range.end.min(codes.len()));
            while p < end {
                let (w, base) = (p / 64, p / 64 * 64);
                let hi = (base + 64).min(end);
                let mut bits = 0u64;
                for (j, &c) in codes[p..hi].iter().enumerate() {
                    bits |= (f(c.into()) as u64) << (p - base + j);
                }
                if bits != 0 {
                    flush(w, bits);
                }
                p = hi;
            }
        }
        if let Some(codes) = self.dense.get() {
            let range = range.start as usize..range.end as usize;
            match codes {
                columns::Codes::U8(c) => dense(c, range, f, flush),
                columns::Codes::U16(c) => dense(c, range, f, flush),
                columns::Codes::U32(c) => dense(c, range, f, flush),
            }
            return;
        }
        let (mut word, mut bits) = (usize::MAX, 0u64);
        self.for_each_code_in(range, |p, code| {
            let w = p as usize / 64;
            if w != word {
                if word != usize::MAX {
                    flush(word, bits);
                }
                (word, bits) = (w, 0);
            }
            bits |= (f(code) as u64) << (p % 64);
        });
        if word != usize::MAX {
            flush(word, bits);
        }
    }
}

/// Where one person's run of one name starts in the store. A name's list ends with a sentinel
/// (person `u32::MAX`, start = the end of the name's block), so entry `i`'s run is
/// `list[i].start..list[i + 1].start` (runs of a name lie end to end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NameRun {
    pub person: u32,
    pub start: u32,
}

/// Persons in id byte order, each person's rank in it, and the ids in that order end to end, so
/// a member list reads them front to back (in person order, ids such as UUIDs lie in the arena
/// in no relation to their byte order, and every id of a list was a cache miss).
#[derive(Debug)]
pub(crate) struct IdOrder {
    /// Rank of each person.
    pub rank: Box<[u32]>,
    /// The ids by rank as JSON strings, each followed by a comma: rank `k`'s is
    /// `json[ends[k - 1]..ends[k]]`. [`ID_PAD`] spaces follow the last, so a copy of that many
    /// bytes from any id's start stays inside.
    json: String,
    ends: Box<[usize]>,
    /// The ids by rank as they are, when some id's JSON form is not `"` + id + `"` (it needed
    /// escaping): `(text, ends)` as for `json`. Otherwise each id is read inside `json`.
    raw: Option<(String, Box<[usize]>)>,
    /// The longest id's length in bytes.
    pub longest: usize,
    /// The longest id's JSON form (with its comma) in bytes.
    longest_json: usize,
}

/// See [`IdOrder::json`]: member lists copy this many bytes per id (a fixed-size copy, no call
/// and no branch on the length) and keep the id's own.
const ID_PAD: usize = 64;

/// Entry `k` of text laid end to end with `ends`: `ends[k - 1]..ends[k]`.
#[inline]
fn bounds(ends: &[usize], k: usize) -> std::ops::Range<usize> {
    (if k == 0 { 0 } else { ends[k - 1] })..ends[k]
}

impl IdOrder {
    /// The id of rank `k`.
    #[inline]
    pub(crate) fn id(&self, k: usize) -> &str {
        match &self.raw {
            Some((text, ends)) => &text[bounds(ends, k)],
            None => {
                // `"id",` with nothing escaped: the id is plain UTF-8 between the quotes.
                let b = bounds(&self.ends, k);
                &self.json[b.start + 1..b.end - 2]
            }
        }
    }

    /// Appends the ids of `ranks` (ascending) as a JSON array.
    pub(crate) fn write_json(&self, ranks: impl Iterator<Item = usize>, out: &mut Vec<u8>) {
        out.push(b'[');
        let first = out.len();
        for k in ranks {
            let std::ops::Range { start, end } = bounds(&self.ends, k);
            let len = end - start;
            if len <= ID_PAD {
                let at = out.len();
                let padded: &[u8; ID_PAD] = self.json.as_bytes()[start..start + ID_PAD]
                    .try_into()
                    .expect("ID_PAD bytes");
                out.extend_from_slice(padded);
                out.truncate(at + len);
            } else {
                out.extend_from_slice(&self.json.as_bytes()[start..start + len]);
            }
        }
        // The last id's comma.
        if out.len() > first {
            out.pop();
        }
        out.push(b']');
    }

    /// An upper bound on the bytes [`IdOrder::write_json`] appends for `count` ids.
    pub(crate) fn json_bound(&self, count: usize) -> usize {
        2 + count * self.longest_json + ID_PAD
    }
}

/// A whole population: persons indexed `0..n`, their properties and events.
#[derive(Debug, Default)]
pub struct Dataset {
    pub(crate) symbols: Symbols,
    /// Person ids in one arena: member `i` is person `i`'s id.
    person_ids: arena::StrSet,
    /// Distinct ids in one arena, and each one's owner.
    distinct_ids: arena::StrSet,
    distinct_owner: Vec<u32>,
    /// Person properties by key (indexed by the key's [`Sym`]), each a sparse column.
    pub(crate) columns: Vec<Column>,
    /// Events before person p's, counted in person order: person p has
    /// `event_offsets[p + 1] - event_offsets[p]` events (a batch splits its work by them).
    event_offsets: Vec<u32>,
    /// Timestamps of all events, ordered by (name, person, time): each name's events form one
    /// block, its persons' runs end to end in person order.
    ev_ts: Vec<Micros>,
    /// Each person's runs by name (positions in `ev_ts`): person p's are
    /// `person_runs[person_run_offsets[p]..person_run_offsets[p + 1]]`.
    person_runs: Vec<Run>,
    person_run_offsets: Vec<u32>,
    /// Event properties by key (indexed by the key's [`Sym`]), each a column over all events.
    pub(crate) ev_columns: Vec<Option<EventColumn>>,
    /// For each event name, the persons having events of it and where their runs start (in
    /// person order, each run starting where the one before ends; a sentinel last: see
    /// [`NameRun`]).
    pub(crate) name_runs: Vec<Vec<NameRun>>,
    skipped_events: u64,
    /// Events of known persons the projection did not store.
    dropped_events: u64,
    /// Persons in the byte order of their ids, and each person's place in it: computed once, while
    /// the loader reads events (or on the first member list), so member lists never sort strings.
    id_order: std::sync::OnceLock<IdOrder>,
}

impl Dataset {
    /// Persons ordered by the UTF-8 bytes of their ids (`.0`), and the rank of each (`.1`):
    /// computed by the loader while it reads events (or here, on first use, for a dataset built
    /// otherwise).
    pub(crate) fn id_order(&self) -> &IdOrder {
        self.id_order.get_or_init(|| id_order_of(&self.person_ids))
    }
}

/// The byte order of the ids in `ids` (see [`Dataset::id_order`]).
pub(crate) fn id_order_of(ids: &arena::StrSet) -> IdOrder {
    let n = ids.len();
    let id = |p: u32| ids.get(p);
    // Sorted as integers: the 8 bytes after the ids' common prefix, big-endian and
    // zero-padded (so key order never contradicts byte order); only persons with equal
    // keys compare whole ids. A comparison sort of the ids themselves chases two arena
    // slices per comparison: 42 ms for 100,000 UUID-like ids, against 5 ms this way.
    let first = if n == 0 { &[][..] } else { id(0) };
    let mut common = first.len();
    for p in 1..n as u32 {
        common = first[..common]
            .iter()
            .zip(id(p))
            .take_while(|(x, y)| x == y)
            .count();
    }
    let mut keyed: Vec<(u64, u32)> = (0..n as u32)
        .map(|p| {
            let tail = &id(p)[common..];
            let mut k = [0u8; 8];
            let m = tail.len().min(8);
            k[..m].copy_from_slice(&tail[..m]);
            (u64::from_be_bytes(k), p)
        })
        .collect();
    keyed.sort_unstable();
    let mut i = 0;
    while i < keyed.len() {
        let mut j = i + 1;
        while j < keyed.len() && keyed[j].0 == keyed[i].0 {
            j += 1;
        }
        if j - i > 1 {
            keyed[i..j].sort_unstable_by(|a, b| id(a.1).cmp(id(b.1)));
        }
        i = j;
    }
    let order: Vec<u32> = keyed.into_iter().map(|(_, p)| p).collect();
    let mut rank = vec![0u32; n];
    let mut json = String::with_capacity(ids.bytes_len() + 3 * n + ID_PAD);
    let mut ends = Vec::with_capacity(n);
    let (mut longest, mut longest_json, mut escaped) = (0, 0, false);
    for (k, &p) in order.iter().enumerate() {
        rank[p as usize] = k as u32;
        let id = ids.get_str(p);
        longest = longest.max(id.len());
        let at = json.len();
        push_json_str(&mut json, id);
        json.push(',');
        ends.push(json.len());
        longest_json = longest_json.max(json.len() - at);
        escaped |= json.len() - at != id.len() + 3;
    }
    json.extend(std::iter::repeat_n(' ', ID_PAD));
    // Kept only when some id was escaped: otherwise every id is read inside its JSON form.
    let raw = escaped.then(|| {
        let mut text = String::with_capacity(ids.bytes_len());
        let mut raw_ends = Vec::with_capacity(n);
        for &p in &order {
            text.push_str(ids.get_str(p));
            raw_ends.push(text.len());
        }
        (text, raw_ends.into_boxed_slice())
    });
    IdOrder {
        rank: rank.into_boxed_slice(),
        json,
        ends: ends.into_boxed_slice(),
        raw,
        longest,
        longest_json,
    }
}

/// Appends `s` as a JSON string (serde_json's escaping; a string needing none copied as it is).
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    // A fold without early exit, so the check runs 16 or 32 bytes at a time.
    let escaped = s
        .bytes()
        .fold(false, |e, b| e | (b == b'"') | (b == b'\\') | (b < 0x20));
    if escaped {
        out.push_str(&serde_json::Value::from(s).to_string());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// Every public method of [`Dataset`] is here; the loader's constructors are in `load.rs`, and
/// the bodies live with the code they belong to (batch evaluation in `eval/batch.rs`, CSV uploads
/// in `csv.rs`).
impl Dataset {
    /// Evaluates cohorts of `set` for every person at `now`.
    ///
    /// # Errors
    /// `unknown_cohort` when a requested id is absent or deleted.
    pub fn evaluate(
        &self,
        set: &CohortSet,
        now: impl Into<Timestamp>,
        opts: &BatchOptions,
    ) -> Result<Members, Error> {
        self.evaluate_in(set, now, opts)
    }

    /// Compiles a set against this dataset's names.
    ///
    /// # Errors
    /// As [`Program::compile`].
    pub fn compile(&self, set: &CohortSet) -> Result<Program, Error> {
        self.compile_in(set)
    }

    /// Evaluates an already compiled program (from [`Dataset::compile`]) and returns member ids.
    ///
    /// # Errors
    /// As [`Dataset::evaluate`].
    pub fn evaluate_program(
        &self,
        program: &Program,
        now: impl Into<Timestamp>,
        opts: &BatchOptions,
    ) -> Result<Members, Error> {
        self.evaluate_program_in(program, now, opts)
    }

    /// Evaluates a compiled program and returns each requested cohort's members as a bitset over
    /// person indices (see [`Dataset::person_id`]).
    ///
    /// # Errors
    /// As [`Dataset::evaluate`].
    pub fn evaluate_bitsets(
        &self,
        program: &Program,
        now: impl Into<Timestamp>,
        opts: &BatchOptions,
    ) -> Result<BTreeMap<CohortId, Bitset>, Error> {
        self.evaluate_bitsets_in(program, now, opts)
    }

    /// Evaluates like [`Dataset::evaluate_bitsets`], then hands each requested cohort's members
    /// to `each` (once per cohort, however often it is asked for), on the evaluation's own
    /// threads, once every cohort is done (largest first, in no fixed order), and returns what
    /// it made per cohort id. For callers that turn the
    /// bitsets into output (member lists, counts, keys): that work runs in parallel on threads
    /// that are already running, where threads of the caller's own would have to be started.
    ///
    /// ```
    /// # use cohort_engine::{BatchOptions, CohortSet, Dataset, Timestamp};
    /// let set = CohortSet::from_json(
    ///     r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
    ///         {"type": "person", "key": "plan", "operator": "exact", "value": "pro"}]}}}]"#,
    /// )?;
    /// let data = Dataset::from_jsonl(
    ///     r#"{"id": "a", "properties": {"plan": "pro"}}
    /// {"id": "b", "properties": {"plan": "free"}}"#,
    ///     "",
    /// )?;
    /// let program = data.compile(&set)?;
    /// let now: Timestamp = "2026-01-01T00:00:00Z".parse()?;
    /// let lists = data.evaluate_each(&program, now, &BatchOptions::default(), |_, bits| {
    ///     let mut out = Vec::new();
    ///     data.write_member_ids_json(&bits, &mut out);
    ///     out
    /// })?;
    /// assert_eq!(lists[&1], br#"["a"]"#);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// As [`Dataset::evaluate`].
    pub fn evaluate_each<R: Send>(
        &self,
        program: &Program,
        now: impl Into<Timestamp>,
        opts: &BatchOptions,
        each: impl Fn(CohortId, Bitset) -> R + Sync,
    ) -> Result<BTreeMap<CohortId, R>, Error> {
        self.evaluate_each_in(program, now, opts, each)
    }

    /// The ids of the persons in `members` (a bitset from [`Dataset::evaluate_bitsets`]) in
    /// byte order, borrowed from the dataset: [`Dataset::evaluate`]'s member lists without a
    /// `String` per member, for callers that write them out at once.
    pub fn member_ids<'a>(&'a self, members: &Bitset) -> Vec<&'a str> {
        self.member_ids_in(members).collect()
    }

    /// [`Dataset::member_ids`] as an exact-size iterator, for callers that write each id out
    /// as it comes: no list is built (it takes one bit per person).
    pub fn member_id_iter(&self, members: &Bitset) -> MemberIds<'_> {
        self.member_ids_in(members)
    }

    /// Appends [`Dataset::member_ids`] to `out` as a JSON array of strings (`["a","b"]`, as
    /// `serde_json` writes them). The ids' JSON forms are rendered once per dataset, in byte
    /// order: writing a list copies one per member, with no escaping check and no allocation
    /// past `out`'s growth. [`Dataset::member_ids_json_len`] bounds what is appended.
    pub fn write_member_ids_json(&self, members: &Bitset, out: &mut Vec<u8>) {
        self.id_order()
            .write_json(self.member_ids_in(members).ranks(), out)
    }

    /// An upper bound on the bytes [`Dataset::write_member_ids_json`] appends for a bitset of
    /// `count` members: reserve it, and the list is written without the buffer growing.
    pub fn member_ids_json_len(&self, count: usize) -> usize {
        self.id_order().json_bound(count)
    }

    /// Is person `index` a member of `cohort` at `now`? The per-person path over a loaded
    /// dataset (`program` from [`Dataset::compile`]); [`Dataset::evaluate`] is much faster for
    /// many persons.
    ///
    /// # Errors
    /// `unknown_cohort` when the cohort is not in the program's set.
    pub fn matches(
        &self,
        program: &Program,
        cohort: CohortId,
        index: usize,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
    ) -> Result<bool, Error> {
        self.matches_in(program, cohort, index, now, scratch)
    }

    /// Explains person `index`'s membership of `cohort` at `now` (see [`crate::Engine::explain`]).
    ///
    /// # Errors
    /// `unknown_cohort` when the cohort is not in the program's set.
    pub fn explain(
        &self,
        program: &Program,
        cohort: CohortId,
        index: usize,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
    ) -> Result<crate::eval::explain::Explanation, Error> {
        self.explain_in(program, cohort, index, now, scratch)
    }

    /// Resolves a static-cohort CSV upload against this dataset.
    ///
    /// # Errors
    /// `invalid_input` when there is no header row or it has none of the columns `person_id`,
    /// `distinct_id`, `email`.
    pub fn static_members_from_csv(&self, csv: &str) -> Result<CsvMembers, Error> {
        self.static_members_from_csv_in(csv)
    }

    #[cfg(feature = "store")]
    /// Person `p`'s properties as a JSON object (arrays and objects come back from their string
    /// form).
    pub(crate) fn person_properties_json(&self, p: usize) -> Map<String, Value> {
        self.person_props(p)
            .iter()
            .filter_map(|(k, v)| {
                let key = self.symbols.keys.name(*k)?;
                let value = match v {
                    Val::Bool(b) => Value::Bool(*b),
                    Val::Num(n) => Value::Number(n.clone()),
                    Val::Str(s) => Value::String(s.to_string()),
                    Val::Json(s) => {
                        serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.to_string()))
                    }
                };
                Some((key.to_string(), value))
            })
            .collect()
    }

    /// Number of persons.
    pub fn len(&self) -> usize {
        self.person_ids.len()
    }

    /// Events counted in person order (`n + 1` entries once loaded; see the field).
    pub(crate) fn event_offsets(&self) -> &[u32] {
        &self.event_offsets
    }

    /// True when there are no persons.
    pub fn is_empty(&self) -> bool {
        self.person_ids.is_empty()
    }

    /// Number of events stored (attached to persons and kept by the load's projection).
    pub fn event_count(&self) -> usize {
        self.ev_ts.len()
    }

    /// Events skipped because no person owns their distinct id.
    pub fn skipped_events(&self) -> u64 {
        self.skipped_events
    }

    /// The id of person `index` (its string form).
    pub fn person_id(&self, index: usize) -> Option<&str> {
        (index < self.person_ids.len()).then(|| self.person_ids.get_str(index as u32))
    }

    /// The length in bytes of the longest person id (0 with no persons): with
    /// [`Bitset::count`], a bound for sizing a buffer of member ids.
    pub fn longest_person_id(&self) -> usize {
        self.id_order().longest
    }

    /// Every distinct id with the index of the person owning it (in no particular order).
    pub fn distinct_owners(&self) -> impl Iterator<Item = (&str, usize)> {
        (0..self.distinct_ids.len() as u32).map(|d| {
            (
                self.distinct_ids.get_str(d),
                self.distinct_owner[d as usize] as usize,
            )
        })
    }

    /// The index of the person with this id, or else the person owning this distinct id
    /// (a person id wins over a distinct id with the same text).
    pub fn resolve(&self, id_or_distinct_id: &str) -> Option<usize> {
        self.person_index(id_or_distinct_id)
            .or_else(|| self.distinct_owner(id_or_distinct_id))
    }

    /// The index of the person with this id.
    pub(crate) fn person_index(&self, id: &str) -> Option<usize> {
        self.person_ids.find(id.as_bytes()).map(|i| i as usize)
    }

    /// The index of the person owning this distinct id.
    pub(crate) fn distinct_owner(&self, distinct_id: &str) -> Option<usize> {
        self.distinct_ids
            .find(distinct_id.as_bytes())
            .map(|d| self.distinct_owner[d as usize] as usize)
    }

    /// The index of the person with this property `key` equal to `value`, ASCII-case-insensitively
    /// (used for CSV uploads keyed by email).
    pub fn find_by_property(&self, key: &str, value: &str) -> Option<usize> {
        let k = self.symbols.keys.get(key);
        let needle = crate::value::lower(value);
        let col = self.columns.get(k.0 as usize)?;
        col.iter()
            .find(|(_, v)| v.with_str(|s| crate::value::eq_lower(s, &needle)))
            .map(|(p, _)| p as usize)
    }

    /// Approximate heap bytes used by events (timestamps, runs and property columns).
    pub fn event_bytes(&self) -> usize {
        self.name_runs.iter().map(|r| r.len() * 8).sum::<usize>()
            + self.ev_ts.len() * 8
            + self.person_runs.len() * std::mem::size_of::<Run>()
            + self.person_run_offsets.len() * 4
            + self
                .ev_columns
                .iter()
                .flatten()
                .map(EventColumn::heap_bytes)
                .sum::<usize>()
    }

    /// Approximate heap bytes used by persons (ids, indices, property columns).
    pub fn person_bytes(&self) -> usize {
        let ids = self.person_ids.heap_bytes() + self.distinct_ids.heap_bytes();
        let columns: usize = self
            .columns
            .iter()
            .map(|c| {
                c.persons.len() * 4
                    + c.codes.bytes()
                    + c.dict.len() * (std::mem::size_of::<Val>() + 16)
            })
            .sum();
        ids + self.distinct_owner.len() * 4 + self.event_offsets.len() * 4 + columns
    }

    /// Person `p`'s properties as a key-sorted slice (gathered from the columns; for
    /// per-person paths such as explanations, not for batch evaluation).
    pub(crate) fn person_props(&self, p: usize) -> Box<[Prop]> {
        let mut out = Vec::new();
        for (k, col) in self.columns.iter().enumerate() {
            if let Some(v) = col.get(p as u32) {
                out.push((Sym(k as u32), v.clone()));
            }
        }
        out.into_boxed_slice()
    }

    /// Person `p`'s events: its runs (by name) over the dataset's name-major columns.
    pub(crate) fn person_events(&self, p: usize) -> Events<'_> {
        let at = |i: usize| self.person_run_offsets.get(i).map_or(0, |&o| o as usize);
        let (a, b) = (at(p), at(p + 1).max(at(p)));
        self.events_view(&self.person_runs[a..b])
    }

    /// A view over all of the dataset's events whose names are found through `runs` (positions
    /// in the dataset's columns): a person's runs, or the few a batch leaf reads.
    #[inline]
    pub(crate) fn events_view<'a>(&'a self, runs: &'a [Run]) -> Events<'a> {
        Events {
            ts: &self.ev_ts,
            names: Names::Runs(runs),
            props: EventProps::Columns {
                columns: &self.ev_columns,
                base: 0,
            },
        }
    }
}

/// One person for the single-person fast path: id, distinct ids and properties. Build it with
/// [`crate::Engine::person`]. Keys are interned in the process-wide name tables, which only ever
/// grow, so a person stays valid with every engine: one built before a
/// [`crate::LiveEngine`] update is answered correctly by the engine after it.
#[derive(Clone, Debug)]
pub struct Person {
    pub(crate) id: Box<str>,
    pub(crate) distinct_ids: Vec<Box<str>>,
    pub(crate) props: Box<[Prop]>,
}

impl Person {
    /// The person id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The distinct ids.
    pub fn distinct_ids(&self) -> impl Iterator<Item = &str> {
        self.distinct_ids.iter().map(|s| &**s)
    }
}

/// One person's event history for the single-person fast path, kept ordered by event name and
/// time. Events may be pushed out of order; each is inserted at its place (after events of the
/// same name and timestamp). Build it with [`crate::Engine::history`] and fill it with
/// [`crate::Engine::record`]. Like [`Person`], it stays valid across engine updates: every event
/// name and property key is kept.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub(crate) ts: Vec<Micros>,
    pub(crate) name: Vec<Sym>,
    pub(crate) props: Vec<Box<[Prop]>>,
    /// Each name's run, by ascending name, contiguous.
    runs: Vec<Run>,
}

impl History {
    /// Number of events held.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when no event is held.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Rebuilds the run index from the name column.
    fn index_runs(&mut self) {
        self.runs.clear();
        for (i, &n) in self.name.iter().enumerate() {
            let i = i as u32;
            match self.runs.last_mut() {
                Some(run) if run.name == n => run.end = i + 1,
                _ => self.runs.push(Run {
                    name: n,
                    start: i,
                    end: i + 1,
                }),
            }
        }
    }

    pub(crate) fn insert(&mut self, ts: Micros, name: Sym, props: Box<[Prop]>) {
        // Keep (name, time) order: a leaf reads one name's events, in time order.
        let slot = run_slot(&self.runs, &self.ts, name, ts);
        let at = slot.1;
        self.ts.insert(at, ts);
        self.name.insert(at, name);
        self.props.insert(at, props);
        runs_inserted(&mut self.runs, slot, name);
    }

    /// Drops events older than `before`, for services that keep a bounded history.
    pub fn truncate_before(&mut self, before: Micros) {
        let keep: Vec<bool> = self.ts.iter().map(|&t| t >= before).collect();
        let mut k = keep.iter();
        self.ts.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.name.retain(|_| *k.next().unwrap_or(&true));
        let mut k = keep.iter();
        self.props.retain(|_| *k.next().unwrap_or(&true));
        self.index_runs();
    }

    pub(crate) fn events(&self) -> Events<'_> {
        Events {
            ts: &self.ts,
            names: Names::Runs(&self.runs),
            props: EventProps::Boxed(&self.props),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn codes_of_a_mask_alike_with_and_without_person_indexed_codes() {
        // 6,000 persons, every seventh without the key; masks of several densities; ranges on
        // and off 64-person words, empty, and past the persons.
        let n = 6_000u32;
        let mut sparse = super::Column {
            dict: (0..300)
                .map(|i| crate::value::Val::Str(format!("v{i}").into()))
                .collect(),
            ..Default::default()
        };
        for p in (0..n).filter(|p| p % 7 != 3) {
            sparse.push_code(p, p * 13 % 300);
        }
        let dense = sparse.clone();
        dense.densify(n as usize);
        assert!(dense.dense.get().is_some() && sparse.dense.get().is_none());
        let present = dense.present().unwrap();
        assert!((0..n as usize).all(|p| present.get(p) == (p % 7 != 3)));
        for step in [1, 2, 5, 64, 131] {
            let mut mask = crate::Bitset::zeros(n as usize);
            for p in (0..n as usize).step_by(step) {
                mask.set(p, true);
            }
            for range in [
                0..n,
                0..0,
                5..5,
                1..63,
                64..128,
                70..4_001,
                4_000..n,
                5_990..n + 40,
            ] {
                let want: Vec<(u32, u32)> = (range.start..range.end.min(n))
                    .filter(|&p| mask.get(p as usize) && p % 7 != 3)
                    .map(|p| (p, p * 13 % 300))
                    .collect();
                for col in [&sparse, &dense] {
                    let mut got = Vec::new();
                    col.for_each_code_of(range.clone(), mask.words(), |p, c| got.push((p, c)));
                    assert_eq!(got, want, "step {step}, range {range:?}");
                }
            }
        }
    }

    #[test]
    fn json_strings_as_serde_json_writes_them() {
        for s in [
            "plain",
            "",
            "é ü 日本",
            "a\"b",
            "back\\slash",
            "nl\nx",
            "\u{0}",
            "\u{1f}",
            "\u{7f}",
        ] {
            let mut out = String::new();
            super::push_json_str(&mut out, s);
            assert_eq!(out, serde_json::Value::from(s).to_string(), "{s:?}");
        }
    }

    #[test]
    fn member_lists_as_json_arrays_plain_and_escaped() {
        // Ids with and without characters JSON escapes, one longer than the fixed-size copy,
        // and lists of every subset of them (in byte order, as serde_json writes the array).
        let long = "L".repeat(super::ID_PAD + 5);
        for escaped in [false, true] {
            let mut ids: Vec<String> = vec!["b".into(), "a".into(), "é日本".into(), long.clone()];
            ids.push(String::new());
            if escaped {
                ids.extend(["q\"uote".into(), "back\\slash".into(), "nl\n".into()]);
            }
            let mut set = super::arena::StrSet::default();
            for id in &ids {
                set.intern(id.as_bytes());
            }
            let order = super::id_order_of(&set);
            assert_eq!(order.raw.is_some(), escaped);
            let mut sorted = ids.clone();
            sorted.sort();
            for (k, want) in sorted.iter().enumerate() {
                assert_eq!(order.id(k), want);
            }
            for mask in 0u32..1 << ids.len() {
                let members: Vec<usize> = (0..ids.len()).filter(|i| mask >> i & 1 == 1).collect();
                let mut ranks: Vec<usize> =
                    members.iter().map(|&p| order.rank[p] as usize).collect();
                ranks.sort();
                let mut out = b"x".to_vec();
                order.write_json(ranks.iter().copied(), &mut out);
                let mut want: Vec<&str> = members.iter().map(|&p| ids[p].as_str()).collect();
                want.sort();
                let want = format!("x{}", serde_json::to_string(&want).unwrap());
                assert_eq!(String::from_utf8(out.clone()).unwrap(), want, "{members:?}");
                assert!(out.len() - 1 <= order.json_bound(members.len()));
            }
        }
    }
}
