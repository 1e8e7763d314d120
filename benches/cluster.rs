//! The cluster, measured through a real `redis-server` on loopback (started here
//! on a free port, without persistence).
//!
//! The bus alone, two hubs in this process:
//! 1. throughput: publications made on node A as fast as one thread can, in bursts
//!    that fit the bus's queue, received by a subscriber on node B (publications/s,
//!    and how many were dropped);
//! 2. latency: publications at a steady 1,000/s from A, each stamped with its send
//!    time, received on B (p50/p99/max).
//!
//! Then whole nodes on loopback ports in this process, over real websockets and
//! HTTP: a primary alone, and a primary with two edges joined by the bus, in the
//! same run and with the same loads:
//! 3. fan-out: `FANOUT_SUBSCRIBERS` websockets in one room (split across the edges,
//!    or all on the primary alone), publications through the primary's
//!    `POST /api/admin/publish` at a fixed rate, then as fast as `PUBLISHERS`
//!    concurrent requests go: deliveries/s, deliveries missing, and at the fixed
//!    rate how long a publication takes to reach every subscriber;
//! 4. like → `new_notification` latency at a steady 1,000 likes/s: the likes sent
//!    through edge A's `/api/`, the author's websocket on edge B (or both on the
//!    primary alone): p50/p99/max, and notifications lost;
//! 5. idle websockets held by the two edges (`LIKEWISE_BENCH_IDLE_PER_EDGE`, 3,000
//!    each by default), opened by a child process so that this process's RSS
//!    growth is the nodes' cost alone, then one broadcast that every one of them
//!    must receive.
//!
//! Prints a table at the end, and exits non-zero when a delivery is missing where
//! none may be: at the fixed fan-out rate, any like notification, any idle
//! connection's broadcast (as fast as possible, the bus may drop by design: those
//! are reported). Run with `cargo bench --bench cluster`; needs `redis-server` on
//! the PATH (the bench is skipped without it).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use likewise::cluster::{Bus, ClusterSettings};
use likewise::config::Settings;
use likewise::edge::{Edge, EdgeSettings};
use likewise::http::AppState;
use likewise::hub::{Hub, Publication, Transport};
use likewise::resp::bridge::Bounds;
use likewise::startup::Application;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const THROUGHPUT_EVENTS: u64 = 200_000;
const BURST: u64 = 2_000;
const LATENCY_EVENTS: usize = 3_000;

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
/// Websockets in the fan-out room.
const FANOUT_SUBSCRIBERS: usize = 500;
/// Publications per second of the fixed-rate fan-out, and how many.
const FANOUT_RATE: u64 = 50;
const FANOUT_FIXED: u64 = 250;
/// Publications of the as-fast-as-possible fan-out, and the requests in flight.
const FANOUT_FAST: u64 = 1_000;
const PUBLISHERS: usize = 8;
/// Users liking, posts each likes, likes per second: 5,000 likes in 5 s.
const LIKERS: usize = 50;
const POSTS: usize = 100;
const LIKE_RATE: u64 = 1_000;
/// Idle websockets per edge, unless `LIKEWISE_BENCH_IDLE_PER_EDGE` says otherwise.
const IDLE_PER_EDGE: usize = 3_000;
/// Set in the child process that holds the idle websockets: `TOKEN@ADDR,ADDR@N`.
const CLIENTS_ENV: &str = "LIKEWISE_BENCH_CLUSTER_CLIENTS";

/// Deliveries found missing where none may be; the bench exits non-zero if any.
static FAILURES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn fail(what: String) {
    eprintln!("FAILED: {what}");
    FAILURES.lock().unwrap().push(what);
}

fn main() {
    if let Ok(spec) = std::env::var(CLIENTS_ENV) {
        hold_idle_connections(&spec);
        return;
    }
    common::raise_fd_limit();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!("load average at start: {}", common::load_average());
        bus_alone(redis.port).await;
        // The edges first: their idle connections' memory is measured on a
        // process that has not yet freed (and so could reuse) anything.
        let edges = measure_nodes(Nodes::with_edges(&redis.url()).await).await;
        let alone = measure_nodes(Nodes::alone().await).await;
        print_table(&[&alone, &edges]);
        println!("load average at end: {}", common::load_average());
    });
    drop(redis);
    let failures = FAILURES.lock().unwrap();
    if !failures.is_empty() {
        eprintln!("{} check(s) failed:", failures.len());
        for f in failures.iter() {
            eprintln!("  {f}");
        }
        std::process::exit(1);
    }
}

/// A `redis-server` child on a free loopback port, killed on drop.
struct RedisServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one and waits for its ready line; `None` (and a note) without
    /// `redis-server` on the PATH.
    fn start() -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = tempfile::tempdir().expect("temp dir");
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                eprintln!("cluster bench skipped: cannot start redis-server ({e})");
                return None;
            }
        };
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        for line in lines.by_ref() {
            if line
                .expect("redis-server output")
                .contains("Ready to accept")
            {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Some(RedisServer {
            child,
            port,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parts 1 and 2: two hubs joined by the bus, no HTTP and no websockets.
async fn bus_alone(port: u16) {
    let settings = ClusterSettings {
        redis: Some(format!("redis://127.0.0.1:{port}/0")),
        // A cluster of its own on the shared server, apart from the nodes' below.
        channel_prefix: "bench-hubs".to_owned(),
        ..ClusterSettings::default()
    };
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let (hub_a, hub_b) = (Hub::new(1 << 20), Hub::new(1 << 20));
    // The defaults of `limits.resp_bridge_max_rooms` and `resp_max_channel_bytes`.
    let bridge = Bounds {
        max_rooms: 256,
        max_room_bytes: 1024,
    };
    let bus_a = Bus::new(&settings, hub_a.clone(), bridge).expect("bus A");
    let bus_b = Bus::new(&settings, hub_b.clone(), bridge).expect("bus B");
    bus_a.start(shutdown.clone(), &tracker);
    bus_b.start(shutdown.clone(), &tracker);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(bus_a.is_up() && bus_b.is_up()) {
        assert!(Instant::now() < deadline, "the buses did not connect");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // 1. Throughput.
    let mut sub = hub_b.subscribe(Transport::Resp);
    sub.join("bench");
    let payload = Bytes::from(r#"{"event":"post_updated","data":{"id":12345,"likes":678}}"#);
    let started = Instant::now();
    let mut received = 0u64;
    let mut sent = 0u64;
    while sent < THROUGHPUT_EVENTS {
        for _ in 0..BURST {
            hub_a.publish(Publication::raw("bench", payload.clone()));
        }
        sent += BURST;
        // Wait for most of the burst before the next, so the queue is the only
        // limit being measured, not the byte budget.
        while received + BURST / 2 < sent - bus_a.stats().dropped.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
                Ok(Some(_)) => received += 1,
                _ => break,
            }
        }
    }
    let dropped = bus_a.stats().dropped.load(Ordering::Relaxed);
    while received < sent - dropped {
        match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
            Ok(Some(_)) => received += 1,
            _ => break,
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "cluster throughput: {sent} publications A -> Redis -> B in {secs:.2} s = {:.0}/s \
         received, {dropped} dropped",
        received as f64 / secs
    );

    // 2. Latency at 1,000/s, received by a task of its own so that the
    // measurement is not rounded up to the sender's tick.
    let origin = Instant::now();
    let receiver = tokio::spawn(async move {
        let mut latencies = Vec::with_capacity(LATENCY_EVENTS);
        while latencies.len() < LATENCY_EVENTS {
            match tokio::time::timeout(Duration::from_secs(5), sub.recv()).await {
                Ok(Some(d)) => {
                    let at: u64 = std::str::from_utf8(d.publication.payload())
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    latencies.push(origin.elapsed().as_nanos() as u64 - at);
                }
                _ => break,
            }
        }
        latencies
    });
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..LATENCY_EVENTS {
        tick.tick().await;
        let at = origin.elapsed().as_nanos() as u64;
        hub_a.publish(Publication::raw("bench", Bytes::from(at.to_string())));
    }
    let mut latencies = receiver.await.expect("receiver");
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |ns| *ns as f64 / 1e6)
    };
    println!(
        "cluster latency at 1,000/s: {} of {LATENCY_EVENTS} received, p50 {:.3} ms, p99 {:.3} ms, \
         max {:.3} ms",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
}

/// The nodes of one configuration, all in this process.
struct Nodes {
    /// "primary alone" or "primary + 2 edges".
    name: &'static str,
    primary: SocketAddr,
    /// Where realtime clients connect: the edges, or the primary alone.
    realtime: Vec<SocketAddr>,
    /// Where likes are sent: edge A, or the primary alone.
    api: SocketAddr,
    /// The primary's state, for its bus counters.
    state: AppState,
    shutdown: CancellationToken,
    running: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Nodes {
    /// The primary's settings: the bench's clients all come from loopback, so
    /// no per-address cap and no registration throttle get in the way.
    fn primary_settings(dir: &std::path::Path) -> Settings {
        let mut settings = Settings::for_tests(dir);
        settings.resp = None;
        settings.workers = Settings::default().workers;
        settings.admin_token = Some(ADMIN.to_owned());
        settings.limits.max_connections_per_ip = 0;
        settings.accounts.registrations_per_ip = 100_000;
        settings
    }

    /// A primary without the bus.
    async fn alone() -> Nodes {
        let dir = tempfile::tempdir().expect("temp dir");
        let shutdown = CancellationToken::new();
        let app = Application::build(Self::primary_settings(dir.path()))
            .await
            .expect("primary builds");
        let primary = app.http_addr();
        let state = app.state().clone();
        let running = vec![tokio::spawn(app.run_until_stopped(shutdown.clone()))];
        Nodes {
            name: "primary alone",
            primary,
            realtime: vec![primary],
            api: primary,
            state,
            shutdown,
            running,
            _dir: dir,
        }
    }

    /// A primary and two edges, all on the bus through `redis`.
    async fn with_edges(redis: &str) -> Nodes {
        let dir = tempfile::tempdir().expect("temp dir");
        let shutdown = CancellationToken::new();
        let cluster = ClusterSettings {
            redis: Some(redis.to_owned()),
            ..ClusterSettings::default()
        };
        let mut settings = Self::primary_settings(dir.path());
        settings.cluster = cluster.clone();
        let app = Application::build(settings).await.expect("primary builds");
        let primary = app.http_addr();
        let state = app.state().clone();
        let mut running = vec![tokio::spawn(app.run_until_stopped(shutdown.clone()))];
        let mut realtime = Vec::new();
        for _ in 0..2 {
            let edge = Edge::build(edge_settings(primary, &cluster))
                .await
                .expect("edge builds");
            realtime.push(edge.http_addr());
            running.push(tokio::spawn(edge.run_until_stopped(shutdown.clone())));
        }
        let nodes = Nodes {
            name: "primary + 2 edges",
            primary,
            api: realtime[0],
            realtime,
            state,
            shutdown,
            running,
            _dir: dir,
        };
        nodes.await_bus().await;
        nodes
    }

    /// Returns once a publication on the primary reaches a websocket on every
    /// edge: each node is then subscribed to the bus.
    async fn await_bus(&self) {
        let http = Http::new();
        let (_, token) = http.register(self.primary, "bus-probe").await;
        for addr in &self.realtime {
            let mut ws = open(*addr, &token).await.expect("probe websocket");
            common::subscribe(&mut ws, "public:probe").await;
            let deadline = Instant::now() + Duration::from_secs(20);
            'probe: loop {
                assert!(Instant::now() < deadline, "the bus never reached {addr}");
                http.publish(self.primary, "public:probe", "probe", json!(null))
                    .await;
                let wait = tokio::time::sleep(Duration::from_millis(100));
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        m = ws.next() => {
                            let m = m.expect("probe open").expect("probe ok");
                            if m.to_text().unwrap_or("").contains("\"probe\"") {
                                break 'probe;
                            }
                        }
                        _ = &mut wait => break,
                    }
                }
            }
        }
    }

    fn bus_dropped(&self) -> u64 {
        self.state
            .cluster
            .as_ref()
            .map_or(0, |bus| bus.stats().dropped.load(Ordering::Relaxed))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.running {
            let _ = task.await;
        }
    }
}

/// An edge forwarding to `primary` and on the bus: it serves `/ws` and
/// `/socket.io/`, asking the primary about tokens with the admin token.
fn edge_settings(primary: SocketAddr, cluster: &ClusterSettings) -> EdgeSettings {
    let mut settings = EdgeSettings::for_tests(primary);
    settings.limits.max_connections_per_ip = 0;
    settings.cluster = cluster.clone();
    settings.admin_token = Some(ADMIN.to_owned());
    settings
}

/// JSON over HTTP to any node.
struct Http {
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            client: reqwest::Client::new(),
        }
    }

    /// Sends a request and returns the JSON answer; `None` if it failed.
    async fn send(
        &self,
        method: reqwest::Method,
        addr: SocketAddr,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Option<Value> {
        let mut req = self
            .client
            .request(method, format!("http://{addr}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.ok()?;
        if !resp.status().is_success() {
            eprintln!("{path}: {}", resp.status());
            return None;
        }
        Some(resp.json().await.unwrap_or(Value::Null))
    }

    async fn register(&self, addr: SocketAddr, name: &str) -> (u64, String) {
        let body: Value = self
            .client
            .post(format!("http://{addr}/api/users"))
            .json(&json!({"name": name, "password": "benchmark-password"}))
            .send()
            .await
            .expect("register")
            .json()
            .await
            .expect("JSON");
        (
            body["user"]["id"].as_u64().expect("user id"),
            body["token"].as_str().expect("token").to_owned(),
        )
    }

    async fn publish(&self, primary: SocketAddr, room: &str, event: &str, data: Value) -> bool {
        self.send(
            reqwest::Method::POST,
            primary,
            "/api/admin/publish",
            ADMIN,
            Some(json!({"room": room, "event": event, "data": data})),
        )
        .await
        .is_some()
    }
}

use common::Ws;

/// Opens a websocket on `addr` with a session token and waits for `ready`.
async fn open(addr: SocketAddr, token: &str) -> Result<Ws, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let url = format!("ws://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .map_err(|e| format!("upgrade on {addr}: {e}"))?;
    match ws.next().await {
        Some(Ok(m)) if m.to_text().unwrap_or("").contains("\"ready\"") => Ok(ws),
        other => Err(format!("no ready event from {addr}: {other:?}")),
    }
}

/// What one configuration measured.
struct Figures {
    name: &'static str,
    fixed: FanOut,
    fast: FanOut,
    likes: Likes,
    idle: Option<Idle>,
}

async fn measure_nodes(nodes: Nodes) -> Figures {
    println!(
        "{}: primary {}, realtime clients on {:?}, likes through {}",
        nodes.name, nodes.primary, nodes.realtime, nodes.api
    );
    let http = Http::new();
    let (_, token) = http.register(nodes.primary, "bench-subscriber").await;
    // Memory first, on nodes that have served nothing yet; only edges have it
    // measured, the primary alone's is `cargo bench --bench realtime`'s.
    let idle = if nodes.realtime.len() > 1 {
        Some(idle_connections(&nodes, &token).await)
    } else {
        None
    };
    let (fixed, fast) = fan_out(&nodes, &token).await;
    let likes = like_latency(&nodes).await;
    let name = nodes.name;
    nodes.stop().await;
    Figures {
        name,
        fixed,
        fast,
        likes,
        idle,
    }
}

/// Deliveries counted by the readers of a set of websockets, with a wake-up
/// when the count reaches a target.
#[derive(Default)]
struct Tally {
    delivered: AtomicU64,
    target: AtomicU64,
    reached: tokio::sync::Notify,
    /// Connections the server closed before the end (a slow consumer's fate).
    closed: AtomicU64,
}

impl Tally {
    fn add(&self) {
        let now = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if now == self.target.load(Ordering::Relaxed) {
            self.reached.notify_waiters();
        }
    }

    /// Waits until `target` deliveries were counted, or none came for `stall`;
    /// returns when the last one needed arrived (or the last progress seen).
    async fn wait_for(&self, target: u64, stall: Duration) -> Instant {
        self.target.store(target, Ordering::Relaxed);
        let mut last = self.delivered.load(Ordering::Relaxed);
        let mut progress_at = Instant::now();
        loop {
            let reached = self.reached.notified();
            if self.delivered.load(Ordering::Relaxed) >= target {
                return Instant::now();
            }
            if tokio::time::timeout(stall, reached).await.is_ok() {
                return Instant::now();
            }
            let now = self.delivered.load(Ordering::Relaxed);
            if now >= target {
                return Instant::now();
            }
            if now == last {
                return progress_at;
            }
            last = now;
            progress_at = Instant::now();
        }
    }
}

/// One fan-out run.
struct FanOut {
    publications: u64,
    delivered: u64,
    missing: u64,
    per_second: f64,
    /// From the last publication's answer to the last delivery.
    tail_ms: f64,
    closed: u64,
    bus_dropped: u64,
    /// At the fixed rate: p50, p99 and max of the time from sending a
    /// publication to its delivery to the last of the subscribers, in ms.
    spread_ms: Option<[f64; 3]>,
}

/// When each fixed-rate publication was sent and when it had reached every
/// subscriber, in nanoseconds since `origin`.
struct Spread {
    origin: Instant,
    sent: Vec<AtomicU64>,
    seen_by: Vec<AtomicU64>,
    reached_all: Vec<AtomicU64>,
}

impl Spread {
    fn new(publications: u64) -> Spread {
        let zeros = || (0..publications).map(|_| AtomicU64::new(0)).collect();
        Spread {
            origin: Instant::now(),
            sent: zeros(),
            seen_by: zeros(),
            reached_all: zeros(),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    /// Counts a delivery of the fixed-rate publication in `text` (its data is
    /// `{"i": N}`; the fast ones carry `{"n": N}` and are not counted here).
    fn seen(&self, text: &str) {
        let Some(rest) = text.split("\"i\":").nth(1) else {
            return;
        };
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let Some(i) = rest[..digits]
            .parse::<usize>()
            .ok()
            .filter(|i| *i < self.sent.len())
        else {
            return;
        };
        if self.seen_by[i].fetch_add(1, Ordering::Relaxed) + 1 == FANOUT_SUBSCRIBERS as u64 {
            self.reached_all[i].store(self.now(), Ordering::Relaxed);
        }
    }

    /// p50, p99 and max over the publications that reached everyone.
    fn percentiles(&self) -> Option<[f64; 3]> {
        let mut spans: Vec<u64> = self
            .sent
            .iter()
            .zip(&self.reached_all)
            .map(|(s, r)| (s.load(Ordering::Relaxed), r.load(Ordering::Relaxed)))
            .filter(|(_, r)| *r > 0)
            .map(|(s, r)| r.saturating_sub(s))
            .collect();
        spans.sort_unstable();
        let at = |p: f64| spans[((spans.len() as f64 - 1.0) * p).round() as usize] as f64 / 1e6;
        (!spans.is_empty()).then(|| [at(0.5), at(0.99), at(1.0)])
    }
}

async fn fan_out(nodes: &Nodes, token: &str) -> (FanOut, FanOut) {
    let tally = Arc::new(Tally::default());
    let spread = Arc::new(Spread::new(FANOUT_FIXED));
    let mut readers = Vec::with_capacity(FANOUT_SUBSCRIBERS);
    for i in 0..FANOUT_SUBSCRIBERS {
        let addr = nodes.realtime[i % nodes.realtime.len()];
        let mut ws = open(addr, token).await.expect("fan-out websocket");
        common::subscribe(&mut ws, "public:fanout").await;
        let (tally, spread) = (tally.clone(), spread.clone());
        readers.push(tokio::spawn(async move {
            while let Some(Ok(m)) = ws.next().await {
                let text = m.to_text().unwrap_or("");
                if text.contains("\"tick\"") {
                    tally.add();
                    spread.seen(text);
                }
            }
            tally.closed.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let http = Arc::new(Http::new());
    let n = FANOUT_SUBSCRIBERS as u64;

    // At a fixed rate: every publication on its own task, so that a slow answer
    // does not lower the rate.
    let dropped_before = nodes.bus_dropped();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / FANOUT_RATE));
    let mut sends = Vec::with_capacity(FANOUT_FIXED as usize);
    let start = Instant::now();
    for i in 0..FANOUT_FIXED {
        ticker.tick().await;
        let (http, primary) = (http.clone(), nodes.primary);
        spread.sent[i as usize].store(spread.now(), Ordering::Relaxed);
        sends.push(tokio::spawn(async move {
            http.publish(primary, "public:fanout", "tick", json!({"i": i}))
                .await
        }));
    }
    let mut published = 0;
    for s in sends {
        published += u64::from(s.await.expect("publisher"));
    }
    let last_answer = Instant::now();
    let done = tally.wait_for(n * published, Duration::from_secs(5)).await;
    let mut fixed = fan_out_figures(
        nodes,
        &tally,
        published,
        0,
        start,
        last_answer,
        done,
        dropped_before,
    );
    fixed.spread_ms = spread.percentiles();
    if let Some([p50, p99, max]) = fixed.spread_ms {
        println!(
            "{}: at {FANOUT_RATE}/s, a publication sent -> delivered to all \
             {FANOUT_SUBSCRIBERS}: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms",
            nodes.name
        );
    }
    if fixed.missing > 0 || published < FANOUT_FIXED {
        fail(format!(
            "{}: fan-out at {FANOUT_RATE}/s: {} deliveries missing, {} of {FANOUT_FIXED} \
             publications accepted",
            nodes.name, fixed.missing, published
        ));
    }

    // As fast as `PUBLISHERS` requests in flight go.
    let before = tally.delivered.load(Ordering::Relaxed);
    let dropped_before = nodes.bus_dropped();
    let start = Instant::now();
    let lanes: Vec<_> = (0..PUBLISHERS as u64)
        .map(|lane| {
            let (http, primary) = (http.clone(), nodes.primary);
            tokio::spawn(async move {
                let mut ok = 0;
                for i in (lane..FANOUT_FAST).step_by(PUBLISHERS) {
                    ok += u64::from(
                        http.publish(primary, "public:fanout", "tick", json!({"n": i}))
                            .await,
                    );
                }
                ok
            })
        })
        .collect();
    let mut published = 0;
    for lane in lanes {
        published += lane.await.expect("publisher");
    }
    let last_answer = Instant::now();
    let done = tally
        .wait_for(before + n * published, Duration::from_secs(5))
        .await;
    let fast = fan_out_figures(
        nodes,
        &tally,
        published,
        before,
        start,
        last_answer,
        done,
        dropped_before,
    );
    for r in readers {
        r.abort();
    }
    (fixed, fast)
}

#[allow(clippy::too_many_arguments)] // one run's raw measurements, printed once
fn fan_out_figures(
    nodes: &Nodes,
    tally: &Tally,
    publications: u64,
    delivered_before: u64,
    start: Instant,
    last_answer: Instant,
    done: Instant,
    bus_dropped_before: u64,
) -> FanOut {
    let n = FANOUT_SUBSCRIBERS as u64;
    let delivered = tally.delivered.load(Ordering::Relaxed) - delivered_before;
    let f = FanOut {
        publications,
        delivered,
        missing: (n * publications).saturating_sub(delivered),
        per_second: delivered as f64 / done.duration_since(start).as_secs_f64(),
        tail_ms: done.saturating_duration_since(last_answer).as_secs_f64() * 1e3,
        closed: tally.closed.load(Ordering::Relaxed),
        bus_dropped: nodes.bus_dropped() - bus_dropped_before,
        spread_ms: None,
    };
    println!(
        "{}: fan-out of {publications} publications to {n} websockets: {delivered} delivered, \
         {:.0}/s, last {:.1} ms after the last answer; {} missing, {} connections closed, \
         {} dropped by the primary's bus",
        nodes.name, f.per_second, f.tail_ms, f.missing, f.closed, f.bus_dropped
    );
    f
}

/// Like → notification latencies.
struct Likes {
    rate: f64,
    received: usize,
    lost: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

async fn like_latency(nodes: &Nodes) -> Likes {
    let http = Arc::new(Http::new());
    let (_, author) = http.register(nodes.primary, "latency-author").await;
    let mut posts = Vec::with_capacity(POSTS);
    for i in 0..POSTS {
        let p = http
            .send(
                reqwest::Method::POST,
                nodes.primary,
                "/api/posts",
                &author,
                Some(json!({"title": format!("p{i}"), "body": "b"})),
            )
            .await
            .expect("post");
        posts.push(p["id"].as_u64().expect("post id"));
    }
    let likers: Vec<(u64, String)> = futures::future::join_all((0..LIKERS).map(|i| {
        let http = http.clone();
        let primary = nodes.primary;
        async move { http.register(primary, &format!("liker{i}")).await }
    }))
    .await;
    let receiver_addr = *nodes.realtime.last().expect("a realtime node");
    let mut ws = open(receiver_addr, &author)
        .await
        .expect("author's websocket");
    let total = LIKERS * POSTS;
    let sent: Arc<Mutex<std::collections::HashMap<(u64, u64), Instant>>> = Arc::default();
    let receiver = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total);
            while latencies.len() < total {
                let next = tokio::time::timeout(Duration::from_secs(10), ws.next()).await;
                let Ok(Some(Ok(m))) = next else { break };
                let at = Instant::now();
                let Ok(v) = serde_json::from_str::<Value>(m.to_text().unwrap_or("")) else {
                    continue;
                };
                if v["event"] != "new_notification" {
                    continue;
                }
                let key = (
                    v["data"]["actor_id"].as_u64().unwrap_or(0),
                    v["data"]["post_id"].as_u64().unwrap_or(0),
                );
                // Its send time was recorded before the like was sent.
                if let Some(t) = sent.lock().unwrap().get(&key) {
                    latencies.push(at.saturating_duration_since(*t));
                }
            }
            latencies
        })
    };
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / LIKE_RATE));
    let mut inflight = Vec::with_capacity(total);
    let start = Instant::now();
    for (uid, token) in &likers {
        for post in &posts {
            ticker.tick().await;
            let (http, token, api) = (http.clone(), token.clone(), nodes.api);
            sent.lock().unwrap().insert((*uid, *post), Instant::now());
            let path = format!("/api/posts/{post}/like");
            inflight.push(tokio::spawn(async move {
                http.send(reqwest::Method::PUT, api, &path, &token, None)
                    .await
                    .is_some()
            }));
        }
    }
    let mut accepted = 0;
    for f in inflight {
        accepted += usize::from(f.await.expect("like"));
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let mut latencies = receiver.await.expect("receiver");
    latencies.sort_unstable();
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
    let pct = |p: f64| ms(latencies.get(((latencies.len() as f64 - 1.0) * p).round() as usize));
    let likes = Likes {
        rate,
        received: latencies.len(),
        lost: total - latencies.len(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: ms(latencies.last()),
    };
    println!(
        "{}: like -> new_notification at {rate:.0} likes/s ({total} likes, {accepted} accepted): \
         p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} received, {} lost",
        nodes.name, likes.p50_ms, likes.p99_ms, likes.max_ms, likes.received, likes.lost
    );
    if likes.lost > 0 || accepted < total {
        fail(format!(
            "{}: {} of {total} like notifications lost, {accepted} likes accepted",
            nodes.name, likes.lost
        ));
    }
    likes
}

/// Idle websockets on the edges.
struct Idle {
    connections: usize,
    rss_before_mib: f64,
    rss_after_mib: f64,
    per_connection_kib: f64,
    received: usize,
}

async fn idle_connections(nodes: &Nodes, token: &str) -> Idle {
    let per_edge: usize = std::env::var("LIKEWISE_BENCH_IDLE_PER_EDGE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(IDLE_PER_EDGE);
    let total = per_edge * nodes.realtime.len();
    let addrs: Vec<String> = nodes.realtime.iter().map(ToString::to_string).collect();
    let rss = || common::status_kib(std::process::id(), "VmRSS");
    let before = rss();
    let mut child = tokio::process::Command::new(std::env::current_exe().expect("this bench"))
        .env(
            CLIENTS_ENV,
            format!("{token}@{}@{per_edge}", addrs.join(",")),
        )
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the client process starts");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let opened = read_count(&mut lines, "open ").await;
    // Let the nodes' buffers settle before reading their memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss();
    let http = Http::new();
    http.publish(nodes.primary, "broadcast", "bye", json!({"idle": true}))
        .await;
    let received = read_count(&mut lines, "received ").await;
    let _ = child.wait().await;
    let idle = Idle {
        connections: opened,
        rss_before_mib: before as f64 / 1024.0,
        rss_after_mib: after as f64 / 1024.0,
        per_connection_kib: after.saturating_sub(before) as f64 / opened.max(1) as f64,
        received,
    };
    println!(
        "{}: {opened} idle websockets ({per_edge} per edge), this process's RSS {:.1} -> {:.1} MiB, \
         {:.1} KiB per connection; the broadcast reached {received}",
        nodes.name, idle.rss_before_mib, idle.rss_after_mib, idle.per_connection_kib
    );
    if opened < total || received < total {
        fail(format!(
            "{}: {opened} of {total} idle websockets opened, the broadcast reached {received}",
            nodes.name
        ));
    }
    idle
}

/// The number on the child's next line `PREFIX N`; 0 if it says anything else,
/// ends or stays silent for two minutes.
async fn read_count(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    prefix: &str,
) -> usize {
    match tokio::time::timeout(Duration::from_secs(120), lines.next_line()).await {
        Ok(Ok(Some(line))) => line
            .strip_prefix(prefix)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

/// The child process: opens `N` websockets on each address with the token,
/// prints `open COUNT`, then waits for the broadcast `bye` on each and prints
/// `received COUNT`. Its memory is not the nodes'.
fn hold_idle_connections(spec: &str) {
    let mut parts = spec.split('@');
    let (Some(token), Some(addrs), Some(per)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{CLIENTS_ENV} must be TOKEN@ADDR,ADDR@N");
    };
    let addrs: Vec<SocketAddr> = addrs
        .split(',')
        .map(|a| a.parse().expect("an address"))
        .collect();
    let per: usize = per.parse().expect("a count");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let total = per * addrs.len();
        let conns: Vec<Ws> = futures::stream::iter(0..total)
            .map(|i| open(addrs[i % addrs.len()], token))
            .buffer_unordered(16)
            .filter_map(|r| async move { r.map_err(|e| eprintln!("idle client: {e}")).ok() })
            .collect()
            .await;
        let say = |line: String| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        };
        say(format!("open {}", conns.len()));
        let received = Arc::new(AtomicU64::new(0));
        let waits: Vec<_> = conns
            .into_iter()
            .map(|mut ws| {
                let received = received.clone();
                tokio::spawn(async move {
                    while let Some(Ok(m)) = ws.next().await {
                        if m.to_text().unwrap_or("").contains("\"bye\"") {
                            received.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                    }
                })
            })
            .collect();
        let all = futures::future::join_all(waits);
        let _ = tokio::time::timeout(Duration::from_secs(60), all).await;
        say(format!("received {}", received.load(Ordering::Relaxed)));
    });
}

/// One cell of the table, from one configuration's figures.
type Cell<'a> = dyn Fn(&Figures) -> String + 'a;

fn print_table(columns: &[&Figures]) {
    let fan = |f: &FanOut| {
        let spread = f.spread_ms.map_or(String::new(), |[p50, p99, max]| {
            format!("; sent -> all reached p50 {p50:.1} / p99 {p99:.1} / max {max:.1} ms")
        });
        format!(
            "{:.0}/s ({} of {} x {FANOUT_SUBSCRIBERS}), {} missing, {} closed, bus dropped {}{spread}",
            f.per_second, f.delivered, f.publications, f.missing, f.closed, f.bus_dropped
        )
    };
    let lat = |l: &Likes| {
        format!(
            "p50 {:.2} / p99 {:.2} / max {:.2} ms at {:.0}/s, {} lost",
            l.p50_ms, l.p99_ms, l.max_ms, l.rate, l.lost
        )
    };
    let idle = |f: &Figures| {
        f.idle.as_ref().map_or("-".to_owned(), |i| {
            format!(
                "{} open, {:.1} KiB each (RSS {:.1} -> {:.1} MiB), {} got the broadcast",
                i.connections, i.per_connection_kib, i.rss_before_mib, i.rss_after_mib, i.received
            )
        })
    };
    let rows: [(String, &Cell<'_>); 4] = [
        (
            format!("fan-out, {FANOUT_RATE} publications/s x {FANOUT_SUBSCRIBERS} websockets"),
            &|f| fan(&f.fixed),
        ),
        (
            format!("fan-out as fast as {PUBLISHERS} publishers go ({FANOUT_FAST} publications)"),
            &|f| fan(&f.fast),
        ),
        (
            format!("like -> new_notification, {LIKE_RATE} likes/s"),
            &|f| lat(&f.likes),
        ),
        ("idle websockets".to_owned(), &idle),
    ];
    println!();
    let names: Vec<&str> = columns.iter().map(|f| f.name).collect();
    println!("| what | {} |", names.join(" | "));
    println!("|---{}|", "|---".repeat(columns.len()));
    for (what, cell) in rows {
        let cells: Vec<String> = columns.iter().map(|f| cell(f)).collect();
        println!("| {what} | {} |", cells.join(" | "));
    }
    println!();
}
