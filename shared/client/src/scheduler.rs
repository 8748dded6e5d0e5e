//! The scheduler, typed, from the submitter's side: submit runs, steer them (cancel,
//! pause, resume, approve, reject, answer), read them (get, list, digest) and follow
//! them live (watch, wait).
//!
//! ```no_run
//! # async fn demo(client: &osp_client::Client) -> osp_client::Result<()> {
//! use osp_client::Submission;
//! let scheduler = client.scheduler();
//! let submission = Submission::new("summarize", serde_json::json!({"text": "A long text."}));
//! let outcome = scheduler.submit(&submission).await?;
//! let run = scheduler.wait(&outcome.result.run_id, std::time::Duration::from_secs(60)).await?;
//! println!("{} ended {}", run.run_id, run.status());
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use osp_protocol::registry::document::from_json;
use osp_protocol::scheduler::options::DEFAULT_GRACEFUL_TIMEOUT_MS;
use osp_protocol::scheduler::queries::{GetQuery, ListQuery, RunPage, RunView};
use osp_protocol::scheduler::{
    queries::Digest, Answer as AnswerCommand, Cancel, Command, Decision, Pause, RunEvent, RunOptions, RunOutcome,
    Submit, Workflow, DEFAULT_CANCEL_REASON, RUN_KIND, SERVICE,
};
use osp_protocol::{AggregateRef, Envelope, Timestamp, Token};
use serde::Serialize;
use uuid::Uuid;

use crate::{Answer, Client, Error, Result};

/// The log stream: every run's events are on `osp.v1.evt.run.<run_id>` in it.
pub(crate) const EVENTS_STREAM: &str = "OSP_EVENTS";
/// Longest `Osp-Command-Id` a service accepts.
const MAX_COMMAND_ID: usize = 128;
/// Pause after an error while following a run, so a failing stream is not spun on.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The scheduler, through a [`Client`]. Approvals are made in the name of the client's
/// actor ([`Client::with_actor`]).
#[derive(Clone, Debug)]
pub struct Scheduler {
    client: Client,
}

impl Client {
    /// The scheduler service.
    pub fn scheduler(&self) -> Scheduler {
        Scheduler { client: self.clone() }
    }
}

/// A run to submit. Its id is chosen when the submission is made (a UUID v7 unless
/// [`Submission::run_id`] names one), so submitting the same `Submission` again, after a
/// timeout say, names the same run and is recognised as a resend rather than a new run.
#[derive(Clone, Debug, PartialEq)]
pub struct Submission {
    run_id: String,
    capability: String,
    workflow: Option<Workflow>,
    input: serde_json::Value,
    options: RunOptions,
    metadata: Option<serde_json::Value>,
}

impl Submission {
    /// A run of `capability` with `input`, with default options and a fresh run id.
    pub fn new(capability: impl Into<String>, input: serde_json::Value) -> Submission {
        Submission {
            run_id: Uuid::now_v7().to_string(),
            capability: capability.into(),
            workflow: None,
            input,
            options: RunOptions::default(),
            metadata: None,
        }
    }

    /// A run of `workflow` with `input`, with a fresh run id. Its options are the root
    /// step's (or [`Submission::options`], not both).
    pub fn workflow(workflow: Workflow, input: serde_json::Value) -> Submission {
        Submission { workflow: Some(workflow), ..Submission::new("", input) }
    }

    /// Names the run (a subject token: no `.`, `*`, `>` or whitespace; at most 128 bytes).
    pub fn run_id(mut self, run_id: impl Into<String>) -> Submission {
        self.run_id = run_id.into();
        self
    }

    /// How the run is executed: timeout, heartbeat, retry, approval.
    pub fn options(mut self, options: RunOptions) -> Submission {
        self.options = options;
        self
    }

    /// The submitter's own data, kept with the run.
    pub fn metadata(mut self, metadata: serde_json::Value) -> Submission {
        self.metadata = Some(metadata);
        self
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.run_id
    }

    /// The capability (empty for a workflow run).
    pub fn capability(&self) -> &str {
        &self.capability
    }

    /// The workflow, for a workflow run.
    pub fn workflow_definition(&self) -> Option<&Workflow> {
        self.workflow.as_ref()
    }

    /// The task's input.
    pub fn input(&self) -> &serde_json::Value {
        &self.input
    }

    /// The `Osp-Command-Id` of this submission: derived from the run id and a hash of
    /// what is submitted, so a resend is the same command, and another submission under
    /// the same run id is another command (which the scheduler refuses as a conflict).
    pub fn command_id(&self) -> String {
        let body = serde_json::to_vec(&(&self.capability, &self.workflow, &self.input, &self.options, &self.metadata))
            .unwrap_or_default();
        let content = &blake3::hash(&body).to_hex()[..16];
        command_id(&format!("submit:{}:{content}", self.run_id))
    }
}

impl Submission {
    /// The `submit` command, its names checked as the scheduler checks them (so a bad
    /// one is said before anything is sent).
    fn command(&self) -> Result<Command> {
        let capability = match self.workflow {
            None => Some(Token::new("capability", self.capability.as_str())?),
            Some(_) => None,
        };
        Ok(Command::Submit(Submit {
            run_id: run_id(&self.run_id)?,
            capability,
            workflow: self.workflow.clone().map(Box::new),
            parent: None,
            input: from_json(&self.input),
            options: self.options.clone(),
            metadata: self.metadata.as_ref().map(from_json),
        }))
    }
}

/// The `cancel` command: see [`Scheduler::cancel`].
fn cancel(run: &str, reason: Option<&str>, graceful: Option<Duration>) -> Result<Command> {
    Ok(Command::Cancel(Cancel {
        run_id: run_id(run)?,
        reason: reason.unwrap_or(DEFAULT_CANCEL_REASON).to_owned(),
        graceful: graceful.is_some(),
        graceful_timeout_ms: graceful
            .map_or(DEFAULT_GRACEFUL_TIMEOUT_MS, |wait| u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)),
    }))
}

/// `run` as a run id, checked as the scheduler checks it.
fn run_id(run: &str) -> Result<Token> {
    Ok(Token::new("run_id", run)?)
}

#[derive(Serialize)]
struct Empty {}

/// One event of a run, as [`Scheduler::watch`] yields it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunUpdate {
    /// Its sequence on the log (queries answered after it see at least this far).
    pub seq: u64,
    /// Its position in the run's history, from 1.
    pub version: u64,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// Who caused it: `user:ana`, `agent:summarizer-1`, `service:scheduler`.
    pub actor: String,
    /// What happened.
    pub event: RunEvent,
}

impl RunUpdate {
    /// True for the events that end a run: completed, failed, cancelled.
    pub fn is_final(&self) -> bool {
        is_final(&self.event)
    }
}

/// True for the events that end a run.
pub fn is_final(event: &RunEvent) -> bool {
    matches!(event, RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_))
}

/// A run's events, history first, then live; see [`Scheduler::watch`].
pub struct RunWatch {
    inner: BoxStream<'static, Result<RunUpdate>>,
}

impl std::fmt::Debug for RunWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunWatch").finish_non_exhaustive()
    }
}

impl Stream for RunWatch {
    type Item = Result<RunUpdate>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl Scheduler {
    /// Submits a run and waits for the scheduler to accept it. The reply's `created` is
    /// false when the run already existed: this submission was sent before.
    pub async fn submit(&self, submission: &Submission) -> Result<Answer<RunOutcome>> {
        self.client.send_with_id(&submission.command()?, &submission.command_id()).await
    }

    /// Cancels a run. With `graceful`, the agent holding its task is told and has that
    /// long to stop before the cancel is forced; without, it is cancelled at once.
    pub async fn cancel(
        &self,
        run_id: &str,
        reason: Option<&str>,
        graceful: Option<Duration>,
    ) -> Result<Answer<RunOutcome>> {
        self.client.send(&cancel(run_id, reason, graceful)?).await
    }

    /// Stops dispatching the run's work (an attempt in progress goes on).
    pub async fn pause(&self, run: &str, reason: Option<&str>) -> Result<Answer<RunOutcome>> {
        let pause = Pause { run_id: run_id(run)?, reason: reason.map(str::to_owned) };
        self.client.send(&Command::Pause(pause)).await
    }

    /// Dispatches the run's work again.
    pub async fn resume(&self, run: &str) -> Result<Answer<RunOutcome>> {
        self.client.send(&Command::Resume(run_id(run)?)).await
    }

    /// Approves a run waiting for approval, as this client's actor.
    pub async fn approve(&self, run: &str, reason: Option<&str>) -> Result<Answer<RunOutcome>> {
        self.decide(run, true, reason).await
    }

    /// Rejects a run waiting for approval, as this client's actor: the run is cancelled.
    pub async fn reject(&self, run: &str, reason: Option<&str>) -> Result<Answer<RunOutcome>> {
        self.decide(run, false, reason).await
    }

    async fn decide(&self, run: &str, approved: bool, reason: Option<&str>) -> Result<Answer<RunOutcome>> {
        let approver = self.client.actor().to_owned();
        let decision = Decision { run_id: run_id(run)?, approver, approved, reason: reason.map(str::to_owned) };
        self.client.send(&Command::Decide(decision)).await
    }

    /// Answers the agent's question `request_id` (the open one when `None`).
    pub async fn answer(
        &self,
        run: &str,
        request_id: Option<&str>,
        answer: serde_json::Value,
    ) -> Result<Answer<RunOutcome>> {
        let request_id = request_id.map(str::to_owned);
        let answer = AnswerCommand { run_id: run_id(run)?, request_id, answer: from_json(&answer) };
        self.client.send(&Command::Answer(answer)).await
    }

    /// A run's whole state, or `None` when there is no such run. It reflects at least
    /// everything this client has seen (replies, watched events).
    pub async fn get(&self, run_id: &str) -> Result<Option<RunView>> {
        match self.client.query(SERVICE, "get", &GetQuery { run_id: run_id.to_owned() }).await {
            Ok(answer) => Ok(Some(answer.result)),
            Err(Error::Rejected { error: osp_protocol::Error::NotFound { .. }, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// One page of runs, by id; pass the page's `next` as the next query's `after`.
    pub async fn list(&self, query: &ListQuery) -> Result<RunPage> {
        Ok(self.client.query(SERVICE, "list", query).await?.result)
    }

    /// A fingerprint of the answering instance's whole state.
    pub async fn digest(&self) -> Result<Answer<Digest>> {
        self.client.query(SERVICE, "digest", &Empty {}).await
    }

    /// Follows a run's events: its whole history, then live, ending after the event that
    /// ends the run (completed, failed or cancelled).
    ///
    /// Each event's sequence is remembered by the client, so a query made after seeing
    /// it (`get`) reflects at least that event. A run that does not exist (yet) is not an
    /// error: the stream waits for its first event. An event that cannot be read is an
    /// error item; the stream goes on after it.
    pub async fn watch(&self, run_id: &str) -> Result<RunWatch> {
        self.follow(run_id, DeliverPolicy::All).await
    }

    /// Waits up to `timeout` for a run to end, and returns its final state. A run that
    /// does not exist yet is waited for too; one that does not end in time gives
    /// [`Error::NotEnded`].
    pub async fn wait(&self, run_id: &str, timeout: Duration) -> Result<RunView> {
        let waiting = async {
            // Start from what the scheduler knows, so a long history is not replayed.
            let from = match self.get(run_id).await? {
                Some(view) if view.status().is_final() => return Ok(view),
                Some(view) => DeliverPolicy::ByStartSequence { start_sequence: view.seq + 1 },
                None => DeliverPolicy::All,
            };
            let mut updates = self.follow(run_id, from).await?;
            while let Some(update) = updates.next().await {
                match update {
                    Ok(update) if update.is_final() => break,
                    Ok(_) => {}
                    Err(error) => {
                        tracing::debug!(%error, run_id, "while waiting for the run to end");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            }
            match self.get(run_id).await? {
                Some(view) if view.status().is_final() => Ok(view),
                _ => Err(Error::nats("follow the run's events", std::io::Error::other("the event stream ended"))),
            }
        };
        tokio::time::timeout(timeout, waiting)
            .await
            .map_err(|_| Error::NotEnded { run_id: run_id.to_owned(), waited: timeout })?
    }

    async fn follow(&self, run_id: &str, from: DeliverPolicy) -> Result<RunWatch> {
        let aggregate = AggregateRef { kind: Token::new("kind", RUN_KIND)?, id: Token::new("run_id", run_id)? };
        let config =
            pull::OrderedConfig { filter_subject: aggregate.subject(), deliver_policy: from, ..Default::default() };
        let consumer = async_nats::jetstream::new(self.client.nats().clone())
            .create_consumer_on_stream(config, EVENTS_STREAM)
            .await
            .map_err(|e| Error::nats("create a consumer of the run's events", e))?;
        let messages = consumer.messages().await.map_err(|e| Error::nats("read the run's events", e))?;
        let client = self.client.clone();
        let updates = futures::stream::unfold(Some(messages), move |state| {
            let client = client.clone();
            async move {
                let mut messages = state?;
                let message = match messages.next().await? {
                    Ok(message) => message,
                    Err(e) => return Some((Err(Error::nats("read the run's events", e)), Some(messages))),
                };
                let seq = match message.info() {
                    Ok(info) => info.stream_sequence,
                    Err(source) => {
                        let error = Error::Nats { operation: "read an event's metadata", source };
                        return Some((Err(error), Some(messages)));
                    }
                };
                let update = read_update(seq, &message.payload);
                if update.is_ok() {
                    client.saw(seq);
                }
                let ended = update.as_ref().is_ok_and(RunUpdate::is_final);
                Some((update, (!ended).then_some(messages)))
            }
        });
        Ok(RunWatch { inner: updates.boxed() })
    }
}

/// Decodes one stored event.
fn read_update(seq: u64, bytes: &[u8]) -> Result<RunUpdate> {
    let envelope = Envelope::<RunEvent>::decode(bytes).map_err(|error| Error::Event { seq, error })?;
    Ok(RunUpdate {
        seq,
        version: envelope.version,
        occurred_at: envelope.occurred_at,
        actor: envelope.actor,
        event: envelope.payload,
    })
}

/// `text` as an `Osp-Command-Id`: itself when short enough, else a hash of it (still the
/// same on every resend).
pub(crate) fn command_id(text: &str) -> String {
    if text.len() <= MAX_COMMAND_ID {
        return text.to_owned();
    }
    let prefix = text.split(':').next().filter(|p| p.len() <= 32).unwrap_or("cmd");
    format!("{prefix}:h-{}", &blake3::hash(text.as_bytes()).to_hex()[..32])
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::scheduler::{Completed, Progressed, Retry};
    use osp_protocol::{Encoding, InboxCommand};

    #[test]
    fn a_submission_keeps_its_run_id_so_resends_are_recognised() {
        let submission = Submission::new("summarize", serde_json::json!({"text": "hi"}));
        assert!(Token::new("run_id", submission.id()).is_ok());
        let again = submission.clone();
        assert_eq!(again.command_id(), submission.command_id());
        assert!(submission.command_id().starts_with(&format!("submit:{}:", submission.id())));
        let other = Submission::new("summarize", serde_json::json!({"text": "hi"}));
        assert_ne!(other.id(), submission.id());

        let named = Submission::new("summarize", serde_json::json!(null))
            .run_id("r-7")
            .options(RunOptions {
                retry: Some(Retry {
                    attempts: 3,
                    delay_ms: 0,
                    backoff: Default::default(),
                    max_delay_ms: None,
                    retry_on: None,
                }),
                ..Default::default()
            })
            .metadata(serde_json::json!({"team": "docs"}));
        assert_eq!(named.id(), "r-7");
        assert!(named.command_id().starts_with("submit:r-7:"));
        assert_ne!(
            named.command_id(),
            named.clone().metadata(serde_json::json!({"team": "ops"})).command_id(),
            "other content, another command"
        );
    }

    #[test]
    fn long_command_ids_are_hashed_within_the_limit() {
        let run_id = "r".repeat(128);
        let id = Submission::new("x", serde_json::Value::Null).run_id(run_id.clone()).command_id();
        assert!(id.len() <= MAX_COMMAND_ID, "{id}");
        assert!(id.starts_with("submit:h-"), "{id}");
        let other = Submission::new("x", serde_json::Value::Null).run_id(format!("{}x", "r".repeat(127)));
        assert_ne!(id, other.command_id());
    }

    /// `command` as the scheduler reads it from its inbox.
    fn read(command: &Command) -> Command {
        let bytes = Encoding::MessagePack.encode(command).unwrap();
        let origin = osp_protocol::scheduler::Origin { command_id: "c", actor: "user:ana" };
        Command::parse(command.name(), Encoding::MessagePack, &bytes, origin).unwrap()
    }

    #[test]
    fn the_commands_sent_are_what_the_scheduler_reads() {
        let submission = Submission::new("summarize", serde_json::json!({"text": "hi"})).run_id("r-1");
        let command = read(&submission.command().unwrap());
        assert_eq!(command, submission.command().unwrap());
        let Command::Submit(submit) = command else { panic!("{command:?}") };
        assert_eq!(submit.run_id.as_str(), "r-1");
        assert_eq!(osp_protocol::json::from_msgpack_value(&submit.input), serde_json::json!({"text": "hi"}));
        let workflow: Workflow = serde_json::from_value(serde_json::json!({"routing": {
            "classify": {"task": {"capability": "c"}}, "routes": {"a": {"task": {"capability": "x"}}}}}))
        .unwrap();
        let flow = Submission::workflow(workflow, serde_json::json!(null)).run_id("r-2");
        assert_eq!(read(&flow.command().unwrap()), flow.command().unwrap());
        let bad = Submission::new("a b", serde_json::json!(null)).command().unwrap_err();
        assert_eq!(bad.to_string(), "invalid capability \"a b\": must not contain whitespace", "said before sending");

        let command = read(&cancel("r-1", None, Some(Duration::from_millis(500))).unwrap());
        let Command::Cancel(graceful) = command else { panic!("{command:?}") };
        assert_eq!((graceful.graceful, graceful.graceful_timeout_ms), (true, 500));
        let abrupt = cancel("r-1", Some("now"), None).unwrap();
        assert_eq!(read(&abrupt), abrupt);

        let answer = AnswerCommand {
            run_id: run_id("r-1").unwrap(),
            request_id: Some("q1-1".into()),
            answer: from_json(&serde_json::json!("yes")),
        };
        assert_eq!(read(&Command::Answer(answer.clone())), Command::Answer(answer));
        let bytes = Encoding::MessagePack.encode(&Empty {}).unwrap();
        assert_eq!(bytes, [0x80], "digest sends an empty map");
    }

    #[test]
    fn events_are_read_into_updates_and_bad_ones_are_errors() {
        let envelope = Envelope {
            id: Uuid::now_v7(),
            aggregate: AggregateRef::new("run", "r-1").unwrap(),
            version: 3,
            occurred_at: Timestamp(1_000),
            actor: "agent:a1".into(),
            correlation_id: None,
            causation_id: None,
            prev_hash: None,
            payload: RunEvent::Progressed(Progressed { attempt: 1, current: 2, total: Some(4), message: None }),
        };
        let update = read_update(42, &envelope.encode().unwrap()).unwrap();
        assert_eq!((update.seq, update.version, update.actor.as_str()), (42, 3, "agent:a1"));
        assert!(!update.is_final());
        let done = RunEvent::Completed(Completed { attempt: 1, output: osp_protocol::registry::Document::Nil });
        assert!(is_final(&done));
        let err = read_update(7, b"\x01\x02").unwrap_err();
        assert!(matches!(err, Error::Event { seq: 7, .. }), "{err}");
    }
}
