//! The cluster bus between two nodes through a real `redis-server` on loopback:
//! cross-node delivery, exactly once on each node, and what happens while Redis
//! is down and once it is back.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use futures::StreamExt;

use crate::helpers::{spawn_app_with, TestApp, TestUser, ADMIN_TOKEN};
use crate::realtime::{connect_user, next_event, send, Ws};

/// How long a node gets to notice Redis going or coming back.
const RECONNECT: Duration = Duration::from_secs(20);

/// A `redis-server` on a loopback port, without persistence, killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts one on `port` (a free one when `None`) and waits until it says it
    /// accepts connections; `None` when redis-server is not installed.
    pub(crate) async fn start(dir: &Path, port: Option<u16>) -> Option<RedisServer> {
        let port = port.unwrap_or_else(|| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            l.local_addr().unwrap().port()
        });
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // CI installs it and sets this: there a missing server is a failure.
                if std::env::var_os("LIKEWISE_TESTS_NEED_REDIS").is_some() {
                    panic!("redis-server is not installed, and LIKEWISE_TESTS_NEED_REDIS is set");
                }
                eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
                return None;
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(line) = lines.next_line().await.expect("redis-server output") {
                if line.contains("Ready to accept connections") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "redis-server did not become ready");
        // Keep draining its output so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Some(RedisServer { child, port })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub(crate) async fn kill(mut self) {
        self.child.kill().await.expect("redis-server killed");
    }
}

async fn node(redis_url: &str) -> TestApp {
    node_with(redis_url, |_| {}).await
}

async fn node_with(
    redis_url: &str,
    tweak: impl FnOnce(&mut likewise::config::Settings),
) -> TestApp {
    let url = redis_url.to_owned();
    spawn_app_with(move |s| {
        tweak(s);
        s.cluster.redis = Some(url);
        s.cluster.reconnect_min_ms = 20;
        s.cluster.reconnect_max_ms = 200;
        s.cluster.heartbeat_ms = 100;
    })
    .await
}

/// A `redis-server` in `dir` and two nodes on it, each with `tweak` applied,
/// once both are connected; `None` when redis-server is not installed.
async fn two_nodes(
    dir: &Path,
    tweak: impl Fn(&mut likewise::config::Settings) + Clone,
) -> Option<(RedisServer, TestApp, TestApp)> {
    let redis = RedisServer::start(dir, None).await?;
    let a = node_with(&redis.url(), tweak.clone()).await;
    let b = node_with(&redis.url(), tweak).await;
    await_health(&a, "ok").await;
    await_health(&b, "ok").await;
    Some((redis, a, b))
}

async fn health(app: &TestApp) -> (StatusCode, Value) {
    let resp = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    (resp.status(), resp.json().await.expect("JSON"))
}

/// Waits until `/healthz` says `status` (the bus connects and reconnects in the
/// background; this is the state it exposes).
async fn await_health(app: &TestApp, status: &'static str) -> Value {
    app.eventually(RECONNECT, || async {
        let (code, body) = health(app).await;
        assert_eq!(code, StatusCode::OK, "a bus fault is not a 503: {body}");
        (body["status"] == status).then_some(body)
    })
    .await
}

pub(crate) async fn announce(app: &TestApp, room: &str, text: &str) {
    let (status, body) = app
        .post(
            "/api/admin/publish",
            ADMIN_TOKEN,
            json!({"room": room, "event": "announcement", "data": {"text": text}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn join(ws: &mut Ws, room: &str) {
    send(ws, json!({"op": "subscribe", "room": room})).await;
    loop {
        if next_event(ws).await["event"] == "subscribed" {
            return;
        }
    }
}

/// The announcements (and notifications) `ws` receives up to the announcement
/// `marker`, which must come after them: what arrives twice shows up here.
pub(crate) async fn received_until(ws: &mut Ws, marker: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let e = next_event(ws).await;
        match e["event"].as_str() {
            Some("announcement") if e["data"]["text"] == marker => return got,
            Some("announcement") | Some("new_notification") => got.push(e),
            _ => {}
        }
    }
}

pub(crate) fn texts(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e["event"].as_str() {
            Some("announcement") => e["data"]["text"].as_str().unwrap_or("").to_owned(),
            _ => format!("notification {}", e["data"]["id"]),
        })
        .collect()
}

#[tokio::test]
async fn two_nodes_share_events_through_redis_once_each_and_survive_its_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, a, b)) = two_nodes(dir.path(), |_| {}).await else {
        return;
    };

    // The same accounts on both nodes (each has its own store): the ids match.
    let author_a = a.register("author").await;
    let fan = a.register("fan").await;
    let author_b = b.register("author").await;
    assert_eq!(author_a.id, author_b.id);
    let post = a.create_post(&author_a, "Hello").await;

    let mut on_a = connect_user(&a, &author_a).await;
    let mut on_b = connect_user(&b, &author_b).await;
    join(&mut on_a, "public:lobby").await;
    join(&mut on_b, "public:lobby").await;

    // An admin publish on A and a like on A reach the author's socket on B.
    announce(&a, "public:lobby", "from A").await;
    let (status, _) = a.put(&format!("/api/posts/{post}/like"), &fan.token).await;
    assert_eq!(status, StatusCode::OK);
    // Up to the notification, B's client has each of A's events, in order.
    let mut on_b_got = Vec::new();
    let notification = loop {
        let e = next_event(&mut on_b).await;
        match e["event"].as_str() {
            Some("new_notification") => break e,
            Some("announcement") => on_b_got.push(e),
            _ => {}
        }
    };
    assert_eq!(texts(&on_b_got), ["from A"]);
    assert_eq!(notification["data"]["kind"], "like_post");
    assert_eq!(notification["data"]["actor_id"], fan.id);
    // Redis orders its channel: a marker published after the events closes the
    // window in which a duplicate of them (or A's own echo) would have shown.
    announce(&a, "public:lobby", "marker 1").await;
    assert_eq!(
        texts(&received_until(&mut on_b, "marker 1").await),
        Vec::<String>::new(),
        "nothing twice on B"
    );
    announce(&b, "public:lobby", "marker 1b").await;
    assert_eq!(
        texts(&received_until(&mut on_a, "marker 1b").await),
        vec![
            "from A".to_owned(),
            format!("notification {}", notification["data"]["id"]),
            "marker 1".to_owned(),
        ],
        "A's own client got each event once, none echoed back by the bus"
    );
    assert_eq!(
        texts(&received_until(&mut on_b, "marker 1b").await),
        Vec::<String>::new()
    );
    let bus_a = a.state.cluster.as_ref().expect("A has a bus");
    let bus_b = b.state.cluster.as_ref().expect("B has a bus");
    assert_ne!(bus_a.node_id(), bus_b.node_id());

    // Redis goes away: both nodes say so, and keep delivering locally.
    let port = redis.port;
    redis.kill().await;
    for app in [&a, &b] {
        let body = await_health(app, "degraded").await;
        let reason = body["reason"].as_str().unwrap();
        assert!(reason.contains("cluster bus"), "{reason}");
        assert!(reason.contains("127.0.0.1"), "{reason}");
    }
    announce(&a, "public:lobby", "A alone").await;
    announce(&b, "public:lobby", "B alone").await;
    announce(&a, "public:lobby", "marker 2").await;
    announce(&b, "public:lobby", "marker 2").await;
    assert_eq!(
        texts(&received_until(&mut on_a, "marker 2").await),
        ["A alone"]
    );
    assert_eq!(
        texts(&received_until(&mut on_b, "marker 2").await),
        ["B alone"]
    );
    assert!(
        bus_a
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    let metrics = a.text("/metrics").await;
    assert!(metrics.contains("likewise_cluster_dropped_total{reason=\"bus_down\"}"));

    // Redis is back on the same address: both reconnect, and cross-node delivery
    // works again.
    let redis = RedisServer::start(dir.path(), Some(port))
        .await
        .expect("redis-server restarts");
    await_health(&a, "ok").await;
    await_health(&b, "ok").await;
    announce(&a, "public:lobby", "A again").await;
    announce(&a, "public:lobby", "marker 3").await;
    assert_eq!(
        texts(&received_until(&mut on_b, "marker 3").await),
        ["A again"]
    );
    assert_eq!(
        texts(&received_until(&mut on_a, "marker 3").await),
        ["A again"]
    );
    announce(&b, "public:lobby", "B again").await;
    announce(&b, "public:lobby", "marker 4").await;
    assert_eq!(
        texts(&received_until(&mut on_a, "marker 4").await),
        ["B again"]
    );
    assert_eq!(
        texts(&received_until(&mut on_b, "marker 4").await),
        ["B again"]
    );

    a.stop().await;
    b.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn a_bad_cluster_url_is_refused_at_start_without_showing_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = likewise::config::Settings::for_tests(dir.path());
    settings.resp = None;
    settings.cluster.redis = Some("http://:hunter2@127.0.0.1:6379".into());
    let err = likewise::startup::Application::build(settings)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("cluster.redis"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[tokio::test]
async fn garbage_on_the_bus_channel_is_counted_and_dropped_and_the_node_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), None).await else {
        return;
    };
    let app = node(&redis.url()).await;
    await_health(&app, "ok").await;
    let user = app.register("reader").await;
    let mut ws = connect_user(&app, &user).await;
    join(&mut ws, "public:lobby").await;

    // Anyone who reaches the Redis can publish on the channel.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut oversized = vec![1u8];
    oversized.resize(2 * 1024 * 1024, 0xff);
    let garbage: [&[u8]; 5] = [b"", b"hello", b"\x01", b"\x02\x00\x00", &oversized];
    for message in garbage {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("likewise:events")
            .arg(message)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(receivers, 1, "the node is subscribed");
    }
    let bus = app.state.cluster.as_ref().unwrap();
    let dropped = || {
        bus.stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    app.eventually(RECONNECT, || async { (dropped() == 5).then_some(()) })
        .await;
    // None of it reached the client before this.
    announce(&app, "public:lobby", "after").await;
    assert_eq!(
        texts(&received_until(&mut ws, "after").await),
        Vec::<String>::new()
    );
    assert_eq!(health(&app).await.1["status"], "ok");
    let metrics = app.text("/metrics").await;
    assert!(metrics.contains("likewise_cluster_dropped_total{reason=\"malformed\"}"));
    assert!(metrics.contains("likewise_cluster_dropped_total{reason=\"received_too_large\"}"));
    app.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn a_resp_publish_on_one_node_reaches_resp_and_socket_clients_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let with_resp = |s: &mut likewise::config::Settings| {
        s.resp = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    };
    let Some((redis, a, b)) = two_nodes(dir.path(), with_resp).await else {
        return;
    };
    let user = b.register("reader").await;
    let mut ws = connect_user(&b, &user).await;
    join(&mut ws, "public:lobby").await;

    let mut sub = redis::Client::open(b.resp_url(""))
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    sub.subscribe("public:lobby").await.unwrap();
    let mut messages = sub.on_message();
    let mut publisher = redis::Client::open(a.resp_url(""))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let payload = r#"{"event":"announcement","data":{"text":"from a RESP client on A"}}"#;
    let local: i64 = redis::cmd("PUBLISH")
        .arg("public:lobby")
        .arg(payload)
        .query_async(&mut publisher)
        .await
        .unwrap();
    assert_eq!(local, 0, "PUBLISH counts this node's receivers only");
    let got = tokio::time::timeout(RECONNECT, messages.next())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(got.get_channel_name(), "public:lobby");
    assert_eq!(got.get_payload_bytes(), payload.as_bytes());
    announce(&a, "public:lobby", "marker").await;
    assert_eq!(
        texts(&received_until(&mut ws, "marker").await),
        ["from a RESP client on A"]
    );
    drop(messages);
    a.stop().await;
    b.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn a_flask_socketio_emit_into_the_real_redis_reaches_clients_on_every_node_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, a, b)) = two_nodes(dir.path(), |_| {}).await else {
        return;
    };
    let user_a = a.register("reader_a").await;
    let user_b = b.register("reader_b").await;
    let mut ws_a = connect_user(&a, &user_a).await;
    let mut ws_b = connect_user(&b, &user_b).await;
    join(&mut ws_a, "public:lobby").await;
    join(&mut ws_b, "public:lobby").await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut publish = async |channel: &str, message: &[u8]| -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(message)
            .query_async(&mut conn)
            .await
            .unwrap()
    };
    // Malformed messages are counted and dropped by each node.
    assert_eq!(publish("socketio", b"not JSON").await, 2);
    assert_eq!(publish("flask-socketio", b"\x80\x04pickle").await, 2);
    let dropped = |app: &TestApp| {
        app.state
            .cluster
            .as_ref()
            .unwrap()
            .stats()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    a.eventually(RECONNECT, || async {
        (dropped(&a) == 2 && dropped(&b) == 2).then_some(())
    })
    .await;

    // What python-socketio's RedisManager publishes for
    // `socketio.emit("announcement", {"text": ...}, to="public:lobby")`.
    let emit = json!({
        "method": "emit", "event": "announcement",
        "data": [{"text": "from a Flask-SocketIO emitter"}],
        "binary": false, "namespace": "/", "room": "public:lobby",
        "skip_sid": null, "callback": null, "host_id": "0123456789abcdef",
    });
    let receivers = publish("flask-socketio", emit.to_string().as_bytes()).await;
    assert_eq!(
        receivers, 2,
        "both nodes subscribe to the Flask-SocketIO channel"
    );
    for ws in [&mut ws_a, &mut ws_b] {
        let got = loop {
            let e = next_event(ws).await;
            if e["event"] == "announcement" {
                break e;
            }
        };
        assert_eq!(got["data"]["text"], "from a Flask-SocketIO emitter");
    }
    // Exactly once: had a node handed the emit to the bus, the copy would come
    // before the other node's next publication (the bus keeps each node's order).
    announce(&b, "public:lobby", "from b").await;
    assert_eq!(
        texts(&received_until(&mut ws_a, "from b").await),
        Vec::<String>::new()
    );
    announce(&a, "public:lobby", "from a").await;
    assert_eq!(
        texts(&received_until(&mut ws_b, "from a").await),
        ["from b"]
    );
    for app in [&a, &b] {
        let bus = app.state.cluster.as_ref().unwrap();
        let bridged = bus
            .stats()
            .bridged
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(bridged, 1, "one emit handled on each node");
    }
    assert!(a
        .text("/metrics")
        .await
        .contains("likewise_cluster_socketio_received_total"));
    a.stop().await;
    b.stop().await;
    redis.kill().await;
}

// Presence across nodes. Each node has its own store: users are registered in
// the same order on both, so that their ids match (as if both nodes served the
// same primary's accounts); each node has its own tokens.

/// Registers `names` on both nodes in the same order: the users as each node
/// knows them, with the same ids.
async fn same_users(a: &TestApp, b: &TestApp, names: &[&str]) -> (Vec<TestUser>, Vec<TestUser>) {
    let mut on_a = Vec::new();
    let mut on_b = Vec::new();
    for name in names {
        on_a.push(a.register(name).await);
    }
    for (name, user) in names.iter().zip(&on_a) {
        let twin = b.register(name).await;
        assert_eq!(twin.id, user.id, "registered in the same order");
        on_b.push(twin);
    }
    (on_a, on_b)
}

/// Waits until `GET /api/presence` on `app` answers `expected`.
async fn await_online(app: &TestApp, token: &str, ids: &[u64], expected: &[u64]) {
    app.eventually(RECONNECT, || async {
        (app.online(token, ids).await == expected).then_some(())
    })
    .await;
}

/// `PUT /api/me/presence` on `app`; the answer.
async fn set_visible(app: &TestApp, user: &TestUser, visible: bool) -> Value {
    let (status, body) = app
        .call(
            reqwest::Method::PUT,
            "/api/me/presence",
            Some(&user.token),
            Some(json!({"visible": visible})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The `presence` events `ws` receives up to the announcement `marker`.
async fn presence_until(ws: &mut Ws, marker: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let e = next_event(ws).await;
        match e["event"].as_str() {
            Some("announcement") if e["data"]["text"] == marker => return got,
            Some("presence") => got.push(e["data"].clone()),
            _ => {}
        }
    }
}

/// The next `presence` event's data.
async fn next_presence(ws: &mut Ws) -> Value {
    loop {
        let e = next_event(ws).await;
        if e["event"] == "presence" {
            return e["data"].clone();
        }
    }
}

/// Waits until each node has written its presence changes to Redis, then
/// publishes an announcement `marker` in `room` straight into Redis, as a bus
/// message from no node (node ids are odd); returns the presence events `ws` got
/// before it. Scripts publish their announcements as they make the changes, and
/// Redis delivers in the order it executes, so whatever was announced (late, or
/// twice) arrives before the marker and shows up here.
async fn presence_settled(
    nodes: &[&TestApp],
    redis: &RedisServer,
    ws: &mut Ws,
    room: &str,
    marker: &str,
) -> Vec<Value> {
    for app in nodes {
        app.state
            .cluster
            .as_ref()
            .expect("a bus")
            .presence_settled()
            .await;
    }
    let publication =
        likewise::hub::Publication::event(room, "announcement", json!({"text": marker}));
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: i64 = redis::cmd("PUBLISH")
        .arg("likewise:events")
        .arg(likewise::cluster::wire::encode(2, &publication))
        .query_async(&mut conn)
        .await
        .unwrap();
    presence_until(ws, marker).await
}

/// Waits until `app`'s hub holds (or no longer holds) a connection of `user`.
async fn connected_on(app: &TestApp, user: u64, connected: bool) {
    app.eventually(RECONNECT, || async {
        (app.state.hub.is_connected(user) == connected).then_some(())
    })
    .await;
}

fn presence(user: u64, online: bool) -> Value {
    json!({"user_id": user, "online": online})
}

#[tokio::test]
async fn a_user_is_online_while_any_node_holds_a_connection_and_each_change_is_announced_once() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, a, b)) = two_nodes(dir.path(), |_| {}).await else {
        return;
    };
    let (on_a, on_b) = same_users(&a, &b, &["alice", "watcher"]).await;
    let alice = on_a[0].id;
    let room = format!("presence:{alice}");
    let mut w = connect_user(&a, &on_a[1]).await;
    join(&mut w, &room).await;
    assert!(a.online(&on_a[1].token, &[alice]).await.is_empty());

    // Connected on B: online through A, announced once.
    let alice_b = connect_user(&b, &on_b[0]).await;
    connected_on(&b, alice, true).await;
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "b opened").await,
        [presence(alice, true)]
    );
    await_online(
        &a,
        &on_a[1].token,
        &[alice, on_a[1].id],
        &[alice, on_a[1].id],
    )
    .await;
    assert_eq!(b.online(&on_b[1].token, &[alice]).await, [alice]);

    // A second connection, on A: nothing new to announce.
    let mut alice_a = connect_user(&a, &on_a[0]).await;
    connected_on(&a, alice, true).await;
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "a opened").await,
        Vec::<Value>::new()
    );

    // B's closes: A still holds one.
    drop(alice_b);
    connected_on(&b, alice, false).await;
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "b closed").await,
        Vec::<Value>::new()
    );
    assert_eq!(b.online(&on_b[1].token, &[alice]).await, [alice]);

    // A's closes: offline, announced once.
    alice_a.close(None).await.unwrap();
    connected_on(&a, alice, false).await;
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "a closed").await,
        [presence(alice, false)]
    );
    assert!(a.online(&on_a[1].token, &[alice]).await.is_empty());
    assert!(b.online(&on_b[1].token, &[alice]).await.is_empty());
    let metrics = a.text("/metrics").await;
    assert!(metrics.contains("likewise_cluster_presence_users"));

    a.stop().await;
    b.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn a_hidden_user_is_never_announced_nor_listed_and_a_choice_made_on_one_node_applies_to_all()
{
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, a, b)) = two_nodes(dir.path(), |_| {}).await else {
        return;
    };
    let (on_a, on_b) = same_users(&a, &b, &["shy", "watcher"]).await;
    let shy = on_a[0].id;
    let room = format!("presence:{shy}");
    let mut w = connect_user(&a, &on_a[1]).await;
    join(&mut w, &room).await;
    // Each node reads the choice from its own store: hidden on both.
    set_visible(&a, &on_a[0], false).await;
    set_visible(&b, &on_b[0], false).await;

    let shy_a = connect_user(&a, &on_a[0]).await;
    let shy_b = connect_user(&b, &on_b[0]).await;
    connected_on(&a, shy, true).await;
    connected_on(&b, shy, true).await;
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "hidden").await,
        Vec::<Value>::new()
    );
    assert!(a.online(&on_a[1].token, &[shy]).await.is_empty());
    assert!(b.online(&on_b[1].token, &[shy]).await.is_empty());

    // Shown through A: B's entry follows too (B's store still says hidden).
    assert_eq!(
        set_visible(&a, &on_a[0], true).await,
        json!({"visible": true, "online": true})
    );
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "shown").await,
        [presence(shy, true)]
    );
    assert_eq!(b.online(&on_b[1].token, &[shy]).await, [shy]);

    // Hidden again through B: A's entry follows.
    assert_eq!(
        set_visible(&b, &on_b[0], false).await,
        json!({"visible": false, "online": false})
    );
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "hidden again").await,
        [presence(shy, false)]
    );
    assert!(a.online(&on_a[1].token, &[shy]).await.is_empty());

    // A hidden user's closes are silent.
    drop(shy_a);
    drop(shy_b);
    connected_on(&a, shy, false).await;
    connected_on(&b, shy, false).await;
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "closed").await,
        Vec::<Value>::new()
    );

    a.stop().await;
    b.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn a_node_whose_heartbeats_stop_stops_counting_within_the_ttl_with_one_offline_event() {
    let dir = tempfile::tempdir().unwrap();
    let ttl = Duration::from_secs(1);
    let short_ttl = |s: &mut likewise::config::Settings| s.cluster.presence_ttl_s = 1;
    let Some((redis, a, b)) = two_nodes(dir.path(), short_ttl).await else {
        return;
    };
    let (on_a, on_b) = same_users(&a, &b, &["alice", "bob", "watcher"]).await;
    let (alice, bob, watcher) = (on_a[0].id, on_a[1].id, &on_a[2]);
    let mut w = connect_user(&a, watcher).await;
    join(&mut w, &format!("presence:{alice}")).await;
    join(&mut w, &format!("presence:{bob}")).await;

    // Alice only on B; Bob on both.
    let _alice_b = connect_user(&b, &on_b[0]).await;
    let _bob_b = connect_user(&b, &on_b[1]).await;
    let _bob_a = connect_user(&a, &on_a[1]).await;
    let mut got = vec![next_presence(&mut w).await, next_presence(&mut w).await];
    got.sort_by_key(|d| d["user_id"].as_u64());
    assert_eq!(got, [presence(alice, true), presence(bob, true)]);
    await_online(&a, &watcher.token, &[alice, bob], &[alice, bob]).await;

    // B stops its heartbeats, as a crashed node would: nothing cleans up after it.
    let stopped = tokio::time::Instant::now();
    b.state.cluster.as_ref().unwrap().abandon_presence();
    // Within the ttl it no longer counts for readers...
    await_online(&a, &watcher.token, &[alice, bob], &[bob]).await;
    let uncounted = stopped.elapsed();
    // ...and within one more sweep interval Alice is announced offline, once;
    // Bob, whom A holds, is not.
    assert_eq!(next_presence(&mut w).await, presence(alice, false));
    let announced = stopped.elapsed();
    // Slack for a loaded machine; without the sweep nothing would ever come.
    let slack = Duration::from_secs(2);
    assert!(uncounted < ttl + slack, "counted for {uncounted:?}");
    assert!(
        announced < ttl + ttl / 3 + slack,
        "announced after {announced:?}"
    );
    let bus_a = a.state.cluster.as_ref().unwrap();
    assert_eq!(bus_a.presence_sweeps(), 1);
    for room in [format!("presence:{alice}"), format!("presence:{bob}")] {
        assert_eq!(
            presence_settled(&[&a], &redis, &mut w, &room, "swept").await,
            Vec::<Value>::new(),
            "announced once"
        );
    }
    assert_eq!(a.online(&watcher.token, &[alice, bob]).await, [bob]);
    assert!(a
        .text("/metrics")
        .await
        .contains("likewise_cluster_presence_sweeps_total 1"));

    a.stop().await;
    b.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn a_node_that_stops_gracefully_takes_its_users_offline_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // A long ttl: only the graceful leave can explain an offline event in time.
    let long_ttl = |s: &mut likewise::config::Settings| s.cluster.presence_ttl_s = 600;
    let Some((redis, a, b)) = two_nodes(dir.path(), long_ttl).await else {
        return;
    };
    let (on_a, on_b) = same_users(&a, &b, &["alice", "watcher"]).await;
    let alice = on_a[0].id;
    let room = format!("presence:{alice}");
    let mut w = connect_user(&a, &on_a[1]).await;
    join(&mut w, &room).await;
    let _alice_b = connect_user(&b, &on_b[0]).await;
    connected_on(&b, alice, true).await;
    assert_eq!(
        presence_settled(&[&a, &b], &redis, &mut w, &room, "opened").await,
        [presence(alice, true)]
    );

    b.stop().await;
    assert_eq!(next_presence(&mut w).await, presence(alice, false));
    assert!(a.online(&on_a[1].token, &[alice]).await.is_empty());
    assert_eq!(
        presence_settled(&[&a], &redis, &mut w, &room, "after").await,
        Vec::<Value>::new()
    );

    a.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn without_redis_presence_is_read_from_the_node_and_is_rebuilt_when_redis_comes_back_empty() {
    let dir = tempfile::tempdir().unwrap();
    let Some((redis, a, b)) = two_nodes(dir.path(), |_| {}).await else {
        return;
    };
    let (on_a, on_b) = same_users(&a, &b, &["alice", "watcher"]).await;
    let alice = on_a[0].id;
    let _alice_b = connect_user(&b, &on_b[0]).await;
    await_online(&a, &on_a[1].token, &[alice], &[alice]).await;

    // Redis is gone: each node answers from its own connections, same shape.
    let port = redis.port;
    redis.kill().await;
    await_online(&a, &on_a[1].token, &[alice], &[]).await;
    await_online(&b, &on_b[1].token, &[alice], &[alice]).await;

    // Back, without its data: every node writes its set again.
    let redis = RedisServer::start(dir.path(), Some(port))
        .await
        .expect("redis-server restarts");
    await_health(&a, "ok").await;
    await_online(&a, &on_a[1].token, &[alice], &[alice]).await;

    a.stop().await;
    b.stop().await;
    redis.kill().await;
}

#[tokio::test]
async fn a_node_whose_presence_queue_overflows_writes_its_whole_set_again() {
    let dir = tempfile::tempdir().unwrap();
    let Some(redis) = RedisServer::start(dir.path(), None).await else {
        return;
    };
    let a = node(&redis.url()).await;
    let b = node_with(&redis.url(), |s| s.cluster.presence_queue = 16).await;
    await_health(&a, "ok").await;
    await_health(&b, "ok").await;
    let reader = a.register("reader").await;
    // Presence needs no account: B's hub is told of connections directly.
    let leaving = b.state.hub.connect_user(900, || true);
    await_online(&a, &reader.token, &[900], &[900]).await;

    // Redis holds every write for a while: B's writer blocks on one batch while
    // far more changes than its queue takes arrive.
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query_async(&mut conn)
        .await
        .unwrap();
    drop(leaving);
    let arrived: Vec<_> = (1000..1300)
        .map(|u| b.state.hub.connect_user(u, || true))
        .collect();

    // Once Redis takes writes again, B's set is written whole: the changes the
    // queue could not take are not lost, and the one that left is gone.
    let ids: Vec<u64> = std::iter::once(900).chain(1045..1300).collect();
    let expected: Vec<u64> = (1045..1300).collect();
    await_online(&a, &reader.token, &ids, &expected).await;
    await_online(&a, &reader.token, &[1000, 1001], &[1000, 1001]).await;

    drop(arrived);
    a.stop().await;
    b.stop().await;
    redis.kill().await;
}
