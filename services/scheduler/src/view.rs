//! The scheduler's read model: every run's state and what queries show of it beyond
//! that ([`crate::run_view`]), folded from `osp.v1.evt.run.*`, and which runs an agent
//! holds now (what the liveness sweep watches).

use std::collections::{BTreeMap, HashMap};

use osp_eventlog::Recorded;
use osp_protocol::scheduler::queries::{Digest, ListQuery, RunPage, RunSummary, RunView, DEFAULT_LIMIT, MAX_LIMIT};
use osp_protocol::scheduler::RunEvent;
use osp_protocol::{AggregateRef, Error, Timestamp};
use osp_runtime::{Folded, Holds, Snapshot, View};

use crate::run::Run;
use crate::run_view::{run_summary, run_view, RunDetails};

/// Every run, by id.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct SchedulerView {
    runs: BTreeMap<String, RunRecord>,
    held: HashMap<String, Held>,
    last_seq: u64,
}

/// One run: its state as decisions take it, and what else queries show.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct RunRecord {
    folded: Folded<Run>,
    details: RunDetails,
}

impl RunRecord {
    fn view(&self) -> RunView {
        run_view(&self.folded.state, &self.details, self.folded.head.seq)
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
        let record = self.runs.entry(id.to_owned()).or_default();
        record.folded.apply(event);
        let run = &record.folded.state;
        record.details.apply(&event.envelope, run);
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
}

/// Saved whole: every run's folded state and details, who holds what, and how far it
/// has applied. Shape 2: a run's state apart from its query reply (shape 1 held the reply
/// inside the state).
impl Snapshot for SchedulerView {
    const NAME: &'static str = "scheduler-runs";
    const SHAPE: u32 = 2;
}

impl Holds<Run> for SchedulerView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<Run>> {
        self.runs.get(aggregate.id.as_str()).map(|record| &record.folded)
    }
}

impl SchedulerView {
    /// One run as `get` shows it.
    pub fn get(&self, run_id: &str) -> Option<RunView> {
        self.runs.get(run_id).filter(|record| record.folded.state.exists()).map(RunRecord::view)
    }

    /// A run's state.
    pub fn run(&self, run_id: &str) -> Option<&Run> {
        self.runs.get(run_id).map(|record| &record.folded.state)
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
            .map(|(_, record)| (&record.folded.state, &record.details))
            .filter(|(run, _)| !run.run_id.is_empty())
            .filter(|(run, _)| query.children || run.submission.parent.is_none())
            .filter(|(run, _)| query.status.is_none_or(|status| run.status() == status))
            .filter(|(run, _)| {
                query.capability.as_ref().is_none_or(|capability| &run.submission.capability == capability)
            });
        for (run, details) in matching {
            if runs.len() == limit as usize {
                next = runs.last().map(|last: &RunSummary| last.run_id.clone());
                break;
            }
            runs.push(run_summary(run, details));
        }
        Ok(RunPage { runs, next })
    }

    /// A hash of every run's state, in id order: equal on instances that applied the
    /// same log.
    pub fn digest(&self) -> Result<Digest, Error> {
        let mut hasher = blake3::Hasher::new();
        let mut runs = 0;
        for record in self.runs.values().filter(|record| record.folded.state.exists()) {
            let bytes = rmp_serde::to_vec_named(&record.view()).map_err(|e| Error::Encode { reason: e.to_string() })?;
            hasher.update(&(bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
            runs += 1;
        }
        Ok(Digest { digest: hasher.finalize().to_hex().to_string(), runs, applied: self.last_seq })
    }
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
