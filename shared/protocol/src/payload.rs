//! Event payloads: the part of an event that belongs to one service's domain.
//!
//! On the wire an event is one flat map whose `type` and `schema` fields say how to read
//! its `payload` field. [`EventPayload`] is how a service's own event enum plugs into
//! that: it names the type of each variant and decodes a payload given the type, straight
//! from the bytes with no intermediate value. [`event_payload!`](crate::event_payload)
//! writes the impl for an enum of payload structs; [`AnyPayload`] reads any event, for
//! tools that show or verify the log without knowing every service.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A service's set of event payloads.
pub trait EventPayload: Sized {
    /// The event type on the wire, `<aggregate kind>.<what happened>` (e.g. `run.submitted`).
    fn event_type(&self) -> &str;
    /// The version of this event type's payload shape.
    fn schema(&self) -> u16;
    /// Writes only the payload (the envelope writes `type` and `schema`).
    fn serialize_payload<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
    /// Reads a payload of `event_type` written with `schema`.
    fn deserialize_payload<'de, D: Deserializer<'de>>(
        event_type: &str,
        schema: u16,
        deserializer: D,
    ) -> Result<Self, D::Error>;
}

/// Declares an enum of event payloads and implements [`EventPayload`] for it.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// pub struct Opened { pub by: String }
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// pub struct Closed {}
///
/// osp_protocol::event_payload! {
///     /// What can happen to a door.
///     #[derive(Clone, Debug, PartialEq)]
///     pub enum DoorEvent {
///         Opened(Opened) = ("door.opened", 1),
///         Closed(Closed) = ("door.closed", 1),
///     }
/// }
/// use osp_protocol::EventPayload;
/// assert_eq!(DoorEvent::Closed(Closed {}).event_type(), "door.closed");
/// ```
///
/// A payload written with a newer schema than the one declared is refused as unknown
/// rather than misread. One written with an older schema is read as the current one: after
/// `upcasters: EXPR;` (a `&'static [Upcaster]`, see [`crate::upcast`]), the steps from its
/// schema are applied first; a schema with no step is read as it is (fields were added).
///
/// ```
/// use osp_protocol::upcast::{take_field, set_field, Upcaster};
/// use serde::{Deserialize, Serialize};
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// pub struct Opened { pub opened_by: String }
///
/// /// Schema 1 called the field `by`.
/// fn opened_v1(mut payload: rmpv::Value) -> Result<rmpv::Value, String> {
///     let by = take_field(&mut payload, "by").ok_or("no field `by`")?;
///     set_field(&mut payload, "opened_by", by)?;
///     Ok(payload)
/// }
///
/// osp_protocol::event_payload! {
///     /// What can happen to a door.
///     #[derive(Clone, Debug, PartialEq)]
///     pub enum DoorEvent {
///         Opened(Opened) = ("door.opened", 2),
///     }
///     upcasters: &[Upcaster { event_type: "door.opened", from: 1, upcast: opened_v1 }];
/// }
/// ```
#[macro_export]
macro_rules! event_payload {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident($ty:ty) = ($wire:literal, $schema:literal) ),+ $(,)?
        }
        $(upcasters: $upcasters:expr;)?
    ) => {
        $(#[$meta])*
        $vis enum $name {
            $( $(#[$vmeta])* $variant($ty), )+
        }

        impl $crate::EventPayload for $name {
            fn event_type(&self) -> &str {
                match self { $( $name::$variant(_) => $wire, )+ }
            }

            fn schema(&self) -> u16 {
                match self { $( $name::$variant(_) => $schema, )+ }
            }

            fn serialize_payload<S: $crate::__serde::Serializer>(
                &self,
                serializer: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                match self {
                    $( $name::$variant(payload) => $crate::__serde::Serialize::serialize(payload, serializer), )+
                }
            }

            fn deserialize_payload<'de, D: $crate::__serde::Deserializer<'de>>(
                event_type: &str,
                schema: u16,
                deserializer: D,
            ) -> ::std::result::Result<Self, D::Error> {
                let upcasters: &[$crate::upcast::Upcaster] = $crate::__upcasters!($($upcasters)?);
                match event_type {
                    $( $wire if schema <= $schema => {
                        if $crate::upcast::needs_upcast(upcasters, event_type, schema, $schema) {
                            use $crate::__serde::de::Error as _;
                            let old = <$crate::__rmpv::Value as $crate::__serde::Deserialize>::deserialize(deserializer)?;
                            let current = $crate::upcast::upcast(upcasters, event_type, schema, $schema, old)
                                .map_err(D::Error::custom)?;
                            $crate::__from_value::<$ty>(&current).map($name::$variant).map_err(D::Error::custom)
                        } else {
                            <$ty as $crate::__serde::Deserialize>::deserialize(deserializer).map($name::$variant)
                        }
                    } )+
                    _ => Err(<D::Error as $crate::__serde::de::Error>::custom(
                        $crate::Error::UnknownEventType { event_type: event_type.to_owned(), schema },
                    )),
                }
            }
        }
    };
}

/// The upcasters an [`event_payload!`](crate::event_payload) enum declared, or none.
#[doc(hidden)]
#[macro_export]
macro_rules! __upcasters {
    () => {
        &[]
    };
    ($upcasters:expr) => {
        $upcasters
    };
}

/// Any event's payload, kept as a MessagePack value: what tools use to show, export and
/// verify the log without knowing every service's types.
#[derive(Clone, Debug, PartialEq)]
pub struct AnyPayload {
    /// The envelope's `type`.
    pub event_type: String,
    /// The envelope's `schema`.
    pub schema: u16,
    /// The payload as decoded.
    pub body: rmpv::Value,
}

impl AnyPayload {
    /// The payload as JSON, for display and `--json` output.
    pub fn to_json(&self) -> serde_json::Value {
        crate::json::from_msgpack_value(&self.body)
    }

    /// The payload as one of `P`'s events: `None` when `P` has no event of its type and
    /// schema (another service's, or a newer writer's), or it does not read as one.
    pub fn read<P: EventPayload>(&self) -> Option<P> {
        payload_from_value(&self.event_type, self.schema, &self.body).ok()
    }
}

/// Reads a payload kept as a value (one read before its type, one upcast, one kept
/// untyped) as `P`'s event of `event_type` written with `schema`.
pub(crate) fn payload_from_value<P: EventPayload>(
    event_type: &str,
    schema: u16,
    value: &rmpv::Value,
) -> Result<P, rmp_serde::decode::Error> {
    let bytes = encoded(value);
    P::deserialize_payload(event_type, schema, &mut rmp_serde::Deserializer::from_read_ref(&bytes))
}

/// Reads a value as a `T` (what an upcast gives, as the type of the current schema).
#[doc(hidden)]
pub fn __from_value<T: serde::de::DeserializeOwned>(value: &rmpv::Value) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(&encoded(value))
}

/// `value` encoded again: how a value is read as a type. rmpv's own deserializer reads an
/// enum only in rmpv's form (`[index, value]`), not as serde writes one on the log (a
/// variant's name, or a map from it), so a value is read as the log's bytes are.
fn encoded(value: &rmpv::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).expect("writing to memory never fails");
    bytes
}

impl EventPayload for AnyPayload {
    fn event_type(&self) -> &str {
        &self.event_type
    }

    fn schema(&self) -> u16 {
        self.schema
    }

    fn serialize_payload<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.body.serialize(serializer)
    }

    fn deserialize_payload<'de, D: Deserializer<'de>>(
        event_type: &str,
        schema: u16,
        deserializer: D,
    ) -> Result<Self, D::Error> {
        Ok(AnyPayload { event_type: event_type.to_owned(), schema, body: rmpv::Value::deserialize(deserializer)? })
    }
}
