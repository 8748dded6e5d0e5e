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
//! - [`aggregate`]: the two aggregates, rules and audit entries, with [`catalog`]'s
//!   and [`audit`]'s pure decisions;
//! - [`view`]: the read model (recorded audits leave memory after a grace period);
//!   `listing`: the audit listing, from an index on local disk; `queries`: the endpoints;
//!   `effects`: the runs and the deadlines of open checks.
//!
//! A check that needs agents — a judge (capability `judge`), or a `custom` rule — is
//! opened, its parts submitted as runs of the scheduler (`effects`), and recorded when
//! they have ended or its deadline passed. Runs gated on checks are the scheduler's
//! business: it sends `check` and reads the audit entry from the log.

pub mod aggregate;
pub mod audit;
pub mod catalog;
mod effects;
mod listing;
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
use osp_runtime::{
    unreadable, CommandHandler, Executed, Inbound, InboxCounts, Projection, Running, Service, ServiceConfig, Stop,
};
use serde::Serialize;

use crate::aggregate::{Audit, AuditCommand, CheckCommand, RuleCommand, RuleState};
use crate::audit::RunEnd;
use crate::effects::AuditEffects;
use crate::view::{AuditRecord, QualityView};

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
        let view = service.indexed_view::<QualityView>(&VIEW_KINDS).await?;
        let audits = service.executor(&view);
        let log = service.log().clone();
        let effects = Arc::new(AuditEffects {
            log: log.clone(),
            executor: audits.clone(),
            view: view.clone(),
            timers: service.timers().await?,
        });
        service.commands(RuleCommands, service.executor(&view));
        service.commands(CheckCommands { log, view: view.clone() }, audits);
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

    /// How many audits this instance holds in memory: the open ones, and those recorded
    /// within the grace period (`keep_finished`).
    pub fn audits_in_memory(&self) -> usize {
        self.view.read().audits_in_memory()
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

/// How the inbox reads the catalog's commands and what it answers.
struct RuleCommands;

/// A rule command as the inbox holds it: what the rule decides, and the command's id
/// (whether a `remove_rule` removed anything is whether the rule's removal is its doing).
#[derive(Clone)]
struct RuleRequest {
    command: RuleCommand,
    id: String,
}

impl From<RuleRequest> for RuleCommand {
    fn from(request: RuleRequest) -> RuleCommand {
        request.command
    }
}

/// What an accepted rule command answers.
#[derive(Serialize)]
#[serde(untagged)]
enum RuleOutcome {
    /// `add_rule`, `update_rule`: the rule as the catalog holds it.
    Rule(RuleView),
    /// `remove_rule`.
    Removed(RemoveOutcome),
}

/// The commands of the catalog; the rest of [`osp_protocol::quality::COMMANDS`] are the
/// checks'.
const RULE_COMMANDS: &[&str] = &["add_rule", "update_rule", "remove_rule"];
const CHECK_COMMANDS: &[&str] = &["check", "run_ended"];

/// The refusal of a command its handler does not take: only a routing mistake of this
/// service's own, since the inbox routes by the same names.
fn not_taken(command: &str, taken: &[&str]) -> ProtocolError {
    ProtocolError::UnknownCommand {
        command: command.to_owned(),
        service: SERVICE.into(),
        known: taken.iter().map(|name| (*name).to_owned()).collect(),
    }
}

impl CommandHandler for RuleCommands {
    type Aggregate = RuleState;
    type View = QualityView;
    type Command = RuleRequest;
    type Outcome = RuleOutcome;

    fn commands(&self) -> &'static [&'static str] {
        RULE_COMMANDS
    }

    fn parse(&self, inbound: &Inbound, encoding: Encoding) -> Result<(AggregateRef, RuleRequest), ProtocolError> {
        let command = Command::parse(&inbound.command, encoding, &inbound.payload, &inbound.id)?;
        let aggregate = command.aggregate();
        let command = match command {
            Command::AddRule(rule) => RuleCommand::Add(rule),
            Command::UpdateRule(rule) => RuleCommand::Update(rule),
            Command::RemoveRule(name) => RuleCommand::Remove(name),
            Command::Check(_) | Command::RunEnded(_) => return Err(not_taken(&inbound.command, RULE_COMMANDS)),
        };
        Ok((aggregate, RuleRequest { command, id: inbound.id.clone() }))
    }

    fn outcome(&self, request: &RuleRequest, executed: &Executed<RuleState>) -> RuleOutcome {
        let state = &executed.state.state;
        match &request.command {
            RuleCommand::Add(rule) | RuleCommand::Update(rule) => RuleOutcome::Rule(RuleView {
                rule: state.rule.clone().unwrap_or_else(|| rule.clone()),
                revision: state.revision,
                updated_at: state.updated_at,
            }),
            RuleCommand::Remove(name) => {
                let removed = executed.state.applied(&request.id).is_some();
                tracing::info!(rule = %name, removed, "rule removal answered");
                RuleOutcome::Removed(RemoveOutcome { removed })
            }
        }
    }
}

/// How the inbox reads checks (and the scheduler's hints about their parts), admits them
/// and what it answers: the entry, or the open check (`None` only through a bug, said in
/// the log).
struct CheckCommands {
    log: EventLog,
    view: Projection<QualityView>,
}

/// How long a check naming a rule this instance does not hold waits for the log's latest
/// events to be applied before it is refused.
const CATALOG_CATCH_UP: Duration = Duration::from_secs(2);
/// At most this many of the catalog's names are listed in a `not_found` refusal.
const NAMES_LISTED: usize = 20;

impl CommandHandler for CheckCommands {
    type Aggregate = Audit;
    type View = QualityView;
    type Command = AuditCommand;
    type Outcome = Option<CheckOutcome>;

    fn commands(&self) -> &'static [&'static str] {
        CHECK_COMMANDS
    }

    fn parse(&self, inbound: &Inbound, encoding: Encoding) -> Result<(AggregateRef, AuditCommand), ProtocolError> {
        let command = Command::parse(&inbound.command, encoding, &inbound.payload, &inbound.id)?;
        let aggregate = command.aggregate();
        let command = match command {
            Command::Check(check) => AuditCommand::Check(CheckCommand { check, rules: None }),
            Command::RunEnded(ended) => {
                AuditCommand::PartEnded { run_id: Token::new("run_id", ended.run_id)?, end: None }
            }
            Command::AddRule(_) | Command::UpdateRule(_) | Command::RemoveRule(_) => {
                return Err(not_taken(&inbound.command, CHECK_COMMANDS))
            }
        };
        Ok((aggregate, command))
    }

    /// A check's rules are read from the catalog here, in the check's turn, and a part's
    /// end from the log: they go with the command, so the decision is a function of them.
    async fn admit(&self, aggregate: &AggregateRef, command: &AuditCommand) -> Result<AuditCommand, ProtocolError> {
        match command {
            AuditCommand::Check(check) => {
                let rules = self.read_rules(aggregate, check).await?;
                Ok(AuditCommand::Check(CheckCommand { check: check.check.clone(), rules }))
            }
            AuditCommand::PartEnded { run_id, .. } => {
                let end = self.read_run_end(run_id).await?;
                Ok(AuditCommand::PartEnded { run_id: run_id.clone(), end: Some(end) })
            }
            AuditCommand::Close => Ok(AuditCommand::Close),
        }
    }

    fn outcome(&self, _: &AuditCommand, executed: &Executed<Audit>) -> Option<CheckOutcome> {
        check_outcome(&executed.state.state, executed.appended > 0)
    }
}

/// Where a check stands, for its reply (and the log's trace of it).
fn check_outcome(audit: &Audit, new: bool) -> Option<CheckOutcome> {
    match audit {
        Audit::Recorded(audit) => {
            let entry = &audit.entry;
            tracing::info!(audit = %entry.id, rules = ?entry.scope, opinion = ?entry.opinion,
                findings = ?entry.findings, new, "audit recorded");
            Some(CheckOutcome::Recorded(Box::new(entry.clone())))
        }
        Audit::Open(open) => {
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
        Audit::Empty => {
            tracing::error!("an accepted check left no audit entry");
            None
        }
    }
}

impl CheckCommands {
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
    /// conflicts), so a resend is answered even if its rules were removed since, and
    /// even once the entry has left memory.
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
        if let Ok(rules) = read(&self.view.read()) {
            return Ok(rules);
        }
        // The audit may have left memory, or be on the log and not applied here yet.
        if self.view.recall(aggregate, AuditRecord::exists).await.map_err(unreadable)? == Some(true) {
            return Ok(None);
        }
        // The rule may be on the log and not applied here yet.
        if let Ok(last) = self.log.last_sequence().await {
            let _ = self.view.wait_for(last, CATALOG_CATCH_UP).await;
        }
        let view = self.view.read();
        read(&view).map_err(|missing| unknown_rules(&missing, &view.rule_names()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_handlers_take_every_quality_command_once_in_the_protocol_order() {
        let routed: Vec<&str> = RULE_COMMANDS.iter().chain(CHECK_COMMANDS).copied().collect();
        assert_eq!(routed, osp_protocol::quality::COMMANDS);
    }
}
