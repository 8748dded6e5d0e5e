//! The quality service's part of the wire protocol (OSP "Checks", the lifecycle's
//! Evaluation phase): rules checked against a task's output, a judge (an agent with the
//! `judge` capability), and an audit entry per checked execution.
//!
//! These types mirror the OSP TypeScript types, so their JSON fields are camelCase
//! (`ruleName`, `agentId`, `judgeResult`); unknown fields are refused.
//!
//! - [`rules`]: a rule's definition and what checking one gives;
//! - [`audit`]: the audit entry, its findings and opinion;
//! - [`Command`]: `add_rule`, `update_rule`, `remove_rule`, `check` on
//!   `osp.v1.in.quality.<command>`;
//! - [`QualityEvent`]s on `osp.v1.evt.rule.<name>` and `osp.v1.evt.audit.<id>`;
//! - [`queries`] on `osp.v1.q.quality.{rules,rule,audit,audits,digest}`.

pub mod audit;
mod commands;
mod events;
pub mod judge;
pub mod markdown;
pub mod queries;
pub mod rules;

pub use audit::{AuditEntry, Findings, JudgeResult, Opinion};
pub use commands::{
    derived_audit_id, Check, CheckOutcome, Command, CommandName, OpenCheck, RemoveOutcome, COMMANDS,
    DEFAULT_AGENT_TIMEOUT_MS, MAX_OUTPUT_BYTES, MAX_RULES_PER_CHECK,
};
pub use events::{AgentPart, AuditOpened, AuditPartEnded, AuditRecorded, QualityEvent, RuleDefined, RuleRemoved};
pub use judge::{custom_result, unchecked, CustomRuleTask, JudgeSpec, JudgeTask};
pub use rules::{Rule, RuleKind, RuleResult, Severity};

/// The service's name: its inbox is `osp.v1.in.quality.>`.
pub const SERVICE: &str = "quality";
/// Aggregate kind of rules in the catalog: `osp.v1.evt.rule.<name>`.
pub const RULE_KIND: &str = "rule";
/// Aggregate kind of audit entries: `osp.v1.evt.audit.<id>`.
pub const AUDIT_KIND: &str = "audit";
/// The capability of judge agents.
pub const JUDGE_CAPABILITY: &str = "judge";
