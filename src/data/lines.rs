//! `watch` input through the loader's scanner: a plain event line becomes its envelope and its
//! kept properties (shared keys, values decoded once per distinct value) without building a
//! JSON tree. Lines the scanner does not take (changes, escapes, containers, anything unusual)
//! are left to the exact path ([`crate::Update::from_json`]).

use std::borrow::Cow;

use super::columns::decode;
use super::fast::{EventSink, NULL_VALUE};
use super::{scan, Projection};
use crate::intern::{shared, Sym, Table};
use crate::time::Micros;
use crate::value::Val;

/// Distinct values kept between lines before the tables start over (bounds a long stream's
/// memory; the values themselves live on in the tracker's pool).
const MAX_VALUES: usize = 1 << 16;

/// An event line's envelope.
pub(crate) struct EventLine<'a> {
    pub distinct_id: Cow<'a, str>,
    pub event: Cow<'a, str>,
    pub ts: Micros,
}

/// Scans event lines, keeping the key and value tables from line to line.
pub(crate) struct LineScanner {
    sink: EventSink,
    projection: Option<Projection>,
    /// Shared key of each of the sink's keys.
    keys: Vec<Sym>,
    /// Decoded value of each of the sink's values.
    values: Vec<Val>,
}

impl LineScanner {
    /// A scanner keeping the event properties `projection` keeps (all with `None`).
    pub(crate) fn new(projection: Option<Projection>) -> LineScanner {
        LineScanner {
            sink: EventSink::default(),
            projection,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// A plain event line's envelope (its kept properties then in [`LineScanner::props`]);
    /// `None` for any other line.
    pub(crate) fn event<'a>(&mut self, line: &'a str) -> Option<EventLine<'a>> {
        // The scanner skips fields it does not know: a change line must not pass as an event.
        let b = line.as_bytes();
        if ["\"$now\"", "\"$set\"", "\"$unset\"", "\"$delete\""]
            .iter()
            .any(|k| memchr::memmem::find(b, k.as_bytes()).is_some())
        {
            return None;
        }
        if self.sink.values.len() > MAX_VALUES {
            self.sink.clear();
            self.keys.clear();
            self.values.clear();
        }
        let head = scan::event(line, &mut self.sink, self.projection.as_ref())?;
        let sink = &self.sink;
        for k in self.keys.len()..sink.keys.len() {
            // Keys the projection drops get no shared name (they never reach the tracker).
            self.keys.push(if sink.key_keep[k] {
                let name = sink.keys.get_str(k as u32);
                shared().resolve(Table::Keys, std::iter::once(name))[0]
            } else {
                Sym::ABSENT
            });
        }
        for v in self.values.len()..sink.values.len() {
            // Each value is its key's local number (4 bytes), then its encoding.
            self.values.push(decode(&sink.values.get(v as u32)[4..]));
        }
        Some(EventLine {
            distinct_id: head.distinct_id,
            event: head.event,
            ts: head.ts,
        })
    }

    /// The kept, non-null properties of the last line [`LineScanner::event`] took, unsorted.
    pub(crate) fn props(&self) -> impl Iterator<Item = (Sym, &Val)> + '_ {
        self.sink
            .line
            .iter()
            .filter(|&&(_, v)| v != NULL_VALUE)
            .map(|&(k, v)| (self.keys[k as usize], &self.values[v as usize]))
    }
}
