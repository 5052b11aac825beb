//! The cohort API's operations as a library: a [`CohortStore`] holds cohort definitions in the
//! API's shape on top of a validated [`CohortSet`] and a loaded [`Dataset`], and keeps each
//! cohort's current members and calculation record.
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
//! rebuilds the store with [`CohortStore::restore`]. Cloning a store is cheap enough to apply a
//! change to a copy and swap it in only once it has been persisted.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::ast::Definition;
use crate::data::Dataset;
use crate::error::{Error, ErrorKind, Errors};
use crate::eval::batch::BatchOptions;
use crate::limits::Limits;
use crate::set::CohortSet;
use crate::time::{format_micros, Micros};
use crate::value::Val;
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
    /// `filters` as last written (`None` when absent or null).
    #[serde(default)]
    pub filters: Option<Value>,
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
                obj.insert("filters".into(), f.clone());
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

#[derive(Clone, Debug)]
struct Entry {
    record: CohortRecord,
    /// Current members (person ids, sorted), from the last successful calculation.
    members: Arc<Vec<String>>,
}

/// Cohort definitions in the API's shape over a validated set and a dataset, with each cohort's
/// members and calculation record. See the [module documentation](self).
#[derive(Clone, Debug)]
pub struct CohortStore {
    set: CohortSet,
    entries: BTreeMap<CohortId, Entry>,
    data: Arc<Dataset>,
    /// Distinct ids per person index, sorted.
    distinct_ids: Arc<Vec<Vec<String>>>,
    next_id: CohortId,
    clock: Option<Micros>,
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
        CohortStore::with_set(data, Vec::new(), 1)
    }

    fn with_set(
        data: Dataset,
        records: Vec<CohortRecord>,
        next_id: CohortId,
    ) -> Result<CohortStore, StoreError> {
        let definitions: Vec<Value> = records.iter().map(CohortRecord::definition).collect();
        let set = CohortSet::from_value(Value::Array(definitions), "store", &Limits::default())?;
        let max_id = records.iter().map(|r| r.id).max().unwrap_or(0);
        let distinct_ids = distinct_ids_by_person(&data);
        let entries = records
            .into_iter()
            .map(|record| {
                let entry = Entry {
                    record,
                    members: Arc::new(Vec::new()),
                };
                (entry.record.id, entry)
            })
            .collect();
        Ok(CohortStore {
            set,
            entries,
            data: Arc::new(data),
            distinct_ids: Arc::new(distinct_ids),
            next_id: next_id.max(max_id.saturating_add(1)).max(1),
            clock: None,
        })
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
        let mut store = CohortStore::with_set(data, records, next_id)?;
        store.recalculate_all();
        Ok(store)
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
        self.next_id = id;
        Ok(())
    }

    /// The validated set (deleted cohorts included).
    pub fn cohort_set(&self) -> &CohortSet {
        &self.set
    }

    /// The dataset members are calculated over.
    pub fn dataset(&self) -> &Dataset {
        &self.data
    }

    /// The record of a cohort (deleted ones included).
    pub fn get(&self, id: CohortId) -> Option<&CohortRecord> {
        self.entries.get(&id).map(|e| &e.record)
    }

    /// Every record, by id.
    pub fn records(&self) -> impl Iterator<Item = &CohortRecord> {
        self.entries.values().map(|e| &e.record)
    }

    /// The cohort's current members (person ids, sorted), from its last successful calculation;
    /// empty for a deleted cohort.
    pub fn members(&self, id: CohortId) -> Option<&[String]> {
        self.entries.get(&id).map(|e| e.members.as_slice())
    }

    /// Creates a cohort from an API request body (`name`, `description`, `filters` or `groups`,
    /// `is_static`, `_create_static_person_ids`; read-only fields are ignored) and calculates its
    /// members. Static person ids may be person ids or distinct ids; ids that match no person
    /// are dropped.
    ///
    /// # Errors
    /// [`StoreError::Rejected`] for a malformed body or an invalid definition; nothing changes.
    pub fn create(&mut self, body: &Value) -> Result<CohortId, StoreError> {
        self.create_inner(body, None)
    }

    /// Creates a static cohort from a request body and a CSV upload (a header row with a
    /// `person_id`, `distinct_id` or `email` column; rows matching no person are ignored).
    ///
    /// # Errors
    /// As [`CohortStore::create`], and `invalid_input` for a CSV without a usable header.
    pub fn create_from_csv(&mut self, body: &Value, csv: &str) -> Result<CohortId, StoreError> {
        self.create_inner(body, Some(csv))
    }

    fn create_inner(&mut self, body: &Value, csv: Option<&str>) -> Result<CohortId, StoreError> {
        let fields = parse_fields(body)?;
        let id = self.next_id;
        let now = self.now();
        let is_static = csv.is_some() || fields.is_static.unwrap_or(false);
        let mut record = CohortRecord {
            id,
            name: fields.name.flatten(),
            description: fields.description.unwrap_or_default(),
            filters: fields.filters.flatten(),
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
                let from_csv = self.data.static_members_from_csv(csv)?;
                for m in from_csv.person_ids {
                    if !members.contains(&m) {
                        members.push(m);
                    }
                }
            }
            record.static_members = members;
        }
        let set = self.set.upsert(&record.definition())?;
        self.commit(set, record, true);
        self.next_id = id.saturating_add(1);
        Ok(id)
    }

    /// Applies a PATCH (only the fields given change; `filters` is replaced as a whole),
    /// including soft delete (`deleted: true`) and restore (`deleted: false`), then recalculates
    /// the cohort and the cohorts that reference it.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id; [`StoreError::Rejected`] for a malformed body,
    /// an invalid filter, an unknown reference, a cycle, or a delete refused because non-deleted
    /// cohorts reference the cohort (`in_use`, naming them). Nothing changes on error.
    pub fn update(&mut self, id: CohortId, patch: &Value) -> Result<(), StoreError> {
        self.update_inner(id, patch, None)
    }

    /// Like [`CohortStore::update`], replacing a static cohort's members with a CSV upload's.
    ///
    /// # Errors
    /// As [`CohortStore::update`], and `invalid_input` when the cohort is not static or the CSV
    /// has no usable header.
    pub fn update_with_csv(
        &mut self,
        id: CohortId,
        patch: &Value,
        csv: &str,
    ) -> Result<(), StoreError> {
        self.update_inner(id, patch, Some(csv))
    }

    fn update_inner(
        &mut self,
        id: CohortId,
        patch: &Value,
        csv: Option<&str>,
    ) -> Result<(), StoreError> {
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
            record.filters = f;
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
            record.static_members = self.data.static_members_from_csv(csv)?.person_ids;
        }
        if let Some(deleted) = fields.deleted {
            if deleted && !record.deleted {
                self.check_not_in_use(id)?;
            }
            record.deleted = deleted;
        }
        let set = self.set.upsert(&record.definition())?;
        self.commit(set, record, false);
        Ok(())
    }

    fn check_not_in_use(&self, id: CohortId) -> Result<(), StoreError> {
        let users: Vec<String> = self
            .set
            .direct_dependents(id)
            .into_iter()
            .filter(|u| self.get(*u).is_some_and(|r| !r.deleted))
            .map(|u| self.short_label(u))
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

    /// Installs a validated change: bumps the pending version, then recalculates the cohort and
    /// its dependents.
    fn commit(&mut self, set: CohortSet, mut record: CohortRecord, created: bool) {
        let id = record.id;
        record.pending_version = if created {
            1
        } else {
            record.pending_version.max(record.version).saturating_add(1)
        };
        let members = self
            .entries
            .get(&id)
            .map_or_else(|| Arc::new(Vec::new()), |e| e.members.clone());
        self.set = set;
        self.entries.insert(id, Entry { record, members });
        let mut targets = vec![id];
        targets.extend(self.set.dependents(id));
        let ok = self.recalculate(&targets);
        if let Some(e) = self.entries.get_mut(&id) {
            if ok.contains(&id) {
                e.record.version = e.record.pending_version;
            }
        }
    }

    /// Recalculates every non-deleted cohort (as after a restart), returning the ids whose
    /// calculation succeeded.
    pub fn recalculate_all(&mut self) -> Vec<CohortId> {
        let ids: Vec<CohortId> = self.entries.keys().copied().collect();
        let ok = self.recalculate(&ids);
        for id in &ok {
            if let Some(e) = self.entries.get_mut(id) {
                e.record.version = e.record.pending_version.max(e.record.version);
                e.record.pending_version = e.record.version;
            }
        }
        ok
    }

    /// Calculates the given cohorts at the store's now and updates their calculation records;
    /// deleted ones get no members. Returns the ids whose calculation succeeded.
    fn recalculate(&mut self, ids: &[CohortId]) -> Vec<CohortId> {
        let now = self.now();
        let mut targets = Vec::new();
        let mut ok = Vec::new();
        for &id in ids {
            let deleted = self.set.get(id).is_none_or(|c| c.is_deleted());
            if deleted {
                if let Some(e) = self.entries.get_mut(&id) {
                    e.members = Arc::new(Vec::new());
                    ok.push(id);
                }
            } else {
                targets.push(id);
            }
        }
        if targets.is_empty() {
            return ok;
        }
        let opts = BatchOptions {
            cohorts: Some(targets.clone()),
            ..BatchOptions::default()
        };
        match self.data.evaluate(&self.set, now, &opts) {
            Ok(members) => {
                for (id, list) in members {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.record.calculation = Calculation {
                            count: Some(list.len() as u64),
                            last_calculation: Some(now),
                            errors_calculating: 0,
                            last_error_message: None,
                        };
                        e.members = Arc::new(list);
                        ok.push(id);
                    }
                }
            }
            Err(err) => {
                for id in targets {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.record.calculation.errors_calculating += 1;
                        e.record.calculation.last_error_message = Some(err.to_string());
                    }
                }
            }
        }
        ok
    }

    /// Person ids of the persons that `ids` (person ids or distinct ids) name, in order, without
    /// duplicates; ids that match no person are dropped.
    fn resolve_ids(&self, ids: &[String]) -> Vec<String> {
        let mut seen = HashSet::new();
        ids.iter()
            .filter_map(|i| self.data.resolve(i))
            .filter_map(|p| self.data.person_id(p))
            .filter(|p| seen.insert(p.to_string()))
            .map(str::to_string)
            .collect()
    }

    /// The cohort in the API's JSON shape (`id`, `name`, `description`, `groups`, `deleted`,
    /// `filters`, `query`, `version`, `pending_version`, `is_calculating`, `created_by`,
    /// `created_at`, `last_calculation`, `errors_calculating`, `last_error_message`, `count`,
    /// `is_static`, `cohort_type`, `experiment_set`). Legacy `groups` cohorts show their filters
    /// in the `filters` form.
    pub fn to_api_json(&self, id: CohortId) -> Option<Value> {
        let r = self.get(id)?;
        let cohort = self.set.get(id);
        let filters = match &r.filters {
            Some(f) => f.clone(),
            None if r.is_static => Value::Null,
            None => match cohort.map(|c| (&c.definition, c.to_json())) {
                Some((Definition::Dynamic(_), mut obj)) => {
                    obj.get_mut("filters").map_or(Value::Null, Value::take)
                }
                _ => Value::Null,
            },
        };
        let cohort_type = if r.deleted {
            Value::Null
        } else if r.is_static {
            json!("static")
        } else if self.set.needs_events(id) {
            json!("behavioral")
        } else {
            json!("person_property")
        };
        let calc = &r.calculation;
        Some(json!({
            "id": r.id,
            "name": r.name,
            "description": r.description,
            "groups": r.groups,
            "deleted": r.deleted,
            "filters": filters,
            "query": null,
            "version": r.version,
            "pending_version": r.pending_version,
            "is_calculating": false,
            "created_by": null,
            "created_at": format_micros(r.created_at),
            "last_calculation": calc.last_calculation.map(format_micros),
            "last_backfill_person_properties_at": null,
            "errors_calculating": calc.errors_calculating,
            "last_error_message": calc.last_error_message,
            "count": calc.count,
            "is_static": r.is_static,
            "cohort_type": cohort_type,
            "experiment_set": [],
        }))
    }

    /// Non-deleted cohorts matching the query, newest first (creation time, then id), one page.
    pub fn list(&self, q: &ListQuery) -> ListPage {
        let needle = q.search.as_deref().map(str::to_lowercase);
        let mut matching: Vec<&CohortRecord> = self
            .records()
            .filter(|r| !r.deleted)
            .filter(|r| match q.kind {
                Some(CohortKind::Static) => r.is_static,
                Some(CohortKind::Dynamic) => !r.is_static,
                None => true,
            })
            .filter(|r| match &needle {
                Some(n) => r
                    .name
                    .as_deref()
                    .is_some_and(|name| name.to_lowercase().contains(n.as_str())),
                None => true,
            })
            .filter(|r| !q.hide_behavioral_cohorts || !self.set.needs_events(r.id))
            .collect();
        matching.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
        ListPage {
            count: matching.len(),
            results: matching
                .iter()
                .skip(q.offset)
                .take(limit)
                .filter_map(|r| self.to_api_json(r.id))
                .collect(),
        }
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
        let opts = BatchOptions {
            cohorts: Some(vec![id]),
            ..BatchOptions::default()
        };
        let mut members = self.data.evaluate(&self.set, now, &opts)?;
        let list = members.remove(&id).unwrap_or_default();
        self.create(&json!({
            "name": name,
            "is_static": true,
            "_create_static_person_ids": list,
        }))
    }

    fn member_list(&self, id: CohortId) -> Result<Arc<Vec<String>>, StoreError> {
        self.entries
            .get(&id)
            .map(|e| e.members.clone())
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
        let members = self.member_list(id)?;
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        Ok(PersonsPage {
            total: members.len(),
            results: members
                .iter()
                .skip(offset)
                .take(limit)
                .map(|pid| self.person_json(pid))
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
    fn person_json(&self, person_id: &str) -> Value {
        let index = self.data.resolve(person_id);
        let properties = index.map(|p| self.data.person_properties_json(p));
        let distinct: &[String] = index
            .and_then(|p| self.distinct_ids.get(p))
            .map_or(&[], Vec::as_slice);
        let name = properties
            .as_ref()
            .and_then(|m| {
                ["email", "name", "username"]
                    .iter()
                    .find_map(|k| m.get(*k).and_then(Value::as_str))
            })
            .map(str::to_string)
            .or_else(|| distinct.first().cloned())
            .unwrap_or_else(|| person_id.to_string());
        json!({
            "id": person_id,
            "uuid": person_id,
            "type": "person",
            "name": name,
            "distinct_ids": distinct,
            "properties": properties.unwrap_or_default(),
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
        for p in resolved {
            if !record.static_members.contains(&p) {
                record.static_members.push(p);
            }
        }
        let added = record.static_members.len() - before;
        let set = self
            .set
            .with_static_members(id, record.static_members.clone())?;
        self.commit(set, record, false);
        Ok(added)
    }

    /// Removes one person (person id or distinct id) from a static cohort and recalculates it
    /// and its dependents.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown cohort or a person not in it ("Person is not part
    /// of the cohort"); `invalid_input` when the cohort is not static.
    pub fn remove_person(&mut self, id: CohortId, person_id: &str) -> Result<(), StoreError> {
        let Some(record) = self.get(id) else {
            return Err(StoreError::not_found(id));
        };
        if !record.is_static {
            return Err(StoreError::invalid(
                "Can only remove users from static cohorts",
            ));
        }
        let canonical = self
            .data
            .resolve(person_id)
            .and_then(|p| self.data.person_id(p))
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
        let set = self
            .set
            .with_static_members(id, record.static_members.clone())?;
        self.commit(set, record, false);
        Ok(())
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

impl Dataset {
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
}
