//! Before the upgrade: the `Origin` allow-list, the query string and the token are
//! checked while the request is still plain HTTP, so a refused client gets a 400,
//! 401 or 403 in the API's error shape and no websocket. (Connection caps come
//! first of all, when the TCP connection is accepted: over a cap the upgrade
//! request is answered 503 by the listener.) Then [`accept`] answers 101 and
//! hands the upgraded connection to the socket loop.

use std::future::Future;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use fastwebsockets::upgrade::IncomingUpgrade;
use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::{socket, RealtimeState, Session, Timing};
use crate::http::error::ApiError;
use crate::http::extract::bearer_token;

/// `?ticket=` or `?token=` (and, for resuming, `?since=`) of an upgrade request.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UpgradeQuery {
    /// A one-use ticket (`POST /api/realtime/tickets`), for browsers.
    pub ticket: Option<String>,
    /// Bearer token, for clients that cannot set headers (kept for existing
    /// clients; never logged).
    pub token: Option<String>,
    /// Resume after this notification id.
    pub since: Option<u64>,
    /// Engine.IO protocol version (Socket.IO only).
    #[serde(rename = "EIO")]
    pub eio: Option<String>,
    /// Engine.IO transport (Socket.IO only).
    pub transport: Option<String>,
    /// Engine.IO session id: a long-polling session's requests, or its upgrade.
    pub sid: Option<String>,
}

/// Refuses an upgrade whose `Origin` is not on the allow-list (when one is set).
pub(crate) fn check_origin(parts: &Parts, allowed: &[String]) -> Result<(), ApiError> {
    if allowed.is_empty() {
        return Ok(());
    }
    let origin = parts
        .headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match origin {
        // Non-browser clients send no Origin; the token still has to be valid.
        None => Ok(()),
        Some(o) if allowed.iter().any(|a| a == o) => Ok(()),
        Some(o) => Err(ApiError::Forbidden(format!(
            "origin {o:?} is not allowed to open a websocket here"
        ))),
    }
}

/// The user behind the request's credentials: `Authorization: Bearer`, then
/// `?ticket=`, then `?token=`; `Ok(None)` without any. A ticket is spent here.
pub(crate) async fn token_user(
    parts: &Parts,
    query: &UpgradeQuery,
    state: &RealtimeState,
) -> Result<Option<u64>, ApiError> {
    let backend = &state.backend;
    if let Some(token) = bearer_token(parts) {
        return backend.user_for_token(&token).await.map(Some);
    }
    if let Some(ticket) = &query.ticket {
        return backend.user_for_ticket(ticket).await.map(Some);
    }
    match &query.token {
        None => Ok(None),
        Some(t) => backend.user_for_token(t).await.map(Some),
    }
}

/// Extracts the query of an upgrade request in the API's error shape.
fn upgrade_query(parts: &Parts) -> Result<UpgradeQuery, ApiError> {
    Query::<UpgradeQuery>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// What both endpoints check before anything else: the `Origin` allow-list, then
/// the query string.
pub(crate) fn preflight(parts: &Parts, state: &RealtimeState) -> Result<UpgradeQuery, ApiError> {
    check_origin(parts, &state.allowed_origins)?;
    upgrade_query(parts)
}

/// Accepts the upgrade and spawns the connection; the 101 response goes back. A
/// request that is not a websocket upgrade gets a 400 in the API's error shape.
pub(crate) async fn accept(
    parts: Parts,
    state: &RealtimeState,
    session: impl Session + 'static,
) -> Response {
    accept_with(parts, state, move |ws, conn| socket::run(ws, conn, session)).await
}

/// [`accept`] with the connection handed to `serve` instead of a new session's
/// socket loop.
pub(crate) async fn accept_with<F, Fut>(
    mut parts: Parts,
    state: &RealtimeState,
    serve: F,
) -> Response
where
    F: FnOnce(WebSocket<TokioIo<Upgraded>>, socket::Conn) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), socket::Ended>> + Send,
{
    let upgrade =
        <IncomingUpgrade as FromRequestParts<RealtimeState>>::from_request_parts(&mut parts, state)
            .await;
    let Ok(upgrade) = upgrade else {
        return ApiError::BadRequest(
            "expected a websocket upgrade (Upgrade: websocket, Sec-WebSocket-Version: 13)".into(),
        )
        .into_response();
    };
    let (response, fut) = match upgrade.upgrade() {
        Ok(pair) => pair,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
    };
    let conn = socket::Conn {
        backend: state.backend.clone(),
        hub: state.hub.clone(),
        stats: state.stats.clone(),
        max_message: state.limits.max_ws_message_bytes,
        timing: Timing::from_state(state),
    };
    tokio::spawn(async move {
        let ws = match fut.await {
            Ok(ws) => ws,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        if let Err(e) = serve(ws, conn).await {
            tracing::debug!(error = %e, "websocket ended with an error");
        }
    });
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(origin: Option<&str>, uri: &str) -> Parts {
        let mut req = axum::http::Request::builder().uri(uri);
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn origins_off_the_allow_list_are_refused() {
        let allowed = vec!["https://app.example".to_owned()];
        assert!(check_origin(&parts(Some("https://app.example"), "/ws"), &allowed).is_ok());
        assert!(check_origin(&parts(None, "/ws"), &allowed).is_ok());
        assert!(check_origin(&parts(Some("https://evil.example"), "/ws"), &allowed).is_err());
        assert!(check_origin(&parts(Some("https://evil.example"), "/ws"), &[]).is_ok());
    }

    #[test]
    fn a_bad_query_is_a_bad_request() {
        let q = upgrade_query(&parts(None, "/ws?since=5&token=t")).unwrap();
        assert_eq!((q.since, q.token.as_deref()), (Some(5), Some("t")));
        assert!(upgrade_query(&parts(None, "/ws?since=-1")).is_err());
    }
}
