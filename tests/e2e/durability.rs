//! The server is killed (SIGKILL) and restarted while appends are in flight: every
//! acknowledged event survives, nothing is stored twice, the chains stay intact.

use std::collections::BTreeMap;
use std::time::Duration;

use osp_eventlog::{EventLog, Head};
use osp_protocol::subject::ALL_EVENTS;
use osp_tests::{added, counter, CounterEvent, Harness};

/// Appends to `aggregates` counters round-robin until `stop`; returns the event ids the
/// server acknowledged, per aggregate, in order.
async fn write_until(
    log: EventLog,
    aggregates: usize,
    stop: tokio::sync::watch::Receiver<bool>,
) -> BTreeMap<String, Vec<uuid::Uuid>> {
    let mut heads = vec![Head::EMPTY; aggregates];
    let mut acked: BTreeMap<String, Vec<uuid::Uuid>> = BTreeMap::new();
    let mut i = 0u64;
    while !*stop.borrow() {
        let slot = (i % aggregates as u64) as usize;
        let name = format!("k{slot}");
        let agg = counter(&name);
        let event = added(1, &format!("{name}-cmd-{i}"));
        let id = event.id;
        match log.append(&agg, &heads[slot], vec![event]).await {
            Ok(appended) => {
                heads[slot] = appended.head;
                acked.entry(name).or_default().push(id);
                i += 1;
            }
            // Not acknowledged (the server was down too long, or an unacknowledged
            // earlier attempt did land): learn the true head and go on. The event may
            // or may not be stored; only acknowledged ones are promised.
            Err(e) => {
                tracing::info!("append not acknowledged: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                if let Ok(loaded) = log.load::<CounterEvent>(&agg).await {
                    heads[slot] = loaded.head;
                }
                i += 1;
            }
        }
    }
    acked
}

#[tokio::test]
async fn killing_and_restarting_the_server_mid_append_loses_no_acknowledged_event() {
    let mut h = Harness::start().await;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(write_until(h.second_writer().await, 4, stop_rx));

    for round in 0..2 {
        while h.log.last_sequence().await.unwrap_or(0) < 100 * (round + 1) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        h.server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        h.server.restart().await.unwrap();
    }
    // Let the writer make progress on the restarted server, then stop it.
    let target = h.log.last_sequence().await.unwrap() + 50;
    while h.log.last_sequence().await.unwrap_or(0) < target {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop_tx.send(true).unwrap();
    let acked = writer.await.unwrap();

    for (name, ids) in &acked {
        let stored = h.log.load::<CounterEvent>(&counter(name)).await.unwrap();
        let stored_ids: Vec<uuid::Uuid> = stored.events.iter().map(|e| e.envelope.id).collect();
        let mut unique = stored_ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), stored_ids.len(), "{name}: an event was stored twice");
        for id in ids {
            assert!(stored_ids.contains(id), "{name}: acknowledged event {id} was lost");
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(total > 250, "the writer kept going across restarts ({total} acknowledged)");
    let report = h.log.verify(ALL_EVENTS, |_, _| {}).await.unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}
