//! Evaluation benchmarks, each on one core unless it says otherwise, with compilation and data
//! generation kept outside the timed loop:
//! - `single_person/person_property_cohort_5_leaves`: one person, five person leaves.
//! - `single_person/behavioral_cohort_1000_events`: one person with a 1,000-event history, a
//!   cohort of four behavioral leaves (multiple, sequence, stopped, regularly) and a person leaf.
//! - `batch/generated_small`: every generated cohort over the generated small dataset
//!   (10,000 persons, ~500,000 events), `Throughput` in persons; all cores.
//! - `tracker/event`: one event applied to a tracker holding the generated small dataset with
//!   all its cohorts (membership re-evaluation, transitions and horizon upkeep), through the
//!   allocation-free `Tracker::event`, for a distinct id of the data drawn at random; each run
//!   of 50,000 events starts from a fresh tracker.

use std::path::PathBuf;

use cohort_engine::internal::generate::{generate, GenerateOptions};
use cohort_engine::time::parse_absolute;
use cohort_engine::{
    BatchOptions, CohortSet, Dataset, Engine, LoadOptions, Scratch, Timestamp, Tracker,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

const NOW: &str = "2026-11-01T00:00:00Z";

fn person_ops(c: &mut Criterion) {
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
    let mut scratch = Scratch::new();
    let now = parse_absolute(NOW).unwrap();
    let mut g = c.benchmark_group("single_person");
    g.throughput(Throughput::Elements(1));
    g.bench_function("person_property_cohort_5_leaves", |b| {
        b.iter(|| {
            engine
                .matches(1, &person, &history, now, &mut scratch)
                .unwrap()
        })
    });

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
    g.bench_function("behavioral_cohort_1000_events", |b| {
        b.iter(|| {
            engine
                .matches(1, &person, &history, now, &mut scratch)
                .unwrap()
        })
    });
    g.finish();
}

/// The generated small dataset, written once per process.
fn small_dataset() -> PathBuf {
    let dir = std::env::temp_dir().join("cohort-engine-bench-small");
    if !dir.join("cohorts.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let opts = GenerateOptions {
            persons: 10_000,
            events_per_person: 50,
            seed: 42,
            ..Default::default()
        };
        generate(&opts, &dir).unwrap();
    }
    dir
}

/// The generated small dataset's cohorts and data, loaded.
fn load_small() -> (CohortSet, Dataset) {
    let dir = small_dataset();
    let set =
        CohortSet::from_json(&std::fs::read_to_string(dir.join("cohorts.json")).unwrap()).unwrap();
    let data = Dataset::from_paths(
        &dir.join("persons.jsonl"),
        Some(&dir.join("events.jsonl")),
        &mut LoadOptions::default(),
    )
    .unwrap();
    (set, data)
}

fn batch(c: &mut Criterion) {
    let (set, data) = load_small();
    let program = data.compile(&set).unwrap();
    let now = parse_absolute(NOW).unwrap();
    let mut g = c.benchmark_group("batch");
    g.sample_size(20);
    g.throughput(Throughput::Elements(data.len() as u64));
    g.bench_function("generated_small", |b| {
        b.iter(|| {
            data.evaluate_bitsets(&program, now, &BatchOptions::default())
                .unwrap()
        })
    });
    g.finish();
}

fn tracker(c: &mut Criterion) {
    let (set, data) = load_small();
    let now = parse_absolute(NOW).unwrap();
    let engine = Engine::new(&set).unwrap();
    // The data's own distinct ids (never person ids, which need not be equal to them), drawn
    // by a hash of the event's position so that successive events land on unrelated persons.
    let mut ids: Vec<String> = data.distinct_owners().map(|(d, _)| d.to_string()).collect();
    ids.sort_unstable();
    let names = ["$pageview", "login", "purchase", "search", "upgrade"];
    let empty = serde_json::Map::new();
    let mut out = Vec::new();
    let mut k = 0u64;
    let mut g = c.benchmark_group("tracker");
    g.throughput(Throughput::Elements(1));
    g.bench_function("event", |b| {
        // Runs of 50,000 events (10 per person), each on a tracker fresh from the dataset and
        // built off the clock: the histories do not grow with the iterations criterion picks.
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = (iters - done).min(50_000);
                let mut t = Tracker::from_dataset(engine.clone(), &data, now);
                let start = std::time::Instant::now();
                for _ in 0..n {
                    k += 1;
                    let mut z = k.wrapping_mul(0x9e37_79b9_7f4a_7c15);
                    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                    z ^= z >> 31;
                    out.clear();
                    t.event(
                        &ids[(z % ids.len() as u64) as usize],
                        names[(k % 5) as usize],
                        Timestamp::from_micros(now - (k as i64 % 1000) * 1_000_000),
                        &empty,
                        &mut out,
                    );
                    std::hint::black_box(out.len());
                }
                total += start.elapsed();
                done += n;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, person_ops, batch, tracker);
criterion_main!(benches);
