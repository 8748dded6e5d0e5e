//! The registry's part of the wire protocol: named registries of entries, agents with
//! liveness, and discovery.
//!
//! - commands on `osp.v1.in.registry.{register,unregister}` ([`Command`]);
//! - events on `osp.v1.evt.entry.<registry>:<name>` ([`EntryEvent`]);
//! - queries on `osp.v1.q.registry.{get,list,find,live,digest}` ([`queries`]);
//! - heartbeats of agents on `osp.v1.hb.<agent name>`: core NATS, any payload, never
//!   stored; an agent silent for the registry's timeout goes offline.

mod card;
mod commands;
pub mod document;
mod events;
mod names;
pub mod queries;

use std::time::Duration;

pub use card::{AgentCard, MAX_CAPABILITIES, MAX_CONCURRENCY};
pub use commands::{
    Command, CommandName, Unregister, COMMANDS, MAX_DESCRIPTION_BYTES, MAX_METADATA_BYTES, MAX_REASON_BYTES,
    MAX_RESOURCE_BYTES,
};
pub use document::Document;
pub use events::{CameOnline, EntryDoc, EntryEvent, Unregistered, WentOffline};
pub use names::{EntryKey, EntryName, RegistryName, MAX_ENTRY_NAME, MAX_REGISTRY_NAME};
pub use queries::Status;

/// The service's name: its inbox is `osp.v1.in.registry.>`, its queries `osp.v1.q.registry.*`.
pub const SERVICE: &str = "registry";
/// Aggregate kind of entries.
pub const ENTRY_KIND: &str = "entry";
/// The registry whose entries are agents (agent cards, with liveness).
pub const AGENTS: &str = "agents";

/// How often an agent should heartbeat (what the client crate does).
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// How long the registry waits without a heartbeat before it marks an agent offline, by
/// default: three missed beats.
pub const OFFLINE_AFTER: Duration = Duration::from_secs(15);
