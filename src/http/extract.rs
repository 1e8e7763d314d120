//! Extractors whose rejections speak the API's error shape, authentication, and the
//! client's address.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts};
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::domain::{SignedIn, User};

/// `axum::Json` with rejections in the API's shape (400, or 413 over the limit).
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Path` with rejections in the API's shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `axum::extract::Query` with rejections in the API's shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The bearer token of a request, from `Authorization: Bearer` (websocket upgrades
/// and the admin stream also read `?token=` and `?ticket=` themselves).
pub fn bearer_token(parts: &Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let value = value.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    None
}

/// The address of the client, from the connection (never from a header a client
/// could forge: behind a reverse proxy every client has the proxy's address).
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| ClientAddr(c.0.ip()))
            .ok_or_else(|| ApiError::Internal("the connection's address is unknown".into()))
    }
}

/// The signed-in user; 401 without a valid token (saying whether it is unknown,
/// expired or revoked).
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        not_admin(state, &token)?;
        Ok(CurrentUser(state.social.authenticate(&token)?))
    }
}

/// Refuses the admin token on routes that act as a user: it is valid, but it is
/// nobody's session, so the answer is 403 rather than "sign in again".
pub(crate) fn not_admin(state: &AppState, token: &str) -> Result<(), ApiError> {
    if state.admin.matches(token) {
        return Err(ApiError::Forbidden(
            "the admin token is not a user's session: this route needs a user's token".into(),
        ));
    }
    Ok(())
}

/// The signed-in user and the session the request's token names (for signing out
/// and password changes).
pub struct CurrentSession(pub SignedIn);

impl FromRequestParts<AppState> for CurrentSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        not_admin(state, &token)?;
        Ok(CurrentSession(state.social.signed_in(&token)?))
    }
}

/// Either a signed-in session or the admin.
pub enum Caller {
    /// A user's token.
    User(User),
    /// The admin token.
    Admin,
}

/// As [`Caller`], keeping the user's session.
pub enum SessionOrAdmin {
    /// A user's session.
    User(SignedIn),
    /// The admin token.
    Admin,
}

impl FromRequestParts<AppState> for SessionOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        if state.admin.matches(&token) {
            return Ok(SessionOrAdmin::Admin);
        }
        Ok(SessionOrAdmin::User(state.social.signed_in(&token)?))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(
            match SessionOrAdmin::from_request_parts(parts, state).await? {
                SessionOrAdmin::User(s) => Caller::User(s.user),
                SessionOrAdmin::Admin => Caller::Admin,
            },
        )
    }
}

/// The admin; 401 without a token, 403 with a user's token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        admin_only(state, &token)
    }
}

/// Whether `token` is the admin token: 403 for a user's valid token, 401 for
/// anything else.
pub fn admin_only(state: &AppState, token: &str) -> Result<Admin, ApiError> {
    if state.admin.matches(token) {
        return Ok(Admin);
    }
    state.social.authenticate(token)?;
    Err(ApiError::Forbidden("this needs the admin token".into()))
}
