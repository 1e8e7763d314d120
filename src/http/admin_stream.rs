//! `GET /api/admin/stream`: the admin statistics as server-sent events, one `stats`
//! event per second carrying what `GET /api/admin/stats` answers, for the dashboard.
//!
//! Browsers' `EventSource` cannot set headers, so the stream also opens with
//! `?ticket=` (a one-use admin ticket from `POST /api/realtime/tickets`, which keeps
//! the token out of URLs) or, for existing clients, `?token=`; `Authorization:
//! Bearer` works too. The token is compared in constant time. If the statistics
//! cannot be read, the client gets an `error` event with a generic message and the
//! cause is logged. The stream ends when the server shuts down, so graceful
//! shutdown never waits on it.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::request::Parts;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::Deserialize;
use tokio::time::{interval, Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{admin_only, bearer_token, ApiQuery};
use super::AppState;
use crate::domain::Redeemed;

/// Time between two `stats` events.
const PERIOD: Duration = Duration::from_secs(1);

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// `?ticket=` (an admin ticket) or `?token=` (the admin token).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    ticket: Option<String>,
    token: Option<String>,
}

/// The admin token from the header, an admin ticket, or the admin token in the
/// query; 401 without valid credentials, 403 for a user's token or ticket (as for
/// every admin route).
fn authorize(state: &AppState, parts: &Parts, query: StreamQuery) -> ApiResult<()> {
    if let Some(token) = bearer_token(parts) {
        return admin_only(state, &token).map(drop);
    }
    if let Some(ticket) = query.ticket {
        return match state.social.redeem_ticket(&ticket)? {
            Redeemed::Admin => Ok(()),
            Redeemed::User(_) => Err(ApiError::Forbidden(
                "this needs an admin ticket: get one with the admin token".into(),
            )),
        };
    }
    let token = query.token.filter(|t| !t.is_empty()).ok_or_else(|| {
        ApiError::Unauthorized(
            "the admin token is required: send ?ticket=<admin ticket>, ?token=<admin token> \
             or Authorization: Bearer"
                .into(),
        )
    })?;
    admin_only(state, &token).map(drop)
}

/// The `error` event sent when the statistics cannot be read: the code only, the
/// cause goes to the log.
fn error_event(e: &ApiError) -> Event {
    tracing::warn!(error = %e, "admin stream: reading the statistics failed");
    Event::default().event("error").data(
        serde_json::json!({
            "code": e.code(),
            "message": "the statistics cannot be read right now; the stream goes on",
        })
        .to_string(),
    )
}

struct Ticker {
    state: AppState,
    tick: Interval,
    closing: CancellationToken,
}

/// Server-sent events: a `stats` event every second with what GET /api/admin/stats answers.
#[utoipa::path(
    get,
    path = "/api/admin/stream",
    tag = "admin",
    params(StreamQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The event stream", body = String, content_type = "text/event-stream"),
        (status = 401, description = "No admin credentials", body = super::openapi::Error),
        (status = 403, description = "A user's token or ticket", body = super::openapi::Error),
    )
)]
async fn stream(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StreamQuery>,
    parts: Parts,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    authorize(&state, &parts, q)?;
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
                    Err(e) => error_event(&e),
                };
                Some((Ok(event), t))
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_to_read_the_statistics_is_not_shown_to_the_client() {
        let cause = "sled: Corruption { at: DiskPtr(12) } in /var/lib/likewise/db";
        for e in [
            ApiError::Internal(cause.into()),
            ApiError::Unavailable(cause.into()),
        ] {
            let event = format!("{:?}", error_event(&e));
            assert!(event.contains("statistics cannot be read"), "{event}");
            assert!(!event.contains("sled"), "{event}");
            assert!(!event.contains("/var/lib"), "{event}");
        }
    }
}
