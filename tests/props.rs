//! Property tests: the compiled evaluator (batch and single-person) agrees with the reference
//! interpreter on random cohort sets, persons and event histories; evaluation is deterministic.
//! `PROPTEST_CASES` sets the number of cases (256 by default).

#[path = "support/reference.rs"]
mod reference;

use cohort_engine::time::parse_absolute;
use cohort_engine::{BatchOptions, CohortSet, Dataset, Engine, Scratch, Timestamp};
use proptest::prelude::*;
use reference::RefPerson;
use serde_json::{json, Map, Value};

const HOUR: i64 = 3_600_000_000;
const KEYS: [&str; 4] = ["plan", "age", "when", "v"];
const EVENTS: [&str; 3] = ["a", "b", "c"];

fn now() -> i64 {
    parse_absolute("2024-03-31T12:00:00Z").unwrap()
}

fn person_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("pro")),
        Just(json!("Pro")),
        Just(json!("FREE")),
        Just(json!(5)),
        Just(json!(5.0)),
        Just(json!("5")),
        Just(json!("30")),
        Just(json!(31.5)),
        Just(json!(-2)),
        Just(json!(true)),
        Just(json!("TRUE")),
        Just(json!("false")),
        Just(Value::Null),
        Just(json!("2024-03-30")),
        Just(json!("2024-03-31T12:00:00Z")),
        Just(json!("2024-02-29T12:00:00Z")),
        Just(json!(1711800000)),
        Just(json!("1.2.3")),
        Just(json!("v2.0.1")),
        Just(json!("0.2.5-beta")),
        Just(json!("éclair")),
        Just(json!("ÉCLAIR x5")),
        Just(json!([1, "x"])),
        Just(json!({"a": 1})),
        Just(json!("")),
        // Longer than 16 bytes (the in-register string tests take only shorter ones), and one
        // of exactly 16.
        Just(json!("Professional-Plan-2024")),
        Just(json!("ADA@example.COM.io")),
        Just(json!("Pro-Plan-Monthly")),
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("pro")),
        Just(json!("PRO")),
        Just(json!("free")),
        Just(json!(5)),
        Just(json!(5.0)),
        Just(json!("5")),
        Just(json!(true)),
        Just(json!("true")),
        Just(json!("False")),
        Just(json!("")),
        Just(json!("éclair")),
        Just(json!("x5")),
        Just(json!("professional-plan-2024")),
        Just(json!("PRO-PLAN-MONTHLY")),
    ]
}

fn list_or_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        scalar(),
        proptest::collection::vec(scalar(), 0..4).prop_map(Value::Array)
    ]
}

/// A property filter object (without "type"), with a value its operator accepts.
fn property_filter() -> impl Strategy<Value = Map<String, Value>> {
    let key = proptest::sample::select(&KEYS[..]);
    let op_value = prop_oneof![
        (
            proptest::sample::select(vec!["exact", "is_not", "in", "not_in"]),
            list_or_scalar()
        )
            .prop_map(|(o, v)| (o, v)),
        (
            proptest::sample::select(vec![
                "icontains",
                "not_icontains",
                "icontains_multi",
                "not_icontains_multi"
            ]),
            prop_oneof![
                Just(json!("o")),
                Just(json!("PR")),
                Just(json!("")),
                Just(json!("É")),
                Just(json!(5)),
                Just(json!(["x", "é"])),
                Just(json!("PLAN-")),
                Just(json!("@example.com")),
                Just(json!(["zz", "-monthly"]))
            ]
        )
            .prop_map(|(o, v)| (o, v)),
        (
            proptest::sample::select(vec!["regex", "not_regex"]),
            prop_oneof![
                Just(json!("^p")),
                Just(json!("o$")),
                Just(json!("[0-9]+")),
                Just(json!("(?i)pro")),
                Just(json!(5)),
                Just(json!(["^x", "1\\."]))
            ]
        )
            .prop_map(|(o, v)| (o, v)),
        (
            proptest::sample::select(vec!["gt", "gte", "lt", "lte", "min", "max"]),
            prop_oneof![
                Just(json!(5)),
                Just(json!("30")),
                Just(json!(-1.5)),
                Just(json!(0))
            ]
        )
            .prop_map(|(o, v)| (o, v)),
        (
            proptest::sample::select(vec!["between", "not_between"]),
            prop_oneof![
                Just(json!([5, 30])),
                Just(json!(["5", 5])),
                Just(json!([-3, 0]))
            ]
        )
            .prop_map(|(o, v)| (o, v)),
        (
            proptest::sample::select(vec!["is_set", "is_not_set"]),
            Just(Value::Null)
        )
            .prop_map(|(o, v)| (o, v)),
        (
            proptest::sample::select(vec!["is_date_before", "is_date_after", "is_date_exact"]),
            prop_oneof![
                Just(json!("-1d")),
                Just(json!("-1m")),
                Just(json!("2024-03-30")),
                Just(json!("2024-03-31T12:00:00Z")),
                Just(json!("-2y")),
                Just(json!("-3h"))
            ]
        )
            .prop_map(|(o, v)| (o, v)),
        (
            proptest::sample::select(vec![
                "semver_eq",
                "semver_neq",
                "semver_gt",
                "semver_gte",
                "semver_lt",
                "semver_lte"
            ]),
            prop_oneof![
                Just(json!("1.2.3")),
                Just(json!("2.0.0")),
                Just(json!("0.2")),
                Just(json!(1))
            ]
        )
            .prop_map(|(o, v)| (o, v)),
        (
            Just("semver_tilde"),
            prop_oneof![Just(json!("~1.2")), Just(json!("0.2.0"))]
        )
            .prop_map(|(o, v)| (o, v)),
        (
            Just("semver_caret"),
            prop_oneof![Just(json!("^0.2.1")), Just(json!("1.0.0"))]
        )
            .prop_map(|(o, v)| (o, v)),
        (
            Just("semver_wildcard"),
            prop_oneof![Just(json!("1.*")), Just(json!("2.0.*"))]
        )
            .prop_map(|(o, v)| (o, v)),
    ];
    (key, op_value, proptest::bool::weighted(0.2)).prop_map(|(k, (op, v), neg)| {
        let mut m = Map::new();
        m.insert("key".into(), json!(k));
        m.insert("operator".into(), json!(op));
        if !v.is_null() {
            m.insert("value".into(), v);
        }
        m.insert("negation".into(), json!(neg));
        m
    })
}

fn person_leaf() -> impl Strategy<Value = Value> {
    property_filter().prop_map(|mut m| {
        m.insert("type".into(), json!("person"));
        Value::Object(m)
    })
}

fn stopped_or_restarted() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "stopped_performing_event",
        "restarted_performing_event",
    ])
}

fn behavioral_leaf() -> impl Strategy<Value = Value> {
    let unit = proptest::sample::select(vec!["hour", "day", "week", "month"]);
    let kind = prop_oneof![
        Just(json!({"value": "performed_event"})),
        Just(json!({"value": "performed_event", "explicit_datetime": "-2d"})),
        (proptest::sample::select(vec!["eq", "gt", "gte", "lt", "lte"]), 1u64..4)
            .prop_map(|(o, n)| json!({"value": "performed_event_multiple", "operator": o, "operator_value": n})),
        Just(json!({"value": "performed_event_first_time"})),
        (stopped_or_restarted(), 1u64..3).prop_map(|(v, s)| json!({"value": v, "seq_time_value": s, "seq_time_interval": "hour"})),
        // Calendar units mixed with fixed ones: at now() = 2024-03-31T12:00 these put S before T
        // (52 weeks = 364 days vs 12 months = 366 days back), on T (2 months = 60 days back; 1
        // year vs 12 months) and after T (1 month = 31 days back vs 30 days). The seq-vs-time
        // validation compares fixed seconds, so all are valid.
        (stopped_or_restarted(), proptest::sample::select(vec![
            (52, "week", 12, "month"), (2, "month", 60, "day"), (1, "year", 12, "month"),
            (1, "month", 30, "day"), (1, "year", 52, "week"), (2, "week", 14, "day"),
        ])).prop_map(|(v, (t, tu, s, su))| json!({"value": v, "time_value": t, "time_interval": tu,
            "seq_time_value": s, "seq_time_interval": su})),
        (proptest::sample::select(&EVENTS[..]), 1u64..30)
            .prop_map(|(e, s)| json!({"value": "performed_event_sequence", "seq_event": e, "seq_event_type": "events", "seq_time_value": s, "seq_time_interval": "hour"})),
        // Up to 11 periods: past 7 the evaluator bisects the periods' starts in chunks.
        (proptest::sample::select(vec!["gte", "lt", "eq"]), 1u64..3, 1u64..3, prop_oneof![3 => 0u64..2, 1 => 5u64..10]).prop_map(|(o, v, m, extra)| json!({
            "value": "performed_event_regularly", "operator": o, "operator_value": v,
            "min_periods": m, "total_periods": m + extra})),
    ];
    let filters = proptest::collection::vec(property_filter(), 0..2);
    (
        proptest::sample::select(&EVENTS[..]),
        kind,
        1u64..30,
        unit,
        filters,
        proptest::bool::weighted(0.2),
    )
        .prop_map(|(event, kind, n, unit, filters, neg)| {
            let mut m = kind.as_object().unwrap().clone();
            m.insert("type".into(), json!("behavioral"));
            m.insert("key".into(), json!(event));
            m.insert("event_type".into(), json!("events"));
            if !m.contains_key("time_value") {
                m.insert("time_value".into(), json!(n));
                m.insert("time_interval".into(), json!(unit));
            }
            m.insert("negation".into(), json!(neg));
            let filters: Vec<Value> = filters
                .into_iter()
                .map(|mut f| {
                    f.insert("type".into(), json!("event"));
                    Value::Object(f)
                })
                .collect();
            m.insert("event_filters".into(), Value::Array(filters));
            // stopped/restarted with an hour seq need seq ≤ time; make time at least a day.
            if m.get("seq_time_interval").is_some_and(|u| u == "hour")
                && matches!(
                    m["value"].as_str(),
                    Some("stopped_performing_event" | "restarted_performing_event")
                )
            {
                m.insert("time_interval".into(), json!("day"));
            }
            Value::Object(m)
        })
}

/// A leaf; `refs` is how many earlier cohorts (ids 0..refs) may be referenced.
fn leaf(refs: i64) -> BoxedStrategy<Value> {
    let base = prop_oneof![3 => person_leaf(), 2 => behavioral_leaf()];
    if refs == 0 {
        return base.boxed();
    }
    let reference = (0..refs, proptest::sample::select(vec!["in", "not_in"]), proptest::bool::weighted(0.2))
        .prop_map(|(t, op, neg)| json!({"type": "cohort", "key": "id", "value": t, "operator": op, "negation": neg}));
    prop_oneof![4 => base, 1 => reference].boxed()
}

fn tree(refs: i64) -> impl Strategy<Value = Value> {
    leaf(refs).prop_recursive(3, 12, 4, move |inner| {
        (
            proptest::sample::select(vec!["AND", "OR"]),
            proptest::collection::vec(inner, 1..4),
        )
            .prop_map(|(t, values)| json!({"type": t, "values": values}))
    })
}

fn cohorts() -> impl Strategy<Value = Vec<Value>> {
    // Cohort 0 is static; 1..=3 are dynamic and may reference any lower id (so no cycles).
    let dynamic = (1i64..=3).map(|i| {
        (tree(i), proptest::sample::select(vec!["AND", "OR"])).prop_map(
            move |(t, op)| json!({"id": i, "filters": {"properties": {"type": op, "values": [t]}}}),
        )
    });
    let members = proptest::collection::vec(
        proptest::sample::select(vec!["p0", "p1", "d2a", "p3", "nobody"]),
        0..3,
    );
    (members, dynamic.collect::<Vec<_>>()).prop_map(|(m, mut d)| {
        d.insert(
            0,
            json!({"id": 0, "is_static": true, "static_person_ids": m}),
        );
        d
    })
}

fn event() -> impl Strategy<Value = (String, i64, Map<String, Value>)> {
    // Hour offsets around now, including exact window bounds (±1 µs nudges).
    let offset = prop_oneof![
        (-800i64..3).prop_map(|h| h * HOUR),
        (
            // …and the calendar bounds of the stopped/restarted mixes (60 days, 336 h = 2
            // weeks, 364 and 366 days back) and an event before all of them.
            proptest::sample::select(vec![
                1i64, 2, 24, 48, 168, 336, 720, 744, 1440, 8736, 8784, 9000
            ]),
            -1i64..=1
        )
            .prop_map(|(h, d)| -h * HOUR + d),
    ];
    let props =
        proptest::collection::btree_map(proptest::sample::select(&KEYS[..]), person_value(), 0..3);
    (proptest::sample::select(&EVENTS[..]), offset, props).prop_map(|(e, off, props)| {
        (
            e.to_string(),
            now() + off,
            props.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        )
    })
}

fn persons() -> impl Strategy<Value = Vec<RefPerson>> {
    let person = (
        proptest::collection::btree_map(proptest::sample::select(&KEYS[..]), person_value(), 0..4),
        proptest::collection::vec(event(), 0..8),
    );
    proptest::collection::vec(person, 1..5).prop_map(|ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, (props, events))| RefPerson {
                id: format!("p{i}"),
                distinct_ids: vec![format!("d{i}a"), format!("d{i}b")],
                properties: props.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                events,
            })
            .collect()
    })
}

fn jsonl(persons: &[RefPerson]) -> (String, String) {
    let mut p = String::new();
    let mut e = String::new();
    for person in persons {
        p += &json!({"id": person.id, "distinct_ids": person.distinct_ids, "properties": person.properties}).to_string();
        p.push('\n');
        for (k, (name, ts, props)) in person.events.iter().enumerate() {
            // Alternate distinct ids so all contribute; alternate timestamp formats too.
            let did = &person.distinct_ids[k % person.distinct_ids.len()];
            let timestamp = if ts % 1_000_000 == 0 && k % 2 == 0 {
                json!(ts / 1_000_000)
            } else {
                json!(cohort_engine::time::format_micros(*ts))
            };
            e += &json!({"distinct_id": did, "event": name, "timestamp": timestamp, "properties": props}).to_string();
            e.push('\n');
        }
    }
    (p, e)
}

/// Walks an explanation alongside the cohort's AST: group results combine their children, leaf
/// results equal the reference interpreter's.
fn check_explanation(
    set: &CohortSet,
    id: i64,
    node: &cohort_engine::ExplainNode,
    person: &RefPerson,
) -> Result<(), TestCaseError> {
    use cohort_engine::internal::ast::{Definition, Leaf, Node};
    fn walk(
        set: &CohortSet,
        ast: &Node,
        ex: &cohort_engine::ExplainNode,
        p: &RefPerson,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            &ex.path,
            match ast {
                Node::Group(g) => &g.path,
                Node::Leaf(Leaf::Person(l)) => &l.path,
                Node::Leaf(Leaf::Behavioral(l)) => &l.path,
                Node::Leaf(Leaf::Cohort(l)) => &l.path,
            }
        );
        match ast {
            Node::Group(g) => {
                prop_assert_eq!(g.children.len(), ex.children.len());
                for (a, e) in g.children.iter().zip(&ex.children) {
                    walk(set, a, e, p)?;
                }
            }
            Node::Leaf(Leaf::Person(f)) => {
                prop_assert_eq!(
                    ex.result,
                    reference::property_matches(f, &p.properties, now()),
                    "{}",
                    ex.path
                )
            }
            Node::Leaf(Leaf::Behavioral(b)) => {
                prop_assert_eq!(
                    ex.result,
                    reference::behavioral_matches(b, p, now()),
                    "{}",
                    ex.path
                )
            }
            Node::Leaf(Leaf::Cohort(c)) => {
                let member = reference::member(set, c.target, p, now());
                prop_assert_eq!(ex.result, (member != c.not_in) != c.negation, "{}", ex.path);
            }
        }
        Ok(())
    }
    if let Some(Definition::Dynamic(root)) = set.get(id).map(|c| c.definition()) {
        walk(set, &Node::Group(root.clone()), node, person)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { max_global_rejects: 100_000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_evaluator_agrees_with_reference(cohorts in cohorts(), mut persons in persons()) {
        // Timestamps go through the files as whole seconds: truncate the reference's copy alike.
        for p in &mut persons {
            for e in &mut p.events {
                e.1 = e.1 / 1_000_000 * 1_000_000;
            }
        }
        let text = Value::Array(cohorts).to_string();
        let set = match CohortSet::from_json(&text) {
            Ok(s) => s,
            Err(e) => {
                // Only the negated-root rule may reject generated cohorts.
                prop_assert!(e.iter().all(|e| e.message().contains("cannot be negated")), "{e}");
                return Err(TestCaseError::reject("negated root"));
            }
        };
        // JSON → AST → JSON → AST gives the same AST.
        let printed = Value::Array(set.cohorts().iter().map(|c| c.to_json()).collect()).to_string();
        let reparsed = CohortSet::from_json(&printed).unwrap();
        prop_assert_eq!(set.cohorts(), reparsed.cohorts());
        let (p, e) = jsonl(&persons);
        let data = Dataset::from_jsonl(&p, &e).unwrap();
        let batch = data.evaluate(&set, now(), &BatchOptions::default()).unwrap();
        let again = data.evaluate(&set, now(), &BatchOptions::default().threads(3)).unwrap();
        prop_assert_eq!(&batch, &again, "deterministic, whatever the thread count");
        let engine = Engine::new(&set).unwrap();
        let mut scratch = Scratch::new();
        let program = data.compile(&set).unwrap();
        for (index, person) in persons.iter().enumerate() {
            for (id, members) in &batch {
                let one = data.matches(&program, *id, index, now(), &mut scratch).unwrap();
                prop_assert_eq!(one, members.contains(&person.id), "dataset per-person path, cohort {}", id);
            }
        }
        for person in &persons {
            let dids: Vec<&str> = person.distinct_ids.iter().map(String::as_str).collect();
            let single = engine.person(&person.id, &dids, &person.properties);
            let mut history = engine.history();
            for (name, ts, props) in &person.events {
                engine.record(&mut history, name, *ts, props);
            }
            for (id, members) in &batch {
                let expected = reference::member(&set, *id, person, now());
                prop_assert_eq!(members.contains(&person.id), expected, "batch, cohort {} person {}\n{}", id, person.id, text);
                let got = engine.matches(*id, &single, &history, now(), &mut scratch).unwrap();
                prop_assert_eq!(got, expected, "single, cohort {} person {}", id, person.id);
                // The explanation agrees with the evaluator, node by node with the reference.
                let explanation = engine.explain(*id, &single, &history, now(), &mut scratch).unwrap();
                prop_assert_eq!(explanation.result, expected);
                let reparsed: Value = serde_json::from_str(&explanation.to_json_string()).unwrap();
                prop_assert_eq!(reparsed, explanation.to_json());
                check_explanation(&set, *id, &explanation.tree, person)?;
                // The horizon: the same result strictly before it, a different one at it.
                let horizon = engine.horizon(*id, &single, &history, now(), &mut scratch).unwrap();
                prop_assert_eq!(horizon, explanation.horizon);
                let horizon = horizon.map(Timestamp::as_micros);
                let probe = |t: i64| reference::member(&set, *id, person, t);
                match horizon {
                    Some(h) => {
                        prop_assert!(h > now());
                        for t in [now() + 1, h - 1, now() + (h - now()) / 2, now() + (h - now()) / 3] {
                            if t > now() && t < h {
                                prop_assert_eq!(probe(t), expected, "cohort {} changes at {} before horizon {}", id, t, h);
                            }
                        }
                        prop_assert_ne!(probe(h), expected, "cohort {}: nothing changes at horizon {}", id, h);
                    }
                    None => {
                        for days in [1, 30, 400, 4000] {
                            let t = now() + days * 24 * HOUR;
                            prop_assert_eq!(probe(t), expected, "cohort {} changes at +{} days with no horizon", id, days);
                        }
                    }
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
enum Step {
    Event(usize, (String, i64, Map<String, Value>)),
    Set(usize, Map<String, Value>),
    SetNew(Map<String, Value>),
    Unset(usize, Vec<String>),
    Delete(usize),
    Advance(i64),
    /// An event for a distinct id never seen: it creates that person.
    EventNew((String, i64, Map<String, Value>)),
    /// The whole cohort set replaced (a live update), persons kept.
    Replace(Vec<Value>),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    fn props() -> impl Strategy<Value = Map<String, Value>> {
        proptest::collection::btree_map(proptest::sample::select(&KEYS[..]), person_value(), 0..3)
            .prop_map(|m| {
                m.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Map<String, Value>>()
            })
    }
    let step = prop_oneof![
        3 => (0usize..5, event()).prop_map(|(p, e)| Step::Event(p, e)),
        2 => (0usize..5, props()).prop_map(|(p, m)| Step::Set(p, m)),
        1 => props().prop_map(Step::SetNew),
        1 => (0usize..5, proptest::collection::vec(proptest::sample::select(&KEYS[..]), 1..3))
            .prop_map(|(p, k)| Step::Unset(p, k.into_iter().map(str::to_string).collect())),
        1 => (0usize..5).prop_map(Step::Delete),
        3 => prop_oneof![(0i64..300).prop_map(|h| h * HOUR), (0i64..3).prop_map(|u| u), Just(24 * HOUR - 1)]
            .prop_map(Step::Advance),
        1 => event().prop_map(Step::EventNew),
        1 => cohorts().prop_map(Step::Replace),
    ];
    proptest::collection::vec(step, 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig { max_global_rejects: 100_000, ..ProptestConfig::default() })]

    /// After every change the tracker's memberships equal a fresh evaluation of the changed state,
    /// and the transitions it reports are exactly the differences.
    #[test]
    fn tracker_matches_fresh_evaluation(cohorts in cohorts(), persons in persons(), steps in steps()) {
        use cohort_engine::{Change, Tracker, Update};
        let text = Value::Array(cohorts).to_string();
        let Ok(mut set) = CohortSet::from_json(&text) else {
            return Err(TestCaseError::reject("negated root"));
        };
        let mut persons: Vec<RefPerson> = persons
            .into_iter()
            .map(|mut p| {
                for e in &mut p.events {
                    e.1 = e.1 / 1_000_000 * 1_000_000;
                }
                p
            })
            .collect();
        let (p, e) = jsonl(&persons);
        let data = Dataset::from_jsonl(&p, &e).unwrap();
        let mut tracker = Tracker::from_dataset(Engine::new(&set).unwrap(), &data, now());
        let ids_of = |set: &CohortSet| -> Vec<i64> {
            set.cohorts().iter().filter(|c| !c.is_deleted()).map(|c| c.id).collect()
        };
        let snapshot = |set: &CohortSet, persons: &[RefPerson], t: i64| -> Vec<(i64, String)> {
            let mut out = Vec::new();
            for id in ids_of(set) {
                for p in persons {
                    if reference::member(set, id, p, t) {
                        out.push((id, p.id.clone()));
                    }
                }
            }
            out.sort();
            out
        };
        // The transitions from one membership snapshot to the next, sorted.
        let diff = |before: &[(i64, String)], after: &[(i64, String)]| {
            let mut out: Vec<(i64, String, Change)> = Vec::new();
            out.extend(after.iter().filter(|x| !before.contains(x)).map(|x| (x.0, x.1.clone(), Change::Entered)));
            out.extend(before.iter().filter(|x| !after.contains(x)).map(|x| (x.0, x.1.clone(), Change::Exited)));
            out.sort();
            out
        };
        let ids = ids_of(&set);
        let mut before = snapshot(&set, &persons, now());
        for id in &ids {
            let want: Vec<String> = before.iter().filter(|(c, _)| c == id).map(|(_, p)| p.clone()).collect();
            prop_assert_eq!(tracker.members(*id), want, "initial, cohort {}", id);
        }
        let mut new_persons = 0;
        // Time then runs on past a week and past a year: every horizon the changes set (an
        // event's window ending, a date passing) comes due at least once.
        let run_out = [Step::Advance(169 * HOUR), Step::Advance(9000 * HOUR)];
        for step in steps.into_iter().chain(run_out) {
            let update = match step {
                Step::Event(i, (name, off, props)) => {
                    let Some(p) = persons.get_mut(i) else { continue };
                    let ts = tracker.now().as_micros() + (off - now()) / 1_000_000 * 1_000_000;
                    p.events.push((name.clone(), ts, props.clone()));
                    Update::Event { distinct_id: p.distinct_ids[0].clone(), event: name, timestamp: Timestamp::from_micros(ts), properties: props }
                }
                Step::Set(i, props) => {
                    let Some(p) = persons.get_mut(i) else { continue };
                    for (k, v) in &props {
                        p.properties.insert(k.clone(), v.clone());
                    }
                    Update::Set { distinct_id: p.distinct_ids.last().unwrap().clone(), properties: props }
                }
                Step::SetNew(props) => {
                    new_persons += 1;
                    let id = format!("new{new_persons}");
                    persons.push(RefPerson { id: id.clone(), distinct_ids: vec![id.clone()], properties: props.clone(), events: vec![] });
                    Update::Set { distinct_id: id, properties: props }
                }
                Step::Unset(i, keys) => {
                    let Some(p) = persons.get_mut(i) else { continue };
                    for k in &keys {
                        p.properties.remove(k);
                    }
                    Update::Unset { distinct_id: p.distinct_ids[0].clone(), keys }
                }
                Step::Delete(i) => {
                    if i >= persons.len() {
                        continue;
                    }
                    let p = persons.remove(i);
                    Update::Delete { distinct_id: p.distinct_ids[0].clone() }
                }
                Step::Advance(d) => Update::Now(tracker.now().saturating_add_micros(d)),
                Step::EventNew((name, off, props)) => {
                    new_persons += 1;
                    let id = format!("ev{new_persons}");
                    let ts = tracker.now().as_micros() + (off - now()) / 1_000_000 * 1_000_000;
                    persons.push(RefPerson { id: id.clone(), distinct_ids: vec![id.clone()], properties: Map::new(), events: vec![(name.clone(), ts, props.clone())] });
                    Update::Event { distinct_id: id, event: name, timestamp: Timestamp::from_micros(ts), properties: props }
                }
                Step::Replace(cohorts) => {
                    let Ok(next) = CohortSet::from_json(&Value::Array(cohorts).to_string()) else { continue };
                    set = next;
                    let transitions = tracker.set_engine(Engine::new(&set).unwrap());
                    let after = snapshot(&set, &persons, tracker.now().as_micros());
                    // Cohorts of the old set that are gone: their members exit.
                    let expected = diff(&before, &after);
                    let got: Vec<(i64, String, Change)> = transitions.iter().map(|t| (t.cohort, t.person.clone(), t.change)).collect();
                    prop_assert_eq!(got, expected, "after replacing the set\n{}", set.cohorts().len());
                    before = after;
                    continue;
                }
            };
            let description = format!("{update:?}");
            let transitions = tracker.apply(update).unwrap();
            let after = snapshot(&set, &persons, tracker.now().as_micros());
            let expected = diff(&before, &after);
            let got: Vec<(i64, String, Change)> = transitions.iter().map(|t| (t.cohort, t.person.clone(), t.change)).collect();
            prop_assert_eq!(got, expected, "after {}\n{}", description, text);
            prop_assert!(transitions.iter().all(|t| t.at == tracker.now()));
            before = after;
        }
        // At the end, the tracker equals a full batch evaluation of the changed state.
        let (p, e) = jsonl(&persons);
        let data = Dataset::from_jsonl(&p, &e).unwrap();
        let batch = data.evaluate(&set, tracker.now(), &BatchOptions::default()).unwrap();
        for (id, members) in &batch {
            prop_assert_eq!(&tracker.members(*id), members, "final state, cohort {}", id);
        }
    }
}

/// Strings for the large columns: ASCII and e-mail-like, Unicode whose case folding changes its
/// length or is special (`İ`, `ß`, final sigma, the Kelvin sign, `ǅ`), digits, the empty string.
const FRAGMENTS: [&str; 16] = [
    "a",
    "Pro",
    "x y",
    "b@gmail.com",
    "zed@yahoo.com",
    "İstanbul",
    "STRASSE",
    "straße",
    "ΣΟΦΟΣ",
    "σοφος",
    "\u{212A}elvin",
    "ǅemal",
    "café",
    "42",
    "",
    "naïve Café",
];

/// Regex edge cases: both anchors with end literals (the automata's literal filter), `(?i)`
/// over Unicode, Unicode word boundaries (no lazy DFA: the regexes decide), multi-line, empty
/// matches, `\z`, negated classes.
const PATTERNS: [&str; 14] = [
    r"^[a-m][^@]*@(gmail|yahoo)\.com$",
    r"(?i)straße",
    r"\bcafé\b",
    r"(?i)^k",
    r"ς$",
    r"^\d+$",
    r"^$",
    r".",
    r"\Bx",
    r"(?m)^y",
    r"(?i)σοφος",
    r"@gmail\.com\z",
    r"é\d",
    r"[^a-z]\d{2}$",
];

/// `icontains` needles: case folds that change length, sigma, the Kelvin sign, empty, numbers.
const NEEDLES: [&str; 12] = [
    "a", "PRO", "ss", "ß", "σ", "k", "İ", "i̇", "CAFÉ", "", "@GMAIL", "4",
];

/// One leaf on the large column `s`: (operator, argument index, negation, narrowed by `t`).
fn column_leaf(op: usize, arg: usize, negation: bool) -> Value {
    let (operator, value) = match op % 8 {
        0 => ("exact", json!([FRAGMENTS[arg % FRAGMENTS.len()]])),
        1 => ("is_not", json!(FRAGMENTS[arg % FRAGMENTS.len()])),
        2 => ("icontains", json!(NEEDLES[arg % NEEDLES.len()])),
        3 => ("not_icontains", json!(NEEDLES[arg % NEEDLES.len()])),
        4 => ("regex", json!(PATTERNS[arg % PATTERNS.len()])),
        5 => ("not_regex", json!(PATTERNS[arg % PATTERNS.len()])),
        6 => ("is_set", json!("is_set")),
        _ => ("is_not_set", json!("is_not_set")),
    };
    json!({"type": "person", "key": "s", "operator": operator, "value": value, "negation": negation})
}

/// Persons with a large column `s` (`unique` percent of the values unique, the others from a
/// few fragments; some numbers and booleans; `missing` percent without the key) and a small
/// column `t`, from a seed.
fn large_column_persons(
    n: usize,
    unique: u64,
    missing: u64,
    pool: &[usize],
    seed: u64,
) -> Vec<RefPerson> {
    let mut state = seed | 1;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..n)
        .map(|i| {
            let mut properties = Map::new();
            let r = next();
            if r % 100 >= missing {
                let frag = FRAGMENTS[pool[(r >> 8) as usize % pool.len()]];
                let value = match (r >> 20) % 100 {
                    x if x < unique => match (r >> 32) % 3 {
                        0 => json!(format!("{frag}{i}")),
                        1 => json!(format!("{i}{frag}")),
                        _ => json!(format!("{}{frag}", (b'a' + (i % 26) as u8) as char)),
                    },
                    x if x < unique + 2 => json!(i % 7),
                    x if x < unique + 3 => json!(i % 2 == 0),
                    _ => json!(frag),
                };
                properties.insert("s".into(), value);
            }
            if r >> 40 & 3 != 3 {
                properties.insert("t".into(), json!(["a", "b", "c"][(r >> 42) as usize % 3]));
            }
            RefPerson {
                id: format!("p{i}"),
                distinct_ids: vec![format!("d{i}")],
                properties,
                events: Vec::new(),
            }
        })
        .collect()
}

proptest! {
    // Each case loads over 8,000 persons: a few cases, not PROPTEST_CASES.
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The batch kernels over a large column — code tables over the whole dictionary or over a
    /// share's span of codes, the case-folded and raw arenas, lazy DFAs with their end-literal
    /// filter, the values of a narrowed mask only, presence bitsets — agree with the per-person
    /// path for every person and with the reference interpreter for a sample of them, on 1 and
    /// 2 threads.
    #[test]
    fn batch_kernels_agree_with_reference_over_large_columns(
        n in 8_200usize..9_000,
        unique in proptest::sample::select(vec![0u64, 40, 95]),
        missing in proptest::sample::select(vec![0u64, 10, 25]),
        pool in proptest::collection::vec(0..FRAGMENTS.len(), 1..6),
        seed in any::<u64>(),
        leaves in proptest::collection::vec((0usize..8, 0usize..64, any::<bool>(), any::<bool>()), 1..7),
    ) {
        let persons = large_column_persons(n, unique, missing, &pool, seed);
        let narrow = json!({"type": "person", "key": "t", "operator": "exact", "value": ["a", "b"]});
        let cohorts: Vec<Value> = leaves
            .iter()
            .enumerate()
            .map(|(i, &(op, arg, negation, narrowed))| {
                let mut values = vec![column_leaf(op, arg, negation)];
                if narrowed || negation {
                    values.push(narrow.clone());
                }
                json!({"id": i + 1, "filters": {"properties": {"type": "AND", "values": values}}})
            })
            .collect();
        let set = CohortSet::from_json(&Value::Array(cohorts).to_string()).unwrap();
        let (p, e) = jsonl(&persons);
        let data = Dataset::from_jsonl(&p, &e).unwrap();
        let program = data.compile(&set).unwrap();
        let one = data.evaluate(&set, now(), &BatchOptions::default().threads(1)).unwrap();
        let two = data.evaluate(&set, now(), &BatchOptions::default().threads(2)).unwrap();
        prop_assert_eq!(&one, &two);
        let mut scratch = Scratch::new();
        for (id, members) in &one {
            for (index, person) in persons.iter().enumerate() {
                let listed = members.binary_search(&person.id).is_ok();
                let single = data.matches(&program, *id, index, now(), &mut scratch).unwrap();
                prop_assert_eq!(listed, single, "cohort {}, person {}", id, person.id);
                if index % 53 == 0 {
                    let expected = reference::member(&set, *id, person, now());
                    prop_assert_eq!(listed, expected, "reference, cohort {}, person {}", id, person.id);
                }
            }
        }
    }
}
