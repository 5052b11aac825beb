//! Lowering of one cohort object (`serde_json::Value`) into a validated [`Cohort`].
//!
//! Hand-written rather than derived so that every error carries the JSON path of the offending
//! field (serde's derive errors only know line and column) and so that one pass reports every
//! problem of a cohort, in document order. Recursion is bounded by [`Limits::max_depth`], checked
//! before descending.

use serde_json::{Map, Value};

use super::*;
use crate::error::{Error, JsonPath};
use crate::limits::Limits;
use crate::semver;
use crate::time::{parse_date_spec, Unit};

/// A reference from a cohort leaf to another cohort, found while parsing (even in a cohort whose
/// definition has other errors, so one run reports everything).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// JSON path of the leaf's `value`.
    pub path: String,
    /// The referenced id.
    pub target: CohortId,
}

/// The outcome of parsing one cohort: the cohort when valid, its errors, and its references.
#[derive(Debug)]
pub struct Parsed {
    /// The validated cohort, when there were no errors.
    pub cohort: Option<Cohort>,
    /// `invalid_filter` errors in document order.
    pub errors: Vec<Error>,
    /// References found in the active definition.
    pub references: Vec<Reference>,
}

/// Parses and validates one cohort object with id `id`.
pub fn parse_cohort(obj: &Map<String, Value>, id: CohortId, limits: &Limits) -> Parsed {
    let mut p = Parser {
        id,
        limits,
        errors: Vec::new(),
        references: Vec::new(),
        nodes: 0,
        too_many_nodes: false,
    };
    let definition = p.cohort(obj);
    let name = obj.get("name").and_then(Value::as_str).map(str::to_string);
    let cohort = match definition {
        Some(definition) if p.errors.is_empty() => Some(Cohort {
            id,
            name,
            reads: std::sync::Arc::new(super::Reads::of(&definition)),
            definition,
            version: 1,
        }),
        _ => None,
    };
    Parsed {
        cohort,
        errors: p.errors,
        references: p.references,
    }
}

const COHORT_LEAF_TYPES: [&str; 4] = [
    "cohort",
    "precalculated-cohort",
    "static-cohort",
    "dynamic-cohort",
];

struct Parser<'a> {
    id: CohortId,
    limits: &'a Limits,
    errors: Vec<Error>,
    references: Vec<Reference>,
    nodes: usize,
    too_many_nodes: bool,
}

/// A short rendering of a JSON value for messages (long values are cut).
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        let mut end = 77;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    } else {
        s
    }
}

impl Parser<'_> {
    fn err(&mut self, path: &JsonPath, message: impl Into<String>) {
        self.errors
            .push(Error::filter(self.id, path.as_str(), message.into()));
    }

    /// Reads a boolean flag: JSON bool or exactly "true"/"false"; absent or null = false.
    fn flag(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &JsonPath,
        strings: bool,
    ) -> bool {
        match obj.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if strings && s == "true" => true,
            Some(Value::String(s)) if strings && s == "false" => false,
            Some(other) => {
                let expected = if strings {
                    "true, false, \"true\" or \"false\""
                } else {
                    "true or false"
                };
                self.err(
                    &path.field(key),
                    format!("expected {expected}, got {}", show(other)),
                );
                false
            }
        }
    }

    fn check_len(&mut self, s: &str, path: &JsonPath) -> bool {
        if s.len() > self.limits.max_string_len {
            self.err(
                path,
                format!(
                    "string of {} bytes exceeds the limit of {} bytes (max_string_len)",
                    s.len(),
                    self.limits.max_string_len
                ),
            );
            false
        } else {
            true
        }
    }

    fn count_node(&mut self) -> bool {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            if !self.too_many_nodes {
                self.too_many_nodes = true;
                let msg = format!(
                    "the filter tree has more than {} nodes (max_nodes)",
                    self.limits.max_nodes
                );
                self.errors.push(Error::filter(self.id, "", msg));
            }
            return false;
        }
        true
    }

    fn cohort(&mut self, obj: &Map<String, Value>) -> Option<Definition> {
        let root = JsonPath::default();
        let deleted = self.flag(obj, "deleted", &root, false);
        let is_static = self.flag(obj, "is_static", &root, false);
        if deleted {
            return Some(Definition::Deleted);
        }
        if is_static {
            return self.static_members(obj).map(Definition::Static);
        }
        let filters = obj.get("filters");
        match filters {
            Some(Value::Object(f)) if !f.is_empty() => {
                let path = JsonPath::root("filters").field("properties");
                return match f.get("properties") {
                    Some(Value::Object(g)) if g.is_empty() => {
                        self.err(&path, "the root group has no condition");
                        None
                    }
                    None | Some(Value::Null) => {
                        self.err(
                            &path,
                            "missing: filters must contain a \"properties\" group with type and values",
                        );
                        None
                    }
                    Some(Value::Object(g)) => {
                        if !matches!(g.get("type"), Some(Value::String(t)) if t == "AND" || t == "OR")
                            && !g.contains_key("values")
                        {
                            self.err(&path, "expected a group {\"type\": \"AND\"|\"OR\", \"values\": [...]} at the root");
                            return None;
                        }
                        let group = self.group(g, &path, 1)?;
                        self.check_negation(&group);
                        Some(Definition::Dynamic(group))
                    }
                    Some(other) => {
                        self.err(
                            &path,
                            format!("expected a group object, got {}", show(other)),
                        );
                        None
                    }
                };
            }
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => {
                self.err(
                    &JsonPath::root("filters"),
                    format!("expected an object, got {}", show(other)),
                );
                return None;
            }
        }
        match obj.get("groups") {
            Some(Value::Array(groups)) if !groups.is_empty() => {
                let group = self.legacy_groups(groups)?;
                self.check_negation(&group);
                Some(Definition::Dynamic(group))
            }
            None | Some(Value::Null) | Some(Value::Array(_)) => {
                self.err(
                    &JsonPath::root("filters"),
                    "the cohort has no condition: neither filters.properties nor groups is set",
                );
                None
            }
            Some(other) => {
                self.err(
                    &JsonPath::root("groups"),
                    format!("expected a list, got {}", show(other)),
                );
                None
            }
        }
    }

    fn static_members(&mut self, obj: &Map<String, Value>) -> Option<Vec<String>> {
        let mut members = Vec::new();
        let mut ok = true;
        for key in ["static_person_ids", "_create_static_person_ids"] {
            let path = JsonPath::root(key);
            match obj.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        match item {
                            Value::String(s) => members.push(s.clone()),
                            Value::Number(n) if n.is_i64() || n.is_u64() => {
                                members.push(n.to_string())
                            }
                            other => {
                                ok = false;
                                self.err(
                                    &path.index(i),
                                    format!(
                                        "expected a person id (string or integer), got {}",
                                        show(other)
                                    ),
                                );
                            }
                        }
                    }
                }
                Some(other) => {
                    ok = false;
                    self.err(
                        &path,
                        format!("expected a list of person ids, got {}", show(other)),
                    );
                }
            }
        }
        ok.then_some(members)
    }

    /// `neg(node)` of SEMANTICS §D.2; a negated root is refused.
    fn check_negation(&mut self, root: &Group) {
        fn neg(node: &Node) -> bool {
            match node {
                Node::Leaf(l) => l.negated(),
                Node::Group(g) => group_neg(g),
            }
        }
        fn group_neg(g: &Group) -> bool {
            let negs = g.children.iter().filter(|c| neg(c)).count();
            negs == g.children.len() || (g.op == GroupOp::Or && negs > 0)
        }
        if group_neg(root) {
            let path = root.path.clone();
            self.errors.push(Error::filter(
                self.id,
                path,
                "top level condition cannot be negated: negations must be paired with a positive condition",
            ));
        }
    }

    fn group(&mut self, obj: &Map<String, Value>, path: &JsonPath, depth: usize) -> Option<Group> {
        if depth > self.limits.max_depth {
            self.err(
                path,
                format!(
                    "group nesting exceeds the limit of {} levels (max_depth)",
                    self.limits.max_depth
                ),
            );
            return None;
        }
        if !self.count_node() {
            return None;
        }
        let op = match obj.get("type") {
            Some(Value::String(t)) if t == "AND" => Some(GroupOp::And),
            Some(Value::String(t)) if t == "OR" => Some(GroupOp::Or),
            other => {
                let got = other.map_or("nothing".to_string(), show);
                self.err(
                    &path.field("type"),
                    format!("group type must be \"AND\" or \"OR\", got {got}"),
                );
                None
            }
        };
        let values_path = path.field("values");
        let children = match obj.get("values") {
            Some(Value::Array(values)) => {
                if values.is_empty() {
                    self.err(&values_path, "the group has no condition");
                    None
                } else {
                    let mut children = Vec::with_capacity(values.len());
                    let mut ok = true;
                    for (i, v) in values.iter().enumerate() {
                        if self.too_many_nodes {
                            return None;
                        }
                        match self.node(v, &values_path.index(i), depth) {
                            Some(n) => children.push(n),
                            None => ok = false,
                        }
                    }
                    ok.then_some(children)
                }
            }
            None | Some(Value::Null) => {
                self.err(&values_path, "missing: a group needs a list of values");
                None
            }
            Some(other) => {
                self.err(
                    &values_path,
                    format!("expected a list, got {}", show(other)),
                );
                None
            }
        };
        Some(Group {
            op: op?,
            children: children?,
            path: path.to_string(),
        })
    }

    fn node(&mut self, v: &Value, path: &JsonPath, depth: usize) -> Option<Node> {
        let Some(obj) = v.as_object() else {
            self.err(
                path,
                format!("expected a group or leaf object, got {}", show(v)),
            );
            return None;
        };
        match obj.get("type") {
            Some(Value::String(t)) if t == "AND" || t == "OR" => {
                self.group(obj, path, depth + 1).map(Node::Group)
            }
            Some(Value::String(t)) if t == "person" => {
                if !self.count_node() {
                    return None;
                }
                self.property_filter(obj, path)
                    .map(|f| Node::Leaf(Leaf::Person(f)))
            }
            Some(Value::String(t)) if t == "behavioral" => {
                if !self.count_node() {
                    return None;
                }
                self.behavioral(obj, path)
                    .map(|b| Node::Leaf(Leaf::Behavioral(b)))
            }
            Some(Value::String(t)) if COHORT_LEAF_TYPES.contains(&t.as_str()) => {
                if !self.count_node() {
                    return None;
                }
                self.cohort_leaf(obj, path)
                    .map(|c| Node::Leaf(Leaf::Cohort(c)))
            }
            _ if obj.contains_key("values") => {
                // A group with a bad type: report the type, still check the children.
                self.group(obj, path, depth + 1);
                None
            }
            other => {
                let got = other.map_or("nothing".to_string(), show);
                self.err(
                    &path.field("type"),
                    format!(
                        "unknown node type {got} (expected AND, OR, person, behavioral or cohort)"
                    ),
                );
                None
            }
        }
    }

    fn string_field(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &JsonPath,
    ) -> Option<String> {
        let p = path.field(key);
        match obj.get(key) {
            Some(Value::String(s)) => self.check_len(s, &p).then(|| s.clone()),
            None | Some(Value::Null) => {
                self.err(&p, "missing: a string is required");
                None
            }
            Some(other) => {
                self.err(&p, format!("expected a string, got {}", show(other)));
                None
            }
        }
    }

    /// A person leaf, or an `event_filters` entry.
    fn property_filter(
        &mut self,
        obj: &Map<String, Value>,
        path: &JsonPath,
    ) -> Option<PropertyFilter> {
        let key = self.string_field(obj, "key", path);
        let op_path = path.field("operator");
        let operator = match obj.get("operator") {
            None | Some(Value::Null) => Some(Operator::Exact),
            Some(Value::String(s)) => match Operator::from_wire(s) {
                Some(op) => Some(op),
                None => {
                    let names: Vec<&str> = Operator::ALL.iter().map(|o| o.as_str()).collect();
                    self.err(
                        &op_path,
                        format!(
                            "unknown operator {:?} (expected one of {})",
                            s,
                            names.join(", ")
                        ),
                    );
                    None
                }
            },
            Some(other) => {
                self.err(
                    &op_path,
                    format!("expected an operator name, got {}", show(other)),
                );
                None
            }
        };
        let value = match operator {
            Some(op) => self.filter_value(op, obj.get("value"), &path.field("value")),
            None => None,
        };
        let negation = self.flag(obj, "negation", path, true);
        Some(PropertyFilter {
            key: key?,
            operator: operator?,
            value: value?,
            negation,
            path: path.to_string(),
        })
    }

    fn scalar(&mut self, v: &Value, path: &JsonPath) -> Option<Scalar> {
        match v {
            Value::String(s) => self.check_len(s, path).then(|| Scalar::Str(s.clone())),
            Value::Number(n) => Some(Scalar::Num(n.clone())),
            Value::Bool(b) => Some(Scalar::Bool(*b)),
            other => {
                self.err(
                    path,
                    format!("expected a string, number or boolean, got {}", show(other)),
                );
                None
            }
        }
    }

    fn number(&mut self, v: &Value, path: &JsonPath, op: Operator) -> Option<(f64, Scalar)> {
        let n = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => crate::value::numeric_str(s),
            _ => None,
        };
        match n {
            Some(x) => Some((x, self.scalar(v, path)?)),
            None => {
                self.err(
                    path,
                    format!("operator {} needs a number, got {}", op.as_str(), show(v)),
                );
                None
            }
        }
    }

    fn filter_value(
        &mut self,
        op: Operator,
        v: Option<&Value>,
        path: &JsonPath,
    ) -> Option<FilterValue> {
        use Operator::*;
        if matches!(op, IsSet | IsNotSet) {
            return Some(FilterValue::None);
        }
        let v = match v {
            None | Some(Value::Null) => {
                self.err(
                    path,
                    format!("missing: operator {} needs a value", op.as_str()),
                );
                return None;
            }
            Some(v) => v,
        };
        match op {
            Exact | IsNot | In | NotIn | IContains | NotIContains | IContainsMulti
            | NotIContainsMulti | Regex | NotRegex => {
                let (items, list) = match v {
                    Value::Array(items) => {
                        if items.len() > self.limits.max_list_len {
                            self.err(
                                path,
                                format!(
                                    "list of {} elements exceeds the limit of {} (max_list_len)",
                                    items.len(),
                                    self.limits.max_list_len
                                ),
                            );
                            return None;
                        }
                        let mut out = Vec::with_capacity(items.len());
                        let mut ok = true;
                        for (i, item) in items.iter().enumerate() {
                            match self.scalar(item, &path.index(i)) {
                                Some(s) => out.push(s),
                                None => ok = false,
                            }
                        }
                        if !ok {
                            return None;
                        }
                        (out, true)
                    }
                    Value::Object(_) => {
                        self.err(
                            path,
                            format!(
                                "operator {} needs a string, number, boolean or a list of them, got {}",
                                op.as_str(),
                                show(v)
                            ),
                        );
                        return None;
                    }
                    scalar => (vec![self.scalar(scalar, path)?], false),
                };
                let mut regexes = Vec::new();
                if matches!(op, Regex | NotRegex) {
                    let mut ok = true;
                    for (i, item) in items.iter().enumerate() {
                        let p = if list { path.index(i) } else { path.clone() };
                        match build_regex(&item.string_form(), self.limits) {
                            Ok(re) => regexes.push(super::CompiledRegex(re)),
                            Err(msg) => {
                                self.err(&p, msg);
                                ok = false;
                            }
                        }
                    }
                    if !ok {
                        return None;
                    }
                }
                Some(FilterValue::Scalars {
                    items,
                    list,
                    regexes,
                })
            }
            Gt | Gte | Lt | Lte | Min | Max => {
                let (x, s) = self.number(v, path, op)?;
                Some(FilterValue::Number(x, s))
            }
            Between | NotBetween => {
                let items = match v {
                    Value::Array(items) if items.len() == 2 => items,
                    other => {
                        self.err(
                            path,
                            format!(
                                "operator {} needs a list [min, max], got {}",
                                op.as_str(),
                                show(other)
                            ),
                        );
                        return None;
                    }
                };
                let lo = self.number(&items[0], &path.index(0), op);
                let hi = self.number(&items[1], &path.index(1), op);
                let ((lo, ls), (hi, hs)) = (lo?, hi?);
                if lo > hi {
                    self.err(
                        path,
                        format!(
                            "operator {}: min {} is greater than max {}",
                            op.as_str(),
                            ls.string_form(),
                            hs.string_form()
                        ),
                    );
                    return None;
                }
                Some(FilterValue::Range(lo, hi, ls, hs))
            }
            IsDateBefore | IsDateAfter | IsDateExact => match v {
                Value::String(s) => match parse_date_spec(s) {
                    Some(d) => Some(FilterValue::Date(d, s.clone())),
                    None => {
                        self.err(path, format!("unparsable date {:?} (expected a relative date such as \"-7d\" or an ISO 8601 date)", s));
                        None
                    }
                },
                other => {
                    self.err(
                        path,
                        format!(
                            "operator {} needs a date string, got {}",
                            op.as_str(),
                            show(other)
                        ),
                    );
                    None
                }
            },
            SemverEq | SemverNeq | SemverGt | SemverGte | SemverLt | SemverLte | SemverTilde
            | SemverCaret | SemverWildcard => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    other => {
                        self.err(
                            path,
                            format!(
                                "operator {} needs a version string, got {}",
                                op.as_str(),
                                show(other)
                            ),
                        );
                        return None;
                    }
                };
                let parsed = match op {
                    SemverTilde => semver::tilde_range(&text)
                        .map(|(l, h)| FilterValue::VersionRange(l, h, text.clone())),
                    SemverCaret => semver::caret_range(&text)
                        .map(|(l, h)| FilterValue::VersionRange(l, h, text.clone())),
                    SemverWildcard => semver::wildcard_range(&text)
                        .map(|(l, h)| FilterValue::VersionRange(l, h, text.clone())),
                    _ => semver::parse_version(&text)
                        .map(|ver| FilterValue::Version(ver, text.clone())),
                };
                if parsed.is_none() {
                    self.err(
                        path,
                        format!("invalid version {:?} for operator {}", text, op.as_str()),
                    );
                }
                parsed
            }
            IsSet | IsNotSet => Some(FilterValue::None),
        }
    }

    /// A positive integer field: a JSON integer or a string of ASCII digits, 1..=max.
    fn positive(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &JsonPath,
        max: u64,
        limit_name: &str,
    ) -> Option<u64> {
        let p = path.field(key);
        let v = match obj.get(key) {
            None | Some(Value::Null) => {
                self.err(&p, "missing: a positive integer is required");
                return None;
            }
            Some(v) => v,
        };
        self.positive_value(v, &p, "", max, limit_name)
    }

    fn positive_value(
        &mut self,
        v: &Value,
        p: &JsonPath,
        prefix: &str,
        max: u64,
        limit_name: &str,
    ) -> Option<u64> {
        let parsed: Option<u64> = match v {
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    Some(u)
                } else if n.is_i64() {
                    Some(0)
                } else {
                    None
                }
            }
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                Some(s.parse::<u64>().unwrap_or(u64::MAX))
            }
            _ => None,
        };
        match parsed {
            Some(0) => {
                self.err(
                    p,
                    format!("{prefix}must be greater than 0, got {}", show(v)),
                );
                None
            }
            Some(n) if n > max => {
                self.err(
                    p,
                    format!(
                        "{prefix}{} exceeds the limit of {max} ({limit_name})",
                        show(v)
                    ),
                );
                None
            }
            Some(n) => Some(n),
            None => {
                self.err(
                    p,
                    format!("{prefix}expected a positive integer, got {}", show(v)),
                );
                None
            }
        }
    }

    fn unit(&mut self, obj: &Map<String, Value>, key: &str, path: &JsonPath) -> Option<Unit> {
        let p = path.field(key);
        match obj.get(key) {
            Some(Value::String(s)) => match Unit::from_wire(s) {
                Some(u) => Some(u),
                None => {
                    self.err(&p, format!("unknown interval {:?} (expected minute, hour, day, week, month or year)", s));
                    None
                }
            },
            None | Some(Value::Null) => {
                self.err(
                    &p,
                    "missing: an interval (minute, hour, day, week, month or year) is required",
                );
                None
            }
            Some(other) => {
                self.err(
                    &p,
                    format!("expected an interval name, got {}", show(other)),
                );
                None
            }
        }
    }

    fn span(
        &mut self,
        obj: &Map<String, Value>,
        value_key: &str,
        interval_key: &str,
        path: &JsonPath,
    ) -> Option<Span> {
        let max = self.limits.max_integer;
        let n = self.positive(obj, value_key, path, max, "max_integer");
        let unit = self.unit(obj, interval_key, path);
        Some(Span { n: n?, unit: unit? })
    }

    fn count_op(&mut self, obj: &Map<String, Value>, path: &JsonPath) -> Option<CountOp> {
        let p = path.field("operator");
        match obj.get("operator") {
            None | Some(Value::Null) => Some(CountOp::Eq),
            Some(Value::String(s)) => {
                match count_op_from_wire(s) {
                    Some(op) => Some(op),
                    None => {
                        self.err(&p, format!("unknown count operator {:?} (expected eq, exact, gt, gte, lt or lte)", s));
                        None
                    }
                }
            }
            Some(other) => {
                self.err(
                    &p,
                    format!("expected a count operator, got {}", show(other)),
                );
                None
            }
        }
    }

    /// An event name field: `key`/`seq_event` (string or integer) with its event type.
    fn event_name(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        type_key: &str,
        path: &JsonPath,
    ) -> Option<String> {
        let kp = path.field(key);
        let name = match obj.get(key) {
            Some(Value::String(s)) => self.check_len(s, &kp).then(|| s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            None | Some(Value::Null) => {
                self.err(&kp, "missing: an event name is required");
                None
            }
            Some(other) => {
                self.err(&kp, format!("expected an event name, got {}", show(other)));
                None
            }
        };
        let tp = path.field(type_key);
        let ok = match obj.get(type_key) {
            Some(Value::String(s)) if s == "events" => true,
            Some(Value::String(s)) if s == "actions" => {
                self.err(&tp, "actions are not supported (they need action definitions this engine does not have); use event_type \"events\"");
                false
            }
            None | Some(Value::Null) => {
                self.err(&tp, "missing: event type must be 'events' or 'actions'");
                false
            }
            Some(other) => {
                self.err(
                    &tp,
                    format!(
                        "event type must be 'events' or 'actions', got {}",
                        show(other)
                    ),
                );
                false
            }
        };
        if ok {
            name
        } else {
            None
        }
    }

    fn behavioral(&mut self, obj: &Map<String, Value>, path: &JsonPath) -> Option<BehavioralLeaf> {
        let event = self.event_name(obj, "key", "event_type", path);
        let vp = path.field("value");
        let kind = match obj.get("value") {
            Some(Value::String(s)) => match s.as_str() {
                "performed_event"
                | "performed_event_multiple"
                | "performed_event_first_time"
                | "stopped_performing_event"
                | "restarted_performing_event"
                | "performed_event_sequence"
                | "performed_event_regularly" => Some(s.as_str()),
                _ => {
                    self.err(&vp, format!("invalid behavioral property value {:?} (expected performed_event, performed_event_multiple, performed_event_first_time, stopped_performing_event, restarted_performing_event, performed_event_sequence or performed_event_regularly)", s));
                    None
                }
            },
            other => {
                let got = other.map_or("nothing".to_string(), show);
                self.err(&vp, format!("expected a behavioral type name, got {got}"));
                None
            }
        };
        let behavior = match kind {
            Some(kind) => self.behavior(kind, obj, path),
            None => None,
        };
        let event_filters = self.event_filters(obj, path);
        let negation = self.flag(obj, "negation", path, true);
        Some(BehavioralLeaf {
            event: event?,
            behavior: behavior?,
            event_filters: event_filters?,
            negation,
            path: path.to_string(),
        })
    }

    fn since(&mut self, obj: &Map<String, Value>, path: &JsonPath) -> Option<Since> {
        match obj.get("explicit_datetime") {
            None | Some(Value::Null) => self
                .span(obj, "time_value", "time_interval", path)
                .map(Since::Back),
            Some(Value::String(s)) => match parse_date_spec(s) {
                Some(d) => Some(Since::Explicit(d, s.clone())),
                None => {
                    self.err(&path.field("explicit_datetime"), format!("unparsable date {:?} (expected a relative date such as \"-7d\" or an ISO 8601 date)", s));
                    None
                }
            },
            Some(other) => {
                self.err(
                    &path.field("explicit_datetime"),
                    format!("expected a date string, got {}", show(other)),
                );
                None
            }
        }
    }

    fn behavior(
        &mut self,
        kind: &str,
        obj: &Map<String, Value>,
        path: &JsonPath,
    ) -> Option<Behavior> {
        let max = self.limits.max_integer;
        match kind {
            "performed_event" => Some(Behavior::PerformedEvent {
                since: self.since(obj, path)?,
            }),
            "performed_event_multiple" => {
                let since = self.since(obj, path);
                let op = self.count_op(obj, path);
                let value = self.positive(obj, "operator_value", path, max, "max_integer");
                Some(Behavior::PerformedEventMultiple {
                    since: since?,
                    op: op?,
                    value: value?,
                })
            }
            "performed_event_first_time" => Some(Behavior::PerformedEventFirstTime {
                time: self.span(obj, "time_value", "time_interval", path)?,
            }),
            "stopped_performing_event" | "restarted_performing_event" => {
                let time = self.span(obj, "time_value", "time_interval", path);
                let seq = self.span(obj, "seq_time_value", "seq_time_interval", path);
                let (time, seq) = (time?, seq?);
                let secs = |s: Span| (s.n as i128) * (s.unit.approx_seconds() as i128);
                if secs(seq) > secs(time) {
                    self.err(
                        &path.field("seq_time_value"),
                        format!(
                            "seq_date must be more recent than date: the recent window ({} {}) is longer than the whole window ({} {})",
                            seq.n, seq.unit.as_str(), time.n, time.unit.as_str()
                        ),
                    );
                    return None;
                }
                Some(if kind == "stopped_performing_event" {
                    Behavior::StoppedPerformingEvent { time, seq }
                } else {
                    Behavior::RestartedPerformingEvent { time, seq }
                })
            }
            "performed_event_sequence" => {
                let time = self.span(obj, "time_value", "time_interval", path);
                let seq_event = self.event_name(obj, "seq_event", "seq_event_type", path);
                let seq = self.span(obj, "seq_time_value", "seq_time_interval", path);
                Some(Behavior::PerformedEventSequence {
                    time: time?,
                    seq_event: seq_event?,
                    seq: seq?,
                })
            }
            _ => {
                let time = self.span(obj, "time_value", "time_interval", path);
                let op = self.count_op(obj, path);
                let value = self.positive(obj, "operator_value", path, max, "max_integer");
                let min_periods = self.positive(obj, "min_periods", path, max, "max_integer");
                let total = self.limits.max_total_periods;
                let total_periods =
                    self.positive(obj, "total_periods", path, total, "max_total_periods");
                let (min_periods, total_periods) = (min_periods?, total_periods?);
                if min_periods > total_periods {
                    self.err(
                        &path.field("min_periods"),
                        format!("min_periods ({min_periods}) cannot be greater than total_periods ({total_periods})"),
                    );
                    return None;
                }
                Some(Behavior::PerformedEventRegularly {
                    time: time?,
                    op: op?,
                    value: value?,
                    min_periods,
                    total_periods,
                })
            }
        }
    }

    fn event_filters(
        &mut self,
        obj: &Map<String, Value>,
        path: &JsonPath,
    ) -> Option<Vec<PropertyFilter>> {
        let p = path.field("event_filters");
        match obj.get("event_filters") {
            None | Some(Value::Null) => Some(Vec::new()),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    let ip = p.index(i);
                    let Some(f) = item.as_object() else {
                        self.err(
                            &ip,
                            format!(
                                "expected an event property filter object, got {}",
                                show(item)
                            ),
                        );
                        ok = false;
                        continue;
                    };
                    match f.get("type") {
                        None | Some(Value::Null) => {}
                        Some(Value::String(t)) if t == "event" => {}
                        Some(other) => {
                            self.err(&ip.field("type"), format!("event filter type {} is not supported (only \"event\" property filters are)", show(other)));
                            ok = false;
                            continue;
                        }
                    }
                    match self.property_filter(f, &ip) {
                        Some(f) => out.push(f),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            Some(other) => {
                self.err(&p, format!("expected a list, got {}", show(other)));
                None
            }
        }
    }

    fn cohort_leaf(&mut self, obj: &Map<String, Value>, path: &JsonPath) -> Option<CohortLeaf> {
        let vp = path.field("value");
        let target: Option<CohortId> = match obj.get("value") {
            Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
            Some(Value::String(s))
                if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                s.parse::<i64>().ok()
            }
            _ => None,
        };
        match target {
            Some(t) => self.references.push(Reference {
                path: vp.to_string(),
                target: t,
            }),
            None => {
                let got = obj.get("value").map_or("nothing".to_string(), show);
                self.err(&vp, format!("expected a cohort id (an integer), got {got}"));
            }
        }
        let kp = path.field("key");
        let key_ok = match obj.get("key") {
            Some(Value::String(k)) if k == "id" => true,
            None | Some(Value::Null) => {
                self.err(&kp, "missing: a cohort leaf needs key \"id\"");
                false
            }
            Some(other) => {
                self.err(&kp, format!("expected \"id\", got {}", show(other)));
                false
            }
        };
        let op_path = path.field("operator");
        let not_in = match obj.get("operator") {
            None | Some(Value::Null) => Some(false),
            Some(Value::String(s)) if s == "in" || s == "exact" => Some(false),
            Some(Value::String(s)) if s == "not_in" => Some(true),
            Some(other) => {
                self.err(
                    &op_path,
                    format!(
                        "unknown cohort operator {} (expected in, exact or not_in)",
                        show(other)
                    ),
                );
                None
            }
        };
        let negation = self.flag(obj, "negation", path, true);
        if !key_ok {
            return None;
        }
        Some(CohortLeaf {
            target: target?,
            not_in: not_in?,
            negation,
            path: path.to_string(),
        })
    }

    /// Converts legacy `groups` (SEMANTICS §A.5) into an OR root.
    fn legacy_groups(&mut self, groups: &[Value]) -> Option<Group> {
        let root = JsonPath::root("groups");
        if !self.count_node() {
            return None;
        }
        let mut children = Vec::with_capacity(groups.len());
        let mut ok = true;
        for (i, g) in groups.iter().enumerate() {
            if self.too_many_nodes {
                return None;
            }
            let gp = root.index(i);
            match self.legacy_group(g, &gp) {
                Some(n) => children.push(n),
                None => ok = false,
            }
        }
        ok.then(|| Group {
            op: GroupOp::Or,
            children,
            path: root.to_string(),
        })
    }

    fn legacy_group(&mut self, g: &Value, gp: &JsonPath) -> Option<Node> {
        let Some(obj) = g.as_object() else {
            self.err(gp, format!("expected a group object, got {}", show(g)));
            return None;
        };
        let pp = gp.field("properties");
        match obj.get("properties") {
            Some(Value::Array(props)) if !props.is_empty() => {
                if 2 > self.limits.max_depth {
                    self.err(
                        gp,
                        format!(
                            "group nesting exceeds the limit of {} levels (max_depth)",
                            self.limits.max_depth
                        ),
                    );
                    return None;
                }
                if !self.count_node() {
                    return None;
                }
                let mut children = Vec::with_capacity(props.len());
                let mut ok = true;
                for (j, leaf) in props.iter().enumerate() {
                    let lp = pp.index(j);
                    let node = match leaf.as_object() {
                        Some(l) => match l.get("type") {
                            None | Some(Value::Null) => self.legacy_person(l, &lp),
                            Some(Value::String(t)) if t == "event" => self.legacy_person(l, &lp),
                            _ => self.node(leaf, &lp, 2),
                        },
                        None => self.node(leaf, &lp, 2),
                    };
                    match node {
                        Some(n) => children.push(n),
                        None => ok = false,
                    }
                }
                ok.then(|| {
                    Node::Group(Group {
                        op: GroupOp::And,
                        children,
                        path: pp.to_string(),
                    })
                })
            }
            Some(Value::Object(p)) if p.contains_key("type") && p.contains_key("values") => {
                self.group(p, &pp, 2).map(Node::Group)
            }
            Some(Value::Object(p)) if p.contains_key("type") || p.contains_key("values") => {
                self.err(&pp, "a properties object needs both \"type\" and \"values\" (or neither, for key/value pairs)");
                None
            }
            Some(Value::Object(p)) if !p.is_empty() => {
                if !self.count_node() {
                    return None;
                }
                let mut children = Vec::with_capacity(p.len());
                for (k, v) in p {
                    if !self.count_node() {
                        return None;
                    }
                    let lp = pp.field(k);
                    let value = self.filter_value(Operator::Exact, Some(v), &lp)?;
                    children.push(Node::Leaf(Leaf::Person(PropertyFilter {
                        key: k.clone(),
                        operator: Operator::Exact,
                        value,
                        negation: false,
                        path: lp.to_string(),
                    })));
                }
                Some(Node::Group(Group {
                    op: GroupOp::And,
                    children,
                    path: pp.to_string(),
                }))
            }
            _ => self.legacy_action(obj, gp),
        }
    }

    /// A legacy leaf whose type is missing, null or "event": a person leaf.
    fn legacy_person(&mut self, l: &Map<String, Value>, lp: &JsonPath) -> Option<Node> {
        if !self.count_node() {
            return None;
        }
        self.property_filter(l, lp)
            .map(|f| Node::Leaf(Leaf::Person(f)))
    }

    fn legacy_action(&mut self, obj: &Map<String, Value>, gp: &JsonPath) -> Option<Node> {
        let key = match (obj.get("action_id"), obj.get("event_id")) {
            (Some(a), _) if !a.is_null() => {
                self.err(gp, "action_id: actions are not supported (they need action definitions this engine does not have)");
                return None;
            }
            (_, Some(Value::String(e))) => e.clone(),
            (_, Some(Value::Number(n))) => n.to_string(),
            (_, Some(e)) if !e.is_null() => {
                self.err(
                    gp,
                    format!("event_id: expected an event name, got {}", show(e)),
                );
                return None;
            }
            _ => {
                self.err(
                    gp,
                    "the group defines nothing: it has no properties, action_id or event_id",
                );
                return None;
            }
        };
        if !self.count_node() {
            return None;
        }
        let max = self.limits.max_integer;
        let days = match obj.get("days") {
            None | Some(Value::Null) => Some(365),
            Some(Value::Number(n)) if n.as_u64() == Some(0) => Some(365),
            Some(Value::String(s)) if s.bytes().all(|b| b == b'0') && !s.is_empty() => Some(365),
            Some(v) => self.positive_value(v, gp, "days: ", max, "max_integer"),
        };
        let count = legacy_count(obj.get("count"));
        let behavior = if count > 0 {
            if count > max {
                self.err(
                    gp,
                    format!("count: {count} exceeds the limit of {max} (max_integer)"),
                );
                return None;
            }
            let op = match obj.get("count_operator") {
                None | Some(Value::Null) => Some(CountOp::Eq),
                Some(Value::String(s)) => count_op_from_wire(s),
                Some(_) => None,
            };
            let Some(op) = op else {
                let got = obj
                    .get("count_operator")
                    .map_or("nothing".to_string(), show);
                self.err(
                    gp,
                    format!(
                        "count_operator: unknown count operator {got} (expected eq, exact, gt, gte, lt or lte)"
                    ),
                );
                return None;
            };
            Behavior::PerformedEventMultiple {
                since: Since::Back(Span {
                    n: days?,
                    unit: Unit::Day,
                }),
                op,
                value: count,
            }
        } else {
            Behavior::PerformedEvent {
                since: Since::Back(Span {
                    n: days?,
                    unit: Unit::Day,
                }),
            }
        };
        Some(Node::Leaf(Leaf::Behavioral(BehavioralLeaf {
            event: key,
            behavior,
            event_filters: Vec::new(),
            negation: false,
            path: gp.to_string(),
        })))
    }
}

fn count_op_from_wire(s: &str) -> Option<CountOp> {
    Some(match s {
        "eq" | "exact" => CountOp::Eq,
        "gt" => CountOp::Gt,
        "gte" => CountOp::Gte,
        "lt" => CountOp::Lt,
        "lte" => CountOp::Lte,
        _ => return None,
    })
}

/// Legacy `count`: `max(0, int(count or 0))`, floats truncated, anything unparsable 0.
fn legacy_count(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                u
            } else if let Some(f) = n.as_f64() {
                if f.is_finite() && f >= 1.0 {
                    f.trunc().min(u64::MAX as f64) as u64
                } else {
                    0
                }
            } else {
                0
            }
        }
        Some(Value::String(s)) => {
            let t = s.trim();
            match t.parse::<i64>() {
                Ok(i) => i.max(0) as u64,
                Err(_) => 0,
            }
        }
        _ => 0,
    }
}

/// Builds a regex under the limits of `CLI.md` §3, or says why it cannot be.
pub(crate) fn build_regex(pattern: &str, limits: &Limits) -> Result<regex::Regex, String> {
    if pattern.len() > limits.max_regex_len {
        return Err(format!(
            "regex pattern of {} bytes exceeds the limit of {} bytes (max_regex_len)",
            pattern.len(),
            limits.max_regex_len
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(limits.max_regex_size)
        .dfa_size_limit(crate::limits::REGEX_DFA_SIZE)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => format!(
                "regex {:?} compiles to more than {limit} bytes (max_regex_size)",
                truncate(pattern)
            ),
            other => format!(
                "invalid regex {:?}: {}",
                truncate(pattern),
                other
                    .to_string()
                    .lines()
                    .last()
                    .unwrap_or("syntax error")
                    .trim()
            ),
        })
}

fn truncate(s: &str) -> &str {
    if s.len() <= 60 {
        return s;
    }
    let mut end = 60;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
