//! Errors of the event store.
//!
//! [`Error::Conflict`] is the one a service handles in its normal flow ("someone else
//! decided first": reload and decide again); the others are either the caller's input
//! ([`Error::Protocol`]), the deployment ([`Error::ServerTooOld`], [`Error::Definition`])
//! or the connection ([`Error::Unavailable`], [`Error::Nats`]).

/// What went wrong talking to the event store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another writer appended to the aggregate after the head the caller decided on.
    #[error("conflict on {subject}: expected last sequence {expected}, the log is at {actual}")]
    Conflict {
        /// The aggregate's subject.
        subject: String,
        /// The last subject sequence the caller expected.
        expected: u64,
        /// The aggregate's actual last sequence.
        actual: u64,
    },
    /// An event of the aggregate cannot be decoded, so no decision can be based on it.
    #[error("event {seq} on {subject} is malformed: {error}")]
    Malformed {
        /// Stream sequence of the event.
        seq: u64,
        /// The subject it is stored on: the aggregate's, `osp.v1.evt.<kind>.<id>`.
        subject: String,
        /// Why it cannot be read.
        error: osp_protocol::Error,
    },
    /// Input that violates the wire protocol.
    #[error(transparent)]
    Protocol(#[from] osp_protocol::Error),
    /// The connected nats-server lacks features the event store needs.
    #[error(
        "nats-server {found} is too old: OSP needs {required} or newer (message schedules and atomic batch publish)"
    )]
    ServerTooOld {
        /// The server's version.
        found: String,
        /// The oldest release OSP runs on.
        required: osp_protocol::nats_server::Version,
    },
    /// A stream or consumer definition file is invalid or could not be applied.
    #[error("definition {file}: {reason}")]
    Definition {
        /// The file (or built-in name) it came from.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The server did not answer in time, after retries.
    #[error("{operation} did not complete: {reason}")]
    Unavailable {
        /// What we were doing.
        operation: &'static str,
        /// The last error seen.
        reason: String,
    },
    /// Any other error from NATS.
    /// The client's error is the `source()`, not repeated in the message.
    #[error("cannot {operation}")]
    Nats {
        /// What we were doing.
        operation: &'static str,
        /// The client's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// True for [`Error::Conflict`]: the caller should catch up and decide again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
