//! The criterion bench's two single-person cohorts (`single_person/*` in `benches/eval.rs`, set
//! up by the same code) in a plain loop: `Engine::matches` on the same person and cohort, N
//! calls per round, the best round's time per call. Steadier than criterion's mean on a noisy
//! host, and small enough to count instructions under callgrind (run it with N and with 0,
//! subtract, divide by N).
//!
//!     cargo run --release --example single_person -- N [ROUNDS] [p|b]
//!
//! `p` (default): five person leaves; `b`: four behavioral leaves over 1,000 events.

use std::hint::black_box;
use std::time::Instant;

use cohort_engine::Scratch;

#[path = "../benches/common/single_person.rs"]
mod single_person;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: single_person N [ROUNDS] [p|b]";
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).expect(usage);
    let rounds: u64 = args.get(2).map_or(1, |s| s.parse().expect(usage));
    let (engine, person, history) = match args.get(3).map(String::as_str) {
        None | Some("p") => single_person::person_cohort(),
        Some("b") => single_person::behavioral_cohort(),
        Some(_) => panic!("{usage}"),
    };
    let now = single_person::now();
    let mut scratch = Scratch::new();
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let started = Instant::now();
        let mut members = 0u64;
        for _ in 0..n {
            let hit = black_box(&engine)
                .matches(1, black_box(&person), &history, now, &mut scratch)
                .unwrap();
            members += u64::from(hit);
        }
        best = best.min(started.elapsed().as_nanos() as f64 / n.max(1) as f64);
        black_box(members);
    }
    println!("{best:.2} ns/call");
}
