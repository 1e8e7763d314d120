//! The caller's notifications: list and mark read.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, ApiQuery, CurrentUser};
use super::AppState;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/notifications", get(list))
        .route("/api/notifications/read", post(mark_read))
}

#[derive(Deserialize)]
struct Query {
    limit: Option<usize>,
    before: Option<u64>,
    #[serde(default)]
    unread_only: bool,
}

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

#[derive(Deserialize)]
struct MarkRead {
    ids: Option<Vec<u64>>,
    all: Option<bool>,
}

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
