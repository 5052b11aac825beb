//! The criterion bench's two single-person cohorts (`single_person/*` in `benches/eval.rs`) in
//! a plain loop: `Engine::matches` on the same person and cohort, N calls per round, the best
//! round's time per call. Steadier than criterion's mean on a noisy host, and small enough to
//! count instructions under callgrind (run it with N and with 0, subtract, divide by N).
//!
//!     cargo run --release --example single_person -- N [ROUNDS] [p|b]
//!
//! `p` (default): five person leaves; `b`: four behavioral leaves over 1,000 events.

use std::hint::black_box;
use std::time::Instant;

use cohort_engine::time::parse_absolute;
use cohort_engine::{Engine, Scratch};
use serde_json::json;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: single_person N [ROUNDS] [p|b]";
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
    let rounds: u64 = args.get(2).map_or(1, |s| s.parse().expect(usage));
    let behavioral = args.get(3).is_some_and(|m| m == "b");
    let now = parse_absolute("2026-11-01T00:00:00Z").unwrap();

    let (engine, props) = if behavioral {
        (behavioral_engine(), json!({"plan": "pro"}))
    } else {
        let props = json!({"plan": "Pro", "email": "ada@acme.io", "age": 36, "country": "GB",
                           "app_version": "2.3.1"});
        (person_engine(), props)
    };
    let person = engine.person("p", &[], props.as_object().unwrap());
    let mut history = engine.history();
    if behavioral {
        // The bench's history: 1,000 events over 90 days from a xorshift generator.
        let names = [
            "login",
            "$pageview",
            "purchase",
            "signup",
            "upgrade",
            "search",
        ];
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
    }

    let mut scratch = Scratch::new();
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        let mut members = 0u64;
        for _ in 0..n {
            let hit = black_box(&engine)
                .matches(1, black_box(&person), &history, now, &mut scratch)
                .unwrap();
            members += u64::from(hit);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / n.max(1) as f64);
        black_box(members);
    }
    println!("{best:.2} ns/call");
}

/// `single_person/person_property_cohort_5_leaves`'s cohort.
fn person_engine() -> Engine {
    Engine::from_json(
        &json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "plan", "operator": "exact", "value": ["pro", "enterprise"]},
            {"type": "person", "key": "email", "operator": "icontains", "value": "@acme"},
            {"type": "person", "key": "age", "operator": "gte", "value": 18},
            {"type": "person", "key": "country", "operator": "is_not", "value": "FR"},
            {"type": "person", "key": "app_version", "operator": "semver_gte", "value": "2.1.0"}]}}}])
        .to_string(),
    )
    .unwrap()
}

/// `single_person/behavioral_cohort_1000_events`'s cohort.
fn behavioral_engine() -> Engine {
    Engine::from_json(
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
    .unwrap()
}
