//! Two instances share the commands and serve consistent reads: the same digest as each
//! other and as a fold of the log, and a write made through one is read through either.

use std::time::Duration;

use osp_client::SearchBy;
use osp_context::view::ContextView;
use osp_eventlog::EventLog;
use osp_protocol::context::Embedding;
use osp_runtime::Projection;
use serde_json::json;

use crate::common::{client, context, eventually, server};

/// The state a fresh fold of the log reaches.
pub async fn folded_digest(url: &str) -> osp_protocol::context::queries::Digest {
    let log = EventLog::open(osp_tests::connect(url).await).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let filters = osp_context::KINDS.map(|kind| format!("osp.v1.evt.{kind}.*"));
    let filters = filters.each_ref().map(String::as_str);
    let folded = Projection::<ContextView>::start_on(&log, &filters, shutdown.clone()).await.unwrap();
    let digest = folded.read().digest().unwrap();
    shutdown.cancel();
    digest
}

#[tokio::test]
async fn two_instances_hold_the_same_state() {
    let server = server().await;
    let url = server.url();
    let (one, two) = (context(&url).await, context(&url).await);
    let ana = client(&url, "user:ana").await;
    let writes = (0..40).map(|i| {
        let context = ana.context();
        async move {
            context.set(&format!("session:s{}", i % 4), &format!("k{i:02}"), json!(i)).await.unwrap();
        }
    });
    futures::future::join_all(writes).await;
    let direction = |i: usize| vec![(i as f32 * 0.06).cos(), (i as f32 * 0.06).sin()];
    let vectors: Vec<Embedding> = (0..50)
        .map(|i| Embedding { id: format!("e{i}"), content: String::new(), metadata: None, vector: direction(i) })
        .collect();
    ana.context().upsert_embeddings("global", &vectors).await.unwrap();
    ana.context().remove("session:s1", "k01").await.unwrap();

    let expected = folded_digest(&url).await;
    assert_eq!((expected.entries, expected.embeddings), (39, 50));
    eventually(Duration::from_secs(10), "both instances at the log's state", || async {
        one.digest().unwrap() == expected && two.digest().unwrap() == expected
    })
    .await;
    // Reads after a write, through whichever instance answers, see it (read-your-writes).
    for i in 0..20 {
        let key = format!("fresh{i}");
        ana.context().set("session:s9", &key, json!(i)).await.unwrap();
        assert_eq!(ana.context().get("session:s9", &key).await.unwrap().unwrap().value, json!(i));
        let found = ana.context().search("global", SearchBy::Vector(direction(49)), 1, None).await.unwrap();
        assert_eq!(found.matches[0].id, "e49");
    }
    assert_eq!(one.commands().accepted() + two.commands().accepted(), 40 + 1 + 1 + 20);
    one.shutdown().await;
    two.shutdown().await;
}
