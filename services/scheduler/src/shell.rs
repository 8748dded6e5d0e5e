//! The I/O shell around the pure core: deciding the scheduler's own commands (timers,
//! lost agents) and performing effects (tasks, timers, signals). The inbox (clients'
//! commands) is `osp_eventlog::Inbox`; everything here is what only the scheduler does.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use osp_eventlog::{CommandMeta, EventLog, Executor, Projection, Refusal, Timers};
use osp_protocol::scheduler::{heartbeat_subject, signal_subject, task_message_id, Signal, TaskMessage, RUN_KIND};
use osp_protocol::{subject, AggregateRef, Timestamp, Token};

use crate::agents::AgentsView;
use crate::commands::{RunCommand, TimerFired, TimerKind};
use crate::effects::Effect;
use crate::run::Run;
use crate::view::SchedulerView;

/// In-memory timers are armed only this far ahead; later ones are left to the durable
/// timer alone (its one-second resolution matters less the further off it is).
const IN_MEMORY_HORIZON: Duration = Duration::from_secs(600);

/// What every scheduler task shares.
pub struct Shell {
    /// The log.
    pub log: EventLog,
    /// Decides and appends run commands.
    pub executor: Arc<Executor<Run, SchedulerView>>,
    /// The runs.
    pub runs: Projection<SchedulerView>,
    /// The registry's agents, as the log tells.
    pub agents: Projection<AgentsView>,
    /// Durable timers.
    pub timers: Timers,
}

/// The actor the scheduler's own decisions are recorded under.
pub const ACTOR: &str = "service:scheduler";

impl Shell {
    /// Decides one of the scheduler's own commands on run `run_id`. `command_id` names
    /// the decision the same way on every instance, so when several take it at once
    /// it is recorded once.
    pub async fn decide(&self, run_id: &str, command: RunCommand, command_id: String, received_at: Timestamp) {
        let Ok(aggregate) = AggregateRef::new(RUN_KIND, run_id) else {
            tracing::warn!(run_id, "not a run id; ignored");
            return;
        };
        let meta =
            CommandMeta { id: command_id, received_at, actor: ACTOR.into(), correlation_id: Some(run_id.into()) };
        let place = self.executor.queue(&aggregate).await;
        match self.executor.execute(place, &aggregate, &command, &meta).await {
            Ok(executed) if executed.appended > 0 => {
                tracing::info!(run_id, command_id = %meta.id, seq = executed.seq, "decided");
            }
            Ok(_) => tracing::debug!(run_id, command_id = %meta.id, "nothing to do"),
            Err(Refusal::Rejected(error)) => tracing::warn!(run_id, %error, "own decision refused"),
            Err(Refusal::Failed(error)) => tracing::warn!(run_id, %error, "could not decide now"),
        }
    }

    /// Performs `effect` for run `run_id`.
    pub async fn perform(self: &Arc<Self>, run_id: &Token, effect: Effect) -> osp_eventlog::Result<()> {
        match effect {
            Effect::PublishTask { attempt, dispatch } => self.publish_task(run_id, attempt, dispatch).await,
            Effect::SetTimer { kind, n, at } => self.set_timer(run_id, kind, n, at).await,
            Effect::Signal(signal) => {
                self.signal(run_id, &signal).await;
                Ok(())
            }
            Effect::ClearTimers(timers) => {
                for (kind, n) in timers {
                    self.timers.cancel(&timer_id(&TimerFired { run_id: run_id.to_string(), kind, n })).await?;
                }
                Ok(())
            }
        }
    }

    async fn publish_task(&self, run_id: &Token, attempt: u32, dispatch: u32) -> osp_eventlog::Result<()> {
        let Some((capability, message)) = self.task_message(run_id, attempt, dispatch) else { return Ok(()) };
        let payload =
            serde_json::to_vec(&message).map_err(|e| osp_protocol::Error::Encode { reason: e.to_string() })?;
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(task_message_id(run_id, attempt, dispatch))
            .header(osp_protocol::CONTENT_TYPE, osp_protocol::JSON);
        let nats = |e: &dyn std::fmt::Display| osp_eventlog::Error::Unavailable {
            operation: "put a task on the work queue",
            reason: e.to_string(),
        };
        let ack = self.log.jetstream().send_publish(subject::work(&capability), publish).await.map_err(|e| nats(&e))?;
        ack.await.map_err(|e| nats(&e))?;
        tracing::debug!(%run_id, attempt, dispatch, "task on the work queue");
        Ok(())
    }

    fn task_message(&self, run_id: &Token, attempt: u32, dispatch: u32) -> Option<(Token, TaskMessage)> {
        let view = self.runs.read();
        let run = view.run(run_id.as_str())?;
        let capability = Token::new("capability", run.view.capability.clone()).ok()?;
        let deadline = run.attempt_view(attempt).and_then(|a| a.deadline);
        let message = TaskMessage {
            run_id: run_id.clone(),
            attempt,
            dispatch,
            capability: capability.clone(),
            input: osp_protocol::json::from_msgpack_value(&run.view.input),
            deadline,
            heartbeat_ms: run.view.options.heartbeat_timeout_ms(),
            signal_subject: signal_subject(run_id),
            heartbeat_subject: heartbeat_subject(run_id),
        };
        Some((capability, message))
    }

    /// Sets the durable timer, and (when it is near) an in-memory one that fires on
    /// the millisecond while this instance lives. Whichever fires first decides; the
    /// other finds nothing to do.
    async fn set_timer(
        self: &Arc<Self>,
        run_id: &Token,
        kind: TimerKind,
        n: u32,
        at: Timestamp,
    ) -> osp_eventlog::Result<()> {
        let fired = TimerFired { run_id: run_id.to_string(), kind, n };
        let payload =
            rmp_serde::to_vec_named(&fired).map_err(|e| osp_protocol::Error::Encode { reason: e.to_string() })?;
        self.timers.set(&timer_id(&fired), at, payload.into()).await?;
        let wait = Duration::from_millis(at.millis_since(Timestamp::now()));
        if wait <= IN_MEMORY_HORIZON {
            let shell = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                shell.fire(fired, at).await;
            });
        }
        Ok(())
    }

    /// Decides a fired timer.
    pub async fn fire(&self, fired: TimerFired, due: Timestamp) {
        let command_id = format!("timer:{}:{}:{}", fired.run_id, timer_kind(fired.kind), fired.n);
        let run_id = fired.run_id.clone();
        self.decide(&run_id, RunCommand::Timer(fired), command_id, due).await;
    }

    async fn signal(&self, run_id: &Token, signal: &Signal) {
        let Ok(payload) = serde_json::to_vec(signal) else { return };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(osp_protocol::CONTENT_TYPE, osp_protocol::JSON);
        if let Err(error) =
            self.log.client().publish_with_headers(signal_subject(run_id), headers, payload.into()).await
        {
            tracing::warn!(%run_id, %error, "could not signal the agent");
        }
    }
}

/// A timer's identity: a hash of the run id (which may be up to 128 bytes), the kind and
/// the attempt, so setting it again replaces it.
pub fn timer_id(fired: &TimerFired) -> Token {
    let hash = blake3::hash(fired.run_id.as_bytes()).to_hex();
    Token::new("timer id", format!("{}-{}-{}", &hash[..32], timer_kind(fired.kind), fired.n)).expect("hex and digits")
}

fn timer_kind(kind: TimerKind) -> &'static str {
    match kind {
        TimerKind::Timeout => "timeout",
        TimerKind::Retry => "retry",
        TimerKind::Approval => "approval",
        TimerKind::Cancel => "cancel",
    }
}
