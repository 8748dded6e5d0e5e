//! The options of `osp run submit`: the `--options` document with the convenience flags
//! set on top of it (a flag wins), checked before anything is sent.

use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, ValueEnum};
use osp_protocol::quality::JudgeSpec;
use osp_protocol::scheduler::{
    Approval, Backoff, Checks, OnCheckFailure, OnMissingEvidence, OnTimeout, Retry, RunOptions, Timeout,
};
use serde_json::Value;

use crate::json_args;

/// How the run is executed: every flag here sets one field of `--options`.
#[derive(Args, Debug, Default)]
pub struct OptionFlags {
    /// Run options as one JSON object (camelCase keys, docs/protocol.md §17.2): inline,
    /// `@FILE` or `-` for stdin. The flags below are set on top of it.
    #[arg(long, value_name = "JSON|@FILE|-")]
    options: Option<String>,
    /// A deadline for each attempt, counted from its dispatch (e.g. 30s, 2m).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = "Timeout")]
    timeout: Option<Duration>,
    /// What the timeout does: fail the attempt (then the retry policy decides), cancel the
    /// run, or record it and go on.
    #[arg(long, value_enum, value_name = "ACTION", help_heading = "Timeout")]
    on_timeout: Option<TimeoutAction>,
    /// An attempt whose agent sends no heartbeat for this long fails [default: 15s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = "Timeout")]
    heartbeat_timeout: Option<Duration>,
    /// Attempts in all, the first included (1 = no retry), at most 100.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100), help_heading = "Retry")]
    retry: Option<u32>,
    /// The base delay before a retry (e.g. 1s) [default: 0s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = "Retry")]
    retry_delay: Option<Duration>,
    /// How the delay grows: the same every time, n × delay, or 2^(n-1) × delay.
    #[arg(long, value_enum, value_name = "BACKOFF", help_heading = "Retry")]
    backoff: Option<BackoffKind>,
    /// The longest delay, whatever the backoff says.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = "Retry")]
    max_delay: Option<Duration>,
    /// Retry only failures of these error kinds (e.g. timeout,heartbeat) [default: all].
    #[arg(long, value_name = "KIND,...", value_delimiter = ',', help_heading = "Retry")]
    retry_on: Vec<String>,
    /// Wait for a person's approval before dispatching; MESSAGE is what they are asked.
    #[arg(long, value_name = "MESSAGE", help_heading = "Approval")]
    require_approval: Option<String>,
    /// Who may approve or reject (their actor, e.g. user:ana) [default: anyone].
    #[arg(long, value_name = "ACTOR,...", value_delimiter = ',', help_heading = "Approval")]
    approvers: Vec<String>,
    /// Approvals needed [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Approval")]
    approvals: Option<u32>,
    /// The approval request expires after this long (e.g. 1h); then the run is cancelled,
    /// or approved with --auto-approve.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, help_heading = "Approval")]
    approval_timeout: Option<Duration>,
    /// Approve the run when the approval request expires, instead of cancelling it.
    #[arg(long, help_heading = "Approval")]
    auto_approve: bool,
    /// Accept the run even when no registered agent offers the capability: it waits in
    /// the work queue until one does.
    #[arg(long)]
    wait_for_agent: bool,
    /// Check the output against these rules of the quality service's catalog before the
    /// run completes.
    #[arg(long, value_name = "RULE,...", value_delimiter = ',', help_heading = "Checks")]
    checks: Vec<String>,
    /// Have a judge (an agent with the `judge` capability) score the output on this
    /// criterion before the run completes. Repeatable.
    #[arg(long = "judge", value_name = "CRITERION", help_heading = "Checks")]
    judge: Vec<String>,
    /// The score (0 to 1) the judge must give [default: 0.7].
    #[arg(long = "judge-threshold", value_name = "SCORE", help_heading = "Checks")]
    judge_threshold: Option<f64>,
    /// What a failed check does: fail the run, retry it (the next attempt gets the
    /// failures as feedback), or wait for a person's approval [default: fail].
    #[arg(long, value_enum, value_name = "ACTION", help_heading = "Checks")]
    on_check_failure: Option<CheckFailureAction>,
    /// Count checks that could not be made (the judge did not answer) as passed.
    #[arg(long, help_heading = "Checks")]
    pass_on_missing_evidence: bool,
}

/// `--on-check-failure`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum CheckFailureAction {
    Fail,
    Retry,
    Approval,
}

/// `--on-timeout`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum TimeoutAction {
    Fail,
    Cancel,
    Continue,
}

/// `--backoff`.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackoffKind {
    None,
    Linear,
    Exponential,
}

impl OptionFlags {
    /// True when `--options` reads stdin.
    pub fn reads_stdin(&self) -> bool {
        self.options.as_deref() == Some("-")
    }

    /// The run options: `--options`, then every flag set on it, checked as the scheduler
    /// will check them.
    pub fn build(&self) -> anyhow::Result<RunOptions> {
        let mut options = match self.options.as_deref().map(|arg| json_args::read("--options", arg)).transpose()? {
            None => RunOptions::default(),
            Some(value @ Value::Object(_)) => {
                serde_json::from_value(value).map_err(|error| anyhow!("--options: {error}"))?
            }
            Some(_) => bail!("--options: must be a JSON object such as {{\"retry\": {{\"attempts\": 3}}}}"),
        };
        self.timeout_onto(&mut options)?;
        self.retry_onto(&mut options)?;
        self.approval_onto(&mut options)?;
        self.checks_onto(&mut options)?;
        options.wait_for_agent |= self.wait_for_agent;
        options.check().map_err(|refusal| anyhow!(in_flags(&refusal.to_string())))?;
        Ok(options)
    }

    fn timeout_onto(&self, options: &mut RunOptions) -> anyhow::Result<()> {
        if let Some(timeout) = self.timeout {
            let on_timeout = options.timeout.as_ref().map(|t| t.on_timeout).unwrap_or_default();
            options.timeout = Some(Timeout { ms: millis(timeout), on_timeout });
        }
        if let Some(action) = self.on_timeout {
            let Some(timeout) = options.timeout.as_mut() else {
                bail!("--on-timeout needs a timeout: add --timeout DURATION");
            };
            timeout.on_timeout = match action {
                TimeoutAction::Fail => OnTimeout::Fail,
                TimeoutAction::Cancel => OnTimeout::Cancel,
                TimeoutAction::Continue => OnTimeout::Continue,
            };
        }
        if let Some(heartbeat) = self.heartbeat_timeout {
            options.heartbeat_timeout_ms = Some(millis(heartbeat));
        }
        Ok(())
    }

    fn retry_onto(&self, options: &mut RunOptions) -> anyhow::Result<()> {
        if let Some(attempts) = self.retry {
            let retry = options.retry.get_or_insert(Retry {
                attempts,
                delay_ms: 0,
                backoff: Backoff::None,
                max_delay_ms: None,
                retry_on: None,
            });
            retry.attempts = attempts;
        }
        let flags = [
            ("--retry-delay", self.retry_delay.is_some()),
            ("--backoff", self.backoff.is_some()),
            ("--max-delay", self.max_delay.is_some()),
            ("--retry-on", !self.retry_on.is_empty()),
        ];
        let Some(retry) = options.retry.as_mut() else {
            if let Some((flag, _)) = flags.iter().find(|(_, given)| *given) {
                bail!("{flag} needs a retry policy: add --retry N (attempts in all, the first included)");
            }
            return Ok(());
        };
        if let Some(delay) = self.retry_delay {
            retry.delay_ms = millis(delay);
        }
        if let Some(backoff) = self.backoff {
            retry.backoff = match backoff {
                BackoffKind::None => Backoff::None,
                BackoffKind::Linear => Backoff::Linear,
                BackoffKind::Exponential => Backoff::Exponential,
            };
        }
        if let Some(max) = self.max_delay {
            retry.max_delay_ms = Some(millis(max));
        }
        if !self.retry_on.is_empty() {
            retry.retry_on = Some(self.retry_on.clone());
        }
        Ok(())
    }

    fn approval_onto(&self, options: &mut RunOptions) -> anyhow::Result<()> {
        if let Some(message) = &self.require_approval {
            let approval = options.approval.get_or_insert(Approval {
                message: message.clone(),
                approvers: None,
                required_approvals: 1,
                timeout_ms: None,
                auto_approve_on_timeout: false,
            });
            approval.message = message.clone();
        }
        let flags = [
            ("--approvers", !self.approvers.is_empty()),
            ("--approvals", self.approvals.is_some()),
            ("--approval-timeout", self.approval_timeout.is_some()),
            ("--auto-approve", self.auto_approve),
        ];
        let Some(approval) = options.approval.as_mut() else {
            if let Some((flag, _)) = flags.iter().find(|(_, given)| *given) {
                bail!("{flag} needs an approval: add --require-approval MESSAGE");
            }
            return Ok(());
        };
        if !self.approvers.is_empty() {
            approval.approvers = Some(self.approvers.clone());
        }
        if let Some(required) = self.approvals {
            approval.required_approvals = required;
        }
        if let Some(timeout) = self.approval_timeout {
            approval.timeout_ms = Some(millis(timeout));
        }
        approval.auto_approve_on_timeout |= self.auto_approve;
        Ok(())
    }
}

impl OptionFlags {
    fn checks_onto(&self, options: &mut RunOptions) -> anyhow::Result<()> {
        if self.judge_threshold.is_some() && self.judge.is_empty() {
            bail!("--judge-threshold needs --judge CRITERION");
        }
        if !self.checks.is_empty() || !self.judge.is_empty() {
            let checks = options.checks.get_or_insert_with(|| {
                Box::new(Checks {
                    rules: Vec::new(),
                    judge: None,
                    on_failure: OnCheckFailure::Fail,
                    on_missing_evidence: OnMissingEvidence::Fail,
                    objectives: Vec::new(),
                    timeout_ms: None,
                    approvers: None,
                    required_approvals: None,
                })
            });
            if !self.checks.is_empty() {
                checks.rules = self.checks.clone();
            }
            if !self.judge.is_empty() {
                let threshold = self.judge_threshold.unwrap_or(DEFAULT_JUDGE_THRESHOLD);
                checks.judge = Some(JudgeSpec { criteria: self.judge.clone(), threshold, model: None });
            }
        }
        let flags = [
            ("--on-check-failure", self.on_check_failure.is_some()),
            ("--pass-on-missing-evidence", self.pass_on_missing_evidence),
        ];
        let Some(checks) = options.checks.as_mut() else {
            if let Some((flag, _)) = flags.iter().find(|(_, given)| *given) {
                bail!("{flag} needs checks: add --checks RULE,... or --judge CRITERION");
            }
            return Ok(());
        };
        if let Some(action) = self.on_check_failure {
            checks.on_failure = match action {
                CheckFailureAction::Fail => OnCheckFailure::Fail,
                CheckFailureAction::Retry => OnCheckFailure::Retry,
                CheckFailureAction::Approval => OnCheckFailure::Approval,
            };
        }
        if self.pass_on_missing_evidence {
            checks.on_missing_evidence = OnMissingEvidence::Pass;
        }
        Ok(())
    }
}

/// The judge's threshold when `--judge-threshold` is not given.
const DEFAULT_JUDGE_THRESHOLD: f64 = 0.7;

/// The fields of a run's options on the wire, and the flags of `osp run submit` that set
/// them. A refusal names the field, in the words every client shares; the person at the
/// command line set a flag, and is told the flag.
const FLAGS: &[(&str, &str)] = &[
    ("options.timeout.ms", "--timeout"),
    ("options.timeout.onTimeout", "--on-timeout"),
    ("options.heartbeatTimeoutMs", "--heartbeat-timeout"),
    ("options.retry.attempts", "--retry"),
    ("options.retry.delayMs", "--retry-delay"),
    ("options.retry.backoff", "--backoff"),
    ("options.retry.maxDelayMs", "--max-delay"),
    ("options.retry.retryOn", "--retry-on"),
    ("options.approval.message", "--require-approval"),
    ("options.approval.approvers", "--approvers"),
    ("options.approval.requiredApprovals", "--approvals"),
    ("options.approval.timeoutMs", "--approval-timeout"),
    ("options.approval.autoApproveOnTimeout", "--auto-approve"),
    ("options.waitForAgent", "--wait-for-agent"),
    ("options.checks.rules", "--checks"),
    ("options.checks.judge.criteria", "--judge"),
    ("options.checks.judge.threshold", "--judge-threshold"),
    ("options.checks.onFailure", "--on-check-failure"),
    ("options.checks.onMissingEvidence", "--pass-on-missing-evidence"),
];

/// `message` (a refusal of a run's options, the client's own check or the scheduler's)
/// with every field of [`FLAGS`] it names said as its flag: the field at fault
/// (`invalid options.timeout.ms` → `invalid --timeout`, an item of a list,
/// `options.checks.rules[1]`, as the list's flag) and any its reason points to
/// (`set options.waitForAgent` → `set --wait-for-agent`). A field within another
/// (`workflow.task.options.retry.attempts`, set in a workflow file) stays as it is.
pub fn in_flags(message: &str) -> String {
    let in_field = |c: char| c.is_alphanumeric() || c == '.' || c == '_';
    let mut said = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find("options.") {
        let (before, from) = rest.split_at(at);
        said.push_str(before);
        let length = from.find(|c: char| !in_field(c)).unwrap_or(from.len());
        let field = from[..length].trim_end_matches('.');
        let flag = FLAGS.iter().find(|(wire, _)| *wire == field).map(|(_, flag)| *flag);
        match flag.filter(|_| !before.ends_with(in_field)) {
            Some(flag) => {
                said.push_str(flag);
                let after = &from[field.len()..];
                rest = after.strip_prefix('[').and_then(|index| index.split_once(']')).map_or(after, |(_, tail)| tail);
            }
            None => {
                said.push_str(&from[..length]);
                rest = &from[length..];
            }
        }
    }
    said.push_str(rest);
    said
}

/// Whole milliseconds (a duration under 1 ms is 0, which the check refuses where 0 is
/// not allowed).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        flags: OptionFlags,
    }

    fn build(args: &[&str]) -> anyhow::Result<Value> {
        let cli = Cli::try_parse_from(std::iter::once("submit").chain(args.iter().copied()))?;
        Ok(serde_json::to_value(cli.flags.build()?).unwrap())
    }

    #[test]
    fn flags_build_the_options() {
        assert_eq!(build(&[]).unwrap(), json!({}));
        let got = build(&[
            "--timeout",
            "30s",
            "--on-timeout",
            "cancel",
            "--heartbeat-timeout",
            "2m",
            "--retry",
            "3",
            "--retry-delay",
            "1s",
            "--backoff",
            "exponential",
            "--max-delay",
            "10s",
            "--retry-on",
            "timeout,heartbeat",
            "--require-approval",
            "ship it?",
            "--approvers",
            "user:ann,user:bob",
            "--approvals",
            "2",
            "--approval-timeout",
            "1h",
            "--auto-approve",
            "--wait-for-agent",
        ])
        .unwrap();
        assert_eq!(
            got,
            json!({
                "timeout": {"ms": 30_000, "onTimeout": "cancel"},
                "heartbeatTimeoutMs": 120_000,
                "retry": {"attempts": 3, "delayMs": 1000, "backoff": "exponential", "maxDelayMs": 10_000,
                          "retryOn": ["timeout", "heartbeat"]},
                "approval": {"message": "ship it?", "approvers": ["user:ann", "user:bob"], "requiredApprovals": 2,
                             "timeoutMs": 3_600_000, "autoApproveOnTimeout": true},
                "waitForAgent": true,
            })
        );
    }

    #[test]
    fn check_flags_build_the_checks() {
        let got = build(&[
            "--checks",
            "has-summary,short",
            "--judge",
            "accurate",
            "--judge-threshold",
            "0.8",
            "--on-check-failure",
            "approval",
            "--pass-on-missing-evidence",
        ])
        .unwrap();
        assert_eq!(
            got,
            json!({"checks": {"rules": ["has-summary", "short"], "judge": {"criteria": ["accurate"], "threshold": 0.8},
                              "onFailure": "approval", "onMissingEvidence": "pass"}})
        );
        let judged = build(&["--judge", "accurate"]).unwrap();
        assert_eq!(judged["checks"]["judge"]["threshold"], json!(0.7));
    }

    #[test]
    fn flags_override_the_options_document() {
        let options = r#"{"retry": {"attempts": 5, "delayMs": 200, "backoff": "linear"}, "timeout": {"ms": 100, "onTimeout": "continue"}}"#;
        let got = build(&["--options", options, "--retry", "2", "--timeout", "1s"]).unwrap();
        assert_eq!(
            got,
            json!({"timeout": {"ms": 1000, "onTimeout": "continue"},
                   "retry": {"attempts": 2, "delayMs": 200, "backoff": "linear"}})
        );
        let got = build(&["--options", r#"{"approval": {"message": "ok?"}}"#, "--approvers", "ann"]).unwrap();
        assert_eq!(
            got["approval"],
            json!({"message": "ok?", "approvers": ["ann"], "requiredApprovals": 1,
                                           "autoApproveOnTimeout": false})
        );
    }

    #[test]
    fn bad_options_are_refused_with_the_flag_or_field() {
        for (args, expected) in [
            (&["--backoff", "fibonacci"][..], "invalid value 'fibonacci' for '--backoff <BACKOFF>'"),
            (&["--retry", "0"][..], "invalid value '0' for '--retry <N>': 0 is not in 1..=100"),
            (&["--timeout", "soon"][..], "invalid value 'soon' for '--timeout <DURATION>'"),
            (&["--on-timeout", "cancel"][..], "--on-timeout needs a timeout: add --timeout DURATION"),
            (&["--backoff", "linear"][..], "--backoff needs a retry policy: add --retry N"),
            (&["--approvers", "ann"][..], "--approvers needs an approval: add --require-approval MESSAGE"),
            (&["--timeout", "0s"][..], "invalid --timeout: must be more than 0 ms"),
            (
                &["--require-approval", "ok?", "--approvers", "ann", "--approvals", "2"][..],
                "invalid --approvals: 2 approvals required but only 1 distinct approvers listed",
            ),
            (&["--options", r#"{"retries": 3}"#][..], "--options: unknown field `retries`"),
            (&["--options", "[1]"][..], "--options: must be a JSON object"),
            (&["--options", "{"][..], "--options: invalid JSON"),
            (&["--on-check-failure", "retry"][..], "--on-check-failure needs checks: add --checks RULE,..."),
            (&["--checks", "a", "--judge-threshold", "0.5"][..], "--judge-threshold needs --judge CRITERION"),
            (&["--judge", "clear", "--judge-threshold", "2"][..], "invalid --judge-threshold"),
            (&["--checks", "a.b"][..], "invalid --checks \"a.b\""),
        ] {
            let err = build(args).unwrap_err().to_string();
            assert!(err.contains(expected), "{args:?}: {err}");
        }
    }

    #[test]
    fn wire_fields_are_said_as_their_flags() {
        assert_eq!(
            in_flags(
                "capability \"x\" not found: no registered agent offers it; set options.waitForAgent to queue the run."
            ),
            "capability \"x\" not found: no registered agent offers it; set --wait-for-agent to queue the run."
        );
        assert_eq!(
            in_flags("invalid options.approval.approvers[1] \"a b\": no spaces"),
            "invalid --approvers \"a b\": no spaces"
        );
        for untouched in [
            "invalid workflow.task.options.retry.attempts: at most 100",
            "invalid options.notify.service: unknown",
            "invalid options.retry.attemptsX: no",
            "no options. here",
        ] {
            assert_eq!(in_flags(untouched), untouched);
        }
    }
}
