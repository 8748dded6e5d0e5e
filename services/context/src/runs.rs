//! What the context service knows of runs and agents, folded from the scheduler's and
//! the registry's events on the log (reading another service's events is allowed;
//! asking it is not): which agents work on which runs, who submitted a run and in which
//! session, which runs have ended; and the registry as an agent's system context shows it.
//!
//! A run's facts stay in memory while it runs and for the grace period after it ended
//! ([`osp_runtime::resident`]); an access check about a run that left answers as before:
//! an ended run gives no agent anything, and whether it ended (its scope is archived) is
//! recalled from the log ([`crate::access`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use osp_eventlog::Recorded;
use osp_protocol::registry::{document, EntryEvent, EntryKey, AGENTS};
use osp_protocol::scheduler::RunEvent;
use osp_protocol::{AggregateRef, Timestamp};
use osp_runtime::{Record, Resident};

use crate::input::ContextInput;

/// The runs, as far as access to their scopes goes.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Runs {
    runs: Resident<RunRecord>,
    /// Per agent, the runs whose scopes its attempts reach it: those it started an attempt
    /// of, and their workflows' roots (a workflow's steps share the root's scope). Runs
    /// that ended are dropped as runs leave memory: they reach nobody any more.
    reach: HashMap<String, BTreeSet<String>>,
}

/// One run's facts, once the log has its submission.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct RunRecord(Option<RunFacts>);

/// One run's facts.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunFacts {
    /// The root of its workflow tree (itself for a run of its own).
    pub root: String,
    /// Who submitted it (`user:ana`; for a workflow step, the scheduler).
    pub submitter: String,
    /// The session its metadata names (`{"session": "<id>"}`), if any.
    pub session: Option<String>,
    /// Whether it ended (completed, failed or cancelled): its scope is archived.
    pub ended: bool,
}

impl RunRecord {
    /// Whether the run ended: its scope is archived.
    pub fn ended(&self) -> bool {
        self.0.as_ref().is_some_and(|facts| facts.ended)
    }

    /// Whether it runs: submitted, and not ended.
    fn running(&self) -> bool {
        self.0.as_ref().is_some_and(|facts| !facts.ended)
    }
}

impl Record for RunRecord {
    type Event = ContextInput;

    fn apply(&mut self, event: &Recorded<ContextInput>) {
        let envelope = &event.envelope;
        let ContextInput::Run(run) = &envelope.payload else { return };
        match run {
            RunEvent::Submitted(submitted) => {
                let root = envelope
                    .correlation_id
                    .clone()
                    .or_else(|| submitted.parent.as_ref().map(|parent| parent.root.to_string()))
                    .unwrap_or_else(|| envelope.aggregate.id.to_string());
                let session = submitted.metadata.as_ref().and_then(|metadata| document::get(metadata, "session"));
                self.0 = Some(RunFacts {
                    root,
                    submitter: envelope.actor.clone(),
                    session: session.and_then(|session| session.as_str()).map(str::to_owned),
                    ended: false,
                });
            }
            RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_) => {
                if let Some(facts) = &mut self.0 {
                    facts.ended = true;
                }
            }
            _ => {}
        }
    }

    fn finished(&self) -> bool {
        self.ended()
    }

    /// None: the digest is of the scopes; what it says of runs is the scheduler's.
    fn fingerprint(&self) -> Option<[u8; 32]> {
        None
    }
}

impl Runs {
    /// Applies one of a run's events; returns the run's record as it is now.
    pub fn apply(&mut self, event: &Recorded<ContextInput>) -> &RunRecord {
        let record = self.runs.apply(event);
        if let ContextInput::Run(RunEvent::Started(started)) = &event.envelope.payload {
            let root = record.0.as_ref().map(|facts| facts.root.clone());
            let reach = self.reach.entry(started.agent.clone()).or_default();
            reach.insert(event.envelope.aggregate.id.to_string());
            reach.extend(root);
        }
        record
    }

    /// `event` continues the history of a run that left memory.
    pub fn missing(&self, event: &Recorded<ContextInput>) -> bool {
        self.runs.missing(event)
    }

    /// Puts a run that left memory back, from its events before the one that was missing.
    pub fn restore(&mut self, run: &AggregateRef, earlier: &[Recorded<ContextInput>]) {
        self.runs.restore(run.id.as_str(), earlier);
    }

    /// Lets go of the runs that ended before `before`; returns how many.
    pub fn evict(&mut self, before: Timestamp) -> usize {
        let evicted = self.runs.evict(before);
        if evicted > 0 {
            let runs = &self.runs;
            self.reach.retain(|_, reach| {
                reach.retain(|run| runs.get(run).is_some_and(RunRecord::running));
                !reach.is_empty()
            });
        }
        evicted
    }

    /// The runs in memory: every one still running, and those that ended within the grace
    /// period.
    pub fn resident(&self) -> &Resident<RunRecord> {
        &self.runs
    }

    /// The facts of a run in memory, if the log has its submission.
    pub fn run(&self, run_id: &str) -> Option<&RunFacts> {
        self.runs.get(run_id).and_then(|record| record.0.as_ref())
    }

    /// Whether run `run_id` is running: submitted and not ended. A run not in memory is
    /// not: it was never submitted, or it ended and left.
    pub fn running(&self, run_id: &str) -> bool {
        self.runs.get(run_id).is_some_and(RunRecord::running)
    }

    /// The runs `agent` works on now: those it started an attempt of, and the roots of
    /// their workflows (a workflow's steps share the root's scope), that have not ended.
    pub fn worked_on_by(&self, agent: &str) -> BTreeSet<&str> {
        let reach = self.reach.get(agent).into_iter().flatten();
        reach.map(String::as_str).filter(|run| self.running(run)).collect()
    }
}

/// The registry, as an agent's system context shows it.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Registry {
    /// Entries per registry.
    counts: BTreeMap<String, u64>,
    /// The agents: their card and whether they are online.
    agents: HashMap<String, (serde_json::Value, bool)>,
}

impl Registry {
    /// Applies one of entry `aggregate_id`'s events.
    pub fn apply(&mut self, aggregate_id: &str, event: &EntryEvent) {
        let Ok(key) = EntryKey::from_aggregate_id(aggregate_id) else { return };
        let (registry, name) = (key.registry.to_string(), key.name.to_string());
        let agent = registry == AGENTS;
        match event {
            EntryEvent::Registered(doc) => {
                *self.counts.entry(registry).or_default() += 1;
                if agent {
                    self.agents.insert(name, (osp_protocol::json::from_msgpack_value(&doc.resource), true));
                }
            }
            EntryEvent::Updated(doc) if agent => {
                self.agents.insert(name, (osp_protocol::json::from_msgpack_value(&doc.resource), true));
            }
            EntryEvent::Unregistered(_) => {
                if let Some(count) = self.counts.get_mut(&registry) {
                    *count = count.saturating_sub(1);
                }
                self.agents.remove(&name);
            }
            EntryEvent::WentOffline(_) | EntryEvent::CameOnline(_) if agent => {
                if let Some((_, online)) = self.agents.get_mut(&name) {
                    *online = matches!(event, EntryEvent::CameOnline(_));
                }
            }
            _ => {}
        }
    }

    /// Entries per registry.
    pub fn counts(&self) -> &BTreeMap<String, u64> {
        &self.counts
    }

    /// The card of agent `name`, if registered.
    pub fn card(&self, name: &str) -> Option<&serde_json::Value> {
        self.agents.get(name).map(|(card, _)| card)
    }

    /// The capabilities online agents offer, with how many offer each.
    pub fn capabilities(&self) -> BTreeMap<String, u64> {
        let mut offered = BTreeMap::new();
        for (card, _) in self.agents.values().filter(|(_, online)| *online) {
            for capability in card["capabilities"].as_array().into_iter().flatten().filter_map(|c| c.as_str()) {
                *offered.entry(capability.to_owned()).or_default() += 1;
            }
        }
        offered
    }
}
