//! Handing work to the instance that owns its partition ([`crate::ownership`]).
//!
//! The shared consumers give a command, or an event whose effects are due, to any
//! instance of a service. When the instances hold shares of the partitions, the one that
//! read it hands it, as read, to the owner of its aggregate's partition: a core NATS
//! request to `osp.v1.owner.<service>.<member>.<what>`, answered once the owner has done
//! the work (`done`) or could not now (`again`: the reader has it delivered again later).
//! The owner works from the state it holds in memory; no stored write is added. An
//! owner that does not answer within [`HAND_WAIT`] (it died, the partition is moving)
//! leaves the work to its reader, which does it from the log: optimistic concurrency, and
//! the work's idempotency, keep that right wherever it is done.

use std::time::Duration;

use bytes::Bytes;

/// How long a reader waits for the owner to do what it handed.
pub(crate) const HAND_WAIT: Duration = Duration::from_secs(5);
const DONE: &[u8] = b"done";
const AGAIN: &[u8] = b"again";

/// What became of work handed to its owner.
pub(crate) enum Handed {
    /// Done by the owner.
    Done,
    /// The owner could not do it now: to be delivered again later.
    Again,
    /// No answer (why): the reader does it itself.
    Unanswered(String),
}

/// Hands `payload` with `headers` to the owner taking work on `subject`.
pub(crate) async fn hand(
    client: &async_nats::Client,
    subject: String,
    headers: async_nats::HeaderMap,
    payload: Bytes,
) -> Handed {
    match tokio::time::timeout(HAND_WAIT, client.request_with_headers(subject, headers, payload)).await {
        Ok(Ok(answer)) if answer.payload.as_ref() == DONE => Handed::Done,
        Ok(Ok(_)) => Handed::Again,
        Ok(Err(error)) => Handed::Unanswered(error.to_string()),
        Err(_) => Handed::Unanswered(format!("no answer within {HAND_WAIT:?}")),
    }
}

/// The owner tells the reader at `reader` whether it did the work.
pub(crate) async fn answer(client: &async_nats::Client, reader: async_nats::Subject, done: bool) {
    let answer = Bytes::from_static(if done { DONE } else { AGAIN });
    if let Err(error) = client.publish(reader, answer).await {
        tracing::debug!(%error, "could not tell the reader of handed work");
    }
}
