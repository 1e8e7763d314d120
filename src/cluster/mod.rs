//! The cluster bus: every node publishes its hub events to one real Redis (or
//! Valkey) server and subscribes to them, so that a client on any node receives
//! what any node publishes — the way Flask-SocketIO servers share a
//! `message_queue`.
//!
//! It owns the `[cluster]` settings ([`ClusterSettings`]), the message format
//! ([`wire`]) and the two connections to Redis: one for `PUBLISH`, one for
//! `SUBSCRIBE` (a subscribed connection can send nothing else). It taps the hub
//! ([`crate::hub::Tap`]): every publication made on this node is queued for
//! Redis after local delivery; every message from Redis carrying another node's
//! id is delivered locally with [`Hub::publish_from_bus`], which never hands it
//! back to the bus. A node ignores its own messages, so nothing loops and
//! nothing arrives twice.
//!
//! What the bus guarantees, and what not:
//! - **At most once across nodes.** A publication reaches another node's
//!   subscribers at most once, and only if both nodes are connected to Redis
//!   when it passes (Redis pub/sub keeps nothing). Local delivery never depends
//!   on the bus.
//! - **Publishers never wait.** Publications wait for Redis in a queue with a
//!   byte budget (`queue_bytes`); over it, while Redis is unreachable, or for a
//!   message over `max_message_bytes`, the publication is dropped for the other
//!   nodes, counted in `likewise_cluster_dropped_total{reason}` and logged
//!   (once per episode, not once per message).
//! - **Durable notifications are not lost**, because they are stored: a client
//!   that resumes with `since` receives whatever the bus dropped. On an edge
//!   ([`Bus::resync_after_gaps`]) open connections need not reconnect: when its
//!   subscription to Redis was cut, or when the primary ([`Bus::announce_gaps`])
//!   says on `{prefix}:resync` that it lost publications (it does so before
//!   anything else once it can publish again), the edge asks every session to
//!   replay its user's notifications above the highest id the bus brought
//!   ([`Hub::resync`]). Notification ids follow commit order and the primary
//!   publishes in that order, so nothing after that mark has been received.
//! - Order is kept per publishing node while the connections stay up.
//!
//! Faults: both connections have deadlines on connect and on every command, a
//! heartbeat `PING` finds a silent Redis, and a lost connection is reopened with
//! exponential backoff and jitter. While either connection is down the node keeps
//! delivering locally, `/healthz` says `degraded` with the reason, and
//! `likewise_cluster_bus_up` is 0. State changes are logged once each.
//!
//! Flask-SocketIO emitters pointed at the same Redis: the subscribe connection
//! also subscribes to python-socketio's channels ([`crate::resp::bridge::CHANNELS`])
//! and decodes their messages with the RESP listener's bridge
//! ([`crate::resp::bridge::relay_via`]: same parsing, same room mapping, same
//! [`Bounds`]). An emit is delivered with [`Hub::publish_from_bus`], to this
//! node's clients only: every node reads it from Redis itself, so re-publishing
//! it on the bus would deliver it twice. Refused messages are counted as
//! `malformed` (`received_too_large` over `max_message_bytes`) and dropped.
//!
//! Presence across nodes (the `presence` module): the bus also installs the hub's
//! presence hook, keeps which node holds which user in the same Redis, and
//! announces each global change once (a user is online while any live node
//! holds one of their connections), on its own channel `{prefix}:presence`
//! which the subscribe connection also follows: every node, the announcing one
//! included, delivers those announcements to its clients in Redis's order.
//!
//! The bus never touches the store, and knows the hub only through its
//! publish/tap and presence-hook interfaces.

mod link;
mod presence;
mod settings;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::{Hub, Publication, Tap};
use crate::resp::bridge::Bounds;
pub use settings::{redact, ClusterSettings};

/// The two connections to Redis, for health and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Publish,
    Subscribe,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Side::Publish => "publish",
            Side::Subscribe => "subscribe",
        }
    }
}

/// Bus counters (also exported as metrics).
#[derive(Debug, Default)]
pub struct BusStats {
    /// Publications sent to Redis.
    pub published: AtomicU64,
    /// Publications from other nodes delivered locally.
    pub received: AtomicU64,
    /// Flask-SocketIO messages read from Redis and handled locally (emits
    /// delivered; methods that concern Python-side clients ignored).
    pub bridged: AtomicU64,
    /// Publications dropped, outgoing or incoming, whatever the reason.
    pub dropped: AtomicU64,
}

/// The cluster bus of one node; cheap to clone.
#[derive(Clone)]
pub struct Bus {
    shared: Arc<Shared>,
}

struct Shared {
    settings: ClusterSettings,
    client: redis::Client,
    /// Where the bus connects, without the password.
    shown: String,
    channel: String,
    /// Where presence changes are announced (`{prefix}:presence`).
    presence_channel: String,
    /// Where a node that lost publications says so (`{prefix}:resync`).
    resync_channel: String,
    /// Whether this node says so: set on the node whose publications carry
    /// stored notifications (the primary).
    announces_gaps: AtomicBool,
    /// Whether this node replays missed notifications to its clients after a gap
    /// (an edge: its notifications all come through the bus).
    resyncs_after_gaps: AtomicBool,
    /// Set when a publication of this node was lost for the other nodes, until
    /// the next notice is sent.
    gap: AtomicBool,
    /// The highest notification id received from the bus.
    mark: AtomicU64,
    node: u64,
    hub: Hub,
    /// Bounds on the Flask-SocketIO emits read from Redis.
    bridge: Bounds,
    tx: mpsc::UnboundedSender<Arc<Publication>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Arc<Publication>>>>,
    /// Bytes charged for the publications waiting in `tx`.
    queued: AtomicUsize,
    /// Set while over budget, so that an episode of drops is logged once.
    overflowing: AtomicBool,
    publish_up: AtomicBool,
    subscribe_up: AtomicBool,
    /// Why each side is down (`None` while up or not yet tried).
    down: Mutex<[Option<String>; 2]>,
    stats: BusStats,
    /// Presence across nodes: the hub's hook and its task's shared state.
    presence: Arc<presence::Presence>,
}

impl Bus {
    /// A bus for `hub` from `settings` (whose `redis` must be set), tapping the
    /// hub at once; connections open when [`Bus::start`] runs.
    /// Flask-SocketIO emits read from that Redis are refused beyond `bridge`.
    pub fn new(settings: &ClusterSettings, hub: Hub, bridge: Bounds) -> anyhow::Result<Bus> {
        settings.validate().map_err(anyhow::Error::msg)?;
        let url = settings
            .redis
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the cluster bus needs cluster.redis"))?;
        let client = redis::Client::open(url).map_err(|_| {
            anyhow::anyhow!("cluster.redis {} is not a valid Redis URL", redact(url))
        })?;
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            settings: settings.clone(),
            client,
            shown: redact(url),
            channel: settings.channel(),
            presence_channel: settings.presence_channel(),
            resync_channel: format!("{}:resync", settings.channel_prefix),
            announces_gaps: AtomicBool::new(false),
            resyncs_after_gaps: AtomicBool::new(false),
            gap: AtomicBool::new(false),
            mark: AtomicU64::new(0),
            // Random, so that restarted or cloned nodes never share an id.
            node: rand::random::<u64>() | 1,
            hub: hub.clone(),
            bridge,
            tx,
            rx: Mutex::new(Some(rx)),
            queued: AtomicUsize::new(0),
            overflowing: AtomicBool::new(false),
            publish_up: AtomicBool::new(false),
            subscribe_up: AtomicBool::new(false),
            down: Mutex::new([
                Some("not connected yet".to_owned()),
                Some("not connected yet".to_owned()),
            ]),
            stats: BusStats::default(),
            presence: Arc::new(presence::Presence::new(
                settings.presence_queue,
                settings.command_timeout(),
            )),
        });
        metrics::gauge!("likewise_cluster_bus_up").set(0.0);
        if !hub.set_tap(shared.clone()) {
            anyhow::bail!("the hub already has a tap: one cluster bus per hub");
        }
        if !hub.set_presence_hook(shared.presence.clone()) {
            anyhow::bail!("the hub already has a presence hook: one cluster bus per hub");
        }
        Ok(Bus { shared })
    }

    /// This node's id on the bus.
    pub fn node_id(&self) -> u64 {
        self.shared.node
    }

    /// The Redis channel the bus uses.
    pub fn channel(&self) -> &str {
        &self.shared.channel
    }

    /// Counters.
    pub fn stats(&self) -> &BusStats {
        &self.shared.stats
    }

    /// Whether both connections to Redis are up.
    pub fn is_up(&self) -> bool {
        self.shared.publish_up.load(Ordering::Acquire)
            && self.shared.subscribe_up.load(Ordering::Acquire)
    }

    /// Why the bus is degraded, `None` while both connections are up.
    pub fn degraded(&self) -> Option<String> {
        if self.is_up() {
            return None;
        }
        let down = self.shared.down.lock().unwrap_or_else(|p| p.into_inner());
        let why: Vec<String> = [Side::Publish, Side::Subscribe]
            .into_iter()
            .filter_map(|side| {
                down[side as usize]
                    .as_ref()
                    .map(|e| format!("{} connection: {e}", side.as_str()))
            })
            .collect();
        Some(format!(
            "cluster bus: Redis at {} unreachable ({}); events are delivered on this node only",
            self.shared.shown,
            why.join("; ")
        ))
    }

    /// Opens the connections and serves until `shutdown`; the tasks are tracked by
    /// `tracker`. A second call does nothing.
    pub fn start(&self, shutdown: CancellationToken, tracker: &TaskTracker) {
        let rx = self
            .shared
            .rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(rx) = rx else { return };
        tracker.spawn(link::publish_loop(
            self.shared.clone(),
            rx,
            shutdown.clone(),
        ));
        tracker.spawn(link::subscribe_loop(self.shared.clone(), shutdown.clone()));
        tracker.spawn(presence::presence_loop(self.shared.clone(), shutdown));
    }

    /// Which of `users` are online in the cluster (shown by a node whose
    /// heartbeat is fresh), in the order asked, each once; `None` while Redis
    /// cannot answer (then ask the hub, which knows this node only).
    pub async fn online(&self, users: &[u64]) -> Option<Vec<u64>> {
        presence::online(&self.shared, users).await
    }

    /// Waits until this node's presence changes made so far are written to
    /// Redis (at most one command deadline; at once while Redis is
    /// unreachable), so that a read that follows sees them.
    pub async fn presence_settled(&self) {
        self.shared.presence.settled().await
    }

    /// Makes this node say on Redis when publications of its own were lost
    /// (Redis unreachable, the queue over budget), before it publishes again:
    /// for the node whose publications carry stored notifications.
    pub fn announce_gaps(&self) {
        self.shared.announces_gaps.store(true, Ordering::Release);
    }

    /// Makes this node's realtime sessions replay their users' stored
    /// notifications from the last one the bus brought ([`Hub::resync`]) when
    /// the bus may have lost some: after its own subscription to Redis was
    /// cut, and when another node says it lost publications. For a node whose
    /// notifications all come through the bus (an edge).
    pub fn resync_after_gaps(&self) {
        self.shared
            .resyncs_after_gaps
            .store(true, Ordering::Release);
    }

    /// Dead nodes whose entries this node has swept.
    pub fn presence_sweeps(&self) -> u64 {
        self.shared.presence.sweeps()
    }

    /// Stops this node's presence heartbeats and writes at once, without its
    /// graceful leave, as if the process had died: for fault tests, reachable
    /// from no request.
    #[doc(hidden)]
    pub fn abandon_presence(&self) {
        self.shared.presence.abandon();
    }
}

impl Shared {
    /// A publication of this node was lost for the other nodes.
    fn lose_publication(&self, reason: &'static str) {
        self.gap.store(true, Ordering::Release);
        self.drop_publication(reason);
    }

    /// The other nodes may have missed notifications with ids above the
    /// highest this node received: its clients replay them (if it follows
    /// gaps at all).
    fn resync_after_gap(&self) {
        if self.resyncs_after_gaps.load(Ordering::Acquire) {
            let after = self.mark.load(Ordering::Acquire);
            tracing::info!(after, "cluster bus: publications may have been lost; clients replay the notifications since");
            self.hub.resync(after);
        }
    }

    fn drop_publication(&self, reason: &'static str) {
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("likewise_cluster_dropped_total", "reason" => reason).increment(1);
    }

    /// Records a side's state; logs only when it changes.
    fn set_state(&self, side: Side, result: Result<(), String>) {
        let flag = match side {
            Side::Publish => &self.publish_up,
            Side::Subscribe => &self.subscribe_up,
        };
        let up = result.is_ok();
        let was = flag.swap(up, Ordering::AcqRel);
        let first = {
            let mut down = self.down.lock().unwrap_or_else(|p| p.into_inner());
            let first = down[side as usize].as_deref() == Some("not connected yet");
            down[side as usize] = result.as_ref().err().cloned();
            first
        };
        let both =
            self.publish_up.load(Ordering::Acquire) && self.subscribe_up.load(Ordering::Acquire);
        metrics::gauge!("likewise_cluster_bus_up").set(if both { 1.0 } else { 0.0 });
        match result {
            Ok(()) if !was => tracing::info!(
                redis = %self.shown,
                channel = %self.channel,
                side = side.as_str(),
                "cluster bus connected"
            ),
            Err(e) if was || first => tracing::warn!(
                redis = %self.shown,
                side = side.as_str(),
                error = %e,
                "cluster bus down: events reach this node's clients only until Redis is back; \
                 reconnecting with backoff"
            ),
            _ => {}
        }
    }
}

impl Tap for Shared {
    fn offer(&self, publication: &Arc<Publication>) {
        if !self.publish_up.load(Ordering::Acquire) {
            // Nothing would drain the queue; what it held would arrive late and
            // stale. Clients that missed a notification recover it with `since`.
            self.lose_publication("bus_down");
            return;
        }
        let cost = publication.cost();
        let queued = self.queued.fetch_add(cost, Ordering::AcqRel) + cost;
        if queued > self.settings.queue_bytes {
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            self.lose_publication("queue_full");
            if !self.overflowing.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    queue_bytes = self.settings.queue_bytes,
                    "cluster bus: Redis does not keep up; dropping publications for the other \
                     nodes until the queue drains"
                );
            }
            return;
        }
        if self.tx.send(publication.clone()).is_err() {
            // The publishing task is gone (shutting down).
            self.queued.fetch_sub(cost, Ordering::AcqRel);
            self.lose_publication("bus_down");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const BOUNDS: Bounds = Bounds {
        max_rooms: 4,
        max_room_bytes: 64,
    };

    fn bus(queue_bytes: usize) -> Bus {
        let settings = ClusterSettings {
            // Never connected in these tests.
            redis: Some("redis://127.0.0.1:1/0".into()),
            queue_bytes,
            max_message_bytes: 1024,
            ..ClusterSettings::default()
        };
        Bus::new(&settings, Hub::new(8), BOUNDS).unwrap()
    }

    fn kib() -> Arc<Publication> {
        Arc::new(Publication::raw("r", Bytes::from(vec![b'x'; 900])))
    }

    #[test]
    fn offers_are_dropped_while_redis_is_down_and_over_the_byte_budget() {
        let bus = bus(2048);
        let shared = &bus.shared;
        shared.offer(&kib());
        assert_eq!(shared.stats.dropped.load(Ordering::Relaxed), 1, "bus down");
        shared.publish_up.store(true, Ordering::Release);
        shared.offer(&kib());
        shared.offer(&kib());
        assert_eq!(shared.stats.dropped.load(Ordering::Relaxed), 1);
        shared.offer(&kib());
        assert_eq!(
            shared.stats.dropped.load(Ordering::Relaxed),
            2,
            "over budget"
        );
        assert!(shared.queued.load(Ordering::Acquire) <= 2048);
        assert!(shared.overflowing.load(Ordering::Acquire));
    }

    #[test]
    fn the_bus_is_degraded_until_both_connections_are_up_and_says_where_without_the_password() {
        let settings = ClusterSettings {
            redis: Some("redis://:hunter2@127.0.0.1:1/0".into()),
            ..ClusterSettings::default()
        };
        let bus = Bus::new(&settings, Hub::new(8), BOUNDS).unwrap();
        let why = bus.degraded().unwrap();
        assert!(
            why.contains("127.0.0.1:1") && !why.contains("hunter2"),
            "{why}"
        );
        bus.shared.set_state(Side::Publish, Ok(()));
        assert!(bus.degraded().is_some());
        bus.shared.set_state(Side::Subscribe, Ok(()));
        assert!(bus.degraded().is_none() && bus.is_up());
        bus.shared
            .set_state(Side::Subscribe, Err("the connection closed".into()));
        let why = bus.degraded().unwrap();
        assert!(
            why.contains("subscribe connection: the connection closed"),
            "{why}"
        );
        assert!(!why.contains("publish connection"), "{why}");
    }
}
