//! A primary and two edges on one real `redis-server` on loopback: clients on
//! either edge receive what happens anywhere, exactly once, and resume with
//! `since` across a Redis restart, a lost edge and a lost primary.
//!
//! The edges run in this process (`likewise::edge::Edge`) where they only need
//! to stop gracefully, and as the real binary where one must die by SIGKILL.

use std::net::SocketAddr;
use std::time::Duration;

use futures::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use likewise::edge::{Edge, EdgeSettings};

use crate::cluster::{announce, received_until, texts, RedisServer};
use crate::helpers::{spawn_app_with, Api, Binary, TestApp, TestUser, ADMIN_TOKEN};
use crate::presence::sio_event;
use crate::realtime::{close_code, next_event, next_text, Ws};

/// How long a node gets to notice Redis going or coming back.
const RECONNECT: Duration = Duration::from_secs(20);
/// How long an event may take to cross the cluster.
const WAIT: Duration = Duration::from_secs(10);
/// How long a node that stops heartbeating keeps counting for presence.
const PRESENCE_TTL_S: u64 = 2;

/// An edge running in this process.
struct TestEdge {
    api: Api,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestEdge {
    /// Stops it gracefully and waits until it has.
    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.expect("edge task").expect("edge ran");
        }
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn edge_settings(primary: SocketAddr, redis: &str) -> EdgeSettings {
    let mut s = EdgeSettings::for_tests(primary);
    s.admin_token = Some(ADMIN_TOKEN.to_owned());
    s.cluster.redis = Some(redis.to_owned());
    s.cluster.reconnect_min_ms = 20;
    s.cluster.reconnect_max_ms = 200;
    s.cluster.heartbeat_ms = 100;
    s.cluster.presence_ttl_s = PRESENCE_TTL_S;
    s.auth_cache_ms = 300;
    s
}

async fn spawn_edge(settings: EdgeSettings) -> TestEdge {
    let edge = Edge::build(settings).await.expect("edge builds");
    let api = Api::new(edge.http_addr());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(edge.run_until_stopped(shutdown.clone()));
    TestEdge {
        api,
        shutdown,
        handle: Some(handle),
    }
}

/// Redis, the primary and two edges, every bus connected.
struct Cluster {
    redis: Option<RedisServer>,
    primary: TestApp,
    a: TestEdge,
    b: TestEdge,
    _dir: tempfile::TempDir,
}

async fn cluster() -> Option<Cluster> {
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), None).await?;
    let url = redis.url();
    let primary = {
        let url = url.clone();
        spawn_app_with(move |s| {
            s.cluster.redis = Some(url);
            s.cluster.reconnect_min_ms = 20;
            s.cluster.reconnect_max_ms = 200;
            s.cluster.heartbeat_ms = 100;
            s.cluster.presence_ttl_s = PRESENCE_TTL_S;
        })
        .await
    };
    let a = spawn_edge(edge_settings(primary.addr, &url)).await;
    let b = spawn_edge(edge_settings(primary.addr, &url)).await;
    for api in [&primary.api, &a.api, &b.api] {
        await_health(api, "ok").await;
    }
    Some(Cluster {
        redis: Some(redis),
        primary,
        a,
        b,
        _dir: dir,
    })
}

/// Waits until `/healthz` says `status` (the bus is up, or down).
async fn await_health(api: &Api, status: &'static str) -> Value {
    api.eventually(RECONNECT, || async {
        let (code, body) = api.call(Method::GET, "/healthz", None, None).await;
        (code == StatusCode::OK && body["status"] == status).then_some(body)
    })
    .await
}

/// A `/ws` connection to `addr` with `query`, past its `ready` event.
async fn ws(addr: SocketAddr, query: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?{query}"))
        .await
        .expect("websocket connects");
    let ready = next_event(&mut ws).await;
    assert_eq!(ready["event"], "ready", "{ready}");
    ws
}

/// A Socket.IO connection (websocket transport) to `addr`, signed in with `auth`.
async fn sio(addr: SocketAddr, auth: Value) -> Ws {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    let open = next_text(&mut ws).await;
    assert!(open.starts_with('0'), "{open}");
    ws.send(Message::text(format!("40{auth}"))).await.unwrap();
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40{\"sid\""), "{connected}");
    ws
}

/// What `/ws` receives up to the announcement `marker`, as short labels.
async fn ws_until(ws: &mut Ws, marker: &str) -> Vec<String> {
    texts(&received_until(ws, marker).await)
}

/// What Socket.IO receives up to the announcement `marker`, as short labels.
async fn sio_until(ws: &mut Ws, marker: &str) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let e = sio_event(ws).await;
        match e[0].as_str() {
            Some("announcement") if e[1]["text"] == marker => return got,
            Some("announcement") => got.push(e[1]["text"].as_str().unwrap().to_owned()),
            Some("new_notification") => got.push(format!("notification {}", e[1]["id"])),
            _ => {}
        }
    }
}

/// `liker` likes a new post of `author`'s through `api`; the notification's id,
/// once the primary has stored it.
async fn like(api: &Api, primary: &TestApp, author: &TestUser, liker: &TestUser) -> u64 {
    let post = api.create_post(author, "a post").await;
    let (status, body) = api
        .put(&format!("/api/posts/{post}/like"), &liker.token)
        .await;
    assert!(status.is_success(), "{status} {body}");
    primary
        .eventually(WAIT, || async {
            primary
                .all_notifications(author)
                .await
                .iter()
                .find(|n| n["post_id"] == post && n["actor_id"] == liker.id)
                .and_then(|n| n["id"].as_u64())
        })
        .await
}

#[tokio::test]
async fn clients_on_either_edge_receive_what_happens_anywhere_once_each() {
    let Some(c) = cluster().await else { return };
    let alice = c.a.api.register("alice").await;
    let bob = c.a.api.register("bob").await;

    // Alice on edge B over Socket.IO, with her token in CONNECT.
    let mut alice_b = sio(c.b.api.addr, json!({"token": alice.token})).await;
    // Bob on edge A over /ws, with a ticket issued through edge A (spent on the
    // primary by edge A).
    let (status, body) =
        c.a.api
            .post("/api/realtime/tickets", &bob.token, json!({}))
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ticket = body["ticket"].as_str().unwrap().to_owned();
    let mut bob_a = ws(c.a.api.addr, &format!("ticket={ticket}")).await;
    // The ticket was spent: a second use is refused by the primary, through edge B.
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?ticket={ticket}", c.b.api.addr)).await;
    assert!(refused.is_err(), "a spent ticket opened a connection");

    // A like sent through edge A reaches Alice's Socket.IO on edge B.
    let id = like(&c.a.api, &c.primary, &alice, &bob).await;
    let e = sio_event(&mut alice_b).await;
    assert_eq!(e[0], "new_notification", "{e}");
    assert_eq!(
        (e[1]["id"].as_u64(), &e[1]["kind"]),
        (Some(id), &json!("like_post"))
    );

    // An admin publish on the primary reaches Bob's /ws on edge A.
    announce(&c.primary, &format!("user:{}", bob.id), "for bob").await;
    // A marker to everyone: whatever was sent twice would show up before it.
    announce(&c.primary, "broadcast", "end").await;
    assert_eq!(ws_until(&mut bob_a, "end").await, ["for bob"]);
    assert_eq!(sio_until(&mut alice_b, "end").await, Vec::<String>::new());

    // Post rooms are checked with the primary; a post that does not exist is refused.
    let post = c.a.api.create_post(&alice, "watched").await;
    bob_a
        .send(Message::text(
            json!({"op": "subscribe", "room": format!("post:{post}")}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_event(&mut bob_a).await["event"], "subscribed");
    bob_a
        .send(Message::text(
            json!({"op": "subscribe", "room": "post:999999"}).to_string(),
        ))
        .await
        .unwrap();
    let e = next_event(&mut bob_a).await;
    assert_eq!(
        (&e["event"], &e["data"]["code"]),
        (&json!("error"), &json!("not_found"))
    );

    // A revoked token stops opening connections on an edge once its cache expires.
    let (status, _) = c.a.api.delete("/api/sessions", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    c.b.api
        .eventually(WAIT, || async {
            let url = format!("ws://{}/ws?token={}", c.b.api.addr, alice.token);
            match tokio_tungstenite::connect_async(url).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                    (r.status() == StatusCode::UNAUTHORIZED).then_some(())
                }
                _ => None,
            }
        })
        .await;

    // The primary gone: the edges answer the API with 503, open sockets live on.
    let Cluster { primary, a, b, .. } = c;
    primary.stop().await;
    let (status, body) = a.api.get("/api/me", &bob.token).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    bob_a
        .send(Message::text(json!({"op": "ping"}).to_string()))
        .await
        .unwrap();
    assert_eq!(next_event(&mut bob_a).await["event"], "pong");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn resuming_with_since_loses_nothing_across_a_redis_restart_and_a_lost_edge() {
    let Some(mut c) = cluster().await else { return };
    let alice = c.a.api.register("alice").await;
    let bob = c.a.api.register("bob").await;
    let mut alice_b = ws(c.b.api.addr, &format!("token={}", alice.token)).await;
    let first = like(&c.a.api, &c.primary, &alice, &bob).await;
    let e = next_event(&mut alice_b).await;
    assert_eq!(e["data"]["id"].as_u64(), Some(first), "{e}");

    // Redis goes away: every node keeps running, degraded; likes are still
    // stored on the primary, but cannot reach edge B.
    let redis = c.redis.take().unwrap();
    let port = redis.port();
    redis.kill().await;
    for api in [&c.primary.api, &c.a.api, &c.b.api] {
        await_health(api, "degraded").await;
    }
    let missed = [
        like(&c.a.api, &c.primary, &alice, &bob).await,
        like(&c.a.api, &c.primary, &alice, &bob).await,
    ];

    // Redis is back: the nodes reconnect by themselves.
    let dir = tempfile::tempdir().unwrap();
    let redis = RedisServer::start(dir.path(), Some(port)).await.unwrap();
    for api in [&c.primary.api, &c.a.api, &c.b.api] {
        await_health(api, "ok").await;
    }
    // The connection Alice kept open on edge B through the outage gets what it
    // missed, in order, without reconnecting: the edge replays it from the primary.
    for id in missed {
        let e = next_event(&mut alice_b).await;
        assert_eq!(
            (&e["event"], e["data"]["id"].as_u64()),
            (&json!("new_notification"), Some(id)),
            "{e}"
        );
    }
    // A client that reconnected instead resumes with since: the same ones, once,
    // then live ones; and the kept connection gets nothing twice.
    let mut resumed = ws(
        c.b.api.addr,
        &format!("token={}&since={first}", alice.token),
    )
    .await;
    let live = like(&c.a.api, &c.primary, &alice, &bob).await;
    // Stored is not yet pushed: the marker goes out once the push has reached edge B.
    let e = next_event(&mut alice_b).await;
    assert_eq!(e["data"]["id"].as_u64(), Some(live), "{e}");
    announce(&c.primary, "broadcast", "end").await;
    let expected: Vec<String> = [missed[0], missed[1], live]
        .iter()
        .map(|id| format!("notification {id}"))
        .collect();
    assert_eq!(ws_until(&mut resumed, "end").await, expected);
    assert_eq!(ws_until(&mut alice_b, "end").await, Vec::<String>::new());
    drop(resumed);

    // Edge B goes away: Alice reconnects to edge A and resumes there.
    drop(alice_b);
    let Cluster { primary, a, b, .. } = c;
    b.stop().await;
    let after_b = like(&a.api, &primary, &alice, &bob).await;
    let mut alice_a = ws(a.api.addr, &format!("token={}&since={live}", alice.token)).await;
    announce(&primary, "broadcast", "end again").await;
    assert_eq!(
        ws_until(&mut alice_a, "end again").await,
        [format!("notification {after_b}")]
    );
    a.stop().await;
    primary.stop().await;
    redis.kill().await;
}

/// The config file of an edge run as the binary: quick reconnects for tests.
const EDGE_CONFIG: &str = "\
[cluster]
reconnect_min_ms = 20
reconnect_max_ms = 200
heartbeat_ms = 100
presence_ttl_s = 2
";

/// The next `presence` event on a `/ws` connection.
async fn presence_event(ws: &mut Ws) -> Value {
    loop {
        let e = next_event(ws).await;
        if e["event"] == "presence" {
            return e["data"].clone();
        }
    }
}

#[tokio::test]
async fn an_edge_killed_with_sigkill_stops_counting_for_presence_and_its_clients_resume_elsewhere()
{
    let Some(c) = cluster().await else { return };
    let redis = c.redis.as_ref().unwrap().url();
    let killed = Binary::start_edge(EDGE_CONFIG, c.primary.addr, &redis).await;
    let killed_api = Api::new(killed.addr);
    await_health(&killed_api, "ok").await;
    let alice = c.a.api.register("alice").await;
    let bob = c.a.api.register("bob").await;

    // Bob on edge A watches Alice's presence; Alice connects to the edge that dies.
    let mut bob_a = ws(c.a.api.addr, &format!("token={}", bob.token)).await;
    bob_a
        .send(Message::text(
            json!({"op": "subscribe", "room": format!("presence:{}", alice.id)}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_event(&mut bob_a).await["event"], "subscribed");
    assert_eq!(
        c.a.api.online(&bob.token, &[alice.id]).await,
        Vec::<u64>::new()
    );
    let mut alice_killed = ws(killed.addr, &format!("token={}", alice.token)).await;
    assert_eq!(
        presence_event(&mut bob_a).await,
        json!({"user_id": alice.id, "online": true})
    );
    assert_eq!(c.a.api.online(&bob.token, &[alice.id]).await, [alice.id]);
    let seen = like(&c.a.api, &c.primary, &alice, &bob).await;
    let e = next_event(&mut alice_killed).await;
    assert_eq!(e["data"]["id"].as_u64(), Some(seen), "{e}");

    // SIGKILL: no goodbye. The edge's heartbeats stop, and within the ttl (plus
    // one heartbeat of a live node) Alice is offline, announced once.
    killed.stop();
    assert_eq!(
        presence_event(&mut bob_a).await,
        json!({"user_id": alice.id, "online": false})
    );
    assert_eq!(
        c.a.api.online(&bob.token, &[alice.id]).await,
        Vec::<u64>::new()
    );

    let missed = like(&c.a.api, &c.primary, &alice, &bob).await;
    let mut alice_a = ws(c.a.api.addr, &format!("token={}&since={seen}", alice.token)).await;
    announce(&c.primary, &format!("user:{}", alice.id), "end").await;
    assert_eq!(
        ws_until(&mut alice_a, "end").await,
        [format!("notification {missed}")]
    );
    // Alice is back, on edge A: online again, once.
    assert_eq!(
        presence_event(&mut bob_a).await,
        json!({"user_id": alice.id, "online": true})
    );
    announce(&c.primary, "broadcast", "quiet").await;
    assert_eq!(ws_until(&mut bob_a, "quiet").await, Vec::<String>::new());
}

#[tokio::test]
async fn hostile_clients_of_an_edge_get_the_primarys_refusals_and_the_edges_limits() {
    let Some(c) = cluster().await else { return };
    let alice = c.a.api.register("alice").await;
    let edge = c.b.api.addr;

    // Credentials the primary refuses are refused on the edge, in the API's shape.
    for (query, status) in [
        ("token=not-a-token", StatusCode::UNAUTHORIZED),
        (
            &format!("token={ADMIN_TOKEN}") as &str,
            StatusCode::FORBIDDEN,
        ),
        ("ticket=never-issued", StatusCode::UNAUTHORIZED),
        ("", StatusCode::UNAUTHORIZED),
    ] {
        match tokio_tungstenite::connect_async(format!("ws://{edge}/ws?{query}")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), status, "{query}")
            }
            other => panic!("{query}: {:?}", other.map(|_| "connected")),
        }
    }
    // A Socket.IO CONNECT with a bad token gets a connect_error.
    let (mut sio, _) = tokio_tungstenite::connect_async(format!(
        "ws://{edge}/socket.io/?EIO=4&transport=websocket"
    ))
    .await
    .unwrap();
    assert!(next_text(&mut sio).await.starts_with('0'));
    sio.send(Message::text(r#"40{"token":"nope"}"#))
        .await
        .unwrap();
    let refused = next_text(&mut sio).await;
    assert!(
        refused.starts_with("44{") && refused.contains("unauthorized"),
        "{refused}"
    );

    // The edge's own limits bound its connections: an oversized message is closed.
    let mut ws = ws(edge, &format!("token={}", alice.token)).await;
    let max = likewise::config::Limits::default().max_ws_message_bytes;
    ws.send(Message::text("x".repeat(max + 1))).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);

    // The routes edges ask are the admin's only, and bounded.
    let (status, body) = c
        .primary
        .get(
            &format!("/api/cluster/notifications?user_id={}&limit=1001", alice.id),
            ADMIN_TOKEN,
        )
        .await;
    crate::helpers::assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = c
        .primary
        .post(
            "/api/cluster/auth",
            ADMIN_TOKEN,
            json!({"token": alice.token, "ticket": "both"}),
        )
        .await;
    crate::helpers::assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = c
        .primary
        .post(
            "/api/cluster/auth",
            &alice.token,
            json!({"token": alice.token}),
        )
        .await;
    crate::helpers::assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
}
