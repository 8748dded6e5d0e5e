//! The quality service's two aggregates: a rule of the catalog (`osp.v1.evt.rule.<name>`,
//! [`RuleState`]) and an audit entry (`osp.v1.evt.audit.<id>`, [`Audit`]). Each has its
//! own commands and its own executor; the inbox routes each command to the one it
//! addresses. Both read [`QualityEvent`], one enum for the service's events, and each
//! applies only its own (a rule's subject never holds an audit's events, nor the other
//! way round).
//!
//! Pure: no I/O, no clock. The catalog's decisions are in [`crate::catalog`], a check's in
//! [`crate::audit`].

use osp_protocol::quality::{AuditEntry, AuditOpened, AuditPartEnded, Check, QualityEvent, Rule};
use osp_protocol::{Envelope, Error, Timestamp, Token};
use osp_runtime::Aggregate;

use crate::audit::RunEnd;
use crate::{audit, catalog};

/// An audit entry's state, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Audit {
    /// No check yet.
    #[default]
    Empty,
    /// A check waiting for agents (a judge, custom rules).
    Open(OpenAudit),
    /// The entry, recorded.
    Recorded(AuditState),
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
    /// As `audit.recorded` carried it; it never changes afterwards.
    pub entry: AuditEntry,
    /// The rules' definitions at the check.
    pub rules: Vec<Rule>,
}

/// What may be asked of a rule of the catalog.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleCommand {
    /// Add it to the catalog.
    Add(Rule),
    /// Replace its definition.
    Update(Rule),
    /// Remove it from the catalog.
    Remove(Token),
}

/// What may be asked of an audit entry.
#[derive(Clone, Debug, PartialEq)]
pub enum AuditCommand {
    /// Check an output against rules, recording the entry.
    Check(CheckCommand),
    /// The run of one of an open check's parts ended (the scheduler's `run_ended` hint).
    PartEnded {
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

impl Audit {
    /// The audit entry, once recorded.
    pub fn recorded(&self) -> Option<&AuditState> {
        match self {
            Audit::Recorded(state) => Some(state),
            _ => None,
        }
    }
}

impl Aggregate for RuleState {
    type Event = QualityEvent;
    type Command = RuleCommand;

    fn evolve(&mut self, event: &Envelope<QualityEvent>) {
        let updated_at = event.occurred_at;
        *self = match &event.payload {
            QualityEvent::RuleAdded(defined) => RuleState { rule: Some(defined.rule.clone()), revision: 1, updated_at },
            QualityEvent::RuleUpdated(defined) => {
                RuleState { rule: Some(defined.rule.clone()), revision: self.revision + 1, updated_at }
            }
            QualityEvent::RuleRemoved(_) => RuleState { rule: None, revision: 0, updated_at },
            // An audit's events are never on a rule's subject.
            _ => return,
        };
    }

    fn decide(&self, command: &RuleCommand, _now: Timestamp) -> Result<Vec<QualityEvent>, Error> {
        match command {
            RuleCommand::Add(rule) => catalog::add(self.rule.as_ref(), rule),
            RuleCommand::Update(rule) => catalog::update(self.rule.as_ref(), rule),
            RuleCommand::Remove(_) => Ok(catalog::remove(self.rule.as_ref())),
        }
    }
}

impl Aggregate for Audit {
    type Event = QualityEvent;
    type Command = AuditCommand;

    fn evolve(&mut self, event: &Envelope<QualityEvent>) {
        match &event.payload {
            QualityEvent::AuditOpened(opened) => {
                *self = Audit::Open(OpenAudit {
                    opened: (**opened).clone(),
                    opened_at: event.occurred_at,
                    ended: Vec::new(),
                });
            }
            QualityEvent::AuditPartEnded(ended) => {
                if let Audit::Open(open) = self {
                    open.ended.push(ended.clone());
                }
            }
            QualityEvent::AuditRecorded(recorded) => {
                *self = Audit::Recorded(AuditState { entry: recorded.entry.clone(), rules: recorded.rules.clone() });
            }
            // A rule's events are never on an audit's subject.
            _ => {}
        }
    }

    fn decide(&self, command: &AuditCommand, now: Timestamp) -> Result<Vec<QualityEvent>, Error> {
        match command {
            AuditCommand::Check(check) => audit::check(self, check, now),
            AuditCommand::PartEnded { run_id, end: Some(end) } => audit::part_ended(self, run_id, end),
            AuditCommand::PartEnded { end: None, .. } => {
                Err(Error::Unavailable { reason: "the run's end was not read from the log".into() })
            }
            AuditCommand::Close => Ok(audit::close(self, now)),
        }
    }
}
