//! The tracker's compact per-person state: event logs with one property-set id per event,
//! membership bits and validity horizons in flat tables with one stride per person.
//!
//! Memory is what bounds a tracker: a dataset keeps events as dictionary-coded columns, and a
//! tracker copying them as one boxed property slice per event used seven times as much. Here an
//! event costs its timestamp and a 4-byte id into a table of distinct property sets (events of one
//! kind mostly repeat the same few combinations), names are kept once per run, and a person's
//! memberships are bits.

use std::borrow::Borrow;
use std::hash::{BuildHasher, BuildHasherDefault, Hash};

use hashbrown::HashTable;
use serde_json::{Map, Value};

use crate::data::{EventProps, Events, Names, PersonProps, Run};
use crate::intern::{shared, Fnv, Sym, Table};
use crate::time::Micros;
use crate::value::Val;

/// Distinct items, each stored once, with a dense id each; found by hashing the item itself
/// (the table holds ids only). Grows only: an id stays valid for whoever holds it.
pub(super) struct Pool<T> {
    items: Vec<T>,
    index: HashTable<u32>,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            items: Vec::new(),
            index: HashTable::new(),
        }
    }
}

fn hash_of<Q: Hash + ?Sized>(q: &Q) -> u64 {
    BuildHasherDefault::<Fnv>::default().hash_one(q)
}

impl<T: Hash + Eq> Pool<T> {
    /// The id of the item equal to `probe`, adding `make(probe)` when there is none.
    pub(super) fn intern<Q>(&mut self, probe: &Q, make: impl FnOnce(&Q) -> T) -> u32
    where
        T: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let items = &self.items;
        let h = hash_of(probe);
        if let Some(&id) = self
            .index
            .find(h, |&id| items[id as usize].borrow() == probe)
        {
            return id;
        }
        let id = self.items.len() as u32;
        self.items.push(make(probe));
        let items = &self.items;
        self.index
            .insert_unique(h, id, |&id| hash_of(items[id as usize].borrow()));
        id
    }

    /// Every item, by id.
    pub(super) fn items(&self) -> &[T] {
        &self.items
    }

    /// Approximate heap bytes, with `item` the heap bytes each item owns.
    pub(super) fn heap_bytes(&self, item: impl Fn(&T) -> usize) -> usize {
        self.items.capacity() * std::mem::size_of::<T>()
            + self.items.iter().map(item).sum::<usize>()
            + self.index.capacity() * (std::mem::size_of::<u32>() + 1)
    }
}

/// Heap bytes a value owns.
pub(super) fn val_bytes(v: &Val) -> usize {
    match v {
        Val::Str(s) | Val::Json(s) => s.len(),
        _ => 0,
    }
}

/// Distinct event-property sets, each a key-sorted list of (key, value id) pairs into the
/// tracker's value pool; id 0 is the empty set.
pub(super) struct PropSets(Pool<Box<[(Sym, u32)]>>);

impl Default for PropSets {
    fn default() -> Self {
        let mut pool = Pool::default();
        pool.intern(&[][..], |_| Box::default());
        PropSets(pool)
    }
}

impl PropSets {
    /// The id of the set of `pairs` (sorted by key), added when new.
    pub(super) fn intern(&mut self, pairs: &[(Sym, u32)]) -> u32 {
        if pairs.is_empty() {
            return 0;
        }
        self.0.intern(pairs, |p| p.into())
    }

    /// Approximate heap bytes (the values are the pool's).
    pub(super) fn heap_bytes(&self) -> usize {
        self.0.heap_bytes(|set| set.len() * 8)
    }
}

/// One tracked person's state.
pub(super) struct Tracked {
    /// Id, distinct ids and properties (updated in place by `$set` / `$unset`).
    pub person: Profile,
    pub log: Log,
    /// Earliest horizon over the time-dependent cohorts (`None`: never).
    pub horizon: Option<Micros>,
    /// Bumped whenever a new heap entry is pushed for this person, so stale ones are skipped.
    pub generation: u32,
}

/// Reads one cell in each of the first [`TOUCHED_LINES`] cache lines of `cells`, so that the
/// lines a person's event is about to read all start loading at once rather than one miss after
/// another (the tracker's state outgrows the cache: each of them is a trip to memory). A long
/// log is searched, not read whole, so touching more of it would only cost.
#[inline]
pub(super) fn touch<T: Copy>(cells: &[T]) {
    let step = (64 / std::mem::size_of::<T>().max(1)).max(1);
    for c in cells.iter().step_by(step).take(TOUCHED_LINES) {
        std::hint::black_box(*c);
    }
}

/// At most this many cache lines of one slice are [`touch`]ed (1 KiB).
const TOUCHED_LINES: usize = 16;

impl Tracked {
    /// [`touch`]es the state an event of this person reads: its log and its properties.
    #[inline]
    pub(super) fn touch(&self) {
        touch(&self.log.runs);
        touch(&self.log.ts);
        touch(&self.log.props);
        touch(&self.person.props);
    }
}

/// Distinct id → person: an open-addressing table whose slots hold a 32-bit tag of the id's
/// hash, the owner and the id's place in one arena of id bytes. A lookup reads one slot's cache
/// line and the id's bytes: two trips to memory where a chain through the person's profile took
/// five (a fifth of an event's time on a tracker too large for the cache), and one fewer than a
/// table keeping its control bytes apart from its entries.
#[derive(Default)]
pub(super) struct DistinctIds {
    /// A power of two long (or empty), at most 7/8 full (a hit reads 4–5 slots at worst on
    /// average, 16 bytes each, mostly in one cache line); linear probing from `tag & mask`.
    slots: Vec<IdSlot>,
    /// Occupied slots.
    len: usize,
    /// The ids, each as a 4-byte little-endian length and its bytes; removed ids leave holes
    /// until [`DistinctIds::compact`].
    bytes: Vec<u8>,
    /// Bytes of `bytes` no slot points to.
    garbage: usize,
}

/// One slot of [`DistinctIds`]: `tag` 0 is empty.
#[derive(Clone, Copy, Default)]
struct IdSlot {
    tag: u32,
    person: u32,
    at: usize,
}

/// The tag of an id's hash: its high 32 bits, never 0 (the empty tag). A slot's home is
/// `tag & mask`, so that growing and removing need no hash of the bytes.
#[inline]
fn tag_of(h: u64) -> u32 {
    ((h >> 32) as u32).max(1)
}

/// The id stored at `at` in an arena.
#[inline]
fn id_at(bytes: &[u8], at: usize) -> &[u8] {
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes")) as usize;
    &bytes[at + 4..at + 4 + len]
}

/// The hash of a distinct id, eight bytes at a time: ids are long (UUIDs are 36 bytes) and
/// FNV's byte-at-a-time multiply chain was a fifth of an event's lookup. Not DoS-resistant,
/// like [`Fnv`]: the ids come from the data a user loads and streams into their own process.
#[inline]
fn hash_id(b: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("eight bytes"));
        h = (h.rotate_left(23) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = (h.rotate_left(23) ^ u64::from_le_bytes(w)).wrapping_mul(K);
    }
    // A full finalizer (MurmurHash3's fmix64): a multiply chain mixes upwards only, and ids
    // that differ in their last bytes (`u000017`) clustered into long probe runs without it.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

impl DistinctIds {
    /// The person owning `distinct_id`.
    #[inline]
    pub(super) fn get(&self, distinct_id: &str) -> Option<usize> {
        self.get_hinted(distinct_id, |_| {})
    }

    /// [`DistinctIds::get`], calling `candidate` with each person whose slot may hold the id
    /// (its tag matches) before the id's bytes are compared: a caller [`touch`]ing that
    /// person's state overlaps its loads with the comparison's.
    #[inline]
    pub(super) fn get_hinted(&self, distinct_id: &str, candidate: impl Fn(usize)) -> Option<usize> {
        let d = distinct_id.as_bytes();
        let tag = tag_of(hash_id(d));
        let slot = self.find(d, tag, |p| candidate(p as usize))?;
        Some(self.slots[slot].person as usize)
    }

    /// The slot holding `d` (whose tag is `tag`).
    #[inline]
    fn find(&self, d: &[u8], tag: u32, candidate: impl Fn(u32)) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = tag as usize & mask;
        loop {
            let s = self.slots[i];
            if s.tag == 0 {
                return None;
            }
            if s.tag == tag {
                candidate(s.person);
                if id_at(&self.bytes, s.at) == d {
                    return Some(i);
                }
            }
            i = (i + 1) & mask;
        }
    }

    /// Indexes the distinct ids of person `p` (a later owner of an id replaces an earlier one).
    pub(super) fn add_person(&mut self, persons: &[Option<Tracked>], p: usize) {
        let Some(t) = persons[p].as_ref() else { return };
        for d in &t.person.distinct_ids {
            let d = d.as_bytes();
            let tag = tag_of(hash_id(d));
            if let Some(i) = self.find(d, tag, |_| {}) {
                self.slots[i].person = p as u32;
                continue;
            }
            if (self.len + 1) * 8 > self.slots.len() * 7 {
                self.grow();
            }
            let at = self.bytes.len();
            let len = u32::try_from(d.len()).expect("a distinct id under 4 GiB");
            self.bytes.extend_from_slice(&len.to_le_bytes());
            self.bytes.extend_from_slice(d);
            let mask = self.slots.len() - 1;
            let mut i = tag as usize & mask;
            while self.slots[i].tag != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = IdSlot {
                tag,
                person: p as u32,
                at,
            };
            self.len += 1;
        }
    }

    /// Twice the slots (16 at first), every occupied one moved to its new home.
    #[cold]
    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![IdSlot::default(); size]);
        let mask = self.slots.len() - 1;
        for s in old.into_iter().filter(|s| s.tag != 0) {
            let mut i = s.tag as usize & mask;
            while self.slots[i].tag != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = s;
        }
    }

    /// Drops the distinct ids of person `p` (before the person is removed); ids another
    /// person took over stay.
    pub(super) fn remove_person(&mut self, persons: &[Option<Tracked>], p: usize) {
        let Some(t) = persons[p].as_ref() else { return };
        for d in &t.person.distinct_ids {
            let d = d.as_bytes();
            let Some(i) = self.find(d, tag_of(hash_id(d)), |_| {}) else {
                continue;
            };
            if self.slots[i].person != p as u32 {
                continue;
            }
            self.garbage += 4 + d.len();
            self.remove_slot(i);
        }
        if self.garbage > 4096 && self.garbage * 2 > self.bytes.len() {
            self.compact();
        }
    }

    /// Empties slot `i`, moving back the later slots of its probe run that may live there
    /// (backward-shift deletion: no tombstones, so lookups stay as short as the load allows).
    fn remove_slot(&mut self, mut i: usize) {
        let mask = self.slots.len() - 1;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let s = self.slots[j];
            if s.tag == 0 {
                break;
            }
            // Slot j may move to i when its home is not cyclically within (i, j].
            let home = s.tag as usize & mask;
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(i) & mask) {
                self.slots[i] = s;
                i = j;
            }
        }
        self.slots[i] = IdSlot::default();
        self.len -= 1;
    }

    /// Rewrites the arena without the removed ids' bytes.
    #[cold]
    fn compact(&mut self) {
        let mut bytes = Vec::with_capacity(self.bytes.len() - self.garbage);
        for s in self.slots.iter_mut().filter(|s| s.tag != 0) {
            let at = bytes.len();
            let d = id_at(&self.bytes, s.at);
            bytes.extend_from_slice(&(d.len() as u32).to_le_bytes());
            bytes.extend_from_slice(d);
            s.at = at;
        }
        self.bytes = bytes;
        self.garbage = 0;
    }

    /// Approximate heap bytes.
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<IdSlot>() + self.bytes.capacity()
    }
}

/// A tracked person: ids, and properties as (key, value id) pairs sorted by key, the values in
/// the tracker's value pool (most persons share most of their values).
pub(super) struct Profile {
    pub id: Box<str>,
    pub distinct_ids: Vec<Box<str>>,
    props: Box<[(Sym, u32)]>,
}

impl Profile {
    /// A person from an id, its distinct ids and properties sorted by key.
    pub(super) fn new(
        id: &str,
        distinct_ids: Vec<Box<str>>,
        props: impl Iterator<Item = (Sym, u32)>,
    ) -> Profile {
        Profile {
            id: id.into(),
            distinct_ids,
            props: props.collect(),
        }
    }

    /// Approximate heap bytes owned (ids and pairs; the values are the pool's).
    pub(super) fn heap_bytes(&self) -> usize {
        self.id.len()
            + self.distinct_ids.capacity() * 16
            + self.distinct_ids.iter().map(|d| d.len()).sum::<usize>()
            + self.props.len() * 8
    }

    /// The evaluator's view of the properties.
    pub(super) fn props<'a>(&'a self, values: &'a Pool<Val>) -> PersonProps<'a> {
        PersonProps::Pooled {
            pairs: &self.props,
            values: values.items(),
        }
    }

    /// Sets properties (null removes the key), as `$set` does.
    pub(super) fn set(&mut self, map: &Map<String, Value>, values: &mut Pool<Val>) {
        if map.is_empty() {
            return;
        }
        let syms = shared().resolve(Table::Keys, map.keys().map(String::as_str));
        let mut props = std::mem::take(&mut self.props).into_vec();
        for (sym, v) in syms.into_iter().zip(map.values()) {
            let at = props.binary_search_by_key(&sym, |(k, _)| *k);
            match (at, Val::from_json(v)) {
                (Ok(i), Some(v)) => props[i].1 = values.intern(&v, Val::clone),
                (Err(i), Some(v)) => props.insert(i, (sym, values.intern(&v, Val::clone))),
                (Ok(i), None) => {
                    props.remove(i);
                }
                (Err(_), None) => {}
            }
        }
        self.props = props.into_boxed_slice();
    }

    /// Removes properties, as `$unset` does.
    pub(super) fn unset(&mut self, keys: &[String]) {
        let names = shared().read();
        let syms: Vec<Sym> = keys.iter().map(|k| names.keys.get(k)).collect();
        drop(names);
        if self.props.iter().any(|(k, _)| syms.contains(k)) {
            let props: Vec<(Sym, u32)> = self
                .props
                .iter()
                .copied()
                .filter(|(k, _)| !syms.contains(k))
                .collect();
            self.props = props.into_boxed_slice();
        }
    }
}

/// One person's events ordered by (name, time): a timestamp and a property-set id per event, and
/// where each name's run lies.
///
/// Runs keep spare cells after them once the log takes live events, so that an event goes into
/// its own run without moving the others: a late event (the usual case) is written in place, an
/// earlier one shifts only the later events of its run. A run without room makes the log laid
/// out again once, with room after every run in proportion to its length; a log built from a
/// dataset has none until then (memory at start is the dataset's layout).
#[derive(Default)]
pub(super) struct Log {
    /// Timestamps by position; the cells between a run's end and the next run's start are spare.
    ts: Vec<Micros>,
    props: Vec<u32>,
    runs: Vec<Run>,
}

/// Room after the last run, for the runs of names the person had no event of.
const TAIL: usize = 2;

/// Spare cells a run of `len` events gets when its log is laid out again: a little room for
/// every run (the next event may be of any name), more for the run that just ran out. (Uniform
/// room for all runs took fewer lay-outs on a stream cycling through names, at 11 % more memory
/// after a million events.)
fn spare(len: usize, grown: bool) -> usize {
    if grown {
        2 + len / 4
    } else {
        1 + len / 8
    }
}

impl Log {
    /// A log from contiguous runs, names ascending, each in time order.
    pub(super) fn from_parts(ts: Vec<Micros>, props: Vec<u32>, runs: Vec<Run>) -> Log {
        debug_assert_eq!(ts.len(), props.len());
        debug_assert!(runs
            .windows(2)
            .all(|w| w[0].name < w[1].name && w[0].end == w[1].start));
        Log { ts, props, runs }
    }

    /// Adds an event after the events of the same name and timestamp; returns its position.
    pub(super) fn insert(&mut self, t: Micros, name: Sym, props: u32) -> usize {
        let r = self.runs.partition_point(|run| run.name < name);
        match self.runs.get(r) {
            Some(run) if run.name == name => {
                let (start, end) = (run.start as usize, run.end as usize);
                if end < self.room_from(end) {
                    let at = start + self.ts[start..end].partition_point(|&x| x <= t);
                    self.ts.copy_within(at..end, at + 1);
                    self.props.copy_within(at..end, at + 1);
                    self.ts[at] = t;
                    self.props[at] = props;
                    self.runs[r].end += 1;
                    return at;
                }
            }
            _ => {
                // A new name: its run goes into the room after the last run, if any.
                let at = self.runs.iter().map(|run| run.end).max().unwrap_or(0);
                if (at as usize) < self.ts.len() {
                    self.ts[at as usize] = t;
                    self.props[at as usize] = props;
                    let run = Run {
                        name,
                        start: at,
                        end: at + 1,
                    };
                    self.runs.insert(r, run);
                    return at as usize;
                }
            }
        }
        self.lay_out(r, t, name, props)
    }

    /// The end of the room that starts at `at`: the next run's start, or the end of the cells.
    fn room_from(&self, at: usize) -> usize {
        let at = at as u32;
        (self.runs.iter())
            .map(|run| run.start)
            .filter(|&s| s >= at)
            .min()
            .map_or(self.ts.len(), |s| s as usize)
    }

    /// Lays the log out again with room after every run, adding the event (of run `r`, which
    /// is new when its name differs); returns the event's position.
    #[cold]
    fn lay_out(&mut self, r: usize, t: Micros, name: Sym, props: u32) -> usize {
        if self.runs.get(r).is_none_or(|run| run.name != name) {
            // Empty until laid out below.
            let run = Run {
                name,
                start: 0,
                end: 0,
            };
            self.runs.insert(r, run);
        }
        let cells: usize = (self.runs.iter().enumerate())
            .map(|(i, run)| {
                let len = run.range().len() + usize::from(i == r);
                len + spare(len, i == r)
            })
            .sum::<usize>()
            + TAIL;
        let mut ts = Vec::with_capacity(cells);
        let mut ids = Vec::with_capacity(cells);
        let mut at = 0;
        for (i, run) in self.runs.iter_mut().enumerate() {
            let range = run.range();
            run.start = ts.len() as u32;
            if i == r {
                let k = range.start + self.ts[range.clone()].partition_point(|&x| x <= t);
                at = ts.len() + (k - range.start);
                ts.extend_from_slice(&self.ts[range.start..k]);
                ts.push(t);
                ts.extend_from_slice(&self.ts[k..range.end]);
                ids.extend_from_slice(&self.props[range.start..k]);
                ids.push(props);
                ids.extend_from_slice(&self.props[k..range.end]);
            } else {
                ts.extend_from_slice(&self.ts[range.clone()]);
                ids.extend_from_slice(&self.props[range]);
            }
            run.end = ts.len() as u32;
            let len = ts.len() - run.start as usize;
            let spare = spare(len, i == r);
            ts.resize(ts.len() + spare, 0);
            ids.resize(ids.len() + spare, 0);
        }
        ts.resize(ts.len() + TAIL, 0);
        ids.resize(ids.len() + TAIL, 0);
        self.ts = ts;
        self.props = ids;
        at
    }

    /// Approximate heap bytes owned.
    pub(super) fn heap_bytes(&self) -> usize {
        self.ts.capacity() * 8 + self.props.capacity() * 4 + self.runs.capacity() * 12
    }

    /// The evaluator's view of the log.
    pub(super) fn events<'a>(&'a self, sets: &'a PropSets, values: &'a Pool<Val>) -> Events<'a> {
        Events {
            ts: &self.ts,
            names: Names::Runs(&self.runs),
            props: EventProps::Sets {
                ids: &self.props,
                sets: sets.0.items(),
                values: values.items(),
            },
        }
    }
}

/// One row of bits per person (a bit per cohort position).
#[derive(Default)]
pub(super) struct Bits {
    words: Vec<u64>,
    stride: usize,
}

impl Bits {
    /// `rows` rows of `width` bits, all clear.
    pub(super) fn new(rows: usize, width: usize) -> Bits {
        let stride = width.div_ceil(64);
        Bits {
            words: vec![0; rows * stride],
            stride,
        }
    }

    /// Adds a row, all clear.
    pub(super) fn push_row(&mut self) {
        self.words.resize(self.words.len() + self.stride, 0);
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.words.capacity() * 8
    }

    /// [`touch`]es row `row`.
    #[inline]
    pub(super) fn touch_row(&self, row: usize) {
        touch(&self.words[row * self.stride..][..self.stride]);
    }

    #[inline]
    pub(super) fn get(&self, row: usize, bit: usize) -> bool {
        self.words[row * self.stride + bit / 64] >> (bit % 64) & 1 == 1
    }

    #[inline]
    pub(super) fn set(&mut self, row: usize, bit: usize, on: bool) {
        let w = &mut self.words[row * self.stride + bit / 64];
        if on {
            *w |= 1 << (bit % 64);
        } else {
            *w &= !(1 << (bit % 64));
        }
    }

    /// The set bits of `row`, ascending.
    pub(super) fn ones(&self, row: usize) -> impl Iterator<Item = usize> + '_ {
        self.words[row * self.stride..][..self.stride]
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| {
                let mut w = w;
                std::iter::from_fn(move || {
                    (w != 0).then(|| {
                        let b = w.trailing_zeros() as usize;
                        w &= w - 1;
                        i * 64 + b
                    })
                })
            })
    }

    /// Clears `row`.
    pub(super) fn clear_row(&mut self, row: usize) {
        self.words[row * self.stride..][..self.stride].fill(0);
    }
}

/// No horizon: never, or not time-dependent.
pub(super) const NEVER: Micros = Micros::MAX;

/// One row of horizons per person, a column per time-dependent cohort ([`NEVER`] for none).
#[derive(Default)]
pub(super) struct Horizons {
    cells: Vec<Micros>,
    stride: usize,
}

impl Horizons {
    /// `rows` rows of `width` columns, all [`NEVER`].
    pub(super) fn new(rows: usize, width: usize) -> Horizons {
        Horizons {
            cells: vec![NEVER; rows * width],
            stride: width,
        }
    }

    /// Adds a row, all [`NEVER`].
    pub(super) fn push_row(&mut self) {
        self.cells.resize(self.cells.len() + self.stride, NEVER);
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.cells.capacity() * 8
    }

    /// [`touch`]es row `row`.
    #[inline]
    pub(super) fn touch_row(&self, row: usize) {
        touch(&self.cells[row * self.stride..][..self.stride]);
    }

    /// Row `row`.
    #[inline]
    pub(super) fn row_mut(&mut self, row: usize) -> &mut [Micros] {
        &mut self.cells[row * self.stride..][..self.stride]
    }

    /// The rows in chunks of `rows` rows (for filling them on several threads).
    pub(super) fn chunks_mut(&mut self, rows: usize) -> std::slice::ChunksMut<'_, Micros> {
        self.cells.chunks_mut((rows * self.stride).max(1))
    }

    /// Columns per row.
    pub(super) fn width(&self) -> usize {
        self.stride
    }
}

/// The earliest horizon of a row, `None` when every cell is [`NEVER`].
pub(super) fn earliest(row: &[Micros]) -> Option<Micros> {
    row.iter().copied().min().filter(|&h| h != NEVER)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Val;

    #[test]
    fn logs_keep_name_then_time_order() {
        let (mut sets, mut values) = (PropSets::default(), Pool::default());
        let x = values.intern(&Val::Str("x".into()), Val::clone);
        assert_eq!(values.intern(&Val::Str("x".into()), Val::clone), x);
        let a = sets.intern(&[(Sym(1), x)]);
        assert_eq!(sets.intern(&[(Sym(1), x)]), a);
        assert_eq!(sets.intern(&[]), 0);
        assert_eq!(values.items().len(), 1);
        let mut log = Log::default();
        for (t, n, p) in [
            (5, 2, a),
            (3, 1, 0),
            (4, 2, 0),
            (5, 2, 0),
            (1, 3, a),
            (2, 1, a),
        ] {
            log.insert(t, Sym(n), p);
        }
        let ev = log.events(&sets, &values);
        let run = |n| ev.ts[ev.name_range(Sym(n))].to_vec();
        assert_eq!(
            (run(1), run(2), run(3)),
            (vec![2, 3], vec![4, 5, 5], vec![1])
        );
        assert_eq!(ev.name_range(Sym(4)), 0..0);
        // Ties keep arrival order: the event with props came first.
        let r2 = ev.name_range(Sym(2));
        assert!(ev.get(r2.start + 1, Sym(1)).is_some() && ev.get(r2.start + 2, Sym(1)).is_none());
        assert_eq!(
            ev.get(ev.name_range(Sym(1)).start, Sym(1)),
            Some(&Val::Str("x".into()))
        );
    }

    proptest::proptest! {
        /// Every insert, whether in place, into the room after the last run or by laying the
        /// log out again, keeps each name's events in (time, arrival) order, and the returned
        /// position holds the event.
        #[test]
        fn logs_with_room_keep_every_run_in_order(
            loaded in proptest::collection::vec((0i64..20, 1u32..6), 0..12),
            live in proptest::collection::vec((0i64..20, 1u32..6), 1..60),
        ) {
            // The reference: per name, (time, props id) in arrival order, sorted stably by time.
            let mut want: std::collections::BTreeMap<u32, Vec<(i64, u32)>> = Default::default();
            for (k, &(t, n)) in loaded.iter().enumerate() {
                want.entry(n).or_default().push((t, k as u32));
            }
            want.values_mut().for_each(|run| run.sort_by_key(|e| e.0));
            let (mut ts, mut ids, mut runs) = (Vec::new(), Vec::new(), Vec::new());
            for (&n, run) in &want {
                let start = ts.len() as u32;
                ts.extend(run.iter().map(|e| e.0));
                ids.extend(run.iter().map(|e| e.1));
                runs.push(Run { name: Sym(n), start, end: ts.len() as u32 });
            }
            let mut log = Log::from_parts(ts, ids, runs);
            let (sets, values) = (PropSets::default(), Pool::default());
            for (k, &(t, n)) in live.iter().enumerate() {
                let id = (loaded.len() + k) as u32;
                let at = log.insert(t, Sym(n), id);
                let run = want.entry(n).or_default();
                let i = run.partition_point(|e| e.0 <= t);
                run.insert(i, (t, id));
                proptest::prop_assert_eq!((log.ts[at], log.props[at]), (t, id));
                let ev = log.events(&sets, &values);
                let got: Vec<(u32, Vec<(i64, u32)>)> = ev
                    .runs()
                    .map(|(name, r)| (name.0, r.map(|i| (log.ts[i], log.props[i])).collect()))
                    .collect();
                let expected: Vec<(u32, Vec<(i64, u32)>)> =
                    want.iter().map(|(&n, run)| (n, run.clone())).collect();
                proptest::prop_assert_eq!(&got, &expected);
                for n in 0..7 {
                    let r = ev.name_range(Sym(n));
                    proptest::prop_assert_eq!(r.len(), want.get(&n).map_or(0, Vec::len));
                }
            }
        }
    }

    proptest::proptest! {
        /// The id table against a map: persons added (taking ids over) and removed in any
        /// order, through growth, backward shifts and compaction; every id of a small alphabet
        /// is looked up after each step.
        #[test]
        fn distinct_ids_match_a_map(
            steps in proptest::collection::vec(
                (proptest::bool::weighted(0.6), proptest::collection::vec(0u8..40, 1..4), 0usize..30),
                1..120,
            )
        ) {
            let name = |i: u8| format!("{}{}", "x".repeat(i as usize % 7), i);
            let mut persons: Vec<Option<Tracked>> = Vec::new();
            let mut index = DistinctIds::default();
            let mut model: std::collections::HashMap<String, usize> = Default::default();
            for (add, ids, victim) in steps {
                if add || persons.iter().all(Option::is_none) {
                    let ids: Vec<Box<str>> = ids.iter().map(|&i| name(i).into()).collect();
                    let p = persons.len();
                    for d in &ids {
                        model.insert(d.to_string(), p);
                    }
                    persons.push(Some(Tracked {
                        person: Profile::new("p", ids, std::iter::empty()),
                        log: Log::default(),
                        horizon: None,
                        generation: 0,
                    }));
                    index.add_person(&persons, p);
                } else {
                    let live: Vec<usize> = (0..persons.len()).filter(|&p| persons[p].is_some()).collect();
                    let p = live[victim % live.len()];
                    index.remove_person(&persons, p);
                    persons[p] = None;
                    model.retain(|_, owner| *owner != p);
                }
                for i in 0..40 {
                    proptest::prop_assert_eq!(index.get(&name(i)), model.get(&name(i)).copied(), "{}", name(i));
                }
                proptest::prop_assert_eq!(index.len, model.len());
                proptest::prop_assert!(index.len * 8 <= index.slots.len() * 7);
            }
        }
    }

    #[test]
    fn distinct_id_probes_stay_short() {
        // Generated ids differ in their last bytes; a hash that mixed them poorly put lookups
        // ~37 slots from home at this load.
        let ids: Vec<Box<str>> = (0..7000)
            .flat_map(|i| [format!("u{i:06}"), format!("anon-{:012x}", i * 7919)])
            .map(Into::into)
            .collect();
        let persons = vec![Some(Tracked {
            person: Profile::new("p", ids, std::iter::empty()),
            log: Log::default(),
            horizon: None,
            generation: 0,
        })];
        let mut index = DistinctIds::default();
        index.add_person(&persons, 0);
        let mask = index.slots.len() - 1;
        let distance: usize = (index.slots.iter().enumerate())
            .filter(|(_, s)| s.tag != 0)
            .map(|(i, s)| (i.wrapping_sub(s.tag as usize & mask) & mask) + 1)
            .sum();
        let mean = distance as f64 / index.len as f64;
        assert!(
            mean < 6.0,
            "{mean} slots per lookup at load {}",
            index.len as f64 / index.slots.len() as f64
        );
    }

    #[test]
    fn distinct_ids_find_their_owners() {
        let person = |ids: &[&str]| {
            Some(Tracked {
                person: Profile::new(
                    "p",
                    ids.iter().map(|&d| d.into()).collect(),
                    std::iter::empty(),
                ),
                log: Log::default(),
                horizon: None,
                generation: 0,
            })
        };
        let mut persons = Vec::new();
        let mut index = DistinctIds::default();
        for p in 0..1000 {
            persons.push(person(&[&format!("a{p}"), &format!("b{p}")]));
            index.add_person(&persons, p);
        }
        assert_eq!(index.get("a7"), Some(7));
        assert_eq!(index.get("b999"), Some(999));
        assert_eq!(index.get("c1"), None);
        index.remove_person(&persons, 7);
        persons[7] = None;
        assert_eq!((index.get("a7"), index.get("b7")), (None, None));
        assert_eq!(index.get("a8"), Some(8));
        // The id comes back with a new person.
        persons.push(person(&["a7"]));
        index.add_person(&persons, 1000);
        assert_eq!(index.get("a7"), Some(1000));
        // A later owner takes an id over; removing the earlier owner leaves it to the later one.
        persons.push(person(&["a9", "z"]));
        index.add_person(&persons, 1001);
        assert_eq!(index.get("a9"), Some(1001));
        index.remove_person(&persons, 9);
        persons[9] = None;
        assert_eq!((index.get("a9"), index.get("b9")), (Some(1001), None));
        // Removing most persons compacts the arena; every remaining id is still found.
        let before = index.bytes.len();
        for p in 10..900 {
            index.remove_person(&persons, p);
            persons[p] = None;
        }
        assert!(
            index.bytes.len() < before / 2,
            "{} of {before}",
            index.bytes.len()
        );
        for p in 900..1000 {
            assert_eq!(index.get(&format!("a{p}")), Some(p));
            assert_eq!(index.get(&format!("b{p}")), Some(p));
        }
        assert_eq!((index.get("a10"), index.get("z")), (None, Some(1001)));
    }

    #[test]
    fn bits_and_horizons_rows() {
        let mut bits = Bits::new(2, 70);
        bits.set(1, 3, true);
        bits.set(1, 69, true);
        bits.push_row();
        assert_eq!(bits.ones(1).collect::<Vec<_>>(), vec![3, 69]);
        assert!(bits.get(1, 69) && !bits.get(0, 69) && !bits.get(2, 3));
        bits.set(1, 3, false);
        assert_eq!(bits.ones(1).collect::<Vec<_>>(), vec![69]);
        bits.clear_row(1);
        assert_eq!(bits.ones(1).count(), 0);
        let mut h = Horizons::new(1, 3);
        h.push_row();
        assert_eq!(earliest(h.row_mut(1)), None);
        h.row_mut(1)[2] = 7;
        h.row_mut(1)[0] = 9;
        assert_eq!(earliest(h.row_mut(1)), Some(7));
        assert_eq!(earliest(h.row_mut(0)), None);
    }
}
