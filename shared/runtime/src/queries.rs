//! A service's queries: NATS micro-service endpoints over its projection.
//!
//! Each query is a core NATS request to `osp.v1.q.<service>.<query>`, answered by any
//! instance (queue group `q`) from its in-memory view, in the request's encoding, as an
//! `osp_protocol::Reply`. The service also answers the standard `$SRV.PING|INFO|STATS`
//! discovery, so `nats micro list` shows it; every instance's stats say how far its view
//! has applied the log ([`ViewProgress`]). An `Osp-Min-Seq` header makes the instance
//! wait (a few seconds at most) until it has applied the log that far.
//!
//! A query is asked by someone (`Osp-Actor`, a [`Caller`]); a service whose reads are
//! access-controlled answers with what the caller may see, and a query it refuses as
//! `forbidden` is recorded on the log like a refused command, so denied reads are audited.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::service::{Request, ServiceExt};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use osp_protocol::{headers, subject, Encoding, Error as ProtocolError, Reply, Token, CONTENT_TYPE, MAX_MESSAGE_BYTES};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::gather::{serve_parts, Gather, Gathering, Part};
use crate::inbound::header;
use crate::ownership::Share;
use crate::{Inbound, Projection, View};
use osp_eventlog::{Error, Result};

/// How long a query waits for its `Osp-Min-Seq` before answering `lagging`.
pub const MIN_SEQ_WAIT: Duration = Duration::from_secs(5);
/// Queries one instance lets wait for their `Osp-Min-Seq` at once; beyond that they are
/// answered `lagging` at once (the client asks again, maybe of another instance).
const MAX_WAITING: usize = 1024;

/// How far one instance's view has applied the log: the `data` of each of its endpoints
/// in its `$SRV.STATS` reply. Every instance answers `$SRV.STATS` (a query is answered by
/// one instance of the queue group), so this is how an operator sees each instance's lag.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewProgress {
    /// Every event the view reads up to this stream sequence is applied.
    pub applied: u64,
    /// The subjects of the events it reads: an event past `applied` on any other subject
    /// is not one it lags behind.
    pub reads: Vec<String>,
}

/// Who asks a query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `Osp-Actor`, or `anonymous`: a claim, as on commands (restrict who may publish
    /// what with NATS permissions).
    pub actor: String,
}

/// An encoded reply, and the error it carries (for the micro-service error headers).
pub(crate) type Encoded = (Vec<u8>, Option<ProtocolError>);
/// A query answered from the view at once.
type Now<V> = dyn Fn(&V, &Caller, u64, Encoding, &[u8]) -> Encoded + Send + Sync;
/// A query that awaits something besides the view (a read of the log, another service's
/// answer through the log), reading the view when it needs to.
type Later<V> = dyn Fn(Projection<V>, Caller, Encoding, Bytes) -> BoxFuture<'static, Encoded> + Send + Sync;

enum Answer<V> {
    Now(Arc<Now<V>>),
    Later(Arc<Later<V>>),
    /// Over every aggregate: gathered from every instance holding a share.
    Gathered(Gather<V>),
}

impl<V> Clone for Answer<V> {
    fn clone(&self) -> Self {
        match self {
            Answer::Now(answer) => Answer::Now(answer.clone()),
            Answer::Later(answer) => Answer::Later(answer.clone()),
            Answer::Gathered(gather) => Answer::Gathered(gather.clone()),
        }
    }
}

/// One query endpoint over view `V`.
pub struct Query<V> {
    name: &'static str,
    answer: Answer<V>,
}

/// What a query answers: a value to encode, or bytes already encoded in the request's
/// encoding (a service that keeps its answers encoded sends them as they are).
pub enum QueryResult<R> {
    /// Encoded here, in the request's encoding.
    Value(R),
    /// Already in the request's encoding.
    Encoded(Vec<u8>),
}

impl<V: View> Query<V> {
    /// The endpoint `name`: decodes a `Q` (an empty body reads as `{}`), answers with
    /// `run(view, q)`.
    pub fn new<Q, R, F>(name: &'static str, run: F) -> Query<V>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(&V, Q) -> Result<R, ProtocolError> + Send + Sync + 'static,
    {
        Query::encoded(name, move |view, query, _| run(view, query).map(QueryResult::Value))
    }

    /// The endpoint `name` over every aggregate of the view (a listing, a digest), which
    /// instances holding a share of the partitions answer together ([`crate::gather`]):
    /// `part` answers over the partitions of a [`Share`] the view holds (awaiting what it
    /// needs, reading the projection briefly), and `merge` makes one answer of the parts,
    /// each taken for some of the partitions (a part may hold more, which `merge` leaves
    /// out: [`Part::share`]). A view holding every aggregate answers with one part.
    pub fn gathered<Q, S, R, F, Fut, M>(name: &'static str, part: F, merge: M) -> Query<V>
    where
        Q: DeserializeOwned + Send + 'static,
        S: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize,
        F: Fn(Projection<V>, Share, Q) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, ProtocolError>> + Send + 'static,
        M: Fn(Q, Vec<Part<S>>) -> Result<R, ProtocolError> + Send + Sync + 'static,
    {
        Query { name, answer: Answer::Gathered(Gather::new(part, merge)) }
    }

    /// The endpoint `name`, whose `run` also sees who asks.
    pub fn asked<Q, R, F>(name: &'static str, run: F) -> Query<V>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(&V, &Caller, Q) -> Result<R, ProtocolError> + Send + Sync + 'static,
    {
        let answer = move |view: &V, caller: &Caller, seq: u64, encoding: Encoding, payload: &[u8]| {
            let result = decode_query::<Q>(encoding, payload).and_then(|query| run(view, caller, query));
            encode_result(encoding, seq, result.map(QueryResult::Value))
        };
        Query { name, answer: Answer::Now(Arc::new(answer)) }
    }

    /// The endpoint `name`, whose `run` sees the request's encoding and may answer with
    /// bytes already in it.
    pub fn encoded<Q, R, F>(name: &'static str, run: F) -> Query<V>
    where
        Q: DeserializeOwned,
        R: Serialize,
        F: Fn(&V, Q, Encoding) -> Result<QueryResult<R>, ProtocolError> + Send + Sync + 'static,
    {
        let answer = move |view: &V, _: &Caller, seq: u64, encoding: Encoding, payload: &[u8]| {
            let result = decode_query::<Q>(encoding, payload).and_then(|query| run(view, query, encoding));
            encode_result(encoding, seq, result)
        };
        Query { name, answer: Answer::Now(Arc::new(answer)) }
    }

    /// The endpoint `name`, whose `run` awaits something besides the view (a read of the
    /// log, another service's answer through the log) and reads the projection when it
    /// needs to (briefly: never holding it across an `.await`). The reply's `seq` is how
    /// far the view had applied the log when `run` started.
    pub fn deferred<Q, R, F, Fut>(name: &'static str, run: F) -> Query<V>
    where
        Q: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(Projection<V>, Caller, Q) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, ProtocolError>> + Send + 'static,
    {
        let run = Arc::new(run);
        let answer = move |projection: Projection<V>, caller: Caller, encoding: Encoding, payload: Bytes| {
            let run = run.clone();
            async move {
                let seq = projection.applied();
                let result = match decode_query::<Q>(encoding, &payload) {
                    Ok(query) => run(projection, caller, query).await,
                    Err(error) => Err(error),
                };
                encode_result(encoding, seq, result.map(QueryResult::Value))
            }
            .boxed()
        };
        Query { name, answer: Answer::Later(Arc::new(answer)) }
    }
}

/// The reply to a query's `result`, encoded.
pub(crate) fn encode_result<R: Serialize>(
    encoding: Encoding,
    seq: u64,
    result: Result<QueryResult<R>, ProtocolError>,
) -> Encoded {
    match result {
        Ok(QueryResult::Value(result)) => encode_reply(encoding, &Reply::Ok { seq, result }, None),
        Ok(QueryResult::Encoded(result)) => (osp_protocol::encode_ok_with(encoding, seq, &result), None),
        Err(error) => encode_reply::<R>(encoding, &Reply::Err { seq: None, error: error.clone() }, Some(error)),
    }
}

pub(crate) fn decode_query<Q: DeserializeOwned>(encoding: Encoding, payload: &[u8]) -> Result<Q, ProtocolError> {
    match (payload.is_empty(), encoding) {
        (true, Encoding::MessagePack) => encoding.decode(&[0x80]),
        (true, Encoding::Json) => encoding.decode(b"{}"),
        (false, _) => encoding.decode(payload),
    }
}

fn encode_reply<R: Serialize>(
    encoding: Encoding,
    reply: &Reply<R>,
    error: Option<ProtocolError>,
) -> (Vec<u8>, Option<ProtocolError>) {
    match encoding.encode(reply) {
        Ok(bytes) => (bytes, error),
        Err(failure) => {
            let reply = Reply::<()>::Err { seq: None, error: failure.clone() };
            (encoding.encode(&reply).unwrap_or_default(), Some(failure))
        }
    }
}

/// Starts the micro service `osp-<service>` with `queries` under `osp.v1.q.<service>`;
/// it answers until `shutdown`.
pub async fn serve_queries<V: View>(
    client: &async_nats::Client,
    service: &Token,
    version: &str,
    projection: Projection<V>,
    queries: Vec<Query<V>>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>> {
    let nats_error = |e: async_nats::Error| Error::Nats { operation: "start the query endpoints", source: e };
    let stats = projection.clone();
    let micro = client
        .service_builder()
        .description(format!("OSP {service} queries"))
        .stats_handler(move |_, _| {
            let progress = ViewProgress { applied: stats.applied(), reads: stats.filters().to_vec() };
            serde_json::to_value(progress).expect("plain data serialises")
        })
        .start(format!("osp-{service}"), version)
        .await
        .map_err(nats_error)?;
    let group = micro.group(subject::query_group(service));
    let gathered = queries
        .iter()
        .filter_map(|query| match &query.answer {
            Answer::Gathered(gather) => Some((query.name, gather.clone())),
            _ => None,
        })
        .collect();
    let mut tasks = serve_parts(client, service, &projection, gathered, &shutdown).await?;
    let serving = Arc::new(Serving {
        client: client.clone(),
        service: service.clone(),
        projection,
        waiters: Arc::new(Semaphore::new(MAX_WAITING)),
        reply_limit: client.server_info().max_payload.min(MAX_MESSAGE_BYTES).saturating_sub(REPLY_HEADROOM),
    });
    for query in queries {
        // Named by the query alone, so `nats micro stats` reads `find`, not the subject.
        let mut endpoint = group.endpoint_builder().name(query.name).add(query.name).await.map_err(nats_error)?;
        let (serving, shutdown, query) = (serving.clone(), shutdown.clone(), Arc::new(query));
        tasks.push(tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    () = shutdown.cancelled() => break,
                    request = endpoint.next() => match request { Some(request) => request, None => break },
                };
                // Each on its own task: one endpoint is not held to one core.
                let (serving, query) = (serving.clone(), query.clone());
                tokio::spawn(async move { serving.answer(&query, request).await });
            }
        }));
    }
    Ok(tokio::spawn(async move {
        futures::future::join_all(tasks).await;
        if let Err(error) = micro.stop().await {
            tracing::debug!(%error, "stopping the query endpoints");
        }
    }))
}

/// Room kept in a reply message for its headers.
const REPLY_HEADROOM: usize = 4 * 1024;

/// What every endpoint of a service answers from.
struct Serving<V> {
    client: async_nats::Client,
    service: Token,
    projection: Projection<V>,
    /// Places for queries waiting for their `Osp-Min-Seq`.
    waiters: Arc<Semaphore>,
    /// Largest reply body the server accepts.
    reply_limit: usize,
}

impl<V: View> Serving<V> {
    async fn answer(self: &Arc<Self>, query: &Query<V>, request: Request) {
        let message = &request.message;
        let inbound = Inbound::query(&message.subject, query.name, message.headers.as_ref(), message.payload.clone());
        let encoding = match inbound.check() {
            Ok(encoding) => encoding,
            Err(error) => {
                let encoding = inbound.reply_encoding();
                return self.respond(request, &inbound, encoding, failure(encoding, error)).await;
            }
        };
        let min_seq = match header(message.headers.as_ref(), headers::MIN_SEQ).map(|v| v.trim().parse::<u64>()) {
            None => 0,
            Some(Ok(seq)) => seq,
            Some(Err(_)) => {
                let error = ProtocolError::Invalid {
                    field: format!("{} header", headers::MIN_SEQ),
                    reason: "must be a log sequence (a whole number) from an earlier reply".into(),
                };
                return self.respond(request, &inbound, encoding, failure(encoding, error)).await;
            }
        };
        let caller = Caller { actor: inbound.actor.clone() };
        if let (Answer::Now(answer), true) = (&query.answer, self.projection.applied() >= min_seq) {
            // The sequence is read before the view, so the view holds at least what it says.
            let seq = self.projection.applied();
            let reply = answer(&self.projection.read(), &caller, seq, encoding, &inbound.payload);
            return self.respond(request, &inbound, encoding, reply).await;
        }
        // Waiting must not hold up the queries behind this one, nor pile up without bound.
        let Ok(waiting) = self.waiters.clone().try_acquire_owned() else {
            let error = ProtocolError::Lagging { wanted: min_seq, applied: self.projection.applied() };
            return self.respond(request, &inbound, encoding, failure(encoding, error)).await;
        };
        let (serving, answer, name) = (self.clone(), query.answer.clone(), query.name);
        tokio::spawn(async move {
            let _waiting = waiting;
            let projection = &serving.projection;
            let reply = match projection.wait_for(min_seq, MIN_SEQ_WAIT).await {
                Err(error) => failure(encoding, error),
                Ok(()) => match answer {
                    Answer::Now(answer) => {
                        answer(&projection.read(), &caller, projection.applied(), encoding, &inbound.payload)
                    }
                    Answer::Later(answer) => {
                        answer(projection.clone(), caller, encoding, inbound.payload.clone()).await
                    }
                    Answer::Gathered(gather) => {
                        let gathering =
                            Gathering { encoding, payload: inbound.payload.clone(), actor: caller.actor, min_seq };
                        match Token::new("query", name) {
                            Ok(name) => {
                                let subject = subject::gather(&serving.service, &name);
                                gather.answer(&serving.client, subject, projection.clone(), &gathering).await
                            }
                            Err(error) => failure(encoding, error),
                        }
                    }
                },
            };
            serving.respond(request, &inbound, encoding, reply).await
        });
    }

    async fn respond(&self, request: Request, inbound: &Inbound, encoding: Encoding, (body, error): Encoded) {
        // A reply the server would refuse is answered with why, not dropped.
        let (body, error) = match body.len() > self.reply_limit {
            true => {
                let error = ProtocolError::TooLarge { what: "reply".into(), size: body.len(), limit: self.reply_limit };
                tracing::warn!(%error, "a query's answer does not fit in one message");
                failure(encoding, error)
            }
            false => (body, error),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(CONTENT_TYPE, encoding.content_type());
        if let Some(error) = &error {
            // The standard micro-service error headers, so a NATS client sees the error
            // without reading the body (`nats micro stats` does not count these).
            let text: String = error.to_string().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            headers.insert(headers::SERVICE_ERROR, text.as_str());
            headers.insert(headers::SERVICE_ERROR_CODE, status_of(error).to_string().as_str());
        }
        if let Err(failure) = request.respond_with_headers(Ok(body.into()), headers).await {
            tracing::warn!(%failure, "could not answer a query");
        }
        if let Some(error @ ProtocolError::Forbidden { .. }) = &error {
            // A denied read is audited like a refused command.
            tracing::info!(%error, query = %inbound.subject, "query refused");
            let recorded = crate::rejection::record(self.projection.log(), &self.service, inbound, error, None).await;
            if let Err(failure) = recorded {
                tracing::warn!(%failure, "could not record a refused query");
            }
        }
    }
}

pub(crate) fn failure(encoding: Encoding, error: ProtocolError) -> (Vec<u8>, Option<ProtocolError>) {
    encode_reply::<()>(encoding, &Reply::Err { seq: None, error: error.clone() }, Some(error))
}

/// An HTTP-like status for the micro-service error header.
fn status_of(error: &ProtocolError) -> u16 {
    match error {
        ProtocolError::NotFound { .. } => 404,
        ProtocolError::Lagging { .. } | ProtocolError::Unavailable { .. } => 503,
        ProtocolError::Encode { .. } => 500,
        ProtocolError::TooLarge { .. } => 413,
        _ => 400,
    }
}
