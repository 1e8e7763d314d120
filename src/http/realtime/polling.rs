//! Engine.IO v4 long-polling for `/socket.io/`, and its upgrade to the websocket
//! transport, as the reference server (socket.io's `engine.io`) speaks them.
//!
//! A long-polling session is the same [`SocketIoSession`] the websocket transport
//! runs (same CONNECT auth, rooms, acks, `since` replay and limits), owned by one
//! driver task per session; HTTP requests only talk to that task through its
//! channel, so a session's state is never shared between requests:
//! - `GET ?EIO=4&transport=polling` (no `sid`) is the handshake: the session is
//!   created and the answer is its open packet (`upgrades: ["websocket"]`).
//! - `POST ...&sid=` carries client packets, separated by the record separator
//!   `\x1e`; it is answered `ok` once the session has handled them.
//! - `GET ...&sid=` is held until the session has packets for the client or the
//!   next heartbeat (a `2` ping every `pingInterval`) is due. One such GET at a
//!   time: a second one while the first is held closes the session (the first
//!   gets a close packet `1`, the second a 400), as in the reference.
//! - A websocket to `...&transport=websocket&sid=` probes (`2probe` → `3probe`),
//!   the held GET is answered with a noop `6`, and on the client's `5` the
//!   session itself — its hub subscription, rooms and replay state — moves to the
//!   websocket's socket loop ([`socket::drive`]): nothing is resubscribed.
//!
//! Hostile peers: every session holds a place under the HTTP connection caps
//! ([`Admission`]) from its handshake until it ends or upgrades; a POST body is
//! limited to `maxPayload` (the websocket message limit) before it is read; hub
//! deliveries are taken from the subscription only while a GET is waiting, so
//! they stay charged to the subscriber's byte budget (a client that stops
//! polling is dropped as too slow, or by the ping timeout, whichever comes
//! first), and what the session itself queues (acks, replay pages) is bounded by
//! the same hard limit. Every wait has a deadline. Errors of the Engine.IO layer
//! are answered with the reference's JSON, `{"code":1,"message":"Session ID
//! unknown"}`, plus a `detail` sentence where there is more to say.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

use super::socket::{self, ended_close, Inbound};
use super::socketio::SocketIoSession;
use super::upgrade::{accept_with, check_origin, token_user, UpgradeQuery};
use super::{close, Backend, Ctx, Out, RealtimeState, RealtimeStats, Session, Timing};
use crate::http::error::ApiError;
use crate::http::listener::{Permit, Refusal};
use crate::hub::{Delivery, Hub, Subscription};

/// The record separator between packets of one long-polling payload.
pub(crate) const SEPARATOR: char = '\u{1e}';

/// Most packets of hub deliveries answered to one GET (the rest wait for the
/// next GET, still charged to the subscriber's budget).
const DELIVERIES_PER_POLL: usize = 256;

/// Messages a session's driver receives from the HTTP handlers.
pub(crate) enum Msg {
    /// A GET waits for packets.
    Poll(oneshot::Sender<Polled>),
    /// A POST's packets; answered once handled (`Err` with why the session was
    /// closed for them).
    Data(Vec<String>, oneshot::Sender<Result<(), String>>),
    /// The request was refused for a reason that ends the session.
    Abort(String),
    /// A websocket probed this session: answer GETs with a noop at once.
    Probed,
    /// The probing websocket went away: polling goes on as before.
    ProbeFailed,
    /// The websocket sent `5`: hand the session over.
    Upgrade(oneshot::Sender<Handoff>),
}

/// The answer to a GET.
#[derive(Debug)]
pub(crate) enum Polled {
    /// Engine.IO packets, oldest first.
    Packets(Vec<Bytes>),
    /// Another GET was already waiting: this one is refused and the session ends.
    Overlap,
}

/// What moves to the websocket on upgrade.
pub(crate) struct Handoff {
    session: SocketIoSession,
    sub: Option<Subscription>,
    pending: Vec<Bytes>,
}

struct Entry {
    tx: mpsc::Sender<Msg>,
    upgrading: AtomicBool,
}

/// The long-polling sessions of this process, by `sid`.
#[derive(Default)]
pub struct PollingSessions {
    sessions: Mutex<HashMap<String, Arc<Entry>>>,
}

impl PollingSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, sid: &str) -> Option<Arc<Entry>> {
        self.lock().get(sid).cloned()
    }

    fn remove(&self, sid: &str) {
        self.lock().remove(sid);
    }

    /// Sessions open on the long-polling transport now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is on the long-polling transport.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An Engine.IO error answer, as the reference server sends them.
fn engine_error(status: StatusCode, code: u8, detail: Option<&str>) -> Response {
    let message = match code {
        0 => "Transport unknown",
        1 => "Session ID unknown",
        2 => "Bad handshake method",
        3 => "Bad request",
        4 => "Forbidden",
        _ => "Unsupported protocol version",
    };
    let mut body = json!({"code": code, "message": message});
    if let Some(d) = detail {
        body["detail"] = json!(d);
    }
    (status, axum::Json(body)).into_response()
}

fn unknown_sid() -> Response {
    engine_error(StatusCode::BAD_REQUEST, 1, None)
}

fn bad_request(detail: &str) -> Response {
    engine_error(StatusCode::BAD_REQUEST, 3, Some(detail))
}

/// The CORS headers of an answer to a request from an allowed `Origin`
/// (credentials included, as the reference's `cors` option sends them): the
/// origin is echoed, never `*`. Nothing without an `Origin`.
fn cors(parts: &Parts) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(origin) = parts.headers.get(header::ORIGIN) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
    headers
}

/// Adds CORS and the reference's `cache-control: no-store` to a text answer.
fn text_answer(parts: &Parts, content_type: &'static str, body: Bytes) -> Response {
    let mut headers = cors(parts);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    (StatusCode::OK, headers, body).into_response()
}

fn with_cors(parts: &Parts, mut response: Response) -> Response {
    response.headers_mut().extend(cors(parts));
    response
}

/// Refuses a request whose `Origin` is not on the allow-list.
fn origin_refused(parts: &Parts, state: &RealtimeState) -> Option<Response> {
    check_origin(parts, &state.allowed_origins)
        .err()
        .map(|e| engine_error(StatusCode::FORBIDDEN, 4, Some(&e.to_string())))
}

/// `OPTIONS /socket.io/`: the CORS preflight of a cross-origin polling client.
#[utoipa::path(options, path = "/socket.io/", tag = "realtime", operation_id = "socketio_preflight", responses((status = 204, description = "CORS preflight answered for an allowed Origin"), (status = 403, description = "Origin not allowed", body = crate::http::openapi::EngineError)))]
pub(crate) async fn preflight(
    axum::extract::State(state): axum::extract::State<RealtimeState>,
    parts: Parts,
) -> Response {
    if let Some(refused) = origin_refused(&parts, &state) {
        return refused;
    }
    let mut headers = cors(&parts);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET,POST,OPTIONS"),
    );
    if let Some(asked) = parts.headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
    }
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    (StatusCode::NO_CONTENT, headers).into_response()
}

/// The client's address, as the listener recorded it.
fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.ip())
}

/// `GET /socket.io/?EIO=4&transport=polling` without a `sid`: a new session.
pub(crate) async fn handshake(
    state: &RealtimeState,
    parts: &Parts,
    query: &UpgradeQuery,
) -> Response {
    if let Some(refused) = origin_refused(parts, state) {
        return refused;
    }
    // A place under the connection caps first, before anything is allocated.
    let permit = match state.admission.admit(client_ip(parts)) {
        Ok(p) => p,
        Err(r) => {
            state.stats.polling_refused.fetch_add(1, Ordering::Relaxed);
            let message = match r {
                Refusal::Global => "the server has reached its connection limit; retry later",
                Refusal::PerIp => "too many connections from your address; close some and retry",
            };
            return with_cors(parts, ApiError::Unavailable(message.into()).into_response());
        }
    };
    let user = match token_user(parts, query, state).await {
        Ok(u) => u,
        Err(e) => return with_cors(parts, e.into_response()),
    };
    let timing = Timing::from_state(state);
    let mut session = SocketIoSession::new(
        user,
        query.since,
        timing,
        state.limits.max_ws_message_bytes,
        state.stats.clone(),
    )
    .offering_websocket();
    let mut sub = None;
    let open = session
        .start(&mut Ctx {
            backend: state.backend.as_ref(),
            hub: &state.hub,
            sub: &mut sub,
        })
        .await;
    let sid = session.sid().to_owned();
    let (tx, rx) = mpsc::channel(4);
    state.polling.lock().insert(
        sid.clone(),
        Arc::new(Entry {
            tx,
            upgrading: AtomicBool::new(false),
        }),
    );
    let driver = Driver {
        sid,
        backend: state.backend.clone(),
        hub: state.hub.clone(),
        sessions: state.polling.clone(),
        max_pending: state.limits.output_hard_limit_bytes,
        batch_bytes: state.limits.max_ws_message_bytes,
        _open: OpenSession::new(state.stats.clone()),
        stats: state.stats.clone(),
        _permit: permit,
    };
    tokio::spawn(driver.run(session, sub, rx));
    let body = open
        .into_iter()
        .find_map(|o| match o {
            Out::Text(t) => Some(t),
            _ => None,
        })
        .unwrap_or_default();
    text_answer(parts, "text/plain; charset=UTF-8", body)
}

/// `GET /socket.io/?EIO=4&transport=polling&sid=`: waits for the session's packets.
pub(crate) async fn poll(state: &RealtimeState, parts: &Parts, sid: &str) -> Response {
    if let Some(refused) = origin_refused(parts, state) {
        return refused;
    }
    let Some(entry) = state.polling.get(sid) else {
        return with_cors(parts, unknown_sid());
    };
    let timing = Timing::from_state(state);
    let (tx, rx) = oneshot::channel();
    if entry
        .tx
        .send_timeout(Msg::Poll(tx), timing.write_timeout)
        .await
        .is_err()
    {
        return with_cors(parts, unknown_sid());
    }
    // The driver answers by the next heartbeat at the latest; this deadline only
    // guards against a driver that cannot.
    let deadline = timing.ping_interval + timing.ping_timeout;
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(Polled::Packets(packets))) => {
            text_answer(parts, "text/plain; charset=UTF-8", join(&packets))
        }
        Ok(Ok(Polled::Overlap)) => with_cors(
            parts,
            bad_request("a GET was already waiting for this session; the session is closed"),
        ),
        Ok(Err(_)) => with_cors(parts, unknown_sid()),
        Err(_) => text_answer(parts, "text/plain; charset=UTF-8", Bytes::from_static(b"6")),
    }
}

/// Frames packets as one long-polling payload.
pub(crate) fn join(packets: &[Bytes]) -> Bytes {
    let len = packets.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    for (i, p) in packets.iter().enumerate() {
        if i > 0 {
            out.push(SEPARATOR as u8);
        }
        out.extend_from_slice(p);
    }
    Bytes::from(out)
}

/// Splits a long-polling payload into packets; binary content is refused.
pub(crate) fn split(payload: &str) -> Result<Vec<String>, String> {
    let mut packets = Vec::new();
    for packet in payload.split(SEPARATOR) {
        if packet.starts_with('b') {
            return Err("binary (base64 `b`) packets are not supported: send text".into());
        }
        packets.push(packet.to_owned());
    }
    Ok(packets)
}

/// `POST /socket.io/?EIO=4&transport=polling&sid=`: the client's packets.
pub(crate) async fn post(state: &RealtimeState, parts: &Parts, body: Body) -> Response {
    if let Some(refused) = origin_refused(parts, state) {
        return refused;
    }
    let query = match upgrade_query(parts) {
        Ok(q) => q,
        Err(why) => return with_cors(parts, bad_request(&why)),
    };
    if let Some(r) = check_engine(&query) {
        return with_cors(parts, r);
    }
    if query.transport.as_deref() != Some("polling") {
        return with_cors(
            parts,
            bad_request("only the polling transport takes POST requests"),
        );
    }
    let Some(sid) = query.sid else {
        // The reference accepts only a GET as a handshake.
        return with_cors(parts, engine_error(StatusCode::BAD_REQUEST, 2, None));
    };
    let Some(entry) = state.polling.get(&sid) else {
        return with_cors(parts, unknown_sid());
    };
    let timing = Timing::from_state(state);
    let abort = |why: String| abort(&entry, why, timing.write_timeout);
    let binary = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/octet-stream"));
    if binary {
        let why = "binary payloads are not supported: send text packets".to_owned();
        abort(why.clone()).await;
        return with_cors(parts, bad_request(&why));
    }
    let max = state.limits.max_ws_message_bytes;
    let too_big =
        || format!("a POST body is limited to {max} bytes (maxPayload); the session is closed");
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Refused before a byte of the body is read when its length says so; a body
    // without a length stops being read at the limit.
    if declared.is_some_and(|n| n > max as u64) {
        abort(too_big()).await;
        return with_cors(
            parts,
            engine_error(StatusCode::PAYLOAD_TOO_LARGE, 3, Some(&too_big())),
        );
    }
    let bytes =
        match tokio::time::timeout(timing.write_timeout, axum::body::to_bytes(body, max)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                abort(too_big()).await;
                return with_cors(
                    parts,
                    engine_error(StatusCode::PAYLOAD_TOO_LARGE, 3, Some(&too_big())),
                );
            }
            Err(_) => {
                let why = "the POST body did not arrive in time".to_owned();
                abort(why.clone()).await;
                return with_cors(parts, bad_request(&why));
            }
        };
    let packets = match std::str::from_utf8(&bytes)
        .map_err(|_| "the payload is not UTF-8 text".to_owned())
        .and_then(split)
    {
        Ok(p) => p,
        Err(why) => {
            abort(why.clone()).await;
            return with_cors(parts, bad_request(&why));
        }
    };
    let (tx, rx) = oneshot::channel();
    if entry
        .tx
        .send_timeout(Msg::Data(packets, tx), timing.write_timeout)
        .await
        .is_err()
    {
        return with_cors(parts, unknown_sid());
    }
    match tokio::time::timeout(timing.write_timeout, rx).await {
        Ok(Ok(Ok(()))) => text_answer(parts, "text/html", Bytes::from_static(b"ok")),
        Ok(Ok(Err(why))) => with_cors(parts, bad_request(&why)),
        Ok(Err(_)) => with_cors(parts, unknown_sid()),
        Err(_) => with_cors(
            parts,
            bad_request("the session did not take the packets in time"),
        ),
    }
}

/// Ends a session for a request it cannot take.
async fn abort(entry: &Entry, why: String, wait: Duration) {
    let _ = entry.tx.send_timeout(Msg::Abort(why), wait).await;
}

/// The query of a polling request, or why it cannot be read.
pub(crate) fn upgrade_query(parts: &Parts) -> Result<UpgradeQuery, String> {
    axum::extract::Query::<UpgradeQuery>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|e| e.body_text())
}

/// The protocol version and transport checks of every `/socket.io/` request.
pub(crate) fn check_engine(query: &UpgradeQuery) -> Option<Response> {
    if query.eio.as_deref() != Some("4") {
        return Some(engine_error(
            StatusCode::BAD_REQUEST,
            5,
            Some("only Engine.IO protocol 4 (Socket.IO v3+ clients) is supported: EIO=4"),
        ));
    }
    match query.transport.as_deref() {
        Some("polling" | "websocket") => None,
        _ => Some(engine_error(
            StatusCode::BAD_REQUEST,
            0,
            Some("transport is polling or websocket"),
        )),
    }
}

/// `GET /socket.io/?EIO=4&transport=websocket&sid=`: the upgrade of a polling
/// session. The probe runs on the new websocket while polling goes on; on `5`
/// the session moves to the websocket.
pub(crate) async fn upgrade(state: &RealtimeState, parts: Parts, sid: &str) -> Response {
    let Some(entry) = state.polling.get(sid) else {
        return unknown_sid();
    };
    if entry.upgrading.swap(true, Ordering::AcqRel) {
        return bad_request("this session is already upgrading");
    }
    let stats = state.stats.clone();
    let deadline = Timing::from_state(state).connect_timeout;
    let probing = entry.clone();
    // Dropped with the closure if the websocket never opens: the session may try again.
    let probing = Probing(probing);
    accept_with(parts, state, move |ws, conn| async move {
        let link = socket::open(ws, conn.stats.clone(), conn.max_message, conn.timing);
        take_over(link, conn, probing, deadline, stats).await
    })
    .await
}

/// A session being probed by a websocket; dropping it (the probe failed, the
/// websocket never opened or has ended) lets the session be upgraded again.
struct Probing(Arc<Entry>);

impl Drop for Probing {
    fn drop(&mut self) {
        self.0.upgrading.store(false, Ordering::Release);
        // Harmless after a handoff: the driver has ended by then.
        let _ = self.0.tx.try_send(Msg::ProbeFailed);
    }
}

/// What the probing websocket received next.
enum Probe {
    /// This text message.
    Text(String),
    /// Nothing usable in time, or the socket went away.
    Gone,
}

/// The next text message of a probing websocket, answering control frames.
async fn next_probe_text<W>(
    link: &mut socket::Link<W>,
    until: tokio::time::Instant,
) -> Result<Probe, socket::Ended>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    loop {
        let msg = match tokio::time::timeout_at(until, link.inbound.recv()).await {
            Ok(Some(msg)) => msg,
            _ => return Ok(Probe::Gone),
        };
        let mut msg = msg;
        match msg {
            Inbound::Text(t) => return Ok(Probe::Text(t)),
            Inbound::Ping(_) | Inbound::Obligated(..) | Inbound::Alive => {
                if !link.writer.answer_control(&mut msg).await? {
                    return Ok(Probe::Gone);
                }
            }
            _ => return Ok(Probe::Gone),
        }
    }
}

/// The websocket side of an upgrade: `2probe` → `3probe`, then `5`, then the
/// session moves here and runs in the websocket's socket loop.
async fn take_over<W>(
    mut link: socket::Link<W>,
    conn: socket::Conn,
    probing: Probing,
    within: Duration,
    stats: Arc<RealtimeStats>,
) -> Result<(), socket::Ended>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    let entry = &probing.0;
    let until = tokio::time::Instant::now() + within;
    match next_probe_text(&mut link, until).await? {
        Probe::Text(t) if t == "2probe" => {}
        _ => {
            give_up(&mut link, "an upgrade starts with the probe 2probe").await?;
            return Ok(());
        }
    }
    link.writer
        .perform(vec![Out::Text(Bytes::from_static(b"3probe"))])
        .await?;
    if entry.tx.send(Msg::Probed).await.is_err() {
        session_ended(&mut link).await?;
        return Ok(());
    }
    match next_probe_text(&mut link, until).await? {
        Probe::Text(t) if t == "5" => {}
        _ => {
            give_up(&mut link, "the probe is followed by the upgrade packet 5").await?;
            return Ok(());
        }
    }
    let (tx, rx) = oneshot::channel();
    let handoff = match entry.tx.send(Msg::Upgrade(tx)).await {
        Ok(()) => rx.await.ok(),
        Err(_) => None,
    };
    let Some(handoff) = handoff else {
        session_ended(&mut link).await?;
        return Ok(());
    };
    stats.polling_upgrades.fetch_add(1, Ordering::Relaxed);
    metrics::counter!("likewise_socketio_polling_upgrades_total").increment(1);
    let first = handoff.pending.into_iter().map(Out::Text).collect();
    socket::drive(link, conn, handoff.session, handoff.sub, first).await
}

/// A failed probe: the websocket closes (the [`Probing`] it drops lets polling
/// go on as before).
async fn give_up<W>(link: &mut socket::Link<W>, why: &str) -> Result<bool, socket::Ended>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    link.writer
        .perform(vec![Out::Close(close::POLICY, why.into())])
        .await
}

/// Closes a probing websocket whose long-polling session ended meanwhile.
async fn session_ended<W>(link: &mut socket::Link<W>) -> Result<bool, socket::Ended>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    link.writer
        .perform(vec![Out::Close(
            close::GOING_AWAY,
            "the session has ended".into(),
        )])
        .await
}

/// Counts a session as open on the long-polling transport while it lives there.
struct OpenSession(Arc<RealtimeStats>);

impl OpenSession {
    fn new(stats: Arc<RealtimeStats>) -> OpenSession {
        stats.polling_sessions.fetch_add(1, Ordering::Relaxed);
        stats.polling_opened.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("likewise_socketio_polling_sessions").increment(1.0);
        metrics::counter!("likewise_socketio_sessions_opened_total", "transport" => "polling")
            .increment(1);
        OpenSession(stats)
    }
}

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.polling_sessions.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("likewise_socketio_polling_sessions").decrement(1.0);
    }
}

/// A GET held for a session, counted while it is.
struct HeldGet {
    tx: oneshot::Sender<Polled>,
    _held: HeldCount,
}

struct HeldCount(Arc<RealtimeStats>);

impl HeldGet {
    fn new(tx: oneshot::Sender<Polled>, stats: &Arc<RealtimeStats>) -> HeldGet {
        stats.polling_held.fetch_add(1, Ordering::Relaxed);
        HeldGet {
            tx,
            _held: HeldCount(stats.clone()),
        }
    }
}

impl Drop for HeldCount {
    fn drop(&mut self) {
        self.0.polling_held.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session's driver: owns the session, its subscription and what waits for
/// the next GET.
struct Driver {
    sid: String,
    backend: Arc<dyn Backend>,
    hub: Hub,
    sessions: Arc<PollingSessions>,
    /// Bytes the session may queue for GETs before it is dropped as too slow.
    max_pending: usize,
    /// Roughly how many bytes of deliveries one GET answer carries.
    batch_bytes: usize,
    stats: Arc<RealtimeStats>,
    _open: OpenSession,
    _permit: Permit,
}

/// Packets waiting for the next GET.
#[derive(Default)]
struct Pending {
    packets: VecDeque<Bytes>,
    bytes: usize,
}

impl Pending {
    fn push(&mut self, p: Bytes) {
        self.bytes += p.len();
        self.packets.push_back(p);
    }

    fn take(&mut self) -> Vec<Bytes> {
        self.bytes = 0;
        self.packets.drain(..).collect()
    }

    /// Puts back packets a GET could not take (its client went away), first.
    fn restore(&mut self, packets: Vec<Bytes>) {
        for p in packets.into_iter().rev() {
            self.bytes += p.len();
            self.packets.push_front(p);
        }
    }
}

/// What one turn of the driver's loop produced.
enum Turn {
    Actions(Vec<Out>),
    Msg(Msg),
    Gone,
}

impl Driver {
    async fn run(
        self,
        mut session: SocketIoSession,
        mut sub: Option<Subscription>,
        mut rx: mpsc::Receiver<Msg>,
    ) {
        let mut pending = Pending::default();
        let mut poll: Option<HeldGet> = None;
        let mut probed = false;
        let mut tick = tokio::time::interval(session.tick_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let closing = self.hub.closing().clone();
        let mut resyncs = self.hub.resyncs();
        let mut ended: Option<(u16, String)> = None;
        while ended.is_none() {
            if poll.as_ref().is_some_and(|p| p.tx.is_closed()) {
                // The client gave up on its GET (it closed the connection).
                poll = None;
            }
            let waiting = poll.is_some();
            let replaying = session.replaying();
            let turn = tokio::select! {
                msg = rx.recv() => msg.map_or(Turn::Gone, Turn::Msg),
                () = closing.cancelled() => Turn::Actions(vec![Out::Close(
                    close::GOING_AWAY,
                    "the server is shutting down".into(),
                )]),
                now = tick.tick() => {
                    let now = now.into_std();
                    Turn::Actions(session.on_tick(now, now))
                }
                Ok(()) = resyncs.changed() => {
                    if let Some(after) = *resyncs.borrow_and_update() {
                        session.resync(after);
                    }
                    Turn::Actions(Vec::new())
                }
                // One replay page at a time: the next is read once a GET took this one.
                () = std::future::ready(()), if replaying && pending.packets.is_empty() => {
                    let mut ctx = Ctx { backend: self.backend.as_ref(), hub: &self.hub, sub: &mut sub };
                    Turn::Actions(session.next_page(&mut ctx).await)
                }
                // Deliveries leave the hub's queue only for a waiting GET; without
                // one, only the hub dropping this subscriber is noticed.
                delivery = watch(&mut sub, waiting && !replaying) => match delivery {
                    Some(d) => {
                        let mut out: Vec<Out> = session.on_delivery(&d).map(Out::Text).into_iter().collect();
                        let mut bytes = out.iter().map(out_len).sum::<usize>();
                        if let Some(s) = sub.as_mut() {
                            while out.len() < DELIVERIES_PER_POLL && bytes < self.batch_bytes {
                                let Some(d) = s.try_recv() else { break };
                                if let Some(frame) = session.on_delivery(&d) {
                                    bytes += frame.len();
                                    out.push(Out::Text(frame));
                                }
                            }
                        }
                        Turn::Actions(out)
                    }
                    None => Turn::Actions(vec![ended_close(sub.as_ref())]),
                },
                () = poll_abandoned(&mut poll), if waiting => Turn::Actions(Vec::new()),
            };
            match turn {
                Turn::Gone => ended = Some((close::GOING_AWAY, "gone".into())),
                Turn::Actions(actions) => ended = queue(&mut pending, actions),
                Turn::Msg(Msg::Poll(tx)) => {
                    if poll.is_some() {
                        let _ = tx.send(Polled::Overlap);
                        ended = Some((close::POLICY, "overlapping GET requests".into()));
                    } else {
                        poll = Some(HeldGet::new(tx, &self.stats));
                    }
                }
                Turn::Msg(Msg::Data(packets, reply)) => {
                    let mut outcome = Ok(());
                    for packet in packets {
                        let mut ctx = Ctx {
                            backend: self.backend.as_ref(),
                            hub: &self.hub,
                            sub: &mut sub,
                        };
                        let actions = session.on_text(&mut ctx, &packet).await;
                        if let Some((code, why)) = queue(&mut pending, actions) {
                            if code != close::NORMAL {
                                outcome = Err(why.clone());
                            }
                            ended = Some((code, why));
                            break;
                        }
                    }
                    let _ = reply.send(outcome);
                }
                Turn::Msg(Msg::Abort(why)) => ended = Some((close::POLICY, why)),
                Turn::Msg(Msg::Probed) => probed = true,
                Turn::Msg(Msg::ProbeFailed) => probed = false,
                Turn::Msg(Msg::Upgrade(tx)) => {
                    // A GET still waiting gets a noop: everything else moves over.
                    if let Some(p) = poll.take() {
                        let _ = p.tx.send(Polled::Packets(vec![Bytes::from_static(b"6")]));
                    }
                    let handoff = Handoff {
                        session,
                        sub,
                        pending: pending.take(),
                    };
                    match tx.send(handoff) {
                        Ok(()) => {
                            self.sessions.remove(&self.sid);
                            return;
                        }
                        Err(back) => {
                            // The websocket went away in between: keep polling.
                            session = back.session;
                            sub = back.sub;
                            pending.restore(back.pending);
                            probed = false;
                        }
                    }
                }
            }
            if ended.is_none() && pending.bytes > self.max_pending {
                ended = Some((
                    close::TRY_AGAIN_LATER,
                    "too slow: the packets waiting for a GET overflowed".into(),
                ));
            }
            if ended.is_some() {
                // The close packet goes to a waiting GET; a client that is not
                // polling finds out from its next request (unknown sid).
                pending.push(Bytes::from_static(b"1"));
            }
            let flush = !pending.packets.is_empty() || (probed && ended.is_none());
            if flush {
                if let Some(p) = poll.take() {
                    let packets = if pending.packets.is_empty() {
                        vec![Bytes::from_static(b"6")]
                    } else {
                        pending.take()
                    };
                    if let Err(Polled::Packets(back)) = p.tx.send(Polled::Packets(packets)) {
                        if back.as_slice() != [Bytes::from_static(b"6")] {
                            pending.restore(back);
                        }
                    }
                }
            }
        }
        if let Some((code, why)) = &ended {
            tracing::debug!(sid = %self.sid, code, reason = %why, "a long-polling session ended");
            if why == "ping timeout" {
                self.stats.polling_timeouts.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("likewise_socketio_polling_timeouts_total").increment(1);
            }
        }
        self.sessions.remove(&self.sid);
    }
}

fn out_len(o: &Out) -> usize {
    match o {
        Out::Text(t) => t.len(),
        _ => 0,
    }
}

/// Queues a session's text actions for the next GET; the close, if any.
fn queue(pending: &mut Pending, actions: Vec<Out>) -> Option<(u16, String)> {
    for action in actions {
        match action {
            Out::Text(t) => pending.push(t),
            // Engine.IO heartbeats are packets (`2`); a websocket ping has no
            // meaning here.
            Out::Ping => {}
            Out::Close(code, why) => return Some((code, why)),
        }
    }
    None
}

/// The next delivery when `take`; otherwise waits until the hub ends the
/// subscription (then `None`, with the reason recorded in it).
async fn watch(sub: &mut Option<Subscription>, take: bool) -> Option<Delivery> {
    match sub {
        Some(s) if take => s.recv().await,
        Some(s) => {
            s.ended().await;
            s.recv().await
        }
        None => std::future::pending().await,
    }
}

async fn poll_abandoned(poll: &mut Option<HeldGet>) {
    match poll {
        Some(p) => p.tx.closed().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_framed_with_the_record_separator() {
        let packets = [
            Bytes::from_static(b"40{\"sid\":\"x\"}"),
            Bytes::from_static(b"2"),
        ];
        let joined = join(&packets);
        assert_eq!(&joined[..], b"40{\"sid\":\"x\"}\x1e2");
        let text = std::str::from_utf8(&joined).unwrap();
        assert_eq!(split(text).unwrap(), vec!["40{\"sid\":\"x\"}", "2"]);
        assert_eq!(join(&[]).len(), 0);
        assert_eq!(split("3").unwrap(), vec!["3"]);
    }

    #[test]
    fn base64_binary_packets_are_refused() {
        assert!(split("4hello\u{1e}bAQID").is_err());
        assert!(split("bAQID").is_err());
    }

    #[test]
    fn pending_packets_keep_their_order_when_a_get_goes_away() {
        let mut p = Pending::default();
        p.push(Bytes::from_static(b"a"));
        p.push(Bytes::from_static(b"b"));
        let taken = p.take();
        assert_eq!(p.bytes, 0);
        p.push(Bytes::from_static(b"c"));
        p.restore(taken);
        assert_eq!(p.bytes, 3);
        let order: Vec<Bytes> = p.take();
        assert_eq!(
            order,
            vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]
        );
    }

    proptest::proptest! {
        #[test]
        fn framing_round_trips_text_packets(
            packets in proptest::collection::vec("[^\u{1e}b][^\u{1e}]{0,20}", 1..8)
        ) {
            let bytes: Vec<Bytes> = packets.iter().map(|p| Bytes::from(p.clone())).collect();
            let joined = join(&bytes);
            let text = std::str::from_utf8(&joined).unwrap();
            proptest::prop_assert_eq!(split(text).unwrap(), packets);
        }
    }
}
