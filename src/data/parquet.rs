//! Parquet data files (PostHog's batch exports): only the columns used are decoded, row groups
//! in parallel, each row turned into one JSON line of the loader's shape, so the JSON Lines
//! parser (its fast scanner over the `properties` text included) reads both formats with the
//! same rules and errors, and `file:N` counts rows.
//!
//! A `properties` column holds JSON text (PostHog writes it so); it is placed into the line
//! as is, after a check that it is one balanced `{…}` value (anything else is put in as a
//! string, which the parser then rejects as "properties must be an object"). Timestamps of any
//! unit become RFC 3339 with six fraction digits; integer columns become JSON numbers, text
//! columns JSON strings; a null leaves the field out.
//!
//! A file that cannot be decoded (not Parquet, truncated, a corrupt page) is an `invalid_input`
//! naming the file (and the first row not read).

use std::fs::File;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

use super::posthog::{push_rfc3339, Resolver};
use crate::error::Error;

/// Rows per decoded batch.
const BATCH_ROWS: usize = 8192;

/// A field of the lines made from a file: the column and the JSON key (the same name).
struct Field {
    name: &'static str,
    /// Holds JSON text to place as is (`properties`).
    raw_json: bool,
}

const EVENT_FIELDS: &[Field] = &[
    Field {
        name: "distinct_id",
        raw_json: false,
    },
    Field {
        name: "event",
        raw_json: false,
    },
    Field {
        name: "timestamp",
        raw_json: false,
    },
    Field {
        name: "properties",
        raw_json: true,
    },
];
const EVENT_REQUIRED: &[&str] = &["distinct_id", "event", "timestamp"];

const PERSON_FIELDS: &[Field] = &[
    Field {
        name: "distinct_id",
        raw_json: false,
    },
    Field {
        name: "person_id",
        raw_json: false,
    },
    Field {
        name: "properties",
        raw_json: true,
    },
    Field {
        name: "person_version",
        raw_json: false,
    },
    Field {
        name: "person_distinct_id_version",
        raw_json: false,
    },
    Field {
        name: "is_deleted",
        raw_json: false,
    },
];
const PERSON_REQUIRED: &[&str] = &["distinct_id", "person_id"];

/// An opened Parquet file: its footer and which of the wanted columns it has.
struct Opened {
    path: PathBuf,
    name: String,
    meta: ArrowReaderMetadata,
    mask: ProjectionMask,
    fields: &'static [Field],
    /// Rows before each row group, and the total at the end.
    starts: Vec<usize>,
}

fn open(
    path: &Path,
    fields: &'static [Field],
    required: &[&str],
    what: &str,
) -> Result<Opened, Error> {
    let name = path.display().to_string();
    let file =
        File::open(path).map_err(|e| Error::input(name.clone(), format!("cannot open: {e}")))?;
    let meta = caught(|| ArrowReaderMetadata::load(&file, ArrowReaderOptions::new()))
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|e| Error::input(name.clone(), format!("not a readable Parquet file: {e}")))?;
    let schema = meta.schema().clone();
    for r in required {
        if schema.field_with_name(r).is_err() {
            return Err(Error::input(
                name,
                format!("a Parquet {what} file needs the column \"{r}\""),
            ));
        }
    }
    let mut roots = Vec::new();
    for f in fields {
        if let Ok(i) = schema.index_of(f.name) {
            let t = schema.field(i).data_type();
            if !supported(t, f.raw_json) {
                return Err(Error::input(
                    name,
                    format!("column \"{}\" has an unsupported type {t}", f.name),
                ));
            }
            roots.push(i);
        }
    }
    let mask = ProjectionMask::roots(meta.parquet_schema(), roots);
    let mut starts = vec![0usize];
    for rg in meta.metadata().row_groups() {
        let rows = usize::try_from(rg.num_rows()).unwrap_or(0);
        starts.push(starts.last().copied().unwrap_or(0) + rows);
    }
    Ok(Opened {
        path: path.to_path_buf(),
        name,
        meta,
        mask,
        fields,
        starts,
    })
}

/// Runs `f`, turning a panic inside the Parquet decoder into an error (the decoder should
/// never panic on bad input; this keeps a corrupt file an `invalid_input` even if it does).
fn caught<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .map_err(|_| "the Parquet decoder failed on a corrupt file".to_string())
}

fn supported(t: &DataType, raw_json: bool) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => matches!(**v, DataType::Utf8 | DataType::LargeUtf8),
        _ if raw_json => false,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Boolean
        | DataType::Timestamp(_, _) => true,
        _ => false,
    }
}

/// A Parquet events file opened for the loader, which decodes its row groups in parallel and
/// reads each row's fields straight from the columns (no line text).
pub(crate) struct EventFile {
    opened: Opened,
}

/// An event's timestamp as a column holds it.
pub(crate) enum TsVal<'a> {
    /// A Parquet timestamp, in microseconds.
    Micros(i64),
    /// Text, read with the JSON Lines rules.
    Text(&'a str),
    /// An integer: epoch seconds or milliseconds, as a JSON number.
    Int(i128),
    Null,
}

/// One events row.
pub(crate) struct EventRow<'a> {
    pub distinct_id: Option<std::borrow::Cow<'a, str>>,
    pub event: Option<&'a str>,
    pub timestamp: TsVal<'a>,
    /// The properties object's JSON text.
    pub properties: Option<&'a str>,
}

/// Opens a Parquet events file (its footer: the schema and the row groups).
pub(crate) fn open_events(path: &Path) -> Result<EventFile, Error> {
    let opened = open(path, EVENT_FIELDS, EVENT_REQUIRED, "events")?;
    let event = opened
        .meta
        .schema()
        .field_with_name("event")
        .map(|f| f.data_type().clone());
    if let Ok(t) = event {
        if !supported(&t, true) {
            return Err(Error::input(
                opened.name.clone(),
                format!("column \"event\" must hold text, not {t}"),
            ));
        }
    }
    Ok(EventFile { opened })
}

impl EventFile {
    /// Row groups in the file.
    pub(crate) fn row_groups(&self) -> usize {
        self.opened.starts.len() - 1
    }

    /// Calls `f` with each row of row group `g` in order (its index within the group and its
    /// fields), stopping at the first error. Returns the rows of the group and the first error
    /// (row within the group, message): `f`'s, or the decoder's for a corrupt file.
    pub(crate) fn rows(
        &self,
        g: usize,
        mut f: impl FnMut(usize, EventRow<'_>) -> Result<(), String>,
    ) -> (usize, Option<(usize, String)>) {
        let o = &self.opened;
        let mut done = 0usize;
        let result = caught(|| -> Result<(), (usize, String)> {
            let unreadable = |k: usize, e: &dyn std::fmt::Display| {
                (k, format!("not a readable Parquet file: {e}"))
            };
            let file = File::open(&o.path).map_err(|e| (0, format!("cannot open: {e}")))?;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, o.meta.clone())
                .with_projection(o.mask.clone())
                .with_row_groups(vec![g])
                .with_batch_size(BATCH_ROWS)
                .build()
                .map_err(|e| unreadable(0, &e))?;
            for batch in reader {
                let batch = batch.map_err(|e| unreadable(done, &e))?;
                let col = |name: &str| -> Result<Option<Col<'_>>, (usize, String)> {
                    match batch.column_by_name(name) {
                        None => Ok(None),
                        Some(a) => Col::of(a.as_ref()).map(Some).ok_or_else(|| {
                            (done, format!("column \"{name}\" has an unsupported type"))
                        }),
                    }
                };
                let (did, event, ts, props) = (
                    col("distinct_id")?,
                    col("event")?,
                    col("timestamp")?,
                    col("properties")?,
                );
                for i in 0..batch.num_rows() {
                    let distinct_id = present(&did, i).map(|c| match c {
                        Col::Int(_, v) => std::borrow::Cow::Owned(v[i].to_string()),
                        c => std::borrow::Cow::Borrowed(c.text(i).unwrap_or("")),
                    });
                    let timestamp = match present(&ts, i) {
                        None => TsVal::Null,
                        Some(Col::Time(_, v)) => TsVal::Micros(v[i]),
                        Some(Col::Int(_, v)) => TsVal::Int(v[i]),
                        Some(c) => c.text(i).map_or(TsVal::Null, TsVal::Text),
                    };
                    let row = EventRow {
                        distinct_id,
                        event: present(&event, i).and_then(|c| c.text(i)),
                        timestamp,
                        properties: present(&props, i).and_then(|c| c.text(i)),
                    };
                    f(done, row).map_err(|m| (done, m))?;
                    done += 1;
                }
            }
            Ok(())
        });
        match result {
            Ok(Ok(())) => {
                let want = o.starts[g + 1] - o.starts[g];
                if done == want {
                    (done, None)
                } else {
                    let msg = "not a readable Parquet file: a row group is shorter than its \
                               metadata says";
                    (done, Some((done, msg.to_string())))
                }
            }
            Ok(Err((k, msg))) => (k + 1, Some((k, msg))),
            Err(msg) => (
                done,
                Some((done, format!("not a readable Parquet file: {msg}"))),
            ),
        }
    }
}

/// The column's value at row `i`, unless the column is absent or the value null.
fn present<'c, 'a>(c: &'c Option<Col<'a>>, i: usize) -> Option<&'c Col<'a>> {
    c.as_ref().filter(|c| !c.is_null(i))
}

/// Reads the PostHog persons rows of a Parquet file into `resolver`.
pub(crate) fn person_rows(
    path: &Path,
    threads: usize,
    resolver: &mut Resolver,
) -> Result<(), Error> {
    let opened = open(path, PERSON_FIELDS, PERSON_REQUIRED, "persons")?;
    let name = opened.name.clone();
    resolver.read_lines(Box::new(Lines::start(opened, threads)), &name)
}

/// A column of a batch, as the line writer reads it.
enum Col<'a> {
    Text(&'a dyn Array, TextKind<'a>),
    Int(&'a dyn Array, Vec<i128>),
    Bool(&'a arrow_array::BooleanArray),
    /// Values in microseconds.
    Time(&'a dyn Array, Vec<i64>),
}

enum TextKind<'a> {
    Utf8(&'a arrow_array::StringArray),
    Large(&'a arrow_array::LargeStringArray),
    View(&'a arrow_array::StringViewArray),
    /// Dictionary keys (normalised) into a text column.
    Dict(Vec<usize>, Box<Col<'a>>),
}

impl<'a> Col<'a> {
    fn of(a: &'a dyn Array) -> Option<Col<'a>> {
        Some(match a.data_type() {
            DataType::Utf8 => Col::Text(a, TextKind::Utf8(a.as_string_opt::<i32>()?)),
            DataType::LargeUtf8 => Col::Text(a, TextKind::Large(a.as_string_opt::<i64>()?)),
            DataType::Utf8View => Col::Text(a, TextKind::View(a.as_string_view_opt()?)),
            DataType::Dictionary(_, _) => {
                let d = a.as_any_dictionary_opt()?;
                let values = Col::of(d.values().as_ref())?;
                Col::Text(a, TextKind::Dict(d.normalized_keys(), Box::new(values)))
            }
            DataType::Boolean => Col::Bool(a.as_boolean_opt()?),
            DataType::Int8 => Col::Int(a, ints(a.as_primitive_opt::<Int8Type>()?.values())),
            DataType::Int16 => Col::Int(a, ints(a.as_primitive_opt::<Int16Type>()?.values())),
            DataType::Int32 => Col::Int(a, ints(a.as_primitive_opt::<Int32Type>()?.values())),
            DataType::Int64 => Col::Int(a, ints(a.as_primitive_opt::<Int64Type>()?.values())),
            DataType::UInt8 => Col::Int(a, ints(a.as_primitive_opt::<UInt8Type>()?.values())),
            DataType::UInt16 => Col::Int(a, ints(a.as_primitive_opt::<UInt16Type>()?.values())),
            DataType::UInt32 => Col::Int(a, ints(a.as_primitive_opt::<UInt32Type>()?.values())),
            DataType::UInt64 => Col::Int(a, ints(a.as_primitive_opt::<UInt64Type>()?.values())),
            DataType::Timestamp(unit, _) => {
                let (v, scale): (&[i64], i64) = match unit {
                    TimeUnit::Second => (
                        a.as_primitive_opt::<TimestampSecondType>()?.values(),
                        -1_000_000,
                    ),
                    TimeUnit::Millisecond => (
                        a.as_primitive_opt::<TimestampMillisecondType>()?.values(),
                        -1000,
                    ),
                    TimeUnit::Microsecond => (
                        a.as_primitive_opt::<TimestampMicrosecondType>()?.values(),
                        1,
                    ),
                    TimeUnit::Nanosecond => (
                        a.as_primitive_opt::<TimestampNanosecondType>()?.values(),
                        1000,
                    ),
                };
                let micros = v
                    .iter()
                    .map(|&x| match scale {
                        1 => x,
                        s if s < 0 => x.saturating_mul(-s),
                        s => x.div_euclid(s),
                    })
                    .collect();
                Col::Time(a, micros)
            }
            _ => return None,
        })
    }

    fn is_null(&self, i: usize) -> bool {
        match self {
            Col::Text(a, _) | Col::Int(a, _) | Col::Time(a, _) => a.is_null(i),
            Col::Bool(a) => a.is_null(i),
        }
    }

    /// The text of row `i` (text columns only).
    fn text(&self, i: usize) -> Option<&str> {
        match self {
            Col::Text(_, TextKind::Utf8(s)) => Some(s.value(i)),
            Col::Text(_, TextKind::Large(s)) => Some(s.value(i)),
            Col::Text(_, TextKind::View(s)) => Some(s.value(i)),
            Col::Text(_, TextKind::Dict(keys, values)) => {
                let k = *keys.get(i)?;
                if values.is_null(k) {
                    return None;
                }
                values.text(k)
            }
            _ => None,
        }
    }

    /// Appends row `i`'s JSON value (which is not null).
    fn write(&self, i: usize, raw_json: bool, out: &mut Vec<u8>) {
        match self {
            Col::Text(..) => {
                let s = self.text(i).unwrap_or("");
                if raw_json && balanced_object(s.as_bytes()) {
                    // One `{…}` value with no line break inside a string: any line break is
                    // whitespace between tokens, and becomes a space.
                    if s.bytes().any(|b| b == b'\n' || b == b'\r') {
                        out.extend(
                            s.bytes()
                                .map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
                        );
                    } else {
                        out.extend_from_slice(s.as_bytes());
                    }
                } else {
                    json_string(s, out);
                }
            }
            Col::Int(_, v) => {
                let _ = std::io::Write::write_fmt(out, format_args!("{}", v[i]));
            }
            Col::Bool(a) => out.extend_from_slice(if a.value(i) { b"true" } else { b"false" }),
            Col::Time(_, v) => {
                out.push(b'"');
                push_rfc3339(v[i], out);
                out.push(b'"');
            }
        }
    }
}

fn ints<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
    v.iter().map(|&x| x.into()).collect()
}

/// Appends `s` as a JSON string.
fn json_string(s: &str, out: &mut Vec<u8>) {
    let plain = s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// True when `b` is one `{…}` value: it starts with `{` (after whitespace), the brace that
/// closes it is its last non-blank byte, and no raw line break sits inside a string. (Only the
/// structure is checked here; the JSON parser checks the rest when it reads the line.)
fn balanced_object(b: &[u8]) -> bool {
    let start = b.iter().position(|c| !c.is_ascii_whitespace());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace());
    let (Some(start), Some(end)) = (start, end) else {
        return false;
    };
    if b[start] != b'{' || b[end] != b'}' {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, &c) in b[start..=end].iter().enumerate() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                b'\n' | b'\r' => return false,
                _ => {}
            }
            continue;
        }
        match c {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = match depth.checked_sub(1) {
                    Some(d) => d,
                    None => return false,
                };
                if depth == 0 && start + i != end {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0 && !in_string
}

/// Appends one JSON line per row of `batch`.
fn batch_lines(batch: &RecordBatch, fields: &[Field], out: &mut Vec<u8>) -> Result<(), String> {
    let mut cols = Vec::with_capacity(fields.len());
    for f in fields {
        if let Some(a) = batch.column_by_name(f.name) {
            let col = Col::of(a.as_ref())
                .ok_or_else(|| format!("column \"{}\" has an unsupported type", f.name))?;
            cols.push((f, col));
        }
    }
    for i in 0..batch.num_rows() {
        out.push(b'{');
        let mut first = true;
        for (f, col) in &cols {
            if col.is_null(i) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(f.name.as_bytes());
            out.extend_from_slice(b"\":");
            col.write(i, f.raw_json, out);
        }
        out.extend_from_slice(b"}\n");
    }
    Ok(())
}

/// What a decoder thread sends for its row group: a chunk of lines, or why it stopped.
enum Chunk {
    Lines(Vec<u8>),
    Failed(String),
}

/// The lines of a Parquet file, in row order, decoded by row group on background threads.
struct Lines {
    receivers: std::vec::IntoIter<mpsc::Receiver<Chunk>>,
    current: Option<mpsc::Receiver<Chunk>>,
    buf: Vec<u8>,
    pos: usize,
    stop: Arc<AtomicBool>,
}

impl Lines {
    fn start(opened: Opened, threads: usize) -> Lines {
        let groups = opened.starts.len() - 1;
        let mut senders = Vec::with_capacity(groups);
        let mut receivers = Vec::with_capacity(groups);
        for _ in 0..groups {
            // Two chunks ahead per row group; a decoder of a later group waits for the reader.
            let (tx, rx) = mpsc::sync_channel::<Chunk>(2);
            senders.push(Some(tx));
            receivers.push(rx);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let opened = Arc::new(opened);
        let senders = Arc::new(Mutex::new(senders));
        let next = Arc::new(AtomicUsize::new(0));
        for _ in 0..threads.clamp(1, groups.max(1)) {
            let (opened, senders, next, stop) =
                (opened.clone(), senders.clone(), next.clone(), stop.clone());
            std::thread::spawn(move || loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                if g >= groups || stop.load(Ordering::Relaxed) {
                    return;
                }
                let tx = senders.lock().ok().and_then(|mut s| s[g].take());
                let Some(tx) = tx else { return };
                decode_group(&opened, g, &tx, &stop);
            });
        }
        let mut receivers = receivers.into_iter();
        let current = receivers.next();
        Lines {
            receivers,
            current,
            buf: Vec::new(),
            pos: 0,
            stop,
        }
    }
}

/// Decodes row group `g`, sending its lines chunk by chunk.
fn decode_group(opened: &Opened, g: usize, tx: &mpsc::SyncSender<Chunk>, stop: &AtomicBool) {
    let mut sent = 0usize;
    let result = caught(|| -> Result<(), String> {
        let file = File::open(&opened.path).map_err(|e| format!("cannot open: {e}"))?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, opened.meta.clone())
            .with_projection(opened.mask.clone())
            .with_row_groups(vec![g])
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| e.to_string())?;
        for batch in reader {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let batch = batch.map_err(|e| e.to_string())?;
            let mut out = Vec::with_capacity(batch.num_rows() * 256);
            batch_lines(&batch, opened.fields, &mut out)?;
            if tx.send(Chunk::Lines(out)).is_err() {
                return Ok(());
            }
            sent += batch.num_rows();
        }
        Ok(())
    });
    if let Err(msg) = result.and_then(|r| r) {
        let _ = tx.send(Chunk::Failed(msg));
    } else if sent != opened.starts[g + 1] - opened.starts[g] && !stop.load(Ordering::Relaxed) {
        let _ = tx.send(Chunk::Failed(
            "a row group is shorter than its metadata says".into(),
        ));
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Read for Lines {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let avail = self.fill_buf()?;
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Lines {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.pos >= self.buf.len() {
            let Some(rx) = &self.current else {
                return Ok(&[]);
            };
            match rx.recv() {
                Ok(Chunk::Lines(lines)) => {
                    self.buf = lines;
                    self.pos = 0;
                }
                Ok(Chunk::Failed(msg)) => {
                    // Every row before this one has been delivered, so the reader's position
                    // (`file:N`) names the first row not read.
                    self.current = None;
                    return Err(std::io::Error::other(format!(
                        "not a readable Parquet file: {msg}"
                    )));
                }
                Err(_) => self.current = self.receivers.next(),
            }
        }
        Ok(&self.buf[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_are_checked_for_balance() {
        assert!(balanced_object(br#"{"a":{"b":[1,"}"]}}"#));
        assert!(balanced_object(b" {} "));
        assert!(!balanced_object(br#"{"a":1},"distinct_id":"x""#));
        assert!(!balanced_object(br#"{"a":1},{"b":2}"#));
        assert!(!balanced_object(br#"{"a":"}"#));
        assert!(!balanced_object(b"[1]"));
        assert!(!balanced_object(b"{\"a\":\"x\ny\"}"));
        assert!(balanced_object(b"{\"a\":\n1}"));
    }

    #[test]
    fn timestamps_format_like_the_parser_reads_them() {
        for t in [
            0i64,
            1,
            -1,
            1_700_000_000_123_456,
            -62_135_596_800_000_000,
            253_402_300_799_999_999,
        ] {
            let mut out = Vec::new();
            push_rfc3339(t, &mut out);
            let s = String::from_utf8(out).unwrap();
            assert_eq!(crate::time::parse_absolute(&s), Some(t), "{s}");
            assert_eq!(s, crate::time::format_micros(t));
        }
        let mut out = Vec::new();
        push_rfc3339(-62_135_596_800_000_001, &mut out);
        assert_eq!(
            crate::time::parse_absolute(std::str::from_utf8(&out).unwrap()),
            None
        );
    }
}
