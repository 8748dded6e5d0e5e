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
    #[error("unsupported content type {content_type:?}: use application/msgpack (the default) or application/json")]
    UnsupportedContentType {
        /// The header's value.
        content_type: String,
    },
    /// An event type this reader does not know (a newer writer, or the wrong filter).
    #[error("unknown event type {event_type:?} (schema {schema})")]
    UnknownEventType {
        /// The `type` field of the envelope.
        event_type: String,
        /// Its `schema` version.
        schema: u16,
    },
    /// A value could not be encoded; this is our bug, not the caller's.
    #[error("cannot encode: {reason}")]
    Encode {
        /// The encoder's explanation.
        reason: String,
    },
}

fn path_suffix(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!(" at {path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Encoding;

    #[test]
    fn every_variant_travels_in_both_encodings() {
        let all = [
            Error::InvalidToken { field: "run id".into(), value: "a.b".into(), reason: "r".into() },
            Error::InvalidSubject { subject: "s".into(), reason: "r".into() },
            Error::Malformed { encoding: "json".into(), path: "a.b".into(), reason: "r".into() },
            Error::TooLarge { what: "payload".into(), size: 2, limit: 1 },
            Error::UnsupportedContentType { content_type: "text/xml".into() },
            Error::UnknownEventType { event_type: "x.y".into(), schema: 2 },
            Error::Encode { reason: "r".into() },
        ];
        for error in all {
            for encoding in [Encoding::MessagePack, Encoding::Json] {
                let bytes = encoding.encode(&error).unwrap();
                assert_eq!(encoding.decode::<Error>(&bytes).unwrap(), error);
            }
        }
    }
}
