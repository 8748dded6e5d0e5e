//! Message headers of wire protocol v1.
//!
//! What is about the message rather than its content travels in headers, so the same
//! payload shape works whatever its transport: who sends it, where the answer goes,
//! which sequence a query must see, and the W3C trace context.

/// The sender's name for itself, recorded as the actor of what its command causes:
/// `agent:summarizer-1`, `user:ana`. A claim, not an authentication; restrict who may
/// publish with NATS permissions. Absent means [`ANONYMOUS`].
pub const ACTOR: &str = "Osp-Actor";

/// The actor recorded when a command names none.
pub const ANONYMOUS: &str = "anonymous";

/// Where a service publishes the outcome of a command ([`crate::Reply`]). A command is
/// sent into a JetStream stream, which answers the NATS reply subject itself with its
/// storage acknowledgement, so the service's answer needs a subject of its own.
pub const REPLY_TO: &str = "Osp-Reply-To";

/// On a query: answer only once this stream sequence (the `seq` of an earlier reply)
/// has been applied — read-your-writes across instances.
pub const MIN_SEQ: &str = "Osp-Min-Seq";

/// The command's identity, its idempotency key: a command sent again with the same id
/// is applied at most once, and every sending of it is answered (with the first
/// outcome). Absent, [`MSG_ID`] serves as the id.
pub const COMMAND_ID: &str = "Osp-Command-Id";

/// JetStream's dedupe header. Used as the command id when [`COMMAND_ID`] is absent; but
/// JetStream drops a message whose `Nats-Msg-Id` it stored in the last two minutes, so
/// a resend with the same one is never delivered and never answered. To resend and get
/// an answer, keep the `Osp-Command-Id` and change (or omit) the `Nats-Msg-Id`.
pub const MSG_ID: &str = "Nats-Msg-Id";

/// W3C trace context, carried from a command to what it causes.
pub const TRACEPARENT: &str = "traceparent";

/// On a command or an event handed by one instance of a service to the instance owning
/// its aggregate's partition (`osp.v1.owner.…`): the inbox subject it was sent to, or
/// the event's subject.
pub const FORWARDED_SUBJECT: &str = "Osp-Forwarded-Subject";
/// On a handed command or event: when the inbox or the log stored it (milliseconds since
/// the Unix epoch).
pub const RECEIVED_AT: &str = "Osp-Received-At";
/// On a handed event: its sequence in the log.
pub const SEQ: &str = "Osp-Seq";
/// On a handed command: which delivery it is (from 1), and `last` when it is the last.
pub const DELIVERY: &str = "Osp-Delivery";

/// The micro-service error headers, set on a failed query reply so the standard NATS
/// tooling counts it as an error (the body still carries the full [`crate::Error`]).
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
/// See [`SERVICE_ERROR`].
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
