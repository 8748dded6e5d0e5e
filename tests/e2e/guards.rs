//! The log is append-only: the server refuses to delete, purge or roll it up.

use async_nats::jetstream::message::PublishMessage;
use osp_eventlog::{Head, EVENTS_STREAM};
use osp_tests::{added, counter, Harness};

#[tokio::test]
async fn deleting_purging_or_rolling_up_the_event_log_through_the_api_fails() {
    let h = Harness::start().await;
    let agg = counter("guarded");
    h.log.append(&agg, &Head::EMPTY, vec![added(1, "a")]).await.unwrap();
    let js = h.log.jetstream();
    let stream = js.get_stream(EVENTS_STREAM).await.unwrap();

    let deleted = stream.delete_message(1).await;
    assert!(deleted.is_err(), "deleting an event must fail: {deleted:?}");
    let purged = stream.purge().await;
    assert!(purged.is_err(), "purging the log must fail: {purged:?}");
    let purged_subject = stream.purge().filter(agg.subject()).await;
    assert!(purged_subject.is_err(), "purging one aggregate must fail: {purged_subject:?}");
    let rollup = js
        .send_publish(agg.subject(), PublishMessage::build().payload("x".into()).header("Nats-Rollup", "sub"))
        .await
        .unwrap()
        .await;
    assert!(rollup.is_err(), "a rollup must be refused: {rollup:?}");

    // Nor can the guard be switched off by updating the stream.
    let mut config = stream.cached_info().config.clone();
    config.deny_delete = false;
    config.deny_purge = false;
    assert!(js.update_stream(config).await.is_err(), "the guard cannot be turned off");

    assert_eq!(h.log.last_sequence().await.unwrap(), 1);
    assert_eq!(h.log.load::<osp_tests::CounterEvent>(&agg).await.unwrap().events.len(), 1);
}

#[tokio::test]
async fn applying_the_definitions_again_is_harmless() {
    let h = Harness::start().await;
    h.log.append(&counter("x"), &Head::EMPTY, vec![added(1, "a")]).await.unwrap();
    let js = h.log.jetstream();
    for _ in 0..2 {
        osp_eventlog::Definitions::builtin().apply(js).await.unwrap();
    }
    assert_eq!(h.log.last_sequence().await.unwrap(), 1);
}
