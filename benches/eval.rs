//! Single-person evaluation of a person-property cohort (5 leaves), on one core, with the
//! program compiled outside the timed loop.

use cohort_engine::{Engine, Scratch};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;

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
    let now = 1_718_452_800_000_000;
    let mut g = c.benchmark_group("single_person");
    g.throughput(Throughput::Elements(1));
    g.bench_function("person_property_cohort_5_leaves", |b| {
        b.iter(|| {
            engine
                .matches(1, &person, &history, now, &mut scratch)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, person_ops);
criterion_main!(benches);
