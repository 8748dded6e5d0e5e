//! `osp run`: submit runs to the scheduler, read them, follow them live, and steer them
//! (cancel, pause, resume, approve, reject, answer).

mod definition;
mod options;
pub mod show;
mod steer;
mod tree;
mod watch;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{ArgGroup, Args, Subcommand};
use osp_client::{Answer, Scheduler, Submission};
use osp_protocol::scheduler::queries::{ListQuery, RunStatus, RunSummary, MAX_LIMIT};
use osp_protocol::scheduler::RunOutcome;
use osp_protocol::Token;
use serde_json::Value;

use crate::connect::{self, service_error};
use crate::json_args;
use crate::output::is_broken_pipe;
use steer::Steer;

/// Options of `osp run`.
#[derive(Args)]
pub struct RunArgs {
    /// Print JSON: one object per run per line for list, one object per event per line
    /// for watch, one object otherwise.
    #[arg(long, global = true)]
    json: bool,
    /// Act as ACTOR (the commands' `Osp-Actor`: who submits, approves, rejects, answers,
    /// cancels) [default: user:$USER, or user:cli without $USER].
    #[arg(long = "as", global = true, value_name = "ACTOR")]
    actor: Option<String>,
    #[command(subcommand)]
    command: RunCommand,
}

/// How `osp run watch` (and `submit --watch`) exits.
macro_rules! exit_codes {
    () => {
        "Exit status: 0 when the run completed, 1 when it failed, 3 when it was cancelled, \
4 when the watch itself failed (no server, no scheduler, no such run), 130 on Ctrl-C (the run goes on); \
2 is a usage error, as for every command."
    };
}
const EXIT_CODES: &str = exit_codes!();

/// The workflow file format, in brief, for `osp run submit --help`.
const SUBMIT_HELP: &str = concat!(
    "A workflow file (--workflow FILE) is JSON, or YAML when FILE ends in .yaml or .yml (`-` reads JSON
from stdin): one object naming its pattern, fields in camelCase, unknown fields refused. Every STEP
is itself one of the five, so workflows nest (up to 8 deep):

  {\"task\": {\"capability\": C, \"options\"?: {...}}}
  {\"routing\": {\"classify\": STEP, \"routes\": {KEY: STEP, ...}, \"default\"?: KEY}}
  {\"parallelization\": {\"split\": STEP | \"subtasks\": [{\"id\": ID, \"prompt\": ...}], \"worker\": STEP,
                       \"merge\"?: STEP, \"maxConcurrency\"?: N, \"failureStrategy\"?: \"collect-all\"}}
  {\"orchestratorWorkers\": {\"plan\": STEP, \"workers\": {NAME: STEP, ...}, \"synthesize\"?: STEP}}
  {\"evaluatorOptimizer\": {\"generate\": STEP, \"evaluate\": STEP, \"optimize\"?: STEP, \"threshold\"?: 0.8,
                          \"maxIterations\"?: 3}}

Any of them may carry \"options\" (--options' format; retry only on a task). The file is checked
before anything is sent: a mistake exits with status 2, naming its line and column or its field
(`invalid workflow.routing.default: ...`). The run's options go in the root's \"options\" or in the
flags, not both. Each step runs as a child run `<run id>:<step key>` (osp run get shows the tree).
The whole format: docs/protocol.md §17.10.

With --watch: ",
    exit_codes!()
);

/// A definition that does not parse or check is a usage error, as a bad flag is.
const USAGE_ERROR: u8 = 2;

#[derive(Subcommand)]
enum RunCommand {
    /// Submit a run of a capability's task, or of a workflow (--workflow FILE), and print
    /// its id.
    ///
    /// The scheduler refuses a capability that no registered agent offers (for a workflow,
    /// any capability it names), unless --wait-for-agent. With --watch, follow the run as
    /// `osp run watch` does, and exit as it does.
    #[command(after_help = SUBMIT_HELP, group = ArgGroup::new("what").required(true).args(["capability", "workflow"]))]
    Submit {
        /// The capability whose agents execute the task (e.g. summarize); not with
        /// --workflow.
        capability: Option<String>,
        /// Run the workflow defined in FILE (JSON, or YAML for .yaml/.yml; `-`: JSON from
        /// stdin) instead of one task: see the format below.
        #[arg(long, value_name = "FILE|-")]
        workflow: Option<String>,
        /// The task's input, JSON: inline, `@FILE`, or `-` for stdin [default: null].
        #[arg(long, value_name = "JSON|@FILE|-")]
        input: Option<String>,
        /// The run's id (a subject token: no `.`, `*`, `>` or whitespace) [default: a new
        /// UUID]. Submitting the same run again is harmless; other content under the same
        /// id is refused.
        #[arg(long, value_name = "ID")]
        run_id: Option<String>,
        /// Your own data, kept with the run: JSON inline, `@FILE`, or `-` for stdin.
        #[arg(long, value_name = "JSON|@FILE|-")]
        metadata: Option<String>,
        #[command(flatten)]
        options: Box<options::OptionFlags>,
        /// Then follow the run until it ends (see `osp run watch`).
        #[arg(long)]
        watch: bool,
    },
    /// A run whole: status, attempts, progress, approval, questions, output or error, and
    /// its last log lines; for a workflow run, its step tree.
    ///
    /// The tree shows each step's key, what it runs (`task summarize`, or a pattern), its
    /// status and duration; the steps of a step that is a workflow of its own are indented
    /// beneath it, fetched as deep as workflows nest (8), at most 256 nested runs. Exits
    /// with status 1 when there is no such run.
    Get {
        /// The run's id.
        run_id: String,
        /// Print the whole tree as one JSON object: the run as --json prints it, each
        /// nested workflow step with its own run's tree as `run` (and `steps_not_fetched`
        /// where the bounds left some out).
        #[arg(long)]
        tree: bool,
    },
    /// The runs, by id.
    List {
        /// Only runs in this status: pending, in-progress, awaiting, completed, failed,
        /// cancelled.
        #[arg(long, value_name = "STATUS")]
        status: Option<RunStatus>,
        /// Only runs of this capability.
        #[arg(long, value_name = "C")]
        capability: Option<String>,
        /// Runs per page, 1 to 1000 [default: 100].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_LIMIT)))]
        limit: Option<u32>,
        /// Start after this run id (the `next` a page ended with).
        #[arg(long, value_name = "ID")]
        after: Option<String>,
        /// Every page, not only the first.
        #[arg(long)]
        all: bool,
        /// Also the child runs of workflows' steps (`<parent>:<step key>`), with a PARENT
        /// column; without it, only the runs people submitted.
        #[arg(long)]
        children: bool,
    },
    /// Follow a run live until it ends: one line per event (its history first), and a
    /// progress bar on a terminal.
    ///
    /// A workflow run's bar counts its steps (done / known in all), and its step tree
    /// (as `osp run get` shows it) follows the last event, except with --json.
    #[command(after_help = EXIT_CODES)]
    Watch {
        /// The run's id.
        run_id: String,
    },
    /// Cancel a run.
    Cancel {
        /// The run's id.
        run_id: String,
        /// Why, kept in the log [default: cancelled].
        #[arg(long)]
        reason: Option<String>,
        /// Tell the agent, and give it this long to stop before the cancel is forced
        /// [default when given without a value: 10s]. Without it, cancel at once.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "10s",
              value_parser = humantime::parse_duration)]
        graceful: Option<Duration>,
    },
    /// Stop dispatching the run's work (an attempt in progress goes on).
    Pause {
        /// The run's id.
        run_id: String,
        /// Why, kept in the log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Dispatch a paused run's work again.
    Resume {
        /// The run's id.
        run_id: String,
    },
    /// Approve a run waiting for approval, as yourself or --as ACTOR.
    Approve {
        /// The run's id.
        run_id: String,
        /// Why, kept in the log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Reject a run waiting for approval, as yourself or --as ACTOR: it is cancelled.
    Reject {
        /// The run's id.
        run_id: String,
        /// Why, kept in the log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Answer the agent's question.
    Answer {
        /// The run's id.
        run_id: String,
        /// The answer, JSON: inline (a string is quoted: '"yes"'), `@FILE`, or `-` for stdin.
        #[arg(value_name = "ANSWER_JSON|@FILE|-")]
        answer: String,
        /// The question answered [default: the open one].
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
    },
}

/// Runs an `osp run` command. Input is checked before connecting, so a mistake in it
/// is reported whether or not a server is up; the steering commands look the run up
/// first, so a missing scheduler or run is said at once.
pub async fn run(args: RunArgs, url: &str) -> anyhow::Result<ExitCode> {
    let json = args.json;
    let actor = args.actor;
    let actor = actor.as_deref();
    let scheduler = || async move { Ok::<_, anyhow::Error>(client(url, actor).await?.scheduler()) };
    match args.command {
        RunCommand::Submit { capability, workflow, input, run_id, metadata, options, watch } => {
            let stdin_readers = [
                input.as_deref() == Some("-"),
                metadata.as_deref() == Some("-"),
                options.reads_stdin(),
                workflow.as_deref() == Some("-"),
            ];
            if stdin_readers.iter().filter(|reads| **reads).count() > 1 {
                bail!("only one of --input, --metadata and --options (and --workflow) can read stdin (`-`)");
            }
            let definition = match workflow.as_deref().map(definition::read).transpose() {
                Ok(definition) => definition,
                Err(error) => {
                    crate::output::print_error(&error);
                    return Ok(ExitCode::from(USAGE_ERROR));
                }
            };
            if let Some(capability) = &capability {
                Token::new("capability", capability.as_str())?;
            }
            let options = options.build()?;
            let input = input.map(|arg| json_args::read("--input", &arg)).transpose()?.unwrap_or(Value::Null);
            let submission = match definition {
                Some(definition) => Submission::workflow(definition, input),
                None => Submission::new(capability.unwrap_or_default(), input),
            };
            let mut submission = submission.options(options);
            if let Some(run_id) = run_id {
                Token::new("run id", run_id.as_str())?;
                submission = submission.run_id(run_id);
            }
            if let Some(metadata) = metadata {
                submission = submission.metadata(json_args::read("--metadata", &metadata)?);
            }
            let scheduler = scheduler().await?;
            // A query fails at once when no scheduler runs, where a command would wait
            // and stay stored for whenever one starts.
            scheduler.get(submission.id()).await.map_err(service_error)?;
            let answer = scheduler.submit(&submission).await.map_err(|error| match error.rejection() {
                Some(refusal) => anyhow!(options::in_flags(&refusal.to_string())),
                None => service_error(error),
            })?;
            if json {
                show::print_outcome(&answer.result, answer.seq)?;
            } else {
                crate::output::Lines::new(false, true).line(&answer.result.run_id)?;
                if !answer.result.created {
                    eprintln!("run {} existed already, submitted with the same content", answer.result.run_id);
                }
            }
            if watch {
                return Ok(watch_exit(watch::follow(&scheduler, submission.id(), json).await));
            }
        }
        RunCommand::Get { run_id, tree } => {
            let scheduler = scheduler().await?;
            let run = scheduler.get(&run_id).await.map_err(service_error)?.ok_or_else(|| not_found(&run_id))?;
            if tree {
                let tree = tree::Tree::fetch(&scheduler, run).await.map_err(service_error)?;
                crate::output::Lines::new(true, true).line(&tree::json(&tree).to_string())?;
            } else if run.workflow.is_some() && !json {
                let tree = tree::Tree::fetch(&scheduler, run).await.map_err(service_error)?;
                show::print_run(&tree.run, Some(&tree), json)?;
            } else {
                show::print_run(&run, None, json)?;
            }
        }
        RunCommand::List { status, capability, limit, after, all, children } => {
            let scheduler = scheduler().await?;
            let mut query = ListQuery { status, capability, children, after, limit };
            let mut runs: Vec<RunSummary> = Vec::new();
            loop {
                let page = scheduler.list(&query).await.map_err(service_error)?;
                runs.extend(page.runs);
                match page.next {
                    Some(next) if all => query.after = Some(next),
                    Some(next) => {
                        eprintln!("more runs after {next}: --all for every page, or --after {next}");
                        break;
                    }
                    None => break,
                }
            }
            show::print_summaries(&runs, json, children)?;
        }
        RunCommand::Watch { run_id } => {
            let watched = async {
                let scheduler = existing(scheduler().await?, &run_id).await?;
                watch::follow(&scheduler, &run_id, json).await
            };
            return Ok(watch_exit(watched.await));
        }
        RunCommand::Cancel { run_id, reason, graceful } => {
            let scheduler = existing(scheduler().await?, &run_id).await?;
            let answer = scheduler.cancel(&run_id, reason.as_deref(), graceful).await.map_err(service_error)?;
            steered(Steer::Cancel { graceful }, &answer, json)?;
        }
        RunCommand::Pause { run_id, reason } => {
            let scheduler = existing(scheduler().await?, &run_id).await?;
            let answer = scheduler.pause(&run_id, reason.as_deref()).await.map_err(service_error)?;
            steered(Steer::Pause, &answer, json)?;
        }
        RunCommand::Resume { run_id } => {
            let scheduler = existing(scheduler().await?, &run_id).await?;
            let answer = scheduler.resume(&run_id).await.map_err(service_error)?;
            steered(Steer::Resume, &answer, json)?;
        }
        RunCommand::Approve { run_id, reason } => {
            let scheduler = existing(scheduler().await?, &run_id).await?;
            let answer = scheduler.approve(&run_id, reason.as_deref()).await.map_err(service_error)?;
            // The count of approvals is the run's, read after the approval (the client
            // reads its own writes).
            let run = match json {
                true => None,
                false => scheduler.get(&run_id).await.map_err(service_error)?,
            };
            let approval = run.as_ref().and_then(|run| run.approval.as_ref());
            steered(Steer::Approve { approval }, &answer, json)?;
        }
        RunCommand::Reject { run_id, reason } => {
            let scheduler = existing(scheduler().await?, &run_id).await?;
            let answer = scheduler.reject(&run_id, reason.as_deref()).await.map_err(service_error)?;
            steered(Steer::Reject, &answer, json)?;
        }
        RunCommand::Answer { run_id, answer, request_id } => {
            let answer = json_args::read("ANSWER", &answer)
                .map_err(|error| anyhow!("{error} (an answer is JSON: quote a string, '\"yes\"')"))?;
            let scheduler = existing(scheduler().await?, &run_id).await?;
            let reply = scheduler.answer(&run_id, request_id.as_deref(), answer).await.map_err(service_error)?;
            steered(Steer::Answer { request_id: request_id.as_deref() }, &reply, json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what a steering command did: a sentence, or the outcome as JSON.
fn steered(steer: Steer<'_>, answer: &Answer<RunOutcome>, json: bool) -> std::io::Result<()> {
    match json {
        true => show::print_outcome(&answer.result, answer.seq),
        false => crate::output::Lines::new(false, true).line(&steer::said(steer, &answer.result)),
    }
}

/// A client acting as `actor`, or as the person at the keyboard.
async fn client(url: &str, actor: Option<&str>) -> anyhow::Result<osp_client::Client> {
    let client = connect::osp_client(url).await?;
    Ok(match actor {
        Some(actor) if actor.trim().is_empty() => bail!("--as: give an actor, e.g. user:ana"),
        Some(actor) => client.with_actor(actor),
        None => client,
    })
}

/// `scheduler`, once it has said `run_id` exists.
async fn existing(scheduler: Scheduler, run_id: &str) -> anyhow::Result<Scheduler> {
    match scheduler.get(run_id).await.map_err(service_error)? {
        Some(_) => Ok(scheduler),
        None => Err(not_found(run_id)),
    }
}

fn not_found(run_id: &str) -> anyhow::Error {
    anyhow!("no run with id {run_id:?} (osp run list shows the runs)")
}

/// The exit status of a watch: the run's outcome, or [`watch::WATCH_FAILED`] after
/// saying what went wrong.
fn watch_exit(watched: anyhow::Result<ExitCode>) -> ExitCode {
    match watched {
        Ok(code) => code,
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            crate::output::print_error(&error.context("watching the run"));
            ExitCode::from(watch::WATCH_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RunArgs,
    }

    #[test]
    fn the_commands_parse() {
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("run").chain(args.iter().copied()));
        let cli = parse(&["cancel", "r-1", "--graceful"]).unwrap();
        assert!(
            matches!(cli.args.command, RunCommand::Cancel { graceful: Some(d), .. } if d == Duration::from_secs(10))
        );
        let cli = parse(&["cancel", "r-1", "--graceful", "2s", "--reason", "done"]).unwrap();
        assert!(
            matches!(cli.args.command, RunCommand::Cancel { graceful: Some(d), .. } if d == Duration::from_secs(2))
        );
        let cli = parse(&["approve", "r-1", "--as", "user:ann", "--json"]).unwrap();
        assert_eq!((cli.args.actor.as_deref(), cli.args.json), (Some("user:ann"), true));
        let cli = parse(&["list", "--status", "in-progress", "--limit", "5", "--all"]).unwrap();
        assert!(matches!(cli.args.command, RunCommand::List { status: Some(RunStatus::InProgress), .. }));
        let err = parse(&["list", "--status", "running"]).err().unwrap().to_string();
        assert!(err.contains("\"running\" is not a status"), "{err}");
        assert!(parse(&["list", "--limit", "0"]).is_err());
        let cli = parse(&["submit", "--workflow", "flow.yaml", "--timeout", "1m"]).unwrap();
        assert!(matches!(cli.args.command, RunCommand::Submit { capability: None, workflow: Some(_), .. }));
        let both = parse(&["submit", "work", "--workflow", "flow.yaml"]).err().unwrap().to_string();
        assert!(both.contains("cannot be used with"), "{both}");
        let neither = parse(&["submit"]).err().unwrap().to_string();
        assert!(neither.contains("<CAPABILITY|--workflow <FILE|->>"), "{neither}");
    }
}
