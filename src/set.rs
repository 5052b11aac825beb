//! A validated set of cohorts: every definition parsed, every reference resolved, no cycles, and
//! an evaluation order in which each cohort comes after the cohorts it references.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use crate::ast::parse::{parse_cohort, Reference};
use crate::ast::{Cohort, Definition};
use crate::error::{Error, ErrorKind, Errors};
use crate::graph::{analyze, GraphNode};
use crate::limits::Limits;
use crate::model::{cohort_objects, parse_document, RawCohort};
use crate::CohortId;

/// A validated, acyclic set of cohorts. Cheap to clone (shared immutable contents); updates
/// return a new set and leave the old one untouched.
#[derive(Clone, Debug)]
pub struct CohortSet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Cohorts sorted by id (looked up by binary search).
    cohorts: Vec<Cohort>,
    /// Indices into `cohorts`, each after every cohort it references; deleted cohorts included.
    order: Vec<usize>,
    limits: Limits,
}

impl CohortSet {
    /// Parses and validates a cohorts file (a JSON array or the API's paginated list) with the
    /// default [`Limits`].
    ///
    /// # Errors
    /// Every problem found, in the order of `CLI.md` §1: file shape (`invalid_input`), filters
    /// (`invalid_filter`, by cohort id then path), references (`unknown_cohort`), cycles (`cycle`).
    pub fn from_json(text: &str) -> Result<CohortSet, Errors> {
        CohortSet::from_json_with(text, "cohorts", &Limits::default())
    }

    /// Like [`CohortSet::from_json`], naming the file `source` in errors and using `limits`.
    ///
    /// # Errors
    /// As [`CohortSet::from_json`].
    pub fn from_json_with(text: &str, source: &str, limits: &Limits) -> Result<CohortSet, Errors> {
        let doc = parse_document(text, source)?;
        CohortSet::from_value(doc, source, limits)
    }

    /// Validates an already parsed cohorts document.
    ///
    /// # Errors
    /// As [`CohortSet::from_json`].
    pub fn from_value(doc: Value, source: &str, limits: &Limits) -> Result<CohortSet, Errors> {
        let raw = cohort_objects(doc, source)?;
        CohortSet::from_raw(raw, limits)
    }

    fn from_raw(mut raw: Vec<RawCohort>, limits: &Limits) -> Result<CohortSet, Errors> {
        if raw.len() > limits.max_cohorts {
            return Err(Error::new(
                ErrorKind::InvalidFilter,
                format!(
                    "cohorts: the set has {} cohorts, more than the limit of {} (max_cohorts)",
                    raw.len(),
                    limits.max_cohorts
                ),
            )
            .into());
        }
        raw.sort_by_key(|r| r.id);
        let mut errors = Vec::new();
        let mut cohorts = Vec::with_capacity(raw.len());
        let mut nodes = Vec::with_capacity(raw.len());
        for r in &raw {
            let parsed = parse_cohort(&r.object, r.id, limits);
            errors.extend(parsed.errors);
            let deleted = matches!(r.object.get("deleted"), Some(Value::Bool(true)));
            nodes.push(GraphNode {
                id: r.id,
                deleted,
                references: parsed.references,
            });
            if let Some(c) = parsed.cohort {
                cohorts.push(c);
            }
        }
        let analysis = analyze(&nodes);
        errors.extend(analysis.unknown);
        errors.extend(analysis.cycles);
        if !errors.is_empty() {
            return Err(Errors(errors));
        }
        Ok(CohortSet {
            inner: Arc::new(Inner {
                cohorts,
                order: analysis.order,
                limits: limits.clone(),
            }),
        })
    }

    /// The limits this set was validated with.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The cohort with this id (deleted ones included).
    pub fn get(&self, id: CohortId) -> Option<&Cohort> {
        self.position(id).map(|i| &self.inner.cohorts[i])
    }

    /// All cohorts, sorted by id (deleted ones included).
    pub fn cohorts(&self) -> &[Cohort] {
        &self.inner.cohorts
    }

    /// Number of cohorts (deleted ones included).
    pub fn len(&self) -> usize {
        self.inner.cohorts.len()
    }

    /// True when the set has no cohorts.
    pub fn is_empty(&self) -> bool {
        self.inner.cohorts.is_empty()
    }

    /// Position of a cohort in [`CohortSet::cohorts`].
    pub(crate) fn position(&self, id: CohortId) -> Option<usize> {
        // Cohorts are sorted by id: a binary search, no hashing.
        self.inner.cohorts.binary_search_by_key(&id, |c| c.id).ok()
    }

    /// Positions in [`CohortSet::cohorts`], each after the cohorts it references.
    pub(crate) fn evaluation_order(&self) -> &[usize] {
        &self.inner.order
    }

    /// Adds a cohort or replaces the one with the same id, as the API's create and PATCH do.
    ///
    /// The object has the wire shape of one element of a cohorts file. A replaced cohort's
    /// `version` is incremented. Soft-deleting (`"deleted": true`) a cohort that non-deleted
    /// cohorts reference is refused; restoring one is validated like any update.
    ///
    /// # Errors
    /// The new definition's `invalid_filter` errors, `unknown_cohort` for references to absent
    /// ids, `cycle` when the change would close a loop, `in_use` for a refused delete. On error
    /// `self` is unchanged (it is never modified: the result is a new set).
    pub fn upsert(&self, object: &Value) -> Result<CohortSet, Errors> {
        let raw = match cohort_objects(Value::Array(vec![object.clone()]), "cohort") {
            Ok(mut v) => v.remove(0),
            Err(e) => return Err(e),
        };
        let parsed = parse_cohort(&raw.object, raw.id, &self.inner.limits);
        if !parsed.errors.is_empty() {
            return Err(Errors(parsed.errors));
        }
        let Some(mut cohort) = parsed.cohort else {
            return Err(Error::filter(raw.id, "", "invalid cohort").into());
        };
        let previous = self.get(raw.id);
        if let Some(prev) = previous {
            cohort.version = prev.version.saturating_add(1);
            if cohort.is_deleted() && !prev.is_deleted() {
                let users: Vec<String> = self
                    .direct_dependents(raw.id)
                    .into_iter()
                    .map(|id| id.to_string())
                    .collect();
                if !users.is_empty() {
                    return Err(Error::new(
                        ErrorKind::InUse,
                        format!(
                            "cohort {} is used by cohort {}: remove those references before deleting it",
                            raw.id,
                            users.join(", ")
                        ),
                    )
                    .with_cohort(raw.id)
                    .into());
                }
            }
        }
        let mut cohorts: Vec<Cohort> = self
            .inner
            .cohorts
            .iter()
            .filter(|c| c.id != raw.id)
            .cloned()
            .collect();
        let pos = cohorts.partition_point(|c| c.id < raw.id);
        cohorts.insert(pos, cohort);
        let nodes: Vec<GraphNode> = cohorts
            .iter()
            .map(|c| GraphNode {
                id: c.id,
                deleted: c.is_deleted(),
                references: if c.id == raw.id {
                    parsed.references.clone()
                } else {
                    c.references()
                        .into_iter()
                        .map(|target| Reference {
                            path: String::new(),
                            target,
                        })
                        .collect()
                },
            })
            .collect();
        let analysis = analyze(&nodes);
        let mut errors = analysis.unknown;
        errors.extend(analysis.cycles);
        if !errors.is_empty() {
            return Err(Errors(errors));
        }
        Ok(CohortSet {
            inner: Arc::new(Inner {
                cohorts,
                order: analysis.order,
                limits: self.inner.limits.clone(),
            }),
        })
    }

    /// Cohorts whose active definition references `id` directly.
    pub fn direct_dependents(&self, id: CohortId) -> Vec<CohortId> {
        self.inner
            .cohorts
            .iter()
            .filter(|c| c.references().contains(&id))
            .map(|c| c.id)
            .collect()
    }

    /// Every cohort `id` references, directly or through others, sorted by id.
    pub fn dependencies(&self, id: CohortId) -> Vec<CohortId> {
        let mut seen = HashSet::new();
        let mut stack = self.get(id).map(Cohort::references).unwrap_or_default();
        while let Some(t) = stack.pop() {
            if seen.insert(t) {
                if let Some(c) = self.get(t) {
                    stack.extend(c.references());
                }
            }
        }
        let mut out: Vec<CohortId> = seen.into_iter().collect();
        out.sort_unstable();
        out
    }

    /// Every cohort that references `id`, directly or through others, sorted by id. A caller can
    /// refuse to delete a cohort while this is non-empty.
    pub fn dependents(&self, id: CohortId) -> Vec<CohortId> {
        let mut reverse: HashMap<CohortId, Vec<CohortId>> = HashMap::new();
        for c in &self.inner.cohorts {
            for t in c.references() {
                reverse.entry(t).or_default().push(c.id);
            }
        }
        let mut seen = HashSet::new();
        let mut stack = reverse.get(&id).cloned().unwrap_or_default();
        while let Some(t) = stack.pop() {
            if seen.insert(t) {
                stack.extend(reverse.get(&t).into_iter().flatten().copied());
            }
        }
        let mut out: Vec<CohortId> = seen.into_iter().collect();
        out.sort_unstable();
        out
    }

    /// True when the cohort, or any cohort it references, has a behavioral leaf (so it needs
    /// event data: the API hides such cohorts with `hide_behavioral_cohorts` and refuses them in
    /// feature flags).
    pub fn needs_events(&self, id: CohortId) -> bool {
        let own = self.get(id).is_some_and(Cohort::has_behavioral_leaf);
        own || self
            .dependencies(id)
            .into_iter()
            .any(|d| self.get(d).is_some_and(Cohort::has_behavioral_leaf))
    }

    /// Replaces a static cohort's member list (person ids or distinct ids).
    ///
    /// # Errors
    /// `invalid_input` when `id` is absent or not a static cohort.
    pub fn with_static_members(
        &self,
        id: CohortId,
        members: Vec<String>,
    ) -> Result<CohortSet, Error> {
        let Some(pos) = self.position(id) else {
            return Err(Error::missing(id, format!("cohort {id} is not in the set")));
        };
        if !self.inner.cohorts[pos].is_static() {
            return Err(Error::input(format!("cohort {id}"), "not a static cohort"));
        }
        let mut cohorts = self.inner.cohorts.clone();
        cohorts[pos].definition = Definition::Static(members);
        cohorts[pos].version = cohorts[pos].version.saturating_add(1);
        Ok(CohortSet {
            inner: Arc::new(Inner {
                cohorts,
                order: self.inner.order.clone(),
                limits: self.inner.limits.clone(),
            }),
        })
    }

    /// Adds members (person ids or distinct ids) to a static cohort; ids already listed are
    /// kept once.
    ///
    /// # Errors
    /// As [`CohortSet::with_static_members`].
    pub fn add_static_members(&self, id: CohortId, members: &[String]) -> Result<CohortSet, Error> {
        let mut list = self.static_members(id)?;
        for m in members {
            if !list.contains(m) {
                list.push(m.clone());
            }
        }
        self.with_static_members(id, list)
    }

    /// Removes members from a static cohort.
    ///
    /// # Errors
    /// As [`CohortSet::with_static_members`].
    pub fn remove_static_members(
        &self,
        id: CohortId,
        members: &[String],
    ) -> Result<CohortSet, Error> {
        let mut list = self.static_members(id)?;
        list.retain(|m| !members.contains(m));
        self.with_static_members(id, list)
    }

    fn static_members(&self, id: CohortId) -> Result<Vec<String>, Error> {
        match self.get(id).map(|c| &c.definition) {
            Some(Definition::Static(m)) => Ok(m.clone()),
            Some(_) => Err(Error::input(format!("cohort {id}"), "not a static cohort")),
            None => Err(Error::missing(id, format!("cohort {id} is not in the set"))),
        }
    }
}
