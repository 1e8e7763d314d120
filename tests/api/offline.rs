//! The offline fallback: `notification.undelivered` reaches a real webhook receiver
//! on loopback once per notification its receiver did not get in real time, and
//! never for one they got or read in time — across restarts too.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use likewise::config::{Settings, WebhookSettings};
use likewise::hub::{Publication, Subscription, Transport};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::crash::start_with;
use crate::helpers::{spawn_app_in, spawn_app_with, Api, TestApp, TestUser, ADMIN_TOKEN};
use crate::realtime::{connect_user, next_event};

const SECRET: &str = "offline-secret";

/// One request the receiver got.
#[derive(Debug)]
struct Received {
    event: String,
    body: Value,
    signed: bool,
    at: Instant,
}

/// A webhook receiver on loopback: every POST, with whether its signature checks.
async fn receiver() -> (String, UnboundedReceiver<Received>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let signature = headers
                    .get("x-likewise-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let _ = tx.send(Received {
                    event: headers["x-likewise-event"].to_str().unwrap().to_owned(),
                    signed: signature == likewise::tasks::signature(SECRET, &body),
                    body: serde_json::from_slice(&body).unwrap(),
                    at: Instant::now(),
                });
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

/// Settings with one hook that wants only `notification.undelivered`.
fn offline_settings(s: &mut Settings, url: &str, offline_after_s: u64) {
    s.webhooks = vec![WebhookSettings {
        url: url.to_owned(),
        events: vec!["notification.undelivered".into()],
        secret: Some(SECRET.into()),
        max_attempts: None,
    }];
    s.offline_after_s = offline_after_s;
    // These tests read the sweeps' results and the deliveries as the admin, which
    // needs the tasks of no user kept after their success.
    s.queue.keep_unowned_results = true;
}

/// An author with a post, and a fan.
async fn author_post_and_fan(app: &Api) -> (TestUser, u64, TestUser) {
    let author = app.register("author").await;
    let post = app.create_post(&author, "hello").await;
    let fan = app.register("fan").await;
    (author, post, fan)
}

/// The fan likes the post; returns the author's notification id and when.
async fn like(app: &Api, fan: &TestUser, post: u64) -> (u64, Instant) {
    let at = Instant::now();
    let (status, body) = app
        .put(&format!("/api/posts/{post}/like"), &fan.token)
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["notification_id"].as_u64().expect("a notification"),
        at,
    )
}

/// Waits until a sweep has decided every notification up to `id`: after it, no
/// event for them can come any more.
async fn swept_past(app: &Api, id: u64) {
    app.eventually(Duration::from_secs(20), || async move {
        let (_, list) = app
            .get(
                "/api/admin/tasks?name=sweep_undelivered&state=success&limit=100",
                ADMIN_TOKEN,
            )
            .await;
        list["tasks"]
            .as_array()?
            .iter()
            .any(|t| t["result"]["cursor"].as_u64() >= Some(id))
            .then_some(())
    })
    .await;
}

async fn next_received(rx: &mut UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("a webhook request within 20 s")
        .expect("receiver alive")
}

/// Nothing more reached the receiver once every delivery task has finished.
async fn nothing_more(app: &Api, rx: &mut UnboundedReceiver<Received>) {
    app.settled().await;
    if let Ok(extra) = rx.try_recv() {
        panic!("unexpected webhook request: {extra:?}");
    }
}

fn assert_undelivered(r: &Received, notification: u64, author: &TestUser) {
    assert_eq!(r.event, "notification.undelivered");
    assert_eq!(r.body["event"], "notification.undelivered");
    assert_eq!(r.body["data"]["id"], notification);
    assert_eq!(r.body["data"]["receiver_id"], author.id);
    assert_eq!(r.body["data"]["read"], false);
    assert!(r.signed, "the signature checks");
}

/// A subscriber in `user:{id}` whose one-message queue is already full, so the
/// next push to that user reaches nobody: the receiver looks connected when a
/// notification is stored, and the push is then refused (and the subscriber
/// dropped as too slow) — what a connection closing at that moment does.
fn connection_that_misses_the_push(app: &TestApp, user: u64) -> Subscription {
    let sub = app.state.hub.subscribe(Transport::Ws);
    let room = format!("user:{user}");
    assert!(sub.join(&room));
    let filler = Publication::event(&room, "filler", json!({}));
    assert_eq!(app.state.hub.publish(filler), 1);
    sub
}

#[tokio::test]
async fn a_notification_for_an_offline_user_sends_one_undelivered_event_at_once() {
    let (url, mut rx) = receiver().await;
    // A deadline far away: the event must not wait for it.
    let app = spawn_app_with(|s| offline_settings(s, &url, 3600)).await;
    let (author, post, fan) = author_post_and_fan(&app).await;
    let (id, _) = like(&app, &fan, post).await;
    assert_undelivered(&next_received(&mut rx).await, id, &author);
    nothing_more(&app, &mut rx).await;
    // The actor of the like may not follow that delivery: it would tell them the
    // author is offline.
    let (_, tasks) = app
        .get("/api/admin/tasks?name=deliver_webhook", ADMIN_TOKEN)
        .await;
    let task = tasks["tasks"][0]["id"].as_u64().unwrap();
    let (status, _) = app.get(&format!("/api/tasks/{task}"), &fan.token).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_sweep_never_sends_a_second_event_for_an_offline_user() {
    let (url, mut rx) = receiver().await;
    let app = spawn_app_with(|s| offline_settings(s, &url, 1)).await;
    let (author, post, fan) = author_post_and_fan(&app).await;
    let (id, _) = like(&app, &fan, post).await;
    assert_undelivered(&next_received(&mut rx).await, id, &author);
    swept_past(&app, id).await;
    nothing_more(&app, &mut rx).await;
}

#[tokio::test]
async fn a_connected_user_who_gets_the_push_gets_no_event() {
    let (url, mut rx) = receiver().await;
    let app = spawn_app_with(|s| offline_settings(s, &url, 1)).await;
    let (author, post, fan) = author_post_and_fan(&app).await;
    let mut ws = connect_user(&app, &author).await;
    let (id, _) = like(&app, &fan, post).await;
    let pushed = next_event(&mut ws).await;
    assert_eq!(pushed["event"], "new_notification");
    assert_eq!(pushed["data"]["id"], id);
    // Unread, and past its deadline: still nothing, since it was delivered.
    swept_past(&app, id).await;
    nothing_more(&app, &mut rx).await;
    drop(ws);
}

#[tokio::test]
async fn a_push_that_reached_nobody_sends_one_event_once_unread_past_the_deadline() {
    let (url, mut rx) = receiver().await;
    let app = spawn_app_with(|s| {
        offline_settings(s, &url, 1);
        s.limits.outbound_queue = 1;
    })
    .await;
    let (author, post, fan) = author_post_and_fan(&app).await;
    let missing = connection_that_misses_the_push(&app, author.id);
    let (id, liked_at) = like(&app, &fan, post).await;
    let r = next_received(&mut rx).await;
    assert_undelivered(&r, id, &author);
    assert!(
        r.at.duration_since(liked_at) >= Duration::from_secs(1),
        "sent after offline_after_s, not at once: {:?}",
        r.at.duration_since(liked_at)
    );
    swept_past(&app, id).await;
    nothing_more(&app, &mut rx).await;
    drop(missing);
}

#[tokio::test]
async fn a_notification_read_before_the_deadline_sends_nothing() {
    let (url, mut rx) = receiver().await;
    let app = spawn_app_with(|s| {
        offline_settings(s, &url, 2);
        s.limits.outbound_queue = 1;
    })
    .await;
    let (author, post, fan) = author_post_and_fan(&app).await;
    let missing = connection_that_misses_the_push(&app, author.id);
    let (id, _) = like(&app, &fan, post).await;
    let (status, body) = app
        .post(
            "/api/notifications/read",
            &author.token,
            json!({"ids": [id]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    swept_past(&app, id).await;
    nothing_more(&app, &mut rx).await;
    drop(missing);
}

#[tokio::test]
async fn a_restart_before_the_deadline_still_sends_exactly_one_event() {
    let (url, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = |s: &mut Settings| {
        offline_settings(s, &url, 2);
        s.limits.outbound_queue = 1;
    };
    let app = spawn_app_in(dir.path(), settings).await;
    let (author, post, fan) = author_post_and_fan(&app).await;
    let missing = connection_that_misses_the_push(&app, author.id);
    let (id, _) = like(&app, &fan, post).await;
    // Pushed to nobody; the server stops before the deadline.
    drop(missing);
    app.stop().await;
    let app = spawn_app_in(dir.path(), settings).await;
    assert_undelivered(&next_received(&mut rx).await, id, &author);
    swept_past(&app, id).await;
    nothing_more(&app, &mut rx).await;
    app.stop().await;
    // And once more: a restart after it was sent sends nothing.
    let app = spawn_app_in(dir.path(), settings).await;
    swept_past(&app, id).await;
    nothing_more(&app, &mut rx).await;
}

#[tokio::test]
async fn a_push_delivered_before_a_restart_sends_nothing_after_it() {
    let (url, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let settings = |s: &mut Settings| offline_settings(s, &url, 2);
    let app = spawn_app_in(dir.path(), settings).await;
    let (author, post, fan) = author_post_and_fan(&app).await;
    let mut ws = connect_user(&app, &author).await;
    let (id, _) = like(&app, &fan, post).await;
    assert_eq!(next_event(&mut ws).await["data"]["id"], id);
    drop(ws);
    // Stopped before the deadline: the restarted server knows it was delivered.
    app.stop().await;
    let app = spawn_app_in(dir.path(), settings).await;
    swept_past(&app, id).await;
    nothing_more(&app, &mut rx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_an_unread_notification_whose_delivery_is_unknown_gets_one_event() {
    let (url, mut rx) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config_dir = tempfile::tempdir().unwrap();
    let config_path = config_dir.path().join("likewise.toml");
    let write_config = |offline_after_s: u64| {
        let text = format!(
            "offline_after_s = {offline_after_s}\n[queue]\nkeep_unowned_results = true\n\
             [[webhooks]]\nurl = \"{url}\"\n\
             events = [\"notification.undelivered\"]\nsecret = \"{SECRET}\"\n"
        );
        std::fs::write(&config_path, text).unwrap();
    };
    let config = config_path.to_str().unwrap().to_owned();
    // A long deadline first: its sweep runs at start, then only every 10 s, so the
    // process dies before any sweep has decided the notification.
    write_config(3600);
    let server = start_with(dir.path(), &["--config", &config]).await;
    let api = Api::new(server.addr);
    let (author, post, fan) = author_post_and_fan(&api).await;
    let ws_url = format!("ws://{}/ws?token={}", server.addr, author.token);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    assert_eq!(next_event(&mut ws).await["event"], "ready");
    let (id, _) = like(&api, &fan, post).await;
    assert_eq!(next_event(&mut ws).await["data"]["id"], id, "delivered");
    server.kill();
    // Whether it was delivered died with the process: unread after the deadline, it
    // gets the event — once.
    write_config(1);
    let server = start_with(dir.path(), &["--config", &config]).await;
    let api = Api::new(server.addr);
    assert_undelivered(&next_received(&mut rx).await, id, &author);
    swept_past(&api, id).await;
    nothing_more(&api, &mut rx).await;
    server.kill();
}
