//! Events of registry entries: kind `entry`, subject `osp.v1.evt.entry.<registry>:<name>`.
//!
//! | type | when |
//! |---|---|
//! | `entry.registered` | the entry is added (first time, or again after an unregister); an agent is then online |
//! | `entry.updated` | a register command for an entry that exists; the old version stays in the log |
//! | `entry.unregistered` | the entry is removed |
//! | `entry.offline` | an agent sent no heartbeat for the registry's timeout (one event per transition, never per missed beat) |
//! | `entry.online` | an offline agent's heartbeats came back |

use serde::{Deserialize, Serialize};

use crate::registry::document::Document;
use crate::registry::{EntryKey, EntryName, RegistryName};

/// An entry's content: what `register` says and `entry.registered` / `entry.updated` record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryDoc {
    /// `agents` (agent cards, with liveness), `skills`, `tools`, `mcp-servers`, any other.
    pub registry: RegistryName,
    /// Its name, unique in the registry.
    pub name: EntryName,
    /// What it is, for people.
    #[serde(default)]
    pub description: String,
    /// The free-form document (for `agents`, an agent card).
    pub resource: Document,
    /// Anything else its owner wants kept with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Document>,
}

impl EntryDoc {
    /// Its address.
    pub fn key(&self) -> EntryKey {
        EntryKey { registry: self.registry.clone(), name: self.name.clone() }
    }
}

/// The entry was removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unregistered {
    /// Why, if the sender said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An agent went silent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WentOffline {
    /// How long the deciding instance had heard nothing, in milliseconds.
    pub silent_for_ms: u64,
    /// The timeout in force, in milliseconds.
    pub timeout_ms: u64,
}

/// An offline agent's heartbeats came back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CameOnline {}

crate::event_payload! {
    /// What can happen to a registry entry.
    #[derive(Clone, Debug, PartialEq)]
    pub enum EntryEvent {
        /// Added.
        Registered(EntryDoc) = ("entry.registered", 1),
        /// Replaced by a newer version.
        Updated(EntryDoc) = ("entry.updated", 1),
        /// Removed.
        Unregistered(Unregistered) = ("entry.unregistered", 1),
        /// An agent went silent.
        WentOffline(WentOffline) = ("entry.offline", 1),
        /// An agent came back.
        CameOnline(CameOnline) = ("entry.online", 1),
    }
}
