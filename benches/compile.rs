//! Parse + validate + compile cost alone (memchr's "oneshot" vs "prebuilt"): the example cohorts
//! and the generated benchmark cohorts.

use cohort_engine::internal::generate::{generate, GenerateOptions};
use cohort_engine::{CohortSet, Engine};
use criterion::{criterion_group, criterion_main, Criterion};

fn compile(c: &mut Criterion) {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/data/cohorts.json"
    ))
    .unwrap();
    let dir = std::env::temp_dir().join("cohort-engine-bench-compile");
    std::fs::create_dir_all(&dir).unwrap();
    generate(
        &GenerateOptions {
            persons: 10,
            events_per_person: 1,
            ..Default::default()
        },
        &dir,
    )
    .unwrap();
    let generated = std::fs::read_to_string(dir.join("cohorts.json")).unwrap();
    let mut g = c.benchmark_group("compile");
    for (name, text) in [
        ("example_cohorts", &example),
        ("generated_cohorts", &generated),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let set = CohortSet::from_json(text).unwrap();
                Engine::new(&set).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, compile);
criterion_main!(benches);
