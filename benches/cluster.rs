//! The cluster bus between two hubs in one process, through a real `redis-server`
//! on loopback (started here on a free port, without persistence):
//!
//! 1. throughput: publications made on node A as fast as one thread can, in bursts
//!    that fit the bus's queue, received by a subscriber on node B (publications/s,
//!    and how many were dropped);
//! 2. latency: publications at a steady 1,000/s from A, each stamped with its send
//!    time, received on B (p50/p99/max).
//!
//! Run with `cargo bench --bench cluster`. Needs `redis-server` on the PATH.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use likewise::cluster::{Bus, ClusterSettings};
use likewise::hub::{Hub, Publication, Transport};
use likewise::resp::bridge::Bounds;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const THROUGHPUT_EVENTS: u64 = 200_000;
const BURST: u64 = 2_000;
const LATENCY_EVENTS: usize = 3_000;

fn main() {
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
    let mut redis = match spawned {
        Ok(child) => child,
        Err(e) => {
            eprintln!("cluster bench skipped: cannot start redis-server ({e})");
            return;
        }
    };
    let mut lines = BufReader::new(redis.stdout.take().expect("stdout")).lines();
    for line in lines.by_ref() {
        if line
            .expect("redis-server output")
            .contains("Ready to accept")
        {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(port));
    let _ = redis.kill();
    let _ = redis.wait();
}

async fn run(port: u16) {
    let settings = ClusterSettings {
        redis: Some(format!("redis://127.0.0.1:{port}/0")),
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
