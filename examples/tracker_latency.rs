//! Tracker throughput and latency: loads a generated dataset (`cohort-engine generate`), tracks
//! all its cohorts, applies a deterministic stream of events on one core and prints events per
//! second and the median and p99 latency per event. Events go to the data's own distinct ids (a
//! deterministic spread over all of them), never to person ids.
//!
//! With STREAM, the same events are also written there as `watch` input lines, so the command
//! line can be timed on the identical stream:
//! `cohort-engine watch --cohorts DIR/cohorts.json --persons DIR/persons.jsonl --events
//! DIR/events.jsonl --now 2026-11-01T00:00:00Z < STREAM > /dev/null`.
//!
//!     cargo run --release --example tracker_latency -- DIR [EVENTS [STREAM]] [--in-order]

use std::time::Instant;

use cohort_engine::time::parse_absolute;
use cohort_engine::{CohortSet, Dataset, Engine, LoadOptions, Projection, Timestamp, Tracker};

fn main() {
    // `--in-order`: timestamps rise through the hour with the stream, as a live feed's do
    // (by default they cycle backwards through it, so most events land before others of
    // their name).
    let in_order = std::env::args().any(|a| a == "--in-order");
    let mut args = std::env::args().skip(1).filter(|a| a != "--in-order");
    let dir = std::path::PathBuf::from(args.next().expect("usage: tracker_latency DIR [EVENTS]"));
    let count: usize = args
        .next()
        .map_or(200_000, |s| s.parse().expect("EVENTS must be a number"));
    let mut stream = args.next().map(|path| {
        std::io::BufWriter::new(std::fs::File::create(path).expect("STREAM can be created"))
    });
    let set = CohortSet::from_json(
        &std::fs::read_to_string(dir.join("cohorts.json")).expect("cohorts.json"),
    )
    .expect("valid cohorts");
    let data = Dataset::from_paths(
        &dir.join("persons.jsonl"),
        Some(&dir.join("events.jsonl")),
        // As `watch` loads: only what the tracked cohorts read.
        &mut LoadOptions::default().projection(Projection::of(&set)),
    )
    .expect("data loads");
    let now = parse_absolute("2026-11-01T00:00:00Z").expect("now");
    let rss_before = rss_bytes();
    let started = Instant::now();
    let mut tracker = Tracker::from_dataset(Engine::new(&set).expect("engine"), &data, now);
    eprintln!(
        "tracker built for {} persons in {:.2} s; resident memory grew by {:.0} MB; tracker state \
         {:.0} MB against the dataset's {:.0} MB of events and {:.0} MB of persons ({:.2}x)",
        data.len(),
        started.elapsed().as_secs_f64(),
        (rss_bytes() as f64 - rss_before as f64) / 1e6,
        tracker.heap_bytes() as f64 / 1e6,
        data.event_bytes() as f64 / 1e6,
        data.person_bytes() as f64 / 1e6,
        tracker.heap_bytes() as f64 / (data.event_bytes() + data.person_bytes()) as f64,
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
    // Distinct ids as the data has them (never person ids: on data where they differ, events
    // sent to person ids would be events of unknown persons).
    let mut ids: Vec<String> = data.distinct_owners().map(|(d, _)| d.to_string()).collect();
    ids.sort_unstable();
    assert!(!ids.is_empty(), "the dataset has no distinct ids");
    let empty = serde_json::Map::new();
    let mut out = Vec::new();
    let mut latencies = Vec::with_capacity(count);
    let mut transitions = 0usize;
    // Event k: a deterministic spread over the distinct ids, within the hour before now (so every
    // event counts at once).
    let hour = 3_600_000_000i64;
    let nth = |k: usize| {
        let ts = if in_order {
            now - hour + (k as i64 * hour) / count as i64
        } else {
            now - 1 - (k as i64 % 3_600) * 1_000_000
        };
        (
            &ids[(k * 7919) % ids.len()],
            names[k % names.len()],
            Timestamp::from_micros(ts),
        )
    };
    if let Some(w) = stream.as_mut() {
        use std::io::Write;
        for k in 0..count {
            let (distinct_id, event, timestamp) = nth(k);
            let line = serde_json::json!({
                "distinct_id": distinct_id,
                "event": event,
                "timestamp": timestamp.to_string(),
            });
            writeln!(w, "{line}").expect("STREAM is writable");
        }
        w.flush().expect("STREAM is writable");
    }
    let all = Instant::now();
    for k in 0..count {
        let (distinct_id, event, timestamp) = nth(k);
        let t = Instant::now();
        out.clear();
        tracker.event(distinct_id, event, timestamp, &empty, &mut out);
        latencies.push(t.elapsed().as_nanos() as u64);
        transitions += out.len();
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
    eprintln!(
        "tracker state after the stream: {:.0} MB ({:.2}x the dataset's)",
        tracker.heap_bytes() as f64 / 1e6,
        tracker.heap_bytes() as f64 / (data.event_bytes() + data.person_bytes()) as f64,
    );
}

/// Resident set size from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
