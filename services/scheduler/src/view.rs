//! The scheduler's read model: the state of every run in hand, and what queries show of it
//! beyond that ([`crate::run_view`]), folded from `osp.v1.evt.run.*`, and which runs an
//! agent holds now (what the liveness sweep watches).
//!
//! A run that ended leaves memory after the grace period ([`osp_runtime::resident`]):
//! `get` recalls it from the log, `list` reads the listing index ([`crate::listing`]).

use std::collections::{BTreeMap, HashMap};

use osp_eventlog::Recorded;
use osp_protocol::scheduler::queries::{Digest, RunSummary, RunView};
use osp_protocol::scheduler::RunEvent;
use osp_protocol::{AggregateRef, Error, Partitions, Timestamp};
use osp_runtime::ownership::Share;
use osp_runtime::resident::fingerprint;
use osp_runtime::{Fingerprints, Folded, Holds, Indexed, Keeps, Part, Partitioned, Record, Resident, Snapshot, View};

use crate::run::Run;
use crate::run_view::{run_summary, run_view, RunDetails};

/// The runs in hand, by id, and who holds what.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct SchedulerView {
    runs: Resident<RunRecord>,
    held: HashMap<String, Held>,
    last_seq: u64,
}

/// One run: its state as decisions take it, and what else queries show.
#[derive(Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunRecord {
    folded: Folded<Run>,
    details: RunDetails,
}

impl RunRecord {
    /// What `get` shows of it, if it was submitted.
    pub fn view(&self) -> Option<RunView> {
        self.folded.state.exists().then(|| run_view(&self.folded.state, &self.details, self.folded.head.seq))
    }

    /// Its state.
    pub fn run(&self) -> &Run {
        &self.folded.state
    }

    /// What `list` shows of it, if it was submitted.
    fn summary(&self) -> Option<RunSummary> {
        let run = &self.folded.state;
        (!run.run_id.is_empty()).then(|| run_summary(run, &self.details))
    }
}

impl Record for RunRecord {
    type Event = RunEvent;

    fn apply(&mut self, event: &Recorded<RunEvent>) {
        self.folded.apply(event);
        self.details.apply(&event.envelope, &self.folded.state);
    }

    fn finished(&self) -> bool {
        self.folded.state.ended()
    }

    fn fingerprint(&self) -> Option<[u8; 32]> {
        let view = self.view()?;
        // Encoding a reply cannot fail (strings, numbers, JSON values); should it ever,
        // the run still counts, with nothing of it hashed.
        Some(fingerprint(&rmp_serde::to_vec_named(&view).unwrap_or_default()))
    }
}

/// An attempt an agent holds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    /// Its number; a heartbeat naming another attempt does not keep this one alive.
    pub attempt: u32,
    /// The agent that started it: its going offline after `started_at` fails the attempt.
    pub agent: String,
    /// When it started the attempt.
    pub started_at: Timestamp,
    /// The run's heartbeat timeout.
    pub heartbeat_timeout_ms: u64,
}

impl View for SchedulerView {
    type Event = RunEvent;

    fn apply(&mut self, event: &Recorded<RunEvent>) {
        self.last_seq = self.last_seq.max(event.seq);
        let id = event.envelope.aggregate.id.as_str();
        let run = &self.runs.apply(event).folded.state;
        match run.phase.held() {
            Some((attempt, agent)) => {
                let started_at = run.nth_attempt(attempt).and_then(|a| a.started_at).unwrap_or_default();
                let held = Held {
                    attempt,
                    agent: agent.to_owned(),
                    started_at,
                    heartbeat_timeout_ms: run.submission.options.heartbeat_timeout_ms(),
                };
                self.held.insert(id.to_owned(), held);
            }
            None => {
                self.held.remove(id);
            }
        }
    }

    fn missing(&self, event: &Recorded<RunEvent>) -> bool {
        self.runs.missing(event)
    }

    fn restore(&mut self, aggregate: &AggregateRef, earlier: &[Recorded<RunEvent>]) {
        self.runs.restore(aggregate.id.as_str(), earlier);
    }

    fn evict(&mut self, finished_before: Timestamp) -> usize {
        self.runs.evict(finished_before)
    }

    fn share(&mut self, partitions: Partitions) {
        self.runs.share(partitions);
    }

    fn forget(&mut self, moved: &Share) {
        self.runs.forget(moved);
        self.held.retain(|id, _| !moved.contains_id(id));
    }

    /// Tagged by status, and as a root run (not a workflow's step) by status too: what
    /// `list` filters by, whether it shows steps or not.
    fn indexed(&self, aggregate: &AggregateRef) -> Option<(String, Indexed)> {
        let id = aggregate.id.as_str();
        let summary = self.runs.get(id)?.summary()?;
        let status = summary.status;
        let mut tags = vec![format!("status:{status}")];
        if summary.parent.is_none() {
            tags.extend([ROOT.to_owned(), format!("root-status:{status}")]);
        }
        let summary = rmp_serde::to_vec_named(&summary).ok()?;
        Some((id.to_owned(), Indexed::new(tags, summary)))
    }
}

/// The tag of runs that are not a workflow's step.
pub(crate) const ROOT: &str = "root";

/// Saved: the runs in hand (their folded state and details), the digest of those that left
/// memory (per partition), who holds what, and how far it has applied. Shape 4: the
/// digest of runs out of memory kept per partition (shape 3 as one; shape 2 held every
/// run).
impl Snapshot for SchedulerView {
    const NAME: &'static str = "scheduler-runs";
    const SHAPE: u32 = 4;
}

/// Saved a partition at a time when the instances share the runs out (`--partitions`).
impl Partitioned for SchedulerView {
    fn part(&self, share: &Share) -> SchedulerView {
        SchedulerView {
            runs: self.runs.part(share),
            held: self
                .held
                .iter()
                .filter(|(id, _)| share.contains_id(id))
                .map(|(id, h)| (id.clone(), h.clone()))
                .collect(),
            last_seq: self.last_seq,
        }
    }

    fn absorb(&mut self, part: SchedulerView) {
        self.runs.absorb(part.runs);
        self.held.extend(part.held);
        self.last_seq = self.last_seq.max(part.last_seq);
    }
}

impl Holds<Run> for SchedulerView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<Run>> {
        self.runs.get(aggregate.id.as_str()).map(|record| &record.folded)
    }
}

impl Keeps<RunRecord> for SchedulerView {
    fn resident(&self) -> &Resident<RunRecord> {
        &self.runs
    }
}

impl SchedulerView {
    /// One run in hand as `get` shows it (one that left memory is recalled from the log
    /// by the query, [`osp_runtime::Projection::recall`]).
    pub fn get(&self, run_id: &str) -> Option<RunView> {
        self.runs.get(run_id).and_then(RunRecord::view)
    }

    /// A run's state, if it is in hand.
    pub fn run(&self, run_id: &str) -> Option<&Run> {
        self.runs.get(run_id).map(|record| &record.folded.state)
    }

    /// How many runs are in hand.
    pub fn resident(&self) -> usize {
        self.runs.len()
    }

    /// The attempts agents hold now, by run id.
    pub fn held(&self) -> impl Iterator<Item = (&String, &Held)> {
        self.held.iter()
    }

    /// Whether an agent holds an attempt of `run_id` now.
    pub fn holds(&self, run_id: &str) -> bool {
        self.held.contains_key(run_id)
    }

    /// A hash of every run's state (those in hand and those that left memory): equal on
    /// instances that applied the same log.
    pub fn digest(&self) -> Result<Digest, Error> {
        let all = self.runs.digest();
        Ok(Digest { digest: all.hex(), runs: all.count(), applied: self.last_seq })
    }

    /// [`digest`](Self::digest) per partition of `share`: this instance's part of the
    /// digest when it holds a share ([`osp_runtime::gather`]).
    pub fn digest_part(&self, share: &Share) -> DigestPart {
        let mut parts = self.runs.digests();
        parts.retain(|partition, _| share.contains(*partition));
        DigestPart { parts, last_seq: self.last_seq }
    }
}

/// One instance's part of the digest.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct DigestPart {
    parts: BTreeMap<u32, Fingerprints>,
    /// The last run event its view applied.
    last_seq: u64,
}

/// The digest of every run, from the parts: each taken for its share of the partitions.
pub fn merge_digests(parts: Vec<Part<DigestPart>>) -> Digest {
    let (mut all, mut applied) = (Fingerprints::default(), 0);
    for Part { value, share, .. } in parts {
        applied = applied.max(value.last_seq);
        for (_, fingerprints) in value.parts.into_iter().filter(|(partition, _)| share.contains(*partition)) {
            all = all.and(fingerprints);
        }
    }
    Digest { digest: all.hex(), runs: all.count(), applied }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde_json::{json, Value};

    use crate::commands::fixtures::{histories, scheduler_view};

    /// What `get` answered for each of the fixtures' histories, and the digest of the run,
    /// recorded while the run's state was still its query reply. `OSP_WRITE_REPLIES=1`
    /// records them again.
    const REPLIES: &str = "tests/data/get_replies.json";

    #[test]
    fn get_and_digest_answer_for_each_history_what_they_answered_before_the_state_was_split_from_its_view() {
        let mut replies = BTreeMap::new();
        for (name, history) in histories() {
            let view = scheduler_view(&history);
            let reply = view.get("test").unwrap_or_else(|| panic!("{name}: no run"));
            replies.insert(name.to_owned(), json!({"reply": reply, "digest": view.digest().unwrap().digest}));
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(REPLIES);
        if std::env::var_os("OSP_WRITE_REPLIES").is_some() {
            std::fs::write(&path, serde_json::to_string_pretty(&replies).unwrap() + "\n").unwrap();
            return;
        }
        let before: BTreeMap<String, Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(replies.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
        for (name, reply) in &replies {
            assert_eq!(reply, &before[name], "{name}");
        }
    }
}
