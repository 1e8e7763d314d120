//! The Flask-SocketIO bridge: python-socketio's pub/sub managers (used by
//! Flask-SocketIO's `message_queue`, e.g. from a Celery worker) publish JSON
//! messages on channel `flask-socketio` (Flask-SocketIO's default) or `socketio`
//! (python-socketio's). An `emit` message looks like
//! `{"method":"emit","event":"new_notification","data":[{...}],"binary":false,
//! "namespace":"/","room":"42","skip_sid":null,"callback":null,"host_id":"..."}`,
//! where `data` is the list of the emit's arguments.
//!
//! Decoding follows what a receiving python-socketio server does with the same
//! message: a one-element `data` is one argument (and `[null]` none), a longer
//! list is that many arguments; a `data` that is not a list (older senders) is one
//! argument. The room is taken as named, except that a room made of digits only
//! (`to=str(user_id)`, the usual idiom) means `user:{digits}`; a list of rooms
//! emits to each; no room emits to [`BROADCAST_ROOM`], the room of everyone.
//! `skip_sid`, `callback` and `host_id` refer to Python-side clients and are
//! ignored. Only the default namespace `/` is served.
//!
//! An emit reaches exactly the rooms it names, each once, and the event is
//! serialised once whatever their number. A message naming more rooms than
//! [`Bounds::max_rooms`], or a room name longer than [`Bounds::max_room_bytes`],
//! is refused whole: one message must not become a million publications.
//!
//! Never fatal: anything else (other methods such as `enter_room`, undecodable
//! JSON, binary attachments) is logged and dropped. Pickled payloads (older
//! python-socketio versions; they start with byte 0x80) are refused and logged,
//! never unpickled: unpickling is code execution.
//!
//! This module decodes and relays to the hub; it never touches storage.

use std::collections::HashSet;

use serde_json::Value;

use crate::hub::{Hub, Publication, BROADCAST_ROOM};

/// Bounds on what one bridged message may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Most rooms one message may name.
    pub max_rooms: usize,
    /// Longest room name, in bytes.
    pub max_room_bytes: usize,
}

/// Channels whose messages are decoded as python-socketio pub/sub messages.
pub const CHANNELS: [&str; 2] = ["flask-socketio", "socketio"];

/// Whether messages on `channel` are bridged.
pub fn is_bridge_channel(channel: &str) -> bool {
    CHANNELS.contains(&channel)
}

/// An event to emit to rooms.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    /// Hub rooms to emit to.
    pub rooms: Vec<String>,
    /// The event name.
    pub event: String,
    /// The event's arguments.
    pub args: Vec<Value>,
}

/// What a bridge message asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Emit an event.
    Emit(Emit),
    /// A method with no meaning here (`enter_room`, `leave_room`, `close_room`,
    /// `disconnect`, `callback`): these concern Python-side clients.
    Ignored(String),
}

/// Why a message was not relayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A pickle: never unpickled.
    #[error("pickled payload refused (unpickling would run arbitrary code); use python-socketio 5.14 or newer, which publishes JSON")]
    Pickled,
    /// Not JSON.
    #[error("not JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object with a string `method`.
    #[error("not a python-socketio message: no \"method\"")]
    NoMethod,
    /// An `emit` without a string `event`.
    #[error("emit without a string \"event\"")]
    NoEvent,
    /// A namespace other than `/`.
    #[error("namespace {0:?} is not served (only \"/\")")]
    Namespace(String),
    /// Binary attachments, which JSON clients cannot receive.
    #[error("emits with binary attachments are not relayed")]
    Binary,
    /// A room that is neither a string, a number, a list of those nor null.
    #[error("\"room\" must be a string, a list of strings or null")]
    BadRoom,
    /// More rooms than [`Bounds::max_rooms`].
    #[error("the message names {0} rooms (limit {1})")]
    TooManyRooms(usize, usize),
    /// A room name longer than [`Bounds::max_room_bytes`].
    #[error("a room name is over the {0} byte limit")]
    RoomTooLong(usize),
}

/// The hub room for a Socket.IO room name: digits only means a user's room.
pub fn room_for(name: &str) -> String {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) {
        // A user id, spelt as its room; digits beyond any id still name a user room
        // (nobody is in it), never a public one.
        match name.parse::<u64>() {
            Ok(id) => crate::rooms::user(id),
            Err(_) => format!("user:{name}"),
        }
    } else {
        name.to_owned()
    }
}

fn rooms(value: Option<&Value>, bounds: &Bounds) -> Result<Vec<String>, Refused> {
    let one = |v: &Value| {
        let room = match v {
            Value::String(s) => room_for(s),
            Value::Number(n) if n.is_u64() => room_for(&n.to_string()),
            _ => return Err(Refused::BadRoom),
        };
        if room.len() > bounds.max_room_bytes {
            return Err(Refused::RoomTooLong(bounds.max_room_bytes));
        }
        Ok(room)
    };
    match value {
        None | Some(Value::Null) => Ok(vec![BROADCAST_ROOM.to_owned()]),
        Some(Value::Array(list)) => {
            if list.len() > bounds.max_rooms {
                return Err(Refused::TooManyRooms(list.len(), bounds.max_rooms));
            }
            let mut seen = HashSet::with_capacity(list.len());
            let mut out = Vec::with_capacity(list.len());
            for v in list {
                let room = one(v)?;
                if seen.insert(room.clone()) {
                    out.push(room);
                }
            }
            Ok(out)
        }
        Some(v) => Ok(vec![one(v)?]),
    }
}

fn args(data: Option<Value>) -> Vec<Value> {
    match data {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(mut list)) if list.len() == 1 => match list.pop() {
            Some(Value::Null) | None => Vec::new(),
            Some(one) => vec![one],
        },
        Some(Value::Array(list)) => list,
        Some(one) => vec![one],
    }
}

/// Decodes one message published on a bridge channel.
pub fn decode(payload: &[u8], bounds: &Bounds) -> Result<Decoded, Refused> {
    if payload.first() == Some(&0x80) {
        return Err(Refused::Pickled);
    }
    let value: Value =
        serde_json::from_slice(payload).map_err(|e| Refused::NotJson(e.to_string()))?;
    let Value::Object(mut message) = value else {
        return Err(Refused::NoMethod);
    };
    let method = match message.get("method") {
        Some(Value::String(m)) => m.clone(),
        _ => return Err(Refused::NoMethod),
    };
    if method != "emit" {
        return Ok(Decoded::Ignored(method));
    }
    let event = match message.get("event") {
        Some(Value::String(e)) => e.clone(),
        _ => return Err(Refused::NoEvent),
    };
    match message.get("namespace") {
        None | Some(Value::Null) => {}
        Some(Value::String(ns)) if ns == "/" => {}
        Some(other) => {
            let ns = other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned);
            return Err(Refused::Namespace(ns));
        }
    }
    if message.get("binary") == Some(&Value::Bool(true)) {
        return Err(Refused::Binary);
    }
    let rooms = rooms(message.get("room"), bounds)?;
    Ok(Decoded::Emit(Emit {
        rooms,
        event,
        args: args(message.remove("data")),
    }))
}

/// Decodes `payload` (published on bridge channel `channel`) and emits it to its
/// rooms; returns how many clients received it. Refused messages are logged.
pub fn relay(hub: &Hub, channel: &str, payload: &[u8], bounds: &Bounds) -> usize {
    relay_via(channel, payload, bounds, |p| hub.publish(p)).unwrap_or(0)
}

/// Like [`relay`], but hands each room's publication to `publish` (the cluster
/// bus delivers with [`Hub::publish_from_bus`], since every node receives the
/// emit from Redis itself), and says why a message was refused so that the
/// caller can count it. Refused messages are logged; ignored methods are
/// `Ok(0)`.
pub fn relay_via(
    channel: &str,
    payload: &[u8],
    bounds: &Bounds,
    mut publish: impl FnMut(Publication) -> usize,
) -> Result<usize, Refused> {
    match decode(payload, bounds) {
        Ok(Decoded::Emit(emit)) => {
            let Some((first, rest)) = emit.rooms.split_first() else {
                return Ok(0);
            };
            let event = Publication::event_args(first, &emit.event, emit.args);
            let mut received = 0;
            for room in rest {
                received += publish(event.for_room(room));
            }
            Ok(received + publish(event))
        }
        Ok(Decoded::Ignored(method)) => {
            tracing::debug!(channel, method, "Socket.IO pub/sub message ignored");
            Ok(0)
        }
        Err(why) => {
            tracing::warn!(
                channel,
                bytes = payload.len(),
                "Socket.IO pub/sub message dropped: {why}"
            );
            Err(why)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Transport;
    use serde_json::json;

    const BOUNDS: Bounds = Bounds {
        max_rooms: 3,
        max_room_bytes: 16,
    };

    fn decode(payload: &[u8]) -> Result<Decoded, Refused> {
        super::decode(payload, &BOUNDS)
    }

    fn emit(value: Value) -> Emit {
        match decode(value.to_string().as_bytes()) {
            Ok(Decoded::Emit(e)) => e,
            other => panic!("not an emit: {other:?}"),
        }
    }

    #[test]
    fn a_current_python_socketio_emit_decodes_to_its_room_and_arguments() {
        let e = emit(json!({
            "method": "emit", "event": "new_notification", "data": [{"id": 3}],
            "binary": false, "namespace": "/", "room": "42", "skip_sid": null,
            "callback": null, "host_id": "abc"
        }));
        assert_eq!(e.rooms, vec!["user:42"]);
        assert_eq!(e.event, "new_notification");
        assert_eq!(e.args, vec![json!({"id": 3})]);
    }

    #[test]
    fn arguments_follow_what_a_python_server_would_emit() {
        let data = |d: Value| emit(json!({"method": "emit", "event": "e", "data": d})).args;
        assert_eq!(data(json!([1, 2])), vec![json!(1), json!(2)]);
        assert_eq!(data(json!([[1, 2]])), vec![json!([1, 2])]);
        assert_eq!(data(json!([null])), Vec::<Value>::new());
        assert_eq!(data(json!([])), Vec::<Value>::new());
        assert_eq!(data(json!({"a": 1})), vec![json!({"a": 1})]);
        assert_eq!(data(Value::Null), Vec::<Value>::new());
    }

    #[test]
    fn rooms_map_digits_to_users_lists_to_each_and_none_to_everyone() {
        let rooms = |r: Value| emit(json!({"method": "emit", "event": "e", "room": r})).rooms;
        assert_eq!(rooms(json!("post:7")), vec!["post:7"]);
        assert_eq!(rooms(json!(42)), vec!["user:42"]);
        assert_eq!(rooms(json!(["1", "a"])), vec!["user:1", "a"]);
        assert_eq!(rooms(json!(["a", "b", "a"])), vec!["a", "b"]);
        assert_eq!(rooms(Value::Null), vec![BROADCAST_ROOM]);
        assert_eq!(
            emit(json!({"method": "emit", "event": "e"})).rooms,
            vec![BROADCAST_ROOM]
        );
    }

    #[test]
    fn pickles_garbage_and_unsupported_messages_are_refused_not_fatal() {
        assert_eq!(decode(b"\x80\x04\x95payload"), Err(Refused::Pickled));
        assert!(matches!(decode(b"{not json"), Err(Refused::NotJson(_))));
        assert_eq!(decode(b"[1,2]"), Err(Refused::NoMethod));
        assert_eq!(decode(br#"{"method":"emit"}"#), Err(Refused::NoEvent));
        assert_eq!(
            decode(br#"{"method":"emit","event":"e","namespace":"/chat"}"#),
            Err(Refused::Namespace("/chat".into()))
        );
        assert_eq!(
            decode(br#"{"method":"emit","event":"e","binary":true}"#),
            Err(Refused::Binary)
        );
        assert_eq!(
            decode(br#"{"method":"emit","event":"e","room":{"x":1}}"#),
            Err(Refused::BadRoom)
        );
        assert_eq!(
            decode(br#"{"method":"emit","event":"e","room":["a","b","c","d"]}"#),
            Err(Refused::TooManyRooms(4, 3))
        );
        assert_eq!(
            decode(br#"{"method":"emit","event":"e","room":"aaaaaaaaaaaaaaaaa"}"#),
            Err(Refused::RoomTooLong(16))
        );
        assert_eq!(
            decode(br#"{"method":"enter_room","sid":"x","room":"r"}"#),
            Ok(Decoded::Ignored("enter_room".into()))
        );
    }

    #[tokio::test]
    async fn relay_emits_to_exactly_the_named_rooms_sharing_one_serialisation() {
        let hub = Hub::new(8);
        let mut sio = hub.subscribe(Transport::SocketIo);
        sio.join("user:42");
        let mut ws = hub.subscribe(Transport::Ws);
        ws.join("post:1");
        let mut other = hub.subscribe(Transport::Ws);
        other.join("post:2");
        let n = relay(
            &hub,
            "flask-socketio",
            br#"{"method":"emit","event":"new_notification","data":[{"id":1}],"namespace":"/","room":["42","post:1"]}"#,
            &BOUNDS,
        );
        assert_eq!(n, 2);
        let a = sio.recv().await.unwrap();
        let b = ws.recv().await.unwrap();
        assert_eq!(a.publication.room(), "user:42");
        assert_eq!(b.publication.room(), "post:1");
        assert_eq!(
            a.publication.envelope().as_ref(),
            br#"{"data":{"id":1},"event":"new_notification"}"#
        );
        assert_eq!(
            a.publication.envelope().as_ptr(),
            b.publication.envelope().as_ptr(),
            "serialised once"
        );
        assert!(other.try_recv().is_none());
        assert_eq!(relay(&hub, "socketio", b"\x80garbage", &BOUNDS), 0);
    }
}
