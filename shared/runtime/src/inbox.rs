//! A service's inbox: commands from any client, decided and answered.
//!
//! Every instance of a service binds to one durable consumer on
//! `osp.v1.in.<service>.>`; the server hands each command to one of them. A service may
//! keep several kinds of aggregate (the quality service: rules and audit entries), each
//! with its own [`CommandHandler`] and executor; the inbox routes each command to the
//! handler that takes its name (the subject's last token). For each command:
//!
//! 1. read its headers and payload, and parse it ([`CommandHandler::parse`]);
//! 2. decide and append ([`Executor::execute`]);
//! 3. if it was refused, record the refusal on the log;
//! 4. answer the sender on `Osp-Reply-To`, if given, in the command's encoding;
//! 5. acknowledge it — only now, with its outcome durable on the log.
//!
//! If the log cannot be reached the command is not acknowledged and comes back later;
//! on its last delivery it is recorded as refused (`unavailable`) instead, so nothing
//! a client sends disappears without a trace.
//!
//! When the instances hold shares of the partitions ([`crate::ownership`]), a command
//! read by an instance that does not own its aggregate's partition is handed to the owner
//! ([`crate::handing`]), which decides it from memory, records and answers as above, then
//! tells the reader, which acknowledges it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use osp_protocol::{subject, AggregateRef, Encoding, Error as ProtocolError, Reply, Token};
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use osp_eventlog::{Delivery, Error, EventLog, WorkConfig, WorkConsumer, INBOX_STREAM};

use crate::handing::{self, Handed};
use crate::ownership::Ownership;
use crate::{rejection, Aggregate, CommandMeta, Executed, Executor, Holds, Inbound, Place, Refusal};

/// What a service plugs into the inbox: how to read its commands and what to answer.
pub trait CommandHandler: Send + Sync + 'static {
    /// The aggregate its commands address.
    type Aggregate: Aggregate;
    /// The view it decides from.
    type View: Holds<Self::Aggregate>;
    /// The commands clients send: what the aggregate decides on, less the decisions a
    /// service takes by itself (a timeout, a liveness transition).
    type Command: Clone + Into<<Self::Aggregate as Aggregate>::Command> + Send + Sync;
    /// What an accepted command answers.
    type Outcome: Serialize + Send + Sync;

    /// The commands it takes: the last tokens of `osp.v1.in.<service>.<command>`.
    fn commands(&self) -> &'static [&'static str];

    /// Reads the command `inbound.command` (the inbox subject's last token) from
    /// `inbound.payload` in `encoding`: the aggregate it addresses and the command, or
    /// what is wrong with it. The headers (id, actor) are there for commands whose
    /// defaults come from them.
    fn parse(&self, inbound: &Inbound, encoding: Encoding) -> Result<(AggregateRef, Self::Command), ProtocolError>;

    /// Checks what the command's aggregate alone cannot know (another service's facts,
    /// read from the log: does any agent offer this capability?) and gives the command
    /// the aggregate decides, completed with such facts where the decision needs them
    /// (the definitions of the rules a check names), so that `decide` stays a pure
    /// function of the state and the command. Runs in the command's turn, before it is
    /// decided; an error refuses it like a refusal of `decide`.
    fn admit(
        &self,
        aggregate: &AggregateRef,
        command: &Self::Command,
    ) -> impl std::future::Future<Output = Result<<Self::Aggregate as Aggregate>::Command, ProtocolError>> + Send {
        let _ = aggregate;
        let decision = command.clone().into();
        async { Ok(decision) }
    }

    /// The correlation id of the events `command` causes (the root run it belongs to),
    /// if it has one.
    fn correlation_id(&self, aggregate: &AggregateRef, command: &Self::Command) -> Option<String> {
        let _ = (aggregate, command);
        None
    }

    /// The answer to an accepted `command`, from the state just after it (for a command
    /// applied before, the state after that first time).
    fn outcome(&self, command: &Self::Command, executed: &Executed<Self::Aggregate>) -> Self::Outcome;
}

/// Commands one instance works on at once (across aggregates; one at a time per
/// aggregate).
const IN_FLIGHT: usize = 64;
/// At shutdown, commands pulled but not started are handed back for this long at most.
const HAND_BACK_FOR: Duration = Duration::from_secs(1);
/// A handed-back command is delivered again after this delay: long enough that the
/// stopping instance, still pulling while it hands back, does not get it again.
const HAND_BACK_DELAY: Duration = Duration::from_secs(2);

/// The last token of the subject where an owner takes commands handed to it.
const HANDED_TO: &str = "inbox";

/// A command read and in line for its aggregate.
struct Parsed<H: CommandHandler> {
    aggregate: AggregateRef,
    command: H::Command,
    place: Place<H::Aggregate>,
}

/// One handler and the executor behind it, with their types hidden, so that one inbox
/// serves several kinds of aggregate.
trait Route: Send + Sync {
    /// Reads the command and takes its aggregate's place in line (called in arrival order),
    /// unless `may_hand` and another instance owns the aggregate's partition.
    fn parse<'a>(
        &'a self,
        inbound: &'a Inbound,
        encoding: Encoding,
        may_hand: bool,
    ) -> BoxFuture<'a, Result<Next, ProtocolError>>;

    /// The partitions its executor's view holds a share of, if it does.
    fn owned(&self) -> Option<Ownership>;
}

/// Where a command read goes next.
enum Next {
    /// Decided here, in its turn.
    Here(Box<dyn Turn>),
    /// Handed to this member, which owns its aggregate's partition.
    Owner(String),
}

/// A command holding its place in its aggregate's line, to be decided in its turn.
trait Turn: Send {
    fn decide(self: Box<Self>, inbound: &Inbound) -> BoxFuture<'_, Decided>;
}

/// What a command came to.
enum Decided {
    /// Accepted: its read-your-writes sequence and the reply, encoded as the sender asked.
    Accepted { seq: u64, appended: usize, reply: Result<Vec<u8>, ProtocolError> },
    /// The sender's fault: refused (and recorded), naming the aggregate it addressed.
    Refused(ProtocolError, Option<AggregateRef>),
    /// Ours: the log could not be reached.
    Failed(Error),
}

struct Handled<H: CommandHandler> {
    handler: Arc<H>,
    executor: Arc<Executor<H::Aggregate, H::View>>,
}

impl<H: CommandHandler> Route for Handled<H> {
    fn parse<'a>(
        &'a self,
        inbound: &'a Inbound,
        encoding: Encoding,
        may_hand: bool,
    ) -> BoxFuture<'a, Result<Next, ProtocolError>> {
        Box::pin(async move {
            let (aggregate, command) = self.handler.parse(inbound, encoding)?;
            let owner = may_hand.then(|| self.owned()).flatten();
            if let Some(owner) = owner.and_then(|owned| owned.owner_elsewhere(aggregate.id.as_str())) {
                return Ok(Next::Owner(owner));
            }
            let place = self.executor.queue(&aggregate).await;
            let parsed = Parsed::<H> { aggregate, command, place };
            Ok(Next::Here(Box::new(Turned { handler: self.handler.clone(), executor: self.executor.clone(), parsed })))
        })
    }

    fn owned(&self) -> Option<Ownership> {
        self.executor.projection().owned().cloned()
    }
}

struct Turned<H: CommandHandler> {
    handler: Arc<H>,
    executor: Arc<Executor<H::Aggregate, H::View>>,
    parsed: Parsed<H>,
}

impl<H: CommandHandler> Turn for Turned<H> {
    fn decide(self: Box<Self>, inbound: &Inbound) -> BoxFuture<'_, Decided> {
        Box::pin(async move {
            let Turned { handler, executor, parsed: Parsed { aggregate, command, place } } = *self;
            let meta = CommandMeta {
                id: inbound.id.clone(),
                received_at: inbound.received_at,
                actor: inbound.actor.clone(),
                correlation_id: handler.correlation_id(&aggregate, &command),
            };
            let executed = match handler.admit(&aggregate, &command).await {
                Ok(decision) => executor.execute(place, &aggregate, &decision, &meta).await,
                Err(error) => Err(Refusal::Rejected(error)),
            };
            match executed {
                Ok(executed) => {
                    let result = handler.outcome(&command, &executed);
                    let reply = inbound.reply_encoding().encode(&Reply::Ok { seq: executed.seq, result });
                    Decided::Accepted { seq: executed.seq, appended: executed.appended, reply }
                }
                Err(Refusal::Rejected(error)) => Decided::Refused(error, Some(aggregate)),
                Err(Refusal::Failed(error)) if inbound.last_attempt => {
                    let reason = format!("{error} (after {} deliveries)", inbound.attempt);
                    Decided::Refused(ProtocolError::Unavailable { reason }, Some(aggregate))
                }
                Err(Refusal::Failed(error)) => Decided::Failed(error),
            }
        })
    }
}

/// Hands back what was pulled but not started, so another instance takes it soon rather
/// than after the ack wait; bounded, since new commands keep arriving meanwhile.
async fn hand_back(deliveries: &mut osp_eventlog::Deliveries) {
    let until = Instant::now() + HAND_BACK_FOR;
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout_at(until, deliveries.next()).await {
        if let Err(error) = delivery.retry_after(HAND_BACK_DELAY).await {
            tracing::debug!(%error, "could not hand a command back; the ack wait will");
        }
    }
}
/// By default an instance has this long to answer a command before it goes to another:
/// how soon the commands a crashed instance held are taken up again.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(10);
/// Deliveries of one command before it is recorded as refused.
const MAX_DELIVER: i64 = 10;

/// A service's inbox, served until shutdown.
pub struct Inbox {
    service: Token,
    log: EventLog,
    /// The handler of each command, by its name.
    routes: HashMap<&'static str, Arc<dyn Route>>,
    /// Every command name, in the order the handlers were added: what an unknown
    /// command is told to use instead.
    known: Vec<&'static str>,
    ack_wait: Duration,
    counts: Arc<InboxCounts>,
}

/// What one instance's inbox has done, for operators and tests.
#[derive(Debug, Default)]
pub struct InboxCounts {
    accepted: AtomicU64,
    rejected: AtomicU64,
    handed: AtomicU64,
}

impl InboxCounts {
    /// Commands accepted by this instance.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Commands this instance refused (and recorded as refused).
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Commands this instance read and the owner of their partition decided.
    pub fn handed(&self) -> u64 {
        self.handed.load(Ordering::Relaxed)
    }
}

impl Inbox {
    /// The inbox of `service`, with no handler yet.
    pub fn new(service: Token, log: EventLog) -> Inbox {
        Inbox {
            service,
            log,
            routes: HashMap::new(),
            known: Vec::new(),
            ack_wait: DEFAULT_ACK_WAIT,
            counts: Arc::default(),
        }
    }

    /// Routes the commands `handler` takes to it, decided by `executor`.
    ///
    /// # Panics
    /// When another handler already takes one of them: a service's own wiring mistake.
    pub fn route<H: CommandHandler>(mut self, handler: H, executor: Arc<Executor<H::Aggregate, H::View>>) -> Inbox {
        let commands = handler.commands();
        let route: Arc<dyn Route> = Arc::new(Handled { handler: Arc::new(handler), executor });
        for command in commands {
            let taken = self.routes.insert(command, route.clone());
            assert!(taken.is_none(), "two handlers take the {} command {command:?}", self.service);
            self.known.push(command);
        }
        self
    }

    /// How long an instance has to answer a command before another gets it. The shared
    /// consumer takes the value of the instance that started last.
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Inbox {
        self.ack_wait = ack_wait;
        self
    }

    /// This instance's counts, live.
    pub fn counts(&self) -> Arc<InboxCounts> {
        self.counts.clone()
    }

    /// The durable consumer every instance of `service` shares.
    pub fn consumer_config(service: &Token, ack_wait: Duration) -> WorkConfig {
        WorkConfig {
            durable: format!("inbox-{service}"),
            filter: subject::inbox_of(service),
            ack_wait,
            max_deliver: MAX_DELIVER,
        }
    }

    /// Binds to the shared consumer and serves commands until `shutdown`; then finishes
    /// the commands in hand and hands back the ones not started.
    pub async fn serve(self, shutdown: CancellationToken) -> osp_eventlog::Result<JoinHandle<()>> {
        let consumer = WorkConsumer::ensure(
            self.log.jetstream(),
            INBOX_STREAM,
            &Self::consumer_config(&self.service, self.ack_wait),
        )
        .await?;
        let mut deliveries = consumer.deliveries().await?;
        let inbox = Arc::new(self);
        let handed = inbox.take_handed(&shutdown).await?;
        Ok(tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            let name = format!("inbox-{}", inbox.service);
            while let Some(delivery) = deliveries.next_until(&shutdown, &name).await {
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                // Read and queued here, in arrival order: commands on one aggregate are
                // then decided in the order they arrived, however the tasks run.
                let inbound = Inbound::read(&inbox.service, &delivery);
                let parsed = inbox.parse(&inbound, true).await;
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    inbox.handle(delivery, inbound, parsed).await;
                    drop(slot);
                });
            }
            let _all = slots.acquire_many(IN_FLIGHT as u32).await;
            hand_back(&mut deliveries).await;
            if let Some(handed) = handed {
                let _ = handed.await;
            }
        }))
    }

    /// Takes the commands other instances read for the partitions this instance owns,
    /// until `shutdown`, when the service's aggregates are shared out.
    async fn take_handed(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
    ) -> osp_eventlog::Result<Option<JoinHandle<()>>> {
        let Some(owned) = self.routes.values().find_map(|route| route.owned()) else { return Ok(None) };
        let subject = subject::owner(&self.service, owned.member(), HANDED_TO);
        let mut handed = self
            .log
            .client()
            .subscribe(subject)
            .await
            .map_err(|e| Error::Nats { operation: "take the commands of owned partitions", source: Box::new(e) })?;
        let (inbox, shutdown) = (self.clone(), shutdown.clone());
        Ok(Some(tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(IN_FLIGHT));
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break,
                    message = handed.next() => match message { Some(message) => message, None => break },
                };
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let Some(reader) = message.reply.clone() else { continue };
                let inbound = match Inbound::handed(&inbox.service, &message) {
                    Ok(inbound) => inbound,
                    Err(error) => {
                        tracing::warn!(%error, "a handed command cannot be read; its reader decides it");
                        continue;
                    }
                };
                // In arrival order, as the inbox does.
                let parsed = inbox.parse(&inbound, false).await;
                let inbox = inbox.clone();
                tokio::spawn(async move {
                    let done = match inbox.answer(&inbound, parsed).await {
                        Ok(Answered::Reply(answer)) => {
                            if let Some(reply_to) = inbound.reply_subject() {
                                inbox.reply(&inbound, reply_to, answer).await;
                            }
                            true
                        }
                        Ok(Answered::Elsewhere) => true,
                        Err(error) => {
                            tracing::warn!(%error, "a handed command not processed; its reader will have it delivered again");
                            false
                        }
                    };
                    handing::answer(inbox.log.client(), reader, done).await;
                    drop(slot);
                });
            }
        })))
    }

    /// Hands `inbound` to `owner`; decides it here if the owner does not answer.
    async fn hand(&self, inbound: &Inbound, owner: &str) -> Result<Answered, Error> {
        let subject = subject::owner(&self.service, owner, HANDED_TO);
        match handing::hand(self.log.client(), subject, inbound.handing(), inbound.payload.clone()).await {
            Handed::Done => {
                self.counts.handed.fetch_add(1, Ordering::Relaxed);
                Ok(Answered::Elsewhere)
            }
            Handed::Again => Err(Error::Unavailable {
                operation: "decide a command",
                reason: format!("the owner of its partition ({owner}) could not reach the log"),
            }),
            Handed::Unanswered(why) => {
                tracing::debug!(owner, %why, "the owner of a command's partition did not take it; deciding it here");
                let parsed = self.parse(inbound, false).await;
                Box::pin(self.answer(inbound, parsed)).await
            }
        }
    }

    /// Checks the headers and reads the command; takes its aggregate's place in line,
    /// unless `may_hand` and another instance owns its aggregate's partition.
    async fn parse(&self, inbound: &Inbound, may_hand: bool) -> Result<Next, ProtocolError> {
        let encoding = inbound.check()?;
        let route = self.routes.get(inbound.command.as_str()).ok_or_else(|| ProtocolError::UnknownCommand {
            command: inbound.command.clone(),
            service: self.service.to_string(),
            known: self.known.iter().map(|name| (*name).to_owned()).collect(),
        })?;
        route.parse(inbound, encoding, may_hand).await
    }

    async fn handle(&self, delivery: Delivery, inbound: Inbound, parsed: Result<Next, ProtocolError>) {
        let span = tracing::info_span!("command", service = %self.service, id = %inbound.id, subject = %inbound.subject,
            traceparent = inbound.traceparent.as_deref().unwrap_or(""));
        self.handle_in_span(delivery, inbound, parsed).instrument(span).await
    }

    async fn handle_in_span(&self, delivery: Delivery, inbound: Inbound, parsed: Result<Next, ProtocolError>) {
        let answer = {
            let work = self.answer(&inbound, parsed);
            tokio::pin!(work);
            // Still working (waiting for its turn, or for the log): keep the message
            // from going to another instance meanwhile.
            let every = (self.ack_wait / 3).max(Duration::from_millis(10));
            let mut progress = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                tokio::select! {
                    answer = &mut work => break answer,
                    _ = progress.tick() => {
                        if let Err(error) = delivery.in_progress().await {
                            tracing::debug!(%error, "could not report progress on a command");
                        }
                    }
                }
            }
        };
        let answer = match answer {
            Ok(Answered::Reply(answer)) => Some(answer),
            Ok(Answered::Elsewhere) => None,
            Err(error) if inbound.last_attempt => {
                // Not even the refusal could be recorded: still tell the sender.
                tracing::error!(%error, attempt = inbound.attempt, "command dropped after its last delivery: the log cannot be reached");
                let error = ProtocolError::Unavailable { reason: error.to_string() };
                Some(inbound.reply_encoding().encode(&Reply::<()>::Err { seq: None, error }))
            }
            Err(error) => {
                // Ours, not the sender's: leave it unacknowledged for a later delivery.
                let delay = Duration::from_secs(inbound.attempt.clamp(1, 10) as u64);
                tracing::warn!(%error, attempt = inbound.attempt, ?delay, "command not processed; it will be delivered again");
                if let Err(error) = delivery.retry_after(delay).await {
                    tracing::warn!(%error, "could not ask for redelivery; the ack wait will bring it back");
                }
                return;
            }
        };
        if let (Some(reply_to), Some(answer)) = (inbound.reply_subject(), answer) {
            self.reply(&inbound, reply_to, answer).await;
        }
        // Its outcome is on the log: a redelivery (a lost acknowledgement) finds it there
        // and is answered the same, so the acknowledgement need not be confirmed.
        if let Err(error) = delivery.ack_idempotent().await {
            tracing::warn!(%error, "could not acknowledge a command");
        }
    }

    /// Decides the command (or hands it to its partition's owner) and encodes its reply;
    /// an `Err` means "not now" (the log is unreachable).
    async fn answer(&self, inbound: &Inbound, parsed: Result<Next, ProtocolError>) -> Result<Answered, Error> {
        if inbound.attempt > 1 {
            if let Some((seq, error)) = rejection::recorded(&self.log, &self.service, inbound).await? {
                return Ok(Answered::Reply(refusal(inbound, seq, error)));
            }
        }
        let (error, target) = match parsed {
            Err(error) => (error, None),
            Ok(Next::Owner(owner)) => return self.hand(inbound, &owner).await,
            Ok(Next::Here(turn)) => match turn.decide(inbound).await {
                Decided::Accepted { seq, appended, reply } => {
                    self.counts.accepted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(seq, appended, "command accepted");
                    return Ok(Answered::Reply(reply));
                }
                Decided::Refused(error, target) => (error, target),
                Decided::Failed(error) => return Err(error),
            },
        };
        let seq = rejection::record(&self.log, &self.service, inbound, &error, target.as_ref()).await?;
        self.counts.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::info!(seq, %error, "command rejected");
        Ok(Answered::Reply(refusal(inbound, seq, error)))
    }

    async fn reply(&self, inbound: &Inbound, reply_to: &str, answer: Result<Vec<u8>, ProtocolError>) {
        let bytes = match answer {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%error, "cannot encode a reply");
                return;
            }
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(osp_protocol::CONTENT_TYPE, inbound.reply_encoding().content_type());
        // A sender with one subscription for many commands matches each reply to its command.
        headers.insert(osp_protocol::headers::COMMAND_ID, inbound.id.as_str());
        if let Err(error) = self.log.client().publish_with_headers(reply_to.to_owned(), headers, bytes.into()).await {
            tracing::warn!(%error, reply_to, "could not send the reply");
        }
    }
}

/// What became of a command.
enum Answered {
    /// Decided here: the reply to send, encoded.
    Reply(Result<Vec<u8>, ProtocolError>),
    /// Decided by the owner of its partition, which answered the sender.
    Elsewhere,
}

/// The refusal `error`, recorded at `seq`, encoded as the sender asked.
fn refusal(inbound: &Inbound, seq: u64, error: ProtocolError) -> Result<Vec<u8>, ProtocolError> {
    inbound.reply_encoding().encode(&Reply::<()>::Err { seq: Some(seq), error })
}
