//! Run options: timeout, heartbeat, retry, approval, and what to do when no agent offers
//! the capability. The wire names follow the OSP TypeScript types (camelCase).
//!
//! Every option is checked once, at submit ([`RunOptions::check`]), so a run never
//! starts with options it cannot honour; the error names the field
//! (`options.retry.attempts`).

use serde::{Deserialize, Serialize};

use crate::scheduler::checks::Checks;
use crate::{Error, Token};

/// Longest time any option may name (timeouts, delays, expiries): 30 days.
pub const MAX_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most attempts a retry policy may allow.
pub const MAX_ATTEMPTS: u32 = 100;
/// Shortest heartbeat timeout: agents beat every few seconds, and a shorter timeout
/// would fail healthy attempts on a busy machine.
pub const MIN_HEARTBEAT_TIMEOUT_MS: u64 = 500;
/// Heartbeat timeout when the run does not set one: several missed beats of the
/// client's heartbeat (every 2 s, or a third of the timeout when that is shorter).
pub const DEFAULT_HEARTBEAT_TIMEOUT_MS: u64 = 15_000;
/// How long a graceful cancel waits for the agent by default.
pub const DEFAULT_GRACEFUL_TIMEOUT_MS: u64 = 10_000;
/// Most approvers a run may list.
pub const MAX_APPROVERS: usize = 64;

/// How a run is executed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunOptions {
    /// A deadline for each attempt, counted from its dispatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    /// An attempt whose agent sends no heartbeat for this long fails (cause `heartbeat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_ms: Option<u64>,
    /// Attempts after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Human approval before the task is dispatched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// Accept the run even when no registered agent offers the capability; it waits in
    /// the work queue until one does. Without it such a submit is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait_for_agent: bool,
    /// Checks the output must pass before the run completes (the quality service's
    /// rules and judge), and what a failure does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Box<Checks>>,
    /// When the run ends, tell this service (a `run_ended` command to its inbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Box<Notify>>,
}

/// Who hears of the run's end: when it ends, the scheduler sends
/// `osp.v1.in.<service>.run_ended` `{run_id, key, status}` ([`super::RunEnded`]). It is a
/// hint, not evidence: the receiver reads how the run ended from the log. This is how a
/// service that submits runs (the quality service's judge) learns of their ends without
/// reading every run's events.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notify {
    /// The service (a subject token).
    pub service: String,
    /// What the run is to that service (its aggregate's id: an audit id, say); a subject
    /// token.
    pub key: String,
}

/// A deadline per attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Timeout {
    /// Milliseconds from dispatch.
    pub ms: u64,
    /// What happens then.
    #[serde(default)]
    pub on_timeout: OnTimeout,
}

/// What a timeout does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnTimeout {
    /// The attempt fails (cause `timeout`); the retry policy decides what follows.
    #[default]
    Fail,
    /// The run is cancelled (forced).
    Cancel,
    /// Recorded, and the attempt goes on.
    Continue,
}

/// Attempts after a failure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    /// The base delay before a retry.
    #[serde(default)]
    pub delay_ms: u64,
    /// How the delay grows.
    #[serde(default)]
    pub backoff: Backoff,
    /// The longest delay, whatever the backoff says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Retry only failures of these kinds (an agent's `error.kind`, or the runtime's
    /// `timeout`, `heartbeat`, `agent_offline`). All retryable failures when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_on: Option<Vec<String>>,
}

/// How the delay between attempts grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    /// `delayMs` every time.
    #[default]
    None,
    /// `n · delayMs` after the n-th attempt failed.
    Linear,
    /// `2^(n-1) · delayMs` after the n-th attempt failed.
    Exponential,
}

/// Human approval before the task is dispatched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Approval {
    /// What the approvers are asked.
    pub message: String,
    /// Who may decide (their `Osp-Actor`); anyone when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Vec<String>>,
    /// Approvals needed.
    #[serde(default = "one")]
    pub required_approvals: u32,
    /// The request expires after this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// On expiry, approve (true) or cancel the run (false).
    #[serde(default)]
    pub auto_approve_on_timeout: bool,
}

fn one() -> u32 {
    1
}

impl Retry {
    /// The delay before the attempt after failed attempt `failed` (from 1), in ms.
    pub fn delay_after(&self, failed: u32) -> u64 {
        let n = u64::from(failed.max(1));
        let delay = match self.backoff {
            Backoff::None => self.delay_ms,
            Backoff::Linear => self.delay_ms.saturating_mul(n),
            Backoff::Exponential => self.delay_ms.saturating_mul(1u64.checked_shl((n - 1) as u32).unwrap_or(u64::MAX)),
        };
        delay.min(self.max_delay_ms.unwrap_or(MAX_MS)).min(MAX_MS)
    }

    /// Whether a failure of `kind` may be retried under this policy.
    pub fn retries(&self, kind: &str) -> bool {
        self.retry_on.as_ref().is_none_or(|kinds| kinds.iter().any(|k| k == kind))
    }
}

impl RunOptions {
    /// Whether nothing is set (what a definition leaves out when it writes options).
    pub fn is_default(&self) -> bool {
        *self == RunOptions::default()
    }

    /// The heartbeat timeout in force.
    pub fn heartbeat_timeout_ms(&self) -> u64 {
        self.heartbeat_timeout_ms.unwrap_or(DEFAULT_HEARTBEAT_TIMEOUT_MS)
    }

    /// Attempts allowed in all.
    pub fn max_attempts(&self) -> u32 {
        self.retry.as_ref().map_or(1, |retry| retry.attempts)
    }

    /// Checks every value; the error names the field under `options.`.
    pub fn check(&self) -> Result<(), Error> {
        if let Some(timeout) = &self.timeout {
            positive_ms("options.timeout.ms", timeout.ms)?;
        }
        if let Some(ms) = self.heartbeat_timeout_ms {
            if !(MIN_HEARTBEAT_TIMEOUT_MS..=MAX_MS).contains(&ms) {
                return Err(invalid(
                    "options.heartbeatTimeoutMs",
                    format!("must be {MIN_HEARTBEAT_TIMEOUT_MS} to {MAX_MS} ms, not {ms}"),
                ));
            }
        }
        if let Some(retry) = &self.retry {
            if !(1..=MAX_ATTEMPTS).contains(&retry.attempts) {
                return Err(invalid(
                    "options.retry.attempts",
                    format!(
                        "must be 1 to {MAX_ATTEMPTS} (attempts in all, the first included), not {}",
                        retry.attempts
                    ),
                ));
            }
            at_most_max("options.retry.delayMs", retry.delay_ms)?;
            if let Some(max) = retry.max_delay_ms {
                at_most_max("options.retry.maxDelayMs", max)?;
            }
            if let Some(kinds) = &retry.retry_on {
                if kinds.is_empty() || kinds.iter().any(|k| k.is_empty() || k.len() > 64) {
                    return Err(invalid(
                        "options.retry.retryOn",
                        "must list 1 or more error kinds of 1 to 64 bytes".into(),
                    ));
                }
            }
        }
        if let Some(approval) = &self.approval {
            check_approval(approval)?;
        }
        if let Some(checks) = &self.checks {
            checks.check()?;
        }
        if let Some(notify) = &self.notify {
            Token::new("options.notify.service", notify.service.as_str())?;
            Token::new("options.notify.key", notify.key.as_str())?;
        }
        Ok(())
    }
}

fn check_approval(approval: &Approval) -> Result<(), Error> {
    if approval.message.is_empty() || approval.message.len() > 4096 {
        return Err(invalid("options.approval.message", "must be 1 to 4096 bytes".into()));
    }
    if approval.required_approvals == 0 {
        return Err(invalid("options.approval.requiredApprovals", "must be at least 1".into()));
    }
    if let Some(approvers) = &approval.approvers {
        if approvers.is_empty() || approvers.len() > MAX_APPROVERS {
            return Err(invalid(
                "options.approval.approvers",
                format!("must list 1 to {MAX_APPROVERS} approvers, or be left out so anyone may approve"),
            ));
        }
        if let Some(bad) = approvers.iter().find(|a| a.is_empty() || a.len() > 128 || a.chars().any(char::is_control)) {
            return Err(invalid(
                "options.approval.approvers",
                format!("{bad:?} is not an actor name (1 to 128 bytes)"),
            ));
        }
        let distinct: std::collections::BTreeSet<&String> = approvers.iter().collect();
        if (approval.required_approvals as usize) > distinct.len() {
            return Err(invalid(
                "options.approval.requiredApprovals",
                format!(
                    "{} approvals required but only {} distinct approvers listed",
                    approval.required_approvals,
                    distinct.len()
                ),
            ));
        }
    }
    if let Some(ms) = approval.timeout_ms {
        positive_ms("options.approval.timeoutMs", ms)?;
    }
    Ok(())
}

fn positive_ms(field: &str, ms: u64) -> Result<(), Error> {
    if ms == 0 {
        return Err(invalid(field, "must be more than 0 ms".into()));
    }
    at_most_max(field, ms)
}

fn at_most_max(field: &str, ms: u64) -> Result<(), Error> {
    if ms > MAX_MS {
        return Err(invalid(field, format!("must be at most {MAX_MS} ms (30 days), not {ms}")));
    }
    Ok(())
}

fn invalid(field: &str, reason: String) -> Error {
    Error::Invalid { field: field.to_owned(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Encoding;

    fn retry(backoff: Backoff, max: Option<u64>) -> Retry {
        Retry { attempts: 5, delay_ms: 100, backoff, max_delay_ms: max, retry_on: None }
    }

    #[test]
    fn every_backoff_kind_gives_the_spec_delays() {
        let delays = |r: Retry| (1..=5).map(|n| r.delay_after(n)).collect::<Vec<_>>();
        assert_eq!(delays(retry(Backoff::None, None)), [100, 100, 100, 100, 100]);
        assert_eq!(delays(retry(Backoff::Linear, None)), [100, 200, 300, 400, 500]);
        assert_eq!(delays(retry(Backoff::Exponential, None)), [100, 200, 400, 800, 1600]);
        assert_eq!(delays(retry(Backoff::Exponential, Some(500))), [100, 200, 400, 500, 500]);
        assert_eq!(retry(Backoff::Exponential, None).delay_after(90), MAX_MS, "no overflow");
    }

    #[test]
    fn retry_on_limits_the_kinds() {
        let mut r = retry(Backoff::None, None);
        assert!(r.retries("anything"));
        r.retry_on = Some(vec!["timeout".into()]);
        assert!(r.retries("timeout") && !r.retries("error"));
    }

    #[test]
    fn malformed_options_name_their_field() {
        let json = |text: &str| Encoding::Json.decode::<RunOptions>(text.as_bytes());
        let err = json(r#"{"timeout":{"ms":-5}}"#).unwrap_err().to_string();
        assert!(err.contains("timeout.ms"), "{err}");
        let err = json(r#"{"retry":{"attempts":2,"backoff":"fibonacci"}}"#).unwrap_err().to_string();
        assert!(err.contains("retry.backoff") && err.contains("fibonacci"), "{err}");
        let err = json(r#"{"timeout":{"ms":5,"onTimeout":"explode"}}"#).unwrap_err().to_string();
        assert!(err.contains("onTimeout"), "{err}");
        let err = json(r#"{"retries":3}"#).unwrap_err().to_string();
        assert!(err.contains("retries"), "{err}");
        for (text, field) in [
            (r#"{"retry":{"attempts":0}}"#, "options.retry.attempts"),
            (r#"{"timeout":{"ms":0}}"#, "options.timeout.ms"),
            (r#"{"heartbeatTimeoutMs":10}"#, "options.heartbeatTimeoutMs"),
            (r#"{"approval":{"message":"ok?","requiredApprovals":0}}"#, "options.approval.requiredApprovals"),
            (
                r#"{"approval":{"message":"ok?","approvers":["a"],"requiredApprovals":2}}"#,
                "options.approval.requiredApprovals",
            ),
            (r#"{"approval":{"message":""}}"#, "options.approval.message"),
            (r#"{"retry":{"attempts":2,"delayMs":999999999999}}"#, "options.retry.delayMs"),
        ] {
            let err = json(text).unwrap().check().unwrap_err();
            assert_eq!(err.field(), Some(field), "{text}: {err}");
        }
    }

    #[test]
    fn spec_shaped_options_are_read() {
        let options: RunOptions = Encoding::Json
            .decode(
                br#"{"timeout":{"ms":5000,"onTimeout":"continue"},"retry":{"attempts":3,"delayMs":100,"backoff":"linear","maxDelayMs":1000,"retryOn":["timeout"]},
                "approval":{"message":"ship?","approvers":["ann","bob"],"requiredApprovals":2,"timeoutMs":60000,"autoApproveOnTimeout":true},"waitForAgent":true}"#,
            )
            .unwrap();
        options.check().unwrap();
        assert_eq!(options.timeout.as_ref().unwrap().on_timeout, OnTimeout::Continue);
        assert_eq!(options.max_attempts(), 3);
        assert_eq!(options.heartbeat_timeout_ms(), DEFAULT_HEARTBEAT_TIMEOUT_MS);
        let back =
            Encoding::MessagePack.decode::<RunOptions>(&Encoding::MessagePack.encode(&options).unwrap()).unwrap();
        assert_eq!(back, options);
    }
}
