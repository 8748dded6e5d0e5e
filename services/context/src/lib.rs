//! The OSP context service (OSP "Context" and the matching Actions): key-value entries,
//! system-wide settings, preferences, environment entries and embeddings, each in a scope
//! (`global`, `run:<id>`, `agent:<name>`, `session:<id>`, `user:<name>`) that access rules
//! guard ([`access`]).
//!
//! Everything it knows is folded from the event log (`osp.v1.evt.scope.*` and
//! `osp.v1.evt.embeddings.*`, and the scheduler's `osp.v1.evt.run.*` and the registry's
//! `osp.v1.evt.entry.*` for who works on what): any number of instances may run, each with
//! the whole state, and any may be killed at any moment. Commands arrive on
//! `osp.v1.in.context.<command>`, queries on `osp.v1.q.context.<query>`. The wire formats
//! are in `osp_protocol::context` and `docs/protocol.md` §20.
//!
//! - [`aggregate`]: a scope's entries or embeddings, `decide` / `evolve`;
//! - [`access`]: who may read and write which scope, and the archive policy;
//! - [`view`]: the read model: [`scopes`] in memory while they may change (a run's leaves
//!   after the run ended), [`runs`] likewise; [`reads`]: what a query reads in a scope;
//!   [`index`]: the embeddings laid out for exact search;
//! - [`embed`]: a search by text, through a run of the `embed` capability;
//! - [`sealing`]: sensitive values encrypted before they reach the log.

pub mod access;
pub mod aggregate;
pub mod embed;
pub mod index;
mod input;
mod queries;
pub mod reads;
pub mod runs;
pub mod scopes;
pub mod sealing;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::EventLog;
use osp_protocol::context::queries::{Digest, EntryView};
use osp_protocol::context::Scope;
use osp_protocol::context::{Command, RemoveOutcome, UpsertOutcome, EMBEDDINGS_KIND, SCOPE_KIND, SERVICE};
use osp_protocol::registry::ENTRY_KIND;
use osp_protocol::scheduler::RUN_KIND;
use osp_protocol::{AggregateRef, Encoding, Error as ProtocolError};
use osp_runtime::{CommandHandler, Executed, Inbound, InboxCounts, Projection, Running, Service, ServiceConfig, Stop};
use serde::Serialize;

use crate::access::Access;
use crate::aggregate::ScopeState;
use crate::embed::Embedder;
pub use crate::input::ContextInput;
use crate::runs::RunRecord;
use crate::sealing::SealKey;
use crate::view::{entry_view, ContextView, InMemory, RevealPolicy};

/// How a context instance runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub service: ServiceConfig,
    /// Operators (`user:ana`) who may reveal sensitive values; agents may reveal the
    /// entries whose target names them.
    pub reveal_to: Vec<String>,
    /// How long a search by text waits for its embedding run.
    pub embed_timeout: Duration,
    /// The key sensitive values are sealed with on the log (the same on every instance).
    /// Without one, a sensitive `set_env` is refused and sealed values cannot be revealed.
    pub seal_key: Option<SealKey>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            service: ServiceConfig::default(),
            reveal_to: Vec::new(),
            embed_timeout: Duration::from_secs(10),
            seal_key: None,
        }
    }
}

/// Every kind of event the view reads: the service's own, the scheduler's runs and the
/// registry's entries.
pub const KINDS: [&str; 4] = [SCOPE_KIND, EMBEDDINGS_KIND, RUN_KIND, ENTRY_KIND];

/// A running context instance.
pub struct Context {
    running: Running,
    view: Projection<ContextView>,
}

impl Context {
    /// Starts an instance on `client`: applies the stream definitions, replays the scopes,
    /// runs and registry entries into its view, then serves commands and queries until
    /// [`Context::shutdown`].
    pub async fn start(client: async_nats::Client, config: Config) -> anyhow::Result<Context> {
        if config.seal_key.is_none() {
            tracing::warn!("no seal key (OSP_CONTEXT_SEAL_KEY): sensitive environment values will be refused");
        }
        let mut service = Service::open(client, SERVICE, env!("CARGO_PKG_VERSION"), config.service).await?;
        let view = service.view::<ContextView>(&KINDS).await?;
        let executor = service.executor(&view);
        let log = service.log().clone();
        let policy = Arc::new(RevealPolicy { operators: config.reveal_to, key: config.seal_key.clone() });
        let embedder = Embedder::new(log.clone(), config.embed_timeout);
        service.commands(Commands { log, view: view.clone(), seal_key: config.seal_key }, executor);
        service.queries(view.clone(), queries::all(policy, embedder)).await?;
        Ok(Context { running: service.running().await?, view })
    }

    /// What this instance's inbox has done.
    pub fn commands(&self) -> &InboxCounts {
        self.running.commands()
    }

    /// This instance's own digest of its state (a `digest` query is answered by any
    /// instance): for comparing instances.
    pub fn digest(&self) -> Result<Digest, ProtocolError> {
        self.view.read().digest()
    }

    /// What this instance holds in memory (runs' facts, scopes): for tests of its bounds.
    pub fn in_memory(&self) -> InMemory {
        self.view.read().in_memory()
    }

    /// Stops taking work, finishes what is in hand, and returns.
    pub async fn shutdown(self) {
        self.running.shutdown().await
    }
}

impl Stop for Context {
    async fn stop(self) {
        self.shutdown().await
    }
}

/// How the inbox reads context commands, admits them and what it answers.
struct Commands {
    log: EventLog,
    view: Projection<ContextView>,
    seal_key: Option<SealKey>,
}

impl Commands {
    /// Whether `actor` may write `scope`. Whether a run's scope is archived is recalled from
    /// the log when the run is not in memory (it ended and left, or it is not known here).
    async fn may_write(&self, actor: &str, scope: &Scope) -> Result<(), ProtocolError> {
        let run_ended = match scope {
            Scope::Run(run) => {
                let aggregate = AggregateRef::new(RUN_KIND, run.as_str())?;
                let recalled = self.view.recall(&aggregate, RunRecord::ended).await;
                recalled.map_err(|error| queries::unreadable(format!("run {run}"), error))?.unwrap_or(false)
            }
            _ => false,
        };
        self.view.read().check(actor, Access::Write { run_ended }, scope)
    }

    /// `command` as the aggregate decides it: a sensitive environment value sealed with
    /// the service's key, so the log never holds it in clear (deterministically: the same
    /// value sent again is recognised as the same).
    fn seal(&self, command: &Command) -> Result<Command, ProtocolError> {
        let Command::Set { scope, entry } = command else { return Ok(command.clone()) };
        if !entry.sensitive || entry.sealed {
            return Ok(command.clone());
        }
        let Some(key) = &self.seal_key else {
            return Err(ProtocolError::Invalid {
                field: "sensitive".into(),
                reason: "this context service has no seal key, so it cannot keep a sensitive value off the log in clear; start it with OSP_CONTEXT_SEAL_KEY".into(),
            });
        };
        let value = entry.value.as_str().ok_or_else(|| ProtocolError::Invalid {
            field: "value".into(),
            reason: "an environment value is a string".into(),
        })?;
        let mut sealed = entry.clone();
        sealed.value = key.seal(&sealing::place(scope, &entry.key), value).into();
        sealed.sealed = true;
        Ok(Command::Set { scope: scope.clone(), entry: sealed })
    }
}

/// A command as the inbox holds it: what the aggregate decides, who sent it (access is
/// checked on admission), and its id (whether a removal removed anything is whether the
/// removal is its doing).
#[derive(Clone)]
struct Request {
    command: Command,
    actor: String,
    id: String,
}

impl From<Request> for Command {
    fn from(request: Request) -> Command {
        request.command
    }
}

/// What an accepted command answers, by command.
#[derive(Serialize)]
#[serde(untagged)]
enum Outcome {
    /// `set`, `set_setting`, `set_preference`, `set_env`: the entry (masked when sensitive).
    Entry(Box<EntryView>),
    /// The removals.
    Removed(RemoveOutcome),
    /// `upsert_embeddings`.
    Upserted(UpsertOutcome),
}

/// How long a command refused by the access rules waits for the log's latest events (a
/// run an agent just started) before the refusal is final.
const ACCESS_CATCH_UP: Duration = Duration::from_secs(2);

impl CommandHandler for Commands {
    type Aggregate = ScopeState;
    type View = ContextView;
    type Command = Request;
    type Outcome = Outcome;

    fn commands(&self) -> &'static [&'static str] {
        osp_protocol::context::COMMANDS
    }

    fn parse(&self, inbound: &Inbound, encoding: Encoding) -> Result<(AggregateRef, Request), ProtocolError> {
        let command = Command::parse(&inbound.command, encoding, &inbound.payload)?;
        let request = Request { command, actor: inbound.actor.clone(), id: inbound.id.clone() };
        Ok((request.command.aggregate(), request))
    }

    /// The sender must be allowed to write the scope; a refusal is final only once this
    /// instance has applied the log as far as it goes (the run the agent just started may
    /// not be applied here yet).
    async fn admit(&self, _: &AggregateRef, request: &Request) -> Result<Command, ProtocolError> {
        let scope = request.command.scope();
        if self.may_write(&request.actor, scope).await.is_err() {
            if let Ok(last) = self.log.last_sequence().await {
                let _ = self.view.wait_for(last, ACCESS_CATCH_UP).await;
            }
            self.may_write(&request.actor, scope).await?;
        }
        self.seal(&request.command)
    }

    fn outcome(&self, request: &Request, executed: &Executed<ScopeState>) -> Outcome {
        let state = &executed.state.state;
        match &request.command {
            Command::Set { scope, entry } => {
                let stored = state.entry(entry.section, &entry.key).cloned().unwrap_or_else(|| {
                    // `decide` stores the entry or refuses; this is a bug, said loudly.
                    tracing::error!(%scope, key = %entry.key, "an accepted set left no entry");
                    aggregate::Stored {
                        entry: Arc::new(entry.clone()),
                        revision: 0,
                        updated_at: Default::default(),
                        updated_by: request.actor.clone(),
                        seq: 0,
                    }
                });
                let mut view = entry_view(scope, &stored, false);
                view.seq = executed.seq;
                Outcome::Entry(Box::new(view))
            }
            Command::Remove { .. } | Command::RemoveEmbedding { .. } => {
                Outcome::Removed(RemoveOutcome { existed: executed.state.applied(&request.id).is_some() })
            }
            Command::Upsert { entries, .. } => Outcome::Upserted(UpsertOutcome {
                upserted: entries.len() as u64,
                total: state.embeddings.len() as u64,
                dimension: state.dimension.unwrap_or_default() as u64,
            }),
        }
    }
}
