//! Finding every event of a run tree, across services, without reading the whole log.
//!
//! Every aggregate has its own subject, so the stream's subject index finds an
//! aggregate's events without scanning the others. The tree is walked from its root: the
//! events read name the next aggregates to read ([`referenced`]), level by level, each
//! level read with one ordered consumer per batch of subjects:
//! - a run's `run.steps_started` names its child runs (workflow steps), a
//!   `run.checking` the audit entry that checks an output, a `run.started` the agent
//!   (its registry entry);
//! - an audit entry's `audit.opened` names the runs of its parts (a judge, a custom
//!   rule), and its rules (their catalog entries);
//! - every run has a context scope and an embeddings aggregate (`run:<id>`).
//!
//! The correlation id (the root run) is in the envelope, not the subject, so finding
//! events by it would mean reading every event since the run began; the walk reads only
//! the tree's own aggregates (and the agents and rules they name), whatever else the log
//! holds. Refused commands (rejection records) are keyed by command, not by run, and are
//! not part of it.

use std::collections::BTreeSet;

use anyhow::Context as _;
use osp_eventlog::{EventLog, FromStored, LogItem, Recorded, Start, StoredMessage};
use osp_protocol::context::{EMBEDDINGS_KIND, SCOPE_KIND};
use osp_protocol::quality::{QualityEvent, Rule, AUDIT_KIND, RULE_KIND};
use osp_protocol::registry::{EntryKey, AGENTS};
use osp_protocol::scheduler::{RunEvent, RUN_KIND};
use osp_protocol::{AggregateRef, AnyPayload, Token};

use super::event::Event;

/// Subjects one consumer reads at once.
const SUBJECTS_PER_READ: usize = 64;

/// A run tree's events, in log order.
pub struct Collected {
    /// The root run.
    pub root: Token,
    /// Every event read, stored bytes and all, in log order.
    pub stored: Vec<StoredMessage>,
    /// The same events, decoded untyped (one per stored message that decodes).
    pub events: Vec<Recorded<AnyPayload>>,
    /// Every aggregate read, the runs first found first.
    pub aggregates: Vec<AggregateRef>,
}

/// Reads the tree of run `root`: its runs, their scopes, audit entries, agents and rules.
pub async fn run_tree(log: &EventLog, root: &str) -> anyhow::Result<Collected> {
    let root = Token::new("run id", root)?;
    let first = AggregateRef::new(RUN_KIND, root.as_str())?;
    let mut known: BTreeSet<AggregateRef> = BTreeSet::new();
    let mut aggregates = Vec::new();
    let mut next: Vec<AggregateRef> = with_scopes(first);
    let mut stored = Vec::new();
    while !next.is_empty() {
        let level: Vec<AggregateRef> = next.drain(..).filter(|aggregate| known.insert(aggregate.clone())).collect();
        aggregates.extend(level.iter().cloned());
        for batch in level.chunks(SUBJECTS_PER_READ) {
            for message in read(log, batch).await? {
                if let Ok(event) = Recorded::<AnyPayload>::from_stored(&message) {
                    for found in referenced(&Event::of(&event.envelope.payload)) {
                        if !known.contains(&found) {
                            next.extend(with_scopes(found));
                        }
                    }
                }
                stored.push(message);
            }
        }
    }
    if !stored.iter().any(|message| message.subject == aggregates[0].subject()) {
        anyhow::bail!("the log has no run {:?} (osp run list shows the runs)", root.as_str());
    }
    stored.sort_by_key(|message| message.seq);
    stored.dedup_by_key(|message| message.seq);
    let events = stored.iter().filter_map(|message| Recorded::from_stored(message).ok()).collect();
    Ok(Collected { root, stored, events, aggregates })
}

/// Every event on `aggregates`' subjects, in log order.
async fn read(log: &EventLog, aggregates: &[AggregateRef]) -> anyhow::Result<Vec<StoredMessage>> {
    let subjects: Vec<String> = aggregates.iter().map(AggregateRef::subject).collect();
    let filters: Vec<&str> = subjects.iter().map(String::as_str).collect();
    let mut follow = log.follow_any::<StoredMessage>(&filters, Start::All).await.context("reading the run's events")?;
    let mut messages = Vec::new();
    while let Some(item) = follow.next().await {
        match item? {
            LogItem::Event(message) => messages.push(message),
            LogItem::Malformed(_) => {}
            LogItem::CaughtUp(_) => break,
        }
    }
    Ok(messages)
}

/// An aggregate, and for a run its context scope and embeddings.
fn with_scopes(aggregate: AggregateRef) -> Vec<AggregateRef> {
    let mut all = Vec::new();
    if aggregate.kind.as_str() == RUN_KIND {
        let scope = format!("run:{}", aggregate.id);
        all.extend([SCOPE_KIND, EMBEDDINGS_KIND].iter().filter_map(|kind| AggregateRef::new(kind, &scope).ok()));
    }
    all.insert(0, aggregate);
    all
}

/// The aggregates `event` names: see the module's documentation. A name that is no
/// subject token names no aggregate.
pub fn referenced(event: &Event) -> Vec<AggregateRef> {
    let named: Vec<(&str, &str)> = match event {
        Event::Run(RunEvent::StepsStarted(started)) => {
            started.steps.iter().map(|step| (RUN_KIND, step.run_id.as_str())).collect()
        }
        Event::Run(RunEvent::Checking(checking)) => vec![(AUDIT_KIND, checking.audit_id.as_str())],
        Event::Run(RunEvent::Started(started)) => {
            return EntryKey::new(AGENTS, &started.agent).map(|agent| agent.aggregate()).into_iter().collect()
        }
        Event::Quality(QualityEvent::AuditOpened(opened)) => {
            let runs = opened.parts.iter().map(|part| (RUN_KIND, part.run_id.as_str()));
            runs.chain(rules(&opened.rules)).collect()
        }
        Event::Quality(QualityEvent::AuditRecorded(recorded)) => rules(&recorded.rules).collect(),
        _ => Vec::new(),
    };
    named.into_iter().filter_map(|(kind, id)| AggregateRef::new(kind, id).ok()).collect()
}

/// The catalog entries of `rules`.
fn rules(rules: &[Rule]) -> impl Iterator<Item = (&'static str, &str)> {
    rules.iter().map(|rule| (RULE_KIND, rule.name.as_str()))
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::event::tests::read;
    use super::*;

    fn names(found: Vec<AggregateRef>) -> Vec<String> {
        found.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn events_name_the_aggregates_of_the_tree() {
        let referenced = |event_type: &str, payload: Value| referenced(&read(event_type, &payload));
        let step = |key: &str, run_id: &str| json!({"key": key, "run_id": run_id, "step": {"task": {"capability": "c"}}, "input": null});
        let steps = json!({"steps": [step("a", "r:a"), step("b", "r:b")], "total": 2});
        assert_eq!(names(referenced("run.steps_started", steps)), ["run:r:a", "run:r:b"]);
        let checking = json!({"attempt": 1, "audit_id": "r-check-1", "output": null, "deadline": 0});
        assert_eq!(names(referenced("run.checking", checking)), ["audit:r-check-1"]);
        assert_eq!(names(referenced("run.started", json!({"agent": "bob", "attempt": 1}))), ["entry:agents:bob"]);
        let opened = json!({
            "check": {"audit_id": "x", "output": null, "rules": ["short"], "objectives": []},
            "rules": [{"name": "short", "severity": "error", "kind": "regex", "params": {"pattern": "a"}}],
            "results": [],
            "parts": [{"part": "judge", "run_id": "x:judge", "capability": "judge"}],
            "deadline": 0,
        });
        assert_eq!(names(referenced("audit.opened", opened)), ["run:x:judge", "rule:short"]);
        assert!(referenced("run.completed", json!({"attempt": 1, "output": {"run_id": "nope"}})).is_empty());
        // A name that is no subject token is no aggregate (and no crash).
        assert!(referenced("run.started", json!({"agent": "a b", "attempt": 1})).is_empty());
    }

    #[test]
    fn a_run_comes_with_its_scopes() {
        let run = AggregateRef::new(RUN_KIND, "r1").unwrap();
        assert_eq!(names(with_scopes(run)), ["run:r1", "scope:run:r1", "embeddings:run:r1"]);
        let audit = AggregateRef::new(AUDIT_KIND, "a1").unwrap();
        assert_eq!(names(with_scopes(audit)), ["audit:a1"]);
    }
}
