//! A running service instance: its tasks, the token that stops them, and what its inbox
//! has done. Every service's `start` returns one of these inside its own type.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::InboxCounts;

/// The tasks of one running instance.
pub struct Running {
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    counts: Arc<InboxCounts>,
}

impl Running {
    /// The tasks `tasks`, stopped by `shutdown`, with the inbox's `counts`.
    pub fn new(shutdown: CancellationToken, tasks: Vec<JoinHandle<()>>, counts: Arc<InboxCounts>) -> Running {
        Running { shutdown, tasks, counts }
    }

    /// What this instance's inbox has done.
    pub fn commands(&self) -> &InboxCounts {
        &self.counts
    }

    /// Stops taking work, lets every task finish what it has in hand, and returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Returns when the process is asked to stop: Ctrl-C, or SIGTERM (what `kill` and
/// service managers send).
pub async fn stop_requested() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
