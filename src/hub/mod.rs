//! The realtime hub: rooms (channels) → subscribers, plus glob pattern subscriptions,
//! shared by every transport (native websocket, Socket.IO, RESP).
//!
//! Rooms and RESP channels are one namespace. A [`Publication`] keeps the payload as
//! RESP subscribers receive it and renders the websocket and Socket.IO frames lazily,
//! once per publication whatever the number of subscribers.
//!
//! Every subscriber has a bounded outbound queue. Publishing never waits: a
//! subscriber whose queue is full is disconnected (as Redis does past its pubsub
//! output buffer limit), with a logged reason and a metric, so one slow consumer
//! never slows the publisher or the others. Publishing to a room nobody is in costs
//! one hash lookup (plus one glob test per pattern subscription).
//!
//! The hub knows no transport and no storage: it moves publications, nothing more.

mod glob;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use glob::matches as glob_matches;

/// The room for events addressed to everyone (a Flask-SocketIO emit without a
/// room): transports that serve "everyone" join it for each connection.
pub const BROADCAST_ROOM: &str = "broadcast";

/// Which transport a subscriber speaks; for statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The native `/ws` websocket.
    Ws,
    /// Socket.IO over websocket.
    SocketIo,
    /// A RESP (Redis protocol) connection.
    Resp,
}

impl Transport {
    /// All transports, for statistics.
    pub const ALL: [Transport; 3] = [Transport::Ws, Transport::SocketIo, Transport::Resp];

    /// Name used in statistics and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::SocketIo => "socket.io",
            Transport::Resp => "resp",
        }
    }
}

/// An event name with its arguments (Socket.IO events carry a list of arguments; a
/// websocket event carries one `data` value).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event name, e.g. `new_notification`.
    pub name: String,
    /// Arguments; one for every event the server itself emits.
    pub args: Vec<Value>,
}

impl Event {
    /// The websocket `data`: the single argument, `null` for none, or the list.
    pub fn data(&self) -> Value {
        match self.args.as_slice() {
            [] => Value::Null,
            [one] => one.clone(),
            many => Value::Array(many.to_vec()),
        }
    }
}

/// One message published to one room.
#[derive(Debug)]
pub struct Publication {
    room: Arc<str>,
    payload: Bytes,
    notification_id: Option<u64>,
    event: OnceLock<Event>,
    ws_frame: OnceLock<Bytes>,
    socketio_frame: OnceLock<Bytes>,
}

impl Publication {
    /// A raw payload, as published by a RESP client. Websocket clients receive it as
    /// event `E` with data `D` when it is a JSON object `{"event": E, "data": D}`,
    /// otherwise as event `message` with the payload as a string.
    pub fn raw(room: &str, payload: Bytes) -> Self {
        Publication {
            room: Arc::from(room),
            payload,
            notification_id: None,
            event: OnceLock::new(),
            ws_frame: OnceLock::new(),
            socketio_frame: OnceLock::new(),
        }
    }

    /// An event with one data value; RESP subscribers receive
    /// `{"event": name, "data": data}`.
    pub fn event(room: &str, name: &str, data: Value) -> Self {
        Self::event_args(room, name, vec![data])
    }

    /// An event with a list of arguments (Socket.IO emits with several arguments).
    pub fn event_args(room: &str, name: &str, args: Vec<Value>) -> Self {
        let event = Event {
            name: name.to_owned(),
            args,
        };
        let envelope = serde_json::json!({"event": event.name, "data": event.data()});
        let payload = Bytes::from(envelope.to_string());
        let p = Self::raw(room, payload.clone());
        let _ = p.ws_frame.set(payload);
        let _ = p.event.set(event);
        p
    }

    /// Marks this publication as the notification `id`, so that a session resuming
    /// with `since` can tell replayed notifications from live ones.
    pub fn with_notification_id(mut self, id: u64) -> Self {
        self.notification_id = Some(id);
        self
    }

    /// The room (channel) it was published to.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The payload as RESP subscribers receive it.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The notification id, when this publication is a `new_notification`.
    pub fn notification_id(&self) -> Option<u64> {
        self.notification_id
    }

    /// The event websocket clients receive.
    pub fn as_event(&self) -> &Event {
        self.event.get_or_init(|| decode_envelope(&self.payload))
    }

    /// The native websocket text frame: `{"event": E, "data": D}`.
    pub fn ws_frame(&self) -> &Bytes {
        self.ws_frame.get_or_init(|| {
            let e = self.as_event();
            Bytes::from(serde_json::json!({"event": e.name, "data": e.data()}).to_string())
        })
    }

    /// The Socket.IO EVENT packet on the default namespace: `42["E",args...]`.
    pub fn socketio_frame(&self) -> &Bytes {
        self.socketio_frame.get_or_init(|| {
            let e = self.as_event();
            let mut list = Vec::with_capacity(e.args.len() + 1);
            list.push(Value::String(e.name.clone()));
            list.extend(e.args.iter().cloned());
            let mut text = String::from("42");
            text.push_str(&Value::Array(list).to_string());
            Bytes::from(text)
        })
    }
}

fn decode_envelope(payload: &[u8]) -> Event {
    if let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(payload) {
        if let (Some(Value::String(name)), true) = (map.get("event"), map.contains_key("data")) {
            let name = name.clone();
            let data = map.remove("data").unwrap_or(Value::Null);
            return Event {
                name,
                args: vec![data],
            };
        }
    }
    Event {
        name: "message".to_owned(),
        args: vec![Value::String(String::from_utf8_lossy(payload).into_owned())],
    }
}

/// A publication on its way to one subscriber; `pattern` is set when it matched a
/// pattern subscription rather than the room itself.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// What was published.
    pub publication: Arc<Publication>,
    /// The pattern that matched, for `pmessage`.
    pub pattern: Option<Arc<str>>,
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// Its outbound queue overflowed: the consumer was too slow.
    TooSlow,
    /// The server is shutting down.
    ShuttingDown,
}

struct Member {
    tx: mpsc::Sender<Delivery>,
    kicked: CancellationToken,
    transport: Transport,
    rooms: HashSet<Arc<str>>,
    patterns: HashSet<Arc<str>>,
}

#[derive(Default)]
struct Registry {
    rooms: HashMap<Arc<str>, HashMap<u64, mpsc::Sender<Delivery>>>,
    patterns: HashMap<Arc<str>, HashMap<u64, mpsc::Sender<Delivery>>>,
    members: HashMap<u64, Member>,
}

/// Hub counters.
#[derive(Debug, Default)]
pub struct HubStats {
    /// Publications.
    pub published: AtomicU64,
    /// Deliveries queued to subscribers.
    pub delivered: AtomicU64,
    /// Subscribers disconnected for being too slow.
    pub dropped_slow: AtomicU64,
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    queue_len: usize,
    closing: CancellationToken,
    stats: HubStats,
    connections: [AtomicU64; 3],
}

impl Hub {
    /// A hub whose subscribers may each have `queue_len` deliveries waiting.
    pub fn new(queue_len: usize) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                registry: RwLock::new(Registry::default()),
                next_id: AtomicU64::new(1),
                queue_len: queue_len.max(1),
                closing: CancellationToken::new(),
                stats: HubStats::default(),
                connections: Default::default(),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.inner
            .registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry> {
        self.inner
            .registry
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// A new subscriber, in no room yet.
    pub fn subscribe(&self, transport: Transport) -> Subscription {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.inner.queue_len);
        let kicked = self.inner.closing.child_token();
        self.write().members.insert(
            id,
            Member {
                tx,
                kicked: kicked.clone(),
                transport,
                rooms: HashSet::new(),
                patterns: HashSet::new(),
            },
        );
        self.inner.connections[transport as usize].fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("likewise_connections", "transport" => transport.as_str()).increment(1.0);
        Subscription {
            hub: self.clone(),
            id,
            rx,
            kicked,
            closed: None,
        }
    }

    /// Publishes to `publication.room()`; returns how many subscribers it was queued
    /// for (room members plus matching pattern subscriptions, as Redis counts).
    pub fn publish(&self, publication: Publication) -> usize {
        let publication = Arc::new(publication);
        let mut delivered = 0;
        let mut slow: Vec<u64> = Vec::new();
        {
            let reg = self.read();
            if let Some(members) = reg.rooms.get(publication.room()) {
                for (id, tx) in members {
                    let d = Delivery {
                        publication: publication.clone(),
                        pattern: None,
                    };
                    match tx.try_send(d) {
                        Ok(()) => delivered += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => slow.push(*id),
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
            for (pattern, members) in &reg.patterns {
                if !glob::matches(pattern.as_bytes(), publication.room().as_bytes()) {
                    continue;
                }
                for (id, tx) in members {
                    let d = Delivery {
                        publication: publication.clone(),
                        pattern: Some(pattern.clone()),
                    };
                    match tx.try_send(d) {
                        Ok(()) => delivered += 1,
                        Err(mpsc::error::TrySendError::Full(_)) => slow.push(*id),
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
            }
        }
        for id in slow {
            self.kick_slow(id);
        }
        let s = &self.inner.stats;
        s.published.fetch_add(1, Ordering::Relaxed);
        s.delivered.fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    fn kick_slow(&self, id: u64) {
        let transport = {
            let reg = self.read();
            match reg.members.get(&id) {
                Some(m) if !m.kicked.is_cancelled() => {
                    m.kicked.cancel();
                    m.transport
                }
                _ => return,
            }
        };
        self.remove(id);
        self.inner
            .stats
            .dropped_slow
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("likewise_hub_slow_disconnects_total", "transport" => transport.as_str())
            .increment(1);
        tracing::warn!(
            subscriber = id,
            transport = transport.as_str(),
            queue = self.inner.queue_len,
            "disconnecting a subscriber: its outbound queue is full (consumer too slow)"
        );
    }

    /// Removes a subscriber from every room and pattern.
    fn remove(&self, id: u64) {
        let mut reg = self.write();
        let Some(member) = reg.members.remove(&id) else {
            return;
        };
        for room in &member.rooms {
            remove_from(&mut reg.rooms, room, id);
        }
        for pattern in &member.patterns {
            remove_from(&mut reg.patterns, pattern, id);
        }
        drop(reg);
        self.inner.connections[member.transport as usize].fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("likewise_connections", "transport" => member.transport.as_str())
            .decrement(1.0);
    }

    fn join(&self, id: u64, room: &str, pattern: bool) -> bool {
        let mut reg = self.write();
        let reg = &mut *reg;
        let Some(member) = reg.members.get_mut(&id) else {
            return false;
        };
        let set = if pattern {
            &mut member.patterns
        } else {
            &mut member.rooms
        };
        if set.contains(room) {
            return false;
        }
        let key: Arc<str> = Arc::from(room);
        set.insert(key.clone());
        let map = if pattern {
            &mut reg.patterns
        } else {
            &mut reg.rooms
        };
        map.entry(key).or_default().insert(id, member.tx.clone());
        true
    }

    fn leave(&self, id: u64, room: &str, pattern: bool) -> bool {
        let mut reg = self.write();
        let reg = &mut *reg;
        let Some(member) = reg.members.get_mut(&id) else {
            return false;
        };
        let removed = if pattern {
            member.patterns.remove(room)
        } else {
            member.rooms.remove(room)
        };
        if removed {
            let map = if pattern {
                &mut reg.patterns
            } else {
                &mut reg.rooms
            };
            remove_from(map, room, id);
        }
        removed
    }

    /// Number of subscribers in `room` (not counting patterns), as `PUBSUB NUMSUB`.
    pub fn room_size(&self, room: &str) -> usize {
        self.read().rooms.get(room).map_or(0, HashMap::len)
    }

    /// Rooms with at least one subscriber whose name matches `pattern` (all rooms
    /// when `None`), as `PUBSUB CHANNELS`.
    pub fn rooms(&self, pattern: Option<&[u8]>) -> Vec<String> {
        let reg = self.read();
        let mut rooms: Vec<String> = reg
            .rooms
            .keys()
            .filter(|r| pattern.is_none_or(|p| glob::matches(p, r.as_bytes())))
            .map(|r| r.to_string())
            .collect();
        rooms.sort();
        rooms
    }

    /// Number of distinct patterns subscribed to, as `PUBSUB NUMPAT`.
    pub fn pattern_count(&self) -> usize {
        self.read().patterns.len()
    }

    /// Open subscriptions per transport.
    pub fn connections(&self, transport: Transport) -> u64 {
        self.inner.connections[transport as usize].load(Ordering::Relaxed)
    }

    /// Hub counters.
    pub fn stats(&self) -> &HubStats {
        &self.inner.stats
    }

    /// Tells every subscription to end (server shutdown).
    pub fn close(&self) {
        self.inner.closing.cancel();
    }

    /// Cancelled once the hub is closing.
    pub fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }
}

fn remove_from(
    map: &mut HashMap<Arc<str>, HashMap<u64, mpsc::Sender<Delivery>>>,
    key: &str,
    id: u64,
) {
    if let Some(members) = map.get_mut(key) {
        members.remove(&id);
        if members.is_empty() {
            map.remove(key);
        }
    }
}

/// One subscriber's membership and inbox. Dropping it leaves every room.
pub struct Subscription {
    hub: Hub,
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    kicked: CancellationToken,
    closed: Option<Closed>,
}

impl Subscription {
    /// Its id, unique for the life of the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Joins `room`; `false` if already in it.
    pub fn join(&self, room: &str) -> bool {
        self.hub.join(self.id, room, false)
    }

    /// Leaves `room`; `false` if not in it.
    pub fn leave(&self, room: &str) -> bool {
        self.hub.leave(self.id, room, false)
    }

    /// Subscribes to the glob `pattern`; `false` if already subscribed.
    pub fn join_pattern(&self, pattern: &str) -> bool {
        self.hub.join(self.id, pattern, true)
    }

    /// Unsubscribes from `pattern`; `false` if not subscribed.
    pub fn leave_pattern(&self, pattern: &str) -> bool {
        self.hub.leave(self.id, pattern, true)
    }

    /// The rooms joined, sorted.
    pub fn rooms(&self) -> Vec<String> {
        self.list(false)
    }

    /// The patterns subscribed to, sorted.
    pub fn patterns(&self) -> Vec<String> {
        self.list(true)
    }

    fn list(&self, pattern: bool) -> Vec<String> {
        let reg = self.hub.read();
        let mut out: Vec<String> = reg
            .members
            .get(&self.id)
            .map(|m| {
                let set = if pattern { &m.patterns } else { &m.rooms };
                set.iter().map(|r| r.to_string()).collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// Number of rooms plus patterns, as Redis counts subscriptions.
    pub fn count(&self) -> usize {
        let reg = self.hub.read();
        reg.members
            .get(&self.id)
            .map_or(0, |m| m.rooms.len() + m.patterns.len())
    }

    /// The next delivery; `None` once the subscription is closed (see
    /// [`Subscription::closed`] for why).
    pub async fn recv(&mut self) -> Option<Delivery> {
        if self.closed.is_some() {
            return None;
        }
        tokio::select! {
            biased;
            _ = self.kicked.cancelled() => {
                self.closed = Some(if self.hub.inner.closing.is_cancelled() {
                    Closed::ShuttingDown
                } else {
                    Closed::TooSlow
                });
                None
            }
            d = self.rx.recv() => d,
        }
    }

    /// A delivery already waiting, without awaiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        if self.kicked.is_cancelled() {
            return None;
        }
        self.rx.try_recv().ok()
    }

    /// Resolves once the hub has ended this subscription (too slow, or shutting
    /// down), without taking any delivery: lets a transport stop waiting on a
    /// socket write that a slow client never drains.
    pub async fn ended(&self) {
        self.kicked.cancelled().await
    }

    /// Why the subscription ended, once [`Subscription::recv`] returned `None`.
    pub fn closed(&self) -> Option<Closed> {
        self.closed
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_publication_reaches_room_members_and_matching_patterns() {
        let hub = Hub::new(8);
        let mut a = hub.subscribe(Transport::Ws);
        let mut b = hub.subscribe(Transport::Resp);
        let c = hub.subscribe(Transport::Resp);
        assert!(a.join("user:1"));
        assert!(!a.join("user:1"));
        assert!(b.join_pattern("user:*"));
        c.join("user:2");
        assert_eq!(
            hub.publish(Publication::raw("user:1", Bytes::from("hi"))),
            2
        );
        let got = a.recv().await.unwrap();
        assert_eq!(got.publication.payload().as_ref(), b"hi");
        assert!(got.pattern.is_none());
        let got = b.recv().await.unwrap();
        assert_eq!(got.pattern.as_deref(), Some("user:*"));
        assert_eq!(hub.publish(Publication::raw("nobody", Bytes::new())), 0);
        assert_eq!(hub.rooms(None), vec!["user:1", "user:2"]);
        assert_eq!(hub.rooms(Some(b"*2")), vec!["user:2"]);
        assert_eq!(hub.pattern_count(), 1);
        assert_eq!(hub.connections(Transport::Resp), 2);
        drop(c);
        assert_eq!(hub.room_size("user:2"), 0);
        assert_eq!(hub.connections(Transport::Resp), 1);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_disconnected_without_slowing_others() {
        let hub = Hub::new(2);
        let mut slow = hub.subscribe(Transport::Ws);
        let mut fast = hub.subscribe(Transport::Ws);
        slow.join("r");
        fast.join("r");
        for i in 0..5 {
            let n = hub.publish(Publication::raw("r", Bytes::from(i.to_string())));
            assert!(n >= 1);
            assert!(fast.recv().await.is_some());
        }
        assert!(slow.recv().await.is_none());
        assert_eq!(slow.closed(), Some(Closed::TooSlow));
        assert_eq!(hub.room_size("r"), 1);
        assert_eq!(hub.stats().dropped_slow.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn frames_follow_the_envelope_rule() {
        let p = Publication::raw("r", Bytes::from(r#"{"event":"x","data":{"a":1}}"#));
        assert_eq!(p.as_event().name, "x");
        assert_eq!(p.ws_frame().as_ref(), br#"{"data":{"a":1},"event":"x"}"#);
        assert_eq!(p.socketio_frame().as_ref(), br#"42["x",{"a":1}]"#);
        let p = Publication::raw("r", Bytes::from("plain"));
        assert_eq!(p.as_event().name, "message");
        assert_eq!(p.socketio_frame().as_ref(), br#"42["message","plain"]"#);
        let p = Publication::event("r", "new_notification", serde_json::json!({"id": 3}));
        assert_eq!(
            serde_json::from_slice::<Value>(p.payload()).unwrap(),
            serde_json::json!({"event": "new_notification", "data": {"id": 3}})
        );
        let p = Publication::event_args("r", "e", vec![1.into(), 2.into()]);
        assert_eq!(p.socketio_frame().as_ref(), br#"42["e",1,2]"#);
        assert_eq!(p.as_event().data(), serde_json::json!([1, 2]));
    }

    #[tokio::test]
    async fn closing_the_hub_ends_every_subscription() {
        let hub = Hub::new(4);
        let mut s = hub.subscribe(Transport::SocketIo);
        hub.close();
        assert!(s.recv().await.is_none());
        assert_eq!(s.closed(), Some(Closed::ShuttingDown));
    }
}
