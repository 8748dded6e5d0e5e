//! Commands a service sends to another service's inbox: the one way services ask each
//! other for anything (the quality service submits a judge's run to the scheduler; the
//! scheduler asks the quality service to check a run's output and tells a service that
//! a run it started has ended).
//!
//! A command is sent exactly as any client sends one (`osp.v1.in.<service>.<command>`,
//! MessagePack, `Osp-Command-Id`, `Osp-Actor`), with no reply asked for: the sender
//! learns what became of it from the log. Its id is also its `Nats-Msg-Id`, so an effect
//! performed twice (an instance died before acknowledging it) sends it once within the
//! inbox's dedupe window, and the receiving service recognises it by id after that.

use async_nats::jetstream::message::PublishMessage;
use osp_protocol::{headers, subject, InboxCommand, Token, CONTENT_TYPE};
use serde::Serialize;

use crate::{Error, EventLog, Result};

impl EventLog {
    /// Sends `command` to the inbox of the service that takes it, under the name it
    /// has there, as [`send_command`](Self::send_command) does.
    pub async fn send<C: InboxCommand>(&self, command: &C, command_id: &str, actor: &str) -> Result<()> {
        let service = Token::new("service", C::SERVICE)?;
        self.send_command(&service, command.name(), command_id, actor, command).await
    }

    /// Sends `command` (encoded as MessagePack with named fields) to `service`'s inbox
    /// as `actor`, under `command_id`, and waits until the inbox has stored it.
    pub async fn send_command<C: Serialize>(
        &self,
        service: &Token,
        command: &str,
        command_id: &str,
        actor: &str,
        body: &C,
    ) -> Result<()> {
        let command = Token::new("command", command)?;
        let payload = osp_protocol::Encoding::MessagePack.encode(body)?;
        let publish = PublishMessage::build()
            .payload(payload.into())
            .message_id(command_id)
            .header(headers::COMMAND_ID, command_id)
            .header(headers::ACTOR, actor)
            .header(CONTENT_TYPE, osp_protocol::MSGPACK);
        let unavailable = |e: &dyn std::fmt::Display| Error::Unavailable {
            operation: "send a command to another service",
            reason: e.to_string(),
        };
        let ack = self
            .jetstream()
            .send_publish(subject::inbox(service, &command), publish)
            .await
            .map_err(|e| unavailable(&e))?;
        ack.await.map_err(|e| unavailable(&e))?;
        Ok(())
    }
}
