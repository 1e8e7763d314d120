//! Presence: a user is online while one of their realtime connections is open,
//! whatever the transport; `presence` events in `presence:{id}`; `GET
//! /api/presence`; and the choice not to be shown online.

use std::time::Duration;

use futures::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::ADMIN_TOKEN;
use crate::helpers::{assert_error, spawn_app, spawn_app_in, spawn_app_with, TestApp, TestUser};
use crate::realtime::{connect_user, next_event, next_text, send, sio_connect, Ws};

/// A signed-in Socket.IO connection (over the websocket transport), past CONNECT.
pub(crate) async fn sio_user(app: &TestApp, user: &TestUser) -> Ws {
    let mut ws = sio_connect(app).await;
    ws.send(Message::text(format!(r#"40{{"token":"{}"}}"#, user.token)))
        .await
        .unwrap();
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40{\"sid\""), "{connected}");
    ws
}

/// The next Socket.IO event as `[name, args...]`, answering pings meanwhile.
pub(crate) async fn sio_event(ws: &mut Ws) -> Value {
    loop {
        let p = next_text(ws).await;
        if p == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        let body = p
            .strip_prefix("42")
            .unwrap_or_else(|| panic!("an event: {p}"));
        return serde_json::from_str(body).expect("JSON arguments");
    }
}

/// Joins `room` over `/ws` and waits for the confirmation.
pub(crate) async fn ws_join(ws: &mut Ws, room: &str) {
    send(ws, json!({"op": "subscribe", "room": room})).await;
    let e = next_event(ws).await;
    assert_eq!(e, json!({"event": "subscribed", "data": {"room": room}}));
}

/// Joins `room` over Socket.IO with an ack, and waits for it.
pub(crate) async fn sio_join(ws: &mut Ws, room: &str) {
    ws.send(Message::text(format!(r#"427["subscribe","{room}"]"#)))
        .await
        .unwrap();
    let ack = next_text(ws).await;
    assert!(ack.starts_with("437["), "{ack}");
    assert!(ack.contains("\"ok\":true"), "{ack}");
}

/// Publishes a marker event to `room` as the admin: an event after which nothing
/// the server sent before it can still arrive.
async fn marker(app: &TestApp, room: &str, n: u64) {
    let (status, body) = app
        .post(
            "/api/admin/publish",
            ADMIN_TOKEN,
            json!({"room": room, "event": "marker", "data": n}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Waits until the server counts `n` open connections of `transport`.
async fn connections_are(app: &TestApp, transport: &str, n: u64) {
    app.eventually(Duration::from_secs(10), || async move {
        let (_, stats) = app.get("/api/admin/stats", ADMIN_TOKEN).await;
        (stats["connections"][transport] == n).then_some(())
    })
    .await;
}

async fn set_visible(app: &TestApp, user: &TestUser, visible: bool) -> Value {
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/me/presence",
            Some(&user.token),
            Some(json!({"visible": visible})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn two_connections_of_one_user_announce_online_once_and_offline_after_both_close() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let watcher = app.register("watcher").await;
    let room = format!("presence:{}", alice.id);
    let mut w = connect_user(&app, &watcher).await;
    ws_join(&mut w, &room).await;
    assert!(app.online(&watcher.token, &[alice.id]).await.is_empty());

    let native = connect_user(&app, &alice).await;
    let e = next_event(&mut w).await;
    assert_eq!(
        e,
        json!({"event": "presence", "data": {"user_id": alice.id, "online": true}})
    );
    let mut sio = sio_user(&app, &alice).await;
    marker(&app, &room, 1).await;
    assert_eq!(
        next_event(&mut w).await["event"],
        "marker",
        "a second connection is not announced"
    );
    assert_eq!(
        app.online(&watcher.token, &[alice.id, watcher.id, 999])
            .await,
        vec![alice.id, watcher.id]
    );

    // The first closes: still online.
    drop(native);
    connections_are(&app, "ws", 1).await;
    marker(&app, &room, 2).await;
    assert_eq!(next_event(&mut w).await["data"], 2, "no offline event yet");
    assert_eq!(
        app.online(&watcher.token, &[alice.id]).await,
        vec![alice.id]
    );

    // The last closes: offline.
    sio.close(None).await.unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(
        e,
        json!({"event": "presence", "data": {"user_id": alice.id, "online": false}})
    );
    assert!(app.online(&watcher.token, &[alice.id]).await.is_empty());
}

#[tokio::test]
async fn socketio_clients_follow_presence_rooms_too() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let watcher = app.register("watcher").await;
    let mut w = sio_user(&app, &watcher).await;
    sio_join(&mut w, &format!("presence:{}", alice.id)).await;

    let mut a = connect_user(&app, &alice).await;
    assert_eq!(
        sio_event(&mut w).await,
        json!(["presence", {"user_id": alice.id, "online": true}])
    );
    a.close(None).await.unwrap();
    assert_eq!(
        sio_event(&mut w).await,
        json!(["presence", {"user_id": alice.id, "online": false}])
    );
}

#[tokio::test]
async fn a_hidden_user_is_never_reported_online_and_the_choice_survives_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let app = spawn_app_in(data.path(), |_| {}).await;
    let shy = app.register("shy").await;
    let watcher = app.register("watcher").await;
    let room = format!("presence:{}", shy.id);

    let (status, body) = app.get("/api/me/presence", &shy.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"visible": true, "online": false}));
    assert_eq!(
        set_visible(&app, &shy, false).await,
        json!({"visible": false, "online": false})
    );

    let mut w = connect_user(&app, &watcher).await;
    ws_join(&mut w, &room).await;
    let mut s = connect_user(&app, &shy).await;
    marker(&app, &room, 1).await;
    assert_eq!(
        next_event(&mut w).await["event"],
        "marker",
        "a hidden user is not announced"
    );
    assert!(app.online(&watcher.token, &[shy.id]).await.is_empty());
    assert!(app.online(ADMIN_TOKEN, &[shy.id]).await.is_empty());

    // Shown while connected: announced online at once; hidden again: offline.
    assert_eq!(
        set_visible(&app, &shy, true).await,
        json!({"visible": true, "online": true})
    );
    assert_eq!(next_event(&mut w).await["data"]["online"], true);
    assert_eq!(app.online(&watcher.token, &[shy.id]).await, vec![shy.id]);
    set_visible(&app, &shy, false).await;
    assert_eq!(next_event(&mut w).await["data"]["online"], false);
    assert!(app.online(&watcher.token, &[shy.id]).await.is_empty());
    set_visible(&app, &shy, false).await;

    // Closing the last connection of a hidden user is silent.
    s.close(None).await.unwrap();
    connections_are(&app, "ws", 1).await;
    marker(&app, &room, 2).await;
    assert_eq!(next_event(&mut w).await["data"], 2);

    // The body is checked.
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/me/presence",
            Some(&shy.token),
            Some(json!({"visible": "no"})),
        )
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    drop(w);
    app.stop().await;
    let app = spawn_app_in(data.path(), |_| {}).await;
    let (_, body) = app.get("/api/me/presence", &shy.token).await;
    assert_eq!(body, json!({"visible": false, "online": false}));
    let _s = connect_user(&app, &shy).await;
    assert!(app.online(&shy.token, &[shy.id]).await.is_empty());
    let (_, body) = app.get("/api/me/presence", &shy.token).await;
    assert_eq!(body, json!({"visible": false, "online": false}));
}

#[tokio::test]
async fn presence_queries_need_a_caller_and_are_bounded() {
    let app = spawn_app_with(|s| s.limits.max_presence_ids = 3).await;
    let u = app.register("asker").await;
    let _ws = connect_user(&app, &u).await;

    let (status, body) = app
        .call(Method::GET, "/api/presence?user_ids=1", None, None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        app.online(ADMIN_TOKEN, &[u.id]).await,
        vec![u.id],
        "the admin may ask"
    );
    assert_eq!(app.online(&u.token, &[u.id, u.id, u.id]).await, vec![u.id]);

    let (status, body) = app.get("/api/presence?user_ids=1,2,3,4", &u.token).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3"),
        "{body}"
    );
    for bad in [
        "user_ids=1,x",
        "user_ids=-1",
        "user_ids=1,,2",
        "",
        "user_ids=1e3",
    ] {
        let (status, body) = app.get(&format!("/api/presence?{bad}"), &u.token).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (status, body) = app.get("/api/presence?user_ids=", &u.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"online": []}));
}

#[tokio::test]
async fn presence_and_feed_rooms_are_open_to_any_user_and_count_toward_the_room_limit() {
    let app = spawn_app().await;
    let u = app.register("joiner").await;
    let mut ws = connect_user(&app, &u).await;
    ws_join(&mut ws, "feed").await;
    ws_join(&mut ws, &format!("presence:{}", u.id)).await;
    for bad in ["presence:", "presence:07", "presence:x"] {
        send(&mut ws, json!({"op": "subscribe", "room": bad})).await;
        let e = next_event(&mut ws).await;
        assert_eq!(e["data"]["code"], "invalid", "{bad}: {e}");
    }
    // 2 joined so far; 254 more fill the 256 allowed.
    for id in 1..=254u64 {
        send(
            &mut ws,
            json!({"op": "subscribe", "room": format!("presence:{}", 100_000 + id)}),
        )
        .await;
        assert_eq!(next_event(&mut ws).await["event"], "subscribed");
    }
    send(&mut ws, json!({"op": "subscribe", "room": "presence:1"})).await;
    let e = next_event(&mut ws).await;
    assert_eq!(e["data"]["code"], "rate_limited", "{e}");
    send(&mut ws, json!({"op": "unsubscribe", "room": "feed"})).await;
    assert_eq!(next_event(&mut ws).await["event"], "unsubscribed");
    ws_join(&mut ws, "presence:1").await;
}

/// The next pub/sub message as (channel, JSON payload).
async fn next(messages: &mut (impl futures::Stream<Item = redis::Msg> + Unpin)) -> (String, Value) {
    use futures::StreamExt;
    let msg = tokio::time::timeout(crate::realtime::WAIT, messages.next())
        .await
        .expect("a message in time")
        .expect("open");
    let payload: Value = serde_json::from_str(&msg.get_payload::<String>().unwrap()).unwrap();
    (msg.get_channel_name().to_owned(), payload)
}

#[tokio::test]
async fn redis_clients_follow_presence_and_the_feed_with_patterns() {
    let app = crate::helpers::spawn_app_with_resp(|_| {}).await;
    let alice = app.register("alice").await;
    let client = redis::Client::open(app.resp_url("")).expect("valid url");
    let mut sub = client.get_async_pubsub().await.expect("connects");
    sub.psubscribe("presence:*").await.unwrap();
    sub.psubscribe("fe?d").await.unwrap();
    let mut messages = sub.on_message();
    let ws = connect_user(&app, &alice).await;
    assert_eq!(
        next(&mut messages).await,
        (
            format!("presence:{}", alice.id),
            json!({"event": "presence", "data": {"user_id": alice.id, "online": true}})
        )
    );
    let (status, post) = app
        .post(
            "/api/posts",
            &alice.token,
            json!({"title": "t", "body": "b"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        next(&mut messages).await,
        (
            "feed".to_owned(),
            json!({"event": "new_post", "data": post})
        )
    );
    drop(ws);
    assert_eq!(next(&mut messages).await.1["data"]["online"], false);
}

#[tokio::test]
async fn a_long_polling_session_is_online_and_its_upgrade_to_a_websocket_does_not_flap() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let watcher = app.register("watcher").await;
    let room = format!("presence:{}", alice.id);
    let mut w = connect_user(&app, &watcher).await;
    ws_join(&mut w, &room).await;

    // Engine.IO long-polling: the handshake, then CONNECT with the token.
    let open = app
        .client
        .get(app.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let open: Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).unwrap();
    let sid = open["sid"].as_str().unwrap().to_owned();
    let polling = app.url(&format!("/socket.io/?EIO=4&transport=polling&sid={sid}"));
    let posted = app
        .client
        .post(&polling)
        .body(format!(r#"40{{"token":"{}"}}"#, alice.token))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    let connected = app
        .client
        .get(&polling)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(connected.starts_with("40{\"sid\""), "{connected}");
    assert_eq!(
        next_event(&mut w).await["data"],
        json!({"user_id": alice.id, "online": true})
    );

    // The upgrade to a websocket keeps the session: nothing is announced.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
        app.addr
    ))
    .await
    .expect("the upgrade connects");
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "3probe");
    ws.send(Message::text("5")).await.unwrap();
    // An acknowledged join over the websocket: the upgrade is done.
    ws.send(Message::text(r#"421["subscribe","feed"]"#))
        .await
        .unwrap();
    loop {
        let p = next_text(&mut ws).await;
        if p.starts_with("431[") {
            break;
        }
    }
    marker(&app, &room, 1).await;
    assert_eq!(
        next_event(&mut w).await["event"],
        "marker",
        "no offline or online event around the upgrade"
    );
    assert_eq!(
        app.online(&watcher.token, &[alice.id]).await,
        vec![alice.id]
    );

    ws.close(None).await.unwrap();
    assert_eq!(
        next_event(&mut w).await["data"],
        json!({"user_id": alice.id, "online": false})
    );
}
