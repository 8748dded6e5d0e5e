//! The protocol's one error type.
//!
//! Each variant names what the caller can act on: which field, which value, why. The type
//! is serializable because a rejection travels back to the sender and into the log.

use serde::{Deserialize, Serialize};

/// Everything that can be wrong with a message at the protocol level.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum Error {
    /// An id or name cannot be used as a subject token.
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidToken {
        /// Which input it was (`run id`, `capability`, ...).
        field: String,
        /// The offending value, truncated.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// A subject does not follow the subject plan.
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The subject, truncated.
        subject: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The bytes could not be decoded; `path` names the field when the decoder knows it.
    #[error("malformed {encoding} message{}: {reason}", path_suffix(.path))]
    Malformed {
        /// `msgpack` or `json`.
        encoding: String,
        /// Dotted path of the field at fault (`options.retry.attempts`), empty when unknown.
        path: String,
        /// The decoder's explanation.
        reason: String,
    },
    /// A message is larger than the limit that applies to it.
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// What was measured (`payload`, `resource`, ...).
        what: String,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The `Content-Type` header names an encoding we do not speak.
    #[error("unsupported content type {0:?}: use application/msgpack (the default) or application/json")]
    UnsupportedContentType(String),
    /// An event type this reader does not know (a newer writer, or the wrong filter).
    #[error("unknown event type {event_type:?} (schema {schema})")]
    UnknownEventType {
        /// The `type` field of the envelope.
        event_type: String,
        /// Its `schema` version.
        schema: u16,
    },
    /// A value could not be encoded; this is our bug, not the caller's.
    #[error("cannot encode {0}")]
    Encode(String),
}

fn path_suffix(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" at {path}")
    }
}
