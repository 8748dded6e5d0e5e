//! The context service's query endpoints (`osp.v1.q.context.*`): thin readers of the view,
//! each asked as someone. A read in one scope may recall it from the log (a run's scope,
//! after the run ended: [`in_scope`]), `history` reads the log and `search` by text waits
//! for an embedding run: those await.

use std::sync::Arc;

use osp_protocol::context::queries::{
    DigestQuery, EmbeddingQuery, EntryView, EnvQuery, EnvsQuery, GetQuery, HistoryQuery, KeyQuery, ListQuery,
    PageQuery, PreferenceQuery, ScopePageQuery, SearchQuery, SearchResult, SystemQuery,
};
use osp_protocol::context::{agent_of, check_vector, ContextEvent, Scope, Section};
use osp_protocol::{Error, Token};
use osp_runtime::{Caller, Folded, Keeps, Projection, Query};

use crate::access::Access;
use crate::aggregate::ScopeState;
use crate::embed::Embedder;
use crate::reads::{Page, ScopeEmbeddings, ScopeEntries};
use crate::scopes::ScopeRecord;
use crate::view::{entry_view, ContextView, RevealPolicy};

/// Every query the context service answers.
pub fn all(policy: Arc<RevealPolicy>, embedder: Embedder) -> Vec<Query<ContextView>> {
    let (settings_policy, prefs_policy, envs_policy) = (policy.clone(), policy.clone(), policy.clone());
    vec![
        Query::deferred("get", |projection, caller, q: GetQuery| async move {
            entries_of(&projection, &caller, &q.scope, |scope| scope.entry(Section::Kv, &q.key)).await
        }),
        Query::deferred("history", history),
        Query::deferred("list", |projection, caller, q: ListQuery| async move {
            let prefix = q.prefix.as_deref().unwrap_or("");
            entries_of(&projection, &caller, &q.scope, |scope| scope.keys(prefix, q.after.as_deref(), q.limit)).await
        }),
        Query::deferred("setting", |projection, caller, q: KeyQuery| async move {
            entries_of(&projection, &caller, &Scope::Global, |scope| scope.entry(Section::Setting, &q.key)).await
        }),
        Query::deferred("settings", move |projection, caller, q: PageQuery| {
            let policy = settings_policy.clone();
            async move {
                let page = Page { after: q.after.as_deref(), limit: q.limit, ..Page::default() };
                let read = |scope: ScopeEntries| scope.page(&caller.actor, Section::Setting, page, &policy);
                entries_of(&projection, &caller, &Scope::Global, read).await
            }
        }),
        Query::asked("preference", |view: &ContextView, caller: &Caller, q: PreferenceQuery| {
            let agent = name_or_own("agent", q.agent, agent_of(&caller.actor))?;
            let user = name_or_own("user", q.user, caller.actor.strip_prefix("user:"))?;
            view.preference(&caller.actor, &q.key, agent.as_ref(), user.as_ref())
        }),
        Query::deferred("preferences", move |projection, caller, q: ScopePageQuery| {
            let policy = prefs_policy.clone();
            async move {
                if !matches!(q.scope, Scope::Agent(_) | Scope::User(_)) {
                    return Err(Error::Invalid {
                        field: "scope".into(),
                        reason: format!("preferences belong to agent:<name> or user:<name>, not {}", q.scope),
                    });
                }
                let page = Page { after: q.after.as_deref(), limit: q.limit, ..Page::default() };
                let read = |scope: ScopeEntries| scope.page(&caller.actor, Section::Preference, page, &policy);
                entries_of(&projection, &caller, &q.scope, read).await
            }
        }),
        Query::deferred("env", move |projection, caller, q: EnvQuery| {
            let policy = policy.clone();
            async move {
                let read = |scope: ScopeEntries| scope.env(&caller.actor, &q.key, q.reveal, &policy);
                entries_of(&projection, &caller, &q.scope, read).await
            }
        }),
        Query::deferred("envs", move |projection, caller, q: EnvsQuery| {
            let policy = envs_policy.clone();
            async move {
                let page =
                    Page { after: q.after.as_deref(), limit: q.limit, target: q.target.as_deref(), reveal: q.reveal };
                let read = |scope: ScopeEntries| scope.page(&caller.actor, Section::Env, page, &policy);
                entries_of(&projection, &caller, &q.scope, read).await
            }
        }),
        Query::deferred("embedding", |projection, caller, q: EmbeddingQuery| async move {
            embeddings_of(&projection, &caller, &q.scope, |scope| scope.embedding(&q.id)).await
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

/// `read` of `scope`'s aggregate of kind `EMBEDDINGS`, as `caller` may read it: the one
/// in memory, or, for a scope that may have left it, the one on the log (`read` of an
/// empty one when the scope has no such events).
async fn in_scope<const EMBEDDINGS: bool, T>(
    projection: &Projection<ContextView>,
    caller: &Caller,
    scope: &Scope,
    read: impl Fn(&ScopeRecord<EMBEDDINGS>) -> Result<T, Error>,
) -> Result<T, Error>
where
    ContextView: Keeps<ScopeRecord<EMBEDDINGS>>,
{
    let id = scope.to_string();
    {
        let view = projection.read();
        view.check(&caller.actor, Access::Read, scope)?;
        if !view.may_have_left(scope) {
            return match Keeps::<ScopeRecord<EMBEDDINGS>>::resident(&*view).get(&id) {
                Some(record) => read(record),
                None => read(&ScopeRecord::default()),
            };
        }
    }
    let aggregate = scope.aggregate(ScopeRecord::<EMBEDDINGS>::KIND);
    let recalled = projection.recall(&aggregate, &read).await.map_err(|error| unreadable(scope, error))?;
    recalled.unwrap_or_else(|| read(&ScopeRecord::default()))
}

/// `read` of `scope`'s entries ([`in_scope`]).
async fn entries_of<T>(
    projection: &Projection<ContextView>,
    caller: &Caller,
    scope: &Scope,
    read: impl Fn(ScopeEntries) -> Result<T, Error>,
) -> Result<T, Error> {
    in_scope::<false, T>(projection, caller, scope, |record| read(ScopeEntries { scope, state: record.state() })).await
}

/// `read` of `scope`'s embeddings ([`in_scope`]).
async fn embeddings_of<T>(
    projection: &Projection<ContextView>,
    caller: &Caller,
    scope: &Scope,
    read: impl Fn(ScopeEmbeddings) -> Result<T, Error>,
) -> Result<T, Error> {
    in_scope::<true, T>(projection, caller, scope, |record| read(ScopeEmbeddings { scope, index: record.index() }))
        .await
}

/// Why an aggregate could not be read from the log: an event in its history that cannot
/// be read is named (`damaged`); anything else is the log being out of reach.
pub(crate) fn unreadable(what: impl std::fmt::Display, error: osp_eventlog::Error) -> Error {
    match error {
        osp_eventlog::Error::Malformed { seq, subject, error } => {
            Error::Damaged { aggregate: subject, seq, reason: error.to_string() }
        }
        other => Error::Unavailable { reason: format!("reading {what} from the log: {other}") },
    }
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
    let read = |scope: ScopeEmbeddings| scope.search(&vector, q.top_k, q.filter.as_ref());
    let mut result = embeddings_of(&projection, &caller, &q.scope, read).await?;
    result.embedded_by = embedded_by;
    Ok(result)
}
