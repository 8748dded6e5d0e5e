//! A search by text: the service asks an agent with the `embed` capability for the text's
//! vector through the task machinery, as any submitter would. It submits a run
//! (`osp.v1.in.scheduler.submit`, as `service:context`) and follows that run's events on
//! the log (`osp.v1.evt.run.<run_id>`, an ordered consumer) until it ends. It never asks
//! the scheduler a query: services talk through the log and the inboxes only.
//!
//! The run's output is the vector: `{"vector": [...]}` or the list itself.

use std::time::Duration;

use futures::StreamExt;
use osp_eventlog::{EventLog, LogItem, Recorded, Start};
use osp_protocol::context::EMBED_CAPABILITY;
use osp_protocol::registry::document::from_json;
use osp_protocol::scheduler::{Command, OnTimeout, RunEvent, RunOptions, Submit, Timeout, RUN_KIND};
use osp_protocol::{headers, subject, AggregateRef, Encoding, Error, InboxCommand, Reply, Token, CONTENT_TYPE};

/// Turns texts into vectors through runs of the `embed` capability.
#[derive(Clone, Debug)]
pub struct Embedder {
    log: EventLog,
    /// How long a search waits for the run to end.
    pub timeout: Duration,
}

/// The actor of the runs the service submits.
const ACTOR: &str = "service:context";
/// Longest text embedded.
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

impl Embedder {
    /// An embedder submitting through `log`'s connection, waiting `timeout` for each run.
    pub fn new(log: EventLog, timeout: Duration) -> Embedder {
        Embedder { log, timeout }
    }

    /// The vector of `text`, and the run that made it.
    pub async fn embed(&self, text: &str) -> Result<(Vec<f32>, String), Error> {
        osp_protocol::check_size("text", text.len(), MAX_TEXT_BYTES)?;
        let run_id = format!("embed-{}", uuid::Uuid::now_v7().simple());
        match tokio::time::timeout(self.timeout, self.run(&run_id, text)).await {
            Ok(outcome) => outcome.map(|vector| (vector, run_id)),
            Err(_) => Err(Error::Invalid {
                field: "text".into(),
                reason: format!(
                    "was not embedded within {:?}: run {run_id} of the {EMBED_CAPABILITY} capability has not ended (is an agent with it running?)",
                    self.timeout
                ),
            }),
        }
    }

    async fn run(&self, run_id: &str, text: &str) -> Result<Vec<f32>, Error> {
        let unavailable = |what: &str, e: &dyn std::fmt::Display| Error::Unavailable { reason: format!("{what}: {e}") };
        let aggregate = AggregateRef::new(RUN_KIND, run_id)?;
        // Following before submitting: the run's first event cannot be missed.
        let mut events = self
            .log
            .follow::<Recorded<RunEvent>>(&aggregate.subject(), Start::All)
            .await
            .map_err(|e| unavailable("follow the embed run", &e))?;
        let client = self.log.client();
        let reply_to = client.new_inbox();
        let mut replies = client.subscribe(reply_to.clone()).await.map_err(|e| unavailable("subscribe", &e))?;
        let submit = Command::Submit(Submit {
            run_id: aggregate.id.clone(),
            capability: Some(Token::new("capability", EMBED_CAPABILITY)?),
            workflow: None,
            parent: None,
            input: from_json(&serde_json::json!({ "text": text })),
            options: RunOptions {
                timeout: Some(Timeout { ms: self.timeout.as_millis() as u64, on_timeout: OnTimeout::Fail }),
                ..RunOptions::default()
            },
            metadata: None,
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(CONTENT_TYPE, Encoding::Json.content_type());
        headers.insert(headers::COMMAND_ID, run_id);
        headers.insert(headers::ACTOR, ACTOR);
        headers.insert(headers::REPLY_TO, reply_to.as_str());
        let inbox = subject::inbox(&Token::new("service", Command::SERVICE)?, &Token::new("command", submit.name())?);
        let payload = Encoding::Json.encode(&submit)?;
        self.log
            .jetstream()
            .publish_with_headers(inbox, headers, payload.into())
            .await
            .map_err(|e| unavailable("submit the embed run", &e))?
            .await
            .map_err(|e| unavailable("store the embed run's submit", &e))?;
        let reply =
            replies.next().await.ok_or_else(|| unavailable("wait for the scheduler", &"the subscription ended"))?;
        let encoding =
            Encoding::from_content_type(reply.headers.as_ref().and_then(|h| h.get(CONTENT_TYPE)).map(|v| v.as_str()))?;
        if let Reply::Err { error, .. } = encoding.decode::<Reply<serde_json::Value>>(&reply.payload)? {
            // The scheduler's refusal speaks to whoever submits (`set options.waitForAgent`);
            // the searcher submitted nothing, and is told what it can do.
            return Err(match error {
                Error::NotFound { field, .. } if field == "capability" => Error::NotFound {
                    field: "capability".into(),
                    value: EMBED_CAPABILITY.into(),
                    reason: format!(
                        "a search by text needs an agent with the {EMBED_CAPABILITY} capability, and no registered \
                         agent offers it: start one (shared/client/examples/embedder.rs is one), or search by vector"
                    ),
                },
                other => unavailable("the scheduler refused the embed run", &other),
            });
        }
        while let Some(item) = events.next().await {
            let event = match item.map_err(|e| unavailable("follow the embed run", &e))? {
                LogItem::Event(event) => event,
                LogItem::Malformed(bad) => return Err(unavailable("read the embed run", &bad.error)),
                LogItem::CaughtUp(_) => continue,
            };
            let failed = |why: String| Error::Invalid {
                field: "text".into(),
                reason: format!("could not be embedded: run {run_id} {why}"),
            };
            match event.envelope.payload {
                RunEvent::Completed(completed) => {
                    return vector_of(&osp_protocol::json::from_msgpack_value(&completed.output)).map_err(failed)
                }
                RunEvent::Failed(failed_run) => return Err(failed(format!("failed: {}", failed_run.error))),
                RunEvent::Cancelled(cancelled) => return Err(failed(format!("was cancelled: {}", cancelled.reason))),
                _ => {}
            }
        }
        Err(unavailable("follow the embed run", &"the subscription ended"))
    }
}

/// The vector in an embed run's output: `{"vector": [...]}` or the list itself.
fn vector_of(output: &serde_json::Value) -> Result<Vec<f32>, String> {
    let list = output.get("vector").unwrap_or(output);
    let items = list.as_array().ok_or_else(|| "gave no vector (expected {\"vector\": [numbers]})".to_owned())?;
    items
        .iter()
        .map(|item| {
            item.as_f64().map(|x| x as f32).ok_or_else(|| format!("gave a vector holding {item}, not a number"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_is_read_from_either_shape() {
        assert_eq!(vector_of(&serde_json::json!({"vector": [1, 0.5]})), Ok(vec![1.0, 0.5]));
        assert_eq!(vector_of(&serde_json::json!([0.25])), Ok(vec![0.25]));
        assert!(vector_of(&serde_json::json!({"v": 1})).unwrap_err().contains("no vector"));
        assert!(vector_of(&serde_json::json!(["x"])).unwrap_err().contains("not a number"));
    }
}
