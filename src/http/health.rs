//! `GET /healthz`.
//!
//! `/healthz` answers 200 `{"status":"ok"}` while the store takes writes and 503
//! `{"status":"degraded","reason":...}` while it is failing (a full disk, an I/O
//! error) and recovering, so that a load balancer or an operator sees it.
//!
//! With a cluster bus, a node whose Redis is unreachable answers 200
//! `{"status":"degraded","reason":...}`: it still serves everything for its own
//! clients, and since Redis being down affects every node at once, a 503 would
//! make a load balancer take the whole cluster out of service. A failing store
//! takes precedence (503).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use crate::store::Health;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(healthz))
}

/// Whether the store takes writes, and whether the cluster bus is connected.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses(
        (status = 200, description = "ok, or degraded with the reason while the cluster bus cannot reach Redis", body = super::openapi::Health),
        (status = 503, description = "degraded, with the reason", body = super::openapi::Health),
    )
)]
async fn healthz(State(state): State<AppState>) -> Response {
    match state.social.store().health() {
        Health::Ok => match state.cluster.as_ref().and_then(|bus| bus.degraded()) {
            None => Json(json!({"status": "ok"})).into_response(),
            Some(reason) => Json(json!({"status": "degraded", "reason": reason})).into_response(),
        },
        Health::Degraded { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "reason": reason})),
        )
            .into_response(),
    }
}
