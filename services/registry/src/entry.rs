//! A registry entry as an aggregate: what may happen to it (`decide`) and what each
//! event does to it (`evolve`). Pure: no I/O, no clock.

use osp_protocol::registry::{
    CameOnline, Command, EntryDoc, EntryEvent, Status, Unregister, Unregistered, WentOffline,
};
use osp_protocol::{Envelope, Error, Timestamp};
use osp_runtime::Aggregate;

/// One entry's state, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Its content while registered; `None` before the first registration and after
    /// an unregister.
    pub doc: Option<EntryDoc>,
    /// For agents: whether it is online (always true for other registries while registered).
    pub online: bool,
    /// Registrations and updates since it was last added.
    pub revision: u64,
    /// When it was last added.
    pub registered_at: Timestamp,
    /// When its content last changed.
    pub updated_at: Timestamp,
    /// Since when it counts as alive: its last registration, update or return online.
    pub online_since: Timestamp,
}

/// What may be asked of an entry: a client's command, or the liveness decisions the
/// registry takes itself.
#[derive(Clone, Debug, PartialEq)]
pub enum EntryCommand {
    /// Add it, or replace its content.
    Register(EntryDoc),
    /// Remove it.
    Unregister(Unregister),
    /// An agent's heartbeats stopped, judged on the state where it counts as alive
    /// `since` then: if it has come back (or re-registered) since, nothing happens.
    MarkOffline {
        /// The agent's `online_since` the judgement was made on.
        since: Timestamp,
        /// What is recorded.
        offline: WentOffline,
    },
    /// An offline agent's heartbeats came back.
    MarkOnline,
}

impl From<Command> for EntryCommand {
    fn from(command: Command) -> EntryCommand {
        match command {
            Command::Register(doc) => EntryCommand::Register(doc),
            Command::Unregister(unregister) => EntryCommand::Unregister(unregister),
        }
    }
}

impl Entry {
    /// Whether it is there (registered and not since removed).
    pub fn is_registered(&self) -> bool {
        self.doc.is_some()
    }

    /// True for an agent entry.
    pub fn is_agent(&self) -> bool {
        self.doc.as_ref().is_some_and(|doc| doc.registry.is_agents())
    }

    /// How a query shows its liveness.
    pub fn status(&self) -> Status {
        match (self.is_agent(), self.online) {
            (false, _) => Status::Registered,
            (true, true) => Status::Online,
            (true, false) => Status::Offline,
        }
    }
}

impl Aggregate for Entry {
    type Event = EntryEvent;
    type Command = EntryCommand;

    fn evolve(&mut self, event: &Envelope<EntryEvent>) {
        let at = event.occurred_at;
        match &event.payload {
            EntryEvent::Registered(doc) => {
                *self = Entry {
                    doc: Some(doc.clone()),
                    online: true,
                    revision: 1,
                    registered_at: at,
                    updated_at: at,
                    online_since: at,
                };
            }
            EntryEvent::Updated(doc) => {
                if self.doc.is_none() {
                    self.registered_at = at;
                }
                self.doc = Some(doc.clone());
                self.online = true;
                self.revision += 1;
                self.updated_at = at;
                self.online_since = at;
            }
            EntryEvent::Unregistered(_) => {
                self.doc = None;
                self.online = false;
                self.revision = 0;
            }
            EntryEvent::WentOffline(_) => self.online = false,
            EntryEvent::CameOnline(_) => {
                self.online = true;
                self.online_since = at;
            }
        }
    }

    fn decide(&self, command: &EntryCommand, _now: Timestamp) -> Result<Vec<EntryEvent>, Error> {
        Ok(match command {
            EntryCommand::Register(doc) if self.is_registered() => vec![EntryEvent::Updated(doc.clone())],
            EntryCommand::Register(doc) => vec![EntryEvent::Registered(doc.clone())],
            EntryCommand::Unregister(unregister) if self.is_registered() => {
                vec![EntryEvent::Unregistered(Unregistered { reason: unregister.reason.clone() })]
            }
            EntryCommand::Unregister(unregister) => {
                return Err(Error::NotFound {
                    field: "name".into(),
                    value: unregister.name.to_string(),
                    reason: format!("registry {:?} has no entry by that name", unregister.registry.as_str()),
                })
            }
            EntryCommand::MarkOffline { since, offline }
                if self.is_agent() && self.online && self.online_since == *since =>
            {
                vec![EntryEvent::WentOffline(offline.clone())]
            }
            EntryCommand::MarkOnline if self.is_agent() && !self.online => vec![EntryEvent::CameOnline(CameOnline {})],
            // Liveness of anything else, a transition already made, or a judgement the
            // state has moved past: nothing to do.
            EntryCommand::MarkOffline { .. } | EntryCommand::MarkOnline => vec![],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::registry::document::from_json;
    use osp_runtime::testing::given;
    use serde_json::json;

    fn doc(registry: &str, name: &str, capabilities: &[&str]) -> EntryDoc {
        EntryDoc::new(registry, name, "d".into(), from_json(&json!({ "capabilities": capabilities })), None).unwrap()
    }

    fn registered(registry: &str) -> EntryEvent {
        EntryEvent::Registered(doc(registry, "a1", &["summarize"]))
    }

    fn unregister() -> EntryCommand {
        EntryCommand::Unregister(Unregister::new("agents", "a1", Some("bye".into())).unwrap())
    }

    /// Offline, judged on an agent registered by the first test event.
    fn offline() -> EntryCommand {
        offline_since(osp_runtime::testing::envelope((), 1).occurred_at)
    }

    fn offline_since(since: Timestamp) -> EntryCommand {
        EntryCommand::MarkOffline { since, offline: WentOffline { silent_for_ms: 16_000, timeout_ms: 15_000 } }
    }

    fn went_offline() -> EntryEvent {
        EntryEvent::WentOffline(WentOffline { silent_for_ms: 16_000, timeout_ms: 15_000 })
    }

    #[test]
    fn register_adds_then_updates() {
        let v1 = doc("agents", "a1", &["summarize"]);
        let v2 = doc("agents", "a1", &["summarize", "translate"]);
        given::<Entry>([]).when(&EntryCommand::Register(v1.clone())).then(vec![EntryEvent::Registered(v1.clone())]);
        given::<Entry>([EntryEvent::Registered(v1.clone())])
            .when(&EntryCommand::Register(v2.clone()))
            .then(vec![EntryEvent::Updated(v2.clone())]);
        let state = given::<Entry>([EntryEvent::Registered(v1), EntryEvent::Updated(v2.clone())]).state().clone();
        assert_eq!((state.revision, state.status(), state.doc), (2, Status::Online, Some(v2)));
    }

    #[test]
    fn unregister_removes_a_registered_entry_and_refuses_an_unknown_one() {
        given::<Entry>([registered("agents")])
            .when(&unregister())
            .then(vec![EntryEvent::Unregistered(Unregistered { reason: Some("bye".into()) })]);
        let error = given::<Entry>([]).when(&unregister()).then_refused("name \"a1\" not found");
        assert_eq!(error.field(), Some("name"));
        given::<Entry>([registered("agents"), EntryEvent::Unregistered(Unregistered { reason: None })])
            .when(&unregister())
            .then_refused("registry \"agents\" has no entry by that name");
    }

    #[test]
    fn an_agent_goes_offline_once_and_comes_back_once() {
        given::<Entry>([registered("agents")]).when(&offline()).then(vec![went_offline()]);
        given::<Entry>([registered("agents"), went_offline()]).when(&offline()).then(vec![]);
        given::<Entry>([registered("agents"), went_offline()])
            .when(&EntryCommand::MarkOnline)
            .then(vec![EntryEvent::CameOnline(CameOnline {})]);
        given::<Entry>([registered("agents")]).when(&EntryCommand::MarkOnline).then(vec![]);
        let state = given::<Entry>([registered("agents"), went_offline()]).state().clone();
        assert_eq!(state.status(), Status::Offline);
    }

    #[test]
    fn an_offline_judgement_the_state_has_moved_past_changes_nothing() {
        // Judged silent as registered at the first event; it re-registered since.
        let updated = EntryEvent::Updated(doc("agents", "a1", &["summarize"]));
        given::<Entry>([registered("agents"), updated]).when(&offline()).then(vec![]);
        // Judged on the re-registration itself: now it may go.
        let since = osp_runtime::testing::envelope((), 2).occurred_at;
        given::<Entry>([registered("agents"), EntryEvent::Updated(doc("agents", "a1", &[]))])
            .when(&offline_since(since))
            .then(vec![went_offline()]);
    }

    #[test]
    fn re_registering_an_offline_agent_brings_it_back() {
        let state =
            given::<Entry>([registered("agents"), went_offline(), EntryEvent::Updated(doc("agents", "a1", &[]))])
                .state()
                .clone();
        assert_eq!((state.status(), state.revision), (Status::Online, 2));
    }

    #[test]
    fn liveness_means_nothing_outside_agents_or_for_absent_entries() {
        given::<Entry>([registered("tools")]).when(&offline()).then(vec![]);
        given::<Entry>([registered("tools")]).when(&EntryCommand::MarkOnline).then(vec![]);
        given::<Entry>([]).when(&offline()).then(vec![]);
        given::<Entry>([registered("agents"), EntryEvent::Unregistered(Unregistered { reason: None })])
            .when(&EntryCommand::MarkOnline)
            .then(vec![]);
        assert_eq!(given::<Entry>([registered("tools")]).state().status(), Status::Registered);
    }
}
