//! Reader latency of a `LiveEngine` while a writer keeps upserting into a 20,000-cohort set: what
//! a service's request threads pay for `snapshot()` during a live update. Each upsert validates
//! and compiles the whole set (tens to hundreds of milliseconds); readers must not wait for it.
//!
//! Besides criterion's figures, prints the p50 / p99 / max of every `snapshot()` call it timed
//! and how many upserts landed meanwhile (the target: p99 ≤ 10 µs).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cohort_engine::{Engine, LiveEngine};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};

const COHORTS: i64 = 20_000;

fn cohort(id: i64, version: u64) -> Value {
    json!({"id": id, "filters": {"properties": {"type": "OR", "values": [
        {"type": "person", "key": format!("key{}", id % 500), "operator": "icontains",
         "value": format!("v{version}")},
        {"type": "behavioral", "key": format!("event{}", id % 200), "event_type": "events",
         "value": "performed_event_multiple", "operator": "gte", "operator_value": 2,
         "time_value": 7, "time_interval": "day"}
    ]}}})
}

fn live(c: &mut Criterion) {
    let set: Vec<Value> = (0..COHORTS).map(|id| cohort(id, 0)).collect();
    let live = Arc::new(LiveEngine::new(
        Engine::from_json(&Value::Array(set).to_string()).unwrap(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let upserts = Arc::new(AtomicU64::new(0));
    let writer = {
        let (live, stop, upserts) = (Arc::clone(&live), Arc::clone(&stop), Arc::clone(&upserts));
        std::thread::spawn(move || {
            let mut version = 1;
            while !stop.load(Ordering::Relaxed) {
                live.upsert(&cohort((version as i64 * 7919) % COHORTS, version))
                    .unwrap();
                upserts.fetch_add(1, Ordering::Relaxed);
                version += 1;
            }
        })
    };
    // Every call's latency: a 1 ns histogram up to 100 µs, and the slower ones listed.
    let hist = Mutex::new((vec![0u64; 100_000], Vec::<u64>::new()));
    c.bench_function("live/snapshot_during_upserts_20000_cohorts", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut h = hist.lock().unwrap();
            let (buckets, slow) = &mut *h;
            for _ in 0..iters {
                let t = Instant::now();
                let engine = live.snapshot();
                let d = t.elapsed();
                black_box(&engine);
                total += d;
                let ns = d.as_nanos() as u64;
                match buckets.get_mut(ns as usize) {
                    Some(b) => *b += 1,
                    None => slow.push(ns),
                }
            }
            total
        })
    });
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let (buckets, mut slow) = hist.into_inner().unwrap();
    slow.sort_unstable();
    let n: u64 = buckets.iter().sum::<u64>() + slow.len() as u64;
    let quantile = |p: f64| -> u64 {
        let rank = ((n.saturating_sub(1)) as f64 * p) as u64;
        let mut seen = 0;
        for (ns, &count) in buckets.iter().enumerate() {
            seen += count;
            if seen > rank {
                return ns as u64;
            }
        }
        slow[(rank - seen) as usize]
    };
    if n > 0 {
        println!(
            "snapshot() during {} upserts of a {COHORTS}-cohort set: {n} calls, p50 {} ns, \
             p99 {} ns, p99.9 {} ns, max {} ns, {} calls over 100 µs",
            upserts.load(Ordering::Relaxed),
            quantile(0.5),
            quantile(0.99),
            quantile(0.999),
            quantile(1.0),
            slow.len()
        );
    }
}

criterion_group!(benches, live);
criterion_main!(benches);
