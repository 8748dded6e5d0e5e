//! What the scheduler does about the log's events and its fired timers, besides its
//! inbox (each served by the runtime on a durable consumer shared by all instances):
//!
//! - [`RunEffects`] (`effects-scheduler`, on run events): performs each event's effects
//!   ([`crate::effects`]) once the view has applied the event;
//! - [`Audits`] (`audits-scheduler`, on the quality service's audit events): an audit entry
//!   recorded for a check the scheduler asked for decides the run it checks (the run
//!   option `checks`);
//! - fired timers (`timers-scheduler`): each decided by [`Shell::fire`].

use std::sync::Arc;
use std::time::Duration;

use osp_eventlog::Recorded;
use osp_protocol::quality::{self, AuditEntry, QualityEvent};
use osp_protocol::scheduler::{RunEvent, RUN_KIND};
use osp_protocol::Timestamp;
use osp_runtime::{Reactor, TimerHandler};

use crate::commands::{checks, TimerFired};
use crate::effects::{effects_of, Effect};
use crate::shell::Shell;
use crate::view::RunRecord;

/// Run events handled at once by one instance.
const IN_FLIGHT: usize = 256;
/// How long an effect waits for the view to apply its event before it is retried.
const APPLY_WITHIN: Duration = Duration::from_secs(5);

/// The effects of run events.
pub struct RunEffects(pub Arc<Shell>);

impl Reactor for RunEffects {
    type Event = RunEvent;
    type Effect = Effect;
    const NAME: &'static str = "effects";
    const KIND: &'static str = RUN_KIND;
    const IN_FLIGHT: usize = IN_FLIGHT;

    async fn ready(&self, seq: u64) -> bool {
        self.0.runs.wait_applied(seq, APPLY_WITHIN).await.is_ok()
    }

    async fn effects_of(&self, event: &Recorded<RunEvent>) -> osp_eventlog::Result<Vec<Effect>> {
        let of_run = |record: &RunRecord| effects_of(&event.envelope, record.run());
        Ok(self.0.runs.recall(&event.envelope.aggregate, of_run).await?.unwrap_or_default())
    }

    async fn perform(&self, event: &Recorded<RunEvent>, effect: &Effect) -> osp_eventlog::Result<()> {
        self.0.perform(&event.envelope.aggregate.id, event.seq, effect.clone()).await
    }
}

/// Audit entries the scheduler asked for, deciding the runs they check.
pub struct Audits(pub Arc<Shell>);

impl Reactor for Audits {
    type Event = QualityEvent;
    /// The run the entry checks, and the entry.
    type Effect = (String, AuditEntry);
    const NAME: &'static str = "audits";
    const KIND: &'static str = quality::AUDIT_KIND;
    const IN_FLIGHT: usize = IN_FLIGHT;

    /// An audit entry decides a run only if its id is the one [`checks::audit_id`] gives
    /// the run and attempt it names; any other audit is not the scheduler's business.
    async fn effects_of(&self, event: &Recorded<QualityEvent>) -> osp_eventlog::Result<Vec<Self::Effect>> {
        let QualityEvent::AuditRecorded(recorded) = &event.envelope.payload else { return Ok(Vec::new()) };
        let entry = &recorded.entry;
        let asked_for = || {
            let run_id = entry.execution_id.clone()?;
            let attempt = entry.metadata.as_ref()?.get("attempt")?.as_u64()?;
            (checks::audit_id(&run_id, u32::try_from(attempt).ok()?).as_str() == entry.id).then_some(run_id)
        };
        Ok(asked_for().map(|run_id| (run_id, entry.clone())).into_iter().collect())
    }

    async fn perform(&self, _: &Recorded<QualityEvent>, (run_id, entry): &Self::Effect) -> osp_eventlog::Result<()> {
        self.0.checked(run_id, entry.clone()).await
    }
}

impl TimerHandler for Shell {
    async fn fire(&self, fired: &[u8], fired_at: Timestamp) -> osp_eventlog::Result<()> {
        match rmp_serde::from_slice::<TimerFired>(fired) {
            Ok(fired) => Shell::fire(self, fired, fired_at).await,
            Err(error) => {
                tracing::error!(%error, "unreadable timer; dropped");
                Ok(())
            }
        }
    }
}
