//! The nats-server releases OSP runs on, read from what a server says of itself: its
//! `--version` line when a binary is chosen, the version in its greeting when a process
//! connects. One minimum for every check, so they cannot drift apart.

pub use semver::Version;

/// Oldest nats-server OSP runs on: timers are message schedules and multi-event appends
/// are atomic batch publishes, both new in 2.12.
pub const MIN_VERSION: Version = Version::new(2, 12, 0);

/// The release `text` names: `2.15.1`, `v2.15.1`, or the whole `--version` line
/// `nats-server: v2.15.1`. A pre-release or build suffix is dropped: 2.12.0-RC.1 has the
/// features of 2.12.0, so it counts as 2.12.0 (semver alone would order it before).
pub fn release(text: &str) -> Result<Version, semver::Error> {
    let token = text.split_whitespace().last().unwrap_or_default();
    let version = Version::parse(token.strip_prefix('v').unwrap_or(token))?;
    Ok(Version::new(version.major, version.minor, version.patch))
}

/// Whether a server that gives `text` as its version is one OSP runs on; one whose
/// version cannot be read is not.
pub fn supported(text: &str) -> bool {
    release(text).is_ok_and(|release| release >= MIN_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_nats_server_prints() {
        let v = |major, minor, patch| Some(Version::new(major, minor, patch));
        let table = [
            ("2.15.1", v(2, 15, 1)),
            ("v2.15.1", v(2, 15, 1)),
            ("nats-server: v2.15.1", v(2, 15, 1)),
            ("nats-server: v2.15.1\n", v(2, 15, 1)),
            ("nats-server: v2.9.10", v(2, 9, 10)),
            ("v2.12.0-RC.1", v(2, 12, 0)),
            ("2.11.0+build.7", v(2, 11, 0)),
            ("", None),
            ("nats-server:", None),
            ("2.15", None),
            ("2.15.1.4", None),
            ("2.x.1", None),
            ("vv2.15.1", None),
        ];
        for (text, expected) in table {
            assert_eq!(release(text).ok(), expected, "parsing {text:?}");
        }
    }

    #[test]
    fn orders_numerically_not_lexically() {
        let parse = |s: &str| release(s).unwrap();
        assert!(parse("2.9.10") < parse("2.12.0"));
        assert!(parse("2.12.0") < parse("2.15.1"));
        assert!(parse("2.15.1") < parse("3.0.0"));
        assert_eq!(parse("v2.15.1").to_string(), "2.15.1");
    }

    #[test]
    fn supported_from_the_minimum_on() {
        for ok in ["2.12.0", "2.15.1", "v2.14.3", "3.0.0", "2.12.0-beta.1"] {
            assert!(supported(ok), "{ok}");
        }
        for old in ["2.9.10", "2.11.9", "", "garbage"] {
            assert!(!supported(old), "{old}");
        }
        assert_eq!(MIN_VERSION.to_string(), "2.12.0");
    }
}
