//! Who may read and write which scope. Pure: a function of the actor, the scope and what
//! the log says of runs.
//!
//! An **agent** (actor `agent:<name>`):
//! - reads `global`, its own `agent:<name>`, the scopes of the runs it works on (a run it
//!   started an attempt of, and its workflow's root, until they end), and the `session:`
//!   and `user:` scopes those runs name (their metadata's `session`, their submitter);
//! - writes only its own agent scope and the scopes of the runs it works on.
//!
//! An **operator** (any other actor: `user:ana`, `service:x`, `anonymous`) reads and writes
//! every scope. `Osp-Actor` is a claim: who may claim what is for NATS permissions.
//!
//! **Archive policy**: when a run ends (completed, failed or cancelled) its scope is
//! archived: nobody writes it any more, agents no longer read it (they no longer work on
//! it), operators still do, and its whole history stays in the log. A run that ended
//! leaves the view's memory after a grace period ([`crate::runs`]), so a write says
//! whether its scope's run has ended ([`Access::Write`]): the writer's admission recalls
//! the run from the log when it is no longer in memory.

use osp_protocol::context::{agent_of, Scope};
use osp_protocol::{headers, Error};

use crate::runs::Runs;

/// What is done to a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read it.
    Read,
    /// Write it; `run_ended`: it is the scope of a run that has ended.
    Write { run_ended: bool },
}

impl Access {
    fn verb(self) -> &'static str {
        match self {
            Access::Read => "read",
            Access::Write { .. } => "write",
        }
    }
}

/// Whether `actor` may `access` `scope`; the refusal says why.
pub fn check(actor: &str, access: Access, scope: &Scope, runs: &Runs) -> Result<(), Error> {
    if let (Access::Write { run_ended: true }, Scope::Run(run)) = (access, scope) {
        return Err(Error::IllegalTransition {
            command: "write".into(),
            state: "archived".into(),
            reason: format!("run {run} has ended, so its scope {scope} is read-only; its history stays in the log"),
        });
    }
    let Some(agent) = agent_of(actor) else { return Ok(()) };
    let allowed = match (scope, access) {
        (Scope::Global, Access::Read) => true,
        (Scope::Global, Access::Write { .. }) => false,
        (Scope::Agent(name), _) => name.as_str() == agent,
        (Scope::Run(run), _) => runs.worked_on_by(agent).contains(run.as_str()),
        (Scope::Session(session), Access::Read) => runs
            .worked_on_by(agent)
            .into_iter()
            .any(|run| runs.run(run).and_then(|facts| facts.session.as_deref()) == Some(session.as_str())),
        (Scope::User(user), Access::Read) => runs
            .worked_on_by(agent)
            .into_iter()
            .any(|run| runs.run(run).is_some_and(|facts| facts.submitter.strip_prefix("user:") == Some(user.as_str()))),
        (Scope::Session(_) | Scope::User(_), Access::Write { .. }) => false,
    };
    match allowed {
        true => Ok(()),
        false => Err(Error::Forbidden {
            field: format!("{} header", headers::ACTOR),
            value: actor.to_owned(),
            reason: format!("may not {} {scope}: {}", access.verb(), why_not(scope, access)),
        }),
    }
}

/// The rule an agent's refusal rests on, in words.
fn why_not(scope: &Scope, access: Access) -> &'static str {
    match (scope, access) {
        (Scope::Global, _) => "agents read the global scope but do not write it",
        (Scope::Agent(_), _) => "an agent reads and writes its own agent scope only",
        (Scope::Run(_), _) => "an agent reaches the scope of a run only while it works on it (it started an attempt of it or of one of its workflow's steps, and the run has not ended)",
        (Scope::Session(_) | Scope::User(_), Access::Read) => {
            "an agent reads a session or user scope only when a run it works on names it"
        }
        (Scope::Session(_) | Scope::User(_), Access::Write { .. }) => "agents do not write session or user scopes",
    }
}

#[cfg(test)]
mod tests {
    use osp_eventlog::Recorded;
    use osp_protocol::registry::document::from_json;
    use osp_protocol::scheduler::{Completed, RunEvent, RunOptions, Started, Submitted, RUN_KIND};
    use osp_protocol::{AggregateRef, EventHash, Timestamp, Token};
    use osp_runtime::testing::envelope;

    use super::*;
    use crate::input::ContextInput;
    use crate::runs::RunRecord;

    /// A write, told whether the scope's run has ended by [`allowed`], as an admission is.
    const WRITE: Access = Access::Write { run_ended: false };

    fn scope(text: &str) -> Scope {
        Scope::parse("scope", text).unwrap()
    }

    /// Event `version` of run `run`, by `actor`.
    fn apply(runs: &mut Runs, run: &str, payload: RunEvent, version: u64, actor: &str, root: Option<&str>) {
        let mut event = envelope(ContextInput::Run(payload), version);
        event.aggregate = AggregateRef::new(RUN_KIND, run).unwrap();
        event.actor = actor.into();
        event.correlation_id = root.map(str::to_owned);
        runs.apply(&Recorded { seq: version, stored_at: event.occurred_at, hash: EventHash([0; 32]), envelope: event });
    }

    fn submitted(runs: &mut Runs, run: &str, by: &str, root: Option<&str>, session: Option<&str>) {
        let metadata = session.map(|session| from_json(&serde_json::json!({"session": session})));
        let payload = RunEvent::Submitted(Submitted {
            capability: Some(Token::new("c", "x").unwrap()),
            workflow: None,
            parent: None,
            input: from_json(&serde_json::Value::Null),
            options: RunOptions::default(),
            metadata,
            dispatched: None,
        });
        apply(runs, run, payload, 1, by, root);
    }

    fn started(runs: &mut Runs, run: &str, agent: &str) {
        apply(runs, run, RunEvent::Started(Started { attempt: 1, agent: agent.into() }), 2, "test", None);
    }

    fn ended(runs: &mut Runs, run: &str) {
        let completed = Completed { attempt: 1, output: from_json(&serde_json::json!(1)) };
        apply(runs, run, RunEvent::Completed(completed), 3, "test", None);
    }

    /// Whether `actor` may `access` the scope `text`; a write is told whether the scope's
    /// run has ended, as the admission of a command finds out (here, from the runs in memory).
    fn allowed(runs: &Runs, actor: &str, access: Access, text: &str) -> bool {
        let access = match (access, scope(text)) {
            (Access::Write { .. }, Scope::Run(run)) => {
                Access::Write { run_ended: runs.resident().get(run.as_str()).is_some_and(RunRecord::ended) }
            }
            _ => access,
        };
        check(actor, access, &scope(text), runs).is_ok()
    }

    #[test]
    fn agents_reach_the_runs_they_work_on_and_nothing_of_others() {
        let mut runs = Runs::default();
        submitted(&mut runs, "r1", "user:ana", None, Some("chat-1"));
        submitted(&mut runs, "r2", "user:bob", None, None);
        started(&mut runs, "r1", "a1");
        started(&mut runs, "r2", "a2");
        for access in [Access::Read, WRITE] {
            assert!(allowed(&runs, "agent:a1", access, "run:r1"));
            assert!(!allowed(&runs, "agent:a1", access, "run:r2"));
            assert!(allowed(&runs, "agent:a2", access, "run:r2"));
            assert!(allowed(&runs, "agent:a1", access, "agent:a1"));
            assert!(!allowed(&runs, "agent:a1", access, "agent:a2"));
            assert!(allowed(&runs, "user:ana", access, "run:r2"), "operators reach every scope");
        }
        assert!(allowed(&runs, "agent:a1", Access::Read, "global"));
        assert!(!allowed(&runs, "agent:a1", WRITE, "global"));
        assert!(allowed(&runs, "agent:a1", Access::Read, "session:chat-1"));
        assert!(!allowed(&runs, "agent:a2", Access::Read, "session:chat-1"));
        assert!(!allowed(&runs, "agent:a1", WRITE, "session:chat-1"));
        assert!(allowed(&runs, "agent:a1", Access::Read, "user:ana"));
        assert!(!allowed(&runs, "agent:a1", Access::Read, "user:bob"));
        let error = check("agent:a1", Access::Read, &scope("run:r2"), &runs).unwrap_err();
        assert_eq!((error.code(), error.field()), ("forbidden", Some("Osp-Actor header")));
        assert!(error.to_string().contains("may not read run:r2"), "{error}");
    }

    #[test]
    fn a_workflows_steps_share_its_roots_scope_and_an_ended_run_is_archived() {
        let mut runs = Runs::default();
        submitted(&mut runs, "wf", "user:ana", None, None);
        submitted(&mut runs, "wf:step", "service:scheduler", Some("wf"), None);
        started(&mut runs, "wf:step", "a1");
        assert!(allowed(&runs, "agent:a1", WRITE, "run:wf"));
        assert!(allowed(&runs, "agent:a1", WRITE, "run:wf:step"));
        ended(&mut runs, "wf:step");
        assert!(!allowed(&runs, "agent:a1", Access::Read, "run:wf:step"), "the step ended");
        assert!(allowed(&runs, "agent:a1", WRITE, "run:wf"), "the workflow goes on");
        assert!(!allowed(&runs, "user:ana", WRITE, "run:wf:step"));
        let error = check("user:ana", Access::Write { run_ended: true }, &scope("run:wf:step"), &runs).unwrap_err();
        assert_eq!(error.code(), "illegal_transition");
        assert!(allowed(&runs, "user:ana", Access::Read, "run:wf:step"), "operators still read it");
        ended(&mut runs, "wf");
        assert!(!allowed(&runs, "agent:a1", Access::Read, "run:wf"));
    }

    #[test]
    fn runs_that_left_memory_reach_nobody_and_a_step_that_left_still_reaches_its_live_root() {
        let mut runs = Runs::default();
        submitted(&mut runs, "wf", "user:ana", None, Some("chat-1"));
        submitted(&mut runs, "wf:step", "service:scheduler", Some("wf"), None);
        submitted(&mut runs, "solo", "user:bob", None, None);
        started(&mut runs, "wf:step", "a1");
        started(&mut runs, "solo", "a1");
        ended(&mut runs, "wf:step");
        ended(&mut runs, "solo");
        let later = Timestamp(i64::MAX);
        assert_eq!(runs.evict(later), 2, "the step and the solo run ended");
        assert!(runs.run("wf:step").is_none() && runs.run("solo").is_none());
        assert_eq!(runs.worked_on_by("a1"), ["wf"].into(), "the step's agent works on the workflow still");
        assert!(allowed(&runs, "agent:a1", WRITE, "run:wf"));
        assert!(allowed(&runs, "agent:a1", Access::Read, "session:chat-1"));
        for text in ["run:wf:step", "run:solo", "user:bob"] {
            let error = check("agent:a1", Access::Read, &scope(text), &runs).unwrap_err();
            assert_eq!(error.code(), "forbidden", "{text}");
            assert!(error.to_string().contains(&format!("may not read {text}")), "{error}");
        }
        let archived = check("user:ana", Access::Write { run_ended: true }, &scope("run:solo"), &runs).unwrap_err();
        assert!(archived.to_string().contains("run solo has ended"), "{archived}");

        ended(&mut runs, "wf");
        assert_eq!(runs.evict(later), 1);
        assert_eq!(runs.resident().len(), 0, "no ended run's facts in memory");
        assert!(runs.worked_on_by("a1").is_empty());
        assert!(!allowed(&runs, "agent:a1", Access::Read, "session:chat-1"));
    }
}
