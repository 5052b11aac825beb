//! Property conditions (SEMANTICS §B) on one value: person leaves and event filters alike.

use crate::compile::{DateCmp, PropTest, Test};
use crate::data::PersonProps;
use crate::semver::parse_version;
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

/// lower(`s`) equals one of `needles` (lower-cased). `s` is checked for ASCII once, not per
/// needle: an ASCII value lower-cases byte by byte, so only a needle of its length can match.
#[inline(never)]
fn eq_any(s: &str, needles: &[Box<str>]) -> bool {
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

/// lower(`s`) contains one of `needles` (lower-cased); `s` is checked for ASCII once.
#[inline(never)]
fn contains_any(s: &str, needles: &[Box<str>], buf: &mut String) -> bool {
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
