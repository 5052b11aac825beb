//! PostHog's export formats: directories of part files, JSON Lines (plain, gzip, brotli) and
//! Parquet (every codec), the persons model resolved by versions and deletions, and exact,
//! located errors for bad rows and corrupt files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cohort_engine::internal::export::{export, ExportFormat, ExportOptions};
use cohort_engine::internal::generate::{generate, GenerateOptions};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

const BIN: &str = env!("CARGO_BIN_EXE_cohort-engine");
const NOW: &str = "2024-06-15T12:00:00Z";

fn tempdir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "cohort-engine-exports-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn p(path: &Path) -> String {
    path.display().to_string()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run binary")
}

fn eval(cohorts: &Path, persons: &Path, events: Option<&Path>, now: &str) -> Output {
    let (c, pp) = (p(cohorts), p(persons));
    let e = events.map(p);
    let mut args = vec![
        "eval",
        "--cohorts",
        &c,
        "--persons",
        &pp,
        "--now",
        now,
        "--quiet",
    ];
    if let Some(e) = &e {
        args.extend(["--events", e.as_str()]);
    }
    run(&args)
}

/// stdout of a successful run.
fn ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "failed: {err}");
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The single error line of a failed run (exit 2, nothing on stdout).
fn error(o: &Output) -> String {
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(o.stdout.is_empty());
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    lines[0].to_string()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn our_jsonl_and_both_posthog_exports_give_identical_members() {
    let root = tempdir();
    let now = "2026-11-01T00:00:00Z";
    let mut outs = Vec::new();
    for format in ["jsonl", "posthog-jsonl", "posthog-parquet"] {
        let dir = root.join(format);
        let (d, f) = (p(&dir), format.to_string());
        let o = run(&[
            "generate",
            "--persons",
            "600",
            "--events-per-person",
            "12",
            "--seed",
            "7",
            "--out",
            &d,
            "--format",
            &f,
            "--parts",
            "3",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let (persons, events) = if format == "jsonl" {
            (dir.join("persons.jsonl"), dir.join("events.jsonl"))
        } else {
            (dir.join("persons"), dir.join("events"))
        };
        outs.push(ok(&eval(
            &dir.join("cohorts.json"),
            &persons,
            Some(&events),
            now,
        )));
    }
    let o = run(&[
        "generate",
        "--persons",
        "5",
        "--events-per-person",
        "1",
        "--out",
        &p(&root.join("x")),
        "--format",
        "csv",
    ]);
    assert_eq!(
        error(&o),
        "error: usage: --format must be jsonl, posthog-jsonl or posthog-parquet, got \"csv\""
    );
    assert_eq!(
        files(&root.join("posthog-jsonl/events")),
        [
            "part-00000.jsonl",
            "part-00001.jsonl.gz",
            "part-00002.jsonl.br"
        ]
    );
    assert_eq!(
        files(&root.join("posthog-parquet/persons")),
        [
            "part-00000.parquet",
            "part-00001.parquet",
            "part-00002.parquet"
        ]
    );
    // Not trivially equal: cohorts have members, and some but not all persons.
    let members: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&outs[0]).unwrap();
    assert!(members.values().any(|m| m.as_array().unwrap().len() > 20));
    assert_eq!(outs[0], outs[1]);
    assert_eq!(outs[0], outs[2]);
}

/// Generates a dataset, and its export in `opts`' shape beside it.
fn dataset_and_export(root: &Path, opts: &ExportOptions) -> (PathBuf, PathBuf) {
    let gen = GenerateOptions {
        persons: 400,
        events_per_person: 15,
        seed: 3,
        ..GenerateOptions::default()
    };
    let ours = root.join("ours");
    let theirs = root.join("theirs");
    generate(&gen, &ours).unwrap();
    generate(&gen, &theirs).unwrap();
    export(&theirs, opts).unwrap();
    (ours, theirs)
}

#[test]
fn parquet_parts_with_every_codec_and_many_row_groups() {
    let root = tempdir();
    let mut opts = ExportOptions::new(ExportFormat::Parquet, 6);
    opts.mixed_compression = true;
    opts.row_group_rows = 300;
    let (ours, theirs) = dataset_and_export(&root, &opts);
    let now = "2026-11-01T00:00:00Z";
    let a = ok(&eval(
        &ours.join("cohorts.json"),
        &ours.join("persons.jsonl"),
        Some(&ours.join("events.jsonl")),
        now,
    ));
    let b = ok(&eval(
        &ours.join("cohorts.json"),
        &theirs.join("persons"),
        Some(&theirs.join("events")),
        now,
    ));
    assert_eq!(a, b);
    // Library users get the same through Dataset::from_paths.
    let ds = cohort_engine::Dataset::from_paths(
        &theirs.join("persons"),
        Some(&theirs.join("events")),
        &mut cohort_engine::LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(ds.len(), 400);
}

fn cohorts(dir: &Path) -> PathBuf {
    let path = dir.join("cohorts.json");
    std::fs::write(
        &path,
        r#"[
  {"id": 1, "filters": {"properties": {"type": "AND", "values": [
     {"type": "person", "key": "plan", "operator": "exact", "value": ["pro"]}]}}},
  {"id": 2, "filters": {"properties": {"type": "AND", "values": [
     {"type": "behavioral", "key": "login", "event_type": "events", "value": "performed_event",
      "time_value": 30, "time_interval": "day"}]}}}
]"#,
    )
    .unwrap();
    path
}

/// Persons rows: (distinct_id, person_id, properties, person_version, distinct_id_version,
/// is_deleted) across two files, with history that must be resolved.
type Row = (&'static str, &'static str, &'static str, i64, i64, bool);
const PART0: &[Row] = &[
    ("d-ada", "ada", r#"{"plan":"pro"}"#, 2, 0, false),
    ("d-bob", "bob", r#"{"plan":"free"}"#, 0, 0, false),
    ("d-cat", "cat", r#"{"plan":"pro"}"#, 0, 0, false),
    ("d-moved", "ghost", r#"{"plan":"pro"}"#, 0, 0, false),
    ("d-dropped", "bob", r#"{"plan":"free"}"#, 0, 0, false),
];
const PART1: &[Row] = &[
    // Older properties of ada come later: the version decides, not the order.
    ("d-ada2", "ada", r#"{"plan":"free"}"#, 1, 0, false),
    // bob upgrades.
    ("d-bob", "bob", r#"{"plan":"pro"}"#, 1, 0, false),
    // cat is deleted (its version raised).
    ("d-cat", "cat", r#"{"plan":"pro"}"#, 100, 0, true),
    // d-moved now belongs to bob; the ghost is deleted.
    ("d-moved", "bob", r#"{"plan":"pro"}"#, 1, 1, false),
    ("d-moved", "ghost", r#"{"plan":"pro"}"#, 100, 0, true),
    // Only the mapping of d-dropped is deleted; bob stays.
    ("d-dropped", "bob", r#"{"plan":"pro"}"#, 1, 1, true),
];
const EVENTS: &[(&str, &str, &str)] = &[
    ("d-ada2", "login", "2024-06-10 08:00:00.000000+00:00"),
    ("d-cat", "login", "2024-06-10 08:00:00.000000+00:00"),
    ("d-dropped", "login", "2024-06-11 08:00:00.000000+00:00"),
    ("d-moved", "login", "2024-06-12 08:00:00+00:00"),
    ("d-unknown", "login", "2024-06-12T08:00:00Z"),
];
const EXPECTED: &str = "{\"1\":[\"ada\",\"bob\"],\"2\":[\"ada\",\"bob\"]}\n";

fn jsonl_row(r: &Row) -> String {
    serde_json::json!({
        "team_id": 1, "distinct_id": r.0, "person_id": r.1,
        "properties": serde_json::from_str::<serde_json::Value>(r.2).unwrap(),
        "person_version": r.3, "person_distinct_id_version": r.4,
        "created_at": "2024-01-01 00:00:00+00:00", "is_deleted": r.5,
    })
    .to_string()
}

fn event_row(i: usize, e: &(&str, &str, &str)) -> String {
    serde_json::json!({
        "uuid": format!("u{i}"), "event": e.1, "distinct_id": e.0,
        "person_id": "stale-person", "properties": {"$browser": "Firefox"},
        "elements_chain": "", "timestamp": e.2,
    })
    .to_string()
}

#[test]
fn posthog_jsonl_persons_resolve_versions_and_deletions() {
    let dir = tempdir();
    let persons = dir.join("persons");
    std::fs::create_dir_all(&persons).unwrap();
    let lines = |rows: &[Row]| rows.iter().map(jsonl_row).collect::<Vec<_>>().join("\n") + "\n";
    std::fs::write(persons.join("2024-01-01.jsonl"), lines(PART0)).unwrap();
    // The second part gzip-compressed; a marker file and a hidden file are skipped.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, lines(PART1).as_bytes()).unwrap();
    std::fs::write(persons.join("2024-01-02.jsonl.gz"), gz.finish().unwrap()).unwrap();
    std::fs::write(persons.join("_SUCCESS"), "").unwrap();
    std::fs::write(persons.join(".part.crc"), "junk").unwrap();
    let events = dir.join("events.jsonl.br");
    let text: String = EVENTS
        .iter()
        .enumerate()
        .map(|(i, e)| event_row(i, e) + "\n")
        .collect();
    let mut br = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    std::io::Write::write_all(&mut br, text.as_bytes()).unwrap();
    std::fs::write(&events, br.into_inner()).unwrap();
    let out = ok(&eval(&cohorts(&dir), &persons, Some(&events), NOW));
    assert_eq!(out, EXPECTED);
}

fn write_parquet(path: &Path, batch: &RecordBatch, codec: Compression) {
    let props = WriterProperties::builder().set_compression(codec).build();
    let mut w = ArrowWriter::try_new(
        std::fs::File::create(path).unwrap(),
        batch.schema(),
        Some(props),
    )
    .unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn persons_batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("team_id", DataType::Int64, false),
        Field::new("distinct_id", DataType::Utf8, false),
        Field::new("person_id", DataType::Utf8, false),
        Field::new("properties", DataType::Utf8, true),
        Field::new("person_version", DataType::Int64, false),
        Field::new("person_distinct_id_version", DataType::Int64, false),
        Field::new("is_deleted", DataType::Boolean, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(vec![1; rows.len()])),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.4).collect::<Vec<_>>(),
        )),
        Arc::new(BooleanArray::from(
            rows.iter().map(|r| r.5).collect::<Vec<_>>(),
        )),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

/// Events as PostHog's Parquet: properties as JSON text, timestamps in microseconds (UTC).
fn events_batch(rows: &[(Option<&str>, &str, i64, Option<&str>)]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("uuid", DataType::Utf8, false),
        Field::new("event", DataType::Utf8, false),
        Field::new("distinct_id", DataType::Utf8, true),
        Field::new("person_id", DataType::Utf8, true),
        Field::new("properties", DataType::Utf8, true),
        Field::new("elements_chain", DataType::Utf8, true),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let n = rows.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec![Some("stale-person"); n])),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.3).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec![Some("a:nth-child=\"1\""); n])),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.2).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

/// µs of `text`.
fn micros(text: &str) -> i64 {
    text.parse::<cohort_engine::Timestamp>()
        .unwrap()
        .as_micros()
}

#[test]
fn posthog_parquet_persons_and_events_resolve_the_same() {
    let dir = tempdir();
    let persons = dir.join("persons");
    let events = dir.join("events");
    std::fs::create_dir_all(&persons).unwrap();
    std::fs::create_dir_all(&events).unwrap();
    write_parquet(
        &persons.join("a.parquet"),
        &persons_batch(PART0),
        Compression::SNAPPY,
    );
    write_parquet(
        &persons.join("b.parquet"),
        &persons_batch(PART1),
        Compression::ZSTD(ZstdLevel::default()),
    );
    let rows: Vec<(Option<&str>, &str, i64, Option<&str>)> = EVENTS
        .iter()
        .map(|e| {
            (
                Some(e.0),
                e.1,
                micros(&e.2.replace(' ', "T")),
                Some("{\"$browser\":\"Firefox\"}"),
            )
        })
        .collect();
    write_parquet(
        &events.join("1.parquet"),
        &events_batch(&rows[..2]),
        Compression::LZ4_RAW,
    );
    write_parquet(
        &events.join("2.parquet"),
        &events_batch(&rows[2..]),
        Compression::UNCOMPRESSED,
    );
    let out = ok(&eval(&cohorts(&dir), &persons, Some(&events), NOW));
    assert_eq!(out, EXPECTED);
}

#[test]
fn bad_rows_are_located_by_file_and_row_or_line() {
    let dir = tempdir();
    let c = cohorts(&dir);
    // Parquet events: row 3 has no distinct id, row 2 properties that are not an object.
    let persons = dir.join("persons.jsonl");
    std::fs::write(&persons, "{\"id\":\"ada\",\"distinct_ids\":[\"d-ada\"]}\n").unwrap();
    let t = micros("2024-06-10T08:00:00Z");
    let ev = dir.join("events.parquet");
    write_parquet(
        &ev,
        &events_batch(&[
            (Some("d-ada"), "login", t, None),
            (Some("d-ada"), "login", t, Some("[1,2]")),
            (None, "login", t, Some("{}")),
        ]),
        Compression::SNAPPY,
    );
    assert_eq!(
        error(&eval(&c, &persons, Some(&ev), NOW)),
        format!(
            "error: invalid_input: {}:2: properties must be an object, got [1,2]",
            p(&ev)
        )
    );
    write_parquet(
        &ev,
        &events_batch(&[
            (
                Some("d-ada"),
                "login",
                t,
                Some("{\"a\":1},\"distinct_id\":\"x\""),
            ),
            (None, "login", t, None),
        ]),
        Compression::SNAPPY,
    );
    assert_eq!(
        error(&eval(&c, &persons, Some(&ev), NOW)),
        format!(
            "error: invalid_input: {}:1: properties is not valid JSON: trailing characters at line 1 column 8",
            p(&ev)
        )
    );
    write_parquet(
        &ev,
        &events_batch(&[(Some("d-ada"), "login", t, None), (None, "login", t, None)]),
        Compression::SNAPPY,
    );
    assert_eq!(
        error(&eval(&c, &persons, Some(&ev), NOW)),
        format!(
            "error: invalid_input: {}:2: an event needs a \"distinct_id\"",
            p(&ev)
        )
    );
    // A Parquet events file without a timestamp column.
    let no_ts = dir.join("no-ts.parquet");
    write_parquet(&no_ts, &persons_batch(PART0), Compression::SNAPPY);
    assert_eq!(
        error(&eval(&c, &persons, Some(&no_ts), NOW)),
        format!(
            "error: invalid_input: {}: a Parquet events file needs the column \"event\"",
            p(&no_ts)
        )
    );
    // PostHog persons rows in JSON Lines: the second file's third line.
    let pdir = dir.join("persons");
    std::fs::create_dir_all(&pdir).unwrap();
    std::fs::write(pdir.join("a.jsonl"), jsonl_row(&PART0[0]) + "\n").unwrap();
    std::fs::write(
        pdir.join("b.jsonl"),
        format!(
            "{}\n\n{}\n",
            jsonl_row(&PART0[1]),
            r#"{"distinct_id":"x","person_id":"y","person_version":"v2"}"#
        ),
    )
    .unwrap();
    std::fs::write(pdir.join("c.jsonl"), "not json\n").unwrap();
    assert_eq!(
        error(&eval(&c, &pdir, None, NOW)),
        format!(
            "error: invalid_input: {}:3: person_version must be an integer, got \"v2\"",
            p(&pdir.join("b.jsonl"))
        )
    );
    // An event line of a part file (name order: a bad line in the first file is reported).
    let edir = dir.join("events");
    std::fs::create_dir_all(&edir).unwrap();
    std::fs::write(
        edir.join("0.jsonl"),
        event_row(0, &EVENTS[0]) + "\n{\"event\":\"x\"}\n",
    )
    .unwrap();
    std::fs::write(edir.join("1.jsonl"), "oops\n").unwrap();
    assert_eq!(
        error(&eval(&c, &persons, Some(&edir), NOW)),
        format!(
            "error: invalid_input: {}:2: an event needs a \"distinct_id\"",
            p(&edir.join("0.jsonl"))
        )
    );
    // An empty directory.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert_eq!(
        error(&eval(&c, &persons, Some(&empty), NOW)),
        format!(
            "error: invalid_input: {}: no data files (.jsonl, .json, .jsonl.gz, .jsonl.br, .parquet) in the directory",
            p(&empty)
        )
    );
}

#[test]
fn a_json_file_may_hold_one_array_of_records() {
    let dir = tempdir();
    let persons = dir.join("persons.json");
    let rows: Vec<serde_json::Value> = PART0
        .iter()
        .chain(PART1)
        .map(|r| serde_json::from_str(&jsonl_row(r)).unwrap())
        .collect();
    std::fs::write(&persons, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    let events = dir.join("events.json");
    let text: String = EVENTS
        .iter()
        .enumerate()
        .map(|(i, e)| event_row(i, e) + "\n")
        .collect();
    std::fs::write(&events, text).unwrap();
    assert_eq!(
        ok(&eval(&cohorts(&dir), &persons, Some(&events), NOW)),
        EXPECTED
    );
}

#[test]
fn corrupt_and_truncated_parquet_files_are_invalid_input_never_a_panic() {
    let dir = tempdir();
    let c = cohorts(&dir);
    let persons = dir.join("persons.jsonl");
    std::fs::write(&persons, "{\"id\":\"ada\",\"distinct_ids\":[\"d-ada\"]}\n").unwrap();
    let good = dir.join("good.parquet");
    let t = micros("2024-06-10T08:00:00Z");
    let rows: Vec<(Option<&str>, &str, i64, Option<&str>)> = (0..2000)
        .map(|_| {
            (
                Some("d-ada"),
                "login",
                t,
                Some("{\"$browser\":\"Firefox\",\"n\":12345}"),
            )
        })
        .collect();
    write_parquet(
        &good,
        &events_batch(&rows),
        Compression::ZSTD(ZstdLevel::default()),
    );
    let bytes = std::fs::read(&good).unwrap();
    ok(&eval(&c, &persons, Some(&good), NOW));

    let bad = dir.join("bad.parquet");
    std::fs::write(&bad, b"this is not a parquet file at all").unwrap();
    let e = error(&eval(&c, &persons, Some(&bad), NOW));
    assert!(
        e.starts_with(&format!(
            "error: invalid_input: {}: not a readable Parquet file: ",
            p(&bad)
        )),
        "{e}"
    );

    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let e = error(&eval(&c, &persons, Some(&bad), NOW));
    assert!(
        e.starts_with(&format!(
            "error: invalid_input: {}: not a readable Parquet file: ",
            p(&bad)
        )),
        "{e}"
    );

    // Damaged data pages (footer intact): an error naming the file, or, where the damage still
    // decodes, a clean result; never a panic.
    let footer =
        u32::from_le_bytes(bytes[bytes.len() - 8..bytes.len() - 4].try_into().unwrap()) as usize;
    let data_end = bytes.len() - 8 - footer;
    let mut errors = 0;
    for k in 0..24 {
        let mut damaged = bytes.clone();
        let at = 4 + k * (data_end - 24) / 24;
        for b in &mut damaged[at..at + 16] {
            *b ^= 0x5a;
        }
        std::fs::write(&bad, &damaged).unwrap();
        let o = eval(&c, &persons, Some(&bad), NOW);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(!err.contains("panicked"), "{err}");
        match o.status.code() {
            Some(0) => {}
            Some(2) => {
                errors += 1;
                assert!(
                    err.starts_with(&format!("error: invalid_input: {}", p(&bad))),
                    "{err}"
                );
            }
            other => panic!("exit {other:?}: {err}"),
        }
    }
    assert!(errors > 0);
}
