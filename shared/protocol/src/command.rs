//! What the commands of every service share: a command goes by a name, the last token of
//! its inbox subject `osp.v1.in.<service>.<name>`, which says how its body reads.
//!
//! Each service's commands are one type, its `Command`: its `parse` reads a body given
//! the name, checking every rule; its `Serialize` writes the body that `parse` reads
//! back; [`InboxCommand`] gives its service and its name, so a sender (the client crate,
//! a service submitting runs) spells out neither. The names are an enum per service
//! whose strings are derived, read here by [`read_name`]: the list a refusal gives, the
//! cases the parser handles and the subjects senders use cannot drift apart.

use std::str::FromStr;

use serde::Serialize;
use strum::IntoEnumIterator;

use crate::Error;

/// A command, as its sender sends it.
pub trait InboxCommand: Serialize {
    /// The service whose inbox takes it.
    const SERVICE: &'static str;

    /// The last token of its inbox subject.
    fn name(&self) -> &'static str;
}

/// Reads the last token of an inbox subject as one of `service`'s command names `N`; a
/// token that names none is refused with the names the service knows, in their order.
pub fn read_name<N>(service: &str, token: &str) -> Result<N, Error>
where
    N: FromStr + IntoEnumIterator + Into<&'static str>,
{
    token.parse().map_err(|_| Error::UnknownCommand {
        service: service.to_owned(),
        command: token.to_owned(),
        known: N::iter().map(|name| name.into().to_owned()).collect(),
    })
}
