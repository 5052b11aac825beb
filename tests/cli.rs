//! CLI golden tests: run the binary on files and check stdout, exit status and error lines
//! (`CLI.md` §1).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_cohort-engine");
const NOW: &str = "2024-06-15T12:00:00Z";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data")
}

/// A fresh temporary directory for one test.
fn tempdir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cohort-engine-cli-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run binary")
}

/// Starts the binary with its standard streams piped.
fn spawn_piped(args: &[impl AsRef<std::ffi::OsStr>]) -> std::process::Child {
    Command::new(BIN)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs the binary with `input` on its standard input.
fn run_with_stdin(args: &[impl AsRef<std::ffi::OsStr>], input: &str) -> Output {
    let mut child = spawn_piped(args);
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn eval_examples(extra: &[&str]) -> Output {
    let ex = examples();
    let (c, p, e) = (
        ex.join("cohorts.json").display().to_string(),
        ex.join("persons.jsonl").display().to_string(),
        ex.join("events.jsonl").display().to_string(),
    );
    let mut args = vec![
        "eval",
        "--cohorts",
        &c,
        "--persons",
        &p,
        "--events",
        &e,
        "--now",
        NOW,
        "--quiet",
    ];
    args.extend_from_slice(extra);
    run(&args)
}

/// Expected members of the example data at 2024-06-15T12:00:00Z, worked out by hand:
/// 1 plan in [pro, enterprise], case-insensitive (42's plan is null = missing);
/// 2 has an email, not gmail, not matching @acme\.(io|com)$ (negated regex);
/// 3 ≥3 logins in (06-08 12:00, now) — ada 10th/12th/14th — or a purchase over 100 — grace's
///   250 at 13:30Z; linus's "99.5" is not over 100; 42's login at 13:00 is after now;
/// 4 in 1 and logins in (05-16, 06-08] but none in (06-08, now]: grace (05-20, 06-01);
/// 5 signup then upgrade within 3 days: ada (49 h); margaret's took 7 days;
/// 6 ≥2 logins in 3 of the 4 weekly periods ending now: ada (3, 2, 2, 0);
/// 7 static list [u-ada, d-grace-phone] (a distinct id of grace);
/// 8 age ≥ 18, app_version ≥ 2.1.0 (pre-release ignored), not in 7: margaret;
/// 9 legacy: city Berlin (case-insensitive: grace, 42) or pricing_viewed ≥2 in 30 days (linus:
///   epoch-ms 1717900000000 and 06-11);
/// 10 signed up in the last 30 days and first signup event in the last 30 days: ada, margaret
///   (1717000000 = 2024-05-29T16:26:40Z); 11 is deleted and not printed.
const EXAMPLE_OUTPUT: &str = r#"{"1":["u-ada","u-grace","u-margaret"],"2":["u-grace","u-margaret"],"3":["u-ada","u-grace"],"4":["u-grace"],"5":["u-ada"],"6":["u-ada"],"7":["u-ada","u-grace"],"8":["u-margaret"],"9":["42","u-grace","u-linus"],"10":["u-ada","u-margaret"]}
"#;

#[test]
fn example_data_golden_output() {
    let o = eval_examples(&[]);
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(&o));
    assert_eq!(stdout(&o), EXAMPLE_OUTPUT);
    assert_eq!(stderr(&o), "", "--quiet prints nothing on success");
}

#[test]
fn thread_count_never_changes_output() {
    for t in ["1", "2", "3", "7"] {
        assert_eq!(
            stdout(&eval_examples(&["--threads", t])),
            EXAMPLE_OUTPUT,
            "--threads {t}"
        );
    }
}

#[test]
fn cohort_flag_selects_and_still_evaluates_references() {
    let o = eval_examples(&["--cohort", "8", "--cohort", "4"]);
    assert_eq!(stdout(&o), "{\"4\":[\"u-grace\"],\"8\":[\"u-margaret\"]}\n");
}

#[test]
fn partitions_union_to_the_whole() {
    let whole: serde_json::Value = serde_json::from_str(EXAMPLE_OUTPUT).unwrap();
    for n in [1u32, 2, 3, 5] {
        let mut union: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for i in 0..n {
            let part = format!("{i}/{n}");
            let o = eval_examples(&["--partition", &part]);
            assert_eq!(o.status.code(), Some(0));
            let v: std::collections::BTreeMap<String, Vec<String>> =
                serde_json::from_str(&stdout(&o)).unwrap();
            for (k, ids) in v {
                union.entry(k).or_default().extend(ids);
            }
        }
        for ids in union.values_mut() {
            ids.sort();
        }
        assert_eq!(serde_json::to_value(&union).unwrap(), whole, "n = {n}");
    }
}

#[test]
fn progress_goes_to_stderr_without_quiet() {
    let ex = examples();
    let o = run(&[
        "eval",
        "--cohorts",
        &ex.join("cohorts.json").display().to_string(),
        "--persons",
        &ex.join("persons.jsonl").display().to_string(),
        "--events",
        &ex.join("events.jsonl").display().to_string(),
        "--now",
        NOW,
    ]);
    assert_eq!(stdout(&o), EXAMPLE_OUTPUT);
    let err = stderr(&o);
    assert!(err.contains("loaded 6 persons and 20 events"), "{err}");
    assert!(err.contains("skipped 1 events"), "{err}");
}

#[test]
fn gzip_data_files_are_read() {
    let dir = tempdir();
    let ex = examples();
    for name in ["persons.jsonl", "events.jsonl"] {
        let text = std::fs::read(ex.join(name)).unwrap();
        let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
        let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        gz.write_all(&text).unwrap();
        gz.finish().unwrap();
    }
    let o = run(&[
        "eval",
        "--cohorts",
        &ex.join("cohorts.json").display().to_string(),
        "--persons",
        &dir.join("persons.jsonl.gz").display().to_string(),
        "--events",
        &dir.join("events.jsonl.gz").display().to_string(),
        "--now",
        NOW,
        "--quiet",
    ]);
    assert_eq!(stdout(&o), EXAMPLE_OUTPUT, "{}", stderr(&o));
}

fn expect_errors(o: &Output, lines: &[&str]) {
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(o), "", "stdout must be empty on error");
    let got: Vec<&str> = std::str::from_utf8(&o.stderr).unwrap().lines().collect();
    assert_eq!(got, lines);
}

#[test]
fn usage_errors() {
    let ex = examples().join("cohorts.json").display().to_string();
    let o = run(&[
        "eval",
        "--cohorts",
        &ex,
        "--persons",
        "x",
        "--now",
        "yesterday",
    ]);
    expect_errors(&o, &["error: usage: --now must be an RFC 3339 date-time or a naive ISO date/date-time, got \"yesterday\""]);
    for bad in ["3/3", "1", "a/b", "-1/2", "1/0"] {
        let o = run(&[
            "eval",
            "--cohorts",
            &ex,
            "--persons",
            "x",
            "--partition",
            bad,
        ]);
        expect_errors(
            &o,
            &["error: usage: --partition must be I/N with 0 <= I < N"],
        );
    }
    let o = run(&["eval", "--persons", "x"]);
    expect_errors(&o, &["error: usage: missing --cohorts <FILE>"]);
    let o = run(&["eval"]);
    expect_errors(
        &o,
        &["error: usage: missing --cohorts <FILE>, --persons <FILE>"],
    );
    let o = run(&["eval", "--cohorts", &ex, "--persons", "x", "--threads"]);
    expect_errors(
        &o,
        &["error: usage: a value is required for '--threads <N>' but none was supplied"],
    );
    let o = run(&["frobnicate"]);
    assert!(stderr(&o).starts_with("error: usage: "), "{}", stderr(&o));
    let o = run(&["eval", "--cohorts", &ex, "--persons", "x", "--threads", "0"]);
    expect_errors(
        &o,
        &["error: usage: --threads must be a positive integer, got \"0\""],
    );
}

#[test]
fn filter_errors_are_all_reported_in_order() {
    let dir = tempdir();
    let cohorts = write(
        &dir,
        "cohorts.json",
        r#"[
          {"id": 4, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "a", "operator": "exact", "value": 1},
            {"type": "AND", "values": [{"type": "person", "key": "b", "operator": "startswith", "value": "x"}]},
            {"type": "cohort", "key": "id", "value": 99}]}}},
          {"id": 2, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "age", "operator": "gt", "value": "old"},
            {"type": "cohort", "key": "id", "value": 3}]}}},
          {"id": 3, "filters": {"properties": {"type": "AND", "values": [{"type": "cohort", "key": "id", "value": 2}]}}}
        ]"#,
    );
    let persons = write(&dir, "persons.jsonl", "");
    let o = run(&[
        "eval",
        "--cohorts",
        &cohorts,
        "--persons",
        &persons,
        "--now",
        NOW,
    ]);
    expect_errors(
        &o,
        &[
            "error: invalid_filter: cohort 2: filters.properties.values[0].value: operator gt needs a number, got \"old\"",
            "error: invalid_filter: cohort 4: filters.properties.values[1].values[0].operator: unknown operator \"startswith\" (expected one of exact, is_not, in, not_in, icontains, not_icontains, icontains_multi, not_icontains_multi, regex, not_regex, gt, gte, lt, lte, min, max, between, not_between, is_set, is_not_set, is_date_before, is_date_after, is_date_exact, semver_eq, semver_neq, semver_gt, semver_gte, semver_lt, semver_lte, semver_tilde, semver_caret, semver_wildcard)",
            "error: unknown_cohort: cohort 4: filters.properties.values[2].value: cohort 99 is not in the set",
            "error: cycle: cohort 2 → 3 → 2",
        ],
    );
}

#[test]
fn unknown_cohort_flag_is_checked_before_data_files() {
    let ex = examples().join("cohorts.json").display().to_string();
    // The persons file does not exist: the --cohort error must come first.
    let o = run(&[
        "eval",
        "--cohorts",
        &ex,
        "--persons",
        "/nonexistent",
        "--cohort",
        "99",
        "--cohort",
        "11",
    ]);
    expect_errors(
        &o,
        &[
            "error: unknown_cohort: --cohort 99: cohort 99 is not in the set",
            "error: unknown_cohort: --cohort 11: cohort 11 is not in the set",
        ],
    );
}

#[test]
fn invalid_input_names_file_and_line() {
    let dir = tempdir();
    let cohorts = write(
        &dir,
        "cohorts.json",
        r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [{"type": "person", "key": "a", "operator": "is_set"}]}}}]"#,
    );
    let persons = write(&dir, "persons.jsonl", "{\"id\": \"a\"}\n\n[1, 2]\n");
    let o = run(&[
        "eval",
        "--cohorts",
        &cohorts,
        "--persons",
        &persons,
        "--now",
        NOW,
    ]);
    expect_errors(
        &o,
        &[&format!(
            "error: invalid_input: {persons}:3: expected a JSON object"
        )],
    );

    let persons = write(
        &dir,
        "persons2.jsonl",
        "{\"id\": \"a\", \"distinct_ids\": [\"x\"]}\n{\"id\": \"b\", \"distinct_ids\": [\"x\"]}\n",
    );
    let o = run(&[
        "eval",
        "--cohorts",
        &cohorts,
        "--persons",
        &persons,
        "--now",
        NOW,
    ]);
    expect_errors(
        &o,
        &[&format!(
            "error: invalid_input: {persons}:2: distinct id \"x\" is already owned by person \"a\""
        )],
    );

    let persons = write(&dir, "persons3.jsonl", "{\"id\": 5}\n{\"id\": \"5\"}\n");
    let o = run(&[
        "eval",
        "--cohorts",
        &cohorts,
        "--persons",
        &persons,
        "--now",
        NOW,
    ]);
    expect_errors(
        &o,
        &[&format!(
            "error: invalid_input: {persons}:2: duplicate person id \"5\""
        )],
    );

    let persons = write(
        &dir,
        "persons4.jsonl",
        "{\"id\": \"a\", \"distinct_ids\": [\"x\"]}\n",
    );
    let events = write(
        &dir,
        "events.jsonl",
        "{\"distinct_id\": \"x\", \"event\": \"e\", \"timestamp\": \"2024-13-01\"}\n",
    );
    let o = run(&[
        "eval",
        "--cohorts",
        &cohorts,
        "--persons",
        &persons,
        "--events",
        &events,
        "--now",
        NOW,
    ]);
    expect_errors(
        &o,
        &[&format!(
            "error: invalid_input: {events}:1: timestamp \"2024-13-01\" is not a valid date-time"
        )],
    );

    let bad_cohorts = write(
        &dir,
        "bad.json",
        r#"[{"id": 1}, {"name": "x"}, 5, {"id": 1}]"#,
    );
    let o = run(&["eval", "--cohorts", &bad_cohorts, "--persons", &persons]);
    expect_errors(
        &o,
        &[
            &format!("error: invalid_input: {bad_cohorts}: [1]: expected an integer \"id\" between 0 and 2^63-1, got nothing"),
            &format!("error: invalid_input: {bad_cohorts}: [2]: expected a cohort object"),
            &format!("error: invalid_input: {bad_cohorts}: [3]: duplicate cohort id 1 (first at element 0)"),
        ],
    );
}

#[test]
fn paginated_list_response_is_accepted() {
    let dir = tempdir();
    let cohorts = write(
        &dir,
        "cohorts.json",
        r#"{"count": 1, "next": null, "previous": null, "results": [
            {"id": 7, "name": "x", "created_by": {"id": 1}, "bytecode": [], "filters": {"properties": {"type": "OR", "values": [
              {"type": "person", "key": "email", "operator": "icontains", "value": "@posthog.com"}]}}}]}"#,
    );
    let persons = write(&dir, "p.jsonl", "{\"id\": \"b\", \"properties\": {\"email\": \"X@PostHog.com\"}}\n{\"id\": \"a\", \"properties\": {}}\n");
    let o = run(&[
        "eval",
        "--cohorts",
        &cohorts,
        "--persons",
        &persons,
        "--now",
        NOW,
        "--quiet",
    ]);
    assert_eq!(stdout(&o), "{\"7\":[\"b\"]}\n");
}

fn data_args() -> Vec<String> {
    let ex = examples();
    vec![
        "--cohorts".into(),
        ex.join("cohorts.json").display().to_string(),
        "--persons".into(),
        ex.join("persons.jsonl").display().to_string(),
        "--events".into(),
        ex.join("events.jsonl").display().to_string(),
        "--now".into(),
        NOW.into(),
        "--quiet".into(),
    ]
}

#[test]
fn explain_text_and_json() {
    let mut args = vec!["explain".to_string()];
    args.extend(data_args());
    args.extend(["--cohort", "4", "--person", "d-grace"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    // Grace is in cohort 4: paying (plan "pro"), logins on 05-20 and 06-01 inside (05-16, 06-08]
    // and none since. The window slides past her 06-01 login at 07-01T08:00.
    assert!(
        text.starts_with(
            "cohort 4 for person \"u-grace\" at 2024-06-15T12:00:00.000000Z: member\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("valid until 2024-07-01T08:00:00.000000Z"),
        "{text}"
    );
    assert!(text.contains("✓ cohort {\"cohort\":1,\"member\":true,\"operator\":\"in\"}  @ filters.properties.values[0]"), "{text}");

    args.extend(["--format", "json"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = run(&refs);
    let line = stdout(&o);
    assert!(line.starts_with("{\"cohort\":4,\"person\":\"u-grace\",\"now\":\"2024-06-15T12:00:00.000000Z\",\"result\":true,"), "{line}");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let tree = &v["tree"];
    assert_eq!(tree["kind"], "AND");
    assert_eq!(tree["children"][1]["type"], "stopped_performing_event");
    assert_eq!(tree["children"][1]["in_window"]["matching_events"], 2);
    assert_eq!(
        tree["children"][1]["in_recent_window"]["matching_events"],
        0
    );
    assert_eq!(
        tree["children"][0]["children"][0]["children"][0]["seen"],
        "pro"
    );

    let mut bad = vec!["explain".to_string()];
    bad.extend(data_args());
    bad.extend(["--cohort", "4", "--person", "nobody"].map(String::from));
    let refs: Vec<&str> = bad.iter().map(String::as_str).collect();
    expect_errors(
        &run(&refs),
        &["error: usage: --person \"nobody\": no person has this id or distinct id"],
    );
}

#[test]
fn watch_prints_transitions_per_input_line() {
    let mut args = vec!["watch".to_string()];
    args.extend(data_args());
    let input = [
        r#"{"distinct_id": "d-linus", "$set": {"plan": "PRO"}}"#,
        r#"{"distinct_id": "d-grace", "event": "login", "timestamp": "2024-06-15T11:00:00Z"}"#,
        "garbage",
        r#"{"$now": "2024-06-17T08:00:00Z"}"#,
        r#"{"$now": "2024-06-16T00:00:00Z"}"#,
        r#"{"distinct_id": "d-margaret", "$delete": true}"#,
        r#"{"distinct_id": "newbie", "$set": {"age": 20, "app_version": "2.2.0"}}"#,
        r#"{"distinct_id": "d-ada", "$unset": ["plan"]}"#,
        r#"{"distinct_id": "ghost", "event": "login", "timestamp": "2024-06-17T07:00:00Z"}"#,
    ]
    .join("\n");
    let o = run_with_stdin(&args, &input);
    assert_eq!(o.status.code(), Some(0));
    // Worked out by hand:
    // 1 linus's plan becomes "PRO": enters 1 (case-insensitive); nothing else changes for him.
    // 2 a login now inside grace's recent window: she leaves 4 (stopped performing).
    // 4 at 06-17T08:00 ada's 06-10T08:00 login leaves the 7-day window: 2 logins, leaves 3.
    // 5 time going backwards is refused (stderr), 3 is not JSON (stderr).
    // 6 margaret is deleted: she leaves 1, 2, 8 and 10.
    // 7 a new person (age 20, app 2.2.0, not in static 7) enters 8.
    // 8 ada loses her plan: leaves 1. 9 an unknown distinct id's event creates person "ghost"
    // (no properties, one login): no cohort of the example takes such a person.
    let at = "2024-06-17T08:00:00.000000Z";
    let expected = [
        r#"{"cohort":1,"person":"u-linus","change":"entered","at":"2024-06-15T12:00:00.000000Z"}"#
            .to_string(),
        r#"{"cohort":4,"person":"u-grace","change":"exited","at":"2024-06-15T12:00:00.000000Z"}"#
            .to_string(),
        format!(r#"{{"cohort":3,"person":"u-ada","change":"exited","at":"{at}"}}"#),
        format!(r#"{{"cohort":1,"person":"u-margaret","change":"exited","at":"{at}"}}"#),
        format!(r#"{{"cohort":2,"person":"u-margaret","change":"exited","at":"{at}"}}"#),
        format!(r#"{{"cohort":8,"person":"u-margaret","change":"exited","at":"{at}"}}"#),
        format!(r#"{{"cohort":10,"person":"u-margaret","change":"exited","at":"{at}"}}"#),
        format!(r#"{{"cohort":8,"person":"newbie","change":"entered","at":"{at}"}}"#),
        format!(r#"{{"cohort":1,"person":"u-ada","change":"exited","at":"{at}"}}"#),
    ];
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), expected);
    assert_eq!(
        stderr(&o).lines().collect::<Vec<_>>(),
        [
            "error: invalid_input: stdin:3: not valid JSON: expected value at line 1 column 1",
            "error: invalid_input: stdin:5: time cannot go backwards (now is 2024-06-17T08:00:00.000000Z)",
        ]
    );
}

#[test]
fn watch_orders_each_lines_transitions_and_reads_every_event_form_alike() {
    // Cohort 2 is evaluated before cohort 1 (1 references it), so one event changes them in
    // the order 2, 1; the output is by cohort id all the same. The same event is sent plain
    // (the scanner's path), with an escaped string (serde's), with a property object nested
    // (the exact path); a line with an event and a `$set` is a `$set`.
    let dir = tempdir();
    let cohorts = write(
        &dir,
        "cohorts.json",
        r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
              {"type": "cohort", "key": "id", "value": 2}]}}},
            {"id": 2, "filters": {"properties": {"type": "AND", "values": [
              {"type": "behavioral", "key": "login", "event_type": "events",
               "value": "performed_event", "time_value": 7, "time_interval": "day"}]}}},
            {"id": 3, "filters": {"properties": {"type": "AND", "values": [
              {"type": "behavioral", "key": "login", "event_type": "events",
               "value": "performed_event", "time_value": 7, "time_interval": "day",
               "event_filters": [{"type": "event", "key": "$browser", "operator": "exact",
                                  "value": ["Chrome"]}]}]}}}]"#,
    );
    let persons = write(&dir, "persons.jsonl", "");
    let args = watch_args(&cohorts, &persons);
    let input = [
        r#"{"distinct_id": "a", "event": "login", "timestamp": "2024-06-15T11:00:00Z", "properties": {"$browser": "Chrome", "n": 1.5}}"#,
        r#"{"distinct_id": "b", "event": "login", "timestamp": "2024-06-15T11:00:00Z", "properties": {"$browser": "Chrome"}}"#,
        r#"{"distinct_id": "c", "event": "login", "timestamp": "2024-06-15T11:00:00Z", "properties": {"$browser": "Chrome", "o": {"x": [1]}}}"#,
        r#"{"distinct_id": "d", "event": "login", "timestamp": "2024-06-15T11:00:00Z", "properties": {"$browser": "Firefox"}}"#,
        r#"{"distinct_id": "e", "event": "login", "timestamp": "2024-06-15T11:00:00Z", "$set": {"plan": "x"}}"#,
    ]
    .join("\n");
    let o = run_with_stdin(&args, &input);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let line = |c: u32, p: &str| {
        format!(
            r#"{{"cohort":{c},"person":"{p}","change":"entered","at":"2024-06-15T12:00:00.000000Z"}}"#
        )
    };
    let mut expected = Vec::new();
    for p in ["a", "b", "c"] {
        expected.extend([line(1, p), line(2, p), line(3, p)]);
    }
    expected.extend([line(1, "d"), line(2, "d")]);
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), expected);
}

#[test]
fn sql_prints_one_select_per_cohort_or_refuses_clearly() {
    let ex = examples().join("cohorts.json").display().to_string();
    let o = run(&[
        "sql",
        "--cohorts",
        &ex,
        "--cohort",
        "4",
        "--cohort",
        "1",
        "--now",
        NOW,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("-- cohort 4\nSELECT person_id FROM"),
        "{}",
        &out[..80]
    );
    assert!(out.contains("\n-- cohort 1\nSELECT person_id FROM"));
    assert_eq!(out.matches(";\n").count(), 2);

    let dir = tempdir();
    let cohorts = write(
        &dir,
        "c.json",
        r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "person", "key": "name", "operator": "regex", "value": "\\bpro"}]}}}]"#,
    );
    let o = run(&["sql", "--cohorts", &cohorts, "--now", NOW]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    let err = stderr(&o);
    assert!(err.starts_with("error: invalid_filter: cohort 1: filters.properties.values[0]: not supported by the ClickHouse SQL back end: regex"), "{err}");
    let o = run(&["sql", "--cohorts", &ex, "--dialect", "duckdb"]);
    expect_errors(
        &o,
        &["error: usage: --dialect \"duckdb\" is not supported (only clickhouse)"],
    );
}

#[test]
fn watch_reports_on_stderr_and_creates_persons_from_events() {
    let dir = tempdir();
    let cohorts = dir.join("cohorts.json");
    std::fs::write(
        &cohorts,
        r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "behavioral", "key": "signup", "event_type": "events",
             "value": "performed_event", "time_value": 1, "time_interval": "day"}]}}}]"#,
    )
    .unwrap();
    let persons = dir.join("persons.jsonl");
    std::fs::write(
        &persons,
        "{\"id\": \"p1\", \"distinct_ids\": [\"a\", \"b\"]}\n",
    )
    .unwrap();
    let input = [
        r#"{"distinct_id": "fresh", "event": "signup", "timestamp": "2024-06-15T11:00:00Z"}"#,
        r#"{"distinct_id": "b", "event": "signup", "timestamp": 1718449200}"#,
        r#"{"distinct_id": "b", "event": "signup", "timestamp": "not a time"}"#,
        r#"{"$now": "2024-06-16T11:00:00Z"}"#,
    ]
    .join("\n");
    let o = run_with_stdin(
        &[
            "watch",
            "--cohorts",
            cohorts.to_str().unwrap(),
            "--persons",
            persons.to_str().unwrap(),
            "--now",
            "2024-06-15T12:00:00Z",
        ],
        &input,
    );
    assert_eq!(o.status.code(), Some(0));
    // The event of the unknown distinct id "fresh" creates that person, who enters 1; p1 (by
    // its distinct id b, numeric timestamp = 11:00) enters 1; at 06-16T11:00 both signups are
    // exactly one day old, outside the strict window: both exit.
    assert_eq!(
        stdout(&o).lines().collect::<Vec<_>>(),
        [
            r#"{"cohort":1,"person":"fresh","change":"entered","at":"2024-06-15T12:00:00.000000Z"}"#,
            r#"{"cohort":1,"person":"p1","change":"entered","at":"2024-06-15T12:00:00.000000Z"}"#,
            r#"{"cohort":1,"person":"fresh","change":"exited","at":"2024-06-16T11:00:00.000000Z"}"#,
            r#"{"cohort":1,"person":"p1","change":"exited","at":"2024-06-16T11:00:00.000000Z"}"#,
        ]
    );
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    let ready = lines
        .iter()
        .position(|l| l.starts_with("tracker ready: 1 persons, 1 cohorts in ") && l.ends_with(" s"))
        .unwrap_or_else(|| panic!("no ready line in {err}"));
    assert!(
        lines[..ready]
            .iter()
            .any(|l| l.starts_with("loaded 1 persons")),
        "the ready line comes after the load line: {err}"
    );
    assert!(lines.contains(
        &"error: invalid_input: stdin:3: timestamp \"not a time\" is not a valid date-time"
    ));
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("processed 4 lines in ") && last.ends_with(" lines/s), 4 transitions"),
        "{err}"
    );
}

/// A `watch` of one cohort (a signup within a day) over persons p0..p{n}, distinct ids d{i}.
fn watch_signups(persons: usize) -> (PathBuf, Vec<String>) {
    let dir = tempdir();
    let cohorts = write(
        &dir,
        "cohorts.json",
        r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "behavioral", "key": "signup", "event_type": "events",
             "value": "performed_event", "time_value": 1, "time_interval": "day"}]}}}]"#,
    );
    let lines: String = (0..persons)
        .map(|i| format!("{{\"id\": \"p{i}\", \"distinct_ids\": [\"d{i}\"]}}\n"))
        .collect();
    let persons = write(&dir, "persons.jsonl", &lines);
    let args = watch_args(&cohorts, &persons);
    (dir, args)
}

/// `watch` of `cohorts` over `persons` (no events) at [`NOW`].
fn watch_args(cohorts: &str, persons: &str) -> Vec<String> {
    let args = [
        "watch",
        "--cohorts",
        cohorts,
        "--persons",
        persons,
        "--now",
        NOW,
    ];
    args.map(String::from).to_vec()
}

#[test]
fn watch_answers_each_line_before_the_next_arrives() {
    // Lines are read on a thread of their own: an interactive client still gets each line's
    // transitions before it sends the next.
    let (_dir, args) = watch_signups(2);
    let mut child = spawn_piped(&args);
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let wait = std::time::Duration::from_secs(60);
    for i in 0..2 {
        writeln!(
            stdin,
            r#"{{"distinct_id": "d{i}", "event": "signup", "timestamp": "2024-06-15T11:00:00Z"}}"#
        )
        .unwrap();
        stdin.flush().unwrap();
        let line = rx
            .recv_timeout(wait)
            .expect("an answer while stdin stays open");
        assert_eq!(
            line,
            format!(
                r#"{{"cohort":1,"person":"p{i}","change":"entered","at":"2024-06-15T12:00:00.000000Z"}}"#
            )
        );
    }
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn watch_keeps_line_order_and_numbers_across_many_lines() {
    // 5,000 lines (several batches of the reading thread, past its 64 KiB buffer), with bad
    // lines, blank lines and changes among plain events: every error names its own line, and
    // the transitions come in input order.
    let (_dir, args) = watch_signups(3_000);
    let mut input: Vec<u8> = Vec::new();
    let mut want_out = Vec::new();
    let mut want_err = Vec::new();
    let mut entered = std::collections::HashSet::new();
    for n in 1..=5_000usize {
        let i = n % 3_000;
        match n % 500 {
            7 => {
                input.extend_from_slice(b"\xff\xfe not text\n");
                want_err.push(format!("error: invalid_input: stdin:{n}: not valid UTF-8"));
            }
            13 => {
                input.extend_from_slice(b"garbage\n");
                want_err.push(format!(
                    "error: invalid_input: stdin:{n}: not valid JSON: expected value at line 1 column 1"
                ));
            }
            21 => input.extend_from_slice(b"   \n"),
            33 => {
                // A change line (serde path) between scanned events.
                let line = format!("{{\"distinct_id\": \"d{i}\", \"$set\": {{\"n\": {n}}}}}\n");
                input.extend_from_slice(line.as_bytes());
            }
            _ => {
                let line = format!(
                    "{{\"distinct_id\": \"d{i}\", \"event\": \"signup\", \"timestamp\": \"2024-06-15T11:00:00Z\"}}\n"
                );
                input.extend_from_slice(line.as_bytes());
                // A person's first signup enters them.
                if entered.insert(i) {
                    want_out.push(format!(
                        r#"{{"cohort":1,"person":"p{i}","change":"entered","at":"2024-06-15T12:00:00.000000Z"}}"#
                    ));
                }
            }
        }
    }
    let mut child = spawn_piped(&args);
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o).lines().collect::<Vec<_>>(), want_out);
    assert!(want_out.len() > 2_900);
    let err = stderr(&o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors, want_err);
    assert!(
        err.lines()
            .last()
            .is_some_and(|l| l.starts_with("processed 5000 lines in ")),
        "{err}"
    );
}

#[test]
fn generated_wide_shape_evaluates_the_same_on_any_threads_and_partitions() {
    let dir = tempdir();
    let out = dir.display().to_string();
    // Past the sizes at which eval splits persons across threads and writes cohorts' member
    // lists on several threads.
    let o = run(&[
        "generate",
        "--persons",
        "9000",
        "--events-per-person",
        "10",
        "--shape",
        "wide",
        "--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let f = |name: &str| dir.join(name).display().to_string();
    let (c, p, e) = (f("cohorts.json"), f("persons.jsonl"), f("events.jsonl"));
    let base = [
        "eval",
        "--cohorts",
        &c,
        "--persons",
        &p,
        "--events",
        &e,
        "--now",
        "2026-11-01T00:00:00Z",
        "--quiet",
    ];
    let eval = |extra: &[&str]| {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&stdout(&o)).unwrap()
    };
    let whole = eval(&["--threads", "1"]);
    let bytes = |threads: &str| {
        let args: Vec<&str> = base
            .iter()
            .chain(&["--threads", threads])
            .copied()
            .collect();
        stdout(&run(&args))
    };
    let one = bytes("1");
    assert_eq!(one, bytes("2"));
    assert_eq!(one, bytes("3"));
    let members: usize = whole.values().map(|v| v.as_array().unwrap().len()).sum();
    assert!(members > 4_096, "{members} members");
    let mut union: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for i in 0..3 {
        for (k, v) in eval(&["--partition", &format!("{i}/3")]) {
            let ids = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string());
            union.entry(k).or_default().extend(ids);
        }
    }
    for (k, v) in &whole {
        let mut want: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        let mut got = union.remove(k).unwrap_or_default();
        want.sort();
        got.sort();
        assert_eq!(got, want, "cohort {k}");
    }
    assert!(whole.values().any(|v| !v.as_array().unwrap().is_empty()));
    let o = run(&[
        "generate",
        "--persons",
        "1",
        "--events-per-person",
        "1",
        "--shape",
        "tall",
        "--out",
        &out,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with("error: usage: --shape must be simple or wide"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn projection_still_validates_every_line_and_counts_every_event() {
    let dir = tempdir();
    let cohorts = write(
        &dir,
        "cohorts.json",
        r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
            {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event",
             "time_value": 30, "time_interval": "day"}]}}}]"#,
    );
    let persons = write(
        &dir,
        "persons.jsonl",
        "{\"id\": \"p\", \"distinct_ids\": [\"d\"], \"properties\": {\"unread\": 1}}\n",
    );
    let good = "{\"distinct_id\": \"d\", \"event\": \"login\", \"timestamp\": \"2024-06-10T00:00:00Z\"}\n\
                {\"distinct_id\": \"d\", \"event\": \"other\", \"timestamp\": \"2024-06-10T00:00:00Z\", \"properties\": {\"x\": [1, {\"y\": null}]}}\n\
                {\"distinct_id\": \"zz\", \"event\": \"other\", \"timestamp\": 0}\n";
    let events = write(&dir, "events.jsonl", good);
    let o = run(&[
        "eval",
        "--cohorts",
        &cohorts,
        "--persons",
        &persons,
        "--events",
        &events,
        "--now",
        NOW,
    ]);
    assert_eq!(stdout(&o), "{\"1\":[\"p\"]}\n", "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("loaded 1 persons and 2 events"), "{err}");
    assert!(
        err.contains("kept 1 events: 1 are of names no cohort reads"),
        "{err}"
    );
    assert!(err.contains("skipped 1 events"), "{err}");
    // A bad line of an event name no cohort reads is still the error, with its line.
    let bad = format!(
        "{good}{{\"distinct_id\": \"d\", \"event\": \"other\", \"timestamp\": \"yesterday\"}}\n"
    );
    let events = write(&dir, "events.jsonl", &bad);
    let o = run(&[
        "eval",
        "--cohorts",
        &cohorts,
        "--persons",
        &persons,
        "--events",
        &events,
        "--now",
        NOW,
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stdout(&o), "");
    assert_eq!(
        stderr(&o),
        format!(
            "error: invalid_input: {events}:4: timestamp \"yesterday\" is not a valid date-time\n"
        )
    );
}
