//! The fastest path for event lines: a hand-written scanner for the common envelope
//! (`distinct_id`, `event`, `timestamp`, `properties` and any other fields), straight over the
//! bytes. It accepts only plain lines — no backslash anywhere, numbers in simple forms, no
//! container as the value of a kept property, no duplicate key — and gives up (`None`) on
//! everything else, which the serde-based path ([`super::fast`]) then decides; a line this
//! scanner accepts parses to exactly what that path would produce (a property test checks it).

use std::borrow::Cow;

use serde_json::Number;

use super::columns::RawVal;
use super::fast::{EventHead, EventSink};
use super::Projection;
use crate::time::{parse_absolute, parse_timestamp, Micros};

/// Deeper containers give up (serde_json's own limit is 128).
const MAX_DEPTH: usize = 64;

struct Cursor<'a> {
    b: &'a [u8],
    text: &'a str,
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string without escapes or control characters (the opening quote is next).
    #[inline]
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let start = self.i;
        let rest = &self.b[start..];
        let len = rest
            .iter()
            .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.i = start + len + 1;
        // Quotes are ASCII, so both ends are character boundaries.
        self.text.get(start..start + len)
    }

    /// A number in the JSON grammar; its text and whether it is an integer (no fraction or
    /// exponent).
    fn number(&mut self) -> Option<(&'a str, bool)> {
        let start = self.i;
        self.eat(b'-');
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !self.peek()?.is_ascii_digit() {
                return None;
            }
            self.digits();
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            // Exponents are left to serde (its range rules for skipped values are its own).
            return None;
        }
        Some((self.text.get(start..self.i)?, integer))
    }

    #[inline]
    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Skips any value, checking its syntax.
    fn skip(&mut self) -> Option<()> {
        // Bit d: is the container at depth d an object?
        let mut objects = 0u64;
        let mut depth = 0usize;
        loop {
            // A value.
            match self.peek()? {
                b'"' => {
                    self.string()?;
                }
                open @ (b'{' | b'[') => {
                    self.i += 1;
                    if depth >= MAX_DEPTH {
                        return None;
                    }
                    let object = open == b'{';
                    if object {
                        objects |= 1 << depth;
                    } else {
                        objects &= !(1 << depth);
                    }
                    depth += 1;
                    self.ws();
                    if self.peek()? == if object { b'}' } else { b']' } {
                        self.i += 1;
                        depth -= 1;
                    } else {
                        if object {
                            self.member_key()?;
                        }
                        continue;
                    }
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => {
                    self.number()?;
                }
            }
            // After a value: the enclosing container's separator or end.
            loop {
                if depth == 0 {
                    return Some(());
                }
                self.ws();
                let object = objects >> (depth - 1) & 1 == 1;
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        self.ws();
                        if object {
                            self.member_key()?;
                        }
                        break;
                    }
                    b'}' if object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    b']' if !object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => return None,
                }
            }
        }
    }

    /// `"key"` `:` and the whitespace around, inside a skipped object.
    fn member_key(&mut self) -> Option<()> {
        self.string()?;
        self.ws();
        self.eat(b':')?;
        self.ws();
        Some(())
    }
}

/// The value of a number's text as serde_json makes it, when the forms agree for sure.
fn number(text: &str, integer: bool) -> Option<Number> {
    if integer {
        if text.len() > 20 || text == "-0" {
            return None;
        }
        return match text.strip_prefix('-') {
            Some(_) => text.parse::<i64>().ok().map(Number::from),
            None => text.parse::<u64>().ok().map(Number::from),
        };
    }
    let x: f64 = text.parse().ok()?;
    Number::from_f64(x)
}

/// Scans an event line: its envelope, and its kept properties into `sink.line` (cleared first).
/// `None` when the line is not plain enough; the serde path then decides.
pub(super) fn event<'a>(
    text: &'a str,
    sink: &mut EventSink,
    projection: Option<&Projection>,
) -> Option<EventHead<'a>> {
    sink.line.clear();
    let mut c = Cursor {
        b: text.as_bytes(),
        text,
        i: 0,
    };
    let (mut did, mut event, mut ts, mut props) = (None, None, None::<Micros>, false);
    c.ws();
    c.eat(b'{')?;
    c.ws();
    if c.peek()? != b'}' {
        loop {
            let key = c.string()?;
            c.ws();
            c.eat(b':')?;
            c.ws();
            match key {
                "distinct_id" if did.is_none() => {
                    did = Some(if c.peek()? == b'"' {
                        c.string()?
                    } else {
                        let (t, integer) = c.number()?;
                        // An integer id's string form is its digits (no leading zeros in JSON).
                        (integer && number(t, true).is_some()).then_some(t)?
                    });
                }
                "event" if event.is_none() => event = Some(c.string()?),
                "timestamp" if ts.is_none() => {
                    ts = Some(if c.peek()? == b'"' {
                        parse_absolute(c.string()?)?
                    } else {
                        let (t, integer) = c.number()?;
                        parse_timestamp(&serde_json::Value::Number(number(t, integer)?)).ok()?
                    });
                }
                "properties" if !props => {
                    props = true;
                    properties(&mut c, sink, projection)?;
                }
                "distinct_id" | "event" | "timestamp" | "properties" => return None,
                _ => c.skip()?,
            }
            c.ws();
            match c.peek()? {
                b',' => {
                    c.i += 1;
                    c.ws();
                }
                b'}' => break,
                _ => return None,
            }
        }
    }
    c.eat(b'}')?;
    c.ws();
    if c.i != c.b.len() || sink.line_has_duplicate_keys() {
        return None;
    }
    Some(EventHead {
        distinct_id: Cow::Borrowed(did?),
        event: Cow::Borrowed(event?),
        ts: ts?,
    })
}

#[cfg(feature = "parquet")]
/// Scans a properties object's JSON text (as a Parquet column holds it) into `sink.line`
/// (cleared first); `None` when it is not plain enough.
pub(super) fn properties_text(
    text: &str,
    sink: &mut EventSink,
    projection: Option<&Projection>,
) -> Option<()> {
    sink.line.clear();
    let mut c = Cursor {
        b: text.as_bytes(),
        text,
        i: 0,
    };
    c.ws();
    properties(&mut c, sink, projection)?;
    c.ws();
    (c.i == c.b.len() && !sink.line_has_duplicate_keys()).then_some(())
}

/// `properties`: null or an object of plain values.
fn properties(
    c: &mut Cursor<'_>,
    sink: &mut EventSink,
    projection: Option<&Projection>,
) -> Option<()> {
    if c.peek()? == b'n' {
        return c.literal(b"null");
    }
    c.eat(b'{')?;
    c.ws();
    if c.peek()? == b'}' {
        c.i += 1;
        return Some(());
    }
    loop {
        let key = c.string()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        match sink.key(key, projection) {
            None => c.skip()?,
            Some(k) => {
                let v = match c.peek()? {
                    b'"' => Some(RawVal::Str(c.string()?)),
                    b't' => {
                        c.literal(b"true")?;
                        Some(RawVal::Bool(true))
                    }
                    b'f' => {
                        c.literal(b"false")?;
                        Some(RawVal::Bool(false))
                    }
                    b'n' => {
                        c.literal(b"null")?;
                        None
                    }
                    b'{' | b'[' => return None,
                    _ => {
                        let (t, integer) = c.number()?;
                        let n = number(t, integer)?;
                        sink.value(k, Some(RawVal::Num(&n)));
                        c.ws();
                        if !next_member(c)? {
                            return Some(());
                        }
                        continue;
                    }
                };
                sink.value(k, v);
            }
        }
        c.ws();
        if !next_member(c)? {
            return Some(());
        }
    }
}

/// After a member: `,` (true, more follow) or `}` (false, the object ends).
fn next_member(c: &mut Cursor<'_>) -> Option<bool> {
    match c.peek()? {
        b',' => {
            c.i += 1;
            c.ws();
            Some(true)
        }
        b'}' => {
            c.i += 1;
            Some(false)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What a path produced: the envelope and the kept (key, value encoding) pairs.
    type Parsed = (String, String, Micros, Vec<(String, Vec<u8>)>);

    fn collect(head: Option<EventHead<'_>>, sink: &EventSink) -> Option<Parsed> {
        let h = head?;
        let props = pairs(sink);
        Some((
            h.distinct_id.into_owned(),
            h.event.into_owned(),
            h.ts,
            props,
        ))
    }

    fn both(line: &str, projection: Option<&Projection>) -> (Option<Parsed>, Option<Parsed>) {
        let mut s1 = EventSink::default();
        let scanned = event(line, &mut s1, projection);
        let scanned = collect(scanned, &s1);
        let mut s2 = EventSink::default();
        let serde = super::super::fast::event_into(line, &mut s2, projection);
        let serde = collect(serde, &s2);
        (scanned, serde)
    }

    #[test]
    fn plain_lines_scan_like_serde() {
        let lines = [
            r#"{"distinct_id":"d1","event":"login","timestamp":"2024-06-01T10:00:00Z","properties":{"$browser":"Chrome","n":5,"x":-3,"f":1.5,"b":true,"z":null},"o":{"a":[1,{"b":"c"}]},"l":[]}"#,
            r#" { "event" : "e" , "distinct_id" : 42 , "timestamp" : 1717236000 , "extra" : [ "a" , { "k" : "v" } ] } "#,
            r#"{"distinct_id":"d","event":"e","timestamp":1717236000123,"properties":null}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":1717236000.5,"properties":{}}"#,
            r#"{"distinct_id":"d","event":"é","timestamp":"2024-06-01 10:00:00.123456789+02:00","properties":{"ü":"ö"}}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":"2024-06-01","properties":{"a":0,"b":0.0,"c":-0.0,"d":18446744073709551615,"e":-9223372036854775808}}"#,
        ];
        for line in lines {
            let (scanned, serde) = both(line, None);
            assert!(scanned.is_some(), "{line}");
            assert_eq!(scanned, serde, "{line}");
        }
    }

    #[test]
    fn unusual_lines_are_left_to_serde() {
        let lines = [
            r#"{"distinct_id":"d\"1","event":"e","timestamp":0}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"properties":{"a":1e5}}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"properties":{"a":1,"a":2}}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"properties":{"a":[1]}}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"timestamp":1}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0} x"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":"2024-13-01"}"#,
            r#"{"distinct_id":-0,"event":"e","timestamp":0}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"properties":{"a":01}}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"properties":{"a":[1,]}}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"x":{"a" 1}}"#,
            r#"{"distinct_id":null,"event":"e","timestamp":0}"#,
            r#"{"event":"e","timestamp":0}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"x":[1}}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"x":{"a":1]}"#,
            r#"{"distinct_id":"d","event":"e","timestamp":0,"x":["a":1]}"#,
        ];
        for line in lines {
            assert_eq!(both(line, None).0, None, "{line}");
        }
    }

    /// A JSON value as text: plain and unusual forms alike.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|x| x.to_string()),
            prop_oneof![
                Just("1e3"),
                Just("-0"),
                Just("0.5e-2"),
                Just("01"),
                Just("1."),
                Just("-")
            ]
            .prop_map(str::to_string),
            "[a-zA-Z0-9 /:?&=%.é\\\\\"-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-c]{1}", inner), 0..4).prop_map(|v| {
                    let members: Vec<String> =
                        v.into_iter().map(|(k, x)| format!("\"{k}\":{x}")).collect();
                    format!("{{{}}}", members.join(" , "))
                }),
            ]
        })
    }

    /// Plain property values: the scanner must accept every line made of them.
    fn plain() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|n| if n == 0 { "0".into() } else { n.to_string() }),
            any::<u64>().prop_map(|n| n.to_string()),
            (-1e9f64..1e9).prop_map(|x| format!("{x:.3}")),
            "[a-zA-Z0-9 /:?&=%.é-]{0,40}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    /// The kept (key, value encoding) pairs in a sink.
    fn pairs(sink: &EventSink) -> Vec<(String, Vec<u8>)> {
        sink.line
            .iter()
            .map(|&(k, v)| {
                let value = if v == super::super::fast::NULL_VALUE {
                    b"null".to_vec()
                } else {
                    sink.values.get(v)[4..].to_vec()
                };
                (sink.keys.get_str(k).to_string(), value)
            })
            .collect()
    }

    #[cfg(feature = "parquet")]
    proptest! {
        /// A properties text (a Parquet column's) reads exactly as the same object inside a
        /// line: the scanner, when it accepts it, and the serde path.
        #[test]
        fn properties_text_reads_like_a_line(
            props in prop::collection::vec(("[a-d]{1}", value()), 0..6),
            damage in prop::option::of((any::<prop::sample::Index>(), prop::sample::select(vec![b',', b'}', b'"', b' ', b'\n']))),
        ) {
            let members: Vec<String> = props.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let mut text = format!("{{{}}}", members.join(",")).into_bytes();
            if let Some((at, c)) = damage {
                let i = at.index(text.len());
                text.insert(i, c);
            }
            let Ok(text) = String::from_utf8(text) else {
                return Ok(());
            };
            let line = format!("{{\"distinct_id\":\"d\",\"event\":\"e\",\"timestamp\":0,\"properties\":{text}}}");
            let mut by_line = EventSink::default();
            let from_line = super::super::fast::event_into(&line, &mut by_line, None).map(|_| pairs(&by_line));
            let mut s1 = EventSink::default();
            let scanned = properties_text(&text, &mut s1, None).map(|_| pairs(&s1));
            let mut s2 = EventSink::default();
            let serde = super::super::fast::properties_into(&text, &mut s2, None).map(|_| pairs(&s2));
            if scanned.is_some() {
                prop_assert_eq!(&scanned, &serde, "{}", text);
            }
            prop_assert_eq!(&serde, &from_line, "{}", text);
        }
    }

    proptest! {
        /// Lines of plain values: accepted, with exactly the serde path's result.
        #[test]
        fn scanner_accepts_plain_lines(
            props in prop::collection::vec(("[a-z$]{1,8}", plain()), 0..8),
            extra in value(),
            ts in (0i64..4_000_000_000_000).prop_map(|n| n.to_string()),
        ) {
            let mut seen = std::collections::HashSet::new();
            let props: Vec<String> = props
                .iter()
                .filter(|(k, _)| seen.insert(k.clone()))
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            let line = format!(
                "{{\"distinct_id\":\"d\",\"x\":{extra},\"event\":\"e\",\"timestamp\":{ts},\"properties\":{{{}}}}}",
                props.join(",")
            );
            let (scanned, serde) = both(&line, None);
            if serde.is_some() {
                prop_assert!(scanned.is_some() || extra.contains(['\\', 'e', 'E']) || extra.contains("-0") || extra.contains("01") || extra.contains("1."), "{}", line);
            }
            if scanned.is_some() {
                prop_assert_eq!(scanned, serde, "{}", line);
            }
        }

        /// A plain line with one byte deleted or inserted: whatever the scanner accepts, serde
        /// accepts alike (so broken JSON is never let through).
        #[test]
        fn scanner_rejects_what_serde_rejects(
            props in prop::collection::vec(("[a-c]{1}", plain()), 0..5),
            extra in value(),
            at in any::<prop::sample::Index>(),
            insert in prop::option::of(prop::sample::select(vec![b',', b':', b'[', b']', b'{', b'}', b'"', b' ', b'0', b'-', b'.'])),
        ) {
            let props: Vec<String> = props.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let mut line = format!(
                "{{\"distinct_id\":\"d\",\"x\":{extra},\"event\":\"e\",\"timestamp\":0,\"properties\":{{{}}}}}",
                props.join(",")
            )
            .into_bytes();
            let i = at.index(line.len());
            match insert {
                Some(c) => line.insert(i, c),
                None => {
                    line.remove(i);
                }
            }
            let Ok(line) = String::from_utf8(line) else {
                return Ok(());
            };
            let (scanned, serde) = both(&line, None);
            if scanned.is_some() {
                prop_assert_eq!(scanned, serde, "{}", line);
            }
        }

        /// Whatever the scanner accepts, the serde path accepts with the same result.
        #[test]
        fn scanner_agrees_with_serde(
            did in prop_oneof!["[a-z0-9]{1,6}".prop_map(|s| format!("\"{s}\"")), any::<i64>().prop_map(|n| n.to_string()), value()],
            ts in prop_oneof![
                Just("\"2024-06-01T10:00:00Z\"".to_string()),
                Just("\"2024-06-01 10:00:00.5+02:00\"".to_string()),
                (0i64..4_000_000_000_000).prop_map(|n| n.to_string()),
                (0f64..2e9).prop_map(|x| x.to_string()),
                value(),
            ],
            props in prop::collection::vec(("[a-d]{1}", value()), 0..6),
            extra in prop::option::of(value()),
            order in 0usize..4,
            spaced in any::<bool>(),
            projected in any::<bool>(),
        ) {
            let sep = if spaced { " , " } else { "," };
            let props: Vec<String> = props.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let mut fields = vec![
                format!("\"distinct_id\":{did}"),
                "\"event\":\"e\"".to_string(),
                format!("\"timestamp\":{ts}"),
                format!("\"properties\":{{{}}}", props.join(sep)),
            ];
            if let Some(x) = extra {
                fields.insert(order, format!("\"x\":{x}"));
            }
            fields.rotate_left(order);
            let line = format!("{{{}}}", fields.join(sep));
            let projection = projected.then(|| {
                let set = crate::CohortSet::from_json(r#"[{"id": 1, "filters": {"properties": {"type": "AND", "values": [
                    {"type": "behavioral", "key": "e", "event_type": "events", "value": "performed_event",
                     "time_value": 30, "time_interval": "day",
                     "event_filters": [{"type": "event", "key": "a", "operator": "is_set", "value": "is_set"}]}]}}}]"#).unwrap();
                Projection::of(&set)
            });
            let (scanned, serde) = both(&line, projection.as_ref());
            if scanned.is_some() {
                prop_assert_eq!(scanned, serde, "{}", line);
            }
        }
    }
}
