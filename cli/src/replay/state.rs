//! `osp replay run --at`: the state of every projection the run touched, as it was at a
//! point of the log, folded from the run tree's events with each service's own view code
//! (its `evolve`s). Nothing is re-executed and no agent is called: the events are facts.
//!
//! Each service's view is fed only the tree's events up to that point, so what it shows
//! of the tree is what the live service showed then. Its digest covers what it was fed:
//! on a log that holds only this tree (a bug report's, imported), it is the service's own
//! digest at that point.

use osp_context::view::{entry_view, ContextView};
use osp_eventlog::{FromStored, Recorded};
use osp_protocol::context::{Scope, Section, SCOPE_KIND};
use osp_protocol::quality::{AUDIT_KIND, RULE_KIND};
use osp_protocol::registry::{EntryKey, ENTRY_KIND};
use osp_protocol::scheduler::RUN_KIND;
use osp_protocol::{AggregateRef, Timestamp};
use osp_quality::view::QualityView;
use osp_registry::view::RegistryView;
use osp_runtime::View;
use osp_scheduler::view::SchedulerView;
use serde_json::{json, Value};

use super::collect::Collected;
use crate::run::show::run_json;

/// A point of the log, as `--at` names it.
#[derive(Clone, Copy, Debug)]
pub enum Point {
    /// A stream sequence.
    Seq(u64),
    /// A time: the state after the tree's last event stored at or before it.
    Time(Timestamp),
}

/// The sequence whose state `--at point` shows: a sequence as given, or for a time the
/// last event of the tree stored at or before it (0 when the tree had not begun). A
/// point beyond the log (a sequence past `last`, a time after `now`) is read as its end,
/// and the note says so: a typo'd sequence showing the latest state without a word would
/// pass for the state asked for.
pub fn landing(collected: &Collected, point: Point, last: u64, now: Timestamp) -> (u64, Option<String>) {
    match point {
        Point::Seq(seq) if seq > last => {
            (last, Some(format!("is past the end of the log (last sequence {last}); showing the state at {last}")))
        }
        Point::Seq(seq) => (seq, None),
        Point::Time(time) => {
            let seq = collected
                .stored
                .iter()
                .filter(|message| message.stored_at <= time)
                .map(|message| message.seq)
                .max()
                .unwrap_or(0);
            let note = (time > now).then(|| format!("is still to come; showing the state now (seq {seq} of the run)"));
            (seq, note)
        }
    }
}

/// Folds the tree's events of `kinds` stored up to `at` into a new `V`.
fn fold<V: View>(collected: &Collected, kinds: &[&str], at: u64) -> V {
    let mut view = V::default();
    for message in collected.stored.iter().filter(|message| message.seq <= at) {
        let Ok(aggregate) = AggregateRef::from_subject(&message.subject) else { continue };
        if !kinds.contains(&aggregate.kind.as_str()) {
            continue;
        }
        match Recorded::<V::Event>::from_stored(message) {
            Ok(event) => view.apply(&event),
            // As a live view does: skipped loudly, `osp log verify` names it.
            Err(error) => {
                tracing::warn!(seq = message.seq, subject = %message.subject, %error, "unreadable event skipped")
            }
        }
    }
    view
}

/// The tree's aggregates of `kind`, by id.
fn ids<'a>(collected: &'a Collected, kind: &'a str) -> impl Iterator<Item = &'a str> {
    collected.aggregates.iter().filter(move |aggregate| aggregate.kind.as_str() == kind).map(|a| a.id.as_str())
}

/// The state of every service's view of the tree at `at`, as JSON: per service, what its
/// queries would show of the tree's aggregates, and its digest.
pub fn at(collected: &Collected, at: u64) -> anyhow::Result<Value> {
    let scheduler: SchedulerView = fold(collected, &osp_scheduler::VIEW_KINDS, at);
    let runs: Vec<Value> =
        ids(collected, RUN_KIND).filter_map(|id| scheduler.get(id)).map(|run| run_json(&run)).collect();

    let quality: QualityView = fold(collected, &osp_quality::VIEW_KINDS, at);
    let audits: Vec<Value> = ids(collected, AUDIT_KIND)
        .filter_map(|id| quality.audit(id))
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    let rules: Vec<Value> = ids(collected, RULE_KIND)
        .filter_map(|name| quality.rule(name))
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;

    let context: ContextView = fold(collected, &osp_context::KINDS, at);
    let mut scopes = Vec::new();
    for id in ids(collected, SCOPE_KIND) {
        let Ok(scope) = Scope::parse("scope", id) else { continue };
        let Some(state) = context.scope(&scope) else { continue };
        let entries: Vec<Value> = [Section::Kv, Section::Setting, Section::Preference, Section::Env]
            .into_iter()
            .flat_map(|section| {
                state.section(section).map(|(_, stored)| entry_view(&scope, stored, false)).collect::<Vec<_>>()
            })
            .map(|entry| serde_json::to_value(&entry).unwrap_or(Value::Null))
            .collect();
        scopes.push(json!({"scope": id, "entries": entries, "embeddings": state.embeddings.len()}));
    }

    let registry: RegistryView = fold(collected, &osp_registry::VIEW_KINDS, at);
    let agents: Vec<Value> = ids(collected, ENTRY_KIND)
        .filter_map(|id| EntryKey::from_aggregate_id(id).ok())
        .filter_map(|key| registry.get(&key))
        .map(|entry| json!({"name": entry.name, "status": entry.status, "revision": entry.revision}))
        .collect();

    Ok(json!({
        "root": collected.root.as_str(),
        "at_seq": at,
        "scheduler": {"digest": scheduler.digest()?, "runs": runs},
        "quality": {"digest": quality.digest()?, "audits": audits, "rules": rules},
        "context": {"digest": context.digest()?, "scopes": scopes},
        "registry": {"digest": registry.digest()?, "agents": agents},
    }))
}

/// The state as text: what each run, scope, audit and agent was at that point, and since
/// when (the tree's last event up to it, as stored in the `collected` log).
pub fn text(collected: &Collected, state: &Value) -> Vec<String> {
    let at = state["at_seq"].as_u64().unwrap_or(0);
    let since = match collected.stored.iter().filter(|message| message.seq <= at).map(|m| m.stored_at).max() {
        Some(stored_at) => format!(" ({})", crate::clock::time(stored_at)),
        None => String::new(),
    };
    let mut lines = vec![format!("run {} as of seq {at}{since}:", state["root"].as_str().unwrap_or(""))];
    let text = |value: &Value| value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    for run in state["scheduler"]["runs"].as_array().into_iter().flatten() {
        let attempts = run["attempts"].as_array().map_or(0, Vec::len);
        let mut line = format!("  run {}: {}", text(&run["run_id"]), text(&run["status"]));
        if attempts > 0 {
            line.push_str(&format!(", attempt {attempts}"));
        }
        if let Some(approval) = run["approval"].as_object() {
            line.push_str(&format!(", approval {}", text(&approval["state"])));
        }
        if !run["output"].is_null() {
            line.push_str(&format!(", output {}", run["output"]));
        }
        if !run["error"].is_null() {
            line.push_str(&format!(", error {}", run["error"]["message"]));
        }
        lines.push(line);
    }
    for scope in state["context"]["scopes"].as_array().into_iter().flatten() {
        for entry in scope["entries"].as_array().into_iter().flatten() {
            lines.push(format!("  scope {}: {} = {}", text(&scope["scope"]), text(&entry["key"]), entry["value"]));
        }
    }
    for audit in state["quality"]["audits"].as_array().into_iter().flatten() {
        let entry = &audit["entry"];
        lines.push(format!("  audit {}: {} {}", text(&entry["id"]), text(&entry["opinion"]), entry["findings"]));
    }
    for agent in state["registry"]["agents"].as_array().into_iter().flatten() {
        lines.push(format!("  agent {}: {}", text(&agent["name"]), text(&agent["status"])));
    }
    for service in ["scheduler", "quality", "context", "registry"] {
        lines.push(format!("  {service} digest {}", text(&state[service]["digest"]["digest"])));
    }
    lines
}

#[cfg(test)]
mod tests {
    use osp_eventlog::StoredMessage;
    use osp_protocol::Token;

    use super::*;

    #[test]
    fn a_point_beyond_the_log_is_its_end_and_says_so() {
        let stored = [(3, 1_000), (7, 2_000)]
            .map(|(seq, at)| StoredMessage {
                seq,
                subject: "osp.v1.evt.run.r-1".into(),
                stored_at: Timestamp(at),
                payload: Default::default(),
            })
            .to_vec();
        let collected =
            Collected { root: Token::new("run id", "r-1").unwrap(), stored, events: vec![], aggregates: vec![] };
        let now = Timestamp(5_000);
        assert_eq!(landing(&collected, Point::Seq(5), 9, now), (5, None));
        let (seq, note) = landing(&collected, Point::Seq(99_999), 9, now);
        assert_eq!(
            (seq, note.as_deref()),
            (9, Some("is past the end of the log (last sequence 9); showing the state at 9"))
        );
        assert_eq!(landing(&collected, Point::Time(Timestamp(1_500)), 9, now), (3, None));
        assert_eq!(landing(&collected, Point::Time(Timestamp(500)), 9, now), (0, None));
        let (seq, note) = landing(&collected, Point::Time(Timestamp(9_000)), 9, now);
        assert_eq!((seq, note.as_deref()), (7, Some("is still to come; showing the state now (seq 7 of the run)")));
    }
}
