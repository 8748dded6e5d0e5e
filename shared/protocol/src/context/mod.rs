//! The context service's part of the wire protocol (OSP "Context" and the matching
//! Actions): key-value entries, system-wide settings, preferences, environment entries and
//! embeddings, every one of them in a **scope**.
//!
//! - [`Scope`]: `global`, `run:<id>`, `agent:<name>`, `session:<id>`, `user:<name>`;
//! - [`Command`]s on `osp.v1.in.context.<command>`;
//! - [`ContextEvent`]s on `osp.v1.evt.scope.<scope>` (entries) and
//!   `osp.v1.evt.embeddings.<scope>` (embeddings);
//! - [`queries`] on `osp.v1.q.context.<query>`.
//!
//! Fields are snake_case; the camelCase spellings of the OSP TypeScript types (`readOnly`,
//! `topK`) are accepted too. Unknown fields are refused.

mod commands;
mod events;
pub mod queries;
mod scope;

pub use commands::{check_vector, Command, CommandName, RemoveOutcome, UpsertOutcome, COMMANDS};
pub use events::{ContextEvent, Embedding, EmbeddingRemoved, EmbeddingsUpserted, EntryRemoved, EntrySet};
pub use scope::{agent_of, Scope, Section};

/// The service's name: its inbox is `osp.v1.in.context.>`.
pub const SERVICE: &str = "context";
/// Aggregate kind of a scope's entries (key-value, settings, preferences, environment):
/// `osp.v1.evt.scope.<scope>`.
pub const SCOPE_KIND: &str = "scope";
/// Aggregate kind of a scope's embeddings: `osp.v1.evt.embeddings.<scope>`. Kept apart
/// from the entries so that reading an entry's history never reads vectors.
pub const EMBEDDINGS_KIND: &str = "embeddings";
/// The capability of the agents that turn text into a vector (a search by text).
pub const EMBED_CAPABILITY: &str = "embed";

/// Largest value of an entry, encoded as MessagePack.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest description of a setting.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;
/// Most items in an environment entry's `target`, each at most [`crate::subject::MAX_TOKEN_LEN`] bytes.
pub const MAX_TARGETS: usize = 32;
/// Most entries of one section (key-value, settings, preferences, environment) in one scope.
pub const MAX_ENTRIES_PER_SECTION: usize = 10_000;
/// Most embeddings in one scope (their vectors are held in memory by every instance).
pub const MAX_EMBEDDINGS_PER_SCOPE: usize = 250_000;
/// Most embeddings in one `upsert_embeddings`.
pub const MAX_UPSERT_BATCH: usize = 1_000;

/// How many embeddings of `dimension` fit one upsert command (1 MiB, MessagePack f32 of
/// 5 bytes), with room for ids and content.
pub fn upsert_batch(dimension: usize) -> usize {
    (800_000 / (dimension * 5 + 200)).clamp(1, MAX_UPSERT_BATCH)
}
/// Largest dimension of a vector.
pub const MAX_DIMENSION: usize = 4_096;
/// Largest content of an embedding.
pub const MAX_CONTENT_BYTES: usize = 16 * 1024;
/// Largest metadata of an embedding, encoded as MessagePack.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;
/// Most matches a search returns.
pub const MAX_TOP_K: u32 = 100;
/// What a sensitive value reads as when it is not revealed.
pub const MASK: &str = "********";
