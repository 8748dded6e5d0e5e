//! The services check: for each service, the instances that answer and how far each one's
//! view is behind the log.
//!
//! Every instance answers the micro-service discovery `$SRV.STATS.osp-<service>` with
//! its [`ViewProgress`] (protocol.md §15): the sequence it has applied and the subjects
//! it reads. An instance is behind when the log holds an event on those subjects after
//! what it applied; how long ago that event was stored tells catching up from stuck.

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::stream;
use async_nats::StatusCode;
use futures::StreamExt;
use osp_protocol::{context, quality, registry, scheduler};
use osp_runtime::ViewProgress;

use super::{age, ago, bounded, count, first_from, Check, RETRY};

/// The services of a deployment, in the order they are reported.
const SERVICES: [&str; 4] = [registry::SERVICE, scheduler::SERVICE, quality::SERVICE, context::SERVICE];
/// How long the first instance has to answer: they answer at once when they run.
const FIRST_WITHIN: Duration = Duration::from_secs(2);
/// After an answer, how long to wait for another instance's.
const NEXT_WITHIN: Duration = Duration::from_millis(300);
/// An instance whose oldest unapplied event is older than this has stopped following the
/// log; a view applies far more events a second than any deployment appends, so one
/// merely busy is behind for moments only.
const STUCK_AFTER: Duration = Duration::from_secs(10);

fn name(service: &str) -> String {
    format!("service {service}")
}

/// A line per service, skipped `because`.
pub(super) fn skipped(because: &str) -> Vec<Check> {
    SERVICES.iter().map(|service| Check::skip(name(service), because)).collect()
}

/// A line per service; `events` is the event log's stream, when it exists. The services
/// are asked at once: each waits a moment for its instances to answer.
pub(super) async fn check(client: &async_nats::Client, events: Option<&stream::Stream>) -> Vec<Check> {
    let checks = SERVICES.iter().map(|service| async move {
        let name = name(service);
        bounded(&name, presence(client, service, events)).await
    });
    futures::future::join_all(checks).await
}

/// One running instance, as it describes itself.
struct Instance {
    id: String,
    version: String,
    /// None from an instance of a version that does not report it.
    progress: Option<ViewProgress>,
}

/// How far one instance is behind the log.
enum Behind {
    /// It has applied every event it reads.
    Nothing,
    /// It has not applied the last `sequences` of the log, the first of them stored
    /// `waiting` ago.
    By { sequences: u64, waiting: Duration },
    /// It does not say how far it has applied.
    Unknown,
}

/// The line for `service`: its instances that answer, and how far each is behind `events`.
async fn presence(client: &async_nats::Client, service: &str, events: Option<&stream::Stream>) -> Check {
    let name = name(service);
    let instances = match instances(client, service).await {
        Ok(instances) => instances,
        Err(error) => return Check::fail(name, format!("cannot ask its instances: {error}"), start(service)),
    };
    if instances.is_empty() {
        return Check::fail(name, "no instance answers", start(service));
    }
    let versions: BTreeSet<&str> = instances.iter().map(|instance| instance.version.as_str()).collect();
    let versions: Vec<&str> = versions.into_iter().collect();
    let running = format!("{} (v{})", count(instances.len() as u64, "instance"), versions.join(", v"));
    let Some(events) = events else {
        return Check::warn(name, format!("{running}; the event log is missing"), super::streams::CREATE);
    };
    let last = match events.get_info().await {
        Ok(info) => info.state.last_sequence,
        Err(error) => return Check::warn(name, format!("{running}; cannot read the log's end: {error}"), RETRY),
    };
    let mut behind = Vec::new();
    for instance in &instances {
        let lag = match &instance.progress {
            None => Behind::Unknown,
            Some(progress) => match first_from(events, &progress.reads, progress.applied + 1).await {
                Ok(first) => match first.filter(|first| first.sequence <= last) {
                    None => Behind::Nothing,
                    Some(first) => Behind::By { sequences: lag(last, first.sequence), waiting: age(first.time) },
                },
                Err(error) => return Check::warn(name, format!("{running}; cannot read the log: {error}"), RETRY),
            },
        };
        behind.push((instance, lag));
    }
    judge(name, service, &running, last, &behind)
}

/// Log sequences from the first event an instance has not applied to the log's end.
fn lag(last: u64, first_unapplied: u64) -> u64 {
    (last + 1).saturating_sub(first_unapplied)
}

/// The line for a service whose instances are `behind` as found, `last` the log's end.
fn judge(name: String, service: &str, running: &str, last: u64, behind: &[(&Instance, Behind)]) -> Check {
    let stuck = |lag: &Behind| matches!(lag, Behind::By { waiting, .. } if *waiting >= STUCK_AFTER);
    if behind.iter().all(|(_, lag)| matches!(lag, Behind::Nothing)) {
        return Check::ok(name, format!("{running}, up to date with the log (seq {last})"));
    }
    let each: Vec<String> = behind
        .iter()
        .map(|(instance, lag)| match lag {
            Behind::Nothing => format!("{} up to date", instance.id),
            Behind::By { sequences, waiting } => {
                format!(
                    "{} {sequences} behind the log's end (seq {last}), the first unapplied stored {}",
                    instance.id,
                    ago(*waiting)
                )
            }
            Behind::Unknown => format!("{} does not report how far it has applied the log", instance.id),
        })
        .collect();
    let detail = format!("{running}: {}", each.join("; "));
    if behind.iter().any(|(_, lag)| stuck(lag)) {
        return Check::fail(
            name,
            detail,
            format!("that instance's view stopped following the log: its log says why (look for \"reopening\"); restart it (osp-{service}): it replays the log and catches up"),
        );
    }
    if behind.iter().any(|(_, lag)| matches!(lag, Behind::Unknown)) {
        return Check::warn(name, detail, format!("upgrade osp-{service} to this version of OSP"));
    }
    Check::ok(name, detail)
}

/// What to do about a service with no instance.
fn start(service: &str) -> String {
    format!("start it: `osp dev` runs every service; or run `osp-{service} --nats-url <this server>`, as many instances as the load needs")
}

/// Every instance of `service` that answers the micro-service discovery in time.
async fn instances(client: &async_nats::Client, service: &str) -> Result<Vec<Instance>, async_nats::Error> {
    let inbox = client.new_inbox();
    let mut replies = client.subscribe(inbox.clone()).await?;
    // `osp-<service>`: the micro service `serve_queries` starts for each service.
    client.publish_with_reply(format!("$SRV.STATS.osp-{service}"), inbox, "".into()).await?;
    client.flush().await?;
    let mut instances = Vec::new();
    loop {
        let within = if instances.is_empty() { FIRST_WITHIN } else { NEXT_WITHIN };
        let reply = match tokio::time::timeout(within, replies.next()).await {
            Ok(Some(reply)) if reply.status != Some(StatusCode::NO_RESPONDERS) => reply,
            _ => break,
        };
        let stats: async_nats::service::Stats = serde_json::from_slice(&reply.payload)?;
        let progress = stats
            .endpoints
            .iter()
            .find_map(|endpoint| endpoint.data.clone())
            .and_then(|data| serde_json::from_value(data).ok());
        instances.push(Instance { id: stats.id, version: stats.version, progress });
    }
    Ok(instances)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_from_the_first_unapplied_event_to_the_end() {
        assert_eq!(lag(100, 100), 1);
        assert_eq!(lag(100, 61), 40);
        // Appended after the log's end was read: nothing to count yet.
        assert_eq!(lag(100, 101), 0);
    }

    fn instance(id: &str) -> Instance {
        Instance { id: id.into(), version: "0.1.0".into(), progress: None }
    }

    #[test]
    fn an_instance_behind_for_long_fails_and_one_catching_up_does_not() {
        let (a, b) = (instance("A"), instance("B"));
        let check = |behind: &[(&Instance, Behind)]| judge("service s".into(), "s", "2 instances (v0.1.0)", 50, behind);
        let up_to_date = check(&[(&a, Behind::Nothing), (&b, Behind::Nothing)]);
        assert_eq!(up_to_date.status, super::super::Status::Ok);
        assert_eq!(up_to_date.detail, "2 instances (v0.1.0), up to date with the log (seq 50)");
        let catching_up =
            check(&[(&a, Behind::Nothing), (&b, Behind::By { sequences: 3, waiting: Duration::from_secs(1) })]);
        assert_eq!(catching_up.status, super::super::Status::Ok);
        assert!(
            catching_up.detail.ends_with("B 3 behind the log's end (seq 50), the first unapplied stored 1s ago"),
            "{}",
            catching_up.detail
        );
        let stuck = check(&[(&a, Behind::Nothing), (&b, Behind::By { sequences: 3, waiting: STUCK_AFTER })]);
        assert_eq!(stuck.status, super::super::Status::Fail);
        assert!(stuck.fix.unwrap().contains("osp-s"));
        let unknown = check(&[(&a, Behind::Unknown), (&b, Behind::Nothing)]);
        assert_eq!(unknown.status, super::super::Status::Warn);
    }
}
