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

mod failure;
mod pull;
mod task;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer};
use backon::ExponentialBuilder;
use futures::future::BoxFuture;
use futures::FutureExt;
use osp_protocol::scheduler::work_consumer;
use osp_protocol::{subject, Token};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Client, Error, Result, DEFAULT_TIMEOUT};

pub use failure::{LogLevel, TaskFailure};
pub use task::{heartbeat_period, Task};

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
/// The pauses between those sendings (their number is the caller's).
const SEND_AGAIN: ExponentialBuilder =
    ExponentialBuilder::new().with_min_delay(Duration::from_millis(500)).with_max_delay(Duration::from_secs(5));
/// Longest error kind.
const MAX_KIND_BYTES: usize = 64;

type Handler =
    Arc<dyn Fn(Task) -> BoxFuture<'static, std::result::Result<serde_json::Value, TaskFailure>> + Send + Sync>;

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
                tokio::spawn(
                    pull::pull(shared.clone(), jetstream.clone(), capability.clone(), consumer).instrument(span),
                )
            })
            .collect();
        Ok(Worker { shared, capabilities, pullers, shutdown_timeout: self.shutdown_timeout })
    }
}

/// The durable consumer every agent of `capability` shares (create-or-update, with the
/// same settings everywhere).
pub fn work_consumer_config(capability: &Token) -> jetstream::consumer::pull::Config {
    jetstream::consumer::pull::Config {
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

#[cfg(test)]
mod tests {
    use super::task::truncate;
    use super::*;

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
