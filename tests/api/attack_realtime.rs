//! Hostile clients against the HTTP listener, `/ws` and `/socket.io/`: each test
//! runs one attack against the real server and asserts what the server does about
//! it (refuses, closes, counts), and that an honest client is still served.
//!
//! Connection counts stay far below the machine's open-file limit: the caps under
//! test are set low in each server's settings.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use likewise::hub::Publication;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app, spawn_app_with, TestApp, TestUser, ADMIN_TOKEN};
use crate::realtime::{connect_user, next_event, send, Ws, WAIT};

async fn subscribe(ws: &mut Ws, room: &str) -> Value {
    send(ws, json!({"op": "subscribe", "room": room})).await;
    next_event(ws).await
}

/// Whether the peer closed `stream` (EOF or reset) within `within`; bytes the
/// server sent before closing (a 408 or 503 answer) are skipped.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

async fn stats(app: &TestApp) -> Value {
    let (status, stats) = app.get("/api/admin/stats", ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{stats}");
    stats
}

/// A like by `fan` on `author`'s new post arrives at `ws` as `new_notification`:
/// the proof that an honest client is still served.
async fn honest_like_is_pushed(app: &TestApp, ws: &mut Ws, author: &TestUser, fan: &TestUser) {
    let post = app.create_post(author, "still here").await;
    let (status, body) = app
        .put(&format!("/api/posts/{post}/like"), &fan.token)
        .await;
    assert!(status.is_success(), "{body}");
    loop {
        let e = next_event(ws).await;
        if e["event"] == "new_notification" {
            assert_eq!(e["data"]["post_id"], post, "{e}");
            return;
        }
    }
}

// --- rooms ------------------------------------------------------------------------

#[tokio::test]
async fn internal_channels_and_unprefixed_rooms_cannot_be_joined() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&bob, "hello").await;
    let mut ws = connect_user(&app, &alice).await;

    for room in [
        "flask-socketio",
        "socketio",
        "lobby",
        "User:1",
        &format!("user:{}", bob.id),
    ] {
        let e = subscribe(&mut ws, room).await;
        assert_eq!(e["event"], "error", "{room}: {e}");
        assert_eq!(e["data"]["code"], "forbidden", "{room}: {e}");
    }
    for room in ["public:lobby", &format!("post:{post}"), "broadcast"] {
        let e = subscribe(&mut ws, room).await;
        assert_eq!(e["event"], "subscribed", "{room}: {e}");
    }
    let e = subscribe(&mut ws, "public:").await;
    assert_eq!(e["data"]["code"], "invalid", "{e}");

    // What the RESP bridge publishes on its channel never reaches a websocket.
    let hub = &app.state.hub;
    assert_eq!(
        hub.publish(Publication::raw(
            "flask-socketio",
            bytes::Bytes::from_static(br#"{"method":"emit","event":"secret","room":"9"}"#),
        )),
        0
    );
    hub.publish(Publication::event("public:lobby", "hello", json!(1)));
    let e = next_event(&mut ws).await;
    assert_eq!(e, json!({"event": "hello", "data": 1}));

    // Socket.IO applies the same policy, answered in the ack.
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&token={}",
        app.addr, alice.token
    );
    let (mut sio, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open = next_text(&mut sio).await;
    assert!(open.starts_with('0'), "{open}");
    sio.send(Message::text("40")).await.unwrap();
    assert!(next_text(&mut sio).await.starts_with("40"));
    for (i, room) in ["flask-socketio", "socketio", "lobby"].iter().enumerate() {
        sio.send(Message::text(format!(r#"42{i}["subscribe","{room}"]"#)))
            .await
            .unwrap();
        let ack = next_text(&mut sio).await;
        assert!(ack.starts_with(&format!("43{i}[")), "{ack}");
        let reply: Value = serde_json::from_str(&ack[2 + i.to_string().len()..]).unwrap();
        assert_eq!(reply[0]["ok"], false, "{ack}");
        assert_eq!(reply[0]["code"], "forbidden", "{ack}");
    }
    sio.send(Message::text(r#"429["subscribe","public:lobby"]"#))
        .await
        .unwrap();
    assert!(next_text(&mut sio).await.contains("\"ok\":true"));

    // The admin route publishes only to rooms clients can be in.
    let (status, body) = app
        .post(
            "/api/admin/publish",
            ADMIN_TOKEN,
            json!({"room": "flask-socketio", "event": "x", "data": 1}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a packet within the deadline")
            .expect("open")
            .expect("a message");
        match msg {
            Message::Text(t) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap();
            }
            Message::Text(t) => return t.to_string(),
            Message::Close(c) => panic!("closed: {c:?}"),
            _ => {}
        }
    }
}

// --- slowloris and idle connections -----------------------------------------------

#[tokio::test]
async fn slowloris_connections_are_closed_by_the_header_timeout() {
    let app = spawn_app_with(|s| s.limits.http_header_timeout_ms = 300).await;
    let author = app.register("author").await;
    let fan = app.register("fan").await;
    let mut honest = connect_user(&app, &author).await;

    let mut attackers = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        if i % 2 == 0 {
            // Half a request head, then silence; the rest send nothing at all.
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
                .await
                .unwrap();
        }
        attackers.push(s);
    }
    // A slowloris that keeps trickling: one header byte every 50 ms.
    let mut trickler = TcpStream::connect(app.addr).await.unwrap();
    trickler.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            if trickler.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        closed_within(&mut trickler, Duration::from_millis(1)).await
    });
    for (i, s) in attackers.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "connection {i} still open"
        );
    }
    assert!(trickle.await.unwrap(), "the trickling connection is closed");

    // Upgraded websockets are not subject to the header timeout.
    honest_like_is_pushed(&app, &mut honest, &author, &fan).await;
    assert!(
        stats(&app).await["http"]["header_timeouts"]
            .as_u64()
            .unwrap()
            >= 100
    );
}

// --- connection caps --------------------------------------------------------------

async fn raw_request(addr: SocketAddr, source: [u8; 4], request: &str) -> (u16, String) {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((source, 0)))
        .expect("bind a loopback source address");
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
const HEALTH: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn connections_over_the_global_cap_are_refused_with_503_and_counted() {
    let app = spawn_app_with(|s| {
        s.limits.max_connections = 24;
        s.limits.max_connections_per_ip = 0;
    })
    .await;
    let author = app.register("author").await;
    let fan = app.register("fan").await;
    let mut honest = connect_user(&app, &author).await;
    // reqwest keeps its pooled connection; the honest websocket holds one more.
    let mut idle = Vec::new();
    while idle.len() < 40 {
        idle.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let (status, text) = raw_request(app.addr, [127, 0, 0, 1], UPGRADE).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("\"unavailable\""), "{text}");
    let (status, _) = raw_request(app.addr, [127, 0, 0, 1], HEALTH).await;
    assert_eq!(status, 503);
    drop(idle);

    // Room again once the idle ones are gone; the established websocket was served
    // all along.
    let refused = app
        .eventually(WAIT, || async {
            let (status, _) = raw_request(app.addr, [127, 0, 0, 1], HEALTH).await;
            (status == 200).then_some(())
        })
        .await;
    let _: () = refused;
    honest_like_is_pushed(&app, &mut honest, &author, &fan).await;
    let http = &stats(&app).await["http"];
    assert!(http["refused"]["global"].as_u64().unwrap() >= 2, "{http}");
    assert_eq!(http["max_connections"], 24, "{http}");
    let metrics = app.text("/metrics").await;
    assert!(
        metrics.contains("likewise_http_connections_refused_total{reason=\"global\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn connections_over_the_per_address_cap_are_refused_and_other_addresses_served() {
    let app = spawn_app_with(|s| s.limits.max_connections_per_ip = 8).await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, 3], 0))).unwrap();
        idle.push(socket.connect(app.addr).await.unwrap());
    }
    let (status, text) = raw_request(app.addr, [127, 0, 0, 3], UPGRADE).await;
    assert_eq!(status, 503, "{text}");
    let (status, text) = raw_request(app.addr, [127, 0, 0, 4], HEALTH).await;
    assert_eq!(status, 200, "{text}");
    let http = &stats(&app).await["http"];
    assert_eq!(http["refused"]["per_ip"], 1, "{http}");
}

// --- Socket.IO CONNECT deadline ---------------------------------------------------

#[tokio::test]
async fn socketio_sockets_that_never_send_connect_are_counted_then_closed() {
    let app = spawn_app_with(|s| s.limits.socketio_connect_timeout_ms = 500).await;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let mut silent = Vec::new();
    for _ in 0..20 {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert!(next_text(&mut ws).await.starts_with('0'));
        silent.push(ws);
    }
    assert_eq!(
        stats(&app).await["realtime"]["socketio_awaiting_connect"],
        20
    );
    for ws in &mut silent {
        let code = loop {
            match tokio::time::timeout(WAIT, ws.next())
                .await
                .expect("closed in time")
            {
                Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(code, 1008);
    }
    let realtime = app
        .eventually(WAIT, || async {
            let s = stats(&app).await;
            (s["realtime"]["socketio_awaiting_connect"] == 0).then_some(s["realtime"].clone())
        })
        .await;
    assert_eq!(realtime["socketio_connect_timeouts"], 20, "{realtime}");

    // A client that sends CONNECT in time stays.
    let user = app.register("alice").await;
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert!(next_text(&mut ws).await.starts_with('0'));
    ws.send(Message::text(format!(r#"40{{"token":"{}"}}"#, user.token)))
        .await
        .unwrap();
    assert!(next_text(&mut ws).await.starts_with("40"));
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.state.hub.publish(Publication::event(
        &format!("user:{}", user.id),
        "hi",
        json!(1),
    ));
    assert_eq!(next_text(&mut ws).await, r#"42["hi",1]"#);
}

// --- a peer that never reads ------------------------------------------------------

#[tokio::test]
async fn a_websocket_peer_that_never_reads_is_dropped_by_the_write_timeout() {
    let app = spawn_app_with(|s| {
        s.limits.ws_write_timeout_ms = 300;
        // Large enough that the hub's queue and byte budget never overflow first.
        s.limits.outbound_queue = 100_000;
        s.limits.output_hard_limit_bytes = 1 << 30;
        s.limits.output_soft_limit_bytes = 1 << 30;
    })
    .await;
    let alice = app.register("alice").await;
    let mut ws = connect_user(&app, &alice).await;
    assert_eq!(
        subscribe(&mut ws, "public:flood").await["event"],
        "subscribed"
    );
    // From now on the client reads nothing.
    let hub = &app.state.hub;
    let payload = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    for _ in 0..600 {
        hub.publish(Publication::raw("public:flood", payload.clone()));
    }
    app.eventually(WAIT, || async {
        (hub.room_size("public:flood") == 0).then_some(())
    })
    .await;
    assert_eq!(stats(&app).await["realtime"]["write_timeouts"], 1);
    drop(ws);
}

// --- websocket framing ------------------------------------------------------------

/// A websocket opened by hand, to send frames a library would refuse to send.
struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawWs {
    async fn open(app: &TestApp, user: &TestUser) -> RawWs {
        let mut stream = TcpStream::connect(app.addr).await.unwrap();
        let req = format!(
            "GET /ws?token={} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            user.token
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut ws = RawWs {
            stream,
            buf: Vec::new(),
        };
        loop {
            if let Some(end) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&ws.buf[..end]).into_owned();
                assert!(head.starts_with("HTTP/1.1 101"), "{head}");
                ws.buf.drain(..end + 4);
                break;
            }
            ws.fill().await;
        }
        let (op, payload) = ws.frame().await.expect("the ready event");
        assert_eq!(op, 1);
        assert!(String::from_utf8_lossy(&payload).contains("ready"));
        ws
    }

    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("data within the deadline")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next server frame (opcode, payload); `None` at EOF.
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let op = self.buf[0] & 0x0f;
                let (len, head) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= head + len {
                    let payload = self.buf[head..head + len].to_vec();
                    self.buf.drain(..head + len);
                    return Some((op, payload));
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Sends a frame; `mask` None sends it unmasked (forbidden for clients).
    async fn send(&mut self, fin: bool, op: u8, payload: &[u8], mask: Option<[u8; 4]>) {
        let mut out = vec![(u8::from(fin) << 7) | op];
        let m = if mask.is_some() { 0x80 } else { 0 };
        assert!(payload.len() < 126);
        out.push(m | payload.len() as u8);
        match mask {
            Some(key) => {
                out.extend_from_slice(&key);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => out.extend_from_slice(payload),
        }
        self.stream.write_all(&out).await.unwrap();
    }

    /// The server's next frame, which must be a close; returns its code.
    async fn close_code(&mut self) -> u16 {
        match self.frame().await {
            Some((8, payload)) if payload.len() >= 2 => {
                u16::from_be_bytes([payload[0], payload[1]])
            }
            Some((8, _)) => 1005,
            Some((_, payload)) => panic!(
                "expected a close, got {:?}",
                String::from_utf8_lossy(&payload)
            ),
            None => panic!("the connection ended without a close frame"),
        }
    }
}

const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

#[tokio::test]
async fn an_unmasked_client_frame_is_closed_with_1002() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut ws = RawWs::open(&app, &alice).await;
    // A masked ping op is answered...
    ws.send(true, 1, br#"{"op":"ping"}"#, KEY).await;
    let (op, pong) = ws.frame().await.unwrap();
    assert_eq!(op, 1);
    assert!(String::from_utf8_lossy(&pong).contains("pong"));
    // ...an unmasked one closes the connection with 1002 (RFC 6455 5.1).
    ws.send(true, 1, br#"{"op":"ping"}"#, None).await;
    assert_eq!(ws.close_code().await, 1002);

    // Unmasked control frames too.
    let mut ws = RawWs::open(&app, &alice).await;
    ws.send(true, 9, b"hi", None).await;
    assert_eq!(ws.close_code().await, 1002);
}

#[tokio::test]
async fn a_new_message_inside_a_fragmented_one_is_closed_with_1002() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut ws = RawWs::open(&app, &alice).await;
    ws.send(false, 1, br#"{"op":"#, KEY).await;
    // A second non-final text frame where a continuation must come.
    ws.send(false, 1, br#"{"op":"ping"}"#, KEY).await;
    assert_eq!(ws.close_code().await, 1002);

    let mut ws = RawWs::open(&app, &alice).await;
    ws.send(false, 1, br#"{"op":"#, KEY).await;
    ws.send(true, 1, br#"{"op":"ping"}"#, KEY).await;
    assert_eq!(ws.close_code().await, 1002);

    let mut ws = RawWs::open(&app, &alice).await;
    ws.send(true, 0, br#"{"op":"ping"}"#, KEY).await;
    assert_eq!(ws.close_code().await, 1002);

    // An honest fragmented message is still reassembled.
    let mut ws = RawWs::open(&app, &alice).await;
    ws.send(false, 1, br#"{"op":"#, KEY).await;
    ws.send(true, 0, br#""ping"}"#, KEY).await;
    let (op, pong) = ws.frame().await.unwrap();
    assert_eq!(op, 1);
    assert!(String::from_utf8_lossy(&pong).contains("pong"));
}

#[tokio::test]
async fn an_honest_client_is_served_while_others_attack() {
    let app = spawn_app_with(|s| {
        s.limits.http_header_timeout_ms = 300;
        s.limits.socketio_connect_timeout_ms = 300;
    })
    .await;
    let author = app.register("author").await;
    let fan = app.register("fan").await;
    let mut honest = connect_user(&app, &author).await;
    let mut held = Vec::new();
    for _ in 0..50 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr);
    let mut sio = Vec::new();
    for _ in 0..20 {
        sio.push(tokio_tungstenite::connect_async(&url).await.unwrap().0);
    }
    let mut hostile = RawWs::open(&app, &fan).await;
    hostile.send(false, 1, b"[", KEY).await;
    hostile.send(false, 1, b"[", KEY).await;
    assert_eq!(hostile.close_code().await, 1002);
    assert_eq!(
        subscribe(&mut honest, "flask-socketio").await["data"]["code"],
        "forbidden"
    );
    honest_like_is_pushed(&app, &mut honest, &author, &fan).await;
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    for ws in &mut sio {
        let end = tokio::time::timeout(WAIT, async {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Close(Some(f)) = m {
                    return u16::from(f.code);
                }
            }
            0
        })
        .await
        .expect("closed in time");
        assert_eq!(end, 1008);
    }
}

#[tokio::test]
async fn open_websockets_hold_their_place_under_the_cap_until_they_end() {
    let app = spawn_app_with(|s| {
        s.limits.max_connections = 8;
        s.limits.max_connections_per_ip = 0;
    })
    .await;
    let alice = app.register("alice").await;
    let url = format!("ws://{}/ws?token={}", app.addr, alice.token);
    let mut open = Vec::new();
    let refused = loop {
        assert!(open.len() <= 8, "more websockets than the cap allows");
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => break resp.status(),
            Err(e) => panic!("expected a 503 answer, got {e}"),
        }
    };
    assert_eq!(refused, 503);
    assert!(
        open.len() >= 6,
        "only {} websockets before the cap",
        open.len()
    );
    // A closed websocket frees its place.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    while first.next().await.is_some() {}
    drop(first);
    let ws = app
        .eventually(WAIT, || {
            let url = url.clone();
            async move { tokio_tungstenite::connect_async(url).await.ok() }
        })
        .await;
    drop(ws);
}
