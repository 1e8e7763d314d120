//! `likewise edge`: a node that owns no data. It holds clients' realtime
//! connections and forwards the API to the primary.
//!
//! The primary (`likewise serve`) owns the store, the queue and the workers; an edge
//! adds capacity for connections in front of it. This module owns the edge's
//! settings ([`EdgeSettings`], its own small config file), its listener and its
//! routes; [`proxy`] owns the forwarding, [`primary`] the questions the edge's
//! connections ask the primary. It never opens a store or decides anything about
//! users: every answer about data comes from the primary.
//!
//! What an edge serves:
//! - `/api/…`, and the pages `/`, `/dashboard` and `/assets/…`, are forwarded to
//!   the primary by a streaming reverse proxy (see [`proxy`]). The pages come from
//!   the primary too, so they name the primary's demo accounts and asset version
//!   even while nodes of two releases run side by side during an upgrade.
//! - `/ws` and `/socket.io/` (websocket and long-polling), with the same contract
//!   as on the primary: the very same endpoint code
//!   ([`crate::http::realtime::connection_routes`]) runs here over this edge's own
//!   hub, which the cluster bus ([`crate::cluster`]) fills with every event of
//!   every node. Tokens, tickets, `since` replays, post rooms and presence choices
//!   are asked of the primary ([`primary`]), tokens cached for `auth_cache_ms`.
//!   This needs `[cluster] redis` and the primary's `admin_token`; an edge
//!   started with neither forwards the API only and answers these paths 503.
//! - `/healthz` is answered by the edge itself (`{"status":"ok","role":"edge"}`,
//!   or 200 `degraded` while the bus cannot reach Redis): a load balancer asks
//!   whether this node takes connections, and an edge whose primary is down still
//!   does (its `/api/` answers are 503 until it is back, and open sockets stay).
//! - `/metrics`: the edge's own Prometheus metrics (connections, bus, hub).
//!   Everything else is 404 in the API's error shape.
//!
//! The listener is the primary's ([`crate::http::listener`]): the same connection
//! caps, per-address cap and header deadline, from the edge's `[limits]`, which
//! also bound its realtime connections as they do on the primary.
//!
//! For the primary to count each client under its own address (the sign-in and
//! registration throttles), it must list the edges in `[limits] trusted_proxies`;
//! the edge appends the address of each client to `X-Forwarded-For`.

pub mod primary;
pub mod proxy;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::uri::Authority;
use axum::http::{Request, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::cluster::{Bus, ClusterSettings};
use crate::config::{ConfigError, Limits};
use crate::http::error::ApiError;
use crate::http::listener;
use crate::http::realtime::{connection_routes, RealtimeState};
use crate::hub::{Hub, OutputLimits};
use crate::resp::bridge::Bounds;
use primary::Primary;
use proxy::Proxy;

/// Default `[edge] connect_timeout_ms`: connecting to the primary on a LAN takes
/// far less; past this the primary is taken to be down.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Default `[edge] answer_timeout_ms`: the longest the primary may take to start
/// its answer (a sign-in hashes a password; a `sync` write waits for a flush).
pub const DEFAULT_ANSWER_TIMEOUT_MS: u64 = 30_000;
/// Default `[edge] pool_idle_ms`: an idle pooled connection is closed before the
/// primary's own idle limit (`http_header_timeout_ms`, 10 s by default) would
/// close it under a request.
pub const DEFAULT_POOL_IDLE_MS: u64 = 5_000;
/// Default `[edge] pool_max_idle`: idle connections kept open to the primary.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
/// Default `[edge] auth_cache_ms`: how long the primary's answers about a token,
/// a post's room or a user's presence choice are kept; a revoked token stops
/// opening connections on an edge within this window.
pub const DEFAULT_AUTH_CACHE_MS: u64 = 5_000;
/// Default `[edge] lookup_timeout_ms`: the longest a connection waits for one
/// answer of the primary (a token check, a replay page).
pub const DEFAULT_LOOKUP_TIMEOUT_MS: u64 = 5_000;

/// Everything an edge needs to start, fully resolved.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Listen address of the edge's HTTP listener.
    pub http: SocketAddr,
    /// The primary's `host:port` (plain HTTP, on a private network).
    pub primary: Authority,
    /// Deadline for opening a connection to the primary, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Deadline for the primary's answer to begin (status and headers), in
    /// milliseconds; the body then streams for as long as it takes.
    pub answer_timeout_ms: u64,
    /// Idle pooled connections to the primary are closed after this, in milliseconds.
    pub pool_idle_ms: u64,
    /// Most idle pooled connections to the primary.
    pub pool_max_idle: usize,
    /// How long the primary's answers about tokens, post rooms and presence
    /// choices are kept, in milliseconds (0: not at all).
    pub auth_cache_ms: u64,
    /// Deadline of each question to the primary, in milliseconds.
    pub lookup_timeout_ms: u64,
    /// The primary's admin token, which the edge asks the primary with; needed
    /// (with `cluster.redis`) to serve realtime connections.
    pub admin_token: Option<String>,
    /// Origins allowed to open websockets and long-polling sessions here (empty:
    /// any), as the primary's `allowed_origins`.
    pub allowed_origins: Vec<String>,
    /// `[cluster]`: the bus that brings every node's events to this edge.
    pub cluster: ClusterSettings,
    /// The listener's limits (`max_body_bytes`, `max_connections`,
    /// `max_connections_per_ip`, `http_header_timeout_ms`, `trusted_proxies`)
    /// and those of its realtime connections (message sizes, output budgets,
    /// heartbeats); the store's limits are the primary's business.
    pub limits: Limits,
}

impl EdgeSettings {
    /// Defaults with the listener on port 0 of loopback, forwarding to `primary`.
    pub fn for_tests(primary: SocketAddr) -> EdgeSettings {
        EdgeSettings {
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            primary: primary
                .to_string()
                .parse()
                .expect("a socket address is an authority"),
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            answer_timeout_ms: DEFAULT_ANSWER_TIMEOUT_MS,
            pool_idle_ms: DEFAULT_POOL_IDLE_MS,
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
            auth_cache_ms: DEFAULT_AUTH_CACHE_MS,
            lookup_timeout_ms: DEFAULT_LOOKUP_TIMEOUT_MS,
            admin_token: None,
            allowed_origins: Vec::new(),
            cluster: ClusterSettings::default(),
            limits: Limits::default(),
        }
    }

    /// Whether this edge serves `/ws` and `/socket.io/`: it needs the bus and the
    /// admin token.
    pub fn serves_connections(&self) -> bool {
        self.cluster.redis.is_some() && self.admin_token.is_some()
    }

    /// The primary's base URL, as logged.
    pub fn primary_url(&self) -> String {
        format!("http://{}", self.primary)
    }

    /// Checks the values the edge uses; the edge refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout_ms < 10
            || self.answer_timeout_ms < 10
            || self.pool_idle_ms < 10
            || self.lookup_timeout_ms < 10
        {
            return Err(ConfigError::Invalid(
                "edge: connect_timeout_ms, answer_timeout_ms, pool_idle_ms and \
                 lookup_timeout_ms must be at least 10"
                    .into(),
            ));
        }
        if self.cluster.redis.is_some() != self.admin_token.is_some() {
            return Err(ConfigError::Invalid(
                "an edge serving connections needs both [cluster] redis (or \
                 LIKEWISE_CLUSTER_REDIS) and the primary's admin_token (or \
                 LIKEWISE_ADMIN_TOKEN); set both, or neither for an edge that only \
                 forwards the API"
                    .into(),
            ));
        }
        self.cluster
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("cluster: {e}")))?;
        let l = &self.limits;
        if l.max_body_bytes < 1024 || l.http_header_timeout_ms < 10 {
            return Err(ConfigError::Invalid(
                "limits: max_body_bytes must be at least 1024 and http_header_timeout_ms at \
                 least 10"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The deadline for connecting to the primary.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// The deadline for the primary's answer to begin.
    pub fn answer_timeout(&self) -> Duration {
        Duration::from_millis(self.answer_timeout_ms)
    }
}

/// The edge's config file: `http`, `admin_token`, `allowed_origins`, `[edge]`,
/// `[cluster]` and `[limits]`, every field optional.
///
/// ```toml
/// http = "0.0.0.0:8080"
/// admin_token = "the primary's admin token"
/// [edge]
/// primary = "http://10.0.0.1:8080"
/// [cluster]
/// redis = "redis://10.0.0.5:6379/0"
/// [limits]
/// max_connections_per_ip = 200
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFile {
    http: Option<String>,
    admin_token: Option<String>,
    allowed_origins: Option<Vec<String>>,
    #[serde(default)]
    edge: EdgeSection,
    #[serde(default)]
    cluster: ClusterSettings,
    limits: Option<Limits>,
}

/// `[edge]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeSection {
    primary: Option<String>,
    connect_timeout_ms: Option<u64>,
    answer_timeout_ms: Option<u64>,
    pool_idle_ms: Option<u64>,
    pool_max_idle: Option<usize>,
    auth_cache_ms: Option<u64>,
    lookup_timeout_ms: Option<u64>,
}

impl EdgeFile {
    /// Reads and parses an edge config file.
    pub fn load(path: &Path) -> Result<EdgeFile, ConfigError> {
        crate::config::load_toml(path)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<EdgeFile, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Values from flags or the environment (clap merges the two, flags first).
#[derive(Debug, Default, Clone)]
pub struct EdgeOverrides {
    /// `--primary` / `LIKEWISE_PRIMARY`.
    pub primary: Option<String>,
    /// `--http` / `LIKEWISE_HTTP`.
    pub http: Option<String>,
    /// `LIKEWISE_ADMIN_TOKEN`: the primary's admin token.
    pub admin_token: Option<String>,
    /// `LIKEWISE_CLUSTER_REDIS`: the bus's Redis URL.
    pub cluster_redis: Option<String>,
}

/// The primary's `host:port` from a URL such as `http://10.0.0.1:8080`.
pub fn parse_primary(url: &str) -> Result<Authority, ConfigError> {
    let bad = |why: &str| {
        ConfigError::Invalid(format!(
            "primary must be a URL like http://10.0.0.1:8080 ({why}), not {url:?}"
        ))
    };
    let uri: Uri = url.trim().parse().map_err(|_| bad("not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("only plain http is supported between nodes")),
        None => return Err(bad("no scheme")),
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad("no path or query"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| bad("no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("no user or password"));
    }
    Ok(authority)
}

/// Builds the edge's settings: overrides beat the file, which beats the defaults.
pub fn resolve(file: EdgeFile, over: EdgeOverrides) -> Result<EdgeSettings, ConfigError> {
    let nonempty = |s: Option<String>| s.filter(|v| !v.trim().is_empty());
    let e = file.edge;
    let primary = nonempty(over.primary).or(e.primary).ok_or_else(|| {
        ConfigError::Invalid(
            "the edge needs its primary: --primary http://HOST:PORT, LIKEWISE_PRIMARY or \
                 [edge] primary in the config file"
                .into(),
        )
    })?;
    let http = match nonempty(over.http).or(file.http) {
        Some(v) => v.trim().parse().map_err(|_| {
            ConfigError::Invalid(format!(
                "http must be an address like 127.0.0.1:8080, not {v:?}"
            ))
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let settings = EdgeSettings {
        http,
        primary: parse_primary(&primary)?,
        connect_timeout_ms: e.connect_timeout_ms.unwrap_or(DEFAULT_CONNECT_TIMEOUT_MS),
        answer_timeout_ms: e.answer_timeout_ms.unwrap_or(DEFAULT_ANSWER_TIMEOUT_MS),
        pool_idle_ms: e.pool_idle_ms.unwrap_or(DEFAULT_POOL_IDLE_MS),
        pool_max_idle: e.pool_max_idle.unwrap_or(DEFAULT_POOL_MAX_IDLE),
        auth_cache_ms: e.auth_cache_ms.unwrap_or(DEFAULT_AUTH_CACHE_MS),
        lookup_timeout_ms: e.lookup_timeout_ms.unwrap_or(DEFAULT_LOOKUP_TIMEOUT_MS),
        admin_token: nonempty(over.admin_token).or(nonempty(file.admin_token)),
        allowed_origins: file.allowed_origins.unwrap_or_default(),
        cluster: ClusterSettings {
            redis: nonempty(over.cluster_redis).or(nonempty(file.cluster.redis)),
            ..file.cluster
        },
        limits: file.limits.unwrap_or_default(),
    };
    settings.validate()?;
    Ok(settings)
}

/// A bound edge, ready to run.
pub struct Edge {
    listener: TcpListener,
    addr: SocketAddr,
    settings: EdgeSettings,
    node: Option<Node>,
}

/// What an edge serving connections holds besides its proxy.
struct Node {
    hub: Hub,
    bus: Bus,
    primary: Arc<Primary>,
}

impl Edge {
    /// Binds the listener and logs `listening http=ADDR`. Nothing is asked of the
    /// primary nor of Redis: an edge starts (and answers 503 to the API) while its
    /// primary is down, and connects to the bus in the background.
    pub async fn build(settings: EdgeSettings) -> anyhow::Result<Edge> {
        settings.validate()?;
        let node = match (&settings.admin_token, settings.cluster.redis.is_some()) {
            (Some(token), true) => {
                let hub = Hub::with_limits(OutputLimits::from(&settings.limits));
                let bus = Bus::new(
                    &settings.cluster,
                    hub.clone(),
                    Bounds {
                        max_rooms: settings.limits.resp_bridge_max_rooms,
                        max_room_bytes: settings.limits.resp_max_channel_bytes,
                    },
                )?;
                let primary = Primary::new(
                    settings.primary_url(),
                    token.clone(),
                    Duration::from_millis(settings.auth_cache_ms),
                    settings.connect_timeout(),
                    Duration::from_millis(settings.lookup_timeout_ms),
                )?;
                Some(Node {
                    hub,
                    bus,
                    primary: Arc::new(primary),
                })
            }
            _ => None,
        };
        let listener = TcpListener::bind(settings.http)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", settings.http))?;
        let addr = listener.local_addr()?;
        tracing::info!(
            primary = %settings.primary_url(),
            connections = node.is_some(),
            "listening http={addr}"
        );
        Ok(Edge {
            listener,
            addr,
            settings,
            node,
        })
    }

    /// The address the edge listens on (the real port when bound to port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.addr
    }

    /// This edge's hub, when it serves connections (for embedding and tests).
    pub fn hub(&self) -> Option<&Hub> {
        self.node.as_ref().map(|n| &n.hub)
    }

    /// This edge's cluster bus, when it serves connections.
    pub fn bus(&self) -> Option<&Bus> {
        self.node.as_ref().map(|n| &n.bus)
    }

    /// Serves until `shutdown`, then closes the realtime connections (with a
    /// close frame) and lets open exchanges finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stats = Arc::<listener::ConnectionStats>::default();
        let admission = listener::admission(&self.settings.limits, stats.clone());
        let bus_tasks = TaskTracker::new();
        let live = self.node.map(|node| {
            let hub = node.hub.clone();
            let closing = shutdown.clone();
            tokio::spawn(async move {
                closing.cancelled().await;
                hub.close();
            });
            // Every notification reaches this edge through the bus: when the bus
            // may have lost some, its clients replay them from the primary.
            node.bus.resync_after_gaps();
            node.bus.start(shutdown.clone(), &bus_tasks);
            let live = RealtimeState {
                backend: node.primary,
                hub: node.hub,
                limits: Arc::new(self.settings.limits.clone()),
                allowed_origins: Arc::new(self.settings.allowed_origins.clone()),
                admission: admission.clone(),
                stats: Arc::default(),
                polling: Arc::default(),
            };
            (live, node.bus)
        });
        bus_tasks.close();
        let app = router(Arc::new(Proxy::new(&self.settings)), live);
        listener::serve(
            self.listener,
            app,
            &self.settings.limits,
            admission,
            stats,
            shutdown,
        )
        .await;
        bus_tasks.wait().await;
        tracing::info!("edge stopped");
        Ok(())
    }
}

/// What the edge's own routes read.
#[derive(Clone)]
struct EdgeState {
    proxy: Arc<Proxy>,
    bus: Option<Bus>,
    hub: Option<Hub>,
    started: Instant,
}

/// The edge's routes: the realtime endpoints over `live` (this edge's hub and
/// bus) when it serves connections, its own `/healthz` and `/metrics`, and the
/// proxy to the primary for the rest.
pub fn router(proxy: Arc<Proxy>, live: Option<(RealtimeState, Bus)>) -> Router {
    let state = EdgeState {
        proxy,
        bus: live.as_ref().map(|(_, bus)| bus.clone()),
        hub: live.as_ref().map(|(l, _)| l.hub.clone()),
        started: Instant::now(),
    };
    let own = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .fallback(dispatch)
        .with_state(state);
    let app = match live {
        Some((live, _)) => own.merge(connection_routes::<RealtimeState>().with_state(live)),
        None => own,
    };
    app.layer(CatchPanicLayer::custom(|_| {
        ApiError::Internal("handler panicked".into()).into_response()
    }))
    .layer(TraceLayer::new_for_http().make_span_with(request_span))
}

/// The span of a request: method and path, never the query (it may carry a token).
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

/// 200 `ok`, or 200 `degraded` with the reason while the bus cannot reach Redis
/// (every edge would be degraded at once: a 503 would empty the load balancer).
async fn healthz(State(state): State<EdgeState>) -> Response {
    match state.bus.as_ref().and_then(Bus::degraded) {
        None => Json(serde_json::json!({"status": "ok", "role": "edge"})).into_response(),
        Some(reason) => Json(serde_json::json!({
            "status": "degraded",
            "role": "edge",
            "reason": reason,
        }))
        .into_response(),
    }
}

/// The edge's Prometheus metrics: its listener, realtime connections, hub and bus.
async fn metrics_text(State(state): State<EdgeState>) -> Response {
    use std::sync::atomic::Ordering;
    metrics::gauge!("likewise_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    metrics::gauge!("likewise_uptime_seconds").set(state.started.elapsed().as_secs_f64());
    if let Some(hub) = &state.hub {
        let h = hub.stats();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        metrics::counter!("likewise_hub_published_total").absolute(load(&h.published));
        metrics::counter!("likewise_hub_delivered_total").absolute(load(&h.delivered));
        metrics::counter!("likewise_hub_dropped_slow_total").absolute(load(&h.dropped_slow));
    }
    let body = crate::telemetry::metrics_handle().render();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// Where a path goes on an edge (when nothing else matched it).
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// To the primary.
    Forward,
    /// A realtime endpoint, on an edge that serves no connections.
    Realtime,
    /// Nowhere.
    Unknown,
}

fn route_of(path: &str) -> Route {
    let under = |prefix: &str| {
        path.strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    if under("/ws") || under("/socket.io") {
        Route::Realtime
    } else if under("/api") || path == "/" || path == "/dashboard" || under("/assets") {
        Route::Forward
    } else {
        Route::Unknown
    }
}

async fn dispatch(
    State(state): State<EdgeState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    match route_of(req.uri().path()) {
        Route::Forward => match state.proxy.forward(peer.ip(), req).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        },
        Route::Realtime => ApiError::Unavailable(
            "this edge forwards the API only (it has no [cluster] redis and admin_token): \
             open websockets and Socket.IO on the primary or on an edge that serves them"
                .into(),
        )
        .into_response(),
        Route::Unknown => ApiError::NotFound("no such route".into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_routed_by_whole_segments() {
        assert_eq!(route_of("/api/sessions"), Route::Forward);
        assert_eq!(route_of("/api"), Route::Forward);
        assert_eq!(route_of("/"), Route::Forward);
        assert_eq!(route_of("/assets/abc/app.js"), Route::Forward);
        assert_eq!(route_of("/ws"), Route::Realtime);
        assert_eq!(route_of("/socket.io/"), Route::Realtime);
        assert_eq!(route_of("/apix"), Route::Unknown);
        assert_eq!(route_of("/wsx"), Route::Unknown);
        assert_eq!(route_of("/metrics"), Route::Unknown);
    }

    #[test]
    fn the_primary_must_be_a_plain_http_base_url() {
        assert_eq!(
            parse_primary("http://10.0.0.1:8080").unwrap().as_str(),
            "10.0.0.1:8080"
        );
        assert_eq!(
            parse_primary("http://primary.lan/").unwrap().as_str(),
            "primary.lan"
        );
        for bad in [
            "10.0.0.1:8080",
            "https://10.0.0.1",
            "http://10.0.0.1/api",
            "http://u:p@10.0.0.1",
            "http://",
            "",
        ] {
            assert!(parse_primary(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn flags_beat_the_file_and_the_primary_is_required() {
        let file = EdgeFile::parse(
            r#"
            http = "127.0.0.1:9000"
            [edge]
            primary = "http://10.0.0.1:8080"
            answer_timeout_ms = 500
            [limits]
            max_connections_per_ip = 7
            trusted_proxies = ["10.0.0.0/8"]
            "#,
        )
        .unwrap();
        let s = resolve(
            file,
            EdgeOverrides {
                primary: Some("http://10.0.0.2:8080".into()),
                ..EdgeOverrides::default()
            },
        )
        .unwrap();
        assert_eq!(s.primary.as_str(), "10.0.0.2:8080");
        assert_eq!(s.http.port(), 9000);
        assert_eq!(s.answer_timeout_ms, 500);
        assert_eq!(s.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
        assert_eq!(s.limits.max_connections_per_ip, 7);
        let err = resolve(EdgeFile::default(), EdgeOverrides::default()).unwrap_err();
        assert!(err.to_string().contains("--primary"), "{err}");
        assert!(EdgeFile::parse("[edge]\nprimry = \"http://x\"").is_err());
        let zero =
            EdgeFile::parse("[edge]\nprimary = \"http://x:1\"\nconnect_timeout_ms = 0").unwrap();
        assert!(resolve(zero, EdgeOverrides::default()).is_err());
    }
}
