//! The quality service, typed: manage the catalog of rules (add, update, remove), check
//! an output against rules (which records an audit entry), and read the catalog and the
//! audit (rules, rule, audit, audits, digest).
//!
//! ```no_run
//! # async fn demo(client: &osp_client::Client) -> osp_client::Result<()> {
//! use osp_client::CheckRequest;
//! let check = CheckRequest::new(serde_json::json!({"summary": "Short."}), ["has-summary"])
//!     .execution_id("run-42")
//!     .objective("the summary is there");
//! let entry = client.quality().check_and_wait(&check, std::time::Duration::from_secs(90)).await?;
//! println!("audit {}: {:?}", entry.id, entry.opinion);
//! # Ok(()) }
//! ```

use osp_protocol::quality::queries::{
    AuditIdQuery, AuditPage, AuditQuery, AuditView, Digest, DigestQuery, RulePage, RuleQuery, RuleView, RulesQuery,
};
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use futures::StreamExt;
use osp_protocol::quality::{
    AuditEntry, Check, CheckOutcome, Command, JudgeSpec, QualityEvent, RemoveOutcome, Rule, AUDIT_KIND, SERVICE,
};
use osp_protocol::{AggregateRef, Envelope, Token};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

use crate::scheduler::{command_id, EVENTS_STREAM};
use crate::{Answer, Client, Error, Result};

/// The quality service, through a [`Client`]. Rules are added and checks are made in the
/// name of the client's actor ([`Client::with_actor`]).
#[derive(Clone, Debug)]
pub struct Quality {
    client: Client,
}

impl Client {
    /// The quality service.
    pub fn quality(&self) -> Quality {
        Quality { client: self.clone() }
    }
}

/// A check to send: an output, the rules it must pass, and what the audit entry records
/// with it. Its audit id is chosen when the request is made (a UUID v7 unless
/// [`CheckRequest::audit_id`] names one), so sending the same request again, after a
/// timeout say, names the same entry and is recognised as a resend rather than a new
/// check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckRequest {
    audit_id: String,
    output: serde_json::Value,
    rules: Vec<String>,
    objectives: Vec<String>,
    execution_id: Option<String>,
    agent_id: Option<String>,
    metadata: Option<serde_json::Value>,
    judge: Option<JudgeSpec>,
    timeout_ms: Option<u64>,
}

impl CheckRequest {
    /// A check of `output` against `rules` (by name, in the order their results are
    /// reported), with a fresh audit id.
    pub fn new<R: Into<String>>(output: serde_json::Value, rules: impl IntoIterator<Item = R>) -> CheckRequest {
        CheckRequest {
            audit_id: Uuid::now_v7().to_string(),
            output,
            rules: rules.into_iter().map(Into::into).collect(),
            objectives: Vec::new(),
            execution_id: None,
            agent_id: None,
            metadata: None,
            judge: None,
            timeout_ms: None,
        }
    }

    /// Has a judge (an agent with the `judge` capability) score the output too. The
    /// audit entry is then recorded when the judge has answered (or its time is up).
    pub fn judge(mut self, judge: JudgeSpec) -> CheckRequest {
        self.judge = Some(judge);
        self
    }

    /// How long the judge and custom rules may take (the service's default, a minute,
    /// when not set); past it, what is missing is missing evidence.
    pub fn timeout_ms(mut self, ms: u64) -> CheckRequest {
        self.timeout_ms = Some(ms);
        self
    }

    /// Names the audit entry (a subject token: no `.`, `*`, `>` or whitespace).
    pub fn audit_id(mut self, audit_id: impl Into<String>) -> CheckRequest {
        self.audit_id = audit_id.into();
        self
    }

    /// Adds what the checks are for.
    pub fn objective(mut self, objective: impl Into<String>) -> CheckRequest {
        self.objectives.push(objective.into());
        self
    }

    /// Adds several objectives.
    pub fn objectives<O: Into<String>>(mut self, objectives: impl IntoIterator<Item = O>) -> CheckRequest {
        self.objectives.extend(objectives.into_iter().map(Into::into));
        self
    }

    /// The execution checked (a run id).
    pub fn execution_id(mut self, execution_id: impl Into<String>) -> CheckRequest {
        self.execution_id = Some(execution_id.into());
        self
    }

    /// The agent whose output it is.
    pub fn agent_id(mut self, agent_id: impl Into<String>) -> CheckRequest {
        self.agent_id = Some(agent_id.into());
        self
    }

    /// Anything else, kept with the entry.
    pub fn metadata(mut self, metadata: serde_json::Value) -> CheckRequest {
        self.metadata = Some(metadata);
        self
    }

    /// The audit entry's id.
    pub fn id(&self) -> &str {
        &self.audit_id
    }

    /// The output checked.
    pub fn output(&self) -> &serde_json::Value {
        &self.output
    }

    /// The rules, by name.
    pub fn rules(&self) -> &[String] {
        &self.rules
    }

    /// The `Osp-Command-Id` of this check: derived from the audit id and a hash of what
    /// is checked, so a resend is the same command, and another check under the same
    /// audit id is another command (which the service refuses as a conflict).
    pub fn command_id(&self) -> String {
        let content = (
            (&self.output, &self.rules, &self.objectives, &self.execution_id, &self.agent_id, &self.metadata),
            (&self.judge, &self.timeout_ms),
        );
        let body = serde_json::to_vec(&content).unwrap_or_default();
        let hash = &blake3::hash(&body).to_hex()[..16];
        command_id(&format!("check:{}:{hash}", self.audit_id))
    }

    /// The command's body, its names checked as the service checks them (so a bad one
    /// is said before anything is sent).
    fn body(&self) -> Result<Check> {
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, name)| Token::new(&format!("rules[{i}]"), name.as_str()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(Check {
            audit_id: Token::new("audit_id", self.audit_id.as_str())?,
            output: self.output.clone(),
            rules,
            objectives: self.objectives.clone(),
            execution_id: self.execution_id.clone(),
            agent_id: self.agent_id.clone(),
            metadata: self.metadata.clone(),
            judge: self.judge.clone(),
            timeout_ms: self.timeout_ms,
        })
    }
}

impl Quality {
    /// Adds a rule to the catalog. The same rule again changes nothing; another rule
    /// under a name in use is refused as a conflict (use [`Quality::update_rule`]).
    pub async fn add_rule(&self, rule: &Rule) -> Result<Answer<RuleView>> {
        Token::new("name", rule.name.as_str())?;
        self.client.send(&Command::AddRule(rule.clone())).await
    }

    /// Replaces a rule of the catalog (the old definition stays in the log, and in the
    /// audit entries checked against it).
    pub async fn update_rule(&self, rule: &Rule) -> Result<Answer<RuleView>> {
        Token::new("name", rule.name.as_str())?;
        self.client.send(&Command::UpdateRule(rule.clone())).await
    }

    /// Removes a rule from the catalog; `false` when there was none of that name.
    pub async fn remove_rule(&self, name: &str) -> Result<bool> {
        let remove = Command::RemoveRule(Token::new("name", name)?);
        match self.client.send::<_, RemoveOutcome>(&remove).await {
            Ok(answer) => Ok(answer.result.removed),
            Err(Error::Rejected { error: osp_protocol::Error::NotFound { .. }, .. }) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Checks an output against rules of the catalog: the audit entry, when the check
    /// is recorded at once (built-in rules only), or the open check while agents (a
    /// judge, custom rules) answer. Sending the same request again answers with the same
    /// entry.
    pub async fn check(&self, check: &CheckRequest) -> Result<Answer<CheckOutcome>> {
        self.client.send_with_id(&Command::Check(Box::new(check.body()?)), &check.command_id()).await
    }

    /// Checks an output and waits up to `timeout` for the audit entry: when the check is
    /// open, its events are followed on the log until the entry is recorded (the service
    /// records it by the check's own deadline at the latest).
    pub async fn check_and_wait(&self, check: &CheckRequest, timeout: Duration) -> Result<AuditEntry> {
        match self.check(check).await?.result {
            CheckOutcome::Recorded(entry) => Ok(*entry),
            CheckOutcome::Open(open) => self.wait_recorded(&open.audit_id, timeout).await,
        }
    }

    /// Waits up to `timeout` for audit `audit_id` to be recorded, following its events on
    /// the log (`osp.v1.evt.audit.<id>`) from the start.
    pub async fn wait_recorded(&self, audit_id: &str, timeout: Duration) -> Result<AuditEntry> {
        let aggregate = AggregateRef::new(AUDIT_KIND, audit_id)?;
        let waiting = async {
            let config = pull::OrderedConfig { filter_subject: aggregate.subject(), ..Default::default() };
            let consumer = async_nats::jetstream::new(self.client.nats().clone())
                .create_consumer_on_stream(config, EVENTS_STREAM)
                .await
                .map_err(|e| Error::nats("create a consumer of the audit's events", e))?;
            let mut messages = consumer.messages().await.map_err(|e| Error::nats("read the audit's events", e))?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| Error::nats("read the audit's events", e))?;
                let seq = message.info().map(|info| info.stream_sequence).unwrap_or(0);
                let envelope =
                    Envelope::<QualityEvent>::decode(&message.payload).map_err(|error| Error::Event { seq, error })?;
                if let QualityEvent::AuditRecorded(recorded) = envelope.payload {
                    self.client.saw(seq);
                    return Ok(recorded.entry);
                }
            }
            Err(Error::nats("follow the audit's events", std::io::Error::other("the event stream ended")))
        };
        tokio::time::timeout(timeout, waiting)
            .await
            .map_err(|_| Error::NotRecorded { audit_id: audit_id.to_owned(), waited: timeout })?
    }

    /// One page of the catalog, by name: the rules after `after` (the previous page's
    /// `next`), at most `limit` of them (the service's default when `None`).
    pub async fn rules(&self, after: Option<String>, limit: Option<u32>) -> Result<RulePage> {
        Ok(self.client.query(SERVICE, "rules", &RulesQuery { after, limit }).await?.result)
    }

    /// The whole catalog, page after page.
    pub async fn all_rules(&self) -> Result<Vec<RuleView>> {
        let mut rules = Vec::new();
        let mut after = None;
        loop {
            let page = self.rules(after, None).await?;
            rules.extend(page.rules);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(rules),
            }
        }
    }

    /// One rule of the catalog, or `None`.
    pub async fn rule(&self, name: &str) -> Result<Option<RuleView>> {
        self.found("rule", &RuleQuery { name: name.to_owned() }).await
    }

    /// One audit entry and the rule definitions it was checked against, or `None`.
    pub async fn audit(&self, id: &str) -> Result<Option<AuditView>> {
        self.found("audit", &AuditIdQuery { id: id.to_owned() }).await
    }

    /// One page of the audit entries matching every filter of `query`, oldest first.
    pub async fn audits(&self, query: &AuditQuery) -> Result<AuditPage> {
        Ok(self.client.query(SERVICE, "audits", query).await?.result)
    }

    /// A fingerprint of the answering instance's whole state.
    pub async fn digest(&self) -> Result<Answer<Digest>> {
        self.client.query(SERVICE, "digest", &DigestQuery {}).await
    }

    /// The answer to `query`, or `None` when the service says there is no such thing.
    async fn found<Q: Serialize, R: DeserializeOwned>(&self, query: &str, body: &Q) -> Result<Option<R>> {
        match self.client.query(SERVICE, query, body).await {
            Ok(answer) => Ok(Some(answer.result)),
            Err(Error::Rejected { error: osp_protocol::Error::NotFound { .. }, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::{Encoding, InboxCommand};
    use serde_json::json;

    #[test]
    fn a_check_keeps_its_audit_id_so_resends_are_recognised() {
        let check = CheckRequest::new(json!({"summary": "hi"}), ["has-summary"]);
        assert!(Token::new("audit_id", check.id()).is_ok());
        assert_eq!(check.clone().command_id(), check.command_id());
        assert!(check.command_id().starts_with(&format!("check:{}:", check.id())));
        assert_ne!(CheckRequest::new(json!({"summary": "hi"}), ["has-summary"]).id(), check.id());

        let named = check.clone().audit_id("audit-1");
        assert!(named.command_id().starts_with("check:audit-1:"));
        let variants = [
            named.clone().objective("be short"),
            named.clone().execution_id("run-1"),
            named.clone().agent_id("writer"),
            named.clone().metadata(json!({"team": "docs"})),
            CheckRequest::new(json!({"summary": "ho"}), ["has-summary"]).audit_id("audit-1"),
            CheckRequest::new(json!({"summary": "hi"}), ["has-summary", "short"]).audit_id("audit-1"),
        ];
        for other in variants {
            assert_ne!(other.command_id(), named.command_id(), "other content, another command: {other:?}");
        }
    }

    #[test]
    fn the_check_body_is_what_the_service_reads() {
        let check = CheckRequest::new(json!({"summary": "hi"}), ["has-summary", "short"])
            .audit_id("audit-1")
            .objectives(["be short", "be right"])
            .execution_id("run-1")
            .agent_id("writer")
            .metadata(json!({"team": "docs"}));
        let bytes = Encoding::MessagePack.encode(&check.body().unwrap()).unwrap();
        let Command::Check(read) = Command::parse("check", Encoding::MessagePack, &bytes, "c-1").unwrap() else {
            panic!("not a check")
        };
        assert_eq!(read.audit_id.as_str(), "audit-1");
        assert_eq!(read.output, json!({"summary": "hi"}));
        assert_eq!(read.rules.iter().map(Token::as_str).collect::<Vec<_>>(), ["has-summary", "short"]);
        assert_eq!(read.objectives, ["be short", "be right"]);
        assert_eq!((read.execution_id.as_deref(), read.agent_id.as_deref()), (Some("run-1"), Some("writer")));
        assert_eq!(read.metadata, Some(json!({"team": "docs"})));

        let bare = CheckRequest::new(json!("text"), ["r"]).audit_id("a-2");
        let bytes = Encoding::MessagePack.encode(&bare.body().unwrap()).unwrap();
        let Command::Check(read) = Command::parse("check", Encoding::MessagePack, &bytes, "c-2").unwrap() else {
            panic!("not a check")
        };
        assert_eq!((read.execution_id, read.agent_id, read.metadata), (None, None, None));
    }

    #[test]
    fn bad_names_are_refused_before_sending() {
        let error = CheckRequest::new(json!(1), ["ok", "not.a.token"]).body().unwrap_err().to_string();
        assert!(error.contains("rules[1]"), "{error}");
        let error = CheckRequest::new(json!(1), ["ok"]).audit_id("a b").body().unwrap_err().to_string();
        assert!(error.contains("audit_id"), "{error}");
    }

    #[test]
    fn remove_rule_sends_the_name() {
        let remove = Command::RemoveRule(Token::new("name", "r1").unwrap());
        let bytes = Encoding::MessagePack.encode(&remove).unwrap();
        let command = Command::parse(remove.name(), Encoding::MessagePack, &bytes, "c-1").unwrap();
        assert!(matches!(command, Command::RemoveRule(name) if name.as_str() == "r1"));
    }
}
