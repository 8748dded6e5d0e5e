//! The context service's read model: every scope's entries and embeddings, and what the
//! log says of runs and of the registry, folded from `osp.v1.evt.{scope,embeddings,run,
//! entry}.*`. Every read names who asks, and answers only what that actor may read
//! ([`crate::access`]), sensitive values masked unless revealed to one allowed to see them.
//!
//! A run's facts and its scope leave memory after the run ended and the grace period
//! ([`osp_runtime::resident`], [`crate::scopes`]): a query of the scope then recalls it
//! from the log. Every other scope stays.

use std::collections::BTreeMap;

use osp_eventlog::Recorded;
use osp_protocol::context::queries::{
    Digest, EntryView, PreferenceLevel, RegistryContext, ResolvedPreference, ScopeKeys, SystemContext,
};
use osp_protocol::context::{agent_of, Scope, Section, EMBEDDINGS_KIND, MASK, SCOPE_KIND};
use osp_protocol::scheduler::RUN_KIND;
use osp_protocol::{AggregateRef, Error, Timestamp, Token};
use osp_runtime::{Folded, Holds, Keeps, Resident, Snapshot, View};

use crate::access::{self, Access};
use crate::aggregate::{ScopeState, Stored};
use crate::input::ContextInput;
use crate::reads::not_found;
use crate::runs::{Registry, RunRecord, Runs};
use crate::scopes::{Embeddings, Entries, ScopeRecord};
use crate::sealing::SealKey;

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
    /// The scopes' entries (an aggregate's head is needed to append).
    entries: Resident<Entries>,
    /// The scopes' embeddings, with their indexes for search.
    embeddings: Resident<Embeddings>,
    runs: Runs,
    registry: Registry,
    /// Entries and embeddings of every scope, in memory or not: for the digest.
    totals: Totals,
    /// The sequence of the last event applied.
    last_seq: u64,
}

/// How much a view holds in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InMemory {
    /// Runs' facts.
    pub runs: usize,
    /// Scopes' aggregates (a scope's entries and its embeddings are two).
    pub scopes: usize,
}

/// How many entries and embeddings all scopes hold.
#[derive(Default, serde::Serialize, serde::Deserialize)]
struct Totals {
    entries: u64,
    embeddings: u64,
}

impl View for ContextView {
    type Event = ContextInput;

    fn apply(&mut self, event: &Recorded<ContextInput>) {
        self.last_seq = self.last_seq.max(event.seq);
        let envelope = &event.envelope;
        let aggregate = &envelope.aggregate;
        match (&envelope.payload, aggregate.kind.as_str()) {
            (ContextInput::Run(_), _) => {
                if self.runs.apply(event).ended() {
                    self.run_ended(aggregate.id.as_str(), envelope.occurred_at);
                }
            }
            (ContextInput::Entry(entry), _) => self.registry.apply(aggregate.id.as_str(), entry),
            (ContextInput::Context(_), EMBEDDINGS_KIND) => {
                applied(&mut self.embeddings, &mut self.totals, &self.runs, event);
            }
            (ContextInput::Context(_), _) => applied(&mut self.entries, &mut self.totals, &self.runs, event),
        }
    }

    fn missing(&self, event: &Recorded<ContextInput>) -> bool {
        match event.envelope.aggregate.kind.as_str() {
            SCOPE_KIND => self.entries.missing(event),
            EMBEDDINGS_KIND => self.embeddings.missing(event),
            RUN_KIND => self.runs.missing(event),
            _ => false,
        }
    }

    /// Only a finished scope leaves memory: one put back is a run's that has ended.
    fn restore(&mut self, aggregate: &AggregateRef, earlier: &[Recorded<ContextInput>]) {
        let (id, at) = (aggregate.id.as_str(), earlier.last().map(|event| event.envelope.occurred_at));
        let at = at.unwrap_or_default();
        match aggregate.kind.as_str() {
            SCOPE_KIND => {
                self.entries.restore(id, earlier);
                self.entries.change(id, at, ScopeRecord::run_ended);
            }
            EMBEDDINGS_KIND => {
                self.embeddings.restore(id, earlier);
                self.embeddings.change(id, at, ScopeRecord::run_ended);
            }
            RUN_KIND => self.runs.restore(aggregate, earlier),
            _ => {}
        }
    }

    fn evict(&mut self, finished_before: Timestamp) -> usize {
        self.runs.evict(finished_before) + self.entries.evict(finished_before) + self.embeddings.evict(finished_before)
    }
}

/// Applies a scope's event to its aggregate, keeping the totals; the scope of a run that
/// has ended (an event that got in as the run ended) is finished at once.
fn applied<const EMBEDDINGS: bool>(
    scopes: &mut Resident<ScopeRecord<EMBEDDINGS>>,
    totals: &mut Totals,
    runs: &Runs,
    event: &Recorded<ContextInput>,
) {
    let id = event.envelope.aggregate.id.as_str();
    let (entries, embeddings) = scopes.get(id).map_or((0, 0), ScopeRecord::counts);
    let (now_entries, now_embeddings) = scopes.apply(event).counts();
    totals.entries = (totals.entries + now_entries).saturating_sub(entries);
    totals.embeddings = (totals.embeddings + now_embeddings).saturating_sub(embeddings);
    let run = match Scope::parse("scope", id) {
        Ok(Scope::Run(run)) => run,
        _ => return,
    };
    if runs.resident().get(run.as_str()).is_some_and(RunRecord::ended) {
        scopes.change(id, event.envelope.occurred_at, ScopeRecord::run_ended);
    }
}

/// Saved: the scopes and runs in memory, the fingerprints of those that left, the registry
/// and the totals. Shape 3: the digest of scopes out of memory kept per partition (shape 2
/// as one; shape 1 held every scope and run).
impl Snapshot for ContextView {
    const NAME: &'static str = "context-scopes";
    const SHAPE: u32 = 3;
}

impl Holds<ScopeState> for ContextView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<ScopeState>> {
        let id = aggregate.id.as_str();
        match aggregate.kind.as_str() {
            EMBEDDINGS_KIND => self.embeddings.get(id).map(ScopeRecord::folded),
            _ => self.entries.get(id).map(ScopeRecord::folded),
        }
    }
}

impl Keeps<Entries> for ContextView {
    fn resident(&self) -> &Resident<Entries> {
        &self.entries
    }
}

impl Keeps<Embeddings> for ContextView {
    fn resident(&self) -> &Resident<Embeddings> {
        &self.embeddings
    }
}

impl Keeps<RunRecord> for ContextView {
    fn resident(&self) -> &Resident<RunRecord> {
        self.runs.resident()
    }
}

/// An entry as a reader sees it: its value masked when sensitive and not `revealed`
/// (a revealed sealed value is opened by the reads that reveal it, [`crate::reads`]).
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

impl ContextView {
    /// What the log says of runs.
    pub fn runs(&self) -> &Runs {
        &self.runs
    }

    /// Whether `actor` may `access` `scope`.
    pub fn check(&self, actor: &str, access: Access, scope: &Scope) -> Result<(), Error> {
        access::check(actor, access, scope, &self.runs)
    }

    /// The entries' state of `scope`, if it has any and is in memory.
    pub fn scope(&self, scope: &Scope) -> Option<&ScopeState> {
        self.entries.get(&scope.to_string()).map(ScopeRecord::state)
    }

    /// Whether `scope` may have left memory: a run's, whose run is not running here (it
    /// ended, or it is not known here). Any other scope is in memory if it has any event.
    pub fn may_have_left(&self, scope: &Scope) -> bool {
        matches!(scope, Scope::Run(run) if !self.runs.running(run.as_str()))
    }

    /// What it holds in memory.
    pub fn in_memory(&self) -> InMemory {
        InMemory { runs: self.runs.resident().len(), scopes: self.entries.len() + self.embeddings.len() }
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
                // The runs it works on have not ended.
                writable: self.check(&as_agent, Access::Write { run_ended: false }, scope).is_ok(),
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
    /// that has applied the same log, whatever each holds in memory: the XOR of one hash
    /// per aggregate ([`ScopeRecord`]'s fingerprint).
    pub fn digest(&self) -> Result<Digest, Error> {
        let all = self.entries.digest().and(self.embeddings.digest());
        Ok(Digest {
            digest: all.hex(),
            scopes: all.count(),
            entries: self.totals.entries,
            embeddings: self.totals.embeddings,
            applied: self.last_seq,
        })
    }

    /// Its run has ended: run `run_id`'s scope is finished.
    fn run_ended(&mut self, run_id: &str, at: Timestamp) {
        // A run whose id is too long for a scope has none.
        let Ok(scope) = Scope::of("run", run_id) else { return };
        let id = scope.to_string();
        self.entries.change(&id, at, ScopeRecord::run_ended);
        self.embeddings.change(&id, at, ScopeRecord::run_ended);
    }
}

#[cfg(test)]
mod tests {
    use osp_protocol::context::{ContextEvent, Embedding, EmbeddingsUpserted, EntrySet};
    use osp_protocol::scheduler::{Completed, RunEvent, RunOptions, Submitted};
    use osp_protocol::EventHash;
    use osp_runtime::testing::envelope;
    use serde_json::json;

    use super::*;

    fn set(key: &str) -> ContextInput {
        ContextInput::Context(ContextEvent::EntrySet(EntrySet {
            section: Section::Kv,
            key: key.into(),
            value: json!(key),
            description: None,
            read_only: false,
            target: vec![],
            sensitive: false,
            sealed: false,
        }))
    }

    fn upsert(id: &str) -> ContextInput {
        let embedding = Embedding { id: id.into(), content: id.into(), metadata: None, vector: vec![1.0, 2.0] };
        ContextInput::Context(ContextEvent::EmbeddingsUpserted(EmbeddingsUpserted { entries: vec![embedding] }))
    }

    fn submitted() -> ContextInput {
        ContextInput::Run(RunEvent::Submitted(Submitted {
            capability: Some(Token::new("c", "x").unwrap()),
            workflow: None,
            parent: None,
            input: osp_protocol::registry::document::from_json(&json!(null)),
            options: RunOptions::default(),
            metadata: None,
            dispatched: None,
        }))
    }

    fn completed() -> ContextInput {
        let output = osp_protocol::registry::document::from_json(&json!(1));
        ContextInput::Run(RunEvent::Completed(Completed { attempt: 1, output }))
    }

    /// A log: `(kind, id, payload)` in order, each event chained to its aggregate's last.
    fn log(events: &[(&str, &str, ContextInput)]) -> Vec<Recorded<ContextInput>> {
        let mut versions = std::collections::HashMap::new();
        let mut log = Vec::new();
        for (seq, (kind, id, payload)) in (1..).zip(events) {
            let version = versions.entry((kind, id)).and_modify(|v| *v += 1).or_insert(1u64);
            let mut envelope = envelope(payload.clone(), *version);
            envelope.aggregate = AggregateRef::new(kind, id).unwrap();
            envelope.prev_hash = (*version > 1).then_some(EventHash([*version as u8; 32]));
            log.push(Recorded { seq, stored_at: envelope.occurred_at, hash: EventHash([seq as u8; 32]), envelope });
        }
        log
    }

    #[test]
    fn a_runs_scope_leaves_with_the_run_and_comes_back_for_its_next_event_as_if_it_never_left() {
        let mut events = log(&[
            (RUN_KIND, "r1", submitted()),
            (SCOPE_KIND, "run:r1", set("a")),
            (EMBEDDINGS_KIND, "run:r1", upsert("e")),
            (SCOPE_KIND, "global", set("g")),
            (SCOPE_KIND, "run:r2", set("no such run")),
            (RUN_KIND, "r1", completed()),
            (SCOPE_KIND, "run:r1", set("late")),
        ]);
        let next = events.pop().unwrap();
        let (mut kept, mut evicting) = (ContextView::default(), ContextView::default());
        for event in &events {
            kept.apply(event);
            evicting.apply(event);
        }
        let digest = kept.digest().unwrap();
        assert_eq!((digest.scopes, digest.entries, digest.embeddings), (4, 3, 1));
        assert_eq!(evicting.evict(Timestamp(i64::MAX)), 3, "the run, its entries and its embeddings");
        assert_eq!(evicting.in_memory(), InMemory { runs: 0, scopes: 2 }, "global and run:r2 stay");
        assert!(evicting.scope(&Scope::of("run", "r1").unwrap()).is_none());
        assert!(evicting.may_have_left(&Scope::of("run", "r1").unwrap()));
        assert_eq!(evicting.digest().unwrap(), digest);

        // Nothing in the protocol writes an archived scope, but should an event get in:
        assert!(evicting.missing(&next));
        evicting.restore(&next.envelope.aggregate, &events[1..2]);
        for view in [&mut kept, &mut evicting] {
            view.apply(&next);
        }
        assert_eq!(evicting.digest().unwrap(), kept.digest().unwrap());
        assert_eq!(evicting.evict(Timestamp(i64::MAX)), 1, "put back finished: it leaves again");
        assert_eq!(evicting.digest().unwrap(), kept.digest().unwrap());
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
}
