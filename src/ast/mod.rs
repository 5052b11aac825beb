//! The typed, validated filter tree: stage two of the pipeline (`model` → **`ast`** → `graph` →
//! `compile` → `eval`).
//!
//! Every value here has already been checked against SEMANTICS.md: operators are enums, filter
//! values have the type their operator needs, dates and versions are parsed, regexes are known to
//! compile within the limits. Lowering from JSON lives in [`parse`]; it reports every problem with
//! its JSON path instead of stopping at the first.

pub mod parse;
mod print;

use std::sync::Arc;

use crate::semver::Version;
use crate::time::{DateSpec, Unit};
use crate::CohortId;

/// A group's boolean connective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupOp {
    /// All children true.
    And,
    /// At least one child true.
    Or,
}

/// A node of a filter tree.
#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    /// An AND/OR group.
    Group(Group),
    /// A condition.
    Leaf(Leaf),
}

/// An AND/OR group with at least one child.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// The connective.
    pub op: GroupOp,
    /// The children, in document order.
    pub children: Vec<Node>,
    /// JSON path of the group, from the cohort object.
    pub path: String,
}

/// A leaf condition.
#[derive(Clone, Debug, PartialEq)]
pub enum Leaf {
    /// A condition on a person property.
    Person(PropertyFilter),
    /// A condition on the person's event history.
    Behavioral(BehavioralLeaf),
    /// Membership in another cohort.
    Cohort(CohortLeaf),
}

impl Leaf {
    /// The leaf's `negation` flag.
    pub fn negated(&self) -> bool {
        match self {
            Leaf::Person(p) => p.negation,
            Leaf::Behavioral(b) => b.negation,
            Leaf::Cohort(c) => c.negation,
        }
    }
}

/// Person-property operators (SEMANTICS §B.2), by their wire names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `exact`
    Exact,
    /// `is_not`
    IsNot,
    /// `in`
    In,
    /// `not_in`
    NotIn,
    /// `icontains`
    IContains,
    /// `not_icontains`
    NotIContains,
    /// `icontains_multi`
    IContainsMulti,
    /// `not_icontains_multi`
    NotIContainsMulti,
    /// `regex`
    Regex,
    /// `not_regex`
    NotRegex,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
    /// `min` (same as `gte`)
    Min,
    /// `max` (same as `lte`)
    Max,
    /// `between`
    Between,
    /// `not_between`
    NotBetween,
    /// `is_set`
    IsSet,
    /// `is_not_set`
    IsNotSet,
    /// `is_date_before`
    IsDateBefore,
    /// `is_date_after`
    IsDateAfter,
    /// `is_date_exact`
    IsDateExact,
    /// `semver_eq`
    SemverEq,
    /// `semver_neq`
    SemverNeq,
    /// `semver_gt`
    SemverGt,
    /// `semver_gte`
    SemverGte,
    /// `semver_lt`
    SemverLt,
    /// `semver_lte`
    SemverLte,
    /// `semver_tilde`
    SemverTilde,
    /// `semver_caret`
    SemverCaret,
    /// `semver_wildcard`
    SemverWildcard,
}

impl Operator {
    /// Every operator, in the order of SEMANTICS §B.2.
    pub const ALL: [Operator; 32] = [
        Operator::Exact,
        Operator::IsNot,
        Operator::In,
        Operator::NotIn,
        Operator::IContains,
        Operator::NotIContains,
        Operator::IContainsMulti,
        Operator::NotIContainsMulti,
        Operator::Regex,
        Operator::NotRegex,
        Operator::Gt,
        Operator::Gte,
        Operator::Lt,
        Operator::Lte,
        Operator::Min,
        Operator::Max,
        Operator::Between,
        Operator::NotBetween,
        Operator::IsSet,
        Operator::IsNotSet,
        Operator::IsDateBefore,
        Operator::IsDateAfter,
        Operator::IsDateExact,
        Operator::SemverEq,
        Operator::SemverNeq,
        Operator::SemverGt,
        Operator::SemverGte,
        Operator::SemverLt,
        Operator::SemverLte,
        Operator::SemverTilde,
        Operator::SemverCaret,
        Operator::SemverWildcard,
    ];

    /// The PostHog wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Exact => "exact",
            Operator::IsNot => "is_not",
            Operator::In => "in",
            Operator::NotIn => "not_in",
            Operator::IContains => "icontains",
            Operator::NotIContains => "not_icontains",
            Operator::IContainsMulti => "icontains_multi",
            Operator::NotIContainsMulti => "not_icontains_multi",
            Operator::Regex => "regex",
            Operator::NotRegex => "not_regex",
            Operator::Gt => "gt",
            Operator::Gte => "gte",
            Operator::Lt => "lt",
            Operator::Lte => "lte",
            Operator::Min => "min",
            Operator::Max => "max",
            Operator::Between => "between",
            Operator::NotBetween => "not_between",
            Operator::IsSet => "is_set",
            Operator::IsNotSet => "is_not_set",
            Operator::IsDateBefore => "is_date_before",
            Operator::IsDateAfter => "is_date_after",
            Operator::IsDateExact => "is_date_exact",
            Operator::SemverEq => "semver_eq",
            Operator::SemverNeq => "semver_neq",
            Operator::SemverGt => "semver_gt",
            Operator::SemverGte => "semver_gte",
            Operator::SemverLt => "semver_lt",
            Operator::SemverLte => "semver_lte",
            Operator::SemverTilde => "semver_tilde",
            Operator::SemverCaret => "semver_caret",
            Operator::SemverWildcard => "semver_wildcard",
        }
    }

    /// Parses a wire name.
    pub fn from_wire(s: &str) -> Option<Operator> {
        Operator::ALL.iter().copied().find(|op| op.as_str() == s)
    }

    /// The leaf result when the property is missing (SEMANTICS §B.2 "missing →").
    pub fn missing_result(self) -> bool {
        matches!(
            self,
            Operator::IsNot
                | Operator::NotIn
                | Operator::NotIContains
                | Operator::NotIContainsMulti
                | Operator::NotRegex
                | Operator::IsNotSet
        )
    }
}

/// A scalar element of a filter value.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    /// A string.
    Str(String),
    /// A number.
    Num(serde_json::Number),
    /// A boolean.
    Bool(bool),
}

impl Scalar {
    /// The string form (§B.1).
    pub fn string_form(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Num(n) => n.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }

    /// The JSON value.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Str(s) => serde_json::Value::String(s.clone()),
            Scalar::Num(n) => serde_json::Value::Number(n.clone()),
            Scalar::Bool(b) => serde_json::Value::Bool(*b),
        }
    }
}

/// The boolean mode of `exact` (§B.3): a one-element value that is a JSON boolean or a string
/// equal case-insensitively to "true"/"false" gives its target; anything else is list or scalar
/// mode (`None`).
pub fn boolean_target(items: &[Scalar]) -> Option<bool> {
    match items {
        [Scalar::Bool(b)] => Some(*b),
        [Scalar::Str(s)] => match crate::value::lower(s).as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A validated filter value, typed for its operator.
#[derive(Clone, Debug, PartialEq)]
pub enum FilterValue {
    /// `is_set` / `is_not_set`: the value is ignored.
    None,
    /// Equality, substring and regex operators: the elements (a scalar is one element);
    /// `list` records whether the JSON was a list.
    Scalars {
        /// The elements.
        items: Vec<Scalar>,
        /// Whether the wire value was a JSON list.
        list: bool,
        /// For `regex` / `not_regex`: each element's pattern, compiled once while validating
        /// (empty for other operators).
        regexes: Vec<CompiledRegex>,
    },
    /// `gt`/`gte`/`lt`/`lte`/`min`/`max`: the number, and the wire value for printing.
    Number(f64, Scalar),
    /// `between` / `not_between`: `[min, max]` with their wire values.
    Range(f64, f64, Scalar, Scalar),
    /// `is_date_*`: the parsed date and its text.
    Date(DateSpec, String),
    /// `semver_eq` … `semver_lte`: the version and its text.
    Version(Version, String),
    /// `semver_tilde`/`caret`/`wildcard`: `[lo, hi)` and the pattern text.
    VersionRange(Version, Version, String),
}

/// A regex built once, when its filter is validated, and shared by every program compiled from
/// it. Equal when the patterns are.
#[derive(Clone, Debug)]
pub struct CompiledRegex(pub regex::Regex);

impl PartialEq for CompiledRegex {
    fn eq(&self, other: &CompiledRegex) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A condition on one property (a person leaf, or an entry of a behavioral leaf's
/// `event_filters`).
#[derive(Clone, Debug, PartialEq)]
pub struct PropertyFilter {
    /// The property name (exact, case-sensitive).
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The filter value.
    pub value: FilterValue,
    /// `negation`: invert the result, the missing-property result included.
    pub negation: bool,
    /// JSON path of the leaf.
    pub path: String,
}

/// A count comparison of `performed_event_multiple` / `performed_event_regularly`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CountOp {
    /// `eq`, `exact` or missing: equal.
    Eq,
    /// `gt`
    Gt,
    /// `gte`
    Gte,
    /// `lt`
    Lt,
    /// `lte`
    Lte,
}

impl CountOp {
    /// Applies the comparison `count OP value`.
    #[inline]
    pub fn test(self, count: u64, value: u64) -> bool {
        match self {
            CountOp::Eq => count == value,
            CountOp::Gt => count > value,
            CountOp::Gte => count >= value,
            CountOp::Lt => count < value,
            CountOp::Lte => count <= value,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            CountOp::Eq => "eq",
            CountOp::Gt => "gt",
            CountOp::Gte => "gte",
            CountOp::Lt => "lt",
            CountOp::Lte => "lte",
        }
    }
}

/// A time span: `n` units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// How many units (≥ 1).
    pub n: u64,
    /// The unit.
    pub unit: Unit,
}

/// The lower bound of a `performed_event` / `performed_event_multiple` window.
#[derive(Clone, Debug, PartialEq)]
pub enum Since {
    /// `time_value` + `time_interval` back from now.
    Back(Span),
    /// `explicit_datetime` (relative or absolute), with its text.
    Explicit(DateSpec, String),
}

/// The seven behavioral condition types (SEMANTICS §C.3).
#[derive(Clone, Debug, PartialEq)]
pub enum Behavior {
    /// `performed_event`: at least one matching event in `(since, now)`.
    PerformedEvent {
        /// Window start.
        since: Since,
    },
    /// `performed_event_multiple`: count in `(since, now)` is ≥ 1 and `count OP value`.
    PerformedEventMultiple {
        /// Window start.
        since: Since,
        /// Comparison.
        op: CountOp,
        /// `operator_value`.
        value: u64,
    },
    /// `performed_event_first_time`: the first matching event ever lies in `[now - time, now)`.
    PerformedEventFirstTime {
        /// The window.
        time: Span,
    },
    /// `stopped_performing_event`.
    StoppedPerformingEvent {
        /// The outer window (`time_value`).
        time: Span,
        /// The recent window (`seq_time_value`).
        seq: Span,
    },
    /// `restarted_performing_event`.
    RestartedPerformingEvent {
        /// The outer window.
        time: Span,
        /// The recent window.
        seq: Span,
    },
    /// `performed_event_sequence`: the event, then `seq_event` within `seq`.
    PerformedEventSequence {
        /// The window both steps lie in.
        time: Span,
        /// The second step's event name.
        seq_event: String,
        /// How long after the first step the second may come.
        seq: Span,
    },
    /// `performed_event_regularly`.
    PerformedEventRegularly {
        /// Period length.
        time: Span,
        /// Per-period comparison.
        op: CountOp,
        /// `operator_value`.
        value: u64,
        /// Periods that must be satisfied.
        min_periods: u64,
        /// Periods looked at.
        total_periods: u64,
    },
}

impl Behavior {
    /// The wire name of the type.
    pub fn as_str(&self) -> &'static str {
        match self {
            Behavior::PerformedEvent { .. } => "performed_event",
            Behavior::PerformedEventMultiple { .. } => "performed_event_multiple",
            Behavior::PerformedEventFirstTime { .. } => "performed_event_first_time",
            Behavior::StoppedPerformingEvent { .. } => "stopped_performing_event",
            Behavior::RestartedPerformingEvent { .. } => "restarted_performing_event",
            Behavior::PerformedEventSequence { .. } => "performed_event_sequence",
            Behavior::PerformedEventRegularly { .. } => "performed_event_regularly",
        }
    }
}

/// A condition on the person's events.
#[derive(Clone, Debug, PartialEq)]
pub struct BehavioralLeaf {
    /// The event name (`key`, string form).
    pub event: String,
    /// The condition type and its parameters.
    pub behavior: Behavior,
    /// Conditions every counted event's properties must meet (AND).
    pub event_filters: Vec<PropertyFilter>,
    /// `negation`.
    pub negation: bool,
    /// JSON path of the leaf.
    pub path: String,
}

/// Membership in another cohort.
#[derive(Clone, Debug, PartialEq)]
pub struct CohortLeaf {
    /// The referenced cohort.
    pub target: CohortId,
    /// `operator: not_in`: inverted membership.
    pub not_in: bool,
    /// `negation`, applied after `not_in`.
    pub negation: bool,
    /// JSON path of the leaf.
    pub path: String,
}

/// What defines a cohort's members.
#[derive(Clone, Debug, PartialEq)]
pub enum Definition {
    /// A filter tree (from `filters` or converted legacy `groups`).
    Dynamic(Group),
    /// A stored member list of person ids or distinct ids.
    Static(Vec<String>),
    /// A deleted cohort: no members, not validated.
    Deleted,
}

/// A validated cohort of a [`crate::CohortSet`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Cohort {
    /// The cohort id.
    pub id: CohortId,
    /// The name, if any.
    pub name: Option<String>,
    /// The definition.
    pub(crate) definition: Definition,
    /// How many times the definition was replaced through the library (starts at 1).
    pub version: u64,
    /// What the definition reads, computed once when it is parsed.
    pub(crate) reads: Arc<Reads>,
}

/// What a cohort's own definition reads (not counting the cohorts it references): computed once
/// per cohort, and used by the engine (which names to intern), the tracker (which changes can
/// affect it) and the set (which cohorts need events).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// Keys of person-property leaves, in document order, without duplicates.
    pub person_keys: Vec<String>,
    /// Keys of behavioral leaves' event filters, without duplicates.
    pub event_keys: Vec<String>,
    /// Event names of behavioral leaves (and sequences' second steps), without duplicates.
    pub events: Vec<String>,
    /// True when membership can change with time alone (a behavioral leaf or a relative date).
    pub timed: bool,
}

impl Reads {
    /// Walks a definition once.
    pub(crate) fn of(definition: &Definition) -> Reads {
        fn add(v: &mut Vec<String>, s: &str) {
            if !v.iter().any(|x| x == s) {
                v.push(s.to_string());
            }
        }
        let mut r = Reads::default();
        if let Definition::Dynamic(root) = definition {
            root.visit_leaves(&mut |leaf| match leaf {
                Leaf::Person(p) => {
                    add(&mut r.person_keys, &p.key);
                    if matches!(
                        p.value,
                        FilterValue::Date(crate::time::DateSpec::Relative { .. }, _)
                    ) {
                        r.timed = true;
                    }
                }
                Leaf::Behavioral(b) => {
                    r.timed = true;
                    add(&mut r.events, &b.event);
                    if let Behavior::PerformedEventSequence { seq_event, .. } = &b.behavior {
                        add(&mut r.events, seq_event);
                    }
                    for f in &b.event_filters {
                        add(&mut r.event_keys, &f.key);
                    }
                }
                Leaf::Cohort(_) => {}
            });
        }
        r
    }
}

impl Cohort {
    /// True when the cohort is soft-deleted.
    pub fn is_deleted(&self) -> bool {
        matches!(self.definition, Definition::Deleted)
    }

    /// True when the cohort is static.
    pub fn is_static(&self) -> bool {
        matches!(self.definition, Definition::Static(_))
    }

    /// The cohorts this one references directly, with duplicates, in document order.
    pub fn references(&self) -> Vec<CohortId> {
        let mut out = Vec::new();
        if let Definition::Dynamic(root) = &self.definition {
            root.visit_leaves(&mut |leaf| {
                if let Leaf::Cohort(c) = leaf {
                    out.push(c.target);
                }
            });
        }
        out
    }

    /// True when the definition has a behavioral leaf (not counting referenced cohorts).
    pub fn has_behavioral_leaf(&self) -> bool {
        !self.reads.events.is_empty()
    }

    /// What the definition reads (not counting referenced cohorts).
    pub fn reads(&self) -> &Reads {
        &self.reads
    }

    /// The typed definition (internal AST; not part of the stable API).
    #[doc(hidden)]
    pub fn definition(&self) -> &Definition {
        &self.definition
    }
}

impl Group {
    /// Calls `f` on every leaf, depth-first in document order. Depth is bounded by the parser's
    /// nesting limit, so recursion is safe.
    pub fn visit_leaves(&self, f: &mut dyn FnMut(&Leaf)) {
        for child in &self.children {
            match child {
                Node::Group(g) => g.visit_leaves(f),
                Node::Leaf(l) => f(l),
            }
        }
    }
}
