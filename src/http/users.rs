//! Accounts and sessions: `POST /api/users`, `POST /api/sessions`, `GET /api/me`;
//! and the people directory a client renders names with: `GET /api/users`,
//! `GET /api/users/{id}`.

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{extract::State, Json, Router};
use serde::Deserialize;

use serde_json::{json, Value};

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, CurrentUser};
use super::posts::Paging;
use super::AppState;
use crate::domain::{Session, User};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(register).get(list))
        .route("/api/users/{id}", get(one))
        .route("/api/sessions", post(login))
        .route("/api/me", get(me))
}

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

async fn register(
    State(state): State<AppState>,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let session = state.social.register(c.name, c.password).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

async fn login(
    State(state): State<AppState>,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<Json<Session>> {
    Ok(Json(state.social.login(c.name, c.password).await?))
}

async fn me(CurrentUser(user): CurrentUser) -> Json<User> {
    Json(user)
}

async fn list(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiQuery(q): ApiQuery<Paging>,
) -> ApiResult<Json<Value>> {
    let limit = state.social.page_limit(q.limit)?;
    let page = state.social.users(limit, q.before)?;
    Ok(Json(
        json!({"users": page.items, "next_before": page.next_before}),
    ))
}

async fn one(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<User>> {
    Ok(Json(state.social.user(id)?))
}
