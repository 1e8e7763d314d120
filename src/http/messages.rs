//! Private messages: `POST /api/messages`, `GET /api/messages?with=`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::extract::{ApiJson, ApiQuery, CurrentUser};
use super::AppState;
use crate::domain::Message;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/messages", post(send).get(conversation))
}

#[derive(Deserialize)]
struct NewMessage {
    to_user_id: u64,
    body: String,
}

async fn send(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiJson(m): ApiJson<NewMessage>,
) -> ApiResult<(StatusCode, Json<Message>)> {
    let message = state
        .social
        .send_message(user.id, m.to_user_id, m.body)
        .await?;
    Ok((StatusCode::CREATED, Json(message)))
}

#[derive(Deserialize)]
struct With {
    with: u64,
    limit: Option<usize>,
    before: Option<u64>,
}

async fn conversation(
    State(state): State<AppState>,
    CurrentUser(user): CurrentUser,
    ApiQuery(q): ApiQuery<With>,
) -> ApiResult<Json<Value>> {
    let limit = state.social.page_limit(q.limit)?;
    let page = state
        .social
        .conversation(user.id, q.with, limit, q.before)?;
    Ok(Json(
        json!({"messages": page.items, "next_before": page.next_before}),
    ))
}
