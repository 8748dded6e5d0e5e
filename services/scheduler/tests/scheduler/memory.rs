//! Memory is bounded by the runs in hand, not by history: the scheduler binary's resident
//! memory after many runs, each with a 4 KB output, once the ended runs have left memory
//! (`--keep-finished`), is within 20% of the most it needed for the first ones.
//!
//! Sized for CI: a debug build on a machine busy with the other tests, where how many runs
//! are in hand at a moment varies, so the first figure is the highest reading while the
//! first runs go through, not one quiet moment after them. Kept in memory, the runs after
//! them would add about 10 KB each, far beyond the 20%. `osp bench scale` runs the full
//! size (release build, 200,000 runs) and prints the figures.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::{self, StreamExt};
use osp_protocol::scheduler::queries::{ListQuery, RunStatus};
use serde_json::json;
use tokio::sync::oneshot;

use crate::common::{client, eventually, register_agent, server, submission, worker};

/// Runs before the first reading, and after it.
const FIRST: u64 = 2_000;
const THEN: u64 = 8_000;
/// Runs submitted and not yet ended, at most.
const IN_FLIGHT: usize = 64;
const KEEP_FINISHED: &str = "1s";

/// A scheduler process, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    fn resident_kib(&self) -> u64 {
        resident_kib(self.0.id())
    }
}

/// The resident memory (`VmRSS`) of process `pid`, in KiB.
fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read the process status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("a VmRSS line");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("VmRSS in kB")
}

/// Run ids whose agent call is awaited.
type Waiting = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// Submits `count` runs named from `first`, at most [`IN_FLIGHT`] at a time (each slot
/// waits for its run's agent call), and returns once none is pending or in progress.
async fn runs(scheduler: &osp_client::Scheduler, waiting: &Waiting, first: u64, count: u64) {
    stream::iter(first..first + count)
        .for_each_concurrent(IN_FLIGHT, |n| async move {
            let id = format!("run-{n:07}");
            let (called, heard) = oneshot::channel();
            waiting.lock().unwrap().insert(id.clone(), called);
            scheduler.submit(&submission(&id, "bulk", json!({"n": n}), json!({}))).await.expect("submit");
            tokio::time::timeout(Duration::from_secs(60), heard).await.expect("the agent is called").unwrap();
        })
        .await;
    for status in [RunStatus::Pending, RunStatus::InProgress] {
        let open = ListQuery { status: Some(status), children: true, limit: Some(1), ..ListQuery::default() };
        eventually(Duration::from_secs(60), "every run to end", || async {
            scheduler.list(&open).await.unwrap().runs.is_empty()
        })
        .await;
    }
}

#[tokio::test]
async fn resident_memory_stays_flat_as_runs_end_and_leave_memory() {
    let server = server().await;
    let url = server.url();
    register_agent(&url, "bulk-agent", &["bulk"]).await;
    let scheduler = Process(
        Command::new(env!("CARGO_BIN_EXE_osp-scheduler"))
            .args(["--nats-url", &url, "--keep-finished", KEEP_FINISHED, "--snapshot-every", "off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start osp-scheduler"),
    );
    let client = client(&url).await;
    let runs_api = client.scheduler();
    eventually(Duration::from_secs(30), "the scheduler to answer", || async { runs_api.digest().await.is_ok() }).await;
    let waiting: Waiting = Arc::default();
    let _worker = {
        let waiting = waiting.clone();
        worker(&url, "bulk-agent", "bulk", IN_FLIGHT as u32, move |task| {
            if let Some(called) = waiting.lock().unwrap().remove(task.run_id()) {
                let _ = called.send(());
            }
            async move { Ok(json!({"n": task.input()["n"], "text": "o".repeat(4096)})) }
        })
        .await
    };

    let highest = Arc::new(AtomicU64::new(0));
    let sampling = {
        let (highest, pid) = (highest.clone(), scheduler.0.id());
        tokio::spawn(async move {
            loop {
                highest.fetch_max(resident_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    runs(&runs_api, &waiting, 0, FIRST).await;
    // Ended runs leave memory once kept for the grace period (the eviction runs each second).
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampling.abort();
    let first = highest.load(Ordering::Relaxed).max(scheduler.resident_kib());
    runs(&runs_api, &waiting, FIRST, THEN).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let then = scheduler.resident_kib();

    let digest = runs_api.digest().await.unwrap().result;
    assert_eq!(digest.runs, FIRST + THEN, "every run counts in the digest, in memory or not");
    let growth = then as f64 / first as f64;
    assert!(
        growth <= 1.2,
        "resident memory grew from {first} KiB after {FIRST} runs to {then} KiB after {} runs ({growth:.2}x)",
        FIRST + THEN
    );
    eprintln!("resident memory: {first} KiB after {FIRST} runs, {then} KiB after {} ({growth:.2}x)", FIRST + THEN);
}
