//! What a query reads in one scope: its entries or its embeddings, whether the view holds
//! the scope in memory or recalled it from the log. The reader's access is checked
//! before ([`crate::view::ContextView::check`]).

use std::ops::Bound;

use osp_protocol::context::queries::{
    EmbeddingView, EntryPage, EntryView, KeyPage, SearchResult, DEFAULT_LIMIT, MAX_LIMIT,
};
use osp_protocol::context::{Scope, Section, MAX_TOP_K};
use osp_protocol::Error;

use crate::aggregate::{ScopeState, Stored};
use crate::index::{matches_filter, VectorIndex};
use crate::sealing;
use crate::view::{entry_view, RevealPolicy};

/// How many items a page may hold: `limit`, 1 to [`MAX_LIMIT`] ([`DEFAULT_LIMIT`] when absent).
fn page_limit(limit: Option<u32>) -> Result<usize, Error> {
    match limit.unwrap_or(DEFAULT_LIMIT) {
        n @ 1..=MAX_LIMIT => Ok(n as usize),
        n => Err(Error::Invalid { field: "limit".into(), reason: format!("must be 1 to {MAX_LIMIT}, not {n}") }),
    }
}

pub(crate) fn not_found(field: &str, value: &str, reason: String) -> Error {
    Error::NotFound { field: field.into(), value: value.to_owned(), reason }
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

/// One scope's entries.
#[derive(Clone, Copy)]
pub struct ScopeEntries<'a> {
    pub scope: &'a Scope,
    pub state: &'a ScopeState,
}

impl ScopeEntries<'_> {
    /// The entry `key` of `section` (never revealed).
    pub fn entry(&self, section: Section, key: &str) -> Result<EntryView, Error> {
        let scope = self.scope;
        let stored = self.state.entry(section, key);
        let stored =
            stored.ok_or_else(|| not_found("key", key, format!("{scope} has no {} by that name", section.noun())))?;
        Ok(entry_view(scope, stored, false))
    }

    /// An environment entry, revealed to `actor` when asked and allowed.
    pub fn env(&self, actor: &str, key: &str, reveal: bool, policy: &RevealPolicy) -> Result<EntryView, Error> {
        let view = self.entry(Section::Env, key)?;
        let stored = match self.state.entry(Section::Env, key) {
            Some(stored) if reveal && view.sensitive => stored,
            _ => return Ok(view),
        };
        let scope = self.scope;
        match policy.allows(actor, stored) {
            true => revealed_view(scope, stored, policy),
            false => Err(Error::Forbidden {
                field: "Osp-Actor header".into(),
                value: actor.to_owned(),
                reason: format!("may not reveal {key} of {scope}: {}", policy.who_may_reveal(stored)),
            }),
        }
    }

    /// A page of `section`'s entries (the environment entries applying to `page.target`),
    /// as `actor` may see them.
    pub fn page(
        &self,
        actor: &str,
        section: Section,
        page: Page<'_>,
        policy: &RevealPolicy,
    ) -> Result<EntryPage, Error> {
        let limit = page_limit(page.limit)?;
        let mut out = EntryPage::default();
        // The sections share one ordered map: a page starts within its own section, never
        // at the map's first entry (another section's, which would end the page at once).
        let from = match page.after {
            Some(after) => Bound::Excluded((section, after.to_owned())),
            None => Bound::Included((section, String::new())),
        };
        let entries = self.state.entries.range((from, Bound::Unbounded)).take_while(|((s, _), _)| *s == section);
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
                true => revealed_view(self.scope, stored, policy)?,
                false => entry_view(self.scope, stored, false),
            };
            out.entries.push(revealed);
        }
        Ok(out)
    }

    /// A page of the key-value keys starting with `prefix`, from `after`.
    pub fn keys(&self, prefix: &str, after: Option<&str>, limit: Option<u32>) -> Result<KeyPage, Error> {
        let limit = page_limit(limit)?;
        let mut page = KeyPage::default();
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded((Section::Kv, after.to_owned())),
            _ => Bound::Included((Section::Kv, prefix.to_owned())),
        };
        for ((section, key), _) in self.state.entries.range((start, Bound::Unbounded)) {
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

/// One scope's embeddings.
#[derive(Clone, Copy)]
pub struct ScopeEmbeddings<'a> {
    pub scope: &'a Scope,
    pub index: &'a VectorIndex,
}

impl ScopeEmbeddings<'_> {
    /// The embedding `id`.
    pub fn embedding(&self, id: &str) -> Result<EmbeddingView, Error> {
        let scope = self.scope;
        let (item, vector) =
            self.index.get(id).ok_or_else(|| not_found("id", id, format!("{scope} has no embedding by that id")))?;
        Ok(EmbeddingView {
            id: item.id.clone(),
            content: item.content.clone(),
            metadata: item.metadata.clone(),
            vector: vector.to_vec(),
        })
    }

    /// The `top_k` embeddings closest to `vector`, among those whose metadata has every
    /// field of `filter`.
    pub fn search(
        &self,
        vector: &[f32],
        top_k: u32,
        filter: Option<&serde_json::Value>,
    ) -> Result<SearchResult, Error> {
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
        let index = self.index;
        if index.is_empty() {
            return Ok(SearchResult::default());
        }
        if vector.len() != index.dimension() {
            return Err(Error::Invalid {
                field: "vector".into(),
                reason: format!(
                    "has {} dimensions; the embeddings of {} have {}",
                    vector.len(),
                    self.scope,
                    index.dimension()
                ),
            });
        }
        let (matches, compared) = index.search(vector, top_k as usize, |item| {
            filter.is_none_or(|filter| matches_filter(item.metadata.as_ref(), filter))
        });
        Ok(SearchResult { matches, compared, embedded_by: None })
    }
}

#[cfg(test)]
mod tests {
    use osp_protocol::context::{ContextEvent, EntrySet};
    use osp_runtime::testing::fold;
    use serde_json::json;

    use super::*;

    /// The global scope's state after `entries` were set, in order.
    fn global_with(entries: &[(Section, &str)]) -> ScopeState {
        let events: Vec<ContextEvent> = (entries.iter().enumerate())
            .map(|(i, (section, key))| {
                ContextEvent::EntrySet(EntrySet {
                    section: *section,
                    key: (*key).into(),
                    value: json!(i),
                    description: None,
                    read_only: false,
                    target: vec![],
                    sensitive: false,
                    sealed: false,
                })
            })
            .collect();
        fold::<ScopeState>(&events)
    }

    fn keys(page: &EntryPage) -> Vec<&str> {
        page.entries.iter().map(|entry| entry.key.as_str()).collect()
    }

    #[test]
    fn each_section_lists_its_own_entries_whatever_the_others_hold() {
        let state = global_with(&[
            (Section::Kv, "a"),
            (Section::Env, "HOME"),
            (Section::Setting, "max_tokens"),
            (Section::Kv, "b"),
            (Section::Setting, "model"),
            (Section::Env, "PATH"),
        ]);
        let scope = ScopeEntries { scope: &Scope::Global, state: &state };
        let policy = RevealPolicy::default();
        let list = |section, page| scope.page("user:ana", section, page, &policy).unwrap();
        assert_eq!(keys(&list(Section::Setting, Page::default())), ["max_tokens", "model"]);
        assert_eq!(keys(&list(Section::Env, Page::default())), ["HOME", "PATH"]);
        assert!(list(Section::Preference, Page::default()).entries.is_empty());
        let first = list(Section::Setting, Page { limit: Some(1), ..Page::default() });
        assert_eq!((keys(&first), first.next.as_deref()), (vec!["max_tokens"], Some("max_tokens")));
        let rest = list(Section::Setting, Page { after: first.next.as_deref(), ..Page::default() });
        assert_eq!((keys(&rest), rest.next.as_deref()), (vec!["model"], None));
        assert_eq!(scope.keys("", None, None).unwrap().keys, ["a", "b"]);
    }
}
