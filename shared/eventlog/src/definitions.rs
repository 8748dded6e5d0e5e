//! Stream and consumer definitions kept as files in `streams/`, applied at start-up.
//!
//! The files are in the NATS JSON API's own format (what `nats stream info --json`
//! prints and `nats stream add --config FILE` reads), so an operator can inspect or
//! apply them with the standard tools. A consumer file is the body of the API's
//! consumer-create request: `{"stream_name": "...", "config": {...}}`.
//!
//! Applying is idempotent: every instance of every service applies the same
//! definitions at start-up and the result is the same. The built-in copies are compiled
//! into the binaries so a deployment does not depend on a working directory.

use std::path::Path;

use async_nats::jetstream::{self, consumer, stream};
use serde::Deserialize;

use crate::{Error, Result};

/// Name of the event-log stream.
pub const EVENTS_STREAM: &str = "OSP_EVENTS";
/// Name of the command inbox stream.
pub const INBOX_STREAM: &str = "OSP_INBOX";
/// Name of the agents' work-queue stream.
pub const WORK_STREAM: &str = "OSP_WORK";
/// Name of the durable-timer stream.
pub const TIMERS_STREAM: &str = "OSP_TIMERS";

/// The definitions shipped in `streams/`, as compiled in.
const BUILTIN_STREAMS: &[(&str, &str)] = &[
    ("streams/events.json", include_str!("../../../streams/events.json")),
    ("streams/inbox.json", include_str!("../../../streams/inbox.json")),
    ("streams/work.json", include_str!("../../../streams/work.json")),
    ("streams/timers.json", include_str!("../../../streams/timers.json")),
];

/// A durable consumer definition: the stream it reads and its configuration.
#[derive(Clone, Debug, Deserialize)]
pub struct ConsumerDefinition {
    /// The stream the consumer reads.
    pub stream_name: String,
    /// The consumer's configuration (must name a `durable_name`).
    pub config: consumer::Config,
}

/// A set of stream and consumer definitions.
#[derive(Clone, Debug, Default)]
pub struct Definitions {
    /// Streams, with the file each came from.
    pub streams: Vec<(String, stream::Config)>,
    /// Consumers, with the file each came from.
    pub consumers: Vec<(String, ConsumerDefinition)>,
}

impl Definitions {
    /// The definitions in the project's `streams/` folder, as compiled into this binary.
    pub fn builtin() -> Definitions {
        let mut definitions = Definitions::default();
        for (file, text) in BUILTIN_STREAMS {
            let config = parse_stream(file, text).expect("built-in stream definitions are tested");
            definitions.streams.push(((*file).to_owned(), config));
        }
        definitions
    }

    /// Reads `dir/*.json` as streams and `dir/consumers/*.json` as consumers, in file-name
    /// order, so a deployment can ship its own limits (replicas, max age) without a rebuild.
    pub fn from_dir(dir: &Path) -> Result<Definitions> {
        let mut definitions = Definitions::default();
        for (file, text) in json_files(dir)? {
            definitions.streams.push((file.clone(), parse_stream(&file, &text)?));
        }
        let consumers = dir.join("consumers");
        if consumers.is_dir() {
            for (file, text) in json_files(&consumers)? {
                let definition = parse_consumer(&file, &text)?;
                definitions.consumers.push((file, definition));
            }
        }
        Ok(definitions)
    }

    /// The same definitions with every stream kept on `replicas` servers: what a cluster
    /// deployment sets (3 for the compose cluster) without copies of the files.
    pub fn with_replicas(mut self, replicas: usize) -> Definitions {
        for (_, config) in &mut self.streams {
            config.num_replicas = replicas;
        }
        self
    }

    /// What a service binary applies: the files in `dir` if given (a deployment's own
    /// limits), else the built-in ones; with every stream on `replicas` servers if given.
    pub fn for_deployment(dir: Option<&Path>, replicas: Option<usize>) -> Result<Definitions> {
        let definitions = match dir {
            Some(dir) => Definitions::from_dir(dir)?,
            None => Definitions::builtin(),
        };
        Ok(match replicas {
            Some(replicas) => definitions.with_replicas(replicas),
            None => definitions,
        })
    }

    /// Creates or updates every stream, then every consumer.
    pub async fn apply(&self, js: &jetstream::Context) -> Result<()> {
        for (file, config) in &self.streams {
            js.create_or_update_stream(config.clone())
                .await
                .map_err(|e| definition_error(file, format!("cannot create or update stream {}: {e}", config.name)))?;
            tracing::debug!(stream = %config.name, %file, "stream applied");
        }
        for (file, definition) in &self.consumers {
            let stream = js
                .get_stream(&definition.stream_name)
                .await
                .map_err(|e| definition_error(file, format!("stream {}: {e}", definition.stream_name)))?;
            stream
                .create_consumer(definition.config.clone())
                .await
                .map_err(|e| definition_error(file, format!("cannot create or update consumer: {e}")))?;
            tracing::debug!(stream = %definition.stream_name, %file, "consumer applied");
        }
        Ok(())
    }
}

fn definition_error(file: &str, reason: String) -> Error {
    Error::Definition { file: file.to_owned(), reason }
}

fn parse_stream(file: &str, text: &str) -> Result<stream::Config> {
    let config: stream::Config =
        serde_json::from_str(text).map_err(|e| definition_error(file, format!("not a stream config: {e}")))?;
    if config.name.is_empty() {
        return Err(definition_error(file, "the stream has no name".into()));
    }
    if config.name == EVENTS_STREAM {
        guard_event_log(file, &config)?;
    }
    Ok(config)
}

/// The event log may have size limits (a full log then refuses writes), but nothing in
/// its definition may ever remove history: no delete, purge, rollup or expiry, and
/// discard-new so a limit that is reached rejects new events instead of dropping old ones.
fn guard_event_log(file: &str, config: &stream::Config) -> Result<()> {
    let refuse = |why: &str| Err(definition_error(file, format!("the event log is append-only: {why}")));
    if !(config.deny_delete && config.deny_purge) || config.allow_rollup {
        return refuse("it must deny delete and purge and allow no rollup");
    }
    if !config.max_age.is_zero() {
        return refuse("max_age would expire history; it must be 0");
    }
    if config.discard != stream::DiscardPolicy::New {
        return refuse("discard must be \"new\" so a reached limit refuses writes instead of dropping events");
    }
    Ok(())
}

fn parse_consumer(file: &str, text: &str) -> Result<ConsumerDefinition> {
    let definition: ConsumerDefinition =
        serde_json::from_str(text).map_err(|e| definition_error(file, format!("not a consumer definition: {e}")))?;
    if definition.config.durable_name.as_deref().unwrap_or("").is_empty() {
        return Err(definition_error(file, "a shared consumer needs a durable_name".into()));
    }
    Ok(definition)
}

fn json_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let read_error = |e: std::io::Error| definition_error(&dir.display().to_string(), e.to_string());
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).map_err(read_error)?;
            Ok((path.display().to_string(), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::RetentionPolicy;

    #[test]
    fn builtin_definitions_parse_and_guard_the_log() {
        let definitions = Definitions::builtin();
        let names: Vec<&str> = definitions.streams.iter().map(|(_, c)| c.name.as_str()).collect();
        assert_eq!(names, [EVENTS_STREAM, INBOX_STREAM, WORK_STREAM, TIMERS_STREAM]);
        let events = &definitions.streams[0].1;
        assert!(events.deny_delete && events.deny_purge && !events.allow_rollup);
        assert!(events.allow_direct && events.allow_atomic_publish);
        assert_eq!(events.retention, RetentionPolicy::Limits);
        assert_eq!(events.duplicate_window, std::time::Duration::from_secs(120));
        assert!(definitions.streams[3].1.allow_message_schedules);
    }

    #[test]
    fn an_event_log_definition_that_could_lose_history_is_refused() {
        let original = include_str!("../../../streams/events.json");
        for (from, to, why) in [
            ("\"deny_purge\": true", "\"deny_purge\": false", "deny delete and purge"),
            ("\"deny_delete\": true", "\"deny_delete\": false", "deny delete and purge"),
            ("\"allow_rollup_hdrs\": false", "\"allow_rollup_hdrs\": true", "no rollup"),
            ("\"max_age\": 0", "\"max_age\": 121000000000", "max_age"),
            ("\"discard\": \"new\"", "\"discard\": \"old\"", "discard must be"),
        ] {
            assert!(original.contains(from), "{from}");
            let err = parse_stream("events.json", &original.replace(from, to)).unwrap_err().to_string();
            assert!(err.contains("append-only") && err.contains(why), "{err}");
        }
    }

    #[test]
    fn replicas_are_set_on_every_stream() {
        let definitions = Definitions::builtin().with_replicas(3);
        assert!(definitions.streams.iter().all(|(_, config)| config.num_replicas == 3));
        assert!(definitions.streams[0].1.deny_delete, "nothing else changes");
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let err = parse_stream("x.json", "{\"name\": 3}").unwrap_err().to_string();
        assert!(err.starts_with("definition x.json: not a stream config"), "{err}");
        let no_durable = r#"{"stream_name":"S","config":{"deliver_policy":"all","ack_policy":"explicit","replay_policy":"instant"}}"#;
        let err = parse_consumer("c.json", no_durable).unwrap_err().to_string();
        assert!(err.contains("durable_name"), "{err}");
    }
}
