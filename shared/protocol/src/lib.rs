//! OSP wire protocol v1.
//!
//! Everything a participant needs to speak to the system with any NATS client: the
//! subjects ([`subject`]), the event envelope ([`Envelope`]), the encodings
//! ([`Encoding`]: MessagePack on the log, JSON accepted inbound) and one error type
//! ([`Error`]) whose variants say what to fix. `docs/protocol.md` is the same contract in
//! prose; this crate is its reference implementation.

mod codec;
pub mod command;
pub mod context;
mod envelope;
mod error;
pub mod finite;
mod hash;
pub mod headers;
pub mod json;
pub mod nats_server;
pub mod page;
pub mod partition;
mod payload;
pub mod quality;
pub mod registry;
mod rejection;
mod reply;
pub mod scheduler;
pub mod subject;
mod timestamp;
pub mod upcast;

pub use codec::{check_size, Encoding, CONTENT_TYPE, JSON, MAX_MESSAGE_BYTES, MSGPACK};
pub use command::InboxCommand;
pub use envelope::{derived_event_id, Envelope};
pub use error::Error;
pub use hash::EventHash;
pub use partition::Partitions;
#[doc(hidden)]
pub use payload::__from_value;
pub use payload::{AnyPayload, EventPayload};
pub use rejection::{RejectionEvent, RejectionRecorded, REJECTION_KIND};
pub use reply::{encode_ok_with, Reply};
pub use subject::{AggregateRef, Token};
pub use timestamp::Timestamp;
pub use upcast::Upcaster;

#[doc(hidden)]
pub use rmpv as __rmpv;
#[doc(hidden)]
pub use serde as __serde;
