//! The single-person facade: load a cohort set once, then ask "is this person in cohort N at time
//! T?" cheaply and repeatedly, from many threads.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use serde_json::{Map, Value};

use crate::compile::Program;
use crate::data::{props_shared, Events, History, Person, PersonProps};
use crate::error::{Error, Errors};
use crate::eval::explain::Explanation;
use crate::eval::{Scratch, Subject, Who};
use crate::intern::{shared, Symbols, Table};
use crate::set::CohortSet;
use crate::time::Micros;
use crate::{CohortId, Timestamp};

/// A compiled cohort set for evaluating one person at a time. `Send + Sync`: share it (e.g. in an
/// `Arc`) and give each thread its own [`Scratch`].
#[derive(Clone, Debug)]
pub struct Engine {
    program: Program,
}

impl Engine {
    /// Compiles a validated set.
    ///
    /// Every engine interns names in one process-wide, grow-only table, so persons and histories
    /// built by any engine stay valid with any other (see [`Person`]).
    ///
    /// # Errors
    /// Never in practice (compilation repeats checks the set already passed). The error type is
    /// [`Errors`], as for every constructor of the crate's cohort types.
    pub fn new(set: &CohortSet) -> Result<Engine, Errors> {
        let names = shared().intern_all(&symbols_of(set));
        let program = Program::compile(set, &names)?;
        Ok(Engine { program })
    }

    /// Parses, validates and compiles a cohorts file's text in one step.
    ///
    /// # Errors
    /// Every problem of the set, as [`CohortSet::from_json`] reports them.
    pub fn from_json(text: &str) -> Result<Engine, Errors> {
        Engine::new(&CohortSet::from_json(text)?)
    }

    /// The validated set.
    pub fn cohort_set(&self) -> &CohortSet {
        self.program.cohort_set()
    }

    /// The compiled program.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Builds a person from its id, distinct ids and properties (a JSON object; null values are
    /// missing). Every key is kept, so the person stays valid when cohorts that read other keys
    /// are added later.
    ///
    /// Static cohort lists are matched against this person's id and distinct ids. A single person
    /// cannot know other persons' ids, so an entry that is another person's id *and* one of this
    /// person's distinct ids counts for this person here (a [`crate::Dataset`] resolves it to the
    /// other person, as the spec's "a person id wins" rule says).
    pub fn person(
        &self,
        id: &str,
        distinct_ids: &[&str],
        properties: &Map<String, Value>,
    ) -> Person {
        self.person_with_ids(id, distinct_ids, properties)
    }

    /// [`Engine::person`] for distinct ids of any string type (`&[String]`, `Vec<Box<str>>`, …),
    /// with no intermediate `Vec<&str>`.
    pub fn person_with_ids<S: AsRef<str>>(
        &self,
        id: &str,
        distinct_ids: &[S],
        properties: &Map<String, Value>,
    ) -> Person {
        Person {
            id: id.into(),
            distinct_ids: distinct_ids.iter().map(|d| d.as_ref().into()).collect(),
            props: props_shared(properties),
        }
    }

    /// An empty event history for one person.
    pub fn history(&self) -> History {
        History::default()
    }

    /// Appends an event to a history, at its place in time order (events may arrive slightly out
    /// of order). Every event name and property key is kept, so the history stays valid when
    /// cohorts reading them are added later.
    pub fn record(
        &self,
        history: &mut History,
        event: &str,
        timestamp: impl Into<Timestamp>,
        properties: &Map<String, Value>,
    ) {
        let timestamp = timestamp.into().as_micros();
        let name = shared().resolve(Table::Events, std::iter::once(event))[0];
        history.insert(timestamp, name, props_shared(properties));
    }

    /// Is `person`, with `history`, a member of cohort `cohort` at `now`?
    ///
    /// # Errors
    /// `unknown_cohort` when the set has no such cohort. A deleted cohort has no members.
    pub fn matches(
        &self,
        cohort: CohortId,
        person: &Person,
        history: &History,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
    ) -> Result<bool, Error> {
        let now = now.into().as_micros();
        Ok(self.matches_at(
            self.program.position_of(cohort)?,
            &subject(person, history.events()),
            now,
            scratch,
        ))
    }

    /// Why `person` is (or is not) in `cohort` at `now`: the filter tree with every node's result
    /// and evidence, and the validity horizon. Always agrees with [`Engine::matches`].
    ///
    /// # Errors
    /// `unknown_cohort` when the set has no such cohort.
    pub fn explain(
        &self,
        cohort: CohortId,
        person: &Person,
        history: &History,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
    ) -> Result<Explanation, Error> {
        let now = now.into().as_micros();
        let c = self.program.position_of(cohort)?;
        Ok(self.program.explanation(
            c,
            &person.id,
            &subject(person, history.events()),
            scratch,
            now,
        ))
    }

    /// The earliest instant after `now` at which `person`'s membership of `cohort` can change if
    /// no event and no property change arrives (windows sliding past events, relative dates
    /// crossing property values, periods rolling over); `None` when it never changes. A service
    /// can cache the answer of [`Engine::matches`] until then.
    ///
    /// # Errors
    /// `unknown_cohort` when the set has no such cohort.
    pub fn horizon(
        &self,
        cohort: CohortId,
        person: &Person,
        history: &History,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
    ) -> Result<Option<Timestamp>, Error> {
        let now = now.into().as_micros();
        let c = self.program.position_of(cohort)?;
        Ok(self
            .program
            .horizon(c, &subject(person, history.events()), scratch, now)
            .map(Timestamp::from_micros))
    }

    /// [`Engine::matches`] for the cohort at position `c` of the set (no id lookup).
    pub(crate) fn matches_at(
        &self,
        c: usize,
        subject: &Subject<'_>,
        now: Micros,
        scratch: &mut Scratch,
    ) -> bool {
        self.program.prepare(scratch, now);
        self.program.member_fresh(c, subject, scratch, now)
    }

    /// Every non-deleted cohort the person is a member of at `now`, by ascending id.
    pub fn memberships(
        &self,
        person: &Person,
        history: &History,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
    ) -> Vec<CohortId> {
        let mut out = Vec::new();
        self.memberships_into(person, history, now, scratch, &mut out);
        out
    }

    /// [`Engine::memberships`] into a caller's buffer (cleared first), so a service that asks for
    /// every person does not allocate per call once the buffer has grown.
    pub fn memberships_into(
        &self,
        person: &Person,
        history: &History,
        now: impl Into<Timestamp>,
        scratch: &mut Scratch,
        out: &mut Vec<CohortId>,
    ) {
        let now = now.into().as_micros();
        out.clear();
        let subject = subject(person, history.events());
        self.program.prepare(scratch, now);
        let cohorts = self.program.set.cohorts();
        for &c in self.program.set.evaluation_order() {
            if !cohorts[c].is_deleted() && self.program.member(c, &subject, scratch, now) {
                out.push(cohorts[c].id);
            }
        }
        out.sort_unstable();
    }
}

fn subject<'a>(person: &'a Person, events: Events<'a>) -> Subject<'a> {
    Subject {
        props: PersonProps::Slice(&person.props),
        events,
        who: Who::Person {
            id: &person.id,
            distinct_ids: &person.distinct_ids,
        },
    }
}

/// Every property key and event name the set's filters read.
pub(crate) fn symbols_of(set: &CohortSet) -> Symbols {
    let mut s = Symbols::default();
    for c in set.cohorts() {
        let r = c.reads();
        for k in r.person_keys.iter().chain(&r.event_keys) {
            s.keys.intern(k);
        }
        for e in &r.events {
            s.events.intern(e);
        }
    }
    s
}

/// A live cohort set for services that change cohorts while serving: readers take a cheap
/// [`Arc`] snapshot and keep using it; a writer validates and compiles a complete new engine
/// *outside any lock readers wait on*, then publishes it with one atomic pointer swap. A rejected
/// update changes nothing, no reader ever sees a half-applied state, and no reader waits for a
/// compilation. Writers are serialised among themselves (so two concurrent upserts both land).
///
/// Persons and histories built by any snapshot stay valid with every later one (see [`Person`]).
///
/// ```
/// use std::sync::Arc;
/// use cohort_engine::{Engine, LiveEngine, Scratch};
/// use serde_json::json;
///
/// let live = Arc::new(LiveEngine::new(Engine::from_json(r#"[{"id": 1, "filters": {"properties":
///     {"type": "AND", "values": [{"type": "person", "key": "plan", "operator": "exact",
///      "value": "pro"}]}}}]"#)?));
/// let engine = live.snapshot();
/// let person = engine.person("p1", &["d1"], json!({"plan": "pro", "seats": 12}).as_object().unwrap());
/// // A live update adds a cohort reading a key no cohort read before…
/// live.upsert(&json!({"id": 2, "filters": {"properties": {"type": "AND", "values": [
///     {"type": "person", "key": "seats", "operator": "gt", "value": 10}]}}}))?;
/// // …and the person built before it is answered correctly by the new engine.
/// let engine = live.snapshot();
/// let mut scratch = Scratch::new();
/// assert!(engine.matches(2, &person, &engine.history(), 0, &mut scratch).unwrap());
/// # Ok::<(), cohort_engine::Errors>(())
/// ```
#[derive(Debug)]
pub struct LiveEngine {
    current: ArcSwap<Engine>,
    /// Serialises writers (never taken by readers).
    writer: Mutex<()>,
}

impl LiveEngine {
    /// Starts from a compiled engine.
    pub fn new(engine: Engine) -> LiveEngine {
        LiveEngine {
            current: ArcSwap::from_pointee(engine),
            writer: Mutex::new(()),
        }
    }

    /// The current engine: a lock-free load of one pointer. Evaluations on it are unaffected by
    /// later updates.
    pub fn snapshot(&self) -> Arc<Engine> {
        self.current.load_full()
    }

    fn write_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces one cohort (the API's create / PATCH), returning its new `version`.
    ///
    /// # Errors
    /// As [`CohortSet::upsert`]; on error the live set is unchanged.
    pub fn upsert(&self, cohort: &Value) -> Result<u64, Errors> {
        let _writer = self.write_lock();
        let set = self.current.load().cohort_set().upsert(cohort)?;
        let engine = Engine::new(&set)?;
        let id = cohort.get("id").and_then(Value::as_i64).unwrap_or_default();
        let version = set.get(id).map_or(1, |c| c.version);
        self.current.store(Arc::new(engine));
        Ok(version)
    }

    /// Replaces the whole engine, e.g. after reloading a cohorts file. Returns the engine it
    /// replaced.
    pub fn replace(&self, engine: Engine) -> Arc<Engine> {
        let _writer = self.write_lock();
        self.current.swap(Arc::new(engine))
    }

    /// Replaces a static cohort's members.
    ///
    /// # Errors
    /// As [`CohortSet::with_static_members`]; on error nothing changes.
    pub fn set_static_members(&self, id: CohortId, members: Vec<String>) -> Result<(), Errors> {
        let _writer = self.write_lock();
        let set = self
            .current
            .load()
            .cohort_set()
            .with_static_members(id, members)?;
        self.current.store(Arc::new(Engine::new(&set)?));
        Ok(())
    }
}
