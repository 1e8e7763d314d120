//! The transactional outbox seen from outside: an action and everything it causes
//! (its counters, its notification, the tasks that leave the process) are written
//! together, a refused action writes nothing, and `GET /api/tasks/{id}` shows a task
//! to its owner and the admin only.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app, spawn_app_with, TestApp, ADMIN_TOKEN};

async fn admin_tasks(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/admin/tasks?limit=100{query}"),
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["tasks"].as_array().unwrap().clone()
}

fn task_ids(tasks: &[Value]) -> Vec<u64> {
    tasks.iter().map(|t| t["id"].as_u64().unwrap()).collect()
}

/// A webhook nobody listens on: its deliveries fail, which is enough to see them.
fn with_webhook(s: &mut likewise::config::Settings) {
    s.webhooks = vec![likewise::config::WebhookSettings {
        url: "http://127.0.0.1:9/refused".into(),
        events: vec!["notification.created".into()],
        secret: None,
        max_attempts: Some(1),
    }];
}

#[tokio::test]
async fn a_like_its_count_and_its_notification_are_visible_as_soon_as_the_like_is_acknowledged() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Atomic").await;
    let tasks_before = task_ids(&admin_tasks(&app, "").await);

    let (status, like) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert_eq!(status, StatusCode::OK, "{like}");
    assert_eq!(like["created"], true);
    assert!(like["task_id"].is_null(), "no task: {like}");
    let notification = like["notification_id"].as_u64().expect("a notification");

    // Right after the 200, without waiting: the count and the notification exist.
    let (_, p) = app.get(&format!("/api/posts/{post}"), &bob.token).await;
    assert_eq!(p["likes_count"], 1, "{p}");
    let (status, page) = app.get("/api/notifications", &alice.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["unread_count"], 1, "{page}");
    let n = &page["notifications"][0];
    assert_eq!(n["id"], notification);
    assert_eq!(n["kind"], "like_post");
    assert_eq!(n["actor_id"], bob.id);
    assert_eq!(n["post_id"], post);
    assert_eq!(n["text"], "bob liked your post \u{201c}Atomic\u{201d}");
    assert_eq!(n["read"], false);
    assert_eq!(
        task_ids(&admin_tasks(&app, "").await),
        tasks_before,
        "a like with no webhook configured enqueues nothing"
    );
}

#[tokio::test]
async fn a_like_and_its_webhook_task_are_one_commit() {
    let app = spawn_app_with(with_webhook).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Hooked").await;
    let (_, like) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    let notification = like["notification_id"].as_u64().unwrap();
    // Right after the 200: the delivery exists, in any state.
    let tasks = admin_tasks(&app, "&name=deliver_webhook").await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    let task = &tasks[0];
    for field in [
        "attempts",
        "run_at",
        "last_error",
        "result",
        "created_at",
        "updated_at",
    ] {
        assert!(task.get(field).is_some(), "Task has {field}: {task}");
    }
    let finished = app.finished_task(task["id"].as_u64().unwrap()).await;
    assert_eq!(finished["state"], "failure", "nobody listens: {finished}");
    assert_eq!(finished["attempts"], 1);
    // A second like of the same post by the same user notifies nobody again.
    app.delete(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    let (_, again) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert!(again["notification_id"].is_null(), "{again}");
    assert_eq!(admin_tasks(&app, "&name=deliver_webhook").await.len(), 1);
    let all = app.all_notifications(&alice).await;
    assert_eq!(task_ids(&all), vec![notification]);
}

#[tokio::test]
async fn refused_actions_write_nothing() {
    let app = spawn_app_with(with_webhook).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Quiet").await;
    app.settled().await;
    let before = task_ids(&admin_tasks(&app, "").await);

    let refusals = [
        app.put("/api/posts/987654/like", &bob.token).await,
        app.put("/api/comments/987654/like", &bob.token).await,
        app.put("/api/posts/987654/collect", &bob.token).await,
        app.call(
            Method::POST,
            "/api/posts/987654/shares",
            Some(&bob.token),
            None,
        )
        .await,
        app.post(
            &format!("/api/posts/{post}/comments"),
            &bob.token,
            serde_json::json!({"body": "reply", "parent_id": 987654}),
        )
        .await,
        app.post(
            "/api/messages",
            &bob.token,
            serde_json::json!({"to_user_id": 987654, "body": "hi"}),
        )
        .await,
    ];
    for (status, body) in refusals {
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    assert_eq!(
        task_ids(&admin_tasks(&app, "").await),
        before,
        "the admin task list is unchanged"
    );
    assert!(app.all_notifications(&alice).await.is_empty());
    let (_, p) = app.get(&format!("/api/posts/{post}"), &alice.token).await;
    assert_eq!(p["comments_count"], 0, "{p}");
}

#[tokio::test]
async fn a_task_is_shown_to_its_owner_and_the_admin_only() {
    let app = spawn_app_with(with_webhook).await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let post = app.create_post(&alice, "Mine").await;
    app.put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    let id = admin_tasks(&app, "&name=deliver_webhook").await[0]["id"]
        .as_u64()
        .unwrap();
    let path = format!("/api/tasks/{id}");

    let (status, as_owner) = app.get(&path, &bob.token).await;
    assert_eq!(status, StatusCode::OK, "the liker caused it: {as_owner}");
    assert_eq!(as_owner["id"], id);
    let (status, as_admin) = app.get(&path, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(as_admin["name"], "deliver_webhook");
    for stranger in [&alice, &carol] {
        let (status, body) = app.get(&path, &stranger.token).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    for token in [bob.token.as_str(), ADMIN_TOKEN] {
        let (status, body) = app.get("/api/tasks/987654321", token).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    }
    let (status, body) = app.call(Method::GET, &path, None, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn the_admin_routes_refuse_a_user_token_with_403() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    for path in ["/api/admin/stats", "/api/admin/tasks"] {
        let (status, body) = app.get(path, &alice.token).await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    let (status, body) = app.get("/api/admin/tasks?state=done", ADMIN_TOKEN).await;
    assert_error(status, &body, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
}
