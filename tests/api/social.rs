//! Posts, likes and notifications through the HTTP API.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::spawn_app;

#[tokio::test]
async fn a_like_notifies_the_author_once_and_updates_the_count() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Hello").await;

    let (status, like) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(like["liked"], true);
    assert_eq!(like["created"], true);
    let notification = like["notification_id"].as_u64().expect("a notification");

    let (_, list) = app.get("/api/notifications", &alice.token).await;
    assert_eq!(list["unread_count"], 1);
    let n = &list["notifications"][0];
    assert_eq!(n["id"], notification);
    assert_eq!(n["kind"], "like_post");
    assert_eq!(n["actor_id"], bob.id);
    assert_eq!(n["post_id"], post);
    assert_eq!(n["read"], false);
    assert!(n["text"].as_str().unwrap().contains("bob"));

    // like again, unlike, like: no second notification
    let (_, again) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert_eq!(again["created"], false);
    assert!(again["notification_id"].is_null());
    let (_, unliked) = app
        .delete(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert_eq!(unliked, json!({"liked": false}));
    let (_, relike) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert_eq!(relike["created"], true);
    assert!(
        relike["notification_id"].is_null(),
        "no second notification"
    );

    let (_, p) = app.get(&format!("/api/posts/{post}"), &alice.token).await;
    assert_eq!(p["likes_count"], 1, "{p}");
    let (_, list) = app.get("/api/notifications", &alice.token).await;
    assert_eq!(list["notifications"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn liking_your_own_post_notifies_nobody() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let post = app.create_post(&alice, "Mine").await;
    let (_, like) = app
        .put(&format!("/api/posts/{post}/like"), &alice.token)
        .await;
    assert_eq!(like["created"], true);
    assert!(like["notification_id"].is_null());
    let (_, p) = app.get(&format!("/api/posts/{post}"), &alice.token).await;
    assert_eq!(p["likes_count"], 1, "{p}");
    let (_, list) = app.get("/api/notifications", &alice.token).await;
    assert_eq!(list["unread_count"], 0);
    assert_eq!(list["notifications"], json!([]));
}
