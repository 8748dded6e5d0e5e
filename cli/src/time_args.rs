//! Times given on the command line (`osp events tail --since`, `osp audit query
//! --since/--until`): an RFC 3339 time, a time as the CLI prints it, or an age counted
//! back from now.

use anyhow::anyhow;
use osp_protocol::Timestamp;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::OffsetDateTime;

/// What a time argument may be, for help texts and errors.
pub const TIME_FORMAT: &str =
    "RFC 3339 (2026-11-24T16:00:00Z), a time as osp prints it (2026-11-24 17:00:00.000 +01:00) or an age (90s, 15m, 2h, 1d)";

/// Reads the time `text` given to `flag`: an RFC 3339 time, or an age (`15m`, `1h 30m`,
/// anything humantime reads) before `now`.
pub fn parse_time(flag: &str, text: &str, now: OffsetDateTime) -> anyhow::Result<Timestamp> {
    // As `clock::time` prints it, so a time copied from a table can be given back.
    let printed = format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]] [offset_hour sign:mandatory]:[offset_minute]"
    );
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339).or_else(|_| OffsetDateTime::parse(text.trim(), printed)) {
        return Ok(Timestamp::from_offset_date_time(at));
    }
    let age = humantime::parse_duration(text)
        .map_err(|error| anyhow!("{flag} {text:?}: expected {TIME_FORMAT} ({error})"))?;
    let age = time::Duration::try_from(age).map_err(|_| anyhow!("{flag} {text:?}: too long ago"))?;
    let at = now.checked_sub(age).ok_or_else(|| anyhow!("{flag} {text:?}: too long ago"))?;
    Ok(Timestamp::from_offset_date_time(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_ages_are_read() {
        let now = OffsetDateTime::parse("2026-11-24T12:00:00Z", &Rfc3339).unwrap();
        let at = |s: &str| parse_time("--since", s, now).unwrap().to_rfc3339();
        assert_eq!(at("2026-11-24T10:30:00Z"), "2026-11-24T10:30:00Z");
        assert_eq!(at("90s"), "2026-11-24T11:58:30Z");
        assert_eq!(at("15m"), "2026-11-24T11:45:00Z");
        assert_eq!(at("2h"), "2026-11-24T10:00:00Z");
        assert_eq!(at("1d"), "2026-11-23T12:00:00Z");
        assert_eq!(at("1h 30m"), "2026-11-24T10:30:00Z");
        // A time as osp prints it, in any zone, is the instant it shows.
        let exact = parse_time("--at", "2026-11-24T10:30:05.120Z", now).unwrap();
        assert_eq!(parse_time("--at", "2026-11-24 16:00:05.120 +05:30", now).unwrap(), exact);
        let printed = crate::clock::time(exact);
        assert_eq!(parse_time("--at", &printed, now).unwrap(), exact, "{printed}");
        for bad in ["", "yesterday", "m", "-5m"] {
            let error = parse_time("--since", bad, now).unwrap_err().to_string();
            assert!(error.starts_with("--since") && error.contains("RFC 3339"), "{bad}: {error}");
        }
    }
}
