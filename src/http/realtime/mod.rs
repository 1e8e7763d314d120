//! Realtime endpoints: the native websocket `GET /ws` and Socket.IO's
//! `GET /socket.io/` (Engine.IO v4 over the websocket transport).
//!
//! Authentication and the `Origin` allow-list are checked BEFORE the upgrade, so a
//! refused client gets a plain 401/403 in the API's error shape. After the upgrade,
//! one task per connection runs [`run_socket`]: it owns the write half and moves
//! bytes between the socket, the connection's hub [`Subscription`] and a protocol
//! [`Session`] (the state machines in [`native`] and [`socketio`], which do no I/O).
//! A second task reads frames (fastwebsockets' `read_frame` is not cancel-safe, so
//! it is never raced in a `select!`), reassembles fragmented messages under the
//! size limit, and forwards them.

pub(crate) mod native;
pub(crate) mod socketio;

use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use fastwebsockets::upgrade::{IncomingUpgrade, UpgradeFut};
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::extract::bearer_token;
use super::AppState;
use crate::domain::{Social, User};
use crate::hub::{Closed, Delivery, Hub, Subscription};

/// Routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ws", get(native::upgrade))
        .route("/socket.io/", get(socketio::upgrade))
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

/// Close codes used by the sessions.
pub(crate) mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Server going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Unsupported data (binary frames).
    pub const UNSUPPORTED: u16 = 1003;
    /// Policy violation (a bad message, a dead peer).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Try again later (dropped for being too slow).
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What a session may reach while it handles a message.
pub(crate) struct Ctx<'a> {
    /// The social operations (authentication, notification replay, post lookups).
    pub social: &'a Social,
    /// The hub, to create the subscription.
    pub hub: &'a Hub,
    /// The connection's subscription, once it exists.
    pub sub: &'a mut Option<Subscription>,
}

/// A realtime protocol's state machine. Implementations do no I/O: they turn
/// inbound text and hub deliveries into [`Out`] actions.
pub(crate) trait Session: Send {
    /// Actions right after the upgrade.
    fn start(&mut self, ctx: &mut Ctx<'_>) -> Vec<Out>;
    /// An inbound text message.
    fn on_text(&mut self, ctx: &mut Ctx<'_>, text: &str) -> Vec<Out>;
    /// A publication for this connection; `None` to skip it (a replayed duplicate).
    fn on_delivery(&mut self, delivery: &Delivery) -> Option<Bytes>;
    /// A heartbeat tick: `last_seen` is when the peer last sent anything.
    fn on_tick(&mut self, now: Instant, last_seen: Instant) -> Vec<Out>;
    /// How often [`Session::on_tick`] runs.
    fn tick_every(&self) -> Duration;
}

/// Heartbeat and size settings of a connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Interval between server pings.
    pub ping_interval: Duration,
    /// How long a peer may stay silent after a ping before it is dropped.
    pub ping_timeout: Duration,
}

impl Timing {
    fn from_state(state: &AppState) -> Timing {
        let l = &state.settings.limits;
        Timing {
            ping_interval: Duration::from_millis(l.ping_interval_ms.max(1)),
            ping_timeout: Duration::from_millis(l.ping_timeout_ms.max(1)),
        }
    }
}

/// `?token=` (and, for resuming, `?since=`) of an upgrade request.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct UpgradeQuery {
    /// Bearer token, for clients that cannot set headers.
    pub token: Option<String>,
    /// Resume after this notification id.
    pub since: Option<u64>,
    /// Engine.IO protocol version (Socket.IO only).
    #[serde(rename = "EIO")]
    pub eio: Option<String>,
    /// Engine.IO transport (Socket.IO only).
    pub transport: Option<String>,
}

/// Refuses an upgrade whose `Origin` is not on the allow-list (when one is set).
fn check_origin(parts: &Parts, state: &AppState) -> Result<(), ApiError> {
    let allowed = &state.settings.allowed_origins;
    if allowed.is_empty() {
        return Ok(());
    }
    let origin = parts
        .headers
        .get(axum::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    match origin {
        // Non-browser clients send no Origin; the token still has to be valid.
        None => Ok(()),
        Some(o) if allowed.iter().any(|a| a == o) => Ok(()),
        Some(o) => Err(ApiError::Forbidden(format!(
            "origin {o:?} is not allowed to open a websocket here"
        ))),
    }
}

/// The user behind the request's token (header or `?token=`); `Ok(None)` without one.
pub(crate) fn token_user(
    parts: &Parts,
    query: &UpgradeQuery,
    social: &Social,
) -> Result<Option<User>, ApiError> {
    let token = bearer_token(parts).or_else(|| query.token.clone());
    match token {
        None => Ok(None),
        Some(t) => match social.authenticate(&t)? {
            Some(user) => Ok(Some(user)),
            None => Err(ApiError::no_token()),
        },
    }
}

/// Extracts the query of an upgrade request in the API's error shape.
fn upgrade_query(parts: &Parts) -> Result<UpgradeQuery, ApiError> {
    Query::<UpgradeQuery>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// What both endpoints check before anything else: the `Origin` allow-list, then
/// the query string.
pub(crate) fn preflight(parts: &Parts, state: &AppState) -> Result<UpgradeQuery, ApiError> {
    check_origin(parts, state)?;
    upgrade_query(parts)
}

/// Accepts the upgrade and spawns the connection; the 101 response goes back. A
/// request that is not a websocket upgrade gets a 400 in the API's error shape.
pub(crate) async fn accept(
    mut parts: Parts,
    state: &AppState,
    session: impl Session + 'static,
) -> Response {
    let upgrade =
        <IncomingUpgrade as FromRequestParts<AppState>>::from_request_parts(&mut parts, state)
            .await;
    let Ok(upgrade) = upgrade else {
        return ApiError::BadRequest(
            "expected a websocket upgrade (Upgrade: websocket, Sec-WebSocket-Version: 13)".into(),
        )
        .into_response();
    };
    let (response, fut) = match upgrade.upgrade() {
        Ok(pair) => pair,
        Err(e) => return ApiError::BadRequest(e.to_string()).into_response(),
    };
    let social = state.social.clone();
    let hub = state.hub.clone();
    let max = state.settings.limits.max_ws_message_bytes;
    tokio::spawn(async move {
        if let Err(e) = run_upgraded(fut, social, hub, session, max).await {
            tracing::debug!(error = %e, "websocket ended with an error");
        }
    });
    response.into_response()
}

async fn run_upgraded(
    fut: UpgradeFut,
    social: Social,
    hub: Hub,
    session: impl Session,
    max: usize,
) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    run_socket(ws, social, hub, session, max).await
}

/// What the reader task forwards.
enum Inbound {
    /// A whole text message.
    Text(String),
    /// A whole binary message.
    Binary,
    /// A frame fastwebsockets obliges us to send (pong, close reply).
    Obligated(OpCode, Vec<u8>),
    /// A ping or pong: the peer is alive.
    Alive,
    /// The peer sent a close frame.
    Closed,
    /// A message over the size limit.
    TooLarge,
    /// A protocol or I/O error.
    Failed(String),
}

/// Reads frames, reassembles fragmented messages up to `max` bytes, forwards them.
async fn read_loop<S>(
    mut rx: fastwebsockets::WebSocketRead<S>,
    tx: mpsc::Sender<Inbound>,
    max: usize,
) where
    S: AsyncRead + Unpin,
{
    let mut partial: Option<(OpCode, Vec<u8>)> = None;
    loop {
        let ctl = tx.clone();
        let mut obligated = move |f: Frame<'_>| {
            let ctl = ctl.clone();
            let msg = Inbound::Obligated(f.opcode, f.payload.to_vec());
            async move { ctl.send(msg).await.map_err(|_| "the session has ended") }
        };
        let frame = match rx.read_frame(&mut obligated).await {
            Ok(f) => f,
            Err(WebSocketError::FrameTooLarge) => {
                let _ = tx.send(Inbound::TooLarge).await;
                return;
            }
            Err(WebSocketError::ConnectionClosed | WebSocketError::UnexpectedEOF) => {
                let _ = tx.send(Inbound::Closed).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Inbound::Failed(e.to_string())).await;
                return;
            }
        };
        let whole = match frame.opcode {
            OpCode::Close => {
                let _ = tx.send(Inbound::Closed).await;
                return;
            }
            OpCode::Ping | OpCode::Pong => {
                if tx.send(Inbound::Alive).await.is_err() {
                    return;
                }
                continue;
            }
            OpCode::Text | OpCode::Binary if frame.fin => {
                if partial.is_some() {
                    let _ = tx
                        .send(Inbound::Failed(
                            "a new message began inside a fragmented one".into(),
                        ))
                        .await;
                    return;
                }
                Some((frame.opcode, frame.payload.to_vec()))
            }
            OpCode::Text | OpCode::Binary => {
                partial = Some((frame.opcode, frame.payload.to_vec()));
                None
            }
            OpCode::Continuation => match partial.as_mut() {
                None => {
                    let _ = tx
                        .send(Inbound::Failed(
                            "a continuation frame without a start".into(),
                        ))
                        .await;
                    return;
                }
                Some((_, buf)) => {
                    if buf.len() + frame.payload.len() > max {
                        let _ = tx.send(Inbound::TooLarge).await;
                        return;
                    }
                    buf.extend_from_slice(&frame.payload);
                    if frame.fin {
                        partial.take()
                    } else {
                        None
                    }
                }
            },
        };
        if let Some((op, bytes)) = whole {
            let msg = if op == OpCode::Binary {
                Inbound::Binary
            } else {
                match String::from_utf8(bytes) {
                    Ok(text) => Inbound::Text(text),
                    Err(_) => Inbound::Failed("a text message is not valid UTF-8".into()),
                }
            };
            let failed = matches!(msg, Inbound::Failed(_));
            if tx.send(msg).await.is_err() || failed {
                return;
            }
        } else if partial.as_ref().is_some_and(|(_, b)| b.len() > max) {
            let _ = tx.send(Inbound::TooLarge).await;
            return;
        }
    }
}

async fn next_delivery(sub: &mut Option<Subscription>) -> Option<Delivery> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// Drives one connection until either side closes.
pub(crate) async fn run_socket<S>(
    ws: WebSocket<S>,
    social: Social,
    hub: Hub,
    mut session: impl Session,
    max: usize,
) -> Result<(), WebSocketError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut rx, mut writer) = ws.split(tokio::io::split);
    rx.set_max_message_size(max.saturating_add(1));
    let (in_tx, mut inbound) = mpsc::channel(8);
    let reader = tokio::spawn(read_loop(rx, in_tx, max));
    let mut sub: Option<Subscription> = None;
    let mut last_seen = Instant::now();
    let mut tick = tokio::time::interval(session.tick_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let closing = hub.closing().clone();

    let first = {
        let mut ctx = Ctx {
            social: &social,
            hub: &hub,
            sub: &mut sub,
        };
        session.start(&mut ctx)
    };
    let mut done = perform(&mut writer, first).await?;
    while !done {
        let actions = tokio::select! {
            msg = inbound.recv() => {
                last_seen = Instant::now();
                match msg {
                    Some(Inbound::Text(text)) => {
                        let mut ctx = Ctx { social: &social, hub: &hub, sub: &mut sub };
                        session.on_text(&mut ctx, &text)
                    }
                    Some(Inbound::Binary) => vec![Out::Close(
                        close::UNSUPPORTED,
                        "binary messages are not supported".into(),
                    )],
                    Some(Inbound::Obligated(op, payload)) => {
                        writer.write_frame(Frame::new(true, op, None, Payload::Owned(payload))).await?;
                        if op == OpCode::Close {
                            break;
                        }
                        Vec::new()
                    }
                    Some(Inbound::Alive) => Vec::new(),
                    Some(Inbound::TooLarge) => vec![Out::Close(
                        close::TOO_BIG,
                        format!("messages are limited to {max} bytes"),
                    )],
                    Some(Inbound::Failed(why)) => vec![Out::Close(close::POLICY, why)],
                    Some(Inbound::Closed) | None => break,
                }
            }
            delivery = next_delivery(&mut sub) => match delivery {
                Some(d) => {
                    let mut out = Vec::new();
                    out.extend(session.on_delivery(&d).map(Out::Text));
                    // Drain what is already queued so a burst costs few wakeups.
                    if let Some(s) = sub.as_mut() {
                        for _ in 0..64 {
                            let Some(d) = s.try_recv() else { break };
                            out.extend(session.on_delivery(&d).map(Out::Text));
                        }
                    }
                    out
                }
                None => {
                    let why = sub.as_ref().and_then(Subscription::closed);
                    vec![match why {
                        Some(Closed::TooSlow) => Out::Close(
                            close::TRY_AGAIN_LATER,
                            "too slow: the outbound queue overflowed".into(),
                        ),
                        _ => Out::Close(close::GOING_AWAY, "the server is shutting down".into()),
                    }]
                }
            },
            _ = closing.cancelled(), if sub.is_none() => {
                vec![Out::Close(close::GOING_AWAY, "the server is shutting down".into())]
            }
            now = tick.tick() => session.on_tick(now.into_std(), last_seen),
        };
        done = perform(&mut writer, actions).await?;
    }
    reader.abort();
    drop(sub);
    Ok(())
}

/// Writes the actions; `true` once a close was sent.
async fn perform<W>(
    writer: &mut fastwebsockets::WebSocketWrite<W>,
    actions: Vec<Out>,
) -> Result<bool, WebSocketError>
where
    W: AsyncWrite + Unpin,
{
    for action in actions {
        match action {
            Out::Text(bytes) => {
                writer
                    .write_frame(Frame::text(Payload::Borrowed(&bytes)))
                    .await?
            }
            Out::Ping => {
                writer
                    .write_frame(Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b"")))
                    .await?
            }
            Out::Close(code, reason) => {
                let reason = truncate_reason(&reason);
                let _ = writer
                    .write_frame(Frame::close(code, reason.as_bytes()))
                    .await;
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// A close reason must fit the 123 bytes a control frame leaves for it.
fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= 123 {
        return reason;
    }
    let mut end = 123;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Subscribes a newly authenticated connection to the rooms it is always in: its
/// user's own room and the broadcast room.
pub(crate) fn subscribe_user(ctx: &mut Ctx<'_>, transport: crate::hub::Transport, user: u64) {
    let sub = ctx.hub.subscribe(transport);
    sub.join(&format!("user:{user}"));
    sub.join(crate::hub::BROADCAST_ROOM);
    *ctx.sub = Some(sub);
}

/// Whether a live delivery still has to be sent: a notification the replay already
/// sent (id up to `replayed_up_to`) is skipped.
pub(crate) fn not_replayed(d: &Delivery, replayed_up_to: u64) -> bool {
    d.publication
        .notification_id()
        .is_none_or(|id| id > replayed_up_to)
}

/// Replays the user's notifications newer than `since`, oldest first, as frames
/// rendered by `render`; returns the frames and the highest id replayed.
pub(crate) fn replay(
    social: &Social,
    user: u64,
    since: u64,
    render: impl Fn(&crate::domain::Notification) -> Bytes,
) -> (Vec<Out>, u64) {
    const PAGE: usize = 500;
    let mut out = Vec::new();
    let mut last = since;
    loop {
        let page = match social.notifications_since(user, last, PAGE) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "replaying notifications failed");
                out.push(Out::Close(
                    close::TRY_AGAIN_LATER,
                    "could not read stored notifications; reconnect".into(),
                ));
                return (out, last);
            }
        };
        let n = page.len();
        for notification in &page {
            out.push(Out::Text(render(notification)));
            last = last.max(notification.id);
        }
        if n < PAGE {
            return (out, last);
        }
    }
}
