//! The quality service's aggregates, as one Rust type: a rule of the catalog
//! (`osp.v1.evt.rule.<name>`) or an audit entry (`osp.v1.evt.audit.<id>`). One type,
//! because one inbox and one executor serve both kinds; the subject (the
//! [`AggregateRef`](osp_protocol::AggregateRef) a command names) keeps them apart, so a
//! rule's history never holds an audit's events, nor the other way round.
//!
//! Pure: no I/O, no clock. The catalog's decisions are in [`crate::catalog`], a check's in
//! [`crate::audit`].

use osp_protocol::quality::{AuditEntry, AuditOpened, AuditPartEnded, Check, QualityEvent, Rule};
use osp_protocol::{Envelope, Error, Timestamp, Token};
use osp_runtime::Aggregate;

use crate::audit::RunEnd;
use crate::{audit, catalog};

/// One aggregate's state, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Record {
    /// No event yet.
    #[default]
    Empty,
    /// A rule of the catalog (present, or removed).
    Rule(RuleState),
    /// A check waiting for agents (a judge, custom rules).
    Open(OpenAudit),
    /// A recorded audit entry.
    Audit(AuditState),
}

/// A check waiting for its parts' runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpenAudit {
    /// What was opened.
    pub opened: AuditOpened,
    /// When (the entry's `createdAt`).
    pub opened_at: Timestamp,
    /// The parts that have ended, in the order they did.
    pub ended: Vec<AuditPartEnded>,
}

impl OpenAudit {
    /// Whether part `part` has ended.
    pub fn ended(&self, part: &str) -> bool {
        self.ended.iter().any(|ended| ended.part == part)
    }
}

/// A rule's state.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RuleState {
    /// Its definition while in the catalog; `None` once removed.
    pub rule: Option<Rule>,
    /// Definitions it has had since it was (last) added; 0 once removed.
    pub revision: u64,
    /// When it was last added, updated or removed.
    pub updated_at: Timestamp,
}

/// An audit entry, and the rule definitions it was checked against (as they were then).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditState {
    /// The entry.
    pub entry: AuditEntry,
    /// The rules' definitions at the check.
    pub rules: Vec<Rule>,
}

/// What may be asked of a rule or an audit entry.
#[derive(Clone, Debug, PartialEq)]
pub enum QualityCommand {
    /// Add a rule to the catalog.
    AddRule(Rule),
    /// Replace a rule of the catalog.
    UpdateRule(Rule),
    /// Remove a rule from the catalog.
    RemoveRule(Token),
    /// Check an output against rules, recording an audit entry.
    Check(CheckCommand),
    /// The run of one of an open check's parts ended (the scheduler's `run_ended` hint).
    PartEnded {
        /// The run.
        run_id: Token,
        /// How it ended, as the inbox read it from the log in the command's turn
        /// (`CommandHandler::admit`); `None` when it was not read.
        end: Option<RunEnd>,
    },
    /// An open check's deadline passed.
    Close,
}

/// A check, with the definitions of the rules it names as the catalog held them.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckCommand {
    /// The check as sent.
    pub check: Box<Check>,
    /// Its rules' definitions, in the order the check names them, as the inbox read them
    /// from the catalog in the command's turn (`CommandHandler::admit`); `None` when they
    /// were not read (a resend of a recorded check needs none).
    pub rules: Option<Vec<Rule>>,
}

impl Record {
    /// The rule, while in the catalog.
    pub fn rule(&self) -> Option<&Rule> {
        match self {
            Record::Rule(state) => state.rule.as_ref(),
            _ => None,
        }
    }

    /// The audit entry, once recorded.
    pub fn audit(&self) -> Option<&AuditState> {
        match self {
            Record::Audit(state) => Some(state),
            _ => None,
        }
    }

    fn rule_state(&self) -> RuleState {
        match self {
            Record::Rule(state) => state.clone(),
            _ => RuleState::default(),
        }
    }
}

impl Aggregate for Record {
    type Event = QualityEvent;
    type Command = QualityCommand;

    fn evolve(&mut self, event: &Envelope<QualityEvent>) {
        let at = event.occurred_at;
        match &event.payload {
            QualityEvent::RuleAdded(defined) => {
                *self = Record::Rule(RuleState { rule: Some(defined.rule.clone()), revision: 1, updated_at: at });
            }
            QualityEvent::RuleUpdated(defined) => {
                let previous = self.rule_state();
                *self = Record::Rule(RuleState {
                    rule: Some(defined.rule.clone()),
                    revision: previous.revision + 1,
                    updated_at: at,
                });
            }
            QualityEvent::RuleRemoved(_) => *self = Record::Rule(RuleState { rule: None, revision: 0, updated_at: at }),
            QualityEvent::AuditOpened(opened) => {
                *self = Record::Open(OpenAudit { opened: (**opened).clone(), opened_at: at, ended: Vec::new() });
            }
            QualityEvent::AuditPartEnded(ended) => {
                if let Record::Open(open) = self {
                    open.ended.push(ended.clone());
                }
            }
            QualityEvent::AuditRecorded(recorded) => {
                *self = Record::Audit(AuditState { entry: recorded.entry.clone(), rules: recorded.rules.clone() });
            }
        }
    }

    fn decide(&self, command: &QualityCommand, now: Timestamp) -> Result<Vec<QualityEvent>, Error> {
        match command {
            QualityCommand::AddRule(rule) => catalog::add(self.rule(), rule),
            QualityCommand::UpdateRule(rule) => catalog::update(self.rule(), rule),
            QualityCommand::RemoveRule(_) => Ok(catalog::remove(self.rule())),
            QualityCommand::Check(check) => audit::check(self, check, now),
            QualityCommand::PartEnded { run_id, end: Some(end) } => audit::part_ended(self, run_id, end),
            QualityCommand::PartEnded { end: None, .. } => {
                Err(Error::Unavailable { reason: "the run's end was not read from the log".into() })
            }
            QualityCommand::Close => Ok(audit::close(self, now)),
        }
    }
}
