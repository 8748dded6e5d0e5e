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

use serde_json::Value;

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

    /// Records what event `seq` of `aggregate` (`<kind>:<id>`) lets later ids lead to.
    pub fn note(&mut self, seq: u64, id: &str, event_type: &str, payload: &Value) {
        self.seqs.insert(seq);
        let attempt = payload["attempt"].as_u64();
        let run = || id.to_owned();
        match event_type {
            "run.submitted" => {
                if let Some(dispatched) = payload.get("dispatched").filter(|d| d.is_object()) {
                    self.dispatched(id, dispatched, seq);
                }
                if payload["workflow"].is_object() {
                    // A workflow run's own timeout runs from its submit (or approval).
                    self.timers.insert((run(), "timeout", 1), seq);
                }
            }
            "run.approved" => {
                self.timers.insert((run(), "timeout", 1), seq);
            }
            "run.dispatched" => self.dispatched(id, payload, seq),
            "run.started" => {
                self.starts.insert((run(), attempt.unwrap_or(0)), seq);
            }
            "run.steps_started" => {
                for step in payload["steps"].as_array().into_iter().flatten() {
                    if let Some(key) = step["key"].as_str() {
                        self.steps_started.insert((run(), key.to_owned()), seq);
                    }
                }
            }
            "run.completed" | "run.failed" | "run.cancelled" => {
                self.ends.insert(run(), seq);
            }
            "run.checking" => {
                if let Some(audit) = payload["audit_id"].as_str() {
                    self.checks.insert(audit.to_owned(), seq);
                }
                self.timers.insert((run(), "check", attempt.unwrap_or(0)), seq);
            }
            "run.retry_scheduled" => {
                self.timers.insert((run(), "retry", attempt.unwrap_or(0)), seq);
            }
            "run.approval_requested" => {
                self.timers.insert((run(), "approval", ANY_N), seq);
            }
            "run.cancel_requested" => {
                self.timers.insert((run(), "cancel", ANY_N), seq);
            }
            "audit.recorded" => {
                self.recorded.insert(id.to_owned(), seq);
            }
            "audit.opened" => {
                for part in payload["parts"].as_array().into_iter().flatten() {
                    if let Some(part_run) = part["run_id"].as_str() {
                        self.parts.insert(part_run.to_owned(), seq);
                    }
                }
            }
            _ => {}
        }
    }

    /// An attempt was dispatched (its timeout timer set with it).
    fn dispatched(&mut self, run: &str, dispatched: &Value, seq: u64) {
        let attempt = dispatched["attempt"].as_u64().unwrap_or(0);
        let dispatch = dispatched["dispatch"].as_u64().unwrap_or(0);
        self.dispatches.insert((run.to_owned(), attempt, dispatch), seq);
        self.timers.insert((run.to_owned(), "timeout", attempt), seq);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn noted() -> Causes {
        let mut causes = Causes::default();
        causes.note(2, "r1", "run.submitted", &json!({"workflow": {}}));
        causes.note(
            3,
            "r1",
            "run.steps_started",
            &json!({"steps": [{"key": "route:tech", "run_id": "r1:route:tech"}]}),
        );
        causes.note(4, "r1:route:tech", "run.submitted", &json!({"dispatched": {"attempt": 1, "dispatch": 1}}));
        causes.note(5, "r1:route:tech", "run.started", &json!({"attempt": 1, "agent": "a"}));
        causes.note(6, "r1:route:tech", "run.attempt_failed", &json!({"attempt": 1}));
        causes.note(7, "r1:route:tech", "run.retry_scheduled", &json!({"attempt": 2}));
        causes.note(8, "r1:route:tech", "run.dispatched", &json!({"attempt": 2, "dispatch": 1}));
        causes.note(9, "r1:route:tech", "run.checking", &json!({"attempt": 2, "audit_id": "au-1"}));
        causes.note(10, "au-1", "audit.opened", &json!({"parts": [{"run_id": "au-1:judge"}]}));
        causes.note(11, "r1:route:tech", "run.completed", &json!({"attempt": 2}));
        causes.note(12, "au-1", "audit.recorded", &json!({"entry": {}}));
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
