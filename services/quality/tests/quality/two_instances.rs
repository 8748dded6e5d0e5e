//! Two instances share the commands and end with the same state: the same digest as
//! each other and as a fold of the log.

use std::time::Duration;

use osp_eventlog::EventLog;
use osp_protocol::quality::AuditEntry;
use osp_quality::view::QualityView;
use osp_runtime::Projection;
use serde_json::json;

use crate::common::{add_three, client, command, digest, eventually, quality, server, THREE};

#[tokio::test]
async fn two_instances_hold_the_same_state() {
    let server = server().await;
    let url = server.url();
    let (one, two) = (quality(&url).await, quality(&url).await);
    let client = client(&url).await;
    add_three(&client).await;
    let checks = (0..40).map(|i| {
        let client = client.clone();
        async move {
            let body = json!({"auditId": format!("t-{i:02}"), "output": {"summary": "s".repeat(i), "score": i as f64 / 20.0}, "rules": THREE});
            command::<AuditEntry>(&client, "check", &body).await.unwrap().seq
        }
    });
    let last = futures::future::join_all(checks).await.into_iter().max().unwrap();
    command::<serde_json::Value>(&client, "remove_rule", &json!({"name": "no-shouting"})).await.unwrap();

    let log = EventLog::open(osp_tests::connect(&url).await).await.unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let filters = ["osp.v1.evt.rule.*", "osp.v1.evt.audit.*"];
    let folded = Projection::<QualityView>::start_on(&log, &filters, shutdown.clone()).await.unwrap();
    let expected = folded.read().digest().unwrap();
    assert_eq!((expected.rules, expected.audits), (2, 40));
    assert!(expected.applied > last);
    eventually(Duration::from_secs(10), "both instances at the log's state", || async {
        one.digest().unwrap() == expected && two.digest().unwrap() == expected
    })
    .await;
    assert_eq!(digest(&client).await, expected, "the query answers the same");
    assert_eq!(one.commands().accepted() + two.commands().accepted(), 3 + 40 + 1);
    shutdown.cancel();
    one.shutdown().await;
    two.shutdown().await;
}
