//! Data-driven cases: every `tests/cases/**/*.json` file holds a list of cases. Each case gives
//! cohorts, persons, events, `now` and either the expected members of each cohort or the expected
//! error lines. All cases run; all failures are reported together. `CASES=substring` filters by
//! file or case name.
//!
//! Case shape:
//! ```json
//! {"name": "…", "why": "where the expected answer comes from",
//!  "now": "2024-06-15T12:00:00Z",
//!  "cohorts": [ … cohort objects … ],
//!  "persons": [ {"id": "p1", "distinct_ids": ["d1"], "properties": {…}} ],
//!  "events": [ {"distinct_id": "d1", "event": "login", "timestamp": "…", "properties": {…}} ],
//!  "expect": {"1": ["p1"]}            // members per cohort id, sorted
//!  // or "errors": ["invalid_filter: cohort 1: filters.properties…: …"]  (exact lines, in order)
//!  // or "error_kinds": ["invalid_filter", "cycle"]                        (kinds only, in order)
//!  // optional: "absent": [5] — cohorts that must not be in the output (deleted ones)
//!  // optional: "single_person_differs": "why" — skip the single-person cross-check
//! }
//! ```
//! Besides the batch result, every case also checks that the single-person [`Engine`] gives the
//! same answer for every person and cohort.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cohort_engine::time::parse_absolute;
use cohort_engine::{BatchOptions, CohortSet, Dataset, Engine, Scratch};
use serde_json::Value;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

fn jsonl(items: Option<&Value>) -> String {
    items
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.to_string() + "\n").collect())
        .unwrap_or_default()
}

/// Runs one case; returns a description of each failure.
fn run_case(case: &Value) -> Vec<String> {
    let mut failures = Vec::new();
    let cohorts = case["cohorts"].to_string();
    let now = parse_absolute(case["now"].as_str().unwrap_or("2024-06-15T12:00:00Z"))
        .expect("bad now in case");
    let set = match CohortSet::from_json(&cohorts) {
        Ok(set) => set,
        Err(errors) => {
            let lines: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            let kinds: Vec<String> = errors.iter().map(|e| e.code().to_string()).collect();
            if let Some(expected) = case.get("errors") {
                let expected: Vec<String> = expected
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                if expected != lines {
                    failures.push(format!(
                        "errors differ:\n  expected {expected:#?}\n  got      {lines:#?}"
                    ));
                }
            } else if let Some(expected) = case.get("error_kinds") {
                let expected: Vec<String> = expected
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect();
                if expected != kinds {
                    failures.push(format!(
                        "error kinds differ: expected {expected:?}, got {lines:#?}"
                    ));
                }
            } else {
                failures.push(format!("unexpected errors: {lines:#?}"));
            }
            return failures;
        }
    };
    if case.get("errors").is_some() || case.get("error_kinds").is_some() {
        failures.push("expected errors, but the set loaded".into());
        return failures;
    }
    // Printing the AST and parsing it again is a fixed point.
    let printed = Value::Array(set.cohorts().iter().map(|c| c.to_json()).collect());
    match CohortSet::from_json(&printed.to_string()) {
        Ok(again) => {
            let reprinted = Value::Array(again.cohorts().iter().map(|c| c.to_json()).collect());
            if reprinted != printed {
                failures.push(format!("round trip differs:\n  {printed}\n  {reprinted}"));
            }
        }
        Err(e) => failures.push(format!("printed AST does not parse: {e}\n  {printed}")),
    }
    let data = match Dataset::from_jsonl(&jsonl(case.get("persons")), &jsonl(case.get("events"))) {
        Ok(d) => d,
        Err(e) => return vec![format!("data did not load: {e}")],
    };
    let got = data
        .evaluate(&set, now, &BatchOptions::default())
        .expect("evaluate");
    let got: BTreeMap<String, Vec<String>> =
        got.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let expected: BTreeMap<String, Vec<String>> = serde_json::from_value(case["expect"].clone())
        .expect("expect must map cohort ids to lists");
    for (id, want) in &expected {
        match got.get(id) {
            Some(have) if have == want => {}
            have => failures.push(format!("cohort {id}: expected {want:?}, got {have:?}")),
        }
    }
    for id in case
        .get("absent")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = id.to_string();
        if got.contains_key(&id) {
            failures.push(format!("cohort {id} must not be in the output"));
        }
    }
    // The single-person path must agree with the batch path (unless the case says why it
    // cannot: a single person cannot see the other persons' ids).
    if case.get("single_person_differs").is_some() {
        return failures;
    }
    let engine = Engine::new(&set).expect("engine");
    let mut scratch = Scratch::new();
    for p in case
        .get("persons")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = match &p["id"] {
            Value::String(s) => s.clone(),
            Value::Null => match &p["uuid"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        let dids: Vec<String> = p["distinct_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| d.as_str().map_or_else(|| d.to_string(), str::to_string))
            .collect();
        let did_refs: Vec<&str> = dids.iter().map(String::as_str).collect();
        let empty = serde_json::Map::new();
        let person = engine.person(
            &id,
            &did_refs,
            p["properties"].as_object().unwrap_or(&empty),
        );
        let mut history = engine.history();
        for e in case
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let d = e["distinct_id"]
                .as_str()
                .map_or_else(|| e["distinct_id"].to_string(), str::to_string);
            if dids.contains(&d) {
                let ts = cohort_engine::time::parse_timestamp(&e["timestamp"]).expect("timestamp");
                engine.record(
                    &mut history,
                    e["event"].as_str().unwrap(),
                    ts,
                    e["properties"].as_object().unwrap_or(&empty),
                );
            }
        }
        for (cid, members) in &got {
            let single = engine
                .matches(cid.parse().unwrap(), &person, &history, now, &mut scratch)
                .unwrap();
            if single != members.contains(&id) {
                failures.push(format!(
                    "cohort {cid}, person {id}: single-person path says {single}, batch disagrees"
                ));
            }
        }
    }
    failures
}

#[test]
fn data_driven_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut paths = Vec::new();
    files(&root, &mut paths);
    let filter = std::env::var("CASES").unwrap_or_default();
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap();
        let cases: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let rel = path.strip_prefix(&root).unwrap().display().to_string();
        for case in cases
            .as_array()
            .unwrap_or_else(|| panic!("{rel}: expected a list of cases"))
        {
            let name = format!("{rel}: {}", case["name"].as_str().unwrap_or("?"));
            if !filter.is_empty() && !name.contains(&filter) {
                continue;
            }
            ran += 1;
            for f in run_case(case) {
                failures.push(format!("{name}: {f}"));
            }
        }
    }
    assert!(ran > 0, "no case ran");
    assert!(
        failures.is_empty(),
        "{} of {ran} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
