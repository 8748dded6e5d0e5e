//! What a handler returns when its task goes wrong ([`TaskFailure`]), and the level of a
//! task's log line ([`LogLevel`]): the plain values a handler hands over, kept apart from
//! the machinery that reports them.

use osp_protocol::registry::document::{encoded_len, from_json};
use osp_protocol::scheduler::{MAX_SMALL_DATA_BYTES, MAX_TEXT_BYTES};

use super::task::truncate;
use super::MAX_KIND_BYTES;
use crate::Error;

/// How a task went wrong, as the handler tells it: reported as `failed`.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskFailure {
    /// A short machine-readable kind (what a run's `retryOn` matches); `error` by default.
    pub kind: String,
    /// For people.
    pub message: String,
    /// Anything else (at most 64 KiB encoded).
    pub details: Option<serde_json::Value>,
    /// Whether another attempt may succeed (the run's retry policy decides whether there
    /// is one). True by default.
    pub retryable: bool,
}

impl TaskFailure {
    /// A retryable failure of kind `error`.
    pub fn new(message: impl Into<String>) -> TaskFailure {
        TaskFailure { kind: "error".into(), message: message.into(), details: None, retryable: true }
    }

    /// The task stopped because it was cancelled: what a handler returns after
    /// [`Task::cancelled`](crate::Task::cancelled) fired.
    pub fn cancelled() -> TaskFailure {
        TaskFailure { kind: "cancelled".into(), message: "cancelled".into(), details: None, retryable: false }
    }

    /// The input cannot be worked on: a permanent failure of kind `invalid_input`.
    pub fn invalid_input(message: impl Into<String>) -> TaskFailure {
        TaskFailure::new(message).kind("invalid_input").permanent()
    }

    /// Sets the kind (1 to 64 bytes; longer is cut).
    pub fn kind(mut self, kind: impl Into<String>) -> TaskFailure {
        self.kind = kind.into();
        self
    }

    /// Adds details.
    pub fn details(mut self, details: serde_json::Value) -> TaskFailure {
        self.details = Some(details);
        self
    }

    /// No other attempt will do better.
    pub fn permanent(mut self) -> TaskFailure {
        self.retryable = false;
        self
    }

    /// Within the protocol's limits: a kind of 1 to 64 bytes, a message of at most 4 KiB,
    /// details of at most 64 KiB (dropped when larger), so the report is never refused.
    pub(super) fn bounded(mut self) -> TaskFailure {
        if self.kind.is_empty() {
            self.kind = "error".into();
        }
        truncate(&mut self.kind, MAX_KIND_BYTES);
        truncate(&mut self.message, MAX_TEXT_BYTES);
        if self.details.as_ref().is_some_and(|details| encoded_len(&from_json(details)) > MAX_SMALL_DATA_BYTES) {
            tracing::warn!("the failure's details are over 64 KiB; reporting it without them");
            self.details = None;
        }
        self
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for TaskFailure {}

/// Lets a handler use `?` on calls of this crate: an attempt that is over becomes
/// [`TaskFailure::cancelled`], anything else a retryable failure of kind `client`.
impl From<Error> for TaskFailure {
    fn from(error: Error) -> TaskFailure {
        match error {
            Error::TaskEnded { .. } => TaskFailure::cancelled(),
            other => TaskFailure::new(other.to_string()).kind("client"),
        }
    }
}

/// The level of a task's log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Detail.
    Debug,
    /// News.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something is wrong.
    Error,
}

impl LogLevel {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn failures_have_helpers_and_stay_within_limits() {
        let failure = TaskFailure::new("boom");
        assert_eq!((failure.kind.as_str(), failure.retryable), ("error", true));
        let failure = TaskFailure::new("quota").kind("quota").permanent().details(serde_json::json!({"left": 0}));
        assert_eq!(
            (failure.kind.as_str(), failure.retryable, failure.to_string().as_str()),
            ("quota", false, "quota: quota")
        );
        assert_eq!(TaskFailure::cancelled().kind, "cancelled");
        assert!(!TaskFailure::invalid_input("no text").retryable);

        let huge = TaskFailure::new("é".repeat(MAX_TEXT_BYTES))
            .kind("k".repeat(100))
            .details(serde_json::json!("x".repeat(MAX_SMALL_DATA_BYTES)))
            .bounded();
        assert!(huge.message.len() <= MAX_TEXT_BYTES && huge.kind.len() == MAX_KIND_BYTES);
        assert_eq!(huge.details, None);
        assert_eq!(TaskFailure::new("m").kind("").bounded().kind, "error");

        let ended = Error::TaskEnded { run_id: "r".into(), attempt: 1, reason: "cancelled".into() };
        assert_eq!(TaskFailure::from(ended), TaskFailure::cancelled());
        let other = TaskFailure::from(Error::NotEnded { run_id: "r".into(), waited: Duration::from_secs(1) });
        assert_eq!((other.kind.as_str(), other.retryable), ("client", true));
    }
}
