//! The RESP listener through real Redis clients (the `redis` crate) and raw
//! sockets: pub/sub in RESP2 and RESP3, introspection, pipelining, AUTH, error
//! replies that keep the connection, framing errors that close it, slow
//! subscribers, and the bridge between app events and RESP subscribers.

use std::time::Duration;

use futures::StreamExt;
use redis::{AsyncCommands, AsyncConnectionConfig, PushKind, Value as RedisValue};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with_resp, TestApp, ADMIN_TOKEN};

const WAIT: Duration = Duration::from_secs(10);

async fn client(app: &TestApp) -> redis::aio::MultiplexedConnection {
    redis::Client::open(app.resp_url(""))
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

async fn pubsub(app: &TestApp) -> redis::aio::PubSub {
    redis::Client::open(app.resp_url(""))
        .expect("valid url")
        .get_async_pubsub()
        .await
        .expect("connects")
}

async fn raw(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.resp_addr.expect("RESP on"))
        .await
        .expect("connects")
}

/// Reads from `stream` until `expected` bytes arrived; they must be exactly those.
async fn read_exactly(stream: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut got))
        .await
        .expect("answered in time")
        .expect("read");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected)
    );
}

/// Reads until the peer closes; returns everything read.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut all))
        .await
        .expect("closed in time")
        .expect("read");
    all
}

#[tokio::test]
async fn a_subscriber_receives_what_another_client_publishes() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut sub = pubsub(&app).await;
    sub.subscribe("news").await.unwrap();
    let mut con = client(&app).await;
    let receivers: i64 = con.publish("news", "hello").await.unwrap();
    assert_eq!(receivers, 1);
    let nobody: i64 = con.publish("elsewhere", "x").await.unwrap();
    assert_eq!(nobody, 0);
    let mut messages = sub.on_message();
    let msg = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_channel_name(), "news");
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}

#[tokio::test]
async fn a_pattern_subscriber_receives_matching_channels_with_the_pattern() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut sub = pubsub(&app).await;
    sub.psubscribe("user:*").await.unwrap();
    let mut con = client(&app).await;
    assert_eq!(con.publish::<_, _, i64>("post:1", "no").await.unwrap(), 0);
    assert_eq!(con.publish::<_, _, i64>("user:9", "yes").await.unwrap(), 1);
    let mut messages = sub.on_message();
    let msg = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.get_pattern::<String>().unwrap(), "user:*");
    assert_eq!(msg.get_channel_name(), "user:9");
    assert_eq!(msg.get_payload::<String>().unwrap(), "yes");
}

#[tokio::test]
async fn pubsub_introspection_counts_subscribers_and_patterns() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut a = pubsub(&app).await;
    let mut b = pubsub(&app).await;
    a.subscribe("room:1").await.unwrap();
    b.subscribe("room:1").await.unwrap();
    b.subscribe("room:2").await.unwrap();
    b.psubscribe("room:*").await.unwrap();
    let mut con = client(&app).await;
    let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("room:1")
        .arg("room:2")
        .arg("room:3")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(
        numsub,
        vec![
            ("room:1".to_owned(), 2),
            ("room:2".to_owned(), 1),
            ("room:3".to_owned(), 0)
        ]
    );
    let numpat: i64 = redis::cmd("PUBSUB")
        .arg("NUMPAT")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(numpat, 1);
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("room:*")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(channels, vec!["room:1", "room:2"]);
    // Two room members plus one pattern.
    assert_eq!(con.publish::<_, _, i64>("room:1", "x").await.unwrap(), 3);
    b.unsubscribe("room:2").await.unwrap();
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(channels, vec!["room:1"]);
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut sub = pubsub(&app).await;
    sub.subscribe("p").await.unwrap();
    let mut con = client(&app).await;
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.cmd("PUBLISH").arg("p").arg(i);
    }
    pipe.cmd("ECHO").arg("done");
    let replies: Vec<RedisValue> = pipe.query_async(&mut con).await.unwrap();
    assert_eq!(replies.len(), 501);
    assert!(replies[..500].iter().all(|r| *r == RedisValue::Int(1)));
    assert_eq!(replies[500], RedisValue::BulkString(b"done".to_vec()));
    let mut messages = sub.on_message();
    for i in 0..500 {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.get_payload::<i64>().unwrap(), i, "in publication order");
    }

    // The same with one raw write holding several commands, inline and framed.
    let mut s = raw(&app).await;
    s.write_all(b"PING\r\nECHO \"a b\"\r\n*3\r\n$7\r\nPUBLISH\r\n$1\r\nq\r\n$1\r\nm\r\nPING x\r\n")
        .await
        .unwrap();
    read_exactly(&mut s, b"+PONG\r\n$3\r\na b\r\n:0\r\n$1\r\nx\r\n").await;
}

#[tokio::test]
async fn resp3_clients_receive_push_frames() {
    let app = spawn_app_with_resp(|_| {}).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut con = redis::Client::open(app.resp_url("?protocol=resp3"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new().set_push_sender(tx),
        )
        .await
        .expect("HELLO 3 accepted");
    con.subscribe("news").await.unwrap();
    // RESP3 allows ordinary commands while subscribed.
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    let mut other = client(&app).await;
    assert_eq!(
        other.publish::<_, _, i64>("news", "fresh").await.unwrap(),
        1
    );
    loop {
        let push = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        match push.kind {
            PushKind::Subscribe => continue,
            PushKind::Message => {
                assert_eq!(
                    push.data,
                    vec![
                        RedisValue::BulkString(b"news".to_vec()),
                        RedisValue::BulkString(b"fresh".to_vec())
                    ]
                );
                break;
            }
            other => panic!("unexpected push {other:?}"),
        }
    }
    let hello: std::collections::HashMap<String, RedisValue> = redis::cmd("HELLO")
        .arg(3)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(hello["proto"], RedisValue::Int(3));
    assert_eq!(hello["version"], RedisValue::BulkString(b"7.2.0".to_vec()));
}

#[tokio::test]
async fn a_password_is_required_before_anything_else() {
    let app = spawn_app_with_resp(|s| s.resp_password = Some("s3cret".into())).await;
    let addr = app.resp_addr.unwrap();

    let mut anonymous = client(&app).await;
    let err = redis::cmd("PING")
        .query_async::<String>(&mut anonymous)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    let err = anonymous.publish::<_, _, i64>("c", "m").await.unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");

    let wrong = redis::Client::open(format!("redis://:nope@{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");

    for url in [
        format!("redis://:s3cret@{addr}/"),
        format!("redis://default:s3cret@{addr}/?protocol=resp3"),
    ] {
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        assert_eq!(pong, "PONG");
    }

    // Before AUTH, frames are small: a big one is a protocol error.
    let mut s = raw(&app).await;
    s.write_all(b"*1\r\n$100000\r\n").await.unwrap();
    let answer = read_to_close(&mut s).await;
    assert!(
        answer.starts_with(b"-ERR Protocol error: invalid bulk length"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn wrong_arity_and_unknown_commands_keep_the_connection_usable() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut s = raw(&app).await;
    s.write_all(b"*1\r\n$4\r\nECHO\r\n").await.unwrap();
    read_exactly(
        &mut s,
        b"-ERR wrong number of arguments for 'echo' command\r\n",
    )
    .await;
    s.write_all(b"SET k v\r\n").await.unwrap();
    read_exactly(
        &mut s,
        b"-ERR unknown command 'SET', with args beginning with: 'k' 'v' \r\n",
    )
    .await;
    s.write_all(b"PING\r\n").await.unwrap();
    read_exactly(&mut s, b"+PONG\r\n").await;

    let mut con = client(&app).await;
    let err = redis::cmd("GET")
        .arg("k")
        .query_async::<RedisValue>(&mut con)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown command 'GET'"), "{err}");
    let echoed: String = redis::cmd("ECHO")
        .arg("still here")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(echoed, "still here");
}

#[tokio::test]
async fn a_framing_error_answers_then_closes_only_that_connection() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut other = client(&app).await;
    let mut s = raw(&app).await;
    s.write_all(b"*1\r\n$3\r\nabcd\r\n").await.unwrap();
    let answer = read_to_close(&mut s).await;
    assert_eq!(
        String::from_utf8_lossy(&answer),
        "-ERR Protocol error: expected CRLF after bulk data\r\n"
    );
    let pong: String = redis::cmd("PING").query_async(&mut other).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn a_like_over_http_reaches_a_resp_subscriber_of_the_author() {
    let app = spawn_app_with_resp(|_| {}).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Hello").await;
    let mut sub = pubsub(&app).await;
    sub.subscribe(format!("user:{}", alice.id)).await.unwrap();
    let (status, _) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert!(status.is_success());
    let mut messages = sub.on_message();
    let msg = tokio::time::timeout(WAIT, messages.next())
        .await
        .unwrap()
        .unwrap();
    let envelope: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
    assert_eq!(envelope["event"], "new_notification");
    assert_eq!(envelope["data"]["kind"], "like_post");
    assert_eq!(envelope["data"]["receiver_id"], alice.id);
    assert_eq!(envelope["data"]["actor_id"], bob.id);
}

#[tokio::test]
async fn a_flask_socketio_emit_reaches_the_named_users_room() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut user_room = pubsub(&app).await;
    user_room.subscribe("user:42").await.unwrap();
    let mut bridge_channel = pubsub(&app).await;
    bridge_channel.subscribe("flask-socketio").await.unwrap();
    let mut con = client(&app).await;
    let message = r#"{"method":"emit","event":"new_notification","data":[{"id":7}],"binary":false,"namespace":"/","room":"42","skip_sid":null,"callback":null,"host_id":"h"}"#;
    // The channel's own subscriber plus the member of user:42.
    assert_eq!(
        con.publish::<_, _, i64>("flask-socketio", message)
            .await
            .unwrap(),
        2
    );
    let msg = tokio::time::timeout(WAIT, user_room.on_message().next())
        .await
        .unwrap()
        .unwrap();
    let envelope: Value = serde_json::from_slice(msg.get_payload_bytes()).unwrap();
    assert_eq!(
        envelope,
        serde_json::json!({"event": "new_notification", "data": {"id": 7}})
    );
    let raw_msg = tokio::time::timeout(WAIT, bridge_channel.on_message().next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(raw_msg.get_payload_bytes(), message.as_bytes());
    // A pickle is refused without harm.
    let pickled = b"\x80\x04\x95\x10\x00\x00\x00".to_vec();
    assert_eq!(
        con.publish::<_, _, i64>("flask-socketio", pickled)
            .await
            .unwrap(),
        1
    );
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
}

#[tokio::test]
async fn a_subscriber_that_never_reads_is_dropped_without_slowing_others() {
    let app = spawn_app_with_resp(|s| s.limits.outbound_queue = 16).await;
    let mut slow = raw(&app).await;
    slow.write_all(b"SUBSCRIBE firehose\r\n").await.unwrap();
    read_exactly(
        &mut slow,
        b"*3\r\n$9\r\nsubscribe\r\n$8\r\nfirehose\r\n:1\r\n",
    )
    .await;
    let mut fast = pubsub(&app).await;
    fast.subscribe("firehose").await.unwrap();
    let mut con = client(&app).await;
    let payload = vec![b'x'; 256 * 1024];
    let mut dropped = false;
    for _ in 0..4000 {
        let n: i64 = con.publish("firehose", payload.as_slice()).await.unwrap();
        if n < 2 {
            dropped = true;
            break;
        }
    }
    assert!(dropped, "the slow subscriber was dropped");
    let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg("firehose")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(numsub, vec![("firehose".to_owned(), 1)]);
    // The dropped client's socket ends after whatever was already written.
    read_to_close(&mut slow).await;
    // The other subscriber still gets new messages.
    assert_eq!(
        con.publish::<_, _, i64>("firehose", "last").await.unwrap(),
        1
    );
    let mut messages = fast.on_message();
    loop {
        let msg = tokio::time::timeout(WAIT, messages.next())
            .await
            .unwrap()
            .unwrap();
        if msg.get_payload_bytes() == b"last" {
            break;
        }
    }
}

#[tokio::test]
async fn resp_connections_are_counted_and_closed_at_shutdown() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut a = raw(&app).await;
    a.write_all(b"SUBSCRIBE x\r\n").await.unwrap();
    read_exactly(&mut a, b"*3\r\n$9\r\nsubscribe\r\n$1\r\nx\r\n:1\r\n").await;
    let mut b = raw(&app).await;
    b.write_all(b"PING\r\n").await.unwrap();
    read_exactly(&mut b, b"+PONG\r\n").await;
    let (_, stats) = app.get("/api/admin/stats", ADMIN_TOKEN).await;
    assert_eq!(stats["connections"]["resp"], 2, "{stats}");
    drop(b);
    app.stop().await;
    assert!(read_to_close(&mut a).await.is_empty());
}

/// The lines of a `CLIENT LIST` reply.
async fn client_list(con: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let text: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(con)
        .await
        .unwrap();
    text.lines().map(str::to_owned).collect()
}

/// `CLIENT ID` over a raw socket.
async fn raw_client_id(stream: &mut TcpStream) -> u64 {
    stream.write_all(b"CLIENT ID\r\n").await.unwrap();
    let mut line = Vec::new();
    while !line.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        tokio::time::timeout(WAIT, stream.read_exact(&mut byte))
            .await
            .expect("answered in time")
            .expect("read");
        line.push(byte[0]);
    }
    let text = String::from_utf8(line).unwrap();
    text.trim_start_matches(':')
        .trim_end()
        .parse()
        .expect("an id")
}

#[tokio::test]
async fn client_list_shows_every_connection_and_client_kill_closes_another() {
    let app = spawn_app_with_resp(|_| {}).await;
    let resp_addr = app.resp_addr.unwrap();
    let mut con = client(&app).await;
    let mut victim = raw(&app).await;
    let victim_id = raw_client_id(&mut victim).await;
    let victim_addr = victim.local_addr().unwrap();
    victim
        .write_all(b"CLIENT SETNAME victim\r\n")
        .await
        .unwrap();
    read_exactly(&mut victim, b"+OK\r\n").await;

    let lines = client_list(&mut con).await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    let line = lines
        .iter()
        .find(|l| l.starts_with(&format!("id={victim_id} ")))
        .expect("the other connection is listed");
    assert!(
        line.starts_with(&format!(
            "id={victim_id} addr={victim_addr} laddr={resp_addr} fd="
        )),
        "{line}"
    );
    assert!(line.contains(" name=victim "), "{line}");
    assert!(line.contains(" cmd=client|setname "), "{line}");
    assert!(lines.iter().any(|l| l.contains(" cmd=client|list ")));

    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(victim_id)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    assert!(read_to_close(&mut victim).await.is_empty());
    assert_eq!(client_list(&mut con).await.len(), 1);

    // The old form, by address, and a subscriber waiting for messages.
    let mut sub = pubsub(&app).await;
    sub.subscribe("news").await.unwrap();
    let mut other = raw(&app).await;
    let other_id = raw_client_id(&mut other).await;
    let other_addr = other.local_addr().unwrap();
    let ok: String = redis::cmd("CLIENT")
        .arg("KILL")
        .arg(other_addr.to_string())
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(ok, "OK");
    assert!(read_to_close(&mut other).await.is_empty());
    let again = redis::cmd("CLIENT")
        .arg("KILL")
        .arg(other_addr.to_string())
        .query_async::<String>(&mut con)
        .await
        .unwrap_err();
    assert!(again.to_string().contains("No such client"), "{again}");
    let pubsub_only: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(pubsub_only.lines().count(), 1, "{pubsub_only}");
    assert!(!pubsub_only.contains(&format!("id={other_id} ")));
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(killed, 1);
    let mut messages = sub.on_message();
    let end = tokio::time::timeout(WAIT, messages.next())
        .await
        .expect("the subscription ends in time");
    assert!(end.is_none());
    // The caller is spared by default and still works.
    assert_eq!(client_list(&mut con).await.len(), 1);
}

#[tokio::test]
async fn client_reply_off_suppresses_replies_until_on() {
    let app = spawn_app_with_resp(|_| {}).await;
    let mut c = raw(&app).await;
    c.write_all(
        b"CLIENT REPLY OFF\r\nPING\r\nECHO hidden\r\nNOPE\r\nCLIENT REPLY ON\r\nECHO shown\r\n\
          CLIENT REPLY SKIP\r\nECHO skipped\r\nECHO next\r\n",
    )
    .await
    .unwrap();
    read_exactly(&mut c, b"+OK\r\n$5\r\nshown\r\n$4\r\nnext\r\n").await;
    // Nothing else was sent in between.
    c.write_all(b"PING\r\n").await.unwrap();
    read_exactly(&mut c, b"+PONG\r\n").await;
}

#[tokio::test]
async fn harness_setup_commands_are_answered_like_redis() {
    let app = spawn_app_with_resp(|s| s.limits.resp_max_clients = 321).await;
    let port = app.resp_addr.unwrap().port();
    for url in ["", "?protocol=resp3"] {
        let mut con = redis::Client::open(app.resp_url(url))
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        for cmd in [
            redis::cmd("FLUSHALL"),
            redis::cmd("FLUSHDB").arg("ASYNC").to_owned(),
            redis::cmd("FUNCTION").arg("FLUSH").to_owned(),
        ] {
            let ok: String = cmd.query_async(&mut con).await.unwrap();
            assert_eq!(ok, "OK");
        }
        let all: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("*")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(all["maxclients"], "321", "{all:?}");
        assert_eq!(all["port"], port.to_string());
        assert_eq!(all["databases"], "1");
        // A flat array in RESP2, a map in RESP3, as Redis answers.
        let one: RedisValue = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxclients")
            .query_async(&mut con)
            .await
            .unwrap();
        let name = RedisValue::BulkString(b"maxclients".to_vec());
        let value = RedisValue::BulkString(b"321".to_vec());
        if url.is_empty() {
            assert_eq!(one, RedisValue::Array(vec![name, value]));
        } else {
            assert_eq!(one, RedisValue::Map(vec![(name, value)]));
        }
    }
}

#[tokio::test]
async fn resp_off_binds_nothing() {
    let app = crate::helpers::spawn_app().await;
    assert!(app.resp_addr.is_none());
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A `/ws` client of `token`, past its `ready` event (so it is in its user room).
async fn websocket(app: &TestApp, token: &str) -> Ws {
    let url = format!("ws://{}/ws?token={token}", app.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket connects");
    assert_eq!(ws_event(&mut ws).await["event"], "ready");
    ws
}

/// The next JSON text message of a websocket.
async fn ws_event(ws: &mut Ws) -> Value {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an event in time")
            .expect("open")
            .expect("a message");
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).expect("JSON");
        }
    }
}

#[tokio::test]
async fn a_resp_publish_reaches_websocket_clients_of_the_room() {
    let app = spawn_app_with_resp(|_| {}).await;
    let alice = app.register("alice").await;
    let mut ws = websocket(&app, &alice.token).await;
    let mut con = client(&app).await;
    let room = format!("user:{}", alice.id);
    let n: i64 = con
        .publish(&room, r#"{"event":"x","data":{"a":1}}"#)
        .await
        .unwrap();
    assert_eq!(n, 1, "the websocket client counts as a receiver");
    assert_eq!(
        ws_event(&mut ws).await,
        serde_json::json!({"event": "x", "data": {"a": 1}})
    );
    let _: i64 = con.publish(&room, "plain text").await.unwrap();
    assert_eq!(
        ws_event(&mut ws).await,
        serde_json::json!({"event": "message", "data": "plain text"})
    );
    // A Flask-SocketIO emit to the user's id arrives as that event.
    let emit = serde_json::json!({
        "method": "emit", "event": "new_notification", "data": [{"text": "hi"}],
        "binary": false, "namespace": "/", "room": alice.id.to_string(),
        "skip_sid": null, "callback": null, "host_id": "worker"
    });
    let n: i64 = con
        .publish("flask-socketio", emit.to_string())
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        ws_event(&mut ws).await,
        serde_json::json!({"event": "new_notification", "data": {"text": "hi"}})
    );
}
