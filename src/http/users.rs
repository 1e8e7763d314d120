//! Accounts and sessions: `POST /api/users`, `POST /api/sessions`, `GET /api/me`.

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{extract::State, Json, Router};
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{ApiJson, CurrentUser};
use super::AppState;
use crate::domain::{Session, User};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(register))
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
