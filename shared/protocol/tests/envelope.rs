//! The envelope's wire format: round trips, typed and untyped reading, bad input.

use osp_protocol::{
    derived_event_id, AggregateRef, AnyPayload, Encoding, Envelope, EventHash, EventPayload, Timestamp,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Submitted {
    capability: String,
    input: Vec<u8>,
    attempts: u32,
    tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Progressed {
    current: u64,
    total: Option<u64>,
    message: String,
}

osp_protocol::event_payload! {
    #[derive(Clone, Debug, PartialEq)]
    enum RunEvent {
        Submitted(Submitted) = ("run.submitted", 2),
        Progressed(Progressed) = ("run.progressed", 1),
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Colour {
    Red,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Painted {
    colour: Colour,
}

osp_protocol::event_payload! {
    #[derive(Clone, Debug, PartialEq)]
    enum PaintEvent {
        Painted(Painted) = ("door.painted", 1),
    }
}

fn envelope(payload: RunEvent) -> Envelope<RunEvent> {
    Envelope {
        id: derived_event_id("cmd-1", 0, Timestamp(1_700_000_000_000)),
        aggregate: AggregateRef::new("run", "r-1").unwrap(),
        version: 3,
        occurred_at: Timestamp(1_700_000_000_123),
        actor: "service:scheduler".into(),
        correlation_id: Some("r-1".into()),
        causation_id: Some("cmd-1".into()),
        prev_hash: Some(EventHash::of(b"previous")),
        payload,
    }
}

fn progressed() -> RunEvent {
    RunEvent::Progressed(Progressed { current: 2, total: Some(5), message: "halfway".into() })
}

fn id_token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_:-]{1,40}"
}

fn any_event() -> impl Strategy<Value = RunEvent> {
    prop_oneof![
        (".*", prop::collection::vec(any::<u8>(), 0..64), any::<u32>(), prop::collection::vec(".*", 0..4)).prop_map(
            |(capability, input, attempts, tags)| RunEvent::Submitted(Submitted { capability, input, attempts, tags })
        ),
        (any::<u64>(), any::<Option<u64>>(), ".*")
            .prop_map(|(current, total, message)| RunEvent::Progressed(Progressed { current, total, message })),
    ]
}

proptest! {
    /// Any envelope survives MessagePack and JSON, typed and as an untyped `AnyPayload`.
    #[test]
    fn codec_round_trip(
        payload in any_event(),
        kind in id_token(),
        id in id_token(),
        version in any::<u64>(),
        at in any::<i64>(),
        actor in ".*",
        correlation in proptest::option::of(".*"),
        causation in proptest::option::of(".*"),
        prev in proptest::option::of(any::<[u8; 32]>()),
        uuid in any::<u128>(),
    ) {
        let original = Envelope {
            id: Uuid::from_u128(uuid),
            aggregate: AggregateRef::new(&kind, &id).unwrap(),
            version,
            occurred_at: Timestamp(at),
            actor,
            correlation_id: correlation,
            causation_id: causation,
            prev_hash: prev.map(EventHash),
            payload,
        };
        for encoding in [Encoding::MessagePack, Encoding::Json] {
            let bytes = encoding.encode(&original).unwrap();
            let typed: Envelope<RunEvent> = encoding.decode(&bytes).unwrap();
            prop_assert_eq!(&typed, &original);

            let any: Envelope<AnyPayload> = encoding.decode(&bytes).unwrap();
            prop_assert_eq!(any.payload.event_type.as_str(), original.payload.event_type());
            prop_assert_eq!(any.payload.schema, original.payload.schema());
            // Re-encoding the untyped form gives back the very same bytes on the log.
            if encoding == Encoding::MessagePack {
                prop_assert_eq!(any.encode().unwrap(), bytes);
            }
        }
    }
}

#[test]
fn field_names_and_order_are_the_documented_ones() {
    let bytes = envelope(progressed()).encode().unwrap();
    let value: rmpv::Value = rmp_serde::from_slice(&bytes).unwrap();
    let keys: Vec<&str> = value.as_map().unwrap().iter().map(|(k, _)| k.as_str().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "id",
            "type",
            "schema",
            "aggregate_kind",
            "aggregate_id",
            "version",
            "occurred_at",
            "actor",
            "correlation_id",
            "causation_id",
            "prev_hash",
            "payload"
        ]
    );
}

#[test]
fn a_hand_written_json_event_with_payload_first_and_extra_fields_decodes() {
    let json = r#"{
        "payload": {"current": 1, "total": null, "message": "m"},
        "future_field": [1, 2, 3],
        "id": "0192f1c2-7e3a-7b40-9c1d-1234567890ab",
        "type": "run.progressed", "schema": 1,
        "aggregate_kind": "run", "aggregate_id": "r-9",
        "version": 1, "occurred_at": 5, "actor": "user:ana"
    }"#;
    let env: Envelope<RunEvent> = Encoding::Json.decode(json.as_bytes()).unwrap();
    assert_eq!(env.aggregate.subject(), "osp.v1.evt.run.r-9");
    assert_eq!(env.payload, RunEvent::Progressed(Progressed { current: 1, total: None, message: "m".into() }));
    assert_eq!(env.prev_hash, None);
    let painted = json
        .replace(r#"{"current": 1, "total": null, "message": "m"}"#, r#"{"colour": "red"}"#)
        .replace("run.progressed", "door.painted");
    let env: Envelope<PaintEvent> = Encoding::Json.decode(painted.as_bytes()).unwrap();
    assert_eq!(env.payload, PaintEvent::Painted(Painted { colour: Colour::Red }), "its enums read as written");
}

#[test]
fn bad_events_are_errors_that_say_why() {
    let decode = |json: &str| Encoding::Json.decode::<Envelope<RunEvent>>(json.as_bytes()).unwrap_err().to_string();
    let base = r#""id":"0192f1c2-7e3a-7b40-9c1d-1234567890ab","schema":1,"aggregate_kind":"run","aggregate_id":"r","version":1,"occurred_at":5,"actor":"a""#;

    let missing = decode(&format!(r#"{{{base},"type":"run.progressed"}}"#));
    assert!(missing.contains("missing field `payload`"), "{missing}");

    let unknown = decode(&format!(r#"{{{base},"type":"run.exploded","payload":{{}}}}"#));
    assert!(unknown.contains("unknown event type \"run.exploded\""), "{unknown}");

    let newer = decode(&format!(
        r#"{{{},"type":"run.progressed","schema":9,"payload":{{}}}}"#,
        base.replace(r#""schema":1,"#, "")
    ));
    assert!(newer.contains("schema 9"), "{newer}");

    let wrong =
        decode(&format!(r#"{{{base},"type":"run.progressed","payload":{{"current":"x","total":null,"message":""}}}}"#));
    assert!(wrong.contains("payload.current"), "{wrong}");

    let injected = decode(
        r#"{"id":"0192f1c2-7e3a-7b40-9c1d-1234567890ab","type":"run.progressed","aggregate_kind":"run","aggregate_id":"a.*","version":1,"occurred_at":5,"actor":"a","payload":{"current":1,"total":null,"message":""}}"#,
    );
    assert!(injected.contains("aggregate_id") && injected.contains("invalid subject token"), "{injected}");
}

#[test]
fn derived_ids_are_stable_distinct_and_time_ordered() {
    let at = Timestamp(1_700_000_000_000);
    assert_eq!(derived_event_id("cmd", 0, at), derived_event_id("cmd", 0, at));
    assert_ne!(derived_event_id("cmd", 0, at), derived_event_id("cmd", 1, at));
    assert_ne!(derived_event_id("cmd", 0, at), derived_event_id("cmd2", 0, at));
    assert!(derived_event_id("z", 0, at) < derived_event_id("a", 0, Timestamp(at.0 + 1)));
    assert_eq!(derived_event_id("cmd", 0, at).get_version_num(), 7);
}

#[test]
fn untyped_payload_reads_as_json() {
    let bytes = envelope(progressed()).encode().unwrap();
    let any = Envelope::<AnyPayload>::decode(&bytes).unwrap();
    assert_eq!(any.payload.to_json(), serde_json::json!({"current": 2, "total": 5, "message": "halfway"}));
}

#[test]
fn an_untyped_payload_reads_as_the_events_that_have_its_type() {
    let bytes = envelope(progressed()).encode().unwrap();
    let any = Envelope::<AnyPayload>::decode(&bytes).unwrap().payload;
    assert_eq!(any.read::<RunEvent>(), Some(progressed()));
    let unknown = AnyPayload { event_type: "run.archived".into(), ..any.clone() };
    assert_eq!(unknown.read::<RunEvent>(), None, "a type this reader does not know");
    let newer = AnyPayload { schema: 2, ..any.clone() };
    assert_eq!(newer.read::<RunEvent>(), None, "a schema newer than this reader's");
    let misshapen = AnyPayload { body: rmpv::Value::from("not a map"), ..any };
    assert_eq!(misshapen.read::<RunEvent>(), None);
    let door = AnyPayload {
        event_type: "door.painted".into(),
        schema: 1,
        body: rmpv::ext::to_value(serde_json::json!({"colour": "red"})).unwrap(),
    };
    assert_eq!(door.read::<PaintEvent>(), Some(PaintEvent::Painted(Painted { colour: Colour::Red })), "enums too");
}

#[test]
fn a_schema_written_after_the_payload_is_still_honoured() {
    let json = r#"{"id":"0192f1c2-7e3a-7b40-9c1d-1234567890ab","type":"run.progressed",
        "aggregate_kind":"run","aggregate_id":"r","version":1,"occurred_at":5,"actor":"a",
        "payload":{"current":1,"total":null,"message":""},"schema":5}"#;
    let err = Encoding::Json.decode::<Envelope<RunEvent>>(json.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("schema 5"), "a newer schema is refused wherever it is written: {err}");
    let any: Envelope<AnyPayload> = Encoding::Json.decode(json.as_bytes()).unwrap();
    assert_eq!(any.payload.schema, 5);
}

mod upcasting {
    use osp_protocol::upcast::{set_field, take_field, Upcaster};

    use super::*;

    /// Schema 1 of `door.opened`, as an old writer wrote it.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct OpenedV1 {
        by: String,
    }

    osp_protocol::event_payload! {
        #[derive(Clone, Debug, PartialEq)]
        enum OldDoorEvent {
            Opened(OpenedV1) = ("door.opened", 1),
        }
    }

    /// Schema 3: `by` became `opened_by` (schema 2), then `times` was added (schema 3,
    /// with a default: no upcaster).
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Opened {
        opened_by: String,
        #[serde(default)]
        times: u32,
    }

    fn opened_v1(mut payload: rmpv::Value) -> Result<rmpv::Value, String> {
        let by = take_field(&mut payload, "by").ok_or("no field `by`")?;
        set_field(&mut payload, "opened_by", by)?;
        Ok(payload)
    }

    osp_protocol::event_payload! {
        #[derive(Clone, Debug, PartialEq)]
        enum DoorEvent {
            Opened(Opened) = ("door.opened", 3),
        }
        upcasters: &[Upcaster { event_type: "door.opened", from: 1, upcast: opened_v1 }];
    }

    fn door<P>(payload: P) -> Envelope<P> {
        Envelope {
            id: derived_event_id("open", 0, Timestamp(1_700_000_000_000)),
            aggregate: AggregateRef::new("door", "d-1").unwrap(),
            version: 1,
            occurred_at: Timestamp(1_700_000_000_000),
            actor: "user:ana".into(),
            correlation_id: None,
            causation_id: None,
            prev_hash: None,
            payload,
        }
    }

    #[test]
    fn an_event_written_with_an_old_schema_is_read_as_the_current_one() {
        let old = door(OldDoorEvent::Opened(OpenedV1 { by: "ana".into() }));
        for encoding in [Encoding::MessagePack, Encoding::Json] {
            let bytes = encoding.encode(&old).unwrap();
            let read: Envelope<DoorEvent> = encoding.decode(&bytes).unwrap();
            assert_eq!(read.payload, DoorEvent::Opened(Opened { opened_by: "ana".into(), times: 0 }), "{encoding:?}");
            assert_eq!(read.payload.schema(), 3, "it is the current schema now");
            // Untyped readers (verify, export) see what was written.
            let any: Envelope<AnyPayload> = encoding.decode(&bytes).unwrap();
            assert_eq!(any.payload.schema, 1);
        }
    }

    /// The way to lock a door.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "lowercase")]
    enum Lock {
        Code,
    }

    /// Schema 1 of `door.locked` called its lock `with`.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct LockedV1 {
        with: Lock,
    }

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Locked {
        lock: Lock,
    }

    fn locked_v1(mut payload: rmpv::Value) -> Result<rmpv::Value, String> {
        let with = take_field(&mut payload, "with").ok_or("no field `with`")?;
        set_field(&mut payload, "lock", with)?;
        Ok(payload)
    }

    osp_protocol::event_payload! {
        #[derive(Clone, Debug, PartialEq)]
        enum OldLockEvent {
            Locked(LockedV1) = ("door.locked", 1),
        }
    }

    osp_protocol::event_payload! {
        #[derive(Clone, Debug, PartialEq)]
        enum LockEvent {
            Locked(Locked) = ("door.locked", 2),
        }
        upcasters: &[Upcaster { event_type: "door.locked", from: 1, upcast: locked_v1 }];
    }

    #[test]
    fn an_upcast_payload_reads_its_enums_as_written() {
        let bytes = door(OldLockEvent::Locked(LockedV1 { with: Lock::Code })).encode().unwrap();
        let read = Envelope::<LockEvent>::decode(&bytes).unwrap();
        assert_eq!(read.payload, LockEvent::Locked(Locked { lock: Lock::Code }));
    }

    #[test]
    fn the_current_schema_is_read_directly_and_a_bad_old_payload_says_why() {
        let current = door(DoorEvent::Opened(Opened { opened_by: "bo".into(), times: 2 }));
        let read = Envelope::<DoorEvent>::decode(&current.encode().unwrap()).unwrap();
        assert_eq!(read, current);
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        struct Wrong {
            who: String,
        }
        osp_protocol::event_payload! {
            #[derive(Clone, Debug, PartialEq)]
            enum WrongDoorEvent {
                Opened(Wrong) = ("door.opened", 1),
            }
        }
        let bytes = door(WrongDoorEvent::Opened(Wrong { who: "x".into() })).encode().unwrap();
        let error = Envelope::<DoorEvent>::decode(&bytes).unwrap_err().to_string();
        assert!(error.contains("door.opened schema 1 cannot be upcast to 2: no field `by`"), "{error}");
    }
}
