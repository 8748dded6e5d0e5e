//! Scopes: where every entry and embedding lives, and what access rules are about.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::context::SCOPE_KIND;
use crate::{AggregateRef, Error, Token};

/// Where an entry lives. Its text form is the aggregate id of its subjects
/// (`osp.v1.evt.scope.run:r-1`), so the whole text is a subject token of at most 128 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Shared by everyone; the settings live here.
    Global,
    /// One run's (a workflow's steps share their root run's).
    Run(Token),
    /// One agent's own.
    Agent(Token),
    /// A session's (a conversation several runs belong to: a run names it in its
    /// metadata, `{"session": "<id>"}`).
    Session(Token),
    /// One user's (their preferences).
    User(Token),
}

/// What the scopes can be, for error messages.
const SCOPE_FORMS: &str = "global, run:<id>, agent:<name>, session:<id> or user:<name>";

impl Scope {
    /// Reads the scope `text`, given as `field`.
    pub fn parse(field: &str, text: &str) -> Result<Scope, Error> {
        let invalid = |reason: String| Error::Invalid { field: field.to_owned(), reason };
        if text == "global" {
            return Ok(Scope::Global);
        }
        let Some((kind, id)) = text.split_once(':') else {
            return Err(invalid(format!("{text:?} is not a scope: use {SCOPE_FORMS}")));
        };
        let make: fn(Token) -> Scope = match kind {
            "run" => Scope::Run,
            "agent" => Scope::Agent,
            "session" => Scope::Session,
            "user" => Scope::User,
            _ => return Err(invalid(format!("unknown scope kind {kind:?}: use {SCOPE_FORMS}"))),
        };
        if id.is_empty() {
            return Err(invalid(format!("{text:?} names no {kind}: use {SCOPE_FORMS}")));
        }
        // The whole text names the aggregate's subject: it must be a token too.
        Token::new(field, text)?;
        Ok(make(Token::new(field, id)?))
    }

    /// The scope of kind `kind` (`run`, `agent`, `session`, `user`) of `owner`, checked as
    /// [`Scope::parse`] checks a sent one: the whole text must be a token (so a run id or
    /// a name longer than 124 bytes or so has no scope). Code that builds a scope from a
    /// run id or a name builds it here, never with the variant itself, so that
    /// [`Scope::aggregate`] always has a valid subject.
    pub fn of(kind: &str, owner: &str) -> Result<Scope, Error> {
        Scope::parse("scope", &format!("{kind}:{owner}"))
    }

    /// The scope's kind: `global`, `run`, `agent`, `session` or `user`.
    pub fn kind(&self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Run(_) => "run",
            Scope::Agent(_) => "agent",
            Scope::Session(_) => "session",
            Scope::User(_) => "user",
        }
    }

    /// The run, agent, session or user it belongs to (none for `global`).
    pub fn owner(&self) -> Option<&Token> {
        match self {
            Scope::Global => None,
            Scope::Run(id) | Scope::Agent(id) | Scope::Session(id) | Scope::User(id) => Some(id),
        }
    }

    /// The aggregate of its entries (kind `scope`) or of its embeddings (`embeddings`).
    pub fn aggregate(&self, kind: &str) -> AggregateRef {
        AggregateRef::new(kind, &self.to_string()).expect("a parsed scope is a valid token")
    }

    /// The aggregate of its entries.
    pub fn entries(&self) -> AggregateRef {
        self.aggregate(SCOPE_KIND)
    }

    /// The scope an aggregate id names.
    pub fn of_aggregate(aggregate: &AggregateRef) -> Result<Scope, Error> {
        Scope::parse("scope", aggregate.id.as_str())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.owner() {
            None => f.write_str("global"),
            Some(owner) => write!(f, "{}:{owner}", self.kind()),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    /// Validated when decoded, like every token.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Scope::parse("scope", &text).map_err(serde::de::Error::custom)
    }
}

/// The kinds of entries a scope holds, each a namespace of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Section {
    /// Key-value entries (any scope).
    Kv,
    /// System-wide settings (the `global` scope only); an entry may be read-only.
    Setting,
    /// Preferences (the `agent:<name>` and `user:<name>` scopes; the system level is the
    /// settings).
    Preference,
    /// Environment entries `{key, value, target, sensitive}` (any scope).
    Env,
}

impl Section {
    /// Its name in words, for messages.
    pub fn noun(self) -> &'static str {
        match self {
            Section::Kv => "key",
            Section::Setting => "setting",
            Section::Preference => "preference",
            Section::Env => "environment entry",
        }
    }
}

/// The agent name of an actor that is an agent (`agent:<name>`), by the convention of
/// `Osp-Actor`; `None` for an operator (`user:ana`, `service:x`, `anonymous`, ...).
pub fn agent_of(actor: &str) -> Option<&str> {
    actor.strip_prefix("agent:").filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_and_print_as_their_text() {
        for text in ["global", "run:r-1", "agent:a1", "session:s:1", "user:ana", "run:parent:step"] {
            let scope = Scope::parse("scope", text).unwrap();
            assert_eq!(scope.to_string(), text);
            assert_eq!(scope.entries().subject(), format!("osp.v1.evt.scope.{text}"));
            assert_eq!(serde_json::from_value::<Scope>(serde_json::to_value(&scope).unwrap()).unwrap(), scope);
        }
        assert_eq!(Scope::parse("scope", "run:r-1").unwrap(), Scope::Run(Token::new("id", "r-1").unwrap()));
    }

    #[test]
    fn bad_scopes_say_why() {
        for (text, words) in [
            ("planet:x", "unknown scope kind"),
            ("run", "is not a scope"),
            ("run:", "\"run:\" names no run: use global, run:<id>"),
            ("run:a.b", "'.'"),
            ("agent:*", "wildcards"),
            ("session:a b", "whitespace"),
            ("Global", "is not a scope"),
        ] {
            let error = Scope::parse("scope", text).unwrap_err();
            assert!(error.to_string().contains(words), "{text}: {error}");
            assert_eq!(error.field(), Some("scope"), "{text}");
        }
        let long = format!("run:{}", "x".repeat(126));
        assert!(Scope::parse("scope", &long).unwrap_err().to_string().contains("longer than 128"));
    }

    #[test]
    fn agents_are_actors_named_agent() {
        assert_eq!(agent_of("agent:a1"), Some("a1"));
        assert_eq!(agent_of("user:ana"), None);
        assert_eq!(agent_of("agent:"), None);
    }
}
