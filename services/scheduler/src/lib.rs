//! The OSP scheduler service: runs of one task, executed by the agents of a capability,
//! with timeout, retry, cancel, approval, pause and input — every transition an event
//! on the log, every timer durable.
//!
//! Everything it knows is folded from the event log (`osp.v1.evt.run.*`, and the
//! registry's `osp.v1.evt.entry.*` for which agents exist): any number of instances may
//! run, each with the whole state, and any may be killed at any moment. Commands arrive
//! on `osp.v1.in.scheduler.<command>`, queries on `osp.v1.q.scheduler.{get,list,digest}`,
//! task heartbeats on `osp.v1.task.<run_id>.heartbeat`. The wire formats are in
//! `osp_protocol::scheduler` and `docs/protocol.md`.
//!
//! - [`run`]: the aggregate's state and `evolve`; [`commands`]: its decisions;
//! - [`effects`]: what events ask of the world, as data;
//! - [`view`], [`agents`] and [`catalog`]: the read models; [`run_view`]: a run as
//!   queries show it;
//! - `shell`, `consumers`, `liveness`, `queries`: the I/O around them.

pub mod agents;
pub mod catalog;
pub mod commands;
mod consumers;
pub mod effects;
pub mod listing;
mod liveness;
mod queries;
pub mod run;
pub mod run_view;
mod shell;
pub mod view;
pub mod workflow;

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::EventLog;
use osp_protocol::quality;
use osp_protocol::registry::ENTRY_KIND;
use osp_protocol::scheduler::{
    Command, Origin, ReportKind, ReportOutcome, RunOutcome, StartOutcome, RUN_KIND, SERVICE,
};
use osp_protocol::{AggregateRef, Encoding, Error as ProtocolError, Token};
use osp_runtime::{CommandHandler, Executed, Inbound, InboxCounts, Projection, Running, Service, ServiceConfig, Stop};
use serde::Serialize;

use crate::agents::AgentsView;
use crate::catalog::CatalogView;
use crate::commands::RunCommand;
use crate::consumers::{Audits, RunEffects};
use crate::run::{Phase, Run};
use crate::shell::Shell;
use crate::view::SchedulerView;

/// The aggregate kinds the scheduler's run view folds (what `osp log verify` rebuilds).
pub const VIEW_KINDS: [&str; 1] = [RUN_KIND];

/// A scheduler instance needs nothing beyond what every service is configured with.
pub type Config = ServiceConfig;

/// Fired timers one instance decides at once.
const TIMERS_IN_FLIGHT: usize = 256;

/// A running scheduler instance.
pub struct Scheduler {
    running: Running,
    runs: Projection<SchedulerView>,
}

impl Scheduler {
    /// Starts an instance on `client`: applies the stream definitions, replays the log
    /// into its views, then serves commands, queries, effects, timers and heartbeats
    /// until [`Scheduler::shutdown`].
    pub async fn start(client: async_nats::Client, config: Config) -> anyhow::Result<Scheduler> {
        let mut service = Service::open(client, SERVICE, env!("CARGO_PKG_VERSION"), config).await?;
        let runs = service.partitioned_view::<SchedulerView>(&VIEW_KINDS).await?;
        let agents = service.view::<AgentsView>(&[ENTRY_KIND]).await?;
        let catalog = service.view::<CatalogView>(&[quality::RULE_KIND]).await?;
        let executor = service.executor(&runs);
        let log = service.log().clone();
        let shell = Arc::new(Shell {
            log: log.clone(),
            executor: executor.clone(),
            runs: runs.clone(),
            agents: agents.clone(),
            timers: service.timers().await?,
        });
        service.commands(Commands { log, runs: runs.clone(), agents, catalog }, executor);
        service.queries(runs.clone(), queries::all()).await?;
        service.react(Arc::new(RunEffects(shell.clone()))).await?;
        service.react(Arc::new(Audits(shell.clone()))).await?;
        service.on_timers(&shell.timers, shell.clone(), TIMERS_IN_FLIGHT).await?;
        let heartbeats = liveness::start(service.log().client(), shell, service.shutdown());
        service.spawned(heartbeats.await?);
        Ok(Scheduler { running: service.running().await?, runs })
    }

    /// How many runs this instance holds in memory: those not ended, and those that ended
    /// within the grace period (`keep_finished`).
    pub fn runs_in_memory(&self) -> usize {
        self.runs.read().resident()
    }

    /// How many partitions of the runs this instance has gained and taken in from their
    /// snapshots (`--partitions`), rather than folding their history from the first event.
    pub fn partitions_restored(&self) -> u64 {
        self.runs.partitions_restored()
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

impl Stop for Scheduler {
    async fn stop(self) {
        self.shutdown().await
    }
}

/// How the inbox reads scheduler commands, admits them and what it answers.
struct Commands {
    log: EventLog,
    runs: Projection<SchedulerView>,
    agents: Projection<AgentsView>,
    catalog: Projection<CatalogView>,
}

/// What an accepted command answers, by command.
#[derive(Serialize)]
#[serde(untagged)]
enum Outcome {
    Run(RunOutcome),
    Start(StartOutcome),
    Report(ReportOutcome),
}

/// How long a submit for a capability nobody seems to offer (or naming a rule the catalog
/// does not seem to hold) waits for the log's latest events to be applied before it is
/// refused.
const CATCH_UP: Duration = Duration::from_secs(2);

impl Commands {
    /// The refusal of a run needing one of `capabilities` that no registered agent offers.
    fn unknown_capability(&self, capabilities: &[&str]) -> Option<ProtocolError> {
        let agents = self.agents.read();
        let capability = capabilities.iter().find(|c| !agents.offers(c))?;
        let known = agents.capabilities();
        Some(ProtocolError::NotFound {
            field: "capability".into(),
            value: (*capability).to_owned(),
            reason: format!(
                "no registered agent offers it (offered: {}); set options.waitForAgent to queue the run until one does",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ),
        })
    }

    /// The refusal of a run whose checks name one of `rules` that the catalog lacks.
    fn unknown_rule(&self, rules: &[&str]) -> Option<ProtocolError> {
        let catalog = self.catalog.read();
        let rule = catalog.missing(rules.iter().copied())?;
        let known = catalog.names();
        Some(ProtocolError::NotFound {
            field: "options.checks.rules".into(),
            value: rule.to_owned(),
            reason: format!(
                "the quality service's catalog has no rule by that name (it holds: {}); add it with `osp rules add`",
                if known.is_empty() { "none".to_owned() } else { known.join(", ") }
            ),
        })
    }
}

impl CommandHandler for Commands {
    type Aggregate = Run;
    type View = SchedulerView;
    type Command = Command;
    type Outcome = Outcome;

    fn commands(&self) -> &'static [&'static str] {
        osp_protocol::scheduler::COMMANDS
    }

    fn parse(&self, inbound: &Inbound, encoding: Encoding) -> Result<(AggregateRef, Command), ProtocolError> {
        let origin = Origin { command_id: &inbound.id, actor: &inbound.actor };
        let command = Command::parse(&inbound.command, encoding, &inbound.payload, origin)?;
        let aggregate =
            AggregateRef { kind: Token::new("kind", RUN_KIND).expect("valid"), id: command.run_id().clone() };
        Ok((aggregate, command))
    }

    /// A new run's capabilities (its task's, or every one its workflow names) must be
    /// offered by registered agents, unless the run asks to wait for them; the rules its
    /// checks name must be in the quality service's catalog.
    async fn admit(&self, aggregate: &AggregateRef, command: &Command) -> Result<RunCommand, ProtocolError> {
        let decision = RunCommand::from(command.clone());
        let Command::Submit(submit) = command else { return Ok(decision) };
        let capabilities: Vec<&str> = match (&submit.capability, &submit.workflow) {
            (_, _) if submit.options.wait_for_agent => vec![],
            (Some(capability), _) => vec![capability.as_str()],
            (None, Some(workflow)) => workflow.capabilities().into_iter().collect(),
            (None, None) => vec![],
        };
        let mut rules: Vec<&str> =
            submit.options.checks.iter().flat_map(|c| c.rules.iter().map(String::as_str)).collect();
        rules.extend(submit.workflow.iter().flat_map(|workflow| workflow.checked_rules()));
        let refusal = || self.unknown_capability(&capabilities).or_else(|| self.unknown_rule(&rules));
        if refusal().is_none() {
            return Ok(decision);
        }
        // A submit of a run that exists is answered with the run, whatever agents there
        // are now (the run may have ended long ago, and left memory: ask the log).
        if self.log.last_of(&aggregate.subject()).await.is_ok_and(|last| last > 0) {
            return Ok(decision);
        }
        // The registration or the rule may be on the log and not applied here yet.
        if let Ok(last) = self.log.last_sequence().await {
            let _ = self.agents.wait_for(last, CATCH_UP).await;
            let _ = self.catalog.wait_for(last, CATCH_UP).await;
        }
        refusal().map_or(Ok(decision), Err)
    }

    /// Every run of a workflow's tree carries its root as its correlation id.
    fn correlation_id(&self, aggregate: &AggregateRef, _: &Command) -> Option<String> {
        Some(shell::root_of(&self.runs, aggregate.id.as_str()))
    }

    fn outcome(&self, command: &Command, executed: &Executed<Run>) -> Outcome {
        let run = &executed.state.state;
        let status = run.status();
        match command {
            Command::Report(report) if matches!(report.kind, ReportKind::Started) => {
                let go = run.phase.held() == Some((report.attempt, report.agent.as_str()))
                    && !matches!(run.phase, Phase::Cancelling { .. });
                let reason = (!go).then(|| match run.paused {
                    true => "the run is paused; it will be dispatched again on resume".to_owned(),
                    false => format!("the run is {status}"),
                });
                Outcome::Start(StartOutcome { go, reason })
            }
            Command::Report(_) => {
                Outcome::Report(ReportOutcome { status, cancelling: matches!(run.phase, Phase::Cancelling { .. }) })
            }
            _ => Outcome::Run(RunOutcome {
                run_id: command.run_id().to_string(),
                status,
                paused: run.paused,
                created: matches!(command, Command::Submit(_)) && executed.appended > 0,
            }),
        }
    }
}
