//! Realtime membership: a [`Tracker`] holds compiled cohorts and every person's state, takes a
//! stream of changes (an event, properties set or unset, a person deleted, time advancing) and
//! returns the membership transitions each change causes.
//!
//! Only what a change can affect is re-evaluated: an event re-evaluates the cohorts that read its
//! event name (and the cohorts that reference those), a property change the cohorts that read the
//! key. Time advancing re-evaluates only persons whose validity horizon has passed, found in a
//! min-heap of horizons.
//!
//! ```
//! use cohort_engine::{Change, Engine, Tracker, Update, time};
//!
//! let engine = Engine::from_json(r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
//!     {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event",
//!      "time_value": 1, "time_interval": "day"}]}}}]"#)?;
//! let now = time::parse_absolute("2024-06-15T12:00:00Z").unwrap();
//! let mut tracker = Tracker::new(engine, now);
//! tracker.apply(Update::Set { distinct_id: "d1".into(), properties: Default::default() }).unwrap();
//! let login = Update::Event {
//!     distinct_id: "d1".into(),
//!     event: "login".into(),
//!     timestamp: now - 1,
//!     properties: Default::default(),
//! };
//! let entered = tracker.apply(login).unwrap();
//! assert_eq!((entered[0].cohort, entered[0].change), (1, Change::Entered));
//! // A day later the login has left the window.
//! let exited = tracker.apply(Update::Now(now + 86_400_000_000)).unwrap();
//! assert_eq!(exited[0].change, Change::Exited);
//! # Ok::<(), cohort_engine::Errors>(())
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

use crate::intern::FnvMap;

use serde_json::{Map, Value};

use crate::ast::{Behavior, Definition, Leaf};
use crate::data::{Dataset, History, Person};
use crate::engine::Engine;
use crate::error::Error;
use crate::eval::Scratch;
use crate::time::{format_micros, parse_timestamp, Micros};
use crate::CohortId;

/// Entered or exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// The person became a member.
    Entered,
    /// The person stopped being a member.
    Exited,
}

/// One membership transition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The cohort.
    pub cohort: CohortId,
    /// The person id.
    pub person: String,
    /// Entered or exited.
    pub change: Change,
    /// The tracker's `now` after the change.
    pub at: Micros,
}

impl Transition {
    /// The `watch` output line (without newline), keys in the documented order.
    pub fn to_json_string(&self) -> String {
        format!(
            "{{\"cohort\":{},\"person\":{},\"change\":\"{}\",\"at\":\"{}\"}}",
            self.cohort,
            Value::String(self.person.clone()),
            if self.change == Change::Entered {
                "entered"
            } else {
                "exited"
            },
            format_micros(self.at)
        )
    }

    /// `{"cohort": ID, "person": "PID", "change": "entered"|"exited", "at": TIME}`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "cohort": self.cohort,
            "person": self.person,
            "change": if self.change == Change::Entered { "entered" } else { "exited" },
            "at": format_micros(self.at),
        })
    }
}

/// A change to apply.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// An event of the person owning `distinct_id` (events of unknown distinct ids are ignored).
    Event {
        /// Whose event.
        distinct_id: String,
        /// Event name.
        event: String,
        /// When it happened (may be before or after now).
        timestamp: Micros,
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
    Now(Micros),
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
            return Ok(Update::Now(parse_timestamp(t)?));
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
            Some(v) => parse_timestamp(v)?,
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

struct Tracked {
    id: String,
    distinct_ids: Vec<String>,
    properties: Map<String, Value>,
    person: Person,
    history: History,
    /// Membership per cohort position.
    members: Vec<bool>,
    /// Validity horizon per cohort position (`None`: never, or not time-dependent).
    horizons: Vec<Option<Micros>>,
    /// Earliest horizon over the time-dependent cohorts (`None`: never).
    horizon: Option<Micros>,
    /// Bumped whenever the horizon is recomputed, so stale heap entries are skipped.
    generation: u32,
}

/// Incremental membership over a population (see the module docs).
pub struct Tracker {
    engine: Engine,
    now: Micros,
    persons: Vec<Option<Tracked>>,
    by_distinct: FnvMap<String, usize>,
    by_id: FnvMap<String, usize>,
    scratch: Scratch,
    /// Cohort positions affected by an event name / a property key (with their dependents), in
    /// evaluation order.
    by_event: FnvMap<String, Arc<[usize]>>,
    by_key: FnvMap<String, Arc<[usize]>>,
    /// Cohorts whose membership can change with time alone, in evaluation order.
    timed: Vec<usize>,
    /// The same, by cohort position.
    is_timed: Vec<bool>,
    /// Non-deleted cohorts in evaluation order.
    live: Vec<usize>,
    heap: BinaryHeap<Reverse<(Micros, usize, u32)>>,
    /// Static cohorts and the cohorts that reference one, directly or not.
    static_related: Vec<usize>,
    /// Position of each cohort in evaluation order.
    rank: Vec<usize>,
}

impl Tracker {
    /// A tracker with no persons at `now`.
    pub fn new(engine: Engine, now: Micros) -> Tracker {
        let set = engine.cohort_set().clone();
        let cohorts = set.cohorts();
        let order: Vec<usize> = set.evaluation_order().to_vec();
        // Direct reads per cohort.
        let mut events_of: Vec<Vec<String>> = vec![Vec::new(); cohorts.len()];
        let mut keys_of: Vec<Vec<String>> = vec![Vec::new(); cohorts.len()];
        let mut timed_direct = vec![false; cohorts.len()];
        for (i, c) in cohorts.iter().enumerate() {
            if let Definition::Dynamic(root) = &c.definition {
                root.visit_leaves(&mut |leaf| match leaf {
                    Leaf::Person(p) => {
                        keys_of[i].push(p.key.clone());
                        if matches!(
                            p.value,
                            crate::ast::FilterValue::Date(
                                crate::time::DateSpec::Relative { .. },
                                _
                            )
                        ) {
                            timed_direct[i] = true;
                        }
                    }
                    Leaf::Behavioral(b) => {
                        timed_direct[i] = true;
                        events_of[i].push(b.event.clone());
                        if let Behavior::PerformedEventSequence { seq_event, .. } = &b.behavior {
                            events_of[i].push(seq_event.clone());
                        }
                    }
                    Leaf::Cohort(_) => {}
                });
            }
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
        let is_timed = timed.clone();
        let timed: Vec<usize> = live.iter().copied().filter(|&i| timed[i]).collect();
        Tracker {
            engine,
            now,
            persons: Vec::new(),
            by_distinct: FnvMap::default(),
            by_id: FnvMap::default(),
            scratch: Scratch::new(),
            by_event: by_event
                .into_iter()
                .map(|(k, v)| (k, Arc::from(v)))
                .collect(),
            by_key: by_key.into_iter().map(|(k, v)| (k, Arc::from(v))).collect(),
            timed,
            is_timed,
            live,
            heap: BinaryHeap::new(),
            static_related,
            rank,
        }
    }

    /// A tracker holding every person and event of a dataset, at `now`.
    pub fn from_dataset(engine: Engine, data: &Dataset, now: Micros) -> Tracker {
        let mut t = Tracker::new(engine, now);
        let mut distinct: Vec<Vec<String>> = vec![Vec::new(); data.len()];
        for (d, p) in data.distinct_owners() {
            distinct[p].push(d.to_string());
        }
        for (p, mut distinct_ids) in distinct.into_iter().enumerate() {
            distinct_ids.sort();
            let (id, properties, events) = data.person_record(p);
            let idx = t.insert_person(id, distinct_ids, properties);
            if let Some(tp) = t.persons[idx].as_mut() {
                for (name, ts, props) in events {
                    t.engine.record(&mut tp.history, &name, ts, &props);
                }
            }
        }
        for idx in 0..t.persons.len() {
            t.recompute(idx, None);
        }
        t
    }

    /// The tracker's current instant.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Current members of a cohort, sorted.
    pub fn members(&self, cohort: CohortId) -> Vec<String> {
        let Some(c) = self.engine.cohort_set().position(cohort) else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .persons
            .iter()
            .flatten()
            .filter(|p| p.members[c])
            .map(|p| p.id.clone())
            .collect();
        out.sort();
        out
    }

    fn insert_person(
        &mut self,
        id: String,
        distinct_ids: Vec<String>,
        properties: Map<String, Value>,
    ) -> usize {
        let dids: Vec<&str> = distinct_ids.iter().map(String::as_str).collect();
        let person = self.engine.person(&id, &dids, &properties);
        let idx = self.persons.len();
        for d in &distinct_ids {
            self.by_distinct.insert(d.clone(), idx);
        }
        self.by_id.insert(id.clone(), idx);
        let n = self.engine.cohort_set().len();
        self.persons.push(Some(Tracked {
            id,
            distinct_ids,
            properties,
            person,
            history: self.engine.history(),
            members: vec![false; n],
            horizons: vec![None; n],
            horizon: None,
            generation: 0,
        }));
        idx
    }

    /// Re-evaluates `cohorts` (all live ones when `None`) for person `idx`, recomputes its
    /// horizon, and appends transitions.
    fn recompute(&mut self, idx: usize, cohorts: Option<&[usize]>) -> Vec<Transition> {
        let mut out = Vec::new();
        let now = self.now;
        let Some(p) = self.persons[idx].as_mut() else {
            return out;
        };
        let list = cohorts.unwrap_or(&self.live);
        let set = self.engine.cohort_set();
        for &c in list {
            let id = set.cohorts()[c].id;
            let m = self
                .engine
                .matches_at(c, &p.person, &p.history, now, &mut self.scratch);
            if m != p.members[c] {
                p.members[c] = m;
                out.push(Transition {
                    cohort: id,
                    person: p.id.clone(),
                    change: if m { Change::Entered } else { Change::Exited },
                    at: now,
                });
            }
        }
        // Horizons of the re-evaluated time-dependent cohorts (conservative ones: the first instant
        // any of their time comparisons can flip); the others' inputs did not change, so their
        // horizons still hold. The person's horizon is the earliest.
        for &c in list {
            if self.is_timed[c] {
                p.horizons[c] = self.engine.next_check(c, &p.person, &p.history, now);
            }
        }
        let horizon = p.horizons.iter().flatten().min().copied();
        p.generation = p.generation.wrapping_add(1);
        p.horizon = horizon;
        if let Some(h) = horizon {
            self.heap.push(Reverse((h, idx, p.generation)));
        }
        out
    }

    /// Applies one change and returns the membership transitions it causes, by cohort id then
    /// person id.
    ///
    /// # Errors
    /// A `$now` earlier than the current instant (nothing changes).
    pub fn apply(&mut self, update: Update) -> Result<Vec<Transition>, Error> {
        let mut out = match update {
            Update::Now(t) => {
                if t < self.now {
                    return Err(Error::input(
                        "$now",
                        format!(
                            "time cannot go backwards (now is {})",
                            format_micros(self.now)
                        ),
                    ));
                }
                self.now = t;
                let mut due = Vec::new();
                while let Some(&Reverse((h, idx, generation))) = self.heap.peek() {
                    if h > t {
                        break;
                    }
                    self.heap.pop();
                    let current = self.persons[idx]
                        .as_ref()
                        .is_some_and(|p| p.generation == generation);
                    if current {
                        due.push(idx);
                    }
                }
                due.sort_unstable();
                due.dedup();
                let timed = self.timed.clone();
                let mut out = Vec::new();
                for idx in due {
                    out.extend(self.recompute(idx, Some(&timed)));
                }
                out
            }
            Update::Event {
                distinct_id,
                event,
                timestamp,
                properties,
            } => {
                let Some(&idx) = self.by_distinct.get(&distinct_id) else {
                    return Ok(Vec::new());
                };
                if let Some(p) = self.persons[idx].as_mut() {
                    self.engine
                        .record(&mut p.history, &event, timestamp, &properties);
                }
                let affected = self
                    .by_event
                    .get(&event)
                    .cloned()
                    .unwrap_or_else(|| Arc::from(Vec::new()));
                // A future event changes nothing now but moves the horizon.
                self.recompute(idx, Some(&affected))
            }
            Update::Set {
                distinct_id,
                properties,
            } => {
                let (idx, created) = match self.by_distinct.get(&distinct_id) {
                    Some(&i) => (i, false),
                    None => (
                        self.insert_person(distinct_id.clone(), vec![distinct_id], Map::new()),
                        true,
                    ),
                };
                let keys: Vec<String> = properties.keys().cloned().collect();
                if let Some(p) = self.persons[idx].as_mut() {
                    for (k, v) in properties {
                        p.properties.insert(k, v);
                    }
                }
                if created {
                    // A new person may belong anywhere (e.g. a cohort of "not in X").
                    self.rebuild_person(idx);
                    self.recompute(idx, None)
                } else {
                    self.property_change(idx, &keys)
                }
            }
            Update::Unset { distinct_id, keys } => {
                let Some(&idx) = self.by_distinct.get(&distinct_id) else {
                    return Ok(Vec::new());
                };
                if let Some(p) = self.persons[idx].as_mut() {
                    for k in &keys {
                        p.properties.remove(k);
                    }
                }
                self.property_change(idx, &keys)
            }
            Update::Delete { distinct_id } => {
                let Some(&idx) = self.by_distinct.get(&distinct_id) else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::new();
                if let Some(p) = self.persons[idx].take() {
                    let set = self.engine.cohort_set();
                    for (c, &m) in p.members.iter().enumerate() {
                        if m {
                            out.push(Transition {
                                cohort: set.cohorts()[c].id,
                                person: p.id.clone(),
                                change: Change::Exited,
                                at: self.now,
                            });
                        }
                    }
                    for d in &p.distinct_ids {
                        self.by_distinct.remove(d);
                    }
                    self.by_id.remove(&p.id);
                }
                out
            }
        };
        out.sort_by(|a, b| (a.cohort, &a.person).cmp(&(b.cohort, &b.person)));
        Ok(out)
    }

    fn rebuild_person(&mut self, idx: usize) {
        if let Some(p) = self.persons[idx].as_mut() {
            let dids: Vec<&str> = p.distinct_ids.iter().map(String::as_str).collect();
            p.person = self.engine.person(&p.id, &dids, &p.properties);
        }
    }

    fn property_change(&mut self, idx: usize, keys: &[String]) -> Vec<Transition> {
        self.rebuild_person(idx);
        let mut list: Vec<usize> = keys
            .iter()
            .flat_map(|k| self.by_key.get(k).map(|v| v.to_vec()).unwrap_or_default())
            .collect();
        // A new person may enter static cohorts (they list ids), and the cohorts referencing them.
        list.extend_from_slice(&self.static_related);
        list.sort_by_key(|&c| self.rank[c]);
        list.dedup();
        self.recompute(idx, Some(&list))
    }
}

impl Dataset {
    /// Person `p` as plain data: id, distinct ids, properties and events (name, time, properties).
    #[allow(clippy::type_complexity)]
    pub(crate) fn person_record(
        &self,
        p: usize,
    ) -> (
        String,
        Map<String, Value>,
        Vec<(String, Micros, Map<String, Value>)>,
    ) {
        let id = self.person_id(p).unwrap_or_default().to_string();
        let mut properties = Map::new();
        for (k, v) in self.person_props(p).iter() {
            if let Some(name) = self.symbols.keys.name(*k) {
                properties.insert(name.to_string(), crate::eval::explain::val_json(v));
            }
        }
        let ev = self.person_events(p);
        let events = (0..ev.ts.len())
            .map(|i| {
                let name = self
                    .symbols
                    .events
                    .name(ev.name[i])
                    .unwrap_or_default()
                    .to_string();
                let mut props = Map::new();
                ev.for_each_prop(i, |k, v| {
                    if let Some(key) = self.symbols.keys.name(k) {
                        props.insert(key.to_string(), crate::eval::explain::val_json(v));
                    }
                });
                (name, ev.ts[i], props)
            })
            .collect();
        (id, properties, events)
    }
}
