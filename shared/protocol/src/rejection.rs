//! The record of a refused command.
//!
//! Nothing a client sends is silently dropped: a command that is malformed, names
//! nothing, breaks a rule or could not be processed at all becomes one
//! `rejection.recorded` event on the log, with the error the sender was (or would have
//! been) told. Each rejection is its own aggregate, `osp.v1.evt.rejection.<id>`, with an
//! id derived from the command's, so a redelivered command is recorded once; the
//! address is valid even when the command's own ids are not.
//!
//! The command's payload is not copied into the record: it may hold what must not be
//! kept (a secret sent to the wrong field), and the error already names the field.

use serde::{Deserialize, Serialize};

use crate::Error;

/// Aggregate kind of rejection records.
pub const REJECTION_KIND: &str = "rejection";

/// A command was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RejectionRecorded {
    /// The service that refused it.
    pub service: String,
    /// The subject it arrived on.
    pub subject: String,
    /// Its id (`Osp-Command-Id`, else `Nats-Msg-Id`, else derived from its place in the inbox).
    pub command_id: String,
    /// Its `Content-Type` header, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// The aggregate it addressed (`entry:agents:a1`), when it got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Why it was refused.
    pub error: Error,
}

crate::event_payload! {
    /// Events of rejection records.
    #[derive(Clone, Debug, PartialEq)]
    pub enum RejectionEvent {
        /// A command was refused.
        Recorded(RejectionRecorded) = ("rejection.recorded", 1),
    }
}
