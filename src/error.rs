//! Errors of every stage: one [`Error`] type with a stable [`ErrorKind`], the cohort it concerns and
//! the JSON path of the offending field.
//!
//! The `Display` form is the CLI's error line without the `error: ` prefix
//! (`invalid_filter: cohort 4: filters.properties.values[1].operator: unknown operator "x"`), so a
//! service can log it as is and tests can assert on it.

use std::fmt;

use crate::CohortId;

/// What went wrong, as a stable machine-readable class (`CLI.md` §1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Bad command-line flags or flag values.
    Usage,
    /// A cohorts or data file that cannot be read or does not have the documented shape.
    InvalidInput,
    /// A malformed or unsupported filter, or a limit exceeded.
    InvalidFilter,
    /// A cohort reference to an id absent from the set.
    UnknownCohort,
    /// Cohorts that reference each other in a loop.
    Cycle,
    /// A change refused because other cohorts depend on the cohort (library updates only).
    InUse,
}

impl ErrorKind {
    /// The stable code printed by the CLI: `usage`, `invalid_input`, `invalid_filter`,
    /// `unknown_cohort` or `cycle`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::InvalidFilter => "invalid_filter",
            ErrorKind::UnknownCohort => "unknown_cohort",
            ErrorKind::Cycle => "cycle",
            ErrorKind::InUse => "in_use",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One problem found while loading, validating or compiling cohorts or data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    cohort: Option<CohortId>,
    path: String,
    message: String,
    /// `unknown_cohort`: the id that is not in the set.
    missing: Option<CohortId>,
    /// `cycle`: the loop's cohort ids, from its smallest id back to it.
    cycle: Vec<CohortId>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.kind)?;
        if let Some(id) = self.cohort {
            write!(f, "cohort {id}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

impl Error {
    /// A new error of `kind` with a message and no cohort or path.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            cohort: None,
            path: String::new(),
            message: message.into(),
            missing: None,
            cycle: Vec::new(),
        }
    }

    /// An `unknown_cohort` error about `id`, which is not in the set (see
    /// [`Error::unknown_cohort`]).
    pub(crate) fn missing(id: CohortId, message: impl Into<String>) -> Error {
        let mut e = Error::new(ErrorKind::UnknownCohort, message);
        e.missing = Some(id);
        e
    }

    /// A `cycle` error naming the loop `ids` (first id repeated at the end).
    pub(crate) fn cycle_of(ids: Vec<CohortId>) -> Error {
        let names: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let mut e = Error::new(ErrorKind::Cycle, format!("cohort {}", names.join(" → ")));
        e.cohort = None;
        e.cycle = ids;
        e
    }

    /// An `invalid_filter` error at `path` of `cohort`.
    pub fn filter(cohort: CohortId, path: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidFilter, message)
            .with_cohort(cohort)
            .with_path(path)
    }

    /// An `invalid_input` error; `location` is `file:line` or a file name and element.
    pub fn input(location: impl Into<String>, message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidInput, message).with_path(location)
    }

    /// The same error attributed to `cohort`.
    pub fn with_cohort(mut self, cohort: CohortId) -> Error {
        self.cohort = Some(cohort);
        self
    }

    /// The same error at `path`.
    pub fn with_path(mut self, path: impl Into<String>) -> Error {
        self.path = path.into();
        self
    }

    /// The class of the error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The stable code of the kind (`invalid_filter`, …).
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The cohort the error concerns, if any.
    pub fn cohort(&self) -> Option<CohortId> {
        self.cohort
    }

    /// The JSON path (`filters.properties.values[0].operator`) or `file:line`; may be empty.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong, without kind, cohort or path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For `unknown_cohort`: the id that is not in the set (or is deleted) — the referenced id
    /// for a reference, the asked-for id for a lookup. [`Error::cohort`] is the referencing
    /// cohort, when there is one.
    pub fn unknown_cohort(&self) -> Option<CohortId> {
        self.missing
    }

    /// For `cycle`: the cohorts of the loop, from its smallest id back to that id
    /// (`[3, 7, 12, 3]`); empty for other kinds.
    pub fn cycle(&self) -> &[CohortId] {
        &self.cycle
    }
}

impl serde::Serialize for Error {
    /// `{"kind": "unknown_cohort", "cohort": 4, "path": "…", "message": "…"}`, with
    /// `"unknown_cohort": ID` or `"cycle": [IDS]` when they apply; absent fields are omitted.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", self.code())?;
        if let Some(c) = self.cohort {
            m.serialize_entry("cohort", &c)?;
        }
        if !self.path.is_empty() {
            m.serialize_entry("path", &self.path)?;
        }
        m.serialize_entry("message", &self.message)?;
        if let Some(id) = self.missing {
            m.serialize_entry("unknown_cohort", &id)?;
        }
        if !self.cycle.is_empty() {
            m.serialize_entry("cycle", &self.cycle)?;
        }
        m.end()
    }
}

impl serde::Serialize for Errors {
    /// A list of [`Error`]s.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Every error found in one load, in report order (`CLI.md` §1).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    /// The errors, in report order.
    pub fn iter(&self) -> std::slice::Iter<'_, Error> {
        self.0.iter()
    }

    /// The number of errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never for an `Err`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<Error> for Errors {
    fn from(e: Error) -> Errors {
        Errors(vec![e])
    }
}

impl<'a> IntoIterator for &'a Errors {
    type Item = &'a Error;
    type IntoIter = std::slice::Iter<'a, Error>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// A JSON path under construction, such as `filters.properties.values[2].operator`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JsonPath(String);

impl JsonPath {
    pub(crate) fn root(s: &str) -> JsonPath {
        JsonPath(s.to_string())
    }
    pub(crate) fn field(&self, name: &str) -> JsonPath {
        if self.0.is_empty() {
            JsonPath(name.to_string())
        } else {
            JsonPath(format!("{}.{}", self.0, name))
        }
    }
    pub(crate) fn index(&self, i: usize) -> JsonPath {
        JsonPath(format!("{}[{}]", self.0, i))
    }
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
