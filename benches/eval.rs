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
use cohort_engine::{
    BatchOptions, CohortSet, Dataset, Engine, LoadOptions, Scratch, Timestamp, Tracker,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

#[path = "common/single_person.rs"]
mod single_person;

fn person_ops(c: &mut Criterion) {
    let now = single_person::now();
    let mut scratch = Scratch::new();
    let mut g = c.benchmark_group("single_person");
    g.throughput(Throughput::Elements(1));
    let (engine, person, history) = single_person::person_cohort();
    g.bench_function("person_property_cohort_5_leaves", |b| {
        b.iter(|| {
            engine
                .matches(1, &person, &history, now, &mut scratch)
                .unwrap()
        })
    });
    let (engine, person, history) = single_person::behavioral_cohort();
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
    let now = single_person::now();
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
    let now = single_person::now();
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
