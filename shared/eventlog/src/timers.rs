//! Durable timers that outlive the process that set them.
//!
//! A timer is a message schedule kept by the server (nats-server 2.12+): a message on
//! `osp.v1.timer.set.<owner>.<id>` with `Nats-Schedule: @at <time>`. When it is due the
//! server publishes its payload to `osp.v1.timer.fired.<owner>.<id>`, where the owner's
//! instances take it from one shared durable consumer. Nothing about the timer lives in
//! a service's memory, so any instance can die at any moment and the timer still fires,
//! once, to whichever instance is alive.
//!
//! The subject is the timer's identity: setting the same id again replaces it, and
//! [`Timers::cancel`] removes it. A handler must still treat a fired timer as a hint to
//! check against the log (a cancel can race with the firing), which is what the pure
//! `decide` functions of the services do.

use std::time::Duration;

use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use osp_protocol::{subject, Timestamp, Token};
use time::format_description::well_known::Rfc3339;

use crate::{Error, Result, WorkConfig, WorkConsumer, TIMERS_STREAM};

/// The timers of one owner (usually a service).
#[derive(Clone, Debug)]
pub struct Timers {
    jetstream: jetstream::Context,
    stream: stream::Stream,
    owner: Token,
}

impl Timers {
    /// Opens the timer stream for `owner`'s timers.
    pub async fn open(js: &jetstream::Context, owner: Token) -> Result<Timers> {
        let stream = js
            .get_stream(TIMERS_STREAM)
            .await
            .map_err(|e| Error::Nats { operation: "open the timer stream", source: Box::new(e) })?;
        Ok(Timers { jetstream: js.clone(), stream, owner })
    }

    /// Sets (or replaces) timer `id` to fire at `at` with `payload`. A time in the past
    /// fires at once.
    pub async fn set(&self, id: &Token, at: Timestamp, payload: Bytes) -> Result<()> {
        // Schedules have one-second resolution; round up so a timer never fires early.
        let whole_seconds = Timestamp((at.millis() + 999).div_euclid(1000) * 1000);
        let when = whole_seconds
            .to_offset_date_time()
            .format(&Rfc3339)
            .map_err(|e| Error::Protocol(osp_protocol::Error::Encode { reason: format!("timer time {at}: {e}") }))?;
        let mut headers = HeaderMap::new();
        headers.insert(header::NATS_SCHEDULE, format!("@at {when}").as_str());
        headers.insert(header::NATS_SCHEDULE_TARGET, subject::timer_fired(&self.owner, id).as_str());
        self.jetstream
            .publish_with_headers(subject::timer_schedule(&self.owner, id), headers, payload)
            .await
            .map_err(|e| Error::Nats { operation: "set a timer", source: Box::new(e) })?
            .await
            .map_err(|e| Error::Nats { operation: "set a timer", source: Box::new(e) })?;
        Ok(())
    }

    /// Removes timer `id` if it has not fired yet. Cancelling an unknown or fired timer
    /// is not an error.
    pub async fn cancel(&self, id: &Token) -> Result<()> {
        self.stream
            .purge()
            .filter(subject::timer_schedule(&self.owner, id))
            .await
            .map_err(|e| Error::Nats { operation: "cancel a timer", source: Box::new(e) })?;
        Ok(())
    }

    /// The shared consumer of this owner's fired timers. A fired timer is removed from
    /// the stream once acked.
    pub async fn fired(&self, ack_wait: Duration) -> Result<WorkConsumer> {
        WorkConsumer::ensure(
            &self.jetstream,
            TIMERS_STREAM,
            &WorkConfig {
                durable: format!("timers-{}", self.owner),
                filter: subject::timers_fired_of(&self.owner),
                ack_wait,
                max_deliver: -1,
            },
        )
        .await
    }
}

/// The timer id of a fired timer's subject (its last token).
pub fn fired_timer_id(fired_subject: &str) -> &str {
    fired_subject.rsplit('.').next().unwrap_or(fired_subject)
}
