//! The context service's query endpoints (`osp.v1.q.context.*`): thin readers of the view,
//! each asked as someone; `history` reads the log and `search` by text waits for an
//! embedding run, so those two await.

use std::sync::Arc;

use osp_protocol::context::queries::{
    DigestQuery, EmbeddingQuery, EntryView, EnvQuery, EnvsQuery, GetQuery, HistoryQuery, KeyQuery, ListQuery,
    PageQuery, PreferenceQuery, ScopePageQuery, SearchQuery, SearchResult, SystemQuery,
};
use osp_protocol::context::{agent_of, check_vector, ContextEvent, Scope, Section};
use osp_protocol::{Error, Token};
use osp_runtime::{Caller, Folded, Projection, Query};

use crate::access::Access;
use crate::aggregate::ScopeState;
use crate::embed::Embedder;
use crate::view::{entry_view, ContextView, Page, RevealPolicy};

/// Every query the context service answers.
pub fn all(policy: Arc<RevealPolicy>, embedder: Embedder) -> Vec<Query<ContextView>> {
    let (settings_policy, prefs_policy, envs_policy) = (policy.clone(), policy.clone(), policy.clone());
    vec![
        Query::asked("get", |view: &ContextView, caller: &Caller, q: GetQuery| {
            view.entry(&caller.actor, &q.scope, Section::Kv, &q.key)
        }),
        Query::deferred("history", history),
        Query::asked("list", |view: &ContextView, caller: &Caller, q: ListQuery| {
            view.keys(&caller.actor, &q.scope, q.prefix.as_deref().unwrap_or(""), q.after.as_deref(), q.limit)
        }),
        Query::asked("setting", |view: &ContextView, caller: &Caller, q: KeyQuery| {
            view.entry(&caller.actor, &Scope::Global, Section::Setting, &q.key)
        }),
        Query::asked("settings", move |view: &ContextView, caller: &Caller, q: PageQuery| {
            let page = Page { after: q.after.as_deref(), limit: q.limit, ..Page::default() };
            view.entries(&caller.actor, &Scope::Global, Section::Setting, page, &settings_policy)
        }),
        Query::asked("preference", |view: &ContextView, caller: &Caller, q: PreferenceQuery| {
            let agent = name_or_own("agent", q.agent, agent_of(&caller.actor))?;
            let user = name_or_own("user", q.user, caller.actor.strip_prefix("user:"))?;
            view.preference(&caller.actor, &q.key, agent.as_ref(), user.as_ref())
        }),
        Query::asked("preferences", move |view: &ContextView, caller: &Caller, q: ScopePageQuery| {
            if !matches!(q.scope, Scope::Agent(_) | Scope::User(_)) {
                return Err(Error::Invalid {
                    field: "scope".into(),
                    reason: format!("preferences belong to agent:<name> or user:<name>, not {}", q.scope),
                });
            }
            let page = Page { after: q.after.as_deref(), limit: q.limit, ..Page::default() };
            view.entries(&caller.actor, &q.scope, Section::Preference, page, &prefs_policy)
        }),
        Query::asked("env", move |view: &ContextView, caller: &Caller, q: EnvQuery| {
            view.env(&caller.actor, &q.scope, &q.key, q.reveal, &policy)
        }),
        Query::asked("envs", move |view: &ContextView, caller: &Caller, q: EnvsQuery| {
            let page =
                Page { after: q.after.as_deref(), limit: q.limit, target: q.target.as_deref(), reveal: q.reveal };
            view.entries(&caller.actor, &q.scope, Section::Env, page, &envs_policy)
        }),
        Query::asked("embedding", |view: &ContextView, caller: &Caller, q: EmbeddingQuery| {
            view.embedding(&caller.actor, &q.scope, &q.id)
        }),
        Query::deferred("search", move |projection, caller, q| search(embedder.clone(), projection, caller, q)),
        Query::asked("system", |view: &ContextView, caller: &Caller, q: SystemQuery| {
            let agent = name_or_own("agent", q.agent, agent_of(&caller.actor))?.ok_or_else(|| Error::Invalid {
                field: "agent".into(),
                reason: "name the agent whose system context to show (an agent asking gets its own)".into(),
            })?;
            view.system(&caller.actor, &agent)
        }),
        Query::new("digest", |view: &ContextView, _: DigestQuery| view.digest()),
    ]
}

/// The name a query gives, else the asker's own, as a token.
fn name_or_own(field: &str, given: Option<String>, own: Option<&str>) -> Result<Option<Token>, Error> {
    given.as_deref().or(own).map(|name| Token::new(field, name)).transpose()
}

/// A key-value entry as it was just after a log sequence, or at a time: the scope's
/// history read from the log, folded up to that point.
async fn history(projection: Projection<ContextView>, caller: Caller, q: HistoryQuery) -> Result<EntryView, Error> {
    projection.read().check(&caller.actor, Access::Read, &q.scope)?;
    let within = |seq: u64, stored_at: osp_protocol::Timestamp| match (q.at_seq, q.at_time) {
        (Some(at), None) => seq <= at,
        (None, Some(at)) => stored_at <= at,
        _ => false,
    };
    if q.at_seq.is_some() == q.at_time.is_some() {
        return Err(Error::Invalid { field: "at_seq".into(), reason: "give at_seq or at_time (one of them)".into() });
    }
    let loaded = projection
        .log()
        .load::<ContextEvent>(&q.scope.entries())
        .await
        .map_err(|e| Error::Unavailable { reason: format!("reading the history of {}: {e}", q.scope) })?;
    let events: Vec<_> = loaded.events.iter().take_while(|event| within(event.seq, event.stored_at)).collect();
    let set_at = events.iter().rev().find_map(|event| match &event.envelope.payload {
        ContextEvent::EntrySet(set) if set.section == Section::Kv && set.key == q.key => Some(event.seq),
        _ => None,
    });
    let folded = Folded::<ScopeState>::from_events(events);
    let when = q.at_seq.map_or_else(|| format!("at {}", q.at_time.unwrap_or_default()), |seq| format!("at seq {seq}"));
    let mut stored = folded.state.entry(Section::Kv, &q.key).cloned().ok_or_else(|| Error::NotFound {
        field: "key".into(),
        value: q.key.clone(),
        reason: format!("{} had no key by that name {when}", q.scope),
    })?;
    stored.seq = set_at.unwrap_or_default();
    Ok(entry_view(&q.scope, &stored, false))
}

/// A search by vector, or by text (embedded by an agent of the `embed` capability).
async fn search(
    embedder: Embedder,
    projection: Projection<ContextView>,
    caller: Caller,
    q: SearchQuery,
) -> Result<SearchResult, Error> {
    // The asker may read the scope before any run is submitted on its behalf.
    projection.read().check(&caller.actor, Access::Read, &q.scope)?;
    let (vector, embedded_by) = match (q.vector, q.text) {
        (Some(vector), None) => {
            check_vector("vector", &vector)?;
            (vector, None)
        }
        (None, Some(text)) => {
            let (vector, run) = embedder.embed(&text).await?;
            check_vector("vector", &vector).map_err(|error| Error::Invalid {
                field: "text".into(),
                reason: format!("run {run} gave a vector that cannot be compared: {error}"),
            })?;
            (vector, Some(run))
        }
        (Some(_), Some(_)) => {
            return Err(Error::Invalid { field: "text".into(), reason: "give a vector or a text, not both".into() })
        }
        (None, None) => {
            return Err(Error::Invalid { field: "vector".into(), reason: "give a vector, or a text to embed".into() })
        }
    };
    let mut result = projection.read().search(&caller.actor, &q.scope, &vector, q.top_k, q.filter.as_ref())?;
    result.embedded_by = embedded_by;
    Ok(result)
}
