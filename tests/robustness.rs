//! Input safety: every limit with a clear error naming it (and configurable through `Limits`),
//! and bad data files rejected with `file:line`, never a panic or a silently wrong answer.

use cohort_engine::{CohortSet, Dataset, ErrorKind, Limits, LoadOptions};
use serde_json::{json, Value};

fn one(values: Vec<Value>) -> String {
    json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": values}}}]).to_string()
}

fn errors(text: &str, limits: &Limits) -> Vec<String> {
    match CohortSet::from_json_with(text, "cohorts.json", limits) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

fn leaf() -> Value {
    json!({"type": "person", "key": "a", "operator": "is_set"})
}

fn nested(depth: usize) -> Value {
    let mut node = leaf();
    for _ in 1..depth {
        node = json!({"type": "AND", "values": [node, leaf()]});
    }
    node
}

#[test]
fn nesting_depth() {
    let limits = Limits::default();
    // The root group is depth 1; nested(n) adds n - 1 group levels under it.
    assert!(errors(&one(vec![nested(32)]), &limits).is_empty());
    let e = errors(&one(vec![nested(33)]), &limits);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("invalid_filter: cohort 1: filters.properties.values[0]"),
        "{e:?}"
    );
    assert!(
        e[0].ends_with("group nesting exceeds the limit of 32 levels (max_depth)"),
        "{e:?}"
    );
    let mut small = Limits::default();
    small.max_depth = 2;
    assert_eq!(errors(&one(vec![nested(3)]), &small).len(), 1);
    assert!(errors(&one(vec![nested(2)]), &small).is_empty());
}

#[test]
fn deep_json_is_invalid_input_not_a_stack_overflow() {
    let mut text = String::new();
    for _ in 0..100_000 {
        text.push('[');
    }
    let e = errors(&text, &Limits::default());
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("invalid_input: cohorts.json:1: not valid JSON: recursion limit exceeded"),
        "{e:?}"
    );
}

#[test]
fn node_count() {
    let many: Vec<Value> = (0..10_000).map(|_| leaf()).collect();
    // 10,000 leaves + the root group = 10,001 nodes.
    let e = errors(&one(many.clone()), &Limits::default());
    assert_eq!(
        e,
        ["invalid_filter: cohort 1: the filter tree has more than 10000 nodes (max_nodes)"]
    );
    assert!(errors(&one(many[..9_999].to_vec()), &Limits::default()).is_empty());
    let mut small = Limits::default();
    small.max_nodes = 3;
    assert!(errors(&one(vec![leaf(), leaf()]), &small).is_empty());
    assert_eq!(errors(&one(vec![leaf(), leaf(), leaf()]), &small).len(), 1);
}

#[test]
fn cohorts_per_set() {
    let mut small = Limits::default();
    small.max_cohorts = 2;
    let c =
        |id: i64| json!({"id": id, "filters": {"properties": {"type": "AND", "values": [leaf()]}}});
    assert!(errors(&json!([c(1), c(2)]).to_string(), &small).is_empty());
    assert_eq!(
        errors(&json!([c(1), c(2), c(3)]).to_string(), &small),
        ["invalid_filter: cohorts: the set has 3 cohorts, more than the limit of 2 (max_cohorts)"]
    );
}

#[test]
fn regex_pattern_length_and_compiled_size() {
    let re = |p: &str| {
        one(vec![
            json!({"type": "person", "key": "a", "operator": "regex", "value": p}),
        ])
    };
    let long = "a".repeat(10_001);
    let e = errors(&re(&long), &Limits::default());
    assert_eq!(
        e,
        ["invalid_filter: cohort 1: filters.properties.values[0].value: regex pattern of 10001 bytes exceeds the limit of 10000 bytes (max_regex_len)"]
    );
    assert!(errors(&re(&"a".repeat(10_000)), &Limits::default()).is_empty());
    // Short to write, huge to compile: a counted repetition of a Unicode class.
    let e = errors(&re(r"\w{1000}\w{1000}"), &Limits::default());
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("(max_regex_size)"), "{e:?}");
    let e = errors(&re("(unclosed"), &Limits::default());
    assert!(e[0].contains("invalid regex \"(unclosed\""), "{e:?}");
}

#[test]
fn string_and_list_lengths() {
    let mut small = Limits::default();
    small.max_string_len = 8;
    small.max_list_len = 3;
    let exact = |v: Value| {
        one(vec![
            json!({"type": "person", "key": "a", "operator": "exact", "value": v}),
        ])
    };
    assert!(errors(&exact(json!("12345678")), &small).is_empty());
    assert_eq!(
        errors(&exact(json!("123456789")), &small),
        ["invalid_filter: cohort 1: filters.properties.values[0].value: string of 9 bytes exceeds the limit of 8 bytes (max_string_len)"]
    );
    assert!(errors(&exact(json!([1, 2, 3])), &small).is_empty());
    assert_eq!(
        errors(&exact(json!([1, 2, 3, 4])), &small),
        ["invalid_filter: cohort 1: filters.properties.values[0].value: list of 4 elements exceeds the limit of 3 (max_list_len)"]
    );
    let key = one(vec![
        json!({"type": "person", "key": "x".repeat(65 * 1024), "operator": "is_set"}),
    ]);
    assert!(errors(&key, &Limits::default())[0].contains("(max_string_len)"));
}

#[test]
fn window_sizes_and_periods() {
    let b = |extra: Value| {
        let mut leaf = json!({"type": "behavioral", "key": "e", "event_type": "events",
                              "value": "performed_event_regularly", "time_value": 1, "time_interval": "day",
                              "operator_value": 1, "min_periods": 1, "total_periods": 1});
        for (k, v) in extra.as_object().unwrap() {
            leaf[k] = v.clone();
        }
        one(vec![leaf])
    };
    let d = Limits::default();
    assert!(errors(&b(json!({"time_value": 1_000_000})), &d).is_empty());
    assert_eq!(
        errors(&b(json!({"time_value": 1_000_001})), &d),
        ["invalid_filter: cohort 1: filters.properties.values[0].time_value: 1000001 exceeds the limit of 1000000 (max_integer)"]
    );
    assert_eq!(
        errors(&b(json!({"operator_value": "99999999999999999999999"})), &d),
        ["invalid_filter: cohort 1: filters.properties.values[0].operator_value: \"99999999999999999999999\" exceeds the limit of 1000000 (max_integer)"]
    );
    assert!(errors(&b(json!({"total_periods": 1000})), &d).is_empty());
    assert_eq!(
        errors(&b(json!({"total_periods": 1001})), &d),
        ["invalid_filter: cohort 1: filters.properties.values[0].total_periods: 1001 exceeds the limit of 1000 (max_total_periods)"]
    );
    // A million years back is before year 1: an unbounded window, not an overflow.
    let far = one(vec![
        json!({"type": "behavioral", "key": "e", "event_type": "events", "value": "performed_event",
                             "time_value": 1_000_000, "time_interval": "year"}),
    ]);
    let set = CohortSet::from_json(&far).unwrap();
    let data = Dataset::from_jsonl(
        "{\"id\": \"p\", \"distinct_ids\": [\"d\"]}\n",
        "{\"distinct_id\": \"d\", \"event\": \"e\", \"timestamp\": \"0001-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let members = data.evaluate(&set, 0, &Default::default()).unwrap();
    assert_eq!(members[&1], ["p"]);
}

fn load(persons: &[u8], events: &[u8]) -> Result<Dataset, String> {
    Dataset::from_readers(
        persons,
        "persons.jsonl",
        Some((events, "events.jsonl")),
        &mut LoadOptions::default(),
    )
    .map_err(|e| {
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        e.to_string()
    })
}

#[test]
fn bad_data_files() {
    let ok_person = b"{\"id\": \"p\", \"distinct_ids\": [\"d\"]}\n" as &[u8];
    let cases: Vec<(&[u8], &[u8], &str)> = vec![
        (b"{\"id\": \"p\"\n", b"", "invalid_input: persons.jsonl:1: not valid JSON: EOF while parsing an object at line 1 column 10"),
        (b"\n\n{\"id\": [1]}\n", b"", "invalid_input: persons.jsonl:3: id must be a string or an integer, got [1]"),
        (b"{\"id\": 1.5}\n", b"", "invalid_input: persons.jsonl:1: id must be a string or an integer, got 1.5"),
        (b"{\"id\": null}\n", b"", "invalid_input: persons.jsonl:1: a person needs an \"id\" (or \"uuid\")"),
        (b"{\"id\": \"a\", \"distinct_ids\": \"x\"}\n", b"", "invalid_input: persons.jsonl:1: distinct_ids must be a list, got \"x\""),
        (b"{\"id\": \"a\", \"properties\": [1]}\n", b"", "invalid_input: persons.jsonl:1: properties must be an object, got [1]"),
        (b"{\"id\": \"a\", \"properties\": {\"x\": \xff}}\n", b"", "invalid_input: persons.jsonl:1: not valid UTF-8"),
        (b"{\"id\": \"a\", \"properties\": {\"x\": 1e400}}\n", b"", "invalid_input: persons.jsonl:1: not valid JSON: number out of range at line 1 column 37"),
        (b"{\"id\": \"a\", \"properties\": {\"x\": NaN}}\n", b"", "invalid_input: persons.jsonl:1: not valid JSON: expected value at line 1 column 33"),
        (b"{\"id\": \"a\"}\n{\"uuid\": \"a\"}\n", b"", "invalid_input: persons.jsonl:2: duplicate person id \"a\""),
        (ok_person, b"{\"distinct_id\": \"d\", \"event\": \"e\", \"timestamp\": \"NaN\"}\n", "invalid_input: events.jsonl:1: timestamp \"NaN\" is not a valid date-time"),
        (ok_person, b"{\"distinct_id\": \"d\", \"event\": \"e\", \"timestamp\": \"10000-01-01T00:00:00Z\"}\n", "invalid_input: events.jsonl:1: timestamp \"10000-01-01T00:00:00Z\" is not a valid date-time"),
        (ok_person, b"{\"distinct_id\": \"d\", \"event\": \"e\", \"timestamp\": 1e300}\n", "invalid_input: events.jsonl:1: timestamp 1e+300 is out of range"),
        (ok_person, b"{\"distinct_id\": \"d\", \"event\": \"e\"}\n", "invalid_input: events.jsonl:1: an event needs a \"timestamp\""),
        (ok_person, b"{\"distinct_id\": \"d\", \"event\": 5, \"timestamp\": 0}\n", "invalid_input: events.jsonl:1: event must be a string, got 5"),
        (ok_person, b"{\"event\": \"e\", \"timestamp\": 0}\n", "invalid_input: events.jsonl:1: an event needs a \"distinct_id\""),
        // An unknown distinct id is skipped, but the line is still validated.
        (ok_person, b"{\"distinct_id\": \"zz\", \"event\": \"e\", \"timestamp\": \"bad\"}\n", "invalid_input: events.jsonl:1: timestamp \"bad\" is not a valid date-time"),
    ];
    for (persons, events, expected) in cases {
        assert_eq!(load(persons, events).err().as_deref(), Some(expected));
    }
    let d = load(ok_person, b"{\"distinct_id\": \"zz\", \"event\": \"e\", \"timestamp\": 0}\n\n{\"distinct_id\": \"d\", \"event\": \"e\", \"timestamp\": 0}\n").unwrap();
    assert_eq!((d.event_count(), d.skipped_events()), (1, 1));
    // Integer and string ids with the same string form are the same person.
    assert_eq!(
        load(b"{\"id\": 5}\n{\"id\": \"5\"}\n", b"")
            .err()
            .as_deref(),
        Some("invalid_input: persons.jsonl:2: duplicate person id \"5\"")
    );
    // A person listing its own distinct id twice is fine.
    assert!(load(b"{\"id\": \"a\", \"distinct_ids\": [\"x\", \"x\"]}\n", b"").is_ok());
}

#[test]
fn parallel_loading_keeps_line_numbers_and_results() {
    // ~6 MB of events: several parser blocks; the bad line is deep inside.
    let persons: String = (0..1000)
        .map(|i| format!("{{\"id\": \"p{i}\", \"distinct_ids\": [\"d{i}\"]}}\n"))
        .collect();
    let mut events = String::new();
    for i in 0..60_000 {
        events += &format!(
            "{{\"distinct_id\": \"d{}\", \"event\": \"e{}\", \"timestamp\": {}, \"properties\": {{\"n\": {i}, \"pad\": \"{}\"}}}}\n",
            i % 1000,
            i % 7,
            1_700_000_000 + (i * 7919) % 100_000,
            "x".repeat(40)
        );
    }
    let results: Vec<_> = [1, 2, 4]
        .iter()
        .map(|&threads| {
            let mut opts = LoadOptions::default().threads(threads);
            let d = Dataset::from_readers(persons.as_bytes(), "p", Some((events.as_bytes(), "e")), &mut opts).unwrap();
            let set = CohortSet::from_json(
                &json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
                    {"type": "behavioral", "key": "e3", "event_type": "events", "value": "performed_event_multiple",
                     "operator": "gte", "operator_value": 9, "explicit_datetime": "2023-11-15T00:00:00Z",
                     "event_filters": [{"key": "n", "operator": "gt", "value": 1000}]}]}}}])
                .to_string(),
            )
            .unwrap();
            (d.event_count(), d.evaluate(&set, 1_800_000_000_000_000, &Default::default()).unwrap())
        })
        .collect();
    assert_eq!(results[0].0, 60_000);
    assert!(!results[0].1[&1].is_empty() && results[0].1[&1].len() < 1000);
    assert!(results.iter().all(|r| *r == results[0]));

    let mut bad = events.clone();
    let at = bad.match_indices('\n').nth(49_999).unwrap().0 + 1; // start of line 50,001
    bad.insert_str(
        at,
        "{\"distinct_id\": \"d1\", \"event\": \"x\", \"timestamp\": \"oops\"}\n",
    );
    bad.push_str("not json\n");
    for threads in [1, 3] {
        let mut opts = LoadOptions::default().threads(threads);
        let e = Dataset::from_readers(
            persons.as_bytes(),
            "p",
            Some((bad.as_bytes(), "e")),
            &mut opts,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid_input: e:50001: timestamp \"oops\" is not a valid date-time"
        );
    }
}
