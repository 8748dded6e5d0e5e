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
//!
//! [`Command`] is also what a sender sends: it is written as the body [`Command::parse`]
//! reads, under the name its section says.

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use strum::IntoEnumIterator;

use crate::command::read_name;
use crate::context::{
    Embedding, EntryRemoved, EntrySet, Scope, Section, EMBEDDINGS_KIND, MAX_CONTENT_BYTES, MAX_DESCRIPTION_BYTES,
    MAX_DIMENSION, MAX_METADATA_BYTES, MAX_TARGETS, MAX_UPSERT_BATCH, MAX_VALUE_BYTES, SERVICE,
};
use crate::registry::document::{encoded_len, from_json};
use crate::{check_size, AggregateRef, Encoding, Error, InboxCommand, Token};

/// The context service's commands, by their token on the inbox subject.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::EnumIter,
    strum::VariantNames,
    strum::Display,
)]
#[strum(serialize_all = "snake_case")]
pub enum CommandName {
    /// Create or replace a key-value entry.
    Set,
    /// Remove a key-value entry.
    Remove,
    /// Create or replace a setting.
    SetSetting,
    /// Remove a setting.
    RemoveSetting,
    /// Create or replace a preference.
    SetPreference,
    /// Remove a preference.
    RemovePreference,
    /// Create or replace an environment entry.
    SetEnv,
    /// Remove an environment entry.
    RemoveEnv,
    /// Add or replace embeddings.
    UpsertEmbeddings,
    /// Remove an embedding.
    RemoveEmbedding,
}

/// The command tokens of the context's inbox subjects (`osp.v1.in.context.<command>`), as
/// [`CommandName`] names them.
pub const COMMANDS: &[&str] = <CommandName as strum::VariantNames>::VARIANTS;

impl CommandName {
    /// What it changes: the entries of a section (`None`: embeddings), and whether it
    /// removes one.
    fn target(self) -> (Option<Section>, bool) {
        match self {
            CommandName::Set => (Some(Section::Kv), false),
            CommandName::Remove => (Some(Section::Kv), true),
            CommandName::SetSetting => (Some(Section::Setting), false),
            CommandName::RemoveSetting => (Some(Section::Setting), true),
            CommandName::SetPreference => (Some(Section::Preference), false),
            CommandName::RemovePreference => (Some(Section::Preference), true),
            CommandName::SetEnv => (Some(Section::Env), false),
            CommandName::RemoveEnv => (Some(Section::Env), true),
            CommandName::UpsertEmbeddings => (None, false),
            CommandName::RemoveEmbedding => (None, true),
        }
    }

    /// The fields its body may have.
    fn fields(self) -> &'static [&'static str] {
        match self {
            CommandName::Set | CommandName::SetPreference => &["scope", "key", "value"],
            CommandName::SetSetting => &["key", "value", "description", "read_only"],
            CommandName::SetEnv => &["scope", "key", "value", "target", "sensitive"],
            CommandName::Remove | CommandName::RemovePreference | CommandName::RemoveEnv => &["scope", "key"],
            CommandName::RemoveSetting => &["key"],
            CommandName::UpsertEmbeddings => &["scope", "entries"],
            CommandName::RemoveEmbedding => &["scope", "id"],
        }
    }
}

/// A command to the context service, checked.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Create or replace an entry.
    Set {
        /// `global` for a setting, `agent:`/`user:` for a preference, any scope otherwise.
        scope: Scope,
        /// Its section, key and value, as `scope.entry_set` records it.
        entry: EntrySet,
    },
    /// Remove an entry.
    Remove {
        /// Where the entry lives (`global` for a setting).
        scope: Scope,
        /// Its section and key, as `scope.entry_removed` records it.
        entry: EntryRemoved,
    },
    /// Add or replace embeddings.
    Upsert {
        /// Whose embeddings they join (`osp.v1.evt.embeddings.<scope>`).
        scope: Scope,
        /// The embeddings.
        entries: Vec<Embedding>,
    },
    /// Remove an embedding.
    RemoveEmbedding {
        /// Whose embeddings hold it.
        scope: Scope,
        /// The id it was upserted under.
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
    /// Every vector's length in the scope, set by the first upsert while it is empty.
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
        let name: CommandName = read_name(SERVICE, command)?;
        let (section, removes) = name.target();
        let wire: Wire = encoding.decode(payload)?;
        wire.check_allowed(name)?;
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
        match (section, removes) {
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

impl Command {
    /// The name it goes by: the one of what it changes.
    fn command_name(&self) -> CommandName {
        let target = match self {
            Command::Set { entry, .. } => (Some(entry.section), false),
            Command::Remove { entry, .. } => (Some(entry.section), true),
            Command::Upsert { .. } => (None, false),
            Command::RemoveEmbedding { .. } => (None, true),
        };
        CommandName::iter().find(|name| name.target() == target).expect("every target has its command")
    }
}

impl InboxCommand for Command {
    const SERVICE: &'static str = SERVICE;

    fn name(&self) -> &'static str {
        self.command_name().into()
    }
}

impl Serialize for Command {
    /// The body of the command's name: its fields that hold more than their default (a
    /// setting's scope is always `global`, and not a field).
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut body = serializer.serialize_map(None)?;
        if self.command_name().fields().contains(&"scope") {
            body.serialize_entry("scope", self.scope())?;
        }
        match self {
            Command::Set { entry, .. } => {
                body.serialize_entry("key", &entry.key)?;
                body.serialize_entry("value", &entry.value)?;
                if let Some(description) = &entry.description {
                    body.serialize_entry("description", description)?;
                }
                if entry.read_only {
                    body.serialize_entry("read_only", &true)?;
                }
                if !entry.target.is_empty() {
                    body.serialize_entry("target", &entry.target)?;
                }
                if entry.sensitive {
                    body.serialize_entry("sensitive", &true)?;
                }
            }
            Command::Remove { entry, .. } => body.serialize_entry("key", &entry.key)?,
            Command::Upsert { entries, .. } => body.serialize_entry("entries", entries)?,
            Command::RemoveEmbedding { id, .. } => body.serialize_entry("id", id)?,
        }
        body.end()
    }
}

impl Wire {
    /// Refuses a field command `name` does not take.
    fn check_allowed(&self, name: CommandName) -> Result<(), Error> {
        let allowed = name.fields();
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
                Err(Error::Invalid { field: (*field).into(), reason: format!("not a field of {name}") })
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
    fn every_command_as_sent_reads_back_as_itself() {
        let sent = [
            ("set", r#"{"scope":"run:r-1","key":"k","value":{"a":1}}"#),
            ("remove", r#"{"scope":"run:r-1","key":"k"}"#),
            ("set_setting", r#"{"key":"max_tokens","value":4096,"description":"d","read_only":true}"#),
            ("remove_setting", r#"{"key":"max_tokens"}"#),
            ("set_preference", r#"{"scope":"user:ana","key":"tone","value":"dry"}"#),
            ("remove_preference", r#"{"scope":"user:ana","key":"tone"}"#),
            ("set_env", r#"{"scope":"global","key":"API","value":"v","target":["prod"],"sensitive":true}"#),
            ("remove_env", r#"{"scope":"global","key":"API"}"#),
            ("upsert_embeddings", r#"{"scope":"agent:a1","entries":[{"id":"d1","content":"hi","vector":[1,0]}]}"#),
            ("remove_embedding", r#"{"scope":"agent:a1","id":"d1"}"#),
        ];
        for (name, text) in sent {
            let command = json(name, text).unwrap();
            assert_eq!(command.name(), name);
            for encoding in [Encoding::MessagePack, Encoding::Json] {
                let bytes = encoding.encode(&command).unwrap();
                assert_eq!(Command::parse(name, encoding, &bytes).as_ref(), Ok(&command), "{name} in {encoding:?}");
            }
        }
        assert_eq!(sent.len(), CommandName::iter().count(), "every command is sent");
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
