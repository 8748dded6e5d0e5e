//! An agent's presence: register, heartbeat in the background, unregister on shutdown.
//!
//! ```no_run
//! # async fn demo(client: &osp_client::Client) -> osp_client::Result<()> {
//! let agent = osp_client::Agent::builder("summarizer-1")
//!     .description("Summarises documents")
//!     .capabilities(["summarize"])
//!     .max_concurrency(4)
//!     .start(client)
//!     .await?;
//! // ... take tasks ...
//! agent.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! Dropping an [`Agent`] without [`Agent::shutdown`] stops its heartbeats without
//! unregistering, as a crash would: the registry marks it offline after its timeout.

use std::time::Duration;

use osp_protocol::registry::document::from_json;
use osp_protocol::registry::queries::RegisterOutcome;
use osp_protocol::registry::{Document, EntryDoc, EntryName, AGENTS, HEARTBEAT_INTERVAL};
use osp_protocol::subject;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{Answer, Client, Result};

/// The shortest heartbeat interval (a zero one would stop the timer, not speed it up).
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);

/// How an agent describes itself; see [`Agent::builder`].
#[derive(Clone, Debug)]
pub struct AgentBuilder {
    name: String,
    description: String,
    capabilities: Vec<String>,
    max_concurrency: u32,
    version: Option<String>,
    card: serde_json::Map<String, serde_json::Value>,
    metadata: Option<Document>,
    heartbeat: Duration,
}

/// A registered agent that heartbeats until shut down or dropped.
pub struct Agent {
    name: String,
    client: Client,
    registered: Answer<RegisterOutcome>,
    _heartbeats: DropGuard,
}

impl Agent {
    /// An agent named `name` (unique among agents; a subject token of at most 95 bytes).
    pub fn builder(name: impl Into<String>) -> AgentBuilder {
        AgentBuilder {
            name: name.into(),
            description: String::new(),
            capabilities: Vec::new(),
            max_concurrency: 1,
            version: None,
            card: serde_json::Map::new(),
            metadata: None,
            heartbeat: HEARTBEAT_INTERVAL,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the registry answered to its registration.
    pub fn registration(&self) -> &Answer<RegisterOutcome> {
        &self.registered
    }

    /// Stops heartbeating and unregisters.
    pub async fn shutdown(self) -> Result<()> {
        drop(self._heartbeats);
        self.client.registry().unregister(AGENTS, &self.name, Some("shut down".into())).await?;
        Ok(())
    }
}

impl AgentBuilder {
    /// What it does, for people.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// What it can do: each capability names the work queue it takes tasks from.
    pub fn capabilities<S: Into<String>>(mut self, capabilities: impl IntoIterator<Item = S>) -> Self {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Tasks it runs at once (default 1).
    pub fn max_concurrency(mut self, max: u32) -> Self {
        self.max_concurrency = max;
        self
    }

    /// Its version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// Another field of its card (an endpoint, a model, a region), matched by `find`.
    pub fn card_field(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.card.insert(key.into(), value);
        self
    }

    /// Metadata kept with its entry.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = Some(from_json(&metadata));
        self
    }

    /// How often it heartbeats (default 5 s; keep it well under the registry's timeout).
    /// At least every 10 ms is taken as every 10 ms.
    pub fn heartbeat_interval(mut self, every: Duration) -> Self {
        self.heartbeat = every.max(MIN_HEARTBEAT);
        self
    }

    /// The registry entry this builder describes, checked.
    pub fn entry(&self) -> Result<EntryDoc> {
        let mut card = self.card.clone();
        card.insert("capabilities".into(), serde_json::json!(self.capabilities));
        card.insert("max_concurrency".into(), serde_json::json!(self.max_concurrency));
        if let Some(version) = &self.version {
            card.insert("version".into(), serde_json::json!(version));
        }
        let resource = from_json(&serde_json::Value::Object(card));
        Ok(EntryDoc::new(AGENTS, &self.name, self.description.clone(), resource, self.metadata.clone())?)
    }

    /// Registers, waits for the registry to accept, and starts heartbeating.
    pub async fn start(self, client: &Client) -> Result<Agent> {
        let entry = self.entry()?;
        let client = client.clone().with_actor(format!("agent:{}", self.name));
        let registered = client.registry().register(&entry).await?;
        let stop = CancellationToken::new();
        tokio::spawn(heartbeat(client.nats().clone(), entry.name.clone(), self.heartbeat, stop.clone()));
        Ok(Agent { name: self.name, client, registered, _heartbeats: stop.drop_guard() })
    }
}

/// Beats every `every` until stopped. A beat is a core NATS message, so a beat lost while
/// disconnected is simply not heard; the next one counts.
async fn heartbeat(nats: async_nats::Client, name: EntryName, every: Duration, stop: CancellationToken) {
    let subject = subject::heartbeat(name.as_token());
    let mut ticks = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(error) = nats.publish(subject.clone(), bytes::Bytes::new()).await {
                    tracing::debug!(%error, "heartbeat not sent");
                }
            }
        }
    }
}
