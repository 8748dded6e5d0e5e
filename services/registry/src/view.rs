//! The registry's read model: every entry folded from the log, in name order per
//! registry, with an inverted index of resource fields for `find`, and each entry kept
//! encoded as a query shows it, so a page in MessagePack is its entries' bytes, joined.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use osp_eventlog::Recorded;
use osp_protocol::registry::queries::{
    Digest, EntryView, Page, Registries, RegistryCount, DEFAULT_LIMIT, MAX_LIMIT, PAGE_BYTES,
};
use osp_protocol::registry::{Document, EntryEvent, EntryKey, EntryName, RegistryName};
use osp_protocol::{AggregateRef, Encoding, Error};
use osp_runtime::{Folded, Holds, QueryResult, Snapshot, View};

use crate::criteria::{self, Scalar};
use crate::entry::Entry;

/// All registries, as this instance has applied the log.
#[derive(Default)]
pub struct RegistryView {
    /// Every entry aggregate seen, registered or not (its head is needed to append).
    entries: HashMap<AggregateRef, Folded<Entry>>,
    /// Registered entries, by registry and name.
    registries: BTreeMap<RegistryName, BTreeMap<EntryName, Listed>>,
    /// `(path, scalar)` of each registered resource → the entries that have it.
    index: HashMap<RegistryName, HashMap<(String, Scalar), BTreeSet<EntryName>>>,
    /// The sequence of the last event applied.
    last_seq: u64,
}

/// A registered entry as listed: where its state is, and how a query shows it, encoded.
struct Listed {
    aggregate: AggregateRef,
    /// The entry's [`EntryView`] in MessagePack, encoded when its last event was applied.
    shown: Vec<u8>,
}

impl View for RegistryView {
    type Event = EntryEvent;

    fn apply(&mut self, event: &Recorded<EntryEvent>) {
        self.last_seq = self.last_seq.max(event.seq);
        let aggregate = &event.envelope.aggregate;
        let Ok(key) = EntryKey::from_aggregate_id(aggregate.id.as_str()) else {
            tracing::error!(seq = event.seq, %aggregate, "an entry event whose aggregate id is not <registry>:<name>; skipped");
            return;
        };
        let folded = self.entries.entry(aggregate.clone()).or_default();
        let content_changes = !matches!(event.envelope.payload, EntryEvent::WentOffline(_) | EntryEvent::CameOnline(_));
        if content_changes {
            if let Some(doc) = &folded.state.doc {
                unindex(&mut self.index, &key, &doc.resource);
            }
        }
        folded.apply(event);
        self.relist(&key, aggregate, content_changes);
    }
}

/// What a snapshot of the view holds: every entry's folded state. The listings and the
/// index are rebuilt from them.
#[derive(serde::Serialize)]
struct Saved<'a> {
    entries: &'a HashMap<AggregateRef, Folded<Entry>>,
    last_seq: u64,
}

/// A snapshot, read back.
#[derive(serde::Deserialize)]
struct Restored {
    entries: HashMap<AggregateRef, Folded<Entry>>,
    last_seq: u64,
}

impl serde::Serialize for RegistryView {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Saved { entries: &self.entries, last_seq: self.last_seq }.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for RegistryView {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RegistryView, D::Error> {
        let restored = Restored::deserialize(deserializer)?;
        let mut view =
            RegistryView { entries: restored.entries, last_seq: restored.last_seq, ..RegistryView::default() };
        let aggregates: Vec<AggregateRef> = view.entries.keys().cloned().collect();
        for aggregate in aggregates {
            if let Ok(key) = EntryKey::from_aggregate_id(aggregate.id.as_str()) {
                view.relist(&key, &aggregate, true);
            }
        }
        Ok(view)
    }
}

impl Snapshot for RegistryView {
    const NAME: &'static str = "registry-entries";
    const SHAPE: u32 = 1;
}

impl RegistryView {
    /// Lists `aggregate`'s entry as its state now says (or unlists it), and indexes its
    /// resource when its content may have changed.
    fn relist(&mut self, key: &EntryKey, aggregate: &AggregateRef, content_changes: bool) {
        let Some(folded) = self.entries.get(aggregate) else { return };
        let names = self.registries.entry(key.registry.clone()).or_default();
        match &folded.state.doc {
            Some(doc) => {
                // Every event changes what the entry shows (its status, its sequence).
                match Encoding::MessagePack.encode(&view_of(folded)) {
                    Ok(shown) => {
                        names.insert(key.name.clone(), Listed { aggregate: aggregate.clone(), shown });
                    }
                    // A value that decoded but will not encode again: the entry cannot be
                    // shown, but the view goes on (stopping here would stop the service).
                    Err(error) => {
                        tracing::error!(seq = folded.head.seq, %aggregate, %error, "an entry cannot be shown; not listed");
                        names.remove(&key.name);
                    }
                }
                if content_changes {
                    let postings = self.index.entry(key.registry.clone()).or_default();
                    for index_key in criteria::index_keys(&doc.resource) {
                        postings.entry(index_key).or_default().insert(key.name.clone());
                    }
                }
            }
            None => {
                names.remove(&key.name);
            }
        }
    }
}

fn unindex(
    index: &mut HashMap<RegistryName, HashMap<(String, Scalar), BTreeSet<EntryName>>>,
    key: &EntryKey,
    resource: &Document,
) {
    let Some(postings) = index.get_mut(&key.registry) else { return };
    for index_key in criteria::index_keys(resource) {
        if let Some(names) = postings.get_mut(&index_key) {
            names.remove(&key.name);
            if names.is_empty() {
                postings.remove(&index_key);
            }
        }
    }
}

impl Holds<Entry> for RegistryView {
    fn folded(&self, aggregate: &AggregateRef) -> Option<&Folded<Entry>> {
        self.entries.get(aggregate)
    }
}

/// Where a page starts and how long it may be, checked.
pub struct PageSpec {
    after: Option<EntryName>,
    limit: usize,
}

impl PageSpec {
    /// Checks `after` (an entry name) and `limit` (1 to [`MAX_LIMIT`]).
    pub fn new(after: Option<String>, limit: Option<u32>) -> Result<PageSpec, Error> {
        let after = after.map(|after| EntryName::new("after", after)).transpose()?;
        let limit = match limit.unwrap_or(DEFAULT_LIMIT) {
            n @ 1..=MAX_LIMIT => n as usize,
            n => {
                return Err(Error::Invalid {
                    field: "limit".into(),
                    reason: format!("must be 1 to {MAX_LIMIT}, not {n}"),
                })
            }
        };
        Ok(PageSpec { after, limit })
    }
}

/// The entries chosen for a page, before they are shown in an encoding.
pub struct Selection<'a> {
    chosen: Vec<(&'a Listed, &'a Folded<Entry>)>,
    next: Option<&'a EntryName>,
}

impl Selection<'_> {
    /// The page as values.
    pub fn page(&self) -> Page {
        let entries = self.chosen.iter().map(|(_, folded)| view_of(folded)).collect();
        Page { entries, next: self.next.map(ToString::to_string) }
    }

    /// The page as a query answers it: MessagePack from the entries' stored bytes (the
    /// same bytes serde would write for [`Page`]), JSON through the values.
    pub fn answer(&self, encoding: Encoding) -> QueryResult<Page> {
        match encoding {
            Encoding::Json => QueryResult::Value(self.page()),
            Encoding::MessagePack => {
                let size = self.chosen.iter().map(|(listed, _)| listed.shown.len()).sum::<usize>();
                let mut out = Vec::with_capacity(size + 64);
                // Writing to a Vec cannot fail.
                let _ = rmp::encode::write_map_len(&mut out, if self.next.is_some() { 2 } else { 1 });
                let _ = rmp::encode::write_str(&mut out, "entries");
                let _ = rmp::encode::write_array_len(&mut out, self.chosen.len() as u32);
                for (listed, _) in &self.chosen {
                    out.extend_from_slice(&listed.shown);
                }
                if let Some(next) = self.next {
                    let _ = rmp::encode::write_str(&mut out, "next");
                    let _ = rmp::encode::write_str(&mut out, next.as_str());
                }
                QueryResult::Encoded(out)
            }
        }
    }
}

impl RegistryView {
    /// The entry `key`, if registered.
    pub fn get(&self, key: &EntryKey) -> Option<EntryView> {
        let folded = self.entries.get(&key.aggregate())?;
        folded.state.doc.as_ref().map(|_| view_of(folded))
    }

    /// The entries of `registry` that pass `keep`, in name order, for one page.
    /// Candidates come from `candidates` when the index narrowed them, else from the
    /// whole registry.
    fn select<'a>(
        &'a self,
        registry: &RegistryName,
        candidates: Option<&'a BTreeSet<EntryName>>,
        spec: &PageSpec,
        keep: impl Fn(&Folded<Entry>) -> bool,
    ) -> Selection<'a> {
        let mut selection = Selection { chosen: Vec::with_capacity(spec.limit.min(128)), next: None };
        let Some(names) = self.registries.get(registry) else { return selection };
        let from = spec.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let ordered: Box<dyn Iterator<Item = (&EntryName, &Listed)>> = match candidates {
            Some(set) => Box::new(set.range((from, Bound::Unbounded)).filter_map(|name| names.get_key_value(name))),
            None => Box::new(names.range((from, Bound::Unbounded))),
        };
        let (mut bytes, mut more) = (0, false);
        for (name, listed) in ordered {
            let Some(folded) = self.entries.get(&listed.aggregate) else { continue };
            if !keep(folded) {
                continue;
            }
            let size = size_of(listed);
            if selection.chosen.len() == spec.limit || (!selection.chosen.is_empty() && bytes + size > PAGE_BYTES) {
                more = true;
                break;
            }
            bytes += size;
            selection.chosen.push((listed, folded));
            selection.next = Some(name);
        }
        // `next` names the last entry shown, and only when another one follows.
        if !more {
            selection.next = None;
        }
        selection
    }

    /// A page of `registry`'s entries by name.
    pub fn list(&self, registry: &RegistryName, spec: &PageSpec) -> Selection<'_> {
        self.select(registry, None, spec, |_| true)
    }

    /// A page of `registry`'s entries whose resource matches `criteria` (and that are
    /// online, with `live_only`).
    pub fn find(
        &self,
        registry: &RegistryName,
        criteria: &Document,
        live_only: bool,
        spec: &PageSpec,
    ) -> Selection<'_> {
        let postings = self.index.get(registry);
        let mut smallest: Option<&BTreeSet<EntryName>> = None;
        for required in criteria::requirements(criteria) {
            match postings.and_then(|postings| postings.get(&required)) {
                Some(names) if smallest.is_none_or(|best| names.len() < best.len()) => smallest = Some(names),
                Some(_) => {}
                // Something every match must have, nobody has.
                None => return Selection { chosen: Vec::new(), next: None },
            }
        }
        self.select(registry, smallest, spec, |folded| {
            let live = !live_only || (folded.state.is_agent() && folded.state.online);
            live && folded.state.doc.as_ref().is_some_and(|doc| criteria::matches(&doc.resource, criteria))
        })
    }

    /// The agents online now.
    pub fn live(&self, spec: &PageSpec) -> Selection<'_> {
        let agents = RegistryName::new("registry", osp_protocol::registry::AGENTS).expect("valid name");
        self.select(&agents, None, spec, |folded| folded.state.online)
    }

    /// Agents this view holds as online: name, aggregate, the time it counts as alive
    /// from, and its version (which names the liveness decision taken on it).
    pub fn online_agents(&self) -> Vec<(EntryName, AggregateRef, osp_protocol::Timestamp, u64)> {
        let agents = RegistryName::new("registry", osp_protocol::registry::AGENTS).expect("valid name");
        let Some(names) = self.registries.get(&agents) else { return Vec::new() };
        names
            .iter()
            .filter_map(|(name, listed)| {
                let folded = self.entries.get(&listed.aggregate)?;
                let state = &folded.state;
                state.online.then(|| (name.clone(), listed.aggregate.clone(), state.online_since, folded.head.version))
            })
            .collect()
    }

    /// The registries that hold entries, by name, with their counts (and the agents
    /// online now).
    pub fn registries(&self) -> Registries {
        let registries = self
            .held()
            .map(|(registry, names)| {
                let online = registry.is_agents().then(|| {
                    let online = |listed: &&Listed| self.entries.get(&listed.aggregate).is_some_and(|f| f.state.online);
                    names.values().filter(online).count() as u64
                });
                RegistryCount { registry: registry.to_string(), entries: names.len() as u64, online }
            })
            .collect();
        Registries { registries }
    }

    /// The registries that hold entries, and their entries by name: a registry whose
    /// entries were all unregistered is gone.
    fn held(&self) -> impl Iterator<Item = (&RegistryName, &BTreeMap<EntryName, Listed>)> {
        self.registries.iter().filter(|(_, names)| !names.is_empty())
    }

    /// The entry's state, registered or not.
    pub fn entry(&self, aggregate: &AggregateRef) -> Option<&Entry> {
        self.entries.get(aggregate).map(|folded| &folded.state)
    }

    /// A fingerprint of everything this view holds, the same on every instance that
    /// has applied the same log: every aggregate's head and state, in a fixed order.
    pub fn digest(&self) -> Result<Digest, Error> {
        let mut aggregates: Vec<_> = self.entries.iter().collect();
        aggregates.sort_by(|a, b| a.0.cmp(b.0));
        let mut hasher = blake3::Hasher::new();
        for (aggregate, folded) in aggregates {
            let head = &folded.head;
            let state = &folded.state;
            let record = (
                aggregate.id.as_str(),
                head.seq,
                head.version,
                head.hash.map(|h| h.0),
                &state.doc,
                state.online,
                state.revision,
                (state.registered_at.millis(), state.updated_at.millis(), state.online_since.millis()),
            );
            hasher.update(&rmp_serde::to_vec(&record).map_err(|e| Error::Encode { reason: e.to_string() })?);
        }
        let registries = self.held().map(|(registry, names)| (registry.to_string(), names.len() as u64)).collect();
        Ok(Digest { last_seq: self.last_seq, digest: hasher.finalize().to_hex().to_string(), registries })
    }
}

fn view_of(folded: &Folded<Entry>) -> EntryView {
    let state = &folded.state;
    let doc = state.doc.as_ref().expect("only registered entries are shown");
    EntryView {
        registry: doc.registry.to_string(),
        name: doc.name.to_string(),
        description: doc.description.clone(),
        resource: doc.resource.clone(),
        metadata: doc.metadata.clone(),
        status: state.status(),
        revision: state.revision,
        registered_at: state.registered_at,
        updated_at: state.updated_at,
        seq: folded.head.seq,
    }
}

/// At most how many bytes an entry takes in a reply, in either encoding. JSON can be up
/// to six times the MessagePack size (`false` is 1 byte in MessagePack, `false,` 6 in
/// JSON; a control character 1 against `\u0001`), and a page must fit one message.
fn size_of(listed: &Listed) -> usize {
    6 * listed.shown.len()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use osp_protocol::registry::document::from_json;
    use osp_protocol::registry::{EntryDoc, Unregister, WentOffline};
    use osp_protocol::{Envelope, EventHash, Timestamp};
    use osp_runtime::Aggregate;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;
    use crate::entry::EntryCommand;

    /// One step of a random history: a command on one of a few entries.
    #[derive(Clone, Debug)]
    enum Step {
        Register { agents: bool, name: u8, capabilities: Vec<u8>, region: u8 },
        Unregister { agents: bool, name: u8 },
        Offline { name: u8 },
        Online { name: u8 },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (any::<bool>(), 0u8..6, prop::collection::vec(0u8..4, 0..3), 0u8..2)
                .prop_map(|(agents, name, capabilities, region)| Step::Register { agents, name, capabilities, region }),
            1 => (any::<bool>(), 0u8..6).prop_map(|(agents, name)| Step::Unregister { agents, name }),
            1 => (0u8..6).prop_map(|name| Step::Offline { name }),
            1 => (0u8..6).prop_map(|name| Step::Online { name }),
        ]
    }

    fn registry_of(agents: bool) -> &'static str {
        if agents {
            "agents"
        } else {
            "tools"
        }
    }

    fn command(step: &Step) -> (EntryKey, EntryCommand) {
        let key = |agents: bool, name: u8| EntryKey::new(registry_of(agents), &format!("n{name}")).unwrap();
        match step {
            Step::Register { agents, name, capabilities, region } => {
                let resource = json!({
                    "capabilities": capabilities.iter().map(|c| format!("c{c}")).collect::<Vec<_>>(),
                    "endpoint": {"region": format!("r{region}")},
                });
                let k = key(*agents, *name);
                let doc =
                    EntryDoc::new(k.registry.as_str(), k.name.as_str(), String::new(), from_json(&resource), None);
                (k, EntryCommand::Register(doc.unwrap()))
            }
            Step::Unregister { agents, name } => {
                let k = key(*agents, *name);
                (
                    k.clone(),
                    EntryCommand::Unregister(Unregister::new(k.registry.as_str(), k.name.as_str(), None).unwrap()),
                )
            }
            Step::Offline { name } => {
                let offline = WentOffline { silent_for_ms: 2, timeout_ms: 1 };
                (key(true, *name), EntryCommand::MarkOffline { since: Timestamp::default(), offline })
            }
            Step::Online { name } => (key(true, *name), EntryCommand::MarkOnline),
        }
    }

    /// Runs the steps through `decide`, storing what it decides as a log would.
    fn log_of(steps: &[Step]) -> Vec<Recorded<EntryEvent>> {
        decided(steps).0
    }

    /// Each entry's state and version as the deciding side evolved them.
    type States = BTreeMap<EntryKey, (Entry, u64)>;

    /// The log, and each entry's state as the deciding side evolved it step by step.
    fn decided(steps: &[Step]) -> (Vec<Recorded<EntryEvent>>, States) {
        let mut states: BTreeMap<EntryKey, (Entry, u64)> = BTreeMap::new();
        let mut log = Vec::new();
        for step in steps {
            let (key, mut command) = command(step);
            let (state, version) = states.entry(key.clone()).or_default();
            // The sweep judges on the state it sees: here, the current one.
            if let EntryCommand::MarkOffline { since, .. } = &mut command {
                *since = state.online_since;
            }
            let Ok(events) = state.decide(&command, Timestamp(0)) else { continue };
            for payload in events {
                *version += 1;
                let seq = log.len() as u64 + 1;
                let envelope = Envelope {
                    id: uuid::Uuid::nil(),
                    aggregate: key.aggregate(),
                    version: *version,
                    occurred_at: Timestamp(seq as i64),
                    actor: "test".into(),
                    correlation_id: None,
                    causation_id: Some(format!("cmd-{seq}")),
                    prev_hash: None,
                    payload,
                };
                state.evolve(&envelope);
                log.push(Recorded { seq, stored_at: Timestamp(seq as i64), hash: EventHash([0; 32]), envelope });
            }
        }
        (log, states)
    }

    fn view_of_log(log: &[Recorded<EntryEvent>]) -> RegistryView {
        let mut view = RegistryView::default();
        log.iter().for_each(|event| view.apply(event));
        view
    }

    /// The MessagePack answer of a selection, read back.
    fn decoded(selection: &Selection<'_>) -> Page {
        match selection.answer(Encoding::MessagePack) {
            QueryResult::Encoded(bytes) => Encoding::MessagePack.decode(&bytes).unwrap(),
            QueryResult::Value(_) => panic!("MessagePack pages are answered from stored bytes"),
        }
    }

    fn all(spec_limit: u32) -> PageSpec {
        PageSpec::new(None, Some(spec_limit)).unwrap()
    }

    proptest! {
        /// Whatever the history, `find` through the index returns exactly the entries
        /// a scan of every registered entry would, in name order.
        #[test]
        fn the_index_never_hides_or_invents_a_match(
            steps in prop::collection::vec(step(), 0..60),
            wanted in prop::collection::vec(0u8..4, 0..3),
            region in prop::option::of(0u8..2),
            live_only in any::<bool>(),
        ) {
            let view = view_of_log(&log_of(&steps));
            let mut criteria = json!({"capabilities": wanted.iter().map(|c| format!("c{c}")).collect::<Vec<_>>()});
            if let Some(region) = region {
                criteria["endpoint.region"] = json!(format!("r{region}"));
            }
            let criteria = from_json(&criteria);
            for registry in ["agents", "tools"] {
                let registry = RegistryName::new("registry", registry).unwrap();
                let found = view.find(&registry, &criteria, live_only, &all(MAX_LIMIT));
                prop_assert_eq!(decoded(&found), found.page(), "stored bytes read as the values");
                let found: Vec<_> = found.page().entries;
                let scanned: Vec<_> = view
                    .list(&registry, &all(MAX_LIMIT))
                    .page()
                    .entries
                    .into_iter()
                    .filter(|e| criteria::matches(&e.resource, &criteria))
                    .filter(|e| !live_only || e.status == osp_protocol::registry::Status::Online)
                    .collect();
                prop_assert_eq!(found, scanned);
            }
        }

        /// Every entry shown is registered; agents are online or offline, other entries
        /// just registered; revisions start at 1; and two views of one log are identical.
        #[test]
        fn views_keep_their_invariants_and_replays_agree(steps in prop::collection::vec(step(), 0..60)) {
            let (log, decided) = decided(&steps);
            let view = view_of_log(&log);
            // Replaying the log reaches the state the deciding side reached.
            for (key, (state, _)) in &decided {
                let replayed = view.entry(&key.aggregate()).cloned().unwrap_or_default();
                prop_assert_eq!(&replayed, state);
                prop_assert_eq!(state.revision >= 1, state.is_registered());
                prop_assert!(!state.online || state.is_registered());
            }
            for registry in ["agents", "tools"] {
                let registry = RegistryName::new("registry", registry).unwrap();
                for entry in view.list(&registry, &all(MAX_LIMIT)).page().entries {
                    prop_assert!(entry.revision >= 1);
                    let agent = registry.is_agents();
                    prop_assert_eq!(entry.status == osp_protocol::registry::Status::Registered, !agent);
                }
            }
            // The registries are those listing entries, with their counts (and, for the
            // agents, those online).
            let counts = view.registries().registries;
            prop_assert!(counts.iter().all(|count| count.entries > 0));
            for registry in ["agents", "tools"] {
                let name = RegistryName::new("registry", registry).unwrap();
                let listed = view.list(&name, &all(MAX_LIMIT)).page().entries;
                let online = listed.iter().filter(|e| e.status == osp_protocol::registry::Status::Online).count() as u64;
                let expected = (!listed.is_empty()).then(|| (listed.len() as u64, name.is_agents().then_some(online)));
                let found = counts.iter().find(|count| count.registry == registry).map(|c| (c.entries, c.online));
                prop_assert_eq!(found, expected);
            }
            // The index holds exactly the keys of the registered resources: nothing stale.
            for (registry, postings) in &view.index {
                for ((path, scalar), names) in postings {
                    for name in names {
                        let key = EntryKey { registry: registry.clone(), name: name.clone() };
                        let entry = view.entry(&key.aggregate()).and_then(|e| e.doc.clone());
                        let keys = entry.map(|doc| criteria::index_keys(&doc.resource)).unwrap_or_default();
                        prop_assert!(keys.contains(&(path.clone(), scalar.clone())), "stale {} {}", path, key);
                    }
                }
            }
            for (name, aggregate, _, _) in view.online_agents() {
                prop_assert!(view.entry(&aggregate).is_some_and(|e| e.is_registered() && e.online), "{}", name);
            }
            prop_assert_eq!(view.digest().unwrap(), view_of_log(&log).digest().unwrap());
            // A snapshot restores the same entries, listings and index.
            let restored: RegistryView = rmp_serde::from_slice(&rmp_serde::to_vec_named(&view).unwrap()).unwrap();
            prop_assert_eq!(restored.digest().unwrap(), view.digest().unwrap());
            // (The live index may keep a registry's map after its last entry left.)
            let postings = |view: &RegistryView| {
                view.index.iter().filter(|(_, postings)| !postings.is_empty()).map(|(r, p)| (r.clone(), p.clone())).collect::<Vec<_>>()
            };
            prop_assert_eq!(postings(&restored).len(), postings(&view).len());
            for (registry, postings) in postings(&view) {
                prop_assert_eq!(restored.index.get(&registry), Some(&postings));
            }
            for registry in ["agents", "tools"] {
                let registry = RegistryName::new("registry", registry).unwrap();
                let listed = |view: &RegistryView| view.list(&registry, &all(MAX_LIMIT)).page();
                prop_assert_eq!(listed(&restored), listed(&view));
            }
            prop_assert_eq!(restored.online_agents(), view.online_agents());
        }

        /// Pages, followed cursor to cursor, give the whole list once.
        #[test]
        fn pages_cover_the_list_once(steps in prop::collection::vec(step(), 0..60), limit in 1u32..4) {
            let view = view_of_log(&log_of(&steps));
            let tools = RegistryName::new("registry", "tools").unwrap();
            let whole = view.list(&tools, &all(MAX_LIMIT)).page().entries;
            let mut paged = Vec::new();
            let mut after = None;
            loop {
                let selection = view.list(&tools, &PageSpec::new(after.clone(), Some(limit)).unwrap());
                prop_assert_eq!(decoded(&selection), selection.page());
                let page = selection.page();
                paged.extend(page.entries);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            prop_assert_eq!(paged, whole);
        }
    }
}
