//! Recording refused commands on the log (see `osp_protocol::RejectionRecorded`).

use osp_eventlog::{Error, EventLog, Head, NewEvent, Recorded, Result};
use osp_protocol::{
    derived_event_id, AggregateRef, Error as ProtocolError, RejectionEvent, RejectionRecorded, Token, REJECTION_KIND,
};

use crate::Inbound;

/// Records that `inbound`, sent to `service`, was refused with `error`; returns the
/// record's stream sequence. A command refused again on redelivery is recorded once.
pub async fn record(
    log: &EventLog,
    service: &Token,
    inbound: &Inbound,
    error: &ProtocolError,
    target: Option<&AggregateRef>,
) -> Result<u64> {
    let (aggregate, id) = rejection_of(service, inbound);
    let event = NewEvent {
        id,
        occurred_at: osp_protocol::Timestamp::now(),
        actor: format!("service:{service}"),
        correlation_id: None,
        causation_id: Some(inbound.id.clone()),
        payload: RejectionEvent::Recorded(RejectionRecorded {
            service: service.to_string(),
            subject: inbound.subject.clone(),
            command_id: inbound.id.clone(),
            content_type: inbound.content_type.clone(),
            size: inbound.size as u64,
            target: target.map(ToString::to_string),
            error: error.clone(),
        }),
    };
    match log.append(&aggregate, &Head::EMPTY, vec![event]).await {
        Ok(appended) => Ok(appended.head.seq),
        // Recorded before, by this or another instance (a redelivery): keep that one.
        Err(Error::Conflict { actual, .. }) => Ok(actual),
        Err(other) => Err(other),
    }
}

/// The rejection recorded for `inbound` before (it is being delivered again), if any.
pub async fn recorded(log: &EventLog, service: &Token, inbound: &Inbound) -> Result<Option<(u64, ProtocolError)>> {
    let (aggregate, _) = rejection_of(service, inbound);
    let Some(Recorded { seq, envelope, .. }) = log.last_event::<RejectionEvent>(&aggregate).await? else {
        return Ok(None);
    };
    let RejectionEvent::Recorded(record) = envelope.payload;
    Ok(Some((seq, record.error)))
}

/// The record's own aggregate and event id, derived from the command so that every
/// delivery of it names the same record.
fn rejection_of(service: &Token, inbound: &Inbound) -> (AggregateRef, uuid::Uuid) {
    let id = derived_event_id(&format!("{service}/{}/rejected", inbound.id), 0, inbound.received_at);
    let aggregate = AggregateRef::new(REJECTION_KIND, &id.simple().to_string()).expect("hex digits make a valid token");
    (aggregate, id)
}
