//! Listing and reading notifications.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, TestApp, TestUser, ADMIN_TOKEN};

/// Has `n` different users like a post of `author`; waits for the `n` notifications
/// and returns their ids, newest first.
async fn liked_by_many(app: &TestApp, author: &TestUser, n: usize) -> Vec<u64> {
    let post = app.create_post(author, "Liked").await;
    for i in 0..n {
        let fan = app.register(&format!("fan{i}")).await;
        let (status, _) = app
            .put(&format!("/api/posts/{post}/like"), &fan.token)
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let all = app
        .eventually(Duration::from_secs(5), || async {
            let all = app.all_notifications(author).await;
            (all.len() == n).then_some(all)
        })
        .await;
    all.iter().map(|n| n["id"].as_u64().unwrap()).collect()
}

fn ids(page: &Value) -> Vec<u64> {
    page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn notifications_page_newest_first_and_filter_unread() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let all = liked_by_many(&app, &alice, 5).await;
    let mut sorted = all.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(all, sorted, "newest first");

    let (status, first) = app.get("/api/notifications?limit=2", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ids(&first), all[..2]);
    assert_eq!(first["next_before"], all[1]);
    assert_eq!(first["unread_count"], 5);
    let (_, second) = app
        .get(
            &format!("/api/notifications?limit=2&before={}", all[1]),
            &alice.token,
        )
        .await;
    assert_eq!(ids(&second), all[2..4]);
    let (_, last) = app
        .get(
            &format!("/api/notifications?limit=2&before={}", all[3]),
            &alice.token,
        )
        .await;
    assert_eq!(ids(&last), all[4..]);
    assert!(last["next_before"].is_null());

    let (_, read) = app
        .post(
            "/api/notifications/read",
            &alice.token,
            json!({"ids": [all[0], all[2]]}),
        )
        .await;
    assert_eq!(read, json!({"unread_count": 3}));
    let (_, unread) = app
        .get("/api/notifications?unread_only=true", &alice.token)
        .await;
    assert_eq!(ids(&unread), vec![all[1], all[3], all[4]]);
    assert_eq!(unread["unread_count"], 3);
    let (_, everything) = app.get("/api/notifications", &alice.token).await;
    let flags: Vec<bool> = everything["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["read"].as_bool().unwrap())
        .collect();
    assert_eq!(flags, vec![true, false, true, false, false]);
}

#[tokio::test]
async fn marking_read_is_idempotent_and_all_clears_everything() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let all = liked_by_many(&app, &alice, 3).await;
    for _ in 0..2 {
        let (status, read) = app
            .post(
                "/api/notifications/read",
                &alice.token,
                json!({"ids": [all[0]]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(read["unread_count"], 2, "reading twice counts once");
    }
    let (_, read) = app
        .post(
            "/api/notifications/read",
            &alice.token,
            json!({"all": true}),
        )
        .await;
    assert_eq!(read, json!({"unread_count": 0}));
    let (_, unread) = app
        .get("/api/notifications?unread_only=true", &alice.token)
        .await;
    assert_eq!(unread["notifications"], json!([]));
    assert_eq!(unread["unread_count"], 0);
    let (_, listed) = app.get("/api/notifications", &alice.token).await;
    assert_eq!(ids(&listed), all, "read notifications are still listed");
}

#[tokio::test]
async fn marking_someone_elses_notification_is_404_and_changes_nothing() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let mallory = app.register("mallory").await;
    let alices = liked_by_many(&app, &alice, 2).await;
    let (status, own) = app
        .call(
            Method::POST,
            "/api/admin/notifications",
            Some(ADMIN_TOKEN),
            Some(json!({"user_id": mallory.id, "text": "hello mallory"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{own}");
    let own = own["id"].as_u64().unwrap();

    for ids in [json!([alices[0]]), json!([own, alices[1]]), json!([424242])] {
        let (status, body) = app
            .post(
                "/api/notifications/read",
                &mallory.token,
                json!({"ids": ids}),
            )
            .await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (_, page) = app.get("/api/notifications", &alice.token).await;
    assert_eq!(page["unread_count"], 2);
    assert!(page["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .all(|n| n["read"] == false));
    let (_, page) = app.get("/api/notifications", &mallory.token).await;
    assert_eq!(
        page["unread_count"], 1,
        "not even the caller's own id was marked"
    );
    assert_eq!(page["notifications"][0]["read"], false);
}

#[tokio::test]
async fn a_mark_read_request_needs_ids_or_all() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for body in [
        json!({}),
        json!({"all": false}),
        json!({"ids": [1], "all": true}),
    ] {
        let (status, answer) = app
            .post("/api/notifications/read", &alice.token, body.clone())
            .await;
        assert_error(status, &answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    }
    let (status, answer) = app
        .post("/api/notifications/read", &alice.token, json!({"ids": []}))
        .await;
    assert_eq!(status, StatusCode::OK, "an empty list reads nothing");
    assert_eq!(answer["unread_count"], 0);
    let (status, answer) = app
        .post(
            "/api/notifications/read",
            &alice.token,
            json!({"ids": "all"}),
        )
        .await;
    assert_error(status, &answer, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test]
async fn an_id_repeated_in_one_mark_read_call_counts_once() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let all = liked_by_many(&app, &alice, 3).await;
    let (status, read) = app
        .post(
            "/api/notifications/read",
            &alice.token,
            json!({"ids": [all[0], all[0], all[0]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    assert_eq!(read["unread_count"], 2, "one notification read, two left");
    let (_, unread) = app
        .get("/api/notifications?unread_only=true", &alice.token)
        .await;
    assert_eq!(ids(&unread), vec![all[1], all[2]]);
    assert_eq!(unread["unread_count"], 2);
}
