//! Registration, sign-in and authentication.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_user_registers_signs_in_and_reads_itself() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, me) = app.get("/api/me", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["id"], alice.id);
    assert_eq!(me["name"], "alice");
    assert!(me["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(me.get("password_hash").is_none());

    let (status, session) = app
        .call(
            Method::POST,
            "/api/sessions",
            None,
            Some(json!({"name": "alice", "password": "password123"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(session["user"]["id"], alice.id);
    let token = session["token"].as_str().unwrap();
    assert_ne!(token, alice.token, "each sign-in gets its own token");
    assert!(token.len() >= 32);
    assert_eq!(app.get("/api/me", token).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_taken_name_is_a_conflict_regardless_of_case() {
    let app = spawn_app().await;
    app.register("Carol").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/users",
            None,
            Some(json!({"name": "carol", "password": "password123"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"]["code"], "conflict");
}

#[tokio::test]
async fn bad_credentials_and_tokens_are_refused() {
    let app = spawn_app().await;
    app.register("dave").await;
    let (status, body) = app
        .call(
            Method::POST,
            "/api/sessions",
            None,
            Some(json!({"name": "dave", "password": "wrong-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    let (status, _) = app
        .call(
            Method::POST,
            "/api/sessions",
            None,
            Some(json!({"name": "nobody", "password": "password123"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.call(Method::GET, "/api/me", None, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.get("/api/me", "not-a-token").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn invalid_names_and_passwords_are_rejected_with_422() {
    let app = spawn_app().await;
    for (name, password) in [
        ("", "password123"),
        ("has space", "password123"),
        ("x".repeat(33).as_str(), "password123"),
        ("erin", "short"),
    ] {
        let (status, body) = app
            .call(
                Method::POST,
                "/api/users",
                None,
                Some(json!({"name": name, "password": password})),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{name:?}/{password:?}: {body}"
        );
        assert_eq!(body["error"]["code"], "invalid");
    }
}

#[tokio::test]
async fn repeated_failed_sign_ins_are_rate_limited() {
    let app = spawn_app().await;
    app.register("frank").await;
    let wrong = json!({"name": "frank", "password": "wrong-password"});
    for _ in 0..10 {
        let (status, _) = app
            .call(Method::POST, "/api/sessions", None, Some(wrong.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let right = json!({"name": "frank", "password": "password123"});
    let (status, body) = app
        .call(Method::POST, "/api/sessions", None, Some(right))
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
}
