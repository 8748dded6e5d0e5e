//! Names in the registry: which registry, which entry, and the aggregate they make.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{AggregateRef, Error, Token};

/// Longest registry name, in bytes.
pub const MAX_REGISTRY_NAME: usize = 32;
/// Longest entry name, in bytes: with the registry name and a `:` it must fit in one
/// subject token (128 bytes).
pub const MAX_ENTRY_NAME: usize = crate::subject::MAX_TOKEN_LEN - MAX_REGISTRY_NAME - 1;

/// The name of a registry: `agents`, `skills`, `tools`, `mcp-servers`, or any other of
/// lower-case letters, digits, `-` and `_` (at most 32 bytes, starting with a letter or
/// digit). Never `:`, which separates it from the entry name in the aggregate id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RegistryName(String);

impl RegistryName {
    /// Validates `value` as the registry name given in `field`.
    pub fn new(field: &str, value: impl Into<String>) -> Result<RegistryName, Error> {
        let value = value.into();
        match registry_name_problem(&value) {
            None => Ok(RegistryName(value)),
            Some(reason) => Err(invalid(field, &value, reason)),
        }
    }

    /// The name's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for the `agents` registry, whose entries are agent cards with liveness.
    pub fn is_agents(&self) -> bool {
        self.0 == super::AGENTS
    }
}

fn registry_name_problem(value: &str) -> Option<&'static str> {
    let first_ok = value.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_REGISTRY_NAME {
        Some("longer than 32 bytes")
    } else if !first_ok || !value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
    {
        Some("may hold only lower-case letters, digits, '-' and '_', starting with a letter or digit")
    } else {
        None
    }
}

/// The name of an entry, unique in its registry: a subject token (no `.`, `*`, `>`,
/// whitespace or control characters) of at most [`MAX_ENTRY_NAME`] bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EntryName(Token);

impl EntryName {
    /// Validates `value` as the entry name given in `field`.
    pub fn new(field: &str, value: impl Into<String>) -> Result<EntryName, Error> {
        let value = value.into();
        if value.len() > MAX_ENTRY_NAME {
            return Err(invalid(field, &value, "longer than 95 bytes"));
        }
        Token::new(field, value).map(EntryName)
    }

    /// The name's text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The name as a subject token (an agent's name is its heartbeat subject's last token).
    pub fn as_token(&self) -> &Token {
        &self.0
    }
}

fn invalid(field: &str, value: &str, reason: &str) -> Error {
    // Token::new truncates long values in its errors; do the same here.
    match Token::new(field, value) {
        Err(Error::InvalidToken { value, .. }) => {
            Error::InvalidToken { field: field.to_owned(), value, reason: reason.to_owned() }
        }
        _ => Error::InvalidToken { field: field.to_owned(), value: value.to_owned(), reason: reason.to_owned() },
    }
}

macro_rules! validated_deserialize {
    ($ty:ident, $field:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $ty::new($field, String::deserialize(d)?).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
validated_deserialize!(RegistryName, "registry");
validated_deserialize!(EntryName, "name");

/// An entry's full address: its registry and its name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntryKey {
    /// The part before `:` in the aggregate id `<registry>:<name>`.
    pub registry: RegistryName,
    /// Which entry in it.
    pub name: EntryName,
}

impl EntryKey {
    /// Validates both parts, as given in the fields `registry` and `name`.
    pub fn new(registry: &str, name: &str) -> Result<EntryKey, Error> {
        Ok(EntryKey { registry: RegistryName::new("registry", registry)?, name: EntryName::new("name", name)? })
    }

    /// The entry's aggregate: kind `entry`, id `<registry>:<name>`, subject
    /// `osp.v1.evt.entry.<registry>:<name>`.
    pub fn aggregate(&self) -> AggregateRef {
        let id = Token::new("aggregate id", format!("{}:{}", self.registry, self.name))
            .expect("a registry name, ':' and an entry name make a valid token");
        AggregateRef { kind: Token::new("aggregate kind", super::ENTRY_KIND).expect("valid kind"), id }
    }

    /// Reads the key back from an entry aggregate's id (the registry name holds no `:`).
    pub fn from_aggregate_id(id: &str) -> Result<EntryKey, Error> {
        let (registry, name) = id.split_once(':').ok_or_else(|| Error::Invalid {
            field: "aggregate id".into(),
            reason: format!("{id:?} is not <registry>:<name>"),
        })?;
        EntryKey::new(registry, name)
    }
}

impl fmt::Display for EntryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_names() {
        for ok in ["agents", "skills", "tools", "mcp-servers", "a", "x_1", "9lives"] {
            assert!(RegistryName::new("registry", ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("Agents", "lower-case"),
            ("a:b", "lower-case"),
            ("a.b", "lower-case"),
            ("-x", "starting with"),
            ("a b", "lower-case"),
            (&"x".repeat(33), "32 bytes"),
        ] {
            let err = RegistryName::new("registry", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid registry") && err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn entry_names_are_tokens_that_fit_beside_the_registry() {
        assert!(EntryName::new("name", "summarizer-1").is_ok());
        assert!(EntryName::new("name", "a:b").is_ok());
        assert!(EntryName::new("name", "x".repeat(MAX_ENTRY_NAME)).is_ok());
        for bad in ["a.b", "*", ">", "a b", ""] {
            let err = EntryName::new("name", bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid name"), "{err}");
        }
        let long = EntryName::new("name", "x".repeat(MAX_ENTRY_NAME + 1)).unwrap_err().to_string();
        assert!(long.contains("95 bytes") && long.len() < 200, "{long}");
    }

    #[test]
    fn the_longest_key_is_a_valid_aggregate_and_reads_back() {
        let key = EntryKey::new(&"r".repeat(MAX_REGISTRY_NAME), &"n:".repeat(MAX_ENTRY_NAME / 2)).unwrap();
        let aggregate = key.aggregate();
        assert!(aggregate.subject().starts_with("osp.v1.evt.entry.rrr"));
        assert_eq!(EntryKey::from_aggregate_id(aggregate.id.as_str()).unwrap(), key);
        assert!(EntryKey::from_aggregate_id("nocolon").is_err());
    }
}
