//! Parquet data files (PostHog's batch exports), read by row group: the loader's workers
//! decode one row group each (only the columns used), so row groups are decoded in parallel
//! and merged in file order, and `file:N` counts rows.
//!
//! - Events: the envelope (`distinct_id`, `event`, `timestamp`) comes from the typed columns;
//!   the `properties` column holds JSON text (PostHog writes it so), which goes through the same
//!   scanner as a JSON line's properties, with the same rules and errors. Timestamps of any unit
//!   are read exactly; text and integer timestamps follow the JSON Lines rules.
//! - Persons (the PostHog model): each row's ids, versions, deletion flag and checked
//!   properties text go to the resolver (`super::posthog::Resolver`).
//!
//! A file that cannot be decoded (not Parquet, truncated, a corrupt page) is an `invalid_input`
//! naming the file (and, past the footer, the first row not read); a panic inside the decoder,
//! which should not happen, is caught and reported the same way.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Int16Type, Int32Type, Int64Type, Int8Type, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use arrow_array::Array;
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::ProjectionMask;

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

/// A producer of row groups `0..groups` in order for the block loader (it stops when the
/// loader does).
pub(crate) fn each_group(
    groups: usize,
) -> impl FnOnce(&mut dyn FnMut(usize) -> bool) -> Option<String> + Send {
    move |send| {
        for g in 0..groups {
            if !send(g) {
                break;
            }
        }
        None
    }
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
        let names = ["distinct_id", "event", "timestamp", "properties"];
        for_rows(&self.opened, g, &names, |k, cols, i| {
            let [did, event, ts, props] = cols else {
                return Ok(());
            };
            let timestamp = match present(ts, i) {
                None => TsVal::Null,
                Some(Col::Time(_, v)) => TsVal::Micros(v[i]),
                Some(Col::Int(_, v)) => TsVal::Int(v[i]),
                Some(c) => c.text(i).map_or(TsVal::Null, TsVal::Text),
            };
            let row = EventRow {
                distinct_id: id(did, i),
                event: present(event, i).and_then(|c| c.text(i)),
                timestamp,
                properties: present(props, i).and_then(|c| c.text(i)),
            };
            f(k, row)
        })
    }
}

/// An id column's value at row `i`: text as it is, an integer as its digits.
fn id<'c>(c: &'c Option<Col<'_>>, i: usize) -> Option<std::borrow::Cow<'c, str>> {
    present(c, i).map(|c| match c {
        Col::Int(_, v) => std::borrow::Cow::Owned(v[i].to_string()),
        c => std::borrow::Cow::Borrowed(c.text(i).unwrap_or("")),
    })
}

/// Decodes row group `g` of `o` and calls `f` for each row in order (its index within the
/// group, the columns `names` of its batch, absent ones `None`, and its index within the
/// batch), stopping at the first error. Returns the rows of the group and the first error
/// (row within the group, message): `f`'s, or the decoder's for a corrupt file.
fn for_rows(
    o: &Opened,
    g: usize,
    names: &[&str],
    mut f: impl FnMut(usize, &[Option<Col<'_>>], usize) -> Result<(), String>,
) -> (usize, Option<(usize, String)>) {
    let mut done = 0usize;
    let result = caught(|| -> Result<(), (usize, String)> {
        let unreadable =
            |k: usize, e: &dyn std::fmt::Display| (k, format!("not a readable Parquet file: {e}"));
        let file = File::open(&o.path).map_err(|e| (0, format!("cannot open: {e}")))?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, o.meta.clone())
            .with_projection(o.mask.clone())
            .with_row_groups(vec![g])
            .with_batch_size(BATCH_ROWS)
            .build()
            .map_err(|e| unreadable(0, &e))?;
        for batch in reader {
            let batch = batch.map_err(|e| unreadable(done, &e))?;
            let mut cols = Vec::with_capacity(names.len());
            for name in names {
                cols.push(match batch.column_by_name(name) {
                    None => None,
                    Some(a) => Some(Col::of(a.as_ref()).ok_or_else(|| {
                        (done, format!("column \"{name}\" has an unsupported type"))
                    })?),
                });
            }
            for i in 0..batch.num_rows() {
                f(done, &cols, i).map_err(|m| (done, m))?;
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

/// A Parquet file of the PostHog persons model, read by row group.
pub(crate) struct PersonFile {
    opened: Opened,
}

/// Opens a Parquet persons file (its footer: the schema and the row groups).
pub(crate) fn open_persons(path: &Path) -> Result<PersonFile, Error> {
    Ok(PersonFile {
        opened: open(path, PERSON_FIELDS, PERSON_REQUIRED, "persons")?,
    })
}

/// A version column's value (absent or null = 0).
fn version(c: &Option<Col<'_>>, i: usize, what: &str) -> Result<i64, String> {
    match present(c, i) {
        None => Ok(0),
        Some(Col::Int(_, v)) => {
            i64::try_from(v[i]).map_err(|_| format!("{what} must be an integer, got {}", v[i]))
        }
        Some(c) => {
            let t = c.text(i).unwrap_or("");
            t.parse()
                .map_err(|_| format!("{what} must be an integer, got {t:?}"))
        }
    }
}

impl PersonFile {
    /// Row groups in the file.
    pub(crate) fn row_groups(&self) -> usize {
        self.opened.starts.len() - 1
    }

    /// Calls `f` with each row of row group `g` (as [`EventFile::rows`]): distinct id, person
    /// id, properties text (`None` when null), person version, distinct id version, deleted.
    #[allow(clippy::type_complexity)]
    pub(crate) fn rows(
        &self,
        g: usize,
        mut f: impl FnMut(&str, &str, Option<&str>, i64, i64, bool) -> Result<(), String>,
    ) -> (usize, Option<(usize, String)>) {
        let names = [
            "distinct_id",
            "person_id",
            "properties",
            "person_version",
            "person_distinct_id_version",
            "is_deleted",
        ];
        for_rows(&self.opened, g, &names, |_, cols, i| {
            let [did, pid, props, pv, dv, del] = cols else {
                return Ok(());
            };
            let did = id(did, i).ok_or("a PostHog persons row needs a \"distinct_id\"")?;
            let pid = id(pid, i).ok_or("a PostHog persons row needs a \"person_id\"")?;
            let deleted = match present(del, i) {
                None => false,
                Some(Col::Bool(b)) => b.value(i),
                Some(Col::Int(_, v)) if v[i] == 0 || v[i] == 1 => v[i] == 1,
                Some(Col::Int(_, v)) => {
                    return Err(format!("is_deleted must be a boolean or 0/1, got {}", v[i]))
                }
                Some(c) => {
                    return Err(format!(
                        "is_deleted must be a boolean or 0/1, got {:?}",
                        c.text(i).unwrap_or("")
                    ))
                }
            };
            f(
                &did,
                &pid,
                present(props, i).and_then(|c| c.text(i)),
                version(pv, i, "person_version")?,
                version(dv, i, "person_distinct_id_version")?,
                deleted,
            )
        })
    }
}

/// The column's value at row `i`, unless the column is absent or the value null.
fn present<'c, 'a>(c: &'c Option<Col<'a>>, i: usize) -> Option<&'c Col<'a>> {
    c.as_ref().filter(|c| !c.is_null(i))
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
}

fn ints<T: Copy + Into<i128>>(v: &[T]) -> Vec<i128> {
    v.iter().map(|&x| x.into()).collect()
}
