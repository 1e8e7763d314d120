//! Private messages.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{assert_error, spawn_app};

#[tokio::test]
async fn a_message_is_stored_listed_for_both_sides_and_notifies_the_receiver() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;

    let (status, m1) = app
        .post(
            "/api/messages",
            &alice.token,
            json!({"to_user_id": bob.id, "body": "hi bob"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{m1}");
    assert_eq!(m1["from_user_id"], alice.id);
    assert_eq!(m1["to_user_id"], bob.id);
    assert_eq!(m1["body"], "hi bob");
    assert!(m1["created_at"].as_str().unwrap().ends_with('Z'));
    let (_, m2) = app
        .post(
            "/api/messages",
            &bob.token,
            json!({"to_user_id": alice.id, "body": "hi alice"}),
        )
        .await;
    // Another conversation must not leak into this one.
    app.post(
        "/api/messages",
        &carol.token,
        json!({"to_user_id": alice.id, "body": "psst"}),
    )
    .await;

    for (me, other) in [(&alice, &bob), (&bob, &alice)] {
        let (status, list) = app
            .get(&format!("/api/messages?with={}", other.id), &me.token)
            .await;
        assert_eq!(status, StatusCode::OK);
        let ids: Vec<_> = list["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].clone())
            .collect();
        assert_eq!(
            ids,
            vec![m2["id"].clone(), m1["id"].clone()],
            "newest first"
        );
    }
    let (_, page) = app
        .get(
            &format!("/api/messages?with={}&limit=1", bob.id),
            &alice.token,
        )
        .await;
    assert_eq!(page["messages"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_before"], m2["id"]);

    let notified = app
        .eventually(Duration::from_secs(5), || async {
            let all = app.all_notifications(&bob).await;
            (!all.is_empty()).then_some(all)
        })
        .await;
    assert_eq!(notified.len(), 1);
    assert_eq!(notified[0]["kind"], "message");
    assert_eq!(notified[0]["actor_id"], alice.id);
    assert_eq!(notified[0]["message_id"], m1["id"]);
    assert!(notified[0]["post_id"].is_null());
}

#[tokio::test]
async fn messages_to_yourself_to_unknown_users_or_without_text_are_refused() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;

    let (status, body) = app
        .post(
            "/api/messages",
            &alice.token,
            json!({"to_user_id": alice.id, "body": "me"}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, body) = app
        .post(
            "/api/messages",
            &alice.token,
            json!({"to_user_id": 999_999, "body": "anyone?"}),
        )
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app
        .post(
            "/api/messages",
            &alice.token,
            json!({"to_user_id": bob.id, "body": ""}),
        )
        .await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, body) = app
        .post("/api/messages", &alice.token, json!({"body": "to whom?"}))
        .await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");

    let (status, body) = app.get("/api/messages?with=999999", &alice.token).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, body) = app.get("/api/messages", &alice.token).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "bad_request");
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/api/messages",
            None,
            Some(json!({"to_user_id": bob.id, "body": "anon"})),
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    let (_, list) = app
        .get(&format!("/api/messages?with={}", alice.id), &bob.token)
        .await;
    assert_eq!(list["messages"], json!([]), "nothing was stored");
    assert!(app.all_notifications(&bob).await.is_empty());
}
