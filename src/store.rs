//! The cohort API's operations as a library: a [`CohortStore`] holds cohort definitions in the
//! API's shape, validated together (as a [`CohortSet`] would be) over a loaded [`Dataset`], and
//! keeps each cohort's current members and calculation record.
//!
//! What it mirrors (PostHog's `/api/projects/:project_id/cohorts/`):
//! - **create** ([`CohortStore::create`], [`CohortStore::create_from_csv`]): a dynamic cohort from
//!   `filters` or legacy `groups`, or a static one (`is_static: true`) from
//!   `_create_static_person_ids` or a CSV upload with a `person_id`, `distinct_id` or `email`
//!   column. The cohort gets the next id and version 1, and its members are calculated at once.
//! - **update** ([`CohortStore::update`]): PATCH semantics — only the fields given change, and
//!   `filters` is replaced as a whole. Every accepted update requests a new calculation
//!   (`pending_version` + 1); the calculation runs synchronously and, when it succeeds, `version`
//!   becomes `pending_version`. A rejected update (invalid filter, unknown reference, cycle,
//!   refused delete) changes nothing.
//! - **soft delete / restore**: `deleted: true` / `false` through [`CohortStore::update`]. Deleting
//!   a cohort that non-deleted cohorts reference is refused with an `in_use` error naming them;
//!   restoring revalidates references and cycles. There is no hard delete.
//! - **list** ([`CohortStore::list`]): non-deleted cohorts, newest first, with `type`, `search`,
//!   `hide_behavioral_cohorts` (transitive) and limit/offset pagination.
//! - **duplicate as static** ([`CohortStore::duplicate_as_static`]), **persons of a cohort**
//!   ([`CohortStore::persons`], [`CohortStore::persons_csv`]), **add / remove persons** of a static
//!   cohort ([`CohortStore::add_persons`], [`CohortStore::remove_person`]).
//!
//! Each calculation updates the cohort's [`Calculation`] record (`count`, `last_calculation`,
//! `errors_calculating`, `last_error_message`). When a cohort changes, the cohorts that reference
//! it (directly or not) are recalculated too, since their members may change with it.
//!
//! The store is an in-memory value; the optional server persists [`CohortRecord`]s in SQLite and
//! rebuilds the store with [`CohortStore::restore_valid`] (a record that no longer validates is
//! left out and reported rather than blocking the rest).
//!
//! Each cohort keeps its members as a [`Bitset`] over the dataset's person indices (1 bit per
//! person). A change is planned without touching the store ([`CohortStore::plan_create`],
//! [`CohortStore::plan_update`], …): only the changed cohort, what it references and the cohorts
//! that depend on it are validated and recalculated, so the cost of a write does not grow with
//! the number of unrelated cohorts. [`CohortStore::apply`] then installs the new entries of just
//! those cohorts. A caller that persists changes writes the planned record first and applies it
//! once that has committed.
//!
//! A live cohort never references a soft-deleted one: creating or changing it so, and restoring
//! it while its target is deleted, are refused with an `unknown_cohort` error naming the target.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::ast::parse::parse_cohort;
use crate::ast::Definition;
use crate::data::Dataset;
use crate::error::{Error, ErrorKind, Errors};
use crate::eval::batch::BatchOptions;
use crate::eval::bitset::Bitset;
use crate::limits::Limits;
use crate::model::cohort_objects;
use crate::set::CohortSet;
use crate::time::{format_micros, Micros};
use crate::CohortId;

/// The API's message for a change that would close a reference loop.
pub const CYCLE_DETAIL: &str = "Cohorts cannot reference other cohorts in a loop.";

/// Page size of `list` and `persons` when no limit is given (the API's default).
pub const DEFAULT_LIMIT: usize = 100;

/// Longest `name` the API accepts.
const MAX_NAME: usize = 400;
/// Longest `description` the API accepts.
const MAX_DESCRIPTION: usize = 1000;

/// Why a store operation was refused. A refused operation changes nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// No such cohort (or, for [`CohortStore::remove_person`], the person is not a member).
    NotFound(String),
    /// The request or the resulting definition is invalid: `invalid_input` (request shape),
    /// `invalid_filter`, `unknown_cohort`, `cycle` or `in_use` (a refused delete).
    Rejected(Errors),
}

impl StoreError {
    fn not_found(id: CohortId) -> StoreError {
        StoreError::NotFound(format!("cohort {id} not found"))
    }

    fn invalid(message: impl Into<String>) -> StoreError {
        StoreError::Rejected(Error::input("request", message).into())
    }

    /// The errors of a rejection (empty for [`StoreError::NotFound`]).
    pub fn errors(&self) -> &[Error] {
        match self {
            StoreError::NotFound(_) => &[],
            StoreError::Rejected(e) => &e.0,
        }
    }

    /// True when the rejection is (or includes) a reference cycle.
    pub fn is_cycle(&self) -> bool {
        self.errors().iter().any(|e| e.kind() == ErrorKind::Cycle)
    }

    /// The API's `detail` text: [`CYCLE_DETAIL`] for a cycle, `Not found.`-style text for a
    /// missing cohort, else the engine's messages (one per line).
    pub fn detail(&self) -> String {
        match self {
            StoreError::NotFound(m) => m.clone(),
            StoreError::Rejected(_) if self.is_cycle() => CYCLE_DETAIL.to_string(),
            StoreError::Rejected(e) => e
                .iter()
                .map(|e| {
                    let plain = e.kind() == ErrorKind::InvalidInput && e.path() == "request";
                    if plain || e.kind() == ErrorKind::InUse {
                        e.message().to_string()
                    } else {
                        e.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::NotFound(m) => write!(f, "not_found: {m}"),
            StoreError::Rejected(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<Errors> for StoreError {
    fn from(e: Errors) -> StoreError {
        StoreError::Rejected(e)
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> StoreError {
        StoreError::Rejected(e.into())
    }
}

/// The outcome of a cohort's latest calculations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Calculation {
    /// Members found by the last successful calculation.
    pub count: Option<u64>,
    /// When the last successful calculation ran (its `now`).
    pub last_calculation: Option<Micros>,
    /// Failed calculations since the last successful one.
    pub errors_calculating: u64,
    /// The error of the last failed calculation, cleared by a successful one.
    pub last_error_message: Option<String>,
}

/// A JSON value kept as compact text. The store holds cohort definitions this way: a parsed
/// `serde_json::Value` takes 10 to 20 times the memory of its text.
#[derive(Clone, Debug)]
pub struct JsonText(Box<RawValue>);

impl JsonText {
    /// The value's compact JSON text.
    pub fn from_value(value: &Value) -> JsonText {
        // Serializing a `Value` cannot fail (its map keys are strings).
        let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        JsonText(RawValue::from_string(text).unwrap_or_default())
    }

    /// The JSON text.
    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The value, parsed.
    ///
    /// # Errors
    /// When the text nests deeper than serde_json's recursion limit (128), which text made by
    /// [`JsonText::from_value`] from a checked field never does, but text read back from
    /// storage might.
    pub fn parse(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(self.0.get())
    }

    /// The value, parsed; `null` where [`JsonText::parse`] fails (a loader checks that first).
    pub fn to_value(&self) -> Value {
        self.parse().unwrap_or(Value::Null)
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &JsonText) -> bool {
        self.as_str() == other.as_str() || self.to_value() == other.to_value()
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<JsonText, D::Error> {
        Box::<RawValue>::deserialize(d).map(JsonText)
    }
}

/// `filters` of a response: stored text, or a legacy cohort's converted definition.
enum ApiFilters<'a> {
    Text(&'a RawValue),
    Value(&'a Value),
}

impl Serialize for ApiFilters<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ApiFilters::Text(t) => t.serialize(s),
            ApiFilters::Value(v) => v.serialize(s),
        }
    }
}

/// One cohort as the API stores it: the writable fields as last set, plus bookkeeping.
///
/// Its serde form is what the server persists; static members are persisted separately and so
/// are not part of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CohortRecord {
    /// The cohort id.
    pub id: CohortId,
    /// `name` (nullable).
    pub name: Option<String>,
    /// `description`.
    #[serde(default)]
    pub description: String,
    /// `filters` as last written (`None` when absent or null), kept as compact JSON text.
    #[serde(default)]
    pub filters: Option<JsonText>,
    /// Legacy `groups` as last written (`[]` when never given).
    #[serde(default = "empty_array")]
    pub groups: Value,
    /// `is_static`.
    #[serde(default)]
    pub is_static: bool,
    /// `deleted` (soft delete).
    #[serde(default)]
    pub deleted: bool,
    /// Creation time.
    pub created_at: Micros,
    /// The version of the last completed calculation (1 after creation).
    pub version: u64,
    /// The version of the last requested calculation; equal to `version` unless that
    /// calculation failed.
    pub pending_version: u64,
    /// The calculation record.
    #[serde(default)]
    pub calculation: Calculation,
    /// A static cohort's members (person ids, in insertion order).
    #[serde(skip)]
    pub static_members: Vec<String>,
}

fn empty_array() -> Value {
    Value::Array(Vec::new())
}

impl CohortRecord {
    /// The cohort object the engine validates ([`CohortSet::upsert`]'s input).
    pub fn definition(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("id".into(), json!(self.id));
        obj.insert("name".into(), json!(self.name));
        obj.insert("deleted".into(), json!(self.deleted));
        obj.insert("is_static".into(), json!(self.is_static));
        if self.is_static {
            obj.insert("static_person_ids".into(), json!(self.static_members));
        } else {
            if let Some(f) = &self.filters {
                obj.insert("filters".into(), f.to_value());
            }
            obj.insert("groups".into(), self.groups.clone());
        }
        Value::Object(obj)
    }
}

/// `type=` of [`ListQuery`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CohortKind {
    /// `is_static: true`.
    Static,
    /// `is_static: false`.
    Dynamic,
}

/// What [`CohortStore::list`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListQuery {
    /// Page size (default [`DEFAULT_LIMIT`]).
    pub limit: Option<usize>,
    /// Cohorts to skip.
    pub offset: usize,
    /// Only static or only dynamic cohorts.
    pub kind: Option<CohortKind>,
    /// Case-insensitive substring of the name.
    pub search: Option<String>,
    /// Hide cohorts with a behavioral condition, directly or through referenced cohorts.
    pub hide_behavioral_cohorts: bool,
}

/// One page of [`CohortStore::list`].
#[derive(Clone, Debug, PartialEq)]
pub struct ListPage {
    /// Cohorts matching the query, all pages together.
    pub count: usize,
    /// This page's cohorts in the API's JSON shape, newest first.
    pub results: Vec<Value>,
}

/// One page of [`CohortStore::persons`].
#[derive(Clone, Debug, PartialEq)]
pub struct PersonsPage {
    /// Members of the cohort, all pages together.
    pub total: usize,
    /// This page's persons (`id`, `uuid`, `type`, `name`, `distinct_ids`, `properties`, …),
    /// ordered by person id.
    pub results: Vec<Value>,
}

/// Deepest JSON nesting (arrays and objects) accepted in `filters` or `groups`, on every input
/// path. A legal tree (32 nested groups) needs about 70; the persisted record wraps the value in
/// one more object and must stay well under serde_json's recursion limit (128) to be readable
/// again.
pub const MAX_FIELD_DEPTH: usize = 100;

/// Below this many persons a calculation runs on the request's thread only: spawning workers
/// costs more than it saves, and concurrent requests already use the cores.
const PARALLEL_PERSONS: usize = 65_536;

/// Everything calculations read: the dataset and the per-person lookups the API's responses
/// need. Shared by every copy of a store.
#[derive(Debug)]
struct Population {
    data: Dataset,
    /// Distinct ids per person index, sorted.
    distinct_ids: Vec<Vec<String>>,
    /// Person indices ordered by person id (UTF-8 bytes): the order of member lists and pages.
    by_id: Vec<usize>,
}

impl Population {
    fn new(data: Dataset) -> Population {
        let distinct_ids = distinct_ids_by_person(&data);
        let mut by_id: Vec<usize> = (0..data.len()).collect();
        by_id.sort_by(|&a, &b| data.person_id(a).cmp(&data.person_id(b)));
        Population {
            data,
            distinct_ids,
            by_id,
        }
    }

    /// Person indices of a member set, ordered by person id.
    fn ordered<'a>(&'a self, members: Option<&'a Bitset>) -> impl Iterator<Item = usize> + 'a {
        self.by_id
            .iter()
            .copied()
            .filter(move |&p| members.is_some_and(|m| m.get(p)))
    }
}

/// One cohort: its record, what its definition references, and its members as a bitset over
/// person indices. Entries are shared (`Arc`) between a store and its copies; a change replaces
/// only the entries of the cohorts it touches.
#[derive(Clone, Debug)]
struct Entry {
    record: CohortRecord,
    /// Cohorts the active definition references (sorted, unique; empty when deleted or static).
    refs: Vec<CohortId>,
    /// The definition, or a cohort it references, has a behavioral leaf.
    needs_events: bool,
    /// A legacy `groups` cohort's definition in the `filters` form (for responses).
    legacy_filters: Option<Value>,
    /// Members from the last successful calculation (`None`: none, as for a deleted cohort).
    members: Option<Arc<Bitset>>,
}

/// Cohort definitions in the API's shape over a dataset, with each cohort's members and
/// calculation record. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct CohortStore {
    entries: BTreeMap<CohortId, Arc<Entry>>,
    /// Direct dependents: cohort id → the non-deleted cohorts whose definition references it.
    users: HashMap<CohortId, BTreeSet<CohortId>>,
    /// Non-deleted cohorts, newest first (creation time, then id, both descending).
    live: BTreeSet<(Reverse<Micros>, Reverse<CohortId>)>,
    population: Arc<Population>,
    limits: Limits,
    next_id: CohortId,
    clock: Option<Micros>,
    /// Bumped by every installed change; a [`PlannedChange`] applies only to the state it was
    /// planned on.
    generation: u64,
}

/// A validated, calculated change that is not installed yet: the new state of the cohort it is
/// about and of every cohort recalculated with it. [`CohortStore::apply`] installs it; a caller
/// that persists changes (the server) writes [`PlannedChange::record`] first and applies only once
/// that has committed, so readers never see an unpersisted state and are never blocked while the
/// database is written.
#[derive(Debug)]
pub struct PlannedChange {
    id: CohortId,
    /// The changed cohort first, then its recalculated dependents.
    entries: Vec<Entry>,
    created: bool,
    added: usize,
    generation: u64,
}

impl PlannedChange {
    /// The id of the cohort the change is about.
    pub fn id(&self) -> CohortId {
        self.id
    }

    /// That cohort's record as it will be once applied (what a persistence layer stores).
    pub fn record(&self) -> &CohortRecord {
        &self.entries[0].record
    }

    /// For [`CohortStore::plan_add_persons`]: how many persons become new members.
    pub fn added(&self) -> usize {
        self.added
    }
}

/// A persisted record [`CohortStore::restore_valid`] left out, and why.
#[derive(Clone, Debug)]
pub struct Rejected {
    /// The record as it was persisted.
    pub record: CohortRecord,
    /// Its validation errors (`unknown_cohort` when it references a rejected cohort).
    pub errors: Vec<Error>,
}

/// A cohort in the API's response shape, borrowing from its entry (serialized directly).
#[derive(Serialize)]
struct ApiCohort<'a> {
    id: CohortId,
    name: Option<&'a str>,
    description: &'a str,
    groups: &'a Value,
    deleted: bool,
    filters: Option<ApiFilters<'a>>,
    query: (),
    version: u64,
    pending_version: u64,
    is_calculating: bool,
    created_by: (),
    created_at: String,
    last_calculation: Option<String>,
    last_backfill_person_properties_at: (),
    errors_calculating: u64,
    last_error_message: Option<&'a str>,
    count: Option<u64>,
    is_static: bool,
    cohort_type: Option<&'static str>,
    experiment_set: [(); 0],
}

/// The request fields a create or PATCH may carry (outer `None`: not given).
#[derive(Default)]
struct Fields {
    name: Option<Option<String>>,
    description: Option<String>,
    filters: Option<Option<Value>>,
    groups: Option<Value>,
    is_static: Option<bool>,
    deleted: Option<bool>,
    static_ids: Option<Vec<String>>,
}

/// Nesting depth of a JSON value: 0 for a scalar, 1 for a flat array or object. Iterative.
pub fn json_depth(value: &Value) -> usize {
    let mut max = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(items) => {
                max = max.max(d);
                stack.extend(items.iter().map(|c| (c, d + 1)));
            }
            Value::Object(map) => {
                max = max.max(d);
                stack.extend(map.values().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    max
}

fn check_depth(key: &str, value: &Value) -> Result<(), StoreError> {
    if json_depth(value) > MAX_FIELD_DEPTH {
        return Err(StoreError::invalid(format!(
            "{key}: nested more than {MAX_FIELD_DEPTH} levels deep"
        )));
    }
    Ok(())
}

fn parse_fields(body: &Value) -> Result<Fields, StoreError> {
    let Value::Object(obj) = body else {
        return Err(StoreError::invalid("expected a JSON object"));
    };
    let mut f = Fields::default();
    for (key, value) in obj {
        match key.as_str() {
            "name" => {
                f.name = Some(match value {
                    Value::Null => None,
                    Value::String(s) if s.chars().count() <= MAX_NAME => Some(s.clone()),
                    Value::String(_) => {
                        return Err(StoreError::invalid(format!(
                            "name: ensure this field has no more than {MAX_NAME} characters"
                        )))
                    }
                    _ => return Err(StoreError::invalid("name: expected a string")),
                })
            }
            "description" => {
                f.description = Some(match value {
                    Value::Null => String::new(),
                    Value::String(s) if s.chars().count() <= MAX_DESCRIPTION => s.clone(),
                    Value::String(_) => {
                        return Err(StoreError::invalid(format!(
                    "description: ensure this field has no more than {MAX_DESCRIPTION} characters"
                )))
                    }
                    _ => return Err(StoreError::invalid("description: expected a string")),
                })
            }
            "filters" => {
                check_depth(key, value)?;
                f.filters = Some(match value {
                    Value::Null => None,
                    Value::Object(o) if o.is_empty() => None,
                    Value::Object(o) if o.contains_key("properties") => Some(value.clone()),
                    Value::Object(_) => {
                        return Err(StoreError::invalid(
                            "Must contain a 'properties' key with type and values",
                        ))
                    }
                    _ => return Err(StoreError::invalid("filters: expected an object")),
                })
            }
            "groups" => {
                check_depth(key, value)?;
                f.groups = Some(match value {
                    Value::Null => empty_array(),
                    Value::Array(_) => value.clone(),
                    _ => return Err(StoreError::invalid("groups: expected a list")),
                })
            }
            "is_static" => f.is_static = Some(bool_field(key, value)?),
            "deleted" => f.deleted = Some(bool_field(key, value)?),
            "_create_static_person_ids" => {
                let Value::Array(items) = value else {
                    return Err(StoreError::invalid(
                        "_create_static_person_ids: expected a list of person ids",
                    ));
                };
                let mut ids = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => ids.push(s.clone()),
                        Value::Number(n) => ids.push(n.to_string()),
                        _ => {
                            return Err(StoreError::invalid(
                                "_create_static_person_ids: expected a list of person ids",
                            ))
                        }
                    }
                }
                f.static_ids = Some(ids);
            }
            // Read-only and unknown fields are ignored, as the API does.
            _ => {}
        }
    }
    Ok(f)
}

fn bool_field(key: &str, value: &Value) -> Result<bool, StoreError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        _ => Err(StoreError::invalid(format!(
            "{key}: must be a valid boolean"
        ))),
    }
}

fn system_now() -> Micros {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| {
        Micros::try_from(d.as_micros()).unwrap_or(Micros::MAX)
    })
}

impl CohortStore {
    /// An empty store over a dataset (use `Dataset::default()` for none). The first cohort
    /// gets id 1.
    ///
    /// # Errors
    /// Only if the default [`Limits`] rejected an empty cohort set, which they never do.
    pub fn new(data: Dataset) -> Result<CohortStore, StoreError> {
        CohortStore::restore(data, Vec::new(), 1)
    }

    /// Rebuilds a store from persisted records (with their `static_members` filled in), validates
    /// them together and calculates every non-deleted cohort. New cohorts get ids from
    /// `next_id` on, and never one at or below an existing id.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] with every validation problem of the records.
    pub fn restore(
        data: Dataset,
        records: Vec<CohortRecord>,
        next_id: CohortId,
    ) -> Result<CohortStore, StoreError> {
        let definitions: Vec<Value> = records.iter().map(CohortRecord::definition).collect();
        let set = CohortSet::from_value(Value::Array(definitions), "store", &Limits::default())?;
        Ok(CohortStore::build(data, records, next_id, &set))
    }

    /// Like [`CohortStore::restore`], but a record that does not validate (an invalid filter, a
    /// reference to an absent or left-out cohort, a cycle) is left out instead of failing the
    /// whole restore, so one bad record cannot keep every other cohort from being served. The
    /// left-out records are returned with their errors.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] only for a problem that no single record can be blamed for
    /// (more cohorts than [`Limits::max_cohorts`]).
    pub fn restore_valid(
        data: Dataset,
        mut records: Vec<CohortRecord>,
        next_id: CohortId,
    ) -> Result<(CohortStore, Vec<Rejected>), StoreError> {
        let limits = Limits::default();
        let mut rejected: Vec<Rejected> = Vec::new();
        loop {
            let definitions: Vec<Value> = records.iter().map(CohortRecord::definition).collect();
            let errors = match CohortSet::from_value(Value::Array(definitions), "store", &limits) {
                Ok(set) => {
                    let store = CohortStore::build(data, records, next_id, &set);
                    return Ok((store, rejected));
                }
                Err(errors) => errors,
            };
            let mut blamed: BTreeMap<CohortId, Vec<Error>> = BTreeMap::new();
            for e in errors.iter() {
                let id = e.cohort().or_else(|| match e.kind() {
                    // "cohort 3 → 7 → 3": leaving out the cycle's smallest id breaks it.
                    ErrorKind::Cycle => e
                        .message()
                        .strip_prefix("cohort ")
                        .and_then(|m| m.split(' ').next())
                        .and_then(|id| id.parse().ok()),
                    _ => None,
                });
                match id {
                    Some(id) => blamed.entry(id).or_default().push(e.clone()),
                    None => return Err(errors.into()),
                }
            }
            let before = records.len();
            let (bad, good): (Vec<CohortRecord>, Vec<CohortRecord>) = records
                .into_iter()
                .partition(|r| blamed.contains_key(&r.id));
            records = good;
            if records.len() == before {
                return Err(errors.into());
            }
            for record in bad {
                let errors = blamed.remove(&record.id).unwrap_or_default();
                rejected.push(Rejected { record, errors });
            }
        }
    }

    /// A store holding `records`, which `set` (built from their definitions) validated, with
    /// every cohort calculated.
    fn build(
        data: Dataset,
        records: Vec<CohortRecord>,
        next_id: CohortId,
        set: &CohortSet,
    ) -> CohortStore {
        let max_id = records.iter().map(|r| r.id).max().unwrap_or(0);
        let mut store = CohortStore {
            entries: BTreeMap::new(),
            users: HashMap::new(),
            live: BTreeSet::new(),
            population: Arc::new(Population::new(data)),
            limits: set.limits().clone(),
            next_id: next_id.max(max_id.saturating_add(1)).max(1),
            clock: None,
            generation: 0,
        };
        for record in records {
            let entry = Entry {
                refs: Vec::new(),
                needs_events: false,
                legacy_filters: None,
                members: None,
                record,
            };
            store.install(entry);
        }
        store.recalculate_with(set);
        store
    }

    /// Fixes the clock (`Some(now)`) or goes back to the system clock (`None`). Calculations and
    /// creation times use it.
    pub fn set_clock(&mut self, now: Option<Micros>) {
        self.clock = now;
    }

    /// The store's current time.
    pub fn now(&self) -> Micros {
        self.clock.unwrap_or_else(system_now)
    }

    /// The id the next created cohort gets.
    pub fn next_id(&self) -> CohortId {
        self.next_id
    }

    /// Makes the next created cohort get `id` (a persistence layer that allocates ids itself
    /// calls this before each create).
    ///
    /// # Errors
    /// `invalid_input` when `id` is not above every existing id.
    pub fn set_next_id(&mut self, id: CohortId) -> Result<(), StoreError> {
        self.check_new_id(id)?;
        self.next_id = id;
        Ok(())
    }

    fn check_new_id(&self, id: CohortId) -> Result<(), StoreError> {
        if id < 1
            || self
                .entries
                .keys()
                .next_back()
                .is_some_and(|&max| id <= max)
        {
            return Err(StoreError::invalid(format!(
                "cohort id {id} is not above every existing cohort id"
            )));
        }
        Ok(())
    }

    /// The validated set of every cohort's definition (deleted cohorts included), built on
    /// demand.
    ///
    /// # Errors
    /// Never for a store whose every change went through its own checks.
    pub fn cohort_set(&self) -> Result<CohortSet, Errors> {
        let definitions: Vec<Value> = self.records().map(CohortRecord::definition).collect();
        CohortSet::from_value(Value::Array(definitions), "store", &self.limits)
    }

    /// The dataset members are calculated over.
    pub fn dataset(&self) -> &Dataset {
        &self.population.data
    }

    /// The record of a cohort (deleted ones included).
    pub fn get(&self, id: CohortId) -> Option<&CohortRecord> {
        self.entries.get(&id).map(|e| &e.record)
    }

    /// Every record, by id.
    pub fn records(&self) -> impl Iterator<Item = &CohortRecord> {
        self.entries.values().map(|e| &e.record)
    }

    /// How many cohorts the store holds (deleted ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the store holds no cohort.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The cohort's current members (person ids, sorted by their UTF-8 bytes), from its last
    /// successful calculation; empty for a deleted cohort.
    pub fn members(&self, id: CohortId) -> Option<Vec<String>> {
        let entry = self.entries.get(&id)?;
        let pop = &self.population;
        Some(
            pop.ordered(entry.members.as_deref())
                .filter_map(|p| pop.data.person_id(p).map(str::to_string))
                .collect(),
        )
    }

    /// Creates a cohort from an API request body (`name`, `description`, `filters` or `groups`,
    /// `is_static`, `_create_static_person_ids`; read-only fields are ignored) and calculates its
    /// members. Static person ids may be person ids or distinct ids; ids that match no person
    /// are dropped.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] for a malformed body or an invalid definition; nothing changes.
    pub fn create(&mut self, body: &Value) -> Result<CohortId, StoreError> {
        let change = self.plan_create(self.next_id, body, None)?;
        self.apply(change)
    }

    /// Creates a static cohort from a request body and a CSV upload (a header row with a
    /// `person_id`, `distinct_id` or `email` column; rows matching no person are ignored; a
    /// leading UTF-8 byte-order mark is skipped).
    ///
    /// # Errors
    /// As [`CohortStore::create`], and `invalid_input` for a CSV without a usable header or with
    /// an unterminated quoted field.
    pub fn create_from_csv(&mut self, body: &Value, csv: &str) -> Result<CohortId, StoreError> {
        let change = self.plan_create(self.next_id, body, Some(csv))?;
        self.apply(change)
    }

    /// Plans a create (see [`CohortStore::create`]; a `csv` makes it a static cohort, as
    /// [`CohortStore::create_from_csv`]) under the given new id, without changing the store.
    ///
    /// # Errors
    /// As [`CohortStore::create_from_csv`], and `invalid_input` when `id` is not above every
    /// existing id.
    pub fn plan_create(
        &self,
        id: CohortId,
        body: &Value,
        csv: Option<&str>,
    ) -> Result<PlannedChange, StoreError> {
        self.check_new_id(id)?;
        let fields = parse_fields(body)?;
        let now = self.now();
        let is_static = csv.is_some() || fields.is_static.unwrap_or(false);
        let mut record = CohortRecord {
            id,
            name: fields.name.flatten(),
            description: fields.description.unwrap_or_default(),
            filters: fields.filters.flatten().map(|f| JsonText::from_value(&f)),
            groups: fields.groups.unwrap_or_else(empty_array),
            is_static,
            deleted: fields.deleted.unwrap_or(false),
            created_at: now,
            version: 0,
            pending_version: 0,
            calculation: Calculation::default(),
            static_members: Vec::new(),
        };
        if is_static {
            let mut members = self.resolve_ids(fields.static_ids.as_deref().unwrap_or(&[]));
            if let Some(csv) = csv {
                let mut seen: HashSet<String> = members.iter().cloned().collect();
                for m in self.csv_members(csv)? {
                    if seen.insert(m.clone()) {
                        members.push(m);
                    }
                }
            }
            record.static_members = members;
        }
        self.plan(record, true)
    }

    /// Applies a PATCH (only the fields given change; `filters` is replaced as a whole),
    /// including soft delete (`deleted: true`) and restore (`deleted: false`), then recalculates
    /// the cohort and the cohorts that reference it.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Rejected`] for a malformed body,
    /// an invalid filter, an unknown reference, a reference to a deleted cohort, a cycle, or a
    /// delete refused because non-deleted cohorts reference the cohort (`in_use`, naming them).
    /// Nothing changes on error.
    pub fn update(&mut self, id: CohortId, patch: &Value) -> Result<(), StoreError> {
        let change = self.plan_update(id, patch, None)?;
        self.apply(change).map(|_| ())
    }

    /// Like [`CohortStore::update`], replacing a static cohort's members with a CSV upload's.
    ///
    /// # Errors
    /// As [`CohortStore::update`], and `invalid_input` when the cohort is not static or the CSV
    /// has no usable header or an unterminated quoted field.
    pub fn update_with_csv(
        &mut self,
        id: CohortId,
        patch: &Value,
        csv: &str,
    ) -> Result<(), StoreError> {
        let change = self.plan_update(id, patch, Some(csv))?;
        self.apply(change).map(|_| ())
    }

    /// Plans a PATCH (see [`CohortStore::update`] and [`CohortStore::update_with_csv`]) without
    /// changing the store.
    ///
    /// # Errors
    /// As [`CohortStore::update_with_csv`].
    pub fn plan_update(
        &self,
        id: CohortId,
        patch: &Value,
        csv: Option<&str>,
    ) -> Result<PlannedChange, StoreError> {
        let fields = parse_fields(patch)?;
        let Some(entry) = self.entries.get(&id) else {
            return Err(StoreError::not_found(id));
        };
        let mut record = entry.record.clone();
        if let Some(name) = fields.name {
            record.name = name;
        }
        if let Some(d) = fields.description {
            record.description = d;
        }
        if let Some(f) = fields.filters {
            record.filters = f.map(|f| JsonText::from_value(&f));
        }
        if let Some(g) = fields.groups {
            record.groups = g;
        }
        if let Some(s) = fields.is_static {
            if s && !record.is_static {
                record.static_members.clear();
            }
            record.is_static = s;
        }
        if let Some(csv) = csv {
            if !record.is_static {
                return Err(StoreError::invalid(
                    "a CSV upload can only update a static cohort",
                ));
            }
            record.static_members = self.csv_members(csv)?;
        }
        if let Some(deleted) = fields.deleted {
            if deleted && !record.deleted {
                self.check_not_in_use(id)?;
            }
            record.deleted = deleted;
        }
        self.plan(record, false)
    }

    /// Installs a planned change: the cohort it is about and every cohort recalculated with it.
    /// Returns the cohort's id. A created cohort moves the next id past its own.
    ///
    /// # Errors
    /// `invalid_input` when the store has changed since the change was planned (plan again).
    pub fn apply(&mut self, change: PlannedChange) -> Result<CohortId, StoreError> {
        if change.generation != self.generation {
            return Err(StoreError::invalid(
                "the store changed after this change was planned",
            ));
        }
        let id = change.id;
        for entry in change.entries {
            self.install(entry);
        }
        if change.created {
            self.next_id = self.next_id.max(id.saturating_add(1));
        }
        self.generation = self.generation.wrapping_add(1);
        Ok(id)
    }

    /// Puts an entry in place, keeping the dependents index and the newest-first order.
    fn install(&mut self, entry: Entry) {
        let id = entry.record.id;
        if let Some(old) = self.entries.get(&id) {
            for r in &old.refs {
                if let Some(users) = self.users.get_mut(r) {
                    users.remove(&id);
                    if users.is_empty() {
                        self.users.remove(r);
                    }
                }
            }
            if !old.record.deleted {
                self.live
                    .remove(&(Reverse(old.record.created_at), Reverse(id)));
            }
        }
        for r in &entry.refs {
            self.users.entry(*r).or_default().insert(id);
        }
        if !entry.record.deleted {
            self.live
                .insert((Reverse(entry.record.created_at), Reverse(id)));
        }
        self.entries.insert(id, Arc::new(entry));
    }

    fn check_not_in_use(&self, id: CohortId) -> Result<(), StoreError> {
        let users: Vec<String> = self
            .users
            .get(&id)
            .into_iter()
            .flatten()
            .filter(|u| self.get(**u).is_some_and(|r| !r.deleted))
            .map(|u| self.short_label(*u))
            .collect();
        if users.is_empty() {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::InUse,
            format!(
                "{} is used by {} {}: remove those references before deleting it",
                self.label(id),
                if users.len() == 1 {
                    "cohort"
                } else {
                    "cohorts"
                },
                users.join(", ")
            ),
        )
        .with_cohort(id)
        .into())
    }

    /// `cohort 3 "Paying users"` (or `cohort 3` without a name).
    fn label(&self, id: CohortId) -> String {
        format!("cohort {}", self.short_label(id))
    }

    /// `3 "Paying users"` (or `3` without a name).
    fn short_label(&self, id: CohortId) -> String {
        match self.get(id).and_then(|r| r.name.as_deref()) {
            Some(name) => format!("{id} {name:?}"),
            None => id.to_string(),
        }
    }

    /// Validates a cohort's new record against the rest of the store, recalculates it and the
    /// cohorts that depend on it, and returns the result as a change to install. Only the cohort,
    /// what it references (transitively) and its dependents are looked at, so the cost does not
    /// grow with the number of unrelated cohorts.
    fn plan(&self, mut record: CohortRecord, created: bool) -> Result<PlannedChange, StoreError> {
        let id = record.id;
        let definition = record.definition();
        let raw = cohort_objects(Value::Array(vec![definition.clone()]), "cohort")?
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::invalid("expected a cohort object"))?;
        let parsed = parse_cohort(&raw.object, raw.id, &self.limits);
        if !parsed.errors.is_empty() {
            return Err(Errors(parsed.errors).into());
        }
        // A live cohort may not come to reference a deleted one, whether it is created, changed
        // or restored: it would silently match nobody through it.
        let mut deleted_targets = Vec::new();
        let mut own_refs: Vec<CohortId> = Vec::new();
        for r in &parsed.references {
            match self.entries.get(&r.target) {
                Some(target) if target.record.deleted && !record.deleted && r.target != id => {
                    own_refs.push(r.target);
                    deleted_targets.push(
                        Error::new(
                            ErrorKind::UnknownCohort,
                            format!(
                                "{} is deleted: restore it or remove the reference",
                                self.label(r.target)
                            ),
                        )
                        .with_cohort(id)
                        .with_path(r.path.clone()),
                    );
                }
                Some(_) => own_refs.push(r.target),
                None => {}
            }
        }
        // The cohorts to recalculate: this one and everything that depends on it.
        let mut targets = vec![id];
        let mut seen: HashSet<CohortId> = HashSet::from([id]);
        let mut i = 0;
        while i < targets.len() {
            if let Some(users) = self.users.get(&targets[i]) {
                for &u in users {
                    if seen.insert(u) {
                        targets.push(u);
                    }
                }
            }
            i += 1;
        }
        // Everything they reference, transitively: the set to validate and evaluate.
        let mut closure: BTreeSet<CohortId> = targets.iter().copied().collect();
        let mut stack: Vec<CohortId> = targets
            .iter()
            .flat_map(|&t| {
                if t == id {
                    own_refs.clone()
                } else {
                    self.entries
                        .get(&t)
                        .map(|e| e.refs.clone())
                        .unwrap_or_default()
                }
            })
            .collect();
        while let Some(c) = stack.pop() {
            if closure.insert(c) {
                if let Some(e) = self.entries.get(&c) {
                    stack.extend(e.refs.iter().copied().filter(|r| !closure.contains(r)));
                }
            }
        }
        let definitions: Vec<Value> = closure
            .iter()
            .filter_map(|&c| {
                if c == id {
                    Some(definition.clone())
                } else {
                    self.entries.get(&c).map(|e| e.record.definition())
                }
            })
            .collect();
        let set = match CohortSet::from_value(Value::Array(definitions), "store", &self.limits) {
            Ok(set) if deleted_targets.is_empty() => set,
            Ok(_) => return Err(Errors(deleted_targets).into()),
            Err(mut errors) => {
                errors.0.extend(deleted_targets);
                return Err(errors.into());
            }
        };
        record.pending_version = if created {
            1
        } else {
            record.pending_version.max(record.version).saturating_add(1)
        };
        let mut entries = Vec::with_capacity(targets.len());
        for &t in &targets {
            let entry = if t == id {
                Entry {
                    record: record.clone(),
                    refs: Vec::new(),
                    needs_events: false,
                    legacy_filters: None,
                    members: None,
                }
            } else {
                match self.entries.get(&t) {
                    Some(e) => Entry::clone(e),
                    None => continue,
                }
            };
            entries.push(entry);
        }
        let ok = self.calculate(&set, &mut entries);
        if ok.contains(&id) {
            entries[0].record.version = entries[0].record.pending_version;
        }
        Ok(PlannedChange {
            id,
            entries,
            created,
            added: 0,
            generation: self.generation,
        })
    }

    /// Refreshes each entry's derived fields from `set` (which holds its definition and
    /// everything it references) and calculates its members at the store's now. Returns the
    /// ids whose calculation succeeded (a deleted cohort's always does: it has no members).
    fn calculate(&self, set: &CohortSet, entries: &mut [Entry]) -> Vec<CohortId> {
        let now = self.now();
        let mut live = Vec::new();
        for e in entries.iter_mut() {
            let id = e.record.id;
            let cohort = set.get(id);
            e.refs = match cohort {
                Some(c) if !c.is_deleted() => {
                    let mut refs = c.references();
                    refs.sort_unstable();
                    refs.dedup();
                    refs
                }
                _ => Vec::new(),
            };
            e.needs_events = set.needs_events(id);
            e.legacy_filters = match cohort {
                Some(c) if e.record.filters.is_none() && !e.record.is_static => {
                    match (&c.definition, c.to_json()) {
                        (Definition::Dynamic(_), mut obj) => {
                            obj.get_mut("filters").map(Value::take)
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if cohort.is_some_and(|c| !c.is_deleted()) {
                live.push(id);
            }
        }
        let mut ok: Vec<CohortId> = entries
            .iter()
            .filter(|e| !live.contains(&e.record.id))
            .map(|e| e.record.id)
            .collect();
        for e in entries.iter_mut().filter(|e| !live.contains(&e.record.id)) {
            e.members = None;
        }
        if live.is_empty() {
            return ok;
        }
        match self.evaluate(set, &live, now) {
            Ok(mut bits) => {
                for e in entries.iter_mut() {
                    if let Some(b) = bits.remove(&e.record.id) {
                        e.record.calculation = Calculation {
                            count: Some(b.count() as u64),
                            last_calculation: Some(now),
                            errors_calculating: 0,
                            last_error_message: None,
                        };
                        e.members = Some(Arc::new(b));
                        ok.push(e.record.id);
                    }
                }
            }
            Err(err) => {
                for e in entries.iter_mut().filter(|e| live.contains(&e.record.id)) {
                    e.record.calculation.errors_calculating += 1;
                    e.record.calculation.last_error_message = Some(err.to_string());
                }
            }
        }
        ok
    }

    /// Members of `ids` at `now` as bitsets; `set` holds them and everything they reference.
    fn evaluate(
        &self,
        set: &CohortSet,
        ids: &[CohortId],
        now: Micros,
    ) -> Result<BTreeMap<CohortId, Bitset>, Error> {
        let data = &self.population.data;
        let program = data.compile(set)?;
        let opts = BatchOptions {
            cohorts: Some(ids.to_vec()),
            threads: if data.len() < PARALLEL_PERSONS { 1 } else { 0 },
            ..BatchOptions::default()
        };
        data.evaluate_bitsets(&program, now, &opts)
    }

    /// The set of `ids`' definitions and everything they reference, transitively.
    fn closure_set(&self, ids: &[CohortId]) -> Result<CohortSet, Errors> {
        let mut closure = BTreeSet::new();
        let mut stack = ids.to_vec();
        while let Some(c) = stack.pop() {
            if closure.insert(c) {
                if let Some(e) = self.entries.get(&c) {
                    stack.extend(e.refs.iter().copied());
                }
            }
        }
        let definitions: Vec<Value> = closure
            .iter()
            .filter_map(|c| self.entries.get(c).map(|e| e.record.definition()))
            .collect();
        CohortSet::from_value(Value::Array(definitions), "store", &self.limits)
    }

    /// Recalculates every non-deleted cohort (as after a restart), returning the ids whose
    /// calculation succeeded.
    pub fn recalculate_all(&mut self) -> Vec<CohortId> {
        match self.cohort_set() {
            Ok(set) => self.recalculate_with(&set),
            Err(errors) => {
                let message = errors.to_string();
                for e in self.entries.values_mut() {
                    if !e.record.deleted {
                        let e = Arc::make_mut(e);
                        e.record.calculation.errors_calculating += 1;
                        e.record.calculation.last_error_message = Some(message.clone());
                    }
                }
                Vec::new()
            }
        }
    }

    /// Recalculates every cohort of the store with `set`, the set of all their definitions.
    fn recalculate_with(&mut self, set: &CohortSet) -> Vec<CohortId> {
        let mut entries: Vec<Entry> = self.entries.values().map(|e| Entry::clone(e)).collect();
        let ok = self.calculate(set, &mut entries);
        for mut e in entries {
            if ok.contains(&e.record.id) {
                e.record.version = e.record.pending_version.max(e.record.version);
                e.record.pending_version = e.record.version;
            }
            self.install(e);
        }
        self.generation = self.generation.wrapping_add(1);
        ok
    }

    /// Person ids of the persons that `ids` (person ids or distinct ids) name, in order, without
    /// duplicates; ids that match no person are dropped.
    fn resolve_ids(&self, ids: &[String]) -> Vec<String> {
        let data = &self.population.data;
        let mut seen = HashSet::new();
        ids.iter()
            .filter_map(|i| data.resolve(i))
            .filter(|&p| seen.insert(p))
            .filter_map(|p| data.person_id(p))
            .map(str::to_string)
            .collect()
    }

    /// The members a CSV upload names: a leading byte-order mark is skipped, and an unterminated
    /// quoted field is an error rather than a file that silently names nobody.
    fn csv_members(&self, csv: &str) -> Result<Vec<String>, StoreError> {
        let csv = csv.strip_prefix('\u{feff}').unwrap_or(csv);
        check_csv_quotes(csv)?;
        Ok(self
            .population
            .data
            .static_members_from_csv(csv)?
            .person_ids)
    }

    /// The cohort in the API's JSON shape (`id`, `name`, `description`, `groups`, `deleted`,
    /// `filters`, `query`, `version`, `pending_version`, `is_calculating`, `created_by`,
    /// `created_at`, `last_calculation`, `errors_calculating`, `last_error_message`, `count`,
    /// `is_static`, `cohort_type`, `experiment_set`). Legacy `groups` cohorts show their filters
    /// in the `filters` form.
    pub fn to_api_json(&self, id: CohortId) -> Option<Value> {
        let api = self.api_cohort(id)?;
        serde_json::to_value(api).ok()
    }

    /// Appends the cohort's [`CohortStore::to_api_json`] form, serialized, to `out` (straight
    /// from the record, without building a JSON value first). Returns false for an unknown id.
    pub fn write_api_json(&self, id: CohortId, out: &mut Vec<u8>) -> bool {
        match self.api_cohort(id) {
            Some(api) => serde_json::to_writer(out, &api).is_ok(),
            None => false,
        }
    }

    fn api_cohort(&self, id: CohortId) -> Option<ApiCohort<'_>> {
        let entry = self.entries.get(&id)?;
        let r = &entry.record;
        let filters = match (&r.filters, &entry.legacy_filters) {
            (Some(f), _) => Some(ApiFilters::Text(&f.0)),
            (None, _) if r.is_static => None,
            (None, legacy) => legacy.as_ref().map(ApiFilters::Value),
        };
        let cohort_type = if r.deleted {
            None
        } else if r.is_static {
            Some("static")
        } else if entry.needs_events {
            Some("behavioral")
        } else {
            Some("person_property")
        };
        let calc = &r.calculation;
        Some(ApiCohort {
            id: r.id,
            name: r.name.as_deref(),
            description: &r.description,
            groups: &r.groups,
            deleted: r.deleted,
            filters,
            query: (),
            version: r.version,
            pending_version: r.pending_version,
            is_calculating: false,
            created_by: (),
            created_at: format_micros(r.created_at),
            last_calculation: calc.last_calculation.map(format_micros),
            last_backfill_person_properties_at: (),
            errors_calculating: calc.errors_calculating,
            last_error_message: calc.last_error_message.as_deref(),
            count: calc.count,
            is_static: r.is_static,
            cohort_type,
            experiment_set: [],
        })
    }

    /// Non-deleted cohorts matching the query, newest first (creation time, then id), one page.
    /// Without filters a page costs its own size, not the number of cohorts.
    pub fn list(&self, q: &ListQuery) -> ListPage {
        let (count, ids) = self.list_ids(q);
        ListPage {
            count,
            results: ids.iter().filter_map(|id| self.to_api_json(*id)).collect(),
        }
    }

    /// [`CohortStore::list`] as ids: how many cohorts match, and this page's ids.
    pub fn list_ids(&self, q: &ListQuery) -> (usize, Vec<CohortId>) {
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        let newest_first = self
            .live
            .iter()
            .filter_map(|(_, Reverse(id))| self.entries.get(id));
        if q.kind.is_none() && q.search.is_none() && !q.hide_behavioral_cohorts {
            let page = newest_first
                .skip(q.offset)
                .take(limit)
                .map(|e| e.record.id)
                .collect();
            return (self.live.len(), page);
        }
        let needle = q.search.as_deref().map(str::to_lowercase);
        let matching: Vec<CohortId> = newest_first
            .filter(|e| match q.kind {
                Some(CohortKind::Static) => e.record.is_static,
                Some(CohortKind::Dynamic) => !e.record.is_static,
                None => true,
            })
            .filter(|e| match &needle {
                Some(n) => e
                    .record
                    .name
                    .as_deref()
                    .is_some_and(|name| name.to_lowercase().contains(n.as_str())),
                None => true,
            })
            .filter(|e| !q.hide_behavioral_cohorts || !e.needs_events)
            .map(|e| e.record.id)
            .collect();
        let page = matching
            .iter()
            .skip(q.offset)
            .take(limit)
            .copied()
            .collect();
        (matching.len(), page)
    }

    /// Creates a static cohort `"<name> (static copy)"` holding the members of dynamic cohort
    /// `id` evaluated at `now` (the copy's calculation runs at the store's now).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown or deleted id; `invalid_input` for a static
    /// source ("Cannot duplicate a static cohort as a static cohort.").
    pub fn duplicate_as_static(
        &mut self,
        id: CohortId,
        now: Micros,
    ) -> Result<CohortId, StoreError> {
        let change = self.plan_duplicate_as_static(id, self.next_id, now)?;
        self.apply(change)
    }

    /// Plans [`CohortStore::duplicate_as_static`], the copy getting id `new_id`, without
    /// changing the store.
    ///
    /// # Errors
    /// As [`CohortStore::duplicate_as_static`], and `invalid_input` when `new_id` is not above
    /// every existing id.
    pub fn plan_duplicate_as_static(
        &self,
        id: CohortId,
        new_id: CohortId,
        now: Micros,
    ) -> Result<PlannedChange, StoreError> {
        let Some(source) = self.get(id) else {
            return Err(StoreError::not_found(id));
        };
        if source.is_static {
            return Err(StoreError::invalid(
                "Cannot duplicate a static cohort as a static cohort.",
            ));
        }
        if source.deleted {
            return Err(StoreError::not_found(id));
        }
        let name = format!("{} (static copy)", source.name.as_deref().unwrap_or(""));
        let set = self.closure_set(&[id])?;
        let mut bits = self.evaluate(&set, &[id], now)?;
        let pop = &self.population;
        let list: Vec<&str> = pop
            .ordered(bits.remove(&id).as_ref())
            .filter_map(|p| pop.data.person_id(p))
            .collect();
        self.plan_create(
            new_id,
            &json!({
                "name": name,
                "is_static": true,
                "_create_static_person_ids": list,
            }),
            None,
        )
    }

    fn entry(&self, id: CohortId) -> Result<&Entry, StoreError> {
        self.entries
            .get(&id)
            .map(|e| &**e)
            .ok_or_else(|| StoreError::not_found(id))
    }

    /// One page of the cohort's current members, ordered by person id (`limit` defaults to
    /// [`DEFAULT_LIMIT`]).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id.
    pub fn persons(
        &self,
        id: CohortId,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<PersonsPage, StoreError> {
        let entry = self.entry(id)?;
        let members = entry.members.as_deref();
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        let pop = &self.population;
        Ok(PersonsPage {
            total: members.map_or(0, Bitset::count),
            results: pop
                .ordered(members)
                .skip(offset)
                .take(limit)
                .filter_map(|p| pop.data.person_id(p).map(|pid| self.person_json(p, pid)))
                .collect(),
        })
    }

    /// The same page as CSV: a header `id,email,name,distinct_ids,properties.KEY…` (property
    /// keys of the page's persons, sorted; `email` has its own column), one row per person;
    /// distinct ids are joined with `, `; non-string values are written as JSON.
    ///
    /// # Errors
    /// As [`CohortStore::persons`].
    pub fn persons_csv(
        &self,
        id: CohortId,
        limit: Option<usize>,
        offset: usize,
    ) -> Result<String, StoreError> {
        let page = self.persons(id, limit, offset)?;
        let mut keys: Vec<String> = page
            .results
            .iter()
            .filter_map(|p| p.get("properties").and_then(Value::as_object))
            .flat_map(|m| m.keys().cloned())
            .filter(|k| k != "email")
            .collect();
        keys.sort();
        keys.dedup();
        let mut out = String::new();
        let mut header = vec![
            "id".to_string(),
            "email".to_string(),
            "name".to_string(),
            "distinct_ids".to_string(),
        ];
        header.extend(keys.iter().map(|k| format!("properties.{k}")));
        push_csv_row(&mut out, &header);
        for p in &page.results {
            let props = p.get("properties").and_then(Value::as_object);
            let prop = |k: &str| props.and_then(|m| m.get(k)).map_or(String::new(), cell);
            let distinct = p
                .get("distinct_ids")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            let mut row = vec![
                p.get("id").map_or(String::new(), cell),
                prop("email"),
                p.get("name").map_or(String::new(), cell),
                distinct,
            ];
            row.extend(keys.iter().map(|k| prop(k)));
            push_csv_row(&mut out, &row);
        }
        Ok(out)
    }

    /// A person in the API's shape.
    fn person_json(&self, index: usize, person_id: &str) -> Value {
        let pop = &self.population;
        let properties = pop.data.person_properties_json(index);
        let distinct: &[String] = pop.distinct_ids.get(index).map_or(&[], Vec::as_slice);
        let name = ["email", "name", "username"]
            .iter()
            .find_map(|k| properties.get(*k).and_then(Value::as_str))
            .map(str::to_string)
            .or_else(|| distinct.first().cloned())
            .unwrap_or_else(|| person_id.to_string());
        json!({
            "id": person_id,
            "uuid": person_id,
            "type": "person",
            "name": name,
            "distinct_ids": distinct,
            "properties": properties,
            "created_at": null,
            "last_seen_at": null,
            "is_identified": null,
            "matched_recordings": [],
            "value_at_data_point": null,
        })
    }

    /// Adds persons (person ids or distinct ids) to a static cohort and recalculates it and its
    /// dependents; returns how many were new members. Ids matching no person are ignored.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; `invalid_input` when the cohort is not static,
    /// the list is empty, or no id matches a person ("No valid users to add to cohort").
    pub fn add_persons(
        &mut self,
        id: CohortId,
        person_ids: &[String],
    ) -> Result<usize, StoreError> {
        let change = self.plan_add_persons(id, person_ids)?;
        let added = change.added();
        self.apply(change)?;
        Ok(added)
    }

    /// Plans [`CohortStore::add_persons`] without changing the store
    /// ([`PlannedChange::added`] tells how many persons are new).
    ///
    /// # Errors
    /// As [`CohortStore::add_persons`].
    pub fn plan_add_persons(
        &self,
        id: CohortId,
        person_ids: &[String],
    ) -> Result<PlannedChange, StoreError> {
        let Some(record) = self.get(id) else {
            return Err(StoreError::not_found(id));
        };
        if !record.is_static {
            return Err(StoreError::invalid("Can only add users to static cohorts"));
        }
        if person_ids.is_empty() {
            return Err(StoreError::invalid("person_ids cannot be empty"));
        }
        let resolved = self.resolve_ids(person_ids);
        if resolved.is_empty() {
            return Err(StoreError::invalid("No valid users to add to cohort"));
        }
        let mut record = record.clone();
        let before = record.static_members.len();
        let mut seen: HashSet<String> = record.static_members.iter().cloned().collect();
        for p in resolved {
            if seen.insert(p.clone()) {
                record.static_members.push(p);
            }
        }
        let added = record.static_members.len() - before;
        let mut change = self.plan(record, false)?;
        change.added = added;
        Ok(change)
    }

    /// Removes one person (person id or distinct id) from a static cohort and recalculates it
    /// and its dependents.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown cohort or a person not in it ("Person is not part
    /// of the cohort"); `invalid_input` when the cohort is not static.
    pub fn remove_person(&mut self, id: CohortId, person_id: &str) -> Result<(), StoreError> {
        let change = self.plan_remove_person(id, person_id)?;
        self.apply(change).map(|_| ())
    }

    /// Plans [`CohortStore::remove_person`] without changing the store.
    ///
    /// # Errors
    /// As [`CohortStore::remove_person`].
    pub fn plan_remove_person(
        &self,
        id: CohortId,
        person_id: &str,
    ) -> Result<PlannedChange, StoreError> {
        let Some(record) = self.get(id) else {
            return Err(StoreError::not_found(id));
        };
        if !record.is_static {
            return Err(StoreError::invalid(
                "Can only remove users from static cohorts",
            ));
        }
        let data = &self.population.data;
        let canonical = data
            .resolve(person_id)
            .and_then(|p| data.person_id(p))
            .unwrap_or(person_id)
            .to_string();
        let mut record = record.clone();
        let before = record.static_members.len();
        record
            .static_members
            .retain(|m| m != &canonical && m != person_id);
        if record.static_members.len() == before {
            return Err(StoreError::NotFound(
                "Person is not part of the cohort".into(),
            ));
        }
        self.plan(record, false)
    }
}

/// Refuses CSV text whose last quoted field is never closed (the same reading as the upload
/// parser: a `"` opens a quoted field, `""` inside one is a quote, the next lone `"` closes it).
fn check_csv_quotes(csv: &str) -> Result<(), StoreError> {
    let mut open_line = None;
    let mut line = 1usize;
    let mut chars = csv.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, open_line) {
            ('\n', _) => line += 1,
            ('"', Some(_)) if chars.peek() == Some(&'"') => {
                chars.next();
            }
            ('"', Some(_)) => open_line = None,
            ('"', None) => open_line = Some(line),
            _ => {}
        }
    }
    match open_line {
        Some(l) => Err(StoreError::Rejected(
            Error::input(
                "csv",
                format!("line {l}: a quoted field is never closed (unterminated quote)"),
            )
            .into(),
        )),
        None => Ok(()),
    }
}

fn distinct_ids_by_person(data: &Dataset) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); data.len()];
    for (d, p) in data.distinct_owners() {
        if let Some(list) = out.get_mut(p) {
            list.push(d.to_string());
        }
    }
    for list in &mut out {
        list.sort();
    }
    out
}

/// A CSV cell: strings as they are, anything else as JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn push_csv_row(out: &mut String, fields: &[String]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        if f.contains([',', '"', '\n', '\r']) {
            out.push('"');
            out.push_str(&f.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(f);
        }
    }
    out.push_str("\r\n");
}
