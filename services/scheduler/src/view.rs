//! The scheduler's read model: every run's state, folded from `osp.v1.evt.run.*`, and
//! which runs an agent holds now (what the liveness sweep watches).

use std::collections::{BTreeMap, HashMap};

use osp_eventlog::{Folded, Holds, Recorded, Snapshot, View};
use osp_protocol::scheduler::queries::{Digest, ListQuery, RunPage, RunSummary, RunView, DEFAULT_LIMIT, MAX_LIMIT};
use osp_protocol::scheduler::RunEvent;
use osp_protocol::{AggregateRef, Error, Timestamp};

use crate::run::Run;

/// Every run, by id.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct SchedulerView {
    runs: BTreeMap<String, Folded<Run>>,
    held: HashMap<String, Held>,
    last_seq: u64,
}

/// An attempt an agent holds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Held {
    /// The attempt.
    pub attempt: u32,
    /// The agent.
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
        let folded = self.runs.entry(id.to_owned()).or_default();
        folded.apply(event);
        let run = &folded.state;
        match run.phase.held() {
            Some((attempt, agent)) => {
                let started_at = run.attempt_view(attempt).and_then(|a| a.started_at).unwrap_or_default();
                let held = Held {
                    attempt,
                    agent: agent.to_owned(),
                    started_at,
                    heartbeat_timeout_ms: run.view.options.heartbeat_timeout_ms(),
                };
                self.held.insert(id.to_owned(), held);
            }
            None => {
                self.held.remove(id);
            }
        }
    }
}

/// Saved whole: every run's folded state, who holds what, and how far it has applied.
impl Snapshot for SchedulerView {
    const NAME: &'static str = "scheduler-runs";
    const SHAPE: u32 = 1;
}

impl Holds<Run> for SchedulerView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<Run>> {
        self.runs.get(aggregate.id.as_str())
    }
}

impl SchedulerView {
    /// One run as `get` shows it.
    pub fn get(&self, run_id: &str) -> Option<RunView> {
        self.runs.get(run_id).filter(|folded| folded.state.exists()).map(view_of)
    }

    /// A run's state.
    pub fn run(&self, run_id: &str) -> Option<&Run> {
        self.runs.get(run_id).map(|folded| &folded.state)
    }

    /// The attempts agents hold now, by run id.
    pub fn held(&self) -> impl Iterator<Item = (&String, &Held)> {
        self.held.iter()
    }

    /// Whether an agent holds an attempt of `run_id` now.
    pub fn holds(&self, run_id: &str) -> bool {
        self.held.contains_key(run_id)
    }

    /// A page of runs by id, filtered.
    pub fn list(&self, query: &ListQuery) -> Result<RunPage, Error> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(Error::Invalid { field: "limit".into(), reason: format!("must be 1 to {MAX_LIMIT}") });
        }
        let start = match &query.after {
            Some(after) => std::ops::Bound::Excluded(after.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut runs = Vec::new();
        let mut next = None;
        let matching = self
            .runs
            .range((start, std::ops::Bound::Unbounded))
            .map(|(_, folded)| &folded.state.view)
            .filter(|run| !run.run_id.is_empty())
            .filter(|run| query.children || run.parent.is_none())
            .filter(|run| query.status.is_none_or(|status| run.status() == status))
            .filter(|run| query.capability.as_ref().is_none_or(|capability| &run.capability == capability));
        for run in matching {
            if runs.len() == limit as usize {
                next = runs.last().map(|last: &RunSummary| last.run_id.clone());
                break;
            }
            runs.push(RunSummary::from(run));
        }
        Ok(RunPage { runs, next })
    }

    /// A hash of every run's state, in id order: equal on instances that applied the
    /// same log.
    pub fn digest(&self) -> Result<Digest, Error> {
        let mut hasher = blake3::Hasher::new();
        let mut runs = 0;
        for folded in self.runs.values().filter(|folded| folded.state.exists()) {
            let bytes =
                rmp_serde::to_vec_named(&view_of(folded)).map_err(|e| Error::Encode { reason: e.to_string() })?;
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
            runs += 1;
        }
        Ok(Digest { digest: hasher.finalize().to_hex().to_string(), runs, applied: self.last_seq })
    }
}

fn view_of(folded: &Folded<Run>) -> RunView {
    RunView { seq: folded.head.seq, ..folded.state.view.clone() }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use osp_eventlog::testing::envelope;
    use osp_eventlog::{Recorded, View};
    use osp_protocol::EventHash;
    use serde_json::{json, Value};

    use super::SchedulerView;
    use crate::commands::fixtures::histories;

    /// What `get` answered for each of the fixtures' histories, and the digest of the run,
    /// recorded while the run's state was still its query reply. `OSP_WRITE_REPLIES=1`
    /// records them again.
    const REPLIES: &str = "tests/data/get_replies.json";

    #[test]
    fn get_and_digest_answer_for_each_history_what_they_answered_before_the_state_was_split_from_its_view() {
        let mut replies = BTreeMap::new();
        for (name, history) in histories() {
            let mut view = SchedulerView::default();
            for (i, event) in history.into_iter().enumerate() {
                let envelope = envelope(event, i as u64 + 1);
                let stored_at = envelope.occurred_at;
                view.apply(&Recorded { seq: i as u64 + 1, stored_at, hash: EventHash([0; 32]), envelope });
            }
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
