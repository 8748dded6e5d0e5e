//! The scheduler's two shared durable consumers besides its inbox:
//!
//! - `effects-scheduler` on the log's run events: performs each event's effects
//!   ([`crate::effects`]) once the view has applied the event, then acknowledges it;
//! - `timers-scheduler` on fired timers: decides each ([`Shell::fire`]).
//!
//! Both are shared by all instances, so each message is handled by one, and by another
//! if that one dies before acknowledging.

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::{Delivery, FromStored, Recorded, StoredMessage, WorkConfig, WorkConsumer, EVENTS_STREAM};
use osp_protocol::scheduler::{RunEvent, RUN_KIND};
use osp_protocol::{subject, Token};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::TimerFired;
use crate::effects::effects_of;
use crate::shell::Shell;

/// Messages one instance handles at once, per consumer.
const IN_FLIGHT: usize = 256;
/// How long an effect waits for the view to apply its event before it is retried.
const APPLY_WITHIN: Duration = Duration::from_secs(5);

/// The effects consumer's settings: every instance creates it the same way.
pub fn effects_config(ack_wait: Duration) -> WorkConfig {
    WorkConfig {
        durable: "effects-scheduler".into(),
        filter: subject::events_of_kind(&Token::new("kind", RUN_KIND).expect("valid")),
        ack_wait,
        max_deliver: -1,
    }
}

/// Starts both consumers.
pub async fn start(
    shell: Arc<Shell>,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let effects = WorkConsumer::ensure(shell.log.jetstream(), EVENTS_STREAM, &effects_config(ack_wait)).await?;
    let timers = shell.timers.fired(ack_wait).await?;
    Ok(vec![
        serve(effects, shell.clone(), shutdown.clone(), "effects", |shell, delivery| async move {
            perform_effects(&shell, &delivery).await
        })
        .await?,
        serve(timers, shell, shutdown, "timers", |shell, delivery| async move { fire(&shell, &delivery).await })
            .await?,
    ])
}

/// Reads `consumer` until shutdown, handling up to [`IN_FLIGHT`] messages at once.
async fn serve<F, Fut>(
    consumer: WorkConsumer,
    shell: Arc<Shell>,
    shutdown: CancellationToken,
    name: &'static str,
    handle: F,
) -> anyhow::Result<JoinHandle<()>>
where
    F: Fn(Arc<Shell>, Delivery) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut deliveries = consumer.deliveries().await?;
    Ok(tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        while let Some(delivery) = deliveries.next_until(&shutdown, name).await {
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let work = handle(shell.clone(), delivery);
            tokio::spawn(async move {
                work.await;
                drop(slot);
            });
        }
        // What is in hand finishes; what was pulled and not started comes back after the ack wait.
        let _all = slots.acquire_many(IN_FLIGHT as u32).await;
    }))
}

async fn perform_effects(shell: &Arc<Shell>, delivery: &Delivery) {
    let stored = StoredMessage {
        seq: delivery.stream_sequence(),
        subject: delivery.subject().to_owned(),
        stored_at: delivery.stored_at(),
        payload: delivery.payload_bytes(),
    };
    let event = match Recorded::<RunEvent>::from_stored(&stored) {
        Ok(event) => event,
        Err(error) => {
            // `osp log verify` names it; no effect can come of it.
            tracing::error!(seq = stored.seq, %error, "unreadable run event; no effects");
            let _ = delivery.ack_idempotent().await;
            return;
        }
    };
    if shell.runs.wait_applied(event.seq, APPLY_WITHIN).await.is_err() {
        tracing::warn!(seq = event.seq, "the view has not applied this event yet; effects later");
        let _ = delivery.retry_after(Duration::from_millis(500)).await;
        return;
    }
    let run_id = event.envelope.aggregate.id.clone();
    let effects = match shell.runs.read().run(run_id.as_str()) {
        Some(run) => effects_of(&event.envelope.payload, run),
        None => Vec::new(),
    };
    for effect in effects {
        if let Err(error) = shell.perform(&run_id, event.seq, effect.clone()).await {
            tracing::warn!(%run_id, ?effect, %error, "effect failed; the event will be handled again");
            let _ = delivery.retry_after(Duration::from_secs(1)).await;
            return;
        }
    }
    if let Err(error) = delivery.ack_idempotent().await {
        tracing::debug!(%error, "could not acknowledge an event's effects; they are idempotent");
    }
}

async fn fire(shell: &Arc<Shell>, delivery: &Delivery) {
    match rmp_serde::from_slice::<TimerFired>(delivery.payload()) {
        Ok(fired) => {
            if shell.fire(fired, delivery.stored_at()).await.is_err() {
                let _ = delivery.retry_after(Duration::from_secs(1)).await;
                return;
            }
        }
        Err(error) => tracing::error!(%error, subject = delivery.subject(), "unreadable timer; dropped"),
    }
    if let Err(error) = delivery.ack_idempotent().await {
        tracing::debug!(%error, "could not acknowledge a fired timer; deciding it again changes nothing");
    }
}
