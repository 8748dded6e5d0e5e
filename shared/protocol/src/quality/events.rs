//! Events of the quality service.
//!
//! | kind, subject | type | when |
//! |---|---|---|
//! | `rule`, `osp.v1.evt.rule.<name>` | `rule.added` `{rule}` | `add_rule` of a new name (or of a removed one) |
//! | | `rule.updated` `{rule}` | `update_rule`; the old definition stays in the log |
//! | | `rule.removed` `{}` | `remove_rule` |
//! | `audit`, `osp.v1.evt.audit.<id>` | `audit.opened` `{check, rules, results, parts, deadline}` | a `check` with parts agents make (a judge, custom rules): the built-in results, and a run per part |
//! | | `audit.part_ended` `{part, run_id, result?, judge?}` | a part's run ended (its result, or why there is none) |
//! | | `audit.recorded` `{entry, rules}` | the entry, and the rule definitions it was checked against (as they were then): at once for a check of built-in rules, after the last part (or the deadline) otherwise |

use serde::{Deserialize, Serialize};

use crate::quality::audit::{AuditEntry, JudgeResult};
use crate::quality::commands::Check;
use crate::quality::rules::{Rule, RuleResult};
use crate::{Timestamp, Token};

/// A rule was added or updated: its definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleDefined {
    /// Its whole definition from now on; its name is the aggregate's id.
    pub rule: Rule,
}

/// A rule was removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleRemoved {}

/// An audit entry was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecorded {
    /// As queries show it; it never changes afterwards.
    pub entry: AuditEntry,
    /// The definitions of the rules checked, as they were at the check: a later change
    /// of a rule does not change what an old entry means.
    pub rules: Vec<Rule>,
}

/// A check needs agents (a judge, custom rules): the built-in rules' results so far, and
/// the run each remaining part is (to be) submitted as.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditOpened {
    /// The check as sent (the output included: the parts' runs are given it).
    pub check: Check,
    /// The definitions of the rules checked, as they were at the check.
    pub rules: Vec<Rule>,
    /// The built-in rules' results, in the check's order.
    pub results: Vec<RuleResult>,
    /// The parts agents make.
    pub parts: Vec<AgentPart>,
    /// When whatever has not answered counts as missing evidence.
    pub deadline: Timestamp,
}

/// A part of a check made by an agent, as a run of the scheduler.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentPart {
    /// `judge`, or the custom rule's name.
    pub part: String,
    /// Its run (`<audit id>:judge`, `<audit id>:rule:<name>`).
    pub run_id: Token,
    /// The capability of the agents that make it.
    pub capability: Token,
}

/// A part's run ended: the rule's result or the judge's (or, when it gave none, a
/// result marked `unchecked` saying why).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditPartEnded {
    /// `judge`, or the custom rule's name, as in [`AgentPart::part`].
    pub part: String,
    /// The scheduler run that made the part: [`AgentPart::run_id`].
    pub run_id: Token,
    /// A custom rule's result, or why the part gave none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<RuleResult>,
    /// The judge's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeResult>,
}

crate::event_payload! {
    /// What can happen to a rule of the catalog (kind `rule`) or an audit entry (kind
    /// `audit`). One enum for both kinds, so one service folds both.
    #[derive(Clone, Debug, PartialEq)]
    pub enum QualityEvent {
        /// A rule was added.
        RuleAdded(RuleDefined) = ("rule.added", 1),
        /// A rule was replaced.
        RuleUpdated(RuleDefined) = ("rule.updated", 1),
        /// A rule was removed.
        RuleRemoved(RuleRemoved) = ("rule.removed", 1),
        /// A check waits for agents.
        AuditOpened(Box<AuditOpened>) = ("audit.opened", 1),
        /// One of its parts ended.
        AuditPartEnded(AuditPartEnded) = ("audit.part_ended", 1),
        /// An audit entry was recorded.
        AuditRecorded(AuditRecorded) = ("audit.recorded", 1),
    }
}
