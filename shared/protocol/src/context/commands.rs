//! Commands to the context service: `osp.v1.in.context.<command>`, in MessagePack or JSON.
//!
//! | command | payload |
//! |---|---|
//! | `set` | `{scope, key, value}` |
//! | `remove` | `{scope, key}` |
//! | `set_setting` | `{key, value, description?, read_only?}` (scope `global`) |
//! | `remove_setting` | `{key}` |
//! | `set_preference` | `{scope, key, value}` (scope `agent:<name>` or `user:<name>`) |
//! | `remove_preference` | `{scope, key}` |
//! | `set_env` | `{scope, key, value, target?, sensitive?}` (value a string) |
//! | `remove_env` | `{scope, key}` |
//! | `upsert_embeddings` | `{scope, entries: [{id, content?, metadata?, vector}]}` |
//! | `remove_embedding` | `{scope, id}` |
//!
//! Keys and embedding ids are subject tokens (no `.`, `*`, `>`, whitespace; at most 128
//! bytes), so no key can be mistaken for a pattern; values are any JSON value but `null`,
//! at most 64 KiB as MessagePack. Unknown fields are refused.

use serde::Deserialize;

use crate::context::{
    Embedding, EntryRemoved, EntrySet, Scope, Section, EMBEDDINGS_KIND, MAX_CONTENT_BYTES, MAX_DESCRIPTION_BYTES,
    MAX_DIMENSION, MAX_METADATA_BYTES, MAX_TARGETS, MAX_UPSERT_BATCH, MAX_VALUE_BYTES, SERVICE,
};
use crate::registry::document::{encoded_len, from_json};
use crate::{check_size, AggregateRef, Encoding, Error, Token};

/// The command tokens of the context service's inbox subjects.
pub const COMMANDS: &[&str] = &[
    "set",
    "remove",
    "set_setting",
    "remove_setting",
    "set_preference",
    "remove_preference",
    "set_env",
    "remove_env",
    "upsert_embeddings",
    "remove_embedding",
];

/// A command to the context service, checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Create or replace an entry.
    Set {
        /// Its scope.
        scope: Scope,
        /// The entry.
        entry: EntrySet,
    },
    /// Remove an entry.
    Remove {
        /// Its scope.
        scope: Scope,
        /// Which.
        entry: EntryRemoved,
    },
    /// Add or replace embeddings.
    Upsert {
        /// Their scope.
        scope: Scope,
        /// The embeddings.
        entries: Vec<Embedding>,
    },
    /// Remove an embedding.
    RemoveEmbedding {
        /// Its scope.
        scope: Scope,
        /// Its id.
        id: String,
    },
}

/// What `remove`, `remove_setting`, `remove_preference`, `remove_env` and
/// `remove_embedding` answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct RemoveOutcome {
    /// Whether it existed (and is no longer).
    pub existed: bool,
}

/// What `upsert_embeddings` answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct UpsertOutcome {
    /// Embeddings the command carried.
    pub upserted: u64,
    /// Embeddings the scope holds now.
    pub total: u64,
    /// Their dimension.
    pub dimension: u64,
}

/// Every field any command has; which are allowed depends on the command.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    value: Option<serde_json::Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, alias = "readOnly")]
    read_only: Option<bool>,
    #[serde(default)]
    target: Option<Vec<String>>,
    #[serde(default)]
    sensitive: Option<bool>,
    #[serde(default)]
    entries: Option<Vec<EmbeddingWire>>,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingWire {
    id: String,
    #[serde(default)]
    content: String,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    vector: Vec<f32>,
}

impl Command {
    /// The scope it addresses.
    pub fn scope(&self) -> &Scope {
        match self {
            Command::Set { scope, .. }
            | Command::Remove { scope, .. }
            | Command::Upsert { scope, .. }
            | Command::RemoveEmbedding { scope, .. } => scope,
        }
    }

    /// The aggregate it addresses: the scope's entries, or its embeddings.
    pub fn aggregate(&self) -> AggregateRef {
        match self {
            Command::Set { scope, .. } | Command::Remove { scope, .. } => scope.entries(),
            Command::Upsert { scope, .. } | Command::RemoveEmbedding { scope, .. } => scope.aggregate(EMBEDDINGS_KIND),
        }
    }

    /// Reads command `command` (the subject's last token), checking every rule; the error
    /// names the field at fault.
    pub fn parse(command: &str, encoding: Encoding, payload: &[u8]) -> Result<Command, Error> {
        let (section, allowed): (Option<Section>, &[&str]) = match command {
            "set" => (Some(Section::Kv), &["scope", "key", "value"]),
            "set_setting" => (Some(Section::Setting), &["key", "value", "description", "read_only"]),
            "set_preference" => (Some(Section::Preference), &["scope", "key", "value"]),
            "set_env" => (Some(Section::Env), &["scope", "key", "value", "target", "sensitive"]),
            "remove" => (Some(Section::Kv), &["scope", "key"]),
            "remove_setting" => (Some(Section::Setting), &["key"]),
            "remove_preference" => (Some(Section::Preference), &["scope", "key"]),
            "remove_env" => (Some(Section::Env), &["scope", "key"]),
            "upsert_embeddings" => (None, &["scope", "entries"]),
            "remove_embedding" => (None, &["scope", "id"]),
            _ => {
                return Err(Error::UnknownCommand {
                    service: SERVICE.into(),
                    command: command.to_owned(),
                    known: COMMANDS.iter().map(|c| (*c).to_owned()).collect(),
                })
            }
        };
        let wire: Wire = encoding.decode(payload)?;
        wire.check_allowed(command, allowed)?;
        let scope = match (section, &wire.scope) {
            (Some(Section::Setting), _) => Scope::Global,
            (_, Some(text)) => Scope::parse("scope", text)?,
            (_, None) => return Err(missing("scope")),
        };
        if section == Some(Section::Preference) && !matches!(scope, Scope::Agent(_) | Scope::User(_)) {
            return Err(Error::Invalid {
                field: "scope".into(),
                reason: format!(
                    "preferences belong to an agent (agent:<name>) or a user (user:<name>), not {scope}; \
                     system-level preferences are the settings"
                ),
            });
        }
        match (section, command.starts_with("remove")) {
            (Some(section), true) => {
                let key = key(wire.key)?;
                Ok(Command::Remove { scope, entry: EntryRemoved { section, key } })
            }
            (Some(section), false) => {
                let entry = entry(section, wire)?;
                Ok(Command::Set { scope, entry })
            }
            (None, true) => {
                let id = wire.id.ok_or_else(|| missing("id"))?;
                Ok(Command::RemoveEmbedding { scope, id: Token::new("id", id)?.as_str().to_owned() })
            }
            (None, false) => Ok(Command::Upsert { scope, entries: embeddings(wire.entries)? }),
        }
    }
}

impl Wire {
    /// Refuses a field the command does not take.
    fn check_allowed(&self, command: &str, allowed: &[&str]) -> Result<(), Error> {
        let given = [
            ("scope", self.scope.is_some()),
            ("key", self.key.is_some()),
            ("value", self.value.is_some()),
            ("description", self.description.is_some()),
            ("read_only", self.read_only.is_some()),
            ("target", self.target.is_some()),
            ("sensitive", self.sensitive.is_some()),
            ("entries", self.entries.is_some()),
            ("id", self.id.is_some()),
        ];
        match given.iter().find(|(field, given)| *given && !allowed.contains(field)) {
            Some((field, _)) => {
                Err(Error::Invalid { field: (*field).into(), reason: format!("not a field of {command}") })
            }
            None => Ok(()),
        }
    }
}

/// A key: a subject token.
fn key(key: Option<String>) -> Result<String, Error> {
    Ok(Token::new("key", key.ok_or_else(|| missing("key"))?)?.as_str().to_owned())
}

fn entry(section: Section, wire: Wire) -> Result<EntrySet, Error> {
    let key = key(wire.key)?;
    let value = wire.value.ok_or_else(|| missing("value"))?;
    check_size("value", encoded_len(&from_json(&value)), MAX_VALUE_BYTES)?;
    if section == Section::Env && !value.is_string() {
        return Err(Error::Invalid {
            field: "value".into(),
            reason: format!("an environment entry's value is a string, not {}", crate::json::kind_of(&value)),
        });
    }
    if let Some(description) = &wire.description {
        check_size("description", description.len(), MAX_DESCRIPTION_BYTES)?;
    }
    let target = wire.target.unwrap_or_default();
    if target.len() > MAX_TARGETS {
        return Err(Error::Invalid {
            field: "target".into(),
            reason: format!("at most {MAX_TARGETS} items, not {}", target.len()),
        });
    }
    for (i, item) in target.iter().enumerate() {
        Token::new(&format!("target[{i}]"), item.as_str())?;
    }
    Ok(EntrySet {
        section,
        key,
        value,
        description: wire.description,
        read_only: wire.read_only.unwrap_or(false),
        target,
        sensitive: wire.sensitive.unwrap_or(false),
        sealed: false,
    })
}

fn embeddings(entries: Option<Vec<EmbeddingWire>>) -> Result<Vec<Embedding>, Error> {
    let entries = entries.ok_or_else(|| missing("entries"))?;
    if entries.is_empty() || entries.len() > MAX_UPSERT_BATCH {
        return Err(Error::Invalid {
            field: "entries".into(),
            reason: format!("must hold 1 to {MAX_UPSERT_BATCH} embeddings, not {}", entries.len()),
        });
    }
    let dimension = entries[0].vector.len();
    let mut ids = std::collections::HashSet::new();
    entries
        .into_iter()
        .enumerate()
        .map(|(i, wire)| {
            let field = |name: &str| format!("entries[{i}].{name}");
            let id = Token::new(&field("id"), wire.id)?.as_str().to_owned();
            if !ids.insert(id.clone()) {
                return Err(Error::Invalid { field: field("id"), reason: format!("{id:?} is given twice") });
            }
            check_size(&field("content"), wire.content.len(), MAX_CONTENT_BYTES)?;
            if let Some(metadata) = &wire.metadata {
                if !metadata.is_object() {
                    return Err(Error::Invalid {
                        field: field("metadata"),
                        reason: format!("must be an object, not {}", crate::json::kind_of(metadata)),
                    });
                }
                check_size(&field("metadata"), encoded_len(&from_json(metadata)), MAX_METADATA_BYTES)?;
            }
            check_vector(&field("vector"), &wire.vector)?;
            if wire.vector.len() != dimension {
                return Err(Error::Invalid {
                    field: field("vector"),
                    reason: format!(
                        "has {} dimensions where entries[0] has {dimension}: one upsert, one dimension",
                        wire.vector.len()
                    ),
                });
            }
            Ok(Embedding { id, content: wire.content, metadata: wire.metadata, vector: wire.vector })
        })
        .collect()
}

/// A vector a search can compare: 1 to [`MAX_DIMENSION`] finite numbers, not all zero
/// (it is normalised, and a zero vector has no direction).
pub fn check_vector(field: &str, vector: &[f32]) -> Result<(), Error> {
    let invalid = |reason: String| Error::Invalid { field: field.to_owned(), reason };
    if vector.is_empty() || vector.len() > MAX_DIMENSION {
        return Err(invalid(format!("must have 1 to {MAX_DIMENSION} dimensions, not {}", vector.len())));
    }
    if let Some(at) = vector.iter().position(|x| !x.is_finite()) {
        return Err(invalid(format!("item {at} is not a finite number")));
    }
    if vector.iter().all(|x| *x == 0.0) {
        return Err(invalid("is all zeros: it has no direction to compare".into()));
    }
    Ok(())
}

fn missing(field: &str) -> Error {
    Error::Invalid { field: field.into(), reason: "is required".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(command: &str, text: &str) -> Result<Command, Error> {
        Command::parse(command, Encoding::Json, text.as_bytes())
    }

    #[test]
    fn each_command_reads_and_names_its_aggregate() {
        let set = json("set", r#"{"scope":"run:r-1","key":"notes/1","value":{"a":1}}"#).unwrap();
        assert_eq!(set.aggregate().subject(), "osp.v1.evt.scope.run:r-1");
        let setting = json("set_setting", r#"{"key":"max_tokens","value":4096,"readOnly":true}"#).unwrap();
        let Command::Set { scope: Scope::Global, entry } = setting else { panic!("{setting:?}") };
        assert!(entry.read_only && entry.section == Section::Setting);
        let env = json("set_env", r#"{"scope":"global","key":"API_KEY","value":"s3cr3t","sensitive":true,"target":["production","agent:a1"]}"#).unwrap();
        let Command::Set { entry, .. } = env else { panic!() };
        assert!(entry.sensitive && entry.target.len() == 2);
        let upsert =
            json("upsert_embeddings", r#"{"scope":"agent:a1","entries":[{"id":"d1","content":"hi","vector":[1,0]}]}"#)
                .unwrap();
        assert_eq!(upsert.aggregate().subject(), "osp.v1.evt.embeddings.agent:a1");
        let removed = json("remove_preference", r#"{"scope":"user:ana","key":"tone"}"#).unwrap();
        assert!(matches!(removed, Command::Remove { entry: EntryRemoved { section: Section::Preference, .. }, .. }));
    }

    #[test]
    fn bad_commands_name_the_field() {
        for (command, text, field) in [
            ("set", r#"{"scope":"run:r","key":"a.b","value":1}"#, "key"),
            ("set", r#"{"scope":"run:r","key":"*","value":1}"#, "key"),
            ("set", r#"{"scope":"run:r","key":">","value":1}"#, "key"),
            ("set", r#"{"scope":"planet:x","key":"k","value":1}"#, "scope"),
            ("set", r#"{"scope":"run:r","key":"k"}"#, "value"),
            ("set", r#"{"scope":"run:r","key":"k","value":1,"sensitive":true}"#, "sensitive"),
            ("set_env", r#"{"scope":"global","key":"k","value":3}"#, "value"),
            ("set_env", r#"{"scope":"global","key":"k","value":"v","target":["a b"]}"#, "target[0]"),
            ("set_preference", r#"{"scope":"run:r","key":"k","value":1}"#, "scope"),
            ("remove_embedding", r#"{"scope":"global","id":"a.b"}"#, "id"),
            ("upsert_embeddings", r#"{"scope":"global","entries":[]}"#, "entries"),
            ("upsert_embeddings", r#"{"scope":"global","entries":[{"id":"x","vector":[]}]}"#, "entries[0].vector"),
            ("upsert_embeddings", r#"{"scope":"global","entries":[{"id":"x","vector":[0,0]}]}"#, "entries[0].vector"),
            (
                "upsert_embeddings",
                r#"{"scope":"global","entries":[{"id":"x","vector":[1,0]},{"id":"y","vector":[1]}]}"#,
                "entries[1].vector",
            ),
            (
                "upsert_embeddings",
                r#"{"scope":"global","entries":[{"id":"x","vector":[1]},{"id":"x","vector":[1]}]}"#,
                "entries[1].id",
            ),
            (
                "upsert_embeddings",
                r#"{"scope":"global","entries":[{"id":"x","vector":[1],"metadata":3}]}"#,
                "entries[0].metadata",
            ),
        ] {
            let error = json(command, text).unwrap_err();
            assert_eq!(error.field(), Some(field), "{command} {text}: {error}");
        }
        let big = format!(r#"{{"scope":"global","key":"k","value":"{}"}}"#, "x".repeat(MAX_VALUE_BYTES));
        assert_eq!(json("set", &big).unwrap_err().code(), "too_large");
        let error = json("set", r#"{"scope":"global","key":"k","value":1,"colour":2}"#).unwrap_err();
        assert!(error.to_string().contains("colour"), "{error}");
        assert!(json("explode", "{}").unwrap_err().to_string().contains("upsert_embeddings"));
        let error = json("upsert_embeddings", r#"{"scope":"global","entries":[{"id":"x","vector":["a"]}]}"#);
        assert_eq!(error.unwrap_err().code(), "malformed");
    }
}
