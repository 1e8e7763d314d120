//! Socket.IO v5 over Engine.IO v4, default namespace `/`: the protocol state of a
//! session, whichever transport carries it (the websocket here; long-polling and
//! the upgrade from it in [`super::polling`]).
//!
//! Engine.IO packets ([`EnginePacket`]) are one text frame each on the websocket
//! (one record of a payload on long-polling): `0` open (sent by us first, with
//! the `sid`, `upgrades` (`[]` on a websocket, `["websocket"]` on long-polling),
//! `pingInterval`, `pingTimeout`, `maxPayload`), `2`/`3` ping/pong (we ping; a
//! client that does not pong within `pingTimeout` is dropped), `1` close, `4`
//! message, `5` upgrade, `6` noop. A message carries
//! a Socket.IO [`Packet`]: `0` CONNECT (with the auth payload `{"token",
//! "since"?}`), `1` DISCONNECT, `2` EVENT (`42["name",args...]`), `3` ACK, `4`
//! CONNECT_ERROR.
//!
//! A connection upgraded without a token is counted as awaiting CONNECT and must
//! send it within `socketio_connect_timeout_ms`, or it is closed (1008). Clients
//! may emit `subscribe` / `unsubscribe` with a room name (acknowledged when they
//! ask for an ack) under the room policy of [`crate::rooms`], as on `/ws`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};

use super::polling;
use super::session::{self, not_replayed, subscribe_user, Replay};
use super::upgrade::{accept, preflight, token_user};
use super::{close, Ctx, Out, RealtimeState, RealtimeStats, Session, Timing};
use crate::domain::new_token;
use crate::http::error::ApiError;
use crate::hub::{Delivery, FrameFormat, Publication, Transport};

/// A publication as a Socket.IO EVENT packet on the default namespace,
/// `42["E",args...]`; the hub renders it once per publication.
static EVENT_PACKET: FrameFormat = FrameFormat::new("socket.io event", event_packet);

fn event_packet(p: &Publication) -> Bytes {
    let e = p.as_event();
    let mut list = Vec::with_capacity(e.args.len() + 1);
    list.push(Value::String(e.name.clone()));
    list.extend(e.args.iter().cloned());
    Bytes::from(format!("42{}", Value::Array(list)))
}

/// `GET /socket.io/`: the websocket transport (`transport=websocket`, a new
/// session, or with `sid=` the upgrade of a long-polling one), or long-polling
/// (`transport=polling`: the handshake, or with `sid=` a poll).
#[utoipa::path(get, path = "/socket.io/", tag = "realtime", operation_id = "socketio_get", description = "Socket.IO (Engine.IO v4, API.md \"Socket.IO compatibility\"): `transport=websocket` upgrades (a new session, or with `sid` the upgrade of a long-polling one); `transport=polling` without `sid` is the long-polling handshake, with `sid` a poll that answers the packets waiting (record-separated). Signed in with `auth: {token}` or `auth: {ticket}` in the CONNECT packet, or `?token=` / `?ticket=`.", params(("EIO" = String, Query, description = "Engine.IO protocol version: 4"), ("transport" = String, Query, description = "websocket or polling"), ("sid" = Option<String>, Query, description = "The session id from the handshake"), ("token" = Option<String>, Query, description = "A session token"), ("ticket" = Option<String>, Query, description = "A one-use ticket")), responses((status = 101, description = "Switched to the websocket protocol"), (status = 200, description = "Engine.IO packets (the handshake's open packet, or those waiting)", body = String, content_type = "text/plain"), (status = 400, description = "Not an Engine.IO v4 request; over polling, an unknown session (Engine.IO's error shape)", body = crate::http::openapi::EngineError), (status = 401, description = "No valid token or ticket", body = crate::http::openapi::Error)))]
pub(crate) async fn upgrade(State(state): State<RealtimeState>, parts: Parts) -> Response {
    if let Ok(q) = polling::upgrade_query(&parts) {
        if q.transport.as_deref() == Some("polling") {
            if let Some(refused) = polling::check_engine(&q) {
                return refused;
            }
            return match &q.sid {
                None => polling::handshake(&state, &parts, &q).await,
                Some(sid) => polling::poll(&state, &parts, sid).await,
            };
        }
    }
    let query = match preflight(&parts, &state) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    if query.eio.as_deref() != Some("4") {
        return ApiError::BadRequest(
            "only Engine.IO protocol 4 (Socket.IO v3+ clients) is supported: EIO=4".into(),
        )
        .into_response();
    }
    if query.transport.as_deref() != Some("websocket") {
        return ApiError::BadRequest("the transport is websocket or polling".into())
            .into_response();
    }
    if let Some(sid) = &query.sid {
        return polling::upgrade(&state, parts, sid).await;
    }
    // A token in the query is checked before the upgrade; otherwise it comes in the
    // CONNECT packet's auth payload.
    let user = match token_user(&parts, &query, &state).await {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    let session = SocketIoSession::new(
        user,
        query.since,
        Timing::from_state(&state),
        state.limits.max_ws_message_bytes,
        state.stats.clone(),
    );
    accept(parts, &state, session).await
}

/// `POST /socket.io/?EIO=4&transport=polling&sid=`: a long-polling client's packets.
#[utoipa::path(post, path = "/socket.io/", tag = "realtime", operation_id = "socketio_post", description = "Engine.IO long-polling: a client's packets for its session, record-separated, at most `maxHttpBufferSize` bytes.", params(("EIO" = String, Query, description = "Engine.IO protocol version: 4"), ("transport" = String, Query, description = "polling"), ("sid" = String, Query, description = "The session id from the handshake")), request_body(content = String, content_type = "text/plain", description = "Engine.IO packets separated by the record separator (0x1e)"), responses((status = 200, description = "Taken: `ok`", body = String, content_type = "text/html"), (status = 400, description = "Unknown session or malformed payload", body = crate::http::openapi::EngineError), (status = 403, description = "Origin not allowed", body = crate::http::openapi::EngineError), (status = 413, description = "Larger than maxHttpBufferSize", body = crate::http::openapi::EngineError)))]
pub(crate) async fn post(State(state): State<RealtimeState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    polling::post(&state, &parts, body).await
}

/// An Engine.IO v4 packet as a client sends it over the websocket transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnginePacket {
    /// `1`: the client closes.
    Close,
    /// `2` + probe data: a client ping, answered with `3` + the same data.
    Ping(String),
    /// `3` + data: the answer to our ping.
    Pong(String),
    /// `4` + a Socket.IO packet.
    Message(String),
    /// `5`: transport upgrade (meaningless on websocket-only).
    Upgrade,
    /// `6`: noop.
    Noop,
}

impl EnginePacket {
    /// Reads a text frame as an Engine.IO packet.
    pub(crate) fn parse(frame: &str) -> Result<EnginePacket, String> {
        let mut chars = frame.chars();
        let Some(kind) = chars.next() else {
            return Err("an empty Engine.IO packet".into());
        };
        let rest = chars.as_str().to_owned();
        match kind {
            '1' => Ok(EnginePacket::Close),
            '2' => Ok(EnginePacket::Ping(rest)),
            '3' => Ok(EnginePacket::Pong(rest)),
            '4' => Ok(EnginePacket::Message(rest)),
            '5' => Ok(EnginePacket::Upgrade),
            '6' => Ok(EnginePacket::Noop),
            other => Err(format!("unknown Engine.IO packet type {other:?}")),
        }
    }

    /// The packet as a text frame.
    pub(crate) fn encode(&self) -> String {
        match self {
            EnginePacket::Close => "1".into(),
            EnginePacket::Ping(d) => format!("2{d}"),
            EnginePacket::Pong(d) => format!("3{d}"),
            EnginePacket::Message(m) => format!("4{m}"),
            EnginePacket::Upgrade => "5".into(),
            EnginePacket::Noop => "6".into(),
        }
    }
}

/// A Socket.IO packet inside an Engine.IO message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Packet {
    /// Packet type digit.
    pub kind: u8,
    /// Namespace (`/` when absent).
    pub nsp: String,
    /// Ack id.
    pub ack: Option<u64>,
    /// JSON payload: an object or an array (Socket.IO sends nothing else, and a
    /// bare number would be read as an ack id).
    pub data: Option<Value>,
}

/// Parses a Socket.IO packet (the part after the Engine.IO `4`).
pub(crate) fn parse_packet(s: &str) -> Result<Packet, String> {
    let kind = match s.as_bytes().first() {
        Some(c) if c.is_ascii_digit() => c - b'0',
        _ => return Err("a packet starts with its type digit".into()),
    };
    if kind > 6 {
        return Err(format!("unknown packet type {kind}"));
    }
    if kind == 5 || kind == 6 {
        return Err("binary packets are not supported".into());
    }
    let mut rest = &s[1..];
    let mut nsp = "/".to_owned();
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        nsp = rest[..end].to_owned();
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        let id = rest[..digits]
            .parse::<u64>()
            .map_err(|_| "the ack id is too large".to_owned())?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    let data = if rest.is_empty() {
        None
    } else {
        let v: Value =
            serde_json::from_str(rest).map_err(|e| format!("the payload is not JSON: {e}"))?;
        if !(v.is_object() || v.is_array()) {
            return Err("the payload is an object or an array".into());
        }
        Some(v)
    };
    Ok(Packet {
        kind,
        nsp,
        ack,
        data,
    })
}

impl Packet {
    /// The packet as it goes after the Engine.IO `4`.
    pub(crate) fn encode(&self) -> String {
        let mut out = self.kind.to_string();
        if self.nsp != "/" {
            out.push_str(&self.nsp);
            if self.ack.is_some() || self.data.is_some() {
                out.push(',');
            }
        }
        if let Some(ack) = self.ack {
            out.push_str(&ack.to_string());
        }
        if let Some(data) = &self.data {
            out.push_str(&data.to_string());
        }
        out
    }
}

/// Counts a connection as awaiting CONNECT for as long as it lives.
struct AwaitingConnect(Arc<RealtimeStats>);

impl AwaitingConnect {
    fn new(stats: Arc<RealtimeStats>) -> AwaitingConnect {
        stats
            .socketio_awaiting_connect
            .fetch_add(1, Ordering::Relaxed);
        metrics::gauge!("likewise_socketio_awaiting_connect").increment(1.0);
        AwaitingConnect(stats)
    }
}

impl Drop for AwaitingConnect {
    fn drop(&mut self) {
        self.0
            .socketio_awaiting_connect
            .fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("likewise_socketio_awaiting_connect").decrement(1.0);
    }
}

/// The CONNECT_ERROR message for a refused credential: `code: message` for the
/// client's mistakes, a generic sentence (the cause logged) for the server's.
fn connect_refusal(e: &ApiError) -> String {
    if e.status_code().is_server_error() {
        tracing::warn!(error = %e, "checking a Socket.IO CONNECT failed");
        format!(
            "{}: the server cannot check credentials now; try again",
            e.code()
        )
    } else {
        format!("{}: {e}", e.code())
    }
}

/// One Socket.IO connection's protocol state.
pub(crate) struct SocketIoSession {
    sid: String,
    query_user: Option<u64>,
    query_since: Option<u64>,
    user: Option<u64>,
    replay: Option<Replay>,
    replayed_up_to: u64,
    /// The highest notification id this connection has sent.
    sent_up_to: u64,
    timing: Timing,
    max_payload: usize,
    ping_sent: Option<Instant>,
    last_ping: Instant,
    opened: Instant,
    stats: Arc<RealtimeStats>,
    awaiting: Option<AwaitingConnect>,
    upgrades: &'static [&'static str],
}

fn text(s: String) -> Out {
    Out::Text(Bytes::from(s))
}

impl SocketIoSession {
    pub(crate) fn new(
        query_user: Option<u64>,
        query_since: Option<u64>,
        timing: Timing,
        max_payload: usize,
        stats: Arc<RealtimeStats>,
    ) -> Self {
        let now = Instant::now();
        SocketIoSession {
            sid: new_token()[..20].to_owned(),
            query_user,
            query_since,
            user: None,
            replay: None,
            replayed_up_to: 0,
            sent_up_to: 0,
            timing,
            max_payload,
            ping_sent: None,
            last_ping: now,
            opened: now,
            stats,
            awaiting: None,
            upgrades: &[],
        }
    }

    /// The same session offered to a long-polling client, which may upgrade to
    /// the websocket transport (the open packet says so).
    pub(crate) fn offering_websocket(mut self) -> Self {
        self.upgrades = &["websocket"];
        self
    }

    /// The Engine.IO session id.
    pub(crate) fn sid(&self) -> &str {
        &self.sid
    }

    /// A Socket.IO packet to the client, inside an Engine.IO message.
    fn send(kind: u8, nsp: &str, ack: Option<u64>, data: Value) -> Out {
        let packet = Packet {
            kind,
            nsp: nsp.to_owned(),
            ack,
            data: Some(data),
        };
        text(EnginePacket::Message(packet.encode()).encode())
    }

    fn connect_error(nsp: &str, message: &str) -> Out {
        Self::send(4, nsp, None, json!({"message": message}))
    }

    async fn connect(&mut self, ctx: &mut Ctx<'_>, p: Packet) -> Vec<Out> {
        if p.nsp != "/" {
            return vec![Self::connect_error(&p.nsp, "Invalid namespace")];
        }
        if self.user.is_some() {
            return vec![Self::connect_error("/", "already connected")];
        }
        let auth = p.data.unwrap_or(Value::Null);
        let credential = match (
            auth.get("ticket").and_then(Value::as_str),
            auth.get("token").and_then(Value::as_str),
        ) {
            (Some(ticket), _) => Some(ctx.backend.user_for_ticket(ticket).await),
            (None, Some(token)) => Some(ctx.backend.user_for_token(token).await),
            (None, None) => None,
        };
        let user = match credential {
            Some(Ok(id)) => id,
            Some(Err(e)) => return vec![Self::connect_error("/", &connect_refusal(&e))],
            None => match self.query_user {
                Some(id) => id,
                None => {
                    return vec![Self::connect_error(
                        "/",
                        "unauthorized: send auth {\"ticket\": \"...\"} or {\"token\": \"...\"}",
                    )]
                }
            },
        };
        let since = auth
            .get("since")
            .and_then(Value::as_u64)
            .or(self.query_since);
        self.user = Some(user);
        self.awaiting = None;
        subscribe_user(ctx, Transport::SocketIo, user).await;
        self.replay = since.map(|since| Replay::new(user, since));
        vec![Self::send(0, "/", None, json!({"sid": self.sid}))]
    }

    async fn event(&mut self, ctx: &mut Ctx<'_>, p: Packet) -> Vec<Out> {
        let Some(user) = self.user else {
            return Vec::new();
        };
        let args = match p.data {
            Some(Value::Array(a)) if !a.is_empty() => a,
            _ => {
                return vec![Out::Close(
                    close::POLICY,
                    "an EVENT needs [name, ...args]".into(),
                )]
            }
        };
        let name = args[0].as_str().unwrap_or_default().to_owned();
        let room = args.get(1).and_then(Value::as_str).map(str::to_owned);
        let reply = match (name.as_str(), room) {
            ("subscribe", Some(room)) => match session::join(ctx, user, &room).await {
                Ok(()) => json!({"ok": true, "room": room}),
                Err(r) => json!({"ok": false, "code": r.code, "message": r.message}),
            },
            ("unsubscribe", Some(room)) => match session::leave(ctx, user, &room) {
                Ok(()) => json!({"ok": true, "room": room}),
                Err(r) => json!({"ok": false, "code": r.code, "message": r.message}),
            },
            _ => {
                json!({"ok": false, "code": "bad_request", "message": format!("unknown event {name:?}; emit subscribe or unsubscribe with a room")})
            }
        };
        match p.ack {
            Some(id) => vec![Self::send(3, "/", Some(id), json!([reply]))],
            None => Vec::new(),
        }
    }

    async fn message(&mut self, ctx: &mut Ctx<'_>, m: &str) -> Vec<Out> {
        match parse_packet(m) {
            Ok(p) => match p.kind {
                0 => self.connect(ctx, p).await,
                1 => vec![Out::Close(close::NORMAL, "client disconnected".into())],
                2 => self.event(ctx, p).await,
                3 => Vec::new(),
                _ => vec![Out::Close(
                    close::POLICY,
                    "unexpected packet from a client".into(),
                )],
            },
            Err(e) => vec![Out::Close(
                close::POLICY,
                format!("bad Socket.IO packet: {e}"),
            )],
        }
    }
}

impl Session for SocketIoSession {
    async fn start(&mut self, _ctx: &mut Ctx<'_>) -> Vec<Out> {
        self.last_ping = Instant::now();
        self.opened = self.last_ping;
        self.awaiting = Some(AwaitingConnect::new(self.stats.clone()));
        let open = json!({
            "sid": self.sid,
            "upgrades": self.upgrades,
            "pingInterval": self.timing.ping_interval.as_millis() as u64,
            "pingTimeout": self.timing.ping_timeout.as_millis() as u64,
            "maxPayload": self.max_payload,
        });
        vec![text(format!("0{open}"))]
    }

    async fn on_text(&mut self, ctx: &mut Ctx<'_>, msg: &str) -> Vec<Out> {
        match EnginePacket::parse(msg) {
            Ok(EnginePacket::Pong(_)) => {
                self.ping_sent = None;
                Vec::new()
            }
            // A client-initiated ping (probe or heartbeat): answer it.
            Ok(EnginePacket::Ping(data)) => vec![text(EnginePacket::Pong(data).encode())],
            Ok(EnginePacket::Close) => vec![Out::Close(close::NORMAL, "client closed".into())],
            Ok(EnginePacket::Noop | EnginePacket::Upgrade) => Vec::new(),
            Ok(EnginePacket::Message(m)) => self.message(ctx, &m).await,
            Err(e) => vec![Out::Close(close::POLICY, e)],
        }
    }

    fn replaying(&self) -> bool {
        self.replay.is_some()
    }

    async fn next_page(&mut self, ctx: &mut Ctx<'_>) -> Vec<Out> {
        let Some(replay) = self.replay.as_mut() else {
            return Vec::new();
        };
        let out = replay
            .next_page(ctx.backend, |n| {
                Bytes::from(format!("42{}", json!(["new_notification", n])))
            })
            .await;
        self.replayed_up_to = replay.replayed_up_to();
        self.sent_up_to = self.sent_up_to.max(self.replayed_up_to);
        if replay.done() {
            self.replay = None;
        }
        out
    }

    fn on_delivery(&mut self, d: &Delivery) -> Option<Bytes> {
        let frame =
            not_replayed(d, self.replayed_up_to).then(|| d.publication.frame(&EVENT_PACKET));
        self.sent_up_to = session::sent_up_to(self.sent_up_to, d, frame.is_some());
        frame
    }

    fn resync(&mut self, after: u64) {
        if let (Some(user), None) = (self.user, &self.replay) {
            let from = after.max(self.sent_up_to);
            self.replay = Some(Replay::new(user, from));
        }
    }

    fn on_tick(&mut self, now: Instant, _last_seen: Instant) -> Vec<Out> {
        if self.awaiting.is_some() && now.duration_since(self.opened) >= self.timing.connect_timeout
        {
            self.awaiting = None;
            self.stats
                .socketio_connect_timeouts
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!("likewise_socketio_connect_timeouts_total").increment(1);
            return vec![Out::Close(
                close::POLICY,
                format!(
                    "no CONNECT packet within {} ms",
                    self.timing.connect_timeout.as_millis()
                ),
            )];
        }
        if let Some(sent) = self.ping_sent {
            if now.duration_since(sent) >= self.timing.ping_timeout {
                return vec![Out::Close(close::POLICY, "ping timeout".into())];
            }
            return Vec::new();
        }
        if now.duration_since(self.last_ping) >= self.timing.ping_interval {
            self.last_ping = now;
            self.ping_sent = Some(now);
            return vec![text("2".to_owned())];
        }
        Vec::new()
    }

    fn tick_every(&self) -> Duration {
        let t = &self.timing;
        (t.ping_interval.min(t.ping_timeout).min(t.connect_timeout) / 4)
            .max(Duration::from_millis(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn session() -> SocketIoSession {
        let timing = Timing {
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(3),
        };
        SocketIoSession::new(None, None, timing, 1000, Arc::default())
    }

    #[test]
    fn a_socket_without_connect_is_counted_then_closed_at_the_deadline() {
        let mut s = session();
        let stats = s.stats.clone();
        s.awaiting = Some(AwaitingConnect::new(stats.clone()));
        let t0 = s.opened;
        assert_eq!(stats.socketio_awaiting_connect.load(Ordering::Relaxed), 1);
        assert!(s.on_tick(t0 + Duration::from_secs(2), t0).is_empty());
        let out = s.on_tick(t0 + Duration::from_secs(3), t0);
        assert!(matches!(out.as_slice(), [Out::Close(close::POLICY, _)]));
        assert_eq!(stats.socketio_awaiting_connect.load(Ordering::Relaxed), 0);
        assert_eq!(stats.socketio_connect_timeouts.load(Ordering::Relaxed), 1);
        assert!(s.tick_every() <= Duration::from_millis(750));
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let payload =
            json_value().prop_filter("objects and arrays", |v| v.is_object() || v.is_array());
        (
            0u8..5,
            prop_oneof![Just("/".to_owned()), "/[a-z0-9_-]{1,8}"],
            proptest::option::of(any::<u64>()),
            proptest::option::of(payload),
        )
            .prop_map(|(kind, nsp, ack, data)| Packet {
                kind,
                nsp,
                ack,
                data,
            })
    }

    fn engine_packet() -> impl Strategy<Value = EnginePacket> {
        prop_oneof![
            Just(EnginePacket::Close),
            any::<String>().prop_map(EnginePacket::Ping),
            any::<String>().prop_map(EnginePacket::Pong),
            any::<String>().prop_map(EnginePacket::Message),
            Just(EnginePacket::Upgrade),
            Just(EnginePacket::Noop),
        ]
    }

    proptest! {
        #[test]
        fn socketio_packets_round_trip(p in packet()) {
            prop_assert_eq!(parse_packet(&p.encode()), Ok(p));
        }

        #[test]
        fn engineio_packets_round_trip(p in engine_packet()) {
            prop_assert_eq!(EnginePacket::parse(&p.encode()), Ok(p));
        }

        #[test]
        fn arbitrary_text_never_panics_the_parsers(s in any::<String>()) {
            let _ = parse_packet(&s);
            if let Ok(EnginePacket::Message(m)) = EnginePacket::parse(&s) {
                let _ = parse_packet(&m);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_parsers(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let s = String::from_utf8_lossy(&b);
            let _ = EnginePacket::parse(&s);
            let _ = parse_packet(&s);
        }
    }

    #[test]
    fn packets_parse_with_namespaces_acks_and_payloads() {
        assert_eq!(
            parse_packet("0{\"token\":\"t\"}").unwrap(),
            Packet {
                kind: 0,
                nsp: "/".into(),
                ack: None,
                data: Some(json!({"token": "t"}))
            }
        );
        assert_eq!(
            parse_packet("0/admin,{\"a\":1}").unwrap(),
            Packet {
                kind: 0,
                nsp: "/admin".into(),
                ack: None,
                data: Some(json!({"a": 1}))
            }
        );
        assert_eq!(
            parse_packet("212[\"subscribe\",\"post:1\"]").unwrap(),
            Packet {
                kind: 2,
                nsp: "/".into(),
                ack: Some(12),
                data: Some(json!(["subscribe", "post:1"]))
            }
        );
        assert_eq!(parse_packet("1").unwrap().kind, 1);
        for bad in [
            "",
            "x",
            "9",
            "2[",
            "51-[\"a\",{}]",
            "299999999999999999999999[]",
        ] {
            assert!(parse_packet(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_client_that_stops_ponging_is_dropped() {
        let mut s = session();
        s.awaiting = None;
        let t0 = s.last_ping;
        assert!(s.on_tick(t0 + Duration::from_secs(5), t0).is_empty());
        assert_eq!(
            s.on_tick(t0 + Duration::from_secs(10), t0),
            vec![text("2".into())]
        );
        assert!(s.on_tick(t0 + Duration::from_secs(12), t0).is_empty());
        let out = s.on_tick(t0 + Duration::from_secs(15), t0);
        assert!(matches!(out.as_slice(), [Out::Close(close::POLICY, _)]));
    }
}
