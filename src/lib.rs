//! # cohort-engine
//!
//! Decides who is in a cohort. Cohorts are PostHog cohort definitions — JSON filter trees of
//! nested `AND`/`OR` groups whose leaves are person-property conditions, behavioral conditions on
//! the person's event history, and references to other cohorts. The engine parses them, rejects
//! what is invalid with a precise error, rejects reference cycles, compiles the trees into a flat
//! program and evaluates it for one person at a time or for a whole dataset.
//!
//! ```text
//! JSON ──model──▶ cohort objects ──ast::parse──▶ typed AST ──graph──▶ acyclic CohortSet
//!      ──compile──▶ Program (interned, regexes built) ──eval──▶ bool / member lists
//! ```
//!
//! The semantics are those of `SEMANTICS.md` (PostHog's cohort calculation, with the choices it
//! documents); the CLI contract is `CLI.md`.
//!
//! ## Example: one person at a time
//!
//! ```
//! use cohort_engine::{Engine, Scratch, time};
//! use serde_json::json;
//!
//! let engine = Engine::from_json(r#"[
//!   {"id": 1, "name": "Engaged customers", "filters": {"properties": {"type": "AND", "values": [
//!     {"type": "person", "key": "plan", "operator": "exact", "value": ["pro", "enterprise"]},
//!     {"type": "behavioral", "key": "login", "event_type": "events",
//!      "value": "performed_event_multiple", "operator": "gte", "operator_value": 2,
//!      "time_value": 7, "time_interval": "day"}
//!   ]}}}
//! ]"#)?;
//!
//! let props = json!({"plan": "Pro", "email": "ada@example.com"});
//! let person = engine.person("p1", &["d1"], props.as_object().unwrap());
//! let mut history = engine.history();
//! let now = time::parse_absolute("2024-06-15T12:00:00Z").unwrap();
//! let day = 86_400_000_000;
//! engine.record(&mut history, "login", now - 2 * day, &Default::default());
//! engine.record(&mut history, "login", now - day, &Default::default());
//!
//! let mut scratch = Scratch::new();
//! assert!(engine.matches(1, &person, &history, now, &mut scratch).unwrap());
//! // Eight days later both logins have left the window.
//! assert!(!engine.matches(1, &person, &history, now + 8 * day, &mut scratch).unwrap());
//! # Ok::<(), cohort_engine::Errors>(())
//! ```
//!
//! ## Example: a whole dataset
//!
//! ```
//! use cohort_engine::{BatchOptions, CohortSet, Dataset, time};
//!
//! let set = CohortSet::from_json(r#"[
//!   {"id": 1, "filters": {"properties": {"type": "AND", "values": [
//!     {"type": "person", "key": "age", "operator": "gt", "value": 30}]}}},
//!   {"id": 2, "filters": {"properties": {"type": "AND", "values": [
//!     {"type": "cohort", "key": "id", "value": 1},
//!     {"type": "person", "key": "email", "operator": "icontains", "value": "@EXAMPLE.com"}]}}}
//! ]"#)?;
//! let data = Dataset::from_jsonl(
//!     "{\"id\": \"a\", \"properties\": {\"age\": 41, \"email\": \"a@example.com\"}}\n\
//!      {\"id\": \"b\", \"properties\": {\"age\": \"35\"}}\n\
//!      {\"id\": \"c\", \"properties\": {\"age\": 20}}\n",
//!     "",
//! ).unwrap();
//! let now = time::parse_absolute("2024-01-01").unwrap();
//! let members = data.evaluate(&set, now, &BatchOptions::default()).unwrap();
//! assert_eq!(members[&1], ["a", "b"]);
//! assert_eq!(members[&2], ["a"]);
//! # Ok::<(), cohort_engine::Errors>(())
//! ```
//!
//! ## Errors
//! Loading reports every problem at once as [`Errors`], each [`Error`] with a stable
//! [`ErrorKind`] code (`invalid_input`, `invalid_filter`, `unknown_cohort`, `cycle`), the cohort
//! and the JSON path of the offending field, e.g.
//! `invalid_filter: cohort 4: filters.properties.values[1].operator: unknown operator "startswith" …`.
//! Cycles are named: `cycle: cohort 3 → 7 → 3`. Evaluation itself never fails.
//!
//! ## Input safety
//! [`Limits`] bound group nesting depth, nodes per cohort, cohorts per set, regex pattern and
//! compiled size, string and list lengths, and window sizes; each exceeded limit is an
//! `invalid_filter` error naming it. Reference chains have no depth limit: all graph code is
//! iterative.
//!
//! ## Beyond membership
//! [`Engine::explain`] returns the filter tree with every node's result and evidence;
//! [`Engine::horizon`] the instant until which an answer stays valid with no new data;
//! [`Tracker`] keeps memberships up to date over a stream of events and property changes;
//! [`sql::cohort_sql`] compiles a cohort to ClickHouse SQL with the same semantics;
//! `store::CohortStore` (cargo feature `store`) implements the cohort API's rules, and the
//! `server` feature serves them over HTTP.
//!
//! ## Embedding in a service
//! [`LiveEngine`] holds the current [`Engine`] behind one atomic pointer: readers take a
//! snapshot without waiting, while an update compiles a whole new engine beside it and publishes
//! it with one swap. Property keys and event names live in one process-wide, grow-only table, so
//! a [`Person`] or [`History`] built before an update is answered correctly after it.
//!
//! ```
//! use std::sync::Arc;
//! use cohort_engine::{Engine, LiveEngine, Scratch, Timestamp};
//! use serde_json::json;
//!
//! let live = Arc::new(LiveEngine::new(Engine::from_json(r#"[{"id": 1, "filters": {"properties":
//!     {"type": "AND", "values": [{"type": "person", "key": "plan", "operator": "exact",
//!      "value": "pro"}]}}}]"#)?));
//! let now: Timestamp = "2024-06-15T12:00:00Z".parse().unwrap();
//!
//! // Worker threads: a snapshot each, a Scratch each; persons kept across updates.
//! let workers: Vec<_> = (0..2)
//!     .map(|w| {
//!         let live = Arc::clone(&live);
//!         std::thread::spawn(move || {
//!             let engine = live.snapshot();
//!             let person = engine.person(&format!("p{w}"), &[], json!({"plan": "pro"}).as_object().unwrap());
//!             let mut scratch = Scratch::new();
//!             engine.matches(1, &person, &engine.history(), now, &mut scratch).unwrap()
//!         })
//!     })
//!     .collect();
//! // Meanwhile, a live update (readers never wait for it).
//! live.upsert(&json!({"id": 2, "filters": {"properties": {"type": "AND", "values": [
//!     {"type": "behavioral", "key": "signup", "event_type": "events",
//!      "value": "performed_event", "time_value": 7, "time_interval": "day"}]}}}))?;
//! for w in workers {
//!     assert!(w.join().unwrap());
//! }
//! # Ok::<(), cohort_engine::Errors>(())
//! ```
//!
//! ## Crate features
//! - `cli` (default): the `cohort-engine` binary's command line (clap).
//! - `store`: `store::CohortStore`, the cohort API's REST rules over a [`CohortSet`].
//! - `server`: the HTTP server of the cohort API (`cohort-engine serve`), with SQLite; implies
//!   `store`.
//! - `chrono`: conversions between [`Timestamp`] and `chrono::DateTime<Utc>`.
//!
//! ## Stability
//! The API is what the crate root re-exports, plus [`sql`] and [`time::parse_absolute`]. The
//! `internal` module is hidden and exists for the crate's own tests, benchmarks and fuzz target:
//! it may change in any release. Enums and option structs are `#[non_exhaustive]`: new operators,
//! error kinds and options are not breaking changes.
//!
//! ## Performance
//! Keys and event names are interned at compile/load time; regexes, needles, dates and versions
//! are prepared once; time windows are bound to `now` once per evaluation instant. Each person's
//! events are ordered by (event name, time), so a behavioral leaf reads one run of events: a
//! window is a binary search and, without event filters, a count is an index difference. In batch,
//! person properties are dictionary-encoded columns and each cohort is a bitset computed once.
//! Evaluating a person does not allocate once its [`Scratch`] has warmed up.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod ast;
mod compile;
mod data;
mod engine;
mod error;
mod eval;
mod export;
mod generate;
mod graph;
mod intern;
mod limits;
mod model;
mod semver;
#[cfg(feature = "server")]
pub mod server;
mod set;
mod short;
pub mod sql;
#[cfg(feature = "store")]
pub mod store;
pub mod time;
mod timestamp;
mod tracker;
mod value;

/// A cohort id, as the API uses it (0 ≤ id ≤ 2^63−1 in files).
pub type CohortId = i64;

pub use ast::{Cohort, Reads};
pub use compile::Program;
pub use data::{
    CsvMembers, Dataset, History, LoadOptions, LoadStats, Person, Progress, Projection,
};
pub use engine::{Engine, LiveEngine};
pub use error::{Error, ErrorKind, Errors};
pub use eval::batch::{BatchOptions, MemberIds, Members};
pub use eval::bitset::Bitset;
pub use eval::explain::{ExplainNode, Explanation};
pub use eval::Scratch;
pub use limits::Limits;
pub use set::CohortSet;
pub use timestamp::{ParseTimestampError, Timestamp};
pub use tracker::{Change, Tracker, Transition, Update};

/// Internals, exposed for the crate's own tests, benchmarks, examples and fuzz target only. Not
/// part of the stable API: anything here may change in any release.
#[doc(hidden)]
pub mod internal {
    /// The typed filter tree.
    pub mod ast {
        pub use crate::ast::*;
    }
    /// The benchmark data generator.
    pub mod generate {
        pub use crate::generate::*;
    }
    /// The generated data rewritten as PostHog's batch exports.
    pub mod export {
        pub use crate::export::*;
    }
    /// Versions (semver) as the operators compare them.
    pub mod semver {
        pub use crate::semver::*;
    }
    /// Names to dense ids.
    pub mod intern {
        pub use crate::intern::*;
    }
    pub use crate::eval::batch::fnv1a64;
    pub use crate::tracker::{EventLines, ScannedEvents};
}
