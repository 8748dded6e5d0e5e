//! Commands to the scheduler: `osp.v1.in.scheduler.<command>`, in MessagePack or JSON.
//!
//! From submitters: `submit`, `cancel`, `pause`, `resume`, `approve`, `reject`, `answer`.
//! From agents, about the attempt they hold: `started`, `progress`, `log`, `ask`,
//! `completed`, `failed`. Heartbeats are not commands: they go to
//! `osp.v1.task.<run_id>.heartbeat` on core NATS and are never stored.
//!
//! Fields are snake_case (`run_id`); the camelCase spellings of the OSP TypeScript types
//! (`runId`, `gracefulTimeoutMs`, `requestId`) are accepted too. Unknown fields are
//! refused. Sizes are measured on the MessagePack encoding.
//!
//! [`Command`] is both what the scheduler decides on and what a sender sends: its
//! `Serialize` writes the body [`Command::parse`] reads (the approver of an approval is
//! the sender's `Osp-Actor`, not a field).

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

use crate::command::read_name;
use crate::registry::document::{encoded_len, Document};
use crate::scheduler::options::{RunOptions, DEFAULT_GRACEFUL_TIMEOUT_MS, MAX_MS};
use crate::scheduler::workflow::{ParentLink, Workflow};
use crate::scheduler::{TaskError, SERVICE};
use crate::{check_size, Encoding, Error, InboxCommand, Token};

/// Largest task input or output, encoded.
pub const MAX_DATA_BYTES: usize = 256 * 1024;
/// Largest question, answer or metadata, encoded.
pub const MAX_SMALL_DATA_BYTES: usize = 64 * 1024;
/// Longest log line.
pub const MAX_LOG_BYTES: usize = 8 * 1024;
/// Longest reason, progress message or error message.
pub const MAX_TEXT_BYTES: usize = 4 * 1024;

/// The reason of a cancel that gives none.
pub const DEFAULT_CANCEL_REASON: &str = "cancelled";

/// The scheduler's commands, by their token on the inbox subject.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::VariantNames,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum CommandName {
    /// Create a run ([`Submit`]).
    Submit,
    /// End a run as cancelled ([`Cancel`]).
    Cancel,
    /// Stop dispatching a run's new work ([`Pause`]).
    Pause,
    /// Dispatch a paused run's work again.
    Resume,
    /// Approve a run waiting for approval ([`Decision`]).
    Approve,
    /// Reject a run waiting for approval, which cancels it ([`Decision`]).
    Reject,
    /// Answer an agent's question ([`Answer`]).
    Answer,
    /// An agent took the task ([`ReportKind::Started`]).
    Started,
    /// How far an agent is ([`ReportKind::Progress`]).
    Progress,
    /// A line of an agent's log ([`ReportKind::Log`]).
    Log,
    /// An agent's question for a person ([`ReportKind::Ask`]).
    Ask,
    /// An agent's success ([`ReportKind::Completed`]).
    Completed,
    /// An agent's failure ([`ReportKind::Failed`]).
    Failed,
}

/// The command tokens of the scheduler's inbox subjects (`osp.v1.in.scheduler.<command>`), as
/// [`CommandName`] names them.
pub const COMMANDS: &[&str] = <CommandName as strum::VariantNames>::VARIANTS;

/// Who sent a command, and its id: what some commands take their defaults from.
#[derive(Clone, Copy, Debug)]
pub struct Origin<'a> {
    /// The command's id (`Osp-Command-Id`): a submit without `run_id` gets an id
    /// derived from it, the same on every redelivery.
    pub command_id: &'a str,
    /// `Osp-Actor`: the approver of an approval, the agent of a report.
    pub actor: &'a str,
}

/// A command to the scheduler.
// A command is parsed, decided and dropped, never stored in bulk: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Command {
    /// Create a run.
    Submit(Submit),
    /// End a run as cancelled.
    Cancel(Cancel),
    /// Stop dispatching new work.
    Pause(Pause),
    /// Dispatch again.
    #[serde(serialize_with = "run_only")]
    Resume(Token),
    /// Approve (or reject) a run waiting for approval.
    Decide(Decision),
    /// Answer the agent's question.
    Answer(Answer),
    /// A report of the agent holding an attempt.
    Report(Report),
}

/// Create a run: of one task (`capability`), or of a workflow.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Submit {
    /// Given by the submitter, else derived from the command id (the same on every redelivery).
    pub run_id: Token,
    /// Which agents execute its task; `None` for a workflow run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<Token>,
    /// The workflow, when it is not a single task (a definition that is a single task is
    /// read as `capability` and options).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<Box<Workflow>>,
    /// The run whose step this is: set by the scheduler for the child runs it starts,
    /// never read from a client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentLink>,
    /// The task's input.
    pub input: Document,
    /// How it runs.
    pub options: RunOptions,
    /// The submitter's own data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Document>,
}

/// End a run as cancelled.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cancel {
    /// The run.
    pub run_id: Token,
    /// At most 4 KiB, `cancelled` when none is given; recorded, and passed on to the agent.
    pub reason: String,
    /// Tell the agent and wait for it to stop (up to `graceful_timeout_ms`), then force.
    pub graceful: bool,
    /// How long a graceful cancel waits.
    pub graceful_timeout_ms: u64,
}

/// Stop dispatching new work.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Pause {
    /// The run.
    pub run_id: Token,
    /// Recorded with the pause (at most 4 KiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An approver's decision: sent as `approve` or `reject`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Decision {
    /// The run.
    pub run_id: Token,
    /// Who decides: the command's `Osp-Actor`.
    #[serde(skip)]
    pub approver: String,
    /// Approve or reject: the command's name.
    #[serde(skip)]
    pub approved: bool,
    /// Recorded with the decision (at most 4 KiB) and shown in the run's approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer to an agent's question.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// The run.
    pub run_id: Token,
    /// The question answered; the open one when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Any document, at most 64 KiB encoded; sent on to the agent that asked.
    pub answer: Document,
}

/// A report about an attempt, from the agent holding it: sent as the report's name,
/// with the fields of its kind beside the attempt's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The run.
    pub run_id: Token,
    /// The attempt (from the task message).
    pub attempt: u32,
    /// The agent: the payload's `agent`, else the command's `Osp-Actor` with any
    /// `agent:` prefix left out.
    pub agent: String,
    /// What it reports.
    #[serde(flatten)]
    pub kind: ReportKind,
}

/// What an agent reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReportKind {
    /// It took the task.
    Started,
    /// How far it has got (`current` of `total`, in units the agent chooses).
    Progress {
        /// Done.
        current: u64,
        /// In all.
        #[serde(skip_serializing_if = "Option::is_none")]
        total: Option<u64>,
        /// What it is doing.
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A log line.
    Log {
        /// `debug`, `info`, `warn` or `error`.
        level: String,
        /// The line.
        message: String,
    },
    /// A question for a person.
    Ask {
        /// Chosen by the agent; an answer names it (or answers whichever question is open).
        request_id: String,
        /// Any document, at most 64 KiB encoded, for whoever answers.
        question: Document,
    },
    /// Success.
    Completed {
        /// The attempt's result (nil when the report has none), at most 256 KiB encoded.
        output: Document,
    },
    /// Failure.
    Failed {
        /// What went wrong.
        error: TaskError,
        /// Whether another attempt may succeed.
        retryable: bool,
    },
}

impl Command {
    /// The run it addresses.
    pub fn run_id(&self) -> &Token {
        match self {
            Command::Submit(c) => &c.run_id,
            Command::Cancel(c) => &c.run_id,
            Command::Pause(c) => &c.run_id,
            Command::Resume(run_id) => run_id,
            Command::Decide(c) => &c.run_id,
            Command::Answer(c) => &c.run_id,
            Command::Report(c) => &c.run_id,
        }
    }

    /// Reads command `command` (the subject's last token), checking every rule; the
    /// error names the field at fault.
    pub fn parse(command: &str, encoding: Encoding, payload: &[u8], origin: Origin<'_>) -> Result<Command, Error> {
        let name = read_name(SERVICE, command)?;
        match name {
            CommandName::Submit => parse_submit(encoding.decode(payload)?, origin).map(Command::Submit),
            CommandName::Cancel => {
                let wire: CancelWire = encoding.decode(payload)?;
                let graceful_timeout_ms = wire.graceful_timeout_ms.unwrap_or(DEFAULT_GRACEFUL_TIMEOUT_MS);
                if graceful_timeout_ms == 0 || graceful_timeout_ms > MAX_MS {
                    return Err(Error::Invalid {
                        field: "graceful_timeout_ms".into(),
                        reason: format!("must be 1 to {MAX_MS} ms"),
                    });
                }
                Ok(Command::Cancel(Cancel {
                    run_id: run_id(&wire.run_id)?,
                    reason: text("reason", wire.reason.unwrap_or_else(|| DEFAULT_CANCEL_REASON.into()))?,
                    graceful: wire.graceful,
                    graceful_timeout_ms,
                }))
            }
            CommandName::Pause => {
                let wire: RunWithReason = encoding.decode(payload)?;
                Ok(Command::Pause(Pause {
                    run_id: run_id(&wire.run_id)?,
                    reason: optional_text("reason", wire.reason)?,
                }))
            }
            CommandName::Resume => {
                let wire: RunOnly = encoding.decode(payload)?;
                Ok(Command::Resume(run_id(&wire.run_id)?))
            }
            CommandName::Approve | CommandName::Reject => {
                let wire: RunWithReason = encoding.decode(payload)?;
                Ok(Command::Decide(Decision {
                    run_id: run_id(&wire.run_id)?,
                    approver: origin.actor.to_owned(),
                    approved: name == CommandName::Approve,
                    reason: optional_text("reason", wire.reason)?,
                }))
            }
            CommandName::Answer => {
                let wire: AnswerWire = encoding.decode(payload)?;
                check_size("answer", encoded_len(&wire.answer), MAX_SMALL_DATA_BYTES)?;
                Ok(Command::Answer(Answer {
                    run_id: run_id(&wire.run_id)?,
                    request_id: wire.request_id.map(|id| request_id(&id)).transpose()?,
                    answer: wire.answer,
                }))
            }
            CommandName::Started
            | CommandName::Progress
            | CommandName::Log
            | CommandName::Ask
            | CommandName::Completed
            | CommandName::Failed => {
                let wire: ReportWire = encoding.decode(payload)?;
                parse_report(name, wire, origin).map(Command::Report)
            }
        }
    }
}

impl InboxCommand for Command {
    const SERVICE: &'static str = SERVICE;

    fn name(&self) -> &'static str {
        let name = match self {
            Command::Submit(_) => CommandName::Submit,
            Command::Cancel(_) => CommandName::Cancel,
            Command::Pause(_) => CommandName::Pause,
            Command::Resume(_) => CommandName::Resume,
            Command::Decide(decision) if decision.approved => CommandName::Approve,
            Command::Decide(_) => CommandName::Reject,
            Command::Answer(_) => CommandName::Answer,
            Command::Report(report) => report.kind.command(),
        };
        name.into()
    }
}

/// A resume's body: the run alone.
fn run_only<S: Serializer>(run_id: &Token, serializer: S) -> Result<S::Ok, S::Error> {
    let mut body = serializer.serialize_map(Some(1))?;
    body.serialize_entry("run_id", run_id)?;
    body.end()
}

impl ReportKind {
    /// The command token of the report.
    pub fn name(&self) -> &'static str {
        self.command().into()
    }

    fn command(&self) -> CommandName {
        match self {
            ReportKind::Started => CommandName::Started,
            ReportKind::Progress { .. } => CommandName::Progress,
            ReportKind::Log { .. } => CommandName::Log,
            ReportKind::Ask { .. } => CommandName::Ask,
            ReportKind::Completed { .. } => CommandName::Completed,
            ReportKind::Failed { .. } => CommandName::Failed,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitWire {
    #[serde(default, alias = "runId")]
    run_id: Option<String>,
    #[serde(default)]
    capability: Option<String>,
    #[serde(default)]
    workflow: Option<Workflow>,
    #[serde(default = "nil")]
    input: Document,
    #[serde(default)]
    options: RunOptions,
    #[serde(default)]
    metadata: Option<Document>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CancelWire {
    #[serde(alias = "runId")]
    run_id: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    graceful: bool,
    #[serde(default, alias = "gracefulTimeoutMs")]
    graceful_timeout_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunWithReason {
    #[serde(alias = "runId")]
    run_id: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunOnly {
    #[serde(alias = "runId")]
    run_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerWire {
    #[serde(alias = "runId")]
    run_id: String,
    #[serde(default, alias = "requestId")]
    request_id: Option<String>,
    answer: Document,
}

/// Every report's fields; which are allowed depends on the report.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportWire {
    #[serde(alias = "runId")]
    run_id: String,
    attempt: u32,
    #[serde(default)]
    agent: Option<String>,
    #[serde(default)]
    current: Option<u64>,
    #[serde(default)]
    total: Option<u64>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default, alias = "requestId")]
    request_id: Option<String>,
    #[serde(default)]
    question: Option<Document>,
    #[serde(default)]
    output: Option<Document>,
    #[serde(default)]
    error: Option<ErrorWire>,
    #[serde(default)]
    retryable: Option<bool>,
}

/// An error as an agent reports it: a message, or `{kind?, message, details?}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorWire {
    Message(String),
    Full {
        #[serde(default)]
        kind: Option<String>,
        message: String,
        #[serde(default)]
        details: Option<Document>,
    },
}

fn parse_submit(wire: SubmitWire, origin: Origin<'_>) -> Result<Submit, Error> {
    let run_id = match wire.run_id {
        Some(id) => run_id(&id)?,
        None => derived_run_id(origin.command_id),
    };
    check_size("input", encoded_len(&wire.input), MAX_DATA_BYTES)?;
    if let Some(metadata) = &wire.metadata {
        check_size("metadata", encoded_len(metadata), MAX_SMALL_DATA_BYTES)?;
    }
    wire.options.check()?;
    let (capability, workflow, options) = match (wire.capability, wire.workflow) {
        (Some(capability), None) => (Some(Token::new("capability", capability)?), None, wire.options),
        (None, Some(workflow)) => {
            workflow.check()?;
            let options = match (wire.options.is_default(), workflow.options().is_default()) {
                (_, true) => wire.options,
                (true, false) => workflow.options().clone(),
                (false, false) => {
                    return Err(Error::Invalid {
                        field: "options".into(),
                        reason: "given both with the submit and in the workflow's root step; give them once".into(),
                    })
                }
            };
            match workflow {
                Workflow::Task(task) => (Some(task.capability), None, options),
                workflow => (None, Some(Box::new(workflow)), options),
            }
        }
        (Some(_), Some(_)) => {
            return Err(Error::Invalid {
                field: "workflow".into(),
                reason: "a run has either a capability (one task) or a workflow, not both".into(),
            })
        }
        (None, None) => {
            return Err(Error::Invalid {
                field: "capability".into(),
                reason: "missing: a run needs a capability (one task) or a workflow".into(),
            })
        }
    };
    if options.retry.is_some() && workflow.is_some() {
        return Err(Error::Invalid {
            field: "options.retry".into(),
            reason: "retry applies to task steps: a workflow is retried step by step; set it on its steps".into(),
        });
    }
    if options.checks.is_some() && workflow.is_some() {
        return Err(Error::Invalid {
            field: "options.checks".into(),
            reason: "checks apply to task steps (an agent's output); set them on its steps".into(),
        });
    }
    Ok(Submit { run_id, capability, workflow, parent: None, input: wire.input, options, metadata: wire.metadata })
}

/// Reads report `name` (one of the reports' names).
fn parse_report(name: CommandName, wire: ReportWire, origin: Origin<'_>) -> Result<Report, Error> {
    if wire.attempt == 0 {
        return Err(Error::Invalid { field: "attempt".into(), reason: "attempts count from 1".into() });
    }
    let allowed: &[&str] = match name {
        CommandName::Started => &[],
        CommandName::Progress => &["current", "total", "message"],
        CommandName::Log => &["level", "message"],
        CommandName::Ask => &["request_id", "question"],
        CommandName::Completed => &["output"],
        _ => &["error", "retryable"],
    };
    let given = [
        ("current", wire.current.is_some()),
        ("total", wire.total.is_some()),
        ("message", wire.message.is_some()),
        ("level", wire.level.is_some()),
        ("request_id", wire.request_id.is_some()),
        ("question", wire.question.is_some()),
        ("output", wire.output.is_some()),
        ("error", wire.error.is_some()),
        ("retryable", wire.retryable.is_some()),
    ];
    if let Some((field, _)) = given.iter().find(|(field, given)| *given && !allowed.contains(field)) {
        return Err(Error::Invalid { field: (*field).into(), reason: format!("not a field of a {name} report") });
    }
    let kind = match name {
        CommandName::Started => ReportKind::Started,
        CommandName::Progress => ReportKind::Progress {
            current: wire.current.ok_or_else(|| missing("current"))?,
            total: wire.total,
            message: optional_text("message", wire.message)?,
        },
        CommandName::Log => {
            let level = wire.level.unwrap_or_else(|| "info".into());
            if !["debug", "info", "warn", "error"].contains(&level.as_str()) {
                return Err(Error::Invalid {
                    field: "level".into(),
                    reason: format!("{level:?} is not one of debug, info, warn, error"),
                });
            }
            let message = wire.message.ok_or_else(|| missing("message"))?;
            check_size("message", message.len(), MAX_LOG_BYTES)?;
            ReportKind::Log { level, message }
        }
        CommandName::Ask => {
            let question = wire.question.ok_or_else(|| missing("question"))?;
            check_size("question", encoded_len(&question), MAX_SMALL_DATA_BYTES)?;
            let request_id = match wire.request_id {
                Some(id) => request_id(&id)?,
                None => format!("q{}", wire.attempt),
            };
            ReportKind::Ask { request_id, question }
        }
        CommandName::Completed => {
            let output = wire.output.unwrap_or(Document::Nil);
            check_size("output", encoded_len(&output), MAX_DATA_BYTES)?;
            ReportKind::Completed { output }
        }
        _ => {
            let error = match wire.error.ok_or_else(|| missing("error"))? {
                ErrorWire::Message(message) => TaskError { kind: "error".into(), message, details: None },
                ErrorWire::Full { kind, message, details } => {
                    TaskError { kind: kind.unwrap_or_else(|| "error".into()), message, details }
                }
            };
            error.check()?;
            ReportKind::Failed { error, retryable: wire.retryable.unwrap_or(true) }
        }
    };
    // An agent's actor is `agent:<name>` by convention; the attempt is held by the name,
    // as the registry knows it (so its offline events find the attempt).
    let agent = wire.agent.unwrap_or_else(|| origin.actor.strip_prefix("agent:").unwrap_or(origin.actor).to_owned());
    if agent.is_empty() || agent.len() > 128 {
        return Err(Error::Invalid { field: "agent".into(), reason: "must be 1 to 128 bytes".into() });
    }
    Ok(Report { run_id: run_id(&wire.run_id)?, attempt: wire.attempt, agent, kind })
}

fn nil() -> Document {
    Document::Nil
}

fn missing(field: &str) -> Error {
    Error::Invalid { field: field.into(), reason: "is required".into() }
}

fn run_id(value: &str) -> Result<Token, Error> {
    Token::new("run_id", value)
}

fn request_id(value: &str) -> Result<String, Error> {
    Token::new("request_id", value).map(|token| token.as_str().to_owned())
}

fn text(field: &str, value: String) -> Result<String, Error> {
    check_size(field, value.len(), MAX_TEXT_BYTES)?;
    Ok(value)
}

fn optional_text(field: &str, value: Option<String>) -> Result<Option<String>, Error> {
    value.map(|value| text(field, value)).transpose()
}

/// The run id a submit without one gets: derived from the command's id, so a redelivered
/// submit names the same run.
pub fn derived_run_id(command_id: &str) -> Token {
    let hash = blake3::hash(command_id.as_bytes());
    Token::new("run_id", format!("r-{}", &hash.to_hex()[..32])).expect("hex is a valid token")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: Origin<'static> = Origin { command_id: "c-1", actor: "ann" };

    fn json(command: &str, text: &str) -> Result<Command, Error> {
        Command::parse(command, Encoding::Json, text.as_bytes(), ORIGIN)
    }

    #[test]
    fn submit_reads_the_spec_shape_and_derives_a_missing_run_id() {
        let Command::Submit(submit) =
            json("submit", r#"{"capability":"summarize","input":{"text":"hi"},"options":{"retry":{"attempts":2}}}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(submit.run_id, derived_run_id("c-1"));
        assert_eq!(submit.options.max_attempts(), 2);
        let Command::Submit(named) = json("submit", r#"{"runId":"r-7","capability":"x"}"#).unwrap() else { panic!() };
        assert_eq!((named.run_id.as_str(), named.input.clone()), ("r-7", Document::Nil));
    }

    #[test]
    fn bad_input_names_the_field() {
        for (command, text, field) in [
            ("submit", r#"{"run_id":"a.b","capability":"x"}"#, "run_id"),
            ("submit", r#"{"run_id":"*","capability":"x"}"#, "run_id"),
            ("submit", r#"{"capability":"a b"}"#, "capability"),
            ("submit", r#"{"capability":"x","options":{"retry":{"attempts":0}}}"#, "options.retry.attempts"),
            ("cancel", r#"{"run_id":"r","graceful_timeout_ms":0}"#, "graceful_timeout_ms"),
            ("progress", r#"{"run_id":"r","attempt":1}"#, "current"),
            ("progress", r#"{"run_id":"r","attempt":1,"current":1,"output":3}"#, "output"),
            ("started", r#"{"run_id":"r","attempt":0}"#, "attempt"),
            ("log", r#"{"run_id":"r","attempt":1,"message":"m","level":"loud"}"#, "level"),
            ("failed", r#"{"run_id":"r","attempt":1}"#, "error"),
            ("answer", r#"{"run_id":"r","request_id":"a.b","answer":1}"#, "request_id"),
        ] {
            let err = json(command, text).unwrap_err();
            assert_eq!(err.field(), Some(field), "{command} {text}: {err}");
        }
        let err = json("submit", r#"{"capability":"x","input":{},"extra":1}"#).unwrap_err().to_string();
        assert!(err.contains("extra"), "{err}");
        let err = json("launch", "{}").unwrap_err().to_string();
        assert!(err.contains("unknown command \"launch\"") && err.contains("submit"), "{err}");
        let big = format!(r#"{{"capability":"x","input":"{}"}}"#, "x".repeat(MAX_DATA_BYTES));
        assert_eq!(json("submit", &big).unwrap_err().code(), "too_large");
    }

    #[test]
    fn every_command_as_sent_reads_back_as_itself() {
        use strum::IntoEnumIterator;
        let run = || Token::new("run_id", "r-1").unwrap();
        let report = |kind| Command::Report(Report { run_id: run(), attempt: 2, agent: "a1".into(), kind });
        let routing = serde_json::json!({"routing": {"classify": {"task": {"capability": "c"}}, "routes": {"a": {"task": {"capability": "x"}}}}});
        let submit = Submit {
            run_id: run(),
            capability: Some(Token::new("capability", "summarize").unwrap()),
            workflow: None,
            parent: None,
            input: Document::from("hi"),
            options: RunOptions::default(),
            metadata: Some(Document::Map(vec![(Document::from("team"), Document::from("docs"))])),
        };
        let workflow = Submit {
            capability: None,
            workflow: Some(Box::new(serde_json::from_value(routing).unwrap())),
            metadata: None,
            ..submit.clone()
        };
        let error = TaskError { kind: "quota".into(), message: "m".into(), details: Some(Document::from(3)) };
        let commands = [
            Command::Submit(submit),
            Command::Submit(workflow),
            Command::Cancel(Cancel { run_id: run(), reason: "done".into(), graceful: true, graceful_timeout_ms: 500 }),
            Command::Pause(Pause { run_id: run(), reason: None }),
            Command::Resume(run()),
            Command::Decide(Decision {
                run_id: run(),
                approver: "ann".into(),
                approved: true,
                reason: Some("ok".into()),
            }),
            Command::Decide(Decision { run_id: run(), approver: "ann".into(), approved: false, reason: None }),
            Command::Answer(Answer { run_id: run(), request_id: Some("q1".into()), answer: Document::from(true) }),
            report(ReportKind::Started),
            report(ReportKind::Progress { current: 1, total: None, message: Some("one".into()) }),
            report(ReportKind::Log { level: "warn".into(), message: "hm".into() }),
            report(ReportKind::Ask { request_id: "q2-1".into(), question: Document::from("ok?") }),
            report(ReportKind::Completed { output: Document::from("done") }),
            report(ReportKind::Failed { error, retryable: false }),
        ];
        for command in &commands {
            for encoding in [Encoding::MessagePack, Encoding::Json] {
                let bytes = encoding.encode(command).unwrap();
                let read = Command::parse(command.name(), encoding, &bytes, ORIGIN);
                assert_eq!(read.as_ref(), Ok(command), "{} in {encoding:?}", command.name());
            }
        }
        let sent: Vec<&str> = commands.iter().map(InboxCommand::name).collect();
        assert!(CommandName::iter().all(|name| sent.contains(&name.into())), "every name is a command's: {sent:?}");
        let resume = Encoding::Json.encode(&Command::Resume(run())).unwrap();
        assert_eq!(resume, br#"{"run_id":"r-1"}"#, "a resume's body is the run alone");
    }

    #[test]
    fn approvals_and_reports_take_their_sender_from_the_actor() {
        let Command::Decide(decision) = json("reject", r#"{"run_id":"r","reason":"no"}"#).unwrap() else { panic!() };
        assert_eq!((decision.approver.as_str(), decision.approved), ("ann", false));
        let Command::Report(report) = json("failed", r#"{"run_id":"r","attempt":2,"error":"boom"}"#).unwrap() else {
            panic!()
        };
        assert_eq!(report.agent, "ann");
        assert_eq!(
            report.kind,
            ReportKind::Failed {
                error: TaskError { kind: "error".into(), message: "boom".into(), details: None },
                retryable: true
            }
        );
        let Command::Report(report) = json(
            "failed",
            r#"{"run_id":"r","attempt":2,"agent":"a1","error":{"kind":"quota","message":"m"},"retryable":false}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!((report.agent.as_str(), report.kind.name()), ("a1", "failed"));
    }
}
