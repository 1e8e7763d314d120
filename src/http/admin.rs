//! The admin API (admin token only): queue statistics and history, task listing,
//! retry and cancel, notifications created on behalf of outside apps, and events
//! published to any room a client can be in (see [`crate::rooms`]).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{Admin, ApiJson, ApiPath, ApiQuery};
use super::AppState;
use crate::domain::{effects::NotifyArgs, Notification, NotificationKind};
use crate::hub::{Hub, Publication, Transport};
use crate::queue::{CancelOutcome, RetryOutcome, Task, TaskState};

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stats))
        .routes(routes!(history))
        .routes(routes!(list_tasks))
        .routes(routes!(retry))
        .routes(routes!(cancel))
        .routes(routes!(notify))
        .routes(routes!(publish))
}

/// Queue depth, workers, totals and rates, store, connections, hub, HTTP and realtime counters (API.md).
#[utoipa::path(
    get,
    path = "/api/admin/stats",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The statistics", body = Object),
        (status = 403, description = "Not the admin token", body = super::openapi::Error),
    )
)]
async fn stats(State(state): State<AppState>, _admin: Admin) -> ApiResult<Json<Value>> {
    Ok(Json(stats_snapshot(&state)?))
}

/// What `GET /api/admin/stats` answers; also the `stats` event of the admin stream.
pub(super) fn stats_snapshot(state: &AppState) -> ApiResult<Value> {
    let queue = state.queue.queue_stats()?;
    let store = state.social.store();
    let w = store.writer_stats();
    Ok(json!({
        "queue": queue.depth,
        "by_name": queue.by_name,
        "workers": queue.workers,
        "totals": queue.totals,
        "rates": queue.rates,
        "store": {
            "changes": w.changes.load(Ordering::Relaxed),
            "transactions": w.transactions.load(Ordering::Relaxed),
            "flushes": w.flushes.load(Ordering::Relaxed),
            "max_batch": w.max_batch.load(Ordering::Relaxed),
            "size_on_disk": store.size_on_disk(),
        },
        "connections": connections(&state.hub),
        "hub": {
            "published": state.hub.stats().published.load(Ordering::Relaxed),
            "delivered": state.hub.stats().delivered.load(Ordering::Relaxed),
            "dropped_slow": state.hub.stats().dropped_slow.load(Ordering::Relaxed),
            "rooms": state.hub.rooms(None).len(),
        },
        "http": state.connections.to_json(),
        "realtime": state.realtime.to_json(),
        "uptime_s": state.started.elapsed().as_secs(),
    }))
}

fn connections(hub: &Hub) -> Value {
    let mut map = serde_json::Map::new();
    for t in Transport::ALL {
        map.insert(t.as_str().to_owned(), json!(hub.connections(t)));
    }
    Value::Object(map)
}

/// Longest event name accepted by the publish route.
const MAX_EVENT_BYTES: usize = 256;

/// An event for a room clients can be in.
#[derive(Deserialize, ToSchema)]
struct PublishRequest {
    room: String,
    event: String,
    #[serde(default)]
    data: Value,
}

/// Pushes an event to a room clients can be in (`public:…`, `post:{id}`, `user:{id}`, `broadcast`).
#[utoipa::path(
    post,
    path = "/api/admin/publish",
    tag = "admin",
    request_body = PublishRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Subscribers it was queued for", body = super::openapi::Delivered),
        (status = 422, description = "Not a client room, or a bad event name", body = super::openapi::Error),
    )
)]
async fn publish(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(p): ApiJson<PublishRequest>,
) -> ApiResult<Json<Value>> {
    let room = crate::rooms::parse(&p.room).map_err(|e| ApiError::Invalid(e.0))?;
    if !room.is_client_room() {
        return Err(ApiError::Invalid(format!(
            "room {:?} is not a room clients can be in: publish to {}…, post:{{id}}, user:{{id}} or {}",
            p.room,
            crate::rooms::PUBLIC_PREFIX,
            crate::rooms::BROADCAST
        )));
    }
    if p.event.is_empty() || p.event.len() > MAX_EVENT_BYTES {
        return Err(ApiError::Invalid(format!(
            "event must be 1 to {MAX_EVENT_BYTES} bytes"
        )));
    }
    let delivered = state
        .hub
        .publish(Publication::event(&p.room, &p.event, p.data));
    Ok(Json(json!({"delivered": delivered})))
}

/// Tasks finished per second over the last 10 minutes.
#[utoipa::path(
    get,
    path = "/api/admin/history",
    tag = "admin",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The history", body = super::openapi::History),
    )
)]
async fn history(State(state): State<AppState>, _admin: Admin) -> Json<Value> {
    Json(json!({"history": state.queue.history()}))
}

/// `?state=&name=&limit=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct TaskQuery {
    state: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
}

/// Tasks, newest first, by state and name.
#[utoipa::path(
    get,
    path = "/api/admin/tasks",
    tag = "admin",
    params(TaskQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The tasks", body = super::openapi::TaskList),
        (status = 422, description = "Unknown state", body = super::openapi::Error),
    )
)]
async fn list_tasks(
    State(state): State<AppState>,
    _admin: Admin,
    ApiQuery(q): ApiQuery<TaskQuery>,
) -> ApiResult<Json<Value>> {
    let task_state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(TaskState::parse(s).ok_or_else(|| {
            ApiError::Invalid(format!(
                "unknown state {s:?}; use one of pending, started, retry, success, failure, cancelled"
            ))
        })?),
        None => None,
    };
    let limit = state.social.page_limit(q.limit)?;
    let name = q.name.as_deref().filter(|n| !n.is_empty());
    let tasks: Vec<Task> = state
        .queue
        .list(task_state, name, limit)?
        .iter()
        .map(Task::from)
        .collect();
    Ok(Json(json!({"tasks": tasks})))
}

fn task_json(state: &AppState, id: u64) -> ApiResult<Value> {
    let task = state
        .queue
        .task(id)?
        .ok_or_else(|| ApiError::NotFound("task not found".into()))?;
    Ok(serde_json::to_value(Task::from(&task)).unwrap_or(Value::Null))
}

/// Requeues a dead, cancelled or retrying task.
#[utoipa::path(
    post,
    path = "/api/admin/tasks/{id}/retry",
    tag = "admin",
    params(("id" = u64, Path, description = "Task id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Requeued", body = super::openapi::TaskChange),
        (status = 404, description = "Unknown task", body = super::openapi::Error),
        (status = 409, description = "Not retryable in its state", body = super::openapi::Error),
    )
)]
async fn retry(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Value>> {
    match state.queue.retry(id).await? {
        RetryOutcome::Requeued => Ok(Json(
            json!({"requeued": true, "task": task_json(&state, id)?}),
        )),
        RetryOutcome::NotFound => Err(ApiError::NotFound("task not found".into())),
        RetryOutcome::NotRetryable(s) => Err(ApiError::Conflict(format!(
            "a task in state {} cannot be retried; only failure, cancelled and retry can",
            s.as_str()
        ))),
    }
}

/// Cancels a waiting task, or asks a running one to stop.
#[utoipa::path(
    post,
    path = "/api/admin/tasks/{id}/cancel",
    tag = "admin",
    params(("id" = u64, Path, description = "Task id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled or asked to stop", body = super::openapi::TaskChange),
        (status = 404, description = "Unknown task", body = super::openapi::Error),
        (status = 409, description = "Already finished", body = super::openapi::Error),
    )
)]
async fn cancel(
    State(state): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Value>> {
    match state.queue.cancel(id).await? {
        CancelOutcome::Cancelled => Ok(Json(
            json!({"cancelled": true, "task": task_json(&state, id)?}),
        )),
        CancelOutcome::Requested => Ok(Json(
            json!({"cancelled": false, "stop_requested": true, "task": task_json(&state, id)?}),
        )),
        CancelOutcome::NotFound => Err(ApiError::NotFound("task not found".into())),
        CancelOutcome::AlreadyFinished(s) => Err(ApiError::Conflict(format!(
            "the task already ended in state {}",
            s.as_str()
        ))),
    }
}

/// A notification on behalf of an outside app.
#[derive(Deserialize, ToSchema)]
struct NewNotification {
    user_id: u64,
    text: String,
    kind: Option<NotificationKind>,
    actor_id: Option<u64>,
    post_id: Option<u64>,
    comment_id: Option<u64>,
    message_id: Option<u64>,
    /// Optional idempotency key: a second call with the same key returns the first
    /// notification instead of creating another.
    key: Option<String>,
}

/// Creates and pushes a notification on behalf of an outside app (idempotent by `key`).
#[utoipa::path(
    post,
    path = "/api/admin/notifications",
    tag = "admin",
    request_body = NewNotification,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = Notification),
        (status = 200, description = "Already created with this key", body = Notification),
        (status = 404, description = "No such user", body = super::openapi::Error),
        (status = 422, description = "Bad text or key", body = super::openapi::Error),
    )
)]
async fn notify(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(n): ApiJson<NewNotification>,
) -> ApiResult<(StatusCode, Json<Notification>)> {
    crate::domain::check_text("text", &n.text, state.social.limits().max_body_chars)?;
    if n.key
        .as_ref()
        .is_some_and(|k| k.is_empty() || k.len() > 200)
    {
        return Err(ApiError::Invalid("key must be 1 to 200 bytes".into()));
    }
    let key = match n.key {
        Some(k) => format!("external:{k}"),
        None => format!("external-unkeyed:{}", crate::domain::new_token()),
    };
    let args = NotifyArgs {
        key,
        kind: n.kind.unwrap_or(NotificationKind::Custom),
        receiver: n.user_id,
        actor: n.actor_id,
        post: n.post_id,
        comment: n.comment_id,
        message: n.message_id,
        text: Some(n.text),
    };
    let (notification, created) = crate::tasks::deliver(&state.social, args).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(notification)))
}
