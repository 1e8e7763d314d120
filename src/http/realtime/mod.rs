//! Realtime endpoints: the native websocket `GET /ws`, Socket.IO's
//! `/socket.io/` (Engine.IO v4 over the websocket transport, and over
//! long-polling with the upgrade to websocket: [`polling`]), and
//! `POST /api/realtime/tickets`, the one-use tickets browsers open them with.
//!
//! Three layers, each testable without a socket:
//! - [`upgrade`]: what is checked before a connection is upgraded (the `Origin`
//!   allow-list, the query, the token), so a refused client gets a plain HTTP error
//!   in the API's shape. Connection caps are enforced earlier still, when the TCP
//!   connection is accepted (`http::listener`).
//! - [`socket`]: the socket loop. It moves bytes between the socket, the
//!   connection's hub subscription and a [`Session`]; a [`socket::Reassembler`]
//!   turns frames into messages (masking, fragmentation and size rules of RFC 6455),
//!   and every write has a deadline.
//! - [`polling`]: the second transport driver of Socket.IO sessions, Engine.IO
//!   long-polling over plain HTTP requests, and the move of a session to a
//!   websocket on upgrade.
//! - [`session`] plus the two protocols [`native`] and [`socketio`]: what a
//!   connection may do (commands, rooms through [`crate::rooms`], the `since`
//!   replay in pages). They do no I/O: they turn inbound text and hub deliveries
//!   into [`Out`] actions.

pub mod backend;
pub(crate) mod native;
pub(crate) mod polling;
pub(crate) mod session;
pub(crate) mod socket;
pub(crate) mod socketio;
pub(crate) mod upgrade;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRef, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;

use super::error::ApiResult;
use super::extract::SessionOrAdmin;
use super::listener::Admission;
use super::AppState;
use crate::config::Limits;
use crate::domain::Ticket;
use crate::hub::{Delivery, Hub, Subscription};

pub use backend::{Backend, Local};
pub use polling::PollingSessions;

/// Everything the realtime endpoints use, whichever node serves them: the
/// primary builds it over its store ([`Local`]), an edge over its primary.
#[derive(Clone)]
pub struct RealtimeState {
    /// Where tokens, tickets, replays and room checks are answered.
    pub backend: Arc<dyn Backend>,
    /// This node's hub.
    pub hub: Hub,
    /// The node's limits (message sizes, budgets, heartbeats, deadlines).
    pub limits: Arc<Limits>,
    /// Origins allowed to open connections (empty: any).
    pub allowed_origins: Arc<Vec<String>>,
    /// The connection caps, shared with the accept loop.
    pub admission: Arc<Admission>,
    /// Websocket and Socket.IO counters.
    pub stats: Arc<RealtimeStats>,
    /// Socket.IO sessions on the long-polling transport, by `sid`.
    pub polling: Arc<PollingSessions>,
}

impl FromRef<AppState> for RealtimeState {
    fn from_ref(state: &AppState) -> RealtimeState {
        state.live.clone()
    }
}

/// The websocket and Socket.IO endpoints, for any router whose state can give a
/// [`RealtimeState`] (the primary's and an edge's).
pub fn connection_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    RealtimeState: FromRef<S>,
{
    Router::new().route("/ws", get(native::upgrade)).route(
        "/socket.io/",
        get(socketio::upgrade)
            .post(socketio::post)
            .options(polling::preflight),
    )
}

/// Routes of this module on the primary: the connections and the tickets.
pub fn router() -> Router<AppState> {
    connection_routes::<AppState>().route("/api/realtime/tickets", post(issue_ticket))
}

/// `POST /api/realtime/tickets`: a one-use ticket for `/ws?ticket=` and Socket.IO
/// `auth: {ticket}` (with a user's token), or for `/api/admin/stream?ticket=` (with
/// the admin token), so that browsers need not put a token in a URL.
#[utoipa::path(post, path = "/api/realtime/tickets", tag = "realtime", security(("bearer" = [])), responses((status = 200, description = "A ticket, good once within expires_in_ms", body = crate::domain::Ticket), (status = 401, description = "No valid token", body = crate::http::openapi::Error)))]
async fn issue_ticket(
    State(state): State<AppState>,
    caller: SessionOrAdmin,
) -> ApiResult<Json<Ticket>> {
    let ticket = match caller {
        SessionOrAdmin::User(session) => state.social.issue_user_ticket(&session)?,
        SessionOrAdmin::Admin => state.social.issue_admin_ticket()?,
    };
    Ok(Json(ticket))
}

/// What a session asks the socket loop to do.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    /// Send a text frame.
    Text(Bytes),
    /// Send a websocket ping (heartbeat).
    Ping,
    /// Send a close frame with this code and reason, then end.
    Close(u16, String),
}

/// Close codes used by the realtime endpoints (RFC 6455 section 7.4.1).
pub(crate) mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error: an unmasked client frame, a broken fragmented message.
    pub const PROTOCOL: u16 = 1002;
    /// Unsupported data (binary frames).
    pub const UNSUPPORTED: u16 = 1003;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// Policy violation (a bad message, a dead peer, no CONNECT in time).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later (dropped for being too slow).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What a session may reach while it handles a message.
pub(crate) struct Ctx<'a> {
    /// Authentication, notification replay, post lookups.
    pub backend: &'a dyn Backend,
    /// The hub, to create the subscription.
    pub hub: &'a Hub,
    /// The connection's subscription, once it exists.
    pub sub: &'a mut Option<Subscription>,
}

/// A realtime protocol's state machine. Implementations do no socket I/O: they
/// turn inbound text and hub deliveries into [`Out`] actions, asking the
/// [`Backend`] (which may wait on the primary) when they need data.
pub(crate) trait Session: Send {
    /// Actions right after the upgrade.
    fn start(&mut self, ctx: &mut Ctx<'_>) -> impl Future<Output = Vec<Out>> + Send;
    /// An inbound text message.
    fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) -> impl Future<Output = Vec<Out>> + Send;
    /// Whether a `since` replay is still being sent: live deliveries wait in the
    /// subscription's queue until it is over.
    fn replaying(&self) -> bool;
    /// The next page of the replay; the socket loop writes it before asking for
    /// another, so at most one page is in memory.
    fn next_page(&mut self, ctx: &mut Ctx<'_>) -> impl Future<Output = Vec<Out>> + Send;
    /// A publication for this connection; `None` to skip it (a replayed duplicate).
    fn on_delivery(&mut self, delivery: &Delivery) -> Option<Bytes>;
    /// The node may have missed notifications with ids above `after` (see
    /// [`Hub::resync`]): replay the user's stored ones above `after`, or above
    /// the last one this connection sent if higher, before further live ones.
    /// A session already replaying, or not signed in yet, has nothing to do.
    fn resync(&mut self, after: u64);
    /// A heartbeat tick: `last_seen` is when the peer last sent anything.
    fn on_tick(&mut self, now: Instant, last_seen: Instant) -> Vec<Out>;
    /// How often [`Session::on_tick`] runs.
    fn tick_every(&self) -> Duration;
}

/// Heartbeat and deadline settings of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// How long a peer may stay silent after a ping before it is dropped.
    pub ping_timeout: Duration,
    /// How long a Socket.IO connection may stay without a CONNECT packet.
    pub connect_timeout: Duration,
    /// How long one write may wait for a peer that does not read.
    pub write_timeout: Duration,
}

impl Timing {
    fn from_state(state: &RealtimeState) -> Timing {
        let l = &state.limits;
        let ms = |v: u64| Duration::from_millis(v.max(1));
        Timing {
            ping_interval: ms(l.ping_interval_ms),
            ping_timeout: ms(l.ping_timeout_ms),
            connect_timeout: ms(l.socketio_connect_timeout_ms),
            write_timeout: ms(l.ws_write_timeout_ms),
        }
    }
}

/// Counters of the realtime endpoints, shown in `/api/admin/stats` and as metrics.
#[derive(Debug, Default)]
pub struct RealtimeStats {
    /// Socket.IO connections upgraded but not yet through CONNECT.
    pub socketio_awaiting_connect: AtomicU64,
    /// Socket.IO connections closed for sending no CONNECT in time.
    pub socketio_connect_timeouts: AtomicU64,
    /// Connections dropped because a write did not complete in time.
    pub write_timeouts: AtomicU64,
    /// Socket.IO sessions on the long-polling transport now.
    pub polling_sessions: AtomicU64,
    /// GETs held by long-polling sessions now (waiting for packets).
    pub polling_held: AtomicU64,
    /// Long-polling sessions opened since start.
    pub polling_opened: AtomicU64,
    /// Long-polling sessions that moved to a websocket.
    pub polling_upgrades: AtomicU64,
    /// Long-polling sessions closed for not answering a heartbeat in time.
    pub polling_timeouts: AtomicU64,
    /// Long-polling handshakes refused by the connection caps.
    pub polling_refused: AtomicU64,
}

impl RealtimeStats {
    /// The counters as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "socketio_awaiting_connect": get(&self.socketio_awaiting_connect),
            "socketio_connect_timeouts": get(&self.socketio_connect_timeouts),
            "write_timeouts": get(&self.write_timeouts),
            "polling": {
                "sessions": get(&self.polling_sessions),
                "held_gets": get(&self.polling_held),
                "opened": get(&self.polling_opened),
                "upgrades": get(&self.polling_upgrades),
                "timeouts": get(&self.polling_timeouts),
                "refused": get(&self.polling_refused),
            },
        })
    }
}
