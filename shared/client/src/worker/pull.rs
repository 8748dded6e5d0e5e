//! Taking tasks from the work queue and handing them over: the pull loop of each
//! capability, the give-backs and acknowledgements, and one task's way from its message
//! to the handler's final report. Kept apart from the worker's set-up in `mod.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use osp_protocol::scheduler::{ReportKind, StartOutcome, TaskMessage};
use osp_protocol::{InboxCommand, Token};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::task::{complete, fail, heartbeat, heartbeat_payload, heartbeat_period, listen, report, Task, TaskInner};
use super::{ensure_consumer, Counters, Shared, TaskFailure, FINAL_REPORT_TRIES, MAX_BATCH, NAK_DELAY, RETRY_PAUSE};
use crate::scheduler::command_id;
use crate::Error;

/// Pulls tasks of one capability for as long as the worker runs: a slot first, then a
/// pull for as many tasks as slots it holds.
pub(super) async fn pull(
    shared: Arc<Shared>,
    jetstream: jetstream::Context,
    capability: Token,
    mut consumer: PullConsumer,
) {
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
    let started = report(&message, &shared.agent, ReportKind::Started);
    let (run, attempt, dispatch) = (&message.run_id, message.attempt, message.dispatch);
    let id = command_id(&format!("{}:{run}:{attempt}:{dispatch}:{}", started.name(), shared.agent));
    match shared.client.send_with_id::<_, StartOutcome>(&started, &id).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::task::tests::task_message;

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
}
