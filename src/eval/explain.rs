//! Explanations: the filter tree of one cohort for one person at one instant, every group and
//! leaf with its result and the evidence behind it. Leaf results come from the compiled program
//! itself (the same nodes the evaluator runs), so an explanation always agrees with evaluation.

use std::fmt;

use serde_json::{json, Map, Value};

use crate::ast::{Definition, Group, GroupOp, Leaf, Node};
use crate::compile::{NodeKind, Program};
use crate::eval::{behavioral, Scratch, Subject};
use crate::time::Micros;
use crate::value::Val;
use crate::{CohortId, Timestamp};

/// How many levels of cohort references are expanded; deeper ones show only their result.
const MAX_REFERENCE_DEPTH: usize = 16;

/// Why a person is (or is not) in a cohort. Serialises as [`Explanation::to_json`] does.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Explanation {
    /// The cohort.
    pub cohort: CohortId,
    /// The person id.
    pub person: String,
    /// The evaluation instant.
    pub now: Timestamp,
    /// Membership.
    pub result: bool,
    /// The earliest instant after `now` at which membership can change with no new data
    /// (`None`: never).
    pub horizon: Option<Timestamp>,
    /// The cohort's filter tree with results and evidence.
    pub tree: ExplainNode,
}

/// One node of an explanation. Serialises as [`ExplainNode::to_json`] does.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ExplainNode {
    /// `AND`, `OR`, `person`, `behavioral`, `cohort` (or `static` / `deleted` for a cohort
    /// without a filter).
    pub kind: &'static str,
    /// The leaf's `negation` flag.
    pub negated: bool,
    /// The node's result, negation applied.
    pub result: bool,
    /// JSON path of the node in its cohort.
    pub path: String,
    /// What the result rests on (property value seen, windows and event counts, membership).
    pub evidence: Map<String, Value>,
    /// Group children, or the referenced cohort's tree on a cohort leaf.
    pub children: Vec<ExplainNode>,
}

impl ExplainNode {
    /// The node as JSON (`CLI.md` §4 shape).
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("kind".into(), json!(self.kind));
        obj.insert("negated".into(), json!(self.negated));
        obj.insert("result".into(), json!(self.result));
        obj.insert("path".into(), json!(self.path));
        for (k, v) in &self.evidence {
            obj.insert(k.clone(), v.clone());
        }
        if !self.children.is_empty() || matches!(self.kind, "AND" | "OR") {
            obj.insert(
                "children".into(),
                Value::Array(self.children.iter().map(ExplainNode::to_json).collect()),
            );
        }
        Value::Object(obj)
    }

    /// Compact JSON text with keys in the documented order (`kind`, `negated`, `result`, `path`,
    /// the evidence, `children`).
    pub fn to_json_string(&self) -> String {
        let mut out = String::new();
        self.write_json(&mut out);
        out
    }

    fn write_json(&self, out: &mut String) {
        let q = |s: &str| Value::String(s.to_string()).to_string();
        out.push_str(&format!(
            "{{\"kind\":{},\"negated\":{},\"result\":{},\"path\":{}",
            q(self.kind),
            self.negated,
            self.result,
            q(&self.path)
        ));
        for (k, v) in &self.evidence {
            out.push_str(&format!(",{}:{}", q(k), v));
        }
        if !self.children.is_empty() || matches!(self.kind, "AND" | "OR") {
            out.push_str(",\"children\":[");
            for (i, c) in self.children.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                c.write_json(out);
            }
            out.push(']');
        }
        out.push('}');
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        let mark = if self.result { "✓" } else { "✗" };
        let neg = if self.negated { "NOT " } else { "" };
        write!(
            f,
            "{:indent$}{mark} {neg}{}",
            "",
            self.kind,
            indent = depth * 2
        )?;
        if !self.evidence.is_empty() {
            write!(f, " {}", Value::Object(self.evidence.clone()))?;
        }
        writeln!(f, "  @ {}", self.path)?;
        for c in &self.children {
            c.write(f, depth + 1)?;
        }
        Ok(())
    }
}

impl Explanation {
    /// The explanation as JSON: `{"cohort", "person", "now", "result", "horizon", "tree"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "cohort": self.cohort,
            "person": self.person,
            "now": self.now.to_string(),
            "result": self.result,
            "horizon": self.horizon.map(|h| h.to_string()),
            "tree": self.tree.to_json(),
        })
    }
}

impl serde::Serialize for Explanation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl serde::Serialize for ExplainNode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl Explanation {
    /// Compact JSON text with keys in the documented order: `cohort`, `person`, `now`, `result`,
    /// `horizon`, `tree`.
    pub fn to_json_string(&self) -> String {
        format!(
            "{{\"cohort\":{},\"person\":{},\"now\":{},\"result\":{},\"horizon\":{},\"tree\":{}}}",
            self.cohort,
            Value::String(self.person.clone()),
            Value::String(self.now.to_string()),
            self.result,
            self.horizon
                .map_or(Value::Null, |h| Value::String(h.to_string())),
            self.tree.to_json_string()
        )
    }
}

impl fmt::Display for Explanation {
    /// Readable indented text, one node a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cohort {} for person {:?} at {}: {}",
            self.cohort,
            self.person,
            self.now,
            if self.result {
                "member"
            } else {
                "not a member"
            }
        )?;
        match self.horizon {
            Some(h) => writeln!(f, "valid until {h} (if no new events or property changes)")?,
            None => writeln!(f, "valid until new events or property changes arrive")?,
        }
        self.tree.write(f, 0)
    }
}

/// A property value as JSON, for evidence.
pub(crate) fn val_json(v: &Val) -> Value {
    match v {
        Val::Bool(b) => json!(b),
        Val::Num(n) => Value::Number(n.clone()),
        Val::Str(s) => json!(s),
        Val::Json(s) => serde_json::from_str(s).unwrap_or_else(|_| json!(s)),
    }
}

impl Program {
    /// The full explanation of cohort position `c` for a subject: result, horizon and tree.
    pub(crate) fn explanation(
        &self,
        c: usize,
        person: &str,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
    ) -> Explanation {
        let horizon = self.horizon(c, s, scratch, now);
        self.prepare(scratch, now);
        let result = self.member(c, s, scratch, now);
        let tree = self.explain_cohort(c, s, scratch, now, 0);
        Explanation {
            cohort: self.set.cohorts()[c].id,
            person: person.to_string(),
            now: Timestamp::from_micros(now),
            result,
            horizon: horizon.map(Timestamp::from_micros),
            tree,
        }
    }

    /// Explains cohort `c` for the subject; `scratch` must be prepared for `now`.
    pub(crate) fn explain_cohort(
        &self,
        c: usize,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
        depth: usize,
    ) -> ExplainNode {
        let cohort = &self.set.cohorts()[c];
        match &cohort.definition {
            Definition::Dynamic(root) => self.explain_group(c, root, s, scratch, now, depth),
            Definition::Static(members) => ExplainNode {
                kind: "static",
                negated: false,
                result: self.member(c, s, scratch, now),
                path: String::new(),
                evidence: json!({"static_members": members.len()})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                children: Vec::new(),
            },
            Definition::Deleted => ExplainNode {
                kind: "deleted",
                negated: false,
                result: false,
                path: String::new(),
                evidence: Map::new(),
                children: Vec::new(),
            },
        }
    }

    fn explain_group(
        &self,
        c: usize,
        g: &Group,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
        depth: usize,
    ) -> ExplainNode {
        let children: Vec<ExplainNode> = g
            .children
            .iter()
            .map(|child| match child {
                Node::Group(g) => self.explain_group(c, g, s, scratch, now, depth),
                Node::Leaf(l) => self.explain_leaf(c, l, s, scratch, now, depth),
            })
            .collect();
        let result = match g.op {
            GroupOp::And => children.iter().all(|n| n.result),
            GroupOp::Or => children.iter().any(|n| n.result),
        };
        ExplainNode {
            kind: if g.op == GroupOp::And { "AND" } else { "OR" },
            negated: false,
            result,
            path: g.path.clone(),
            evidence: Map::new(),
            children,
        }
    }

    fn explain_leaf(
        &self,
        c: usize,
        leaf: &Leaf,
        s: &Subject<'_>,
        scratch: &mut Scratch,
        now: Micros,
        depth: usize,
    ) -> ExplainNode {
        let path = match leaf {
            Leaf::Person(p) => &p.path,
            Leaf::Behavioral(b) => &b.path,
            Leaf::Cohort(r) => &r.path,
        };
        let id = self.leaf_nodes.get(&(c as u32, path.clone())).copied();
        let result = id.is_some_and(|id| self.node(id, s, scratch, now));
        let kind = id.map(|id| &self.nodes[id as usize].kind);
        let mut evidence = Map::new();
        let mut children = Vec::new();
        match (leaf, kind) {
            (Leaf::Person(p), Some(NodeKind::Prop(i))) => {
                let seen = s.props.get(self.props[*i as usize].key);
                evidence.insert("key".into(), json!(p.key));
                evidence.insert("operator".into(), json!(p.operator.as_str()));
                if let Some(v) = p.value.to_json() {
                    evidence.insert("value".into(), v);
                }
                evidence.insert("seen".into(), seen.map_or(Value::Null, val_json));
                evidence.insert("missing".into(), json!(seen.is_none()));
            }
            (Leaf::Behavioral(b), Some(NodeKind::Behavior(i))) => {
                evidence.insert("event".into(), json!(b.event));
                evidence.insert("type".into(), json!(b.behavior.as_str()));
                let test = &self.behaviors[*i as usize];
                let times = std::mem::take(&mut scratch.times);
                let e = behavioral::evidence(test, &s.events, &times, now, &mut scratch.buf);
                scratch.times = times;
                if let Value::Object(e) = e {
                    evidence.extend(e);
                }
            }
            (Leaf::Cohort(r), Some(NodeKind::Cohort { target, .. })) => {
                let target = *target as usize;
                evidence.insert("cohort".into(), json!(r.target));
                evidence.insert(
                    "operator".into(),
                    json!(if r.not_in { "not_in" } else { "in" }),
                );
                evidence.insert("member".into(), json!(self.member(target, s, scratch, now)));
                if depth < MAX_REFERENCE_DEPTH {
                    children.push(self.explain_cohort(target, s, scratch, now, depth + 1));
                } else {
                    evidence.insert("truncated".into(), json!(true));
                }
            }
            _ => {}
        }
        ExplainNode {
            kind: match leaf {
                Leaf::Person(_) => "person",
                Leaf::Behavioral(_) => "behavioral",
                Leaf::Cohort(_) => "cohort",
            },
            negated: leaf.negated(),
            result,
            path: path.clone(),
            evidence,
            children,
        }
    }
}
