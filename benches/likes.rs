//! End-to-end likes: the whole server in this process on port 0 of loopback with a
//! temporary data directory, and `CONNECTIONS` HTTP/1.1 keep-alive connections each
//! sending `PUT /api/posts/{id}/like` for distinct (user, post) pairs, one request at
//! a time. Prints likes acknowledged per second, p50/p99/max latency and how many
//! likes shared a transaction and a flush, in `sync` and then `relaxed` durability.
//! Also prints what one like cost the store (key writes and flushes, everything it
//! caused included), how long its notifications took to be stored (the backlog when
//! the last like was answered) and, after a graceful shutdown, the data directory's
//! bytes per like. Run with `cargo bench --bench likes`; `LIKES_POSTS=N` makes every
//! connection like N posts instead of 300 (a longer, sustained run).
//! `LIKES_OFFLINE=online` adds a webhook that wants `notification.undelivered` and
//! keeps every user connected (a hub subscription each, drained), so that the cost
//! of the offline fallback for receivers who get their pushes shows in the key
//! writes per like; `LIKES_OFFLINE=offline` adds the hook with nobody connected, so
//! every like sends the event. Both print how many events the hook received.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use likewise::config::{Durability, Settings, WebhookSettings};
use likewise::startup::Application;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// Concurrent connections, one user each.
const CONNECTIONS: usize = 64;
/// Posts each user likes by default; requests = CONNECTIONS * posts.
const POSTS: usize = 300;

fn posts_per_connection() -> usize {
    std::env::var("LIKES_POSTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(POSTS)
}

/// Unread notifications of every user: the notifications stored so far.
fn stored_notifications(social: &likewise::domain::Social, users: &[u64]) -> u64 {
    users
        .iter()
        .map(|u| social.unread_count(*u).expect("unread count"))
        .sum()
}

async fn send(req: reqwest::RequestBuilder) -> Value {
    let resp = req.send().await.expect("request");
    assert!(resp.status().is_success(), "status {}", resp.status());
    resp.json().await.expect("JSON answer")
}

/// A webhook receiver on loopback that counts the requests it answers.
async fn counting_receiver() -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            async { axum::http::StatusCode::OK }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), count)
}

async fn run(durability: Durability) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut settings = Settings::for_tests(dir.path());
    settings.resp = None;
    settings.durability = durability;
    settings.workers = Settings::default().workers;
    settings.admin_token = Some("bench-admin-token-0123456789abcdef".into());
    let offline = std::env::var("LIKES_OFFLINE")
        .ok()
        .filter(|m| !m.is_empty());
    let mut undelivered_events = None;
    if offline.is_some() {
        let (url, count) = counting_receiver().await;
        settings.webhooks = vec![WebhookSettings {
            url,
            events: vec!["notification.undelivered".into()],
            secret: None,
            max_attempts: Some(1),
        }];
        undelivered_events = Some(count);
    }
    let app = Application::build(settings).await.expect("server builds");
    let base = format!("http://{}", app.http_addr());
    let state = app.state().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    // Users (argon2: a few at a time) and posts.
    let setup = common::client();
    let mut tokens = Vec::with_capacity(CONNECTIONS);
    let mut users = Vec::with_capacity(CONNECTIONS);
    for chunk in (0..CONNECTIONS).collect::<Vec<_>>().chunks(8) {
        let answers = futures::future::join_all(chunk.iter().map(|i| {
            send(
                setup
                    .post(format!("{base}/api/users"))
                    .json(&json!({"name": format!("user{i}"), "password": "password123"})),
            )
        }))
        .await;
        tokens.extend(
            answers
                .iter()
                .map(|a| a["token"].as_str().unwrap().to_owned()),
        );
        users.extend(answers.iter().map(|a| a["user"]["id"].as_u64().unwrap()));
    }
    if offline.as_deref() == Some("online") {
        for user in &users {
            let mut sub = state.hub.subscribe(likewise::hub::Transport::Ws);
            sub.join(&format!("user:{user}"));
            tokio::spawn(async move { while sub.recv().await.is_some() {} });
        }
    }
    let n_posts = posts_per_connection();
    let mut posts = Vec::with_capacity(n_posts);
    // Who wrote each post: a like by its own author notifies nobody.
    let mut expected_notifications = 0u64;
    for i in 0..n_posts {
        expected_notifications += (CONNECTIONS - 1) as u64;
        let post = send(
            setup
                .post(format!("{base}/api/posts"))
                .bearer_auth(&tokens[i % CONNECTIONS])
                .json(&json!({"title": format!("post {i}"), "body": "bench"})),
        )
        .await;
        posts.push(post["id"].as_u64().unwrap());
    }
    // Let the setup's tasks drain so that they do not share the measured window.
    while state
        .queue
        .queue_stats()
        .expect("stats")
        .depth
        .get("pending")
        .copied()
        .unwrap_or(0)
        > 0
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stats = state.social.store().writer_stats();
    let tx_before = stats.transactions.load(Ordering::Relaxed);
    let flushes_before = stats.flushes.load(Ordering::Relaxed);
    let keys_before = stats.key_writes.load(Ordering::Relaxed);
    let notified_before = stored_notifications(&state.social, &users);
    let started = Instant::now();
    let mut connections = Vec::with_capacity(CONNECTIONS);
    for token in tokens {
        let base = base.clone();
        let posts = posts.clone();
        connections.push(tokio::spawn(async move {
            let client = common::client();
            let mut latencies = Vec::with_capacity(posts.len());
            for post in posts {
                let t = Instant::now();
                let like = send(
                    client
                        .put(format!("{base}/api/posts/{post}/like"))
                        .bearer_auth(&token),
                )
                .await;
                latencies.push(t.elapsed());
                assert_eq!(like["created"], true);
            }
            latencies
        }));
    }
    let mut latencies = Vec::with_capacity(CONNECTIONS * n_posts);
    for c in connections {
        latencies.extend(c.await.expect("connection task"));
    }
    let elapsed = started.elapsed();
    let backlog =
        expected_notifications - (stored_notifications(&state.social, &users) - notified_before);
    // Everything the likes caused: wait until their notifications are all stored.
    while stored_notifications(&state.social, &users) - notified_before < expected_notifications {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drained = started.elapsed();
    // And until the workers are idle (recounts and acks are writes of the likes too).
    loop {
        let depth = state.queue.queue_stats().expect("stats").depth;
        let busy = ["pending", "started", "retry"]
            .iter()
            .map(|s| depth.get(*s).copied().unwrap_or(0))
            .sum::<u64>();
        if busy == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let transactions = stats.transactions.load(Ordering::Relaxed) - tx_before;
    let flushes = stats.flushes.load(Ordering::Relaxed) - flushes_before;
    let key_writes = stats.key_writes.load(Ordering::Relaxed) - keys_before;

    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let n = latencies.len();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mode = format!("{durability:?}").to_lowercase();
    println!(
        "likes/{:<7} {n} likes over {CONNECTIONS} connections in {:.2} s: {:.0} likes/s; \
         latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         {transactions} transactions and {flushes} flushes during the run (workers included)",
        mode,
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(*latencies.last().unwrap()),
    );
    println!(
        "likes/{mode:<7} notifications: {expected_notifications} stored in {:.2} s \
         ({:.0}/s), {backlog} not yet stored when the last like was answered; \
         per like: {:.2} key writes, {:.3} flushes",
        drained.as_secs_f64(),
        expected_notifications as f64 / drained.as_secs_f64(),
        key_writes as f64 / n as f64,
        flushes as f64 / n as f64,
    );

    if let (Some(which), Some(events)) = (&offline, &undelivered_events) {
        println!(
            "likes/{mode:<7} offline fallback with receivers {which}: {} \
             notification.undelivered events received for {n} likes",
            events.load(Ordering::Relaxed)
        );
    }

    let live = state.social.store().live_bytes().await.expect("live bytes");
    shutdown.cancel();
    server
        .await
        .expect("server task")
        .expect("server stops cleanly");
    let bytes = common::dir_bytes(dir.path());
    println!(
        "likes/{mode:<7} data directory after a graceful shutdown: {bytes} bytes, \
         {:.0} bytes per like (setup included); keys and values stored: {live} bytes \
         ({:.0} per like); space amplification {:.1}x",
        bytes as f64 / n as f64,
        live as f64 / n as f64,
        bytes as f64 / live.max(1) as f64,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects one mode.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, durability) in [("sync", Durability::Sync), ("relaxed", Durability::Relaxed)] {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        rt.block_on(run(durability));
    }
}
