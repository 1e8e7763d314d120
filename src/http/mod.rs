//! The HTTP transport: one axum router per feature, merged here, over one
//! [`AppState`]. Handlers are thin: parse, call the domain or the queue, render.
//! The demo page and the dashboard are served from files embedded in the binary.
//! Errors use the API's JSON shape everywhere, including unknown routes, wrong
//! methods, bodies over the limit and panics. Connections reach the router through
//! [`listener`], which enforces the connection caps and the header deadline. The
//! request log names the path only: no token, ticket or password reaches it.
//!
//! Every route is documented where it is registered (`utoipa_axum::routes!` over
//! handlers carrying `#[utoipa::path]`); [`openapi()`] is the document that
//! `GET /api/openapi.json` serves.

mod admin;
mod admin_stream;
mod assets;
pub mod cluster;
pub mod error;
pub mod extract;
mod health;
pub mod listener;
mod messages;
mod metrics;
mod notifications;
mod openapi;
mod posts;
mod presence;
pub mod realtime;
mod tasks;
mod users;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Settings;
use crate::domain::{AdminToken, Social};
use crate::hub::Hub;
use crate::queue::WorkerPool;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The social operations.
    pub social: Social,
    /// The task queue's worker pool.
    pub queue: WorkerPool,
    /// Realtime fan-out.
    pub hub: Hub,
    /// The admin token.
    pub admin: AdminToken,
    /// Resolved settings.
    pub settings: Arc<Settings>,
    /// Prometheus exporter.
    pub metrics: PrometheusHandle,
    /// When the server started.
    pub started: std::time::Instant,
    /// HTTP connection counters (caps, refusals, header timeouts).
    pub connections: Arc<listener::ConnectionStats>,
    /// The connection caps, shared by the accept loop and long-polling sessions.
    pub admission: Arc<listener::Admission>,
    /// Websocket and Socket.IO counters.
    pub realtime: Arc<realtime::RealtimeStats>,
    /// Socket.IO sessions on the long-polling transport, by `sid`.
    pub polling: Arc<realtime::PollingSessions>,
    /// The demo accounts a visitor can sign in with (empty without `--demo`).
    pub demo_accounts: Arc<Vec<crate::demo::DemoUser>>,
    /// The cluster bus, when `[cluster] redis` is set.
    pub cluster: Option<crate::cluster::Bus>,
    /// What the websocket and Socket.IO endpoints use (the same hub, caps and
    /// counters as above, and the store as their backend).
    pub live: realtime::RealtimeState,
}

/// Routes being assembled: a feature's router is merged whether it documents its
/// routes (an [`OpenApiRouter`]) or not (a plain axum router, whose routes must then
/// be listed in [`openapi::ApiDoc`]; the OpenAPI test names any that is not).
struct Routes(OpenApiRouter<AppState>);

impl Routes {
    fn merge(self, router: impl Into<OpenApiRouter<AppState>>) -> Self {
        Routes(self.0.merge(router.into()))
    }
}

/// Every route, with its document entry.
fn routes() -> OpenApiRouter<AppState> {
    Routes(OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()))
        .merge(health::router())
        .merge(metrics::router())
        .merge(users::router())
        .merge(posts::router())
        .merge(messages::router())
        .merge(notifications::router())
        .merge(tasks::router())
        .merge(admin::router())
        .merge(realtime::router())
        .merge(presence::router())
        .merge(cluster::router())
        .merge(admin_stream::router())
        .merge(assets::router())
        .merge(openapi::router())
        .0
}

/// The OpenAPI 3.1 document of every HTTP route, as `GET /api/openapi.json`
/// serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let (_, mut api) = routes().split_for_parts();
    openapi::finish(&mut api);
    api
}

/// The whole HTTP application.
pub fn router(state: AppState) -> Router {
    let max_body = state.settings.limits.max_body_bytes;
    let (routes, _) = routes().split_for_parts();
    routes
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed("this route does not accept that method".into())
        })
        .layer(axum::middleware::from_fn(metrics::track))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            axum::response::IntoResponse::into_response(ApiError::Internal(
                "handler panicked".into(),
            ))
        }))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(state)
}

/// The span of a request: its method and path, never the query string, which may
/// carry a token (`?token=`) or a ticket (`?ticket=`) that must not reach the log.
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    tracing::debug_span!(
        "request",
        method = %req.method(),
        path = %req.uri().path(),
    )
}
