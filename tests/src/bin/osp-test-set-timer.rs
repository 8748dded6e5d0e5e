//! Test helper process: sets one durable timer, says "timer set", then waits to be
//! killed. Used to prove timers survive the death of the process that set them.
//!
//! Usage: osp-test-set-timer NATS_URL OWNER TIMER_ID DELAY_MS

use std::time::Duration;

use osp_eventlog::Timers;
use osp_protocol::{Timestamp, Token};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, owner, id, delay_ms] = args.as_slice() else {
        eprintln!("usage: osp-test-set-timer NATS_URL OWNER TIMER_ID DELAY_MS");
        std::process::exit(2);
    };
    let client = osp_tests::connect(url).await;
    let js = async_nats::jetstream::new(client);
    let timers = Timers::open(&js, Token::new("owner", owner.as_str()).unwrap()).await.unwrap();
    let delay: i64 = delay_ms.parse().expect("DELAY_MS is a number");
    let at = Timestamp(Timestamp::now().millis() + delay);
    timers.set(&Token::new("timer id", id.as_str()).unwrap(), at, "set by a process that died".into()).await.unwrap();
    println!("timer set");
    tokio::time::sleep(Duration::from_secs(3600)).await;
}
