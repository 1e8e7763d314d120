//! `GET /healthz` and `GET /metrics` (Prometheus text).
//!
//! `/healthz` answers 200 `{"status":"ok"}` while the store takes writes and 503
//! `{"status":"degraded","reason":...}` while it is failing (a full disk, an I/O
//! error) and recovering, so that a load balancer or an operator sees it.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::AppState;
use crate::store::Health;

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
}

async fn healthz(State(state): State<AppState>) -> Response {
    match state.social.store().health() {
        Health::Ok => Json(json!({"status": "ok"})).into_response(),
        Health::Degraded { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "degraded", "reason": reason})),
        )
            .into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let w = state.social.store().writer_stats();
    metrics::gauge!("likewise_store_transactions")
        .set(w.transactions.load(Ordering::Relaxed) as f64);
    metrics::gauge!("likewise_store_flushes").set(w.flushes.load(Ordering::Relaxed) as f64);
    metrics::counter!("likewise_store_flushes_total").absolute(w.flushes.load(Ordering::Relaxed));
    metrics::counter!("likewise_store_key_writes_total")
        .absolute(w.key_writes.load(Ordering::Relaxed));
    metrics::gauge!("likewise_store_changes").set(w.changes.load(Ordering::Relaxed) as f64);
    metrics::gauge!("likewise_store_max_batch").set(w.max_batch.load(Ordering::Relaxed) as f64);
    metrics::counter!("likewise_store_failures_total")
        .absolute(w.storage_failures.load(Ordering::Relaxed));
    metrics::counter!("likewise_store_recoveries_total")
        .absolute(w.recoveries.load(Ordering::Relaxed));
    let degraded = !matches!(state.social.store().health(), Health::Ok);
    metrics::gauge!("likewise_store_degraded").set(if degraded { 1.0 } else { 0.0 });
    metrics::gauge!("likewise_store_size_on_disk_bytes")
        .set(state.social.store().size_on_disk() as f64);
    metrics::gauge!("likewise_store_cache_capacity_bytes")
        .set(state.social.store().cache_bytes() as f64);
    if let Ok(q) = state.queue.queue_stats() {
        for (task_state, n) in &q.depth {
            metrics::gauge!("likewise_queue_depth", "state" => *task_state).set(*n as f64);
        }
    }
    let p = state.queue.stats();
    metrics::gauge!("likewise_workers_busy").set(p.busy.load(Ordering::Relaxed) as f64);
    metrics::gauge!("likewise_workers").set(state.queue.workers() as f64);
    // Hub counters are plain atomics on the publish path; exported here.
    let h = state.hub.stats();
    metrics::gauge!("likewise_hub_published").set(h.published.load(Ordering::Relaxed) as f64);
    metrics::gauge!("likewise_hub_delivered").set(h.delivered.load(Ordering::Relaxed) as f64);
    metrics::gauge!("likewise_hub_dropped_slow").set(h.dropped_slow.load(Ordering::Relaxed) as f64);
    let body = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}
