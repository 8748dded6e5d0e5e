//! `osp run watch`: a run's events as they happen, one line each, with a progress bar
//! on a terminal (a workflow run's counts its steps); the exit status says how the run
//! ended. A workflow run's step tree follows its last event.

use std::io::IsTerminal;
use std::process::ExitCode;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use osp_client::RunUpdate;
use osp_protocol::scheduler::{OnTimeout, RunEvent};
use osp_protocol::{EventPayload, Timestamp};
use serde::Serialize;
use serde_json::json;

use super::show::{compact, document, progress};
use super::tree::{self, Tree};
use crate::clock::{self, with_rfc3339_times};
use crate::entries::truncate;
use crate::output::Lines;

/// The run completed.
pub const COMPLETED: u8 = 0;
/// The run failed.
pub const FAILED: u8 = 1;
/// The run was cancelled.
pub const CANCELLED: u8 = 3;
/// The watch itself failed: no server, no scheduler, no such run, the stream broke.
pub const WATCH_FAILED: u8 = 4;
/// Ctrl-C: the run goes on.
pub const INTERRUPTED: u8 = 130;

/// Follows `run_id` until it ends: its history first, then live. Errors come back as
/// `Err` for the caller to print and turn into [`WATCH_FAILED`].
pub async fn follow(scheduler: &osp_client::Scheduler, run_id: &str, json: bool) -> anyhow::Result<ExitCode> {
    let mut updates = scheduler.watch(run_id).await?;
    let mut lines = Lines::new(json, true);
    let mut bar = Bar::new(!json && std::io::stderr().is_terminal());
    let mut is_workflow = false;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let update = tokio::select! {
            _ = &mut interrupted => {
                bar.clear();
                eprintln!("stopped watching; run {run_id} goes on (osp run watch {run_id})");
                return Ok(ExitCode::from(INTERRUPTED));
            }
            update = updates.next() => update,
        };
        let update = match update {
            None => {
                bar.clear();
                anyhow::bail!("the run's event stream ended before the run did");
            }
            Some(Err(error)) => {
                bar.suspend(|| eprintln!("warning: {error}"));
                continue;
            }
            Some(Ok(update)) => update,
        };
        bar.show(&update.event);
        if let RunEvent::Submitted(submitted) = &update.event {
            is_workflow = submitted.workflow.is_some();
        }
        let line = if json { update_json(run_id, &update).to_string() } else { update_line(&update) };
        bar.suspend(|| lines.line(&line))?;
        let code = match &update.event {
            RunEvent::Completed(_) => COMPLETED,
            RunEvent::Failed(_) => FAILED,
            RunEvent::Cancelled(_) => CANCELLED,
            _ => continue,
        };
        bar.clear();
        if is_workflow && !json {
            print_tree(scheduler, run_id, &mut lines).await?;
        }
        lines.flush()?;
        return Ok(ExitCode::from(code));
    }
}

/// The ended workflow run's step tree, after its events; a tree that cannot be fetched
/// is a warning, since the run's outcome is known.
async fn print_tree(scheduler: &osp_client::Scheduler, run_id: &str, lines: &mut Lines) -> std::io::Result<()> {
    let fetched = match scheduler.get(run_id).await {
        Ok(Some(run)) => Tree::fetch(scheduler, run).await,
        Ok(None) => return Ok(()),
        Err(error) => Err(error),
    };
    match fetched {
        Ok(tree) => tree::block(&tree, Timestamp::now()).iter().try_for_each(|line| lines.line(line)),
        Err(error) => {
            eprintln!("warning: cannot show the run's steps: {error}");
            Ok(())
        }
    }
}

/// A progress bar on stderr, shown only on a terminal: driven by `run.progress` events
/// for a task, by steps started and ended for a workflow run.
struct Bar {
    enabled: bool,
    /// The bar, and what it counts: an attempt (its number), or a workflow's steps (0).
    bar: Option<(u32, ProgressBar)>,
    /// A workflow run's steps: ended, and known in all so far.
    steps: (u64, u64),
}

/// The bar's key for a workflow run's steps (attempts count from 1).
const STEPS: u32 = 0;

impl Bar {
    fn new(enabled: bool) -> Bar {
        Bar { enabled, bar: None, steps: (0, 0) }
    }

    /// Moves the bar on a progress or step event; a new attempt starts a new bar, the end
    /// of an attempt removes it.
    fn show(&mut self, event: &RunEvent) {
        match event {
            RunEvent::Progressed(p) => {
                self.set(p.attempt, p.current, p.total, p.message.clone().unwrap_or_default());
            }
            RunEvent::StepsStarted(started) => {
                self.steps.1 = self.steps.1.max(u64::from(started.total));
                let keys: Vec<&str> = started.steps.iter().map(|s| s.key.as_str()).collect();
                self.set(STEPS, self.steps.0, Some(self.steps.1), format!("started {}", keys.join(", ")));
            }
            RunEvent::StepEnded(ended) => {
                self.steps.0 += 1;
                let (done, total) = (self.steps.0, self.steps.1.max(self.steps.0));
                self.set(STEPS, done, Some(total), format!("{} {}", ended.key, ended.status));
            }
            RunEvent::AttemptFailed(_) | RunEvent::Completed(_) | RunEvent::Failed(_) | RunEvent::Cancelled(_) => {
                self.clear()
            }
            _ => {}
        }
    }

    /// Sets the bar of `key` (an attempt, or [`STEPS`]) to `current` of `total`.
    fn set(&mut self, key: u32, current: u64, total: Option<u64>, message: String) {
        if !self.enabled {
            return;
        }
        let new = self.bar.as_ref().is_none_or(|(shown, _)| *shown != key);
        if new {
            self.clear();
            self.bar = Some((key, new_bar(total)));
        }
        let Some((_, bar)) = &self.bar else { return };
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(current);
        bar.set_message(message);
        if new {
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
        }
    }

    /// Runs `f` with the bar out of the way.
    fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some((_, bar)) => bar.suspend(f),
            None => f(),
        }
    }

    fn clear(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn new_bar(total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (ProgressBar::new(total), "{spinner} [{bar:30}] {pos}/{len} {msg}"),
        None => (ProgressBar::new_spinner(), "{spinner} {pos} {msg}"),
    };
    bar.set_style(ProgressStyle::with_template(template).expect("valid template").progress_chars("=> "));
    bar
}

/// One event for people: `<time>  <type>  <gist>`.
pub fn update_line(update: &RunUpdate) -> String {
    format!("{}  {:<22} {}", clock::time(update.occurred_at), update.event.event_type(), gist(update))
}

/// What an event says, in a few words.
fn gist(update: &RunUpdate) -> String {
    let by = &update.actor;
    match &update.event {
        RunEvent::Submitted(e) => {
            let what = match (&e.capability, &e.workflow) {
                (Some(capability), _) => capability.to_string(),
                (None, Some(workflow)) => workflow.pattern().to_owned(),
                (None, None) => "?".to_owned(),
            };
            let mut text = format!("{what} by {by}, input {}", compact(&document(&e.input)));
            if let Some(dispatched) = &e.dispatched {
                text.push_str(&format!("; attempt {} dispatched", dispatched.attempt));
                if let Some(deadline) = dispatched.deadline {
                    text.push_str(&format!(", deadline {}", clock::time(deadline)));
                }
            }
            text
        }
        RunEvent::ApprovalRequested(e) => {
            let who = if e.approvers.is_empty() { "anyone".to_owned() } else { e.approvers.join(", ") };
            let mut text =
                format!("{:?}: {} from {who}", e.message, crate::output::count(e.required.into(), "approval"));
            if let Some(at) = e.expires_at {
                let then = if e.auto_approve_on_timeout { "approved" } else { "cancelled" };
                text.push_str(&format!("; expires {}, then {then}", clock::time(at)));
            }
            text
        }
        RunEvent::ApprovalDecided(e) => {
            let decision = if e.approved { "approved" } else { "rejected" };
            with_reason(format!("{decision} by {}", e.approver), e.reason.as_deref())
        }
        RunEvent::ApprovalExpired(e) => {
            format!(
                "after {}; {}",
                crate::output::count(e.approvals.into(), "approval"),
                if e.auto_approved { "approved" } else { "cancelling" }
            )
        }
        RunEvent::Approved(e) if e.on_expiry => "on expiry".to_owned(),
        RunEvent::Approved(e) => format!("by {}", e.by.join(", ")),
        RunEvent::Dispatched(e) => {
            let mut text = format!("attempt {}", e.attempt);
            if e.dispatch > 1 {
                text.push_str(&format!(" (dispatch {})", e.dispatch));
            }
            if let Some(deadline) = e.deadline {
                text.push_str(&format!(", deadline {}", clock::time(deadline)));
            }
            text
        }
        RunEvent::Deferred(e) => {
            format!("attempt {}: agent {} took it while paused; dispatched again on resume", e.attempt, e.agent)
        }
        RunEvent::Started(e) => format!("attempt {} by agent {}", e.attempt, e.agent),
        RunEvent::Checking(e) => format!("attempt {}: output checked as audit {}", e.attempt, e.audit_id),
        RunEvent::Checked(e) => {
            let verdict = if e.passed { "passed" } else { "failed" };
            let mut text = format!(
                "attempt {}: {verdict}, audit {} {} (critical {}, major {}, minor {})",
                e.attempt,
                e.audit_id,
                e.opinion.as_str(),
                e.findings.critical,
                e.findings.major,
                e.findings.minor
            );
            for failed in &e.failed {
                text.push_str(&format!("; {}: {}", failed.rule_name, truncate(&failed.message, 120)));
            }
            if let Some(missing) = &e.missing {
                text.push_str(&format!("; {missing}"));
            }
            text
        }
        RunEvent::Progressed(e) => {
            format!("attempt {}: {}", e.attempt, progress(e.current, e.total, e.message.as_deref()))
        }
        RunEvent::Logged(e) => format!("attempt {} {}: {}", e.attempt, e.level, truncate(&e.message, 200)),
        RunEvent::InputRequested(e) => format!(
            "attempt {} asks {}: {}  (osp run answer <run> 'JSON')",
            e.attempt,
            e.request_id,
            compact(&document(&e.question))
        ),
        RunEvent::InputAnswered(e) => {
            format!("{} answered by {by}: {}", e.request_id, compact(&document(&e.answer)))
        }
        RunEvent::AttemptFailed(e) => format!(
            "attempt {} ({}{}): {}",
            e.attempt,
            // The wire name: agent, timeout, heartbeat, agent_offline.
            serde_json::to_value(e.cause).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            if e.retryable { ", retryable" } else { "" },
            truncate(&e.error.to_string(), 200)
        ),
        RunEvent::RetryScheduled(e) => {
            format!("attempt {} in {} (at {})", e.attempt, clock::duration(e.delay_ms), clock::time(e.due_at))
        }
        RunEvent::TimedOut(e) => format!(
            "attempt {} after {}: {}",
            e.attempt,
            clock::duration(e.after_ms),
            match e.action {
                OnTimeout::Fail => "failing it",
                OnTimeout::Cancel => "cancelling the run",
                OnTimeout::Continue => "going on",
            }
        ),
        RunEvent::Paused(e) => with_reason(format!("by {by}"), e.reason.as_deref()),
        RunEvent::Resumed(_) => format!("by {by}"),
        RunEvent::CancelRequested(e) => {
            format!("by {by}: {}; the agent has until {} to stop", e.reason, clock::time(e.deadline))
        }
        RunEvent::StepsStarted(e) => {
            let steps: Vec<String> = e.steps.iter().map(|s| format!("{} ({})", s.key, s.step.describe())).collect();
            format!("started {}", truncate(&steps.join(", "), 200))
        }
        RunEvent::StepEnded(e) => match &e.error {
            Some(error) => format!(
                "{} {} after {}: {}",
                e.key,
                e.status,
                clock::duration(e.duration_ms),
                truncate(&error.to_string(), 200)
            ),
            None => format!("{} {} after {}", e.key, e.status, clock::duration(e.duration_ms)),
        },
        RunEvent::Completed(e) if e.attempt == 0 => compact(&document(&e.output)),
        RunEvent::Completed(e) => format!("attempt {}: {}", e.attempt, compact(&document(&e.output))),
        // A workflow run has no attempts: its steps failed.
        RunEvent::Failed(e) if e.attempts == 0 => truncate(&e.error.to_string(), 200),
        RunEvent::Failed(e) => format!(
            "after {}: {}",
            crate::output::count(e.attempts.into(), "attempt"),
            truncate(&e.error.to_string(), 200)
        ),
        RunEvent::Cancelled(e) => format!("{}{}", e.reason, if e.forced { " (forced)" } else { "" }),
    }
}

fn with_reason(text: String, reason: Option<&str>) -> String {
    match reason {
        Some(reason) => format!("{text}: {reason}"),
        None => text,
    }
}

/// One event for tools: `{run_id, seq, version, occurred_at, actor, type, payload}`, the
/// payload as on the log, times in RFC 3339.
pub fn update_json(run_id: &str, update: &RunUpdate) -> serde_json::Value {
    struct Payload<'a>(&'a RunEvent);
    impl Serialize for Payload<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            self.0.serialize_payload(serializer)
        }
    }
    // As the log holds it (MessagePack with named fields), then as `osp events` shows it.
    let payload = osp_protocol::Encoding::MessagePack
        .encode(&Payload(&update.event))
        .map_err(|error| error.to_string())
        .and_then(|bytes| rmpv::decode::read_value(&mut bytes.as_slice()).map_err(|error| error.to_string()))
        .map(|value| osp_protocol::json::from_msgpack_value(&value))
        .unwrap_or_else(|error| json!({ "error": error }));
    let mut value = json!({
        "run_id": run_id,
        "seq": update.seq,
        "version": update.version,
        "occurred_at": update.occurred_at.millis(),
        "actor": update.actor,
        "type": update.event.event_type(),
        "payload": payload,
    });
    with_rfc3339_times(&mut value);
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use osp_protocol::scheduler::{
        AttemptFailed, FailureCause, Progressed, StepEnded, StepStarted, StepsStarted, TaskError,
    };

    fn update(event: RunEvent) -> RunUpdate {
        RunUpdate { seq: 9, version: 3, occurred_at: Timestamp(1_000), actor: "agent:a1".into(), event }
    }

    #[test]
    fn lines_give_the_gist() {
        let progressed = update(RunEvent::Progressed(Progressed {
            attempt: 1,
            current: 2,
            total: Some(4),
            message: Some("x".into()),
        }));
        assert_eq!(
            update_line(&progressed),
            format!("{}  run.progress           attempt 1: 2/4 x", clock::time(Timestamp(1_000)))
        );
        let failed = update(RunEvent::AttemptFailed(AttemptFailed {
            attempt: 2,
            error: TaskError { kind: "timeout".into(), message: "too slow".into(), details: None },
            retryable: true,
            cause: FailureCause::Timeout,
        }));
        assert!(
            update_line(&failed).ends_with("attempt 2 (timeout, retryable): timeout: too slow"),
            "{}",
            update_line(&failed)
        );
    }

    #[test]
    fn a_workflow_runs_bar_counts_its_steps() {
        let task: osp_protocol::scheduler::Workflow =
            serde_json::from_value(json!({"task": {"capability": "w"}})).unwrap();
        let started = |keys: &[&str], total| {
            RunEvent::StepsStarted(StepsStarted {
                steps: keys
                    .iter()
                    .map(|key| StepStarted {
                        key: (*key).into(),
                        run_id: osp_protocol::Token::new("run_id", format!("r:{key}")).unwrap(),
                        step: task.clone(),
                        input: osp_protocol::registry::Document::Nil,
                    })
                    .collect(),
                total,
            })
        };
        let ended = |key: &str| {
            RunEvent::StepEnded(StepEnded {
                key: key.into(),
                run_id: osp_protocol::Token::new("run_id", format!("r:{key}")).unwrap(),
                status: osp_protocol::scheduler::queries::RunStatus::Completed,
                output: None,
                error: None,
                duration_ms: 5,
            })
        };
        let mut bar = Bar::new(false);
        bar.show(&started(&["split"], 1));
        bar.show(&ended("split"));
        assert_eq!(bar.steps, (1, 1));
        bar.show(&started(&["subtask:a", "subtask:b"], 4));
        bar.show(&ended("subtask:b"));
        assert_eq!(bar.steps, (2, 4));
    }

    #[test]
    fn json_lines_carry_the_payload() {
        let progressed =
            update(RunEvent::Progressed(Progressed { attempt: 1, current: 2, total: None, message: None }));
        assert_eq!(
            update_json("r-1", &progressed),
            json!({"run_id": "r-1", "seq": 9, "version": 3, "occurred_at": "1970-01-01T00:00:01Z",
                   "actor": "agent:a1", "type": "run.progress", "payload": {"attempt": 1, "current": 2}})
        );
    }
}
