//! Queries of the quality service: NATS micro-service endpoints
//! `osp.v1.q.quality.<query>`, answered in the request's encoding with a
//! [`crate::Reply`].
//!
//! | query | request | result |
//! |---|---|---|
//! | `rules` | `{after?, limit?}` | [`RulePage`]: the catalog, by name |
//! | `rule` | `{name}` | [`RuleView`], or `not_found` |
//! | `audit` | `{id}` | [`AuditView`], or `not_found` |
//! | `audits` | [`AuditQuery`] | [`AuditPage`]: the entries that match, oldest first |
//! | `digest` | `{}` | [`Digest`]: a hash of the whole state, to compare instances |
//!
//! Pages hold at most `limit` items (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]);
//! `next`, when present, is the `after` of the following page.

use serde::{Deserialize, Serialize};

use crate::quality::audit::{AuditEntry, Opinion};
use crate::quality::rules::Rule;
use crate::Timestamp;

/// Items per page when the query does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items per page.
pub const MAX_LIMIT: u32 = 1000;

/// `rules`: the catalog, a page at a time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesQuery {
    /// Start after this rule name (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `rule`: one rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleQuery {
    /// The name it was added under; an unknown one is `not_found`.
    pub name: String,
}

/// A rule of the catalog.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleView {
    /// The definition.
    pub rule: Rule,
    /// Definitions it has had since it was (last) added, this one included.
    pub revision: u64,
    /// When it was last changed.
    pub updated_at: Timestamp,
}

/// A page of rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RulePage {
    /// The rules, by name.
    pub rules: Vec<RuleView>,
    /// The `after` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `audit`: one entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditIdQuery {
    /// A check's `audit_id`; an open check is `not_found`, naming the parts awaited.
    pub id: String,
}

/// An audit entry, and the rule definitions it was checked against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditView {
    /// As `audit.recorded` carried it.
    pub entry: AuditEntry,
    /// The rules as they were at the check.
    pub rules: Vec<Rule>,
}

/// `audits`: the entries matching every filter given, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only these opinions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opinions: Vec<Opinion>,
    /// At least this many critical findings.
    #[serde(default, alias = "minCritical", skip_serializing_if = "Option::is_none")]
    pub min_critical: Option<u32>,
    /// At least this many major findings.
    #[serde(default, alias = "minMajor", skip_serializing_if = "Option::is_none")]
    pub min_major: Option<u32>,
    /// Only this agent's.
    #[serde(default, alias = "agentId", skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Only this execution's.
    #[serde(default, alias = "executionId", skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// Made at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Timestamp>,
    /// Made before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Timestamp>,
    /// Start after this entry (the previous page's `next`: an entry id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A page of audit entries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    /// The entries, oldest first.
    pub entries: Vec<AuditEntry>,
    /// The `after` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `digest`: a hash of the whole state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestQuery {}

/// A hash of the catalog and the audit entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// The hex XOR of one BLAKE3 per rule and per audit (of its head and its state): the
    /// same whichever audits an instance holds in memory.
    pub digest: String,
    /// Rules in the catalog.
    pub rules: u64,
    /// Audit entries recorded.
    pub audits: u64,
    /// The log sequence the state is at.
    pub applied: u64,
}
