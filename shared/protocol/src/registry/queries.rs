//! Queries of the registry: NATS micro-service endpoints `osp.v1.q.registry.<query>`,
//! answered in the request's encoding with a [`crate::Reply`].
//!
//! | query | request | result |
//! |---|---|---|
//! | `get` | `{registry, name}` | [`EntryView`], or `not_found` |
//! | `list` | `{registry, after?, limit?}` | [`Page`] of the registry's entries, by name |
//! | `find` | `{registry, criteria?, live?, after?, limit?}` | [`Page`] of the entries whose resource matches |
//! | `live` | `{after?, limit?}` | [`Page`] of the agents online now |
//! | `registries` | `{}` | [`Registries`]: the registries that hold entries, and how many |
//! | `digest` | `{}` | [`Digest`]: a hash of the whole state, to compare instances |
//!
//! Pages hold at most `limit` entries (default [`DEFAULT_LIMIT`], at most
//! [`MAX_LIMIT`]) and stop early rather than risk passing [`PAGE_BYTES`] in either
//! encoding; `next`, when present, is the `after` of the following page.
//!
//! **Criteria** match the resource partially: every key of the criteria must be in
//! the resource and match there; a scalar matches an equal scalar (integers and floats
//! by value) or an array holding it; an array matches an array holding every one of its
//! items ("contains all"); a map matches a map recursively. A key with dots is a path:
//! `{"endpoint.region": "eu"}` is `{"endpoint": {"region": "eu"}}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::document::Document;
use crate::Timestamp;

/// Entries per page when the query does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most entries per page.
pub const MAX_LIMIT: u32 = 1000;
/// A page stops growing before its reply could pass this many bytes in either encoding,
/// under the 1 MiB message limit.
pub const PAGE_BYTES: usize = 768 * 1024;

/// The query names (endpoints) of the registry.
pub const QUERIES: &[&str] = &["get", "list", "find", "live", "registries", "digest"];

/// `get`: one entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// `agents`, `skills`, `tools`, `mcp-servers` or any other registry name.
    pub registry: String,
    /// The entry's name in that registry; an unknown one is `not_found`.
    pub name: String,
}

pub use crate::page::PageRequest;

/// `list`: a registry's entries, by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// The registry's name; one holding no entry answers an empty page, not `not_found`.
    pub registry: String,
    /// Start after this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `find`: entries whose resource matches `criteria`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindQuery {
    /// The registry searched; `live` is refused outside `agents`.
    pub registry: String,
    /// What the resource must hold (a map; absent matches everything).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria: Option<Document>,
    /// Only agents that are online.
    #[serde(default)]
    pub live: bool,
    /// Start after this name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `registries`: takes no fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesQuery {}

/// The registries that hold entries, by name: a registry exists while it has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registries {
    /// By registry name.
    pub registries: Vec<RegistryCount>,
}

/// A registry and how many entries it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCount {
    /// Its name.
    pub registry: String,
    /// Its registered entries.
    pub entries: u64,
    /// For `agents`, the only registry with liveness: how many are online now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<u64>,
}

/// `digest`: takes no fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestQuery {}

/// Whether an entry is there for the taking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Status {
    /// An entry of a registry without liveness (anything but `agents`).
    Registered,
    /// An agent that heartbeats.
    Online,
    /// An agent that went silent.
    Offline,
}

impl Status {
    /// The word shown for it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// An entry as a query shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryView {
    /// With `name`, its address: aggregate id `<registry>:<name>`.
    pub registry: String,
    /// Unique in its registry.
    pub name: String,
    /// What it is.
    pub description: String,
    /// Its document.
    pub resource: Document,
    /// Its metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Document>,
    /// Online, offline or just registered.
    pub status: Status,
    /// How many times it was registered or updated since it was last added (1 = as first
    /// registered).
    pub revision: u64,
    /// When it was last added.
    pub registered_at: Timestamp,
    /// When its content last changed.
    pub updated_at: Timestamp,
    /// The stream sequence of its last event.
    pub seq: u64,
}

/// One page of entries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The entries, by name.
    pub entries: Vec<EntryView>,
    /// The `after` of the next page; absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A fingerprint of an instance's whole registry state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    /// The stream sequence of the last entry event in the state: two instances with the
    /// same `last_seq` have applied the same events and must have the same digest.
    pub last_seq: u64,
    /// BLAKE3 of the state's canonical encoding, hex.
    pub digest: String,
    /// Entries per registry (registered ones only).
    pub registries: BTreeMap<String, u64>,
}

/// What an accepted `register` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterOutcome {
    /// As the command named it: with `name`, which entry this is about.
    pub registry: String,
    /// The entry.
    pub name: String,
    /// Its revision now (1 when just added).
    pub revision: u64,
    /// True when the entry was added, false when an existing one was updated.
    pub created: bool,
}

/// What an accepted `unregister` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnregisterOutcome {
    /// Whether the entry existed (an unknown one is refused with `not_found`, so an
    /// accepted unregister always says true; the field is what OSP's interface returns).
    pub existed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_named_as_it_is_written() {
        for status in [Status::Registered, Status::Online, Status::Offline] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
}
