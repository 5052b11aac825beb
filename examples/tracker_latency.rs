//! Tracker throughput and latency: loads a generated dataset (`cohort-engine generate`), tracks
//! all its cohorts, applies a deterministic stream of events on one core and prints events per
//! second and the median and p99 latency per event.
//!
//!     cargo run --release --example tracker_latency -- DIR [EVENTS]

use std::time::Instant;

use cohort_engine::time::parse_absolute;
use cohort_engine::{CohortSet, Dataset, Engine, LoadOptions, Timestamp, Tracker, Update};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().expect("usage: tracker_latency DIR [EVENTS]"));
    let count: usize = args
        .next()
        .map_or(200_000, |s| s.parse().expect("EVENTS must be a number"));
    let set = CohortSet::from_json(
        &std::fs::read_to_string(dir.join("cohorts.json")).expect("cohorts.json"),
    )
    .expect("valid cohorts");
    let data = Dataset::from_paths(
        &dir.join("persons.jsonl"),
        Some(&dir.join("events.jsonl")),
        &mut LoadOptions::default(),
    )
    .expect("data loads");
    let now = parse_absolute("2026-11-01T00:00:00Z").expect("now");
    let started = Instant::now();
    let mut tracker = Tracker::from_dataset(Engine::new(&set).expect("engine"), &data, now);
    eprintln!(
        "tracker built for {} persons in {:.2} s",
        data.len(),
        started.elapsed().as_secs_f64()
    );
    let names = [
        "$pageview",
        "login",
        "purchase",
        "search",
        "upgrade",
        "add_to_cart",
        "pricing_viewed",
    ];
    let ids: Vec<String> = (0..data.len())
        .filter_map(|p| data.person_id(p).map(str::to_string))
        .collect();
    let updates: Vec<Update> = (0..count)
        .map(|k| Update::Event {
            distinct_id: ids[(k * 7919) % ids.len()].clone(),
            event: names[k % names.len()].to_string(),
            // Within the hour before now, so every event counts at once.
            timestamp: Timestamp::from_micros(now - 1 - (k as i64 % 3_600) * 1_000_000),
            properties: Default::default(),
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    let mut transitions = 0usize;
    let all = Instant::now();
    for u in updates {
        let t = Instant::now();
        transitions += tracker.apply(u).expect("apply").len();
        latencies.push(t.elapsed().as_nanos() as u64);
    }
    let secs = all.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    println!(
        "{count} events in {secs:.2} s: {:.0} events/s, median {:.1} us, p99 {:.1} us, {transitions} transitions",
        count as f64 / secs,
        pct(0.5),
        pct(0.99)
    );
}
