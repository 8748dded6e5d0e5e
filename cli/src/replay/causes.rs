//! Causation arrows: which event (or which command from outside) caused each event of a
//! run tree.
//!
//! An event's `causation_id` is the id of the command it was decided on. Commands are
//! not on the log (the inbox forgets them once handled), but the services name the
//! commands they send themselves after what caused them, so most ids lead back to an
//! event of the tree:
//!
//! | causation id | sent by | caused by the event |
//! |---|---|---|
//! | `advance:<run>:<seq>` | scheduler, after an event of a workflow run | at `<seq>` |
//! | `start:<parent>:<key>` | scheduler, starting a step | the parent's `run.steps_started` naming `<key>` |
//! | `step-ended:<child>` | scheduler, telling a parent | the child run's end |
//! | `started:<run>:<attempt>:<dispatch>:<agent>` | an agent taking a task | that dispatch of that attempt |
//! | `completed:`, `failed:`, `progress:`, `log:<run>:<attempt>` | an agent reporting | the start of that attempt |
//! | `check:<audit>` | scheduler, checking an output | the run's `run.checking` of that audit |
//! | `checked:<audit>` | scheduler, reading a check's outcome | that audit's `audit.recorded` |
//! | `submit:<part run>` | quality, running a check's part | the `audit.opened` naming that run |
//! | `run-ended:<run>` | scheduler, telling quality | that run's end |
//! | `timer:<run>:<kind>:<n>` | a fired timer (timeout, retry, approval, cancel, check) | the event that set it |
//!
//! Any other id is a command from outside (a person, an agent, a client) and is shown as
//! such. An agent speaking the wire protocol with ids of its own loses only the arrows of
//! its reports.

use std::collections::HashMap;

use osp_protocol::quality::QualityEvent;
use osp_protocol::scheduler::{Dispatched, RunEvent};

use super::event::Event;

/// The `n` of a timer whose event does not say it (an approval's, a cancel's): any.
const ANY_N: u64 = 0;

/// What caused an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// An earlier event of the tree, at this sequence.
    Event(u64),
    /// A command from outside the tree, by its id.
    Command(String),
    /// Nothing recorded.
    Unknown,
}

/// What the events read so far say about where later causation ids lead.
#[derive(Default)]
pub struct Causes {
    /// `(parent run, step key)` → its `run.steps_started`.
    steps_started: HashMap<(String, String), u64>,
    /// run → its end (completed, failed, cancelled).
    ends: HashMap<String, u64>,
    /// `(run, attempt, dispatch)` → the event that dispatched it.
    dispatches: HashMap<(String, u64, u64), u64>,
    /// `(run, attempt)` → its `run.started`.
    starts: HashMap<(String, u64), u64>,
    /// audit id → the `run.checking` that asked for it.
    checks: HashMap<String, u64>,
    /// part run → the `audit.opened` that names it.
    parts: HashMap<String, u64>,
    /// (run, timer kind, n) → the event that set that timer.
    timers: HashMap<(String, &'static str, u64), u64>,
    /// audit id → its `audit.recorded`.
    recorded: HashMap<String, u64>,
    /// Every sequence seen.
    seqs: std::collections::HashSet<u64>,
}

impl Causes {
    /// Resolves the cause of an event (read in log order, after every event before it
    /// was [`noted`](Self::note)).
    pub fn resolve(&self, causation_id: Option<&str>) -> Cause {
        let Some(id) = causation_id else { return Cause::Unknown };
        self.event_of(id).map_or_else(|| Cause::Command(id.to_owned()), Cause::Event)
    }

    fn event_of(&self, id: &str) -> Option<u64> {
        let (verb, rest) = id.split_once(':').unwrap_or((id, ""));
        match verb {
            "advance" => {
                rest.rsplit_once(':').and_then(|(_, seq)| seq.parse().ok()).filter(|seq| self.seqs.contains(seq))
            }
            "start" => self
                .split_points(rest)
                .find_map(|(parent, key)| self.steps_started.get(&(parent.to_owned(), key.to_owned())).copied()),
            "step-ended" | "run-ended" => self.ends.get(rest).copied(),
            "started" => {
                // <run>:<attempt>:<dispatch>:<agent>, where the run id may hold ':'.
                let mut parts = rest.rsplitn(4, ':');
                let (_agent, dispatch, attempt, run) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                self.dispatches.get(&(run.to_owned(), attempt.parse().ok()?, dispatch.parse().ok()?)).copied()
            }
            "completed" | "failed" | "progress" | "log" => {
                let (run, attempt) = rest.rsplit_once(':')?;
                self.starts.get(&(run.to_owned(), attempt.parse().ok()?)).copied()
            }
            "check" => self.checks.get(rest).or_else(|| self.checks.get(rest.rsplit_once(':')?.0)).copied(),
            "checked" => self.recorded.get(rest).copied(),
            "submit" => self.parts.get(rest).copied(),
            "timer" => self.timer(rest),
            _ => None,
        }
    }

    /// Every way to split `text` at a `:` into (run id, step key), longest run id first.
    fn split_points<'a>(&self, text: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        text.match_indices(':').map(move |(i, _)| (&text[..i], &text[i + 1..])).collect::<Vec<_>>().into_iter().rev()
    }

    /// `<run>:<kind>:<n>`: a timer of that run, set by the event that noted it.
    fn timer(&self, rest: &str) -> Option<u64> {
        let mut parts = rest.rsplitn(3, ':');
        let (n, kind, run) = (parts.next()?.parse::<u64>().ok()?, parts.next()?, parts.next()?);
        let set = |n: u64| self.timers.iter().find(|((r, k, m), _)| r == run && *k == kind && *m == n);
        set(n).or_else(|| set(ANY_N)).map(|(_, seq)| *seq)
    }

    /// Records what event `seq` of aggregate `id` lets later ids lead to.
    pub fn note(&mut self, seq: u64, id: &str, event: &Event) {
        self.seqs.insert(seq);
        let run = || id.to_owned();
        match event {
            Event::Run(RunEvent::Submitted(submitted)) => {
                if let Some(dispatched) = &submitted.dispatched {
                    self.dispatched(id, dispatched, seq);
                }
                if submitted.workflow.is_some() {
                    // A workflow run's own timeout runs from its submit (or approval).
                    self.timers.insert((run(), "timeout", 1), seq);
                }
            }
            Event::Run(RunEvent::Approved(_)) => {
                self.timers.insert((run(), "timeout", 1), seq);
            }
            Event::Run(RunEvent::Dispatched(dispatched)) => self.dispatched(id, dispatched, seq),
            Event::Run(RunEvent::Started(started)) => {
                self.starts.insert((run(), started.attempt.into()), seq);
            }
            Event::Run(RunEvent::StepsStarted(started)) => {
                for step in &started.steps {
                    self.steps_started.insert((run(), step.key.clone()), seq);
                }
            }
            Event::Run(RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_)) => {
                self.ends.insert(run(), seq);
            }
            Event::Run(RunEvent::Checking(checking)) => {
                self.checks.insert(checking.audit_id.to_string(), seq);
                self.timers.insert((run(), "check", checking.attempt.into()), seq);
            }
            Event::Run(RunEvent::RetryScheduled(retry)) => {
                self.timers.insert((run(), "retry", retry.attempt.into()), seq);
            }
            Event::Run(RunEvent::ApprovalRequested(_)) => {
                self.timers.insert((run(), "approval", ANY_N), seq);
            }
            Event::Run(RunEvent::CancelRequested(_)) => {
                self.timers.insert((run(), "cancel", ANY_N), seq);
            }
            Event::Quality(QualityEvent::AuditRecorded(_)) => {
                self.recorded.insert(id.to_owned(), seq);
            }
            Event::Quality(QualityEvent::AuditOpened(opened)) => {
                for part in &opened.parts {
                    self.parts.insert(part.run_id.to_string(), seq);
                }
            }
            _ => {}
        }
    }

    /// An attempt was dispatched (its timeout timer set with it).
    fn dispatched(&mut self, run: &str, dispatched: &Dispatched, seq: u64) {
        let attempt = u64::from(dispatched.attempt);
        self.dispatches.insert((run.to_owned(), attempt, dispatched.dispatch.into()), seq);
        self.timers.insert((run.to_owned(), "timeout", attempt), seq);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::event::tests::read;
    use super::*;

    fn noted() -> Causes {
        let mut causes = Causes::default();
        let mut note =
            |seq: u64, id: &str, event_type: &str, payload: Value| causes.note(seq, id, &read(event_type, &payload));
        let task = json!({"task": {"capability": "tech"}});
        let routing = json!({"routing": {"classify": task, "routes": {"tech": task}}});
        note(2, "r1", "run.submitted", json!({"workflow": routing, "input": null, "options": {}}));
        let step = json!({"key": "route:tech", "run_id": "r1:route:tech", "step": task, "input": null});
        note(3, "r1", "run.steps_started", json!({"steps": [step], "total": 2}));
        let dispatched = json!({"attempt": 1, "dispatch": 1});
        let submitted = json!({"capability": "tech", "input": null, "options": {}, "dispatched": dispatched});
        note(4, "r1:route:tech", "run.submitted", submitted);
        note(5, "r1:route:tech", "run.started", json!({"attempt": 1, "agent": "a"}));
        let error = json!({"kind": "error", "message": "m"});
        let failed = json!({"attempt": 1, "error": error, "retryable": true, "cause": "agent"});
        note(6, "r1:route:tech", "run.attempt_failed", failed);
        note(7, "r1:route:tech", "run.retry_scheduled", json!({"attempt": 2, "delay_ms": 100, "due_at": 0}));
        note(8, "r1:route:tech", "run.dispatched", json!({"attempt": 2, "dispatch": 1}));
        let checking = json!({"attempt": 2, "audit_id": "au-1", "output": null, "deadline": 0});
        note(9, "r1:route:tech", "run.checking", checking);
        let check = json!({"audit_id": "au-1", "output": null, "rules": [], "objectives": []});
        let part = json!({"part": "judge", "run_id": "au-1:judge", "capability": "judge"});
        let opened = json!({"check": check, "rules": [], "results": [], "parts": [part], "deadline": 0});
        note(10, "au-1", "audit.opened", opened);
        note(11, "r1:route:tech", "run.completed", json!({"attempt": 2, "output": null}));
        let findings = json!({"critical": 0, "major": 0, "minor": 0});
        let entry = json!({"id": "au-1", "createdAt": 0, "opinion": "unqualified", "findings": findings});
        note(12, "au-1", "audit.recorded", json!({"entry": entry, "rules": []}));
        causes
    }

    #[test]
    fn the_services_own_command_ids_lead_back_to_events() {
        let causes = noted();
        for (id, seq) in [
            ("advance:r1:2", 2),
            ("start:r1:route:tech", 3),
            ("started:r1:route:tech:1:1:agent-a", 4),
            ("failed:r1:route:tech:1", 5),
            ("started:r1:route:tech:2:1:agent-b", 8),
            ("check:au-1", 9),
            ("check:au-1:0123456789abcdef", 9),
            ("submit:au-1:judge", 10),
            ("step-ended:r1:route:tech", 11),
            ("run-ended:r1:route:tech", 11),
            ("checked:au-1", 12),
        ] {
            assert_eq!(causes.resolve(Some(id)), Cause::Event(seq), "{id}");
        }
    }

    #[test]
    fn a_fired_timer_leads_to_the_event_that_set_it() {
        let causes = noted();
        assert_eq!(causes.resolve(Some("timer:r1:route:tech:retry:2")), Cause::Event(7));
        assert_eq!(causes.resolve(Some("timer:r1:route:tech:timeout:2")), Cause::Event(8));
        assert_eq!(causes.resolve(Some("timer:r1:route:tech:check:2")), Cause::Event(9));
        assert_eq!(causes.resolve(Some("timer:r2:retry:2")), Cause::Command("timer:r2:retry:2".into()));
    }

    #[test]
    fn other_ids_are_commands_from_outside() {
        let causes = noted();
        for id in ["submit:r1:b7b1c9e0904a7f21", "advance:r1:999", "approve:r1:ana", "0192f1c2-7e3a", "started:x"] {
            assert_eq!(causes.resolve(Some(id)), Cause::Command(id.to_owned()), "{id}");
        }
        assert_eq!(causes.resolve(None), Cause::Unknown);
    }
}
