//! The per-aggregate hash chain.
//!
//! Every event records the BLAKE3 hash of the stored bytes of the previous event of the
//! same aggregate. The log cannot be edited through the JetStream API (the stream denies
//! delete and purge), and the chain makes any edit behind the API's back, or an event
//! forged by a raw publish, visible to `osp log verify`.

use std::fmt;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// BLAKE3 hash of an event's stored bytes (the whole MessagePack message).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// Hashes the bytes exactly as they are stored on the log.
    pub fn of(stored: &[u8]) -> EventHash {
        EventHash(*blake3::hash(stored).as_bytes())
    }

    /// Lower-case hex, as shown in JSON and by the CLI.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits: enough to tell hashes apart in a report.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..6])
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({})", self.short())
    }
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// 32 raw bytes in MessagePack; a hex string in JSON.
impl Serialize for EventHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for EventHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HashVisitor;
        impl<'de> de::Visitor<'de> for HashVisitor {
            type Value = EventHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("32 bytes or 64 hex digits")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<EventHash, E> {
                <[u8; 32]>::try_from(v).map(EventHash).map_err(|_| E::invalid_length(v.len(), &self))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<EventHash, E> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(v, &mut out).map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))?;
                Ok(EventHash(out))
            }
        }
        d.deserialize_any(HashVisitor)
    }
}
