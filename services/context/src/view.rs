//! The context service's read model: every scope's entries and embeddings, and what the
//! log says of runs and of the registry, folded from `osp.v1.evt.{scope,embeddings,run,
//! entry}.*`. Every read names who asks, and answers only what that actor may read
//! ([`crate::access`]), sensitive values masked unless revealed to one allowed to see them.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use osp_eventlog::Recorded;
use osp_protocol::context::queries::{
    Digest, EmbeddingView, EntryPage, EntryView, KeyPage, PreferenceLevel, RegistryContext, ResolvedPreference,
    ScopeKeys, SearchResult, SystemContext, DEFAULT_LIMIT, MAX_LIMIT,
};
use osp_protocol::context::{agent_of, ContextEvent, Scope, Section, EMBEDDINGS_KIND, MASK, MAX_TOP_K};
use osp_protocol::{AggregateRef, Encoding, Error, Token};
use osp_runtime::{Folded, Holds, Snapshot, View};

use crate::access::{self, Access};
use crate::aggregate::{ScopeState, Stored};
use crate::index::{matches_filter, VectorIndex};
use crate::input::ContextInput;
use crate::runs::{Registry, Runs};
use crate::sealing::{self, SealKey};

/// How many keys of each scope a system context lists.
const SYSTEM_KEYS: usize = 100;

/// Who may see sensitive values in clear, besides the agents an entry's target names,
/// and the key that opens them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevealPolicy {
    /// Operators (`user:ana`, ...) allowed to reveal any sensitive value they may read.
    pub operators: Vec<String>,
    /// The seal key sensitive values are sealed with on the log.
    pub key: Option<SealKey>,
}

impl RevealPolicy {
    /// Who may see `stored`'s value in clear, and how one becomes one of them: what a
    /// refused reveal says, so the person refused knows whom to ask or what to set.
    pub fn who_may_reveal(&self, stored: &Stored) -> String {
        let agents = stored.entry.target.iter().filter(|target| agent_of(target).is_some());
        let allowed: Vec<&str> = self.operators.iter().chain(agents).map(String::as_str).collect();
        match allowed.is_empty() {
            true => "nobody may: add operators to the context service's OSP_CONTEXT_REVEAL_TO (--reveal-to of \
                     osp-context), or name an agent:<name> in the entry's target"
                .to_owned(),
            false => format!(
                "only {} may (the operators in the context service's OSP_CONTEXT_REVEAL_TO, --reveal-to of \
                 osp-context, and the agents the entry's target names)",
                allowed.join(", ")
            ),
        }
    }

    /// Whether `actor` may see `stored`'s value in clear: an operator of the list, or an
    /// agent its target names (`agent:<name>`): its own secret, to use.
    pub fn allows(&self, actor: &str, stored: &Stored) -> bool {
        match agent_of(actor) {
            Some(_) => stored.entry.target.iter().any(|target| target == actor),
            None => self.operators.iter().any(|operator| operator == actor),
        }
    }
}

/// The scopes and what the log says of runs and agents, as this instance has applied it.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct ContextView {
    /// Every aggregate seen, entries or embeddings (its head is needed to append).
    records: HashMap<AggregateRef, Folded<ScopeState>>,
    /// The embeddings of each scope, for search.
    indexes: HashMap<Scope, VectorIndex>,
    runs: Runs,
    registry: Registry,
    /// The sequence of the last event applied.
    last_seq: u64,
}

impl View for ContextView {
    type Event = ContextInput;

    fn apply(&mut self, event: &Recorded<ContextInput>) {
        self.last_seq = self.last_seq.max(event.seq);
        let envelope = &event.envelope;
        let aggregate = &envelope.aggregate;
        match &envelope.payload {
            ContextInput::Run(run) => {
                self.runs.apply(aggregate.id.as_str(), &rewrapped(envelope, run.clone()));
            }
            ContextInput::Entry(entry) => self.registry.apply(aggregate.id.as_str(), entry),
            ContextInput::Context(payload) => {
                let recorded = Recorded {
                    seq: event.seq,
                    stored_at: event.stored_at,
                    hash: event.hash,
                    envelope: rewrapped(envelope, payload.clone()),
                };
                let folded = self.records.entry(aggregate.clone()).or_default();
                folded.apply(&recorded);
                if let ContextEvent::EntrySet(set) = payload {
                    if let Some(stored) = folded.state.entries.get_mut(&(set.section, set.key.clone())) {
                        stored.seq = event.seq;
                    }
                }
                let Ok(scope) = Scope::of_aggregate(aggregate) else { return };
                match payload {
                    ContextEvent::EmbeddingsUpserted(upserted) => {
                        let index = self.indexes.entry(scope).or_default();
                        upserted.entries.iter().for_each(|embedding| index.upsert(embedding));
                    }
                    ContextEvent::EmbeddingRemoved(removed) => {
                        if let Some(index) = self.indexes.get_mut(&scope) {
                            index.remove(&removed.id);
                        }
                    }
                    ContextEvent::EntrySet(_) | ContextEvent::EntryRemoved(_) => {}
                }
            }
        }
    }
}

/// An envelope's metadata around `payload`: one of the kinds a [`ContextInput`] holds, as
/// its own type.
fn rewrapped<P, Q>(envelope: &osp_protocol::Envelope<P>, payload: Q) -> osp_protocol::Envelope<Q> {
    osp_protocol::Envelope {
        id: envelope.id,
        aggregate: envelope.aggregate.clone(),
        version: envelope.version,
        occurred_at: envelope.occurred_at,
        actor: envelope.actor.clone(),
        correlation_id: envelope.correlation_id.clone(),
        causation_id: envelope.causation_id.clone(),
        prev_hash: envelope.prev_hash,
        payload,
    }
}

/// Saved whole: every aggregate's folded state and the indexes over them.
impl Snapshot for ContextView {
    const NAME: &'static str = "context-scopes";
    const SHAPE: u32 = 1;
}

impl Holds<ScopeState> for ContextView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<ScopeState>> {
        self.records.get(aggregate)
    }
}

/// How many items a page may hold: `limit`, 1 to [`MAX_LIMIT`] ([`DEFAULT_LIMIT`] when absent).
fn page_limit(limit: Option<u32>) -> Result<usize, Error> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n as usize),
        n => Err(Error::Invalid { field: "limit".into(), reason: format!("must be 1 to {MAX_LIMIT}, not {n}") }),
    }
}

/// An entry as a reader allowed to see its value in clear sees it: a sealed value is
/// opened with the policy's key.
fn revealed_view(scope: &Scope, stored: &Stored, policy: &RevealPolicy) -> Result<EntryView, Error> {
    let mut view = entry_view(scope, stored, true);
    if stored.entry.sealed {
        let unavailable = |reason: String| Error::Unavailable { reason };
        let key = policy.key.as_ref().ok_or_else(|| {
            unavailable("this context instance has no seal key to open sensitive values (OSP_CONTEXT_SEAL_KEY)".into())
        })?;
        let sealed = stored.entry.value.as_str().unwrap_or_default();
        let value = key
            .unseal(&sealing::place(scope, &stored.entry.key), sealed)
            .map_err(|e| unavailable(format!("cannot reveal {} of {scope}: {e}", stored.entry.key)))?;
        view.value = value.into();
    }
    Ok(view)
}

/// An entry as a reader sees it: its value masked when sensitive and not `revealed`
/// (a revealed sealed value is opened by [`revealed_view`]).
pub fn entry_view(scope: &Scope, stored: &Stored, revealed: bool) -> EntryView {
    let entry = &stored.entry;
    let masked = entry.sensitive && !revealed;
    EntryView {
        scope: scope.clone(),
        section: entry.section,
        key: entry.key.clone(),
        value: if masked { MASK.into() } else { entry.value.clone() },
        description: entry.description.clone(),
        read_only: entry.read_only,
        target: entry.target.clone(),
        sensitive: entry.sensitive,
        masked,
        revision: stored.revision,
        updated_at: stored.updated_at,
        updated_by: stored.updated_by.clone(),
        seq: stored.seq,
    }
}

fn not_found(field: &str, value: &str, reason: String) -> Error {
    Error::NotFound { field: field.into(), value: value.to_owned(), reason }
}

impl ContextView {
    /// What the log says of runs.
    pub fn runs(&self) -> &Runs {
        &self.runs
    }

    /// Whether `actor` may `access` `scope`.
    pub fn check(&self, actor: &str, access: Access, scope: &Scope) -> Result<(), Error> {
        access::check(actor, access, scope, &self.runs)
    }

    /// The entries' state of `scope`, if it has any.
    pub fn scope(&self, scope: &Scope) -> Option<&ScopeState> {
        self.records.get(&scope.entries()).map(|folded| &folded.state)
    }

    /// The entry `key` of `section` in `scope`, as `actor` may read it (never revealed).
    pub fn entry(&self, actor: &str, scope: &Scope, section: Section, key: &str) -> Result<EntryView, Error> {
        self.check(actor, Access::Read, scope)?;
        let stored = self.scope(scope).and_then(|state| state.entry(section, key));
        let stored =
            stored.ok_or_else(|| not_found("key", key, format!("{scope} has no {} by that name", section.noun())))?;
        Ok(entry_view(scope, stored, false))
    }

    /// An environment entry, revealed when asked and allowed.
    pub fn env(
        &self,
        actor: &str,
        scope: &Scope,
        key: &str,
        reveal: bool,
        policy: &RevealPolicy,
    ) -> Result<EntryView, Error> {
        let view = self.entry(actor, scope, Section::Env, key)?;
        if !(reveal && view.sensitive) {
            return Ok(view);
        }
        let stored = self.scope(scope).and_then(|state| state.entry(Section::Env, key)).expect("read just now");
        match policy.allows(actor, stored) {
            true => revealed_view(scope, stored, policy),
            false => Err(Error::Forbidden {
                field: "Osp-Actor header".into(),
                value: actor.to_owned(),
                reason: format!("may not reveal {key} of {scope}: {}", policy.who_may_reveal(stored)),
            }),
        }
    }

    /// A page of `section`'s entries of `scope` (the environment entries applying to
    /// `target`), from `after`.
    pub fn entries(
        &self,
        actor: &str,
        scope: &Scope,
        section: Section,
        page: Page<'_>,
        policy: &RevealPolicy,
    ) -> Result<EntryPage, Error> {
        self.check(actor, Access::Read, scope)?;
        let limit = page_limit(page.limit)?;
        let mut out = EntryPage::default();
        let Some(state) = self.scope(scope) else { return Ok(out) };
        // The sections share one ordered map: a page starts within its own section, never
        // at the map's first entry (another section's, which would end the page at once).
        let from = match page.after {
            Some(after) => Bound::Excluded((section, after.to_owned())),
            None => Bound::Included((section, String::new())),
        };
        let entries = state.entries.range((from, Bound::Unbounded)).take_while(|((s, _), _)| *s == section);
        for ((_, key), stored) in entries {
            if page.target.is_some_and(|target| {
                !stored.entry.target.is_empty() && !stored.entry.target.iter().any(|t| t == target)
            }) {
                continue;
            }
            if out.entries.len() == limit {
                out.next = out.entries.last().map(|entry| entry.key.clone());
                break;
            }
            debug_assert_eq!(key, &stored.entry.key);
            let revealed = match page.reveal && policy.allows(actor, stored) {
                true => revealed_view(scope, stored, policy)?,
                false => entry_view(scope, stored, false),
            };
            out.entries.push(revealed);
        }
        Ok(out)
    }

    /// A page of `scope`'s key-value keys starting with `prefix`, from `after`.
    pub fn keys(
        &self,
        actor: &str,
        scope: &Scope,
        prefix: &str,
        after: Option<&str>,
        limit: Option<u32>,
    ) -> Result<KeyPage, Error> {
        self.check(actor, Access::Read, scope)?;
        let limit = page_limit(limit)?;
        let mut page = KeyPage::default();
        let Some(state) = self.scope(scope) else { return Ok(page) };
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded((Section::Kv, after.to_owned())),
            _ => Bound::Included((Section::Kv, prefix.to_owned())),
        };
        for ((section, key), _) in state.entries.range((start, Bound::Unbounded)) {
            if *section != Section::Kv || !key.starts_with(prefix) {
                break;
            }
            if page.keys.len() == limit {
                page.next = page.keys.last().cloned();
                break;
            }
            page.keys.push(key.clone());
        }
        Ok(page)
    }

    /// The preference `key` as it applies: `agent`'s, else `user`'s, else the setting.
    pub fn preference(
        &self,
        actor: &str,
        key: &str,
        agent: Option<&Token>,
        user: Option<&Token>,
    ) -> Result<ResolvedPreference, Error> {
        let levels = [
            (PreferenceLevel::Agent, agent.map(|name| Scope::of("agent", name.as_str())).transpose()?),
            (PreferenceLevel::User, user.map(|name| Scope::of("user", name.as_str())).transpose()?),
        ];
        for (level, scope) in levels {
            let Some(scope) = scope else { continue };
            self.check(actor, Access::Read, &scope)?;
            if let Some(stored) = self.scope(&scope).and_then(|state| state.entry(Section::Preference, key)) {
                return Ok(ResolvedPreference { level, entry: entry_view(&scope, stored, false) });
            }
        }
        let setting = self.scope(&Scope::Global).and_then(|state| state.entry(Section::Setting, key));
        match setting {
            Some(stored) => Ok(ResolvedPreference {
                level: PreferenceLevel::System,
                entry: entry_view(&Scope::Global, stored, false),
            }),
            None => Err(not_found("key", key, "no preference of the agent or the user has it, and no setting".into())),
        }
    }

    /// An embedding of `scope`.
    pub fn embedding(&self, actor: &str, scope: &Scope, id: &str) -> Result<EmbeddingView, Error> {
        self.check(actor, Access::Read, scope)?;
        let (item, vector) = self
            .indexes
            .get(scope)
            .and_then(|index| index.get(id))
            .ok_or_else(|| not_found("id", id, format!("{scope} has no embedding by that id")))?;
        Ok(EmbeddingView {
            id: item.id.clone(),
            content: item.content.clone(),
            metadata: item.metadata.clone(),
            vector: vector.to_vec(),
        })
    }

    /// The `top_k` embeddings of `scope` closest to `vector`, among those whose metadata
    /// has every field of `filter`.
    pub fn search(
        &self,
        actor: &str,
        scope: &Scope,
        vector: &[f32],
        top_k: u32,
        filter: Option<&serde_json::Value>,
    ) -> Result<SearchResult, Error> {
        self.check(actor, Access::Read, scope)?;
        if top_k == 0 || top_k > MAX_TOP_K {
            return Err(Error::Invalid {
                field: "top_k".into(),
                reason: format!("must be 1 to {MAX_TOP_K}, not {top_k}"),
            });
        }
        let filter = match filter {
            None => None,
            Some(serde_json::Value::Object(filter)) => Some(filter),
            Some(other) => {
                return Err(Error::Invalid {
                    field: "filter".into(),
                    reason: format!("must be an object of metadata fields, not {}", osp_protocol::json::kind_of(other)),
                })
            }
        };
        let Some(index) = self.indexes.get(scope).filter(|index| !index.is_empty()) else {
            return Ok(SearchResult::default());
        };
        if vector.len() != index.dimension() {
            return Err(Error::Invalid {
                field: "vector".into(),
                reason: format!(
                    "has {} dimensions; the embeddings of {scope} have {}",
                    vector.len(),
                    index.dimension()
                ),
            });
        }
        let (matches, compared) = index.search(vector, top_k as usize, |item| {
            filter.is_none_or(|filter| matches_filter(item.metadata.as_ref(), filter))
        });
        Ok(SearchResult { matches, compared, embedded_by: None })
    }

    /// What agent `agent` may see, in one answer (environment values masked).
    pub fn system(&self, actor: &str, agent: &Token) -> Result<SystemContext, Error> {
        let own = Scope::of("agent", agent.as_str())?;
        self.check(actor, Access::Read, &own)?;
        let as_agent = format!("agent:{agent}");
        let runs = self.runs.worked_on_by(agent.as_str());
        let mut readable = vec![Scope::Global, own];
        let mut users = Vec::new();
        // A run, session or user whose name is too long for a scope has none: skipped.
        for run_id in &runs {
            readable.extend(Scope::of("run", run_id).ok());
            let Some(facts) = self.runs.run(run_id) else { continue };
            if let Some(session) = &facts.session {
                readable.extend(Scope::of("session", session).ok());
            }
            let user =
                facts.submitter.strip_prefix("user:").and_then(|user| Some((Token::new("user", user).ok()?, user)));
            if let Some((token, user)) = user.filter(|(token, _)| !users.contains(token)) {
                readable.extend(Scope::of("user", user).ok());
                users.push(token);
            }
        }
        readable.sort();
        readable.dedup();
        let settings = self
            .scope(&Scope::Global)
            .map(|state| {
                state.section(Section::Setting).map(|(_, stored)| entry_view(&Scope::Global, stored, false)).collect()
            })
            .unwrap_or_default();
        // Preferences: every key the agent's, its users' and the settings have, resolved.
        let mut keys: Vec<&str> = Vec::new();
        for scope in readable.iter().filter(|scope| matches!(scope, Scope::Agent(_) | Scope::User(_))) {
            keys.extend(
                self.scope(scope).into_iter().flat_map(|state| state.section(Section::Preference).map(|(key, _)| key)),
            );
        }
        let mut preferences = BTreeMap::new();
        for key in keys {
            let resolved = self.preference(&as_agent, key, Some(agent), users.first())?;
            preferences.insert(key.to_owned(), resolved);
        }
        let mut env = Vec::new();
        let mut scopes = Vec::new();
        for scope in &readable {
            let state = self.scope(scope);
            for (_, stored) in state.into_iter().flat_map(|state| state.section(Section::Env)) {
                let target = &stored.entry.target;
                if target.is_empty() || target.iter().any(|t| t == &as_agent) {
                    env.push(entry_view(scope, stored, false));
                }
            }
            let keys: Vec<String> =
                state.into_iter().flat_map(|state| state.section(Section::Kv)).map(|(key, _)| key.to_owned()).collect();
            scopes.push(ScopeKeys {
                scope: scope.clone(),
                writable: access::check(&as_agent, Access::Write, scope, &self.runs).is_ok(),
                total: keys.len() as u64,
                keys: keys.into_iter().take(SYSTEM_KEYS).collect(),
            });
        }
        let registry = RegistryContext {
            card: self.registry.card(agent.as_str()).cloned(),
            registries: self.registry.counts().clone(),
            capabilities: self.registry.capabilities(),
        };
        Ok(SystemContext { agent: agent.to_string(), settings, preferences, env, registry, scopes })
    }

    /// A fingerprint of every scope's entries and embeddings, the same on every instance
    /// that has applied the same log.
    pub fn digest(&self) -> Result<Digest, Error> {
        let mut aggregates: Vec<_> = self.records.iter().collect();
        aggregates.sort_by(|a, b| a.0.cmp(b.0));
        let mut hasher = blake3::Hasher::new();
        let (mut entries, mut embeddings) = (0, 0);
        for (aggregate, folded) in aggregates {
            let head = (aggregate.to_string(), folded.head.seq, folded.head.version, folded.head.hash.map(|h| h.0));
            hasher.update(&Encoding::MessagePack.encode(&head)?);
            for stored in folded.state.entries.values() {
                let entry = (&*stored.entry, stored.revision, stored.updated_at, &stored.updated_by, stored.seq);
                hasher.update(&Encoding::MessagePack.encode(&entry)?);
                entries += 1;
            }
            if aggregate.kind.as_str() == EMBEDDINGS_KIND {
                let Some(index) = Scope::of_aggregate(aggregate).ok().and_then(|scope| self.indexes.get(&scope)) else {
                    continue;
                };
                for (item, vector) in index.slots() {
                    hasher.update(&Encoding::MessagePack.encode(&(&item.id, &item.content, &item.metadata, vector))?);
                    embeddings += 1;
                }
            }
        }
        Ok(Digest {
            digest: hasher.finalize().to_hex().to_string(),
            scopes: self.records.len() as u64,
            entries,
            embeddings,
            applied: self.last_seq,
        })
    }
}

/// Which entries of a section a page holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Page<'a> {
    /// Start after this key.
    pub after: Option<&'a str>,
    /// At most this many.
    pub limit: Option<u32>,
    /// Environment entries applying there only (no target, or a target naming it).
    pub target: Option<&'a str>,
    /// Show sensitive values to a reader allowed to see them.
    pub reveal: bool,
}

#[cfg(test)]
mod tests {
    use osp_protocol::context::EntrySet;
    use osp_protocol::EventHash;
    use osp_runtime::testing::envelope;
    use serde_json::json;

    use super::*;

    /// A view that has applied `entries` to the global scope, in order.
    fn global_with(entries: &[(Section, &str)]) -> ContextView {
        let mut view = ContextView::default();
        for (i, (section, key)) in entries.iter().enumerate() {
            let set = EntrySet {
                section: *section,
                key: (*key).into(),
                value: json!(i),
                description: None,
                read_only: false,
                target: vec![],
                sensitive: false,
                sealed: false,
            };
            let version = i as u64 + 1;
            let mut envelope = envelope(ContextInput::Context(ContextEvent::EntrySet(set)), version);
            envelope.aggregate = Scope::Global.entries();
            view.apply(&Recorded { seq: version, stored_at: envelope.occurred_at, hash: EventHash([0; 32]), envelope });
        }
        view
    }

    fn keys(page: &EntryPage) -> Vec<&str> {
        page.entries.iter().map(|entry| entry.key.as_str()).collect()
    }

    #[test]
    fn a_refused_reveal_says_who_may_and_how_to_become_one() {
        let secret = |target: &[&str]| Stored {
            entry: std::sync::Arc::new(EntrySet {
                section: Section::Env,
                key: "API_KEY".into(),
                value: json!("sealed"),
                description: None,
                read_only: false,
                target: target.iter().map(|t| (*t).to_owned()).collect(),
                sensitive: true,
                sealed: true,
            }),
            revision: 1,
            updated_at: osp_protocol::Timestamp(0),
            updated_by: "user:ana".into(),
            seq: 1,
        };
        let nobody = RevealPolicy::default().who_may_reveal(&secret(&["prod"]));
        assert!(
            nobody.starts_with("nobody may: add operators to the context service's OSP_CONTEXT_REVEAL_TO"),
            "{nobody}"
        );
        let policy = RevealPolicy { operators: vec!["user:ops".into()], key: None };
        let some = policy.who_may_reveal(&secret(&["prod", "agent:a1"]));
        assert!(
            some.starts_with(
                "only user:ops, agent:a1 may (the operators in the context service's OSP_CONTEXT_REVEAL_TO"
            ),
            "{some}"
        );
    }

    #[test]
    fn each_section_lists_its_own_entries_whatever_the_others_hold() {
        let view = global_with(&[
            (Section::Kv, "a"),
            (Section::Env, "HOME"),
            (Section::Setting, "max_tokens"),
            (Section::Kv, "b"),
            (Section::Setting, "model"),
            (Section::Env, "PATH"),
        ]);
        let policy = RevealPolicy::default();
        let list = |section, page| view.entries("user:ana", &Scope::Global, section, page, &policy).unwrap();
        assert_eq!(keys(&list(Section::Setting, Page::default())), ["max_tokens", "model"]);
        assert_eq!(keys(&list(Section::Env, Page::default())), ["HOME", "PATH"]);
        assert!(list(Section::Preference, Page::default()).entries.is_empty());
        let first = list(Section::Setting, Page { limit: Some(1), ..Page::default() });
        assert_eq!((keys(&first), first.next.as_deref()), (vec!["max_tokens"], Some("max_tokens")));
        let rest = list(Section::Setting, Page { after: first.next.as_deref(), ..Page::default() });
        assert_eq!((keys(&rest), rest.next.as_deref()), (vec!["model"], None));
        assert_eq!(view.keys("user:ana", &Scope::Global, "", None, None).unwrap().keys, ["a", "b"]);
    }
}
