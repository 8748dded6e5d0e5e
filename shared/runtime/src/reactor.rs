//! What a service does about the events on the log and about its fired timers, the same
//! way in every service.
//!
//! A [`Reactor`] turns each event of one aggregate kind into effects, as data, with
//! [`Reactor::effects_of`], which reads state and decides nothing; the runtime performs them and acknowledges the event only once
//! all are done. An instance that dies halfway leaves the event unacknowledged, and
//! another instance performs its effects again: each effect must therefore be idempotent
//! (a command with an id derived from the event, a timer whose subject is its identity),
//! and judged against the state now, so that doing it twice does nothing twice.
//!
//! A [`TimerHandler`] decides what a fired timer asks for, as commands on the service's
//! own aggregates; the same acknowledge-when-done rule holds.
//!
//! Both are served on durable consumers shared by all instances of the service, so each
//! message is handled by one instance, and by another if that one dies first. When the
//! instances hold shares of the events' partitions, the instance that reads an event
//! hands it to the owner of its partition, which performs its effects from the state it
//! holds ([`crate::handing`]).

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use osp_eventlog::{
    Delivery, EventLog, FromStored, Recorded, Result, StoredMessage, Timers, WorkConfig, WorkConsumer, EVENTS_STREAM,
};
use osp_protocol::{headers, subject, EventPayload, Timestamp, Token};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::handing::{self, Handed};
use crate::inbound::header;
use crate::ownership::Ownership;
use crate::projection::aggregate_id;
use tokio_util::sync::CancellationToken;

/// How long after a failed effect (or a fired timer that could not be decided) it is tried
/// again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long after an event the state has not applied yet its effects are tried again.
const NOT_READY_RETRY: Duration = Duration::from_millis(500);

/// What the events of one aggregate kind ask of the world.
pub trait Reactor: Send + Sync + 'static {
    /// The events it reads.
    type Event: EventPayload + Send + Sync;
    /// One thing an event asks for: a command to send, a timer to set or clear.
    type Effect: Debug + Send + Sync;
    /// The consumer's name before the service's: `effects` makes `effects-<service>`.
    const NAME: &'static str;
    /// The aggregate kind whose events it reads.
    const KIND: &'static str;
    /// Events handled at once by one instance.
    const IN_FLIGHT: usize = 64;

    /// Whether the state [`effects_of`](Self::effects_of) reads has applied the event at
    /// `seq`; waits a little for it. When it has not, the event is handled again shortly.
    fn ready(&self, seq: u64) -> impl Future<Output = bool> + Send {
        let _ = seq;
        async { true }
    }

    /// What `event` asks for, given the state once it is applied (which it may have to
    /// read from the log: an aggregate that finished a while ago is no longer in memory,
    /// [`crate::resident`]). Decides nothing and performs nothing. An error means "not
    /// now": the event is handled again later.
    fn effects_of(&self, event: &Recorded<Self::Event>) -> impl Future<Output = Result<Vec<Self::Effect>>> + Send;

    /// Performs one effect of `event`. Idempotent: it may be performed again, by this
    /// instance or another. An error means "not now": the event is handled again later.
    fn perform(&self, event: &Recorded<Self::Event>, effect: &Self::Effect) -> impl Future<Output = Result<()>> + Send;
}

/// What a service's fired timers ask for.
pub trait TimerHandler: Send + Sync + 'static {
    /// Decides timer `fired` (its payload as it was set), which fired at `fired_at` (the
    /// time part of the ids of what it decides, the same on every delivery). A payload it
    /// cannot read is logged and dropped (`Ok`); an error means "not now": it is
    /// delivered again later.
    fn fire(&self, fired: &[u8], fired_at: Timestamp) -> impl Future<Output = Result<()>> + Send;
}

/// The consumer every instance of `service` shares for reactor `R`.
fn reactor_config<R: Reactor>(service: &Token, ack_wait: Duration) -> WorkConfig {
    WorkConfig {
        durable: format!("{}-{service}", R::NAME),
        filter: subject::events_of_kind(&Token::new("kind", R::KIND).expect("an aggregate kind is a valid token")),
        ack_wait,
        max_deliver: -1,
    }
}

/// Serves reactor `reactor` of `service` until `shutdown`; with `owned`, hands each event
/// to the owner of its partition, and performs the effects of those handed to this one.
pub(crate) async fn serve_reactor<R: Reactor>(
    log: &EventLog,
    service: &Token,
    reactor: Arc<R>,
    ack_wait: Duration,
    owned: Option<Ownership>,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>> {
    let consumer =
        WorkConsumer::ensure(log.jetstream(), EVENTS_STREAM, &reactor_config::<R>(service, ack_wait)).await?;
    let mut tasks = Vec::new();
    if let Some(owned) = &owned {
        let subject = subject::owner(service, owned.member(), R::NAME);
        tasks.push(take_handed(log.client(), subject, reactor.clone(), shutdown.clone()).await?);
    }
    let reader = Arc::new(Reader { client: log.client().clone(), service: service.clone(), owned });
    let served = consumer
        .serve(R::NAME, R::IN_FLIGHT, shutdown, move |delivery| {
            let (reactor, reader) = (reactor.clone(), reader.clone());
            async move { reader.react(&*reactor, &delivery).await }
        })
        .await?;
    tasks.push(served);
    Ok(tasks)
}

/// What an instance reading the events needs to hand them to their partitions' owners.
struct Reader {
    client: async_nats::Client,
    service: Token,
    owned: Option<Ownership>,
}

impl Reader {
    async fn react<R: Reactor>(&self, reactor: &R, delivery: &Delivery) {
        let stored = delivery.stored();
        let owner = self.owned.as_ref().and_then(|owned| owned.owner_elsewhere(aggregate_id(&stored.subject)));
        let reacted = match owner {
            Some(owner) => self.hand::<R>(&owner, &stored).await,
            None => None,
        };
        let reacted = match reacted {
            Some(reacted) => reacted,
            None => react(reactor, &stored).await,
        };
        match reacted {
            Reacted::Done => acknowledge(delivery).await,
            Reacted::Later(delay) => {
                let _ = delivery.retry_after(delay).await;
            }
        }
    }

    /// Hands `stored` to `owner`: what became of it, or `None` when the owner did not take it.
    async fn hand<R: Reactor>(&self, owner: &str, stored: &StoredMessage) -> Option<Reacted> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(headers::FORWARDED_SUBJECT, stored.subject.as_str());
        headers.insert(headers::SEQ, stored.seq.to_string().as_str());
        headers.insert(headers::RECEIVED_AT, stored.stored_at.millis().to_string().as_str());
        let subject = subject::owner(&self.service, owner, R::NAME);
        match handing::hand(&self.client, subject, headers, stored.payload.clone()).await {
            Handed::Done => Some(Reacted::Done),
            Handed::Again => Some(Reacted::Later(RETRY_AFTER)),
            Handed::Unanswered(why) => {
                tracing::debug!(reactor = R::NAME, owner, %why, "the owner of an event's partition did not take it; its effects are performed here");
                None
            }
        }
    }
}

/// Performs the effects of the events other instances read and handed to this one, the
/// owner of their partitions, until `shutdown`.
async fn take_handed<R: Reactor>(
    client: &async_nats::Client,
    subject: String,
    reactor: Arc<R>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let mut handed = client.subscribe(subject).await.map_err(|e| osp_eventlog::Error::Nats {
        operation: "take the events of owned partitions",
        source: Box::new(e),
    })?;
    let client = client.clone();
    Ok(tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(R::IN_FLIGHT));
        loop {
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = handed.next() => match message { Some(message) => message, None => break },
            };
            let Ok(slot) = slots.clone().acquire_owned().await else { break };
            let (Some(reader), Some(stored)) = (message.reply.clone(), handed_event(&message)) else {
                tracing::warn!(reactor = R::NAME, "a handed event cannot be read; its reader performs its effects");
                continue;
            };
            let (client, reactor) = (client.clone(), reactor.clone());
            tokio::spawn(async move {
                let done = matches!(react(&*reactor, &stored).await, Reacted::Done);
                handing::answer(&client, reader, done).await;
                drop(slot);
            });
        }
    }))
}

/// The event a handed message carries.
fn handed_event(message: &async_nats::Message) -> Option<StoredMessage> {
    let header = |name: &str| header(message.headers.as_ref(), name);
    Some(StoredMessage {
        seq: header(headers::SEQ)?.parse().ok()?,
        subject: header(headers::FORWARDED_SUBJECT)?,
        stored_at: Timestamp(header(headers::RECEIVED_AT)?.parse().ok()?),
        payload: message.payload.clone(),
    })
}

/// What became of an event's effects.
enum Reacted {
    Done,
    /// Not now: the event is handled again after this long.
    Later(Duration),
}

async fn react<R: Reactor>(reactor: &R, stored: &StoredMessage) -> Reacted {
    let event = match Recorded::<R::Event>::from_stored(stored) {
        Ok(event) => event,
        Err(error) => {
            // `osp log verify` names it; no effect can come of it.
            tracing::error!(reactor = R::NAME, seq = stored.seq, subject = %stored.subject, %error, "unreadable event; no effects");
            return Reacted::Done;
        }
    };
    if !reactor.ready(event.seq).await {
        tracing::warn!(reactor = R::NAME, seq = event.seq, "the state has not applied this event yet; effects later");
        return Reacted::Later(NOT_READY_RETRY);
    }
    let effects = match reactor.effects_of(&event).await {
        Ok(effects) => effects,
        Err(error) => {
            tracing::warn!(reactor = R::NAME, seq = event.seq, %error, "cannot read the state; effects later");
            return Reacted::Later(RETRY_AFTER);
        }
    };
    for effect in effects {
        if let Err(error) = reactor.perform(&event, &effect).await {
            let aggregate = &event.envelope.aggregate;
            tracing::warn!(reactor = R::NAME, %aggregate, ?effect, %error, "effect failed; the event will be handled again");
            return Reacted::Later(RETRY_AFTER);
        }
    }
    Reacted::Done
}

/// Serves the fired timers of `timers` with `handler` until `shutdown`.
pub(crate) async fn serve_timers<H: TimerHandler>(
    timers: &Timers,
    handler: Arc<H>,
    in_flight: usize,
    ack_wait: Duration,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let fired = timers.fired(ack_wait).await?;
    fired
        .serve("timers", in_flight, shutdown, move |delivery| {
            let handler = handler.clone();
            async move {
                if let Err(error) = handler.fire(delivery.payload(), delivery.stored_at()).await {
                    tracing::warn!(subject = delivery.subject(), %error, "fired timer not decided; it will be again");
                    let _ = delivery.retry_after(RETRY_AFTER).await;
                    return;
                }
                acknowledge(&delivery).await;
            }
        })
        .await
}

/// Acknowledges a message whose work is done; a lost acknowledgement only means the work
/// is done again, which changes nothing.
async fn acknowledge(delivery: &Delivery) {
    if let Err(error) = delivery.ack_idempotent().await {
        tracing::debug!(subject = delivery.subject(), %error, "could not acknowledge; handling it again changes nothing");
    }
}
