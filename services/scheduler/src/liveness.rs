//! Liveness of the agents holding attempts: task heartbeats in, failed attempts out.
//!
//! Agents publish heartbeats on `osp.v1.task.<run_id>.heartbeat` with core NATS; nothing
//! of a beat is stored. Every instance hears every beat and keeps, in memory only, when
//! it last heard each held attempt. A sweep fails an attempt whose agent this instance
//! has not heard for the run's heartbeat timeout, or that the registry has marked
//! offline since it started the attempt. All instances sweep; the decision is named the
//! same on each (`heartbeat-lost:<run>:<attempt>`), so it is recorded once. A restarted
//! instance counts every held attempt as heard at its own start: it never fails one
//! before a whole timeout of silence.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use osp_protocol::scheduler::{heartbeat_run, ALL_TASK_HEARTBEATS};
use osp_protocol::Timestamp;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commands::RunCommand;
use crate::shell::Shell;

/// How often held attempts are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// When this instance last heard each run's agent, and about which attempt (0 when the
/// beat did not say).
type Heard = Arc<Mutex<HashMap<String, (u32, Instant)>>>;

/// What a heartbeat may say; anything else in it is ignored.
#[derive(serde::Deserialize)]
struct Beat {
    #[serde(default)]
    attempt: u32,
}

/// Starts listening and sweeping.
pub async fn start(
    client: &async_nats::Client,
    shell: Arc<Shell>,
    shutdown: CancellationToken,
) -> Result<Vec<JoinHandle<()>>, async_nats::SubscribeError> {
    let mut beats = client.subscribe(ALL_TASK_HEARTBEATS).await?;
    let heard: Heard = Arc::default();
    let listen = {
        let heard = heard.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let beat = tokio::select! {
                    () = shutdown.cancelled() => return,
                    beat = beats.next() => beat,
                };
                let Some(beat) = beat else { return };
                if let Some(run_id) = heartbeat_run(beat.subject.as_str()) {
                    let attempt = serde_json::from_slice::<Beat>(&beat.payload).map_or(0, |beat| beat.attempt);
                    lock(&heard).insert(run_id.to_owned(), (attempt, Instant::now()));
                }
            }
        })
    };
    let sweep = tokio::spawn(sweep(shell, heard, shutdown));
    Ok(vec![listen, sweep])
}

fn lock(heard: &Heard) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
    heard.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn sweep(shell: Arc<Shell>, heard: Heard, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Decisions under way, so a slow one is not started again at every tick.
    let deciding: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    // When this instance first saw each held attempt.
    let mut seen: HashMap<String, (u32, Instant)> = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let now = Instant::now();
        let mut lost = Vec::new();
        {
            let view = shell.runs.read();
            let agents = shell.agents.read();
            let mut heard = lock(&heard);
            heard.retain(|run_id, _| view.holds(run_id));
            seen.retain(|run_id, _| view.holds(run_id));
            for (run_id, held) in view.held() {
                // Counted from when this instance first saw the attempt held (a restart, a
                // new attempt), or from the last beat about this attempt. A beat about
                // another attempt (a leftover agent) does not keep this one alive.
                let since = seen.entry(run_id.clone()).or_insert((held.attempt, now));
                if since.0 != held.attempt {
                    *since = (held.attempt, now);
                }
                let beat = heard.get(run_id).filter(|(attempt, _)| *attempt == held.attempt || *attempt == 0);
                let last = beat.map_or(since.1, |(_, at)| (*at).max(since.1));
                let silent = now.duration_since(last);
                if agents.offline_since(&held.agent).is_some_and(|since| since > held.started_at) {
                    let command = RunCommand::AgentOffline { attempt: held.attempt, agent: held.agent.clone() };
                    lost.push((run_id.clone(), command, format!("agent-offline:{run_id}:{}", held.attempt)));
                } else if silent > Duration::from_millis(held.heartbeat_timeout_ms) {
                    let silent_ms = silent.as_millis() as u64;
                    let command =
                        RunCommand::HeartbeatLost { attempt: held.attempt, agent: held.agent.clone(), silent_ms };
                    lost.push((run_id.clone(), command, format!("heartbeat-lost:{run_id}:{}", held.attempt)));
                }
            }
        }
        for (run_id, command, command_id) in lost {
            if !deciding.lock().unwrap_or_else(|p| p.into_inner()).insert(command_id.clone()) {
                continue;
            }
            let shell = shell.clone();
            let deciding = deciding.clone();
            tokio::spawn(async move {
                // A failure is decided again at the next sweep.
                let _ = shell.decide(&run_id, command, command_id.clone(), Timestamp::now()).await;
                deciding.lock().unwrap_or_else(|p| p.into_inner()).remove(&command_id);
            });
        }
    }
}
