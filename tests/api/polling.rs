//! Socket.IO over Engine.IO long-polling, spoken by hand with reqwest, and its
//! upgrade to a websocket (tokio-tungstenite).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{spawn_app_with, Api, TestApp, TestUser, ADMIN_TOKEN};
use crate::realtime::{next_text, Ws, WAIT};

const SEP: char = '\u{1e}';

/// A long-polling session, driven by hand.
struct Polling<'a> {
    api: &'a Api,
    sid: String,
    open: Value,
}

impl<'a> Polling<'a> {
    /// The handshake: `GET ?EIO=4&transport=polling`.
    async fn open(api: &'a Api) -> Polling<'a> {
        let resp = api
            .client
            .get(api.url("/socket.io/?EIO=4&transport=polling&t=abc"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let body = resp.text().await.unwrap();
        assert!(body.starts_with('0'), "{body}");
        let open: Value = serde_json::from_str(&body[1..]).unwrap();
        Polling {
            api,
            sid: open["sid"].as_str().unwrap().to_owned(),
            open,
        }
    }

    fn url(&self) -> String {
        self.api.url(&format!(
            "/socket.io/?EIO=4&transport=polling&sid={}",
            self.sid
        ))
    }

    /// One GET: its status and body.
    async fn get(&self) -> (StatusCode, String) {
        let resp = tokio::time::timeout(WAIT, self.api.client.get(self.url()).send())
            .await
            .expect("a GET is answered within the deadline")
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// The packets of one successful GET.
    async fn packets(&self) -> Vec<String> {
        let (status, body) = self.get().await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body.split(SEP).map(str::to_owned).collect()
    }

    /// The next packet that is not a heartbeat (pings are answered).
    async fn next_packet(&self, queue: &mut Vec<String>) -> String {
        loop {
            if queue.is_empty() {
                *queue = self.packets().await;
            }
            let p = queue.remove(0);
            match p.as_str() {
                "2" => self.post_ok("3").await,
                "6" => {}
                _ => return p,
            }
        }
    }

    async fn post(&self, body: &str) -> (StatusCode, String) {
        let resp = self
            .api
            .client
            .post(self.url())
            .header("content-type", "text/plain;charset=UTF-8")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn post_ok(&self, body: &str) {
        let (status, text) = self.post(body).await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, "ok"));
    }

    /// CONNECT with a token; returns the CONNECT reply.
    async fn connect(&self, user: &TestUser, queue: &mut Vec<String>) -> String {
        self.post_ok(&format!(r#"40{{"token":"{}"}}"#, user.token))
            .await;
        self.next_packet(queue).await
    }
}

fn engine_error(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON error body: {body}"))
}

async fn stats(app: &TestApp) -> Value {
    let (status, body) = app.get("/api/admin/stats", ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    body
}

async fn app_with(ping_interval_ms: u64, ping_timeout_ms: u64) -> TestApp {
    spawn_app_with(|s| {
        s.limits.ping_interval_ms = ping_interval_ms;
        s.limits.ping_timeout_ms = ping_timeout_ms;
        s.limits.max_ws_message_bytes = 1024;
    })
    .await
}

#[tokio::test]
async fn the_handshake_offers_the_websocket_upgrade_and_the_limits() {
    let app = app_with(25_000, 20_000).await;
    let s = Polling::open(&app).await;
    assert_eq!(s.open["upgrades"], json!(["websocket"]));
    assert_eq!(s.open["pingInterval"], 25_000);
    assert_eq!(s.open["pingTimeout"], 20_000);
    assert_eq!(s.open["maxPayload"], 1024);
    assert_eq!(stats(&app).await["realtime"]["polling"]["sessions"], 1);
}

#[tokio::test]
async fn packets_are_framed_with_the_record_separator_both_ways_and_acks_come_back() {
    let app = app_with(25_000, 20_000).await;
    let author = app.register("author").await;
    let p1 = app.create_post(&author, "one").await;
    let p2 = app.create_post(&author, "two").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    let connected = s.connect(&author, &mut q).await;
    assert!(connected.starts_with("40{\"sid\""), "{connected}");

    // Two packets in one POST, each acknowledged.
    s.post_ok(&format!(
        "421[\"subscribe\",\"post:{p1}\"]{SEP}422[\"subscribe\",\"post:{p2}\"]"
    ))
    .await;
    let first = s.next_packet(&mut q).await;
    let second = s.next_packet(&mut q).await;
    assert!(
        first.starts_with("431[") && first.contains("\"ok\":true"),
        "{first}"
    );
    assert!(
        second.starts_with("432[") && second.contains(&format!("post:{p2}")),
        "{second}"
    );

    // Two publications waiting are answered to one GET, separated.
    for room in [format!("post:{p1}"), format!("post:{p2}")] {
        let (status, _) = app
            .post(
                "/api/admin/publish",
                ADMIN_TOKEN,
                json!({"room": room, "event": "hello", "data": {"room": room}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut events = Vec::new();
    while events.len() < 2 {
        events.push(s.next_packet(&mut q).await);
    }
    assert!(events[0].starts_with("42[\"hello\"") && events[0].contains(&format!("post:{p1}")));
    assert!(events[1].contains(&format!("post:{p2}")));
}

#[tokio::test]
async fn a_new_notification_arrives_over_long_polling() {
    let app = app_with(25_000, 20_000).await;
    let author = app.register("author").await;
    let fan = app.register("fan").await;
    let post = app.create_post(&author, "Hello").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&author, &mut q).await;
    // The GET is held until the notification is pushed.
    let like = format!("/api/posts/{post}/like");
    let (packets, _) = tokio::join!(s.packets(), app.put(&like, &fan.token));
    let mut q = packets;
    let event = s.next_packet(&mut q).await;
    assert!(event.starts_with("42[\"new_notification\""), "{event}");
    let args: Value = serde_json::from_str(&event[2..]).unwrap();
    assert_eq!(args[1]["kind"], "like_post");
}

#[tokio::test]
async fn a_bad_token_in_connect_gets_a_connect_error_over_polling() {
    let app = app_with(25_000, 20_000).await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.post_ok(r#"40{"token":"nope"}"#).await;
    let refused = s.next_packet(&mut q).await;
    assert!(refused.starts_with("44{"), "{refused}");
    assert!(refused.contains("unauthorized"), "{refused}");
}

#[tokio::test]
async fn the_server_pings_the_client_pongs_and_a_silent_session_is_freed() {
    let app = app_with(200, 300).await;
    let user = app.register("alice").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&user, &mut q).await;
    assert_eq!(stats(&app).await["connections"]["socket.io"], 1);

    // A held GET is answered by the heartbeat; the client answers by POST.
    for _ in 0..3 {
        assert_eq!(s.packets().await, vec!["2"]);
        s.post_ok("3").await;
    }
    assert_eq!(stats(&app).await["realtime"]["polling"]["sessions"], 1);

    // Silence: no GET, no POST. After pingInterval + pingTimeout the session,
    // its subscription and its place under the caps are gone.
    let freed = app
        .eventually(Duration::from_secs(5), || async {
            let st = stats(&app).await;
            (st["realtime"]["polling"]["sessions"] == 0 && st["connections"]["socket.io"] == 0)
                .then_some(st)
        })
        .await;
    assert_eq!(freed["realtime"]["polling"]["timeouts"], 1);
    let (status, body) = s.get().await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        engine_error(&body),
        json!({"code": 1, "message": "Session ID unknown"})
    );
}

#[tokio::test]
async fn a_second_concurrent_get_is_refused_and_closes_the_session() {
    let app = app_with(25_000, 20_000).await;
    let user = app.register("alice").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&user, &mut q).await;
    // Nothing is due for 25 s: whichever GET arrives second overlaps the first.
    let (a, b) = tokio::join!(s.get(), s.get());
    let mut answers = [a, b];
    answers.sort_by_key(|(status, _)| *status);
    assert_eq!(
        answers[0],
        (StatusCode::OK, "1".to_owned()),
        "the first GET gets a close packet"
    );
    assert_eq!(answers[1].0, StatusCode::BAD_REQUEST);
    assert_eq!(engine_error(&answers[1].1)["code"], 3);
    let (status, body) = s.get().await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(engine_error(&body)["code"], 1);
}

#[tokio::test]
async fn an_unknown_sid_gets_the_engine_io_error() {
    let app = app_with(25_000, 20_000).await;
    let expected = json!({"code": 1, "message": "Session ID unknown"});
    let url = app.url("/socket.io/?EIO=4&transport=polling&sid=nope");
    let get = app.client.get(&url).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::BAD_REQUEST);
    assert_eq!(engine_error(&get.text().await.unwrap()), expected);
    let post = app.client.post(&url).body("40").send().await.unwrap();
    assert_eq!(post.status(), StatusCode::BAD_REQUEST);
    assert_eq!(engine_error(&post.text().await.unwrap()), expected);
    // A websocket upgrade of an unknown session is refused before the upgrade.
    let ws = tokio_tungstenite::connect_async(format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid=nope",
        app.addr
    ))
    .await;
    assert!(ws.is_err());
    // Protocol 3 and unknown transports get their own codes.
    let (status, body) = app
        .call(
            reqwest::Method::GET,
            "/socket.io/?EIO=3&transport=polling",
            None,
            None,
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(5))
    );
}

#[tokio::test]
async fn an_oversize_post_is_refused_before_it_is_read_and_closes_the_session() {
    let app = app_with(25_000, 20_000).await;
    let user = app.register("alice").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&user, &mut q).await;
    let big = format!("42[\"subscribe\",\"{}\"]", "x".repeat(2000));
    let (status, body) = s.post(&big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(engine_error(&body)["code"], 3);
    assert!(engine_error(&body)["detail"]
        .as_str()
        .unwrap()
        .contains("1024"));
    let (status, body) = s.get().await;
    assert_eq!(
        (status, engine_error(&body)["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(1))
    );
    assert_eq!(stats(&app).await["realtime"]["polling"]["sessions"], 0);
}

#[tokio::test]
async fn binary_payloads_are_refused_clearly() {
    let app = app_with(25_000, 20_000).await;
    let s = Polling::open(&app).await;
    let (status, body) = s.post("bAQID").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(engine_error(&body)["detail"]
        .as_str()
        .unwrap()
        .contains("binary"));
    let s = Polling::open(&app).await;
    let resp = app
        .client
        .post(s.url())
        .header("content-type", "application/octet-stream")
        .body(vec![4u8, 1, 2, 3])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

async fn next_ws_text(ws: &mut Ws) -> String {
    loop {
        let t = next_text(ws).await;
        if t == "2" {
            ws.send(Message::text("3")).await.unwrap();
            continue;
        }
        return t;
    }
}

#[tokio::test]
async fn an_upgrade_moves_the_same_session_with_its_rooms_to_the_websocket() {
    let app = app_with(25_000, 20_000).await;
    let author = app.register("author").await;
    let fan = app.register("fan").await;
    let post = app.create_post(&author, "Hello").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&author, &mut q).await;
    s.post_ok(&format!("421[\"subscribe\",\"post:{post}\"]"))
        .await;
    assert!(s.next_packet(&mut q).await.starts_with("431["));
    let before = stats(&app).await;
    assert_eq!(before["connections"]["socket.io"], 1);
    let hub_rooms = before["hub"]["rooms"].clone();

    // A GET is waiting when the probe comes: it is answered with a noop.
    let held = tokio::spawn({
        let client = app.client.clone();
        let url = s.url();
        async move { client.get(url).send().await.unwrap().text().await.unwrap() }
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        app.addr, s.sid
    ))
    .await
    .expect("the upgrade connects");
    ws.send(Message::text("2probe")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "3probe");
    let noop = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(noop, "6");
    ws.send(Message::text("5")).await.unwrap();

    // The same subscription goes on: a notification and a room event arrive
    // on the websocket, and nothing was subscribed again.
    app.put(&format!("/api/posts/{post}/like"), &fan.token)
        .await;
    let event = next_ws_text(&mut ws).await;
    assert!(event.starts_with("42[\"new_notification\""), "{event}");
    let (status, _) = app
        .post(
            "/api/admin/publish",
            ADMIN_TOKEN,
            json!({"room": format!("post:{post}"), "event": "room_event", "data": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // (The like also published the post's new counts to its room.)
    loop {
        let event = next_ws_text(&mut ws).await;
        assert!(event.starts_with("42["), "{event}");
        if event.starts_with("42[\"room_event\"") {
            break;
        }
    }
    let after = stats(&app).await;
    assert_eq!(after["connections"]["socket.io"], 1);
    assert_eq!(after["hub"]["rooms"], hub_rooms);
    assert_eq!(after["realtime"]["polling"]["sessions"], 0);
    assert_eq!(after["realtime"]["polling"]["upgrades"], 1);
    // Acks go on over the websocket too.
    ws.send(Message::text(format!(
        "423[\"unsubscribe\",\"post:{post}\"]"
    )))
    .await
    .unwrap();
    loop {
        let p = next_ws_text(&mut ws).await;
        if p.starts_with("433[") {
            break;
        }
        // (The like's count updates may still be arriving in the post's room.)
        assert!(p.starts_with("42["), "{p}");
    }

    // The polling side of the session is gone.
    let (status, body) = s.get().await;
    assert_eq!(
        (status, engine_error(&body)["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(1))
    );
}

#[tokio::test]
async fn a_failed_probe_leaves_the_session_polling() {
    let app = app_with(25_000, 20_000).await;
    let user = app.register("alice").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&user, &mut q).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket&sid={}",
        app.addr, s.sid
    ))
    .await
    .unwrap();
    ws.send(Message::text("40")).await.unwrap();
    // The websocket is closed; the session answers polls as before.
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
            Some(Ok(_)) => {}
        }
    }
    s.post_ok("421[\"subscribe\",\"public:lobby\"]").await;
    assert!(s.next_packet(&mut q).await.starts_with("431["));
}

#[tokio::test]
async fn allowed_origins_get_cors_headers_and_others_are_forbidden() {
    let app = spawn_app_with(|s| {
        s.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let url = app.url("/socket.io/?EIO=4&transport=polling");
    let ok = app
        .client
        .get(&url)
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    let preflight = app
        .client
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "content-type"
    );
    let evil = app
        .client
        .get(&url)
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    assert_eq!(engine_error(&evil.text().await.unwrap())["code"], 4);
}

#[tokio::test]
async fn polling_sessions_count_against_the_per_address_cap() {
    let app = spawn_app_with(|s| s.limits.max_connections_per_ip = 4).await;
    // One keep-alive connection carries the requests; each session holds a place.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap();
    let url = app.url("/socket.io/?EIO=4&transport=polling");
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(client.get(&url).send().await.unwrap().status());
    }
    assert_eq!(&statuses[..3], &[StatusCode::OK; 3]);
    assert_eq!(statuses[3], StatusCode::SERVICE_UNAVAILABLE);
    // Read in-process: another connection from this address would be refused too.
    assert_eq!(app.state.realtime.to_json()["polling"]["refused"], 1);
}

#[tokio::test]
async fn a_since_replay_longer_than_a_page_arrives_in_order_over_polling() {
    let app = app_with(25_000, 20_000).await;
    let alice = app.register("alice").await;
    let total = 450;
    futures::future::join_all((0..total).map(|i| {
        let app = &app;
        async move {
            let (status, body) = app
                .post(
                    "/api/admin/notifications",
                    ADMIN_TOKEN,
                    json!({"user_id": alice.id, "text": format!("n{i}")}),
                )
                .await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
        }
    }))
    .await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.post_ok(&format!(r#"40{{"token":"{}","since":0}}"#, alice.token))
        .await;
    assert!(s.next_packet(&mut q).await.starts_with("40{"));
    let mut ids = Vec::new();
    while ids.len() < total {
        let p = s.next_packet(&mut q).await;
        let args: Value = serde_json::from_str(&p[2..]).unwrap();
        assert_eq!(args[0], "new_notification");
        ids.push(args[1]["id"].as_u64().unwrap());
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in id order: {ids:?}");
}

#[tokio::test]
async fn shutdown_answers_a_held_get_with_a_close_packet() {
    let app = app_with(25_000, 20_000).await;
    let user = app.register("alice").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&user, &mut q).await;
    // (The metrics recorder is shared by every test in this process: only its
    // presence is checked.)
    let metrics = app.text("/metrics").await;
    assert!(
        metrics.contains("likewise_socketio_polling_sessions "),
        "{metrics}"
    );
    let held = tokio::spawn({
        let client = reqwest::Client::new();
        let url = s.url();
        async move { client.get(url).send().await.unwrap().text().await.ok() }
    });
    // Shutdown does not wait for the 25 s heartbeat: the held GET is answered
    // with a close packet.
    let stats = app.state.realtime.clone();
    app.eventually(WAIT, || {
        let held = stats.to_json()["polling"]["held_gets"] == 1;
        async move { held.then_some(()) }
    })
    .await;
    let stopping = tokio::spawn(app.stop());
    let answer = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(answer.as_deref(), Some("1"));
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn packets_are_kept_for_the_next_get_when_a_held_get_is_abandoned() {
    use tokio::io::AsyncWriteExt;
    let app = app_with(25_000, 20_000).await;
    let user = app.register("alice").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&user, &mut q).await;
    let realtime = app.state.realtime.clone();
    let held = |n: u64| {
        let stats = realtime.clone();
        move || {
            let reached = stats.to_json()["polling"]["held_gets"] == n;
            async move { reached.then_some(()) }
        }
    };
    // A GET on a raw connection, held, then the client goes away.
    let mut tcp = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "GET /socket.io/?EIO=4&transport=polling&sid={} HTTP/1.1\r\nHost: x\r\n\r\n",
        s.sid
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    app.eventually(WAIT, held(1)).await;
    drop(tcp);
    app.eventually(WAIT, held(0)).await;
    // What comes next waits for the next GET instead of going to the dead one.
    let (status, _) = app
        .post(
            "/api/admin/publish",
            ADMIN_TOKEN,
            json!({"room": format!("user:{}", user.id), "event": "kept", "data": {}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(s.next_packet(&mut q).await.starts_with("42[\"kept\""));
    assert_eq!(stats(&app).await["realtime"]["polling"]["sessions"], 1);
}

#[tokio::test]
async fn a_session_that_stops_polling_is_dropped_when_its_output_budget_overflows() {
    let app = spawn_app_with(|s| {
        s.limits.output_hard_limit_bytes = 64 * 1024;
        s.limits.output_soft_limit_bytes = 32 * 1024;
    })
    .await;
    let user = app.register("alice").await;
    let s = Polling::open(&app).await;
    let mut q = Vec::new();
    s.connect(&user, &mut q).await;
    // No GET: deliveries wait in the hub, charged to the budget, until it overflows.
    let text = "x".repeat(1000);
    for i in 0..100 {
        let (status, _) = app
            .post(
                "/api/admin/publish",
                ADMIN_TOKEN,
                json!({"room": format!("user:{}", user.id), "event": "big", "data": {"i": i, "text": text}}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let realtime = app.state.realtime.clone();
    app.eventually(WAIT, || {
        let gone = realtime.to_json()["polling"]["sessions"] == 0;
        async move { gone.then_some(()) }
    })
    .await;
    let (status, body) = s.get().await;
    assert_eq!(
        (status, engine_error(&body)["code"].clone()),
        (StatusCode::BAD_REQUEST, json!(1))
    );
    assert_eq!(stats(&app).await["connections"]["socket.io"], 0);
}
