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

mod behavioral;
mod legacy;
mod values;

use behavioral::count_op_from_wire;

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
}
