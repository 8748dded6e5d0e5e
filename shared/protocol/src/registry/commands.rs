//! Commands to the registry: `osp.v1.in.registry.<command>`, in MessagePack or JSON.
//!
//! | command | payload | result |
//! |---|---|---|
//! | `register` | `{registry, name, description?, resource, metadata?}` | `{registry, name, revision, created}` |
//! | `unregister` | `{registry, name, reason?}` | `{existed: true}`; an unknown name is refused with `not_found` |
//!
//! Unknown fields are refused (a misspelt `descripton` would otherwise be lost without
//! a word). Sizes are measured on the MessagePack encoding, whatever the command
//! arrived in. [`Command`] is also what a sender sends: it is written as the body
//! [`Command::parse`] reads.

use serde::{Deserialize, Serialize};

use crate::command::read_name;
use crate::registry::card::AgentCard;
use crate::registry::document::{encoded_len, kind_name, Document};
use crate::registry::{EntryDoc, EntryKey, EntryName, RegistryName, SERVICE};
use crate::{check_size, Encoding, Error, InboxCommand};

/// Largest resource, encoded.
pub const MAX_RESOURCE_BYTES: usize = 64 * 1024;
/// Largest metadata document, encoded.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Longest description.
pub const MAX_DESCRIPTION_BYTES: usize = 4 * 1024;
/// Longest unregister reason.
pub const MAX_REASON_BYTES: usize = 1024;

/// A command to the registry.
#[derive(Clone, Debug, PartialEq, Serialize, strum::EnumDiscriminants)]
#[serde(untagged)]
#[strum_discriminants(
    name(CommandName),
    doc = "The registry's commands, by their token on the inbox subject.",
    derive(strum::EnumString, strum::IntoStaticStr, strum::EnumIter, strum::VariantNames, strum::Display),
    strum(serialize_all = "snake_case")
)]
pub enum Command {
    /// Add an entry, or replace it with a new version.
    Register(EntryDoc),
    /// Remove an entry.
    Unregister(Unregister),
}

/// The command tokens of the registry's inbox subjects (`osp.v1.in.registry.<command>`), as
/// [`CommandName`] names them.
pub const COMMANDS: &[&str] = <CommandName as strum::VariantNames>::VARIANTS;

/// Remove an entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Unregister {
    /// `agents`, `skills`, `tools`, `mcp-servers` or any other registry name.
    pub registry: RegistryName,
    /// The entry to remove; an unknown one is refused `not_found` (field `name`).
    pub name: EntryName,
    /// Why, kept in the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterWire {
    registry: String,
    name: String,
    #[serde(default)]
    description: String,
    resource: Document,
    #[serde(default)]
    metadata: Option<Document>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnregisterWire {
    registry: String,
    name: String,
    #[serde(default)]
    reason: Option<String>,
}

impl Command {
    /// Reads the command named by the subject's last token from its payload, checking
    /// every rule; the error names the field at fault.
    pub fn parse(command: &str, encoding: Encoding, payload: &[u8]) -> Result<Command, Error> {
        match read_name(SERVICE, command)? {
            CommandName::Register => {
                let wire: RegisterWire = encoding.decode(payload)?;
                EntryDoc::new(&wire.registry, &wire.name, wire.description, wire.resource, wire.metadata)
                    .map(Command::Register)
            }
            CommandName::Unregister => {
                let wire: UnregisterWire = encoding.decode(payload)?;
                Unregister::new(&wire.registry, &wire.name, wire.reason).map(Command::Unregister)
            }
        }
    }

    /// The entry it addresses.
    pub fn key(&self) -> EntryKey {
        match self {
            Command::Register(doc) => doc.key(),
            Command::Unregister(u) => EntryKey { registry: u.registry.clone(), name: u.name.clone() },
        }
    }
}

impl InboxCommand for Command {
    const SERVICE: &'static str = SERVICE;

    fn name(&self) -> &'static str {
        CommandName::from(self).into()
    }
}

impl EntryDoc {
    /// A checked entry: names valid, sizes within limits, resource and metadata maps, and
    /// for the `agents` registry a valid agent card, with its defaults written in.
    pub fn new(
        registry: &str,
        name: &str,
        description: String,
        resource: Document,
        metadata: Option<Document>,
    ) -> Result<EntryDoc, Error> {
        let key = EntryKey::new(registry, name)?;
        check_size("description", description.len(), MAX_DESCRIPTION_BYTES)?;
        require_map("resource", &resource)?;
        check_size("resource", encoded_len(&resource), MAX_RESOURCE_BYTES)?;
        let metadata = match metadata {
            None | Some(Document::Nil) => None,
            Some(metadata) => {
                require_map("metadata", &metadata)?;
                check_size("metadata", encoded_len(&metadata), MAX_METADATA_BYTES)?;
                Some(metadata)
            }
        };
        let resource = match key.registry.is_agents() {
            true => {
                AgentCard::from_resource(&resource)?;
                AgentCard::with_defaults(resource)
            }
            false => resource,
        };
        Ok(EntryDoc { registry: key.registry, name: key.name, description, resource, metadata })
    }
}

impl Unregister {
    /// A checked unregister command.
    pub fn new(registry: &str, name: &str, reason: Option<String>) -> Result<Unregister, Error> {
        let key = EntryKey::new(registry, name)?;
        if let Some(reason) = &reason {
            check_size("reason", reason.len(), MAX_REASON_BYTES)?;
        }
        Ok(Unregister { registry: key.registry, name: key.name, reason })
    }
}

fn require_map(field: &str, document: &Document) -> Result<(), Error> {
    match document {
        Document::Map(_) => Ok(()),
        other => {
            Err(Error::Invalid { field: field.into(), reason: format!("must be a map, found {}", kind_name(other)) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(command: &str, body: serde_json::Value) -> Result<Command, String> {
        Command::parse(command, Encoding::Json, body.to_string().as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_register_reads_the_same_in_both_encodings() {
        let body = json!({"registry": "agents", "name": "a1", "description": "d",
                          "resource": {"capabilities": ["summarize"]}, "metadata": {"team": "x"}});
        let from_json = parse_json("register", body.clone()).unwrap();
        let msgpack = Encoding::MessagePack.encode(&body).unwrap();
        assert_eq!(Command::parse("register", Encoding::MessagePack, &msgpack).unwrap(), from_json);
        // What the client sends is what the service reads.
        let again = Encoding::MessagePack.encode(&from_json).unwrap();
        assert_eq!(Command::parse(from_json.name(), Encoding::MessagePack, &again).unwrap(), from_json);
        assert_eq!(from_json.key().to_string(), "agents/a1");
        let unregister = Command::Unregister(Unregister::new("agents", "a1", Some("retired".into())).unwrap());
        let sent = Encoding::MessagePack.encode(&unregister).unwrap();
        assert_eq!(Command::parse(unregister.name(), Encoding::MessagePack, &sent).unwrap(), unregister);
    }

    #[test]
    fn bad_commands_name_the_field_and_the_reason() {
        let big = "x".repeat(MAX_RESOURCE_BYTES);
        for (command, body, expected) in [
            (
                "register",
                json!({"registry": "tools", "name": "a.b", "resource": {}}),
                "invalid name \"a.b\": must not contain '.'",
            ),
            (
                "register",
                json!({"registry": "tools", "name": "a b", "resource": {}}),
                "invalid name \"a b\": must not contain whitespace",
            ),
            ("register", json!({"registry": "tools", "name": "*", "resource": {}}), "invalid name \"*\""),
            ("register", json!({"registry": "tools", "name": ">", "resource": {}}), "invalid name \">\""),
            ("register", json!({"registry": "To.ols", "name": "n", "resource": {}}), "invalid registry"),
            ("register", json!({"registry": "tools", "resource": {}}), "missing field `name`"),
            ("register", json!({"registry": "tools", "name": 7, "resource": {}}), "at name: invalid type: integer `7`"),
            (
                "register",
                json!({"registry": "tools", "name": "n", "resource": []}),
                "invalid resource: must be a map, found an array",
            ),
            (
                "register",
                json!({"registry": "tools", "name": "n", "resource": {"b": big}}),
                "resource is 65544 bytes, over the limit of 65536",
            ),
            (
                "register",
                json!({"registry": "tools", "name": "n", "resource": {}, "metadata": 3}),
                "invalid metadata: must be a map",
            ),
            (
                "register",
                json!({"registry": "tools", "name": "n", "resource": {}, "descripton": "typo"}),
                "unknown field `descripton`",
            ),
            ("register", json!({"registry": "agents", "name": "n", "resource": {}}), "invalid resource.capabilities"),
            ("unregister", json!({"registry": "tools"}), "missing field `name`"),
            (
                "explode",
                json!({}),
                "unknown command \"explode\" for the registry service: use one of register, unregister",
            ),
        ] {
            let err = parse_json(command, body).unwrap_err();
            assert!(err.contains(expected), "expected {expected:?} in {err:.300}");
        }
        let garbage = Command::parse("register", Encoding::MessagePack, b"\xc1\xff").unwrap_err();
        assert!(matches!(garbage, Error::Malformed { .. }), "{garbage}");
    }
}
