//! Logging (tracing to stderr, filtered by `RUST_LOG`, default `info`) and the
//! process-wide Prometheus recorder, which can be installed only once per process.
//!
//! [`METRICS`] is the catalogue of every metric the server exports: name, type and
//! help text, described to the recorder when it is installed so that `/metrics`
//! carries `# HELP` and `# TYPE` for each. Names follow the Prometheus conventions:
//! counters end in `_total`, units are spelled out in the name (`_bytes`,
//! `_seconds`). Code that records a metric uses a name from this list; a test checks
//! the exposition against it, and the README and the bundled Grafana dashboard are
//! checked against it too.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Starts logging. Safe to call more than once (later calls do nothing).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A log line that cannot be written (the reader of a piped stderr went away)
        // is dropped: the fallback report of that failure would panic the thread
        // that logged, and with it whatever task it was running.
        .log_internal_errors(false)
        .try_init();
}

/// The process's Prometheus handle, installing the recorder on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("likewise_store_batch_size".into()),
                    BATCH_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full("likewise_http_request_duration_seconds".into()),
                    LATENCY_BUCKETS,
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe_all();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("likewise-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                    upkeep.run_upkeep();
                })
                .ok();
            handle
        })
        .clone()
}

/// What kind of Prometheus metric a catalogue entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only ever goes up (until the process restarts); the name ends in `_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    /// The word of the exposition's `# TYPE` line.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One exported metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Full name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// Labels it carries (possibly none).
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

const fn m(
    name: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        help,
    }
}

/// Buckets of `likewise_store_batch_size`: jobs per commit.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Buckets of `likewise_http_request_duration_seconds`: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// Every metric `/metrics` exports.
pub const METRICS: &[Metric] = &[
    m(
        "likewise_build_info",
        Kind::Gauge,
        &["version"],
        "Always 1; the version label is the running release.",
    ),
    m(
        "likewise_uptime_seconds",
        Kind::Gauge,
        &[],
        "Seconds since the server started.",
    ),
    m(
        "likewise_http_requests_total",
        Kind::Counter,
        &["route", "method", "status"],
        "HTTP requests answered, by route template, method and status code.",
    ),
    m(
        "likewise_http_request_duration_seconds",
        Kind::Histogram,
        &["route", "method"],
        "Time from a request's head to its response head, by route template and method.",
    ),
    m(
        "likewise_http_connections",
        Kind::Gauge,
        &[],
        "Open HTTP connections, upgraded websockets included.",
    ),
    m(
        "likewise_http_connections_refused_total",
        Kind::Counter,
        &["reason"],
        "HTTP connections refused with 503 over a connection cap (reason: global or per_ip).",
    ),
    m(
        "likewise_http_header_timeouts_total",
        Kind::Counter,
        &[],
        "HTTP connections closed because no complete request head arrived in time.",
    ),
    m(
        "likewise_http_accept_errors_total",
        Kind::Counter,
        &[],
        "Failed accept calls on the HTTP listener (e.g. out of file descriptors).",
    ),
    m(
        "likewise_connections",
        Kind::Gauge,
        &["transport"],
        "Realtime subscribers by transport (ws, socketio, resp).",
    ),
    m(
        "likewise_users_online",
        Kind::Gauge,
        &[],
        "Users with at least one realtime connection open (those hidden from presence included).",
    ),
    m(
        "likewise_socketio_awaiting_connect",
        Kind::Gauge,
        &[],
        "Socket.IO sockets open but not yet past their CONNECT packet.",
    ),
    m(
        "likewise_socketio_connect_timeouts_total",
        Kind::Counter,
        &[],
        "Socket.IO sockets closed for sending no CONNECT packet in time.",
    ),
    m(
        "likewise_ws_write_timeouts_total",
        Kind::Counter,
        &[],
        "Websocket and Socket.IO connections closed because a write did not finish in time.",
    ),
    m(
        "likewise_hub_published_total",
        Kind::Counter,
        &[],
        "Events published to the realtime hub.",
    ),
    m(
        "likewise_hub_delivered_total",
        Kind::Counter,
        &[],
        "Event deliveries to subscribers (one event reaching three subscribers counts three).",
    ),
    m(
        "likewise_hub_dropped_slow_total",
        Kind::Counter,
        &[],
        "Events not delivered because their subscriber was over its output budget.",
    ),
    m(
        "likewise_hub_slow_disconnects_total",
        Kind::Counter,
        &["transport"],
        "Subscribers disconnected for staying over their output budget.",
    ),
    m(
        "likewise_cluster_bus_up",
        Kind::Gauge,
        &[],
        "1 while both connections of the cluster bus to Redis are up, else 0 (absent without [cluster]).",
    ),
    m(
        "likewise_cluster_published_total",
        Kind::Counter,
        &[],
        "Publications this node sent to the other nodes through Redis.",
    ),
    m(
        "likewise_cluster_received_total",
        Kind::Counter,
        &[],
        "Publications from other nodes delivered to this node's subscribers.",
    ),
    m(
        "likewise_cluster_socketio_received_total",
        Kind::Counter,
        &[],
        "Flask-SocketIO messages read from the cluster's Redis and handled on this node.",
    ),
    m(
        "likewise_cluster_dropped_total",
        Kind::Counter,
        &["reason"],
        "Bus publications dropped (bus_down, queue_full, too_large, publish_failed, malformed, received_too_large).",
    ),
    m(
        "likewise_cluster_presence_users",
        Kind::Gauge,
        &[],
        "Users this node holds in the cluster's presence in Redis (updated at each presence heartbeat).",
    ),
    m(
        "likewise_cluster_presence_sweeps_total",
        Kind::Counter,
        &[],
        "Dead nodes (heartbeat older than presence_ttl_s) whose presence entries this node removed.",
    ),
    m(
        "likewise_store_transactions_total",
        Kind::Counter,
        &[],
        "Store commits (one commit carries a batch of changes).",
    ),
    m(
        "likewise_store_changes_total",
        Kind::Counter,
        &[],
        "Changes committed (each API write is one change).",
    ),
    m(
        "likewise_store_key_writes_total",
        Kind::Counter,
        &[],
        "Keys inserted or removed by committed changes.",
    ),
    m(
        "likewise_store_flushes_total",
        Kind::Counter,
        &[],
        "Flushes of the store to disk.",
    ),
    m(
        "likewise_store_failures_total",
        Kind::Counter,
        &[],
        "Commits or flushes the disk refused (full disk, I/O error).",
    ),
    m(
        "likewise_store_recoveries_total",
        Kind::Counter,
        &[],
        "Returns to health after a storage failure, without a restart.",
    ),
    m(
        "likewise_store_degraded",
        Kind::Gauge,
        &[],
        "1 while the store refuses writes and retries (GET /healthz answers 503), else 0.",
    ),
    m(
        "likewise_store_batch_size",
        Kind::Histogram,
        &[],
        "Changes per store commit.",
    ),
    m(
        "likewise_store_size_on_disk_bytes",
        Kind::Gauge,
        &[],
        "Bytes the data directory's database files take on disk.",
    ),
    m(
        "likewise_store_cache_capacity_bytes",
        Kind::Gauge,
        &[],
        "Capacity of the store's page cache (the cache_mb setting).",
    ),
    m(
        "likewise_queue_depth",
        Kind::Gauge,
        &["state"],
        "Tasks in the queue by state.",
    ),
    m(
        "likewise_tasks_total",
        Kind::Counter,
        &["name", "outcome"],
        "Task runs finished, by task name and outcome (success, retry, failure).",
    ),
    m(
        "likewise_workers",
        Kind::Gauge,
        &[],
        "Task workers in the pool.",
    ),
    m(
        "likewise_workers_busy",
        Kind::Gauge,
        &[],
        "Task workers running a task now.",
    ),
];

/// Describes every catalogue entry to the installed recorder.
fn describe_all() {
    for metric in METRICS {
        match metric.kind {
            Kind::Counter => metrics::describe_counter!(metric.name, metric.help),
            Kind::Gauge => metrics::describe_gauge!(metric.name, metric.help),
            Kind::Histogram => metrics::describe_histogram!(metric.name, metric.help),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_follows_the_naming_conventions() {
        let mut names = std::collections::HashSet::new();
        for metric in METRICS {
            assert!(names.insert(metric.name), "{} twice", metric.name);
            assert!(metric.name.starts_with("likewise_"), "{}", metric.name);
            assert_eq!(
                metric.kind == Kind::Counter,
                metric.name.ends_with("_total"),
                "counters and only counters end in _total: {}",
                metric.name
            );
            assert!(!metric.help.is_empty(), "{} has help", metric.name);
        }
    }
}
