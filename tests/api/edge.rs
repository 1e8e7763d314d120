//! `likewise edge` in front of a primary: the API works through it, bodies stream
//! both ways under the same limit, the primary sees each client's own address (and
//! believes `X-Forwarded-For` from its edges only), hop-by-hop headers stop at the
//! edge, and a primary that is down or silent gets a prompt 503, never a hang.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use likewise::edge::{Edge, EdgeSettings};
use likewise::http::extract::TrustedProxies;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::helpers::{assert_error, install_crypto, spawn_app_with, Api, TestApp};

/// A running edge; stops when dropped.
struct TestEdge {
    api: Api,
    shutdown: CancellationToken,
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_edge(settings: EdgeSettings) -> TestEdge {
    let edge = Edge::build(settings).await.expect("edge builds");
    let api = Api::new(edge.http_addr());
    let shutdown = CancellationToken::new();
    tokio::spawn(edge.run_until_stopped(shutdown.clone()));
    TestEdge { api, shutdown }
}

/// A primary that believes `X-Forwarded-For` from 127.0.0.1 (where the edge
/// connects from) only, throttling sign-ins after 3 failures per address.
async fn primary() -> TestApp {
    spawn_app_with(|s| {
        s.limits.trusted_proxies = TrustedProxies::parse(&["127.0.0.1/32"]).unwrap();
        s.accounts.login_failures_per_ip = 3;
    })
    .await
}

/// A client whose connections come from `ip` (any 127.x.y.z is loopback).
fn client_from(ip: &str) -> reqwest::Client {
    install_crypto();
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

async fn sign_in(client: &reqwest::Client, addr: SocketAddr, forged: Option<&str>) -> StatusCode {
    let mut req = client
        .post(format!("http://{addr}/api/sessions"))
        .json(&json!({"name": "alice", "password": "wrong-password"}));
    if let Some(xff) = forged {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.expect("sent").status()
}

#[tokio::test]
async fn register_sign_in_like_and_notifications_work_through_the_edge() {
    let primary = primary().await;
    let edge = spawn_edge(EdgeSettings::for_tests(primary.addr)).await;
    let api = &edge.api;

    let alice = api.register("alice").await;
    let bob = api.register("bob").await;
    let (status, body) = api
        .call(
            Method::POST,
            "/api/sessions",
            None,
            Some(json!({"name": "alice", "password": "password123"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["user"]["id"], alice.id);

    let post = api.create_post(&alice, "through the edge").await;
    let (status, body) = api
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert!(status.is_success(), "{status} {body}");
    let notes = api
        .eventually(Duration::from_secs(10), || async {
            let notes = api.all_notifications(&alice).await;
            notes
                .iter()
                .any(|n| n["actor_id"] == bob.id && n["post_id"] == post)
                .then_some(notes)
        })
        .await;
    // The same data as the primary's: the edge holds none of its own.
    assert_eq!(primary.all_notifications(&alice).await, notes);

    // Errors keep the API's shape, the pages come through, /healthz is the edge's.
    let (status, body) = api.get("/api/notifications", "not-a-token").await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert!(api.asset_prefix().await.starts_with("/assets/"));
    let (status, body) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!((status, &body["role"]), (StatusCode::OK, &json!("edge")));
    // Without the cluster's Redis and the admin token, an edge holds no connections.
    for path in ["/ws", "/socket.io/?EIO=4&transport=polling"] {
        let (status, body) = api.call(Method::GET, path, None, None).await;
        assert_error(
            status,
            &body,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
        );
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("forwards the API only"));
    }
    let (status, body) = api.call(Method::GET, "/nowhere", None, None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn the_primary_throttles_each_client_of_the_edge_under_its_own_address() {
    let primary = primary().await;
    let edge = spawn_edge(EdgeSettings::for_tests(primary.addr)).await;
    primary.register("alice").await;
    let (one, two) = (client_from("127.0.0.2"), client_from("127.0.0.3"));

    // Client one forges a new X-Forwarded-For each time: the edge appends the
    // real address, which is the one the primary counts.
    for i in 0..3 {
        let forged = format!("198.51.100.{i}");
        let status = sign_in(&one, edge.api.addr, Some(&forged)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    assert_eq!(
        sign_in(&one, edge.api.addr, Some("198.51.100.99")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Client two, through the same edge connection pool, is counted apart.
    assert_eq!(
        sign_in(&two, edge.api.addr, None).await,
        StatusCode::UNAUTHORIZED
    );

    // Straight to the primary from an address that is not a trusted proxy, the
    // header is ignored: forging a new address each time does not help.
    let direct = client_from("127.0.0.4");
    for i in 0..3 {
        let forged = format!("203.0.113.{i}");
        let status = sign_in(&direct, primary.addr, Some(&forged)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    assert_eq!(
        sign_in(&direct, primary.addr, Some("203.0.113.77")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Sends `chunks` as one chunked request body (no `Content-Length`) with a real
/// HTTP client; the status and JSON body of the answer.
async fn post_chunked(
    addr: SocketAddr,
    path: &str,
    token: &str,
    chunks: Vec<Bytes>,
) -> (StatusCode, Value) {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    type Chunks =
        StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;
    let client: Client<_, Chunks> = Client::builder(TokioExecutor::new()).build_http();
    let frames: Vec<Result<Frame<Bytes>, Infallible>> =
        chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    let req = hyper::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(StreamBody::new(futures::stream::iter(frames)))
        .unwrap();
    let resp = client.request(req).await.expect("answered");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (
        StatusCode::from_u16(status).unwrap(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    )
}

/// A post whose JSON is padded with whitespace to `size` bytes, in 16 KiB chunks.
fn padded_post(title: &str, size: usize) -> Vec<Bytes> {
    let head = json!({"title": title, "body": "padded"}).to_string();
    let mut text = String::with_capacity(size);
    text.push_str(&head[..head.len() - 1]);
    text.push_str(&" ".repeat(size.saturating_sub(head.len())));
    text.push('}');
    text.into_bytes()
        .chunks(16 * 1024)
        .map(Bytes::copy_from_slice)
        .collect()
}

#[tokio::test]
async fn large_bodies_stream_through_under_the_same_limit() {
    let primary = primary().await;
    let edge = spawn_edge(EdgeSettings::for_tests(primary.addr)).await;
    let alice = edge.api.register("alice").await;
    let limit = primary.state.settings.limits.max_body_bytes;

    // Just under the limit, chunked: it reaches the primary whole.
    let (status, body) = post_chunked(
        edge.api.addr,
        "/api/posts",
        &alice.token,
        padded_post("big", limit - 64),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, post) = edge
        .api
        .get(&format!("/api/posts/{}", body["id"]), &alice.token)
        .await;
    assert_eq!((status, &post["title"]), (StatusCode::OK, &json!("big")));

    // Over it, chunked (counted while streaming) or declared (refused at once).
    let (status, body) = post_chunked(
        edge.api.addr,
        "/api/posts",
        &alice.token,
        padded_post("huge", 2 * limit),
    )
    .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let resp = edge
        .api
        .client
        .post(edge.api.url("/api/posts"))
        .bearer_auth(&alice.token)
        .header("content-type", "application/json")
        .body(padded_post("huge", 2 * limit).concat())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    // Large answers stream back too (the OpenAPI document is the largest one).
    let direct = primary.text("/api/openapi.json").await;
    assert_eq!(edge.api.text("/api/openapi.json").await, direct);
    let (_, mine) = edge.api.get("/api/posts?limit=10", &alice.token).await;
    assert_eq!(mine["posts"].as_array().map(Vec::len), Some(1), "{mine}");
}

#[tokio::test]
async fn a_stopped_primary_gets_a_prompt_503_and_a_silent_one_a_503_at_the_deadline() {
    let primary = primary().await;
    let addr = primary.addr;
    let edge = spawn_edge(EdgeSettings::for_tests(addr)).await;
    let (status, _) = edge
        .api
        .call(Method::GET, "/api/openapi.json", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "the pool holds a connection now");
    primary.stop().await;
    let started = Instant::now();
    let (status, body) = edge.api.call(Method::GET, "/api/posts", None, None).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // A primary that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            open.push(tcp);
        }
    });
    let mut settings = EdgeSettings::for_tests(silent_addr);
    settings.answer_timeout_ms = 300;
    let edge = spawn_edge(settings).await;
    let started = Instant::now();
    let (status, body) = edge.api.call(Method::GET, "/api/posts", None, None).await;
    let took = started.elapsed();
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300 ms"),
        "{body}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
    held.abort();
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_edge_both_ways() {
    // A primary that records the request head it receives and answers with
    // hop-by-hop headers of its own.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut tcp, _) = upstream.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "the head ended early");
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = head_tx.send(String::from_utf8_lossy(&seen).to_lowercase());
        tcp.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
              connection: x-up-hop\r\nx-up-hop: 1\r\nkeep-alive: timeout=5\r\n\
              proxy-authenticate: Basic\r\nx-kept: yes\r\n\r\n{}",
        )
        .await
        .unwrap();
    });
    let edge = spawn_edge(EdgeSettings::for_tests(upstream_addr)).await;
    let resp = edge
        .api
        .client
        .get(edge.api.url("/api/posts?x=1"))
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "s")
        .header("te", "trailers")
        .header("proxy-authorization", "Basic eDp5")
        .header("x-forwarded-for", "198.51.100.1")
        .header("x-kept", "client")
        .send()
        .await
        .expect("answered");
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["x-kept"], "yes");
    for gone in ["x-up-hop", "proxy-authenticate", "keep-alive"] {
        assert!(h.get(gone).is_none(), "{gone} came back: {h:?}");
    }
    let head = head_rx.await.unwrap();
    assert!(
        head.starts_with("get /api/posts?x=1 http/1.1\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nhost: {upstream_addr}\r\n")),
        "{head}"
    );
    assert!(
        head.contains("\r\nx-forwarded-for: 198.51.100.1, 127.0.0.1\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nx-kept: client\r\n"), "{head}");
    for gone in ["x-secret", "\r\nte:", "proxy-authorization"] {
        assert!(!head.contains(gone), "{gone} was forwarded: {head}");
    }
}

#[tokio::test]
async fn the_edge_binary_starts_logs_one_listening_line_and_answers_503_without_a_primary() {
    use std::io::BufRead;
    install_crypto();
    // Nothing listens on the primary's port: the edge starts anyway.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_likewise"))
        .args(["edge", "--http", "127.0.0.1:0", "--primary"])
        .arg(format!("http://{dead_addr}"))
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the likewise binary starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let reader = std::thread::spawn(move || {
        let mut tx = Some(tx);
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening http=").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                if let (Some(tx), Ok(addr)) = (tx.take(), addr.parse::<SocketAddr>()) {
                    let _ = tx.send(addr);
                }
            }
            lines.push(line);
        }
        lines
    });
    let addr = tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("listening within 20 s")
        .expect("a listening line");
    let api = Api::new(addr);
    let (status, body) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api.call(Method::GET, "/api/posts", None, None).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    // SIGTERM is a graceful stop.
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("no exit within 20 s of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let lines = reader.join().unwrap();
    assert!(exit.success(), "{exit:?} {lines:#?}");
    let listening: Vec<_> = lines.iter().filter(|l| l.contains("listening")).collect();
    assert_eq!(listening.len(), 1, "{lines:#?}");
    assert!(
        listening[0].contains(&format!("primary=http://{dead_addr}")),
        "{lines:#?}"
    );
}
