//! Agent cards: what an entry of the `agents` registry must say about its agent.
//!
//! The card is the entry's resource, free-form except for the fields the runtime acts
//! on, which are checked when the agent registers:
//!
//! | field | type | rule |
//! |---|---|---|
//! | `capabilities` | array of strings | required; each a subject token (it names the work queue `osp.v1.work.<capability>`); at most 64 |
//! | `max_concurrency` | integer | optional, default 1; from 1 to 10,000 tasks at once |
//! | `version` | string | optional; at most 64 bytes |
//!
//! Anything else (an `endpoint`, a model name, a region) is kept as given and can be
//! matched by `find`.

use crate::registry::document::{get, kind_name, Document};
use crate::{Error, Token};

/// Most capabilities one agent may declare.
pub const MAX_CAPABILITIES: usize = 64;
/// Most tasks one agent may declare it runs at once.
pub const MAX_CONCURRENCY: u64 = 10_000;
/// Longest version string.
pub const MAX_VERSION_LEN: usize = 64;

/// The checked fields of an agent card.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentCard {
    /// What the agent can do; each names a work queue.
    pub capabilities: Vec<Token>,
    /// Tasks it runs at once.
    pub max_concurrency: u32,
    /// Its version, if it says.
    pub version: Option<String>,
}

impl AgentCard {
    /// Reads and checks the card in an `agents` entry's resource; errors name the field
    /// as `resource.<field>`.
    pub fn from_resource(resource: &Document) -> Result<AgentCard, Error> {
        let invalid = |field: &str, reason: String| Error::Invalid { field: format!("resource.{field}"), reason };
        let capabilities = match get(resource, "capabilities") {
            None => return Err(invalid("capabilities", "an agent card must list its capabilities".into())),
            Some(Document::Array(items)) => items,
            Some(other) => {
                return Err(invalid("capabilities", format!("must be an array of strings, found {}", kind_name(other))))
            }
        };
        if capabilities.len() > MAX_CAPABILITIES {
            return Err(invalid("capabilities", format!("{} listed, at most {MAX_CAPABILITIES}", capabilities.len())));
        }
        let capabilities = capabilities
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let field = format!("resource.capabilities[{i}]");
                match item.as_str() {
                    Some(text) => Token::new(&field, text),
                    None => {
                        Err(Error::Invalid { field, reason: format!("must be a string, found {}", kind_name(item)) })
                    }
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let max_concurrency = match get(resource, "max_concurrency") {
            None | Some(Document::Nil) => 1,
            Some(value) => match value.as_u64() {
                Some(n) if (1..=MAX_CONCURRENCY).contains(&n) => n as u32,
                _ => {
                    return Err(invalid(
                        "max_concurrency",
                        format!("must be an integer from 1 to {MAX_CONCURRENCY}, found {}", describe(value)),
                    ))
                }
            },
        };
        let version = match get(resource, "version") {
            None | Some(Document::Nil) => None,
            Some(Document::String(s)) => match s.as_str() {
                Some(text) if text.len() <= MAX_VERSION_LEN => Some(text.to_owned()),
                _ => return Err(invalid("version", format!("must be UTF-8 of at most {MAX_VERSION_LEN} bytes"))),
            },
            Some(other) => return Err(invalid("version", format!("must be a string, found {}", kind_name(other)))),
        };
        Ok(AgentCard { capabilities, max_concurrency, version })
    }
}

impl AgentCard {
    /// `resource` with the card's defaults written in (`max_concurrency: 1` when absent),
    /// so the stored card says what the runtime will act on and `find` can match it.
    pub fn with_defaults(mut resource: Document) -> Document {
        if let Document::Map(entries) = &mut resource {
            if !entries.iter().any(|(key, value)| key.as_str() == Some("max_concurrency") && !value.is_nil()) {
                entries.retain(|(key, _)| key.as_str() != Some("max_concurrency"));
                entries.push((Document::from("max_concurrency"), Document::from(1)));
            }
        }
        resource
    }
}

fn describe(value: &Document) -> String {
    match value {
        Document::Integer(n) => n.to_string(),
        other => kind_name(other).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::document::from_json;
    use serde_json::json;

    fn card(json: serde_json::Value) -> Result<AgentCard, String> {
        AgentCard::from_resource(&from_json(&json)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_card_with_defaults_and_extra_fields() {
        let c = card(json!({"capabilities": ["summarize", "translate"], "endpoint": {"region": "eu"}})).unwrap();
        assert_eq!(c.capabilities.iter().map(Token::as_str).collect::<Vec<_>>(), ["summarize", "translate"]);
        assert_eq!((c.max_concurrency, c.version), (1, None));
        let c = card(json!({"capabilities": [], "max_concurrency": 8, "version": "1.2.0"})).unwrap();
        assert_eq!((c.max_concurrency, c.version.as_deref()), (8, Some("1.2.0")));
    }

    #[test]
    fn defaults_are_written_into_the_stored_card() {
        let stored = AgentCard::with_defaults(from_json(&json!({"capabilities": ["a"], "max_concurrency": null})));
        assert_eq!(crate::json::from_msgpack_value(&stored), json!({"capabilities": ["a"], "max_concurrency": 1}));
        let given = from_json(&json!({"capabilities": ["a"], "max_concurrency": 8}));
        assert_eq!(AgentCard::with_defaults(given.clone()), given);
    }

    #[test]
    fn every_rule_names_its_field() {
        for (resource, expected) in [
            (json!({}), "invalid resource.capabilities: an agent card must list"),
            (
                json!({"capabilities": "x"}),
                "invalid resource.capabilities: must be an array of strings, found a string",
            ),
            (
                json!({"capabilities": ["ok", 3]}),
                "invalid resource.capabilities[1]: must be a string, found an integer",
            ),
            (json!({"capabilities": ["a.b"]}), "invalid resource.capabilities[0] \"a.b\": must not contain '.'"),
            (
                json!({"capabilities": ["*"]}),
                "invalid resource.capabilities[0] \"*\": must not contain the NATS wildcards",
            ),
            (
                json!({"capabilities": [], "max_concurrency": 0}),
                "invalid resource.max_concurrency: must be an integer from 1 to 10000, found 0",
            ),
            (json!({"capabilities": [], "max_concurrency": -2}), "found -2"),
            (json!({"capabilities": [], "max_concurrency": 1.5}), "found a float"),
            (json!({"capabilities": [], "version": 2}), "invalid resource.version: must be a string, found an integer"),
            (json!({"capabilities": [], "version": "v".repeat(65)}), "at most 64 bytes"),
            (json!({"capabilities": vec!["c"; 65]}), "65 listed, at most 64"),
        ] {
            let err = card(resource.clone()).unwrap_err();
            assert!(err.contains(expected), "{resource}: {err}");
        }
    }
}
