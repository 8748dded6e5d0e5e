//! Events of the quality service.
//!
//! | kind, subject | type | when |
//! |---|---|---|
//! | `rule`, `osp.v1.evt.rule.<name>` | `rule.added` `{rule}` | `add_rule` of a new name (or of a removed one) |
//! | | `rule.updated` `{rule}` | `update_rule`; the old definition stays in the log |
//! | | `rule.removed` `{}` | `remove_rule` |
//! | `audit`, `osp.v1.evt.audit.<id>` | `audit.recorded` `{entry, rules}` | a `check`: the entry, and the rule definitions it was checked against (as they were then) |

use serde::{Deserialize, Serialize};

use crate::quality::audit::AuditEntry;
use crate::quality::rules::Rule;

/// A rule was added or updated: its definition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleDefined {
    /// The rule.
    pub rule: Rule,
}

/// A rule was removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleRemoved {}

/// An audit entry was recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecorded {
    /// The entry.
    pub entry: AuditEntry,
    /// The definitions of the rules checked, as they were at the check: a later change
    /// of a rule does not change what an old entry means.
    pub rules: Vec<Rule>,
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
        /// An audit entry was recorded.
        AuditRecorded(AuditRecorded) = ("audit.recorded", 1),
    }
}
