//! The two single-person cohorts, persons and histories shared by `benches/eval.rs`
//! (`single_person/*`) and `examples/single_person.rs`, so both time the same thing.

use cohort_engine::time::{parse_absolute, Micros};
use cohort_engine::{Engine, History, Person};
use serde_json::json;

/// The instant both cohorts are evaluated at.
pub fn now() -> Micros {
    parse_absolute("2026-11-01T00:00:00Z").unwrap()
}

/// Five person leaves (`exact`, `icontains`, `gte`, `is_not`, `semver_gte`), all true for the
/// person, so every leaf is evaluated.
pub fn person_cohort() -> (Engine, Person, History) {
    let engine = Engine::from_json(
        &json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "plan", "operator": "exact", "value": ["pro", "enterprise"]},
            {"type": "person", "key": "email", "operator": "icontains", "value": "@acme"},
            {"type": "person", "key": "age", "operator": "gte", "value": 18},
            {"type": "person", "key": "country", "operator": "is_not", "value": "FR"},
            {"type": "person", "key": "app_version", "operator": "semver_gte", "value": "2.1.0"}]}}}])
        .to_string(),
    )
    .unwrap();
    let props = json!({"plan": "Pro", "email": "ada@acme.io", "age": 36, "country": "GB", "app_version": "2.3.1"});
    let person = engine.person("p", &[], props.as_object().unwrap());
    let history = engine.history();
    (engine, person, history)
}

/// Four behavioral leaves (multiple, sequence, stopped, regularly) and a person leaf, over a
/// 1,000-event history spread over 90 days by a xorshift generator.
pub fn behavioral_cohort() -> (Engine, Person, History) {
    let engine = Engine::from_json(
        &json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "plan", "operator": "is_set"},
            {"type": "OR", "values": [
                {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event_multiple",
                 "operator": "gte", "operator_value": 400, "time_value": 30, "time_interval": "day"},
                {"type": "behavioral", "key": "signup", "event_type": "events", "value": "performed_event_sequence",
                 "time_value": 90, "time_interval": "day", "seq_event": "upgrade", "seq_event_type": "events",
                 "seq_time_value": 3, "seq_time_interval": "day"}]},
            {"type": "behavioral", "key": "purchase", "event_type": "events", "value": "stopped_performing_event",
             "time_value": 60, "time_interval": "day", "seq_time_value": 7, "seq_time_interval": "day", "negation": true},
            {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event_regularly",
             "operator": "gte", "operator_value": 1, "time_value": 1, "time_interval": "week",
             "min_periods": 4, "total_periods": 8}]}}}])
        .to_string(),
    )
    .unwrap();
    let props = json!({"plan": "pro"});
    let person = engine.person("p", &[], props.as_object().unwrap());
    let mut history = engine.history();
    let names = [
        "login",
        "$pageview",
        "purchase",
        "signup",
        "upgrade",
        "search",
    ];
    let now = now();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..1000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let name = names[(seed % names.len() as u64) as usize];
        let ts = now - ((seed >> 8) % (90 * 86_400_000_000)) as i64;
        let props = json!({"amount": (seed % 500) as i64});
        engine.record(&mut history, name, ts, props.as_object().unwrap());
    }
    (engine, person, history)
}
