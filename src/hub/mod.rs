//! The realtime hub: rooms (channels) → subscribers, plus glob pattern subscriptions,
//! shared by every transport (native websocket, Socket.IO, RESP).
//!
//! Rooms and RESP channels are one namespace. A [`Publication`] keeps the payload as
//! RESP subscribers receive it, its JSON envelope, and a cache of the frames
//! transports render from it ([`FrameFormat`]): each format is rendered once per
//! publication whatever the number of subscribers. The formats themselves belong
//! to the transports.
//!
//! Every subscriber has an outbound queue with a byte budget ([`OutputLimits`],
//! Redis's pubsub output-buffer limits: a hard limit, and a soft limit that may
//! be exceeded for a while). Publishing never waits: a subscriber over its budget
//! is disconnected, with a logged reason and a metric, so one slow consumer never
//! slows the publisher or the others, and what it pins in memory is bounded.
//!
//! Publishing to a room nobody is in costs one hash lookup plus one glob test per
//! distinct pattern subscribed to; the glob tests run outside the registry lock,
//! so that patterns never hold up subscribing and leaving.
//!
//! The hub also keeps presence ([`presence`]): which users have a connection open,
//! announced in `presence:{id}` rooms.
//!
//! A [`Tap`] (the cluster bus, when one is configured) is handed every publication
//! made on this node, after local delivery; publications that arrive from the tap's
//! side go through [`Hub::publish_from_bus`], which delivers them locally and never
//! hands them back, so an event crosses the bus once. Without a tap, publishing
//! costs one extra branch.
//!
//! The hub knows no transport and no storage: it moves publications, nothing more.

mod glob;
pub mod presence;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use glob::matches as glob_matches;
pub use presence::{presence_room, PresenceGuard, PRESENCE_EVENT, PRESENCE_ROOM_PREFIX};

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

/// Frame formats a publication caches; further formats are rendered per use.
const FRAME_SLOTS: usize = 4;

static NEXT_FRAME_SLOT: AtomicUsize = AtomicUsize::new(0);

/// A way a transport renders a publication for its clients (the Socket.IO
/// EVENT packet, say). Declared once, as a `static`, by the transport; the hub
/// caches each format's frame per publication, so a publication reaching
/// thousands of clients of one transport is rendered once.
pub struct FrameFormat {
    name: &'static str,
    render: fn(&Publication) -> Bytes,
    slot: OnceLock<usize>,
}

impl FrameFormat {
    /// A format called `name` (for debugging), rendered by `render`.
    pub const fn new(name: &'static str, render: fn(&Publication) -> Bytes) -> Self {
        FrameFormat {
            name,
            render,
            slot: OnceLock::new(),
        }
    }

    /// The format's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn slot(&self) -> usize {
        *self
            .slot
            .get_or_init(|| NEXT_FRAME_SLOT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Bytes a queued delivery is charged beyond its payload and room name: the
/// delivery itself and its queue slot.
const DELIVERY_OVERHEAD: usize = 64;

/// One message published to one room.
#[derive(Debug)]
pub struct Publication {
    room: Arc<str>,
    body: Arc<Body>,
}

/// What publications of one message to several rooms share: the payload and
/// everything rendered from it, so that each rendering happens once.
#[derive(Debug, Clone, Default)]
struct Body {
    payload: Bytes,
    notification_id: Option<u64>,
    audience: Option<Transport>,
    event: OnceLock<Event>,
    envelope: OnceLock<Bytes>,
    frames: [OnceLock<Bytes>; FRAME_SLOTS],
}

impl Publication {
    /// A raw payload, as published by a RESP client. Websocket clients receive it as
    /// event `E` with data `D` when it is a JSON object `{"event": E, "data": D}`,
    /// otherwise as event `message` with the payload as a string.
    pub fn raw(room: &str, payload: Bytes) -> Self {
        Publication {
            room: Arc::from(room),
            body: Arc::new(Body {
                payload,
                ..Body::default()
            }),
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
        let _ = p.body.envelope.set(payload);
        let _ = p.body.event.set(event);
        p
    }

    /// The same message for another room, sharing the payload and whatever is
    /// rendered from it (an emit to many rooms is serialised once).
    pub fn for_room(&self, room: &str) -> Self {
        Publication {
            room: Arc::from(room),
            body: self.body.clone(),
        }
    }

    /// Marks this publication as the notification `id`, so that a session resuming
    /// with `since` can tell replayed notifications from live ones.
    pub fn with_notification_id(mut self, id: u64) -> Self {
        Arc::make_mut(&mut self.body).notification_id = Some(id);
        self
    }

    /// Delivers this publication to subscribers of `transport` only (the raw
    /// messages of a pub/sub protocol, meant for clients of that protocol).
    pub fn only_for(mut self, transport: Transport) -> Self {
        Arc::make_mut(&mut self.body).audience = Some(transport);
        self
    }

    /// What a subscriber's byte budget is charged while this waits in its queue.
    pub fn cost(&self) -> usize {
        self.body.payload.len() + self.room.len() + DELIVERY_OVERHEAD
    }

    /// The room (channel) it was published to.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// The payload as RESP subscribers receive it.
    pub fn payload(&self) -> &Bytes {
        &self.body.payload
    }

    /// The notification id, when this publication is a `new_notification`.
    pub fn notification_id(&self) -> Option<u64> {
        self.body.notification_id
    }

    /// The only transport it is delivered to, when [`Publication::only_for`] said so.
    pub fn audience(&self) -> Option<Transport> {
        self.body.audience
    }

    /// The event, when the payload alone would not reproduce it: an event with
    /// no argument or several (its envelope carries them as one list). A
    /// publication rebuilt elsewhere from its payload needs it to render the same.
    pub fn explicit_event(&self) -> Option<&Event> {
        self.body.event.get().filter(|e| e.args.len() != 1)
    }

    /// A publication rebuilt from its parts (as [`Publication::payload`] and
    /// [`Publication::explicit_event`] gave them): the event, when given, is
    /// what websocket clients receive instead of the payload's decoding.
    pub fn from_parts(room: &str, payload: Bytes, event: Option<Event>) -> Self {
        let p = Self::raw(room, payload);
        if let Some(event) = event {
            let _ = p.body.envelope.set(p.body.payload.clone());
            let _ = p.body.event.set(event);
        }
        p
    }

    /// The event websocket clients receive.
    pub fn as_event(&self) -> &Event {
        self.body
            .event
            .get_or_init(|| decode_envelope(&self.body.payload))
    }

    /// The JSON envelope `{"event": E, "data": D}`: what RESP subscribers
    /// receive for an event, and what native websocket clients receive.
    pub fn envelope(&self) -> &Bytes {
        self.body.envelope.get_or_init(|| {
            let e = self.as_event();
            Bytes::from(serde_json::json!({"event": e.name, "data": e.data()}).to_string())
        })
    }

    /// This publication rendered in `format`, rendered at most once per
    /// message (for the first few formats a process uses).
    pub fn frame(&self, format: &'static FrameFormat) -> Bytes {
        match self.body.frames.get(format.slot()) {
            Some(cached) => cached.get_or_init(|| (format.render)(self)).clone(),
            None => (format.render)(self),
        }
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

/// A subscriber's outbound budget, Redis's `client-output-buffer-limit pubsub`:
/// a subscriber is disconnected when what waits for it passes `hard_bytes`, or
/// stays above `soft_bytes` for longer than `soft_for`. `max_messages` bounds
/// the number of deliveries waiting as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Most deliveries waiting per subscriber.
    pub max_messages: usize,
    /// Bytes waiting that disconnect at once.
    pub hard_bytes: usize,
    /// Bytes waiting that disconnect when exceeded for `soft_for`.
    pub soft_bytes: usize,
    /// How long a subscriber may stay above `soft_bytes`.
    pub soft_for: Duration,
}

impl Default for OutputLimits {
    /// Redis's pubsub defaults: 32 MiB hard, 8 MiB for 60 s.
    fn default() -> Self {
        OutputLimits {
            max_messages: 65_536,
            hard_bytes: 32 * 1024 * 1024,
            soft_bytes: 8 * 1024 * 1024,
            soft_for: Duration::from_secs(60),
        }
    }
}

/// Why a delivery was refused to a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    Hard,
    Soft,
    Messages,
}

impl Overflow {
    fn reason(self) -> &'static str {
        match self {
            Overflow::Hard => "its output passed the hard limit",
            Overflow::Soft => "its output stayed over the soft limit too long",
            Overflow::Messages => "too many messages waiting",
        }
    }
}

/// The sending side of one subscriber's queue, with what waits in it.
struct Outbox {
    tx: mpsc::Sender<Delivery>,
    transport: Transport,
    /// Bytes charged for the deliveries waiting.
    queued: AtomicUsize,
    /// When the queue went over the soft limit, in milliseconds since the hub
    /// started, plus one; 0 while under it.
    over_soft_since: AtomicU64,
}

impl Outbox {
    /// Queues `d`, unless that would break the budget.
    fn offer(&self, d: Delivery, hub: &HubInner) -> Result<bool, Overflow> {
        if self.audience_excludes(&d) {
            return Ok(false);
        }
        let limits = &hub.limits;
        let cost = d.publication.cost();
        let queued = self.queued.fetch_add(cost, Ordering::AcqRel) + cost;
        let refuse = |why| {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            Err(why)
        };
        if queued > limits.hard_bytes {
            return refuse(Overflow::Hard);
        }
        if queued > limits.soft_bytes {
            let now = hub.started.elapsed().as_millis() as u64 + 1;
            match self
                .over_soft_since
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {}
                Err(since) if now.saturating_sub(since) > limits.soft_for.as_millis() as u64 => {
                    return refuse(Overflow::Soft)
                }
                Err(_) => {}
            }
        }
        match self.tx.try_send(d) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => refuse(Overflow::Messages),
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued.fetch_sub(cost, Ordering::AcqRel);
                Ok(false)
            }
        }
    }

    fn audience_excludes(&self, d: &Delivery) -> bool {
        d.publication
            .body
            .audience
            .is_some_and(|only| only != self.transport)
    }

    /// A delivery left the queue.
    fn taken(&self, d: &Delivery, soft_bytes: usize) {
        let left = self
            .queued
            .fetch_sub(d.publication.cost(), Ordering::AcqRel)
            .saturating_sub(d.publication.cost());
        if left <= soft_bytes {
            self.over_soft_since.store(0, Ordering::Release);
        }
    }
}

struct Member {
    outbox: Arc<Outbox>,
    kicked: CancellationToken,
    rooms: HashSet<Arc<str>>,
    patterns: HashSet<Arc<str>>,
}

type Members = HashMap<u64, Arc<Outbox>>;

#[derive(Default)]
struct Registry {
    rooms: HashMap<Arc<str>, Members>,
    patterns: HashMap<Arc<str>, Members>,
    /// The distinct patterns, shared with publishers so that they match them
    /// without holding the lock; replaced when a pattern appears or goes.
    pattern_list: Arc<Vec<Arc<str>>>,
    members: HashMap<u64, Member>,
}

impl Registry {
    fn refresh_pattern_list(&mut self) {
        self.pattern_list = Arc::new(self.patterns.keys().cloned().collect());
    }
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

/// Receives every publication made on this node, once local subscribers have
/// been offered it (the cluster bus). `offer` runs on the publisher's thread:
/// it must not block, and must not publish to the hub.
pub trait Tap: Send + Sync + 'static {
    /// A publication made on this node.
    fn offer(&self, publication: &Arc<Publication>);
}

/// The hub; cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    limits: OutputLimits,
    started: Instant,
    closing: CancellationToken,
    /// The last [`Hub::resync`] asked for (`None` before any).
    resync: tokio::sync::watch::Sender<Option<u64>>,
    stats: HubStats,
    connections: [AtomicU64; 3],
    presence: presence::Registry,
    /// Set once, at start-up, when a cluster bus is configured.
    tap: OnceLock<Arc<dyn Tap>>,
}

impl Hub {
    /// A hub whose subscribers may each have `queue_len` deliveries waiting,
    /// within the default byte budget.
    pub fn new(queue_len: usize) -> Hub {
        Hub::with_limits(OutputLimits {
            max_messages: queue_len,
            ..OutputLimits::default()
        })
    }

    /// A hub with these per-subscriber limits.
    pub fn with_limits(limits: OutputLimits) -> Hub {
        Hub {
            inner: Arc::new(HubInner {
                registry: RwLock::new(Registry::default()),
                next_id: AtomicU64::new(1),
                limits: OutputLimits {
                    max_messages: limits.max_messages.max(1),
                    ..limits
                },
                started: Instant::now(),
                closing: CancellationToken::new(),
                resync: tokio::sync::watch::Sender::new(None),
                stats: HubStats::default(),
                connections: Default::default(),
                presence: presence::Registry::default(),
                tap: OnceLock::new(),
            }),
        }
    }

    /// The per-subscriber limits.
    pub fn limits(&self) -> &OutputLimits {
        &self.inner.limits
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
        let (tx, rx) = mpsc::channel(self.inner.limits.max_messages);
        let kicked = self.inner.closing.child_token();
        let outbox = Arc::new(Outbox {
            tx,
            transport,
            queued: AtomicUsize::new(0),
            over_soft_since: AtomicU64::new(0),
        });
        self.write().members.insert(
            id,
            Member {
                outbox: outbox.clone(),
                kicked: kicked.clone(),
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
            outbox,
            kicked,
            closed: None,
            presence: None,
        }
    }

    /// Hands every later local publication to `tap` too; `false` (and nothing
    /// changes) when a tap is already set.
    pub fn set_tap(&self, tap: Arc<dyn Tap>) -> bool {
        self.inner.tap.set(tap).is_ok()
    }

    /// Publishes to `publication.room()`; returns how many subscribers it was queued
    /// for (room members plus matching pattern subscriptions, as Redis counts), on
    /// this node. The tap, when set, is offered it too.
    pub fn publish(&self, publication: Publication) -> usize {
        let publication = Arc::new(publication);
        let delivered = self.deliver(&publication);
        if let Some(tap) = self.inner.tap.get() {
            tap.offer(&publication);
        }
        delivered
    }

    /// Delivers a publication that came from the cluster bus to this node's
    /// subscribers only: it is never offered to the tap, so it cannot loop.
    pub fn publish_from_bus(&self, publication: Publication) -> usize {
        self.deliver(&Arc::new(publication))
    }

    fn deliver(&self, publication: &Arc<Publication>) -> usize {
        let room = publication.room();
        let mut reg = self.read();
        let patterns = reg.pattern_list.clone();
        let mut matched: Vec<&Arc<str>> = Vec::new();
        if !patterns.is_empty() {
            // Glob tests outside the lock: their cost grows with the patterns'
            // lengths, which subscribers choose.
            drop(reg);
            matched.extend(
                patterns
                    .iter()
                    .filter(|p| glob::matches(p.as_bytes(), room.as_bytes())),
            );
            reg = self.read();
        }
        let mut delivered = 0;
        let mut slow: Vec<(u64, Overflow)> = Vec::new();
        {
            let mut offer = |id: u64, outbox: &Outbox, pattern: Option<&Arc<str>>| {
                let d = Delivery {
                    publication: publication.clone(),
                    pattern: pattern.cloned(),
                };
                match outbox.offer(d, &self.inner) {
                    Ok(true) => delivered += 1,
                    Ok(false) => {}
                    Err(why) => slow.push((id, why)),
                }
            };
            if let Some(members) = reg.rooms.get(room) {
                for (id, outbox) in members {
                    offer(*id, outbox, None);
                }
            }
            for pattern in matched {
                if let Some(members) = reg.patterns.get(pattern) {
                    for (id, outbox) in members {
                        offer(*id, outbox, Some(pattern));
                    }
                }
            }
        }
        drop(reg);
        for (id, why) in slow {
            self.kick_slow(id, why);
        }
        let s = &self.inner.stats;
        s.published.fetch_add(1, Ordering::Relaxed);
        s.delivered.fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    fn kick_slow(&self, id: u64, why: Overflow) {
        let transport = {
            let reg = self.read();
            match reg.members.get(&id) {
                Some(m) if !m.kicked.is_cancelled() => {
                    m.kicked.cancel();
                    m.outbox.transport
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
        let limits = &self.inner.limits;
        tracing::warn!(
            subscriber = id,
            transport = transport.as_str(),
            hard_bytes = limits.hard_bytes,
            soft_bytes = limits.soft_bytes,
            soft_s = limits.soft_for.as_secs(),
            max_messages = limits.max_messages,
            "disconnecting a subscriber that does not keep up: {}",
            why.reason()
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
        let patterns_before = reg.patterns.len();
        for pattern in &member.patterns {
            remove_from(&mut reg.patterns, pattern, id);
        }
        if reg.patterns.len() != patterns_before {
            reg.refresh_pattern_list();
        }
        drop(reg);
        let transport = member.outbox.transport;
        self.inner.connections[transport as usize].fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("likewise_connections", "transport" => transport.as_str()).decrement(1.0);
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
        let outbox = member.outbox.clone();
        let map = if pattern {
            &mut reg.patterns
        } else {
            &mut reg.rooms
        };
        let before = map.len();
        map.entry(key).or_default().insert(id, outbox);
        if pattern && reg.patterns.len() != before {
            reg.refresh_pattern_list();
        }
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
            let before = map.len();
            remove_from(map, room, id);
            if pattern && reg.patterns.len() != before {
                reg.refresh_pattern_list();
            }
        }
        removed
    }

    /// Number of subscribers in `room` (not counting patterns), as `PUBSUB NUMSUB`.
    pub fn room_size(&self, room: &str) -> usize {
        self.read().rooms.get(room).map_or(0, HashMap::len)
    }

    /// Whether a publication to `room` would reach anyone, room members or pattern
    /// subscribers: lets a publisher skip rendering what nobody receives.
    pub fn has_audience(&self, room: &str) -> bool {
        let patterns = {
            let reg = self.read();
            if reg.rooms.get(room).is_some_and(|m| !m.is_empty()) {
                return true;
            }
            reg.pattern_list.clone()
        };
        patterns
            .iter()
            .any(|p| glob::matches(p.as_bytes(), room.as_bytes()))
    }

    /// Rooms with at least one subscriber whose name matches `pattern` (all rooms
    /// when `None`), as `PUBSUB CHANNELS`.
    pub fn rooms(&self, pattern: Option<&[u8]>) -> Vec<String> {
        // Names are collected under the lock, matched outside it.
        let names: Vec<Arc<str>> = self.read().rooms.keys().cloned().collect();
        let mut rooms: Vec<String> = names
            .iter()
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

    /// Asks every realtime session of this node to replay its user's stored
    /// notifications with ids above `after` (or above the last one it sent, if
    /// higher), skipping what it already sent: called when the node may have
    /// missed notifications published elsewhere (its cluster bus was cut off).
    pub fn resync(&self, after: u64) {
        self.inner.resync.send_replace(Some(after));
    }

    /// Follows [`Hub::resync`] requests made from now on.
    pub fn resyncs(&self) -> tokio::sync::watch::Receiver<Option<u64>> {
        let mut rx = self.inner.resync.subscribe();
        rx.mark_unchanged();
        rx
    }
}

fn remove_from(map: &mut HashMap<Arc<str>, Members>, key: &str, id: u64) {
    if let Some(members) = map.get_mut(key) {
        members.remove(&id);
        if members.is_empty() {
            map.remove(key);
        }
    }
}

/// One subscriber's membership and inbox. Dropping it leaves every room, and
/// closes the connection for presence when it tracks one.
pub struct Subscription {
    hub: Hub,
    id: u64,
    rx: mpsc::Receiver<Delivery>,
    outbox: Arc<Outbox>,
    kicked: CancellationToken,
    closed: Option<Closed>,
    /// Dropped with the subscription, just before it leaves its rooms.
    presence: Option<PresenceGuard>,
}

impl Subscription {
    /// Its id, unique for the life of the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Counts this subscription as an open connection of `user` for presence
    /// until it is dropped (see [`Hub::connect_user`]; `visible` says whether the
    /// user may be shown online). A subscription tracks one user; a later call
    /// replaces the earlier one.
    pub fn track_presence(&mut self, user: u64, visible: impl FnMut() -> bool) {
        self.presence = Some(self.hub.connect_user(user, visible));
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

    /// Bytes charged to this subscriber's budget for the deliveries waiting.
    pub fn queued_bytes(&self) -> usize {
        self.outbox.queued.load(Ordering::Acquire)
    }

    /// The next delivery; `None` once the subscription is closed (see
    /// [`Subscription::closed`] for why).
    pub async fn recv(&mut self) -> Option<Delivery> {
        if self.closed.is_some() {
            return None;
        }
        let d = tokio::select! {
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
        };
        if let Some(d) = &d {
            self.outbox.taken(d, self.hub.inner.limits.soft_bytes);
        }
        d
    }

    /// A delivery already waiting, without awaiting.
    pub fn try_recv(&mut self) -> Option<Delivery> {
        if self.kicked.is_cancelled() {
            return None;
        }
        let d = self.rx.try_recv().ok()?;
        self.outbox.taken(&d, self.hub.inner.limits.soft_bytes);
        Some(d)
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
        // Presence first: once the connection no longer counts (in the hub's
        // statistics), its presence change has been announced.
        drop(self.presence.take());
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
        assert!(hub.has_audience("user:1") && hub.has_audience("user:2"));
        assert!(hub.has_audience("user:3"), "through the pattern");
        assert!(!hub.has_audience("post:1"));
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

    static ARGS: FrameFormat = FrameFormat::new("args", |p| {
        Bytes::from(serde_json::to_string(&p.as_event().args).unwrap())
    });

    #[test]
    fn envelopes_and_frames_follow_the_envelope_rule_and_render_once() {
        let p = Publication::raw("r", Bytes::from(r#"{"event":"x","data":{"a":1}}"#));
        assert_eq!(p.as_event().name, "x");
        assert_eq!(p.envelope().as_ref(), br#"{"data":{"a":1},"event":"x"}"#);
        assert_eq!(p.frame(&ARGS).as_ref(), br#"[{"a":1}]"#);
        let first = p.frame(&ARGS);
        assert_eq!(first.as_ptr(), p.frame(&ARGS).as_ptr(), "cached");
        let p = Publication::raw("r", Bytes::from("plain"));
        assert_eq!(p.as_event().name, "message");
        assert_eq!(p.frame(&ARGS).as_ref(), br#"["plain"]"#);
        let p = Publication::event("r", "new_notification", serde_json::json!({"id": 3}));
        assert_eq!(
            serde_json::from_slice::<Value>(p.payload()).unwrap(),
            serde_json::json!({"event": "new_notification", "data": {"id": 3}})
        );
        let p = Publication::event_args("r", "e", vec![1.into(), 2.into()]);
        assert_eq!(p.frame(&ARGS).as_ref(), b"[1,2]");
        assert_eq!(p.as_event().data(), serde_json::json!([1, 2]));
    }

    fn budget(hard: usize, soft: usize, soft_for: Duration) -> Hub {
        Hub::with_limits(OutputLimits {
            max_messages: 1_000_000,
            hard_bytes: hard,
            soft_bytes: soft,
            soft_for,
        })
    }

    fn kib(n: usize) -> Publication {
        Publication::raw(
            "r",
            Bytes::from(vec![b'x'; n * 1024 - "r".len() - DELIVERY_OVERHEAD]),
        )
    }

    #[tokio::test]
    async fn a_subscriber_is_dropped_at_its_hard_byte_limit_whatever_the_message_count() {
        let hub = budget(10 * 1024, 8 * 1024, Duration::from_secs(60));
        let mut stalled = hub.subscribe(Transport::Resp);
        let mut reader = hub.subscribe(Transport::Ws);
        stalled.join("r");
        reader.join("r");
        for _ in 0..10 {
            assert_eq!(hub.publish(kib(1)), 2);
            assert!(reader.recv().await.is_some());
        }
        assert_eq!(stalled.queued_bytes(), 10 * 1024);
        assert_eq!(reader.queued_bytes(), 0);
        assert_eq!(hub.publish(kib(1)), 1, "the eleventh KiB is over the limit");
        assert!(stalled.recv().await.is_none());
        assert_eq!(stalled.closed(), Some(Closed::TooSlow));
        assert_eq!(hub.room_size("r"), 1);
        assert!(reader.recv().await.is_some());
    }

    #[tokio::test]
    async fn the_soft_limit_allows_a_burst_for_a_while_then_drops() {
        let hub = budget(100 * 1024, 2 * 1024, Duration::from_millis(50));
        let mut s = hub.subscribe(Transport::SocketIo);
        s.join("r");
        for _ in 0..4 {
            assert_eq!(hub.publish(kib(1)), 1);
        }
        // Draining below the soft limit forgives the burst.
        for _ in 0..3 {
            s.recv().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(hub.publish(kib(1)), 1);
        assert_eq!(
            hub.publish(kib(1)),
            1,
            "over soft again, the clock restarts"
        );
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(hub.publish(kib(1)), 0, "over soft for longer than allowed");
        assert_eq!(hub.stats().dropped_slow.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn a_publication_for_one_transport_skips_the_others() {
        let hub = Hub::new(8);
        let mut resp = hub.subscribe(Transport::Resp);
        let mut ws = hub.subscribe(Transport::Ws);
        resp.join("flask-socketio");
        ws.join("flask-socketio");
        let p = Publication::raw("flask-socketio", Bytes::from("{}")).only_for(Transport::Resp);
        assert_eq!(hub.publish(p), 1);
        assert!(resp.recv().await.is_some());
        assert!(ws.try_recv().is_none());
    }

    #[test]
    fn patterns_are_matched_from_a_list_that_follows_subscriptions() {
        let hub = Hub::new(8);
        let a = hub.subscribe(Transport::Resp);
        let b = hub.subscribe(Transport::Resp);
        a.join_pattern("user:*");
        b.join_pattern("user:*");
        b.join_pattern("post:*");
        assert_eq!(hub.read().pattern_list.len(), 2);
        assert_eq!(hub.publish(Publication::raw("user:1", Bytes::new())), 2);
        b.leave_pattern("post:*");
        assert_eq!(hub.read().pattern_list.len(), 1);
        drop(a);
        drop(b);
        assert!(hub.read().pattern_list.is_empty());
        assert_eq!(hub.publish(Publication::raw("user:1", Bytes::new())), 0);
    }

    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl Tap for Recorder {
        fn offer(&self, publication: &Arc<Publication>) {
            self.0.lock().unwrap().push(publication.room().to_owned());
        }
    }

    #[tokio::test]
    async fn the_tap_sees_local_publications_but_never_those_from_the_bus() {
        let hub = Hub::new(8);
        let tap = Arc::new(Recorder::default());
        assert!(hub.set_tap(tap.clone()));
        assert!(!hub.set_tap(Arc::new(Recorder::default())), "one tap");
        let mut s = hub.subscribe(Transport::Ws);
        s.join("r");
        assert_eq!(hub.publish(Publication::raw("r", Bytes::from("local"))), 1);
        assert_eq!(hub.publish(Publication::raw("empty", Bytes::new())), 0);
        assert_eq!(
            hub.publish_from_bus(Publication::raw("r", Bytes::from("remote"))),
            1
        );
        assert_eq!(
            *tap.0.lock().unwrap(),
            ["r", "empty"],
            "rooms nobody is in too"
        );
        assert_eq!(
            s.recv().await.unwrap().publication.payload().as_ref(),
            b"local"
        );
        assert_eq!(
            s.recv().await.unwrap().publication.payload().as_ref(),
            b"remote"
        );
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
