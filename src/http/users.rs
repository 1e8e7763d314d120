//! Accounts and sessions: `POST /api/users`, `POST /api/sessions` (sign in),
//! `DELETE /api/sessions` (sign out, `?all=true` everywhere), `GET /api/me`,
//! `PUT /api/me/password`; and the people directory a client renders names with:
//! `GET /api/users`, `GET /api/users/{id}`.

use axum::http::StatusCode;
use axum::{extract::State, Json};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use serde_json::{json, Value};

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery, ClientAddr, CurrentSession, CurrentUser};
use super::posts::Paging;
use super::AppState;
use crate::domain::{Session, User};

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register, list))
        .routes(routes!(one))
        .routes(routes!(login, logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

/// A name and a password.
#[derive(Deserialize, ToSchema)]
struct Credentials {
    name: String,
    password: String,
}

/// Registers a user and signs them in.
#[utoipa::path(
    post,
    path = "/api/users",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 201, description = "Registered and signed in", body = Session),
        (status = 409, description = "The name is taken", body = super::openapi::Error),
        (status = 429, description = "Too many registrations from this address", body = super::openapi::Error),
    )
)]
async fn register(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    let session = state.social.register_from(c.name, c.password, from).await?;
    Ok((StatusCode::CREATED, Json(session)))
}

/// Signs in.
#[utoipa::path(
    post,
    path = "/api/sessions",
    tag = "accounts",
    request_body = Credentials,
    responses(
        (status = 200, description = "Signed in", body = Session),
        (status = 401, description = "Bad credentials", body = super::openapi::Error),
        (status = 429, description = "Throttled; see Retry-After", body = super::openapi::Error),
    )
)]
async fn login(
    State(state): State<AppState>,
    ClientAddr(from): ClientAddr,
    ApiJson(c): ApiJson<Credentials>,
) -> ApiResult<Json<Session>> {
    Ok(Json(state.social.login(c.name, c.password, from).await?))
}

/// `?all=true` signs out everywhere.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct LogoutQuery {
    #[serde(default)]
    all: bool,
}

/// Signs out: the presented token (or, with `all=true`, every token of the user)
/// stops working.
#[utoipa::path(
    delete,
    path = "/api/sessions",
    tag = "accounts",
    params(LogoutQuery),
    security(("bearer" = [])),
    responses((status = 200, description = "Signed out", body = super::openapi::SignedOut))
)]
async fn logout(
    State(state): State<AppState>,
    CurrentSession(session): CurrentSession,
    ApiQuery(q): ApiQuery<LogoutQuery>,
) -> ApiResult<Json<Value>> {
    state.social.sign_out(&session, q.all).await?;
    Ok(Json(json!({"signed_out": true, "all": q.all})))
}

/// The old password and the new one.
#[derive(Deserialize, ToSchema)]
struct PasswordChange {
    old_password: String,
    new_password: String,
}

/// Changes the password; every other session of the user is revoked.
#[utoipa::path(
    put,
    path = "/api/me/password",
    tag = "accounts",
    request_body = PasswordChange,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = super::openapi::PasswordChanged),
        (status = 403, description = "The old password is wrong", body = super::openapi::Error),
        (status = 422, description = "The new password breaks the rules", body = super::openapi::Error),
    )
)]
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

/// The signed-in user.
#[utoipa::path(get, path = "/api/me", tag = "accounts", security(("bearer" = [])), responses((status = 200, description = "The caller", body = User)))]
async fn me(CurrentUser(user): CurrentUser) -> Json<User> {
    Json(user)
}

/// Users, newest first.
#[utoipa::path(
    get,
    path = "/api/users",
    tag = "accounts",
    params(Paging),
    security(("bearer" = [])),
    responses((status = 200, description = "A page of users", body = super::openapi::UserPage))
)]
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

/// One user.
#[utoipa::path(
    get,
    path = "/api/users/{id}",
    tag = "accounts",
    params(("id" = u64, Path, description = "User id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 404, description = "Unknown", body = super::openapi::Error),
    )
)]
async fn one(
    State(state): State<AppState>,
    _user: CurrentUser,
    ApiPath(id): ApiPath<u64>,
) -> ApiResult<Json<User>> {
    Ok(Json(state.social.user(id)?))
}
