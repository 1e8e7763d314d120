//! Extractors whose rejections speak the API's error shape, and authentication.

use axum::extract::{FromRequest, FromRequestParts};
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::domain::User;

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

/// The bearer token of a request, from `Authorization: Bearer` or, for websocket
/// upgrades that cannot set headers, `?token=`.
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

/// The signed-in user; 401 without a valid token.
pub struct CurrentUser(pub User);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        match state.social.authenticate(&token)? {
            Some(user) => Ok(CurrentUser(user)),
            None => Err(ApiError::no_token()),
        }
    }
}

/// Either a signed-in user or the admin.
pub enum Caller {
    /// A user's token.
    User(User),
    /// The admin token.
    Admin,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        if state.admin.matches(&token) {
            return Ok(Caller::Admin);
        }
        match state.social.authenticate(&token)? {
            Some(user) => Ok(Caller::User(user)),
            None => Err(ApiError::no_token()),
        }
    }
}

/// The admin; 401 without a token, 403 with a user's token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or_else(ApiError::no_token)?;
        if state.admin.matches(&token) {
            return Ok(Admin);
        }
        match state.social.authenticate(&token)? {
            Some(_) => Err(ApiError::Forbidden("this needs the admin token".into())),
            None => Err(ApiError::no_token()),
        }
    }
}
