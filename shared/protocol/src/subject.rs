//! Subjects of wire protocol v1 and the tokens they are built from.
//!
//! Every subject token that comes from input (an aggregate id, a capability, a service
//! name) goes through [`Token::new`] first. NATS gives `.`, `*` and `>` meaning inside a
//! subject, so an id such as `a.b` or `*` would silently address other aggregates or
//! subscribe to all of them; whitespace and control characters break the wire format.
//! Rejecting them here, once, is what keeps "subject injection" out of every service.

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_general_category::{get_general_category, GeneralCategory};

use crate::Error;

/// Longest token accepted, in bytes. Long enough for a UUID with a prefix or a
/// human-chosen name; short enough that a subject stays well under NATS limits.
pub const MAX_TOKEN_LEN: usize = 128;

/// Version of the subject plan; it is the second token of every subject we build.
pub const PROTOCOL_VERSION: &str = "v1";

/// A validated subject token: non-empty, at most [`MAX_TOKEN_LEN`] bytes, and free of
/// `.`, `*`, `>`, whitespace and control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Token(String);

impl Token {
    /// Validates `value` as the token for `field` (the field name goes into the error so
    /// a caller learns which of its inputs was wrong).
    pub fn new(field: &str, value: impl Into<String>) -> Result<Token, Error> {
        let value = value.into();
        match token_problem(&value) {
            None => Ok(Token(value)),
            Some(reason) => Err(Error::InvalidToken {
                field: field.to_owned(),
                value: truncated(&value),
                reason: reason.to_owned(),
            }),
        }
    }

    /// The token's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Token {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Token {
    /// Tokens are validated even when they arrive inside a decoded message, so no
    /// unvalidated id can reach a subject builder through serde.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = String::deserialize(d)?;
        match token_problem(&value) {
            None => Ok(Token(value)),
            Some(reason) => {
                Err(serde::de::Error::custom(format!("invalid subject token {:?}: {reason}", truncated(&value))))
            }
        }
    }
}

/// Why `value` cannot be a subject token, or `None` when it can.
fn token_problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        return Some("must not be empty");
    }
    if value.len() > MAX_TOKEN_LEN {
        return Some("longer than 128 bytes");
    }
    value.chars().find_map(|c| match c {
        '.' => Some("must not contain '.' (it separates subject tokens)"),
        '*' | '>' => Some("must not contain the NATS wildcards '*' or '>'"),
        c if c.is_whitespace() => Some("must not contain whitespace"),
        c if c.is_control() => Some("must not contain control characters"),
        c if get_general_category(c) == GeneralCategory::Format => {
            Some("must not contain invisible format characters (Unicode category Cf, such as U+202E, which reverses what follows on screen)")
        }
        _ => None,
    })
}

/// Keeps error messages short when someone sends a megabyte as an id.
fn truncated(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &value[..cut]),
        None => value.to_owned(),
    }
}

/// The kind and id of an aggregate: together they name its subject on the log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AggregateRef {
    /// What the aggregate is: `run`, `agent`, `scope`, `audit`, ...
    pub kind: Token,
    /// Which one it is.
    pub id: Token,
}

impl AggregateRef {
    /// Validates both parts.
    pub fn new(kind: &str, id: &str) -> Result<AggregateRef, Error> {
        Ok(AggregateRef { kind: Token::new("aggregate kind", kind)?, id: Token::new("aggregate id", id)? })
    }

    /// The aggregate's own subject on the event log: `osp.v1.evt.<kind>.<id>`.
    pub fn subject(&self) -> String {
        format!("{EVENT_PREFIX}.{}.{}", self.kind, self.id)
    }

    /// Parses an event-log subject back into the aggregate it names.
    pub fn from_subject(subject: &str) -> Result<AggregateRef, Error> {
        let rest = subject.strip_prefix(EVENT_PREFIX).and_then(|rest| rest.strip_prefix('.')).ok_or_else(|| {
            Error::InvalidSubject { subject: truncated(subject), reason: format!("not under {EVENT_PREFIX}") }
        })?;
        let (kind, id) = rest.split_once('.').ok_or_else(|| Error::InvalidSubject {
            subject: truncated(subject),
            reason: "expected <kind>.<id> after the prefix".into(),
        })?;
        AggregateRef::new(kind, id)
    }
}

impl fmt::Display for AggregateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.id)
    }
}

/// Prefix of every event-log subject.
pub const EVENT_PREFIX: &str = "osp.v1.evt";
/// Every event of every aggregate: the filter of a full replay.
pub const ALL_EVENTS: &str = "osp.v1.evt.>";
/// Prefix of the inbox subjects, where anyone sends commands to a service.
pub const INBOX_PREFIX: &str = "osp.v1.in";
/// Prefix of the work-queue subjects, one per capability.
pub const WORK_PREFIX: &str = "osp.v1.work";
/// Prefix of timer subjects (schedules and fired timers).
pub const TIMER_PREFIX: &str = "osp.v1.timer";
/// Prefix of query subjects: core NATS request/reply, answered by any instance.
pub const QUERY_PREFIX: &str = "osp.v1.q";
/// Prefix of the subjects where the instances of a service holding shares of its
/// partitions each answer a query over every aggregate for their share: core NATS, every
/// instance subscribed (no queue group), asked only by instances of that service.
pub const GATHER_PREFIX: &str = "osp.v1.gather";
/// Prefix of the subjects where an instance of a service holding a share of its
/// partitions takes the commands other instances read for its partitions: core NATS
/// request/reply between the service's instances only.
pub const OWNER_PREFIX: &str = "osp.v1.owner";
/// Prefix of agents' heartbeats: core NATS, never stored.
pub const HEARTBEAT_PREFIX: &str = "osp.v1.hb";
/// Every agent's heartbeat: what a registry instance subscribes to.
pub const ALL_HEARTBEATS: &str = "osp.v1.hb.*";

/// Every event of one aggregate kind: `osp.v1.evt.<kind>.*`.
pub fn events_of_kind(kind: &Token) -> String {
    format!("{EVENT_PREFIX}.{kind}.*")
}

/// A command to `service`: `osp.v1.in.<service>.<command>`.
pub fn inbox(service: &Token, command: &Token) -> String {
    format!("{INBOX_PREFIX}.{service}.{command}")
}

/// Every command to `service`: the filter of its shared inbox consumer.
pub fn inbox_of(service: &Token) -> String {
    format!("{INBOX_PREFIX}.{service}.>")
}

/// The command token of an inbox subject of `service` (`register` in
/// `osp.v1.in.registry.register`), or `None` when the subject is not one of its commands.
pub fn inbox_command<'a>(service: &Token, subject: &'a str) -> Option<&'a str> {
    subject
        .strip_prefix(INBOX_PREFIX)?
        .strip_prefix('.')?
        .strip_prefix(service.as_str())?
        .strip_prefix('.')
        .filter(|command| !command.is_empty())
}

/// The query endpoints of `service` live under `osp.v1.q.<service>`.
pub fn query_group(service: &Token) -> String {
    format!("{QUERY_PREFIX}.{service}")
}

/// One query of `service`: `osp.v1.q.<service>.<query>`.
pub fn query(service: &Token, query: &Token) -> String {
    format!("{QUERY_PREFIX}.{service}.{query}")
}

/// Where every instance of `service` answers `query` for its share of the partitions:
/// `osp.v1.gather.<service>.<query>`.
pub fn gather(service: &Token, query: &Token) -> String {
    format!("{GATHER_PREFIX}.{service}.{query}")
}

/// Where the instance `member` of `service` takes what another instance read for its
/// partitions: `osp.v1.owner.<service>.<member>.<what>`, `what` being `inbox` for
/// commands or a reactor's name for events whose effects it performs.
pub fn owner(service: &Token, member: &str, what: &str) -> String {
    format!("{OWNER_PREFIX}.{service}.{member}.{what}")
}

/// Where the agent named `agent` sends its heartbeats: `osp.v1.hb.<agent>`.
pub fn heartbeat(agent: &Token) -> String {
    format!("{HEARTBEAT_PREFIX}.{agent}")
}

/// Tasks for agents with `capability`: `osp.v1.work.<capability>`.
pub fn work(capability: &Token) -> String {
    format!("{WORK_PREFIX}.{capability}")
}

/// Where a timer of `owner` named `id` waits until it is due (the schedule message).
pub fn timer_schedule(owner: &Token, id: &Token) -> String {
    format!("{TIMER_PREFIX}.set.{owner}.{id}")
}

/// Where the timer lands when it fires.
pub fn timer_fired(owner: &Token, id: &Token) -> String {
    format!("{TIMER_PREFIX}.fired.{owner}.{id}")
}

/// Every fired timer of `owner`: the filter of its timer consumer.
pub fn timers_fired_of(owner: &Token) -> String {
    format!("{TIMER_PREFIX}.fired.{owner}.*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["run-1", "0192f1c2-7e3a-7b40-9c1d-1234567890ab", "agent_42", "émile", "a:b"] {
            assert_eq!(Token::new("id", ok).unwrap().as_str(), ok);
        }
        assert!(Token::new("id", "x".repeat(MAX_TOKEN_LEN)).is_ok());
    }

    #[test]
    fn rejects_injection_attempts_naming_the_field() {
        let cases = [
            ("a.b", "'.'"),
            ("*", "wildcards"),
            (">", "wildcards"),
            ("a*b", "wildcards"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\nb", "whitespace"),
            ("a\u{0}b", "control"),
            ("a\u{7f}b", "control"),
            ("ab\u{202e}cd", "U+202E"),
            ("zero\u{200b}width", "format characters"),
            ("\u{feff}bom", "format characters"),
            ("", "empty"),
        ];
        for (bad, why) in cases {
            let err = Token::new("run id", bad).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("run id"), "{text}");
            assert!(text.contains(why), "{bad:?}: {text}");
        }
        let long = Token::new("id", "x".repeat(MAX_TOKEN_LEN + 1)).unwrap_err();
        assert!(long.to_string().contains("longer than 128"), "{long}");
        assert!(long.to_string().len() < 200, "a long value is truncated in the message");
    }

    #[test]
    fn tokens_are_validated_when_decoded() {
        let ok: Token = serde_json::from_str("\"run-7\"").unwrap();
        assert_eq!(ok.as_str(), "run-7");
        let err = serde_json::from_str::<Token>("\"run.7\"").unwrap_err();
        assert!(err.to_string().contains("invalid subject token"), "{err}");
    }

    #[test]
    fn aggregate_subject_round_trips() {
        let agg = AggregateRef::new("run", "r-1").unwrap();
        assert_eq!(agg.subject(), "osp.v1.evt.run.r-1");
        assert_eq!(AggregateRef::from_subject(&agg.subject()).unwrap(), agg);
        assert!(AggregateRef::from_subject("osp.v1.in.run.r-1").is_err());
        assert!(AggregateRef::from_subject("osp.v1.evt.run").is_err());
        assert!(AggregateRef::from_subject("osp.v1.evt.run.a.b").is_err());
    }

    #[test]
    fn builders_compose_validated_tokens() {
        let t = |s: &str| Token::new("t", s).unwrap();
        assert_eq!(inbox(&t("scheduler"), &t("submit")), "osp.v1.in.scheduler.submit");
        assert_eq!(inbox_of(&t("scheduler")), "osp.v1.in.scheduler.>");
        assert_eq!(work(&t("summarize")), "osp.v1.work.summarize");
        assert_eq!(events_of_kind(&t("run")), "osp.v1.evt.run.*");
        assert_eq!(timer_schedule(&t("scheduler"), &t("x")), "osp.v1.timer.set.scheduler.x");
        assert_eq!(timer_fired(&t("scheduler"), &t("x")), "osp.v1.timer.fired.scheduler.x");
        assert_eq!(timers_fired_of(&t("scheduler")), "osp.v1.timer.fired.scheduler.*");
        assert_eq!(query(&t("registry"), &t("find")), "osp.v1.q.registry.find");
        assert_eq!(query_group(&t("registry")), "osp.v1.q.registry");
        assert_eq!(heartbeat(&t("agent-1")), "osp.v1.hb.agent-1");
    }

    #[test]
    fn inbox_command_is_the_token_after_the_service() {
        let registry = Token::new("service", "registry").unwrap();
        assert_eq!(inbox_command(&registry, "osp.v1.in.registry.register"), Some("register"));
        assert_eq!(inbox_command(&registry, "osp.v1.in.registry.a.b"), Some("a.b"));
        for other in
            ["osp.v1.in.registry", "osp.v1.in.registry.", "osp.v1.in.registryx.register", "osp.v1.in.scheduler.x"]
        {
            assert_eq!(inbox_command(&registry, other), None, "{other}");
        }
    }
}
