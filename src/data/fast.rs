//! The serde path of line parsing: a JSONL line deserialised straight into borrowed fields and
//! a block's dictionaries ([`EventSink`]), without building a `serde_json::Value` tree (no
//! allocation per line, except for nested values of kept properties). It accepts exactly the
//! well-formed lines; anything unusual (a wrong type, a duplicate key, a bad timestamp) returns
//! `None` and the caller re-parses the line on the slow path, which produces the precise error
//! message, so both paths agree on every line.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Number, Value};

use super::arena::StrSet;
use super::columns::{encode, RawVal};
use super::Projection;

use crate::time::{parse_absolute, parse_timestamp, Micros};

/// Something the fast path does not handle: fall back.
fn bail<E: de::Error>() -> E {
    E::custom("slow path")
}

/// A string or an integer id, as its string form.
struct Id<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Id<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Id<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(s)))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(n.to_string())))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Id<'de>, E> {
                Ok(Id(Cow::Owned(n.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// A string (borrowed when it has no escapes).
struct Str<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Str<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// An event timestamp, with exactly `parse_timestamp`'s rules.
struct Ts(Micros);

impl<'de> Deserialize<'de> for Ts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Ts;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a timestamp")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Ts, E> {
                parse_absolute(s).map(Ts).ok_or_else(bail)
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Ts, E> {
                parse_timestamp(&Value::Number(n.into()))
                    .map(Ts)
                    .map_err(|_| bail())
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Ts, E> {
                parse_timestamp(&Value::Number(n.into()))
                    .map(Ts)
                    .map_err(|_| bail())
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Ts, E> {
                let n = Number::from_f64(x).ok_or_else(bail)?;
                parse_timestamp(&Value::Number(n))
                    .map(Ts)
                    .map_err(|_| bail())
            }
        }
        d.deserialize_any(V)
    }
}

/// An id field that may be null (then `uuid` is used).
struct MaybeId<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for MaybeId<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<Id<'de>>::deserialize(d).map(|o| MaybeId(o.map(|i| i.0)))
    }
}

/// A property value the sink is told about (`None` = JSON null).
pub(super) type SinkVal<'a> = Option<RawVal<'a>>;

/// Marks a null value in [`EventSink::line`] (the key counts for duplicates, nothing is kept).
pub(super) const NULL_VALUE: u32 = u32::MAX;

/// Where a line's properties go while it is parsed: block-local dictionaries of keys and
/// of (key, value) encodings, and the current line's (key, value) pairs. Everything is reused
/// from line to line and block to block, so parsing allocates nothing in the steady state.
#[derive(Default)]
pub(super) struct EventSink {
    /// Block-local property keys.
    pub keys: StrSet,
    /// Per block-local key: is it kept (`Some(true)`), dropped by the projection, or unknown.
    pub key_keep: Vec<bool>,
    /// Block-local values: the key's local number (4 bytes) then the value's encoding.
    pub values: StrSet,
    /// The current line's properties: (local key, local value or [`NULL_VALUE`]).
    pub line: Vec<(u32, u32)>,
    enc: Vec<u8>,
    /// Person properties (projected by the person keys) rather than event properties.
    pub persons: bool,
}

impl EventSink {
    /// Empties the block-local tables, keeping their buffers.
    pub(super) fn clear(&mut self) {
        self.keys.clear();
        self.key_keep.clear();
        self.values.clear();
        self.line.clear();
    }

    /// The local number of `key` when the projection keeps it.
    #[inline]
    pub(super) fn key(&mut self, key: &str, projection: Option<&Projection>) -> Option<u32> {
        let k = self.keys.intern(key.as_bytes());
        if k as usize == self.key_keep.len() {
            let persons = self.persons;
            self.key_keep.push(projection.is_none_or(|p| {
                if persons {
                    p.keeps_person_key(key)
                } else {
                    p.keeps_event_key(key)
                }
            }));
        }
        self.key_keep[k as usize].then_some(k)
    }

    /// Records the current line's value of local key `k`.
    #[inline]
    pub(super) fn value(&mut self, k: u32, v: SinkVal<'_>) {
        let code = match v {
            None => NULL_VALUE,
            Some(v) => {
                self.enc.clear();
                self.enc.extend_from_slice(&k.to_le_bytes());
                encode(v, &mut self.enc);
                self.values.intern(&self.enc)
            }
        };
        self.line.push((k, code));
    }

    /// True when the current line names a key twice (the slow path then applies JSON's
    /// last-value-wins rule).
    pub(super) fn line_has_duplicate_keys(&self) -> bool {
        let l = &self.line;
        (1..l.len()).any(|i| l[..i].iter().any(|&(k, _)| k == l[i].0))
    }
}

/// The envelope of an event line (its properties went to the sink).
pub(super) struct EventHead<'a> {
    pub distinct_id: Cow<'a, str>,
    pub event: Cow<'a, str>,
    pub ts: Micros,
}

/// Parses an event line, its properties into `sink.line` (which it clears first); `None` when
/// the slow path must decide.
pub(super) fn event_into<'a>(
    text: &'a str,
    sink: &mut EventSink,
    projection: Option<&Projection>,
) -> Option<EventHead<'a>> {
    sink.line.clear();
    let mut de = serde_json::Deserializer::from_str(text);
    let head = de
        .deserialize_map(EventSeedVisitor { sink, projection })
        .ok()?;
    de.end().ok()?;
    if sink.line_has_duplicate_keys() {
        return None;
    }
    head
}

struct EventSeedVisitor<'s, 'p> {
    sink: &'s mut EventSink,
    projection: Option<&'p Projection>,
}

impl<'de> Visitor<'de> for EventSeedVisitor<'_, '_> {
    type Value = Option<EventHead<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an event object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut did, mut event, mut ts, mut props) = (None, None, None, false);
        while let Some(Str(k)) = map.next_key::<Str<'de>>()? {
            match k.as_ref() {
                "distinct_id" if did.is_none() => did = Some(map.next_value::<Id<'de>>()?.0),
                "event" if event.is_none() => event = Some(map.next_value::<Str<'de>>()?.0),
                "timestamp" if ts.is_none() => ts = Some(map.next_value::<Ts>()?.0),
                "properties" if !props => {
                    props = true;
                    map.next_value_seed(PropsSeed {
                        sink: &mut *self.sink,
                        projection: self.projection,
                    })?;
                }
                "distinct_id" | "event" | "timestamp" | "properties" => return Err(bail()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(EventHead {
            distinct_id: did.ok_or_else(bail)?,
            event: event.ok_or_else(bail)?,
            ts: ts.ok_or_else(bail)?,
        }))
    }
}

#[cfg(feature = "parquet")]
/// Parses a properties object's JSON text into `sink.line` (cleared first); `None` when the
/// slow path must decide.
pub(super) fn properties_into(
    text: &str,
    sink: &mut EventSink,
    projection: Option<&Projection>,
) -> Option<()> {
    sink.line.clear();
    let mut de = serde_json::Deserializer::from_str(text);
    PropsSeed {
        sink: &mut *sink,
        projection,
    }
    .deserialize(&mut de)
    .ok()?;
    de.end().ok()?;
    (!sink.line_has_duplicate_keys()).then_some(())
}

/// `properties` (null = none), each kept key's value into the sink.
struct PropsSeed<'s, 'p> {
    sink: &'s mut EventSink,
    projection: Option<&'p Projection>,
}

impl<'de> DeserializeSeed<'de> for PropsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for PropsSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Str(k)) = map.next_key::<Str<'de>>()? {
            match self.sink.key(&k, self.projection) {
                Some(local) => map.next_value_seed(ValueSeed {
                    sink: &mut *self.sink,
                    key: local,
                })?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// One kept property value, into the sink.
struct ValueSeed<'s> {
    sink: &'s mut EventSink,
    key: u32,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.sink.value(self.key, None);
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.sink.value(self.key, Some(RawVal::Bool(b)));
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<(), E> {
        self.sink.value(self.key, Some(RawVal::Num(&n.into())));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<(), E> {
        self.sink.value(self.key, Some(RawVal::Num(&n.into())));
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, x: f64) -> Result<(), E> {
        let n = Number::from_f64(x).ok_or_else(bail)?;
        self.sink.value(self.key, Some(RawVal::Num(&n)));
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        self.sink.value(self.key, Some(RawVal::Str(s)));
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        // Containers keep only their string form (sorted keys, compact), built through a Value.
        let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        self.sink
            .value(self.key, Some(RawVal::Json(&v.to_string())));
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        self.sink
            .value(self.key, Some(RawVal::Json(&v.to_string())));
        Ok(())
    }
}

/// Distinct ids of a block's persons, back to back in one buffer.
#[derive(Default)]
pub(super) struct IdList {
    pub bytes: Vec<u8>,
    pub ends: Vec<usize>,
}

impl IdList {
    pub(super) fn push(&mut self, id: &str) {
        self.bytes.extend_from_slice(id.as_bytes());
        self.ends.push(self.bytes.len());
    }

    /// Id `i`.
    pub(super) fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        std::str::from_utf8(&self.bytes[start..self.ends[i]]).unwrap_or_default()
    }

    pub(super) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Drops the ids from `len` on.
    pub(super) fn truncate(&mut self, len: usize) {
        self.ends.truncate(len);
        self.bytes.truncate(self.ends.last().copied().unwrap_or(0));
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Parses a person line: its distinct ids onto `ids`, its properties into `sink.line`; returns
/// the person id, or `None` (with `ids` as it was) when the slow path must decide.
pub(super) fn person_into<'a>(
    text: &'a str,
    sink: &mut EventSink,
    projection: Option<&Projection>,
    ids: &mut IdList,
) -> Option<Cow<'a, str>> {
    sink.line.clear();
    let before = ids.len();
    let mut de = serde_json::Deserializer::from_str(text);
    let id = de
        .deserialize_map(PersonSeedVisitor {
            sink: &mut *sink,
            projection,
            ids: &mut *ids,
        })
        .ok()
        .flatten()
        .filter(|_| de.end().is_ok() && !sink.line_has_duplicate_keys());
    if id.is_none() {
        ids.truncate(before);
    }
    id
}

struct PersonSeedVisitor<'s, 'p> {
    sink: &'s mut EventSink,
    projection: Option<&'p Projection>,
    ids: &'s mut IdList,
}

impl<'de> Visitor<'de> for PersonSeedVisitor<'_, '_> {
    type Value = Option<Cow<'de, str>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a person object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut id, mut uuid, mut dids, mut props) = (None, None, false, false);
        while let Some(Str(k)) = map.next_key::<Str<'de>>()? {
            match k.as_ref() {
                "id" if id.is_none() => id = Some(map.next_value::<MaybeId<'de>>()?.0),
                "uuid" if uuid.is_none() => uuid = Some(map.next_value::<MaybeId<'de>>()?.0),
                "distinct_ids" if !dids => {
                    dids = true;
                    map.next_value_seed(IdsSeed(&mut *self.ids))?;
                }
                "properties" if !props => {
                    props = true;
                    map.next_value_seed(PropsSeed {
                        sink: &mut *self.sink,
                        projection: self.projection,
                    })?;
                }
                "id" | "uuid" | "distinct_ids" | "properties" => return Err(bail()),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(id.flatten().or(uuid.flatten()).ok_or_else(bail)?))
    }
}

/// `distinct_ids` (null = none), onto the block's id list.
struct IdsSeed<'s>(&'s mut IdList);

impl<'de> DeserializeSeed<'de> for IdsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IdsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of ids")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(Id(id)) = seq.next_element::<Id<'de>>()? {
            self.0.push(&id);
        }
        Ok(())
    }
}
