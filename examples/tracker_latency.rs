//! Tracker throughput and latency: loads a generated dataset (`cohort-engine generate`), tracks
//! all its cohorts, applies a deterministic stream of events on one core and prints events per
//! second and the median and p99 latency per event. Events go to the data's own distinct ids (a
//! deterministic spread over all of them), never to person ids.
//!
//! Each event's id is drawn by a hash of its position, so successive events land on unrelated
//! persons, as a live feed's do. (Until 2026-12-03's sixth session the k-th event went to id
//! `7919 k mod n` of the sorted ids: a constant stride that the CPU's stride prefetchers could
//! follow through the id table, the id bytes and the person slots, flattering the figures.)
//!
//! The stream is laid out before the clock starts, its ids end to end in one buffer, as a feed's
//! batch arrives (not as 100,000 scattered strings, whose cache misses would be the example's,
//! not the tracker's). Latency is sampled on every 8th event, so the clock's own cost (two
//! reads, ~50 ns here) stays out of the throughput; `--time-each` times every event, as the
//! example did before 2026-12-03's sixth session.
//!
//! With STREAM, the same events are also written there as `watch` input lines, so the command
//! line can be timed on the identical stream:
//! `cohort-engine watch --cohorts DIR/cohorts.json --persons DIR/persons.jsonl --events
//! DIR/events.jsonl --now 2026-11-01T00:00:00Z < STREAM > /dev/null`.
//!
//!     cargo run --release --example tracker_latency -- DIR [EVENTS [STREAM]] [--in-order] [--time-each]

use std::time::Instant;

use cohort_engine::time::parse_absolute;
use cohort_engine::{CohortSet, Dataset, Engine, LoadOptions, Projection, Timestamp, Tracker};

fn main() {
    // `--in-order`: timestamps rise through the hour with the stream, as a live feed's do
    // (by default they cycle backwards through it, so most events land before others of
    // their name).
    let in_order = std::env::args().any(|a| a == "--in-order");
    let time_each = std::env::args().any(|a| a == "--time-each");
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| a != "--in-order" && a != "--time-each");
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
    // Event k: a deterministic draw from the distinct ids, within the hour before now (so every
    // event counts at once).
    let hour = 3_600_000_000i64;
    let nth = |k: usize| {
        let ts = if in_order {
            now - hour + (k as i64 * hour) / count as i64
        } else {
            now - 1 - (k as i64 % 3_600) * 1_000_000
        };
        (
            &ids[(mix(k as u64) % ids.len() as u64) as usize],
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
    // The stream in one buffer: (end of the id in `text`, name, timestamp) per event.
    let mut text = String::new();
    let stream: Vec<(usize, &str, Timestamp)> = (0..count)
        .map(|k| {
            let (distinct_id, event, timestamp) = nth(k);
            text.push_str(distinct_id);
            (text.len(), event, timestamp)
        })
        .collect();
    let every = if time_each { 1 } else { 8 };
    let all = Instant::now();
    let mut start = 0;
    for (k, &(end, event, timestamp)) in stream.iter().enumerate() {
        let distinct_id = &text[start..end];
        start = end;
        out.clear();
        if k % every == 0 {
            let t = Instant::now();
            tracker.event(distinct_id, event, timestamp, &empty, &mut out);
            latencies.push(t.elapsed().as_nanos() as u64);
        } else {
            tracker.event(distinct_id, event, timestamp, &empty, &mut out);
        }
        transitions += out.len();
    }
    let secs = all.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)] as f64 / 1000.0
    };
    println!(
        "{count} events in {secs:.2} s: {:.0} events/s, median {:.1} us, p99 {:.1} us (of {} timed), {transitions} transitions",
        count as f64 / secs,
        pct(0.5),
        pct(0.99),
        latencies.len()
    );
    eprintln!(
        "tracker state after the stream: {:.0} MB ({:.2}x the dataset's)",
        tracker.heap_bytes() as f64 / 1e6,
        tracker.heap_bytes() as f64 / (data.event_bytes() + data.person_bytes()) as f64,
    );
}

/// SplitMix64's finalizer: a deterministic, well-spread draw from `k`.
fn mix(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Resident set size from /proc (0 where there is none).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}
