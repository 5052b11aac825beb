//! Failures found by the property tests, pinned as named tests with their story.

use cohort_engine::time::parse_absolute;
use cohort_engine::{Engine, Scratch, Timestamp};
use serde_json::json;

/// Calendar months are not monotone: with end-of-month clamping, one month before Mar 29, 30 and
/// 31 (12:00) is Feb 29 12:00 each time. A horizon computed by searching for "the" preimage of
/// Feb 29 missed that the match ends one microsecond after Mar 31 12:00.
#[test]
fn month_clamping_plateau_horizon() {
    let engine = Engine::from_json(
        &json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "when", "operator": "is_date_exact", "value": "-1m"}]}}}])
        .to_string(),
    )
    .unwrap();
    let props = json!({"when": "2024-02-29T12:00:00Z"});
    let person = engine.person("p", &[], props.as_object().unwrap());
    let history = engine.history();
    let mut scratch = Scratch::new();
    let now = parse_absolute("2024-03-31T12:00:00Z").unwrap();
    assert!(engine
        .matches(1, &person, &history, now, &mut scratch)
        .unwrap());
    let horizon = engine
        .horizon(1, &person, &history, now, &mut scratch)
        .unwrap();
    assert_eq!(horizon.map(Timestamp::as_micros), Some(now + 1));
    assert!(!engine
        .matches(1, &person, &history, now + 1, &mut scratch)
        .unwrap());
    // A day earlier it also matches (Mar 30 12:00 − 1 month = Feb 29 12:00), but only at that instant.
    let day = 86_400_000_000;
    assert!(engine
        .matches(1, &person, &history, now - day, &mut scratch)
        .unwrap());
    assert_eq!(
        engine
            .horizon(1, &person, &history, now - day, &mut scratch)
            .unwrap()
            .map(Timestamp::as_micros),
        Some(now - day + 1)
    );
    // From just after, the next match is at Mar 31 12:00.
    assert_eq!(
        engine
            .horizon(1, &person, &history, now - day + 1, &mut scratch)
            .unwrap()
            .map(Timestamp::as_micros),
        Some(now)
    );
}

/// A person created by a `$set` with no properties still belongs to cohorts such as "not in
/// cohort X"; the tracker re-evaluated only the cohorts reading the set keys and missed it.
#[test]
fn tracker_new_person_is_evaluated_everywhere() {
    use cohort_engine::{Tracker, Update};
    let engine = Engine::from_json(
        &json!([
            {"id": 1, "filters": {"properties": {"type": "AND", "values": [
                {"type": "person", "key": "plan", "operator": "exact", "value": "pro"}]}}},
            {"id": 2, "filters": {"properties": {"type": "AND", "values": [
                {"type": "cohort", "key": "id", "value": 1, "operator": "not_in"}]}}}
        ])
        .to_string(),
    )
    .unwrap();
    let mut t = Tracker::new(engine, 0);
    let tr = t
        .apply(Update::Set {
            distinct_id: "new".into(),
            properties: Default::default(),
        })
        .unwrap();
    assert_eq!(tr.len(), 1);
    assert_eq!((tr[0].cohort, tr[0].person.as_str()), (2, "new"));
}
