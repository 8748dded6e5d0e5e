//! The registry's read model: every entry folded from the log, in name order per
//! registry, with an inverted index of resource fields for `find`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;

use osp_eventlog::{Folded, Holds, Recorded, View};
use osp_protocol::registry::document::encoded_len;
use osp_protocol::registry::queries::{Digest, EntryView, Page, DEFAULT_LIMIT, MAX_LIMIT, PAGE_BYTES};
use osp_protocol::registry::{Document, EntryEvent, EntryKey, EntryName, RegistryName};
use osp_protocol::{AggregateRef, Error};

use crate::criteria::{self, Scalar};
use crate::entry::Entry;

/// All registries, as this instance has applied the log.
#[derive(Default)]
pub struct RegistryView {
    /// Every entry aggregate seen, registered or not (its head is needed to append).
    entries: HashMap<AggregateRef, Folded<Entry>>,
    /// Registered entries, by registry and name.
    registries: BTreeMap<RegistryName, BTreeMap<EntryName, AggregateRef>>,
    /// `(path, scalar)` of each registered resource → the entries that have it.
    index: HashMap<RegistryName, HashMap<(String, Scalar), BTreeSet<EntryName>>>,
    /// The sequence of the last event applied.
    last_seq: u64,
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
        if !content_changes {
            return;
        }
        let names = self.registries.entry(key.registry.clone()).or_default();
        match &folded.state.doc {
            Some(doc) => {
                names.insert(key.name.clone(), aggregate.clone());
                let postings = self.index.entry(key.registry.clone()).or_default();
                for index_key in criteria::index_keys(&doc.resource) {
                    postings.entry(index_key).or_default().insert(key.name.clone());
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

impl RegistryView {
    /// The entry `key`, if registered.
    pub fn get(&self, key: &EntryKey) -> Option<EntryView> {
        let folded = self.entries.get(&key.aggregate())?;
        folded.state.doc.as_ref().map(|_| view_of(folded))
    }

    /// A page of `registry`'s entries that pass `keep`, in name order. Candidates come
    /// from `candidates` when the index narrowed them, else from the whole registry.
    fn page<'a>(
        &'a self,
        registry: &RegistryName,
        candidates: Option<&'a BTreeSet<EntryName>>,
        spec: &PageSpec,
        keep: impl Fn(&Folded<Entry>) -> bool,
    ) -> Page {
        let Some(names) = self.registries.get(registry) else { return Page::default() };
        let from = spec.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let ordered: Box<dyn Iterator<Item = &EntryName>> = match candidates {
            Some(set) => Box::new(set.range((from, Bound::Unbounded))),
            None => Box::new(names.range((from, Bound::Unbounded)).map(|(name, _)| name)),
        };
        let mut page = Page::default();
        let mut bytes = 0;
        for name in ordered {
            let Some(folded) = names.get(name).and_then(|aggregate| self.entries.get(aggregate)) else { continue };
            if !keep(folded) {
                continue;
            }
            let view = view_of(folded);
            let size = size_of(&view);
            let full = page.entries.len() == spec.limit || (!page.entries.is_empty() && bytes + size > PAGE_BYTES);
            if full {
                page.next = page.entries.last().map(|last| last.name.clone());
                break;
            }
            bytes += size;
            page.entries.push(view);
        }
        page
    }

    /// A page of `registry`'s entries by name.
    pub fn list(&self, registry: &RegistryName, spec: &PageSpec) -> Page {
        self.page(registry, None, spec, |_| true)
    }

    /// A page of `registry`'s entries whose resource matches `criteria` (and that are
    /// online, with `live_only`).
    pub fn find(&self, registry: &RegistryName, criteria: &Document, live_only: bool, spec: &PageSpec) -> Page {
        let postings = self.index.get(registry);
        let mut smallest: Option<&BTreeSet<EntryName>> = None;
        for required in criteria::requirements(criteria) {
            match postings.and_then(|postings| postings.get(&required)) {
                Some(names) if smallest.is_none_or(|best| names.len() < best.len()) => smallest = Some(names),
                Some(_) => {}
                // Something every match must have, nobody has.
                None => return Page::default(),
            }
        }
        self.page(registry, smallest, spec, |folded| {
            let live = !live_only || (folded.state.is_agent() && folded.state.online);
            live && folded.state.doc.as_ref().is_some_and(|doc| criteria::matches(&doc.resource, criteria))
        })
    }

    /// The agents online now.
    pub fn live(&self, spec: &PageSpec) -> Page {
        let agents = RegistryName::new("registry", osp_protocol::registry::AGENTS).expect("valid name");
        self.page(&agents, None, spec, |folded| folded.state.online)
    }

    /// Agents this view holds as online: name, aggregate, the time it counts as alive
    /// from, and its version (which names the liveness decision taken on it).
    pub fn online_agents(&self) -> Vec<(EntryName, AggregateRef, osp_protocol::Timestamp, u64)> {
        let agents = RegistryName::new("registry", osp_protocol::registry::AGENTS).expect("valid name");
        let Some(names) = self.registries.get(&agents) else { return Vec::new() };
        names
            .iter()
            .filter_map(|(name, aggregate)| {
                let folded = self.entries.get(aggregate)?;
                let state = &folded.state;
                state.online.then(|| (name.clone(), aggregate.clone(), state.online_since, folded.head.version))
            })
            .collect()
    }

    /// The entry's state, registered or not.
    pub fn entry(&self, aggregate: &AggregateRef) -> Option<&Entry> {
        self.entries.get(aggregate).map(|folded| &folded.state)
    }

    /// A fingerprint of everything this view holds, the same on every instance that
    /// has applied the same log: every aggregate's head and state, in a fixed order.
    pub fn digest(&self) -> Digest {
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
            hasher.update(&rmp_serde::to_vec(&record).expect("state encodes"));
        }
        let registries = self
            .registries
            .iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(registry, names)| (registry.to_string(), names.len() as u64))
            .collect();
        Digest { last_seq: self.last_seq, digest: hasher.finalize().to_hex().to_string(), registries }
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

/// About how many bytes an entry takes in a reply (MessagePack; JSON is within 2x for
/// text, which the page budget leaves room for).
fn size_of(view: &EntryView) -> usize {
    128 + view.name.len()
        + view.description.len()
        + encoded_len(&view.resource)
        + view.metadata.as_ref().map_or(0, encoded_len)
}
