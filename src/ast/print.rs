//! The AST back to filter JSON (the API's `filters` form). Parsing the output gives the same AST
//! (legacy `groups` cohorts come back in the `filters` form, so only their paths differ).

use serde_json::{json, Map, Value};

use super::*;

impl Cohort {
    /// The cohort as a cohort object with `filters` (or the static list, or `deleted`).
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("id".into(), json!(self.id));
        if let Some(name) = &self.name {
            obj.insert("name".into(), json!(name));
        }
        match &self.definition {
            Definition::Dynamic(root) => {
                obj.insert("filters".into(), json!({ "properties": root.to_json() }));
            }
            Definition::Static(members) => {
                obj.insert("is_static".into(), json!(true));
                obj.insert("static_person_ids".into(), json!(members));
            }
            Definition::Deleted => {
                obj.insert("deleted".into(), json!(true));
            }
        }
        Value::Object(obj)
    }
}

impl Group {
    /// `{"type": "AND"|"OR", "values": [...]}`.
    pub fn to_json(&self) -> Value {
        let op = match self.op {
            GroupOp::And => "AND",
            GroupOp::Or => "OR",
        };
        json!({"type": op, "values": self.children.iter().map(Node::to_json).collect::<Vec<_>>()})
    }
}

impl Node {
    /// The node's JSON.
    pub fn to_json(&self) -> Value {
        match self {
            Node::Group(g) => g.to_json(),
            Node::Leaf(Leaf::Person(p)) => p.to_json("person"),
            Node::Leaf(Leaf::Behavioral(b)) => b.to_json(),
            Node::Leaf(Leaf::Cohort(c)) => json!({
                "type": "cohort", "key": "id", "value": c.target,
                "operator": if c.not_in { "not_in" } else { "in" }, "negation": c.negation,
            }),
        }
    }
}

impl FilterValue {
    /// The wire value (`None` for `is_set` / `is_not_set`).
    pub fn to_json(&self) -> Option<Value> {
        Some(match self {
            FilterValue::None => return None,
            FilterValue::Scalars {
                items, list: true, ..
            } => Value::Array(items.iter().map(Scalar::to_json).collect()),
            FilterValue::Scalars {
                items, list: false, ..
            } => items.first().map_or(Value::Null, Scalar::to_json),
            FilterValue::Number(_, s) => s.to_json(),
            FilterValue::Range(_, _, lo, hi) => json!([lo.to_json(), hi.to_json()]),
            FilterValue::Date(_, text)
            | FilterValue::Version(_, text)
            | FilterValue::VersionRange(_, _, text) => {
                json!(text)
            }
        })
    }
}

impl PropertyFilter {
    /// The leaf's JSON with the given `type` (`person`, or `event` inside `event_filters`).
    pub fn to_json(&self, kind: &str) -> Value {
        let mut obj = Map::new();
        obj.insert("type".into(), json!(kind));
        obj.insert("key".into(), json!(self.key));
        obj.insert("operator".into(), json!(self.operator.as_str()));
        if let Some(v) = self.value.to_json() {
            obj.insert("value".into(), v);
        }
        obj.insert("negation".into(), json!(self.negation));
        Value::Object(obj)
    }
}

fn span(obj: &mut Map<String, Value>, value_key: &str, interval_key: &str, s: &Span) {
    obj.insert(value_key.into(), json!(s.n));
    obj.insert(interval_key.into(), json!(s.unit.as_str()));
}

impl BehavioralLeaf {
    /// The leaf's JSON.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("type".into(), json!("behavioral"));
        obj.insert("key".into(), json!(self.event));
        obj.insert("event_type".into(), json!("events"));
        obj.insert("value".into(), json!(self.behavior.as_str()));
        obj.insert("negation".into(), json!(self.negation));
        let since = |obj: &mut Map<String, Value>, s: &Since| match s {
            Since::Back(sp) => span(obj, "time_value", "time_interval", sp),
            Since::Explicit(_, text) => {
                obj.insert("explicit_datetime".into(), json!(text));
            }
        };
        match &self.behavior {
            Behavior::PerformedEvent { since: s } => since(&mut obj, s),
            Behavior::PerformedEventMultiple {
                since: s,
                op,
                value,
            } => {
                since(&mut obj, s);
                obj.insert("operator".into(), json!(op.as_str()));
                obj.insert("operator_value".into(), json!(value));
            }
            Behavior::PerformedEventFirstTime { time } => {
                span(&mut obj, "time_value", "time_interval", time)
            }
            Behavior::StoppedPerformingEvent { time, seq }
            | Behavior::RestartedPerformingEvent { time, seq } => {
                span(&mut obj, "time_value", "time_interval", time);
                span(&mut obj, "seq_time_value", "seq_time_interval", seq);
            }
            Behavior::PerformedEventSequence {
                time,
                seq_event,
                seq,
            } => {
                span(&mut obj, "time_value", "time_interval", time);
                obj.insert("seq_event".into(), json!(seq_event));
                obj.insert("seq_event_type".into(), json!("events"));
                span(&mut obj, "seq_time_value", "seq_time_interval", seq);
            }
            Behavior::PerformedEventRegularly {
                time,
                op,
                value,
                min_periods,
                total_periods,
            } => {
                span(&mut obj, "time_value", "time_interval", time);
                obj.insert("operator".into(), json!(op.as_str()));
                obj.insert("operator_value".into(), json!(value));
                obj.insert("min_periods".into(), json!(min_periods));
                obj.insert("total_periods".into(), json!(total_periods));
            }
        }
        if !self.event_filters.is_empty() {
            let filters: Vec<Value> = self
                .event_filters
                .iter()
                .map(|f| f.to_json("event"))
                .collect();
            obj.insert("event_filters".into(), Value::Array(filters));
        }
        Value::Object(obj)
    }
}
