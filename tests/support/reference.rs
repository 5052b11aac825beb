//! A deliberately simple reference interpreter: it walks the validated AST directly over plain
//! JSON persons and event lists, re-deriving every rule from SEMANTICS.md with no interning, no
//! precomputation, no binary search and no memoisation. Property tests check the compiled
//! evaluator against it. (Date/version parsing and calendar arithmetic come from the crate's
//! `time` and `semver` modules, which have their own unit tests.)

use cohort_engine::internal::ast::{
    Behavior, BehavioralLeaf, CountOp, Definition, FilterValue, Group, GroupOp, Leaf, Node,
    Operator, PropertyFilter, Scalar, Since,
};
use cohort_engine::internal::semver::parse_version;
use cohort_engine::time::{back, forward, parse_absolute, seconds_f64_to_micros};
use cohort_engine::{CohortId, CohortSet};
use serde_json::{Map, Value};

/// A person as plain data.
#[derive(Clone, Debug)]
pub struct RefPerson {
    pub id: String,
    pub distinct_ids: Vec<String>,
    pub properties: Map<String, Value>,
    /// (event name, timestamp in µs, properties), in any order.
    pub events: Vec<(String, i64, Map<String, Value>)>,
}

fn string_form(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn fold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

fn numeric(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok().filter(|x| x.is_finite()),
        _ => None,
    }
}

fn person_date(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => seconds_f64_to_micros(n.as_f64()?),
        Value::String(s) => match s.parse::<f64>() {
            Ok(x) if x.is_finite() => seconds_f64_to_micros(x),
            _ => parse_absolute(s),
        },
        _ => None,
    }
}

fn scalar_string(s: &Scalar) -> String {
    s.string_form()
}

/// The §B table, straight from the spec.
pub fn property_matches(f: &PropertyFilter, props: &Map<String, Value>, now: i64) -> bool {
    let value = props.get(&f.key).filter(|v| !v.is_null());
    let result = match value {
        None => matches!(
            f.operator,
            Operator::IsNot
                | Operator::NotIn
                | Operator::NotIContains
                | Operator::NotIContainsMulti
                | Operator::NotRegex
                | Operator::IsNotSet
        ),
        Some(v) => present(f, v, now),
    };
    result != f.negation
}

fn exact(items: &[Scalar], v: &Value) -> bool {
    let sv = fold(&string_form(v));
    if items.len() == 1 {
        let target = match &items[0] {
            Scalar::Bool(b) => Some(*b),
            Scalar::Str(s) if fold(s) == "true" => Some(true),
            Scalar::Str(s) if fold(s) == "false" => Some(false),
            _ => None,
        };
        if let Some(t) = target {
            return sv == if t { "true" } else { "false" };
        }
    }
    items.iter().any(|e| fold(&scalar_string(e)) == sv)
}

fn present(f: &PropertyFilter, v: &Value, now: i64) -> bool {
    use Operator::*;
    let sv = string_form(v);
    match (&f.value, f.operator) {
        (_, IsSet) => true,
        (_, IsNotSet) => false,
        (FilterValue::Scalars { items, .. }, Exact | In) => exact(items, v),
        (FilterValue::Scalars { items, .. }, IsNot | NotIn) => !exact(items, v),
        (FilterValue::Scalars { items, .. }, IContains | IContainsMulti) => items
            .iter()
            .any(|e| fold(&sv).contains(&fold(&scalar_string(e)))),
        (FilterValue::Scalars { items, .. }, NotIContains | NotIContainsMulti) => !items
            .iter()
            .any(|e| fold(&sv).contains(&fold(&scalar_string(e)))),
        (FilterValue::Scalars { items, .. }, Regex) => items
            .iter()
            .any(|e| regex::Regex::new(&scalar_string(e)).unwrap().is_match(&sv)),
        (FilterValue::Scalars { items, .. }, NotRegex) => !items
            .iter()
            .any(|e| regex::Regex::new(&scalar_string(e)).unwrap().is_match(&sv)),
        (FilterValue::Number(x, _), op) => match numeric(v) {
            None => false,
            Some(n) => match op {
                Gt => n > *x,
                Gte | Min => n >= *x,
                Lt => n < *x,
                Lte | Max => n <= *x,
                _ => unreachable!(),
            },
        },
        (FilterValue::Range(lo, hi, ..), op) => match numeric(v) {
            None => false,
            Some(n) if op == Between => *lo <= n && n <= *hi,
            Some(n) => n < *lo || n > *hi,
        },
        (FilterValue::Date(spec, _), op) => {
            let target = spec.resolve(now);
            match person_date(v) {
                None => false,
                Some(d) => match op {
                    IsDateBefore => d < target,
                    IsDateAfter => d > target,
                    _ => d == target,
                },
            }
        }
        (FilterValue::Version(want, _), op) => match parse_version(&sv) {
            None => false,
            Some(have) => match op {
                SemverEq => have == *want,
                SemverNeq => have != *want,
                SemverGt => have > *want,
                SemverGte => have >= *want,
                SemverLt => have < *want,
                _ => have <= *want,
            },
        },
        (FilterValue::VersionRange(lo, hi, _), _) => {
            parse_version(&sv).is_some_and(|x| *lo <= x && x < *hi)
        }
        (value, op) => panic!("operator {op:?} with {value:?} should not validate"),
    }
}

fn count_ok(op: CountOp, c: u64, v: u64) -> bool {
    match op {
        CountOp::Eq => c == v,
        CountOp::Gt => c > v,
        CountOp::Gte => c >= v,
        CountOp::Lt => c < v,
        CountOp::Lte => c <= v,
    }
}

/// §C.3, one type at a time, scanning every event.
pub fn behavioral_matches(b: &BehavioralLeaf, p: &RefPerson, now: i64) -> bool {
    let matching: Vec<i64> = p
        .events
        .iter()
        .filter(|(name, _, props)| {
            *name == b.event
                && b.event_filters
                    .iter()
                    .all(|f| property_matches(f, props, now))
        })
        .map(|(_, ts, _)| *ts)
        .collect();
    let count_in =
        |lo: i64, hi_incl: i64| matching.iter().filter(|&&t| lo < t && t <= hi_incl).count();
    let since = |s: &Since| match s {
        Since::Back(span) => back(now, span.n, span.unit),
        Since::Explicit(d, _) => d.resolve(now),
    };
    let result = match &b.behavior {
        Behavior::PerformedEvent { since: s } => {
            let l = since(s);
            matching.iter().any(|&t| l < t && t < now)
        }
        Behavior::PerformedEventMultiple {
            since: s,
            op,
            value,
        } => {
            let l = since(s);
            let c = matching.iter().filter(|&&t| l < t && t < now).count() as u64;
            c >= 1 && count_ok(*op, c, *value)
        }
        Behavior::PerformedEventFirstTime { time } => match matching.iter().min() {
            None => false,
            Some(&f) => back(now, time.n, time.unit) <= f && f < now,
        },
        Behavior::StoppedPerformingEvent { time, seq } => {
            let (t, s) = (back(now, time.n, time.unit), back(now, seq.n, seq.unit));
            count_in(t, s) > 0 && count_in(s, now) == 0
        }
        Behavior::RestartedPerformingEvent { time, seq } => {
            let (t, s) = (back(now, time.n, time.unit), back(now, seq.n, seq.unit));
            matching.iter().any(|&x| x <= t) && count_in(t, s) == 0 && count_in(s, now) > 0
        }
        Behavior::PerformedEventSequence {
            time,
            seq_event,
            seq,
        } => {
            let t = back(now, time.n, time.unit);
            let firsts: Vec<usize> = p
                .events
                .iter()
                .enumerate()
                .filter(|(_, (name, ts, props))| {
                    *name == b.event
                        && b.event_filters
                            .iter()
                            .all(|f| property_matches(f, props, now))
                        && t < *ts
                        && *ts <= now
                })
                .map(|(i, _)| i)
                .collect();
            firsts.iter().any(|&i| {
                let t0 = p.events[i].1;
                p.events.iter().enumerate().any(|(j, (name, t1, _))| {
                    j != i
                        && name == seq_event
                        && t < *t1
                        && *t1 <= now
                        && t0 < *t1
                        && *t1 <= forward(t0, seq.n, seq.unit)
                })
            })
        }
        Behavior::PerformedEventRegularly {
            time,
            op,
            value,
            min_periods,
            total_periods,
        } => {
            let bound = |k: u64| {
                if k == 0 {
                    now
                } else {
                    back(now, time.n * k, time.unit)
                }
            };
            let any = count_in(bound(*total_periods), now) > 0;
            let satisfied = (0..*total_periods)
                .filter(|&k| count_ok(*op, count_in(bound(k + 1), bound(k)) as u64, *value))
                .count() as u64;
            any && satisfied >= *min_periods
        }
    };
    result != b.negation
}

fn node_matches(set: &CohortSet, n: &Node, p: &RefPerson, now: i64) -> bool {
    match n {
        Node::Group(g) => group_matches(set, g, p, now),
        Node::Leaf(Leaf::Person(f)) => property_matches(f, &p.properties, now),
        Node::Leaf(Leaf::Behavioral(b)) => behavioral_matches(b, p, now),
        Node::Leaf(Leaf::Cohort(c)) => (member(set, c.target, p, now) != c.not_in) != c.negation,
    }
}

fn group_matches(set: &CohortSet, g: &Group, p: &RefPerson, now: i64) -> bool {
    match g.op {
        GroupOp::And => g.children.iter().all(|c| node_matches(set, c, p, now)),
        GroupOp::Or => g.children.iter().any(|c| node_matches(set, c, p, now)),
    }
}

/// Is the person a member of cohort `id`? (Recursive through references; fine for test sizes.)
pub fn member(set: &CohortSet, id: CohortId, p: &RefPerson, now: i64) -> bool {
    match set.get(id).map(|c| c.definition()) {
        None | Some(Definition::Deleted) => false,
        Some(Definition::Static(list)) => list
            .iter()
            .any(|m| *m == p.id || p.distinct_ids.contains(m)),
        Some(Definition::Dynamic(root)) => group_matches(set, root, p, now),
    }
}
