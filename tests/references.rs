//! Cohort references through the library: evaluation order and memoisation, long chains, safe
//! updates, static members, graph queries, and a property test of cycle detection.

use std::collections::HashSet;

use cohort_engine::time::parse_absolute;
use cohort_engine::{BatchOptions, CohortSet, Dataset, Engine, ErrorKind, LiveEngine, Scratch};
use proptest::prelude::*;
use serde_json::{json, Value};

fn leaf_ref(target: i64, negation: bool) -> Value {
    json!({"type": "cohort", "key": "id", "value": target, "negation": negation})
}

fn is_set(key: &str) -> Value {
    json!({"type": "person", "key": key, "operator": "is_set"})
}

fn cohort(id: i64, values: Vec<Value>) -> Value {
    json!({"id": id, "filters": {"properties": {"type": "AND", "values": values}}})
}

fn now() -> i64 {
    parse_absolute("2024-06-15T12:00:00Z").unwrap()
}

#[test]
fn diamond_evaluates_the_shared_cohort_once() {
    // 1 → 2, 1 → 3, 2 → 4, 3 → 4: cohort 4 is computed once per person.
    let set = CohortSet::from_json(
        &json!([
            cohort(1, vec![leaf_ref(2, false), leaf_ref(3, false)]),
            cohort(2, vec![leaf_ref(4, false), is_set("b")]),
            cohort(3, vec![leaf_ref(4, false), is_set("c")]),
            cohort(4, vec![is_set("a")]),
        ])
        .to_string(),
    )
    .unwrap();
    let engine = Engine::new(&set).unwrap();
    let props = json!({"a": 1, "b": 1, "c": 1});
    let person = engine.person("p", &[], props.as_object().unwrap());
    let mut scratch = Scratch::new();
    assert!(engine
        .matches(1, &person, &engine.history(), now(), &mut scratch)
        .unwrap());
    assert_eq!(scratch.cohorts_evaluated(), 4, "1, 2, 3 and 4 once each");
    let props = json!({"b": 1, "c": 1});
    let person = engine.person("q", &[], props.as_object().unwrap());
    assert!(!engine
        .matches(1, &person, &engine.history(), now(), &mut scratch)
        .unwrap());
}

fn chain(n: i64) -> String {
    // Cohort i references i + 1; the last one is a person leaf.
    let mut cohorts: Vec<Value> = (0..n - 1)
        .map(|i| cohort(i, vec![leaf_ref(i + 1, false)]))
        .collect();
    cohorts.push(cohort(n - 1, vec![is_set("deep")]));
    Value::Array(cohorts).to_string()
}

#[test]
fn ten_thousand_cohort_chain_loads_and_evaluates() {
    let n = 10_000;
    let set = CohortSet::from_json(&chain(n)).unwrap();
    let engine = Engine::new(&set).unwrap();
    let mut scratch = Scratch::new();
    let yes = json!({"deep": true});
    let person = engine.person("p", &[], yes.as_object().unwrap());
    assert!(engine
        .matches(0, &person, &engine.history(), now(), &mut scratch)
        .unwrap());
    let person = engine.person("q", &[], &Default::default());
    assert!(!engine
        .matches(0, &person, &engine.history(), now(), &mut scratch)
        .unwrap());
    let data = Dataset::from_jsonl(
        "{\"id\": \"p\", \"properties\": {\"deep\": 1}}\n{\"id\": \"q\"}\n",
        "",
    )
    .unwrap();
    let opts = BatchOptions::default().cohorts([0, 5000]);
    let members = data.evaluate(&set, now(), &opts).unwrap();
    assert_eq!(members[&0], ["p"]);
    assert_eq!(members[&5000], ["p"]);
}

#[test]
fn ten_thousand_cohort_cycle_is_named() {
    let n = 10_000i64;
    let mut cohorts: Vec<Value> = (0..n)
        .map(|i| cohort(i, vec![leaf_ref((i + 1) % n, false)]))
        .collect();
    cohorts.push(cohort(n, vec![is_set("x")]));
    let errors = CohortSet::from_json(&Value::Array(cohorts).to_string()).unwrap_err();
    assert_eq!(errors.len(), 1);
    let e = &errors.0[0];
    assert_eq!(e.kind(), ErrorKind::Cycle);
    assert!(e.to_string().starts_with("cycle: cohort 0 → 1 → 2 → "));
    assert!(e.to_string().ends_with(" → 9999 → 0"));
}

#[test]
fn rejected_updates_leave_the_set_untouched() {
    let set = CohortSet::from_json(
        &json!([
            cohort(1, vec![leaf_ref(2, false), is_set("a")]),
            cohort(2, vec![is_set("b")])
        ])
        .to_string(),
    )
    .unwrap();
    let before = format!("{:?}", set.cohorts());

    // A cycle: 2 → 1 → 2.
    let err = set
        .upsert(&cohort(2, vec![leaf_ref(1, true), is_set("b")]))
        .unwrap_err();
    assert_eq!(err.to_string(), "cycle: cohort 1 → 2 → 1");
    // An unknown reference.
    let err = set
        .upsert(&cohort(3, vec![leaf_ref(99, false)]))
        .unwrap_err();
    assert_eq!(err.0[0].kind(), ErrorKind::UnknownCohort);
    // An invalid filter.
    let err = set
        .upsert(&json!({"id": 2, "filters": {"properties": {"type": "XOR", "values": []}}}))
        .unwrap_err();
    assert!(err.iter().all(|e| e.kind() == ErrorKind::InvalidFilter));
    // Deleting a referenced cohort is refused and names the referrer.
    let err = set.upsert(&json!({"id": 2, "deleted": true})).unwrap_err();
    assert_eq!(
        err.to_string(),
        "in_use: cohort 2: cohort 2 is used by cohort 1: remove those references before deleting it"
    );
    assert_eq!(
        format!("{:?}", set.cohorts()),
        before,
        "the original set is unchanged"
    );

    // A good update replaces the cohort and increments its version.
    let updated = set.upsert(&cohort(2, vec![is_set("c")])).unwrap();
    assert_eq!(updated.get(2).unwrap().version, 2);
    assert_eq!(set.get(2).unwrap().version, 1);
    // Deleting an unreferenced cohort works; restoring it is validated again.
    let updated = updated.upsert(&cohort(1, vec![is_set("a")])).unwrap();
    let deleted = updated.upsert(&json!({"id": 2, "deleted": true})).unwrap();
    assert!(deleted.get(2).unwrap().is_deleted());
    let with_ref = deleted
        .upsert(&cohort(3, vec![leaf_ref(2, false), is_set("a")]))
        .unwrap();
    let err = with_ref
        .upsert(&cohort(2, vec![leaf_ref(3, false)]))
        .unwrap_err();
    assert_eq!(err.to_string(), "cycle: cohort 2 → 3 → 2");
}

#[test]
fn live_engine_swaps_whole_engines() {
    let live = LiveEngine::new(
        Engine::from_json(&json!([cohort(1, vec![is_set("a")])]).to_string()).unwrap(),
    );
    let old = live.snapshot();
    assert_eq!(live.upsert(&cohort(1, vec![is_set("b")])).unwrap(), 2);
    assert!(live.upsert(&cohort(1, vec![leaf_ref(1, false)])).is_err());
    let new = live.snapshot();
    let props = json!({"a": 1});
    let mut s = Scratch::new();
    let p_old = old.person("p", &[], props.as_object().unwrap());
    let p_new = new.person("p", &[], props.as_object().unwrap());
    assert!(
        old.matches(1, &p_old, &old.history(), now(), &mut s)
            .unwrap(),
        "old snapshot keeps its meaning"
    );
    assert!(!new
        .matches(1, &p_new, &new.history(), now(), &mut s)
        .unwrap());
}

#[test]
fn static_members_through_the_library() {
    let set = CohortSet::from_json(
        &json!([
            {"id": 1, "is_static": true, "static_person_ids": ["p1"]},
            cohort(2, vec![leaf_ref(1, false), is_set("a")]),
        ])
        .to_string(),
    )
    .unwrap();
    let data = Dataset::from_jsonl(
        "{\"id\": \"p1\", \"distinct_ids\": [\"d1\"], \"properties\": {\"a\": 1, \"email\": \"one@x.io\"}}\n\
         {\"id\": \"p2\", \"distinct_ids\": [\"d2\"], \"properties\": {\"a\": 1, \"email\": \"Two@X.io\"}}\n\
         {\"id\": \"p3\", \"properties\": {}}\n",
        "",
    )
    .unwrap();
    let eval = |s: &CohortSet| data.evaluate(s, now(), &BatchOptions::default()).unwrap();
    assert_eq!(eval(&set)[&2], ["p1"]);
    let added = set
        .add_static_members(1, &["d2".to_string(), "nobody".to_string()])
        .unwrap();
    assert_eq!(eval(&added)[&1], ["p1", "p2"]);
    assert_eq!(eval(&added)[&2], ["p1", "p2"]);
    let removed = added.remove_static_members(1, &["p1".to_string()]).unwrap();
    assert_eq!(eval(&removed)[&1], ["p2"]);
    let csv = data
        .static_members_from_csv("email\ntwo@x.io\n\"ONE@x.io\"\nmissing@x.io\n")
        .unwrap();
    assert_eq!(csv.person_ids, ["p2", "p1"]);
    assert_eq!(csv.unmatched, 1);
    let replaced = set.with_static_members(1, csv.person_ids).unwrap();
    assert_eq!(eval(&replaced)[&1], ["p1", "p2"]);
    assert!(set.with_static_members(2, vec![]).is_err(), "2 is dynamic");
    assert!(set.add_static_members(9, &[]).is_err(), "9 does not exist");
}

#[test]
fn graph_queries() {
    let set = CohortSet::from_json(
        &json!([
            cohort(1, vec![leaf_ref(2, false), is_set("a")]),
            cohort(2, vec![leaf_ref(3, true), is_set("a")]),
            cohort(3, vec![{
                json!({"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event",
                       "time_value": 7, "time_interval": "day"})
            }]),
            cohort(4, vec![is_set("a")]),
            cohort(5, vec![leaf_ref(4, false)]),
        ])
        .to_string(),
    )
    .unwrap();
    assert_eq!(set.dependencies(1), [2, 3]);
    assert_eq!(set.dependencies(4), Vec::<i64>::new());
    assert_eq!(set.dependents(3), [1, 2]);
    assert_eq!(set.direct_dependents(3), [2]);
    assert!(set.needs_events(1) && set.needs_events(3));
    assert!(!set.needs_events(4) && !set.needs_events(5));
}

/// Does the graph (edges i → j) have a cycle? Brute force: can any node reach itself?
fn has_cycle(n: usize, edges: &[(usize, usize)]) -> bool {
    (0..n).any(|start| {
        let mut seen = HashSet::new();
        let mut stack: Vec<usize> = edges.iter().filter(|e| e.0 == start).map(|e| e.1).collect();
        while let Some(v) = stack.pop() {
            if v == start {
                return true;
            }
            if seen.insert(v) {
                stack.extend(edges.iter().filter(|e| e.0 == v).map(|e| e.1));
            }
        }
        false
    })
}

proptest! {
    #[test]
    fn rejected_exactly_when_a_cycle_exists(
        n in 1usize..9,
        raw_edges in proptest::collection::vec((0usize..9, 0usize..9, any::<bool>()), 0..16),
    ) {
        let edges: Vec<(usize, usize)> = raw_edges.iter().map(|&(a, b, _)| (a % n, b % n)).collect();
        let cohorts: Vec<Value> = (0..n)
            .map(|i| {
                let mut values = vec![is_set("x")];
                for (k, &(a, b)) in edges.iter().enumerate() {
                    if a == i {
                        values.push(leaf_ref(b as i64, raw_edges[k].2));
                    }
                }
                cohort(i as i64, values)
            })
            .collect();
        let result = CohortSet::from_json(&Value::Array(cohorts).to_string());
        prop_assert_eq!(result.is_err(), has_cycle(n, &edges));
        match result {
            Err(errors) => prop_assert!(errors.iter().all(|e| e.kind() == ErrorKind::Cycle)),
            Ok(set) => {
                // Evaluation of every cohort for a person with "x" set: each reference must see its
                // target's final value, so the batch (dependency order) and single-person (lazy)
                // paths agree.
                let data = Dataset::from_jsonl("{\"id\": \"p\", \"properties\": {\"x\": 1}}\n", "").unwrap();
                let batch = data.evaluate(&set, now(), &BatchOptions::default()).unwrap();
                let engine = Engine::new(&set).unwrap();
                let props = json!({"x": 1});
                let person = engine.person("p", &[], props.as_object().unwrap());
                let mut scratch = Scratch::new();
                for (id, members) in &batch {
                    let single = engine.matches(*id, &person, &engine.history(), now(), &mut scratch).unwrap();
                    prop_assert_eq!(single, !members.is_empty());
                }
                // Brute-force meaning: cohort i = x AND (each reference, negated or not).
                let mut value = vec![None::<bool>; n];
                while value.iter().any(Option::is_none) {
                    for i in 0..n {
                        if value[i].is_some() {
                            continue;
                        }
                        let refs: Vec<(usize, bool)> = edges.iter().enumerate()
                            .filter(|(_, e)| e.0 == i).map(|(k, e)| (e.1, raw_edges[k].2)).collect();
                        if refs.iter().all(|(t, _)| value[*t].is_some()) {
                            value[i] = Some(refs.iter().all(|(t, neg)| value[*t].unwrap() ^ neg));
                        }
                    }
                }
                for i in 0..n {
                    prop_assert_eq!(batch[&(i as i64)].is_empty(), !value[i].unwrap());
                }
            }
        }
    }
}
