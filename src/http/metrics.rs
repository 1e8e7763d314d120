//! `GET /metrics`: the Prometheus text exposition of every metric in
//! [`crate::telemetry::METRICS`].
//!
//! Most metrics are recorded where things happen. Counters kept as plain atomics on
//! hot paths (the store writer's, the hub's) and values read from state (queue
//! depth, disk size) are brought up to date here, just before rendering.
//!
//! [`track`] counts and times every HTTP request by route template (`/api/posts/{id}`,
//! never the concrete path, so the number of series stays fixed), method and status.

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// Routes of this module.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics_text))
}

/// Prometheus text exposition of every metric.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses(
        (status = 200, description = "The metrics", body = String, content_type = "text/plain"),
    )
)]
async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    metrics::gauge!("likewise_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!("likewise_uptime_seconds").set(state.started.elapsed().as_secs_f64());

    let store = state.social.store();
    let w = store.writer_stats();
    metrics::counter!("likewise_store_transactions_total").absolute(load(&w.transactions));
    metrics::counter!("likewise_store_changes_total").absolute(load(&w.changes));
    metrics::counter!("likewise_store_flushes_total").absolute(load(&w.flushes));
    metrics::counter!("likewise_store_key_writes_total").absolute(load(&w.key_writes));
    metrics::counter!("likewise_store_failures_total").absolute(load(&w.storage_failures));
    metrics::counter!("likewise_store_recoveries_total").absolute(load(&w.recoveries));
    let degraded = !matches!(store.health(), crate::store::Health::Ok);
    metrics::gauge!("likewise_store_degraded").set(if degraded { 1.0 } else { 0.0 });
    metrics::gauge!("likewise_store_size_on_disk_bytes").set(store.size_on_disk() as f64);
    metrics::gauge!("likewise_store_cache_capacity_bytes").set(store.cache_bytes() as f64);

    if let Ok(q) = state.queue.queue_stats() {
        for (task_state, n) in &q.depth {
            metrics::gauge!("likewise_queue_depth", "state" => *task_state).set(*n as f64);
        }
    }
    let p = state.queue.stats();
    metrics::gauge!("likewise_workers_busy").set(load(&p.busy) as f64);
    metrics::gauge!("likewise_workers").set(state.queue.workers() as f64);

    let h = state.hub.stats();
    metrics::counter!("likewise_hub_published_total").absolute(load(&h.published));
    metrics::counter!("likewise_hub_delivered_total").absolute(load(&h.delivered));
    metrics::counter!("likewise_hub_dropped_slow_total").absolute(load(&h.dropped_slow));

    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

/// Middleware: counts and times each request by route template, method and status.
/// Requests that match no route share the route label `unmatched`.
pub async fn track(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(
        "likewise_http_request_duration_seconds",
        "route" => route.clone(),
        "method" => method.clone(),
    )
    .record(started.elapsed().as_secs_f64());
    metrics::counter!(
        "likewise_http_requests_total",
        "route" => route,
        "method" => method,
        "status" => status,
    )
    .increment(1);
    response
}
