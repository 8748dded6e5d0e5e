//! What the log's audit events ask of the world, and the deadline of open checks.
//!
//! - `effects-quality`, a durable consumer on `osp.v1.evt.audit.*` shared by all
//!   instances: `audit.opened` submits a run of the scheduler per part agents make (the
//!   judge, each custom rule) and sets the check's deadline timer; `audit.recorded`
//!   clears it. Each effect is idempotent (a run id is its part's identity, a timer's
//!   subject is its identity) and judged against the check's state now, so an event
//!   handled again, by another instance after a crash, does nothing twice.
//! - `timers-quality`, the fired deadlines: whatever has not answered is missing
//!   evidence, and the entry is recorded (`close`).
//!
//! The parts' runs name this service in their `notify` option, so the scheduler sends a
//! `run_ended` hint to its inbox when each ends; the inbox reads the end from the log.

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::{CommandMeta, Delivery, EventLog, Executor, FromStored, Projection, Recorded, Timers, WorkConfig};
use osp_eventlog::{WorkConsumer, EVENTS_STREAM};
use osp_protocol::quality::{AgentPart, AuditOpened, CustomRuleTask, JudgeTask, QualityEvent, AUDIT_KIND, SERVICE};
use osp_protocol::registry::document::from_json;
use osp_protocol::scheduler::{self, Notify, OnTimeout, RunOptions, Submit, Timeout};
use osp_protocol::{subject, AggregateRef, InboxCommand, Token};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::aggregate::{QualityCommand, Record};
use crate::view::QualityView;

/// Messages one instance handles at once, per consumer.
const IN_FLIGHT: usize = 64;
/// The actor the quality service's own commands and decisions are recorded under.
pub const ACTOR: &str = "service:quality";

/// What the effects and the timers share.
pub struct Effects {
    /// The log.
    pub log: EventLog,
    /// Decides the service's own commands.
    pub executor: Arc<Executor<Record, QualityView>>,
    /// The view.
    pub view: Projection<QualityView>,
    /// Deadlines of open checks.
    pub timers: Timers,
}

/// The effects consumer's settings: every instance creates it the same way.
pub fn effects_config(ack_wait: Duration) -> WorkConfig {
    WorkConfig {
        durable: "effects-quality".into(),
        filter: subject::events_of_kind(&Token::new("kind", AUDIT_KIND).expect("valid")),
        ack_wait,
        max_deliver: -1,
    }
}

/// Starts both consumers.
pub async fn start(
    effects: Arc<Effects>,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let events = WorkConsumer::ensure(effects.log.jetstream(), EVENTS_STREAM, &effects_config(ack_wait)).await?;
    let fired = effects.timers.fired(ack_wait).await?;
    let on_events = effects.clone();
    Ok(vec![
        events
            .serve("effects", IN_FLIGHT, shutdown.clone(), move |delivery| {
                let effects = on_events.clone();
                async move { effects.perform(&delivery).await }
            })
            .await?,
        fired
            .serve("timers", IN_FLIGHT, shutdown, move |delivery| {
                let effects = effects.clone();
                async move { effects.close(&delivery).await }
            })
            .await?,
    ])
}

impl Effects {
    async fn perform(&self, delivery: &Delivery) {
        let event = match Recorded::<QualityEvent>::from_stored(&delivery.stored()) {
            Ok(event) => event,
            Err(error) => {
                // `osp log verify` names it; no effect can come of it.
                tracing::error!(subject = delivery.subject(), %error, "unreadable audit event; no effects");
                let _ = delivery.ack_idempotent().await;
                return;
            }
        };
        let audit = &event.envelope.aggregate;
        let done = match &event.envelope.payload {
            QualityEvent::AuditOpened(opened) => self.open(audit, event.seq, opened).await,
            QualityEvent::AuditRecorded(_) => self.timers.cancel(&timer_id(audit)).await,
            _ => Ok(()),
        };
        if let Err(error) = done {
            tracing::warn!(%audit, %error, "effect failed; the event will be handled again");
            let _ = delivery.retry_after(Duration::from_secs(1)).await;
            return;
        }
        if let Err(error) = delivery.ack_idempotent().await {
            tracing::debug!(%error, "could not acknowledge an audit event's effects; they are idempotent");
        }
    }

    /// Submits the runs of the parts still waited for, and sets the deadline.
    async fn open(&self, audit: &AggregateRef, seq: u64, opened: &AuditOpened) -> osp_eventlog::Result<()> {
        if self.view.wait_applied(seq, Duration::from_secs(5)).await.is_err() {
            return Err(osp_eventlog::Error::Unavailable {
                operation: "apply an opened check",
                reason: "the view has not applied it yet".into(),
            });
        }
        let pending: Vec<AgentPart> = match self.view.read().open_audit(audit) {
            Some(open) => open.opened.parts.iter().filter(|part| !open.ended(&part.part)).cloned().collect(),
            None => return Ok(()),
        };
        for part in &pending {
            self.submit(audit, opened, part).await?;
        }
        self.timers.set(&timer_id(audit), opened.deadline, audit.id.to_string().into_bytes().into()).await
    }

    /// Submits part `part`'s run: its task, a timeout of the check's, and a `notify` of
    /// this service under the audit's id.
    async fn submit(&self, audit: &AggregateRef, opened: &AuditOpened, part: &AgentPart) -> osp_eventlog::Result<()> {
        let check = &opened.check;
        let input = match (&check.judge, opened.rules.iter().find(|rule| rule.name == part.part)) {
            (Some(judge), _) if part.part == osp_protocol::quality::audit::JUDGE_SCOPE => {
                serde_json::to_value(JudgeTask {
                    output: check.output.clone(),
                    criteria: judge.criteria.clone(),
                    threshold: judge.threshold,
                    model: judge.model.clone(),
                    objectives: check.objectives.clone(),
                })
            }
            (_, Some(rule)) => {
                serde_json::to_value(CustomRuleTask { output: check.output.clone(), rule: rule.clone() })
            }
            _ => return Ok(()),
        }
        .map_err(|e| osp_protocol::Error::Encode { reason: e.to_string() })?;
        let ms = check.timeout_ms.unwrap_or(osp_protocol::quality::DEFAULT_AGENT_TIMEOUT_MS);
        let options = RunOptions {
            timeout: Some(Timeout { ms, on_timeout: OnTimeout::Fail }),
            wait_for_agent: true,
            notify: Some(Box::new(Notify { service: SERVICE.into(), key: audit.id.to_string() })),
            ..RunOptions::default()
        };
        let submit = scheduler::Command::Submit(Submit {
            run_id: part.run_id.clone(),
            capability: Some(part.capability.clone()),
            workflow: None,
            parent: None,
            input: from_json(&input),
            options,
            metadata: None,
        });
        let scheduler = Token::new("service", scheduler::SERVICE).expect("valid token");
        let id = format!("submit:{}", part.run_id);
        self.log.send_command(&scheduler, submit.name(), &id, ACTOR, &submit).await?;
        tracing::info!(%audit, part = %part.part, run_id = %part.run_id, "part submitted");
        Ok(())
    }

    /// A check's deadline fired: decide `close` on it.
    async fn close(&self, delivery: &Delivery) {
        let id = String::from_utf8_lossy(delivery.payload()).into_owned();
        let Ok(audit) = AggregateRef::new(AUDIT_KIND, &id) else {
            tracing::error!(subject = delivery.subject(), "a deadline names no audit; dropped");
            let _ = delivery.ack_idempotent().await;
            return;
        };
        let meta = CommandMeta {
            id: format!("close:{id}"),
            received_at: delivery.stored_at(),
            actor: ACTOR.into(),
            correlation_id: None,
        };
        if self.executor.decide_own(&audit, &QualityCommand::Close, &meta).await.is_err() {
            let _ = delivery.retry_after(Duration::from_secs(1)).await;
            return;
        }
        let _ = delivery.ack_idempotent().await;
    }
}

/// The deadline timer of audit `audit`: a hash of its id (up to 128 bytes).
fn timer_id(audit: &AggregateRef) -> Token {
    let hash = blake3::hash(audit.id.as_str().as_bytes()).to_hex();
    Token::new("timer id", format!("{}-close", &hash[..32])).expect("hex")
}
