//! The OSP registry service: named registries of entries (agents, skills, tools, MCP
//! servers, ...), discovery by partial match on their resources, and agent liveness.
//!
//! Everything it knows is folded from the event log (`osp.v1.evt.entry.*`): any number of
//! instances may run, each with the whole state, and any may be killed at any moment.
//! Commands arrive on `osp.v1.in.registry.{register,unregister}`, queries on
//! `osp.v1.q.registry.{get,list,find,live,digest}`, heartbeats on `osp.v1.hb.<agent>`.
//! The wire formats are in `osp_protocol::registry` and `docs/protocol.md`.
//!
//! - [`entry`]: the aggregate, pure `decide` / `evolve`;
//! - [`view`] and [`criteria`]: the read model and `find`'s matching;
//! - `liveness`: heartbeats in, online / offline transitions out;
//! - `queries`: the query endpoints.

pub mod criteria;
pub mod entry;
mod liveness;
mod queries;
pub mod view;

use std::time::Duration;

use osp_protocol::registry::queries::{RegisterOutcome, UnregisterOutcome};
use osp_protocol::registry::{Command, ENTRY_KIND, OFFLINE_AFTER, SERVICE};
use osp_protocol::{AggregateRef, Encoding, Error as ProtocolError};
use osp_runtime::{CommandHandler, Executed, Inbound, InboxCounts, Running, Service, ServiceConfig, Stop};
use serde::Serialize;

use crate::entry::Entry;
use crate::view::RegistryView;

/// The aggregate kinds the registry's view folds (what `osp log verify` rebuilds).
pub const VIEW_KINDS: [&str; 1] = [ENTRY_KIND];

/// How a registry instance runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Silence after which an agent is marked offline.
    pub offline_after: Duration,
    pub service: ServiceConfig,
}

impl Default for Config {
    fn default() -> Config {
        Config { offline_after: OFFLINE_AFTER, service: ServiceConfig::default() }
    }
}

/// A running registry instance.
pub struct Registry {
    running: Running,
}

impl Registry {
    /// Starts an instance on `client`: applies the stream definitions, replays the log
    /// into its view, then serves commands, queries and heartbeats until
    /// [`Registry::shutdown`].
    pub async fn start(client: async_nats::Client, config: Config) -> anyhow::Result<Registry> {
        anyhow::ensure!(!config.offline_after.is_zero(), "the offline timeout must be more than zero");
        let mut service = Service::open(client, SERVICE, env!("CARGO_PKG_VERSION"), config.service).await?;
        let view = service.view::<RegistryView>(&VIEW_KINDS).await?;
        let executor = service.executor(&view);
        service.commands(Commands, executor.clone());
        service.queries(view, queries::all()).await?;
        let heartbeats = liveness::start(service.log().client(), executor, config.offline_after, service.shutdown());
        service.spawned(heartbeats.await?);
        tracing::info!(offline_after = ?config.offline_after, "agents are offline after this silence");
        Ok(Registry { running: service.running().await? })
    }

    /// What this instance's inbox has done.
    pub fn commands(&self) -> &InboxCounts {
        self.running.commands()
    }

    /// Stops taking work, finishes what is in hand, and returns.
    pub async fn shutdown(self) {
        self.running.shutdown().await
    }
}

impl Stop for Registry {
    async fn stop(self) {
        self.shutdown().await
    }
}

/// How the inbox reads registry commands and what it answers.
struct Commands;

/// What an accepted command answers, by command.
#[derive(Serialize)]
#[serde(untagged)]
enum Outcome {
    Register(RegisterOutcome),
    Unregister(UnregisterOutcome),
}

impl CommandHandler for Commands {
    type Aggregate = Entry;
    type View = RegistryView;
    type Command = Command;
    type Outcome = Outcome;

    fn commands(&self) -> &'static [&'static str] {
        osp_protocol::registry::COMMANDS
    }

    fn parse(&self, inbound: &Inbound, encoding: Encoding) -> Result<(AggregateRef, Command), ProtocolError> {
        let command = Command::parse(&inbound.command, encoding, &inbound.payload)?;
        Ok((command.key().aggregate(), command))
    }

    fn outcome(&self, command: &Command, executed: &Executed<Entry>) -> Outcome {
        match command {
            Command::Register(doc) => Outcome::Register(RegisterOutcome {
                registry: doc.registry.to_string(),
                name: doc.name.to_string(),
                revision: executed.state.state.revision,
                created: executed.state.state.revision == 1,
            }),
            Command::Unregister(_) => Outcome::Unregister(UnregisterOutcome { existed: true }),
        }
    }
}
