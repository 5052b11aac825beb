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

/// A column dictionary's string forms, lower-cased (`char::to_lowercase`, as
/// [`crate::value::contains_lower`] folds), end to end: value `i` is `bytes[ends[i-1]..ends[i]]`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Folded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Folded {
    /// Folds every value of `dict` (its string form, as operators see it) into one arena.
    pub(crate) fn new(dict: &[Val]) -> Folded {
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(dict.len());
        let mut chars = [0u8; 4];
        for v in dict {
            v.with_str(|s| {
                if s.is_ascii() {
                    bytes.extend(s.bytes().map(|b| b.to_ascii_lowercase()));
                } else {
                    for c in s.chars().flat_map(char::to_lowercase) {
                        bytes.extend_from_slice(c.encode_utf8(&mut chars).as_bytes());
                    }
                }
            });
            ends.push(bytes.len());
        }
        Folded { bytes, ends }
    }

    /// Sets `hit[i]` to 1 for every value `i` whose folded form contains `needle` (already
    /// lower-cased); leaves the others as they are.
    pub(crate) fn mark_contains(&self, needle: &str, hit: &mut [u8]) {
        if needle.is_empty() {
            hit.iter_mut().for_each(|h| *h = 1);
            return;
        }
        let finder = memchr::memmem::Finder::new(needle.as_bytes());
        let len = needle.len();
        let mut from = 0;
        let mut value = 0;
        while let Some(at) = finder.find(&self.bytes[from..]) {
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
            if from >= self.bytes.len() {
                break;
            }
        }
    }
}

/// Regexes as forward lazy DFAs, for testing many values in a row: one cache per caller, no
/// pool, no capture machinery, stopping at the first match.
pub(crate) struct DfaSet<'a> {
    originals: &'a [regex::Regex],
    dfas: Vec<regex_automata::hybrid::dfa::DFA>,
}

impl<'a> DfaSet<'a> {
    /// The lazy DFAs of `res` (same syntax, same size limits), or `None` when one cannot be
    /// built (a Unicode word boundary, or too large); the caller then uses the regexes as they
    /// are.
    pub(crate) fn new(res: &'a [regex::Regex]) -> Option<DfaSet<'a>> {
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
            originals: res,
            dfas,
        })
    }

    /// Sets `out[i]` to whether any of the regexes matches `values[i]`'s string form.
    pub(crate) fn fill(&self, values: &[Val], out: &mut [u8]) {
        let mut caches = self.caches();
        for (v, o) in values.iter().zip(out) {
            *o = self.is_match(&mut caches, v) as u8;
        }
    }

    /// Sets `out[i]` to whether any of the regexes matches `dict[codes[i]]`'s string form.
    pub(crate) fn fill_codes(&self, dict: &[Val], codes: &[u32], out: &mut [u8]) {
        let mut caches = self.caches();
        for (&c, o) in codes.iter().zip(out) {
            *o = self.is_match(&mut caches, &dict[c as usize]) as u8;
        }
    }

    fn caches(&self) -> Vec<regex_automata::hybrid::dfa::Cache> {
        self.dfas.iter().map(|d| d.create_cache()).collect()
    }

    #[inline]
    fn is_match(&self, caches: &mut [regex_automata::hybrid::dfa::Cache], v: &Val) -> bool {
        v.with_str(|s| {
            (self.dfas.iter().zip(caches).zip(self.originals)).any(|((dfa, cache), re)| {
                let input = regex_automata::Input::new(s).earliest(true);
                match dfa.try_search_fwd(cache, &input) {
                    Ok(m) => m.is_some(),
                    // The lazy DFA gave up (a Unicode word boundary beside non-ASCII text):
                    // the regex decides.
                    Err(_) => re.is_match(s),
                }
            })
        })
    }
}

/// Each distinct value of a column read as a person date (§B.8), parsed once.
pub(crate) fn dates(dict: &[Val]) -> Vec<Option<Micros>> {
    dict.iter().map(value_date).collect()
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
        let folded = Folded::new(&dict);
        let mut buf = String::new();
        for needle in [
            "", "ab", "bab", "b", "ba", "aba", "straße", "i̇st", "rue", "23", "àb", "x",
        ] {
            let mut hit = vec![0u8; dict.len()];
            folded.mark_contains(needle, &mut hit);
            for (i, v) in dict.iter().enumerate() {
                let want = v.with_str(|s| contains_lower(s, needle, &mut buf));
                assert_eq!(hit[i] == 1, want, "{needle:?} in {v:?}");
            }
        }
    }
}
