//! Durable timers: fire at their time, can be replaced or cancelled, and survive the
//! death of the process that set them (and a server restart).

use std::process::Stdio;
use std::time::Duration;

use osp_eventlog::{fired_timer_id, Deliveries, Timers};
use osp_protocol::{Timestamp, Token};
use osp_tests::Harness;
use tokio::io::{AsyncBufReadExt, BufReader};

fn token(s: &str) -> Token {
    Token::new("timer id", s).unwrap()
}

/// Waits for the next fired timer; returns (id, payload, when it arrived).
async fn next_fired(fired: &mut Deliveries, within: Duration) -> Option<(String, Vec<u8>, Timestamp)> {
    let delivery = match tokio::time::timeout(within, fired.next()).await {
        Ok(Some(Ok(delivery))) => delivery,
        Ok(other) => panic!("timer consumer failed: {other:?}"),
        Err(_) => return None,
    };
    let arrived = Timestamp::now();
    delivery.ack().await.unwrap();
    Some((fired_timer_id(delivery.subject()).to_owned(), delivery.payload().to_vec(), arrived))
}

#[tokio::test]
async fn a_timer_fires_once_not_before_its_time_and_can_be_replaced_or_cancelled() {
    let h = Harness::start().await;
    let timers = Timers::open(h.log.jetstream(), token("scheduler")).await.unwrap();
    let mut fired = timers.fired(Duration::from_secs(30)).await.unwrap().deliveries().await.unwrap();

    let at = Timestamp(Timestamp::now().millis() + 1500);
    timers.set(&token("t-replaced"), at, "first".into()).await.unwrap();
    timers.set(&token("t-replaced"), at, "second".into()).await.unwrap();
    timers.set(&token("t-cancelled"), at, "never".into()).await.unwrap();
    timers.cancel(&token("t-cancelled")).await.unwrap();
    timers.cancel(&token("t-unknown")).await.unwrap();

    let (id, payload, arrived) = next_fired(&mut fired, Duration::from_secs(10)).await.expect("the timer fires");
    assert_eq!((id.as_str(), payload.as_slice()), ("t-replaced", &b"second"[..]));
    assert!(arrived >= at, "fired at {arrived}, due at {at}");
    assert!(
        next_fired(&mut fired, Duration::from_secs(3)).await.is_none(),
        "replaced and cancelled timers stay silent"
    );
}

#[tokio::test]
async fn a_timer_set_by_a_process_that_is_then_killed_still_fires() {
    let mut h = Harness::start().await;
    // Another process sets the timer, says so, and is killed with SIGKILL.
    let mut setter = tokio::process::Command::new(env!("CARGO_BIN_EXE_osp-test-set-timer"))
        .args([h.server.url().as_str(), "scheduler", "t-orphan", "3000"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the timer-setting process");
    let mut lines = BufReader::new(setter.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap();
    assert_eq!(line.as_deref(), Some("timer set"));
    setter.start_kill().unwrap();
    setter.wait().await.unwrap();

    // The server restarts too before the timer is due; the schedule is in its store.
    h.server.kill();
    h.server.restart().await.unwrap();

    let client = osp_tests::connect(&h.server.url()).await;
    let timers = Timers::open(&async_nats::jetstream::new(client), token("scheduler")).await.unwrap();
    let mut fired = timers.fired(Duration::from_secs(30)).await.unwrap().deliveries().await.unwrap();
    let (id, payload, _) = next_fired(&mut fired, Duration::from_secs(15)).await.expect("the orphaned timer fires");
    assert_eq!((id.as_str(), payload.as_slice()), ("t-orphan", &b"set by a process that died"[..]));
}
