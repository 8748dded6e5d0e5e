//! nats-server version numbers, as printed by `nats-server --version`.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A nats-server release number. Exists so candidates found on the machine can be
/// compared against [`MIN_VERSION`](crate::MIN_VERSION) instead of string-matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major release (2 for every server this crate supports).
    pub major: u32,
    /// Minor release; feature gates such as message schedules (2.12) live here.
    pub minor: u32,
    /// Patch release.
    pub patch: u32,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Accepts `2.15.1`, `v2.15.1` and the full `--version` line `nats-server: v2.15.1`.
/// A pre-release or build suffix (`2.12.0-RC.1`) is ignored, so an RC counts as its release.
impl FromStr for Version {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let bad = || Error::BadVersion { text: text.to_owned() };
        let token = text.split_whitespace().last().ok_or_else(bad)?;
        let token = token.strip_prefix('v').unwrap_or(token);
        let core = token.split(['-', '+']).next().unwrap_or(token);
        let mut parts = core.split('.').map(|part| part.parse::<u32>().map_err(|_| bad()));
        let version = Version {
            major: parts.next().ok_or_else(bad)??,
            minor: parts.next().ok_or_else(bad)??,
            patch: parts.next().ok_or_else(bad)??,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_nats_server_prints() {
        let v = |major, minor, patch| Some(Version { major, minor, patch });
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
            assert_eq!(text.parse::<Version>().ok(), expected, "parsing {text:?}");
        }
    }

    #[test]
    fn orders_numerically_not_lexically() {
        let parse = |s: &str| s.parse::<Version>().unwrap();
        assert!(parse("2.9.10") < parse("2.12.0"));
        assert!(parse("2.12.0") < parse("2.15.1"));
        assert!(parse("2.15.1") < parse("3.0.0"));
        assert_eq!(parse("v2.15.1").to_string(), "2.15.1");
    }
}
