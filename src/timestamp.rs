//! [`Timestamp`]: the one instant type of the public API.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::time::{format_micros, parse_absolute, Micros, MAX_MICROS, MIN_MICROS};

/// An instant: whole microseconds since the Unix epoch, UTC — the resolution of every window,
/// event time and date comparison the engine makes.
///
/// Build one from a [`SystemTime`], from text in the `CLI.md` §2 formats (RFC 3339 with an
/// offset, or a naive date / date-time taken as UTC) with [`str::parse`], or from microseconds
/// with [`Timestamp::from_micros`] (also `From<i64>`, so APIs taking `impl Into<Timestamp>` accept
/// plain microseconds too). It prints as RFC 3339 UTC with six fraction digits
/// (`2024-06-15T12:00:00.000000Z`), and serialises as that string.
///
/// ```
/// use cohort_engine::Timestamp;
///
/// let t: Timestamp = "2024-06-15T14:00:00+02:00".parse()?;
/// assert_eq!(t.to_string(), "2024-06-15T12:00:00.000000Z");
/// assert_eq!(t.as_micros(), 1_718_452_800_000_000);
/// assert_eq!(Timestamp::from_micros(0).to_string(), "1970-01-01T00:00:00.000000Z");
/// # Ok::<(), cohort_engine::ParseTimestampError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(Micros);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// The instant `micros` microseconds after the Unix epoch (before it when negative).
    pub const fn from_micros(micros: i64) -> Timestamp {
        Timestamp(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The current time of the system clock.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// This instant moved by `micros` microseconds (saturating at the i64 range).
    pub const fn saturating_add_micros(self, micros: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(micros))
    }
}

impl From<i64> for Timestamp {
    fn from(micros: i64) -> Timestamp {
        Timestamp(micros)
    }
}

impl From<Timestamp> for i64 {
    fn from(t: Timestamp) -> i64 {
        t.0
    }
}

impl From<SystemTime> for Timestamp {
    /// Truncated to whole microseconds; instants beyond ±292,000 years saturate.
    fn from(t: SystemTime) -> Timestamp {
        let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timestamp(micros(d)),
            Err(e) => Timestamp(micros(e.duration()).saturating_neg()),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> SystemTime {
        let d = Duration::from_micros(t.0.unsigned_abs());
        if t.0 >= 0 {
            UNIX_EPOCH + d
        } else {
            UNIX_EPOCH - d
        }
    }
}

/// Text that is not an instant in the `CLI.md` §2 formats (or lies outside years 1..=9999).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a timestamp: {text:?} (expected RFC 3339, or a date / date-time taken as UTC)")]
pub struct ParseTimestampError {
    text: String,
}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    fn from_str(s: &str) -> Result<Timestamp, ParseTimestampError> {
        parse_absolute(s)
            .map(Timestamp)
            .ok_or_else(|| ParseTimestampError { text: s.into() })
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 UTC with six fraction digits and `Z`. Instants outside years 1..=9999 print as
    /// a signed number of microseconds (`@-99999999999999999`), since RFC 3339 cannot say them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if (MIN_MICROS..=MAX_MICROS).contains(&self.0) {
            f.write_str(&format_micros(self.0))
        } else {
            write!(f, "@{}", self.0)
        }
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    /// A string in the `CLI.md` §2 formats.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "chrono")]
mod chrono_interop {
    use super::Timestamp;

    impl From<chrono::DateTime<chrono::Utc>> for Timestamp {
        fn from(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
            Timestamp(t.timestamp_micros())
        }
    }

    impl TryFrom<Timestamp> for chrono::DateTime<chrono::Utc> {
        type Error = super::ParseTimestampError;

        /// Fails only outside chrono's range (about ±262,000 years).
        fn try_from(t: Timestamp) -> Result<Self, Self::Error> {
            chrono::DateTime::from_timestamp_micros(t.0).ok_or_else(|| super::ParseTimestampError {
                text: t.0.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        let t: Timestamp = "2024-02-29 23:59:59.1234567".parse().unwrap();
        assert_eq!(t.to_string(), "2024-02-29T23:59:59.123456Z");
        assert_eq!(Timestamp::from(SystemTime::from(t)), t);
        let before = Timestamp::from_micros(-1_500_000);
        assert_eq!(Timestamp::from(SystemTime::from(before)), before);
        assert_eq!(before.to_string(), "1969-12-31T23:59:58.500000Z");
        assert!("2024-13-01".parse::<Timestamp>().is_err());
        assert_eq!(
            Timestamp::from_micros(i64::MAX).to_string(),
            format!("@{}", i64::MAX)
        );
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2024-02-29T23:59:59.123456Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
