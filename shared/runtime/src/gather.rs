//! Queries over every aggregate of a view whose instances each hold a share of the
//! partitions ([`crate::ownership`]): a *gather*.
//!
//! The instance a client's query reaches (any one, through the queue group) asks every
//! instance of its service at once on `osp.v1.gather.<service>.<query>` (a plain
//! subscription on each, no queue group), itself included. Each answers with its *part*:
//! the answer over the partitions its view holds all of, and which those are. Once the
//! parts cover every partition, each partition is taken from one part (the first to cover
//! it: while a partition moves, two instances may hold it for a moment) and the query's
//! merge makes one answer of them ([`crate::Query::gathered`]). While some partition is
//! not covered (it is moving, or being taken in), the instances are asked again every
//! quarter second; parts that do not cover every partition within [`GATHER_WAIT`] make
//! the answer `unavailable`, naming what is missing. A part refused for a reason that is
//! not the moment's (a bad argument) is the answer at once.
//!
//! Each instance answers once it has applied the log as far as the instance asked had (or
//! as the client's `Osp-Min-Seq` says, if further), so the parts are as fresh as a single
//! instance's answer would be; the answer's `seq` is the least of theirs.
//!
//! A view that holds every aggregate answers the same query with one part, over one
//! partition, merged alike: one code path whether or not the service is partitioned.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use osp_protocol::{headers, subject, Encoding, Error as ProtocolError, Partitions, Reply, Token, CONTENT_TYPE};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::inbound::header;
use crate::ownership::Share;
use crate::queries::{encode_result, failure, Encoded, QueryResult, MIN_SEQ_WAIT};
use crate::{Projection, View};
use osp_eventlog::{Error, Result};

/// How long a gather waits for parts covering every partition: each instance may wait
/// [`MIN_SEQ_WAIT`] to catch up first.
pub const GATHER_WAIT: Duration = Duration::from_millis(MIN_SEQ_WAIT.as_millis() as u64 + 500);
/// How often the instances are asked again while some partition is not covered (one
/// moving to another instance, or being taken in).
const ASK_AGAIN: Duration = Duration::from_millis(250);

/// One instance's part of a gathered answer.
pub struct Part<S> {
    /// What the instance answered over the partitions it held.
    pub value: S,
    /// The partitions this part is taken for. `value` may hold more (partitions it shared
    /// with another part while they moved), which the merge leaves out.
    pub share: Share,
    /// How far the instance had applied the log.
    pub applied: u64,
}

/// A part on the wire: MessagePack, inside a [`Reply`].
#[derive(Serialize, Deserialize)]
struct PartReply<S> {
    applied: u64,
    /// How many partitions it shares the aggregates out in: a part of another count (an
    /// instance started with another `--partitions`) is not taken.
    partitions: u32,
    /// The partitions it holds every aggregate of.
    held: Vec<u32>,
    part: S,
}

/// What the instance gathering reads of a part before it is merged.
#[derive(Deserialize)]
struct PartHead {
    partitions: u32,
    held: Vec<u32>,
}

/// A part as taken: for which partitions, and its encoded reply.
type Taken = (Share, Bytes);
/// Answers a part: the projection, the request's encoding and payload; the encoded reply.
type PartFn<V> = dyn Fn(Projection<V>, Encoding, Bytes) -> BoxFuture<'static, Vec<u8>> + Send + Sync;
/// Merges the parts taken into the answer, in the request's encoding.
type MergeFn = dyn Fn(Encoding, &[u8], Vec<Taken>) -> Encoded + Send + Sync;

/// A gathered query's two halves, with their types erased.
pub(crate) struct Gather<V> {
    part: Arc<PartFn<V>>,
    merge: Arc<MergeFn>,
}

impl<V> Clone for Gather<V> {
    fn clone(&self) -> Self {
        Gather { part: self.part.clone(), merge: self.merge.clone() }
    }
}

impl<V: View> Gather<V> {
    pub(crate) fn new<Q, S, R, F, Fut, M>(part: F, merge: M) -> Gather<V>
    where
        Q: DeserializeOwned + Send + 'static,
        S: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize,
        F: Fn(Projection<V>, Share, Q) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<S, ProtocolError>> + Send + 'static,
        M: Fn(Q, Vec<Part<S>>) -> Result<R, ProtocolError> + Send + Sync + 'static,
    {
        let part = Arc::new(part);
        let answer_part = move |projection: Projection<V>, encoding: Encoding, payload: Bytes| {
            let part = part.clone();
            async move {
                // Read before the part is taken, so the part holds at least this much.
                let (applied, before) = (projection.applied(), projection.share());
                let reply = match crate::queries::decode_query::<Q>(encoding, &payload) {
                    Ok(query) => part(projection.clone(), before.clone(), query).await,
                    Err(error) => Err(error),
                };
                // A partition that moved away while the part was taken may be missing from it.
                let held = before.and(&projection.share()).iter().collect();
                let partitions = before.partitions().count();
                let reply = match reply {
                    Ok(part) => Reply::Ok { seq: applied, result: PartReply { applied, partitions, held, part } },
                    Err(error) => Reply::Err { seq: None, error },
                };
                Encoding::MessagePack.encode(&reply).unwrap_or_else(|error| {
                    Encoding::MessagePack.encode(&Reply::<()>::Err { seq: None, error }).unwrap_or_default()
                })
            }
            .boxed()
        };
        let merge = move |encoding: Encoding, payload: &[u8], taken: Vec<Taken>| {
            let parts = taken
                .into_iter()
                .map(|(share, bytes)| match Encoding::MessagePack.decode::<Reply<PartReply<S>>>(&bytes)? {
                    Reply::Ok { result, .. } => Ok(Part { value: result.part, share, applied: result.applied }),
                    Reply::Err { error, .. } => Err(error),
                })
                .collect::<Result<Vec<_>, ProtocolError>>();
            let seq = parts.as_ref().ok().and_then(|parts| parts.iter().map(|part| part.applied).min()).unwrap_or(0);
            let merged = parts.and_then(|parts| {
                let query = crate::queries::decode_query::<Q>(encoding, payload)?;
                merge(query, parts)
            });
            encode_result(encoding, seq, merged.map(QueryResult::Value))
        };
        Gather { part: Arc::new(answer_part), merge: Arc::new(merge) }
    }

    /// The answer to a client's query: from this instance alone when its view holds every
    /// aggregate, else gathered from every instance (each caught up to `min_seq` at least).
    pub(crate) async fn answer(
        &self,
        client: &async_nats::Client,
        subject: String,
        projection: Projection<V>,
        request: &Gathering,
    ) -> Encoded {
        let Some(owned) = projection.owned() else {
            let part = (self.part)(projection.clone(), request.encoding, request.payload.clone()).await;
            return (self.merge)(
                request.encoding,
                &request.payload,
                vec![(Share::whole(Partitions::ONE), part.into())],
            );
        };
        let min_seq = request.min_seq.max(projection.applied());
        match collect(client, subject, owned.partitions(), request, min_seq).await {
            Ok(taken) => (self.merge)(request.encoding, &request.payload, taken),
            Err(error) => failure(request.encoding, error),
        }
    }
}

/// A client's query to gather.
pub(crate) struct Gathering {
    pub encoding: Encoding,
    pub payload: Bytes,
    pub actor: String,
    pub min_seq: u64,
}

/// Asks every instance on `subject` and takes parts until they cover every partition.
async fn collect(
    client: &async_nats::Client,
    subject: String,
    partitions: Partitions,
    request: &Gathering,
    min_seq: u64,
) -> Result<Vec<Taken>, ProtocolError> {
    let unavailable = |reason: String| ProtocolError::Unavailable { reason };
    let inbox = client.new_inbox();
    let mut answers =
        client.subscribe(inbox.clone()).await.map_err(|e| unavailable(format!("gather the parts: {e}")))?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(CONTENT_TYPE, request.encoding.content_type());
    headers.insert(headers::MIN_SEQ, min_seq.to_string().as_str());
    headers.insert(headers::ACTOR, request.actor.as_str());
    let ask = || async {
        client
            .publish_with_reply_and_headers(subject.clone(), inbox.clone(), headers.clone(), request.payload.clone())
            .await
            .map_err(|e| unavailable(format!("ask for the parts: {e}")))
    };
    ask().await?;
    let deadline = tokio::time::Instant::now() + GATHER_WAIT;
    // Each instance answers once per asking: a partition still being taken in when it
    // answered is asked for again.
    let mut again = tokio::time::interval_at(tokio::time::Instant::now() + ASK_AGAIN, ASK_AGAIN);
    let mut taken: Vec<Taken> = Vec::new();
    let mut covered = vec![false; partitions.count() as usize];
    // Each asking may bring the same refusal again: said once.
    let mut refusals: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    while covered.iter().any(|covered| !covered) {
        let answer = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            _ = again.tick() => {
                ask().await?;
                continue;
            }
            answer = answers.next() => match answer { Some(answer) => answer, None => break },
        };
        match Encoding::MessagePack.decode::<Reply<PartHead>>(&answer.payload) {
            Ok(Reply::Ok { result, .. }) if result.partitions != partitions.count() => {
                refusals.insert(format!(
                    "an instance shares the aggregates out in {} partitions, not {partitions}: every instance must be started with the same --partitions",
                    result.partitions
                ));
            }
            Ok(Reply::Ok { result, .. }) => {
                let new: Vec<u32> =
                    result.held.into_iter().filter(|p| !covered.get(*p as usize).unwrap_or(&true)).collect();
                if new.is_empty() {
                    continue;
                }
                for p in &new {
                    covered[*p as usize] = true;
                }
                taken.push((Share::new(partitions, new), answer.payload));
            }
            // Every instance would refuse it alike.
            Ok(Reply::Err { error, .. }) if !error.is_transient() => return Err(error),
            Ok(Reply::Err { error, .. }) => {
                refusals.insert(error.to_string());
            }
            Err(error) => {
                refusals.insert(format!("an unreadable part: {error}"));
            }
        }
    }
    let missing: Vec<u32> = partitions.all().filter(|p| !covered[*p as usize]).collect();
    if missing.is_empty() {
        return Ok(taken);
    }
    let mut reason = format!(
        "no instance answered within {:?} for {} of the {} partitions ({}); they may be moving to another instance (--partitions)",
        GATHER_WAIT,
        missing.len(),
        partitions,
        listed(&missing)
    );
    if !refusals.is_empty() {
        let refusals: Vec<String> = refusals.into_iter().collect();
        reason.push_str(&format!("; parts refused: {}", refusals.join("; ")));
    }
    Err(unavailable(reason))
}

/// The first few of `partitions`, for a message.
fn listed(partitions: &[u32]) -> String {
    const SHOWN: usize = 8;
    let mut text = partitions.iter().take(SHOWN).map(u32::to_string).collect::<Vec<_>>().join(", ");
    if partitions.len() > SHOWN {
        text.push_str(", …");
    }
    text
}

/// Answers this instance's part of every gathered query until `shutdown`, when its view
/// holds a share: `gathered` lists each query's name and how it answers a part.
pub(crate) async fn serve_parts<V: View>(
    client: &async_nats::Client,
    service: &Token,
    projection: &Projection<V>,
    gathered: Vec<(&'static str, Gather<V>)>,
    shutdown: &CancellationToken,
) -> Result<Vec<JoinHandle<()>>> {
    let mut tasks = Vec::new();
    if projection.owned().is_none() {
        // An instance holding every aggregate answers whole queries alone, and takes no part.
        return Ok(tasks);
    }
    for (name, gather) in gathered {
        let query = Token::new("query", name)
            .map_err(|e| Error::Unavailable { operation: "answer parts of gathered queries", reason: e.to_string() })?;
        let subject = subject::gather(service, &query);
        let mut asked = client
            .subscribe(subject)
            .await
            .map_err(|e| Error::Nats { operation: "answer parts of gathered queries", source: e.into() })?;
        let (client, projection, shutdown) = (client.clone(), projection.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => break,
                    message = asked.next() => match message { Some(message) => message, None => break },
                };
                let (client, projection, part) = (client.clone(), projection.clone(), gather.part.clone());
                tokio::spawn(async move { answer_part(&client, projection, &part, message).await });
            }
        }));
    }
    Ok(tasks)
}

async fn answer_part<V: View>(
    client: &async_nats::Client,
    projection: Projection<V>,
    part: &Arc<PartFn<V>>,
    message: async_nats::Message,
) {
    let Some(reply_to) = message.reply.clone() else { return };
    let header = |name: &str| header(message.headers.as_ref(), name);
    let encoding = Encoding::from_content_type(header(CONTENT_TYPE).as_deref());
    let min_seq = header(headers::MIN_SEQ).and_then(|seq| seq.parse::<u64>().ok()).unwrap_or(0);
    let reply = match encoding {
        Err(error) => failure(Encoding::MessagePack, error).0,
        Ok(encoding) => match projection.wait_for(min_seq, MIN_SEQ_WAIT).await {
            Err(error) => failure(Encoding::MessagePack, error).0,
            Ok(()) => part(projection, encoding, message.payload.clone()).await,
        },
    };
    if let Err(error) = client.publish(reply_to, reply.into()).await {
        tracing::debug!(%error, "could not send a part of a gathered query");
    }
}
