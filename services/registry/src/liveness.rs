//! Liveness: heartbeats in, transitions out.
//!
//! Agents publish heartbeats on `osp.v1.hb.<name>` with core NATS; nothing of a beat is
//! stored. Every registry instance hears every beat and keeps, in memory only, when it
//! last heard each agent. The log records only the transitions:
//! - an online agent that this instance has not heard for the timeout goes `entry.offline`;
//! - an offline agent that beats again comes `entry.online`.
//!
//! Both are ordinary decisions of the entry aggregate, so when every instance notices at
//! once exactly one transition is appended (optimistic concurrency), named after the
//! version it was decided on (`offline@7`) so a repeat is recognised. An offline decision
//! carries the `online_since` it was judged on: if the agent re-registered or came back
//! in between, it changes nothing. A restarted instance has heard nothing yet: it counts
//! every agent as heard at its own start, so it never marks an agent offline before a
//! whole timeout of silence.
//!
//! Heard times are monotonic (`Instant`), so a wall-clock step cannot make every agent
//! look silent at once; only `online_since`, a time on the log, is wall-clock.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use osp_protocol::registry::{EntryKey, EntryName, RegistryName, WentOffline, AGENTS};
use osp_protocol::{subject, AggregateRef, Timestamp};
use osp_runtime::{CommandMeta, Executor, Holds};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::entry::{Entry, EntryCommand};
use crate::view::RegistryView;

type Registry = Executor<Entry, RegistryView>;

/// When each agent was last heard, by this instance.
#[derive(Default)]
struct Heard {
    at: Mutex<HashMap<EntryName, Instant>>,
    /// Agents whose return online is being recorded, so a burst of beats records it once.
    returning: Mutex<HashSet<EntryName>>,
}

impl Heard {
    fn last(&self, name: &EntryName) -> Option<Instant> {
        self.at.lock().unwrap_or_else(|p| p.into_inner()).get(name).copied()
    }
}

/// Starts listening to heartbeats and sweeping for silent agents.
pub async fn start(
    client: &async_nats::Client,
    executor: Arc<Registry>,
    offline_after: Duration,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, async_nats::SubscribeError> {
    let heartbeats = client.subscribe(subject::ALL_HEARTBEATS).await?;
    let heard = Arc::new(Heard::default());
    let listen = tokio::spawn(listen(heartbeats, executor.clone(), heard.clone(), shutdown.clone()));
    let sweep = tokio::spawn(sweep(executor, heard, offline_after, shutdown));
    Ok(vec![listen, sweep])
}

async fn listen(
    mut heartbeats: async_nats::Subscriber,
    executor: Arc<Registry>,
    heard: Arc<Heard>,
    shutdown: CancellationToken,
) {
    let agents = RegistryName::new("registry", AGENTS).expect("valid name");
    loop {
        let beat = tokio::select! {
            () = shutdown.cancelled() => return,
            beat = heartbeats.next() => match beat { Some(beat) => beat, None => return },
        };
        let token = beat.subject.rsplit('.').next().unwrap_or_default();
        let Ok(name) = EntryName::new("name", token) else { continue };
        let aggregate = EntryKey { registry: agents.clone(), name: name.clone() }.aggregate();
        let version_if_offline = {
            let view = executor.projection().read();
            match view.folded(&aggregate) {
                // Beats of names that are not registered agents are not remembered:
                // anyone can publish, and memory must not grow with made-up names.
                Some(folded) if folded.state.is_agent() => (!folded.state.online).then_some(folded.head.version),
                _ => continue,
            }
        };
        heard.at.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone(), Instant::now());
        if let Some(version) = version_if_offline {
            if heard.returning.lock().unwrap_or_else(|p| p.into_inner()).insert(name.clone()) {
                let (executor, heard) = (executor.clone(), heard.clone());
                tokio::spawn(async move {
                    decide(&executor, &aggregate, EntryCommand::MarkOnline, format!("online@{version}")).await;
                    heard.returning.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
                });
            }
        }
    }
}

async fn sweep(executor: Arc<Registry>, heard: Arc<Heard>, offline_after: Duration, shutdown: CancellationToken) {
    let started = Instant::now();
    let mut ticks =
        tokio::time::interval((offline_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(1)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let online = executor.projection().read().online_agents();
        // Forget the agents that are gone (unregistered, or offline: a beat adds them back).
        let names: HashSet<&EntryName> = online.iter().map(|(name, ..)| name).collect();
        heard.at.lock().unwrap_or_else(|p| p.into_inner()).retain(|name, _| names.contains(name));
        for (name, aggregate, online_since, version) in online {
            // Checked one agent at a time, right before deciding: a beat heard while the
            // sweep decided on others counts.
            let Some(silent_for) = silence(heard.last(&name).unwrap_or(started), online_since) else { continue };
            if silent_for <= offline_after {
                continue;
            }
            let offline = WentOffline {
                silent_for_ms: silent_for.as_millis() as u64,
                timeout_ms: offline_after.as_millis() as u64,
            };
            let command = EntryCommand::MarkOffline { since: online_since, offline };
            decide(&executor, &aggregate, command, format!("offline@{version}")).await;
        }
    }
}

/// How long an agent has been silent: since this instance last heard it (or started), and
/// since it last registered or came back (a time on the log), whichever is shorter.
/// `None` when the log's time is ahead of this machine's clock (it just came online).
fn silence(last_heard: Instant, online_since: Timestamp) -> Option<Duration> {
    let heard = last_heard.elapsed();
    let since_online = u64::try_from(Timestamp::now().millis() - online_since.millis()).ok()?;
    Some(heard.min(Duration::from_millis(since_online)))
}

/// Takes a liveness decision like any command: the log decides who wins.
async fn decide(executor: &Registry, aggregate: &AggregateRef, command: EntryCommand, id: String) {
    let meta = CommandMeta {
        id,
        received_at: Timestamp::now(),
        actor: format!("service:{}", osp_protocol::registry::SERVICE),
        correlation_id: None,
    };
    let place = executor.queue(aggregate).await;
    match executor.execute(place, aggregate, &command, &meta).await {
        Ok(executed) if executed.appended > 0 => {
            tracing::info!(%aggregate, seq = executed.seq, transition = %meta.id, "agent liveness changed")
        }
        Ok(_) => {}
        Err(refusal) => tracing::warn!(%aggregate, ?refusal, "could not record a liveness transition; will retry"),
    }
}
