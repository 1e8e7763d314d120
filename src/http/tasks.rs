//! `GET /api/tasks/{id}`: a task's state, for its owner or the admin.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, Caller};
use super::AppState;
use crate::queue::Task;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/tasks/{id}", get(task))
}

async fn task(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<Task>> {
    let not_found = || ApiError::NotFound("task not found (unknown, expired, or not yours)".into());
    let record = state.queue.task(id)?.ok_or_else(not_found)?;
    if let Caller::User(user) = caller {
        if record.owner != Some(user.id) {
            return Err(not_found());
        }
    }
    Ok(Json(Task::from(&record)))
}
