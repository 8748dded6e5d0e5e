//! Shared durable pull consumers: a service's inbox, an agent capability's work queue,
//! a service's fired timers.
//!
//! Every instance binds to the same durable consumer and the server hands each message
//! to one of them. A message is acknowledged only after its effects are durable
//! ([`Delivery::ack`] waits for the server's confirmation); until then a crashed
//! instance's messages come back after the ack wait. Redelivery is bounded by the
//! consumer's `max_deliver`: [`Delivery::is_last_attempt`] tells the handler when to
//! record a failure instead of hoping for another try.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::{self, AckKind};
use async_nats::HeaderMap;
use futures::StreamExt;
use osp_protocol::Encoding;

use crate::{Error, Result};

/// How many messages one instance asks for at a time.
const BATCH: usize = 64;
/// Pull requests expire after this long; kept short so a request held by a server
/// that died is replaced quickly.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Idle heartbeat of pull requests: a silent stall is detected within two of these.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

/// Settings for a shared consumer created in code (services may also define theirs in
/// `streams/consumers/`).
#[derive(Clone, Debug)]
pub struct WorkConfig {
    /// Durable name shared by all instances.
    pub durable: String,
    /// Subjects it takes messages from.
    pub filter: String,
    /// Time an instance has to acknowledge before the message goes to another.
    pub ack_wait: Duration,
    /// Deliveries of one message before the server gives up on it.
    pub max_deliver: i64,
}

/// One durable consumer, bound.
#[derive(Clone, Debug)]
pub struct WorkConsumer {
    consumer: PullConsumer,
    max_deliver: i64,
}

impl WorkConsumer {
    /// Creates the consumer on `stream`, or updates it to `config`; every instance may
    /// call this at start-up.
    pub async fn ensure(js: &jetstream::Context, stream: &str, config: &WorkConfig) -> Result<WorkConsumer> {
        let stream = js
            .get_stream(stream)
            .await
            .map_err(|e| Error::Nats { operation: "find the consumer's stream", source: Box::new(e) })?;
        let consumer: PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(config.durable.clone()),
                filter_subject: config.filter.clone(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver,
                max_ack_pending: 1024,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Nats { operation: "create the shared consumer", source: Box::new(e) })?;
        Ok(WorkConsumer { consumer, max_deliver: config.max_deliver })
    }

    /// Binds to an existing durable consumer (one applied from `streams/consumers/`).
    pub async fn bind(js: &jetstream::Context, stream: &str, durable: &str) -> Result<WorkConsumer> {
        let consumer: PullConsumer = js
            .get_consumer_from_stream(durable, stream)
            .await
            .map_err(|e| Error::Nats { operation: "bind to the shared consumer", source: Box::new(e) })?;
        let max_deliver = consumer.cached_info().config.max_deliver;
        Ok(WorkConsumer { consumer, max_deliver })
    }

    /// Handles this instance's share of the messages until `shutdown`, up to `in_flight`
    /// at once, each in a task of its own: `handle` answers each message (ack, retry or
    /// term). On shutdown, what is in hand finishes; what was pulled and not started
    /// comes back to some instance after the ack wait. `name` labels pull errors.
    pub async fn serve<F, Fut>(
        &self,
        name: &'static str,
        in_flight: usize,
        shutdown: tokio_util::sync::CancellationToken,
        handle: F,
    ) -> Result<tokio::task::JoinHandle<()>>
    where
        F: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut deliveries = self.deliveries().await?;
        Ok(tokio::spawn(async move {
            let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
            while let Some(delivery) = deliveries.next_until(&shutdown, name).await {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let work = handle(delivery);
                tokio::spawn(async move {
                    work.await;
                    drop(slot);
                });
            }
            let _all = slots.acquire_many(in_flight as u32).await;
        }))
    }

    /// Starts receiving this instance's share of the messages.
    pub async fn deliveries(&self) -> Result<Deliveries> {
        let messages = self
            .consumer
            .stream()
            .max_messages_per_batch(BATCH)
            .expires(PULL_EXPIRES)
            .heartbeat(PULL_HEARTBEAT)
            .messages()
            .await
            .map_err(|e| Error::Nats { operation: "start pulling messages", source: Box::new(e) })?;
        Ok(Deliveries { messages, max_deliver: self.max_deliver })
    }
}

/// The messages handed to this instance. Read with [`Deliveries::next`].
pub struct Deliveries {
    messages: pull::Stream,
    max_deliver: i64,
}

impl Deliveries {
    /// The next message. An `Err` is a connection-level problem (a missed heartbeat, a
    /// reconnect): log it and keep reading; the stream recovers on its own.
    pub async fn next(&mut self) -> Option<Result<Delivery>> {
        let item = self.messages.next().await?;
        Some(
            item.map(|message| Delivery { message, max_deliver: self.max_deliver })
                .map_err(|e| Error::Nats { operation: "pull messages", source: Box::new(e) }),
        )
    }
}

impl Deliveries {
    /// The next message, or `None` once `shutdown` is cancelled or the stream ends.
    /// Pull errors (a missed heartbeat, a reconnect) are logged under `consumer` and
    /// skipped: the stream recovers on its own.
    pub async fn next_until(
        &mut self,
        shutdown: &tokio_util::sync::CancellationToken,
        consumer: &str,
    ) -> Option<Delivery> {
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return None,
                next = self.next() => next,
            };
            match next? {
                Ok(delivery) => return Some(delivery),
                Err(error) => tracing::warn!(%error, consumer, "pulling failed; going on"),
            }
        }
    }
}

/// One message handed to this instance, to be answered exactly once.
#[derive(Debug)]
pub struct Delivery {
    message: jetstream::Message,
    max_deliver: i64,
}

impl Delivery {
    /// The subject it was published to.
    pub fn subject(&self) -> &str {
        self.message.subject.as_str()
    }

    /// Its bytes.
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }

    /// Its bytes, shared (no copy).
    pub fn payload_bytes(&self) -> bytes::Bytes {
        self.message.payload.clone()
    }

    /// It as the log stored it (for a consumer on the event stream: decode it with
    /// [`crate::FromStored`]).
    pub fn stored(&self) -> crate::StoredMessage {
        crate::StoredMessage {
            seq: self.stream_sequence(),
            subject: self.subject().to_owned(),
            stored_at: self.stored_at(),
            payload: self.payload_bytes(),
        }
    }

    /// Its headers, if any.
    pub fn headers(&self) -> Option<&HeaderMap> {
        self.message.headers.as_ref()
    }

    /// One header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers().and_then(|h| h.get(name)).map(|v| v.as_str())
    }

    /// The encoding its sender chose with `Content-Type` (MessagePack if none).
    pub fn encoding(&self) -> Result<Encoding, osp_protocol::Error> {
        Encoding::from_content_type(self.header(osp_protocol::CONTENT_TYPE))
    }

    /// Which delivery of this message this is, from 1.
    pub fn attempt(&self) -> i64 {
        self.message.info().map(|info| info.delivered).unwrap_or(1)
    }

    /// Its sequence in the stream it came from.
    pub fn stream_sequence(&self) -> u64 {
        self.message.info().map(|info| info.stream_sequence).unwrap_or(0)
    }

    /// When the stream stored it (by the server's clock): the same on every redelivery.
    pub fn stored_at(&self) -> osp_protocol::Timestamp {
        self.message
            .info()
            .map(|info| osp_protocol::Timestamp::from_offset_date_time(info.published))
            .unwrap_or_else(|_| osp_protocol::Timestamp::now())
    }

    /// True when the server will not deliver it again if this delivery is not acked.
    pub fn is_last_attempt(&self) -> bool {
        self.max_deliver > 0 && self.attempt() >= self.max_deliver
    }

    /// Done: confirmed by the server before returning, so the caller knows the message
    /// will not come back.
    pub async fn ack(&self) -> Result<()> {
        self.respond(AckKind::Ack, "acknowledge").await
    }

    /// Done, without waiting for the server to confirm: for messages whose handling is
    /// idempotent (a command recognised by its id, an effect judged against the state),
    /// where a lost acknowledgement only means handling the message once more. Saves a
    /// round trip per message on the hot paths.
    pub async fn ack_idempotent(&self) -> Result<()> {
        self.message.ack().await.map_err(|e| Error::Nats { operation: "acknowledge", source: e })
    }

    /// Not now: deliver it again (to any instance) after `delay`.
    pub async fn retry_after(&self, delay: Duration) -> Result<()> {
        self.respond(AckKind::Nak(Some(delay)), "ask for redelivery").await
    }

    /// Still working on it: restart the ack-wait clock.
    pub async fn in_progress(&self) -> Result<()> {
        self.message
            .ack_with(AckKind::Progress)
            .await
            .map_err(|e| Error::Nats { operation: "report progress", source: e })
    }

    /// Never deliver it again (poison message, already recorded as rejected).
    pub async fn term(&self) -> Result<()> {
        self.respond(AckKind::Term, "terminate").await
    }

    async fn respond(&self, kind: AckKind, operation: &'static str) -> Result<()> {
        self.message.double_ack_with(kind).await.map_err(|e| Error::Nats { operation, source: e })
    }
}
