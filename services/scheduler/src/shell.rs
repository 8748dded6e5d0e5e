//! The I/O shell around the pure core: deciding the scheduler's own commands (timers,
//! lost agents) and performing effects (tasks, timers, signals). The inbox (clients'
//! commands) is `osp_runtime::Inbox`; everything here is what only the scheduler does.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::message::PublishMessage;
use futures::future::join_all;
use osp_eventlog::{EventLog, Timers};
use osp_protocol::quality::{self, AuditEntry, Check, QualityEvent};
use osp_protocol::scheduler::queries::RunStatus;
use osp_protocol::scheduler::{
    heartbeat_subject, signal_subject, task_message_id, Command, ParentLink, RunEnded, Signal, StepEnded, Submit,
    TaskError, TaskMessage, Workflow, RUN_ENDED_COMMAND, RUN_KIND,
};
use osp_protocol::{subject, AggregateRef, Timestamp, Token};
use osp_runtime::{CommandMeta, Executor, Projection};

use crate::agents::AgentsView;
use crate::commands::{checks, ParentSignal, RunCommand, TimerFired, TimerKind};
use crate::effects::Effect;
use crate::run::Run;
use crate::view::{RunRecord, SchedulerView};

/// In-memory timers are armed only this far ahead; later ones are left to the durable
/// timer alone (its one-second resolution matters less the further off it is).
const IN_MEMORY_HORIZON: Duration = Duration::from_secs(600);

/// What every scheduler task shares.
pub struct Shell {
    /// Sends commands (checks, `run_ended`), publishes tasks and signals, loads audits.
    pub log: EventLog,
    /// Decides and appends run commands.
    pub executor: Arc<Executor<Run, SchedulerView>>,
    /// Every run as the log tells: what each effect is judged against.
    pub runs: Projection<SchedulerView>,
    /// The registry's agents, as the log tells.
    pub agents: Projection<AgentsView>,
    /// Durable timers.
    pub timers: Timers,
}

/// The actor the scheduler's own decisions are recorded under.
pub const ACTOR: &str = "service:scheduler";

impl Shell {
    /// Decides one of the scheduler's own commands on run `run_id`
    /// ([`Executor::decide_own`]), recorded under the run's root as its correlation id.
    pub async fn decide(
        &self,
        run_id: &str,
        command: RunCommand,
        command_id: String,
        received_at: Timestamp,
    ) -> osp_eventlog::Result<()> {
        let Ok(aggregate) = AggregateRef::new(RUN_KIND, run_id) else {
            tracing::warn!(run_id, "not a run id; ignored");
            return Ok(());
        };
        let root = match &command {
            RunCommand::Client(client) => match client.as_ref() {
                Command::Submit(Submit { parent: Some(parent), .. }) => Some(parent.root.to_string()),
                _ => None,
            },
            _ => None,
        };
        let root = match root {
            Some(root) => root,
            None => self.read_run(&aggregate, |run| run.root().to_owned()).await?.unwrap_or_else(|| run_id.to_owned()),
        };
        let meta = CommandMeta { id: command_id, received_at, actor: ACTOR.into(), correlation_id: Some(root) };
        self.executor.decide_own(&aggregate, &command, &meta).await.map(drop)
    }

    /// Performs `effect` of the event at `seq` of run `run_id`.
    pub async fn perform(self: &Arc<Self>, run_id: &Token, seq: u64, effect: Effect) -> osp_eventlog::Result<()> {
        match effect {
            Effect::Advance => {
                let id = format!("advance:{run_id}:{seq}");
                self.decide(run_id.as_str(), RunCommand::Advance, id, Timestamp::now()).await
            }
            Effect::StartSteps(keys) => {
                join_all(keys.iter().map(|key| self.start_step(run_id, key))).await.into_iter().collect()
            }
            Effect::ToSteps(signal) => {
                let running = |run: &Run| match &run.workflow {
                    Some(workflow) => workflow.steps.running().map(|s| (s.key.clone(), s.run_id.clone())).collect(),
                    None => vec![],
                };
                let children: Vec<(String, Token)> =
                    self.read_run(&run_ref(run_id), running).await?.unwrap_or_default();
                join_all(children.iter().map(|(key, child)| self.to_step(run_id, key, child, &signal, seq)))
                    .await
                    .into_iter()
                    .collect()
            }
            Effect::NotifyParent { parent, ended } => {
                let id = format!("step-ended:{}", ended.run_id);
                self.decide(parent.as_str(), RunCommand::StepEnded(ended), id, Timestamp::now()).await
            }
            Effect::RequestCheck { attempt } => self.request_check(run_id, attempt).await,
            Effect::NotifyEnd(notify, status) => {
                let Ok(service) = Token::new("service", notify.service.as_str()) else { return Ok(()) };
                let ended = RunEnded { run_id: run_id.to_string(), key: notify.key, status };
                let id = RunEnded::command_id(run_id.as_str());
                self.log.send_command(&service, RUN_ENDED_COMMAND, &id, ACTOR, &ended).await
            }
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

    /// Passes `signal` from workflow run `parent` on to the run of its step `key`. A
    /// step's run cancelled before it was submitted has no parent link of its own to
    /// report its end with, so the parent's record of the step is closed here.
    async fn to_step(
        &self,
        parent: &Token,
        key: &str,
        child: &Token,
        signal: &ParentSignal,
        seq: u64,
    ) -> osp_eventlog::Result<()> {
        let kind = match signal {
            ParentSignal::Cancel { .. } => "cancel",
            ParentSignal::Pause => "pause",
            ParentSignal::Resume => "resume",
        };
        let id = format!("parent-{kind}:{child}:{seq}");
        self.decide(child.as_str(), RunCommand::FromParent(signal.clone()), id, Timestamp::now()).await?;
        let ParentSignal::Cancel { reason, .. } = signal else { return Ok(()) };
        if self.read_run(&run_ref(child), Run::cancelled_unsubmitted).await? != Some(true) {
            return Ok(());
        }
        let ended = StepEnded {
            key: key.to_owned(),
            run_id: child.clone(),
            status: RunStatus::Cancelled,
            output: None,
            error: Some(TaskError { kind: "cancelled".into(), message: reason.clone(), details: None }),
            duration_ms: 0,
        };
        let id = format!("step-ended:{child}");
        self.decide(parent.as_str(), RunCommand::StepEnded(ended), id, Timestamp::now()).await
    }

    /// Submits the run of step `key` of workflow run `parent`, as the parent recorded it.
    async fn start_step(&self, parent: &Token, key: &str) -> osp_eventlog::Result<()> {
        let submit = |run: &Run| {
            let step = run.workflow.as_ref().and_then(|w| w.steps.get(key))?;
            let root = Token::new("run_id", run.root().to_owned()).ok()?;
            let (capability, workflow) = match &step.step {
                Workflow::Task(task) => (Some(task.capability.clone()), None),
                other => (None, Some(Box::new(other.clone()))),
            };
            Some(Submit {
                run_id: step.run_id.clone(),
                capability,
                workflow,
                parent: Some(ParentLink { run_id: parent.clone(), step: key.to_owned(), root }),
                input: step.input.clone(),
                options: step.step.options().clone(),
                metadata: None,
            })
        };
        let Some(submit) = self.read_run(&run_ref(parent), submit).await?.flatten() else { return Ok(()) };
        let child = submit.run_id.clone();
        let id = format!("start:{child}");
        self.decide(child.as_str(), RunCommand::from(Command::Submit(submit)), id, Timestamp::now()).await
    }

    /// Sends the quality service the check of attempt `attempt`'s held output, as the
    /// run's `checks` option says. The audit id is the check's identity: sent again, it
    /// is recorded once.
    async fn request_check(&self, run_id: &Token, attempt: u32) -> osp_eventlog::Result<()> {
        let check = |run: &Run| {
            let (Some(held), Some(checks)) = (run.held.as_ref(), run.checks()) else { return None };
            if held.attempt != attempt {
                return None;
            }
            Some(Check {
                audit_id: held.audit_id.clone(),
                output: osp_protocol::json::from_msgpack_value(&held.output),
                rules: checks.rule_tokens(),
                objectives: checks.objectives.clone(),
                execution_id: Some(run_id.to_string()),
                agent_id: run.nth_attempt(attempt).and_then(|a| a.agent.clone()),
                metadata: Some(serde_json::json!({"attempt": attempt})),
                judge: checks.judge.clone(),
                timeout_ms: Some(checks.timeout_ms()),
            })
        };
        let Some(check) = self.read_run(&run_ref(run_id), check).await?.flatten() else { return Ok(()) };
        let id = format!("check:{}", check.audit_id);
        self.log.send(&quality::Command::Check(Box::new(check)), &id, ACTOR).await
    }

    async fn publish_task(&self, run_id: &Token, attempt: u32, dispatch: u32) -> osp_eventlog::Result<()> {
        let message = |run: &Run| task_message(run, run_id, attempt, dispatch);
        let Some((capability, message)) = self.read_run(&run_ref(run_id), message).await?.flatten() else {
            return Ok(());
        };
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

    /// `read` of run `aggregate`'s state: the one in hand, or recalled from the log (an
    /// effect of a run that ended a while ago, handled late).
    async fn read_run<T>(
        &self,
        aggregate: &AggregateRef,
        read: impl FnOnce(&Run) -> T,
    ) -> osp_eventlog::Result<Option<T>> {
        self.runs.recall(aggregate, |record: &RunRecord| read(record.run())).await
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
                // The durable timer is the fallback if this fails.
                let _ = shell.fire(fired, at).await;
            });
        }
        Ok(())
    }

    /// Decides a fired timer. Before the checks' deadline counts their evidence as
    /// missing, the log is asked for the audit entry: if the quality service recorded it
    /// (and its event is on its way), that decides.
    pub async fn fire(&self, fired: TimerFired, due: Timestamp) -> osp_eventlog::Result<()> {
        if fired.kind == TimerKind::Check {
            if let Some(entry) = self.recorded_audit(&fired.run_id, fired.n).await? {
                return self.checked(&fired.run_id, entry).await;
            }
        }
        let command_id = format!("timer:{}:{}:{}", fired.run_id, timer_kind(fired.kind), fired.n);
        let run_id = fired.run_id.clone();
        self.decide(&run_id, RunCommand::Timer(fired), command_id, due).await
    }

    /// Decides on run `run_id` the quality service's audit entry `entry` of it.
    pub async fn checked(&self, run_id: &str, entry: AuditEntry) -> osp_eventlog::Result<()> {
        let id = format!("checked:{}", entry.id);
        self.decide(run_id, RunCommand::Checked(Box::new(entry)), id, Timestamp::now()).await
    }

    /// The audit entry of attempt `attempt` of run `run_id`, if the quality service has
    /// recorded it.
    async fn recorded_audit(&self, run_id: &str, attempt: u32) -> osp_eventlog::Result<Option<AuditEntry>> {
        let aggregate = AggregateRef::new(quality::AUDIT_KIND, checks::audit_id(run_id, attempt).as_str())?;
        let loaded = self.log.load::<QualityEvent>(&aggregate).await?;
        Ok(loaded.events.into_iter().rev().find_map(|event| match event.envelope.payload {
            QualityEvent::AuditRecorded(recorded) => Some(recorded.entry),
            _ => None,
        }))
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

/// The root of run `run_id`'s tree, as far as the runs in hand tell (its own id when it
/// is not a step, or not in hand).
pub fn root_of(runs: &Projection<SchedulerView>, run_id: &str) -> String {
    runs.read().run(run_id).map_or_else(|| run_id.to_owned(), |run| run.root().to_owned())
}

fn run_ref(run_id: &Token) -> AggregateRef {
    AggregateRef { kind: Token::new("kind", RUN_KIND).expect("an aggregate kind is a valid token"), id: run_id.clone() }
}

/// The task message of attempt `attempt`, dispatch `dispatch` of `run`, and the capability
/// whose work queue it goes to.
fn task_message(run: &Run, run_id: &Token, attempt: u32, dispatch: u32) -> Option<(Token, TaskMessage)> {
    let capability = Token::new("capability", run.submission.capability.clone()).ok()?;
    let deadline = run.nth_attempt(attempt).and_then(|a| a.deadline);
    let message = TaskMessage {
        run_id: run_id.clone(),
        attempt,
        dispatch,
        capability: capability.clone(),
        input: osp_protocol::json::from_msgpack_value(&run.submission.input),
        deadline,
        heartbeat_ms: run.submission.options.heartbeat_timeout_ms(),
        signal_subject: signal_subject(run_id),
        heartbeat_subject: heartbeat_subject(run_id),
        feedback: run.feedback_for(attempt),
    };
    Some((capability, message))
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
        TimerKind::Check => "check",
    }
}
