//! Data files as PostHog exports them, turned into the loader's inputs.
//!
//! `--persons` and `--events` name a file or a directory; a directory means every data file in
//! it (`.jsonl`, `.json`, `.jsonl.gz`, `.jsonl.br`, `.parquet`, hidden files and others
//! skipped), in name order — PostHog's batch exports write one part file per run, so an export
//! is a directory of parts. Each file becomes a [`Source`]: a name for errors and a stream of
//! JSON Lines in the loader's own shapes (`CLI.md` §2), so one parser, with its exact errors,
//! reads every format.
//!
//! - Our own persons shape (`id`, `distinct_ids`, `properties`) and events of either kind
//!   (ours and PostHog's share `distinct_id`, `event`, `timestamp`, `properties`; other fields
//!   are ignored) stream straight through, decompressed.
//! - The PostHog persons model (one row per distinct id: `distinct_id`, `person_id`,
//!   `properties`, `person_version`, `person_distinct_id_version`, maybe `is_deleted`) is read
//!   whole from every persons file of that shape and resolved ([`Resolver`]) into one person a
//!   line.
//! - Parquet files are decoded by row group in parallel (`super::parquet`), reading only the
//!   columns used; each row becomes one line, so `file:N` counts rows there.
//!
//! An event's own `person_id` is never read: events attach to persons through the distinct id
//! mapping of the persons files. PostHog writes an event row once, at ingestion, and never
//! updates it, so the `person_id` in an export is the one known then — stale after a merge of
//! persons or a distinct id moving to another person.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::arena::StrSet;
use crate::error::Error;

/// Opens a stream of JSON Lines (lazily: a directory of many parts holds one open at a time).
pub(crate) type Opener<'a> = Box<dyn FnOnce() -> Result<Box<dyn BufRead + Send + 'a>, Error> + 'a>;

/// One input of the loader and the name its errors carry (`name:N`).
pub(crate) struct Source<'a> {
    /// The file name (or, for resolved PostHog persons, a description of where they came from).
    pub name: String,
    /// What it is.
    pub input: Input<'a>,
}

/// What a [`Source`] reads.
pub(crate) enum Input<'a> {
    /// JSON Lines in the loader's shapes.
    Lines(Opener<'a>),
    /// A Parquet events file, read by row group.
    #[cfg(feature = "parquet")]
    ParquetEvents(PathBuf),
}

impl<'a> Source<'a> {
    /// Opens a JSON Lines source.
    ///
    /// # Errors
    /// The opener's, or `invalid_input` for a source that is not JSON Lines.
    pub(crate) fn lines(self) -> Result<Box<dyn BufRead + Send + 'a>, Error> {
        match self.input {
            Input::Lines(open) => open(),
            #[cfg(feature = "parquet")]
            Input::ParquetEvents(_) => Err(Error::input(self.name, "expected JSON Lines")),
        }
    }

    /// A source over a reader that is already open.
    pub(crate) fn reader(name: &str, reader: impl BufRead + Send + 'a) -> Source<'a> {
        Source {
            name: name.to_string(),
            input: Input::Lines(Box::new(move || {
                Ok(Box::new(reader) as Box<dyn BufRead + Send + 'a>)
            })),
        }
    }
}

/// How a data file is stored, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    /// `.jsonl`, `.ndjson`, or anything not listed below (a file named on the command line).
    Lines,
    /// `.json`: JSON Lines, or one JSON array of records.
    Json,
    /// `….gz`: gzip-compressed JSON Lines.
    Gzip,
    /// `….br`: brotli-compressed JSON Lines.
    Brotli,
    /// `.parquet`.
    Parquet,
}

fn format_of(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    Some(if name.ends_with(".parquet") {
        Format::Parquet
    } else if name.ends_with(".gz") {
        Format::Gzip
    } else if name.ends_with(".br") {
        Format::Brotli
    } else if name.ends_with(".json") {
        Format::Json
    } else if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Format::Lines
    } else {
        return None;
    })
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The data files `path` names: itself, or every data file of the directory in name order
/// (hidden files, `_SUCCESS`-style markers and files of other extensions are skipped).
pub(crate) fn data_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::input(display(path), format!("cannot open: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path)
        .map_err(|e| Error::input(display(path), format!("cannot list: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::input(display(path), format!("cannot list: {e}")))?;
        let p = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.starts_with('_') || format_of(&p).is_none() {
            continue;
        }
        if p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::input(
            display(path),
            "no data files (.jsonl, .json, .jsonl.gz, .jsonl.br, .parquet) in the directory",
        ));
    }
    Ok(files)
}

/// Opens a JSON Lines file, decompressing by its name.
fn open_lines(path: &Path) -> Result<Box<dyn BufRead + Send>, Error> {
    let name = display(path);
    let file =
        File::open(path).map_err(|e| Error::input(name.clone(), format!("cannot open: {e}")))?;
    let format = format_of(path).unwrap_or(Format::Lines);
    Ok(match format {
        Format::Gzip => gzip_reader(file, &name)?,
        Format::Brotli => brotli_reader(file, &name)?,
        _ => Box::new(BufReader::with_capacity(1 << 16, file)),
    })
}

/// A gzip-compressed file (cargo feature `gzip`, in the default build).
#[cfg(feature = "gzip")]
fn gzip_reader(file: File, _name: &str) -> Result<Box<dyn BufRead + Send>, Error> {
    Ok(Box::new(BufReader::with_capacity(
        1 << 16,
        flate2::read::MultiGzDecoder::new(file),
    )))
}

/// Without the `gzip` feature a `.gz` file is refused, never read as plain text.
#[cfg(not(feature = "gzip"))]
fn gzip_reader(_file: File, name: &str) -> Result<Box<dyn BufRead + Send>, Error> {
    Err(Error::input(
        name,
        "gzip-compressed files need the cargo feature `gzip`",
    ))
}

#[cfg(feature = "brotli")]
fn brotli_reader(file: File, _name: &str) -> Result<Box<dyn BufRead + Send>, Error> {
    Ok(Box::new(BufReader::with_capacity(
        1 << 16,
        brotli::Decompressor::new(file, 1 << 16),
    )))
}

#[cfg(not(feature = "brotli"))]
fn brotli_reader(_file: File, name: &str) -> Result<Box<dyn BufRead + Send>, Error> {
    Err(Error::input(
        name,
        "brotli-compressed files need the cargo feature `brotli`",
    ))
}

/// The first non-blank line of `reader` (with the blank lines and bytes before it) and the
/// reader positioned after it.
fn peek_record(
    mut reader: Box<dyn BufRead + Send>,
    name: &str,
) -> Result<(Vec<u8>, Box<dyn BufRead + Send>), Error> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        let n = reader
            .read_until(b'\n', &mut head)
            .map_err(|e| Error::input(name, format!("cannot read: {e}")))?;
        if n == 0 || !head[start..].iter().all(u8::is_ascii_whitespace) {
            return Ok((head, reader));
        }
    }
}

/// A file's records as JSON Lines: the stream itself, or, for a `.json` file holding one JSON
/// array, one line per element.
fn lines_of(path: &Path) -> Result<Box<dyn BufRead + Send>, Error> {
    let name = display(path);
    let reader = open_lines(path)?;
    if format_of(path) != Some(Format::Json) {
        return Ok(reader);
    }
    let (head, mut rest) = peek_record(reader, &name)?;
    if head.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return Ok(Box::new(std::io::Cursor::new(head).chain(rest)));
    }
    let mut text = head;
    rest.read_to_end(&mut text)
        .map_err(|e| Error::input(name.clone(), format!("cannot read: {e}")))?;
    let records: Vec<Box<serde_json::value::RawValue>> = serde_json::from_slice(&text)
        .map_err(|e| Error::input(name.clone(), format!("not a JSON array of records: {e}")))?;
    let mut out = Vec::with_capacity(text.len());
    for r in records {
        out.extend_from_slice(r.get().replace(['\n', '\r'], " ").as_bytes());
        out.push(b'\n');
    }
    Ok(Box::new(std::io::Cursor::new(out)))
}

/// Does this record (a JSON object's text) have the PostHog persons model's shape: a
/// `person_id` and a `distinct_id`, no `distinct_ids` list?
fn is_posthog_person(record: &[u8]) -> bool {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(record) else {
        return false;
    };
    obj.contains_key("person_id")
        && obj.contains_key("distinct_id")
        && !obj.contains_key("distinct_ids")
}

/// The event sources of `path` (a file or a directory of parts).
pub(crate) fn event_sources(path: &Path, threads: usize) -> Result<Vec<Source<'static>>, Error> {
    let mut out = Vec::new();
    for file in data_files(path)? {
        let name = display(&file);
        let input = if format_of(&file) == Some(Format::Parquet) {
            parquet_events(file, threads)?
        } else {
            Input::Lines(Box::new(move || lines_of(&file)))
        };
        out.push(Source { name, input });
    }
    Ok(out)
}

/// The persons sources of `path`: files of our own shape stream through, one source each, in
/// name order; rows of the PostHog persons model from every other file are resolved together
/// into one last source named after `path`.
pub(crate) fn person_sources(path: &Path, threads: usize) -> Result<Vec<Source<'static>>, Error> {
    let mut out = Vec::new();
    let mut resolver = Resolver::default();
    for file in data_files(path)? {
        let name = display(&file);
        if format_of(&file) == Some(Format::Parquet) {
            parquet_person_rows(&file, threads, &mut resolver)?;
            continue;
        }
        let (head, rest) = peek_record(lines_of(&file)?, &name)?;
        let reader: Box<dyn BufRead + Send> =
            Box::new(std::io::Cursor::new(head.clone()).chain(rest));
        if is_posthog_person(&head) {
            resolver.read_lines(reader, &name)?;
        } else {
            out.push(Source::reader(&name, reader));
        }
    }
    if resolver.rows > 0 {
        let lines = resolver.finish();
        out.push(Source::reader(
            &format!("{} (PostHog persons, resolved)", display(path)),
            std::io::Cursor::new(lines),
        ));
    }
    Ok(out)
}

/// Reads the rows of a Parquet persons file into `resolver`: row groups decoded and their
/// properties checked in parallel, rows resolved in order.
#[cfg(feature = "parquet")]
fn parquet_person_rows(path: &Path, threads: usize, resolver: &mut Resolver) -> Result<(), Error> {
    let file = super::parquet::open_persons(path)?;
    let name = display(path);
    let produce = super::parquet::each_group(file.row_groups());
    let parse = |g: usize, b: &mut RowBlock| {
        file.rows(g, |d, p, props, pv, dv, del| {
            b.push(d, p, props, pv, dv, del)
        })
    };
    let consume = |b: &mut RowBlock, _before: usize| {
        let mut start = 0;
        for &(ends, pv, dv, del) in &b.rows {
            let text =
                |from: usize, to: usize| std::str::from_utf8(&b.bytes[from..to]).unwrap_or("");
            resolver.add_row(
                text(start, ends[0]),
                text(ends[0], ends[1]),
                text(ends[1], ends[2]),
                pv,
                dv,
                del,
            );
            start = ends[2];
        }
        Ok(())
    };
    super::load::run_blocks(
        &name,
        threads,
        std::time::Instant::now(),
        &mut None,
        produce,
        parse,
        consume,
    )
}

/// A row group's persons rows: distinct id, person id and properties text back to back in one
/// buffer (each row's three end offsets), and the versions and deletion flag.
#[cfg(feature = "parquet")]
#[derive(Default)]
struct RowBlock {
    bytes: Vec<u8>,
    rows: Vec<([usize; 3], i64, i64, bool)>,
}

#[cfg(feature = "parquet")]
impl super::load::BlockState for RowBlock {
    fn reset(&mut self) {
        self.bytes.clear();
        self.rows.clear();
    }
}

#[cfg(feature = "parquet")]
impl RowBlock {
    /// Checks a row's properties text (a JSON object, or null) and keeps the row.
    fn push(
        &mut self,
        did: &str,
        pid: &str,
        props: Option<&str>,
        pv: i64,
        dv: i64,
        del: bool,
    ) -> Result<(), String> {
        let props = match props.map(str::trim) {
            None => "{}",
            Some(t) if t.starts_with('{') => {
                serde_json::from_str::<serde::de::IgnoredAny>(t)
                    .map_err(|e| format!("properties is not valid JSON: {e}"))?;
                t
            }
            Some(t) => {
                // null is no properties; anything else is an error with its message.
                properties_text(t)?;
                "{}"
            }
        };
        self.bytes.extend_from_slice(did.as_bytes());
        let a = self.bytes.len();
        self.bytes.extend_from_slice(pid.as_bytes());
        let b = self.bytes.len();
        // Valid JSON has line breaks only between tokens: spaces keep the resolved line whole.
        self.bytes.extend(
            props
                .bytes()
                .map(|c| if c == b'\n' || c == b'\r' { b' ' } else { c }),
        );
        self.rows.push(([a, b, self.bytes.len()], pv, dv, del));
        Ok(())
    }
}

#[cfg(feature = "parquet")]
fn parquet_events(path: PathBuf, _threads: usize) -> Result<Input<'static>, Error> {
    Ok(Input::ParquetEvents(path))
}

#[cfg(not(feature = "parquet"))]
fn parquet_events(path: PathBuf, _threads: usize) -> Result<Input<'static>, Error> {
    Err(no_parquet(&path))
}

#[cfg(not(feature = "parquet"))]
fn parquet_person_rows(path: &Path, _threads: usize, _r: &mut Resolver) -> Result<(), Error> {
    Err(no_parquet(path))
}

#[cfg(not(feature = "parquet"))]
fn no_parquet(path: &Path) -> Error {
    Error::input(
        display(path),
        "Parquet files need the cargo feature `parquet`",
    )
}

/// One row of the PostHog persons model.
pub(crate) struct PersonRow {
    pub distinct_id: String,
    pub person_id: String,
    /// The properties object's compact JSON text (`{}` when absent).
    pub properties: String,
    pub person_version: i64,
    pub distinct_id_version: i64,
    pub is_deleted: bool,
}

/// Marks "no live row yet" in [`Resolver::live`].
const NO_PROPS: u32 = u32::MAX;

/// Resolves PostHog persons rows from any number of files, in file then row order:
/// - a person's properties are those of its live row with the highest `person_version` (the
///   later row on a tie);
/// - a person is deleted when a deleted row has a `person_version` above every live row's
///   (PostHog raises the person's version when it deletes it; a row deleted only for its
///   distinct id keeps the person's version);
/// - a distinct id belongs to the person of its row with the highest
///   `person_distinct_id_version` (the later row on a tie); when that row is deleted, or its
///   person is, the distinct id belongs to no one.
///
/// Ids live in arenas and properties texts in one buffer, so a row allocates nothing.
#[derive(Default)]
pub(crate) struct Resolver {
    /// Person ids, numbered in order of first appearance.
    persons: StrSet,
    /// Per person: highest live `person_version` and its properties text (or [`NO_PROPS`]).
    live: Vec<(i64, u32)>,
    /// Per person: highest deleted `person_version`.
    deleted: Vec<Option<i64>>,
    /// Properties texts of live rows that won when they were read.
    props: StrSet,
    /// Distinct ids, numbered in order of first appearance.
    dids: StrSet,
    /// Per distinct id: (version, person, deleted) of its winning row.
    owners: Vec<(i64, u32, bool)>,
    /// Rows read.
    pub rows: u64,
}

impl Resolver {
    /// Adds one row (rows come in file order, then row order); `properties` is the object's
    /// JSON text, already checked.
    pub(crate) fn add_row(
        &mut self,
        distinct_id: &str,
        person_id: &str,
        properties: &str,
        person_version: i64,
        distinct_id_version: i64,
        is_deleted: bool,
    ) {
        self.rows += 1;
        let p = self.persons.intern(person_id.as_bytes());
        if p as usize == self.live.len() {
            self.live.push((i64::MIN, NO_PROPS));
            self.deleted.push(None);
        }
        let p = p as usize;
        if is_deleted {
            self.deleted[p] =
                Some(self.deleted[p].map_or(person_version, |d| d.max(person_version)));
        } else if self.live[p].1 == NO_PROPS || person_version >= self.live[p].0 {
            self.live[p] = (person_version, self.props.intern(properties.as_bytes()));
        }
        let d = self.dids.intern(distinct_id.as_bytes());
        let row = (distinct_id_version, p as u32, is_deleted);
        if d as usize == self.owners.len() {
            self.owners.push(row);
        } else if distinct_id_version >= self.owners[d as usize].0 {
            self.owners[d as usize] = row;
        }
    }

    /// Adds one parsed row.
    pub(crate) fn add(&mut self, row: PersonRow) {
        self.add_row(
            &row.distinct_id,
            &row.person_id,
            &row.properties,
            row.person_version,
            row.distinct_id_version,
            row.is_deleted,
        );
    }

    /// Reads every line of a JSON Lines file of persons rows.
    pub(crate) fn read_lines(
        &mut self,
        mut reader: Box<dyn BufRead + Send>,
        name: &str,
    ) -> Result<(), Error> {
        let mut line = Vec::new();
        let mut n = 0usize;
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(|e| {
                Error::input(format!("{name}:{}", n + 1), format!("cannot read: {e}"))
            })?;
            if read == 0 {
                return Ok(());
            }
            n += 1;
            let at = || format!("{name}:{n}");
            let Ok(text) = std::str::from_utf8(&line) else {
                return Err(Error::input(at(), "not valid UTF-8"));
            };
            let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
            if text.is_empty() {
                continue;
            }
            let row = fast_row(text).map_err(|m| Error::input(at(), m))?;
            self.add(row);
        }
    }

    /// The resolved persons as JSON Lines of our own shape, in order of first appearance.
    pub(crate) fn finish(self) -> Vec<u8> {
        let n = self.live.len();
        let gone = |p: usize| {
            let (version, props) = self.live[p];
            props == NO_PROPS || self.deleted[p].is_some_and(|d| d > version)
        };
        // Each person's distinct ids, in order of first appearance (a counting sort).
        let mut start = vec![0u32; n + 1];
        for &(_, p, deleted) in &self.owners {
            if !deleted {
                start[p as usize + 1] += 1;
            }
        }
        for p in 0..n {
            start[p + 1] += start[p];
        }
        let mut cursor = start.clone();
        let mut dids = vec![0u32; start[n] as usize];
        for (d, &(_, p, deleted)) in self.owners.iter().enumerate() {
            if !deleted {
                dids[cursor[p as usize] as usize] = d as u32;
                cursor[p as usize] += 1;
            }
        }
        let mut out = Vec::with_capacity(self.props.heap_bytes() + self.dids.heap_bytes());
        for p in 0..n {
            if gone(p) {
                continue;
            }
            out.extend_from_slice(b"{\"id\":");
            json_string(self.persons.get_str(p as u32), &mut out);
            out.extend_from_slice(b",\"distinct_ids\":[");
            for (k, &d) in dids[start[p] as usize..start[p + 1] as usize]
                .iter()
                .enumerate()
            {
                if k > 0 {
                    out.push(b',');
                }
                json_string(self.dids.get_str(d), &mut out);
            }
            out.extend_from_slice(b"],\"properties\":");
            out.extend_from_slice(self.props.get(self.live[p].1));
            out.extend_from_slice(b"}\n");
        }
        out
    }
}

/// Appends `s` as a JSON string.
pub(crate) fn json_string(s: &str, out: &mut Vec<u8>) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

/// The string form of an id: a string as is, an integer as digits.
fn id_of(v: Option<&Value>, what: &str) -> Result<String, String> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        None | Some(Value::Null) => Err(format!("a PostHog persons row needs a \"{what}\"")),
        Some(other) => Err(format!(
            "{what} must be a string or an integer, got {other}"
        )),
    }
}

/// A version: an integer (or a string of one); absent or null = 0.
fn version_of(v: Option<&Value>, what: &str) -> Result<i64, String> {
    match v {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) if n.is_i64() => Ok(n.as_i64().unwrap_or(0)),
        Some(Value::String(s)) if s.parse::<i64>().is_ok() => Ok(s.parse().unwrap_or(0)),
        Some(other) => Err(format!("{what} must be an integer, got {other}")),
    }
}

/// `is_deleted`: a boolean or 0/1; absent or null = false.
fn deleted_of(v: Option<&Value>) -> Result<bool, String> {
    match v {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(false),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(true),
        Some(other) => Err(format!("is_deleted must be a boolean or 0/1, got {other}")),
    }
}

/// Checks a properties object's text and returns its compact form.
pub(crate) fn properties_text(text: &str) -> Result<String, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(Value::Object(m).to_string()),
        Ok(Value::Null) => Ok("{}".into()),
        Ok(other) => Err(format!("properties must be an object, got {other}")),
        Err(e) => Err(format!("properties is not valid JSON: {e}")),
    }
}

/// A persons row with each field's JSON text, for the fast path.
#[derive(serde::Deserialize)]
struct RawRow<'a> {
    #[serde(borrow)]
    distinct_id: Option<&'a RawValue>,
    #[serde(borrow)]
    person_id: Option<&'a RawValue>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    person_version: Option<&'a RawValue>,
    #[serde(borrow)]
    person_distinct_id_version: Option<&'a RawValue>,
    #[serde(borrow)]
    is_deleted: Option<&'a RawValue>,
}

/// Parses one JSON Lines persons row: the properties object's text is kept as it is, without
/// building it; anything unusual goes through [`json_row`], which has the exact messages.
fn fast_row(text: &str) -> Result<PersonRow, String> {
    let Ok(raw) = serde_json::from_str::<RawRow<'_>>(text) else {
        return json_row(text);
    };
    let scalar = |r: Option<&RawValue>| -> Option<Value> {
        r.and_then(|r| serde_json::from_str(r.get()).ok())
    };
    let properties = match raw.properties.map(|r| r.get().trim()) {
        None | Some("null") => "{}".to_string(),
        Some(p) if p.starts_with('{') => p.to_string(),
        Some(_) => return json_row(text),
    };
    Ok(PersonRow {
        distinct_id: id_of(scalar(raw.distinct_id).as_ref(), "distinct_id")?,
        person_id: id_of(scalar(raw.person_id).as_ref(), "person_id")?,
        properties,
        person_version: version_of(scalar(raw.person_version).as_ref(), "person_version")?,
        distinct_id_version: version_of(
            scalar(raw.person_distinct_id_version).as_ref(),
            "person_distinct_id_version",
        )?,
        is_deleted: deleted_of(scalar(raw.is_deleted).as_ref())?,
    })
}

/// Parses one JSON Lines persons row.
fn json_row(text: &str) -> Result<PersonRow, String> {
    let obj: Map<String, Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err("expected a JSON object".into()),
        Err(e) => return Err(format!("not valid JSON: {e}")),
    };
    let properties = match obj.get("properties") {
        None | Some(Value::Null) => "{}".to_string(),
        Some(v @ Value::Object(_)) => v.to_string(),
        // A JSON-encoded string, as some destinations write it.
        Some(Value::String(s)) => properties_text(s)?,
        Some(other) => return Err(format!("properties must be an object, got {other}")),
    };
    Ok(PersonRow {
        distinct_id: id_of(obj.get("distinct_id"), "distinct_id")?,
        person_id: id_of(obj.get("person_id"), "person_id")?,
        properties,
        person_version: version_of(obj.get("person_version"), "person_version")?,
        distinct_id_version: version_of(
            obj.get("person_distinct_id_version"),
            "person_distinct_id_version",
        )?,
        is_deleted: deleted_of(obj.get("is_deleted"))?,
    })
}

/// Appends `t` (µs since the epoch) as `YYYY-MM-DDTHH:MM:SS.ffffffZ`. A year outside
/// 1..=9999 is written as it is, which the timestamp parser then rejects.
pub(crate) fn push_rfc3339(t: i64, out: &mut Vec<u8>) {
    const DAY: i64 = 86_400_000_000;
    let (y, m, d) = crate::time::civil_from_days(t.div_euclid(DAY));
    let tod = t.rem_euclid(DAY);
    let secs = tod / 1_000_000;
    let frac = tod % 1_000_000;
    if (1..=9999).contains(&y) {
        let mut buf = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut v: i64| {
            for k in (0..width).rev() {
                buf[at + k] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, 4, y);
        put(5, 2, i64::from(m));
        put(8, 2, i64::from(d));
        put(11, 2, secs / 3600);
        put(14, 2, secs / 60 % 60);
        put(17, 2, secs % 60);
        put(20, 6, frac);
        out.extend_from_slice(&buf);
    } else {
        let _ = std::io::Write::write_fmt(
            out,
            format_args!(
                "{y}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(did: &str, pid: &str, props: &str, pv: i64, dv: i64, del: bool) -> PersonRow {
        PersonRow {
            distinct_id: did.into(),
            person_id: pid.into(),
            properties: props.into(),
            person_version: pv,
            distinct_id_version: dv,
            is_deleted: del,
        }
    }

    #[test]
    fn versions_and_deletions_resolve() {
        let mut r = Resolver::default();
        r.add(row("a", "P", r#"{"v":2}"#, 2, 0, false));
        r.add(row("b", "P", r#"{"v":1}"#, 1, 0, false)); // older properties
        r.add(row("c", "G", r#"{"g":1}"#, 0, 0, false));
        r.add(row("c", "P", r#"{"v":2}"#, 2, 1, false)); // c moves to P
        r.add(row("c", "G", r#"{"g":1}"#, 100, 0, true)); // G deleted; c's mapping stays with P
        r.add(row("x", "P", r#"{"v":2}"#, 2, 0, false));
        r.add(row("x", "P", r#"{"v":2}"#, 2, 1, true)); // only the mapping of x is deleted
        let text = String::from_utf8(r.finish()).unwrap();
        assert_eq!(
            text,
            "{\"id\":\"P\",\"distinct_ids\":[\"a\",\"b\",\"c\"],\"properties\":{\"v\":2}}\n"
        );
    }

    #[test]
    fn persons_rows_parse_with_exact_errors() {
        let r = json_row(
            r#"{"distinct_id":5,"person_id":"p","properties":"{\"a\":1}","person_version":"3"}"#,
        )
        .unwrap();
        assert_eq!(
            (
                r.distinct_id.as_str(),
                r.properties.as_str(),
                r.person_version
            ),
            ("5", "{\"a\":1}", 3)
        );
        assert_eq!(
            json_row(r#"{"distinct_id":"d","person_id":"p","person_version":1.5}"#)
                .err()
                .unwrap(),
            "person_version must be an integer, got 1.5"
        );
        assert_eq!(
            json_row(r#"{"distinct_id":"d"}"#).err().unwrap(),
            "a PostHog persons row needs a \"person_id\""
        );
        assert_eq!(
            json_row(r#"{"distinct_id":"d","person_id":"p","is_deleted":2}"#)
                .err()
                .unwrap(),
            "is_deleted must be a boolean or 0/1, got 2"
        );
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
