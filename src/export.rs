//! Rewrites a generated dataset (`persons.jsonl`, `events.jsonl` of `CLI.md` §2) in the shapes
//! PostHog's batch exports write, for tests and benchmarks (`generate --format …`): the
//! persons model (one row per distinct id, with `person_version`,
//! `person_distinct_id_version` and `is_deleted`) and the events model, each as a directory of
//! part files, JSON Lines (plain, gzip and brotli in turn) or Parquet.
//!
//! The export holds exactly the persons and events of the JSONL dataset once resolved, plus
//! history that resolution must see through, so evaluating either gives the same members:
//! - every 7th person also has an older row (lower `person_version`, other properties) in the
//!   last part, after its current rows;
//! - every 11th person took over its first distinct id from a ghost person (a row mapping it to
//!   the ghost at a lower `person_distinct_id_version`), and the ghost was deleted;
//! - every 13th person had an extra distinct id whose mapping was deleted; events of that
//!   distinct id are in the export and must be skipped;
//! - every 17th person has a deleted twin with its own distinct id and a copy of its events,
//!   which must not count;
//! - each event's `person_id` is the owner's id, except for events of the taken-over distinct
//!   ids, which carry the ghost's (stale, as in PostHog) id.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::time::parse_timestamp;

/// The shape to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExportFormat {
    /// JSON Lines part files: `.jsonl`, `.jsonl.gz` and `.jsonl.br` in turn.
    Jsonl,
    /// Parquet part files.
    Parquet,
}

/// How to write an export.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ExportOptions {
    /// The shape.
    pub format: ExportFormat,
    /// Part files per model.
    pub parts: usize,
    /// Parquet: compress each part with the next of zstd, snappy, gzip, lz4, brotli,
    /// uncompressed (otherwise every part is zstd).
    pub mixed_compression: bool,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
}

impl ExportOptions {
    /// `parts` part files of `format`, zstd, 65,536 rows per row group.
    pub fn new(format: ExportFormat, parts: usize) -> ExportOptions {
        ExportOptions {
            format,
            parts: parts.max(1),
            mixed_compression: false,
            row_group_rows: 65_536,
        }
    }
}

/// One persons-model row.
struct PersonRow {
    distinct_id: String,
    person_id: String,
    properties: String,
    person_version: i64,
    distinct_id_version: i64,
    is_deleted: bool,
}

/// One events-model row.
struct EventRow {
    uuid: String,
    event: String,
    distinct_id: String,
    person_id: String,
    properties: String,
    timestamp: i64,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn id_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Reads `dir/persons.jsonl` and `dir/events.jsonl` and writes `dir/persons/` and
/// `dir/events/` in the export's shape; the JSONL files are removed.
///
/// # Errors
/// I/O errors, or a line of the input that is not in the generator's shape.
pub fn export(dir: &Path, opts: &ExportOptions) -> io::Result<()> {
    let parts = opts.parts.max(1);
    let last = parts - 1;
    // Persons, in order.
    let mut persons: Vec<(String, Vec<String>, String)> = Vec::new();
    for line in BufReader::new(File::open(dir.join("persons.jsonl"))?).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let id = id_text(v.get("id").unwrap_or(&Value::Null));
        let dids = v
            .get("distinct_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(id_text).collect())
            .unwrap_or_default();
        let props = v
            .get("properties")
            .cloned()
            .unwrap_or(json!({}))
            .to_string();
        persons.push((id, dids, props));
    }
    let n = persons.len().max(1);
    let mut person_parts: Vec<Vec<PersonRow>> = (0..parts).map(|_| Vec::new()).collect();
    let mut history: Vec<PersonRow> = Vec::new();
    // Distinct ids whose events get copies under another distinct id, and ids of stale owners.
    let mut copies: HashMap<String, String> = HashMap::new();
    let mut stale: HashMap<String, String> = HashMap::new();
    for (i, (id, dids, props)) in persons.iter().enumerate() {
        let part = i * parts / n;
        let row = |did: &str, pid: &str, props: &str, pv: i64, dv: i64, del: bool| PersonRow {
            distinct_id: did.to_string(),
            person_id: pid.to_string(),
            properties: props.to_string(),
            person_version: pv,
            distinct_id_version: dv,
            is_deleted: del,
        };
        if dids.is_empty() {
            // The persons model has one row per distinct id: such a person has no row.
            continue;
        }
        let pv = if i % 7 == 3 { 2 } else { 0 };
        let ghost = format!("ghost-{id}");
        if i % 11 == 5 && !dids.is_empty() {
            person_parts[0].push(row(&dids[0], &ghost, r#"{"plan":"ghost"}"#, 0, 0, false));
            history.push(row(&dids[0], &ghost, r#"{"plan":"ghost"}"#, 100, 0, true));
            stale.insert(dids[0].clone(), ghost.clone());
        }
        for (k, d) in dids.iter().enumerate() {
            let dv = i64::from(i % 11 == 5 && k == 0);
            person_parts[part].push(row(d, id, props, pv, dv, false));
        }
        if i % 7 == 3 && !dids.is_empty() {
            history.push(row(
                &dids[0],
                id,
                r#"{"plan":"stale","email":"stale@example.com"}"#,
                1,
                -1,
                false,
            ));
        }
        if i % 13 == 7 {
            let x = format!("{id}-old");
            person_parts[0].push(row(&x, id, props, pv, 0, false));
            history.push(row(&x, id, props, pv, 1, true));
            if let Some(d) = dids.first() {
                copies.insert(d.clone(), x);
            }
        }
        if i % 17 == 9 {
            let twin = format!("deleted-{id}");
            let d = format!("{id}-deleted");
            person_parts[0].push(row(&d, &twin, props, 0, 0, false));
            history.push(row(&d, &twin, props, 100, 0, true));
            if let Some(first) = dids.first() {
                copies.insert(first.clone(), d);
            }
        }
    }
    person_parts[last].extend(history);
    // The owner of each distinct id, for the events' person_id.
    let mut owner: HashMap<String, String> = HashMap::new();
    for (id, dids, _) in &persons {
        for d in dids {
            owner.insert(d.clone(), id.clone());
        }
    }
    let pdir = dir.join("persons");
    let edir = dir.join("events");
    std::fs::create_dir_all(&pdir)?;
    std::fs::create_dir_all(&edir)?;
    for (k, rows) in person_parts.iter().enumerate() {
        write_persons(&pdir, k, rows, opts)?;
    }
    drop(person_parts);

    // Events: contiguous runs of lines per part; copies go to the last part.
    let total = BufReader::new(File::open(dir.join("events.jsonl"))?)
        .lines()
        .count()
        .max(1);
    let mut writer = EventWriter::new(&edir, 0, opts)?;
    let mut part = 0usize;
    let mut extra: Vec<EventRow> = Vec::new();
    for (i, line) in BufReader::new(File::open(dir.join("events.jsonl"))?)
        .lines()
        .enumerate()
    {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let want = i * parts / total;
        while part < want {
            writer.finish()?;
            part += 1;
            writer = EventWriter::new(&edir, part, opts)?;
        }
        let v: Value = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        let did = id_text(v.get("distinct_id").unwrap_or(&Value::Null));
        let timestamp = parse_timestamp(v.get("timestamp").unwrap_or(&Value::Null)).map_err(bad)?;
        let props = match v.get("properties") {
            Some(p @ Value::Object(_)) => p.to_string(),
            _ => "{}".to_string(),
        };
        let person_id = stale
            .get(&did)
            .or_else(|| owner.get(&did))
            .cloned()
            .unwrap_or_default();
        let ev = EventRow {
            uuid: uuid_of(i as u64),
            event: v
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            distinct_id: did,
            person_id,
            properties: props,
            timestamp,
        };
        if let Some(copy) = copies.get(&ev.distinct_id) {
            extra.push(EventRow {
                uuid: uuid_of((1 << 40) + i as u64),
                distinct_id: copy.clone(),
                event: ev.event.clone(),
                person_id: String::new(),
                properties: ev.properties.clone(),
                timestamp: ev.timestamp,
            });
        }
        writer.push(ev)?;
    }
    while part < last {
        writer.finish()?;
        part += 1;
        writer = EventWriter::new(&edir, part, opts)?;
    }
    for ev in extra {
        writer.push(ev)?;
    }
    writer.finish()?;
    std::fs::remove_file(dir.join("persons.jsonl"))?;
    std::fs::remove_file(dir.join("events.jsonl"))?;
    Ok(())
}

/// A UUID-shaped id for event `i`.
fn uuid_of(i: u64) -> String {
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        (i >> 48) & 0xfff,
        i & 0xffff_ffff_ffff
    )
}

/// `YYYY-MM-DD HH:MM:SS.ffffff+00:00`, as Python prints a UTC datetime (PostHog's JSON Lines).
fn python_time(t: i64) -> String {
    let mut out = Vec::new();
    crate::data::push_rfc3339(t, &mut out);
    let s = String::from_utf8_lossy(&out).into_owned();
    format!("{} {}+00:00", &s[..10], &s[11..s.len() - 1])
}

/// The JSON Lines part file `k`'s name and writer (plain, gzip, brotli in turn).
fn jsonl_writer(dir: &Path, k: usize) -> io::Result<Box<dyn Write>> {
    let base = dir.join(format!("part-{k:05}"));
    let with = |ext: &str| -> PathBuf {
        let mut p = base.clone().into_os_string();
        p.push(ext);
        p.into()
    };
    Ok(match k % 3 {
        #[cfg(feature = "gzip")]
        1 => Box::new(flate2::write::GzEncoder::new(
            BufWriter::new(File::create(with(".jsonl.gz"))?),
            flate2::Compression::fast(),
        )),
        #[cfg(feature = "brotli")]
        2 => Box::new(brotli::CompressorWriter::new(
            BufWriter::new(File::create(with(".jsonl.br"))?),
            1 << 16,
            4,
            22,
        )),
        _ => Box::new(BufWriter::new(File::create(with(".jsonl"))?)),
    })
}

fn write_persons(dir: &Path, k: usize, rows: &[PersonRow], opts: &ExportOptions) -> io::Result<()> {
    match opts.format {
        ExportFormat::Jsonl => {
            let mut w = jsonl_writer(dir, k)?;
            for r in rows {
                let props: Map<String, Value> =
                    serde_json::from_str(&r.properties).map_err(|e| bad(e.to_string()))?;
                let line = json!({
                    "team_id": 1,
                    "distinct_id": r.distinct_id,
                    "person_id": r.person_id,
                    "properties": props,
                    "person_version": r.person_version,
                    "person_distinct_id_version": r.distinct_id_version,
                    "created_at": "2024-01-01 00:00:00.000000+00:00",
                    "is_deleted": r.is_deleted,
                });
                writeln!(w, "{line}")?;
            }
            w.flush()
        }
        ExportFormat::Parquet => parquet_out::persons(dir, k, rows, opts),
    }
}

/// Writes one events part file, row by row.
struct EventWriter {
    jsonl: Option<Box<dyn Write>>,
    #[cfg(feature = "parquet")]
    parquet: Option<parquet_out::Events>,
}

impl EventWriter {
    fn new(dir: &Path, k: usize, opts: &ExportOptions) -> io::Result<EventWriter> {
        Ok(match opts.format {
            ExportFormat::Jsonl => EventWriter {
                jsonl: Some(jsonl_writer(dir, k)?),
                #[cfg(feature = "parquet")]
                parquet: None,
            },
            #[cfg(feature = "parquet")]
            ExportFormat::Parquet => EventWriter {
                jsonl: None,
                parquet: Some(parquet_out::Events::new(dir, k, opts)?),
            },
            #[cfg(not(feature = "parquet"))]
            ExportFormat::Parquet => return Err(parquet_out::unavailable()),
        })
    }

    fn push(&mut self, ev: EventRow) -> io::Result<()> {
        if let Some(w) = &mut self.jsonl {
            let props: Map<String, Value> =
                serde_json::from_str(&ev.properties).map_err(|e| bad(e.to_string()))?;
            let t = python_time(ev.timestamp);
            let line = json!({
                "uuid": ev.uuid,
                "event": ev.event,
                "properties": props,
                "elements_chain": "",
                "set": null,
                "set_once": null,
                "distinct_id": ev.distinct_id,
                "team_id": 1,
                "ip": null,
                "site_url": "",
                "timestamp": t,
                "created_at": t,
                "person_id": ev.person_id,
                "person_properties": null,
            });
            return writeln!(w, "{line}");
        }
        #[cfg(feature = "parquet")]
        if let Some(p) = &mut self.parquet {
            return p.push(ev);
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.jsonl.take() {
            w.flush()?;
        }
        #[cfg(feature = "parquet")]
        if let Some(p) = self.parquet.take() {
            p.finish()?;
        }
        Ok(())
    }
}

#[cfg(feature = "parquet")]
mod parquet_out {
    use std::fs::File;
    use std::io;
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::{
        ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{BrotliLevel, Compression, GzipLevel, ZstdLevel};
    use parquet::file::properties::WriterProperties;

    use super::{EventRow, ExportOptions, PersonRow};

    fn err(e: impl std::fmt::Display) -> io::Error {
        io::Error::other(e.to_string())
    }

    fn writer(
        dir: &Path,
        k: usize,
        schema: SchemaRef,
        opts: &ExportOptions,
    ) -> io::Result<ArrowWriter<File>> {
        let codec = if opts.mixed_compression {
            match k % 6 {
                0 => Compression::ZSTD(ZstdLevel::default()),
                1 => Compression::SNAPPY,
                2 => Compression::GZIP(GzipLevel::default()),
                3 => Compression::LZ4_RAW,
                4 => Compression::BROTLI(BrotliLevel::default()),
                _ => Compression::UNCOMPRESSED,
            }
        } else {
            Compression::ZSTD(ZstdLevel::default())
        };
        let props = WriterProperties::builder()
            .set_compression(codec)
            .set_max_row_group_row_count(Some(opts.row_group_rows.max(1)))
            .build();
        let file = File::create(dir.join(format!("part-{k:05}.parquet")))?;
        ArrowWriter::try_new(file, schema, Some(props)).map_err(err)
    }

    fn text(v: Vec<String>) -> ArrayRef {
        Arc::new(StringArray::from(v))
    }

    pub(super) fn persons(
        dir: &Path,
        k: usize,
        rows: &[PersonRow],
        opts: &ExportOptions,
    ) -> io::Result<()> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("team_id", DataType::Int64, false),
            Field::new("distinct_id", DataType::Utf8, false),
            Field::new("person_id", DataType::Utf8, false),
            Field::new("properties", DataType::Utf8, true),
            Field::new("person_version", DataType::Int64, false),
            Field::new("person_distinct_id_version", DataType::Int64, false),
            Field::new(
                "created_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
            Field::new("is_deleted", DataType::Boolean, false),
        ]));
        let mut w = writer(dir, k, schema.clone(), opts)?;
        for chunk in rows.chunks(opts.row_group_rows.max(1)) {
            let cols: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from(vec![1i64; chunk.len()])),
                text(chunk.iter().map(|r| r.distinct_id.clone()).collect()),
                text(chunk.iter().map(|r| r.person_id.clone()).collect()),
                text(chunk.iter().map(|r| r.properties.clone()).collect()),
                Arc::new(Int64Array::from(
                    chunk.iter().map(|r| r.person_version).collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(
                    chunk
                        .iter()
                        .map(|r| r.distinct_id_version)
                        .collect::<Vec<_>>(),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_704_067_200_000_000i64; chunk.len()])
                        .with_timezone("UTC"),
                ),
                Arc::new(BooleanArray::from(
                    chunk.iter().map(|r| r.is_deleted).collect::<Vec<_>>(),
                )),
            ];
            let batch = RecordBatch::try_new(schema.clone(), cols).map_err(err)?;
            w.write(&batch).map_err(err)?;
        }
        w.close().map_err(err)?;
        Ok(())
    }

    /// An events part being written, a row group at a time.
    pub(super) struct Events {
        w: ArrowWriter<File>,
        schema: SchemaRef,
        rows: Vec<EventRow>,
        group: usize,
    }

    impl Events {
        pub(super) fn new(dir: &Path, k: usize, opts: &ExportOptions) -> io::Result<Events> {
            let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
            let schema = Arc::new(Schema::new(vec![
                Field::new("uuid", DataType::Utf8, false),
                Field::new("event", DataType::Utf8, false),
                Field::new("properties", DataType::Utf8, true),
                Field::new("elements_chain", DataType::Utf8, true),
                Field::new("distinct_id", DataType::Utf8, false),
                Field::new("team_id", DataType::Int64, false),
                Field::new("timestamp", ts.clone(), false),
                Field::new("created_at", ts, false),
                Field::new("person_id", DataType::Utf8, true),
                Field::new("person_properties", DataType::Utf8, true),
            ]));
            Ok(Events {
                w: writer(dir, k, schema.clone(), opts)?,
                schema,
                rows: Vec::new(),
                group: opts.row_group_rows.max(1),
            })
        }

        pub(super) fn push(&mut self, ev: EventRow) -> io::Result<()> {
            self.rows.push(ev);
            if self.rows.len() >= self.group {
                self.flush()?;
            }
            Ok(())
        }

        fn flush(&mut self) -> io::Result<()> {
            if self.rows.is_empty() {
                return Ok(());
            }
            let rows = std::mem::take(&mut self.rows);
            let n = rows.len();
            let times: Vec<i64> = rows.iter().map(|r| r.timestamp).collect();
            let cols: Vec<ArrayRef> = vec![
                text(rows.iter().map(|r| r.uuid.clone()).collect()),
                text(rows.iter().map(|r| r.event.clone()).collect()),
                text(rows.iter().map(|r| r.properties.clone()).collect()),
                text(vec![String::new(); n]),
                text(rows.iter().map(|r| r.distinct_id.clone()).collect()),
                Arc::new(Int64Array::from(vec![1i64; n])),
                Arc::new(TimestampMicrosecondArray::from(times.clone()).with_timezone("UTC")),
                Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
                Arc::new(StringArray::from(
                    rows.iter()
                        .map(|r| (!r.person_id.is_empty()).then_some(r.person_id.as_str()))
                        .collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(vec![None::<&str>; n])),
            ];
            let batch = RecordBatch::try_new(self.schema.clone(), cols).map_err(err)?;
            self.w.write(&batch).map_err(err)
        }

        pub(super) fn finish(mut self) -> io::Result<()> {
            self.flush()?;
            self.w.close().map_err(err)?;
            Ok(())
        }
    }
}

#[cfg(not(feature = "parquet"))]
mod parquet_out {
    use std::io;
    use std::path::Path;

    use super::{ExportOptions, PersonRow};

    pub(super) fn unavailable() -> io::Error {
        io::Error::other("Parquet output needs the cargo feature `parquet`")
    }

    pub(super) fn persons(
        _: &Path,
        _: usize,
        _: &[PersonRow],
        _: &ExportOptions,
    ) -> io::Result<()> {
        Err(unavailable())
    }
}
