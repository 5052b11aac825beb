//! Evaluation time per cohort, after load: for each cohort of a dataset directory
//! (`cohort-engine generate` output), `Dataset::evaluate_bitsets` for that cohort alone (with the
//! cohorts it references), cold (the first run, which also builds the column caches: folded
//! dictionaries, parsed dates) and warm (best of N); then all cohorts at once, bitsets only and
//! with member lists. The per-cohort figures are what `bench/compare` sets against each peer's
//! query for the cohort.
//!
//!     cargo run --release --example cohort_times -- DIR [THREADS] [RUNS] [NOW]

use std::time::Instant;

use cohort_engine::{BatchOptions, CohortSet, Dataset, LoadOptions, Projection, Timestamp};

fn ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: cohort_times DIR [THREADS] [RUNS] [NOW]";
    let dir = std::path::PathBuf::from(args.first().expect(usage));
    let threads: usize = args.get(1).map_or(0, |s| s.parse().expect(usage));
    let runs: usize = args.get(2).map_or(10, |s| s.parse().expect(usage)).max(1);
    let now: Timestamp = args
        .get(3)
        .map_or("2026-11-01T00:00:00Z", String::as_str)
        .parse()
        .expect("NOW must be a date-time");
    let set = CohortSet::from_json(
        &std::fs::read_to_string(dir.join("cohorts.json")).expect("cohorts.json"),
    )
    .expect("valid cohorts");
    let data = Dataset::from_paths(
        &dir.join("persons.jsonl"),
        Some(&dir.join("events.jsonl")),
        &mut LoadOptions::default().projection(Projection::of(&set)),
    )
    .expect("data loads");
    let program = data.compile(&set).expect("compiles");
    println!("cohort   cold ms   warm ms (best of {runs}, {threads} threads; 0 = all cores)");
    for c in set.cohorts() {
        let opts = BatchOptions::default().cohorts([c.id]).threads(threads);
        let (mut cold, mut warm) = (0.0, f64::MAX);
        for run in 0..=runs {
            let started = Instant::now();
            data.evaluate_bitsets(&program, now, &opts)
                .expect("evaluates");
            let t = ms(started);
            if run == 0 {
                cold = t;
            } else {
                warm = warm.min(t);
            }
        }
        println!("{:>6} {cold:>9.2} {warm:>9.2}", c.id);
    }
    let opts = BatchOptions::default().threads(threads);
    let (mut bits, mut lists) = (f64::MAX, f64::MAX);
    for _ in 0..runs {
        let started = Instant::now();
        data.evaluate_bitsets(&program, now, &opts)
            .expect("evaluates");
        bits = bits.min(ms(started));
        let started = Instant::now();
        data.evaluate_program(&program, now, &opts)
            .expect("evaluates");
        lists = lists.min(ms(started));
    }
    println!("all cohorts, warm: bitsets {bits:.2} ms, member lists {lists:.2} ms");
}
