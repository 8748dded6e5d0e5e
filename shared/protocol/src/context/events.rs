//! Events of the context service.
//!
//! | kind, subject | type | when |
//! |---|---|---|
//! | `scope`, `osp.v1.evt.scope.<scope>` | `scope.entry_set` `{section, key, value, description?, read_only?, target?, sensitive?}` | an entry of a section (`kv`, `setting`, `preference`, `env`) is created or replaced; the old value stays in the log |
//! | | `scope.entry_removed` `{section, key}` | an entry is removed |
//! | `embeddings`, `osp.v1.evt.embeddings.<scope>` | `embeddings.upserted` `{entries: [{id, content, metadata?, vector}]}` | embeddings are added or replaced |
//! | | `embeddings.removed` `{id}` | an embedding is removed |
//!
//! The log holds values as they were sent, but for a sensitive environment value, which
//! it holds sealed (encrypted with the service's seal key, `sealed: true`): the log is
//! the truth every instance rebuilds from, and is readable by whoever may read the
//! stream. Reads, replies, the service's tracing and the CLI mask it too (see
//! `docs/protocol.md` §20).

use serde::{Deserialize, Serialize};

use crate::context::Section;

/// An entry was created or replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntrySet {
    /// The scope's namespace it belongs to: `kv`, `setting`, `preference` or `env`.
    pub section: Section,
    /// Unique in its section of the scope; a subject token (no `.`, `*`, `>`, whitespace).
    pub key: String,
    /// Any JSON value but `null` (a string for `env`); `v1:<key id>:<hex>` when `sealed`.
    pub value: serde_json::Value,
    /// What a setting is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A setting that cannot be changed or removed any more.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// Where an environment entry applies: environment names and agents (`agent:<name>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<String>,
    /// An environment entry whose value is masked in every read.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sensitive: bool,
    /// The value is sealed: the string `v1:<key id>:<hex>` that only the context
    /// service's seal key opens. Set by the service, never by a sender.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sealed: bool,
}

impl EntrySet {
    /// An entry of `section` with its key and value, and nothing else.
    pub fn new(section: Section, key: impl Into<String>, value: serde_json::Value) -> EntrySet {
        EntrySet {
            section,
            key: key.into(),
            value,
            description: None,
            read_only: false,
            target: Vec::new(),
            sensitive: false,
            sealed: false,
        }
    }
}

/// An entry was removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryRemoved {
    /// The section it was removed from; the same key in another section stays.
    pub section: Section,
    /// A subject token, as it was set.
    pub key: String,
}

/// One embedding: a vector and what it stands for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// Its id in the scope.
    pub id: String,
    /// What was embedded.
    pub content: String,
    /// For filtering searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// The vector, as sent (searches compare it normalised).
    pub vector: Vec<f32>,
}

/// Embeddings were added or replaced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsUpserted {
    /// The embeddings, in the order sent.
    pub entries: Vec<Embedding>,
}

/// An embedding was removed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRemoved {
    /// The id it was upserted under in this scope.
    pub id: String,
}

fn is_false(value: &bool) -> bool {
    !*value
}

crate::event_payload! {
    /// What can happen to a scope's entries (kind `scope`) or embeddings (kind
    /// `embeddings`). One enum for both kinds, so one service folds both.
    #[derive(Clone, Debug, PartialEq)]
    pub enum ContextEvent {
        /// An entry was set.
        EntrySet(EntrySet) = ("scope.entry_set", 1),
        /// An entry was removed.
        EntryRemoved(EntryRemoved) = ("scope.entry_removed", 1),
        /// Embeddings were upserted.
        EmbeddingsUpserted(EmbeddingsUpserted) = ("embeddings.upserted", 1),
        /// An embedding was removed.
        EmbeddingRemoved(EmbeddingRemoved) = ("embeddings.removed", 1),
    }
}
