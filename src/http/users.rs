//! Accounts and sessions: `POST /api/users`, `POST /api/sessions` (sign in),
//! `DELETE /api/sessions` (sign out, `?all=true` everywhere), `GET /api/me`,
//! `PUT /api/me/password`; and the people directory a client renders names with:
//! `GET /api/users`, `GET /api/users/{id}`.

use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{extract::State, Json, Router};
use serde::Deserialize;

use serde_json::{json, Value};

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, ClientAddr, CurrentSession, CurrentUser};
use super::posts::Paging;
use super::AppState;
use crate::domain::{Session, User};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/users", post(register).get(list))
        .route("/api/users/{id}", get(one))
        .route("/api/sessions", post(login).delete(logout))
        .route("/api/me", get(me))
        .route("/api/me/password", put(change_password))
}

#[derive(Deserialize)]
struct Credentials {
    name: String,
    password: String,
}

async fn register(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let session = state.social.register_from(c.name, c.password, from).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<Json<Session>> {
    Ok(Json(state.social.login(c.name, c.password, from).await?))
}

#[derive(Deserialize)]
struct LogoutQuery {
    #[serde(default)]
    all: bool,
}

async fn logout(
    State(state): State<AppState>,
    CurrentSession(session): CurrentSession,
    ApiQuery(q): ApiQuery<LogoutQuery>,
) -> ApiResult<Json<Value>> {
    state.social.sign_out(&session, q.all).await?;
    Ok(Json(json!({"signed_out": true, "all": q.all})))
}

#[derive(Deserialize)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    CurrentSession(session): CurrentSession,
    ApiJson(p): ApiJson<PasswordChange>,
) -> ApiResult<Json<Value>> {
    state
        .social
        .change_password(&session, p.old_password, p.new_password, from)
        .await?;
    Ok(Json(json!({"changed": true})))
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
