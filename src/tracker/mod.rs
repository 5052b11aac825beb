//! Realtime membership: a [`Tracker`] holds compiled cohorts and every person's state, takes a
//! stream of changes (an event, properties set or unset, a person deleted, time advancing) and
//! returns the membership transitions each change causes.
//!
//! Only what a change can affect is re-evaluated: an event re-evaluates the cohorts that read its
//! event name (and the cohorts that reference those), a property change the cohorts that read the
//! key. Time advancing re-evaluates only persons whose validity horizon has passed, found in a
//! min-heap of horizons. An event skips the cohorts whose *gate* is closed for the person: a
//! conjunct of the cohort's top-level AND that reads only person properties (not the time) and is
//! false keeps the cohort false, whatever events arrive, until those properties change. Where the
//! gate is open, those conjuncts are known true and an event evaluates only the others.
//!
//! State is kept compact (see [`Tracker::heap_bytes`]): an event costs its timestamp and an id
//! into a pool of distinct property sets, a person property an id into a pool of distinct
//! values. The pools only grow (a value or set, once seen, stays until the tracker is dropped),
//! like the process-wide name tables.
//!
//! ```
//! use cohort_engine::{Change, Engine, Timestamp, Tracker, Update};
//!
//! let engine = Engine::from_json(r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
//!     {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event",
//!      "time_value": 1, "time_interval": "day"}]}}}]"#)?;
//! let now: Timestamp = "2024-06-15T12:00:00Z".parse().unwrap();
//! let mut tracker = Tracker::new(engine, now);
//! tracker.apply(Update::Set { distinct_id: "d1".into(), properties: Default::default() }).unwrap();
//! let login = Update::Event {
//!     distinct_id: "d1".into(),
//!     event: "login".into(),
//!     timestamp: now.saturating_add_micros(-1),
//!     properties: Default::default(),
//! };
//! let entered = tracker.apply(login).unwrap();
//! assert_eq!((entered[0].cohort, entered[0].change), (1, Change::Entered));
//! // A day later the login has left the window.
//! let exited = tracker.apply(Update::Now(now.saturating_add_micros(86_400_000_000))).unwrap();
//! assert_eq!(exited[0].change, Change::Exited);
//! # Ok::<(), cohort_engine::Errors>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use serde_json::{Map, Value};

mod state;

use smallvec::SmallVec;

use crate::data::lines::LineScanner;
use crate::data::{props_shared_into, Dataset, Prop, Run};
use crate::engine::Engine;
use crate::error::{Error, Errors};
use crate::eval::{EventChecks, HorizonBufs, Scratch, Subject, Who};
use crate::intern::{shared, FnvMap, Sym, Table};
use crate::time::{parse_timestamp, Micros};
use crate::value::Val;
use crate::{BatchOptions, CohortId, Timestamp};
use state::{earliest, Bits, DistinctIds, Horizons, Log, Pool, Profile, PropSets, Tracked, NEVER};

/// Entered or exited. Serialises as `"entered"` / `"exited"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Change {
    /// The person became a member.
    Entered,
    /// The person stopped being a member.
    Exited,
}

/// One membership transition. Serialises as the `watch` line:
/// `{"cohort": ID, "person": "PID", "change": "entered"|"exited", "at": TIME}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Transition {
    /// The cohort.
    pub cohort: CohortId,
    /// The person id.
    pub person: String,
    /// Entered or exited.
    pub change: Change,
    /// The tracker's `now` after the change.
    pub at: Timestamp,
}

impl Transition {
    /// The `watch` output line (without newline), keys in the documented order.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// `{"cohort": ID, "person": "PID", "change": "entered"|"exited", "at": TIME}`.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A change to apply.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Update {
    /// An event of the person owning `distinct_id`; an unknown distinct id creates a person with
    /// that id (as [`Update::Set`] does).
    Event {
        /// Whose event.
        distinct_id: String,
        /// Event name.
        event: String,
        /// When it happened (may be before or after now).
        timestamp: Timestamp,
        /// Event properties.
        properties: Map<String, Value>,
    },
    /// Sets properties; an unknown distinct id creates a person with that id.
    Set {
        /// Whose properties.
        distinct_id: String,
        /// The new values (null = missing).
        properties: Map<String, Value>,
    },
    /// Removes properties.
    Unset {
        /// Whose properties.
        distinct_id: String,
        /// The keys to remove.
        keys: Vec<String>,
    },
    /// Deletes the person: it leaves every cohort.
    Delete {
        /// Whose record.
        distinct_id: String,
    },
    /// Time advances to this instant (never backwards).
    Now(Timestamp),
}

impl Update {
    /// Parses one `watch` input line (`CLI.md` §4).
    ///
    /// # Errors
    /// A message saying what is wrong with the line.
    pub fn from_json(line: &str) -> Result<Update, String> {
        let value: Value =
            serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
        let Value::Object(mut obj) = value else {
            return Err("expected a JSON object".into());
        };
        if let Some(t) = obj.get("$now") {
            return Ok(Update::Now(Timestamp::from_micros(parse_timestamp(t)?)));
        }
        let distinct_id = match obj.get("distinct_id") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => n.to_string(),
            Some(other) => {
                return Err(format!(
                    "distinct_id must be a string or an integer, got {other}"
                ))
            }
            None => {
                return Err(
                    "a change needs a \"distinct_id\" (or is a {\"$now\": TIME} line)".into(),
                )
            }
        };
        if let Some(set) = obj.remove("$set") {
            let Value::Object(properties) = set else {
                return Err("$set must be an object".into());
            };
            return Ok(Update::Set {
                distinct_id,
                properties,
            });
        }
        if let Some(unset) = obj.remove("$unset") {
            let keys = match unset {
                Value::Array(items) => items
                    .into_iter()
                    .map(|k| match k {
                        Value::String(s) => Ok(s),
                        other => Err(format!("$unset must list property names, got {other}")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                other => {
                    return Err(format!(
                        "$unset must be a list of property names, got {other}"
                    ))
                }
            };
            return Ok(Update::Unset { distinct_id, keys });
        }
        if let Some(d) = obj.get("$delete") {
            return match d {
                Value::Bool(true) => Ok(Update::Delete { distinct_id }),
                other => Err(format!("$delete must be true, got {other}")),
            };
        }
        let event = match obj.get("event") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("event must be a string, got {other}")),
            None => return Err("an event needs an \"event\" name".into()),
        };
        let timestamp = match obj.get("timestamp") {
            Some(v) => Timestamp::from_micros(parse_timestamp(v)?),
            None => return Err("an event needs a \"timestamp\"".into()),
        };
        let properties = match obj.remove("properties") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(other) => return Err(format!("properties must be an object, got {other}")),
        };
        Ok(Update::Event {
            distinct_id,
            event,
            timestamp,
            properties,
        })
    }
}

/// Incremental membership over a population (see the module docs).
pub struct Tracker {
    engine: Engine,
    now: Micros,
    persons: Vec<Option<Tracked>>,
    /// Membership: a row per person, a bit per cohort position.
    members: Bits,
    /// Validity horizons: a row per person, a column per time-dependent cohort (`ix.timed`).
    horizons: Horizons,
    /// The distinct event-property sets the logs point into.
    sets: PropSets,
    /// The distinct person property values the profiles point into.
    values: Pool<Val>,
    /// Reused buffer for an event's properties.
    props: Vec<Prop>,
    by_distinct: DistinctIds,
    scratch: Scratch,
    bufs: HorizonBufs,
    ix: Index,
    /// Event names seen so far: their shared id and their list in `affected` (resolved once,
    /// so an event costs one hash of its name).
    events: FnvMap<Box<str>, (Sym, u32)>,
    /// By seen name: the cohorts its events can change (taken out while they are evaluated,
    /// so an event neither clones nor counts a shared list).
    affected: Vec<Box<[usize]>>,
    heap: BinaryHeap<Reverse<(Micros, usize, u32)>>,
    /// Reused buffers: a cohort list, persons due at a `$now`.
    list: Vec<usize>,
    due: Vec<usize>,
}

/// What the tracker precomputes from a cohort set: which cohorts each change can affect.
struct Index {
    /// Cohort positions affected by an event name / a property key (with their dependents), in
    /// evaluation order.
    by_event: FnvMap<String, Arc<[usize]>>,
    by_key: FnvMap<String, Arc<[usize]>>,
    /// Cohorts whose membership can change with time alone, in evaluation order.
    timed: Vec<usize>,
    /// By cohort position: its column in the horizon rows (its place in `timed`), if timed.
    slot: Vec<Option<u32>>,
    /// By cohort position: what an event of each name is compared with, for a timed cohort.
    checks: Vec<EventChecks>,
    /// Non-deleted cohorts in evaluation order.
    live: Vec<usize>,
    /// Static cohorts and the cohorts that reference one, directly or not.
    static_related: Vec<usize>,
    /// Position of each cohort in evaluation order.
    rank: Vec<usize>,
    /// By cohort position: the column of its gate bit in the membership rows (after the one
    /// membership bit per cohort), if it has a gate ([`crate::Program`]'s `gates`).
    gate: Vec<Option<u32>>,
    /// Bits per membership row: a membership bit per cohort, then the gate bits.
    width: usize,
}

impl Index {
    fn new(engine: &Engine) -> Index {
        let set = engine.cohort_set();
        let cohorts = set.cohorts();
        let order: Vec<usize> = set.evaluation_order().to_vec();
        // Direct reads per cohort.
        let mut events_of: Vec<Vec<String>> = vec![Vec::new(); cohorts.len()];
        let mut keys_of: Vec<Vec<String>> = vec![Vec::new(); cohorts.len()];
        let mut timed_direct = vec![false; cohorts.len()];
        for (i, c) in cohorts.iter().enumerate() {
            let reads = c.reads();
            keys_of[i] = reads.person_keys.clone();
            events_of[i] = reads.events.clone();
            timed_direct[i] = reads.timed;
        }
        // Propagate to dependents: a cohort is affected when anything it references is.
        let mut affected_events: Vec<Vec<String>> = events_of;
        let mut affected_keys: Vec<Vec<String>> = keys_of;
        let mut timed = timed_direct;
        for &i in &order {
            for t in cohorts[i].references() {
                if let Some(j) = set.position(t) {
                    if cohorts[j].is_deleted() {
                        continue;
                    }
                    let (e, k, tm) = (
                        affected_events[j].clone(),
                        affected_keys[j].clone(),
                        timed[j],
                    );
                    affected_events[i].extend(e);
                    affected_keys[i].extend(k);
                    timed[i] |= tm;
                }
            }
        }
        let mut by_event: HashMap<String, Vec<usize>> = HashMap::new();
        let mut by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for &i in &order {
            if cohorts[i].is_deleted() {
                continue;
            }
            for e in &affected_events[i] {
                let v = by_event.entry(e.clone()).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
            for k in &affected_keys[i] {
                let v = by_key.entry(k.clone()).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
        }
        let live: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| !cohorts[i].is_deleted())
            .collect();
        let mut static_dep = vec![false; cohorts.len()];
        for &i in &order {
            static_dep[i] = cohorts[i].is_static()
                || cohorts[i]
                    .references()
                    .iter()
                    .any(|t| set.position(*t).is_some_and(|j| static_dep[j]));
        }
        let static_related: Vec<usize> = live.iter().copied().filter(|&i| static_dep[i]).collect();
        let mut rank = vec![usize::MAX; cohorts.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r;
        }
        let timed: Vec<usize> = live.iter().copied().filter(|&i| timed[i]).collect();
        let mut slot = vec![None; cohorts.len()];
        for (s, &c) in timed.iter().enumerate() {
            slot[c] = Some(s as u32);
        }
        let program = engine.program();
        let checks = (0..cohorts.len())
            .map(|c| {
                if slot[c].is_some() {
                    program.event_checks(c)
                } else {
                    EventChecks::default()
                }
            })
            .collect();
        let mut width = cohorts.len();
        let gate = engine
            .program()
            .gates
            .iter()
            .map(|g| {
                (!g.is_empty()).then(|| {
                    width += 1;
                    (width - 1) as u32
                })
            })
            .collect();
        Index {
            by_event: by_event
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v)))
                .collect(),
            by_key: by_key.into_iter().map(|(k, v)| (k, Arc::from(v))).collect(),
            timed,
            slot,
            checks,
            live,
            static_related,
            rank,
            gate,
            width,
        }
    }
}

impl Tracker {
    /// A tracker with no persons at `now`.
    pub fn new(engine: Engine, now: impl Into<Timestamp>) -> Tracker {
        let ix = Index::new(&engine);
        Tracker {
            members: Bits::new(0, ix.width),
            horizons: Horizons::new(0, ix.timed.len()),
            sets: PropSets::default(),
            values: Pool::default(),
            props: Vec::new(),
            engine,
            now: now.into().as_micros(),
            persons: Vec::new(),
            by_distinct: DistinctIds::default(),
            scratch: Scratch::new(),
            bufs: HorizonBufs::default(),
            ix,
            events: FnvMap::default(),
            affected: Vec::new(),
            heap: BinaryHeap::new(),
            list: Vec::new(),
            due: Vec::new(),
        }
    }

    /// A tracker holding every person and event of a dataset, at `now`.
    ///
    /// The initial memberships come from one batch evaluation of every cohort (the same bitsets
    /// as [`Dataset::evaluate`]); persons and histories are built from the dataset's columns
    /// with its names translated once to the shared tables; the per-person validity horizons are
    /// computed on every core.
    pub fn from_dataset(engine: Engine, data: &Dataset, now: impl Into<Timestamp>) -> Tracker {
        let now = now.into().as_micros();
        let mut t = Tracker::new(engine, now);
        let set = t.engine.cohort_set().clone();
        let n = set.len();
        t.members = Bits::new(data.len(), t.ix.width);
        t.horizons = Horizons::new(data.len(), t.ix.timed.len());
        // Memberships in batch.
        let bits = data
            .compile(&set)
            .and_then(|program| data.evaluate_bitsets(&program, now, &BatchOptions::default()));
        let batch = match bits {
            Ok(bits) => {
                for (id, b) in bits {
                    if let Some(c) = set.position(id) {
                        for p in b.iter() {
                            t.members.set(p, c, true);
                        }
                    }
                }
                true
            }
            // Never expected (the set compiled once already); fall back to per-person answers.
            Err(_) => false,
        };
        // Persons and logs, names translated once.
        let keys = shared().translate(&data.symbols.keys, Table::Keys);
        let names = shared().translate(&data.symbols.events, Table::Events);
        let mut distinct: Vec<Vec<Box<str>>> = vec![Vec::new(); data.len()];
        for (d, p) in data.distinct_owners() {
            distinct[p].push(d.into());
        }
        t.persons.reserve(data.len());
        let mut runs: Vec<(Sym, usize, usize)> = Vec::new();
        let mut props: Vec<Prop> = Vec::new();
        let mut pairs: Vec<(Sym, u32)> = Vec::new();
        for (p, mut dids) in distinct.into_iter().enumerate() {
            dids.sort_unstable();
            props.clear();
            props.extend(
                data.person_props(p)
                    .into_vec()
                    .into_iter()
                    .map(|(k, v)| (keys[k.0 as usize], v)),
            );
            props.sort_by_key(|(k, _)| *k);
            let values = &mut t.values;
            let person = Profile::new(
                data.person_id(p).unwrap_or_default(),
                dids,
                props
                    .iter()
                    .map(|(k, v)| (*k, values.intern(v, Val::clone))),
            );
            // The dataset's runs, reordered by the shared names (each run stays in time order).
            let ev = data.person_events(p);
            runs.clear();
            runs.extend(
                ev.runs()
                    .map(|(name, r)| (names[name.0 as usize], r.start, r.end)),
            );
            runs.sort_unstable_by_key(|r| r.0);
            let len: usize = runs.iter().map(|&(_, a, b)| b - a).sum();
            let mut ts = Vec::with_capacity(len);
            let mut ids = Vec::with_capacity(len);
            let mut starts = Vec::with_capacity(runs.len());
            for &(name, a, b) in &runs {
                let start = ts.len() as u32;
                ts.extend_from_slice(&ev.ts[a..b]);
                starts.push(Run {
                    name,
                    start,
                    end: ts.len() as u32,
                });
                for e in a..b {
                    pairs.clear();
                    let values = &mut t.values;
                    ev.for_each_prop(e, |k, v| {
                        pairs.push((keys[k.0 as usize], values.intern(v, Val::clone)))
                    });
                    pairs.sort_by_key(|(k, _)| *k);
                    ids.push(t.sets.intern(&pairs));
                }
            }
            t.persons.push(Some(Tracked {
                person,
                log: Log::from_parts(ts, ids, starts),
                horizon: None,
                generation: 0,
            }));
            t.by_distinct.add_person(&t.persons, p);
        }
        if !batch {
            for idx in 0..t.persons.len() {
                let mut sink = Vec::new();
                t.recompute(idx, None, &mut sink);
            }
            return t;
        }
        // Gates (see `recompute_with`).
        let gated: Vec<usize> = (0..n).filter(|&c| t.ix.gate[c].is_some()).collect();
        if !gated.is_empty() {
            let program = t.engine.program();
            for (idx, p) in t.persons.iter().enumerate() {
                let Some(p) = p else { continue };
                let subject = subject(p, &t.sets, &t.values);
                program.prepare(&mut t.scratch, now);
                let row = (&mut t.members, idx);
                refresh_gates(
                    program,
                    &t.ix.gate,
                    &gated,
                    &subject,
                    &mut t.scratch,
                    now,
                    row,
                );
            }
        }
        // Horizons of the time-dependent cohorts, person by person on every core.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let chunk = t.persons.len().div_ceil(threads).max(1);
        let (engine, timed, sets, values) = (&t.engine, &t.ix.timed, &t.sets, &t.values);
        if !timed.is_empty() {
            std::thread::scope(|scope| {
                for (part, rows) in t
                    .persons
                    .chunks_mut(chunk)
                    .zip(t.horizons.chunks_mut(chunk))
                {
                    scope.spawn(move || {
                        let mut bufs = HorizonBufs::default();
                        let width = timed.len();
                        for (p, row) in part.iter_mut().zip(rows.chunks_mut(width)) {
                            let Some(p) = p else { continue };
                            let subject = subject(p, sets, values);
                            for (cell, &c) in row.iter_mut().zip(timed) {
                                *cell = engine
                                    .program()
                                    .next_check(c, &subject, now, &mut bufs)
                                    .unwrap_or(NEVER);
                            }
                            p.horizon = earliest(row);
                        }
                    });
                }
            });
        }
        for (idx, p) in t.persons.iter().enumerate() {
            if let Some(h) = p.as_ref().and_then(|p| p.horizon) {
                t.heap.push(Reverse((h, idx, 0)));
            }
        }
        t
    }

    /// Replaces the cohort set (e.g. after a [`crate::LiveEngine`] update or a reloaded cohorts
    /// file), keeping every person's properties and events, and returns the membership
    /// transitions the change causes, by cohort id then person id: a person leaves the cohorts
    /// that were removed or deleted, and enters or leaves the changed and new ones as their new
    /// definitions say.
    pub fn set_engine(&mut self, engine: Engine) -> Vec<Transition> {
        let old_ids: Vec<CohortId> = self
            .engine
            .cohort_set()
            .cohorts()
            .iter()
            .map(|c| c.id)
            .collect();
        self.engine = engine;
        self.ix = Index::new(&self.engine);
        self.events.clear();
        self.affected.clear();
        self.heap.clear();
        let set = self.engine.cohort_set().clone();
        let rows = self.persons.len();
        let old = std::mem::replace(&mut self.members, Bits::new(rows, self.ix.width));
        self.horizons = Horizons::new(rows, self.ix.timed.len());
        let at = Timestamp::from_micros(self.now);
        let mut out = Vec::new();
        for idx in 0..rows {
            let Some(p) = self.persons[idx].as_mut() else {
                continue;
            };
            // Memberships carried over by cohort id; cohorts that left the set are exits, and
            // deleted cohorts have no members: exits, not re-evaluations.
            for pos in old.ones(idx).take_while(|&pos| pos < old_ids.len()) {
                match set.position(old_ids[pos]) {
                    Some(q) if !set.cohorts()[q].is_deleted() => self.members.set(idx, q, true),
                    _ => out.push(transition(old_ids[pos], &p.person, Change::Exited, at)),
                }
            }
            p.horizon = None;
            self.recompute(idx, None, &mut out);
        }
        sort_transitions(&mut out);
        out
    }

    /// Adds or replaces one cohort (the API's create / PATCH) in the tracked set, keeping every
    /// person's state, and returns the transitions it causes (see [`Tracker::set_engine`]).
    ///
    /// # Errors
    /// As [`crate::CohortSet::upsert`]; on error nothing changes.
    pub fn upsert(&mut self, cohort: &Value) -> Result<Vec<Transition>, Errors> {
        let set = self.engine.cohort_set().upsert(cohort)?;
        let engine = Engine::new(&set)?;
        Ok(self.set_engine(engine))
    }

    /// The tracker's current instant.
    pub fn now(&self) -> Timestamp {
        Timestamp::from_micros(self.now)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Number of persons tracked.
    pub fn len(&self) -> usize {
        self.persons.iter().flatten().count()
    }

    /// True when no person is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Approximate heap bytes of the tracker's state: persons, their logs and properties, the
    /// pools of property sets and values, the membership and horizon tables and the distinct-id
    /// index; counted like [`Dataset::event_bytes`] and [`Dataset::person_bytes`] count a
    /// dataset's (payload bytes, without the allocator's own overhead).
    pub fn heap_bytes(&self) -> usize {
        let persons: usize = self
            .persons
            .iter()
            .flatten()
            .map(|p| p.person.heap_bytes() + p.log.heap_bytes())
            .sum();
        let distinct = self.by_distinct.heap_bytes();
        self.persons.capacity() * std::mem::size_of::<Option<Tracked>>()
            + persons
            + self.sets.heap_bytes()
            + self.values.heap_bytes(state::val_bytes)
            + self.members.heap_bytes()
            + self.horizons.heap_bytes()
            + distinct
            + self.heap.capacity() * std::mem::size_of::<Reverse<(Micros, usize, u32)>>()
    }

    /// Current members of a cohort, sorted.
    pub fn members(&self, cohort: CohortId) -> Vec<String> {
        let Some(c) = self.engine.cohort_set().position(cohort) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .persons
            .iter()
            .enumerate()
            .filter_map(|(idx, p)| p.as_ref().filter(|_| self.members.get(idx, c)))
            .map(|p| p.person.id.to_string())
            .collect();
        out.sort();
        out
    }

    fn insert_person(&mut self, distinct_id: &str) -> usize {
        let idx = self.persons.len();
        self.persons.push(Some(Tracked {
            person: Profile::new(distinct_id, vec![distinct_id.into()], std::iter::empty()),
            log: Log::default(),
            horizon: None,
            generation: 0,
        }));
        self.by_distinct.add_person(&self.persons, idx);
        self.members.push_row();
        self.horizons.push_row();
        idx
    }

    /// Re-evaluates `cohorts` (all live ones when `None`) for person `idx`, recomputes their
    /// horizons, and appends transitions to `out`.
    fn recompute(&mut self, idx: usize, cohorts: Option<&[usize]>, out: &mut Vec<Transition>) {
        self.recompute_with(idx, cohorts, None, out);
    }

    /// [`Tracker::recompute`]; with `added` = (name, k), only event `k` of the person's log (of
    /// that name) is new since the horizons were computed at this instant, and they are brought
    /// up to date from it alone.
    fn recompute_with(
        &mut self,
        idx: usize,
        cohorts: Option<&[usize]>,
        added: Option<(Sym, usize)>,
        out: &mut Vec<Transition>,
    ) {
        let now = self.now;
        let Some(p) = self.persons[idx].as_mut() else {
            return;
        };
        let list = cohorts.unwrap_or(&self.ix.live);
        let set = self.engine.cohort_set();
        let subject = subject(p, &self.sets, &self.values);
        // One evaluation generation for the whole list: a cohort several of them reference is
        // computed once.
        let program = self.engine.program();
        program.prepare(&mut self.scratch, now);
        // Gates: a cohort whose gate is closed (a conjunct on person properties alone is false)
        // is false and stays so, with no horizon that matters, until those properties change.
        // Every change of properties comes here without `added`, for a list holding every
        // cohort reading them, and the gates are brought up to date; an event skips the cohorts
        // they close (their membership bit is already false, their horizon row stands).
        let gate = &self.ix.gate;
        if added.is_none() {
            let row = (&mut self.members, idx);
            refresh_gates(program, gate, list, &subject, &mut self.scratch, now, row);
        }
        let gated = |members: &Bits, c: usize| {
            added.is_some() && gate[c].is_some_and(|column| members.get(idx, column as usize))
        };
        for &c in list {
            if gated(&self.members, c) {
                continue;
            }
            // On an event, an open gate is still open: its conjuncts are not evaluated again.
            let m = if added.is_some() && gate[c].is_some() {
                program.member_past_gate(c, &subject, &mut self.scratch, now)
            } else {
                program.member(c, &subject, &mut self.scratch, now)
            };
            if m != self.members.get(idx, c) {
                self.members.set(idx, c, m);
                let change = if m { Change::Entered } else { Change::Exited };
                out.push(transition(
                    set.cohorts()[c].id,
                    &p.person,
                    change,
                    Timestamp::from_micros(now),
                ));
            }
        }
        // Horizons of the re-evaluated time-dependent cohorts (conservative ones: the first instant
        // any of their time comparisons can flip); the others' inputs did not change, so their
        // horizons still hold. The person's horizon is the earliest.
        if self.horizons.width() == 0 {
            return;
        }
        let row = self.horizons.row_mut(idx);
        let mut changed = false;
        for &c in list {
            if gated(&self.members, c) {
                continue;
            }
            if let Some(s) = self.ix.slot[c] {
                let h = match added {
                    None => program
                        .next_check(c, &subject, now, &mut self.bufs)
                        .unwrap_or(NEVER),
                    Some(event) => program
                        .next_check_added(
                            &self.ix.checks[c],
                            c,
                            &subject,
                            event,
                            now,
                            &mut self.bufs,
                        )
                        .unwrap_or(NEVER)
                        .min(row[s as usize]),
                };
                changed |= h != row[s as usize];
                row[s as usize] = h;
            }
        }
        if !changed {
            return;
        }
        let horizon = earliest(row);
        if horizon == p.horizon {
            return;
        }
        p.horizon = horizon;
        p.generation = p.generation.wrapping_add(1);
        if let Some(h) = horizon {
            self.heap.push(Reverse((h, idx, p.generation)));
        }
    }

    /// Applies one change and returns the membership transitions it causes, by cohort id then
    /// person id.
    ///
    /// # Errors
    /// A `$now` earlier than the current instant (nothing changes).
    pub fn apply(&mut self, update: Update) -> Result<Vec<Transition>, Error> {
        let mut out = Vec::new();
        self.apply_into(&update, &mut out)?;
        Ok(out)
    }

    /// [`Tracker::apply`] for a borrowed update, appending the transitions to `out` (sorted by
    /// cohort id then person id among themselves): with a reused buffer, the steady state of a
    /// stream allocates only for what it stores (event properties) and reports.
    ///
    /// # Errors
    /// A `$now` earlier than the current instant (nothing changes).
    pub fn apply_into(&mut self, update: &Update, out: &mut Vec<Transition>) -> Result<(), Error> {
        let start = out.len();
        match update {
            Update::Now(t) => self.advance(t.as_micros(), out)?,
            Update::Event {
                distinct_id,
                event,
                timestamp,
                properties,
            } => self.event(distinct_id, event, *timestamp, properties, out),
            Update::Set {
                distinct_id,
                properties,
            } => {
                let (idx, created) = self.person_index(distinct_id);
                if let Some(p) = self.persons[idx].as_mut() {
                    p.person.set(properties, &mut self.values);
                }
                if created {
                    // A new person may belong anywhere (e.g. a cohort of "not in X").
                    self.recompute(idx, None, out);
                } else {
                    self.property_change(idx, properties.keys().map(String::as_str), out);
                }
            }
            Update::Unset { distinct_id, keys } => {
                if let Some(idx) = self.by_distinct.get(distinct_id) {
                    if let Some(p) = self.persons[idx].as_mut() {
                        p.person.unset(keys);
                    }
                    self.property_change(idx, keys.iter().map(String::as_str), out);
                }
            }
            Update::Delete { distinct_id } => {
                if let Some(idx) = self.by_distinct.get(distinct_id) {
                    self.by_distinct.remove_person(&self.persons, idx);
                    if let Some(p) = self.persons[idx].take() {
                        let set = self.engine.cohort_set();
                        let at = Timestamp::from_micros(self.now);
                        for c in self.members.ones(idx).take_while(|&c| c < set.len()) {
                            out.push(transition(
                                set.cohorts()[c].id,
                                &p.person,
                                Change::Exited,
                                at,
                            ));
                        }
                        self.members.clear_row(idx);
                    }
                }
            }
        }
        sort_transitions(&mut out[start..]);
        Ok(())
    }

    /// An event of the person owning `distinct_id` (created, with that id, when new), appending
    /// the transitions it causes to `out` (by cohort id, then person id). The allocation-free form of [`Update::Event`].
    pub fn event(
        &mut self,
        distinct_id: &str,
        event: &str,
        timestamp: impl Into<Timestamp>,
        properties: &Map<String, Value>,
        out: &mut Vec<Transition>,
    ) {
        let props = if properties.is_empty() {
            0
        } else {
            props_shared_into(properties, &mut self.props);
            let props = std::mem::take(&mut self.props);
            let id = self.intern_props(props.iter().map(|(k, v)| (*k, v)));
            self.props = props;
            id
        };
        self.event_with(distinct_id, event, timestamp.into().as_micros(), props, out);
    }

    /// The id of the property set of `props` (keys unique), its values pooled.
    fn intern_props<'v>(&mut self, props: impl Iterator<Item = (Sym, &'v Val)>) -> u32 {
        let values = &mut self.values;
        let mut pairs: SmallVec<[(Sym, u32); 8]> = props
            .map(|(k, v)| (k, values.intern(v, Val::clone)))
            .collect();
        pairs.sort_unstable_by_key(|(k, _)| *k);
        self.sets.intern(&pairs)
    }

    /// [`Tracker::event`] with its properties already pooled (set id `props`).
    fn event_with(
        &mut self,
        distinct_id: &str,
        event: &str,
        ts: Micros,
        props: u32,
        out: &mut Vec<Transition>,
    ) {
        let start = out.len();
        let (idx, created) = self.person_index(distinct_id);
        if let Some(p) = self.persons[idx].as_ref() {
            p.touch();
        }
        let (name, list) = match self.events.get(event) {
            Some(&(sym, list)) => (sym, list as usize),
            None => {
                let sym = shared().resolve(Table::Events, std::iter::once(event))[0];
                let list = self.ix.by_event.get(event).map_or(&[][..], |l| &l[..]);
                self.affected.push(list.into());
                let at = self.affected.len() - 1;
                self.events.insert(event.into(), (sym, at as u32));
                (sym, at)
            }
        };
        let Some(k) = self.persons[idx]
            .as_mut()
            .map(|p| p.log.insert(ts, name, props))
        else {
            return;
        };
        if created {
            self.recompute(idx, None, out);
        } else if !self.affected[list].is_empty() {
            // A future event changes nothing now but moves the horizon: by what this one event
            // adds (the check is a minimum over per-event candidates, and nothing else changed).
            let affected = std::mem::take(&mut self.affected[list]);
            self.recompute_with(idx, Some(&affected), Some((name, k)), out);
            self.affected[list] = affected;
        }
        sort_transitions(&mut out[start..]);
    }

    /// The person owning `distinct_id`, created (id = the distinct id, no properties) when new.
    fn person_index(&mut self, distinct_id: &str) -> (usize, bool) {
        let (persons, members, horizons) = (&self.persons, &self.members, &self.horizons);
        let touch = |p: usize| {
            // What the event reads next, loading while the id's bytes are compared.
            std::hint::black_box(persons[p].is_some());
            members.touch_row(p);
            horizons.touch_row(p);
        };
        match self.by_distinct.get_hinted(distinct_id, touch) {
            Some(i) => (i, false),
            None => (self.insert_person(distinct_id), true),
        }
    }

    /// Time advances to `t`: re-evaluates the persons whose horizon has passed.
    fn advance(&mut self, t: Micros, out: &mut Vec<Transition>) -> Result<(), Error> {
        if t < self.now {
            return Err(Error::input(
                "$now",
                format!(
                    "time cannot go backwards (now is {})",
                    Timestamp::from_micros(self.now)
                ),
            ));
        }
        self.now = t;
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        while let Some(&Reverse((h, idx, generation))) = self.heap.peek() {
            if h > t {
                break;
            }
            self.heap.pop();
            if self.persons[idx]
                .as_ref()
                .is_some_and(|p| p.generation == generation)
            {
                due.push(idx);
            }
        }
        due.sort_unstable();
        due.dedup();
        let timed = std::mem::take(&mut self.ix.timed);
        for &idx in &due {
            // Its heap entry is used up: a new one is pushed even when the horizon is unchanged.
            if let Some(p) = self.persons[idx].as_mut() {
                p.horizon = None;
            }
            self.recompute(idx, Some(&timed), out);
        }
        self.ix.timed = timed;
        self.due = due;
        Ok(())
    }

    fn property_change<'k>(
        &mut self,
        idx: usize,
        keys: impl Iterator<Item = &'k str>,
        out: &mut Vec<Transition>,
    ) {
        let mut list = std::mem::take(&mut self.list);
        list.clear();
        for k in keys {
            if let Some(v) = self.ix.by_key.get(k) {
                list.extend_from_slice(v);
            }
        }
        // A new person may enter static cohorts (they list ids), and the cohorts referencing them.
        list.extend_from_slice(&self.ix.static_related);
        list.sort_by_key(|&c| self.ix.rank[c]);
        list.dedup();
        self.recompute(idx, Some(&list), out);
        self.list = list;
    }
}

/// Sets, for each gated cohort of `cohorts`, its gate bit (column `Index::gate`) in `members`'
/// row `row`: whether a conjunct on the person's properties alone keeps it false. After
/// [`crate::Program::prepare`].
fn refresh_gates(
    program: &crate::Program,
    gate: &[Option<u32>],
    cohorts: &[usize],
    subject: &Subject<'_>,
    scratch: &mut Scratch,
    now: Micros,
    (members, row): (&mut Bits, usize),
) {
    for &c in cohorts {
        if let Some(column) = gate[c] {
            let closed = program.gate_closed(c, subject, scratch, now);
            members.set(row, column as usize, closed);
        }
    }
}

/// Transitions by cohort id, then person id (the order every entry point reports).
fn sort_transitions(out: &mut [Transition]) {
    out.sort_by(|a, b| (a.cohort, &a.person).cmp(&(b.cohort, &b.person)));
}

/// The evaluator's view of a tracked person.
fn subject<'a>(p: &'a Tracked, sets: &'a PropSets, values: &'a Pool<Val>) -> Subject<'a> {
    Subject {
        props: p.person.props(values),
        events: p.log.events(sets, values),
        who: Who::Person {
            id: &p.person.id,
            distinct_ids: &p.person.distinct_ids,
        },
    }
}

fn transition(cohort: CohortId, person: &Profile, change: Change, at: Timestamp) -> Transition {
    Transition {
        cohort,
        person: person.id.to_string(),
        change,
        at,
    }
}

/// Applies `watch` input lines that are plain events straight from the loader's scanner (no
/// JSON tree), keeping only the event properties the tracked cohorts read. For the command
/// line; not a stable API.
#[doc(hidden)]
pub struct EventLines {
    scanner: LineScanner,
}

impl EventLines {
    /// A reader for the cohorts of `set` (the tracker's, which must not change while it is used:
    /// properties no cohort of `set` reads are dropped).
    pub fn new(set: &crate::CohortSet) -> EventLines {
        EventLines {
            scanner: LineScanner::new(Some(crate::Projection::of(set))),
        }
    }

    /// Scans `line` into `into` when it is a plain event line (it is then the last of `into`),
    /// to be applied later, maybe on another thread, with [`ScannedEvents::apply`]; `false`
    /// (nothing added) for any other line.
    pub fn scan(&mut self, line: &str, into: &mut ScannedEvents) -> bool {
        let Some(head) = self.scanner.event(line) else {
            return false;
        };
        let mut text = |s: &str| {
            let start = into.text.len() as u32;
            into.text.push_str(s);
            start..into.text.len() as u32
        };
        let (distinct_id, event) = (text(&head.distinct_id), text(&head.event));
        let start = into.props.len() as u32;
        into.props
            .extend(self.scanner.props().map(|(k, v)| (k, v.clone())));
        into.events.push(Scanned {
            distinct_id,
            event,
            ts: head.ts,
            props: start..into.props.len() as u32,
        });
        true
    }
}

/// Plain event lines scanned by [`EventLines::scan`], kept in one buffer each for their text
/// and properties (reused after [`ScannedEvents::clear`]). For the command line; not a stable
/// API.
#[doc(hidden)]
#[derive(Default)]
pub struct ScannedEvents {
    text: String,
    props: Vec<(Sym, Val)>,
    events: Vec<Scanned>,
}

/// One scanned event: its ranges in the buffers of its [`ScannedEvents`].
struct Scanned {
    distinct_id: std::ops::Range<u32>,
    event: std::ops::Range<u32>,
    ts: Micros,
    props: std::ops::Range<u32>,
}

impl ScannedEvents {
    /// Number of events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no event is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drops every event, keeping the buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.props.clear();
        self.events.clear();
    }

    /// Applies event `i` to `tracker` as [`Tracker::apply_into`] applies the event, appending
    /// the transitions to `out` (sorted as it sorts them).
    ///
    /// # Panics
    /// When `i` is not below [`ScannedEvents::len`].
    pub fn apply(&self, i: usize, tracker: &mut Tracker, out: &mut Vec<Transition>) {
        let e = &self.events[i];
        let text = |r: &std::ops::Range<u32>| &self.text[r.start as usize..r.end as usize];
        let props = &self.props[e.props.start as usize..e.props.end as usize];
        let props = tracker.intern_props(props.iter().map(|(k, v)| (*k, v)));
        tracker.event_with(text(&e.distinct_id), text(&e.event), e.ts, props, out);
    }
}
