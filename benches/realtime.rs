//! Realtime benchmarks over real loopback websockets against the real binary:
//!
//! 1. memory per idle websocket connection (server RSS with 10,000 open);
//! 2. fan-out: one publication to a room of N subscribers, deliveries per second;
//! 3. many rooms of one: publications to N rooms with one subscriber each;
//! 4. like → `new_notification` latency at a steady 1,000 likes/s (p50/p99/max).
//!
//! Run with `cargo bench --bench realtime`. `LIKEWISE_BENCH_IDLE=N` changes the
//! number of idle connections (50,000 needs several 127.0.0.x source addresses,
//! which this bench uses automatically, and `ulimit -n` above 2 × N).

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpSocket;

const ADMIN: &str = "bench-admin-token-0123456789abcdef";

struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        // Every bench client comes from loopback: no per-address cap.
        let config = dir.path().join("likewise.toml");
        std::fs::write(&config, "[limits]\nmax_connections_per_ip = 0\n").expect("config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_likewise"))
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--resp",
                "off",
                "--config",
            ])
            .arg(&config)
            .arg("--data")
            .arg(dir.path().join("data"))
            .env("LIKEWISE_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "warn,likewise=info")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("likewise starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("a log line").expect("readable");
            if let Some(rest) = line.split("listening http=").nth(1) {
                break rest.trim().parse().expect("an address");
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            _dir: dir,
        }
    }

    fn rss_kib(&self) -> u64 {
        common::status_kib(self.child.id(), "VmRSS")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Value {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap_or(Value::Null)
    }

    async fn register(&self, name: &str) -> (u64, String) {
        let resp = self
            .client
            .post(format!("{}/api/users", self.base))
            .json(&json!({"name": name, "password": "benchmark-password"}))
            .send()
            .await
            .expect("register");
        let body: Value = resp.json().await.expect("json");
        (
            body["user"]["id"].as_u64().expect("id"),
            body["token"].as_str().expect("token").to_owned(),
        )
    }
}

use common::Ws;

/// Opens a websocket from source address 127.0.0.`source`.
async fn open(addr: SocketAddr, token: &str, source: u8) -> Ws {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, source], 0)))
        .expect("bind source");
    let stream = socket.connect(addr).await.expect("connect");
    let url = format!("ws://{addr}/ws?token={token}");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade");
    let ready = ws.next().await.expect("ready").expect("ready ok");
    assert!(ready.to_text().unwrap_or("").contains("\"ready\""));
    ws
}

/// Counts every text message a set of connections receives.
fn count_all(conns: Vec<Ws>, counter: Arc<AtomicU64>) -> Vec<tokio::task::JoinHandle<()>> {
    conns
        .into_iter()
        .map(|mut ws| {
            let counter = counter.clone();
            tokio::spawn(async move {
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_text() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect()
}

async fn wait_for(counter: &AtomicU64, target: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    while counter.load(Ordering::Relaxed) < target {
        assert!(
            start.elapsed() < limit,
            "only {} of {target} deliveries",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    start.elapsed()
}

async fn fan_out(api: &Api, server: &Server, token: &str) {
    const SUBSCRIBERS: usize = 1_000;
    const MESSAGES: u64 = 200;
    let mut conns = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        let mut ws = open(server.addr, token, 1).await;
        common::subscribe(&mut ws, "public:fanout").await;
        conns.push(ws);
    }
    let counter = Arc::new(AtomicU64::new(0));
    let readers = count_all(conns, counter.clone());
    let start = Instant::now();
    for i in 0..MESSAGES {
        api.call(
            reqwest::Method::POST,
            "/api/admin/publish",
            ADMIN,
            Some(json!({"room": "public:fanout", "event": "tick", "data": {"i": i}})),
        )
        .await;
    }
    wait_for(
        &counter,
        SUBSCRIBERS as u64 * MESSAGES,
        Duration::from_secs(120),
    )
    .await;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "fan-out: 1 room x {SUBSCRIBERS} subscribers, {MESSAGES} publications: {:.0} deliveries/s ({:.1} ms per publication to all)",
        (SUBSCRIBERS as u64 * MESSAGES) as f64 / secs,
        secs * 1000.0 / MESSAGES as f64
    );
    for r in readers {
        r.abort();
    }
}

async fn many_rooms(api: &Api, server: &Server, token: &str) {
    const ROOMS: usize = 1_000;
    const ROUNDS: usize = 5;
    let mut conns = Vec::with_capacity(ROOMS);
    for i in 0..ROOMS {
        let mut ws = open(server.addr, token, 1).await;
        common::subscribe(&mut ws, &format!("public:solo:{i}")).await;
        conns.push(ws);
    }
    let counter = Arc::new(AtomicU64::new(0));
    let readers = count_all(conns, counter.clone());
    let api = Arc::new(Api {
        client: api.client.clone(),
        base: api.base.clone(),
    });
    let start = Instant::now();
    let mut senders = Vec::new();
    for lane in 0..32 {
        let api = api.clone();
        senders.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                for i in (lane..ROOMS).step_by(32) {
                    api.call(
                        reqwest::Method::POST,
                        "/api/admin/publish",
                        ADMIN,
                        Some(json!({"room": format!("public:solo:{i}"), "event": "tick", "data": round})),
                    )
                    .await;
                }
            }
        }));
    }
    for s in senders {
        s.await.expect("sender");
    }
    let total = (ROOMS * ROUNDS) as u64;
    wait_for(&counter, total, Duration::from_secs(120)).await;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "many rooms of one: {ROOMS} rooms x {ROUNDS} rounds through HTTP publish (32 concurrent): {:.0} deliveries/s",
        total as f64 / secs
    );
    for r in readers {
        r.abort();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

async fn like_latency(api: &Api, server: &Server) {
    const LIKERS: usize = 50;
    const POSTS: usize = 100;
    const RATE: u64 = 1_000;
    let (_, author) = api.register("latency-author").await;
    let mut posts = Vec::new();
    for i in 0..POSTS {
        let p = api
            .call(
                reqwest::Method::POST,
                "/api/posts",
                &author,
                Some(json!({"title": format!("p{i}"), "body": "b"})),
            )
            .await;
        posts.push(p["id"].as_u64().expect("post id"));
    }
    let mut likers = Vec::new();
    for i in 0..LIKERS {
        likers.push(api.register(&format!("liker{i}")).await);
    }
    let mut ws = open(server.addr, &author, 1).await;
    let sent: Arc<std::sync::Mutex<HashMap<(u64, u64), Instant>>> = Arc::default();
    let total = LIKERS * POSTS;
    let receiver = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total);
            while latencies.len() < total {
                let Some(Ok(m)) = ws.next().await else { break };
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
                let at = Instant::now();
                // The acknowledgement may still be in flight: wait for its send time.
                loop {
                    if let Some(t) = sent.lock().unwrap().get(&key) {
                        latencies.push(at.saturating_duration_since(*t));
                        break;
                    }
                    tokio::task::yield_now().await;
                }
            }
            latencies
        })
    };
    let api = Arc::new(Api {
        client: api.client.clone(),
        base: api.base.clone(),
    });
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    let mut inflight = Vec::with_capacity(total);
    let start = Instant::now();
    for (uid, token) in &likers {
        for post in &posts {
            ticker.tick().await;
            let api = api.clone();
            let sent = sent.clone();
            let token = token.clone();
            let (uid, post) = (*uid, *post);
            sent.lock().unwrap().insert((uid, post), Instant::now());
            inflight.push(tokio::spawn(async move {
                api.call(
                    reqwest::Method::PUT,
                    &format!("/api/posts/{post}/like"),
                    &token,
                    None,
                )
                .await;
            }));
        }
    }
    for f in inflight {
        f.await.expect("like");
    }
    let rate = total as f64 / start.elapsed().as_secs_f64();
    let mut latencies = tokio::time::timeout(Duration::from_secs(60), receiver)
        .await
        .expect("every notification arrives")
        .expect("receiver");
    assert_eq!(latencies.len(), total, "no notification lost");
    latencies.sort_unstable();
    println!(
        "like -> new_notification at {rate:.0} likes/s (sync durability), {total} likes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, lost 0",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}

async fn idle_memory(server: &Server, token: &str) {
    let n: usize = std::env::var("LIKEWISE_BENCH_IDLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let before = server.rss_kib();
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        // 20,000 connections per source address keeps clear of the ephemeral range.
        let source = 1 + (i / 20_000) as u8;
        conns.push(open(server.addr, token, source).await);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = server.rss_kib();
    let per = (after.saturating_sub(before)) as f64 * 1024.0 / n as f64;
    println!(
        "idle websockets: {n} connections, server RSS {:.1} MiB -> {:.1} MiB, {:.1} KiB per connection (projected 50,000: {:.0} MiB)",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        per / 1024.0,
        (before as f64 * 1024.0 + per * 50_000.0) / (1024.0 * 1024.0)
    );
    drop(conns);
}

fn main() {
    // `cargo bench` passes `--bench`; any other filter argument is ignored.
    common::raise_fd_limit();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let server = Server::start();
        let api = Api {
            client: reqwest::Client::new(),
            base: format!("http://{}", server.addr),
        };
        println!(
            "likewise realtime benchmarks (server pid {}, {})",
            server.child.id(),
            server.addr
        );
        let (_, token) = api.register("bench-subscriber").await;
        // Memory first, on a fresh server, before other runs leave their allocations.
        idle_memory(&server, &token).await;
        fan_out(&api, &server, &token).await;
        many_rooms(&api, &server, &token).await;
        like_latency(&api, &server).await;
    });
}
