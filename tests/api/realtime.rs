//! The native websocket and Socket.IO endpoints, with a real websocket client.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use likewise::hub::Publication;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp, TestUser, ADMIN_TOKEN};

pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) async fn connect(app: &TestApp, query: &str) -> Ws {
    let url = format!("ws://{}/ws?{query}", app.addr);
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    ws
}

/// A signed-in `/ws` connection, past its `ready` event.
pub(crate) async fn connect_user(app: &TestApp, user: &TestUser) -> Ws {
    let mut ws = connect(app, &format!("token={}", user.token)).await;
    let ready = next_event(&mut ws).await;
    assert_eq!(ready["event"], "ready");
    assert_eq!(ready["data"]["user_id"], user.id);
    ws
}

/// The next text message as JSON; panics on close or after [`WAIT`].
pub(crate) async fn next_event(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an event within the deadline")
            .expect("the connection is open")
            .expect("a message");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON event"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected message {other:?}"),
        }
    }
}

/// The next event named `name`, skipping others.
async fn event_named(ws: &mut Ws, name: &str) -> Value {
    loop {
        let e = next_event(ws).await;
        if e["event"] == name {
            return e;
        }
    }
}

/// Reads until the server's close frame; returns its code.
pub(crate) async fn close_code(ws: &mut Ws) -> u16 {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a close within the deadline");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) | None => return 1005,
            Some(Ok(_)) => continue,
            Some(Err(e)) => panic!("connection failed instead of closing: {e}"),
        }
    }
}

pub(crate) async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("sent");
}

pub(crate) async fn upgrade_status(app: &TestApp, path: &str) -> (StatusCode, Value) {
    // A plain GET with the upgrade headers, to read the refusal's status and body.
    let resp = app
        .client
        .get(app.url(path))
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .expect("request sent");
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

#[tokio::test]
async fn websocket_upgrades_without_a_valid_token_are_refused_before_upgrading() {
    let app = spawn_app().await;
    let (status, body) = upgrade_status(&app, "/ws").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = upgrade_status(&app, "/ws?token=not-a-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/ws", app.addr))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_like_over_http_arrives_as_new_notification() {
    let app = spawn_app().await;
    let author = app.register("author").await;
    let fan = app.register("fan").await;
    let post = app.create_post(&author, "Hello").await;
    let mut ws = connect_user(&app, &author).await;

    let (status, _) = app
        .put(&format!("/api/posts/{post}/like"), &fan.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let e = event_named(&mut ws, "new_notification").await;
    assert_eq!(e["data"]["kind"], "like_post");
    assert_eq!(e["data"]["actor_id"], fan.id);
    assert_eq!(e["data"]["post_id"], post);
    assert_eq!(e["data"]["read"], false);

    send(&mut ws, json!({"op": "ping"})).await;
    assert_eq!(event_named(&mut ws, "pong").await["event"], "pong");
}

#[tokio::test]
async fn joining_another_users_room_is_refused_and_post_rooms_get_post_updated() {
    let app = spawn_app().await;
    let a = app.register("alice").await;
    let b = app.register("bob").await;
    let post = app.create_post(&a, "Counted").await;
    let mut ws = connect_user(&app, &b).await;

    send(
        &mut ws,
        json!({"op": "subscribe", "room": format!("user:{}", a.id)}),
    )
    .await;
    let e = next_event(&mut ws).await;
    assert_eq!(e["event"], "error");
    assert_eq!(e["data"]["code"], "forbidden");

    send(&mut ws, json!({"op": "subscribe", "room": "post:999999"})).await;
    assert_eq!(next_event(&mut ws).await["data"]["code"], "not_found");

    send(
        &mut ws,
        json!({"op": "subscribe", "room": format!("post:{post}")}),
    )
    .await;
    let e = next_event(&mut ws).await;
    assert_eq!(e["event"], "subscribed");

    app.put(&format!("/api/posts/{post}/like"), &b.token).await;
    let e = event_named(&mut ws, "post_updated").await;
    assert_eq!(e["data"]["id"], post);
    assert_eq!(e["data"]["likes_count"], 1);

    send(&mut ws, json!({"op": "dance"})).await;
    assert_eq!(next_event(&mut ws).await["data"]["code"], "bad_request");
    ws.send(Message::text("not json")).await.unwrap();
    assert_eq!(next_event(&mut ws).await["data"]["code"], "bad_request");
}

#[tokio::test]
async fn admin_publish_reaches_room_members_and_counts_them() {
    let app = spawn_app().await;
    let a = app.register("alice").await;
    let mut ws = connect_user(&app, &a).await;
    send(&mut ws, json!({"op": "subscribe", "room": "public:lobby"})).await;
    assert_eq!(next_event(&mut ws).await["event"], "subscribed");

    let (status, body) = app
        .post(
            "/api/admin/publish",
            ADMIN_TOKEN,
            json!({"room": "public:lobby", "event": "announcement", "data": {"text": "hi"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["delivered"], 1);
    let e = next_event(&mut ws).await;
    assert_eq!(e, json!({"event": "announcement", "data": {"text": "hi"}}));

    let (status, _) = app
        .post(
            "/api/admin/publish",
            &a.token,
            json!({"room": "public:lobby", "event": "x", "data": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .post(
            "/api/admin/publish",
            ADMIN_TOKEN,
            json!({"room": "", "event": "x"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // An outside app's notification is stored and pushed.
    let (status, body) = app
        .post(
            "/api/admin/notifications",
            ADMIN_TOKEN,
            json!({"user_id": a.id, "text": "Your export is ready"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let e = event_named(&mut ws, "new_notification").await;
    assert_eq!(e["data"]["kind"], "custom");
    assert_eq!(e["data"]["text"], "Your export is ready");
    assert_eq!(e["data"]["id"], body["id"]);

    let (_, stats) = app.get("/api/admin/stats", ADMIN_TOKEN).await;
    assert_eq!(stats["connections"]["ws"], 1);
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_closed_with_1009() {
    let app = spawn_app_with(|s| s.limits.max_ws_message_bytes = 1024).await;
    let a = app.register("alice").await;
    let mut ws = connect_user(&app, &a).await;
    let big = json!({"op": "ping", "pad": "x".repeat(2000)}).to_string();
    ws.send(Message::text(big)).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);

    // Fragments that add up past the limit are refused the same way.
    let mut ws = connect_user(&app, &a).await;
    let part = Bytes::from("x".repeat(600));
    ws.send(Message::Frame(Frame::message(
        part.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        part,
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, 1009);
}

#[tokio::test]
async fn a_fragmented_message_is_reassembled() {
    let app = spawn_app().await;
    let a = app.register("alice").await;
    let mut ws = connect_user(&app, &a).await;
    let text = json!({"op": "ping"}).to_string();
    let (head, tail) = text.split_at(5);
    ws.send(Message::Frame(Frame::message(
        Bytes::from(head.to_owned()),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    ws.send(Message::Frame(Frame::message(
        Bytes::from(tail.to_owned()),
        OpCode::Data(Data::Continue),
        true,
    )))
    .await
    .unwrap();
    assert_eq!(next_event(&mut ws).await["event"], "pong");
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_without_blocking_the_publisher() {
    let app = spawn_app_with(|s| s.limits.outbound_queue = 4).await;
    let a = app.register("alice").await;
    let mut slow = connect_user(&app, &a).await;
    let b = app.register("bob").await;
    let mut fast = connect_user(&app, &b).await;
    send(
        &mut fast,
        json!({"op": "subscribe", "room": "public:firehose"}),
    )
    .await;
    assert_eq!(next_event(&mut fast).await["event"], "subscribed");
    send(
        &mut slow,
        json!({"op": "subscribe", "room": "public:firehose"}),
    )
    .await;
    assert_eq!(next_event(&mut slow).await["event"], "subscribed");

    // The slow client never reads; big publications fill the socket buffers, then
    // its queue. Publishing never blocks.
    let hub = &app.state.hub;
    let payload = Bytes::from(vec![b'x'; 256 * 1024]);
    let mut published = 0;
    while hub
        .stats()
        .dropped_slow
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(published < 2_000, "the slow consumer was never dropped");
        hub.publish(Publication::raw("public:firehose", payload.clone()));
        published += 1;
        // The fast client keeps up.
        let e = event_named(&mut fast, "message").await;
        assert_eq!(e["data"].as_str().map(str::len), Some(payload.len()));
    }
    assert_eq!(
        hub.room_size("public:firehose"),
        1,
        "only the fast client remains"
    );
    assert_eq!(close_code(&mut slow).await, 1013);
}

#[tokio::test]
async fn resuming_with_since_replays_in_order_without_gap_or_duplicate_and_live_ones_follow_in_id_order(
) {
    let app = spawn_app().await;
    let author = app.register("author").await;
    let mut posts = Vec::new();
    for i in 0..30 {
        posts.push(app.create_post(&author, &format!("post {i}")).await);
    }
    let mut fans = Vec::new();
    for i in 0..6 {
        fans.push(app.register(&format!("fan{i}")).await);
    }
    // 60 likes before connecting, 120 more while the client connects and replays.
    let like_all = |fans: Vec<TestUser>, posts: Vec<u64>| {
        let app = &app;
        async move {
            // All at once: many notify tasks for one receiver run concurrently.
            let likes = fans.iter().flat_map(|fan| {
                posts.iter().map(move |p| async move {
                    let (s, _) = app.put(&format!("/api/posts/{p}/like"), &fan.token).await;
                    assert_eq!(s, StatusCode::OK);
                })
            });
            futures::future::join_all(likes).await;
        }
    };
    like_all(fans[..2].to_vec(), posts.clone()).await;
    let total = 6 * posts.len();
    // Wait until at least a few notifications exist, so the replay has work to do.
    app.eventually(WAIT, || async {
        let (_, b) = app.get("/api/notifications?limit=5", &author.token).await;
        (b["notifications"].as_array().map_or(0, Vec::len) >= 5).then_some(())
    })
    .await;

    let connect_and_read = async {
        let mut ws = connect(&app, &format!("token={}&since=0", author.token)).await;
        assert_eq!(next_event(&mut ws).await["event"], "ready");
        let mut ids = Vec::new();
        while ids.len() < total {
            let e = event_named(&mut ws, "new_notification").await;
            ids.push(e["data"]["id"].as_u64().unwrap());
        }
        ids
    };
    let (ids, ()) = tokio::join!(
        connect_and_read,
        like_all(fans[2..].to_vec(), posts.clone())
    );

    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "pushed in id order, so resuming after the highest id misses nothing: {ids:?}"
    );
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), total, "no notification twice");
    // Everything stored is what was received.
    let mut stored = Vec::new();
    let mut before: Option<u64> = None;
    loop {
        let path = match before {
            Some(b) => format!("/api/notifications?limit=100&before={b}"),
            None => "/api/notifications?limit=100".to_owned(),
        };
        let (_, body) = app.get(&path, &author.token).await;
        for n in body["notifications"].as_array().unwrap() {
            stored.push(n["id"].as_u64().unwrap());
        }
        match body["next_before"].as_u64() {
            Some(b) => before = Some(b),
            None => break,
        }
    }
    stored.sort_unstable();
    assert_eq!(stored, unique, "no gap");

    // Resuming from the middle replays exactly the newer ones, in order.
    let mid = unique[total / 2];
    let mut ws = connect(&app, &format!("token={}&since={mid}", author.token)).await;
    assert_eq!(next_event(&mut ws).await["event"], "ready");
    let want: Vec<u64> = unique.iter().copied().filter(|id| *id > mid).collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        got.push(next_event(&mut ws).await["data"]["id"].as_u64().unwrap());
    }
    assert_eq!(got, want);
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() {
    let app = spawn_app().await;
    let a = app.register("alice").await;
    let mut ws = connect_user(&app, &a).await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(close_code(&mut ws).await, 1001);
    drop(ws);
    stopping.await.unwrap();
}

// --- Socket.IO over the websocket transport, spoken by hand -----------------------

pub(crate) async fn sio_connect(app: &TestApp) -> Ws {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connects");
    let open = next_text(&mut ws).await;
    assert!(open.starts_with('0'), "{open}");
    let open: Value = serde_json::from_str(&open[1..]).unwrap();
    assert_eq!(open["upgrades"], json!([]));
    assert!(open["sid"].is_string());
    assert!(open["pingInterval"].is_u64() && open["pingTimeout"].is_u64());
    assert!(open["maxPayload"].is_u64());
    ws
}

pub(crate) async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a packet within the deadline")
            .expect("open")
            .expect("a message");
        if let Message::Text(t) = msg {
            return t.to_string();
        }
    }
}

#[tokio::test]
async fn socketio_clients_authenticate_in_connect_and_receive_events() {
    let app = spawn_app_with(|s| {
        s.limits.ping_interval_ms = 200;
        s.limits.ping_timeout_ms = 300;
    })
    .await;
    let author = app.register("author").await;
    let fan = app.register("fan").await;
    let post = app.create_post(&author, "Hello").await;

    let mut bad = sio_connect(&app).await;
    bad.send(Message::text(r#"40{"token":"nope"}"#))
        .await
        .unwrap();
    let refused = next_text(&mut bad).await;
    assert!(refused.starts_with("44{"), "{refused}");
    assert!(refused.contains("unauthorized"));

    let mut ws = sio_connect(&app).await;
    ws.send(Message::text(format!(
        r#"40{{"token":"{}"}}"#,
        author.token
    )))
    .await
    .unwrap();
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40{\"sid\""), "{connected}");

    app.put(&format!("/api/posts/{post}/like"), &fan.token)
        .await;
    // Answer pings while waiting: a client that pongs stays connected.
    let event = loop {
        let p = next_text(&mut ws).await;
        if p == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        break p;
    };
    assert!(event.starts_with("42["), "{event}");
    let args: Value = serde_json::from_str(&event[2..]).unwrap();
    assert_eq!(args[0], "new_notification");
    assert_eq!(args[1]["kind"], "like_post");

    // subscribe with an ack
    ws.send(Message::text(format!(r#"421["subscribe","post:{post}"]"#)))
        .await
        .unwrap();
    let ack = loop {
        let p = next_text(&mut ws).await;
        if p == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        break p;
    };
    assert!(ack.starts_with("431["), "{ack}");
    assert!(ack.contains("\"ok\":true"));

    // A client that stops answering pings is dropped.
    let code = close_code(&mut ws).await;
    assert_eq!(code, 1008);
}

#[tokio::test]
async fn socketio_unknown_transports_are_refused_with_a_clear_message() {
    let app = spawn_app().await;
    let (status, body) = app
        .call(
            reqwest::Method::GET,
            "/socket.io/?EIO=4&transport=flashsocket",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("websocket or polling"));
    let (status, _) = upgrade_status(&app, "/socket.io/?EIO=4&transport=websocket&token=bad").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_replay_longer_than_a_page_arrives_in_order_without_gap_or_duplicate() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let notify = |i: usize| {
        let app = &app;
        let id = alice.id;
        async move {
            let (status, body) = app
                .post(
                    "/api/admin/notifications",
                    ADMIN_TOKEN,
                    json!({"user_id": id, "text": format!("n{i}")}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    };
    // More than two replay pages before connecting, more while the replay runs.
    futures::future::join_all((0..450).map(notify)).await;
    let total = 500;
    let read = async {
        let mut ws = connect(&app, &format!("token={}&since=0", alice.token)).await;
        assert_eq!(next_event(&mut ws).await["event"], "ready");
        let mut ids = Vec::new();
        while ids.len() < total {
            let e = event_named(&mut ws, "new_notification").await;
            ids.push(e["data"]["id"].as_u64().unwrap());
        }
        ids
    };
    let (ids, _) = tokio::join!(read, futures::future::join_all((450..total).map(notify)));
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
    let mut stored: Vec<u64> = app
        .all_notifications(&alice)
        .await
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect();
    stored.sort_unstable();
    assert_eq!(stored, ids, "every stored notification once");
}

#[tokio::test]
async fn a_connection_joins_256_rooms_besides_its_own_and_broadcast() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut ws = connect_user(&app, &alice).await;
    let join = |room: String| json!({"op": "subscribe", "room": room});
    for i in 0..likewise::rooms::MAX_ROOMS_PER_CONNECTION {
        send(&mut ws, join(format!("public:r{i}"))).await;
        let e = next_event(&mut ws).await;
        assert_eq!(e["event"], "subscribed", "room {i}: {e}");
    }
    assert_eq!(
        likewise::rooms::MAX_ROOMS_PER_CONNECTION,
        256,
        "as API.md says"
    );
    send(&mut ws, join("public:r0".into())).await;
    assert_eq!(next_event(&mut ws).await["event"], "subscribed", "again");
    send(&mut ws, join("public:one-more".into())).await;
    let e = next_event(&mut ws).await;
    assert_eq!(e["event"], "error", "{e}");
    assert_eq!(e["data"]["code"], "rate_limited", "{e}");
    send(&mut ws, json!({"op": "unsubscribe", "room": "public:r0"})).await;
    assert_eq!(next_event(&mut ws).await["event"], "unsubscribed");
    send(&mut ws, join("public:one-more".into())).await;
    assert_eq!(next_event(&mut ws).await["event"], "subscribed");
}

#[tokio::test]
async fn room_names_have_one_length_limit_for_joining_and_for_admin_publish() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut ws = connect_user(&app, &alice).await;
    let max = likewise::rooms::MAX_ROOM_BYTES;
    assert_eq!(max, 128, "as API.md says");
    let longest = format!("public:{}", "x".repeat(max - "public:".len()));
    let too_long = format!("{longest}x");

    send(&mut ws, json!({"op": "subscribe", "room": longest})).await;
    assert_eq!(next_event(&mut ws).await["event"], "subscribed");
    send(&mut ws, json!({"op": "subscribe", "room": too_long})).await;
    let e = next_event(&mut ws).await;
    assert_eq!(e["data"]["code"], "invalid", "{e}");

    let publish = |room: &str| json!({"room": room, "event": "hello", "data": 1});
    let (status, body) = app
        .post("/api/admin/publish", ADMIN_TOKEN, publish(&longest))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["delivered"], 1);
    let (status, body) = app
        .post("/api/admin/publish", ADMIN_TOKEN, publish(&too_long))
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
}
