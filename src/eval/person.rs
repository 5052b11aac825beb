//! Property conditions (SEMANTICS §B) on one value: person leaves and event filters alike.

use crate::compile::{DateCmp, PropTest, Test};
use crate::data::PersonProps;
use crate::intern::Sym;
use crate::semver::parse_version;
use crate::short::{Needles, Short};
use crate::time::{parse_absolute, seconds_f64_to_micros, Micros};
use crate::value::{contains_ascii_lower, contains_folded, eq_lower, numeric_str, Val};

/// Evaluates a property condition against a person's properties.
#[inline]
pub(crate) fn eval_prop(
    t: &PropTest,
    props: PersonProps<'_>,
    times: &[Micros],
    buf: &mut String,
) -> bool {
    eval_value(t, props.get(t.key), times, buf)
}

/// True when a leaf of `run` (keys ascending) gives `hit` on the key-sorted properties `pairs`
/// (`value` reads a pair's value): the leaves find their values in one pass over `pairs`.
#[inline]
pub(crate) fn run_hits<'a, T>(
    run: &[PropTest],
    pairs: &'a [(Sym, T)],
    value: impl Fn(&'a T) -> &'a Val,
    times: &[Micros],
    buf: &mut String,
    hit: bool,
) -> bool {
    let mut at = 0;
    for (i, t) in run.iter().enumerate() {
        // Every pair before `at` has a key below the previous leaf's, so below this one's.
        if pairs.len() - at > 16 {
            at += pairs[at..].partition_point(|p| p.0 < t.key);
        } else {
            // At most 16 pairs left: the rest of the run scans them (a person's usual size).
            return scan_hits(&run[i..], &pairs[at..], value, times, buf, hit);
        }
        if leaf_hits(t, pairs.get(at), &value, times, buf, hit) {
            return true;
        }
    }
    false
}

/// Leaf `t` gives `hit`, where `pair` is the first property whose key is not below the leaf's.
#[inline(always)]
fn leaf_hits<'a, T>(
    t: &PropTest,
    pair: Option<&'a (Sym, T)>,
    value: &impl Fn(&'a T) -> &'a Val,
    times: &[Micros],
    buf: &mut String,
    hit: bool,
) -> bool {
    let v = match pair {
        Some(p) if p.0 == t.key => Some(value(&p.1)),
        _ => None,
    };
    eval_value(t, v, times, buf) == hit
}

/// [`run_hits`] by a linear merge, for few pairs.
#[inline(always)]
fn scan_hits<'a, T>(
    run: &[PropTest],
    pairs: &'a [(Sym, T)],
    value: impl Fn(&'a T) -> &'a Val,
    times: &[Micros],
    buf: &mut String,
    hit: bool,
) -> bool {
    let mut at = 0;
    for t in run {
        while at < pairs.len() && pairs[at].0 < t.key {
            at += 1;
        }
        if leaf_hits(t, pairs.get(at), &value, times, buf, hit) {
            return true;
        }
    }
    false
}

/// Evaluates a property condition against the property's value (`None` when missing).
#[inline]
pub(crate) fn eval_value(
    t: &PropTest,
    value: Option<&Val>,
    times: &[Micros],
    buf: &mut String,
) -> bool {
    let r = match value {
        None => t.missing,
        Some(v) => test(&t.test, v, times, buf) ^ t.invert,
    };
    r ^ t.negate
}

/// A person date value (§B.8): a number or numeric string is epoch seconds, else an absolute
/// date string; anything else is no date.
pub(crate) fn value_date(v: &Val) -> Option<Micros> {
    match v {
        Val::Num(n) => seconds_f64_to_micros(n.as_f64()?),
        Val::Str(s) => {
            // `YYYY-MM-DD…` can never be a number: skip the float parse for the common case.
            let b = s.as_bytes();
            if b.len() >= 10 && b[4] == b'-' && b[7] == b'-' {
                return parse_absolute(s);
            }
            match numeric_str(s) {
                Some(x) => seconds_f64_to_micros(x),
                None => parse_absolute(s),
            }
        }
        _ => None,
    }
}

/// The test on a present value, before `invert`. The common tests on a string are handled
/// here, the rest out of line ([`test_other`]), so this stays small enough to inline with a
/// small stack frame.
#[inline(always)]
pub(crate) fn test(t: &Test, v: &Val, times: &[Micros], buf: &mut String) -> bool {
    match (t, v) {
        (Test::Set, _) => true,
        (Test::EqAny(needles), Val::Str(s) | Val::Json(s)) => eq_any(s, needles),
        (Test::Contains(needles), Val::Str(s) | Val::Json(s)) => contains_any(s, needles, buf),
        (Test::Cmp(op, x), Val::Num(n)) => n.as_f64().is_some_and(|a| op.test(a, *x)),
        (Test::Semver(op, ver), Val::Str(s)) => parse_version(s).is_some_and(|x| op.test(x, *ver)),
        _ => test_other(t, v, times, buf),
    }
}

/// lower(`s`) equals one of `needles`. A short ASCII value is packed once and compared with
/// each packed needle; a longer one is checked for ASCII once, not per needle: an ASCII value
/// lower-cases byte by byte, so only a needle of its length can match.
#[inline]
fn eq_any(s: &str, needles: &Needles) -> bool {
    match Short::lower(s.as_bytes()) {
        Some(v) => needles.short().iter().any(|n| v.eq(n.short())),
        None => eq_any_long(s, needles.all()),
    }
}

/// [`eq_any`] for a value longer than 16 bytes or not ASCII.
#[inline(never)]
fn eq_any_long(s: &str, needles: &[Box<str>]) -> bool {
    if s.is_ascii() {
        needles.iter().any(|n| {
            n.len() == s.len()
                && s.bytes()
                    .zip(n.bytes())
                    .all(|(a, b)| a.to_ascii_lowercase() == b)
        })
    } else {
        eq_any_folded(s, needles)
    }
}

/// [`eq_any`] for a non-ASCII value (out of line, so the ASCII path keeps a small frame).
#[inline(never)]
fn eq_any_folded(s: &str, needles: &[Box<str>]) -> bool {
    needles.iter().any(|n| eq_lower(s, n))
}

/// lower(`s`) contains one of `needles`: in a register for a short ASCII value; otherwise `s`
/// is checked for ASCII once.
#[inline(always)]
fn contains_any(s: &str, needles: &Needles, buf: &mut String) -> bool {
    match Short::lower(s.as_bytes()) {
        Some(v) => needles.short().iter().any(|n| v.contains(n)),
        None => contains_any_long(s, needles.all(), buf),
    }
}

/// [`contains_any`] for a value longer than 16 bytes or not ASCII.
#[inline(never)]
fn contains_any_long(s: &str, needles: &[Box<str>], buf: &mut String) -> bool {
    if s.is_ascii() {
        needles
            .iter()
            .any(|n| contains_ascii_lower(s.as_bytes(), n.as_bytes()))
    } else {
        needles.iter().any(|n| contains_folded(s, n, buf))
    }
}

/// [`test`] for every other test and value type (numbers and booleans as strings, numeric
/// strings, dates, ranges, regexes, long lists).
#[inline(never)]
fn test_other(t: &Test, v: &Val, times: &[Micros], buf: &mut String) -> bool {
    match t {
        Test::Set => true,
        Test::Bool(target) => v.with_str(|s| eq_lower(s, if *target { "true" } else { "false" })),
        Test::EqAny(needles) => v.with_str(|s| eq_any(s, needles)),
        Test::EqSet(set) => v.with_str(|s| {
            buf.clear();
            buf.extend(s.chars().flat_map(char::to_lowercase));
            set.contains(buf.as_str())
        }),
        Test::Contains(needles) => v.with_str(|s| contains_any(s, needles, buf)),
        Test::Regex(res) => v.with_str(|s| res.iter().any(|r| r.is_match(s))),
        Test::Cmp(op, x) => v.num().is_some_and(|a| op.test(a, *x)),
        Test::Between(lo, hi) => v.num().is_some_and(|a| *lo <= a && a <= *hi),
        Test::NotBetween(lo, hi) => v.num().is_some_and(|a| a < *lo || a > *hi),
        Test::Date(cmp, slot) => {
            let f = times[*slot as usize];
            value_date(v).is_some_and(|d| match cmp {
                DateCmp::Before => d < f,
                DateCmp::After => d > f,
                DateCmp::Exact => d == f,
            })
        }
        Test::Semver(op, ver) => v.with_str(parse_version).is_some_and(|x| op.test(x, *ver)),
        Test::SemverRange(lo, hi) => v
            .with_str(parse_version)
            .is_some_and(|x| *lo <= x && x < *hi),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::NumCmp;
    use crate::data::lookup;
    use proptest::prelude::*;

    fn leaf((key, at_least, missing, invert, negate): (u32, i64, bool, bool, bool)) -> PropTest {
        PropTest {
            key: Sym(key),
            missing,
            invert,
            negate,
            test: Test::Cmp(NumCmp::Gte, at_least as f64),
        }
    }

    proptest! {
        /// One pass over the properties finds what a lookup per leaf finds, with few and with
        /// many properties (a binary search past 16), keys present, missing and repeated.
        #[test]
        fn a_run_agrees_with_a_lookup_per_leaf(
            keys in proptest::collection::btree_set(0u32..48, 0..40),
            leaves in proptest::collection::vec(
                (0u32..50, 0i64..50, any::<bool>(), any::<bool>(), any::<bool>()), 0..12),
            hit in any::<bool>(),
        ) {
            let props: Vec<(Sym, Val)> = keys
                .iter()
                .map(|&k| (Sym(k), Val::Num(serde_json::Number::from(k))))
                .collect();
            let mut run: Vec<PropTest> = leaves.into_iter().map(leaf).collect();
            run.sort_by_key(|t| t.key);
            let expected = run
                .iter()
                .any(|t| eval_value(t, lookup(&props, t.key), &[], &mut String::new()) == hit);
            let mut buf = String::new();
            prop_assert_eq!(run_hits(&run, &props, |v| v, &[], &mut buf, hit), expected);
            let pooled: Vec<(Sym, u32)> = props.iter().enumerate().map(|(i, p)| (p.0, i as u32)).collect();
            let values: Vec<Val> = props.iter().map(|p| p.1.clone()).collect();
            prop_assert_eq!(
                run_hits(&run, &pooled, |&i| &values[i as usize], &[], &mut buf, hit),
                expected
            );
        }
    }
}
