//! Column kernels: operators run over all of a column's distinct values at once, into a
//! code → result table, instead of one call per value.
//!
//! `icontains` searches a case-folded copy of the whole dictionary, kept in one contiguous arena,
//! with `memchr::memmem` (SIMD): one scan per needle for 100,000 distinct emails instead of
//! 100,000 folds and window compares. Dates are parsed once per distinct value and kept with the
//! column, so every date leaf on it is a compare per code.

use crate::eval::person::value_date;
use crate::time::Micros;
use crate::value::Val;

/// A column dictionary's string forms end to end in one arena: value `i` is
/// `bytes[ends[i-1]..ends[i]]`. Either as they are ([`Strings::raw`], which regexes scan) or
/// lower-cased ([`Strings::folded`], with `char::to_lowercase`, as
/// [`crate::value::contains_lower`] folds, which `icontains` searches). Reading a dictionary's
/// values is a cache miss each (every one is its own allocation); reading the arena is a stream.
#[derive(Clone, Debug, Default)]
pub(crate) struct Strings {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Strings {
    /// Every value of `dict` (its string form, as operators see it), lower-cased, on up to
    /// `threads` threads for a large dictionary.
    pub(crate) fn folded_on(dict: &[Val], threads: usize) -> Strings {
        Strings::build_on(dict, threads, true)
    }

    /// Every value of `dict` (its string form), as it is, on up to `threads` threads for a
    /// large dictionary.
    pub(crate) fn raw_on(dict: &[Val], threads: usize) -> Strings {
        Strings::build_on(dict, threads, false)
    }

    /// [`Strings::build`] on up to `threads` threads for a large dictionary: the threads
    /// overlap the values' cache misses.
    fn build_on(dict: &[Val], threads: usize, fold: bool) -> Strings {
        if threads <= 1 || dict.len() < PARALLEL_MIN_VALUES {
            return Strings::build(dict, fold);
        }
        let chunk = dict.len().div_ceil(threads);
        let parts: Vec<Strings> = std::thread::scope(|s| {
            let handles: Vec<_> = dict
                .chunks(chunk)
                .map(|part| s.spawn(move || Strings::build(part, fold)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("building an arena does not panic"))
                .collect()
        });
        let mut out = Strings {
            bytes: Vec::with_capacity(parts.iter().map(|p| p.bytes.len()).sum()),
            ends: Vec::with_capacity(dict.len()),
        };
        for part in parts {
            let base = out.bytes.len();
            out.bytes.extend_from_slice(&part.bytes);
            out.ends.extend(part.ends.iter().map(|e| e + base));
        }
        out
    }

    /// Every value of `dict` into one arena, lower-cased when `fold`.
    fn build(dict: &[Val], fold: bool) -> Strings {
        // Strings fold to about their own length: one allocation for most dictionaries.
        let size: usize = dict
            .iter()
            .map(|v| match v {
                Val::Str(s) | Val::Json(s) => s.len(),
                _ => 8,
            })
            .sum();
        let mut bytes = Vec::with_capacity(size);
        let mut ends = Vec::with_capacity(dict.len());
        let mut chars = [0u8; 4];
        for v in dict {
            v.with_str(|s| {
                if !fold {
                    bytes.extend_from_slice(s.as_bytes());
                } else if s.is_ascii() {
                    let at = bytes.len();
                    bytes.extend_from_slice(s.as_bytes());
                    bytes[at..].make_ascii_lowercase();
                } else {
                    for c in s.chars().flat_map(char::to_lowercase) {
                        bytes.extend_from_slice(c.encode_utf8(&mut chars).as_bytes());
                    }
                }
            });
            ends.push(bytes.len());
        }
        Strings { bytes, ends }
    }

    /// How many values the arena holds.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Value `i` (as the arena keeps it: folded or raw).
    pub(crate) fn value(&self, i: usize) -> &[u8] {
        &self.bytes[self.start(i)..self.ends[i]]
    }

    /// Where value `i` starts.
    fn start(&self, i: usize) -> usize {
        if i == 0 {
            0
        } else {
            self.ends[i - 1]
        }
    }

    /// Sets `hit[i]` to 1 for every value `i` in `span` whose folded form contains `needle`
    /// (already lower-cased); leaves the others as they are. The search covers the span's bytes,
    /// nothing else.
    pub(crate) fn mark_contains_in(
        &self,
        needle: &str,
        span: std::ops::Range<usize>,
        hit: &mut [u8],
    ) {
        let span = span.start..span.end.min(self.ends.len());
        if span.is_empty() {
            return;
        }
        if needle.is_empty() {
            hit[span].iter_mut().for_each(|h| *h = 1);
            return;
        }
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let len = needle.len();
        let mut from = self.start(span.start);
        let limit = self.ends[span.end - 1];
        let mut value = span.start;
        while let Some(at) = finder.find(&self.bytes[from..limit]) {
            let pos = from + at;
            // The value holding `pos` (positions only grow, so the cursor only moves forward).
            while self.ends[value] <= pos {
                value += 1;
            }
            let end = self.ends[value];
            if pos + len <= end {
                hit[value] = 1;
            }
            // A match straddling the value's end: any later start within the value would too.
            // Either way the value is decided; go on from the next one.
            from = end;
            if from >= limit {
                break;
            }
        }
    }
}

/// Regexes as forward lazy DFAs, for testing many values in a row: no pool, no capture
/// machinery, stopping at the first match. Built once per compiled regex leaf (see
/// [`crate::compile::Regexes`]) and kept with the program; each run over a dictionary starts
/// its own caches, so the program holds no state that grows with the data.
#[derive(Debug)]
pub(crate) struct DfaSet {
    originals: Vec<regex::Regex>,
    dfas: Vec<regex_automata::hybrid::dfa::DFA>,
    /// Per regex, when it is anchored at the end of the text: the literals every match ends
    /// with. A value ending with none of them cannot match, and its automaton is not run.
    suffixes: Vec<Option<Vec<EndLiteral>>>,
}

/// A literal a text must end with. One of 8 to 16 bytes (`@gmail.com`) is compared as two
/// overlapping words, in registers: a slice comparison calls `memcmp`, and that call was a
/// third of an e-mail regex's run.
#[derive(Debug)]
enum EndLiteral {
    Words { len: usize, head: u64, tail: u64 },
    Bytes(Box<[u8]>),
}

impl EndLiteral {
    fn new(literal: Box<[u8]>) -> EndLiteral {
        let words = literal
            .first_chunk::<8>()
            .zip(literal.last_chunk::<8>())
            .filter(|_| literal.len() <= 16);
        match words {
            Some((head, tail)) => EndLiteral::Words {
                len: literal.len(),
                head: u64::from_le_bytes(*head),
                tail: u64::from_le_bytes(*tail),
            },
            None => EndLiteral::Bytes(literal),
        }
    }

    /// Does `s` end with the literal?
    #[inline]
    fn ends(&self, s: &[u8]) -> bool {
        match self {
            EndLiteral::Words { len, head, tail } => {
                s.last_chunk::<8>()
                    .is_some_and(|t| u64::from_le_bytes(*t) == *tail)
                    && s.len() >= *len
                    && s[s.len() - len..]
                        .first_chunk::<8>()
                        .is_some_and(|h| u64::from_le_bytes(*h) == *head)
            }
            EndLiteral::Bytes(l) => s.ends_with(l),
        }
    }
}

/// The literals every match of `pattern` ends with, when it only matches at the end of the
/// text (`$` without multi-line, `\z`) and they are a finite set of non-empty strings: then a
/// text matches only if it ends with one of them. `None` otherwise (no filter).
pub(crate) fn end_literals(pattern: &str) -> Option<Vec<Box<[u8]>>> {
    use regex_syntax::hir::literal::{ExtractKind, Extractor};
    use regex_syntax::hir::Look;
    // The syntax `regex::RegexBuilder` parses with by default, as the leaf's regex was built.
    let hir = regex_syntax::Parser::new().parse(pattern).ok()?;
    if !hir.properties().look_set_suffix().contains(Look::End) {
        return None;
    }
    let seq = Extractor::new().kind(ExtractKind::Suffix).extract(&hir);
    let literals = seq.literals()?;
    if literals.is_empty() || literals.iter().any(|l| l.as_bytes().is_empty()) {
        return None;
    }
    Some(literals.iter().map(|l| l.as_bytes().into()).collect())
}

impl DfaSet {
    /// The lazy DFAs of `res` (same syntax, same size limits), or `None` when one cannot be
    /// built (a Unicode word boundary, or too large); the caller then uses the regexes as they
    /// are.
    pub(crate) fn new(res: &[regex::Regex]) -> Option<DfaSet> {
        use regex_automata::{hybrid::dfa::DFA, nfa::thompson};
        let dfas = res
            .iter()
            .map(|r| {
                DFA::builder()
                    .configure(DFA::config().cache_capacity(crate::limits::REGEX_DFA_SIZE))
                    .thompson(
                        thompson::Config::new().nfa_size_limit(Some(crate::limits::MAX_REGEX_SIZE)),
                    )
                    .build(r.as_str())
                    .ok()
            })
            .collect::<Option<Vec<_>>>()?;
        Some(DfaSet {
            originals: res.to_vec(),
            dfas,
            suffixes: res
                .iter()
                .map(|r| {
                    end_literals(r.as_str()).map(|ls| ls.into_iter().map(EndLiteral::new).collect())
                })
                .collect(),
        })
    }

    /// Sets `out[i]` to whether any of the regexes matches value `i` of `values` (a raw
    /// arena), for every `i` in `span`; the other entries stay as they are.
    pub(crate) fn fill(&self, values: &Strings, span: std::ops::Range<usize>, out: &mut [u8]) {
        let span = span.start..span.end.min(values.len());
        if span.is_empty() {
            return;
        }
        let mut caches = self.caches();
        for i in span {
            out[i] = self.is_match(&mut caches, values.value(i)) as u8;
        }
    }

    /// Sets `out[i]` to whether any of the regexes matches value `codes[i]` of `values` (a raw
    /// arena).
    pub(crate) fn fill_codes(&self, values: &Strings, codes: &[u32], out: &mut [u8]) {
        let mut caches = self.caches();
        for (&c, o) in codes.iter().zip(out) {
            *o = self.is_match(&mut caches, values.value(c as usize)) as u8;
        }
    }

    /// A cache per regex, for one run over many values.
    fn caches(&self) -> Vec<regex_automata::hybrid::dfa::Cache> {
        self.dfas.iter().map(|d| d.create_cache()).collect()
    }

    /// Does any of the regexes match `s` (a value's string form, so valid UTF-8)?
    #[inline]
    fn is_match(&self, caches: &mut [regex_automata::hybrid::dfa::Cache], s: &[u8]) -> bool {
        let regexes = self.dfas.iter().zip(caches).zip(&self.originals);
        regexes
            .zip(&self.suffixes)
            .any(|(((dfa, cache), re), suffixes)| {
                if let Some(suffixes) = suffixes {
                    if !suffixes.iter().any(|l| l.ends(s)) {
                        return false;
                    }
                }
                let input = regex_automata::Input::new(s).earliest(true);
                match dfa.try_search_fwd(cache, &input) {
                    Ok(m) => m.is_some(),
                    // The lazy DFA gave up (a Unicode word boundary beside non-ASCII text): the
                    // regex decides.
                    Err(_) => std::str::from_utf8(s).is_ok_and(|s| re.is_match(s)),
                }
            })
    }
}

/// Dictionaries at least this large are folded or parsed on several threads.
const PARALLEL_MIN_VALUES: usize = 4096;

/// Each distinct value of a column read as a person date (§B.8), parsed once, on up to
/// `threads` threads for a large dictionary.
pub(crate) fn dates(dict: &[Val], threads: usize) -> Vec<Option<Micros>> {
    let mut out = vec![None; dict.len()];
    if threads <= 1 || dict.len() < PARALLEL_MIN_VALUES {
        out.iter_mut()
            .zip(dict)
            .for_each(|(o, v)| *o = value_date(v));
        return out;
    }
    let chunk = dict.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (values, out) in dict.chunks(chunk).zip(out.chunks_mut(chunk)) {
            s.spawn(move || {
                out.iter_mut()
                    .zip(values)
                    .for_each(|(o, v)| *o = value_date(v))
            });
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::contains_lower;

    fn dict(values: &[&str]) -> Vec<Val> {
        values.iter().map(|s| Val::Str((*s).into())).collect()
    }

    #[test]
    fn contains_agrees_with_the_per_value_test() {
        let values = dict(&[
            "ab",
            "",
            "ab",
            "bab",
            "XAB",
            "Straße",
            "İstanbul",
            "a",
            "ba",
            "b",
            "ÀB",
        ]);
        let mut dict = values.clone();
        dict.push(Val::Bool(true));
        dict.push(Val::Num(serde_json::Number::from(1234)));
        let folded = Strings::folded_on(&dict, 1);
        let mut buf = String::new();
        for needle in [
            "", "ab", "bab", "b", "ba", "aba", "straße", "i̇st", "rue", "23", "àb", "x",
        ] {
            let mut hit = vec![0u8; dict.len()];
            folded.mark_contains_in(needle, 0..dict.len(), &mut hit);
            for (i, v) in dict.iter().enumerate() {
                let want = v.with_str(|s| contains_lower(s, needle, &mut buf));
                assert_eq!(hit[i] == 1, want, "{needle:?} in {v:?}");
            }
            // Any span: the same results inside it, nothing written outside.
            for lo in 0..=dict.len() {
                for hi in lo..=dict.len() {
                    let mut part = vec![0u8; dict.len()];
                    folded.mark_contains_in(needle, lo..hi, &mut part);
                    for i in 0..dict.len() {
                        let want = if (lo..hi).contains(&i) { hit[i] } else { 0 };
                        assert_eq!(part[i], want, "{needle:?} in {lo}..{hi}, value {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn large_dictionaries_fold_and_parse_alike_on_several_threads() {
        // Past the threshold, with an uneven split: ASCII, non-ASCII (whose folded length
        // differs), numbers and dates.
        let dict: Vec<Val> = (0..9_001)
            .map(|i| match i % 5 {
                0 => Val::Str(format!("User{i}@Example.COM").into()),
                1 => Val::Str(format!("İSTANBUL-{i}").into()),
                2 => Val::Num(serde_json::Number::from(i)),
                3 => Val::Str(format!("2026-{:02}-{:02}T10:00:00Z", i % 12 + 1, i % 28 + 1).into()),
                _ => Val::Bool(i % 2 == 0),
            })
            .collect();
        let one = Strings::folded_on(&dict, 1);
        let raw = Strings::raw_on(&dict, 1);
        for threads in [2, 3] {
            let many = Strings::folded_on(&dict, threads);
            assert_eq!((&many.bytes, &many.ends), (&one.bytes, &one.ends));
            let many = Strings::raw_on(&dict, threads);
            assert_eq!((&many.bytes, &many.ends), (&raw.bytes, &raw.ends));
            assert_eq!(dates(&dict, threads), dates(&dict, 1));
        }
        assert!(dates(&dict, 1).iter().filter(|d| d.is_some()).count() > 3_000);
        for (i, v) in dict.iter().enumerate() {
            assert_eq!(raw.value(i), v.with_str(|s| s.as_bytes().to_vec()), "{v:?}");
        }
    }

    #[test]
    fn automata_over_the_raw_arena_agree_with_the_regexes() {
        let mut dict = dict(&[
            "abe@gmail.com",
            "Abe@gmail.com",
            "mo@yahoo.com",
            "zed@gmail.com",
            "a@gmail.com.au",
            "",
            "été",
            "café x",
            "x café",
            "İstanbul",
            "line\nbreak",
            "ab",
        ]);
        dict.push(Val::Bool(true));
        dict.push(Val::Num(serde_json::Number::from(1234)));
        dict.push(Val::Json("[1,2]".into()));
        let raw = Strings::raw_on(&dict, 1);
        for patterns in [
            &[r"^[a-m][^@]*@(gmail|yahoo)\.com$"][..],
            &[r"(?i)^abe"],
            &[r"\bcafé\b"],
            &[r"\bx\b", r"^\d+$"],
            &[r"^$"],
            &[r"^true$|^\[1"],
            &[r"ta"],
            &[r"(?m)^break$"],
        ] {
            let res: Vec<regex::Regex> = patterns
                .iter()
                .map(|p| regex::Regex::new(p).unwrap())
                .collect();
            let want: Vec<u8> = dict
                .iter()
                .map(|v| v.with_str(|s| res.iter().any(|r| r.is_match(s))) as u8)
                .collect();
            let Some(dfas) = DfaSet::new(&res) else {
                continue;
            };
            // The whole arena, any span of it (nothing written outside), any codes.
            let mut all = vec![0u8; dict.len()];
            dfas.fill(&raw, 0..dict.len() + 3, &mut all);
            assert_eq!(all, want, "{patterns:?}");
            for lo in 0..=dict.len() {
                let mut part = vec![7u8; dict.len()];
                dfas.fill(&raw, lo..dict.len() - 1, &mut part);
                for i in 0..dict.len() {
                    let expect = if (lo..dict.len() - 1).contains(&i) {
                        want[i]
                    } else {
                        7
                    };
                    assert_eq!(part[i], expect, "{patterns:?} {lo}, value {i}");
                }
            }
            let codes: Vec<u32> = (0..dict.len() as u32).rev().step_by(2).collect();
            let mut hits = vec![9u8; codes.len()];
            dfas.fill_codes(&raw, &codes, &mut hits);
            for (&c, h) in codes.iter().zip(hits) {
                assert_eq!(h, want[c as usize], "{patterns:?} code {c}");
            }
        }
    }

    #[test]
    fn end_literals_compare_as_slices_do() {
        // Literals of 1 to 20 bytes (words from 8 to 16), against texts shorter, equal, longer,
        // differing in the head word only, in the tail word only, and in the overlap.
        let text = b"xy@gmail.com.example@yahoo.com";
        for len in 1..=20 {
            for at in 0..=text.len() - len {
                let literal = &text[at..at + len];
                let end = EndLiteral::new(literal.into());
                assert_eq!(
                    matches!(end, EndLiteral::Words { .. }),
                    (8..=16).contains(&len),
                    "{len}"
                );
                for cut in 0..=text.len() {
                    for s in [&text[..cut], &text[cut..]] {
                        assert_eq!(end.ends(s), s.ends_with(literal), "{literal:?} {s:?}");
                        let mut changed = s.to_vec();
                        for i in 0..changed.len() {
                            changed[i] ^= 1;
                            assert_eq!(end.ends(&changed), changed.ends_with(literal));
                            changed[i] ^= 1;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn end_literals_only_for_regexes_anchored_at_the_end() {
        let lits = |p: &str| {
            end_literals(p).map(|l| {
                let mut v: Vec<String> = l
                    .iter()
                    .map(|b| String::from_utf8(b.to_vec()).unwrap())
                    .collect();
                v.sort();
                v
            })
        };
        assert_eq!(
            lits(r"^[a-m][^@]*@(gmail|yahoo)\.com$"),
            Some(vec!["@gmail.com".to_string(), "@yahoo.com".to_string()])
        );
        assert_eq!(lits(r"ab\z"), Some(vec!["ab".to_string()]));
        // Not anchored at the end in every branch, multi-line, CRLF, no finite set, empty.
        for p in [
            r"ab",
            r"a$|b",
            r"(?m)ab$",
            r"(?mR)ab$",
            r"[a-z]+$",
            r"\d$",
            r"$",
            r"(a|)$",
        ] {
            assert_eq!(lits(p), None, "{p}");
        }
        // Case-insensitive: every case form of the literal (or no filter at all).
        if let Some(l) = lits(r"(?i)ab$") {
            assert!(l.contains(&"AB".to_string()) && l.contains(&"ab".to_string()));
        }
    }
}
