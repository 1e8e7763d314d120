//! Sessions with an end (expiry, sign-out, sign-out everywhere, password change)
//! and the one-use tickets that keep tokens out of URLs.

use futures::SinkExt;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Api, Binary, TestApp, ADMIN_TOKEN};
use crate::realtime::{connect, next_event, next_text, sio_connect, upgrade_status};
use likewise::domain::token_hash;
use likewise::store::records::SessionRecord;
use likewise::store::Timestamp;

async fn sign_in(app: &TestApp, name: &str, password: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/api/sessions",
        None,
        Some(json!({"name": name, "password": password})),
    )
    .await
}

async fn new_token(app: &TestApp, name: &str) -> String {
    let (status, body) = sign_in(app, name, "password123").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Asserts a 401 whose message names why.
fn assert_refused(status: StatusCode, body: &Value, why: &str) {
    assert_error(status, body, StatusCode::UNAUTHORIZED, "unauthorized");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains(why), "expected {why:?} in {message:?}");
}

#[tokio::test]
async fn signing_out_revokes_the_presented_token_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let other = new_token(&app, "alice").await;

    let (status, body) = app.delete("/api/sessions", &alice.token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.get("/api/me", &alice.token).await;
    assert_refused(status, &body, "session revoked");
    let (status, body) = app.delete("/api/sessions", &alice.token).await;
    assert_refused(status, &body, "session revoked");
    assert_eq!(app.get("/api/me", &other).await.0, StatusCode::OK);
    let (status, body) = app.get("/api/me", "never-issued").await;
    assert_refused(status, &body, "a valid token is required");
}

#[tokio::test]
async fn signing_out_everywhere_revokes_every_token_of_the_user_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let second = new_token(&app, "alice").await;

    let (status, body) = app.delete("/api/sessions?all=true", &second).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for token in [&alice.token, &second] {
        let (status, body) = app.get("/api/me", token).await;
        assert_refused(status, &body, "session revoked");
    }
    assert_eq!(app.get("/api/me", &bob.token).await.0, StatusCode::OK);
    let fresh = new_token(&app, "alice").await;
    assert_eq!(app.get("/api/me", &fresh).await.0, StatusCode::OK);
    let (status, body) = app.delete("/api/sessions?all=maybe", &fresh).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(app.get("/api/me", &fresh).await.0, StatusCode::OK);
}

#[tokio::test]
async fn changing_the_password_keeps_this_session_and_revokes_the_others() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let elsewhere = new_token(&app, "alice").await;
    let change = |old: &str, new: &str| json!({"old_password": old, "new_password": new});

    let (status, body) = app
        .call(
            Method::PUT,
            "/api/me/password",
            Some(&alice.token),
            Some(change("wrong-password", "a-new-password")),
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app
        .call(
            Method::PUT,
            "/api/me/password",
            Some(&alice.token),
            Some(change("password123", "short")),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    assert_eq!(app.get("/api/me", &elsewhere).await.0, StatusCode::OK);

    let (status, body) = app
        .call(
            Method::PUT,
            "/api/me/password",
            Some(&alice.token),
            Some(change("password123", "a-new-password")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.get("/api/me", &alice.token).await.0, StatusCode::OK);
    let (status, body) = app.get("/api/me", &elsewhere).await;
    assert_refused(status, &body, "session revoked");
    assert_eq!(
        sign_in(&app, "alice", "password123").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = sign_in(&app, "alice", "a-new-password").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = app
        .call(
            Method::PUT,
            "/api/me/password",
            None,
            Some(change("a-new-password", "another-password")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_token_older_than_the_session_lifetime_is_refused_as_expired() {
    let app = spawn_app_with(|s| s.accounts.session_ttl_s = 3600).await;
    let alice = app.register("alice").await;
    // A session issued two hours ago, as an earlier release would have stored it.
    let old = "a-token-issued-two-hours-ago-0123456789abcdef0123456789abcdef";
    let hash = token_hash(old);
    let session = SessionRecord {
        user_id: alice.id,
        created_at: Timestamp(Timestamp::now().0 - 2 * 3600 * 1000),
    };
    app.state
        .social
        .store()
        .write(move |tx| tx.insert(&tx.t().tokens, &hash, &session))
        .await
        .unwrap();
    let (status, body) = app.get("/api/me", old).await;
    assert_refused(status, &body, "session expired");
    let (status, body) = upgrade_status(&app, &format!("/ws?token={old}")).await;
    assert_refused(status, &body, "session expired");
    assert_eq!(app.get("/api/me", &alice.token).await.0, StatusCode::OK);
}

async fn ticket(app: &TestApp, token: &str) -> String {
    let (status, body) = app
        .call(Method::POST, "/api/realtime/tickets", Some(token), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in_ms"], 30_000);
    body["ticket"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_ticket_opens_one_websocket_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let t = ticket(&app, &alice.token).await;
    assert_ne!(t, alice.token);

    let mut ws = connect(&app, &format!("ticket={t}")).await;
    let ready = next_event(&mut ws).await;
    assert_eq!(ready["event"], "ready");
    assert_eq!(ready["data"]["user_id"], alice.id);

    let (status, body) = upgrade_status(&app, &format!("/ws?ticket={t}")).await;
    assert_refused(status, &body, "ticket");
    let (status, body) = upgrade_status(&app, "/ws?ticket=made-up").await;
    assert_refused(status, &body, "ticket");
    let admin = ticket(&app, ADMIN_TOKEN).await;
    let (status, body) = upgrade_status(&app, &format!("/ws?ticket={admin}")).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    let (status, body) = app
        .call(Method::POST, "/api/realtime/tickets", None, None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_ticket_dies_with_its_session() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let t = ticket(&app, &alice.token).await;
    app.delete("/api/sessions", &alice.token).await;
    let (status, body) = upgrade_status(&app, &format!("/ws?ticket={t}")).await;
    assert_refused(status, &body, "session revoked");
}

#[tokio::test]
async fn tickets_are_bounded_per_holder() {
    let app = spawn_app_with(|s| s.accounts.max_tickets_per_holder = 2).await;
    let alice = app.register("alice").await;
    ticket(&app, &alice.token).await;
    ticket(&app, &alice.token).await;
    let resp = app
        .client
        .post(app.url("/api/realtime/tickets"))
        .bearer_auth(&alice.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
    let bob = app.register("bob").await;
    ticket(&app, &bob.token).await;
}

#[tokio::test]
async fn socketio_connects_with_a_ticket_in_its_auth_payload() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let t = ticket(&app, &alice.token).await;
    let mut ws = sio_connect(&app).await;
    ws.send(Message::text(format!(r#"40{{"ticket":"{t}"}}"#)))
        .await
        .unwrap();
    let connected = next_text(&mut ws).await;
    assert!(connected.starts_with("40{\"sid\""), "{connected}");

    let mut again = sio_connect(&app).await;
    again
        .send(Message::text(format!(r#"40{{"ticket":"{t}"}}"#)))
        .await
        .unwrap();
    let refused = next_text(&mut again).await;
    assert!(refused.starts_with("44{"), "{refused}");
    assert!(refused.contains("unauthorized"), "{refused}");
}

#[tokio::test]
async fn the_admin_stream_opens_with_an_admin_ticket_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let user_ticket = ticket(&app, &alice.token).await;
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/admin/stream?ticket={user_ticket}"),
            None,
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");

    let admin = ticket(&app, ADMIN_TOKEN).await;
    let resp = app
        .client
        .get(app.url(&format!("/api/admin/stream?ticket={admin}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut resp = resp;
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), resp.chunk())
        .await
        .expect("an event within 10 s")
        .unwrap()
        .expect("the stream is open");
    assert!(String::from_utf8_lossy(&first).contains("event: stats"));
    drop(resp);

    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/admin/stream?ticket={admin}"),
            None,
            None,
        )
        .await;
    assert_refused(status, &body, "ticket");
}

#[tokio::test]
async fn no_token_ticket_or_password_reaches_a_debug_log() {
    let server = Binary::start("", "debug,likewise=trace,tower_http=trace").await;
    let api = Api::new(server.addr);
    let password = "correct-horse-battery-staple";
    let wrong = "wrong-horse-battery-staple";
    let (status, body) = api
        .call(
            Method::POST,
            "/api/users",
            None,
            Some(json!({"name": "alice", "password": password})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["token"].as_str().unwrap().to_owned();
    let (status, body) = api
        .call(
            Method::POST,
            "/api/sessions",
            None,
            Some(json!({"name": "alice", "password": password})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second = body["token"].as_str().unwrap().to_owned();
    let (status, _) = api
        .call(
            Method::POST,
            "/api/sessions",
            None,
            Some(json!({"name": "alice", "password": wrong})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let base = format!("ws://{}", server.addr);
    let (mut by_token, _) = tokio_tungstenite::connect_async(format!("{base}/ws?token={first}"))
        .await
        .expect("ws with ?token=");
    by_token.close(None).await.ok();
    let (_, body) = api
        .call(Method::POST, "/api/realtime/tickets", Some(&second), None)
        .await;
    let user_ticket = body["ticket"].as_str().unwrap().to_owned();
    let (mut by_ticket, _) =
        tokio_tungstenite::connect_async(format!("{base}/ws?ticket={user_ticket}"))
            .await
            .expect("ws with ?ticket=");
    by_ticket.close(None).await.ok();
    let (_, body) = api
        .call(
            Method::POST,
            "/api/realtime/tickets",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    let admin_ticket = body["ticket"].as_str().unwrap().to_owned();
    for query in [
        format!("token={ADMIN_TOKEN}"),
        format!("ticket={admin_ticket}"),
    ] {
        let mut resp = api
            .client
            .get(api.url(&format!("/api/admin/stream?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let _ = resp.chunk().await;
    }
    let (mut sio, _) = tokio_tungstenite::connect_async(format!(
        "{base}/socket.io/?EIO=4&transport=websocket&token={second}"
    ))
    .await
    .expect("Socket.IO with ?token=");
    sio.close(None).await.ok();
    let changed = "a-brand-new-password-42";
    let (status, body) = api
        .call(
            Method::PUT,
            "/api/me/password",
            Some(&second),
            Some(json!({"old_password": password, "new_password": changed})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Refused credentials are not logged either.
    let (status, _) = api
        .call(
            Method::GET,
            "/api/admin/stream?token=wrong-admin-token-guess",
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let log = server.stop();
    assert!(
        log.iter().any(|l| l.contains("/api/admin/stream")),
        "the debug log names requests: {log:?}"
    );
    for secret in [
        first.as_str(),
        second.as_str(),
        user_ticket.as_str(),
        admin_ticket.as_str(),
        ADMIN_TOKEN,
        password,
        wrong,
        changed,
        "wrong-admin-token-guess",
    ] {
        let leaks: Vec<_> = log.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret:?} appears in the log: {leaks:?}");
    }
}

#[tokio::test]
async fn the_sweep_forgets_sessions_a_week_after_they_expired_and_keeps_the_rest() {
    let app = spawn_app_with(|s| s.accounts.session_ttl_s = 3600).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let day = 24 * 3600 * 1000;
    let now = Timestamp::now().0;
    // Expired eight days ago, and expired yesterday (still within the week).
    let ancient = "ancient-token-0123456789abcdef0123456789abcdef0123456789abcdef";
    let recent = "recent-token-0123456789abcdef0123456789abcdef0123456789abcdef";
    let old_session = |age: i64| SessionRecord {
        user_id: alice.id,
        created_at: Timestamp(now - age),
    };
    let (a, r) = (old_session(8 * day), old_session(day));
    let (ha, hr) = (token_hash(ancient), token_hash(recent));
    app.state
        .social
        .store()
        .write(move |tx| {
            tx.insert(&tx.t().tokens, &ha, &a)?;
            tx.insert(&tx.t().tokens, &hr, &r)
        })
        .await
        .unwrap();
    app.delete("/api/sessions", &bob.token).await;
    app.delete("/api/sessions?all=true", &alice.token).await;

    let social = &app.state.social;
    assert_eq!(
        social.sweep_sessions(now).await.unwrap(),
        1,
        "only the ancient one"
    );
    let (status, body) = app.get("/api/me", recent).await;
    assert_refused(status, &body, "session revoked");
    let (status, body) = app.get("/api/me", ancient).await;
    assert_refused(status, &body, "a valid token is required");

    // Eight days on, everything above is a week past its expiry.
    let later = now + 8 * day + 3600 * 1000;
    // The recent session, two tombstones (bob's, alice's first) and alice's cutoff.
    assert_eq!(social.sweep_sessions(later).await.unwrap(), 4);
    let t = social.store().tables();
    assert_eq!(t.revoked_sessions.len(), 0);
    assert_eq!(t.session_cutoffs.len(), 0);
    assert_eq!(t.tokens.len(), 0);
}
