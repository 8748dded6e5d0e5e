//! An `osp-context` process killed with SIGKILL while writes go on: every write is still
//! answered (the other instance takes over) and applied once, and a restarted instance
//! rebuilds the state every other holds, which is a fold of the log.

use std::time::Duration;

use futures::StreamExt;
use serde_json::json;

use crate::common::{client, eventually, server, spawn_context};
use crate::two_instances::folded_digest;

const WRITES: usize = 150;

#[tokio::test]
async fn kill_9_mid_writes_and_rebuild_to_the_same_state() {
    let server = server().await;
    let url = server.url();
    let (mut victim, _) = spawn_context(&url, "info").await;
    let (_survivor, _) = spawn_context(&url, "info").await;
    let ana = client(&url, "user:ana").await.with_timeout(Duration::from_secs(5));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sending = {
        let (ana, answered) = (ana.clone(), answered.clone());
        tokio::spawn(async move {
            futures::stream::iter(0..WRITES)
                .map(|i| {
                    let (ana, answered) = (ana.clone(), answered.clone());
                    async move {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        let body = json!({"scope": format!("session:s{}", i % 5), "key": format!("k{i}"), "value": i});
                        let id = format!("write-{i}");
                        for attempt in 1.. {
                            match ana.command_with_id::<_, serde_json::Value>("context", "set", &body, &id).await {
                                Ok(_) => break,
                                Err(error) if attempt < 10 => eprintln!("write {i} again after: {error}"),
                                Err(error) => panic!("write {i}: {error}"),
                            }
                        }
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                })
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await
        })
    };
    eventually(Duration::from_secs(120), "a third of the writes answered", || async {
        answered.load(std::sync::atomic::Ordering::Relaxed) >= WRITES / 3
    })
    .await;
    victim.start_kill().expect("SIGKILL");
    victim.wait().await.unwrap();
    sending.await.unwrap();

    let expected = folded_digest(&url).await;
    assert_eq!(expected.entries, WRITES as u64, "each write applied once");
    let (_restarted, _) = spawn_context(&url, "info").await;
    eventually(Duration::from_secs(10), "the log's state from an instance", || async {
        ana.context().digest().await.unwrap().result == expected
    })
    .await;
    for _ in 0..16 {
        assert_eq!(ana.context().digest().await.unwrap().result, expected, "every instance holds the log's state");
    }
}
