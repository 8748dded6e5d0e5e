//! Wall-clock instants on the wire: milliseconds since the Unix epoch.
//!
//! An integer is what every NATS client language reads without a date library
//! (`Date.now()`, `time.time() * 1000`); the CLI shows it as RFC 3339.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

/// Milliseconds since 1970-01-01T00:00:00Z.
/// The default is the epoch: "never".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time of this machine's clock.
    pub fn now() -> Timestamp {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
    }

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// This time plus `ms` milliseconds (saturating).
    pub fn plus_millis(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)))
    }

    /// Milliseconds from `earlier` to this time, 0 if it is not later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }

    /// As a `time` value (saturating at the representable range).
    pub fn to_offset_date_time(self) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).unwrap_or_else(|_| {
            let date = if self.0 < 0 { time::Date::MIN } else { time::Date::MAX };
            let time = if self.0 < 0 { time::Time::MIDNIGHT } else { time::Time::MAX };
            time::PrimitiveDateTime::new(date, time).assume_utc()
        })
    }

    /// From a `time` value, truncated to the millisecond.
    pub fn from_offset_date_time(at: OffsetDateTime) -> Timestamp {
        Timestamp((at.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    /// RFC 3339 in UTC, with the milliseconds when there are any: `2026-11-24T16:23:05.123Z`,
    /// `2026-11-24T16:23:05Z`.
    pub fn to_rfc3339(self) -> String {
        self.to_offset_date_time().format(&Rfc3339).unwrap_or_else(|_| self.0.to_string())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_the_calendar_saturate_instead_of_reading_as_the_epoch() {
        assert_eq!(Timestamp(1_764_000_000_123).to_rfc3339(), "2025-11-24T16:00:00.123Z");
        assert!(Timestamp(i64::MAX).to_offset_date_time().year() >= 9999);
        assert!(Timestamp(i64::MIN).to_offset_date_time().year() <= -9999);
    }
}
