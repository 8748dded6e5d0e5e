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
mod liveness;
mod queries;
pub mod run;
pub mod run_view;
mod shell;
pub mod view;
pub mod workflow;

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::{
    serve_queries, CommandHandler, Definitions, EventLog, Executed, Executor, Inbound, Inbox, InboxCounts, Projection,
    Running, Snapshots, Timers, DEFAULT_ACK_WAIT,
};
use osp_protocol::quality;
use osp_protocol::registry::ENTRY_KIND;
use osp_protocol::scheduler::{
    Command, Origin, ReportKind, ReportOutcome, RunOutcome, StartOutcome, RUN_KIND, SERVICE,
};
use osp_protocol::{subject, AggregateRef, Encoding, Error as ProtocolError, Token};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::agents::AgentsView;
use crate::catalog::CatalogView;
use crate::commands::RunCommand;
use crate::run::{Phase, Run};
use crate::shell::Shell;
use crate::view::SchedulerView;

/// The aggregate kinds the scheduler's run view folds (what `osp log verify` rebuilds).
pub const VIEW_KINDS: [&str; 1] = [RUN_KIND];

/// How a scheduler instance runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long an instance has to handle a command, an event's effects or a fired
    /// timer before another instance gets it (how soon a crashed instance's work is
    /// taken up again).
    pub ack_wait: Duration,
    /// The streams and consumers to apply at start-up.
    pub definitions: Definitions,
    /// When the views start from snapshots and save them.
    pub snapshots: Snapshots,
}

impl Default for Config {
    fn default() -> Config {
        Config { ack_wait: DEFAULT_ACK_WAIT, definitions: Definitions::builtin(), snapshots: Snapshots::default() }
    }
}

/// A running scheduler instance.
pub struct Scheduler {
    running: Running,
}

impl Scheduler {
    /// Starts an instance on `client`: applies the stream definitions, replays the log
    /// into its views, then serves commands, queries, effects, timers and heartbeats
    /// until [`Scheduler::shutdown`].
    pub async fn start(client: async_nats::Client, config: Config) -> anyhow::Result<Scheduler> {
        anyhow::ensure!(!config.ack_wait.is_zero(), "the ack wait must be more than zero");
        let shutdown = CancellationToken::new();
        let log = EventLog::start(client.clone(), &config.definitions).await?;
        let service = Token::new("service", SERVICE).expect("valid token");
        let runs_filter = subject::events_of_kind(&Token::new("kind", VIEW_KINDS[0]).expect("valid token"));
        let snapshots = config.snapshots;
        let runs = Projection::<SchedulerView>::start_with(&log, &[&runs_filter], snapshots, shutdown.clone()).await?;
        let entries_filter = subject::events_of_kind(&Token::new("kind", ENTRY_KIND).expect("valid token"));
        let agents =
            Projection::<AgentsView>::start_with(&log, &[&entries_filter], snapshots, shutdown.clone()).await?;
        let rules_filter = subject::events_of_kind(&Token::new("kind", quality::RULE_KIND).expect("valid token"));
        let catalog =
            Projection::<CatalogView>::start_with(&log, &[&rules_filter], snapshots, shutdown.clone()).await?;
        let executor = Arc::new(Executor::new(log.clone(), runs.clone()));
        let timers = Timers::open(log.jetstream(), service.clone()).await?;
        let shell = Arc::new(Shell {
            log: log.clone(),
            executor: executor.clone(),
            runs: runs.clone(),
            agents: agents.clone(),
            timers,
        });
        let handler = Commands { log: log.clone(), runs: runs.clone(), agents, catalog };
        let inbox = Inbox::new(service.clone(), log, handler, executor).with_ack_wait(config.ack_wait);
        let counts = inbox.counts();
        let mut tasks = vec![inbox.serve(shutdown.clone()).await?];
        tasks.push(
            serve_queries(&client, &service, env!("CARGO_PKG_VERSION"), runs, queries::all(), shutdown.clone()).await?,
        );
        tasks.extend(consumers::start(shell.clone(), config.ack_wait, shutdown.clone()).await?);
        tasks.extend(liveness::start(&client, shell, shutdown.clone()).await?);
        client.flush().await?;
        tracing::info!("scheduler started");
        Ok(Scheduler { running: Running::new(shutdown, tasks, counts) })
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
        if self.runs.read().run(aggregate.id.as_str()).is_some_and(Run::exists) {
            return Ok(decision);
        }
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
