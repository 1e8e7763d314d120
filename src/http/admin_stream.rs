//! `GET /api/admin/stream`: the admin statistics as server-sent events, one `stats`
//! event per second carrying what `GET /api/admin/stats` answers, for the dashboard.
//!
//! Browsers' `EventSource` cannot set headers, so the admin token may come as
//! `?token=` (or in `Authorization: Bearer`); it is compared in constant time. The
//! stream ends when the server shuts down, so graceful shutdown never waits on it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::Router;
use futures_util::Stream;
use serde::Deserialize;
use tokio::time::{interval, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::error::{ApiError, ApiResult};
use super::extract::{bearer_token, ApiQuery};
use super::AppState;

/// Time between two `stats` events.
const PERIOD: Duration = Duration::from_secs(1);

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new().route("/api/admin/stream", get(stream))
}

#[derive(Deserialize)]
struct StreamQuery {
    token: Option<String>,
}

/// The admin token from the header or the query; 401 without a valid one, 403 for a
/// user's token (as for every admin route).
fn authorize(state: &AppState, parts: &Parts, query: Option<String>) -> ApiResult<()> {
    let token = bearer_token(parts)
        .or(query)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "the admin token is required: send ?token=<admin token> or Authorization: Bearer"
                    .into(),
            )
        })?;
    if state.admin.matches(&token) {
        return Ok(());
    }
    match state.social.authenticate(&token)? {
        Some(_) => Err(ApiError::Forbidden("this needs the admin token".into())),
        None => Err(ApiError::no_token()),
    }
}

struct Ticker {
    state: AppState,
    tick: Interval,
    closing: CancellationToken,
}

async fn stream(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    parts: Parts,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    authorize(&state, &parts, q.token)?;
    let mut tick = interval(PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let closing = state.hub.closing().clone();
    let ticker = Ticker {
        state,
        tick,
        closing,
    };
    let events = futures_util::stream::unfold(ticker, |mut t| async move {
        tokio::select! {
            _ = t.closing.cancelled() => None,
            _ = t.tick.tick() => {
                let event = match super::admin::stats_snapshot(&t.state) {
                    Ok(stats) => Event::default().event("stats").data(stats.to_string()),
                    Err(e) => Event::default().event("error").data(
                        serde_json::json!({"code": e.code(), "message": e.to_string()}).to_string(),
                    ),
                };
                Some((Ok(event), t))
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
