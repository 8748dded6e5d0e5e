//! What a service answers to a command or a query.
//!
//! On the wire a reply is one map, in the request's encoding:
//!
//! ```json
//! {"ok": true,  "seq": 42, "result": {"registry": "agents", "name": "a1", "revision": 3}}
//! {"ok": false, "seq": 43, "error": {"error": "invalid_token", "field": "name", "value": "a.b",
//!                                    "reason": "must not contain '.' (it separates subject tokens)",
//!                                    "message": "invalid name \"a.b\": must not contain '.' ..."}}
//! ```
//!
//! `seq` is a stream sequence of the event log: for a command, the last event it
//! stored (its acceptance, or the record of its rejection); for a query, how far the
//! answering instance had applied the log. Sending it back as `Osp-Min-Seq` on a later
//! query gives read-your-writes on any instance. `message` repeats the error in words,
//! so a client in any language can show it without formatting it.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Encoding, Error};

/// A service's answer: a result, or an error that says what to fix.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply<T> {
    /// Done.
    Ok {
        /// Read-your-writes token (see the module docs).
        seq: u64,
        /// What the command or query produced.
        result: T,
    },
    /// Refused or failed.
    Err {
        /// The sequence of the rejection's record on the log, when there is one.
        seq: Option<u64>,
        /// What went wrong.
        error: Error,
    },
}

/// The bytes of `{"ok": true, "seq": seq, "result": <result>}` around a `result` that is
/// already encoded in `encoding`: what a service sends when it keeps its answers encoded
/// (a page of entries it encoded once), so nothing is decoded and encoded again per query.
pub fn encode_ok_with(encoding: Encoding, seq: u64, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(result.len() + 32);
    match encoding {
        Encoding::MessagePack => {
            // Writing to a Vec cannot fail.
            let _ = rmp::encode::write_map_len(&mut out, 3);
            let _ = rmp::encode::write_str(&mut out, "ok");
            let _ = rmp::encode::write_bool(&mut out, true);
            let _ = rmp::encode::write_str(&mut out, "seq");
            let _ = rmp::encode::write_uint(&mut out, seq);
            let _ = rmp::encode::write_str(&mut out, "result");
        }
        Encoding::Json => out.extend_from_slice(format!("{{\"ok\":true,\"seq\":{seq},\"result\":").as_bytes()),
    }
    out.extend_from_slice(result);
    if encoding == Encoding::Json {
        out.push(b'}');
    }
    out
}

impl<T> Reply<T> {
    /// The result, or the error.
    pub fn into_result(self) -> Result<(u64, T), Error> {
        match self {
            Reply::Ok { seq, result } => Ok((seq, result)),
            Reply::Err { error, .. } => Err(error),
        }
    }
}

#[derive(Serialize)]
struct Out<'a, T> {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut<'a>>,
}

#[derive(Serialize)]
struct ErrorOut<'a> {
    #[serde(flatten)]
    error: &'a Error,
    message: String,
}

#[derive(Deserialize)]
struct In<T> {
    ok: bool,
    seq: Option<u64>,
    result: Option<T>,
    error: Option<ErrorIn>,
}

#[derive(Deserialize)]
struct ErrorIn {
    #[serde(flatten)]
    error: Error,
}

impl<T: Serialize> Serialize for Reply<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let out = match self {
            Reply::Ok { seq, result } => Out { ok: true, seq: Some(*seq), result: Some(result), error: None },
            Reply::Err { seq, error } => {
                Out { ok: false, seq: *seq, result: None, error: Some(ErrorOut { error, message: error.to_string() }) }
            }
        };
        out.serialize(s)
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Reply<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let wire = In::<T>::deserialize(d)?;
        match (wire.ok, wire.result, wire.error) {
            (true, Some(result), _) => Ok(Reply::Ok { seq: wire.seq.unwrap_or(0), result }),
            (true, None, _) => Err(D::Error::missing_field("result")),
            (false, _, Some(ErrorIn { error })) => Ok(Reply::Err { seq: wire.seq, error }),
            (false, _, None) => Err(D::Error::missing_field("error")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Done {
        revision: u32,
    }

    #[test]
    fn replies_round_trip_in_both_encodings() {
        let replies = [
            Reply::Ok { seq: 42, result: Done { revision: 3 } },
            Reply::Err {
                seq: Some(43),
                error: Error::Invalid { field: "resource.max_concurrency".into(), reason: "must be 1 or more".into() },
            },
            Reply::Err { seq: None, error: Error::Lagging { wanted: 9, applied: 3 } },
        ];
        for reply in replies {
            for encoding in [Encoding::MessagePack, Encoding::Json] {
                let bytes = encoding.encode(&reply).unwrap();
                assert_eq!(encoding.decode::<Reply<Done>>(&bytes).unwrap(), reply);
            }
        }
    }

    #[test]
    fn a_reply_around_an_encoded_result_reads_as_any_reply() {
        for encoding in [Encoding::MessagePack, Encoding::Json] {
            let result = encoding.encode(&Done { revision: 7 }).unwrap();
            let bytes = encode_ok_with(encoding, 42, &result);
            assert_eq!(
                encoding.decode::<Reply<Done>>(&bytes).unwrap(),
                Reply::Ok { seq: 42, result: Done { revision: 7 } }
            );
            assert_eq!(bytes, encoding.encode(&Reply::Ok { seq: 42, result: Done { revision: 7 } }).unwrap());
        }
    }

    #[test]
    fn an_error_reply_carries_its_message_in_words() {
        let reply: Reply<Done> = Reply::Err {
            seq: Some(7),
            error: Error::NotFound { field: "name".into(), value: "bob".into(), reason: "r".into() },
        };
        let json = serde_json::to_value(&reply).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"ok": false, "seq": 7, "error": {
                "error": "not_found", "field": "name", "value": "bob", "reason": "r",
                "message": "name \"bob\" not found: r"}})
        );
    }
}
