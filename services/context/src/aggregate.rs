//! The context service's aggregates, as one Rust type: a scope's entries
//! (`osp.v1.evt.scope.<scope>`) or a scope's embeddings (`osp.v1.evt.embeddings.<scope>`).
//! One type, because one inbox and one executor serve both kinds; the subject keeps them
//! apart, so reading an entry's history never reads vectors.
//!
//! The state holds what the decisions need: the entries (values shared, so a clone of the
//! state for a decision copies no value), and of the embeddings only their ids and
//! dimension — the vectors live in the view's index ([`crate::index`]).
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use osp_protocol::context::{
    Command, ContextEvent, EmbeddingRemoved, EmbeddingsUpserted, EntryRemoved, EntrySet, Section,
    MAX_EMBEDDINGS_PER_SCOPE, MAX_ENTRIES_PER_SECTION,
};
use osp_protocol::{Envelope, Error, Timestamp};
use osp_runtime::Aggregate;

/// One aggregate's state, folded from its events.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScopeState {
    /// The entries of every section, by section and key.
    pub entries: BTreeMap<(Section, String), Stored>,
    /// The ids of the embeddings.
    pub embeddings: BTreeSet<String>,
    /// Their dimension, while there are any.
    pub dimension: Option<usize>,
}

/// An entry as stored, with its story.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stored {
    /// What was set.
    pub entry: Arc<EntrySet>,
    /// Values it has had since it was (last) created.
    pub revision: u64,
    /// When it was last set.
    pub updated_at: Timestamp,
    /// Who set it last.
    pub updated_by: String,
    /// The log sequence of the last set (filled in by the view, which knows it).
    pub seq: u64,
}

impl ScopeState {
    /// The entry `key` of `section`.
    pub fn entry(&self, section: Section, key: &str) -> Option<&Stored> {
        self.entries.get(&(section, key.to_owned()))
    }

    /// The entries of `section`, by key.
    pub fn section(&self, section: Section) -> impl Iterator<Item = (&str, &Stored)> {
        let from = (section, String::new());
        self.entries
            .range(from..)
            .take_while(move |((s, _), _)| *s == section)
            .map(|((_, key), stored)| (key.as_str(), stored))
    }
}

impl Aggregate for ScopeState {
    type Event = ContextEvent;
    type Command = Command;

    fn evolve(&mut self, event: &Envelope<ContextEvent>) {
        match &event.payload {
            ContextEvent::EntrySet(set) => {
                let key = (set.section, set.key.clone());
                let revision = self.entries.get(&key).map_or(0, |stored| stored.revision) + 1;
                let stored = Stored {
                    entry: Arc::new(set.clone()),
                    revision,
                    updated_at: event.occurred_at,
                    updated_by: event.actor.clone(),
                    seq: 0,
                };
                self.entries.insert(key, stored);
            }
            ContextEvent::EntryRemoved(removed) => {
                self.entries.remove(&(removed.section, removed.key.clone()));
            }
            ContextEvent::EmbeddingsUpserted(upserted) => {
                for embedding in &upserted.entries {
                    self.embeddings.insert(embedding.id.clone());
                    self.dimension = Some(embedding.vector.len());
                }
            }
            ContextEvent::EmbeddingRemoved(removed) => {
                self.embeddings.remove(&removed.id);
                if self.embeddings.is_empty() {
                    self.dimension = None;
                }
            }
        }
    }

    fn decide(&self, command: &Command, _now: Timestamp) -> Result<Vec<ContextEvent>, Error> {
        match command {
            Command::Set { scope, entry } => {
                let current = self.entry(entry.section, &entry.key);
                refuse_read_only(current, "set")?;
                match current {
                    Some(stored) if *stored.entry == *entry => Ok(vec![]),
                    Some(_) => Ok(vec![ContextEvent::EntrySet(entry.clone())]),
                    None if self.section(entry.section).count() >= MAX_ENTRIES_PER_SECTION => Err(Error::Invalid {
                        field: "key".into(),
                        reason: format!(
                            "{scope} holds {MAX_ENTRIES_PER_SECTION} {}s already, the most a scope holds; remove some first",
                            entry.section.noun()
                        ),
                    }),
                    None => Ok(vec![ContextEvent::EntrySet(entry.clone())]),
                }
            }
            Command::Remove { entry, .. } => {
                let current = self.entry(entry.section, &entry.key);
                refuse_read_only(current, "remove")?;
                Ok(match current {
                    Some(_) => vec![ContextEvent::EntryRemoved(EntryRemoved {
                        section: entry.section,
                        key: entry.key.clone(),
                    })],
                    None => vec![],
                })
            }
            Command::Upsert { scope, entries } => {
                let dimension = entries[0].vector.len();
                if let Some(held) = self.dimension.filter(|held| *held != dimension) {
                    return Err(Error::Invalid {
                        field: "entries[0].vector".into(),
                        reason: format!(
                            "has {dimension} dimensions; the embeddings of {scope} have {held} (one scope, one dimension)"
                        ),
                    });
                }
                let new = entries.iter().filter(|embedding| !self.embeddings.contains(&embedding.id)).count();
                if self.embeddings.len() + new > MAX_EMBEDDINGS_PER_SCOPE {
                    return Err(Error::Invalid {
                        field: "entries".into(),
                        reason: format!(
                            "{scope} would hold {} embeddings, over the {MAX_EMBEDDINGS_PER_SCOPE} a scope holds",
                            self.embeddings.len() + new
                        ),
                    });
                }
                Ok(vec![ContextEvent::EmbeddingsUpserted(EmbeddingsUpserted { entries: entries.clone() })])
            }
            Command::RemoveEmbedding { id, .. } => Ok(match self.embeddings.contains(id) {
                true => vec![ContextEvent::EmbeddingRemoved(EmbeddingRemoved { id: id.clone() })],
                false => vec![],
            }),
        }
    }
}

/// A read-only setting is never changed nor removed at runtime. The refusal says what
/// was tried in words (`cannot set setting max_tokens`), not the command's wire name.
fn refuse_read_only(current: Option<&Stored>, verb: &str) -> Result<(), Error> {
    match current {
        Some(stored) if stored.entry.read_only => Err(Error::IllegalTransition {
            command: format!("{verb} {} {}", stored.entry.section.noun(), stored.entry.key),
            state: "read-only".into(),
            reason: format!(
                "{} made it read-only, and a read-only {} is never changed nor removed at runtime",
                stored.updated_by,
                stored.entry.section.noun()
            ),
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use osp_protocol::context::{Embedding, Scope};
    use osp_runtime::testing::{fold, given};
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn entry(section: Section, key: &str, value: serde_json::Value) -> EntrySet {
        EntrySet {
            section,
            key: key.into(),
            value,
            description: None,
            read_only: false,
            target: vec![],
            sensitive: false,
            sealed: false,
        }
    }

    fn set(section: Section, key: &str, value: serde_json::Value) -> Command {
        Command::Set { scope: Scope::Global, entry: entry(section, key, value) }
    }

    fn remove(section: Section, key: &str) -> Command {
        Command::Remove { scope: Scope::Global, entry: EntryRemoved { section, key: key.into() } }
    }

    fn embedding(id: &str, vector: Vec<f32>) -> Embedding {
        Embedding { id: id.into(), content: format!("about {id}"), metadata: None, vector }
    }

    fn upsert(entries: Vec<Embedding>) -> Command {
        Command::Upsert { scope: Scope::Global, entries }
    }

    #[test]
    fn set_creates_and_replaces_and_the_same_value_changes_nothing() {
        let v1 = entry(Section::Kv, "k", json!(1));
        given::<ScopeState>([]).when(&set(Section::Kv, "k", json!(1))).then(vec![ContextEvent::EntrySet(v1.clone())]);
        let history = [ContextEvent::EntrySet(v1.clone())];
        given::<ScopeState>(history.clone()).when(&set(Section::Kv, "k", json!(1))).then(vec![]);
        let v2 = entry(Section::Kv, "k", json!({"a": 2}));
        given::<ScopeState>(history.clone())
            .when(&set(Section::Kv, "k", json!({"a": 2})))
            .then(vec![ContextEvent::EntrySet(v2.clone())]);
        let state = fold::<ScopeState>(&[ContextEvent::EntrySet(v1), ContextEvent::EntrySet(v2.clone())]);
        let stored = state.entry(Section::Kv, "k").unwrap();
        assert_eq!((stored.revision, &*stored.entry), (2, &v2));
        assert!(state.entry(Section::Env, "k").is_none(), "sections are namespaces of their own");
    }

    #[test]
    fn remove_removes_what_is_there_only() {
        let history = [ContextEvent::EntrySet(entry(Section::Kv, "k", json!(1)))];
        let removed = ContextEvent::EntryRemoved(EntryRemoved { section: Section::Kv, key: "k".into() });
        given::<ScopeState>(history.clone()).when(&remove(Section::Kv, "k")).then(vec![removed.clone()]);
        given::<ScopeState>([]).when(&remove(Section::Kv, "k")).then(vec![]);
        given::<ScopeState>(history).when(&remove(Section::Env, "k")).then(vec![]);
    }

    #[test]
    fn a_read_only_setting_is_never_changed_nor_removed() {
        let locked = EntrySet { read_only: true, ..entry(Section::Setting, "max_tokens", json!(4096)) };
        let history = [ContextEvent::EntrySet(locked.clone())];
        let error = given::<ScopeState>(history.clone())
            .when(&set(Section::Setting, "max_tokens", json!(1)))
            .then_refused("cannot set setting max_tokens: it is read-only; test made it read-only");
        assert_eq!(error.code(), "illegal_transition");
        given::<ScopeState>(history.clone())
            .when(&remove(Section::Setting, "max_tokens"))
            .then_refused("cannot remove setting max_tokens: it is read-only");
        let same = Command::Set { scope: Scope::Global, entry: locked };
        given::<ScopeState>(history).when(&same).then_refused("read-only");
        // A writable setting may be made read-only.
        let writable = [ContextEvent::EntrySet(entry(Section::Setting, "k", json!(1)))];
        let lock = EntrySet { read_only: true, ..entry(Section::Setting, "k", json!(1)) };
        given::<ScopeState>(writable)
            .when(&Command::Set { scope: Scope::Global, entry: lock.clone() })
            .then(vec![ContextEvent::EntrySet(lock)]);
    }

    #[test]
    fn embeddings_keep_one_dimension_per_scope() {
        let first = vec![embedding("a", vec![1.0, 0.0, 0.0])];
        let upserted = ContextEvent::EmbeddingsUpserted(EmbeddingsUpserted { entries: first.clone() });
        given::<ScopeState>([]).when(&upsert(first)).then(vec![upserted.clone()]);
        let error = given::<ScopeState>([upserted.clone()])
            .when(&upsert(vec![embedding("b", vec![1.0, 0.0])]))
            .then_refused("have 3");
        assert_eq!(error.field(), Some("entries[0].vector"));
        let removed = ContextEvent::EmbeddingRemoved(EmbeddingRemoved { id: "a".into() });
        let remove = Command::RemoveEmbedding { scope: Scope::Global, id: "a".into() };
        given::<ScopeState>([upserted.clone()]).when(&remove).then(vec![removed.clone()]);
        given::<ScopeState>([]).when(&remove).then(vec![]);
        // Once empty, the scope takes any dimension.
        let fresh = vec![embedding("b", vec![0.5, 0.5])];
        let events = given::<ScopeState>([upserted, removed]).when(&upsert(fresh)).events();
        assert_eq!(events.len(), 1);
    }

    /// A command of a small alphabet: a few keys, sections and vectors, so that sequences
    /// hit the same entries again and again.
    fn command() -> impl Strategy<Value = Command> {
        let key = prop::sample::select(vec!["a", "b", "c"]);
        let section = prop::sample::select(vec![Section::Kv, Section::Setting, Section::Env]);
        prop_oneof![
            (section.clone(), key.clone(), 0..3i64, any::<bool>()).prop_map(|(section, key, value, read_only)| {
                let read_only = read_only && section == Section::Setting;
                Command::Set {
                    scope: Scope::Global,
                    entry: EntrySet { read_only, ..entry(section, key, json!(value)) },
                }
            }),
            (section, key.clone()).prop_map(|(section, key)| remove(section, key)),
            (key.clone(), 1..3usize).prop_map(|(key, dimension)| upsert(vec![embedding(key, vec![1.0; dimension])])),
            key.prop_map(|key| Command::RemoveEmbedding { scope: Scope::Global, id: key.into() }),
        ]
    }

    proptest! {
        /// Event sourcing's promise: replaying what the decisions produced reaches the
        /// state the decisions were made on, step after step.
        #[test]
        fn replaying_the_decided_events_gives_the_same_state(commands in prop::collection::vec(command(), 1..40)) {
            let (mut state, mut log) = (ScopeState::default(), Vec::new());
            for command in &commands {
                if let Ok(events) = state.decide(command, osp_runtime::testing::TEST_TIME) {
                    for event in events {
                        state.evolve(&osp_runtime::testing::envelope(event.clone(), log.len() as u64 + 1));
                        log.push(event);
                    }
                }
                prop_assert_eq!(&fold::<ScopeState>(&log), &state);
                if let Some(dimension) = state.dimension {
                    prop_assert!(!state.embeddings.is_empty() && dimension >= 1);
                }
            }
        }
    }
}
