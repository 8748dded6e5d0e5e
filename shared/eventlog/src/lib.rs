//! The JetStream event store every OSP service is built on.
//!
//! One stream (`OSP_EVENTS`) holds the append-only log; each aggregate (a run, an agent,
//! a context scope, ...) has its own subject `osp.v1.evt.<kind>.<id>`. This crate owns
//! the ways of using it that every service shares:
//! - [`Definitions`]: the streams and consumers of `streams/`, applied at start-up;
//! - [`EventLog::append`]: optimistic concurrency per aggregate, dedupe, atomic batches,
//!   and the per-aggregate hash chain;
//! - [`EventLog::load`] and [`EventLog::follow`]: history of one aggregate, and replay
//!   then live follow of any filter, with a caught-up mark;
//! - [`WorkConsumer`]: shared durable consumers (inbox, work queues) with explicit acks;
//! - [`Timers`]: durable timers kept by the server;
//! - [`EventLog::send_command`]: a command to another service's inbox;
//! - [`ChainVerifier`] and [`EventLog::verify`]: proof the history was not altered.
//!
//! How a service is built on it (aggregates, views, the inbox, queries, effects) is the
//! business of `osp-runtime`; this crate knows only streams and messages.

mod append;
mod definitions;
mod error;
mod outbound;
mod read;
mod timers;
mod verify;
mod work;

use async_nats::jetstream::{self, stream};
use osp_protocol::nats_server;

pub use append::{Appended, Head, NewEvent};
pub use definitions::{ConsumerDefinition, Definitions, EVENTS_STREAM, INBOX_STREAM, TIMERS_STREAM, WORK_STREAM};
pub use error::{Error, Result};
pub use read::{Delivered, Follow, FromStored, Loaded, LogItem, Malformed, Recorded, Start, StoredMessage};
pub use timers::{fired_timer_id, Timers};
pub use verify::{ChainVerifier, Problem, ProblemKind, VerifyReport};
pub use work::{Deliveries, Delivery, WorkConfig, WorkConsumer};

/// A connection to the event log.
#[derive(Clone, Debug)]
pub struct EventLog {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    events: stream::Stream,
    /// Bounds this process's atomic batches in flight (see [`MAX_BATCHES_IN_FLIGHT`]).
    batch_permits: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Atomic batches one process keeps in flight. The server holds at most 50 per stream
/// (across all clients) and drops batches beyond that, which a burst of retries only
/// makes worse; queueing here keeps a few instances together under the server's cap.
pub const MAX_BATCHES_IN_FLIGHT: usize = 16;

impl EventLog {
    /// Opens the event log on `client`. The streams must exist: apply [`Definitions`]
    /// first (every service does at start-up). Fails with a clear error on a server
    /// OSP does not run on (see [`check_server_version`]).
    pub async fn open(client: async_nats::Client) -> Result<EventLog> {
        let jetstream = jetstream::new(client.clone());
        let events = jetstream.get_stream(EVENTS_STREAM).await.map_err(|e| Error::Definition {
            file: EVENTS_STREAM.into(),
            reason: format!(
                "cannot open the event stream ({e}); create the OSP streams first: `osp dev --nats-url <url>` does, as does every service at start-up"
            ),
        })?;
        // Only now, after a round trip, is the server's version known for certain
        // (a client that retries its initial connect returns before connecting).
        check_server_version(&client.server_info().version)?;
        let batch_permits = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_BATCHES_IN_FLIGHT));
        Ok(EventLog { client, jetstream, events, batch_permits })
    }

    /// What every process does at start-up: confirm the server is new enough (before
    /// touching anything, so an old server gets that error and not a confusing
    /// stream-config one), apply `definitions`, open the log.
    pub async fn start(client: async_nats::Client, definitions: &Definitions) -> Result<EventLog> {
        client
            .flush()
            .await
            .map_err(|e| Error::Unavailable { operation: "connect to nats-server", reason: e.to_string() })?;
        check_server_version(&client.server_info().version)?;
        definitions.apply(&jetstream::new(client.clone())).await?;
        EventLog::open(client).await
    }

    /// The JetStream context this log uses (for consumers and timers).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// On how many servers the log is kept (what caches beside it should match).
    pub fn replicas(&self) -> usize {
        self.events.cached_info().config.num_replicas.max(1)
    }

    /// The NATS connection this log uses (for replies and subscriptions).
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
}

/// Connects a service process named `name` to the comma-separated server list `urls`
/// (several for a cluster), retrying the first connection until a server answers.
pub async fn connect(name: &str, urls: &str) -> Result<async_nats::Client> {
    let invalid = |url: &str, e: &dyn std::fmt::Display| Error::Unavailable {
        operation: "read the NATS URL",
        reason: format!("invalid NATS URL {url:?}: {e}"),
    };
    let servers = urls
        .split(',')
        .map(|url| url.trim().parse::<async_nats::ServerAddr>().map_err(|e| invalid(url, &e)))
        .collect::<Result<Vec<_>>>()?;
    async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connect(servers)
        .await
        .map_err(|e| Error::Unavailable { operation: "connect to NATS", reason: format!("{urls}: {e}") })
}

/// Refuses a server OSP does not run on: older than [`nats_server::MIN_VERSION`], or
/// giving a version that cannot be read.
pub fn check_server_version(version: &str) -> Result<()> {
    if nats_server::supported(version) {
        return Ok(());
    }
    Err(Error::ServerTooOld { found: version.to_owned(), required: nats_server::MIN_VERSION })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_version_gate() {
        for ok in ["2.12.0", "2.15.1", "v2.14.3", "3.0.0", "2.12.0-beta.1"] {
            assert!(check_server_version(ok).is_ok(), "{ok}");
        }
        for old in ["2.9.10", "2.11.9", "", "garbage"] {
            let err = check_server_version(old).unwrap_err().to_string();
            assert!(err.contains("2.12.0 or newer"), "{err}");
        }
    }
}
