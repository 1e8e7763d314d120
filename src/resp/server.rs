//! Accepting RESP connections and driving each one: decode what was read, run it
//! through the [`Session`], add the deliveries waiting in the hub, write it all at
//! once, then wait for more input or the next delivery.
//!
//! A connection ends on `QUIT`, `CLIENT KILL`, end of stream, a protocol error (answered
//! first), the cross-protocol guard, the `AUTH` deadline or throttle, the hub
//! dropping it as too slow, or shutdown.
//! At shutdown the listener stops accepting and waits for its connections, which
//! all watch the same token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::connection::Connection;
use super::frame::Reply;
use super::session::{Context, Flow, RespLimits, Session};
use crate::hub::{Closed, Delivery, Hub};

/// Replies and deliveries gathered before they are written: a backlog of
/// deliveries is moved from the hub's queue (where it counts against the
/// subscriber's byte budget) to the socket in slices of about this size, never
/// all at once.
const MAX_BATCH_OUTPUT: usize = 64 * 1024;

/// A bound RESP listener, not yet accepting.
pub struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
    ctx: Arc<Context>,
    max_clients: usize,
}

impl Listener {
    /// Binds `addr` (port 0 picks a free port).
    pub async fn bind(
        addr: SocketAddr,
        hub: Hub,
        password: Option<String>,
        limits: RespLimits,
    ) -> std::io::Result<Listener> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let max_clients = limits.max_clients;
        let ctx = Context::new(hub, password, limits, addr);
        Ok(Listener {
            listener,
            addr,
            ctx: Arc::new(ctx),
            max_clients,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts until `shutdown`, then waits for every connection to end.
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.max_clients));
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let ctx = self.ctx.clone();
                        let shutdown = shutdown.clone();
                        tracker.spawn(async move {
                            let why = serve(stream, peer, ctx, &shutdown).await;
                            tracing::debug!(%peer, "RESP connection ended: {why}");
                            drop(slot);
                        });
                    }
                    Err(_) => {
                        tracing::warn!(%peer, max = self.max_clients, "refusing a RESP connection: too many clients");
                        tracker.spawn(refuse(stream));
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a RESP connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            }
        }
        drop(self.listener);
        tracker.close();
        tracker.wait().await;
    }
}

async fn refuse(mut stream: TcpStream) {
    let _ = stream
        .write_all(b"-ERR max number of clients reached\r\n")
        .await;
}

enum Event {
    Shutdown,
    Killed,
    AuthDeadline,
    Delivery(Option<Delivery>),
    Read(std::io::Result<usize>),
}

/// Drives one connection; returns why it ended.
async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    shutdown: &CancellationToken,
) -> &'static str {
    let auth_timeout = ctx.limits.auth_timeout;
    let mut auth_deadline = tokio::time::Instant::now() + auth_timeout;
    let local = stream.local_addr().unwrap_or(ctx.addr);
    let fd = raw_fd(&stream);
    let mut conn = Connection::new(stream);
    let mut session = Session::new(ctx).with_addrs(peer, local, fd);
    // Its own handle: waiting on it must not borrow the session being driven.
    let entry = session.entry().clone();
    let mut was_authenticated = session.authenticated();
    loop {
        let mut close: Option<&'static str> = None;
        loop {
            match conn.next_request(&session.request_limits()) {
                Ok(Some(args)) => {
                    if session.handle(args, conn.output()) == Flow::Close {
                        close = Some("closed by a command or a guard");
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    session.protocol_error(&e.to_string(), conn.output());
                    close = Some("protocol error");
                    break;
                }
            }
        }
        if close.is_none() {
            while conn.pending_output() < MAX_BATCH_OUTPUT {
                let Some(d) = session.try_recv() else { break };
                session.deliver(&d, conn.output());
            }
        }
        match conn.try_flush() {
            Ok(true) => {}
            Ok(false) => {
                // The client is not reading: wait for it, but not past a shutdown or
                // the hub dropping this subscriber.
                let written = tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => return "server shutting down",
                    _ = entry.killed() => return "closed by CLIENT KILL",
                    _ = session.ended() => return "dropped by the hub (too slow or shutting down)",
                    r = conn.flush() => r,
                };
                if written.is_err() {
                    return "write failed";
                }
            }
            Err(_) => return "write failed",
        }
        if let Some(why) = close {
            return why;
        }
        let waiting_for_auth = !session.authenticated();
        if waiting_for_auth && was_authenticated {
            // `RESET` made it a stranger again: a fresh deadline from now.
            auth_deadline = tokio::time::Instant::now() + auth_timeout;
        }
        was_authenticated = !waiting_for_auth;
        let event = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Event::Shutdown,
            _ = entry.killed() => Event::Killed,
            _ = tokio::time::sleep_until(auth_deadline), if waiting_for_auth => Event::AuthDeadline,
            d = session.recv() => Event::Delivery(d),
            r = conn.read() => Event::Read(r),
        };
        match event {
            Event::Shutdown => return "server shutting down",
            Event::Killed => return "closed by CLIENT KILL",
            Event::AuthDeadline => {
                Reply::new(conn.output(), session.proto()).error("ERR authentication timed out");
                // Best effort: a peer that does not read gets no more time.
                let _ = conn.try_flush();
                return "not authenticated in time";
            }
            Event::Delivery(Some(d)) => session.deliver(&d, conn.output()),
            Event::Delivery(None) => {
                return match session.closed() {
                    Some(Closed::TooSlow) => "dropped as too slow",
                    _ => "server shutting down",
                }
            }
            Event::Read(Ok(0)) => return "end of stream",
            Event::Read(Ok(_)) => {}
            Event::Read(Err(_)) => return "read failed",
        }
    }
}

/// The socket's descriptor, which `CLIENT LIST` shows as `fd`.
#[cfg(unix)]
fn raw_fd(stream: &TcpStream) -> i64 {
    use std::os::fd::AsRawFd;
    i64::from(stream.as_raw_fd())
}

/// No descriptor to show on this platform.
#[cfg(not(unix))]
fn raw_fd(_: &TcpStream) -> i64 {
    -1
}
