//! Queries of the context service: NATS micro-service endpoints
//! `osp.v1.q.context.<query>`, answered in the request's encoding with a
//! [`crate::Reply`]. Every query is asked as someone (`Osp-Actor`) and answered only
//! with what that actor may read.
//!
//! | query | request | result |
//! |---|---|---|
//! | `get` | `{scope, key}` | [`EntryView`] of the key-value entry, or `not_found` |
//! | `history` | `{scope, key, at_seq? \| at_time?}` | [`EntryView`] of the entry as it was just after a log sequence, or at a time (read from the log), or `not_found` |
//! | `list` | `{scope, prefix?, after?, limit?}` | [`KeyPage`]: its keys, in order |
//! | `setting` | `{key}` | [`EntryView`], or `not_found` |
//! | `settings` | `{after?, limit?}` | [`EntryPage`] |
//! | `preference` | `{key, agent?, user?}` | [`ResolvedPreference`]: the agent's, else the user's, else the setting |
//! | `preferences` | `{scope, after?, limit?}` | [`EntryPage`] of one agent's or user's |
//! | `env` | `{scope, key, reveal?}` | [`EntryView`], sensitive values masked unless revealed |
//! | `envs` | `{scope, target?, reveal?, after?, limit?}` | [`EntryPage`] |
//! | `embedding` | `{scope, id}` | [`EmbeddingView`] |
//! | `search` | `{scope, vector? \| text?, top_k, filter?}` | [`SearchResult`]: the closest embeddings, best first |
//! | `system` | `{agent?}` | [`SystemContext`]: what the agent may see, in one answer |
//! | `digest` | `{}` | [`Digest`] |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::context::{Scope, Section};
use crate::Timestamp;

/// Items per page when the query does not say.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most items per page.
pub const MAX_LIMIT: u32 = 1000;

/// `get`: a key-value entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetQuery {
    /// Refused `forbidden` unless the asker (`Osp-Actor`) may read it.
    pub scope: Scope,
    /// A key-value key (section `kv`); the other sections have queries of their own.
    pub key: String,
}

/// `history`: a key-value entry as it was.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Refused `forbidden` unless the asker may read it.
    pub scope: Scope,
    /// A key-value key; its earlier values are read from the scope's events in the log.
    pub key: String,
    /// As it was just after this log sequence (read from the log).
    #[serde(default, alias = "atSeq", skip_serializing_if = "Option::is_none")]
    pub at_seq: Option<u64>,
    /// As it was at this time, Unix milliseconds (read from the log).
    #[serde(default, alias = "atTime", skip_serializing_if = "Option::is_none")]
    pub at_time: Option<Timestamp>,
}

/// `list`: a scope's keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Whose key-value keys to list; refused `forbidden` unless the asker may read it.
    pub scope: Scope,
    /// Only keys starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Start after this key (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// A page of keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyPage {
    /// The keys, in order.
    pub keys: Vec<String>,
    /// The `after` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `setting`: one setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyQuery {
    /// The setting's key (settings live in `global`).
    pub key: String,
}

/// `settings`: every setting, a page at a time.
pub use crate::page::PageRequest as PageQuery;

/// `preferences`: one agent's or user's preferences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopePageQuery {
    /// `agent:<name>` or `user:<name>`.
    pub scope: Scope,
    /// Start after this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// `preference`: a preference resolved agent > user > system (the setting).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceQuery {
    /// Looked up in `agent:<agent>`, then `user:<user>`, then as a setting.
    pub key: String,
    /// Whose agent-level preference counts first (default: the asking agent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Whose user-level preference counts next (default: the asking user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `env`: one environment entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvQuery {
    /// Where the entry lives; refused `forbidden` unless the asker may read it.
    pub scope: Scope,
    /// The entry's key in the `env` section.
    pub key: String,
    /// Show a sensitive value in clear (refused unless the asker is allowed to).
    #[serde(default)]
    pub reveal: bool,
}

/// `envs`: a scope's environment entries.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvsQuery {
    /// Whose environment entries; refused `forbidden` unless the asker may read it.
    pub scope: Scope,
    /// Only entries whose target names this (or that have no target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Show sensitive values in clear (refused unless the asker is allowed to).
    #[serde(default)]
    pub reveal: bool,
    /// Start after this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// At most this many entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// An entry, as a reader sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntryView {
    /// Where it lives: for a resolved preference or a system context, where it was found.
    pub scope: Scope,
    /// The scope's namespace it belongs to: `kv`, `setting`, `preference` or `env`.
    pub section: Section,
    /// Unique in its section of the scope.
    pub key: String,
    /// Its value ([`crate::context::MASK`] when `masked`).
    pub value: serde_json::Value,
    /// What a setting is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A setting that cannot be changed any more.
    #[serde(default)]
    pub read_only: bool,
    /// Where an environment entry applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<String>,
    /// Whether the value is sensitive.
    #[serde(default)]
    pub sensitive: bool,
    /// Whether `value` is the mask, not the value.
    #[serde(default)]
    pub masked: bool,
    /// Values it has had since it was (last) created, this one included.
    pub revision: u64,
    /// When it was last set.
    pub updated_at: Timestamp,
    /// Who set it last.
    pub updated_by: String,
    /// The log sequence of that set.
    pub seq: u64,
}

/// A page of entries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryPage {
    /// The entries, by key.
    pub entries: Vec<EntryView>,
    /// The `after` of the next page, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Where a resolved preference came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreferenceLevel {
    /// The agent's own.
    Agent,
    /// The user's.
    User,
    /// The system's: the setting of that key.
    System,
}

/// A preference as it applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResolvedPreference {
    /// The level it was found at.
    pub level: PreferenceLevel,
    /// The entry found at that level (at `system`, the setting in `global`).
    pub entry: EntryView,
}

/// `embedding`: one embedding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingQuery {
    /// Whose embeddings hold it; refused `forbidden` unless the asker may read it.
    pub scope: Scope,
    /// The id it was upserted under.
    pub id: String,
}

/// An embedding, as a reader sees it (its vector normalised).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingView {
    /// The id it was upserted under, unique in the scope.
    pub id: String,
    /// What was embedded.
    pub content: String,
    /// Its metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// The vector, normalised to length 1.
    pub vector: Vec<f32>,
}

/// `search`: the embeddings closest to a vector, or to a text's vector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    /// The scope searched.
    pub scope: Scope,
    /// The query vector (of the scope's dimension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector: Option<Vec<f32>>,
    /// Or a text, which an agent with the `embed` capability turns into the vector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// How many matches, 1 to [`crate::context::MAX_TOP_K`].
    #[serde(alias = "topK")]
    pub top_k: u32,
    /// Only embeddings whose metadata has these fields with these values (a field
    /// holding a list matches any item of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<serde_json::Value>,
}

/// One match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Match {
    /// The embedding's id, as upserted (`embedding` gives it whole).
    pub id: String,
    /// What was embedded.
    pub content: String,
    /// Its metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Cosine similarity to the query, -1 to 1.
    pub score: f32,
}

/// What a search found.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// The matches, best first.
    pub matches: Vec<Match>,
    /// Embeddings compared (those passing the filter).
    pub compared: u64,
    /// For a search by text: the run that embedded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedded_by: Option<String>,
}

/// `system`: what an agent may see.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemQuery {
    /// The agent (default: the asking agent; an operator names one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
}

/// The system context of an agent: settings, its preferences resolved, the environment
/// entries it may read (masked), the registry as it concerns it, and its scopes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemContext {
    /// Whom it is for: the agent named, or the asking agent.
    pub agent: String,
    /// Every setting.
    pub settings: Vec<EntryView>,
    /// Its preferences, resolved agent > user > system, by key.
    pub preferences: BTreeMap<String, ResolvedPreference>,
    /// The environment entries of the scopes it may read that apply to it (no target,
    /// or a target naming it), masked unless the entry's target names it.
    pub env: Vec<EntryView>,
    /// The registry as it concerns it.
    pub registry: RegistryContext,
    /// The scopes it may read, with their key-value keys (at most 100 each).
    pub scopes: Vec<ScopeKeys>,
}

/// The registry's part of a system context, folded from the registry's events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RegistryContext {
    /// The agent's own card, if it is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub card: Option<serde_json::Value>,
    /// Entries per registry.
    pub registries: BTreeMap<String, u64>,
    /// Capabilities offered by online agents, with how many offer each.
    pub capabilities: BTreeMap<String, u64>,
}

/// A scope and some of its keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScopeKeys {
    /// Readable by the agent: `global`, its own, its runs' and their sessions' and users'.
    pub scope: Scope,
    /// Whether it may write there.
    pub writable: bool,
    /// Its first key-value keys.
    pub keys: Vec<String>,
    /// Its key-value keys in all.
    pub total: u64,
}

/// `digest`: a hash of the whole state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestQuery {}

/// A hash of every scope's entries and embeddings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Digest {
    /// Hex XOR of one BLAKE3 per aggregate of a scope (its entries, or its embeddings):
    /// the same whatever an instance holds in memory.
    pub digest: String,
    /// Aggregates of scopes: a scope with entries and embeddings counts twice.
    pub scopes: u64,
    /// Entries in all sections.
    pub entries: u64,
    /// Embeddings in all scopes.
    pub embeddings: u64,
    /// The log sequence the state is at.
    pub applied: u64,
}
