//! What the context view reads from the log: its own events, and the scheduler's and the
//! registry's (whose runs an agent works on decides what it may read; the registry is
//! part of an agent's system context). One payload type for all three, so one projection
//! folds them in log order and one `Osp-Min-Seq` covers them all.

use osp_protocol::context::ContextEvent;
use osp_protocol::registry::EntryEvent;
use osp_protocol::scheduler::RunEvent;
use osp_protocol::EventPayload;
use serde::{Deserializer, Serializer};

/// An event the context service reads.
// Read one at a time and applied at once, never stored in bulk: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum ContextInput {
    /// Its own (`scope.*`, `embeddings.*`).
    Context(ContextEvent),
    /// The scheduler's (`run.*`).
    Run(RunEvent),
    /// The registry's (`entry.*`).
    Entry(EntryEvent),
}

impl EventPayload for ContextInput {
    fn event_type(&self) -> &str {
        match self {
            ContextInput::Context(event) => event.event_type(),
            ContextInput::Run(event) => event.event_type(),
            ContextInput::Entry(event) => event.event_type(),
        }
    }

    fn schema(&self) -> u16 {
        match self {
            ContextInput::Context(event) => event.schema(),
            ContextInput::Run(event) => event.schema(),
            ContextInput::Entry(event) => event.schema(),
        }
    }

    fn serialize_payload<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ContextInput::Context(event) => event.serialize_payload(serializer),
            ContextInput::Run(event) => event.serialize_payload(serializer),
            ContextInput::Entry(event) => event.serialize_payload(serializer),
        }
    }

    /// By the type's prefix, which is the aggregate kind of the subject it was read from.
    fn deserialize_payload<'de, D: Deserializer<'de>>(
        event_type: &str,
        schema: u16,
        deserializer: D,
    ) -> Result<Self, D::Error> {
        match event_type.split('.').next() {
            Some("run") => RunEvent::deserialize_payload(event_type, schema, deserializer).map(ContextInput::Run),
            Some("entry") => EntryEvent::deserialize_payload(event_type, schema, deserializer).map(ContextInput::Entry),
            _ => ContextEvent::deserialize_payload(event_type, schema, deserializer).map(ContextInput::Context),
        }
    }
}
