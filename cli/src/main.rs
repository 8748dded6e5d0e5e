//! `osp`: the operator's command line.
//!
//! It speaks to the system only through NATS, like any other client: point it at a
//! server with `--nats-url` or `OSP_NATS_URL`, or let `osp dev` start one.

mod bench;

use osp_cli::{agents, clock, context, dev, doctor, events, output, quality, registry, replay, run, transfer, verify};

use clap::{Parser, Subcommand};

/// The allocator: services allocate and free a reply's worth of small values per query,
/// where mimalloc measured about 1.6 times the queries per second of the system one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Agentic OS Protocol runtime on NATS JetStream.
#[derive(Parser)]
#[command(name = "osp", version, about, propagate_version = true)]
struct Cli {
    /// NATS server to talk to [default: the newest `osp dev` running on this machine, else
    /// nats://127.0.0.1:4222; `osp dev` starts its own unless this is given].
    #[arg(long, global = true, env = "OSP_NATS_URL")]
    nats_url: Option<String>,
    /// Show times in UTC instead of the local time zone (`TZ`, else the system's).
    /// `--json` output is always in UTC.
    #[arg(long, global = true, env = "OSP_UTC", value_parser = clap::builder::BoolishValueParser::new())]
    utc: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole system locally: a nats-server (installed if needed) with the OSP
    /// streams and the services (the registry, the scheduler, the quality and the context services), until Ctrl-C.
    Dev(dev::DevArgs),
    /// Check a deployment and say what to do about each problem: the connection, the
    /// server's version, JetStream, the streams and their safety settings, each service's
    /// instances and lag, the services' consumers' backlogs, and the credentials in use.
    /// Exits with status 1 when a check fails (warnings pass).
    Doctor(doctor::DoctorArgs),
    /// Read the event log.
    #[command(subcommand)]
    Events(events::EventsCommand),
    /// Check the event log.
    #[command(subcommand)]
    Log(LogCommand),
    /// Replay runs from the log: a run's timeline across services and its state at any
    /// point; where two runs diverged.
    #[command(subcommand)]
    Replay(replay::ReplayCommand),
    /// Registries of agents, tools, skills, MCP servers: list, get, find, register,
    /// unregister.
    Registry(registry::RegistryArgs),
    /// The agents, what they can do and whether they are online.
    Agents(agents::AgentsArgs),
    /// Runs of tasks on the scheduler: submit, get, list, watch, and cancel, pause,
    /// resume, approve, reject, answer.
    Run(run::RunArgs),
    /// The quality service's catalog of rules: add, update, rm, list, get.
    Rules(quality::rules::RulesArgs),
    /// Check an output against rules of the catalog, recording an audit entry; the exit
    /// status follows the opinion.
    Check(quality::check::CheckArgs),
    /// The audit entries of checks: query, show, export to and import from markdown.
    Audit(quality::audit::AuditArgs),
    /// Key-value entries of a scope (global, run:<id>, agent:<name>, session:<id>,
    /// user:<name>): get (now or as of a log sequence or time), set, rm, ls; and an agent's
    /// system context.
    Ctx(context::CtxArgs),
    /// System-wide settings: get, set (optionally read-only), rm, ls.
    Settings(context::SettingsArgs),
    /// Preferences of agents and users: get (resolved agent > user > system), set, rm, ls.
    Prefs(context::PrefsArgs),
    /// Environment entries (sensitive values masked unless --reveal): get, set, rm, ls.
    Env(context::EnvArgs),
    /// Embeddings: upsert, search (by vector or text), get, rm.
    Embed(context::EmbedArgs),
    /// Measure throughput and latency next to raw JetStream, on a server of its own (runs
    /// the osp-bench binary; `osp bench --help` lists the benchmarks).
    Bench(bench::BenchArgs),
}

#[derive(Subcommand)]
enum LogCommand {
    /// Decode every event and check every aggregate's hash chain (report the first bad
    /// link per aggregate); then check that each running service's live state is the
    /// state rebuilt from the log from scratch. Exits with status 1 when a problem is
    /// found.
    Verify(verify::VerifyArgs),
    /// Write a run (with its descendants) or the whole log to a portable NDJSON file,
    /// every event's stored bytes and hash included.
    Export(transfer::ExportArgs),
    /// Append the events of an exported file to an empty log, after checking every hash
    /// and chain in it; the same bytes, so the same hashes.
    Import(transfer::ImportArgs),
}

fn main() -> std::process::ExitCode {
    osp_runtime::init_tracing("warn");
    let cli = Cli::parse();
    if cli.utc {
        clock::use_utc();
    }
    let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
    let outcome = runtime.block_on(async move {
        let url = || cli.nats_url.clone().unwrap_or_else(osp_client::local_dev::nats_url);
        match cli.command {
            Command::Dev(args) => dev::run(args, cli.nats_url.as_deref()).await,
            Command::Doctor(args) => doctor::run(args, &url()).await,
            Command::Events(command) => events::run(command, &url()).await,
            Command::Log(LogCommand::Verify(args)) => verify::run(args, &url()).await,
            Command::Log(LogCommand::Export(args)) => transfer::export(args, &url()).await,
            Command::Log(LogCommand::Import(args)) => transfer::import(args, &url()).await,
            Command::Replay(command) => replay::run(command, &url()).await,
            Command::Registry(args) => registry::run(args, &url()).await,
            Command::Agents(args) => agents::run(args, &url()).await,
            Command::Run(args) => run::run(args, &url()).await,
            Command::Rules(args) => quality::rules::run(args, &url()).await,
            Command::Check(args) => quality::check::run(args, &url()).await,
            Command::Audit(args) => quality::audit::run(args, &url()).await,
            Command::Ctx(args) => context::ctx(args, &url()).await,
            Command::Settings(args) => context::settings(args, &url()).await,
            Command::Prefs(args) => context::prefs(args, &url()).await,
            Command::Env(args) => context::env(args, &url()).await,
            Command::Embed(args) => context::embed(args, &url()).await,
            Command::Bench(args) => bench::run(args),
        }
    });
    match outcome {
        Ok(code) => code,
        // `osp events replay | head` closes our stdout early: that is not an error.
        Err(error) if output::is_broken_pipe(&error) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            output::print_error(&error);
            std::process::ExitCode::FAILURE
        }
    }
}
