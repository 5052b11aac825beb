//! Arbitrary bytes → cohort set → compile → evaluate against a small fixed dataset, in batch and
//! for each person alone. Nothing may panic, and both paths must agree.
#![no_main]

use cohort_engine::{BatchOptions, CohortSet, Dataset, Engine, Scratch};
use libfuzzer_sys::fuzz_target;

const PERSONS: &str = r#"{"id": "a", "distinct_ids": ["da"], "properties": {"email": "A@x.io", "age": 30, "plan": "pro", "v": "1.2.3", "d": "2024-01-01", "b": true}}
{"id": "b", "distinct_ids": ["db", "db2"], "properties": {"age": "41.5", "plan": null, "tags": [1, "x"], "o": {"k": 1}}}
{"id": 7, "properties": {}}
"#;
const EVENTS: &str = r#"{"distinct_id": "da", "event": "login", "timestamp": "2024-06-14T00:00:00Z"}
{"distinct_id": "da", "event": "login", "timestamp": "2024-06-01T00:00:00Z", "properties": {"n": 3}}
{"distinct_id": "db", "event": "buy", "timestamp": 1718000000, "properties": {"amount": "12"}}
{"distinct_id": "db2", "event": "login", "timestamp": "2023-06-15T00:00:00Z"}
"#;
const NOW: i64 = 1_718_452_800_000_000; // 2024-06-15T12:00:00Z

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(set) = CohortSet::from_json(text) else { return };
    let dataset = Dataset::from_jsonl(PERSONS, EVENTS).expect("fixed dataset loads");
    let members = dataset.evaluate(&set, NOW, &BatchOptions::default()).expect("evaluate");
    let engine = Engine::new(&set).expect("engine");
    let mut scratch = Scratch::new();
    let empty = serde_json::Map::new();
    for line in PERSONS.lines() {
        let p: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = p["id"].as_str().map_or_else(|| p["id"].to_string(), str::to_string);
        let dids: Vec<&str> = p["distinct_ids"].as_array().into_iter().flatten().filter_map(|d| d.as_str()).collect();
        let person = engine.person(&id, &dids, p["properties"].as_object().unwrap_or(&empty));
        let mut history = engine.history();
        for e in EVENTS.lines() {
            let e: serde_json::Value = serde_json::from_str(e).unwrap();
            if dids.contains(&e["distinct_id"].as_str().unwrap()) {
                let ts = cohort_engine::time::parse_timestamp(&e["timestamp"]).unwrap();
                engine.record(&mut history, e["event"].as_str().unwrap(), ts, e["properties"].as_object().unwrap_or(&empty));
            }
        }
        for (cohort, ids) in &members {
            let single = engine.matches(*cohort, &person, &history, NOW, &mut scratch).unwrap();
            assert_eq!(single, ids.contains(&id), "cohort {cohort} person {id}");
        }
    }
});
