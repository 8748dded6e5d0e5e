//! What the view keeps of one of a scope's two aggregates: its entries (`scope.<scope>`)
//! or its embeddings (`embeddings.<scope>`, with their index for search). Two kinds, two
//! types: each leaves memory, and is recalled from its own subject, on its own.
//!
//! A run's scope is finished once its run has ended (an event of the run, not of the
//! scope, says so: the view marks it, [`ScopeRecord::run_ended`]). It leaves memory after
//! the grace period; a query of it then recalls it from the log. Scopes of other kinds
//! never finish: nothing on the log ends a session, a user, an agent or the global scope.
//!
//! A recalled scope is not kept in the recall cache: its own events do not say that its
//! run ended, so it never looks finished to the cache, and each query of it reads its
//! subject again. Queries of archived scopes are an operator's look back, and the cache
//! would otherwise hold up to a thousand scopes' vectors for queries that may never come.

use osp_eventlog::Recorded;
use osp_protocol::context::{ContextEvent, EMBEDDINGS_KIND, SCOPE_KIND};
use osp_protocol::{Encoding, Envelope};
use osp_runtime::resident::fingerprint;
use osp_runtime::{Folded, Record};

use crate::aggregate::ScopeState;
use crate::index::VectorIndex;
use crate::input::ContextInput;

/// One aggregate of a scope: its entries, or (`EMBEDDINGS`) its embeddings.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct ScopeRecord<const EMBEDDINGS: bool> {
    folded: Folded<ScopeState>,
    /// The embeddings laid out for search (empty for the entries).
    index: VectorIndex,
    /// The scope is a run's, and the run has ended.
    run_ended: bool,
}

/// A scope's entries.
pub type Entries = ScopeRecord<false>;
/// A scope's embeddings.
pub type Embeddings = ScopeRecord<true>;

impl<const EMBEDDINGS: bool> ScopeRecord<EMBEDDINGS> {
    /// The aggregate kind.
    pub const KIND: &'static str = if EMBEDDINGS { EMBEDDINGS_KIND } else { SCOPE_KIND };

    /// Its state as decisions take it.
    pub fn folded(&self) -> &Folded<ScopeState> {
        &self.folded
    }

    /// Its state.
    pub fn state(&self) -> &ScopeState {
        &self.folded.state
    }

    /// Its embeddings, for search.
    pub fn index(&self) -> &VectorIndex {
        &self.index
    }

    /// How many entries and embeddings it holds.
    pub fn counts(&self) -> (u64, u64) {
        (self.folded.state.entries.len() as u64, self.index.len() as u64)
    }

    /// Its run has ended: the scope is finished.
    pub fn run_ended(&mut self) {
        self.run_ended = true;
    }
}

impl<const EMBEDDINGS: bool> Record for ScopeRecord<EMBEDDINGS> {
    type Event = ContextInput;

    fn apply(&mut self, event: &Recorded<ContextInput>) {
        let ContextInput::Context(payload) = &event.envelope.payload else { return };
        let recorded = Recorded {
            seq: event.seq,
            stored_at: event.stored_at,
            hash: event.hash,
            envelope: rewrapped(&event.envelope, payload.clone()),
        };
        self.folded.apply(&recorded);
        match payload {
            ContextEvent::EntrySet(set) => {
                if let Some(stored) = self.folded.state.entries.get_mut(&(set.section, set.key.clone())) {
                    stored.seq = event.seq;
                }
            }
            ContextEvent::EmbeddingsUpserted(upserted) => {
                upserted.entries.iter().for_each(|embedding| self.index.upsert(embedding));
            }
            ContextEvent::EmbeddingRemoved(removed) => self.index.remove(&removed.id),
            ContextEvent::EntryRemoved(_) => {}
        }
    }

    fn finished(&self) -> bool {
        self.run_ended
    }

    /// A hash of its kind, its head (a sequence no other aggregate's head has), its entries
    /// and its embeddings in their index's order: what the queries show of it.
    fn fingerprint(&self) -> Option<[u8; 32]> {
        let head = &self.folded.head;
        let entries: Vec<_> = (self.folded.state.entries.values())
            .map(|stored| (&*stored.entry, stored.revision, stored.updated_at, &stored.updated_by, stored.seq))
            .collect();
        let embeddings: Vec<_> =
            self.index.slots().map(|(item, vector)| (&item.id, &item.content, &item.metadata, vector)).collect();
        let shown = (Self::KIND, head.seq, head.version, head.hash.map(|hash| hash.0), entries, embeddings);
        // Encoding plain data cannot fail; should it ever, the aggregate still counts, with
        // nothing of it hashed.
        Some(fingerprint(&Encoding::MessagePack.encode(&shown).unwrap_or_default()))
    }
}

/// An envelope's metadata around `payload`: one of the kinds a [`ContextInput`] holds, as
/// its own type.
fn rewrapped<P, Q>(envelope: &Envelope<P>, payload: Q) -> Envelope<Q> {
    Envelope {
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
