//! What the scheduler knows of agents, read from the registry's events on the log
//! (`osp.v1.evt.entry.agents:*`): which capabilities registered agents offer (a submit
//! for a capability nobody offers is refused unless it asks to wait), and which agents
//! the registry has marked offline (their attempts fail). The scheduler never asks the
//! registry: it folds the same log.

use std::collections::{BTreeMap, HashMap};

use osp_eventlog::Recorded;
use osp_protocol::registry::{document, EntryEvent, EntryKey, AGENTS};
use osp_protocol::Timestamp;
use osp_runtime::{Snapshot, View};

/// Registered agents, by name.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct AgentsView {
    agents: HashMap<String, Agent>,
    /// How many registered agents offer each capability.
    offered: BTreeMap<String, usize>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Agent {
    capabilities: Vec<String>,
    offline_since: Option<Timestamp>,
}

impl Snapshot for AgentsView {
    const NAME: &'static str = "scheduler-agents";
    const SHAPE: u32 = 1;
}

impl View for AgentsView {
    type Event = EntryEvent;

    fn apply(&mut self, event: &Recorded<EntryEvent>) {
        let Ok(key) = EntryKey::from_aggregate_id(event.envelope.aggregate.id.as_str()) else { return };
        if key.registry.as_str() != AGENTS {
            return;
        }
        let name = key.name.to_string();
        match &event.envelope.payload {
            EntryEvent::Registered(doc) | EntryEvent::Updated(doc) => {
                self.remove(&name);
                let capabilities = match document::get(&doc.resource, "capabilities") {
                    Some(rmpv::Value::Array(items)) => {
                        items.iter().filter_map(|c| c.as_str().map(str::to_owned)).collect()
                    }
                    _ => Vec::new(),
                };
                for capability in &capabilities {
                    *self.offered.entry(capability.clone()).or_default() += 1;
                }
                self.agents.insert(name, Agent { capabilities, offline_since: None });
            }
            EntryEvent::Unregistered(_) => self.remove(&name),
            EntryEvent::WentOffline(_) => {
                if let Some(agent) = self.agents.get_mut(&name) {
                    agent.offline_since = Some(event.envelope.occurred_at);
                }
            }
            EntryEvent::CameOnline(_) => {
                if let Some(agent) = self.agents.get_mut(&name) {
                    agent.offline_since = None;
                }
            }
        }
    }
}

impl AgentsView {
    fn remove(&mut self, name: &str) {
        if let Some(agent) = self.agents.remove(name) {
            for capability in agent.capabilities {
                if let Some(count) = self.offered.get_mut(&capability) {
                    *count -= 1;
                    if *count == 0 {
                        self.offered.remove(&capability);
                    }
                }
            }
        }
    }

    /// Whether a registered agent offers `capability`.
    pub fn offers(&self, capability: &str) -> bool {
        self.offered.contains_key(capability)
    }

    /// The capabilities registered agents offer, for error messages.
    pub fn capabilities(&self) -> Vec<&str> {
        self.offered.keys().map(String::as_str).collect()
    }

    /// Since when the registry counts `agent` offline, if it does.
    pub fn offline_since(&self, agent: &str) -> Option<Timestamp> {
        self.agents.get(agent).and_then(|a| a.offline_since)
    }
}
