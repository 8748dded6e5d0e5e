//! The consumers check: each durable consumer the services share (their inboxes, and
//! their effects, audits and timers), its backlog, and whether that backlog moves.
//!
//! The agents' work queues (`OSP_WORK`) are left out: a task waiting there for an agent
//! of its capability is a state of the system, not a fault of it.

use std::time::Duration;

use async_nats::jetstream::{consumer, stream};
use futures::TryStreamExt;
use osp_eventlog::WORK_STREAM;

use super::{age, ago, first_from, Check, CHECK_WITHIN, RETRY};

/// A backlog whose oldest message is older than this, with nothing acknowledged for as
/// long, is not moving: a service acknowledges a command within seconds (and reports
/// progress on a long one, which keeps it from being redelivered but not from this).
const STALLED_AFTER: Duration = Duration::from_secs(30);

/// A line per durable consumer on the services' streams among `present`.
pub(super) async fn check(present: &[stream::Stream]) -> Vec<Check> {
    let mut checks = Vec::new();
    for stream in present.iter().filter(|stream| stream.cached_info().config.name != WORK_STREAM) {
        let stream_name = &stream.cached_info().config.name;
        let listed = tokio::time::timeout(CHECK_WITHIN, stream.consumers().try_collect::<Vec<_>>()).await;
        let consumers = match listed {
            Ok(Ok(consumers)) => consumers,
            Ok(Err(error)) => {
                let detail = format!("cannot list them: {error}");
                checks.push(Check::warn(format!("consumers of {stream_name}"), detail, RETRY));
                continue;
            }
            Err(_) => {
                checks.push(super::no_answer(&format!("consumers of {stream_name}")));
                continue;
            }
        };
        // Ephemeral consumers (each view's ordered replay of the log) come and go.
        for info in consumers.iter().filter(|info| info.config.durable_name.is_some()) {
            checks.push(super::bounded(&name(info), backlog(stream, info)).await);
        }
    }
    if checks.is_empty() {
        checks.push(Check::warn(
            "consumers",
            "none: no OSP service has started against this server",
            "start the services: `osp dev`, or osp-registry, osp-scheduler, osp-quality and osp-context with --nats-url",
        ));
    }
    checks
}

fn name(info: &consumer::Info) -> String {
    format!("consumer {}", info.name)
}

/// The consumer's backlog: counts, the age of the oldest message it has not finished,
/// and whether anything was acknowledged lately.
async fn backlog(stream: &stream::Stream, info: &consumer::Info) -> Check {
    let counts =
        format!("{} pending, {} awaiting ack, on {}", info.num_pending, info.num_ack_pending, info.stream_name);
    if info.num_pending == 0 && info.num_ack_pending == 0 {
        return Check::ok(name(info), counts);
    }
    // Everything up to the ack floor is done: the first message after it, on the
    // consumer's subjects, is the oldest not finished.
    let oldest = match first_from(stream, &subjects(&info.config), info.ack_floor.stream_sequence + 1).await {
        Ok(oldest) => oldest.map(|message| age(message.time)),
        Err(error) => return Check::warn(name(info), format!("{counts}; cannot read its oldest: {error}"), RETRY),
    };
    let last_ack = info.ack_floor.last_active.map(age);
    let oldest_text = oldest.map(|oldest| format!("; the oldest stored {}", ago(oldest))).unwrap_or_default();
    if !stalled(oldest, last_ack) {
        return Check::ok(name(info), format!("{counts}{oldest_text}"));
    }
    let acked = match last_ack {
        Some(last) => format!("nothing acknowledged since {}", ago(last)),
        None => "nothing ever acknowledged".to_owned(),
    };
    Check::warn(
        name(info),
        format!("{counts}{oldest_text}, {acked}: the backlog is not moving"),
        format!(
            "the service instances reading it are stuck or gone: see the service lines above and their logs; `nats consumer info {} {}` shows more",
            info.stream_name, info.name
        ),
    )
}

/// The subjects a consumer reads.
fn subjects(config: &consumer::Config) -> Vec<String> {
    match (&config.filter_subjects[..], config.filter_subject.as_str()) {
        ([], "") => vec![">".to_owned()],
        ([], one) => vec![one.to_owned()],
        (many, _) => many.to_vec(),
    }
}

/// A backlog is stalled when its oldest message waits longer than [`STALLED_AFTER`] and
/// nothing was acknowledged for as long: an old message behind recent acknowledgements
/// is a long backlog being worked off.
fn stalled(oldest: Option<Duration>, since_last_ack: Option<Duration>) -> bool {
    oldest.is_some_and(|oldest| oldest >= STALLED_AFTER) && since_last_ack.is_none_or(|last| last >= STALLED_AFTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_is_stalled_only_when_old_and_unacknowledged() {
        let (young, old) = (Some(Duration::from_secs(2)), Some(STALLED_AFTER * 2));
        assert!(!stalled(young, None), "new work, not started yet");
        assert!(!stalled(old, young), "an old backlog worked off now");
        assert!(stalled(old, old));
        assert!(stalled(old, None));
        assert!(!stalled(None, None), "nothing found to be old");
    }

    #[test]
    fn a_consumer_reads_its_filters_or_everything() {
        let mut config = consumer::Config::default();
        assert_eq!(subjects(&config), [">"]);
        config.filter_subject = "osp.v1.in.registry.>".into();
        assert_eq!(subjects(&config), ["osp.v1.in.registry.>"]);
        config.filter_subjects = vec!["a.>".into(), "b.>".into()];
        assert_eq!(subjects(&config), ["a.>", "b.>"]);
    }
}
