//! `likewise edge`: a node that owns no data and forwards the API to the primary.
//!
//! The primary (`likewise serve`) owns the store, the queue and the workers; an edge
//! adds capacity for connections in front of it. This module owns the edge's
//! settings ([`EdgeSettings`], its own small config file), its listener and its
//! routes; [`proxy`] owns the forwarding itself. It must never open a store or
//! decide anything about users: every answer about data comes from the primary.
//!
//! What an edge serves:
//! - `/api/…`, and the pages `/`, `/dashboard` and `/assets/…`, are forwarded to
//!   the primary by a streaming reverse proxy (see [`proxy`]). The pages come from
//!   the primary too, so they name the primary's demo accounts and asset version
//!   even while nodes of two releases run side by side during an upgrade.
//! - `/healthz` is answered by the edge itself (`{"status":"ok","role":"edge"}`):
//!   a load balancer asks whether this node takes connections, and an edge whose
//!   primary is down still does (its `/api/` answers are 503 until it is back).
//! - `/ws` and `/socket.io/` answer 503 `unavailable` ("not served by this edge
//!   yet"): serving them needs the cluster bus (events published on the primary
//!   must reach this node) and token checks through the primary, which are not
//!   part of the edge yet. Everything else is 404 in the API's error shape.
//!
//! The listener is the primary's ([`crate::http::listener`]): the same connection
//! caps, per-address cap and header deadline, from the edge's `[limits]`.
//!
//! For the primary to count each client under its own address (the sign-in and
//! registration throttles), it must list the edges in `[limits] trusted_proxies`;
//! the edge appends the address of each client to `X-Forwarded-For`.
//!
//! Not here yet, and needed before an edge can stand in for the primary's
//! realtime side: `/ws` and `/socket.io/` on the edge (hub events from the cluster
//! bus, tokens and tickets checked through the primary with a short cache, `since`
//! replay read from the primary), presence across nodes, the edge's own
//! `/metrics`, and a `[cluster]` section in the edge's config file. Long-polling
//! sessions on the primary still count the connection's peer against
//! `max_connections_per_ip`, not the forwarded client: nothing forwards them yet.

pub mod proxy;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::config::{ConfigError, Limits};
use crate::http::error::ApiError;
use crate::http::listener;
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
    /// The listener's limits (`max_body_bytes`, `max_connections`,
    /// `max_connections_per_ip`, `http_header_timeout_ms`, `trusted_proxies`);
    /// the rest of `[limits]` is the primary's business.
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
            limits: Limits::default(),
        }
    }

    /// The primary's base URL, as logged.
    pub fn primary_url(&self) -> String {
        format!("http://{}", self.primary)
    }

    /// Checks the values the edge uses; the edge refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.connect_timeout_ms < 10 || self.answer_timeout_ms < 10 || self.pool_idle_ms < 10 {
            return Err(ConfigError::Invalid(
                "edge: connect_timeout_ms, answer_timeout_ms and pool_idle_ms must be at least 10"
                    .into(),
            ));
        }
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

/// The edge's config file: `http`, `[edge]` and `[limits]`, every field optional.
///
/// ```toml
/// http = "0.0.0.0:8080"
/// [edge]
/// primary = "http://10.0.0.1:8080"
/// [limits]
/// max_connections_per_ip = 200
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFile {
    http: Option<String>,
    #[serde(default)]
    edge: EdgeSection,
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
}

impl EdgeFile {
    /// Reads and parses an edge config file.
    pub fn load(path: &Path) -> Result<EdgeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
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
}

impl Edge {
    /// Binds the listener and logs `listening http=ADDR`. Nothing is asked of the
    /// primary: an edge starts (and answers 503) while its primary is down.
    pub async fn build(settings: EdgeSettings) -> anyhow::Result<Edge> {
        settings.validate()?;
        let listener = TcpListener::bind(settings.http)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", settings.http))?;
        let addr = listener.local_addr()?;
        tracing::info!(primary = %settings.primary_url(), "listening http={addr}");
        Ok(Edge {
            listener,
            addr,
            settings,
        })
    }

    /// The address the edge listens on (the real port when bound to port 0).
    pub fn http_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown`, then lets open exchanges finish.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stats = Arc::<listener::ConnectionStats>::default();
        let admission = listener::admission(&self.settings.limits, stats.clone());
        let app = router(Arc::new(Proxy::new(&self.settings)));
        listener::serve(
            self.listener,
            app,
            &self.settings.limits,
            admission,
            stats,
            shutdown,
        )
        .await;
        tracing::info!("edge stopped");
        Ok(())
    }
}

/// The edge's routes over a proxy to the primary.
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .fallback(dispatch)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .with_state(proxy)
}

/// The span of a request: method and path, never the query (it may carry a token).
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok", "role": "edge"})).into_response()
}

/// Where a path goes on an edge.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// To the primary.
    Forward,
    /// A realtime endpoint this edge does not serve yet.
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
    State(proxy): State<Arc<Proxy>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request<Body>,
) -> Response {
    match route_of(req.uri().path()) {
        Route::Forward => match proxy.forward(peer.ip(), req).await {
            Ok(response) => response,
            Err(e) => e.into_response(),
        },
        Route::Realtime => ApiError::Unavailable(
            "websockets and Socket.IO are not served by this edge yet; connect to the primary"
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
                http: None,
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
