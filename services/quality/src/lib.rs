//! The OSP quality service (OSP "Checks", the lifecycle's Evaluation phase): a catalog of
//! named rules, and checks of a task's output against them, each recorded as an audit
//! entry with its findings and opinion.
//!
//! Everything it knows is folded from the event log (`osp.v1.evt.rule.*` and
//! `osp.v1.evt.audit.*`): any number of instances may run, each with the whole state, and
//! any may be killed at any moment. Commands arrive on
//! `osp.v1.in.quality.{add_rule,update_rule,remove_rule,check}`, queries on
//! `osp.v1.q.quality.{rules,rule,audit,audits,digest}`. The wire formats are in
//! `osp_protocol::quality` and `docs/quality-design.md`.
//!
//! - [`rules`]: the pure evaluator of the built-in rule kinds;
//! - [`aggregate`]: rules and audit entries as one aggregate type, with [`catalog`]'s
//!   and [`audit`]'s pure decisions;
//! - [`view`]: the read model; `queries`: its endpoints; `effects`: the runs and the
//!   deadlines of open checks.
//!
//! A check that needs agents — a judge (capability `judge`), or a `custom` rule — is
//! opened, its parts submitted as runs of the scheduler (`effects`), and recorded when
//! they have ended or its deadline passed. Runs gated on checks are the scheduler's
//! business: it sends `check` and reads the audit entry from the log.

pub mod aggregate;
pub mod audit;
pub mod catalog;
mod effects;
mod queries;
pub mod rules;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::EventLog;
use osp_protocol::quality::queries::{Digest, RuleView};
use osp_protocol::quality::{CheckOutcome, Command, OpenCheck, RemoveOutcome, Rule, AUDIT_KIND, RULE_KIND, SERVICE};
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::{RunEvent, TaskError, RUN_KIND};
use osp_protocol::{AggregateRef, Encoding, Error as ProtocolError, Token};
use osp_runtime::{CommandHandler, Executed, Inbound, InboxCounts, Projection, Running, Service, ServiceConfig, Stop};
use serde::Serialize;

use crate::aggregate::{CheckCommand, QualityCommand, Record};
use crate::audit::RunEnd;
use crate::effects::AuditEffects;
use crate::view::QualityView;

/// The aggregate kinds the quality service's view folds (what `osp log verify` rebuilds).
pub const VIEW_KINDS: [&str; 2] = [RULE_KIND, AUDIT_KIND];

/// A quality instance needs nothing beyond what every service is configured with.
pub type Config = ServiceConfig;

/// A running quality instance.
pub struct Quality {
    running: Running,
    view: Projection<QualityView>,
}

impl Quality {
    /// Starts an instance on `client`: applies the stream definitions, replays the rules
    /// and audit entries into its view, then serves commands and queries until
    /// [`Quality::shutdown`].
    pub async fn start(client: async_nats::Client, config: Config) -> anyhow::Result<Quality> {
        let mut service = Service::open(client, SERVICE, env!("CARGO_PKG_VERSION"), config).await?;
        let view = service.view::<QualityView>(&VIEW_KINDS).await?;
        let executor = service.executor(&view);
        let log = service.log().clone();
        let effects = Arc::new(AuditEffects {
            log: log.clone(),
            executor: executor.clone(),
            view: view.clone(),
            timers: service.timers().await?,
        });
        service.inbox(Commands { log, view: view.clone() }, executor).await?;
        service.queries(view.clone(), queries::all()).await?;
        service.react(effects.clone()).await?;
        service.on_timers(&effects.timers, effects.clone(), effects::IN_FLIGHT).await?;
        Ok(Quality { running: service.running().await?, view })
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

    /// Stops taking work, finishes what is in hand, and returns.
    pub async fn shutdown(self) {
        self.running.shutdown().await
    }
}

impl Stop for Quality {
    async fn stop(self) {
        self.shutdown().await
    }
}

/// How the inbox reads quality commands, admits them and what it answers.
struct Commands {
    log: EventLog,
    view: Projection<QualityView>,
}

/// A command as the inbox holds it: what the aggregate decides, and the command's id
/// (whether a `remove_rule` removed anything is whether the rule's removal is its doing).
#[derive(Clone)]
struct Request {
    command: QualityCommand,
    id: String,
}

impl From<Request> for QualityCommand {
    fn from(request: Request) -> QualityCommand {
        request.command
    }
}

/// What an accepted command answers, by command.
#[derive(Serialize)]
#[serde(untagged)]
enum Outcome {
    /// `add_rule`, `update_rule`: the rule as the catalog holds it.
    Rule(RuleView),
    /// `remove_rule`.
    Removed(RemoveOutcome),
    /// `check` (and the scheduler's hints about its parts): the entry, or the open check
    /// (`None` only through a bug, said in the log).
    Check(Option<CheckOutcome>),
}

/// How long a check naming a rule this instance does not hold waits for the log's latest
/// events to be applied before it is refused.
const CATALOG_CATCH_UP: Duration = Duration::from_secs(2);
/// At most this many of the catalog's names are listed in a `not_found` refusal.
const NAMES_LISTED: usize = 20;

impl CommandHandler for Commands {
    type Aggregate = Record;
    type View = QualityView;
    type Command = Request;
    type Outcome = Outcome;

    fn parse(&self, inbound: &Inbound, encoding: Encoding) -> Result<(AggregateRef, Request), ProtocolError> {
        let command = Command::parse(&inbound.command, encoding, &inbound.payload, &inbound.id)?;
        let aggregate = command.aggregate();
        let command = match command {
            Command::AddRule(rule) => QualityCommand::AddRule(rule),
            Command::UpdateRule(rule) => QualityCommand::UpdateRule(rule),
            Command::RemoveRule(name) => QualityCommand::RemoveRule(name),
            Command::Check(check) => QualityCommand::Check(CheckCommand { check, rules: None }),
            Command::RunEnded(ended) => {
                QualityCommand::PartEnded { run_id: Token::new("run_id", ended.run_id)?, end: None }
            }
        };
        Ok((aggregate, Request { command, id: inbound.id.clone() }))
    }

    /// A check's rules are read from the catalog here, in the check's turn: the
    /// definitions go with the command, so the decision is a function of them.
    async fn admit(&self, aggregate: &AggregateRef, request: &Request) -> Result<QualityCommand, ProtocolError> {
        match &request.command {
            QualityCommand::Check(check) => {
                let rules = self.read_rules(aggregate, check).await?;
                Ok(QualityCommand::Check(CheckCommand { check: check.check.clone(), rules }))
            }
            QualityCommand::PartEnded { run_id, .. } => {
                let end = self.read_run_end(run_id).await?;
                Ok(QualityCommand::PartEnded { run_id: run_id.clone(), end: Some(end) })
            }
            other => Ok(other.clone()),
        }
    }

    fn outcome(&self, request: &Request, executed: &Executed<Record>) -> Outcome {
        let record = &executed.state.state;
        match &request.command {
            QualityCommand::AddRule(rule) | QualityCommand::UpdateRule(rule) => Outcome::Rule(match record {
                Record::Rule(state) => RuleView {
                    rule: state.rule.clone().unwrap_or_else(|| rule.clone()),
                    revision: state.revision,
                    updated_at: state.updated_at,
                },
                _ => RuleView { rule: rule.clone(), revision: 0, updated_at: Default::default() },
            }),
            QualityCommand::RemoveRule(name) => {
                let removed = executed.state.applied(&request.id).is_some();
                tracing::info!(rule = %name, removed, "rule removal answered");
                Outcome::Removed(RemoveOutcome { removed })
            }
            QualityCommand::Check(_) | QualityCommand::PartEnded { .. } | QualityCommand::Close => {
                Outcome::Check(check_outcome(record, executed.appended > 0))
            }
        }
    }
}

/// Where a check stands, for its reply (and the log's trace of it).
fn check_outcome(record: &Record, new: bool) -> Option<CheckOutcome> {
    match record {
        Record::Audit(audit) => {
            let entry = &audit.entry;
            tracing::info!(audit = %entry.id, rules = ?entry.scope, opinion = ?entry.opinion,
                findings = ?entry.findings, new, "audit recorded");
            Some(CheckOutcome::Recorded(Box::new(entry.clone())))
        }
        Record::Open(open) => {
            let waiting: Vec<String> =
                open.opened.parts.iter().filter(|p| !open.ended(&p.part)).map(|p| p.part.clone()).collect();
            tracing::info!(audit = %open.opened.check.audit_id, ?waiting, new, "check open");
            Some(CheckOutcome::Open(OpenCheck {
                audit_id: open.opened.check.audit_id.to_string(),
                waiting,
                deadline: open.opened.deadline,
            }))
        }
        // `decide` records or opens an entry, or refuses; this is a bug, said loudly.
        _ => {
            tracing::error!("an accepted check left no audit entry");
            None
        }
    }
}

impl Commands {
    /// How run `run_id` ended, read from its events on the log (a `run_ended` hint is
    /// only a hint): refused when it has not ended.
    async fn read_run_end(&self, run_id: &Token) -> Result<RunEnd, ProtocolError> {
        let unavailable = |e: osp_eventlog::Error| ProtocolError::Unavailable { reason: e.to_string() };
        let aggregate = AggregateRef::new(RUN_KIND, run_id.as_str())?;
        let loaded = self.log.load::<RunEvent>(&aggregate).await.map_err(unavailable)?;
        loaded.events.iter().rev().find_map(|event| run_end(&event.envelope.payload)).ok_or_else(|| {
            ProtocolError::IllegalTransition {
                command: "run_ended".into(),
                state: if loaded.events.is_empty() { "unknown".into() } else { "running".into() },
                reason: format!("run {run_id} has not ended (as the log tells)"),
            }
        })
    }

    /// The check's rule definitions, from the catalog; a name the catalog does not hold,
    /// once this instance has applied the log as far as it goes, is `not_found`. A check
    /// whose audit entry is already recorded needs none (it changes nothing, or
    /// conflicts), so a resend is answered even if its rules were removed since.
    async fn read_rules(
        &self,
        aggregate: &AggregateRef,
        check: &CheckCommand,
    ) -> Result<Option<Vec<Rule>>, ProtocolError> {
        let names = || check.check.rules.iter().map(|name| name.as_str());
        let read = |view: &QualityView| match view.has_audit(aggregate) {
            true => Ok(None),
            false => view.definitions(names()).map(Some),
        };
        let first = read(&self.view.read());
        if first.is_err() {
            // The rule may be on the log and not applied here yet.
            if let Ok(last) = self.log.last_sequence().await {
                let _ = self.view.wait_for(last, CATALOG_CATCH_UP).await;
            }
        }
        let view = self.view.read();
        let read = if first.is_ok() { first } else { read(&view) };
        read.map_err(|missing| unknown_rules(&missing, &view.rule_names()))
    }
}

/// How a run ended, if `event` is its end.
fn run_end(event: &RunEvent) -> Option<RunEnd> {
    let json = osp_protocol::json::from_msgpack_value;
    Some(match event {
        RunEvent::Completed(completed) => {
            RunEnd { status: RunStatus::Completed, output: Some(json(&completed.output)), error: None }
        }
        RunEvent::Failed(failed) => {
            RunEnd { status: RunStatus::Failed, output: None, error: Some(failed.error.clone()) }
        }
        RunEvent::Cancelled(cancelled) => RunEnd {
            status: RunStatus::Cancelled,
            output: None,
            error: Some(TaskError { kind: "cancelled".into(), message: cancelled.reason.clone(), details: None }),
        },
        _ => return None,
    })
}

/// The refusal of a check naming rules the catalog does not hold.
fn unknown_rules(missing: &[String], catalog: &[&str]) -> ProtocolError {
    let listed = match catalog.len() {
        0 => "it holds none".to_owned(),
        n if n <= NAMES_LISTED => format!("it holds {}", catalog.join(", ")),
        n => format!("it holds {}, and {} more", catalog[..NAMES_LISTED].join(", "), n - NAMES_LISTED),
    };
    ProtocolError::NotFound {
        field: "rules".into(),
        value: missing.join(", "),
        reason: format!("the catalog has no rule by that name ({listed}); add it with add_rule"),
    }
}
