//! Commands to the quality service: `osp.v1.in.quality.<command>`, in MessagePack or
//! JSON.
//!
//! - `add_rule` (a [`Rule`]): adds a rule to the catalog; the same rule again changes
//!   nothing, another rule under the same name is a `conflict` (use `update_rule`);
//! - `update_rule` (a [`Rule`]): replaces a rule of the catalog;
//! - `remove_rule` `{name}`: removes it (answers whether it existed);
//! - `check` `{audit_id?, output, rules, judge?, objectives?, execution_id?, agent_id?,
//!   metadata?, timeout_ms?}`: checks `output` against the named rules (and a judge) and
//!   records an audit entry;
//! - `run_ended` ([`RunEnded`](crate::scheduler::RunEnded)): the scheduler's hint that a
//!   run the service submitted for a check (a judge, a custom rule) ended.
//!
//! Fields are snake_case; the camelCase spellings (`auditId`, `executionId`) are accepted
//! too; rules themselves are camelCase (the OSP TypeScript shape). Unknown fields are
//! refused. [`Command`] is also what a sender sends: it is written as the body
//! [`Command::parse`] reads.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::command::read_name;
use crate::quality::judge::JudgeSpec;
use crate::quality::rules::Rule;
use crate::quality::SERVICE;
use crate::registry::document::encoded_len;
use crate::scheduler::RunEnded;
use crate::{check_size, Encoding, Error, InboxCommand, Token};

/// How long the parts of a check made by agents (a judge, custom rules) may take when the
/// check does not say.
pub const DEFAULT_AGENT_TIMEOUT_MS: u64 = 60_000;
/// Largest output a check reads, encoded.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// Most rules one check names.
pub const MAX_RULES_PER_CHECK: usize = 100;
/// Largest metadata of a check, encoded.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// A command to the quality service.
#[derive(Clone, Debug, PartialEq, Serialize, strum::EnumDiscriminants)]
#[serde(untagged)]
#[strum_discriminants(
    name(CommandName),
    doc = "The quality service's commands, by their token on the inbox subject.",
    derive(strum::EnumString, strum::IntoStaticStr, strum::EnumIter, strum::VariantNames, strum::Display),
    strum(serialize_all = "snake_case")
)]
pub enum Command {
    /// Add a rule.
    AddRule(Rule),
    /// Replace a rule.
    UpdateRule(Rule),
    /// Remove a rule.
    #[serde(serialize_with = "name_only")]
    RemoveRule(Token),
    /// Check an output.
    Check(Box<Check>),
    /// A run submitted for a check ended (a hint: its end is read from the log).
    RunEnded(RunEnded),
}

/// The command tokens of the quality's inbox subjects (`osp.v1.in.quality.<command>`), as
/// [`CommandName`] names them.
pub const COMMANDS: &[&str] = <CommandName as strum::VariantNames>::VARIANTS;

/// What `remove_rule` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveOutcome {
    /// Whether the rule was in the catalog (and is no longer).
    pub removed: bool,
}

/// What an accepted `check` answers: the audit entry when it was recorded at once (only
/// built-in rules), or the open check while agents (a judge, custom rules) answer; the
/// entry is then read with the `audit` query or from the log (`audit.recorded` on
/// `osp.v1.evt.audit.<id>`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum CheckOutcome {
    /// Recorded at once: the check had only built-in rules.
    Recorded(Box<crate::quality::AuditEntry>),
    /// Waiting for agents.
    Open(OpenCheck),
}

/// A check waiting for agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenCheck {
    /// The audit entry it will record.
    pub audit_id: String,
    /// The parts still waited for (`judge`, custom rule names).
    pub waiting: Vec<String>,
    /// When what has not answered counts as missing evidence.
    pub deadline: crate::Timestamp,
}

/// Check an output against rules of the catalog, and record the audit entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The audit entry's id; derived from the command id when absent.
    pub audit_id: Token,
    /// What is checked (the output of a task, as JSON).
    pub output: serde_json::Value,
    /// The rules, by name, in the order their results are reported.
    pub rules: Vec<Token>,
    /// What the checks are for.
    pub objectives: Vec<String>,
    /// The execution checked (a run id).
    pub execution_id: Option<String>,
    /// The agent whose output it is.
    pub agent_id: Option<String>,
    /// Anything else, kept with the entry.
    pub metadata: Option<serde_json::Value>,
    /// A judge, too.
    pub judge: Option<JudgeSpec>,
    /// How long the judge and custom rules may take (runs of agents); past it, what is
    /// missing is missing evidence.
    pub timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckWire {
    #[serde(default, alias = "auditId")]
    audit_id: Option<String>,
    output: serde_json::Value,
    #[serde(default)]
    rules: Vec<String>,
    #[serde(default)]
    objectives: Vec<String>,
    #[serde(default, alias = "executionId")]
    execution_id: Option<String>,
    #[serde(default, alias = "agentId")]
    agent_id: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    #[serde(default)]
    judge: Option<JudgeSpec>,
    #[serde(default, alias = "timeoutMs")]
    timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameOnly {
    name: String,
}

impl Command {
    /// The aggregate it addresses: the rule (kind `rule`) or the audit entry (kind
    /// `audit`).
    pub fn aggregate(&self) -> crate::AggregateRef {
        let (kind, id) = match self {
            Command::AddRule(rule) | Command::UpdateRule(rule) => (super::RULE_KIND, rule.name.as_str()),
            Command::RemoveRule(name) => (super::RULE_KIND, name.as_str()),
            Command::Check(check) => (super::AUDIT_KIND, check.audit_id.as_str()),
            Command::RunEnded(ended) => (super::AUDIT_KIND, ended.key.as_str()),
        };
        crate::AggregateRef::new(kind, id).expect("names and ids are checked tokens")
    }

    /// Reads command `command` (the subject's last token); `command_id` names a check's
    /// audit entry when it names none itself.
    pub fn parse(command: &str, encoding: Encoding, payload: &[u8], command_id: &str) -> Result<Command, Error> {
        match read_name(SERVICE, command)? {
            name @ (CommandName::AddRule | CommandName::UpdateRule) => {
                let sent: serde_json::Value = encoding.decode(payload)?;
                let rule = Rule::from_json(&sent)?;
                Token::new("name", rule.name.as_str())?;
                Ok(match name {
                    CommandName::AddRule => Command::AddRule(rule),
                    _ => Command::UpdateRule(rule),
                })
            }
            CommandName::RemoveRule => {
                let wire: NameOnly = encoding.decode(payload)?;
                Ok(Command::RemoveRule(Token::new("name", wire.name)?))
            }
            CommandName::Check => {
                let wire: CheckWire = encoding.decode(payload)?;
                parse_check(wire, command_id).map(|check| Command::Check(Box::new(check)))
            }
            CommandName::RunEnded => {
                let ended: RunEnded = encoding.decode(payload)?;
                Token::new("run_id", ended.run_id.as_str())?;
                Token::new("key", ended.key.as_str())?;
                Ok(Command::RunEnded(ended))
            }
        }
    }
}

impl InboxCommand for Command {
    const SERVICE: &'static str = SERVICE;

    fn name(&self) -> &'static str {
        CommandName::from(self).into()
    }
}

/// A `remove_rule`'s body: the rule's name alone.
fn name_only<S: Serializer>(name: &Token, serializer: S) -> Result<S::Ok, S::Error> {
    let mut body = serializer.serialize_map(Some(1))?;
    body.serialize_entry("name", name)?;
    body.end()
}

fn parse_check(wire: CheckWire, command_id: &str) -> Result<Check, Error> {
    let audit_id = match wire.audit_id {
        Some(id) => Token::new("audit_id", id)?,
        None => derived_audit_id(command_id),
    };
    check_size("output", encoded_len(&crate::registry::document::from_json(&wire.output)), MAX_OUTPUT_BYTES)?;
    if (wire.rules.is_empty() && wire.judge.is_none()) || wire.rules.len() > MAX_RULES_PER_CHECK {
        return Err(Error::Invalid {
            field: "rules".into(),
            reason: format!(
                "must name 1 to {MAX_RULES_PER_CHECK} rules (or none, with a judge), not {}",
                wire.rules.len()
            ),
        });
    }
    if let Some(judge) = &wire.judge {
        judge.check("judge")?;
    }
    if let Some(ms) = wire.timeout_ms {
        if !(1..=crate::scheduler::options::MAX_MS).contains(&ms) {
            return Err(Error::Invalid {
                field: "timeout_ms".into(),
                reason: format!("must be 1 to {} ms, not {ms}", crate::scheduler::options::MAX_MS),
            });
        }
    }
    let rules = wire
        .rules
        .into_iter()
        .enumerate()
        .map(|(i, name)| Token::new(&format!("rules[{i}]"), name))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(metadata) = &wire.metadata {
        check_size("metadata", encoded_len(&crate::registry::document::from_json(metadata)), MAX_METADATA_BYTES)?;
    }
    Ok(Check {
        audit_id,
        output: wire.output,
        rules,
        objectives: wire.objectives,
        execution_id: wire.execution_id,
        agent_id: wire.agent_id,
        metadata: wire.metadata,
        judge: wire.judge,
        timeout_ms: wire.timeout_ms,
    })
}

/// The audit id of a check that names none: `a-` and 32 hex digits of BLAKE3 of the
/// command id, so a resent check names the same entry.
pub fn derived_audit_id(command_id: &str) -> Token {
    let hash = blake3::hash(command_id.as_bytes());
    Token::new("audit_id", format!("a-{}", &hash.to_hex()[..32])).expect("hex is a valid token")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(command: &str, text: &str) -> Result<Command, Error> {
        Command::parse(command, Encoding::Json, text.as_bytes(), "c-1")
    }

    #[test]
    fn each_command_reads_and_names_its_aggregate() {
        let add =
            json("add_rule", r#"{"name":"r1","severity":"error","kind":"regex","params":{"pattern":"a"}}"#).unwrap();
        assert_eq!(add.aggregate().to_string(), "rule:r1");
        let check = json("check", r#"{"output":{"a":1},"rules":["r1"],"executionId":"run-1"}"#).unwrap();
        let Command::Check(c) = &check else { panic!() };
        assert_eq!(c.audit_id, derived_audit_id("c-1"));
        assert_eq!(c.execution_id.as_deref(), Some("run-1"));
        assert!(matches!(json("remove_rule", r#"{"name":"r1"}"#).unwrap(), Command::RemoveRule(_)));
    }

    #[test]
    fn every_command_as_sent_reads_back_as_itself() {
        let rule = json("add_rule", r#"{"name":"r1","severity":"error","kind":"regex","params":{"pattern":"a"}}"#);
        let Ok(Command::AddRule(rule)) = rule else { panic!("{rule:?}") };
        let check = json("check", r#"{"output":{"a":1},"rules":["r1"],"objectives":["tidy"],"timeout_ms":500}"#);
        let ended = RunEnded {
            run_id: "a-1:judge".into(),
            key: "a-1".into(),
            status: crate::scheduler::queries::RunStatus::Completed,
        };
        let commands = [
            Command::AddRule(rule.clone()),
            Command::UpdateRule(rule),
            Command::RemoveRule(Token::new("name", "r1").unwrap()),
            check.unwrap(),
            Command::RunEnded(ended),
        ];
        for command in &commands {
            for encoding in [Encoding::MessagePack, Encoding::Json] {
                let bytes = encoding.encode(command).unwrap();
                let read = Command::parse(command.name(), encoding, &bytes, "c-2");
                assert_eq!(read.as_ref(), Ok(command), "{} in {encoding:?}", command.name());
            }
        }
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        let cases = [
            ("check", r#"{"output":1,"rules":[]}"#, "rules"),
            ("check", r#"{"output":1,"rules":["a.b"]}"#, "rules[0]"),
            ("check", r#"{"output":1,"rules":["a"],"judge":{}}"#, "judge"),
            ("add_rule", r#"{"name":"a*","severity":"error","kind":"regex","params":{"pattern":"a"}}"#, "name"),
            ("remove_rule", r#"{}"#, "name"),
        ];
        for (command, text, named) in cases {
            let error = json(command, text).unwrap_err();
            assert!(error.to_string().contains(named), "{command} {text}: {error}");
        }
        assert!(json("frobnicate", "{}").unwrap_err().to_string().contains("add_rule"));
    }
}
