//! Event properties in columns: one column per property key over all stored events, each a
//! dictionary of the key's distinct values (stored once) and, per event that has the key, a code
//! into it. Which events have the key is a bitmap with a rank directory (or, for rare keys, a
//! sorted list of event positions), so a column costs a few bits per event plus one code —
//! one, two or four bytes, by dictionary size — per event having it.
//!
//! Values are dictionary-encoded while loading through a byte encoding that is exact (numbers by
//! their kind and bits, strings by their bytes), so two values share a code only when they are the
//! same [`Val`].

use serde_json::Number;

use super::arena::StrSet;
use crate::value::Val;

/// Tags of the value encoding.
const TRUE: u8 = b'T';
const FALSE: u8 = b'F';
const POS: u8 = b'u';
const NEG: u8 = b'i';
const FLOAT: u8 = b'f';
const STR: u8 = b's';
const JSON: u8 = b'j';

/// A property value as the loader sees it, borrowed from the line where possible.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RawVal<'a> {
    Bool(bool),
    Num(&'a Number),
    Str(&'a str),
    /// An array or object, as its string form.
    Json(&'a str),
}

/// Appends the exact encoding of `v` to `out`.
#[inline]
pub(crate) fn encode(v: RawVal<'_>, out: &mut Vec<u8>) {
    match v {
        RawVal::Bool(true) => out.push(TRUE),
        RawVal::Bool(false) => out.push(FALSE),
        RawVal::Num(n) => encode_number(n, out),
        RawVal::Str(s) => {
            out.push(STR);
            out.extend_from_slice(s.as_bytes());
        }
        RawVal::Json(s) => {
            out.push(JSON);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Appends the encoding of a number: its kind and its 8 bytes.
#[inline]
pub(crate) fn encode_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        out.push(POS);
        out.extend_from_slice(&u.to_le_bytes());
    } else if let Some(i) = n.as_i64() {
        out.push(NEG);
        out.extend_from_slice(&i.to_le_bytes());
    } else {
        out.push(FLOAT);
        out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_bits().to_le_bytes());
    }
}

/// Appends the encoding of a [`Val`].
#[cfg(test)]
fn encode_val(v: &Val, out: &mut Vec<u8>) {
    match v {
        Val::Bool(b) => encode(RawVal::Bool(*b), out),
        Val::Num(n) => encode_number(n, out),
        Val::Str(s) => encode(RawVal::Str(s), out),
        Val::Json(s) => encode(RawVal::Json(s), out),
    }
}

/// The value of an encoding made by [`encode`].
pub(crate) fn decode(bytes: &[u8]) -> Val {
    let eight = |b: &[u8]| {
        let mut a = [0u8; 8];
        let n = b.len().min(8);
        a[..n].copy_from_slice(&b[..n]);
        a
    };
    let text = |b: &[u8]| -> Box<str> { String::from_utf8_lossy(b).into() };
    match bytes.split_first() {
        Some((&TRUE, _)) => Val::Bool(true),
        Some((&FALSE, _)) => Val::Bool(false),
        Some((&POS, rest)) => Val::Num(u64::from_le_bytes(eight(rest)).into()),
        Some((&NEG, rest)) => Val::Num(i64::from_le_bytes(eight(rest)).into()),
        Some((&FLOAT, rest)) => Val::Num(
            Number::from_f64(f64::from_bits(u64::from_le_bytes(eight(rest))))
                .unwrap_or_else(|| 0.into()),
        ),
        Some((&JSON, rest)) => Val::Json(text(rest)),
        Some((_, rest)) => Val::Str(text(rest)),
        None => Val::Str("".into()),
    }
}

/// Codes into a dictionary, as narrow as its size allows.
#[derive(Clone, Debug)]
pub(crate) enum Codes {
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
}

impl Default for Codes {
    fn default() -> Self {
        Codes::U8(Vec::new())
    }
}

impl Codes {
    /// Appends a code, widening every code first when it does not fit.
    pub(crate) fn push(&mut self, code: u32) {
        match self {
            Codes::U8(c) if code <= u8::MAX as u32 => c.push(code as u8),
            Codes::U16(c) if code <= u16::MAX as u32 => c.push(code as u16),
            Codes::U32(c) => c.push(code),
            Codes::U8(c) if code <= u16::MAX as u32 => {
                let mut w: Vec<u16> = c.iter().map(|&x| x as u16).collect();
                w.push(code as u16);
                *self = Codes::U16(w);
            }
            Codes::U8(c) => {
                let mut w: Vec<u32> = c.iter().map(|&x| x as u32).collect();
                w.push(code);
                *self = Codes::U32(w);
            }
            Codes::U16(c) => {
                let mut w: Vec<u32> = c.iter().map(|&x| x as u32).collect();
                w.push(code);
                *self = Codes::U32(w);
            }
        }
    }

    /// `n` codes as narrow as `max` allows, all `max`.
    pub(crate) fn filled(n: usize, max: u32) -> Codes {
        if max <= u8::MAX as u32 {
            Codes::U8(vec![max as u8; n])
        } else if max <= u16::MAX as u32 {
            Codes::U16(vec![max as u16; n])
        } else {
            Codes::U32(vec![max; n])
        }
    }

    /// `n` zero codes of the same width.
    fn zeros_like(&self, n: usize) -> Codes {
        match self {
            Codes::U8(_) => Codes::U8(vec![0; n]),
            Codes::U16(_) => Codes::U16(vec![0; n]),
            Codes::U32(_) => Codes::U32(vec![0; n]),
        }
    }

    /// Sets code `i` (which fits the width: it comes from a vector of the same width).
    pub(crate) fn set(&mut self, i: usize, code: u32) {
        match self {
            Codes::U8(c) => c[i] = code as u8,
            Codes::U16(c) => c[i] = code as u16,
            Codes::U32(c) => c[i] = code,
        }
    }

    pub(crate) fn shrink(&mut self) {
        match self {
            Codes::U8(c) => c.shrink_to_fit(),
            Codes::U16(c) => c.shrink_to_fit(),
            Codes::U32(c) => c.shrink_to_fit(),
        }
    }

    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<u32> {
        match self {
            Codes::U8(c) => c.get(i).map(|&c| c as u32),
            Codes::U16(c) => c.get(i).map(|&c| c as u32),
            Codes::U32(c) => c.get(i).copied(),
        }
    }

    pub(crate) fn bytes(&self) -> usize {
        match self {
            Codes::U8(c) => c.len(),
            Codes::U16(c) => c.len() * 2,
            Codes::U32(c) => c.len() * 4,
        }
    }
}

/// Words per rank-directory entry of a bitmap.
const RANK_WORDS: usize = 8;

/// Which events have a key.
#[derive(Clone, Debug)]
pub(crate) enum Presence {
    /// Every event.
    All,
    /// Bit per event, and the number of set bits before each group of [`RANK_WORDS`] words.
    Bitmap { words: Vec<u64>, ranks: Vec<u32> },
    /// The positions of the events having it, ascending (for rare keys).
    List(Vec<u32>),
}

impl Presence {
    /// The rank of event `i` among the events having the key, if it has it.
    #[inline]
    fn rank(&self, i: usize) -> Option<usize> {
        match self {
            Presence::All => Some(i),
            Presence::Bitmap { words, ranks } => {
                let w = i / 64;
                let word = *words.get(w)?;
                let bit = 1u64 << (i % 64);
                if word & bit == 0 {
                    return None;
                }
                let group = w / RANK_WORDS;
                let mut r = ranks[group] as usize;
                for x in &words[group * RANK_WORDS..w] {
                    r += x.count_ones() as usize;
                }
                Some(r + (word & (bit - 1)).count_ones() as usize)
            }
            Presence::List(list) => list.binary_search(&(i as u32)).ok(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Presence::All => 0,
            Presence::Bitmap { words, ranks } => words.len() * 8 + ranks.len() * 4,
            Presence::List(l) => l.len() * 4,
        }
    }
}

/// One event-property key over all stored events.
#[derive(Clone, Debug)]
pub(crate) struct EventColumn {
    presence: Presence,
    codes: Codes,
    /// The key's distinct values.
    pub dict: Vec<Val>,
}

impl EventColumn {
    /// The dictionary code of event `i`'s value (a position in the store), if it has the key.
    #[inline]
    pub(crate) fn code(&self, i: usize) -> Option<u32> {
        self.codes.get(self.presence.rank(i)?)
    }

    /// The value of event `i` (a position in the store), if it has the key.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&Val> {
        let r = self.presence.rank(i)?;
        self.dict.get(self.codes.get(r)? as usize)
    }

    /// Approximate heap bytes.
    pub(crate) fn heap_bytes(&self) -> usize {
        let dict: usize = self
            .dict
            .iter()
            .map(|v| {
                std::mem::size_of::<Val>()
                    + match v {
                        Val::Str(s) | Val::Json(s) => s.len(),
                        _ => 0,
                    }
            })
            .sum();
        self.presence.bytes() + self.codes.bytes() + dict
    }
}

/// The number of set bits before each group of [`RANK_WORDS`] words.
fn rank_directory(words: &[u64]) -> Vec<u32> {
    let mut ranks = Vec::with_capacity(words.len().div_ceil(RANK_WORDS));
    let mut total = 0u32;
    for group in words.chunks(RANK_WORDS) {
        ranks.push(total);
        total += group.iter().map(|w| w.count_ones()).sum::<u32>();
    }
    ranks
}

/// A key's values while loading: the dictionary (as encodings), which stored events (in file
/// order) have the key, as a bitmap, and their codes in that order, as narrow as the dictionary
/// allows so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct ColumnBuilder {
    pub dict: StrSet,
    present: Vec<u64>,
    codes: Codes,
    count: usize,
}

impl ColumnBuilder {
    /// Records that stored event `event` (above every event pushed before) has value `code`.
    #[inline]
    pub(crate) fn push(&mut self, event: u32, code: u32) {
        let w = event as usize / 64;
        if w >= self.present.len() {
            self.present.resize(w + 1, 0);
        }
        self.present[w] |= 1u64 << (event % 64);
        self.codes.push(code);
        self.count += 1;
    }

    /// True when no event has the key.
    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Releases growth slack.
    pub(crate) fn shrink(&mut self) {
        self.present.shrink_to_fit();
        self.codes.shrink();
    }

    /// The finished column: store position `j` holds file event `order[j]`.
    pub(crate) fn finish(self, order: &[u32]) -> EventColumn {
        let dict: Vec<Val> = self.dict.iter().map(decode).collect();
        let events = order.len();
        let n = self.count;
        // A rank directory over the file-order bitmap finds each event's code.
        let old = Presence::Bitmap {
            ranks: rank_directory(&self.present),
            words: self.present,
        };
        let mut codes = self.codes.zeros_like(n);
        let mut words = vec![0u64; events.div_ceil(64)];
        let mut k = 0;
        for (j, &o) in order.iter().enumerate() {
            if let Some(r) = old.rank(o as usize) {
                words[j / 64] |= 1u64 << (j % 64);
                codes.set(k, self.codes.get(r).unwrap_or(0));
                k += 1;
            }
        }
        drop(old);
        let presence = if n == events {
            Presence::All
        } else if n * 4 < events / 8 {
            let mut list = Vec::with_capacity(n);
            for (w, &word) in words.iter().enumerate() {
                let mut bits = word;
                while bits != 0 {
                    list.push((w * 64) as u32 + bits.trailing_zeros());
                    bits &= bits - 1;
                }
            }
            Presence::List(list)
        } else {
            Presence::Bitmap {
                ranks: rank_directory(&words),
                words,
            }
        };
        EventColumn {
            presence,
            codes,
            dict,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(v: Val) {
        let mut b = Vec::new();
        encode_val(&v, &mut b);
        assert_eq!(decode(&b), v);
    }

    #[test]
    fn encoding_is_exact() {
        roundtrip(Val::Bool(true));
        roundtrip(Val::Bool(false));
        roundtrip(Val::Num(5u64.into()));
        roundtrip(Val::Num((-5i64).into()));
        roundtrip(Val::Num(Number::from_f64(5.0).unwrap()));
        roundtrip(Val::Num(Number::from_f64(-0.0).unwrap()));
        roundtrip(Val::Num(u64::MAX.into()));
        roundtrip(Val::Str("é x".into()));
        roundtrip(Val::Str("".into()));
        roundtrip(Val::Json("[1,\"a\"]".into()));
        // 5 and 5.0 have different string forms, so different codes.
        let (mut a, mut b) = (Vec::new(), Vec::new());
        encode_val(&Val::Num(5u64.into()), &mut a);
        encode_val(&Val::Num(Number::from_f64(5.0).unwrap()), &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn every_presence_shape_finds_its_values() {
        for dict_size in [3u32, 300, 70_000] {
            for events in [1usize, 63, 64, 65, 700, 5000] {
                for step in [1usize, 2, 3, 97] {
                    let mut b = ColumnBuilder::default();
                    for v in 0..dict_size {
                        let mut e = Vec::new();
                        encode_val(&Val::Num((v as u64).into()), &mut e);
                        b.dict.intern(&e);
                    }
                    // Codes count down from the top, so wide dictionaries widen the codes early.
                    let code = |p: usize| dict_size - 1 - (p as u32 % dict_size);
                    for p in (0..events).step_by(step) {
                        b.push(p as u32, code(p));
                    }
                    // A rotation: store position j holds file event (j + 7) mod events.
                    let order: Vec<u32> = (0..events).map(|j| ((j + 7) % events) as u32).collect();
                    let col = b.finish(&order);
                    for new in 0..events {
                        let p = (new + 7) % events;
                        let want = (p % step == 0).then(|| Val::Num((code(p) as u64).into()));
                        assert_eq!(
                            col.get(new).cloned(),
                            want,
                            "dict {dict_size} events {events} step {step} at {new}"
                        );
                    }
                    assert_eq!(col.get(events + 64), None);
                }
            }
        }
    }
}
