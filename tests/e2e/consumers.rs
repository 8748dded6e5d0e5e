//! Shared durable consumers: explicit ack, nak with delay, in-progress, term, bounded
//! redelivery, and one message to one instance.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use osp_eventlog::{Deliveries, Delivery, WorkConfig, WorkConsumer, INBOX_STREAM};
use osp_tests::Harness;

async fn inbox_consumer(h: &Harness, max_deliver: i64, ack_wait: Duration) -> WorkConsumer {
    let config =
        WorkConfig { durable: "test-service".into(), filter: "osp.v1.in.test.>".into(), ack_wait, max_deliver };
    WorkConsumer::ensure(h.log.jetstream(), INBOX_STREAM, &config).await.unwrap()
}

async fn next(deliveries: &mut Deliveries, within: Duration) -> Option<Delivery> {
    match tokio::time::timeout(within, deliveries.next()).await {
        Ok(Some(Ok(delivery))) => Some(delivery),
        Ok(Some(Err(e))) => panic!("{e}"),
        Ok(None) => panic!("deliveries ended"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn nak_with_delay_in_progress_and_term_bound_the_redeliveries() {
    let h = Harness::start().await;
    let consumer = inbox_consumer(&h, 3, Duration::from_secs(1)).await;
    let mut deliveries = consumer.deliveries().await.unwrap();
    h.client.publish("osp.v1.in.test.cmd", "do it".into()).await.unwrap();

    let first = next(&mut deliveries, Duration::from_secs(5)).await.expect("first delivery");
    assert_eq!((first.attempt(), first.is_last_attempt()), (1, false));
    assert_eq!(first.payload(), b"do it");
    let asked = Instant::now();
    first.retry_after(Duration::from_millis(1500)).await.unwrap();

    let second = next(&mut deliveries, Duration::from_secs(5)).await.expect("redelivered after the delay");
    assert!(asked.elapsed() >= Duration::from_millis(1400), "not before the delay: {:?}", asked.elapsed());
    assert_eq!(second.attempt(), 2);
    // Still working: progress keeps it from being redelivered past the ack wait.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        second.in_progress().await.unwrap();
    }
    drop(second); // crash without answering: it comes back after the ack wait

    let third = next(&mut deliveries, Duration::from_secs(5)).await.expect("redelivered after ack wait");
    assert_eq!(third.attempt(), 3);
    assert!(third.is_last_attempt(), "max_deliver is 3");
    third.term().await.unwrap();
    assert!(next(&mut deliveries, Duration::from_secs(3)).await.is_none(), "terminated: never again");
}

#[tokio::test]
async fn instances_sharing_a_consumer_each_get_a_disjoint_share_and_acked_work_is_gone() {
    let h = Harness::start().await;
    let consumer = inbox_consumer(&h, 5, Duration::from_secs(30)).await;
    let total = 200;
    for i in 0..total {
        h.client.publish(format!("osp.v1.in.test.n{i}"), i.to_string().into()).await.unwrap();
    }
    h.client.flush().await.unwrap();

    let mut instances = Vec::new();
    for _ in 0..2 {
        let consumer = consumer.clone();
        instances.push(tokio::spawn(async move {
            let mut deliveries = consumer.deliveries().await.unwrap();
            let mut got = Vec::new();
            while let Some(delivery) = next(&mut deliveries, Duration::from_secs(2)).await {
                got.push(String::from_utf8(delivery.payload().to_vec()).unwrap());
                delivery.ack().await.unwrap();
            }
            got
        }));
    }
    let mut all = Vec::new();
    for instance in instances {
        all.extend(instance.await.unwrap());
    }
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), total, "each message handled once");
    assert_eq!(unique.len(), total);

    let stream = h.log.jetstream().get_stream(INBOX_STREAM).await.unwrap();
    assert_eq!(stream.cached_info().state.messages, 0, "acked commands leave the work queue");
}

#[tokio::test]
async fn a_delivery_reports_the_senders_encoding() {
    let h = Harness::start().await;
    let consumer = inbox_consumer(&h, 5, Duration::from_secs(30)).await;
    let mut deliveries = consumer.deliveries().await.unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/json");
    h.client.publish_with_headers("osp.v1.in.test.json", headers, "{}".into()).await.unwrap();
    let mut bad = async_nats::HeaderMap::new();
    bad.insert("Content-Type", "text/yaml");
    h.client.publish_with_headers("osp.v1.in.test.yaml", bad, "a: 1".into()).await.unwrap();

    let json = next(&mut deliveries, Duration::from_secs(5)).await.unwrap();
    assert_eq!(json.encoding().unwrap(), osp_protocol::Encoding::Json);
    let yaml = next(&mut deliveries, Duration::from_secs(5)).await.unwrap();
    assert!(yaml.encoding().unwrap_err().to_string().contains("text/yaml"));
}
