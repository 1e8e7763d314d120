//! The bus's message format on Redis: one message per publication, a version
//! byte then a postcard record (node id, room, payload, notification id,
//! audience, and the event when the payload alone would not reproduce it).
//!
//! Decoding assumes a hostile channel (anyone who can reach the Redis can
//! publish on it): the size is checked before anything is parsed, every field
//! is bounded by the message itself, and any malformation is an error value,
//! never a panic.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::{Event, Publication, Transport};

/// The format's version; a message with another first byte is refused, so a
/// later format can coexist on the channel during a rolling upgrade.
pub const VERSION: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Record {
    node: u64,
    room: String,
    payload: Vec<u8>,
    notification_id: Option<u64>,
    audience: Option<u8>,
    /// Name and JSON-encoded argument list.
    event: Option<(String, String)>,
}

/// A publication received from the bus.
#[derive(Debug)]
pub struct Received {
    /// The node that published it.
    pub node: u64,
    /// The publication, ready for local delivery.
    pub publication: Publication,
}

/// Why a bus message was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Larger than `max_message_bytes`.
    #[error("larger than max_message_bytes")]
    TooLarge,
    /// Not this format or version, or truncated, or an unknown audience.
    #[error("not a likewise bus message of version 1")]
    Undecodable,
}

impl Malformed {
    /// The `reason` label of `likewise_cluster_dropped_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Malformed::TooLarge => "received_too_large",
            Malformed::Undecodable => "malformed",
        }
    }
}

fn transport_code(t: Transport) -> u8 {
    match t {
        Transport::Ws => 0,
        Transport::SocketIo => 1,
        Transport::Resp => 2,
    }
}

fn transport_from(code: u8) -> Option<Transport> {
    Transport::ALL
        .into_iter()
        .find(|t| transport_code(*t) == code)
}

/// `publication` as a bus message from `node`.
pub fn encode(node: u64, publication: &Publication) -> Vec<u8> {
    let record = Record {
        node,
        room: publication.room().to_owned(),
        payload: publication.payload().to_vec(),
        notification_id: publication.notification_id(),
        audience: publication.audience().map(transport_code),
        event: publication
            .explicit_event()
            .map(|e| (e.name.clone(), Value::Array(e.args.clone()).to_string())),
    };
    let mut out = vec![VERSION];
    // Serialising plain strings, bytes and integers into a Vec cannot fail.
    out.extend(postcard::to_stdvec(&record).unwrap_or_default());
    out
}

/// Decodes a bus message of at most `max_bytes`.
pub fn decode(message: &[u8], max_bytes: usize) -> Result<Received, Malformed> {
    if message.len() > max_bytes {
        return Err(Malformed::TooLarge);
    }
    let Some((&VERSION, body)) = message.split_first() else {
        return Err(Malformed::Undecodable);
    };
    let record: Record = postcard::from_bytes(body).map_err(|_| Malformed::Undecodable)?;
    if record.room.is_empty() {
        return Err(Malformed::Undecodable);
    }
    let event = match record.event {
        Some((name, args)) => match serde_json::from_str::<Vec<Value>>(&args) {
            Ok(args) => Some(Event { name, args }),
            Err(_) => return Err(Malformed::Undecodable),
        },
        None => None,
    };
    let mut publication = Publication::from_parts(&record.room, Bytes::from(record.payload), event);
    if let Some(id) = record.notification_id {
        publication = publication.with_notification_id(id);
    }
    if let Some(code) = record.audience {
        publication = publication.only_for(transport_from(code).ok_or(Malformed::Undecodable)?);
    }
    Ok(Received {
        node: record.node,
        publication,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn a_publication_survives_the_round_trip_with_everything_it_carries() {
        let p = Publication::event("user:7", "new_notification", json!({"id": 9}))
            .with_notification_id(9);
        let got = decode(&encode(42, &p), 1 << 20).unwrap();
        assert_eq!(got.node, 42);
        let q = got.publication;
        assert_eq!(q.room(), "user:7");
        assert_eq!(q.payload(), p.payload());
        assert_eq!(q.notification_id(), Some(9));
        assert_eq!(q.as_event(), p.as_event());
        assert!(q.audience().is_none());

        let p = Publication::event_args("r", "two", vec![1.into(), "b".into()]);
        let q = decode(&encode(1, &p), 1 << 20).unwrap().publication;
        assert_eq!(
            q.as_event().args,
            vec![json!(1), json!("b")],
            "not one list"
        );
        assert_eq!(q.payload(), p.payload());

        let p = Publication::raw("flask-socketio", Bytes::from("x")).only_for(Transport::Resp);
        let q = decode(&encode(1, &p), 1 << 20).unwrap().publication;
        assert_eq!(q.audience(), Some(Transport::Resp));
        assert_eq!(q.payload().as_ref(), b"x");
    }

    #[test]
    fn malformed_and_oversized_messages_are_errors() {
        let good = encode(1, &Publication::raw("r", Bytes::from("hi")));
        assert_eq!(decode(&good, 4).unwrap_err(), Malformed::TooLarge);
        assert_eq!(decode(b"", 100).unwrap_err(), Malformed::Undecodable);
        assert_eq!(decode(b"\x02abc", 100).unwrap_err(), Malformed::Undecodable);
        for cut in 0..good.len() {
            assert!(decode(&good[..cut], 100).is_err(), "prefix of {cut} bytes");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes, 1 << 20);
        }

        #[test]
        fn flipped_bytes_never_panic(i in 0usize..64, b in any::<u8>()) {
            let mut m = encode(3, &Publication::event("user:1", "e", json!({"a": [1, 2]})));
            let i = i % m.len();
            m[i] = b;
            let _ = decode(&m, 1 << 20);
        }
    }
}
