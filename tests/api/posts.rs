//! Posts: creation, newest-first paging, views, collects, shares and likes.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, TestApp, TestUser};

async fn post_json(app: &TestApp, user: &TestUser, id: u64) -> Value {
    let (status, post) = app.get(&format!("/api/posts/{id}"), &user.token).await;
    assert_eq!(status, StatusCode::OK, "{post}");
    post
}

/// Waits until the stored post's `field` equals `want` (counts are kept by tasks).
/// Counters are exact: updated in the commit of what they count, so they are right
/// as soon as the action is acknowledged.
async fn assert_count(app: &TestApp, user: &TestUser, id: u64, field: &str, want: u64) {
    let (_, page) = app.get("/api/posts?limit=100", &user.token).await;
    let post = page["posts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
        .unwrap();
    assert_eq!(post[field], want, "{post}");
}

#[tokio::test]
async fn a_new_post_is_returned_with_zero_counts() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let (status, post) = app
        .post(
            "/api/posts",
            &alice.token,
            json!({"title": "Hello", "body": "World"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{post}");
    assert!(post["id"].as_u64().unwrap() > 0);
    assert_eq!(post["author_id"], alice.id);
    assert_eq!(post["title"], "Hello");
    assert_eq!(post["body"], "World");
    assert!(post["created_at"].as_str().unwrap().ends_with('Z'));
    for field in [
        "likes_count",
        "collects_count",
        "comments_count",
        "shares_count",
        "view_count",
    ] {
        assert_eq!(post[field], 0, "{field}");
    }
}

#[tokio::test]
async fn posts_are_listed_newest_first_in_pages_linked_by_next_before() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(app.create_post(&alice, &format!("post {i}")).await);
    }
    ids.reverse();

    let (status, first) = app.get("/api/posts?limit=2", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    let got: Vec<u64> = first["posts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    assert_eq!(got, ids[..2]);
    assert_eq!(first["next_before"], ids[1]);

    let mut seen: Vec<u64> = got;
    let mut before = first["next_before"].as_u64();
    while let Some(b) = before {
        let (_, page) = app
            .get(&format!("/api/posts?limit=2&before={b}"), &alice.token)
            .await;
        seen.extend(
            page["posts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["id"].as_u64().unwrap()),
        );
        before = page["next_before"].as_u64();
    }
    assert_eq!(seen, ids, "every post once, newest first");

    let (_, all) = app.get("/api/posts", &alice.token).await;
    assert_eq!(all["posts"].as_array().unwrap().len(), 5);
    assert!(all["next_before"].is_null(), "no cursor on the last page");
    let (_, exact) = app.get("/api/posts?limit=5", &alice.token).await;
    assert!(
        exact["next_before"].is_null(),
        "a full last page has no cursor"
    );
}

#[tokio::test]
async fn reading_a_post_counts_views_that_converge_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, post) = {
        let app = crate::helpers::spawn_app_in(dir.path(), |_| {}).await;
        let alice = app.register("alice").await;
        let post = app.create_post(&alice, "Seen").await;
        for n in 1..=3 {
            let p = post_json(&app, &alice, post).await;
            assert_eq!(p["view_count"], n, "each read counts itself");
        }
        assert_count(&app, &alice, post, "view_count", 3).await;
        app.stop().await;
        (alice, post)
    };
    let app = crate::helpers::spawn_app_in(dir.path(), |_| {}).await;
    let (_, page) = app.get("/api/posts", &alice.token).await;
    assert_eq!(page["posts"][0]["id"], post);
    assert_eq!(page["posts"][0]["view_count"], 3, "listing counts no view");
    app.stop().await;
}

#[tokio::test]
async fn an_unknown_post_is_404_for_every_action() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let checks = [
        app.get("/api/posts/999999", &alice.token).await,
        app.put("/api/posts/999999/like", &alice.token).await,
        app.delete("/api/posts/999999/like", &alice.token).await,
        app.put("/api/posts/999999/collect", &alice.token).await,
        app.delete("/api/posts/999999/collect", &alice.token).await,
        app.post("/api/posts/999999/shares", &alice.token, json!({}))
            .await,
        app.get("/api/posts/999999/comments", &alice.token).await,
        app.post(
            "/api/posts/999999/comments",
            &alice.token,
            json!({"body": "hi"}),
        )
        .await,
    ];
    for (status, body) in checks {
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
}

#[tokio::test]
async fn collecting_is_idempotent_notifies_once_and_is_counted() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Keep").await;
    let path = format!("/api/posts/{post}/collect");

    let (status, first) = app.put(&path, &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["collected"], true);
    assert_eq!(first["changed"], true);
    assert!(
        first["task_id"].is_null(),
        "written with the collect: {first}"
    );
    let notification = first["notification_id"].as_u64().expect("a notification");

    let (_, again) = app.put(&path, &bob.token).await;
    assert_eq!(again["collected"], true);
    assert_eq!(again["changed"], false);
    assert!(again["notification_id"].is_null());
    assert_count(&app, &alice, post, "collects_count", 1).await;

    let (_, removed) = app.delete(&path, &bob.token).await;
    assert_eq!(removed["collected"], false);
    assert_eq!(removed["changed"], true);
    let (_, removed_again) = app.delete(&path, &bob.token).await;
    assert_eq!(removed_again["changed"], false);
    assert_count(&app, &alice, post, "collects_count", 0).await;

    let (_, recollected) = app.put(&path, &bob.token).await;
    assert_eq!(recollected["changed"], true);
    assert!(
        recollected["notification_id"].is_null(),
        "notified only once"
    );
    assert_count(&app, &alice, post, "collects_count", 1).await;

    let all = app.all_notifications(&alice).await;
    let collects: Vec<&Value> = all.iter().filter(|n| n["kind"] == "collect").collect();
    assert_eq!(collects.len(), 1, "{all:?}");
    assert_eq!(collects[0]["id"], notification);
    assert_eq!(collects[0]["actor_id"], bob.id);
    assert_eq!(collects[0]["post_id"], post);
}

#[tokio::test]
async fn a_share_answers_201_and_is_counted_at_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Spread").await;
    let path = format!("/api/posts/{post}/shares");

    let (status, share) = app.post(&path, &bob.token, json!({})).await;
    assert_eq!(status, StatusCode::CREATED, "{share}");
    assert_eq!(share["shared"], true);
    assert!(share["share_id"].as_u64().is_some(), "{share}");
    assert!(
        share["task_id"].is_null(),
        "counted with the share: {share}"
    );
    assert_count(&app, &alice, post, "shares_count", 1).await;

    // Shares are not idempotent: each is its own.
    let (status, second) = app.post(&path, &alice.token, json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(second["shared"], true);
    assert_count(&app, &alice, post, "shares_count", 2).await;
}

#[tokio::test]
async fn concurrent_likes_from_many_users_give_the_exact_count() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let post = app.create_post(&alice, "Popular").await;
    let mut fans = Vec::new();
    for i in 0..6 {
        fans.push(app.register(&format!("fan{i}")).await);
    }
    let path = format!("/api/posts/{post}/like");
    let likes = fans.iter().map(|f| app.put(&path, &f.token));
    let answers = futures::future::join_all(likes).await;
    let mut notifications = HashSet::new();
    for (status, like) in &answers {
        assert_eq!(*status, StatusCode::OK);
        assert_eq!(like["created"], true);
        assert!(
            notifications.insert(like["notification_id"].as_u64().unwrap()),
            "distinct notifications"
        );
    }
    assert_count(&app, &alice, post, "likes_count", 6).await;
    app.delete(&path, &fans[0].token).await;
    app.delete(&path, &fans[0].token).await;
    assert_count(&app, &alice, post, "likes_count", 5).await;
}
