//! Connecting to NATS the way every command does, with errors that say what to do.

use std::time::Duration;

use anyhow::Context;
use osp_eventlog::EventLog;

/// Connects to `url` and opens the event log (the streams must exist: `osp dev` or any
/// service creates them).
pub async fn event_log(url: &str) -> anyhow::Result<EventLog> {
    let client = client(url).await?;
    let log = EventLog::open(client).await.with_context(|| format!("opening the OSP event log on {url}"))?;
    Ok(log)
}

/// A NATS connection to `url`, failing fast with a hint when nothing listens there.
pub async fn client(url: &str) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .name("osp-cli")
        .connect(url)
        .await
        .with_context(|| {
            format!("cannot connect to NATS at {url}: start one with `osp dev`, or point OSP_NATS_URL / --nats-url at yours")
        })
}
