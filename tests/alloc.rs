//! Evaluating a person does not allocate once its `Scratch` has warmed up: a counting allocator
//! (counting only on the test's own thread) checks it for person and behavioral cohorts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cohort_engine::time::parse_absolute;
use cohort_engine::{Engine, Scratch};
use serde_json::json;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations(f: impl FnOnce()) -> usize {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

#[test]
fn evaluation_does_not_allocate_after_warm_up() {
    let engine = Engine::from_json(
        &json!([
            {"id": 1, "filters": {"properties": {"type": "AND", "values": [
                {"type": "person", "key": "plan", "operator": "exact", "value": ["pro", "enterprise"]},
                {"type": "person", "key": "name", "operator": "icontains", "value": "ÉC"},
                {"type": "person", "key": "age", "operator": "gte", "value": 18},
                {"type": "person", "key": "email", "operator": "regex", "value": "@acme\\.io$"},
                {"type": "person", "key": "seen", "operator": "is_date_after", "value": "-30d"}]}}},
            {"id": 2, "filters": {"properties": {"type": "AND", "values": [
                {"type": "cohort", "key": "id", "value": 1},
                {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event_multiple",
                 "operator": "gte", "operator_value": 2, "time_value": 7, "time_interval": "day",
                 "event_filters": [{"type": "event", "key": "browser", "operator": "icontains", "value": "chr"}]},
                {"type": "behavioral", "key": "signup", "event_type": "events", "value": "performed_event_sequence",
                 "time_value": 30, "time_interval": "day", "seq_event": "login", "seq_event_type": "events",
                 "seq_time_value": 1, "seq_time_interval": "month"}]}}}
        ])
        .to_string(),
    )
    .unwrap();
    let now = parse_absolute("2024-06-15T12:00:00Z").unwrap();
    let props = json!({"plan": "Pro", "name": "Éclair", "age": 36, "email": "ada@acme.io", "seen": "2024-06-01"});
    let person = engine.person("p", &[], props.as_object().unwrap());
    let mut history = engine.history();
    let day = 86_400_000_000;
    engine.record(&mut history, "signup", now - 5 * day, &Default::default());
    for k in 1..4 {
        engine.record(
            &mut history,
            "login",
            now - k * day,
            json!({"browser": "Chrome"}).as_object().unwrap(),
        );
    }
    // The counter sees allocations.
    assert_eq!(
        allocations(|| drop(std::hint::black_box(Vec::<u8>::with_capacity(16)))),
        1
    );
    let mut scratch = Scratch::new();
    assert!(
        engine
            .matches(2, &person, &history, now, &mut scratch)
            .unwrap(),
        "warm-up"
    );
    let n = allocations(|| {
        for k in 0..100 {
            // A moving `now` re-binds the time slots each time: that must not allocate either.
            let t = now + k;
            assert!(engine
                .matches(2, &person, &history, t, &mut scratch)
                .unwrap());
            assert!(engine
                .matches(1, &person, &history, t, &mut scratch)
                .unwrap());
        }
    });
    assert_eq!(n, 0, "allocations during 200 warmed-up evaluations");
}
