//! Loads a dataset keeping every property and event (the library's default, no projection),
//! evaluates its cohorts and prints what was stored, so `/usr/bin/time -v` can measure the peak
//! memory of a full load (`bench/compare` runs it for the "all properties kept" row).
//!
//!     cargo run --release --example load_all -- DIR [--project] [NOW]
//!
//! With `--project` the load keeps only what the cohorts read, as `cohort-engine eval` does.

use std::time::Instant;

use cohort_engine::time::parse_absolute;
use cohort_engine::Projection;
use cohort_engine::{BatchOptions, CohortSet, Dataset, LoadOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir =
        std::path::PathBuf::from(args.first().expect("usage: load_all DIR [--project] [NOW]"));
    let project = args.iter().any(|a| a == "--project");
    let now = args
        .iter()
        .skip(1)
        .find(|a| *a != "--project")
        .map_or("2026-11-01T00:00:00Z", String::as_str);
    let now = parse_absolute(now).expect("NOW must be a date-time");
    let set = CohortSet::from_json(
        &std::fs::read_to_string(dir.join("cohorts.json")).expect("cohorts.json"),
    )
    .expect("valid cohorts");
    let started = Instant::now();
    let mut opts = LoadOptions {
        projection: project.then(|| Projection::of(&set)),
        ..Default::default()
    };
    let data = Dataset::from_paths(
        &dir.join("persons.jsonl"),
        Some(&dir.join("events.jsonl")),
        &mut opts,
    )
    .expect("data loads");
    let load = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let members = data
        .evaluate(&set, now, &BatchOptions::default())
        .expect("evaluates");
    let eval = started.elapsed().as_secs_f64();
    let stats = data.stats();
    println!(
        "{{\"persons\":{},\"events\":{},\"stored_events\":{},\"event_bytes\":{},\"person_bytes\":{},\"load_s\":{load:.3},\"eval_s\":{eval:.3},\"members\":{}}}",
        stats.persons,
        stats.events,
        data.event_count(),
        data.event_bytes(),
        data.person_bytes(),
        members.values().map(Vec::len).sum::<usize>()
    );
}
