//! Encoding of messages: MessagePack with named fields on the log, and JSON accepted from
//! clients that say so with `Content-Type: application/json`.
//!
//! Named fields (maps, not arrays) are what let a newer writer add a field without
//! breaking an older reader. Decoding goes through `serde_path_to_error` so a rejection
//! can tell the sender *which* field was wrong, not only that something was.

use serde::{de::DeserializeOwned, Serialize};

use crate::Error;

/// Header that selects the encoding of an inbound message.
pub const CONTENT_TYPE: &str = "Content-Type";
/// The default encoding, used when no `Content-Type` header is present.
pub const MSGPACK: &str = "application/msgpack";
/// The encoding for clients that prefer text.
pub const JSON: &str = "application/json";

/// Largest message the protocol accepts, headers included: the nats-server default
/// `max_payload`. Anything bigger would be refused by the server anyway; refusing it
/// first gives the sender a clear reason.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// The two encodings of wire protocol v1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Encoding {
    /// MessagePack with named fields (maps). Always used on the event log.
    #[default]
    MessagePack,
    /// UTF-8 JSON.
    Json,
}

impl Encoding {
    /// The encoding named by a `Content-Type` header value (absent means MessagePack).
    /// Parameters such as `; charset=utf-8` are ignored.
    pub fn from_content_type(value: Option<&str>) -> Result<Encoding, Error> {
        let Some(value) = value else {
            return Ok(Encoding::MessagePack);
        };
        let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match media.as_str() {
            "" | MSGPACK | "application/x-msgpack" | "application/vnd.msgpack" => Ok(Encoding::MessagePack),
            JSON => Ok(Encoding::Json),
            _ => Err(Error::UnsupportedContentType { content_type: value.to_owned() }),
        }
    }

    /// The `Content-Type` value to send with a message in this encoding.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::MessagePack => MSGPACK,
            Encoding::Json => JSON,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Encoding::MessagePack => "msgpack",
            Encoding::Json => "json",
        }
    }

    /// Encodes `value` (MessagePack maps with field names, or compact JSON).
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, Error> {
        match self {
            Encoding::MessagePack => {
                rmp_serde::to_vec_named(value).map_err(|e| Error::Encode { reason: e.to_string() })
            }
            Encoding::Json => serde_json::to_vec(value).map_err(|e| Error::Encode { reason: e.to_string() }),
        }
    }

    /// Decodes `bytes`, naming the field at fault when decoding fails.
    ///
    /// The fast path decodes without tracking field paths (replays decode every event);
    /// only a failed decode is run again with tracking, to name the field.
    pub fn decode<T: DeserializeOwned>(self, bytes: &[u8]) -> Result<T, Error> {
        let fast = match self {
            Encoding::MessagePack => rmp_serde::from_slice(bytes).ok(),
            Encoding::Json => serde_json::from_slice(bytes).ok(),
        };
        match fast {
            Some(value) => Ok(value),
            None => Err(self.explain_failure::<T>(bytes)),
        }
    }

    /// Decodes again with field-path tracking and turns the failure into an error.
    fn explain_failure<T: DeserializeOwned>(self, bytes: &[u8]) -> Error {
        let malformed = |path: String, reason: String| Error::Malformed {
            encoding: self.name().to_owned(),
            path: crate::finite::cap(path),
            reason,
        };
        let tracked: Result<T, Error> = match self {
            Encoding::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(bytes);
                serde_path_to_error::deserialize(&mut de)
                    .map_err(|e| malformed(e.path().to_string(), e.inner().to_string()))
            }
            Encoding::Json => {
                let mut de = serde_json::Deserializer::from_slice(bytes);
                serde_path_to_error::deserialize(&mut de)
                    .map_err(|e| malformed(e.path().to_string(), e.inner().to_string()))
                    .and_then(|value| de.end().map(|()| value).map_err(|e| malformed(String::new(), e.to_string())))
            }
        };
        match tracked {
            Err(error) => error,
            // Both decoders agree on what is valid; this only guards against a
            // deserializer that depends on tracking.
            Ok(_) => malformed(String::new(), "could not be decoded".into()),
        }
    }
}

/// Refuses a message larger than `limit` with an error that says what and by how much.
pub fn check_size(what: &str, size: usize, limit: usize) -> Result<(), Error> {
    if size > limit {
        return Err(Error::TooLarge { what: what.to_owned(), size, limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Retry {
        attempts: u32,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Options {
        retry: Retry,
    }

    #[test]
    fn content_type_selects_encoding() {
        assert_eq!(Encoding::from_content_type(None).unwrap(), Encoding::MessagePack);
        assert_eq!(Encoding::from_content_type(Some("application/json; charset=utf-8")).unwrap(), Encoding::Json);
        assert_eq!(Encoding::from_content_type(Some("Application/JSON")).unwrap(), Encoding::Json);
        let err = Encoding::from_content_type(Some("text/xml")).unwrap_err();
        assert!(err.to_string().contains("text/xml"), "{err}");
    }

    #[test]
    fn decode_errors_name_the_field() {
        let err = Encoding::Json.decode::<Options>(br#"{"retry":{"attempts":"three"}}"#).unwrap_err();
        assert!(err.to_string().contains("at retry.attempts"), "{err}");

        let bytes = Encoding::MessagePack.encode(&serde_json::json!({"retry": {"attempts": -1}})).unwrap();
        let err = Encoding::MessagePack.decode::<Options>(&bytes).unwrap_err();
        assert!(err.to_string().contains("msgpack"), "{err}");
        assert!(err.to_string().contains("retry.attempts"), "{err}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xc1", b"\xdf\xff\xff\xff\xff", b"{", b"[1,2"] {
            assert!(Encoding::MessagePack.decode::<Options>(bytes).is_err());
            assert!(Encoding::Json.decode::<Options>(bytes).is_err());
        }
        assert!(Encoding::Json.decode::<Options>(br#"{"retry":{"attempts":1}} trailing"#).is_err());
    }

    #[test]
    fn size_limit_says_what_and_how_much() {
        assert!(check_size("resource", 10, 10).is_ok());
        let err = check_size("resource", 11, 10).unwrap_err();
        assert_eq!(err.to_string(), "resource is 11 bytes, over the limit of 10 bytes");
    }
}
