//! Reading the log: replay at full speed, then follow live, with no gap and no duplicate
//! at the hand-over, because both are one ordered consumer reading one stream.
//!
//! A follower says once when it has caught up ([`LogItem::CaughtUp`]): every matching
//! event stored up to that sequence has then been delivered. A message that cannot be
//! decoded is reported as [`LogItem::Malformed`] with its sequence; it never ends the
//! stream and never panics.

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use bytes::Bytes;
use futures::StreamExt;
use osp_protocol::{AggregateRef, Envelope, EventHash, EventPayload, Timestamp};

use crate::{Error, EventLog, Head, Result};

/// An event as read from (or written to) the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded<P> {
    /// Its stream sequence: its position in the whole log.
    pub seq: u64,
    /// When the server stored it (for an event just appended: when the append was
    /// acknowledged, by this machine's clock).
    pub stored_at: Timestamp,
    /// Hash of its stored bytes (what the next event of the aggregate links to).
    pub hash: EventHash,
    /// The event.
    pub envelope: Envelope<P>,
}

/// A stored message, undecoded: what verification and export work on.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredMessage {
    /// Stream sequence.
    pub seq: u64,
    /// Subject it was stored under.
    pub subject: String,
    /// When the server stored it.
    pub stored_at: Timestamp,
    /// The bytes exactly as stored.
    pub payload: Bytes,
}

/// Something a follower can turn a stored message into.
pub trait FromStored: Sized {
    /// Decodes `message`, or says why it cannot be.
    fn from_stored(message: &StoredMessage) -> Result<Self, osp_protocol::Error>;
}

impl FromStored for StoredMessage {
    fn from_stored(message: &StoredMessage) -> Result<Self, osp_protocol::Error> {
        Ok(message.clone())
    }
}

impl<P: EventPayload> FromStored for Recorded<P> {
    fn from_stored(message: &StoredMessage) -> Result<Self, osp_protocol::Error> {
        let envelope = Envelope::<P>::decode(&message.payload)?;
        if !is_subject_of(&envelope.aggregate, &message.subject) {
            return Err(osp_protocol::Error::InvalidSubject {
                subject: message.subject.clone(),
                reason: format!("the event says it belongs to {}", envelope.aggregate),
            });
        }
        Ok(Recorded { seq: message.seq, stored_at: message.stored_at, hash: EventHash::of(&message.payload), envelope })
    }
}

/// True when `subject` is `aggregate`'s subject (checked without allocating: this runs
/// for every event of every replay).
fn is_subject_of(aggregate: &AggregateRef, subject: &str) -> bool {
    let expected = [osp_protocol::subject::EVENT_PREFIX, aggregate.kind.as_str(), aggregate.id.as_str()];
    let mut rest = subject;
    for (i, part) in expected.iter().enumerate() {
        let Some(after) = rest.strip_prefix(part) else { return false };
        rest = after;
        if i + 1 < expected.len() {
            let Some(after) = rest.strip_prefix('.') else { return false };
            rest = after;
        }
    }
    rest.is_empty()
}

/// Where a replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// From the first event.
    All,
    /// From this stream sequence (inclusive).
    Sequence(u64),
    /// From the first event stored at or after this time.
    Since(Timestamp),
    /// Only events stored from now on.
    New,
}

impl Start {
    fn deliver_policy(self) -> DeliverPolicy {
        match self {
            Start::All => DeliverPolicy::All,
            Start::Sequence(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
            Start::Since(at) => DeliverPolicy::ByStartTime { start_time: at.to_offset_date_time() },
            Start::New => DeliverPolicy::New,
        }
    }
}

/// One step of a replay-then-follow.
#[derive(Clone, Debug, PartialEq)]
pub enum LogItem<T> {
    /// The next matching event.
    Event(T),
    /// A stored message that could not be decoded.
    Malformed(Malformed),
    /// Every matching event stored up to this sequence has been delivered. Sent once.
    CaughtUp(u64),
}

/// A message on the log that cannot be read.
#[derive(Clone, Debug, PartialEq)]
pub struct Malformed {
    /// Its stream sequence.
    pub seq: u64,
    /// The subject it is stored on, which names its aggregate (`osp.v1.evt.<kind>.<id>`).
    pub subject: String,
    /// Why it cannot be read.
    pub error: osp_protocol::Error,
}

/// A replay that turns into a live follow. Read it with [`Follow::next`].
pub struct Follow<T> {
    messages: pull::Ordered,
    /// The consumer's name as created, to delete it once read ([`Follow::close`]).
    consumer: String,
    events: stream::Stream,
    /// Known high-water mark when nothing was pending at creation.
    caught_up_at_start: Option<u64>,
    caught_up: bool,
    queued_caught_up: Option<u64>,
    pending: u64,
    marker: std::marker::PhantomData<fn() -> T>,
}

impl<T> Follow<T> {
    /// Deletes the consumer now, rather than leave it on the server for its inactivity
    /// threshold: a process that reads many histories (recalls, conflicts) would
    /// otherwise pile them up. Best effort: one the client has since recreated under
    /// another name is left to expire.
    pub async fn close(self) {
        let Follow { messages, consumer, events, .. } = self;
        drop(messages);
        if let Err(error) = events.delete_consumer(&consumer).await {
            tracing::debug!(%error, consumer, "cannot delete a read's consumer; it expires on its own");
        }
    }
}

/// What [`Follow::next_where`] delivers.
#[derive(Debug)]
pub enum Delivered<T> {
    /// An item, as [`Follow::next`] gives it.
    Item(LogItem<T>),
    /// The event at this sequence, on a subject the reader does not want, left undecoded.
    Passed(u64),
}

impl<T: FromStored> Follow<T> {
    /// The next item; `None` only if the underlying subscription ends.
    pub async fn next(&mut self) -> Option<Result<LogItem<T>>> {
        match self.next_where(&|_| true).await? {
            Ok(Delivered::Item(item)) => Some(Ok(item)),
            Ok(Delivered::Passed(seq)) => unreachable!("every subject is wanted, yet {seq} was passed"),
            Err(error) => Some(Err(error)),
        }
    }

    /// Like [`next`](Self::next), decoding only the events whose subject `wanted`
    /// accepts: a reader that holds a share of the aggregates spends nothing on the others
    /// but learns how far the log has gone.
    pub async fn next_where(&mut self, wanted: &(dyn Fn(&str) -> bool + Sync)) -> Option<Result<Delivered<T>>> {
        if let Some(seq) = self.caught_up_at_start.take().or_else(|| self.queued_caught_up.take()) {
            self.caught_up = true;
            return Some(Ok(Delivered::Item(LogItem::CaughtUp(seq))));
        }
        let message = match self.messages.next().await? {
            Ok(message) => message,
            Err(e) => return Some(Err(Error::Nats { operation: "follow the log", source: Box::new(e) })),
        };
        let (seq, stored_at, pending) = match message.info() {
            Ok(info) => (info.stream_sequence, Timestamp::from_offset_date_time(info.published), info.pending),
            Err(e) => return Some(Err(Error::Nats { operation: "read delivery info", source: e })),
        };
        self.pending = pending;
        if pending == 0 && !self.caught_up {
            self.queued_caught_up = Some(seq);
        }
        let message = message.message;
        if !wanted(message.subject.as_str()) {
            return Some(Ok(Delivered::Passed(seq)));
        }
        let stored = StoredMessage { seq, subject: message.subject.to_string(), stored_at, payload: message.payload };
        Some(Ok(Delivered::Item(match T::from_stored(&stored) {
            Ok(event) => LogItem::Event(event),
            Err(error) => LogItem::Malformed(Malformed { seq, subject: stored.subject, error }),
        })))
    }

    /// Matching events still to be delivered, as of the last one delivered: the
    /// remaining work of a replay, for progress bars.
    pub fn pending(&self) -> u64 {
        self.pending
    }
}

/// Longest pull request of a follower. The client's idle heartbeat is half of it, and two
/// missed heartbeats make it recreate the consumer elsewhere: a follower whose consumer
/// lived on a server that died resumes within about this long (the client's defaults,
/// 30 s and 15 s, would leave a service's view stale for half a minute).
const FOLLOW_EXPIRES: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`EventLog::load`] returns: an aggregate's history and head.
#[derive(Clone, Debug)]
pub struct Loaded<P> {
    /// Every event of the aggregate, oldest first.
    pub events: Vec<Recorded<P>>,
    /// Where its history ends; append after it.
    pub head: Head,
}

impl EventLog {
    /// Replays the events matching `filter` (a subject, wildcards allowed) from `start`,
    /// then keeps delivering new ones as they are stored.
    pub async fn follow<T: FromStored>(&self, filter: &str, start: Start) -> Result<Follow<T>> {
        self.open_follow(&[filter], start, true).await
    }

    /// Like [`follow`](Self::follow), for the events matching any of `filters` (a
    /// service folding several aggregate kinds into one view), in log order, on one
    /// ordered consumer. `filters` must not be empty or overlap (the server refuses both).
    pub async fn follow_any<T: FromStored>(&self, filters: &[&str], start: Start) -> Result<Follow<T>> {
        if filters.is_empty() {
            return Err(Error::Unavailable { operation: "follow the log", reason: "no subject filter given".into() });
        }
        self.open_follow(filters, start, true).await
    }

    /// Reads one aggregate's whole history. An event that cannot be decoded is an
    /// error: no decision may be based on a history that cannot be read.
    pub async fn load<P: EventPayload>(&self, aggregate: &AggregateRef) -> Result<Loaded<P>> {
        let mut follow = self.open_follow::<Recorded<P>>(&[&aggregate.subject()], Start::All, false).await?;
        let mut events = Vec::new();
        while let Some(item) = follow.next().await {
            match item? {
                LogItem::Event(event) => events.push(event),
                LogItem::Malformed(Malformed { seq, subject, error }) => {
                    return Err(Error::Malformed { seq, subject, error })
                }
                LogItem::CaughtUp(_) => break,
            }
        }
        follow.close().await;
        let head = events.last().map_or(Head::EMPTY, Head::after);
        Ok(Loaded { events, head })
    }

    /// The last event of one aggregate, if it has any, asked of the stream leader (so a
    /// write just acknowledged is seen): one read of the stream's subject index, where
    /// [`load`](Self::load) reads the whole history.
    pub async fn last_event<P: EventPayload>(&self, aggregate: &AggregateRef) -> Result<Option<Recorded<P>>> {
        let subject = aggregate.subject();
        let message = match self.events.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => message,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
            Err(e) => return Err(Error::Nats { operation: "read an aggregate's last event", source: Box::new(e) }),
        };
        let stored = StoredMessage {
            seq: message.sequence,
            subject: message.subject.to_string(),
            stored_at: Timestamp::from_offset_date_time(message.time),
            payload: message.payload,
        };
        Recorded::from_stored(&stored).map(Some).map_err(|error| Error::Malformed { seq: stored.seq, subject, error })
    }

    /// The stream sequence of the first event matching `filter` at or after `from`, if
    /// any, from the stream's index (asked of the leader).
    pub async fn next_matching(&self, filter: &str, from: u64) -> Result<Option<u64>> {
        match self.events.get_first_raw_message_by_subject(filter, from).await {
            Ok(message) => Ok(Some(message.sequence)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(Error::Nats { operation: "read the log's index", source: Box::new(e) }),
        }
    }

    /// The first event matching any of `filters` at or after `from`: the earliest of
    /// each filter's [`next_matching`](Self::next_matching).
    pub async fn next_matching_any(&self, filters: &[String], from: u64) -> Result<Option<u64>> {
        let mut first = None;
        for filter in filters {
            if let Some(seq) = self.next_matching(filter, from).await? {
                first = Some(first.map_or(seq, |first: u64| first.min(seq)));
            }
        }
        Ok(first)
    }

    /// The hash of the message stored at `seq` (none when there is none), asked of the
    /// stream leader: what a snapshot's last event is checked against.
    pub async fn stored_hash(&self, seq: u64) -> Result<Option<EventHash>> {
        match self.events.get_raw_message(seq).await {
            Ok(message) => Ok(Some(EventHash::of(&message.payload))),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(Error::Nats { operation: "read a stored event", source: Box::new(e) }),
        }
    }

    /// The sequence of the last message stored in the log (0 when empty).
    pub async fn last_sequence(&self) -> Result<u64> {
        let info = self
            .events
            .get_info()
            .await
            .map_err(|e| Error::Nats { operation: "read the event stream's state", source: Box::new(e) })?;
        Ok(info.state.last_sequence)
    }

    /// `with_high_water`: when nothing matches yet, ask the stream how far it goes so
    /// the caught-up mark is meaningful to read-your-writes; a load does not need it.
    async fn open_follow<T: FromStored>(
        &self,
        filters: &[&str],
        start: Start,
        with_high_water: bool,
    ) -> Result<Follow<T>> {
        // Read before the consumer exists: an event stored in between is then delivered
        // by the consumer, never counted as caught up before it arrives.
        let high_water = match with_high_water {
            true => self.last_sequence().await?,
            false => 0,
        };
        // One filter as `filter_subject`, as always; several as `filter_subjects`
        // (the server takes one or the other, not both).
        let (filter_subject, filter_subjects) = match filters {
            [one] => ((*one).to_owned(), Vec::new()),
            many => (String::new(), many.iter().map(|filter| (*filter).to_owned()).collect()),
        };
        let consumer = self
            .events
            .create_consumer(pull::OrderedConfig {
                filter_subject,
                filter_subjects,
                deliver_policy: start.deliver_policy(),
                max_expires: FOLLOW_EXPIRES,
                ..Default::default()
            })
            .await
            .map_err(|e| Error::Nats { operation: "create a replay consumer", source: Box::new(e) })?;
        let pending = consumer.cached_info().num_pending;
        let name = consumer.cached_info().name.clone();
        let caught_up_at_start = (pending == 0).then_some(high_water);
        let messages = consumer
            .messages()
            .await
            .map_err(|e| Error::Nats { operation: "start reading the log", source: Box::new(e) })?;
        Ok(Follow {
            messages,
            consumer: name,
            events: self.events.clone(),
            caught_up_at_start,
            caught_up: false,
            queued_caught_up: None,
            pending,
            marker: std::marker::PhantomData,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_check_matches_only_the_aggregates_own_subject() {
        let agg = AggregateRef::new("run", "r1").unwrap();
        assert!(is_subject_of(&agg, "osp.v1.evt.run.r1"));
        for other in [
            "osp.v1.evt.run.r2",
            "osp.v1.evt.run.r1x",
            "osp.v1.evt.runs.r1",
            "osp.v1.evt.run",
            "x.v1.evt.run.r1",
            "osp.v1.evt.run.r1.x",
            "osp.v1.evtXrunXr1",
        ] {
            assert!(!is_subject_of(&agg, other), "{other}");
        }
    }
}
