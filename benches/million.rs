//! The release binary at a million likes: its memory after them, their bytes on disk,
//! and how long it takes to start with them stored.
//!
//! 1. Starts the real binary on a temporary data directory, registers `USERS` users
//!    and creates enough posts that every like is a distinct (user, post) pair.
//! 2. Sends `LIKEWISE_BENCH_LIKES` (default 1,000,000) `PUT /api/posts/{id}/like`
//!    over `CONNECTIONS` keep-alive HTTP/1.1 connections, printing progress every
//!    100,000.
//! 3. Waits until the queue is idle, then prints the server's VmRSS and VmHWM.
//! 4. Stops it with SIGTERM (it must exit 0) and prints the data directory's bytes.
//! 5. Starts it again on the same directory `LIKEWISE_BENCH_RUNS` (default 5) times,
//!    each time from spawn to the `listening http=` line, and prints the start-up
//!    median, min and max and VmRSS right after each start.
//!
//! Run with `cargo bench --bench million`. `LIKEWISE_BENCH_KEEP=DIR` copies the data
//! directory to `DIR` right after the graceful stop, before any start, to time
//! starts on it again later.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ADMIN: &str = "bench-admin-token-0123456789abcdef";
/// Concurrent keep-alive connections sending likes.
const CONNECTIONS: usize = 64;
/// Users liking; a multiple of `CONNECTIONS`, so each connection has its own users.
const USERS: usize = 256;
/// Progress is printed every this many likes.
const PROGRESS_EVERY: u64 = 100_000;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

struct Server {
    child: Child,
    addr: SocketAddr,
    /// Spawn to the `listening http=` line.
    startup: Duration,
}

impl Server {
    fn start(data: &Path, config: &Path) -> Server {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_likewise"))
            .args(["serve", "--http", "127.0.0.1:0", "--resp", "off", "--data"])
            .arg(data)
            .arg("--config")
            .arg(config)
            .env("LIKEWISE_ADMIN_TOKEN", ADMIN)
            .env("RUST_LOG", "warn,likewise=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("likewise starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("a log line before the server exits")
                .expect("readable");
            if let Some(rest) = line.split("listening http=").nth(1) {
                break rest.trim().parse().expect("an address");
            }
        };
        let startup = started.elapsed();
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            child,
            addr,
            startup,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits for the exit, which must be a clean one. Returns how long
    /// the shutdown took.
    fn stop(mut self) -> Duration {
        let started = Instant::now();
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        assert_eq!(rc, 0, "SIGTERM");
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "graceful stop exited with {status}");
                return started.elapsed();
            }
            assert!(Instant::now() < deadline, "no exit 120 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Only reached when the bench fails half-way: leave nothing running.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn send(req: reqwest::RequestBuilder) -> Value {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let body = resp.text().await.expect("body");
    assert!(status.is_success(), "status {status}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// Registers the users (a few at a time: passwords are hashed) and creates the
/// posts, round-robin over the users as authors. Returns (tokens, post ids).
async fn setup(base: &str, n_posts: usize) -> (Vec<String>, Vec<u64>) {
    let http = common::client();
    let mut tokens = Vec::with_capacity(USERS);
    for chunk in (0..USERS).collect::<Vec<_>>().chunks(8) {
        let answers = futures::future::join_all(chunk.iter().map(|i| {
            send(
                http.post(format!("{base}/api/users"))
                    .json(&json!({"name": format!("bench{i}"), "password": "password123"})),
            )
        }))
        .await;
        tokens.extend(
            answers
                .iter()
                .map(|a| a["token"].as_str().expect("token").to_owned()),
        );
    }
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..8 {
        let (base, tokens, next) = (base.to_owned(), tokens.clone(), next.clone());
        writers.push(tokio::spawn(async move {
            let http = common::client();
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= n_posts {
                    return made;
                }
                let post = send(
                    http.post(format!("{base}/api/posts"))
                        .bearer_auth(&tokens[i % USERS])
                        .json(&json!({"title": format!("post {i}"), "body": "bench"})),
                )
                .await;
                made.push((i, post["id"].as_u64().expect("post id")));
            }
        }));
    }
    let mut posts = vec![0; n_posts];
    for w in writers {
        for (i, id) in w.await.expect("post writer") {
            posts[i] = id;
        }
    }
    let tokens = Arc::try_unwrap(tokens).expect("writers done");
    (tokens, posts)
}

/// Waits until nothing is pending, started or retrying in the server's queue.
async fn settle(base: &str) {
    let http = common::client();
    loop {
        let stats = send(
            http.get(format!("{base}/api/admin/stats"))
                .bearer_auth(ADMIN),
        )
        .await;
        let busy: u64 = ["pending", "started", "retry"]
            .iter()
            .map(|s| stats["queue"][*s].as_u64().unwrap_or(0))
            .sum();
        if busy == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn like_all(base: &str, tokens: &[String], posts: &[u64], likes: u64) {
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let progress = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut next = PROGRESS_EVERY;
            let mut last = (0u64, Duration::ZERO);
            while next <= likes {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = done.load(Ordering::Relaxed);
                if n >= next {
                    let t = started.elapsed();
                    println!(
                        "million: {n:>9} likes in {:>6.1} s: {:.0} likes/s overall, {:.0}/s since the last line",
                        t.as_secs_f64(),
                        n as f64 / t.as_secs_f64(),
                        (n - last.0) as f64 / (t - last.1).as_secs_f64(),
                    );
                    last = (n, t);
                    next = (n / PROGRESS_EVERY + 1) * PROGRESS_EVERY;
                }
            }
        })
    };
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for c in 0..CONNECTIONS {
        let base = base.to_owned();
        let tokens = tokens.to_vec();
        let posts = posts.to_vec();
        let done = done.clone();
        connections.push(tokio::spawn(async move {
            let http = common::client();
            // Like k is user k % USERS on post k / USERS: every pair once.
            let mut k = c as u64;
            while k < likes {
                let user = (k % USERS as u64) as usize;
                let post = posts[(k / USERS as u64) as usize];
                let like = send(
                    http.put(format!("{base}/api/posts/{post}/like"))
                        .bearer_auth(&tokens[user]),
                )
                .await;
                assert_eq!(like["created"], true, "like {k} was new");
                done.fetch_add(1, Ordering::Relaxed);
                k += CONNECTIONS as u64;
            }
        }));
    }
    for c in connections {
        c.await.expect("connection task");
    }
    let elapsed = started.elapsed();
    progress.abort();
    println!(
        "million: {likes} likes over {CONNECTIONS} connections in {:.1} s: {:.0} likes/s (load average {})",
        elapsed.as_secs_f64(),
        likes as f64 / elapsed.as_secs_f64(),
        load_average(),
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let likes = common::env_or("LIKEWISE_BENCH_LIKES", 1_000_000u64).max(1);
    let runs = common::env_or("LIKEWISE_BENCH_RUNS", 5usize).max(1);
    let n_posts = (likes as usize).div_ceil(USERS);
    // reqwest is built without a default TLS provider.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let dir = tempfile::tempdir().expect("temp dir");
    let data: PathBuf = dir.path().join("data");
    let config = dir.path().join("likewise.toml");
    // Every bench client comes from one address. `LIKEWISE_BENCH_CACHE_MB` sets the
    // store's page cache (default: the server's default).
    let cache = std::env::var("LIKEWISE_BENCH_CACHE_MB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or_else(String::new, |mb| format!("cache_mb = {mb}\n"));
    std::fs::write(
        &config,
        format!(
            "{cache}[accounts]\nregistrations_per_ip = {}\n\n[limits]\nmax_connections_per_ip = 0\n",
            USERS * 2
        ),
    )
    .expect("config");
    println!(
        "million: {likes} likes by {USERS} users on {n_posts} posts; load average {}",
        load_average()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let server = Server::start(&data, &config);
    let base = format!("http://{}", server.addr);
    let t = Instant::now();
    let (tokens, posts) = rt.block_on(setup(&base, n_posts));
    rt.block_on(settle(&base));
    println!(
        "million: setup ({USERS} users, {n_posts} posts) took {:.1} s; VmRSS {:.1} MiB",
        t.elapsed().as_secs_f64(),
        mib(common::status_kib(server.pid(), "VmRSS")),
    );

    rt.block_on(like_all(&base, &tokens, &posts, likes));
    let t = Instant::now();
    rt.block_on(settle(&base));
    println!(
        "million: queue idle {:.1} s after the last like",
        t.elapsed().as_secs_f64()
    );
    let (rss, hwm) = (
        common::status_kib(server.pid(), "VmRSS"),
        common::status_kib(server.pid(), "VmHWM"),
    );
    println!(
        "million: after {likes} likes: VmRSS {:.1} MiB, VmHWM (peak) {:.1} MiB; load average {}",
        mib(rss),
        mib(hwm),
        load_average(),
    );
    let stopped = server.stop();
    let bytes = common::dir_bytes(&data);
    if let Ok(keep) = std::env::var("LIKEWISE_BENCH_KEEP") {
        let status = Command::new("cp")
            .arg("-a")
            .arg(&data)
            .arg(&keep)
            .status()
            .expect("cp runs");
        assert!(status.success(), "copying the data directory to {keep}");
        println!("million: data directory copied to {keep}");
    }
    println!(
        "million: graceful stop in {} ms; data directory {bytes} bytes ({:.1} MiB), {:.0} bytes per like (setup included)",
        stopped.as_millis(),
        bytes as f64 / (1024.0 * 1024.0),
        bytes as f64 / likes as f64,
    );

    let mut startups = Vec::with_capacity(runs);
    for run in 1..=runs {
        let server = Server::start(&data, &config);
        let rss = common::status_kib(server.pid(), "VmRSS");
        let startup = server.startup;
        let stopped = server.stop();
        println!(
            "million: start {run}: {} ms to `listening http=`, VmRSS then {:.1} MiB; stopped in {} ms",
            startup.as_millis(),
            mib(rss),
            stopped.as_millis(),
        );
        startups.push(startup);
    }
    startups.sort();
    println!(
        "million: start-up with {likes} likes stored ({bytes} bytes), {runs} starts: median {} ms, min {} ms, max {} ms; load average {}",
        startups[startups.len() / 2].as_millis(),
        startups[0].as_millis(),
        startups[startups.len() - 1].as_millis(),
        load_average(),
    );
}
