//! Two `osp-quality` processes share ~200 checks; one is killed with SIGKILL mid-load.
//! Every check is still answered, recorded exactly once, and a restarted instance
//! rebuilds the state every other holds, which is a fold of the log.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use osp_eventlog::EventLog;
use osp_protocol::quality::AuditEntry;
use osp_quality::view::QualityView;
use osp_runtime::Projection;
use serde_json::json;

use crate::common::{add_three, client, digest, eventually, recorded_audits, server, spawn_quality, THREE};

const CHECKS: usize = 200;

/// The output of check `i`: a mix of passes and failures.
fn output(i: usize) -> serde_json::Value {
    match i % 4 {
        0 => json!({"summary": format!("item {i}"), "score": 0.5}),
        1 => json!({"summary": format!("ITEM NUMBER {i}"), "score": 0.5}),
        2 => json!({"score": 0.5}),
        _ => json!({"summary": format!("item {i}"), "score": 2}),
    }
}

#[tokio::test]
async fn kill_9_one_of_two_with_checks_in_flight() {
    let server = server().await;
    let url = server.url();
    let mut instances = vec![spawn_quality(&url).await, spawn_quality(&url).await];
    let client = client(&url).await.with_timeout(Duration::from_secs(8));
    add_three(&client).await;

    let answered = Arc::new(AtomicUsize::new(0));
    let sending = {
        let (client, answered) = (client.clone(), answered.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..CHECKS)
                .map(|i| {
                    let (client, answered) = (client.clone(), answered.clone());
                    async move {
                        // Paced, so the kill lands with most checks still to come.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let body = json!({"auditId": format!("k-{i:03}"), "output": output(i), "rules": THREE});
                        // A check in the killed instance's hands times out; the same command
                        // again (same id) is taken up by the other.
                        let id = format!("check-{i}");
                        let mut attempt = 0;
                        let entry = loop {
                            attempt += 1;
                            match client.command_with_id::<_, AuditEntry>("quality", "check", &body, &id).await {
                                Ok(answer) => break answer.result,
                                Err(error) if attempt < 10 => eprintln!("check {i} again after: {error}"),
                                Err(error) => panic!("check {i}: {error}"),
                            }
                        };
                        answered.fetch_add(1, Ordering::Relaxed);
                        entry
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await
        })
    };

    eventually(Duration::from_secs(120), "a third of the checks answered", || async {
        answered.load(Ordering::Relaxed) >= CHECKS / 3
    })
    .await;
    let mut victim = instances.remove(0);
    victim.start_kill().expect("SIGKILL");
    let at_kill = answered.load(Ordering::Relaxed);
    assert!(at_kill < CHECKS, "the kill must land mid-load ({at_kill} of {CHECKS} answered)");
    victim.wait().await.unwrap();
    let entries = sending.await.unwrap();
    assert_eq!(entries.len(), CHECKS);

    // Each check recorded exactly once, as answered.
    let recorded = recorded_audits(&url).await;
    assert_eq!(recorded.len(), CHECKS);
    let twice: Vec<_> = recorded.iter().filter(|(_, audits)| audits.len() != 1).map(|(id, _)| id).collect();
    assert!(twice.is_empty(), "recorded more than once: {twice:?}");
    for entry in &entries {
        assert_eq!(&recorded[&entry.id][0].entry, entry, "the answer is the recorded entry");
    }

    // A restarted instance rebuilds the state of the other and of a fold of the log.
    instances.push(spawn_quality(&url).await);
    let log = EventLog::open(osp_tests::connect(&url).await).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let filters = ["osp.v1.evt.rule.*", "osp.v1.evt.audit.*"];
    let folded = Projection::<QualityView>::start_on(&log, &filters, shutdown.clone()).await.unwrap();
    let expected = folded.read().digest().unwrap();
    assert_eq!((expected.rules, expected.audits), (3, CHECKS as u64));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..24 {
        // Queries go to either instance; each answers after applying what the client saw.
        let answer = digest(&client).await;
        assert!(answer.applied >= expected.applied.min(client.seen()));
        seen.insert(answer.digest);
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![expected.digest], "every instance holds the log's state");
    shutdown.cancel();
}
