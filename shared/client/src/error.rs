//! What can go wrong calling OSP.

use std::time::Duration;

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The service refused the command or query; the error names the field and reason.
    #[error("{error}")]
    Rejected {
        /// The log sequence of the rejection's record (commands only).
        seq: Option<u64>,
        /// What to fix.
        error: osp_protocol::Error,
    },
    /// The input cannot even be sent (an invalid name, say).
    #[error(transparent)]
    Invalid(#[from] osp_protocol::Error),
    /// No answer in time. For a command, `stored` says whether the inbox had stored it:
    /// a stored command is still processed when an instance gets to it.
    #[error("no answer from the {service} service within {waited:?}{}", if *.stored { " (the command is stored and will still be processed; is an instance running?)" } else { "" })]
    Timeout {
        /// The service addressed (`scheduler`, `registry`, `quality`, `context`, ...).
        service: String,
        /// How long we waited.
        waited: Duration,
        /// True when the command was stored in the inbox.
        stored: bool,
    },
    /// Nobody serves that query: no instance of the service is running.
    #[error("no instance of the {service} service is running (nobody answers {subject})")]
    NoResponders {
        /// The service the query addressed.
        service: String,
        /// The query subject.
        subject: String,
    },
    /// The answer could not be read.
    #[error("cannot read the {service} service's answer: {error}")]
    Answer {
        /// The service that answered.
        service: String,
        /// What could not be decoded: an unknown content type, or a reply of another shape.
        error: osp_protocol::Error,
    },
    /// An event on the log could not be read (a newer schema, or a damaged message).
    #[error("cannot read the event at seq {seq}: {error}")]
    Event {
        /// Its log sequence.
        seq: u64,
        /// What could not be decoded: an unknown event type or schema, or damaged bytes.
        error: osp_protocol::Error,
    },
    /// A check's audit entry was not recorded within the time it was waited for (its
    /// agents are still answering).
    #[error("audit {audit_id} was not recorded within {waited:?}")]
    NotRecorded {
        /// The audit.
        audit_id: String,
        /// How long we waited.
        waited: Duration,
    },
    /// A run did not end within the time it was waited for (it goes on).
    #[error("run {run_id} did not end within {waited:?}")]
    NotEnded {
        /// The run.
        run_id: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The attempt a task belongs to is over for this agent (cancelled, or the run moved
    /// on): whatever the handler was waiting for will not come.
    #[error("attempt {attempt} of run {run_id} is over: {reason}")]
    TaskEnded {
        /// The run.
        run_id: String,
        /// Its number in the run, from 1.
        attempt: u32,
        /// The first reason it ended for this agent: the cancel's, or `cancelled`.
        reason: String,
    },
    /// A NATS-level failure (the client's error is the `source()`, not repeated here:
    /// [`explain`] says both).
    #[error("cannot {operation}")]
    Nats {
        /// What we were doing.
        operation: &'static str,
        /// The client's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// The protocol error, when the service refused.
    pub fn rejection(&self) -> Option<&osp_protocol::Error> {
        match self {
            Error::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }

    /// True when sending the same thing again may succeed: no answer in time, nobody
    /// serving, a NATS failure, or a service that said to try again.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Timeout { .. } | Error::NoResponders { .. } | Error::Nats { .. } => true,
            Error::Rejected { error, .. } => error.is_transient(),
            _ => false,
        }
    }

    pub(crate) fn nats(operation: &'static str, source: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::Nats { operation, source: Box::new(source) }
    }
}

/// `error` and its causes on one line, `a: b: c`, each said once: what to show a person.
///
/// Many errors, async-nats's among them, write their source into their own text *and*
/// return it from `source()`, so printing every link of the chain says the same cause
/// twice (`IO error: Connection refused: Connection refused`). A cause whose text is
/// already in the line is left out; its own causes are still looked at.
pub fn explain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = current.source();
    }
    line
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let nats = async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::Io, refused);
        assert_eq!(nats.to_string(), "IO error: Connection refused", "async-nats writes its source in");
        let error = Error::nats("connect to NATS", nats);
        assert_eq!(error.to_string(), "cannot connect to NATS");
        assert_eq!(explain(&error), "cannot connect to NATS: IO error: Connection refused");
    }
}
