//! The scheduler's two shared durable consumers besides its inbox:
//!
//! - `effects-scheduler` on the log's run events: performs each event's effects
//!   ([`crate::effects`]) once the view has applied the event, then acknowledges it;
//! - `timers-scheduler` on fired timers: decides each ([`Shell::fire`]);
//! - `audits-scheduler` on the quality service's audit events: an audit entry recorded
//!   for a check the scheduler asked for decides the run it checks (the run option
//!   `checks`).
//!
//! Both are shared by all instances, so each message is handled by one, and by another
//! if that one dies before acknowledging.

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::{Delivery, FromStored, Recorded, WorkConfig, WorkConsumer, EVENTS_STREAM};
use osp_protocol::quality::{self, QualityEvent};
use osp_protocol::scheduler::{RunEvent, RUN_KIND};
use osp_protocol::{subject, Token};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::commands::{checks, TimerFired};
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

/// The audits consumer's settings.
pub fn audits_config(ack_wait: Duration) -> WorkConfig {
    WorkConfig {
        durable: "audits-scheduler".into(),
        filter: subject::events_of_kind(&Token::new("kind", quality::AUDIT_KIND).expect("valid")),
        ack_wait,
        max_deliver: -1,
    }
}

/// Starts the consumers.
pub async fn start(
    shell: Arc<Shell>,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let effects = WorkConsumer::ensure(shell.log.jetstream(), EVENTS_STREAM, &effects_config(ack_wait)).await?;
    let timers = shell.timers.fired(ack_wait).await?;
    let audits = WorkConsumer::ensure(shell.log.jetstream(), EVENTS_STREAM, &audits_config(ack_wait)).await?;
    let on_effects = shell.clone();
    let on_audits = shell.clone();
    Ok(vec![
        effects
            .serve("effects", IN_FLIGHT, shutdown.clone(), move |delivery| {
                let shell = on_effects.clone();
                async move { perform_effects(&shell, &delivery).await }
            })
            .await?,
        audits
            .serve("audits", IN_FLIGHT, shutdown.clone(), move |delivery| {
                let shell = on_audits.clone();
                async move { decide_audit(&shell, &delivery).await }
            })
            .await?,
        timers
            .serve("timers", IN_FLIGHT, shutdown, move |delivery| {
                let shell = shell.clone();
                async move { fire(&shell, &delivery).await }
            })
            .await?,
    ])
}

async fn perform_effects(shell: &Arc<Shell>, delivery: &Delivery) {
    let stored = delivery.stored();
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
        Some(run) => effects_of(&event.envelope, run),
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

/// An audit entry the scheduler asked for (its id is the one [`checks::audit_id`] gives
/// the run and attempt it names) decides that run; any other audit is not its business.
async fn decide_audit(shell: &Arc<Shell>, delivery: &Delivery) {
    let entry = match Recorded::<QualityEvent>::from_stored(&delivery.stored()) {
        Ok(Recorded { envelope, .. }) => match envelope.payload {
            QualityEvent::AuditRecorded(recorded) => Some(recorded.entry),
            _ => None,
        },
        Err(error) => {
            tracing::error!(subject = delivery.subject(), %error, "unreadable audit event; skipped");
            None
        }
    };
    let asked_for = entry.and_then(|entry| {
        let run_id = entry.execution_id.clone()?;
        let attempt = entry.metadata.as_ref()?.get("attempt")?.as_u64()?;
        (checks::audit_id(&run_id, u32::try_from(attempt).ok()?).as_str() == entry.id).then_some((run_id, entry))
    });
    if let Some((run_id, entry)) = asked_for {
        if shell.checked(&run_id, entry).await.is_err() {
            let _ = delivery.retry_after(Duration::from_secs(1)).await;
            return;
        }
    }
    if let Err(error) = delivery.ack_idempotent().await {
        tracing::debug!(%error, "could not acknowledge an audit event; deciding it again changes nothing");
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
