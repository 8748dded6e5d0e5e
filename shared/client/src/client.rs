//! Commands and queries, the way every OSP client sends them.
//!
//! A **command** is published to the service's inbox stream with an id
//! (`Osp-Command-Id`), who sends it (`Osp-Actor`) and where to answer (`Osp-Reply-To`, a
//! token of its own under the connection's one reply subscription). JetStream confirms it is stored; the service answers once its outcome
//! is on the log. A **query** is a core NATS request to `osp.v1.q.<service>.<query>`,
//! asked as the same actor.
//!
//! Read-your-writes comes for free: the client remembers the highest log sequence any
//! reply gave it and sends it with every query (`Osp-Min-Seq`), so whatever instance
//! answers has applied at least what this client already saw.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use backon::{ExponentialBuilder, Retryable};
use osp_protocol::{headers, subject, Encoding, InboxCommand, Reply, Token, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use crate::replies::Replies;
use crate::{Error, Result};

/// How long a call waits for its answer unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pauses before asking a query again, until the call's timeout.
const ASK_AGAIN: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(50))
    .with_max_delay(Duration::from_secs(1))
    .without_max_times();

/// A connection to OSP. Cheap to clone; clones share the read-your-writes mark.
#[derive(Clone, Debug)]
pub struct Client {
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    actor: String,
    timeout: Duration,
    seen: Arc<AtomicU64>,
    /// The connection's shared reply subscription, made on the first command.
    replies: Arc<tokio::sync::OnceCell<Replies>>,
}

/// An accepted command or an answered query: its result and log sequence.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer<T> {
    /// For a command, the sequence of its last event; for a query, how far the answering
    /// instance had applied the log.
    pub seq: u64,
    /// The command's outcome or the query's answer, decoded.
    pub result: T,
}

impl Client {
    /// Connects to `url`.
    pub async fn connect(url: &str) -> Result<Client> {
        let nats = async_nats::ConnectOptions::new()
            .name("osp-client")
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(|e| Error::nats("connect to NATS", e))?;
        Ok(Client::new(nats))
    }

    /// Uses an existing NATS connection.
    pub fn new(nats: async_nats::Client) -> Client {
        let jetstream = jetstream::new(nats.clone());
        Client {
            nats,
            jetstream,
            actor: headers::ANONYMOUS.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            seen: Arc::new(AtomicU64::new(0)),
            replies: Arc::default(),
        }
    }

    /// Who this client acts as (`Osp-Actor`): `user:ana`, `agent:summarizer-1`.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Client {
        self.actor = actor.into();
        self
    }

    /// Who this client acts as.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// How long calls wait for an answer.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The NATS connection.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// The highest log sequence any answer gave this client (sent as `Osp-Min-Seq`).
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Raises the read-your-writes mark to `seq`: an event this client has seen, or a
    /// place in the log its next queries must reflect (`osp log verify` asks for digests
    /// at the log's end).
    pub fn saw(&self, seq: u64) {
        self.seen.fetch_max(seq, Ordering::Relaxed);
    }

    /// Sends `command` to its service with a new id and waits for its outcome.
    pub async fn send<C: InboxCommand, R: DeserializeOwned>(&self, command: &C) -> Result<Answer<R>> {
        self.command(C::SERVICE, command.name(), command).await
    }

    /// Sends `command` to its service with the id `id`: see [`Client::command_with_id`].
    pub async fn send_with_id<C: InboxCommand, R: DeserializeOwned>(&self, command: &C, id: &str) -> Result<Answer<R>> {
        self.command_with_id(C::SERVICE, command.name(), command, id).await
    }

    /// Sends `body` as command `command` to `service` with a new id and waits for its
    /// outcome: for a body the protocol crate has no type for (a test of a service's
    /// refusals, say). The services' own commands are sent with [`Client::send`].
    pub async fn command<C: Serialize, R: DeserializeOwned>(
        &self,
        service: &str,
        command: &str,
        body: &C,
    ) -> Result<Answer<R>> {
        self.command_with_id(service, command, body, &Uuid::now_v7().to_string()).await
    }

    /// Sends `command` with the id `id` (`Osp-Command-Id`): sending the same id again
    /// (after a timeout, say) applies the command at most once, and is answered with the
    /// first outcome.
    pub async fn command_with_id<C: Serialize, R: DeserializeOwned>(
        &self,
        service: &str,
        command: &str,
        body: &C,
        id: &str,
    ) -> Result<Answer<R>> {
        let subject = subject::inbox(&Token::new("service", service)?, &Token::new("command", command)?);
        let payload = Encoding::MessagePack.encode(body)?;
        let replies = self.replies.get_or_try_init(|| Replies::start(&self.nats)).await?;
        let mut awaited = replies.expect();
        let reply_to = awaited.subject.clone();
        // No `Nats-Msg-Id`: JetStream would drop a resend, which then gets no answer. The
        // service recognises a resend by its command id instead.
        let publish = PublishMessage::build()
            .payload(payload.into())
            .header(headers::COMMAND_ID, id)
            .header(headers::ACTOR, self.actor.as_str())
            .header(headers::REPLY_TO, reply_to.as_str());
        let stored = async {
            self.jetstream.send_publish(subject, publish).await?.await?;
            Ok::<_, async_nats::jetstream::context::PublishError>(())
        };
        tokio::time::timeout(self.timeout, stored)
            .await
            .map_err(|_| Error::Timeout { service: service.to_owned(), waited: self.timeout, stored: false })?
            .map_err(|e| Error::nats("store the command in the inbox", e))?;
        let reply = tokio::time::timeout(self.timeout, awaited.reply())
            .await
            .map_err(|_| Error::Timeout { service: service.to_owned(), waited: self.timeout, stored: true })?
            .ok_or_else(|| Error::nats("wait for the reply", std::io::Error::other("the subscription ended")))?;
        self.read_reply(service, &reply)
    }

    /// Asks `query` of `service`, answered once the instance has applied the log at
    /// least as far as this client has seen. An instance that is behind (`lagging`) or
    /// cannot answer now (`unavailable`) is asked again (or another is: the queue group
    /// picks one) until the client's timeout.
    pub async fn query<Q: Serialize, R: DeserializeOwned>(
        &self,
        service: &str,
        query: &str,
        body: &Q,
    ) -> Result<Answer<R>> {
        let deadline = Instant::now() + self.timeout;
        let ask = || self.query_once(service, query, body, deadline.saturating_duration_since(Instant::now()));
        ask.retry(ASK_AGAIN)
            .when(|error| matches!(error, Error::Rejected { error, .. } if error.is_transient()))
            // No pause that would end past the deadline: the last refusal is the answer then.
            .adjust(|_, pause| pause.filter(|pause| Instant::now() + *pause < deadline))
            .notify(|error, _| tracing::debug!(%error, "asking again"))
            .await
    }

    async fn query_once<Q: Serialize, R: DeserializeOwned>(
        &self,
        service: &str,
        query: &str,
        body: &Q,
        within: Duration,
    ) -> Result<Answer<R>> {
        let subject = subject::query(&Token::new("service", service)?, &Token::new("query", query)?);
        let mut request_headers = async_nats::HeaderMap::new();
        request_headers.insert(headers::MIN_SEQ, self.seen().to_string().as_str());
        // Who asks: a service whose reads are access-controlled answers accordingly.
        request_headers.insert(headers::ACTOR, self.actor.as_str());
        let payload = Encoding::MessagePack.encode(body)?;
        let request = self.nats.request_with_headers(subject.clone(), request_headers, payload.into());
        let reply = match tokio::time::timeout(within, request).await {
            Err(_) => return Err(Error::Timeout { service: service.to_owned(), waited: self.timeout, stored: false }),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Err(Error::NoResponders { service: service.to_owned(), subject })
            }
            Ok(Err(e)) => return Err(Error::nats("send the query", e)),
            Ok(Ok(reply)) => reply,
        };
        self.read_reply(service, &reply)
    }

    fn read_reply<R: DeserializeOwned>(&self, service: &str, reply: &async_nats::Message) -> Result<Answer<R>> {
        let content_type = reply.headers.as_ref().and_then(|h| h.get(CONTENT_TYPE)).map(|v| v.as_str());
        let decoded =
            Encoding::from_content_type(content_type).and_then(|encoding| encoding.decode::<Reply<R>>(&reply.payload));
        match decoded.map_err(|error| Error::Answer { service: service.to_owned(), error })? {
            Reply::Ok { seq, result } => {
                self.saw(seq);
                Ok(Answer { seq, result })
            }
            Reply::Err { seq, error } => {
                if let Some(seq) = seq {
                    self.saw(seq);
                }
                Err(Error::Rejected { seq, error })
            }
        }
    }
}
