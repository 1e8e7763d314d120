//! The HTTP accept loop: connection caps, header deadline, graceful drain.
//!
//! Every TCP connection is admitted by [`Admission`] before hyper sees it: at most
//! `max_connections` in all (by default derived from the open-file limit, so the
//! process never runs out of descriptors) and at most `max_connections_per_ip`
//! from one address. A connection over a cap is answered `503` in the API's error
//! shape (websocket upgrades included: they are refused before any upgrade) and
//! closed; that answer is written by a small, bounded set of tasks, so a flood
//! costs little. Refusals are counted per reason in the stats and the metric
//! `likewise_http_connections_refused_total{reason}`.
//!
//! hyper's HTTP/1 header-read timeout is armed (it needs a timer, which
//! `axum::serve` does not set): a client must send a whole request head within
//! `http_header_timeout_ms` of connecting or of its previous response, which
//! closes slowloris and idle keep-alive connections alike. Upgraded websockets
//! leave hyper and have their own deadlines.
//!
//! The client's address of each request is resolved here, once, from the peer and
//! (only when the peer is one of `trusted_proxies`) its `X-Forwarded-For`, and
//! handed to the handlers as [`ClientIp`]. A trusted proxy multiplexes many clients
//! over its connections, so it is exempt from the per-address cap (the global cap
//! still counts it); it enforces the per-address cap on its own listener.
//!
//! Accept errors (out of descriptors above all) back off up to one second and are
//! logged at most every ten seconds with a count, never once per failed accept.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::http::extract::{ClientIp, TrustedProxies};

/// Descriptors kept for everything but HTTP connections (the store, the RESP
/// listener, logs) when the cap is derived from the open-file limit: a tenth of
/// the limit, at least this many.
const MIN_RESERVED_FDS: u64 = 256;

/// Refusals answered at once; past this a refused connection is closed without
/// an answer.
const MAX_REFUSALS_IN_FLIGHT: usize = 256;

/// How long a refused client gets to send its request head before the 503.
const REFUSAL_READ: Duration = Duration::from_millis(500);

/// The soft open-file limit of this process, if it can be read.
pub fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and reads nothing else.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0 && lim.rlim_cur != libc::RLIM_INFINITY).then_some(lim.rlim_cur)
}

/// The global connection cap: the configured one, or (for `0`) the open-file limit
/// minus a reserve of a tenth (at least [`MIN_RESERVED_FDS`]).
pub fn max_connections(configured: usize, fd_limit: Option<u64>) -> usize {
    if configured > 0 {
        return configured;
    }
    let limit = fd_limit.unwrap_or(1024);
    let reserve = (limit / 10).max(MIN_RESERVED_FDS);
    limit.saturating_sub(reserve).max(16) as usize
}

/// Connection counters, shown in `/api/admin/stats`.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Open HTTP connections (upgraded websockets stay counted until they end).
    pub open: AtomicU64,
    /// Connections refused by the global cap.
    pub refused_global: AtomicU64,
    /// Connections refused by the per-address cap.
    pub refused_per_ip: AtomicU64,
    /// Connections closed for not sending a request head in time.
    pub header_timeouts: AtomicU64,
    /// Failed `accept` calls.
    pub accept_errors: AtomicU64,
    /// The global cap in force.
    pub max_connections: AtomicU64,
    /// The per-address cap in force (0: none).
    pub max_per_ip: AtomicU64,
}

impl ConnectionStats {
    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "open": get(&self.open),
            "max_connections": get(&self.max_connections),
            "max_connections_per_ip": get(&self.max_per_ip),
            "refused": {
                "global": get(&self.refused_global),
                "per_ip": get(&self.refused_per_ip),
            },
            "header_timeouts": get(&self.header_timeouts),
            "accept_errors": get(&self.accept_errors),
        })
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The global cap is reached.
    Global,
    /// The per-address cap is reached for this address.
    PerIp,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Global => "global",
            Refusal::PerIp => "per_ip",
        }
    }
}

/// Counts open connections against the caps; no I/O.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    per_ip: usize,
    state: Mutex<AdmissionState>,
    stats: Arc<ConnectionStats>,
}

#[derive(Debug, Default)]
struct AdmissionState {
    open: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// An admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    ip: IpAddr,
}

/// IPv4 clients of a dual-stack listener arrive as IPv4-mapped IPv6 addresses;
/// they are the same client.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Admission {
    /// Caps of `max` connections in all and `per_ip` per address (0: none).
    pub fn new(max: usize, per_ip: usize, stats: Arc<ConnectionStats>) -> Arc<Admission> {
        stats.max_connections.store(max as u64, Ordering::Relaxed);
        stats.max_per_ip.store(per_ip as u64, Ordering::Relaxed);
        Arc::new(Admission {
            max,
            per_ip,
            state: Mutex::default(),
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AdmissionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `ip`, or says which cap refuses it (and counts it).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        self.admit_capped(ip, true)
    }

    /// Admits a connection from a trusted proxy: under the global cap only, since
    /// it carries many clients (each one counted by the proxy's own caps).
    pub fn admit_proxy(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        self.admit_capped(ip, false)
    }

    fn admit_capped(self: &Arc<Self>, ip: IpAddr, per_ip_cap: bool) -> Result<Permit, Refusal> {
        let ip = canonical(ip);
        let refusal = {
            let mut state = self.lock();
            let from_ip = state.by_ip.get(&ip).copied().unwrap_or(0);
            if state.open >= self.max {
                Some(Refusal::Global)
            } else if per_ip_cap && self.per_ip > 0 && from_ip >= self.per_ip {
                Some(Refusal::PerIp)
            } else {
                state.open += 1;
                *state.by_ip.entry(ip).or_default() += 1;
                None
            }
        };
        if let Some(r) = refusal {
            let counter = match r {
                Refusal::Global => &self.stats.refused_global,
                Refusal::PerIp => &self.stats.refused_per_ip,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("likewise_http_connections_refused_total", "reason" => r.reason())
                .increment(1);
            return Err(r);
        }
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("likewise_http_connections").increment(1.0);
        Ok(Permit {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let a = &self.admission;
        {
            let mut state = a.lock();
            state.open = state.open.saturating_sub(1);
            if let Some(n) = state.by_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    state.by_ip.remove(&self.ip);
                }
            }
        }
        a.stats.open.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("likewise_http_connections").decrement(1.0);
    }
}

/// The answer to a connection over a cap.
fn refusal_response(r: Refusal) -> Vec<u8> {
    let message = match r {
        Refusal::Global => "the server has reached its connection limit; retry later",
        Refusal::PerIp => "too many connections from your address; close some and retry",
    };
    let body =
        serde_json::json!({"error": {"code": "unavailable", "message": message}}).to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads what the refused client sent (so that closing does not reset the
/// connection before it reads the answer), answers 503, closes.
async fn refuse(mut tcp: TcpStream, r: Refusal) {
    let mut buf = [0u8; 2048];
    let deadline = tokio::time::Instant::now() + REFUSAL_READ;
    let mut seen: Vec<u8> = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(4).any(|w| w == b"\r\n\r\n") || seen.len() > 16 * 1024 {
            break;
        }
    }
    let answer = refusal_response(r);
    let _ = tokio::time::timeout(REFUSAL_READ, async {
        tcp.write_all(&answer).await?;
        tcp.shutdown().await
    })
    .await;
}

/// Rate-limited logging of accept errors.
struct AcceptErrors {
    last_log: Option<Instant>,
    suppressed: u64,
    backoff: Duration,
}

impl AcceptErrors {
    const LOG_EVERY: Duration = Duration::from_secs(10);
    const MAX_BACKOFF: Duration = Duration::from_secs(1);

    /// Records a failure; returns how long to wait before accepting again.
    fn failed(&mut self, e: &std::io::Error) -> Duration {
        let now = Instant::now();
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Self::LOG_EVERY)
        {
            tracing::warn!(
                error = %e,
                since_last_log = self.suppressed,
                "accepting HTTP connections fails; backing off"
            );
            self.last_log = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(5), Self::MAX_BACKOFF);
        self.backoff
    }

    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

/// The admission of the configured caps (see [`max_connections`]), counting into
/// `stats`; shared by the accept loop and the long-polling sessions, which hold
/// a place under the same caps.
pub fn admission(limits: &Limits, stats: Arc<ConnectionStats>) -> Arc<Admission> {
    let max = max_connections(limits.max_connections, open_file_limit());
    tracing::info!(
        max_connections = max,
        max_connections_per_ip = limits.max_connections_per_ip,
        "HTTP connection caps"
    );
    Admission::new(max, limits.max_connections_per_ip, stats)
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting and waits for
/// open HTTP exchanges to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    admission: Arc<Admission>,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
) {
    let rules = Arc::new(ConnectionRules {
        header_timeout: Duration::from_millis(limits.http_header_timeout_ms.max(1)),
        trusted: limits.trusted_proxies.clone(),
    });
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let tracker = TaskTracker::new();
    let mut errors = AcceptErrors {
        last_log: None,
        suppressed: 0,
        backoff: Duration::ZERO,
    };
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => {
                errors.succeeded();
                pair
            }
            Err(e) => {
                stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_http_accept_errors_total").increment(1);
                let wait = errors.failed(&e);
                tokio::select! {
                    () = tokio::time::sleep(wait) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let admitted = if rules.trusted.contains(peer.ip()) {
            admission.admit_proxy(peer.ip())
        } else {
            admission.admit(peer.ip())
        };
        let permit = match admitted {
            Ok(p) => p,
            Err(r) => {
                tracing::debug!(%peer, reason = r.reason(), "refusing a connection over the cap");
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(tcp, r).await;
                        drop(slot);
                    });
                }
                continue;
            }
        };
        // Small frames (websocket events) must leave at once: with Nagle's
        // algorithm a second event waits for the peer's delayed ACK of the first.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        tracker.spawn(serve_connection(
            tcp,
            peer,
            app.clone(),
            rules.clone(),
            permit,
            stats.clone(),
            shutdown.clone(),
        ));
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

/// What every connection of one listener is held to.
struct ConnectionRules {
    /// The deadline for a request head.
    header_timeout: Duration,
    /// Peers whose `X-Forwarded-For` is believed.
    trusted: TrustedProxies,
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    app: Router,
    rules: Arc<ConnectionRules>,
    permit: Permit,
    stats: Arc<ConnectionStats>,
    shutdown: CancellationToken,
) {
    // Handlers read the peer as axum's `ConnectInfo` and the client it speaks for
    // as `ClientIp` (the sign-in and registration throttles count per client).
    let header_timeout = rules.header_timeout;
    let app = tower::ServiceExt::map_request(
        app,
        move |mut req: hyper::Request<hyper::body::Incoming>| {
            let client = rules.trusted.client_ip(peer.ip(), req.headers());
            let extensions = req.extensions_mut();
            extensions.insert(axum::extract::ConnectInfo(peer));
            extensions.insert(ClientIp(client));
            req
        },
    );
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let io = Counted {
        tcp,
        _permit: permit,
    };
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.as_mut().await
        }
    };
    if let Err(e) = result {
        if e.is_timeout() {
            stats.header_timeouts.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("likewise_http_header_timeouts_total").increment(1);
            tracing::debug!(%peer, "closed a connection that sent no request head in time");
        } else {
            tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
        }
    }
}

/// A connection's socket with its place under the caps: an upgraded websocket
/// takes the socket, and with it the place, until it ends.
struct Counted {
    tcp: TcpStream,
    _permit: Permit,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_global_cap_comes_from_the_open_file_limit() {
        assert_eq!(max_connections(500, Some(20_000)), 500);
        assert_eq!(max_connections(0, Some(20_000)), 18_000);
        assert_eq!(max_connections(0, Some(1024)), 768);
        assert_eq!(max_connections(0, Some(100)), 16);
    }

    #[test]
    fn caps_refuse_past_their_limit_and_free_places_on_drop() {
        let stats = Arc::new(ConnectionStats::default());
        let a = Admission::new(3, 2, stats.clone());
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let p1 = a.admit(one).unwrap();
        let _p2 = a.admit(mapped).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::PerIp);
        let _p3 = a.admit(two).unwrap();
        assert_eq!(a.admit(two).unwrap_err(), Refusal::Global);
        drop(p1);
        let _p4 = a.admit(two).unwrap();
        assert_eq!(stats.refused_per_ip.load(Ordering::Relaxed), 1);
        assert_eq!(stats.refused_global.load(Ordering::Relaxed), 1);
        assert_eq!(stats.open.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_trusted_proxy_is_held_to_the_global_cap_only() {
        let a = Admission::new(3, 1, Arc::default());
        let edge: IpAddr = "10.0.0.9".parse().unwrap();
        let _p1 = a.admit_proxy(edge).unwrap();
        let _p2 = a.admit_proxy(edge).unwrap();
        assert_eq!(a.admit(edge).unwrap_err(), Refusal::PerIp);
        let _p3 = a.admit_proxy(edge).unwrap();
        assert_eq!(a.admit_proxy(edge).unwrap_err(), Refusal::Global);
    }

    #[test]
    fn no_per_address_cap_when_it_is_zero() {
        let a = Admission::new(10, 0, Arc::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let permits: Vec<_> = (0..10).map(|_| a.admit(ip).unwrap()).collect();
        assert_eq!(a.admit(ip).unwrap_err(), Refusal::Global);
        drop(permits);
    }

    #[test]
    fn accept_errors_back_off_and_reset() {
        let mut e = AcceptErrors {
            last_log: None,
            suppressed: 0,
            backoff: Duration::ZERO,
        };
        let err = std::io::Error::from_raw_os_error(libc::EMFILE);
        let mut waits: Vec<Duration> = (0..12).map(|_| e.failed(&err)).collect();
        assert_eq!(waits[0], Duration::from_millis(5));
        assert_eq!(waits.pop(), Some(AcceptErrors::MAX_BACKOFF));
        assert_eq!(e.suppressed, 11, "one log line for the whole burst");
        e.succeeded();
        assert_eq!(e.failed(&err), Duration::from_millis(5));
    }

    #[test]
    fn the_refusal_is_a_complete_http_answer() {
        let r = String::from_utf8(refusal_response(Refusal::PerIp)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "unavailable");
    }
}
