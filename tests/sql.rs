//! The SQL back end without ClickHouse: literal escaping, the shape of the generated SELECT,
//! window literals computed from `now`, references, and what is refused. (The differential test
//! against the in-memory engine is `tests/sql_diff/run.py`.)

use cohort_engine::sql::{cohort_sql, quote_ident, quote_string, SqlOptions, Tables};
use cohort_engine::{time, CohortSet, ErrorKind};
use serde_json::json;

const NOW: &str = "2024-03-31T12:00:00Z";

fn now() -> i64 {
    time::parse_absolute(NOW).unwrap()
}

fn set(cohorts: serde_json::Value) -> CohortSet {
    CohortSet::from_json(&cohorts.to_string()).unwrap()
}

fn person(key: &str, op: &str, value: serde_json::Value) -> serde_json::Value {
    json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
        {"type": "person", "key": key, "operator": op, "value": value}]}}}])
}

fn sql_of(cohorts: serde_json::Value) -> String {
    cohort_sql(&set(cohorts), 1, &SqlOptions::new(now())).unwrap()
}

/// Every single-quoted literal of `sql` is well formed: scanning with ClickHouse's escape rules
/// never ends a literal early, so the statement's code part is only what the generator wrote.
fn code_outside_literals(sql: &str) -> String {
    let mut out = String::new();
    let mut chars = sql.chars();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => in_str = false,
                '\0' | '\n' | '\r' => panic!("raw control character inside a literal"),
                _ => {}
            }
        } else if c == '\'' {
            in_str = true;
            out.push_str("'…'");
        } else {
            out.push(c);
        }
    }
    assert!(!in_str, "unterminated literal");
    out
}

const HOSTILE: &[&str] = &[
    "'); DROP TABLE x; --",
    "a'b",
    "back\\slash",
    "trailing\\",
    "nul\0byte",
    "new\nline\r\n",
    "tab\t\u{1}\u{7f}",
    "`backtick`",
    "*/ SELECT 1 /*",
    "\\'; DROP TABLE persons; --",
];

#[test]
fn string_literals_escape_everything_that_could_end_them() {
    assert_eq!(quote_string("a'b"), r"'a\'b'");
    assert_eq!(quote_string("a\\b"), r"'a\\b'");
    assert_eq!(quote_string("a\0b\nc"), r"'a\0b\nc'");
    assert_eq!(quote_string("\u{1}"), r"'\x01'");
    assert_eq!(quote_string("é Σ"), "'é Σ'");
    for h in HOSTILE {
        let q = quote_string(h);
        assert_eq!(code_outside_literals(&q), "'…'", "{h:?} → {q}");
    }
}

#[test]
fn identifiers_are_backquoted() {
    assert_eq!(quote_ident("events"), "`events`");
    assert_eq!(quote_ident("db.events"), "`db`.`events`");
    assert_eq!(quote_ident("a`b"), "`a\\`b`");
}

#[test]
fn hostile_keys_values_and_event_names_stay_inside_literals() {
    let mut cohorts = Vec::new();
    for (i, h) in HOSTILE.iter().enumerate() {
        cohorts.push(json!({"id": i as i64 + 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": h, "operator": "exact", "value": h},
            {"type": "person", "key": h, "operator": "icontains", "value": [h, "x"]},
            {"type": "person", "key": h, "operator": "regex", "value": regex_escape(h)},
            {"type": "behavioral", "key": h, "event_type": "events", "value": "performed_event_sequence",
             "time_value": 7, "time_interval": "day", "seq_event": h, "seq_event_type": "events", "seq_time_value": 1,
             "seq_time_interval": "day",
             "event_filters": [{"type": "event", "key": h, "operator": "is_not", "value": h}]}
        ]}}}));
    }
    let set = set(json!(cohorts));
    for c in set.cohorts() {
        let sql = cohort_sql(&set, c.id, &SqlOptions::new(now())).unwrap();
        let code = code_outside_literals(&sql);
        for h in HOSTILE {
            if h.len() > 3 {
                assert!(!code.contains(h), "{h:?} leaked into the code:\n{code}");
            }
        }
        assert!(!code.to_uppercase().contains("DROP TABLE"));
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\\' | '.' | '*' | '(' | ')' | '|' | '[' | ']' | '{' | '}' | '+' | '?' | '^' | '$' => {
                format!("\\{c}")
            }
            '\0' => "\\x00".into(),
            c => c.to_string(),
        })
        .collect()
}

#[test]
fn shape_is_one_select_over_persons() {
    let sql = sql_of(person("plan", "exact", json!("Pro")));
    assert!(sql.starts_with("SELECT person_id FROM (\nSELECT p.person_id AS person_id,"));
    assert!(sql.ends_with(") WHERE is_member"));
    assert!(sql.contains("FROM `persons` AS p"));
    // Case-insensitive: the needle is lower-cased here, the value with lowerUTF8.
    assert!(sql.contains("IN ('pro')"));
    assert!(sql.contains("lowerUTF8("));
    assert!(!sql.contains(';'));
}

#[test]
fn table_names_are_configurable() {
    let cohorts = json!([
        {"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event",
             "time_value": 1, "time_interval": "day"},
            {"type": "cohort", "key": "id", "value": 2}]}}},
        {"id": 2, "is_static": true, "static_person_ids": ["a"]}
    ]);
    let mut tables = Tables::default();
    tables.persons = "db.p".into();
    tables.person_distinct_ids = "db.pdi".into();
    tables.events = "db.ev".into();
    tables.static_cohort_members = "db.st".into();
    let opts = SqlOptions::new(now()).with_tables(tables);
    let sql = cohort_sql(&set(cohorts), 1, &opts).unwrap();
    for t in ["`db`.`p`", "`db`.`pdi`", "`db`.`ev`", "`db`.`st`"] {
        assert!(sql.contains(t), "{t} missing:\n{sql}");
    }
    assert!(sql.contains("s.cohort_id = 2"));
}

#[test]
fn windows_are_literals_computed_from_now() {
    let cohorts = json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
        {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event",
         "time_value": 1, "time_interval": "month"}]}}}]);
    let sql = sql_of(cohorts);
    // 2024-03-31 minus one calendar month clamps to 2024-02-29; both bounds strict.
    assert!(sql.contains("e.timestamp > fromUnixTimestamp64Micro(toInt64(1709208000000000), 'UTC') /* 2024-02-29T12:00:00.000000Z */"), "{sql}");
    assert!(
        sql.contains("e.timestamp < fromUnixTimestamp64Micro(toInt64(1711886400000000), 'UTC')")
    );
    assert!(!sql.contains("now()"));
    assert!(!sql.contains("INTERVAL"));
}

#[test]
fn unbounded_windows_fold_to_constants() {
    let cohorts = json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
        {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event",
         "time_value": 1000000, "time_interval": "year"}]}}}]);
    let sql = sql_of(cohorts);
    assert!(
        sql.contains("WHERE e.event = 'login' AND 1 AND e.timestamp <"),
        "{sql}"
    );
}

#[test]
fn references_are_columns_in_dependency_order() {
    let cohorts = json!([
        {"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "cohort", "key": "id", "value": 3},
            {"type": "cohort", "key": "id", "value": 2, "operator": "not_in"},
            {"type": "cohort", "key": "id", "value": 4, "negation": true}]}}},
        {"id": 2, "filters": {"properties": {"type": "AND", "values": [
            {"type": "cohort", "key": "id", "value": 3}]}}},
        {"id": 3, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "a", "operator": "is_set", "value": "is_set"}]}}},
        {"id": 4, "deleted": true}
    ]);
    let sql = sql_of(cohorts);
    let p3 = sql.find("AS cohort_3").unwrap();
    let p2 = sql.find("AS cohort_2").unwrap();
    assert!(p3 < p2);
    assert!(
        !sql.contains("AS cohort_4"),
        "deleted cohorts are empty, not computed"
    );
    assert!(sql.contains("NOT (cohort_2)"));
    assert!(sql.contains("NOT (0)"));
}

#[test]
fn deleted_and_absent_cohorts_are_unknown() {
    let s = set(json!([{"id": 1, "deleted": true}, {"id": 2, "is_static": true}]));
    let e = cohort_sql(&s, 1, &SqlOptions::new(now())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownCohort);
    let e = cohort_sql(&s, 9, &SqlOptions::new(now())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnknownCohort);
    assert!(cohort_sql(&s, 2, &SqlOptions::new(now())).is_ok());
}

#[test]
fn regexes_are_translated_to_re2() {
    let sql = sql_of(person("v", "regex", json!(r"^\d+\s?$")));
    assert!(sql.contains(r"'(?-s)^\\p{Nd}+["), "{sql}");
    assert!(sql.contains(r"\\x{3000}]?$'"));
}

#[test]
fn refused_constructs_name_themselves() {
    for (op, value, needle) in [
        ("regex", json!(r"\w+"), r"\w"),
        ("not_regex", json!(r"\bfoo"), r"\b"),
        ("regex", json!(r"(?x) a b"), "flag 'x'"),
        ("regex", json!(r"[\S]"), r"\S inside a class"),
        ("regex", json!(r"[a[b]]"), "nested character class"),
        ("regex", json!(r"a{1001}"), "repetition"),
        (
            "exact",
            json!(["[1,2]", "x"]),
            "could only equal a JSON array or object",
        ),
    ] {
        let s = set(person("v", op, value.clone()));
        let e = cohort_sql(&s, 1, &SqlOptions::new(now())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidFilter, "{op} {value}");
        let text = e.to_string();
        assert!(text.contains(needle), "{text}");
        assert!(text.contains("filters.properties.values[0]"), "{text}");
    }
}

#[test]
fn refusals_in_referenced_cohorts_propagate() {
    let cohorts = json!([
        {"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "cohort", "key": "id", "value": 2}]}}},
        {"id": 2, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "v", "operator": "regex", "value": "\\w"}]}}}
    ]);
    let e = cohort_sql(&set(cohorts), 1, &SqlOptions::new(now())).unwrap_err();
    assert!(e.to_string().contains("cohort 2"), "{e}");
}

#[test]
fn every_behavioral_type_generates() {
    let leaves = [
        json!({"value": "performed_event", "explicit_datetime": "-3d"}),
        json!({"value": "performed_event_multiple", "operator": "lte", "operator_value": 2, "time_value": 7, "time_interval": "day"}),
        json!({"value": "performed_event_first_time", "time_value": 7, "time_interval": "week"}),
        json!({"value": "stopped_performing_event", "time_value": 30, "time_interval": "day", "seq_time_value": 7, "seq_time_interval": "day"}),
        json!({"value": "restarted_performing_event", "time_value": 30, "time_interval": "day", "seq_time_value": 7, "seq_time_interval": "day"}),
        json!({"value": "performed_event_sequence", "time_value": 30, "time_interval": "day", "seq_event": "buy", "seq_event_type": "events", "seq_time_value": 1, "seq_time_interval": "month"}),
        json!({"value": "performed_event_regularly", "operator": "gte", "operator_value": 1, "time_value": 1, "time_interval": "week", "min_periods": 2, "total_periods": 3}),
    ];
    for mut leaf in leaves {
        let obj = leaf.as_object_mut().unwrap();
        obj.insert("type".into(), json!("behavioral"));
        obj.insert("key".into(), json!("login"));
        obj.insert("event_type".into(), json!("events"));
        obj.insert(
            "event_filters".into(),
            json!([{"type": "event", "key": "amount", "operator": "gt", "value": 10}]),
        );
        let cohorts = json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "a", "operator": "is_set", "value": "is_set"}, leaf.clone()]}}}]);
        let sql = sql_of(cohorts);
        assert!(
            sql.contains("INNER JOIN `person_distinct_ids` AS pdi"),
            "{leaf}"
        );
        assert!(sql.contains("JSONType(e.properties, 'amount')"), "{leaf}");
        code_outside_literals(&sql);
    }
}

#[test]
fn restarted_recent_window_starts_at_s_even_before_t() {
    // 52 weeks back is 2023-06-17T12:00 (T), 12 months back is 2023-06-15T12:00 (S < T): the
    // recent window is (S, now] literally (SEMANTICS §C.3.5), not (max(T, S), now].
    let cohorts = json!([{"id": 1, "filters": {"properties": {"type": "AND", "values": [
        {"type": "behavioral", "key": "login", "event_type": "events",
         "value": "restarted_performing_event", "time_value": 52, "time_interval": "week",
         "seq_time_value": 12, "seq_time_interval": "month"}]}}}]);
    let sql = cohort_sql(
        &set(cohorts),
        1,
        &SqlOptions::new(time::parse_absolute("2024-06-15T12:00:00Z").unwrap()),
    )
    .unwrap();
    let recent = sql.rsplit("countIf(").next().unwrap();
    assert!(
        recent.starts_with("e.timestamp > fromUnixTimestamp64Micro(toInt64(1686830400000000)"),
        "{sql}"
    );
}
