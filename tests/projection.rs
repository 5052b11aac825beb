//! Projection never changes a result: every data-driven case and the generated datasets give the
//! same members (batch, on one and two threads, whole and partitioned), the same per-person
//! answers and the same explanations whether the load keeps everything or only what the cohorts
//! read.

use std::path::{Path, PathBuf};

use cohort_engine::internal::generate::{generate, GenerateOptions, Shape};
use cohort_engine::time::parse_absolute;
use cohort_engine::Projection;
use cohort_engine::{BatchOptions, CohortSet, Dataset, LoadOptions, Scratch};
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

fn load(persons: &[u8], events: &[u8], projection: Option<Projection>, threads: usize) -> Dataset {
    let mut opts = LoadOptions {
        threads,
        projection,
        ..Default::default()
    };
    Dataset::from_readers(
        persons,
        "persons.jsonl",
        Some((events, "events.jsonl")),
        &mut opts,
    )
    .expect("load")
}

/// Compares everything observable about `set` over the full and the projected loads; returns
/// the differences.
fn compare(
    set: &CohortSet,
    persons: &[u8],
    events: &[u8],
    now: i64,
    per_person: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    let full = load(persons, events, None, 1);
    let projected = load(persons, events, Some(Projection::of(set)), 2);
    if full.stats().events != projected.stats().events
        || full.skipped_events() != projected.skipped_events()
    {
        failures.push(format!(
            "counts differ: {:?} vs {:?}",
            full.stats(),
            projected.stats()
        ));
    }
    if projected.event_count() > full.event_count() || projected.event_bytes() > full.event_bytes()
    {
        failures.push("the projected store is larger".into());
    }
    let want = full.evaluate(set, now, &BatchOptions::default()).unwrap();
    for threads in [1, 2] {
        for partition in [None, Some((1, 3))] {
            let mut opts = BatchOptions::default().threads(threads);
            opts.partition = partition;
            let got = projected.evaluate(set, now, &opts).unwrap();
            let want = match partition {
                None => want.clone(),
                Some(_) => full.evaluate(set, now, &opts).unwrap(),
            };
            if got != want {
                failures.push(format!(
                    "members differ on {threads} threads, partition {partition:?}:\n  full      {want:?}\n  projected {got:?}"
                ));
            }
        }
    }
    if per_person {
        let (pf, pp) = (full.compile(set).unwrap(), projected.compile(set).unwrap());
        let (mut sf, mut sp) = (Scratch::new(), Scratch::new());
        for cohort in want.keys() {
            for i in 0..full.len() {
                let a = full.explain(&pf, *cohort, i, now, &mut sf).unwrap();
                let b = projected.explain(&pp, *cohort, i, now, &mut sp).unwrap();
                if a.to_json_string() != b.to_json_string() {
                    failures.push(format!(
                        "cohort {cohort}, person {i}: explanations differ:\n  {}\n  {}",
                        a.to_json_string(),
                        b.to_json_string()
                    ));
                }
                let m = projected.matches(&pp, *cohort, i, now, &mut sp).unwrap();
                if m != full.matches(&pf, *cohort, i, now, &mut sf).unwrap() {
                    failures.push(format!("cohort {cohort}, person {i}: matches differ"));
                }
            }
        }
    }
    failures
}

#[test]
fn projection_changes_no_data_driven_case() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    let mut paths = Vec::new();
    files(&root, &mut paths);
    let (mut failures, mut ran) = (Vec::new(), 0);
    for path in &paths {
        let cases: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for case in cases.as_array().unwrap() {
            let Ok(set) = CohortSet::from_json(&case["cohorts"].to_string()) else {
                continue; // error cases load no data
            };
            let now =
                parse_absolute(case["now"].as_str().unwrap_or("2024-06-15T12:00:00Z")).unwrap();
            let persons = jsonl(case.get("persons"));
            let events = jsonl(case.get("events"));
            let name = format!("{}: {}", path.display(), case["name"]);
            ran += 1;
            for f in compare(&set, persons.as_bytes(), events.as_bytes(), now, true) {
                failures.push(format!("{name}: {f}"));
            }
        }
    }
    assert!(ran > 100, "only {ran} cases ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn projection_changes_no_generated_cohort() {
    for shape in [Shape::Simple, Shape::Wide] {
        let dir = std::env::temp_dir().join(format!(
            "cohort-projection-{}-{shape:?}",
            std::process::id()
        ));
        let opts = GenerateOptions {
            persons: 1500,
            events_per_person: 30,
            shape,
            ..Default::default()
        };
        generate(&opts, &dir).unwrap();
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let set = CohortSet::from_json(&String::from_utf8(read("cohorts.json")).unwrap()).unwrap();
        let (persons, events) = (read("persons.jsonl"), read("events.jsonl"));
        std::fs::remove_dir_all(&dir).ok();
        let failures = compare(&set, &persons, &events, opts.now, false);
        assert!(failures.is_empty(), "{shape:?}: {}", failures.join("\n"));
        // The projection does drop something here, so the test compares two different stores.
        let projected = load(&persons, &events, Some(Projection::of(&set)), 1);
        assert!(projected.stats().dropped_events > 0);
        let members = projected
            .evaluate(&set, opts.now, &BatchOptions::default())
            .unwrap();
        assert!(
            members.values().all(|m| !m.is_empty()),
            "{shape:?}: {members:?}"
        );
        if shape == Shape::Wide {
            // No distinct id is its owner's person id, and persons have up to four.
            let mut per_person = vec![0usize; projected.len()];
            for (d, p) in projected.distinct_owners() {
                assert_ne!(Some(d), projected.person_id(p));
                per_person[p] += 1;
            }
            assert_eq!(per_person.iter().max(), Some(&4));
            assert_eq!(per_person.iter().min(), Some(&1));
        }
    }
}
