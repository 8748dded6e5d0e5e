//! The context service, typed: key-value entries, settings, preferences, environment
//! entries and embeddings, each in a scope (`global`, `run:<id>`, `agent:<name>`,
//! `session:<id>`, `user:<name>`), read and written as the client's actor
//! ([`Client::with_actor`]), whom the service's access rules judge.
//!
//! ```no_run
//! # async fn demo(client: &osp_client::Client) -> osp_client::Result<()> {
//! let context = client.context();
//! context.set("run:r-1", "notes/draft", serde_json::json!({"words": 120})).await?;
//! let entry = context.get("run:r-1", "notes/draft").await?;
//! println!("{:?}", entry.map(|entry| entry.value));
//! # Ok(()) }
//! ```

use osp_protocol::context::queries::Digest;
use osp_protocol::context::queries::{
    DigestQuery, EmbeddingQuery, EmbeddingView, EntryPage, EntryView, EnvQuery, EnvsQuery, GetQuery, HistoryQuery,
    KeyPage, KeyQuery, ListQuery, PageQuery, PreferenceQuery, ResolvedPreference, ScopePageQuery, SearchQuery,
    SearchResult, SystemContext, SystemQuery,
};
use osp_protocol::context::{
    Command, Embedding, EntryRemoved, EntrySet, RemoveOutcome, Scope, Section, UpsertOutcome, SERVICE,
};
use osp_protocol::Timestamp;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::{Answer, Client, Error, Result};

/// The context service, through a [`Client`].
#[derive(Clone, Debug)]
pub struct Context {
    client: Client,
}

impl Client {
    /// The context service.
    pub fn context(&self) -> Context {
        Context { client: self.clone() }
    }
}

/// An environment entry to set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnvEntry {
    /// A subject token: no `.`, `*`, `>` or whitespace, at most 128 bytes.
    pub key: String,
    /// Text only; sealed in the log, and masked in reads, when `sensitive`.
    pub value: String,
    /// Where it applies: environment names and agents (`agent:<name>`).
    pub target: Vec<String>,
    /// Masked in every read unless revealed to one allowed to see it.
    pub sensitive: bool,
}

/// A search: by vector or by text, the `top_k` best, among the embeddings whose metadata
/// matches `filter`.
#[derive(Clone, Debug, PartialEq)]
pub enum SearchBy {
    /// A vector of the scope's dimension.
    Vector(Vec<f32>),
    /// A text, embedded by an agent of the `embed` capability.
    Text(String),
}

impl Context {
    /// Creates or replaces the key-value entry `key` of `scope`.
    pub async fn set(&self, scope: &str, key: &str, value: Value) -> Result<Answer<EntryView>> {
        self.client.send(&Command::Set { scope: parse(scope)?, entry: EntrySet::new(Section::Kv, key, value) }).await
    }

    /// The key-value entry `key` of `scope`, or `None`.
    pub async fn get(&self, scope: &str, key: &str) -> Result<Option<EntryView>> {
        self.found("get", &GetQuery { scope: parse(scope)?, key: key.to_owned() }).await
    }

    /// The entry as it was just after log sequence `at_seq` (or at `at_time`), or `None`.
    pub async fn history(
        &self,
        scope: &str,
        key: &str,
        at_seq: Option<u64>,
        at_time: Option<Timestamp>,
    ) -> Result<Option<EntryView>> {
        self.found("history", &HistoryQuery { scope: parse(scope)?, key: key.to_owned(), at_seq, at_time }).await
    }

    /// Removes the key-value entry; whether it existed.
    pub async fn remove(&self, scope: &str, key: &str) -> Result<bool> {
        self.removed(parse(scope)?, Section::Kv, key).await
    }

    /// Every key of `scope` starting with `prefix`, page after page.
    pub async fn list(&self, scope: &str, prefix: &str) -> Result<Vec<String>> {
        let scope = parse(scope)?;
        let mut keys = Vec::new();
        let mut after = None;
        loop {
            let query = ListQuery { scope: scope.clone(), prefix: Some(prefix.to_owned()), after, limit: None };
            let page: KeyPage = self.client.query(SERVICE, "list", &query).await?.result;
            keys.extend(page.keys);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(keys),
            }
        }
    }

    /// Creates or replaces a setting (`read_only`: never changed again at runtime).
    pub async fn set_setting(
        &self,
        key: &str,
        value: Value,
        description: Option<&str>,
        read_only: bool,
    ) -> Result<Answer<EntryView>> {
        let description = description.map(str::to_owned);
        let entry = EntrySet { description, read_only, ..EntrySet::new(Section::Setting, key, value) };
        self.client.send(&Command::Set { scope: Scope::Global, entry }).await
    }

    /// A setting, or `None`.
    pub async fn setting(&self, key: &str) -> Result<Option<EntryView>> {
        self.found("setting", &KeyQuery { key: key.to_owned() }).await
    }

    /// Every setting.
    pub async fn settings(&self) -> Result<Vec<EntryView>> {
        self.pages(|after| ("settings", json!(PageQuery { after, limit: None }))).await
    }

    /// Removes a setting; whether it existed.
    pub async fn remove_setting(&self, key: &str) -> Result<bool> {
        self.removed(Scope::Global, Section::Setting, key).await
    }

    /// Creates or replaces a preference of `scope` (`agent:<name>` or `user:<name>`).
    pub async fn set_preference(&self, scope: &str, key: &str, value: Value) -> Result<Answer<EntryView>> {
        let entry = EntrySet::new(Section::Preference, key, value);
        self.client.send(&Command::Set { scope: parse(scope)?, entry }).await
    }

    /// The preference `key` as it applies to `agent` and `user` (default: the client's
    /// own): the agent's, else the user's, else the setting; `None` when none has it.
    pub async fn preference(
        &self,
        key: &str,
        agent: Option<&str>,
        user: Option<&str>,
    ) -> Result<Option<ResolvedPreference>> {
        let query =
            PreferenceQuery { key: key.to_owned(), agent: agent.map(str::to_owned), user: user.map(str::to_owned) };
        self.found("preference", &query).await
    }

    /// Every preference of `scope`.
    pub async fn preferences(&self, scope: &str) -> Result<Vec<EntryView>> {
        let scope = parse(scope)?;
        self.pages(|after| ("preferences", json!(ScopePageQuery { scope: scope.clone(), after, limit: None }))).await
    }

    /// Removes a preference; whether it existed.
    pub async fn remove_preference(&self, scope: &str, key: &str) -> Result<bool> {
        self.removed(parse(scope)?, Section::Preference, key).await
    }

    /// Creates or replaces an environment entry of `scope` (the answer is masked).
    pub async fn set_env(&self, scope: &str, entry: &EnvEntry) -> Result<Answer<EntryView>> {
        let EnvEntry { key, value, target, sensitive } = entry.clone();
        let entry = EntrySet { target, sensitive, ..EntrySet::new(Section::Env, key, value.into()) };
        self.client.send(&Command::Set { scope: parse(scope)?, entry }).await
    }

    /// An environment entry, masked unless `reveal` (refused unless allowed), or `None`.
    pub async fn env(&self, scope: &str, key: &str, reveal: bool) -> Result<Option<EntryView>> {
        self.found("env", &EnvQuery { scope: parse(scope)?, key: key.to_owned(), reveal }).await
    }

    /// The environment entries of `scope` (applying to `target`, when given).
    pub async fn envs(&self, scope: &str, target: Option<&str>, reveal: bool) -> Result<Vec<EntryView>> {
        let scope = parse(scope)?;
        let target = target.map(str::to_owned);
        self.pages(|after| {
            let query = EnvsQuery { scope: scope.clone(), target: target.clone(), reveal, after, limit: None };
            ("envs", json!(query))
        })
        .await
    }

    /// Removes an environment entry; whether it existed.
    pub async fn remove_env(&self, scope: &str, key: &str) -> Result<bool> {
        self.removed(parse(scope)?, Section::Env, key).await
    }

    /// Adds or replaces embeddings of `scope` (at most 1,000 at once, one dimension, and
    /// one message: 1 MiB, so about 500 vectors of 384 dimensions).
    pub async fn upsert_embeddings(&self, scope: &str, entries: &[Embedding]) -> Result<Answer<UpsertOutcome>> {
        self.client.send(&Command::Upsert { scope: parse(scope)?, entries: entries.to_vec() }).await
    }

    /// An embedding, or `None`.
    pub async fn embedding(&self, scope: &str, id: &str) -> Result<Option<EmbeddingView>> {
        self.found("embedding", &EmbeddingQuery { scope: parse(scope)?, id: id.to_owned() }).await
    }

    /// Removes an embedding; whether it existed.
    pub async fn remove_embedding(&self, scope: &str, id: &str) -> Result<bool> {
        let remove = Command::RemoveEmbedding { scope: parse(scope)?, id: id.to_owned() };
        Ok(self.client.send::<_, RemoveOutcome>(&remove).await?.result.existed)
    }

    /// The `top_k` embeddings of `scope` closest to a vector or a text, best first.
    pub async fn search(&self, scope: &str, by: SearchBy, top_k: u32, filter: Option<Value>) -> Result<SearchResult> {
        let (vector, text) = match by {
            SearchBy::Vector(vector) => (Some(vector), None),
            SearchBy::Text(text) => (None, Some(text)),
        };
        let query = SearchQuery { scope: parse(scope)?, vector, text, top_k, filter };
        Ok(self.client.query(SERVICE, "search", &query).await?.result)
    }

    /// What `agent` (default: the client's own agent) may see, in one answer.
    pub async fn system(&self, agent: Option<&str>) -> Result<SystemContext> {
        Ok(self.client.query(SERVICE, "system", &SystemQuery { agent: agent.map(str::to_owned) }).await?.result)
    }

    /// A fingerprint of the answering instance's whole state.
    pub async fn digest(&self) -> Result<Answer<Digest>> {
        self.client.query(SERVICE, "digest", &DigestQuery {}).await
    }

    /// Removes entry `key` of `section` in `scope`; whether it existed.
    async fn removed(&self, scope: Scope, section: Section, key: &str) -> Result<bool> {
        let remove = Command::Remove { scope, entry: EntryRemoved { section, key: key.to_owned() } };
        Ok(self.client.send::<_, RemoveOutcome>(&remove).await?.result.existed)
    }

    /// The answer to `query`, or `None` when the service says there is no such thing.
    async fn found<Q: Serialize, R: DeserializeOwned>(&self, query: &str, body: &Q) -> Result<Option<R>> {
        match self.client.query(SERVICE, query, body).await {
            Ok(answer) => Ok(Some(answer.result)),
            Err(Error::Rejected { error: osp_protocol::Error::NotFound { .. }, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// Every entry of a paged query, `query(after)` naming it and its body.
    async fn pages(&self, query: impl Fn(Option<String>) -> (&'static str, Value)) -> Result<Vec<EntryView>> {
        let mut entries = Vec::new();
        let mut after = None;
        loop {
            let (name, body) = query(after);
            let page: EntryPage = self.client.query(SERVICE, name, &body).await?.result;
            entries.extend(page.entries);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(entries),
            }
        }
    }
}

/// A scope's text, checked before anything is sent.
fn parse(scope: &str) -> Result<Scope> {
    Ok(Scope::parse("scope", scope)?)
}

/// A deterministic toy embedder for examples and tests, no model needed: the text's
/// words (lower-cased, split on anything not alphanumeric) hashed into `dimension`
/// buckets with a sign each, normalised. Texts sharing words point the same way.
pub fn hashing_embedder(text: &str, dimension: usize) -> Vec<f32> {
    let mut vector = vec![0.0f32; dimension.max(1)];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|word| !word.is_empty()) {
        let hash = blake3::hash(word.to_lowercase().as_bytes());
        let bytes = hash.as_bytes();
        let bucket = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize % vector.len();
        vector[bucket] += if bytes[8] & 1 == 0 { 1.0 } else { -1.0 };
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
    vector
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_sharing_words_point_the_same_way() {
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let cats = hashing_embedder("Cats purr and sleep", 384);
        assert_eq!(cats, hashing_embedder("cats PURR, and sleep!", 384), "deterministic, case and punctuation aside");
        assert!((dot(&cats, &cats) - 1.0).abs() < 1e-5);
        let close = dot(&cats, &hashing_embedder("sleeping cats purr", 384));
        let far = dot(&cats, &hashing_embedder("invoices are due monthly", 384));
        assert!(close > far, "{close} > {far}");
        assert!(hashing_embedder("", 8).iter().all(|x| *x == 0.0));
    }
}
