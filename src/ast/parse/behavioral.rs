//! Behavioral leaves (SEMANTICS §C): event names, windows, counts and event filters.

use serde_json::{Map, Value};

use super::*;

impl Parser<'_> {
    /// A positive integer field: a JSON integer or a string of ASCII digits, 1..=max.
    pub(super) fn positive(
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

    pub(super) fn positive_value(
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

    pub(super) fn unit(
        &mut self,
        obj: &Map<String, Value>,
        key: &str,
        path: &JsonPath,
    ) -> Option<Unit> {
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

    pub(super) fn span(
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

    pub(super) fn count_op(
        &mut self,
        obj: &Map<String, Value>,
        path: &JsonPath,
    ) -> Option<CountOp> {
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
    pub(super) fn event_name(
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

    pub(super) fn behavioral(
        &mut self,
        obj: &Map<String, Value>,
        path: &JsonPath,
    ) -> Option<BehavioralLeaf> {
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

    pub(super) fn since(&mut self, obj: &Map<String, Value>, path: &JsonPath) -> Option<Since> {
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

    pub(super) fn behavior(
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

    pub(super) fn event_filters(
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
}

/// The wire name of a count operator (`eq`/`exact`, `gte`, `lte`, …).
pub(super) fn count_op_from_wire(s: &str) -> Option<CountOp> {
    Some(match s {
        "eq" | "exact" => CountOp::Eq,
        "gt" => CountOp::Gt,
        "gte" => CountOp::Gte,
        "lt" => CountOp::Lt,
        "lte" => CountOp::Lte,
        _ => return None,
    })
}
