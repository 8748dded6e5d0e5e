//! Schema evolution against a real server: a log written by an older build (events of an
//! older payload schema) replays into the current state through the upcasters, and its
//! hash chains still verify (the stored bytes are never rewritten).

use std::time::Duration;

use osp_eventlog::{Head, NewEvent, Recorded};
use osp_protocol::upcast::{field, set_field, take_field, Upcaster};
use osp_protocol::{derived_event_id, AggregateRef, EventPayload, Timestamp};
use osp_runtime::{Projection, View};
use osp_tests::Harness;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// `thermo.measured` schema 1, as the old build wrote it: tenths of a degree.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct MeasuredV1 {
    tenths: i64,
}

osp_protocol::event_payload! {
    #[derive(Clone, Debug, PartialEq)]
    enum OldThermoEvent {
        Measured(MeasuredV1) = ("thermo.measured", 1),
    }
}

/// Schema 2 (today): thousandths of a degree, and where (added with a default).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Measured {
    millis: i64,
    #[serde(default)]
    place: String,
}

fn measured_v1(mut payload: rmpv::Value) -> Result<rmpv::Value, String> {
    let tenths = field(&payload, "tenths").and_then(rmpv::Value::as_i64).ok_or("`tenths` is not an integer")?;
    take_field(&mut payload, "tenths");
    set_field(&mut payload, "millis", rmpv::Value::from(tenths * 100))?;
    Ok(payload)
}

osp_protocol::event_payload! {
    #[derive(Clone, Debug, PartialEq)]
    enum ThermoEvent {
        Measured(Measured) = ("thermo.measured", 2),
    }
    upcasters: &[Upcaster { event_type: "thermo.measured", from: 1, upcast: measured_v1 }];
}

/// The sum of every measure, in thousandths.
#[derive(Default)]
struct Sum(i64);

impl View for Sum {
    type Event = ThermoEvent;
    fn apply(&mut self, event: &Recorded<ThermoEvent>) {
        let ThermoEvent::Measured(measured) = &event.envelope.payload;
        self.0 += measured.millis;
    }
}

fn event<P>(payload: P, n: u32) -> NewEvent<P> {
    NewEvent {
        id: derived_event_id("measure", n, Timestamp(1_700_000_000_000)),
        occurred_at: Timestamp::now(),
        actor: "agent:thermo".into(),
        correlation_id: None,
        causation_id: None,
        payload,
    }
}

#[tokio::test]
async fn a_log_written_with_old_schemas_replays_into_the_current_state() {
    let h = Harness::start().await;
    let thermo = AggregateRef::new("thermo", "t1").unwrap();
    // The old build wrote two measures; today's build one more, on the same chain.
    let old = vec![
        event(OldThermoEvent::Measured(MeasuredV1 { tenths: 215 }), 0),
        event(OldThermoEvent::Measured(MeasuredV1 { tenths: -3 }), 1),
    ];
    let written = h.log.append(&thermo, &Head::EMPTY, old).await.unwrap();
    let current = event(ThermoEvent::Measured(Measured { millis: 7, place: "roof".into() }), 2);
    h.log.append(&thermo, &written.head, vec![current]).await.unwrap();

    let loaded = h.log.load::<ThermoEvent>(&thermo).await.unwrap();
    let payloads: Vec<_> = loaded.events.iter().map(|e| e.envelope.payload.clone()).collect();
    assert_eq!(
        payloads,
        [
            ThermoEvent::Measured(Measured { millis: 21_500, place: String::new() }),
            ThermoEvent::Measured(Measured { millis: -300, place: String::new() }),
            ThermoEvent::Measured(Measured { millis: 7, place: "roof".into() }),
        ]
    );
    assert!(loaded.events.iter().all(|e| e.envelope.payload.schema() == 2));
    let shutdown = CancellationToken::new();
    let sum = Projection::<Sum>::start(&h.log, "osp.v1.evt.thermo.*", shutdown.clone()).await.unwrap();
    sum.wait_for(h.log.last_sequence().await.unwrap(), Duration::from_secs(5)).await.unwrap();
    assert_eq!(sum.read().0, 21_207);
    let report = h.log.verify("osp.v1.evt.>", |_, _| {}).await.unwrap();
    assert!(report.is_clean() && report.events == 3, "{report:?}");
    shutdown.cancel();
}
