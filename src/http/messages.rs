//! Private messages: `POST /api/messages`, `GET /api/messages?with=`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ApiResult;
use super::extract::{ApiJson, ApiQuery, CurrentUser};
use super::AppState;
use crate::domain::Message;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(send, conversation))
}

/// A private message.
#[derive(Deserialize, ToSchema)]
struct NewMessage {
    to_user_id: u64,
    body: String,
}

/// Sends a private message; notifies the receiver.
#[utoipa::path(
    post,
    path = "/api/messages",
    tag = "messages",
    request_body = NewMessage,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The message", body = Message),
        (status = 404, description = "No such user", body = super::openapi::Error),
        (status = 422, description = "Empty or too long body, or to oneself", body = super::openapi::Error),
    )
)]
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

/// `?with=USER_ID&limit=&before=`.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct With {
    with: u64,
    limit: Option<usize>,
    before: Option<u64>,
}

/// The conversation with one user, newest first.
#[utoipa::path(
    get,
    path = "/api/messages",
    tag = "messages",
    params(With),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of messages", body = super::openapi::MessagePage),
    )
)]
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
