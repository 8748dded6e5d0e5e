//! `osp registry`: list, read, find, register and unregister the entries of any registry
//! (agents, tools, skills, mcp-servers, ...) through the registry service.

use std::fmt;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use osp_protocol::registry::document::from_json;
use osp_protocol::registry::queries::RegistryCount;
use osp_protocol::registry::EntryDoc;
use serde_json::json;

use crate::connect::{self, service_error};
use crate::entries::{self, Columns};
use crate::json_args;
use crate::output::{table, Lines};

/// Options of `osp registry`.
#[derive(Args)]
pub struct RegistryArgs {
    /// Print JSON: one object per entry per line for list and find, one object otherwise.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: RegistryCommand,
}

#[derive(Subcommand)]
enum RegistryCommand {
    /// Every entry of a registry, by name; without one, the registries that hold
    /// entries, and how many.
    #[command(visible_alias = "ls")]
    List {
        /// The registry: agents, tools, skills, mcp-servers, or any other.
        registry: Option<String>,
    },
    /// One entry, whole.
    ///
    /// Exits with status 1 when there is none of that name.
    Get(Key),
    /// The entries whose resource matches the criteria.
    ///
    /// Every criterion must match: a value matches an equal value or an array holding
    /// it; an array matches an array holding all its items; an object matches field by
    /// field.
    Find {
        /// The registry: agents, tools, skills, mcp-servers, or any other.
        registry: String,
        /// The resource field PATH (dots go into nested maps) must match VALUE, read as
        /// JSON when it is JSON (4, true, ["a","b"]) and as text otherwise. Repeatable.
        #[arg(long = "where", value_name = "PATH=VALUE")]
        wheres: Vec<String>,
        /// Every criterion as one JSON object (`@FILE` reads a file); `--where` pairs
        /// are set on top of it.
        #[arg(long, value_name = "JSON")]
        criteria: Option<String>,
        /// Only agents online now.
        #[arg(long)]
        live: bool,
    },
    /// Add an entry, or replace the one of that name (the old version stays in the log).
    Register {
        #[command(flatten)]
        key: Key,
        /// What it is, for people.
        #[arg(long)]
        description: Option<String>,
        /// Its resource, a JSON object: inline, `@FILE`, or `-` for stdin. An agent's is
        /// its card: {"capabilities": [...], "max_concurrency": N, "version": "..."}.
        #[arg(long, value_name = "JSON|@FILE|-")]
        resource: Option<String>,
        /// Metadata kept with it, a JSON object: inline or `@FILE`.
        #[arg(long, value_name = "JSON|@FILE")]
        metadata: Option<String>,
    },
    /// Remove an entry.
    ///
    /// Exits with status 1 when there is none of that name.
    Unregister {
        #[command(flatten)]
        key: Key,
        /// Why, kept in the log.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Which entry: a registry and a name in it.
#[derive(Args)]
struct Key {
    /// The registry: agents, tools, skills, mcp-servers, or any other.
    registry: String,
    /// The entry's name.
    name: String,
}

impl Key {
    fn not_found(&self) -> anyhow::Error {
        anyhow!("no entry named {:?} in the {} registry", self.name, self.registry)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.name)
    }
}

/// Runs an `osp registry` command. Input is checked before connecting, so a mistake in
/// it is reported whether or not a server is up.
pub async fn run(args: RegistryArgs, url: &str) -> anyhow::Result<ExitCode> {
    let json = args.json;
    match args.command {
        RegistryCommand::List { registry: Some(registry) } => {
            let entries =
                connect::osp_client(url).await?.registry().list_all(&registry).await.map_err(service_error)?;
            entries::print_all(&entries, Columns::Entries, json)?;
        }
        RegistryCommand::List { registry: None } => {
            let registries = connect::osp_client(url).await?.registry().registries().await.map_err(service_error)?;
            print_registries(&registries.registries, json)?;
        }
        RegistryCommand::Get(key) => {
            let found = connect::osp_client(url).await?.registry().get(&key.registry, &key.name).await;
            let entry = found.map_err(service_error)?.ok_or_else(|| key.not_found())?;
            entries::print_one(&entry, json)?;
        }
        RegistryCommand::Find { registry, wheres, criteria, live } => {
            let criteria = json_args::criteria(criteria.as_deref(), &wheres)?;
            let client = connect::osp_client(url).await?;
            let entries = client.registry().find_all(&registry, criteria, live).await.map_err(service_error)?;
            entries::print_all(&entries, Columns::Entries, json)?;
        }
        RegistryCommand::Register { key, description, resource, metadata } => {
            if metadata.as_deref() == Some("-") {
                bail!("--metadata: give inline JSON or @FILE (only --resource reads stdin)");
            }
            let resource = match resource {
                Some(arg) => json_args::read("--resource", &arg)?,
                None => json!({}),
            };
            let metadata = metadata.map(|arg| json_args::read("--metadata", &arg)).transpose()?;
            let entry = EntryDoc::new(
                &key.registry,
                &key.name,
                description.unwrap_or_default(),
                from_json(&resource),
                metadata.as_ref().map(from_json),
            )?;
            let answer = connect::osp_client(url).await?.registry().register(&entry).await.map_err(service_error)?;
            let (revision, created) = (answer.result.revision, answer.result.created);
            let line = if json {
                json!({"registry": key.registry, "name": key.name, "revision": revision, "created": created,
                       "seq": answer.seq})
                .to_string()
            } else {
                format!("{} {key} (revision {revision})", if created { "registered" } else { "updated" })
            };
            Lines::new(json, true).line(&line)?;
        }
        RegistryCommand::Unregister { key, reason } => {
            let registry = connect::osp_client(url).await?.registry();
            if !registry.unregister(&key.registry, &key.name, reason).await.map_err(service_error)? {
                return Err(key.not_found());
            }
            let line = if json {
                json!({"registry": key.registry, "name": key.name, "unregistered": true}).to_string()
            } else {
                format!("unregistered {key}")
            };
            Lines::new(json, true).line(&line)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The registries as a table (REGISTRY, ENTRIES, ONLINE), or one JSON object each. None
/// at all is a note on stderr, so stdout holds only registries.
fn print_registries(registries: &[RegistryCount], json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        for registry in registries {
            lines.line(&serde_json::to_string(registry).map_err(std::io::Error::other)?)?;
        }
    } else if registries.is_empty() {
        eprintln!("no registries: nothing is registered yet");
    } else {
        let rows = registries.iter().map(|r| {
            let online = r.online.map_or_else(|| "-".to_owned(), |online| online.to_string());
            vec![r.registry.clone(), r.entries.to_string(), online]
        });
        lines.line(&table(&["REGISTRY", "ENTRIES", "ONLINE"], rows))?;
    }
    lines.flush()
}
