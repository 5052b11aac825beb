//! The single-person facade: load a cohort set once, then ask "is this person in cohort N at time
//! T?" cheaply and repeatedly, from many threads.

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

use crate::ast::{Definition, Leaf};
use crate::compile::Program;
use crate::data::{frozen, props_from_json, History, Person};
use crate::error::{Error, Errors};
use crate::eval::explain::Explanation;
use crate::eval::{Scratch, Subject, Who};
use crate::intern::Symbols;
use crate::set::CohortSet;
use crate::time::Micros;
use crate::CohortId;

/// A compiled cohort set for evaluating one person at a time. `Send + Sync`: share it (e.g. in an
/// `Arc`) and give each thread its own [`Scratch`].
#[derive(Clone, Debug)]
pub struct Engine {
    program: Program,
    symbols: Symbols,
}

impl Engine {
    /// Compiles a validated set.
    ///
    /// # Errors
    /// Never in practice (compilation repeats checks the set already passed).
    pub fn new(set: &CohortSet) -> Result<Engine, Error> {
        let symbols = symbols_of(set);
        let program = Program::compile(set, &symbols)?;
        Ok(Engine { program, symbols })
    }

    /// Parses, validates and compiles a cohorts file's text in one step.
    ///
    /// # Errors
    /// Every problem of the set, as [`CohortSet::from_json`] reports them.
    pub fn from_json(text: &str) -> Result<Engine, Errors> {
        let set = CohortSet::from_json(text)?;
        Engine::new(&set).map_err(Errors::from)
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
    /// missing). Keys that no cohort reads are dropped.
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
        Person {
            id: id.into(),
            distinct_ids: distinct_ids.iter().map(|d| (*d).into()).collect(),
            props: props_from_json(properties, frozen(&self.symbols.keys)),
        }
    }

    /// An empty event history for one person.
    pub fn history(&self) -> History {
        History::default()
    }

    /// Appends an event to a history, at its place in time order (events may arrive slightly out
    /// of order). Event names and property keys no cohort reads are not kept.
    pub fn record(
        &self,
        history: &mut History,
        event: &str,
        timestamp: Micros,
        properties: &Map<String, Value>,
    ) {
        let name = self.symbols.events.get(event);
        let props = props_from_json(properties, frozen(&self.symbols.keys));
        history.insert(timestamp, name, props);
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
        now: Micros,
        scratch: &mut Scratch,
    ) -> Result<bool, Error> {
        Ok(self.matches_at(
            self.program.position_of(cohort)?,
            person,
            history,
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
        now: Micros,
        scratch: &mut Scratch,
    ) -> Result<Explanation, Error> {
        let c = self.program.position_of(cohort)?;
        Ok(self
            .program
            .explanation(c, &person.id, &subject(person, history), scratch, now))
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
        now: Micros,
        scratch: &mut Scratch,
    ) -> Result<Option<Micros>, Error> {
        let c = self.program.position_of(cohort)?;
        Ok(self
            .program
            .horizon(c, &subject(person, history), scratch, now))
    }

    /// [`Engine::matches`] for the cohort at position `c` of the set (no id lookup).
    pub(crate) fn matches_at(
        &self,
        c: usize,
        person: &Person,
        history: &History,
        now: Micros,
        scratch: &mut Scratch,
    ) -> bool {
        self.program.prepare(scratch, now);
        self.program
            .member(c, &subject(person, history), scratch, now)
    }

    /// A conservative horizon (never later than [`Engine::horizon`]): the first instant at which
    /// any time comparison of the cohort can flip. Cheap; the tracker re-checks persons then.
    pub(crate) fn next_check(
        &self,
        cohort: usize,
        person: &Person,
        history: &History,
        now: Micros,
    ) -> Option<Micros> {
        self.program
            .next_check(cohort, &subject(person, history), now)
    }

    /// Every non-deleted cohort the person is a member of at `now`, by ascending id.
    pub fn memberships(
        &self,
        person: &Person,
        history: &History,
        now: Micros,
        scratch: &mut Scratch,
    ) -> Vec<CohortId> {
        let subject = subject(person, history);
        self.program.prepare(scratch, now);
        let cohorts = self.program.set.cohorts();
        let mut out = Vec::new();
        for &c in self.program.set.evaluation_order() {
            if !cohorts[c].is_deleted() && self.program.member(c, &subject, scratch, now) {
                out.push(cohorts[c].id);
            }
        }
        out.sort_unstable();
        out
    }
}

fn subject<'a>(person: &'a Person, history: &'a History) -> Subject<'a> {
    Subject {
        props: &person.props,
        events: history.events(),
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
        if let Definition::Dynamic(root) = &c.definition {
            root.visit_leaves(&mut |leaf| match leaf {
                Leaf::Person(p) => {
                    s.keys.intern(&p.key);
                }
                Leaf::Behavioral(b) => {
                    s.events.intern(&b.event);
                    if let crate::ast::Behavior::PerformedEventSequence { seq_event, .. } =
                        &b.behavior
                    {
                        s.events.intern(seq_event);
                    }
                    for f in &b.event_filters {
                        s.keys.intern(&f.key);
                    }
                }
                Leaf::Cohort(_) => {}
            });
        }
    }
    s
}

/// A live cohort set for services that change cohorts while serving: readers take a cheap
/// [`Arc`] snapshot and keep using it; a writer validates and compiles a complete new engine
/// before swapping it in. A rejected update changes nothing, and no reader ever sees a
/// half-applied state.
#[derive(Debug)]
pub struct LiveEngine {
    current: RwLock<Arc<Engine>>,
}

impl LiveEngine {
    /// Starts from a compiled engine.
    pub fn new(engine: Engine) -> LiveEngine {
        LiveEngine {
            current: RwLock::new(Arc::new(engine)),
        }
    }

    /// The current engine. Evaluations on it are unaffected by later updates.
    pub fn snapshot(&self) -> Arc<Engine> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds or replaces one cohort (the API's create / PATCH), returning its new `version`.
    ///
    /// # Errors
    /// As [`CohortSet::upsert`]; on error the live set is unchanged.
    pub fn upsert(&self, cohort: &Value) -> Result<u64, Errors> {
        // Writers are serialised by the write lock; readers keep the old snapshot meanwhile.
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        let set = guard.cohort_set().upsert(cohort)?;
        let engine = Engine::new(&set)?;
        let id = cohort.get("id").and_then(Value::as_i64).unwrap_or_default();
        let version = set.get(id).map_or(1, |c| c.version);
        *guard = Arc::new(engine);
        Ok(version)
    }

    /// Replaces a static cohort's members.
    ///
    /// # Errors
    /// As [`CohortSet::with_static_members`]; on error nothing changes.
    pub fn set_static_members(&self, id: CohortId, members: Vec<String>) -> Result<(), Error> {
        let mut guard = self.current.write().unwrap_or_else(|e| e.into_inner());
        let set = guard.cohort_set().with_static_members(id, members)?;
        *guard = Arc::new(Engine::new(&set)?);
        Ok(())
    }
}
