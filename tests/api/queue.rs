//! The durable queue through the HTTP API: webhooks with retries against a real
//! receiver on loopback, dead letters, admin retry and cancel, schedules, expiry.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::helpers::{spawn_app_in, spawn_app_with, TestApp, ADMIN_TOKEN};

/// A request the receiver got.
struct Delivery {
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Answer 500 to the first n requests, then 200.
    FailFirst(usize),
    /// Always answer 503.
    AlwaysFail,
    /// Never answer.
    Hang,
}

/// Starts a webhook receiver on loopback; every request is sent on the channel.
async fn receiver(behaviour: Behaviour) -> (String, mpsc::UnboundedReceiver<Delivery>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                let n = seen.fetch_add(1, Ordering::SeqCst);
                let _ = tx.send(Delivery {
                    at: Instant::now(),
                    headers,
                    body: body.to_vec(),
                });
                match behaviour {
                    Behaviour::FailFirst(k) if n < k => AxumStatus::INTERNAL_SERVER_ERROR,
                    Behaviour::FailFirst(_) => AxumStatus::OK,
                    Behaviour::AlwaysFail => AxumStatus::SERVICE_UNAVAILABLE,
                    Behaviour::Hang => {
                        std::future::pending::<()>().await;
                        AxumStatus::OK
                    }
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a delivery within 10 s")
        .expect("receiver alive")
}

fn hooked(
    url: &str,
    max_attempts: u32,
    base_ms: u64,
) -> impl FnOnce(&mut likewise::config::Settings) + '_ {
    move |s| {
        s.queue.retry_base_ms = base_ms;
        s.queue.retry_max_ms = 60_000;
        s.webhooks = vec![likewise::config::WebhookSettings {
            url: url.to_owned(),
            events: vec!["notification.created".into()],
            secret: Some("s3cret".into()),
            max_attempts: Some(max_attempts),
        }];
    }
}

/// Makes bob like alice's post; returns the id of the webhook delivery it caused.
async fn like_once(app: &TestApp) -> u64 {
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Hooked").await;
    app.put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    webhook_task(app).await["id"].as_u64().unwrap()
}

async fn admin(app: &TestApp, method: Method, path: &str) -> (StatusCode, Value) {
    app.call(method, path, Some(ADMIN_TOKEN), None).await
}

async fn webhook_task(app: &TestApp) -> Value {
    let (status, list) = admin(app, Method::GET, "/api/admin/tasks?name=deliver_webhook").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    list["tasks"][0].clone()
}

#[tokio::test]
async fn a_webhook_that_fails_twice_succeeds_on_the_third_attempt_with_growing_gaps() {
    let (url, mut rx) = receiver(Behaviour::FailFirst(2)).await;
    // A base of 300 ms keeps the jittered gaps (225-300 ms, then 450-600 ms) apart
    // by far more than scheduling noise on a loaded machine.
    let app = spawn_app_with(hooked(&url, 5, 300)).await;
    like_once(&app).await;

    let first = next(&mut rx).await;
    let second = next(&mut rx).await;
    let third = next(&mut rx).await;
    let gap1 = second.at - first.at;
    let gap2 = third.at - second.at;
    assert!(
        gap1 >= Duration::from_millis(220),
        "first retry waits ~base: {gap1:?}"
    );
    assert!(gap2 > gap1, "backoff grows: {gap1:?} then {gap2:?}");

    // The body is the event, signed with the hook's secret.
    let body: Value = serde_json::from_slice(&third.body).unwrap();
    assert_eq!(body["event"], "notification.created");
    assert_eq!(body["data"]["kind"], "like_post");
    assert!(body["delivered_at"].is_string());
    let sig = third
        .headers
        .get("x-likewise-signature")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(sig, likewise::tasks::signature("s3cret", &third.body));

    let task_id = webhook_task(&app).await["id"].as_u64().unwrap();
    let task = app.finished_task(task_id).await;
    assert_eq!(task["state"], "success");
    assert_eq!(task["attempts"], 3);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err(),
        "no fourth delivery"
    );
}

#[tokio::test]
async fn a_webhook_that_always_fails_becomes_a_dead_letter_and_can_be_retried() {
    let (url, mut rx) = receiver(Behaviour::AlwaysFail).await;
    let app = spawn_app_with(|s| {
        hooked(&url, 2, 50)(s);
        // The start's purge, a task of no user, is the success refused below.
        s.queue.keep_unowned_results = true;
    })
    .await;
    like_once(&app).await;
    next(&mut rx).await;
    next(&mut rx).await;

    let task_id = webhook_task(&app).await["id"].as_u64().unwrap();
    let task = app.finished_task(task_id).await;
    assert_eq!(task["state"], "failure");
    assert_eq!(task["attempts"], 2);
    assert!(task["last_error"].as_str().unwrap().contains("503"));

    let (_, dead) = admin(&app, Method::GET, "/api/admin/tasks?state=failure").await;
    let ids: Vec<u64> = dead["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![task_id]);
    let (_, stats) = admin(&app, Method::GET, "/api/admin/stats").await;
    assert_eq!(stats["queue"]["failure"], 1);
    assert_eq!(stats["by_name"]["deliver_webhook"]["failure"], 1);

    let (status, retried) = admin(
        &app,
        Method::POST,
        &format!("/api/admin/tasks/{task_id}/retry"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    next(&mut rx).await; // sent again
    next(&mut rx).await;
    let task = app.finished_task(task_id).await;
    assert_eq!(task["state"], "failure");
    assert_eq!(task["attempts"], 2, "a retry starts with fresh attempts");

    // Only dead, cancelled or waiting tasks can be retried.
    let (_, ok_tasks) = admin(&app, Method::GET, "/api/admin/tasks?state=success&limit=1").await;
    let done = ok_tasks["tasks"][0]["id"].as_u64().unwrap();
    let (status, body) = admin(
        &app,
        Method::POST,
        &format!("/api/admin/tasks/{done}/retry"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
}

#[tokio::test]
async fn a_cancelled_waiting_task_never_runs_even_after_a_restart() {
    let (url, mut rx) = receiver(Behaviour::AlwaysFail).await;
    let dir = tempfile::tempdir().unwrap();
    let task_id = {
        // Retries wait a minute: the task sits in `retry` after the first failure.
        let app = spawn_app_in(dir.path(), hooked(&url, 5, 60_000)).await;
        like_once(&app).await;
        next(&mut rx).await;
        let task_id = app
            .eventually(Duration::from_secs(5), || async {
                let t = webhook_task(&app).await;
                (t["state"] == "retry").then(|| t["id"].as_u64().unwrap())
            })
            .await;
        let (status, body) = admin(
            &app,
            Method::POST,
            &format!("/api/admin/tasks/{task_id}/cancel"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["task"]["state"], "cancelled");
        // Retrying it "now" would have delivered at once; a cancelled task is not retried by itself.
        app.stop().await;
        task_id
    };
    let app = spawn_app_in(dir.path(), hooked(&url, 5, 10)).await;
    let (_, task) = admin(&app, Method::GET, &format!("/api/tasks/{task_id}")).await;
    assert_eq!(task["state"], "cancelled");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_err(),
        "never delivered again"
    );
    let (status, _) = admin(
        &app,
        Method::POST,
        &format!("/api/admin/tasks/{task_id}/cancel"),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "already ended");
}

#[tokio::test]
async fn a_running_task_is_told_to_stop_and_ends_cancelled() {
    let (url, mut rx) = receiver(Behaviour::Hang).await;
    let app = spawn_app_with(hooked(&url, 5, 50)).await;
    like_once(&app).await;
    next(&mut rx).await; // the handler is now waiting on the hanging receiver
    let task_id = webhook_task(&app).await["id"].as_u64().unwrap();
    let (status, body) = admin(
        &app,
        Method::POST,
        &format!("/api/admin/tasks/{task_id}/cancel"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["stop_requested"], true);
    let task = app
        .eventually(Duration::from_secs(5), || async {
            let (_, t) = admin(&app, Method::GET, &format!("/api/tasks/{task_id}")).await;
            (t["state"] == "cancelled").then_some(t)
        })
        .await;
    assert_eq!(task["attempts"], 1);
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let app = spawn_app_with(|_| {}).await;
    let user = app.register("mallory").await;
    for (method, path) in [
        (Method::GET, "/api/admin/stats"),
        (Method::GET, "/api/admin/tasks"),
        (Method::POST, "/api/admin/tasks/1/retry"),
        (Method::POST, "/api/admin/tasks/1/cancel"),
    ] {
        let (status, body) = app.call(method.clone(), path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}: {body}");
        let (status, body) = app.call(method, path, Some(&user.token), None).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (status, body) = admin(&app, Method::GET, "/api/admin/tasks?state=done").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = admin(&app, Method::POST, "/api/admin/tasks/999999/retry").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, stats) = admin(&app, Method::GET, "/api/admin/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["workers"]["total"], 4);
}

#[tokio::test]
async fn waiting_tasks_with_one_unique_key_collapse_into_one() {
    use likewise::domain::effects::{RecountArgs, RECOUNT_POST};
    use likewise::queue::{self, TaskSpec};
    let app = spawn_app_with(|s| s.workers = 1).await;
    let store = app.state.social.store().clone();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let mut spec = TaskSpec::new(RECOUNT_POST, &RecountArgs { id: 7 }, 3)
            .unwrap()
            .unique(format!("{RECOUNT_POST}:7"));
        // Not due yet, so that none of them runs (and releases the key) meanwhile.
        spec.delay_ms = 60_000;
        let id = store
            .write(move |tx| queue::enqueue(tx, &spec))
            .await
            .unwrap();
        ids.insert(id);
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (_, stats) = admin(&app, Method::GET, "/api/admin/stats").await;
    assert_eq!(stats["by_name"][RECOUNT_POST]["pending"], 1, "{stats}");
}

#[tokio::test]
async fn finished_results_expire_and_then_answer_404() {
    let (url, _rx) = receiver(Behaviour::FailFirst(0)).await;
    let app = spawn_app_with(|s| {
        hooked(&url, 1, 100)(s);
        s.queue.result_ttl_s = 1;
        // The purges' own records, tasks of no user, are read below.
        s.queue.keep_unowned_results = true;
        s.schedules = vec![likewise::config::ScheduleSettings {
            task: "purge_expired_results".into(),
            every_s: 1,
        }];
    })
    .await;
    let task_id = like_once(&app).await;
    assert_eq!(app.finished_task(task_id).await["state"], "success");
    app.eventually(Duration::from_secs(10), || async {
        let (status, _) = admin(&app, Method::GET, &format!("/api/tasks/{task_id}")).await;
        (status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    // ...and the purge task really removed the record, and ran on its schedule.
    app.eventually(Duration::from_secs(10), || async {
        let gone = app
            .state
            .social
            .store()
            .tables()
            .tasks
            .get(&task_id)
            .unwrap()
            .is_none();
        gone.then_some(())
    })
    .await;
    // A purge's own record expires too (same TTL), and the next purge removes it, so
    // at one instant every finished purge may be gone while the next one runs: wait
    // for one to be listed rather than expecting it at one instant.
    app.eventually(Duration::from_secs(10), || async {
        let (_, purges) = admin(
            &app,
            Method::GET,
            "/api/admin/tasks?name=purge_expired_results&state=success",
        )
        .await;
        (!purges["tasks"].as_array()?.is_empty()).then_some(())
    })
    .await;
    let (status, body) = admin(&app, Method::GET, "/api/tasks/987654321").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "unknown ids are 404, never a fake pending: {body}"
    );
}

/// A webhook endpoint that redirects elsewhere (here: to another loopback server,
/// as a hostile endpoint would to reach internal addresses) is a failed delivery,
/// and the redirect's target is never contacted.
#[tokio::test]
async fn a_webhook_redirect_is_a_failed_delivery_and_is_never_followed() {
    let hits = Arc::new(AtomicUsize::new(0));
    let internal = {
        let hits = hits.clone();
        axum::Router::new().fallback(move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                "secret"
            }
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let internal_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, internal).await });

    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let redirector = axum::Router::new().route(
        "/hook",
        post(move || {
            let tx = tx.clone();
            async move {
                let _ = tx.send(());
                (
                    AxumStatus::FOUND,
                    [(
                        "location",
                        format!("http://{internal_addr}/latest/meta-data"),
                    )],
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirector).await });

    let app = spawn_app_with(hooked(&url, 3, 50)).await;
    let task_id = like_once(&app).await;
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the endpoint is called")
        .unwrap();
    let task = app.finished_task(task_id).await;
    assert_eq!(task["state"], "failure", "{task}");
    assert_eq!(task["attempts"], 1, "a redirect is not retried: {task}");
    let error = task["last_error"].as_str().unwrap();
    assert!(
        error.contains("302") && error.contains("redirect"),
        "the result says what happened: {error}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the redirect was followed");
}

#[tokio::test]
async fn a_dead_letter_stays_readable_after_the_result_ttl() {
    let (url, mut rx) = receiver(Behaviour::AlwaysFail).await;
    // Results expire at once: only dead letters may outlive that.
    let app = spawn_app_with(|s| {
        hooked(&url, 1, 50)(s);
        s.queue.result_ttl_s = 0;
    })
    .await;
    let task_id = like_once(&app).await;
    next(&mut rx).await;
    let task = app.finished_task(task_id).await;
    assert_eq!(task["state"], "failure", "{task}");
    let (_, dead) = admin(&app, Method::GET, "/api/admin/tasks?state=failure").await;
    assert_eq!(dead["tasks"][0]["id"], task_id, "{dead}");
    let (status, body) = admin(&app, Method::GET, &format!("/api/tasks/{task_id}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "failure");
}

#[tokio::test]
async fn a_task_of_no_user_is_counted_but_forgotten_as_it_succeeds_and_a_users_task_is_kept() {
    let (url, mut rx) = receiver(Behaviour::FailFirst(0)).await;
    let app = spawn_app_with(|s| {
        hooked(&url, 3, 50)(s);
        s.schedules = vec![likewise::config::ScheduleSettings {
            task: "purge_expired_results".into(),
            every_s: 1,
        }];
    })
    .await;
    // The webhook delivery belongs to the liker, who may ask for it: it is kept.
    let alice = app.register("alice").await;
    let bob = app.register("bob").await;
    let post = app.create_post(&alice, "Hooked").await;
    app.put(&format!("/api/posts/{post}/like"), &bob.token)
        .await;
    next(&mut rx).await;
    let task_id = webhook_task(&app).await["id"].as_u64().unwrap();
    assert_eq!(app.finished_task(task_id).await["state"], "success");
    let (status, mine) = app.get(&format!("/api/tasks/{task_id}"), &bob.token).await;
    assert_eq!(
        (status, &mine["state"]),
        (StatusCode::OK, &json!("success"))
    );

    // The purges belong to nobody: each success is counted, and nothing is kept.
    app.eventually(Duration::from_secs(10), || async {
        let metrics = app.text("/metrics").await;
        metrics
            .lines()
            .any(|l| {
                l.starts_with("likewise_tasks_total{")
                    && l.contains("\"purge_expired_results\"")
                    && l.contains("\"success\"")
            })
            .then_some(())
    })
    .await;
    let (_, purges) = admin(
        &app,
        Method::GET,
        "/api/admin/tasks?name=purge_expired_results&state=success",
    )
    .await;
    assert_eq!(purges["tasks"], json!([]), "{purges}");
    let (_, stats) = admin(&app, Method::GET, "/api/admin/stats").await;
    assert_eq!(
        stats["queue"]["success"], 1,
        "only the liker's task: {stats}"
    );
    assert!(
        stats["totals"]["completed"].as_u64().unwrap() >= 2,
        "{stats}"
    );
}
