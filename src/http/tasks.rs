//! `GET /api/tasks/{id}`: a task's state, for its owner or the admin.

use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, Caller};
use super::AppState;
use crate::queue::Task;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(task))
}

/// A task: for the user whose action caused it, or the admin.
#[utoipa::path(
    get,
    path = "/api/tasks/{id}",
    tag = "tasks",
    params(("id" = u64, Path, description = "Task id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 404, description = "Unknown, expired, or not the caller's", body = super::openapi::Error),
    )
)]
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
