//! Loading a [`Dataset`] from the JSONL files of `CLI.md` §2.
//!
//! A file is streamed in blocks of whole lines (never held whole) by a reader thread; worker
//! threads parse the blocks in parallel into columnar block states (ids, timestamps, names and
//! property values with block-local dictionaries), trying the hand-written scanner
//! ([`super::scan`]), then the borrowed serde path ([`super::fast`]), then a `serde_json::Value`
//! for the exact error; the calling thread merges the blocks in file order, so errors keep their
//! `file:line` and the first bad line in file order is the one reported. Buffers and block
//! states circulate through pools and at most 2 × threads + 1 blocks are in flight, so the steady
//! state allocates nothing per line and memory stays flat. Events are then grouped by person (a
//! counting sort), ordered by event name and time within each person (ties keep file order), and
//! each person's run of a name moved into that name's block: the columns end up ordered by
//! (name, person, time), so a batch leaf reads its name's runs front to back and each run is
//! one contiguous, time-ordered slice.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::arena::StrSet;
use super::columns::{ColumnBuilder, EventColumn, RawVal};
use super::fast::{EventSink, IdList, NULL_VALUE};
use super::posthog::{Input, Source};
use super::{Column, Dataset, NameRun, Projection, Run};
use crate::error::Error;
use crate::intern::{Sym, Symbols};
use crate::time::{parse_timestamp, Micros};

/// A progress callback: file name, lines read so far, time since the load started.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, Duration);

/// Options for loading; the default is silent, keeps everything and uses every core. Change what
/// differs with the builder methods (or by assigning the fields):
///
/// ```
/// use cohort_engine::{CohortSet, LoadOptions, Projection};
/// let set = CohortSet::from_json("[]")?;
/// let opts = LoadOptions::default().threads(2).projection(Projection::of(&set));
/// # Ok::<(), cohort_engine::Errors>(())
/// ```
#[derive(Default)]
#[non_exhaustive]
pub struct LoadOptions<'a> {
    /// Called about every million lines and at the end of each file with the file name, the
    /// lines read so far and the time since the load started.
    pub progress: Option<Progress<'a>>,
    /// Parser threads (0 = all cores). The result never depends on it.
    pub threads: usize,
    /// Keep only what these cohorts read (see [`Projection`]); `None` (the default) keeps
    /// everything.
    pub projection: Option<Projection>,
}

impl<'a> LoadOptions<'a> {
    /// Use `n` parser threads (0 = all cores).
    pub fn threads(mut self, n: usize) -> LoadOptions<'a> {
        self.threads = n;
        self
    }

    /// Keep only what `projection` reads.
    pub fn projection(mut self, projection: Projection) -> LoadOptions<'a> {
        self.projection = Some(projection);
        self
    }

    /// Report progress to `f`.
    pub fn progress(mut self, f: Progress<'a>) -> LoadOptions<'a> {
        self.progress = Some(f);
        self
    }
}

/// What a load read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoadStats {
    /// Persons loaded.
    pub persons: usize,
    /// Events attached to persons (stored or dropped by the projection).
    pub events: usize,
    /// Events skipped because no person owns their distinct id.
    pub skipped_events: u64,
    /// Events of known persons not stored because the projection drops their name (counted in
    /// `events`).
    pub dropped_events: u64,
}

/// Parser threads for `threads` (0 = all cores).
fn thread_count(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t,
    }
}

/// Bytes per block handed to a parser thread.
const BLOCK_BYTES: usize = 1 << 20;

/// What a parser thread fills from one block; reused from block to block.
pub(super) trait BlockState: Default + Send {
    /// Empties the state for the next block, keeping its buffers.
    fn reset(&mut self);
}

/// A parsed block: its lines, the parser's state, or the first error in the block (line within
/// the block, counting from 0, and message).
struct Parsed<S> {
    seq: usize,
    lines: usize,
    state: S,
    error: Option<(usize, String)>,
}

/// Takes a value from a pool, or makes one.
fn take<T: Default>(pool: &Mutex<Vec<T>>) -> T {
    pool.lock()
        .ok()
        .and_then(|mut p| p.pop())
        .unwrap_or_default()
}

/// Returns a value to a pool.
fn give<T>(pool: &Mutex<Vec<T>>, t: T) {
    if let Ok(mut p) = pool.lock() {
        p.push(t);
    }
}

/// Streams `reader` through parallel `parse` calls (one per non-blank line, given the line
/// text, its number within the block and the block's state) and feeds each block's state, with
/// the number of lines before the block, to `consume` in file order. Block buffers and states
/// circulate through pools, so the steady state allocates nothing.
fn pipeline<S: BlockState>(
    reader: impl BufRead + Send,
    name: &str,
    threads: usize,
    started: Instant,
    progress: &mut Option<Progress<'_>>,
    parse: impl Fn(&str, usize, &mut S) -> Result<(), String> + Sync,
    consume: impl FnMut(&mut S, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let buffers: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let buffers = &buffers;
    // Reader: cut the stream into blocks of whole lines.
    let produce = move |send: &mut dyn FnMut(Vec<u8>) -> bool| -> Option<String> {
        let mut reader = reader;
        let mut carry: Vec<u8> = Vec::new();
        let mut error = None;
        let mut eof = false;
        while !eof && error.is_none() {
            let mut bytes = take(buffers);
            bytes.clear();
            bytes.append(&mut carry);
            // Fill to the block size, then on to the end of a line.
            loop {
                let chunk = match reader.fill_buf() {
                    Ok(c) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        error = Some(format!("cannot read: {e}"));
                        break;
                    }
                };
                if chunk.is_empty() {
                    eof = true;
                    break;
                }
                let n = chunk.len();
                bytes.extend_from_slice(chunk);
                reader.consume(n);
                if bytes.len() >= BLOCK_BYTES && bytes[bytes.len() - n..].contains(&b'\n') {
                    break;
                }
            }
            if !eof {
                // Keep the partial last line for the next block (after an error: drop it).
                let cut = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                if error.is_none() {
                    carry.extend_from_slice(&bytes[cut..]);
                }
                bytes.truncate(cut);
            }
            if bytes.is_empty() {
                give(buffers, bytes);
                continue;
            }
            if !send(bytes) {
                return None;
            }
        }
        error
    };
    let parse_block = |bytes: Vec<u8>, state: &mut S| -> (usize, Option<(usize, String)>) {
        let mut error = None;
        let mut lines = 0;
        for (k, raw) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
            lines += 1;
            let Ok(text) = std::str::from_utf8(raw) else {
                error = Some((k, "not valid UTF-8".to_string()));
                break;
            };
            let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
            if text.is_empty() {
                continue;
            }
            if let Err(msg) = parse(text, k, state) {
                error = Some((k, msg));
                break;
            }
        }
        give(buffers, bytes);
        (lines, error)
    };
    run_blocks(
        name,
        threads,
        started,
        progress,
        produce,
        parse_block,
        consume,
    )
}

/// Runs blocks through parallel workers: `produce` (on its own thread) hands out blocks through
/// `send` (false once the run has stopped) and returns a read error, if any; `parse` fills a
/// worker's state from one block and returns the lines (or rows) it spans and the first error
/// (index within the block, message); `consume` gets each block's state, with the number of
/// lines before it, in order. At most 2 × threads + 1 blocks are in flight.
pub(super) fn run_blocks<S: BlockState, B: Send>(
    name: &str,
    threads: usize,
    started: Instant,
    progress: &mut Option<Progress<'_>>,
    produce: impl FnOnce(&mut dyn FnMut(B) -> bool) -> Option<String> + Send,
    parse: impl Fn(B, &mut S) -> (usize, Option<(usize, String)>) + Sync,
    mut consume: impl FnMut(&mut S, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    let stop = AtomicBool::new(false);
    let (work_tx, work_rx) = mpsc::sync_channel::<(usize, B)>(threads * 2);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Parsed<S>>();
    let states: Mutex<Vec<S>> = Mutex::new(Vec::new());
    // Tickets bound the blocks in flight (read, parsing, or parsed and waiting for the merge), so
    // memory stays at a few blocks even when the merge is slower than the parsers.
    let in_flight = threads * 2 + 1;
    let (ticket_tx, ticket_rx) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = ticket_tx.send(());
    }
    std::thread::scope(|s| {
        let reader_stop = &stop;
        let read_error = s.spawn(move || -> Option<String> {
            let mut seq = 0usize;
            let mut send = |block: B| -> bool {
                if ticket_rx.recv().is_err() || reader_stop.load(Ordering::Relaxed) {
                    return false;
                }
                if work_tx.send((seq, block)).is_err() {
                    return false;
                }
                seq += 1;
                true
            };
            produce(&mut send)
        });
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            let stop = &stop;
            let parse = &parse;
            let states = &states;
            let ticket_tx = ticket_tx.clone();
            s.spawn(move || loop {
                let block = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok((seq, block)) = block else { return };
                if stop.load(Ordering::Relaxed) {
                    drop(block);
                    let _ = ticket_tx.send(());
                    continue; // drain, so the reader never blocks forever
                }
                let mut state: S = take(states);
                state.reset();
                let (lines, error) = parse(block, &mut state);
                let parsed = Parsed {
                    seq,
                    lines,
                    state,
                    error,
                };
                if done_tx.send(parsed).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        // Merge in file order.
        let mut pending: BTreeMap<usize, Parsed<S>> = BTreeMap::new();
        let mut next = 0usize;
        let mut lines = 0usize;
        let mut reported = 0usize;
        let mut result = Ok(());
        for parsed in done_rx.iter() {
            pending.insert(parsed.seq, parsed);
            while let Some(mut p) = pending.remove(&next) {
                next += 1;
                let _ = ticket_tx.send(());
                if result.is_err() {
                    continue;
                }
                if let Some((k, msg)) = p.error.take() {
                    result = Err(Error::input(format!("{name}:{}", lines + k + 1), msg));
                    stop.store(true, Ordering::Relaxed);
                    continue;
                }
                if let Err(e) = consume(&mut p.state, lines) {
                    result = Err(e);
                    stop.store(true, Ordering::Relaxed);
                    continue;
                }
                lines += p.lines;
                give(&states, p.state);
                if lines - reported >= 1_000_000 {
                    reported = lines;
                    if let Some(cb) = progress.as_mut() {
                        cb(name, lines as u64, started.elapsed());
                    }
                }
            }
        }
        if let Ok(Some(msg)) = read_error.join() {
            // A read error comes after every line before it; report it unless a line failed first.
            if result.is_ok() {
                result = Err(Error::input(format!("{name}:{}", lines + 1), msg));
            }
        }
        if result.is_ok() {
            if let Some(cb) = progress.as_mut() {
                cb(name, lines as u64, started.elapsed());
            }
        }
        result
    })
}

/// The string form of an id: a string as is, an integer as digits.
fn id_string(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        other => Err(format!(
            "{what} must be a string or an integer, got {other}"
        )),
    }
}

fn object(text: &str) -> Result<Map<String, Value>, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err("expected a JSON object".into()),
        Err(e) => Err(format!("not valid JSON: {e}")),
    }
}

/// A block of person lines in columns: ids, distinct ids and properties with block-local keys
/// and values.
#[derive(Default)]
struct PersonBlock {
    sink: EventSink,
    /// Per person: line within the block, id, number of distinct ids.
    line: Vec<usize>,
    ids: IdList,
    did_count: Vec<u32>,
    dids: IdList,
    /// Per kept property: (person within the block, local value).
    props: Vec<(u32, u32)>,
}

impl BlockState for PersonBlock {
    fn reset(&mut self) {
        self.sink.clear();
        self.sink.persons = true;
        self.line.clear();
        self.ids.clear();
        self.did_count.clear();
        self.dids.clear();
        self.props.clear();
    }
}

/// The slow path of a person line: a `serde_json::Value`, with every check's exact message;
/// distinct ids onto `dids`, kept properties into the sink.
fn slow_person(
    text: &str,
    sink: &mut EventSink,
    projection: Option<&Projection>,
    dids: &mut IdList,
) -> Result<String, String> {
    sink.line.clear();
    let mut obj = object(text)?;
    let id = match obj.get("id") {
        Some(v) if !v.is_null() => id_string(v, "id")?,
        _ => match obj.get("uuid") {
            Some(v) if !v.is_null() => id_string(v, "uuid")?,
            _ => return Err("a person needs an \"id\" (or \"uuid\")".into()),
        },
    };
    match obj.get("distinct_ids") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ids)) => {
            let ids: Vec<String> = ids
                .iter()
                .map(|d| id_string(d, "a distinct id"))
                .collect::<Result<_, _>>()?;
            ids.iter().for_each(|d| dids.push(d));
        }
        Some(other) => return Err(format!("distinct_ids must be a list, got {other}")),
    }
    slow_props(&mut obj, sink, projection)?;
    Ok(id)
}

/// `properties` of a slow-path line into the sink.
fn slow_props(
    obj: &mut Map<String, Value>,
    sink: &mut EventSink,
    projection: Option<&Projection>,
) -> Result<(), String> {
    match obj.remove("properties") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Object(m)) => {
            for (k, v) in &m {
                let Some(local) = sink.key(k, projection) else {
                    continue;
                };
                let json;
                let raw = match v {
                    Value::Null => None,
                    Value::Bool(b) => Some(RawVal::Bool(*b)),
                    Value::Number(n) => Some(RawVal::Num(n)),
                    Value::String(s) => Some(RawVal::Str(s)),
                    other => {
                        json = other.to_string();
                        Some(RawVal::Json(&json))
                    }
                };
                sink.value(local, raw);
            }
            Ok(())
        }
        Some(other) => Err(format!("properties must be an object, got {other}")),
    }
}

/// A block of event lines in columns, with block-local names, keys and values.
#[derive(Default)]
struct EventBlock {
    sink: EventSink,
    /// Block-local event names, and whether the projection keeps each.
    names: StrSet,
    name_keep: Vec<bool>,
    /// Per kept event: owner, timestamp, local name.
    person: Vec<u32>,
    ts: Vec<Micros>,
    name: Vec<u32>,
    /// Per kept property: (event within the block, local value).
    props: Vec<(u32, u32)>,
    /// Events of unknown distinct ids.
    skipped: u64,
    /// Events of known persons whose names the projection drops.
    dropped: u64,
}

impl BlockState for EventBlock {
    fn reset(&mut self) {
        self.sink.clear();
        self.names.clear();
        self.name_keep.clear();
        self.person.clear();
        self.ts.clear();
        self.name.clear();
        self.props.clear();
        self.skipped = 0;
        self.dropped = 0;
    }
}

/// The slow path of an event line: a `serde_json::Value`, with every check's exact message;
/// kept properties into the sink.
fn slow_event(
    text: &str,
    sink: &mut EventSink,
    projection: Option<&Projection>,
) -> Result<(String, String, Micros), String> {
    sink.line.clear();
    let mut obj = object(text)?;
    let did = match obj.get("distinct_id") {
        Some(v) if !v.is_null() => id_string(v, "distinct_id")?,
        _ => return Err("an event needs a \"distinct_id\"".into()),
    };
    let event = match obj.get("event") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("event must be a string, got {other}")),
        None => return Err("an event needs an \"event\" name".into()),
    };
    let ts = match obj.get("timestamp") {
        Some(v) => parse_timestamp(v)?,
        None => return Err("an event needs a \"timestamp\"".into()),
    };
    slow_props(&mut obj, sink, projection)?;
    Ok((did, event, ts))
}

/// A Parquet events row into the block: its envelope read from the columns, its properties
/// text through the same scanner (then serde path, then exact error) as a line's.
#[cfg(feature = "parquet")]
fn parquet_event(
    row: super::parquet::EventRow<'_>,
    b: &mut EventBlock,
    projection: Option<&Projection>,
    attach: &impl Fn(&str, &str, Micros, &mut EventBlock),
) -> Result<(), String> {
    use super::parquet::TsVal;
    let did = row
        .distinct_id
        .ok_or_else(|| "an event needs a \"distinct_id\"".to_string())?;
    let event = row
        .event
        .ok_or_else(|| "an event needs an \"event\" name".to_string())?;
    let ts = match row.timestamp {
        TsVal::Micros(t) if (MIN_MICROS..=MAX_MICROS).contains(&t) => t,
        TsVal::Micros(t) => {
            let mut text = Vec::new();
            super::posthog::push_rfc3339(t, &mut text);
            return Err(format!(
                "timestamp {} is outside the years 1 to 9999",
                String::from_utf8_lossy(&text)
            ));
        }
        TsVal::Text(s) => parse_timestamp(&Value::String(s.to_string()))?,
        TsVal::Int(n) => {
            let n = i64::try_from(n).map_err(|_| format!("timestamp {n} is out of range"))?;
            parse_timestamp(&Value::Number(n.into()))?
        }
        TsVal::Null => return Err("an event needs a \"timestamp\"".into()),
    };
    b.sink.line.clear();
    if let Some(text) = row.properties {
        let fast = super::scan::properties_text(text, &mut b.sink, projection)
            .or_else(|| super::fast::properties_into(text, &mut b.sink, projection));
        if fast.is_none() {
            b.sink.line.clear();
            let v: Value = serde_json::from_str(text)
                .map_err(|e| format!("properties is not valid JSON: {e}"))?;
            let mut obj = Map::new();
            obj.insert("properties".to_string(), v);
            slow_props(&mut obj, &mut b.sink, projection)?;
        }
    }
    attach(&did, event, ts, b);
    Ok(())
}

/// The first and last instants of the years 1 to 9999, in microseconds.
#[cfg(feature = "parquet")]
const MIN_MICROS: Micros = -62_135_596_800_000_000;
#[cfg(feature = "parquet")]
const MAX_MICROS: Micros = 253_402_300_799_999_999;

/// Not yet mapped (a block-local id's global id is looked up on first use).
const UNMAPPED: u32 = u32::MAX;

impl Dataset {
    /// Loads persons and (optionally) events from data files: each path is a file or a
    /// directory of part files (every data file in it, in name order). Files are JSON Lines
    /// (`.jsonl`, `.json`; `.gz` gzip- and `.br` brotli-compressed) or Parquet (`.parquet`);
    /// persons are in our own shape (`id`, `distinct_ids`) or PostHog's persons model (one row
    /// per distinct id, resolved by versions and deletions), detected per file; events are ours
    /// or PostHog's (an event's own `person_id` is ignored: it attaches by `distinct_id`).
    ///
    /// # Errors
    /// `invalid_input` naming `file:line` (`file:row` in Parquet) for the first malformed line,
    /// a duplicate person id, a distinct id owned by two persons, or an unreadable file.
    pub fn from_paths(
        persons: &Path,
        events: Option<&Path>,
        opts: &mut LoadOptions<'_>,
    ) -> Result<Dataset, Error> {
        let threads = thread_count(opts.threads);
        let persons = super::posthog::person_sources(persons, threads)?;
        let events = events
            .map(|e| super::posthog::event_sources(e, threads))
            .transpose()?;
        Dataset::from_sources(persons, events, opts)
    }

    /// Loads from readers of JSONL text; the names are used in errors.
    ///
    /// # Errors
    /// As [`Dataset::from_paths`].
    pub fn from_readers<P: BufRead + Send, E: BufRead + Send>(
        persons: P,
        persons_name: &str,
        events: Option<(E, &str)>,
        opts: &mut LoadOptions<'_>,
    ) -> Result<Dataset, Error> {
        Dataset::from_sources(
            vec![Source::reader(persons_name, persons)],
            events.map(|(r, name)| vec![Source::reader(name, r)]),
            opts,
        )
    }

    /// Loads from sources of JSON Lines in the loader's shapes, one after the other.
    fn from_sources(
        persons_sources: Vec<Source<'_>>,
        events: Option<Vec<Source<'_>>>,
        opts: &mut LoadOptions<'_>,
    ) -> Result<Dataset, Error> {
        let started = Instant::now();
        let threads = thread_count(opts.threads);
        let projection = opts.projection.as_ref();
        let mut ds = Dataset::default();
        let mut symbols = Symbols::default();
        let mut columns: Vec<Column> = Vec::new();

        let parse_person = |text: &str, k: usize, b: &mut PersonBlock| -> Result<(), String> {
            let before = b.dids.len();
            let fast = super::fast::person_into(text, &mut b.sink, projection, &mut b.dids);
            let slow;
            let id = match &fast {
                Some(id) => id.as_ref(),
                None => {
                    slow = slow_person(text, &mut b.sink, projection, &mut b.dids)?;
                    slow.as_str()
                }
            };
            let p = b.line.len() as u32;
            b.line.push(k);
            b.ids.push(id);
            b.did_count.push((b.dids.len() - before) as u32);
            for &(_, v) in &b.sink.line {
                if v != NULL_VALUE {
                    b.props.push((p, v));
                }
            }
            Ok(())
        };
        // Block-local → global ids, reused across blocks.
        let mut keys: Vec<u32> = Vec::new();
        let mut values: Vec<(u32, u32)> = Vec::new();
        for source in persons_sources {
            let persons_name = source.name.clone();
            let persons_name = persons_name.as_str();
            pipeline(
                source.lines()?,
                persons_name,
                threads,
                started,
                &mut opts.progress,
                parse_person,
                |b, before| {
                    keys.clear();
                    keys.resize(b.sink.keys.len(), UNMAPPED);
                    values.clear();
                    values.resize(b.sink.values.len(), (UNMAPPED, 0));
                    let first = ds.person_ids.len() as u32;
                    let mut did = 0usize;
                    let mut props = b.props.iter().peekable();
                    for (i, &k) in b.line.iter().enumerate() {
                        let at = || format!("{persons_name}:{}", before + k + 1);
                        let index = first + i as u32;
                        let id = b.ids.get(i);
                        if ds.person_ids.find(id.as_bytes()).is_some() {
                            return Err(Error::input(at(), format!("duplicate person id {id:?}")));
                        }
                        for _ in 0..b.did_count[i] {
                            let d = b.dids.get(did);
                            did += 1;
                            match ds.distinct_ids.find(d.as_bytes()) {
                                Some(m) if ds.distinct_owner[m as usize] != index => {
                                    let owner = ds.distinct_owner[m as usize];
                                    return Err(Error::input(
                                        at(),
                                        format!(
                                            "distinct id {d:?} is already owned by person {:?}",
                                            ds.person_ids.get_str(owner)
                                        ),
                                    ));
                                }
                                Some(_) => {}
                                None => {
                                    ds.distinct_ids.intern(d.as_bytes());
                                    ds.distinct_owner.push(index);
                                }
                            }
                        }
                        ds.person_ids.intern(id.as_bytes());
                        while let Some(&(_, v)) = props.next_if(|&&(p, _)| p as usize == i) {
                            let mut slot = values[v as usize];
                            if slot.0 == UNMAPPED {
                                let bytes = b.sink.values.get(v);
                                let (local_key, encoded) = bytes.split_at(4.min(bytes.len()));
                                let lk = u32::from_le_bytes(local_key.try_into().unwrap_or([0; 4]))
                                    as usize;
                                if keys[lk] == UNMAPPED {
                                    keys[lk] =
                                        symbols.keys.intern(b.sink.keys.get_str(lk as u32)).0;
                                }
                                let gk = keys[lk] as usize;
                                if columns.len() <= gk {
                                    columns.resize_with(gk + 1, Column::default);
                                }
                                slot = (gk as u32, columns[gk].code_of(encoded));
                                values[v as usize] = slot;
                            }
                            columns[slot.0 as usize].push_code(index, slot.1);
                        }
                    }
                    Ok(())
                },
            )?;
        }
        columns.iter_mut().for_each(Column::finish);
        ds.columns = columns;

        // Events, in file order, as parallel columns; grouped by person afterwards.
        let mut ev_person: Vec<u32> = Vec::new();
        let mut ev_ts: Vec<Micros> = Vec::new();
        let mut ev_name: Vec<Sym> = Vec::new();
        let mut builders: Vec<ColumnBuilder> = Vec::new();
        let (mut skipped, mut dropped) = (0u64, 0u64);
        // The ids' byte order (for member lists) on a thread of its own while events are read:
        // it needs only the persons, and reading is most of a load. Then, on the same thread,
        // the caches the projection's leaves read from person columns (case-folded and raw
        // dictionary arenas, dates), which a batch would otherwise build on its first run. With
        // one thread asked for, both wait for their first use instead.
        #[derive(Clone, Copy)]
        enum Cache {
            Folded,
            Raw,
            Dates,
            Nums,
            Dense,
        }
        let warm: Vec<(usize, Cache)> = projection.map_or_else(Vec::new, |p| {
            let mut out = Vec::new();
            for (keys, cache) in [
                (&p.folded_keys, Cache::Folded),
                (&p.regex_keys, Cache::Raw),
                (&p.date_keys, Cache::Dates),
                (&p.num_keys, Cache::Nums),
                (&p.person_keys, Cache::Dense),
            ] {
                for i in 0..keys.len() as u32 {
                    let k = symbols.keys.get(keys.get_str(i));
                    if k != Sym::ABSENT {
                        out.push((k.0 as usize, cache));
                    }
                }
            }
            out
        });
        let id_order = std::thread::scope(|scope| -> Result<Option<super::IdOrder>, Error> {
            let order = (threads > 1).then(|| {
                scope.spawn(|| {
                    let order = super::id_order_of(&ds.person_ids);
                    for &(c, cache) in &warm {
                        let Some(col) = ds.columns.get(c) else {
                            continue;
                        };
                        match cache {
                            Cache::Dense => col.densify(ds.len()),
                            // Small dictionaries are tested value by value, without caches.
                            _ if col.dict.len() <= super::CACHE_MIN_VALUES => {}
                            Cache::Folded => {
                                col.folded(1);
                            }
                            Cache::Raw => {
                                col.raw(1);
                            }
                            Cache::Dates => {
                                col.dates(1);
                            }
                            Cache::Nums => {
                                col.nums();
                            }
                        }
                    }
                    order
                })
            });
            for source in events.into_iter().flatten() {
                let name = source.name.as_str();
                let (distinct_ids, owners) = (&ds.distinct_ids, &ds.distinct_owner);
                // An event's envelope and properties (already in the sink) into the block.
                let attach = |did: &str, event: &str, ts: Micros, b: &mut EventBlock| {
                    let Some(&person) = distinct_ids
                        .find(did.as_bytes())
                        .and_then(|d| owners.get(d as usize))
                    else {
                        b.skipped += 1;
                        return;
                    };
                    let n = b.names.intern(event.as_bytes());
                    if n as usize == b.name_keep.len() {
                        b.name_keep
                            .push(projection.is_none_or(|p| p.keeps_event(event)));
                    }
                    if !b.name_keep[n as usize] {
                        b.dropped += 1;
                        return;
                    }
                    let e = b.ts.len() as u32;
                    b.person.push(person);
                    b.ts.push(ts);
                    b.name.push(n);
                    for &(_, v) in &b.sink.line {
                        if v != NULL_VALUE {
                            b.props.push((e, v));
                        }
                    }
                };
                let parse_event =
                    |text: &str, _k: usize, b: &mut EventBlock| -> Result<(), String> {
                        let fast = super::scan::event(text, &mut b.sink, projection)
                            .or_else(|| super::fast::event_into(text, &mut b.sink, projection));
                        match &fast {
                            Some(h) => attach(h.distinct_id.as_ref(), h.event.as_ref(), h.ts, b),
                            None => {
                                let (did, event, ts) = slow_event(text, &mut b.sink, projection)?;
                                attach(&did, &event, ts, b);
                            }
                        }
                        Ok(())
                    };
                // Block-local → global ids, reused across blocks.
                let mut names: Vec<Sym> = Vec::new();
                let mut keys: Vec<u32> = Vec::new();
                let mut values: Vec<(u32, u32)> = Vec::new();
                let merge = |b: &mut EventBlock, _before: usize| {
                    skipped += b.skipped;
                    dropped += b.dropped;
                    let base = ev_ts.len();
                    if base + b.ts.len() >= u32::MAX as usize {
                        return Err(Error::input(name, "more than 2^32 - 1 events"));
                    }
                    names.clear();
                    names.extend((0..b.names.len() as u32).map(|i| {
                        if b.name_keep[i as usize] {
                            symbols.events.intern(b.names.get_str(i))
                        } else {
                            Sym::ABSENT
                        }
                    }));
                    keys.clear();
                    keys.resize(b.sink.keys.len(), UNMAPPED);
                    values.clear();
                    values.resize(b.sink.values.len(), (UNMAPPED, 0));
                    ev_person.extend_from_slice(&b.person);
                    ev_ts.extend_from_slice(&b.ts);
                    ev_name.extend(b.name.iter().map(|&n| names[n as usize]));
                    for &(e, v) in &b.props {
                        let mut slot = values[v as usize];
                        if slot.0 == UNMAPPED {
                            let bytes = b.sink.values.get(v);
                            let (local_key, encoded) = bytes.split_at(4.min(bytes.len()));
                            let lk =
                                u32::from_le_bytes(local_key.try_into().unwrap_or([0; 4])) as usize;
                            if keys[lk] == UNMAPPED {
                                keys[lk] = symbols.keys.intern(b.sink.keys.get_str(lk as u32)).0;
                            }
                            let gk = keys[lk] as usize;
                            if builders.len() <= gk {
                                builders.resize_with(gk + 1, ColumnBuilder::default);
                            }
                            slot = (gk as u32, builders[gk].dict.intern(encoded));
                            values[v as usize] = slot;
                        }
                        builders[slot.0 as usize].push((base + e as usize) as u32, slot.1);
                    }
                    Ok(())
                };
                match source.input {
                    Input::Lines(open) => pipeline(
                        open()?,
                        name,
                        threads,
                        started,
                        &mut opts.progress,
                        parse_event,
                        merge,
                    )?,
                    #[cfg(feature = "parquet")]
                    Input::ParquetEvents(path) => {
                        let file = super::parquet::open_events(&path)?;
                        let parse_rows = |g: usize, b: &mut EventBlock| {
                            file.rows(g, |_, row| parquet_event(row, b, projection, &attach))
                        };
                        let produce = super::parquet::each_group(file.row_groups());
                        run_blocks(
                            name,
                            threads,
                            started,
                            &mut opts.progress,
                            produce,
                            parse_rows,
                            merge,
                        )?
                    }
                }
            }
            Ok(order.map(|o| o.join().expect("ordering ids does not panic")))
        })?;
        if let Some(order) = id_order {
            ds.id_order = std::sync::OnceLock::from(order);
        }
        // Large vectors shrink in place (the allocator remaps them): no growth slack while the
        // grouping holds old and new columns at once.
        ev_person.shrink_to_fit();
        ev_ts.shrink_to_fit();
        ev_name.shrink_to_fit();
        builders.iter_mut().for_each(ColumnBuilder::shrink);
        ds.group_events(ev_person, ev_ts, ev_name, builders, threads);
        ds.skipped_events = skipped;
        ds.dropped_events = dropped;
        ds.symbols = symbols;
        Ok(ds)
    }

    /// Orders events by (event name, person, timestamp) — file order among equals — and stores
    /// them column-wise, so one name's runs lie end to end in person order (what a batch leaf
    /// reads front to back) and each person's runs are listed by name (what a single person's
    /// view reads). A counting sort by person, each person's few events sorted on their own
    /// (persons split across threads), then each run moved to its name's block.
    fn group_events(
        &mut self,
        person: Vec<u32>,
        ts: Vec<Micros>,
        name: Vec<Sym>,
        builders: Vec<ColumnBuilder>,
        threads: usize,
    ) {
        let n = self.person_ids.len();
        let m = ts.len();
        let mut offsets = vec![0u32; n + 1];
        for &p in &person {
            offsets[p as usize + 1] += 1;
        }
        for p in 0..n {
            offsets[p + 1] += offsets[p];
        }
        let mut order = vec![0u32; m];
        {
            let mut cursor = offsets.clone();
            for (i, &p) in person.iter().enumerate() {
                order[cursor[p as usize] as usize] = i as u32;
                cursor[p as usize] += 1;
            }
        }
        drop(person);
        // Each person's events by (name, time, file position): the same order as a stable sort.
        let sort_persons = |persons: std::ops::Range<usize>, slice: &mut [u32]| {
            let base = offsets[persons.start] as usize;
            for p in persons {
                let (a, b) = (offsets[p] as usize - base, offsets[p + 1] as usize - base);
                slice[a..b].sort_unstable_by_key(|&i| (name[i as usize], ts[i as usize], i));
            }
        };
        let parts = super::split_persons(&offsets, threads);
        std::thread::scope(|s| {
            let mut rest: &mut [u32] = &mut order;
            for range in &parts {
                let len = (offsets[range.end] - offsets[range.start]) as usize;
                let (mine, tail) = rest.split_at_mut(len);
                rest = tail;
                let range = range.clone();
                let sort_persons = &sort_persons;
                s.spawn(move || sort_persons(range, mine));
            }
        });
        // Each person's runs as (name, length), by (person, name).
        let mut runs: Vec<(Sym, u32)> = Vec::new();
        let mut run_offsets = Vec::with_capacity(n + 1);
        run_offsets.push(0u32);
        for p in 0..n {
            let (a, b) = (offsets[p] as usize, offsets[p + 1] as usize);
            let mut i = a;
            while i < b {
                let run_name = name[order[i] as usize];
                let len = order[i..b].partition_point(|&e| name[e as usize] == run_name);
                runs.push((run_name, len as u32));
                i += len;
            }
            run_offsets.push(runs.len() as u32);
        }
        drop(name);
        // Name blocks: name k's events start where name k - 1's end; within a block, runs come
        // in person order. Each run moves to its name's block; the run lists are built from
        // `runs` once the timestamps are gathered, so the load's peak never holds them, the
        // names and both orders at once.
        let names = runs.iter().map(|r| r.0 .0 as usize + 1).max().unwrap_or(0);
        let mut base = vec![0u32; names + 1];
        let mut runs_of_name = vec![0u32; names];
        for &(k, len) in &runs {
            base[k.0 as usize + 1] += len;
            runs_of_name[k.0 as usize] += 1;
        }
        for k in 0..names {
            base[k + 1] += base[k];
        }
        let mut by_name = vec![0u32; m];
        {
            let mut cursor = base.clone();
            let mut from = 0usize;
            for &(k, len) in &runs {
                let (to, len) = (cursor[k.0 as usize] as usize, len as usize);
                by_name[to..to + len].copy_from_slice(&order[from..from + len]);
                cursor[k.0 as usize] += len as u32;
                from += len;
            }
        }
        drop(order);
        self.ev_columns = finish_columns(builders, &by_name, threads);
        // Gathered, not permuted in place: following a permutation's cycles is a chain of
        // dependent loads (250 ms for 1.7 million timestamps in name order), a gather's loads
        // are independent. In quarters, the old copy shrinking as the new one grows.
        let ts = gather_releasing(ts, &by_name, 4);
        drop(by_name);
        self.ev_ts = ts;
        // The run lists, by name and by person, at the runs' positions in the name blocks.
        let mut name_runs: Vec<Vec<NameRun>> = runs_of_name
            .iter()
            .map(|&c| Vec::with_capacity(c as usize + 1))
            .collect();
        let mut person_runs: Vec<Run> = Vec::with_capacity(runs.len());
        let mut cursor = base;
        for (p, at) in run_offsets.windows(2).enumerate() {
            for &(run_name, len) in &runs[at[0] as usize..at[1] as usize] {
                let k = run_name.0 as usize;
                let start = cursor[k];
                cursor[k] += len;
                name_runs[k].push(NameRun {
                    person: p as u32,
                    start,
                });
                person_runs.push(Run {
                    name: run_name,
                    start,
                    end: start + len,
                });
            }
        }
        drop(runs);
        for (list, &end) in name_runs.iter_mut().zip(&cursor) {
            list.push(NameRun {
                person: u32::MAX,
                start: end,
            });
        }
        self.name_runs = name_runs;
        self.person_runs = person_runs;
        self.person_run_offsets = run_offsets;
        self.event_offsets = offsets;
    }

    /// Counts of what was loaded.
    pub fn stats(&self) -> LoadStats {
        LoadStats {
            persons: self.len(),
            events: self.event_count() + self.dropped_events as usize,
            skipped_events: self.skipped_events,
            dropped_events: self.dropped_events,
        }
    }

    /// Loads from in-memory JSONL strings (handy in tests and examples).
    ///
    /// # Errors
    /// As [`Dataset::from_paths`], with files named `persons.jsonl` and `events.jsonl`.
    pub fn from_jsonl(persons: &str, events: &str) -> Result<Dataset, Error> {
        Dataset::from_readers(
            persons.as_bytes(),
            "persons.jsonl",
            Some((events.as_bytes(), "events.jsonl")),
            &mut LoadOptions::default(),
        )
    }
}

/// `out[j] = data[src[j]]` for a permutation `src` of `data`'s positions, with `data` released
/// as `out` grows: `src` is taken in `chunks` slices, and after each one the elements it took
/// leave `data` (the rest move up, in order, and the freed tail is returned), so the two vectors
/// together never hold more than `(1 + 1/chunks)` times the elements. Each element's place in
/// the shrinking `data` is its rank among those not yet taken: a bitmap and per-word counts.
fn gather_releasing<T: Copy>(mut data: Vec<T>, src: &[u32], chunks: usize) -> Vec<T> {
    let m = data.len();
    let mut out: Vec<T> = Vec::with_capacity(src.len());
    let words = m.div_ceil(64);
    // Taken elements (by original position); the bits past the end count as taken.
    let mut taken = vec![0u64; words];
    if !m.is_multiple_of(64) {
        taken[words - 1] = !0u64 << (m % 64);
    }
    // Elements still in `data` before each word's first position.
    let mut before: Vec<u32> = (0..words as u32).map(|w| w * 64).collect();
    let step = src.len().div_ceil(chunks.max(1)).max(1);
    for lo in (0..src.len()).step_by(step) {
        let part = &src[lo..(lo + step).min(src.len())];
        for &s in part {
            let (w, b) = (s as usize / 64, s as usize % 64);
            let below = !taken[w] & ((1u64 << b) - 1);
            out.push(data[before[w] as usize + below.count_ones() as usize]);
        }
        if lo + step >= src.len() {
            break;
        }
        let was = taken.clone();
        for &s in part {
            taken[s as usize / 64] |= 1u64 << (s % 64);
        }
        // Keep the elements not taken yet, in order.
        let mut keep = 0usize;
        for w in 0..words {
            let mut at = before[w] as usize;
            before[w] = keep as u32;
            let mut present = !was[w];
            while present != 0 {
                let bit = present & present.wrapping_neg();
                if taken[w] & bit == 0 {
                    data[keep] = data[at];
                    keep += 1;
                }
                at += 1;
                present ^= bit;
            }
        }
        data.truncate(keep);
        data.shrink_to_fit();
    }
    out
}

/// Finishes every key's column (event `j` of the store is event `order[j]` of the file), keys
/// shared among threads.
fn finish_columns(
    builders: Vec<ColumnBuilder>,
    order: &[u32],
    threads: usize,
) -> Vec<Option<EventColumn>> {
    let count = builders.len();
    let work: Mutex<Vec<(usize, ColumnBuilder)>> =
        Mutex::new(builders.into_iter().enumerate().rev().collect());
    let done: Mutex<Vec<(usize, EventColumn)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(count.max(1)) {
            s.spawn(|| loop {
                let next = work.lock().ok().and_then(|mut w| w.pop());
                let Some((k, b)) = next else { return };
                if b.is_empty() {
                    continue;
                }
                let col = b.finish(order);
                if let Ok(mut d) = done.lock() {
                    d.push((k, col));
                }
            });
        }
    });
    let mut out: Vec<Option<EventColumn>> = vec![None; count];
    for (k, col) in done.into_inner().unwrap_or_default() {
        out[k] = Some(col);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathering_while_releasing_equals_a_plain_gather() {
        for m in [0usize, 1, 63, 64, 65, 1000, 4099] {
            // A pseudo-random permutation (Fisher–Yates over a small LCG).
            let mut src: Vec<u32> = (0..m as u32).collect();
            let mut x = 12345u64;
            for i in (1..m).rev() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                src.swap(i, (x >> 33) as usize % (i + 1));
            }
            let data: Vec<i64> = (0..m as i64).map(|i| i * 7 - 3).collect();
            let want: Vec<i64> = src.iter().map(|&s| data[s as usize]).collect();
            for chunks in [1, 2, 3, 4, 7, 64] {
                assert_eq!(
                    gather_releasing(data.clone(), &src, chunks),
                    want,
                    "{m} elements, {chunks} chunks"
                );
            }
        }
    }

    #[test]
    fn a_projected_load_builds_the_column_caches_its_leaves_read() {
        // 100 distinct names, dates, scores and mails (past CACHE_MIN_VALUES); `city` is read
        // by `exact` only.
        let persons: String = (0..100)
            .map(|i| {
                format!(
                    r#"{{"id": "p{i}", "properties": {{"name": "N{i}", "seen": "2026-{:02}-{:02}", "city": "c{i}", "score": {i}, "mail": "m{i}@x.io"}}}}"#,
                    i / 28 + 1,
                    i % 28 + 1
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        let set = crate::CohortSet::from_json(
            r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
                {"type": "person", "key": "name", "operator": "icontains", "value": "n1"},
                {"type": "person", "key": "seen", "operator": "is_date_after", "value": "2026-01-10"},
                {"type": "person", "key": "city", "operator": "exact", "value": "c1"},
                {"type": "person", "key": "score", "operator": "between", "value": [5, 50]},
                {"type": "person", "key": "mail", "operator": "not_regex", "value": "^m1"}]}}}]"#,
        )
        .unwrap();
        for threads in [1, 2] {
            let mut opts = LoadOptions::default()
                .threads(threads)
                .projection(Projection::of(&set));
            let data = Dataset::from_sources(
                vec![Source::reader("persons.jsonl", persons.as_bytes())],
                Some(vec![Source::reader("events.jsonl", &b""[..])]),
                &mut opts,
            )
            .unwrap();
            let col = |k: &str| &data.columns[data.symbols.keys.get(k).0 as usize];
            // With one thread the caches wait for their first use.
            let built = threads > 1;
            assert_eq!(col("name").folded.get().is_some(), built, "{threads}");
            assert_eq!(col("seen").dates.get().is_some(), built, "{threads}");
            assert_eq!(col("score").nums.get().is_some(), built, "{threads}");
            assert_eq!(col("mail").raw.get().is_some(), built, "{threads}");
            assert!(col("name").raw.get().is_none() && col("mail").folded.get().is_none());
            assert!(col("name").dates.get().is_none() && col("seen").folded.get().is_none());
            assert!(col("city").folded.get().is_none() && col("city").dates.get().is_none());
            assert!(col("city").nums.get().is_none() && col("name").nums.get().is_none());
        }
    }
}
