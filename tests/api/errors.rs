//! Every kind of refusal answers with the right status and the error shape
//! `{"error":{"code","message"}}`, and changes nothing.

use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, read_to_close, spawn_app, spawn_app_with, TestApp};

async fn raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path)).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = content_type {
        req = req.header(CONTENT_TYPE, ct);
    }
    let resp = req.send().await.expect("request sent");
    let status = resp.status();
    let text = resp.text().await.expect("body read");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn post_count(app: &TestApp, token: &str) -> usize {
    let (_, page) = app.get("/api/posts?limit=100", token).await;
    page["posts"].as_array().unwrap().len()
}

#[tokio::test]
async fn malformed_json_is_a_400_in_the_error_shape() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for body in [
        "{\"title\": \"x\", ",
        "not json",
        "[]",
        "{\"title\": 1, \"body\": \"x\"}",
        "{\"body\": \"no title\"}",
    ] {
        let (status, answer) = raw(
            &app,
            Method::POST,
            "/api/posts",
            Some(&alice.token),
            Some("application/json"),
            body,
        )
        .await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (status, answer) = raw(
        &app,
        Method::POST,
        "/api/users",
        None,
        Some("application/json"),
        "",
    )
    .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(post_count(&app, &alice.token).await, 0);
}

#[tokio::test]
async fn a_body_that_is_not_declared_json_is_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let body = r#"{"title": "t", "body": "b"}"#;
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let (status, answer) = raw(
            &app,
            Method::POST,
            "/api/posts",
            Some(&alice.token),
            content_type,
            body,
        )
        .await;
        assert_error(status, &answer, StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "the message says what is expected: {answer}"
        );
    }
    assert_eq!(post_count(&app, &alice.token).await, 0);
}

#[tokio::test]
async fn a_missing_or_bad_token_is_401_on_every_user_route() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let post = app.create_post(&alice, "Guarded").await;
    let routes = [
        (Method::GET, "/api/me".to_owned()),
        (Method::GET, "/api/posts".to_owned()),
        (Method::POST, "/api/posts".to_owned()),
        (Method::GET, format!("/api/posts/{post}")),
        (Method::PUT, format!("/api/posts/{post}/like")),
        (Method::DELETE, format!("/api/posts/{post}/like")),
        (Method::PUT, format!("/api/posts/{post}/collect")),
        (Method::POST, format!("/api/posts/{post}/shares")),
        (Method::GET, format!("/api/posts/{post}/comments")),
        (Method::POST, format!("/api/posts/{post}/comments")),
        (Method::PUT, "/api/comments/1/like".to_owned()),
        (Method::GET, "/api/messages?with=1".to_owned()),
        (Method::POST, "/api/messages".to_owned()),
        (Method::GET, "/api/notifications".to_owned()),
        (Method::POST, "/api/notifications/read".to_owned()),
        (Method::GET, "/api/tasks/1".to_owned()),
        (Method::GET, "/api/admin/stats".to_owned()),
    ];
    for (method, path) in routes {
        for token in [None, Some("not-a-token"), Some("")] {
            let (status, body) = app
                .call(method.clone(), &path, token, Some(json!({})))
                .await;
            assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    // Another scheme is no bearer token either.
    let resp = app
        .client
        .get(app.url("/api/me"))
        .basic_auth("alice", Some("password123"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let (_, p) = app.get(&format!("/api/posts/{post}"), &alice.token).await;
    assert_eq!(p["likes_count"], 0, "nothing was liked");
}

#[tokio::test]
async fn invalid_values_are_422_and_create_nothing() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let long_title = "t".repeat(201);
    let long_body = "b".repeat(20_001);
    for (title, body) in [
        ("", "body"),
        ("   ", "body"),
        (long_title.as_str(), "body"),
        ("title", ""),
        ("title", "\t\n"),
        ("title", long_body.as_str()),
    ] {
        let (status, answer) = app
            .post(
                "/api/posts",
                &alice.token,
                json!({"title": title, "body": body}),
            )
            .await;
        assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    assert_eq!(post_count(&app, &alice.token).await, 0);
    let (status, _) = app
        .post(
            "/api/posts",
            &alice.token,
            json!({"title": "t".repeat(200), "body": "b".repeat(20_000)}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the limits themselves are allowed"
    );
}

#[tokio::test]
async fn a_page_limit_of_zero_or_over_the_maximum_is_422() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let post = app.create_post(&alice, "Paged").await;
    for path in [
        "/api/posts?limit=0".to_owned(),
        "/api/posts?limit=101".to_owned(),
        "/api/notifications?limit=0".to_owned(),
        "/api/notifications?limit=1000".to_owned(),
        format!("/api/messages?with={}&limit=0", alice.id),
        format!("/api/posts/{post}/comments?limit=0"),
        format!("/api/posts/{post}/comments?limit=101"),
    ] {
        let (status, body) = app.get(&path, &alice.token).await;
        assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let (status, _) = app.get("/api/posts?limit=100", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/api/posts?limit=ten",
        "/api/posts?limit=-1",
        "/api/posts?before=x",
        "/api/notifications?unread_only=maybe",
    ] {
        let (status, body) = app.get(path, &alice.token).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413_and_a_body_under_it_is_judged_on_its_values() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let huge = json!({"title": "big", "body": "x".repeat(1024 * 1024)}).to_string();
    let (status, body) = raw(
        &app,
        Method::POST,
        "/api/posts",
        Some(&alice.token),
        Some("application/json"),
        huge,
    )
    .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    let (status, body) = raw(
        &app,
        Method::POST,
        "/api/users",
        None,
        Some("application/json"),
        json!({"name": "x".repeat(2 * 1024 * 1024), "password": "password123"}).to_string(),
    )
    .await;
    assert_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "too_large");

    let under = json!({"title": "big", "body": "x".repeat(1000 * 1000)}).to_string();
    let (status, body) = raw(
        &app,
        Method::POST,
        "/api/posts",
        Some(&alice.token),
        Some("application/json"),
        under,
    )
    .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(post_count(&app, &alice.token).await, 0);
}

#[tokio::test]
async fn a_non_numeric_id_in_a_path_is_400() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for (method, path) in [
        (Method::GET, "/api/posts/abc"),
        (Method::GET, "/api/posts/-1"),
        (Method::GET, "/api/posts/18446744073709551616"),
        (Method::PUT, "/api/posts/1.5/like"),
        (Method::DELETE, "/api/comments/x/like"),
        (Method::GET, "/api/tasks/abc"),
    ] {
        let (status, body) = app.call(method, path, Some(&alice.token), None).await;
        assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    }
}

#[tokio::test]
async fn an_unknown_route_is_404_and_a_wrong_method_405_in_the_error_shape() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for path in ["/nope", "/api", "/api/postz", "/api/posts/1/likes"] {
        let (status, body) = app.get(path, &alice.token).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, body) = app.call(Method::GET, "/nope", None, None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .call(Method::PATCH, "/api/posts", Some(&alice.token), None)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

/// Reproduction: the header timeout ends with the request head, so a client could
/// trickle a body for as long as it liked, holding its connection and handler. The
/// whole body must arrive within `http_body_timeout_ms`: 408 in the error shape, the
/// connection closed, nothing created; a body sent at once is served as before.
#[tokio::test]
async fn a_body_trickled_past_the_body_timeout_is_408_closes_and_creates_nothing() {
    use tokio::io::AsyncWriteExt;
    let app = spawn_app_with(|s| s.limits.http_body_timeout_ms = 300).await;
    let body = json!({"name": "trickler", "password": "password123"}).to_string();
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/users HTTP/1.1\r\nHost: likewise\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    // One byte every 50 ms: the whole body would take longer than the deadline.
    let trickle = tokio::spawn(async move {
        for byte in body.into_bytes() {
            if write.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    let answer = read_to_close(&mut read).await;
    trickle.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""code":"timeout""#), "{answer}");
    assert!(answer.contains("within 300 ms"), "{answer}");
    // Nothing was created: the name is still free, and a body sent at once works.
    app.register("trickler").await;
}
