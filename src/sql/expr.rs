//! SQL expressions over a JSON `properties` column: literals, the §B.1 string form, the numeric
//! form, person dates (§B.8) and versions (§B.7), all computed from the JSON text in ClickHouse.

use std::fmt::Write as _;

use crate::time::{Micros, MAX_MICROS, MIN_MICROS};

use super::regex::WHITE_SPACE_ITEMS;

/// A ClickHouse string literal: every byte that could end or alter the literal is escaped
/// (`\\`, `'`, NUL and all other control characters), so no text can break out of it.
pub fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A ClickHouse identifier for a (possibly `database.table`) name: each dot-separated part in
/// backquotes, with backquotes and backslashes escaped.
pub fn quote_ident(name: &str) -> String {
    name.split('.')
        .map(|part| {
            let mut q = String::from("`");
            for c in part.chars() {
                match c {
                    '`' => q.push_str("\\`"),
                    '\\' => q.push_str("\\\\"),
                    '\0' => q.push_str("\\0"),
                    '\n' => q.push_str("\\n"),
                    '\r' => q.push_str("\\r"),
                    c => q.push(c),
                }
            }
            q.push('`');
            q
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// An exact Float64 literal (the bit pattern, so no decimal parsing is involved).
pub(crate) fn float_lit(x: f64) -> String {
    format!("reinterpretAsFloat64(toUInt64({}))", x.to_bits())
}

/// An Int64 literal for an instant, clamped just outside the valid range (so −∞/+∞ bounds compare
/// correctly with every valid instant).
pub(crate) fn micros_lit(t: Micros) -> String {
    let t = t.clamp(MIN_MICROS - 1, MAX_MICROS + 1);
    format!("toInt64({t})")
}

/// A DateTime64(6) literal for an instant in the valid range.
pub(crate) fn datetime_lit(t: Micros) -> String {
    format!(
        "fromUnixTimestamp64Micro(toInt64({t}), 'UTC') /* {} */",
        crate::time::format_micros(t)
    )
}

/// Comparison of a DateTime64 column with a bound; bounds outside the valid range (±∞) fold to
/// constants, since every stored instant lies inside it.
pub(crate) fn ts_cmp(col: &str, op: &str, bound: Micros) -> String {
    let lower_op = matches!(op, ">" | ">=");
    if bound < MIN_MICROS {
        return if lower_op { "1" } else { "0" }.into();
    }
    if bound > MAX_MICROS {
        return if lower_op { "0" } else { "1" }.into();
    }
    format!("{col} {op} {}", datetime_lit(bound))
}

/// One property of a JSON column: `JSONType(col, 'key')` and friends.
pub(crate) struct Prop {
    col: String,
    key: String,
}

impl Prop {
    pub(crate) fn new(col: &str, key: &str) -> Prop {
        Prop {
            col: col.to_string(),
            key: quote_string(key),
        }
    }

    fn f(&self, func: &str) -> String {
        format!("{func}({}, {})", self.col, self.key)
    }

    /// The JSON type name; `'Null'` for an absent key and for JSON null.
    pub(crate) fn json_type(&self) -> String {
        self.f("JSONType")
    }

    /// Present = not absent and not null (§B.1).
    pub(crate) fn present(&self) -> String {
        format!("({} != 'Null')", self.json_type())
    }

    /// The §B.1 string form: strings unescaped, integers as digits, floats in serde_json's
    /// Display form, booleans `true`/`false`, containers as their compact JSON text.
    pub(crate) fn string_form(&self) -> String {
        let t = self.json_type();
        format!(
            "multiIf({t} = 'String', {s}, {t} = 'Int64', toString({i}), {t} = 'UInt64', toString({u}), \
             {t} = 'Double', {fl}, {t} = 'Bool', if({b}, 'true', 'false'), {raw})",
            s = self.f("JSONExtractString"),
            i = self.f("JSONExtractInt"),
            u = self.f("JSONExtractUInt"),
            fl = serde_float(&self.f("JSONExtractFloat")),
            b = self.f("JSONExtractBool"),
            raw = self.f("JSONExtractRaw"),
        )
    }

    /// The lower-cased string form (`char::to_lowercase` per character; ICU's context rule for a
    /// final capital sigma is undone by mapping `Σ` to `σ` first).
    pub(crate) fn lower_string_form(&self) -> String {
        lower(&self.string_form())
    }

    /// The numeric form (§B.1): Nullable(Float64), NULL when not numeric.
    pub(crate) fn number(&self) -> String {
        let t = self.json_type();
        format!(
            "multiIf({t} IN ('Int64', 'UInt64', 'Double'), toNullable({fl}), {t} = 'String', {ns}, NULL)",
            fl = self.f("JSONExtractFloat"),
            ns = numeric_string(&self.f("JSONExtractString")),
        )
    }

    /// The person date (§B.8) as Nullable(Int64) micros: numbers and numeric strings are epoch
    /// seconds, other strings the absolute formats; NULL otherwise.
    pub(crate) fn date(&self) -> String {
        let t = self.json_type();
        let s = self.f("JSONExtractString");
        format!(
            "multiIf({t} IN ('Int64', 'UInt64', 'Double'), {en}, {t} = 'String', \
             if(isNotNull({ns}), {es}, {ad}), NULL)",
            en = epoch_seconds(&self.f("JSONExtractFloat")),
            ns = numeric_string(&s),
            es = epoch_seconds(&format!("assumeNotNull({})", numeric_string(&s))),
            ad = absolute_date(&s),
        )
    }
}

/// Lower-cases a String expression like `char::to_lowercase`.
pub(crate) fn lower(e: &str) -> String {
    format!("lowerUTF8(replaceAll({e}, 'Σ', 'σ'))")
}

/// serde_json's Display of a finite Float64 (shortest round-trip digits; decimal notation for
/// 1e-5 ≤ |x| < 1e16 with `.0` when integral, else `d.ddde±x`), rebuilt from ClickHouse's own
/// shortest digits.
pub(crate) fn serde_float(x: &str) -> String {
    // s = toString(abs(x)) has the shortest digits; split it into mantissa m and exponent e,
    // then into the digit string d and kk, the position of the decimal point (v = 0.d × 10^kk).
    let body = "concat(neg, multiIf(\
        kk > 0 AND kk <= 16 AND length(d) <= kk, concat(d, repeat('0', toUInt64(greatest(kk - length(d), 0))), '.0'), \
        kk > 0 AND kk <= 16, concat(substring(d, 1, kk), '.', substring(d, kk + 1)), \
        kk > -5 AND kk <= 0, concat('0.', repeat('0', toUInt64(greatest(-kk, 0))), d), \
        concat(substring(d, 1, 1), if(length(d) > 1, concat('.', substring(d, 2)), ''), 'e', \
               if(kk - 1 >= 0, '+', '-'), toString(abs(kk - 1)))))";
    format!(
        "arrayMap(x -> if(x = 0, if(startsWith(toString(x), '-'), '-0.0', '0.0'), \
           arrayMap((neg, s) -> \
             arrayMap((m, ex) -> \
               arrayMap((ip, fr) -> \
                 arrayMap((d, kk) -> {body}, \
                   [trimRight(trimLeft(concat(ip, fr), '0'), '0')], \
                   [toInt64(length(ip)) + ex - toInt64(length(concat(ip, fr)) - length(trimLeft(concat(ip, fr), '0')))])[1], \
                 [splitByChar('.', m)[1]], [if(position(m, '.') > 0, splitByChar('.', m)[2], '')])[1], \
               [splitByChar('e', s)[1]], [if(position(s, 'e') > 0, toInt64OrZero(replaceAll(splitByChar('e', s)[2], '+', '')), toInt64(0))])[1], \
             [if(x < 0, '-', '')], [toString(abs(x))])[1]), [toFloat64({x})])[1]"
    )
}

/// `str::parse::<f64>` on a String expression, finite results only: Nullable(Float64). The text
/// is checked against Rust's float grammar, rewritten as a JSON number with a fraction and an
/// exponent (so it is parsed as a correctly rounded double) and parsed; out-of-range exponents
/// make the JSON invalid, which is Rust's non-finite case.
pub(crate) fn numeric_string(s: &str) -> String {
    format!(
        "if(match({s}, '^[+-]?([0-9]+\\\\.?[0-9]*|\\\\.[0-9]+)([eE][+-]?[0-9]+)?$'), \
           arrayMap(j -> if(isValidJSON(j), toNullable(JSONExtractFloat(j, 1)), NULL), \
             arrayMap(g -> concat('[', if(g[1] = '-', '-', ''), if(trimLeft(g[2], '0') = '', '0', trimLeft(g[2], '0')), \
                                  '.', if(g[3] = '', '0', g[3]), 'e', if(g[4] = '', '0', g[4]), ']'), \
               [extractGroups({s}, '^([+-]?)([0-9]*)(?:\\\\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?$')]))[1], \
           NULL)"
    )
}

/// Epoch seconds (a Float64 expression) → Nullable(Int64) micros, rounded half away from zero
/// like `f64::round`, NULL outside years 1..=9999.
pub(crate) fn epoch_seconds(x: &str) -> String {
    format!(
        "arrayMap(m -> arrayMap(r -> if(r >= {lo} AND r <= {hi} \
             AND toInt64(least(greatest(r, -1e18), 1e18)) BETWEEN {min} AND {max}, \
             toNullable(toInt64(least(greatest(r, -1e18), 1e18))), NULL), \
           [trunc(m) + if(abs(m - trunc(m)) >= 0.5, sign(m), 0)])[1], [toFloat64({x}) * 1e6])[1]",
        lo = float_lit(MIN_MICROS as f64),
        hi = float_lit(MAX_MICROS as f64),
        min = MIN_MICROS,
        max = MAX_MICROS,
    )
}

/// The absolute date formats of §B.8 (`time::parse_absolute`) on a String expression:
/// Nullable(Int64) micros.
pub(crate) fn absolute_date(s: &str) -> String {
    let re = "'^([0-9]{4})-([0-9]{2})-([0-9]{2})(?:[Tt ]([0-9]{2}):([0-9]{2})(?::([0-9]{2})(?:\\\\.([0-9]{1,9}))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))?)?)?$'";
    // days_from_civil (Howard Hinnant), y >= 1 so integer division is floor division.
    let days = "arrayMap(yy -> arrayMap(era -> arrayMap(yoe -> \
                  era * 146097 + yoe * 365 + intDiv(yoe, 4) - intDiv(yoe, 100) \
                  + intDiv(153 * ((mo + 9) % 12) + 2, 5) + dd - 1 - 719468, \
                  [yy - era * 400])[1], [intDiv(yy, 400)])[1], [y - if(mo <= 2, 1, 0)])[1]";
    let dim = "multiIf(mo IN (4, 6, 9, 11), 30, mo = 2, if((y % 4 = 0 AND y % 100 != 0) OR y % 400 = 0, 29, 28), 31)";
    format!(
        "if(match({s}, {re}), arrayMap(g -> \
           arrayMap((y, mo, dd, hh, mi, ss, fr, oh, om, sg) -> \
             if(y >= 1 AND mo BETWEEN 1 AND 12 AND dd >= 1 AND dd <= {dim} AND hh <= 23 AND mi <= 59 \
                AND ss <= 59 AND oh <= 23 AND om <= 59, \
                arrayMap(t -> if(t BETWEEN {min} AND {max}, toNullable(t), NULL), \
                  [({days}) * 86400000000 + (hh * 3600 + mi * 60 + ss) * 1000000 + fr \
                   - sg * (oh * 3600 + om * 60) * 1000000])[1], \
                NULL), \
             [toInt64OrZero(g[1])], [toInt64OrZero(g[2])], [toInt64OrZero(g[3])], [toInt64OrZero(g[4])], \
             [toInt64OrZero(g[5])], [toInt64OrZero(g[6])], \
             [toInt64OrZero(rightPad(substring(g[7], 1, 6), 6, '0'))], \
             [toInt64OrZero(g[10])], [toInt64OrZero(g[11])], [if(g[9] = '-', -1, 1)])[1], \
           [extractGroups({s}, {re})])[1], NULL)",
        min = MIN_MICROS,
        max = MAX_MICROS,
    )
}

/// `semver::parse_version` on a String expression, then `OP` against a literal version, or the
/// half-open range [lo, hi): UInt8, false when unparsable.
pub(crate) fn semver_test(s: &str, test: &dyn Fn(&str) -> String) -> String {
    let ws = WHITE_SPACE_ITEMS.replace('\\', "\\\\");
    let trimmed = format!("replaceRegexpAll({s}, '^[{ws}]+|[{ws}]+$', '')");
    let core = format!("extract(replaceRegexpOne({trimmed}, '^[vV]', ''), '^[^+-]*')");
    let tuple = "tuple(assumeNotNull(a), assumeNotNull(b), assumeNotNull(c))";
    format!(
        "arrayMap(v -> if(match(v, '^(0|[1-9][0-9]*)(\\\\.(0|[1-9][0-9]*)){{0,2}}$'), \
           arrayMap(parts -> arrayMap((a, b, c) -> isNotNull(a) AND isNotNull(b) AND isNotNull(c) AND ({t}), \
             [toUInt64OrNull(parts[1])], \
             [if(length(parts) >= 2, toUInt64OrNull(parts[2]), toNullable(toUInt64(0)))], \
             [if(length(parts) >= 3, toUInt64OrNull(parts[3]), toNullable(toUInt64(0)))])[1], \
           [splitByChar('.', v)])[1], 0), [{core}])[1]",
        t = test(tuple),
    )
}

/// A version tuple literal.
pub(crate) fn version_lit(v: (u64, u64, u64)) -> String {
    format!(
        "tuple(toUInt64({}), toUInt64({}), toUInt64({}))",
        v.0, v.1, v.2
    )
}
