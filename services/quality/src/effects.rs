//! What the log's audit events ask of the world, and the deadline of open checks.
//!
//! - [`AuditEffects`] (`effects-quality`, on `osp.v1.evt.audit.*`): `audit.opened` asks
//!   for a run of the scheduler per part agents make (the judge, each custom rule) that
//!   has not ended, and for the check's deadline timer; `audit.recorded` clears it
//!   ([`effects_of`], pure). Each effect is idempotent (a run id is its part's identity, a
//!   timer's subject is its identity) and the parts are read from the check's state now,
//!   so an event handled again, by another instance after a crash, does nothing twice.
//! - fired deadlines (`timers-quality`): whatever has not answered is missing evidence,
//!   and the entry is recorded (`close`).
//!
//! The parts' runs name this service in their `notify` option, so the scheduler sends a
//! `run_ended` hint to its inbox when each ends; the inbox reads the end from the log.

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::{EventLog, Recorded, Timers};
use osp_protocol::quality::{AgentPart, AuditOpened, CustomRuleTask, JudgeTask, QualityEvent, AUDIT_KIND, SERVICE};
use osp_protocol::registry::document::from_json;
use osp_protocol::scheduler::{self, Notify, OnTimeout, RunOptions, Submit, Timeout};
use osp_protocol::{AggregateRef, Timestamp, Token};
use osp_runtime::{CommandMeta, Executor, Projection, Reactor, TimerHandler};

use crate::aggregate::{Audit, AuditCommand, OpenAudit};
use crate::view::QualityView;

/// Audit events (and fired deadlines) one instance handles at once.
pub const IN_FLIGHT: usize = 64;
/// How long an effect waits for the view to apply its event before it is retried.
const APPLY_WITHIN: Duration = Duration::from_secs(5);
/// The actor the quality service's own commands and decisions are recorded under.
pub const ACTOR: &str = "service:quality";

/// What an audit event asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Submit the run of an agent's part of an opened check.
    Submit(AgentPart),
    /// Set the check's deadline.
    SetDeadline(Timestamp),
    /// The entry is recorded: its deadline no longer matters.
    ClearDeadline,
}

/// What `event` on an audit asks for, given the audit's open check as it stands once the
/// event is applied (`None` once the entry is recorded).
pub fn effects_of(event: &QualityEvent, open: Option<&OpenAudit>) -> Vec<Effect> {
    match event {
        QualityEvent::AuditOpened(opened) => match open {
            Some(open) => open
                .opened
                .parts
                .iter()
                .filter(|part| !open.ended(&part.part))
                .cloned()
                .map(Effect::Submit)
                .chain([Effect::SetDeadline(opened.deadline)])
                .collect(),
            None => Vec::new(),
        },
        QualityEvent::AuditRecorded(_) => vec![Effect::ClearDeadline],
        _ => Vec::new(),
    }
}

/// What the effects and the fired deadlines share.
pub struct AuditEffects {
    pub log: EventLog,
    /// Decides the service's own `close` of a check whose deadline passed.
    pub executor: Arc<Executor<Audit, QualityView>>,
    pub view: Projection<QualityView>,
    /// Deadlines of open checks.
    pub timers: Timers,
}

impl Reactor for AuditEffects {
    type Event = QualityEvent;
    type Effect = Effect;
    const NAME: &'static str = "effects";
    const KIND: &'static str = AUDIT_KIND;

    async fn ready(&self, seq: u64) -> bool {
        self.view.wait_applied(seq, APPLY_WITHIN).await.is_ok()
    }

    async fn effects_of(&self, event: &Recorded<QualityEvent>) -> osp_eventlog::Result<Vec<Effect>> {
        Ok(effects_of(&event.envelope.payload, self.view.read().open_audit(&event.envelope.aggregate)))
    }

    async fn perform(&self, event: &Recorded<QualityEvent>, effect: &Effect) -> osp_eventlog::Result<()> {
        let audit = &event.envelope.aggregate;
        match (effect, &event.envelope.payload) {
            (Effect::Submit(part), QualityEvent::AuditOpened(opened)) => self.submit(audit, opened, part).await,
            (Effect::SetDeadline(at), _) => {
                self.timers.set(&timer_id(audit), *at, audit.id.to_string().into_bytes().into()).await
            }
            (Effect::ClearDeadline, _) => self.timers.cancel(&timer_id(audit)).await,
            (Effect::Submit(_), _) => Ok(()),
        }
    }
}

impl AuditEffects {
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
        let id = format!("submit:{}", part.run_id);
        self.log.send(&submit, &id, ACTOR).await?;
        tracing::info!(%audit, part = %part.part, run_id = %part.run_id, "part submitted");
        Ok(())
    }
}

impl TimerHandler for AuditEffects {
    /// A check's deadline fired: decide `close` on it.
    async fn fire(&self, fired: &[u8], fired_at: Timestamp) -> osp_eventlog::Result<()> {
        let id = String::from_utf8_lossy(fired).into_owned();
        let Ok(audit) = AggregateRef::new(AUDIT_KIND, &id) else {
            tracing::error!(payload = %id, "a deadline names no audit; dropped");
            return Ok(());
        };
        let meta =
            CommandMeta { id: format!("close:{id}"), received_at: fired_at, actor: ACTOR.into(), correlation_id: None };
        self.executor.decide_own(&audit, &AuditCommand::Close, &meta).await.map(|_| ())
    }
}

/// The deadline timer of audit `audit`: a hash of its id (up to 128 bytes).
fn timer_id(audit: &AggregateRef) -> Token {
    let hash = blake3::hash(audit.id.as_str().as_bytes()).to_hex();
    Token::new("timer id", format!("{}-close", &hash[..32])).expect("hex")
}
