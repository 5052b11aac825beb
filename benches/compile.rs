//! Parse + validate + compile cost of a cohort set (the example cohorts), kept apart from
//! evaluation cost (memchr's "oneshot" vs "prebuilt").

use cohort_engine::{CohortSet, Engine};
use criterion::{criterion_group, criterion_main, Criterion};

fn compile(c: &mut Criterion) {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/data/cohorts.json"
    ))
    .unwrap();
    c.bench_function("compile/example_cohorts", |b| {
        b.iter(|| {
            let set = CohortSet::from_json(&text).unwrap();
            Engine::new(&set).unwrap()
        })
    });
}

criterion_group!(benches, compile);
criterion_main!(benches);
