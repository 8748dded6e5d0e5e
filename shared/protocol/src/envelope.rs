//! The event envelope: what every event on the log says besides its payload.
//!
//! On the wire an envelope is one flat MessagePack map, written in this order:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `id` | 16-byte bin (UUID v7) | the event's identity, also its `Nats-Msg-Id` |
//! | `type` | string | event type, e.g. `run.submitted` |
//! | `schema` | uint | version of this type's payload shape |
//! | `aggregate_kind`, `aggregate_id` | string | whose event it is (and its subject) |
//! | `version` | uint | position in the aggregate's history, from 1, no gaps |
//! | `occurred_at` | int | Unix milliseconds |
//! | `actor` | string | who did it: `service:scheduler`, `agent:summarizer-1`, `user:ana` |
//! | `correlation_id` | string, optional | the root run this belongs to |
//! | `causation_id` | string, optional | the command or event that caused it |
//! | `prev_hash` | 32-byte bin, optional | BLAKE3 of the previous event of the aggregate; absent on the first |
//! | `payload` | map | the event type's own fields |
//!
//! `type` and `schema` come before `payload` so a reader can decode the payload
//! directly into the right type. Readers ignore fields they do not know, so later
//! versions can add fields without breaking this one.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::{AggregateRef, Encoding, Error, EventHash, EventPayload, Timestamp, Token};

/// One event as stored on the log.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope<P> {
    /// UUID v7; deterministic when derived from a command (see [`derived_event_id`]).
    pub id: Uuid,
    /// Whose event this is.
    pub aggregate: AggregateRef,
    /// Position in the aggregate's history, counting from 1.
    pub version: u64,
    /// When it happened, by the writer's clock.
    pub occurred_at: Timestamp,
    /// Who did it.
    pub actor: String,
    /// The root run this event belongs to, if any.
    pub correlation_id: Option<String>,
    /// The command or event that caused this one, if any.
    pub causation_id: Option<String>,
    /// Hash of the stored bytes of the previous event of this aggregate.
    pub prev_hash: Option<EventHash>,
    /// The domain part.
    pub payload: P,
}

impl<P: EventPayload> Envelope<P> {
    /// The MessagePack bytes that go on the log.
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        Encoding::MessagePack.encode(self)
    }

    /// Reads an envelope from the log's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Encoding::MessagePack.decode(bytes)
    }
}

/// A UUID v7 that is a pure function of `(cause, index, at)`: the same command, decided
/// again after a crash, yields the same event ids, which the stream then deduplicates.
/// `at` supplies the time part so ids still sort by time; pass a time that is part of
/// the command (when it was received), never the time of deciding.
pub fn derived_event_id(cause: &str, index: u32, at: Timestamp) -> Uuid {
    let mut hasher = blake3::Hasher::new();
    hasher.update(cause.as_bytes());
    hasher.update(&index.to_be_bytes());
    let digest = hasher.finalize();
    let mut rand = [0u8; 10];
    rand.copy_from_slice(&digest.as_bytes()[..10]);
    let millis = u64::try_from(at.millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &rand).into_uuid()
}

const FIELDS: &[&str] = &[
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
    "payload",
];

impl<P: EventPayload> Serialize for Envelope<P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let optional = [self.correlation_id.is_some(), self.causation_id.is_some(), self.prev_hash.is_some()];
        let mut map = s.serialize_map(Some(9 + optional.iter().filter(|present| **present).count()))?;
        map.serialize_entry("id", &self.id)?;
        map.serialize_entry("type", self.payload.event_type())?;
        map.serialize_entry("schema", &self.payload.schema())?;
        map.serialize_entry("aggregate_kind", &self.aggregate.kind)?;
        map.serialize_entry("aggregate_id", &self.aggregate.id)?;
        map.serialize_entry("version", &self.version)?;
        map.serialize_entry("occurred_at", &self.occurred_at)?;
        map.serialize_entry("actor", &self.actor)?;
        if let Some(correlation) = &self.correlation_id {
            map.serialize_entry("correlation_id", correlation)?;
        }
        if let Some(causation) = &self.causation_id {
            map.serialize_entry("causation_id", causation)?;
        }
        if let Some(prev) = &self.prev_hash {
            map.serialize_entry("prev_hash", prev)?;
        }
        map.serialize_entry("payload", &PayloadOut(&self.payload))?;
        map.end()
    }
}

/// Serializes only the payload part of `P`.
struct PayloadOut<'a, P>(&'a P);

impl<P: EventPayload> Serialize for PayloadOut<'_, P> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_payload(s)
    }
}

/// Decodes the payload once `type` and `schema` are known.
struct PayloadIn<'a, P> {
    event_type: &'a str,
    schema: u16,
    marker: PhantomData<P>,
}

impl<'de, P: EventPayload> DeserializeSeed<'de> for PayloadIn<'_, P> {
    type Value = P;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<P, D::Error> {
        P::deserialize_payload(self.event_type, self.schema, d)
    }
}

enum Field {
    Id,
    Type,
    Schema,
    AggregateKind,
    AggregateId,
    Version,
    OccurredAt,
    Actor,
    CorrelationId,
    CausationId,
    PrevHash,
    Payload,
    Unknown,
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Field, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an envelope field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<Field, E> {
                Ok(match name {
                    "id" => Field::Id,
                    "type" => Field::Type,
                    "schema" => Field::Schema,
                    "aggregate_kind" => Field::AggregateKind,
                    "aggregate_id" => Field::AggregateId,
                    "version" => Field::Version,
                    "occurred_at" => Field::OccurredAt,
                    "actor" => Field::Actor,
                    "correlation_id" => Field::CorrelationId,
                    "causation_id" => Field::CausationId,
                    "prev_hash" => Field::PrevHash,
                    "payload" => Field::Payload,
                    _ => Field::Unknown,
                })
            }
            fn visit_bytes<E: de::Error>(self, name: &[u8]) -> Result<Field, E> {
                match std::str::from_utf8(name) {
                    Ok(name) => self.visit_str(name),
                    Err(_) => Ok(Field::Unknown),
                }
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

impl<'de, P: EventPayload> Deserialize<'de> for Envelope<P> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_struct("Envelope", FIELDS, EnvelopeVisitor(PhantomData))
    }
}

struct EnvelopeVisitor<P>(PhantomData<P>);

impl<'de, P: EventPayload> Visitor<'de> for EnvelopeVisitor<P> {
    type Value = Envelope<P>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an OSP event envelope (a map)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<P>, A::Error> {
        let mut id = None;
        let mut event_type: Option<String> = None;
        let mut schema: Option<u16> = None;
        let mut kind: Option<Token> = None;
        let mut aggregate_id: Option<Token> = None;
        let mut version = None;
        let mut occurred_at = None;
        let mut actor = None;
        let mut correlation_id = None;
        let mut causation_id = None;
        let mut prev_hash = None;
        let mut payload = None;
        // A payload seen before its type and schema (a hand-written message) is kept
        // as a value and decoded once both are known.
        let mut early_payload: Option<rmpv::Value> = None;

        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Id => id = Some(map.next_value()?),
                Field::Type => event_type = Some(map.next_value()?),
                Field::Schema => schema = Some(map.next_value()?),
                Field::AggregateKind => kind = Some(map.next_value()?),
                Field::AggregateId => aggregate_id = Some(map.next_value()?),
                Field::Version => version = Some(map.next_value()?),
                Field::OccurredAt => occurred_at = Some(map.next_value()?),
                Field::Actor => actor = Some(map.next_value()?),
                Field::CorrelationId => correlation_id = map.next_value()?,
                Field::CausationId => causation_id = map.next_value()?,
                Field::PrevHash => prev_hash = map.next_value()?,
                Field::Payload => match (&event_type, schema) {
                    (Some(ty), Some(schema)) => {
                        payload =
                            Some(map.next_value_seed(PayloadIn { event_type: ty, schema, marker: PhantomData })?)
                    }
                    _ => early_payload = Some(map.next_value()?),
                },
                Field::Unknown => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }

        let event_type = event_type.ok_or_else(|| de::Error::missing_field("type"))?;
        let schema = schema.unwrap_or(1);
        let payload = match (payload, early_payload) {
            (Some(payload), _) => payload,
            (None, Some(value)) => crate::payload::payload_from_value(&event_type, schema, &value)
                .map_err(|e| de::Error::custom(format!("payload: {e}")))?,
            (None, None) => return Err(de::Error::missing_field("payload")),
        };
        Ok(Envelope {
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            aggregate: AggregateRef {
                kind: kind.ok_or_else(|| de::Error::missing_field("aggregate_kind"))?,
                id: aggregate_id.ok_or_else(|| de::Error::missing_field("aggregate_id"))?,
            },
            version: version.ok_or_else(|| de::Error::missing_field("version"))?,
            occurred_at: occurred_at.ok_or_else(|| de::Error::missing_field("occurred_at"))?,
            actor: actor.ok_or_else(|| de::Error::missing_field("actor"))?,
            correlation_id,
            causation_id,
            prev_hash,
            payload,
        })
    }
}
