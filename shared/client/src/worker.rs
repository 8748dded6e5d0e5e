//! The agent's side of the scheduler: take tasks of its capabilities from the work queue,
//! run them, and report.
//!
//! ```no_run
//! # async fn demo(client: &osp_client::Client) -> osp_client::Result<()> {
//! use osp_client::{TaskFailure, Worker};
//! let worker = Worker::builder(client, "summarizer-1")
//!     .capability("summarize")
//!     .max_concurrency(4)
//!     .start(|task| async move {
//!         let text = task.input()["text"].as_str().ok_or_else(|| TaskFailure::invalid_input("text is missing"))?;
//!         task.progress(1, Some(1), Some("summarised")).await;
//!         Ok(serde_json::json!({ "summary": text.chars().take(40).collect::<String>() }))
//!     })
//!     .await?;
//! // ... until it is time to stop:
//! worker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! How a task goes:
//!
//! 1. A slot is taken (at most `max_concurrency` tasks are in hand, across all
//!    capabilities) before a message is pulled from the capability's shared durable
//!    consumer, so an agent never holds tasks it has not started.
//! 2. The agent listens on the task's signal subject, then reports `started`. If the
//!    scheduler says go, the message is acknowledged and the handler runs; if not (the run
//!    is paused, cancelled, or another agent has the attempt) the message is acknowledged
//!    and dropped: the scheduler dispatches again when there is something to do. If the
//!    scheduler cannot be reached, the message is given back and comes again in a second.
//! 3. While the handler runs, the agent heartbeats the task.
//! 4. The handler's result is reported: `completed` with the output, or `failed`.
//!
//! A graceful cancel is announced to the handler ([`Task::cancelled`]), which should stop
//! and return [`TaskFailure::cancelled`]. A forced cancel drops the handler's future at
//! once and reports nothing (the run is already cancelled).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use osp_protocol::registry::document::{encoded_len, from_json};
use osp_protocol::scheduler::{
    work_consumer, ReportOutcome, Signal, StartOutcome, TaskMessage, MAX_DATA_BYTES, MAX_LOG_BYTES,
    MAX_SMALL_DATA_BYTES, MAX_TEXT_BYTES, SERVICE, TASK_HEARTBEAT_INTERVAL,
};
use osp_protocol::{subject, Timestamp, Token};
use serde::Serialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::scheduler::command_id;
use crate::{Client, Error, Result, DEFAULT_TIMEOUT};

/// The work-queue stream: tasks of capability `c` are on `osp.v1.work.<c>` in it.
const WORK_STREAM: &str = "OSP_WORK";
/// How long a task message may stay unanswered before the server hands it to another
/// agent. Every agent of a capability uses the same consumer settings.
const ACK_WAIT: Duration = Duration::from_secs(30);
/// Task messages in hand (unanswered) across all agents of a capability.
const MAX_ACK_PENDING: i64 = 1000;
/// How long one pull waits for tasks by default.
const DEFAULT_PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Most tasks asked for in one pull.
const MAX_BATCH: usize = 64;
/// When a task cannot be started now (the scheduler is unreachable), it comes back after this.
const NAK_DELAY: Duration = Duration::from_secs(1);
/// How often a question's answer is looked for in the run's state, should its signal be
/// missed (signals are core NATS: not stored).
const ANSWER_POLL: Duration = Duration::from_secs(1);
/// How long [`Worker::shutdown`] lets tasks in hand finish by default.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// The fastest task heartbeat (a zero period would stop the timer, not speed it up).
const MIN_TASK_HEARTBEAT: Duration = Duration::from_millis(50);
/// Pause after a failed pull before asking again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// Sendings of a final report (`completed`, `failed`) while the scheduler is unreachable.
const FINAL_REPORT_TRIES: u32 = 5;
/// Longest error kind.
const MAX_KIND_BYTES: usize = 64;

type Handler =
    Arc<dyn Fn(Task) -> BoxFuture<'static, std::result::Result<serde_json::Value, TaskFailure>> + Send + Sync>;

/// How a task went wrong, as the handler tells it: reported as `failed`.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskFailure {
    /// A short machine-readable kind (what a run's `retryOn` matches); `error` by default.
    pub kind: String,
    /// For people.
    pub message: String,
    /// Anything else (at most 64 KiB encoded).
    pub details: Option<serde_json::Value>,
    /// Whether another attempt may succeed (the run's retry policy decides whether there
    /// is one). True by default.
    pub retryable: bool,
}

impl TaskFailure {
    /// A retryable failure of kind `error`.
    pub fn new(message: impl Into<String>) -> TaskFailure {
        TaskFailure { kind: "error".into(), message: message.into(), details: None, retryable: true }
    }

    /// The task stopped because it was cancelled: what a handler returns after
    /// [`Task::cancelled`] fired.
    pub fn cancelled() -> TaskFailure {
        TaskFailure { kind: "cancelled".into(), message: "cancelled".into(), details: None, retryable: false }
    }

    /// The input cannot be worked on: a permanent failure of kind `invalid_input`.
    pub fn invalid_input(message: impl Into<String>) -> TaskFailure {
        TaskFailure::new(message).kind("invalid_input").permanent()
    }

    /// Sets the kind (1 to 64 bytes; longer is cut).
    pub fn kind(mut self, kind: impl Into<String>) -> TaskFailure {
        self.kind = kind.into();
        self
    }

    /// Adds details.
    pub fn details(mut self, details: serde_json::Value) -> TaskFailure {
        self.details = Some(details);
        self
    }

    /// No other attempt will do better.
    pub fn permanent(mut self) -> TaskFailure {
        self.retryable = false;
        self
    }

    /// Within the protocol's limits: a kind of 1 to 64 bytes, a message of at most 4 KiB,
    /// details of at most 64 KiB (dropped when larger), so the report is never refused.
    fn bounded(mut self) -> TaskFailure {
        if self.kind.is_empty() {
            self.kind = "error".into();
        }
        truncate(&mut self.kind, MAX_KIND_BYTES);
        truncate(&mut self.message, MAX_TEXT_BYTES);
        if self.details.as_ref().is_some_and(|details| encoded_len(&from_json(details)) > MAX_SMALL_DATA_BYTES) {
            tracing::warn!("the failure's details are over 64 KiB; reporting it without them");
            self.details = None;
        }
        self
    }
}

impl std::fmt::Display for TaskFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

impl std::error::Error for TaskFailure {}

/// Lets a handler use `?` on calls of this crate: an attempt that is over becomes
/// [`TaskFailure::cancelled`], anything else a retryable failure of kind `client`.
impl From<Error> for TaskFailure {
    fn from(error: Error) -> TaskFailure {
        match error {
            Error::TaskEnded { .. } => TaskFailure::cancelled(),
            other => TaskFailure::new(other.to_string()).kind("client"),
        }
    }
}

/// The level of a task's log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Detail.
    Debug,
    /// News.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something is wrong.
    Error,
}

impl LogLevel {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Counts of what a worker did, for tests and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Task messages taken from the work queue.
    pub received: u64,
    /// Tasks the scheduler said to go on with: their handler ran.
    pub started: u64,
    /// Tasks given back or dropped without running (a paused or finished run, an
    /// attempt already taken, an unreadable message).
    pub declined: u64,
    /// Handlers that returned an output.
    pub completed: u64,
    /// Handlers that returned a failure or panicked.
    pub failed: u64,
    /// Handlers stopped by a forced cancel or by shutdown.
    pub aborted: u64,
    /// Tasks in hand now.
    pub in_hand: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    started: AtomicU64,
    declined: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    aborted: AtomicU64,
    in_hand: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> WorkerStats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WorkerStats {
            received: read(&self.received),
            started: read(&self.started),
            declined: read(&self.declined),
            completed: read(&self.completed),
            failed: read(&self.failed),
            aborted: read(&self.aborted),
            in_hand: read(&self.in_hand),
        }
    }
}

/// What every puller and task of a worker shares.
struct Shared {
    client: Client,
    agent: String,
    handler: Handler,
    slots: Arc<Semaphore>,
    max_concurrency: u32,
    pullers: usize,
    pull_expires: Duration,
    /// Stop pulling.
    stop: CancellationToken,
    /// Stop the handlers still running (shutdown's wait is over).
    interrupt: CancellationToken,
    counters: Counters,
}

/// How a worker runs; see [`Worker::builder`].
#[derive(Clone, Debug)]
pub struct WorkerBuilder {
    client: Client,
    agent: String,
    capabilities: Vec<String>,
    max_concurrency: u32,
    shutdown_timeout: Duration,
    pull_expires: Duration,
}

/// Takes tasks of its capabilities and runs them until shut down. Dropping it stops the
/// pulling; tasks in hand run to their end.
pub struct Worker {
    shared: Arc<Shared>,
    capabilities: Vec<Token>,
    pullers: Vec<JoinHandle<()>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("agent", &self.shared.agent)
            .field("capabilities", &self.capabilities)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker for the agent named `agent` (its registry name: reports carry it).
    pub fn builder(client: &Client, agent: impl Into<String>) -> WorkerBuilder {
        WorkerBuilder {
            client: client.clone(),
            agent: agent.into(),
            capabilities: Vec::new(),
            max_concurrency: 1,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            pull_expires: DEFAULT_PULL_EXPIRES,
        }
    }

    /// The agent's name.
    pub fn agent(&self) -> &str {
        &self.shared.agent
    }

    /// The capabilities whose tasks it takes.
    pub fn capabilities(&self) -> &[Token] {
        &self.capabilities
    }

    /// What it did so far.
    pub fn stats(&self) -> WorkerStats {
        self.shared.counters.snapshot()
    }

    /// Stops taking tasks, lets the tasks in hand finish (up to the shutdown timeout),
    /// and returns what it did. Handlers still running then are stopped and reported
    /// `failed` with kind `interrupted` (retryable), so the run goes on elsewhere.
    pub async fn shutdown(mut self) -> WorkerStats {
        self.shared.stop.cancel();
        for puller in self.pullers.drain(..) {
            if let Err(error) = puller.await {
                tracing::warn!(%error, "a puller ended badly");
            }
        }
        let slots = self.shared.slots.clone();
        let all = self.shared.max_concurrency;
        if tokio::time::timeout(self.shutdown_timeout, slots.acquire_many(all)).await.is_err() {
            tracing::warn!(waited = ?self.shutdown_timeout, "tasks still running at shutdown; interrupting them");
            self.shared.interrupt.cancel();
            let _ = tokio::time::timeout(DEFAULT_TIMEOUT * 2, slots.acquire_many(all)).await;
        }
        self.stats()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

impl WorkerBuilder {
    /// Takes tasks of `capability` too.
    pub fn capability(mut self, capability: impl Into<String>) -> Self {
        self.capabilities.push(capability.into());
        self
    }

    /// Takes tasks of these capabilities too.
    pub fn capabilities<S: Into<String>>(mut self, capabilities: impl IntoIterator<Item = S>) -> Self {
        self.capabilities.extend(capabilities.into_iter().map(Into::into));
        self
    }

    /// Tasks in hand at once, across all capabilities (default 1; 0 is taken as 1).
    pub fn max_concurrency(mut self, max: u32) -> Self {
        self.max_concurrency = max.max(1);
        self
    }

    /// How long [`Worker::shutdown`] lets tasks in hand finish (default 30 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long one pull waits for tasks (default 5 s, kept within 1 to 30 s). With more
    /// capabilities than slots, the capabilities take turns at this pace.
    pub fn pull_expires(mut self, expires: Duration) -> Self {
        self.pull_expires = expires.clamp(Duration::from_secs(1), Duration::from_secs(30));
        self
    }

    /// Makes sure each capability's consumer exists and starts taking tasks, running
    /// `handler` on each. The handler's output is reported `completed`, its failure
    /// `failed`.
    pub async fn start<F, Fut>(self, handler: F) -> Result<Worker>
    where
        F: Fn(Task) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<serde_json::Value, TaskFailure>> + Send + 'static,
    {
        let agent = Token::new("agent", self.agent.as_str())?;
        let mut capabilities = Vec::new();
        for capability in &self.capabilities {
            let capability = Token::new("capability", capability.as_str())?;
            if !capabilities.contains(&capability) {
                capabilities.push(capability);
            }
        }
        if capabilities.is_empty() {
            return Err(Error::Invalid(osp_protocol::Error::Invalid {
                field: "capabilities".into(),
                reason: "a worker needs at least one capability".into(),
            }));
        }
        let jetstream = jetstream::new(self.client.nats().clone());
        let mut consumers = Vec::new();
        for capability in &capabilities {
            consumers.push(ensure_consumer(&jetstream, capability).await?);
        }
        let handler: Handler = Arc::new(move |task| handler(task).boxed());
        let shared = Arc::new(Shared {
            client: self.client.with_actor(format!("agent:{agent}")),
            agent: agent.to_string(),
            handler,
            slots: Arc::new(Semaphore::new(self.max_concurrency as usize)),
            max_concurrency: self.max_concurrency,
            pullers: capabilities.len(),
            pull_expires: self.pull_expires,
            stop: CancellationToken::new(),
            interrupt: CancellationToken::new(),
            counters: Counters::default(),
        });
        let pullers = capabilities
            .iter()
            .zip(consumers)
            .map(|(capability, consumer)| {
                let span = tracing::info_span!("worker", agent = %agent, capability = %capability);
                tokio::spawn(pull(shared.clone(), jetstream.clone(), capability.clone(), consumer).instrument(span))
            })
            .collect();
        Ok(Worker { shared, capabilities, pullers, shutdown_timeout: self.shutdown_timeout })
    }
}

/// The durable consumer every agent of `capability` shares (create-or-update, with the
/// same settings everywhere).
pub fn work_consumer_config(capability: &Token) -> pull::Config {
    pull::Config {
        durable_name: Some(work_consumer(capability)),
        filter_subject: subject::work(capability),
        ack_policy: AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

async fn ensure_consumer(jetstream: &jetstream::Context, capability: &Token) -> Result<PullConsumer> {
    jetstream
        .create_consumer_on_stream(work_consumer_config(capability), WORK_STREAM)
        .await
        .map_err(|e| Error::nats("create the work consumer", e))
}

/// Pulls tasks of one capability for as long as the worker runs: a slot first, then a
/// pull for as many tasks as slots it holds.
async fn pull(shared: Arc<Shared>, jetstream: jetstream::Context, capability: Token, mut consumer: PullConsumer) {
    loop {
        let first = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            permit = shared.slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let mut permits = vec![first];
        // Free slots are shared among the capabilities, so one does not starve the others.
        let want = 1 + (shared.slots.available_permits() / shared.pullers).min(MAX_BATCH - 1);
        while permits.len() < want {
            match shared.slots.clone().try_acquire_owned() {
                Ok(permit) => permits.push(permit),
                Err(_) => break,
            }
        }
        // No idle heartbeat: async-nats' batch stream stalls on one.
        let batch = consumer.batch().max_messages(permits.len()).expires(shared.pull_expires).messages().await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "cannot ask for tasks; trying again");
                drop(permits);
                if !recover(&shared, &jetstream, &capability, &mut consumer).await {
                    return;
                }
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                biased;
                () = shared.stop.cancelled() => {
                    give_back_buffered(&mut batch).await;
                    return;
                }
                next = batch.next() => next,
            };
            match next {
                None => break,
                Some(Ok(message)) => match permits.pop() {
                    Some(permit) => {
                        tokio::spawn(handle(shared.clone(), capability.clone(), message, permit).in_current_span());
                    }
                    None => give_back(&message, None).await,
                },
                Some(Err(error)) => {
                    tracing::warn!(%error, "pulling tasks failed; trying again");
                    drop(permits);
                    if !recover(&shared, &jetstream, &capability, &mut consumer).await {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

/// Waits a little, then makes sure the consumer is there again. False when the worker
/// is stopping.
async fn recover(
    shared: &Shared,
    jetstream: &jetstream::Context,
    capability: &Token,
    consumer: &mut PullConsumer,
) -> bool {
    tokio::select! {
        () = shared.stop.cancelled() => return false,
        () = tokio::time::sleep(RETRY_PAUSE) => {}
    }
    match ensure_consumer(jetstream, capability).await {
        Ok(fresh) => *consumer = fresh,
        Err(error) => tracing::warn!(%error, "cannot create the work consumer"),
    }
    true
}

/// Gives back, at once, the tasks a pull delivered that were not taken yet.
async fn give_back_buffered(batch: &mut pull::Batch) {
    while let Some(Some(Ok(message))) = batch.next().now_or_never() {
        give_back(&message, None).await;
    }
}

async fn give_back(message: &jetstream::Message, delay: Option<Duration>) {
    if let Err(error) = message.ack_with(AckKind::Nak(delay)).await {
        tracing::debug!(%error, "cannot give the task back; it comes back after the ack wait");
    }
}

async fn ack(message: &jetstream::Message) {
    if let Err(error) = message.ack().await {
        tracing::debug!(%error, "cannot acknowledge the task message");
    }
}

/// Keeps the count of tasks in hand right, whatever happens to the task.
struct InHand(Arc<Shared>);

impl InHand {
    fn new(shared: Arc<Shared>) -> InHand {
        Counters::bump(&shared.counters.received);
        Counters::bump(&shared.counters.in_hand);
        InHand(shared)
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        self.0.counters.in_hand.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One task message, from decoding to the final report. The slot is held throughout.
async fn handle(shared: Arc<Shared>, capability: Token, message: jetstream::Message, _slot: OwnedSemaphorePermit) {
    let _in_hand = InHand::new(shared.clone());
    let task = match read_task(&message.payload) {
        Ok(task) => task,
        Err(reason) => {
            tracing::warn!(subject = %message.subject, %reason, "unreadable task message; dropping it");
            if let Err(error) = message.ack_with(AckKind::Term).await {
                tracing::debug!(%error, "cannot terminate the task message");
            }
            Counters::bump(&shared.counters.declined);
            return;
        }
    };
    if task.capability != capability {
        tracing::warn!(task_capability = %task.capability, "a task of another capability on this work queue");
    }
    let span = tracing::info_span!("task", run_id = %task.run_id, attempt = task.attempt, dispatch = task.dispatch);
    run(shared, task, message).instrument(span).await;
}

/// Decodes a task message and checks what will be used as subjects.
fn read_task(payload: &[u8]) -> std::result::Result<TaskMessage, String> {
    let task: TaskMessage = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    if task.attempt == 0 {
        return Err("attempt 0 (attempts count from 1)".into());
    }
    for (field, value) in [("signal_subject", &task.signal_subject), ("heartbeat_subject", &task.heartbeat_subject)] {
        if value.split('.').any(|token| Token::new(field, token).is_err()) {
            return Err(format!("{field} {value:?} is not a subject to use"));
        }
    }
    Ok(task)
}

/// What became of a handler.
enum Outcome {
    Output(serde_json::Value),
    Failure(TaskFailure),
    /// A forced cancel: nothing more is reported.
    Forced,
    /// Shutdown stopped it.
    Interrupted,
}

async fn run(shared: Arc<Shared>, message: TaskMessage, delivery: jetstream::Message) {
    let nats = shared.client.nats().clone();
    // Listen first, so no signal sent after `started` is missed.
    let signals = match nats.subscribe(message.signal_subject.clone()).await {
        Ok(signals) => signals,
        Err(error) => {
            tracing::warn!(%error, "cannot listen for the task's signals; giving it back");
            give_back(&delivery, Some(NAK_DELAY)).await;
            return;
        }
    };
    let report = Report::new(&message, &shared.agent);
    let id =
        command_id(&format!("started:{}:{}:{}:{}", message.run_id, message.attempt, message.dispatch, shared.agent));
    match shared.client.command_with_id::<_, StartOutcome>(SERVICE, "started", &report, &id).await {
        Ok(answer) if answer.result.go => {
            // The accepted `started` is what makes the attempt ours; the acknowledgement
            // only removes the message from the queue, so it is not waited for (should
            // it be lost, a redelivery's `started` by another agent is refused).
            if let Err(error) = delivery.ack().await {
                tracing::warn!(%error, "cannot acknowledge the task message; working on it anyway");
            }
        }
        Ok(answer) => {
            tracing::info!(reason = answer.result.reason.as_deref().unwrap_or(""), "the scheduler gave the task back");
            ack(&delivery).await;
            Counters::bump(&shared.counters.declined);
            return;
        }
        Err(Error::Rejected { error, .. }) if !error.is_transient() && drops_the_task(&error) => {
            tracing::info!(%error, "the task is not for this agent (any more); dropping it");
            ack(&delivery).await;
            Counters::bump(&shared.counters.declined);
            return;
        }
        Err(error) => {
            if error.is_transient() {
                tracing::info!(%error, "cannot start the task now; it comes back in a second");
            } else {
                tracing::warn!(%error, "the scheduler refused to start the task; giving it back");
            }
            give_back(&delivery, Some(NAK_DELAY)).await;
            return;
        }
    }
    Counters::bump(&shared.counters.started);

    let inner = Arc::new(TaskInner::new(shared.client.clone(), shared.agent.clone(), message));
    let listener = tokio::spawn(listen(signals, inner.clone()).in_current_span());
    let heartbeats = tokio::spawn(
        heartbeat(
            nats,
            inner.message.heartbeat_subject.clone(),
            heartbeat_payload(inner.message.attempt, &shared.agent),
            heartbeat_period(inner.message.heartbeat_ms),
            inner.done.clone(),
        )
        .in_current_span(),
    );
    let mut work = tokio::spawn((shared.handler)(Task { inner: inner.clone() }).in_current_span());
    let outcome = tokio::select! {
        biased;
        joined = &mut work => match joined {
            Ok(Ok(output)) => Outcome::Output(output),
            Ok(Err(failure)) => Outcome::Failure(failure),
            Err(error) => Outcome::Failure(TaskFailure::new(format!("the handler panicked: {error}")).kind("panic")),
        },
        () = inner.state.forced.cancelled() => Outcome::Forced,
        () = shared.interrupt.cancelled() => Outcome::Interrupted,
    };
    work.abort();
    match outcome {
        Outcome::Output(output) => {
            Counters::bump(&shared.counters.completed);
            complete(&inner, output).await;
        }
        Outcome::Failure(failure) => {
            Counters::bump(&shared.counters.failed);
            tracing::info!(%failure, "the task failed");
            fail(&inner, failure, FINAL_REPORT_TRIES).await;
        }
        Outcome::Forced => {
            Counters::bump(&shared.counters.aborted);
            tracing::info!("the run was cancelled; the task is stopped");
        }
        Outcome::Interrupted => {
            Counters::bump(&shared.counters.aborted);
            let failure = TaskFailure::new("the agent shut down before the task ended").kind("interrupted");
            fail(&inner, failure, 1).await;
        }
    }
    inner.done.cancel();
    let _ = listener.await;
    let _ = heartbeats.await;
}

/// True for the refusals of `started` that mean the task is not to be worked on: the
/// run ended, moved on to another attempt, or another agent started this one. Other
/// refusals (a malformed report, say) give the task back, so another agent may take it.
fn drops_the_task(error: &osp_protocol::Error) -> bool {
    matches!(error.code(), "illegal_transition" | "not_found" | "conflict")
}

async fn complete(inner: &TaskInner, output: serde_json::Value) {
    let size = encoded_len(&from_json(&output));
    if size > MAX_DATA_BYTES {
        let failure = TaskFailure::new(format!("the output is {size} bytes, over the limit of {MAX_DATA_BYTES}"))
            .kind("output_too_large")
            .permanent();
        return fail(inner, failure, FINAL_REPORT_TRIES).await;
    }
    let report = Report { output: Some(&output), ..inner.report() };
    match inner.send_final("completed", &report, FINAL_REPORT_TRIES).await {
        Err(Error::Rejected { error, .. }) if matches!(error.code(), "invalid" | "too_large" | "malformed") => {
            let failure =
                TaskFailure::new(format!("the output was refused: {error}")).kind("invalid_output").permanent();
            fail(inner, failure, FINAL_REPORT_TRIES).await;
        }
        _ => {}
    }
}

async fn fail(inner: &TaskInner, failure: TaskFailure, tries: u32) {
    let failure = failure.bounded();
    let report = Report {
        error: Some(ErrorBody { kind: &failure.kind, message: &failure.message, details: failure.details.as_ref() }),
        retryable: Some(failure.retryable),
        ..inner.report()
    };
    let _ = inner.send_final("failed", &report, tries).await;
}

/// The period of a task's heartbeat: the client's interval, or a third of the heartbeat
/// the scheduler asks for when that is shorter (so two beats may be lost in a row).
pub fn heartbeat_period(heartbeat_ms: u64) -> Duration {
    if heartbeat_ms == 0 {
        return TASK_HEARTBEAT_INTERVAL;
    }
    TASK_HEARTBEAT_INTERVAL.min(Duration::from_millis(heartbeat_ms / 3)).max(MIN_TASK_HEARTBEAT)
}

fn heartbeat_payload(attempt: u32, agent: &str) -> bytes::Bytes {
    serde_json::to_vec(&serde_json::json!({ "attempt": attempt, "agent": agent })).unwrap_or_default().into()
}

/// Beats until the task is done. A beat is core NATS: one lost while disconnected is
/// simply not heard, and the next counts.
async fn heartbeat(
    nats: async_nats::Client,
    subject: String,
    payload: bytes::Bytes,
    every: Duration,
    done: CancellationToken,
) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = done.cancelled() => return,
            _ = ticks.tick() => {
                if let Err(error) = nats.publish(subject.clone(), payload.clone()).await {
                    tracing::debug!(%error, "task heartbeat not sent");
                }
            }
        }
    }
}

/// Hands the task's signals to its state until the task is done.
async fn listen(mut signals: async_nats::Subscriber, inner: Arc<TaskInner>) {
    loop {
        let message = tokio::select! {
            () = inner.done.cancelled() => return,
            message = signals.next() => match message {
                Some(message) => message,
                None => return,
            },
        };
        match serde_json::from_slice::<Signal>(&message.payload) {
            Ok(signal) => inner.state.on_signal(signal),
            Err(error) => tracing::debug!(%error, "unreadable signal; ignored"),
        }
    }
}

/// What signals and report replies tell about a task: cancel, pause, answers.
struct TaskState {
    attempt: u32,
    /// Fires on a cancel (graceful or not), or when the attempt is found to be over.
    cancel: CancellationToken,
    /// Fires on a forced cancel: the handler is stopped.
    forced: CancellationToken,
    cancel_reason: Mutex<Option<String>>,
    cancel_deadline: Mutex<Option<Timestamp>>,
    paused: AtomicBool,
    answers: Mutex<HashMap<String, serde_json::Value>>,
    /// Bumped on every answer, so a waiting `ask` looks again.
    answered: watch::Sender<u64>,
}

impl TaskState {
    fn new(attempt: u32) -> TaskState {
        TaskState {
            attempt,
            cancel: CancellationToken::new(),
            forced: CancellationToken::new(),
            cancel_reason: Mutex::new(None),
            cancel_deadline: Mutex::new(None),
            paused: AtomicBool::new(false),
            answers: Mutex::new(HashMap::new()),
            answered: watch::Sender::new(0),
        }
    }

    fn on_signal(&self, signal: Signal) {
        match signal {
            Signal::Cancel { attempt, graceful, deadline, reason } if attempt == self.attempt => {
                tracing::info!(graceful, %reason, "cancel signal");
                *lock(&self.cancel_deadline) = deadline;
                self.end(format!("cancelled: {reason}"));
                if !graceful {
                    self.forced.cancel();
                }
            }
            Signal::Answer { attempt, request_id, answer } if attempt == self.attempt => {
                lock(&self.answers).insert(request_id, answer);
                self.answered.send_modify(|answers| *answers += 1);
            }
            Signal::Pause { attempt } if attempt == self.attempt => self.paused.store(true, Ordering::Relaxed),
            Signal::Resume { attempt } if attempt == self.attempt => self.paused.store(false, Ordering::Relaxed),
            other => tracing::debug!(?other, "a signal for another attempt; ignored"),
        }
    }

    /// The attempt is over for this agent: say why (the first reason stays).
    fn end(&self, reason: String) {
        lock(&self.cancel_reason).get_or_insert(reason);
        self.cancel.cancel();
    }

    fn reason(&self) -> String {
        lock(&self.cancel_reason).clone().unwrap_or_else(|| "cancelled".into())
    }

    fn take_answer(&self, request_id: &str) -> Option<serde_json::Value> {
        lock(&self.answers).remove(request_id)
    }
}

/// A poisoned lock only means another thread panicked while holding it; the data (a
/// reason, an answer) is still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct TaskInner {
    client: Client,
    agent: String,
    message: TaskMessage,
    input: serde_json::Value,
    state: TaskState,
    questions: AtomicU32,
    /// The task is over: stop listening and heartbeating.
    done: CancellationToken,
}

impl TaskInner {
    fn new(client: Client, agent: String, message: TaskMessage) -> TaskInner {
        TaskInner {
            client,
            agent,
            input: message.input.clone(),
            state: TaskState::new(message.attempt),
            questions: AtomicU32::new(0),
            done: CancellationToken::new(),
            message,
        }
    }

    fn report(&self) -> Report<'_> {
        Report::new(&self.message, &self.agent)
    }

    fn ended(&self) -> Error {
        Error::TaskEnded {
            run_id: self.message.run_id.to_string(),
            attempt: self.message.attempt,
            reason: self.state.reason(),
        }
    }

    /// Sends a report that is not final, and takes in what its reply says.
    async fn send(&self, command: &str, report: &Report<'_>) -> Result<ReportOutcome> {
        let outcome = self.client.command::<_, ReportOutcome>(SERVICE, command, report).await;
        self.take_in(outcome, true)
    }

    /// Sends `completed` or `failed` under a fixed id, again while the scheduler cannot
    /// be reached (the same id makes a resend harmless).
    async fn send_final(&self, command: &str, report: &Report<'_>, tries: u32) -> Result<ReportOutcome> {
        let id = command_id(&format!("{command}:{}:{}", self.message.run_id, self.message.attempt));
        let mut pause = Duration::from_millis(500);
        for tried in 1.. {
            match self.client.command_with_id::<_, ReportOutcome>(SERVICE, command, report, &id).await {
                Err(error) if error.is_transient() && tried < tries => {
                    tracing::info!(%error, "cannot report {command} now; sending it again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                Err(Error::Rejected { error, seq }) if !error.is_transient() => {
                    tracing::info!(%error, "the scheduler refused the {command} report");
                    return Err(Error::Rejected { error, seq });
                }
                Err(error) => {
                    tracing::warn!(%error, "the {command} report was not delivered");
                    return Err(error);
                }
                Ok(answer) => return Ok(answer.result),
            }
        }
        unreachable!("the loop returns")
    }

    /// Takes in a report's reply: "cancelling" ends the task, and so does a refusal of a
    /// progress or log report (`refusal_ends`): those are refused only once the attempt
    /// is over. (A question is also refused while another is open, which ends nothing.)
    fn take_in(&self, outcome: Result<crate::Answer<ReportOutcome>>, refusal_ends: bool) -> Result<ReportOutcome> {
        match outcome {
            Ok(answer) => {
                if answer.result.cancelling {
                    self.state.end("cancelled".into());
                }
                Ok(answer.result)
            }
            Err(Error::Rejected { error, seq }) => {
                if refusal_ends && matches!(error.code(), "illegal_transition" | "not_found" | "forbidden") {
                    self.state.end(format!("the scheduler no longer takes reports for it: {error}"));
                }
                Err(Error::Rejected { error, seq })
            }
            Err(other) => Err(other),
        }
    }
}

/// A task in hand, as its handler sees it. Cheap to clone.
#[derive(Clone)]
pub struct Task {
    inner: Arc<TaskInner>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("run_id", &self.run_id())
            .field("attempt", &self.attempt())
            .field("capability", &self.capability())
            .finish_non_exhaustive()
    }
}

impl Task {
    /// The run.
    pub fn run_id(&self) -> &str {
        self.inner.message.run_id.as_str()
    }

    /// The attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.inner.message.attempt
    }

    /// The capability it was taken as.
    pub fn capability(&self) -> &str {
        self.inner.message.capability.as_str()
    }

    /// The task's input.
    pub fn input(&self) -> &serde_json::Value {
        &self.inner.input
    }

    /// When the attempt times out, if the run has a timeout.
    pub fn deadline(&self) -> Option<Timestamp> {
        self.inner.message.deadline
    }

    /// The task message as it came from the work queue.
    pub fn message(&self) -> &TaskMessage {
        &self.inner.message
    }

    /// Reports progress: `current` of `total` done. Best effort: a report that cannot be
    /// sent is logged, never fails the task; one the scheduler answers with "cancelling"
    /// fires [`Task::cancelled`].
    pub async fn progress(&self, current: u64, total: Option<u64>, message: Option<&str>) {
        let mut text = message.map(str::to_owned);
        if let Some(text) = &mut text {
            truncate(text, MAX_TEXT_BYTES);
        }
        let report = Report { current: Some(current), total, message: text.as_deref(), ..self.inner.report() };
        if let Err(error) = self.inner.send("progress", &report).await {
            tracing::debug!(%error, "progress not reported");
        }
    }

    /// Adds a line to the run's log (cut at 8 KiB). Best effort, like [`Task::progress`].
    pub async fn log(&self, level: LogLevel, message: impl Into<String>) {
        let mut message = message.into();
        truncate(&mut message, MAX_LOG_BYTES);
        let report = Report { level: Some(level.as_str()), message: Some(&message), ..self.inner.report() };
        if let Err(error) = self.inner.send("log", &report).await {
            tracing::debug!(%error, "log line not reported");
        }
    }

    /// Asks a person `question` and waits for the answer (the run is `awaiting`
    /// meanwhile). Fails with [`Error::TaskEnded`] when the task is cancelled or the
    /// run moves on while waiting.
    pub async fn ask(&self, question: serde_json::Value) -> Result<serde_json::Value> {
        let inner = &self.inner;
        let request_id = request_id(inner.message.attempt, inner.questions.fetch_add(1, Ordering::Relaxed) + 1);
        let mut answered = inner.state.answered.subscribe();
        let report = Report { request_id: Some(&request_id), question: Some(&question), ..inner.report() };
        let id = command_id(&format!("ask:{}:{request_id}", inner.message.run_id));
        let sent = inner.client.command_with_id::<_, ReportOutcome>(SERVICE, "ask", &report, &id).await;
        if let Err(error) = inner.take_in(sent, false) {
            return Err(if inner.state.cancel.is_cancelled() { inner.ended() } else { error });
        }
        let mut poll = tokio::time::interval_at(tokio::time::Instant::now() + ANSWER_POLL, ANSWER_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            answered.borrow_and_update();
            if let Some(answer) = inner.state.take_answer(&request_id) {
                return Ok(answer);
            }
            if inner.state.cancel.is_cancelled() {
                return Err(inner.ended());
            }
            tokio::select! {
                _ = answered.changed() => {}
                () = inner.state.cancel.cancelled() => {}
                _ = poll.tick() => {
                    if let Some(answer) = self.look_for_answer(&request_id).await {
                        return Ok(answer);
                    }
                }
            }
        }
    }

    /// The answer to `request_id` in the run's state, should its signal have been missed;
    /// ends the task when the run has moved on.
    async fn look_for_answer(&self, request_id: &str) -> Option<serde_json::Value> {
        let view = match self.inner.client.scheduler().get(self.run_id()).await {
            Ok(Some(view)) => view,
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(%error, "cannot read the run while waiting for an answer");
                return None;
            }
        };
        let input = view.inputs.iter().find(|input| input.request_id == request_id);
        if let Some(answer) = input.and_then(|input| input.answer.as_ref()) {
            return Some(osp_protocol::json::from_msgpack_value(answer));
        }
        let ours = view.attempts.iter().find(|attempt| attempt.attempt == self.attempt());
        if view.status().is_final() || ours.is_none_or(|attempt| attempt.ended_at.is_some()) {
            self.inner.state.end(format!("the run is {} and this attempt is over", view.status()));
        }
        None
    }

    /// Resolves when the task is asked to stop: a cancel, or the attempt found to be
    /// over. Clean up and return [`TaskFailure::cancelled`].
    pub async fn cancelled(&self) {
        self.inner.state.cancel.cancelled().await;
    }

    /// True once [`Task::cancelled`] has resolved.
    pub fn is_cancelled(&self) -> bool {
        self.inner.state.cancel.is_cancelled()
    }

    /// Until when a graceful cancel lets the task clean up.
    pub fn cancel_deadline(&self) -> Option<Timestamp> {
        *lock(&self.inner.state.cancel_deadline)
    }

    /// True while the run is paused (no new work is dispatched; this task may go on).
    pub fn is_paused(&self) -> bool {
        self.inner.state.paused.load(Ordering::Relaxed)
    }
}

/// The id of the `n`-th question of `attempt`: unique within the run.
fn request_id(attempt: u32, n: u32) -> String {
    format!("q{attempt}-{n}")
}

/// A report's body: the fields every report has, and those of its kind.
#[derive(Serialize)]
struct Report<'a> {
    run_id: &'a str,
    attempt: u32,
    agent: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    question: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retryable: Option<bool>,
}

impl<'a> Report<'a> {
    fn new(message: &'a TaskMessage, agent: &'a str) -> Report<'a> {
        Report {
            run_id: message.run_id.as_str(),
            attempt: message.attempt,
            agent,
            current: None,
            total: None,
            message: None,
            level: None,
            request_id: None,
            question: None,
            output: None,
            error: None,
            retryable: None,
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    kind: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a serde_json::Value>,
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let cut = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::scheduler::{Command, Origin, ReportKind, TaskError};
    use osp_protocol::Encoding;

    fn task_message() -> TaskMessage {
        let run_id = Token::new("run_id", "r-1").unwrap();
        TaskMessage {
            signal_subject: osp_protocol::scheduler::signal_subject(&run_id),
            heartbeat_subject: osp_protocol::scheduler::heartbeat_subject(&run_id),
            run_id,
            attempt: 2,
            dispatch: 1,
            capability: Token::new("capability", "summarize").unwrap(),
            input: serde_json::json!({"text": "hi"}),
            deadline: None,
            heartbeat_ms: 15_000,
        }
    }

    fn parse(command: &str, report: &Report<'_>) -> Command {
        let bytes = Encoding::MessagePack.encode(report).unwrap();
        Command::parse(command, Encoding::MessagePack, &bytes, Origin { command_id: "c", actor: "agent:a1" })
            .unwrap_or_else(|e| panic!("{command}: {e}"))
    }

    #[test]
    fn heartbeats_come_at_least_three_times_per_timeout() {
        assert_eq!(heartbeat_period(15_000), TASK_HEARTBEAT_INTERVAL);
        assert_eq!(heartbeat_period(3_000), Duration::from_secs(1));
        assert_eq!(heartbeat_period(600), Duration::from_millis(200));
        assert_eq!(heartbeat_period(30), MIN_TASK_HEARTBEAT);
        assert_eq!(heartbeat_period(0), TASK_HEARTBEAT_INTERVAL);
        let beat: serde_json::Value = serde_json::from_slice(&heartbeat_payload(3, "a1")).unwrap();
        assert_eq!(beat, serde_json::json!({"attempt": 3, "agent": "a1"}));
    }

    #[test]
    fn request_ids_name_the_attempt_and_the_question() {
        assert_eq!(request_id(1, 1), "q1-1");
        assert_eq!(request_id(3, 12), "q3-12");
        assert!(Token::new("request_id", request_id(u32::MAX, u32::MAX)).is_ok());
    }

    #[test]
    fn failures_have_helpers_and_stay_within_limits() {
        let failure = TaskFailure::new("boom");
        assert_eq!((failure.kind.as_str(), failure.retryable), ("error", true));
        let failure = TaskFailure::new("quota").kind("quota").permanent().details(serde_json::json!({"left": 0}));
        assert_eq!(
            (failure.kind.as_str(), failure.retryable, failure.to_string().as_str()),
            ("quota", false, "quota: quota")
        );
        assert_eq!(TaskFailure::cancelled().kind, "cancelled");
        assert!(!TaskFailure::invalid_input("no text").retryable);

        let huge = TaskFailure::new("é".repeat(MAX_TEXT_BYTES))
            .kind("k".repeat(100))
            .details(serde_json::json!("x".repeat(MAX_SMALL_DATA_BYTES)))
            .bounded();
        assert!(huge.message.len() <= MAX_TEXT_BYTES && huge.kind.len() == MAX_KIND_BYTES);
        assert_eq!(huge.details, None);
        assert_eq!(TaskFailure::new("m").kind("").bounded().kind, "error");

        let ended = Error::TaskEnded { run_id: "r".into(), attempt: 1, reason: "cancelled".into() };
        assert_eq!(TaskFailure::from(ended), TaskFailure::cancelled());
        let other = TaskFailure::from(Error::NotEnded { run_id: "r".into(), waited: Duration::from_secs(1) });
        assert_eq!((other.kind.as_str(), other.retryable), ("client", true));
    }

    #[test]
    fn reports_are_what_the_scheduler_reads() {
        let message = task_message();
        let base = || Report::new(&message, "a1");
        let Command::Report(started) = parse("started", &base()) else { panic!() };
        assert_eq!((started.attempt, started.agent.as_str(), started.kind), (2, "a1", ReportKind::Started));

        let report = Report { current: Some(1), total: Some(3), message: Some("one"), ..base() };
        let Command::Report(progress) = parse("progress", &report) else { panic!() };
        assert_eq!(progress.kind, ReportKind::Progress { current: 1, total: Some(3), message: Some("one".into()) });

        let report = Report { level: Some(LogLevel::Warn.as_str()), message: Some("hm"), ..base() };
        let Command::Report(log) = parse("log", &report) else { panic!() };
        assert_eq!(log.kind, ReportKind::Log { level: "warn".into(), message: "hm".into() });

        let question = serde_json::json!({"ok?": true});
        let report = Report { request_id: Some("q2-1"), question: Some(&question), ..base() };
        let Command::Report(ask) = parse("ask", &report) else { panic!() };
        assert!(matches!(ask.kind, ReportKind::Ask { ref request_id, .. } if request_id == "q2-1"));

        let output = serde_json::json!({"summary": "s"});
        let Command::Report(done) = parse("completed", &Report { output: Some(&output), ..base() }) else { panic!() };
        assert_eq!(done.kind.name(), "completed");

        let failure = TaskFailure::new("boom").kind("quota").permanent();
        let report = Report {
            error: Some(ErrorBody { kind: &failure.kind, message: &failure.message, details: None }),
            retryable: Some(failure.retryable),
            ..base()
        };
        let Command::Report(failed) = parse("failed", &report) else { panic!() };
        assert_eq!(
            failed.kind,
            ReportKind::Failed {
                error: TaskError { kind: "quota".into(), message: "boom".into(), details: None },
                retryable: false
            }
        );
    }

    #[test]
    fn task_messages_are_checked_before_their_subjects_are_used() {
        let good = serde_json::to_vec(&task_message()).unwrap();
        assert_eq!(read_task(&good).unwrap(), task_message());
        assert!(read_task(b"{").is_err());
        let mut wild = task_message();
        wild.signal_subject = "osp.v1.task.*.signal".into();
        assert!(read_task(&serde_json::to_vec(&wild).unwrap()).unwrap_err().contains("signal_subject"));
        let mut zero = task_message();
        zero.attempt = 0;
        assert!(read_task(&serde_json::to_vec(&zero).unwrap()).is_err());
    }

    #[test]
    fn signals_cancel_pause_and_answer_only_their_attempt() {
        let state = TaskState::new(2);
        let answered = state.answered.subscribe();
        state.on_signal(Signal::Answer { attempt: 1, request_id: "q1-1".into(), answer: serde_json::json!(1) });
        assert_eq!(state.take_answer("q1-1"), None);
        state.on_signal(Signal::Answer { attempt: 2, request_id: "q2-1".into(), answer: serde_json::json!("yes") });
        assert!(answered.has_changed().unwrap());
        assert_eq!(state.take_answer("q2-1"), Some(serde_json::json!("yes")));

        state.on_signal(Signal::Pause { attempt: 2 });
        assert!(state.paused.load(Ordering::Relaxed));
        state.on_signal(Signal::Resume { attempt: 2 });
        assert!(!state.paused.load(Ordering::Relaxed));

        state.on_signal(Signal::Cancel { attempt: 1, graceful: false, deadline: None, reason: "old".into() });
        assert!(!state.cancel.is_cancelled());
        state.on_signal(Signal::Cancel {
            attempt: 2,
            graceful: true,
            deadline: Some(Timestamp(5)),
            reason: "user".into(),
        });
        assert!(state.cancel.is_cancelled() && !state.forced.is_cancelled());
        assert_eq!((state.reason().as_str(), *lock(&state.cancel_deadline)), ("cancelled: user", Some(Timestamp(5))));
        state.on_signal(Signal::Cancel { attempt: 2, graceful: false, deadline: None, reason: "now".into() });
        assert!(state.forced.is_cancelled());
        assert_eq!(state.reason(), "cancelled: user", "the first reason stays");
    }

    #[test]
    fn the_work_consumer_is_the_same_for_every_agent() {
        let capability = Token::new("capability", "summarize").unwrap();
        let config = work_consumer_config(&capability);
        assert_eq!(config.durable_name.as_deref(), Some("work-summarize"));
        assert_eq!(config.filter_subject, "osp.v1.work.summarize");
        assert_eq!((config.ack_wait, config.max_deliver, config.max_ack_pending), (ACK_WAIT, -1, 1000));
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
    }

    #[tokio::test]
    async fn builders_keep_their_settings_within_bounds() {
        // Never connects: nothing here talks to a server.
        let nats = async_nats::ConnectOptions::new().retry_on_initial_connect().connect("nats://127.0.0.1:1").await;
        let client = Client::new(nats.unwrap());
        let builder = Worker::builder(&client, "a1")
            .capability("summarize")
            .capabilities(["echo", "summarize"])
            .max_concurrency(0)
            .pull_expires(Duration::from_secs(100))
            .shutdown_timeout(Duration::from_secs(3));
        assert_eq!(builder.capabilities, ["summarize", "echo", "summarize"]);
        assert_eq!((builder.max_concurrency, builder.pull_expires.as_secs()), (1, 30));
        assert_eq!(Worker::builder(&client, "a1").pull_expires(Duration::ZERO).pull_expires, Duration::from_secs(1));

        let handler = |_task: Task| async { Ok(serde_json::Value::Null) };
        let none = Worker::builder(&client, "a1").start(handler).await.unwrap_err();
        assert!(none.to_string().contains("capabilit"), "{none}");
        let bad = Worker::builder(&client, "a.1").capability("x").start(handler).await.unwrap_err();
        assert!(bad.to_string().contains("agent"), "{bad}");
        let bad = Worker::builder(&client, "a1").capability("x y").start(handler).await.unwrap_err();
        assert!(bad.to_string().contains("capability"), "{bad}");

        let mut text = "héllo".to_owned();
        truncate(&mut text, 2);
        assert_eq!(text, "h");
    }
}
