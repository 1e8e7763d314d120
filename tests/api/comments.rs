//! Comments, replies and likes on comments.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, TestApp, TestUser};

async fn comment(
    app: &TestApp,
    user: &TestUser,
    post: u64,
    body: &str,
    parent: Option<u64>,
) -> (StatusCode, Value) {
    let mut payload = json!({"body": body});
    if let Some(p) = parent {
        payload["parent_id"] = json!(p);
    }
    app.post(&format!("/api/posts/{post}/comments"), &user.token, payload)
        .await
}

async fn kinds(app: &TestApp, user: &TestUser) -> Vec<(String, Option<u64>)> {
    app.all_notifications(user)
        .await
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap().to_owned(),
                n["actor_id"].as_u64(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_comment_notifies_the_post_author_and_a_reply_notifies_the_parent_author() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let post = app.create_post(&alice, "Talk").await;

    let (status, c) = comment(&app, &bob, post, "first!", None).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["post_id"], post);
    assert_eq!(c["author_id"], bob.id);
    assert!(c["parent_id"].is_null());
    assert_eq!(c["body"], "first!");
    assert_eq!(c["likes_count"], 0);
    let parent = c["id"].as_u64().unwrap();

    let (status, reply) = comment(&app, &carol, post, "welcome", Some(parent)).await;
    assert_eq!(status, StatusCode::CREATED, "{reply}");
    assert_eq!(reply["parent_id"], parent);

    app.eventually(Duration::from_secs(5), || async {
        (kinds(&app, &bob).await == vec![("reply".to_owned(), Some(carol.id))]).then_some(())
    })
    .await;
    let bobs = app.all_notifications(&bob).await;
    assert_eq!(bobs[0]["comment_id"], reply["id"]);
    assert_eq!(bobs[0]["post_id"], post);
    app.eventually(Duration::from_secs(5), || async {
        (kinds(&app, &alice).await == vec![("comment".to_owned(), Some(bob.id))]).then_some(())
    })
    .await;

    let (status, list) = app
        .get(&format!("/api/posts/{post}/comments"), &alice.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&Value> = list["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["id"])
        .collect();
    assert_eq!(ids, vec![&c["id"], &reply["id"]], "oldest first");
    app.eventually(Duration::from_secs(5), || async {
        let (_, p) = app.get(&format!("/api/posts/{post}"), &alice.token).await;
        (p["comments_count"] == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_reply_to_a_comment_of_another_post_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let first = app.create_post(&alice, "One").await;
    let second = app.create_post(&alice, "Two").await;
    let (_, c) = comment(&app, &alice, first, "mine", None).await;
    let elsewhere = c["id"].as_u64().unwrap();

    let (status, body) = comment(&app, &bob, second, "lost", Some(elsewhere)).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let (status, body) = comment(&app, &bob, second, "lost", Some(987_654)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");

    let (_, list) = app
        .get(&format!("/api/posts/{second}/comments"), &bob.token)
        .await;
    assert_eq!(list["comments"], json!([]));
    assert_eq!(app.all_notifications(&alice).await.len(), 0);
}

#[tokio::test]
async fn empty_and_over_long_comments_are_invalid() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let post = app.create_post(&alice, "Rules").await;
    for body in [String::new(), " \n ".to_owned(), "x".repeat(20_001)] {
        let (status, answer) = comment(&app, &alice, post, &body, None).await;
        assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let (status, _) = comment(&app, &alice, post, &"x".repeat(20_000), None).await;
    assert_eq!(status, StatusCode::CREATED, "the limit itself is allowed");
}

#[tokio::test]
async fn liking_a_comment_is_idempotent_notifies_once_and_is_counted() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Thread").await;
    let (_, c) = comment(&app, &alice, post, "like me", None).await;
    let id = c["id"].as_u64().unwrap();
    let path = format!("/api/comments/{id}/like");

    let (status, like) = app.put(&path, &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(like["liked"], true);
    assert_eq!(like["created"], true);
    let notification = like["notification_id"].as_u64().expect("a notification");
    assert!(like["task_id"].is_null(), "written with the like: {like}");

    let (_, again) = app.put(&path, &bob.token).await;
    assert_eq!(again["created"], false);
    assert!(again["notification_id"].is_null());
    let (status, unliked) = app.delete(&path, &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unliked, json!({"liked": false}));
    let (_, unliked_again) = app.delete(&path, &bob.token).await;
    assert_eq!(unliked_again, json!({"liked": false}));
    let (_, relike) = app.put(&path, &bob.token).await;
    assert_eq!(relike["created"], true);
    assert!(
        relike["notification_id"].is_null(),
        "no second notification"
    );

    // Counted in the like's own commit: no waiting.
    let (_, list) = app
        .get(&format!("/api/posts/{post}/comments"), &alice.token)
        .await;
    assert_eq!(list["comments"][0]["likes_count"], 1, "{list}");
    let all = app.all_notifications(&alice).await;
    let likes: Vec<&Value> = all.iter().filter(|n| n["kind"] == "like_comment").collect();
    assert_eq!(likes.len(), 1, "{all:?}");
    assert_eq!(likes[0]["id"], notification);
    assert_eq!(likes[0]["comment_id"], id);
    assert_eq!(likes[0]["post_id"], post);
    assert_eq!(likes[0]["actor_id"], bob.id);

    for (status, body) in [
        app.put("/api/comments/424242/like", &bob.token).await,
        app.delete("/api/comments/424242/like", &bob.token).await,
    ] {
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
}
