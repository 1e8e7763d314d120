//! The transactional outbox seen from outside: an action and the tasks it causes are
//! written together, a refused action writes no task, and `GET /api/tasks/{id}` shows
//! a task to its owner and the admin only.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{assert_error, spawn_app, TestApp, ADMIN_TOKEN};

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

#[tokio::test]
async fn a_like_and_its_tasks_are_visible_as_soon_as_the_like_is_acknowledged() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Atomic").await;
    let recounts_before = admin_tasks(&app, "&name=recount_post").await.len();

    let (status, like) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    assert_eq!(status, StatusCode::OK);
    let task_id = like["task_id"].as_u64().unwrap();

    // Right after the 200, without waiting: the notify task exists.
    let (status, task) = app.get(&format!("/api/tasks/{task_id}"), &bob.token).await;
    assert_eq!(status, StatusCode::OK, "{task}");
    assert_eq!(task["id"], task_id);
    assert_eq!(task["name"], "notify");
    assert!(
        ["pending", "started", "success"].contains(&task["state"].as_str().unwrap()),
        "{task}"
    );
    assert!(task["max_attempts"].as_u64().unwrap() >= 1);
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
    let recounts = admin_tasks(&app, "&name=recount_post").await;
    assert!(
        recounts.len() > recounts_before,
        "the recount was enqueued with the like"
    );
    let finished = app.finished_task(task_id).await;
    assert_eq!(finished["state"], "success");
    assert_eq!(finished["attempts"], 1);
    assert!(finished["result"]["notification_id"].as_u64().is_some());
}

#[tokio::test]
async fn refused_actions_enqueue_no_task() {
    let app = spawn_app().await;
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
}

#[tokio::test]
async fn a_task_is_shown_to_its_owner_and_the_admin_only() {
    let app = spawn_app().await;
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let carol = app.register("carol").await;
    let post = app.create_post(&alice, "Mine").await;
    let (_, like) = app
        .put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    let id = like["task_id"].as_u64().unwrap();
    let path = format!("/api/tasks/{id}");

    let (status, as_owner) = app.get(&path, &bob.token).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(as_owner["id"], id);
    let (status, as_admin) = app.get(&path, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(as_admin["name"], "notify");
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
