//! Legacy `groups` cohorts (SEMANTICS §A.5), converted into the same tree as `filters`.

use serde_json::{Map, Value};

use super::*;

impl Parser<'_> {
    /// Converts legacy `groups` (SEMANTICS §A.5) into an OR root.
    pub(super) fn legacy_groups(&mut self, groups: &[Value]) -> Option<Group> {
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

    pub(super) fn legacy_group(&mut self, g: &Value, gp: &JsonPath) -> Option<Node> {
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
    pub(super) fn legacy_person(&mut self, l: &Map<String, Value>, lp: &JsonPath) -> Option<Node> {
        if !self.count_node() {
            return None;
        }
        self.property_filter(l, lp)
            .map(|f| Node::Leaf(Leaf::Person(f)))
    }

    pub(super) fn legacy_action(
        &mut self,
        obj: &Map<String, Value>,
        gp: &JsonPath,
    ) -> Option<Node> {
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
