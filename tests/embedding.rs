//! A service's view, through the public API only: persons and histories kept across live
//! updates, a tracker whose cohort set changes, programs never applied to other names.

use std::sync::Arc;

use cohort_engine::{
    Change, CohortSet, Dataset, Engine, ErrorKind, LiveEngine, Scratch, Timestamp, Tracker,
    Transition, Update,
};
use serde_json::{json, Value};

fn now() -> Timestamp {
    "2024-06-15T12:00:00Z".parse().unwrap()
}

fn hours_ago(h: i64) -> Timestamp {
    now().saturating_add_micros(-h * 3_600_000_000)
}

fn cohort(id: i64, leaves: Vec<Value>) -> Value {
    json!({"id": id, "filters": {"properties": {"type": "AND", "values": leaves}}})
}

fn person_leaf(key: &str, op: &str, value: Value) -> Value {
    json!({"type": "person", "key": key, "operator": op, "value": value})
}

fn performed(event: &str, days: u32) -> Value {
    json!({"type": "behavioral", "key": event, "event_type": "events", "value": "performed_event",
           "time_value": days, "time_interval": "day"})
}

fn props(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Unique names, so no other test in the process has interned them first.
#[test]
fn a_person_kept_across_updates_gets_the_right_answers() {
    let live = LiveEngine::new(
        Engine::from_json(
            &json!([cohort(
                1,
                vec![person_leaf("emb_plan", "exact", json!("pro"))]
            )])
            .to_string(),
        )
        .unwrap(),
    );
    let first = live.snapshot();
    // Built before any cohort reads `emb_seats` or the event `emb_checkout`.
    let person = first.person(
        "p1",
        &["d1"],
        &props(json!({"emb_plan": "pro", "emb_seats": 12, "emb_region": "eu"})),
    );
    let mut history = first.history();
    first.record(
        &mut history,
        "emb_checkout",
        hours_ago(2),
        &props(json!({"emb_amount": 250})),
    );
    first.record(
        &mut history,
        "emb_login",
        hours_ago(30),
        &Default::default(),
    );
    let mut scratch = Scratch::new();
    assert!(first
        .matches(1, &person, &history, now(), &mut scratch)
        .unwrap());

    // Add a cohort reading a new person key and one reading a new event name with a filter on a
    // new event key.
    live.upsert(&cohort(2, vec![person_leaf("emb_seats", "gt", json!(10))]))
        .unwrap();
    let mut checkout = performed("emb_checkout", 1);
    checkout["event_filters"] =
        json!([{"type": "event", "key": "emb_amount", "operator": "gte", "value": 100}]);
    live.upsert(&cohort(3, vec![checkout])).unwrap();
    let engine = live.snapshot();
    for (id, expected) in [(1, true), (2, true), (3, true)] {
        assert_eq!(
            engine
                .matches(id, &person, &history, now(), &mut scratch)
                .unwrap(),
            expected,
            "cohort {id} after adding"
        );
    }

    // Change cohort 2 to read yet another key, and cohort 3 to a window the event is outside.
    live.upsert(&cohort(
        2,
        vec![person_leaf("emb_region", "exact", json!(["eu", "us"]))],
    ))
    .unwrap();
    live.upsert(&cohort(
        3,
        vec![
            json!({"type": "behavioral", "key": "emb_login", "event_type": "events",
                    "value": "performed_event", "time_value": 1, "time_interval": "day"}),
        ],
    ))
    .unwrap();
    let engine = live.snapshot();
    assert!(engine
        .matches(2, &person, &history, now(), &mut scratch)
        .unwrap());
    assert!(
        !engine
            .matches(3, &person, &history, now(), &mut scratch)
            .unwrap(),
        "the login was 30 hours ago"
    );
    assert_eq!(
        engine.memberships(&person, &history, now(), &mut scratch),
        [1, 2]
    );

    // Delete cohort 2: no members, and the others keep their answers.
    live.upsert(&json!({"id": 2, "deleted": true, "filters": {}}))
        .unwrap();
    let engine = live.snapshot();
    assert!(!engine
        .matches(2, &person, &history, now(), &mut scratch)
        .unwrap());
    assert_eq!(
        engine.memberships(&person, &history, now(), &mut scratch),
        [1]
    );

    // A whole new engine (a reloaded cohorts file) answers the old person too.
    let reloaded = Engine::from_json(
        &json!([cohort(
            9,
            vec![
                person_leaf("emb_seats", "gte", json!(12)),
                performed("emb_checkout", 7),
            ]
        )])
        .to_string(),
    )
    .unwrap();
    let replaced = live.replace(reloaded);
    assert!(replaced.cohort_set().get(1).is_some());
    let engine = live.snapshot();
    assert!(engine
        .matches(9, &person, &history, now(), &mut scratch)
        .unwrap());
    // And the snapshot taken at the start still has its own meaning.
    assert!(first
        .matches(1, &person, &history, now(), &mut scratch)
        .unwrap());
}

#[test]
fn readers_on_threads_during_updates() {
    let live = Arc::new(LiveEngine::new(
        Engine::from_json(
            &json!([cohort(
                1,
                vec![person_leaf("emb_t_a", "is_set", json!("is_set"))]
            )])
            .to_string(),
        )
        .unwrap(),
    ));
    let person = live.snapshot().person(
        "p",
        &[] as &[&str],
        &props(json!({"emb_t_a": 1, "emb_t_b": 2})),
    );
    let person = Arc::new(person);
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (live, person) = (Arc::clone(&live), Arc::clone(&person));
            std::thread::spawn(move || {
                let mut scratch = Scratch::new();
                for _ in 0..2_000 {
                    let engine = live.snapshot();
                    let history = engine.history();
                    // Every cohort of every version reads a key the person has.
                    for id in engine.memberships(&person, &history, now(), &mut scratch) {
                        assert!((1..=50).contains(&id));
                    }
                    assert!(engine
                        .matches(1, &person, &history, now(), &mut scratch)
                        .unwrap());
                }
            })
        })
        .collect();
    for id in 2..=50 {
        let key = if id % 2 == 0 { "emb_t_a" } else { "emb_t_b" };
        live.upsert(&cohort(
            id,
            vec![person_leaf(key, "is_set", json!("is_set"))],
        ))
        .unwrap();
    }
    for r in readers {
        r.join().unwrap();
    }
    let engine = live.snapshot();
    let mut scratch = Scratch::new();
    assert_eq!(
        engine
            .memberships(&person, &engine.history(), now(), &mut scratch)
            .len(),
        50
    );
}

fn ids(t: &[Transition]) -> Vec<(i64, &str, Change)> {
    t.iter()
        .map(|t| (t.cohort, t.person.as_str(), t.change))
        .collect()
}

#[test]
fn a_tracker_whose_cohort_set_changes() {
    let engine = Engine::from_json(
        &json!([
            cohort(1, vec![person_leaf("emb_k_plan", "exact", json!("pro"))]),
            cohort(2, vec![performed("emb_k_open", 1)]),
        ])
        .to_string(),
    )
    .unwrap();
    let mut tracker = Tracker::new(engine, now());
    let set = |d: &str, p: Value| Update::Set {
        distinct_id: d.into(),
        properties: props(p),
    };
    tracker
        .apply(set("a", json!({"emb_k_plan": "pro", "emb_k_seats": 3})))
        .unwrap();
    tracker
        .apply(set("b", json!({"emb_k_plan": "free", "emb_k_seats": 30})))
        .unwrap();
    let opened = tracker
        .apply(Update::Event {
            distinct_id: "b".into(),
            event: "emb_k_open".into(),
            timestamp: hours_ago(1),
            properties: Default::default(),
        })
        .unwrap();
    assert_eq!(ids(&opened), [(2, "b", Change::Entered)]);

    // A new cohort reading a key nobody read before: b enters at once, from kept state.
    let t = tracker
        .upsert(&cohort(
            3,
            vec![person_leaf("emb_k_seats", "gt", json!(10))],
        ))
        .unwrap();
    assert_eq!(ids(&t), [(3, "b", Change::Entered)]);
    // A changed definition: cohort 1 now wants "free", so a exits and b enters.
    let t = tracker
        .upsert(&cohort(
            1,
            vec![person_leaf("emb_k_plan", "exact", json!("free"))],
        ))
        .unwrap();
    assert_eq!(
        ids(&t),
        [(1, "a", Change::Exited), (1, "b", Change::Entered)]
    );
    // A deleted cohort: its members exit.
    let t = tracker
        .upsert(&json!({"id": 2, "deleted": true, "filters": {}}))
        .unwrap();
    assert_eq!(ids(&t), [(2, "b", Change::Exited)]);
    // A whole new set without cohort 3: b exits it.
    let t = tracker.set_engine(
        Engine::from_json(
            &json!([cohort(
                1,
                vec![person_leaf("emb_k_plan", "exact", json!("free"))]
            )])
            .to_string(),
        )
        .unwrap(),
    );
    assert_eq!(ids(&t), [(3, "b", Change::Exited)]);
    assert_eq!(tracker.members(1), ["b"]);
    // The kept state still reacts to later changes under the new set.
    let t = tracker
        .apply(set("a", json!({"emb_k_plan": "free"})))
        .unwrap();
    assert_eq!(ids(&t), [(1, "a", Change::Entered)]);
    // A rejected update changes nothing.
    assert!(tracker
        .upsert(&cohort(
            4,
            vec![json!({"type": "cohort", "key": "id", "value": 99})]
        ))
        .is_err());
    assert_eq!(tracker.members(1), ["a", "b"]);
}

#[test]
fn an_event_for_an_unknown_distinct_id_creates_the_person() {
    let engine = Engine::from_json(
        &json!([
            cohort(1, vec![performed("emb_u_open", 1)]),
            {"id": 2, "filters": {"properties": {"type": "AND", "values": [
                {"type": "person", "key": "emb_u_x", "operator": "is_not_set", "value": "is_not_set"}]}}},
        ])
        .to_string(),
    )
    .unwrap();
    let mut tracker = Tracker::new(engine, now());
    let t = tracker
        .apply(Update::Event {
            distinct_id: "new".into(),
            event: "emb_u_open".into(),
            timestamp: hours_ago(1),
            properties: Default::default(),
        })
        .unwrap();
    assert_eq!(
        ids(&t),
        [(1, "new", Change::Entered), (2, "new", Change::Entered)]
    );
    assert_eq!(t[0].at, now());
    assert_eq!(
        serde_json::to_string(&t[0]).unwrap(),
        r#"{"cohort":1,"person":"new","change":"entered","at":"2024-06-15T12:00:00.000000Z"}"#
    );
}

#[test]
fn a_program_is_never_applied_to_other_names() {
    let set = CohortSet::from_json(
        &json!([cohort(1, vec![person_leaf("emb_d_b", "exact", json!("x"))])]).to_string(),
    )
    .unwrap();
    let one = Dataset::from_jsonl(
        "{\"id\": \"p\", \"properties\": {\"emb_d_a\": \"y\", \"emb_d_b\": \"x\"}}\n",
        "",
    )
    .unwrap();
    let two = Dataset::from_jsonl(
        "{\"id\": \"q\", \"properties\": {\"emb_d_b\": \"x\", \"emb_d_a\": \"y\"}}\n",
        "",
    )
    .unwrap();
    let program = one.compile(&set).unwrap();
    let mut scratch = Scratch::new();
    assert!(one.matches(&program, 1, 0, now(), &mut scratch).unwrap());
    let err = two
        .matches(&program, 1, 0, now(), &mut scratch)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let engine = Engine::new(&set).unwrap();
    assert!(one
        .matches(engine.program(), 1, 0, now(), &mut scratch)
        .is_err());
    assert!(two
        .evaluate_bitsets(&program, now(), &Default::default())
        .is_err());
    // Compiled for its own names, the other dataset answers.
    let own = two.compile(&set).unwrap();
    assert!(two.matches(&own, 1, 0, now(), &mut scratch).unwrap());
}

#[test]
fn errors_carry_their_data() {
    let errors = CohortSet::from_json(
        &json!([
            cohort(3, vec![json!({"type": "cohort", "key": "id", "value": 7})]),
            cohort(7, vec![json!({"type": "cohort", "key": "id", "value": 3})]),
            cohort(8, vec![json!({"type": "cohort", "key": "id", "value": 99})]),
        ])
        .to_string(),
    )
    .unwrap_err();
    let unknown = errors
        .iter()
        .find(|e| e.kind() == ErrorKind::UnknownCohort)
        .unwrap();
    assert_eq!(
        (unknown.cohort(), unknown.unknown_cohort()),
        (Some(8), Some(99))
    );
    let cycle = errors
        .iter()
        .find(|e| e.kind() == ErrorKind::Cycle)
        .unwrap();
    assert_eq!(cycle.cycle(), [3, 7, 3]);
    assert_eq!(cycle.to_string(), "cycle: cohort 3 → 7 → 3");
    assert_eq!(
        serde_json::to_value(cycle).unwrap(),
        json!({"kind": "cycle", "message": "cohort 3 → 7 → 3", "cycle": [3, 7, 3]})
    );
    assert_eq!(
        serde_json::to_value(unknown).unwrap(),
        json!({"kind": "unknown_cohort", "cohort": 8, "path": "filters.properties.values[0].value",
               "message": "cohort 99 is not in the set", "unknown_cohort": 99})
    );
    // A lookup of an absent cohort names it too.
    let engine = Engine::from_json("[]").unwrap();
    let p = engine.person("p", &[], &Default::default());
    let e = engine
        .matches(42, &p, &engine.history(), now(), &mut Scratch::new())
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.unknown_cohort()),
        (ErrorKind::UnknownCohort, Some(42))
    );
}

/// A cohort gated by a person condition (plan is pro) and an event window: events while the
/// gate is closed change nothing, opening it counts the events already kept, and the window
/// still expires on time after events that arrived while it was closed.
#[test]
fn events_while_a_person_condition_is_false_still_count_once_it_holds() {
    let engine = Engine::from_json(
        &json!([cohort(
            1,
            vec![
                person_leaf("emb_g_plan", "exact", json!("pro")),
                performed("emb_g_open", 2)
            ]
        )])
        .to_string(),
    )
    .unwrap();
    let hour = 3_600_000_000;
    let mut tracker = Tracker::new(engine, hours_ago(30));
    let set = |p: Value| Update::Set {
        distinct_id: "g".into(),
        properties: props(p),
    };
    let open = |at: Timestamp| Update::Event {
        distinct_id: "g".into(),
        event: "emb_g_open".into(),
        timestamp: at,
        properties: Default::default(),
    };
    assert!(tracker
        .apply(set(json!({"emb_g_plan": "free"})))
        .unwrap()
        .is_empty());
    // Gate closed: the event is kept but changes nothing.
    let first = hours_ago(31);
    assert!(tracker.apply(open(first)).unwrap().is_empty());
    assert!(tracker.members(1).is_empty());
    // The gate opens: the kept event counts at once.
    let t = tracker.apply(set(json!({"emb_g_plan": "pro"}))).unwrap();
    assert_eq!(ids(&t), [(1, "g", Change::Entered)]);
    // Two days after that event the window has passed it: the person exits then, not later.
    let t = tracker
        .apply(Update::Now(first.saturating_add_micros(48 * hour - 1)))
        .unwrap();
    assert!(t.is_empty());
    let expiry = first.saturating_add_micros(48 * hour + 1);
    let t = tracker.apply(Update::Now(expiry)).unwrap();
    assert_eq!(ids(&t), [(1, "g", Change::Exited)]);
    // Open, with no event in the window: an event enters the person at once.
    let later = expiry.saturating_add_micros(-hour);
    let t = tracker.apply(open(later)).unwrap();
    assert_eq!(ids(&t), [(1, "g", Change::Entered)]);
    // Closed: exits; an event while closed changes nothing; reopened: enters again.
    let t = tracker.apply(set(json!({"emb_g_plan": "free"}))).unwrap();
    assert_eq!(ids(&t), [(1, "g", Change::Exited)]);
    assert!(tracker
        .apply(open(expiry.saturating_add_micros(-2 * hour)))
        .unwrap()
        .is_empty());
    let t = tracker.apply(set(json!({"emb_g_plan": "pro"}))).unwrap();
    assert_eq!(ids(&t), [(1, "g", Change::Entered)]);
    // And expires two days after it, although it arrived while the gate was closed.
    let t = tracker
        .apply(Update::Now(later.saturating_add_micros(48 * hour + 1)))
        .unwrap();
    assert_eq!(ids(&t), [(1, "g", Change::Exited)]);
}
