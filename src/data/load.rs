//! Loading a [`Dataset`] from the JSONL files of `CLI.md` §2.
//!
//! A file is streamed in blocks of whole lines (never held whole) by a reader thread; worker
//! threads parse the blocks in parallel, interning names into block-local tables; the calling
//! thread merges the blocks in file order, so errors keep their `file:line` and the first bad line
//! in file order is the one reported. Events are then grouped by person (a counting sort) and
//! ordered by event name and time within each person (stable: equal timestamps keep file order),
//! so a behavioral leaf reads one contiguous, time-ordered run of events.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::posthog::Source;
use super::{Column, Dataset, NameRun, Prop};
use crate::error::Error;
use crate::intern::{Interner, Sym, Symbols};
use crate::time::{parse_timestamp, Micros};
use crate::value::Val;

/// A progress callback: file name, lines read so far, time since the load started.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, Duration);

/// Options for loading; the default is silent and uses every core.
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// Called about every million lines and at the end of each file with the file name, the
    /// lines read so far and the time since the load started.
    pub progress: Option<Progress<'a>>,
    /// Parser threads (0 = all cores). The result never depends on it.
    pub threads: usize,
}

/// What a load read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Persons loaded.
    pub persons: usize,
    /// Events attached to persons.
    pub events: usize,
    /// Events skipped because no person owns their distinct id.
    pub skipped_events: u64,
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

/// A block of whole lines: its sequence number, the number of its first line, the bytes.
struct RawBlock {
    seq: usize,
    first_line: usize,
    bytes: Vec<u8>,
}

/// A parsed block: records with their line numbers, the block-local name tables, or the first
/// error in the block.
struct Parsed<T> {
    seq: usize,
    lines: usize,
    records: Vec<(usize, T)>,
    local: Symbols,
    error: Option<Error>,
}

/// Streams `reader` through parallel `parse` calls (one per non-blank line, given the line text
/// and a block-local symbol table) and feeds the results, with their line numbers, to `consume`
/// in file order.
fn pipeline<T: Send>(
    reader: impl BufRead + Send,
    name: &str,
    threads: usize,
    started: Instant,
    progress: &mut Option<Progress<'_>>,
    parse: impl Fn(&str, &mut Symbols) -> Result<Option<T>, String> + Sync,
    mut consume: impl FnMut(Vec<(usize, T)>, &Symbols) -> Result<(), Error>,
) -> Result<(), Error> {
    let stop = AtomicBool::new(false);
    let (work_tx, work_rx) = mpsc::sync_channel::<RawBlock>(threads * 2);
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Parsed<T>>();
    std::thread::scope(|s| {
        // Reader: cut the stream into blocks of whole lines.
        let reader_stop = &stop;
        let reader_name = name;
        let read_error = s.spawn(move || -> Option<Error> {
            let mut reader = reader;
            let mut line = 1usize;
            let mut seq = 0usize;
            loop {
                let mut bytes = Vec::with_capacity(BLOCK_BYTES + 4096);
                let mut lines = 0usize;
                while bytes.len() < BLOCK_BYTES {
                    match reader.read_until(b'\n', &mut bytes) {
                        Ok(0) => break,
                        Ok(_) => lines += 1,
                        Err(e) => {
                            return Some(Error::input(
                                format!("{reader_name}:{}", line + lines),
                                format!("cannot read: {e}"),
                            ))
                        }
                    }
                }
                if lines == 0 || reader_stop.load(Ordering::Relaxed) {
                    return None;
                }
                if work_tx
                    .send(RawBlock {
                        seq,
                        first_line: line,
                        bytes,
                    })
                    .is_err()
                {
                    return None;
                }
                seq += 1;
                line += lines;
            }
        });
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let work_rx = &work_rx;
            let stop = &stop;
            let parse = &parse;
            s.spawn(move || loop {
                let block = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(block) = block else { return };
                if stop.load(Ordering::Relaxed) {
                    continue; // drain, so the reader never blocks forever
                }
                let mut local = Symbols::default();
                let mut records = Vec::new();
                let mut error = None;
                let mut lines = 0;
                for (k, raw) in block.bytes.split_inclusive(|&b| b == b'\n').enumerate() {
                    lines += 1;
                    let at = block.first_line + k;
                    let Ok(text) = std::str::from_utf8(raw) else {
                        error = Some(Error::input(format!("{name}:{at}"), "not valid UTF-8"));
                        break;
                    };
                    let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
                    if text.is_empty() {
                        continue;
                    }
                    match parse(text, &mut local) {
                        Ok(Some(r)) => records.push((at, r)),
                        Ok(None) => {}
                        Err(msg) => {
                            error = Some(Error::input(format!("{name}:{at}"), msg));
                            break;
                        }
                    }
                }
                let parsed = Parsed {
                    seq: block.seq,
                    lines,
                    records,
                    local,
                    error,
                };
                if done_tx.send(parsed).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        // Merge in file order.
        let mut pending: BTreeMap<usize, Parsed<T>> = BTreeMap::new();
        let mut next = 0usize;
        let mut lines = 0u64;
        let mut reported = 0u64;
        let mut result = Ok(());
        for parsed in done_rx.iter() {
            pending.insert(parsed.seq, parsed);
            while let Some(p) = pending.remove(&next) {
                next += 1;
                if result.is_err() {
                    continue;
                }
                if let Some(e) = p.error {
                    result = Err(e);
                    stop.store(true, Ordering::Relaxed);
                    continue;
                }
                lines += p.lines as u64;
                if let Err(e) = consume(p.records, &p.local) {
                    result = Err(e);
                    stop.store(true, Ordering::Relaxed);
                    continue;
                }
                if lines - reported >= 1_000_000 {
                    reported = lines;
                    if let Some(cb) = progress.as_mut() {
                        cb(name, lines, started.elapsed());
                    }
                }
            }
        }
        if let Ok(Some(e)) = read_error.join() {
            // A read error comes after every line before it; report it unless a line failed first.
            if result.is_ok() {
                result = Err(e);
            }
        }
        if result.is_ok() {
            if let Some(cb) = progress.as_mut() {
                cb(name, lines, started.elapsed());
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

/// Properties with block-local key ids; null values are missing and dropped.
fn local_props(obj: &mut Map<String, Value>, keys: &mut Interner) -> Result<Vec<Prop>, String> {
    match obj.remove("properties") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(m)) => Ok(m
            .iter()
            .filter_map(|(k, v)| Some((keys.intern(k), Val::from_json(v)?)))
            .collect()),
        Some(other) => Err(format!("properties must be an object, got {other}")),
    }
}

struct PersonRec {
    id: String,
    distinct_ids: Vec<String>,
    props: Vec<Prop>,
}

enum EventRec {
    Skipped,
    Kept {
        person: u32,
        ts: Micros,
        name: Sym,
        props: Vec<Prop>,
    },
}

/// Maps block-local ids to global ones.
fn remap(local: &Interner, global: &mut Interner) -> Vec<Sym> {
    (0..local.len())
        .map(|i| {
            local
                .name(Sym(i as u32))
                .map_or(Sym::ABSENT, |n| global.intern(n))
        })
        .collect()
}

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
        let mut ds = Dataset::default();
        let mut symbols = Symbols::default();
        let mut columns: Vec<Column> = Vec::new();

        let parse_person = |text: &str, local: &mut Symbols| -> Result<Option<PersonRec>, String> {
            if let Some(line) = super::fast::person(text) {
                return Ok(Some(PersonRec {
                    id: line.id.into_owned(),
                    distinct_ids: line.distinct_ids.into_iter().map(Cow::into_owned).collect(),
                    props: line
                        .props
                        .into_iter()
                        .map(|(k, v)| (local.keys.intern(&k), v))
                        .collect(),
                }));
            }
            let mut obj = object(text)?;
            let id = match obj.get("id") {
                Some(v) if !v.is_null() => id_string(v, "id")?,
                _ => match obj.get("uuid") {
                    Some(v) if !v.is_null() => id_string(v, "uuid")?,
                    _ => return Err("a person needs an \"id\" (or \"uuid\")".into()),
                },
            };
            let distinct_ids = match obj.get("distinct_ids") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(ids)) => ids
                    .iter()
                    .map(|d| id_string(d, "a distinct id"))
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(format!("distinct_ids must be a list, got {other}")),
            };
            let props = local_props(&mut obj, &mut local.keys)?;
            Ok(Some(PersonRec {
                id,
                distinct_ids,
                props,
            }))
        };
        for source in persons_sources {
            let persons_name = source.name.as_str();
            pipeline(
                (source.open)()?,
                persons_name,
                threads,
                started,
                &mut opts.progress,
                parse_person,
                |records, local| {
                    let keys = remap(&local.keys, &mut symbols.keys);
                    for (line, r) in records {
                        let at = || format!("{persons_name}:{line}");
                        let index = ds.person_ids.len() as u32;
                        if ds.person_index.contains_key(r.id.as_str()) {
                            return Err(Error::input(
                                at(),
                                format!("duplicate person id {:?}", r.id),
                            ));
                        }
                        for d in r.distinct_ids {
                            match ds.distinct_index.get(d.as_str()) {
                                Some(&owner) if owner != index => {
                                    return Err(Error::input(
                                        at(),
                                        format!(
                                            "distinct id {d:?} is already owned by person {:?}",
                                            ds.person_ids[owner as usize]
                                        ),
                                    ))
                                }
                                _ => {
                                    ds.distinct_index.insert(d.into_boxed_str(), index);
                                }
                            }
                        }
                        let mut props: Vec<Prop> = r
                            .props
                            .into_iter()
                            .map(|(k, v)| (keys[k.0 as usize], v))
                            .collect();
                        props.sort_by_key(|(k, _)| *k);
                        props.dedup_by_key(|(k, _)| *k);
                        for (k, v) in props {
                            let k = k.0 as usize;
                            if columns.len() <= k {
                                columns.resize_with(k + 1, Column::default);
                            }
                            columns[k].push(index, v);
                        }
                        ds.person_index.insert(r.id.clone().into_boxed_str(), index);
                        ds.person_ids.push(r.id.into_boxed_str());
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
        let mut ev_prop_end: Vec<u32> = Vec::new();
        let mut ev_props: Vec<Prop> = Vec::new();
        let mut skipped = 0u64;
        for source in events.into_iter().flatten() {
            let name = source.name.as_str();
            let reader = (source.open)()?;
            let distinct_index = &ds.distinct_index;
            let parse_event =
                |text: &str, local: &mut Symbols| -> Result<Option<EventRec>, String> {
                    if let Some(line) = super::fast::event(text) {
                        let Some(&person) = distinct_index.get(line.distinct_id.as_ref()) else {
                            return Ok(Some(EventRec::Skipped));
                        };
                        let props = line
                            .props
                            .into_iter()
                            .map(|(k, v)| (local.keys.intern(&k), v))
                            .collect();
                        let name = local.events.intern(&line.event);
                        return Ok(Some(EventRec::Kept {
                            person,
                            ts: line.ts,
                            name,
                            props,
                        }));
                    }
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
                    let props = local_props(&mut obj, &mut local.keys)?;
                    let Some(&person) = distinct_index.get(did.as_str()) else {
                        return Ok(Some(EventRec::Skipped));
                    };
                    let name = local.events.intern(&event);
                    Ok(Some(EventRec::Kept {
                        person,
                        ts,
                        name,
                        props,
                    }))
                };
            pipeline(
                reader,
                name,
                threads,
                started,
                &mut opts.progress,
                parse_event,
                |records, local| {
                    let keys = remap(&local.keys, &mut symbols.keys);
                    let names = remap(&local.events, &mut symbols.events);
                    for (line, r) in records {
                        match r {
                            EventRec::Skipped => skipped += 1,
                            EventRec::Kept {
                                person,
                                ts,
                                name: event,
                                props,
                            } => {
                                ev_person.push(person);
                                ev_ts.push(ts);
                                ev_name.push(names[event.0 as usize]);
                                let mut props: Vec<Prop> = props
                                    .into_iter()
                                    .map(|(k, v)| (keys[k.0 as usize], v))
                                    .collect();
                                props.sort_by_key(|(k, _)| *k);
                                props.dedup_by_key(|(k, _)| *k);
                                ev_props.extend(props);
                                let end = u32::try_from(ev_props.len()).map_err(|_| {
                                    Error::input(
                                        format!("{name}:{line}"),
                                        "more than 2^32 event properties",
                                    )
                                })?;
                                ev_prop_end.push(end);
                            }
                        }
                    }
                    if ev_ts.len() >= u32::MAX as usize {
                        return Err(Error::input(name, "more than 2^32 events"));
                    }
                    Ok(())
                },
            )?;
        }
        ds.group_events(ev_person, ev_ts, ev_name, ev_prop_end, ev_props);
        ds.skipped_events = skipped;
        ds.symbols = symbols;
        Ok(ds)
    }

    /// Orders events by (person, event name, timestamp), stable, and stores them column-wise.
    fn group_events(
        &mut self,
        person: Vec<u32>,
        ts: Vec<Micros>,
        name: Vec<Sym>,
        prop_end: Vec<u32>,
        mut props: Vec<Prop>,
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
        // Counting sort by person (stable), then each person's events by time (stable).
        let mut order = vec![0u32; m];
        let mut cursor = offsets.clone();
        for (i, &p) in person.iter().enumerate() {
            order[cursor[p as usize] as usize] = i as u32;
            cursor[p as usize] += 1;
        }
        for p in 0..n {
            let slice = &mut order[offsets[p] as usize..offsets[p + 1] as usize];
            slice.sort_by_key(|&i| (name[i as usize], ts[i as usize]));
        }
        let mut out_props = Vec::with_capacity(props.len());
        let mut out_offsets = Vec::with_capacity(m + 1);
        out_offsets.push(0u32);
        self.ev_ts = order.iter().map(|&i| ts[i as usize]).collect();
        self.ev_name = order.iter().map(|&i| name[i as usize]).collect();
        for &i in &order {
            let i = i as usize;
            let start = if i == 0 { 0 } else { prop_end[i - 1] as usize };
            for slot in &mut props[start..prop_end[i] as usize] {
                out_props.push(std::mem::replace(slot, (Sym::ABSENT, Val::Bool(false))));
            }
            out_offsets.push(out_props.len() as u32);
        }
        self.ev_props = out_props;
        self.ev_prop_offsets = out_offsets;
        // Runs of one name within one person, by name: what a behavioral leaf scans in batch.
        let names = self
            .ev_name
            .iter()
            .map(|s| s.0 as usize + 1)
            .max()
            .unwrap_or(0);
        let mut runs: Vec<Vec<NameRun>> = vec![Vec::new(); names];
        for p in 0..n {
            let (a, b) = (offsets[p] as usize, offsets[p + 1] as usize);
            let mut i = a;
            while i < b {
                let name = self.ev_name[i];
                let len = self.ev_name[i..b].partition_point(|&x| x == name);
                runs[name.0 as usize].push(NameRun {
                    person: p as u32,
                    start: (i - a) as u32,
                    len: len as u32,
                });
                i += len;
            }
        }
        self.name_runs = runs;
        self.event_offsets = offsets;
    }

    /// Counts of what was loaded.
    pub fn stats(&self) -> LoadStats {
        LoadStats {
            persons: self.len(),
            events: self.event_count(),
            skipped_events: self.skipped_events,
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
