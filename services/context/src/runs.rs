//! What the context service knows of runs and agents, folded from the scheduler's and
//! the registry's events on the log (reading another service's events is allowed;
//! asking it is not): which agents work on which runs, who submitted a run and in which
//! session, which runs have ended; and the registry as an agent's system context shows it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use osp_protocol::registry::{document, EntryEvent, EntryKey, AGENTS};
use osp_protocol::scheduler::RunEvent;
use osp_protocol::Envelope;

/// The runs, as far as access to their scopes goes.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct Runs {
    runs: HashMap<String, RunFacts>,
    /// The runs each agent started an attempt of.
    by_agent: HashMap<String, BTreeSet<String>>,
}

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

impl Runs {
    /// Applies one of run `run_id`'s events.
    pub fn apply(&mut self, run_id: &str, event: &Envelope<RunEvent>) {
        match &event.payload {
            RunEvent::Submitted(submitted) => {
                let root = event
                    .correlation_id
                    .clone()
                    .or_else(|| submitted.parent.as_ref().map(|parent| parent.root.to_string()))
                    .unwrap_or_else(|| run_id.to_owned());
                let session = submitted.metadata.as_ref().and_then(|metadata| document::get(metadata, "session"));
                let facts = RunFacts {
                    root,
                    submitter: event.actor.clone(),
                    session: session.and_then(|session| session.as_str()).map(str::to_owned),
                    ended: false,
                };
                self.runs.insert(run_id.to_owned(), facts);
            }
            RunEvent::Started(started) => {
                self.by_agent.entry(started.agent.clone()).or_default().insert(run_id.to_owned());
            }
            RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_) => {
                if let Some(run) = self.runs.get_mut(run_id) {
                    run.ended = true;
                }
            }
            _ => {}
        }
    }

    /// The run's facts, if the log has its submission.
    pub fn run(&self, run_id: &str) -> Option<&RunFacts> {
        self.runs.get(run_id)
    }

    /// Whether run `run_id` has ended (its scope is archived).
    pub fn ended(&self, run_id: &str) -> bool {
        self.runs.get(run_id).is_some_and(|run| run.ended)
    }

    /// The runs `agent` works on now: those it started an attempt of, and the roots of
    /// their workflows (a workflow's steps share the root's scope), that have not ended.
    pub fn worked_on_by(&self, agent: &str) -> BTreeSet<&str> {
        let mut runs = BTreeSet::new();
        for run_id in self.by_agent.get(agent).into_iter().flatten() {
            let Some(run) = self.runs.get(run_id) else { continue };
            if !run.ended {
                runs.insert(run_id.as_str());
            }
            if self.runs.get(&run.root).is_some_and(|root| !root.ended) {
                runs.insert(run.root.as_str());
            }
        }
        runs
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
