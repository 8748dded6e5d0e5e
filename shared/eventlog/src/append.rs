//! Appending events to one aggregate.
//!
//! An append names the head the caller decided on (the aggregate's last stream sequence,
//! version and hash). Every message carries `Nats-Msg-Id` (the event id) and the first
//! carries `Nats-Expected-Last-Subject-Sequence` (the head), so:
//! - if another writer appended first, the server refuses the whole append and the
//!   caller gets [`Error::Conflict`]: reload, decide again;
//! - if an append is retried after its acknowledgement was lost, the server refuses it
//!   for the same reason (the sequence check runs before dedupe); we then read the
//!   aggregate's last message, and if its `Nats-Msg-Id` is our last event's id the
//!   append had succeeded: we return what is stored, not a duplicate, not a conflict.
//!   If yet another writer appended on top in between, the caller gets a conflict and
//!   finds its own events on reload: `decide` must be idempotent, as it is everywhere.
//!
//! Several events go in one atomic batch (server 2.12+): all are stored or none.

use std::time::{Duration, Instant};

use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::LastRawMessageErrorKind;
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use osp_protocol::{check_size, AggregateRef, Envelope, EventHash, EventPayload, Timestamp, MAX_MESSAGE_BYTES};
use uuid::Uuid;

use crate::{Error, EventLog, FromStored, Recorded, Result, StoredMessage};

/// What the caller knows about the end of an aggregate's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Head {
    /// Stream sequence of the aggregate's last event; 0 when it has none.
    pub seq: u64,
    /// Number of events in the aggregate's history.
    pub version: u64,
    /// Hash of the last event's stored bytes.
    pub hash: Option<EventHash>,
}

impl Head {
    /// The head of an aggregate that has no events yet.
    pub const EMPTY: Head = Head { seq: 0, version: 0, hash: None };

    /// The head just after `event`.
    pub fn after<P>(event: &Recorded<P>) -> Head {
        Head { seq: event.seq, version: event.envelope.version, hash: Some(event.hash) }
    }
}

/// An event to append: the envelope fields the caller decides. The store fills in the
/// aggregate, version and previous hash.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent<P> {
    /// Event id; derive it from the command (see `osp_protocol::derived_event_id`) so a
    /// retried decision produces the same ids.
    pub id: Uuid,
    /// When it happened.
    pub occurred_at: Timestamp,
    /// Who did it.
    pub actor: String,
    /// Root run, if any.
    pub correlation_id: Option<String>,
    /// What caused it, if anything.
    pub causation_id: Option<String>,
    /// The domain part.
    pub payload: P,
}

/// The outcome of a successful append.
#[derive(Clone, Debug)]
pub struct Appended<P> {
    /// The events as stored, with their sequences and hashes.
    pub events: Vec<Recorded<P>>,
    /// The aggregate's new head.
    pub head: Head,
}

/// Transient failures are retried for this long before an append gives up.
const RETRY_FOR: Duration = Duration::from_secs(15);

/// The pauses between those retries.
const PUBLISH_AGAIN: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(20))
    .with_max_delay(Duration::from_secs(1))
    .without_max_times();

impl EventLog {
    /// Appends `events` to `aggregate`, whose head the caller last saw as `head`.
    ///
    /// Transient failures (timeouts, a restarting server, too many batches in flight)
    /// are retried with the same ids for a while; the outcome is then exactly one of
    /// "stored once" or an error. Conflicts are returned at once.
    #[tracing::instrument(skip_all, fields(aggregate = %aggregate, head = head.seq, events = events.len()))]
    pub async fn append<P: EventPayload>(
        &self,
        aggregate: &AggregateRef,
        head: &Head,
        events: Vec<NewEvent<P>>,
    ) -> Result<Appended<P>> {
        if events.is_empty() {
            return Ok(Appended { events: Vec::new(), head: *head });
        }
        let subject = aggregate.subject();
        // The server may be configured below the protocol's limit; refuse what it would.
        let limit = self.client.server_info().max_payload.min(MAX_MESSAGE_BYTES).saturating_sub(HEADER_ALLOWANCE);
        let sealed = seal(aggregate, head, events, limit)?;
        let started = Instant::now();
        let mut attempt = 0;
        let publish = || {
            attempt += 1;
            self.publish_sealed(&subject, head, &sealed, attempt)
        };
        let published = publish
            .retry(PUBLISH_AGAIN)
            .when(|failure| matches!(failure, PublishFailure::Transient(_)))
            .adjust(|_, pause| pause.filter(|_| started.elapsed() < RETRY_FOR))
            .notify(|failure, pause| {
                if let PublishFailure::Transient(reason) = failure {
                    tracing::warn!(%reason, backoff = ?pause, "append failed, retrying with the same ids");
                }
            })
            .await;
        match published {
            Ok(last_seq) => Ok(recorded(sealed, last_seq)),
            Err(PublishFailure::Refused) => {
                let last_id = sealed.last().map(|s| s.envelope.id.to_string());
                match self.stored_last(&subject).await? {
                    // The batch occupies the sequences up to the stored one; a message
                    // that merely carries our id (a forgery) may leave too few of them.
                    Some(stored) if stored.msg_id == last_id && stored.seq >= sealed.len() as u64 => {
                        tracing::debug!(seq = stored.seq, "append had succeeded before its ack was lost");
                        self.stored_batch(&subject, stored.seq, sealed.len()).await
                    }
                    stored => Err(Error::Conflict { subject, expected: head.seq, actual: stored.map_or(0, |s| s.seq) }),
                }
            }
            Err(PublishFailure::Transient(reason)) => Err(Error::Unavailable { operation: "append", reason }),
            Err(PublishFailure::Fatal(error)) => Err(error),
        }
    }

    /// Publishes one event, or an atomic batch; returns the stream sequence of the last.
    async fn publish_sealed<P>(
        &self,
        subject: &str,
        head: &Head,
        sealed: &[Sealed<P>],
        attempt: u32,
    ) -> Result<u64, PublishFailure> {
        // A batch holds a permit from its first message to its commit's ack.
        let _permit = match sealed.len() {
            1 => None,
            _ => Some(self.batch_permits.acquire().await.map_err(|e| PublishFailure::Transient(e.to_string()))?),
        };
        let ack = if let [single] = sealed {
            let publish = PublishMessage::build()
                .payload(single.bytes.clone())
                .message_id(single.envelope.id.to_string())
                .expected_last_subject_sequence(head.seq);
            self.jetstream.send_publish(subject.to_owned(), publish).await
        } else {
            self.publish_batch(subject, head, sealed, attempt).await
        };
        let ack: PublishAck = match ack {
            Ok(future) => future.await.map_err(classify)?,
            Err(error) => return Err(classify(error)),
        };
        Ok(ack.sequence)
    }

    /// Sends all but the last message as plain publishes tagged with the batch, then the
    /// last with the commit marker through JetStream; the commit's ack covers the batch.
    /// Each attempt is a new batch id: the server may still hold an abandoned one.
    async fn publish_batch<P>(
        &self,
        subject: &str,
        head: &Head,
        sealed: &[Sealed<P>],
        attempt: u32,
    ) -> Result<async_nats::jetstream::context::PublishAckFuture, PublishError> {
        let batch_id = format!("{}-{attempt}", sealed[0].envelope.id.simple());
        let (last, rest) = sealed.split_last().expect("a batch has events");
        for (index, event) in rest.iter().enumerate() {
            let mut headers = HeaderMap::new();
            headers.insert(header::NATS_BATCH_ID, batch_id.as_str());
            headers.insert(header::NATS_BATCH_SEQUENCE, (index + 1).to_string().as_str());
            headers.insert(header::NATS_MESSAGE_ID, event.envelope.id.to_string().as_str());
            if index == 0 {
                headers.insert(header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, head.seq.to_string().as_str());
            }
            self.client
                .publish_with_headers(subject.to_owned(), headers, event.bytes.clone())
                .await
                .map_err(|e| PublishError::with_source(PublishErrorKind::Other, e))?;
        }
        let publish = PublishMessage::build()
            .payload(last.bytes.clone())
            .message_id(last.envelope.id.to_string())
            .header(header::NATS_BATCH_ID, batch_id.as_str())
            .header(header::NATS_BATCH_SEQUENCE, sealed.len().to_string().as_str())
            .header(header::NATS_BATCH_COMMIT, header::NATS_BATCH_COMMIT_FINAL);
        self.jetstream.send_publish(subject.to_owned(), publish).await
    }

    /// The stream sequence of the last event stored on `subject` (0 when none), asked of
    /// the stream leader.
    pub async fn last_of(&self, subject: &str) -> Result<u64> {
        Ok(self.stored_last(subject).await?.map_or(0, |stored| stored.seq))
    }

    /// The sequence and message id of the aggregate's last stored event, asked of the
    /// stream leader (a direct get may be answered by a lagging replica).
    async fn stored_last(&self, subject: &str) -> Result<Option<StoredHead>> {
        match self.events.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some(StoredHead {
                seq: message.sequence,
                msg_id: message.headers.get(header::NATS_MESSAGE_ID).map(|v| v.to_string()),
            })),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(Error::Nats { operation: "read the aggregate's last event", source: Box::new(e) }),
        }
    }

    /// Reads back an append that had landed (its events may differ from this attempt's
    /// in details such as `occurred_at` when the decision was made again, so what is
    /// stored is what we return).
    async fn stored_batch<P: EventPayload>(&self, subject: &str, last_seq: u64, len: usize) -> Result<Appended<P>> {
        let mut events = Vec::with_capacity(len);
        for seq in last_seq + 1 - len as u64..=last_seq {
            let message = self
                .events
                .get_raw_message(seq)
                .await
                .map_err(|e| Error::Nats { operation: "read back an appended event", source: Box::new(e) })?;
            let stored = StoredMessage {
                seq,
                subject: message.subject.to_string(),
                stored_at: Timestamp::from_offset_date_time(message.time),
                payload: message.payload,
            };
            let event = Recorded::<P>::from_stored(&stored).map_err(|error| Error::Malformed {
                seq,
                subject: subject.to_owned(),
                error,
            })?;
            events.push(event);
        }
        let head = Head::after(events.last().expect("an append has events"));
        Ok(Appended { events, head })
    }
}

/// What identifies the end of an aggregate's stored history.
struct StoredHead {
    seq: u64,
    msg_id: Option<String>,
}

/// An event encoded for the log, with the hash the next event will link to.
struct Sealed<P> {
    envelope: Envelope<P>,
    bytes: Bytes,
    hash: EventHash,
}

/// Builds the envelopes (versions and hash links continuing from `head`) and their bytes.
fn seal<P: EventPayload>(
    aggregate: &AggregateRef,
    head: &Head,
    events: Vec<NewEvent<P>>,
    limit: usize,
) -> Result<Vec<Sealed<P>>> {
    let mut prev_hash = head.hash;
    let mut version = head.version;
    events
        .into_iter()
        .map(|event| {
            version += 1;
            let envelope = Envelope {
                id: event.id,
                aggregate: aggregate.clone(),
                version,
                occurred_at: event.occurred_at,
                actor: event.actor,
                correlation_id: event.correlation_id,
                causation_id: event.causation_id,
                prev_hash,
                payload: event.payload,
            };
            let bytes = envelope.encode()?;
            check_size("event", bytes.len(), limit)?;
            let hash = EventHash::of(&bytes);
            prev_hash = Some(hash);
            Ok(Sealed { envelope, bytes: bytes.into(), hash })
        })
        .collect()
}

/// Room kept for the headers we add (ids, expected sequence, batch markers).
const HEADER_ALLOWANCE: usize = 512;

/// Stored events: an atomic batch occupies consecutive sequences ending at `last_seq`.
fn recorded<P>(sealed: Vec<Sealed<P>>, last_seq: u64) -> Appended<P> {
    let first_seq = last_seq + 1 - sealed.len() as u64;
    let now = Timestamp::now();
    let events: Vec<Recorded<P>> = sealed
        .into_iter()
        .enumerate()
        .map(|(i, s)| Recorded { seq: first_seq + i as u64, stored_at: now, hash: s.hash, envelope: s.envelope })
        .collect();
    let head = Head::after(events.last().expect("an append has events"));
    Appended { events, head }
}

enum PublishFailure {
    /// The server refused the append as stale: the aggregate moved on, or (for a batch
    /// retried inside the dedupe window) its ids are already stored. Either way the
    /// aggregate's last message tells whether the append is ours.
    Refused,
    Transient(String),
    Fatal(Error),
}

/// JetStream error codes the append path treats specially.
const BATCH_DUPLICATE_MSG_ID: u64 = 10201;
const STREAM_TEMPORARILY_UNAVAILABLE: u64 = 10163;

/// Sorts publish errors into "refused as stale", "try again" and "give up".
fn classify(error: PublishError) -> PublishFailure {
    let server_code = std::error::Error::source(&error)
        .and_then(|source| source.downcast_ref::<async_nats::jetstream::Error>())
        .map(|e| (e.code(), e.error_code().0));
    let text = match std::error::Error::source(&error) {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    };
    match (error.kind(), server_code) {
        (PublishErrorKind::WrongLastSequence, _) | (_, Some((_, BATCH_DUPLICATE_MSG_ID))) => PublishFailure::Refused,
        (PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe | PublishErrorKind::MaxAckPending, _) => {
            PublishFailure::Transient(text)
        }
        // The stream is briefly unavailable (a leader election, a restart) or the
        // server holds too many batches in flight: both go away on their own.
        (_, Some((503, _) | (_, STREAM_TEMPORARILY_UNAVAILABLE))) => PublishFailure::Transient(text),
        (PublishErrorKind::StreamNotFound, _) => PublishFailure::Fatal(Error::Definition {
            file: crate::EVENTS_STREAM.into(),
            reason: "the event stream does not exist: apply the stream definitions first (osp dev does)".into(),
        }),
        _ => PublishFailure::Fatal(Error::Nats { operation: "append", source: Box::new(error) }),
    }
}
