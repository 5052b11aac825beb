//! Property values as the evaluator sees them, and the coercions of SEMANTICS §B.1: the string
//! form, the numeric form, and Unicode case folding without allocation.

use std::fmt::{self, Write as _};

use serde_json::{Number, Value};

/// A present (non-null) property value of a person or an event.
///
/// JSON null is not representable: a null property is *missing* (§B.1). Arrays and objects keep
/// only their string form (compact JSON, object keys sorted), which is all any operator reads.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Val {
    /// A JSON boolean.
    Bool(bool),
    /// A JSON number, keeping its integer/float kind for the string form.
    Num(Number),
    /// A JSON string.
    Str(Box<str>),
    /// An array or object, as its string form.
    Json(Box<str>),
}

impl Val {
    /// The value of a JSON property, or `None` when it is null (missing).
    pub fn from_json(v: &Value) -> Option<Val> {
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.clone()),
            Value::String(s) => Val::Str(s.as_str().into()),
            other => Val::Json(other.to_string().into_boxed_str()),
        })
    }

    /// Calls `f` with the string form of the value (§B.1) without allocating.
    #[inline(always)]
    pub fn with_str<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            // The common case stays inline; formatting a number or a boolean does not.
            Val::Str(s) | Val::Json(s) => f(s),
            _ => self.with_formatted(f),
        }
    }

    /// [`Val::with_str`] for a number or a boolean.
    #[inline(never)]
    fn with_formatted<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Val::Str(s) | Val::Json(s) => f(s),
            Val::Bool(true) => f("true"),
            Val::Bool(false) => f("false"),
            Val::Num(n) => {
                let mut buf = StackStr::new();
                // A number's Display is at most ~25 bytes; the buffer holds 48.
                if write!(buf, "{n}").is_ok() {
                    f(buf.as_str())
                } else {
                    f(&n.to_string())
                }
            }
        }
    }

    /// The numeric form (§B.1): a number as is, a numeric string parsed, anything else `None`.
    #[inline]
    pub fn num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => n.as_f64(),
            Val::Str(s) => numeric_str(s),
            _ => None,
        }
    }
}

/// A string is numeric iff `str::parse::<f64>` accepts it and the result is finite (§B.1).
#[inline]
pub fn numeric_str(s: &str) -> Option<f64> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() => Some(x),
        _ => None,
    }
}

/// Lower-cases per character with `char::to_lowercase` (§B.1 case folding).
pub fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// True when `hay`, lower-cased, equals `needle_lower` (already lower-cased). Never allocates.
#[inline]
pub fn eq_lower(hay: &str, needle_lower: &str) -> bool {
    if hay.is_ascii() {
        hay.len() == needle_lower.len()
            && hay
                .bytes()
                .zip(needle_lower.bytes())
                .all(|(a, b)| a.to_ascii_lowercase() == b)
    } else {
        hay.chars()
            .flat_map(char::to_lowercase)
            .eq(needle_lower.chars())
    }
}

/// True when `hay`, lower-cased, contains `needle_lower`. Non-ASCII haystacks are folded into
/// `buf`, a reusable buffer, so steady-state calls do not allocate. (The evaluator checks the
/// haystack for ASCII once per value and calls the two halves itself.)
#[cfg(test)]
pub fn contains_lower(hay: &str, needle_lower: &str, buf: &mut String) -> bool {
    if hay.is_ascii() {
        contains_ascii_lower(hay.as_bytes(), needle_lower.as_bytes())
    } else {
        contains_folded(hay, needle_lower, buf)
    }
}

/// [`contains_lower`] for an ASCII `hay`. A needle with a non-ASCII byte never matches (an ASCII
/// haystack lower-cases to ASCII), and needs no check: no ASCII byte equals it.
#[inline]
pub fn contains_ascii_lower(h: &[u8], n: &[u8]) -> bool {
    let Some((&first, rest)) = n.split_first() else {
        return true;
    };
    if n.len() > h.len() {
        return false;
    }
    // Candidate starts by the needle's first byte, then the rest in place (the needle is
    // lower case, so folding both sides is exact).
    let fold = if first.is_ascii_lowercase() { 0x20 } else { 0 };
    for (i, &b) in h[..=h.len() - n.len()].iter().enumerate() {
        if b | fold == first
            && h[i + 1..i + n.len()]
                .iter()
                .zip(rest)
                .all(|(a, b)| a.to_ascii_lowercase() == *b)
        {
            return true;
        }
    }
    false
}

/// [`contains_lower`] for a non-ASCII `hay`: folded into `buf`, then searched.
#[inline(never)]
pub fn contains_folded(hay: &str, needle_lower: &str, buf: &mut String) -> bool {
    buf.clear();
    buf.extend(hay.chars().flat_map(char::to_lowercase));
    buf.contains(needle_lower)
}

/// A small fixed-size string buffer for number formatting.
struct StackStr {
    buf: [u8; 48],
    len: usize,
}

impl StackStr {
    fn new() -> StackStr {
        StackStr {
            buf: [0; 48],
            len: 0,
        }
    }
    fn as_str(&self) -> &str {
        // Only whole `&str`s are ever copied in, so the prefix is valid UTF-8.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl fmt::Write for StackStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: Value) -> String {
        Val::from_json(&v).unwrap().with_str(|s| s.to_string())
    }

    #[test]
    fn string_forms_follow_serde_json_display() {
        assert_eq!(s(json!(5)), "5");
        assert_eq!(s(json!(5.0)), "5.0");
        assert_eq!(s(json!(1e3)), "1000.0");
        assert_eq!(s(json!(-3)), "-3");
        assert_eq!(s(json!(true)), "true");
        assert_eq!(s(json!({"b": 1, "a": [1, "x"]})), r#"{"a":[1,"x"],"b":1}"#);
        assert_eq!(s(json!(u64::MAX)), "18446744073709551615");
        let f: Value = serde_json::from_str("1e20").unwrap();
        assert_eq!(s(f.clone()), f.to_string());
        assert!(Val::from_json(&Value::Null).is_none());
    }

    #[test]
    fn numeric_forms() {
        assert_eq!(Val::Str("23".into()).num(), Some(23.0));
        assert_eq!(Val::Str("1e3".into()).num(), Some(1000.0));
        assert_eq!(Val::Str("+5".into()).num(), Some(5.0));
        assert_eq!(Val::Str(" 5".into()).num(), None);
        assert_eq!(Val::Str("inf".into()).num(), None);
        assert_eq!(Val::Str("NaN".into()).num(), None);
        assert_eq!(Val::Str("1e400".into()).num(), None);
        assert_eq!(Val::Bool(true).num(), None);
    }

    #[test]
    fn case_folding() {
        let mut buf = String::new();
        assert!(eq_lower("HeLLo", "hello"));
        assert!(!eq_lower("HeLLo", "hell"));
        assert!(eq_lower("ÉCOLE", "école"));
        assert!(eq_lower("İ", &lower("İ")));
        assert!(contains_lower("Hello World", "o w", &mut buf));
        assert!(contains_lower("ÀBC", "àb", &mut buf));
        assert!(!contains_lower("abc", "é", &mut buf));
        assert!(contains_lower("abc", "", &mut buf));
        assert!(!contains_lower("ab", "abc", &mut buf));
        // The Kelvin sign lower-cases to an ASCII 'k'.
        assert!(contains_lower("\u{212A}elvin", "kel", &mut buf));
    }

    #[test]
    fn ascii_contains_agrees_with_folding_then_searching() {
        let mut buf = String::new();
        let hays = [
            "ada@ACME.io",
            "@acme",
            "x@acm",
            "AAAb",
            "a[b",
            "A{B",
            "abc`d",
            "",
            "zz@",
        ];
        let needles = [
            "@acme", "a", "aab", "ab", "[b", "{b", "`d", "@d", "z@", "io", "b",
        ];
        for hay in hays {
            for needle in needles {
                let expected = hay.to_lowercase().contains(needle);
                assert_eq!(
                    contains_lower(hay, needle, &mut buf),
                    expected,
                    "{hay:?} contains {needle:?}"
                );
            }
        }
    }
}
