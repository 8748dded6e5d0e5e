//! A task in hand, as its handler sees it ([`Task`]), and what goes on around it while
//! the handler runs: heartbeats, the task's signals (cancel, pause, answers), and the
//! reports to the scheduler, up to the final `completed` or `failed`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::Retryable;
use futures::StreamExt;
use osp_protocol::registry::document::{encoded_len, from_json};
use osp_protocol::scheduler::{
    Command, Report, ReportKind, ReportOutcome, Signal, TaskError, TaskMessage, MAX_DATA_BYTES, MAX_LOG_BYTES,
    MAX_TEXT_BYTES, TASK_HEARTBEAT_INTERVAL,
};
use osp_protocol::{InboxCommand, Timestamp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{LogLevel, TaskFailure, ANSWER_POLL, FINAL_REPORT_TRIES, MIN_TASK_HEARTBEAT, SEND_AGAIN};
use crate::scheduler::command_id;
use crate::{Client, Error, Result};

pub(super) async fn complete(inner: &TaskInner, output: serde_json::Value) {
    let output = from_json(&output);
    let size = encoded_len(&output);
    if size > MAX_DATA_BYTES {
        let failure = TaskFailure::new(format!("the output is {size} bytes, over the limit of {MAX_DATA_BYTES}"))
            .kind("output_too_large")
            .permanent();
        return fail(inner, failure, FINAL_REPORT_TRIES).await;
    }
    match inner.send_final(&inner.report(ReportKind::Completed { output }), FINAL_REPORT_TRIES).await {
        Err(Error::Rejected { error, .. }) if matches!(error.code(), "invalid" | "too_large" | "malformed") => {
            let failure =
                TaskFailure::new(format!("the output was refused: {error}")).kind("invalid_output").permanent();
            fail(inner, failure, FINAL_REPORT_TRIES).await;
        }
        _ => {}
    }
}

pub(super) async fn fail(inner: &TaskInner, failure: TaskFailure, tries: u32) {
    let _ = inner.send_final(&inner.report(failed(failure)), tries).await;
}

/// The `failed` report of `failure`.
fn failed(failure: TaskFailure) -> ReportKind {
    let failure = failure.bounded();
    let details = failure.details.as_ref().map(from_json);
    let error = TaskError { kind: failure.kind, message: failure.message, details };
    ReportKind::Failed { error, retryable: failure.retryable }
}

/// The period of a task's heartbeat: the client's interval, or a third of the heartbeat
/// the scheduler asks for when that is shorter (so two beats may be lost in a row).
pub fn heartbeat_period(heartbeat_ms: u64) -> Duration {
    if heartbeat_ms == 0 {
        return TASK_HEARTBEAT_INTERVAL;
    }
    TASK_HEARTBEAT_INTERVAL.min(Duration::from_millis(heartbeat_ms / 3)).max(MIN_TASK_HEARTBEAT)
}

pub(super) fn heartbeat_payload(attempt: u32, agent: &str) -> bytes::Bytes {
    serde_json::to_vec(&serde_json::json!({ "attempt": attempt, "agent": agent })).unwrap_or_default().into()
}

/// Beats until the task is done. A beat is core NATS: one lost while disconnected is
/// simply not heard, and the next counts.
pub(super) async fn heartbeat(
    nats: async_nats::Client,
    subject: String,
    payload: bytes::Bytes,
    every: Duration,
    done: CancellationToken,
) {
    // The scheduler counts an attempt as heard when it starts; the first beat is due
    // one period later, not at once (a short task then sends none).
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
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
pub(super) async fn listen(mut signals: async_nats::Subscriber, inner: Arc<TaskInner>) {
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
pub(super) struct TaskState {
    attempt: u32,
    /// Fires on a cancel (graceful or not), or when the attempt is found to be over.
    cancel: CancellationToken,
    /// Fires on a forced cancel: the handler is stopped.
    pub(super) forced: CancellationToken,
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

pub(super) struct TaskInner {
    client: Client,
    agent: String,
    pub(super) message: TaskMessage,
    input: serde_json::Value,
    pub(super) state: TaskState,
    questions: AtomicU32,
    /// The task is over: stop listening and heartbeating.
    pub(super) done: CancellationToken,
}

impl TaskInner {
    pub(super) fn new(client: Client, agent: String, message: TaskMessage) -> TaskInner {
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

    fn report(&self, kind: ReportKind) -> Command {
        report(&self.message, &self.agent, kind)
    }

    fn ended(&self) -> Error {
        Error::TaskEnded {
            run_id: self.message.run_id.to_string(),
            attempt: self.message.attempt,
            reason: self.state.reason(),
        }
    }

    /// Sends a report that is not final, and takes in what its reply says.
    async fn send(&self, report: &Command) -> Result<ReportOutcome> {
        let outcome = self.client.send::<_, ReportOutcome>(report).await;
        self.take_in(outcome, true)
    }

    /// Sends `completed` or `failed` under a fixed id, again while the scheduler cannot
    /// be reached (the same id makes a resend harmless).
    async fn send_final(&self, report: &Command, tries: u32) -> Result<ReportOutcome> {
        let command = report.name();
        let id = command_id(&format!("{command}:{}:{}", self.message.run_id, self.message.attempt));
        let send = || self.client.send_with_id::<_, ReportOutcome>(report, &id);
        let sent = send
            .retry(SEND_AGAIN.with_max_times(tries.saturating_sub(1) as usize))
            .when(Error::is_transient)
            .notify(|error, _| tracing::info!(%error, "cannot report {command} now; sending it again"))
            .await;
        match sent {
            Ok(answer) => Ok(answer.result),
            Err(Error::Rejected { error, seq }) if !error.is_transient() => {
                tracing::info!(%error, "the scheduler refused the {command} report");
                Err(Error::Rejected { error, seq })
            }
            Err(error) => {
                tracing::warn!(%error, "the {command} report was not delivered");
                Err(error)
            }
        }
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
    pub(super) inner: Arc<TaskInner>,
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

    /// Why the attempt before this one failed its checks (the run's `checks` option with
    /// `onFailure: retry`): the failed rules and the judge's reasoning, to do better.
    pub fn feedback(&self) -> Option<&serde_json::Value> {
        self.message().feedback.as_ref()
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
        let report = self.inner.report(ReportKind::Progress { current, total, message: text });
        if let Err(error) = self.inner.send(&report).await {
            tracing::debug!(%error, "progress not reported");
        }
    }

    /// Adds a line to the run's log (cut at 8 KiB). Best effort, like [`Task::progress`].
    pub async fn log(&self, level: LogLevel, message: impl Into<String>) {
        let mut message = message.into();
        truncate(&mut message, MAX_LOG_BYTES);
        let report = self.inner.report(ReportKind::Log { level: level.as_str().to_owned(), message });
        if let Err(error) = self.inner.send(&report).await {
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
        let report = inner.report(ReportKind::Ask { request_id: request_id.clone(), question: from_json(&question) });
        let id = command_id(&format!("{}:{}:{request_id}", report.name(), inner.message.run_id));
        let sent = inner.client.send_with_id::<_, ReportOutcome>(&report, &id).await;
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

/// A report of `agent` about the attempt of `message`.
pub(super) fn report(message: &TaskMessage, agent: &str, kind: ReportKind) -> Command {
    Command::Report(Report { run_id: message.run_id.clone(), attempt: message.attempt, agent: agent.to_owned(), kind })
}

/// Cuts `text` to at most `max` bytes, on a character boundary.
pub(super) fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let cut = (0..=max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.truncate(cut);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use osp_protocol::scheduler::Origin;
    use osp_protocol::{Encoding, Token};

    pub(in crate::worker) fn task_message() -> TaskMessage {
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
            feedback: None,
            heartbeat_ms: 15_000,
        }
    }

    /// `report` as the scheduler reads it from its inbox.
    fn parse(report: &Command) -> Command {
        let bytes = Encoding::MessagePack.encode(report).unwrap();
        let read =
            Command::parse(report.name(), Encoding::MessagePack, &bytes, Origin { command_id: "c", actor: "agent:a1" })
                .unwrap_or_else(|e| panic!("{}: {e}", report.name()));
        assert_eq!(&read, report);
        read
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
    fn reports_are_what_the_scheduler_reads() {
        let message = task_message();
        let report = |kind| report(&message, "a1", kind);
        let Command::Report(started) = parse(&report(ReportKind::Started)) else { panic!() };
        assert_eq!((started.attempt, started.agent.as_str(), started.kind), (2, "a1", ReportKind::Started));

        let progress = ReportKind::Progress { current: 1, total: Some(3), message: Some("one".into()) };
        let Command::Report(progress) = parse(&report(progress)) else { panic!() };
        assert_eq!(progress.kind, ReportKind::Progress { current: 1, total: Some(3), message: Some("one".into()) });

        let log = ReportKind::Log { level: LogLevel::Warn.as_str().into(), message: "hm".into() };
        let Command::Report(log) = parse(&report(log)) else { panic!() };
        assert_eq!(log.kind, ReportKind::Log { level: "warn".into(), message: "hm".into() });

        let question = from_json(&serde_json::json!({"ok?": true}));
        let Command::Report(ask) = parse(&report(ReportKind::Ask { request_id: "q2-1".into(), question })) else {
            panic!()
        };
        assert!(matches!(ask.kind, ReportKind::Ask { ref request_id, .. } if request_id == "q2-1"));

        let output = from_json(&serde_json::json!({"summary": "s"}));
        let Command::Report(done) = parse(&report(ReportKind::Completed { output })) else { panic!() };
        assert_eq!(done.kind.name(), "completed");

        let failure = TaskFailure::new("boom").kind("quota").permanent();
        let Command::Report(failed) = parse(&report(super::failed(failure))) else { panic!() };
        assert_eq!(
            failed.kind,
            ReportKind::Failed {
                error: TaskError { kind: "quota".into(), message: "boom".into(), details: None },
                retryable: false
            }
        );
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
}
