//! Instants as i64 microseconds since the Unix epoch (UTC). The public part is
//! [`parse_absolute`] and [`format_micros`] (see also [`crate::Timestamp`]); the rest (calendar
//! window arithmetic of SEMANTICS §C.2, the date formats of SEMANTICS §B.8 / §G, event timestamps
//! of CLI.md §2) is internal.
//!
//! Civil-date arithmetic is hand written (proleptic Gregorian calendar, Howard Hinnant's
//! `days_from_civil` / `civil_from_days`); nothing here panics on any input.

/// Microseconds since the Unix epoch, UTC.
pub type Micros = i64;

#[doc(hidden)]
/// A bound before year 1 (−∞).
pub const NEG_INF: Micros = i64::MIN;

#[doc(hidden)]
/// A bound after year 9999 (+∞).
pub const POS_INF: Micros = i64::MAX;

#[doc(hidden)]
/// The earliest valid instant, 0001-01-01T00:00:00Z.
pub const MIN_MICROS: Micros = -62_135_596_800_000_000;

#[doc(hidden)]
/// The latest valid instant, 9999-12-31T23:59:59.999999Z.
pub const MAX_MICROS: Micros = 253_402_300_799_999_999;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

#[doc(hidden)]
/// Window units of behavioral leaves (`time_interval`, `seq_time_interval`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// 60 seconds.
    Minute,
    /// 3600 seconds.
    Hour,
    /// 86400 seconds.
    Day,
    /// 604800 seconds.
    Week,
    /// A calendar month.
    Month,
    /// A calendar year.
    Year,
}

impl Unit {
    /// Parses the wire name ("minute", "hour", "day", "week", "month", "year"), exactly.
    pub fn from_wire(s: &str) -> Option<Unit> {
        match s {
            "minute" => Some(Unit::Minute),
            "hour" => Some(Unit::Hour),
            "day" => Some(Unit::Day),
            "week" => Some(Unit::Week),
            "month" => Some(Unit::Month),
            "year" => Some(Unit::Year),
            _ => None,
        }
    }

    /// The wire name of the unit.
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// Fixed length in seconds (month = 30 days, year = 365 days); only for the seq-vs-time check.
    pub fn approx_seconds(self) -> i64 {
        match self {
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 604_800,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        }
    }

    /// Exact length in seconds for fixed-duration units; None for month/year (calendar units).
    pub(crate) fn exact_seconds(self) -> Option<i64> {
        match self {
            Unit::Minute | Unit::Hour | Unit::Day | Unit::Week => Some(self.approx_seconds()),
            Unit::Month | Unit::Year => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Civil calendar helpers

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a civil date; callers keep |y| small (years 1..=10000 here).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Civil date of a day count since 1970-01-01 (any day count derived from an i64 of micros).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Splits an instant into (year, month, day, micros of the day).
fn split(t: Micros) -> (i64, u32, u32, i64) {
    let days = t.div_euclid(MICROS_PER_DAY);
    let tod = t.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    (y, m, d, tod)
}

/// Outcome of shifting an instant by whole units, before clamping to ±∞.
enum Shift {
    Value(i128),
    BeforeYear1,
    AfterYear9999,
}

/// Shifts t by `delta` units (negative = backwards); delta is |n| ≤ u64::MAX so i128 is exact.
fn shift(t: Micros, delta: i128, unit: Unit) -> Shift {
    if let Some(secs) = unit.exact_seconds() {
        let step = i128::from(secs) * i128::from(MICROS_PER_SECOND);
        return match delta
            .checked_mul(step)
            .and_then(|d| d.checked_add(i128::from(t)))
        {
            Some(v) => Shift::Value(v),
            None if delta < 0 => Shift::BeforeYear1,
            None => Shift::AfterYear9999,
        };
    }
    let (y, m, d, tod) = split(t);
    // The common case fits i64 arithmetic (128-bit division is several times slower).
    if let Ok(small) = i64::try_from(delta) {
        if small.unsigned_abs() < 1 << 40 {
            let months = if unit == Unit::Year {
                small * 12
            } else {
                small
            };
            let total = y * 12 + i64::from(m) - 1 + months;
            let ny = total.div_euclid(12);
            if ny < 1 {
                return Shift::BeforeYear1;
            }
            if ny > 9999 {
                return Shift::AfterYear9999;
            }
            let nm = (total.rem_euclid(12) + 1) as u32;
            let nd = d.min(days_in_month(ny, nm));
            return Shift::Value(i128::from(
                days_from_civil(ny, nm, nd) * MICROS_PER_DAY + tod,
            ));
        }
    }
    let months_per_unit: i128 = if unit == Unit::Year { 12 } else { 1 };
    let total = delta
        .checked_mul(months_per_unit)
        .and_then(|dm| dm.checked_add(i128::from(y) * 12 + i128::from(m) - 1));
    let Some(total) = total else {
        return if delta < 0 {
            Shift::BeforeYear1
        } else {
            Shift::AfterYear9999
        };
    };
    let ny = total.div_euclid(12);
    if ny < 1 {
        return Shift::BeforeYear1;
    }
    if ny > 9999 {
        return Shift::AfterYear9999;
    }
    let ny = ny as i64;
    let nm = (total.rem_euclid(12) + 1) as u32;
    let nd = d.min(days_in_month(ny, nm));
    let days = days_from_civil(ny, nm, nd);
    Shift::Value(i128::from(days) * i128::from(MICROS_PER_DAY) + i128::from(tod))
}

#[doc(hidden)]
/// now minus n units. minute/hour/day/week exact durations; month/year calendar subtraction in
/// ONE step keeping the time of day and clamping the day to the end of the target month.
/// Before 0001-01-01T00:00:00Z (or any overflow) → NEG_INF; now NEG_INF → NEG_INF;
/// now POS_INF → POS_INF.
pub fn back(now: Micros, n: u64, unit: Unit) -> Micros {
    if now == NEG_INF || now == POS_INF {
        return now;
    }
    match shift(now, -i128::from(n), unit) {
        Shift::BeforeYear1 => NEG_INF,
        Shift::AfterYear9999 => POS_INF,
        Shift::Value(v) if v < i128::from(MIN_MICROS) => NEG_INF,
        Shift::Value(v) => i64::try_from(v).unwrap_or(POS_INF),
    }
}

#[doc(hidden)]
/// t plus n units, same arithmetic as `back`; after 9999-12-31T23:59:59.999999Z or overflow →
/// POS_INF; t NEG_INF → NEG_INF; t POS_INF → POS_INF.
pub fn forward(t: Micros, n: u64, unit: Unit) -> Micros {
    if t == NEG_INF || t == POS_INF {
        return t;
    }
    match shift(t, i128::from(n), unit) {
        Shift::BeforeYear1 => NEG_INF,
        Shift::AfterYear9999 => POS_INF,
        Shift::Value(v) if v > i128::from(MAX_MICROS) => POS_INF,
        Shift::Value(v) => i64::try_from(v).unwrap_or(NEG_INF),
    }
}

// ---------------------------------------------------------------------------------------------
// Absolute date parsing

/// Reads `len` ASCII digits at `at` as a number.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let slice = b.get(at..at.checked_add(len)?)?;
    let mut v: u32 = 0;
    for &c in slice {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u32::from(c - b'0'))?;
    }
    Some(v)
}

fn expect_byte(b: &[u8], at: usize, want: u8) -> Option<()> {
    (b.get(at) == Some(&want)).then_some(())
}

/// The absolute date formats of SEMANTICS §B.8 / §G: RFC 3339 with `Z`/`z` or `±HH:MM` offset
/// (honoured; `+HHMM` rejected; seconds required with an offset), `T`/`t`/space separator;
/// `YYYY-MM-DD` (midnight UTC); `YYYY-MM-DD HH:MM[:SS[.f{1,9}]]` (or `T`/`t`), no offset = UTC.
/// Fractions truncated to microseconds; second 60 rejected; the instant must lie in years
/// 1..=9999. Returns None when not valid.
pub fn parse_absolute(s: &str) -> Option<Micros> {
    let b = s.as_bytes();
    // Date: YYYY-MM-DD
    let year = digits(b, 0, 4)?;
    expect_byte(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    expect_byte(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    let year = i64::from(year);
    if year < 1 || !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let date_micros = days_from_civil(year, month, day) * MICROS_PER_DAY;
    if b.len() == 10 {
        return Some(date_micros);
    }
    // Separator and HH:MM
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    expect_byte(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut pos = 16;
    let mut second = 0u32;
    let mut frac_micros = 0u32;
    let mut has_seconds = false;
    if b.get(pos) == Some(&b':') {
        second = digits(b, pos + 1, 2)?;
        if second > 59 {
            return None;
        }
        has_seconds = true;
        pos += 3;
        if b.get(pos) == Some(&b'.') {
            pos += 1;
            let start = pos;
            while b.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            let n = pos - start;
            if !(1..=9).contains(&n) {
                return None;
            }
            // Truncate to six digits, padding shorter fractions with zeros.
            let kept = n.min(6);
            let v = digits(b, start, kept)?;
            frac_micros = v * 10u32.pow((6 - kept) as u32);
        }
    }
    // Optional offset (seconds required when present).
    let offset_secs: i64 = match b.get(pos) {
        None => 0,
        Some(b'Z' | b'z') if has_seconds && b.len() == pos + 1 => 0,
        Some(&sign @ (b'+' | b'-')) if has_seconds && b.len() == pos + 6 => {
            let oh = digits(b, pos + 1, 2)?;
            expect_byte(b, pos + 3, b':')?;
            let om = digits(b, pos + 4, 2)?;
            if oh > 23 || om > 59 {
                return None;
            }
            let secs = i64::from(oh) * 3600 + i64::from(om) * 60;
            if sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let local = date_micros
        + (i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)) * MICROS_PER_SECOND
        + i64::from(frac_micros);
    let t = local - offset_secs * MICROS_PER_SECOND;
    (MIN_MICROS..=MAX_MICROS).contains(&t).then_some(t)
}

// ---------------------------------------------------------------------------------------------
// Filter date values

#[doc(hidden)]
/// Relative date units of §B.8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelUnit {
    /// `h`: 3600 seconds.
    Hour,
    /// `d`: 86400 seconds.
    Day,
    /// `w`: 604800 seconds.
    Week,
    /// `m`: a calendar month.
    Month,
    /// `y`: a calendar year.
    Year,
}

impl RelUnit {
    /// The window unit with the same arithmetic.
    pub fn unit(self) -> Unit {
        match self {
            RelUnit::Hour => Unit::Hour,
            RelUnit::Day => Unit::Day,
            RelUnit::Week => Unit::Week,
            RelUnit::Month => Unit::Month,
            RelUnit::Year => Unit::Year,
        }
    }
}

#[doc(hidden)]
/// A parsed filter date value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateSpec {
    /// A fixed instant.
    Absolute(Micros),
    /// `amount` units before now.
    Relative {
        /// Number of units (< 10000).
        amount: u32,
        /// The unit.
        unit: RelUnit,
    },
}

/// Parses `^-?([0-9]+)([hdwmy])$` with amount < 10000 as a relative spec.
fn parse_relative(s: &str) -> Option<DateSpec> {
    let body = s.strip_prefix('-').unwrap_or(s);
    let (&last, num) = body.as_bytes().split_last()?;
    let unit = match last {
        b'h' => RelUnit::Hour,
        b'd' => RelUnit::Day,
        b'w' => RelUnit::Week,
        b'm' => RelUnit::Month,
        b'y' => RelUnit::Year,
        _ => return None,
    };
    if num.is_empty() || !num.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut amount: u32 = 0;
    for &c in num {
        amount = amount
            .saturating_mul(10)
            .saturating_add(u32::from(c - b'0'));
    }
    (amount < 10_000).then_some(DateSpec::Relative { amount, unit })
}

#[doc(hidden)]
/// `^-?(\d+)([hdwmy])$` (ASCII digits) with amount < 10000 → Relative; else parse_absolute →
/// Absolute; else None.
pub fn parse_date_spec(s: &str) -> Option<DateSpec> {
    parse_relative(s).or_else(|| parse_absolute(s).map(DateSpec::Absolute))
}

impl DateSpec {
    /// The instant: Absolute as is; Relative = now minus amount units (as in `back`); before
    /// year 1 → NEG_INF.
    pub fn resolve(&self, now: Micros) -> Micros {
        match *self {
            DateSpec::Absolute(t) => t,
            DateSpec::Relative { amount, unit } => back(now, u64::from(amount), unit.unit()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Epoch numbers, timestamps, person values

/// Rounds a float count of micros to an instant in years 1..=9999.
fn rounded_to_micros(m: f64) -> Option<Micros> {
    if !m.is_finite() {
        return None;
    }
    let m = m.round();
    // Coarse float check first (so the saturating cast cannot mislead), then the exact one.
    if m < MIN_MICROS as f64 || m > MAX_MICROS as f64 {
        return None;
    }
    let t = m as i64;
    (MIN_MICROS..=MAX_MICROS).contains(&t).then_some(t)
}

#[doc(hidden)]
/// JSON number of epoch seconds (fraction allowed) → micros rounded to nearest; None if not
/// finite or outside years 1..=9999.
pub fn seconds_f64_to_micros(x: f64) -> Option<Micros> {
    rounded_to_micros(x * 1e6)
}

#[doc(hidden)]
/// Event `timestamp` per CLI.md §2: an absolute date string, or a JSON number of seconds when
/// |n| < 1e11, else milliseconds; rounded to micros; anything else → Err(message).
pub fn parse_timestamp(v: &serde_json::Value) -> Result<Micros, String> {
    match v {
        serde_json::Value::String(s) => {
            parse_absolute(s).ok_or_else(|| format!("timestamp {v} is not a valid date-time"))
        }
        serde_json::Value::Number(n) => {
            let parsed = n.as_f64().and_then(|x| {
                if x.abs() < 1e11 {
                    seconds_f64_to_micros(x)
                } else if let Some(ms) = n.as_i64() {
                    // Integer milliseconds: exact (f64 would lose the last digits near 9999).
                    ms.checked_mul(1_000)
                        .filter(|t| (MIN_MICROS..=MAX_MICROS).contains(t))
                } else {
                    rounded_to_micros(x * 1e3)
                }
            });
            parsed.ok_or_else(|| format!("timestamp {v} is out of range"))
        }
        _ => Err(format!("timestamp {v} is not a valid date-time")),
    }
}

#[doc(hidden)]
/// A person-property date value (§B.8): a JSON number or numeric string = epoch seconds, else a
/// string in the absolute formats; anything else or out of year range → None.
pub fn person_date(v: &serde_json::Value) -> Option<Micros> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().and_then(seconds_f64_to_micros),
        serde_json::Value::String(s) => match s.parse::<f64>() {
            Ok(x) if x.is_finite() => seconds_f64_to_micros(x),
            _ => parse_absolute(s),
        },
        _ => None,
    }
}

/// RFC 3339 UTC with six fraction digits and `Z` (`2024-06-15T12:00:00.000000Z`);
/// NEG_INF/POS_INF print as "-infinity"/"infinity".
pub fn format_micros(t: Micros) -> String {
    if t == NEG_INF {
        return "-infinity".to_string();
    }
    if t == POS_INF {
        return "infinity".to_string();
    }
    let (y, m, d, tod) = split(t);
    let secs = tod / MICROS_PER_SECOND;
    let frac = tod % MICROS_PER_SECOND;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        y,
        m,
        d,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60,
        frac
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> Micros {
        parse_absolute(s).unwrap_or_else(|| panic!("should parse: {s}"))
    }

    #[test]
    fn constants_and_civil() {
        assert_eq!(MIN_MICROS, days_from_civil(1, 1, 1) * MICROS_PER_DAY);
        assert_eq!(
            MAX_MICROS,
            days_from_civil(10000, 1, 1) * MICROS_PER_DAY - 1
        );
        assert_eq!(MIN_MICROS, -62_135_596_800 * 1_000_000);
        assert_eq!(MAX_MICROS, 253_402_300_799 * 1_000_000 + 999_999);
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        // Round trip over a wide span of days, and agreement with chrono.
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let mut z = days_from_civil(1, 1, 1);
        while z <= days_from_civil(9999, 12, 31) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
            let c = epoch + chrono::Duration::days(z);
            use chrono::Datelike;
            assert_eq!((y, m, d), (i64::from(c.year()), c.month(), c.day()));
            z += 37;
        }
        assert_eq!(format_micros(MIN_MICROS), "0001-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(MAX_MICROS), "9999-12-31T23:59:59.999999Z");
    }

    #[test]
    fn units() {
        for u in [
            Unit::Minute,
            Unit::Hour,
            Unit::Day,
            Unit::Week,
            Unit::Month,
            Unit::Year,
        ] {
            assert_eq!(Unit::from_wire(u.as_str()), Some(u));
        }
        assert_eq!(Unit::from_wire("Day"), None);
        assert_eq!(Unit::from_wire("days"), None);
        assert_eq!(Unit::from_wire(" day"), None);
        assert_eq!(Unit::Minute.approx_seconds(), 60);
        assert_eq!(Unit::Week.approx_seconds(), 604_800);
        assert_eq!(Unit::Month.approx_seconds(), 2_592_000);
        assert_eq!(Unit::Year.approx_seconds(), 31_536_000);
    }

    #[test]
    fn back_exact_units() {
        let now = at("2024-06-15T12:00:00Z");
        assert_eq!(now, 1_718_452_800_000_000);
        assert_eq!(back(now, 0, Unit::Day), now);
        assert_eq!(back(now, 1, Unit::Minute), at("2024-06-15T11:59:00Z"));
        assert_eq!(back(now, 25, Unit::Hour), at("2024-06-14T11:00:00Z"));
        assert_eq!(back(now, 30, Unit::Day), at("2024-05-16T12:00:00Z"));
        assert_eq!(back(now, 2, Unit::Week), at("2024-06-01T12:00:00Z"));
        assert_eq!(forward(now, 3, Unit::Day), at("2024-06-18T12:00:00Z"));
        assert_eq!(forward(now, 90, Unit::Minute), at("2024-06-15T13:30:00Z"));
    }

    #[test]
    fn back_calendar_units() {
        let cases = [
            (
                "2024-03-31T10:20:30.5Z",
                1,
                Unit::Month,
                "2024-02-29T10:20:30.500000Z",
            ),
            (
                "2024-03-31T10:20:30Z",
                2,
                Unit::Month,
                "2024-01-31T10:20:30.000000Z",
            ),
            (
                "2023-03-31T00:00:00Z",
                1,
                Unit::Month,
                "2023-02-28T00:00:00.000000Z",
            ),
            (
                "2024-02-29T23:59:59Z",
                1,
                Unit::Year,
                "2023-02-28T23:59:59.000000Z",
            ),
            (
                "2024-02-29T00:00:00Z",
                4,
                Unit::Year,
                "2020-02-29T00:00:00.000000Z",
            ),
            (
                "2024-01-15T08:00:00Z",
                1,
                Unit::Month,
                "2023-12-15T08:00:00.000000Z",
            ),
            (
                "2024-01-15T08:00:00Z",
                13,
                Unit::Month,
                "2022-12-15T08:00:00.000000Z",
            ),
            (
                "2024-05-31T08:00:00Z",
                1,
                Unit::Month,
                "2024-04-30T08:00:00.000000Z",
            ),
            (
                "2024-05-31T08:00:00Z",
                12,
                Unit::Month,
                "2023-05-31T08:00:00.000000Z",
            ),
            (
                "0001-12-31T00:00:00Z",
                11,
                Unit::Month,
                "0001-01-31T00:00:00.000000Z",
            ),
            (
                "2024-06-15T12:00:00Z",
                2023,
                Unit::Year,
                "0001-06-15T12:00:00.000000Z",
            ),
        ];
        for (from, n, unit, want) in cases {
            assert_eq!(
                format_micros(back(at(from), n, unit)),
                want,
                "{from} - {n} {unit:?}"
            );
        }
        let fwd = [
            (
                "2024-01-31T10:00:00Z",
                1,
                Unit::Month,
                "2024-02-29T10:00:00.000000Z",
            ),
            (
                "2023-01-31T10:00:00Z",
                1,
                Unit::Month,
                "2023-02-28T10:00:00.000000Z",
            ),
            (
                "2024-02-29T10:00:00Z",
                1,
                Unit::Year,
                "2025-02-28T10:00:00.000000Z",
            ),
            (
                "2024-12-31T10:00:00Z",
                2,
                Unit::Month,
                "2025-02-28T10:00:00.000000Z",
            ),
            (
                "9999-11-30T23:59:59.999999Z",
                1,
                Unit::Month,
                "9999-12-30T23:59:59.999999Z",
            ),
        ];
        for (from, n, unit, want) in fwd {
            assert_eq!(
                format_micros(forward(at(from), n, unit)),
                want,
                "{from} + {n} {unit:?}"
            );
        }
    }

    #[test]
    fn back_calendar_matches_chrono_one_step() {
        use chrono::{Months, NaiveDate};
        let mut d = NaiveDate::from_ymd_opt(1999, 1, 1).unwrap();
        let end = NaiveDate::from_ymd_opt(2002, 1, 1).unwrap();
        while d < end {
            let t = days_from_civil(
                i64::from(chrono::Datelike::year(&d)),
                chrono::Datelike::month(&d),
                chrono::Datelike::day(&d),
            ) * MICROS_PER_DAY
                + 3_723_000_004;
            for n in [1u32, 2, 3, 11, 12, 13, 25, 48] {
                let want = d.checked_sub_months(Months::new(n)).unwrap();
                let want_t = days_from_civil(
                    i64::from(chrono::Datelike::year(&want)),
                    chrono::Datelike::month(&want),
                    chrono::Datelike::day(&want),
                ) * MICROS_PER_DAY
                    + 3_723_000_004;
                assert_eq!(back(t, u64::from(n), Unit::Month), want_t);
                let want = d.checked_add_months(Months::new(n)).unwrap();
                let want_t = days_from_civil(
                    i64::from(chrono::Datelike::year(&want)),
                    chrono::Datelike::month(&want),
                    chrono::Datelike::day(&want),
                ) * MICROS_PER_DAY
                    + 3_723_000_004;
                assert_eq!(forward(t, u64::from(n), Unit::Month), want_t);
            }
            d = d.succ_opt().unwrap();
        }
    }

    #[test]
    fn infinities_and_overflow() {
        let now = at("2024-06-15T12:00:00Z");
        for u in [
            Unit::Minute,
            Unit::Hour,
            Unit::Day,
            Unit::Week,
            Unit::Month,
            Unit::Year,
        ] {
            assert_eq!(back(now, u64::MAX, u), NEG_INF, "{u:?}");
            assert_eq!(back(now, 10_000_000_000, u), NEG_INF, "{u:?}");
            assert_eq!(forward(now, u64::MAX, u), POS_INF, "{u:?}");
            assert_eq!(forward(now, 10_000_000_000, u), POS_INF, "{u:?}");
            assert_eq!(back(NEG_INF, 1, u), NEG_INF);
            assert_eq!(back(NEG_INF, 0, u), NEG_INF);
            assert_eq!(back(POS_INF, 1, u), POS_INF);
            assert_eq!(forward(NEG_INF, 1, u), NEG_INF);
            assert_eq!(forward(POS_INF, 1, u), POS_INF);
            assert_eq!(forward(POS_INF, u64::MAX, u), POS_INF);
            // Odd inputs never panic.
            for t in [
                i64::MIN + 1,
                i64::MAX - 1,
                0,
                -1,
                MIN_MICROS - 1,
                MAX_MICROS + 1,
            ] {
                let _ = back(t, u64::MAX, u);
                let _ = forward(t, u64::MAX, u);
                let _ = back(t, 7, u);
                let _ = forward(t, 7, u);
                let _ = format_micros(t);
            }
        }
        // Boundaries at year 1 / year 9999.
        assert_eq!(back(MIN_MICROS, 0, Unit::Minute), MIN_MICROS);
        assert_eq!(back(MIN_MICROS + 60_000_000, 1, Unit::Minute), MIN_MICROS);
        assert_eq!(back(MIN_MICROS + 59_999_999, 1, Unit::Minute), NEG_INF);
        assert_eq!(back(at("0001-02-01T00:00:00Z"), 1, Unit::Month), MIN_MICROS);
        assert_eq!(back(at("0001-12-31T00:00:00Z"), 12, Unit::Month), NEG_INF);
        assert_eq!(back(at("0001-12-31T00:00:00Z"), 1, Unit::Year), NEG_INF);
        assert_eq!(back(at("2024-06-15T12:00:00Z"), 2024, Unit::Year), NEG_INF);
        assert_eq!(
            forward(MAX_MICROS - 60_000_001, 1, Unit::Minute),
            MAX_MICROS - 1
        );
        assert_eq!(
            forward(MAX_MICROS - 60_000_000, 1, Unit::Minute),
            MAX_MICROS
        );
        assert_eq!(forward(MAX_MICROS - 59_999_999, 1, Unit::Minute), POS_INF);
        assert_eq!(forward(at("9999-12-01T00:00:00Z"), 1, Unit::Month), POS_INF);
        assert_eq!(
            forward(at("9998-12-31T00:00:00Z"), 1, Unit::Year),
            at("9999-12-31T00:00:00Z")
        );
    }

    #[test]
    fn parse_absolute_accepts() {
        assert_eq!(at("1970-01-01"), 0);
        assert_eq!(at("2024-06-15"), 1_718_409_600_000_000);
        assert_eq!(at("2024-06-15T12:00:00Z"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15t12:00:00z"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15 12:00:00Z"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15T12:00"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15 12:00"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15t12:00:00"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15T14:30:00+02:30"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15T09:00:00-03:00"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15T12:00:00-00:00"), 1_718_452_800_000_000);
        assert_eq!(at("2024-06-15T12:00:00.5"), 1_718_452_800_500_000);
        assert_eq!(at("2024-06-15T12:00:00.000001Z"), 1_718_452_800_000_001);
        assert_eq!(at("2024-06-15T12:00:00.123456789Z"), 1_718_452_800_123_456);
        assert_eq!(
            at("2024-06-15T12:00:00.9999999+00:00"),
            1_718_452_800_999_999
        );
        assert_eq!(at("2024-02-29"), at("2024-02-28") + MICROS_PER_DAY);
        assert_eq!(at("2000-02-29T23:59:59Z"), at("2000-03-01") - 1_000_000);
        assert_eq!(at("1969-12-31T23:59:59.999999Z"), -1);
        assert_eq!(at("0001-01-01"), MIN_MICROS);
        assert_eq!(at("9999-12-31T23:59:59.999999Z"), MAX_MICROS);
        assert_eq!(at("0001-01-01T00:00:00-01:00"), MIN_MICROS + 3_600_000_000);
        assert_eq!(at("9999-12-31T23:59:59+01:00"), MAX_MICROS - 3_600_999_999);
        assert_eq!(at("2024-06-15T00:30:00+23:59"), at("2024-06-14T00:31:00Z"));
    }

    #[test]
    fn parse_absolute_agrees_with_chrono_rfc3339() {
        for s in [
            "2024-06-15T12:00:00Z",
            "2024-06-15T14:30:00+02:30",
            "1999-12-31T23:59:59.123456-11:45",
            "2001-03-01 00:00:00.1+05:00",
        ] {
            let c = chrono::DateTime::parse_from_rfc3339(s).unwrap();
            assert_eq!(parse_absolute(s), Some(c.timestamp_micros()), "{s}");
        }
    }

    #[test]
    fn parse_absolute_rejects() {
        for s in [
            "",
            "2024",
            "2024-06",
            "2024-6-15",
            "24-06-15",
            "02024-06-15",
            "0000-01-01",
            "0000-12-31T23:00:00-02:00",
            "2024-00-10",
            "2024-13-10",
            "2024-06-00",
            "2024-06-31",
            "2023-02-29",
            "1900-02-29",
            " 2024-06-15",
            "2024-06-15 ",
            "2024-06-15T",
            "2024-06-15X12:00:00",
            "2024-06-15T12",
            "2024-06-15T12:0",
            "2024-06-15T24:00:00",
            "2024-06-15T12:60:00",
            "2024-06-15T23:59:60",
            "2024-06-15T23:59:60Z",
            "2024-06-15T12:00:00.",
            "2024-06-15T12:00:00.Z",
            "2024-06-15T12:00:00.1234567890Z",
            "2024-06-15T12:00.5",
            "2024-06-15T12:00Z",
            "2024-06-15T12:00+02:00",
            "2024-06-15Z",
            "2024-06-15T12:00:00+0200",
            "2024-06-15T12:00:00+02",
            "2024-06-15T12:00:00+02:00:00",
            "2024-06-15T12:00:00+24:00",
            "2024-06-15T12:00:00+02:60",
            "2024-06-15T12:00:00 +02:00",
            "2024-06-15T12:00:00ZZ",
            "2024-06-15T12:00:00UTC",
            "2024-06-15T12:00:00Z ",
            "2024-06-15T12:00:00-",
            "9999-12-31T23:59:59-00:01",
            "10000-01-01",
            "2024-06-15T1:00:00",
            "2024-06-15T12:00:0",
            "２０２４-06-15",
            "2024-06-15T12:00:00.１",
            "+2024-06-15",
            "-2024-06-15",
            "-7d",
            "now",
        ] {
            assert_eq!(parse_absolute(s), None, "{s:?}");
        }
    }

    #[test]
    fn date_specs() {
        let rel = |amount, unit| Some(DateSpec::Relative { amount, unit });
        assert_eq!(parse_date_spec("7d"), rel(7, RelUnit::Day));
        assert_eq!(parse_date_spec("-7d"), rel(7, RelUnit::Day));
        assert_eq!(parse_date_spec("0h"), rel(0, RelUnit::Hour));
        assert_eq!(parse_date_spec("-2w"), rel(2, RelUnit::Week));
        assert_eq!(parse_date_spec("1m"), rel(1, RelUnit::Month));
        assert_eq!(parse_date_spec("9999y"), rel(9999, RelUnit::Year));
        assert_eq!(parse_date_spec("0009999y"), rel(9999, RelUnit::Year));
        assert_eq!(parse_date_spec("10000y"), None);
        assert_eq!(parse_date_spec("99999999999999999999999999d"), None);
        for s in [
            "d", "-d", "--7d", "+7d", "7D", "7s", "7", " 7d", "7d ", "7 d", "1.5d", "٣d",
        ] {
            assert_eq!(parse_date_spec(s), None, "{s:?}");
        }
        assert_eq!(
            parse_date_spec("2024-06-15"),
            Some(DateSpec::Absolute(1_718_409_600_000_000))
        );
        assert_eq!(parse_date_spec("2024-13-15"), None);

        let now = at("2024-03-31T10:00:00Z");
        let r = |s: &str| parse_date_spec(s).map(|d| d.resolve(now));
        assert_eq!(r("1m"), Some(at("2024-02-29T10:00:00Z")));
        assert_eq!(r("-2m"), Some(at("2024-01-31T10:00:00Z")));
        assert_eq!(r("1y"), Some(at("2023-03-31T10:00:00Z")));
        assert_eq!(r("36h"), Some(at("2024-03-29T22:00:00Z")));
        assert_eq!(r("2d"), Some(at("2024-03-29T10:00:00Z")));
        assert_eq!(r("1w"), Some(at("2024-03-24T10:00:00Z")));
        assert_eq!(r("0d"), Some(now));
        assert_eq!(r("2024y"), Some(NEG_INF));
        assert_eq!(r("2023y"), Some(at("0001-03-31T10:00:00Z")));
        assert_eq!(r("9999m"), Some(at("1190-12-31T10:00:00Z")));
        assert_eq!(r("2024-01-01"), Some(at("2024-01-01")));
        assert_eq!(DateSpec::Absolute(5).resolve(now), 5);
        assert_eq!(RelUnit::Week.unit(), Unit::Week);
    }

    #[test]
    fn epoch_seconds() {
        assert_eq!(seconds_f64_to_micros(0.0), Some(0));
        assert_eq!(seconds_f64_to_micros(1.5), Some(1_500_000));
        assert_eq!(seconds_f64_to_micros(-1.5), Some(-1_500_000));
        assert_eq!(seconds_f64_to_micros(0.000_000_4), Some(0));
        assert_eq!(seconds_f64_to_micros(0.000_000_6), Some(1));
        assert_eq!(
            seconds_f64_to_micros(1_718_452_800.25),
            Some(1_718_452_800_250_000)
        );
        assert_eq!(seconds_f64_to_micros(-62_135_596_800.0), Some(MIN_MICROS));
        assert_eq!(seconds_f64_to_micros(-62_135_596_801.0), None);
        assert_eq!(
            seconds_f64_to_micros(253_402_300_799.0),
            Some(253_402_300_799_000_000)
        );
        assert_eq!(seconds_f64_to_micros(253_402_300_800.0), None);
        assert_eq!(seconds_f64_to_micros(f64::NAN), None);
        assert_eq!(seconds_f64_to_micros(f64::INFINITY), None);
        assert_eq!(seconds_f64_to_micros(f64::NEG_INFINITY), None);
        assert_eq!(seconds_f64_to_micros(f64::MAX), None);
        assert_eq!(seconds_f64_to_micros(-f64::MAX), None);
        assert_eq!(seconds_f64_to_micros(1e300), None);
    }

    #[test]
    fn timestamps() {
        let ok = |v: serde_json::Value| parse_timestamp(&v);
        assert_eq!(ok(json!("2024-06-15T12:00:00Z")), Ok(1_718_452_800_000_000));
        assert_eq!(
            ok(json!("2024-06-15 14:00:00+02:00")),
            Ok(1_718_452_800_000_000)
        );
        assert_eq!(ok(json!("2024-06-15")), Ok(1_718_409_600_000_000));
        assert_eq!(ok(json!(1_718_452_800)), Ok(1_718_452_800_000_000));
        assert_eq!(ok(json!(1_718_452_800.5)), Ok(1_718_452_800_500_000));
        assert_eq!(ok(json!(1_718_452_800_123u64)), Ok(1_718_452_800_123_000));
        assert_eq!(ok(json!(1_718_452_800_123.4)), Ok(1_718_452_800_123_400));
        assert_eq!(ok(json!(-5)), Ok(-5_000_000));
        // |n| < 1e11 is seconds; 1e11 and above is milliseconds.
        assert_eq!(ok(json!(99_999_999_999i64)), Ok(99_999_999_999_000_000));
        assert_eq!(ok(json!(100_000_000_000i64)), Ok(100_000_000_000_000));
        assert_eq!(ok(json!(-100_000_000_000i64)), Ok(-100_000_000_000_000));
        assert_eq!(ok(json!(0)), Ok(0));
        assert_eq!(
            ok(json!(1_000_000_000_000.000_4)),
            Ok(1_000_000_000_000_000)
        );
        assert_eq!(ok(json!(-62_135_596_800_000i64)), Ok(MIN_MICROS));
        assert!(ok(json!(-62_135_596_800_001i64)).is_err());
        assert_eq!(
            ok(json!(253_402_300_799_999i64)),
            Ok(253_402_300_799_999_000)
        );
        assert_eq!(
            ok(json!(253_402_300_800_000i64)),
            Err("timestamp 253402300800000 is out of range".to_string())
        );
        assert_eq!(
            ok(json!(1e30)),
            Err("timestamp 1e+30 is out of range".to_string())
        );
        assert_eq!(
            ok(json!(u64::MAX)).map_err(|e| e.contains("out of range")),
            Err(true)
        );
        assert_eq!(
            ok(json!(i64::MIN)).map_err(|e| e.contains("out of range")),
            Err(true)
        );
        assert_eq!(
            ok(json!("abc")),
            Err("timestamp \"abc\" is not a valid date-time".to_string())
        );
        assert!(ok(json!("0000-01-01")).is_err());
        assert!(ok(json!("1718452800")).is_err());
        assert!(ok(json!("7d")).is_err());
        for v in [json!(null), json!(true), json!([1]), json!({"a": 1})] {
            let e = parse_timestamp(&v).unwrap_err();
            assert!(
                e.starts_with("timestamp ") && e.ends_with("is not a valid date-time"),
                "{e}"
            );
        }
    }

    #[test]
    fn person_dates() {
        let p = |v: serde_json::Value| person_date(&v);
        assert_eq!(p(json!("2024")), Some(2_024_000_000));
        assert_eq!(format_micros(2_024_000_000), "1970-01-01T00:33:44.000000Z");
        assert_eq!(p(json!(1_718_452_800)), Some(1_718_452_800_000_000));
        assert_eq!(p(json!(1.25)), Some(1_250_000));
        assert_eq!(p(json!("1.25")), Some(1_250_000));
        assert_eq!(p(json!("-1e3")), Some(-1_000_000_000));
        assert_eq!(p(json!("+5")), Some(5_000_000));
        assert_eq!(p(json!(".5")), Some(500_000));
        // Milliseconds are not special for person values: seconds always.
        assert_eq!(p(json!(1_718_452_800_000i64)), None);
        assert_eq!(p(json!(253_402_300_799i64)), Some(253_402_300_799_000_000));
        assert_eq!(
            p(json!("2024-06-15T12:00:00Z")),
            Some(1_718_452_800_000_000)
        );
        assert_eq!(p(json!("2024-06-15")), Some(1_718_409_600_000_000));
        for v in [
            json!("inf"),
            json!("NaN"),
            json!("infinity"),
            json!("1e400"),
            json!(" 5"),
            json!("7d"),
            json!("abc"),
            json!(""),
            json!("0000-01-01"),
            json!(1e20),
            json!(null),
            json!(true),
            json!([1]),
            json!({}),
        ] {
            assert_eq!(person_date(&v), None, "{v}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(format_micros(-1), "1969-12-31T23:59:59.999999Z");
        assert_eq!(
            format_micros(1_718_452_800_000_000),
            "2024-06-15T12:00:00.000000Z"
        );
        assert_eq!(
            format_micros(at("2024-02-29T01:02:03.000456Z")),
            "2024-02-29T01:02:03.000456Z"
        );
        assert_eq!(format_micros(NEG_INF), "-infinity");
        assert_eq!(format_micros(POS_INF), "infinity");
        for s in [
            "0001-01-01T00:00:00.000000Z",
            "9999-12-31T23:59:59.999999Z",
            "1600-02-29T12:34:56.789012Z",
        ] {
            assert_eq!(format_micros(at(s)), s);
        }
    }
}

#[cfg(test)]
mod fuzz_tests {
    use super::*;

    /// Deterministic pseudo-random strings over date-ish characters: nothing may panic, and
    /// whatever parses must be in range and survive a format/parse round trip.
    #[test]
    fn no_panics_on_noise() {
        let alphabet = b"0123456789-:.+TtZz dmyhw*v^~";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let templates = [
            "2024-06-15T12:34:56.123456789+05:30",
            "1999-02-28 23:59",
            "7d",
        ];
        for i in 0..200_000u32 {
            let mut s: Vec<u8> = templates[(i % 3) as usize].as_bytes().to_vec();
            let edits = next() % 4 + 1;
            for _ in 0..edits {
                let r = next();
                let pos = (r % (s.len() as u64 + 1)) as usize;
                let c = alphabet[((r >> 20) % alphabet.len() as u64) as usize];
                match (r >> 40) % 3 {
                    0 if pos < s.len() => s[pos] = c,
                    1 if pos < s.len() => {
                        s.remove(pos);
                    }
                    _ => s.insert(pos, c),
                }
            }
            let Ok(text) = String::from_utf8(s) else {
                continue;
            };
            if let Some(t) = parse_absolute(&text) {
                assert!((MIN_MICROS..=MAX_MICROS).contains(&t), "{text}");
                assert_eq!(parse_absolute(&format_micros(t)), Some(t), "{text}");
            }
            if let Some(spec) = parse_date_spec(&text) {
                let _ = spec.resolve(0);
                let _ = spec.resolve(MIN_MICROS);
            }
            let _ = person_date(&serde_json::Value::String(text));
        }
    }
}
