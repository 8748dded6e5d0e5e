//! The context service's commands: `osp ctx` (key-value entries, their history, an
//! agent's system context), `osp settings`, `osp prefs`, `osp env` (sensitive values
//! masked unless `--reveal`) and `osp embed`. Each acts as the person at the keyboard, or
//! as `--as ACTOR`, whom the service's access rules judge.

use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use osp_client::{EnvEntry, SearchBy};
use osp_protocol::context::queries::EntryView;
use osp_protocol::context::Embedding;
use serde_json::{json, Value};

use crate::connect::{self, service_error};
use crate::json_args;
use crate::output::{table, Lines};
use crate::time_args::{parse_time, TIME_FORMAT};

/// Options every context command takes.
#[derive(Args)]
pub struct Common {
    /// Print JSON: one object per line.
    #[arg(long, global = true)]
    json: bool,
    /// Act as this actor (`agent:a1`, `user:ana`) instead of `user:$USER`.
    #[arg(long = "as", value_name = "ACTOR", global = true)]
    actor: Option<String>,
}

/// `osp ctx`.
#[derive(Args)]
pub struct CtxArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: CtxCommand,
}

#[derive(Subcommand)]
enum CtxCommand {
    /// A key's value; with --at-seq or --at, as it was then (read from the log).
    Get {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The key, as `osp ctx ls SCOPE` lists it.
        key: String,
        /// As it was just after this log sequence (the `seq` a set printed).
        #[arg(long, conflicts_with = "at")]
        at_seq: Option<u64>,
        /// As it was at this time.
        #[arg(long, value_name = "TIME", help = format!("As it was at this time: {TIME_FORMAT}"))]
        at: Option<String>,
    },
    /// Create or replace a key (VALUE is JSON when it parses, else text).
    Set {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The key: no '.', '*', '>' or whitespace.
        key: String,
        /// The value: JSON (4, true, {"a":1}), or text; `@FILE` reads a JSON file.
        value: String,
    },
    /// Remove a key. Exits with status 1 when there was none.
    Rm {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The key to remove.
        key: String,
    },
    /// A scope's keys, in order.
    Ls {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// Only keys starting with this.
        #[arg(default_value = "")]
        prefix: String,
    },
    /// What an agent may see, in one answer (settings, preferences, environment, registry, scopes).
    System {
        /// The agent (an agent acting as itself may leave it out).
        agent: Option<String>,
    },
}

/// `osp settings`.
#[derive(Args)]
pub struct SettingsArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: SettingsCommand,
}

#[derive(Subcommand)]
enum SettingsCommand {
    /// One setting.
    Get {
        /// The setting's key, as `osp settings ls` lists it.
        key: String,
    },
    /// Create or replace a setting (VALUE is JSON when it parses, else text).
    Set {
        /// The setting's key: no '.', '*', '>' or whitespace.
        key: String,
        /// The value: JSON (4, true, {"a":1}), or text; `@FILE` reads a JSON file.
        value: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Never change it again at runtime (a later set or rm is refused).
        #[arg(long)]
        read_only: bool,
    },
    /// Remove a setting. Exits with status 1 when there was none.
    Rm {
        /// The setting's key (a read-only setting is never removed).
        key: String,
    },
    /// Every setting.
    Ls,
}

/// `osp prefs`.
#[derive(Args)]
pub struct PrefsArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: PrefsCommand,
}

#[derive(Subcommand)]
enum PrefsCommand {
    /// A preference as it applies: the agent's, else the user's, else the setting.
    Get {
        /// The preference's key (without an agent or user preference, the setting applies).
        key: String,
        /// The agent (default: the actor, when it is an agent).
        #[arg(long)]
        agent: Option<String>,
        /// The user (default: the actor, when it is a user).
        #[arg(long)]
        user: Option<String>,
    },
    /// Create or replace a preference of agent:<name> or user:<name> (system: `osp settings set`).
    Set {
        /// agent:<name> or user:<name>.
        scope: String,
        /// The preference's key: no '.', '*', '>' or whitespace.
        key: String,
        /// Its value (JSON when it parses, else text).
        value: String,
    },
    /// Remove a preference. Exits with status 1 when there was none.
    Rm {
        /// agent:<name> or user:<name>.
        scope: String,
        /// The preference's key, as `osp prefs ls SCOPE` lists it.
        key: String,
    },
    /// The preferences of agent:<name> or user:<name>.
    Ls {
        /// agent:<name> or user:<name>.
        scope: String,
    },
}

/// `osp env`.
#[derive(Args)]
pub struct EnvArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: EnvCommand,
}

#[derive(Subcommand)]
enum EnvCommand {
    /// One environment entry (a sensitive value masked unless --reveal).
    Get {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The entry's key, as `osp env ls SCOPE` lists it.
        key: String,
        /// Show a sensitive value in clear (refused unless you are allowed to).
        #[arg(long)]
        reveal: bool,
    },
    /// Create or replace an environment entry.
    Set {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The entry's key (e.g. `API_URL`): no '.', '*', '>' or whitespace.
        key: String,
        /// Its value (text).
        value: String,
        /// Where it applies: an environment name, or agent:<name> (repeatable).
        #[arg(long)]
        target: Vec<String>,
        /// Mask it in every read.
        #[arg(long)]
        sensitive: bool,
    },
    /// Remove an environment entry. Exits with status 1 when there was none.
    Rm {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The entry's key, as `osp env ls SCOPE` lists it.
        key: String,
    },
    /// A scope's environment entries.
    Ls {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// Only those applying there (no target, or a target naming it).
        #[arg(long)]
        target: Option<String>,
        /// Show the sensitive values you are allowed to see.
        #[arg(long)]
        reveal: bool,
    },
}

/// `osp embed`.
#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: EmbedCommand,
}

#[derive(Subcommand)]
enum EmbedCommand {
    /// Add or replace embeddings: one with --id and --vector, or many from --file (a JSON
    /// list of {id, content?, metadata?, vector}).
    Upsert {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The embedding's id.
        #[arg(long, required_unless_present = "file")]
        id: Option<String>,
        /// What was embedded.
        #[arg(long, default_value = "")]
        content: String,
        /// The vector, a JSON list of numbers.
        #[arg(long, required_unless_present = "file")]
        vector: Option<String>,
        /// Metadata, a JSON object, for filtering searches.
        #[arg(long)]
        metadata: Option<String>,
        /// A JSON list of embeddings (`-`: stdin), sent 1,000 at a time.
        #[arg(long, conflicts_with_all = ["id", "vector", "metadata"])]
        file: Option<String>,
    },
    /// The embeddings closest to a vector, or to a text (embedded by an agent of the `embed` capability).
    Search {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The query vector, a JSON list of numbers.
        #[arg(long, required_unless_present = "text", conflicts_with = "text")]
        vector: Option<String>,
        /// A text to search by.
        #[arg(long)]
        text: Option<String>,
        /// How many matches.
        #[arg(long, default_value_t = 5)]
        top_k: u32,
        /// Only embeddings whose metadata has these fields, a JSON object.
        #[arg(long)]
        filter: Option<String>,
    },
    /// One embedding.
    Get {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The embedding's id, as given at upsert.
        id: String,
    },
    /// Remove an embedding. Exits with status 1 when there was none.
    Rm {
        /// global, run:<id>, agent:<name>, session:<id> or user:<name>.
        scope: String,
        /// The embedding's id, as given at upsert.
        id: String,
    },
}

/// The context service as `common.actor`, or as the person at the keyboard.
async fn context(url: &str, common: &Common) -> anyhow::Result<osp_client::Context> {
    let client = connect::osp_client(url).await?;
    Ok(match &common.actor {
        Some(actor) => client.with_actor(actor.as_str()),
        None => client,
    }
    .context())
}

/// A value argument: JSON when it parses (`4`, `true`, `{"a":1}`), `@FILE` a JSON file,
/// else the text itself.
fn value_arg(arg: &str) -> anyhow::Result<Value> {
    if arg.starts_with('@') {
        return json_args::read("VALUE", arg);
    }
    Ok(serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.to_owned())))
}

/// Runs an `osp ctx` command.
pub async fn ctx(args: CtxArgs, url: &str) -> anyhow::Result<ExitCode> {
    let common = &args.common;
    match args.command {
        CtxCommand::Get { scope, key, at_seq, at } => {
            let context = context(url, common).await?;
            let entry = match (at_seq, at) {
                (None, None) => context.get(&scope, &key).await,
                (seq, time) => {
                    let time =
                        time.map(|text| parse_time("--at", &text, time::OffsetDateTime::now_utc())).transpose()?;
                    context.history(&scope, &key, seq, time).await
                }
            };
            let entry = entry.map_err(service_error)?.ok_or_else(|| anyhow!("no key {key:?} in {scope}"))?;
            print_entry(&entry, common.json)?;
        }
        CtxCommand::Set { scope, key, value } => {
            let value = value_arg(&value)?;
            let answer = context(url, common).await?.set(&scope, &key, value).await.map_err(service_error)?;
            print_set(&answer.result, common.json)?;
        }
        CtxCommand::Rm { scope, key } => {
            let existed = context(url, common).await?.remove(&scope, &key).await.map_err(service_error)?;
            return removed(existed, &format!("key {key:?} of {scope}"), common.json);
        }
        CtxCommand::Ls { scope, prefix } => {
            let keys = context(url, common).await?.list(&scope, &prefix).await.map_err(service_error)?;
            let mut lines = Lines::new(common.json, false);
            for key in keys {
                lines.line(&if common.json { json!({"scope": scope, "key": key}).to_string() } else { key })?;
            }
            lines.flush()?;
        }
        CtxCommand::System { agent } => {
            let system = context(url, common).await?.system(agent.as_deref()).await.map_err(service_error)?;
            let mut value = serde_json::to_value(&system)?;
            let text = match common.json {
                true => value.to_string(),
                false => {
                    crate::clock::for_people(&mut value);
                    serde_json::to_string_pretty(&value)?
                }
            };
            Lines::new(common.json, false).line(&text)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `osp settings` command.
pub async fn settings(args: SettingsArgs, url: &str) -> anyhow::Result<ExitCode> {
    let common = &args.common;
    let context = context(url, common).await?;
    match args.command {
        SettingsCommand::Get { key } => {
            let entry =
                context.setting(&key).await.map_err(service_error)?.ok_or_else(|| anyhow!("no setting {key:?}"))?;
            print_entry(&entry, common.json)?;
        }
        SettingsCommand::Set { key, value, description, read_only } => {
            let answer = context.set_setting(&key, value_arg(&value)?, description.as_deref(), read_only).await;
            print_set(&answer.map_err(service_error)?.result, common.json)?;
        }
        SettingsCommand::Rm { key } => {
            let existed = context.remove_setting(&key).await.map_err(service_error)?;
            return removed(existed, &format!("setting {key:?}"), common.json);
        }
        SettingsCommand::Ls => print_entries(&context.settings().await.map_err(service_error)?, common.json)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `osp prefs` command.
pub async fn prefs(args: PrefsArgs, url: &str) -> anyhow::Result<ExitCode> {
    let common = &args.common;
    let context = context(url, common).await?;
    match args.command {
        PrefsCommand::Get { key, agent, user } => {
            let found = context.preference(&key, agent.as_deref(), user.as_deref()).await.map_err(service_error)?;
            let resolved =
                found.ok_or_else(|| anyhow!("no preference {key:?} for that agent or user, and no setting"))?;
            if common.json {
                Lines::new(true, false).line(&serde_json::to_value(&resolved)?.to_string())?;
            } else {
                print_entry(&resolved.entry, false)?;
            }
        }
        PrefsCommand::Set { scope, key, value } => {
            let answer = context.set_preference(&scope, &key, value_arg(&value)?).await.map_err(service_error)?;
            print_set(&answer.result, common.json)?;
        }
        PrefsCommand::Rm { scope, key } => {
            let existed = context.remove_preference(&scope, &key).await.map_err(service_error)?;
            return removed(existed, &format!("preference {key:?} of {scope}"), common.json);
        }
        PrefsCommand::Ls { scope } => {
            print_entries(&context.preferences(&scope).await.map_err(service_error)?, common.json)?
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `osp env` command.
pub async fn env(args: EnvArgs, url: &str) -> anyhow::Result<ExitCode> {
    let common = &args.common;
    let context = context(url, common).await?;
    match args.command {
        EnvCommand::Get { scope, key, reveal } => {
            let entry = context.env(&scope, &key, reveal).await.map_err(service_error)?;
            print_entry(&entry.ok_or_else(|| anyhow!("no environment entry {key:?} in {scope}"))?, common.json)?;
        }
        EnvCommand::Set { scope, key, value, target, sensitive } => {
            let answer = context.set_env(&scope, &EnvEntry { key, value, target, sensitive }).await;
            print_set(&answer.map_err(service_error)?.result, common.json)?;
        }
        EnvCommand::Rm { scope, key } => {
            let existed = context.remove_env(&scope, &key).await.map_err(service_error)?;
            return removed(existed, &format!("environment entry {key:?} of {scope}"), common.json);
        }
        EnvCommand::Ls { scope, target, reveal } => {
            let entries = context.envs(&scope, target.as_deref(), reveal).await.map_err(service_error)?;
            print_entries(&entries, common.json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs an `osp embed` command.
pub async fn embed(args: EmbedArgs, url: &str) -> anyhow::Result<ExitCode> {
    let common = &args.common;
    match args.command {
        EmbedCommand::Upsert { scope, id, content, vector, metadata, file } => {
            let entries: Vec<Embedding> = match file {
                Some(file) => serde_json::from_value(json_args::read("--file", &file)?)
                    .map_err(|e| anyhow!("--file: not a list of {{id, content?, metadata?, vector}}: {e}"))?,
                None => {
                    let vector =
                        serde_json::from_value(json_args::read("--vector", vector.as_deref().unwrap_or_default())?)
                            .map_err(|e| anyhow!("--vector: not a list of numbers: {e}"))?;
                    let metadata = metadata.map(|arg| json_args::read("--metadata", &arg)).transpose()?;
                    vec![Embedding { id: id.unwrap_or_default(), content, metadata, vector }]
                }
            };
            let context = context(url, common).await?;
            let mut lines = Lines::new(common.json, true);
            let dimension = entries.first().map_or(1, |entry| entry.vector.len());
            for batch in entries.chunks(osp_protocol::context::upsert_batch(dimension)) {
                let outcome = context.upsert_embeddings(&scope, batch).await.map_err(service_error)?;
                let o = outcome.result;
                lines.line(&match common.json {
                    true => json!({"scope": scope, "upserted": o.upserted, "total": o.total, "dimension": o.dimension, "seq": outcome.seq}).to_string(),
                    false => format!("upserted {} into {scope} ({} of dimension {})", o.upserted, o.total, o.dimension),
                })?;
            }
        }
        EmbedCommand::Search { scope, vector, text, top_k, filter } => {
            let by = match (vector, text) {
                (Some(vector), _) => SearchBy::Vector(
                    serde_json::from_value(json_args::read("--vector", &vector)?)
                        .map_err(|e| anyhow!("--vector: not a list of numbers: {e}"))?,
                ),
                (None, Some(text)) => SearchBy::Text(text),
                (None, None) => bail!("give --vector or --text"),
            };
            let filter = filter.map(|arg| json_args::read("--filter", &arg)).transpose()?;
            let found = context(url, common).await?.search(&scope, by, top_k, filter).await.map_err(service_error)?;
            let mut lines = Lines::new(common.json, false);
            if common.json {
                for found in &found.matches {
                    lines.line(&serde_json::to_value(found)?.to_string())?;
                }
            } else {
                let rows =
                    found.matches.iter().map(|m| vec![format!("{:.4}", m.score), m.id.clone(), m.content.clone()]);
                lines.line(&table(&["SCORE", "ID", "CONTENT"], rows))?;
                let by = found.embedded_by.map(|run| format!(", the text embedded by run {run}")).unwrap_or_default();
                lines.line(&format!("{} compared{by}", found.compared))?;
            }
            lines.flush()?;
        }
        EmbedCommand::Get { scope, id } => {
            let found = context(url, common).await?.embedding(&scope, &id).await.map_err(service_error)?;
            let embedding = found.ok_or_else(|| anyhow!("no embedding {id:?} in {scope}"))?;
            let value = serde_json::to_value(&embedding)?;
            Lines::new(common.json, false).line(&if common.json {
                value.to_string()
            } else {
                serde_json::to_string_pretty(&value)?
            })?;
        }
        EmbedCommand::Rm { scope, id } => {
            let existed = context(url, common).await?.remove_embedding(&scope, &id).await.map_err(service_error)?;
            return removed(existed, &format!("embedding {id:?} of {scope}"), common.json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Says what a removal did; exit status 1 when there was nothing to remove.
fn removed(existed: bool, what: &str, json: bool) -> anyhow::Result<ExitCode> {
    if !existed {
        return Err(anyhow!("no {what}"));
    }
    let line = if json { json!({"removed": what}).to_string() } else { format!("removed {what}") };
    Lines::new(json, true).line(&line)?;
    Ok(ExitCode::SUCCESS)
}

/// An entry's value as one line of text: JSON, or a string as it is.
fn shown(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// What a set printed: the entry, its revision and the log sequence (for `--at-seq`).
fn print_set(entry: &EntryView, json: bool) -> std::io::Result<()> {
    let line = match json {
        true => serde_json::to_value(entry).map(|v| v.to_string()).unwrap_or_default(),
        false => format!("set {} of {} (revision {}, seq {})", entry.key, entry.scope, entry.revision, entry.seq),
    };
    Lines::new(json, true).line(&line)
}

/// One entry, whole (its value masked when sensitive and not revealed).
fn print_entry(entry: &EntryView, json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        lines.line(&serde_json::to_value(entry).map(|v| v.to_string()).unwrap_or_default())?;
        return lines.flush();
    }
    let masked = if entry.masked { "  (sensitive: masked; --reveal to show it)" } else { "" };
    lines.line(&format!("{}{masked}", shown(&entry.value)))?;
    lines
        .line(&format!("  scope {}  key {}  revision {}  seq {}", entry.scope, entry.key, entry.revision, entry.seq))?;
    lines.line(&format!("  set at {} by {}", crate::clock::time(entry.updated_at), entry.updated_by))?;
    if let Some(description) = &entry.description {
        lines.line(&format!("  {description}"))?;
    }
    if entry.read_only {
        lines.line("  read-only")?;
    }
    if !entry.target.is_empty() {
        lines.line(&format!("  target: {}", entry.target.join(", ")))?;
    }
    lines.flush()
}

/// Entries as a table (KEY, VALUE, ...), or one JSON object each.
fn print_entries(entries: &[EntryView], json: bool) -> std::io::Result<()> {
    let mut lines = Lines::new(json, false);
    if json {
        for entry in entries {
            lines.line(&serde_json::to_value(entry).map(|v| v.to_string()).unwrap_or_default())?;
        }
    } else {
        let rows = entries.iter().map(|entry| {
            let mut notes = Vec::new();
            if entry.read_only {
                notes.push("read-only".to_owned());
            }
            if entry.masked {
                notes.push("sensitive".to_owned());
            }
            if !entry.target.is_empty() {
                notes.push(format!("target {}", entry.target.join(",")));
            }
            vec![entry.key.clone(), crate::entries::truncate(&shown(&entry.value), 60), notes.join(" ")]
        });
        lines.line(&table(&["KEY", "VALUE", "NOTES"], rows))?;
    }
    lines.flush()
}
