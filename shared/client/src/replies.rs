//! One reply subscription per connection, shared by every command sent on it.
//!
//! A command names where its reply goes (`Osp-Reply-To`). Subscribing to a fresh inbox
//! per command costs a subscribe and an unsubscribe that the server propagates: at
//! thousands of commands a second, a measurable share of the server's work. Instead the
//! client subscribes once to `<inbox prefix>.*`, gives each command its own token under
//! it, and hands each reply to the command waiting on that token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::oneshot;

use crate::{Error, Result};

/// Commands waiting for their reply, by token.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<async_nats::Message>>>>;

/// The shared reply subscription of one connection.
#[derive(Debug)]
pub(crate) struct Replies {
    prefix: String,
    waiting: Waiting,
}

/// One command's place among the waiting: its reply subject, and the reply when it comes.
/// Dropping it (a timeout) forgets the command, so a late reply is dropped too.
pub(crate) struct Awaited {
    /// Where the reply goes.
    pub subject: String,
    token: String,
    reply: oneshot::Receiver<async_nats::Message>,
    waiting: Waiting,
}

impl Replies {
    /// Subscribes to the connection's reply prefix and starts handing out replies.
    pub async fn start(nats: &async_nats::Client) -> Result<Replies> {
        let prefix = nats.new_inbox();
        let mut subscription =
            nats.subscribe(format!("{prefix}.*")).await.map_err(|e| Error::nats("subscribe to the reply inbox", e))?;
        let waiting: Waiting = Arc::default();
        let handing = waiting.clone();
        let cut = prefix.len() + 1;
        tokio::spawn(async move {
            while let Some(reply) = subscription.next().await {
                let token = reply.subject.as_str().get(cut..).unwrap_or_default();
                if let Some(waiter) = lock(&handing).remove(token) {
                    let _ = waiter.send(reply);
                }
            }
            // The connection is gone: every waiting command learns it at once.
            lock(&handing).clear();
        });
        Ok(Replies { prefix, waiting })
    }

    /// A new command's place: register before publishing, so no reply can be missed.
    pub fn expect(&self) -> Awaited {
        let token = uuid::Uuid::now_v7().simple().to_string();
        let (send, reply) = oneshot::channel();
        lock(&self.waiting).insert(token.clone(), send);
        Awaited { subject: format!("{}.{token}", self.prefix), token, reply, waiting: self.waiting.clone() }
    }
}

impl Awaited {
    /// The reply, or `None` when the connection closed first.
    pub async fn reply(&mut self) -> Option<async_nats::Message> {
        (&mut self.reply).await.ok()
    }
}

impl Drop for Awaited {
    fn drop(&mut self) {
        lock(&self.waiting).remove(&self.token);
    }
}

fn lock(waiting: &Waiting) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<async_nats::Message>>> {
    waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
