//! Loading a [`Dataset`] from the JSONL files of `CLI.md` §2, streaming line by line (a file is
//! never held whole), gzip-aware, with `file:line` on every error.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{props_from_json, Column, Dataset, Prop};
use crate::error::Error;
use crate::intern::{Sym, Symbols};
use crate::time::{parse_timestamp, Micros};

/// A progress callback: file name, lines read so far, time since the load started.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, Duration);

/// Options for loading; the default is silent.
#[derive(Default)]
pub struct LoadOptions<'a> {
    /// Called every 1,000,000 lines and at the end of each file with the file name, the lines read
    /// so far and the time since the load started.
    pub progress: Option<Progress<'a>>,
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

/// Opens a data file, decompressing it when its name ends in `.gz`.
fn open(path: &Path) -> Result<Box<dyn BufRead>, Error> {
    let name = path.display().to_string();
    let file =
        File::open(path).map_err(|e| Error::input(name.clone(), format!("cannot open: {e}")))?;
    Ok(if name.ends_with(".gz") {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(file),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, file))
    })
}

/// Reads JSONL objects, calling `f(line_number, object)` for each non-blank line.
fn for_each_object(
    mut reader: impl BufRead,
    name: &str,
    started: Instant,
    opts: &mut LoadOptions<'_>,
    mut f: impl FnMut(usize, Map<String, Value>) -> Result<(), String>,
) -> Result<(), Error> {
    let mut buf = Vec::with_capacity(1024);
    let mut line = 0usize;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(|e| {
            Error::input(format!("{name}:{}", line + 1), format!("cannot read: {e}"))
        })?;
        if n == 0 {
            break;
        }
        line += 1;
        if let Some(p) = opts.progress.as_mut() {
            if line % 1_000_000 == 0 {
                p(name, line as u64, started.elapsed());
            }
        }
        let text = std::str::from_utf8(&buf)
            .map_err(|_| Error::input(format!("{name}:{line}"), "not valid UTF-8"))?;
        let text = text.trim_matches(|c: char| c.is_ascii_whitespace());
        if text.is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::input(format!("{name}:{line}"), format!("not valid JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(Error::input(
                format!("{name}:{line}"),
                "expected a JSON object",
            ));
        };
        f(line, obj).map_err(|msg| Error::input(format!("{name}:{line}"), msg))?;
    }
    if let Some(p) = opts.progress.as_mut() {
        p(name, line as u64, started.elapsed());
    }
    Ok(())
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

fn properties(obj: &Map<String, Value>) -> Result<Option<&Map<String, Value>>, String> {
    match obj.get("properties") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(other) => Err(format!("properties must be an object, got {other}")),
    }
}

impl Dataset {
    /// Loads persons and (optionally) events from JSONL files; names ending in `.gz` are read
    /// gzip-compressed.
    ///
    /// # Errors
    /// `invalid_input` naming `file:line` for the first malformed line, a duplicate person id, a
    /// distinct id owned by two persons, or an unreadable file.
    pub fn from_paths(
        persons: &Path,
        events: Option<&Path>,
        opts: &mut LoadOptions<'_>,
    ) -> Result<Dataset, Error> {
        let p = open(persons)?;
        let pname = persons.display().to_string();
        match events {
            Some(e) => {
                let ename = e.display().to_string();
                let er = open(e)?;
                Dataset::from_readers(p, &pname, Some((er, &ename)), opts)
            }
            None => Dataset::from_readers(p, &pname, None::<(&[u8], &str)>, opts),
        }
    }

    /// Loads from readers of JSONL text; the names are used in errors.
    ///
    /// # Errors
    /// As [`Dataset::from_paths`].
    pub fn from_readers<P: BufRead, E: BufRead>(
        persons: P,
        persons_name: &str,
        events: Option<(E, &str)>,
        opts: &mut LoadOptions<'_>,
    ) -> Result<Dataset, Error> {
        let started = Instant::now();
        let mut ds = Dataset::default();
        let mut symbols = Symbols::default();
        let mut columns: Vec<Column> = Vec::new();
        for_each_object(persons, persons_name, started, opts, |_, obj| {
            let id = match obj.get("id") {
                Some(v) if !v.is_null() => id_string(v, "id")?,
                _ => match obj.get("uuid") {
                    Some(v) if !v.is_null() => id_string(v, "uuid")?,
                    _ => return Err("a person needs an \"id\" (or \"uuid\")".into()),
                },
            };
            let index = ds.person_ids.len() as u32;
            if ds.person_index.contains_key(id.as_str()) {
                return Err(format!("duplicate person id {id:?}"));
            }
            match obj.get("distinct_ids") {
                None | Some(Value::Null) => {}
                Some(Value::Array(ids)) => {
                    for d in ids {
                        let d = id_string(d, "a distinct id")?;
                        match ds.distinct_index.get(d.as_str()) {
                            Some(&owner) if owner != index => {
                                return Err(format!(
                                    "distinct id {d:?} is already owned by person {:?}",
                                    ds.person_ids[owner as usize]
                                ))
                            }
                            _ => {
                                ds.distinct_index.insert(d.into_boxed_str(), index);
                            }
                        }
                    }
                }
                Some(other) => return Err(format!("distinct_ids must be a list, got {other}")),
            }
            if let Some(map) = properties(&obj)? {
                let p = props_from_json(map, |k| Some(symbols.keys.intern(k)));
                for (k, v) in p.into_vec() {
                    let k = k.0 as usize;
                    if columns.len() <= k {
                        columns.resize_with(k + 1, Column::default);
                    }
                    columns[k].persons.push(index);
                    columns[k].values.push(v);
                }
            }
            ds.person_index.insert(id.clone().into_boxed_str(), index);
            ds.person_ids.push(id.into_boxed_str());
            Ok(())
        })?;
        ds.columns = columns;

        // Events: collect (person, ts, name, props), then order by person and time (stable, so
        // equal timestamps keep file order).
        struct Raw {
            person: u32,
            ts: Micros,
            name: Sym,
            props: Box<[Prop]>,
        }
        let mut raw: Vec<Raw> = Vec::new();
        let mut skipped = 0u64;
        if let Some((reader, name)) = events {
            for_each_object(reader, name, started, opts, |_, obj| {
                let did = match obj.get("distinct_id") {
                    Some(v) if !v.is_null() => id_string(v, "distinct_id")?,
                    _ => return Err("an event needs a \"distinct_id\"".into()),
                };
                let event = match obj.get("event") {
                    Some(Value::String(s)) => s,
                    Some(other) => return Err(format!("event must be a string, got {other}")),
                    None => return Err("an event needs an \"event\" name".into()),
                };
                let ts = match obj.get("timestamp") {
                    Some(v) => parse_timestamp(v)?,
                    None => return Err("an event needs a \"timestamp\"".into()),
                };
                let map = properties(&obj)?;
                let Some(&person) = ds.distinct_index.get(did.as_str()) else {
                    skipped += 1;
                    return Ok(());
                };
                let name = symbols.events.intern(event);
                let props = match map {
                    Some(m) => props_from_json(m, |k| Some(symbols.keys.intern(k))),
                    None => Box::default(),
                };
                raw.push(Raw {
                    person,
                    ts,
                    name,
                    props,
                });
                Ok(())
            })?;
        }
        raw.sort_by_key(|r| (r.person, r.ts));
        let n = ds.person_ids.len();
        let mut event_offsets = vec![0u32; n + 1];
        for r in &raw {
            event_offsets[r.person as usize + 1] += 1;
        }
        for p in 0..n {
            event_offsets[p + 1] += event_offsets[p];
        }
        if raw.len() > u32::MAX as usize {
            return Err(Error::input("events", "more than 2^32 events"));
        }
        ds.ev_ts.reserve_exact(raw.len());
        ds.ev_name.reserve_exact(raw.len());
        ds.ev_prop_offsets.reserve_exact(raw.len() + 1);
        ds.ev_prop_offsets.push(0);
        for r in raw {
            ds.ev_ts.push(r.ts);
            ds.ev_name.push(r.name);
            ds.ev_props.extend(r.props.into_vec());
            let end = u32::try_from(ds.ev_props.len())
                .map_err(|_| Error::input("events", "too many event properties"))?;
            ds.ev_prop_offsets.push(end);
        }
        ds.event_offsets = event_offsets;
        ds.skipped_events = skipped;
        ds.symbols = symbols;
        Ok(ds)
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
