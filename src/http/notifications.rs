//! The caller's notifications: list and mark read.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, CurrentUser};
use super::AppState;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(mark_read))
}

/// `?limit=&before=&unread_only=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Query {
    limit: Option<usize>,
    before: Option<u64>,
    #[serde(default)]
    unread_only: bool,
}

/// The caller's notifications, newest first, with the unread count.
#[utoipa::path(
    get,
    path = "/api/notifications",
    tag = "notifications",
    params(Query),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of notifications", body = super::openapi::NotificationPage),
    )
)]
async fn list(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<Query>,
) -> ApiResult<Json<Value>> {
    let limit = state.social.page_limit(q.limit)?;
    let page = state
        .social
        .notifications(user.id, limit, q.before, q.unread_only)?;
    Ok(Json(json!({
        "notifications": page.page.items,
        "unread_count": page.unread_count,
        "next_before": page.page.next_before,
    })))
}

/// `{"ids":[..]}` or `{"all":true}`.
#[derive(Deserialize, ToSchema)]
struct MarkRead {
    ids: Option<Vec<u64>>,
    all: Option<bool>,
}

/// Marks notifications read: the ones listed (all must be the caller's) or all.
#[utoipa::path(
    post,
    path = "/api/notifications/read",
    tag = "notifications",
    request_body = MarkRead,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The unread count left", body = super::openapi::UnreadCount),
        (status = 404, description = "An id is not the caller's", body = super::openapi::Error),
        (status = 422, description = "Neither ids nor all", body = super::openapi::Error),
    )
)]
async fn mark_read(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(m): ApiJson<MarkRead>,
) -> ApiResult<Json<Value>> {
    let unread = match (m.ids, m.all) {
        (Some(ids), None | Some(false)) => state.social.mark_read(user.id, ids).await?,
        (None, Some(true)) => state.social.mark_all_read(user.id).await?,
        _ => {
            return Err(ApiError::Invalid(
                "send either {\"ids\": [...]} or {\"all\": true}".into(),
            ))
        }
    };
    Ok(Json(json!({"unread_count": unread})))
}
