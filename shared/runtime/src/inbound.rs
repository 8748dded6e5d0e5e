//! A command as it arrived in a service's inbox: its bytes and what its headers say.

use bytes::Bytes;
use osp_protocol::{headers, subject, Encoding, Error, Timestamp, Token};

use osp_eventlog::Delivery;

/// Longest accepted command id and actor (`Osp-Actor`).
pub const MAX_HEADER_VALUE: usize = 128;

/// An inbox message, read.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The subject it was sent to.
    pub subject: String,
    /// The command token after `osp.v1.in.<service>.` (may be anything; the service
    /// checks it).
    pub command: String,
    /// Its id: `Osp-Command-Id`, else `Nats-Msg-Id`, else derived from its place in the
    /// inbox (`inbox:<seq>@<millis>`), the same on every redelivery.
    pub id: String,
    /// The header the id came from, for error messages.
    id_header: &'static str,
    /// When the inbox stored it.
    pub received_at: Timestamp,
    /// `Osp-Actor`, or `anonymous`.
    pub actor: String,
    /// `Osp-Reply-To`, if given.
    pub reply_to: Option<String>,
    /// `Content-Type`, if given.
    pub content_type: Option<String>,
    /// `traceparent`, if given.
    pub traceparent: Option<String>,
    /// The command's body, still encoded as `content_type` says (MessagePack when absent).
    pub payload: Bytes,
    /// Its size in bytes.
    pub size: usize,
    /// Which delivery this is, from 1.
    pub attempt: i64,
    /// True when it will not be delivered again.
    pub last_attempt: bool,
}

impl Inbound {
    /// Reads the headers of `delivery`, addressed to `service`.
    pub fn read(service: &Token, delivery: &Delivery) -> Inbound {
        let header = |name: &str| delivery.header(name).map(str::to_owned);
        let received_at = delivery.stored_at();
        let (id, id_header) = match (header(headers::COMMAND_ID), header(headers::MSG_ID)) {
            (Some(id), _) => (id, headers::COMMAND_ID),
            (None, Some(id)) => (id, headers::MSG_ID),
            (None, None) => {
                (format!("inbox:{}@{}", delivery.stream_sequence(), received_at.millis()), headers::COMMAND_ID)
            }
        };
        Inbound {
            subject: delivery.subject().to_owned(),
            command: subject::inbox_command(service, delivery.subject()).unwrap_or_default().to_owned(),
            id,
            id_header,
            received_at,
            actor: header(headers::ACTOR).unwrap_or_else(|| headers::ANONYMOUS.to_owned()),
            reply_to: header(headers::REPLY_TO),
            content_type: header(osp_protocol::CONTENT_TYPE),
            traceparent: header(headers::TRACEPARENT),
            payload: delivery.payload_bytes(),
            size: delivery.payload().len(),
            attempt: delivery.attempt(),
            last_attempt: delivery.is_last_attempt(),
        }
    }

    /// A query `query` to `subject`, read as a command is, so that its headers are checked
    /// the same way and a refusal can be recorded like a command's. Its id is
    /// `Osp-Command-Id` when given, else a new UUID v7.
    pub fn query(subject: &str, query: &str, headers: Option<&async_nats::HeaderMap>, payload: Bytes) -> Inbound {
        let header = |name: &str| header(headers, name);
        Inbound {
            subject: subject.to_owned(),
            command: query.to_owned(),
            id: header(headers::COMMAND_ID).unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
            id_header: headers::COMMAND_ID,
            received_at: Timestamp::now(),
            actor: header(headers::ACTOR).unwrap_or_else(|| headers::ANONYMOUS.to_owned()),
            reply_to: None,
            content_type: header(osp_protocol::CONTENT_TYPE),
            traceparent: header(headers::TRACEPARENT),
            size: payload.len(),
            payload,
            attempt: 1,
            last_attempt: true,
        }
    }

    /// The headers that hand it, as read, to the instance owning its aggregate's
    /// partition ([`Inbound::handed`] reads them back); its body is the payload.
    pub fn handing(&self) -> async_nats::HeaderMap {
        let mut handed = async_nats::HeaderMap::new();
        handed.insert(headers::FORWARDED_SUBJECT, self.subject.as_str());
        handed.insert(headers::COMMAND_ID, self.id.as_str());
        handed.insert(headers::RECEIVED_AT, self.received_at.millis().to_string().as_str());
        handed.insert(headers::ACTOR, self.actor.as_str());
        let delivery = match self.last_attempt {
            true => format!("{} last", self.attempt),
            false => self.attempt.to_string(),
        };
        handed.insert(headers::DELIVERY, delivery.as_str());
        let optional = [
            (headers::REPLY_TO, &self.reply_to),
            (osp_protocol::CONTENT_TYPE, &self.content_type),
            (headers::TRACEPARENT, &self.traceparent),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                handed.insert(name, value.as_str());
            }
        }
        handed
    }

    /// A command another instance of `service` read and handed to this one
    /// ([`Inbound::handing`]), or what is missing from its headers.
    pub fn handed(service: &Token, message: &async_nats::Message) -> Result<Inbound, String> {
        let header = |name: &str| header(message.headers.as_ref(), name);
        let required = |name: &str| header(name).ok_or_else(|| format!("no {name} header"));
        let subject = required(headers::FORWARDED_SUBJECT)?;
        let received_at = required(headers::RECEIVED_AT)?.parse().map_err(|_| "an unreadable received-at")?;
        let delivery = required(headers::DELIVERY)?;
        let (attempt, last) =
            delivery.split_once(' ').map_or((delivery.as_str(), false), |(n, last)| (n, last == "last"));
        Ok(Inbound {
            command: subject::inbox_command(service, &subject).unwrap_or_default().to_owned(),
            subject,
            id: required(headers::COMMAND_ID)?,
            id_header: headers::COMMAND_ID,
            received_at: Timestamp(received_at),
            actor: header(headers::ACTOR).unwrap_or_else(|| headers::ANONYMOUS.to_owned()),
            reply_to: header(headers::REPLY_TO),
            content_type: header(osp_protocol::CONTENT_TYPE),
            traceparent: header(headers::TRACEPARENT),
            payload: message.payload.clone(),
            size: message.payload.len(),
            attempt: attempt.parse().map_err(|_| "an unreadable delivery")?,
            last_attempt: last,
        })
    }

    /// The encoding of its payload (and of the reply).
    pub fn encoding(&self) -> Result<Encoding, Error> {
        Encoding::from_content_type(self.content_type.as_deref())
    }

    /// The encoding to answer in: the command's own, or MessagePack when it named one
    /// we do not speak.
    pub fn reply_encoding(&self) -> Encoding {
        self.encoding().unwrap_or_default()
    }

    /// What is checked of every command and query before it is read: the headers
    /// (encoding, id, actor, reply subject), and that its numbers are ones JSON can carry
    /// (MessagePack's NaN and infinities would become `null` unseen).
    pub fn check(&self) -> Result<Encoding, Error> {
        let encoding = self.encoding()?;
        check_value(self.id_header, &self.id)?;
        check_value(headers::ACTOR, &self.actor)?;
        if let Some(reply_to) = &self.reply_to {
            check_reply_subject(reply_to)?;
        }
        if encoding == Encoding::MessagePack {
            osp_protocol::finite::check_msgpack(&self.payload)?;
        }
        Ok(encoding)
    }

    /// Where a reply to it may be sent: its `Osp-Reply-To`, unless that is not a subject
    /// one can publish to (a wildcard would spread the reply to every matching
    /// subscriber; such a command is refused, and its refusal goes only to the log).
    pub fn reply_subject(&self) -> Option<&str> {
        self.reply_to.as_deref().filter(|reply_to| check_reply_subject(reply_to).is_ok())
    }
}

/// The value of header `name`, if the message has it.
pub(crate) fn header(headers: Option<&async_nats::HeaderMap>, name: &str) -> Option<String> {
    headers.and_then(|h| h.get(name)).map(|v| v.as_str().to_owned())
}

fn check_value(name: &str, value: &str) -> Result<(), Error> {
    let field = format!("{name} header");
    if value.is_empty() || value.len() > MAX_HEADER_VALUE {
        return Err(Error::Invalid { field, reason: format!("must be 1 to {MAX_HEADER_VALUE} bytes") });
    }
    if value.chars().any(char::is_control) {
        return Err(Error::Invalid { field, reason: "must not contain control characters".into() });
    }
    Ok(())
}

/// A reply goes to one concrete subject: tokens that are valid, no wildcards.
fn check_reply_subject(reply_to: &str) -> Result<(), Error> {
    let field = format!("{} header", headers::REPLY_TO);
    if reply_to.is_empty() || reply_to.len() > 256 {
        return Err(Error::Invalid { field, reason: "must be a subject of 1 to 256 bytes".into() });
    }
    for part in reply_to.split('.') {
        Token::new(&field, part).map_err(|e| match e {
            Error::InvalidToken { reason, .. } => Error::Invalid {
                field: field.clone(),
                reason: format!("{reply_to:?} is not a subject to publish to: {reason}"),
            },
            other => other,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_must_be_concrete() {
        assert!(check_reply_subject("_INBOX.abc.def").is_ok());
        for bad in ["", "a..b", "a.*", "a.>", "a b", ".a", "a."] {
            let err = check_reply_subject(bad).unwrap_err().to_string();
            assert!(err.starts_with("invalid Osp-Reply-To header"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn a_handed_command_reads_back_as_it_was_read() {
        let service = Token::new("service", "scheduler").unwrap();
        let mut inbound = Inbound::query("osp.v1.in.scheduler.submit", "submit", None, Bytes::from_static(b"\x80"));
        inbound.reply_to = Some("_INBOX.x".into());
        inbound.attempt = 3;
        for last_attempt in [false, true] {
            inbound.last_attempt = last_attempt;
            let message = async_nats::Message {
                subject: "osp.v1.owner.scheduler.m1".into(),
                reply: None,
                payload: inbound.payload.clone(),
                headers: Some(inbound.handing()),
                status: None,
                description: None,
                length: 0,
            };
            let handed = Inbound::handed(&service, &message).unwrap();
            assert_eq!(format!("{handed:?}"), format!("{inbound:?}"));
        }
    }

    #[test]
    fn header_values_are_bounded() {
        assert!(check_value("Osp-Actor", "agent:a1").is_ok());
        assert!(check_value("Osp-Actor", &"x".repeat(129)).unwrap_err().to_string().contains("1 to 128 bytes"));
        assert!(check_value("Nats-Msg-Id", "a\u{7}b").unwrap_err().to_string().contains("control"));
    }
}
