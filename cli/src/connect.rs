//! Connecting to NATS the way every command does, with errors that say what to do.

use std::time::Duration;

use anyhow::{anyhow, Context};
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

/// An OSP client on `url` acting as the person at the keyboard (`user:$USER`, else
/// `user:cli`), so the log says who registered or removed what.
pub async fn osp_client(url: &str) -> anyhow::Result<osp_client::Client> {
    Ok(osp_client::Client::new(client(url).await?).with_actor(operator_actor()))
}

/// The person at the keyboard as an actor: `user:$USER`, else `user:cli`.
pub fn operator_actor() -> String {
    let user = std::env::var("USER").ok().filter(|user| !user.is_empty());
    format!("user:{}", user.as_deref().unwrap_or("cli"))
}

/// `error` from a call to a service, with what to do when the service is not there: no
/// instance answered, or the server lacks the OSP streams. Either way the usual cause is
/// that nothing of OSP was started against this server.
pub fn service_error(error: osp_client::Error) -> anyhow::Error {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    let hint = match &error {
        osp_client::Error::NoResponders { service, .. } | osp_client::Error::Timeout { service, stored: true, .. } => {
            format!("start `osp dev`, or run `osp-{service}` against this NATS server")
        }
        osp_client::Error::Nats { source, .. }
            if source.downcast_ref::<PublishError>().is_some_and(|e| e.kind() == PublishErrorKind::StreamNotFound) =>
        {
            "this NATS server has no OSP streams: start `osp dev`, or an OSP service, against it".to_owned()
        }
        _ => return error.into(),
    };
    anyhow!("{error}; {hint}")
}
