//! The protocol's one error type.
//!
//! Each variant names what the caller can act on: which field, which value, why. The type
//! is serializable because a rejection travels back to the sender and into the log.

use serde::{Deserialize, Serialize};

/// Everything that can be wrong with a message at the protocol level.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(tag = "error", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
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
        /// In bytes, as encoded: a text's UTF-8, a document's MessagePack.
        size: usize,
        /// The most bytes allowed for that `what`, measured the same way.
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
    /// A field has a value the command cannot accept (beyond its type: a range, a
    /// required shape, a name rule).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Dotted path of the field (`resource.capabilities[1]`).
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// The command or query names something that does not exist.
    #[error("{field} {value:?} not found: {reason}")]
    NotFound {
        /// Which input named it (`name`, `registry`, ...).
        field: String,
        /// The value that names nothing.
        value: String,
        /// Where it was looked for.
        reason: String,
    },
    /// A message arrived on a command subject the service does not know.
    #[error("unknown command {command:?} for the {service} service: use one of {}", .known.join(", "))]
    UnknownCommand {
        /// The service the subject addresses.
        service: String,
        /// The command token of the subject.
        command: String,
        /// The commands the service knows.
        known: Vec<String>,
    },
    /// The command is well formed but the state of what it addresses does not allow it
    /// (approve a completed run, resume a running one).
    #[error("cannot {command}: it is {state}{}", reason_suffix(.reason))]
    IllegalTransition {
        /// What was tried, in the words of the people who try it (`approve`, `resume`,
        /// `set setting max_tokens`), not necessarily the command's wire name.
        command: String,
        /// The state what it addresses is in (`completed`, `in-progress`, ...).
        state: String,
        /// More about why, when there is more to say.
        reason: String,
    },
    /// The sender may not do this (an approver not on the run's list).
    #[error("forbidden: {field} {value:?} {reason}")]
    Forbidden {
        /// What named the sender (`Osp-Actor header`).
        field: String,
        /// Who it was.
        value: String,
        /// Why it may not.
        reason: String,
    },
    /// The id is taken by something different (a run id submitted again with another
    /// capability or input).
    #[error("{field} {value:?} conflicts: {reason}")]
    Conflict {
        /// Which input.
        field: String,
        /// The id or name given, already taken (or the approver who has decided already).
        value: String,
        /// What it conflicts with.
        reason: String,
    },
    /// A query asked to see the log up to a sequence this instance has not applied in
    /// time (read-your-writes); asking again, or another instance, will do.
    #[error("this instance has applied the log up to seq {applied}, not yet to {wanted}; try again")]
    Lagging {
        /// The sequence the query asked for.
        wanted: u64,
        /// The sequence this instance has applied.
        applied: u64,
    },
    /// The service could not complete the request for a reason of its own (the log was
    /// unreachable, say); the request may be sent again.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// What went wrong.
        reason: String,
    },
    /// The aggregate's history on the log holds an event this service cannot read (an
    /// unknown type, or bytes that do not decode): nothing can be decided on it until that
    /// is understood, and sending the command again will not help.
    #[error(
        "{aggregate} cannot be decided on: its event at seq {seq} cannot be read ({reason}); see `osp log verify`"
    )]
    Damaged {
        /// The aggregate's subject.
        aggregate: String,
        /// The stream sequence of the event that cannot be read.
        seq: u64,
        /// Why it cannot be read.
        reason: String,
    },
    /// A value could not be encoded; this is our bug, not the caller's.
    #[error("cannot encode: {reason}")]
    Encode {
        /// The encoder's explanation.
        reason: String,
    },
}

impl Error {
    /// The variant's tag on the wire (`invalid_token`, `not_found`, ...): what a client
    /// in any language switches on.
    pub fn code(&self) -> &'static str {
        self.into()
    }

    /// The field at fault, when the error names one (for `Malformed`, its decode path).
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidToken { field, .. }
            | Error::Invalid { field, .. }
            | Error::NotFound { field, .. }
            | Error::Forbidden { field, .. }
            | Error::Conflict { field, .. } => Some(field),
            Error::Malformed { path, .. } if !path.is_empty() && path != "." => Some(path),
            _ => None,
        }
    }

    /// Whether sending the same request again may succeed: the fault was ours or
    /// timing's, not the request's.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Lagging { .. } | Error::Unavailable { .. })
    }
}

fn reason_suffix(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!("; {reason}")
    }
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
            Error::Invalid { field: "resource.capabilities[1]".into(), reason: "r".into() },
            Error::NotFound { field: "name".into(), value: "bob".into(), reason: "r".into() },
            Error::UnknownCommand { service: "registry".into(), command: "x".into(), known: vec!["register".into()] },
            Error::IllegalTransition { command: "approve".into(), state: "completed".into(), reason: String::new() },
            Error::Forbidden { field: "Osp-Actor header".into(), value: "eve".into(), reason: "r".into() },
            Error::Conflict { field: "run_id".into(), value: "r-1".into(), reason: "r".into() },
            Error::Lagging { wanted: 9, applied: 3 },
            Error::Unavailable { reason: "r".into() },
            Error::Encode { reason: "r".into() },
        ];
        for error in all {
            let tagged = serde_json::to_value(&error).unwrap();
            assert_eq!(tagged["error"], error.code(), "{error}");
            for encoding in [Encoding::MessagePack, Encoding::Json] {
                let bytes = encoding.encode(&error).unwrap();
                assert_eq!(encoding.decode::<Error>(&bytes).unwrap(), error);
            }
        }
    }
}
