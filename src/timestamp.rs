//! UTC timestamps with microsecond precision, written as RFC 3339 with a `Z`
//! (`2026-11-27T23:53:30.306917Z`) in JSON and in the database.
//!
//! The original wrote naive ISO-8601 strings that browsers read as local time;
//! we always write the fixed-width `Z` form (which also sorts correctly as text)
//! and accept the original's naive forms (`T` or space separator) on input.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// A point in time, UTC, truncated to whole microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

/// A string that is not a timestamp in any accepted form.
#[derive(Debug, thiserror::Error)]
#[error("invalid timestamp {0:?}: expected RFC 3339, e.g. 2026-11-27T23:53:30.306917Z")]
pub struct InvalidTimestamp(String);

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        Self::from_datetime(OffsetDateTime::now_utc())
    }

    /// Converts any date-time to UTC and truncates it to microseconds.
    pub fn from_datetime(dt: OffsetDateTime) -> Self {
        let dt = dt.to_offset(UtcOffset::UTC);
        let micros = dt.microsecond();
        // `replace_microsecond` only fails for values >= 1_000_000, impossible here.
        Self(dt.replace_microsecond(micros).unwrap_or(dt))
    }

    /// The UTC calendar day.
    pub fn date(self) -> time::Date {
        self.0.date()
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        (self.0.unix_timestamp_nanos() / 1_000) as i64
    }

    /// `age` before now (the epoch if that is before it).
    pub fn ago(age: std::time::Duration) -> Self {
        let micros = Self::now()
            .unix_micros()
            .saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX));
        Self::from_unix_micros(micros.max(0)).unwrap_or_else(Self::now)
    }

    /// `delay` after now.
    pub fn after(delay: std::time::Duration) -> Self {
        Self::now().plus(delay)
    }

    /// `delay` after this time (this time if that is out of range).
    pub fn plus(self, delay: std::time::Duration) -> Self {
        let micros = self
            .unix_micros()
            .saturating_add(i64::try_from(delay.as_micros()).unwrap_or(i64::MAX / 2));
        Self::from_unix_micros(micros).unwrap_or(self)
    }

    /// The inverse of [`Timestamp::unix_micros`].
    pub fn from_unix_micros(micros: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .ok()
            .map(Self)
    }

    /// A compact form for file names: `20261128T023740Z` (to the second).
    pub fn file_stamp(self) -> String {
        // From the canonical form: "2026-11-28T02:37:40" + "Z".
        let mut stamp: String = self.to_string()[..19].replace(['-', ':'], "");
        stamp.push('Z');
        stamp
    }

    /// Parses RFC 3339 (any offset) or the original's naive UTC forms
    /// (`2026-11-27T23:53:30.306917`, `2026-11-27 23:53:30`).
    pub fn parse(s: &str) -> Result<Self, InvalidTimestamp> {
        if let Ok(dt) = OffsetDateTime::parse(s, &Rfc3339) {
            return Ok(Self::from_datetime(dt));
        }
        let naive = format_description!(
            "[year]-[month]-[day][first [T][ ]][hour]:[minute]:[second][optional [.[subsecond]]]"
        );
        PrimitiveDateTime::parse(s, naive)
            .map(|dt| Self::from_datetime(dt.assume_utc()))
            .map_err(|_| InvalidTimestamp(s.to_owned()))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.microsecond()
        )
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A calendar date written `YYYY-MM-DD`.
pub fn parse_date(s: &str) -> Option<time::Date> {
    time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_fixed_width_rfc3339_with_z() {
        let t = Timestamp::parse("2026-11-27T23:53:30.306917Z").unwrap();
        assert_eq!(t.to_string(), "2026-11-27T23:53:30.306917Z");
        let whole = Timestamp::parse("2026-11-27T23:53:30Z").unwrap();
        assert_eq!(whole.to_string(), "2026-11-27T23:53:30.000000Z");
    }

    #[test]
    fn reads_the_originals_naive_forms_as_utc() {
        for (input, expected) in [
            ("2026-11-27T23:53:30.306917", "2026-11-27T23:53:30.306917Z"),
            ("2026-11-27T23:53:30", "2026-11-27T23:53:30.000000Z"),
            ("2026-11-27 23:53:30.306917", "2026-11-27T23:53:30.306917Z"),
            (
                "2026-11-28T00:53:30.306917+01:00",
                "2026-11-27T23:53:30.306917Z",
            ),
        ] {
            assert_eq!(
                Timestamp::parse(input).unwrap().to_string(),
                expected,
                "{input}"
            );
        }
        assert!(Timestamp::parse("yesterday").is_err());
        assert!(Timestamp::parse("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn truncates_to_microseconds_and_round_trips_micros() {
        let t =
            Timestamp::from_datetime(time::macros::datetime!(2026-01-02 03:04:05.123456789 UTC));
        assert_eq!(t.to_string(), "2026-01-02T03:04:05.123456Z");
        assert_eq!(Timestamp::from_unix_micros(t.unix_micros()), Some(t));
    }

    #[test]
    fn file_stamp_is_compact_utc_to_the_second() {
        let t = Timestamp::parse("2026-11-28T02:37:40.999999Z").unwrap();
        assert_eq!(t.file_stamp(), "20261128T023740Z");
    }

    #[test]
    fn serde_uses_the_string_form() {
        let t = Timestamp::parse("2026-11-27T23:53:30.306917Z").unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-27T23:53:30.306917Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }
}
